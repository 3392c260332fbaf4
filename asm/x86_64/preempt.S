/* asm/x86_64/preempt.S: gort_preempt_trampoline, where an asynchronously preempted goroutine
 * goes when the SIGURG handler returns (src/preempt/signal.rs rewrote the saved rip/rsp).
 *
 * Contract. Entered, not called: by the kernel's return from the SIGURG handler, on the
 * goroutine's own stack, with every register as the interrupted code left it except rip
 * (here) and rsp, which points at the `PreemptFrame` the handler built below the interrupted
 * code's red zone:
 *
 *     interrupted rsp
 *       128 bytes      red zone of the interrupted code: never written
 *       fpstate copy   the kernel's XSAVE/FXSAVE image, 64-byte aligned
 *       ucontext copy  the kernel's ucontext (uc_mcontext.fpregs points at the copy above)
 *       8 bytes        where rt_sigframe's pretcode would be (rt_sigreturn reads rsp - 8 on)
 *       PreemptFrame   <- rsp on entry; [rsp + PF_RESUME_SP] = address of the ucontext copy
 *
 * Every register is free here: rt_sigreturn restores all of them (GPRs, rflags, the whole
 * XSAVE area) from the copy, so the trampoline may clobber anything. It calls
 * gort_preempt_yield(frame) (Rust: yields the goroutine, maybe resumes it on another thread,
 * restores errno, fixes the copy's signal mask and alternate-stack fields for the thread it
 * resumes on), then points rsp at the ucontext copy and enters rt_sigreturn. Never returns.
 */

        .intel_syntax noprefix
        .text

        .globl  gort_preempt_trampoline
        .hidden gort_preempt_trampoline
        .type   gort_preempt_trampoline, @function
        .p2align 4
gort_preempt_trampoline:
        .cfi_startproc
        /* No caller frame to unwind into: the interrupted code's state is in the copy. */
        .cfi_undefined rip
        mov     rbx, rsp                /* callee-saved: survives the call below */
        mov     rdi, rsp                /* arg: the PreemptFrame */
        and     rsp, -16                /* System V call alignment */
        cld
        call    gort_preempt_yield
        mov     rsp, [rbx + PF_RESUME_SP]
        mov     eax, SYS_RT_SIGRETURN
        syscall
        ud2                             /* rt_sigreturn does not return here */
        .cfi_endproc
        .size   gort_preempt_trampoline, . - gort_preempt_trampoline

/* The end of the trampoline, for the handler's "PC is in the runtime" refusal. */
        .globl  gort_preempt_trampoline_end
        .hidden gort_preempt_trampoline_end
gort_preempt_trampoline_end:
        nop

        .section .note.GNU-stack, "", @progbits
