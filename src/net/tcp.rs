//! `TcpListener` and `TcpStream` on the network poller (see `net/mod.rs`).

use super::{Sock, socket_common, stream_io, sys};
use crate::netpoll::fd::Registration;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A TCP listening socket. Accepting parks the calling goroutine until a connection arrives.
///
/// ```
/// use std::io::{Read, Write};
/// gort::run(|| {
///     let l = gort::net::TcpListener::bind("127.0.0.1:0").unwrap();
///     let addr = l.local_addr().unwrap();
///     let h = gort::go(move || {
///         let (mut c, _) = l.accept().unwrap();
///         let mut b = [0; 5];
///         c.read_exact(&mut b).unwrap();
///         c.write_all(&b).unwrap();
///     });
///     let mut s = gort::net::TcpStream::connect(addr).unwrap();
///     s.write_all(b"hello").unwrap();
///     let mut b = [0; 5];
///     s.read_exact(&mut b).unwrap();
///     assert_eq!(&b, b"hello");
///     h.join().unwrap();
/// });
/// ```
pub struct TcpListener {
    sock: Sock<std::net::TcpListener>,
}

/// A TCP connection. `Read`/`Write` (also through `&TcpStream`) park the calling goroutine
/// while the socket is not ready.
pub struct TcpStream {
    sock: Sock<std::net::TcpStream>,
}

socket_common!(TcpListener, std::net::TcpListener);
socket_common!(TcpStream, std::net::TcpStream);
stream_io!(TcpStream, read_tcp);

impl TcpListener {
    /// Bind and listen (std's `bind`: `SO_REUSEADDR`, the first address that works). The
    /// backlog is the system maximum (`somaxconn`).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let l = std::net::TcpListener::bind(addr)?;
        // Raise std's backlog to the system's maximum (Go listens with somaxconn too): a
        // listen on a listening socket only changes the backlog. Negative means "the
        // maximum" to Linux (it clamps as unsigned).
        // SAFETY: our open fd; no pointers. No EINTR (listen does not block).
        crate::netpoll::epoll::syscall!(once, listen(l.as_raw_fd(), -1))?;
        TcpListener::from_std(l)
    }

    /// Accept a connection (parks until one arrives). An error such as `EMFILE` is returned
    /// as is; the listener keeps working (the pending connection stays queued).
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, a) = self.sock.read(|l| l.accept())?;
        Ok((TcpStream::from_std(s)?, a))
    }

    /// An endless iterator of accepted connections (std's `incoming`).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.local_addr()
    }

    /// `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.inner.set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.sock.inner.ttl()
    }
}

/// The iterator of [`TcpListener::incoming`].
#[derive(Debug)]
pub struct Incoming<'a> {
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;
    fn next(&mut self) -> Option<io::Result<TcpStream>> {
        Some(self.listener.accept().map(|(s, _)| s))
    }
}

impl TcpStream {
    /// Connect to the first address that accepts (parks while connecting).
    pub fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_inner(&a, None) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "could not resolve to any addresses",
            )
        }))
    }

    /// Connect with a timeout (`TimedOut` when it passes; a zero duration is an error, as
    /// std).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_inner(addr, Some(timeout))
    }

    fn connect_inner(addr: &SocketAddr, timeout: Option<Duration>) -> io::Result<TcpStream> {
        let domain = match addr {
            SocketAddr::V4(_) => libc::AF_INET,
            SocketAddr::V6(_) => libc::AF_INET6,
        };
        let fd = sys::socket(domain, libc::SOCK_STREAM)?;
        let (sa, len) = sys::sockaddr_inet(addr);
        let done = sys::connect_start(fd.as_raw_fd(), &sa as *const _ as *const _, len)?;
        let raw = fd.as_raw_fd();
        let s: std::net::TcpStream = fd.into();
        let sock = Sock::new(s)?;
        if !done {
            wait_connect(&sock.reg, raw, timeout)?;
        }
        Ok(TcpStream { sock })
    }

    /// The remote address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.local_addr()
    }

    /// Shut down the read half, the write half, or both (a reader blocked on this socket
    /// wakes and reads end-of-file).
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.inner.shutdown(how)
    }

    /// Read without consuming (parks until data or end-of-file).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read_tcp(None, |s| s.peek(buf))
    }

    /// `TCP_NODELAY`.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.sock.inner.set_nodelay(nodelay)
    }

    /// `TCP_NODELAY`.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.sock.inner.nodelay()
    }

    /// `IP_TTL`.
    pub fn set_ttl(&self, ttl: u32) -> io::Result<()> {
        self.sock.inner.set_ttl(ttl)
    }

    /// `IP_TTL`.
    pub fn ttl(&self) -> io::Result<u32> {
        self.sock.inner.ttl()
    }
}

/// Wait for a connect in progress, bounded by `timeout` (the write timeout, restored after).
pub(super) fn wait_connect(
    reg: &Registration,
    fd: std::os::fd::RawFd,
    timeout: Option<Duration>,
) -> io::Result<()> {
    use crate::netpoll::fd::Dir;
    reg.set_timeout(Dir::Write, timeout)?;
    let r = sys::connect_finish(reg, fd);
    reg.set_timeout(Dir::Write, None)?;
    r
}
