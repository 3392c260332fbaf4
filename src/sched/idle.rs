//! Idle Ps and Ms, spinning, and waking: the park/unpark half of the scheduler.
//!
//! See the essay in `sched/mod.rs` ("Spinning, and why no wake-up is lost"). This file holds
//! the protocol's pieces:
//! * [`wakep`]: a submitter's half (after publishing a G on a local queue).
//! * [`wake_for_global`]: after publishing on the global queue from a thread without a P.
//! * [`startm`] / [`stopm`]: hand a P to an idle (or new) M and wake it / put an M to sleep.
//! * [`stopm_timed`] / [`timer_wake`]: the timer sleeper — an idle M that sleeps only until
//!   the earliest timer, and the adder's half that wakes it for an earlier one (protocol in
//!   `time/mod.rs`, "Sleeping until the next timer").
//! * [`pidleput`] / [`pidleget`]: the idle-P list, under the scheduler lock.

use crate::loom::Ordering;
use crate::sched::m::{self, M};
use crate::sched::p::{P, PStatus, next_word};
use crate::sched::spin;
use crate::sched::{Sched, Synced, fatal, fatal_fmt};
use crate::time::heap::NO_TIMER;
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
        // A P leaves the idle list: sysmon must watch again if it sleeps deeply.
        crate::sched::sysmon::p_left_idle(s);
        return Some(p);
    }
    None
}

/// `find_runnable`'s last look found goroutines queued on `p2`: an idle P to go after them —
/// `p2` itself if it is on the idle list. Scheduler lock held.
///
/// An idle P never has a queue (`pidleput` checks it, and only a P's holder queues on it), so
/// finding one is a broken invariant: fatal in debug builds. In release builds, taking that
/// very P runs the goroutines. Any other P would not: stealing skips Ps that are not
/// Running, and `pidleget` returns the most recently idled P — this M's own, just released —
/// so a lone spinning M took and released its own P forever while the work stayed put (seen
/// twice in ~200 runs of the sched suite under 100 µs quanta and two busy loops, burning a
/// CPU for minutes with every goroutine stuck). One way in was `spawn` queuing on a P it had
/// lost while it slept getting the G (fixed there); debug builds name any other pusher
/// (`schedule::check_holder`).
pub(crate) fn pidleget_for(s: &Sched, sy: &mut Synced, p2: *mut P) -> Option<*mut P> {
    // SAFETY: Ps are never freed while the scheduler lives.
    let pr = unsafe { &*p2 };
    // Looked at under the lock: the caller's look was racy (the P may have run its queue
    // empty and gone idle since), but an idle P cannot change hands now, and no thief takes
    // from a P that is not Running.
    if pr.id < s.procs()
        && !pr.runq.is_empty()
        && let Some(i) = sy.pidle.iter().position(|&p| p == p2)
    {
        if cfg!(debug_assertions) {
            fatal_fmt(format_args!(
                "P{} is idle with a non-empty run queue",
                pr.id
            ));
        }
        // To the top of the list, where `pidleget` takes it with the usual bookkeeping.
        let top = sy.pidle.len() - 1;
        sy.pidle.swap(i, top);
    }
    pidleget(s, sy)
}

/// Make `m` hold `p`. Own thread of `m` only.
pub(crate) fn acquirep(m: &M, p: *mut P) {
    // SAFETY: `p` came off the idle list (or was handed to us with nextp): nobody else holds it.
    let pr = unsafe { &*p };
    let w = pr.cas_status(PStatus::Idle, PStatus::Running);
    // Relaxed: read by sysmon as a hint (it re-checks the status word before acting).
    pr.m.store(m as *const M as *mut M, Ordering::Relaxed);
    m.pword.set(w);
    m.p.set(p);
    crate::preempt::p_busy(&m.sched);
    m.pin_for_p(pr.cpu);
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
        // Relaxed: `sleeper` is read and written under the scheduler lock only.
        let sleeper = s.timers.sleeper.load(Ordering::Relaxed);
        let may_create = sy.mcount < s.max_threads;
        let m = match pick_idle(&sy.midle, |m| watching(s, sleeper, m), may_create) {
            Pick::Idle(i) => Some(sy.midle.remove(i)),
            Pick::Create => None,
            Pick::Watcher => {
                // The thread limit forces our hand: the most recently idled M, even if it
                // watches. If it is the timer sleeper it stops being one (its wake-up below
                // breaks its sleep; a blocker's wait is broken by `kick_m`).
                let m = sy.midle.pop();
                if m == Some(sleeper) {
                    unregister_sleeper(s);
                }
                m
            }
        };
        let may = m.is_none() && may_create;
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
            crate::netpoll::kick_m(s, m);
        }
        None if may_create => newm(s, p, spinning),
        None => fatal_fmt(format_args!(
            "thread limit of {} exceeded: every M is busy (blocked in syscalls, locked to \
             goroutines) and another is needed to run the Ps \
             (raise it with Runtime::builder().max_threads(n))",
            s.max_threads
        )),
    }
}

