//! The network poller (Go's `netpoll`): goroutines that wait on sockets park, and epoll
//! readies them; a plain thread waiting on a socket blocks on its futex the same way.
//!
//! # Model
//! One epoll instance per runtime ([`Poller`], in `Sched`), created **lazily**, when the first
//! socket registers: a program that never opens a socket pays no file descriptors, no
//! eventfd, and — because every hook below starts with one Relaxed load of
//! [`Poller::nfds`] — nothing on the scheduler's paths either. (Creating it at runtime start
//! would cost two fds per runtime, and the hooks would still need a "has sockets" test to keep
//! an idle runtime from blocking in epoll for nothing.)
//!
//! Each socket registers its fd once, edge-triggered, for read, write and peer shutdown, with
//! a tagged poll descriptor as the event data (`fd.rs`: slots, deadlines, fd reuse). A socket
//! operation is a non-blocking system call in a loop: on `EAGAIN` the party waits in the
//! descriptor's slot until an edge (or a kick: close, deadline) wakes it, then retries.
//!
//! # Who polls (Go's `findRunnable` and `sysmon`)
//! 1. **Non-blocking poll, before stealing** (`find_runnable`, step 3b): an M whose local and
//!    global queues are empty polls with a zero timeout, if sockets exist and no M is blocked
//!    in the poller (Go's `lastpoll != 0` test: the blocked M gets the events anyway). The Gs
//!    it readies go to its own P's `runnext`/ring (`goready`), so it runs them next. They
//!    wake a helper M only if a CPU is left for one ([`wake_batch`]; `place.rs`, "Helpers"),
//!    as do those of a blocking poll whose M then gets a P.
//! 2. **Blocking poll, instead of sleeping**: an M with nothing to do goes idle
//!    (`idle::stopm_until`): on the idle-M list, maybe as the timer sleeper with a deadline.
//!    If sockets exist and no other M is the *blocker*, it claims [`Poller::blocker`] and
//!    sleeps in `epoll_wait` until its deadline (the earliest timer if it is the timer
//!    sleeper, else none) instead of on its futex. So the timer sleeper role becomes "the
//!    netpoll blocker" whenever sockets exist, and an idle runtime with sockets has exactly
//!    one M in `epoll_wait` and uses no CPU. While the Ms are not pinned, the blocker first
//!    moves to the idlest CPU, so that the sockets' wake-ups do not preempt their sender
//!    (`place.rs`), and while the CPUs would otherwise idle it polls without blocking for up
//!    to 30 µs before it sleeps ([`spin`]; `place.rs`, "Spinning before blocking").
//! 3. **sysmon**: polls if nobody has for 10 ms (see `sysmon_poll`), so that goroutines
//!    waiting on sockets are not starved by Ms that never run out of work.
//!
//! # Waking the blocker (no lost wake-up)
//! The blocker is an ordinary idle M: it is on the idle-M list, and whoever takes it off
//! (`startm` handing it a P, `timer_wake` for an earlier timer, shutdown) signals its note
//! and then calls [`kick_m`]. The race: the M decides to block in epoll while a waker signals
//! its note. Both sides are a store, a SeqCst fence, a load:
//! * blocker: CAS `blocker = me` (SeqCst); fence; load its note — signalled: do not block;
//! * waker: signal the note (`Note::wake`); fence; load `blocker` — it is that M: break.
//!
//! By the fences' total order, either the blocker sees the note or the waker sees the M in
//! `blocker`. The break is an eventfd write; the eventfd is level-triggered, so a break
//! written before the M entered `epoll_wait` still ends it. Breaks are deduplicated by
//! [`Poller::break_pending`] (set by the writer, cleared by the blocker after draining);
//! only a blocking poller drains it, so a non-blocking poll cannot swallow a break meant for
//! the blocker. After `epoll_wait` returns, the M leaves the blocker role, and settles with
//! the idle-M list exactly like a timed-out timer sleeper (`idle.rs`): if it is still on the
//! list, it takes itself off (and, if it brought back goroutines, an idle P to run them on);
//! if not, someone is about to wake it, and it waits for that after readying the goroutines
//! without a P (global queue).
//!
//! A plain thread waiting on a socket never passes through the scheduler, so after it
//! registered in a slot it checks `blocker`, and if no M is blocked in the poller it wakes an
//! idle M ([`ensure_poller`]), which comes back through `stopm_until` and claims the role
//! (sockets exist). A goroutine needs no such step: its own M goes through `find_runnable`.
//!
//! `startm` prefers any other idle M (or a new one) to the blocker, as to the timer sleeper
//! (Go never hands work to the M in netpoll: it is not on the idle list there).
//!
//! # Rejected designs
//! * A dedicated poller thread (mio/tokio's I/O driver on a thread, or libuv): a thread
//!   hand-off on every readiness; Go's design polls from the Ms that are about to run the
//!   readied goroutines.
//! * Level-triggered registration, or `EPOLLONESHOT` re-arming: a system call per wait
//!   (`epoll_ctl`) or a storm of events; edge-triggered registration once per fd is Go's.
//! * Freeing poll descriptors on close: an event already returned by `epoll_wait` for the
//!   closed fd would touch freed memory; they are pooled and tagged instead (`fd.rs`).
//! * An always-on poller (an epoll per runtime at start, the blocking poll in every idle
//!   runtime): costs fds and makes "no sockets" a special case anyway (see Model).

