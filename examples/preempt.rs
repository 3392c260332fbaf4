//! Asynchronous preemption, shown: a goroutine spinning in `loop {}` at GOMAXPROCS = 1 does
//! not stop the main goroutine from sleeping and waking; prints the preemption counters and
//! the latency histogram after a few quanta.
//!
//! `cargo run --release --example preempt` (`GORT_PREEMPT=migrate|handoff|off`,
//! `GORT_QUANTUM_US=100..`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let rt = gort::Runtime::builder().procs(1).build().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let t0 = Instant::now();
    let sleeps = rt.block_on(move || {
        let spinner = gort::go(move || {
            let mut n = 0u64;
            while !st.load(Ordering::Relaxed) {
                n = std::hint::black_box(n + 1);
            }
            n
        });
        let mut slept = 0;
        for _ in 0..20 {
            gort::sleep(Duration::from_millis(5));
            slept += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let spins = spinner.join().unwrap();
        println!("spinner: {spins} iterations");
        slept
    });
    println!(
        "main: {sleeps} sleeps of 5 ms in {:?} beside a spinning goroutine",
        t0.elapsed()
    );
    println!("{}", rt.stats().preempt);
}
