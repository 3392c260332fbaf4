//! Runtime counters (`gort::stats()`).

use crate::loom::Ordering;
use crate::sched::{Sched, schedule};
use std::fmt;

/// A snapshot of a runtime's counters. Counters are read without stopping the world, so a
/// snapshot taken while goroutines run is approximate (each counter is exact on its own
/// P, and monotonic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// GOMAXPROCS.
    pub procs: usize,
    /// Goroutines spawned and not finished.
    pub goroutines: usize,
    /// Goroutines spawned.
    pub spawned: u64,
    /// Goroutines that finished (returned or panicked).
    pub completed: u64,
    /// Gs an M took from its own ring.
    pub local_hits: u64,
    /// Gs an M took from its `runnext` slot (inheriting the time slice).
    pub runnext_hits: u64,
    /// Gs an M took from the global queue.
    pub global_hits: u64,
    /// Successful steals (each moves half a victim's queue).
    pub steals: u64,
    /// Ring overflows that moved half a ring to the global queue.
    pub spills: u64,
    /// `yield_now` calls by goroutines.
    pub yields: u64,
    /// Goroutine parks (blocking on join, channels, locks, timers).
    pub parks: u64,
    /// Timer callbacks run (sleeps ended, timed waits expired, timers fired, ticks).
    pub timers_run: u64,
    /// Timers pending on the Ps' heaps at snapshot time.
    pub timers_pending: usize,
    /// OS threads (Ms) created.
    pub threads: u64,
    /// Idle Ms woken to run work.
    pub thread_wakeups: u64,
    /// Ps idle at the time of the snapshot.
    pub idle_procs: usize,
    /// Ms spinning (looking for work) at the time of the snapshot.
    pub spinning: usize,
    /// Goroutine stacks mapped (in use or cached), process-wide.
    pub stacks_mapped: usize,
    /// Bytes of address space reserved for goroutine stacks, process-wide.
    pub stack_reserved_bytes: usize,
    /// Goroutines waiting in the Ps' local run queues (ring + runnext) at snapshot time.
    pub local_queued: usize,
    /// Goroutines waiting in the global run queue at snapshot time.
    pub global_queued: usize,
    /// Network polls (`epoll_wait` calls: non-blocking ones before stealing, blocking ones
    /// by the idle M, sysmon's).
    pub net_polls: u64,
    /// Of those, blocking polls (an idle M waiting in epoll instead of on its futex).
    pub net_blocking_polls: u64,
    /// Goroutines (and plain threads) readied by the network poller.
    pub net_readied: u64,
    /// Times the M about to block in the network poller first moved to the idlest CPU, where
    /// the sockets' wake-ups then land instead of preempting the sender (`netpoll/place.rs`;
    /// only while Ms are not pinned).
    pub net_blocker_moves: u64,
    /// Batches of goroutines a network poll brought back that the polling M kept to itself,
    /// waking no helper M, because the CPUs were taken by other processes (`netpoll/place.rs`,
    /// "Helpers"; only while Ms are not pinned).
    pub net_helpers_withheld: u64,
    /// Times the M about to block in the network poller first polled without blocking for a
    /// while (up to 30 µs) because a CPU was spare (`netpoll/place.rs`, "Spinning before
    /// blocking").
    pub net_blocker_spins: u64,
    /// Of those, the times events came during the spin and the M did not block.
    pub net_blocker_spin_hits: u64,
    /// What other processes took of this runtime's CPUs lately, as its sampler sees it, in
    /// thousandths of a CPU (2000: two CPUs' worth); `None` while not sampled (no sockets,
    /// pinned Ms, a single CPU).
    pub net_cpu_others_milli: Option<u32>,
    /// What this runtime's CPUs would have idled lately without the poller's spins, in
    /// thousandths of a CPU summed over them; the poller spins only while it is at least 50.
    /// `None` while not sampled.
    pub net_cpu_idle_milli: Option<u32>,
    /// `gort::syscall` calls by goroutines.
    pub syscalls: u64,
    /// Ps sysmon took from a goroutine blocked in `gort::syscall` with work waiting on the P
    /// (its run queue or due timers).
    pub handoffs_syscall_work: u64,
    /// Of `handoffs_syscall_work`, those taken by a syscall watcher — an idle M woken on the
    /// syscall's CPU when it began — rather than by sysmon.
    pub handoffs_syscall_watched: u64,
    /// Ps taken from a syscall because no other thread was spinning or idle.
    pub handoffs_syscall_idle: u64,
    /// Ps taken from a syscall that lasted 10 ms.
    pub handoffs_syscall_long: u64,
    /// Ps taken from a goroutine that blocked in the kernel (or ran foreign code) without
    /// `gort::syscall`.
    pub handoffs_foreign: u64,
    /// Whether foreign blocking is detected here (needs `/proc/self/task/<tid>/schedstat`).
    pub foreign_detection: bool,
    /// OS threads (Ms) alive now.
    pub threads_live: usize,
    /// Ms idle (asleep on the idle list) at snapshot time.
    pub threads_idle: usize,
    /// Ms with a goroutine locked to them (`lock_os_thread`) at snapshot time.
    pub threads_locked: usize,
    /// sysmon rounds so far.
    pub sysmon_rounds: u64,
    /// How Ms are placed: `"pinned"` (each on its P's CPU), `"relaxed"` (pinning suspended
    /// while other processes compete for the CPUs; see `RuntimeBuilder::pin_threads`),
    /// `"strict"` (pinned, never relaxed) or `"off"`.
    pub pinning: &'static str,
    /// Times pinning was relaxed so far.
    pub pin_relaxations: u64,
    /// How stack guard pages are made: `"madvise"` (`MADV_GUARD_INSTALL`, Linux ≥ 6.13, no
    /// extra mapping per stack) or `"mprotect"` (two mappings per stack, bounded by
    /// `vm.max_map_count`).
    pub stack_guard: &'static str,
    /// Asynchronous preemption counters and latency.
    pub preempt: crate::PreemptStats,
}

