//! Integration tests of the syscall handoff, sysmon, foreign blocking and `lock_os_thread`.
//!
//! Scenarios where a bug shows up as a hang (a P that is never handed off, a locked M that is
//! never woken, the thread limit) run in child processes under a generous timeout; the rest run
//! in-process under the shared hang guard, at 1, 2 and 8 Ps where scheduling matters. Nothing
//! asserts on timing: "B progressed while A was blocked" is B counting its iterations while a
//! flag says A is inside the blocking call.
//!
//! Atomics: flags and counters publish no data of their own; `Relaxed` unless noted.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gort::Runtime;

/// Hang guard for every test and child process (far above what any needs).
const HANG_GUARD: Duration = Duration::from_secs(120);
const CHILD_ENV: &str = "GORT_SYSCALL_IT_CHILD";

fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    common::run_guarded(HANG_GUARD, body)
}

fn runtime(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

fn run_child(role: &str, env: &[(&str, &str)]) -> Output {
    common::run_child_test(CHILD_ENV, role, env, &[], HANG_GUARD)
}

fn assert_child_ok(role: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("{role} ok")),
        "{}",
        common::describe(output)
    );
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// A blocking pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: freshly created descriptors, owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// read(2) of one byte, blocking.
fn read_byte(fd: i32) -> isize {
    let mut b = 0u8;
    // SAFETY: one writable byte.
    unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) }
}

fn write_bytes(fd: i32, n: usize) {
    let buf = vec![b'x'; n];
    // SAFETY: `buf` holds `n` readable bytes.
    let w = unsafe { libc::write(fd, buf.as_ptr().cast(), n) };
    assert_eq!(w, n as isize);
}

// ---------------------------------------------------------------------------------------------
// A blocks 200 ms; B must progress meanwhile (GOMAXPROCS = 1, child processes).

/// How A blocks.
#[derive(Clone, Copy)]
enum Block {
    /// read(2) on a blocking pipe inside `gort::syscall`.
    SyscallRead,
    /// The same read without telling gort.
    PlainRead,
    /// `std::thread::sleep`.
    Sleep,
    /// A `std::sync::Mutex` held by a plain thread for 200 ms.
    StdMutex,
}

/// Goroutine A runs `block` (which sets `a_blocked` just before it blocks); goroutine B yields
/// until A is done, counting the iterations that saw A blocked. Returns B's count.
fn b_counts_while_a_blocks(
    a_blocked: Arc<AtomicBool>,
    block: impl FnOnce() + Send + 'static,
) -> u64 {
    let a_done = Arc::new(AtomicBool::new(false));
    let a = {
        let (a_blocked, a_done) = (a_blocked.clone(), a_done.clone());
        gort::go(move || {
            block();
            a_blocked.store(false, Ordering::SeqCst);
            a_done.store(true, Ordering::SeqCst);
        })
    };
    let b = gort::go(move || {
        let mut seen = 0u64;
        while !a_done.load(Ordering::SeqCst) {
            if a_blocked.load(Ordering::SeqCst) {
                seen += 1;
            }
            gort::yield_now();
        }
        seen
    });
    a.join().unwrap();
    b.join().unwrap()
}

/// Runs in the child: returns B's iterations seen while A was blocked.
fn blocked_a_progressing_b(procs: usize, how: Block) -> u64 {
    let rt = runtime(procs);
    let count = rt.block_on(move || {
        let a_blocked = Arc::new(AtomicBool::new(false));
        let (r, w) = pipe();
        let lock = Arc::new(Mutex::new(()));
        let holder = {
            let lock = lock.clone();
            let (held_tx, held_rx) = std::sync::mpsc::channel();
            let t = std::thread::spawn(move || {
                let _g = lock.lock().unwrap();
                held_tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(200));
            });
            held_rx.recv().unwrap();
            t
        };
        let r = Arc::new(r);
        let writer = std::thread::spawn({
            let r = r.clone();
            move || {
                std::thread::sleep(Duration::from_millis(200));
                write_bytes(std::os::fd::AsRawFd::as_raw_fd(&w), 1);
                drop(r);
            }
        });
        let marker = a_blocked.clone();
        let seen = b_counts_while_a_blocks(a_blocked, move || {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&*r);
            marker.store(true, Ordering::SeqCst);
            match how {
                Block::SyscallRead => assert_eq!(gort::syscall(|| read_byte(fd)), 1),
                Block::PlainRead => assert_eq!(read_byte(fd), 1),
                Block::Sleep => std::thread::sleep(Duration::from_millis(200)),
                Block::StdMutex => drop(lock.lock().unwrap()),
            }
        });
        writer.join().unwrap();
        holder.join().unwrap();
        seen
    });
    let st = rt.stats();
    println!("{st}");
    rt.shutdown();
    count
}

