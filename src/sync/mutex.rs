//! `Mutex<T>`: Go's `sync.Mutex` algorithm (spinning, normal and starvation modes) behind a
//! std-shaped RAII API; [`RawMutex`] is the algorithm alone (also used by `RwLock` and `Once`).
//!
//! # The state word
//! ```text
//!   bit 0  LOCKED    the mutex is held (in starvation mode a hand-off leaves it clear: the
//!                    waiter being handed the mutex sets it, and STARVING keeps others out)
//!   bit 1  WOKEN     a waiter is awake (woken, or spinning with waiters queued) and will
//!                    compete: unlock need not wake another
//!   bit 2  STARVING  starvation mode: unlock hands off to the head waiter, nobody barges
//!   3..32  waiters   parties counted as queued on (or about to queue on) the semaphore
//! ```
//! Transitions are CASes, except unlock's `fetch_sub(LOCKED)` and the hand-off fix-up's
//! `fetch_add` (both on states no other party may change the same bits of). See the module
//! docs of `sync` for the modes, and Go's `sync/mutex.go`, which this follows step by step.
//!
//! # Invariants
//! * `waiters` counts every party that committed (by CAS) to sleep on the semaphore and was not
//!   yet released by an unlock; an unlock that wakes one decrements it (normal mode) or the
//!   woken owner does (starvation mode).
//! * At most one party holds `WOKEN` (the unlock that sets it, or the spinner that sets it,
//!   hands it to exactly one party that clears it in its next CAS).
//! * `STARVING` is only ever set while the mutex is `LOCKED`, by a CAS that also counts its
//!   setter as a waiter, and cleared only by a handed-off owner; so an unlock that sees
//!   `STARVING` always has a counted waiter to hand to (queued on the semaphore, or about to
//!   queue and find the token the release stored).

use super::plat;
use super::sema::Sema;
use crate::loom::{AtomicU32, Ordering};

const LOCKED: u32 = 1;
const WOKEN: u32 = 2;
const STARVING: u32 = 4;
const WAITER_SHIFT: u32 = 3;
const WAITER: u32 = 1 << WAITER_SHIFT;

/// A waiter that waited longer than this switches the mutex to starvation mode (Go's
/// `starvationThresholdNs`).
pub(crate) const STARVATION_THRESHOLD_NS: u64 = 1_000_000;

/// Go's mutex: one state word and a semaphore. Not tied to a goroutine or a thread: any party
/// may unlock a mutex another party locked (as Go allows).
pub(crate) struct RawMutex {
    state: AtomicU32,
    sema: Sema,
}

impl RawMutex {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            sema: Sema::new(),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RawMutex {
        RawMutex {
            state: AtomicU32::new(0),
            sema: Sema::new(),
        }
    }

