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

// ---------------------------------------------------------------------------------------------
// Two readers of one socket (`netpoll/fd.rs`, "edges nobody saw" and "Drained TCP reads"): a
// `&TcpStream` read by two goroutines with different buffer sizes, so that their reads are
// sometimes full and sometimes short (the drained hint is set and used), while a sender
// queues data, delivering an edge after each arrival as epoll does, and ends the stream once
// every byte has arrived. A reader that waits while data or the end of the stream is there
// with no edge to come never returns: loom reports a deadlock.
//
// The kernel's socket is a mutex over (bytes queued, end of stream); the read slot, its wait
// mutex, the edge count and the hint follow `PollDesc`/`Registration` (a `Note` per reader
// stands for its `Waiter`).

mod two_readers {
    use crate::loom::{AtomicU64, AtomicUsize, Mutex, Ordering};
    use crate::sched::note::Note;
    use loom::sync::Arc;
    use loom::thread;

    const NIL: usize = 0;
    const READY: usize = 1;
    /// `WAITING + i`: reader `i` waits.
    const WAITING: usize = 2;
    const CHUNKS: [usize; 2] = [2, 1];
    const TOTAL: usize = 3;

    struct Socket {
        /// (bytes queued, end of stream)
        queue: Mutex<(usize, bool)>,
        slot: AtomicUsize,
        edges: AtomicU64,
        /// `Registration::rmu`.
        wait_lock: Mutex<()>,
        drained: AtomicU64,
        notes: [Note; 2],
        received: AtomicUsize,
        all_received: Note,
        /// The protocol as it is; false: without the edge count (the protocol before it).
        /// With false, or with the poller returning on a plain look at `READY`, loom reports
        /// the deadlock at preemption bound 2 (checked by hand: a deadlocking model aborts the
        /// test process, so it cannot be a `should_panic` test).
        count_edges: bool,
    }

    impl Socket {
        /// `PollDesc::ready`: an edge.
        fn edge(&self) {
            self.edges.fetch_add(1, Ordering::Relaxed);
            let mut cur = self.slot.load(Ordering::Relaxed);
            loop {
                let new = match cur {
                    NIL | READY => READY,
                    _ => NIL,
                };
                match self
                    .slot
                    .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Relaxed)
                {
                    Ok(_) if cur == NIL || cur == READY => return,
                    Ok(_) => {
                        self.notes[cur - WAITING].wake();
                        return;
                    }
                    Err(now) => cur = now,
                }
            }
        }

        /// `Registration::wait` (no deadlines, no closing).
        fn wait(&self, i: usize, seen: u64) {
            let Ok(_guard) = self.wait_lock.try_lock() else {
                // The other reader waits: wait for it, then retry the call.
                drop(self.wait_lock.lock().unwrap());
                return;
            };
            if self.count_edges && self.edges.load(Ordering::Relaxed) != seen {
                return;
            }
            if self
                .slot
                .compare_exchange(READY, NIL, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            self.notes[i].clear();
            match self
                .slot
                .compare_exchange(NIL, WAITING + i, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => self.notes[i].sleep(),
                Err(_) => {
                    let _ =
                        self.slot
                            .compare_exchange(READY, NIL, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
        }

        /// `Registration::read_tcp` with a `len`-byte buffer: the bytes read, 0 at the end.
        fn read(&self, i: usize, len: usize) -> usize {
            let mut seen = self.edges.load(Ordering::Relaxed);
            let mut wait_first = self.drained.load(Ordering::Relaxed) == seen + 1;
            loop {
                if !wait_first {
                    let (n, eof) = {
                        let mut q = self.queue.lock().unwrap();
                        let n = q.0.min(len);
                        q.0 -= n;
                        (n, q.1)
                    };
                    if n > 0 && n < len {
                        self.drained.store(seen + 1, Ordering::Relaxed);
                    }
                    if n > 0 || eof {
                        return n;
                    }
                }
                wait_first = false;
                self.wait(i, seen);
                seen = self.edges.load(Ordering::Relaxed);
            }
        }
    }

    fn model(count_edges: bool) {
        let mut b = loom::model::Builder::new();
        // Bound 2 finds both known failures in ~40 s; 3 runs for many minutes.
        b.preemption_bound = Some(2);
        b.check(move || {
            let s = Arc::new(Socket {
                queue: Mutex::new((0, false)),
                slot: AtomicUsize::new(NIL),
                edges: AtomicU64::new(0),
                wait_lock: Mutex::new(()),
                drained: AtomicU64::new(0),
                notes: [Note::new(), Note::new()],
                received: AtomicUsize::new(0),
                all_received: Note::new(),
                count_edges,
            });
            let readers: Vec<_> = [1usize, 2]
                .into_iter()
                .enumerate()
                .map(|(i, len)| {
                    let s = s.clone();
                    thread::spawn(move || {
                        loop {
                            let n = s.read(i, len);
                            if n == 0 {
                                return;
                            }
                            if s.received.fetch_add(n, Ordering::AcqRel) + n == TOTAL {
                                s.all_received.wake();
                            }
                        }
                    })
                })
                .collect();
            for chunk in CHUNKS {
                s.queue.lock().unwrap().0 += chunk;
                s.edge();
            }
            s.all_received.sleep();
            s.queue.lock().unwrap().1 = true;
            s.edge();
            for r in readers {
                r.join().unwrap();
            }
        });
    }

    #[test]
    fn two_readers_strand_nothing() {
        model(true);
    }
}
