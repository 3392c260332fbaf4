/* asm/aarch64/switch.S: gort_switch (context switch), gort_switch_fp_control (its FP
 * control slow path) and gort_goroutine_entry (first run of a fresh context).
 *
 * Same symbols and contracts as asm/x86_64/switch.S, which is the commented reference;
 * src/arch/aarch64.rs lists the differences. CTX_* names come from src/arch/offsets.rs as
 * -D definitions (build.rs, .ci/asm-harness.sh): no offset is spelled here as a number.
 */

        .text

/* DWARF register numbers (AAPCS64 "DWARF for the Arm 64-bit Architecture"). */
#define DW_X(n)  (n)          /* x0-x30 */
#define DW_D(n)  (64 + (n))   /* v0-v31; d8-d15 are their low halves */

/* DWARF CFI opcodes for the hand-built rules below (DWARF 5, 6.4.2 and 2.5). */
#define DW_CFA_def_cfa_expression 0x0f
#define DW_CFA_expression         0x10
#define DW_OP_deref               0x06
#define DW_OP_breg_x12            0x7c  /* DW_OP_breg0 + 12: x12 holds `from` */

/* An offset as a two-byte SLEB128 (valid for 0 <= v < 8192). */
#define SLEB2(v) (((v) & 0x7f) | 0x80), (((v) >> 7) & 0x7f)

/* "The caller's register `reg` is saved at [x12 + off]" (x12 = from; see gort_switch). */
#define CFI_SAVED_IN_FROM(reg, off) \
        .cfi_escape DW_CFA_expression, reg, 3, DW_OP_breg_x12, SLEB2(off)

/* ---------------------------------------------------------------------------------------
 * usize gort_switch(Context *from [x0], const Context *to [x1], usize val [x2])
 *
 * Contract: as on x86_64. Saves x19-x29, lr (the resume address), sp and d8-d15 into *from
 * (plus FPCR if *from owns its FP control), loads *to's and resumes *to with x0 = val.
 * Runs on the caller's stack until it loads to->sp; "returns" only when some context
 * switches back into *from. Clobbers what any AAPCS64 call may clobber.
 */
        .globl  gort_switch
        .hidden gort_switch
        .type   gort_switch, %function
        .p2align 4
