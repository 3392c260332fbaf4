//! x86_64 execution contexts: the reference implementation (System V psABI).
//!
//! # Stacks
//!
//! A context suspended by the inline switch (every Rust caller): nothing was pushed; the
//! resume address is the label right after the switch's final `jmp`, and the stack is
//! exactly as the enclosing function left it.
//!
//! ```text
//!     higher addresses
//!   | enclosing function's frame |
//!   +----------------------------+ <- ctx.rsp = rsp at the switch;  ctx.pc = label `2:`
//!   | (red zone: untouched while |
//!   |  suspended; nothing runs   |
//!   |  on this stack)            |
//!     lower addresses
//! ```
//!
//! A context suspended by the out-of-line `gort_switch`: its return address is still on
//! the stack, but `Context` holds a copy and the stack pointer *above* it, so resuming is
//! "as if `gort_switch` had returned", the same protocol as above:
//!
//! ```text
//!   | caller's frame ...         |
//!   +----------------------------+ <- ctx.rsp  (rsp after the `ret` that never happens)
//!   | return address into caller |    ctx.pc holds the same value
//!   +----------------------------+
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
//!   +----------------------------+    flags = 0: runs with the thread's FP defaults
//!   | entry's frame ...          |
//! ```
//!
//! `gort_goroutine_entry` runs with rsp 16-byte aligned and `call`s the entry function, so
//! the entry function sees the standard "rsp + 8 is 16-byte aligned" at its first
//! instruction, and its return address points into the trampoline, whose CFI says "return
//! address undefined": the end of every backtrace.
//!
//! # Register state across a switch (from the caller's point of view)
//!
//! - On entry: rdi = from, rsi = to, rdx = val (plus, for `gort_switch`, rsp -> return
//!   address).
//! - Preserved: rbx, rbp, r12–r15, rsp; MXCSR control bits (6–15) and the x87 control
//!   word if `*from` owns its FP control.
//! - Result: rax = the `val` of whichever switch resumes us.
//! - Clobbered: everything else the ABI lets a call clobber: rcx, rdx, rsi, rdi, r8–r11,
//!   xmm/ymm/zmm, x87/MMX, flags, MXCSR status bits.
//!
//! MXCSR holds sticky exception flags (bits 0–5) next to its control bits; ordinary
//! arithmetic sets them, and the psABI makes them caller-saved. An owning context gets its
//! whole saved MXCSR back, flags included, which is allowed.

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
    /// MXCSR as saved by `stmxcsr` (only if `FLAG_OWNS_FP_CONTROL`).
    mxcsr: u32,
    /// x87 FPU control word as saved by `fnstcw` (only if `FLAG_OWNS_FP_CONTROL`).
    x87cw: u16,
    /// `FLAG_OWNS_FP_CONTROL` or 0.
    flags: u16,
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
    assert!(offset_of!(Context, flags) == CTX_FLAGS);
    assert!(core::mem::size_of::<Context>() == CTX_SIZE);
    // The CFI escapes in switch.S encode these offsets as one SLEB128 byte each.
    assert!(CTX_RSP < 64 && CTX_PC < 64 && CTX_RBX < 64 && CTX_RBP < 64);
    assert!(CTX_R12 < 64 && CTX_R13 < 64 && CTX_R14 < 64 && CTX_R15 < 64);
};

impl Context {
    /// A context that has never run: all zero. It can be switched *from* (which fills it)
    /// but not *to*. It does not own its FP control.
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
            flags: 0,
        }
    }

    /// Makes this context own its FP control state (MXCSR and x87 control word): from now
    /// on every switch away from it saves them and every switch into it restores them, so
    /// a change it makes (C code's `fesetround`) stays with it and is never seen by other
    /// contexts. Costs a few nanoseconds on every switch into or out of this context (see
    /// the measurements in `mod.rs`). It starts from the ABI defaults when next resumed.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "for goroutines that opt in (C API), not wired yet"
        )
    )]
    pub(crate) fn own_fp_control(&mut self) {
        self.mxcsr = MXCSR_DEFAULT as u32;
        self.x87cw = X87CW_DEFAULT as u16;
        self.flags |= FLAG_OWNS_FP_CONTROL as u16;
    }

    /// Whether a switch into this context is allowed (fresh or suspended, not never-run).
    pub(crate) fn is_resumable(&self) -> bool {
        self.pc != 0
    }
}

