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
        bl      gort_preempt_yield      /* returns x0 = &g.nopreempt, still raised */
        ldr     w9, [x0]                /* lowered here, in the pc range the handler */
        sub     w9, w9, #1              /* refuses (only this thread writes the count) */
        str     w9, [x0]
        ldr     x9, [x19, #PF_RESUME_SP]
        mov     sp, x9
        mov     x8, #SYS_RT_SIGRETURN
        svc     #0
        brk     #0                      /* rt_sigreturn does not return here */
        .cfi_endproc
        .size   gort_preempt_trampoline, . - gort_preempt_trampoline

/* gort_locks_inc: LOCKS += 1 for the calling thread (src/preempt/mod.rs, `locks_inc`).
 * Contract: x0 = offset of LOCKS from tpidr_el0 (in); clobbers x1, x2; returns with `ret`
 * (x30 is the caller's, set by its `bl`); no stack, flags untouched. It sits inside the
 * trampoline's pc range, which the handler refuses: the thread pointer it reads is still
 * this thread's when the store lands (a preemption in between could otherwise move the
 * goroutine to another thread, which would then raise the first thread's count).
 */
        .globl  gort_locks_inc
        .hidden gort_locks_inc
        .type   gort_locks_inc, %function
        .p2align 2
gort_locks_inc:
        .cfi_startproc
        mrs     x1, tpidr_el0
        ldr     w2, [x1, x0]
        add     w2, w2, #1
        str     w2, [x1, x0]
        ret
        .cfi_endproc
        .size   gort_locks_inc, . - gort_locks_inc

/* gort_current_g: the running goroutine (see asm/x86_64/preempt.S for why it lives here).
 * Contract: x0 = offset of CURRENT_M from tpidr_el0, x1 = offset of `curg` in M (in);
 * returns x0 = the goroutine, or 0 if this thread is not an M; clobbers x2; no stack.
 */
        .globl  gort_current_g
        .hidden gort_current_g
        .type   gort_current_g, %function
        .p2align 2
gort_current_g:
        .cfi_startproc
        mrs     x2, tpidr_el0
        ldr     x0, [x2, x0]
        cbz     x0, .Lcurrent_g_done
        ldr     x0, [x0, x1]
.Lcurrent_g_done:
        ret
        .cfi_endproc
        .size   gort_current_g, . - gort_current_g

/* gort_switch_enter (mcall's first step). Contract: x0 = offset of CURRENT_M from tpidr_el0,
 * x1 = offset of `curg` in M, x2 = offset of `nopreempt` in G (in); if this thread is an M
 * running a goroutine, raises that goroutine's no-preempt count by one and returns x0 = the
 * M, else returns x0 = 0 and changes nothing; clobbers x3, x4; no stack.
 */
        .globl  gort_switch_enter
        .hidden gort_switch_enter
        .type   gort_switch_enter, %function
        .p2align 2
gort_switch_enter:
        .cfi_startproc
        mrs     x3, tpidr_el0
        ldr     x0, [x3, x0]
        cbz     x0, .Lswitch_enter_done
        ldr     x3, [x0, x1]
        cbz     x3, .Lswitch_enter_none
        ldr     w4, [x3, x2]
        add     w4, w4, #1
        str     w4, [x3, x2]
.Lswitch_enter_done:
        ret
.Lswitch_enter_none:
        mov     x0, #0
        ret
        .cfi_endproc
        .size   gort_switch_enter, . - gort_switch_enter

        .globl  gort_preempt_trampoline_end
        .hidden gort_preempt_trampoline_end
gort_preempt_trampoline_end:
        nop

        .section .note.GNU-stack, "", %progbits
