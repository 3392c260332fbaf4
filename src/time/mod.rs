//! Time: per-P timer heaps run by the scheduler, `sleep`, [`Timer`] and [`Ticker`].
//!
//! # Model (Go's `runtime/time.go`, with gort's ownership rules)
//! Every timer is a `heap::TimerNode`: a deadline, an optional period and a callback. Each P
//! owns a 4-ary min-heap of nodes behind a per-P lock (`p.timers`). A node is armed on the
//! heap of the P the arming thread holds — its own P, so the lock is uncontended in the
//! common case — and from a thread that holds no P of the runtime (a plain thread), on the
//! Ps' heaps in turn (a round-robin cursor: no single heap's lock serialises such threads).
//! Stop and reset of a node on another P's heap take that P's heap lock and change the node in
//! place (see `heap.rs` on why eagerly, unlike Go).
//!
//! Callbacks run on an M's g0, holding a P, never under the heap lock, and must not block:
//! typically they ready a goroutine (a sleeper, a timed-out waiter) onto the running P.
//!
//! # Who runs timers
//! 1. Each M, at the top of `find_runnable`, runs its own P's due timers before looking at the
//!    run queues (Go's `checkTimers`). With no timers the cost is one Relaxed load of
//!    `next_when`; with timers, one clock read. Unlike Go, it runs at most as many as its run
//!    queue has room for (`timer_budget`): the rest stay on the heap, in deadline order, for
//!    the next scheduling point or another M, instead of spilling their goroutines to the tail
//!    of a possibly long global queue (that spill is most of Go's oversleep at 100,000
//!    sleepers). Stack scavenging (`schedule.rs`) likewise waits while a timer is near.
//! 2. A spinning M that found nothing to steal runs the due timers of every other P, idle or
//!    busy (Go's `stealWork`): an idle P's timers, and a P whose M is stuck in a long-running
//!    goroutine, still fire.
//! 3. An M that has no P and nothing to do sleeps, and one of them at a time — the *timer
//!    sleeper* — sleeps only until the earliest deadline over all Ps (its note's futex wait
//!    has an absolute timeout: no polling, no periodic tick). When it wakes to a due timer it
//!    takes an idle P and runs as a spinner (2.), and the goroutines its callbacks ready start
//!    at once; as a spinner that finds work, it wakes another M, which becomes the next
//!    sleeper if timers remain.
//! 4. A retiring P (GOMAXPROCS decrease) hands its timers to P0.
//!
//! # Sleeping until the next timer (Go's `pollUntil` / `wakeNetPoller`)
//! `SchedTimers::sleep_until` holds the sleeper's deadline (0: no sleeper). The race to close:
//! an M computes the earliest deadline and goes to sleep while another thread arms an earlier
//! timer. The protocol is a StoreLoad pair on each side:
//! * sleeper (under the scheduler lock): store `sleep_until = REGISTERING` (SeqCst), then read
//!   every P's `next_when` (SeqCst) to compute its deadline, then store it;
//! * adder: publish the node and, if it became its heap's earliest, store `next_when`
//!   (SeqCst), then load `sleep_until` (SeqCst). Zero: no sleeper — call `wakep` so some M
//!   comes to watch the timer (as Go does). Later than the new deadline (or `REGISTERING`):
//!   take the scheduler lock, and if the registered sleeper's deadline is still later, take it
//!   off the idle list and wake it; it recomputes.
//!
//! In the single total order of SeqCst operations, if the sleeper's scan missed the adder's
//! store, the adder's load comes after the sleeper's registration and sees it. The sleeper is
//! also on the idle-M list like any idle M, with one invariant: *a registered sleeper is on the
//! idle list, and whoever takes it off unregisters it* (under the scheduler lock), so exactly
//! one party wakes its note. On timeout it unregisters itself; if it finds itself already
//! taken off, it waits for the imminent wake instead. `startm` prefers any other idle M (Go
//! never hands work to the M blocked in netpoll either), so handing out work does not leave
//! the timers unwatched; an M whose P is busy need not be woken: it runs its own timers at its
//! next scheduling point.
//!
//! An idle runtime without timers has no sleeper with a deadline: every M sleeps on its note
//! without timeout and the process uses no CPU.
//!
//! # Rejected designs
//! * One global heap: a global lock on every sleep and wake, the thing per-P heaps avoid.
//! * A timer thread (or sysmon polling at 1 ms): a wake-up per tick even when idle, and a
//!   millisecond of oversleep; here wake-ups happen exactly at deadlines.
//! * Lazy deletion (Go's): see `heap.rs` — our nodes live in their owners' memory.
//! * Heap-allocated, reference-counted nodes for sleeps: an allocation per sleep; a node on
//!   the sleeping goroutine's stack costs nothing, at the price of `cancel_sync` (wait out a
//!   running callback before the frame dies), whose window is a few instructions.
//!
//! # Clock
//! Deadlines are `u64` nanoseconds of `CLOCK_MONOTONIC` (`nanotime`), the clock of
//! `std::time::Instant` on Linux and of the futex's absolute timeouts. `Instant` is opaque, so
//! the two convert through an epoch taken at first use: an `Instant` read between two
//! `nanotime` reads, the tightest of a few tries. Each direction uses the bound that makes it
//! err late, never early: an `Instant` deadline becomes nanoseconds from the later read (no
//! sleeper wakes before its deadline), a nanosecond reading becomes an `Instant` from the
//! earlier one (no tick or timer reports a time before it fired). The error is the gap between
//! the reads, tens of nanoseconds natively; under emulation or preemption it can be
//! microseconds, hence the tries.
//!
//! # Internal hooks (for channels, select and deadlines)
//! * `heap::TimerNode` + `arm`/`disarm`/`cancel_sync` — the raw mechanism.
//! * `Waiter::wait_deadline` (`sched/park.rs`) — a timed wait on any primitive.
//! * `CallbackTimer` — an owned timer running a closure (`reset`/`stop`; `Drop` cancels):
//!   the base for channel-based `Timer.C`/`Ticker.C`.
//! * `after_fn` — fire-and-forget: run a closure once at a deadline (the base for
//!   `after(d) -> Receiver`); the heap owns it until it fires.

