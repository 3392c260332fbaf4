//! Syscalls, handoff, locked threads, and getting a P back: Go's `entersyscall`/`exitsyscall`,
//! `handoffp`, `LockOSThread`/`startlockedm`/`stoplockedm`, plus the choke point where every
//! runtime entry checks that its M still owns its P.
//!
//! # The model (Go's, `proc.go`)
//! A goroutine about to block in the kernel says so: `gort::syscall(f)`. Its M keeps running
//! the goroutine (the thread *is* the one blocked in `f`), but the P is *frozen*: status
//! `Syscall`, not attached to any M (`m.p` null, `m.oldp` remembers it). Nobody touches a
//! frozen P's owner-only fields. Two parties may end the freeze, and one CAS on the P's status
//! word decides which:
//! * the M itself, when `f` returns (**exitsyscall fast path**): `Syscall -> Running`; it goes
//!   on with its own P as if nothing happened (cost: two uncontended CASes per call);
//! * **sysmon** (`sysmon.rs`), when the syscall has lasted a sysmon tick (≥ 20 µs) and the P
//!   has work or nobody else could run it, or 10 ms regardless (Go's `retake`):
//!   `Syscall -> Running` with sysmon as the holder, then [`handoffp`]: give it to an idle or
//!   new M if it has work (or nobody spins), else put it on the idle list. (Or, by the same
//!   CAS, a *syscall watcher*: an idle M that `entersyscall` woke on its own CPU because work
//!   was queued and sysmon slept long; it keeps the P itself. `sysmon.rs`, "Nudge".)
//!
//! The M whose CAS fails (**exitsyscall slow path**) knows its P is gone: it takes any idle P
//! (`pidleget`, under the scheduler lock); with none, its goroutine goes to the global queue
//! and the M goes idle (`Action::NoP`, then `stopm` as any idle M). Spare Ms stay on the idle
//! list and are reused by `startm`.
//!
//! # Why no P is lost or doubled
//! The P's status word carries an epoch bumped by every transition (`p.rs`). The M installs
//! `Syscall|e` and remembers it; sysmon read some word `w` and CASes `w -> Running|e'`. The
//! M's exit CAS expects exactly `Syscall|e`. Both CASes start from the same word, so exactly
//! one succeeds; the loser's CAS fails and it does not touch the P again (sysmon forgets it;
//! the M takes the slow path). A sysmon that read an older word (the M exited and re-entered a
//! syscall meanwhile) fails on the epoch: a P is never taken on the strength of a stale look.
//! The winner holds the P exactly as an M holding a `Running` P, so every later step (`startm`,
//! `pidleput`) is the ordinary protocol. The AcqRel CASes hand over the owner-only fields.
//! `sched/pword.rs` holds the word functions and loom models of both races (this one, and the
//! foreign-blocking one below: `.ci/loom.sh pword`); `tests/syscall.rs` stresses them in the
//! real scheduler (`syscall_storm`: thousands of short and long syscalls at 1, 2 and 8 Ps with
//! sysmon retaking, every run checking that all work finishes).
//!
//! # Foreign blocking, and the choke point
//! A goroutine that blocks in the kernel *without* `gort::syscall` (std::fs, a std Mutex,
//! `thread::sleep`, a C library) keeps its P `Running`. sysmon notices (`sysmon.rs`: the P has
//! not rescheduled for a quantum, and its M's thread is asleep in the kernel and has not run
//! between two looks), and takes the P: `Running|e -> Retaking -> Running(sysmon)`, then
//! `handoffp`. The M finds out at its **next runtime call that uses the P**: [`owns`] is the
//! check — one load of the P's status word compared with the word the M installed
//! (`m.pword`) — made by `mcall` (yield, park, exit, spawn back-pressure), `spawn`, `goready`
//! and `entersyscall`, through [`current_p`] or directly. On mismatch, [`regain_p`] (cold)
//! reclaims the P if sysmon is still only checking (`Retaking`), else runs exitsyscall's slow
//! path. Until that call the G runs without a P, which is harmless: user code does not touch
//! P-owned state, and runtime paths that only read P-local hints (timer heap choice, spin
//! heuristics, counters) tolerate a stale P. What it costs: nothing on the fast paths beyond
//! that one compare; sysmon reads `/proc/self/task/<tid>/{stat,schedstat}` only for Ps whose
//! goroutine has run a whole quantum.
//!
//! The M must not be mistaken for foreign-blocked while it blocks *inside the runtime* with its
//! P in hand (a contended scheduler, channel or condition-variable lock, mmap of a new stack):
//! those sites run under
//! [`runtime_blocking`], which sysmon respects — and so does all of g0 (`schedule::execute`
//! counts it as one such stretch: timer callbacks, the steal back-off, idle bookkeeping); page faults are told apart through
//! `/proc/self/task/<tid>/syscall` (`-1`: in the kernel, but not in a system call). What is
//! left: a system call made by runtime code outside `runtime_blocking` that sleeps longer than
//! a sysmon tick after its goroutine ran a whole quantum. Runtime code that may sleep in the
//! kernel while holding a P must be marked ([`lock_marked`] for mutexes; the scheduler,
//! channel and condition-variable locks and stack allocation are; g0 is as a whole; the
//! semaphore queue lock of `sync/sema.rs`, also built under loom, is not yet).
//!
//! # Locked goroutines (Go's `LockOSThread`)
//! `m.lockedg` / `g.lockedm` tie a goroutine and an M together, counted in two parts: the
//! user's nesting (`locked_ext`) and the runtime's temporary locks (`locked_int`, used by
//! preemption's ThreadHandoff mode). While locked, the M runs nothing else: `mcall` never
//! switches directly to another goroutine; when the locked G stops, the M hands its P off and
//! sleeps ([`stoplockedm`]); whoever dequeues the locked G hands *its* P to the G's M, wakes
//! it, and goes idle itself ([`startlockedm`]). A locked goroutine that exits while the user's
//! lock is held takes its thread with it (Go's rule since 1.10: the thread may carry state the
//! goroutine changed — namespaces, credentials, signal masks — that no other goroutine should
//! inherit); a temporary lock alone is simply dropped.
//!
//! Rejected: handing off the P at every `gort::syscall` entry (Go's `entersyscallblock`):
//! correct for calls known to block, but a `getpid` loop would pay two futex hand-offs per
//! call. Rejected: retaking a foreign-blocked P on one look at `/proc` — the M may wake up
//! between the look and the CAS and carry on with the P; hence `Retaking`, the second look
//! (the thread has not run: its `sum_exec_runtime` is unchanged), and the M's reclaim CAS.

