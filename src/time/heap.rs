//! Per-P timer heaps: a 4-ary min-heap of timer nodes under a per-P lock, and the node
//! protocol (arm, disarm, run, cancel) that every timer in gort is built on.
//!
//! See the essay in `time/mod.rs` for where these heaps sit in the scheduler. This file holds
//! the mechanism; the invariants it keeps are:
//!
//! * **Membership.** A [`TimerNode`] is on at most one heap. `node.heap` names it (null: on
//!   none). `heap` changes only under the lock of the heap it names before or after the change:
//!   null -> h by a CAS while holding h's lock (arming), h -> null while holding h's lock
//!   (disarming, or popping to run), h -> h2 while holding both locks (moving the timers of a
//!   retired P). So whoever holds h's lock and reads `heap == h` owns the node's heap fields
//!   (`when`, `period`, `seq`, `slot`) until it unlocks; a node not on any heap has its fields
//!   owned by the thread whose CAS puts it on one.
//! * **Order.** For every entry `i`: `entries[i].when == node.when`, `slots[entries[i].slot]`
//!   is `(node, i)` and `node.slot == entries[i].slot`; each entry's `when` is at most its
//!   four children's (`4i+1 ..= 4i+4`). `next_when` mirrors `entries[0].when` ([`NO_TIMER`]
//!   when empty): stored under the lock, read without it.
//! * **Running.** A node popped to run has `running > 0` from before it leaves the heap until
//!   its callback drops the [`Running`] token. [`TimerNode::cancel_sync`] waits for zero, so the
//!   owner of a node may free it once `cancel_sync` returns: no callback is running, and none
//!   can start (the node is on no heap).
//!
//! The slot table is the heap's own dense array of `(node, index)`: sifting moves entries and
//! must record each one's new index, and writing it into the node itself would touch one
//! random page per move (nodes live on goroutine stacks) — with 100,000 sleepers, a cache and
//! TLB miss per level of every pop (measured: the pop was then the costliest step of a sleep).
//!
//! Why eager removal (stop takes the owning P's heap lock and removes the node at once) and
//! not Go's lazy scheme (mark the timer deleted/modified, let the owning P clean its heap):
//! Go needs a timer to stay valid after `Stop` because the GC keeps it alive; our nodes live in
//! their owners' memory (often a goroutine's stack frame), so the owner must know, when stop
//! returns, that the heap holds no pointer to the node. Removal by index is O(log4 n) and the
//! lock is the owning P's, uncontended unless two Ps touch the same timer at once.

use crate::loom::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use crate::sched::Sched;
use std::cell::UnsafeCell;
use std::ptr::{self, NonNull};

/// `next_when` of an empty heap, and "no deadline" wherever a time is optional.
pub(crate) const NO_TIMER: u64 = u64::MAX;

/// Children per heap node (Go's `timerHeapN`): half the depth of a binary heap, and the four
/// children's entries (16 bytes each) are adjacent (at most two cache lines).
const ARITY: usize = 4;

/// A timer callback: `f(arg, seq, now, done)`, run on an M's g0 with a P held, after the node
/// left the heap (one-shot) or was re-armed for its next period (periodic). `seq` is the
/// node's arming sequence number when it fired (see [`Armed::seq`]); `now` the time the run
/// started (nanoseconds, [`crate::time::nanotime`]).
///
/// Contract: must not block or park (it runs in the scheduler); may ready goroutines, take
/// short locks, arm or disarm *other* timers. It must drop `done` exactly once, and touch
/// neither the node nor anything the node's owner may free after it (the owner's
/// `cancel_sync` returns as soon as `done` is dropped) — so drop it as the last access to the
/// owner's memory, before readying a goroutine that could free it.
pub(crate) type TimerFn = unsafe fn(arg: usize, seq: u64, now: u64, done: Running);

/// Frees a heap-owned node left on a heap when its runtime is dropped (see `free` below).
pub(crate) type FreeFn = unsafe fn(node: NonNull<TimerNode>);

