//! The channel core: the state under the channel lock, the wait queues of blocked parties,
//! the operations, and select's lock-all/enqueue-all protocol — generic over how a party
//! blocks ([`Park`]), so that the loom models in `chan/loom_models.rs` check this very code
//! with a loom-able waiter, while the crate uses `ChanWaiter` (`chan/mod.rs`).
//!
//! See `chan/mod.rs` for the model and the invariants; this file is their implementation.
//! Every function that touches [`Synced`] says "lock held" and is `unsafe` or receives the
//! state as `&mut Synced` from [`Chan::synced`]/[`Chan::locked`].

// Under loom only the models use the core: the handles' conveniences are unused there.
#![cfg_attr(loom, allow(dead_code))]

use super::lock::RawLock;
use crate::loom::{AtomicBool, AtomicUsize, Ordering};
use std::cell::Cell;
use std::collections::VecDeque;
use std::ptr;

/// How one blocked party waits and is woken: `ChanWaiter` (over `sched::park`) in the crate,
/// a note-based model in the loom models.
///
/// The contract is `sched::park::Waiter`'s: exactly one of {a notifier's claim, the deadline}
/// wins; a party returns only after the claim (or its own timeout), and then sees everything
/// the notifier wrote before claiming (the claim/wake pair releases it). One addition: `wait`
/// releases the channel lock(s) itself, which lets an implementation release them only once
/// the party is committed to sleep — a goroutine without a deadline parks *with the locks
/// held* and the scheduler releases them after the switch (Go's `chanparkcommit`); then no
/// notifier can even see the party before it is parked, and the claim needs no CAS.
pub(crate) trait Park: Sized + 'static {
    /// What it takes to wake a claimed party, done after the channel lock is released.
    type Wakeup;
    /// A waiter for the calling party (goroutine or thread); `timed`: it will wait with a
    /// deadline.
    fn new(timed: bool) -> Self;
    /// Release the locks (`unlock.unlock()`, exactly once), then block until claimed (true)
    /// or until `deadline` (`time::nanotime`'s clock) passes (false; only if created
    /// `timed`). `None`: no deadline. At most once per waiter.
    fn wait<U: Unlock>(&self, unlock: &U, deadline: Option<u64>) -> bool;
    /// Decide that the caller wins the waiter. `None`: its deadline won; the party is leaving
    /// and must be treated as never queued.
    ///
    /// # Safety
    /// `this` is live and not yet claimed; the caller holds the lock of the queue it dequeued
    /// the party's entry from (a timed-out party takes that lock before it leaves).
    unsafe fn claim(this: *const Self) -> Option<Self::Wakeup>;
    /// Wake a claimed party. Any thread, no lock needed.
    fn wake(w: Self::Wakeup);
}

/// The locks a blocking party holds when it starts to wait: one channel's, or a select's.
pub(crate) trait Unlock {
    /// Release them. After the last release nothing of the party's frame may be touched
    /// (a notifier may wake the party and it may return).
    fn unlock(&self);
}

impl Unlock for RawLock {
    #[inline]
    fn unlock(&self) {
        RawLock::unlock(self)
    }
}

/// An `UnsafeCell` that loom checks under `cfg(loom)` (concurrent accesses not ordered by
/// the protocol are reported as data races).
#[cfg(not(loom))]
pub(crate) struct DataCell<T>(std::cell::UnsafeCell<T>);

/// An `UnsafeCell` that loom checks under `cfg(loom)` (concurrent accesses not ordered by
/// the protocol are reported as data races).
#[cfg(loom)]
pub(crate) struct DataCell<T>(loom::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> DataCell<T> {
    pub(crate) fn new(v: T) -> DataCell<T> {
        DataCell(std::cell::UnsafeCell::new(v))
    }

    /// Access the contents.
    ///
    /// # Safety
    /// No other access may overlap this one: the caller's protocol (the channel lock, or a
    /// claim followed by the party's wake-up) orders them.
    #[inline]
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: exclusive per the contract.
        f(unsafe { &mut *self.0.get() })
    }
}

#[cfg(loom)]
impl<T> DataCell<T> {
    pub(crate) fn new(v: T) -> DataCell<T> {
        DataCell(loom::cell::UnsafeCell::new(v))
    }