pub(crate) mod heap;

use crate::loom::{AtomicPtr, AtomicU32, AtomicU64, Mutex, MutexGuard, Ordering};
use crate::sched::m::{M, current_g, current_m};
use crate::sched::p::P;
use crate::sched::park::{Waiter, Wakeup};
use crate::sched::runq::RUNQ_SIZE;
use crate::sched::{Sched, idle};
use heap::{Armed, NO_TIMER, Running, TimerNode, Timers};
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Clock.

/// Now, in nanoseconds of `CLOCK_MONOTONIC` (the clock of every timer deadline).
#[inline]
pub(crate) fn nanotime() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-parameter; CLOCK_MONOTONIC always exists on Linux (the call
    // goes through the vDSO and cannot fail with valid arguments).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// `d` in nanoseconds, saturating.
#[inline]
pub(crate) fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(NO_TIMER - 1)) as u64
}

/// The deadline `d` from now, on [`nanotime`]'s clock.
#[inline]
pub(crate) fn deadline_after(d: Duration) -> u64 {
    nanotime().saturating_add(duration_ns(d)).min(NO_TIMER - 1)
}

/// An `Instant` and the [`nanotime`] readings taken just before and just after it.
struct Epoch {
    instant: Instant,
    before: u64,
    after: u64,
}

impl Epoch {
    fn sample() -> Epoch {
        let before = nanotime();
        let instant = Instant::now();
        Epoch {
            instant,
            before,
            after: nanotime(),
        }
    }

    /// `i` in nanoseconds, counted from the later bound: never earlier than the true reading.
    fn to_nanos(&self, i: Instant) -> u64 {
        match i.checked_duration_since(self.instant) {
            Some(d) => self.after.saturating_add(duration_ns(d)).min(NO_TIMER - 1),
            None => self.after.saturating_sub(duration_ns(self.instant - i)),
        }
    }

    /// `n` as an `Instant`, counted from the earlier bound: never earlier than the true
    /// reading.
    fn to_instant(&self, n: u64) -> Instant {
        if n >= self.before {
            self.instant + Duration::from_nanos(n - self.before)
        } else {
            self.instant
                .checked_sub(Duration::from_nanos(self.before - n))
                .unwrap_or(self.instant)
        }
    }
}

fn epoch() -> &'static Epoch {
    static EPOCH: OnceLock<Epoch> = OnceLock::new();
    // The tightest bracket of a few: one try can be stretched by a preemption or, under
    // emulation, by a slow clock read.
    EPOCH.get_or_init(|| {
        (0..8)
            .map(|_| Epoch::sample())
            .min_by_key(|e| e.after - e.before)
            .expect("eight samples")
    })
}

/// An `Instant` on [`nanotime`]'s clock, never earlier than the true reading.
pub(crate) fn instant_to_nanos(i: Instant) -> u64 {
    epoch().to_nanos(i)
}

/// A [`nanotime`] reading as an `Instant`, never earlier than the true reading.
pub(crate) fn nanos_to_instant(n: u64) -> Instant {
    epoch().to_instant(n)
}

// ---------------------------------------------------------------------------------------------
// The scheduler's side.

/// `sleep_until` while a sleeper registers (under the scheduler lock): any adder checks.
pub(crate) const REGISTERING: u64 = 1;

/// Runtime-wide timer state (one per `Sched`).
pub(crate) struct SchedTimers {
    /// The timer sleeper's deadline: 0 = no sleeper, [`REGISTERING`], or a deadline. Written
    /// under the scheduler lock; read without it by adders (module docs).
    pub(crate) sleep_until: AtomicU64,
    /// The timer sleeper (an idle M), or null. Read and written under the scheduler lock only.
    pub(crate) sleeper: AtomicPtr<M>,
    /// Round-robin cursor for timers armed by threads that hold no P.
    rr: AtomicU32,
}

impl SchedTimers {
    pub(crate) fn new() -> SchedTimers {
        SchedTimers {
            sleep_until: AtomicU64::new(0),
            sleeper: AtomicPtr::new(std::ptr::null_mut()),
            rr: AtomicU32::new(0),
        }
    }
}

impl Default for SchedTimers {
    fn default() -> Self {
        SchedTimers::new()
    }
}

/// The heap a disarmed node is armed on: the calling M's P if it holds one of `s`, else the
/// next P in turn.
pub(crate) fn target_heap(s: &Sched) -> &Timers {
    let m = current_m();
    if !m.is_null() {
        // SAFETY: this thread's own M.
        let mr = unsafe { &*m };
        let p = mr.p.get();
        if !p.is_null() && std::ptr::eq(&*mr.sched, s) {
            // SAFETY: we hold `p`; Ps live as long as their runtime.
            return unsafe { &(*p).timers };
        }
    }
    let n = (s.procs() as usize)
        .min(s.nprocs_created.load(Ordering::Acquire) as usize)
        .max(1);
    // Relaxed: only spreads the load; any P is correct.
    let i = s.timers.rr.fetch_add(1, Ordering::Relaxed) as usize % n;
    // SAFETY: i < nprocs_created; Ps live as long as their runtime.
    unsafe { &(*s.p(i)).timers }
}

