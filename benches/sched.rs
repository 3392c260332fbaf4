//! Scheduler micro-benchmarks (criterion): yield ping-pong, spawn throughput, spawn + join.
//!
//! Groups (every reported time is per the unit named):
//! - `yield_pingpong/procs1`: two goroutines on one P, each calling `yield_now` in a loop;
//!   time per switch (one yield = one switch to the other goroutine and back through g0).
//! - `spawn/procs1`, `spawn/procs2`: a goroutine spawns empty goroutines in batches of
//!   [`BATCH`] (10,000), each goroutine calling `WaitGroup::done`, and waits for each batch
//!   with `WaitGroup::wait`; time per goroutine spawned, run and completed. After the first
//!   batch every goroutine reuses a dead G and its stack from the free lists: this is the
//!   warm path (the cold 1M case is `examples/bench.rs spawn`). Waiting by polling a
//!   countdown with `yield_now` was rejected: with 2 Ps the poller's P keeps re-running the
//!   poller instead of stealing, which measures the harness, not gort.
//! - `spawn_batch/procs1/{100,1000}`: the same with smaller batches. The cost per goroutine
//!   depends on how many distinct G structs and stack pages one batch cycles through (each
//!   spawned goroutine touches its own stack's top page); comparing these with
//!   `spawn/procs1` shows that working-set effect (see BENCHMARKS.md).
//! - `spawn_join/procs1`, `spawn_join/procs2`: a goroutine spawns one goroutine and joins it;
//!   time per spawn + run + join (the joiner parks unless the child already finished).
//!
//! Every measurement runs inside a goroutine of a runtime built once per P count, so the
//! thread start-up is not measured. `iter_custom` times the whole batch inside the runtime
//! and returns it to criterion, so the cost of entering the runtime from the bench thread
//! (one `block_on` per sample) is not counted either.
//!
//! Run: `cargo bench --bench sched` (about 70 s).

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gort::sync::WaitGroup;

/// Goroutines spawned before waiting for them, in the spawn groups.
const BATCH: u64 = 10_000;

fn runtime(procs: usize) -> gort::Runtime {
    gort::Runtime::builder()
        .procs(procs)
        .build()
        .expect("cannot build a gort runtime")
}

/// `iters` switches: each of two goroutines yields `ceil(iters / 2)` times. The time is
/// scaled back to exactly `iters` switches.
fn yield_pingpong(rt: &gort::Runtime, iters: u64) -> Duration {
    let per = iters.div_ceil(2).max(1);
    let d = rt.block_on(move || {
        let t0 = Instant::now();
        let a = gort::go(move || {
            for _ in 0..per {
                gort::yield_now();
            }
        });
        let b = gort::go(move || {
            for _ in 0..per {
                gort::yield_now();
            }
        });
        a.join().expect("yielder panicked");
        b.join().expect("yielder panicked");
        t0.elapsed()
    });
    d.mul_f64(iters as f64 / (2 * per) as f64)
}

/// Counts the goroutines of the current spawn batch (benchmarks run one at a time).
static WG: WaitGroup = WaitGroup::new();

/// Spawn `iters` goroutines that only call `WG.done()`, in batches of `batch`, waiting for
/// each batch with `WG.wait()` (the Go anchor's spawn shape).
fn spawn_batches(rt: &gort::Runtime, iters: u64, batch: u64) -> Duration {
    rt.block_on(move || {
        let t0 = Instant::now();
        let mut todo = iters;
        while todo > 0 {
            let k = todo.min(batch);
            todo -= k;
            WG.add(k as i32);
            for _ in 0..k {
                drop(gort::go(|| WG.done()));
            }
            WG.wait();
        }
        t0.elapsed()
    })
}

/// `iters` times: spawn one goroutine and join it.
fn spawn_join(rt: &gort::Runtime, iters: u64) -> Duration {
    rt.block_on(move || {
        let t0 = Instant::now();
        for i in 0..iters {
            let h = gort::go(move || i);
            assert_eq!(h.join().expect("child panicked"), i);
        }
        t0.elapsed()
    })
}

fn benches(c: &mut Criterion) {
    let rt1 = runtime(1);
    let rt2 = runtime(2);

    let mut g = c.benchmark_group("yield_pingpong");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| yield_pingpong(&rt1, n)));
    g.finish();

    let mut g = c.benchmark_group("spawn");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| {
        b.iter_custom(|n| spawn_batches(&rt1, n, BATCH))
    });
    g.bench_function("procs2", |b| {
        b.iter_custom(|n| spawn_batches(&rt2, n, BATCH))
    });
    g.finish();

    let mut g = c.benchmark_group("spawn_batch/procs1");
    g.throughput(Throughput::Elements(1));
    for batch in [100u64, 1000] {
        g.bench_function(BenchmarkId::from_parameter(batch), |b| {
            b.iter_custom(|n| spawn_batches(&rt1, n, batch))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("spawn_join");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| spawn_join(&rt1, n)));
    g.bench_function("procs2", |b| b.iter_custom(|n| spawn_join(&rt2, n)));
    g.finish();

    rt1.shutdown();
    rt2.shutdown();
}

criterion_group! {
    name = sched;
    // 7 benchmarks x (1 s warm-up + 4 s measurement) plus analysis: about a minute. 50 samples are plenty for ns-scale operations with ms-long samples.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    targets = benches
}
criterion_main!(sched);