    /// As the native `with_mut`; loom checks the exclusivity.
    ///
    /// # Safety
    /// As the native `with_mut`.
    pub(crate) unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: exclusive per the contract (and checked by loom).
        self.0.with_mut(|p| f(unsafe { &mut *p }))
    }
}

// ---------------------------------------------------------------------------------------------
// Blocked parties.

/// One blocking operation: the party's waiter, plus, for a `select`, the race between the
/// channels it is queued on. Lives on the blocked party's stack; shared by all the entries of
/// one select.
pub(crate) struct Parker<W> {
    pub(crate) waiter: W,
    /// Whether the entries belong to a select (several channels may try to complete it).
    select: bool,
    /// Select only: set by the one notifier that completes the select (Go's `selectDone`).
    done: AtomicBool,
    /// Select only: the case that fired, written by that notifier before its claim.
    fired: AtomicUsize,
}

impl<W: Park> Parker<W> {
    pub(crate) fn new(select: bool, timed: bool) -> Parker<W> {
        Parker {
            waiter: W::new(timed),
            select,
            done: AtomicBool::new(false),
            fired: AtomicUsize::new(usize::MAX),
        }
    }

    /// The case that fired. Only after the waiter was notified.
    pub(crate) fn fired(&self) -> usize {
        // Relaxed: written by the notifier before it claimed and woke us; the party's wait
        // returned after synchronising with that (the claim's AcqRel CAS for a Word waiter,
        // goready's status CAS and the run queue for a Direct one).
        self.fired.load(Ordering::Relaxed)
    }
}

/// A blocked party's place in one channel's wait queue (Go's `sudog`). Lives on the party's
/// stack; linked, unlinked and completed only under that channel's lock.
///
/// `slot` carries the value: a sender's entry holds `Some(value)` until a receiver takes it
/// (left `Some` when the sender is woken by a close: it gets its value back); a receiver's
/// entry holds `None` until a sender puts the value there (left `None` when woken by close).
pub(crate) struct Entry<T, W> {
    parker: Cell<*const Parker<W>>,
    /// Select: the index of this entry's case.
    case: Cell<usize>,
    pub(crate) slot: DataCell<Option<T>>,
    next: Cell<*const Entry<T, W>>,
    prev: Cell<*const Entry<T, W>>,
    queued: Cell<bool>,
}

impl<T, W: Park> Entry<T, W> {
    pub(crate) fn new(slot: Option<T>) -> Entry<T, W> {
        Entry {
            parker: Cell::new(ptr::null()),
            case: Cell::new(0),
            slot: DataCell::new(slot),
            next: Cell::new(ptr::null()),
            prev: Cell::new(ptr::null()),
            queued: Cell::new(false),
        }
    }

    /// Take the slot's value. Party only, after its wait returned (or before enqueueing).
    ///
    /// # Safety
    /// No notifier may access the slot concurrently: the entry is not queued, or the party's
    /// lock/claim ordering says the notifier is done with it.
    pub(crate) unsafe fn take(&self) -> Option<T> {
        // SAFETY: forwarded contract.
        unsafe { self.slot.with_mut(Option::take) }
    }

    /// Lock held, entry just dequeued by [`WaitQueue::pop_live`]: decide that we complete its
    /// party, after having handed over the value. `None`: its deadline won (undo the hand-over).
    ///
    /// # Safety
    /// `self` was dequeued under the lock the caller still holds. After `Some`, the entry must
    /// not be touched again: an untimed party returns as soon as it sees the claim.
    unsafe fn claim(&self) -> Option<W::Wakeup> {
        // SAFETY: the party cannot leave while we hold the lock of the queue its entry was
        // on (module contract of `Park::claim`), so the parker is live.
        let pk = unsafe { &*self.parker.get() };
        if pk.select {
            // Relaxed: read by the party after its wait, which synchronises with our claim or
            // wake-up (see `Parker::fired`), as the value hand-over does.
            pk.fired.store(self.case.get(), Ordering::Relaxed);
        }
        // SAFETY: live (above), and `pop_live` made us its only possible claimant.
        unsafe { W::claim(&pk.waiter) }
    }
}

/// A FIFO of blocked parties' entries (Go's `waitq`): an intrusive doubly-linked list, so a
/// timed-out party or a finished select unlinks itself in O(1). Lock held for every method.
pub(crate) struct WaitQueue<T, W> {
    head: *const Entry<T, W>,
    tail: *const Entry<T, W>,
}

