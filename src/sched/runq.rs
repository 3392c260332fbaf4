//! The per-P run queue: a lock-free single-producer/multi-consumer ring of 256 goroutine
//! pointers plus a `runnext` slot (Go's `runqput`, `runqget`, `runqgrab`, `runqsteal`).
//!
//! # Model
//!
//! Every P owns one [`RunQueue`]. At any moment one thread is its **owner**: the M that holds
//! the P. Ps move between Ms only through the scheduler's P hand-off, which is itself a
//! release/acquire edge, so to this file the successive owners of a P are one thread. "Owner
//! only" on a function means: called by the thread that currently holds this queue's P.
//!
//! - The owner is the only **producer**: it alone writes `tail`, the ring slots, and non-null
//!   values into `runnext`.
//! - **Consumers** are the owner ([`RunQueue::pop`], [`RunQueue::drain`], the overflow path of
//!   [`RunQueue::push`]) and any number of **thieves** (other Ps' Ms, in
//!   [`RunQueue::steal_into`]). All consumers take items the same way: copy slots out, then
//!   claim them by a CAS on `head`.
//! - **Observers** ([`RunQueue::len`], [`RunQueue::is_empty`]) may run on any thread; they
//!   read and never write.
//!
//! The queue stores `NonNull<T>` that it does not own; it never dereferences them. Handing a
//! pointer in gives the queue the right to pass it to exactly one consumer, which gets with it
//! everything the producer wrote to the pointee before the push (the release/acquire pairs
//! below carry it). The scheduler stores `G`s; the loom models store a dummy type.
//!
//! Positions are free-running `u32` counters: the queued items are positions `head..tail`
//! (wrapping arithmetic), and position `p` lives in slot `p % RUNQ_SIZE`.
//!
//! # Invariants
//!
//! 1. `tail - head <= RUNQ_SIZE`. The owner writes the slot of position `p >= tail` only after
//!    reading a `head` with `p - head < RUNQ_SIZE`, so it never overwrites a queued item.
//! 2. `head` only moves forward, only by CAS, and never past `tail`: a consumer moves it from
//!    `h` to `h + n` only after reading a `tail >= h + n`.
//! 3. `runnext` becomes non-null only by an owner store; anyone may clear it, only by an RMW
//!    from the value it read, so a pointer in `runnext` is taken at most once.
//! 4. An item is in exactly one place: `runnext`, a queued position, or the hands of the one
//!    thread that took it (the owner, while it moves an item from `runnext` to the ring, or a
//!    consumer).
//!
//! # Protocol
//!
//! - **Put** (owner): read `head`; if `tail - head < RUNQ_SIZE`, store the pointer into slot
//!   `tail`, then publish it by storing `tail + 1`. Otherwise the ring is full: take its older
//!   half like any consumer (copy `head..head + 128`, CAS `head`) and hand those 128 plus the new
//!   item to the caller's `spill`, which moves them to the global queue in one locked splice
//!   (Go's `runqputslow`). If that CAS fails a thief has just made room: retry the put.
//! - **Take** (any consumer): read `head = h` and `tail = t`, copy the slots of `h..h + n`,
//!   then CAS `head` from `h` to `h + n`. The CAS succeeding is what makes the copy valid.
//!   Thieves take `n = ceil((t - h) / 2)`; `pop` takes one.
//! - **Why copy first, and why slots are atomics** (Go's comment on `runqgrab`): a thief may
//!   read `h` and `t`, stall, and meanwhile other consumers advance `head` and the owner,
//!   seeing room, overwrites the very slots the thief is copying. The thief's values are then
//!   garbage, but its CAS from the stale `h` fails (`head` has moved on), so the garbage is
//!   thrown away. Copying after the CAS would be too late: once `head` has moved the owner may
//!   reuse the slots at any moment. Since such a read really does race with the owner's
//!   store, every slot access is an atomic (Relaxed) load or store; with plain memory it would
//!   be a data race even though the value is discarded. Conversely, if the CAS succeeds, no
//!   slot that was copied has been overwritten: the owner writes the slot of position
//!   `h + i` again only after it reads a `head` past `h + i`, which is later in `head`'s
//!   modification order than our `h`, and a CAS from `h` cannot succeed after that.
//! - **Steal** (thief = owner of `dst`): the copy of the take goes straight into `dst`'s free
//!   slots (no intermediate buffer), except the last item, which is returned to run at once;
//!   `dst.tail` is published only after the victim's CAS succeeded, so a failed attempt leaves
//!   only unpublished garbage in `dst`. Thieves take at most as many as `dst` has room for
//!   (plus the one returned), so a thief with a non-empty queue stays correct, just less useful.
//! - **runnext** (Go's `runnext`): the owner puts a G it just made runnable (`push(g, true)`)
//!   into `runnext` so that it runs next and inherits the current time slice (a
//!   sender/receiver pair ping-pongs without waiting behind the whole ring). The previous
//!   occupant, if any, is kicked to the tail of the ring. `pop` tries `runnext` first. A thief
//!   takes `runnext` only when asked to and only when the ring is empty: normally the owner
//!   is about to run it, so the scheduler first waits ~3 µs (Go's `usleep(3)`) if the victim
//!   is running; [`RunQueue::steal_into_with`] takes that wait as a closure.
//!
//! # Orderings
//!
//! | operation | ordering | synchronises with | so that |
//! |---|---|---|---|
//! | owner stores slot `t`, then `tail = t + 1` | Relaxed, Release | thieves' and observers' `tail` load-acquire | the slot and the item's contents are visible to whoever sees the new tail |
//! | consumer CAS `head` | Release | the owner's `head` load-acquire in put | the consumer's slot reads happen before the owner reuses those slots (without it, a relaxed read could return the owner's *later* store: a lost and a duplicated item) |
//! | thief loads `head`, then `tail` | Acquire, Acquire | other consumers' CAS-release; the owner's tail store-release | `t >= h` unless the queue really moved between the loads; the copied items are visible |
//! | owner loads `tail` | Relaxed | — | the owner is the only writer: it reads its own last store |
//! | owner's `head` load in `pop` | Relaxed | — | it reads only slots it wrote itself; a stale `h` just fails the CAS |
//! | owner puts into `runnext` (swap) | SeqCst | a thief's CAS-acquire, observers' load-acquire; the idle protocol's SeqCst ops | the item's contents are visible to the thief that takes it; the wake-up Dekker (below) |
//! | owner clears `runnext` in `pop` (CAS) | Release | observers' load-acquire | see *Emptiness* |
//! | thief clears `runnext` (CAS) | Acquire | the owner's swap (its release half) | the item's contents |
//!
//! Each pair above is a plain message-passing edge, except one: the cross-variable "did anyone
//! see my store" question of the spinning-M dance (`sched/mod.rs`) needs a StoreLoad barrier
//! between publishing a G and reading `nmspinning`. The scheduler publishes woken Gs with
//! `push(g, true)`, so that barrier is the `runnext` swap, made SeqCst (free on x86_64). A
//! put at the tail (`push(g, false)`, `push_batch`) is only Release: a caller that follows one
//! with a wake-up check must add its own `fence(SeqCst)`. The other side (a spinner's SeqCst
//! decrement and fence before `is_empty`) is the idle protocol's.
//!
//! # Emptiness (`is_empty`, Go's `runqempty`)
//!
//! An observer must not report an empty queue while an item is only being moved inside it.
//! The trap (Go's comment): `runnext = G1`, ring empty. The observer reads `head == tail`;
//! the owner runs `push(G2, true)`, which kicks G1 into the ring, then `pop`, which takes G2
//! out of `runnext`; the observer then reads `runnext == null` and would conclude "empty"
//! although G1 never left. So the observer reads `head`, `tail`, `runnext`, then `tail` again, and trusts
//! the snapshot only if both `tail` reads agree. Argument: G1's kick stores `tail = t0 + 1`
//! before the `pop` clears `runnext` with a release CAS. If the observer's acquire load of
//! `runnext` reads that null, the kick's tail store happens before the second `tail` read,
//! which therefore returns at least `t0 + 1`. Either the first read returned `t0` (the reads
//! disagree: retry) or it already returned `t0 + 1`, and then `head <= t0 < tail` (G1 is still
//! queued): not empty. If the observer instead reads a non-null `runnext`, it is not empty
//! either. Tested by the loom model `emptiness_during_kick`.
//!
//! What remains racy is inherent and harmless: an item can be in nobody's slot while the owner
//! holds it between clearing `runnext` and storing `tail` (e.g. a thief took the new `runnext`
//! in that window), and items may be stolen at any time. The owner is running in both cases and
//! will publish or run the item; a scheduler that needs "no lost wake-up" pairs the check with
//! the owner's wake-up after every put (Go's `ready` → `runqput` → `wakep`).
//!
//! # Limits
//!
//! Positions wrap at 2^32. A thief that stalls between its `head` load and its CAS while the
//! queue advances by exactly a multiple of 2^32 would pass a stale CAS (ABA); that is billions
//! of operations during one stall, the same bet as Go's and tokio's 32-bit indices.
//!
//! # Rejected designs
//!
//! - **A mutex around a `VecDeque`**: a lock round-trip on every yield and a serialisation
//!   point for thieves; the ring costs one uncontended CAS per pop.
//! - **Chase–Lev work-stealing deque** (owner pushes and pops at the same end): LIFO for the
//!   owner starves the oldest Gs, and its pop needs a SeqCst fence against thieves. Go's FIFO
//!   ring plus `runnext` keeps fairness and the producer/consumer locality without that fence.
//! - **tokio's packed head** (a `u64` of "real head" and "steal head": a thief claims slots
//!   before copying them, and the owner does not reuse them until it is done): thieves'
//!   copies never race, but every pop CASes the pair, and while a steal is in flight the owner
//!   cannot move half the ring out, so overflow goes to the global queue one item at a time.
//!   Go's optimistic copy is simpler, and a failed copy costs at most 128 discarded loads.
//! - **Spilling one item at a time** to the global queue when full: Go moves half the ring in
//!   one locked splice so a producer in a tight loop takes the global lock once per 128 items.