use crate::loom::Ordering;
use crate::sched::g::{G, Status};
use crate::sched::idle::{self, acquirep, pidleget, pidleput, releasep, startm};
use crate::sched::m::{Action, M, current_m};
use crate::sched::p::{P, PCounters, PStatus, next_word, word_state};
use crate::sched::{Sched, fatal, schedule, spin};

/// Does `m` still own `p`? The choke point's one compare (see the module docs).
#[inline(always)]
pub(crate) fn owns(m: &M, p: *mut P) -> bool {
    // SAFETY: Ps live as long as their runtime; `p` is non-null when dereferenced.
    !p.is_null() && unsafe { (*p).word() } == m.pword.get()
}

/// The P of goroutine code running on `m`, checked: if sysmon took it (or a runtime call is
/// made inside `gort::syscall`'s closure), get one back first. Returns the M the goroutine is
/// on afterwards (it may have moved) and its P.
#[inline]
pub(crate) fn current_p(m: &M) -> (&M, &P) {
    let p = m.p.get();
    if owns(m, p) {
        // SAFETY: checked above: we hold `p`.
        return (m, unsafe { &*p });
    }
    let m = regain_p(m);
    // SAFETY: `regain_p` returns with a P held.
    (m, unsafe { &*m.p.get() })
}

