//! aarch64 execution contexts (AAPCS64). Same protocol as `x86_64.rs`, the commented
//! reference; only the differences are described here.
//!
//! - **Saved set**: x19–x28, x29 (fp), the resume address in the x30 (lr) slot, sp, d8–d15
//!   (only the low 64 bits of v8–v15 are callee-saved), and FPCR for contexts that own
//!   their FP control. x18 is not saved: on Linux it is an ordinary temporary.
//! - **No return address on the stack**: `bl` leaves it in lr, so the saved sp is simply
//!   the current sp, and a fresh context's stack is equally untouched until it runs. A
//!   fresh context resumes at `gort_goroutine_entry` with x19 = entry, x20 = arg, x29 = 0,
//!   sp = `stack_top & !15` (the ABI requires 16-byte alignment at all times).
//! - **Resume with `br x30`, not `ret`**: `ret` would consult the return-address stack and
//!   mispredict on every switch, as on x86_64. (If gort is ever built with BTI, the resume
//!   points are not landing pads; `br` to them would then need `bti j` there.)
//! - **FP control**: FPCR has no status bits (those are in FPSR, which is caller-saved) and
//!   reads into a register, so `gort_switch_fp_control` compares before it writes.
//!
//! Register state across the switch, from the caller's point of view: on entry x0 = from,
//! x1 = to, x2 = val; preserved: x19–x29, sp, d8–d15 (and FPCR if owned); result x0 = the
//! `val` of whichever switch resumes us; clobbered: everything else AAPCS64 lets a call
//! clobber, including x30, and FPSR's cumulative flags.

use core::mem::offset_of;

use super::offsets::aarch64::*;

/// Saved state of a suspended aarch64 execution context. Layout: `offsets.rs`.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Context {
    x19: usize,
    x20: usize,
    x21: usize,
    x22: usize,
    x23: usize,
    x24: usize,
    x25: usize,
    x26: usize,
    x27: usize,
    x28: usize,
    /// x29, the frame pointer.
    fp: usize,
    /// The x30 slot: the address to resume at.
    lr: usize,
    /// Stack pointer to resume with.
    sp: usize,
    /// FPCR (only if `FLAG_OWNS_FP_CONTROL`).
    fpcr: u32,
    /// `FLAG_OWNS_FP_CONTROL` or 0.
    flags: u32,
    d8: u64,
    d9: u64,
    d10: u64,
    d11: u64,
    d12: u64,
    d13: u64,
    d14: u64,
    d15: u64,
}

// Every offset the assembly uses, checked against the real layout, including the second
// register of every `stp`/`ldp` pair.
const _: () = {
    assert!(offset_of!(Context, x19) == CTX_X19);
    assert!(offset_of!(Context, x20) == CTX_X20);
    assert!(offset_of!(Context, x20) == CTX_X19 + 8);
    assert!(offset_of!(Context, x21) == CTX_X21);
    assert!(offset_of!(Context, x22) == CTX_X21 + 8);
    assert!(offset_of!(Context, x23) == CTX_X23);
    assert!(offset_of!(Context, x24) == CTX_X23 + 8);
    assert!(offset_of!(Context, x25) == CTX_X25);
    assert!(offset_of!(Context, x26) == CTX_X25 + 8);
    assert!(offset_of!(Context, x27) == CTX_X27);
    assert!(offset_of!(Context, x28) == CTX_X27 + 8);
    assert!(offset_of!(Context, fp) == CTX_FP);
    assert!(offset_of!(Context, lr) == CTX_LR);
    assert!(offset_of!(Context, lr) == CTX_FP + 8);
    assert!(offset_of!(Context, sp) == CTX_SP);
    assert!(offset_of!(Context, fpcr) == CTX_FPCR);
    assert!(offset_of!(Context, flags) == CTX_FLAGS);
    assert!(offset_of!(Context, d8) == CTX_D8);
    assert!(offset_of!(Context, d9) == CTX_D8 + 8);
    assert!(offset_of!(Context, d10) == CTX_D10);
    assert!(offset_of!(Context, d11) == CTX_D10 + 8);
    assert!(offset_of!(Context, d12) == CTX_D12);
    assert!(offset_of!(Context, d13) == CTX_D12 + 8);
    assert!(offset_of!(Context, d14) == CTX_D14);
    assert!(offset_of!(Context, d15) == CTX_D14 + 8);
    assert!(core::mem::size_of::<Context>() == CTX_SIZE);
    // `ldp`/`stp` immediates: multiples of 8 below 512. The SLEB2 CFI encoding in
    // switch.S needs offsets below 8192, implied.
    assert!(CTX_SIZE <= 512 && CTX_FLAGS % 4 == 0 && CTX_FPCR % 4 == 0);
};