/// A node became the earliest of its heap at `when`: make sure an M will be awake for it
/// (the adder's half of the sleeper protocol, module docs).
pub(crate) fn timer_earliest_changed(s: &Sched, when: u64) {
    idle::timer_wake(s, when);
}

/// Earliest deadline over every P's heap (created Ps, retired ones included), or
/// [`NO_TIMER`]. With `seqcst`, as the sleeper's scan in the protocol's total order.
pub(crate) fn earliest(s: &Sched, seqcst: bool) -> u64 {
    let n = s.nprocs_created.load(Ordering::Acquire) as usize;
    let mut min = NO_TIMER;
    for i in 0..n {
        // SAFETY: i < nprocs_created; Ps live as long as their runtime.
        let t = unsafe { &(*s.p(i)).timers };
        let w = if seqcst {
            t.next_when_seqcst()
        } else {
            t.next_when()
        };
        min = min.min(w);
    }
    min
}

/// Whether some P's timer is due within `ns` nanoseconds from now (a racy snapshot).
pub(crate) fn due_within(s: &Sched, ns: u64) -> bool {
    let next = earliest(s, false);
    next != NO_TIMER && next <= nanotime().saturating_add(ns)
}

/// How many due timers the M holding `p` may run now: one while goroutines are queued, else
/// as many as its run queue has free slots for the goroutines they ready (callbacks ready
/// one each, typically).
///
/// Go runs every due timer at once; a burst then overflows the local ring, and the overflow
/// goes to the *tail* of the global queue — behind, say, 100,000 goroutines not yet started,
/// so a timer's goroutine waits for all of them (Go's p99 oversleep with 100,000 sleepers is
/// ~90 ms for that reason). Left on the heap instead, due timers keep their deadline order
/// and run as the ring drains (every scheduling point checks them), or on another M (a
/// spinner's `steal_timers`, or the timer sleeper taking an idle P).
#[inline]
fn timer_budget(p: &P) -> u64 {
    // With goroutines queued, one timer per scheduling point: its goroutine goes to
    // `runnext` and runs next, and so does the next due timer's at the next point. Running
    // several at once would put all but the last behind everything queued (`runnext` keeps
    // one), so each would wait out the whole queue: with 100,000 sleepers, that made the p99
    // oversleep 1.0–1.4 ms; one at a time, 0.3–0.7 ms in the same minute.
    if !p.runq.is_empty() {
        1
    } else {
        (RUNQ_SIZE - 1) as u64
    }
}

/// `find_runnable`'s first step (Go's `checkTimers`): run the held P's due timers. Holder of
/// `p` only. Free when the P has no timers (one Relaxed load).
#[inline]
pub(crate) fn check_timers(p: &P) {
    let next = p.timers.next_when();
    if next != NO_TIMER {
        check_timers_slow(p, next);
    }
}

#[inline(never)]
fn check_timers_slow(p: &P, next: u64) {
    let now = nanotime();
    if now >= next {
        p.timers.run(now, timer_budget(p), &p.counters.timers_run);
    }
}

/// A spinning M found nothing to steal: run the due timers of every other P (Go's
/// `stealWork`, last pass). The goroutines they ready go onto `pr`'s queue. Returns whether
/// any callback ran. Holder of `pr` only.
pub(crate) fn steal_timers(s: &Sched, pr: &P) -> bool {
    let n = s.nprocs_created.load(Ordering::Acquire) as usize;
    let mut now = 0;
    let mut ran = 0;
    for i in 0..n {
        // SAFETY: i < nprocs_created; Ps live as long as their runtime.
        let p2 = unsafe { &*s.p(i) };
        if std::ptr::eq(p2, pr) {
            continue;
        }
        let next = p2.timers.next_when();
        if next == NO_TIMER {
            continue;
        }
        if now == 0 {
            now = nanotime();
        }
        if next <= now {
            ran += p2
                .timers
                .run(now, timer_budget(pr), &pr.counters.timers_run);
        }
    }
    ran > 0
}

/// Timers pending on all of `s`'s heaps (statistics; a racy sum).
pub(crate) fn pending(s: &Sched) -> usize {
    let n = s.nprocs_created.load(Ordering::Acquire) as usize;
    // SAFETY: i < nprocs_created; Ps live as long as their runtime.
    (0..n).map(|i| unsafe { &*s.p(i) }.timers.len()).sum()
}

/// A strong reference to the runtime behind `s`.
pub(crate) fn sched_arc(s: &Sched) -> Arc<Sched> {
    // SAFETY: every Sched lives inside an Arc (created by `Sched::start`) and the caller's
    // `&Sched` comes from a live reference to it (a Runtime, an M, or a goroutine of it).
    unsafe {
        Arc::increment_strong_count(s as *const Sched);
        Arc::from_raw(s as *const Sched)
    }
}

/// The calling goroutine's runtime, or the default one.
fn current_sched() -> Weak<Sched> {
    crate::runtime::with_current(|s| Arc::downgrade(&sched_arc(s)))
}

// ---------------------------------------------------------------------------------------------
// The public API: sleep, Timer, Ticker here; the channel forms with the channels.

/// Go's `time.After` and `time.Tick`: channels that deliver the time once after `d`, or every
/// period (defined with the channels, in `gort::chan`).
pub use crate::chan::{after, tick};

// ---------------------------------------------------------------------------------------------
// sleep.

/// Block the calling goroutine for at least `d` (its M runs other goroutines meanwhile). On a
/// plain thread, `std::thread::sleep`. A zero duration returns at once (as Go's `Sleep(0)`).
///
/// ```
/// use std::time::{Duration, Instant};
/// let t = Instant::now();
/// gort::run(|| gort::sleep(Duration::from_millis(5)));
/// assert!(t.elapsed() >= Duration::from_millis(5));
/// ```
pub fn sleep(d: Duration) {
    if d.is_zero() {
        return;
    }
    if current_g().is_null() {
        std::thread::sleep(d);
        return;
    }
    // A positive duration from now is never due yet: skip the due check's clock read.
    Waiter::new().wait_until_ns_unchecked(deadline_after(d));
}

