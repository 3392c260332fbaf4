//! Integration tests of channels and `select!` through the public API, every scenario at
//! GOMAXPROCS = 1, 2 and 8 (8 oversubscribes a 2-core machine).
//!
//! Each test builds its own [`Runtime`] (never the default one) and shuts it down at the end.
//! Each test body runs on a plain thread under a generous hang guard ([`HANG_GUARD`]): a lost
//! wake-up shows up as a failure naming the test, not as a stuck binary. Nothing here asserts
//! an upper bound on time; timeouts are checked only for never firing early (their contract).
//!
//! Properties checked throughout: every message is delivered exactly once (no loss, no
//! duplicate), in order per sender; every value a failed send gives back is the one it was
//! given; every value left in a dropped channel is dropped exactly once.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gort::chan::{
    self, Receiver, RecvError, RecvTimeoutError, SendError, SendTimeoutError, Sender, TryRecvError,
    TrySendError,
};
use gort::{Runtime, select};

/// How long any one test may take before it counts as hung. Far above what any test needs
/// (seconds in debug builds); it only turns a hang into a failure.
const HANG_GUARD: Duration = Duration::from_secs(180);

// ---------------------------------------------------------------------------------------------
// Helpers.

/// Runs `body` on a plain thread; fails the test if it panics or does not finish within
/// [`HANG_GUARD`].
fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    common::run_guarded(HANG_GUARD, body)
}

/// A runtime of its own for one test.
fn runtime(procs: usize) -> Runtime {
    Runtime::builder()
        .procs(procs)
        .build()
        .expect("building a runtime")
}

/// Runs `f` as a goroutine of a fresh runtime with `procs` Ps, then shuts the runtime down.
fn on_runtime<T: Send + 'static>(procs: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    let rt = runtime(procs);
    let v = rt.block_on(f);
    rt.shutdown();
    v
}

/// Give a goroutine that is about to block on a channel time to park (not required for
/// correctness: every test holds whichever order happens; this only makes the "parked"
/// path the common one).
fn let_it_park() {
    gort::sleep(Duration::from_millis(5));
}

/// Counts drops of the values it wraps.
#[derive(Debug)]
struct Counted(u64, Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        // Relaxed: read after joins.
        self.1.fetch_add(1, Ordering::Relaxed);
    }
}

at_procs!(
    ping_pong,
    fan_in_preserves_per_sender_order,
    fan_out_delivers_each_message_once,
    pipeline_of_10000_goroutines,
    mpmc_every_message_exactly_once,
    close_semantics,
    disconnection_wakes_parked_goroutines,
    select_fairness,
    select_default_and_timeout,
    select_send_arms,
    select_no_loss_or_duplicate_under_concurrency,
    timeouts,
    timeouts_racing_partners_lose_nothing,
    threads_and_goroutines,
    timer_channels,
    iterators,
);

/// Capacities every delivery scenario runs with: rendezvous, one slot, a small ring, unbounded.
const CAPS: [Option<usize>; 4] = [Some(0), Some(1), Some(16), None];

fn channel<T>(cap: Option<usize>) -> (Sender<T>, Receiver<T>) {
    match cap {
        Some(c) => chan::bounded(c),
        None => chan::unbounded(),
    }
}

// ---------------------------------------------------------------------------------------------
// Delivery.

/// Two goroutines bounce a counter 10,000 times over a pair of channels.
fn ping_pong(procs: usize) {
    for cap in CAPS {
        on_runtime(procs, move || {
            let (ping_tx, ping_rx) = channel::<u64>(cap);
            let (pong_tx, pong_rx) = channel::<u64>(cap);
            let echo = gort::go(move || {
                let mut n = 0;
                for v in ping_rx {
                    pong_tx.send(v + 1).unwrap();
                    n += 1;
                }
                n
            });
            let mut v = 0;
            for _ in 0..10_000 {
                ping_tx.send(v).unwrap();
                let w = pong_rx.recv().unwrap();
                assert_eq!(w, v + 1, "cap {cap:?}");
                v = w;
            }
            drop(ping_tx);
            assert_eq!(echo.join().unwrap(), 10_000);
            // The echo's sender is gone: the pong channel is closed and empty.
            assert_eq!(pong_rx.recv(), Err(RecvError));
        });
    }
}

/// 16 senders x 2,000 messages into one receiver: each sender's messages arrive in order,
/// none twice, none missing.
fn fan_in_preserves_per_sender_order(procs: usize) {
    const SENDERS: usize = 16;
    const PER: u64 = 2_000;
    for cap in CAPS {
        on_runtime(procs, move || {
            let (tx, rx) = channel::<(usize, u64)>(cap);
            for s in 0..SENDERS {
                let tx = tx.clone();
                gort::go(move || {
                    for i in 0..PER {
                        tx.send((s, i)).unwrap();
                    }
                });
            }
            drop(tx);
            let mut next = [0u64; SENDERS];
            for (s, i) in rx {
                assert_eq!(i, next[s], "cap {cap:?}: sender {s} out of order");
                next[s] += 1;
            }
            assert!(next.iter().all(|&n| n == PER), "cap {cap:?}: {next:?}");
        });
    }
}

