//! Integration tests of goroutine stacks through the public API: overflow diagnosis, fault
//! chaining, and clear errors when no stack can be mapped.
//!
//! Every scenario crashes or changes process-wide state (signal dispositions, `RLIMIT_AS`,
//! `GORT_STACK_GUARD`, which is read once), so each runs in a child process: this test binary
//! re-runs itself with `--exact child` and `GORT_STACK_IT_CHILD=<role>`, bounded by a timeout.

mod common;

use std::hint::black_box;
use std::os::unix::process::ExitStatusExt;
use std::panic::{self, AssertUnwindSafe};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use gort::{Builder, JoinHandle, Preempt, Runtime};

const CHILD_ENV: &str = "GORT_STACK_IT_CHILD";
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the `child` test of this binary in a new process with `role`.
fn run_child(role: &str, env: &[(&str, &str)]) -> Output {
    common::run_child_test(
        CHILD_ENV,
        role,
        env,
        &["GORT_STACK_GUARD", "GORT_STACK_KB"],
        CHILD_TIMEOUT,
    )
}

use common::{describe, emulator};

/// The guard modes to test: `madvise` needs Linux 6.13 natively (qemu-user ignores the
/// advice, and gort then falls back to `mprotect`).
fn guard_modes() -> Vec<&'static str> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (6, 13) && emulator().is_none() {
        vec!["madvise", "mprotect"]
    } else {
        vec!["mprotect"]
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_killed_by(output: &Output, signal: libc::c_int) {
    assert_eq!(output.status.signal(), Some(signal), "{}", describe(output));
}

fn assert_ok(role: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("{role} ok")),
        "{}",
        describe(output)
    );
}

#[test]
fn unbounded_recursion_is_reported_as_overflow_and_aborts() {
    for (role, size) in [("overflow_default", "256 KiB"), ("overflow_64k", "64 KiB")] {
        for guard in guard_modes() {
            let output = run_child(role, &[("GORT_STACK_GUARD", guard)]);
            assert_killed_by(&output, libc::SIGABRT);
            let stderr = stderr(&output);
            assert!(
                stderr.contains("gort: fatal: goroutine "),
                "{}",
                describe(&output)
            );
            assert!(
                stderr.contains(&format!("overflowed its stack (size {size})")),
                "{role} {guard}: {}",
                describe(&output)
            );
            assert!(!stderr.contains("SURVIVED"), "{}", describe(&output));
        }
    }
}

#[test]
fn other_segfaults_are_not_overflows_and_keep_their_signal() {
    for role in ["null_in_goroutine", "null_in_thread"] {
        let output = run_child(role, &[]);
        assert_killed_by(&output, libc::SIGSEGV);
        assert!(
            !stderr(&output).contains("overflowed"),
            "{role}: {}",
            describe(&output)
        );
    }
}

