//! x86_64 execution contexts: the reference implementation (System V psABI).
//!
//! # Stacks
//!
//! A suspended context, just after `gort_switch` saved it (the caller's frame is intact; the
//! return address is still on the stack, but `Context` holds its own copy and the stack
//! pointer *above* it, so resuming is "as if `gort_switch` had returned"):
//!
//! ```text
//!     higher addresses
//!   | caller's frame ...         |
//!   +----------------------------+ <- ctx.rsp  (rsp after the `ret` that never happened)
//!   | return address into caller | <- rsp inside gort_switch; ctx.pc holds the same value
//!   +----------------------------+
//!   | (free: the next switch or  |
//!   |  signal frame may use it)  |
//!     lower addresses
//! ```
//!
//! A fresh context from [`init`] has not touched its stack at all:
//!
//! ```text
//!   +----------------------------+ <- stack_top (exclusive)
//!   | (at most 15 bytes of       |
//!   |  alignment slack)          |
//!   +----------------------------+ <- ctx.rsp = stack_top & !15
//!   | gort_goroutine_entry's     |    ctx.pc  = gort_goroutine_entry
//!   |  `call rbx` return address |    ctx.rbx = entry, ctx.r12 = arg, ctx.rbp = 0
//!   +----------------------------+    MXCSR = 0x1f80, x87 CW = 0x037f (ABI defaults)
//!   | entry's frame ...          |
//! ```
//!
//! `gort_goroutine_entry` runs with rsp 16-byte aligned and `call`s the entry function, so
//! the entry function sees the standard "rsp + 8 is 16-byte aligned" at its first
//! instruction, and its return address points into the trampoline, whose CFI says "return
//! address undefined": the end of every backtrace.
//!
//! # Register state across `gort_switch` (from the caller's point of view)
//!
//! - On entry: rdi = from, rsi = to, rdx = val, rsp -> return address (System V call).
//! - Preserved: rbx, rbp, r12–r15, rsp, MXCSR control bits (6–15), x87 control word.
//! - Result: rax = the `val` of whichever switch resumes us.
//! - Clobbered: everything else the ABI lets a call clobber: rcx, rdx, rsi, rdi, r8–r11,
//!   xmm0–15, flags, MXCSR status bits (0–5, caller-saved by the psABI; see below).
//!
//! MXCSR holds sticky exception flags (bits 0–5) next to its control bits, and ordinary
//! arithmetic sets them (any inexact result sets PE), so comparing whole MXCSR values would
//! take the slow `ldmxcsr` path nearly always. `gort_switch` compares only bits 6 and up;
//! when it does reload, it loads `*to`'s saved value, flags included.

use core::mem::offset_of;

use super::offsets::x86_64::*;

/// Saved state of a suspended x86_64 execution context. Layout: `offsets.rs`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Context {
    /// Stack pointer to resume with.
    rsp: usize,
    /// Address to resume at.
    pc: usize,
    rbx: usize,
    rbp: usize,
    r12: usize,
    r13: usize,
    r14: usize,
    r15: usize,
    /// MXCSR as saved by `stmxcsr` (control and status bits).
    mxcsr: u32,
    /// x87 FPU control word as saved by `fnstcw`.
    x87cw: u16,
    /// Keeps the struct free of uninitialised padding; always zero.
    _pad: u16,
}

// Every offset the assembly uses, checked against the real layout.
const _: () = {
    assert!(offset_of!(Context, rsp) == CTX_RSP);
    assert!(offset_of!(Context, pc) == CTX_PC);
    assert!(offset_of!(Context, rbx) == CTX_RBX);
    assert!(offset_of!(Context, rbp) == CTX_RBP);
    assert!(offset_of!(Context, r12) == CTX_R12);
    assert!(offset_of!(Context, r13) == CTX_R13);
    assert!(offset_of!(Context, r14) == CTX_R14);
    assert!(offset_of!(Context, r15) == CTX_R15);
    assert!(offset_of!(Context, mxcsr) == CTX_MXCSR);
    assert!(offset_of!(Context, x87cw) == CTX_X87CW);
    assert!(core::mem::size_of::<Context>() == CTX_SIZE);
    // The CFI escapes in switch.S encode these offsets as one SLEB128 byte each.
    assert!(CTX_RSP < 64 && CTX_PC < 64 && CTX_RBX < 64 && CTX_RBP < 64);
    assert!(CTX_R12 < 64 && CTX_R13 < 64 && CTX_R14 < 64 && CTX_R15 < 64);
};

