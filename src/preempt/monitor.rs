//! The preemption monitor: the quantum half of Go's sysmon (`retake`'s `preemptone`), on its
//! own thread per runtime. Not folded into sysmon: sysmon backs off to 10 ms when it has
//! nothing to retake, while this check must look every quantum/10 whenever a P runs; run
//! inside sysmon (tried on a branch), it kept sysmon at that pace and measured less fair.
//!
//! # Protocol
//! Every period (quantum/10, clamped to 20 µs..1 ms; sooner when a slice expires sooner) it
//! reads each running P's `schedtick`
//! (Relaxed: the owner bumps it once per scheduled goroutine; a stale value only delays a
//! request by a period). A tick seen for the first time starts a slice at `now`; a slice
//! older than the quantum gets [`super::request`] for the P's M, stamped with its expiry.
//! Requests repeat every period until the tick changes (refusals are retried).
//!
//! Deep sleep: when no P has been running for [`IDLE_CHECKS`] checks in a row (a P in a
//! syscall or being probed by sysmon, `Syscall` or `Retaking`, counts as running: it returns
//! to `Running` without `acquirep`) it sleeps on `word` without a timeout. The streak keeps a
//! server whose Ps all go idle between bursts, many times a millisecond, from paying a futex
//! wake in `acquirep` at each burst (measured: 440 a second under `wrk` against
//! `examples/http.rs`, each waking this thread just as the Ms want the CPUs); an idle runtime
//! pays the streak's few timed wake-ups once, then sleeps for good. Lost wake-up argument
//! (Dekker): the monitor stores `sleeping` (SeqCst), fences, then reads the word and every P's
//! status; an M taking a P CASes the status, fences ([`Control::p_busy`]), then reads
//! `sleeping` and, if set, bumps the word and wakes it. Either the monitor sees the Running
//! P, or the taker sees `sleeping` (and its bump makes the futex wait return).

