//! `Once`: run an initialiser exactly once; callers that arrive meanwhile park until it is done
//! (Go's `sync.Once`).
//!
//! # Protocol
//! `done` is set (Release) after the initialiser returned; a caller that reads it set
//! (Acquire) returns at once and sees everything the initialiser wrote. Otherwise it takes the
//! mutex — callers arriving while the initialiser runs park there — and re-checks `done`
//! under it. The first caller runs the initialiser, sets `done` and unlocks. Setting `done`
//! and unlocking happen in a drop guard, so they also happen if the initialiser panics: as in
//! Go, a panicking initialiser counts as having run (the panic goes to its caller; later
//! callers return without running anything). std's `Once` poisons instead; Go's rule was
//! chosen for consistency with the rest of `gort::sync`.

use super::mutex::RawMutex;
use crate::loom::{AtomicBool, Ordering};
use std::fmt;

/// Runs a function exactly once, however many goroutines or threads call it (Go's
/// `sync.Once`). Callers that arrive while it runs park until it has returned.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// static INIT: gort::sync::Once = gort::sync::Once::new();
/// static RUNS: AtomicU32 = AtomicU32::new(0);
/// gort::run(|| {
///     let hs: Vec<_> = (0..4)
///         .map(|_| gort::go(|| INIT.call_once(|| _ = RUNS.fetch_add(1, Ordering::Relaxed))))
///         .collect();
///     hs.into_iter().for_each(|h| h.join().unwrap());
/// });
/// assert_eq!(RUNS.load(Ordering::Relaxed), 1);
/// ```
pub struct Once {
    done: AtomicBool,
    m: RawMutex,
}

impl Once {
    /// A `Once` that has not run yet.
    pub const fn new() -> Once {
        Once {
            done: AtomicBool::new(false),
            m: RawMutex::new(),
        }
    }

    /// Run `f` if no call on this `Once` has run its function yet; otherwise wait until that
    /// run has finished, then return. If `f` panics, the panic propagates to this caller and
    /// the `Once` still counts as done (Go's rule). Calling `call_once` on the same `Once`
    /// from inside `f` deadlocks.
    #[inline]
    pub fn call_once<F: FnOnce()>(&self, f: F) {
        // Acquire: pairs with the Release store in `Finish::drop`: f's writes are visible.
        if !self.done.load(Ordering::Acquire) {
            self.call_slow(f);
        }
    }

    #[cold]
    fn call_slow<F: FnOnce()>(&self, f: F) {
        self.m.lock();
        /// Marks the Once done and unlocks, on return or unwind.
        struct Finish<'a>(&'a Once, bool);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                if self.1 {
                    // Release: pairs with the Acquire loads of later callers.
                    self.0.done.store(true, Ordering::Release);
                }
                // SAFETY: locked in `call_slow` just before this guard was made.
                unsafe { self.0.m.unlock() };
            }
        }
        // Relaxed: under the mutex, which orders the store by the previous holder.
        let run = !self.done.load(Ordering::Relaxed);
        let _finish = Finish(self, run);
        if run {
            f();
        }
    }

    /// Whether a call has completed (returned or panicked) its function.
    pub fn is_completed(&self) -> bool {
        // Acquire: as in `call_once`.
        self.done.load(Ordering::Acquire)
    }
}

impl Default for Once {
    fn default() -> Once {
        Once::new()
    }
}

impl fmt::Debug for Once {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Once")
            .field("done", &self.is_completed())
            .finish_non_exhaustive()
    }
}
