//! `UnixListener`, `UnixStream` and `UnixDatagram` on the network poller (see
//! `net/mod.rs`).

use super::{Sock, socket_common, stream_io, sys};
use std::io;
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;

/// A Unix-domain listening socket.
pub struct UnixListener {
    sock: Sock<std::os::unix::net::UnixListener>,
}

/// A Unix-domain stream connection (`Read`/`Write`, also through `&UnixStream`).
pub struct UnixStream {
    sock: Sock<std::os::unix::net::UnixStream>,
}

/// A Unix-domain datagram socket.
pub struct UnixDatagram {
    sock: Sock<std::os::unix::net::UnixDatagram>,
}

socket_common!(UnixListener, std::os::unix::net::UnixListener);
socket_common!(UnixStream, std::os::unix::net::UnixStream);
socket_common!(UnixDatagram, std::os::unix::net::UnixDatagram);
stream_io!(UnixStream, read_plain);

impl UnixListener {
    /// Bind to `path` and listen.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        UnixListener::from_std(std::os::unix::net::UnixListener::bind(path)?)
    }

    /// Accept a connection (parks until one arrives).
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (s, a) = self.sock.read(|l| l.accept())?;
        Ok((UnixStream::from_std(s)?, a))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.local_addr()
    }
}

impl UnixStream {
    /// Connect to the socket at `path`. A listener with a full backlog fails at once with
    /// `WouldBlock` (a non-blocking Unix `connect` cannot be waited for; Go reports it too).
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let fd = sys::socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
        let (sun, len) = sys::sockaddr_unix(path.as_ref())?;
        let done = sys::connect_start(fd.as_raw_fd(), &sun as *const _ as *const _, len)?;
        let raw = fd.as_raw_fd();
        let s: std::os::unix::net::UnixStream = fd.into();
        let sock = Sock::new(s)?;
        if !done {
            super::tcp::wait_connect(&sock.reg, raw, None)?;
        }
        Ok(UnixStream { sock })
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.local_addr()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.peer_addr()
    }

    /// Shut down the read half, the write half, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.inner.shutdown(how)
    }
}

impl UnixDatagram {
    /// Bind to `path`.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::bind(path)?)
    }

    /// An unbound socket.
    pub fn unbound() -> io::Result<UnixDatagram> {
        UnixDatagram::from_std(std::os::unix::net::UnixDatagram::unbound()?)
    }

    /// A connected pair.
    pub fn pair() -> io::Result<(UnixDatagram, UnixDatagram)> {
        let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
        Ok((UnixDatagram::from_std(a)?, UnixDatagram::from_std(b)?))
    }

    /// Set the default peer. Does not block.
    pub fn connect<P: AsRef<Path>>(&self, path: P) -> io::Result<()> {
        self.sock.inner.connect(path)
    }

    /// Send to the socket at `path` (parks while the peer's queue is full).
    pub fn send_to<P: AsRef<Path>>(&self, buf: &[u8], path: P) -> io::Result<usize> {
        let path = path.as_ref();
        self.sock.write(|s| s.send_to(buf, path))
    }

    /// Send to the connected peer.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(|s| s.send(buf))
    }

    /// Receive one datagram and its sender.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.sock.read(|s| s.recv_from(buf))
    }

    /// Receive one datagram.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.read(|s| s.recv(buf))
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.local_addr()
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.sock.inner.peer_addr()
    }

    /// Shut down the read half, the write half, or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.sock.inner.shutdown(how)
    }
}
