//! The per-fd poll descriptor (Go's `pollDesc`): reader/writer slots, closing, deadlines; and
//! [`Registration`], the handle a socket holds (registration, I/O loop, timeouts).
//!
//! # The slots
//! Each direction (read, write) has one word:
//!
//! | value       | meaning                                            | owner of the transition out |
//! |-------------|----------------------------------------------------|-----------------------------|
//! | `NIL`       | nothing known, nobody waiting                      | —                           |
//! | `READY`     | an edge arrived while nobody waited                | the next waiter consumes it |
//! | `&Waiter`   | a party (goroutine or thread) waits, its `Waiter` on its own frame | whoever CASes it out |
//!
//! * Poller (an edge): `NIL -> READY`, or `&w -> NIL` and wake `w` (the readiness is handed to
//!   the woken party, which retries its system call); `READY -> READY` (a CAS, not a look:
//!   see `PollDesc::ready`).
//! * Kick (close, a deadline changed or expired): `&w -> NIL` and wake `w`; nothing otherwise
//!   (the flag it set before is read by every party before it waits).
//! * Waiter: `READY -> NIL` (consume: retry the call), else `NIL -> &w` and sleep. After it
//!   registered it re-reads `closing` and its deadline; if it must not sleep after all it tries
//!   `&w -> NIL` itself, and if that fails somebody else took it and is about to wake it: it
//!   waits for that.
//!
//! **Exactly one party CASes a waiter out of its slot**, and only that party touches the
//! `Waiter`: it claims it (which cannot fail: these waiters have no deadline of their own)
//! and wakes it; the waiter's frame stays alive until then because the waiter returns only
//! after being woken. The wake-up itself ([`Wakeup`]) touches only the G or a futex key.
//!
//! The per-fd flags and the slots are ordered by the slot's read-modify-writes: a kicker stores
//! its flag, then CASes (or reads) the slot; a waiter CASes the slot, then loads the flag —
//! both SeqCst, so either the kicker finds the waiter in the slot, or the waiter sees the flag
//! (a Dekker pair).
//!
//! # One waiter per direction, and edges nobody saw
//! Two goroutines may read one `&TcpStream` at once (Rust allows it; Go serialises `Read`
//! with `fd.readLock`). Only the *waiting* is serialised here, by a goroutine-aware mutex per
//! direction: a party that finds it taken waits for it, then retries its system call rather
//! than wait for an edge (the edge it would wait for may have been consumed by the holder,
//! which may have left data unread).
//!
//! That is not enough on its own: a party whose call found nothing (`EAGAIN`) may reach the
//! mutex only after the other party took the next edge *and* left — having read the end of
//! the stream, say, which is reported once — and then wait forever (a loom model of two
//! readers found it: `netpoll/loom_models.rs`, `two_readers`). So each direction also counts its
//! edges (`PollDesc::edges`, bumped by the poller before it touches the slot): a party loads
//! the count before its call and, once it holds the mutex, retries the call instead of
//! waiting if the count moved. An edge after that finds it in the slot, or leaves `READY`.
//!
//! # Drained TCP reads
//! A request/response connection reads a request, writes the answer and reads again; that
//! second read finds nothing and costs a system call just to learn so (`EAGAIN`) before the
//! goroutine parks. A TCP read that returns fewer bytes than asked for has emptied the
//! receive queue (the kernel stops short only when the queue is empty, at an urgent mark, or
//! after a FIN that came with the data), and every later arrival is followed by an edge. So
//! after such a read, as long as no read edge has been counted since before it, the next read
//! can wait for an edge first (tokio clears readiness on a short read for the same reason; Go
//! does not). The registration keeps the edge count loaded before the last short read
//! (`Registration::drained`); a stale value from a concurrent reader is harmless, since data
//! that reader did not take arrived after the short read, and its edge moved the count.
//!
//! The exceptions leave something for the next read with no edge to come: urgent data
//! (`MSG_OOB`: the read stops at the mark, data behind it), and the end of the stream or an
//! error arriving with the data (the read returns the data and eats the FIN; the next one
//! returns 0 or the error at once — seen in `half_close`, whose last segment carried the FIN).
//! Their arrival is reported with `EPOLLPRI`, `EPOLLRDHUP`, `EPOLLHUP` or `EPOLLERR`; the
//! poller then marks the descriptor `no_hint` (before counting the edge, so a reader that
//! loaded the count after it sees the mark) and no short read sets the hint again. A short
//! read whose event was not harvested yet is safe: that edge is still to come. Unix stream
//! sockets do not take the hint: with `SO_PASSCRED` or passed descriptors the kernel stops
//! short at a change of sender or after the descriptors, with data behind.
//!
//! # Urgent data and signals
//! A TCP receive that starts at the urgent mark while the thread has a signal pending stops
//! there with nothing read: Linux's `tcp_recvmsg` ("stop if we have read anything or have
//! SIGURG pending") returns `EAGAIN` to a non-blocking call — with the data behind the mark
//! queued and no edge to come. Our own preemption signal is a SIGURG sent to the M that runs
//! the reader, so with short quanta the reader waited for good now and then (4 runs in 188 of
//! the net suite under `GORT_PREEMPT=migrate GORT_QUANTUM_US=100`). So a TCP read that
//! would block on a descriptor marked `no_hint` (urgent data is reported with `EPOLLPRI`)
//! asks the kernel whether it stands at the mark (`SIOCATMARK`), and if so calls again: the
//! pending signal was delivered on the way out of the first call, and at the mark the next
//! one goes on past it. Unmarked descriptors pay nothing; a mark not yet harvested comes
//! with an edge that wakes the reader anyway.
//!
//! # Deadlines
//! Each wait computes its deadline (the handle's absolute deadline, or the call's start plus
//! its timeout, whichever is earlier). A waiting party arms a timer node on its own frame whose
//! callback is a kick; the party cancels it synchronously after waking (the `Waiter::wait_
//! deadline` pattern). Setting a deadline kicks the current waiter so it re-reads it. A woken
//! party retries its call, and reports `TimedOut` only when the call would block again and the
//! deadline has passed — so data that arrived with the deadline is still returned (std's
//! timeouts behave so; Go's deadlines fail even then).
//!
//! # Lifetime and reuse
//! Poll descriptors are never freed: a dropped socket's descriptor goes back to a process-wide
//! pool, its sequence number bumped — at drop, not at deregistration, since parties woken by
//! the deregistration may still be reading it. The epoll data of a registration is the descriptor's
//! address with the low 16 bits of the sequence number (Go's tagged pointer), so an event still
//! in flight for a closed fd finds either a free descriptor or one reused under another tag,
//! and is dropped. A stale event that slips between the tag check and the reuse costs only a
//! spurious wake-up (every woken party retries its call).