/// Block the calling goroutine until `deadline` (at least). On a plain thread,
/// `std::thread::sleep` for the remaining time.
pub fn sleep_until(deadline: Instant) {
    if current_g().is_null() {
        let now = Instant::now();
        if deadline > now {
            std::thread::sleep(deadline - now);
        }
        return;
    }
    Waiter::new().wait_deadline(Some(deadline));
}

// ---------------------------------------------------------------------------------------------
// A node with its runtime: the base of the owned timers below.

/// A node armed on one runtime, which it refers to weakly: a timer must not keep its runtime
/// alive (shutdown waits for every reference), and once the runtime is gone nothing fires and
/// the heaps are freed, so every operation first upgrades the reference.
struct Armable {
    node: TimerNode,
    sched: Weak<Sched>,
}

impl Armable {
    fn arm(&self, when: u64, period: u64) -> Option<Armed> {
        let s = self.sched.upgrade()?;
        // SAFETY: the node lives in a Box owned by a timer whose Drop calls `cancel`
        // before freeing it; it is armed on this runtime only.
        Some(unsafe { self.node.arm(&s, when, period) })
    }

    fn disarm(&self) -> bool {
        // SAFETY: the node is only ever armed on `self.sched`.
        self.sched
            .upgrade()
            .is_some_and(|s| unsafe { self.node.disarm(&s) })
    }

    /// Before freeing: no callback runs or will run.
    fn cancel(&self) {
        if let Some(s) = self.sched.upgrade() {
            // SAFETY: as in `disarm`.
            unsafe { self.node.cancel_sync(&s) };
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks: poisoning cannot happen; tolerate it anyway.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A blocked `wait`/`tick` caller: a waiter and the answer its waker leaves.
struct Slot<T> {
    w: Waiter,
    out: UnsafeCell<T>,
}

impl<T> Slot<T> {
    fn new(v: T) -> Slot<T> {
        Slot {
            w: Waiter::new(),
            out: UnsafeCell::new(v),
        }
    }
}

/// Under the timer's lock: give slot `s` its answer and claim it; the returned wake-up is
/// done after unlocking.
///
/// # Safety
/// `s` was queued on the timer (under the lock held) and not yet answered; its owner blocks
/// in `Waiter::wait` until woken.
unsafe fn answer<T>(s: *const Slot<T>, v: T) -> Wakeup {
    // SAFETY: per the contract, the slot is alive (its owner is blocked in `wait`) and only
    // we write `out`, before the claim's release.
    unsafe {
        *(*s).out.get() = v;
        // A wait without a deadline cannot be lost to a timeout: the claim always succeeds.
        Waiter::claim(&(*s).w).expect("gort: untimed waiter timed out")
    }
}

// ---------------------------------------------------------------------------------------------
// Timer.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// Armed and pending (or firing right now).
    Active,
    /// The last arming fired.
    Fired,
    /// Stopped before firing.
    Stopped,
}

struct TimerState {
    phase: Phase,
    /// Sequence number of the current arming: older callbacks are stale.
    seq: u64,
    waiters: Vec<*const Slot<bool>>,
}

struct TimerShared {
    a: Armable,
    st: Mutex<TimerState>,
}

/// A single event in the future (Go's `time.Timer`, with a blocking `wait` in place of the
/// channel `C` until gort has channels).
///
/// Created running. [`Timer::wait`] parks a goroutine (or blocks a thread) until the timer
/// fires or is stopped. [`Timer::stop`] and [`Timer::reset`] follow Go's semantics and
/// return whether the timer was active; after `reset` returns, waiting is for the new
/// deadline only (no stale firing).
///
/// ```
/// use std::time::Duration;
/// gort::run(|| {
///     let t = gort::time::Timer::new(Duration::from_millis(10));
///     assert!(t.wait()); // fired
///     assert!(!t.stop()); // already expired
///     t.reset(Duration::from_secs(3600));
///     assert!(t.stop()); // stopped while pending
///     assert!(!t.wait()); // stopped: returns at once
/// });
/// ```
pub struct Timer {
    shared: Box<TimerShared>,
}

// SAFETY: the raw slot pointers are only dereferenced under `st`'s lock while their owners are
// blocked (see `answer`); everything else is Send + Sync.
unsafe impl Send for TimerState {}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.shared.st);
        f.debug_struct("Timer").field("phase", &st.phase).finish()
    }
}

impl Timer {
    /// A timer that fires once, `d` from now, on the calling goroutine's runtime (or the
    /// default runtime, from a plain thread).
    pub fn new(d: Duration) -> Timer {
        Timer::at(deadline_after(d))
    }

    /// A timer that fires at `deadline`.
    pub fn new_at(deadline: Instant) -> Timer {
        Timer::at(instant_to_nanos(deadline))
    }

    fn at(when: u64) -> Timer {
        let mut shared = Box::new(TimerShared {
            a: Armable {
                node: TimerNode::new(timer_fired, 0),
                sched: current_sched(),
            },
            st: Mutex::new(TimerState {
                phase: Phase::Active,
                seq: 0,
                waiters: Vec::new(),
            }),
        });
        let arg = &*shared as *const TimerShared as usize;
        shared.a.node = TimerNode::new(timer_fired, arg);
        {
            let mut st = lock(&shared.st);
            match shared.a.arm(when, 0) {
                Some(a) => st.seq = a.seq,
                // The runtime is gone: nothing will ever fire.
                None => st.phase = Phase::Stopped,
            }
        }
        Timer { shared }
    }