pub(crate) mod epoll;
pub(crate) mod fd;
pub(crate) mod place;

use crate::loom::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering, fence};
use crate::sched::Sched;
use crate::sched::m::M;
use crate::sched::park::Wakeup;
use epoll::Epoll;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::OnceLock;

/// Events taken per `epoll_wait` (Go's 128).
const EVENTS: usize = 128;

/// sysmon polls if nobody has for this long (Go: 10 ms).
pub(crate) const SYSMON_POLL_NS: u64 = 10_000_000;

/// A runtime's poller (one per `Sched`).
pub(crate) struct Poller {
    ep: OnceLock<Epoll>,
    /// Registered fds. Non-zero means the poller exists and the hooks are active. Written by
    /// registering/deregistering threads; read Relaxed by the hooks (see each).
    nfds: AtomicUsize,
    /// The M blocked in (or about to enter) `epoll_wait`, or null (module docs).
    blocker: AtomicPtr<M>,
    /// An eventfd break is written and not yet drained.
    break_pending: AtomicBool,
    /// `nanotime` of the last poll (for sysmon's 10 ms rule).
    last_poll: AtomicU64,
    /// Counters (statistics).
    polls: AtomicU64,
    blocking_polls: AtomicU64,
    readied: AtomicU64,
}

/// The poller's counters, for `gort::stats()`.
pub(crate) struct PollStats {
    pub(crate) polls: u64,
    pub(crate) blocking_polls: u64,
    pub(crate) readied: u64,
}

impl Poller {
    pub(crate) fn new() -> Poller {
        Poller {
            ep: OnceLock::new(),
            nfds: AtomicUsize::new(0),
            blocker: AtomicPtr::new(std::ptr::null_mut()),
            break_pending: AtomicBool::new(false),
            last_poll: AtomicU64::new(0),
            polls: AtomicU64::new(0),
            blocking_polls: AtomicU64::new(0),
            readied: AtomicU64::new(0),
        }
    }

    /// Whether sockets are registered: the one load every hook starts with (module docs).
    #[inline]
    pub(crate) fn has_sockets(&self) -> bool {
        // Relaxed: a hint; each hook says why a stale value is harmless there.
        self.nfds.load(Ordering::Relaxed) != 0
    }

    fn epoll(&self) -> io::Result<&Epoll> {
        if let Some(ep) = self.ep.get() {
            return Ok(ep);
        }
        let ep = Epoll::new()?;
        // A racing creator may have won: ours is dropped (closed) then.
        let _ = self.ep.set(ep);
        Ok(self.ep.get().expect("set above"))
    }