use crate::loom::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use crate::sched::Sched;
use crate::sched::park::{Waiter, Wakeup};
use crate::time::heap::{NO_TIMER, Running, TimerNode};
use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const NIL: usize = 0;
const READY: usize = 1;

/// Which half of the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    Read,
    Write,
}

/// Go's `pollDesc` (module docs). Lives forever (pooled); owned by one [`Registration`] at a
/// time.
pub(crate) struct PollDesc {
    /// Bumped when the descriptor is released; its low 16 bits tag epoll events.
    seq: AtomicU32,
    rg: AtomicUsize,
    wg: AtomicUsize,
    /// Edges delivered per direction, read and write (module docs, "edges nobody saw").
    edges: [AtomicU64; 2],
    /// The socket is being closed: waiters leave with an error.
    closing: AtomicBool,
    /// Urgent data, the end of the stream or an error was reported: short reads prove nothing
    /// any more (module docs, "Drained TCP reads").
    no_hint: AtomicBool,
    /// Absolute deadlines (`nanotime` clock) set on the handle, [`NO_TIMER`]: none.
    rd: AtomicU64,
    wd: AtomicU64,
}

/// Free poll descriptors (process-wide; descriptors are never freed, see module docs).
static POOL: crate::loom::Mutex<Vec<&'static PollDesc>> = crate::loom::Mutex::new(Vec::new());

