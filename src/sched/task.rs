//! The work a goroutine runs and the one-shot result slot its `JoinHandle` reads.
//!
//! One allocation per spawn: a `TaskCell<F, T>` holds the closure and the result `Packet<T>`.
//! The G owns it as `Arc<dyn Task>` (to run it); the `JoinHandle<T>` owns it as
//! `Arc<dyn JoinTarget<T>>` (to read the result).
//!
//! Packet protocol (one word, `state`): the goroutine stores the result, then sets `DONE`
//! (release); a joiner publishes its `Waiter` pointer, then sets `JOIN_WAITING` with a CAS that
//! fails if `DONE` is already set. Whoever sets the second bit knows the other side's half is
//! complete: the completer wakes the joiner only if it saw `JOIN_WAITING`; the joiner parks
//! only if its CAS succeeded. `ABANDONED` stands in for `DONE` when the runtime shuts down
//! before the goroutine finished.

use crate::loom::{AtomicU32, Ordering};
use crate::sched::park::Waiter;
use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;

const JOIN_WAITING: u32 = 1;
const DONE: u32 = 2;
const ABANDONED: u32 = 4;

/// Type-erased work of a goroutine.
pub(crate) trait Task: Send + Sync {
    /// Run the closure (once) and publish its result. Called on the goroutine's own stack.
    fn run(&self);
    /// The runtime is shutting down and will never run or finish this goroutine.
    ///
    /// # Safety
    /// No thread runs the goroutine any more (all Ms have stopped).
    unsafe fn abandon(&self);
}

/// A stand-in type for the null `*const dyn Task` of a G with no task.
pub(crate) struct NoTask;
impl Task for NoTask {
    fn run(&self) {}
    unsafe fn abandon(&self) {}
}

/// Typed access to a task's result.
pub(crate) trait JoinTarget<T>: Send + Sync {
    fn packet(&self) -> &Packet<T>;
}

pub(crate) struct Packet<T> {
    state: AtomicU32,
    waiter: UnsafeCell<*const Waiter>,
    result: UnsafeCell<Option<std::thread::Result<T>>>,
}

// SAFETY: `waiter` and `result` are each written by one side before a release RMW on `state`
// and read by the other side after observing that RMW with acquire (module docs).
unsafe impl<T: Send> Sync for Packet<T> {}
// SAFETY: as above; T itself is Send.
unsafe impl<T: Send> Send for Packet<T> {}

impl<T> Packet<T> {
    fn new() -> Packet<T> {
        Packet {
            state: AtomicU32::new(0),
            waiter: UnsafeCell::new(ptr::null()),
            result: UnsafeCell::new(None),
        }
    }

    fn finish(&self, bit: u32) {
        // AcqRel: release publishes `result`; acquire pairs with the joiner's CAS that
        // published `waiter`.
        let prev = self.state.fetch_or(bit, Ordering::AcqRel);
        // Only the first finish notifies. A goroutine preempted after `run` published DONE
        // but before it exited is still Runnable at shutdown, which abandons it: by then its
        // joiner was notified and has returned, and `waiter` points into a dead frame.
        if prev & (DONE | ABANDONED) == 0 && prev & JOIN_WAITING != 0 {
            // SAFETY: JOIN_WAITING was set, so the joiner stored a live Waiter (it stays
            // blocked, keeping it alive, until this notification).
            unsafe { Waiter::notify(*self.waiter.get()) };
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        // Acquire: pairs with `finish`, so a following `take` sees the result.
        self.state.load(Ordering::Acquire) & (DONE | ABANDONED) != 0
    }

    /// Joiner only (the JoinHandle is not Clone): wait for the result and take it.
    pub(crate) fn join(&self) -> std::thread::Result<T> {
        // Acquire: pairs with the release in `finish`.
        let s = self.state.load(Ordering::Acquire);
        if s & (DONE | ABANDONED) == 0 {
            let w = Waiter::new();
            // SAFETY: only the joiner writes `waiter`, and only before publishing it below.
            unsafe { *self.waiter.get() = &w };
            // Release: publishes the waiter pointer to `finish`; Acquire (on failure) pairs
            // with its release so the result is visible.
            if self
                .state
                .compare_exchange(s, s | JOIN_WAITING, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                w.wait();
            }
        }
        // Acquire: pairs with the release in `finish`.
        let s = self.state.load(Ordering::Acquire);
        if s & DONE != 0 {
            // SAFETY: DONE is set, so the goroutine wrote the result and will not touch it again.
            unsafe { (*self.result.get()).take() }.expect("gort: result taken twice")
        } else {
            Err(Box::new(Abandoned))
        }
    }
}

/// The error `join` returns for a goroutine that its runtime abandoned at shutdown.
#[derive(Debug, Clone, Copy)]
pub struct Abandoned;

impl std::fmt::Display for Abandoned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("goroutine abandoned: its runtime shut down before it finished")
    }
}