/// Whether idle M `m` watches for the others: the timer sleeper (`sleeper`, read under the
/// scheduler lock), or the netpoll blocker. Work goes to other Ms first.
fn watching(s: &Sched, sleeper: *mut M, m: *mut M) -> bool {
    m == sleeper || crate::netpoll::is_blocker(s, m)
}

/// `startm`'s choice of M.
#[derive(Debug, PartialEq, Eq)]
enum Pick {
    /// The idle M at this index (the most recently idled one that does not watch).
    Idle(usize),
    /// A new M: every idle M watches (or none is idle).
    Create,
    /// No new M allowed: the most recently idled M, which watches.
    Watcher,
}

/// Keep the timer sleeper watching the timers and the netpoll blocker in epoll (Go never
/// hands work to the M blocked in netpoll): hand work to the most recently idled M that does
/// neither, else to a new M, else (thread limit) to a watcher. Every idle M must be looked
/// at: with two watchers idle, looking past only the top one once handed work to the timer
/// sleeper without ending its role; it then idled again without a deadline, and the stale
/// registration made every later timer's adder trust a sleeper that was not watching (lost
/// timer wake-ups with sockets open and GOMAXPROCS ≥ 2).
fn pick_idle(midle: &[*mut M], watching: impl Fn(*mut M) -> bool, may_create: bool) -> Pick {
    match midle.iter().rposition(|&m| !watching(m)) {
        Some(i) => Pick::Idle(i),
        None if may_create || midle.is_empty() => Pick::Create,
        None => Pick::Watcher,
    }
}

/// `entersyscall` froze `p` (status word `word`) with work queued: wake an idle M pinned to
/// the same CPU as the caller to watch it, rather than sysmon (`sysmon.rs`, "Nudge"). The
/// watcher becomes runnable on this CPU and gets it the moment the syscall blocks; it spins
/// until `due` (the syscall has then lasted sysmon's base period, as for sysmon's retake) and
/// retakes the P for itself if the syscall is still the same one, or goes back to the idle
/// list. One wake-up on the caller's CPU instead of two on a CPU the kernel may have halted.
/// (Should the kernel run the watcher before the caller blocks, it spins at most 20 µs.)
/// False (the caller nudges sysmon) when Ms are not pinned or no idle M is pinned here.
pub(crate) fn watch_syscall(s: &Sched, p: &P, word: u64, due: u64) -> bool {
    if !s.pin {
        return false;
    }
    let m = {
        let sy = &mut *s.lock();
        // Relaxed: under the scheduler lock, their writers' lock.
        let sleeper = s.timers.sleeper.load(Ordering::Relaxed);
        let found = sy.midle.iter().rposition(|&m| {
            // SAFETY: Ms are freed only when the scheduler is dropped.
            let mr = unsafe { &*m };
            // Relaxed: see `M::pinned_shared`.
            !watching(s, sleeper, m) && mr.pinned_shared.load(Ordering::Relaxed) == p.cpu
        });
        match found {
            Some(i) => sy.midle.swap_remove(i),
            None => return false,
        }
    };
    // SAFETY: as above; off the idle list, so it is ours to wake.
    let mr = unsafe { &*m };
    // Relaxed (all): published by the Release in `park.wake()`.
    mr.wake_spinning.store(false, Ordering::Relaxed);
    mr.watch_word.store(word, Ordering::Relaxed);
    mr.watch_due.store(due, Ordering::Relaxed);
    mr.nextp.store(p as *const P as *mut P, Ordering::Relaxed);
    // Relaxed counter.
    s.m_wakeups.fetch_add(1, Ordering::Relaxed);
    mr.park.wake();
    true
}