use core::fmt;
use core::ptr::{self, NonNull};

use crate::loom::{AtomicPtr, AtomicU32, Ordering};

/// Slots in a P's ring (Go's 256). Under `cfg(loom)` the ring shrinks to 4 so that the models
/// reach "full" and "wrapped" within loom's budget.
#[cfg(not(loom))]
pub(crate) const RUNQ_SIZE: usize = 256;
/// Slots in a P's ring: 4 under `cfg(loom)` (256 otherwise).
#[cfg(loom)]
pub(crate) const RUNQ_SIZE: usize = 4;

const _: () = assert!(RUNQ_SIZE.is_power_of_two() && RUNQ_SIZE >= 2 && RUNQ_SIZE <= 1 << 30);

/// `RUNQ_SIZE` as a position difference.
const CAP: u32 = RUNQ_SIZE as u32;
/// How many ring items an overflow moves to the global queue (plus the one being pushed).
const HALF: u32 = CAP / 2;
/// Position to slot index.
const MASK: usize = RUNQ_SIZE - 1;

/// A P's local run queue. See the module essay for the protocol.
///
/// `Send + Sync` whatever `T` is: it only stores and returns raw pointers; what the pointers
/// may be used for on another thread is the caller's business (it needs `unsafe` to use them).
pub(crate) struct RunQueue<T> {
    /// Next position to take. Written only by successful consumer CASes.
    head: AtomicU32,
    /// Next position to fill. Written only by the owner.
    tail: AtomicU32,
    /// The item to run next, inheriting the time slice; null when empty.
    runnext: AtomicPtr<T>,
    /// Position `p` lives in `ring[p % RUNQ_SIZE]`; meaningful only for `head <= p < tail`.
    ring: [AtomicPtr<T>; RUNQ_SIZE],
}

/// What a take from the victim's ring or `runnext` yielded (`RunQueue::grab`).
enum Grab<T> {
    /// Nothing to take.
    Empty,
    /// `n >= 1` items: the first `n - 1` were copied into the thief's slots from its tail on,
    /// `last` is the n-th.
    Taken { n: u32, last: *mut T },
}

impl<T> RunQueue<T> {
    /// An empty queue.
    pub(crate) fn new() -> Self {
        Self::starting_at(0)
    }

