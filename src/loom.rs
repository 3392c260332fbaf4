//! The one place atomics, cells and blocking come from, so that `--cfg loom` can swap in
//! loom's model-checked versions (tokio's `src/loom` idea).
//!
//! Under `cfg(loom)` only the lock-free cores (the run queue ring and the idle/park protocol)
//! are compiled; everything else in the crate is `cfg(not(loom))`.
//!
//! Outside loom, [`Mutex`] is std's with one addition: holding its guard is a runtime
//! section (`preempt/mod.rs`), so a goroutine is never preempted asynchronously while it
//! holds a runtime lock.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering, fence,
};

#[cfg(not(loom))]
pub(crate) use section_mutex::{Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::{Mutex, MutexGuard};

#[cfg(not(loom))]
mod section_mutex {
    use std::sync::{LockResult, PoisonError};

    /// `std::sync::Mutex` whose guard also holds a runtime section (module docs).
    #[derive(Default)]
    pub(crate) struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

    /// The guard: the std guard first (fields drop in order: unlock, then close the section).
    pub(crate) struct MutexGuard<'a, T: ?Sized> {
        guard: std::sync::MutexGuard<'a, T>,
        _section: crate::preempt::Section,
    }

    impl<T> Mutex<T> {
        pub(crate) const fn new(value: T) -> Mutex<T> {
            Mutex(std::sync::Mutex::new(value))
        }
    }

    impl<T: ?Sized> Mutex<T> {
        /// Lock; the section opens before the lock is taken.
        #[inline]
        pub(crate) fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
            let section = crate::preempt::Section::enter();
            match self.0.lock() {
                Ok(guard) => Ok(MutexGuard {
                    guard,
                    _section: section,
                }),
                Err(e) => Err(PoisonError::new(MutexGuard {
                    guard: e.into_inner(),
                    _section: section,
                })),
            }
        }

        /// Lock if free; the section is open only while the guard lives.
        #[inline]
        pub(crate) fn try_lock(&self) -> std::sync::TryLockResult<MutexGuard<'_, T>> {
            use std::sync::TryLockError;
            let section = crate::preempt::Section::enter();
            match self.0.try_lock() {
                Ok(guard) => Ok(MutexGuard {
                    guard,
                    _section: section,
                }),
                Err(TryLockError::Poisoned(e)) => {
                    Err(TryLockError::Poisoned(PoisonError::new(MutexGuard {
                        guard: e.into_inner(),
                        _section: section,
                    })))
                }
                Err(TryLockError::WouldBlock) => Err(TryLockError::WouldBlock),
            }
        }

        pub(crate) fn get_mut(&mut self) -> LockResult<&mut T> {
            self.0.get_mut()
        }
    }

    impl<T: ?Sized> std::ops::Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.guard
        }
    }

    impl<T: ?Sized> std::ops::DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            &mut self.guard
        }
    }
}
