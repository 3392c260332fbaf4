//! Integration tests of the scheduler through the public API, every scenario at GOMAXPROCS =
//! 1, 2 and 8 (8 oversubscribes a 2-core machine).
//!
//! Each test builds its own [`Runtime`] (never the default one), so tests run in parallel in
//! one process without sharing a scheduler, and shuts it down at the end. Each test body runs
//! on a plain thread under a generous hang guard ([`HANG_GUARD`]): a scheduler bug shows up as a
//! failure naming the test, not as a stuck test binary. Nothing here asserts on timing.
//!
//! Goroutines coordinate only through std atomics, `JoinHandle::join` and `yield_now`: there
//! are no channels yet, and a goroutine must not block its OS thread for long (that would stall
//! its P: there is no syscall handoff yet).
//!
//! The one process-wide measurement (stack mappings across runtime lifetimes) runs in a child
//! process: this binary re-runs itself with `--exact child` and `GORT_SCHED_IT_CHILD=<role>`.
//!
//! Atomics: the counters and flags below publish no data of their own. They are read after a
//! `join` (which synchronises with the goroutine's exit), or polled until they reach a value,
//! so `Relaxed` suffices unless a comment says otherwise.

#[macro_use]
mod common;

use std::any::Any;
use std::collections::HashSet;
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use gort::{Abandoned, Builder, JoinHandle, Runtime, Stats};

/// How long any one test (or a wait inside it) may take before it counts as hung. Far above
/// what any test needs (seconds in debug builds); it only turns a hang into a failure.
const HANG_GUARD: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Runs `body` on a plain thread and returns its result; fails the test if it panics or does
/// not finish within [`HANG_GUARD`].
fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    quiet_expected_panics();
    common::run_guarded(HANG_GUARD, body)
}

/// Marks the panics the tests provoke on purpose; the panic hook keeps them off stderr.
const EXPECTED: &str = "(expected panic)";

/// Installs (once) a panic hook that stays silent for panics whose message contains
/// [`EXPECTED`] and forwards every other panic to the default hook.
fn quiet_expected_panics() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            if !message.is_some_and(|m| m.contains(EXPECTED)) {
                default_hook(info);
            }
        }));
    });
}

/// A runtime of its own for one test.
fn runtime(procs: usize) -> Runtime {
    Runtime::builder()
        .procs(procs)
        .build()
        .expect("building a runtime")
}

/// A runtime without asynchronous preemption, for tests that count goroutines inside a section:
/// a goroutine preempted inside (its thread descheduled past the quantum on a loaded machine
/// is enough) rightly lets another run while it is still counted.
fn runtime_cooperative(procs: usize) -> Runtime {
    Runtime::builder()
        .procs(procs)
        .preempt(gort::Preempt::Off)
        .build()
        .expect("building a runtime")
}

/// On a plain thread: waits (sleeping) until `cond` holds; fails after [`HANG_GUARD`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG_GUARD, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In a goroutine: yields until `cond` holds; fails (panics) after [`HANG_GUARD`].
fn yield_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG_GUARD, "gave up waiting for {what}");
        gort::yield_now();
    }
}

/// Waits until every goroutine of `rt` has finished and its counters have caught up (they are
/// bumped by the scheduler just after a goroutine's result is published), then returns them.
fn settled(rt: &Runtime) -> Stats {
    let mut stats = rt.stats();
    wait_until("the runtime's goroutine count to drop to 0", || {
        stats = rt.stats();
        stats.goroutines == 0 && stats.completed == stats.spawned
    });
    stats
}

fn bump(counter: &AtomicUsize) {
    // Relaxed: a counter (module docs).
    counter.fetch_add(1, Ordering::Relaxed);
}

fn count(counter: &AtomicUsize) -> usize {
    // Relaxed: read after a join or polled (module docs).
    counter.load(Ordering::Relaxed)
}

