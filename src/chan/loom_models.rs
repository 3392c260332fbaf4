//! loom models of the channel core: the real `core.rs` (queues, hand-over, claim and undo,
//! close, select's lock-all/enqueue-all/unlink-all) and the real lock, with model waiters
//! built from the real waiter-word functions (`park::word_commit`/`word_resolve`) and a loom
//! `Note` standing in for the futex / the scheduler's park and ready.
//!
//! Two waiters, as `ChanWaiter`'s two modes:
//! * [`Direct`]: the untimed goroutine wait. The party marks its stand-in G Waiting and only
//!   then releases the lock (the scheduler's `unlock_parked`); the waker's `goready` is a CAS
//!   Waiting -> Runnable that must succeed — the model asserts no notifier can reach a party
//!   before it is parked — and the G's saved "registers" (a loom-checked cell) must be
//!   visible to whoever resumes it.
//! * [`Word`]: the `Waiter` word, with a deadline that, when the party waits with one, fires
//!   at the worst moment: right after the party committed to sleep. loom then explores every
//!   placement of the notifiers around it (claim won / lost, undo, the party unlinking itself).
//!
//! Run with `.ci/loom.sh chan` (or `RUSTFLAGS="--cfg loom" cargo test --release --lib chan`).

use super::core::{Block, Case, Chan, Failed, Park, RecvCase, Selected, SendCase, Unlock, select};
use crate::loom::{AtomicU32, Ordering};
use crate::sched::note::Note;
use crate::sched::park::{NOTIFIED, TIMEDOUT, word_commit, word_resolve};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

/// The stand-in G's statuses.
const G_RUNNING: u32 = 0;
const G_WAITING: u32 = 1;
const G_RUNNABLE: u32 = 2;

/// Stands in for a goroutine: its status and saved registers, never freed while a waker may
/// hold it (as a G struct), and its resumption (the note).
struct GStandIn {
    status: AtomicU32,
    regs: UnsafeCell<u32>,
    resumed: Note,
}

/// The untimed-goroutine mode of `ChanWaiter` (or `Word` when created `timed`).
struct Direct {
    g: Option<Arc<GStandIn>>,
    word: Word,
}

/// The `Waiter` word mode.
struct Word {
    state: AtomicU32,
    note: Arc<Note>,
}

enum Wake {
    Direct(Arc<GStandIn>),
    Word(Option<Arc<Note>>),
}

fn do_wake(w: Wake) {
    match w {
        Wake::Direct(g) => {
            // goready: the CAS must find the G parked.
            let ok = g
                .status
                .compare_exchange(G_WAITING, G_RUNNABLE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            assert!(ok, "goready of a goroutine that is not parked");
            // The M that resumes it reads its saved registers.
            g.regs.with(|r| assert_eq!(unsafe { *r }, 42));
            g.resumed.wake();
        }
        Wake::Word(Some(note)) => note.wake(),
        Wake::Word(None) => {}
    }
}

impl Word {
    fn new() -> Word {
        Word {
            state: AtomicU32::new(crate::sched::park::WAITING),
            note: Arc::new(Note::new()),
        }
    }

    fn wait<U: Unlock>(&self, unlock: &U, deadline: Option<u64>) -> bool {
        unlock.unlock();
        if !word_commit(&self.state) {
            // Acquire (in the failed commit): the winner's writes are visible.
            return self.state.load(Ordering::Acquire) == NOTIFIED;
        }
        if deadline.is_some() {
            // The deadline fires now, right after the commit.
            match word_resolve(&self.state, TIMEDOUT) {
                Some(_) => return false,
                // A notifier won (and saw PARKED): it wakes the note.
                None => {}
            }
        }
        self.note.sleep();
        true
    }

    /// # Safety
    /// As `Park::claim`.
    unsafe fn claim(this: *const Word) -> Option<Wake> {
        // SAFETY: live per the contract; read what the wake needs before the CAS.
        let (note, state) = unsafe { ((*this).note.clone(), &(*this).state) };
        let parked = word_resolve(state, NOTIFIED)?;
        Some(Wake::Word(parked.then_some(note)))
    }
}

impl Park for Word {
    type Wakeup = Wake;
    fn new(_timed: bool) -> Word {
        Word::new()
    }
    fn wait<U: Unlock>(&self, unlock: &U, deadline: Option<u64>) -> bool {
        Word::wait(self, unlock, deadline)
    }
    unsafe fn claim(this: *const Word) -> Option<Wake> {
        // SAFETY: forwarded.
        unsafe { Word::claim(this) }
    }
    fn wake(w: Wake) {
        do_wake(w)
    }
}

impl Park for Direct {
    type Wakeup = Wake;
    fn new(timed: bool) -> Direct {
        Direct {
            g: (!timed).then(|| {
                Arc::new(GStandIn {
                    status: AtomicU32::new(G_RUNNING),
                    regs: UnsafeCell::new(0),
                    resumed: Note::new(),
                })
            }),
            word: Word::new(),
        }
    }
    fn wait<U: Unlock>(&self, unlock: &U, deadline: Option<u64>) -> bool {
        match &self.g {
            Some(g) => {
                // mcall: the registers are saved; g0 sets the status, then runs the unlock
                // callback.
                g.regs.with_mut(|r| unsafe { *r = 42 });
                g.status.store(G_WAITING, Ordering::Release);
                unlock.unlock();
                g.resumed.sleep();
                // Resumed by the M that dequeued it.
                g.status.store(G_RUNNING, Ordering::Relaxed);
                true
            }
            None => self.word.wait(unlock, deadline),
        }
    }
    unsafe fn claim(this: *const Direct) -> Option<Wake> {
        // SAFETY: live per the contract.
        match unsafe { &(*this).g } {
            Some(g) => Some(Wake::Direct(g.clone())),
            // SAFETY: forwarded.
            None => unsafe { Word::claim(&(*this).word) },
        }
    }
    fn wake(w: Wake) {
        do_wake(w)
    }
}

fn builder(bound: usize) -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(bound);
    b
}

