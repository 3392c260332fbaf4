//! Idle Ps and Ms, spinning, and waking: the park/unpark half of the scheduler.
//!
//! See the essay in `sched/mod.rs` ("Spinning, and why no wake-up is lost"). This file holds
//! the protocol's pieces:
//! * [`wakep`]: a submitter's half (after publishing a G on a local queue).
//! * [`wake_for_global`]: after publishing on the global queue from a thread without a P.
//! * [`startm`] / [`stopm`]: hand a P to an idle (or new) M and wake it / put an M to sleep.
//! * [`pidleput`] / [`pidleget`]: the idle-P list, under the scheduler lock.

use crate::loom::Ordering;
use crate::sched::m::{self, M};
use crate::sched::p::{P, PStatus};
use crate::sched::spin;
use crate::sched::{Sched, Synced, fatal, fatal_fmt};
use std::sync::Arc;

/// Put `p` on the idle list. Scheduler lock held (`&mut Synced`).
pub(crate) fn pidleput(s: &Sched, sy: &mut Synced, p: *mut P) {
    // SAFETY: the caller held `p` (Running) and is giving it up under the lock.
    let pr = unsafe { &*p };
    if !pr.runq.is_empty() {
        fatal_fmt(format_args!(
            "P{} put idle with a non-empty run queue",
            pr.id
        ));
    }
    pr.cas_status(PStatus::Running, PStatus::Idle);
    sy.pidle.push(p);
    // SeqCst: read lock-free by `wakep` as part of the wake-up protocol's total order (see
    // the comment there); changes happen under the lock.
    s.npidle.fetch_add(1, Ordering::SeqCst);
}

/// Take an idle P (status stays Idle until `acquirep`). Scheduler lock held.
pub(crate) fn pidleget(s: &Sched, sy: &mut Synced) -> Option<*mut P> {
    let procs = s.procs();
    while let Some(p) = sy.pidle.pop() {
        // SAFETY: Ps are never freed while the scheduler lives.
        let pr = unsafe { &*p };
        // SeqCst: see pidleput.
        s.npidle.fetch_sub(1, Ordering::SeqCst);
        if pr.id >= procs {
            // Retired by a GOMAXPROCS decrease while idle.
            pr.cas_status(PStatus::Idle, PStatus::Dead);
            continue;
        }
        return Some(p);
    }
    None
}

/// Make `m` hold `p`. Own thread of `m` only.
pub(crate) fn acquirep(m: &M, p: *mut P) {
    // SAFETY: `p` came off the idle list (or was handed to us with nextp): nobody else holds it.
    let pr = unsafe { &*p };
    pr.cas_status(PStatus::Idle, PStatus::Running);
    // Relaxed: diagnostics only.
    pr.m.store(m as *const M as *mut M, Ordering::Relaxed);
    m.p.set(p);
    if m.sched.pin {
        m.pin(pr.cpu);
    }
}

/// Detach `m` from its P and return it (status still Running: the caller idles or hands it).
pub(crate) fn releasep(m: &M) -> *mut P {
    let p = m.p.replace(std::ptr::null_mut());
    if p.is_null() {
        fatal("releasep without a P");
    }
    // SAFETY: we held `p`.
    unsafe { (*p).m.store(std::ptr::null_mut(), Ordering::Relaxed) };
    p
}

/// Submitter's half of the protocol: a G was just published on a local run queue; make sure
/// some M will look for it. Cheap when an M is already spinning or no P is idle.
///
/// The caller published the G with a SeqCst RMW (`runqput(.., next = true)`), which is the
/// store half of the submitter's StoreLoad (see `spin.rs`).
#[inline]
pub(crate) fn wakep(s: &Sched) {
    // SeqCst: skips the protocol when no P is idle (every P's M is running and will find the
    // G). A spinner increments npidle (SeqCst, in pidleput) before its SeqCst decrement of
    // nmspinning, so in the total order either this load sees the idle P, or our runnext
    // swap precedes the spinner's fence and its re-check sees the G. Free on x86_64 (a plain
    // load); Go's `ready` made the same two loads before its wakep.
    if s.npidle.load(Ordering::SeqCst) == 0 {
        return;
    }
    if !spin::claim_spinner(&s.nmspinning) {
        return;
    }
    wakep_slow(s);
}

#[inline(never)]
fn wakep_slow(s: &Sched) {
    let p = {
        let mut sy = s.lock();
        pidleget(s, &mut sy)
    };
    match p {
        Some(p) => startm(s, p, true),
        None => {
            spin::release_spinner(&s.nmspinning);
        }
    }
}

