//! Integration tests of `gort::sync` (Mutex, RwLock, Condvar, Once, WaitGroup) and
//! `gort::local!`, every scenario at GOMAXPROCS = 1, 2 and 8 (8 oversubscribes a 2-core
//! machine) unless it is about one P count in particular.
//!
//! Each test builds its own [`Runtime`] and runs its body on a plain thread under a generous
//! hang guard ([`HANG_GUARD`]): a lost wake-up shows up as a failure naming the test, not as a
//! stuck binary. Nothing here asserts on timing, except that a timed wait never returns
//! before its timeout (its contract).
//!
//! Atomics: the counters and flags below publish no data of their own; they are read after a
//! `join` or `wait` (which synchronise with the goroutines), or polled, so `Relaxed`
//! suffices unless a comment says otherwise.

#[macro_use]
mod common;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gort::Runtime;
use gort::sync::{Condvar, Mutex, Once, RwLock, WaitGroup};

/// How long any one test (or a wait inside it) may take before it counts as hung.
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
/// [`EXPECTED`] or is one of gort's own messages that the tests provoke.
fn quiet_expected_panics() {
    static INSTALL: std::sync::Once = std::sync::Once::new();
    INSTALL.call_once(|| {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = panic_message(info.payload());
            let expected = |m: &str| {
                m.contains(EXPECTED)
                    || m.contains("negative WaitGroup")
                    || m.contains("used by its own initialiser")
            };
            if !message.is_some_and(expected) {
                default_hook(info);
            }
        }));
    });
}

/// The message of a panic payload, if it is a string.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// A runtime of its own for one test.
fn runtime(procs: usize) -> Runtime {
    Runtime::builder()
        .procs(procs)
        .build()
        .expect("building a runtime")
}

/// In a goroutine (or thread): yields until `cond` holds; panics after [`HANG_GUARD`].
fn yield_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < HANG_GUARD, "gave up waiting for {what}");
        gort::yield_now();
    }
}

