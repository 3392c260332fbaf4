//! Integration tests of `gort::net` and the network poller, loopback only (127.0.0.1 and Unix
//! sockets), every loop bounded.
//!
//! Scenarios where scheduling matters run at GOMAXPROCS = 1, 2 and 8 (`at_procs!`), each on
//! its own [`Runtime`] under a generous hang guard. Timeouts are asserted only in the exact
//! direction (never before the deadline); lateness is never asserted.
//!
//! Tests that change process-wide state (the fd limit) or measure the process (CPU time,
//! thread count) run in child processes: this binary re-run with `--exact child` and
//! `GORT_NET_CHILD=<role>`. The 10,000-connection test uses two children, a server and a
//! client, because each side needs 10,000 fds and the hard limit may be 20,000.

#[macro_use]
mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gort::Runtime;
use gort::net::{TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream};

const HANG_GUARD: Duration = Duration::from_secs(120);

fn guarded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    common::run_guarded(HANG_GUARD, body)
}

fn runtime(procs: usize) -> Runtime {
    Runtime::builder().procs(procs).build().unwrap()
}

fn under_qemu() -> bool {
    common::emulator().is_some() || std::env::var_os("GORT_TEST_RUNNER").is_some()
}

/// Assert `e` is a timeout and `start` is at least `d` ago.
fn assert_timed_out<T: std::fmt::Debug>(r: std::io::Result<T>, start: Instant, d: Duration) {
    let e = r.expect_err("expected a timeout");
    assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
    assert!(
        start.elapsed() >= d,
        "timed out early: {:?} < {d:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Echo through the scheduler.

/// 16 client goroutines × 50 round trips against a goroutine-per-connection echo server.
fn echo_many(procs: usize) {
    let rt = runtime(procs);
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = gort::go(move || {
            for _ in 0..16 {
                let (mut c, _) = l.accept().unwrap();
                gort::go(move || {
                    let mut b = [0u8; 256];
                    loop {
                        match c.read(&mut b) {
                            Ok(0) => return,
                            Ok(n) => c.write_all(&b[..n]).unwrap(),
                            Err(e) => panic!("server read: {e}"),
                        }
                    }
                });
            }
        });
        let clients: Vec<_> = (0..16u8)
            .map(|i| {
                gort::go(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_nodelay(true).unwrap();
                    for j in 0..50u8 {
                        let msg = [i, j, 7, 9];
                        s.write_all(&msg).unwrap();
                        let mut got = [0u8; 4];
                        s.read_exact(&mut got).unwrap();
                        assert_eq!(got, msg);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        server.join().unwrap();
    });
}

/// A connected loopback TCP pair: (the connecting side, the accepted side).
fn loopback_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    (c, l.accept().unwrap().0)
}

/// A connection on 127.0.0.1: its writing end, and one goroutine per buffer size reading the
/// other end through a shared `&TcpStream` until end-of-file, adding what it reads to the
/// returned count (Release).
fn shared_readers(sizes: &[usize]) -> (TcpStream, Vec<gort::JoinHandle<()>>, Arc<AtomicUsize>) {
    let (w, r) = loopback_pair();
    let r = Arc::new(r);
    let total = Arc::new(AtomicUsize::new(0));
    let readers = sizes
        .iter()
        .map(|&size| {
            let (r, total) = (r.clone(), total.clone());
            gort::go(move || {
                let mut b = vec![0u8; size];
                loop {
                    match (&*r).read(&mut b) {
                        Ok(0) => return,
                        Ok(n) => total.fetch_add(n, Ordering::Release),
                        Err(e) => panic!("{e}"),
                    };
                }
            })
        })
        .collect();
    (w, readers, total)
}

/// Two goroutines read one `&TcpStream` at once (the per-direction wait lock): every byte is
/// received exactly once.
fn concurrent_readers(procs: usize) {
    let rt = runtime(procs);
    rt.block_on(|| {
        let (mut w, readers, total) = shared_readers(&[7, 7]);
        for i in 0..1000u32 {
            w.write_all(&[i as u8]).unwrap();
            if i % 100 == 0 {
                gort::yield_now();
            }
        }
        w.shutdown(Shutdown::Write).unwrap();
        for h in readers {
            h.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Acquire), 1000);
    });
}

/// Two goroutines read one `&TcpStream` with different buffer sizes (so reads are sometimes
/// full, sometimes short: the drained hint is set under them), and the writer sends its next
/// chunk only once every byte of the last one has arrived. A reader that waits for an edge
/// while data sits in the socket (a wrongly trusted hint, a missed edge) stalls the
/// conversation: no more data would come to wake it.
fn concurrent_readers_conversation(procs: usize) {
    let rt = runtime(procs);
    rt.block_on(|| {
        let (mut w, readers, total) = shared_readers(&[3, 64]);
        w.set_nodelay(true).unwrap();
        let mut sent = 0;
        let mut x = 12345u32;
        for round in 0..400 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let len = 1 + (x >> 16) as usize % 100;
            w.write_all(&vec![round as u8; len]).unwrap();
            sent += len;
            let start = Instant::now();
            while total.load(Ordering::Acquire) < sent {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "round {round}: {} of {sent} bytes arrived: a reader waits with data queued",
                    total.load(Ordering::Acquire)
                );
                gort::sleep(Duration::from_micros(50));
            }
        }
        w.shutdown(Shutdown::Write).unwrap();
        for h in readers {
            h.join().unwrap();
        }
        assert_eq!(total.load(Ordering::Acquire), sent);
    });
}

