//! Raw context-switch cost: `arch::switch` between the bench thread and one context.
//!
//! Group `raw_switch`; every reported time is for ONE one-way switch (a round trip
//! main -> context -> main is timed and halved):
//! - `one_way_switch`: the common case: neither context owns its FP control;
//! - `one_way_switch_owned_fp_control`: both contexts own their FP control
//!   (`Context::own_fp_control`), so every switch saves and reloads MXCSR and the x87
//!   control word (FPCR on aarch64): the cost a goroutine pays for opting in.
//!
//! The arch layer is crate-private, so this bench compiles the very same source files
//! (`src/arch/`, through `#[path]`) into itself and links the assembly (`gort_switch_fp_control`,
//! `gort_goroutine_entry`) from the gort library, which carries the assembled object: no
//! public re-export and no mirror of `Context` needed, and what is timed is the inline
//! `switch` the scheduler uses.
//!
//! Run: `cargo bench --bench switch`. On a shared or busy machine criterion's times include
//! time slices lost to other processes; `src/arch/mod.rs` also lists minimum-of-trials
//! figures next to corosensei's measured the same way.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

// Link gort, whose native library defines the assembly routines.
extern crate gort;

#[path = "../src/arch/mod.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the bench uses a few items of the module"
)]
mod arch;

use arch::{Context, init, switch};

/// The bench thread's context and the echoing context's.
struct Pair {
    main: Context,
    co: Context,
}

/// Answers every value with `v + 1`, forever.
unsafe extern "C" fn echo(arg: usize) -> ! {
    let pair = arg as *mut Pair;
    let mut v = 0usize;
    loop {
        // SAFETY: the Pair outlives the context (leaked below) and the bench thread is
        // suspended in `switch` whenever this runs.
        v = unsafe {
            switch(
                &raw mut (*pair).co,
                &raw const (*pair).main,
                v.wrapping_add(1),
            )
        };
    }
}

/// One echoing context on its own (leaked) stack.
fn echo_pair(own_fp_control: bool) -> *mut Pair {
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
        init(&raw mut (*pair).co, top, echo, pair as usize);
        if own_fp_control {
            (*pair).main.own_fp_control();
            (*pair).co.own_fp_control();
        }
        switch(&raw mut (*pair).main, &raw const (*pair).co, 0); // start it
    }
    pair
}

fn one_way(c: &mut Criterion, name: &str, own_fp_control: bool) {
    let pair = echo_pair(own_fp_control);
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
    one_way(c, "one_way_switch_owned_fp_control", true);
}

criterion_group!(benches, raw_switch);
criterion_main!(benches);
