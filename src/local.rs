//! Goroutine-local storage: [`local!`](crate::local!) statics, the safe stand-in for
//! `thread_local!` in code that runs on goroutines.
//!
//! # Why not `thread_local!`
//! A goroutine may resume on a different OS thread after any scheduling point (a yield, a
//! lock, a channel operation), and many goroutines take turns on one thread. A
//! `thread_local!` value is therefore shared by unrelated goroutines, and a reference into
//! one obtained before a scheduling point may be used afterwards from another thread while
//! the goroutine now running on the first thread uses the same value: a data race on a type
//! that was never meant to be shared. A `local!` value belongs to the goroutine and travels
//! with it.
//!
//! # Model
//! ```text
//! gort::local! { static COUNTER: Cell<u32> = Cell::new(0); }
//! COUNTER.with(|c| c.set(c.get() + 1));
//! ```
//! Each `local!` static is a [`LocalKey`]. On first use anywhere, the key draws a process-wide
//! index (one atomic counter; a key keeps its index forever). Each goroutine's G holds a
//! `Locals`: a vector of slots indexed by key index, empty (no allocation) until the
//! goroutine first uses some key. `with` looks the slot up, initialises it on first use
//! (lazily, per goroutine) and hands the closure a reference to the value, which lives in its
//! own heap box: it does not move when the vector grows, and it follows the goroutine from M
//! to M. On a thread that is not running a goroutine (`main`, a plain thread, an M's own
//! scheduler stack), `with` uses a `thread_local!` generated next to the key instead.
//!
//! # Slot states (each slot is touched by its goroutine only)
//! | state          | meaning                                   | `with` does               |
//! |----------------|-------------------------------------------|---------------------------|
//! | `Empty`        | never used by this goroutine              | initialise, then use      |
//! | `Initializing` | its initialiser is running                | panic (recursive init)    |
//! | `Live`         | holds the value                           | use it                    |
//! | `Destroyed`    | dropped while the goroutine exits         | panic (as std after TLS destruction) |
//!
//! # Exit
//! When the goroutine's function has returned (or panicked), still on the goroutine and
//! before its result is published to `join`, its values are dropped: repeatedly, the first
//! `Live` slot becomes `Destroyed` and its value is dropped, until none is live (a destructor
//! may use other keys, even initialise new ones; each key is destroyed at most once, so this
//! ends). Then the vector is freed, so a G reused for a new goroutine starts with no values.
//! A destructor that panics is fatal (as a panicking `thread_local!` destructor aborts).
//! `join` returning therefore means the goroutine's locals are gone. Goroutines abandoned by
//! a runtime shutdown never run again: their values are leaked, like the rest of their stack.
//!
//! # Rejected designs
//! * A map keyed by `TypeId`: two statics of the same type must be distinct, and hashing costs
//!   more than an index.
//! * A global table keyed by goroutine id: a lock on every access, and cleanup at exit has to
//!   find the goroutine's entries.
//! * Swapping thread-locals in and out at every context switch: costs every switch, used or
//!   not.

use crate::sched::m::current_g;
use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Declare goroutine-local statics: `gort::local! { static NAME: Type = init; ... }`.
///
/// Each goroutine sees its own value of each static, created by `init` the first time the
/// goroutine uses it ([`LocalKey::with`]) and dropped when the goroutine exits. A plain
/// thread (one not running a goroutine) gets a thread-local value instead, as with
/// `thread_local!`.
///
/// ```
/// use std::cell::Cell;
/// gort::local! {
///     static HITS: Cell<u32> = Cell::new(0);
/// }
/// let (a, b) = gort::run(|| {
///     let other = gort::go(|| {
///         HITS.with(|h| h.set(h.get() + 10));
///         HITS.with(|h| h.get())
///     });
///     HITS.with(|h| h.set(h.get() + 1));
///     gort::yield_now();
///     (HITS.with(|h| h.get()), other.join().unwrap())
/// });
/// assert_eq!((a, b), (1, 10));
/// ```
#[macro_export]
macro_rules! local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr; $($rest:tt)*) => {
        $crate::local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr) => {
        $(#[$attr])*
        $vis static $name: $crate::local::LocalKey<$t> = {
            fn __gort_local_init() -> $t {
                $init
            }
            ::std::thread_local! {
                static __GORT_LOCAL_THREAD: $t = __gort_local_init();
            }
            $crate::local::LocalKey::new(__gort_local_init, &__GORT_LOCAL_THREAD)
        };
    };
}