fn check_progress(role: &str) {
    let output = run_child(role, &[]);
    assert_child_ok(role, &output);
}

#[test]
fn syscall_read_does_not_stall_others_procs_1() {
    check_progress("syscall_read_1");
}

#[test]
fn syscall_read_does_not_stall_others_procs_2() {
    check_progress("syscall_read_2");
}

#[test]
fn plain_read_does_not_stall_others() {
    check_progress("plain_read_1");
}

#[test]
fn thread_sleep_does_not_stall_others() {
    check_progress("sleep_1");
}

#[test]
fn std_mutex_does_not_stall_others() {
    check_progress("mutex_1");
}

// ---------------------------------------------------------------------------------------------
// 1,000 concurrent blocking syscalls (child process: up to a thousand threads).

fn task_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// One round: `n` goroutines block in read(2) on one pipe until all have entered; then the
/// test writes `n` bytes. Returns the number of completed reads.
fn blocking_round(n: usize) -> usize {
    let (r, w) = pipe();
    let r = Arc::new(r);
    let entered = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (r, entered, done) = (r.clone(), entered.clone(), done.clone());
            gort::go(move || {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&*r);
                entered.fetch_add(1, Ordering::Relaxed);
                if gort::syscall(|| read_byte(fd)) == 1 {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let writer = std::thread::spawn({
        let entered = entered.clone();
        move || {
            while entered.load(Ordering::Relaxed) < n {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            write_bytes(std::os::fd::AsRawFd::as_raw_fd(&w), n);
        }
    });
    for h in handles {
        h.join().unwrap();
    }
    writer.join().unwrap();
    done.load(Ordering::Relaxed)
}

fn thousand_syscalls_child() {
    const N: usize = 1000;
    let rt = runtime(2);
    let before = task_count();
    let first = rt.block_on(|| blocking_round(N));
    let after_first = task_count();
    let created_first = rt.stats().threads;
    let second = rt.block_on(|| blocking_round(N));
    let after_second = task_count();
    let st = rt.stats();
    println!("{st}");
    println!("tasks: before {before}, after round 1 {after_first}, after round 2 {after_second}");
    assert_eq!(first, N);
    assert_eq!(second, N);
    // At most one M per blocked goroutine, plus the Ps' and a few helpers.
    assert!(after_first <= before + N + 16, "{after_first} threads");
    // The second round reuses the idle Ms of the first.
    let created_second = st.threads - created_first;
    assert!(
        created_second <= (created_first / 4).max(32),
        "round 2 created {created_second} Ms (round 1: {created_first})"
    );
    assert!(after_second <= after_first + 32, "{after_second} threads");
    rt.shutdown();
}

#[test]
fn thousand_blocking_syscalls_complete_and_reuse_threads() {
    let output = run_child("thousand", &[]);
    assert_child_ok("thousand", &output);
}

// ---------------------------------------------------------------------------------------------
// The syscall watcher: an idle M woken on the syscall's CPU takes the P (child process).

/// A runs 30 ms of yields (sysmon backs off: no P idle, nothing to retake), then blocks in
/// `gort::syscall(read)` with B queued; a plain thread writes 50 ms after A says it blocks.
/// Returns B's iterations while A was blocked.
fn backed_off_then_blocked() -> u64 {
    let (r, w) = pipe();
    let a_blocked = Arc::new(AtomicBool::new(false));
    let writer = std::thread::spawn({
        let a_blocked = a_blocked.clone();
        move || {
            while !a_blocked.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(50));
            write_bytes(std::os::fd::AsRawFd::as_raw_fd(&w), 1);
        }
    });
    let marker = a_blocked.clone();
    let seen = b_counts_while_a_blocks(a_blocked, move || {
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            gort::yield_now();
        }
        let fd = std::os::fd::AsRawFd::as_raw_fd(&r);
        marker.store(true, Ordering::SeqCst);
        assert_eq!(gort::syscall(|| read_byte(fd)), 1);
    });
    writer.join().unwrap();
    seen
}

/// A goroutine whose P sysmon took while it slept in the kernel without `gort::syscall` parks
/// on a channel at its next runtime call, still holding the channel's lock: the park must
/// release it without waiting for a P (`Action::ParkNoP`). Waiting first, as any other runtime
/// call does, kept the lock while the goroutine that had been given the P tried the same
/// channel — and blocked its M, with the only P, on that lock: a deadlock (the chan suite hung
/// 3 runs in 10 under 100 µs quanta and two busy loops).
fn park_without_p_child() {
    let rt = runtime(1);
    let detects = rt.block_on(|| {
        // sysmon starts with the first M; give it a moment to look around.
        std::thread::sleep(Duration::from_millis(20));
        gort::stats().foreign_detection
    });
    if !detects {
        rt.shutdown();
        println!("foreign-blocking detection is unavailable here (qemu-user): skipped");
        println!("park_without_p ok");
        return;
    }
    let (got, st) = rt.block_on(|| {
        let (tx, rx) = gort::chan::bounded::<u32>(0);
        let started = Arc::new(AtomicBool::new(false));
        let flag = started.clone();
        let a = gort::go(move || {
            flag.store(true, Ordering::SeqCst);
            // Asleep in the kernel without `gort::syscall`, the P in hand: sysmon hands the P
            // to an M for B.
            std::thread::sleep(Duration::from_millis(100));
            // Back without a P: the receive finds no sender waiting and parks.
            rx.recv().unwrap()
        });
        while !started.load(Ordering::SeqCst) {
            gort::yield_now();
        }
        // B offers the value without waiting, again and again: each try takes the lock.
        let mut v = 7;
        loop {
            match tx.try_send(v) {
                Ok(()) => break,
                Err(gort::chan::TrySendError::Full(back)) => v = back,
                Err(e) => panic!("try_send: {e:?}"),
            }
            std::hint::spin_loop();
        }
        (a.join().unwrap(), gort::stats())
    });
    assert_eq!(got, 7);
    assert!(
        st.handoffs_foreign >= 1,
        "sysmon never took A's P: the case was not exercised\n{st}"
    );
    rt.shutdown();
    println!("park_without_p ok");
}

#[test]
fn park_after_losing_the_p_releases_the_channel_lock() {
    let out = run_child("park_without_p", &[]);
    assert_child_ok("park_without_p", &out);
}

/// GOMAXPROCS = 1 with spare Ms: B progresses while A blocks, and (within a few rounds: the
/// spare M may be the timer sleeper or the netpoll blocker, which are never woken for this) a
/// watcher, not sysmon, took the P. The watcher's CAS against exitsyscall's is the one
/// `syscall_storm` races in bulk.
fn watcher_child() {
    // Strict: a watcher is an idle M pinned to the syscall's CPU, and a loaded machine (the
    // rest of the suite) could have adaptive pinning relaxed.
    let rt = Runtime::builder()
        .procs(1)
        .pin_strict(true)
        .build()
        .unwrap();
    // Four goroutines blocked in syscalls at once: three Ms besides the P's, idle afterwards.
    assert_eq!(rt.block_on(|| blocking_round(4)), 4);
    let mut rounds = 0;
    while rt.stats().handoffs_syscall_watched == 0 {
        rounds += 1;
        assert!(
            rounds <= 20,
            "no watcher took the P in 20 rounds:\n{}",
            rt.stats()
        );
        let seen = rt.block_on(backed_off_then_blocked);
        assert!(seen > 0, "B never ran while A was blocked (round {rounds})");
    }
    let st = rt.stats();
    println!("{st}");
    assert!(st.handoffs_syscall_work >= st.handoffs_syscall_watched);
    rt.shutdown();
}

#[test]
fn syscall_watcher_takes_the_p() {
    let output = run_child("watcher", &[]);
    assert_child_ok("watcher", &output);
}

// ---------------------------------------------------------------------------------------------
// Stress: syscalls racing sysmon's retake (exitsyscall's CAS against retake's), in-process.

fn syscall_storm(procs: usize) {
    let rt = runtime(procs);
    let total = rt.block_on(|| {
        let handles: Vec<_> = (0..8u64)
            .map(|i| {
                gort::go(move || {
                    let mut sum = 0u64;
                    for k in 0..1500u64 {
                        match (k + i) % 4 {
                            // SAFETY: getpid has no preconditions.
                            0 => sum += (gort::syscall(|| unsafe { libc::getpid() }) > 0) as u64,
                            1 => {
                                gort::syscall(|| std::thread::sleep(Duration::from_micros(40)));
                                sum += 1;
                            }
                            2 => {
                                gort::yield_now();
                                sum += 1;
                            }
                            _ => {
                                sum += gort::go(|| 1u64).join().unwrap();
                            }
                        }
                    }
                    sum
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(total, 8 * 1500);
    let st = rt.stats();
    assert!(st.syscalls >= 8 * 1500 / 2, "{st}");
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// lock_os_thread

/// A locked goroutine keeps its thread across 10,000 yields, and no other goroutine runs on
/// that thread meanwhile.
fn locked_keeps_its_thread(procs: usize) {
    let rt = runtime(procs);
    rt.block_on(|| {
        let locked_tid = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let intruders = Arc::new(Mutex::new(HashSet::new()));
        let others: Vec<_> = (0..4)
            .map(|_| {
                let (locked_tid, stop, intruders) =
                    (locked_tid.clone(), stop.clone(), intruders.clone());
                gort::go(move || {
                    let mut runs = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        let t = locked_tid.load(Ordering::SeqCst);
                        if t != 0 && gettid() as u64 == t {
                            intruders.lock().unwrap().insert(gettid());
                        }
                        runs += 1;
                        gort::yield_now();
                    }
                    runs
                })
            })
            .collect();
        let locked = {
            let locked_tid = locked_tid.clone();
            gort::go(move || {
                gort::lock_os_thread();
                let tid = gettid();
                locked_tid.store(tid as u64, Ordering::SeqCst);
                let mut moved = 0;
                for _ in 0..10_000 {
                    gort::yield_now();
                    if gettid() != tid {
                        moved += 1;
                    }
                }
                assert_eq!(gort::stats().threads_locked, 1);
                locked_tid.store(0, Ordering::SeqCst);
                gort::unlock_os_thread();
                moved
            })
        };
        assert_eq!(
            locked.join().unwrap(),
            0,
            "the locked goroutine changed threads"
        );
        stop.store(true, Ordering::SeqCst);
        for h in others {
            assert!(h.join().unwrap() > 0);
        }
        let intruders = intruders.lock().unwrap();
        assert!(
            intruders.is_empty(),
            "other goroutines ran on the locked thread"
        );
    });
    assert_eq!(rt.stats().threads_locked, 0);
    rt.shutdown();
}

/// Nesting: locked until as many unlocks as locks; parking while locked keeps the thread; an
/// unlock without a lock does nothing.
fn lock_nesting_and_parking(procs: usize) {
    let rt = runtime(procs);
    rt.block_on(|| {
        gort::unlock_os_thread(); // no-op
        let (tx, rx) = gort::chan::bounded::<u32>(0);
        let h = gort::go(move || {
            gort::lock_os_thread();
            gort::lock_os_thread();
            let tid = gettid();
            gort::unlock_os_thread();
            // Still locked once: parks on the channel and comes back to the same thread.
            for _ in 0..100 {
                let v = rx.recv().unwrap();
                assert_eq!(gettid(), tid, "moved while locked (value {v})");
                gort::sleep(Duration::from_micros(50));
                assert_eq!(gettid(), tid, "moved while locked across a sleep");
            }
            assert_eq!(gort::stats().threads_locked, 1);
            gort::unlock_os_thread();
            gort::unlock_os_thread(); // extra: no-op
            assert_eq!(gort::stats().threads_locked, 0);
        });
        for i in 0..100 {
            tx.send(i).unwrap();
        }
        h.join().unwrap();
    });
    rt.shutdown();
}

/// A goroutine that returns while locked takes its thread with it.
fn locked_exit_ends_its_thread(procs: usize) {
    let rt = runtime(procs);
    let tid = rt.block_on(|| {
        gort::go(|| {
            gort::lock_os_thread();
            gettid()
        })
        .join()
        .unwrap()
    });
    let path = format!("/proc/self/task/{tid}");
    let mut waited = Duration::ZERO;
    while std::path::Path::new(&path).exists() {
        assert!(
            waited < HANG_GUARD / 2,
            "thread {tid} of a locked goroutine lives on"
        );
        std::thread::sleep(Duration::from_millis(5));
        waited += Duration::from_millis(5);
    }
    // The runtime still works.
    assert_eq!(rt.block_on(|| gort::go(|| 7).join().unwrap()), 7);
    rt.shutdown();
}

at_procs!(
    syscall_storm,
    parking_inside_syscall,
    locked_keeps_its_thread,
    lock_nesting_and_parking,
    locked_exit_ends_its_thread
);

// ---------------------------------------------------------------------------------------------
// Plain threads, thread limit.

#[test]
fn syscall_and_lock_from_a_plain_thread() {
    assert_eq!(gort::syscall(|| 42), 42);
    gort::lock_os_thread();
    gort::unlock_os_thread();
}

/// Runtime calls that park inside `gort::syscall`'s closure (the goroutine leaves the syscall
/// state first, maybe on another M if sysmon took the P meanwhile), nested syscalls.
fn parking_inside_syscall(procs: usize) {
    let rt = runtime(procs);
    let total = rt.block_on(|| {
        let mut total = 0;
        for i in 0..200 {
            total += gort::syscall(|| {
                if i % 2 == 0 {
                    // Long enough for sysmon to retake the P now and then.
                    std::thread::sleep(Duration::from_micros(50));
                }
                gort::syscall(|| gort::go(|| 5).join().unwrap())
            });
        }
        total
    });
    assert_eq!(total, 1000);
    rt.shutdown();
}

fn thread_limit_child() {
    let rt = Runtime::builder().procs(1).max_threads(2).build().unwrap();
    let (r, _w) = pipe();
    let r = Arc::new(r);
    rt.block_on(move || {
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let r = r.clone();
                gort::go(move || {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&*r);
                    gort::syscall(|| read_byte(fd));
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    println!("thread_limit SURVIVED");
}

#[test]
fn exceeding_max_threads_is_fatal() {
    let output = run_child("thread_limit", &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{}", common::describe(&output));
    assert!(
        stderr.contains("gort: fatal: thread limit of 2 exceeded"),
        "{}",
        common::describe(&output)
    );
}

/// The entry point of every child process; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    match role.as_str() {
        "thousand" => thousand_syscalls_child(),
        "thread_limit" => thread_limit_child(),
        "watcher" => watcher_child(),
        "park_without_p" => park_without_p_child(),
        _ => {
            let (how, procs) = role.rsplit_once('_').unwrap();
            let procs: usize = procs.parse().unwrap();
            let how = match how {
                "syscall_read" => Block::SyscallRead,
                "plain_read" => Block::PlainRead,
                "sleep" => Block::Sleep,
                "mutex" => Block::StdMutex,
                _ => panic!("unknown role {role}"),
            };
            if !matches!(how, Block::SyscallRead) {
                let rt = runtime(1);
                let detects = rt.block_on(|| {
                    // sysmon starts with the first M; give it a moment to look around.
                    std::thread::sleep(Duration::from_millis(20));
                    gort::stats().foreign_detection
                });
                rt.shutdown();
                if !detects {
                    println!("foreign-blocking detection is unavailable here (qemu-user): skipped");
                    println!("{role} ok");
                    return;
                }
            }
            let seen = blocked_a_progressing_b(procs, how);
            println!("B ran {seen} times while A was blocked");
            assert!(seen > 0, "B never ran while A was blocked");
        }
    }
    println!("{role} ok");
}
