//! `Condvar`: a condition variable for gort's [`Mutex`](super::Mutex), whose waiters park.
//!
//! # Protocol
//! A FIFO [`List`] of waiter nodes (on the waiters' stacks) behind a short lock, plus
//! `waiters`, the list's length mirrored in an atomic so that a notify with nobody waiting
//! costs one load.
//!
//! * `wait(guard)`: link a node (under the list lock) **while still holding the mutex**, then
//!   unlock the mutex, then park; relock the mutex on wake-up. Because the node is linked
//!   before the mutex is released, a notifier that changes the condition under the mutex
//!   and then notifies always finds it: no wake-up is lost. A notifier that reads `waiters`
//!   as 0 ran its lock-acquire after our unlock or before our enqueue; in the first case the
//!   mutex orders our increment before its read, in the second we had not yet checked the
//!   condition, which it changed under the mutex before that.
//! * `notify_one`: under the list lock, pop the head and claim its waiter; a claim that fails
//!   (the waiter timed out and is leaving) passes to the next node. Wake after unlocking.
//! * `notify_all`: the same for every node present when it started, claiming in batches under
//!   the lock and waking each batch after unlocking (a waiter that arrives meanwhile may get
//!   a spurious wake-up, which condition variables allow).
//! * `wait_timeout`: as `wait`, with a deadline; on a timeout the waiter retakes the list lock
//!   and unlinks its node if still linked. The claim-under-lock rule of `sema.rs` is what
//!   makes this safe: a notifier that popped the node holds the lock while it touches it.
//!
//! Spurious wake-ups: none from the implementation except `notify_all`'s batches above; as
//! with std, callers must still re-check their condition (`wait_while` does).
//!
//! Rejected: Go's ticket scheme (`notifyList`: a waiter draws a ticket, a notifier serves the
//! next ticket). It needs no list removal, but a ticket served to a waiter that timed out is
//! a lost notification for everyone behind it; a list the timed-out waiter leaves has none.

use super::mutex::MutexGuard;
use super::sema::{List, Node, Waiter, Wakeup};
use crate::loom::{AtomicUsize, Mutex as QueueLock, MutexGuard as QueueGuard, Ordering};
use std::fmt;
use std::time::{Duration, Instant};

/// Waiters claimed per batch by `notify_all` before waking them outside the lock.
const WAKE_BATCH: usize = 16;

/// A condition variable for [`Mutex`](super::Mutex) (Go's `sync.Cond`, std's shape). Waiting parks the
/// goroutine (blocks a plain thread).
///
/// ```
/// use gort::sync::{Condvar, Mutex};
/// use std::sync::Arc;
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let p2 = pair.clone();
/// gort::run(move || {
///     gort::go(move || {
///         *p2.0.lock() = true;
///         p2.1.notify_one();
///     });
///     let (lock, cv) = &*pair;
///     let ready = cv.wait_while(lock.lock(), |ready| !*ready);
///     assert!(*ready);
/// });
/// ```
pub struct Condvar {
    q: QueueLock<List>,
    /// Linked nodes; written under `q`.
    waiters: AtomicUsize,
}