    /// Register `fd` with the event data `tag`.
    pub(crate) fn register(&self, fd: RawFd, tag: u64) -> io::Result<()> {
        self.epoll()?.add(fd, tag)?;
        // Relaxed: the hooks' reads are hints (each says why a stale zero is harmless).
        self.nfds.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Deregister `fd` (still open). Errors are ignored: the fd is about to be closed, which
    /// ends its registration unless a `dup` keeps the file open — and then the tag protects
    /// the descriptor.
    pub(crate) fn deregister(&self, fd: RawFd) {
        if let Some(ep) = self.ep.get() {
            let _ = ep.del(fd);
        }
        // Relaxed: as in `register`.
        self.nfds.fetch_sub(1, Ordering::Relaxed);
    }

    /// Write the break unless one is pending.
    fn break_wait(&self) {
        // AcqRel: pairs with the blocker's Release clear after draining: a break after that
        // writes again.
        if !self.break_pending.swap(true, Ordering::AcqRel)
            && let Some(ep) = self.ep.get()
        {
            ep.wake();
        }
    }

    pub(crate) fn stats(&self) -> PollStats {
        // Relaxed: statistics.
        PollStats {
            polls: self.polls.load(Ordering::Relaxed),
            blocking_polls: self.blocking_polls.load(Ordering::Relaxed),
            readied: self.readied.load(Ordering::Relaxed),
        }
    }

    /// Poll once until `deadline` (0: non-blocking). Collects the parties to wake in `out`;
    /// returns whether the break was seen (only a blocking poll drains it).
    fn poll(&self, ep: &Epoll, deadline: u64, out: &mut Ready) -> bool {
        // Uninitialised: the kernel writes the first `n`; zeroing 1.5 KiB per poll showed in
        // profiles of the HTTP benchmark (tens of thousands of polls a second).
        let mut events = [const { MaybeUninit::<libc::epoll_event>::uninit() }; EVENTS];
        let n = ep.wait(&mut events, deadline);
        // SAFETY: `epoll_wait` initialised the first `n` entries (`n <= EVENTS`).
        let events =
            unsafe { std::slice::from_raw_parts(events.as_ptr().cast::<libc::epoll_event>(), n) };
        // Relaxed (all three): statistics, and a hint for sysmon.
        self.polls.fetch_add(1, Ordering::Relaxed);
        if deadline != 0 {
            self.blocking_polls.fetch_add(1, Ordering::Relaxed);
        }
        self.last_poll
            .store(crate::time::nanotime(), Ordering::Relaxed);
        let mut broke = false;
        for ev in events {
            let (data, bits) = (ev.u64, ev.events);
            if data == epoll::BREAK_TAG {
                if deadline != 0 {
                    ep.drain();
                    // Release: pairs with the AcqRel swap in `break_wait`.
                    self.break_pending.store(false, Ordering::Release);
                    broke = true;
                }
                continue;
            }
            fd::event(data, bits, out);
        }
        self.readied.fetch_add(out.len as u64, Ordering::Relaxed);
        broke
    }
}

impl Default for Poller {
    fn default() -> Self {
        Poller::new()
    }
}

/// Parties readied by one poll, woken when the poller has settled (a P, or none).
/// Invariant: `buf[..len]` is initialised, the rest is not (6 KiB left unwritten per poll).
pub(crate) struct Ready {
    buf: [MaybeUninit<Wakeup>; 2 * EVENTS],
    len: usize,
}

impl Ready {
    pub(crate) fn new() -> Ready {
        Ready {
            buf: [const { MaybeUninit::uninit() }; 2 * EVENTS],
            len: 0,
        }
    }