/// A goroutine-local static, declared with [`local!`](crate::local!).
pub struct LocalKey<T: 'static> {
    init: fn() -> T,
    /// The fallback for threads that are not running a goroutine.
    thread: &'static std::thread::LocalKey<T>,
    /// 1 + this key's index in every goroutine's slot vector; 0 until first use.
    index: AtomicUsize,
}

/// Key indices drawn so far (the next index).
static NEXT_INDEX: AtomicUsize = AtomicUsize::new(0);

impl<T: 'static> LocalKey<T> {
    #[doc(hidden)]
    /// Used by [`local!`](crate::local!); not a stable API.
    pub const fn new(init: fn() -> T, thread: &'static std::thread::LocalKey<T>) -> LocalKey<T> {
        LocalKey {
            init,
            thread,
            index: AtomicUsize::new(0),
        }
    }

    /// This key's slot index, drawn on first use.
    #[inline]
    fn index(&self) -> usize {
        // Relaxed: the index is a plain number that publishes no other data; every reader
        // that sees a non-zero value sees the one value that won the CAS below.
        let i = self.index.load(Ordering::Relaxed);
        if i != 0 {
            return i - 1;
        }
        self.draw_index()
    }

    #[cold]
    fn draw_index(&self) -> usize {
        // Relaxed: a unique number is all we need (racing keys waste an index, harmlessly).
        let mine = NEXT_INDEX.fetch_add(1, Ordering::Relaxed) + 1;
        // Relaxed: as in `index`; the CAS decides which drawn index the key keeps.
        match self
            .index
            .compare_exchange(0, mine, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => mine - 1,
            Err(won) => won - 1,
        }
    }

    /// Run `f` with a reference to the calling goroutine's value, creating it first if this
    /// goroutine has not used it yet. On a thread that is not running a goroutine, the
    /// thread's value is used (as `thread_local!`'s `with`).
    ///
    /// `f` may yield, park or lock: the reference stays valid and private to this goroutine
    /// wherever it resumes.
    ///
    /// # Panics
    /// If called from the value's own initialiser, or from a destructor of the goroutine's
    /// local values after this value was dropped; and, on a plain thread, as
    /// `std::thread::LocalKey::with`.
    pub fn with<F, R>(&'static self, f: F) -> R
    where
        F: FnOnce(&T) -> R,
    {
        let g = current_g();
        if g.is_null() {
            return self.thread.with(f);
        }
        // SAFETY: `g` is the goroutine running this code; only it touches its own locals
        // (the G's owner, see g.rs), and the value's box lives until the goroutine's exit,
        // which cannot happen during `f`.
        let value = unsafe { (*g).locals.get_or_init(self.index(), self.init) };
        // SAFETY: as above: the box is neither dropped nor moved while `f` runs.
        f(unsafe { &*value })
    }
}

impl<T: 'static> fmt::Debug for LocalKey<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKey").finish_non_exhaustive()
    }
}

enum Slot {
    Empty,
    Initializing,
    Live(Box<dyn Any>),
    Destroyed,
}

/// One goroutine's local values (a field of its G). Touched only by the goroutine itself
/// while it runs; empty whenever the G is not running a goroutine.
pub(crate) struct Locals {
    slots: UnsafeCell<Vec<Slot>>,
}