    /// Wait until the timer fires (true) or is stopped (false). Returns at once if it is not
    /// pending: true if its last arming fired, false if it was stopped. Parks a goroutine;
    /// blocks a plain thread. Any number of waiters; all are woken.
    pub fn wait(&self) -> bool {
        let mut st = lock(&self.shared.st);
        match st.phase {
            Phase::Fired => return true,
            Phase::Stopped => return false,
            Phase::Active => {}
        }
        let slot = Slot::new(false);
        st.waiters.push(&slot);
        drop(st);
        slot.w.wait();
        // SAFETY: written by our waker before its claim, which `wait` synchronised with.
        unsafe { *slot.out.get() }
    }

    /// Stop the timer. Returns true if this call stopped it (it was pending), false if it had
    /// already fired or been stopped (Go's `Stop`). Waiters return false.
    pub fn stop(&self) -> bool {
        let mut st = lock(&self.shared.st);
        if st.phase != Phase::Active || !self.shared.a.disarm() {
            // Not pending; or already popped to fire: its callback will mark it fired.
            return false;
        }
        st.phase = Phase::Stopped;
        let wakes: Vec<Wakeup> = st
            .waiters
            .drain(..)
            // SAFETY: queued under this lock, not yet answered.
            .map(|s| unsafe { answer(s, false) })
            .collect();
        drop(st);
        wakes.into_iter().for_each(Wakeup::wake);
        true
    }

    /// Re-arm the timer to fire `d` from now. Returns true if it had been pending (Go's
    /// `Reset`). Waiters keep waiting, for the new deadline.
    pub fn reset(&self, d: Duration) -> bool {
        self.reset_ns(deadline_after(d))
    }

    /// Re-arm the timer to fire at `deadline`. As [`Timer::reset`].
    pub fn reset_at(&self, deadline: Instant) -> bool {
        self.reset_ns(instant_to_nanos(deadline))
    }

    fn reset_ns(&self, when: u64) -> bool {
        let mut st = lock(&self.shared.st);
        let Some(a) = self.shared.a.arm(when, 0) else {
            return false;
        };
        // Pending means: not fired yet and still on a heap (a popped node is firing: too late).
        let was = st.phase == Phase::Active && a.was_active;
        st.phase = Phase::Active;
        st.seq = a.seq;
        was
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // No waiter can exist (they borrow the timer); after this no callback touches it.
        self.shared.a.cancel();
    }
}

/// Timer callback of [`Timer`].
unsafe fn timer_fired(arg: usize, seq: u64, _now: u64, done: Running) {
    // SAFETY: `arg` is the TimerShared in the Box the node lives in, alive until the timer's
    // Drop, whose `cancel` waits for `done`.
    let sh = unsafe { &*(arg as *const TimerShared) };
    let mut st = lock(&sh.st);
    if st.seq != seq || st.phase != Phase::Active {
        return; // stale: re-armed or stopped since this arming fired
    }
    st.phase = Phase::Fired;
    let wakes: Vec<Wakeup> = st
        .waiters
        .drain(..)
        // SAFETY: queued under this lock, not yet answered.
        .map(|s| unsafe { answer(s, true) })
        .collect();
    drop(st);
    drop(done);
    wakes.into_iter().for_each(Wakeup::wake);
}

// ---------------------------------------------------------------------------------------------
// Ticker.

struct TickerState {
    stopped: bool,
    seq: u64,
    period: u64,
    /// A tick nobody was waiting for (Go's one-slot channel buffer); later ticks are dropped
    /// while it is unread.
    pending: Option<u64>,
    /// The fire time of the newest tick handed out or kept (0: none yet).
    newest: u64,
    waiters: VecDeque<*const Slot<Option<u64>>>,
}

impl TickerState {
    /// A tick fired at `now`: to the first waiter (the wake-up returned), else kept if the
    /// slot is free. A tick no newer than one already handed out is dropped: two Ms can run
    /// the node's consecutive periods (the heap re-arms it before calling back, unlocked),
    /// and the later one's callback can come first; ticks stay in order.
    fn fired(&mut self, now: u64) -> Option<Wakeup> {
        if now <= self.newest {
            return None;
        }
        self.newest = now;
        match self.waiters.pop_front() {
            // SAFETY: queued under the ticker's lock (held by our caller), not yet answered.
            Some(s) => Some(unsafe { answer(s, Some(now)) }),
            None => {
                if self.pending.is_none() {
                    self.pending = Some(now);
                }
                None
            }
        }
    }
}

// SAFETY: as for TimerState.
unsafe impl Send for TickerState {}

struct TickerShared {
    a: Armable,
    st: Mutex<TickerState>,
}

/// Periodic ticks (Go's `time.Ticker`, with a blocking [`Ticker::tick`] in place of the
/// channel `C` until gort has channels).
///
/// Ticks come every `period` on a fixed grid; a tick nobody takes is kept (one only, like
/// Go's one-slot channel), and ticks missed by a slow consumer are dropped, never bunched up.
///
/// ```
/// use std::time::Duration;
/// gort::run(|| {
///     let t = gort::time::Ticker::new(Duration::from_millis(2));
///     for _ in 0..3 {
///         assert!(t.tick().is_some());
///     }
///     t.stop();
///     assert!(t.tick().is_none());
/// });
/// ```
pub struct Ticker {
    shared: Box<TickerShared>,
}

impl std::fmt::Debug for Ticker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.shared.st);
        f.debug_struct("Ticker")
            .field("period", &Duration::from_nanos(st.period))
            .field("stopped", &st.stopped)
            .finish()
    }
}

