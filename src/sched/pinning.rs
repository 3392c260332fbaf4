//! Contention-adaptive pinning: Ms stay pinned to their Ps' CPUs while the runtime has those
//! CPUs to itself, and let the kernel place them while other processes compete for them.
//!
//! # Why
//! Pinning (`M::pin`, one CPU per P) keeps an M's caches and the kernel's bookkeeping on one
//! CPU and removes migrations on a machine the runtime has to itself. It costs dearly when the
//! machine is shared: a pinned M cannot leave a busy CPU for an idle one, nor make room for
//! another process's thread. Measured (BENCHMARKS.md, TCP echo with its single-threaded load
//! generator on the same 2 CPUs): pinned 66k round trips/s, unpinned 82k, the server's Ms
//! waiting in the kernel's run queue 30 % of the time in both cases but the *client* twice as
//! long when they are pinned (19 % against 8 %), and every change of P a forced migration.
//!
//! # Model
//! * **Signal**: sysmon ([`Watch::look`], every [`SAMPLE_NS`]) reads the run-queue delay of
//!   the Ms that run goroutines (`/proc/self/task/<tid>/schedstat`, second field: time spent
//!   runnable but not running). Their average share of the wall time is the contention: how
//!   much of the CPU they want they do not get.
//! * **Relax** above [`RELAX_ABOVE`]: [`Shared::relaxed`] is set; each M, at its next trip
//!   through the scheduler ([`follow`], one Relaxed load on that path), allows itself every
//!   CPU of the process, and `acquirep` stops pinning.
//! * **Restore** after the contention stayed below [`CALM_BELOW`] for `calm` (1 s): each M
//!   pins itself to its P's CPU again at its next trip. Unpinning often cures the contention
//!   it was measured under (the kernel moves the Ms off the contended CPU), so a restore can
//!   bring it straight back; a relapse within [`RELAPSE_NS`] of a restore doubles `calm`, up
//!   to [`CALM_MAX_NS`], so a steady competitor costs at most one short pinned spell per
//!   16 s; a relax that is no relapse sets it back to 1 s.
//! * `GORT_PIN=strict` (`RuntimeBuilder::pin_strict`) never relaxes: for measurements that
//!   need the placement fixed whatever else runs. `GORT_PIN=0` never pins.
//!
//! Cost: sysmon reads one small /proc file per running P every 50 ms (~5 µs each, on
//! sysmon's thread); the scheduler's hot path pays one Relaxed load of a word that changes
//! only when the policy does. Without /proc (or with `schedstat` unreadable) pinning simply
//! stays as configured.
//!
//! Interplay: a syscall watcher (`idle::watch_syscall`) needs an idle M pinned to the
//! syscall's CPU; while pinning is relaxed there is none, and sysmon's nudge serves instead
//! (44–56 µs handoff stall rather than ~23 µs, `sysmon.rs`, "Nudge").

use crate::loom::{AtomicBool, AtomicU64, Ordering};
use crate::sched::Sched;
use crate::sched::m::M;
use crate::sched::p::{PStatus, word_state};
use std::fs::File;

/// How often sysmon samples (ns).
pub(crate) const SAMPLE_NS: u64 = 50_000_000;
/// Relax when the running Ms waited longer than this share of the time.
pub(crate) const RELAX_ABOVE: f64 = 0.10;
/// Calm below this share.
pub(crate) const CALM_BELOW: f64 = 0.03;
/// Calm this long before pinning again (after a relax that is no relapse).
pub(crate) const CALM_MIN_NS: u64 = 1_000_000_000;
/// The longest calm period a run of relapses can require.
pub(crate) const CALM_MAX_NS: u64 = 16_000_000_000;
/// A relax this soon after a restore is a relapse (the restore brought the contention back).
pub(crate) const RELAPSE_NS: u64 = 2_000_000_000;

