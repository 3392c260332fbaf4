//! Integration tests of timers through the public API (`gort::sleep`, `gort::time::{Timer,
//! Ticker}`), every scenario at GOMAXPROCS = 1, 2 and 8 (8 oversubscribes a 2-core machine).
//!
//! Each test builds its own [`Runtime`] and runs its body on a plain thread under a generous
//! hang guard ([`HANG_GUARD`]). The only timing assertion is the exact one: **a sleeper never
//! wakes before its deadline**. Oversleep is measured and printed, never asserted.
//!
//! CPU-time measurements (an idle runtime uses no CPU; 100,000 sleepers cost little) run in a
//! child process — this binary re-run with `--exact child` and `GORT_TIME_CHILD=<role>` — so
//! that the other tests running in this process do not count.
//!
//! Atomics: the counters below publish no data of their own; they are read after a `join` or
//! a `WaitGroup::wait` (which synchronise with the goroutines' exits), so `Relaxed` suffices.

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gort::Runtime;
use gort::sync::WaitGroup;
use gort::time::{Ticker, Timer};

/// How long any one test may take before it counts as hung: far above what any test needs.
const HANG_GUARD: Duration = Duration::from_secs(180);

const PROCS: [usize; 3] = [1, 2, 8];

/// Runs `body` on a plain thread; fails the test if it panics or does not finish within
/// [`HANG_GUARD`].
fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    common::run_guarded(HANG_GUARD, body)
}

