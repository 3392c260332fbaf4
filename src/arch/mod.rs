//! Architecture layer: execution contexts, the context switch and goroutine entry.
//!
//! # Model
//!
//! A goroutine is a stack plus a [`Context`]: the registers a C function call must preserve
//! ("callee-saved"), the stack pointer and the address to resume at (Go's `gobuf`). All
//! other registers are, by the C ABI, dead across a call, so a context switch is *a call
//! that returns on another stack*: [`switch`] stores the callee-saved state into `*from`,
//! loads `*to`'s, and jumps to `*to`'s resume address. To the compiler it is one inline
//! `asm!` block that clobbers what a C call clobbers; the other contexts run "inside" it.
//!
//! Saved exactly (the callee-saved sets of the psABIs):
//! - x86_64: rbx, rbp, r12–r15, rsp, the resume address; MXCSR and the x87 control word
//!   for contexts that own their FP control (below);
//! - aarch64: x19–x28, x29 (fp), the resume address (lr slot), sp, d8–d15; FPCR likewise.
//!
//! The sequence exists twice with one protocol: inline in [`switch`] (every Rust caller)
//! and out of line as `gort_switch` in `asm/<arch>/switch.S` (C and assembly callers, the C
//! harness, the reference with exact CFI). Both store a resume address and the stack
//! pointer to resume with, so either can resume a context the other suspended (tested).
//!
//! A fresh context ([`init`]) resumes at `gort_goroutine_entry`, a trampoline that calls
//! `entry(arg)` with both taken from callee-saved slots. It is the outermost frame: its CFI
//! says "return address undefined", so backtraces, debuggers and unwinding stop there.
//!
//! # FP control belongs to the thread unless a context owns it
//!
//! Rust code must run with the default FP environment (changing the rounding mode, FTZ/DAZ
//! or exception masks is immediate UB: LLVM assumes the defaults), so for Rust goroutines
//! there is nothing to save. C code may change it (`fesetround`) and, by the psABI, expects
//! it preserved across calls. A context with `own_fp_control()` gets exactly that: every
//! switch away from it saves MXCSR + x87 CW (FPCR), every switch into it restores them,
//! and a switch into a non-owning context loads the ABI defaults, so an owner's mode never
//! leaks. Between two non-owning contexts FP control is not touched (Go's behaviour). The
//! fast path pays one flag test; the owning path is `gort_switch_fp_control` in the `.S`.
//! (Windows fibers make the same split: `FIBER_FLAG_FLOAT_SWITCH`.)
//!
//! # Invariants
//!
//! - Layout: `Context` offsets are written once, in `offsets.rs`; the `.S` receives them as
//!   `-D` names from build.rs, the inline `asm!` as `const` operands, and each arch file
//!   checks them with `offset_of!`.
//! - A `Context` is never-run (all zero, [`Context::new`]), fresh ([`init`]) or suspended
//!   (written by a switch). Only fresh or suspended contexts may be switched to, and a
//!   suspended one is resumed at most once per suspension, by one thread.
//! - Between `switch(from, ..)` and the switch back into `from`, `*from` is the only record
//!   of that stack's registers: it must stay put and be written by no one else.
//! - A suspended context's stack stays mapped and unmoved (Rust has no stack maps).
//!
//! # Protocol of one switch (x86_64 names; aarch64 is the same with its registers)
//!
//! 1. `from.pc` = the label right after this switch's final jump, `from.rsp` = rsp; store
//!    rbx, rbp, r12–r15 into `*from`.
//! 2. If `from` or `to` owns its FP control (a predicted-not-taken branch), call
//!    `gort_switch_fp_control`: save `from`'s if it owns it, load `to`'s or the defaults.
//! 3. Load `to`'s rbx, rbp, r12–r15; rax = val; rsp = `to.rsp`; `jmp to.pc`. The resumed
//!    side finds itself just after its own switch, with `val` as the result.
//!
//! # Designs rejected, with measurements
//!
//! Raw one-way switch, ns, on the development box (2-vCPU AMD EPYC Zen 3 under KVM),
//! minimum over 300 trials of 200k round trips, C drivers for the variants; corosensei
//! measured the same way: 1.67.
//!
//! | design                                                      | ns   |
//! |-------------------------------------------------------------|------|
//! | **inline sequence, per-site `jmp`, FP ownership (chosen)**  | 2.36 |
//! | same, both contexts owning their FP control                 | 6.95 |
//! | inline sequence, no FP handling at all (Go, corosensei)     | 2.10 |
//! | one out-of-line routine ending in one shared `jmp`          | 4.40 |
//! | out-of-line routine returning (pc, sp), `jmp` at the site   | 4.30 |
//! | push/pop on the stack, resume with `ret` (fcontext style)   | 12.2 |
//! | out of line, always `stmxcsr`+`fnstcw`, reload if different | 7.90 |
//! | out of line, always save, always reload                     | 6.50 |
//!
//! - **`ret` to resume**: the return-stack buffer predicts the caller's own call site, so
//!   every switch mispredicts. A `jmp` through `to.pc` goes to the indirect predictor.
//! - **One shared out-of-line `jmp`**: that single jump alternates between targets and Zen
//!   3's predictor does not learn it: giving each side its own copy of the routine (so each
//!   jump site has one target) dropped 4.40 to 2.50. Inlining gives every switch site its
//!   own jump, which in a scheduler also has a regular target (G → g0 always lands in the
//!   scheduler loop). The `call` into an out-of-line helper costs the rest.
//! - **Always saving FP control** (fcontext, and the first version of this file): `stmxcsr`
//!   is microcoded, ~5 ns reciprocal throughput here, and any "compare before reloading"
//!   must read back its store (another ~2 ns stall). The reloads are cheap only when the
//!   value does not change (`ldmxcsr` 25 ns and `fldcw` 85 ns when it does, ~1 ns when it
//!   does not). Every design that reads MXCSR on every switch is ≥ 5.8 ns, twice the
//!   target, for state that Rust code may not change anyway: hence ownership.
//! - **Never switching FP control** (Go, corosensei): 0.26 ns cheaper than ownership, but a C
//!   goroutine's rounding mode would leak into the scheduler and other goroutines.
//! - **Letting LLVM spill only the live registers** (corosensei's inline `asm!` with
//!   clobbers): a few stores cheaper, but the registers then live in compiler-chosen stack
//!   slots; the scheduler and preemption need one explicit, named layout (Go's `gobuf`).
//! - **Asymmetric resume/suspend** (corosensei: `call` into the coroutine, `ret` out) keeps
//!   the return-stack buffer exact for a parent/child pair, but Go's scheduler is symmetric
//!   (G → g0 → another G), which is what `switch(from, to)` expresses.
//!
//! Criterion (`cargo bench --bench switch`, group `raw_switch`, per one-way switch) reports
//! the same code through the real [`switch`]; see its header for the figures' conditions.
//!
//! # Unwinding inside a switch
//!
//! `gort_switch` carries exact CFI at every instruction (after the saves the caller's
//! frame is described through `*from`). The inline sequence cannot describe its window of
//! ~8 instructions between loading `to`'s registers and the jump (the enclosing function's
//! frame layout is the compiler's), as in corosensei: an asynchronous unwinder sampling
//! exactly there sees a wrong caller frame. Synchronous unwinding (panics, backtraces)
//! never happens inside the sequence.

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as imp;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as imp;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("gort supports x86_64 and aarch64 only (see build.rs)");