impl<T, W: Park> WaitQueue<T, W> {
    fn new() -> WaitQueue<T, W> {
        WaitQueue {
            head: ptr::null(),
            tail: ptr::null(),
        }
    }

    /// # Safety
    /// `e` is on no queue, and stays live until it is unlinked (by a notifier or by its party,
    /// under this queue's lock).
    pub(crate) unsafe fn push_back(&mut self, e: *const Entry<T, W>) {
        // SAFETY: per the contract, `e` and the queued entries are live.
        unsafe {
            (*e).next.set(ptr::null());
            (*e).prev.set(self.tail);
            (*e).queued.set(true);
            if self.tail.is_null() {
                self.head = e;
            } else {
                (*self.tail).next.set(e);
            }
        }
        self.tail = e;
    }

    fn pop_front(&mut self) -> Option<*const Entry<T, W>> {
        let e = self.head;
        if e.is_null() {
            return None;
        }
        // SAFETY: queued entries are live (their parties wait for this lock to leave).
        unsafe {
            self.head = (*e).next.get();
            if self.head.is_null() {
                self.tail = ptr::null();
            } else {
                (*self.head).prev.set(ptr::null());
            }
            (*e).queued.set(false);
        }
        Some(e)
    }

    /// Unlink `e` if it is still queued here (a party leaving after a timeout or a select).
    ///
    /// # Safety
    /// `e` is live and is either on this queue or on none.
    pub(crate) unsafe fn remove(&mut self, e: *const Entry<T, W>) {
        // SAFETY: per the contract; its neighbours are queued, hence live.
        unsafe {
            if !(*e).queued.get() {
                return;
            }
            let (prev, next) = ((*e).prev.get(), (*e).next.get());
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).prev.set(prev);
            }
            (*e).queued.set(false);
        }
    }

    /// Pop the first entry whose party this caller may complete: a plain operation's entry,
    /// or a select's entry whose select no other channel has completed (stale select entries
    /// are dropped from the queue on the way, Go's `dequeue`).
    ///
    /// The entry's lifetime is not tied to the queue (the caller goes on using the rest of
    /// `Synced`): it is valid while the caller holds the lock and has not claimed it.
    fn pop_live<'e>(&mut self) -> Option<&'e Entry<T, W>> {
        while let Some(e) = self.pop_front() {
            // SAFETY: dequeued under the lock we hold: live until claimed (Entry::claim).
            let e = unsafe { &*e };
            // SAFETY: as above: the parker outlives the entries pointing to it.
            let pk = unsafe { &*e.parker.get() };
            // Relaxed: the RMW's atomicity alone makes one notifier (over all of the select's
            // channels, each under its own lock) the winner; the losers touch nothing of
            // the select, and the winner's hand-over is published by its claim.
            if pk.select
                && pk
                    .done
                    .compare_exchange(false, true, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            return Some(e);
        }
        None
    }
}

// ---------------------------------------------------------------------------------------------
// The channel.

/// What the channel lock guards (STYLE: functions needing the lock take `&mut Synced`).
pub(crate) struct Synced<T, W> {
    /// Buffered values, oldest first. `len <= cap`.
    buf: VecDeque<T>,
    /// Receivers waiting for a value. Live entries only while `buf` is empty.
    recvq: WaitQueue<T, W>,
    /// Senders waiting for room (or, unbuffered, for a receiver). Live entries only while
    /// `buf` is full.
    sendq: WaitQueue<T, W>,
    /// No more sends: `close()`, the last sender or the last receiver went away. Final.
    closed: bool,
}

/// How long an operation may block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    /// Not at all (`try_*`, a select with a `default` arm).
    No,
    /// Until it completes.
    Forever,
    /// Until this deadline (`time::nanotime`'s clock).
    Until(u64),
}

impl Block {
    fn deadline(self) -> Option<u64> {
        match self {
            Block::Until(d) => Some(d),
            _ => None,
        }
    }
}

/// Why an operation did not complete; carries a send's value back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failed<T> {
    /// Would block (`Block::No`), or the deadline passed.
    NotReady(T),
    /// The channel is closed (and, for a receive, drained).
    Closed(T),
}

enum SendTry<T, K> {
    Sent(Option<K>),
    Full(T),
    Closed(T),
}