/// MXCSR after reset and at thread start on Linux: all exceptions masked, round to nearest.
const MXCSR_DEFAULT: u32 = 0x1f80;
/// x87 control word after `fninit`: all exceptions masked, 64-bit precision, round to nearest.
const X87CW_DEFAULT: u16 = 0x037f;

impl Context {
    /// A context that has never run: all zero. It can be switched *from* (which fills it)
    /// but not *to*.
    pub(crate) const fn new() -> Context {
        Context {
            rsp: 0,
            pc: 0,
            rbx: 0,
            rbp: 0,
            r12: 0,
            r13: 0,
            r14: 0,
            r15: 0,
            mxcsr: 0,
            x87cw: 0,
            _pad: 0,
        }
    }
}

/// Prepares `ctx` so that the first switch into it calls `entry(arg)` on the stack whose
/// highest address (exclusive) is `stack_top`.
///
/// Writes only `*ctx`: the stack is first touched when the context runs.
///
/// # Safety
///
/// `ctx` is valid for writes and not running or suspended (its previous contents are
/// discarded). `stack_top` is the top of a mapped, writable stack that stays mapped while
/// the context can run, large enough for `entry`. `entry` must never return.
pub(crate) unsafe fn init(
    ctx: *mut Context,
    stack_top: *mut u8,
    entry: unsafe extern "C" fn(usize) -> !,
    arg: usize,
) {
    debug_assert!(!stack_top.is_null());
    let fresh = Context {
        rsp: stack_top as usize & !15,
        pc: super::goroutine_entry_address(),
        rbx: entry as usize,
        r12: arg,
        mxcsr: MXCSR_DEFAULT,
        x87cw: X87CW_DEFAULT,
        ..Context::new()
    };
    // SAFETY: the caller guarantees `ctx` is valid for writes.
    unsafe { ctx.write(fresh) };
}