/// Prepares `ctx` so that the first switch into it calls `entry(arg)` on the stack whose
/// highest address (exclusive) is `stack_top`. The context does not own its FP control.
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
        ..Context::new()
    };
    // SAFETY: the caller guarantees `ctx` is valid for writes.
    unsafe { ctx.write(fresh) };
}

/// The inline switch: one `asm!` block holding the whole sequence, with optional template
/// lines before and after it (the register tests wrap it in loads and checks).
///
/// Register contract of the sequence: rdi = from, rsi = to, rdx = val on entry; rax = the
/// `val` of whoever resumes us on exit. Callee-saved registers and rsp come back as they
/// were (they are saved into `*from` and reloaded by the switch that resumes us); every
/// register `clobber_abi("C")` names may change. The resume address is local label `2`
/// right after the final `jmp`, so the indirect jump that leaves each call site is
/// predicted per call site (see "Designs rejected" in `mod.rs`).
macro_rules! switch_asm {
    ([$($before:literal),*], [$($after:literal),*], $($operands:tt)*) => {
        core::arch::asm!(
            $($before,)*
            // Save *from: it resumes at label 2 with the current rsp.
            "lea rax, [rip + 2f]",
            "mov [rdi + {ctx_pc}], rax",
            "mov [rdi + {ctx_rsp}], rsp",
            "mov [rdi + {ctx_rbx}], rbx",
            "mov [rdi + {ctx_rbp}], rbp",
            "mov [rdi + {ctx_r12}], r12",
            "mov [rdi + {ctx_r13}], r13",
            "mov [rdi + {ctx_r14}], r14",
            "mov [rdi + {ctx_r15}], r15",
            // FP control only if either side owns it (predicted not taken).
            "movzx ecx, word ptr [rdi + {ctx_flags}]",
            "or cx, word ptr [rsi + {ctx_flags}]",
            "jz 3f",
            "call {fp_control}",
            "3:",
            // Load *to and go.
            "mov rbx, [rsi + {ctx_rbx}]",
            "mov rbp, [rsi + {ctx_rbp}]",
            "mov r12, [rsi + {ctx_r12}]",
            "mov r13, [rsi + {ctx_r13}]",
            "mov r14, [rsi + {ctx_r14}]",
            "mov r15, [rsi + {ctx_r15}]",
            "mov rax, rdx",
            "mov rsp, [rsi + {ctx_rsp}]",
            "jmp qword ptr [rsi + {ctx_pc}]",
            "2:",
            $($after,)*
            ctx_pc = const CTX_PC,
            ctx_rsp = const CTX_RSP,
            ctx_rbx = const CTX_RBX,
            ctx_rbp = const CTX_RBP,
            ctx_r12 = const CTX_R12,
            ctx_r13 = const CTX_R13,
            ctx_r14 = const CTX_R14,
            ctx_r15 = const CTX_R15,
            ctx_flags = const CTX_FLAGS,
            fp_control = sym $crate::arch::gort_switch_fp_control,
            $($operands)*
        )
    };
}

/// Saves the current callee-saved state into `*from` and resumes `*to`; see
/// [`super::switch`] for the contract (this is its x86_64 body).
///
/// # Safety
///
/// As for [`super::switch`].
#[inline(always)]
pub(crate) unsafe fn switch(from: *mut Context, to: *const Context, val: usize) -> usize {
    let ret: usize;
    // SAFETY: the caller upholds the switch contract; the sequence preserves rbx, rbp,
    // r12-r15 and rsp as seen by this function (they are reloaded from `*from` by whoever
    // resumes it) and clobbers only what `clobber_abi("C")` declares.
    unsafe {
        switch_asm!(
            [],
            [],
            in("rdi") from,
            in("rsi") to,
            in("rdx") val,
            lateout("rax") ret,
            clobber_abi("C"),
        )
    };
    ret
}

