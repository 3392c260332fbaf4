//! Raw context-switch cost: `gort_switch` between the bench thread and one context.
//!
//! Group `raw_switch`; every reported time is for ONE one-way switch (a round trip
//! main -> context -> main is timed and halved):
//! - `one_way_switch`: the common case, both sides with the same FP control state;
//! - `one_way_switch_fp_control_differs`: the context runs with a different MXCSR and x87
//!   rounding mode, so every switch takes the `ldmxcsr`/`fldcw` reload path.
//!
//! The arch layer is crate-private, so this bench compiles the very same source file
//! (`src/arch/mod.rs`, through `#[path]`) into itself and links `gort_switch` from the gort
//! library, which carries the assembled object: no re-export or mirror of `Context` needed.
//!
//! Run: `cargo bench --bench switch`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

// Link gort, whose native library defines `gort_switch` and `gort_goroutine_entry`.
extern crate gort;

#[path = "../src/arch/mod.rs"]
#[allow(dead_code, unused_imports, reason = "the bench uses a few items of the module")]
mod arch;

use arch::{Context, init, switch};

/// The bench thread's context and the echoing context's.
struct Pair {
    main: Context,
    co: Context,
}

/// Answers every value with `v + 1`, forever. If `arg`'s low bit is set, first switches
/// its own FP control to round-toward-zero (MXCSR and x87), so every switch differs in FP
/// control from the bench thread's. No floating-point arithmetic runs in this context.
unsafe extern "C" fn echo(arg: usize) -> ! {
    let pair = (arg & !1) as *mut Pair;
    if arg & 1 != 0 {
        set_round_toward_zero();
    }
    let mut v = 0usize;
    loop {
        // SAFETY: the Pair outlives the context (leaked below) and the bench thread is
        // suspended in `switch` whenever this runs.
        v = unsafe { switch(&raw mut (*pair).co, &raw const (*pair).main, v.wrapping_add(1)) };
    }
}

#[cfg(target_arch = "x86_64")]
fn set_round_toward_zero() {
    let (mxcsr, x87cw): (u32, u16) = (0x1f80 | (3 << 13), 0x037f | (3 << 10));
    // SAFETY: loads FP control words from two locals; only this context's FP state changes
    // (gort_switch gives the bench thread its own back).
    unsafe {
        std::arch::asm!(
            "ldmxcsr [{m}]",
            "fldcw [{c}]",
            m = in(reg) &raw const mxcsr,
            c = in(reg) &raw const x87cw,
            options(nostack, readonly),
        )
    };
}

#[cfg(target_arch = "aarch64")]
fn set_round_toward_zero() {
    // SAFETY: sets FPCR.RMode (bits 22-23) to 0b11 in this context only (see above).
    unsafe {
        std::arch::asm!(
            "mrs {t}, fpcr",
            "orr {t}, {t}, #0xc00000",
            "msr fpcr, {t}",
            t = out(reg) _,
            options(nomem, nostack),
        )
    };
}

/// One echoing context on its own (leaked) stack.
fn echo_pair(fp_control_differs: bool) -> *mut Pair {
    const STACK: usize = 64 * 1024;
    let stack: &'static mut [u8] = Vec::leak(vec![0u8; STACK]);
    let pair = Box::into_raw(Box::new(Pair {
        main: Context::new(),
        co: Context::new(),
    }));
    // SAFETY: the stack and the Pair are leaked, so they outlive the context; the context
    // never returns.
    unsafe {
        let top = stack.as_mut_ptr().add(STACK);
        init(&raw mut (*pair).co, top, echo, pair as usize | usize::from(fp_control_differs));
        switch(&raw mut (*pair).main, &raw const (*pair).co, 0); // start it
    }
    pair
}

fn one_way(c: &mut Criterion, name: &str, fp_control_differs: bool) {
    let pair = echo_pair(fp_control_differs);
    let mut group = c.benchmark_group("raw_switch");
    group.bench_function(name, |b| {
        b.iter_custom(|round_trips| {
            let start = Instant::now();
            for i in 0..round_trips {
                // SAFETY: the context is suspended in its `switch` and the Pair is live.
                let v = unsafe { switch(&raw mut (*pair).main, &raw const (*pair).co, i as usize) };
                black_box(v);
            }
            let elapsed: Duration = start.elapsed();
            elapsed / 2 // two one-way switches per round trip
        })
    });
    group.finish();
}

fn raw_switch(c: &mut Criterion) {
    one_way(c, "one_way_switch", false);
    one_way(c, "one_way_switch_fp_control_differs", true);
}

criterion_group!(benches, raw_switch);
criterion_main!(benches);
