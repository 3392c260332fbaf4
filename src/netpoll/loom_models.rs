//! loom model of the netpoll blocker's wake-up (`netpoll/mod.rs`, "Waking the blocker"): an
//! idle M deciding to block in epoll races a waker that signals its note and then looks for
//! it in `blocker`. Run with `.ci/loom.sh blocker`.
//!
//! The eventfd is modelled by a second note (the break), deduplicated by `break_pending` as in
//! `Poller::break_wait`; `epoll_wait` is modelled by sleeping on that note. If the protocol
//! could lose the wake-up, the blocker would sleep forever and loom reports a deadlock.

use crate::loom::{AtomicBool, AtomicUsize, Ordering, fence};
use crate::sched::note::Note;
use loom::sync::Arc;
use loom::thread;

struct World {
    /// The M's note.
    note: Note,
    /// 1: the M claimed the blocker role.
    blocker: AtomicUsize,
    /// The eventfd.
    evfd: Note,
    break_pending: AtomicBool,
}

#[test]
fn blocker_vs_waker() {
    loom::model(|| {
        let w = Arc::new(World {
            note: Note::new(),
            blocker: AtomicUsize::new(0),
            evfd: Note::new(),
            break_pending: AtomicBool::new(false),
        });
        let ww = w.clone();
        let waker = thread::spawn(move || {
            // startm / wake_without_p: signal the note, then `kick_m`.
            ww.note.wake();
            fence(Ordering::SeqCst);
            if ww.blocker.load(Ordering::Relaxed) == 1
                && !ww.break_pending.swap(true, Ordering::AcqRel)
            {
                ww.evfd.wake();
            }
        });
        // `block_idle`.
        w.blocker
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
            .unwrap();
        fence(Ordering::SeqCst);
        if !w.note.is_signalled() {
            // epoll_wait: returns only on the break.
            w.evfd.sleep();
        }
        w.blocker.store(0, Ordering::Release);
        assert!(
            w.note.is_signalled(),
            "the blocker returned without its wake-up"
        );
        waker.join().unwrap();
    });
}