impl PollDesc {
    fn alloc() -> &'static PollDesc {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pd) = pool.pop() {
            return pd;
        }
        drop(pool);
        let pd: &'static PollDesc = Box::leak(Box::new(PollDesc {
            seq: AtomicU32::new(0),
            rg: AtomicUsize::new(NIL),
            wg: AtomicUsize::new(NIL),
            edges: [AtomicU64::new(0), AtomicU64::new(0)],
            closing: AtomicBool::new(false),
            no_hint: AtomicBool::new(false),
            rd: AtomicU64::new(NO_TIMER),
            wd: AtomicU64::new(NO_TIMER),
        }));
        if (pd as *const PollDesc as u64) >> 48 != 0 {
            crate::sched::fatal("a poll descriptor above 2^48: the epoll tag cannot hold it");
        }
        pd
    }

    /// Reset for a new owner. Nobody else refers to it (it came off the pool).
    fn reset(&self) {
        // Relaxed (all): the descriptor is handed to its new owner through the pool's mutex
        // and published to pollers by `epoll_ctl` (a system call orders them).
        self.rg.store(NIL, Ordering::Relaxed);
        self.wg.store(NIL, Ordering::Relaxed);
        self.closing.store(false, Ordering::Relaxed);
        self.no_hint.store(false, Ordering::Relaxed);
        self.rd.store(NO_TIMER, Ordering::Relaxed);
        self.wd.store(NO_TIMER, Ordering::Relaxed);
    }

    /// The epoll data for this descriptor's current registration.
    fn tag(&self) -> u64 {
        // Relaxed: only the owner changes `seq` (at release, after deregistering).
        ((self as *const PollDesc as u64) << 16)
            | (self.seq.load(Ordering::Relaxed) & 0xffff) as u64
    }

    fn slot(&self, dir: Dir) -> &AtomicUsize {
        match dir {
            Dir::Read => &self.rg,
            Dir::Write => &self.wg,
        }
    }

    /// Edges delivered in `dir` so far. Relaxed: see `ready` (the count is bumped before the
    /// slot's CAS, and a party that needs it synchronises through that slot or the mutex).
    fn edges(&self, dir: Dir) -> u64 {
        self.edges[dir as usize].load(Ordering::Relaxed)
    }

    fn deadline_word(&self, dir: Dir) -> &AtomicU64 {
        match dir {
            Dir::Read => &self.rd,
            Dir::Write => &self.wd,
        }
    }

    /// Poller side: an edge for `dir`. Returns the waiter to wake, if one waited.
    fn ready(&self, dir: Dir) -> Option<Wakeup> {
        // Relaxed: published by the Release half of the slot's CAS below to whoever consumes
        // this edge; a party that later takes the wait mutex from it sees the count too.
        self.edges[dir as usize].fetch_add(1, Ordering::Relaxed);
        let slot = self.slot(dir);
        // Relaxed: the CASes below decide; this only picks the expected value.
        let mut cur = slot.load(Ordering::Relaxed);
        loop {
            // `READY` is rewritten, not just read: a plain load could be stale (reordered
            // before the count above, or simply old), and returning on it would publish
            // neither the edge nor the count to the party that consumes that `READY` — a
            // second reader could then wait with nothing to wake it (the two-reader loom
            // model found it).
            let new = match cur {
                NIL | READY => READY,
                _ => NIL,
            };
            // AcqRel: acquire the waiter's registration (its Waiter is initialised); release
            // our readiness and the edge count to the party that consumes `READY`.
            match slot.compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) if cur == NIL || cur == READY => return None,
                // SAFETY: we CASed the waiter out of the slot: we are its only notifier, and
                // it waits (its frame alive) until woken.
                Ok(_) => return unsafe { Waiter::claim(cur as *const Waiter) },
                Err(now) => cur = now,
            }
        }
    }

    /// Wake the waiter of `dir`, if any, without readiness (close, deadline change/expiry).
    /// The caller stored the reason (flag, deadline) before, with SeqCst (module docs).
    fn kick(&self, dir: Dir) -> Option<Wakeup> {
        let slot = self.slot(dir);
        // SeqCst: the kicker's half of the flag/slot Dekker pair (module docs).
        let cur = slot.load(Ordering::SeqCst);
        if cur == NIL || cur == READY {
            return None;
        }
        // SeqCst: as above; on success we own the waiter.
        if slot
            .compare_exchange(cur, NIL, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            // SAFETY: CASed out of the slot: we are its only notifier (module docs).
            return unsafe { Waiter::claim(cur as *const Waiter) };
        }
        // Somebody else took it (a poller or another kicker): it wakes it.
        None
    }

    fn closing(&self) -> bool {
        // SeqCst: the waiter's half of the flag/slot Dekker pair (module docs).
        self.closing.load(Ordering::SeqCst)
    }
}

