//! Goroutine networking: TCP, UDP and Unix-domain sockets with std's names and shapes, on the
//! runtime's network poller.
//!
//! # Model
//! Each type wraps the std socket of the same name, switched to non-blocking mode, plus a
//! registration with the runtime's poller (`netpoll::fd::Registration`). Every operation
//! that can block is std's non-blocking call in a loop: on `WouldBlock` the calling
//! goroutine parks until epoll reports readiness (its M runs other goroutines meanwhile); a
//! plain thread blocks on a futex instead. No operation ever costs a thread. Everything that
//! cannot block (addresses, options, `shutdown`) is std's call unchanged.
//!
//! * **Timeouts** (`set_read_timeout`, `set_write_timeout`) work as std's: they bound each
//!   blocking call, which then fails with `ErrorKind::TimedOut` (std reports `WouldBlock` on
//!   Linux; `TimedOut` is what the name promises). A zero duration is an error, as std.
//! * **Deadlines** (`set_read_deadline`, `set_write_deadline`) are Go's: an absolute
//!   `Instant` for every blocking call in that direction until changed, and a call blocked
//!   right now re-reads it. Each blocking call uses the earlier of the two.
//! * A socket registers with the runtime of the goroutine that creates it (the default
//!   runtime on a plain thread), and is served by that runtime's Ms.
//! * Which runtime closes: dropping a socket deregisters it (any waiter is woken with an
//!   error — reachable only through raw fds, since a waiter borrows the socket), then closes
//!   the fd. `try_clone` is a `dup` with its own registration, as std: dropping one handle
//!   leaves the other working; `shutdown` is the way to wake a reader of another handle.
//! * Name resolution (`ToSocketAddrs` with host names) is std's and blocks the calling thread.
//! * A peer reset is an `io::Error` (`ConnectionReset`, `BrokenPipe`): writes use
//!   `MSG_NOSIGNAL` (std's), so there is no `SIGPIPE`.
//!
//! # Conversions
//! `From<std type>` (registers; panics if the poller cannot be created — use `from_std` for
//! the error), `From<gort type> for std type` (deregisters and restores blocking mode),
//! `AsRawFd`/`AsFd`, `IntoRawFd` (deregisters; the fd stays non-blocking), `FromRawFd` (as
//! `From`).

mod sys;
mod tcp;
mod udp;
mod unix;

pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
pub use unix::{UnixDatagram, UnixListener, UnixStream};

use crate::netpoll::fd::{Dir, Registration};
use std::io;
use std::os::fd::AsRawFd;

/// A std socket in non-blocking mode with its poller registration. Field order matters: the
/// registration is dropped (deregistered) before the socket is closed.
struct Sock<S: AsRawFd> {
    reg: Registration,
    inner: S,
}

impl<S: AsRawFd> Sock<S> {
    /// `inner` must already be non-blocking.
    fn new(inner: S) -> io::Result<Sock<S>> {
        let reg = Registration::new(inner.as_raw_fd())?;
        Ok(Sock { reg, inner })
    }

    /// A TCP read of `len` bytes (`None`: a peek), with the drained hint
    /// (`netpoll::fd`, "Drained TCP reads").
    fn read_tcp(
        &self,
        len: Option<usize>,
        mut f: impl FnMut(&S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.reg.read_tcp(len, || f(&self.inner))
    }

    /// A stream read of `len` bytes without the hint (Unix streams: see `netpoll::fd`).
    fn read_plain(
        &self,
        _len: Option<usize>,
        f: impl FnMut(&S) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.read(f)
    }

    /// A read-side operation: `f` until it does not block.
    fn read<T>(&self, mut f: impl FnMut(&S) -> io::Result<T>) -> io::Result<T> {
        self.reg.io(Dir::Read, || f(&self.inner))
    }

    /// A write-side operation: `f` until it does not block.
    fn write<T>(&self, mut f: impl FnMut(&S) -> io::Result<T>) -> io::Result<T> {
        self.reg.io(Dir::Write, || f(&self.inner))
    }

    /// Deregister and give the socket back (still non-blocking).
    fn into_inner(self) -> S {
        let Sock { reg, inner } = self;
        drop(reg);
        inner
    }
}

fn register_or_panic<T>(r: io::Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("gort::net: cannot register the socket with the network poller: {e}"),
    }
}

