/* asm/x86_64/switch.S: gort_switch (context switch), gort_switch_fp_control (its FP
 * control slow path) and gort_goroutine_entry (first run of a fresh context).
 *
 * The design essay (why the Rust side inlines this sequence, why `jmp` and not `ret`, why FP
 * control is switched only for owning contexts, with measurements) is in src/arch/mod.rs;
 * stack diagrams are in src/arch/x86_64.rs. CTX_* names come from src/arch/offsets.rs as -D
 * definitions (build.rs, .ci/asm-harness.sh): no offset is spelled here as a number.
 */

        .intel_syntax noprefix
        .text

/* DWARF register numbers (System V x86_64 psABI, "DWARF Register Number Mapping"). */
#define DW_RBX 3
#define DW_RBP 6
#define DW_R12 12
#define DW_R13 13
#define DW_R14 14
#define DW_R15 15
#define DW_RA  16   /* the return-address column */

/* DWARF CFI opcodes for the hand-built rules below (DWARF 5, 6.4.2 and 2.5). */
#define DW_CFA_def_cfa_expression 0x0f
#define DW_CFA_expression         0x10
#define DW_OP_deref               0x06
#define DW_OP_breg_rdi            0x75  /* DW_OP_breg0 + 5: rdi holds `from` */

/* "The caller's register `reg` is saved at [rdi + off]". `off` is one SLEB128 byte, so it
 * must be below 64: src/arch/x86_64.rs asserts that for every offset used here. */
#define CFI_SAVED_IN_FROM(reg, off) .cfi_escape DW_CFA_expression, reg, 2, DW_OP_breg_rdi, off

/* ---------------------------------------------------------------------------------------
 * usize gort_switch(Context *from [rdi], const Context *to [rsi], usize val [rdx])
 *
 * Contract: the out-of-line (C-callable) form of the switch that src/arch/x86_64.rs inlines
 * at every Rust call site; both write and read Contexts the same way, so either may resume
 * a context the other suspended. Saves rbx rbp r12-r15, rsp and the resume pc into *from
 * (plus MXCSR and the x87 CW if *from owns its FP control), loads *to's, and resumes *to
 * with rax = val. Runs on the caller's stack until it loads to->rsp; "returns" only when
 * some context switches back into *from. Clobbers what any System V call may clobber.
 */
        .globl  gort_switch
        .hidden gort_switch
        .type   gort_switch, @function
        .p2align 4
gort_switch:
        .cfi_startproc
        /* Save *from. It resumes at our return address, with rsp as after our `ret`. */
        mov     rax, [rsp]
        lea     rcx, [rsp + 8]
        mov     [rdi + CTX_PC], rax
        mov     [rdi + CTX_RSP], rcx
        mov     [rdi + CTX_RBX], rbx
        mov     [rdi + CTX_RBP], rbp
        mov     [rdi + CTX_R12], r12
        mov     [rdi + CTX_R13], r13
        mov     [rdi + CTX_R14], r14
        mov     [rdi + CTX_R15], r15

        /* From here on the caller's frame is described by *from alone (rdi is never
         * written): CFA = from->rsp, and every callee-saved register and the return
         * address live in *from. So an asynchronous unwinder (a profiler's signal) that
         * lands anywhere below still walks from's stack correctly. */
        .cfi_escape DW_CFA_def_cfa_expression, 3, DW_OP_breg_rdi, CTX_RSP, DW_OP_deref
        CFI_SAVED_IN_FROM(DW_RA, CTX_PC)
        CFI_SAVED_IN_FROM(DW_RBX, CTX_RBX)
        CFI_SAVED_IN_FROM(DW_RBP, CTX_RBP)
        CFI_SAVED_IN_FROM(DW_R12, CTX_R12)
        CFI_SAVED_IN_FROM(DW_R13, CTX_R13)
        CFI_SAVED_IN_FROM(DW_R14, CTX_R14)
        CFI_SAVED_IN_FROM(DW_R15, CTX_R15)

        /* FP control only if either side owns it (rare: a predicted-not-taken branch). */
        movzx   ecx, word ptr [rdi + CTX_FLAGS]
        or      cx, word ptr [rsi + CTX_FLAGS]
        jnz     .Lswitch_fp_control