// ---------------------------------------------------------------------------------------------
// Models.

/// A sender and a receiver arriving together on an unbuffered channel: the value is handed
/// over exactly once, whoever parks, and the parked one is woken.
fn send_meets_recv<W: Park>() {
    builder(4).check(|| {
        let c = Arc::new(Chan::<u32, W>::new(0));
        let c2 = c.clone();
        let sender = thread::spawn(move || c2.send(7, Block::Forever));
        assert_eq!(c.recv(Block::Forever), Ok(7));
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(c.recv(Block::No), Err(Failed::NotReady(())));
    });
}

#[test]
fn send_meets_recv_direct() {
    send_meets_recv::<Direct>();
}

#[test]
fn send_meets_recv_word() {
    send_meets_recv::<Word>();
}

/// Close racing a parked (or parking) receiver, with a value buffered before the close: the
/// receiver gets the value, then the disconnection; it is never left asleep.
fn close_races_receiver<W: Park>(cap: usize) {
    builder(4).check(move || {
        let c = Arc::new(Chan::<u32, W>::new(cap));
        let c2 = c.clone();
        let closer = thread::spawn(move || {
            if cap > 0 {
                assert_eq!(c2.send(1, Block::No), Ok(()));
            }
            assert!(c2.close());
        });
        if cap > 0 {
            assert_eq!(c.recv(Block::Forever), Ok(1));
        }
        assert_eq!(c.recv(Block::Forever), Err(Failed::Closed(())));
        closer.join().unwrap();
    });
}

#[test]
fn close_races_receiver_direct() {
    close_races_receiver::<Direct>(0);
    close_races_receiver::<Direct>(1);
}

#[test]
fn close_races_receiver_word() {
    close_races_receiver::<Word>(0);
    close_races_receiver::<Word>(1);
}

/// Close racing a parked sender: it gets its value back.
#[test]
fn close_races_sender() {
    builder(4).check(|| {
        let c = Arc::new(Chan::<u32, Direct>::new(0));
        let c2 = c.clone();
        let sender = thread::spawn(move || c2.send(5, Block::Forever));
        assert!(c.close());
        assert_eq!(sender.join().unwrap(), Err(Failed::Closed(5)));
    });
}

/// A timed receive racing a timed send on an unbuffered channel (the deadlines fire right
/// after each party commits): both complete or both time out, and a timed-out sender gets its
/// value back.
#[test]
fn timeout_races_partner_unbuffered() {
    builder(4).check(|| {
        let c = Arc::new(Chan::<u32, Word>::new(0));
        let c2 = c.clone();
        let sender = thread::spawn(move || c2.send(9, Block::Until(1)));
        let r = c.recv(Block::Until(1));
        let s = sender.join().unwrap();
        match (r, s) {
            (Ok(9), Ok(())) => {}
            (Err(Failed::NotReady(())), Err(Failed::NotReady(9))) => {}
            other => panic!("inconsistent outcome {other:?}"),
        }
    });
}

