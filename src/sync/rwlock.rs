//! `RwLock<T>`: Go's `sync.RWMutex` algorithm (writer preference) behind std's guard shape.
//!
//! # Protocol (Go's `sync/rwmutex.go`)
//! * `readers`: the number of readers holding or waiting for the lock, minus [`MAX_READERS`]
//!   while a writer is pending or holds it. A reader takes the lock with one `fetch_add(1)`;
//!   if the result is negative a writer got there first, and the reader parks on
//!   `reader_sem` (it is already counted: the writer's unlock will wake it).
//! * A writer first takes `w` (a [`RawMutex`]: writers queue there, with Go's starvation
//!   mode among them), then announces itself by subtracting `MAX_READERS` from `readers`.
//!   From that moment new readers park: **writers are not starved by a stream of readers.**
//!   The readers it saw active (`r`) still have to leave: it adds `r` to `departing`; each of
//!   them, on unlock, sees `readers < 0` and decrements `departing`; whoever brings it to zero
//!   (the writer's add or the last reader's decrement) has the last word, and a reader that
//!   does wakes the writer through `writer_sem`.
//! * The writer unlocks by adding `MAX_READERS` back; the result is the number of readers that
//!   arrived meanwhile and parked: it releases `reader_sem` that many times, then unlocks `w`.
//!
//! Read locks are not recursive: a reader that read-locks again while a writer waits
//! deadlocks (the writer waits for the first read lock, the second waits for the writer), as
//! in Go.

use super::mutex::RawMutex;
use super::sema::Sema;
use crate::loom::{AtomicI32, Ordering};

/// Maximum number of concurrent readers (Go's `rwmutexMaxReaders`).
const MAX_READERS: i32 = 1 << 30;

/// The algorithm alone.
pub(crate) struct RawRwLock {
    /// Held by the writer (pending or active); serialises writers.
    w: RawMutex,
    /// A pending writer sleeps here until the readers it waits for have left.
    writer_sem: Sema,
    /// Readers that arrived while a writer was pending or active sleep here.
    reader_sem: Sema,
    /// Readers in or waiting, minus MAX_READERS while a writer is pending or active.
    readers: AtomicI32,
    /// Readers a pending writer still waits for (may dip below zero transiently: a reader
    /// can leave before the writer has added the count it saw).
    departing: AtomicI32,
}

