//! The G/M/P scheduler: Go's design (`proc.go`), in Rust.
//!
//! # Model
//! * **G** ([`g::G`]): a goroutine — saved registers, a stack, a status.
//! * **M** ([`m::M`]): an OS thread. It runs goroutines only while it holds a P, and runs its
//!   own scheduler loop on its own pthread stack ("g0").
//! * **P** ([`p::P`]): one of GOMAXPROCS scheduling contexts; it owns a 256-slot lock-free run
//!   queue plus `runnext`, a free list of dead Gs, and a timer heap (`crate::time::heap`).
//!
//! Run queues: each P's ring (owner pushes/pops, anyone steals half), and one global queue
//! under the scheduler lock (`Synced`), fed by ring overflow (half the ring in one splice) and
//! by threads that are not Ms. An M looking for work ([`schedule::find_runnable`]) checks, in
//! order: its P's due timers (whose callbacks ready sleepers onto its queue), the global
//! queue every 61st tick (fairness: a busy local queue must not starve it), the local queue,
//! the global queue (a batch), then steals from a random victim (4 passes, `runnext` only on
//! the last) and runs other Ps' due timers, then drops its P and re-checks everything before
//! sleeping.
//!
//! # Timers and sleeping Ms
//! Timers live on per-P heaps and are run by the scheduler, never by a timer thread (the
//! essay is in `time/mod.rs`). The idle half of the scheduler changes in one way: among the
//! idle Ms, one at a time — the *timer sleeper* — sleeps on its note with a futex timeout at
//! the earliest deadline of any P instead of indefinitely ([`idle::stopm_timed`]); arming an
//! earlier timer wakes it ([`idle::timer_wake`], Go's `wakeNetPoller`), and `startm` hands
//! work to the other idle Ms first. With no timers pending, every idle M sleeps without a
//! timeout and an idle runtime costs no CPU. The hot paths pay one Relaxed load of the P's
//! `next_when` per trip through the scheduler; nothing more when no timer exists.
//!
//! # Spinning, and why no wake-up is lost (Go's "worker parking/unparking" essay)
//! We want to keep enough Ms running to use every P when there is work, and to park Ms when
//! there is not, without a central lock on the hot paths. Rejected designs: (1) one queue and
//! lock for everything — scales badly and serialises every spawn; (2) waking an M for every
//! readied G — pays a futex wake per spawn and wakes far more threads than there is work;
//! (3) handing a G directly to an idle M — needs the idle M to own a P and still races with
//! the P's owner going idle.
//!
//! Go's answer, followed here: an M is *spinning* when it has a P, found no local work and is
//! looking elsewhere. `nmspinning` counts them. Whoever makes a G runnable on a local queue
//! (spawn, ready) then calls [`idle::wakep`], which starts a spinning M only if there is an
//! idle P and no M is already spinning (at most one new spinner per wake-up; spinners are
//! further capped at half the busy Ps). A spinner that finds work stops spinning and, if it
//! was the last, wakes another (so bursts fan out one M at a time). A spinner that finds
//! nothing must, in this order: release its P, decrement `nmspinning`, then re-check every
//! P's queue; a submitter must, in this order: publish the G, then read `nmspinning`. With a
//! StoreLoad barrier on both sides (SeqCst operations: the submitter's `runnext` swap and
//! SeqCst load; the spinner's SeqCst decrement and fence), at least one of them sees the
//! other: either the submitter sees a spinner (which will find the G), or the spinner sees
//! the G (and takes a P back to run it). The global queue is simpler: it is guarded by the
//! lock, and a submitter that is not an M starts an M for any idle P it finds afterwards.
//!
//! # Invariants
//! * A G is on at most one queue; whoever dequeues it owns it (see `g.rs`).
//! * A P is held by at most one M; its status CAS proves it (see `p.rs`).
//! * Broken invariants are fatal (`gort: fatal: ...`, abort): never unwind through g0.
//!
//! Lock order: a user timer's state lock (`time::Timer`) before a P's timer-heap lock; a
//! heap lock is never held while calling out (timer callbacks run unlocked) nor while taking
//! the scheduler lock; two heap locks only together when a retiring P's timers move to P0
//! (P0's first). `synced` (the scheduler lock) before the stack allocator's lock; `gfree`,
//! `allgs` and `mlive` are leaf locks, never held with another.