/// One timer. Lives in memory its owner controls (a goroutine's stack frame, a `Box`), never
/// moves while it may be on a heap, and is freed only after [`TimerNode::cancel_sync`] or after
/// it fired and its callback released it.
pub(crate) struct TimerNode {
    /// The heap holding this node, or null (see the module docs for who may change it).
    heap: AtomicPtr<Timers>,
    /// Deadline (ns). Owned as described under "Membership".
    when: UnsafeCell<u64>,
    /// 0: one-shot; otherwise re-armed every `period` ns.
    period: UnsafeCell<u64>,
    /// Arming count: bumped by every `arm`, passed to the callback.
    seq: UnsafeCell<u64>,
    /// The node's slot in its heap's slot table (which holds its entry index).
    slot: UnsafeCell<u32>,
    /// Callbacks in progress (see "Running").
    running: AtomicU32,
    f: TimerFn,
    arg: usize,
    /// For nodes owned by their heap (fire-and-forget timers): frees the node if its runtime
    /// is dropped before it fires. `None` for nodes owned by someone else.
    free: Option<FreeFn>,
}

// SAFETY: the `UnsafeCell` fields are accessed only by the thread that owns them per the
// membership rule (under a heap lock, or after winning the arming CAS); the rest is atomic or
// immutable. `arg` is an address the callback's author vouches for.
unsafe impl Sync for TimerNode {}
// SAFETY: as above.
unsafe impl Send for TimerNode {}

/// What [`TimerNode::arm`] did.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Armed {
    /// The node was already on a heap (pending): it was re-armed in place. Go's `Reset`
    /// result.
    pub(crate) was_active: bool,
    /// This arming's sequence number: a callback called with another `seq` fired for an
    /// earlier arming (it was already running or about to when the node was re-armed).
    pub(crate) seq: u64,
}

impl TimerNode {
    /// A disarmed node that will call `f(arg, ..)` when it fires.
    pub(crate) const fn new(f: TimerFn, arg: usize) -> TimerNode {
        TimerNode {
            heap: AtomicPtr::new(ptr::null_mut()),
            when: UnsafeCell::new(0),
            period: UnsafeCell::new(0),
            seq: UnsafeCell::new(0),
            slot: UnsafeCell::new(0),
            running: AtomicU32::new(0),
            f,
            arg,
            free: None,
        }
    }

    /// A node owned by the heap it is armed on: its callback frees it (and must
    /// `std::mem::forget` its `done` token first: nobody waits on it); `free` frees it if the
    /// runtime is dropped first.
    pub(crate) const fn new_owned(f: TimerFn, arg: usize, free: FreeFn) -> TimerNode {
        let mut n = TimerNode::new(f, arg);
        n.free = Some(free);
        n
    }

    /// The `arg` given at creation.
    pub(crate) fn arg(&self) -> usize {
        self.arg
    }

