//! Goroutine-parking synchronisation: [`Mutex`], [`RwLock`], [`Condvar`], [`Once`] and
//! [`WaitGroup`], with Go's algorithms (`sync/mutex.go`, `sync/rwmutex.go`, `sync/waitgroup.go`,
//! `runtime/sema.go`) and std's shapes.
//!
//! # Model
//! Every primitive is a lock-free *fast path* on one atomic word plus, for when that fails, a
//! *wait queue* (`sema.rs`): a FIFO of `Waiter`s (`sched/park.rs`) that live on the stacks
//! of the blocked parties, behind a short internal lock. A blocked goroutine **parks** (its M
//! runs other goroutines); a blocked plain OS thread sleeps on a futex. Both go through the
//! same `Waiter`, so goroutines and threads can share every primitive. Contended operations
//! allocate nothing: a waiter is a few words on the waiting party's own stack.
//!
//! | type        | fast path (uncontended)              | contended                                   |
//! |-------------|--------------------------------------|---------------------------------------------|
//! | `Mutex`     | lock: one CAS; unlock: one atomic add | spin briefly, then park on the semaphore; starvation mode after 1 ms |
//! | `RwLock`    | read: one add; write: mutex + one add | readers and the writer park on semaphores; writer preference |
//! | `Condvar`   | notify without waiters: one load      | FIFO queue; `wait_timeout` leaves it on timeout |
//! | `Once`      | one acquire load after completion    | a `Mutex`                                   |
//! | `WaitGroup` | one atomic add                        | waiters park on a semaphore                 |
//!
//! # The semaphore (`sema.rs`, Go's `runtime/sema.go`)
//! Go's sync primitives sleep on an address-keyed semaphore table shared by the whole program
//! (a Go mutex must be two zero words). A Rust object can carry its own queue, so each
//! primitive embeds a `sema::Sema`: a token count and a waiter list under one short lock.
//! `acquire` takes a token or enqueues itself and parks; `release` hands its token straight
//! to the waiter at the head, or keeps it if nobody waits (so a release that overtakes its
//! acquire is not lost: every sleep is paired with exactly one wake-up).
//!
//! The queue lock is a `std::sync::Mutex` (through `crate::loom`, so the loom models check
//! it): a futex lock that spins before sleeping, like Go's runtime `mutex` that guards
//! `semaRoot`. It is held for O(1) list operations only, never across a park or a user
//! callback, so contention on it is brief even when the primitive is heavily contended.
//!
//! # The mutex (Go's `sync.Mutex`)
//! One `u32` word: `LOCKED`, `WOKEN` (a waiter is awake and competing: unlock need not wake
//! another), `STARVING`, and the number of waiters above those bits. Lock: CAS `0 -> LOCKED`;
//! otherwise spin a little (only when it can pay off: more than one P running goroutines, no
//! work queued on ours), then count itself as a waiter and park. Unlock: subtract `LOCKED`;
//! a non-zero result means there are waiters to wake.
//!
//! *Normal mode*: a woken waiter does not own the mutex; it competes with newcomers, which
//! usually win (they are on a CPU already). Throughput is best this way, but a waiter can
//! lose again and again. A waiter that lost goes back to the *front* of the queue. *Starvation
//! mode*: a waiter that has waited more than 1 ms sets `STARVING`. From then on unlock hands
//! the mutex directly to the waiter at the head of the queue (FIFO), newcomers neither take
//! it nor spin but queue at the tail, and a goroutine that handed the mutex over yields its P
//! so the new owner runs at once. The owner turns starvation mode off when it is the last
//! waiter or waited less than 1 ms (starvation mode is slow: two goroutines could otherwise
//! stay in lock-step in it forever).
//!
//! # Poisoning: none
//! Go has none, and neither do these locks: `lock()` returns the guard directly. A panic while
//! a guard is held unlocks the lock as the guard is dropped during unwinding, leaving the data
//! as the panicking code left it (as Go's `defer mu.Unlock()` does, and `parking_lot`). A
//! goroutine's panic is caught at its entry and reported by `join`; poisoning would make every
//! other user of the lock handle an error for it. `Once` likewise follows Go: a panicking
//! initialiser counts as having run.
//!
//! # Rejected designs
//! * A futex word per lock, as std's `Mutex`: it blocks the M, and with it every goroutine
//!   queued on its P, for as long as the lock is held.
//! * A global address-keyed wait table (Go's `semtable`, parking_lot's): it keeps objects at
//!   one or two words, but costs a hash and a shared bucket lock per contended operation, and
//!   it is not needed in Rust where the object can own its queue.
//! * Lock-free (Treiber-style) waiter stacks: LIFO, so no FIFO hand-off for starvation mode, and
//!   removing a timed-out `Condvar` waiter from the middle needs a lock anyway.
//! * Allocating a queue node per contended operation: the node lives on the blocked party's
//!   stack, which is pinned while it waits.
//!
//! # Under loom
//! The semaphore, its waiter list and the mutex and reader-writer cores compile under
//! `--cfg loom` with a model waiter (the real waiter word's transitions plus a loom note) and
//! a model clock; see the models at the end of `mutex.rs` and `rwlock.rs`
//! (`.ci/loom.sh sync`). Condvar, Once and WaitGroup are thin layers over the same semaphore
//! and mutex (Condvar's timed waits over the waiter word that `sched/park.rs` models); they
//! are covered by the stress tests in `tests/sync.rs`.

