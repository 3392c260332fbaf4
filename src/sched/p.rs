//! P: a scheduling context. GOMAXPROCS of them; an M must hold one to run goroutines.
//!
//! # States and ownership
//!
//! | status    | held by an M? | on the idle list? | who may touch owner-only fields |
//! |-----------|---------------|-------------------|---------------------------------|
//! | `Idle`    | no            | yes (under the sched lock) | whoever takes it off the list |
//! | `Running` | yes (`m`)     | no                | that M only                     |
//! | `Dead`    | no            | no                | nobody (retired by a GOMAXPROCS decrease; revived by an increase) |
//!
//! (`Syscall` arrives with the syscall handoff work.) Transitions are CASes
//! ([`P::cas_status`]); a failed one is a broken invariant, and fatal.
//!
//! Any thread may read the run queue (`runq.is_empty`, `len`) and steal from it; only the
//! holding M pushes and pops. Owner-only fields live in `UnsafeCell`s and say so. The timer
//! heap has its own lock: any thread arms and stops timers on it, and any M holding some P
//! runs its due timers (the P's own M first; spinners and the timer sleeper for idle Ps).

use crate::loom::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use crate::sched::g::G;
use crate::sched::m::M;
use crate::sched::runq::RunQueue;
use std::cell::UnsafeCell;

#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PStatus {
    Idle = 0,
    Running = 1,
    Dead = 3,
}

/// A G free list owned by one P (Go's `p.gFree`): Gs with their stacks, ready for reuse.
pub(crate) struct LocalFree {
    pub(crate) list: crate::sched::g::GQueue,
}

/// Per-P counters: single writer (the holding M), so `Relaxed` load+store suffices; readers sum
/// them racily for `stats()`.
#[derive(Default)]
pub(crate) struct PCounters {
    pub(crate) spawned: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) local_hits: AtomicU64,
    pub(crate) runnext_hits: AtomicU64,
    pub(crate) global_hits: AtomicU64,
    pub(crate) steals: AtomicU64,
    pub(crate) yields: AtomicU64,
    pub(crate) parks: AtomicU64,
    pub(crate) spills: AtomicU64,
    /// Timer callbacks run by the M holding this P (its own timers or other Ps').
    pub(crate) timers_run: AtomicU64,
}

impl PCounters {
    /// Holder of the P only.
    #[inline]
    pub(crate) fn bump(c: &AtomicU64) {
        // Relaxed: single writer (the M holding the P); stats readers tolerate staleness.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

pub(crate) struct P {
    pub(crate) id: u32,
    status: AtomicU32,
    /// The M holding this P (diagnostics and handoff; written by the holder).
    pub(crate) m: AtomicPtr<M>,
    pub(crate) runq: RunQueue<G>,
    /// Scheduler ticks (Go's `schedtick`): incremented each time a G gets a new time slice.
    /// Written by the owner only (Relaxed load + store: no RMW cost); read by the
    /// preemption monitor (Go's `sysmontick`), which needs only eventual visibility.
    pub(crate) schedtick: AtomicU32,
    /// Owner only.
    pub(crate) gfree: UnsafeCell<LocalFree>,
    pub(crate) counters: PCounters,
    /// The CPU this P's M is pinned to (index into the allowed set), or -1 if not pinned.
    pub(crate) cpu: i32,
    /// This P's timer heap (Go's `p.timers`): any thread, under its own lock (time/heap.rs).
    pub(crate) timers: crate::time::heap::Timers,
}

// SAFETY: shared fields are atomics or the lock-free ring; `UnsafeCell` fields are touched only
// by the M holding the P (Running), whose ownership is handed over by status CASes.
unsafe impl Sync for P {}
// SAFETY: as above.
unsafe impl Send for P {}

impl P {
    pub(crate) fn new(id: u32, cpu: i32) -> P {
        P {
            id,
            status: AtomicU32::new(PStatus::Idle as u32),
            m: AtomicPtr::new(std::ptr::null_mut()),
            runq: RunQueue::new(),
            schedtick: AtomicU32::new(0),
            gfree: UnsafeCell::new(LocalFree {
                list: crate::sched::g::GQueue::new(),
            }),
            counters: PCounters::default(),
            cpu,
            timers: crate::time::heap::Timers::new(),
        }
    }

    /// A new time slice began (owner only).
    #[inline]
    pub(crate) fn bump_schedtick(&self) {
        // Relaxed load + store: single writer (the owner); the monitor's reads tolerate
        // staleness (see the field).
        let t = self.schedtick.load(Ordering::Relaxed);
        self.schedtick.store(t.wrapping_add(1), Ordering::Relaxed);
    }

    pub(crate) fn status(&self) -> PStatus {
        // Acquire: pairs with the release in `cas_status`.
        match self.status.load(Ordering::Acquire) {
            0 => PStatus::Idle,
            1 => PStatus::Running,
            _ => PStatus::Dead,
        }
    }

    /// A failed transition means two Ms think they own the P: fatal.
    pub(crate) fn cas_status(&self, from: PStatus, to: PStatus) {
        // AcqRel: the P's owner-only fields pass from the previous holder to the next.
        if self
            .status
            .compare_exchange(from as u32, to as u32, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            crate::sched::fatal_fmt(format_args!(
                "P{} status is {:?}, expected {:?} (moving to {:?})",
                self.id,
                self.status(),
                from,
                to
            ));
        }
    }
}
