/* asm/aarch64/preempt.S: gort_preempt_trampoline (see asm/x86_64/preempt.S, the commented
 * reference). Differences: no red zone on aarch64 Linux, so the copy starts right below the
 * interrupted sp; what is copied is the whole rt_sigframe (siginfo, then the ucontext with
 * its __reserved records: fpsimd q0-q31/FPSR/FPCR, SVE, ...), 16-byte aligned, because
 * rt_sigreturn reads the frame at sp itself. No register is free at an arbitrary pc (x16,
 * x17, x18, x30 may all be live), which is why the interrupted state is restored only by
 * rt_sigreturn; x19 here is free because the copy holds its interrupted value.
 */

        .text

        .globl  gort_preempt_trampoline
        .hidden gort_preempt_trampoline
        .type   gort_preempt_trampoline, %function
        .p2align 4
gort_preempt_trampoline:
        .cfi_startproc
        .cfi_undefined x30
        mov     x19, sp                 /* callee-saved: survives the call below */
        mov     x0, sp                  /* arg: the PreemptFrame (16-byte aligned) */
        bl      gort_preempt_yield
        ldr     x9, [x19, #PF_RESUME_SP]
        mov     sp, x9
        mov     x8, #SYS_RT_SIGRETURN
        svc     #0
        brk     #0                      /* rt_sigreturn does not return here */
        .cfi_endproc
        .size   gort_preempt_trampoline, . - gort_preempt_trampoline

        .globl  gort_preempt_trampoline_end
        .hidden gort_preempt_trampoline_end
gort_preempt_trampoline_end:
        nop

        .section .note.GNU-stack, "", %progbits
