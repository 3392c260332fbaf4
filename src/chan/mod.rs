//! Channels: Go's `chan` for goroutines and threads — bounded, unbounded and unbuffered
//! (rendezvous), multi-producer multi-consumer, with `select!`.
//!
//! ```
//! use gort::chan;
//! let sum = gort::run(|| {
//!     let (tx, rx) = chan::bounded::<u64>(0); // unbuffered: every send meets a receive
//!     for i in 0..4 {
//!         let tx = tx.clone();
//!         gort::go(move || tx.send(i).unwrap());
//!     }
//!     drop(tx); // the channel closes when the last sender is gone
//!     rx.iter().sum::<u64>()
//! });
//! assert_eq!(sum, 6);
//! ```
//!
//! # Model (Go's `runtime/chan.go`)
//! A channel is one lock and, behind it, a buffer ring (capacity 0, n, or unbounded), a queue
//! of blocked receivers, a queue of blocked senders, and a `closed` flag. A blocked party —
//! goroutine or OS thread — is an *entry* (Go's `sudog`) that lives **on the party's own
//! stack**: a slot for the value, links for the queue, and a pointer to its *parker*, which
//! holds the party's waiter (`ChanWaiter`, over `sched/park.rs`: a goroutine parks, a thread
//! sleeps on a futex; the same code serves both, so threads and goroutines share channels
//! freely). No operation allocates (an unbounded buffer aside).
//!
//! # Invariants (under the channel lock)
//! 1. Live receivers are queued only while the buffer is empty; live senders only while it
//!    is full (an unbuffered channel is both). So a sender that finds a receiver hands the
//!    value straight into the receiver's slot; a receiver that finds a sender takes the
//!    sender's value (unbuffered), or the buffer's head and moves the sender's value to the
//!    tail (buffered: FIFO order is kept).
//! 2. `closed` is final. Once set, no sender is queued (close woke them all, and a send on a
//!    closed channel fails at once); receivers drain the buffer, then fail.
//! 3. An entry is on at most one queue and is linked, unlinked and completed only under its
//!    channel's lock.
//! 4. **A queued entry is alive.** Its party leaves only (a) after a notifier claimed its
//!    waiter — and the notifier touches nothing of the entry after the claim — or (b) after
//!    taking the lock and unlinking the entry itself (a timeout; every select, after it
//!    wakes). Hence a notifier holding the lock may use any entry it dequeued until its
//!    claim. This is park.rs's rule for waiters that may time out.
//! 5. **A goroutine's untimed entry becomes visible only once the goroutine is parked**: it
//!    is queued under the lock and the lock is released by the scheduler after the switch
//!    away from it (the `gopark` callback), never by the goroutine itself (Go's
//!    `chanparkcommit`).
//!
//! # Protocol
//! **Completing a blocked party** (a sender that finds a receiver, a receiver that finds a
//! sender, a close): under the lock, dequeue the entry; if it belongs to a select, win the
//! select first (one CAS on the select's `done` flag: several channels may race for it; a
//! loser drops the stale entry and looks at the next one); hand the value over (fill or empty
//! the slot); then **claim** the party. Two kinds of waiter (`ChanWaiter`):
//! * *Direct* — a goroutine waiting without a deadline (the common case). By invariant 5 it
//!   is parked, and the one notifier that dequeued it (a select: that won `done`) owns its
//!   wake-up: the claim is free, and the wake is `goready`. As in Go, no CAS beyond
//!   `goready`'s own.
//! * *Word* — a thread, or a goroutine with a deadline: `Waiter::claim`, a CAS that decides
//!   between this notifier and the party's deadline. If it fails, the party timed out and is
//!   about to take the lock to unlink itself: undo the hand-over and try the next entry.
//!
//! Unlock, then wake the claimed party (`goready` into this P's `runnext`: the woken goroutine
//! runs next, inheriting the time slice — why ping-pong is a pair of direct switches; or
//! `futex_wake` for a thread). Waking after unlocking keeps the woken party, if another P
//! runs it at once, from finding the lock still held.
//!
//! **Blocking**: under the lock, put an entry on the queue; wait, which releases the lock —
//! after parking (Direct) or before committing to sleep (Word). After a claim the slot says
//! what happened: a receiver with a value / without one (closed); a sender with an empty slot
//! (delivered) / its value still there (closed). After a timeout: lock, unlink the entry
//! unless a notifier already did (then it lost the claim and undid its hand-over), unlock.
//!
//! **select** (`core::select`, Go's `selectgo`): random poll order, locks taken in address
//! order (each once). Lock all; poll every arm in that order and complete the first ready one
//! (uniform choice among ready arms); if none and there is a `default`, unlock and take it.
//! Otherwise queue one entry per arm, all sharing one select parker; wait (releasing all the
//! locks, after parking for a Direct waiter: the scheduler runs the release, which copies the
//! lock list out of the select's frame before the last release). The
//! notifier that wins the select's `done` flag records its arm and completes it as above.
//! After waking (notified or timed out) the select locks all its channels again and unlinks
//! its remaining entries — required because they point into its stack frame (invariant 4) —
//! so no arm is lost (a value is taken by exactly one arm) or duplicated (a losing entry
//! never gives or takes anything).
//!
//! **Disconnection**: the channel closes on `Sender::close`, when the last `Sender` is dropped,
//! and when the last `Receiver` is dropped (then the buffered values are dropped too, and
//! every blocked or later sender gets its value back in the error).
//!
//! # Rejected designs
//! * **Lock-free queues** (crossbeam's array and list flavours, Vyukov's MPMC ring): faster
//!   under heavy MPMC contention, but Go's semantics — rendezvous hand-off, a select that
//!   must take *exactly one* arm of N channels with a uniform choice, close waking everyone —
//!   need a consistent view of several queues at once; crossbeam gets it with a per-operation
//!   token protocol far bigger than one lock. The uncontended lock is one CAS and one swap,
//!   small next to the park/ready it guards, and the hot case (ping-pong) is uncontended.
//! * **Heap-allocated waiter nodes** (std's old mpsc, tokio's `Notify`): an allocation per
//!   blocking operation. Entries on the blocked party's stack cost nothing; the price is
//!   invariant 4 (a select always relocks to unlink itself), which Go pays too.
//! * **Waking under the lock**: on procs ≥ 2 the woken goroutine can be stolen and run
//!   before the waker unlocks, only to spin on the lock.
//! * **The waiter word for every wait** (commit CAS by the party, claim CAS by the notifier):
//!   it was the first version; releasing the lock after parking instead made the procs = 1
//!   ping-pong about a third faster. The word stays where it is needed: threads (a futex has
//!   no "release after parking" hook) and deadlines (the timer races the notifier).
//! * **Lazily discarding stale select entries** (leaving them for later operations to skip):
//!   impossible with entries on the stack: the frame dies when the select returns.
//!
//! # Timers
//! [`after`] and [`tick`] are channels fed by the timer heaps (`time::after_fn`): the value is
//! sent with a non-blocking send from the timer callback on the scheduler; a tick nobody has
//! taken yet makes the next one be dropped (Go's one-slot buffer).
//!
//! # Loom
//! `core.rs` is generic over the waiter, and `loom_models.rs` runs it — the real queues,
//! hand-over, claim and undo, close, and select's lock-all/enqueue/unlink protocol — with
//! model waiters of both kinds: Direct (the model's `goready` asserts that no notifier ever
//! reaches a party before it is parked, and that the party's saved state is visible to
//! whoever resumes it) and Word (built from the real `park::word_commit`/`word_resolve`, with
//! a deadline that fires right after the party commits to sleep). Models: a send meeting a
//! receive; close racing a parked receiver (also with a buffered value) and a parked sender;
//! a timed receive racing a timed send (unbuffered) and a timed sender racing a receiver on
//! a full buffer (the undo path); a select racing two senders (both poll orders); a select
//! with a receive and a send arm racing a close and a timed receiver.
//!
//! Not under loom, and covered by stress tests instead (`tests/chan.rs`): the native futex
//! lock word (loom uses its own mutex in its place, see `lock.rs`), the real park/ready and
//! timer machinery (loom-modelled in `sched/`), and many-party interleavings (timed
//! receives and sends racing partners thousands of times; selects with timeouts and defaults
//! among 4 producers and 4 consumers; threads and goroutines mixed), all checked for
//! exactly-once delivery.

