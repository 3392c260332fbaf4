//! Where the netpoll blocker sleeps — on the idlest CPU, so that the wake-ups sockets send it
//! land on a CPU with room, not on the CPU of the thread that sent the data — whether the
//! goroutines a poll brings back get a helper M (section "Helpers"), and whether the blocker
//! spins before it sleeps (section "Spinning before blocking"). All three are decided from how
//! busy sysmon finds the CPUs, so that a server's threads leave its clients their CPU.
//!
//! # Why
//! A write to a socket wakes the thread waiting in `epoll_wait` for it with a *sync* wake-up
//! (`sock_def_readable` → `ep_poll_callback` → `wake_up_sync`): the kernel takes it as "the
//! waker is about to sleep" and places the woken thread on the waker's CPU, unless the woken
//! thread's previous CPU is idle (`wake_affine_idle`, then `select_idle_sibling`, which on a
//! busy LLC skips its scan for an idle CPU). A client that does not sleep after its write — a
//! load generator with many connections, a proxy, any busy neighbour — is preempted by every
//! such wake-up, and once the blocker has run on the client's CPU it blocks there again, so
//! the next write wakes it there again. Measured (BENCHMARKS.md, "Network", 2026-11-30):
//! beside gort's HTTP server, `wrk -t1` was runnable but not running 135–256 ms of every
//! second, 102–231 ms of it while the other CPU was idle, and woke the blocker on its own CPU
//! three times as often as on the idle one (tokio's two workers: 6–31 %, 40–241 ms).
//! With this module (`ROUNDS=5 SCHED=1 BASE=<before> bash benches/net.sh`, one sitting):
//! the client's wait 80–147 ms a second (tokio 61–157), and +11 % round trips on echo and
//! requests on HTTP over the same tree without it.
//!
//! # Model
//! * sysmon ([`Sampler::look`], every [`SAMPLE_NS`]) reads each allowed CPU's idle time from
//!   `/proc/stat` and keeps a moving average of its idle share ([`Place`], per mille), and
//!   which CPU is the idlest. It samples only while sockets are registered and the Ms are not
//!   pinned (pinning relaxed, or `GORT_PIN=0`): a pinned M's placement is not the kernel's.
//! * The M that claims the blocker role ([`settle`], before `epoll_wait`): if the CPU it is
//!   on is idle [`MARGIN`] less of the time than the idlest one, it moves there —
//!   `sched_setaffinity` to that CPU alone, then back to every allowed CPU — and blocks. Its
//!   previous CPU is then the idle one, and the wake-up goes there. An M already on a CPU
//!   about as idle as any stays (no moves between equally loaded CPUs).
//!
//! Cost: sysmon reads `/proc/stat` (one `pread` of an open file, ~10 µs on 2 CPUs) and the
//! process's CPU clock every 50 ms while sockets exist; the blocker pays one `sched_getcpu`
//! (rseq/vDSO) and two relaxed loads per blocking poll, and two `sched_setaffinity` calls plus
//! a migration when it moves. Without `/proc/stat`, nothing moves.
//!
//! # Helpers
//! Go's rule: goroutines readied onto an M's P wake another M (`wakep`) if a P is idle, so
//! that the work fans out; a poll that brings back a batch does so too (Go's `injectglist`
//! starts an M per idle P). That pays when the helper finds an idle CPU. Beside a process that
//! keeps the other CPUs busy — the load generator next to a server, the client of a
//! request/response service — it finds none: it time-slices with that process, preempting it
//! at every wake-up, and the two Ms pass the work back and forth with futex wake-ups. Measured
//! under `wrk -t1 -c64` against `examples/http.rs` on 2 CPUs (BENCHMARKS.md, "Network"):
//! ~5,500 M wake-ups a second at GOMAXPROCS 2, and 7 % more requests at GOMAXPROCS 1, which
//! has no helper to wake.
//!
//! So the sampler also keeps what the allowed CPUs give to *everything but this process*
//! (`Place::others`: their busy shares summed, less this process's CPU time over the same
//! interval, averaged as the idle shares), and [`crate::netpoll::wake_batch`] lets a polled
//! batch wake a helper only if, with it, each of our busy Ps still has a CPU and the helper
//! [`HELPER_SHARE`] of one that nobody else uses ([`helper_fits`]). Otherwise the polling M,
//! which is on its way back to `find_runnable`, runs the batch itself. Our own Ms never count
//! as others, so a server that keeps every CPU busy by itself still fans out, and with more
//! CPUs than clients the helpers come as before. Everything else that readies goroutines
//! (spawns, channels, timers, a spinner's hand-off) keeps Go's rule, and without fresh samples
//! (Ms pinned, no sockets for a while, no `/proc/stat`) polled batches do too.
//!
//! The cost of a withheld helper is latency within a batch: its goroutines run one after
//! another on one M, so one that computes for long delays the rest, by at most a quantum
//! (the preemption monitor), as on a runtime with one P. `stats().net_helpers_withheld`
//! counts the batches.
//!
//! # Spinning before blocking
//! With the helpers withheld, one M serves the sockets: it runs out of work thousands of
//! times a second and blocks in `epoll_wait`, and each time the client's next write must wake
//! it — a wake-up (an IPI on another CPU) paid by the client's `write`, and a sleep and a
//! wake-up paid by the M, on a client that is the bottleneck (`wrk` at 99 % of its CPU). So the
//! blocker first polls without blocking for up to [`SPIN_NS`] (and no later than its timer
//! deadline), as long as the allowed CPUs would idle at least [`SPIN_IDLE`] without our spins
//! (`Place::idle_unspun`: their idle time plus the time the blocker spun, averaged — the
//! spins' own CPU must not make the CPUs look busy and switch them off). Idle time is the test,
//! not "others": busy loops of other processes that get 1.1 of 2 CPUs leave no idle time,
//! and a spin there would take CPU from them. Measured (`ROUNDS=5 BASE=4a113e3 bash
//! benches/net.sh`): +11 % requests and +14 % echo round trips; under `wrk` blocking polls
//! fall from ~7,500 a second to ~300 (14,000 spins a second, 99 % of them catching an event).
//! `stats().net_blocker_spins` / `net_blocker_spin_hits`
//! count them; `net_cpu_idle_milli` and `net_cpu_others_milli` show the sampler's figures.
//! Go does not spin in the poller (its spinning Ms spin on the run queues only); Linux's
//! `busy_poll` is the kernel's version of the same trade.
//!
//! # Rejected
//! * Keeping the blocker pinned to the idle CPU while it waits: its wake-up would queue
//!   behind whatever runs there, and unpinning after every wake-up costs a system call per
//!   poll.
//! * Waiting on an outer epoll that holds the inner one (the outer's waiter is woken without
//!   the sync hint): the wake-up then still goes to the waker's CPU whenever the blocker's
//!   previous CPU is the waker's, which is the stable bad state; +3 % in throughput, at two
//!   more system calls per blocking poll.
//! * Polling without blocking for 50 µs before giving up the P, or before blocking: the
//!   blocker still ends up asleep on the client's CPU in every gap longer than that (−10 %
//!   and −1 %).