#[cfg_attr(
    not(test),
    allow(
        unused_imports,
        reason = "for the scheduler's stack headroom checks, not wired yet"
    )
)]
pub(crate) use imp::current_sp;
pub(crate) use imp::{Context, init};

#[allow(
    dead_code,
    reason = "holds every architecture's constants; a build uses one set, build.rs reads `ALL`"
)]
mod offsets;

#[cfg(target_arch = "aarch64")]
pub(crate) use offsets::aarch64::PF_RESUME_SP;
/// `PreemptFrame::resume_sp`'s offset, checked against the struct in `preempt/signal.rs`.
#[cfg(target_arch = "x86_64")]
pub(crate) use offsets::x86_64::PF_RESUME_SP;

unsafe extern "C" {
    /// `asm/<arch>/switch.S`: the out-of-line, C-callable form of [`switch`]; Rust code
    /// uses the inline form (same sequence, same `Context` protocol: each can resume what
    /// the other suspended). Kept for assembly and C callers (the C harness in
    /// `asm/harness/`) and as the reference with exact CFI.
    ///
    /// - Stack: starts on the caller's stack, ends on `*to`'s; never touches `*to`'s stack
    ///   memory itself (a fresh context's stack is first written by its entry function).
    /// - Returns: only when another context switches back into `*from`; then it returns the
    ///   `val` *that* switch passed. (For a fresh `*to` the `val` passed here is dropped.)
    /// - Clobbers: what any C call may clobber; callee-saved registers come back as they
    ///   were, and FP control too if `*from` owns it.
    /// - Callers: assembly, C, tests. Same safety contract as [`switch`].
    #[cfg_attr(
        not(test),
        allow(dead_code, reason = "Rust code uses the inline switch")
    )]
    fn gort_switch(from: *mut Context, to: *const Context, val: usize) -> usize;

    /// `asm/<arch>/switch.S`: the FP-control half of a switch, taken when `*from` or `*to`
    /// owns its FP control: saves `*from`'s if it owns it, then loads `*to`'s if it owns
    /// it, else the ABI defaults. Runs on the current stack (needs only its return
    /// address); preserves all registers except its scratch ones (x86_64 rax and rcx,
    /// aarch64 x9–x11) and flags. Callers: the switch sequences only (it has no C
    /// signature: declared here so the inline switch can name it as a `sym` operand).
    fn gort_switch_fp_control();

    /// `asm/<arch>/switch.S`: the first resume address of a fresh context ([`init`] stores
    /// its address). Never called as a function, never returns: it calls the entry
    /// function held in the context's first callee-saved slot with the argument held in
    /// the second (x86_64 rbx/r12, aarch64 x19/x20), on the fresh stack, as the outermost
    /// frame (undefined return address in its CFI).
    fn gort_goroutine_entry();
}

