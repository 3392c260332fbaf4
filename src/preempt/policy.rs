//! The async-safe-point policy: may the goroutine interrupted by a preemption signal be
//! stopped here? Every check is O(1) and async-signal-safe (plain loads of const-initialised
//! thread-locals, of the interrupted thread's own M and G, and of ranges snapshotted at start).
//!
//! # The checks, in order (the first that fails is the refusal counted)
//! 1. a user goroutine runs on this thread: the thread is an M and `curg` is set
//!    ([`Refusal::NotGoroutine`]: g0 running the scheduler, a plain thread);
//! 2. the pc lies in the executable's own text ([`Refusal::Foreign`]: libc, ld.so, any other
//!    shared object — code we cannot vouch for, and typically a blocking call; the M is
//!    stamped `foreign_since` for sysmon whatever else holds; [`Refusal::Vdso`]: the vdso,
//!    refused but not stamped, as it never blocks);
//! 3. no runtime section is open on this thread ([`Refusal::Runtime`]: `LOCKS`, see
//!    `preempt/mod.rs`) and the goroutine's no-preempt count is zero ([`Refusal::NoPreempt`]:
//!    `gort::no_preempt`, and the scheduler's own switch path, which holds it across `mcall`),
//!    and the pc is not in the trampoline itself ([`Refusal::Runtime`]);
//! 4. the thread is not unwinding a panic ([`Refusal::Panicking`]);
//! 5. the interrupted sp lies in the goroutine's stack with room for the copied signal frame
//!    and the yield below it ([`Refusal::Stack`]); the frame is one we know how to copy
//!    ([`Refusal::Frame`]) — these two are checked by `signal.rs` as it builds the copy.
//!
//! # Runtime code: why counts and not pc ranges
//! gort is statically linked into the program, and its generic functions (channels, mutexes,
//! `JoinHandle`) are instantiated and inlined into the *user's* functions: no linker section
//! or symbol range contains "the runtime". What must not be interrupted is not a set of
//! addresses but a set of states: a runtime lock held (a preempted holder would stall every
//! thread that wants it), the P's owner-only fields in use (the P may move on while the code
//! still writes them), the scheduler between two goroutines. Each of those is an explicit
//! section: `crate::loom::Mutex` guards and the channel lock count themselves on the thread
//! (`LOCKS`), `goready`/`spawn` open a section around their P use, and the switch path holds
//! the goroutine's own count (it spans the switch, so it lives on the G). The only pc range
//! checked is the trampoline's: it enters and leaves `gort_preempt_yield` with no count raised,
//! and lowers the count itself after the call so that nothing between the fixed-up frame and
//! `rt_sigreturn` can be preempted.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Why a preemption request was refused at the signal (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Refusal {
    NotGoroutine = 0,
    Runtime = 1,
    NoPreempt = 2,
    Foreign = 3,
    Panicking = 4,
    Stack = 5,
    Frame = 6,
    /// The goroutine is inside `gort::syscall` (its M holds no P).
    Syscall = 7,
    /// The pc is in the vdso (`clock_gettime`...): not ours, but not blocking either, so
    /// the M is not stamped foreign.
    Vdso = 8,
    /// The request was for a slice that ended before the signal landed (the P has scheduled
    /// another goroutine, or this one again, since): not retried.
    Stale = 9,
}

/// Number of [`Refusal`] reasons.
pub(crate) const REFUSALS: usize = 10;

/// Names of the reasons, in `Refusal` order (for `Stats`).
pub(crate) const REFUSAL_NAMES: [&str; REFUSALS] = [
    "not_goroutine",
    "runtime",
    "no_preempt",
    "foreign",
    "panicking",
    "stack",
    "frame",
    "syscall",
    "vdso",
    "stale",
];

/// At most this many executable segments are remembered (a program has one or two).
const MAX_RANGES: usize = 8;

/// The executable's text segments as `[start, end)` pairs, written once by [`snapshot`]
/// before the handler is installed, read by the handler.
static RANGES: [[AtomicUsize; 2]; MAX_RANGES] =
    [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; MAX_RANGES];
/// Number of valid entries of `RANGES` (Release-published after them).
static NRANGES: AtomicUsize = AtomicUsize::new(0);
/// The vdso's executable segment `[start, end)` (0, 0 if none), written by [`snapshot`].
static VDSO: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

unsafe extern "C" {
    /// The preemption trampoline (`asm/<arch>/preempt.S`); its start and end bound the
    /// only code range the policy refuses by address.
    fn gort_preempt_trampoline();
    fn gort_preempt_trampoline_end();
}

/// The trampoline's address (the pc the handler writes into the interrupted context).
pub(crate) fn trampoline() -> usize {
    gort_preempt_trampoline as *const () as usize
}

