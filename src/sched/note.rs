//! Futex-based one-shot sleep/wake-up for Ms and plain threads (Go's `note`).
//!
//! A `Note` is a single `u32`: 0 = clear, 1 = signalled. `sleep` blocks until the note is
//! signalled; `wake` signals it and wakes the sleeper. Exactly one thread sleeps on a note at a
//! time (its owner M); any thread may wake it. `clear` re-arms it (owner only, when nobody can
//! be waking it: the idle-M protocol clears before publishing the M on the idle list).
//! `sleep_until` also returns at an absolute `CLOCK_MONOTONIC` deadline: the timer sleeper's
//! wait (`idle::stopm_until`), which settles a late wake-up under the scheduler lock.

use crate::loom::{AtomicU32, Ordering};
#[cfg(not(loom))]
use std::time::Duration;

/// Futex wait on `word` while it holds `expected`. Returns on a wake-up, a spurious wake-up,
/// EINTR, a value mismatch, or the timeout: callers re-check their condition in a loop.
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts;
    let tsp = match timeout {
        Some(d) => {
            ts = libc::timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            };
            &ts as *const libc::timespec
        }
        None => std::ptr::null(),
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; FUTEX_WAIT only reads
    // it. Errors (EAGAIN: value changed, EINTR, ETIMEDOUT) all mean "re-check", which every
    // caller does, so the result is deliberately ignored.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            tsp,
        );
    }
}

/// Futex wait on `word` while it holds `expected`, until the absolute `CLOCK_MONOTONIC`
/// deadline `deadline_ns` (`crate::time::nanotime`'s clock). Returns true if the kernel
/// reported the deadline reached; false on a wake-up, a spurious wake-up, EINTR or a value
/// mismatch. Callers re-check their condition in a loop, as for [`futex_wait`].
///
/// An absolute deadline (`FUTEX_WAIT_BITSET`; its timeout is absolute, on `CLOCK_MONOTONIC`
/// unless `FUTEX_CLOCK_REALTIME` is given) makes re-waiting after EINTR or a spurious wake-up
/// neither drift nor need a clock read; the kernel never returns before the deadline.
#[cfg(not(loom))]
pub(crate) fn futex_wait_until(word: &AtomicU32, expected: u32, deadline_ns: u64) -> bool {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000).min(i64::MAX as u64) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call and `ts` a valid
    // timespec; FUTEX_WAIT_BITSET only reads them. uaddr2 is ignored by this operation.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        )
    };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT)
}

/// Wake up to `n` threads waiting on `word`.
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; it never dereferences user memory
    // beyond validating the address, so even a word whose owner just returned is harmless.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            n,
        );
    }
}

/// A one-shot wake-up flag with a futex behind it.
pub(crate) struct Note {
    key: AtomicU32,
    #[cfg(loom)]
    lock: loom::sync::Mutex<()>,
    #[cfg(loom)]
    cv: loom::sync::Condvar,
}

impl Note {
    pub(crate) fn new() -> Note {
        Note {
            key: AtomicU32::new(0),
            #[cfg(loom)]
            lock: loom::sync::Mutex::new(()),
            #[cfg(loom)]
            cv: loom::sync::Condvar::new(),
        }
    }

    /// Owner only, and only when no waker can still be signalling the previous round.
    pub(crate) fn clear(&self) {
        // Relaxed: the note is published to wakers afterwards through a lock or a release
        // store (the idle-M list), which orders this store before any wake.
        self.key.store(0, Ordering::Relaxed);
    }

    /// Any thread: signal the note and wake its sleeper.
    pub(crate) fn wake(&self) {
        // Release: pairs with the Acquire load in `sleep`, so everything the waker wrote
        // before (m.nextp, the G it handed over) is visible to the woken M.
        let old = self.key.swap(1, Ordering::Release);
        if old != 0 {
            crate::sched::fatal("note woken twice");
        }
        #[cfg(not(loom))]
        futex_wake(&self.key, 1);
        #[cfg(loom)]
        {
            let _g = self.lock.lock().unwrap();
            self.cv.notify_one();
        }
    }

    /// Owner only: block until `wake` (true) or until the absolute deadline `deadline_ns`
    /// (`crate::time::nanotime`'s clock) passes (false). After false the note may still be
    /// woken later; the caller settles that under its own protocol (see `idle::stopm_until`).
    #[cfg(not(loom))]
    pub(crate) fn sleep_until(&self, deadline_ns: u64) -> bool {
        loop {
            // Acquire: pairs with the Release swap in `wake`.
            if self.key.load(Ordering::Acquire) != 0 {
                return true;
            }
            if futex_wait_until(&self.key, 0, deadline_ns) {
                // Acquire: as above (a wake may have raced the timeout).
                return self.key.load(Ordering::Acquire) != 0;
            }
        }
    }

    /// Whether the note was signalled (the owner, before blocking elsewhere: the network
    /// poller's `block_idle`).
    pub(crate) fn is_signalled(&self) -> bool {
        // Acquire: pairs with the Release swap in `wake`.
        self.key.load(Ordering::Acquire) != 0
    }

    /// Owner only: block until `wake`.
    pub(crate) fn sleep(&self) {
        #[cfg(not(loom))]
        // Acquire: pairs with the Release swap in `wake`.
        while self.key.load(Ordering::Acquire) == 0 {
            futex_wait(&self.key, 0, None);
        }
        #[cfg(loom)]
        {
            let mut g = self.lock.lock().unwrap();
            // Acquire: pairs with the Release swap in `wake`.
            while self.key.load(Ordering::Acquire) == 0 {
                g = self.cv.wait(g).unwrap();
            }
        }
    }
}