/// Poller side: one epoll event with data `data`. Pushes the waiters to wake.
pub(crate) fn event(data: u64, events: u32, out: &mut super::Ready) {
    let addr = (data >> 16) as usize;
    if addr == 0 {
        return;
    }
    // SAFETY: tags are made from descriptors, which are never freed.
    let pd = unsafe { &*(addr as *const PollDesc) };
    // Relaxed: a stale tag only costs a spurious wake-up (module docs).
    if (pd.seq.load(Ordering::Relaxed) & 0xffff) as u64 != data & 0xffff {
        return;
    }
    let e = events as i32;
    if e & (libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
        // Relaxed: published to the reader by the Release half of `ready`'s CAS below.
        pd.no_hint.store(true, Ordering::Relaxed);
    }
    if e & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR)
        != 0
    {
        out.push(pd.ready(Dir::Read));
    }
    if e & (libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
        out.push(pd.ready(Dir::Write));
    }
}

/// A socket's registration with its runtime's poller: owns the poll descriptor (not the fd).
pub(crate) struct Registration {
    pd: &'static PollDesc,
    fd: RawFd,
    /// The runtime whose poller holds the registration. Weak: a socket owned by a goroutine
    /// that shutdown abandons must not keep its runtime alive (shutdown waits for the last
    /// reference).
    sched: Weak<Sched>,
    /// Serialise waiting per direction (module docs, "One waiter per direction").
    rmu: crate::sync::Mutex<()>,
    wmu: crate::sync::Mutex<()>,
    /// Per-call timeouts in ns, [`NO_TIMER`]: none. Relaxed: plain settings.
    rto: AtomicU64,
    wto: AtomicU64,
    /// Cleared by [`Registration::deregister`] (the descriptor may be reused after that).
    registered: AtomicBool,
    /// 1 + the read edge count loaded before the last short read, 0: none (module docs,
    /// "Drained TCP reads"). Relaxed: a hint validated against the count.
    drained: AtomicU64,
}

impl Registration {
    /// Register `fd` (already non-blocking) with the calling goroutine's runtime (the default
    /// runtime on a plain thread).
    pub(crate) fn new(fd: RawFd) -> io::Result<Registration> {
        let sched = crate::runtime::with_current(crate::time::sched_arc);
        let pd = PollDesc::alloc();
        pd.reset();
        if let Err(e) = sched.netpoll.register(fd, pd.tag()) {
            release(pd);
            return Err(e);
        }
        Ok(Registration {
            pd,
            fd,
            sched: Arc::downgrade(&sched),
            rmu: crate::sync::Mutex::new(()),
            wmu: crate::sync::Mutex::new(()),
            rto: AtomicU64::new(NO_TIMER),
            wto: AtomicU64::new(NO_TIMER),
            registered: AtomicBool::new(true),
            drained: AtomicU64::new(0),
        })
    }

    /// Run `f` (a non-blocking system call) until it does not report `WouldBlock`, waiting
    /// for readiness of `dir` in between. EINTR (`Interrupted`) is retried. Times out per the
    /// module docs with `ErrorKind::TimedOut`.
    pub(crate) fn io<T>(&self, dir: Dir, f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
        self.io_loop(dir, None, f, |_, _| {}, || false)
    }