fn runtime(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

/// Deterministic per-index pseudo-random numbers (splitmix64).
fn rand(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sleeps `d` and returns the oversleep; panics if it woke early.
fn sleep_checked(d: Duration) -> Duration {
    let start = Instant::now();
    gort::sleep(d);
    let slept = start.elapsed();
    assert!(
        slept >= d,
        "woke early: slept {slept:?} for a sleep of {d:?}"
    );
    slept - d
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------------------------------------
// 100,000 sleepers.

const SLEEPERS: u64 = 100_000;

/// 100,000 goroutines each sleep a random 1–100 ms once: all wake, none early. Returns the
/// sorted oversleeps, the wall time and the process CPU time from the first spawn to the
/// last wake-up.
///
/// Shaped like Go's anchor workload (`go-anchor timers`): results go into a shared table and
/// one `WaitGroup` wait ends the run. Joining 100,000 handles in order instead would measure
/// the joiner too: without preemption, its run of joins on goroutines that already finished
/// (no park) holds the only P for tens of milliseconds at procs = 1.
fn many_sleepers(procs: usize) -> (Vec<Duration>, Duration, Duration) {
    let rt = runtime(procs);
    let cpu0 = common::cpu_time();
    let t0 = Instant::now();
    let over = rt.block_on(|| {
        let table: Arc<Vec<AtomicU64>> =
            Arc::new((0..SLEEPERS).map(|_| AtomicU64::new(0)).collect());
        let wg = Arc::new(WaitGroup::new());
        wg.add(SLEEPERS as i32);
        for i in 0..SLEEPERS {
            let (table, wg) = (table.clone(), wg.clone());
            let d = Duration::from_millis(1 + rand(i) % 100);
            gort::go(move || {
                let over = sleep_checked(d);
                // Relaxed: published by the WaitGroup (done -> wait).
                table[i as usize].store(over.as_nanos() as u64, Ordering::Relaxed);
                wg.done();
            });
        }
        wg.wait();
        table
            .iter()
            // Relaxed: see above.
            .map(|o| Duration::from_nanos(o.load(Ordering::Relaxed)))
            .collect::<Vec<_>>()
    });
    let wall = t0.elapsed();
    let cpu = common::cpu_time() - cpu0;
    let mut over = over;
    assert_eq!(over.len() as u64, SLEEPERS);
    let st = rt.stats();
    assert!(st.timers_run >= SLEEPERS, "{st}");
    // Every sleep's timer is gone (the runtime may have armed its own, e.g. to trim its cache
    // of dead goroutines after this burst).
    assert!(st.timers_pending <= 1, "{st}");
    rt.shutdown();
    over.sort_unstable();
    (over, wall, cpu)
}

fn report_sleepers(procs: usize) {
    let (over, wall, cpu) = guarded(move || many_sleepers(procs));
    eprintln!(
        "100k sleepers, procs={procs}: oversleep p50 {:?} p99 {:?} max {:?}; wall {wall:?}, \
         process CPU {cpu:?} (other tests in this process included)",
        percentile(&over, 0.5),
        percentile(&over, 0.99),
        over[over.len() - 1],
    );
}

#[test]
fn sleepers_100k_procs_1() {
    report_sleepers(1);
}

#[test]
fn sleepers_100k_procs_2() {
    report_sleepers(2);
}

#[test]
fn sleepers_100k_procs_8() {
    report_sleepers(8);
}

// ---------------------------------------------------------------------------------------------
// sleep.

#[test]
fn sleep_on_plain_thread() {
    guarded(|| {
        let d = Duration::from_millis(20);
        let t = Instant::now();
        gort::sleep(d);
        assert!(t.elapsed() >= d);
        gort::sleep(Duration::ZERO);
        let deadline = Instant::now() + d;
        gort::time::sleep_until(deadline);
        assert!(Instant::now() >= deadline);
    });
}

/// A goroutine sleeps while every other P is idle: its M has nothing to run and must become
/// the timer sleeper (futex with a timeout), then run the timer and the goroutine.
#[test]
fn goroutine_sleep_with_all_ps_idle() {
    for procs in PROCS {
        guarded(move || {
            let rt = runtime(procs);
            for ms in [1, 5, 30] {
                rt.block_on(move || sleep_checked(Duration::from_millis(ms)));
                let deadline = Instant::now() + Duration::from_millis(ms);
                rt.block_on(move || {
                    gort::time::sleep_until(deadline);
                    assert!(Instant::now() >= deadline);
                });
            }
            rt.shutdown();
        });
    }
}

/// Short sleeps in a loop, several goroutines at once, mixed with yields: exercises the
/// sleeper hand-over between Ms (each wake-up, a new sleeper) and timers stolen from other
/// Ps.
#[test]
fn sleep_loops() {
    for procs in PROCS {
        guarded(move || {
            let rt = runtime(procs);
            rt.block_on(|| {
                let hs: Vec<_> = (0..16u64)
                    .map(|g| {
                        gort::go(move || {
                            for i in 0..50u64 {
                                sleep_checked(Duration::from_micros(50 + rand(g * 100 + i) % 500));
                                gort::yield_now();
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
            });
            rt.shutdown();
        });
    }
}

/// A goroutine that never yields keeps its P busy: a timer armed on that P must still fire,
/// run by another M (the timer sleeper takes an idle P and steals the timer).
#[test]
fn timer_on_busy_p_fires() {
    for procs in [2, 8] {
        guarded(move || {
            let rt = runtime(procs);
            let fired = rt.block_on(|| {
                let t = Arc::new(Timer::new(Duration::from_millis(20)));
                let t2 = t.clone();
                // Waits on another goroutine; this one spins without a scheduling point, so
                // nobody on this P runs the timer.
                let waiter = gort::go(move || t2.wait());
                let start = Instant::now();
                while !waiter.is_finished() {
                    assert!(
                        start.elapsed() < HANG_GUARD,
                        "timer on a busy P never fired"
                    );
                    std::hint::spin_loop();
                }
                waiter.join().unwrap()
            });
            assert!(fired);
            rt.shutdown();
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Timer.

#[test]
fn timer_stop_reset_semantics() {
    for procs in PROCS {
        guarded(move || {
            let rt = runtime(procs);
            rt.block_on(|| {
                let d = Duration::from_millis(10);
                let start = Instant::now();
                let t = Timer::new(d);
                assert!(t.wait(), "fired");
                assert!(start.elapsed() >= d, "not early");
                assert!(t.wait(), "a fired timer stays fired");
                assert!(!t.stop(), "stop after firing: already expired");
                assert!(
                    !t.reset(Duration::from_secs(3600)),
                    "reset of an expired timer"
                );
                assert!(
                    t.reset(Duration::from_secs(3600)),
                    "reset of a pending timer"
                );
                assert!(t.stop(), "stop of a pending timer");
                assert!(!t.stop(), "second stop");
                assert!(!t.wait(), "a stopped timer does not fire");
                let start = Instant::now();
                assert!(!t.reset(d), "reset of a stopped timer");
                assert!(t.wait());
                assert!(start.elapsed() >= d, "not early");

                // Stop wakes every waiter with false.
                let t = Arc::new(Timer::new(Duration::from_secs(3600)));
                let hs: Vec<_> = (0..4)
                    .map(|_| {
                        let t = t.clone();
                        gort::go(move || t.wait())
                    })
                    .collect();
                gort::sleep(Duration::from_millis(5));
                assert!(t.stop());
                for h in hs {
                    assert!(!h.join().unwrap());
                }

                // Reset while waited for: the waiter waits for the new deadline, no earlier.
                let t = Arc::new(Timer::new(Duration::from_millis(5)));
                let t2 = t.clone();
                let reset_at = Instant::now();
                assert!(t.reset(Duration::from_millis(40)));
                let new_deadline = reset_at + Duration::from_millis(40);
                let h = gort::go(move || {
                    let fired = t2.wait();
                    (fired, Instant::now())
                });
                let (fired, at) = h.join().unwrap();
                assert!(fired);
                assert!(at >= new_deadline, "woke for the old deadline");

                // Many timers, in random order, all fire and none early.
                let hs: Vec<_> = (0..1000u64)
                    .map(|i| {
                        gort::go(move || {
                            let d = Duration::from_micros(rand(i) % 20_000);
                            let start = Instant::now();
                            let t = Timer::new(d);
                            assert!(t.wait());
                            assert!(start.elapsed() >= d);
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
            });
            rt.shutdown();
        });
    }
}

/// Stop racing the firing: exactly one wins — either stop returns true and the timer never
/// fires, or stop returns false and the timer fired.
#[test]
fn timer_stop_vs_fire_race() {
    for procs in PROCS {
        guarded(move || {
            let rt = runtime(procs);
            let (stopped, fired) = rt.block_on(|| {
                let stopped = Arc::new(AtomicUsize::new(0));
                let fired = Arc::new(AtomicUsize::new(0));
                let hs: Vec<_> = (0..2000u64)
                    .map(|i| {
                        let (stopped, fired) = (stopped.clone(), fired.clone());
                        gort::go(move || {
                            let t = Arc::new(Timer::new(Duration::from_micros(rand(i) % 200)));
                            let t2 = t.clone();
                            let w = gort::go(move || t2.wait());
                            for _ in 0..rand(i + 7) % 8 {
                                gort::yield_now();
                            }
                            let s = t.stop();
                            let f = w.join().unwrap();
                            assert!(s != f, "stop={s} but wait={f}");
                            if s {
                                stopped.fetch_add(1, Ordering::Relaxed);
                            } else {
                                fired.fetch_add(1, Ordering::Relaxed);
                            }
                        })
                    })
                    .collect();
                for h in hs {
                    h.join().unwrap();
                }
                (
                    stopped.load(Ordering::Relaxed),
                    fired.load(Ordering::Relaxed),
                )
            });
            eprintln!("timer stop race, procs={procs}: {stopped} stopped, {fired} fired");
            rt.shutdown();
        });
    }
}

/// A timer armed by a goroutine fires and wakes a plain thread after the runtime went idle
/// (all Ps idle, only the timer pending).
#[test]
fn timer_fires_on_idle_runtime() {
    for procs in PROCS {
        guarded(move || {
            let rt = runtime(procs);
            let d = Duration::from_millis(30);
            let start = Instant::now();
            let t = rt.block_on(move || Timer::new(d));
            // The goroutine is gone; the runtime is idle but for the timer.
            assert!(t.wait());
            assert!(start.elapsed() >= d);
            // A plain thread arms it this time (round-robin onto some P's heap).
            let start = Instant::now();
            assert!(!t.reset(d));
            assert!(t.wait());
            assert!(start.elapsed() >= d);
            assert!(rt.stats().timers_run >= 2);
            rt.shutdown();
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Ticker.

#[test]
fn ticker_ticks() {
    for procs in PROCS {
        guarded(move || {
            let rt = runtime(procs);
            rt.block_on(|| {
                let period = Duration::from_millis(3);
                let start = Instant::now();
                let t = Ticker::new(period);
                let mut last = start;
                for k in 1..=5u32 {
                    let at = t.tick().expect("ticking");
                    assert!(at >= last, "ticks in order");
                    assert!(at >= start + period * k, "tick {k} early");
                    last = at;
                }
                // A slow consumer: ticks missed while it sleeps are dropped, one is kept.
                gort::sleep(Duration::from_millis(20));
                let kept = t.tick().expect("a kept tick");
                let next = t.tick().expect("the next tick");
                assert!(next > kept);

                // Another goroutine waiting in tick() is woken by stop with None.
                let t = Arc::new(t);
                let t2 = t.clone();
                t.reset(Duration::from_secs(3600));
                let h = gort::go(move || t2.tick());
                gort::sleep(Duration::from_millis(5));
                t.stop();
                assert_eq!(h.join().unwrap(), None);
                assert_eq!(t.tick(), None, "stopped");

                // Reset restarts a stopped ticker.
                let start = Instant::now();
                t.reset(period);
                let at = t.tick().expect("restarted");
                assert!(at >= start + period);
                t.stop();
            });
            assert_eq!(rt.stats().timers_pending, 0);
            rt.shutdown();
        });
    }
}

#[test]
fn ticker_on_plain_thread() {
    guarded(|| {
        let rt = runtime(2);
        let period = Duration::from_millis(2);
        let start = Instant::now();
        let t = rt.block_on(move || Ticker::new(period));
        // Ticks missed while nobody waits are dropped, so the k-th tick taken is at least the
        // k-th one due; each is taken in order.
        let mut last = start;
        for k in 1..=3u32 {
            let at = t.tick().expect("ticking");
            assert!(at >= start + period * k, "tick {k} early");
            assert!(at > last, "ticks in order");
            last = at;
        }
        drop(t);
        assert_eq!(rt.stats().timers_pending, 0);
        rt.shutdown();
    });
}

/// A timer outliving its runtime is inert: operations report it inactive; dropping it is fine.
#[test]
fn timer_outlives_runtime() {
    guarded(|| {
        let rt = runtime(1);
        let t = rt.block_on(|| Timer::new(Duration::from_secs(3600)));
        let tk = rt.block_on(|| Ticker::new(Duration::from_secs(3600)));
        rt.shutdown();
        assert!(!t.stop());
        assert!(!t.reset(Duration::from_millis(1)));
        tk.stop();
        assert_eq!(tk.tick(), None);
    });
}

// ---------------------------------------------------------------------------------------------
// CPU use, measured in a child process.

const CHILD_ENV: &str = "GORT_TIME_CHILD";

fn child_ok(role: &str) -> String {
    common::child_ok(CHILD_ENV, role, &[], HANG_GUARD)
}

/// An idle runtime uses no CPU: without timers (every M asleep without timeout), and with a
/// far timer pending (one M asleep until it).
#[test]
fn idle_runtime_uses_no_cpu() {
    child_ok("idle_cpu");
}

/// The figure: 100,000 sleepers at procs = 1, with the CPU time while all are asleep.
#[test]
fn sleepers_100k_cpu() {
    child_ok("sleepers_cpu");
}

/// The entry point of every child process; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    match role.as_str() {
        "idle_cpu" => idle_cpu_child(),
        "sleepers_cpu" => sleepers_cpu_child(),
        other => panic!("unknown child role {other}"),
    }
    println!("{role} ok");
}

const IDLE_WINDOW: Duration = Duration::from_millis(200);
const IDLE_CPU_LIMIT: Duration = Duration::from_millis(20);

fn idle_cpu_child() {
    // Preemption on whatever the environment says: its monitor is one of the threads checked.
    let rt = Runtime::builder()
        .procs(4)
        .preempt(gort::Preempt::ThreadHandoff)
        .build()
        .unwrap();
    // Start several Ms: parallel goroutines that sleep and yield.
    rt.block_on(|| {
        let hs: Vec<_> = (0..64u64)
            .map(|i| {
                gort::go(move || {
                    gort::sleep(Duration::from_micros(100 + rand(i) % 1000));
                    gort::yield_now();
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let c0 = common::cpu_time();
    std::thread::sleep(IDLE_WINDOW);
    let idle = common::cpu_time() - c0;
    println!("idle runtime, no timers: {idle:?} CPU over {IDLE_WINDOW:?}");
    assert!(idle < IDLE_CPU_LIMIT, "idle runtime used {idle:?} of CPU");
    assert_threads_asleep("no timers");

    let far = rt.block_on(|| Timer::new(Duration::from_secs(3600)));
    std::thread::sleep(Duration::from_millis(50));
    let c0 = common::cpu_time();
    std::thread::sleep(IDLE_WINDOW);
    let idle = common::cpu_time() - c0;
    println!("idle runtime, one far timer: {idle:?} CPU over {IDLE_WINDOW:?}");
    assert!(
        idle < IDLE_CPU_LIMIT,
        "idle runtime with a timer used {idle:?} of CPU"
    );
    assert_threads_asleep("one far timer");
    assert!(far.stop());
    rt.shutdown();
}

/// Times a runtime thread may be switched in over [`IDLE_WINDOW`] while the runtime is idle.
/// Asleep without a timeout, it is 0; a thread polling on a timer (the preemption monitor's
/// 1 ms check, sysmon's 10 ms back-off) would show 20 to 200 — yet cost well under
/// [`IDLE_CPU_LIMIT`], which is why CPU time alone does not catch it.
const IDLE_WAKEUPS: u64 = 5;

/// Every runtime thread — Ms, sysmon, the preemption monitor — sleeps without a timeout
/// (or until a far timer) once the runtime is idle.
fn assert_threads_asleep(what: &str) {
    let woke = common::wakeups_over("gort", IDLE_WINDOW);
    println!("idle runtime, {what}: wake-ups over {IDLE_WINDOW:?} by thread: {woke:?}");
    assert!(
        woke.iter().any(|(name, _)| name == "gort-preempt"),
        "no preemption monitor among the runtime's threads: {woke:?}"
    );
    for (name, n) in &woke {
        assert!(
            *n <= IDLE_WAKEUPS,
            "idle runtime ({what}): thread {name} was switched in {n} times in {IDLE_WINDOW:?}"
        );
    }
}

/// 100,000 goroutines sleep a random 1–100 ms at procs = 1 (the figure); then 100,000 sleep
/// until a common base time (+ 0–100 ms), and the process CPU time is measured over 200 ms
/// during which every one of them is parked.
fn sleepers_cpu_child() {
    let (over, wall, cpu) = many_sleepers(1);
    println!(
        "100k sleepers 1-100 ms, procs=1: oversleep p50 {:?} p99 {:?} max {:?}; \
         wall {wall:?}, process CPU {cpu:?}",
        percentile(&over, 0.5),
        percentile(&over, 0.99),
        over[over.len() - 1]
    );

    let rt = runtime(1);
    let parked = Arc::new(AtomicUsize::new(0));
    let base = Instant::now() + Duration::from_secs(3);
    let p2 = parked.clone();
    let spawner = rt.spawn(move || {
        let hs: Vec<_> = (0..SLEEPERS)
            .map(|i| {
                let p2 = p2.clone();
                let deadline = base + Duration::from_millis(rand(i) % 100);
                gort::go(move || {
                    // Relaxed: a progress counter polled by the test thread.
                    p2.fetch_add(1, Ordering::Relaxed);
                    gort::time::sleep_until(deadline);
                    assert!(Instant::now() >= deadline, "woke early");
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    // Relaxed: see above.
    while parked.load(Ordering::Relaxed) < SLEEPERS as usize {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The last one counted itself just before parking.
    std::thread::sleep(Duration::from_millis(20));
    let c0 = common::cpu_time();
    std::thread::sleep(IDLE_WINDOW);
    let asleep = common::cpu_time() - c0;
    let in_time = Instant::now() < base;
    spawner.join().unwrap();
    println!(
        "100k sleepers all parked: {asleep:?} CPU over {IDLE_WINDOW:?}{}",
        if in_time {
            ""
        } else {
            " (window overlapped the wake-ups: not meaningful)"
        }
    );
    rt.shutdown();
}
