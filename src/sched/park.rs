//! Parking and readying: the primitive every blocking operation builds on.
//!
//! * [`gopark`]: the running goroutine gives up its M (Go's `gopark`): it switches to g0,
//!   which marks it Waiting and then calls an "unlock" function; if that returns false, the G
//!   is resumed at once. Because the function runs after the G's registers are saved, a waker
//!   that synchronises with it can never ready a G that is still running.
//! * [`goready`]: Waiting -> Runnable (a CAS: exactly one waker wins), then onto the current
//!   P's `runnext` (the woken G inherits the waker's time slice, as in Go) and `wakep`; from a
//!   thread without a P, onto the global queue.
//! * [`Waiter`]: one blocked party — a goroutine, or a plain OS thread blocked on a futex — so
//!   the same primitive (channels, join, mutexes, timers) serves both, with an optional
//!   deadline.
//!
//! # The waiter word
//! Four states in one `u32`:
//!
//! | state      | meaning                                   | the party's stack frame   |
//! |------------|-------------------------------------------|---------------------------|
//! | `WAITING`  | registered with a primitive, still running | live                      |
//! | `PARKED`   | committed to sleep (G Waiting / thread in futex) | live until woken     |
//! | `NOTIFIED` | a notifier won                            | the party may return       |
//! | `TIMEDOUT` | the deadline won (timer or futex timeout) | the party may return      |
//!
//! Transitions, each one CAS: the party commits `WAITING -> PARKED` (fails if a winner is
//! already decided: it does not sleep); a notifier *claims* `WAITING|PARKED -> NOTIFIED`; the
//! deadline *expires* `WAITING|PARKED -> TIMEDOUT`. `NOTIFIED` and `TIMEDOUT` are final, so
//! **exactly one of {notifier, deadline} wins**, and the winner wakes the party iff it saw
//! `PARKED`: no wake-up is lost or doubled. A notifier that finds `TIMEDOUT` loses: `notify`
//! returns false and leaves the state alone (the party reads it to learn who won).
//!
//! # Timed waits: the API primitives build on
//! ```text
//! let w = Waiter::new();
//! /* enqueue &w on the primitive, under its lock */
//! if w.wait_deadline(Some(deadline)) {
//!     /* notified: the notifier dequeued w and handed over whatever it had to */
//! } else {
//!     /* timed out: lock the primitive; dequeue w if it is still queued; unlock */
//! }
//! ```
//! **The rule for notifiers of waiters that may time out**: dequeue the waiter and call
//! [`Waiter::notify`] (or [`Waiter::claim`]) *while holding the lock of the queue the waiter
//! was on*. If it returns false the waiter timed out and is gone: treat it as never queued
//! (hand the value to the next waiter, or keep it). Why under the lock: a timed-out waiter
//! returns (and its stack frame dies) right after it has taken that lock to dequeue itself;
//! holding the lock while touching the waiter is what keeps the frame alive. The wake-up
//! itself may happen after unlocking: [`Waiter::claim`] returns a [`Wakeup`] that touches only
//! the G (never freed while its runtime lives) or a futex address (a key, never dereferenced).
//! For waits without a deadline, claim can never fail, and `notify` may be called without a
//! lock as before (the party cannot leave before it is notified).
//!
//! Goroutine deadlines use a [`TimerNode`] on the waiting frame (no allocation): armed before
//! parking, cancelled synchronously after waking (`cancel_sync`), and its callback releases the
//! node before readying the G, so the frame outlives every access. Thread deadlines use
//! `FUTEX_WAIT_BITSET` with an absolute `CLOCK_MONOTONIC` timeout; on timeout the thread
//! expires its own word, losing to a notifier that got there first.

use crate::loom::{AtomicU32, Ordering};

pub(crate) const WAITING: u32 = 0;
pub(crate) const PARKED: u32 = 1;
pub(crate) const NOTIFIED: u32 = 2;
pub(crate) const TIMEDOUT: u32 = 3;