    /// A TCP read of `len` bytes (`None`: a peek) by `f`, as [`Registration::io`] but using
    /// and keeping the drained hint (module docs, "Drained TCP reads").
    pub(crate) fn read_tcp(
        &self,
        len: Option<usize>,
        f: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let seen = self.pd.edges(Dir::Read);
        // Relaxed: validated against the count (module docs).
        let drained = self.drained.load(Ordering::Relaxed) == seen + 1 && len != Some(0);
        self.io_loop(
            Dir::Read,
            drained.then_some(seen),
            f,
            |&n, seen| {
                // Relaxed: the mark is published with the edge that a party which loaded the
                // count after it acquired; an edge not yet counted is still to come (module
                // docs).
                if n > 0 && len.is_some_and(|l| n < l) && !self.pd.no_hint.load(Ordering::Relaxed) {
                    // Relaxed: a hint validated against the count.
                    self.drained.store(seen + 1, Ordering::Relaxed);
                }
            },
            // Relaxed: as above; a mark not seen yet comes with an edge still to come.
            || self.pd.no_hint.load(Ordering::Relaxed) && at_urgent_mark(self.fd),
        )
    }

    /// The loop of [`Registration::io`] and [`Registration::read_tcp`]. `wait_first`: wait for
    /// an edge before the first call, the edge count having been `Some(count)` before it.
    /// `done(value, seen)` sees the successful result, with the count loaded before its call.
    /// `again()`, asked after a call reported `WouldBlock`, says that the report may be false
    /// with no edge to come: the call is retried instead of waiting (module docs, "Urgent
    /// data and signals").
    fn io_loop<T>(
        &self,
        dir: Dir,
        wait_first: Option<u64>,
        mut f: impl FnMut() -> io::Result<T>,
        done: impl FnOnce(&T, u64),
        again: impl Fn() -> bool,
    ) -> io::Result<T> {
        let mut call_deadline = None;
        let mut seen = wait_first.unwrap_or(0);
        let mut first_wait = wait_first.is_some();
        // A deadline that passed while waiting first: reported only if the call would block.
        let mut expired = None;
        loop {
            if !first_wait {
                seen = self.pd.edges(dir);
                match f() {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock && again() => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Ok(v) => {
                        done(&v, seen);
                        return Ok(v);
                    }
                    Err(e) => return Err(e),
                }
                if let Some(e) = expired.take() {
                    return Err(e);
                }
            }
            let to = self.timeout_word(dir).load(Ordering::Relaxed);
            // No timeout (the common case): no clock read.
            let from_timeout = *call_deadline.get_or_insert_with(|| {
                if to == NO_TIMER {
                    NO_TIMER
                } else {
                    crate::time::nanotime().saturating_add(to)
                }
            });
            match self.wait(dir, from_timeout, seen) {
                Ok(()) => {}
                // Data may be there with its edge not yet harvested: report the deadline only
                // when the call itself would block.
                Err(e) if first_wait && e.kind() == io::ErrorKind::TimedOut => expired = Some(e),
                Err(e) => return Err(e),
            }
            first_wait = false;
        }
    }

