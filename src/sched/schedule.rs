//! The scheduler loop: find a runnable G, run it, deal with what it asked for; plus spawning,
//! the G free lists and the global queue.
//!
//! # The loop (per M, on g0)
//! ```text
//! schedule:  loop { g = find_runnable(); if spinning { reset_spinning } ; execute(g) }
//! execute:   switch g0 -> g ... g calls mcall(action): switch g -> g0 ... handle action
//! mcall:     next local G ready? switch g -> next directly; next runs post_switch (handles
//!            g's action); else switch g -> g0 as above
//! ```
//! `execute` hands the G the M pointer as the switch value and stores the G in `m.curg`;
//! `mcall` records the action in `m.action` and switches back. Only g0 changes a G's status
//! after it stopped running, so a G is never visible on a queue while its registers are still
//! live (the property Go gets from `mcall`).
//!
//! # find_runnable (Go's `findRunnable`, same order and constants)
//! 0. run this P's due timers (Go's `checkTimers`; one Relaxed load when it has none);
//! 1. every 61st scheduler tick, one G from the global queue (so a busy local queue cannot
//!    starve it);
//! 2. `runnext`, then the local ring;
//! 3. a batch from the global queue: `min(len, len/GOMAXPROCS + 1, 128)`;
//!    3b. the network poller, without blocking (`netpoll::poll_ready`; Go's order);
//! 4. if fewer than half the busy Ps are already spinning, spin: steal half of a random
//!    victim's ring (4 passes over all Ps in random order; `runnext` only on the last); then
//!    run every other P's due timers, and start over if any ran;
//! 5. under the lock, re-check the global queue, then give the P back (idle list);
//! 6. if we were spinning: stop spinning (SeqCst), then re-check every P's queue; if one has
//!    work, take an idle P back and start over;
//! 7. sleep on the M's note until `startm` hands over a P — or, as the timer sleeper, until
//!    the earliest timer (`idle::stopm_timed`; see `time/mod.rs`); with sockets registered,
//!    one idle M sleeps in `epoll_wait` instead (`netpoll/mod.rs`).

use crate::arch;
use crate::loom::Ordering;
use crate::sched::g::{G, GQueue, Status};
use crate::sched::idle::{self, acquirep, pidleput, releasep};
use crate::sched::m::{Action, M, ParkFn, current_m};
use crate::sched::p::{P, PCounters, PStatus};
use crate::sched::runq::RUNQ_SIZE;
use crate::sched::task::Task;
use crate::sched::{Sched, Synced, fatal, syscall};
use crate::stack::Stack;
use std::ptr::NonNull;
use std::sync::Arc;

/// Go's constant: check the global queue every 61 ticks.
const GLOBAL_CHECK_TICKS: u32 = 61;
/// Steal passes over all Ps (Go's `stealTries`).
const STEAL_TRIES: usize = 4;
/// Local G free list bounds (Go's `gfput`/`gfget`: 64 and batches of 32).
const LOCAL_FREE_MAX: usize = 64;
const FREE_BATCH: usize = 32;
/// Spawn back-pressure (see `spawn`): a goroutine that has this many goroutines waiting on
/// its P's queue after a spawn lets them run before it spawns more. It bounds how long a
/// goroutine readied meanwhile (a timer, a channel) waits behind freshly spawned ones: at
/// most this many first runs. Measured (100,000 sleepers at procs = 1, under `chrt -f 50`):
/// p99 oversleep 0.31–0.39 ms when only a full ring (256) pushed back, 0.11–0.14 ms at 64;
/// spawning got no slower (1M spawns: 1 P 160 -> 134–162 ns, 2 Ps 100–154 -> 84–86 ns).
const SPAWN_BURST: usize = 64;

/// The entry of a freshly started M: take the P it was handed, then schedule until shutdown.
pub(crate) fn mstart_loop(m: &M) {
    // Relaxed: published by the thread creation itself (pthread_create synchronises).
    let p = m.nextp.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if p.is_null() {
        fatal("M started without a P");
    }
    // On g0 (see `execute`) before the P is ours: `acquirep` can sleep in the kernel (seen:
    // `sched_setaffinity` returning into a SIGURG whose frame page-faults behind a contended
    // `mmap_lock`), and sysmon must not take the P for foreign blocking meanwhile — nothing
    // on the way to `find_runnable` checks ownership (that was "P3 status is Idle, expected
    // Running"; tests/sched.rs `new_ms_keep_their_p_from_sysmon`).
    // Relaxed: own-thread counter.
    m.rt_blocking.store(1, Ordering::Relaxed);
    acquirep(m, p);
    if m.wake_spinning.load(Ordering::Relaxed) {
        m.spinning.set(true);
    }
    schedule(m);
}

/// Leaving the loop at shutdown: signal the runtime that this M is gone.
pub(crate) fn mexit(m: &M) {
    let s = &*m.sched;
    let mut live = s.mlive.lock().unwrap_or_else(|e| e.into_inner());
    *live -= 1;
    s.mlive_cv.notify_all();
}

fn schedule(m: &M) {
    loop {
        if m.exit_thread.get() {
            syscall::exit_locked_thread(m);
            return;
        }
        let locked = m.lockedg.get();
        if !locked.is_null() {
            // Our locked goroutine stopped: sleep until someone dequeues it for us.
            if !syscall::stoplockedm(m) {
                return;
            }
            execute(m, locked, false);
            continue;
        }
        let Some((g, inherit)) = find_runnable(m) else {
            return;
        };
        if m.spinning.get() {
            idle::reset_spinning(m);
        }
        // SAFETY: dequeued by us, so ours; `lockedm` was written while it last ran.
        let lm = unsafe { (*g).lockedm };
        if !lm.is_null() && !std::ptr::eq(lm, m) {
            syscall::startlockedm(m, g);
            continue;
        }
        execute(m, g, inherit);
    }
}