impl RawRwLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> RawRwLock {
        RawRwLock {
            w: RawMutex::new(),
            writer_sem: Sema::new(),
            reader_sem: Sema::new(),
            readers: AtomicI32::new(0),
            departing: AtomicI32::new(0),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> RawRwLock {
        RawRwLock {
            w: RawMutex::new(),
            writer_sem: Sema::new(),
            reader_sem: Sema::new(),
            readers: AtomicI32::new(0),
            departing: AtomicI32::new(0),
        }
    }

    #[inline]
    pub(crate) fn read(&self) {
        // Acquire: pairs with the Release `fetch_add` of the last writer's unlock (its writes
        // are visible); when we must wait, the reader semaphore orders them instead.
        if self.readers.fetch_add(1, Ordering::Acquire) + 1 < 0 {
            // A writer is pending: wait for its unlock to release us.
            self.reader_sem.acquire(false);
        }
    }

    #[inline]
    pub(crate) fn try_read(&self) -> bool {
        // Relaxed: a first guess for the CAS.
        let mut c = self.readers.load(Ordering::Relaxed);
        loop {
            if c < 0 {
                return false;
            }
            // Acquire: as in `read`.
            match self
                .readers
                .compare_exchange_weak(c, c + 1, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
    }

    /// # Safety
    /// The caller holds a read lock (its own or one it took over).
    #[inline]
    pub(crate) unsafe fn read_unlock(&self) {
        // Release: our reads happen before a later writer's Acquire of this count (directly,
        // or through `departing` and the writer semaphore).
        let r = self.readers.fetch_sub(1, Ordering::Release) - 1;
        if r < 0 {
            self.read_unlock_slow(r);
        }
    }

    #[cold]
    fn read_unlock_slow(&self, r: i32) {
        if r + 1 == 0 || r + 1 == -MAX_READERS {
            crate::sched::fatal("sync: read unlock of an RwLock that is not read-locked");
        }
        // A writer is pending. AcqRel: chains every departing reader's release to the last
        // one, which wakes the writer through the semaphore.
        if self.departing.fetch_sub(1, Ordering::AcqRel) - 1 == 0 {
            // The last reader the writer waits for.
            self.writer_sem.release();
        }
    }

    pub(crate) fn write(&self) {
        // Against other writers first.
        self.w.lock();
        // Announce the pending writer to readers. AcqRel: acquire the releases of readers
        // that already left; the value tells how many are still in.
        let r = self.readers.fetch_add(-MAX_READERS, Ordering::AcqRel);
        // Wait for the active readers, unless they all left already.
        // AcqRel: pairs with the readers' `departing` decrements.
        if r != 0 && self.departing.fetch_add(r, Ordering::AcqRel) + r != 0 {
            self.writer_sem.acquire(false);
        }
    }

    pub(crate) fn try_write(&self) -> bool {
        if !self.w.try_lock() {
            return false;
        }
        // Acquire: pairs with the readers' Release decrements.
        if self
            .readers
            .compare_exchange(0, -MAX_READERS, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            // SAFETY: we locked `w` just above.
            unsafe { self.w.unlock() };
            return false;
        }
        true
    }

    /// # Safety
    /// The caller holds the write lock (its own or one it took over).
    pub(crate) unsafe fn write_unlock(&self) {
        // Release: readers that enter after this see our writes; those parked meanwhile are
        // ordered by the reader semaphore.
        let r = self.readers.fetch_add(MAX_READERS, Ordering::Release) + MAX_READERS;
        if r >= MAX_READERS {
            crate::sched::fatal("sync: write unlock of an RwLock that is not write-locked");
        }
        // Let the readers that arrived while we were pending or writing in.
        for _ in 0..r {
            self.reader_sem.release();
        }
        // SAFETY: we hold `w` (taken in `write`/`try_write`).
        unsafe { self.w.unlock() };
    }

    /// A racy snapshot: whether a writer is pending or active.
    #[cfg_attr(loom, allow(dead_code))]
    fn writer_in(&self) -> bool {
        // Relaxed: a snapshot for Debug.
        self.readers.load(Ordering::Relaxed) < 0
    }
}

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    use super::RawRwLock;
    use std::cell::UnsafeCell;
    use std::fmt;
    use std::marker::PhantomData;
    use std::ops::{Deref, DerefMut};

    /// A reader-writer lock that parks goroutines (Go's `sync.RWMutex`, std's shape).
    ///
    /// Any number of readers, or one writer. **Writer preference**: once a writer asks for the
    /// lock, new readers wait until it has had its turn, so a steady stream of readers cannot
    /// starve writers (as in Go). Consequently a read lock must not be taken recursively: with
    /// a writer waiting in between, the second read lock deadlocks.
    ///
    /// No poisoning (see [`Mutex`](crate::sync::Mutex)).
    ///
    /// ```
    /// let rw = gort::sync::RwLock::new(vec![1, 2, 3]);
    /// {
    ///     let a = rw.read();
    ///     let b = rw.read();
    ///     assert_eq!(a.len() + b.len(), 6);
    /// }
    /// rw.write().push(4);
    /// assert_eq!(*rw.read(), [1, 2, 3, 4]);
    /// ```
    pub struct RwLock<T: ?Sized> {
        raw: RawRwLock,
        data: UnsafeCell<T>,
    }

    // SAFETY: one writer at a time gets `&mut T` (T: Send, as it may be on another thread);
    // readers share `&T` across threads (T: Sync). As std's RwLock.
    unsafe impl<T: ?Sized + Send> Send for RwLock<T> {}
    // SAFETY: as above.
    unsafe impl<T: ?Sized + Send + Sync> Sync for RwLock<T> {}

    /// Shared access to an [`RwLock`]'s data; read-unlocks when dropped.
    #[must_use = "if unused the RwLock will immediately unlock"]
    pub struct RwLockReadGuard<'a, T: ?Sized> {
        lock: &'a RwLock<T>,
        /// Send iff T: Sync, Sync iff T: Sync (as `&T`).
        _marker: PhantomData<&'a T>,
    }

    /// Exclusive access to an [`RwLock`]'s data; write-unlocks when dropped.
    #[must_use = "if unused the RwLock will immediately unlock"]
    pub struct RwLockWriteGuard<'a, T: ?Sized> {
        lock: &'a RwLock<T>,
        /// Send iff T: Send, Sync iff T: Sync (as `&mut T`).
        _marker: PhantomData<&'a mut T>,
    }

    impl<T> RwLock<T> {
        /// An unlocked lock holding `value`.
        pub const fn new(value: T) -> RwLock<T> {
            RwLock {
                raw: RawRwLock::new(),
                data: UnsafeCell::new(value),
            }
        }

        /// The data, consuming the lock.
        pub fn into_inner(self) -> T {
            self.data.into_inner()
        }
    }

    impl<T: ?Sized> RwLock<T> {
        /// Lock for reading, parking (blocking a thread) while a writer holds or waits for it.
        #[inline]
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.raw.read();
            RwLockReadGuard {
                lock: self,
                _marker: PhantomData,
            }
        }