    /// Wait once for `dir`: `Ok` means "retry the call". `seen`: the edge count loaded
    /// before the call that would block.
    fn wait(&self, dir: Dir, call_deadline: u64, seen: u64) -> io::Result<()> {
        let pd = self.pd;
        // Acquire: pairs with the swap in `deregister`: once deregistered, no new waits.
        if !self.registered.load(Ordering::Acquire) || pd.closing() {
            return Err(closed_error());
        }
        let mu = match dir {
            Dir::Read => &self.rmu,
            Dir::Write => &self.wmu,
        };
        let _guard = match mu.try_lock() {
            Some(g) => g,
            None => {
                // Another party waits in this direction: wait for it, then retry the call.
                drop(mu.lock());
                return Ok(());
            }
        };
        if pd.edges(dir) != seen {
            // An edge since the call began, maybe taken by another party that has left
            // (module docs, "edges nobody saw"): retry the call.
            return Ok(());
        }
        let slot = pd.slot(dir);
        // Consume a pending edge. AcqRel: acquire the poller's readiness.
        if slot
            .compare_exchange(READY, NIL, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
        let w = Waiter::new();
        let me = &w as *const Waiter as usize;
        // SeqCst: the waiter's half of the flag/slot Dekker pair (module docs); also publishes
        // the initialised Waiter to whoever CASes it out (their AcqRel/SeqCst acquire).
        match slot.compare_exchange(NIL, me, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => {}
            Err(READY) => {
                // An edge arrived since the consume above: take it.
                // AcqRel: as above.
                let _ = slot.compare_exchange(READY, NIL, Ordering::AcqRel, Ordering::Relaxed);
                return Ok(());
            }
            Err(_) => crate::sched::fatal("two waiters in one direction of a poll descriptor"),
        }
        // SeqCst: the waiter's half of the Dekker pairs with close and set_deadline.
        let deadline = call_deadline.min(pd.deadline_word(dir).load(Ordering::SeqCst));
        // No deadline: no clock read (NO_TIMER is never "passed").
        if pd.closing() || (deadline != NO_TIMER && deadline <= crate::time::nanotime()) {
            // Leave the slot ourselves, unless somebody already took us out of it.
            // SeqCst: as the registration.
            if slot
                .compare_exchange(me, NIL, Ordering::SeqCst, Ordering::Relaxed)
                .is_err()
            {
                w.wait();
            }
            return if pd.closing() {
                Err(closed_error())
            } else {
                Err(timed_out())
            };
        }
        // The runtime for the deadline timer: a goroutine's own (alive while it runs; no
        // reference held while parked, so shutdown can abandon it), or for a plain thread the
        // socket's, held for the wait (shutting that runtime down waits for the wait to end).
        let m = crate::sched::m::current_m();
        let held: Option<Arc<Sched>>;
        let s: &Sched = if m.is_null() {
            held = self.sched.upgrade();
            match &held {
                Some(s) => s,
                None => {
                    if slot
                        .compare_exchange(me, NIL, Ordering::SeqCst, Ordering::Relaxed)
                        .is_err()
                    {
                        w.wait();
                    }
                    return Err(closed_error());
                }
            }
        } else {
            // SAFETY: this thread's M; its runtime outlives the running goroutine.
            unsafe { &(*m).sched }
        };
        // A deadline: a timer on this frame kicks us (module docs).
        let ctx = KickCtx { slot, me };
        let node = TimerNode::new(deadline_fired, &ctx as *const KickCtx as usize);
        if deadline != NO_TIMER {
            // SAFETY: `node` stays in this frame until `cancel_sync` below; armed on `s` only.
            unsafe { node.arm(s, deadline, 0) };
        }
        if m.is_null() {
            // A plain thread does not pass through the scheduler: make sure an M polls.
            super::ensure_poller(s);
        }
        w.wait();
        if deadline != NO_TIMER {
            // SAFETY: armed on `s` above.
            unsafe { node.cancel_sync(s) };
        }
        Ok(())
    }

    fn timeout_word(&self, dir: Dir) -> &AtomicU64 {
        match dir {
            Dir::Read => &self.rto,
            Dir::Write => &self.wto,
        }
    }

    /// std's `set_read_timeout`/`set_write_timeout`: `None` clears; a zero duration is an
    /// `InvalidInput` error (as std).
    pub(crate) fn set_timeout(&self, dir: Dir, d: Option<Duration>) -> io::Result<()> {
        let ns = match d {
            Some(d) if d.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot set a 0 duration timeout",
                ));
            }
            Some(d) => crate::time::duration_ns(d).clamp(1, NO_TIMER - 1),
            None => NO_TIMER,
        };
        // Relaxed: a setting read at the start of each blocking wait.
        self.timeout_word(dir).store(ns, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn timeout(&self, dir: Dir) -> Option<Duration> {
        // Relaxed: as in `set_timeout`.
        match self.timeout_word(dir).load(Ordering::Relaxed) {
            NO_TIMER => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Go's `SetReadDeadline`/`SetWriteDeadline`: an absolute deadline for every blocking
    /// wait in `dir` (`None` clears it); a party waiting now re-reads it.
    pub(crate) fn set_deadline(&self, dir: Dir, at: Option<Instant>) {
        let ns = at.map_or(NO_TIMER, crate::time::instant_to_nanos);
        // SeqCst: the kicker's half of the Dekker pair with a registering waiter.
        self.pd.deadline_word(dir).store(ns, Ordering::SeqCst);
        if let Some(w) = self.pd.kick(dir) {
            w.wake();
        }
    }

    /// Wake every waiter with an error and deregister (before the fd is closed or given
    /// away). Idempotent.
    pub(crate) fn deregister(&self) {
        // AcqRel: exactly one caller proceeds; pairs with the Acquire load in `wait`.
        if !self.registered.swap(false, Ordering::AcqRel) {
            return;
        }
        // SeqCst: the kicker's half of the Dekker pair (module docs).
        self.pd.closing.store(true, Ordering::SeqCst);
        for dir in [Dir::Read, Dir::Write] {
            if let Some(w) = self.pd.kick(dir) {
                w.wake();
            }
        }
        if let Some(s) = self.sched.upgrade() {
            s.netpoll.deregister(self.fd);
        }
        // The descriptor goes back to the pool only at `drop`: a party woken just now may
        // still be reading its slots and deadlines (seen under qemu: reused by another socket
        // meanwhile, its new owner's past deadline made this one's reader time out).
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.deregister();
        // Nobody else can be inside `io`/`wait` now: they borrow `self`.
        release(self.pd);
    }
}

/// Return a descriptor to the pool under a new tag. Its fd is no longer registered.
fn release(pd: &'static PollDesc) {
    // Relaxed: the owner's write; pollers read it racily by design (module docs).
    pd.seq.fetch_add(1, Ordering::Relaxed);
    POOL.lock().unwrap_or_else(|e| e.into_inner()).push(pd);
}

fn closed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "gort: socket closed while waiting",
    )
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "gort: socket operation timed out")
}

