//! The gort side of the peer comparison: the Go anchor's `yield`, `spawn` and `memory`
//! workloads, same shapes and sizes, same output lines.
//!
//! ```text
//! cargo run --release --example bench -- <yield|spawn|memory> [flags]
//!   yield  [-g 2] [-n 10000000]   g goroutines each yield n times; ns per switch = total / (g*n)
//!   spawn  [-n 1000000]           spawn n empty goroutines and wait for all: a cold round,
//!                                 VmHWM, then a warm round in the same process, then (not
//!                                 in the anchor) VmRSS after 500 ms idle
//!   memory [-n 100000]            park n goroutines; VmRSS delta per goroutine
//! ```
//!
//! Every result is one line, exactly as `/work/shared/bench/go-anchor` prints it:
//! `workload=<name> procs=<GOMAXPROCS> value=<number> unit=<unit>`. The default runtime reads
//! `GOMAXPROCS` from the environment, as Go does, so `GOMAXPROCS=1 <anchor> yield -n 1000`
//! and `GOMAXPROCS=1 <this> yield -n 1000` are the same experiment. Flags may be written
//! `-n 5`, `-n=5`, `--n 5` (Go's `flag` package accepts all three).
//!
//! # How each workload maps onto gort (gort has no channels or WaitGroup yet)
//!
//! * `yield`: Go's main goroutine spawns the yielders and waits in `wg.Wait()`; here the root
//!   goroutine spawns them and parks in `JoinHandle::join` — parked either way, so it takes
//!   no turns.
//! * `spawn`: Go's goroutines call `wg.Done()` and main parks in `wg.Wait()`. Here the
//!   goroutines are empty and the root joins their handles in spawn order: it parks on the
//!   first unfinished one, and finds the rest finished (a load each). The handles (16 bytes
//!   each) are allocated before the clock starts, as the anchor's `wg.Add(n)`. Polling a
//!   countdown with `yield_now` instead was rejected: with 2 Ps, once the other P has stolen
//!   the remaining goroutines, the poller's own queue is empty, so each `yield_now` puts it
//!   straight back and its P spins on the poll instead of stealing work (measured 3x slower).
//! * `memory`: each goroutine must be *parked*, and `join` is the only parking primitive: the
//!   root spawns a gate goroutine, then goroutine i is given the handle of goroutine i-1 (the
//!   gate for i = 1) and joins it. Every one of the n goroutines parks on an unfinished
//!   goroutine, and none is released until the gate exits. The gate polls a flag (yielding,
//!   then sleeping once every goroutine has started). The RSS delta covers the n parked
//!   goroutines plus the gate (one more stack), divided by n, as the anchor divides by n.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: bench <yield|spawn|memory> [flags]\n  \
         yield  [-g goroutines=2] [-n yields_per_goroutine=10000000]\n  \
         spawn  [-n goroutines=1000000]\n  \
         memory [-n parked_goroutines=100000]\n\
         GOMAXPROCS (and GORT_*) from the environment configure the runtime."
    );
    std::process::exit(2)
}

/// Go-`flag`-style parsing of `-name value`, `-name=value`, `--name value` into `(name, value)`.
fn parse_flags(args: &[String], known: &[&str]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].trim_start_matches('-');
        if a.len() == args[i].len() {
            eprintln!("bench: unexpected argument {:?}", args[i]);
            usage();
        }
        let (name, value) = match a.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) => (a.to_string(), v.clone()),
                    None => {
                        eprintln!("bench: flag -{a} needs a value");
                        usage();
                    }
                }
            }
        };
        if !known.contains(&name.as_str()) {
            eprintln!("bench: unknown flag -{name}");
            usage();
        }
        match value.parse::<usize>() {
            Ok(v) if v > 0 => out.push((name, v)),
            _ => {
                eprintln!("bench: -{name}={value:?}: expected a positive integer");
                usage();
            }
        }
        i += 1;
    }
    out
}

fn flag(flags: &[(String, usize)], name: &str, default: usize) -> usize {
    flags
        .iter()
        .rev()
        .find(|(n, _)| n == name)
        .map_or(default, |&(_, v)| v)
}

/// Round to `digits` decimals (the anchor's `round`, so values print alike).
fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}

/// Print one result line in the anchor's format. `{}` on an f64 prints the shortest
/// representation, as Go's `FormatFloat(v, 'f', -1, 64)` does (2748, 73.8).
fn emit(name: &str, value: f64, unit: &str) {
    let procs = gort::stats().procs;
    println!("workload={name} procs={procs} value={value} unit={unit}");
}

/// A `Key:   123 kB` field of /proc/self/status, in KiB (-1 if absent, as the anchor).
fn proc_status_kb(key: &str) -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1)
}

fn ns_per(d: Duration, n: usize) -> f64 {
    round(d.as_nanos() as f64 / n as f64, 1)
}