enum RecvTry<T, K> {
    Got(T, Option<K>),
    Empty,
    Closed,
}

/// A channel: lock, capacity, and the guarded state. Element type `T`, parking `W`.
pub(crate) struct Chan<T, W> {
    lock: RawLock,
    /// Buffer capacity: 0 = unbuffered (rendezvous), `usize::MAX` = unbounded.
    cap: usize,
    synced: DataCell<Synced<T, W>>,
}

// SAFETY: the raw entry pointers in the queues are only dereferenced under the lock, while
// their parties keep them alive (module protocol); values of T cross threads, hence T: Send.
unsafe impl<T: Send, W> Send for Chan<T, W> {}
// SAFETY: as above: all shared access to `synced` is under `lock`.
unsafe impl<T: Send, W> Sync for Chan<T, W> {}

impl<T, W: Park> Chan<T, W> {
    pub(crate) fn new(cap: usize) -> Chan<T, W> {
        // A bounded buffer is allocated once, up front (Go's makechan): no allocation per
        // operation. Unbounded grows as needed.
        let buf = if cap == usize::MAX {
            VecDeque::new()
        } else {
            VecDeque::with_capacity(cap)
        };
        Chan {
            lock: RawLock::new(),
            cap,
            synced: DataCell::new(Synced {
                buf,
                recvq: WaitQueue::new(),
                sendq: WaitQueue::new(),
                closed: false,
            }),
        }
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Access the guarded state.
    ///
    /// # Safety
    /// The caller holds `self.lock`.
    #[inline]
    pub(crate) unsafe fn synced<R>(&self, f: impl FnOnce(&mut Synced<T, W>) -> R) -> R {
        // SAFETY: the lock makes the access exclusive.
        unsafe { self.synced.with_mut(f) }
    }

    /// Lock, run `f` on the guarded state, unlock. `f` must not block.
    #[inline]
    pub(crate) fn locked<R>(&self, f: impl FnOnce(&mut Synced<T, W>) -> R) -> R {
        self.lock.lock();
        // SAFETY: locked just above.
        let r = unsafe { self.synced(f) };
        self.lock.unlock();
        r
    }

    /// Values buffered now.
    pub(crate) fn len(&self) -> usize {
        self.locked(|sy| sy.buf.len())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.locked(|sy| sy.closed)
    }

    /// Lock held: complete a send now if it can: hand `v` to a waiting receiver, else buffer
    /// it if there is room.
    fn try_send_locked(&self, sy: &mut Synced<T, W>, mut v: T) -> SendTry<T, W::Wakeup> {
        if sy.closed {
            return SendTry::Closed(v);
        }
        while let Some(e) = sy.recvq.pop_live() {
            // Direct hand-off into the receiver's slot (its buffer is empty: a live receiver
            // waits only then), then claim it.
            // SAFETY: lock held; the receiver reads its slot only after the claim.
            unsafe { e.slot.with_mut(|s| *s = Some(v)) };
            // SAFETY: dequeued under the lock we hold.
            match unsafe { e.claim() } {
                Some(w) => return SendTry::Sent(Some(w)),
                // Its deadline won: it never saw the value. Take it back, try the next one.
                // SAFETY: as above; the party reads its slot only after taking the lock.
                None => v = unsafe { e.take() }.unwrap_or_else(|| lost()),
            }
        }
        if sy.buf.len() < self.cap {
            sy.buf.push_back(v);
            return SendTry::Sent(None);
        }
        SendTry::Full(v)
    }

    /// Lock held: complete a receive now if it can: from a waiting sender (unbuffered), or
    /// the buffer's head (refilled from a waiting sender, Go's `recv`).
    fn try_recv_locked(&self, sy: &mut Synced<T, W>) -> RecvTry<T, W::Wakeup> {
        while let Some(e) = sy.sendq.pop_live() {
            // SAFETY: lock held; the sender reads its slot only after the claim.
            let sv = unsafe { e.take() }.unwrap_or_else(|| lost());
            // A live sender waits only while the buffer is full: take the head and put the
            // sender's value at the tail (FIFO order is kept). Unbuffered: take it directly.
            let (v, buffered) = match sy.buf.pop_front() {
                Some(head) => {
                    sy.buf.push_back(sv);
                    (head, true)
                }
                None => (sv, false),
            };
            // SAFETY: dequeued under the lock we hold.
            match unsafe { e.claim() } {
                Some(w) => return RecvTry::Got(v, Some(w)),
                None => {
                    // Its deadline won: undo, so the sender finds its value, and try the next.
                    let sv = if buffered {
                        let sv = sy.buf.pop_back().unwrap_or_else(|| lost());
                        sy.buf.push_front(v);
                        sv
                    } else {
                        v
                    };
                    // SAFETY: as above.
                    unsafe { e.slot.with_mut(|s| *s = Some(sv)) };
                }
            }
        }
        if let Some(v) = sy.buf.pop_front() {
            return RecvTry::Got(v, None);
        }
        if sy.closed {
            RecvTry::Closed
        } else {
            RecvTry::Empty
        }
    }

    /// Send `v`, blocking as `block` allows. A deadline already past is the caller's to turn
    /// into `Block::No`.
    pub(crate) fn send(&self, v: T, block: Block) -> Result<(), Failed<T>> {
        self.lock.lock();
        // SAFETY: locked.
        let v = match unsafe { self.synced(|sy| self.try_send_locked(sy, v)) } {
            SendTry::Sent(w) => {
                self.lock.unlock();
                if let Some(w) = w {
                    W::wake(w);
                }
                return Ok(());
            }
            SendTry::Closed(v) => {
                self.lock.unlock();
                return Err(Failed::Closed(v));
            }
            SendTry::Full(v) => v,
        };
        if block == Block::No {
            self.lock.unlock();
            return Err(Failed::NotReady(v));
        }
        let parker = Parker::<W>::new(false, block != Block::Forever);
        let entry = Entry::new(Some(v));
        entry.parker.set(&parker);
        // SAFETY: locked; `entry` lives in this frame until we return, and we return only
        // after a claim (which dequeued it) or after unlinking it ourselves under the lock.
        unsafe { self.synced(|sy| sy.sendq.push_back(&entry)) };
        // Releases the lock.
        if parker.waiter.wait(&self.lock, block.deadline()) {
            // Claimed: a receiver took the value (slot empty), or a close left it to us.
            // SAFETY: the notifier is done with the slot (it claimed after its last access).
            return match unsafe { entry.take() } {
                None => Ok(()),
                Some(v) => Err(Failed::Closed(v)),
            };
        }
        self.leave(&entry, true);
        // SAFETY: unlinked under the lock: nobody else can reach the entry any more.
        Err(Failed::NotReady(
            unsafe { entry.take() }.unwrap_or_else(|| lost()),
        ))
    }

    /// Receive, blocking as `block` allows.
    pub(crate) fn recv(&self, block: Block) -> Result<T, Failed<()>> {
        self.lock.lock();
        // SAFETY: locked.
        match unsafe { self.synced(|sy| self.try_recv_locked(sy)) } {
            RecvTry::Got(v, w) => {
                self.lock.unlock();
                if let Some(w) = w {
                    W::wake(w);
                }
                return Ok(v);
            }
            RecvTry::Closed => {
                self.lock.unlock();
                return Err(Failed::Closed(()));
            }
            RecvTry::Empty => {}
        }
        if block == Block::No {
            self.lock.unlock();
            return Err(Failed::NotReady(()));
        }
        let parker = Parker::<W>::new(false, block != Block::Forever);
        let entry = Entry::new(None);
        entry.parker.set(&parker);
        // SAFETY: as in `send`.
        unsafe { self.synced(|sy| sy.recvq.push_back(&entry)) };
        // Releases the lock.
        if parker.waiter.wait(&self.lock, block.deadline()) {
            // Claimed: a sender put a value in the slot, or a close left it empty.
            // SAFETY: as in `send`.
            return unsafe { entry.take() }.ok_or(Failed::Closed(()));
        }
        self.leave(&entry, false);
        Err(Failed::NotReady(()))
    }

    /// A timed-out party unlinks its entry (if no notifier did) under the lock; afterwards no
    /// notifier can reach it and the frame may die (park.rs's rule for timed waits).
    fn leave(&self, entry: &Entry<T, W>, sender: bool) {
        self.locked(|sy| {
            let q = if sender { &mut sy.sendq } else { &mut sy.recvq };
            // SAFETY: our live entry, on this queue or on none.
            unsafe { q.remove(entry) }
        });
    }

    /// Close: no more sends. Wakes every blocked receiver (they drain the buffer, then see the
    /// close) and every blocked sender (they get their value back). Returns false if the
    /// channel was already closed. The wake-ups run after the lock is released.
    pub(crate) fn close(&self) -> bool {
        self.lock.lock();
        // SAFETY: locked.
        let wakes = unsafe { self.synced(|sy| Self::close_locked(sy)) };
        self.lock.unlock();
        match wakes {
            None => false,
            Some(w) => {
                w.into_iter().for_each(W::wake);
                true
            }
        }
    }

    /// Close because the last receiver went away: as [`Self::close`], and also take the
    /// buffered values out, for the caller to drop outside the lock (a `Drop` of T is user
    /// code).
    pub(crate) fn disconnect_receivers(&self) -> VecDeque<T> {
        self.lock.lock();
        // SAFETY: locked.
        let (wakes, buf) =
            unsafe { self.synced(|sy| (Self::close_locked(sy), std::mem::take(&mut sy.buf))) };
        self.lock.unlock();
        wakes.into_iter().flatten().for_each(W::wake);
        buf
    }

    fn close_locked(sy: &mut Synced<T, W>) -> Option<Vec<W::Wakeup>> {
        if sy.closed {
            return None;
        }
        sy.closed = true;
        let mut wakes = Vec::new();
        // Receivers' slots stay empty, senders' slots keep their values: that is how each
        // party learns it was woken by the close.
        for q in [&mut sy.recvq, &mut sy.sendq] {
            while let Some(e) = q.pop_live() {
                // SAFETY: dequeued under the lock we hold. A timed-out party (None) is leaving.
                if let Some(w) = unsafe { e.claim() } {
                    wakes.push(w);
                }
            }
        }
        Some(wakes)
    }
}

/// A broken hand-over invariant (a value missing where the protocol put one).
#[cold]
fn lost() -> ! {
    crate::sched::fatal("channel: a value vanished from a wait-queue entry")
}

// ---------------------------------------------------------------------------------------------
// select.

/// One arm of a select, type-erased (each arm has its own element type).
pub(crate) trait Case<W: Park> {
    /// The lock of the arm's channel.
    fn lock(&self) -> &RawLock;
    /// Lock held: complete the arm now if it is ready (a receive that finds a value or a
    /// closed channel; a send that finds a receiver, room, or a closed channel). Returns the
    /// wake-up to perform, if any, after unlocking; `None` if not ready.
    ///
    /// # Safety
    /// The arm's channel lock is held.
    unsafe fn try_fire(&self) -> Option<Option<W::Wakeup>>;
    /// Lock held: queue this arm's entry for `parker`, as case `case`.
    ///
    /// # Safety
    /// The arm's channel lock is held; the arm stays in place and `parker` live until
    /// [`Self::dequeue`] ran under the lock.
    unsafe fn enqueue(&self, parker: *const Parker<W>, case: usize);
    /// Lock held: unlink this arm's entry if it is still queued.
    ///
    /// # Safety
    /// The arm's channel lock is held.
    unsafe fn dequeue(&self);
}

/// A select's receive arm. The result is left in the entry's slot (`Some(v)`: received;
/// `None`: the channel is closed and drained), wherever the arm fired.
pub(crate) struct RecvCase<'a, T, W> {
    chan: &'a Chan<T, W>,
    entry: Entry<T, W>,
}

