//! P: a scheduling context. GOMAXPROCS of them; an M must hold one to run goroutines.
//!
//! # States and ownership
//!
//! | status    | held by an M? | on the idle list? | who may touch owner-only fields |
//! |-----------|---------------|-------------------|---------------------------------|
//! | `Idle`    | no            | yes (under the sched lock) | whoever takes it off the list |
//! | `Running` | yes (`m`)     | no                | that M only                     |
//! | `Syscall` | no (its M is in `gort::syscall`, `m.oldp`) | no | nobody: the P is frozen; the M's exit CAS or sysmon's retake CAS decides the next owner |
//! | `Retaking`| no (sysmon is checking that a foreign-blocked M is still asleep) | no | nobody: sysmon's decisive CAS, its revert, or the M's reclaim CAS decides |
//! | `Dead`    | no            | no                | nobody (retired by a GOMAXPROCS decrease; revived by an increase) |
//!
//! The status word also carries an *epoch*, bumped by every transition: an M remembers the
//! word it installed (`m.pword`), and "do I still own my P?" is one load and one compare
//! against it (`sched/syscall.rs`, the choke point). Transitions are CASes
//! ([`P::cas_status`]); a failed one is a broken invariant, and fatal — except that a
//! `Running` P may be seen `Retaking` (sysmon checking whether its M is blocked, see
//! `sysmon.rs`): its holder, busy in the runtime, moves it on from there and sysmon loses.
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

pub(crate) use crate::sched::pword::{PStatus, next_word, word_state};

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
    /// `gort::syscall` entries by goroutines on this P.
    pub(crate) syscalls: AtomicU64,
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
    /// `PStatus` in the low 8 bits, the epoch above (56 bits: never wraps in practice).
    status: AtomicU64,
    /// The M holding this P (diagnostics, sysmon's foreign-blocking check; written by the holder).
    pub(crate) m: AtomicPtr<M>,
    /// Entries into `gort::syscall` (Go's `syscalltick`): written by the holder, read by sysmon
    /// to tell one long syscall from many short ones.
    pub(crate) syscalltick: AtomicU32,
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
            status: AtomicU64::new(PStatus::Idle as u64),
            m: AtomicPtr::new(std::ptr::null_mut()),
            syscalltick: AtomicU32::new(0),
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

    pub(crate) fn status(&self) -> PStatus {
        word_state(self.word())
    }

    /// Holder only: a G gets a new time slice.
    #[inline]
    pub(crate) fn bump_schedtick(&self) {
        // Relaxed: single writer (the holder); sysmon only compares values across looks.
        let t = self.schedtick.load(Ordering::Relaxed);
        self.schedtick.store(t.wrapping_add(1), Ordering::Relaxed);
    }

    /// The whole status word (state and epoch).
    #[inline]
    pub(crate) fn word(&self) -> u64 {
        // Acquire: pairs with the release of whichever transition installed the word, so the
        // owner-only fields handed over with it are visible.
        self.status.load(Ordering::Acquire)
    }

    /// CAS the whole word. Whoever wins owns the P in the new state.
    #[must_use]
    #[inline]
    pub(crate) fn cas_word(&self, old: u64, new: u64) -> bool {
        // AcqRel: the P's owner-only fields pass from the previous holder to the next.
        self.status
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Move `from -> to`, bumping the epoch; returns the new word. A failed transition means
    /// two Ms think they own the P: fatal. A `Running` P found `Retaking` is being checked by
    /// sysmon, which has not decided yet: its holder, running runtime code, is evidently not
    /// blocked, so it moves the P on from there, and sysmon's next CAS (revert or take) fails.
    pub(crate) fn cas_status(&self, from: PStatus, to: PStatus) -> u64 {
        loop {
            let w = self.word();
            let state = word_state(w);
            if state == from || (state == PStatus::Retaking && from == PStatus::Running) {
                let new = next_word(w, to);
                if self.cas_word(w, new) {
                    return new;
                }
                continue;
            }
            crate::sched::fatal_fmt(format_args!(
                "P{} status is {:?}, expected {:?} (moving to {:?})",
                self.id, state, from, to
            ));
        }
    }
}