    /// Lock: one CAS when free; otherwise [`Self::lock_slow`].
    #[inline]
    pub(crate) fn lock(&self) {
        // Acquire: pairs with the Release in `unlock`: the previous holder's writes are
        // visible to us.
        if self
            .state
            .compare_exchange(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    /// Lock if that needs no waiting (Go's `TryLock`). Fails in starvation mode even if the
    /// mutex is momentarily free: it belongs to the head waiter.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        // Relaxed: only a guess; the CAS below decides.
        let old = self.state.load(Ordering::Relaxed);
        if old & (LOCKED | STARVING) != 0 {
            return false;
        }
        // A woken waiter may be about to compete; we are running, so we may take it first.
        // Acquire: as in `lock`.
        self.state
            .compare_exchange(old, old | LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Whether the mutex is held right now (a racy snapshot, for `Debug` and tests).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn is_locked(&self) -> bool {
        // Relaxed: a snapshot.
        let s = self.state.load(Ordering::Relaxed);
        s & LOCKED != 0 || s & STARVING != 0
    }

    /// Whether the mutex is in starvation mode (a racy snapshot, for tests).
    #[allow(dead_code)]
    pub(crate) fn is_starving(&self) -> bool {
        // Relaxed: a snapshot.
        self.state.load(Ordering::Relaxed) & STARVING != 0
    }

    /// Parties parked on the semaphore (a snapshot, for tests).
    #[allow(dead_code)]
    pub(crate) fn parked(&self) -> usize {
        self.sema.waiters()
    }

    #[cold]
    fn lock_slow(&self) {
        // When we first queued (0: not yet), on `plat::nanotime`'s clock.
        let mut wait_start: u64 = 0;
        // We waited more than the threshold: ask for starvation mode.
        let mut starving = false;
        // We hold WOKEN (set by the unlock that woke us, or by ourselves while spinning).
        let mut awoke = false;
        let mut iter = 0;
        // Relaxed: a first guess for the CAS loop.
        let mut old = self.state.load(Ordering::Relaxed);
        loop {
            // Spin only in normal mode while the mutex is held: in starvation mode it goes
            // to the head waiter anyway.
            if old & (LOCKED | STARVING) == LOCKED && plat::can_spin(iter) {
                // Set WOKEN so that unlock does not wake a sleeper we are going to beat.
                if !awoke
                    && old & WOKEN == 0
                    && old >> WAITER_SHIFT != 0
                    // Relaxed: WOKEN is a hint between lockers and unlockers; no data is
                    // published through it.
                    && self
                        .state
                        .compare_exchange(old, old | WOKEN, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                {
                    awoke = true;
                }
                plat::do_spin();
                iter += 1;
                // Relaxed: re-read for the loop.
                old = self.state.load(Ordering::Relaxed);
                continue;
            }
            let mut new = old;
            // A starving mutex is handed off: newcomers must queue, not take it.
            if old & STARVING == 0 {
                new |= LOCKED;
            }
            if old & (LOCKED | STARVING) != 0 {
                new += WAITER;
            }
            // Switch to starvation mode, but only while the mutex is held: unlock expects a
            // starving mutex to have waiters, which would not hold if we took it now.
            if starving && old & LOCKED != 0 {
                new |= STARVING;
            }
            if awoke {
                // We were woken (or marked ourselves woken): give the flag back either way.
                if new & WOKEN == 0 {
                    crate::sched::fatal("sync: inconsistent mutex state (woken flag lost)");
                }
                new &= !WOKEN;
            }
            // Acquire: when this CAS takes the mutex (old had neither LOCKED nor STARVING),
            // pairs with the Release of the unlock that freed it.
            match self
                .state
                .compare_exchange(old, new, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => {
                    if old & (LOCKED | STARVING) == 0 {
                        return; // locked with the CAS
                    }
                    // Queued again after a wake-up: at the front, to keep our place.
                    let lifo = wait_start != 0;
                    if wait_start == 0 {
                        wait_start = plat::nanotime();
                    }
                    self.sema.acquire(lifo);
                    starving = starving
                        || plat::nanotime().wrapping_sub(wait_start) > STARVATION_THRESHOLD_NS;
                    // Relaxed: the semaphore's lock already ordered the releaser's writes
                    // before ours; this read only decides what to do next.
                    old = self.state.load(Ordering::Relaxed);
                    if old & STARVING != 0 {
                        // Handed off: the mutex is ours, but LOCKED is still clear and we are
                        // still counted as a waiter. Fix both in one add.
                        if old & (LOCKED | WOKEN) != 0 || old >> WAITER_SHIFT == 0 {
                            crate::sched::fatal("sync: inconsistent mutex state (hand-off)");
                        }
                        let mut delta = LOCKED.wrapping_sub(WAITER);
                        if !starving || old >> WAITER_SHIFT == 1 {
                            // Leave starvation mode: we did not wait long, or nobody is left
                            // behind us. Critical to decide here, with our own wait time:
                            // starvation mode is so slow that two goroutines could otherwise
                            // stay in lock-step in it forever.
                            delta = delta.wrapping_sub(STARVING);
                        }
                        // Acquire: pairs with the Release `fetch_sub` of the unlock that
                        // handed us the mutex (already ordered through the semaphore too).
                        self.state.fetch_add(delta, Ordering::Acquire);
                        return;
                    }
                    awoke = true;
                    iter = 0;
                }
                Err(cur) => old = cur,
            }
        }
    }

    /// Unlock: one atomic subtract; [`Self::unlock_slow`] if there are waiters or it starves.
    ///
    /// # Safety
    /// The mutex is locked (by anyone: the caller takes over that party's ownership).
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // Release: pairs with the Acquire CAS (or hand-off add) of the next owner.
        let new = self
            .state
            .fetch_sub(LOCKED, Ordering::Release)
            .wrapping_sub(LOCKED);
        if new != 0 {
            self.unlock_slow(new);
        }
    }

    /// Unlock if locked; false (nothing done) if it is not (the C API's `-EPERM`, where Go
    /// aborts). Racy only against a concurrent second unlock, which is a bug either way.
    #[cfg(not(loom))]
    pub(crate) fn try_unlock(&self) -> bool {
        // Relaxed: a check for misuse; a held mutex has LOCKED set (a hand-off in starvation
        // mode leaves it clear only until the new owner, who then holds it, sets it).
        if self.state.load(Ordering::Relaxed) & LOCKED == 0 {
            return false;
        }
        // SAFETY: the mutex is locked, and the caller unlocks on behalf of its holder (any
        // party may unlock a Go mutex).
        unsafe { self.unlock() };
        true
    }

    #[cold]
    fn unlock_slow(&self, new: u32) {
        if new.wrapping_add(LOCKED) & LOCKED == 0 {
            crate::sched::fatal("sync: unlock of unlocked mutex");
        }
        if new & STARVING != 0 {
            // Starvation mode: hand the mutex to the head waiter. LOCKED stays clear (the
            // waiter sets it), but STARVING keeps newcomers out meanwhile.
            if self.sema.release() {
                plat::yield_to_woken();
            }
            return;
        }
        let mut old = new;
        loop {
            // Nobody to wake, or someone is already awake, or the mutex was taken again, or
            // it went into starvation mode after our subtract (then it is not ours to wake
            // for: the hand-off chain does not include us).
            if old >> WAITER_SHIFT == 0 || old & (LOCKED | WOKEN | STARVING) != 0 {
                return;
            }
            // Take the right to wake one waiter.
            let new = (old - WAITER) | WOKEN;
            // Relaxed: no data is published through this CAS; the wake-up goes through the
            // semaphore's lock.
            match self
                .state
                .compare_exchange(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    self.sema.release();
                    return;
                }
                Err(cur) => old = cur,
            }
        }
    }
}

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use super::RawMutex;
    use std::cell::UnsafeCell;
    use std::fmt;
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};

