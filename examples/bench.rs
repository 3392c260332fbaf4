//! The gort side of the peer comparison: the Go anchor's `yield`, `spawn` and `memory`
//! workloads (and `chanpingpong`), same shapes and sizes, same output lines.
//!
//! ```text
//! cargo run --release --example bench -- <yield|spawn|memory> [flags]
//!   yield  [-g 2] [-n 10000000]   g goroutines each yield n times; ns per switch = total / (g*n)
//!   spawn  [-n 1000000]           spawn n empty goroutines and wait for all: a cold round,
//!                                 VmHWM, then a warm round in the same process, then (not
//!                                 in the anchor) VmRSS after 2 s idle
//!   memory [-n 100000]            park n goroutines; VmRSS delta per goroutine
//!   chanpingpong [-n 1000000]     round trips over two unbuffered channels (after 1,000
//!                                 untimed ones); ns per round trip
//!   handoff [-trials 10] [-sleep 200ms]  A blocks in read(2) inside gort::syscall while B
//!                                 computes; the stall is the time from A entering the
//!                                 syscall to B's next timestamp (median/min/max over trials)
//!   preempt [-iters 200] [-mode both]  a goroutine spins in a loop with no scheduling point;
//!                                 the root times `yield_now` and the oversleep of 1 ms
//!                                 sleeps (µs p50/p99/max); then (not in the anchor) gort's
//!                                 own histogram (quantum expiry -> off the CPU)
//!   fairness [-g 4] [-d 2s]       g spinners for d; each one's share, min/max ratio
//!   preemptcost [-d 1s]           (gort only) one spinner alone at a 100 µs quantum, per mode,
//!                                 reading the clock each iteration: the median gap is the
//!                                 cost of one preemption off the loop (alone, it resumes the
//!                                 same goroutine: signal, handler, yield, rt_sigreturn); the
//!                                 loss at the default quantum follows (cost / 10 ms)
//! ```
//!
//! Every result is one line, exactly as `/work/shared/bench/go-anchor` prints it:
//! `workload=<name> procs=<GOMAXPROCS> value=<number> unit=<unit>`. The default runtime reads
//! `GOMAXPROCS` from the environment, as Go does, so `GOMAXPROCS=1 <anchor> yield -n 1000`
//! and `GOMAXPROCS=1 <this> yield -n 1000` are the same experiment. Flags may be written
//! `-n 5`, `-n=5`, `--n 5` (Go's `flag` package accepts all three).
//!
//! # Shapes
//!
//! Each workload follows the anchor's Go source statement by statement, with gort's
//! counterparts: `go f()` is `gort::go(f)` with the handle dropped (detached), a
//! `sync.WaitGroup` is a [`gort::sync::WaitGroup`], `make(chan struct{})` is
//! `gort::chan::bounded::<()>(0)` with one `Receiver` clone per goroutine, `close(ch)` is
//! dropping the only `Sender`, `time.Sleep` is `gort::sleep`. Go's main goroutine is the
//! root goroutine of `gort::run`. The WaitGroups are statics, as Go's closures capture `&wg`.
//!
//! * `yield`: `wg.Add(g)`; start the clock; g goroutines each `yield_now` n times, then
//!   `wg.done()`; `wg.wait()`.
//! * `spawn`: `wg.Add(n)`; start the clock; spawn n goroutines that only call `wg.done()`;
//!   `wg.wait()`. Twice in the same root goroutine (cold, then warm), `VmHWM` in between.
//!   Then, outside the runtime (so that it is idle), 2 s of sleep and `VmRSS`.
//! * `memory`: `VmRSS` before; n goroutines each `started.done()`, then block receiving
//!   from the shared channel, then `exited.done()`; `started.wait()`; 100 ms of sleep;
//!   `VmRSS` after; close the channel; `exited.wait()`. Go calls `runtime.GC()` first and
//!   reports `StackInuse`; gort reports its mapped stacks instead.
//! * `chanpingpong`: an echo goroutine forwards `ping` to `pong`; the root sends and receives
//!   `n` times after 1,000 untimed round trips.
//! * `handoff`: per trial, a blocking pipe; B computes for a random 30–50 ms (sysmon backs
//!   off meanwhile), then starts the writer (`/bin/sh -c "sleep S; printf x"`, another
//!   process), releases A (closing a channel A waits on: A goes to `runnext`) and yields; A
//!   stamps the time and calls `gort::syscall(|| read(2))` (Go: `syscall.Read`); B stamps
//!   the time every ~100 ns and records the first stamp after A's (and yields every 1 ms, as
//!   Go's B is preempted, so that A can finish). Printed like the anchor:
//!   `handoff_stall_{median,min,max}` and `handoff_read_duration_median`, in µs.
//! * `timers`: the n durations drawn first (uniform in [1 ms, 100 ms]); `wg.Add(n)`; start
//!   the clock; n goroutines each read the clock, `sleep`, store their oversleep in a shared
//!   table and `wg.done()`; `wg.wait()`; sort the oversleeps.