impl Ticker {
    /// A ticker with the given period, first tick one period from now. Panics if `period`
    /// is zero (as Go's `NewTicker` panics on a non-positive interval).
    pub fn new(period: Duration) -> Ticker {
        assert!(!period.is_zero(), "gort::time::Ticker::new: zero period");
        let p = duration_ns(period);
        let mut shared = Box::new(TickerShared {
            a: Armable {
                node: TimerNode::new(ticker_fired, 0),
                sched: current_sched(),
            },
            st: Mutex::new(TickerState {
                stopped: false,
                seq: 0,
                period: p,
                pending: None,
                newest: 0,
                waiters: VecDeque::new(),
            }),
        });
        let arg = &*shared as *const TickerShared as usize;
        shared.a.node = TimerNode::new(ticker_fired, arg);
        {
            let mut st = lock(&shared.st);
            match shared.a.arm(deadline_after(period), p) {
                Some(a) => st.seq = a.seq,
                None => st.stopped = true,
            }
        }
        Ticker { shared }
    }

    /// Wait for the next tick and return the time it fired; a tick that fired while nobody
    /// was waiting is returned at once. `None` once the ticker is stopped (Go's channel would
    /// block forever). Each tick goes to one caller.
    pub fn tick(&self) -> Option<Instant> {
        let mut st = lock(&self.shared.st);
        if let Some(t) = st.pending.take() {
            return Some(nanos_to_instant(t));
        }
        if st.stopped {
            return None;
        }
        let slot = Slot::new(None);
        st.waiters.push_back(&slot);
        drop(st);
        slot.w.wait();
        // SAFETY: written by our waker before its claim, which `wait` synchronised with.
        unsafe { *slot.out.get() }.map(nanos_to_instant)
    }

    /// Stop ticking. Pending and future `tick` calls return `None`; an untaken tick is
    /// discarded (no stale tick after `stop`, as Go 1.23).
    pub fn stop(&self) {
        let mut st = lock(&self.shared.st);
        st.stopped = true;
        st.pending = None;
        self.shared.a.disarm();
        let wakes: Vec<Wakeup> = st
            .waiters
            .drain(..)
            // SAFETY: queued under this lock, not yet answered.
            .map(|s| unsafe { answer(s, None) })
            .collect();
        drop(st);
        wakes.into_iter().for_each(Wakeup::wake);
    }

    /// Restart with a new period (also after `stop`): the next tick comes one `period` from
    /// now; an untaken tick is discarded. Panics if `period` is zero.
    pub fn reset(&self, period: Duration) {
        assert!(!period.is_zero(), "gort::time::Ticker::reset: zero period");
        let p = duration_ns(period);
        let mut st = lock(&self.shared.st);
        let Some(a) = self.shared.a.arm(deadline_after(period), p) else {
            return;
        };
        st.stopped = false;
        st.pending = None;
        st.period = p;
        st.seq = a.seq;
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.a.cancel();
    }
}

