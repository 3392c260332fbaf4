//! `WaitGroup`: wait for a collection of goroutines to finish (Go's `sync.WaitGroup`).
//!
//! # Protocol (Go's `sync/waitgroup.go`)
//! One `u64`: the counter in the high 32 bits (signed), the number of parked waiters in the
//! low 32. `add(n)` adds `n << 32`; when that brings the counter to zero with waiters
//! counted, the adder resets the whole word to 0 and releases the semaphore once per waiter.
//! `wait` returns at once if the counter is zero, else counts itself as a waiter with a CAS
//! (which fails if the counter changed meanwhile) and parks on the semaphore.
//!
//! Misuse is detected as in Go and panics with Go's messages: a negative counter, an `add`
//! that raises the counter from zero while `wait`s are being released (`add` concurrent with
//! `wait`), and reuse before the previous `wait`s returned. Unlike Go, a negative counter is
//! undone before the panic, so the group stays consistent for whoever catches it.

use super::sema::Sema;
use crate::loom::{AtomicU64, Ordering};
use std::fmt;

/// Waits for a collection of goroutines (or threads) to finish (Go's `sync.WaitGroup`).
///
/// The main goroutine calls [`add`](Self::add) with the number of goroutines to wait for;
/// each of them calls [`done`](Self::done) when finished; [`wait`](Self::wait) parks until
/// all have. A `WaitGroup` may be reused once every `wait` of the previous round returned.
///
/// ```
/// use gort::sync::WaitGroup;
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicU32, Ordering};
/// let n = gort::run(|| {
///     let wg = Arc::new(WaitGroup::new());
///     let hits = Arc::new(AtomicU32::new(0));
///     for _ in 0..100 {
///         wg.add(1);
///         let (wg, hits) = (wg.clone(), hits.clone());
///         gort::go(move || {
///             hits.fetch_add(1, Ordering::Relaxed);
///             wg.done();
///         });
///     }
///     wg.wait();
///     hits.load(Ordering::Relaxed)
/// });
/// assert_eq!(n, 100);
/// ```
pub struct WaitGroup {
    /// Counter (high 32 bits, signed) and waiter count (low 32 bits).
    state: AtomicU64,
    sema: Sema,
}

#[inline]
fn counter(state: u64) -> i32 {
    (state >> 32) as u32 as i32
}

#[inline]
fn waiters(state: u64) -> u32 {
    state as u32
}

impl WaitGroup {
    /// A group with a zero counter.
    pub const fn new() -> WaitGroup {
        WaitGroup {
            state: AtomicU64::new(0),
            sema: Sema::new(),
        }
    }

    /// Add `delta` (which may be negative) to the counter. When it reaches zero, every
    /// goroutine blocked in [`wait`](Self::wait) is released.
    ///
    /// Calls with a positive delta that start from a zero counter must happen before the
    /// `wait` they are meant for (typically: before spawning the goroutine).
    ///
    /// # Panics
    /// "sync: negative WaitGroup counter" if the counter would go below zero (it is left
    /// unchanged); "sync: WaitGroup misuse: add called concurrently with wait" if an `add`
    /// from zero races with the release of waiters.
    pub fn add(&self, delta: i32) {
        let d = (i64::from(delta) as u64) << 32;
        // AcqRel: Release publishes the caller's writes (a finishing goroutine's results)
        // to whoever observes the counter reach zero; Acquire makes the releaser of the
        // waiters see every earlier add.
        let state = self.state.fetch_add(d, Ordering::AcqRel).wrapping_add(d);
        let v = counter(state);
        let w = waiters(state);
        if v < 0 {
            // Undo, so the group stays usable for whoever catches the panic. Relaxed: no
            // data to publish; the add is simply taken back.
            self.state.fetch_sub(d, Ordering::Relaxed);
            panic!("sync: negative WaitGroup counter");
        }
        if w != 0 && delta > 0 && v == delta {
            panic!("sync: WaitGroup misuse: add called concurrently with wait");
        }
        if v > 0 || w == 0 {
            return;
        }
        // The counter is 0 with waiters: nobody may change the state now but us (adds from
        // zero must not race with the release, and waiters only join while the counter is
        // non-zero). Catch misuse cheaply. Relaxed: a consistency check.
        if self.state.load(Ordering::Relaxed) != state {
            panic!("sync: WaitGroup misuse: add called concurrently with wait");
        }
        // Reset for reuse, then release every waiter. Relaxed: the waiters are ordered
        // after us by the semaphore; new users of the group by their own synchronisation.
        self.state.store(0, Ordering::Relaxed);
        for _ in 0..w {
            self.sema.release();
        }
    }

    /// Decrement the counter by one.
    ///
    /// # Panics
    /// If the counter would go below zero (see [`add`](Self::add)).
    #[inline]
    pub fn done(&self) {
        self.add(-1);
    }

    /// Park the calling goroutine (block the calling thread) until the counter is zero.
    ///
    /// # Panics
    /// "sync: WaitGroup is reused before previous wait has returned" if, when released, the
    /// group has already been reused by a new `add`.
    pub fn wait(&self) {
        // Acquire: pairs with the AcqRel adds: the goroutines' writes are visible when we
        // see the counter at zero.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if counter(state) == 0 {
                return;
            }
            if waiters(state) == u32::MAX {
                panic!("sync: too many WaitGroup waiters");
            }
            // Count ourselves as a waiter; fails if the counter moved meanwhile.
            // Acquire: as above, for the return on a zero counter after a failed CAS (on
            // success the semaphore orders the releaser's writes before ours).
            match self.state.compare_exchange_weak(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    // Released by the add that brought the counter to zero (ordered through
                    // the semaphore's lock).
                    self.sema.acquire(false);
                    // The releaser reset the word to 0 before releasing us; anything else
                    // is a new round started before this wait returned. Relaxed: a misuse
                    // check.
                    if self.state.load(Ordering::Relaxed) != 0 {
                        panic!("sync: WaitGroup is reused before previous wait has returned");
                    }
                    return;
                }
                Err(now) => state = now,
            }
        }
    }

    /// The current counter (a racy snapshot, for diagnostics).
    pub fn count(&self) -> i32 {
        // Relaxed: a snapshot.
        counter(self.state.load(Ordering::Relaxed))
    }
}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Relaxed: a snapshot.
        let s = self.state.load(Ordering::Relaxed);
        f.debug_struct("WaitGroup")
            .field("count", &counter(s))
            .field("waiters", &waiters(s))
            .finish()
    }
}