use gort::sync::WaitGroup;
use std::time::{Duration, Instant};

fn usage() -> ! {
    eprintln!(
        "usage: bench <yield|spawn|memory> [flags]\n  \
         yield  [-g goroutines=2] [-n yields_per_goroutine=10000000]\n  \
         spawn  [-n goroutines=1000000]\n  \
         memory [-n parked_goroutines=100000]\n  \
         chanpingpong [-n round_trips=1000000]\n  \
         handoff [-trials 10] [-sleep milliseconds=200, `200ms` also accepted]\n  \
         timers [-n sleepers=100000]\n\
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
        match value.trim_end_matches("ms").parse::<usize>() {
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

/// A goroutine count as Go's `wg.Add` takes it.
fn delta(n: usize) -> i32 {
    i32::try_from(n).unwrap_or_else(|_| {
        eprintln!("bench: {n} goroutines is more than a WaitGroup counts");
        std::process::exit(2)
    })
}

// ----------------------------------------------------------------------------------- yield

static YIELD_WG: WaitGroup = WaitGroup::new();

fn cmd_yield(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 10_000_000);
    let g = flag(flags, "g", 2);
    let d = gort::run(move || {
        YIELD_WG.add(delta(g));
        let t0 = Instant::now();
        for _ in 0..g {
            drop(gort::go(move || {
                for _ in 0..n {
                    gort::yield_now();
                }
                YIELD_WG.done();
            }));
        }
        YIELD_WG.wait();
        t0.elapsed()
    });
    emit("yield", ns_per(d, n * g), "ns/switch");
}

// ----------------------------------------------------------------------------------- spawn

static SPAWN_WG: WaitGroup = WaitGroup::new();

/// One round: spawn `n` goroutines that only call `done`, and wait for all of them.
fn spawn_round(n: usize) -> Duration {
    SPAWN_WG.add(delta(n));
    let t0 = Instant::now();
    for _ in 0..n {
        drop(gort::go(|| SPAWN_WG.done()));
    }
    SPAWN_WG.wait();
    t0.elapsed()
}

fn cmd_spawn(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 1_000_000);
    gort::run(move || {
        let d = spawn_round(n);
        emit("spawn", ns_per(d, n), "ns/goroutine");
        emit(
            "spawn_vmhwm",
            round(proc_status_kb("VmHWM") as f64 / 1024.0, 1),
            "MiB",
        );
        // Second round in the same process: dead Gs and their stacks come from the free
        // lists.
        let d = spawn_round(n);
        emit("spawn_warm", ns_per(d, n), "ns/goroutine");
    });
    // Not in the anchor: what stays resident once the runtime has been idle for a while
    // (an idle runtime frees the cached dead goroutines it has not reused for a second).
    std::thread::sleep(Duration::from_secs(2));
    emit(
        "spawn_rss_idle",
        round(proc_status_kb("VmRSS") as f64 / 1024.0, 1),
        "MiB",
    );
}

// ---------------------------------------------------------------------------------- memory

static STARTED: WaitGroup = WaitGroup::new();
static EXITED: WaitGroup = WaitGroup::new();

fn cmd_memory(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 100_000);
    gort::run(move || {
        let before = proc_status_kb("VmRSS");
        let (tx, rx) = gort::chan::bounded::<()>(0);
        STARTED.add(delta(n));
        EXITED.add(delta(n));
        let t0 = Instant::now();
        for _ in 0..n {
            let rx = rx.clone();
            drop(gort::go(move || {
                STARTED.done();
                let _ = rx.recv();
                EXITED.done();
            }));
        }
        STARTED.wait();
        let create = t0.elapsed();
        gort::sleep(Duration::from_millis(100)); // let the last ones park
        let after = proc_status_kb("VmRSS");
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
        emit(
            &format!("{tag}_stacks_mapped"),
            gort::stats().stacks_mapped as f64,
            "stacks",
        );
        emit(&format!("{tag}_create"), ns_per(create, n), "ns/goroutine");
        drop(tx); // close(ch): every receiver wakes with an error
        EXITED.wait();
    });
}

