//! Timer channels: [`after`], [`at`] and [`tick`] (Go's `time.After` and `time.Tick`), fed by
//! the per-P timer heaps through `time::after_fn`.
//!
//! The timer callback runs on the scheduler (g0, a P held) and must not block: it delivers
//! with `try_send` into a one-slot buffer. A receiver parked on the channel is readied onto
//! the P that ran the timer, exactly as a sleeper would be.
//!
//! Lifetimes: the heap owns each pending callback, and the callback owns the channel's only
//! `Sender`. `after`'s sender is detached after delivering, so the channel is never closed
//! (as Go's): a second `recv` blocks. If the runtime shuts down before the deadline, the
//! callback is dropped without running and the channel closes — receivers see `Disconnected`
//! instead of waiting forever for a timer that no longer exists. `tick` re-arms itself for the
//! next tick after each delivery (a new `after_fn` per tick, on the original grid) and stops
//! when every receiver is gone.

use super::{Receiver, Sender, TrySendError, bounded};
use crate::time::{after_fn, deadline_after, instant_to_nanos, nanos_to_instant, nanotime};
use std::time::{Duration, Instant};

/// A channel that receives the current time once, `d` from now (Go's `time.After`).
///
/// ```
/// use std::time::{Duration, Instant};
/// gort::run(|| {
///     let t0 = Instant::now();
///     let fired = gort::chan::after(Duration::from_millis(5)).recv().unwrap();
///     assert!(fired >= t0 + Duration::from_millis(5));
/// });
/// ```
///
/// Runs on the calling goroutine's runtime (or the default one, from a plain thread).
pub fn after(d: Duration) -> Receiver<Instant> {
    once_at(deadline_after(d))
}

/// A channel that receives the current time once, at `deadline`.
pub fn at(deadline: Instant) -> Receiver<Instant> {
    once_at(instant_to_nanos(deadline))
}

fn once_at(when: u64) -> Receiver<Instant> {
    let (tx, rx) = bounded(1);
    after_fn(
        when,
        Box::new(move || {
            // The only send into a one-slot buffer: cannot be full. Failing means every
            // receiver is gone, and nothing is lost.
            let _ = tx.try_send(Instant::now());
            tx.detach();
        }),
    );
    rx
}

/// A channel that receives the current time every `period` (Go's `time.Tick`), on a fixed
/// grid starting one period from now. A tick is kept while unread (one slot) and later ones
/// are dropped meanwhile, so a slow receiver sees no burst. The ticking stops once every
/// receiver is dropped. Panics if `period` is zero.
///
/// ```
/// use std::time::Duration;
/// gort::run(|| {
///     let ticks = gort::chan::tick(Duration::from_millis(1));
///     let a = ticks.recv().unwrap();
///     let b = ticks.recv().unwrap();
///     assert!(b > a);
/// });
/// ```
pub fn tick(period: Duration) -> Receiver<Instant> {
    assert!(!period.is_zero(), "gort::chan::tick: zero period");
    let (tx, rx) = bounded(1);
    let p = crate::time::duration_ns(period);
    arm_tick(tx, deadline_after(period), p);
    rx
}

fn arm_tick(tx: Sender<Instant>, when: u64, period: u64) {
    after_fn(
        when,
        Box::new(move || {
            let now = nanotime();
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(nanos_to_instant(now)) {
                return; // nobody listens any more: the chain ends, `tx` closes the channel
            }
            // The next grid point after now: missed periods are dropped (Go's rule).
            let next =
                when.saturating_add(period.saturating_mul(1 + now.saturating_sub(when) / period));
            arm_tick(tx, next, period);
        }),
    );
}