/// The blocking-poll path: every P idle (the test thread sleeps outside the runtime), one
/// goroutine waits on a socket and one sleeps on a timer; both wake.
fn blocking_poll_wakes_both(procs: usize) {
    let rt = runtime(procs);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let reader = rt.spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut b = [0u8; 3];
        s.read_exact(&mut b).unwrap();
        b
    });
    let sleeper = rt.spawn(|| {
        let t = Instant::now();
        gort::sleep(Duration::from_millis(30));
        t.elapsed()
    });
    let (mut peer, _) = l.accept().unwrap();
    // Every P idles now: the timer fires while an M blocks in epoll, then the socket wakes.
    std::thread::sleep(Duration::from_millis(80));
    let before = rt.stats();
    peer.write_all(b"abc").unwrap();
    assert_eq!(&reader.join().unwrap(), b"abc");
    assert!(sleeper.join().unwrap() >= Duration::from_millis(30));
    let after = rt.stats();
    assert!(after.net_readied > before.net_readied, "{after}");
    assert!(after.net_blocking_polls > 0, "{after}");
}

at_procs!(
    echo_many,
    concurrent_readers,
    concurrent_readers_conversation,
    blocking_poll_wakes_both
);

/// Tests that start busy loops, or need the CPUs free of them, run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Busy loops in child processes (`sh`), one per CPU but `spare`, killed on drop; tests with
/// them run one at a time (`serial`).
struct Burners {
    children: Vec<std::process::Child>,
    _serial: std::sync::MutexGuard<'static, ()>,
}

impl Burners {
    /// `None` (the test has nothing to show) below 2 CPUs or above 16.
    fn on_cpus_but(spare: usize) -> Option<(usize, Burners)> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if !(2..=16).contains(&cpus) {
            return None;
        }
        let serial = serial();
        let children = (0..cpus - spare)
            .map(|_| {
                let mut sh = std::process::Command::new("sh");
                sh.args(["-c", "while :; do :; done"]);
                // Killed with us even if this process is (a timeout, ^C): no busy loop may
                // outlive the tests.
                common::dies_with_parent(&mut sh);
                sh.spawn().expect("spawning sh")
            })
            .collect();
        Some((
            cpus,
            Burners {
                children,
                _serial: serial,
            },
        ))
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A ping-pong between a goroutine echo server and a plain-thread client of this process on
/// a runtime whose Ms are not pinned (so its sampler runs). `each` is asked before every round
/// trip with the runtime's statistics and stops the exchange by returning false; the server's
/// count of echoed messages must equal the client's.
fn ping_pong_until(mut each: impl FnMut(&gort::Stats) -> bool + Send + 'static) {
    guarded(move || {
        let rt = Runtime::builder()
            .procs(2)
            .pin_threads(false)
            .build()
            .unwrap();
        let l = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = l.local_addr().unwrap();
        let server = rt.spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 1];
            let mut n = 0u64;
            while s.read(&mut b).unwrap() == 1 {
                s.write_all(&b).unwrap();
                n += 1;
            }
            n
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let mut sent = 0u64;
        while each(&rt.stats()) {
            let b = [sent as u8];
            c.write_all(&b).unwrap();
            let mut r = [0u8; 1];
            c.read_exact(&mut r).unwrap();
            assert_eq!(r, b);
            sent += 1;
        }
        drop(c);
        assert_eq!(server.join().unwrap(), sent, "every message came back");
    });
}

/// The M about to block in the poller spins first when a CPU would otherwise idle
/// (`netpoll/place.rs`, "Spinning before blocking"): in a ping-pong whose client is a thread
/// of this process, a spin catches the next message. On a machine whose CPUs other processes
/// keep busy the runtime must not spin; so if no spin caught a message in 20 s, the test fails
/// only if the sampler saw at least 0.2 of a CPU idle in most of its checks.
#[test]
fn the_blocker_spins_when_a_cpu_is_spare() {
    let _serial = serial();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return;
    }
    let start = Instant::now();
    let (mut checks, mut roomy) = (0u32, 0u32);
    ping_pong_until(move |st| {
        if st.net_blocker_spin_hits > 0 {
            return false;
        }
        if let Some(idle) = st.net_cpu_idle_milli {
            checks += 1;
            roomy += u32::from(idle >= 200);
        }
        if start.elapsed() > Duration::from_secs(20) {
            assert!(
                roomy * 2 < checks,
                "the CPUs idled 0.2 of a CPU or more in {roomy} of {checks} checks, yet no \
                 spin caught a message in 20 s: {st}"
            );
            println!("CPUs busy here ({roomy} of {checks} checks with room): no spin to see");
            return false;
        }
        true
    });
}

