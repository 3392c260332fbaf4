//! The SIGURG preemption handler: installation, chaining, and the per-architecture rewrite
//! of the interrupted context into a call of the yield trampoline.
//!
//! # Protocol
//! 1. A requester ([`super::request`]) sets the target M's `preempt_pending` flag and, if it
//!    was clear, sends `tgkill(pid, tid, SIGURG)` (coalesced: one signal in flight per M).
//! 2. The handler (`SA_SIGINFO|SA_ONSTACK|SA_RESTART`, on the M's alternate stack, every
//!    signal blocked) decides whether the signal is ours: sent by `tgkill` (`SI_TKILL`) from
//!    this process, to a thread that is an M whose `preempt_pending` it clears. Anything else
//!    (a user's own SIGURG, out-of-band socket data) chains to the handler installed before.
//! 3. It applies the policy (`policy.rs`); a refusal is counted and the M is stamped
//!    `foreign` when the pc was outside the executable (sysmon's foreign-blocking input).
//! 4. Accepted: it copies the kernel's signal frame onto the goroutine's stack below the
//!    interrupted sp (below the red zone on x86_64) — the ucontext plus the vector state it
//!    refers to — builds a [`PreemptFrame`] under it, and rewrites the *original* frame's
//!    pc/sp so that the kernel's return from the handler lands in `gort_preempt_trampoline`
//!    on that stack. The copy is the interrupted state, untouched.
//! 5. The trampoline calls `gort_preempt_yield` (in `mod.rs`), which yields, and on resume
//!    (maybe on another thread) patches the copy's signal mask and alternate-stack fields to
//!    this thread's and restores errno; the trampoline then `rt_sigreturn`s from the copy,
//!    restoring every register exactly (GPRs, flags, the full XSAVE / fpsimd+SVE state).
//!
//! # Hazards handled
//! * `rt_sigreturn` restores `uc_sigmask` and `uc_stack` (it calls `sigaltstack`): after a
//!   migration these must be the new thread's, or two threads would share an alternate stack.
//! * x86_64: `uc_mcontext.fpregs` points into the kernel frame: re-pointed at the copy, which
//!   is 64-byte aligned (XRSTOR); its size is the `extended_size` the kernel wrote in the
//!   FXSAVE software-reserved bytes (512 without the XSAVE magic). `rt_sigreturn` reads the
//!   ucontext at `rsp` (its `rt_sigframe` starts at `rsp - 8`, the pretcode slot a `ret`
//!   consumed).
//! * aarch64: `rt_sigreturn` reads the whole `rt_sigframe` (siginfo then ucontext) at `sp`,
//!   which must be 16-byte aligned. Frames with an `extra_context` record (vector state too
//!   big for `__reserved`, e.g. large SVE vectors) are refused ([`Refusal::Frame`]): their
//!   extra block must follow the frame at an address the kernel checks.
//! * qemu-user builds its own guest frames with the same layout, and its `rt_sigreturn`
//!   parses the copy the same way.
//!
//! Limits: SIGURG is a standard signal, so the kernel merges a SIGURG sent to an M while our
//! preemption signal is pending there with ours (one delivery); a `tgkill` SIGURG from this
//! process to an M with a request pending is taken for ours. Both as in Go. A handler
//! installed *after* the runtime replaces ours (preemption stops; chaining back is theirs).
//!
//! Everything reachable from the handler is async-signal-safe: atomics, const-initialised
//! thread-locals, `memcpy` into memory we checked, `getpid`, `tgkill`-free.

use super::policy::{self, Refusal};
use crate::loom::{AtomicBool, Mutex, Ordering};
use std::cell::UnsafeCell;
use std::io;
use std::mem::{self, MaybeUninit};
use std::ptr;

/// The header the handler writes at the trampoline's stack pointer (16-byte aligned).
#[repr(C)]
pub(crate) struct PreemptFrame {
    /// Where `rt_sigreturn` finds the copied frame (`PF_RESUME_SP`).
    pub(crate) resume_sp: usize,
    /// The copied ucontext (its sigmask and alternate-stack fields are patched on resume).
    pub(crate) uc: *mut libc::ucontext_t,
    /// The interrupted code's errno.
    pub(crate) errno: i32,
    _pad: u32,
    /// When the quantum of the preempted goroutine expired (ns, `time::nanotime`), or 0.
    pub(crate) expired_at: u64,
}