/// The current stack pointer (for stack headroom checks).
#[inline(always)]
pub(crate) fn current_sp() -> usize {
    let sp: usize;
    // SAFETY: copies rsp into a register; touches no memory and no flags.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

#[cfg(test)]
mod tests {
    //! Register preservation across `gort_switch`, checked from assembly (Rust cannot name
    //! rbx or rbp as asm operands, and must not run with a changed FP environment).

    use super::super::tests::TestStack;
    use super::super::{init, switch};
    use super::*;

    /// The callee-saved state one side of the test holds across a switch.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Regs {
        rbx: u64,
        rbp: u64,
        r12: u64,
        r13: u64,
        r14: u64,
        r15: u64,
        mxcsr: u32,
        x87cw: u16,
        _pad: u16,
    }

    /// `load` goes into the registers before the switch, `seen` is what they held after.
    #[repr(C)]
    struct Probe {
        load: Regs,
        seen: Regs,
    }

    unsafe extern "C" {
        /// Test helper (below): saves the real callee-saved registers and FP control,
        /// loads `probe.load`, calls `gort_switch(from, to, val)`, stores what the
        /// registers hold afterwards into `probe.seen`, restores everything and returns
        /// gort_switch's result. Runs on the caller's stack; clobbers what a C call may.
        fn gort_test_switch_with_regs(
            from: *mut Context,
            to: *const Context,
            val: usize,
            probe: *mut Probe,
        ) -> usize;
    }

    core::arch::global_asm!(
        ".globl gort_test_switch_with_regs",
        ".p2align 4",
        "gort_test_switch_with_regs:",
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        // 6 pushes + 24 bytes keep rsp 16-byte aligned at the call below.
        "sub rsp, 24",
        "stmxcsr [rsp]",
        "fnstcw [rsp + 4]",
        "mov [rsp + 8], rcx",
        "ldmxcsr [rcx + {L_MXCSR}]",
        "fldcw [rcx + {L_X87CW}]",
        "mov rbx, [rcx + {L_RBX}]",
        "mov rbp, [rcx + {L_RBP}]",
        "mov r12, [rcx + {L_R12}]",
        "mov r13, [rcx + {L_R13}]",
        "mov r14, [rcx + {L_R14}]",
        "mov r15, [rcx + {L_R15}]",
        "call {switch}",
        "mov rcx, [rsp + 8]",
        "mov [rcx + {S_RBX}], rbx",
        "mov [rcx + {S_RBP}], rbp",
        "mov [rcx + {S_R12}], r12",
        "mov [rcx + {S_R13}], r13",
        "mov [rcx + {S_R14}], r14",
        "mov [rcx + {S_R15}], r15",
        "stmxcsr [rcx + {S_MXCSR}]",
        "fnstcw [rcx + {S_X87CW}]",
        "ldmxcsr [rsp]",
        "fldcw [rsp + 4]",
        "add rsp, 24",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "ret",
        switch = sym super::super::gort_switch,
        L_RBX = const offset_of!(Probe, load) + offset_of!(Regs, rbx),
        L_RBP = const offset_of!(Probe, load) + offset_of!(Regs, rbp),
        L_R12 = const offset_of!(Probe, load) + offset_of!(Regs, r12),
        L_R13 = const offset_of!(Probe, load) + offset_of!(Regs, r13),
        L_R14 = const offset_of!(Probe, load) + offset_of!(Regs, r14),
        L_R15 = const offset_of!(Probe, load) + offset_of!(Regs, r15),
        L_MXCSR = const offset_of!(Probe, load) + offset_of!(Regs, mxcsr),
        L_X87CW = const offset_of!(Probe, load) + offset_of!(Regs, x87cw),
        S_RBX = const offset_of!(Probe, seen) + offset_of!(Regs, rbx),
        S_RBP = const offset_of!(Probe, seen) + offset_of!(Regs, rbp),
        S_R12 = const offset_of!(Probe, seen) + offset_of!(Regs, r12),
        S_R13 = const offset_of!(Probe, seen) + offset_of!(Regs, r13),
        S_R14 = const offset_of!(Probe, seen) + offset_of!(Regs, r14),
        S_R15 = const offset_of!(Probe, seen) + offset_of!(Regs, r15),
        S_MXCSR = const offset_of!(Probe, seen) + offset_of!(Regs, mxcsr),
        S_X87CW = const offset_of!(Probe, seen) + offset_of!(Regs, x87cw),
    );

    /// FP control words for a 5-bit `mode`: bits 0–1 MXCSR rounding control (MXCSR bits
    /// 13–14), bit 2 flush-to-zero + denormals-are-zero (MXCSR bits 15 and 6), bits 3–4 x87
    /// rounding control (CW bits 10–11). Mode 0 is the ABI default. The two words vary
    /// independently, so some switches differ only in MXCSR, some only in the x87 CW.
    fn fp_control(mode: u64) -> (u32, u16) {
        let sse_rc = (mode & 3) as u32;
        let ftz_daz = if mode & 4 != 0 { 0x8040 } else { 0 };
        let x87_rc = ((mode >> 3) & 3) as u16;
        (
            MXCSR_DEFAULT | (sse_rc << 13) | ftz_daz,
            X87CW_DEFAULT | (x87_rc << 10),
        )
    }

    /// The FP mode of `side` in `round`: the default on every fourth round (so some
    /// switches find equal control words and take the fast path), else pseudo-random.
    fn fp_mode(side: u64, round: u64) -> u64 {
        if round % 4 == 3 {
            0
        } else {
            (side ^ round).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 59
        }
    }

    /// Distinct register values for one side and round.
    fn regs(side: u64, round: u64, mode: u64) -> Regs {
        let base = (side << 60) ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let (mxcsr, x87cw) = fp_control(mode);
        Regs {
            rbx: base ^ 0x1111,
            rbp: base ^ 0x2222,
            r12: base ^ 0x3333,
            r13: base ^ 0x4444,
            r14: base ^ 0x5555,
            r15: base ^ 0x6666,
            mxcsr,
            x87cw,
            _pad: 0,
        }
    }

    /// Only the control bits of MXCSR are preserved (see the module docs).
    fn control(r: &Regs) -> Regs {
        Regs {
            mxcsr: r.mxcsr & !0x3f,
            ..*r
        }
    }

    struct Shared {
        main: Context,
        co: Context,
        co_probe: Probe,
        /// The first round in which the context saw a register change, with what it loaded
        /// and what it saw.
        co_bad: Option<(u64, Regs, Regs)>,
        /// MXCSR and x87 CW the context saw on its very first instruction of Rust.
        co_initial_fp: (u32, u16),
    }

    const ROUNDS: u64 = 20_000;

    /// The context's side: every round, holds its own pattern across a switch back to the
    /// test thread and records the first round in which something else came back.
    unsafe extern "C" fn co_side(arg: usize) -> ! {
        let shared = arg as *mut Shared;
        let (mut mxcsr, mut x87cw) = (0u32, 0u16);
        // SAFETY: stores MXCSR and the x87 control word into two locals.
        unsafe {
            core::arch::asm!(
                "stmxcsr [{m}]",
                "fnstcw [{c}]",
                m = in(reg) &raw mut mxcsr,
                c = in(reg) &raw mut x87cw,
                options(nostack),
            )
        };
        let mut round = 0u64;
        // SAFETY (whole loop): `shared` outlives the context, the test thread is suspended
        // whenever this runs, and `co_probe` is only read by it after the switch.
        unsafe {
            (*shared).co_initial_fp = (mxcsr, x87cw);
            loop {
                (*shared).co_probe.load = regs(2, round, fp_mode(2, round));
                let got = gort_test_switch_with_regs(
                    &raw mut (*shared).co,
                    &raw const (*shared).main,
                    round as usize * 2 + 1,
                    &raw mut (*shared).co_probe,
                );
                let probe = &(*shared).co_probe;
                if control(&probe.seen) != control(&probe.load) && (*shared).co_bad.is_none() {
                    (*shared).co_bad = Some((round, probe.load, probe.seen));
                }
                round = got as u64;
            }
        }
    }

    #[test]
    fn callee_saved_registers_and_fp_control_survive_switches() {
        let stack = TestStack::new(64 * 1024);
        let mut shared = Box::new(Shared {
            main: Context::new(),
            co: Context::new(),
            co_probe: Probe {
                load: regs(0, 0, 0),
                seen: regs(0, 0, 0),
            },
            co_bad: None,
            co_initial_fp: (0, 0),
        });
        let s = &raw mut *shared;
        let mut probe = Probe {
            load: regs(0, 0, 0),
            seen: regs(0, 0, 0),
        };
        // SAFETY: the stack and `shared` outlive every switch; the context runs only while
        // this thread is suspended in a switch.
        unsafe {
            init(&raw mut (*s).co, stack.top(), co_side, s as usize);
            // First switch: into the fresh context, with a non-default FP mode here, which
            // the fresh context must not inherit.
            probe.load = regs(1, 0, 0b11_011);
            let got = gort_test_switch_with_regs(
                &raw mut (*s).main,
                &raw const (*s).co,
                0,
                &raw mut probe,
            );
            assert_eq!(got, 1);
            assert_eq!(control(&probe.seen), control(&probe.load));
            let (mxcsr, x87cw) = (*s).co_initial_fp;
            assert_eq!((mxcsr & !0x3f, x87cw), (MXCSR_DEFAULT, X87CW_DEFAULT));

            for round in 1..ROUNDS {
                probe.load = regs(1, round, fp_mode(1, round));
                let got = gort_test_switch_with_regs(
                    &raw mut (*s).main,
                    &raw const (*s).co,
                    round as usize,
                    &raw mut probe,
                );
                assert_eq!(got, round as usize * 2 + 1, "round {round}");
                assert_eq!(control(&probe.seen), control(&probe.load), "test thread, round {round}");
                assert_eq!((*s).co_bad, None, "context's registers changed");
            }
        }
        // The thread's FP state after the test is its own again (the helper restored it).
        let mut mxcsr = 0u32;
        // SAFETY: stores MXCSR into a local.
        unsafe { core::arch::asm!("stmxcsr [{}]", in(reg) &raw mut mxcsr, options(nostack)) };
        assert_eq!(mxcsr & !0x3f, MXCSR_DEFAULT);
    }
}
