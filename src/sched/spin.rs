//! The spinner count: the two StoreLoad halves of the no-lost-wake-up protocol, in a form the
//! loom model below exercises together with the real run queue and note.
//!
//! See "Spinning, and why no wake-up is lost" in `sched/mod.rs`. The submitter publishes a G
//! with a SeqCst RMW (`RunQueue::push(_, true)` swaps `runnext` with SeqCst), then calls
//! [`claim_spinner`]; a spinner that found nothing gives its P back, calls [`stop_spinning`],
//! then re-reads every queue. Each side's SeqCst operation precedes its read in the single
//! total order, so at least one side sees the other's write.

use crate::loom::{AtomicU32, Ordering, fence};

/// Submitter's half: after publishing work, decide whether this thread must start a spinning
/// M. Returns true if it claimed the (only) new spinner slot; the caller must then start an M
/// with an idle P or give the slot back with [`release_spinner`].
#[inline]
pub(crate) fn claim_spinner(nmspinning: &AtomicU32) -> bool {
    // loom models SeqCst *accesses* as AcqRel (only SeqCst fences are modelled), so under loom
    // the SeqCst swap -> SeqCst load pair that orders the submitter's two halves is written
    // as the equivalent fence. Natively the SeqCst operations themselves provide it, with no
    // extra instruction (x86_64: the swap is `xchg`; aarch64: `swpal` then `ldar`).
    #[cfg(loom)]
    fence(Ordering::SeqCst);
    // SeqCst: the load half of the submitter's StoreLoad (see module docs); pairs with the
    // SeqCst decrement + fence in `stop_spinning`.
    if nmspinning.load(Ordering::SeqCst) != 0 {
        return false;
    }
    // SeqCst: part of the same total order (at most one new spinner per wake-up).
    nmspinning
        .compare_exchange(0, 1, Ordering::SeqCst, Ordering::Relaxed)
        .is_ok()
}

/// Give back a spinner slot claimed by [`claim_spinner`] (no idle P was found), or count a
/// spinner that found work (Go's `resetspinning`, whose caller then calls `claim_spinner`).
/// Returns the number of spinners before.
#[inline]
pub(crate) fn release_spinner(nmspinning: &AtomicU32) -> u32 {
    // SeqCst: spinner count changes are all in the protocol's total order.
    nmspinning.fetch_sub(1, Ordering::SeqCst)
}

/// Spinner's half: it found no work and already gave its P back. Decrement, then a full
/// fence, so the caller's following re-reads of every queue are ordered after it.
/// Returns the number of spinners before.
#[inline]
pub(crate) fn stop_spinning(nmspinning: &AtomicU32) -> u32 {
    // SeqCst: the store half of the spinner's StoreLoad; see `claim_spinner`.
    let prev = nmspinning.fetch_sub(1, Ordering::SeqCst);
    // SeqCst fence: orders the queue re-reads (acquire loads) after the decrement.
    fence(Ordering::SeqCst);
    prev
}

/// Become a spinner (a P-holding M that starts looking for work elsewhere).
#[inline]
pub(crate) fn start_spinning(nmspinning: &AtomicU32) {
    // SeqCst: spinner count changes are all in the protocol's total order.
    nmspinning.fetch_add(1, Ordering::SeqCst);
}