    fn push(&mut self, w: Option<Wakeup>) {
        if let Some(w) = w {
            // At most two parties per event (a reader and a writer), EVENTS events per poll:
            // the index is in bounds (checked anyway).
            self.buf[self.len].write(w);
            self.len += 1;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Wake everyone collected: onto this M's P if it holds one, else the global queue.
    pub(crate) fn wake_all(&mut self) {
        self.wake_all_with(true);
    }

    /// [`Ready::wake_all`]; goroutines queued on this M's P wake a helper M only if `helper`.
    fn wake_all_with(&mut self, helper: bool) {
        let n = std::mem::replace(&mut self.len, 0);
        for w in &self.buf[..n] {
            // SAFETY: entries below the old `len` were written by `push` and are read once:
            // `len` is already 0, so neither a panic in `wake` nor `drop` reads them again.
            unsafe { w.assume_init_read() }.wake_with(helper);
        }
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        // Never lose a readied party.
        self.wake_all();
    }
}

/// `find_runnable`'s non-blocking poll (module docs, step 1). True if it readied goroutines
/// (on this M's P): the caller starts over. Holder of a P only.
#[inline]
pub(crate) fn poll_ready(s: &Sched) -> bool {
    // A socket registered concurrently was registered by a running party, whose own waits
    // reach a poller (its M's `find_runnable`, or `ensure_poller`).
    if !s.netpoll.has_sockets() {
        return false;
    }
    poll_ready_slow(s)
}

#[inline(never)]
fn poll_ready_slow(s: &Sched) -> bool {
    let np = &s.netpoll;
    // Relaxed: Go's `lastpoll != 0` test, a heuristic: the blocked M gets the events anyway.
    if !np.blocker.load(Ordering::Relaxed).is_null() {
        return false;
    }
    let Some(ep) = np.ep.get() else {
        return false;
    };
    let mut ready = Ready::new();
    np.poll(ep, 0, &mut ready);
    let any = !ready.is_empty();
    wake_batch(s, &mut ready);
    any
}

/// Wake the goroutines a poll brought back, called by the polling M once it holds a P: onto
/// that P's queue, and a helper M is woken for them (`wakep`) only if a CPU is left for it
/// (`place.rs`, "Helpers"). The polling M runs them itself in any case: it is on its way back
/// to `find_runnable`.
pub(crate) fn wake_batch(s: &Sched, ready: &mut Ready) {
    if ready.is_empty() {
        return;
    }
    ready.wake_all_with(place::helper_wanted(s));
}

/// The idle M's blocking poll (module docs, step 2), called by `idle::stopm_until` after it
/// put `m` on the idle list. `None`: this M is not the poller (no sockets, or another M
/// blocks): sleep on the note as usual. `Some(signalled)`: it polled until `deadline`, a
/// break, or events (collected in `out`, not yet woken); `signalled` tells whether its note
/// was signalled meanwhile (a waker took it off the idle list).
pub(crate) fn block_idle(m: &M, deadline: u64, out: &mut Ready) -> Option<bool> {
    let s = &*m.sched;
    let np = &s.netpoll;
    if !np.has_sockets() {
        return None;
    }
    let ep = np.ep.get()?;
    let me = m as *const M as *mut M;
    // SeqCst: the blocker's store in the Dekker pair with `kick_m` (module docs).
    if np
        .blocker
        .compare_exchange(
            std::ptr::null_mut(),
            me,
            Ordering::SeqCst,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return None;
    }
    // SeqCst fence: orders the store above before the note load below (module docs).
    fence(Ordering::SeqCst);
    if !m.park.is_signalled() {
        // Block on the idlest CPU, where the sockets' wake-up will then go (`place.rs`).
        place::settle(m);
        if place::spin_wanted(s) {
            spin(m, ep, deadline, out);
        }
        if out.is_empty() && !m.park.is_signalled() {
            np.poll(ep, deadline.max(1), out);
        }
    }
    // Release: the role is free again; pairs with nothing in particular (the next claimant's
    // CAS only needs to see null).
    np.blocker.store(std::ptr::null_mut(), Ordering::Release);
    Some(m.park.is_signalled())
}

/// The blocker's spin (`place.rs`, "Spinning before blocking"): poll without blocking for up
/// to [`place::SPIN_NS`], and no later than `deadline`, until events come or `m` is signalled.
/// A break written meanwhile stays in the eventfd for the blocking poll to drain.
fn spin(m: &M, ep: &Epoll, deadline: u64, out: &mut Ready) {
    let s = &*m.sched;
    let start = crate::time::nanotime();
    let end = start.saturating_add(place::SPIN_NS).min(deadline);
    let mut now;
    loop {
        s.netpoll.poll(ep, 0, out);
        now = crate::time::nanotime();
        if !out.is_empty() || m.park.is_signalled() || now >= end {
            break;
        }
        std::hint::spin_loop();
    }
    s.place.count_spin(now - start, !out.is_empty());
}

/// A waker signalled `m`'s note after taking it off the idle list: if `m` blocks in the
/// poller, break its wait (module docs). Any thread.
pub(crate) fn kick_m(s: &Sched, m: *const M) {
    // SeqCst fence: the waker's side of the Dekker pair (module docs).
    fence(Ordering::SeqCst);
    // Relaxed: ordered by the fence.
    if std::ptr::eq(s.netpoll.blocker.load(Ordering::Relaxed), m) {
        s.netpoll.break_wait();
    }
}

/// A plain thread registered as a waiter: if no M blocks in the poller, wake an idle one so
/// that it comes to (module docs).
pub(crate) fn ensure_poller(s: &Sched) {
    // SeqCst fence: after the slot registration (SeqCst CAS) and before reading `blocker`:
    // an M claiming the role after this read will poll and see our edge.
    fence(Ordering::SeqCst);
    // Relaxed: ordered by the fence.
    if s.netpoll.blocker.load(Ordering::Relaxed).is_null() && !crate::sched::idle::wake_idle_m(s) {
        crate::sched::idle::wakep(s);
    }
}

/// sysmon's check (Go's "poll network if not polled for more than 10ms"): if sockets exist,
/// no M blocks in the poller, and nobody polled for [`SYSMON_POLL_NS`], poll without blocking
/// and ready the goroutines onto the global queue (sysmon holds no P). Returns how many it
/// readied.
pub(crate) fn sysmon_poll(s: &Sched, now: u64) -> usize {
    let np = &s.netpoll;
    // Relaxed (both loads): heuristics; a missed poll is caught at the next sysmon tick.
    if !np.has_sockets()
        || !np.blocker.load(Ordering::Relaxed).is_null()
        || now.saturating_sub(np.last_poll.load(Ordering::Relaxed)) < SYSMON_POLL_NS
    {
        return 0;
    }
    let Some(ep) = np.ep.get() else {
        return 0;
    };
    let mut ready = Ready::new();
    np.poll(ep, 0, &mut ready);
    let n = ready.len;
    ready.wake_all();
    n
}

/// Whether `m` is the M blocked in the poller (a hint for `startm`).
pub(crate) fn is_blocker(s: &Sched, m: *mut M) -> bool {
    // Relaxed: a hint (see `idle::startm`).
    s.netpoll.blocker.load(Ordering::Relaxed) == m
}