use crate::loom::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use crate::sched::Sched;
use crate::sched::m::M;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// How often sysmon samples (ns); as the pinning sampler.
pub(crate) const SAMPLE_NS: u64 = crate::sched::pinning::SAMPLE_NS;
/// The blocker moves if its CPU is idle this much less (per mille of the time) than the
/// idlest CPU. `/proc/stat` counts in 10 ms ticks, so one 50 ms sample is ±200 per mille;
/// the average (over ~4 samples) and this margin keep that noise from moving it. Measured
/// (HTTP, 2 vCPUs shared with `wrk`): a margin of 150 and ~8 samples reacted too slowly to
/// the kernel moving the client between the CPUs (every 0.5–1 s here) and moved the blocker
/// a few dozen times a second, +10 % in throughput; these values ~600 times a second, +11 %
/// on echo and HTTP alike, and the client's wait with a CPU idle down to tokio's.
pub(crate) const MARGIN: u32 = 100;
/// A helper M is woken for goroutines a network poll brought back only if, with it, each of
/// our busy Ps still has a CPU of its own and the helper this much of one, per mille, that
/// nobody else uses (module docs, "Helpers").
pub(crate) const HELPER_SHARE: u32 = 750;
/// How long the M about to block in the poller first polls without blocking, when a CPU is
/// left for it (module docs, "Spinning before blocking"). Measured under `wrk` against
/// `examples/http.rs`: 20, 30 and 100 µs all beat not spinning; 30 µs by 6 % over 8 rounds.
pub(crate) const SPIN_NS: u64 = 30_000;
/// The blocker spins only while the allowed CPUs would idle at least this much of one CPU
/// (per mille, summed over them) had it not spun.
pub(crate) const SPIN_IDLE: u32 = 50;
/// Weight of a new sample in the moving average: 1 / 2^AVG_SHIFT.
const AVG_SHIFT: u32 = 2;

