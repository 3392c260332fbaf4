//! G: a goroutine — its saved context, stack, status and the links that queue it.
//!
//! # States and who owns what (Go's `runtime2.go` status table, for gort)
//!
//! | status     | on a queue?                    | who owns the struct and the stack          | `ctx` valid? |
//! |------------|--------------------------------|--------------------------------------------|--------------|
//! | `Idle`     | a G free list (per P / global) | the free list's owner (P owner / its lock) | no           |
//! | `Runnable` | a local ring, runnext or the global queue | the queue: whoever dequeues it next | yes          |
//! | `Running`  | no                             | the M in `m`; only that M's thread touches it | no (live registers) |
//! | `Waiting`  | no (a wait queue of some primitive may point at it) | nobody runs it; the party that readies it (CAS Waiting->Runnable) becomes its owner | yes |
//! | `Dead`     | a free list                    | as `Idle`                                  | no           |
//! | `Abandoned`| no (wait queues may still point at it) | nobody, ever: its runtime shut down before it finished; wake-ups are discarded | yes (never used) |
//!
//! Transitions: Idle->Runnable (spawn), Runnable->Running (execute, by the M that dequeued it),
//! Running->Runnable (yield, on g0 after the switch), Running->Waiting (park, on g0 after the
//! switch), Waiting->Runnable (ready: a CAS, so exactly one waker wins), Running->Dead (exit, on
//! g0), Runnable/Waiting->Abandoned (shutdown, after every M stopped). Every change of owner goes through a queue or a CAS with release/acquire, which is what
//! makes the plain (non-atomic) fields below safe to touch by the current owner only.

use crate::arch::Context;
use crate::loom::{AtomicU32, Ordering};
use crate::sched::task::Task;
use crate::stack::Stack;
use std::ptr;
use std::sync::Arc;

/// A goroutine's status (see the table above).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Idle = 0,
    Runnable = 1,
    Running = 2,
    Waiting = 3,
    Dead = 4,
    Abandoned = 5,
}

impl Status {
    fn from_u32(v: u32) -> Status {
        match v {
            0 => Status::Idle,
            1 => Status::Runnable,
            2 => Status::Running,
            3 => Status::Waiting,
            4 => Status::Dead,
            _ => Status::Abandoned,
        }
    }
}

/// The goroutine struct. Allocated once (`Box`), recycled through free lists, freed only when
/// its runtime shuts down (wait queues of user objects may hold pointers to parked Gs, so a G
/// that has not finished is never freed; see `runtime.rs` on shutdown).
#[repr(C)]
pub(crate) struct G {
    /// Saved registers while not running. First field: the switch path touches it most.
    pub(crate) ctx: Context,
    /// `Status` as u32. Written with release by the owner handing the G on; CAS for readying.
    pub(crate) status: AtomicU32,
    /// Goroutine id, unique in the process (never 0; 0 means "not a goroutine").
    pub(crate) id: u64,
    /// Intrusive link for the global run queue and the G free lists (owner of the list only).
    pub(crate) schedlink: *mut G,
    /// The goroutine's stack; `None` only transiently while a G is being built.
    pub(crate) stack: Option<Stack>,
    /// The work to run: taken by `goroutine_entry`.
    pub(crate) task: Option<Arc<dyn Task>>,
    /// The same task, unowned, so shutdown can abandon a G whose `Arc` lives on its stack.
    /// Valid while the G is not Idle/Dead (the Arc in `task` or on the stack keeps it alive).
    pub(crate) task_ptr: *const dyn Task,
    /// The runtime the G belongs to.
    pub(crate) sched: *const crate::sched::Sched,
    /// Optional name from `Builder::name`.
    pub(crate) name: Option<Box<str>>,
    /// Goroutine-local values (`gort::local!`): touched only by the running goroutine; no
    /// allocation until it uses one; emptied by the goroutine itself as it exits
    /// (`local::goroutine_exit`), so a reused G starts fresh.
    pub(crate) locals: crate::local::Locals,
    /// No-preempt count (`preempt/mod.rs`): written only by the goroutine's own execution
    /// (and by whoever owns a G that is not running), read by the preemption handler on the
    /// thread running it. Non-zero whenever the G is not running user code.
    pub(crate) nopreempt: AtomicU32,
    /// The M this goroutine is locked to (`lock_os_thread`, or a temporary runtime lock), or
    /// null (Go's `g.lockedm`). Written by the goroutine itself while it runs; read by the M
    /// that dequeues it (the queue's release/acquire orders it).
    pub(crate) lockedm: *mut crate::sched::m::M,
    /// How the G last came onto the global queue, if a P's holder sent it to the back of the
    /// line there (preempted, or yielding with nothing local): see [`Requeue`]. Written by
    /// the G's owner before the push; read and cleared under the global queue's lock.
    pub(crate) requeue: Requeue,
}

