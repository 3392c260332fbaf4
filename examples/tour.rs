//! A short tour of gort: goroutines, work stealing, channels, and the scheduler's counters.
//!
//! `cargo run --release --example tour`

use std::time::Instant;

/// Deliberately CPU-bound: sum of the Collatz stopping times below `n`.
fn collatz_work(lo: u64, hi: u64) -> u64 {
    (lo..hi)
        .map(|mut x| {
            let mut steps = 0;
            while x > 1 {
                x = if x % 2 == 0 { x / 2 } else { 3 * x + 1 };
                steps += 1;
            }
            steps
        })
        .sum()
}

/// Split a range into goroutines recursively; each leaf yields now and then so that the
/// scheduler can move work around.
fn split(lo: u64, hi: u64) -> u64 {
    if hi - lo <= 2_000 {
        let mid = (lo + hi) / 2;
        let a = collatz_work(lo, mid);
        gort::yield_now();
        return a + collatz_work(mid, hi);
    }
    let mid = (lo + hi) / 2;
    let left = gort::go(move || split(lo, mid));
    let right = split(mid, hi);
    right + left.join().unwrap()
}

fn main() {
    let rt = gort::Runtime::builder()
        .procs(2)
        .build()
        .expect("cannot build the runtime");
    println!("gort tour: GOMAXPROCS = {}", rt.procs());

    // 1. A divide-and-conquer computation: one goroutine spawns the tree, idle Ps steal.
    let t = Instant::now();
    let total = rt.block_on(|| split(1, 400_000));
    let check = collatz_work(1, 400_000);
    assert_eq!(total, check);
    println!(
        "1. parallel Collatz sum over 1..400,000 = {total} ({:?}, same as the serial sum)",
        t.elapsed()
    );

    // 2. A pipeline of 1,000 goroutines passing a token through unbuffered channels.
    let hops = rt.block_on(|| {
        let (first_tx, mut rx) = gort::chan::bounded::<u64>(0);
        for _ in 0..1_000 {
            let (tx, next_rx) = gort::chan::bounded::<u64>(0);
            let r = rx;
            gort::go(move || {
                for v in r {
                    if tx.send(v + 1).is_err() {
                        break;
                    }
                }
            });
            rx = next_rx;
        }
        first_tx.send(0).unwrap();
        let hops = rx.recv().unwrap();
        drop(first_tx);
        hops
    });
    println!("2. a token went through a pipeline of {hops} goroutines");

    // 3. Goroutines and a plain thread share a channel; select picks among ready arms.
    let (tx, rx) = gort::chan::unbounded::<&'static str>();
    let thread = std::thread::spawn(move || rx.iter().count());
    rt.block_on(move || {
        let hs: Vec<_> = (0..100)
            .map(|_| {
                let tx = tx.clone();
                gort::go(move || tx.send("hello from a goroutine").unwrap())
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    });
    println!(
        "3. a plain thread received {} messages from goroutines",
        thread.join().unwrap()
    );

    let s = rt.stats();
    println!("\nscheduler counters:\n{s}");
    println!(
        "\n{} goroutines ran; {} steals moved work between the {} Ps.",
        s.completed, s.steals, s.procs
    );
    rt.shutdown();
}