/// Go's `chanpingpong`: two unbuffered channels, an echo goroutine, 1,000 untimed warm-up
/// round trips, then `n` timed ones.
fn cmd_chanpingpong(flags: &[(String, usize)]) {
    let n = flag(flags, "n", 1_000_000);
    let d = gort::run(move || {
        let (ping_tx, ping_rx) = gort::chan::bounded::<usize>(0);
        let (pong_tx, pong_rx) = gort::chan::bounded::<usize>(0);
        let echo = gort::go(move || {
            for v in ping_rx {
                if pong_tx.send(v).is_err() {
                    break;
                }
            }
        });
        for i in 0..1000 {
            ping_tx.send(i).unwrap();
            pong_rx.recv().unwrap();
        }
        let t0 = Instant::now();
        for i in 0..n {
            ping_tx.send(i).unwrap();
            pong_rx.recv().unwrap();
        }
        let d = t0.elapsed();
        drop(ping_tx);
        echo.join().unwrap();
        d
    });
    emit("chanpingpong", ns_per(d, n), "ns/roundtrip");
}

/// The anchor's `cmdHandoff` (see the module docs).
fn cmd_handoff(flags: &[(String, usize)]) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    let trials = flag(flags, "trials", 10);
    let sleep_ms = flag(flags, "sleep", 200);
    let mut seed = Instant::now().elapsed().as_nanos() as u64 ^ u64::from(std::process::id());
    let mut stalls = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..trials {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let warm = Duration::from_millis(30) + Duration::from_micros((seed >> 33) % 20_000);
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for two descriptors; blocking fds (not in any poller).
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            panic!("pipe2: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let (stall, read) = gort::run(move || {
            let base = Instant::now();
            let sys_start = Arc::new(AtomicI64::new(0));
            let sys_end = Arc::new(AtomicI64::new(0));
            let (start_tx, start_rx) = gort::chan::bounded::<()>(0);
            let a = {
                let (sys_start, sys_end) = (sys_start.clone(), sys_end.clone());
                gort::go(move || {
                    let _ = start_rx.recv();
                    let mut buf = 0u8;
                    sys_start.store(base.elapsed().as_nanos() as i64, Ordering::SeqCst);
                    // errno is read inside: afterwards A may be on another thread.
                    let (n, err) = gort::syscall(|| {
                        // SAFETY: one writable byte.
                        let n =
                            unsafe { libc::read(r.as_raw_fd(), (&mut buf as *mut u8).cast(), 1) };
                        (n, std::io::Error::last_os_error())
                    });
                    sys_end.store(base.elapsed().as_nanos() as i64, Ordering::SeqCst);
                    assert_eq!(n, 1, "read: {err}");
                })
            };
            let b = gort::go({
                let (sys_start, sys_end) = (sys_start.clone(), sys_end.clone());
                move || {
                    let mut x = 1u64;
                    let mut start_tx = Some(start_tx);
                    let mut w = Some(w);
                    let mut child = None;
                    let mut stall = -1i64;
                    let mut last_yield = 0i64;
                    loop {
                        for _ in 0..16 {
                            x = x
                                .wrapping_mul(6364136223846793005)
                                .wrapping_add(1442695040888963407);
                        }
                        let now = base.elapsed().as_nanos() as i64;
                        if start_tx.is_some() && now > warm.as_nanos() as i64 {
                            let script = format!("sleep {:.3}; printf x", sleep_ms as f64 / 1000.0);
                            child = Some(
                                std::process::Command::new("/bin/sh")
                                    .args(["-c", &script])
                                    .stdout(w.take().unwrap())
                                    .spawn()
                                    .expect("writer"),
                            );
                            drop(start_tx.take()); // A -> runnext
                            gort::yield_now(); // A runs now and enters read(2)
                            continue;
                        }
                        if stall < 0 {
                            let s = sys_start.load(Ordering::SeqCst);
                            if s != 0 && now > s {
                                stall = now - s;
                            }
                        }
                        let e = sys_end.load(Ordering::SeqCst);
                        if e != 0 && now > e {
                            break;
                        }
                        // Go's B is preempted (10 ms quantum), so that A, back from read(2)
                        // without its P, can stamp its end; until gort preempts, B yields
                        // every 1 ms.
                        if now - last_yield > 1_000_000 {
                            last_yield = now;
                            gort::yield_now();
                        }
                    }
                    std::hint::black_box(x);
                    child.unwrap().wait().unwrap();
                    stall
                }
            });
            a.join().unwrap();
            let stall = b.join().unwrap();
            let read = sys_end.load(Ordering::SeqCst) - sys_start.load(Ordering::SeqCst);
            (stall, read)
        });
        stalls.push(Duration::from_nanos(stall.max(0) as u64));
        reads.push(Duration::from_nanos(read.max(0) as u64));
    }
    stalls.sort();
    reads.sort();
    let pct = |v: &[Duration], p: f64| {
        let k = ((v.len() as f64 * p / 100.0 + 0.999999) as usize).max(1) - 1;
        v[k]
    };
    let us = |d: Duration| round(d.as_nanos() as f64 / 1e3, 1);
    emit("handoff_stall_median", us(pct(&stalls, 50.0)), "us");
    emit("handoff_stall_min", us(stalls[0]), "us");
    emit("handoff_stall_max", us(stalls[stalls.len() - 1]), "us");
    emit("handoff_read_duration_median", us(pct(&reads, 50.0)), "us");
}