/// loom models of the park/wake protocol, built from the real ring, note and spinner-count
/// functions, composed in the order `find_runnable`, `wakep`, `stopm` and `startm` use them.
/// Run with `.ci/loom.sh` (or `RUSTFLAGS="--cfg loom" cargo test --release --lib spin`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use crate::loom::{AtomicBool, Mutex};
    use crate::sched::note::Note;
    use crate::sched::runq::RunQueue;
    use loom::sync::Arc;
    use loom::thread;
    use std::ptr::NonNull;

    struct Item;

    /// The slice of the scheduler the protocol touches: P0 (the submitter's), P1 (the
    /// spinner's), the idle lists under the lock, M1's note.
    struct World {
        p0: RunQueue<Item>,
        p1: RunQueue<Item>,
        nmspinning: AtomicU32,
        /// Under `lock`: P1 on the idle list; M1 on the idle-M list.
        lock: Mutex<(bool, bool)>,
        /// Global queue (under its own lock here: one item slot).
        global: Mutex<Option<NonNull<Item>>>,
        m1_note: Note,
        m1_handed_p: AtomicBool,
        taken: AtomicU32,
    }

    // SAFETY: the dummy items are never dereferenced.
    unsafe impl Send for World {}
    // SAFETY: as above.
    unsafe impl Sync for World {}

    fn world(m1_spinning: bool) -> Arc<World> {
        Arc::new(World {
            p0: RunQueue::new(),
            p1: RunQueue::new(),
            nmspinning: AtomicU32::new(u32::from(m1_spinning)),
            lock: Mutex::new((false, false)),
            global: Mutex::new(None),
            m1_note: Note::new(),
            m1_handed_p: AtomicBool::new(false),
            taken: AtomicU32::new(0),
        })
    }

    fn item() -> NonNull<Item> {
        // A leaked dummy: the queue never dereferences it.
        NonNull::from(Box::leak(Box::new(Item)))
    }

    /// `wakep`: claim the spinner slot, take an idle P, hand it to the idle M.
    fn wakep(w: &World) {
        if !claim_spinner(&w.nmspinning) {
            return;
        }
        let mut l = w.lock.lock().unwrap();
        if l.0 && l.1 {
            // pidleget + mget: P1 and M1 leave the idle lists.
            *l = (false, false);
            drop(l);
            // Relaxed: published by the note's release.
            w.m1_handed_p.store(true, Ordering::Relaxed);
            w.m1_note.wake();
        } else {
            drop(l);
            release_spinner(&w.nmspinning);
        }
    }

    /// M1's `find_runnable` from the spinning state, through `stopm`, until it runs the item.
    fn m1_find(w: &World) {
        let mut spinning = true;
        loop {
            // Global queue.
            if let Some(_g) = w.global.lock().unwrap().take() {
                w.taken.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Steal (runnext included: the last pass).
            if let Some(_g) = w.p0.steal_into(&w.p1, true) {
                w.taken.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // Give P1 up and join the idle lists (stopm registers the M under the lock).
            {
                let mut l = w.lock.lock().unwrap();
                if w.global.lock().unwrap().is_some() {
                    continue;
                }
                w.m1_note.clear();
                *l = (true, true);
            }
            if spinning {
                // No longer a spinner from here; every path below sets `spinning` again.
                stop_spinning(&w.nmspinning);
                // Re-check every P's queue; with work, take a P back and spin again.
                if !w.p0.is_empty() {
                    let mut l = w.lock.lock().unwrap();
                    if l.0 && l.1 {
                        *l = (false, false);
                        drop(l);
                        start_spinning(&w.nmspinning);
                        spinning = true;
                        continue;
                    }
                    // Somebody else took P1 and is waking us: fall through to sleep.
                }
            }
            w.m1_note.sleep();
            // Relaxed: ordered by the note.
            assert!(w.m1_handed_p.swap(false, Ordering::Relaxed));
            spinning = true; // woken by wakep, which counted us as a spinner
        }
    }

    /// A spinner giving up races a submitter pushing to its own `runnext`: the spinner must
    /// either see the G or be woken (otherwise loom reports the spinner asleep forever).
    #[test]
    fn spinner_vs_submitter_no_lost_wakeup() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let w = world(true);
            let w2 = w.clone();
            let m1 = thread::spawn(move || m1_find(&w2));
            // M0 holds P0: spawn (runnext, SeqCst swap), then wakep.
            w.p0.push(item(), true, |_| {
                unreachable!("4-slot ring cannot overflow here")
            });
            wakep(&w);
            m1.join().unwrap();
            assert_eq!(w.taken.load(Ordering::Relaxed), 1);
        });
    }

    /// A thread without a P publishes on the global queue (under the lock) and wakes an idle
    /// P's M (`wake_for_global`), racing M1 giving up its P.
    #[test]
    fn global_submitter_vs_idling_m() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let w = world(true);
            let w2 = w.clone();
            let m1 = thread::spawn(move || m1_find(&w2));
            {
                let _l = w.lock.lock().unwrap();
                *w.global.lock().unwrap() = Some(item());
            }
            // wake_for_global: any idle P goes to an M.
            let handed = {
                let mut l = w.lock.lock().unwrap();
                let idle = l.0 && l.1;
                if idle {
                    *l = (false, false);
                }
                idle
            };
            if handed {
                // Relaxed: published by the note's release.
                w.m1_handed_p.store(true, Ordering::Relaxed);
                start_spinning(&w.nmspinning);
                w.m1_note.wake();
            }
            m1.join().unwrap();
            assert_eq!(w.taken.load(Ordering::Relaxed), 1);
        });
    }
}