/// A G was published on the global queue by a thread without a P (or a P that is going away):
/// give an idle P to an M so somebody runs it. The global queue is lock-protected and every M
/// checks it under the lock before idling its P, so seeing no idle P here means a running M
/// will find the G.
pub(crate) fn wake_for_global(s: &Sched) {
    let p = {
        let mut sy = s.lock();
        pidleget(s, &mut sy)
    };
    if let Some(p) = p {
        startm(s, p, false);
    }
}

/// Hand `p` to an idle M (or a new one) and wake it. With `spinning`, the caller already
/// counted the M in `nmspinning`.
pub(crate) fn startm(s: &Sched, p: *mut P, spinning: bool) {
    let (idle_m, may_create) = {
        let mut sy = s.lock();
        let m = sy.midle.pop();
        let may = m.is_none() && sy.mcount < s.max_threads;
        if may {
            sy.mcount += 1;
        }
        (m, may)
    };
    match idle_m {
        Some(m) => {
            // SAFETY: Ms are freed only when the scheduler is dropped.
            let mr = unsafe { &*m };
            // Relaxed: published by the Release in `park.wake()`.
            mr.wake_spinning.store(spinning, Ordering::Relaxed);
            mr.nextp.store(p, Ordering::Relaxed);
            // Relaxed counter.
            s.m_wakeups.fetch_add(1, Ordering::Relaxed);
            mr.park.wake();
        }
        None if may_create => newm(s, p, spinning),
        None => fatal_fmt(format_args!(
            "thread limit exhausted: {} Ms exist and max_threads is {} \
             (raise it with Runtime::builder().max_threads(n))",
            s.max_threads, s.max_threads
        )),
    }
}

/// Create an M that starts holding `p`. `mcount` was already incremented.
fn newm(s: &Sched, p: *mut P, spinning: bool) {
    // SAFETY: `s` lives inside an Arc (every Sched is created by `Sched::start`), and this
    // thread holds a reference to that Arc (a Runtime, an M, or a goroutine of it) for the call.
    let arc = unsafe {
        Arc::increment_strong_count(s as *const Sched);
        Arc::from_raw(s as *const Sched)
    };
    // Relaxed counter (also the M id).
    let id = s.ms_created.fetch_add(1, Ordering::Relaxed) + 1;
    let mb = M::new(id, arc);
    mb.wake_spinning.store(spinning, Ordering::Relaxed);
    mb.nextp.store(p, Ordering::Relaxed);
    let mp = Box::into_raw(mb);
    {
        let mut sy = s.lock();
        sy.allm.push(mp);
    }
    {
        let mut live = s.mlive.lock().unwrap_or_else(|e| e.into_inner());
        *live += 1;
    }
    if let Err(e) = m::spawn_thread(mp) {
        fatal_fmt(format_args!("cannot create an M (OS thread): {e}"));
    }
}

/// Put the calling M to sleep until `startm` hands it a P. Own thread only; holds no P.
/// Returns false if it was woken for shutdown (no P).
pub(crate) fn stopm(m: &M) -> bool {
    let s = &*m.sched;
    {
        let mut sy = s.lock();
        m.park.clear();
        // Shutdown check under the lock: `shutdown` sets the flag, then takes the lock to wake
        // every idle M, so either we see the flag or it sees us on the list.
        // Acquire: pairs with the SeqCst store in shutdown (via the lock as well).
        if s.shutting_down.load(Ordering::Acquire) {
            return false;
        }
        sy.midle.push(m as *const M as *mut M);
    }
    m.park.sleep();
    // Relaxed: the note's Acquire in `sleep` ordered these after the waker's stores.
    let p = m.nextp.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if p.is_null() {
        return false;
    }
    acquirep(m, p);
    if m.wake_spinning.load(Ordering::Relaxed) {
        m.spinning.set(true);
    }
    true
}

/// The spinner found work: stop spinning; if it was the last spinner, wake another so the
/// remaining work fans out (Go's `resetspinning`).
#[inline]
pub(crate) fn reset_spinning(m: &M) {
    m.spinning.set(false);
    let s = &*m.sched;
    if spin::release_spinner(&s.nmspinning) == 0 {
        fatal("nmspinning underflow");
    }
    wakep(s);
}

/// The spinner found nothing and already gave up its P: decrement `nmspinning`, then issue the
/// StoreLoad barrier before the caller re-checks every queue.
pub(crate) fn drop_spinning(m: &M) {
    m.spinning.set(false);
    let s = &*m.sched;
    if spin::stop_spinning(&s.nmspinning) == 0 {
        fatal("nmspinning underflow");
    }
}