impl<'a, T, W: Park> RecvCase<'a, T, W> {
    pub(crate) fn new(chan: &'a Chan<T, W>) -> Self {
        RecvCase {
            chan,
            entry: Entry::new(None),
        }
    }

    /// After this arm fired: the value, or `None` if the channel was closed.
    pub(crate) fn into_result(self) -> Option<T> {
        // SAFETY: the select returned: the entry is off every queue.
        unsafe { self.entry.take() }
    }
}

impl<T, W: Park> Case<W> for RecvCase<'_, T, W> {
    fn lock(&self) -> &RawLock {
        &self.chan.lock
    }

    unsafe fn try_fire(&self) -> Option<Option<W::Wakeup>> {
        // SAFETY: the caller holds the lock.
        let r = unsafe { self.chan.synced(|sy| self.chan.try_recv_locked(sy)) };
        match r {
            RecvTry::Got(v, w) => {
                // SAFETY: not queued yet: only we touch the slot.
                unsafe { self.entry.slot.with_mut(|s| *s = Some(v)) };
                Some(w)
            }
            RecvTry::Closed => Some(None),
            RecvTry::Empty => None,
        }
    }

    unsafe fn enqueue(&self, parker: *const Parker<W>, case: usize) {
        self.entry.parker.set(parker);
        self.entry.case.set(case);
        // SAFETY: lock held (contract); the entry stays in place until `dequeue`.
        unsafe { self.chan.synced(|sy| sy.recvq.push_back(&self.entry)) };
    }

    unsafe fn dequeue(&self) {
        // SAFETY: lock held; the entry is on this channel's receive queue or on none.
        unsafe { self.chan.synced(|sy| sy.recvq.remove(&self.entry)) };
    }
}