/// The goroutine on `m` lost its P (or is inside `gort::syscall`): get a P back before the
/// runtime call goes on. May move the goroutine to another M; returns the M it runs on, which
/// holds a P. Goroutine stack only.
#[cold]
#[inline(never)]
pub(crate) fn regain_p<'a>(m: &M) -> &'a M {
    let p = m.p.get();
    if p.is_null() {
        if m.oldp.get().is_null() {
            fatal("a goroutine's M holds no P");
        }
        // A runtime call inside `gort::syscall`'s closure: leave the syscall now. Runtime
        // sections open in the caller move with the goroutine (preempt/mod.rs).
        let carried = crate::preempt::sections_carry_out();
        exitsyscall_m(m);
        crate::preempt::sections_carry_in(carried);
        // SAFETY: this thread's M (the goroutine may have moved).
        return unsafe { &*current_m() };
    }
    if keep_or_forget_p(m) {
        // SAFETY: this thread's M.
        return unsafe { &*(m as *const M) };
    }
    // Runtime sections open in the caller move with the goroutine (preempt/mod.rs).
    let carried = crate::preempt::sections_carry_out();
    exitsyscall_slow(m);
    crate::preempt::sections_carry_in(carried);
    // SAFETY: this thread's M (the goroutine may have moved).
    unsafe { &*current_m() }
}

/// `m` (non-null `m.p`) failed the ownership check: true if it holds its P after all —
/// sysmon was still only checking (`Retaking`: reclaimed) or reverted meanwhile; false if
/// sysmon handed it off, in which case `m` forgets it (`m.p` null, not spinning).
fn keep_or_forget_p(m: &M) -> bool {
    // SAFETY: Ps live as long as their runtime; the caller checked `m.p` is non-null.
    let pr = unsafe { &*m.p.get() };
    let mine = m.pword.get();
    let w = pr.word();
    if word_state(w) == PStatus::Retaking && w == next_word(mine, PStatus::Retaking) {
        // sysmon is still checking whether we sleep: we do not. Reclaim it.
        let nw = next_word(w, PStatus::Running);
        if pr.cas_word(w, nw) {
            m.pword.set(nw);
            return true;
        }
        if pr.word() == mine {
            // sysmon reverted first.
            return true;
        }
    } else if w == mine {
        return true;
    }
    // Gone: sysmon handed it off.
    m.p.set(std::ptr::null_mut());
    m.spinning.set(false);
    false
}

/// For a finishing or parking goroutine whose M failed the ownership check (`mcall(Exit)`,
/// `mcall(Park)`): true if the P is gone — `m` has forgotten it, and the goroutine exits or
/// parks without one (`Action::ExitNoP`, `Action::ParkNoP`). False: `m` holds the P after
/// all, or the goroutine is inside `gort::syscall`'s closure (`m.p` null), or locked to its
/// thread (its exit or park needs the locked-thread bookkeeping): the caller regains a P as
/// for any runtime call.
pub(crate) fn gone_without_p(m: &M) -> bool {
    !m.p.get().is_null() && m.lockedg.get().is_null() && !keep_or_forget_p(m)
}

/// Mark a stretch where runtime code may block in the kernel while its M holds a P (sysmon
/// then leaves the P alone). Nests. Any thread (no-op off an M).
#[inline]
pub(crate) fn runtime_blocking<R>(f: impl FnOnce() -> R) -> R {
    // A runtime section: the count below is this thread's M's, so the goroutine must not be
    // moved to another thread until it is restored.
    let _section = crate::preempt::Section::enter();
    let m = current_m();
    if m.is_null() {
        return f();
    }
    // SAFETY: this thread's M; the closure does not switch goroutines and the section keeps
    // preemption away, so we stay on it.
    unsafe { &*m }.runtime_blocking(f)
}