/// Run `g` on this M until it gives the CPU back to g0, then deal with its request.
fn execute(m: &M, g: *mut G, mut inherit: bool) {
    let mut g = g;
    loop {
        let p = m.p.get();
        // SAFETY: we hold `p`; `g` was dequeued by us, so we own it (see g.rs).
        unsafe {
            if !inherit {
                (*p).bump_schedtick();
            }
            (*g).set_status(Status::Running);
        }
        m.curg.set(g);
        // SAFETY: g's context is valid (Runnable: saved by its last switch or by arch::init)
        // and g0's slot is ours; goroutines run (switching directly among themselves) until
        // one calls `mcall` with nothing local to switch to, which switches back here.
        // g0 counts as runtime code that may block with the P in hand (sysmon never retakes
        // a P from g0: `syscall::runtime_blocking`); goroutine code does not.
        // Relaxed: own-thread counter (see `M::rt_blocking`).
        m.rt_blocking
            .store(m.rt_blocking.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { arch::switch(m.g0.get(), &(*g).ctx, m as *const M as usize) };
        m.rt_blocking
            .store(m.rt_blocking.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // The goroutine that came back is not necessarily `g`: it is `curg`.
        let back = m.curg.replace(std::ptr::null_mut());
        if !m.lockedg.get().is_null() {
            // Before `finish` makes the locked G visible to others: `stoplockedm` sleeps on the
            // note, and whoever dequeues the G wakes it (startlockedm).
            m.park.clear();
        }
        match finish(m, back, m.action.replace(Action::None), true) {
            Some(again) => {
                // Not parked after all: resume it at once, same time slice.
                g = again;
                inherit = true;
            }
            None => return,
        }
    }
}

/// Carry out what goroutine `g` asked for when it stopped running (`action`), once its
/// registers are saved: on g0 after `mcall` came back (`on_g0`), or on the next goroutine's
/// stack right after a direct switch (`post_switch`). Returns a G to resume at once (a park
/// whose condition was already met) when on g0; off g0 that G goes to `runnext` instead.
#[inline]
fn finish(m: &M, g: *mut G, action: Action, on_g0: bool) -> Option<*mut G> {
    let s = &*m.sched;
    if action == Action::NoP {
        syscall::nop_finish(s, g);
        return None;
    }
    if action == Action::ExitNoP {
        // Counted with the counters no P owns. Relaxed: statistics.
        s.retired_counters.completed.fetch_add(1, Ordering::Relaxed);
        free_dead(g);
        gfput_global(s, g);
        return None;
    }
    if action == Action::ParkNoP {
        // On g0, without a P (`mcall`): the park function needs none (it commits the wait
        // or releases a channel lock). A G whose wait was already over goes to the global
        // queue, since this M has no P to run it on.
        if !park_g(m, g) {
            // Still ours: nobody readies a G whose park function said no.
            syscall::nop_finish(s, g);
        }
        return None;
    }
    // SAFETY: every other action comes from a goroutine whose M holds a P (`mcall` checked).
    let pr = unsafe { &*m.p.get() };
    match action {
        Action::Backoff => {
            // SAFETY: the G is stopped and ours until it is on the queue.
            unsafe { (*g).set_status(Status::Runnable) };
            requeue(s, pr, g);
            None
        }
        Action::Yield => {
            PCounters::bump(&pr.counters.yields);
            // SAFETY: the G is stopped and ours until it is on the queue.
            unsafe { (*g).set_status(Status::Runnable) };
            // To the back of the line. With nothing else queued locally, "the line" is the
            // global queue (Go's Gosched always uses it): otherwise a goroutine polling with
            // yield_now would be picked again at once, and the global queue would be served
            // only every 61st tick.
            // Relaxed: a hint; a stale read only changes which queue is used.
            if pr.runq.is_empty() && s.runqsize.load(Ordering::Relaxed) > 0 {
                requeue(s, pr, g);
            } else {
                runqput(s, pr, g, false);
            }
            None
        }
        Action::Park => {
            if park_g(m, g) {
                // The G may already be running elsewhere: do not touch it again.
                return None;
            }
            if on_g0 {
                return Some(g);
            }
            // Off g0 we cannot resume it here: it runs next instead.
            // SAFETY: still ours: nobody readies a G whose park function said no.
            unsafe { (*g).set_status(Status::Runnable) };
            runqput(s, pr, g, true);
            None
        }
        Action::Exit => {
            PCounters::bump(&pr.counters.completed);
            // SAFETY: the dead G is ours.
            if !unsafe { (*g).lockedm }.is_null() {
                syscall::locked_exit(m, g);
            }
            free_dead(g);
            gfput(s, pr, g);
            None
        }
        Action::None | Action::NoP | Action::ExitNoP | Action::ParkNoP => {
            fatal("goroutine stopped without an action")
        }
    }
}

/// `Park`'s and `ParkNoP`'s common part: mark the stopped G Waiting and run its park function
/// (`gopark`'s unlock function). True if it parked; false if its wait was already over (the G
/// is still ours then).
#[inline]
fn park_g(m: &M, g: *mut G) -> bool {
    // SAFETY: the G is stopped and ours; status Waiting must be visible before the park
    // function publishes the parking (set_status is a release store).
    unsafe { (*g).set_status(Status::Waiting) };
    let f = m.park_fn.take();
    let arg = m.park_arg.get();
    match f {
        // SAFETY: gopark's contract: `f` is valid for `(g, arg)`.
        Some(f) => unsafe { f(g, arg) },
        None => true,
    }
}

/// The next goroutine of this M's P, when it can be had without g0's help: `find_runnable`'s
/// local step, guarded by every condition under which `find_runnable` would do something
/// else first (shutdown, a retiring P, the 61st-tick global check, due timers).
#[inline]
fn next_local(m: &M) -> Option<(*mut G, bool)> {
    let s = &*m.sched;
    // SAFETY: a goroutine's M holds a P.
    let pr = unsafe { &*m.p.get() };
    // Relaxed: hints; whatever they miss, g0 sees at the next pass through find_runnable.
    if s.shutting_down.load(Ordering::Relaxed)
        || pr.id >= s.procs()
        || pr.timers.next_when() != crate::time::heap::NO_TIMER
    {
        return None;
    }
    // Relaxed: owner-written field of the P we hold.
    let tick = pr.schedtick.load(Ordering::Relaxed);
    if tick % GLOBAL_CHECK_TICKS == 0 && s.runqsize.load(Ordering::Relaxed) > 0 {
        return None;
    }
    let (g, inherit) = pr.runq.pop()?;
    // SAFETY: dequeued by us, so ours.
    let lm = unsafe { (*g.as_ptr()).lockedm };
    if !lm.is_null() && !std::ptr::eq(lm, m) {
        // Locked to another M: g0 hands our P over (`startlockedm`). Back where it was.
        runqput(s, pr, g.as_ptr(), true);
        return None;
    }
    PCounters::bump(if inherit {
        &pr.counters.runnext_hits
    } else {
        &pr.counters.local_hits
    });
    Some((g.as_ptr(), inherit))
}

/// Stop the running goroutine with `action` (yield, park, exit) and run the next one.
///
/// Fast path: when the P's own queue has the next goroutine, switch to it directly — one
/// switch instead of two through g0, and no pass through `find_runnable`. The stopped
/// goroutine is handed over in `m.prev`, and the goroutine that runs next calls
/// [`post_switch`] on its own stack to carry out `action` — only then, with the registers
/// saved, may the stopped G be put on a queue or parked (the property Go gets from `mcall`).
/// Otherwise switch to g0, which runs the full `find_runnable`.
///
/// Returns when the goroutine is resumed (possibly on another M).
///
/// The M is looked up here, after the goroutine's no-preempt count is raised, never taken
/// from the caller: a caller's M read while the goroutine was still preemptible may belong to
/// another thread by now (`Migrate` preemption). `park`: `gopark`'s callback and argument.
/// Returns false, doing nothing, off a goroutine (a plain thread, g0).
#[inline(never)]
pub(crate) fn mcall(action: Action, park: Option<(ParkFn, usize)>) -> bool {
    // No asynchronous preemption from here until we are resumed (preempt/mod.rs: a G that
    // is not running always has a non-zero count). Finding the M and raising the count is
    // one step for the handler, so the M is this thread's and stays so.
    let Some((m, g)) = crate::preempt::switch_enter() else {
        return false;
    };
    // The choke point: is the P still ours (sysmon may have taken it while we blocked)?
    // Getting it back may move us to another M. A finished goroutine needs none: it exits
    // without (`Action::ExitNoP`), and is never resumed. A parking one must not wait for one
    // (`Action::ParkNoP`): it parks first, and a P is found for it when it is readied.
    let m = if syscall::owns(m, m.p.get()) {
        m
    } else if action == Action::Exit && syscall::gone_without_p(m) {
        m.action.set(Action::ExitNoP);
        // SAFETY: `g` is the running goroutine of this M; g0's context was saved by `execute`.
        unsafe { arch::switch(&mut (*g).ctx, m.g0.get(), 0) };
        fatal("a goroutine resumed after it exited");
    } else if let Some((f, arg)) = park
        && syscall::gone_without_p(m)
    {
        // Parking without a P (`Action::ParkNoP`): the park function may release a lock that
        // whoever holds the P now is waiting for, so it must not wait for a P first.
        m.park_fn.set(Some(f));
        m.park_arg.set(arg);
        m.action.set(Action::ParkNoP);
        // SAFETY: as above. The value passed back on resumption is the resuming M.
        let resumed_on = unsafe { arch::switch(&mut (*g).ctx, m.g0.get(), 0) };
        resumed(resumed_on, g);
        return true;
    } else {
        syscall::regain_p(m)
    };
    if let Some((f, arg)) = park {
        m.park_fn.set(Some(f));
        m.park_arg.set(arg);
        // SAFETY: we hold the P (checked above).
        PCounters::bump(unsafe { &(*m.p.get()).counters.parks });
    }
    // A locked M runs nothing else: always through g0 (`stoplockedm`).
    let next = if m.lockedg.get().is_null() {
        next_local(m)
    } else {
        None
    };
    let resumed_on = match next {
        Some((next, inherit)) => {
            // SAFETY: we hold the P; `next` was dequeued by us, so it is ours.
            unsafe {
                if !inherit {
                    (*m.p.get()).bump_schedtick();
                }
                (*next).set_status(Status::Running);
            }
            // `finish` runs our action on `next`'s stack, protected by its count: a goroutine
            // that is not running always has a non-zero one (preempt/mod.rs).
            // SAFETY: `next` is ours (dequeued above) and stopped.
            debug_assert!(unsafe { (*next).nopreempt.load(Ordering::Relaxed) } != 0);
            m.prev.set(g);
            m.prev_action.set(action);
            m.curg.set(next);
            // SAFETY: `g` is the running goroutine; `next`'s context is valid (Runnable). The
            // value passed back on resumption is the resuming M.
            unsafe { arch::switch(&mut (*g).ctx, &(*next).ctx, m as *const M as usize) }
        }
        None => {
            m.action.set(action);
            // SAFETY: `g` is the running goroutine of this M; its ctx slot receives our
            // registers and g0's context was saved by `execute`.
            unsafe { arch::switch(&mut (*g).ctx, m.g0.get(), 0) }
        }
    };
    resumed(resumed_on, g);
    true
}

/// `mcall`'s goroutine `g`, resumed, maybe on another M: `resumed_on` is the switch value,
/// the M that resumed it (`mcall`'s `m` may be stale; nothing of it is used from here on).
/// Carries out the previous goroutine's action and lowers the count `mcall` raised.
#[inline(always)]
fn resumed(resumed_on: usize, g: *mut G) {
    // SAFETY: every switch into a goroutine passes the resuming M.
    post_switch(unsafe { &*(resumed_on as *const M) });
    // SAFETY: raised by `mcall`; `g` is this goroutine wherever it resumed.
    unsafe { crate::preempt::g_nopreempt_dec(g) };
}

/// Run right after a switch lands in a goroutine: if the previous goroutine switched here
/// directly, carry out its action now that its registers are saved (see [`mcall`]).
#[inline]
pub(crate) fn post_switch(m: &M) {
    let prev = m.prev.replace(std::ptr::null_mut());
    if !prev.is_null() {
        // `finish` uses this M's P after calls that may sleep in the kernel: a park callback
        // taking a contended lock, the allocator freeing a dead G's name. On g0 sysmon never
        // takes the P (`execute` marks g0 as runtime-blocking); here, on the next goroutine's
        // stack, its /proc detector would see a goroutine asleep in the kernel and take the P
        // — and `finish` would then queue on, or free Gs onto, a P another M holds. So the
        // same mark, for the length of `finish`. The goroutine's raised no-preempt count
        // (`mcall`) keeps it on this M meanwhile.
        m.runtime_blocking(|| finish(m, prev, m.prev_action.replace(Action::None), false));
    }
}

/// Mark a finished G dead and drop what it still names, before it goes on a free list.
fn free_dead(g: *mut G) {
    // SAFETY: the G finished and we are off its stack; its struct is ours.
    unsafe {
        (*g).set_status(Status::Dead);
        (*g).task_ptr = std::ptr::null::<crate::sched::task::NoTask>() as *const dyn Task;
        (*g).name = None;
    }
}

/// First code a goroutine runs (via the asm entry trampoline).
///
/// # Safety
/// Only called by `gort_goroutine_entry` with the G pointer given to `arch::init`.
pub(crate) unsafe extern "C" fn goroutine_entry(arg: usize) -> ! {
    // A fresh context gets no switch value: find our M through the thread.
    // SAFETY: a goroutine always runs on an M.
    post_switch(unsafe { &*current_m() });
    let g = arg as *mut G;
    // A fresh G starts with a no-preempt count of 1 (set at spawn): user code begins here.
    // SAFETY: `g` is this goroutine.
    unsafe { crate::preempt::g_nopreempt_dec(g) };
    // SAFETY: the G is Running on this M; its task field is ours.
    let task = unsafe { (*g).task.take() };
    if let Some(t) = task {
        t.run();
    }
    let _ = mcall(Action::Exit, None);
    fatal("a dead goroutine was resumed")
}

/// Yield the running goroutine (to the tail of the local queue).
pub(crate) fn gosched() -> bool {
    mcall(Action::Yield, None)
}

fn find_runnable(m: &M) -> Option<(*mut G, bool)> {
    let s = &*m.sched;
    crate::sched::pinning::follow(m);
    'top: loop {
        // Acquire: pairs with the store in shutdown.
        if s.shutting_down.load(Ordering::Acquire) {
            let p = m.p.get();
            if !p.is_null() {
                if m.spinning.get() {
                    idle::drop_spinning(m);
                }
                let p = releasep(m);
                // SAFETY: we held it.
                unsafe { &*p }.cas_status(PStatus::Running, PStatus::Idle);
            }
            return None;
        }
        let p = m.p.get();
        if p.is_null() {
            idle::stopm_timed(m);
            continue 'top;
        }
        // SAFETY: we hold `p`.
        let pr = unsafe { &*p };
        if pr.id >= s.procs() {
            retire_p(m, s);
            continue 'top;
        }

        // 0. Timers: the Gs they ready land on our queue.
        crate::time::check_timers(pr);

        // 1. Fairness: the global queue every 61 ticks — unless its first G is one this P
        // sent there whose turn has not come (`g::Requeue`).
        // Relaxed: owner-written field of the P we hold.
        let tick = pr.schedtick.load(Ordering::Relaxed);
        if tick % GLOBAL_CHECK_TICKS == 0 && s.runqsize.load(Ordering::Relaxed) > 0 {
            let g = {
                let mut sy = s.lock();
                let head = sy.runq.front();
                let rq = if head.is_null() {
                    crate::sched::g::Requeue::default()
                } else {
                    // SAFETY: a G on the global queue, whose lock we hold.
                    unsafe { (*head).requeue }
                };
                if rq.by == pr.id + 1 && tick.wrapping_sub(rq.tick) < rq.ahead {
                    None
                } else {
                    globrunqget(s, &mut sy, pr, 1)
                }
            };
            if let Some(g) = g {
                PCounters::bump(&pr.counters.global_hits);
                return Some((g, false));
            }
        }

        // 2. Local queue.
        if let Some((g, inherit)) = pr.runq.pop() {
            if inherit {
                PCounters::bump(&pr.counters.runnext_hits);
            } else {
                PCounters::bump(&pr.counters.local_hits);
            }
            return Some((g.as_ptr(), inherit));
        }

        // 3. Global queue. Relaxed: a hint, re-checked under the lock.
        if s.runqsize.load(Ordering::Relaxed) > 0 {
            let g = {
                let mut sy = s.lock();
                globrunqget(s, &mut sy, pr, 0)
            };
            if let Some(g) = g {
                PCounters::bump(&pr.counters.global_hits);
                return Some((g, false));
            }
        }

        // 3b. The network poller, without blocking (one Relaxed load without sockets).
        if crate::netpoll::poll_ready(s) {
            continue 'top;
        }

        // 4. Steal, if not too many Ms are spinning already.
        let procs = s.procs();
        // Relaxed: heuristic bound on spinners (Go's `2*nmspinning < procs-npidle`).
        let busy = procs.saturating_sub(s.npidle.load(Ordering::Relaxed));
        if m.spinning.get() || 2 * s.nmspinning.load(Ordering::Relaxed) < busy {
            if !m.spinning.get() {
                m.spinning.set(true);
                crate::sched::spin::start_spinning(&s.nmspinning);
            }
            if let Some(g) = steal_work(m, s, pr) {
                PCounters::bump(&pr.counters.steals);
                return Some((g, false));
            }
            if crate::time::steal_timers(s, pr) {
                continue 'top;
            }
        }

        // 5. Give the P up, re-checking the global queue under the lock.
        {
            let mut sy = s.lock();
            if !sy.runq.is_empty() {
                let g = globrunqget(s, &mut sy, pr, 0);
                drop(sy);
                if let Some(g) = g {
                    PCounters::bump(&pr.counters.global_hits);
                    return Some((g, false));
                }
                continue 'top;
            }
            gfpurge(s, pr);
            let p = releasep(m);
            pidleput(s, &mut sy, p);
        }

        // 6. Spinning -> not spinning, then look once more everywhere.
        if m.spinning.get() {
            idle::drop_spinning(m);
            let n = s.nprocs_created.load(Ordering::Acquire) as usize;
            for i in 0..n.min(procs as usize) {
                // SAFETY: Ps below nprocs_created are valid for the scheduler's lifetime.
                let p2 = unsafe { &*s.p(i) };
                if !p2.runq.is_empty() {
                    let pnew = {
                        let mut sy = s.lock();
                        idle::pidleget_for(s, &mut sy, s.p(i))
                    };
                    if let Some(pnew) = pnew {
                        acquirep(m, pnew);
                        m.spinning.set(true);
                        crate::sched::spin::start_spinning(&s.nmspinning);
                        continue 'top;
                    }
                    break;
                }
            }
        }

        // Last one out turns the lights off: give memory of cached stacks back — unless a
        // timer is due within SCAVENGE_TIMER_HORIZON (a gap between timers is not idleness:
        // the burst goes on and would fault the pages back in).
        // Relaxed: a heuristic.
        if s.npidle.load(Ordering::Relaxed) >= s.procs()
            && !crate::time::due_within(s, SCAVENGE_TIMER_HORIZON)
        {
            scavenge(s);
        }

        // 7. Sleep until handed a P, or until the earliest timer.
        idle::stopm_timed(m);
    }
}

/// This M's P was retired by a GOMAXPROCS decrease: move its work to the global queue and
/// mark it Dead. The M then looks for another P like any idle M.
fn retire_p(m: &M, s: &Sched) {
    if m.spinning.get() {
        idle::drop_spinning(m);
    }
    let p = releasep(m);
    // SAFETY: we held it.
    let pr = unsafe { &*p };
    let global_work = {
        let mut sy = s.lock();
        pr.runq.drain(|g| {
            // SAFETY: drained Gs are ours.
            unsafe { sy.runq.push_back(g.as_ptr()) };
        });
        s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
        gfpurge(s, pr);
        pr.cas_status(PStatus::Running, PStatus::Dead);
        // A P leaving Running looks at the global queue under the lock, as one going idle
        // does (`wake_for_global`'s premise): not only the Gs just moved there, but also
        // those this M queued there itself while it still held the P — a yield or backoff
        // with an empty local queue, a preempted goroutine — which no one was woken for,
        // since this M was going to run them. Without this, with every other P idle, such a
        // G waited forever on the global queue (GOMAXPROCS 8 → 1 under 100 µs quanta).
        !sy.runq.is_empty()
    };
    if global_work {
        idle::wake_for_global(s);
    }
    // Its timers go to P0 (never retired), as Go's `moveTimers`.
    if pr.timers.next_when() != crate::time::heap::NO_TIMER {
        // SAFETY: P0 exists while the runtime lives.
        let p0 = unsafe { &*s.p(0) };
        let first = pr.timers.move_all_to(&p0.timers);
        if first != crate::time::heap::NO_TIMER {
            crate::time::timer_earliest_changed(s, first);
        }
    }
}

/// Steal from a random victim: `STEAL_TRIES` passes over all Ps in a random order, taking
/// `runnext` only on the last pass.
fn steal_work(m: &M, s: &Sched, pr: &P) -> Option<*mut G> {
    let procs = (s.procs() as usize).min(s.nprocs_created.load(Ordering::Acquire) as usize);
    if procs <= 1 {
        return None;
    }
    for pass in 0..STEAL_TRIES {
        let steal_runnext = pass == STEAL_TRIES - 1;
        let start = m.fastrand() as usize % procs;
        // A stride coprime with `procs` visits every P once.
        let mut stride = 1 + m.fastrand() as usize % procs;
        while gcd(stride, procs) != 1 {
            stride += 1;
        }
        let mut i = start;
        for _ in 0..procs {
            // SAFETY: i < procs <= nprocs_created.
            let victim = unsafe { &*s.p(i) };
            i = (i + stride) % procs;
            if std::ptr::eq(victim, pr) || victim.status() != PStatus::Running {
                continue;
            }
            // Go's rule: before taking a running victim's `runnext`, wait ~3 µs — it is most
            // likely about to run it itself (a G it just readied), and stealing it would only
            // move the ping-pong pair apart.
            let delay = || {
                if victim.status() == PStatus::Running {
                    std::thread::sleep(std::time::Duration::from_micros(3));
                }
            };
            if let Some(g) = victim.runq.steal_into_with(&pr.runq, steal_runnext, delay) {
                return Some(g.as_ptr());
            }
        }
    }
    None
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Put `g` on P's local queue (`next`: into runnext). Overflow moves half the ring plus `g`
/// to the global queue in one splice. Holder of `p` only.
#[inline]
/// Returns whether the ring overflowed.
pub(crate) fn runqput(s: &Sched, p: &P, g: *mut G, next: bool) -> bool {
    #[cfg(debug_assertions)]
    check_holder(p);
    // SAFETY: G pointers are never null.
    let g = unsafe { NonNull::new_unchecked(g) };
    let mut spilled = false;
    p.runq.push(g, next, |batch| {
        spilled = true;
        PCounters::bump(&p.counters.spills);
        let mut sy = s.lock();
        for g in batch {
            // SAFETY: spilled Gs are ours until they are on the global queue.
            unsafe { sy.runq.push_back(g.as_ptr()) };
        }
        // Relaxed: a hint for lock-free peeks; the lock orders it for lock holders.
        s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
    });
    spilled
}

/// Debug builds: only `p`'s holder queues on it — this thread's M, with `p` as its P and the
/// P's status word the one it installed (or sysmon's `Retaking` mark of that word, which the
/// holder may still reclaim). A push from anywhere else is how an idle P comes to hold
/// goroutines (`idle::pidleget_for`); this names the pusher.
#[cfg(debug_assertions)]
fn check_holder(p: &P) {
    let me = current_m();
    if me.is_null() {
        crate::sched::fatal_fmt(format_args!(
            "P{} queued on from a thread that is not an M",
            p.id
        ));
    }
    // SAFETY: this thread's own M.
    let mr = unsafe { &*me };
    let w = p.word();
    let mine = mr.pword.get();
    let mark = crate::sched::p::next_word(mine, PStatus::Retaking);
    if !std::ptr::eq(mr.p.get(), p) || (w != mine && w != mark) {
        eprintln!(
            "gort: the push:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        crate::sched::fatal_fmt(format_args!(
            "P{} (word {w:#x}) queued on by M{} holding {:?} with word {mine:#x}",
            p.id,
            mr.id,
            mr.p.get()
        ));
    }
}

/// Send `g` (stopped, ours) from the P we hold to the back of the line: the global queue,
/// noting how many Gs wait ahead of it locally (`g::Requeue`).
fn requeue(s: &Sched, pr: &P, g: *mut G) {
    // SAFETY: the G is ours until it is on the queue. Relaxed: owner-written field.
    unsafe {
        (*g).requeue = crate::sched::g::Requeue {
            by: pr.id + 1,
            tick: pr.schedtick.load(Ordering::Relaxed),
            ahead: pr.runq.len() as u32,
        };
    }
    globrunqput(s, g);
}

/// Put `g` on the global queue. Any thread.
pub(crate) fn globrunqput(s: &Sched, g: *mut G) {
    let mut sy = s.lock();
    // SAFETY: the caller owns `g` (Runnable, on no queue).
    unsafe { sy.runq.push_back(g) };
    // Relaxed: see runqput.
    s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
}

/// Take a batch from the global queue: one G to run now, the rest into P's ring. Lock held.
fn globrunqget(s: &Sched, sy: &mut Synced, p: &P, max: usize) -> Option<*mut G> {
    let len = sy.runq.len();
    if len == 0 {
        return None;
    }
    let procs = s.procs().max(1) as usize;
    let mut n = len.min(len / procs + 1).min(RUNQ_SIZE / 2);
    if max > 0 {
        n = n.min(max);
    }
    let first = sy.runq.pop_front()?;
    // SAFETY: taken off the queue under its lock: ours now.
    unsafe { (*first).requeue = crate::sched::g::Requeue::default() };
    // On the stack, not in a `Vec`: the scheduler allocates nothing on its own paths (a
    // large enough malloc makes glibc consolidate every small chunk freed since — after a
    // burst of goroutine exits, a stall of milliseconds).
    let mut batch = [NonNull::<G>::dangling(); RUNQ_SIZE / 2];
    let mut k = 0;
    for _ in 1..n {
        match sy.runq.pop_front() {
            Some(g) => {
                // SAFETY: queue entries are non-null; taken off under the lock: ours.
                unsafe { (*g).requeue = crate::sched::g::Requeue::default() };
                // SAFETY: as above.
                batch[k] = unsafe { NonNull::new_unchecked(g) };
                k += 1;
            }
            None => break,
        }
    }
    // Relaxed: see runqput.
    s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
    if k > 0 {
        p.runq.push_batch(&batch[..k], |rest| {
            // Back to the front of the global queue, keeping their order.
            let mut back = [NonNull::<G>::dangling(); RUNQ_SIZE / 2];
            let mut n = 0;
            for g in rest {
                back[n] = g;
                n += 1;
            }
            for g in back[..n].iter().rev() {
                // SAFETY: returned to the global queue we hold the lock of.
                unsafe { sy.runq.push_front(g.as_ptr()) };
            }
        });
        s.runqsize.store(sy.runq.len() as u32, Ordering::Relaxed);
    }
    Some(first)
}

// ---------------------------------------------------------------------------------------------
// Spawning and the G free lists.

static GOID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Create a goroutine running `task` on `s`. Called from anywhere (a goroutine of `s`, of
/// another runtime, or a plain thread).
pub(crate) fn spawn(
    s: &Sched,
    task: Arc<dyn Task>,
    stack_size: usize,
    name: Option<Box<str>>,
) -> std::io::Result<u64> {
    // The local P's owner-only state is used below: a runtime section (preempt/mod.rs),
    // closed before the back-pressure switch.
    let section = crate::preempt::Section::enter();
    let m = current_m();
    let mut local: Option<&P> = None;
    if !m.is_null() {
        // SAFETY: this thread's M.
        let mr = unsafe { &*m };
        if !mr.curg.get().is_null() && std::ptr::eq(&*mr.sched, s) && mr.oldp.get().is_null() {
            // A goroutine of `s` (not inside `gort::syscall`): its P, checked.
            local = Some(syscall::current_p(mr).1);
        }
    }
    let g = match gfget(s, local, stack_size) {
        Some(g) => g,
        None => new_g(s, stack_size)?,
    };
    // Relaxed: ids only need to be unique.
    let id = GOID.fetch_add(1, Ordering::Relaxed);
    // SAFETY: `g` is Idle and ours (fresh or off a free list).
    unsafe {
        let gr = &mut *g;
        gr.id = id;
        gr.task_ptr = Arc::as_ptr(&task);
        gr.task = Some(task);
        gr.name = name;
        let top = gr.stack.as_ref().expect("G without a stack").top();
        arch::init(&mut gr.ctx, top, goroutine_entry, g as usize);
        // Relaxed: published with the status below.
        gr.nopreempt.store(1, Ordering::Relaxed);
        gr.set_status(Status::Runnable);
    }
    match local {
        Some(_) => {
            // Checked again: getting the G may have slept in the kernel without
            // `runtime_blocking` (malloc in `G::new`, the `allgs` lock, page faults on a fresh
            // stack), and sysmon's `/proc` detector takes the P of a thread asleep for a
            // quantum. Queueing on the P checked before would then queue on a P that another
            // M holds, or an idle one (found by the debug check in `runqput`: "P4 (word 0xb01)
            // queued on by M4 holding … with word 0x301", in 2 of 5 debug runs of the sched
            // suite under 100 µs quanta and two busy loops).
            // SAFETY: `local` is Some only in a goroutine of `s`, so `m` is this thread's M.
            let p = syscall::current_p(unsafe { &*current_m() }).1;
            PCounters::bump(&p.counters.spawned);
            let overflowed = runqput(s, p, g, true);
            idle::wakep(s);
            drop(section);
            if overflowed || p.runq.len() >= SPAWN_BURST {
                // Back-pressure: a goroutine spawning faster than anything runs has just
                // queued `SPAWN_BURST` goroutines on its P. Let the queue drain before spawning
                // more. Go gets the same effect from preempting the spawner every 10 ms;
                // without it, a spawn loop keeps every goroutine it made alive at once, each
                // with a freshly faulted stack page (1M goroutines: 1M page faults, 4 GiB).
                // The spawned goroutines' dead Gs are then reused warm. The spawner goes
                // to the back of the global queue, as a preempted goroutine does in Go.
                // SAFETY: `local` is Some only on an M holding a P, i.e. in a goroutine.
                let _ = mcall(Action::Backoff, None);
            }
        }
        None => {
            // Relaxed counter.
            s.spawned_outside.fetch_add(1, Ordering::Relaxed);
            globrunqput(s, g);
            idle::wake_for_global(s);
        }
    }
    Ok(id)
}

fn new_g(s: &Sched, stack_size: usize) -> std::io::Result<*mut G> {
    let stack = syscall::runtime_blocking(|| Stack::alloc(stack_size))?;
    let mut g = G::new(s);
    g.stack = Some(stack);
    let g = Box::into_raw(g);
    s.allgs.lock().unwrap_or_else(|e| e.into_inner()).push(g);
    Ok(g)
}

/// Take a dead G with a stack of `size` from P's free list, refilling it from the global list.
fn gfget(s: &Sched, p: Option<&P>, size: usize) -> Option<*mut G> {
    let g = match p {
        Some(p) => {
            // SAFETY: owner-only field of the P we hold.
            let lf = unsafe { &mut *p.gfree.get() };
            if lf.list.is_empty() {
                // A marked wait: losing the P while asleep on the lock would leave us filling
                // the free list of a P someone else holds.
                let mut gl = syscall::lock_marked(&s.gfree).unwrap_or_else(|e| e.into_inner());
                for _ in 0..FREE_BATCH {
                    match gl.pop() {
                        // SAFETY: free-list Gs are owned by the list's holder: now us.
                        Some(g) => unsafe { lf.list.push_back(g) },
                        None => break,
                    }
                }
                gl.taken += 1;
            }
            lf.list.pop_front()?
        }
        None => {
            let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
            gl.taken += 1;
            gl.pop()?
        }
    };
    // SAFETY: a free G is ours.
    let gr = unsafe { &mut *g };
    if gr.stack.as_ref().map(|st| st.size()) != Some(size) {
        // Wrong size (a Builder::stack_size spawn): swap the stack.
        gr.stack = None;
        match syscall::runtime_blocking(|| Stack::alloc(size)) {
            Ok(st) => gr.stack = Some(st),
            Err(_) => {
                // Put it back without a stack? Simpler: keep a default one next time.
                gr.stack = Stack::alloc(s.stack_size).ok();
                gfput_global(s, g);
                return None;
            }
        }
    }
    gr.set_status(Status::Idle);
    Some(g)
}

/// Put a dead G on P's free list; past 64, move a batch of 32 to the global list.
fn gfput(s: &Sched, p: &P, g: *mut G) {
    // SAFETY: owner-only field of the P we hold; `g` is dead and ours.
    let lf = unsafe { &mut *p.gfree.get() };
    // SAFETY: as above.
    unsafe { lf.list.push_front(g) };
    if lf.list.len() >= LOCAL_FREE_MAX {
        let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..FREE_BATCH {
            match lf.list.pop_front() {
                // SAFETY: moving ownership between free lists.
                Some(g) => unsafe { gl.warm.push_front(g) },
                None => break,
            }
        }
    }
}

fn gfput_global(s: &Sched, g: *mut G) {
    let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: `g` is dead and ours.
    unsafe { gl.warm.push_front(g) };
}

/// Move P's whole local free list to the global one (P going idle or retiring).
fn gfpurge(s: &Sched, p: &P) {
    // SAFETY: owner-only field; the caller still holds `p`.
    let lf = unsafe { &mut *p.gfree.get() };
    if lf.list.is_empty() {
        return;
    }
    let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
    while let Some(g) = lf.list.pop_front() {
        // SAFETY: moving ownership between free lists.
        unsafe { gl.warm.push_front(g) };
    }
}

/// Dead Gs (with their stacks) an idle runtime keeps cached, beyond the local lists: enough
/// for the next burst to start warm, few enough that a burst of a million goroutines does not
/// pin a million stack pages once it is over.
const GFREE_KEEP: usize = 1024;

/// How long cached dead Gs beyond `GFREE_KEEP` must stay unused before they are freed.
const GFREE_EXCESS_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The runtime went idle with more dead Gs cached than `GFREE_KEEP`: in `GFREE_EXCESS_AGE`,
/// if nobody took a cached G meanwhile (a burst that comes back soon finds them warm), free
/// the excess (a timer: an idle runtime sleeps until it, see `time/mod.rs`).
fn arm_excess_timer(s: &Sched) {
    let snapshot = {
        let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
        let keep = GFREE_KEEP + LOCAL_FREE_MAX * s.procs() as usize;
        if gl.excess_timer || gl.cold.len() + gl.warm.len() <= keep {
            return;
        }
        gl.excess_timer = true;
        gl.taken
    };
    let sp = s as *const Sched as usize;
    let when = crate::time::deadline_after(GFREE_EXCESS_AGE);
    crate::time::after_fn(
        when,
        Box::new(move || {
            // SAFETY: timers of a runtime are dropped, unrun, before the runtime itself.
            let s = unsafe { &*(sp as *const Sched) };
            let unused = {
                let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
                gl.excess_timer = false;
                gl.taken == snapshot
            };
            if unused {
                free_excess(s);
            }
        }),
    );
}

/// Free the cached dead Gs beyond `GFREE_KEEP` — their stacks go back to
/// the allocator whole (`MADV_DONTNEED` of every page) and slabs left empty are unmapped.
/// Coldest (already scavenged) first.
fn free_excess(s: &Sched) {
    let mut excess = GQueue::new();
    {
        let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
        let keep = GFREE_KEEP + LOCAL_FREE_MAX * s.procs() as usize;
        while gl.cold.len() + gl.warm.len() > keep {
            let g = match gl.cold.pop_front() {
                Some(g) => g,
                None => match gl.warm.pop_front() {
                    Some(g) => g,
                    None => break,
                },
            };
            // SAFETY: taking ownership off the free list.
            unsafe { excess.push_back(g) };
        }
    }
    if excess.is_empty() {
        return;
    }
    let mut freed = std::collections::HashSet::with_capacity(excess.len());
    while let Some(g) = excess.pop_front() {
        freed.insert(g as usize);
    }
    // Off the registry first (shutdown walks it), then free: the Gs are dead and ours.
    s.allgs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|&g| !freed.contains(&(g as usize)));
    for g in freed {
        // SAFETY: a dead G off every list and the registry: nothing refers to it any more.
        unsafe { drop(Box::from_raw(g as *mut G)) };
    }
    crate::stack::trim();
}

/// Scavenge batch: stacks released per lock round trip.
const SCAVENGE_BATCH: usize = 64;
/// No scavenging when a timer is due within this many ns: a batch costs ~0.1 ms, and a
/// shorter gap between timers is a busy runtime catching its breath, not an idle one.
const SCAVENGE_TIMER_HORIZON: u64 = 1_000_000;

/// The runtime is idle: return the memory of cached dead goroutines' stacks to the kernel
/// (`MADV_DONTNEED` below each stack's top page), so RSS shrinks back after a burst (Go's
/// background scavenger, done by the last M to go idle instead of a dedicated thread).
///
/// Works in batches and stops as soon as there is work again or a P becomes busy, so a burst
/// that follows finds its dead Gs on the warm list, or at worst waits for one batch.
fn scavenge(s: &Sched) {
    arm_excess_timer(s);
    loop {
        let mut batch = GQueue::new();
        {
            let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..SCAVENGE_BATCH {
                match gl.warm.pop_front() {
                    // SAFETY: taking ownership off the free list.
                    Some(g) => unsafe { batch.push_back(g) },
                    None => break,
                }
            }
        }
        if batch.is_empty() {
            return;
        }
        let mut done = GQueue::new();
        while let Some(g) = batch.pop_front() {
            // SAFETY: the batch's Gs are ours until we put them back.
            unsafe {
                if let Some(st) = (*g).stack.as_ref() {
                    st.release_memory();
                }
                done.push_back(g);
            }
        }
        {
            let mut gl = s.gfree.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(g) = done.pop_front() {
                // SAFETY: giving them back, as cold.
                unsafe { gl.cold.push_back(g) };
            }
        }
        // Relaxed: heuristics; stopping early only delays the scavenging.
        if s.runqsize.load(Ordering::Relaxed) > 0
            || s.npidle.load(Ordering::Relaxed) < s.procs()
            || crate::time::due_within(s, 0)
        {
            return;
        }
    }
}

/// Snapshot of every P's counters plus the retired ones.
pub(crate) fn sum_counters(s: &Sched) -> [u64; 11] {
    let mut t = [0u64; 11];
    let n = s.nprocs_created.load(Ordering::Acquire) as usize;
    let add = |t: &mut [u64; 11], c: &PCounters| {
        // Relaxed: statistics.
        let v = [
            &c.spawned,
            &c.completed,
            &c.local_hits,
            &c.runnext_hits,
            &c.global_hits,
            &c.steals,
            &c.yields,
            &c.parks,
            &c.spills,
            &c.timers_run,
            &c.syscalls,
        ];
        for (i, a) in v.iter().enumerate() {
            t[i] += a.load(Ordering::Relaxed);
        }
    };
    for i in 0..n {
        // SAFETY: created Ps live as long as the scheduler.
        add(&mut t, unsafe { &(*s.p(i)).counters });
    }
    add(&mut t, &s.retired_counters);
    t
}

/// Goroutines in the local run queues of the active Ps (racy snapshot).
pub(crate) fn local_queued(s: &Sched) -> usize {
    let n = (s.nprocs_created.load(Ordering::Acquire) as usize).min(s.procs() as usize);
    // SAFETY: created Ps live as long as the scheduler.
    (0..n).map(|i| unsafe { &*s.p(i) }.runq.len()).sum()
}

/// Number of live goroutines (spawned, not yet finished).
pub(crate) fn live_goroutines(s: &Sched) -> usize {
    let t = sum_counters(s);
    // Relaxed counter.
    let spawned = t[0] + s.spawned_outside.load(Ordering::Relaxed);
    spawned.saturating_sub(t[1]) as usize
}

#[cfg(test)]
mod tests {
    use crate::sched::m::Action;
    use crate::{Preempt, Runtime};
    use std::sync::{Arc, Mutex};

    /// Goroutines that each go to the back of the line (`Backoff`, as a preempted goroutine
    /// does) take turns in strict rotation at 1 P: never two turns in a row, every four
    /// consecutive turns four goroutines. Deterministic: no signals, no clock. Go's rule took
    /// the global queue's first G every 61st tick — here the one just sent there, while the
    /// others waited locally — so it ran twice in a row (`g::Requeue`).
    #[test]
    fn backoff_turns_rotate_through_the_61st_tick() {
        const GS: usize = 4;
        const TURNS: usize = 250; // each: 1,000 in all, 16 61st ticks
        let rt = Runtime::builder()
            .procs(1)
            .preempt(Preempt::Off)
            .build()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::with_capacity(GS * TURNS)));
        let l = log.clone();
        rt.block_on(move || {
            let hs: Vec<_> = (0..GS)
                .map(|me| {
                    let l = l.clone();
                    crate::go(move || {
                        for _ in 0..TURNS {
                            l.lock().unwrap().push(me);
                            let _ = crate::sched::schedule::mcall(Action::Backoff, None);
                        }
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        });
        rt.shutdown();
        let log = log.lock().unwrap();
        assert_eq!(log.len(), GS * TURNS);
        for (i, w) in log.windows(GS).enumerate() {
            let mut seen = [false; GS];
            for &t in w {
                seen[t] = true;
            }
            assert!(
                seen.iter().all(|&x| x),
                "turns {i}..{}: {w:?} (a goroutine took another's turn)",
                i + GS
            );
        }
    }
}