#[cfg(target_arch = "x86_64")]
const _: () = assert!(mem::offset_of!(PreemptFrame, resume_sp) == crate::arch::PF_RESUME_SP);
#[cfg(target_arch = "aarch64")]
const _: () = assert!(mem::offset_of!(PreemptFrame, resume_sp) == crate::arch::PF_RESUME_SP);

/// Stack the yield needs below the copied frame (mcall, the scheduler's queue operations).
const YIELD_HEADROOM: usize = 16 * 1024;

/// The action installed before ours, for chaining; written once before `SAVED` is set.
struct Previous(UnsafeCell<MaybeUninit<libc::sigaction>>);
// SAFETY: written once under `INSTALLED`'s lock before `SAVED` is set (Release), read only
// after `SAVED` was seen set (Acquire), never written again.
unsafe impl Sync for Previous {}
static PREVIOUS: Previous = Previous(UnsafeCell::new(MaybeUninit::uninit()));
static SAVED: AtomicBool = AtomicBool::new(false);
static INSTALLED: Mutex<bool> = Mutex::new(false);
/// This process's pid, for telling our `tgkill`s from others' (set before installation).
static PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Install the SIGURG handler once per process (later calls return `Ok` at once), keeping
/// the previous action to chain to. Also snapshots the executable's text ranges.
pub(crate) fn install() -> io::Result<()> {
    let mut installed = INSTALLED.lock().unwrap_or_else(|e| e.into_inner());
    if *installed {
        return Ok(());
    }
    policy::snapshot();
    // SAFETY: getpid has no preconditions.
    // Relaxed: published by the sigaction below (the handler cannot run before it).
    PID.store(
        unsafe { libc::getpid() },
        std::sync::atomic::Ordering::Relaxed,
    );
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction only writes the current one.
    if unsafe { libc::sigaction(libc::SIGURG, ptr::null(), old.as_mut_ptr()) } != 0 {
        return Err(err("read"));
    }
    // SAFETY: not yet published (SAVED is false) and we hold the lock.
    unsafe { *PREVIOUS.0.get() = old };
    // Release: publishes PREVIOUS to the handler's Acquire in `chain`.
    SAVED.store(true, Ordering::Release);
    // SAFETY: all-zero is a valid sigaction; the fields are set below.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    action.sa_sigaction = handler
        as unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
        as libc::sighandler_t;
    action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: sigfillset writes the mask we pass.
    unsafe { libc::sigfillset(&mut action.sa_mask) };
    // SAFETY: a fully initialised action whose handler lives as long as the process.
    if unsafe { libc::sigaction(libc::SIGURG, &action, ptr::null_mut()) } != 0 {
        return Err(err("install"));
    }
    *installed = true;
    Ok(())
}

fn err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(
        e.kind(),
        format!("gort: cannot {what} the SIGURG preemption handler: {e}"),
    )
}