impl Context {
    /// A context that has never run: all zero. It can be switched *from* (which fills it)
    /// but not *to*. It does not own its FP control.
    pub(crate) const fn new() -> Context {
        Context {
            x19: 0,
            x20: 0,
            x21: 0,
            x22: 0,
            x23: 0,
            x24: 0,
            x25: 0,
            x26: 0,
            x27: 0,
            x28: 0,
            fp: 0,
            lr: 0,
            sp: 0,
            fpcr: 0,
            flags: 0,
            d8: 0,
            d9: 0,
            d10: 0,
            d11: 0,
            d12: 0,
            d13: 0,
            d14: 0,
            d15: 0,
        }
    }

    /// Makes this context own its FP control state (FPCR); see the x86_64 version.
    #[cfg_attr(
        not(test),
        allow(
            dead_code,
            reason = "for goroutines that opt in (C API), not wired yet"
        )
    )]
    pub(crate) fn own_fp_control(&mut self) {
        self.fpcr = FPCR_DEFAULT as u32;
        self.flags |= FLAG_OWNS_FP_CONTROL as u32;
    }

    /// Whether a switch into this context is allowed (fresh or suspended, not never-run).
    pub(crate) fn is_resumable(&self) -> bool {
        self.lr != 0
    }
}

/// Prepares `ctx` so that the first switch into it calls `entry(arg)` on the stack whose
/// highest address (exclusive) is `stack_top`. The context does not own its FP control.
///
/// # Safety
///
/// As for the x86_64 version: `ctx` is valid for writes and not running or suspended;
/// `stack_top` tops a mapped, writable stack that outlives the context; `entry` never
/// returns.
pub(crate) unsafe fn init(
    ctx: *mut Context,
    stack_top: *mut u8,
    entry: unsafe extern "C" fn(usize) -> !,
    arg: usize,
) {
    debug_assert!(!stack_top.is_null());
    let fresh = Context {
        sp: stack_top as usize & !15,
        lr: super::goroutine_entry_address(),
        x19: entry as usize,
        x20: arg,
        ..Context::new()
    };
    // SAFETY: the caller guarantees `ctx` is valid for writes.
    unsafe { ctx.write(fresh) };
}

/// The inline switch (see the x86_64 version): x0 = from, x1 = to, x2 = val on entry; x0 =
/// the resuming switch's `val` on exit. The resume address is local label `2`.
macro_rules! switch_asm {
    ([$($before:literal),*], [$($after:literal),*], $($operands:tt)*) => {
        core::arch::asm!(
            $($before,)*
            // Save *from: it resumes at label 2 with the current sp.
            "adr x9, 2f",
            "mov x10, sp",
            "stp x19, x20, [x0, #{ctx_x19}]",
            "stp x21, x22, [x0, #{ctx_x21}]",
            "stp x23, x24, [x0, #{ctx_x23}]",
            "stp x25, x26, [x0, #{ctx_x25}]",
            "stp x27, x28, [x0, #{ctx_x27}]",
            "stp x29, x9, [x0, #{ctx_fp}]",
            "str x10, [x0, #{ctx_sp}]",
            "stp d8, d9, [x0, #{ctx_d8}]",
            "stp d10, d11, [x0, #{ctx_d10}]",
            "stp d12, d13, [x0, #{ctx_d12}]",
            "stp d14, d15, [x0, #{ctx_d14}]",
            // FP control only if either side owns it (predicted not taken).
            "ldr w9, [x0, #{ctx_flags}]",
            "ldr w10, [x1, #{ctx_flags}]",
            "orr w9, w9, w10",
            "cbz w9, 3f",
            "bl {fp_control}",
            "3:",
            // Load *to and go.
            "ldp x19, x20, [x1, #{ctx_x19}]",
            "ldp x21, x22, [x1, #{ctx_x21}]",
            "ldp x23, x24, [x1, #{ctx_x23}]",
            "ldp x25, x26, [x1, #{ctx_x25}]",
            "ldp x27, x28, [x1, #{ctx_x27}]",
            "ldp d8, d9, [x1, #{ctx_d8}]",
            "ldp d10, d11, [x1, #{ctx_d10}]",
            "ldp d12, d13, [x1, #{ctx_d12}]",
            "ldp d14, d15, [x1, #{ctx_d14}]",
            "ldp x29, x30, [x1, #{ctx_fp}]",
            "ldr x9, [x1, #{ctx_sp}]",
            "mov x0, x2",
            "mov sp, x9",
            "br x30",
            "2:",
            $($after,)*
            ctx_x19 = const CTX_X19,
            ctx_x21 = const CTX_X21,
            ctx_x23 = const CTX_X23,
            ctx_x25 = const CTX_X25,
            ctx_x27 = const CTX_X27,
            ctx_fp = const CTX_FP,
            ctx_sp = const CTX_SP,
            ctx_flags = const CTX_FLAGS,
            ctx_d8 = const CTX_D8,
            ctx_d10 = const CTX_D10,
            ctx_d12 = const CTX_D12,
            ctx_d14 = const CTX_D14,
            fp_control = sym $crate::arch::gort_switch_fp_control,
            $($operands)*
        )
    };
}