/// What a deadline timer needs to kick its waiter (on the waiter's frame).
struct KickCtx<'a> {
    slot: &'a AtomicUsize,
    me: usize,
}

/// Timer callback of a wait's deadline: CAS the waiter out of its slot and wake it (unless an
/// edge or a kick got there first).
unsafe fn deadline_fired(arg: usize, _seq: u64, _now: u64, done: Running) {
    // SAFETY: `arg` is the KickCtx on the waiting frame, which `cancel_sync` keeps alive
    // until `done` is dropped.
    let ctx = unsafe { &*(arg as *const KickCtx) };
    // SeqCst: as `PollDesc::kick`; on success we own the waiter.
    let claimed = if ctx
        .slot
        .compare_exchange(ctx.me, NIL, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: CASed out of the slot: we are its only notifier.
        unsafe { Waiter::claim(ctx.me as *const Waiter) }
    } else {
        None
    };
    // Last access to the frame; the wake-up touches only the G or a futex key.
    drop(done);
    if let Some(w) = claimed {
        w.wake();
    }
}

/// Whether the next byte `fd`'s reader would read is TCP urgent data's mark (`SIOCATMARK`).
/// False if the query fails (not a TCP socket, or closed): the caller then waits as usual.
fn at_urgent_mark(fd: RawFd) -> bool {
    /// `<asm-generic/sockios.h>` (x86_64 and aarch64 alike); not in the `libc` crate.
    const SIOCATMARK: libc::c_ulong = 0x8905;
    let mut at: libc::c_int = 0;
    // SAFETY: SIOCATMARK writes one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd, SIOCATMARK as _, &mut at as *mut libc::c_int) };
    rc == 0 && at != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dropping a registration while a goroutine waits on it wakes the waiter with an error
    /// (the poller-level half of "close while waiting": in safe Rust a waiter borrows the
    /// socket, so this is reached through the raw layer only).
    #[test]
    fn deregister_wakes_waiter() {
        crate::run(|| {
            let mut fds = [0; 2];
            // SAFETY: valid out-array; flags valid.
            let r = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            };
            assert_eq!(r, 0);
            let reg = Box::new(Registration::new(fds[0]).unwrap());
            let regp = &*reg as *const Registration as usize;
            let h = crate::go(move || {
                // SAFETY: the main goroutine keeps `reg` alive until this returns (it
                // deregisters through a shared reference, then joins, then drops it).
                let reg = unsafe { &*(regp as *const Registration) };
                let mut b = [0u8; 1];
                reg.io(Dir::Read, || {
                    // SAFETY: valid buffer.
                    cvt(unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) })
                })
            });
            crate::sleep(Duration::from_millis(20));
            reg.deregister();
            let e = h.join().unwrap().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotConnected);
            drop(reg);
            // SAFETY: ours.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
        });
    }

    use super::super::epoll::cvt;
}
