//! Socket system calls std does not offer in non-blocking form: creating a socket with
//! `SOCK_NONBLOCK | SOCK_CLOEXEC`, and a non-blocking `connect` (address conversion included).

use crate::netpoll::epoll::syscall;
use crate::netpoll::fd::{Dir, Registration};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// A new non-blocking, close-on-exec socket.
pub(crate) fn socket(domain: libc::c_int, ty: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: no pointers. EINTR cannot happen (socket does not block); `once` is exact.
    let fd = syscall!(
        once,
        socket(domain, ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    )?;
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `addr` as a `sockaddr_storage` and its length.
pub(crate) fn sockaddr_inet(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any sockaddr.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in, sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write(&mut st as *mut _ as *mut libc::sockaddr_in6, sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (st, len as libc::socklen_t)
}

/// `path` as a `sockaddr_un` and its length (a path too long is `InvalidInput`, as std).
pub(crate) fn sockaddr_unix(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sun: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "paths must not contain interior null bytes",
        ));
    }
    if bytes.len() >= sun.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "path must be shorter than SUN_LEN",
        ));
    }
    for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let base = std::mem::offset_of!(libc::sockaddr_un, sun_path);
    let len = base + bytes.len() + usize::from(!bytes.is_empty());
    Ok((sun, len as libc::socklen_t))
}

/// Start a non-blocking `connect`. `Ok(true)`: connected at once; `Ok(false)`: in progress
/// (EINPROGRESS; also EINTR, after which the connection proceeds asynchronously — so it is
/// never retried, which would fail with EALREADY).
pub(crate) fn connect_start(
    fd: RawFd,
    sa: *const libc::sockaddr,
    len: libc::socklen_t,
) -> io::Result<bool> {
    // SAFETY: `sa` points to `len` valid bytes of a sockaddr (our callers build it). EINTR:
    // `once`, handled below.
    match syscall!(once, connect(fd, sa, len)) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Wait until the connection started on `fd` completes (Go's `fd.connect` tail): writable,
/// then `SO_ERROR` — still pending: wait again; zero and a peer name: connected.
pub(crate) fn connect_finish(reg: &Registration, fd: RawFd) -> io::Result<()> {
    reg.io(Dir::Write, || {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `err`/`len` are valid out-parameters of the right size. No EINTR.
        syscall!(
            once,
            getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut err as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        )?;
        match err {
            0 => {}
            libc::EINPROGRESS | libc::EALREADY | libc::EINTR => {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            e => return Err(io::Error::from_raw_os_error(e)),
        }
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut st: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut sl = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // SAFETY: valid out-parameters. No EINTR.
        match syscall!(
            once,
            getpeername(fd, &mut st as *mut _ as *mut libc::sockaddr, &mut sl)
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
                Err(io::ErrorKind::WouldBlock.into())
            }
            Err(e) => Err(e),
        }
    })
}