        /// Lock for reading if no writer holds or waits for the lock; never waits.
        #[inline]
        pub fn try_read(&self) -> Option<RwLockReadGuard<'_, T>> {
            self.raw.try_read().then(|| RwLockReadGuard {
                lock: self,
                _marker: PhantomData,
            })
        }

        /// Lock for writing, parking (blocking a thread) until no reader or writer holds it.
        #[inline]
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.raw.write();
            RwLockWriteGuard {
                lock: self,
                _marker: PhantomData,
            }
        }

        /// Lock for writing if nobody holds the lock; never waits.
        #[inline]
        pub fn try_write(&self) -> Option<RwLockWriteGuard<'_, T>> {
            self.raw.try_write().then(|| RwLockWriteGuard {
                lock: self,
                _marker: PhantomData,
            })
        }

        /// The data, through exclusive access to the lock (no locking needed).
        pub fn get_mut(&mut self) -> &mut T {
            self.data.get_mut()
        }
    }

    impl<T: Default> Default for RwLock<T> {
        fn default() -> RwLock<T> {
            RwLock::new(T::default())
        }
    }

    impl<T> From<T> for RwLock<T> {
        fn from(value: T) -> RwLock<T> {
            RwLock::new(value)
        }
    }

    impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let mut d = f.debug_struct("RwLock");
            match self.try_read() {
                Some(g) => d.field("data", &&*g),
                None => d.field("data", &format_args!("<locked>")),
            };
            d.field("writer", &self.raw.writer_in());
            d.finish_non_exhaustive()
        }
    }

    impl<T: ?Sized> Deref for RwLockReadGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: a read lock is held: no writer has `&mut` to the data.
            unsafe { &*self.lock.data.get() }
        }
    }

    impl<T: ?Sized> Drop for RwLockReadGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: the guard proves our read lock.
            unsafe { self.lock.raw.read_unlock() };
        }
    }

    impl<T: ?Sized> Deref for RwLockWriteGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            // SAFETY: the write lock is held: nobody else accesses the data.
            unsafe { &*self.lock.data.get() }
        }
    }

    impl<T: ?Sized> DerefMut for RwLockWriteGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            // SAFETY: the write lock is held, and `&mut self` makes this access unique.
            unsafe { &mut *self.lock.data.get() }
        }
    }

    impl<T: ?Sized> Drop for RwLockWriteGuard<'_, T> {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: the guard proves our write lock.
            unsafe { self.lock.raw.write_unlock() };
        }
    }

    impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockReadGuard<'_, T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&**self, f)
        }
    }

    impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLockWriteGuard<'_, T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            fmt::Debug::fmt(&**self, f)
        }
    }
}

/// loom models of the reader-writer protocol: the real `readers`/`departing` counting, the
/// writers' mutex and both semaphores. Run with `.ci/loom.sh rwlock`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    struct World {
        rw: RawRwLock,
        /// Written by writers, read by readers: loom reports any unordered pair.
        data: UnsafeCell<u32>,
    }

    fn world() -> Arc<World> {
        Arc::new(World {
            rw: RawRwLock::new(),
            data: UnsafeCell::new(0),
        })
    }

    fn reader(w: &World) -> u32 {
        w.rw.read();
        let v = w.data.with(|d| unsafe { *d });
        // SAFETY: read-locked just above.
        unsafe { w.rw.read_unlock() };
        v
    }

    fn writer(w: &World) {
        w.rw.write();
        w.data.with_mut(|d| unsafe { *d += 1 });
        // SAFETY: write-locked just above.
        unsafe { w.rw.write_unlock() };
    }

    fn check_clean(w: &World) {
        // Relaxed: every party was joined.
        assert_eq!(w.rw.readers.load(Ordering::Relaxed), 0);
        assert_eq!(w.rw.departing.load(Ordering::Relaxed), 0);
        assert_eq!(w.rw.reader_sem.waiters() + w.rw.writer_sem.waiters(), 0);
    }

    /// Two readers and a writer: the writer excludes both readers (a reader sees the value
    /// before or after the write, never during it), a reader that arrives while the writer
    /// waits for the other one parks and is released by the writer's unlock, nobody is
    /// left asleep.
    #[test]
    fn rwlock_two_readers_one_writer() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let w = world();
            let (w1, w2) = (w.clone(), w.clone());
            let r1 = thread::spawn(move || reader(&w1));
            let r2 = thread::spawn(move || reader(&w2));
            writer(&w);
            assert!(r1.join().unwrap() <= 1);
            assert!(r2.join().unwrap() <= 1);
            assert_eq!(w.data.with(|d| unsafe { *d }), 1);
            check_clean(&w);
        });
    }

    /// Two writers and a reader: writers serialise through the mutex and the reader count.
    #[test]
    fn rwlock_two_writers_one_reader() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let w = world();
            let (w1, w2) = (w.clone(), w.clone());
            let t1 = thread::spawn(move || writer(&w1));
            let t2 = thread::spawn(move || reader(&w2));
            writer(&w);
            t1.join().unwrap();
            assert!(t2.join().unwrap() <= 2);
            assert_eq!(w.data.with(|d| unsafe { *d }), 2);
            check_clean(&w);
        });
    }

    /// The non-blocking forms against a blocking writer.
    #[test]
    fn rwlock_try_forms() {
        loom::model(|| {
            let w = world();
            let w1 = w.clone();
            let t = thread::spawn(move || writer(&w1));
            if w.rw.try_read() {
                w.data.with(|d| unsafe { *d });
                // SAFETY: read-locked by try_read.
                unsafe { w.rw.read_unlock() };
            }
            if w.rw.try_write() {
                w.data.with_mut(|d| unsafe { *d += 10 });
                // SAFETY: write-locked by try_write.
                unsafe { w.rw.write_unlock() };
            }
            t.join().unwrap();
            let v = w.data.with(|d| unsafe { *d });
            assert!(v == 1 || v == 11);
            check_clean(&w);
        });
    }
}