/// Go's `timers`: n goroutines each sleep a random 1–100 ms once; the oversleeps' p50, p99
/// and max (how late each woke), the spawn loop's and the whole run's wall time.
fn cmd_timers(flags: &[(String, usize)]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let n = flag(flags, "n", 100_000);
    // Uniform in [1 ms, 100 ms], drawn before the clock starts (xorshift, fixed seed).
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let req: Vec<Duration> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Duration::from_nanos(1_000_000 + x % 99_000_001)
        })
        .collect();
    let (mut over, spawned, wall) = gort::run(move || {
        static WG: WaitGroup = WaitGroup::new();
        let req = std::sync::Arc::new(req);
        let over = std::sync::Arc::new((0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>());
        WG.add(n as i32);
        let t0 = Instant::now();
        for i in 0..n {
            let (req, over) = (req.clone(), over.clone());
            gort::go(move || {
                let s = Instant::now();
                gort::sleep(req[i]);
                let late = s.elapsed().saturating_sub(req[i]);
                // Relaxed: published by the WaitGroup (done -> wait).
                over[i].store(late.as_nanos() as u64, Ordering::Relaxed);
                WG.done();
            });
        }
        let spawned = t0.elapsed();
        WG.wait();
        let wall = t0.elapsed();
        // Relaxed: see above.
        let v: Vec<u64> = over.iter().map(|o| o.load(Ordering::Relaxed)).collect();
        (v, spawned, wall)
    });
    over.sort_unstable();
    let pct = |p: usize| over[(over.len() - 1) * p / 100] as f64 / 1e3;
    let tag = format!("timers_{}k", n / 1000);
    emit(
        &format!("{tag}_wall"),
        round(wall.as_secs_f64() * 1e3, 2),
        "ms",
    );
    emit(
        &format!("{tag}_spawn_loop"),
        round(spawned.as_secs_f64() * 1e3, 2),
        "ms",
    );
    emit(&format!("{tag}_oversleep_p50"), round(pct(50), 1), "us");
    emit(&format!("{tag}_oversleep_p99"), round(pct(99), 1), "us");
    emit(&format!("{tag}_oversleep_max"), round(pct(100), 1), "us");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else { usage() };
    let rest = &args[1..];
    match cmd.as_str() {
        "yield" => cmd_yield(&parse_flags(rest, &["n", "g"])),
        "spawn" => cmd_spawn(&parse_flags(rest, &["n"])),
        "memory" => cmd_memory(&parse_flags(rest, &["n"])),
        "chanpingpong" => cmd_chanpingpong(&parse_flags(rest, &["n"])),
        "handoff" => cmd_handoff(&parse_flags(rest, &["trials", "sleep"])),
        "timers" => cmd_timers(&parse_flags(rest, &["n"])),
        "preempt" => cmd_preempt(rest),
        "fairness" => cmd_fairness(rest),
        "preemptcost" => cmd_preemptcost(rest),
        _ => usage(),
    }
}