/// Timer callback of [`Ticker`].
unsafe fn ticker_fired(arg: usize, seq: u64, now: u64, done: Running) {
    // SAFETY: as in `timer_fired`.
    let sh = unsafe { &*(arg as *const TickerShared) };
    let mut st = lock(&sh.st);
    if st.stopped || st.seq != seq {
        return;
    }
    let wake = st.fired(now);
    drop(st);
    drop(done);
    if let Some(w) = wake {
        w.wake();
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks for the rest of the runtime (channels: `after`, `Timer.C`, `Ticker.C`; deadlines).

/// The closure of a [`CallbackTimer`]: `f(seq, now)`, with the arming's sequence number (see
/// [`CallbackTimer::reset`]) and the time the run started.
#[allow(dead_code)] // the channels work uses it
pub(crate) type Callback = Box<dyn Fn(u64, u64) + Send + Sync>;

#[allow(dead_code)] // the channels work uses it
struct CallbackShared {
    a: Armable,
    f: Callback,
}

/// An owned timer running a closure on the scheduler each time it fires: the base for
/// channel timers. Disarmed when created; `Drop` cancels it synchronously.
///
/// The closure runs on g0 with a P held: it must not block (a non-blocking channel send, a
/// `goready` are fine) and must not drop or synchronously stop its own timer. It may race
/// with `reset`/`stop`: it can run just after `stop` returned false (the firing was already
/// under way), or for the previous arming after `reset` — compare its `seq` with the one
/// `reset` returned (under your own lock) to discard such stale firings.
#[allow(dead_code)] // the channels work uses it
pub(crate) struct CallbackTimer {
    shared: Box<CallbackShared>,
}

#[allow(dead_code)] // the channels work uses it
impl CallbackTimer {
    /// A disarmed timer on the calling goroutine's runtime (or the default one).
    pub(crate) fn new(f: Callback) -> CallbackTimer {
        let mut shared = Box::new(CallbackShared {
            a: Armable {
                node: TimerNode::new(callback_fired, 0),
                sched: current_sched(),
            },
            f,
        });
        let arg = &*shared as *const CallbackShared as usize;
        shared.a.node = TimerNode::new(callback_fired, arg);
        CallbackTimer { shared }
    }

    /// Arm to fire at `when` ([`nanotime`]'s clock; see [`deadline_after`],
    /// [`instant_to_nanos`]), then every `period` ns if non-zero. `None` if the runtime is
    /// gone (it will never fire).
    pub(crate) fn reset(&self, when: u64, period: u64) -> Option<Armed> {
        self.shared.a.arm(when, period)
    }

    /// Disarm: true if it was pending (Go's `Stop`).
    pub(crate) fn stop(&self) -> bool {
        self.shared.a.disarm()
    }
}

impl Drop for CallbackTimer {
    fn drop(&mut self) {
        self.shared.a.cancel();
    }
}

#[allow(dead_code)] // the channels work uses it
unsafe fn callback_fired(arg: usize, seq: u64, now: u64, done: Running) {
    // SAFETY: as in `timer_fired`: the Box outlives `done`.
    let sh = unsafe { &*(arg as *const CallbackShared) };
    (sh.f)(seq, now);
    drop(done);
}

#[allow(dead_code)] // the channels work uses it
struct Owned {
    node: TimerNode,
    f: Option<Box<dyn FnOnce() + Send>>,
}

/// Run `f` once at `when` ([`nanotime`]'s clock), on the scheduler (g0, a P held: it must not
/// block), on the calling goroutine's runtime or the default one. Fire-and-forget: it cannot
/// be stopped; the heap owns it until it fires; if the runtime shuts down first, `f` is
/// dropped without running. The base for `after(d)`.
#[allow(dead_code)] // the channels work uses it
pub(crate) fn after_fn(when: u64, f: Box<dyn FnOnce() + Send>) {
    let b = Box::into_raw(Box::new(Owned {
        node: TimerNode::new_owned(owned_fired, 0, owned_free),
        f: Some(f),
    }));
    // SAFETY: `b` is a fresh allocation we own until it is armed.
    unsafe { (*b).node = TimerNode::new_owned(owned_fired, b as usize, owned_free) };
    crate::runtime::with_current(|s| {
        // SAFETY: the node stays in its Box, which only its callback (after it left the heap)
        // or the heap's Drop frees; armed once, on `s`.
        unsafe { (*b).node.arm(s, when, 0) };
    });
}

#[allow(dead_code)] // the channels work uses it
unsafe fn owned_fired(arg: usize, _seq: u64, _now: u64, done: Running) {
    // Nobody waits on an owned node (it cannot be cancelled): forget the token rather than
    // touch the node after freeing it.
    std::mem::forget(done);
    // SAFETY: the node left its heap to run this callback, its only run; we own the Box.
    let mut b = unsafe { Box::from_raw(arg as *mut Owned) };
    if let Some(f) = b.f.take() {
        f();
    }
}

#[allow(dead_code)] // the channels work uses it
unsafe fn owned_free(node: NonNull<TimerNode>) {
    // SAFETY: the heap's Drop passes a node of its own, alive until freed here; its `arg`
    // is the `Owned` that contains it (set by `after_fn`).
    let arg = unsafe { node.as_ref() }.arg();
    // SAFETY: the runtime is being dropped and the node never ran: we own the Box.
    drop(unsafe { Box::from_raw(arg as *mut Owned) });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Runtime;
    use std::sync::atomic::{AtomicBool, AtomicU64 as StdAtomicU64, AtomicUsize};

    fn rt(procs: usize) -> Runtime {
        Runtime::builder().procs(procs).build().unwrap()
    }

    /// The "queue" of a primitive: one waiter slot under a lock (the rule in park.rs).
    struct Queue(std::sync::Mutex<Option<usize>>);

    /// A timed waiter racing a notifier, following park.rs's protocol for primitives: exactly
    /// one wins, both sides agree on who, and a timed-out waiter never returns early.
    fn race(procs: usize, rounds: u64, thread_waiter: bool) -> (u64, u64) {
        let r = rt(procs);
        let (notified, timed_out) = (
            Arc::new(StdAtomicU64::new(0)),
            Arc::new(StdAtomicU64::new(0)),
        );
        let (n2, t2) = (notified.clone(), timed_out.clone());
        r.block_on(move || {
            for i in 0..rounds {
                let q = Arc::new(Queue(std::sync::Mutex::new(None)));
                let notify_won = Arc::new(AtomicBool::new(false));
                let finished = Arc::new(AtomicBool::new(false));
                let d = Duration::from_micros(i % 50);
                let (q2, nw, fin) = (q.clone(), notify_won.clone(), finished.clone());
                let waiter = move || {
                    let w = Waiter::new();
                    *q2.0.lock().unwrap() = Some(&w as *const Waiter as usize);
                    let deadline = Instant::now() + d;
                    let won = w.wait_deadline(Some(deadline));
                    if !won {
                        let now = Instant::now();
                        assert!(
                            now >= deadline,
                            "timed out early: {:?} before the deadline (d {d:?}, thread {})",
                            deadline - now,
                            thread_waiter
                        );
                        // Dequeue ourselves if a notifier did not.
                        q2.0.lock().unwrap().take();
                    }
                    // Relaxed: only ends the notifier's polling.
                    fin.store(true, Ordering::Relaxed);
                    won
                };
                let h: Box<dyn FnOnce() -> bool + Send> = if thread_waiter {
                    let t = std::thread::spawn(waiter);
                    Box::new(move || t.join().unwrap())
                } else {
                    let g = crate::go(waiter);
                    Box::new(move || g.join().unwrap())
                };
                // Notify at about the deadline.
                for _ in 0..(i * 7) % 13 {
                    crate::yield_now();
                }
                loop {
                    let mut g = q.0.lock().unwrap();
                    if let Some(w) = g.take() {
                        // SAFETY: dequeued under the queue's lock, which the waiter takes
                        // before returning after a timeout.
                        let won = unsafe { Waiter::notify(w as *const Waiter) };
                        nw.store(won, Ordering::Relaxed);
                        break;
                    }
                    drop(g);
                    // Not queued yet, or already gone (timed out and dequeued itself). Even
                    // rounds try once; odd ones poll until the waiter is gone.
                    // Relaxed: a polling flag.
                    if i % 2 == 0 || finished.load(Ordering::Relaxed) {
                        break;
                    }
                    crate::yield_now();
                }
                let won = h();
                // Relaxed: read after the join.
                assert_eq!(
                    won,
                    notify_won.load(Ordering::Relaxed),
                    "round {i}: both won or neither"
                );
                if won {
                    n2.fetch_add(1, Ordering::Relaxed);
                } else {
                    t2.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        r.shutdown();
        (
            notified.load(Ordering::Relaxed),
            timed_out.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn timed_wait_vs_notify_goroutine() {
        for procs in [1, 2, 8] {
            let (n, t) = race(procs, 3000, false);
            eprintln!("goroutine waiter, procs={procs}: {n} notified, {t} timed out");
        }
    }

    #[test]
    fn timed_wait_vs_notify_thread() {
        for procs in [1, 2] {
            let (n, t) = race(procs, 500, true);
            eprintln!("thread waiter, procs={procs}: {n} notified, {t} timed out");
        }
    }

    /// A deadline already past: no park, immediate timeout; a notified waiter with a far
    /// deadline cancels its timer (nothing left pending).
    #[test]
    fn timed_wait_edges() {
        let r = rt(2);
        r.block_on(|| {
            let w = Waiter::new();
            assert!(!w.wait_deadline(Some(Instant::now() - Duration::from_millis(1))));
            let w = Waiter::new();
            let p = &w as *const Waiter as usize;
            let h = crate::go(move || {
                crate::sleep(Duration::from_millis(2));
                // SAFETY: the waiter's deadline is an hour away: it cannot time out, so it
                // is alive until notified.
                assert!(unsafe { Waiter::notify(p as *const Waiter) });
            });
            assert!(w.wait_deadline(Some(Instant::now() + Duration::from_secs(3600))));
            h.join().unwrap();
        });
        assert_eq!(r.stats().timers_pending, 0);
        r.shutdown();
    }

    /// The hooks the channels work builds on: a periodic CallbackTimer with stale-firing
    /// detection, cancellation on drop, and fire-and-forget `after_fn`.
    #[test]
    fn callback_timer_and_after_fn() {
        let r = rt(2);
        r.block_on(|| {
            let fired = Arc::new(AtomicUsize::new(0));
            let f2 = fired.clone();
            let t = CallbackTimer::new(Box::new(move |_seq, _now| {
                f2.fetch_add(1, Ordering::Relaxed);
            }));
            let a = t
                .reset(deadline_after(Duration::from_millis(1)), 1_000_000)
                .unwrap();
            assert!(!a.was_active);
            while fired.load(Ordering::Relaxed) < 3 {
                crate::sleep(Duration::from_millis(1));
            }
            assert!(t.stop());
            assert!(!t.stop());
            let b = t
                .reset(deadline_after(Duration::from_secs(3600)), 0)
                .unwrap();
            assert!(b.seq > a.seq);
            drop(t); // cancels

            let done = Arc::new(AtomicBool::new(false));
            let d2 = done.clone();
            let start = Instant::now();
            after_fn(
                deadline_after(Duration::from_millis(3)),
                Box::new(move || d2.store(true, Ordering::Release)),
            );
            // Acquire: pairs with the closure's Release store.
            while !done.load(Ordering::Acquire) {
                crate::sleep(Duration::from_micros(200));
            }
            assert!(start.elapsed() >= Duration::from_millis(3));
        });
        assert_eq!(r.stats().timers_pending, 0);
        // An owned timer left pending is freed (its closure dropped) with its runtime.
        let dropped = Arc::new(AtomicBool::new(false));
        struct OnDrop(Arc<AtomicBool>);
        impl Drop for OnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let od = OnDrop(dropped.clone());
        r.block_on(move || {
            after_fn(
                deadline_after(Duration::from_secs(3600)),
                Box::new(move || drop(od)),
            )
        });
        r.shutdown();
        assert!(dropped.load(Ordering::Relaxed));
    }

    /// Two Ms ran consecutive periods of one ticker and the later callback came first: the
    /// earlier tick is dropped, not handed out after the later one (the aarch64/qemu CI run
    /// that failed `ticker_on_plain_thread` with "ticks in order").
    #[test]
    fn ticker_drops_a_tick_older_than_one_handed_out() {
        let mut st = TickerState {
            stopped: false,
            seq: 0,
            period: 100,
            pending: None,
            newest: 0,
            waiters: VecDeque::new(),
        };
        assert!(st.fired(300).is_none());
        assert_eq!(st.pending.take(), Some(300), "kept for the next tick()");
        assert!(st.fired(200).is_none());
        assert_eq!(st.pending, None, "the older period's tick is dropped");
        assert!(st.fired(400).is_none());
        assert!(st.fired(500).is_none());
        assert_eq!(
            st.pending,
            Some(400),
            "later ticks are dropped while one is unread"
        );
    }

    /// Both directions err late: an `Instant` converts to no less than a `nanotime` read before
    /// it, a `nanotime` reading to no less than an `Instant` read before it — with the epoch in
    /// use, and with one whose bracket was stretched (as a preemption between its reads would).
    #[test]
    fn instant_conversion_never_early() {
        let stretched = {
            let before = nanotime();
            std::thread::sleep(Duration::from_millis(5));
            let instant = Instant::now();
            std::thread::sleep(Duration::from_millis(5));
            Epoch {
                instant,
                before,
                after: nanotime(),
            }
        };
        for e in [epoch(), &stretched] {
            for _ in 0..10_000 {
                let t0 = nanotime();
                let i = Instant::now();
                assert!(e.to_nanos(i) >= t0, "instant converted early");
                assert!(e.to_instant(e.to_nanos(i)) >= i, "round trip early");
                let t1 = nanotime();
                assert!(e.to_instant(t1) >= i, "reading converted early");
            }
        }
        let past = Instant::now() - Duration::from_secs(1);
        assert!(instant_to_nanos(past) < nanotime());
    }
}
