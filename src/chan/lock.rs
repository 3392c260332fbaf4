//! The channel lock: a small futex mutex with explicit `lock`/`unlock` (no guard object), so
//! that `select` can hold the locks of several channels at once, taken in address order.
//!
//! # Protocol (the classic three-state futex mutex, as Go's `lock_futex.go` and std's)
//! The word is `UNLOCKED`, `LOCKED` (held, nobody asleep) or `CONTENDED` (held, and somebody may
//! be asleep in the kernel). `lock` tries one CAS `UNLOCKED -> LOCKED`; on failure it spins a
//! little (critical sections are a few dozen nanoseconds: a queue link or a buffer slot), then
//! swaps in `CONTENDED` and sleeps on the futex until a swap finds the lock free. `unlock`
//! swaps in `UNLOCKED` and wakes one sleeper only if the old value was `CONTENDED`: the
//! uncontended round trip is one CAS and one swap, no system call.
//!
//! A goroutine that finds the lock taken blocks its M (it does not park): the holder never
//! blocks with the lock held — no user code, no allocation other than an unbounded channel's
//! buffer growth, no wake-up runs under it — so the wait is bounded by a few instructions of
//! another thread. (A goroutine that parks on a channel does hold its lock across the switch,
//! but the scheduler releases it right after, before running anything else on that M.)
//!
//! # Rejected
//! * `std::sync::Mutex<Synced>`: the same algorithm, but its guard borrows the mutex, and a
//!   `select` over N channels of different element types would need N guards of N types alive
//!   at once (a heap-allocated list of boxed guards, or a macro-generated tuple): the raw lock
//!   keeps select's lock-all/unlock-all a loop over addresses.
//! * A pure spinlock: measured no faster uncontended (both are one CAS + one store), and with
//!   more Ms than CPUs (procs = 8 on 2 cores in the tests) a spinner can burn its whole time
//!   slice waiting for a descheduled holder.
//!
//! Under `cfg(loom)` the lock is a `loom::sync::Mutex<bool>` plus `Condvar` with the same
//! `lock`/`unlock` interface: loom models those natively, while an atomic lock word takes many
//! read-modify-writes per model run and trips loom's spurious store-history assertion
//! (tokio-rs/loom#252). The futex protocol above is the textbook one; the models check the
//! channel protocol built on the lock.

#[cfg(not(loom))]
use crate::loom::{AtomicU32, Ordering};

#[cfg(loom)]
pub(crate) use loom_lock::RawLock;

#[cfg(not(loom))]
const UNLOCKED: u32 = 0;
#[cfg(not(loom))]
const LOCKED: u32 = 1;
#[cfg(not(loom))]
const CONTENDED: u32 = 2;

/// Spin iterations before sleeping (each a CPU relax hint plus a relaxed load).
#[cfg(not(loom))]
const SPIN: u32 = 100;

/// A mutual-exclusion lock guarding a channel's `Synced` state.
#[cfg(not(loom))]
pub(crate) struct RawLock {
    state: AtomicU32,
}

#[cfg(not(loom))]
impl RawLock {
    pub(crate) fn new() -> RawLock {
        RawLock {
            state: AtomicU32::new(UNLOCKED),
        }
    }

    /// Take the lock. Must not be held by the caller (not reentrant).
    #[inline]
    pub(crate) fn lock(&self) {
        // Holding it is a runtime section: no asynchronous preemption (preempt/mod.rs);
        // `unlock` closes it, always on the same thread (a parked holder's lock is released
        // by its gopark callback on the M it parked on).
        crate::preempt::section_open();
        // Acquire: pairs with the Release swap in `unlock`: the previous holder's writes to the
        // guarded state happen before ours.
        if self
            .state
            .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    #[cold]
    fn lock_slow(&self) {
        for _ in 0..SPIN {
            // Relaxed: only a hint to retry the CAS, which acquires.
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                // Acquire: as in `lock`.
                && self
                    .state
                    .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            std::hint::spin_loop();
        }
        // From now on we may sleep, so the lock must say so: whoever takes it from here on
        // (us included) takes it as CONTENDED and wakes a sleeper at unlock. A spurious wake
        // costs one futex call; a missing one would hang.
        // Acquire: as in `lock` (the swap takes the lock when it returns UNLOCKED).
        // The sleep is the runtime's, not foreign blocking (sysmon: `syscall::runtime_blocking`).
        crate::sched::syscall::runtime_blocking(|| {
            while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
                crate::sched::note::futex_wait(&self.state, CONTENDED, None);
            }
        });
    }

    /// Release the lock. Caller holds it.
    #[inline]
    pub(crate) fn unlock(&self) {
        // Release: pairs with the Acquire in `lock`: our writes to the guarded state happen
        // before the next holder's.
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            self.wake_one();
        }
        crate::preempt::section_close();
    }

    #[cold]
    fn wake_one(&self) {
        crate::sched::note::futex_wake(&self.state, 1);
    }

    /// The lock's address: the order in which `select` takes several locks.
    #[inline]
    pub(crate) fn addr(&self) -> usize {
        self as *const RawLock as usize
    }
}

#[cfg(loom)]
mod loom_lock {
    use loom::sync::{Condvar, Mutex};

    /// The loom stand-in (module docs): same interface, no guard object.
    pub(crate) struct RawLock {
        held: Mutex<bool>,
        cv: Condvar,
    }

    impl RawLock {
        pub(crate) fn new() -> RawLock {
            RawLock {
                held: Mutex::new(false),
                cv: Condvar::new(),
            }
        }

        pub(crate) fn lock(&self) {
            let mut held = self.held.lock().unwrap();
            while *held {
                held = self.cv.wait(held).unwrap();
            }
            *held = true;
        }

        pub(crate) fn unlock(&self) {
            *self.held.lock().unwrap() = false;
            self.cv.notify_one();
        }

        pub(crate) fn addr(&self) -> usize {
            self as *const RawLock as usize
        }
    }
}