/// One sender, 8 receivers: every message goes to exactly one receiver, and each receiver sees
/// its share in the sender's order.
fn fan_out_delivers_each_message_once(procs: usize) {
    const N: u64 = 20_000;
    for cap in CAPS {
        on_runtime(procs, move || {
            let (tx, rx) = channel::<u64>(cap);
            let receivers: Vec<_> = (0..8)
                .map(|_| {
                    let rx = rx.clone();
                    gort::go(move || rx.iter().collect::<Vec<u64>>())
                })
                .collect();
            drop(rx);
            for i in 0..N {
                tx.send(i).unwrap();
            }
            drop(tx);
            let mut all = Vec::new();
            for r in receivers {
                let got = r.join().unwrap();
                assert!(got.windows(2).all(|w| w[0] < w[1]), "cap {cap:?}: order");
                all.extend(got);
            }
            all.sort_unstable();
            assert_eq!(all, (0..N).collect::<Vec<_>>(), "cap {cap:?}");
        });
    }
}

/// A chain of 10,000 goroutines, each reading from its left channel and writing to its right;
/// 20 tokens go through the whole chain, in order.
fn pipeline_of_10000_goroutines(procs: usize) {
    const STAGES: usize = 10_000;
    const TOKENS: u64 = 20;
    on_runtime(procs, || {
        let (first_tx, mut left) = chan::bounded::<u64>(0);
        for _ in 0..STAGES {
            let (tx, rx) = chan::bounded::<u64>(0);
            let input = std::mem::replace(&mut left, rx);
            gort::go(move || {
                for v in input {
                    tx.send(v + 1).unwrap();
                }
            });
        }
        let last = left;
        let feeder = gort::go(move || {
            for t in 0..TOKENS {
                first_tx.send(t * 1_000_000).unwrap();
            }
        });
        for t in 0..TOKENS {
            assert_eq!(last.recv(), Ok(t * 1_000_000 + STAGES as u64));
        }
        feeder.join().unwrap();
        // The feeder's sender is gone: the close ripples down the chain.
        assert_eq!(last.recv(), Err(RecvError));
    });
}

/// 4 senders x 4 receivers, every capacity: the union of what was received is exactly what
/// was sent.
fn mpmc_every_message_exactly_once(procs: usize) {
    const SENDERS: u64 = 4;
    const PER: u64 = 5_000;
    for cap in CAPS {
        on_runtime(procs, move || {
            let (tx, rx) = channel::<u64>(cap);
            let senders: Vec<_> = (0..SENDERS)
                .map(|s| {
                    let tx = tx.clone();
                    gort::go(move || {
                        for i in 0..PER {
                            tx.send(s * PER + i).unwrap();
                        }
                    })
                })
                .collect();
            drop(tx);
            let receivers: Vec<_> = (0..4)
                .map(|_| {
                    let rx = rx.clone();
                    gort::go(move || rx.iter().collect::<Vec<u64>>())
                })
                .collect();
            drop(rx);
            for s in senders {
                s.join().unwrap();
            }
            let mut all: Vec<u64> = receivers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..SENDERS * PER).collect::<Vec<_>>(), "cap {cap:?}");
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Close and disconnection.

fn close_semantics(procs: usize) {
    on_runtime(procs, || {
        // Explicit close: drain, then Disconnected; sends fail with their value.
        let (tx, rx) = chan::bounded::<String>(4);
        for s in ["a", "b", "c"] {
            tx.send(s.to_string()).unwrap();
        }
        assert!(tx.close());
        assert!(!tx.close(), "a second close reports false");
        assert!(tx.is_closed() && rx.is_closed());
        assert_eq!(tx.send("d".into()), Err(SendError("d".to_string())));
        assert_eq!(
            tx.try_send("e".into()),
            Err(TrySendError::Disconnected("e".to_string()))
        );
        assert_eq!(
            tx.send_timeout("f".into(), Duration::from_secs(1)),
            Err(SendTimeoutError::Disconnected("f".to_string()))
        );
        assert_eq!(rx.len(), 3);
        assert_eq!(rx.recv().as_deref(), Ok("a"));
        assert_eq!(rx.try_recv().as_deref(), Ok("b"));
        assert_eq!(rx.recv_timeout(Duration::from_secs(1)).as_deref(), Ok("c"));
        assert_eq!(rx.recv(), Err(RecvError));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(1)),
            Err(RecvTimeoutError::Disconnected)
        );
        assert_eq!(rx.iter().count(), 0);

        // Dropping the last of several senders closes; not before.
        let (tx, rx) = chan::unbounded::<u32>();
        let tx2 = tx.clone();
        tx.send(1).unwrap();
        drop(tx);
        assert!(!rx.is_closed());
        tx2.send(2).unwrap();
        drop(tx2);
        assert!(rx.is_closed());
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![1, 2]);

        // Dropping every receiver: sends fail with their value; buffered values are dropped
        // (exactly once).
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = chan::bounded::<Counted>(8);
        let rx2 = rx.clone();
        for i in 0..5 {
            tx.send(Counted(i, drops.clone())).unwrap();
        }
        drop(rx);
        tx.send(Counted(5, drops.clone())).unwrap();
        drop(rx2);
        assert_eq!(drops.load(Ordering::Relaxed), 6, "buffered values dropped");
        match tx.send(Counted(6, drops.clone())) {
            Err(SendError(Counted(6, _))) => {}
            other => panic!("send after the receivers left: {other:?}"),
        }
        match tx.try_send(Counted(7, drops.clone())) {
            Err(TrySendError::Disconnected(Counted(7, _))) => {}
            other => panic!("try_send after the receivers left: {other:?}"),
        }
        assert_eq!(drops.load(Ordering::Relaxed), 8);
        drop(tx);

        // A channel dropped with values in it drops them once.
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = chan::unbounded::<Counted>();
        for i in 0..10 {
            tx.send(Counted(i, drops.clone())).unwrap();
        }
        drop((tx, rx));
        assert_eq!(drops.load(Ordering::Relaxed), 10);

        // Error types: Display, Error, into_inner.
        let e: Box<dyn std::error::Error> = Box::new(SendError(1u8));
        assert_eq!(e.to_string(), "sending on a closed channel");
        assert_eq!(RecvError.to_string(), "receiving on a closed channel");
        assert_eq!(TrySendError::Full(3).into_inner(), 3);
        assert!(SendTimeoutError::Timeout(()).is_timeout());
        assert!(RecvTimeoutError::Timeout.is_timeout());
        assert!(TryRecvError::Empty.is_empty());
        assert_eq!(format!("{:?}", SendError(vec![1])), "SendError { .. }");
    });
}

