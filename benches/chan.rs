//! Channel micro-benchmarks (criterion): ping-pong round trips, streaming throughput, select.
//!
//! Groups (every reported time is per the unit named):
//! - `chan_pingpong/procs1`, `/procs2`: Go's `chanpingpong` workload (the go-anchor's): the
//!   measuring goroutine sends on an unbuffered `ping` channel and receives on an unbuffered
//!   `pong`; an echo goroutine receives each ping and sends it back. Time per round trip (two
//!   sends, two receives, two park/ready hand-offs).
//! - `chan_pingpong_buffered/procs1`: the same over channels of capacity 1.
//! - `chan_stream/procs1`, `/procs2`: one producer sends `iters` values into a channel of
//!   capacity 128, one consumer receives them; time per value.
//! - `select_pingpong/procs1`: as `chan_pingpong`, but the echo goroutine receives with a
//!   `select!` over the ping channel and a second, idle channel; time per round trip.
//! - `thread_pingpong`: the ping-pong between a plain OS thread (the bench thread) and a
//!   goroutine on a 1-P runtime: every round trip is two futex hand-offs; time per round trip.
//!
//! Each measurement runs inside a goroutine of a runtime built once per P count (the echo
//! goroutine is started per sample and stopped by closing `ping`); `iter_custom` times only
//! the loop, inside the runtime.
//!
//! Run: `cargo bench --bench chan` (about 1 minute). Go's side, same sitting:
//! `GOMAXPROCS=1 /tmp/go-anchor chanpingpong -n 1000000` (see `../shared/bench/go-anchor`).

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gort::chan;

fn runtime(procs: usize) -> gort::Runtime {
    gort::Runtime::builder()
        .procs(procs)
        .build()
        .expect("cannot build a gort runtime")
}

/// `iters` round trips over two channels of capacity `cap`, with Go's warm-up of 1000.
fn pingpong(rt: &gort::Runtime, cap: usize, iters: u64) -> Duration {
    rt.block_on(move || {
        let (ping_tx, ping_rx) = chan::bounded::<u64>(cap);
        let (pong_tx, pong_rx) = chan::bounded::<u64>(cap);
        let echo = gort::go(move || {
            for v in ping_rx {
                pong_tx.send(v).expect("pong closed");
            }
        });
        for i in 0..1000 {
            ping_tx.send(i).unwrap();
            pong_rx.recv().unwrap();
        }
        let t0 = Instant::now();
        for i in 0..iters {
            ping_tx.send(i).unwrap();
            let v = pong_rx.recv().unwrap();
            debug_assert_eq!(v, i);
        }
        let d = t0.elapsed();
        drop(ping_tx);
        echo.join().expect("echo panicked");
        d
    })
}

/// As `pingpong` (unbuffered), the echo side receiving through a two-arm `select!`.
fn select_pingpong(rt: &gort::Runtime, iters: u64) -> Duration {
    rt.block_on(move || {
        let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
        let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
        let (_idle_tx, idle_rx) = chan::bounded::<u64>(0);
        let echo = gort::go(move || {
            loop {
                gort::select! {
                    recv(ping_rx) -> v => match v {
                        Ok(v) => pong_tx.send(v).expect("pong closed"),
                        Err(_) => break,
                    },
                    recv(idle_rx) -> _ => unreachable!("nothing is sent on the idle channel"),
                }
            }
        });
        let t0 = Instant::now();
        for i in 0..iters {
            ping_tx.send(i).unwrap();
            pong_rx.recv().unwrap();
        }
        let d = t0.elapsed();
        drop(ping_tx);
        echo.join().expect("echo panicked");
        d
    })
}

/// `iters` values from one producer goroutine to the measuring goroutine, capacity 128.
fn stream(rt: &gort::Runtime, iters: u64) -> Duration {
    rt.block_on(move || {
        let (tx, rx) = chan::bounded::<u64>(128);
        let t0 = Instant::now();
        let producer = gort::go(move || {
            for i in 0..iters {
                tx.send(i).unwrap();
            }
        });
        let mut n = 0;
        for _ in &rx {
            n += 1;
        }
        let d = t0.elapsed();
        assert_eq!(n, iters);
        producer.join().expect("producer panicked");
        d
    })
}

/// `iters` round trips between this (plain) thread and a goroutine of `rt`.
fn thread_pingpong(rt: &gort::Runtime, iters: u64) -> Duration {
    let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
    let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
    let echo = rt.spawn(move || {
        for v in ping_rx {
            pong_tx.send(v).expect("pong closed");
        }
    });
    let t0 = Instant::now();
    for i in 0..iters {
        ping_tx.send(i).unwrap();
        pong_rx.recv().unwrap();
    }
    let d = t0.elapsed();
    drop(ping_tx);
    echo.join().expect("echo panicked");
    d
}

fn benches(c: &mut Criterion) {
    let rt1 = runtime(1);
    let rt2 = runtime(2);

    let mut g = c.benchmark_group("chan_pingpong");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| pingpong(&rt1, 0, n)));
    g.bench_function("procs2", |b| b.iter_custom(|n| pingpong(&rt2, 0, n)));
    g.finish();

    let mut g = c.benchmark_group("chan_pingpong_buffered");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| pingpong(&rt1, 1, n)));
    g.finish();

    let mut g = c.benchmark_group("select_pingpong");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| select_pingpong(&rt1, n)));
    g.finish();

    let mut g = c.benchmark_group("chan_stream");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| stream(&rt1, n)));
    g.bench_function("procs2", |b| b.iter_custom(|n| stream(&rt2, n)));
    g.finish();

    let mut g = c.benchmark_group("thread_pingpong");
    g.throughput(Throughput::Elements(1));
    g.bench_function("procs1", |b| b.iter_custom(|n| thread_pingpong(&rt1, n)));
    g.finish();

    rt1.shutdown();
    rt2.shutdown();
}

criterion_group! {
    name = chan_benches;
    // 7 benchmarks x (1 s warm-up + 4 s measurement) plus analysis: about a minute.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(50);
    targets = benches
}
criterion_main!(chan_benches);