/// Lock a runtime mutex that goroutine code may find contended while holding a P: the wait
/// (a futex sleep) runs under [`runtime_blocking`]. Poisoning is passed through.
#[inline]
pub(crate) fn lock_marked<T>(
    m: &crate::loom::Mutex<T>,
) -> std::sync::LockResult<crate::loom::MutexGuard<'_, T>> {
    match m.try_lock() {
        Ok(g) => Ok(g),
        Err(std::sync::TryLockError::Poisoned(e)) => Err(e),
        Err(std::sync::TryLockError::WouldBlock) => runtime_blocking(|| m.lock()),
    }
}

// ---------------------------------------------------------------------------------------------
// gort::syscall

/// Undoes [`entersyscall`] when the closure returns or unwinds.
struct SyscallGuard;

impl Drop for SyscallGuard {
    #[inline]
    fn drop(&mut self) {
        exitsyscall();
    }
}

/// Run `f`, which may block in the kernel, with the P handed off meanwhile if it lasts.
#[inline]
pub(crate) fn syscall<R>(f: impl FnOnce() -> R) -> R {
    if !entersyscall() {
        return f();
    }
    let guard = SyscallGuard;
    let r = f();
    drop(guard);
    r
}

/// Freeze this M's P in `Syscall` (Go's `reentersyscall`). False off a goroutine (a plain
/// thread, g0), or when already inside `gort::syscall`: then there is nothing to undo.
#[inline]
fn entersyscall() -> bool {
    // A runtime section until the P is frozen (then the M holds none, and the handler refuses
    // anyway): the M and P read here must stay this goroutine's. `regain_p` carries it along
    // if it moves us.
    let _section = crate::preempt::Section::enter();
    let m = current_m();
    if m.is_null() {
        return false;
    }
    // SAFETY: this thread's M.
    let mut mr = unsafe { &*m };
    if mr.curg.get().is_null() {
        return false;
    }
    let mut p = mr.p.get();
    if p.is_null() && !mr.oldp.get().is_null() {
        // Nested: the outer call will exit.
        return false;
    }
    loop {
        if !owns(mr, p) {
            mr = regain_p(mr);
            p = mr.p.get();
        }
        // SAFETY: we hold `p` (checked).
        let pr = unsafe { &*p };
        let w = mr.pword.get();
        let nw = next_word(w, PStatus::Syscall);
        // Relaxed (both): single writer, the holder; sysmon compares them across looks.
        let t = pr.syscalltick.load(Ordering::Relaxed);
        pr.syscalltick.store(t.wrapping_add(1), Ordering::Relaxed);
        PCounters::bump(&pr.counters.syscalls);
        // A CAS, not a store: sysmon may be moving a Running P to Retaking right now.
        if pr.cas_word(w, nw) {
            mr.pword.set(nw);
            mr.oldp.set(p);
            mr.p.set(std::ptr::null_mut());
            let s = &*mr.sched;
            crate::sched::sysmon::syscall_entered(s, pr);
            return true;
        }
    }
}

/// Leave `gort::syscall` (Go's `exitsyscall`). Goroutine stack only.
#[inline]
fn exitsyscall() {
    let m = current_m();
    // SAFETY: entersyscall returned true on this goroutine; the goroutine cannot have moved
    // unless a runtime call inside the closure regained a P (then `oldp` is null below).
    exitsyscall_m(unsafe { &*m });
}

#[inline]
fn exitsyscall_m(m: &M) {
    let p = m.oldp.replace(std::ptr::null_mut());
    if p.is_null() {
        return;
    }
    let w = m.pword.get();
    let nw = next_word(w, PStatus::Running);
    // Fast path: our P is still frozen: unfreeze it. Loses only to sysmon's retake CAS.
    // SAFETY: Ps live as long as their runtime.
    if unsafe { (*p).cas_word(w, nw) } {
        m.pword.set(nw);
        m.p.set(p);
        return;
    }
    exitsyscall_slow(m);
}