/// With a busy loop of another process on every CPU, the blocker does not spin (it would
/// take the CPU from them): no spin in 500 round trips, counted from 300 ms after the
/// sampler's first figure (the average's first samples may still see the loops starting).
#[test]
fn the_blocker_does_not_spin_beside_busy_processes() {
    let Some((cpus, burners)) = Burners::on_cpus_but(0) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut first_figure: Option<Instant> = None;
    let mut counted: Option<(u64, u32)> = None;
    ping_pong_until(move |st| {
        assert!(Instant::now() < deadline, "no CPU sample in 60 s: {st}");
        if st.net_cpu_idle_milli.is_none() {
            return true;
        }
        let since = *first_figure.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_millis(300) {
            return true;
        }
        let (spins, n) = counted.get_or_insert((st.net_blocker_spins, 0));
        assert_eq!(
            st.net_blocker_spins, *spins,
            "spun beside {cpus} busy loops (idle {:?}/1000): {st}",
            st.net_cpu_idle_milli
        );
        *n += 1;
        *n < 500
    });
    drop(burners);
}

/// Goroutines a network poll brings back wake no helper M while other processes take the
/// CPUs (`netpoll/place.rs`, "Helpers"): with a busy loop on every allowed CPU but one, a
/// ping-pong with one goroutine at GOMAXPROCS 2 (Ms not pinned, so the CPUs are sampled) has
/// its helpers withheld, and every message still comes back. The bound only catches a gate
/// that never closes; no timing is asserted.
#[test]
fn polled_goroutines_wake_no_helper_beside_busy_processes() {
    let Some((cpus, burners)) = Burners::on_cpus_but(1) else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    ping_pong_until(move |st| {
        assert!(
            Instant::now() < deadline,
            "no helper withheld in 60 s beside {} busy loop(s): {st}",
            cpus - 1
        );
        st.net_helpers_withheld == 0
    });
    drop(burners);
}

/// A FIN that arrives with the last data: the read returns the data (short) and the kernel
/// eats the FIN, so the next read returns end-of-file at once with no edge to come. It must
/// not wait for one (`netpoll::fd`, "Drained TCP reads"). The writer corks its socket so that
/// the data and the FIN leave in one segment.
#[test]
fn fin_with_the_last_data_ends_the_next_read() {
    guarded(|| {
        let rt = runtime(1);
        rt.block_on(|| {
            for round in 0..20 {
                let (w, mut r) = loopback_pair();
                let (done, finished) = gort::chan::bounded(1);
                gort::go(move || {
                    let mut got = 0;
                    let mut b = [0u8; 4096];
                    loop {
                        match r.read(&mut b) {
                            Ok(0) => break,
                            Ok(n) => got += n,
                            Err(e) => panic!("round {round} after {got} bytes: {e}"),
                        }
                    }
                    let _ = done.send(got);
                });
                // Let the reader park, then send 100 bytes and the FIN in one segment.
                gort::sleep(Duration::from_millis(5));
                let one: libc::c_int = 1;
                // SAFETY: a valid option value for an open TCP socket.
                let rc = unsafe {
                    libc::setsockopt(
                        w.as_raw_fd(),
                        libc::IPPROTO_TCP,
                        libc::TCP_CORK,
                        (&one as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                assert_eq!(rc, 0);
                (&w).write_all(&[5u8; 100]).unwrap();
                w.shutdown(Shutdown::Write).unwrap();
                // A hang bound: end-of-file follows the data at once.
                match finished.recv_timeout(Duration::from_secs(5)) {
                    Ok(got) => assert_eq!(got, 100),
                    Err(e) => {
                        panic!("round {round}: the reader missed the end of the stream ({e:?})")
                    }
                }
            }
        });
    });
}

/// The urgent-data tests' reader: reads until it has three bytes or the stream ends, calling
/// `before_read` before each read.
fn read_three(r: &mut TcpStream, round: usize, mut before_read: impl FnMut()) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 4096];
    while got.len() < 3 {
        before_read();
        match r.read(&mut b) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&b[..n]),
            Err(e) => panic!("round {round} after {got:?}: {e}"),
        }
    }
    got
}

/// Urgent data (`MSG_OOB`) makes a read stop short at the mark with data behind it: the
/// drained hint must not be taken from that read (`netpoll::fd`, "Drained TCP reads"), or
/// the reader would wait for an edge that never comes.
#[test]
fn urgent_data_does_not_strand_a_read() {
    guarded(|| {
        let rt = runtime(1);
        rt.block_on(|| {
            for round in 0..20 {
                let (w, mut r) = loopback_pair();
                w.set_nodelay(true).unwrap();
                let (done, finished) = gort::chan::bounded(1);
                gort::go(move || {
                    let _ = done.send(read_three(&mut r, round, || {}));
                });
                // Let the reader park, then queue "a", the urgent "b" (out of band: not in
                // the stream) and "cd" behind it, back to back.
                gort::sleep(Duration::from_millis(5));
                let fd = w.as_raw_fd();
                // SAFETY: valid buffers and an open socket.
                unsafe {
                    assert_eq!(libc::send(fd, b"ab".as_ptr().cast(), 2, libc::MSG_OOB), 2);
                    assert_eq!(libc::send(fd, b"cd".as_ptr().cast(), 2, 0), 2);
                }
                // A hang bound: the bytes are all there within microseconds.
                match finished.recv_timeout(Duration::from_secs(5)) {
                    Ok(got) => assert_eq!(got, b"acd"),
                    Err(e) => {
                        panic!("round {round}: the reader is stranded behind urgent data ({e:?})")
                    }
                }
            }
        });
    });
}