use crate::loom::{AtomicBool, AtomicU32, Ordering, fence};
use crate::sched::Sched;
use crate::sched::note::{futex_wait, futex_wake};
use crate::sched::p::PStatus;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct Control {
    stop: AtomicBool,
    sleeping: AtomicBool,
    /// Futex word: bumped to wake the monitor (stop, or a P became busy).
    word: AtomicU32,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Control {
    pub(super) fn new() -> Control {
        Control {
            stop: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            word: AtomicU32::new(0),
            thread: std::sync::Mutex::new(None),
        }
    }

    /// An M just took a P (status now Running): wake a deep-sleeping monitor.
    #[inline]
    pub(super) fn p_busy(&self) {
        // SeqCst fence: the taker's half of the Dekker pair in the module docs (its status
        // CAS before, the `sleeping` load after).
        fence(Ordering::SeqCst);
        // Relaxed: ordered by the fence.
        if self.sleeping.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    fn wake(&self) {
        // Release: pairs with the monitor's Acquire load of the word.
        self.word.fetch_add(1, Ordering::Release);
        futex_wake(&self.word, 1);
    }
}

/// Checks in a row that found no P running before the monitor sleeps without a timeout
/// (module docs): a quantum's worth.
const IDLE_CHECKS: u32 = 10;

/// The check period for a quantum.
pub(super) fn monitor_period(q: Duration) -> Duration {
    (q / 10).clamp(Duration::from_micros(20), Duration::from_millis(1))
}

/// A raw runtime pointer for the monitor thread (the monitor is joined before the runtime
/// is dropped: see `stop`).
struct SchedPtr(*const Sched);
// SAFETY: `Sched` is Sync; the pointer's validity is argued at `stop`.
unsafe impl Send for SchedPtr {}

pub(super) fn start(s: &Arc<Sched>) -> std::io::Result<()> {
    let ptr = SchedPtr(Arc::as_ptr(s));
    let h = std::thread::Builder::new()
        .name("gort-preempt".into())
        .spawn(move || {
            let ptr = ptr;
            // SAFETY: the runtime outlives this thread (joined in `stop`, from shutdown).
            run(unsafe { &*ptr.0 })
        })?;
    *s.preempt
        .monitor
        .thread
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some(h);
    Ok(())
}

pub(super) fn stop(s: &Sched) {
    let c = &s.preempt.monitor;
    // Relaxed: published by the wake's Release bump.
    c.stop.store(true, Ordering::Relaxed);
    c.wake();
    let h = c.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(h) = h {
        let _ = h.join();
    }
}

/// Per P: the tick last seen and since when.
#[derive(Clone, Copy)]
struct Seen {
    tick: u32,
    since: u64,
    valid: bool,
}

fn run(s: &Sched) {
    let c = &s.preempt.monitor;
    let q = s.preempt.quantum.as_nanos() as u64;
    let period = monitor_period(s.preempt.quantum);
    let mut seen: Vec<Seen> = Vec::new();
    let mut idle_checks = 0u32;
    loop {
        // Acquire: pairs with the Release bump in `wake`.
        let w = c.word.load(Ordering::Acquire);
        // Relaxed: see `stop`.
        if c.stop.load(Ordering::Relaxed) {
            return;
        }
        let (busy, next_expiry) = check(s, q, &mut seen);
        idle_checks = if busy == 0 { idle_checks + 1 } else { 0 };
        if idle_checks >= IDLE_CHECKS {
            // SeqCst: the monitor's half of the Dekker pair (module docs).
            c.sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            let w2 = c.word.load(Ordering::Acquire);
            if w2 == w && count_running(s) == 0 && !c.stop.load(Ordering::Relaxed) {
                futex_wait(&c.word, w2, None);
            }
            c.sleeping.store(false, Ordering::Relaxed);
            idle_checks = 0;
            continue;
        }
        // Until the next check, or the earliest expiry if sooner: the request goes out on
        // time, not up to a period late.
        let now = crate::time::nanotime();
        let wait = Duration::from_nanos(next_expiry.saturating_sub(now)).min(period);
        futex_wait(&c.word, w, Some(wait.max(Duration::from_micros(5))));
    }
}

/// A P the monitor must stay awake for: running a goroutine, or with its goroutine still on
/// its M — in a syscall, or blocked and being probed by sysmon (sysmon.rs) — whose word can
/// go back to `Running` without `acquirep` (exitsyscall's fast path, a probe's revert, the
/// M's reclaim), which would not wake a deep-sleeping monitor.
fn keeps_awake(status: PStatus) -> bool {
    matches!(
        status,
        PStatus::Running | PStatus::Retaking | PStatus::Syscall
    )
}

fn count_running(s: &Sched) -> usize {
    // Every created P, retiring ones included (see `check`). Acquire: pairs with `resize`'s
    // Release store, which publishes the Ps below the count.
    let n = s.nprocs_created.load(Ordering::Acquire) as usize;
    (0..n)
        .filter(|&i| {
            // SAFETY: created Ps live as long as the runtime.
            keeps_awake(unsafe { &*s.p(i) }.status())
        })
        .count()
}

/// One pass over the Ps; returns how many are running and the earliest slice expiry.
fn check(s: &Sched, q: u64, seen: &mut Vec<Seen>) -> (usize, u64) {
    // Every created P, not only those below GOMAXPROCS: a P that a decrease is retiring keeps
    // running its goroutine until that goroutine's next scheduling point, and a goroutine
    // that never reaches one would keep it — one P more than GOMAXPROCS, never preempted.
    // Preempted, it goes to the global queue and its M retires the P. Idle and dead Ps are
    // skipped by their status. Acquire: as in `count_running`.
    let n = s.nprocs_created.load(Ordering::Acquire) as usize;
    if seen.len() < n {
        seen.resize(
            n,
            Seen {
                tick: 0,
                since: 0,
                valid: false,
            },
        );
    }
    let now = crate::time::nanotime();
    let mut busy = 0;
    let mut next = u64::MAX;
    for (i, sn) in seen.iter_mut().enumerate().take(n) {
        // SAFETY: created Ps live as long as the runtime.
        let p = unsafe { &*s.p(i) };
        // Relaxed: Ms are never freed before the runtime; a stale M only misdirects one
        // request (its handler finds another goroutine, or none, and the policy decides).
        let m = p.m.load(Ordering::Relaxed);
        let status = p.status();
        if keeps_awake(status) && status != PStatus::Running {
            // `Syscall` or `Retaking` (see `keeps_awake`): stay awake; the slice goes on.
            busy += 1;
            continue;
        }
        if status != PStatus::Running || m.is_null() {
            sn.valid = false;
            continue;
        }
        busy += 1;
        // Relaxed: see the module docs.
        let tick = p.schedtick.load(Ordering::Relaxed);
        if !sn.valid || sn.tick != tick {
            *sn = Seen {
                tick,
                since: now,
                valid: true,
            };
            next = next.min(now + q);
            continue;
        }
        if now.saturating_sub(sn.since) >= q {
            // SAFETY: Ms live as long as the runtime.
            super::request(s, unsafe { &*m }, sn.since + q, Some(tick));
        } else {
            next = next.min(sn.since + q);
        }
    }
    (busy, next)
}