#[test]
fn small_address_space_gives_errors_not_crashes() {
    if emulator().is_some() {
        eprintln!("qemu-user does not apply RLIMIT_AS to the guest: skipped");
        return;
    }
    for guard in guard_modes() {
        let output = run_child("rlimit_as", &[("GORT_STACK_GUARD", guard)]);
        assert_ok("rlimit_as", &output);
        print!("{}", String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn mprotect_guards_report_vm_max_map_count() {
    let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if emulator().is_some() {
        eprintln!("qemu-user maps guest memory its own way: skipped");
        return;
    }
    if max > 1_000_000 {
        eprintln!("vm.max_map_count is {max}: too high to exhaust in a test, skipped");
        return;
    }
    let output = run_child("map_count", &[("GORT_STACK_GUARD", "mprotect")]);
    assert_ok("map_count", &output);
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

#[test]
fn parked_goroutines_cost_about_one_page_each() {
    let output = run_child("parked_rss", &[]);
    assert_ok("parked_rss", &output);
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

/// The entry point of every child process; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes this process's dump flag: crashing
    // children must not write core files.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    match role.as_str() {
        "overflow_default" => {
            gort::run(|| black_box(recurse(0)));
            println!("SURVIVED");
        }
        "overflow_64k" => {
            let depth = gort::run(|| {
                Builder::new()
                    .stack_size(64 * 1024)
                    .name("deep")
                    .spawn(|| black_box(recurse(0)))
                    .unwrap()
                    .join()
            });
            println!("SURVIVED {depth:?}");
        }
        "null_in_goroutine" => {
            gort::run(read_null);
        }
        "null_in_thread" => {
            // Start the runtime, which installs the overflow handler, then fault elsewhere.
            gort::run(|| ());
            std::thread::spawn(read_null).join().unwrap();
        }
        "rlimit_as" => rlimit_child(),
        "map_count" => map_count_child(),
        "parked_rss" => parked_rss_child(),
        other => panic!("unknown child role {other}"),
    }
    println!("{role} ok");
}

/// Recurses until the stack runs out.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = [depth; 32];
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1).wrapping_add(black_box(&frame)[5])
}

fn read_null() {
    // SAFETY: none: this is the fault under test.
    let value = unsafe { std::ptr::read_volatile(black_box(std::ptr::null::<u8>())) };
    println!("SURVIVED {value}");
}

/// A runtime whose spawned goroutines stay queued (each holding its stack) while the
/// spawning goroutine runs: one P, no preemption.
fn queueing_runtime() -> Runtime {
    Runtime::builder()
        .procs(1)
        .preempt(Preempt::Off)
        .build()
        .unwrap()
}

/// Spawns goroutines with `spawn` until it fails; returns how many succeeded and the error.
fn spawn_until_failure<E>(
    handles: &mut Vec<JoinHandle<()>>,
    mut spawn: impl FnMut() -> Result<JoinHandle<()>, E>,
) -> (usize, E) {
    loop {
        match spawn() {
            Ok(handle) => handles.push(handle),
            Err(err) => return (handles.len(), err),
        }
    }
}

/// `gort::go`'s panic, caught, as a message.
fn go_panic_message() -> Option<String> {
    let previous_hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let result = panic::catch_unwind(AssertUnwindSafe(|| gort::go(|| ())));
    panic::set_hook(previous_hook);
    match result {
        Ok(handle) => {
            drop(handle);
            None
        }
        Err(payload) => Some(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "<non-string panic>".to_owned()),
        ),
    }
}

fn rlimit_child() {
    let mut handles = Vec::with_capacity(100_000);
    let status = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = status.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // Room for the runtime's threads and a few hundred default stacks.
    let limit = (pages * page + (160 << 20)) as u64;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);

    let rt = queueing_runtime();
    let (huge, count, exhausted, go_message) = rt.block_on(move || {
        let huge = Builder::new()
            .stack_size(1 << 30)
            .spawn(|| ())
            .map(drop)
            .unwrap_err();
        // Fillers park on a channel until it closes, so they all stay alive (a spawner that
        // fills its queue yields to what it spawned: empty fillers would be reused).
        let (gate, wait) = gort::chan::bounded::<()>(0);
        let (count, exhausted) = spawn_until_failure(&mut handles, || {
            let wait = wait.clone();
            Builder::new().name("filler").spawn(move || {
                let _ = wait.recv();
            })
        });
        let go_message = go_panic_message();
        // Free the stacks: the parked goroutines wake and finish.
        drop(gate);
        for handle in handles.drain(..) {
            handle.join().unwrap();
        }
        (huge, count, exhausted, go_message)
    });
    rt.shutdown();

    println!("1 GiB stack: {huge}");
    println!("{count} goroutines, then: {exhausted}");
    println!("gort::go then panicked with: {go_message:?}");
    assert_eq!(huge.kind(), std::io::ErrorKind::OutOfMemory, "{huge}");
    assert!(huge.to_string().contains("1 GiB goroutine stack"), "{huge}");
    assert!(huge.to_string().contains("RLIMIT_AS"), "{huge}");
    assert_eq!(
        exhausted.kind(),
        std::io::ErrorKind::OutOfMemory,
        "{exhausted}"
    );
    assert!(
        exhausted.to_string().contains("256 KiB goroutine stack"),
        "{exhausted}"
    );
    assert!(count > 50, "only {count} goroutines fit");
    let go_message = go_message.expect("gort::go panics when no stack can be had");
    assert!(
        go_message.contains("256 KiB goroutine stack"),
        "{go_message}"
    );

    // Memory came back: goroutines spawn again.
    assert_eq!(gort::run(|| gort::go(|| 7).join().unwrap()), 7);
}