/// A goroutine parked in `recv` is woken by the close (explicit or by the last sender's drop)
/// and sees the disconnection; one parked in `send` is woken by the close or by the last
/// receiver's drop and gets its value back. Also for several parked parties at once.
fn disconnection_wakes_parked_goroutines(procs: usize) {
    on_runtime(procs, || {
        for cap in [0, 2] {
            // Receivers parked; the last sender is dropped.
            let (tx, rx) = chan::bounded::<u32>(cap);
            let parked: Vec<_> = (0..4)
                .map(|_| {
                    let rx = rx.clone();
                    gort::go(move || rx.recv())
                })
                .collect();
            let_it_park();
            drop(tx);
            for p in parked {
                assert_eq!(p.join().unwrap(), Err(RecvError));
            }

            // Receivers parked; explicit close.
            let (tx, rx) = chan::bounded::<u32>(cap);
            let parked: Vec<_> = (0..4)
                .map(|_| {
                    let rx = rx.clone();
                    gort::go(move || rx.recv())
                })
                .collect();
            let_it_park();
            assert!(tx.close());
            for p in parked {
                assert_eq!(p.join().unwrap(), Err(RecvError));
            }

            // Senders parked on a full channel; every receiver is dropped: values come back.
            let (tx, rx) = chan::bounded::<u32>(cap);
            for i in 0..cap as u32 {
                tx.send(100 + i).unwrap();
            }
            let parked: Vec<_> = (0..4)
                .map(|i| {
                    let tx = tx.clone();
                    gort::go(move || tx.send(i))
                })
                .collect();
            let_it_park();
            drop(rx);
            for (i, p) in parked.into_iter().enumerate() {
                assert_eq!(p.join().unwrap(), Err(SendError(i as u32)));
            }

            // Senders parked; explicit close: values come back, the buffer is still drained.
            let (tx, rx) = chan::bounded::<u32>(cap);
            for i in 0..cap as u32 {
                tx.send(100 + i).unwrap();
            }
            let parked: Vec<_> = (0..4)
                .map(|i| {
                    let tx = tx.clone();
                    gort::go(move || tx.send_timeout(i, Duration::from_secs(3600)))
                })
                .collect();
            let_it_park();
            assert!(tx.close());
            for (i, p) in parked.into_iter().enumerate() {
                assert_eq!(
                    p.join().unwrap(),
                    Err(SendTimeoutError::Disconnected(i as u32))
                );
            }
            assert_eq!(
                rx.iter().collect::<Vec<_>>(),
                (0..cap as u32).map(|i| 100 + i).collect::<Vec<_>>()
            );

            // A goroutine parked in a select over two channels: closing one wakes it.
            let (tx1, rx1) = chan::bounded::<u32>(cap);
            let (tx2, rx2) = chan::bounded::<u32>(cap);
            let parked = gort::go(move || {
                select! {
                    recv(rx1) -> v => (1, v),
                    recv(rx2) -> v => (2, v),
                }
            });
            let_it_park();
            drop(tx2);
            assert_eq!(parked.join().unwrap(), (2, Err(RecvError)));
            drop(tx1);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// select.

/// With two always-ready channels, each arm is chosen about half the time (10,000 selects: a
/// binomial standard deviation of 50, so 40%..60% is a 20-sigma bound that never flakes and
/// still catches a biased poll order). Same for two ready send arms.
fn select_fairness(procs: usize) {
    on_runtime(procs, || {
        const N: usize = 10_000;
        let (tx1, rx1) = chan::bounded::<u8>(1);
        let (tx2, rx2) = chan::bounded::<u8>(1);
        tx1.send(1).unwrap();
        tx2.send(2).unwrap();
        let mut counts = [0usize; 2];
        for _ in 0..N {
            select! {
                recv(rx1) -> v => {
                    assert_eq!(v, Ok(1));
                    counts[0] += 1;
                    tx1.send(1).unwrap();
                }
                recv(rx2) -> v => {
                    assert_eq!(v, Ok(2));
                    counts[1] += 1;
                    tx2.send(2).unwrap();
                }
            }
        }
        for c in counts {
            assert!(
                (N * 4 / 10..=N * 6 / 10).contains(&c),
                "recv arms: {counts:?}"
            );
        }

        let (tx1, rx1) = chan::bounded::<u8>(1);
        let (tx2, rx2) = chan::bounded::<u8>(1);
        let mut counts = [0usize; 2];
        for _ in 0..N {
            select! {
                send(tx1, 1) -> r => {
                    r.unwrap();
                    counts[0] += 1;
                    assert_eq!(rx1.try_recv(), Ok(1));
                }
                send(tx2, 2) -> r => {
                    r.unwrap();
                    counts[1] += 1;
                    assert_eq!(rx2.try_recv(), Ok(2));
                }
            }
        }
        for c in counts {
            assert!(
                (N * 4 / 10..=N * 6 / 10).contains(&c),
                "send arms: {counts:?}"
            );
        }
        // And a ready arm is always preferred over default.
        tx1.send(9).unwrap();
        for _ in 0..100 {
            select! {
                recv(rx1) -> v => { assert_eq!(v, Ok(9)); tx1.send(9).unwrap(); }
                default => panic!("default taken with a ready arm"),
            }
        }
    });
}

fn select_default_and_timeout(procs: usize) {
    on_runtime(procs, || {
        let (tx, rx) = chan::bounded::<u32>(0);
        // Nothing ready: default.
        let hit = select! {
            recv(rx) -> _ => false,
            default => true,
        };
        assert!(hit);
        // Unbuffered send with no receiver is not ready either.
        let r = select! {
            send(tx, 5) -> _ => false,
            default => true,
        };
        assert!(r);
        // A timeout never fires early.
        for ms in [0, 1, 5] {
            let d = Duration::from_millis(ms);
            let t0 = Instant::now();
            let timed_out = select! {
                recv(rx) -> _ => false,
                timeout(d) => true,
            };
            assert!(timed_out);
            assert!(
                t0.elapsed() >= d,
                "timeout after {:?} < {d:?}",
                t0.elapsed()
            );
        }
        // Only a timeout (no arms): a sleep. Only a default: immediate.
        let t0 = Instant::now();
        select! { timeout(Duration::from_millis(2)) => {} }
        assert!(t0.elapsed() >= Duration::from_millis(2));
        assert_eq!(select! { default => 7 }, 7);
        // A value arriving before the timeout is received, not lost to it.
        let tx2 = tx.clone();
        let h = gort::go(move || {
            gort::sleep(Duration::from_millis(2));
            tx2.send(42).unwrap();
        });
        let got = select! {
            recv(rx) -> v => v,
            timeout(Duration::from_secs(3600)) => panic!("timed out"),
        };
        assert_eq!(got, Ok(42));
        h.join().unwrap();
        // Arms on a closed channel are ready.
        drop(tx);
        let r = select! {
            recv(rx) -> v => v,
            timeout(Duration::from_secs(3600)) => panic!("a closed channel is ready"),
        };
        assert_eq!(r, Err(RecvError));
    });
}

fn select_send_arms(procs: usize) {
    on_runtime(procs, || {
        // A send arm meets a parked receiver (rendezvous).
        let (tx, rx) = chan::bounded::<String>(0);
        let h = gort::go(move || rx.recv());
        let_it_park();
        let sent = select! {
            send(tx, "hello".to_string()) -> r => r.is_ok(),
        };
        assert!(sent);
        assert_eq!(h.join().unwrap().as_deref(), Ok("hello"));

        // A send arm parks until a receiver comes; the recv arm on another channel stays
        // untouched.
        let (tx, rx) = chan::bounded::<u32>(0);
        let (other_tx, other_rx) = chan::bounded::<u32>(0);
        let h = gort::go(move || {
            select! {
                send(tx, 7) -> r => { r.unwrap(); "sent" }
                recv(other_rx) -> _ => "received",
            }
        });
        let_it_park();
        assert_eq!(rx.recv(), Ok(7));
        assert_eq!(h.join().unwrap(), "sent");
        assert_eq!(other_tx.try_send(1), Err(TrySendError::Disconnected(1)));

        // A send arm on a closed channel fires with the value back; the value of an arm that
        // did not fire is dropped, once.
        let drops = Arc::new(AtomicUsize::new(0));
        let (tx1, rx1) = chan::bounded::<Counted>(1);
        let (tx2, rx2) = chan::bounded::<Counted>(1);
        drop(rx1);
        tx2.send(Counted(0, drops.clone())).unwrap(); // full
        let back = select! {
            send(tx1, Counted(1, drops.clone())) -> r => match r {
                Err(SendError(c)) => c.0,
                Ok(()) => panic!("sent on a closed channel"),
            },
            send(tx2, Counted(2, drops.clone())) -> _ => panic!("the channel is full"),
        };
        assert_eq!(back, 1);
        // Counted(1) (given back, then dropped) and Counted(2) (not sent) are gone.
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop(rx2);
        assert_eq!(drops.load(Ordering::Relaxed), 3);

        // Channel expressions of any shape: borrowed, indexed, temporaries.
        let chans: Vec<_> = (0..3).map(|_| chan::bounded::<u32>(1)).collect();
        chans[2].0.send(2).unwrap();
        let r = &chans[1].1;
        let got = select! {
            recv(r) -> _ => panic!("empty"),
            recv(&chans[0].1) -> _ => panic!("empty"),
            recv(chans[2].1) -> v => v,
        };
        assert_eq!(got, Ok(2));
        let got = select! {
            send(&chans[0].0, 10) -> r => { r.unwrap(); 0 }
            recv(chan::bounded::<u32>(0).1) -> _ => 1,
        };
        assert_eq!(got, 0);
        assert_eq!(chans[0].1.try_recv(), Ok(10));

        // The same channel in several arms, sends and receives mixed.
        let (tx, rx) = chan::bounded::<u32>(1);
        for i in 0..100 {
            select! {
                send(tx, i) -> r => r.unwrap(),
                recv(rx) -> _ => panic!("nothing buffered yet"),
            }
            select! {
                send(tx, 1000) -> _ => panic!("full"),
                recv(rx) -> v => assert_eq!(v, Ok(i)),
                recv(rx) -> v => assert_eq!(v, Ok(i)),
            }
        }
    });
}

/// Producers sending with selects over two channels, consumers receiving with selects (some
/// with timeouts or defaults that keep racing the producers): every value is received exactly
/// once.
fn select_no_loss_or_duplicate_under_concurrency(procs: usize) {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 3_000;
    for cap in [0usize, 1, 8] {
        on_runtime(procs, move || {
            let (atx, arx) = chan::bounded::<u64>(cap);
            let (btx, brx) = chan::bounded::<u64>(cap);
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|p| {
                    let (atx, btx) = (atx.clone(), btx.clone());
                    gort::go(move || {
                        for i in 0..PER {
                            let v = p * PER + i;
                            if i % 3 == 0 {
                                // Plain sends too, on either channel.
                                if i % 2 == 0 { atx.send(v) } else { btx.send(v) }.unwrap();
                            } else {
                                select! {
                                    send(atx, v) -> r => r.unwrap(),
                                    send(btx, v) -> r => r.unwrap(),
                                }
                            }
                        }
                    })
                })
                .collect();
            drop((atx, btx));
            let consumers: Vec<_> = (0..4u64)
                .map(|c| {
                    let (arx, brx) = (arx.clone(), brx.clone());
                    gort::go(move || {
                        let mut got = Vec::new();
                        let (mut a_open, mut b_open) = (true, true);
                        let mut n = 0u64;
                        while a_open || b_open {
                            n += 1;
                            match c {
                                0 => select! {
                                    recv(arx) -> v => collect(v, &mut got, &mut a_open),
                                    recv(brx) -> v => collect(v, &mut got, &mut b_open),
                                },
                                1 => select! {
                                    recv(arx) -> v => collect(v, &mut got, &mut a_open),
                                    recv(brx) -> v => collect(v, &mut got, &mut b_open),
                                    timeout(Duration::from_micros(n % 50)) => {}
                                },
                                2 => select! {
                                    recv(arx) -> v => collect(v, &mut got, &mut a_open),
                                    recv(brx) -> v => collect(v, &mut got, &mut b_open),
                                    default => gort::yield_now(),
                                },
                                _ => {
                                    // Plain timed receives, alternating channels.
                                    let (rx, open) = if n % 2 == 0 {
                                        (&arx, &mut a_open)
                                    } else {
                                        (&brx, &mut b_open)
                                    };
                                    if *open {
                                        match rx.recv_timeout(Duration::from_micros(n % 30)) {
                                            Ok(v) => got.push(v),
                                            Err(RecvTimeoutError::Timeout) => {}
                                            Err(RecvTimeoutError::Disconnected) => *open = false,
                                        }
                                    }
                                }
                            }
                        }
                        got
                    })
                })
                .collect();
            drop((arx, brx));
            for p in producers {
                p.join().unwrap();
            }
            let mut all: Vec<u64> = consumers
                .into_iter()
                .flat_map(|c| c.join().unwrap())
                .collect();
            all.sort_unstable();
            let len = all.len();
            all.dedup();
            assert_eq!(all.len(), len, "cap {cap}: a value was received twice");
            assert_eq!(
                all,
                (0..PRODUCERS * PER).collect::<Vec<_>>(),
                "cap {cap}: lost values"
            );
        });
    }
}

/// A select consumer's bookkeeping: keep a value, or note that its channel is closed.
fn collect(v: Result<u64, RecvError>, got: &mut Vec<u64>, open: &mut bool) {
    match v {
        Ok(v) => got.push(v),
        Err(RecvError) => *open = false,
    }
}

// ---------------------------------------------------------------------------------------------
// Timeouts.

fn timeouts(procs: usize) {
    on_runtime(procs, || {
        let (tx, rx) = chan::bounded::<String>(1);
        for ms in [0u64, 1, 3] {
            let d = Duration::from_millis(ms);
            let t0 = Instant::now();
            assert_eq!(rx.recv_timeout(d), Err(RecvTimeoutError::Timeout));
            assert!(t0.elapsed() >= d);
        }
        assert_eq!(
            rx.recv_deadline(Instant::now() - Duration::from_secs(1)),
            Err(RecvTimeoutError::Timeout)
        );
        tx.send("full".into()).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            tx.send_timeout("back".into(), Duration::from_millis(2)),
            Err(SendTimeoutError::Timeout("back".to_string()))
        );
        assert!(t0.elapsed() >= Duration::from_millis(2));
        assert_eq!(
            tx.send_deadline("past".into(), Instant::now()),
            Err(SendTimeoutError::Timeout("past".to_string()))
        );
        assert_eq!(
            tx.try_send("x".into()),
            Err(TrySendError::Full("x".to_string()))
        );
        assert_eq!(rx.recv().as_deref(), Ok("full"));

        // Unbuffered: a send with nobody receiving times out with the value back.
        let (tx, rx) = chan::bounded::<Vec<u8>>(0);
        assert_eq!(
            tx.send_timeout(vec![1, 2], Duration::from_millis(1)),
            Err(SendTimeoutError::Timeout(vec![1, 2]))
        );
        assert_eq!(tx.try_send(vec![3]), Err(TrySendError::Full(vec![3])));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

        // A partner arriving well within the timeout completes the operation.
        let tx2 = tx.clone();
        let h = gort::go(move || {
            gort::sleep(Duration::from_millis(1));
            tx2.send_timeout(vec![9], Duration::from_secs(3600))
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(3600)), Ok(vec![9]));
        assert_eq!(h.join().unwrap(), Ok(()));
        let h = gort::go(move || {
            gort::sleep(Duration::from_millis(1));
            rx.recv_timeout(Duration::from_secs(3600))
        });
        assert_eq!(tx.send_timeout(vec![8], Duration::from_secs(3600)), Ok(()));
        assert_eq!(h.join().unwrap(), Ok(vec![8]));
    });
}

/// Timed receives race sends (and timed sends race receives) at about their deadlines, many
/// times: a value is either received or still in the channel (or given back to its sender),
/// never lost, never duplicated.
fn timeouts_racing_partners_lose_nothing(procs: usize) {
    const ROUNDS: u64 = 2_000;
    on_runtime(procs, || {
        // Timed receivers vs plain senders.
        let (tx, rx) = chan::bounded::<u64>(0);
        let receiver = gort::go(move || {
            let mut got = Vec::new();
            let mut i = 0u64;
            loop {
                i += 1;
                match rx.recv_timeout(Duration::from_micros(i % 20)) {
                    Ok(v) => got.push(v),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return got,
                }
            }
        });
        for v in 0..ROUNDS {
            if v % 7 == 0 {
                gort::sleep(Duration::from_micros(v % 13));
            }
            tx.send(v).unwrap();
        }
        drop(tx);
        assert_eq!(receiver.join().unwrap(), (0..ROUNDS).collect::<Vec<_>>());

        // Timed senders vs a plain receiver: every value is either received or returned.
        let (tx, rx) = chan::bounded::<u64>(0);
        let sender = gort::go(move || {
            let mut returned = Vec::new();
            for v in 0..ROUNDS {
                match tx.send_timeout(v, Duration::from_micros(v % 20)) {
                    Ok(()) => {}
                    Err(SendTimeoutError::Timeout(back)) => {
                        assert_eq!(back, v, "the value given back is the one sent");
                        returned.push(back);
                    }
                    Err(SendTimeoutError::Disconnected(_)) => panic!("receiver is alive"),
                }
            }
            returned
        });
        let mut got = Vec::new();
        let mut i = 0u64;
        loop {
            i += 1;
            if i % 5 == 0 {
                gort::sleep(Duration::from_micros(i % 11));
            }
            match rx.recv() {
                Ok(v) => got.push(v),
                Err(RecvError) => break,
            }
        }
        let mut all = got.clone();
        all.extend(sender.join().unwrap());
        all.sort_unstable();
        assert_eq!(all, (0..ROUNDS).collect::<Vec<_>>());
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    });
}

// ---------------------------------------------------------------------------------------------
// Threads and goroutines.

/// Plain OS threads and goroutines share channels in both directions: thread -> goroutine,
/// goroutine -> thread, ping-pong between them, and a mixed MPMC crowd.
fn threads_and_goroutines(procs: usize) {
    let rt = runtime(procs);
    // Thread -> goroutines.
    let (tx, rx) = chan::bounded::<u64>(0);
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let rx = rx.clone();
            rt.spawn(move || rx.iter().sum::<u64>())
        })
        .collect();
    drop(rx);
    for i in 0..3_000 {
        tx.send(i).unwrap();
    }
    drop(tx);
    let total: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(total, (0..3_000).sum());

    // Goroutines -> thread.
    let (tx, rx) = chan::bounded::<u64>(0);
    for g in 0..3u64 {
        let tx = tx.clone();
        rt.spawn(move || {
            for i in 0..1_000 {
                tx.send(g * 1_000 + i).unwrap();
            }
        });
    }
    drop(tx);
    let mut got: Vec<u64> = rx.iter().collect();
    got.sort_unstable();
    assert_eq!(got, (0..3_000).collect::<Vec<_>>());

    // Ping-pong: thread <-> goroutine.
    let (ping_tx, ping_rx) = chan::bounded::<u64>(0);
    let (pong_tx, pong_rx) = chan::bounded::<u64>(0);
    let echo = rt.spawn(move || {
        for v in ping_rx {
            pong_tx.send(v * 2).unwrap();
        }
    });
    for i in 0..2_000 {
        ping_tx.send(i).unwrap();
        assert_eq!(pong_rx.recv(), Ok(i * 2));
    }
    drop(ping_tx);
    echo.join().unwrap();

    // A thread blocks in select, a goroutine completes it; and the other way round.
    let (tx, rx) = chan::bounded::<u8>(0);
    let (tx2, rx2) = chan::bounded::<u8>(0);
    let h = rt.spawn(move || {
        gort::sleep(Duration::from_millis(2));
        tx2.send(5).unwrap();
        drop(tx);
    });
    let r = select! {
        recv(rx) -> v => (1, v),
        recv(rx2) -> v => (2, v),
    };
    assert_eq!(r, (2, Ok(5)));
    h.join().unwrap();

    // MPMC crowd: 2 thread senders + 2 goroutine senders, 2 thread receivers + 2 goroutine
    // receivers, some with timeouts.
    let (tx, rx) = chan::bounded::<u64>(2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    let mut goroutines = Vec::new();
    for s in 0..4u64 {
        let tx = tx.clone();
        let send = move || {
            for i in 0..1_000 {
                tx.send(s * 1_000 + i).unwrap();
            }
        };
        if s % 2 == 0 {
            threads.push(std::thread::spawn(send));
        } else {
            goroutines.push(rt.spawn(send));
        }
    }
    drop(tx);
    for r in 0..4 {
        let (rx, seen) = (rx.clone(), seen.clone());
        let recv = move || {
            let mut mine = Vec::new();
            loop {
                match rx.recv_timeout(Duration::from_micros(100)) {
                    Ok(v) => mine.push(v),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            seen.lock().unwrap().extend(mine);
        };
        if r % 2 == 0 {
            threads.push(std::thread::spawn(recv));
        } else {
            goroutines.push(rt.spawn(recv));
        }
    }
    drop(rx);
    for t in threads {
        t.join().unwrap();
    }
    for g in goroutines {
        g.join().unwrap();
    }
    let mut all = seen.lock().unwrap().clone();
    all.sort_unstable();
    assert_eq!(all, (0..4_000).collect::<Vec<_>>());
    rt.shutdown();
}

// ---------------------------------------------------------------------------------------------
// Timer channels, iterators.

fn timer_channels(procs: usize) {
    on_runtime(procs, || {
        let t0 = Instant::now();
        let after = chan::after(Duration::from_millis(3));
        let fired = after.recv().unwrap();
        assert!(fired >= t0 + Duration::from_millis(3), "after fired early");
        // One value only, and the channel stays open (Go's time.After).
        assert_eq!(after.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(
            after.recv_timeout(Duration::from_millis(2)),
            Err(RecvTimeoutError::Timeout)
        );

        // `after` as a select arm.
        let (_tx, rx) = chan::bounded::<u8>(0);
        let which = select! {
            recv(rx) -> _ => "rx",
            recv(chan::after(Duration::from_millis(1))) -> t => { t.unwrap(); "after" }
        };
        assert_eq!(which, "after");

        // `at` with a past deadline fires at once (at the next timer check).
        assert!(
            chan::at(Instant::now() - Duration::from_secs(1))
                .recv()
                .is_ok()
        );

        // Ticks: increasing, on a grid of at least the period.
        let ticks = chan::tick(Duration::from_millis(1));
        let mut last = t0;
        for _ in 0..5 {
            let t = ticks.recv().unwrap();
            assert!(t > last);
            last = t;
        }
        drop(ticks); // the ticker stops at its next tick

        // A slow reader gets one pending tick, not a burst.
        let ticks = chan::tick(Duration::from_millis(1));
        gort::sleep(Duration::from_millis(10));
        assert!(ticks.try_recv().is_ok());
        assert_eq!(ticks.try_recv(), Err(TryRecvError::Empty));
    });
}

fn iterators(procs: usize) {
    on_runtime(procs, || {
        let (tx, rx) = chan::unbounded::<u32>();
        for i in 0..10 {
            tx.send(i).unwrap();
        }
        assert_eq!(rx.try_iter().take(3).collect::<Vec<_>>(), vec![0, 1, 2]);
        let mut n = 3;
        for v in &rx {
            assert_eq!(v, n);
            n += 1;
            if n == 6 {
                break;
            }
        }
        drop(tx);
        assert_eq!(rx.iter().collect::<Vec<_>>(), vec![6, 7, 8, 9]);
        assert_eq!(rx.try_iter().count(), 0);
        let (tx, rx) = chan::bounded::<u32>(3);
        gort::go(move || {
            for i in 0..100 {
                tx.send(i).unwrap();
            }
        });
        assert_eq!(rx.into_iter().sum::<u32>(), 4950);
    });
}

// ---------------------------------------------------------------------------------------------
// Single-configuration tests.

/// Sender and Receiver are Send + Sync + Clone for Send element types.
#[test]
fn handles_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone>() {}
    check::<Sender<String>>();
    check::<Receiver<String>>();
    check::<Sender<std::cell::Cell<u8>>>();
    let (tx, rx) = chan::bounded::<u8>(2);
    assert!(tx.same_channel(&tx.clone()) && rx.same_channel(&rx.clone()));
    assert_eq!(tx.capacity(), Some(2));
    assert_eq!(chan::unbounded::<u8>().1.capacity(), None);
    assert!(chan::bounded::<u8>(0).0.is_full());
}

/// Plain threads only (no runtime involved in the blocking): a thread parks on the futex.
#[test]
fn plain_threads_only() {
    guarded(|| {
        let (tx, rx) = chan::bounded::<u64>(0);
        let t = std::thread::spawn(move || rx.iter().sum::<u64>());
        for i in 0..10_000 {
            tx.send(i).unwrap();
        }
        drop(tx);
        assert_eq!(t.join().unwrap(), (0..10_000).sum());
        let (tx, rx) = chan::bounded::<u64>(0);
        let t0 = Instant::now();
        assert_eq!(
            rx.recv_timeout(Duration::from_millis(2)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(t0.elapsed() >= Duration::from_millis(2));
        assert_eq!(
            tx.send_timeout(1, Duration::from_millis(1)),
            Err(SendTimeoutError::Timeout(1))
        );
    });
}

/// Goroutines parked on channels when their runtime shuts down are abandoned; completing their
/// operations afterwards from a plain thread is memory-safe (the wake-up is discarded) and the
/// channel keeps working for the living.
#[test]
fn operations_on_channels_of_abandoned_goroutines() {
    guarded(|| {
        let rt = runtime(2);
        let (tx, rx) = chan::bounded::<u64>(0);
        let (tx2, rx2) = chan::bounded::<u64>(0);
        let rx_alive = rx.clone();
        let (started_tx, started_rx) = chan::bounded::<()>(4);
        for _ in 0..2 {
            let (rx, started) = (rx.clone(), started_tx.clone());
            rt.spawn(move || {
                started.send(()).unwrap();
                rx.recv()
            });
        }
        {
            let (tx2, started) = (tx2.clone(), started_tx.clone());
            rt.spawn(move || {
                started.send(()).unwrap();
                tx2.send(77)
            });
        }
        for _ in 0..3 {
            started_rx.recv().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20)); // let them park
        rt.shutdown();
        // The abandoned receivers' entries may still be queued (if they parked, which the
        // sleep above makes likely): these sends complete them, handing the values to frames
        // that never run again, and their wake-ups are discarded. Timeouts: had a receiver not
        // parked, nobody would take the value.
        for i in 0..2 {
            let _ = tx.send_timeout(i, Duration::from_millis(50));
        }
        // The abandoned sender's value can be taken (or, had it not parked, nothing comes).
        let _ = rx2.recv_timeout(Duration::from_millis(50));
        // The channel still works between living threads.
        let t = std::thread::spawn(move || rx_alive.recv());
        tx.send(5).unwrap();
        assert_eq!(t.join().unwrap(), Ok(5));
        drop((rx, tx2));
    });
}