mod core;
mod error;
mod lock;
#[cfg(all(test, loom))]
mod loom_models;
#[cfg(not(loom))]
mod select;
#[cfg(not(loom))]
mod timer;

pub use error::{
    RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
#[cfg(not(loom))]
pub use imp::*;
#[cfg(not(loom))]
pub use timer::{after, at, tick};

/// Support for the `select!` macro's expansion; not a public API.
#[doc(hidden)]
#[cfg(not(loom))]
pub mod __private {
    pub use super::select::{CaseRef, Mode, RecvArm, SendArm, run};
}

#[cfg(not(loom))]
mod imp {
    use super::core::{Block, Chan, Failed, Park, Unlock};
    use super::error::*;
    use crate::loom::{AtomicUsize, Ordering};
    use crate::sched::g::G;
    use crate::sched::m::current_g;
    use crate::sched::park::{Waiter, Wakeup, gopark, goready};
    use crate::time::{deadline_after, instant_to_nanos, nanotime};
    use std::fmt;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// The channels' waiter (see `core::Park`): a goroutine waiting without a deadline parks
    /// with the channel lock(s) held, released by the scheduler once it is parked (the
    /// `gopark` callback; Go's `chanparkcommit`), so a notifier that finds its entry finds it
    /// parked and readies it without any claim CAS — exactly as Go's `chansend`/`chanrecv`
    /// do. A thread, or a goroutine with a deadline, uses the `Waiter` word (futex or park,
    /// deadline race).
    pub(crate) enum ChanWaiter {
        /// An untimed goroutine wait: the goroutine.
        Direct(*mut G),
        /// Everything else.
        Word(Waiter),
    }

    /// A claimed [`ChanWaiter`]'s wake-up.
    pub(crate) enum ChanWakeup {
        Direct(*mut G),
        Word(Wakeup),
    }

    impl Park for ChanWaiter {
        type Wakeup = ChanWakeup;

        /// Called only by a party about to block.
        #[inline]
        fn new(timed: bool) -> ChanWaiter {
            if !timed {
                let g = current_g();
                if !g.is_null() {
                    return ChanWaiter::Direct(g);
                }
            }
            ChanWaiter::Word(Waiter::new())
        }

        #[inline]
        fn wait<U: Unlock>(&self, unlock: &U, deadline: Option<u64>) -> bool {
            match self {
                ChanWaiter::Direct(_) => {
                    // SAFETY: a Direct waiter is a goroutine. `unlock` lives in our frame,
                    // which stays put while we are parked; `unlock_parked` runs before gopark
                    // returns.
                    unsafe { gopark(unlock_parked::<U>, unlock as *const U as usize) };
                    // Only the notifier that dequeued our entry (under the lock) readies us.
                    true
                }
                ChanWaiter::Word(w) => {
                    unlock.unlock();
                    match deadline {
                        None => {
                            w.wait();
                            true
                        }
                        Some(d) => w.wait_until_ns(d),
                    }
                }
            }
        }

        #[inline]
        unsafe fn claim(this: *const ChanWaiter) -> Option<ChanWakeup> {
            // SAFETY: live per the contract (the lock we hold keeps the party from leaving).
            match unsafe { &*this } {
                // Its entry was visible only once it was parked (the lock was released by
                // its gopark callback), and only we dequeued it: ours to ready, no race.
                ChanWaiter::Direct(g) => Some(ChanWakeup::Direct(*g)),
                // SAFETY: forwarded contract (Park::claim is Waiter::claim's).
                ChanWaiter::Word(w) => unsafe { Waiter::claim(w) }.map(ChanWakeup::Word),
            }
        }

        #[inline]
        fn wake(w: ChanWakeup) {
            match w {
                // SAFETY: claimed above: the G is Waiting (parked before its entry could be
                // seen) and we are its only waker.
                ChanWakeup::Direct(g) => unsafe { goready(g) },
                ChanWakeup::Word(w) => w.wake(),
            }
        }
    }

    /// `gopark` callback of a Direct wait, run by the scheduler after the switch away from the
    /// goroutine (on g0, or in the next goroutine's post-switch step): the goroutine is
    /// Waiting and its registers are saved. Release the channel lock(s), making its entry
    /// visible to notifiers. Does not block.
    ///
    /// # Safety
    /// `arg` is the `&U` passed by `ChanWaiter::wait`.
    unsafe fn unlock_parked<U: Unlock>(_g: *mut G, arg: usize) -> bool {
        // SAFETY: per the contract; `U::unlock` touches nothing of the frame after its last
        // release (see `Unlock`).
        unsafe { (*(arg as *const U)).unlock() };
        true
    }

    /// What the handles share: the channel and the handle counts.
    pub(super) struct Shared<T> {
        pub(super) chan: Chan<T, ChanWaiter>,
        senders: AtomicUsize,
        receivers: AtomicUsize,
    }

    /// A channel of capacity `cap`: `0` is Go's unbuffered channel (a send completes only when
    /// a receiver takes the value); `usize::MAX` is the same as [`unbounded`].
    ///
    /// The buffer is allocated here, once.
    pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
        let shared = Arc::new(Shared {
            chan: Chan::new(cap),
            senders: AtomicUsize::new(1),
            receivers: AtomicUsize::new(1),
        });
        (
            Sender {
                shared: shared.clone(),
            },
            Receiver { shared },
        )
    }

    /// A channel whose sends never block (the buffer grows as needed).
    pub fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
        bounded(usize::MAX)
    }

    /// The sending half of a channel. Clone it for more producers; the channel closes when the
    /// last one is dropped (or on [`Sender::close`]).
    pub struct Sender<T> {
        pub(super) shared: Arc<Shared<T>>,
    }

    /// The receiving half of a channel. Clone it for more consumers (each value goes to one
    /// of them); when the last one is dropped the channel closes and buffered values are
    /// dropped.
    pub struct Receiver<T> {
        pub(super) shared: Arc<Shared<T>>,
    }

    /// `Block` for an absolute deadline: already past means "do not block".
    fn until(deadline: u64) -> Block {
        if deadline <= nanotime() {
            Block::No
        } else {
            Block::Until(deadline)
        }
    }

    impl<T> Sender<T> {
        /// Send `v`, blocking (a goroutine parks; a thread sleeps) until a receiver takes it
        /// (unbuffered) or there is room. Fails, giving `v` back, if the channel is closed.
        pub fn send(&self, v: T) -> Result<(), SendError<T>> {
            match self.shared.chan.send(v, Block::Forever) {
                Ok(()) => Ok(()),
                Err(Failed::Closed(v) | Failed::NotReady(v)) => Err(SendError(v)),
            }
        }

        /// Send `v` if that can be done without blocking.
        pub fn try_send(&self, v: T) -> Result<(), TrySendError<T>> {
            match self.shared.chan.send(v, Block::No) {
                Ok(()) => Ok(()),
                Err(Failed::NotReady(v)) => Err(TrySendError::Full(v)),
                Err(Failed::Closed(v)) => Err(TrySendError::Disconnected(v)),
            }
        }

        /// Send `v`, blocking for at most `d`.
        pub fn send_timeout(&self, v: T, d: Duration) -> Result<(), SendTimeoutError<T>> {
            self.send_until(v, until(deadline_after(d)))
        }

        /// Send `v`, blocking until `deadline` at the latest.
        pub fn send_deadline(&self, v: T, deadline: Instant) -> Result<(), SendTimeoutError<T>> {
            self.send_until(v, until(instant_to_nanos(deadline)))
        }

        fn send_until(&self, v: T, block: Block) -> Result<(), SendTimeoutError<T>> {
            match self.shared.chan.send(v, block) {
                Ok(()) => Ok(()),
                Err(Failed::NotReady(v)) => Err(SendTimeoutError::Timeout(v)),
                Err(Failed::Closed(v)) => Err(SendTimeoutError::Disconnected(v)),
            }
        }

        /// Close the channel (Go's `close`): further sends fail, blocked senders get their
        /// values back, receivers drain what is buffered and then see the disconnection.
        /// Returns false if it was already closed (Go would panic).
        pub fn close(&self) -> bool {
            self.shared.chan.close()
        }

        /// Whether the channel is closed.
        pub fn is_closed(&self) -> bool {
            self.shared.chan.is_closed()
        }

        /// Values buffered now.
        pub fn len(&self) -> usize {
            self.shared.chan.len()
        }

        /// Whether nothing is buffered now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether a send would find the buffer full now (always true when unbuffered).
        pub fn is_full(&self) -> bool {
            self.len() >= self.shared.chan.cap()
        }

        /// The buffer capacity; `None` if unbounded.
        pub fn capacity(&self) -> Option<usize> {
            capacity(self.shared.chan.cap())
        }

        /// Whether two handles belong to the same channel.
        pub fn same_channel(&self, other: &Sender<T>) -> bool {
            Arc::ptr_eq(&self.shared, &other.shared)
        }

        /// Give up this sender without closing the channel, even if it is the last one:
        /// receivers then wait forever for a value nobody sends (Go's `time.After` channel,
        /// which is never closed).
        pub(super) fn detach(self) {
            let me = std::mem::ManuallyDrop::new(self);
            // Relaxed: a count like Arc's strong count; nothing is published through it.
            me.shared.senders.fetch_sub(1, Ordering::Relaxed);
            // SAFETY: `me` is never used again and never dropped: we take its Arc once.
            drop(unsafe { std::ptr::read(&me.shared) });
        }
    }

    impl<T> Receiver<T> {
        /// Receive a value, blocking until one is available. Fails once the channel is closed
        /// and drained.
        pub fn recv(&self) -> Result<T, RecvError> {
            self.shared.chan.recv(Block::Forever).map_err(|_| RecvError)
        }

        /// Receive a value if one is available without blocking.
        pub fn try_recv(&self) -> Result<T, TryRecvError> {
            self.shared.chan.recv(Block::No).map_err(|e| match e {
                Failed::NotReady(()) => TryRecvError::Empty,
                Failed::Closed(()) => TryRecvError::Disconnected,
            })
        }

        /// Receive a value, blocking for at most `d`.
        pub fn recv_timeout(&self, d: Duration) -> Result<T, RecvTimeoutError> {
            self.recv_until(until(deadline_after(d)))
        }

        /// Receive a value, blocking until `deadline` at the latest.
        pub fn recv_deadline(&self, deadline: Instant) -> Result<T, RecvTimeoutError> {
            self.recv_until(until(instant_to_nanos(deadline)))
        }

        fn recv_until(&self, block: Block) -> Result<T, RecvTimeoutError> {
            self.shared.chan.recv(block).map_err(|e| match e {
                Failed::NotReady(()) => RecvTimeoutError::Timeout,
                Failed::Closed(()) => RecvTimeoutError::Disconnected,
            })
        }

        /// A blocking iterator: yields values until the channel is closed and drained.
        pub fn iter(&self) -> Iter<'_, T> {
            Iter { rx: self }
        }

        /// A non-blocking iterator: yields the values available now.
        pub fn try_iter(&self) -> TryIter<'_, T> {
            TryIter { rx: self }
        }

        /// Whether the channel is closed (values may still be buffered).
        pub fn is_closed(&self) -> bool {
            self.shared.chan.is_closed()
        }

        /// Values buffered now.
        pub fn len(&self) -> usize {
            self.shared.chan.len()
        }

        /// Whether nothing is buffered now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// The buffer capacity; `None` if unbounded.
        pub fn capacity(&self) -> Option<usize> {
            capacity(self.shared.chan.cap())
        }

        /// Whether two handles belong to the same channel.
        pub fn same_channel(&self, other: &Receiver<T>) -> bool {
            Arc::ptr_eq(&self.shared, &other.shared)
        }
    }

    fn capacity(cap: usize) -> Option<usize> {
        (cap != usize::MAX).then_some(cap)
    }

    impl<T> Clone for Sender<T> {
        fn clone(&self) -> Self {
            // Relaxed: as Arc's increment: the new handle is derived from a live one, so the
            // count cannot reach zero meanwhile.
            self.shared.senders.fetch_add(1, Ordering::Relaxed);
            Sender {
                shared: self.shared.clone(),
            }
        }
    }

    impl<T> Clone for Receiver<T> {
        fn clone(&self) -> Self {
            // Relaxed: as in `Sender::clone`.
            self.shared.receivers.fetch_add(1, Ordering::Relaxed);
            Receiver {
                shared: self.shared.clone(),
            }
        }
    }

    impl<T> Drop for Sender<T> {
        fn drop(&mut self) {
            // AcqRel: the last decrement must see every other sender's operations done (as
            // Arc's drop), so closing cannot overtake a send of another sender's thread.
            if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
                self.shared.chan.close();
            }
        }
    }

    impl<T> Drop for Receiver<T> {
        fn drop(&mut self) {
            // AcqRel: as in `Sender::drop`.
            if self.shared.receivers.fetch_sub(1, Ordering::AcqRel) == 1 {
                // Dropped here, outside the lock (user Drop code).
                drop(self.shared.chan.disconnect_receivers());
            }
        }
    }

    impl<T> fmt::Debug for Sender<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Sender").finish_non_exhaustive()
        }
    }

    impl<T> fmt::Debug for Receiver<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Receiver").finish_non_exhaustive()
        }
    }

    /// Blocking iterator over received values ([`Receiver::iter`], `for v in &rx`).
    #[derive(Debug)]
    pub struct Iter<'a, T> {
        rx: &'a Receiver<T>,
    }

    /// Non-blocking iterator over the values available now ([`Receiver::try_iter`]).
    #[derive(Debug)]
    pub struct TryIter<'a, T> {
        rx: &'a Receiver<T>,
    }

    /// Owning blocking iterator (`for v in rx`).
    #[derive(Debug)]
    pub struct IntoIter<T> {
        rx: Receiver<T>,
    }

    impl<T> Iterator for Iter<'_, T> {
        type Item = T;
        fn next(&mut self) -> Option<T> {
            self.rx.recv().ok()
        }
    }

    impl<T> Iterator for TryIter<'_, T> {
        type Item = T;
        fn next(&mut self) -> Option<T> {
            self.rx.try_recv().ok()
        }
    }

    impl<T> Iterator for IntoIter<T> {
        type Item = T;
        fn next(&mut self) -> Option<T> {
            self.rx.recv().ok()
        }
    }

    impl<'a, T> IntoIterator for &'a Receiver<T> {
        type Item = T;
        type IntoIter = Iter<'a, T>;
        fn into_iter(self) -> Iter<'a, T> {
            self.iter()
        }
    }

    impl<T> IntoIterator for Receiver<T> {
        type Item = T;
        type IntoIter = IntoIter<T>;
        fn into_iter(self) -> IntoIter<T> {
            IntoIter { rx: self }
        }
    }
}