// ----------------------------------------------------------------------------------- yield

fn cmd_yield(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 10_000_000);
    let g = flag(flags, "g", 2);
    let d = gort::run(move || {
        let t0 = Instant::now();
        let hs: Vec<_> = (0..g)
            .map(|_| {
                gort::go(move || {
                    for _ in 0..n {
                        gort::yield_now();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().expect("yielder panicked");
        }
        t0.elapsed()
    });
    emit("yield", ns_per(d, n * g), "ns/switch");
}

// ----------------------------------------------------------------------------------- spawn

/// Spawn `n` empty goroutines from a goroutine and wait until all have run.
fn spawn_round(n: usize) -> Duration {
    gort::run(move || {
        // The anchor's `wg.Add(n)`: bookkeeping set up before the clock starts.
        let mut handles = Vec::with_capacity(n);
        let t0 = Instant::now();
        for _ in 0..n {
            handles.push(gort::go(|| ()));
        }
        for h in handles {
            h.join().expect("empty goroutine panicked");
        }
        t0.elapsed()
    })
}

fn cmd_spawn(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 1_000_000);
    // Start the runtime (threads, first stacks) outside the timed rounds, as Go's is
    // started before main runs.
    gort::run(|| ());
    let d = spawn_round(n);
    emit("spawn", ns_per(d, n), "ns/goroutine");
    emit(
        "spawn_vmhwm",
        round(proc_status_kb("VmHWM") as f64 / 1024.0, 1),
        "MiB",
    );
    // Second round in the same process: dead Gs and their stacks come from the free lists.
    let d = spawn_round(n);
    emit("spawn_warm", ns_per(d, n), "ns/goroutine");
    // Not in the anchor: what stays resident once the runtime has been idle for a while
    // (dead goroutines' cached stacks are scavenged when every P is idle).
    std::thread::sleep(Duration::from_millis(500));
    emit(
        "spawn_rss_idle",
        round(proc_status_kb("VmRSS") as f64 / 1024.0, 1),
        "MiB",
    );
}

// ---------------------------------------------------------------------------------- memory

/// Goroutines of the memory workload that have started (and are about to park).
static STARTED: AtomicUsize = AtomicUsize::new(0);
/// Set once the measurement is taken: the gate exits and the chain of joins unwinds.
static RELEASE: AtomicBool = AtomicBool::new(false);

fn cmd_memory(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 100_000);
    gort::run(|| ());
    let report = gort::run(move || {
        let before = proc_status_kb("VmRSS");
        let t0 = Instant::now();
        let gate = gort::go(move || {
            // Acquire: pairs with the root's release store.
            while !RELEASE.load(Ordering::Acquire) {
                gort::yield_now();
                // Relaxed: a hint; once all have started nothing else needs this P, so
                // sleep instead of spinning (this blocks the M, which is fine then).
                if STARTED.load(Ordering::Relaxed) == n {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        let mut prev = gate;
        for _ in 0..n {
            let wait_for = prev;
            prev = gort::go(move || {
                // Release: pairs with the root's acquire load.
                STARTED.fetch_add(1, Ordering::Release);
                wait_for.join().expect("chain goroutine panicked");
            });
        }
        // Acquire: pairs with the goroutines' increments.
        while STARTED.load(Ordering::Acquire) < n {
            gort::yield_now();
        }
        let create = t0.elapsed();
        // Let the last ones park (the anchor's 100 ms). Blocks this M: nothing else runs.
        std::thread::sleep(Duration::from_millis(100));
        let after = proc_status_kb("VmRSS");
        let stacks = gort::stats().stacks_mapped;
        // Release: the gate's acquire load sees everything above.
        RELEASE.store(true, Ordering::Release);
        prev.join().expect("chain goroutine panicked");
        (before, after, create, stacks)
    });
    let (before, after, create, stacks) = report;
    let tag = format!("memory_{}k", n / 1000);
    emit(
        &format!("{tag}_rss_per_goroutine"),
        round((after - before) as f64 * 1024.0 / n as f64, 0),
        "bytes",
    );
    emit(
        &format!("{tag}_rss_total"),
        round(after as f64 / 1024.0, 1),
        "MiB",
    );
    emit(
        &format!("{tag}_rss_before"),
        round(before as f64 / 1024.0, 1),
        "MiB",
    );
    emit(&format!("{tag}_stacks_mapped"), stacks as f64, "stacks");
    emit(&format!("{tag}_create"), ns_per(create, n), "ns/goroutine");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let rest = &args[1..];
    match cmd.as_str() {
        "yield" => cmd_yield(&parse_flags(rest, &["n", "g"])),
        "spawn" => cmd_spawn(&parse_flags(rest, &["n"])),
        "memory" => cmd_memory(&parse_flags(rest, &["n"])),
        _ => usage(),
    }
}