/// A receive that starts at the urgent mark with a signal pending returns `EAGAIN` with the
/// data behind the mark queued, and no edge follows (`netpoll::fd`, "Urgent data and
/// signals"). gort's own preemption signal is a SIGURG to the reader's M, so with short quanta
/// the reader of `urgent_data_does_not_strand_a_read` waited for good now and then. Here a
/// plain thread sends SIGURGs to the reader's thread while it reads past the mark (the
/// runtime's handler passes on a SIGURG it did not request, and SIGURG's default is to
/// ignore it), so that in some of the rounds a signal is pending at the mark.
#[test]
fn a_signal_at_the_urgent_mark_does_not_strand_a_read() {
    guarded(|| {
        let rt = runtime(1);
        rt.block_on(|| {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            for round in 0..150 {
                let (w, mut r) = loopback_pair();
                w.set_nodelay(true).unwrap();
                let tid = Arc::new(AtomicUsize::new(0));
                let stop = Arc::new(AtomicUsize::new(0));
                let (done, finished) = gort::chan::bounded(1);
                let reader_tid = tid.clone();
                gort::go(move || {
                    let got = read_three(&mut r, round, || {
                        // The thread it reads on now (a read may resume on another M).
                        // SAFETY: gettid has no preconditions.
                        reader_tid.store(unsafe { libc::gettid() } as usize, Ordering::SeqCst);
                    });
                    let _ = done.send(got);
                });
                // Let the reader park (and say which thread it runs on).
                gort::sleep(Duration::from_millis(2));
                let (t, st) = (tid.clone(), stop.clone());
                let signaller = std::thread::spawn(move || {
                    while st.load(Ordering::SeqCst) < 2 {
                        let tid = t.load(Ordering::SeqCst) as libc::pid_t;
                        // SAFETY: a signal whose disposition is ours or ignored, to a thread
                        // of this process (an M: it lives as long as the runtime).
                        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGURG) };
                        st.compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
                            .ok();
                    }
                });
                // The signals must be flying when the reader reaches the mark.
                while stop.load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
                let fd = w.as_raw_fd();
                // SAFETY: valid buffers and an open socket.
                unsafe {
                    assert_eq!(libc::send(fd, b"ab".as_ptr().cast(), 2, libc::MSG_OOB), 2);
                    assert_eq!(libc::send(fd, b"cd".as_ptr().cast(), 2, 0), 2);
                }
                // A hang bound: the bytes are all there within microseconds.
                let got = finished.recv_timeout(Duration::from_secs(5));
                stop.store(2, Ordering::SeqCst);
                signaller.join().unwrap();
                match got {
                    Ok(got) => assert_eq!(got, b"acd"),
                    Err(e) => panic!("round {round}: the reader is stranded at the mark ({e:?})"),
                }
            }
        });
    });
}

// ---------------------------------------------------------------------------------------------
// Timeouts and deadlines.

#[test]
fn read_timeout_and_deadline() {
    guarded(|| {
        runtime(2).block_on(|| {
            let (mut s, peer) = loopback_pair();
            let d = Duration::from_millis(40);
            s.set_read_timeout(Some(d)).unwrap();
            assert_eq!(s.read_timeout().unwrap(), Some(d));
            let t = Instant::now();
            assert_timed_out(s.read(&mut [0u8; 8]), t, d);
            assert_eq!(
                s.set_read_timeout(Some(Duration::ZERO)).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
            s.set_read_timeout(None).unwrap();
            // A deadline in the past fails a blocking read at once.
            s.set_read_deadline(Some(Instant::now()));
            assert_eq!(
                s.read(&mut [0u8; 8]).unwrap_err().kind(),
                ErrorKind::TimedOut
            );
            // Data that is there is returned even past the deadline (std's semantics).
            (&peer).write_all(b"x").unwrap();
            gort::sleep(Duration::from_millis(10));
            assert_eq!(s.read(&mut [0u8; 8]).unwrap(), 1);
            // A deadline set while a reader is blocked: it re-reads it and times out.
            s.set_read_deadline(None);
            let s = Arc::new(s);
            let s2 = s.clone();
            let h = gort::go(move || {
                let t = Instant::now();
                ((&*s2).read(&mut [0u8; 8]), t)
            });
            gort::sleep(Duration::from_millis(20));
            s.set_read_deadline(Some(Instant::now() + Duration::from_millis(20)));
            let (r, _) = h.join().unwrap();
            assert_eq!(r.unwrap_err().kind(), ErrorKind::TimedOut);
            drop(peer);
        })
    });
}

#[test]
fn write_timeout_fills_buffer() {
    guarded(|| {
        runtime(2).block_on(|| {
            let (mut s, _peer) = loopback_pair(); // never reads
            let d = Duration::from_millis(40);
            s.set_write_timeout(Some(d)).unwrap();
            let chunk = vec![0u8; 64 * 1024];
            let mut written = 0usize;
            let err = loop {
                assert!(written < 256 << 20, "wrote 256 MiB without blocking");
                let t = Instant::now();
                match s.write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) => break (e, t),
                }
            };
            assert_eq!(err.0.kind(), ErrorKind::TimedOut, "{}", err.0);
            assert!(err.1.elapsed() >= d);
            assert!(written > 0);
        })
    });
}