/// What every socket type shares: timeouts, deadlines, fd conversions, std conversions.
macro_rules! socket_common {
    ($ty:ident, $std:ty) => {
        impl $ty {
            /// Wrap a std socket (switched to non-blocking mode) and register it with the
            /// calling goroutine's runtime (the default runtime on a plain thread).
            pub fn from_std(s: $std) -> std::io::Result<$ty> {
                s.set_nonblocking(true)?;
                Ok($ty {
                    sock: $crate::net::Sock::new(s)?,
                })
            }

            /// Each blocking read-side call fails with `TimedOut` after `dur` (`None`: no
            /// timeout). A zero duration is an `InvalidInput` error (as std).
            pub fn set_read_timeout(
                &self,
                dur: Option<std::time::Duration>,
            ) -> std::io::Result<()> {
                self.sock
                    .reg
                    .set_timeout($crate::netpoll::fd::Dir::Read, dur)
            }

            /// Each blocking write-side call fails with `TimedOut` after `dur`.
            pub fn set_write_timeout(
                &self,
                dur: Option<std::time::Duration>,
            ) -> std::io::Result<()> {
                self.sock
                    .reg
                    .set_timeout($crate::netpoll::fd::Dir::Write, dur)
            }

            /// The read timeout.
            pub fn read_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.sock.reg.timeout($crate::netpoll::fd::Dir::Read))
            }

            /// The write timeout.
            pub fn write_timeout(&self) -> std::io::Result<Option<std::time::Duration>> {
                Ok(self.sock.reg.timeout($crate::netpoll::fd::Dir::Write))
            }

            /// Go's `SetReadDeadline`: read-side calls that would block past `at` fail with
            /// `TimedOut` (`None` clears it). A call blocked now re-reads it.
            pub fn set_read_deadline(&self, at: Option<std::time::Instant>) {
                self.sock
                    .reg
                    .set_deadline($crate::netpoll::fd::Dir::Read, at)
            }

            /// Go's `SetWriteDeadline` (see [`Self::set_read_deadline`]).
            pub fn set_write_deadline(&self, at: Option<std::time::Instant>) {
                self.sock
                    .reg
                    .set_deadline($crate::netpoll::fd::Dir::Write, at)
            }

            /// Both deadlines (Go's `SetDeadline`).
            pub fn set_deadline(&self, at: Option<std::time::Instant>) {
                self.set_read_deadline(at);
                self.set_write_deadline(at);
            }

            /// The pending socket error (`SO_ERROR`), cleared by reading it.
            pub fn take_error(&self) -> std::io::Result<Option<std::io::Error>> {
                self.sock.inner.take_error()
            }

            /// A new handle to the same socket (a `dup`, registered on its own; timeouts and
            /// deadlines are per handle).
            pub fn try_clone(&self) -> std::io::Result<$ty> {
                $ty::from_std(self.sock.inner.try_clone()?)
            }
        }

        impl From<$std> for $ty {
            #[doc = concat!(
                        "As [`", stringify!($ty), "::from_std`]; panics if the socket cannot be ",
                        "registered (the poller could not be created: out of fds)."
                    )]
            fn from(s: $std) -> $ty {
                $crate::net::register_or_panic($ty::from_std(s))
            }
        }

        impl From<$ty> for $std {
            /// Deregister and restore blocking mode.
            fn from(s: $ty) -> $std {
                let inner = s.sock.into_inner();
                // A failure leaves it non-blocking, which the caller sees as WouldBlock.
                let _ = inner.set_nonblocking(false);
                inner
            }
        }

        impl std::os::fd::AsRawFd for $ty {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&self.sock.inner)
            }
        }

        impl std::os::fd::AsFd for $ty {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                std::os::fd::AsFd::as_fd(&self.sock.inner)
            }
        }

        impl std::os::fd::IntoRawFd for $ty {
            /// Deregister and give up the fd (it stays non-blocking).
            fn into_raw_fd(self) -> std::os::fd::RawFd {
                std::os::fd::IntoRawFd::into_raw_fd(self.sock.into_inner())
            }
        }

        impl std::os::fd::FromRawFd for $ty {
            /// As `From<std type>`.
            unsafe fn from_raw_fd(fd: std::os::fd::RawFd) -> $ty {
                // SAFETY: forwarded contract (an open socket fd of this kind that we own).
                $ty::from(unsafe { <$std>::from_raw_fd(fd) })
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.sock.inner))
                    .finish()
            }
        }
    };
}
use socket_common;

/// `Read`/`Write` for a stream type and for a shared reference to it; `$read` is the
/// `Sock` method for reads (`read_tcp` or `read_plain`).
macro_rules! stream_io {
    ($ty:ident, $read:ident) => {
        impl std::io::Read for &$ty {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let len = buf.len();
                self.sock
                    .$read(Some(len), |s| std::io::Read::read(&mut &*s, buf))
            }
            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                let len = bufs.iter().map(|b| b.len()).sum();
                self.sock
                    .$read(Some(len), |s| std::io::Read::read_vectored(&mut &*s, bufs))
            }
        }
        impl std::io::Write for &$ty {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.sock.write(|s| std::io::Write::write(&mut &*s, buf))
            }
            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                self.sock
                    .write(|s| std::io::Write::write_vectored(&mut &*s, bufs))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl std::io::Read for $ty {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                (&*self).read(buf)
            }
            fn read_vectored(
                &mut self,
                bufs: &mut [std::io::IoSliceMut<'_>],
            ) -> std::io::Result<usize> {
                (&*self).read_vectored(bufs)
            }
        }
        impl std::io::Write for $ty {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                (&*self).write(buf)
            }
            fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
                (&*self).write_vectored(bufs)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
    };
}
use stream_io;