.Lload_to:
        /* Load *to's callee-saved registers, its stack, and go. */
        mov     rbx, [rsi + CTX_RBX]
        mov     rbp, [rsi + CTX_RBP]
        mov     r12, [rsi + CTX_R12]
        mov     r13, [rsi + CTX_R13]
        mov     r14, [rsi + CTX_R14]
        mov     r15, [rsi + CTX_R15]
        mov     rax, rdx
        mov     rsp, [rsi + CTX_RSP]
        jmp     qword ptr [rsi + CTX_PC]

.Lswitch_fp_control:
        /* rsp still points at our return address: one more call is fine here. */
        call    gort_switch_fp_control
        jmp     .Lload_to
        .cfi_endproc
        .size   gort_switch, . - gort_switch

/* ---------------------------------------------------------------------------------------
 * gort_switch_fp_control(Context *from [rdi], const Context *to [rsi])
 *
 * Contract: the FP-control half of a switch, called (on the current stack, 16-byte aligned
 * or not: it uses no stack beyond its return address) by gort_switch and by the inline
 * switch when *from or *to has FLAG_OWNS_FP_CONTROL. If *from owns its FP control, stores
 * MXCSR and the x87 CW into it; then loads *to's if *to owns its FP control, else the ABI
 * defaults. Preserves every register except rax, rcx and flags (rdi, rsi, rdx survive).
 */
        .globl  gort_switch_fp_control
        .hidden gort_switch_fp_control
        .type   gort_switch_fp_control, @function
        .p2align 4
gort_switch_fp_control:
        .cfi_startproc
        test    word ptr [rdi + CTX_FLAGS], FLAG_OWNS_FP_CONTROL
        jz      1f
        stmxcsr [rdi + CTX_MXCSR]
        fnstcw  [rdi + CTX_X87CW]
1:
        /* Load unconditionally: comparing first means reading back what stmxcsr just
         * wrote, a stall that costs more than the reload it would save (and an unchanged
         * value is the cheap case of ldmxcsr/fldcw anyway). */
        lea     rax, [rip + .Lfp_control_defaults]
        test    word ptr [rsi + CTX_FLAGS], FLAG_OWNS_FP_CONTROL
        cmovnz  rax, rsi
        ldmxcsr [rax + CTX_MXCSR]
        fldcw   [rax + CTX_X87CW]
        ret
        .cfi_endproc
        .size   gort_switch_fp_control, . - gort_switch_fp_control

/* The FP control of a non-owning context, laid out like the FP words of a Context (so the
 * loads above address both through CTX_MXCSR / CTX_X87CW). */
        .section .rodata
        .p2align 3
.Lfp_control_defaults:
        .org    .Lfp_control_defaults + CTX_MXCSR
        .long   MXCSR_DEFAULT
        .org    .Lfp_control_defaults + CTX_X87CW
        .short  X87CW_DEFAULT
        .text

/* ---------------------------------------------------------------------------------------
 * gort_goroutine_entry: where the first switch into a fresh context lands (init sets
 * to->pc to here). Never called; never returns.
 *
 * Contract: on the goroutine's stack, rsp = the 16-byte aligned top, rbx = entry function,
 * r12 = its argument, rbp = 0. Calls entry(arg), which must not return (ud2 if it does).
 * The CFI marks the return address undefined: this is the outermost frame, and unwinders
 * and debuggers stop here instead of walking off the top of the stack.
 */
        .globl  gort_goroutine_entry
        .hidden gort_goroutine_entry
        .type   gort_goroutine_entry, @function
        .p2align 4
gort_goroutine_entry:
        .cfi_startproc
        .cfi_undefined rip
        xor     ebp, ebp            /* end of the frame-pointer chain */
        mov     rdi, r12
        call    rbx                 /* rsp is 16-byte aligned here, as the ABI wants */
        ud2
        .cfi_endproc
        .size   gort_goroutine_entry, . - gort_goroutine_entry

        .section .note.GNU-stack, "", @progbits
