//! `Context` offsets and constants shared by Rust and assembly: the one place they are written.
//!
//! Three readers, one source:
//! - `build.rs` loads this file as a module (`#[path]`) and passes every entry of the target
//!   architecture's `ALL` table to the assembler as `-D NAME=value`, so `asm/<arch>/*.S`
//!   says `CTX_RSP`, never a bare number;
//! - `src/arch/<arch>.rs` checks every entry against the real `Context` layout with
//!   `core::mem::offset_of!` in a `const` assertion, so a layout change that forgets this
//!   file does not compile;
//! - `.ci/asm-harness.sh` extracts the same `NAME = value;` lines with awk for the C harness
//!   in `asm/harness/`, which re-checks them with `_Static_assert` against its mirror struct.
//!
//! Values are plain integer literals (the macro accepts nothing else) so that the awk
//! extraction cannot disagree with what rustc sees. The whole file is plain `const` data:
//! it has no dependencies and must stay compilable by the host for `build.rs`.

/// Declares the constants of one architecture as `pub const NAME: usize = value;` items plus
/// `ALL`, the same list as `(name, value)` pairs for `build.rs`.
macro_rules! asm_offsets {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        $($(#[$doc])* pub const $name: usize = $value;)*

        /// Every constant above by name, for `build.rs` (`-D NAME=value`).
        pub const ALL: &[(&str, usize)] = &[$((stringify!($name), $name)),*];
    };
}

/// x86_64 `Context` layout (see `src/arch/x86_64.rs`). All slots are 8 bytes except the
/// FP control words and the flags, which share the last 8-byte word.
pub mod x86_64 {
    asm_offsets! {
        /// Stack pointer to resume with.
        CTX_RSP = 0;
        /// Address to resume at.
        CTX_PC = 8;
        /// rbx. For a fresh context: the entry function.
        CTX_RBX = 16;
        /// rbp (zero for a fresh context: ends frame-pointer chains).
        CTX_RBP = 24;
        /// r12. For a fresh context: the entry argument.
        CTX_R12 = 32;
        /// r13.
        CTX_R13 = 40;
        /// r14.
        CTX_R14 = 48;
        /// r15.
        CTX_R15 = 56;
        /// MXCSR (u32), saved and loaded only for contexts that own their FP control.
        CTX_MXCSR = 64;
        /// x87 control word (u16), likewise.
        CTX_X87CW = 68;
        /// Flags (u16): `FLAG_OWNS_FP_CONTROL`.
        CTX_FLAGS = 70;
        /// `size_of::<Context>()`.
        CTX_SIZE = 72;
        /// `CTX_FLAGS` bit: this context owns its FP control state (see `src/arch/mod.rs`).
        FLAG_OWNS_FP_CONTROL = 1;
        /// MXCSR at process start and the FP control every non-owning context runs with:
        /// all exceptions masked, round to nearest, no FTZ/DAZ.
        MXCSR_DEFAULT = 0x1f80;
        /// x87 control word likewise: all exceptions masked, 64-bit precision, nearest.
        X87CW_DEFAULT = 0x037f;
        /// `PreemptFrame::resume_sp` (src/preempt/signal.rs): the stack pointer
        /// `rt_sigreturn` resumes from (the copied ucontext).
        PF_RESUME_SP = 0;
        /// `__NR_rt_sigreturn`.
        SYS_RT_SIGRETURN = 15;
    }
}

/// aarch64 `Context` layout (see `src/arch/aarch64.rs`). Registers are stored in `stp`/`ldp`
/// pairs: each `CTX_Xn` with odd `n` names a pair whose second register follows 8 bytes later.
pub mod aarch64 {
    asm_offsets! {
        /// x19 (pair x19/x20). For a fresh context: the entry function.
        CTX_X19 = 0;
        /// x20. For a fresh context: the entry argument.
        CTX_X20 = 8;
        /// x21 (pair x21/x22).
        CTX_X21 = 16;
        /// x23 (pair x23/x24).
        CTX_X23 = 32;
        /// x25 (pair x25/x26).
        CTX_X25 = 48;
        /// x27 (pair x27/x28).
        CTX_X27 = 64;
        /// x29, the frame pointer (pair x29/x30; zero for a fresh context).
        CTX_FP = 80;
        /// x30, the link register slot: the address to resume at.
        CTX_LR = 88;
        /// Stack pointer to resume with.
        CTX_SP = 96;
        /// FPCR (u32: its upper half is RES0), saved and loaded only for contexts that own
        /// their FP control.
        CTX_FPCR = 104;
        /// Flags (u32): `FLAG_OWNS_FP_CONTROL`.
        CTX_FLAGS = 108;
        /// d8 (pair d8/d9).
        CTX_D8 = 112;
        /// d10 (pair d10/d11).
        CTX_D10 = 128;
        /// d12 (pair d12/d13).
        CTX_D12 = 144;
        /// d14 (pair d14/d15).
        CTX_D14 = 160;
        /// `size_of::<Context>()`.
        CTX_SIZE = 176;
        /// `CTX_FLAGS` bit: this context owns its FP control state (see `src/arch/mod.rs`).
        FLAG_OWNS_FP_CONTROL = 1;
        /// FPCR at process start and the value every non-owning context runs with: round
        /// to nearest, no flush-to-zero, no default-NaN, exceptions untrapped.
        FPCR_DEFAULT = 0;
        /// `PreemptFrame::resume_sp` (src/preempt/signal.rs): the stack pointer
        /// `rt_sigreturn` resumes from (the copied `rt_sigframe`).
        PF_RESUME_SP = 0;
        /// `__NR_rt_sigreturn`.
        SYS_RT_SIGRETURN = 139;
    }
}
