//! The wait queue under every gort lock: an intrusive list of waiters that live on the blocked
//! parties' stacks, and a semaphore (token count + FIFO) built on it (Go's `runtime/sema.go`).
//!
//! # The list ([`List`], [`Node`])
//! A doubly linked list of [`Node`]s. A node sits on the stack of the party it wakes and holds
//! its [`Waiter`]. Every link field of every linked node, and the list's own fields, are
//! guarded by one lock: the owner of the list's `&mut` (the primitive's queue mutex). The
//! contract that keeps a node's memory alive while it is linked:
//!
//! 1. a party links its node under the lock, then waits on the node's waiter;
//! 2. whoever unlinks a node (`pop_front`) under the lock claims its waiter *before releasing
//!    the lock* (`Waiter::claim`), then wakes it after unlocking (`Wakeup::wake` touches no
//!    part of the node);
//! 3. a party whose wait can time out returns only after retaking the lock and unlinking its
//!    node if it is still linked ([`List::remove`]); a notifier whose claim fails (the
//!    deadline won) treats the node as never queued.
//!
//! Waits without a deadline can only end by a claim, so the node stays alive until then.
//!
//! # The semaphore ([`Sema`])
//! `acquire` takes a token if one is stored, else links a node and parks; `release` hands its
//! token to the node at the head (unlinked and claimed under the lock, woken after it), or
//! stores it if the list is empty. Tokens are never lost and each wake-up consumes exactly
//! one, so a `release` that runs before the matching `acquire` has queued is not missed
//! (the waiter finds the token). `acquire(lifo = true)` queues at the front: Go's mutex uses
//! it for a waiter that was woken and lost the race, so it keeps its seniority.

use super::UCell;
use crate::loom::{Mutex, MutexGuard};
use std::ptr;

#[cfg(not(loom))]
pub(crate) use crate::sched::park::{Waiter, Wakeup};
#[cfg(loom)]
#[allow(unused_imports)] // the same names as the real build; the models use no `Wakeup`
pub(crate) use model::{Waiter, Wakeup};

/// One blocked party in a [`List`]. Lives on that party's stack (see the module docs).
pub(crate) struct Node {
    pub(crate) waiter: Waiter,
    prev: UCell<*const Node>,
    next: UCell<*const Node>,
    /// Whether the node is on a list. Guarded by the list's lock.
    linked: UCell<bool>,
}

impl Node {
    /// A node for the calling goroutine (or plain thread).
    pub(crate) fn new() -> Node {
        Node {
            waiter: Waiter::new(),
            prev: UCell::new(ptr::null()),
            next: UCell::new(ptr::null()),
            linked: UCell::new(false),
        }
    }
}

/// An intrusive FIFO of [`Node`]s. Its owner's lock guards it and every linked node's links:
/// functions that touch nodes take `&mut List`.
pub(crate) struct List {
    head: *const Node,
    tail: *const Node,
    len: usize,
}

// SAFETY: the list holds pointers to nodes on other parties' stacks; they are only touched
// under the lock that owns the list (module docs), from whichever thread holds it.
unsafe impl Send for List {}

impl List {
    pub(crate) const fn new() -> List {
        List {
            head: ptr::null(),
            tail: ptr::null(),
            len: 0,
        }
    }

    /// Number of linked nodes.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Link `n` at the tail.
    ///
    /// # Safety
    /// `n` is not linked, and stays alive until it is unlinked under this list's lock (module
    /// docs, rules 1-3).
    pub(crate) unsafe fn push_back(&mut self, n: &Node) {
        // SAFETY: `&mut self` is the lock guarding these links; the tail is a live linked node.
        unsafe {
            n.prev.set(self.tail);
            n.next.set(ptr::null());
            n.linked.set(true);
            if self.tail.is_null() {
                self.head = n;
            } else {
                (*self.tail).next.set(n);
            }
        }
        self.tail = n;
        self.len += 1;
    }

    /// Link `n` at the head.
    ///
    /// # Safety
    /// As [`Self::push_back`].
    pub(crate) unsafe fn push_front(&mut self, n: &Node) {
        // SAFETY: as in `push_back`.
        unsafe {
            n.prev.set(ptr::null());
            n.next.set(self.head);
            n.linked.set(true);
            if self.head.is_null() {
                self.tail = n;
            } else {
                (*self.head).prev.set(n);
            }
        }
        self.head = n;
        self.len += 1;
    }

    /// Unlink the head node. The returned node is still alive while the caller holds the lock
    /// (and, for a wait without a deadline, until its waiter is notified): claim it before
    /// releasing the lock (module docs, rule 2).
    pub(crate) fn pop_front(&mut self) -> Option<*const Node> {
        let n = self.head;
        if n.is_null() {
            return None;
        }
        // SAFETY: linked nodes are alive (push contract) and guarded by our lock.
        unsafe { self.unlink(n) };
        Some(n)
    }

