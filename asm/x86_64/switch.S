/* asm/x86_64/switch.S: gort_switch (context switch) and gort_goroutine_entry (first run).
 *
 * The reference commentary (model, stack diagrams, why `jmp` and not `ret`) lives in
 * src/arch/mod.rs and src/arch/x86_64.rs. CTX_* offsets come from src/arch/offsets.rs as
 * -D definitions (build.rs, .ci/asm-harness.sh); no offset is spelled here as a number.
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

/* MXCSR bits 0-5 are sticky exception flags (caller-saved status, set by ordinary FP
 * arithmetic); only bits 6 and up are control state worth a reload. */
#define MXCSR_STATUS_BITS 0x3f

/* ---------------------------------------------------------------------------------------
 * usize gort_switch(Context *from [rdi], const Context *to [rsi], usize val [rdx])
 *
 * Contract: saves the callee-saved state (rbx rbp r12-r15, rsp, resume pc, MXCSR, x87 CW)
 * into *from and resumes *to with rax = val. Runs on the caller's stack until it loads
 * to->rsp; "returns" (into from's caller) only when someone switches back to *from.
 * Clobbers rax rcx (plus whatever the System V ABI lets any call clobber).
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
        stmxcsr [rdi + CTX_MXCSR]
        fnstcw  [rdi + CTX_X87CW]

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

        /* Load *to's callee-saved registers. */
        mov     rbx, [rsi + CTX_RBX]
        mov     rbp, [rsi + CTX_RBP]
        mov     r12, [rsi + CTX_R12]
        mov     r13, [rsi + CTX_R13]
        mov     r14, [rsi + CTX_R14]
        mov     r15, [rsi + CTX_R15]

        /* FP control: ldmxcsr/fldcw are slow (serialising microcode), and the two sides
         * almost always agree, so reload only when a control bit differs. */
        mov     ecx, [rdi + CTX_MXCSR]
        xor     ecx, [rsi + CTX_MXCSR]
        test    ecx, ~MXCSR_STATUS_BITS
        jnz     .Lreload_fp_control
        movzx   ecx, word ptr [rdi + CTX_X87CW]
        cmp     cx, [rsi + CTX_X87CW]
        jne     .Lreload_fp_control
.Lresume:
        /* Resume *to: its stack, then its pc. `jmp`, not `ret`: see src/arch/mod.rs. */
        mov     rax, rdx
        mov     rsp, [rsi + CTX_RSP]
        jmp     qword ptr [rsi + CTX_PC]

.Lreload_fp_control:
        ldmxcsr [rsi + CTX_MXCSR]
        fldcw   [rsi + CTX_X87CW]
        jmp     .Lresume
        .cfi_endproc
        .size   gort_switch, . - gort_switch

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