pub(crate) mod sema;

pub(crate) mod mutex;
pub(crate) mod rwlock;

#[cfg(not(loom))]
mod condvar;
#[cfg(not(loom))]
mod once;
#[cfg(not(loom))]
mod waitgroup;

#[cfg(not(loom))]
pub use condvar::{Condvar, WaitTimeoutResult};
#[cfg(not(loom))]
pub use mutex::{Mutex, MutexGuard};
#[cfg(not(loom))]
pub use once::Once;
#[cfg(not(loom))]
pub use rwlock::{RwLock, RwLockReadGuard, RwLockWriteGuard};
#[cfg(not(loom))]
pub use waitgroup::WaitGroup;

/// An `UnsafeCell` that is loom's under `--cfg loom` (so the models check accesses to the
/// waiter links), with std's closure-based access in both builds.
pub(crate) struct UCell<T>(
    #[cfg(not(loom))] std::cell::UnsafeCell<T>,
    #[cfg(loom)] loom::cell::UnsafeCell<T>,
);

impl<T> UCell<T> {
    #[cfg(not(loom))]
    pub(crate) const fn new(v: T) -> UCell<T> {
        UCell(std::cell::UnsafeCell::new(v))
    }

    #[cfg(loom)]
    pub(crate) fn new(v: T) -> UCell<T> {
        UCell(loom::cell::UnsafeCell::new(v))
    }

    /// Run `f` with a shared pointer to the value.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.0.get());
        #[cfg(loom)]
        return self.0.with(f);
    }

    /// Run `f` with a unique pointer to the value.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        #[cfg(not(loom))]
        return f(self.0.get());
        #[cfg(loom)]
        return self.0.with_mut(f);
    }
}

impl<T: Copy> UCell<T> {
    /// Read the value.
    ///
    /// # Safety
    /// No write to the cell may be concurrent (the caller holds the lock that guards it).
    #[inline]
    pub(crate) unsafe fn get(&self) -> T {
        // SAFETY: no concurrent write, per the contract.
        self.with(|p| unsafe { *p })
    }

    /// Write the value.
    ///
    /// # Safety
    /// No other access to the cell may be concurrent (the caller holds the lock that guards it).
    #[inline]
    pub(crate) unsafe fn set(&self, v: T) {
        // SAFETY: exclusive access, per the contract.
        self.with_mut(|p| unsafe { *p = v })
    }
}

/// What the primitives need from the runtime: the clock, the spinning policy and the
/// yield after a hand-off. Under loom: a model clock, never spin, never yield.
#[cfg(not(loom))]
pub(crate) mod plat {
    use crate::loom::{AtomicUsize, Ordering};
    use crate::sched::m::current_m;

