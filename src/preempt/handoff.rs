//! `Preempt::ThreadHandoff`: the preempted goroutine keeps its thread; its P moves on.
//!
//! # Protocol (DESIGN.md §6), on the locked-thread machinery of `sched/syscall.rs`
//! In the yield, on the preempted goroutine's stack ([`yield_keeping_thread`]):
//! 1. take the runtime's temporary thread lock (`lock_thread(internal)`, Go's `lockedInt`):
//!    from now on only this M may run the goroutine;
//! 2. the choke point (`current_p`): if sysmon took the P while the goroutine was blocked in
//!    foreign code, get one back — the lock keeps the goroutine on this thread meanwhile;
//! 3. nothing else runnable (this P's queue and the global queue empty, no timer due): start
//!    a new slice (`schedtick`, which the monitor watches) and resume in place;
//! 4. otherwise yield to the back of the global queue (`mcall(Backoff)`): a locked M goes
//!    through g0, which queues the goroutine, hands the P off (`handoffp`) and sleeps
//!    (`stoplockedm`); whichever M dequeues the goroutine hands its P to this M and goes idle
//!    (`startlockedm`); this M wakes and resumes the goroutine here;
//! 5. drop the temporary lock (unless the user's `lock_os_thread` holds it too): from then on
//!    the goroutine is an ordinary one, free to move at its next voluntary scheduling point.
//!
//! Thread-locals, thread-owned locks (std's stdout) and errno stay consistent. Cost: two
//! futex hand-offs per preemption, only at quantum expiry.

use crate::loom::Ordering;
use crate::sched::m::{Action, M};
use crate::sched::syscall;

/// Steps 1-5 of the protocol.
pub(crate) fn yield_keeping_thread(m: &M) {
    syscall::lock_thread(true);
    let (m, pr) = syscall::current_p(m);
    let s = &*m.sched;
    let st = &s.preempt;
    // Relaxed: hints; a G queued concurrently is found by its own wake-up path.
    if pr.runq.is_empty()
        && s.runqsize.load(Ordering::Relaxed) == 0
        && !crate::time::due_within(s, 0)
    {
        pr.bump_schedtick();
        // Relaxed: statistics.
        st.in_place.fetch_add(1, Ordering::Relaxed);
    } else {
        st.handed_off.fetch_add(1, Ordering::Relaxed);
        let _ = crate::sched::schedule::mcall(Action::Backoff, None);
    }
    syscall::unlock_thread(true);
}