/// The P is gone (Go's `exitsyscall` slow half + `exitsyscall0`): any idle P, else the
/// goroutine queues on the global queue and this M goes idle. Returns when the goroutine runs
/// again with a P, possibly on another M. Goroutine stack only; `m.p` is null.
#[cold]
#[inline(never)]
fn exitsyscall_slow(m: &M) {
    let s = &*m.sched;
    let g = m.curg.get();
    // Not preemptible, and not "user code" to the signal handler, until we hold a P or are
    // resumed with one. `acquirep` below runs with `m.p` set: interrupted in its
    // `sched_setaffinity` (libc) with a zero count, the handler would stamp the thread as
    // blocked in foreign code for its goroutine and answer sysmon's probe, and sysmon could
    // take the new P from under our caller. And a goroutine that is not running always has
    // a non-zero count (preempt/mod.rs): an M may resume it with a direct switch from another
    // goroutine's `mcall` and run that one's action (`post_switch`) on our stack, which must
    // not be preempted halfway. `mcall` callers have raised it already; `gort::syscall`'s
    // exit and the runtime calls that regain a P (`current_p`) have not. Raising it here is
    // safe: with `m.p` null the handler refuses this thread anyway, so `m` is still ours.
    // SAFETY: `g` is this M's running goroutine.
    unsafe { crate::preempt::g_nopreempt_inc(g) };
    let p = {
        let mut sy = s.lock();
        pidleget(s, &mut sy)
    };
    if let Some(p) = p {
        // `acquirep` pins the thread (`sched_setaffinity`, which may sleep in the kernel while
        // the thread migrates): runtime blocking, which sysmon's `/proc` detector must not
        // take the new P for — our caller (`regain_p`'s) uses it without another ownership
        // check, as g0 does after its own `acquirep`.
        runtime_blocking(|| acquirep(m, p));
        // SAFETY: raised above; `g` runs on this M, which holds a P again.
        unsafe { crate::preempt::g_nopreempt_dec(g) };
        return;
    }
    m.action.set(Action::NoP);
    // SAFETY: `g` is the running goroutine of this M; g0's context was saved by `execute`.
    let resumed_on = unsafe { crate::arch::switch(&mut (*g).ctx, m.g0.get(), 0) };
    // SAFETY: every switch into a goroutine passes the resuming M.
    schedule::post_switch(unsafe { &*(resumed_on as *const M) });
    // SAFETY: raised above; `g` is this goroutine wherever it resumed.
    unsafe { crate::preempt::g_nopreempt_dec(g) };
}

/// g0's half of `Action::NoP`: the goroutine goes to the global queue (a locked one too: its
/// M then waits in [`stoplockedm`] for whoever dequeues it).
pub(crate) fn nop_finish(s: &Sched, g: *mut G) {
    // SAFETY: the G is stopped and ours until it is on the queue.
    unsafe { (*g).set_status(Status::Runnable) };
    schedule::globrunqput(s, g);
    idle::wake_for_global(s);
}

// ---------------------------------------------------------------------------------------------
// Handoff

/// Why sysmon took a P (for the counters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reason {
    /// In a syscall with work queued on it (or timers due).
    SyscallWork,
    /// In a syscall and no other M was spinning or idle to pick up new work.
    SyscallIdle,
    /// In a syscall for 10 ms.
    SyscallLong,
    /// Its M blocked in the kernel (or ran foreign code) without `gort::syscall`.
    Foreign,
}