fn bump(counter: &AtomicUsize) -> usize {
    // Relaxed: a counter (module docs).
    counter.fetch_add(1, Ordering::Relaxed)
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

at_procs!(
    mutex_contended_counter_is_exact,
    mutex_shared_by_threads_and_goroutines,
    mutex_try_lock_and_guard_drop,
    mutex_panic_while_locked_unlocks_without_poisoning,
    starved_waiters_get_the_mutex_in_fifo_order,
    starved_waiter_beats_a_barging_goroutine,
    rwlock_readers_share_the_lock,
    rwlock_writers_exclude_everyone,
    rwlock_writer_is_not_starved_by_readers,
    condvar_producers_and_consumers,
    condvar_notify_all_wakes_every_waiter,
    condvar_wait_timeout,
    condvar_timeouts_racing_notifications,
    once_runs_exactly_once,
    waitgroup_100k_goroutines,
    waitgroup_reuse_and_threads,
    local_values_are_per_goroutine_across_yields_and_threads,
    local_values_are_lazy_and_dropped_at_exit,
);

// ---------------------------------------------------------------------------------------------
// Mutex.

/// A counter that is not atomic: increments are exact only under mutual exclusion.
struct Plain(Cell<u64>);
// SAFETY: only accessed under the tests' mutexes (that is what the tests check).
unsafe impl Sync for Plain {}

/// 8 goroutines × 100,000 increments of a plain (non-atomic) counter under one mutex: the
/// total is exact. A second, unprotected-looking read-modify-write split around a yield makes
/// a broken exclusion visible even at one P.
fn mutex_contended_counter_is_exact(procs: usize) {
    const GOROUTINES: u64 = 8;
    const INCREMENTS: u64 = 100_000;
    let rt = runtime(procs);
    let total = rt.block_on(|| {
        let m = Arc::new(Mutex::new(0u64));
        let split = Arc::new(Mutex::new(()));
        let plain = Arc::new(Plain(Cell::new(0)));
        let hs: Vec<_> = (0..GOROUTINES)
            .map(|_| {
                let (m, split, plain) = (m.clone(), split.clone(), plain.clone());
                gort::go(move || {
                    for i in 0..INCREMENTS {
                        *m.lock() += 1;
                        if i % 1000 == 0 {
                            let _g = split.lock();
                            let v = plain.0.get();
                            gort::yield_now();
                            plain.0.set(v + 1);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(plain.0.get(), GOROUTINES * INCREMENTS / 1000);
        *m.lock()
    });
    assert_eq!(total, GOROUTINES * INCREMENTS);
    rt.shutdown();
}

/// Plain OS threads (which block) and goroutines (which park) contend for one mutex.
fn mutex_shared_by_threads_and_goroutines(procs: usize) {
    const EACH: u64 = 50_000;
    let rt = runtime(procs);
    let m = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            std::thread::spawn(move || {
                for _ in 0..EACH {
                    *m.lock() += 1;
                }
            })
        })
        .collect();
    let goroutines: Vec<_> = (0..4)
        .map(|_| {
            let m = m.clone();
            rt.spawn(move || {
                for i in 0..EACH {
                    let mut g = m.lock();
                    *g += 1;
                    if i % 512 == 0 {
                        // Hold it across a scheduling point: threads must block meanwhile.
                        gort::yield_now();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for g in goroutines {
        g.join().unwrap();
    }
    assert_eq!(*m.lock(), 7 * EACH);
    rt.shutdown();
}

/// `try_lock` fails while the mutex is held (by a goroutine or a thread) and succeeds once
/// the guard is dropped; `into_inner`, `get_mut` and `is_locked` agree.
fn mutex_try_lock_and_guard_drop(procs: usize) {
    let rt = runtime(procs);
    let m = Arc::new(Mutex::new(vec![1]));
    let held = Arc::new(AtomicBool::new(false));
    let release = Arc::new(AtomicBool::new(false));
    let holder = {
        let (m, held, release) = (m.clone(), held.clone(), release.clone());
        rt.spawn(move || {
            let mut g = m.lock();
            g.push(2);
            held.store(true, Ordering::Relaxed);
            yield_until("the release signal", || release.load(Ordering::Relaxed));
            g.push(3);
        })
    };
    yield_until("the holder to lock", || held.load(Ordering::Relaxed));
    assert!(m.is_locked());
    assert!(m.try_lock().is_none(), "try_lock succeeded while held");
    let probe = {
        let m = m.clone();
        rt.spawn(move || m.try_lock().is_none())
    };
    assert!(
        probe.join().unwrap(),
        "try_lock in a goroutine succeeded while held"
    );
    release.store(true, Ordering::Relaxed);
    holder.join().unwrap();
    {
        let g = m
            .try_lock()
            .expect("try_lock failed after the guard was dropped");
        assert_eq!(*g, [1, 2, 3]);
        assert!(m.is_locked());
    }
    assert!(!m.is_locked());
    let mut m = Arc::try_unwrap(m).unwrap();
    m.get_mut().push(4);
    assert_eq!(m.into_inner(), [1, 2, 3, 4]);
    rt.shutdown();
}

/// A goroutine that panics while holding the guard unlocks the mutex (the guard drops while
/// unwinding); the next locker gets the data as left, with no poisoning.
fn mutex_panic_while_locked_unlocks_without_poisoning(procs: usize) {
    let rt = runtime(procs);
    let m = Arc::new(Mutex::new(0));
    let m2 = m.clone();
    let r = rt
        .spawn(move || {
            let mut g = m2.lock();
            *g = 7;
            panic!("boom while locked {EXPECTED}");
        })
        .join();
    assert!(r.is_err());
    let m3 = m.clone();
    let v = rt.block_on(move || *m3.lock());
    assert_eq!(v, 7);
    rt.shutdown();
}

/// Starvation mode hands the mutex over in FIFO order. The barger holds the mutex while five
/// waiters queue one after the other (each is parked before the next starts), keeps holding it
/// past the 1 ms threshold, then loops: unlock, relock at once, yield while holding. The
/// first woken waiter loses to the barger once, finds it waited more than 1 ms and switches
/// the mutex to starvation mode; from then on every unlock hands off to the head waiter.
///
/// At one P the schedule is deterministic: the barger relocks once before the first woken
/// waiter runs; that waiter loses, switches to starvation mode and queues again at the front;
/// from then on the five waiters get the mutex in queue order, back to back, and the barger
/// (queued behind them) never gets it in between. At 2 and 8 Ps, every waiter must get the
/// mutex, but the order is not asserted: a woken waiter that lost is briefly off the queue
/// while it goes back to its front, and an unlock in that window (legitimately, as in Go)
/// serves the next waiter first; an M preempted by the OS there can be overtaken by several.
fn starved_waiters_get_the_mutex_in_fifo_order(procs: usize) {
    const WAITERS: usize = 5;
    let rt = runtime(procs);
    let (order, barges) = rt.block_on(|| {
        let m = Arc::new(Mutex::new(()));
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let barges = Arc::new(AtomicUsize::new(0));
        let served = Arc::new(AtomicUsize::new(0));
        let g = m.lock();
        let mut hs = Vec::new();
        for i in 0..WAITERS {
            let (m2, order, barges, served) =
                (m.clone(), order.clone(), barges.clone(), served.clone());
            hs.push(gort::go(move || {
                let _g = m2.lock();
                order.lock().unwrap().push((i, count(&barges)));
                bump(&served);
            }));
            yield_until("the waiter to park", || m.__parked() == i + 1);
        }
        // Every waiter has now waited longer than the starvation threshold.
        gort::sleep(Duration::from_millis(3));
        drop(g);
        let start = Instant::now();
        loop {
            let g = m.lock();
            if count(&served) == WAITERS {
                break;
            }
            bump(&barges);
            gort::yield_now();
            drop(g);
            assert!(
                start.elapsed() < HANG_GUARD,
                "the waiters never got the mutex"
            );
        }
        for h in hs {
            h.join().unwrap();
        }
        let order = order.lock().unwrap().clone();
        (order, count(&barges))
    });
    let mut ids: Vec<usize> = order.iter().map(|&(i, _)| i).collect();
    if procs == 1 {
        assert_eq!(ids, (0..WAITERS).collect::<Vec<_>>(), "hand-off order");
        let seen: Vec<usize> = order.iter().map(|&(_, b)| b).collect();
        assert_eq!(
            seen,
            vec![1; WAITERS],
            "the barger got in between: {order:?}"
        );
        assert!(barges >= 1);
    } else {
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..WAITERS).collect::<Vec<_>>(),
            "every waiter exactly once"
        );
    }
    rt.shutdown();
}

/// A goroutine that grabs and releases the mutex in a hot loop (barging: it is always
/// running when the mutex frees) does not keep a waiter out: the waiter, after waiting
/// more than 1 ms, switches the mutex to starvation mode and gets it handed over. Without
/// starvation mode the waiter would lose practically every race for as long as the barger
/// runs; here the barger stops only when the waiter got the mutex (or at the hang guard).
fn starved_waiter_beats_a_barging_goroutine(procs: usize) {
    let rt = runtime(procs);
    let m = Arc::new(Mutex::new(0u64));
    let got_it = Arc::new(AtomicBool::new(false));
    let barging = Arc::new(AtomicBool::new(false));
    let barger = {
        let (m, got_it, barging) = (m.clone(), got_it.clone(), barging.clone());
        rt.spawn(move || {
            let start = Instant::now();
            let mut rounds = 0u64;
            while !got_it.load(Ordering::Relaxed) {
                let mut g = m.lock();
                barging.store(true, Ordering::Relaxed);
                // Hold it a little, with no scheduling point.
                let t = Instant::now();
                while t.elapsed() < Duration::from_micros(20) {
                    std::hint::spin_loop();
                }
                *g += 1;
                rounds += 1;
                if procs == 1 && rounds % 64 == 0 {
                    // At one P the waiter runs only when we let it: while we hold the mutex,
                    // so that it finds it locked and keeps losing until it starves.
                    gort::yield_now();
                }
                drop(g);
                assert!(
                    start.elapsed() < HANG_GUARD,
                    "the waiter starved ({rounds} barging rounds)"
                );
            }
            rounds
        })
    };
    let waiter = {
        let (m, got_it, barging) = (m.clone(), got_it.clone(), barging.clone());
        rt.spawn(move || {
            yield_until("the barger to start", || barging.load(Ordering::Relaxed));
            let g = m.lock();
            got_it.store(true, Ordering::Relaxed);
            *g
        })
    };
    let seen = waiter.join().unwrap();
    let rounds = barger.join().unwrap();
    assert!(rounds >= seen);
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// RwLock.

/// Many readers hold the lock at once: each waits (yielding, holding its read lock) until all
/// are inside, which would never happen if readers excluded each other.
fn rwlock_readers_share_the_lock(procs: usize) {
    const READERS: usize = 16;
    let rt = runtime(procs);
    let rw = Arc::new(RwLock::new(5));
    let inside = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..READERS)
        .map(|_| {
            let (rw, inside) = (rw.clone(), inside.clone());
            rt.spawn(move || {
                let g = rw.read();
                bump(&inside);
                yield_until("every reader inside", || count(&inside) == READERS);
                assert!(
                    rw.try_read().is_some(),
                    "try_read failed with only readers in"
                );
                assert!(
                    rw.try_write().is_none(),
                    "try_write succeeded among readers"
                );
                *g
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 5);
    }
    assert!(rw.try_write().is_some());
    rt.shutdown();
}

/// Writers exclude readers and each other: a writer updates two fields with a yield in
/// between; readers never see them differ; the writers' increments add up.
fn rwlock_writers_exclude_everyone(procs: usize) {
    const WRITERS: u64 = 4;
    const WRITES: u64 = 2_000;
    let rt = runtime(procs);
    let rw = Arc::new(RwLock::new((0u64, 0u64)));
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (rw, stop) = (rw.clone(), stop.clone());
            rt.spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let g = rw.read();
                    assert_eq!(g.0, g.1, "a reader saw a half-done write");
                    drop(g);
                    reads += 1;
                    gort::yield_now();
                }
                reads
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let rw = rw.clone();
            rt.spawn(move || {
                for i in 0..WRITES {
                    let mut g = rw.write();
                    g.0 += 1;
                    if i % 8 == 0 {
                        gort::yield_now();
                    }
                    g.1 += 1;
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    let (a, b) = *rw.read();
    assert_eq!((a, b), (WRITERS * WRITES, WRITERS * WRITES));
    rt.shutdown();
}

/// Readers overlap continuously (each yields while holding its read lock, so at any moment
/// some reader holds it); a writer still gets in, because once it waits new readers queue
/// behind it (writer preference). Without it, this would spin until the hang guard.
fn rwlock_writer_is_not_starved_by_readers(procs: usize) {
    const READERS: usize = 6;
    let rt = runtime(procs);
    let rw = Arc::new(RwLock::new(0u64));
    let written = Arc::new(AtomicBool::new(false));
    let reading = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (rw, written, reading) = (rw.clone(), written.clone(), reading.clone());
            rt.spawn(move || {
                let mut rounds = 0u64;
                let mut g = rw.read();
                bump(&reading);
                while !written.load(Ordering::Relaxed) {
                    // Take the next read lock before dropping this one: the lock is never free
                    // of readers unless a writer blocks new ones.
                    gort::yield_now();
                    let next = rw.try_read();
                    drop(g);
                    g = match next {
                        Some(n) => n,
                        None => rw.read(), // a writer is waiting: queue behind it
                    };
                    rounds += 1;
                }
                drop(g);
                rounds
            })
        })
        .collect();
    let writer = {
        let (rw, written, reading) = (rw.clone(), written.clone(), reading.clone());
        rt.spawn(move || {
            yield_until("the readers to start", || count(&reading) == READERS);
            *rw.write() += 1;
            written.store(true, Ordering::Relaxed);
        })
    };
    writer.join().unwrap();
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(*rw.read(), 1);
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Condvar.

/// Producers push numbers into a bounded queue, consumers pop them; both sides wait on
/// condition variables (`notify_one`), and a plain thread is one of the consumers. Every
/// number is consumed exactly once.
fn condvar_producers_and_consumers(procs: usize) {
    const PRODUCERS: u64 = 4;
    const ITEMS: u64 = 5_000;
    const CAP: usize = 8;
    const CONSUMERS: usize = 3;
    struct Q {
        items: Mutex<(VecDeque<u64>, bool)>,
        not_empty: Condvar,
        not_full: Condvar,
    }
    let rt = runtime(procs);
    let q = Arc::new(Q {
        items: Mutex::new((VecDeque::new(), false)),
        not_empty: Condvar::new(),
        not_full: Condvar::new(),
    });
    let consume = |q: Arc<Q>| {
        move || {
            let mut sum = 0u64;
            let mut n = 0u64;
            loop {
                let mut g = q
                    .not_empty
                    .wait_while(q.items.lock(), |(v, done)| v.is_empty() && !*done);
                let Some(x) = g.0.pop_front() else {
                    break; // done and drained
                };
                drop(g);
                q.not_full.notify_one();
                sum += x;
                n += 1;
            }
            (sum, n)
        }
    };
    let consumers: Vec<_> = (0..CONSUMERS - 1)
        .map(|_| rt.spawn(consume(q.clone())))
        .collect();
    let thread_consumer = std::thread::spawn(consume(q.clone()));
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let q = q.clone();
            rt.spawn(move || {
                for i in 0..ITEMS {
                    let mut g = q
                        .not_full
                        .wait_while(q.items.lock(), |(v, _)| v.len() >= CAP);
                    g.0.push_back(p * ITEMS + i);
                    drop(g);
                    q.not_empty.notify_one();
                }
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.items.lock().1 = true;
    q.not_empty.notify_all();
    let mut sum = 0;
    let mut n = 0;
    for c in consumers {
        let (s, k) = c.join().unwrap();
        sum += s;
        n += k;
    }
    let (s, k) = thread_consumer.join().unwrap();
    sum += s;
    n += k;
    let total = PRODUCERS * ITEMS;
    assert_eq!(n, total);
    assert_eq!(sum, total * (total - 1) / 2);
    rt.shutdown();
}

/// `notify_all` wakes every waiter (more than one wake-up batch of them).
fn condvar_notify_all_wakes_every_waiter(procs: usize) {
    const WAITERS: usize = 40;
    let rt = runtime(procs);
    let pair = Arc::new((Mutex::new(0usize), Condvar::new()));
    let hs: Vec<_> = (0..WAITERS)
        .map(|_| {
            let pair = pair.clone();
            rt.spawn(move || {
                let (m, cv) = &*pair;
                let mut g = m.lock();
                *g += 1;
                while *g < usize::MAX {
                    g = cv.wait(g);
                }
            })
        })
        .collect();
    let p2 = pair.clone();
    rt.block_on(move || {
        yield_until("every waiter to wait", || *p2.0.lock() == WAITERS);
        *p2.0.lock() = usize::MAX;
        p2.1.notify_all();
    });
    for h in hs {
        h.join().unwrap();
    }
    rt.shutdown();
}

/// State for the timed-wait scenarios: the condition, and how many parties registered as
/// waiting (they do so under the mutex, right before waiting: a notifier that sees the count
/// under the mutex knows they are queued on the condition variable).
#[derive(Default)]
struct Flag {
    ready: bool,
    waiting: usize,
}

/// `wait_timeout` with no notifier times out, never early, in a goroutine and on a thread;
/// with a notifier it reports no timeout; a waiter that timed out (at the head of the queue)
/// does not swallow the next `notify_one`: the waiter behind it gets it.
fn condvar_wait_timeout(procs: usize) {
    let rt = runtime(procs);
    let pair = Arc::new((Mutex::new(Flag::default()), Condvar::new()));
    let d = Duration::from_millis(20);
    // Nobody notifies: time out, not early.
    let p = pair.clone();
    let (timed_out, waited) = rt.block_on(move || {
        let t = Instant::now();
        let (g, r) = p.1.wait_timeout(p.0.lock(), d);
        assert!(!g.ready);
        (r.timed_out(), t.elapsed())
    });
    assert!(timed_out, "no notifier, yet no timeout");
    assert!(
        waited >= d,
        "returned after {waited:?}, before its {d:?} timeout"
    );
    let t = Instant::now();
    let (_, r) = pair.1.wait_timeout(pair.0.lock(), d);
    assert!(r.timed_out() && t.elapsed() >= d, "thread wait_timeout");

    // Notified before the timeout.
    let p = pair.clone();
    let waiter = rt.spawn(move || {
        let mut g = p.0.lock();
        g.waiting += 1;
        let (g, r) = p.1.wait_timeout_while(g, HANG_GUARD, |f| !f.ready);
        (g.ready, r.timed_out())
    });
    let p = pair.clone();
    rt.block_on(move || {
        yield_until("the waiter to wait", || p.0.lock().waiting == 1);
        p.0.lock().ready = true;
        p.1.notify_one();
    });
    assert_eq!(waiter.join().unwrap(), (true, false));

    // A timed-out waiter ahead of an untimed one.
    *pair.0.lock() = Flag::default();
    let p = pair.clone();
    let short = rt.spawn(move || {
        let mut g = p.0.lock();
        g.waiting += 1;
        p.1.wait_timeout(g, Duration::from_millis(1)).1.timed_out()
    });
    let p = pair.clone();
    yield_until("the short waiter to wait", || p.0.lock().waiting == 1);
    let long = rt.spawn(move || {
        let mut g = p.0.lock();
        g.waiting += 1;
        p.1.wait_while(g, |f| !f.ready).ready
    });
    let p = pair.clone();
    rt.block_on(move || {
        yield_until("the long waiter to wait", || p.0.lock().waiting == 2);
        // Past the short waiter's deadline: its node is gone or about to go.
        gort::sleep(Duration::from_millis(5));
        p.0.lock().ready = true;
        p.1.notify_one();
    });
    assert!(long.join().unwrap());
    assert!(
        short.join().unwrap(),
        "a 1 ms wait_timeout nobody notified did not time out"
    );
    rt.shutdown();
}

/// Waiters with tiny timeouts race notifiers (the claim-under-lock rule: a notifier that
/// pops a waiter whose deadline already won moves on to the next). Every waiter returns; a
/// final round of `notify_all` with the flag set releases the untimed ones.
fn condvar_timeouts_racing_notifications(procs: usize) {
    const WAITERS: usize = 16;
    const ROUNDS: usize = 300;
    let rt = runtime(procs);
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let notified = Arc::new(AtomicUsize::new(0));
    let timed_out = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..WAITERS)
        .map(|w| {
            let (pair, notified, timed_out) = (pair.clone(), notified.clone(), timed_out.clone());
            rt.spawn(move || {
                let (m, cv) = &*pair;
                for r in 0..ROUNDS {
                    let g = m.lock();
                    if *g {
                        return;
                    }
                    let us = ((w * 7 + r * 13) % 50) as u64;
                    let (_g, res) = cv.wait_timeout(g, Duration::from_micros(us));
                    if res.timed_out() {
                        bump(&timed_out);
                    } else {
                        bump(&notified);
                    }
                }
            })
        })
        .collect();
    let notifier = {
        let pair = pair.clone();
        rt.spawn(move || {
            for i in 0..ROUNDS * 4 {
                if i % 3 == 0 {
                    pair.1.notify_all();
                } else {
                    pair.1.notify_one();
                }
                gort::yield_now();
            }
        })
    };
    notifier.join().unwrap();
    *pair.0.lock() = true;
    pair.1.notify_all();
    for h in hs {
        h.join().unwrap();
    }
    assert!(count(&notified) + count(&timed_out) <= WAITERS * ROUNDS);
    assert_eq!(format!("{:?}", pair.1), "Condvar { waiters: 0 }");
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Once.

/// 32 goroutines (and a thread) race to `call_once`; the function runs exactly once, and
/// every caller returns only after it has finished (it parks meanwhile). A panicking
/// function counts as run (Go's rule).
fn once_runs_exactly_once(procs: usize) {
    const CALLERS: usize = 32;
    let rt = runtime(procs);
    let once = Arc::new(Once::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let call = |once: Arc<Once>, runs: Arc<AtomicUsize>, finished: Arc<AtomicBool>| {
        move || {
            once.call_once(|| {
                bump(&runs);
                // Take a while, with scheduling points, so others arrive meanwhile.
                for _ in 0..50 {
                    gort::yield_now();
                }
                gort::sleep(Duration::from_millis(2));
                finished.store(true, Ordering::Relaxed);
            });
            assert!(
                finished.load(Ordering::Relaxed),
                "call_once returned before the run finished"
            );
            assert!(once.is_completed());
        }
    };
    let hs: Vec<_> = (0..CALLERS)
        .map(|_| rt.spawn(call(once.clone(), runs.clone(), finished.clone())))
        .collect();
    let t = std::thread::spawn(call(once.clone(), runs.clone(), finished.clone()));
    for h in hs {
        h.join().unwrap();
    }
    t.join().unwrap();
    assert_eq!(count(&runs), 1);

    let once = Arc::new(Once::new());
    let o = once.clone();
    let r = rt
        .spawn(move || o.call_once(|| panic!("init fails {EXPECTED}")))
        .join();
    assert!(r.is_err());
    assert!(once.is_completed());
    let o = once.clone();
    rt.block_on(move || o.call_once(|| unreachable!("a panicked Once ran again")));
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// WaitGroup.

/// 100,000 goroutines call `done`; `wait` (in a goroutine) returns when all have, and sees
/// all their writes.
fn waitgroup_100k_goroutines(procs: usize) {
    const N: usize = 100_000;
    let rt = runtime(procs);
    let hits = rt.block_on(|| {
        let wg = Arc::new(WaitGroup::new());
        let hits = Arc::new(AtomicUsize::new(0));
        wg.add(N as i32);
        for _ in 0..N {
            let (wg, hits) = (wg.clone(), hits.clone());
            gort::go(move || {
                bump(&hits);
                wg.done();
            });
        }
        wg.wait();
        assert_eq!(wg.count(), 0);
        count(&hits)
    });
    assert_eq!(hits, N);
    rt.shutdown();
}

/// Reuse over many rounds (each waited for by a goroutine and a plain thread: several
/// waiters released at once); a negative counter panics with Go's message and leaves the
/// group usable.
fn waitgroup_reuse_and_threads(procs: usize) {
    const ROUNDS: usize = 50;
    const WORKERS: usize = 20;
    let rt = runtime(procs);
    let wg = Arc::new(WaitGroup::new());
    for round in 0..ROUNDS {
        let hits = Arc::new(AtomicUsize::new(0));
        wg.add(WORKERS as i32);
        let gwait = {
            let (wg, hits) = (wg.clone(), hits.clone());
            rt.spawn(move || {
                wg.wait();
                count(&hits)
            })
        };
        let twait = {
            let (wg, hits) = (wg.clone(), hits.clone());
            std::thread::spawn(move || {
                wg.wait();
                count(&hits)
            })
        };
        for i in 0..WORKERS {
            let (wg, hits) = (wg.clone(), hits.clone());
            if i % 2 == 0 {
                rt.spawn(move || {
                    bump(&hits);
                    wg.done();
                });
            } else {
                std::thread::spawn(move || {
                    bump(&hits);
                    wg.done();
                });
            }
        }
        // Both waiters must have returned before the next round's `add` (Go's reuse rule).
        assert_eq!(gwait.join().unwrap(), WORKERS, "round {round}");
        assert_eq!(twait.join().unwrap(), WORKERS, "round {round}");
    }
    let w = wg.clone();
    let r = rt.spawn(move || w.done()).join();
    let payload = r.expect_err("a negative counter did not panic");
    assert_eq!(
        panic_message(&*payload),
        Some("sync: negative WaitGroup counter")
    );
    let r = panic::catch_unwind(AssertUnwindSafe(|| wg.add(-3)));
    assert!(r.is_err());
    assert_eq!(wg.count(), 0, "the failed add was not undone");
    wg.add(1);
    wg.done();
    wg.wait();
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Goroutine-local storage.

gort::local! {
    /// Each goroutine's own id, as it stored it.
    static MINE: Cell<u64> = const { Cell::new(0) };
    static LOG: RefCell<Vec<u32>> = RefCell::new(Vec::new());
}

/// 64 goroutines each store their id in a `local!` and check it across 500 yields; at 2 and 8
/// Ps they resume on different threads along the way (counted, not asserted: the scheduler
/// decides). A `thread_local!` would be shared by every goroutine on a thread.
fn local_values_are_per_goroutine_across_yields_and_threads(procs: usize) {
    const GOROUTINES: usize = 64;
    let rt = runtime(procs);
    let migrations = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..GOROUTINES)
        .map(|_| {
            let migrations = migrations.clone();
            rt.spawn(move || {
                let id = gort::current_id();
                assert_eq!(
                    MINE.with(Cell::get),
                    0,
                    "a fresh goroutine saw another's value"
                );
                MINE.with(|m| m.set(id));
                let mut thread = tid();
                for i in 0..500u32 {
                    gort::yield_now();
                    assert_eq!(MINE.with(Cell::get), id, "a goroutine saw another's value");
                    LOG.with(|l| l.borrow_mut().push(i));
                    if tid() != thread {
                        thread = tid();
                        bump(&migrations);
                    }
                }
                LOG.with(|l| l.borrow().len())
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), 500);
    }
    // A plain thread has its own (thread-local) value.
    assert_eq!(MINE.with(Cell::get), 0);
    MINE.with(|m| m.set(1));
    let other = std::thread::spawn(|| MINE.with(Cell::get)).join().unwrap();
    assert_eq!(other, 0);
    eprintln!("procs {procs}: {} migrations", count(&migrations));
    rt.shutdown();
}

static INITS: AtomicUsize = AtomicUsize::new(0);
static DROPS: AtomicUsize = AtomicUsize::new(0);
static SIDE_DROPS: AtomicUsize = AtomicUsize::new(0);

/// Counts its creations and drops; its destructor uses another `local!` (which is then
/// created and dropped during the same exit).
struct Tracked(u32);

impl Tracked {
    fn new() -> Tracked {
        bump(&INITS);
        Tracked(0)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        bump(&DROPS);
        SIDE.with(|s| s.set(self.0));
    }
}

struct Side(Cell<u32>);

impl Side {
    fn set(&self, v: u32) {
        self.0.set(v);
    }
}

impl Drop for Side {
    fn drop(&mut self) {
        if self.0.get() != 0 {
            bump(&SIDE_DROPS);
        }
    }
}

gort::local! {
    static TRACKED: RefCell<Tracked> = RefCell::new(Tracked::new());
    static SIDE: Side = Side(Cell::new(0));
}

/// A `local!` value is created on a goroutine's first use only, dropped when the goroutine
/// exits (before `join` returns), including values a destructor creates; a G reused for a new
/// goroutine starts with no values.
fn local_values_are_lazy_and_dropped_at_exit(procs: usize) {
    // The counters are process-wide and tests run in parallel: serialise this test's runs.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let base = (count(&INITS), count(&DROPS), count(&SIDE_DROPS));
    let rt = runtime(procs);
    const USERS: usize = 50;
    const IDLE: usize = 50;
    let hs: Vec<_> = (0..USERS + IDLE)
        .map(|i| {
            rt.spawn(move || {
                if i < USERS {
                    TRACKED.with(|t| t.borrow_mut().0 = i as u32 + 1);
                    gort::yield_now();
                    TRACKED.with(|t| assert_eq!(t.borrow().0, i as u32 + 1));
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    // join returned: every user's value (and the Side its destructor created) is gone.
    assert_eq!(
        count(&INITS) - base.0,
        USERS,
        "not lazy, or not per goroutine"
    );
    assert_eq!(count(&DROPS) - base.1, USERS, "not dropped at exit");
    assert_eq!(
        count(&SIDE_DROPS) - base.2,
        USERS,
        "values created by destructors leaked"
    );

    // Sequential goroutines reuse Gs (the free lists): each starts fresh.
    for i in 0..200u32 {
        let fresh = rt
            .spawn(move || {
                let fresh = TRACKED.with(|t| t.borrow().0) == 0;
                TRACKED.with(|t| t.borrow_mut().0 = i + 1);
                fresh
            })
            .join()
            .unwrap();
        assert!(fresh, "goroutine {i} inherited a local value");
    }
    assert_eq!(count(&INITS) - base.0, USERS + 200);
    assert_eq!(count(&DROPS) - base.1, USERS + 200);

    // A goroutine that panics drops its values too (after the panic is caught at its entry).
    let r = rt
        .spawn(|| {
            TRACKED.with(|t| t.borrow_mut().0 = 1);
            panic!("a goroutine with locals fails {EXPECTED}");
        })
        .join();
    assert!(r.is_err());
    assert_eq!(
        count(&DROPS) - base.1,
        USERS + 201,
        "not dropped after a panic"
    );
    rt.shutdown();
}

/// A `local!` used in its own initialiser panics instead of recursing.
#[test]
fn local_recursive_init_panics() {
    gort::local! {
        static SELFISH: u32 = SELFISH.with(|v| *v + 1);
    }
    guarded(|| {
        let rt = runtime(1);
        let r = rt.spawn(|| SELFISH.with(|v| *v)).join();
        let payload = r.expect_err("recursive initialisation did not panic");
        assert!(panic_message(&*payload).is_some_and(|m| m.contains("own initialiser")));
        rt.shutdown();
    });
}
