//! `gort::syscall` overhead (criterion): `getpid(2)` bare vs inside `gort::syscall`, in a
//! goroutine on one P, with and without another goroutine queued on the P.
//!
//! Groups (time per call):
//! - `getpid/bare`: the raw system call (`libc::syscall(SYS_getpid)`: glibc no longer caches
//!   the pid, but the raw call makes sure nothing is cached).
//! - `getpid/gort_syscall`: the same call inside `gort::syscall` — entersyscall's CAS of the P
//!   to `Syscall`, exitsyscall's CAS back (the fast path). The difference is the overhead.
//! - `noop/gort_syscall`: `gort::syscall` around a closure that makes no call at all: the
//!   overhead alone, without the system call's noise.
//! - `getpid/gort_syscall_queued`: the same with a runnable goroutine waiting on the P, so
//!   entersyscall also checks whether sysmon must be nudged (coalesced: at most one futex
//!   wake per sysmon back-off).
//!
//! Every measurement runs inside a goroutine (`iter_custom` times the loop there), on a
//! runtime built once. Run: `cargo bench --bench syscall` (about 15 s).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

fn getpid() -> i64 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::syscall(libc::SYS_getpid) }
}

fn noop() -> i64 {
    black_box(1)
}

fn timed(rt: &gort::Runtime, iters: u64, wrapped: bool, queued: bool) -> Duration {
    timed_call(rt, iters, wrapped, queued, getpid)
}

fn timed_call(
    rt: &gort::Runtime,
    iters: u64,
    wrapped: bool,
    queued: bool,
    call: fn() -> i64,
) -> Duration {
    rt.block_on(move || {
        let stop = Arc::new(AtomicBool::new(false));
        // A goroutine that stays runnable (yielding) on the same P, when asked for.
        let other = queued.then(|| {
            let stop = stop.clone();
            gort::go(move || {
                while !stop.load(Ordering::Relaxed) {
                    gort::yield_now();
                }
            })
        });
        if queued {
            gort::yield_now();
        }
        let t0 = Instant::now();
        for _ in 0..iters {
            if wrapped {
                black_box(gort::syscall(call));
            } else {
                black_box(call());
            }
        }
        let d = t0.elapsed();
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = other {
            h.join().unwrap();
        }
        d
    })
}

fn bench(c: &mut Criterion) {
    let rt = gort::Runtime::builder().procs(1).build().unwrap();
    let mut g = c.benchmark_group("getpid");
    g.bench_function("bare", |b| b.iter_custom(|n| timed(&rt, n, false, false)));
    g.bench_function("gort_syscall", |b| {
        b.iter_custom(|n| timed(&rt, n, true, false))
    });
    g.bench_function("gort_syscall_queued", |b| {
        b.iter_custom(|n| timed(&rt, n, true, true))
    });
    g.finish();
    let mut g = c.benchmark_group("noop");
    g.bench_function("bare", |b| {
        b.iter_custom(|n| timed_call(&rt, n, false, false, noop))
    });
    g.bench_function("gort_syscall", |b| {
        b.iter_custom(|n| timed_call(&rt, n, true, false, noop))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