/// The part the Ms and `stats()` read (in `Sched`).
pub(crate) struct Shared {
    /// Pinning relaxed (module docs). Relaxed: a hint the Ms follow at their next trip.
    relaxed: AtomicBool,
    /// Times pinning was relaxed (statistics).
    relaxations: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            relaxed: AtomicBool::new(false),
            relaxations: AtomicU64::new(0),
        }
    }

    /// Whether pinning is relaxed now.
    pub(crate) fn relaxed(&self) -> bool {
        // Relaxed: a hint (statistics, `acquirep`).
        self.relaxed.load(Ordering::Relaxed)
    }

    pub(crate) fn relaxations(&self) -> u64 {
        // Relaxed: statistics.
        self.relaxations.load(Ordering::Relaxed)
    }
}

/// M side: apply the policy if it changed since this M last looked. Own thread, g0.
#[inline]
pub(crate) fn follow(m: &M) {
    let s = &*m.sched;
    if !s.pin_adaptive {
        return;
    }
    let relaxed = s.pinning.relaxed();
    if relaxed != m.pin_relaxed.get() {
        apply(m, relaxed);
    }
}

#[cold]
fn apply(m: &M, relaxed: bool) {
    m.pin_relaxed.set(relaxed);
    if relaxed {
        m.unpin();
    } else {
        let p = m.p.get();
        if !p.is_null() {
            // SAFETY: we hold `p`.
            m.pin_for_p(unsafe { (*p).cpu });
        }
    }
}

/// The hysteresis of the module docs, apart from the sampling.
#[derive(Debug)]
pub(crate) struct Policy {
    relaxed: bool,
    /// Since when the contention has been below `CALM_BELOW` (relaxed only).
    calm_since: Option<u64>,
    /// Calm needed before the next restore.
    calm_need: u64,
    restored_at: Option<u64>,
}

impl Policy {
    pub(crate) fn new() -> Policy {
        Policy {
            relaxed: false,
            calm_since: None,
            calm_need: CALM_MIN_NS,
            restored_at: None,
        }
    }

    /// One sample: the running Ms waited `ratio` of the time up to `now`. Returns the new
    /// state (true: relaxed) when it changes.
    pub(crate) fn observe(&mut self, now: u64, ratio: f64) -> Option<bool> {
        if !self.relaxed {
            if ratio <= RELAX_ABOVE {
                return None;
            }
            let relapse = self
                .restored_at
                .is_some_and(|r| now.saturating_sub(r) < RELAPSE_NS);
            self.calm_need = if relapse {
                (self.calm_need * 2).min(CALM_MAX_NS)
            } else {
                CALM_MIN_NS
            };
            self.relaxed = true;
            self.calm_since = None;
            return Some(true);
        }
        if ratio >= CALM_BELOW {
            self.calm_since = None;
            return None;
        }
        let since = *self.calm_since.get_or_insert(now);
        if now - since < self.calm_need {
            return None;
        }
        self.relaxed = false;
        self.restored_at = Some(now);
        Some(false)
    }

    #[cfg(test)]
    fn calm_need(&self) -> u64 {
        self.calm_need
    }
}

/// One M thread's `schedstat`, kept open.
struct Thread {
    tid: i32,
    file: File,
    /// Run-queue delay at the last sample (ns).
    delay: u64,
}

impl Thread {
    /// The second field of `schedstat`: time spent runnable, not running (ns).
    fn read_delay(&self) -> Option<u64> {
        crate::sched::sysmon::schedstat_field(&self.file, 1)
    }
}

/// sysmon's side (its thread only).
pub(crate) struct Watch {
    at: u64,
    threads: Vec<Thread>,
    policy: Policy,
}

impl Watch {
    pub(crate) fn new() -> Watch {
        Watch {
            at: 0,
            threads: Vec::new(),
            policy: Policy::new(),
        }
    }

