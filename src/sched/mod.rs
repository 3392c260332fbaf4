//! The G/M/P scheduler.

pub(crate) mod runq;

/// Async-signal-safe: the goroutine running on this thread, for the SIGSEGV overflow
/// diagnosis. Returns its id and its stack, or `None` on an M's own stack (g0) or a
/// thread that is not an M.
#[cfg(not(loom))]
pub(crate) fn signal_current_goroutine() -> Option<(u64, *const crate::stack::Stack)> {
    None // filled in by the scheduler core
}
