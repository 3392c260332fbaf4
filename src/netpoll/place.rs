//! Where the netpoll blocker sleeps: on the idlest CPU, so that the wake-ups sockets send it
//! land on a CPU with room, not on the CPU of the thread that sent the data.
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
//! Cost: sysmon reads `/proc/stat` (one `pread` of an open file, ~10 µs on 2 CPUs) every
//! 50 ms while sockets exist; the blocker pays one `sched_getcpu` (rseq/vDSO) and two relaxed
//! loads per blocking poll, and two `sched_setaffinity` calls plus a migration when it moves.
//! Without `/proc/stat`, nothing moves.
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
/// Weight of a new sample in the moving average: 1 / 2^AVG_SHIFT.
const AVG_SHIFT: u32 = 2;
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
}

impl Place {
    pub(crate) fn new(ncpus: usize) -> Place {
        Place {
            idle: (0..ncpus).map(|_| AtomicU32::new(u32::MAX)).collect(),
            idlest: AtomicI32::new(-1),
            at: AtomicU64::new(0),
            moves: AtomicU64::new(0),
        }
    }

    pub(crate) fn moves(&self) -> u64 {
        // Relaxed: statistics.
        self.moves.load(Ordering::Relaxed)
    }
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
    if best < 0 || m.pinned.get() >= 0 {
        return;
    }
    if crate::time::nanotime().saturating_sub(place.at.load(Ordering::Relaxed)) > STALE_NS {
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
        }
    }

    /// Sample at most every [`SAMPLE_NS`] while sockets exist and the Ms are not pinned.
    pub(crate) fn look(&mut self, s: &Sched, now: u64) {
        if self.unavailable
            || s.cpus.len() < 2
            || now.saturating_sub(self.at) < SAMPLE_NS
            || !crate::netpoll::has_sockets(s)
            || (s.pin && !s.pinning.relaxed())
        {
            return;
        }
        self.at = now;
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
        for &(cpu, idle, total) in &self.parsed {
            let Ok(i) = s.cpus.binary_search(&cpu) else {
                continue;
            };
            if let Some((li, lt)) = self.last[i]
                && total > lt
            {
                let share = (idle.saturating_sub(li).min(total - lt) * 1000 / (total - lt)) as u32;
                self.avg[i] = Some(match self.avg[i] {
                    None => share,
                    Some(a) => a - (a >> AVG_SHIFT) + (share >> AVG_SHIFT),
                });
            }
            self.last[i] = Some((idle, total));
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