/// Give away a P nobody runs (Go's `handoffp`): to an M if it has work, or if nobody spins or
/// idles (that M spins), else to the idle list. The caller holds `p` (status `Running`, no M
/// attached: sysmon after a retake, or an M going to sleep locked).
pub(crate) fn handoffp(s: &Sched, p: *mut P) {
    // SAFETY: Ps live as long as their runtime; the caller holds it.
    let pr = unsafe { &*p };
    // Relaxed: a hint; the global queue is re-checked under the lock below.
    if !pr.runq.is_empty() || s.runqsize.load(Ordering::Relaxed) > 0 {
        pr.cas_status(PStatus::Running, PStatus::Idle);
        startm(s, p, false);
        return;
    }
    // Relaxed: heuristics, as Go's (the spinner claim below is the decisive CAS).
    if s.nmspinning.load(Ordering::Relaxed) + s.npidle.load(Ordering::Relaxed) == 0
        && spin::claim_spinner(&s.nmspinning)
    {
        pr.cas_status(PStatus::Running, PStatus::Idle);
        startm(s, p, true);
        return;
    }
    {
        let mut sy = s.lock();
        if sy.runq.is_empty() {
            pidleput(s, &mut sy, p);
            drop(sy);
            let when = pr.timers.next_when();
            if when != crate::time::heap::NO_TIMER {
                crate::time::timer_earliest_changed(s, when);
            }
            return;
        }
    }
    pr.cas_status(PStatus::Running, PStatus::Idle);
    startm(s, p, false);
}

// ---------------------------------------------------------------------------------------------
// Locked threads

/// The running goroutine's M and G and the lock count `internal` selects (the runtime's
/// temporary lock or the user's), or None off a goroutine.
fn lock_counter(
    internal: bool,
) -> Option<(*mut M, &'static M, *mut G, &'static std::cell::Cell<u32>)> {
    let m = current_m();
    if m.is_null() {
        return None;
    }
    // SAFETY: this thread's M, alive while the thread runs; the borrow is used only by the
    // caller, on this thread, before it returns.
    let mr: &'static M = unsafe { &*m };
    let g = mr.curg.get();
    if g.is_null() {
        return None;
    }
    let c = if internal {
        &mr.locked_int
    } else {
        &mr.locked_ext
    };
    Some((m, mr, g, c))
}

/// Tie the running goroutine to its M (Go's `dolockOSThread`). `internal`: the runtime's
/// temporary lock (preemption's ThreadHandoff mode) rather than the user's.
pub(crate) fn lock_thread(internal: bool) {
    // A runtime section: the M is this thread's only until the lock is in place.
    let _section = crate::preempt::Section::enter();
    let Some((m, mr, g, c)) = lock_counter(internal) else {
        return;
    };
    match c.get().checked_add(1) {
        Some(n) => c.set(n),
        None => fatal("lock_os_thread nested too deeply"),
    }
    if mr.lockedg.get().is_null() {
        mr.lockedg.set(g);
        // SAFETY: the running goroutine's own field.
        unsafe { (*g).lockedm = m };
        // Relaxed counter.
        mr.sched.mlocked.fetch_add(1, Ordering::Relaxed);
    }
}

/// Undo one [`lock_thread`]; an unlock without a lock is a no-op (as Go's).
pub(crate) fn unlock_thread(internal: bool) {
    // A runtime section: once the count drops to zero the goroutine may move.
    let _section = crate::preempt::Section::enter();
    let Some((_, mr, g, c)) = lock_counter(internal) else {
        return;
    };
    if c.get() == 0 {
        return;
    }
    c.set(c.get() - 1);
    if mr.locked_ext.get() == 0 && mr.locked_int.get() == 0 && !mr.lockedg.get().is_null() {
        mr.lockedg.set(std::ptr::null_mut());
        // SAFETY: the running goroutine's own field.
        unsafe { (*g).lockedm = std::ptr::null_mut() };
        // Relaxed counter.
        mr.sched.mlocked.fetch_sub(1, Ordering::Relaxed);
    }
}

/// g0 of an M whose locked goroutine exited while locked: give the P away and leave the
/// scheduler loop; the thread then exits (`mstart`).
pub(crate) fn exit_locked_thread(m: &M) {
    let s = &*m.sched;
    if !m.p.get().is_null() {
        if m.spinning.get() {
            idle::drop_spinning(m);
        }
        let p = releasep(m);
        handoffp(s, p);
    }
    let mut sy = s.lock();
    sy.mcount -= 1;
}

