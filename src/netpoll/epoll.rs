//! The OS half of the network poller: one epoll instance and its eventfd "break".
//!
//! Everything here is a thin, documented wrapper over a system call; the protocol that uses it
//! (who blocks, who breaks, what an event means) is in `netpoll/mod.rs`.

use crate::time::heap::NO_TIMER;
use std::io;
use std::os::fd::RawFd;

/// Turn a libc-style return value (`-1` and `errno` on failure) into an `io::Result`.
pub(crate) fn cvt<T: Copy + PartialEq + From<i8>>(r: T) -> io::Result<T> {
    if r == T::from(-1) {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

/// This thread's errno, read in a function of its own. std declares `__errno_location`
/// `ffi_const`, so LLVM may reuse its result anywhere in a function — and `cvt` is inlined
/// into retry loops (`Registration::io`) whose goroutine parks between two calls and may
/// resume on another thread: the second call's EAGAIN was then read from the *first* thread's
/// errno (seen under qemu, where every new thread starts with ENOSYS from
/// `set_robust_list`: `deregister_wakes_waiter` got `Unsupported`). Out of line, every call
/// finds the current thread's errno.
#[cold]
#[inline(never)]
pub(crate) fn last_errno() -> io::Error {
    io::Error::last_os_error()
}

/// Call a libc function and convert its result with [`cvt`]. The first token states the
/// EINTR policy, so that every call site says it:
/// * `retry`: the call is restarted on `EINTR` (non-blocking calls: restarting is exact);
/// * `once`: `EINTR` is returned to the caller as an error (which says what it does with it).
///
/// The call site's `// SAFETY:` comment argues the arguments (the macro's unsafe block only
/// forwards them).
macro_rules! syscall {
    (retry, $f:ident ( $($a:expr),* $(,)? )) => {
        loop {
            // SAFETY: the caller argues the arguments at the call site.
            match $crate::netpoll::epoll::cvt(unsafe { libc::$f($($a),*) }) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        }
    };
    (once, $f:ident ( $($a:expr),* $(,)? )) => {
        // SAFETY: the caller argues the arguments at the call site.
        $crate::netpoll::epoll::cvt(unsafe { libc::$f($($a),*) })
    };
}
pub(crate) use syscall;

/// `epoll_pwait2` (Linux 5.11): the same number on x86_64 and aarch64 (the unified table of
/// system calls added after 5.1). It takes a nanosecond timeout, so a blocking poll until a
/// timer's deadline neither wakes up to a millisecond early nor oversleeps by one.
const SYS_EPOLL_PWAIT2: libc::c_long = 441;

/// The epoll data of the eventfd (no poll descriptor is at address 0).
pub(crate) const BREAK_TAG: u64 = 0;

/// One epoll instance plus the eventfd that breaks a blocking wait on it.
pub(crate) struct Epoll {
    epfd: RawFd,
    evfd: RawFd,
    /// `epoll_pwait2` is unavailable (ENOSYS: an older kernel, or qemu-user): use
    /// `epoll_wait` with the timeout rounded *up* to whole milliseconds.
    no_pwait2: std::sync::atomic::AtomicBool,
}

impl Epoll {
    /// Create the instance and register the eventfd (level-triggered, so a break that no
    /// blocking poller drained stays pending until one does).
    pub(crate) fn new() -> io::Result<Epoll> {
        // SAFETY: no pointers; the flags are valid.
        let epfd = syscall!(once, epoll_create1(libc::EPOLL_CLOEXEC))
            .map_err(|e| io::Error::new(e.kind(), format!("gort: epoll_create1: {e}")))?;
        // SAFETY: no pointers; the flags are valid.
        let evfd = match syscall!(once, eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK)) {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: we own `epfd`; close is never retried (Linux frees the fd even on
                // EINTR).
                unsafe { libc::close(epfd) };
                return Err(io::Error::new(e.kind(), format!("gort: eventfd: {e}")));
            }
        };
        let ep = Epoll {
            epfd,
            evfd,
            no_pwait2: std::sync::atomic::AtomicBool::new(false),
        };
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: BREAK_TAG,
        };
        // SAFETY: both fds are ours and open; `ev` is a valid event. EINTR cannot happen
        // (epoll_ctl does not block).
        syscall!(once, epoll_ctl(epfd, libc::EPOLL_CTL_ADD, evfd, &mut ev))
            .map_err(|e| io::Error::new(e.kind(), format!("gort: epoll_ctl(eventfd): {e}")))?;
        Ok(ep)
    }

    /// Register `fd` once for the whole of its life: read, write, peer-shutdown and urgent-data
    /// readiness (`EPOLLPRI`: see `fd.rs`, "Drained TCP reads"), edge-triggered, with `data`
    /// (the tagged poll descriptor) returned in its events.
    pub(crate) fn add(&self, fd: RawFd, data: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN
                | libc::EPOLLOUT
                | libc::EPOLLRDHUP
                | libc::EPOLLPRI
                | libc::EPOLLET) as u32,
            u64: data,
        };
        // SAFETY: `ev` is a valid event; a bad `fd` is reported as EBADF. No EINTR.
        syscall!(once, epoll_ctl(self.epfd, libc::EPOLL_CTL_ADD, fd, &mut ev)).map(|_| ())
    }

    /// Deregister `fd` (before it is closed: a registration belongs to the open file
    /// description, which a `dup` elsewhere may keep alive after our close).
    pub(crate) fn del(&self, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as in `add` (pre-2.6.9 kernels wanted a non-null event; harmless). No EINTR.
        syscall!(once, epoll_ctl(self.epfd, libc::EPOLL_CTL_DEL, fd, &mut ev)).map(|_| ())
    }

    /// Wait for events until `deadline` (`crate::time::nanotime`'s clock; 0: do not block;
    /// [`NO_TIMER`]: no deadline). Returns how many entries of `events` were filled. EINTR
    /// and a failed wait return 0: every caller re-checks its state and polls again.
    pub(crate) fn wait(
        &self,
        events: &mut [std::mem::MaybeUninit<libc::epoll_event>],
        deadline: u64,
    ) -> usize {
        let max = events.len().min(i32::MAX as usize) as i32;
        let ptr = events.as_mut_ptr().cast::<libc::epoll_event>();
        let n = if deadline == 0 {
            // SAFETY: `ptr` points to `max` writable events. EINTR: returned as 0 (see above).
            unsafe { libc::epoll_wait(self.epfd, ptr, max, 0) }
        } else if deadline == NO_TIMER {
            // SAFETY: as above.
            unsafe { libc::epoll_wait(self.epfd, ptr, max, -1) }
        } else {
            let now = crate::time::nanotime();
            let rel = deadline.saturating_sub(now);
            self.wait_timeout(ptr, max, rel)
        };
        if n < 0 { 0 } else { n as usize }
    }

    fn wait_timeout(&self, ptr: *mut libc::epoll_event, max: i32, rel_ns: u64) -> i32 {
        use std::sync::atomic::Ordering;
        // Relaxed: a sticky capability flag; a stale read costs one ENOSYS.
        if !self.no_pwait2.load(Ordering::Relaxed) {
            let ts = libc::timespec {
                tv_sec: (rel_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (rel_ns % 1_000_000_000) as libc::c_long,
            };
            // SAFETY: `ptr` points to `max` writable events, `ts` is a valid timespec, no
            // signal mask (null) and its size argument is ignored then.
            let r = unsafe {
                libc::syscall(
                    SYS_EPOLL_PWAIT2,
                    self.epfd,
                    ptr,
                    max,
                    &ts as *const libc::timespec,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                )
            };
            if r >= 0 || last_errno().raw_os_error() != Some(libc::ENOSYS) {
                return r as i32;
            }
            self.no_pwait2.store(true, Ordering::Relaxed);
        }
        // Round up: never wake before the deadline (the caller would only poll again).
        let ms = rel_ns.div_ceil(1_000_000).min(i32::MAX as u64) as i32;
        // SAFETY: as in `wait`.
        unsafe { libc::epoll_wait(self.epfd, ptr, max, ms) }
    }

    /// Make a blocked (or the next blocking) `wait` return: add 1 to the eventfd counter.
    /// Any thread; the caller deduplicates (`Poller::break_pending`).
    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. EINTR: retried. EAGAIN (the
        // counter is at its maximum) means a wake-up is pending anyway.
        let _ = syscall!(
            retry,
            write(self.evfd, &one as *const u64 as *const libc::c_void, 8)
        );
    }

    /// Reset the eventfd counter (the blocking poller, after it saw the break).
    pub(crate) fn drain(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd. EINTR:
        // retried; EAGAIN: already drained.
        let _ = syscall!(
            retry,
            read(self.evfd, &mut buf as *mut u64 as *mut libc::c_void, 8)
        );
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own both fds; close is never retried (Linux frees the fd even on EINTR).
        unsafe {
            libc::close(self.evfd);
            libc::close(self.epfd);
        }
    }
}