/// A select's send arm. The value waits in the entry's slot; it is still there after the arm
/// fired only if the channel was closed (the send failed).
pub(crate) struct SendCase<'a, T, W> {
    chan: &'a Chan<T, W>,
    entry: Entry<T, W>,
}

impl<'a, T, W: Park> SendCase<'a, T, W> {
    pub(crate) fn new(chan: &'a Chan<T, W>, v: T) -> Self {
        SendCase {
            chan,
            entry: Entry::new(Some(v)),
        }
    }

    /// After the select returned (whichever arm fired): the value if it was not sent.
    pub(crate) fn into_unsent(self) -> Option<T> {
        // SAFETY: the select returned: the entry is off every queue.
        unsafe { self.entry.take() }
    }
}

impl<T, W: Park> Case<W> for SendCase<'_, T, W> {
    fn lock(&self) -> &RawLock {
        &self.chan.lock
    }

    unsafe fn try_fire(&self) -> Option<Option<W::Wakeup>> {
        // SAFETY: not queued yet: only we touch the slot; the value is there (select polls
        // each arm once).
        let v = unsafe { self.entry.take() }.unwrap_or_else(|| lost());
        // SAFETY: the caller holds the lock.
        match unsafe { self.chan.synced(|sy| self.chan.try_send_locked(sy, v)) } {
            SendTry::Sent(w) => Some(w),
            SendTry::Closed(v) => {
                // SAFETY: as above.
                unsafe { self.entry.slot.with_mut(|s| *s = Some(v)) };
                Some(None)
            }
            SendTry::Full(v) => {
                // SAFETY: as above.
                unsafe { self.entry.slot.with_mut(|s| *s = Some(v)) };
                None
            }
        }
    }

    unsafe fn enqueue(&self, parker: *const Parker<W>, case: usize) {
        self.entry.parker.set(parker);
        self.entry.case.set(case);
        // SAFETY: as for RecvCase.
        unsafe { self.chan.synced(|sy| sy.sendq.push_back(&self.entry)) };
    }

    unsafe fn dequeue(&self) {
        // SAFETY: as for RecvCase.
        unsafe { self.chan.synced(|sy| sy.sendq.remove(&self.entry)) };
    }
}