#[test]
fn accept_timeout() {
    guarded(|| {
        runtime(1).block_on(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let d = Duration::from_millis(30);
            l.set_read_timeout(Some(d)).unwrap();
            let t = Instant::now();
            assert_timed_out(l.accept(), t, d);
            // And it still accepts afterwards.
            let addr = l.local_addr().unwrap();
            let c = gort::go(move || TcpStream::connect(addr).unwrap());
            l.accept().unwrap();
            c.join().unwrap();
        })
    });
}

/// connect_timeout against a listener whose accept queue is full: Linux drops the SYNs, so
/// the connect stays in progress until the timeout.
#[test]
fn connect_timeout_full_backlog() {
    guarded(|| {
        runtime(2).block_on(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            // SAFETY: our listening fd; backlog 0 (an accept queue of one).
            assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
            let addr = l.local_addr().unwrap();
            let d = Duration::from_millis(100);
            let mut held = Vec::new();
            for _ in 0..16 {
                let t = Instant::now();
                match TcpStream::connect_timeout(&addr, d) {
                    Ok(s) => held.push(s),
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::TimedOut, "{e}");
                        assert!(t.elapsed() >= d);
                        return;
                    }
                }
            }
            eprintln!("skipped: 16 connects to a full backlog all succeeded (SYNs not dropped?)");
        })
    });
}