/// A timed sender parked on a full buffer racing a receiver, which takes the head and moves
/// the sender's value in (or undoes that if the sender's deadline won): the value is either in
/// the channel (sender Ok) or back with the sender, never both, never lost.
#[test]
fn timeout_races_partner_buffered() {
    builder(4).check(|| {
        let c = Arc::new(Chan::<u32, Word>::new(1));
        assert_eq!(c.send(1, Block::No), Ok(()));
        let c2 = c.clone();
        let sender = thread::spawn(move || c2.send(2, Block::Until(1)));
        assert_eq!(c.recv(Block::Forever), Ok(1));
        let s = sender.join().unwrap();
        let rest = c.recv(Block::No);
        match (s, rest) {
            (Ok(()), Ok(2)) => {}
            (Err(Failed::NotReady(2)), Err(Failed::NotReady(()))) => {}
            other => panic!("inconsistent outcome {other:?}"),
        }
    });
}

/// A select over two unbuffered channels racing two senders: it takes exactly one value; the
/// other sender's value is then received by a plain receive (not lost, not taken twice), and
/// both senders complete.
fn select_races_two_senders<W: Park>(seed: u64) {
    builder(3).check(move || {
        let a = Arc::new(Chan::<u32, W>::new(0));
        let b = Arc::new(Chan::<u32, W>::new(0));
        let (a2, b2) = (a.clone(), b.clone());
        let sa = thread::spawn(move || a2.send(1, Block::Forever));
        let sb = thread::spawn(move || b2.send(2, Block::Forever));
        let ca = RecvCase::new(&*a);
        let cb = RecvCase::new(&*b);
        let arms: [&dyn Case<W>; 2] = [&ca, &cb];
        let fired = select(&arms, |c| *c, Block::Forever, seed);
        let (got, other) = match fired {
            Selected::Fired(0) => (ca.into_result(), b.recv(Block::Forever)),
            Selected::Fired(1) => (cb.into_result(), a.recv(Block::Forever)),
            s => panic!("unexpected {s:?}"),
        };
        let mut vals = [got.unwrap(), other.unwrap()];
        vals.sort();
        assert_eq!(vals, [1, 2]);
        assert_eq!(sa.join().unwrap(), Ok(()));
        assert_eq!(sb.join().unwrap(), Ok(()));
    });
}

#[test]
fn select_races_two_senders_direct() {
    select_races_two_senders::<Direct>(0);
    select_races_two_senders::<Direct>(u64::MAX);
}

#[test]
fn select_races_two_senders_word() {
    select_races_two_senders::<Word>(0);
}

/// A select with a receive arm and a send arm racing a close of the first channel and a
/// receiver on the second: exactly one arm fires; if it is the send, the receiver has the
/// value; if it is the receive, it saw the close, and the receiver gets nothing from it.
#[test]
fn select_races_close_and_receiver() {
    builder(3).check(|| {
        let a = Arc::new(Chan::<u32, Direct>::new(0));
        let b = Arc::new(Chan::<u32, Direct>::new(0));
        let (a2, b2) = (a.clone(), b.clone());
        let closer = thread::spawn(move || assert!(a2.close()));
        let receiver = thread::spawn(move || b2.recv(Block::Until(1)));
        let ca = RecvCase::new(&*a);
        let cb = SendCase::new(&*b, 3);
        let arms: [&dyn Case<Direct>; 2] = [&ca, &cb];
        let fired = select(&arms, |c| *c, Block::Forever, 0);
        closer.join().unwrap();
        let r = receiver.join().unwrap();
        match fired {
            Selected::Fired(0) => {
                assert_eq!(ca.into_result(), None);
                assert_eq!(cb.into_unsent(), Some(3));
                assert_eq!(r, Err(Failed::NotReady(())));
            }
            Selected::Fired(1) => {
                assert_eq!(cb.into_unsent(), None);
                assert_eq!(r, Ok(3));
            }
            s => panic!("unexpected {s:?}"),
        }
    });
}