fn map_count_child() {
    let mut handles = Vec::with_capacity(100_000);
    let rt = queueing_runtime();
    let (count, exhausted, go_message) = rt.block_on(move || {
        // Fillers park until the gate closes (see rlimit_child).
        let (gate, wait) = gort::chan::bounded::<()>(0);
        let (count, exhausted) = spawn_until_failure(&mut handles, || {
            let wait = wait.clone();
            Builder::new().spawn(move || {
                let _ = wait.recv();
            })
        });
        let go_message = go_panic_message();
        drop(gate);
        for handle in handles.drain(..) {
            handle.join().unwrap();
        }
        (count, exhausted, go_message)
    });
    rt.shutdown();

    println!("{count} goroutines, then: {exhausted}");
    println!("gort::go then panicked with: {go_message:?}");
    let message = exhausted.to_string();
    assert!(message.contains("hit vm.max_map_count"), "{message}");
    assert!(
        message.contains("sysctl -w vm.max_map_count=262144"),
        "{message}"
    );
    assert!(count > 10_000, "only {count} goroutines");
    let go_message = go_message.expect("gort::go panics when no stack can be had");
    assert!(go_message.contains("vm.max_map_count"), "{go_message}");
}

/// Resident bytes of this process.
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Goroutines parked so far in `park_chain`.
static PARKED: AtomicUsize = AtomicUsize::new(0);
/// Set to let the last goroutine of the chain finish.
static RELEASE: AtomicBool = AtomicBool::new(false);

/// Goroutine `n` of a chain spawns goroutine `n - 1` and parks joining it; goroutine 0
/// yields until released.
fn park_chain(n: usize) {
    if n == 0 {
        // Relaxed: a flag polled in a loop; no data is published with it.
        while !RELEASE.load(Ordering::Relaxed) {
            gort::yield_now();
        }
        return;
    }
    let next = gort::go(move || park_chain(n - 1));
    // Relaxed: a counter the main thread polls; no data is published with it.
    PARKED.fetch_add(1, Ordering::Relaxed);
    next.join().unwrap();
}

fn parked_rss_child() {
    // Without guard markers each stack costs 2 of the 65530 mappings a process may have.
    let goroutines = if guard_modes().contains(&"madvise") {
        100_000
    } else {
        20_000
    };
    let rt = Runtime::builder()
        .procs(2)
        .preempt(Preempt::Off)
        .build()
        .unwrap();
    rt.block_on(|| gort::go(|| ()).join().unwrap());
    let before = resident();
    let root = rt.spawn(move || park_chain(goroutines));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    // Relaxed: see `PARKED`.
    while PARKED.load(Ordering::Relaxed) < goroutines {
        assert!(
            std::time::Instant::now() < deadline,
            "the chain did not build up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Let the last joiners reach their park.
    std::thread::sleep(Duration::from_millis(200));
    let parked = resident();
    // Relaxed: see `RELEASE`.
    RELEASE.store(true, Ordering::Relaxed);
    root.join().unwrap();
    let finished = resident();
    rt.shutdown();
    let per_goroutine = (parked - before) / goroutines;
    println!(
        "parked_rss: {goroutines} parked goroutines: {per_goroutine} bytes of RSS each; \
         {} MiB above the baseline after they finished, {} MiB after shutdown",
        finished.saturating_sub(before) >> 20,
        resident().saturating_sub(before) >> 20,
    );
    // The design target (DESIGN.md section 4) holds for optimised code; debug builds have
    // much bigger frames, which can spill into a second page.
    // qemu-user adds its own per-page tracking to the host process's RSS.
    let bound = match (cfg!(debug_assertions), emulator().is_some()) {
        (false, false) => 4608,
        (false, true) => 8192,
        (true, _) => 16 * 1024,
    };
    assert!(
        per_goroutine <= bound,
        "{per_goroutine} bytes per parked goroutine"
    );
}