#[test]
fn connect_refused_is_an_error() {
    guarded(|| {
        runtime(1).block_on(|| {
            let addr = {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap()
            };
            let e = TcpStream::connect(addr).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Closing, resets, half-close.

/// `shutdown` from another handle wakes a blocked reader (end-of-file); dropping a `try_clone`
/// leaves the original working.
#[test]
fn shutdown_wakes_blocked_reader() {
    guarded(|| {
        runtime(2).block_on(|| {
            let (s, mut peer) = loopback_pair();
            let s2 = s.try_clone().unwrap();
            let h = gort::go(move || {
                let mut s2 = s2;
                s2.read(&mut [0u8; 8])
            });
            gort::sleep(Duration::from_millis(20));
            s.shutdown(Shutdown::Read).unwrap();
            assert_eq!(h.join().unwrap().unwrap(), 0);
            (&s).write_all(b"still").unwrap();
            let mut b = [0u8; 5];
            peer.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"still");
        })
    });
}

/// A peer that closes with SO_LINGER 0 resets the connection: an `io::Error`, no panic.
#[test]
fn peer_reset_is_an_error() {
    guarded(|| {
        runtime(2).block_on(|| {
            let (mut s, peer) = loopback_pair();
            let reader = gort::go(move || {
                let r = s.read(&mut [0u8; 8]);
                (r, s)
            });
            gort::sleep(Duration::from_millis(20));
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: a valid option value of the right size on our socket.
            let rc = unsafe {
                libc::setsockopt(
                    peer.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    &linger as *const libc::linger as *const libc::c_void,
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
            assert_eq!(rc, 0);
            drop(peer);
            let (r, mut s) = reader.join().unwrap();
            assert_eq!(r.unwrap_err().kind(), ErrorKind::ConnectionReset);
            // Writing to a reset connection is an error too (no SIGPIPE).
            let mut failed = false;
            for _ in 0..8 {
                if s.write(b"x").is_err() {
                    failed = true;
                    break;
                }
            }
            assert!(failed);
        })
    });
}

/// Half-close: the client shuts its write half; the server reads to end-of-file, then replies.
#[test]
fn half_close() {
    guarded(|| {
        runtime(2).block_on(|| {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let server = gort::go(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut all = Vec::new();
                c.read_to_end(&mut all).unwrap();
                c.write_all(&(all.len() as u32).to_le_bytes()).unwrap();
            });
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(&[1u8; 10_000]).unwrap();
            s.shutdown(Shutdown::Write).unwrap();
            let mut b = Vec::new();
            s.read_to_end(&mut b).unwrap();
            assert_eq!(b, 10_000u32.to_le_bytes());
            server.join().unwrap();
        })
    });
}

// ---------------------------------------------------------------------------------------------
// UDP and Unix sockets.

#[test]
fn udp_send_recv_timeout() {
    guarded(|| {
        runtime(2).block_on(|| {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
            let d = Duration::from_millis(30);
            b.set_read_timeout(Some(d)).unwrap();
            let t = Instant::now();
            assert_timed_out(b.recv_from(&mut [0u8; 16]), t, d);
            // The echo below must not race the 30 ms timeout on a loaded machine.
            b.set_read_timeout(None).unwrap();
            let h = gort::go(move || {
                let mut buf = [0u8; 16];
                let (n, from) = b.recv_from(&mut buf).unwrap();
                b.send_to(&buf[..n], from).unwrap();
                b
            });
            gort::sleep(Duration::from_millis(10));
            a.send_to(b"ping", ba).unwrap();
            let mut buf = [0u8; 16];
            let (n, from) = a.recv_from(&mut buf).unwrap();
            assert_eq!((&buf[..n], from), (&b"ping"[..], ba));
            let b = h.join().unwrap();
            a.connect(ba).unwrap();
            b.connect(aa).unwrap();
            a.send(b"pong").unwrap();
            assert_eq!(b.recv(&mut buf).unwrap(), 4);
            assert_eq!(&buf[..4], b"pong");
        })
    });
}

#[test]
fn unix_stream_and_datagram() {
    guarded(|| {
        runtime(2).block_on(|| {
            let dir = std::env::temp_dir().join(format!("gort-net-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("s.sock");
            let l = UnixListener::bind(&path).unwrap();
            let server = gort::go(move || {
                let (mut c, _) = l.accept().unwrap();
                let mut b = [0u8; 5];
                c.read_exact(&mut b).unwrap();
                c.write_all(&b).unwrap();
            });
            let mut c = UnixStream::connect(&path).unwrap();
            c.write_all(b"hello").unwrap();
            let mut b = [0u8; 5];
            c.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"hello");
            server.join().unwrap();

            let (mut x, mut y) = UnixStream::pair().unwrap();
            let d = Duration::from_millis(30);
            y.set_read_timeout(Some(d)).unwrap();
            let t = Instant::now();
            assert_timed_out(y.read(&mut b), t, d);
            x.write_all(b"12345").unwrap();
            y.read_exact(&mut b).unwrap();
            assert_eq!(&b, b"12345");

            let (p, q) = UnixDatagram::pair().unwrap();
            q.set_read_timeout(Some(d)).unwrap();
            let t = Instant::now();
            assert_timed_out(q.recv(&mut b), t, d);
            let h = gort::go(move || {
                let mut b = [0u8; 8];
                let n = q.recv(&mut b).unwrap();
                b[..n].to_vec()
            });
            gort::sleep(Duration::from_millis(10));
            p.send(b"dgram").unwrap();
            assert_eq!(h.join().unwrap(), b"dgram");
            let _ = std::fs::remove_dir_all(&dir);
        })
    });
}

/// A plain thread (no goroutine) using gort sockets blocks, and is woken by the poller.
#[test]
fn plain_thread_blocks() {
    guarded(|| {
        let rt = runtime(1);
        let l = rt.block_on(|| TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
            c.write_all(&b).unwrap();
            c.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            let t = Instant::now();
            assert_timed_out(c.read(&mut b), t, Duration::from_millis(20));
        });
        std::thread::sleep(Duration::from_millis(30));
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        t.join().unwrap();
        drop(rt);
    });
}

#[test]
fn std_conversions() {
    guarded(|| {
        runtime(1).block_on(|| {
            let l: TcpListener = std::net::TcpListener::bind("127.0.0.1:0").unwrap().into();
            let addr = l.local_addr().unwrap();
            let c = gort::go(move || TcpStream::connect(addr).unwrap());
            let (s, _) = l.accept().unwrap();
            let c = c.join().unwrap();
            let std_s: std::net::TcpStream = s.into();
            std_s
                .set_read_timeout(Some(Duration::from_millis(5)))
                .unwrap();
            // Blocking again: a std read with a timeout reports WouldBlock (std on Linux). A
            // socket with a timeout makes recv(2) fail with EINTR when a signal arrives, even
            // under SA_RESTART, and a goroutine blocked in the kernel without `gort::syscall`
            // receives preemption signals (as in Go since 1.14): retry, as callers must.
            let e = loop {
                let e = (&std_s).read(&mut [0u8; 1]).unwrap_err();
                if e.kind() != ErrorKind::Interrupted {
                    break e;
                }
            };
            assert!(
                matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "{e:?}"
            );
            use std::os::fd::{FromRawFd, IntoRawFd};
            let fd = c.into_raw_fd();
            // SAFETY: `fd` is an open TCP socket we own (just given up by `c`).
            let c = unsafe { TcpStream::from_raw_fd(fd) };
            (&c).write_all(b"z").unwrap();
            let mut b = [0u8; 1];
            (&std_s).read_exact(&mut b).unwrap();
            assert_eq!(&b, b"z");
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Child processes: fd limits, CPU time, thread counts.

const CHILD_ENV: &str = "GORT_NET_CHILD";

fn child_ok(role: &str, env: &[(&str, &str)]) -> String {
    common::child_ok(CHILD_ENV, role, env, HANG_GUARD)
}

#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    match role.as_str() {
        "idle_cpu" => idle_cpu_child(),
        "emfile" => emfile_child(),
        "server10k" => server10k_child(),
        "client10k" => client10k_child(),
        other => panic!("unknown child role {other}"),
    }
    println!("{role} ok");
}

/// An idle runtime with registered sockets (and a goroutine blocked reading one) uses about no
/// CPU: one M blocks in epoll_wait, the others on their futexes.
#[test]
fn idle_runtime_with_sockets_uses_no_cpu() {
    child_ok("idle_cpu", &[]);
}

fn idle_cpu_child() {
    let rt = runtime(2);
    let (l, s, r) = rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (r, _) = l.accept().unwrap();
        (l, Arc::new(s), r)
    });
    let s2 = s.clone();
    let blocked = rt.spawn(move || (&*s2).read(&mut [0u8; 4]));
    std::thread::sleep(Duration::from_millis(50));
    let c0 = common::cpu_time();
    std::thread::sleep(Duration::from_millis(200));
    let used = common::cpu_time() - c0;
    println!("idle with sockets: {used:?} CPU in 200 ms");
    assert!(
        used < Duration::from_millis(40),
        "idle runtime used {used:?} of CPU"
    );
    (&r).write_all(b"done").unwrap();
    assert_eq!(blocked.join().unwrap().unwrap(), 4);
    drop(l);
}

/// `accept` hitting EMFILE returns the error; the listener works again once fds are free.
#[test]
fn accept_emfile_recovers() {
    child_ok("emfile", &[]);
}

fn emfile_child() {
    let rt = runtime(2);
    rt.block_on(|| {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        // The clients connect first (queued in the backlog), then the limit leaves room
        // for only a few accepted sockets.
        let clients: Vec<_> = (0..16).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: valid out-parameter.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let saved = lim;
        // The lowest free fd number bounds the open ones from below; allow a few more.
        let probe = std::fs::File::open("/dev/null").unwrap();
        let used = probe.as_raw_fd() as u64 + 1;
        drop(probe);
        lim.rlim_cur = used + 3;
        // SAFETY: a valid rlimit value.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let mut held = Vec::new();
        let mut saw_emfile = false;
        for _ in 0..clients.len() {
            match l.accept() {
                Ok((s, _)) => held.push(s),
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                    saw_emfile = true;
                    break;
                }
            }
        }
        assert!(saw_emfile, "never hit EMFILE");
        let held_n = held.len();
        held.clear();
        // The pending connection is still queued: accept now succeeds.
        let (s, _) = l.accept().unwrap();
        drop(s);
        // SAFETY: restoring the saved limit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
        println!(
            "EMFILE seen with {} of {} accepted; recovered",
            held_n,
            clients.len()
        );
    });
}

/// Raise the soft fd limit to `want` (at most the hard limit). Returns the limit before and
/// the one now in force.
fn raise_nofile(want: u64) -> (libc::rlimit, u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-parameter.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let saved = lim;
    lim.rlim_cur = want.min(lim.rlim_max);
    // SAFETY: a valid rlimit value.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    (saved, lim.rlim_cur)
}

fn restore_nofile(saved: libc::rlimit) {
    // SAFETY: restoring the saved limit.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &saved) }, 0);
}

fn threads_now() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Connections and messages per connection of the big test (scaled down under qemu-user,
/// where every system call is emulated: 1,000 x 20 already overran the hang guard).
fn big_shape() -> (usize, usize) {
    if under_qemu() {
        (200, 10)
    } else {
        (10_000, 100)
    }
}

const MSG: usize = 16;

/// 10,000 concurrent TCP connections at GOMAXPROCS = 2, each echoing 100 messages exactly,
/// with the thread count of the server staying at about GOMAXPROCS + a few.
#[test]
fn tcp_10k_connections() {
    guarded(|| {
        let (conns, _) = big_shape();
        let mut server = common::self_command();
        server
            .args(["--exact", "child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "server10k")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        /// Kills the server if the test fails before it exits.
        struct Reap(std::process::Child);
        impl Drop for Reap {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut server = Reap(server.spawn().unwrap());
        let mut out = std::io::BufReader::new(server.0.stdout.take().unwrap());
        use std::io::BufRead;
        let mut port = None;
        for _ in 0..50 {
            let mut line = String::new();
            if out.read_line(&mut line).unwrap() == 0 {
                break;
            }
            // The harness may print "test child ... " before it on the same line.
            if let Some(i) = line.find("PORT ") {
                port = Some(line[i + 5..].trim().to_string());
                break;
            }
        }
        let port = port.expect("the server child did not print its port");
        let client = common::run_child_test(
            CHILD_ENV,
            "client10k",
            &[("GORT_NET_PORT", &port)],
            &[],
            HANG_GUARD,
        );
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = server.0.wait().unwrap();
        eprint!("{}{rest}", String::from_utf8_lossy(&client.stdout));
        assert!(
            client.status.success(),
            "client: {}",
            common::describe(&client)
        );
        assert!(
            status.success() && rest.contains("server10k ok"),
            "server: {rest}"
        );
        assert!(rest.contains(&format!("max_concurrent={conns}")), "{rest}");
    });
}

fn server10k_child() {
    let (conns, msgs) = big_shape();
    let (saved, now) = raise_nofile(conns as u64 + 256);
    if now < conns as u64 + 64 {
        panic!(
            "RLIMIT_NOFILE hard limit {} is too low for {conns} connections per process \
             (raise it with `ulimit -Hn`)",
            saved.rlim_max
        );
    }
    let procs = 2;
    // The harness's own threads are not the runtime's: count from here.
    let before = threads_now();
    // The default quantum, whatever GORT_QUANTUM_US says: the bound below is the default
    // configuration's. With thread-handoff preemption every preempted goroutine keeps its
    // thread until it runs again, and on a machine this loaded a goroutine whose M the
    // kernel has descheduled for a quantum is preempted too, so 100 µs quanta take the
    // server to 36 threads (measured), where 10 ms quanta keep it at 6.
    let rt = Runtime::builder()
        .procs(procs)
        .preempt_quantum(Duration::from_millis(10))
        .build()
        .unwrap();
    let live = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let max_threads = Arc::new(AtomicUsize::new(0));
    let (live2, max2, max_threads2) = (live.clone(), max.clone(), max_threads.clone());
    rt.block_on(move || {
        let (live, max, max_threads) = (live2, max2, max_threads2);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        println!("PORT {}", l.local_addr().unwrap().port());
        let wg = Arc::new(gort::sync::WaitGroup::new());
        // Accept every connection before echoing on any: all are open at once on this side
        // too (the client holds its own until every one is connected).
        let accepted: Vec<TcpStream> = (0..conns).map(|_| l.accept().unwrap().0).collect();
        max.store(accepted.len(), Ordering::Relaxed);
        for mut c in accepted {
            live.fetch_add(1, Ordering::Relaxed);
            let (live, wg, max_threads) = (live.clone(), wg.clone(), max_threads.clone());
            wg.add(1);
            gort::go(move || {
                let mut b = [0u8; MSG];
                for _ in 0..msgs {
                    c.read_exact(&mut b).unwrap();
                    c.write_all(&b).unwrap();
                }
                // The client closes after its last reply.
                assert_eq!(c.read(&mut b).unwrap(), 0);
                max_threads.fetch_max(threads_now(), Ordering::Relaxed);
                live.fetch_sub(1, Ordering::Relaxed);
                wg.done();
            });
        }
        wg.wait();
    });
    // Ms (with sysmon). Past GOMAXPROCS: the poller's and the timers' watchers, and, on a
    // loaded machine, Ms holding goroutines preempted by thread handoff.
    let threads = max_threads.load(Ordering::Relaxed) - before;
    let st = rt.stats();
    println!(
        "server: max_concurrent={} runtime threads(max seen)={threads} procs={procs}\n{st}",
        max.load(Ordering::Relaxed)
    );
    assert!(
        threads <= procs + 8,
        "{threads} runtime threads at GOMAXPROCS={procs} (expected about GOMAXPROCS + a few)"
    );
    restore_nofile(saved);
}

fn client10k_child() {
    let (conns, msgs) = big_shape();
    let (saved, now) = raise_nofile(conns as u64 + 256);
    assert!(
        now >= conns as u64 + 64,
        "RLIMIT_NOFILE hard limit {} is too low for {conns} connections",
        saved.rlim_max
    );
    let port: u16 = std::env::var("GORT_NET_PORT").unwrap().parse().unwrap();
    let rt = runtime(2);
    let t = Instant::now();
    rt.block_on(move || {
        let connected = Arc::new(gort::sync::WaitGroup::new());
        let go_ahead = Arc::new(gort::sync::WaitGroup::new());
        go_ahead.add(1);
        connected.add(conns as i32);
        let hs: Vec<_> = (0..conns)
            .map(|i| {
                let (connected, go_ahead) = (connected.clone(), go_ahead.clone());
                gort::go(move || {
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    connected.done();
                    // All connections are open at once before any echoes.
                    go_ahead.wait();
                    let mut b = [0u8; MSG];
                    for j in 0..msgs {
                        let mut m = [0u8; MSG];
                        m[..8].copy_from_slice(&(i as u64).to_le_bytes());
                        m[8..].copy_from_slice(&(j as u64).to_le_bytes());
                        s.write_all(&m).unwrap();
                        s.read_exact(&mut b).unwrap();
                        assert_eq!(b, m);
                    }
                })
            })
            .collect();
        connected.wait();
        go_ahead.done();
        for h in hs {
            h.join().unwrap();
        }
    });
    println!(
        "client: {conns} connections x {msgs} round trips in {:?}",
        t.elapsed()
    );
    restore_nofile(saved);
}