    /// A mutual-exclusion lock that parks goroutines (Go's `sync.Mutex`, std's shape).
    ///
    /// A goroutine that finds the mutex locked spins briefly and then parks, freeing its
    /// thread for other goroutines; a plain OS thread blocks. Both may share one mutex.
    /// Uncontended `lock` and unlock cost one atomic instruction each.
    ///
    /// **Fairness** (Go's): normally a released mutex goes to whoever grabs it first, which
    /// favours running goroutines; but a waiter that has waited more than 1 ms puts the mutex
    /// in *starvation mode*, where it is handed to waiters in FIFO order until the queue
    /// drains. No waiter starves.
    ///
    /// **No poisoning** (as Go): `lock` returns the guard itself. If a holder panics, its
    /// guard unlocks the mutex during unwinding and the data stays as it was left.
    ///
    /// The mutex is not reentrant: locking it again from its holder deadlocks (as in Go).
    ///
    /// ```
    /// use std::sync::Arc;
    /// let total = gort::run(|| {
    ///     let m = Arc::new(gort::sync::Mutex::new(0u64));
    ///     let hs: Vec<_> = (0..8)
    ///         .map(|_| {
    ///             let m = m.clone();
    ///             gort::go(move || {
    ///                 for _ in 0..1000 {
    ///                     *m.lock() += 1;
    ///                 }
    ///             })
    ///         })
    ///         .collect();
    ///     hs.into_iter().for_each(|h| h.join().unwrap());
    ///     *m.lock()
    /// });
    /// assert_eq!(total, 8000);
    /// ```
    pub struct Mutex<T: ?Sized> {
        pub(crate) raw: RawMutex,
        data: UnsafeCell<T>,
    }