/// The moving average of every figure the sampler keeps: `new` alone at first, then a
/// 1 / 2^[`AVG_SHIFT`] share of it.
fn average(old: Option<u32>, new: u32) -> u32 {
    match old {
        None => new,
        Some(a) => a - (a >> AVG_SHIFT) + (new >> AVG_SHIFT),
    }
}
/// Samples older than this are not acted on (sysmon sleeps long while the runtime idles).
const STALE_NS: u64 = 500_000_000;

/// The shared half, in `Sched`: written by sysmon, read by the blocker.
pub(crate) struct Place {
    /// Per allowed CPU (index into `Sched::cpus`): average idle share, per mille; `u32::MAX`
    /// until sampled.
    idle: Box<[AtomicU32]>,
    /// Index (into `Sched::cpus`) of the idlest CPU, or -1.
    idlest: AtomicI32,
    /// `nanotime` of the last sample.
    at: AtomicU64,
    /// Moves made (statistics, tests).
    moves: AtomicU64,
    /// Average CPU the allowed CPUs gave to everything but this process, per mille of one
    /// CPU (the sum over them: 2 CPUs fully taken is 2000); `u32::MAX` until sampled.
    others: AtomicU32,
    /// Batches of polled goroutines for which no helper M was woken (statistics).
    withheld: AtomicU64,
    /// Spins before a blocking poll, and those that found events (statistics).
    spins: AtomicU64,
    spin_hits: AtomicU64,
    /// Time the blocker spent spinning (ns, summed), and the average idle time of the allowed
    /// CPUs had it not spun (per mille of a CPU; `u32::MAX` until sampled).
    spun_ns: AtomicU64,
    idle_unspun: AtomicU32,
}

impl Place {
    pub(crate) fn new(ncpus: usize) -> Place {
        Place {
            idle: (0..ncpus).map(|_| AtomicU32::new(u32::MAX)).collect(),
            idlest: AtomicI32::new(-1),
            at: AtomicU64::new(0),
            moves: AtomicU64::new(0),
            others: AtomicU32::new(u32::MAX),
            withheld: AtomicU64::new(0),
            spins: AtomicU64::new(0),
            spin_hits: AtomicU64::new(0),
            spun_ns: AtomicU64::new(0),
            idle_unspun: AtomicU32::new(u32::MAX),
        }
    }

    pub(crate) fn moves(&self) -> u64 {
        // Relaxed: statistics.
        self.moves.load(Ordering::Relaxed)
    }

    pub(crate) fn withheld(&self) -> u64 {
        // Relaxed: statistics.
        self.withheld.load(Ordering::Relaxed)
    }