/// Whether a timed wait returned because its time ran out (std's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended by timeout rather than by a notification.
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// A condition variable with no waiters.
    pub const fn new() -> Condvar {
        Condvar {
            q: QueueLock::new(List::new()),
            waiters: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> QueueGuard<'_, List> {
        // Nothing panics under this lock; a poisoned one would still be consistent.
        crate::sched::syscall::lock_marked(&self.q).unwrap_or_else(|e| e.into_inner())
    }

    /// Link `node` (the caller still holds the user's mutex).
    ///
    /// # Safety
    /// `node` stays alive until a notifier claimed it, or until it was unlinked by
    /// [`Self::leave`] after a timeout.
    unsafe fn enqueue(&self, node: &Node) {
        let mut q = self.lock();
        // SAFETY: forwarded contract.
        unsafe { q.push_back(node) };
        // Relaxed: written under the lock; readers outside it are ordered by the user's
        // mutex (module docs).
        self.waiters.store(q.len(), Ordering::Relaxed);
    }

    /// A timed-out waiter leaves the list (if a notifier has not already popped it).
    fn leave(&self, node: &Node) {
        let mut q = self.lock();
        // SAFETY: `node` was linked on this list by us and is alive (our frame).
        if unsafe { q.remove(node) } {
            // Relaxed: as in `enqueue`.
            self.waiters.store(q.len(), Ordering::Relaxed);
        }
    }

    /// Unlock the guard's mutex, park until notified, relock and return the guard.
    ///
    /// ```
    /// # use gort::sync::{Condvar, Mutex};
    /// let (m, cv) = (Mutex::new(0), Condvar::new());
    /// let g = m.lock();
    /// cv.notify_one(); // nobody waits: no effect
    /// drop(g);
    /// ```
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let node = Node::new();
        // SAFETY: `node` lives on this frame until `wait` below returns, which needs a claim.
        unsafe { self.enqueue(&node) };
        let mutex = guard.into_mutex();
        node.waiter.wait();
        mutex.lock()
    }

    /// [`Self::wait`] until `condition` returns false (re-checked after each wake-up).
    pub fn wait_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: F,
    ) -> MutexGuard<'a, T>
    where
        F: FnMut(&mut T) -> bool,
    {
        while condition(&mut *guard) {
            guard = self.wait(guard);
        }
        guard
    }

    /// [`Self::wait`] for at most `timeout` (at least that long if not notified). The
    /// result says whether the time ran out.
    pub fn wait_timeout<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_deadline(guard, crate::time::deadline_after(timeout))
    }

    /// [`Self::wait`] until `deadline` at the latest.
    pub fn wait_until<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        self.wait_deadline(guard, crate::time::instant_to_nanos(deadline))
    }

    /// [`Self::wait_while`] for at most `timeout` in total. Returns the guard and whether the
    /// time ran out with the condition still true.
    pub fn wait_timeout_while<'a, T: ?Sized, F>(
        &self,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
        mut condition: F,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult)
    where
        F: FnMut(&mut T) -> bool,
    {
        let deadline = crate::time::deadline_after(timeout);
        while condition(&mut *guard) {
            let (g, r) = self.wait_deadline(guard, deadline);
            guard = g;
            if r.timed_out() {
                let still = condition(&mut *guard);
                return (guard, WaitTimeoutResult(still));
            }
        }
        (guard, WaitTimeoutResult(false))
    }

    /// The timed wait, with the deadline on `crate::time::nanotime`'s clock.
    fn wait_deadline<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: u64,
    ) -> (MutexGuard<'a, T>, WaitTimeoutResult) {
        let node = Node::new();
        // SAFETY: `node` lives on this frame until we return: after a notification (a claim)
        // or after `leave` below unlinked it under the lock.
        unsafe { self.enqueue(&node) };
        let mutex = guard.into_mutex();
        let notified = node.waiter.wait_until_ns(deadline);
        if !notified {
            self.leave(&node);
        }
        (mutex.lock(), WaitTimeoutResult(!notified))
    }

    /// Wake one waiting party, if any (the longest-waiting one).
    pub fn notify_one(&self) {
        // Relaxed: see the module docs (ordered by the user's mutex).
        if self.waiters.load(Ordering::Relaxed) == 0 {
            return;
        }
        let wake = {
            let mut q = self.lock();
            let mut won = None;
            while let Some(n) = q.pop_front() {
                // SAFETY: just unlinked under the lock we hold: alive (rule 2 of sema.rs).
                if let Some(w) = unsafe { Waiter::claim(&(*n).waiter) } {
                    won = Some(w);
                    break;
                }
                // That waiter timed out and is leaving: try the next one.
            }
            // Relaxed: as in `enqueue`.
            self.waiters.store(q.len(), Ordering::Relaxed);
            won
        };
        if let Some(w) = wake {
            w.wake();
        }
    }

    /// Wake every party waiting now.
    pub fn notify_all(&self) {
        // Relaxed: see the module docs.
        let mut left = self.waiters.load(Ordering::Relaxed);
        while left > 0 {
            let mut batch: [Option<Wakeup>; WAKE_BATCH] = [const { None }; WAKE_BATCH];
            let mut k = 0;
            {
                let mut q = self.lock();
                while k < WAKE_BATCH && left > 0 {
                    let Some(n) = q.pop_front() else {
                        left = 0;
                        break;
                    };
                    left -= 1;
                    // SAFETY: as in `notify_one`.
                    if let Some(w) = unsafe { Waiter::claim(&(*n).waiter) } {
                        batch[k] = Some(w);
                        k += 1;
                    }
                }
                // Relaxed: as in `enqueue`.
                self.waiters.store(q.len(), Ordering::Relaxed);
            }
            for w in batch.iter_mut().take(k) {
                if let Some(w) = w.take() {
                    w.wake();
                }
            }
        }
    }
}

impl Default for Condvar {
    fn default() -> Condvar {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar")
            // Relaxed: a snapshot.
            .field("waiters", &self.waiters.load(Ordering::Relaxed))
            .finish()
    }
}