    /// Arm the node to fire at `when` (ns, [`crate::time::nanotime`]'s clock), then every
    /// `period` ns if `period > 0`. A pending node is re-armed in place, on the heap it is on;
    /// a disarmed one goes on the calling M's P's heap (or, from a thread that holds no P of
    /// `s`, on one P's heap in turn). Any thread; concurrent arms and disarms of one node are
    /// safe (they serialise on the heap lock).
    ///
    /// # Safety
    /// The node stays at this address and alive until it is disarmed by [`Self::cancel_sync`]
    /// or, for a one-shot, its callback has dropped its `done` token. It is only ever armed
    /// on one runtime, `s`.
    pub(crate) unsafe fn arm(&self, s: &Sched, when: u64, period: u64) -> Armed {
        let when = when.min(NO_TIMER - 1);
        let me = NonNull::from(self);
        loop {
            // Acquire: pairs with the Release stores of `heap`, so the fields written by the
            // thread that last moved the node are visible to whoever proceeds from here.
            let h = self.heap.load(Ordering::Acquire);
            if h.is_null() {
                let t = crate::time::target_heap(s);
                let mut g = t.lock();
                // AcqRel: claims the node for `t` (exactly one concurrent armer wins); Acquire
                // on failure, as above.
                if self
                    .heap
                    .compare_exchange(
                        ptr::null_mut(),
                        t as *const Timers as *mut Timers,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_err()
                {
                    continue;
                }
                // SAFETY: the node is on `t` now and we hold `t`'s lock: its fields are ours.
                let seq = unsafe {
                    *self.when.get() = when;
                    *self.period.get() = period;
                    *self.seq.get() += 1;
                    *self.seq.get()
                };
                g.push(when, me);
                let first = t.publish(&g);
                drop(g);
                if first == when {
                    crate::time::timer_earliest_changed(s, when);
                }
                return Armed {
                    was_active: false,
                    seq,
                };
            }
            // SAFETY: `h` is a heap of `s` (the only runtime this node is armed on), whose Ps
            // live as long as `s`.
            let hr = unsafe { &*h };
            let mut g = hr.lock();
            // Relaxed: `heap` cannot change away from `h` while we hold `h`'s lock, and the
            // lock's acquire made any earlier change visible.
            if self.heap.load(Ordering::Relaxed) != h {
                continue;
            }
            // SAFETY: on `h`, whose lock we hold.
            let (slot, seq) = unsafe {
                *self.when.get() = when;
                *self.period.get() = period;
                *self.seq.get() += 1;
                (*self.slot.get(), *self.seq.get())
            };
            let idx = g.slots[slot as usize].idx as usize;
            g.entries[idx].when = when;
            g.fix(idx);
            let first = hr.publish(&g);
            drop(g);
            if first == when {
                crate::time::timer_earliest_changed(s, when);
            }
            return Armed {
                was_active: true,
                seq,
            };
        }
    }

    /// Take the node off its heap. Returns true if it was pending (it will not fire for that
    /// arming), false if it was not on a heap (never armed, already stopped, or already
    /// popped to run: its callback may be running now). Does not wait for a running callback.
    /// Any thread.
    ///
    /// # Safety
    /// If the node was ever armed, `_s` is the runtime it was armed on (holding a reference to
    /// it keeps its heaps alive).
    pub(crate) unsafe fn disarm(&self, _s: &Sched) -> bool {
        loop {
            // Acquire: as in `arm`.
            let h = self.heap.load(Ordering::Acquire);
            if h.is_null() {
                return false;
            }
            // SAFETY: as in `arm`: a heap of `_s`, alive while it is.
            let hr = unsafe { &*h };
            let mut g = hr.lock();
            // Relaxed: as in `arm`.
            if self.heap.load(Ordering::Relaxed) != h {
                continue;
            }
            // SAFETY: on `h`, whose lock we hold.
            let slot = unsafe { *self.slot.get() };
            let idx = g.slots[slot as usize].idx as usize;
            g.remove_at(idx);
            // Release: pairs with the Acquire loads of `heap` (the next armer sees our writes).
            self.heap.store(ptr::null_mut(), Ordering::Release);
            hr.publish(&g);
            return true;
        }
    }

    /// Disarm, then wait until no callback of this node is running. Afterwards the node is
    /// on no heap and nothing refers to it: its owner may free it. Returns [`Self::disarm`]'s
    /// result.
    ///
    /// Must not be called from the node's own callback, nor while holding a lock the callback
    /// takes (it would wait for itself). The wait is the window between a runner popping the
    /// node and its callback dropping `done` — a few instructions, unless the runner's thread
    /// is descheduled right there; we spin briefly, then yield the thread.
    ///
    /// # Safety
    /// As [`Self::disarm`].
    pub(crate) unsafe fn cancel_sync(&self, s: &Sched) -> bool {
        // SAFETY: forwarded contract.
        let was = unsafe { self.disarm(s) };
        let mut spins = 0u32;
        // Acquire: pairs with the Release decrement in `Running::drop`: every access the
        // callback made to the node and its owner happens before we return.
        while self.running.load(Ordering::Acquire) != 0 {
            if spins < 100 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
        was
    }
}

/// A callback in progress (see [`TimerFn`]). Dropping it tells [`TimerNode::cancel_sync`] that
/// the callback no longer touches the node or its owner.
#[must_use = "dropping it releases the node; drop it at the last access to the owner's memory"]
pub(crate) struct Running(NonNull<TimerNode>);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: the node cannot be freed while `running > 0` (its owner's cancel_sync waits),
        // and this decrement is our last access.
        let r = unsafe { &self.0.as_ref().running };
        // Release: pairs with the Acquire load in `cancel_sync`.
        r.fetch_sub(1, Ordering::Release);
    }
}

#[derive(Clone, Copy)]
struct Entry {
    /// Copy of `node.when`, so sifting reads only the entries array.
    when: u64,
    /// Index into `Heap::slots`.
    slot: u32,
}

#[derive(Clone, Copy)]
struct Slot {
    node: NonNull<TimerNode>,
    /// In use: the node's index in `entries`. Unused: the next unused slot ([`NO_SLOT`]
    /// ends the list).
    idx: u32,
}

/// End of the unused-slot list.
const NO_SLOT: u32 = u32::MAX;

/// The heap proper, behind [`Timers`]'s lock.
///
/// Popping and removing never allocate: the unused slots form a list threaded through the
/// slot table itself. (A separate `Vec` of free slot numbers grew as a burst of timers
/// drained, and each of its reallocations freed a block large enough to make glibc
/// consolidate every small chunk freed since — with 100,000 goroutines just exited, a
/// 1–4 ms stall of the P in the middle of running its timers.)
pub(crate) struct Heap {
    entries: Vec<Entry>,
    slots: Vec<Slot>,
    /// First unused slot, or [`NO_SLOT`].
    free: u32,
}

// SAFETY: the node pointers are only dereferenced under the heap lock, per the membership
// rule; the heap is moved between threads only inside its mutex.
unsafe impl Send for Heap {}

impl Heap {
    const fn new() -> Heap {
        Heap {
            entries: Vec::new(),
            slots: Vec::new(),
            free: NO_SLOT,
        }
    }