    /// Spin rounds before parking (Go's `active_spin`).
    const ACTIVE_SPIN: u32 = 4;
    /// Pause instructions per spin round (Go's `active_spin_cnt`).
    const ACTIVE_SPIN_CNT: u32 = 30;

    /// Now, in ns (`CLOCK_MONOTONIC`, through the vDSO).
    #[inline]
    pub(crate) fn nanotime() -> u64 {
        crate::time::nanotime()
    }

    /// CPUs this process may use, cached (for plain threads, which have no runtime to ask).
    fn ncpu() -> usize {
        static NCPU: AtomicUsize = AtomicUsize::new(0);
        // Relaxed: a cached number; racing initialisers store the same value.
        let n = NCPU.load(Ordering::Relaxed);
        if n != 0 {
            return n;
        }
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // Relaxed: as above.
        NCPU.store(n, Ordering::Relaxed);
        n
    }

    /// Whether a locker that found the mutex held should spin (round `iter`) rather than
    /// park (Go's `sync_runtime_canSpin`): only a few rounds, only on a multicore machine,
    /// only if GOMAXPROCS > 1 and some other P is running goroutines (one of them may be
    /// about to unlock), and only if our own P has nothing else to run. A plain thread
    /// spins whenever the machine has more than one CPU.
    pub(crate) fn can_spin(iter: u32) -> bool {
        if iter >= ACTIVE_SPIN || ncpu() <= 1 {
            return false;
        }
        let m = current_m();
        if m.is_null() {
            return true;
        }
        // SAFETY: a non-null current M is this thread's own, alive while it runs.
        let mr = unsafe { &*m };
        let p = mr.p.get();
        if p.is_null() || mr.curg.get().is_null() {
            return false;
        }
        let s = &*mr.sched;
        let procs = s.procs();
        // Relaxed: heuristics, as in Go (a stale count only changes whether we spin).
        let idle = s.npidle.load(Ordering::Relaxed) + s.nmspinning.load(Ordering::Relaxed);
        if procs <= 1 || procs <= idle + 1 {
            return false;
        }
        // SAFETY: we hold `p` (it is our M's), so it is alive.
        unsafe { &*p }.runq.is_empty()
    }

    /// One spin round (Go's `procyield(active_spin_cnt)`).
    #[inline]
    pub(crate) fn do_spin() {
        for _ in 0..ACTIVE_SPIN_CNT {
            std::hint::spin_loop();
        }
    }

    /// After handing a starving mutex to a waiter (readied into our P's `runnext`): let it
    /// run now, on our time slice (Go's `goyield` in `semrelease1`). Plain threads do nothing.
    ///
    /// Not while unwinding (a guard dropped by a panic): std keeps its panic count in a
    /// thread-local, and a goroutine that resumed on another thread in the middle of its
    /// unwinding would decrement the wrong thread's count when `catch_unwind` catches it. A
    /// yield is only an optimisation here, so it is skipped.
    #[inline]
    pub(crate) fn yield_to_woken() {
        if !std::thread::panicking() {
            let _ = crate::sched::schedule::gosched();
        }
    }
}

/// The loom build's stand-ins: a model clock (each reading advances it by a step the model
/// chooses, so "waited more than 1 ms" is a property of the interleaving), no spinning, no
/// yielding.
#[cfg(loom)]
pub(crate) mod plat {
    use std::cell::Cell;

    std::thread_local! {
        /// Model time and its step per reading. Thread-local to the test thread: loom runs
        /// every thread of a model on the test's own OS thread, one execution at a time,
        /// while other tests run their models on other threads.
        static CLOCK: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }

    /// Start an execution with the clock at 0, advancing by `step` ns per reading.
    #[allow(dead_code)]
    pub(crate) fn reset_clock(step: u64) {
        CLOCK.with(|c| c.set((0, step)));
    }

    pub(crate) fn nanotime() -> u64 {
        CLOCK.with(|c| {
            let (now, step) = c.get();
            c.set((now + step, step));
            now
        })
    }

    pub(crate) fn can_spin(_iter: u32) -> bool {
        false
    }

    pub(crate) fn do_spin() {}

    pub(crate) fn yield_to_woken() {}
}