/// Saves the current callee-saved state into `*from` and resumes `*to`; see
/// [`super::switch`] for the contract (this is its aarch64 body).
///
/// # Safety
///
/// As for [`super::switch`].
#[inline(always)]
pub(crate) unsafe fn switch(from: *mut Context, to: *const Context, val: usize) -> usize {
    let ret: usize;
    // SAFETY: the caller upholds the switch contract; the sequence preserves x19-x29, sp
    // and d8-d15 as seen by this function (reloaded from `*from` by whoever resumes it)
    // and clobbers only what `clobber_abi("C")` and the explicit x30 declare.
    unsafe {
        switch_asm!(
            [],
            [],
            inlateout("x0") from => ret,
            in("x1") to,
            in("x2") val,
            lateout("x30") _,
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
    // SAFETY: copies sp into a register; touches no memory and no flags.
    unsafe {
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
    };
    sp
}

#[cfg(test)]
mod tests {
    //! Register preservation across both switch implementations, as in `x86_64.rs`.

    use super::super::tests::TestStack;
    use super::super::{init, switch};
    use super::*;

    /// The callee-saved state one side of the test holds across a switch.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Regs {
        /// x19..=x29.
        x: [u64; 11],
        /// d8..=d15.
        d: [u64; 8],
        fpcr: u32,
        _pad: u32,
    }

    /// `load` goes into the registers before the switch, `seen` is what they held after.
    #[repr(C)]
    struct Probe {
        load: Regs,
        seen: Regs,
    }

    type Switcher = unsafe extern "C" fn(*mut Context, *const Context, usize, *mut Probe) -> usize;

    unsafe extern "C" {
        /// Test helper (below) around the out-of-line `gort_switch`: saves the real
        /// callee-saved registers and FPCR, loads `probe.load`, switches, stores what came
        /// back into `probe.seen`, restores. Runs on the caller's stack.
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
        "stp x29, x30, [sp, #-176]!",
        "stp x19, x20, [sp, #16]",
        "stp x21, x22, [sp, #32]",
        "stp x23, x24, [sp, #48]",
        "stp x25, x26, [sp, #64]",
        "stp x27, x28, [sp, #80]",
        "stp d8, d9, [sp, #96]",
        "stp d10, d11, [sp, #112]",
        "stp d12, d13, [sp, #128]",
        "stp d14, d15, [sp, #144]",
        "mrs x9, fpcr",
        "stp x9, x3, [sp, #160]",
        "ldr w9, [x3, #{L_FPCR}]",
        "msr fpcr, x9",
        "ldp x19, x20, [x3, #{L_X}]",
        "ldp x21, x22, [x3, #{L_X} + 16]",
        "ldp x23, x24, [x3, #{L_X} + 32]",
        "ldp x25, x26, [x3, #{L_X} + 48]",
        "ldp x27, x28, [x3, #{L_X} + 64]",
        "ldr x29, [x3, #{L_X} + 80]",
        "ldp d8, d9, [x3, #{L_D}]",
        "ldp d10, d11, [x3, #{L_D} + 16]",
        "ldp d12, d13, [x3, #{L_D} + 32]",
        "ldp d14, d15, [x3, #{L_D} + 48]",
        "bl {switch}",
        "ldr x3, [sp, #168]",
        "stp x19, x20, [x3, #{S_X}]",
        "stp x21, x22, [x3, #{S_X} + 16]",
        "stp x23, x24, [x3, #{S_X} + 32]",
        "stp x25, x26, [x3, #{S_X} + 48]",
        "stp x27, x28, [x3, #{S_X} + 64]",
        "str x29, [x3, #{S_X} + 80]",
        "stp d8, d9, [x3, #{S_D}]",
        "stp d10, d11, [x3, #{S_D} + 16]",
        "stp d12, d13, [x3, #{S_D} + 32]",
        "stp d14, d15, [x3, #{S_D} + 48]",
        "mrs x9, fpcr",
        "str w9, [x3, #{S_FPCR}]",
        "ldr x9, [sp, #160]",
        "msr fpcr, x9",
        "ldp x19, x20, [sp, #16]",
        "ldp x21, x22, [sp, #32]",
        "ldp x23, x24, [sp, #48]",
        "ldp x25, x26, [sp, #64]",
        "ldp x27, x28, [sp, #80]",
        "ldp d8, d9, [sp, #96]",
        "ldp d10, d11, [sp, #112]",
        "ldp d12, d13, [sp, #128]",
        "ldp d14, d15, [sp, #144]",
        "ldp x29, x30, [sp], #176",
        "ret",
        switch = sym super::super::gort_switch,
        L_X = const offset_of!(Probe, load) + offset_of!(Regs, x),
        L_D = const offset_of!(Probe, load) + offset_of!(Regs, d),
        L_FPCR = const offset_of!(Probe, load) + offset_of!(Regs, fpcr),
        S_X = const offset_of!(Probe, seen) + offset_of!(Regs, x),
        S_D = const offset_of!(Probe, seen) + offset_of!(Regs, d),
        S_FPCR = const offset_of!(Probe, seen) + offset_of!(Regs, fpcr),
    );

    /// The same around the inline switch, in one asm block.
    unsafe extern "C" fn inline_switch_with_regs(
        from: *mut Context,
        to: *const Context,
        val: usize,
        probe: *mut Probe,
    ) -> usize {
        let ret: usize;
        // SAFETY: the caller upholds the switch contract; the block saves and restores
        // every register it loads test patterns into, and FPCR.
        unsafe {
            switch_asm!(
                [
                    "sub sp, sp, #176",
                    "str x29, [sp, #0]",
                    "stp x19, x20, [sp, #16]",
                    "stp x21, x22, [sp, #32]",
                    "stp x23, x24, [sp, #48]",
                    "stp x25, x26, [sp, #64]",
                    "stp x27, x28, [sp, #80]",
                    "stp d8, d9, [sp, #96]",
                    "stp d10, d11, [sp, #112]",
                    "stp d12, d13, [sp, #128]",
                    "stp d14, d15, [sp, #144]",
                    "mrs x9, fpcr",
                    "stp x9, x3, [sp, #160]",
                    "ldr w9, [x3, #{l_fpcr}]",
                    "msr fpcr, x9",
                    "ldp x19, x20, [x3, #{l_x}]",
                    "ldp x21, x22, [x3, #{l_x} + 16]",
                    "ldp x23, x24, [x3, #{l_x} + 32]",
                    "ldp x25, x26, [x3, #{l_x} + 48]",
                    "ldp x27, x28, [x3, #{l_x} + 64]",
                    "ldr x29, [x3, #{l_x} + 80]",
                    "ldp d8, d9, [x3, #{l_d}]",
                    "ldp d10, d11, [x3, #{l_d} + 16]",
                    "ldp d12, d13, [x3, #{l_d} + 32]",
                    "ldp d14, d15, [x3, #{l_d} + 48]"
                ],
                [
                    "ldr x3, [sp, #168]",
                    "stp x19, x20, [x3, #{s_x}]",
                    "stp x21, x22, [x3, #{s_x} + 16]",
                    "stp x23, x24, [x3, #{s_x} + 32]",
                    "stp x25, x26, [x3, #{s_x} + 48]",
                    "stp x27, x28, [x3, #{s_x} + 64]",
                    "str x29, [x3, #{s_x} + 80]",
                    "stp d8, d9, [x3, #{s_d}]",
                    "stp d10, d11, [x3, #{s_d} + 16]",
                    "stp d12, d13, [x3, #{s_d} + 32]",
                    "stp d14, d15, [x3, #{s_d} + 48]",
                    "mrs x9, fpcr",
                    "str w9, [x3, #{s_fpcr}]",
                    "ldr x9, [sp, #160]",
                    "msr fpcr, x9",
                    "ldr x29, [sp, #0]",
                    "ldp x19, x20, [sp, #16]",
                    "ldp x21, x22, [sp, #32]",
                    "ldp x23, x24, [sp, #48]",
                    "ldp x25, x26, [sp, #64]",
                    "ldp x27, x28, [sp, #80]",
                    "ldp d8, d9, [sp, #96]",
                    "ldp d10, d11, [sp, #112]",
                    "ldp d12, d13, [sp, #128]",
                    "ldp d14, d15, [sp, #144]",
                    "add sp, sp, #176"
                ],
                l_x = const offset_of!(Probe, load) + offset_of!(Regs, x),
                l_d = const offset_of!(Probe, load) + offset_of!(Regs, d),
                l_fpcr = const offset_of!(Probe, load) + offset_of!(Regs, fpcr),
                s_x = const offset_of!(Probe, seen) + offset_of!(Regs, x),
                s_d = const offset_of!(Probe, seen) + offset_of!(Regs, d),
                s_fpcr = const offset_of!(Probe, seen) + offset_of!(Regs, fpcr),
                inlateout("x0") from => ret,
                in("x1") to,
                in("x2") val,
                in("x3") probe,
                lateout("x30") _,
                clobber_abi("C"),
            )
        };
        ret
    }

    /// FPCR for a 4-bit `mode`: bits 0–1 RMode (FPCR bits 22–23), bit 2 FZ (bit 24), bit 3
    /// DN (bit 25). Mode 0 is the default.
    fn fp_control(mode: u64) -> u32 {
        (((mode & 3) << 22) | (((mode >> 2) & 1) << 24) | (((mode >> 3) & 1) << 25)) as u32
    }

    /// The FP mode of `side` in `round`: the default on every fourth round, else
    /// pseudo-random.
    fn fp_mode(side: u64, round: u64) -> u64 {
        if round % 4 == 3 {
            0
        } else {
            (side ^ round).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 60
        }
    }

    /// Distinct register values for one side and round.
    fn regs(side: u64, round: u64, mode: u64) -> Regs {
        let base = (side << 60) ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        Regs {
            x: core::array::from_fn(|i| base ^ (0x1111 * (i as u64 + 1))),
            d: core::array::from_fn(|i| base ^ (0x7777_0000 * (i as u64 + 1))),
            fpcr: fp_control(mode),
            _pad: 0,
        }
    }

    /// FPCR of the current thread.
    fn current_fp_control() -> u32 {
        let fpcr: u64;
        // SAFETY: reads FPCR into a register.
        unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
        fpcr as u32
    }

    struct Shared {
        main: Context,
        co: Context,
        co_switcher: Switcher,
        co_probe: Probe,
        co_bad: Option<(u64, Regs, Regs)>,
        co_initial_fp: u32,
    }

    const ROUNDS: u64 = 20_000;

    unsafe extern "C" fn co_side(arg: usize) -> ! {
        let shared = arg as *mut Shared;
        let initial = current_fp_control();
        let mut round = 0u64;
        // SAFETY: as in the x86_64 test.
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
                if probe.seen != probe.load && (*shared).co_bad.is_none() {
                    (*shared).co_bad = Some((round, probe.load, probe.seen));
                }
                round = got as u64;
            }
        }
    }

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
            co_initial_fp: u32::MAX,
        });
        let s = &raw mut *shared;
        let mut probe = Probe {
            load: regs(0, 0, 0),
            seen: regs(0, 0, 0),
        };
        // SAFETY: as in the x86_64 test.
        unsafe {
            init(&raw mut (*s).co, stack.top(), co_side, s as usize);
            (*s).co.own_fp_control();
            (*s).main.own_fp_control();
            probe.load = regs(1, 0, 0b1011);
            let got = main_switcher(&raw mut (*s).main, &raw const (*s).co, 0, &raw mut probe);
            assert_eq!(got, 1);
            assert_eq!(probe.seen, probe.load);
            assert_eq!((*s).co_initial_fp, FPCR_DEFAULT as u32);
            for round in 1..ROUNDS {
                probe.load = regs(1, round, fp_mode(1, round));
                let got = main_switcher(
                    &raw mut (*s).main,
                    &raw const (*s).co,
                    round as usize,
                    &raw mut probe,
                );
                assert_eq!(got, round as usize * 2 + 1, "round {round}");
                assert_eq!(probe.seen, probe.load, "test thread, round {round}");
                assert_eq!((*s).co_bad, None, "the context's registers changed");
            }
        }
        assert_eq!(current_fp_control(), FPCR_DEFAULT as u32);
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
        seen: u32,
    }

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
            seen: u32::MAX,
        });
        let o = &raw mut *observer;
        for implementation in [
            inline_switch_with_regs as Switcher,
            gort_test_switch_with_regs,
        ] {
            let mut probe = Probe {
                load: regs(1, 7, 0b0111),
                seen: regs(0, 0, 0),
            };
            // SAFETY: as in the x86_64 test.
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
            assert_eq!(observer.seen, FPCR_DEFAULT as u32);
            assert_eq!(probe.seen, probe.load);
        }
    }
}