/// g0, after goroutine `g` locked to `m` finished: untie them. If the user's lock was still
/// held, the thread exits instead of running anything else (see the module docs).
pub(crate) fn locked_exit(m: &M, g: *mut G) {
    if m.locked_ext.get() > 0 {
        m.exit_thread.set(true);
    }
    m.locked_ext.set(0);
    m.locked_int.set(0);
    m.lockedg.set(std::ptr::null_mut());
    // SAFETY: the dead G is ours (g0 frees it next).
    unsafe { (*g).lockedm = std::ptr::null_mut() };
    // Relaxed counter.
    m.sched.mlocked.fetch_sub(1, Ordering::Relaxed);
}

/// g0 of `m` dequeued `g`, which is locked to another M: hand our P to that M, wake it, and go
/// idle (Go's `startlockedm`).
pub(crate) fn startlockedm(m: &M, g: *mut G) {
    let s = &*m.sched;
    // SAFETY: `g` is Runnable and ours (dequeued); its `lockedm` was set while it ran and is
    // ordered before us by the queue.
    let target = unsafe { (*g).lockedm };
    // The target may still be on its way to sleep (handing off its P): wait for it to
    // register. At shutdown it never will: leave the goroutine to be abandoned.
    loop {
        {
            let mut sy = s.lock();
            if let Some(i) = sy.mlocked.iter().position(|&x| x == target) {
                sy.mlocked.swap_remove(i);
                break;
            }
            // Acquire: pairs with the store in shutdown.
            if s.shutting_down.load(Ordering::Acquire) {
                // SAFETY: we own `g` (dequeued); it goes back for shutdown to abandon.
                unsafe { sy.runq.push_back(g) };
                // Relaxed: see `schedule::runqput`.
                s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
                return;
            }
        }
        std::thread::yield_now();
    }
    let p = releasep(m);
    // SAFETY: we held `p`. A new epoch: the target installs it as its own word.
    unsafe { (*p).cas_status(PStatus::Running, PStatus::Running) };
    // SAFETY: Ms live as long as their runtime.
    let tr = unsafe { &*target };
    // Relaxed: published by the Release in `park.wake()`.
    tr.wake_spinning.store(false, Ordering::Relaxed);
    tr.nextp.store(p, Ordering::Relaxed);
    // The P is handed over in state Running: the target adopts it (`acquirep_running`).
    tr.park.wake();
    idle::stopm(m);
}

/// g0 of an M whose locked goroutine stopped (parked, yielded, or queued for a P): hand the
/// P off and sleep until [`startlockedm`] brings one back with the goroutine runnable (Go's
/// `stoplockedm`). The note was cleared before the goroutine could be seen (see `execute`).
/// False at shutdown.
pub(crate) fn stoplockedm(m: &M) -> bool {
    let s = &*m.sched;
    if !m.p.get().is_null() {
        if m.spinning.get() {
            idle::drop_spinning(m);
        }
        let p = releasep(m);
        handoffp(s, p);
    }
    {
        let mut sy = s.lock();
        // Acquire: pairs with the store in shutdown (which then drains `mlocked` under the lock).
        if s.shutting_down.load(Ordering::Acquire) {
            return false;
        }
        sy.mlocked.push(m as *const M as *mut M);
    }
    m.park.sleep();
    // Relaxed: ordered by the note's Acquire.
    let p = m.nextp.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if p.is_null() {
        return false;
    }
    // The P comes in state Running, released by the M that dequeued our goroutine.
    // SAFETY: handed to us: nobody else holds it.
    let pr = unsafe { &*p };
    pr.m.store(m as *const M as *mut M, Ordering::Relaxed);
    m.pword.set(pr.word());
    m.p.set(p);
    m.pin_for_p(pr.cpu);
    true
}
