//! Contention-adaptive pinning (`src/sched/pinning.rs`): an M pinned to its P's CPU lets go of
//! it while another thread competes for that CPU, and pins itself again once the competition
//! has stopped; `GORT_PIN=strict` (`pin_strict`) never lets go.
//!
//! The competitor is a plain thread pinned to the P's CPU, spinning. The tests read the M's
//! affinity from inside a goroutine (`sched_getaffinity` of the calling thread is its M's),
//! and every wait is bounded generously: these catch hangs, they time nothing. They share one
//! lock so that two competitors never run at once, and sit in their own binary so that the
//! other suites' threads do not compete for the CPUs while they look for calm.

mod common;

use gort::{Preempt, Runtime};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The CPUs the calling thread may run on.
fn affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data filled in by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_self(cpu: usize) {
    // SAFETY: as above; the set names one allowed CPU.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0
        );
    }
}

/// Whether this machine can run the test: two CPUs, and run-queue delays in /proc.
fn usable() -> Option<Vec<usize>> {
    let cpus = affinity();
    if cpus.len() < 2 {
        println!("one CPU: nothing to relax to; skipped");
        return None;
    }
    let ok = std::fs::read_to_string("/proc/thread-self/schedstat")
        .is_ok_and(|t| t.split_whitespace().nth(1).is_some());
    if !ok {
        println!("no /proc/<tid>/schedstat here: adaptive pinning is inert; skipped");
        return None;
    }
    Some(cpus)
}

/// A plain thread spinning on `cpu` until dropped.
struct Competitor {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Competitor {
    fn start(cpu: usize) -> Competitor {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            pin_self(cpu);
            let mut x = 0u64;
            while !flag.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
        Competitor {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Competitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keep the goroutine busy (so that its P runs and sysmon samples its M) and pass through the
/// scheduler (where the M follows the policy) until `done`, or panic after `limit`.
fn busy_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        gort::yield_now();
        if done() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            gort::stats()
        );
    }
}

fn runtime(strict: bool) -> Runtime {
    Runtime::builder()
        .procs(1)
        .pin_threads(true)
        .pin_strict(strict)
        // The goroutine passes through the scheduler by itself; no quantum signals needed.
        .preempt(Preempt::Off)
        .build()
        .unwrap()
}

#[test]
fn relaxes_under_a_competitor_and_pins_again_when_it_stops() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cpus) = usable() else { return };
    let rt = runtime(false);
    let report = common::run_guarded(Duration::from_secs(120), move || {
        rt.block_on(move || {
            let home = cpus[0];
            busy_until("pinned at start", Duration::from_secs(10), || {
                affinity() == [home]
            });
            assert_eq!(gort::stats().pinning, "pinned");
            let competitor = Competitor::start(home);
            busy_until(
                "relaxed under a competitor",
                Duration::from_secs(30),
                || gort::stats().pinning == "relaxed",
            );
            // The M lets go at its next pass through the scheduler.
            busy_until("the M unpinned", Duration::from_secs(10), || {
                affinity() == cpus
            });
            drop(competitor);
            busy_until("pinned again after calm", Duration::from_secs(60), || {
                gort::stats().pinning == "pinned"
            });
            busy_until("the M pinned again", Duration::from_secs(10), || {
                affinity() == [home]
            });
            let st = gort::stats();
            assert!(st.pin_relaxations >= 1, "{st}");
            st.to_string()
        })
    });
    println!("{report}");
}

#[test]
fn strict_pinning_stays_under_a_competitor() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cpus) = usable() else { return };
    let rt = runtime(true);
    common::run_guarded(Duration::from_secs(60), move || {
        rt.block_on(move || {
            let home = cpus[0];
            busy_until("pinned at start", Duration::from_secs(10), || {
                affinity() == [home]
            });
            let _competitor = Competitor::start(home);
            // Ten samples' worth of contention (an adaptive runtime relaxes after one).
            let start = Instant::now();
            busy_until("half a second", Duration::from_secs(10), || {
                start.elapsed() >= Duration::from_millis(500)
            });
            let st = gort::stats();
            assert_eq!(st.pinning, "strict", "{st}");
            assert_eq!(st.pin_relaxations, 0, "{st}");
            assert_eq!(affinity(), [home], "the M left its CPU");
        })
    });
}