/// Take the executable's executable `PT_LOAD` segments from `dl_iterate_phdr` (its first
/// entry is the main program). Idempotent; called before the handler is installed.
pub(crate) fn snapshot() {
    // Acquire: pairs with the Release below (a second runtime sees the first one's ranges).
    if NRANGES.load(Ordering::Acquire) != 0 {
        return;
    }
    unsafe extern "C" fn first_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the callback, and
        // `data` is the `usize` counter below.
        unsafe {
            let info = &*info;
            let n = &mut *(data as *mut usize);
            for i in 0..info.dlpi_phnum as usize {
                let ph = &*info.dlpi_phdr.add(i);
                if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 && *n < MAX_RANGES {
                    let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                    // Relaxed: published by the Release store of NRANGES.
                    RANGES[*n][0].store(start, Ordering::Relaxed);
                    RANGES[*n][1].store(start + ph.p_memsz as usize, Ordering::Relaxed);
                    *n += 1;
                }
            }
        }
        1 // stop after the main program
    }
    let mut n = 0usize;
    // SAFETY: the callback only reads the headers it is given and writes `n`.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            &mut n as *mut usize as *mut libc::c_void,
        )
    };
    // The vdso: its ELF header is at AT_SYSINFO_EHDR; find its object by that base.
    unsafe extern "C" fn vdso_object(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: as in `first_object`; `data` is the vdso base.
        unsafe {
            let info = &*info;
            let base = data as usize;
            let seg = |i: usize| &*info.dlpi_phdr.add(i);
            let n = info.dlpi_phnum as usize;
            let loaded_at_base = (0..n).any(|i| {
                seg(i).p_type == libc::PT_LOAD
                    && info.dlpi_addr as usize + seg(i).p_vaddr as usize == base
            });
            if !loaded_at_base {
                return 0;
            }
            for i in 0..n {
                let ph = seg(i);
                if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                    let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
                    // Relaxed: published by the Release store of NRANGES below.
                    VDSO[0].store(start, Ordering::Relaxed);
                    VDSO[1].store(start + ph.p_memsz as usize, Ordering::Relaxed);
                }
            }
        }
        1
    }
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) } as usize;
    if vdso != 0 {
        // SAFETY: the callback only reads the headers it is given.
        unsafe { libc::dl_iterate_phdr(Some(vdso_object), vdso as *mut libc::c_void) };
    }
    // Release: publishes RANGES to the handler's Acquire load.
    NRANGES.store(n, Ordering::Release);
}

/// Whether `pc` lies in the executable's own text. Async-signal-safe.
pub(crate) fn in_executable(pc: usize) -> bool {
    // Acquire: pairs with the Release in `snapshot`.
    let n = NRANGES.load(Ordering::Acquire);
    (0..n).any(|i| {
        // Relaxed: published by NRANGES.
        let start = RANGES[i][0].load(Ordering::Relaxed);
        let end = RANGES[i][1].load(Ordering::Relaxed);
        (start..end).contains(&pc)
    })
}

/// Whether `pc` lies in the trampoline (a second signal before it raised any count).
/// Async-signal-safe.
pub(crate) fn in_trampoline(pc: usize) -> bool {
    (gort_preempt_trampoline as *const () as usize
        ..gort_preempt_trampoline_end as *const () as usize + 4)
        .contains(&pc)
}

/// Checks 1-4 of the module docs for the thread the signal interrupted at `pc`, returning
/// the running goroutine. Async-signal-safe.
pub(crate) fn check(
    pc: usize,
) -> Result<(&'static crate::sched::m::M, *mut crate::sched::g::G), Refusal> {
    let m = crate::sched::m::current_m();
    if m.is_null() {
        return Err(Refusal::NotGoroutine);
    }
    // SAFETY: this thread's own M, alive while the thread runs; `&'static` is a white lie
    // bounded by the handler's and the yield's use, both on this thread while it is an M.
    let mr: &'static crate::sched::m::M = unsafe { &*m };
    let g = mr.curg.get();
    if g.is_null() {
        return Err(Refusal::NotGoroutine);
    }
    // Foreign first: a thread in libc (blocked in the kernel, typically) is stamped foreign
    // whatever counts are raised, for sysmon's foreign-blocking handoff.
    if !in_executable(pc) {
        // Relaxed: published with NRANGES (read by `in_executable` with Acquire).
        if (VDSO[0].load(Ordering::Relaxed)..VDSO[1].load(Ordering::Relaxed)).contains(&pc) {
            return Err(Refusal::Vdso);
        }
        return Err(Refusal::Foreign);
    }
    if mr.p.get().is_null() {
        // Inside `gort::syscall` (its P is frozen in Syscall) or between Ps.
        return Err(Refusal::Syscall);
    }
    if super::locks() != 0 {
        return Err(Refusal::Runtime);
    }
    // SAFETY: `curg` runs on this thread (we interrupted it); its struct is alive.
    if unsafe { (*g).nopreempt.load(Ordering::Relaxed) } != 0 {
        return Err(Refusal::NoPreempt);
    }
    if in_trampoline(pc) {
        return Err(Refusal::Runtime);
    }
    // std's `panicking()` reads a global atomic and, only if that is non-zero, a
    // const-initialised thread-local counter: no allocation, no lock (std 1.85 and later).
    // A goroutine stopped mid-unwind could resume on another thread, whose panic count
    // would then be wrong, so unwinding code is never preempted.
    if std::thread::panicking() {
        return Err(Refusal::Panicking);
    }
    Ok((mr, g))
}