    /// Unlink `n` if it is still linked (a timed-out waiter leaving). Returns whether it was.
    ///
    /// # Safety
    /// `n` was linked on this list (by the caller) at some point and is alive.
    #[cfg_attr(loom, allow(dead_code))] // used by Condvar, which loom does not build
    pub(crate) unsafe fn remove(&mut self, n: &Node) -> bool {
        // SAFETY: `linked` is guarded by our lock.
        if !unsafe { n.linked.get() } {
            return false;
        }
        // SAFETY: linked on this list, alive.
        unsafe { self.unlink(n) };
        true
    }

    /// # Safety
    /// `n` is linked on this list.
    unsafe fn unlink(&mut self, n: *const Node) {
        // SAFETY: `n` and its neighbours are linked, hence alive; our lock guards the links.
        unsafe {
            let prev = (*n).prev.get();
            let next = (*n).next.get();
            if prev.is_null() {
                self.head = next;
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                self.tail = prev;
            } else {
                (*next).prev.set(prev);
            }
            (*n).linked.set(false);
        }
        self.len -= 1;
    }
}

/// A counting semaphore whose waiters park (see the module docs).
pub(crate) struct Sema {
    q: Mutex<SemaQueue>,
}

/// What the semaphore's lock guards.
struct SemaQueue {
    /// Stored tokens (releases nobody was waiting for).
    tokens: u32,
    waiters: List,
}

impl Sema {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Sema {
        Sema {
            q: Mutex::new(SemaQueue {
                tokens: 0,
                waiters: List::new(),
            }),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Sema {
        Sema {
            q: Mutex::new(SemaQueue {
                tokens: 0,
                waiters: List::new(),
            }),
        }
    }

    #[inline]
    fn lock(&self) -> MutexGuard<'_, SemaQueue> {
        // Nothing panics while the queue lock is held: poisoning cannot happen, but if it
        // did the queue would still be consistent.
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a token, parking the calling goroutine (blocking the calling thread) until one is
    /// released to it. `lifo`: queue at the front instead of the tail.
    pub(crate) fn acquire(&self, lifo: bool) {
        let node = Node::new();
        {
            let mut q = self.lock();
            if q.tokens > 0 {
                q.tokens -= 1;
                return;
            }
            // SAFETY: `node` stays on this frame until `wait` returns, which needs a claim,
            // which happens only after a releaser unlinked it under the lock (rule 2).
            unsafe {
                if lifo {
                    q.waiters.push_front(&node);
                } else {
                    q.waiters.push_back(&node);
                }
            }
        }
        node.waiter.wait();
    }

    /// Give a token: to the waiter at the head (woken), or stored. Returns whether a waiter
    /// was woken.
    pub(crate) fn release(&self) -> bool {
        let wake = {
            let mut q = self.lock();
            match q.waiters.pop_front() {
                None => {
                    q.tokens = match q.tokens.checked_add(1) {
                        Some(t) => t,
                        None => crate::sched::fatal("sync: semaphore token count overflow"),
                    };
                    return false;
                }
                // SAFETY: just unlinked under the lock we still hold: alive and not yet
                // notified (rule 2).
                Some(n) => unsafe { Waiter::claim(&(*n).waiter) },
            }
        };
        match wake {
            Some(w) => w.wake(),
            // Semaphore waits have no deadline: only a second notification could lose.
            None => crate::sched::fatal("sync: a semaphore waiter was woken twice"),
        }
        true
    }

    /// Number of parked waiters (diagnostics and tests).
    #[allow(dead_code)]
    pub(crate) fn waiters(&self) -> usize {
        self.lock().waiters.len()
    }
}

/// The waiter the loom models use: the real waiter word's transitions (`word_commit`,
/// `word_resolve` from `sched/park.rs`) with a loom note standing in for the futex or the
/// parked goroutine. The note is shared (`Arc`) so that the wake-up half holds no reference
/// to the node, as with the real `Wakeup`.
#[cfg(loom)]
mod model {
    use crate::loom::{AtomicU32, Ordering};
    use crate::sched::note::Note;
    use crate::sched::park::{NOTIFIED, WAITING, word_commit, word_resolve};
    use loom::sync::Arc;

    pub(crate) struct Waiter {
        state: AtomicU32,
        note: Arc<Note>,
    }

    pub(crate) struct Wakeup {
        parked: bool,
        note: Arc<Note>,
    }

    impl Wakeup {
        pub(crate) fn wake(self) {
            if self.parked {
                self.note.wake();
            }
        }
    }

    impl Waiter {
        pub(crate) fn new() -> Waiter {
            Waiter {
                state: AtomicU32::new(WAITING),
                note: Arc::new(Note::new()),
            }
        }

        pub(crate) fn wait(&self) {
            if word_commit(&self.state) {
                self.note.sleep();
            }
            // Acquire: pairs with the notifier's AcqRel claim.
            assert_eq!(self.state.load(Ordering::Acquire), NOTIFIED);
        }

        /// # Safety
        /// `this` is live and not yet notified.
        pub(crate) unsafe fn claim(this: *const Waiter) -> Option<Wakeup> {
            // SAFETY: live per the contract.
            let w = unsafe { &*this };
            let note = w.note.clone();
            let parked = word_resolve(&w.state, NOTIFIED)?;
            Some(Wakeup { parked, note })
        }
    }
}