    #[inline]
    fn set(&mut self, i: usize, e: Entry) {
        self.entries[i] = e;
        self.slots[e.slot as usize].idx = i as u32;
    }

    #[inline]
    fn node(&self, e: Entry) -> NonNull<TimerNode> {
        self.slots[e.slot as usize].node
    }

    fn push(&mut self, when: u64, node: NonNull<TimerNode>) {
        let i = self.entries.len();
        let sl = Slot {
            node,
            idx: i as u32,
        };
        let slot = if self.free != NO_SLOT {
            let k = self.free;
            self.free = self.slots[k as usize].idx;
            self.slots[k as usize] = sl;
            k
        } else {
            self.slots.push(sl);
            (self.slots.len() - 1) as u32
        };
        // SAFETY: the node is joining this heap and the caller holds its lock.
        unsafe { *node.as_ref().slot.get() = slot };
        self.entries.push(Entry { when, slot });
        self.sift_up(i);
    }

    fn remove_at(&mut self, i: usize) -> (u64, NonNull<TimerNode>) {
        let e = self.entries[i];
        let node = self.node(e);
        let last = self.entries.len() - 1;
        let moved = self.entries[last];
        self.entries.pop();
        if i != last {
            self.set(i, moved);
            self.fix(i);
        }
        if self.entries.is_empty() {
            // Start the slot table over (keeping its capacity).
            self.slots.clear();
            self.free = NO_SLOT;
        } else {
            self.slots[e.slot as usize].idx = self.free;
            self.free = e.slot;
        }
        (e.when, node)
    }