/// The watcher's side of [`watch_syscall`]: spin until `due` while the P is still frozen in
/// the same syscall, then retake it as sysmon would (the same CAS against exitsyscall's) if
/// work is still waiting, and hold it. Returns whether it holds `p`.
fn watch(m: &M, p: *mut P, word: u64, due: u64) -> bool {
    let s = &*m.sched;
    // SAFETY: Ps live as long as their runtime.
    let pr = unsafe { &*p };
    while pr.word() == word {
        if crate::time::nanotime() >= due {
            // Relaxed: a hint, as sysmon's.
            let work = !pr.runq.is_empty() || s.runqsize.load(Ordering::Relaxed) > 0;
            if !work || !pr.cas_word(word, next_word(word, PStatus::Running)) {
                return false;
            }
            crate::sched::sysmon::count_handoff(s, crate::sched::syscall::Reason::SyscallWork);
            // Relaxed: a statistics counter.
            s.sysmon.watched.fetch_add(1, Ordering::Relaxed);
            // Held as sysmon holds a retaken P: make it ours the ordinary way.
            pr.cas_status(PStatus::Running, PStatus::Idle);
            acquirep(m, p);
            return true;
        }
        std::hint::spin_loop();
    }
    false
}

/// Create an M that starts holding `p`. `mcount` was already incremented.
fn newm(s: &Sched, p: *mut P, spinning: bool) {
    // A goroutine may get here (`wakep` after a spawn): it must not be preempted while it
    // holds `mlive` (a std Mutex, for shutdown's condition variable) or the P it hands over,
    // or every M that needs a thread would block behind a goroutine waiting for a P.
    let _section = crate::preempt::Section::enter();
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
    crate::sched::sysmon::ensure_started(s);
    let others = {
        let mut live = s.mlive.lock().unwrap_or_else(|e| e.into_inner());
        *live += 1;
        *live - 1
    };
    if let Err(e) = m::spawn_thread(mp) {
        if others == 0 {
            fatal_fmt(format_args!("cannot create an M (OS thread): {e}"));
        }
        // The OS refused a thread (EAGAIN: RLIMIT_NPROC, or no memory mapping left for its
        // stack — a program that exhausted vm.max_map_count with goroutine stacks, whose
        // spawns already fail with a clear error). Other Ms are alive to run the work, so
        // take this one back instead of aborting: the P goes idle (its queue stays visible
        // to stealing Ms) and a later wake-up tries again.
        {
            let mut live = s.mlive.lock().unwrap_or_else(|e| e.into_inner());
            *live -= 1;
        }
        {
            let mut sy = s.lock();
            sy.allm.retain(|&x| x != mp);
            sy.mcount -= 1;
            // SAFETY: the P was handed to us: fresh off the idle list (still Idle) or taken
            // from a blocked M by sysmon (Running, ours).
            let pr = unsafe { &*p };
            // An idle P keeps no queue: its goroutines go to the global queue, which every M
            // checks before it idles.
            pr.runq.drain(|g| {
                // SAFETY: drained from the P we own; each G is now only ours.
                unsafe { sy.runq.push_back(g.as_ptr()) }
            });
            // Relaxed: see runqput (the lock orders it for lock holders).
            s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
            if pr.status() == PStatus::Idle {
                sy.pidle.push(p);
                // SeqCst: see pidleput.
                s.npidle.fetch_add(1, Ordering::SeqCst);
            } else {
                pidleput(s, &mut sy, p);
            }
        }
        if spinning {
            spin::release_spinner(&s.nmspinning);
        }
        // SAFETY: the thread was never created: nothing else refers to this M.
        drop(unsafe { Box::from_raw(mp) });
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!("gort: cannot create an M (OS thread): {e}; continuing with the Ms there are")
        });
    }
}

/// Put the calling M to sleep until `startm` hands it a P. Own thread only; holds no P.
/// Returns false if it was woken without a P (shutdown, or a timer).
pub(crate) fn stopm(m: &M) -> bool {
    stopm_until(m, NO_TIMER)
}

/// An M with no P and nothing to run (the end of `find_runnable`; Go's `findRunnable` tail
/// with its `pollUntil`). If a timer of some P is already due, take an idle P and return as a
/// spinner, so `find_runnable` runs it (its own P's timers first, then everyone's as a
/// spinner). Otherwise sleep until handed a P, or until the earliest timer if this M becomes
/// the timer sleeper. Returns with or without a P; the caller starts over either way.
pub(crate) fn stopm_timed(m: &M) {
    let s = &*m.sched;
    let next = crate::time::earliest(s, false);
    if next != NO_TIMER && next <= crate::time::nanotime() {
        let p = {
            let mut sy = s.lock();
            pidleget(s, &mut sy)
        };
        if let Some(p) = p {
            acquirep(m, p);
            m.spinning.set(true);
            spin::start_spinning(&s.nmspinning);
            return;
        }
        // Every P is held by a running M, which runs its own P's timers at its next
        // scheduling point (and, spinning, everyone's).
        stopm(m);
        return;
    }
    stopm_until(m, next);
}