    /// Sample and apply the policy, at most every [`SAMPLE_NS`]. sysmon's thread.
    pub(crate) fn look(&mut self, s: &Sched, now: u64) {
        let dt = now.saturating_sub(self.at);
        if dt < SAMPLE_NS {
            return;
        }
        self.at = now;
        let n = (s.procs() as usize).min(s.nprocs_created.load(Ordering::Acquire) as usize);
        let mut old = std::mem::take(&mut self.threads);
        let (mut waited, mut counted) = (0u64, 0u64);
        for i in 0..n {
            // SAFETY: Ps below nprocs_created live as long as the runtime.
            let p = unsafe { &*s.p(i) };
            if word_state(p.word()) != PStatus::Running {
                continue;
            }
            // Relaxed: a hint; a stale M only mixes one sample.
            let m = p.m.load(Ordering::Relaxed);
            if m.is_null() {
                continue;
            }
            // SAFETY: Ms are freed only when the runtime is dropped. Relaxed: set at start.
            let tid = unsafe { &*m }.tid.load(Ordering::Relaxed);
            if self.threads.iter().any(|t| t.tid == tid) {
                continue;
            }
            let (mut t, known) = match old.iter().position(|t| t.tid == tid) {
                Some(k) => (old.swap_remove(k), true),
                None => match File::open(format!("/proc/self/task/{tid}/schedstat")) {
                    Ok(file) => (
                        Thread {
                            tid,
                            file,
                            delay: 0,
                        },
                        false,
                    ),
                    Err(_) => continue,
                },
            };
            let Some(d) = t.read_delay() else { continue };
            if known {
                waited += d.saturating_sub(t.delay);
                counted += 1;
            }
            t.delay = d;
            self.threads.push(t);
        }
        if counted == 0 {
            // No M ran goroutines at both samples: no information.
            return;
        }
        let ratio = waited as f64 / (counted * dt) as f64;
        if let Some(relaxed) = self.policy.observe(now, ratio) {
            // Relaxed: a hint the Ms follow (module docs).
            s.pinning.relaxed.store(relaxed, Ordering::Relaxed);
            if relaxed {
                // Relaxed: statistics.
                s.pinning.relaxations.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Relax on one contended sample; restore after a calm second, not before.
    #[test]
    fn relaxes_at_once_and_restores_after_calm() {
        let mut p = Policy::new();
        assert_eq!(p.observe(50 * MS, 0.05), None, "5 % is not contention");
        assert_eq!(p.observe(100 * MS, 0.30), Some(true));
        assert_eq!(p.observe(150 * MS, 0.20), None, "still contended");
        assert_eq!(p.observe(200 * MS, 0.01), None, "calm begins");
        assert_eq!(p.observe(700 * MS, 0.05), None, "5 % breaks the calm");
        assert_eq!(p.observe(750 * MS, 0.01), None, "calm begins again");
        assert_eq!(p.observe(1700 * MS, 0.01), None, "950 ms calm");
        assert_eq!(p.observe(1750 * MS, 0.02), Some(false), "a calm second");
    }

    /// A relax right after a restore doubles the calm needed, up to 16 s; one later than
    /// `RELAPSE_NS` sets it back to a second.
    #[test]
    fn relapses_back_off() {
        let mut p = Policy::new();
        let mut now = 0;
        let relax_restore = |p: &mut Policy, now: &mut u64| {
            *now += 50 * MS;
            assert_eq!(p.observe(*now, 0.5), Some(true));
            *now += 50 * MS;
            assert_eq!(p.observe(*now, 0.0), None);
            let need = p.calm_need();
            *now += need;
            assert_eq!(p.observe(*now, 0.0), Some(false));
            need
        };
        let needs: Vec<u64> = (0..7).map(|_| relax_restore(&mut p, &mut now)).collect();
        assert_eq!(
            needs,
            [1, 2, 4, 8, 16, 16, 16].map(|s| s * 1000 * MS),
            "each relapse doubles the calm needed"
        );
        // A relax 3 s after the last restore is no relapse.
        now += 3000 * MS;
        assert_eq!(p.observe(now, 0.5), Some(true));
        assert_eq!(p.calm_need(), CALM_MIN_NS);
    }
}