/// `-name value` string flags (for the workloads whose flags are not integers: `-mode both`,
/// `-d 2s`).
fn string_flag(args: &[String], name: &str, default: &str) -> String {
    let mut i = 0;
    let mut v = default.to_string();
    while i < args.len() {
        let a = args[i].trim_start_matches('-');
        if let Some((n, val)) = a.split_once('=') {
            if n == name {
                v = val.to_string();
            }
        } else if a == name {
            if let Some(val) = args.get(i + 1) {
                v = val.clone();
                i += 1;
            }
        }
        i += 1;
    }
    v
}

/// Go-style duration: `2s`, `500ms`, `100us`.
fn parse_duration(s: &str) -> Duration {
    let (num, unit) = s.split_at(s.find(|c: char| c.is_alphabetic()).unwrap_or(s.len()));
    let x: f64 = num.parse().unwrap_or_else(|_| usage());
    match unit {
        "s" | "" => Duration::from_secs_f64(x),
        "ms" => Duration::from_secs_f64(x / 1e3),
        "us" | "µs" => Duration::from_secs_f64(x / 1e6),
        _ => usage(),
    }
}

fn pct(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    round(d.as_nanos() as f64 / 1e3, 1)
}

static SPIN_STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A loop with no scheduling point in it (only preemption stops it).
fn spin_until_stopped() -> u64 {
    let mut n = 0u64;
    while !SPIN_STOP.load(std::sync::atomic::Ordering::Relaxed) {
        n = std::hint::black_box(n + 1);
    }
    n
}