pub(crate) mod runq;

#[cfg(not(loom))]
pub(crate) mod g;
#[cfg(not(loom))]
pub(crate) mod idle;
#[cfg(not(loom))]
pub(crate) mod m;
pub(crate) mod note;
#[cfg(not(loom))]
pub(crate) mod p;
pub(crate) mod park;
#[cfg(not(loom))]
pub(crate) mod pinning;
pub(crate) mod pword;
#[cfg(not(loom))]
pub(crate) mod schedule;
pub(crate) mod spin;
#[cfg(not(loom))]
pub(crate) mod syscall;
#[cfg(not(loom))]
pub(crate) mod sysmon;
#[cfg(not(loom))]
pub(crate) mod task;

#[cfg(not(loom))]
mod imp {
    use super::g::{G, GQueue};
    use super::m::M;
    use super::p::P;
    use crate::loom::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Mutex, Ordering};
    use std::sync::Condvar;

    /// Upper bound on GOMAXPROCS (Go's historical `_MaxGomaxprocs`).
    pub(crate) const MAX_PROCS: usize = 1024;

    /// What the scheduler lock guards (STYLE: functions needing the lock take `&mut Synced`).
    pub(crate) struct Synced {
        /// The global run queue.
        pub(crate) runq: GQueue,
        /// Idle Ps (a stack: the most recently idled P is warmest).
        pub(crate) pidle: Vec<*mut P>,
        /// Idle Ms, asleep on their notes.
        pub(crate) midle: Vec<*mut M>,
        /// Ms created so far (for `max_threads`).
        pub(crate) mcount: usize,
        /// Every M ever created (freed when the scheduler is dropped).
        pub(crate) allm: Vec<*mut M>,
        /// Ms asleep in `stoplockedm`, waiting for their locked goroutine (`syscall.rs`).
        pub(crate) mlocked: Vec<*mut M>,
    }

    /// The global free list of dead Gs with their stacks (Go's `sched.gFree`).
    ///
    /// `warm`: stacks may still hold the pages their last goroutine touched (most recently
    /// freed at the front: reused first). `cold`: scavenged by an idle runtime, only the top
    /// page resident; used when `warm` is empty.
    pub(crate) struct GlobalFree {
        pub(crate) warm: GQueue,
        pub(crate) cold: GQueue,
        /// Refills taken from this list (a clock for "unused since").
        pub(crate) taken: u64,
        /// A timer to free the excess is armed (`schedule::arm_excess_timer`).
        pub(crate) excess_timer: bool,
    }

    impl GlobalFree {
        /// Take a free G, warm ones first.
        pub(crate) fn pop(&mut self) -> Option<*mut G> {
            self.warm.pop_front().or_else(|| self.cold.pop_front())
        }
    }

    /// One runtime's scheduler state (Go's `schedt`, plus `allp`).
    pub(crate) struct Sched {
        pub(crate) stack_size: usize,
        pub(crate) pin: bool,
        /// Pinning relaxes while other processes compete for the CPUs (`pinning.rs`);
        /// false for `GORT_PIN=strict` and when not pinning at all.
        pub(crate) pin_adaptive: bool,
        pub(crate) max_threads: usize,
        /// The CPUs this process may run on, at start (P i is pinned to `cpus[i % len]`).
        pub(crate) cpus: Vec<usize>,
        /// GOMAXPROCS. Ps with `id >= gomaxprocs` retire at their next scheduling point.
        pub(crate) gomaxprocs: AtomicU32,
        /// Ps ever created (`allp[..nprocs_created]` are non-null; never freed before drop).
        pub(crate) allp: Box<[AtomicPtr<P>]>,
        pub(crate) nprocs_created: AtomicU32,
        pub(crate) nmspinning: AtomicU32,
        pub(crate) npidle: AtomicU32,
        /// Length of the global run queue, readable without the lock (a hint; re-checked under it).
        pub(crate) runqsize: AtomicU32,
        pub(crate) synced: Mutex<Synced>,
        pub(crate) gfree: Mutex<GlobalFree>,
        /// Every G ever allocated by this runtime (freed or abandoned at shutdown).
        pub(crate) allgs: Mutex<Vec<*mut G>>,
        pub(crate) shutting_down: AtomicBool,
        /// Live M threads; shutdown waits for it to reach zero.
        pub(crate) mlive: std::sync::Mutex<usize>,
        pub(crate) mlive_cv: Condvar,
        /// Counters not owned by a P.
        pub(crate) spawned_outside: AtomicU64,
        pub(crate) ms_created: AtomicU64,
        pub(crate) m_wakeups: AtomicU64,
        pub(crate) retired_counters: super::p::PCounters,
        /// The timer sleeper's registration (see `time/mod.rs`).
        pub(crate) timers: crate::time::SchedTimers,
        /// The network poller (created at the first socket; see `netpoll/mod.rs`).
        pub(crate) netpoll: crate::netpoll::Poller,
        /// Where the poller's blocker sleeps: per-CPU idle shares (`netpoll/place.rs`).
        pub(crate) place: crate::netpoll::place::Place,
        /// Asynchronous preemption: mode, quantum, monitor, counters (`preempt/mod.rs`).
        pub(crate) preempt: crate::preempt::PreemptState,
        /// Ms with a goroutine locked to them (statistics).
        pub(crate) mlocked: AtomicU64,
        /// The preemption quantum in ns (also sysmon's foreign-blocking threshold).
        pub(crate) quantum_ns: u64,
        /// sysmon's thread, wake-up word and counters (`sysmon.rs`).
        pub(crate) sysmon: super::sysmon::Shared,
        /// Whether pinning is relaxed now (`pinning.rs`).
        pub(crate) pinning: super::pinning::Shared,
    }

    // SAFETY: raw pointers inside are owned by the structures that hold them and guarded by the
    // locks they sit behind (`synced`, `gfree`, `allgs`); everything else is atomic.
    unsafe impl Send for Sched {}
    // SAFETY: as above.
    unsafe impl Sync for Sched {}

    impl Sched {
        /// The scheduler lock.
        #[inline]
        pub(crate) fn lock(&self) -> crate::loom::MutexGuard<'_, Synced> {
            // Contended, we may sleep in the kernel holding a P: tell sysmon it is us.
            match super::syscall::lock_marked(&self.synced) {
                Ok(g) => g,
                Err(_) => super::fatal("scheduler lock poisoned"),
            }
        }

        /// GOMAXPROCS now.
        #[inline]
        pub(crate) fn procs(&self) -> u32 {
            // Relaxed: a hint for heuristics; P retirement re-checks at scheduling points.
            self.gomaxprocs.load(Ordering::Relaxed)
        }

        /// P number `i` (`i < nprocs_created`).
        #[inline]
        pub(crate) fn p(&self, i: usize) -> *mut P {
            // Acquire: pairs with the release store that published a newly created P.
            self.allp[i].load(Ordering::Acquire)
        }
    }
}

#[cfg(not(loom))]
pub(crate) use imp::*;

/// Report a broken runtime invariant and abort. Never unwinds (g0 has nothing to unwind to).
#[cold]
pub(crate) fn fatal(msg: &str) -> ! {
    fatal_fmt(format_args!("{msg}"))
}

/// [`fatal`] with formatting.
#[cold]
pub(crate) fn fatal_fmt(args: std::fmt::Arguments<'_>) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "gort: fatal: {args}");
    std::process::abort()
}

/// Async-signal-safe: the goroutine running on this thread, for the SIGSEGV overflow
/// diagnosis. Returns its id and its stack, or `None` on an M's own stack (g0) or a
/// thread that is not an M.
#[cfg(not(loom))]
pub(crate) fn signal_current_goroutine() -> Option<(u64, *const crate::stack::Stack)> {
    // Const-initialised TLS without a destructor, plain loads: async-signal-safe.
    let g = m::current_g();
    if g.is_null() {
        return None;
    }
    // SAFETY: a running G's struct is alive and its `stack` is not modified while it runs.
    unsafe {
        let st = (*g).stack.as_ref()?;
        Some(((*g).id, st as *const crate::stack::Stack))
    }
}