/// The address [`init`] stores as a fresh context's resume address.
fn goroutine_entry_address() -> usize {
    gort_goroutine_entry as *const () as usize
}

/// Saves the current callee-saved state into `*from` and resumes `*to`.
///
/// Returns when some other context switches back into `*from`; the result is the `val`
/// that switch passed. When `*to` is fresh from [`init`], `val` is ignored.
///
/// Inlined into every caller (the sequence is ~20 instructions): the indirect jump that
/// resumes `*to` then sits at the call site, where the branch predictor can learn it.
///
/// # Safety
///
/// - `from` is valid for writes of a `Context` and stays valid, untouched by anyone else,
///   until something switches back into it (it is the only record of this stack).
/// - `to` is a fresh ([`init`]) or suspended (written by an earlier `switch`) context that is
///   not running and not being resumed by any other thread, and its stack is still mapped.
/// - Everything borrowed on the current stack stays borrowed while it is suspended: the
///   caller must not rely on other contexts leaving it alone beyond what Rust's aliasing
///   rules already guarantee for a function call that does not return for a while.
#[inline(always)]
pub(crate) unsafe fn switch(from: *mut Context, to: *const Context, val: usize) -> usize {
    debug_assert!(
        // SAFETY: `to` is fresh or suspended (caller's contract), so it may be read.
        unsafe { (*to).is_resumable() },
        "switch into a never-run Context"
    );
    // SAFETY: forwarded contract (see `# Safety`).
    unsafe { imp::switch(from, to, val) }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Portable tests of the switch: value passing, chains of contexts, backtraces.
    //! Register preservation is tested per architecture (`x86_64.rs`, `aarch64.rs`).

    use super::*;
    use std::ptr;

    /// An mmap'd test stack with a PROT_NONE guard page below it (tests only: the real
    /// stacks come from `crate::stack`).
    pub(crate) struct TestStack {
        base: *mut u8,
        len: usize,
    }

    impl TestStack {
        pub(crate) fn new(size: usize) -> TestStack {
            let page = 4096;
            let len = size + page;
            // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
            let base = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED, "mmap of a test stack failed");
            // SAFETY: the first page of the mapping we just made becomes the guard.
            let rc = unsafe { libc::mprotect(base, page, libc::PROT_NONE) };
            assert_eq!(rc, 0, "mprotect of the guard page failed");
            TestStack {
                base: base.cast(),
                len,
            }
        }

        pub(crate) fn top(&self) -> *mut u8 {
            self.base.wrapping_add(self.len)
        }
    }

    impl Drop for TestStack {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`; the test that owned it has
            // finished with the context that ran on it (it is never resumed again).
            unsafe { libc::munmap(self.base.cast(), self.len) };
        }
    }

    /// Shared state of a main-thread/context pair: `main` is the test thread's saved
    /// context, `co` the other one's.
    struct Pair {
        main: Context,
        co: Context,
    }

    const DONE: usize = usize::MAX;

    /// Answers every value `v` with `3v + 1` until it receives DONE, then answers DONE
    /// forever (it is never resumed after that).
    unsafe extern "C" fn triple_plus_one(arg: usize) -> ! {
        let pair = arg as *mut Pair;
        // SAFETY: `pair` outlives this context (the test waits for DONE before dropping
        // it); `co` is ours, `main` is suspended in the test.
        let mut v = unsafe { switch(&raw mut (*pair).co, &raw const (*pair).main, 1) };
        while v != DONE {
            // SAFETY: as above.
            v = unsafe { switch(&raw mut (*pair).co, &raw const (*pair).main, 3 * v + 1) };
        }
        loop {
            // SAFETY: as above.
            unsafe { switch(&raw mut (*pair).co, &raw const (*pair).main, DONE) };
        }
    }

    #[test]
    fn ping_pong_passes_values_both_ways() {
        let stack = TestStack::new(64 * 1024);
        let mut pair = Box::new(Pair {
            main: Context::new(),
            co: Context::new(),
        });
        let p = &raw mut *pair;
        // SAFETY: `co` is initialised on a stack that outlives it; `pair` outlives every
        // switch; the context only runs while the test thread is suspended in `switch`.
        unsafe {
            init(&raw mut (*p).co, stack.top(), triple_plus_one, p as usize);
            assert_eq!(switch(&raw mut (*p).main, &raw const (*p).co, 12345), 1);
            for i in 0..100_000usize {
                let got = switch(&raw mut (*p).main, &raw const (*p).co, i);
                assert_eq!(got, 3 * i + 1);
            }
            assert_eq!(switch(&raw mut (*p).main, &raw const (*p).co, DONE), DONE);
        }
    }

    /// A ring main -> a -> b -> main: every context hands `v + 1` to the next.
    struct Ring {
        main: Context,
        a: Context,
        b: Context,
    }

    /// Adds one to every value and hands it to `b`.
    unsafe extern "C" fn ring_a(arg: usize) -> ! {
        let ring = arg as *mut Ring;
        let mut v = 0;
        loop {
            // SAFETY: the ring outlives its contexts; `b` is fresh or suspended whenever
            // `a` runs (control goes round in a fixed order).
            v = unsafe { switch(&raw mut (*ring).a, &raw const (*ring).b, v + 1) };
        }
    }

    /// Adds one to every value and hands it back to `main`.
    unsafe extern "C" fn ring_b(arg: usize) -> ! {
        let ring = arg as *mut Ring;
        let mut v = 0;
        loop {
            // SAFETY: as in `ring_a`: `main` is suspended whenever `b` runs.
            v = unsafe { switch(&raw mut (*ring).b, &raw const (*ring).main, v + 1) };
        }
    }

    #[test]
    fn ring_of_three_contexts() {
        let stack_a = TestStack::new(64 * 1024);
        let stack_b = TestStack::new(64 * 1024);
        let mut ring = Box::new(Ring {
            main: Context::new(),
            a: Context::new(),
            b: Context::new(),
        });
        let r = &raw mut *ring;
        // SAFETY: both stacks and the ring outlive every switch; each context runs only
        // while the one before it in the ring is suspended.
        unsafe {
            init(&raw mut (*r).a, stack_a.top(), ring_a, r as usize);
            init(&raw mut (*r).b, stack_b.top(), ring_b, r as usize);
            // First round: `a` starts with 0 and sends 1 to a fresh `b` (dropped), which
            // starts with 0 and sends 1 here.
            assert_eq!(switch(&raw mut (*r).main, &raw const (*r).a, 77), 1);
            for i in 0..50_000usize {
                assert_eq!(switch(&raw mut (*r).main, &raw const (*r).a, i), i + 2);
            }
        }
    }

    struct SpProbe {
        main: Context,
        co: Context,
        sp: usize,
    }

    unsafe extern "C" fn record_sp(arg: usize) -> ! {
        let probe = arg as *mut SpProbe;
        loop {
            // SAFETY: the test keeps `probe` alive and is suspended in `switch`.
            unsafe {
                (*probe).sp = current_sp();
                switch(&raw mut (*probe).co, &raw const (*probe).main, 0);
            }
        }
    }

    #[test]
    fn current_sp_is_on_the_running_contexts_stack() {
        let stack = TestStack::new(64 * 1024);
        let mut probe = Box::new(SpProbe {
            main: Context::new(),
            co: Context::new(),
            sp: 0,
        });
        let p = &raw mut *probe;
        // SAFETY: as in the ping-pong test.
        unsafe {
            init(&raw mut (*p).co, stack.top(), record_sp, p as usize);
            switch(&raw mut (*p).main, &raw const (*p).co, 0);
        }
        let top = stack.top() as usize;
        assert!(
            probe.sp < top && probe.sp > top - 4096,
            "sp {:#x}, top {top:#x}",
            probe.sp
        );
        let here = current_sp();
        assert!(
            here < top - 64 * 1024 || here > top,
            "the test thread is not on that stack"
        );
    }

    /// What the backtrace test's context saw.
    struct Traced {
        main: Context,
        co: Context,
        trace: String,
    }

    #[inline(never)]
    fn capture_inside_goroutine(traced: *mut Traced) {
        let trace = std::backtrace::Backtrace::force_capture().to_string();
        // SAFETY: the test thread is suspended in `switch` and does not touch `trace`.
        unsafe { (*traced).trace = trace };
    }

    unsafe extern "C" fn backtrace_entry(arg: usize) -> ! {
        let traced = arg as *mut Traced;
        capture_inside_goroutine(traced);
        loop {
            // SAFETY: `traced` outlives this context; main is suspended in the test.
            unsafe { switch(&raw mut (*traced).co, &raw const (*traced).main, 0) };
        }
    }

    #[test]
    fn backtrace_inside_a_goroutine_stops_at_its_entry() {
        // Symbolising a backtrace needs more stack than a goroutine usually has.
        let stack = TestStack::new(1024 * 1024);
        let mut traced = Box::new(Traced {
            main: Context::new(),
            co: Context::new(),
            trace: String::new(),
        });
        let t = &raw mut *traced;
        // SAFETY: as in the ping-pong test.
        unsafe {
            init(&raw mut (*t).co, stack.top(), backtrace_entry, t as usize);
            switch(&raw mut (*t).main, &raw const (*t).co, 0);
        }
        let trace = &traced.trace;
        assert!(trace.contains("capture_inside_goroutine"), "{trace}");
        assert!(trace.contains("backtrace_entry"), "{trace}");
        assert!(trace.contains("gort_goroutine_entry"), "{trace}");
        // The walk stopped at the trampoline: nothing of the test thread's own stack.
        assert!(!trace.contains("backtrace_inside_a_goroutine"), "{trace}");
        assert!(!trace.contains("thread_start"), "{trace}");
        let frames = trace
            .lines()
            .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
            .count();
        assert!(frames < 40, "{frames} frames:\n{trace}");
    }
}