gort_switch:
        .cfi_startproc
        /* Save *from. It resumes at lr, with the current sp (bl pushed nothing). x12
         * keeps `from` to the end for the CFI below (x0 becomes the result). */
        mov     x12, x0
        mov     x9, sp
        stp     x19, x20, [x0, #CTX_X19]
        stp     x21, x22, [x0, #CTX_X21]
        stp     x23, x24, [x0, #CTX_X23]
        stp     x25, x26, [x0, #CTX_X25]
        stp     x27, x28, [x0, #CTX_X27]
        stp     x29, x30, [x0, #CTX_FP]
        str     x9, [x0, #CTX_SP]
        stp     d8, d9, [x0, #CTX_D8]
        stp     d10, d11, [x0, #CTX_D10]
        stp     d12, d13, [x0, #CTX_D12]
        stp     d14, d15, [x0, #CTX_D14]

        /* From here on the caller's frame is described by *from alone (x12 is never
         * written): CFA = from->sp, lr and every callee-saved register live in *from. */
        .cfi_escape DW_CFA_def_cfa_expression, 4, DW_OP_breg_x12, SLEB2(CTX_SP), DW_OP_deref
        CFI_SAVED_IN_FROM(DW_X(19), CTX_X19)
        CFI_SAVED_IN_FROM(DW_X(20), CTX_X20)
        CFI_SAVED_IN_FROM(DW_X(21), CTX_X21)
        CFI_SAVED_IN_FROM(DW_X(22), CTX_X21 + 8)
        CFI_SAVED_IN_FROM(DW_X(23), CTX_X23)
        CFI_SAVED_IN_FROM(DW_X(24), CTX_X23 + 8)
        CFI_SAVED_IN_FROM(DW_X(25), CTX_X25)
        CFI_SAVED_IN_FROM(DW_X(26), CTX_X25 + 8)
        CFI_SAVED_IN_FROM(DW_X(27), CTX_X27)
        CFI_SAVED_IN_FROM(DW_X(28), CTX_X27 + 8)
        CFI_SAVED_IN_FROM(DW_X(29), CTX_FP)
        CFI_SAVED_IN_FROM(DW_X(30), CTX_LR)
        CFI_SAVED_IN_FROM(DW_D(8), CTX_D8)
        CFI_SAVED_IN_FROM(DW_D(9), CTX_D8 + 8)
        CFI_SAVED_IN_FROM(DW_D(10), CTX_D10)
        CFI_SAVED_IN_FROM(DW_D(11), CTX_D10 + 8)
        CFI_SAVED_IN_FROM(DW_D(12), CTX_D12)
        CFI_SAVED_IN_FROM(DW_D(13), CTX_D12 + 8)
        CFI_SAVED_IN_FROM(DW_D(14), CTX_D14)
        CFI_SAVED_IN_FROM(DW_D(15), CTX_D14 + 8)

        /* FP control only if either side owns it (rare). */
        ldr     w9, [x0, #CTX_FLAGS]
        ldr     w10, [x1, #CTX_FLAGS]
        orr     w9, w9, w10
        cbnz    w9, .Lswitch_fp_control
.Lload_to:
        /* Load *to's callee-saved registers, its stack, and go. */
        ldp     x19, x20, [x1, #CTX_X19]
        ldp     x21, x22, [x1, #CTX_X21]
        ldp     x23, x24, [x1, #CTX_X23]
        ldp     x25, x26, [x1, #CTX_X25]
        ldp     x27, x28, [x1, #CTX_X27]
        ldp     d8, d9, [x1, #CTX_D8]
        ldp     d10, d11, [x1, #CTX_D10]
        ldp     d12, d13, [x1, #CTX_D12]
        ldp     d14, d15, [x1, #CTX_D14]
        ldp     x29, x30, [x1, #CTX_FP]
        ldr     x9, [x1, #CTX_SP]
        mov     x0, x2
        mov     sp, x9
        br      x30                 /* not `ret`: see src/arch/mod.rs */

.Lswitch_fp_control:
        bl      gort_switch_fp_control  /* lr is already saved in *from */
        b       .Lload_to
        .cfi_endproc
        .size   gort_switch, . - gort_switch

/* ---------------------------------------------------------------------------------------
 * gort_switch_fp_control(Context *from [x0], const Context *to [x1])
 *
 * Contract: as on x86_64. If *from owns its FP control, stores FPCR into it; then makes
 * FPCR *to's if *to owns its FP control, else the default. Unlike MXCSR, FPCR reads into a
 * register (mrs), so comparing first is cheap and skips the msr, which is
 * self-synchronising on many cores. Uses no stack. Preserves every register except x9,
 * x10, x11 and flags (x0, x1, x2, x12 survive).
 */
        .globl  gort_switch_fp_control
        .hidden gort_switch_fp_control
        .type   gort_switch_fp_control, %function
        .p2align 4
gort_switch_fp_control:
        .cfi_startproc
        mrs     x11, fpcr
        ldr     w9, [x0, #CTX_FLAGS]
        tst     w9, #FLAG_OWNS_FP_CONTROL
        b.eq    1f
        str     w11, [x0, #CTX_FPCR]
1:
        mov     x10, #FPCR_DEFAULT
        ldr     w9, [x1, #CTX_FLAGS]
        tst     w9, #FLAG_OWNS_FP_CONTROL
        b.eq    2f
        ldr     w10, [x1, #CTX_FPCR]
2:
        cmp     x10, x11
        b.eq    3f
        msr     fpcr, x10
3:
        ret
        .cfi_endproc
        .size   gort_switch_fp_control, . - gort_switch_fp_control

/* ---------------------------------------------------------------------------------------
 * gort_goroutine_entry: where the first switch into a fresh context lands (init sets
 * to->lr to here). Never called; never returns.
 *
 * Contract: on the goroutine's stack, sp = the 16-byte aligned top, x19 = entry function,
 * x20 = its argument, x29 = 0. Calls entry(arg), which must not return (brk if it does).
 * The CFI marks the return address (x30) undefined: the outermost frame.
 */
        .globl  gort_goroutine_entry
        .hidden gort_goroutine_entry
        .type   gort_goroutine_entry, %function
        .p2align 4
gort_goroutine_entry:
        .cfi_startproc
        .cfi_undefined x30
        mov     x29, #0             /* end of the frame-pointer chain */
        mov     x0, x20
        blr     x19
        brk     #1
        .cfi_endproc
        .size   gort_goroutine_entry, . - gort_goroutine_entry

        .section .note.GNU-stack, "", %progbits