    // SAFETY: the mutex hands `&mut T` to one party at a time, possibly on another thread:
    // T must be Send, nothing more (as std's Mutex).
    unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
    // SAFETY: as above.
    unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

    /// Access to a locked [`Mutex`]'s data; unlocks when dropped.
    ///
    /// Unlike std's guard, this one may be sent to another thread (when `T: Send`): the mutex
    /// is not tied to a thread, and a goroutine holding it may migrate anyway.
    #[must_use = "if unused the Mutex will immediately unlock"]
    pub struct MutexGuard<'a, T: ?Sized> {
        pub(crate) lock: &'a Mutex<T>,
        /// Send iff T: Send, Sync iff T: Sync (as `&mut T`).
        _marker: PhantomData<&'a mut T>,
    }

    impl<T> Mutex<T> {
        /// An unlocked mutex holding `value`.
        pub const fn new(value: T) -> Mutex<T> {
            Mutex {
                raw: RawMutex::new(),
                data: UnsafeCell::new(value),
            }
        }

        /// The data, consuming the mutex.
        pub fn into_inner(self) -> T {
            self.data.into_inner()
        }
    }

    impl<T: ?Sized> Mutex<T> {
        /// Lock, parking the calling goroutine (blocking the calling thread) until the mutex
        /// is free.
        #[inline]
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.raw.lock();
            MutexGuard {
                lock: self,
                _marker: PhantomData,
            }
        }

        /// Lock if it is free now; never waits. In starvation mode this fails even if the
        /// mutex is momentarily free (it belongs to the waiter at the head of the queue).
        #[inline]
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            if self.raw.try_lock() {
                Some(MutexGuard {
                    lock: self,
                    _marker: PhantomData,
                })
            } else {
                None
            }
        }

        /// Whether the mutex is locked right now (a snapshot that may be stale at once).
        pub fn is_locked(&self) -> bool {
            self.raw.is_locked()
        }

        /// The data, through exclusive access to the mutex (no locking needed).
        pub fn get_mut(&mut self) -> &mut T {
            self.data.get_mut()
        }

        /// Test hook, not a stable API: goroutines and threads parked waiting for the mutex
        /// (a snapshot).
        #[doc(hidden)]
        pub fn __parked(&self) -> usize {
            self.raw.parked()
        }

        /// Test hook, not a stable API: whether the mutex is in starvation mode (a snapshot).
        #[doc(hidden)]
        pub fn __starving(&self) -> bool {
            self.raw.is_starving()
        }
    }

    impl<T: Default> Default for Mutex<T> {
        fn default() -> Mutex<T> {
            Mutex::new(T::default())
        }
    }

    impl<T> From<T> for Mutex<T> {
        fn from(value: T) -> Mutex<T> {
            Mutex::new(value)
        }
    }

    impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut d = f.debug_struct("Mutex");
            match self.try_lock() {
                Some(g) => d.field("data", &&*g),
                None => d.field("data", &format_args!("<locked>")),
            };
            d.finish_non_exhaustive()
        }
    }

    impl<'a, T: ?Sized> MutexGuard<'a, T> {
        /// Unlock without dropping the guard's borrow of the mutex (for `Condvar`).
        pub(crate) fn into_mutex(self) -> &'a Mutex<T> {
            let m = self.lock;
            std::mem::forget(self);
            // SAFETY: the guard proved the mutex locked, and we consumed it.
            unsafe { m.raw.unlock() };
            m
        }
    }

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the guard holds the lock: no `&mut` to the data exists elsewhere.
            unsafe { &*self.lock.data.get() }
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: the guard holds the lock, and `&mut self` makes this access unique.
            unsafe { &mut *self.lock.data.get() }
        }
    }

    impl<T: ?Sized> Drop for MutexGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: the guard proves the mutex is locked, by us.
            unsafe { self.lock.raw.unlock() };
        }
    }

    impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&**self, f)
        }
    }

    impl<T: ?Sized + fmt::Display> fmt::Display for MutexGuard<'_, T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Display::fmt(&**self, f)
        }
    }
}