    /// Count a spin before a blocking poll of `ns`, and whether it found events.
    pub(crate) fn count_spin(&self, ns: u64, hit: bool) {
        // Relaxed (all): statistics, and a sum sysmon reads racily.
        self.spun_ns.fetch_add(ns, Ordering::Relaxed);
        self.spins.fetch_add(1, Ordering::Relaxed);
        if hit {
            self.spin_hits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (spins before a blocking poll, those that found events).
    pub(crate) fn spins(&self) -> (u64, u64) {
        // Relaxed (both): statistics.
        (
            self.spins.load(Ordering::Relaxed),
            self.spin_hits.load(Ordering::Relaxed),
        )
    }

    /// What the allowed CPUs would idle without the blocker's spins (per mille of a CPU,
    /// summed), if a fresh sample says.
    pub(crate) fn idle_unspun(&self) -> Option<u32> {
        // Relaxed: a hint, as `others`.
        let idle = self.idle_unspun.load(Ordering::Relaxed);
        (idle != u32::MAX && self.fresh()).then_some(idle)
    }

    /// What other processes take of the allowed CPUs (per mille of a CPU), if a fresh sample
    /// says.
    pub(crate) fn others(&self) -> Option<u32> {
        // Relaxed: a hint; a stale one costs one needless or missed helper or spin.
        let others = self.others.load(Ordering::Relaxed);
        (others != u32::MAX && self.fresh()).then_some(others)
    }

    /// Whether the last sample is recent enough to act on ([`STALE_NS`]).
    fn fresh(&self) -> bool {
        // Relaxed: a hint (as every figure it vouches for).
        crate::time::nanotime().saturating_sub(self.at.load(Ordering::Relaxed)) <= STALE_NS
    }
}

/// Whether a helper fits (module docs, "Helpers"): `others` per mille of a CPU taken by other
/// processes from `ncpus` allowed CPUs, `busy` of our Ps running.
#[inline]
pub(crate) fn helper_fits(others: u32, ncpus: usize, busy: u32) -> bool {
    let spare = (ncpus as u64 * 1000).saturating_sub(others as u64);
    busy as u64 * 1000 + HELPER_SHARE as u64 <= spare
}

/// `netpoll::wake_batch`'s question: may the goroutines a poll just brought back wake a
/// helper M? Yes unless the samples (fresh ones) say that no CPU is left for one. Any M.
pub(crate) fn helper_wanted(s: &Sched) -> bool {
    // Relaxed: a hint; with no P idle, `wakep` would do nothing anyway.
    let idle = s.npidle.load(Ordering::Relaxed);
    if idle == 0 {
        return true;
    }
    let Some(others) = s.place.others() else {
        return true;
    };
    let busy = s.procs().saturating_sub(idle);
    if helper_fits(others, s.cpus.len(), busy) {
        return true;
    }
    // Relaxed: statistics.
    s.place.withheld.fetch_add(1, Ordering::Relaxed);
    false
}

/// `netpoll::block_idle`'s question: may the M about to block in the poller spin first? Only
/// if fresh samples say that the allowed CPUs would idle at least [`SPIN_IDLE`] without our
/// spins: a spin must burn idle time, not take CPU from anyone. Any M.
pub(crate) fn spin_wanted(s: &Sched) -> bool {
    s.place.idle_unspun().is_some_and(|idle| idle >= SPIN_IDLE)
}

/// Whether an M on a CPU idle `cur` per mille of the time should move to one idle `best`.
#[inline]
pub(crate) fn should_move(cur: u32, best: u32) -> bool {
    cur + MARGIN <= best
}

/// The blocker's side (module docs): called by `block_idle` after it claimed the role and
/// before it blocks. Own thread.
pub(crate) fn settle(m: &M) {
    let s = &*m.sched;
    let place = &s.place;
    // Relaxed (all loads here): hints; a stale one costs one needless or missed move.
    let best = place.idlest.load(Ordering::Relaxed);
    if best < 0 || m.pinned.get() >= 0 || !place.fresh() {
        return;
    }
    // SAFETY: sched_getcpu has no preconditions (-1 on error).
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        return;
    }
    let Ok(cur) = s.cpus.binary_search(&(cpu as usize)) else {
        return;
    };
    let best = best as usize;
    if cur == best {
        return;
    }
    let idle = |i: usize| place.idle[i].load(Ordering::Relaxed);
    let (ci, bi) = (idle(cur), idle(best));
    if ci == u32::MAX || bi == u32::MAX || !should_move(ci, bi) {
        return;
    }
    move_to(&s.cpus, s.cpus[best]);
    // Relaxed: statistics.
    place.moves.fetch_add(1, Ordering::Relaxed);
}

/// Move the calling thread onto `cpu` (the kernel migrates it before the call returns), then
/// allow it on every CPU of `all` again: only the previous CPU that its next wake-up looks at
/// has changed. `cpu` is one of `all`, so the second call cannot fail for want of an allowed
/// CPU, and the thread is never left on one CPU.
pub(crate) fn move_to(all: &[usize], cpu: usize) {
    crate::sched::m::set_affinity(0, &[cpu]);
    crate::sched::m::set_affinity(0, all);
}

/// sysmon's half (its thread only).
pub(crate) struct Sampler {
    file: Option<File>,
    /// Opening `/proc/stat` failed: do not try again.
    unavailable: bool,
    at: u64,
    /// Per allowed CPU: (idle, total) ticks at the last sample.
    last: Vec<Option<(u64, u64)>>,
    /// Per allowed CPU: the average idle share, per mille (`None` until two samples).
    avg: Vec<Option<u32>>,
    buf: Vec<u8>,
    parsed: Vec<(usize, u64, u64)>,
    /// This process's CPU time (ns) at the last sample, and the average CPU that others
    /// took (per mille of a CPU; `None` until two samples).
    own: u64,
    others: Option<u32>,
    /// The blocker's spin time (ns, `Place::spun_ns`) at the last sample, and the average of
    /// what the allowed CPUs would have idled without it (per mille of a CPU).
    spun: u64,
    idle_unspun: Option<u32>,
}

impl Sampler {
    pub(crate) fn new() -> Sampler {
        Sampler {
            file: None,
            unavailable: false,
            at: 0,
            last: Vec::new(),
            avg: Vec::new(),
            buf: Vec::new(),
            parsed: Vec::new(),
            own: 0,
            others: None,
            spun: 0,
            idle_unspun: None,
        }
    }