pub(crate) struct TaskCell<F, T> {
    packet: Packet<T>,
    f: UnsafeCell<Option<F>>,
}

// SAFETY: `f` is taken exactly once, by the goroutine (or by `abandon` after every M stopped).
unsafe impl<F: Send, T: Send> Sync for TaskCell<F, T> {}

impl<F, T> TaskCell<F, T> {
    pub(crate) fn new(f: F) -> TaskCell<F, T> {
        TaskCell {
            packet: Packet::new(),
            f: UnsafeCell::new(Some(f)),
        }
    }
}

impl<F, T> Task for TaskCell<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn run(&self) {
        // SAFETY: only the goroutine itself calls `run`, once.
        let f = unsafe { (*self.f.get()).take() };
        let r = match f {
            Some(f) => catch_unwind(AssertUnwindSafe(f)),
            None => return,
        };
        // Drop the goroutine's `local!` values before `join` can see the result.
        crate::local::goroutine_exit();
        // From here to the exit switch only runtime code runs: not preemptible (the count
        // is reset when the G is reused). A goroutine preempted after publishing its result
        // would be Runnable with its work done, and a shutdown in that window abandons it —
        // keeping its stack mapped, since an abandoned stack may still be pointed into.
        let g = crate::sched::m::current_g();
        if !g.is_null() {
            // SAFETY: `g` is the running goroutine (this is its own stack).
            unsafe { crate::preempt::g_nopreempt_inc(g) };
        }
        // SAFETY: the result slot is ours until `finish` publishes it.
        unsafe { *self.packet.result.get() = Some(r) };
        self.packet.finish(DONE);
    }

    unsafe fn abandon(&self) {
        // SAFETY: the caller guarantees no goroutine runs; a task that never started still
        // owns its closure, which we drop here (on the shutting-down thread).
        let f = unsafe { (*self.f.get()).take() };
        drop(f);
        self.packet.finish(ABANDONED);
    }
}

impl<F, T> JoinTarget<T> for TaskCell<F, T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    fn packet(&self) -> &Packet<T> {
        &self.packet
    }
}

/// Owned permission to wait for a goroutine's result.
///
/// `join` parks the calling goroutine, or blocks the calling OS thread, until the goroutine
/// finishes. A goroutine that panicked yields `Err` with the panic payload; one abandoned by
/// `Runtime::shutdown` yields `Err` with an [`Abandoned`] payload. Dropping the handle detaches
/// the goroutine.
pub struct JoinHandle<T> {
    pub(crate) target: std::sync::Arc<dyn JoinTarget<T>>,
    pub(crate) id: u64,
}

impl<T> JoinHandle<T> {
    /// Wait for the goroutine and return its result (its panic payload on panic).
    pub fn join(self) -> Result<T, Box<dyn Any + Send + 'static>> {
        self.target.packet().join()
    }

    /// Whether the goroutine has finished (or was abandoned); `join` will not block.
    pub fn is_finished(&self) -> bool {
        self.target.packet().is_finished()
    }

    /// The goroutine's id (as `gort::current_id()` returns inside it).
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.id)
            .field("finished", &self.is_finished())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A goroutine preempted between `run`'s `finish(DONE)` and its exit is still Runnable when
    /// shutdown abandons it: the second finish must not notify the (long gone) joiner again.
    #[test]
    fn abandon_after_done_does_not_notify_the_joiner_again() {
        let p = Packet::<u32>::new();
        // The joiner (a plain thread here) has published its waiter.
        let w = Waiter::new();
        // SAFETY: no other party yet.
        unsafe { *p.waiter.get() = &w };
        p.state.store(JOIN_WAITING, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { *p.result.get() = Some(Ok(7)) };
        p.finish(DONE); // `run`: notifies the joiner
        p.finish(ABANDONED); // shutdown's `abandon`: was "a Waiter was notified twice"
        assert!(matches!(p.join(), Ok(7)));
    }
}