pub(crate) fn collect(s: &Sched) -> Stats {
    // A runtime section: a goroutine preempted holding `mlive` (a std Mutex) would stall
    // every M that wants to start a thread, possibly all of them (seen under qemu: every P
    // stuck in `newm` behind a preempted `gort::stats()` caller).
    let _section = crate::preempt::Section::enter();
    let t = schedule::sum_counters(s);
    let (net_blocker_spins, net_blocker_spin_hits) = s.place.spins();
    let st = crate::stack::stats();
    // Relaxed: statistics.
    let outside = s.spawned_outside.load(Ordering::Relaxed);
    let np = s.netpoll.stats();
    Stats {
        procs: s.procs() as usize,
        goroutines: schedule::live_goroutines(s),
        spawned: t[0] + outside,
        completed: t[1],
        local_hits: t[2],
        runnext_hits: t[3],
        global_hits: t[4],
        steals: t[5],
        yields: t[6],
        parks: t[7],
        spills: t[8],
        timers_run: t[9],
        timers_pending: crate::time::pending(s),
        threads: s.ms_created.load(Ordering::Relaxed),
        thread_wakeups: s.m_wakeups.load(Ordering::Relaxed),
        idle_procs: s.npidle.load(Ordering::Relaxed) as usize,
        spinning: s.nmspinning.load(Ordering::Relaxed) as usize,
        stacks_mapped: st.mapped,
        stack_reserved_bytes: st.reserved_bytes,
        local_queued: schedule::local_queued(s),
        global_queued: s.runqsize.load(Ordering::Relaxed) as usize,
        net_polls: np.polls,
        net_blocking_polls: np.blocking_polls,
        net_readied: np.readied,
        net_blocker_moves: s.place.moves(),
        net_helpers_withheld: s.place.withheld(),
        net_blocker_spins,
        net_blocker_spin_hits,
        net_cpu_others_milli: s.place.others(),
        net_cpu_idle_milli: s.place.idle_unspun(),
        preempt: s.preempt.stats(),
        syscalls: t[10],
        handoffs_syscall_work: s.sysmon.handoffs[0].load(Ordering::Relaxed),
        handoffs_syscall_watched: s.sysmon.watched.load(Ordering::Relaxed),
        handoffs_syscall_idle: s.sysmon.handoffs[1].load(Ordering::Relaxed),
        handoffs_syscall_long: s.sysmon.handoffs[2].load(Ordering::Relaxed),
        handoffs_foreign: s.sysmon.handoffs[3].load(Ordering::Relaxed),
        foreign_detection: s.sysmon.foreign_detection.load(Ordering::Relaxed),
        threads_live: *s.mlive.lock().unwrap_or_else(|e| e.into_inner()),
        threads_idle: s.lock().midle.len(),
        threads_locked: s.mlocked.load(Ordering::Relaxed) as usize,
        sysmon_rounds: s.sysmon.rounds.load(Ordering::Relaxed),
        pinning: if !s.pin {
            "off"
        } else if !s.pin_adaptive {
            "strict"
        } else if s.pinning.relaxed() {
            "relaxed"
        } else {
            "pinned"
        },
        pin_relaxations: s.pinning.relaxations(),
        stack_guard: match crate::stack::guard_mode() {
            crate::stack::GuardMode::MadviseGuard => "madvise",
            crate::stack::GuardMode::Mprotect => "mprotect",
        },
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "procs={} goroutines={} spawned={} completed={} threads={} (wakeups {})",
            self.procs,
            self.goroutines,
            self.spawned,
            self.completed,
            self.threads,
            self.thread_wakeups
        )?;
        writeln!(
            f,
            "runq hits: runnext={} local={} global={}  steals={} spills={}",
            self.runnext_hits, self.local_hits, self.global_hits, self.steals, self.spills
        )?;
        write!(
            f,
            "yields={} parks={}  queued: local={} global={}  idle_procs={} spinning={}\n\
             timers: run={} pending={}\n\
             netpoll: polls={} blocking={} readied={} blocker moves={} helpers withheld={} \
             spins={} (hits {})\n\
             syscalls={} handoffs: syscall work={} (watched {}) idle={} long={} foreign={}{}\n\
             threads: live={} idle={} locked={}  sysmon rounds={}  pinning: {} (relaxed {}x)\n\
             stacks: {} mapped, {} MiB reserved, guards by {}",
            self.yields,
            self.parks,
            self.local_queued,
            self.global_queued,
            self.idle_procs,
            self.spinning,
            self.timers_run,
            self.timers_pending,
            self.net_polls,
            self.net_blocking_polls,
            self.net_readied,
            self.net_blocker_moves,
            self.net_helpers_withheld,
            self.net_blocker_spins,
            self.net_blocker_spin_hits,
            self.syscalls,
            self.handoffs_syscall_work,
            self.handoffs_syscall_watched,
            self.handoffs_syscall_idle,
            self.handoffs_syscall_long,
            self.handoffs_foreign,
            if self.foreign_detection {
                ""
            } else {
                " (foreign detection unavailable)"
            },
            self.threads_live,
            self.threads_idle,
            self.threads_locked,
            self.sysmon_rounds,
            self.pinning,
            self.pin_relaxations,
            self.stacks_mapped,
            self.stack_reserved_bytes >> 20,
            self.stack_guard
        )?;
        write!(f, "\n{}", self.preempt)
    }
}