    /// Sample at most every [`SAMPLE_NS`] while sockets exist and the Ms are not pinned.
    pub(crate) fn look(&mut self, s: &Sched, now: u64) {
        if self.unavailable
            || s.cpus.len() < 2
            || now.saturating_sub(self.at) < SAMPLE_NS
            || !s.netpoll.has_sockets()
            || (s.pin && !s.pinning.relaxed())
        {
            return;
        }
        let since = now - self.at;
        let first = self.at == 0;
        self.at = now;
        let own = process_cpu_ns();
        let own_share = (own.saturating_sub(self.own) * 1000 / since.max(1)) as u32;
        self.own = own;
        // Relaxed: a statistic summed by the spinning Ms.
        let spun = s.place.spun_ns.load(Ordering::Relaxed);
        let spun_share = (spun.saturating_sub(self.spun) * 1000 / since.max(1)) as u32;
        self.spun = spun;
        if self.file.is_none() {
            match File::open("/proc/stat") {
                Ok(f) => self.file = Some(f),
                Err(_) => {
                    self.unavailable = true;
                    return;
                }
            }
            // The cpu lines come first: ~100 bytes each (the rest, interrupt counts, is not
            // read).
            self.buf = vec![0; 256 + 160 * (s.cpus.last().copied().unwrap_or(0) + 2)];
            self.last = vec![None; s.cpus.len()];
            self.avg = vec![None; s.cpus.len()];
        }
        let Some(file) = &self.file else { return };
        let Ok(n) = file.read_at(&mut self.buf, 0) else {
            return;
        };
        parse_stat(&self.buf[..n], &mut self.parsed);
        if let Some((others, idle)) = self.absorb(&s.cpus, own_share, spun_share, first) {
            // Relaxed (both): hints for `helper_wanted` and `spin_wanted`.
            s.place.others.store(others, Ordering::Relaxed);
            s.place.idle_unspun.store(idle, Ordering::Relaxed);
        }
        let mut best: Option<(usize, u32)> = None;
        for (i, a) in self.avg.iter().enumerate() {
            let Some(a) = *a else { continue };
            // Relaxed: hints for the blocker (module docs).
            s.place.idle[i].store(a.min(1000), Ordering::Relaxed);
            if best.is_none_or(|(_, b)| a > b) {
                best = Some((i, a));
            }
        }
        if let Some((i, _)) = best {
            // Relaxed (both): hints.
            s.place.idlest.store(i as i32, Ordering::Relaxed);
            s.place.at.store(now, Ordering::Relaxed);
        }
    }