/// Most arms a select may have (the scratch orders live on the stack).
pub(crate) const MAX_CASES: usize = 64;

/// A select's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Selected {
    /// This arm completed (its result is in the arm).
    Fired(usize),
    /// Nothing was ready (`Block::No`), or the deadline passed.
    NotReady,
}

/// Go's `selectgo`: complete exactly one ready arm, chosen uniformly at random among the
/// ready ones; or block on all of them until one completes (or the deadline passes).
///
/// 1. Random poll order (Fisher–Yates from `seed`); lock order by lock address, each lock
///    taken once however many arms share a channel.
/// 2. Lock all; poll each arm in poll order; the first ready one fires: unlock all, wake.
/// 3. Not ready and `Block::No`: unlock all, `NotReady`.
/// 4. Queue one entry per arm (all pointing to one select `Parker`), unlock all, wait.
/// 5. Lock all again and unlink every entry still queued — after a notification as after a
///    timeout: that is what keeps this frame alive while another channel's notifier may
///    still be looking at one of our entries (it holds that channel's lock). Unlock all.
/// 6. Notified: the notifier recorded the arm and completed it (`Parker::fired`).
pub(crate) fn select<W: Park, C>(
    cases: &[C],
    get: fn(&C) -> &dyn Case<W>,
    block: Block,
    seed: u64,
) -> Selected {
    let n = cases.len();
    assert!(
        n <= MAX_CASES,
        "gort: select: at most {MAX_CASES} arms (got {n})"
    );
    let arms = Arms { cases, get };
    let mut poll = [0u8; MAX_CASES];
    let mut order = [0u8; MAX_CASES];
    let mut rng = seed | 1;
    for i in 0..n {
        poll[i] = i as u8;
        order[i] = i as u8;
    }
    for i in (1..n).rev() {
        // xorshift64: the poll order only needs to be uniform, not unpredictable.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        // Lemire's multiply-shift: uniform in 0..=i.
        let j = ((rng >> 32) * (i as u64 + 1)) >> 32;
        poll.swap(i, j as usize);
    }
    let (poll, order) = (&poll[..n], &mut order[..n]);
    // Insertion sort by lock address: n is small.
    for i in 1..n {
        let mut j = i;
        while j > 0 && arms.addr(order[j - 1]) > arms.addr(order[j]) {
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    let locks = LockSet {
        arms: &arms,
        order: &*order,
    };

    locks.lock();
    for &i in poll {
        // SAFETY: every arm's lock is held.
        if let Some(w) = unsafe { arms.arm(i).try_fire() } {
            locks.unlock();
            if let Some(w) = w {
                W::wake(w);
            }
            return Selected::Fired(i as usize);
        }
    }
    if block == Block::No {
        locks.unlock();
        return Selected::NotReady;
    }
    let parker = Parker::<W>::new(true, block != Block::Forever);
    for &i in locks.order {
        // SAFETY: locks held; the arms are borrowed for this call and `parker` lives in this
        // frame; the loop after the wait unlinks every entry under the locks before we return.
        unsafe { arms.arm(i).enqueue(&parker, i as usize) };
    }
    // Releases every lock. The set lives in this frame and is read (by the scheduler, for a
    // parking goroutine) while a notifier may already have woken us: safe, because we cannot get
    // past `locks.lock()` below before the last lock is released, the last access.
    let notified = parker.waiter.wait(&locks, block.deadline());
    locks.lock();
    for &i in locks.order {
        // SAFETY: locks held.
        unsafe { arms.arm(i).dequeue() };
    }
    locks.unlock();
    if notified {
        Selected::Fired(parker.fired())
    } else {
        Selected::NotReady
    }
}

/// A select's arms, type-erased through `get`.
struct Arms<'c, C, W> {
    cases: &'c [C],
    get: fn(&C) -> &dyn Case<W>,
}

impl<C, W: Park> Arms<'_, C, W> {
    #[inline]
    fn arm(&self, i: u8) -> &dyn Case<W> {
        (self.get)(&self.cases[i as usize])
    }

    #[inline]
    fn addr(&self, i: u8) -> usize {
        self.arm(i).lock().addr()
    }
}

