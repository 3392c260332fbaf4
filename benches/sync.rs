//! `gort::sync` micro-benchmarks (criterion): the mutex uncontended and contended, the other
//! primitives' fast paths, and `local!` access.
//!
//! Groups (every reported time is per operation named):
//! - `mutex_uncontended`: one lock + unlock with nobody else around. `gort_thread` on the bench
//!   thread (a plain thread), `gort_goroutine` inside a goroutine, `std` is
//!   `std::sync::Mutex` on the bench thread for reference.
//! - `mutex_contended/procs2_8g`: 8 goroutines at GOMAXPROCS = 2, each doing `n / 8`
//!   lock, increment, unlock; time per lock/unlock pair (the whole run divided by `n`). `gort`
//!   parks waiters; `std_in_goroutines` is a `std::sync::Mutex` used by the same goroutines
//!   (a waiter blocks its M, and with it its P); `std_threads` is 8 OS threads with a std
//!   mutex, the usual non-goroutine baseline.
//! - `rwlock_read_uncontended`, `once_done`, `waitgroup_add_done`: fast paths.
//! - `local_with`: `local!` access in a goroutine (slot already initialised).
//!
//! Goroutine measurements run inside a runtime built once; `iter_custom` times the loop inside
//! the goroutine, so entering the runtime is not counted.
//!
//! Run: `cargo bench --bench sync` (about a minute).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gort::sync::{Mutex, Once, RwLock, WaitGroup};

/// Goroutines (or threads) contending in `mutex_contended`.
const CONTENDERS: u64 = 8;

fn runtime(procs: usize) -> gort::Runtime {
    gort::Runtime::builder()
        .procs(procs)
        .build()
        .expect("cannot build a gort runtime")
}

/// `n` uncontended lock/unlock pairs inside a goroutine.
fn uncontended_in_goroutine(rt: &gort::Runtime, n: u64) -> Duration {
    rt.block_on(move || {
        let m = Mutex::new(0u64);
        let t0 = Instant::now();
        for _ in 0..n {
            *black_box(&m).lock() += 1;
        }
        let d = t0.elapsed();
        assert_eq!(m.into_inner(), n);
        d
    })
}

/// `n` lock/increment/unlock operations split over [`CONTENDERS`] goroutines sharing one
/// gort mutex.
fn contended_gort(rt: &gort::Runtime, n: u64) -> Duration {
    let per = n.div_ceil(CONTENDERS).max(1);
    let d = rt.block_on(move || {
        let m = Arc::new(Mutex::new(0u64));
        let t0 = Instant::now();
        let hs: Vec<_> = (0..CONTENDERS)
            .map(|_| {
                let m = m.clone();
                gort::go(move || {
                    for _ in 0..per {
                        *m.lock() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("contender panicked");
        }
        let d = t0.elapsed();
        assert_eq!(*m.lock(), per * CONTENDERS);
        d
    });
    d.mul_f64(n as f64 / (per * CONTENDERS) as f64)
}

/// As [`contended_gort`] with a `std::sync::Mutex` (waiters block their Ms).
fn contended_std_in_goroutines(rt: &gort::Runtime, n: u64) -> Duration {
    let per = n.div_ceil(CONTENDERS).max(1);
    let d = rt.block_on(move || {
        let m = Arc::new(std::sync::Mutex::new(0u64));
        let t0 = Instant::now();
        let hs: Vec<_> = (0..CONTENDERS)
            .map(|_| {
                let m = m.clone();
                gort::go(move || {
                    for _ in 0..per {
                        *m.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("contender panicked");
        }
        t0.elapsed()
    });
    d.mul_f64(n as f64 / (per * CONTENDERS) as f64)
}

/// [`CONTENDERS`] OS threads sharing a `std::sync::Mutex`.
fn contended_std_threads(n: u64) -> Duration {
    let per = n.div_ceil(CONTENDERS).max(1);
    let m = Arc::new(std::sync::Mutex::new(0u64));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..CONTENDERS)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..per {
                    *m.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("contender panicked");
    }
    t0.elapsed().mul_f64(n as f64 / (per * CONTENDERS) as f64)
}

gort::local! {
    static LOCAL: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn benches(c: &mut Criterion) {
    let rt1 = runtime(1);
    let rt2 = runtime(2);

    let mut g = c.benchmark_group("mutex_uncontended");
    g.throughput(Throughput::Elements(1));
    let m = Mutex::new(0u64);
    g.bench_function("gort_thread", |b| b.iter(|| *black_box(&m).lock() += 1));
    g.bench_function("gort_goroutine", |b| {
        b.iter_custom(|n| uncontended_in_goroutine(&rt1, n))
    });
    let sm = std::sync::Mutex::new(0u64);
    g.bench_function("std", |b| b.iter(|| *black_box(&sm).lock().unwrap() += 1));
    g.finish();

    let mut g = c.benchmark_group("mutex_contended/procs2_8g");
    g.throughput(Throughput::Elements(1));
    g.bench_function("gort", |b| b.iter_custom(|n| contended_gort(&rt2, n)));
    g.bench_function("std_in_goroutines", |b| {
        b.iter_custom(|n| contended_std_in_goroutines(&rt2, n))
    });
    g.bench_function("std_threads", |b| b.iter_custom(contended_std_threads));
    g.finish();

    let mut g = c.benchmark_group("fast_paths");
    g.throughput(Throughput::Elements(1));
    let rw = RwLock::new(0u64);
    g.bench_function("rwlock_read_uncontended", |b| {
        b.iter(|| *black_box(&rw).read())
    });
    let once = Once::new();
    once.call_once(|| ());
    g.bench_function("once_done", |b| {
        b.iter(|| black_box(&once).call_once(|| ()))
    });
    let wg = WaitGroup::new();
    g.bench_function("waitgroup_add_done", |b| {
        b.iter(|| {
            black_box(&wg).add(1);
            black_box(&wg).done();
        })
    });
    g.bench_function("local_with", |b| {
        b.iter_custom(|n| {
            rt1.block_on(move || {
                LOCAL.with(|v| v.set(1));
                let t0 = Instant::now();
                for _ in 0..n {
                    LOCAL.with(|v| v.set(black_box(v.get() + 1)));
                }
                t0.elapsed()
            })
        })
    });
    g.finish();

    rt1.shutdown();
    rt2.shutdown();
}

criterion_group! {
    name = sync;
    // 10 benchmarks x (1 s warm-up + 3 s measurement) plus analysis: about a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = benches
}
criterion_main!(sync);