/// Mark no M as the timer sleeper. Scheduler lock held.
fn unregister_sleeper(s: &Sched) {
    // Relaxed (both): written under the scheduler lock; an adder that still reads the old
    // deadline only takes the lock to find nobody to wake.
    s.timers
        .sleeper
        .store(std::ptr::null_mut(), Ordering::Relaxed);
    s.timers.sleep_until.store(0, Ordering::Relaxed);
}

/// Take `m` off the idle-M list if it is there. Scheduler lock held.
fn midle_remove(sy: &mut Synced, m: *mut M) -> bool {
    match sy.midle.iter().position(|&x| x == m) {
        Some(i) => {
            sy.midle.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Wake an M that was taken off the idle list without being handed a P (a displaced or
/// outdated timer sleeper): it starts over in `find_runnable` and recomputes.
fn wake_without_p(s: &Sched, m: *mut M) {
    // SAFETY: Ms are freed only when the scheduler is dropped.
    let mr = unsafe { &*m };
    // Relaxed: published by the Release in `park.wake()`.
    mr.wake_spinning.store(false, Ordering::Relaxed);
    mr.nextp.store(std::ptr::null_mut(), Ordering::Relaxed);
    // Relaxed counter.
    s.m_wakeups.fetch_add(1, Ordering::Relaxed);
    mr.park.wake();
    crate::netpoll::kick_m(s, m);
}

/// Wake one idle M without a P, so that it starts over (with sockets registered, it comes
/// back to block in the network poller: `netpoll::ensure_poller`). False if no M is idle.
pub(crate) fn wake_idle_m(s: &Sched) -> bool {
    let m = {
        let mut sy = s.lock();
        let Some(m) = sy.midle.pop() else {
            return false;
        };
        // Relaxed: under the lock.
        if s.timers.sleeper.load(Ordering::Relaxed) == m {
            unregister_sleeper(s);
        }
        m
    };
    wake_without_p(s, m);
    true
}

/// [`stopm`], and if `until` is a deadline and no M sleeps for an earlier one, become the
/// timer sleeper: sleep until handed a P or until the earliest timer, whichever comes first.
fn stopm_until(m: &M, until: u64) -> bool {
    let s = &*m.sched;
    let me = m as *const M as *mut M;
    let mut deadline = NO_TIMER;
    let mut displaced: *mut M = std::ptr::null_mut();
    {
        let mut sy = s.lock();
        m.park.clear();
        // Shutdown check under the lock: `shutdown` sets the flag, then takes the lock to wake
        // every idle M, so either we see the flag or it sees us on the list.
        // Acquire: pairs with the SeqCst store in shutdown (via the lock as well).
        if s.shutting_down.load(Ordering::Acquire) {
            return false;
        }
        sy.midle.push(me);
        // Relaxed (both): under the scheduler lock, their only writers' lock.
        let cur = s.timers.sleeper.load(Ordering::Relaxed);
        if until != NO_TIMER
            && (cur.is_null() || s.timers.sleep_until.load(Ordering::Relaxed) > until)
        {
            // A sleeper for a later deadline: we take over; it is woken to recompute (by us,
            // as the one who took it off the idle list).
            if !cur.is_null() && midle_remove(&mut sy, cur) {
                displaced = cur;
            }
            // Relaxed: under the lock (see `SchedTimers::sleeper`).
            s.timers.sleeper.store(me, Ordering::Relaxed);
            // SeqCst: the store half of the sleeper's StoreLoad; pairs with the adders'
            // SeqCst `next_when` store + `sleep_until` load (time/mod.rs).
            s.timers
                .sleep_until
                .store(crate::time::REGISTERING, Ordering::SeqCst);
            let u = crate::time::earliest(s, true);
            if u == NO_TIMER || u <= crate::time::nanotime() {
                // Nothing to wait for after all, or already due: do not be the sleeper;
                // if due, leave the idle list and start over (to run it).
                unregister_sleeper(s);
                if u != NO_TIMER {
                    midle_remove(&mut sy, me);
                    drop(sy);
                    if !displaced.is_null() {
                        wake_without_p(s, displaced);
                    }
                    return false;
                }
            } else {
                // Relaxed: raising the deadline from REGISTERING under the lock; adders
                // compare again under the lock before waking us.
                s.timers.sleep_until.store(u, Ordering::Relaxed);
                deadline = u;
            }
        }
    }
    if !displaced.is_null() {
        wake_without_p(s, displaced);
    }
    // Goroutines readied by a blocking network poll: woken once we know whether we hold a P
    // (dropping it wakes them).
    let mut ready = crate::netpoll::Ready::new();
    let signalled = match crate::netpoll::block_idle(m, deadline, &mut ready) {
        Some(signalled) => signalled,
        None if deadline == NO_TIMER => {
            m.park.sleep();
            true
        }
        None => m.park.sleep_until(deadline),
    };
    if !signalled {
        // Timed out (or the poller returned). If we are still on the idle list, leave it
        // (and the sleeper role) and start over — with an idle P if the poller readied
        // goroutines. Otherwise whoever took us off the list is about to wake us: wait for it
        // (the note must be consumed before it is cleared again).
        let mut sy = s.lock();
        // Relaxed: under the lock.
        if s.timers.sleeper.load(Ordering::Relaxed) == me {
            unregister_sleeper(s);
        }
        if midle_remove(&mut sy, me) {
            let p = if ready.is_empty() {
                None
            } else {
                pidleget(s, &mut sy)
            };
            drop(sy);
            if let Some(p) = p {
                acquirep(m, p);
                crate::netpoll::wake_batch(s, &mut ready);
            }
            return p.is_some();
        }
        drop(sy);
        ready.wake_all();
        m.park.sleep();
    }
    // Relaxed: the note's Acquire in `sleep` ordered these after the waker's stores.
    let p = m.nextp.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if p.is_null() {
        return false;
    }
    // Relaxed (both): as above.
    let word = m.watch_word.swap(0, Ordering::Relaxed);
    if word != 0 {
        return watch(m, p, word, m.watch_due.load(Ordering::Relaxed));
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

/// The adder's half of the timer sleeper protocol (time/mod.rs): a timer became the earliest
/// of its heap at `when`. Wake the timer sleeper if it sleeps past `when`; with no sleeper,
/// `wakep` so that an M comes to watch the timers (Go's `wakeNetPoller`). Any thread.
pub(crate) fn timer_wake(s: &Sched, when: u64) {
    // SeqCst: the load half of the adder's StoreLoad (after its SeqCst `next_when` store).
    let until = s.timers.sleep_until.load(Ordering::SeqCst);
    if until == 0 {
        // Acquire: pairs with the store in shutdown; no new M once it began.
        if !s.shutting_down.load(Ordering::Acquire) {
            wakep(s);
        }
        return;
    }
    if when >= until {
        return;
    }
    let sleeper = {
        let mut sy = s.lock();
        // Relaxed (both): under the lock.
        let sl = s.timers.sleeper.load(Ordering::Relaxed);
        if sl.is_null() || s.timers.sleep_until.load(Ordering::Relaxed) <= when {
            return;
        }
        unregister_sleeper(s);
        // Whoever takes it off the idle list wakes it; if it is not there (shutdown drained
        // the list), its remover does.
        if !midle_remove(&mut sy, sl) {
            return;
        }
        sl
    };
    wake_without_p(s, sleeper);
}

#[cfg(test)]
mod tests {
    use super::{M, Pick, pick_idle};

    fn ms(n: usize) -> Vec<*mut M> {
        (1..=n).map(|i| (i * 64) as *mut M).collect()
    }

    /// Work goes to the most recently idled M that watches for nothing, however many
    /// watchers sit above it (the top two both watching was the lost-timer case).
    #[test]
    fn startm_passes_over_every_watcher() {
        let idle = ms(4);
        let (a, c, d) = (idle[0], idle[2], idle[3]);
        assert_eq!(pick_idle(&idle, |_| false, true), Pick::Idle(3));
        assert_eq!(pick_idle(&idle, |m| m == d, true), Pick::Idle(2));
        assert_eq!(pick_idle(&idle, |m| m == d || m == c, true), Pick::Idle(1));
        assert_eq!(pick_idle(&idle, |m| m != a, false), Pick::Idle(0));
        // Only watchers idle: a new M, or at the thread limit the top watcher.
        assert_eq!(
            pick_idle(&idle[2..], |m| m == c || m == d, true),
            Pick::Create
        );
        assert_eq!(
            pick_idle(&idle[2..], |m| m == c || m == d, false),
            Pick::Watcher
        );
        assert_eq!(pick_idle(&[], |_| false, true), Pick::Create);
        assert_eq!(pick_idle(&[], |_| false, false), Pick::Create);
    }
}