impl Locals {
    pub(crate) const fn new() -> Locals {
        Locals {
            slots: UnsafeCell::new(Vec::new()),
        }
    }

    /// The value in slot `idx`, initialised with `init` if empty.
    ///
    /// # Safety
    /// Called by the goroutine that owns these locals, while it runs; `idx` belongs to a
    /// key whose values are of type `T`.
    unsafe fn get_or_init<T: 'static>(&self, idx: usize, init: fn() -> T) -> *const T {
        {
            // SAFETY: only the running goroutine touches its slots, and no reference into the
            // vector outlives this block (user code runs outside it).
            let slots = unsafe { &mut *self.slots.get() };
            if idx >= slots.len() {
                slots.resize_with(idx + 1, || Slot::Empty);
            }
            match &slots[idx] {
                Slot::Live(b) => {
                    debug_assert!(b.is::<T>());
                    // Each key has its own index, and all its values have the key's type.
                    return &**b as *const dyn Any as *const T;
                }
                Slot::Initializing => {
                    panic!("gort::local!: a value was used by its own initialiser")
                }
                Slot::Destroyed => {
                    panic!("gort::local!: a value was used after it was dropped at goroutine exit")
                }
                Slot::Empty => slots[idx] = Slot::Initializing,
            }
        }
        /// Puts the slot back to `Empty` if the initialiser panics.
        struct Unwind<'a>(&'a Locals, usize);
        impl Drop for Unwind<'_> {
            fn drop(&mut self) {
                // SAFETY: as above (still the owning goroutine, unwinding).
                let slots = unsafe { &mut *self.0.slots.get() };
                slots[self.1] = Slot::Empty;
            }
        }
        let unwind = Unwind(self, idx);
        // The initialiser may use other keys (the vector may grow): no borrow is held.
        let value = Box::new(init());
        std::mem::forget(unwind);
        let ptr: *const T = &*value;
        // SAFETY: as above.
        let slots = unsafe { &mut *self.slots.get() };
        slots[idx] = Slot::Live(value);
        ptr
    }

    /// Drop every value (see "Exit" in the module docs) and free the vector.
    ///
    /// # Safety
    /// Called by the owning goroutine, after its function returned.
    unsafe fn destroy(&self) {
        loop {
            let next = {
                // SAFETY: the owning goroutine; no reference outlives the block.
                let slots = unsafe { &mut *self.slots.get() };
                slots.iter_mut().find_map(|s| match s {
                    Slot::Live(_) => match std::mem::replace(s, Slot::Destroyed) {
                        Slot::Live(b) => Some(b),
                        _ => None,
                    },
                    _ => None,
                })
            };
            match next {
                // User code: may use (and create) other keys' values.
                Some(b) => drop(b),
                None => break,
            }
        }
        // SAFETY: as above. Only Empty/Destroyed slots are left: freeing runs no user code.
        drop(std::mem::take(unsafe { &mut *self.slots.get() }));
    }

    fn is_empty(&self) -> bool {
        // SAFETY: the owning goroutine (the only caller, `exit`) reads its own vector.
        unsafe { (*self.slots.get()).is_empty() }
    }
}

/// The calling goroutine is exiting (its function returned or panicked): drop its local
/// values. Called by the goroutine itself (`TaskCell::run`), before its result is published.
/// Costs one load for a goroutine that never used a `local!`.
pub(crate) fn goroutine_exit() {
    let g = current_g();
    if g.is_null() {
        return;
    }
    // SAFETY: the running goroutine's own G; the locals are its own.
    let locals = unsafe { &(*g).locals };
    if locals.is_empty() {
        return;
    }
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the owning goroutine, after its function returned.
        unsafe { locals.destroy() }
    }));
    if r.is_err() {
        crate::sched::fatal_fmt(format_args!(
            "goroutine {}: a gort::local! value panicked in its destructor",
            crate::current_id()
        ));
    }
}