/// The SIGURG handler. Async-signal-safe.
///
/// # Safety
/// Only the kernel calls it, as an `SA_SIGINFO` handler with valid arguments.
unsafe extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel's errno location for this thread; restored before returning.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: valid siginfo from the kernel.
    let ours = unsafe {
        (*info).si_code == libc::SI_TKILL
            // Relaxed: written before the handler was installed.
            && (*info).si_pid() == PID.load(std::sync::atomic::Ordering::Relaxed)
    } && claim_pending();
    if ours {
        // SAFETY: forwarded kernel arguments.
        unsafe { preempt(info, ctx as *mut libc::ucontext_t, errno) };
    } else {
        // SAFETY: forwarded kernel arguments.
        unsafe { chain(sig, info, ctx) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Clear this thread's M's pending request; true if one was pending (the signal is ours).
fn claim_pending() -> bool {
    let m = crate::sched::m::current_m();
    // SAFETY: a non-null current M is this thread's own.
    !m.is_null()
        && unsafe { &*m }
            .preempt_pending
            .swap(false, Ordering::Acquire)
    // Acquire: pairs with the requester's Release swap (its expiry stamp is visible).
}

/// Our signal: apply the policy and, if accepted, redirect the thread to the trampoline.
///
/// # Safety
/// Kernel arguments of the handler.
unsafe fn preempt(info: *mut libc::siginfo_t, uc: *mut libc::ucontext_t, errno: i32) {
    // SAFETY: a valid ucontext from the kernel.
    let (pc, sp) = unsafe { pc_sp(uc) };
    let m = crate::sched::m::current_m();
    let result = policy::check(pc).and_then(|(mr, g)| {
        // A request for a slice that ended before the signal landed: this goroutine's own
        // slice has just begun (checked after the policy, whose foreign stamp sysmon needs).
        if super::request_is_stale(mr) {
            return Err(Refusal::Stale);
        }
        // SAFETY: `g` runs on this thread; its stack is not modified while it runs.
        let stack = unsafe { (*g).stack.as_ref() }.ok_or(Refusal::Stack)?;
        let bottom = stack.bottom() + YIELD_HEADROOM;
        let top = stack.top() as usize;
        if sp <= bottom || sp > top {
            return Err(Refusal::Stack);
        }
        // Relaxed: written by the requester before its Release swap of the pending flag.
        let expired_at = mr.preempt_expiry.load(Ordering::Relaxed);
        // SAFETY: kernel arguments; [bottom, sp) is this goroutine's own stack.
        unsafe { redirect(info, uc, sp, bottom, errno, expired_at) }
    });
    let st = if m.is_null() {
        None
    } else {
        // SAFETY: a non-null current M is this thread's own, alive while the thread runs.
        Some(&unsafe { &*m }.sched.preempt)
    };
    if let Some(st) = st {
        // SAFETY: non-null (`st` is Some): this thread's own M.
        let mr = unsafe { &*m };
        // sysmon's foreign-blocking input (`sched/sysmon.rs`): stamped when first seen
        // outside the executable, cleared when seen back in it. Relaxed: sysmon re-checks
        // the stamp before it acts.
        // Stamp only a thread in foreign code on behalf of its goroutine, not runtime code
        // that called into libc (malloc in spawn, a futex under a runtime lock, g0): that
        // code goes on using its P when the call returns, so sysmon must not take it. The
        // per-G count covers `mcall` and `no_preempt`; the per-thread one the runtime's
        // locks; `rt_blocking` g0 and marked runtime waits.
        let g = mr.curg.get();
        let nopreempt = if g.is_null() {
            1
        } else {
            // SAFETY: `curg`, when set, runs on this thread (we interrupted it).
            unsafe { (*g).nopreempt.load(Ordering::Relaxed) }
        };
        let user_code = !mr.p.get().is_null()
            && super::locks() == 0
            && mr.rt_blocking.load(Ordering::Relaxed) == 0
            && nopreempt == 0;
        if result == Err(Refusal::Foreign) && user_code {
            let now = crate::time::nanotime().max(1);
            if mr.foreign_since.load(Ordering::Relaxed) == 0 {
                mr.foreign_since.store(now, Ordering::Relaxed);
            }
            mr.foreign_seen.store(now, Ordering::Relaxed);
            // sysmon's probe: it marked our P `Retaking` and signalled us; we are outside the
            // runtime now, after its mark, so our next runtime call will see it. The answer
            // names the probe by its token (`M::foreign_ack`): the token is read between two
            // reads of the same `Retaking` word. Acquire (the words): the mark happened before
            // the read. Acquire (the token): pairs with sysmon's Release store before its mark,
            // so a token of a newer probe makes that probe's mark (or its revert) visible to
            // the second read — a word seen twice is then the newer mark itself (a revert in
            // between fails the compare). Release (the ack): pairs with sysmon's Acquire load.
            // SAFETY: `user_code` implies a P; Ps live as long as their runtime.
            let pr = unsafe { &*mr.p.get() };
            let w = pr.word();
            if crate::sched::p::word_state(w) == crate::sched::p::PStatus::Retaking {
                let token = mr.probe_token.load(Ordering::Acquire);
                if pr.word() == w {
                    mr.foreign_ack.store(token, Ordering::Release);
                }
            }
        } else {
            mr.foreign_since.store(0, Ordering::Relaxed);
            mr.foreign_seen.store(0, Ordering::Relaxed);
        }
        match result {
            Ok(()) => st.accepted.fetch_add(1, Ordering::Relaxed),
            Err(r) => st.refused[r as usize].fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// The interrupted pc and sp.
///
/// # Safety
/// `uc` is the kernel's ucontext.
unsafe fn pc_sp(uc: *mut libc::ucontext_t) -> (usize, usize) {
    // SAFETY: valid ucontext.
    let mc = unsafe { &(*uc).uc_mcontext };
    #[cfg(target_arch = "x86_64")]
    {
        (
            mc.gregs[libc::REG_RIP as usize] as usize,
            mc.gregs[libc::REG_RSP as usize] as usize,
        )
    }
    #[cfg(target_arch = "aarch64")]
    {
        (mc.pc as usize, mc.sp as usize)
    }
}

/// x86_64: the kernel's `struct ucontext` (flags, link, stack, sigcontext, 8-byte sigmask):
/// the prefix of libc's `ucontext_t` that `rt_sigreturn` reads.
#[cfg(target_arch = "x86_64")]
const KERNEL_UC_SIZE: usize = mem::offset_of!(libc::ucontext_t, uc_sigmask) + 8;
#[cfg(target_arch = "x86_64")]
const _: () = assert!(KERNEL_UC_SIZE == 304);
/// x86_64: `FP_XSTATE_MAGIC1` in `fpstate.sw_reserved.magic1` (offset 464 of the FXSAVE area).
#[cfg(target_arch = "x86_64")]
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
#[cfg(target_arch = "x86_64")]
const SW_RESERVED: usize = 464;
/// x86_64: the red zone of the interrupted code.
#[cfg(target_arch = "x86_64")]
const RED_ZONE: usize = 128;

/// Copy the frame, build the `PreemptFrame`, point pc/sp at the trampoline.
///
/// # Safety
/// Kernel arguments; `[limit, sp)` is writable stack of the interrupted goroutine.
#[cfg(target_arch = "x86_64")]
unsafe fn redirect(
    _info: *mut libc::siginfo_t,
    uc: *mut libc::ucontext_t,
    sp: usize,
    limit: usize,
    errno: i32,
    expired_at: u64,
) -> Result<(), Refusal> {
    // SAFETY: valid ucontext; `fpregs` points at the kernel frame's FXSAVE/XSAVE image.
    unsafe {
        let mc = &mut (*uc).uc_mcontext;
        let fp = mc.fpregs as *const u8;
        if fp.is_null() {
            return Err(Refusal::Frame);
        }
        let magic = (fp.add(SW_RESERVED) as *const u32).read_unaligned();
        let fp_size = if magic == FP_XSTATE_MAGIC1 {
            (fp.add(SW_RESERVED + 4) as *const u32).read_unaligned() as usize
        } else {
            512
        };
        if !(512..=64 * 1024).contains(&fp_size) {
            return Err(Refusal::Frame);
        }
        let fp_copy = (sp - RED_ZONE - fp_size) & !63;
        let uc_copy = (fp_copy - KERNEL_UC_SIZE) & !15;
        let pf = (uc_copy - 8 - mem::size_of::<PreemptFrame>()) & !15;
        if pf < limit {
            return Err(Refusal::Stack);
        }
        ptr::copy_nonoverlapping(fp, fp_copy as *mut u8, fp_size);
        ptr::copy_nonoverlapping(uc as *const u8, uc_copy as *mut u8, KERNEL_UC_SIZE);
        let ucc = uc_copy as *mut libc::ucontext_t;
        (*ucc).uc_mcontext.fpregs = fp_copy as *mut libc::_libc_fpstate;
        (pf as *mut PreemptFrame).write(PreemptFrame {
            resume_sp: uc_copy,
            uc: ucc,
            errno,
            _pad: 0,
            expired_at,
        });
        mc.gregs[libc::REG_RSP as usize] = pf as i64;
        mc.gregs[libc::REG_RIP as usize] = policy::trampoline() as i64;
    }
    Ok(())
}

/// aarch64: offset of `__reserved` (the records area) in `mcontext_t`, and its size.
#[cfg(target_arch = "aarch64")]
const RESERVED_OFF: usize = (mem::offset_of!(libc::mcontext_t, pstate) + 8).next_multiple_of(16);
#[cfg(target_arch = "aarch64")]
const RESERVED_SIZE: usize = 4096;
#[cfg(target_arch = "aarch64")]
const _: () = assert!(mem::size_of::<libc::mcontext_t>() == RESERVED_OFF + RESERVED_SIZE);
/// aarch64: `EXTRA_MAGIC`, the record that points at vector state outside the frame.
#[cfg(target_arch = "aarch64")]
const EXTRA_MAGIC: u32 = 0x4558_5401;
/// aarch64: `sizeof(siginfo_t)`; `rt_sigframe` is the siginfo followed by the ucontext.
#[cfg(target_arch = "aarch64")]
const SIGINFO_SIZE: usize = 128;
#[cfg(target_arch = "aarch64")]
const _: () = assert!(mem::size_of::<libc::siginfo_t>() == SIGINFO_SIZE);

/// See the x86_64 version.
///
/// # Safety
/// As the x86_64 version.
#[cfg(target_arch = "aarch64")]
unsafe fn redirect(
    info: *mut libc::siginfo_t,
    uc: *mut libc::ucontext_t,
    sp: usize,
    limit: usize,
    errno: i32,
    expired_at: u64,
) -> Result<(), Refusal> {
    // SAFETY: valid ucontext; the records lie inside `__reserved`, bounds-checked below.
    unsafe {
        let mc = &mut (*uc).uc_mcontext;
        let reserved = (mc as *mut libc::mcontext_t as *const u8).add(RESERVED_OFF);
        let mut off = 0usize;
        loop {
            if off + 8 > RESERVED_SIZE {
                return Err(Refusal::Frame);
            }
            let magic = (reserved.add(off) as *const u32).read();
            let size = (reserved.add(off + 4) as *const u32).read() as usize;
            if magic == 0 {
                break;
            }
            if magic == EXTRA_MAGIC || size < 8 || off + size > RESERVED_SIZE {
                return Err(Refusal::Frame);
            }
            off += size;
        }
        let uc_size = mem::size_of::<libc::ucontext_t>();
        let frame = (sp - SIGINFO_SIZE - uc_size) & !15;
        let pf = (frame - mem::size_of::<PreemptFrame>()) & !15;
        if pf < limit {
            return Err(Refusal::Stack);
        }
        ptr::copy_nonoverlapping(info as *const u8, frame as *mut u8, SIGINFO_SIZE);
        ptr::copy_nonoverlapping(uc as *const u8, (frame + SIGINFO_SIZE) as *mut u8, uc_size);
        (pf as *mut PreemptFrame).write(PreemptFrame {
            resume_sp: frame,
            uc: (frame + SIGINFO_SIZE) as *mut libc::ucontext_t,
            errno,
            _pad: 0,
            expired_at,
        });
        mc.sp = pf as u64;
        mc.pc = policy::trampoline() as u64;
    }
    Ok(())
}

/// Before `rt_sigreturn` from the copy on the thread that resumes the goroutine: make the
/// signal mask and alternate-stack fields this thread's, restore errno. Not in a handler.
///
/// # Safety
/// `pf` is the frame the handler built, on the running goroutine's stack.
pub(crate) unsafe fn prepare_resume(pf: *mut PreemptFrame) {
    // SAFETY: the copy is ours (on our stack); the calls only write into locals.
    unsafe {
        let ucc = (*pf).uc;
        let mut mask = MaybeUninit::<libc::sigset_t>::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, ptr::null(), mask.as_mut_ptr());
        // The kernel reads only the first 8 bytes (its sigset); copying libc's whole set is
        // fine on both arches (the copy reserves 128 bytes on aarch64, and on x86_64 only the
        // kernel's 8 bytes follow `uc_mcontext`).
        ptr::copy_nonoverlapping(
            mask.as_ptr() as *const u8,
            ptr::addr_of_mut!((*ucc).uc_sigmask) as *mut u8,
            8,
        );
        let mut alt = MaybeUninit::<libc::stack_t>::zeroed();
        if libc::sigaltstack(ptr::null(), alt.as_mut_ptr()) == 0 {
            let mut alt = alt.assume_init();
            // Not on it now (we run on the goroutine's stack); the kernel rejects SS_ONSTACK.
            alt.ss_flags &= libc::SS_DISABLE;
            (*ucc).uc_stack = alt;
        }
        *libc::__errno_location() = (*pf).errno;
    }
}

/// Hand a SIGURG that is not ours to the previous handler (`SIG_DFL` and `SIG_IGN`: SIGURG
/// is ignored by default, so nothing). Async-signal-safe.
///
/// # Safety
/// Kernel arguments of the handler.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // Acquire: pairs with the Release in `install`.
    if !SAVED.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: SAVED is set: PREVIOUS is initialised and never written again.
    let prev = unsafe { (*PREVIOUS.0.get()).assume_init_ref() };
    let h = prev.sa_sigaction;
    if h == libc::SIG_DFL || h == libc::SIG_IGN {
        return;
    }
    if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: installed as an SA_SIGINFO handler by its owner.
        unsafe {
            let f = mem::transmute::<
                libc::sighandler_t,
                unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void),
            >(h);
            f(sig, info, ctx);
        }
    } else {
        // SAFETY: installed as a plain handler by its owner.
        unsafe {
            let f = mem::transmute::<libc::sighandler_t, unsafe extern "C" fn(libc::c_int)>(h);
            f(sig);
        }
    }
}
