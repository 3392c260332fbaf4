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
 * resumes on, and returns in rax the address of the goroutine's no-preempt count, which it
 * leaves raised). The trampoline lowers that count itself: from there to rt_sigreturn only
 * trampoline code runs, and the handler refuses this pc range, so the goroutine cannot be
 * preempted (and moved to a thread whose mask and alternate stack the copy does not carry)
 * after the copy was fixed. Then it points rsp at the ucontext copy and enters rt_sigreturn.
 * Never returns.
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
        call    gort_preempt_yield      /* returns &g.nopreempt, still raised */
        dec     dword ptr [rax]         /* lowered here, in the pc range the handler refuses */
        mov     rsp, [rbx + PF_RESUME_SP]
        mov     eax, SYS_RT_SIGRETURN
        syscall
        ud2                             /* rt_sigreturn does not return here */
        .cfi_endproc
        .size   gort_preempt_trampoline, . - gort_preempt_trampoline

/* Two helpers that read the running goroutine through the thread pointer. They sit inside
 * the trampoline's pc range, which the handler refuses, so no preemption can come between
 * reading this thread's M and using it: otherwise the goroutine could be moved to another
 * thread in between (Migrate mode) and go on with the first thread's M and goroutine.
 *
 * gort_current_g. Contract: rdi = offset of CURRENT_M from the fs base, rsi = offset of `curg`
 * in M (in); returns rax = the running goroutine, or 0 if this thread is not an M; clobbers
 * nothing else; flags clobbered; no stack use beyond the return address.
 */
        .globl  gort_current_g
        .hidden gort_current_g
        .type   gort_current_g, @function
        .p2align 4
gort_current_g:
        .cfi_startproc
        mov     rax, fs:[rdi]
        test    rax, rax
        jz      .Lcurrent_g_done
        mov     rax, [rax + rsi]
.Lcurrent_g_done:
        ret
        .cfi_endproc
        .size   gort_current_g, . - gort_current_g

/* gort_switch_enter (mcall's first step). Contract: rdi = offset of CURRENT_M from the fs
 * base, rsi = offset of `curg` in M, rdx = offset of `nopreempt` in G (in); if this thread is
 * an M running a goroutine, raises that goroutine's no-preempt count by one and returns
 * rax = the M, else returns rax = 0 and changes nothing; clobbers rcx and flags; no stack use
 * beyond the return address.
 */
        .globl  gort_switch_enter
        .hidden gort_switch_enter
        .type   gort_switch_enter, @function
        .p2align 4
gort_switch_enter:
        .cfi_startproc
        mov     rax, fs:[rdi]
        test    rax, rax
        jz      .Lswitch_enter_done
        mov     rcx, [rax + rsi]
        test    rcx, rcx
        jz      .Lswitch_enter_none
        inc     dword ptr [rcx + rdx]
.Lswitch_enter_done:
        ret
.Lswitch_enter_none:
        xor     eax, eax
        ret
        .cfi_endproc
        .size   gort_switch_enter, . - gort_switch_enter

/* The end of the refused range (the trampoline and the helpers above), for the handler's
 * "pc is in the runtime" refusal. */
        .globl  gort_preempt_trampoline_end
        .hidden gort_preempt_trampoline_end
gort_preempt_trampoline_end:
        nop

        .section .note.GNU-stack, "", @progbits
