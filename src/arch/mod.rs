//! Architecture layer: execution contexts, the context switch and goroutine entry.
//!
//! # Model
//!
//! A goroutine is a stack plus a [`Context`]: the registers a C function call must preserve
//! ("callee-saved"), the stack pointer and the address to resume at. Everything else is, by
//! the C ABI, dead across a call — so a context switch is *just a function call* that happens
//! to return on another stack: [`switch`] calls the assembly routine `gort_switch`, which
//! stores the callee-saved state into `*from`, loads `*to`'s, and jumps to `*to`'s resume
//! address. From the compiler's point of view `switch` is an ordinary `extern "C"` call that
//! clobbers the caller-saved registers; the other context's code runs "inside" that call.
//!
//! Saved exactly (the callee-saved set of the psABIs):
//! - x86_64: rbx, rbp, r12–r15, rsp, the return address, MXCSR control bits, x87 control word;
//! - aarch64: x19–x28, x29 (fp), x30 (lr), sp, d8–d15, FPCR.
//!
//! A fresh context ([`init`]) resumes at `gort_goroutine_entry`, a three-instruction
//! trampoline that calls `entry(arg)` with the entry function and argument taken from two
//! callee-saved slots. It is the outermost frame: its CFI says "return address undefined",
//! so backtraces, debuggers and panics stop there cleanly.
//!
//! # Invariants
//!
//! - Layout: `Context` offsets are written once, in `offsets.rs`; the assembly receives them
//!   as `-D` names from build.rs, and each arch file checks them with `offset_of!`.
//! - A `Context` is either never run (all zero, from [`Context::new`]), fresh (from
//!   [`init`]), or suspended (written by `gort_switch`). Only fresh or suspended contexts may
//!   be switched to, and each suspended context is resumed at most once per suspension.
//! - Between a `switch(from, ..)` and the switch back into `from`, `*from` must stay put and
//!   unread-by-`switch`: it is the only record of that stack's registers.
//! - The stack a context runs on must stay mapped while it is suspended (stacks never move:
//!   Rust has no stack maps), and must not be resumed on two threads at once.
//! - FP control is part of the context: a goroutine that changes its rounding mode keeps it,
//!   and others do not see it. Fresh contexts start with the ABI defaults.
//!
//! # Protocol of one switch (x86_64 names; aarch64 is the same with its registers)
//!
//! 1. `call gort_switch` pushes the return address; `gort_switch` stores it as `from.pc` and
//!    `rsp + 8` as `from.rsp`: resuming `from` later looks exactly like returning.
//! 2. Store rbx, rbp, r12–r15, MXCSR, x87 CW into `*from`; load `*to`'s registers.
//! 3. If the FP control words differ (rare), `ldmxcsr`/`fldcw` `*to`'s; else skip them.
//! 4. `rax = val`, `rsp = to.rsp`, `jmp to.pc`. The resumed side sees `switch` return `val`.
//!
//! # Designs rejected, and why
//!
//! - **Push the registers on the stack, save only sp, resume with `ret`** (boost.context's
//!   `fcontext`, measured at ~6 ns here). The `ret` returns to a different call site than the
//!   one the CPU's return-stack buffer predicts, so *every* switch mispredicts. Resuming
//!   with an indirect `jmp` through `to.pc` is predicted by the branch target buffer instead
//!   (the target pattern of a scheduler loop is regular). The cost is that the `call` into
//!   `gort_switch` leaves one return-stack entry unpopped; but after a stack switch the
//!   return-stack buffer describes the *other* stack anyway, so the returns that follow
//!   mispredict under either design; the `jmp` design saves the one extra misprediction per
//!   switch. Measured: see "Measurements" below.
//! - **Always `ldmxcsr` + `fldcw`** (fcontext): both are microcoded and serialising. They
//!   are now taken only when a control bit differs; saving (`stmxcsr`/`fnstcw`) stays
//!   unconditional, so a goroutine that changes its rounding mode always gets it back.
//! - **Skip FP control entirely** (Go, corosensei): cheapest, but a goroutine that sets a
//!   rounding mode would leak it to whatever runs next on that thread, and the psABIs make
//!   those control bits callee-saved. Its cost over the conditional reload is measured below.
//! - **Inline `asm!` switching (corosensei), letting LLVM spill only live registers**:
//!   faster by a few register stores, but the saved registers then live in compiler-chosen
//!   stack slots, not in `Context`. The scheduler and the preemption code need one explicit,
//!   named layout (Go's `gobuf`), so the registers are saved into `Context` by a real routine
//!   with a documented contract.
//! - **Asymmetric resume/suspend pairs** (corosensei: `call` into the coroutine, `ret` out)
//!   keep the return-stack buffer exact for a parent/child pair, but Go's scheduler is
//!   symmetric (G → g0 → another G), which is what `switch(from, to)` expresses.
//!
//! # Measurements
//!
//! (filled in below by the benchmark section)

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
    reason = "holds the constants of every architecture; each build uses one of them, and `ALL` is read by build.rs"
)]
mod offsets;

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
    /// address); preserves all registers except two scratch ones (x86_64 rax/rcx, aarch64
    /// x9/x10) and flags. Callers: the switch sequences only (it has no C signature:
    /// declared here so the inline switch can name it as a `sym` operand).
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