    /// An empty queue whose positions start at `pos` (tests start near `u32::MAX` to cross
    /// the wrap).
    fn starting_at(pos: u32) -> Self {
        RunQueue {
            head: AtomicU32::new(pos),
            tail: AtomicU32::new(pos),
            runnext: AtomicPtr::new(ptr::null_mut()),
            ring: core::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    /// The slot of position `pos`.
    #[inline]
    fn slot(&self, pos: u32) -> &AtomicPtr<T> {
        &self.ring[pos as usize & MASK]
    }

    /// **Owner only.** Puts `t` on the queue.
    ///
    /// With `next`, `t` goes to `runnext` (it runs next and inherits the time slice) and the
    /// previous `runnext`, if any, is kicked to the tail of the ring. Otherwise `t` goes to the
    /// tail.
    ///
    /// If the ring is full, its older half plus the item being put on the ring are taken off
    /// in one go (Go's `runqputslow`) and handed to `spill`, oldest first: `RUNQ_SIZE / 2 + 1`
    /// items. The caller moves them to the global queue under its lock in one splice. `spill`
    /// is called at most once, and not at all when the item fits; it must not push to this
    /// queue (it would only refill it).
    #[inline]
    pub(crate) fn push(
        &self,
        t: NonNull<T>,
        next: bool,
        spill: impl FnOnce(&mut dyn Iterator<Item = NonNull<T>>),
    ) {
        let mut t = t;
        if next {
            // Release part: pairs with a thief's CAS-acquire and observers' load-acquire of
            // `runnext`, so whoever takes `t` from there sees what the owner wrote to it. The
            // value read back is the owner's own earlier store (or a thief's null), so it
            // needs no acquire.
            // SeqCst: this swap is the submitter's StoreLoad barrier in the idle protocol
            // (`sched/mod.rs`, `idle::wakep`): it must precede wakep's SeqCst load of
            // `nmspinning` in the single total order, so that a spinner that then fences and
            // re-checks this queue sees `t`. Free on x86_64 (`xchg` is a full barrier anyway),
            // `swpal` instead of `swpl` on aarch64.
            let old = self.runnext.swap(t.as_ptr(), Ordering::SeqCst);
            match NonNull::new(old) {
                None => return,
                // Kick the old runnext out to the tail: it loses its privilege.
                Some(old) => t = old,
            }
        }
        self.push_back(t, spill);
    }

    /// Owner only: `push` at the tail.
    #[inline]
    fn push_back(&self, t: NonNull<T>, spill: impl FnOnce(&mut dyn Iterator<Item = NonNull<T>>)) {
        // Relaxed: the owner is the only writer of `tail`; it reads its own last store.
        let tail = self.tail.load(Ordering::Relaxed);
        loop {
            // Acquire: pairs with consumers' CAS-release of `head`, so their copies of the
            // slots we are about to reuse happened before our store below.
            let head = self.head.load(Ordering::Acquire);
            if tail.wrapping_sub(head) < CAP {
                // Relaxed: published by the release store of `tail` just below.
                self.slot(tail).store(t.as_ptr(), Ordering::Relaxed);
                // Release: pairs with thieves' and observers' load-acquire of `tail`: the slot
                // and the item's contents are visible to whoever sees the new tail.
                self.tail.store(tail.wrapping_add(1), Ordering::Release);
                return;
            }
            if let Some(batch) = self.take_half(head, tail, t) {
                spill(&mut batch.iter().copied().flatten());
                return;
            }
            // A consumer took items meanwhile: there is room now.
        }
    }

    /// Owner only, ring full (`tail - head == RUNQ_SIZE`): takes positions
    /// `head..head + RUNQ_SIZE / 2` off the ring and returns them followed by `t`, or `None` if
    /// a consumer moved `head` first (then the ring is no longer full).
    #[cold]
    #[inline(never)]
    fn take_half(
        &self,
        head: u32,
        tail: u32,
        t: NonNull<T>,
    ) -> Option<[Option<NonNull<T>>; HALF as usize + 1]> {
        if tail.wrapping_sub(head) != CAP {
            fatal("push: ring overflow path entered with a ring that is not full");
        }
        let mut batch = [None; HALF as usize + 1];
        for (i, b) in batch.iter_mut().take(HALF as usize).enumerate() {
            // Relaxed: our own stores (we are the only writer of slots).
            *b = NonNull::new(
                self.slot(head.wrapping_add(i as u32))
                    .load(Ordering::Relaxed),
            );
        }
        // Release: pairs with thieves' and observers' `head` load-acquire (keeps their
        // `tail >= head`). Failure: Relaxed, the caller reloads `head`.
        self.head
            .compare_exchange(
                head,
                head.wrapping_add(HALF),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .ok()?;
        if batch[..HALF as usize].iter().any(Option::is_none) {
            fatal("push: null pointer in a queued slot");
        }
        batch[HALF as usize] = Some(t);
        Some(batch)
    }

    /// **Owner only.** Puts `items` at the tail, in order (used after taking a batch from the
    /// global queue, which the scheduler sizes to at most `RUNQ_SIZE / 2`).
    ///
    /// Items that do not fit are not forced in: the ones that fit go on the ring and the rest
    /// are handed to `spill`, in order, for the caller to put back on the global queue (same
    /// contract as [`RunQueue::push`], but nothing already queued is moved: the caller just took
    /// these from the global queue, so returning the excess is the cheap fix). `spill` is
    /// called at most once, and only if something did not fit.
    pub(crate) fn push_batch(
        &self,
        items: &[NonNull<T>],
        spill: impl FnOnce(&mut dyn Iterator<Item = NonNull<T>>),
    ) {
        // Relaxed: the owner is the only writer of `tail`.
        let tail = self.tail.load(Ordering::Relaxed);
        // Acquire: pairs with consumers' CAS-release of `head`: their copies of the slots we
        // reuse happened before our stores.
        let head = self.head.load(Ordering::Acquire);
        let room = (CAP - tail.wrapping_sub(head)) as usize;
        let fit = items.len().min(room);
        for (i, t) in items[..fit].iter().enumerate() {
            // Relaxed: published by the release store of `tail` below.
            self.slot(tail.wrapping_add(i as u32))
                .store(t.as_ptr(), Ordering::Relaxed);
        }
        if fit > 0 {
            // Release: pairs with thieves' and observers' `tail` load-acquire (publishes the
            // slots and the items' contents).
            self.tail
                .store(tail.wrapping_add(fit as u32), Ordering::Release);
        }
        if fit < items.len() {
            spill(&mut items[fit..].iter().copied());
        }
    }

    /// **Owner only** (it also takes from the ring by CAS, so it is safe against concurrent
    /// thieves). Returns the next item and whether it inherits the current time slice (true
    /// when it came from `runnext`).
    #[inline]
    pub(crate) fn pop(&self) -> Option<(NonNull<T>, bool)> {
        // Relaxed: only the owner stores non-null here, so a non-null value is our own store.
        let next = self.runnext.load(Ordering::Relaxed);
        if !next.is_null() {
            // Fails only if a thief took it (thieves only clear it), so no retry.
            // Release: pairs with observers' `runnext` load-acquire: an observer that sees
            // this null also sees the `tail` store of an earlier kick (see "Emptiness").
            // Failure: Relaxed, the value is not used.
            if self
                .runnext
                .compare_exchange(next, ptr::null_mut(), Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return NonNull::new(next).map(|g| (g, true));
            }
        }
        // Relaxed: the owner is the only writer of `tail`.
        let tail = self.tail.load(Ordering::Relaxed);
        // Relaxed: we read only slots we stored ourselves; a stale `head` makes the CAS fail
        // and hands us the current one.
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            if head == tail {
                return None;
            }
            // Relaxed: our own store; validated by the CAS below.
            let t = self.slot(head).load(Ordering::Relaxed);
            // Release: pairs with thieves' and observers' `head` load-acquire (keeps their
            // `tail >= head`). The owner's own later reuse of the slot is program-ordered.
            // Failure: Relaxed, we only retry with the returned value.
            match self.head.compare_exchange_weak(
                head,
                head.wrapping_add(1),
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let Some(t) = NonNull::new(t) else {
                        fatal("pop: null pointer in a queued slot")
                    };
                    return Some((t, false));
                }
                Err(current) => head = current,
            }
        }
    }

    /// Called by the **owner of `dst`** (the thief); `self` is the victim (any other P).
    /// Steals half of the victim's ring (rounded up) into `dst`'s ring and returns one of the
    /// stolen items to run now, or `None` if there was nothing to steal.
    ///
    /// With `steal_runnext`, if the victim's ring is empty, its `runnext` is taken
    /// immediately. The scheduler normally waits ~3 µs first when the victim is running
    /// (Go's `usleep(3)` in `runqgrab`), so that the victim can run its `runnext` itself; use
    /// [`RunQueue::steal_into_with`] for that.
    ///
    /// Takes no more than `dst` has room for (plus the returned item), so it is correct for any
    /// `dst`, though the scheduler only steals when its own queue is empty. Stealing from
    /// oneself is a fatal error.
    #[inline]
    #[cfg(any(test, loom))]
    pub(crate) fn steal_into(&self, dst: &RunQueue<T>, steal_runnext: bool) -> Option<NonNull<T>> {
        self.steal_into_with(dst, steal_runnext, || {})
    }

    /// [`RunQueue::steal_into`] with the `runnext` back-off: with `steal_runnext`, each time the
    /// thief is about to take the victim's `runnext` (ring empty, `runnext` set) it first calls
    /// `steal_runnext_delay`, which the scheduler makes sleep ~3 µs when the victim P is running
    /// and not in a syscall (Go's rule), and do nothing otherwise. If the victim ran its
    /// `runnext` meanwhile, the steal starts over (and may call the delay again).
    pub(crate) fn steal_into_with(
        &self,
        dst: &RunQueue<T>,
        steal_runnext: bool,
        steal_runnext_delay: impl FnMut(),
    ) -> Option<NonNull<T>> {
        if ptr::eq(self, dst) {
            fatal("steal_into: a P cannot steal from itself");
        }
        // Relaxed: we own `dst`; we read our own last store.
        let dst_tail = dst.tail.load(Ordering::Relaxed);
        // Acquire: pairs with the CAS-release of `dst`'s consumers, so their copies out of
        // the slots we are about to fill happened before our stores. (Go reads this after
        // the copy, which only x86's TSO makes safe.)
        let dst_head = dst.head.load(Ordering::Acquire);
        let room = CAP - dst_tail.wrapping_sub(dst_head);
        let Grab::Taken { n, last } =
            self.grab(dst, dst_tail, room + 1, steal_runnext, steal_runnext_delay)
        else {
            return None;
        };
        let Some(last) = NonNull::new(last) else {
            fatal("steal_into: null pointer in a queued slot")
        };
        if n > 1 {
            // Release: pairs with the load-acquire of `tail` by `dst`'s thieves and observers:
            // publishes the copied slots and, transitively (we acquired the victim's tail),
            // the items' contents.
            dst.tail
                .store(dst_tail.wrapping_add(n - 1), Ordering::Release);
        }
        Some(last)
    }

    /// Any consumer but the owner (Go's `runqgrab`): takes `ceil(len / 2)` items, at most
    /// `max >= 1`, from this queue's ring, copying all but the last into `dst`'s slots from
    /// position `dst_tail` on (the caller owns `dst` and has checked the room); with
    /// `steal_runnext`, takes `runnext` if the ring is empty.
    fn grab(
        &self,
        dst: &RunQueue<T>,
        dst_tail: u32,
        max: u32,
        steal_runnext: bool,
        mut steal_runnext_delay: impl FnMut(),
    ) -> Grab<T> {
        loop {
            // Acquire: pairs with other consumers' CAS-release of `head`; the tail they read
            // before moving it is then visible, so the `tail` read below is at least `head`
            // unless the queue really moved in between.
            let head = self.head.load(Ordering::Acquire);
            // Acquire: pairs with the owner's release store of `tail`: the slots of
            // `head..tail` and the items' contents are visible.
            let tail = self.tail.load(Ordering::Acquire);
            let len = tail.wrapping_sub(head);
            let n = len - len / 2;
            if n == 0 {
                if steal_runnext {
                    // Relaxed: only the CAS's expected value; the CAS below acquires.
                    let next = self.runnext.load(Ordering::Relaxed);
                    if !next.is_null() {
                        steal_runnext_delay();
                        // Acquire: pairs with the owner's swap-release that put `next` there
                        // (its latest one, if the same pointer came back), so the item's
                        // contents are visible. Failure: Relaxed, we start over.
                        if self
                            .runnext
                            .compare_exchange(
                                next,
                                ptr::null_mut(),
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_err()
                        {
                            continue;
                        }
                        return Grab::Taken { n: 1, last: next };
                    }
                }
                return Grab::Empty;
            }
            if n > HALF {
                // `head` and `tail` were read at different moments and are inconsistent
                // (the queue moved by more than a ring in between): read again.
                continue;
            }
            let n = n.min(max);
            for i in 0..n - 1 {
                // Relaxed both: the load is validated by the CAS below and ordered after
                // our tail load-acquire; the store is published by the caller's release
                // store of `dst.tail`.
                let t = self.slot(head.wrapping_add(i)).load(Ordering::Relaxed);
                dst.slot(dst_tail.wrapping_add(i))
                    .store(t, Ordering::Relaxed);
            }
            // Relaxed: as above.
            let last = self.slot(head.wrapping_add(n - 1)).load(Ordering::Relaxed);
            // Release: pairs with the owner's `head` load-acquire in `push`: our slot reads
            // happen before it reuses those slots (see the Orderings table). Failure: Relaxed,
            // we start over with fresh loads.
            if self
                .head
                .compare_exchange_weak(
                    head,
                    head.wrapping_add(n),
                    Ordering::Release,
                    Ordering::Relaxed,
                )
                .is_ok()
            {
                return Grab::Taken { n, last };
            }
        }
    }

    /// **Any thread.** A racy snapshot: items on the ring plus one if `runnext` is set.
    /// Never reports 0 while an item is merely moving from `runnext` to the ring (see
    /// "Emptiness" in the module docs).
    pub(crate) fn len(&self) -> usize {
        let (ring, next) = self.snapshot();
        ring as usize + usize::from(next)
    }

    /// **Any thread.** Go's `runqempty`: racy, but never true spuriously in the sense of
    /// "Emptiness" in the module docs (an item moving from `runnext` to the ring by the owner's
    /// `push(_, true)` is never missed).
    pub(crate) fn is_empty(&self) -> bool {
        self.snapshot() == (0, false)
    }

    /// Ring length and whether `runnext` is set, from reads that agree on `tail`.
    fn snapshot(&self) -> (u32, bool) {
        loop {
            // Acquire: pairs with consumers' CAS-release of `head`, so the `tail` read below
            // is at least this `head` unless the queue moved meanwhile.
            let head = self.head.load(Ordering::Acquire);
            // Acquire: pairs with the owner's release store of `tail`, and keeps the
            // `runnext` read below after this one.
            let tail = self.tail.load(Ordering::Acquire);
            // Acquire: pairs with the owner's CAS-release in `pop` that clears `runnext`: if
            // we see that null, the `tail` store of any earlier kick is visible to the
            // re-read below.
            let next = self.runnext.load(Ordering::Acquire);
            // Relaxed: ordered after the acquire load above, which is all the argument needs.
            if self.tail.load(Ordering::Relaxed) != tail {
                continue;
            }
            let ring = tail.wrapping_sub(head);
            if ring > CAP {
                // Inconsistent `head`/`tail` (read at different moments): read again.
                continue;
            }
            return (ring, !next.is_null());
        }
    }

    /// **Owner only**, when a P is destroyed (GOMAXPROCS shrinks) or at shutdown: takes
    /// everything out, `runnext` first, then the ring oldest first, and gives each item to
    /// `f`. Concurrent thieves may still take some; whatever `f` does not get, a thief got.
    /// `f` may do anything but push to this queue (that would keep it from ever draining).
    pub(crate) fn drain(&self, mut f: impl FnMut(NonNull<T>)) {
        // One item at a time through `pop`: each is fully ours before `f` sees it, whatever
        // `f` does. This runs once per P's lifetime; its cost does not matter.
        while let Some((t, _)) = self.pop() {
            f(t);
        }
    }
}

impl<T> fmt::Debug for RunQueue<T> {
    /// Racy, like `len`: for traces and assertions messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (ring, next) = self.snapshot();
        f.debug_struct("RunQueue")
            .field("ring", &ring)
            .field("runnext", &next)
            .finish()
    }
}

/// A broken run-queue invariant or contract: print and abort (`gort: fatal: ...`), never
/// unwind through the scheduler.
#[cfg(not(loom))]
#[cold]
#[inline(never)]
fn fatal(what: &str) -> ! {
    eprintln!("gort: fatal: runq: {what}");
    std::process::abort()
}

/// Under loom, a panic, so that the model checker reports the failing interleaving.
#[cfg(loom)]
#[cold]
#[inline(never)]
fn fatal(what: &str) -> ! {
    panic!("gort: fatal: runq: {what}")
}

/// `RunQueue<T>` is `Send + Sync` for every `T`, including `!Send` ones.
const _: () = {
    const fn send_sync<Q: Send + Sync>() {}
    send_sync::<RunQueue<core::cell::Cell<u8>>>();
};

/// Items for the tests: an id and a payload that the producer writes before the push and the
/// consumer checks after the take (under loom, through `loom::cell::UnsafeCell`, so a missing
/// happens-before edge is reported as a data race).
#[cfg(test)]
mod test_support {
    use core::ptr::NonNull;