/// A G sent to the back of the line by P `by - 1` (`by` 0: not so) at that P's `schedtick`
/// `tick`, when `ahead` Gs waited in the P's local queue — ahead of it in line. The 61st-tick
/// check (`schedule::find_runnable`) lets it wait until that many have had their turn, so that
/// the goroutines a P round-robins do not jump each other's turns (Go's rule does: with 4
/// spinners at 1 P, one of them ran 46 slices in 2 s and two 44, every run).
#[derive(Clone, Copy, Default)]
pub(crate) struct Requeue {
    pub(crate) by: u32,
    pub(crate) tick: u32,
    pub(crate) ahead: u32,
}

// SAFETY: a G moves between threads only through queues/CASes that hand ownership over with
// release/acquire (see the module table); its non-atomic fields are touched by the owner only.
unsafe impl Send for G {}

impl G {
    pub(crate) fn new(sched: *const crate::sched::Sched) -> Box<G> {
        Box::new(G {
            ctx: Context::new(),
            status: AtomicU32::new(Status::Idle as u32),
            id: 0,
            schedlink: ptr::null_mut(),
            stack: None,
            task: None,
            task_ptr: ptr::null::<crate::sched::task::NoTask>() as *const dyn Task,
            sched,
            name: None,
            locals: crate::local::Locals::new(),
            nopreempt: AtomicU32::new(1),
            lockedm: ptr::null_mut(),
            requeue: Requeue::default(),
        })
    }

    #[inline]
    pub(crate) fn status(&self) -> Status {
        // Acquire: pairs with the Release in `set_status`/`cas_status`, for readers that act
        // on the status (shutdown, diagnostics).
        Status::from_u32(self.status.load(Ordering::Acquire))
    }

    /// Owner only.
    #[inline]
    pub(crate) fn set_status(&self, s: Status) {
        // Release: whoever observes the new status with acquire sees the owner's prior writes
        // (the saved context in particular).
        self.status.store(s as u32, Ordering::Release);
    }

    /// Any thread. The CAS decides ownership (exactly one waker readies a Waiting G).
    #[must_use]
    #[inline]
    pub(crate) fn cas_status(&self, from: Status, to: Status) -> bool {
        // AcqRel: acquire the parker's writes (saved ctx, status Waiting), release ours to the
        // M that will dequeue the G.
        self.status
            .compare_exchange(from as u32, to as u32, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// An intrusive FIFO of Gs linked through `schedlink` (global run queue, free lists). Not
/// synchronised: its owner (a lock or a P) guards it.
pub(crate) struct GQueue {
    head: *mut G,
    tail: *mut G,
    len: usize,
}

// SAFETY: the queue only stores pointers; whoever owns the queue owns the Gs on it.
unsafe impl Send for GQueue {}

impl GQueue {
    pub(crate) const fn new() -> GQueue {
        GQueue {
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// # Safety
    /// `g` is valid, owned by the caller and on no other queue.
    pub(crate) unsafe fn push_back(&mut self, g: *mut G) {
        // SAFETY: the caller owns `g`; the tail (if any) is ours as the queue's owner.
        unsafe {
            (*g).schedlink = ptr::null_mut();
            if self.tail.is_null() {
                self.head = g;
            } else {
                (*self.tail).schedlink = g;
            }
        }
        self.tail = g;
        self.len += 1;
    }

    /// # Safety
    /// `g` is valid, owned by the caller and on no other queue.
    pub(crate) unsafe fn push_front(&mut self, g: *mut G) {
        // SAFETY: the caller owns `g`.
        unsafe { (*g).schedlink = self.head };
        if self.tail.is_null() {
            self.tail = g;
        }
        self.head = g;
        self.len += 1;
    }

    /// The first G, or null.
    pub(crate) fn front(&self) -> *mut G {
        self.head
    }

    pub(crate) fn pop_front(&mut self) -> Option<*mut G> {
        if self.head.is_null() {
            return None;
        }
        let g = self.head;
        // SAFETY: `g` is on this queue, which we own.
        self.head = unsafe { (*g).schedlink };
        if self.head.is_null() {
            self.tail = ptr::null_mut();
        }
        self.len -= 1;
        Some(g)
    }
}