/// This OS thread's id.
fn tid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Some work that the optimiser cannot remove, with no scheduling point in it.
fn busy(iterations: u64) -> u64 {
    let mut x = black_box(iterations);
    for i in 0..iterations {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

/// The message of a panic payload, if it is a string.
fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// Asserts that `result` is the `Err` of a goroutine abandoned at shutdown.
fn assert_abandoned<T: std::fmt::Debug>(what: &str, result: Result<T, Box<dyn Any + Send>>) {
    match result {
        Ok(value) => panic!("{what}: joined with Ok({value:?}), expected Abandoned"),
        Err(payload) => assert!(
            payload.downcast_ref::<Abandoned>().is_some(),
            "{what}: joined with a payload other than Abandoned: {:?}",
            panic_message(&*payload)
        ),
    }
}

at_procs!(
    many_yielding_goroutines_complete_exactly_once,
    running_goroutines_never_exceed_procs_and_idle_ps_steal,
    nested_spawns_form_a_complete_tree,
    join_from_threads_and_goroutines,
    panics_are_returned_by_join_and_spare_the_thread,
    goroutine_ids_and_names,
    set_max_procs_while_goroutines_run,
    shutdown_abandons_unfinished_goroutines,
    drop_without_shutdown_abandons_unfinished_goroutines,
);

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// 100,000 goroutines each yield 10 times; every one of them runs to completion exactly once,
/// and the counters agree.
fn many_yielding_goroutines_complete_exactly_once(procs: usize) {
    const GOROUTINES: usize = 100_000;
    const YIELDS: usize = 10;
    let rt = runtime(procs);
    let before = rt.stats();
    assert_eq!(before.procs, procs);
    let slots: Arc<Vec<AtomicU8>> = Arc::new((0..GOROUTINES).map(|_| AtomicU8::new(0)).collect());
    let shared = slots.clone();
    let live_inside = rt.block_on(move || {
        let handles: Vec<JoinHandle<usize>> = (0..GOROUTINES)
            .map(|i| {
                let slots = shared.clone();
                gort::go(move || {
                    for _ in 0..YIELDS {
                        gort::yield_now();
                    }
                    // Relaxed: read after the join (module docs).
                    slots[i].fetch_add(1, Ordering::Relaxed);
                    i
                })
            })
            .collect();
        for (i, handle) in handles.into_iter().enumerate() {
            assert_eq!(handle.join().unwrap(), i);
        }
        gort::num_goroutines()
    });
    // The root goroutine itself was still live; the others may not have been counted as
    // finished yet (the scheduler counts them just after their result is published).
    assert!((1..=GOROUTINES + 1).contains(&live_inside), "{live_inside}");
    for (i, slot) in slots.iter().enumerate() {
        // Relaxed: every goroutine was joined.
        let runs = slot.load(Ordering::Relaxed);
        assert_eq!(runs, 1, "goroutine {i} ran {runs} times");
    }
    let after = settled(&rt);
    assert_eq!(after.spawned - before.spawned, GOROUTINES as u64 + 1);
    assert_eq!(after.completed - before.completed, GOROUTINES as u64 + 1);
    assert_eq!(after.yields - before.yields, (GOROUTINES * YIELDS) as u64);
    assert_eq!(after.goroutines, 0);
    assert_eq!(after.procs, procs);
    eprintln!("GOMAXPROCS={procs}: {after}");
    // Seen from a goroutine of the runtime: just itself.
    assert_eq!(rt.block_on(gort::num_goroutines), 1);
    if procs == 1 {
        assert_eq!(after.steals, 0, "nobody to steal from at GOMAXPROCS=1");
    }
    rt.shutdown();
}

/// What a round of `busy_round` observed.
#[derive(Default)]
struct Observed {
    /// OS threads that ran the workload's goroutines.
    threads: Mutex<HashSet<i32>>,
    /// Goroutines inside their busy section right now.
    running: AtomicUsize,
    /// The most goroutines ever seen inside their busy sections at once.
    max_running: AtomicUsize,
}

/// One goroutine spawns 256 CPU-bound goroutines that yield between slices of work; every
/// slice records how many goroutines are inside a slice at once, and on which thread.
fn busy_round(rt: &Runtime, observed: &Arc<Observed>) {
    const WORKERS: usize = 256;
    const SLICES: usize = 4;
    let observed = observed.clone();
    rt.block_on(move || {
        let handles: Vec<JoinHandle<u64>> = (0..WORKERS)
            .map(|_| {
                let observed = observed.clone();
                gort::go(move || {
                    let mut sum = 0;
                    for _ in 0..SLICES {
                        // SeqCst: the entries and exits of all goroutines form one order, so
                        // the count seen is the true number inside at that point.
                        let now = observed.running.fetch_add(1, Ordering::SeqCst) + 1;
                        // Relaxed: a maximum of values already ordered by `running`.
                        observed.max_running.fetch_max(now, Ordering::Relaxed);
                        sum ^= busy(2_000);
                        // SeqCst: see above.
                        observed.running.fetch_sub(1, Ordering::SeqCst);
                        // Outside the counted section: a goroutine inside libc (gettid, a
                        // contended std Mutex) may have its P retaken by sysmon's foreign-
                        // blocking handoff, and GOMAXPROCS is then exceeded by design while
                        // that call lasts (DESIGN.md §5). Under qemu-user those calls are
                        // slow enough to be caught there.
                        observed.threads.lock().unwrap().insert(tid());
                        gort::yield_now();
                    }
                    sum
                })
            })
            .collect();
        for handle in handles {
            black_box(handle.join().unwrap());
        }
    });
}

/// At most GOMAXPROCS goroutines ever run at once; at GOMAXPROCS=1 never two, and nothing is
/// stolen; with more Ps, work spawned on one P is stolen by idle ones and runs in parallel on
/// several threads. Parallelism depends on the OS scheduler (the machine may be loaded), so
/// the workload is repeated until it is seen (at most 50 rounds); only "never" fails.
/// Asynchronous preemption is off (see [`runtime_cooperative`]).
fn running_goroutines_never_exceed_procs_and_idle_ps_steal(procs: usize) {
    const MAX_ROUNDS: usize = 50;
    let rt = runtime_cooperative(procs);
    let observed = Arc::new(Observed::default());
    let mut rounds = 0;
    loop {
        rounds += 1;
        busy_round(&rt, &observed);
        // Relaxed: read after every goroutine of the round was joined.
        let max_running = observed.max_running.load(Ordering::Relaxed);
        assert!(
            max_running <= procs,
            "{max_running} goroutines ran at once with GOMAXPROCS={procs}"
        );
        let threads = observed.threads.lock().unwrap().len();
        let steals = rt.stats().steals;
        if procs == 1 {
            assert_eq!(max_running, 1);
            assert_eq!(steals, 0, "a steal with a single P");
            if rounds == 3 {
                break;
            }
            continue;
        }
        if steals > 0 && threads >= 2 && max_running >= 2 {
            eprintln!(
                "GOMAXPROCS={procs}: {rounds} round(s): {steals} steals, {threads} threads, \
                 {max_running} goroutines at once"
            );
            break;
        }
        assert!(
            rounds < MAX_ROUNDS,
            "after {rounds} rounds: steals={steals}, threads={threads}, \
             max goroutines at once={max_running}\n{}",
            rt.stats()
        );
    }
    rt.shutdown();
}

/// Two kinds of goroutine take turns at GOMAXPROCS=1, with more arriving from a plain thread
/// (through the global queue): an "inside" flag set around each goroutine's work and around
/// its yields is never found set by another goroutine (asynchronous preemption off: see
/// [`runtime_cooperative`]).
#[test]
fn one_proc_never_runs_two_goroutines_at_once() {
    guarded(|| {
        const GOROUTINES: usize = 2_000;
        const FROM_THREAD: usize = 500;
        const ROUNDS: usize = 20;
        let rt = runtime_cooperative(1);
        let inside = Arc::new(AtomicBool::new(false));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let worker = {
            let (inside, overlaps, finished) = (inside.clone(), overlaps.clone(), finished.clone());
            move |i: usize| {
                for round in 0..ROUNDS {
                    // SeqCst: every goroutine's enter/leave is one total order, so an
                    // overlap cannot hide.
                    if inside.swap(true, Ordering::SeqCst) {
                        bump(&overlaps);
                    }
                    black_box(busy((i + round) as u64 % 64));
                    // SeqCst: as above.
                    if !inside.swap(false, Ordering::SeqCst) {
                        bump(&overlaps);
                    }
                    gort::yield_now();
                }
                bump(&finished);
            }
        };
        let from_thread = {
            let worker = worker.clone();
            let rt_handles: Vec<JoinHandle<()>> = (0..FROM_THREAD)
                .map(|i| {
                    let worker = worker.clone();
                    rt.spawn(move || worker(GOROUTINES + i))
                })
                .collect();
            std::thread::spawn(move || {
                for handle in rt_handles {
                    handle.join().unwrap();
                }
            })
        };
        rt.block_on(move || {
            let handles: Vec<JoinHandle<()>> = (0..GOROUTINES)
                .map(|i| {
                    let worker = worker.clone();
                    gort::go(move || worker(i))
                })
                .collect();
            for handle in handles {
                handle.join().unwrap();
            }
        });
        from_thread.join().unwrap();
        assert_eq!(
            count(&overlaps),
            0,
            "two goroutines ran at once at GOMAXPROCS=1"
        );
        assert_eq!(count(&finished), GOROUTINES + FROM_THREAD);
        let stats = settled(&rt);
        assert_eq!(stats.steals, 0);
        rt.shutdown();
    })
}

/// A tree of goroutines (depth 6, fan-out 4): each spawns its children, yields, and joins
/// them; the subtree sizes add up.
fn nested_spawns_form_a_complete_tree(procs: usize) {
    const DEPTH: u32 = 6;
    const FAN_OUT: usize = 4;
    fn node(depth: u32, visited: Arc<AtomicUsize>) -> usize {
        bump(&visited);
        if depth == 0 {
            return 1;
        }
        let me = gort::current_id();
        let children: Vec<JoinHandle<(usize, u64)>> = (0..FAN_OUT)
            .map(|_| {
                let visited = visited.clone();
                gort::go(move || (node(depth - 1, visited), gort::current_id()))
            })
            .collect();
        gort::yield_now();
        let mut size = 1;
        for child in children {
            let id = child.id();
            let (subtree, child_id) = child.join().unwrap();
            assert_eq!(child_id, id);
            assert_ne!(child_id, me);
            size += subtree;
        }
        size
    }
    // (FAN_OUT^(DEPTH+1) - 1) / (FAN_OUT - 1)
    let expected = (FAN_OUT.pow(DEPTH + 1) - 1) / (FAN_OUT - 1);
    let rt = runtime(procs);
    let before = rt.stats();
    let visited = Arc::new(AtomicUsize::new(0));
    let root_visited = visited.clone();
    let size = rt.block_on(move || node(DEPTH, root_visited));
    assert_eq!(size, expected);
    assert_eq!(count(&visited), expected);
    let after = settled(&rt);
    // block_on's goroutine is the root of the tree.
    assert_eq!(after.spawned - before.spawned, expected as u64);
    // Every internal node that found a child unfinished parked in `join`.
    assert!(after.parks > before.parks, "{after}");
    rt.shutdown();
}

/// `join` from plain threads (blocking them) and from goroutines (parking them), of a
/// goroutine of the same or of another runtime; `join` of a finished goroutine; a dropped
/// handle detaches its goroutine, which still runs.
fn join_from_threads_and_goroutines(procs: usize) {
    const N: usize = 16;
    let rt = runtime(procs);
    let other = runtime(2);

    // Plain threads join goroutines that finish only after the threads are (very likely)
    // already waiting.
    let go_ahead = Arc::new(AtomicBool::new(false));
    let threads: Vec<std::thread::JoinHandle<usize>> = (0..N)
        .map(|i| {
            let go_ahead = go_ahead.clone();
            let handle = rt.spawn(move || {
                // Relaxed: a flag polled in a loop (module docs).
                yield_until("go-ahead", || go_ahead.load(Ordering::Relaxed));
                for _ in 0..100 {
                    gort::yield_now();
                }
                i * 3
            });
            std::thread::spawn(move || handle.join().unwrap())
        })
        .collect();
    // Relaxed: see above.
    go_ahead.store(true, Ordering::Relaxed);
    for (i, thread) in threads.into_iter().enumerate() {
        assert_eq!(thread.join().unwrap(), i * 3);
    }

    // A plain thread joins a goroutine that has already finished.
    let handle = rt.spawn(|| 7);
    wait_until("a trivial goroutine to finish", || handle.is_finished());
    assert!(handle.is_finished());
    assert_eq!(handle.join().unwrap(), 7);

    // Goroutines join: goroutines of their own runtime, a handle passed to a third goroutine,
    // a finished goroutine, and a goroutine of another runtime.
    let from_other = other.spawn(|| {
        for _ in 0..50 {
            gort::yield_now();
        }
        gort::current_id()
    });
    let from_other_id = from_other.id();
    let results = rt.block_on(move || {
        let children: Vec<JoinHandle<usize>> = (0..N)
            .map(|i| {
                gort::go(move || {
                    for _ in 0..i {
                        gort::yield_now();
                    }
                    i * i
                })
            })
            .collect();
        let mut squares = 0;
        for child in children {
            squares += child.join().unwrap();
        }

        let target = gort::go(|| {
            for _ in 0..20 {
                gort::yield_now();
            }
            "target"
        });
        let relay = gort::go(move || target.join().unwrap());
        let relayed = relay.join().unwrap();

        let finished = gort::go(|| 11);
        yield_until("a trivial goroutine to finish", || finished.is_finished());
        let finished = finished.join().unwrap();

        let cross_runtime = from_other.join().unwrap();
        (squares, relayed, finished, cross_runtime)
    });
    assert_eq!(results.0, (0..N).map(|i| i * i).sum::<usize>());
    assert_eq!(results.1, "target");
    assert_eq!(results.2, 11);
    assert_eq!(results.3, from_other_id);

    // Dropped handles detach: the goroutines still run to completion.
    let detached = Arc::new(AtomicUsize::new(0));
    for _ in 0..N {
        let detached = detached.clone();
        drop(rt.spawn(move || {
            for _ in 0..10 {
                gort::yield_now();
            }
            bump(&detached);
        }));
    }
    let inner = detached.clone();
    rt.block_on(move || {
        for _ in 0..N {
            let detached = inner.clone();
            drop(gort::go(move || {
                for _ in 0..10 {
                    gort::yield_now();
                }
                bump(&detached);
            }));
        }
    });
    wait_until("detached goroutines to finish", || {
        count(&detached) == 2 * N
    });
    settled(&rt);
    rt.shutdown();
    other.shutdown();
}

/// A panicking goroutine's `join` returns `Err` with the payload; its thread survives and the
/// runtime keeps running goroutines; `block_on` of a panicking closure resumes the panic.
fn panics_are_returned_by_join_and_spare_the_thread(procs: usize) {
    let rt = runtime(procs);
    let thread_of_panic = Arc::new(AtomicI32::new(0));

    let recorder = thread_of_panic.clone();
    let err = rt
        .spawn(move || -> u32 {
            // Relaxed: read after the join.
            recorder.store(tid(), Ordering::Relaxed);
            gort::yield_now();
            panic!("static payload (expected panic)")
        })
        .join()
        .unwrap_err();
    let message = err.downcast_ref::<&str>().expect("a &str payload");
    assert_eq!(*message, "static payload (expected panic)");

    let err = rt
        .spawn(|| -> () { panic!("formatted payload {} {EXPECTED}", 42) })
        .join()
        .unwrap_err();
    let message = err.downcast_ref::<String>().expect("a String payload");
    assert_eq!(message, "formatted payload 42 (expected panic)");

    let err = rt
        .spawn(|| panic::resume_unwind(Box::new(0xDEADu32)))
        .join()
        .unwrap_err();
    assert_eq!(err.downcast_ref::<u32>(), Some(&0xDEAD));

    // The thread that ran the panicking goroutine did not exit.
    // Relaxed: written before the goroutine finished, which the join synchronised with.
    let thread = thread_of_panic.load(Ordering::Relaxed);
    assert!(
        std::path::Path::new(&format!("/proc/self/task/{thread}")).exists(),
        "thread {thread}, which ran a panicking goroutine, is gone"
    );

    // Panics joined by goroutines, mixed with goroutines that finish normally.
    let (ok, panicked) = rt.block_on(|| {
        let handles: Vec<JoinHandle<usize>> = (0..200)
            .map(|i| {
                gort::go(move || {
                    gort::yield_now();
                    if i % 2 == 1 {
                        panic!("odd goroutine {i} {EXPECTED}");
                    }
                    i
                })
            })
            .collect();
        let (mut ok, mut panicked) = (0, 0);
        for (i, handle) in handles.into_iter().enumerate() {
            match handle.join() {
                Ok(v) => {
                    assert_eq!(v, i);
                    ok += 1;
                }
                Err(payload) => {
                    let expected = format!("odd goroutine {i} {EXPECTED}");
                    assert_eq!(panic_message(&*payload), Some(expected.as_str()));
                    panicked += 1;
                }
            }
        }
        (ok, panicked)
    });
    assert_eq!((ok, panicked), (100, 100));

    // block_on resumes the panic in its caller.
    let caught = panic::catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(|| -> u8 { panic!("block_on payload {EXPECTED}") })
    }))
    .unwrap_err();
    assert_eq!(
        panic_message(&*caught),
        Some("block_on payload (expected panic)")
    );

    // The runtime still runs plenty of goroutines afterwards.
    let sum = rt.block_on(|| {
        let handles: Vec<JoinHandle<u64>> = (0..1_000u64)
            .map(|i| {
                gort::go(move || {
                    gort::yield_now();
                    i
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, 999 * 1_000 / 2);
    // Panicked goroutines count as completed.
    settled(&rt);
    rt.shutdown();
}

/// `current_id` is unique and non-zero in goroutines (and matches `JoinHandle::id`), 0 on a
/// plain thread; `Builder::name` is visible through `current_name`.
fn goroutine_ids_and_names(procs: usize) {
    const N: usize = 1_000;
    assert_eq!(gort::current_id(), 0, "a plain thread has no goroutine id");
    assert_eq!(gort::current_name(), None);
    let rt = runtime(procs);

    let handles: Vec<JoinHandle<u64>> = (0..N)
        .map(|_| {
            rt.spawn(|| {
                let before = gort::current_id();
                gort::yield_now();
                // The id does not change across a reschedule (possibly onto another thread).
                assert_eq!(gort::current_id(), before);
                before
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for handle in handles {
        let id = handle.id();
        assert_ne!(id, 0);
        assert_eq!(handle.join().unwrap(), id);
        assert!(ids.insert(id), "goroutine id {id} seen twice");
    }

    let (root_id, nested_ids, unnamed) = rt.block_on(|| {
        let nested: Vec<JoinHandle<u64>> = (0..N).map(|_| gort::go(gort::current_id)).collect();
        let nested_ids: Vec<(u64, u64)> = nested
            .into_iter()
            .map(|h| {
                let id = h.id();
                (id, h.join().unwrap())
            })
            .collect();
        (gort::current_id(), nested_ids, gort::current_name())
    });
    assert_ne!(root_id, 0);
    assert!(ids.insert(root_id), "goroutine id {root_id} seen twice");
    assert_eq!(unnamed, None);
    for (id, reported) in nested_ids {
        assert_eq!(id, reported);
        assert!(ids.insert(id), "goroutine id {id} seen twice");
    }

    let named = Builder::new()
        .name("worker-7")
        .spawn_on(&rt, || (gort::current_name(), gort::current_id()))
        .unwrap();
    let named_id = named.id();
    assert_eq!(
        named.join().unwrap(),
        (Some("worker-7".to_owned()), named_id)
    );
    assert!(ids.insert(named_id));

    // Builder::spawn from a goroutine spawns on that goroutine's runtime; a reused goroutine
    // slot does not inherit an earlier name.
    let (inner_name, after_reuse) = rt.block_on(|| {
        let inner = Builder::new()
            .name(format!("inner of {}", gort::current_id()))
            .stack_size(64 * 1024)
            .spawn(|| (gort::current_name(), gort::num_goroutines()))
            .unwrap();
        let expected = format!("inner of {}", gort::current_id());
        let (name, live) = inner.join().unwrap();
        assert_eq!(name.as_deref(), Some(expected.as_str()));
        // The inner goroutine saw itself and its parent on this runtime.
        assert!(live >= 2, "{live}");
        let fresh: Vec<JoinHandle<Option<String>>> =
            (0..200).map(|_| gort::go(gort::current_name)).collect();
        let after_reuse: Vec<Option<String>> =
            fresh.into_iter().map(|h| h.join().unwrap()).collect();
        (name, after_reuse)
    });
    assert!(inner_name.is_some());
    assert!(after_reuse.iter().all(Option::is_none), "{after_reuse:?}");
    assert_eq!(gort::current_id(), 0);
    rt.shutdown();
}

/// GOMAXPROCS grows and shrinks (from a plain thread and from a goroutine) while goroutines
/// run: the old values come back right, `stats().procs` follows, everything completes.
fn set_max_procs_while_goroutines_run(procs: usize) {
    const WORKERS: usize = 64;
    const STEPS: usize = 2_000;
    let rt = runtime(procs);
    let progress = Arc::new(AtomicUsize::new(0));
    let workers: Vec<JoinHandle<u64>> = (0..WORKERS)
        .map(|i| {
            let progress = progress.clone();
            rt.spawn(move || {
                let mut sum = 0;
                for step in 0..STEPS {
                    sum += busy(50) & 1;
                    bump(&progress);
                    if step % 7 == i % 7 {
                        // Spawn-and-join keeps parking and readying goroutines meanwhile.
                        sum += gort::go(move || step as u64).join().unwrap() - step as u64;
                    }
                    gort::yield_now();
                }
                sum
            })
        })
        .collect();

    // `set_max_procs(n)` returns the previous value; each change waits for some progress so
    // that it lands while goroutines run.
    let mut expected_old = procs;
    for (k, &n) in [4, 1, 8, 3, 1, 4, procs].iter().enumerate() {
        let seen = count(&progress);
        wait_until("the workers to make progress", || {
            count(&progress) > seen || count(&progress) == WORKERS * STEPS
        });
        let old = if k % 2 == 0 {
            rt.set_max_procs(n)
        } else {
            // The same through the public function, called from one of the runtime's
            // goroutines (so it applies to that runtime, not the default one).
            rt.block_on(move || gort::set_max_procs(n))
        };
        assert_eq!(
            old, expected_old,
            "set_max_procs({n}) returned the wrong old value"
        );
        assert_eq!(rt.procs(), n);
        assert_eq!(rt.stats().procs, n);
        assert_eq!(rt.set_max_procs(0), n, "set_max_procs(0) only queries");
        assert_eq!(rt.block_on(|| gort::stats().procs), n);
        expected_old = n;
    }
    for worker in workers {
        black_box(worker.join().unwrap());
    }
    assert_eq!(count(&progress), WORKERS * STEPS);
    let stats = settled(&rt);
    assert_eq!(stats.procs, procs);
    // After growing, the runtime still runs more goroutines at once than one, and they all
    // finish.
    rt.set_max_procs(4);
    let sum = rt.block_on(|| {
        let hs: Vec<JoinHandle<usize>> = (0..500)
            .map(|i| {
                gort::go(move || {
                    gort::yield_now();
                    i
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    assert_eq!(sum, 499 * 500 / 2);
    rt.shutdown();
}

/// A goroutine preempted on a P that a GOMAXPROCS decrease is retiring goes to the global
/// queue (`Migrate`: to the back of the line), and the P's M then retires the P. With every
/// other P idle, nobody else looks at the global queue: retiring a P must wake an M for the
/// work there, as idling one does. It once did so only for the Gs it moved from the P's own
/// queue, and the goroutine waited forever (found under 100 µs quanta by
/// `set_max_procs_while_goroutines_run`). Shrinking 8 → 1 from the goroutine leaves it on a
/// retiring P 7 times in 8; it then spins through a few 1 ms quanta (the preemption monitor
/// watches retiring Ps too).
#[test]
fn preempted_on_a_retiring_p_still_runs() {
    guarded(|| {
        let mut preempted = 0;
        for _ in 0..10 {
            let rt = Runtime::builder()
                .procs(8)
                .preempt(gort::Preempt::Migrate)
                .preempt_quantum(Duration::from_millis(1))
                .build()
                .expect("building a runtime");
            let spins = rt.block_on(|| {
                assert_eq!(gort::set_max_procs(1), 8);
                let t0 = Instant::now();
                let mut spins = 0u64;
                while t0.elapsed() < Duration::from_millis(20) {
                    spins = black_box(spins + 1);
                }
                spins
            });
            assert!(spins > 0);
            preempted += rt.stats().preempt.preemptions;
            rt.shutdown();
        }
        assert!(preempted > 0, "never preempted: the test did not test");
    });
}

/// What `unfinished_goroutines` left behind, to check after the runtime stopped.
struct Unfinished {
    /// Goroutines queued behind a goroutine that never gives up its P (GOMAXPROCS=1: they
    /// never start).
    queued: Vec<JoinHandle<usize>>,
    /// How many of the queued goroutines started.
    started: Arc<AtomicUsize>,
    /// Goroutines parked forever.
    parked: Vec<JoinHandle<()>>,
    /// A goroutine that yields forever (always runnable).
    yielding: JoinHandle<()>,
    /// A plain thread blocked in `join` of another goroutine that yields forever.
    blocked_thread: std::thread::JoinHandle<Result<(), Box<dyn Any + Send>>>,
    /// The goroutine that spawned `queued`; it returns once spawning fails (the runtime is
    /// shutting down), unless preempted just then (see `check_unfinished`).
    spawner: JoinHandle<usize>,
    /// A goroutine that finished before the shutdown.
    finished: JoinHandle<u32>,
}

/// Yields until the runtime stops scheduling this goroutine.
fn yield_forever() {
    loop {
        gort::yield_now();
    }
}

/// A goroutine that never finishes, on a runtime that is never shut down (so it is never
/// abandoned either), at almost no CPU cost: it sleeps 20 ms at a time, blocking its thread,
/// and yields in between, so it is unaffected by preemption or P handoff.
///
/// (Once channels exist, a receive on a channel whose sender is leaked is the better
/// "forever": it parks instead of blocking a thread.)
fn never_finishing() -> JoinHandle<()> {
    static NEVER: OnceLock<Runtime> = OnceLock::new();
    NEVER.get_or_init(|| runtime(1)).spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(20));
            gort::yield_now();
        }
    })
}

/// Leaves `rt` with goroutines parked forever, runnable forever, and queued but never
/// started (at GOMAXPROCS=1), and one finished.
fn unfinished_goroutines(rt: &Runtime) -> Unfinished {
    const QUEUED: usize = 300;
    let finished = rt.spawn(|| 5u32);
    wait_until("a trivial goroutine to finish", || finished.is_finished());

    // Goroutines parked forever: joining goroutines (of another runtime) that never finish.
    // (Not goroutines of `rt` itself: abandoning those wakes their joiners, which is broken;
    // see the ignored tests `abandoning_a_joined_goroutine_*` and `finishing_a_goroutine_*`.)
    let parked: Vec<JoinHandle<()>> = (0..3)
        .map(|_| {
            let target = never_finishing();
            rt.spawn(move || {
                let _ = target.join();
            })
        })
        .collect();
    let yielding = rt.spawn(yield_forever);
    let blocker = rt.spawn(yield_forever);
    let blocked_thread = std::thread::spawn(move || blocker.join());
    wait_until("three goroutines to park", || rt.stats().parks >= 3);

    let started = Arc::new(AtomicUsize::new(0));
    let handoff: Arc<Mutex<Option<Vec<JoinHandle<usize>>>>> = Arc::new(Mutex::new(None));
    let (started2, handoff2) = (started.clone(), handoff.clone());
    let spawner = rt.spawn(move || {
        let queued: Vec<JoinHandle<usize>> = (0..QUEUED)
            .map(|i| {
                let started = started2.clone();
                gort::go(move || {
                    bump(&started);
                    i
                })
            })
            .collect();
        *handoff2.lock().unwrap() = Some(queued);
        // Keep the P (no scheduling point) until the runtime is shutting down, which makes
        // spawning fail. Sleeping blocks this thread briefly; that is the point.
        let mut probes = 0;
        let start = Instant::now();
        while Builder::new().spawn(|| ()).is_ok() {
            probes += 1;
            if start.elapsed() > HANG_GUARD {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        probes
    });
    let mut queued = None;
    wait_until("the spawner to spawn", || {
        queued = handoff.lock().unwrap().take();
        queued.is_some()
    });
    Unfinished {
        queued: queued.unwrap(),
        started,
        parked,
        yielding,
        blocked_thread,
        spawner,
        finished,
    }
}

/// After the runtime stopped: unfinished goroutines are abandoned, finished ones are not.
fn check_unfinished(left: Unfinished) {
    assert_eq!(left.finished.join().unwrap(), 5);
    // The spawner returns once spawning fails — or is abandoned, if the shutdown found it
    // off its P: a goroutine whose slice includes its 1 ms sleeps is preempted under short
    // quanta (`GORT_QUANTUM_US=100`; one run in ~15 under two busy loops) and waits on the
    // global queue, like any runnable goroutine.
    match left.spawner.join() {
        Ok(probes) => assert!(probes < 200_000, "{probes}"),
        Err(payload) => assert!(
            payload.downcast_ref::<Abandoned>().is_some(),
            "the spawner: {:?}",
            panic_message(&*payload)
        ),
    }
    for parked in left.parked {
        assert_abandoned("a goroutine parked forever", parked.join());
    }
    assert!(left.yielding.is_finished(), "abandoned counts as finished");
    assert_abandoned("a goroutine yielding forever", left.yielding.join());
    assert_abandoned(
        "a plain thread blocked in join during the shutdown",
        left.blocked_thread.join().unwrap(),
    );
    let mut abandoned = 0;
    for (i, handle) in left.queued.into_iter().enumerate() {
        match handle.join() {
            Ok(v) => assert_eq!(v, i),
            Err(payload) => {
                assert!(payload.downcast_ref::<Abandoned>().is_some());
                abandoned += 1;
            }
        }
    }
    let started = count(&left.started);
    // A spawner that fills its P's queue yields to what it spawned (back-pressure), so some
    // of the queued goroutines may have started, and the rest were abandoned.
    assert!(started + abandoned >= 300, "{started} + {abandoned}");
}

/// `shutdown` returns although goroutines are parked forever, runnable forever and queued;
/// `join` of each returns `Err(Abandoned)`, also for a thread already blocked in `join`.
fn shutdown_abandons_unfinished_goroutines(procs: usize) {
    let rt = runtime(procs);
    let left = unfinished_goroutines(&rt);
    rt.shutdown();
    check_unfinished(left);
}

/// The same, with the runtime simply dropped.
fn drop_without_shutdown_abandons_unfinished_goroutines(procs: usize) {
    let rt = runtime(procs);
    let left = unfinished_goroutines(&rt);
    drop(rt);
    check_unfinished(left);
}

/// Shutdown with two goroutines parked joining each other: abandoning the first wakes the
/// second, which is being abandoned too. The wake-up must be discarded (runtime.rs: "waking
/// such a goroutine later must stay memory-safe (it is discarded)"). Runs in a child process,
/// so that an abort fails only this test.
#[test]
fn abandoning_a_joined_goroutine_discards_the_wake_up_of_its_abandoned_joiner() {
    child_ok("abandon_cycle", &[]);
}

fn abandon_cycle_child() {
    let rt = runtime(1);
    let slots: Arc<[Mutex<Option<JoinHandle<()>>>; 2]> =
        Arc::new([Mutex::new(None), Mutex::new(None)]);
    for me in 0..2 {
        let shared = slots.clone();
        let handle = rt.spawn(move || {
            let mut other = None;
            yield_until("the other half of the cycle", || {
                other = shared[1 - me].lock().unwrap().take();
                other.is_some()
            });
            let _ = other.unwrap().join();
        });
        *slots[me].lock().unwrap() = Some(handle);
    }
    wait_until("both halves of the cycle to park", || rt.stats().parks >= 2);
    rt.shutdown();
}

/// A goroutine whose P sysmon took while it blocked in the kernel (without `gort::syscall`)
/// finishes without getting a P back: its exit needs none (`Action::ExitNoP`). Before, it
/// queued for a P like any goroutine that lost its own — here behind a goroutine that never
/// yields, so it stayed live indefinitely, and a shutdown in that state abandoned it with its
/// stack (seen as `stacks_are_unmapped_across_runtime_lifetimes` failing under
/// `GORT_PREEMPT=migrate GORT_QUANTUM_US=100` on a loaded machine). Needs sysmon's `/proc`
/// detector, which is off under qemu-user.
#[test]
fn a_goroutine_that_lost_its_p_exits_without_one() {
    if common::emulator().is_some() {
        println!("skipped under qemu-user: sysmon's /proc foreign-blocking detector is off");
        return;
    }
    guarded(|| {
        let rt = Runtime::builder()
            .procs(1)
            .preempt(gort::Preempt::Off)
            .preempt_quantum(Duration::from_millis(1))
            .build()
            .expect("building a runtime");
        let (running, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        // A std socket pair: the sleeper blocks in `read(2)` without `gort::syscall` (no CPU
        // time while it waits, which sysmon's detector requires) until the spinner — which
        // can only start once sysmon has handed it the only P — writes.
        let (mut wake_rx, mut wake_tx) = std::os::unix::net::UnixStream::pair().unwrap();
        let running2 = running.clone();
        let sleeper = rt.spawn(move || {
            use std::io::Read;
            // Relaxed (both flags): progress flags, polled.
            running2.store(true, Ordering::Relaxed);
            let mut b = [0u8; 1];
            wake_rx.read_exact(&mut b).unwrap();
            7
        });
        wait_until("the sleeper to run", || running.load(Ordering::Relaxed));
        let stop2 = stop.clone();
        let spinner = rt.spawn(move || {
            use std::io::Write;
            wake_tx.write_all(b"x").unwrap();
            while !stop2.load(Ordering::Relaxed) {
                black_box(busy(100));
            }
        });
        assert_eq!(sleeper.join().unwrap(), 7);
        // The spinner holds the only P and never yields: the finished sleeper must leave on
        // its own.
        wait_until("the finished goroutine to exit without a P", || {
            rt.stats().goroutines == 1
        });
        let st = rt.stats();
        assert!(st.handoffs_foreign >= 1, "{st}");
        assert_eq!(st.completed, 1, "{st}");
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        rt.shutdown();
    });
}

/// A freshly started M holds its P from `acquirep` on, and sysmon must not take that P for
/// "foreign blocking" while the M sleeps in the kernel on its way to the scheduler. It did:
/// the new M was not yet counted as runtime code (g0) during `acquirep`, whose
/// `sched_setaffinity` (pinning) can sleep — caught returning from it into a SIGURG whose
/// frame, on the M's fresh signal stack, page-faulted behind a contended `mmap_lock` (state D,
/// syscall 203, no CPU time: what sysmon's `/proc` detector looks for). Nothing on the new M's
/// way into `find_runnable` checks ownership, so it went on using a P sysmon had handed off:
/// `gort: fatal: P3 status is Idle, expected Running (moving to Idle)`, about 1 runtime in 30
/// of `goroutine_ids_and_names::procs_8` under `GORT_QUANTUM_US=100`, and every run of this
/// test before the fix. Here: 200 runtimes at GOMAXPROCS = 8 with 100 µs quanta, their Ms
/// started under bursts of spawns. Under qemu-user sysmon's `/proc` detector is off, and 20
/// runtimes only check the path runs. In a child process, so that an abort fails only this
/// test.
#[test]
fn new_ms_keep_their_p_from_sysmon() {
    child_ok("new_ms", &[]);
}

/// The stress children's frame: `native` runtimes one after another (`emulated` under
/// qemu-user), each from `configure(i)` with 100 µs quanta, given to `body(i, rt)` and then
/// shut down.
fn short_quanta_runtimes(
    native: usize,
    emulated: usize,
    configure: impl Fn(usize) -> gort::RuntimeBuilder,
    mut body: impl FnMut(usize, &Runtime),
) {
    let runs = if common::emulator().is_some() {
        emulated
    } else {
        native
    };
    for i in 0..runs {
        let rt = configure(i)
            .preempt_quantum(Duration::from_micros(100))
            .build()
            .expect("building a runtime");
        body(i, &rt);
        rt.shutdown();
    }
}

fn new_ms_child() {
    short_quanta_runtimes(
        200,
        20,
        |_| Runtime::builder().procs(8),
        |_, rt| {
            // From a plain thread: Ms start one after another as the spawns wake them, while
            // preempted goroutines (thread handoff) keep theirs and more Ms are needed.
            let hs: Vec<_> = (0..1_000u64)
                .map(|i| {
                    rt.spawn(move || {
                        gort::yield_now();
                        i
                    })
                })
                .collect();
            let sum: u64 = hs.into_iter().map(|h| h.join().unwrap()).sum();
            assert_eq!(sum, 999 * 1_000 / 2);
            // Then from a goroutine, with the Ps idle for a while in between.
            let sum: u64 = rt.block_on(|| {
                let hs: Vec<_> = (0..1_000u64).map(|i| gort::go(move || i)).collect();
                hs.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(sum, 999 * 1_000 / 2);
        },
    );
}

/// sysmon's stamp-driven retake (`sysmon.rs`, `Probe`) takes a P only on the preemption
/// handler's answer to *that* probe. The answer used to be the `Retaking` word the handler
/// saw, left in the M afterwards; a status word is a state and an epoch, not a P, and every
/// P's epochs start at 0, so an M that answered a probe of one P (here: `P1 0x404`, whose P
/// sysmon then took) and then got another idle P at the word before it (`P0 0x301`) had its
/// next probe answered in advance — sysmon took the P at its next look, from an M that was
/// by then back in the scheduler holding it: `gort: fatal: P0 status is Idle, expected
/// Running (moving to Idle)`, 6 of 20 runs of the net suite under `GORT_PREEMPT=migrate
/// GORT_QUANTUM_US=100` on a loaded machine. Here: fresh runtimes (small, equal epochs)
/// at GOMAXPROCS = 2 with 100 µs quanta, goroutines that spend milliseconds running in libc
/// (`memcpy`: foreign but never asleep, so the stamp and the probe, not the `/proc`
/// detector, take their Ps) between short sleeps, which send them through the scheduler to
/// whatever P is idle. In a child process, so that an abort fails only this test.
#[test]
fn a_probe_is_answered_only_for_itself() {
    child_ok("stale_ack", &[]);
}

fn stale_ack_child() {
    let configure = |_| Runtime::builder().procs(2).preempt(gort::Preempt::Migrate);
    short_quanta_runtimes(200, 20, configure, |_, rt| {
        let copied: usize = rt.block_on(|| {
            let hs: Vec<_> = (0..3)
                .map(|_| {
                    gort::go(|| {
                        let src = vec![1u8; 256 << 10];
                        let mut dst = vec![0u8; 256 << 10];
                        let mut copied = 0;
                        for _ in 0..10 {
                            let t = Instant::now();
                            while t.elapsed() < Duration::from_millis(1) {
                                // SAFETY: two distinct buffers of `src.len()` bytes.
                                unsafe {
                                    libc::memcpy(
                                        dst.as_mut_ptr().cast(),
                                        src.as_ptr().cast(),
                                        src.len(),
                                    )
                                };
                                copied += black_box(dst[src.len() - 1]) as usize;
                            }
                            gort::sleep(Duration::from_micros(50));
                        }
                        copied
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert!(copied > 0);
    });
}

/// Shutdown right after `block_on`, with 100 µs quanta and busy goroutines on every P, 300
/// times (60 under qemu-user): the root goroutine is now and then preempted after it published its result (and
/// woke the joiner) but before it exited, and shutdown finds it Runnable and abandons it.
/// The abandon must not notify the joiner a second time (its Waiter is gone: "a Waiter was
/// notified twice", or a wake-up of garbage). Stress only (natively ~1 runtime in 10,000 hit
/// the window); `task::tests::abandon_after_done_does_not_notify_the_joiner_again` checks the
/// rule exactly. In a child process, so that an abort fails only this test.
#[test]
fn shutdown_right_after_a_preempted_root_goroutine_finished() {
    child_ok("finished_then_abandoned", &[]);
}

fn finished_then_abandoned_child() {
    /// Busy for about `d`, mostly in our own code (preemption is refused in the vDSO).
    fn spin(d: Duration) {
        let t = Instant::now();
        while t.elapsed() < d {
            black_box(busy(200));
        }
    }
    let configure = |i| Runtime::builder().procs(1 + i % 2);
    short_quanta_runtimes(300, 60, configure, |i, rt| {
        // The M that preempts the finished root runs these first, so shutdown begins before
        // it comes back to the root.
        for _ in 0..3 {
            drop(rt.spawn(|| {
                loop {
                    spin(Duration::from_micros(20));
                    gort::yield_now();
                }
            }));
        }
        let us = 100 + (i as u64 * 37) % 400;
        rt.block_on(move || {
            gort::go(move || spin(Duration::from_micros(us)))
                .join()
                .unwrap();
            spin(Duration::from_micros(us));
        });
    });
}

/// A goroutine of a runtime that was shut down was parked joining a goroutine of another
/// runtime; when that one finishes, the wake-up of the abandoned joiner must be discarded
/// (its runtime is gone). Runs in a child process, so that an abort fails only this test.
#[test]
fn finishing_a_goroutine_joined_from_a_shut_down_runtime_discards_the_wake_up() {
    child_ok("wake_abandoned", &[]);
}

fn wake_abandoned_child() {
    let rt = runtime(1);
    let other = runtime(1);
    let release = Arc::new(AtomicBool::new(false));
    let released = release.clone();
    let target = other.spawn(move || {
        // Relaxed: a flag polled in a loop (module docs).
        yield_until("the release", || released.load(Ordering::Relaxed));
        9
    });
    let joiner = rt.spawn(move || target.join().unwrap());
    wait_until("the joiner to park", || rt.stats().parks >= 1);
    rt.shutdown();
    assert_abandoned("the joiner", joiner.join());
    // Relaxed: see above.
    release.store(true, Ordering::Relaxed);
    settled(&other);
    other.shutdown();
}

/// Stacks go back to the OS when runtimes shut down: in a fresh process, the number of
/// stacks mapped after each of 5 create/run 10,000 goroutines/shutdown cycles does not grow.
#[test]
fn stacks_are_unmapped_across_runtime_lifetimes() {
    for procs in [1, 2, 8] {
        let stdout = child_ok("stacks", &[("GORT_SCHED_IT_PROCS", &procs.to_string())]);
        for line in stdout.lines().filter_map(|l| l.split_once("stacks mapped")) {
            eprintln!("GOMAXPROCS={procs}: stacks mapped{}", line.1);
        }
    }
}

fn stacks_child() {
    const GOROUTINES: usize = 10_000;
    const CYCLES: usize = 5;
    let procs: usize = std::env::var("GORT_SCHED_IT_PROCS")
        .unwrap()
        .parse()
        .unwrap();
    let mapped_in_fresh_runtime = || {
        let fresh = runtime(procs);
        let mapped = fresh.stats().stacks_mapped;
        fresh.shutdown();
        mapped
    };
    let initially = mapped_in_fresh_runtime();
    let mut series = Vec::new();
    for _ in 0..CYCLES {
        let rt = runtime(procs);
        let sum = rt.block_on(|| {
            let hs: Vec<JoinHandle<usize>> = (0..GOROUTINES)
                .map(|i| {
                    gort::go(move || {
                        gort::yield_now();
                        i
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
        });
        assert_eq!(sum, GOROUTINES * (GOROUTINES - 1) / 2);
        let during = rt.stats().stacks_mapped;
        assert!(during > 0);
        rt.shutdown();
        series.push(mapped_in_fresh_runtime());
    }
    println!("stacks mapped: initially {initially}, after each cycle {series:?}");
    let first = series[0];
    assert!(
        series.iter().all(|&m| m <= first),
        "stacks mapped keep growing: {series:?}"
    );
    assert!(
        first <= initially,
        "a shut-down runtime left stacks mapped: {initially} before, {first} after"
    );
}

/// 20 rounds of mixed spawning, yielding and joining at GOMAXPROCS=8, from goroutines and
/// from plain threads at once; every result is exact.
#[test]
fn stress_mixed_spawn_yield_join() {
    guarded(|| {
        const ROUNDS: u64 = 20;
        const ROOTS: u64 = 1_000;
        const FROM_THREADS: u64 = 250;
        let rt = Arc::new(runtime(8));
        let detached = Arc::new(AtomicUsize::new(0));
        let mut expected_detached = 0;
        for round in 0..ROUNDS {
            // Two plain threads spawn and join their own goroutines meanwhile.
            let threads: Vec<std::thread::JoinHandle<u64>> = (0..2u64)
                .map(|t| {
                    let rt = rt.clone();
                    std::thread::spawn(move || {
                        let hs: Vec<JoinHandle<u64>> = (0..FROM_THREADS)
                            .map(|i| {
                                rt.spawn(move || {
                                    for _ in 0..(i % 3) {
                                        gort::yield_now();
                                    }
                                    round * 1_000 + t * 100 + i
                                })
                            })
                            .collect();
                        hs.into_iter().map(|h| h.join().unwrap()).sum()
                    })
                })
                .collect();

            let inner = detached.clone();
            let total = rt.block_on(move || {
                let roots: Vec<JoinHandle<u64>> = (0..ROOTS)
                    .map(|i| {
                        let detached = inner.clone();
                        gort::go(move || {
                            for _ in 0..(i % 7) {
                                gort::yield_now();
                            }
                            let kids: Vec<JoinHandle<u64>> = (0..(i % 5))
                                .map(|j| {
                                    gort::go(move || {
                                        if j % 2 == 0 {
                                            gort::yield_now();
                                        }
                                        i * j + round
                                    })
                                })
                                .collect();
                            if i % 10 == 0 {
                                drop(gort::go(move || {
                                    gort::yield_now();
                                    bump(&detached);
                                }));
                            }
                            gort::yield_now();
                            kids.into_iter().map(|k| k.join().unwrap()).sum::<u64>() + i
                        })
                    })
                    .collect();
                roots.into_iter().map(|r| r.join().unwrap()).sum::<u64>()
            });
            let expected: u64 = (0..ROOTS)
                .map(|i| (0..(i % 5)).map(|j| i * j + round).sum::<u64>() + i)
                .sum();
            assert_eq!(total, expected, "round {round}");
            for (t, thread) in threads.into_iter().enumerate() {
                let t = t as u64;
                let expected: u64 = (0..FROM_THREADS).map(|i| round * 1_000 + t * 100 + i).sum();
                assert_eq!(thread.join().unwrap(), expected, "round {round} thread {t}");
            }
            expected_detached += (0..ROOTS).filter(|i| i % 10 == 0).count();
        }
        wait_until("detached goroutines to finish", || {
            count(&detached) == expected_detached
        });
        let stats = settled(&rt);
        let per_round =
            ROOTS + (0..ROOTS).map(|i| i % 5).sum::<u64>() + ROOTS / 10 + 2 * FROM_THREADS + 1;
        assert_eq!(stats.spawned, ROUNDS * per_round);
        eprintln!("stress: {stats}");
        Arc::into_inner(rt).expect("the only reference").shutdown();
    })
}

// ---------------------------------------------------------------------------------------------
// Child processes.

const CHILD_ENV: &str = "GORT_SCHED_IT_CHILD";

/// Runs the `child` test of this binary in a new process with `role` (bounded by the hang
/// guard); see [`common::child_ok`].
fn child_ok(role: &str, env: &[(&str, &str)]) -> String {
    common::child_ok(CHILD_ENV, role, env, HANG_GUARD)
}

/// The entry point of every child process; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    match role.as_str() {
        "stacks" => stacks_child(),
        "abandon_cycle" => abandon_cycle_child(),
        "wake_abandoned" => wake_abandoned_child(),
        "finished_then_abandoned" => finished_then_abandoned_child(),
        "new_ms" => new_ms_child(),
        "stale_ack" => stale_ack_child(),
        other => panic!("unknown child role {other}"),
    }
    println!("{role} ok");
}