/// loom models of the mutex: the real state machine and semaphore (queue lock, intrusive
/// list, waiter word), with the model waiter and clock of the loom build. Run with
/// `.ci/loom.sh mutex`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct World {
        m: RawMutex,
        /// Guarded by `m`: loom reports any two accesses not ordered by it.
        counter: UnsafeCell<u32>,
    }

    fn world() -> Arc<World> {
        Arc::new(World {
            m: RawMutex::new(),
            counter: UnsafeCell::new(0),
        })
    }

    fn critical(w: &World) {
        w.m.lock();
        w.counter.with_mut(|c| unsafe { *c += 1 });
        // SAFETY: locked just above.
        unsafe { w.m.unlock() };
    }

    fn run(threads: usize, rounds: usize, clock_step: u64, bound: usize) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(bound);
        b.check(move || {
            plat::reset_clock(clock_step);
            let w = world();
            let hs: Vec<_> = (1..threads)
                .map(|_| {
                    let w = w.clone();
                    thread::spawn(move || {
                        for _ in 0..rounds {
                            critical(&w);
                        }
                    })
                })
                .collect();
            for _ in 0..rounds {
                critical(&w);
            }
            for h in hs {
                h.join().unwrap();
            }
            // Every increment happened, under mutual exclusion, and nobody is left queued:
            // a lost wake-up would have left a thread asleep (loom reports a deadlock).
            assert_eq!(w.counter.with(|c| unsafe { *c }), (threads * rounds) as u32);
            // Relaxed: every party was joined.
            assert_eq!(w.m.state.load(Ordering::Relaxed), 0, "mutex left dirty");
            assert_eq!(w.m.sema.waiters(), 0);
        });
    }

    /// Normal mode (the clock never advances: nobody ever waits 1 ms): mutual exclusion and
    /// no lost wake-up between unlock's WOKEN/waiter-count protocol and the semaphore.
    #[test]
    fn mutex_normal_mode() {
        run(2, 2, 0, 3);
    }

    /// Three parties in normal mode: a woken waiter competing with a barging newcomer.
    #[test]
    fn mutex_normal_mode_three() {
        run(3, 1, 0, 2);
    }

    /// Starvation mode (every clock reading advances 2 ms, so any party that sleeps once
    /// starves): hand-off through the semaphore, newcomers queueing behind, and leaving the
    /// mode; mutual exclusion and a clean final state (no STARVING bit left behind).
    #[test]
    fn mutex_starvation_mode() {
        run(2, 2, 2 * STARVATION_THRESHOLD_NS, 3);
    }

    /// Three parties with starvation: hand-off to the head while a third party arrives.
    #[test]
    fn mutex_starvation_mode_three() {
        run(3, 1, 2 * STARVATION_THRESHOLD_NS, 2);
    }

    /// `try_lock` against a locker and in starvation mode (where it must fail even if the
    /// mutex is momentarily free: the head waiter owns it).
    #[test]
    fn mutex_try_lock() {
        for step in [0, 2 * STARVATION_THRESHOLD_NS] {
            let mut b = loom::model::Builder::new();
            b.preemption_bound = Some(3);
            b.check(move || {
                plat::reset_clock(step);
                let w = world();
                let w1 = w.clone();
                let t = thread::spawn(move || {
                    critical(&w1);
                    critical(&w1);
                });
                if w.m.try_lock() {
                    w.counter.with_mut(|c| unsafe { *c += 1 });
                    // SAFETY: locked by try_lock.
                    unsafe { w.m.unlock() };
                } else {
                    critical(&w);
                }
                t.join().unwrap();
                assert_eq!(w.counter.with(|c| unsafe { *c }), 3);
                // Relaxed: joined.
                assert_eq!(w.m.state.load(Ordering::Relaxed), 0, "mutex left dirty");
            });
        }
    }
}
