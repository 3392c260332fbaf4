//! Parking and readying: the primitive every blocking operation builds on.
//!
//! * [`gopark`]: the running goroutine gives up its M (Go's `gopark`): it switches to g0,
//!   which marks it Waiting and then calls an "unlock" function; if that returns false, the G
//!   is resumed at once. Because the function runs after the G's registers are saved, a waker
//!   that synchronises with it can never ready a G that is still running.
//! * [`goready`]: Waiting -> Runnable (a CAS: exactly one waker wins), then onto the current
//!   P's `runnext` (the woken G inherits the waker's time slice, as in Go) and `wakep`; from a
//!   thread without a P, onto the global queue.
//! * [`Waiter`]: one blocked party — a goroutine, or a plain OS thread blocked on a futex — so
//!   the same primitive (channels, join, mutexes) serves both. Three states in one word:
//!   `WAITING` (registered, still running), `PARKED` (committed to sleep), `NOTIFIED`. The
//!   notifier swaps in `NOTIFIED` and wakes the party only if it had reached `PARKED`; the
//!   party commits with a CAS `WAITING -> PARKED` that fails if already notified. No lock is
//!   needed around the registration, and no wake-up is lost or doubled.

use crate::loom::{AtomicU32, Ordering};
use crate::sched::g::{G, Status};
use crate::sched::m::{Action, ParkFn, current_m};
use crate::sched::p::PCounters;
use crate::sched::{fatal_fmt, idle, schedule};

/// Park the running goroutine. `f(g, arg)` runs on g0 after the G's state is saved and its
/// status is Waiting; returning false resumes the G immediately.
///
/// # Safety
/// Must be called from a goroutine. `arg` must stay valid until `f` has run (it runs before
/// this call returns).
pub(crate) unsafe fn gopark(f: ParkFn, arg: usize) {
    let m = current_m();
    // SAFETY: we are a goroutine, so this thread is an M and `m` is valid.
    let mr = unsafe { &*m };
    mr.park_fn.set(Some(f));
    mr.park_arg.set(arg);
    schedule::mcall(mr, Action::Park);
}

/// Make a Waiting G runnable. Any thread.
///
/// # Safety
/// `g` is a valid G of a live runtime, and the caller won the right to ready it (it observed
/// the G parked through a protocol such as [`Waiter`]'s).
pub(crate) unsafe fn goready(g: *mut G) {
    // SAFETY: the caller guarantees `g` is valid.
    let gr = unsafe { &*g };
    if !gr.cas_status(Status::Waiting, Status::Runnable) {
        fatal_fmt(format_args!(
            "goready of goroutine {} in status {:?}",
            gr.id,
            gr.status()
        ));
    }
    // SAFETY: `gr.sched` points at the runtime the G belongs to, alive while it has Gs.
    let s = unsafe { &*gr.sched };
    let m = current_m();
    if !m.is_null() {
        // SAFETY: this thread's own M.
        let mr = unsafe { &*m };
        let p = mr.p.get();
        if !p.is_null() && std::ptr::eq(&*mr.sched, s) {
            // SAFETY: we hold `p`.
            let pr = unsafe { &*p };
            schedule::runqput(s, pr, g, true);
            idle::wakep(s);
            return;
        }
    }
    schedule::globrunqput(s, g);
    idle::wake_for_global(s);
}

const WAITING: u32 = 0;
const PARKED: u32 = 1;
const NOTIFIED: u32 = 2;

/// One blocked party (see the module docs). Lives on the blocked party's stack; whoever holds
/// a pointer to it may call [`Waiter::notify`] once.
pub(crate) struct Waiter {
    state: AtomicU32,
    g: *mut G,
}

impl Waiter {
    /// A waiter for the calling goroutine, or for the calling thread if it is not one.
    pub(crate) fn new() -> Waiter {
        Waiter {
            state: AtomicU32::new(WAITING),
            g: crate::sched::m::current_g(),
        }
    }

    /// Block until notified. Call at most once.
    pub(crate) fn wait(&self) {
        if self.g.is_null() {
            // A plain thread: commit, then sleep on the futex until NOTIFIED.
            // Acquire (on failure): pairs with notify's AcqRel swap.
            if self
                .state
                .compare_exchange(WAITING, PARKED, Ordering::Acquire, Ordering::Acquire)
                .is_err()
            {
                return;
            }
            // Acquire: pairs with notify's swap, making the notifier's writes visible.
            while self.state.load(Ordering::Acquire) != NOTIFIED {
                crate::sched::note::futex_wait(&self.state, PARKED, None);
            }
            return;
        }
        let m = current_m();
        // SAFETY: we are a goroutine; `m` is our M, `p` its P.
        unsafe {
            let p = (*m).p.get();
            if !p.is_null() {
                PCounters::bump(&(*p).counters.parks);
            }
            gopark(commit_park, self as *const Waiter as usize);
        }
    }

    /// Wake the party. Any thread; at most once per waiter.
    ///
    /// # Safety
    /// `this` points to a live waiter that has not been notified yet.
    pub(crate) unsafe fn notify(this: *const Waiter) {
        // SAFETY: live per the contract; read what we need before the swap, after which the
        // waiter may return and its stack frame disappear.
        let (g, word) = unsafe { ((*this).g, &(*this).state as *const AtomicU32) };
        // AcqRel: release our writes to the woken party; acquire its registration.
        // SAFETY: still live until the swap completes.
        let prev = unsafe { (*word).swap(NOTIFIED, Ordering::AcqRel) };
        if prev == PARKED {
            if g.is_null() {
                // SAFETY: futex_wake only uses the address as a key (see note.rs).
                crate::sched::note::futex_wake(unsafe { &*word }, 1);
            } else {
                // SAFETY: PARKED means `commit_park` ran on g0: the G is Waiting and we are
                // its only waker.
                unsafe { goready(g) };
            }
        }
    }
}

/// `gopark` callback: commit a goroutine `Waiter` to PARKED unless it was already notified.
unsafe fn commit_park(_g: *mut G, arg: usize) -> bool {
    // SAFETY: `arg` is the waiter on the parking goroutine's stack, alive while it is parked.
    let w = unsafe { &*(arg as *const Waiter) };
    // AcqRel: release the G's Waiting status to the notifier (which readies it); acquire on
    // failure pairs with notify's swap.
    w.state
        .compare_exchange(WAITING, PARKED, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}