fn cmd_preempt(args: &[String]) {
    let iters: usize = string_flag(args, "iters", "200")
        .parse()
        .unwrap_or_else(|_| usage());
    let mode = string_flag(args, "mode", "both");
    gort::run(move || {
        gort::go(spin_until_stopped);
        gort::yield_now(); // let the spinner start
        let report = |name: &str, mut lat: Vec<Duration>| {
            lat.sort();
            emit(&format!("preempt_{name}_p50"), us(pct(&lat, 50)), "us");
            emit(&format!("preempt_{name}_p99"), us(pct(&lat, 99)), "us");
            emit(
                &format!("preempt_{name}_max"),
                us(*lat.last().unwrap()),
                "us",
            );
        };
        if mode == "gosched" || mode == "both" {
            let lat = (0..iters)
                .map(|_| {
                    let t0 = Instant::now();
                    gort::yield_now();
                    t0.elapsed()
                })
                .collect();
            report("gosched", lat);
        }
        if mode == "sleep" || mode == "both" {
            let lat = (0..iters)
                .map(|_| {
                    let t0 = Instant::now();
                    gort::sleep(Duration::from_millis(1));
                    t0.elapsed().saturating_sub(Duration::from_millis(1))
                })
                .collect();
            report("sleep1ms_over", lat);
        }
        let st = gort::stats().preempt;
        emit("preempt_expiry_to_offcpu_p50", us(st.latency_p50), "us");
        emit("preempt_expiry_to_offcpu_p99", us(st.latency_p99), "us");
        emit("preempt_expiry_to_offcpu_max", us(st.latency_max), "us");
        eprintln!("{st}");
        SPIN_STOP.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

fn cmd_fairness(args: &[String]) {
    let g: usize = string_flag(args, "g", "4")
        .parse()
        .unwrap_or_else(|_| usage());
    let d = parse_duration(&string_flag(args, "d", "2s"));
    let counts = gort::run(move || {
        use std::sync::atomic::{AtomicBool, Ordering};
        static STOP: AtomicBool = AtomicBool::new(false);
        let hs: Vec<_> = (0..g)
            .map(|_| {
                gort::go(|| {
                    let mut c = 0u64;
                    while !STOP.load(Ordering::Relaxed) {
                        c += 1;
                    }
                    c
                })
            })
            .collect();
        gort::sleep(d);
        STOP.store(true, Ordering::Relaxed);
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<u64>>()
    });
    let total: u64 = counts.iter().sum();
    for (j, c) in counts.iter().enumerate() {
        emit(
            &format!("fairness_share_g{j}"),
            round(*c as f64 / total as f64, 4),
            "fraction",
        );
    }
    let (mn, mx) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    emit(
        "fairness_min_max_ratio",
        round(*mn as f64 / *mx as f64, 4),
        "ratio",
    );
    emit("fairness_total_iters", total as f64, "iters");
    eprintln!("{}", gort::stats().preempt);
}

/// A free-running counter read without a system call (x86_64 TSC, aarch64 CNTVCT_EL0).
#[inline(always)]
fn cycles() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(target_arch = "aarch64")]
    {
        let v: u64;
        // SAFETY: reads the virtual counter, readable from EL0 on Linux.
        unsafe { std::arch::asm!("mrs {}, cntvct_el0", out(reg) v, options(nostack, nomem)) };
        v
    }
}

/// One spinner alone on a fresh 1-P runtime in `mode` for `d`, reading the clock every
/// iteration: every stretch of more than 2 µs between two reads is time spent off the loop
/// (a preemption, or an interrupt). Returns the sorted gaps (ns) and the preemptions.
fn spin_gaps(mode: gort::Preempt, quantum: Duration, d: Duration) -> (Vec<u64>, u64) {
    let rt = gort::Runtime::builder()
        .procs(1)
        .preempt(mode)
        .preempt_quantum(quantum)
        .build()
        .unwrap();
    let mut gaps = rt.block_on(move || {
        // The cycle counter, not `Instant` (whose vdso call is foreign code, where the
        // handler refuses: refused signals would be mixed in with the preemptions).
        let mut gaps = Vec::with_capacity(1 << 20);
        let (w0, c0) = (Instant::now(), cycles());
        let mut last = c0;
        let mut n = 0u64;
        let mut ticks_per_us = 1_000u64; // refined below, before any gap counts
        loop {
            let now = cycles();
            let gap = now.wrapping_sub(last);
            if gap > 2 * ticks_per_us && gaps.len() < gaps.capacity() {
                gaps.push(gap);
            }
            last = now;
            n += 1;
            if n % (1 << 20) == 0 {
                let us = w0.elapsed().as_micros() as u64;
                ticks_per_us = (now - c0) / us.max(1);
                if us >= d.as_micros() as u64 {
                    break;
                }
            }
        }
        gaps.iter()
            .map(|g| g * 1_000 / ticks_per_us.max(1))
            .collect::<Vec<u64>>()
    });
    gaps.sort_unstable();
    let pre = rt.stats().preempt.preemptions;
    rt.shutdown();
    (gaps, pre)
}

fn cmd_preemptcost(args: &[String]) {
    use gort::Preempt;
    let d = parse_duration(&string_flag(args, "d", "1s"));
    let q = Duration::from_micros(100);
    for (name, mode) in [
        ("handoff", Preempt::ThreadHandoff),
        ("migrate", Preempt::Migrate),
    ] {
        let (gaps, n) = spin_gaps(mode, q, d);
        let (base, _) = spin_gaps(Preempt::Off, q, d);
        // The loop's gaps minus the ones it has without preemption (timer interrupts, other
        // processes): the median of the excess gaps is one preemption, off the loop.
        let cost = if gaps.len() > base.len() {
            gaps[gaps.len() / 2]
        } else {
            0
        };
        emit(
            &format!("preemptcost_{name}_alone"),
            cost as f64,
            "ns/preemption",
        );
        emit(
            &format!("preempt_gaps_{name}_q100us"),
            gaps.len() as f64,
            "gaps",
        );
        emit(
            &format!("preempt_count_{name}_q100us"),
            n as f64,
            "preemptions",
        );
        emit("preempt_gaps_off", base.len() as f64, "gaps");
        // At the default quantum a lone loop is preempted every 10 ms: loss = cost / 10 ms.
        emit(
            &format!("preempt_loss_{name}_q10ms_derived"),
            round(cost as f64 / 10e6 * 100.0, 4),
            "percent",
        );
    }
}