/// The current stack pointer (for stack headroom checks).
#[cfg_attr(
    not(test),
    allow(dead_code, reason = "headroom checks are not wired yet")
)]
#[inline(always)]
pub(crate) fn current_sp() -> usize {
    let sp: usize;
    // SAFETY: copies rsp into a register; touches no memory and no flags.
    unsafe {
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

#[cfg(test)]
mod tests {
    //! Register preservation across both switch implementations (the inline one and
    //! `gort_switch`), checked from assembly: Rust cannot name rbx or rbp as asm operands,
    //! and must not run with a non-default FP environment.

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

    /// A switch that loads `probe.load` into the callee-saved registers and FP control
    /// first and records them into `probe.seen` when resumed. Both implementations save
    /// and restore the thread's real registers and FP control around all that.
    type Switcher = unsafe extern "C" fn(*mut Context, *const Context, usize, *mut Probe) -> usize;

    unsafe extern "C" {
        /// Test helper (below) around the out-of-line `gort_switch`. Runs on the caller's
        /// stack; clobbers what a C call may.
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

    /// The same around the inline switch (the sequence `switch` uses), in one asm block.
    unsafe extern "C" fn inline_switch_with_regs(
        from: *mut Context,
        to: *const Context,
        val: usize,
        probe: *mut Probe,
    ) -> usize {
        let ret: usize;
        // SAFETY: the caller upholds the switch contract; the block saves and restores
        // every register it loads test patterns into, and the FP control.
        unsafe {
            switch_asm!(
                [
                    "push rbp",
                    "push rbx",
                    "push r12",
                    "push r13",
                    "push r14",
                    "push r15",
                    "sub rsp, 32",
                    "stmxcsr [rsp]",
                    "fnstcw [rsp + 4]",
                    "mov [rsp + 8], r8",
                    "ldmxcsr [r8 + {l_mxcsr}]",
                    "fldcw [r8 + {l_x87cw}]",
                    "mov rbx, [r8 + {l_rbx}]",
                    "mov rbp, [r8 + {l_rbp}]",
                    "mov r12, [r8 + {l_r12}]",
                    "mov r13, [r8 + {l_r13}]",
                    "mov r14, [r8 + {l_r14}]",
                    "mov r15, [r8 + {l_r15}]"
                ],
                [
                    "mov r8, [rsp + 8]",
                    "mov [r8 + {s_rbx}], rbx",
                    "mov [r8 + {s_rbp}], rbp",
                    "mov [r8 + {s_r12}], r12",
                    "mov [r8 + {s_r13}], r13",
                    "mov [r8 + {s_r14}], r14",
                    "mov [r8 + {s_r15}], r15",
                    "stmxcsr [r8 + {s_mxcsr}]",
                    "fnstcw [r8 + {s_x87cw}]",
                    "ldmxcsr [rsp]",
                    "fldcw [rsp + 4]",
                    "add rsp, 32",
                    "pop r15",
                    "pop r14",
                    "pop r13",
                    "pop r12",
                    "pop rbx",
                    "pop rbp"
                ],
                l_rbx = const offset_of!(Probe, load) + offset_of!(Regs, rbx),
                l_rbp = const offset_of!(Probe, load) + offset_of!(Regs, rbp),
                l_r12 = const offset_of!(Probe, load) + offset_of!(Regs, r12),
                l_r13 = const offset_of!(Probe, load) + offset_of!(Regs, r13),
                l_r14 = const offset_of!(Probe, load) + offset_of!(Regs, r14),
                l_r15 = const offset_of!(Probe, load) + offset_of!(Regs, r15),
                l_mxcsr = const offset_of!(Probe, load) + offset_of!(Regs, mxcsr),
                l_x87cw = const offset_of!(Probe, load) + offset_of!(Regs, x87cw),
                s_rbx = const offset_of!(Probe, seen) + offset_of!(Regs, rbx),
                s_rbp = const offset_of!(Probe, seen) + offset_of!(Regs, rbp),
                s_r12 = const offset_of!(Probe, seen) + offset_of!(Regs, r12),
                s_r13 = const offset_of!(Probe, seen) + offset_of!(Regs, r13),
                s_r14 = const offset_of!(Probe, seen) + offset_of!(Regs, r14),
                s_r15 = const offset_of!(Probe, seen) + offset_of!(Regs, r15),
                s_mxcsr = const offset_of!(Probe, seen) + offset_of!(Regs, mxcsr),
                s_x87cw = const offset_of!(Probe, seen) + offset_of!(Regs, x87cw),
                in("rdi") from,
                in("rsi") to,
                in("rdx") val,
                in("r8") probe,
                lateout("rax") ret,
                clobber_abi("C"),
            )
        };
        ret
    }

    const MXCSR_DEFAULT_U32: u32 = MXCSR_DEFAULT as u32;
    const X87CW_DEFAULT_U16: u16 = X87CW_DEFAULT as u16;

    /// FP control words for a 5-bit `mode`: bits 0–1 MXCSR rounding control (MXCSR bits
    /// 13–14), bit 2 flush-to-zero + denormals-are-zero (MXCSR bits 15 and 6), bits 3–4 x87
    /// rounding control (CW bits 10–11). Mode 0 is the ABI default. The two words vary
    /// independently, so some switches differ only in MXCSR, some only in the x87 CW.
    fn fp_control(mode: u64) -> (u32, u16) {
        let sse_rc = (mode & 3) as u32;
        let ftz_daz = if mode & 4 != 0 { 0x8040 } else { 0 };
        let x87_rc = ((mode >> 3) & 3) as u16;
        (
            MXCSR_DEFAULT_U32 | (sse_rc << 13) | ftz_daz,
            X87CW_DEFAULT_U16 | (x87_rc << 10),
        )
    }

    /// The FP mode of `side` in `round`: the default on every fourth round, else
    /// pseudo-random.
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

    /// MXCSR's status bits (0–5) are not preserved: the psABI makes them caller-saved.
    fn control(r: &Regs) -> Regs {
        Regs {
            mxcsr: r.mxcsr & !0x3f,
            ..*r
        }
    }

    /// MXCSR and the x87 control word of the current thread.
    fn current_fp_control() -> (u32, u16) {
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
        (mxcsr, x87cw)
    }

    struct Shared {
        main: Context,
        co: Context,
        co_switcher: Switcher,
        co_probe: Probe,
        /// The first round in which the context saw a register change, with what it loaded
        /// and what it saw.
        co_bad: Option<(u64, Regs, Regs)>,
        /// MXCSR and x87 CW the context saw on its very first instructions.
        co_initial_fp: (u32, u16),
    }

    const ROUNDS: u64 = 20_000;

    /// The context's side: every round, holds its own pattern across a switch back to the
    /// test thread and records the first round in which something else came back.
    unsafe extern "C" fn co_side(arg: usize) -> ! {
        let shared = arg as *mut Shared;
        let initial = current_fp_control();
        let mut round = 0u64;
        // SAFETY: `shared` outlives the context, the test thread is suspended whenever
        // this runs, and `co_probe` is only read by it after the switch.
        unsafe {
            (*shared).co_initial_fp = initial;
            loop {
                (*shared).co_probe.load = regs(2, round, fp_mode(2, round));
                let got = ((*shared).co_switcher)(
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

    /// Both contexts own their FP control; each holds distinct callee-saved values and FP
    /// modes across every switch, through `main_switcher` and `co_switcher` respectively.
    fn check_registers_survive(main_switcher: Switcher, co_switcher: Switcher) {
        let stack = TestStack::new(64 * 1024);
        let mut shared = Box::new(Shared {
            main: Context::new(),
            co: Context::new(),
            co_switcher,
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
            (*s).co.own_fp_control();
            (*s).main.own_fp_control();
            // First switch: into the fresh context, with a non-default FP mode here, which
            // the fresh context must not inherit.
            probe.load = regs(1, 0, 0b11_011);
            let got = main_switcher(&raw mut (*s).main, &raw const (*s).co, 0, &raw mut probe);
            assert_eq!(got, 1);
            assert_eq!(control(&probe.seen), control(&probe.load));
            let (mxcsr, x87cw) = (*s).co_initial_fp;
            assert_eq!(
                (mxcsr & !0x3f, x87cw),
                (MXCSR_DEFAULT_U32, X87CW_DEFAULT_U16)
            );

            for round in 1..ROUNDS {
                probe.load = regs(1, round, fp_mode(1, round));
                let got = main_switcher(
                    &raw mut (*s).main,
                    &raw const (*s).co,
                    round as usize,
                    &raw mut probe,
                );
                assert_eq!(got, round as usize * 2 + 1, "round {round}");
                assert_eq!(
                    control(&probe.seen),
                    control(&probe.load),
                    "test thread, round {round}"
                );
                assert_eq!((*s).co_bad, None, "the context's registers changed");
            }
        }
        // The helpers restored this thread's own FP state.
        assert_eq!(current_fp_control().0 & !0x3f, MXCSR_DEFAULT_U32);
    }

    #[test]
    fn registers_survive_inline_switch() {
        check_registers_survive(inline_switch_with_regs, inline_switch_with_regs);
    }

    #[test]
    fn registers_survive_out_of_line_gort_switch() {
        check_registers_survive(gort_test_switch_with_regs, gort_test_switch_with_regs);
    }

    #[test]
    fn inline_and_out_of_line_switches_resume_each_other() {
        check_registers_survive(inline_switch_with_regs, gort_test_switch_with_regs);
        check_registers_survive(gort_test_switch_with_regs, inline_switch_with_regs);
    }

    struct Observer {
        main: Context,
        co: Context,
        seen: (u32, u16),
    }

    /// Records the FP control it runs with, then hands control back for good.
    unsafe extern "C" fn observe_fp_control(arg: usize) -> ! {
        let observer = arg as *mut Observer;
        let seen = current_fp_control();
        loop {
            // SAFETY: the test thread keeps `observer` alive and is suspended in a switch.
            unsafe {
                (*observer).seen = seen;
                switch(&raw mut (*observer).co, &raw const (*observer).main, 0);
            }
        }
    }

    #[test]
    fn a_context_without_fp_ownership_runs_with_the_defaults() {
        let stack = TestStack::new(64 * 1024);
        let mut observer = Box::new(Observer {
            main: Context::new(),
            co: Context::new(),
            seen: (0, 0),
        });
        let o = &raw mut *observer;
        for implementation in [
            inline_switch_with_regs as Switcher,
            gort_test_switch_with_regs,
        ] {
            let mut probe = Probe {
                load: regs(1, 7, 0b10_110),
                seen: regs(0, 0, 0),
            };
            // SAFETY: as in the tests above; the observer context is re-initialised for
            // each round since it never returns.
            unsafe {
                init(
                    &raw mut (*o).co,
                    stack.top(),
                    observe_fp_control,
                    o as usize,
                );
                (*o).main.own_fp_control();
                implementation(&raw mut (*o).main, &raw const (*o).co, 0, &raw mut probe);
            }
            let (mxcsr, x87cw) = observer.seen;
            assert_eq!(
                (mxcsr & !0x3f, x87cw),
                (MXCSR_DEFAULT_U32, X87CW_DEFAULT_U16)
            );
            // ... and the owning side got its own non-default mode back.
            assert_eq!(control(&probe.seen), control(&probe.load));
        }
    }
}