    /// Restore the order after `entries[i].when` changed.
    fn fix(&mut self, i: usize) {
        if i > 0 && self.entries[i].when < self.entries[(i - 1) / ARITY].when {
            self.sift_up(i);
        } else {
            self.sift_down(i);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        let e = self.entries[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if e.when >= self.entries[parent].when {
                break;
            }
            let pe = self.entries[parent];
            self.set(i, pe);
            i = parent;
        }
        self.set(i, e);
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.entries.len();
        let e = self.entries[i];
        loop {
            let first = i * ARITY + 1;
            if first >= n {
                break;
            }
            let mut c = first;
            let mut w = self.entries[first].when;
            for j in first + 1..(first + ARITY).min(n) {
                if self.entries[j].when < w {
                    w = self.entries[j].when;
                    c = j;
                }
            }
            if w >= e.when {
                break;
            }
            let ce = self.entries[c];
            self.set(i, ce);
            i = c;
        }
        self.set(i, e);
    }

    fn first_when(&self) -> u64 {
        self.entries.first().map_or(NO_TIMER, |e| e.when)
    }
}

/// One P's timers (Go's `p.timers`).
pub(crate) struct Timers {
    heap: Mutex<Heap>,
    /// `entries[0].when`, or [`NO_TIMER`]: lets the scheduler skip the lock (and the clock)
    /// when nothing is due. Stored under the lock; read anywhere.
    next_when: AtomicU64,
    /// Number of entries (statistics). Stored under the lock.
    len: AtomicUsize,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            heap: Mutex::new(Heap::new()),
            next_when: AtomicU64::new(NO_TIMER),
            len: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Heap> {
        // A panic never happens under this lock (no user code runs under it).
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The earliest deadline on this heap, or [`NO_TIMER`]. Any thread, no lock: a snapshot.
    #[inline]
    pub(crate) fn next_when(&self) -> u64 {
        // Relaxed: a hint for the owner's fast path; the lock is taken before acting on it.
        // Callers that need it in the sleeper protocol's total order use `next_when_seqcst`.
        self.next_when.load(Ordering::Relaxed)
    }

    /// [`Self::next_when`] as the load half of the timer sleeper's StoreLoad (see
    /// `time/mod.rs`, "Sleeping until the next timer").
    pub(crate) fn next_when_seqcst(&self) -> u64 {
        // SeqCst: pairs with the SeqCst store in `publish`; with the sleeper's SeqCst store of
        // `sleep_until` before this load, either the sleeper sees a new earliest timer, or the
        // adder (store here, then its SeqCst load of `sleep_until`) sees the sleeper.
        self.next_when.load(Ordering::SeqCst)
    }

    /// Timers pending on this heap (statistics).
    pub(crate) fn len(&self) -> usize {
        // Relaxed: statistics.
        self.len.load(Ordering::Relaxed)
    }

    /// Mirror the heap's state into the lock-free fields; returns the new earliest deadline.
    /// Lock held (`h` is its guard's contents).
    fn publish(&self, h: &Heap) -> u64 {
        let first = h.first_when();
        // Relaxed: single writer (the lock holder); see `next_when`.
        if self.next_when.load(Ordering::Relaxed) != first {
            // SeqCst: the store half of an adder's StoreLoad with the timer sleeper (see
            // `next_when_seqcst`). Only when the earliest deadline changes.
            self.next_when.store(first, Ordering::SeqCst);
        }
        // Relaxed: statistics.
        self.len.store(h.entries.len(), Ordering::Relaxed);
        first
    }

    /// Run the timers due at `now`, earliest first, at most `budget` of them: pop each (or
    /// re-arm it, if periodic), unlock, call it, relock. The caller holds a P (callbacks
    /// ready goroutines onto it) and passes that P's `timers_run` counter, bumped before each
    /// callback (so a goroutine it wakes sees itself counted). Returns how many callbacks
    /// ran. Any M.
    pub(crate) fn run(&self, now: u64, budget: u64, counter: &AtomicU64) -> u64 {
        let mut ran = 0;
        let mut g = self.lock();
        while let Some(&top) = g.entries.first() {
            if top.when > now || ran == budget {
                break;
            }
            let node = g.node(top);
            // SAFETY: the node is on this heap and we hold its lock (membership rule).
            let n = unsafe { node.as_ref() };
            // Relaxed: ordered before the Release store of `heap` below (one-shot) or the
            // unlock (periodic); `cancel_sync` reads it after acquiring either.
            n.running.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as above.
            let (seq, period) = unsafe { (*n.seq.get(), *n.period.get()) };
            if period > 0 {
                // Next deadline after `now`, on the original grid: missed periods are dropped
                // (Go's rule), so a slow consumer sees one tick, not a burst.
                let next = top
                    .when
                    .saturating_add(period.saturating_mul(1 + (now - top.when) / period))
                    .min(NO_TIMER - 1);
                // SAFETY: as above.
                unsafe { *n.when.get() = next };
                g.entries[0].when = next;
                g.sift_down(0);
            } else {
                g.remove_at(0);
                // Release: pairs with the Acquire loads of `heap` in arm/disarm/cancel_sync:
                // a thread that sees the node off the heap sees `running` raised.
                n.heap.store(ptr::null_mut(), Ordering::Release);
            }
            self.publish(&g);
            let (f, arg) = (n.f, n.arg);
            drop(g);
            crate::sched::p::PCounters::bump(counter);
            // SAFETY: the callback contract (TimerFn): `arg` is what the node's owner set up
            // for `f`; the token releases the node.
            unsafe { f(arg, seq, now, Running(node)) };
            ran += 1;
            g = self.lock();
        }
        ran
    }

    /// Move every timer of `self` (a retiring P's heap) onto `dst`. The caller holds neither
    /// lock; they are taken in the fixed order: `dst` first (a lower P id), then `self`.
    pub(crate) fn move_all_to(&self, dst: &Timers) -> u64 {
        let mut d = dst.lock();
        let mut g = self.lock();
        while !g.entries.is_empty() {
            let last = g.entries.len() - 1;
            let (when, node) = g.remove_at(last);
            // Release: the node's membership changes under both locks; pairs with the
            // Acquire loads of `heap` (see `arm`).
            // SAFETY: the node was on `self`, whose lock we hold.
            unsafe { node.as_ref() }
                .heap
                .store(dst as *const Timers as *mut Timers, Ordering::Release);
            d.push(when, node);
        }
        self.publish(&g);
        dst.publish(&d)
    }
}

impl Drop for Timers {
    /// The runtime is gone: nothing will fire. Free the nodes the heap owns; other nodes
    /// belong to their owners (abandoned goroutines' stacks, user timers, which notice the
    /// runtime is gone and leave the heap alone).
    fn drop(&mut self) {
        let h = self.heap.get_mut().unwrap_or_else(|e| e.into_inner());
        for i in 0..h.entries.len() {
            let node = h.node(h.entries[i]);
            // SAFETY: no thread runs timers any more (every M exited); owned nodes are freed
            // only by their callback, which never ran.
            unsafe {
                if let Some(free) = node.as_ref().free {
                    free(node);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    unsafe fn nop(_: usize, _: u64, _: u64, _: Running) {}

    fn check(h: &Heap) {
        for (i, e) in h.entries.iter().enumerate() {
            let node = h.node(*e);
            assert_eq!(h.slots[e.slot as usize].idx as usize, i);
            // SAFETY: test nodes outlive the heap.
            unsafe {
                assert_eq!(*node.as_ref().slot.get(), e.slot);
                assert_eq!(*node.as_ref().when.get(), e.when);
            }
            if i > 0 {
                assert!(h.entries[(i - 1) / ARITY].when <= e.when);
            }
        }
    }

    static CALLS: AtomicU32 = AtomicU32::new(0);

    unsafe fn count(_: usize, _: u64, _: u64, _: Running) {
        CALLS.fetch_add(1, Ordering::Relaxed);
    }

    /// A periodic timer that missed many periods fires once, and its next deadline is the
    /// first point of its grid after `now` (Go's rule: missed ticks are dropped).
    #[test]
    fn periodic_skips_missed_periods() {
        let t = Timers::new();
        let node = TimerNode::new(count, 0);
        {
            let mut g = t.lock();
            node.heap
                .store(&t as *const Timers as *mut Timers, Ordering::Relaxed);
            // SAFETY: single-threaded test; the node's fields are ours.
            unsafe {
                *node.when.get() = 1_000;
                *node.period.get() = 100;
            }
            g.push(1_000, NonNull::from(&node));
            t.publish(&g);
        }
        let counter = AtomicU64::new(0);
        assert_eq!(t.run(999, u64::MAX, &counter), 0);
        assert_eq!(t.run(1_000 + 100 * 57 + 3, 0, &counter), 0);
        assert_eq!(t.run(1_000 + 100 * 57 + 3, u64::MAX, &counter), 1);
        assert_eq!(CALLS.load(Ordering::Relaxed), 1);
        assert_eq!(counter.load(Ordering::Relaxed), 1);
        assert_eq!(t.next_when(), 1_000 + 100 * 58);
        assert_eq!(node.running.load(Ordering::Relaxed), 0);
        // Still armed: take it off by hand (no runtime here).
        let mut g = t.lock();
        g.remove_at(0);
        t.publish(&g);
        assert_eq!(t.next_when(), NO_TIMER);
    }

    /// Push, remove from the middle, re-key and pop against a sorted reference.
    #[test]
    fn heap_order_and_indices() {
        let nodes: Vec<TimerNode> = (0..500).map(|_| TimerNode::new(nop, 0)).collect();
        let mut h = Heap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rnd = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % 10_000
        };
        let mut live = vec![false; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            let w = rnd();
            // SAFETY: single-threaded test; the node's fields are ours.
            unsafe { *n.when.get() = w };
            h.push(w, NonNull::from(n));
            live[i] = true;
        }
        check(&h);
        // Remove every third node by index, re-key every fifth.
        for (i, n) in nodes.iter().enumerate() {
            // SAFETY: as above.
            let idx = h.slots[unsafe { *n.slot.get() } as usize].idx as usize;
            if i % 3 == 0 {
                h.remove_at(idx);
                live[i] = false;
            } else if i % 5 == 0 {
                let w = rnd();
                // SAFETY: as above.
                unsafe { *n.when.get() = w };
                h.entries[idx].when = w;
                h.fix(idx);
            }
            check(&h);
        }
        let mut expect: Vec<u64> = nodes
            .iter()
            .zip(&live)
            .filter(|(_, l)| **l)
            // SAFETY: as above.
            .map(|(n, _)| unsafe { *n.when.get() })
            .collect();
        expect.sort_unstable();
        let mut got = Vec::new();
        while !h.entries.is_empty() {
            got.push(h.remove_at(0).0);
            check(&h);
        }
        assert_eq!(got, expect);
    }
}