/// The locks of a select's channels, in address order (each distinct lock once).
struct LockSet<'a, 'c, C, W> {
    arms: &'a Arms<'c, C, W>,
    order: &'a [u8],
}

impl<C, W: Park> LockSet<'_, '_, C, W> {
    fn lock(&self) {
        let mut last = 0;
        for &i in self.order {
            let l = self.arms.arm(i).lock();
            if l.addr() != last {
                l.lock();
                last = l.addr();
            }
        }
    }
}

impl<C, W: Park> Unlock for LockSet<'_, '_, C, W> {
    /// Collects the distinct locks first, then releases them from that local copy. Once a
    /// lock is released a notifier may wake the party, and when the scheduler runs this for a
    /// parked goroutine the party may run at once: it cannot get past re-taking every lock
    /// before our last release, but after that its frame (`self`) may be gone, so nothing of
    /// it is read once the releases begin.
    fn unlock(&self) {
        let mut locks = [ptr::null::<RawLock>(); MAX_CASES];
        let mut k = 0;
        let mut last = 0;
        for &i in self.order {
            let l = self.arms.arm(i).lock();
            if l.addr() != last {
                locks[k] = l;
                k += 1;
                last = l.addr();
            }
        }
        for &l in &locks[..k] {
            // SAFETY: the channels outlive the party's select, which cannot return before
            // the last of these locks is released.
            unsafe { (*l).unlock() };
        }
    }
}