    #[cfg(loom)]
    use loom::cell::UnsafeCell;
    #[cfg(not(loom))]
    use std::cell::UnsafeCell;

    pub(super) struct Item {
        pub(super) id: usize,
        payload: UnsafeCell<usize>,
    }

    // SAFETY: `payload` is written only by the thread that pushes the item and read only by
    // the one consumer that took it; the run queue's release/acquire pairs order the two (that
    // is what the tests check).
    unsafe impl Sync for Item {}

    impl Item {
        fn payload_for(id: usize) -> usize {
            id.wrapping_mul(0x9e37_79b9) ^ 0x5555
        }
    }

    /// `n` items with ids `0..n`.
    pub(super) fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|id| Item {
                id,
                payload: UnsafeCell::new(0),
            })
            .collect()
    }

    /// Producer side: write the payload, return the pointer to push.
    pub(super) fn prepare(item: &Item) -> NonNull<Item> {
        let v = Item::payload_for(item.id);
        #[cfg(loom)]
        // SAFETY: the item is not on any queue yet: we are its only user.
        item.payload.with_mut(|p| unsafe { *p = v });
        #[cfg(not(loom))]
        // SAFETY: the item is not on any queue yet: we are its only user.
        unsafe {
            *item.payload.get() = v
        };
        NonNull::from(item)
    }

    /// Consumer side: check the payload is visible, return the id.
    pub(super) fn take(p: NonNull<Item>) -> usize {
        // SAFETY: items outlive the queues in every test, and the consumer that took `p` from
        // a queue is its only user now.
        let item = unsafe { p.as_ref() };
        #[cfg(loom)]
        // SAFETY: as above.
        let v = item.payload.with(|p| unsafe { *p });
        #[cfg(not(loom))]
        // SAFETY: as above.
        let v = unsafe { *item.payload.get() };
        assert_eq!(
            v,
            Item::payload_for(item.id),
            "item {} taken without its payload",
            item.id
        );
        item.id
    }

    /// Asserts each of `0..n` appears exactly once in `seen`.
    pub(super) fn assert_exactly_once(n: usize, seen: &[usize]) {
        let mut count = vec![0u32; n];
        for &id in seen {
            count[id] += 1;
        }
        for (id, &c) in count.iter().enumerate() {
            assert_eq!(c, 1, "item {id} seen {c} times (seen: {seen:?})");
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::test_support::{Item, assert_exactly_once, items, prepare, take};
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering as StdOrdering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    fn no_spill(_: &mut dyn Iterator<Item = NonNull<Item>>) {
        panic!("unexpected spill");
    }

    fn pop_ids(q: &RunQueue<Item>) -> Vec<(usize, bool)> {
        let mut out = Vec::new();
        while let Some((p, inherit)) = q.pop() {
            out.push((take(p), inherit));
        }
        out
    }

    #[test]
    fn fifo_and_empty() {
        let it = items(10);
        let q = RunQueue::new();
        assert!(q.is_empty());
        assert_eq!(q.len(), 0);
        assert!(q.pop().is_none());
        for i in &it {
            q.push(prepare(i), false, no_spill);
        }
        assert_eq!(q.len(), 10);
        assert!(!q.is_empty());
        let got = pop_ids(&q);
        assert_eq!(got, (0..10).map(|i| (i, false)).collect::<Vec<_>>());
        assert!(q.is_empty());
    }

    #[test]
    fn runnext_runs_first_and_kicks_previous_to_tail() {
        let it = items(4);
        let q = RunQueue::new();
        q.push(prepare(&it[0]), false, no_spill);
        q.push(prepare(&it[1]), true, no_spill);
        assert_eq!(q.len(), 2);
        // 2 takes runnext, 1 is kicked behind 0.
        q.push(prepare(&it[2]), true, no_spill);
        assert_eq!(q.len(), 3);
        q.push(prepare(&it[3]), false, no_spill);
        let got = pop_ids(&q);
        assert_eq!(got, vec![(2, true), (0, false), (1, false), (3, false)]);
        // runnext alone counts as non-empty.
        q.push(prepare(&it[0]), true, no_spill);
        assert!(!q.is_empty());
        assert_eq!(q.len(), 1);
        assert_eq!(pop_ids(&q), vec![(0, true)]);
        assert!(q.is_empty());
    }

    #[test]
    fn overflow_spills_half_plus_one_in_order() {
        let it = items(RUNQ_SIZE + 1);
        let q = RunQueue::new();
        for i in &it[..RUNQ_SIZE] {
            q.push(prepare(i), false, no_spill);
        }
        assert_eq!(q.len(), RUNQ_SIZE);
        let mut spilled = Vec::new();
        let mut calls = 0;
        q.push(prepare(&it[RUNQ_SIZE]), false, |batch| {
            calls += 1;
            spilled.extend(batch.map(take));
        });
        assert_eq!(calls, 1);
        let mut expect: Vec<usize> = (0..RUNQ_SIZE / 2).collect();
        expect.push(RUNQ_SIZE);
        assert_eq!(spilled, expect);
        let rest: Vec<usize> = pop_ids(&q).into_iter().map(|(id, _)| id).collect();
        assert_eq!(rest, (RUNQ_SIZE / 2..RUNQ_SIZE).collect::<Vec<_>>());
    }

    #[test]
    fn overflow_through_runnext_kick_spills_the_kicked_item() {
        let it = items(RUNQ_SIZE + 2);
        let q = RunQueue::new();
        for i in &it[..RUNQ_SIZE] {
            q.push(prepare(i), false, no_spill);
        }
        q.push(prepare(&it[RUNQ_SIZE]), true, no_spill); // runnext; ring still full
        let mut spilled = Vec::new();
        q.push(prepare(&it[RUNQ_SIZE + 1]), true, |b| {
            spilled.extend(b.map(take))
        });
        let mut expect: Vec<usize> = (0..RUNQ_SIZE / 2).collect();
        expect.push(RUNQ_SIZE); // the kicked one, last
        assert_eq!(spilled, expect);
        let got = pop_ids(&q);
        assert_eq!(got[0], (RUNQ_SIZE + 1, true));
        assert_eq!(got.len(), 1 + RUNQ_SIZE / 2);
    }

    #[test]
    fn push_batch_fills_then_spills_the_rest_in_order() {
        let it = items(RUNQ_SIZE + 4);
        let q = RunQueue::new();
        for i in &it[..RUNQ_SIZE - 6] {
            q.push(prepare(i), false, no_spill);
        }
        let batch: Vec<_> = it[RUNQ_SIZE - 6..].iter().map(prepare).collect();
        let mut spilled = Vec::new();
        q.push_batch(&batch, |b| spilled.extend(b.map(take)));
        assert_eq!(spilled, (RUNQ_SIZE..RUNQ_SIZE + 4).collect::<Vec<_>>());
        let got: Vec<usize> = pop_ids(&q).into_iter().map(|(id, _)| id).collect();
        assert_eq!(got, (0..RUNQ_SIZE).collect::<Vec<_>>());
        // A batch that fits never calls spill; an empty one does nothing.
        q.push_batch(&batch[..3], no_spill);
        q.push_batch(&[], no_spill);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn steal_takes_half_rounded_up_and_returns_the_last() {
        let it = items(5);
        let victim = RunQueue::new();
        let thief = RunQueue::new();
        for i in &it {
            victim.push(prepare(i), false, no_spill);
        }
        let got = victim.steal_into(&thief, false).map(take);
        assert_eq!(got, Some(2));
        assert_eq!(pop_ids(&thief), vec![(0, false), (1, false)]);
        assert_eq!(pop_ids(&victim), vec![(3, false), (4, false)]);
        // One item: it is returned, nothing lands in dst.
        victim.push(prepare(&it[0]), false, no_spill);
        assert_eq!(victim.steal_into(&thief, false).map(take), Some(0));
        assert!(thief.is_empty() && victim.is_empty());
        assert!(victim.steal_into(&thief, true).is_none());
    }

    #[test]
    fn steal_runnext_only_when_asked_and_ring_empty_after_the_delay() {
        let it = items(2);
        let victim = RunQueue::new();
        let thief = RunQueue::new();
        victim.push(prepare(&it[0]), true, no_spill);
        let mut delays = 0;
        assert!(
            victim
                .steal_into_with(&thief, false, || delays += 1)
                .is_none()
        );
        assert_eq!(delays, 0);
        // Ring not empty: the ring is stolen, runnext is left alone.
        victim.push(prepare(&it[1]), false, no_spill);
        assert_eq!(
            victim
                .steal_into_with(&thief, true, || delays += 1)
                .map(take),
            Some(1)
        );
        assert_eq!(delays, 0);
        assert_eq!(
            victim
                .steal_into_with(&thief, true, || delays += 1)
                .map(take),
            Some(0)
        );
        assert_eq!(delays, 1);
        assert!(victim.is_empty() && thief.is_empty());
    }

    #[test]
    fn steal_respects_room_in_dst() {
        let it = items(RUNQ_SIZE + 10);
        let victim = RunQueue::new();
        let thief = RunQueue::new();
        for i in &it[..RUNQ_SIZE - 1] {
            thief.push(prepare(i), false, no_spill);
        }
        for i in &it[RUNQ_SIZE - 1..] {
            victim.push(prepare(i), false, no_spill);
        }
        // Room for one in dst plus the returned one.
        assert_eq!(victim.steal_into(&thief, false).map(take), Some(RUNQ_SIZE));
        assert_eq!(thief.len(), RUNQ_SIZE);
        assert_eq!(victim.len(), 9);
        // dst full: only the returned one.
        assert_eq!(
            victim.steal_into(&thief, false).map(take),
            Some(RUNQ_SIZE + 1)
        );
        assert_eq!(thief.len(), RUNQ_SIZE);
        let mut seen: Vec<usize> = pop_ids(&thief).into_iter().map(|(id, _)| id).collect();
        seen.extend(pop_ids(&victim).into_iter().map(|(id, _)| id));
        seen.extend([RUNQ_SIZE, RUNQ_SIZE + 1]);
        assert_exactly_once(it.len(), &seen);
    }

    #[test]
    fn positions_wrap_around_u32() {
        let it = items(RUNQ_SIZE + 1);
        let q = RunQueue::starting_at(u32::MAX - 3);
        let thief = RunQueue::starting_at(u32::MAX);
        for round in 0..3 {
            for i in &it[..RUNQ_SIZE] {
                q.push(prepare(i), false, no_spill);
            }
            assert_eq!(q.len(), RUNQ_SIZE, "round {round}");
            let mut n = 0;
            q.push(prepare(&it[RUNQ_SIZE]), false, |b| n = b.count());
            assert_eq!(n, RUNQ_SIZE / 2 + 1);
            assert!(q.steal_into(&thief, false).is_some());
            let rest = pop_ids(&q).len() + pop_ids(&thief).len() + 1;
            assert_eq!(rest, RUNQ_SIZE / 2);
        }
    }

    #[test]
    fn drain_takes_runnext_first_then_fifo() {
        let it = items(4);
        let q = RunQueue::new();
        for i in &it[..3] {
            q.push(prepare(i), false, no_spill);
        }
        q.push(prepare(&it[3]), true, no_spill);
        let mut got = Vec::new();
        q.drain(|p| got.push(take(p)));
        assert_eq!(got, vec![3, 0, 1, 2]);
        assert!(q.is_empty());
        q.drain(|_| panic!("drained an empty queue"));
    }

    /// One owner pushes (some with `next`), pops, spills to a "global queue" and refills from
    /// it with `push_batch`; three thieves steal from the owner and from each other and run
    /// what they get. Every item must be taken exactly once, with its payload visible.
    #[test]
    fn stress_owner_vs_three_thieves() {
        // About 0.3 s in a debug build and 0.1 s in release on the 2-core machine.
        const N: usize = if cfg!(debug_assertions) {
            200_000
        } else {
            1_000_000
        };
        const THIEVES: usize = 3;
        let it: Arc<Vec<Item>> = Arc::new(items(N));
        let seen: Arc<Vec<AtomicU8>> = Arc::new((0..N).map(|_| AtomicU8::new(0)).collect());
        let queues: Arc<Vec<RunQueue<Item>>> =
            Arc::new((0..=THIEVES).map(|_| RunQueue::new()).collect());
        let done = Arc::new(AtomicBool::new(false));
        let mark = |seen: &[AtomicU8], p: NonNull<Item>| {
            let id = take(p);
            let before = seen[id].fetch_add(1, StdOrdering::Relaxed);
            assert_eq!(before, 0, "item {id} taken twice");
        };
        let deadline = Instant::now() + Duration::from_secs(60);

        let thieves: Vec<_> = (1..=THIEVES)
            .map(|me| {
                let (seen, queues, done) = (seen.clone(), queues.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut victim = me;
                    let mut stolen = 0usize;
                    for round in 0usize.. {
                        let finished = done.load(StdOrdering::Acquire);
                        victim = (victim + 1) % queues.len();
                        if victim != me {
                            if let Some(p) = queues[victim].steal_into(&queues[me], true) {
                                stolen += 1;
                                mark(&seen, p);
                            }
                        }
                        // Run from our own queue every other round, so that it holds items for
                        // the other thieves to steal.
                        if round & 1 == 1 {
                            if let Some((p, _)) = queues[me].pop() {
                                mark(&seen, p);
                            }
                        }
                        if finished {
                            queues[me].drain(|p| mark(&seen, p));
                            return stolen;
                        }
                        assert!(Instant::now() < deadline, "stress test hung");
                    }
                    unreachable!()
                })
            })
            .collect();

        let owner = &queues[0];
        let global: Mutex<VecDeque<NonNull<Item>>> = Mutex::new(VecDeque::new());
        let spill = |b: &mut dyn Iterator<Item = NonNull<Item>>| global.lock().unwrap().extend(b);
        for (i, item) in it.iter().enumerate() {
            owner.push(prepare(item), i % 3 == 0, spill);
            if i % 4 == 0 {
                if let Some((p, _)) = owner.pop() {
                    mark(&seen, p);
                }
            }
            if i % 97 == 0 {
                let batch: Vec<_> = {
                    let mut g = global.lock().unwrap();
                    let n = g.len().min(RUNQ_SIZE / 2);
                    g.drain(..n).collect()
                };
                owner.push_batch(&batch, spill);
            }
        }
        owner.drain(|p| mark(&seen, p));
        for p in global.lock().unwrap().drain(..) {
            mark(&seen, p);
        }
        done.store(true, StdOrdering::Release);
        let stolen: usize = thieves.into_iter().map(|t| t.join().unwrap()).sum();
        // Thieves may have stolen from the owner until `done`; all queues are empty now.
        for q in queues.iter() {
            q.drain(|p| mark(&seen, p));
        }
        let missing: Vec<usize> = (0..N)
            .filter(|&i| seen[i].load(StdOrdering::Relaxed) != 1)
            .collect();
        assert!(
            missing.is_empty(),
            "{} items not taken exactly once: {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        eprintln!("stress: {stolen} steals");
    }

    /// Not a test: `cargo test --release --lib runq::tests::bench -- --ignored --nocapture`.
    #[test]
    #[ignore = "micro benchmark; run by hand with --release"]
    fn bench_push_pop_pair() {
        let it = items(1);
        let q = RunQueue::new();
        let p = prepare(&it[0]);
        for next in [false, true] {
            let rounds = 50_000_000u32;
            let start = Instant::now();
            for _ in 0..rounds {
                q.push(core::hint::black_box(p), next, no_spill);
                core::hint::black_box(q.pop());
            }
            let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
            eprintln!("push(next={next}) + pop: {ns:.2} ns per pair");
        }
    }
}

/// Loom models (ring of 4). Run with `.ci/loom.sh` (or `RUSTFLAGS="--cfg loom" cargo test
/// --release --lib runq`). Every model checks that each item is taken exactly once and that
/// its payload, written before the push, is visible to whoever takes it.
///
/// Weakening any of these to Relaxed makes a model fail: the owner's `tail` release store, a
/// thief's `tail` acquire load, the `runnext` swap, a thief's `runnext` CAS-acquire, `pop`'s
/// `runnext` CAS-release; so does dropping the `tail` re-check of `snapshot`. One pair is out
/// of loom's reach: the consumers' `head` CAS-release against the owner's `head` load-acquire
/// orders a consumer's slot *reads* before the owner's later overwrite, and loom never lets a
/// load read a store that executes after it (load buffering), so it cannot show the failure.
/// That pair rests on the argument in the module docs.
#[cfg(all(test, loom))]
mod loom_models {
    use super::test_support::{Item, assert_exactly_once, items, prepare, take};
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// Runs `f` under loom. These models are small enough to explore exhaustively (no
    /// preemption bound: about 20 s for all of them in release mode on the 2-core machine,
    /// `slot_reuse_vs_steal` being half of it); `LOOM_MAX_PREEMPTIONS` (read by
    /// `Builder::new`) bounds them if they grow.
    fn model(f: impl Fn() + Sync + Send + 'static) {
        loom::model::Builder::new().check(f);
    }

    type Q = RunQueue<Item>;

    fn no_spill(_: &mut dyn Iterator<Item = NonNull<Item>>) {
        panic!("unexpected spill");
    }

    fn pop_all(q: &Q, seen: &mut Vec<usize>) {
        while let Some((p, _)) = q.pop() {
            seen.push(take(p));
        }
    }

    /// A thief that steals once into its own queue and then runs everything it got.
    fn spawn_thief(victim: Arc<Q>, steal_runnext: bool) -> thread::JoinHandle<Vec<usize>> {
        thread::spawn(move || {
            let mine = Q::new();
            let mut seen = Vec::new();
            if let Some(p) = victim.steal_into(&mine, steal_runnext) {
                seen.push(take(p));
            }
            pop_all(&mine, &mut seen);
            seen
        })
    }

    /// (1) Owner pushes and pops while one thief steals; positions cross the `u32` wrap. The
    /// thief can take items whose push races with its steal.
    #[test]
    fn push_pop_vs_steal() {
        model(|| {
            let it = items(3);
            let q = Arc::new(Q::starting_at(u32::MAX - 1));
            q.push(prepare(&it[0]), false, no_spill);
            let thief = spawn_thief(q.clone(), false);
            let mut seen = Vec::new();
            q.push(prepare(&it[1]), false, no_spill);
            if let Some((p, _)) = q.pop() {
                seen.push(take(p));
            }
            q.push(prepare(&it[2]), false, no_spill);
            if let Some((p, _)) = q.pop() {
                seen.push(take(p));
            }
            seen.extend(thief.join().unwrap());
            q.drain(|p| seen.push(take(p)));
            assert_exactly_once(3, &seen);
        });
    }

    /// (1b) The owner reuses the slots a thief may be copying: the thief reads `head`/`tail`
    /// of a 3-item ring while the owner pops two and pushes three more (positions 3, 4, 5 live
    /// in slots 3, 0, 1). A thief whose copy was overwritten must fail its CAS.
    #[test]
    fn slot_reuse_vs_steal() {
        model(|| {
            let it = items(6);
            let q = Arc::new(Q::new());
            for i in &it[..3] {
                q.push(prepare(i), false, no_spill);
            }
            let thief = spawn_thief(q.clone(), false);
            let mut seen = Vec::new();
            for _ in 0..2 {
                if let Some((p, _)) = q.pop() {
                    seen.push(take(p));
                }
            }
            for i in &it[3..] {
                q.push(prepare(i), false, |b| seen.extend(b.map(take)));
            }
            seen.extend(thief.join().unwrap());
            q.drain(|p| seen.push(take(p)));
            assert_exactly_once(6, &seen);
        });
    }

    /// (2) A push that overflows (spill) while a thief steals: either the thief makes room
    /// first or the owner spills half + 1, in order.
    #[test]
    fn overflow_vs_steal() {
        model(|| {
            let it = items(RUNQ_SIZE + 1);
            let q = Arc::new(Q::new());
            for i in &it[..RUNQ_SIZE] {
                q.push(prepare(i), false, no_spill);
            }
            let thief = spawn_thief(q.clone(), false);
            let mut seen = Vec::new();
            let mut spilled = Vec::new();
            q.push(prepare(&it[RUNQ_SIZE]), false, |b| {
                spilled.extend(b.map(take))
            });
            if let Some((p, _)) = q.pop() {
                seen.push(take(p));
            }
            if !spilled.is_empty() {
                let mut expect: Vec<usize> = (0..RUNQ_SIZE / 2).collect();
                expect.push(RUNQ_SIZE);
                assert_eq!(spilled, expect);
            }
            seen.extend(spilled);
            seen.extend(thief.join().unwrap());
            q.drain(|p| seen.push(take(p)));
            assert_exactly_once(RUNQ_SIZE + 1, &seen);
        });
    }

    /// (3) `push(next)` kicking the old runnext to the ring, then `pop`, while a thief
    /// steals with `steal_runnext`.
    #[test]
    fn runnext_kick_vs_steal_runnext() {
        model(|| {
            let it = items(2);
            let q = Arc::new(Q::new());
            q.push(prepare(&it[0]), true, no_spill);
            let thief = spawn_thief(q.clone(), true);
            let mut seen = Vec::new();
            q.push(prepare(&it[1]), true, no_spill);
            if let Some((p, _)) = q.pop() {
                seen.push(take(p));
            }
            seen.extend(thief.join().unwrap());
            q.drain(|p| seen.push(take(p)));
            assert_exactly_once(2, &seen);
        });
    }

    /// (4) Two thieves and an owner; the second thief also robs the first, so a queue is
    /// stolen from while its own owner is stealing into it and popping from it.
    #[test]
    fn two_thieves_vs_owner() {
        model(|| {
            let it = items(4);
            let q = Arc::new(Q::new());
            for i in &it[..3] {
                q.push(prepare(i), false, no_spill);
            }
            let qa = Arc::new(Q::new());
            let a = {
                let (q, qa) = (q.clone(), qa.clone());
                thread::spawn(move || {
                    let mut seen = Vec::new();
                    if let Some(p) = q.steal_into(&qa, false) {
                        seen.push(take(p));
                    }
                    pop_all(&qa, &mut seen);
                    seen
                })
            };
            let b = {
                let (q, qa) = (q.clone(), qa.clone());
                thread::spawn(move || {
                    let qb = Q::new();
                    let mut seen = Vec::new();
                    for victim in [&qa, &q] {
                        if let Some(p) = victim.steal_into(&qb, true) {
                            seen.push(take(p));
                        }
                    }
                    pop_all(&qb, &mut seen);
                    seen
                })
            };
            let mut seen = Vec::new();
            q.push(prepare(&it[3]), true, no_spill);
            if let Some((p, _)) = q.pop() {
                seen.push(take(p));
            }
            seen.extend(a.join().unwrap());
            seen.extend(b.join().unwrap());
            pop_all(&q, &mut seen);
            pop_all(&qa, &mut seen);
            assert_exactly_once(4, &seen);
        });
    }

    /// (6) `push_batch` publishing while a thief steals.
    #[test]
    fn push_batch_vs_steal() {
        model(|| {
            let it = items(3);
            let q = Arc::new(Q::new());
            q.push(prepare(&it[0]), false, no_spill);
            let thief = spawn_thief(q.clone(), false);
            let mut seen = Vec::new();
            if let Some((p, _)) = q.pop() {
                seen.push(take(p));
            }
            q.push_batch(&[prepare(&it[1]), prepare(&it[2])], no_spill);
            seen.extend(thief.join().unwrap());
            q.drain(|p| seen.push(take(p)));
            assert_exactly_once(3, &seen);
        });
    }

    /// (5) Go's runqempty race: G0 sits in runnext; the owner kicks it to the ring with
    /// `push(G1, true)` and pops G1. G0 never leaves, so an observer must never see the queue
    /// empty.
    #[test]
    fn emptiness_during_kick() {
        model(|| {
            let it = items(2);
            let q = Arc::new(Q::new());
            q.push(prepare(&it[0]), true, no_spill);
            let observer = {
                let q = q.clone();
                thread::spawn(move || {
                    assert!(!q.is_empty(), "queue reported empty while item 0 was in it");
                    assert_ne!(q.len(), 0, "len 0 while item 0 was in the queue");
                })
            };
            q.push(prepare(&it[1]), true, no_spill);
            let (p, inherit) = q.pop().unwrap();
            assert_eq!((take(p), inherit), (1, true));
            observer.join().unwrap();
            let (p, inherit) = q.pop().unwrap();
            assert_eq!((take(p), inherit), (0, false));
        });
    }
}