/// The party's commit: `WAITING -> PARKED`. False: a winner is already decided (the state
/// is `NOTIFIED` or `TIMEDOUT`): do not sleep.
#[inline]
pub(crate) fn word_commit(state: &AtomicU32) -> bool {
    // AcqRel: release the party's prior writes (for a goroutine: its Waiting status) to the
    // winner that will wake it; acquire on failure pairs with the winner's AcqRel CAS.
    state
        .compare_exchange(WAITING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

/// Move `WAITING|PARKED -> to` (a notifier's claim, `to = NOTIFIED`; a deadline's expiry,
/// `to = TIMEDOUT`). `Some(parked)`: won, and `parked` says the party sleeps and must be woken
/// by the caller. `None`: the other side already won.
#[inline]
pub(crate) fn word_resolve(state: &AtomicU32, to: u32) -> Option<bool> {
    // The common case for a notifier: the party is asleep.
    let mut cur = PARKED;
    loop {
        // AcqRel: release the winner's writes (the handed-over value) to the party; acquire
        // its commit.
        match state.compare_exchange(cur, to, Ordering::AcqRel, Ordering::Acquire) {
            Ok(prev) => return Some(prev == PARKED),
            Err(now @ (WAITING | PARKED)) => cur = now,
            Err(NOTIFIED) if to == NOTIFIED => crate::sched::fatal("a Waiter was notified twice"),
            Err(_) => return None,
        }
    }
}

#[cfg(not(loom))]
pub(crate) use imp::*;

#[cfg(not(loom))]
mod imp {
    use super::*;
    use crate::sched::g::{G, Status};
    use crate::sched::m::{Action, ParkFn, current_m};
    use crate::sched::{fatal_fmt, idle, schedule};
    use crate::time::heap::{Running, TimerNode};

    /// Park the running goroutine. `f(g, arg)` runs on g0 after the G's state is saved and its
    /// status is Waiting; returning false resumes the G immediately. Counted in the P's `parks`.
    ///
    /// # Safety
    /// Must be called from a goroutine. `arg` must stay valid until `f` has run (it runs before
    /// this call returns).
    pub(crate) unsafe fn gopark(f: ParkFn, arg: usize) {
        // The callback is set on the M by `mcall`, once the goroutine cannot move.
        let _ = schedule::mcall(Action::Park, Some((f, arg)));
    }

    /// Make a Waiting G runnable. Any thread.
    ///
    /// A G abandoned by its runtime's shutdown is left alone: the wake-up is discarded (its
    /// runtime may already be gone; only the G struct, which is never freed, is touched).
    ///
    /// # Safety
    /// `g` is a valid G, and the caller won the right to ready it (it observed the G parked
    /// through a protocol such as [`Waiter`]'s).
    pub(crate) unsafe fn goready(g: *mut G) {
        // SAFETY: forwarded.
        unsafe { goready_with(g, true) }
    }

    /// [`goready`]; a G queued on this M's P wakes a helper M (`wakep`) only if `helper`
    /// (`netpoll::wake_batch`: the M is about to run its P's queue itself).
    ///
    /// # Safety
    /// As [`goready`].
    #[inline(always)]
    unsafe fn goready_with(g: *mut G, helper: bool) {
        // SAFETY: the caller guarantees `g` is valid.
        let gr = unsafe { &*g };
        if !gr.cas_status(Status::Waiting, Status::Runnable) {
            if gr.status() == Status::Abandoned {
                return;
            }
            fatal_fmt(format_args!(
                "goready of goroutine {} in status {:?}",
                gr.id,
                gr.status()
            ));
        }
        // SAFETY: `gr.sched` points at the runtime the G belongs to, alive while it has Gs.
        let s = unsafe { &*gr.sched };
        // Our P's run queue is used below: a runtime section (preempt/mod.rs).
        let _section = crate::preempt::Section::enter();
        let m = current_m();
        if !m.is_null() {
            // SAFETY: this thread's own M.
            let mr = unsafe { &*m };
            let p = mr.p.get();
            if !p.is_null() && std::ptr::eq(&*mr.sched, s) {
                // Holding a P (g0, or a goroutine: checked, sysmon may have taken it).
                let pr = if mr.curg.get().is_null() {
                    // SAFETY: g0 holds `p`; sysmon never takes a P from g0 (it counts as
                    // `runtime_blocking`, see `schedule::execute`).
                    unsafe { &*p }
                } else {
                    crate::sched::syscall::current_p(mr).1
                };
                schedule::runqput(s, pr, g, true);
                if helper {
                    idle::wakep(s);
                }
                return;
            }
        }
        schedule::globrunqput(s, g);
        idle::wake_for_global(s);
    }

    /// One blocked party (see the module docs). Lives on the blocked party's stack; whoever
    /// holds a pointer to it may notify (or claim) it once.
    pub(crate) struct Waiter {
        state: AtomicU32,
        g: *mut G,
    }

    /// The wake-up half of a won claim (see [`Waiter::claim`]). Holds no reference to the
    /// waiter's frame.
    #[must_use = "the claimed waiter sleeps until this is woken"]
    pub(crate) struct Wakeup {
        /// Whether the party had committed to sleep (otherwise there is nothing to do).
        parked: bool,
        g: *mut G,
        word: *const AtomicU32,
    }

    impl Wakeup {
        /// Wake the claimed party. Any thread, any lock held or not.
        pub(crate) fn wake(self) {
            self.wake_with(true);
        }

        /// [`Wakeup::wake`]; a goroutine queued on this M's P wakes a helper M only if
        /// `helper` (see `goready_with`).
        #[inline]
        pub(crate) fn wake_with(self, helper: bool) {
            if !self.parked {
                return;
            }
            if self.g.is_null() {
                // SAFETY: futex_wake uses the address only as a key (see note.rs): harmless
                // even if the woken thread already returned.
                crate::sched::note::futex_wake(unsafe { &*self.word }, 1);
            } else {
                // SAFETY: PARKED means `commit_park` ran on g0: the G is Waiting, and the
                // claim made us its only waker.
                unsafe { goready_with(self.g, helper) };
            }
        }
    }

    impl Waiter {
        /// A waiter for the calling goroutine, or for the calling thread if it is not one.
        pub(crate) fn new() -> Waiter {
            Waiter {
                state: AtomicU32::new(WAITING),
                g: crate::sched::m::current_g(),
            }
        }

        /// Block until notified. Call at most once, and not on a waiter used with a deadline.
        pub(crate) fn wait(&self) {
            if self.g.is_null() {
                if !word_commit(&self.state) {
                    return;
                }
                // Acquire: pairs with the notifier's AcqRel claim, making its writes visible.
                while self.state.load(Ordering::Acquire) != NOTIFIED {
                    crate::sched::note::futex_wait(&self.state, PARKED, None);
                }
                return;
            }
            self.park();
        }

        /// Block until notified (true) or until `deadline` passes (false), whichever wins;
        /// `None` waits without a deadline. Call at most once. Never returns early: on
        /// false, the deadline has passed. See the module docs for what the caller must do
        /// after a timeout.
        pub(crate) fn wait_deadline(&self, deadline: Option<std::time::Instant>) -> bool {
            match deadline {
                None => {
                    self.wait();
                    true
                }
                Some(d) => self.wait_until_ns(crate::time::instant_to_nanos(d)),
            }
        }

        /// [`Self::wait_deadline`] with the deadline on `crate::time::nanotime`'s clock.
        pub(crate) fn wait_until_ns(&self, deadline: u64) -> bool {
            if crate::time::nanotime() >= deadline {
                // Already due (a zero timeout): expire at once, unless a notifier won.
                return word_resolve(&self.state, TIMEDOUT).is_none();
            }
            self.wait_until_ns_unchecked(deadline)
        }

        /// [`Self::wait_until_ns`] without the due check, for callers whose deadline is in
        /// the future by construction (`sleep`): a past deadline still works, at the cost of
        /// a park and an immediate timer run.
        pub(crate) fn wait_until_ns_unchecked(&self, deadline: u64) -> bool {
            if self.g.is_null() {
                return self.wait_thread_until(deadline);
            }
            let m = current_m();
            // SAFETY: a goroutine runs on an M, whose runtime is alive while it runs.
            let s = unsafe { &*(*m).sched };
            let node = TimerNode::new(waiter_expired, self as *const Waiter as usize);
            // SAFETY: `node` lives in this frame until `cancel_sync` below, which waits out
            // any callback; it is armed on our own runtime only.
            unsafe { node.arm(s, deadline, 0) };
            self.park();
            // Acquire: pairs with the winner's AcqRel CAS.
            let won = self.state.load(Ordering::Acquire) == NOTIFIED;
            // After a timeout the callback already released the node (before readying us);
            // after a notification it may be about to run and lose: wait it out.
            // SAFETY: armed on `s` above.
            unsafe { node.cancel_sync(s) };
            won
        }

        fn wait_thread_until(&self, deadline: u64) -> bool {
            if !word_commit(&self.state) {
                // Acquire (in the failed commit): the winner's writes are visible.
                return self.state.load(Ordering::Acquire) == NOTIFIED;
            }
            loop {
                // Acquire: pairs with the notifier's AcqRel claim.
                if self.state.load(Ordering::Acquire) == NOTIFIED {
                    return true;
                }
                let timed_out = crate::sched::note::futex_wait_until(&self.state, PARKED, deadline);
                if timed_out && crate::time::nanotime() >= deadline {
                    // Our own deadline expires us, unless a notifier got there first.
                    return word_resolve(&self.state, TIMEDOUT).is_none();
                }
            }
        }

        /// Park the calling goroutine until a winner readies it (or resume at once if one
        /// already won).
        fn park(&self) {
            // SAFETY: a goroutine; the waiter outlives the park (it is on our stack).
            unsafe { gopark(commit_park, self as *const Waiter as usize) };
        }

        /// Wake the party. Returns true if this call won (the party was waiting and will see
        /// itself notified), false if its deadline had already won (the party is gone or
        /// leaving: treat it as never queued). Any thread; at most once per waiter.
        ///
        /// # Safety
        /// `this` points to a live waiter that has not been notified yet. For a waiter that
        /// may time out: called under the lock of the queue it was dequeued from (module
        /// docs).
        pub(crate) unsafe fn notify(this: *const Waiter) -> bool {
            // SAFETY: forwarded contract.
            match unsafe { Self::claim(this) } {
                Some(w) => {
                    w.wake();
                    true
                }
                None => false,
            }
        }

        /// The first half of [`Self::notify`]: decide that this notifier wins the waiter, and
        /// return what it takes to wake it — call [`Wakeup::wake`] after releasing the
        /// primitive's lock. `None`: the deadline won (as `notify` returning false).
        ///
        /// # Safety
        /// As [`Self::notify`].
        pub(crate) unsafe fn claim(this: *const Waiter) -> Option<Wakeup> {
            // SAFETY: live per the contract; read what the wake needs before the CAS, after
            // which a party that had not parked may return and its frame disappear.
            let (g, word) = unsafe { ((*this).g, &(*this).state as *const AtomicU32) };
            // SAFETY: still live until the CAS completes.
            let parked = word_resolve(unsafe { &*word }, NOTIFIED)?;
            Some(Wakeup { parked, g, word })
        }
    }

    /// `gopark` callback: commit a goroutine `Waiter` to PARKED unless a winner is decided.
    unsafe fn commit_park(_g: *mut G, arg: usize) -> bool {
        // SAFETY: `arg` is the waiter on the parking goroutine's stack, alive while it is
        // parked.
        let w = unsafe { &*(arg as *const Waiter) };
        word_commit(&w.state)
    }

    /// Timer callback of a goroutine's deadline: expire the waiter unless a notifier won.
    unsafe fn waiter_expired(arg: usize, _seq: u64, _now: u64, done: Running) {
        let w = arg as *const Waiter;
        // SAFETY: the node is on the waiter's frame, which `cancel_sync` keeps alive until
        // `done` is dropped; read the G before the CAS.
        let (g, won) = unsafe { ((*w).g, word_resolve(&(*w).state, TIMEDOUT)) };
        // Last access to the frame: from here the goroutine may return from its wait.
        drop(done);
        if won == Some(true) {
            // SAFETY: we won the waiter while it was PARKED: the G is Waiting and ours to
            // ready.
            unsafe { goready(g) };
        }
    }
}

/// loom model of the waiter word: a deadline racing a notifier on one parked party, with the
/// timer node's release protocol. Run with `.ci/loom.sh park`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::sched::note::Note;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct World {
        state: AtomicU32,
        /// Stands in for the goroutine (goready) or the thread's futex.
        note: Note,
        wakes: AtomicU32,
        /// The timer node's `running` count (the runner raised it when it popped the node).
        running: AtomicU32,
        /// Stands in for the waiter's stack frame: the party "frees" it (writes) once it
        /// returns; any access by the timer not ordered before that is a loom-detected race.
        frame: UnsafeCell<u32>,
    }

    fn world() -> Arc<World> {
        Arc::new(World {
            state: AtomicU32::new(WAITING),
            note: Note::new(),
            wakes: AtomicU32::new(0),
            running: AtomicU32::new(1),
            frame: UnsafeCell::new(0),
        })
    }

    fn wake(w: &World) {
        // Relaxed: a counter checked after joins.
        w.wakes.fetch_add(1, Ordering::Relaxed);
        w.note.wake();
    }

    /// A goroutine parked with a deadline: the timer callback (`waiter_expired`) and a
    /// notifier race. Exactly one wins, the party wakes exactly once and learns who won, and
    /// the callback's accesses to the frame happen before the party returns.
    #[test]
    fn deadline_vs_notify_goroutine() {
        loom::model(|| {
            let w = world();
            let (wt, wn) = (w.clone(), w.clone());
            let timer = thread::spawn(move || {
                // The callback reads the waiter (its G) before resolving...
                wt.frame.with(|f| unsafe { *f });
                let won = word_resolve(&wt.state, TIMEDOUT);
                // ...releases the node (Running::drop)...
                wt.running.fetch_sub(1, Ordering::Release);
                // ...and readies the G only after that.
                if won == Some(true) {
                    wake(&wt);
                }
                won.is_some()
            });
            let notifier = thread::spawn(move || {
                let won = word_resolve(&wn.state, NOTIFIED);
                if won == Some(true) {
                    wake(&wn);
                }
                won.is_some()
            });
            // The party: commit, sleep unless a winner is decided, learn who won.
            if word_commit(&w.state) {
                w.note.sleep();
            }
            let st = w.state.load(Ordering::Acquire);
            // cancel_sync: wait until no callback runs, then the frame may die.
            while w.running.load(Ordering::Acquire) != 0 {
                thread::yield_now();
            }
            w.frame.with_mut(|f| unsafe { *f = 1 });
            let t = timer.join().unwrap();
            let n = notifier.join().unwrap();
            assert!(t != n, "exactly one of deadline and notifier wins");
            assert_eq!(st == NOTIFIED, n);
            assert_eq!(st == TIMEDOUT, t);
            assert!(w.wakes.load(Ordering::Relaxed) <= 1);
        });
    }

    /// A plain thread with a deadline: its futex timeout can come at any point after it
    /// committed, and it then expires its own word; a notifier races it.
    #[test]
    fn deadline_vs_notify_thread() {
        loom::model(|| {
            let w = world();
            let wn = w.clone();
            let notifier = thread::spawn(move || {
                let won = word_resolve(&wn.state, NOTIFIED);
                if won == Some(true) {
                    // futex_wake: the party may or may not still be in the kernel.
                    wn.wakes.fetch_add(1, Ordering::Relaxed);
                }
                won.is_some()
            });
            let committed = word_commit(&w.state);
            // The timeout fires now (the worst moment: right after committing).
            let timed_out = if committed {
                word_resolve(&w.state, TIMEDOUT).is_some()
            } else {
                w.state.load(Ordering::Acquire) == TIMEDOUT
            };
            let n = notifier.join().unwrap();
            assert!(timed_out != n, "exactly one of deadline and notifier wins");
        });
    }
}
