//! `Preempt::ThreadHandoff`: the preempted goroutine keeps its thread; its P moves on.
//!
//! # Protocol (DESIGN.md §6: Go's `startlockedm`/`stoplockedm`, made temporary)
//! On the preempted goroutine's stack, in the yield ([`park_locked`]):
//! 1. nothing else runnable (this P's queue and the global queue empty, no timer due):
//!    start a new slice (`schedtick` bump, which the monitor sees) and resume in place;
//! 2. otherwise stamp the G with this M (`G::handoff_m`), make it Runnable on the global
//!    queue (its place in line), give the P back (status Idle) and `startm` it to an idle or
//!    new M, and sleep on this M's note — still on the goroutine's stack, its registers in
//!    the copied signal frame below us;
//! 3. whichever M dequeues the G ([`take_locked`], from `schedule`; the direct-switch path
//!    refuses locked Gs) does not run it: it clears the stamp, marks it Running, hands its
//!    own P to the stamped M (`nextp`, then `park.wake()`, whose Release publishes it) and
//!    goes idle itself (`stopm`);
//! 4. the stamped M wakes, takes the P and returns into the trampoline, which resumes the
//!    interrupted code on the same thread: thread-locals, thread-owned locks and errno stay
//!    consistent. The "lock" ends with the hand-over: from then on the goroutine is an
//!    ordinary one, free to move at its next voluntary scheduling point.
//!
//! Ownership: from step 2 until step 3 the G is on the global queue (owned by whoever
//! dequeues it) while its M sleeps inside its stack; only the dequeuer touches the G, and
//! only the stamped M resumes it. Cost: two futex hand-offs per preemption, only at quantum
//! expiry.
//!
//! Shutdown: a sleeping stamped M checks every 10 ms; once the runtime shuts down, it takes
//! any idle P (every M gives its P back on the way out) and resumes its goroutine, which
//! then stops at its next scheduling point like any other ("a goroutine that never reaches a
//! scheduling point keeps its M"). Its token stays on the global queue, which nobody reads
//! after shutdown.
//!
//! Known limit until the foreign-blocking handoff (sysmon, branch issue4-syscall) lands: if
//! the goroutine that runs next blocks its thread on a lock the preempted one holds (a
//! `std::sync::Mutex`, stdout), at GOMAXPROCS = 1 nobody is left to dequeue the preempted
//! goroutine; sysmon's retake of the blocked thread's P is what breaks that cycle.

use crate::loom::Ordering;
use crate::sched::g::{G, Status};
use crate::sched::idle::{self, acquirep, releasep};
use crate::sched::m::M;
use crate::sched::p::PStatus;
use crate::sched::schedule::globrunqput;

/// Step 1-2 and 4 of the protocol, on the preempted goroutine's stack.
pub(crate) fn park_locked(m: &M, g: *mut G) {
    let s = &*m.sched;
    let st = &s.preempt;
    // SAFETY: a running goroutine's M holds a P.
    let pr = unsafe { &*m.p.get() };
    // Relaxed: hints; a G queued concurrently is found by its own wake-up path.
    if pr.runq.is_empty()
        && s.runqsize.load(Ordering::Relaxed) == 0
        && !crate::time::due_within(s, 0)
    {
        pr.bump_schedtick();
        // Relaxed: statistics.
        st.in_place.fetch_add(1, Ordering::Relaxed);
        return;
    }
    st.handed_off.fetch_add(1, Ordering::Relaxed);
    m.park.clear();
    // SAFETY: the G is ours (it runs on this thread); Relaxed: published by the global
    // queue's lock to the dequeuer.
    unsafe {
        (*g).handoff_m
            .store(m as *const M as *mut M, Ordering::Relaxed);
        (*g).set_status(Status::Runnable);
    }
    globrunqput(s, g);
    let p = releasep(m);
    // SAFETY: we held it; Ps live as long as the runtime.
    unsafe { &*p }.cas_status(PStatus::Running, PStatus::Idle);
    idle::startm(s, p, false);
    loop {
        if m.park.sleep_until(crate::time::nanotime() + 10_000_000) {
            break;
        }
        // Acquire: pairs with the store in shutdown.
        if s.shutting_down.load(Ordering::Acquire) {
            let p = {
                let mut sy = s.lock();
                idle::pidleget(s, &mut sy)
            };
            if let Some(p) = p {
                // SAFETY: the G is ours again (its token is never dequeued after shutdown).
                unsafe {
                    (*g).handoff_m
                        .store(std::ptr::null_mut(), Ordering::Relaxed)
                };
                m.nextp.store(p, Ordering::Relaxed);
                break;
            }
        }
    }
    // Relaxed: published by the waker's Release in `park.wake()` (or our own store).
    let p = m.nextp.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if p.is_null() {
        crate::sched::fatal("a handed-off goroutine's thread was woken without a P");
    }
    acquirep(m, p);
    // A new time slice: the monitor must see the tick change (execute would bump it).
    // SAFETY: we hold `p` now.
    unsafe { &*p }.bump_schedtick();
    // SAFETY: ours again (the dequeuer marked it Running and handed it to us).
    unsafe { (*g).set_status(Status::Running) };
}

/// Whether `g` is waiting for its own M (step 2 to 3).
#[inline]
pub(crate) fn is_locked(g: *mut G) -> bool {
    // SAFETY: the caller dequeued `g` (owns it). Relaxed: published by the queue handoff.
    !unsafe { (*g).handoff_m.load(Ordering::Relaxed) }.is_null()
}

/// Step 3, on the dequeuing M's g0: if `g` is stamped, hand our P to its M and go idle.
/// Returns whether it was (then the caller must not run `g`).
pub(crate) fn take_locked(m: &M, g: *mut G) -> bool {
    // SAFETY: we dequeued `g`: ours. Relaxed: published by the queue handoff.
    let lm = unsafe { (*g).handoff_m.swap(std::ptr::null_mut(), Ordering::Relaxed) };
    if lm.is_null() {
        return false;
    }
    // SAFETY: as above.
    unsafe { (*g).set_status(Status::Running) };
    let p = releasep(m);
    // SAFETY: we held it.
    unsafe { &*p }.cas_status(PStatus::Running, PStatus::Idle);
    // SAFETY: Ms live as long as the runtime; the stamped M sleeps on its note.
    let lmr = unsafe { &*lm };
    // Relaxed: published by the Release in `park.wake()`.
    lmr.nextp.store(p, Ordering::Relaxed);
    lmr.park.wake();
    idle::stopm(m);
    true
}
