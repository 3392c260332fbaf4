//! The one place atomics, cells and blocking come from, so that `--cfg loom` can swap in
//! loom's model-checked versions (tokio's `src/loom` idea).
//!
//! Under `cfg(loom)` only the lock-free cores (the run queue ring and the idle/park protocol)
//! are compiled; everything else in the crate is `cfg(not(loom))`.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(not(loom))]
pub(crate) use std::sync::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};