    /// Fold the `/proc/stat` lines just parsed into the per-CPU idle averages; returns the new
    /// averages of what others took and of what the CPUs would have idled without our spins
    /// (per mille of a CPU), if this sample measured every allowed CPU against an earlier
    /// one. `own` and `spun`: this process's CPU and the blocker's spinning over the
    /// interval, per mille; `first`: there was no interval (the first sample).
    fn absorb(&mut self, cpus: &[usize], own: u32, spun: u32, first: bool) -> Option<(u32, u32)> {
        // The busy shares of the allowed CPUs this interval, summed.
        let mut busy = Some(0u32);
        let mut seen = 0;
        for &(cpu, idle, total) in &self.parsed {
            let Ok(i) = cpus.binary_search(&cpu) else {
                continue;
            };
            seen += 1;
            match self.last[i] {
                Some((li, lt)) if total > lt => {
                    let share =
                        (idle.saturating_sub(li).min(total - lt) * 1000 / (total - lt)) as u32;
                    self.avg[i] = Some(average(self.avg[i], share));
                    busy = busy.map(|b| b + 1000 - share);
                }
                _ => busy = None,
            }
            self.last[i] = Some((idle, total));
        }
        let busy = busy.filter(|_| seen == cpus.len() && !first)?;
        let others = average(self.others, others_share(busy, own));
        let idle = (cpus.len() as u32 * 1000).saturating_sub(busy);
        let idle = average(self.idle_unspun, idle + spun.min(busy));
        self.others = Some(others);
        self.idle_unspun = Some(idle);
        Some((others, idle))
    }
}

/// What the allowed CPUs gave to everything but us over an interval, per mille of one CPU:
/// their busy shares summed, less this process's CPU over the same interval (its threads run
/// only on allowed CPUs). The two come from different clocks (`/proc/stat` ticks, the
/// process's CPU time), so the difference is clamped at 0.
pub(crate) fn others_share(busy: u32, own: u32) -> u32 {
    busy.saturating_sub(own)
}

/// This process's CPU time so far (ns), every thread's; 0 if the clock cannot be read.
fn process_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The per-CPU lines of `/proc/stat` (`cpuN user nice system idle iowait irq softirq steal
/// ...`, in ticks) as (N, idle + iowait, user + … + steal). Lines it cannot read are skipped.
pub(crate) fn parse_stat(text: &[u8], out: &mut Vec<(usize, u64, u64)>) {
    out.clear();
    for line in text.split(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"cpu") else {
            // The cpu lines are first and together; stop at the first other one.
            if !out.is_empty() {
                break;
            }
            continue;
        };
        if !rest.first().is_some_and(u8::is_ascii_digit) {
            continue; // the aggregate "cpu  ..." line
        }
        let mut words = rest.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let Some(id) = words
            .next()
            .and_then(|w| std::str::from_utf8(w).ok()?.parse::<usize>().ok())
        else {
            continue;
        };
        let mut f = [0u64; 8];
        let mut got = 0;
        for (slot, w) in f.iter_mut().zip(words) {
            match std::str::from_utf8(w).ok().and_then(|w| w.parse().ok()) {
                Some(v) => {
                    *slot = v;
                    got += 1;
                }
                None => break,
            }
        }
        if got < 5 {
            continue; // truncated by the read size
        }
        out.push((id, f[3] + f[4], f.iter().sum()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_cpu_lines_and_stops_after_them() {
        let text = b"cpu  100 0 50 800 10 0 5 0 0 0\n\
                     cpu0 60 0 30 300 5 0 3 2 0 0\n\
                     cpu1 40 0 20 500 5 0 2 0 0 0\n\
                     intr 12345 1 2 3\n\
                     cpu9 1 1 1 1 1 1 1 1\n";
        let mut out = Vec::new();
        parse_stat(text, &mut out);
        assert_eq!(out, vec![(0, 305, 400), (1, 505, 567)]);
        // A read that cut the last line short drops only that line.
        parse_stat(&text[..text.len() - 60], &mut out);
        assert_eq!(out, vec![(0, 305, 400)]);
    }

    /// A move leaves the thread allowed everywhere it was, having passed through `cpu`.
    #[test]
    fn a_move_restores_the_affinity() {
        std::thread::spawn(|| {
            let all = crate::runtime::allowed_cpus();
            if all.len() < 2 {
                return;
            }
            // SAFETY: no preconditions.
            let here = unsafe { libc::sched_getcpu() } as usize;
            let other = *all.iter().find(|&&c| c != here).unwrap();
            move_to(&all, other);
            assert_eq!(crate::runtime::allowed_cpus(), all, "affinity restored");
            move_to(&all, here);
            assert_eq!(crate::runtime::allowed_cpus(), all, "affinity restored");
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_helper_needs_three_quarters_of_a_cpu_nobody_else_uses() {
        assert!(
            !helper_fits(930, 2, 1),
            "2 CPUs, one P busy, a client taking 0.93 of a CPU"
        );
        assert!(helper_fits(0, 2, 1), "an idle machine");
        assert!(helper_fits(250, 2, 1), "the share itself");
        assert!(!helper_fits(260, 2, 1));
        assert!(helper_fits(1100, 2, 0), "no P busy: 0.9 of a CPU is room");
        assert!(
            helper_fits(1000, 8, 6),
            "8 CPUs, one taken: room for a 7th P"
        );
        assert!(!helper_fits(1000, 8, 7), "but not for an 8th");
        assert!(!helper_fits(u32::MAX - 1, 2, 0));
    }

    /// What others take is the allowed CPUs' busy time less ours, and what they would idle
    /// is their idle time plus our spins, both averaged; a sample that misses a CPU gives no
    /// estimate.
    #[test]
    fn others_and_idle_from_the_cpus_our_cpu_and_our_spins() {
        let cpus = [0usize, 1];
        let mut sm = Sampler::new();
        sm.last = vec![None; 2];
        sm.avg = vec![None; 2];
        // (cpu, idle + iowait, total), in ticks.
        sm.parsed = vec![(0, 100, 1000), (1, 100, 1000)];
        assert_eq!(sm.absorb(&cpus, 0, 0, true), None, "no interval yet");
        // 10 ticks each: CPU 0 busy throughout, CPU 1 busy 4 of them; we took 0.9 of a CPU.
        sm.parsed = vec![(0, 100, 1010), (1, 106, 1010)];
        assert_eq!(sm.absorb(&cpus, 900, 0, false), Some((500, 600)));
        assert_eq!(sm.avg, vec![Some(0), Some(600)], "per-CPU idle shares");
        // Both busy throughout, 0.3 of a CPU of it our spins; our CPU time (another clock)
        // above what /proc/stat saw: this sample counts as nobody else, a quarter of the
        // average, and as 0.3 of a CPU idle.
        sm.parsed = vec![(0, 100, 1020), (1, 106, 1020)];
        assert_eq!(sm.absorb(&cpus, 2100, 300, false), Some((375, 525)));
        // A client taking a whole CPU beside our one, no spins: nothing idle.
        sm.parsed = vec![(0, 100, 1030), (1, 106, 1030)];
        assert_eq!(
            sm.absorb(&cpus, 1000, 0, false),
            Some((375 - 93 + 250, 525 - 131))
        );
        // A read that lost CPU 1's line.
        sm.parsed = vec![(0, 100, 1040)];
        assert_eq!(sm.absorb(&cpus, 0, 0, false), None);
    }

    #[test]
    fn moves_only_past_the_margin() {
        assert!(
            should_move(0, 300),
            "a saturated CPU against a 30 % idle one"
        );
        assert!(should_move(100, 200), "the margin itself");
        assert!(!should_move(120, 200), "8 points is noise at 10 ms ticks");
        assert!(!should_move(500, 500));
        assert!(!should_move(600, 100));
    }
}
