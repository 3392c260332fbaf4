//! Goroutine stacks: mmap'd, guarded, demand-paged reservations, pooled for reuse.
//!
//! # Model
//!
//! A goroutine runs on a stack of its own. Rust has no stack maps, so a stack can never be
//! moved or copied the way Go grows its stacks: a pointer into a frame, anywhere, would
//! dangle. "Growable" therefore means *reserved, then committed on demand*: each stack is a
//! range of virtual address space (256 KiB by default, [`DEFAULT_STACK_SIZE`]) mapped
//! `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE`, and the kernel backs a page with memory only
//! when the goroutine first touches it. A goroutine that parks with a shallow call chain has
//! touched only its top page, so it costs one 4 KiB page of RSS however big its reservation.
//! `MAP_NORESERVE` keeps the reservation out of the overcommit accounting, so 100,000
//! goroutines reserve 26 GB of address space without asking the kernel for 26 GB of memory.
//!
//! Below every stack sits a guard page. Running into it raises SIGSEGV, which
//! [`signal`]'s handler turns into `gort: fatal: goroutine N overflowed its stack (size S)`
//! and an abort, instead of letting the goroutine scribble over whatever lies below.
//! Rust emits stack probes for frames larger than a page, so even a big frame touches the
//! guard before anything beyond it.
//!
//! # Layout: slabs
//!
//! Stacks of one size are carved out of *slabs*: one mapping holding up to
//! [`slab::MAX_SLOTS`] slots, each a guard page followed by the usable stack:
//!
//! ```text
//!   low addresses                                                      high addresses
//!   base                                                                    base + len
//!   | guard | stack 0 ........ | guard | stack 1 ........ | ... | guard | stack n-1 ... |
//!           ^bottom      top^          ^bottom      top^
//!   '------- stride -----------'
//! ```
//!
//! A stack grows down from `top` (exclusive, page aligned) towards `bottom`; `guard()` is the
//! page just below `bottom`. The guard is installed in one of two ways ([`GuardMode`]):
//!
//! - `MADV_GUARD_INSTALL` (Linux 6.13+, preferred): the guard is a marker in the page table
//!   and the slab stays **one** VMA however many guards it holds.
//!   The choice is probed once per process on a scratch mapping, and the probe checks that
//!   the guard really refuses access (a `write(2)` from it fails with EFAULT): qemu-user
//!   accepts unknown advice as a no-op, which would leave stacks unguarded.
//! - `mprotect(PROT_NONE)` (older kernels, or `GORT_STACK_GUARD=mprotect`): each guard splits
//!   the mapping, so every slab holds a single stack and costs two VMAs. The kernel's
//!   `vm.max_map_count` (65530 by default) then caps live goroutines near 32k; hitting it
//!   yields an error that says so and how to raise it.
//!
//! Every stack region is also advised `MADV_NOHUGEPAGE` (and mapped `MAP_STACK`, which
//! implies it since Linux 6.7): with transparent huge pages a slab's 2 MiB-aligned ranges
//! would otherwise be backed by a whole huge page on the first touch, 512 times the page the
//! goroutine needed.
//!
//! # The pool and its invariants
//!
//! One global [`Pool`] behind a mutex owns all slabs. This is deliberately not a fast path:
//! the scheduler keeps dead Gs *with* their stacks on per-P and global free lists (Go's
//! `gfput`/`gfget`), so [`Stack::alloc`] and `Stack`'s drop run only when those lists
//! overflow or run dry. Under the lock:
//!
//! 1. Every slot of every slab is either *in use* (its bit is set in the slab's `used` mask
//!    and exactly one live [`Stack`] has its `top`) or *free* (its `top` is on the free list of
//!    its size class), never both. Hence `mapped == in_use + free`.
//! 2. All slots of a slab have the same usable size; a size class is an exact page-rounded
//!    size, so stacks of different sizes never share a slab.
//! 3. A free stack has had [`Stack::release_memory`] applied: only its top page may still be
//!    resident. Freed stacks are reused last-in first-out, so the warmest top page is reused
//!    first.
//! 4. [`trim`] unmaps exactly the slabs none of whose slots is in use, and removes their slots
//!    from the free lists in the same critical section.
//!
//! Mapping a new slab happens outside the lock (the `mmap`/`madvise` calls can take a while
//! and the error path reads `/proc`); the slab is then inserted, its first slot handed out and
//! the others pushed on the free list.
//!
//! # Errors
//!
//! An OS failure is an [`io::Error`] whose message names the stack size asked for. `ENOMEM`
//! says what ran out: `vm.max_map_count` in mprotect mode (with the `sysctl` that raises it),
//! otherwise the address-space limit (`RLIMIT_AS`) or overcommit policy. A slab that cannot be
//! mapped whole is retried as a single-stack slab before giving up, so a tight `RLIMIT_AS`
//! still yields every stack that fits. A broken pool invariant (a stack freed twice, a
//! `madvise` refused on our own mapping) is fatal.
//!
//! # Rejected designs
//!
//! - *Copying or segmented stacks* (Go's): impossible without stack maps, see above.
//! - *One mapping per stack with an `mprotect` guard, always*: two VMAs per goroutine, so the
//!   default `vm.max_map_count` caps a process at ~32k goroutines and every `mmap` walks a
//!   bigger VMA tree. Kept only as the fallback.
//! - *No guard page*: an overflow would silently corrupt the neighbouring stack.
//! - *`MAP_GROWSDOWN`*: the kernel enforces a `stack_guard_gap` (256 pages) below such
//!   mappings and the flag is effectively deprecated; it buys nothing over demand paging.
//! - *Stacks from the Rust allocator*: no guard, huge-page backed, and freed memory is not
//!   returned to the kernel.
//! - *Per-P stack caches here*: the scheduler already caches whole dead Gs per P; a second
//!   cache layer would only hide memory.

mod signal;
mod slab;
#[cfg(test)]
mod tests;

pub(crate) use signal::{AltStack, install_overflow_handler};

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::Range;
use std::ptr::NonNull;

use crate::loom::{AtomicUsize, Mutex, MutexGuard, Ordering};
use slab::Slab;

/// The usable size of a goroutine stack unless configured otherwise (`stack_size`,
/// `GORT_STACK_KB`).
pub(crate) const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The system page size, cached after the first call.
///
/// Async-signal-safe once [`install_overflow_handler`] has run (it primes the cache; before
/// that the first call asks `sysconf`, which on Linux only reads the auxiliary vector).
pub(crate) fn page_size() -> usize {
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    // Relaxed: the value is only ever 0 or the page size, which every thread computes
    // identically; no other memory is published through it, so a racing store is harmless.
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = match usize::try_from(size) {
        Ok(size) if size.is_power_of_two() => size,
        _ => signal::fatal(format_args!("sysconf(_SC_PAGESIZE) returned {size}")),
    };
    // Relaxed: see the load above.
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// How guard pages are made. Chosen once per process, see [`guard_mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GuardMode {
    /// `madvise(MADV_GUARD_INSTALL)` (Linux 6.13+): guards cost no VMA; slabs of many stacks.
    MadviseGuard,
    /// `mprotect(PROT_NONE)`: one mapping (two VMAs) per stack; bounded by `vm.max_map_count`.
    Mprotect,
}

/// The guard mode stacks are allocated with: `MadviseGuard` if the kernel accepts
/// `MADV_GUARD_INSTALL`, else `Mprotect`; `GORT_STACK_GUARD=mprotect` forces the fallback and
/// `GORT_STACK_GUARD=madvise` insists on the advice. The variable is read once, on first use.
///
/// If the variable is malformed (or insists on an advice the kernel refuses) no stack can be
/// allocated and [`Stack::alloc`] says why; this then answers `Mprotect`, the conservative
/// value.
pub(crate) fn guard_mode() -> GuardMode {
    slab::mode().unwrap_or(GuardMode::Mprotect)
}

/// Allocator counters, for `gort::stats()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StackStats {
    /// Stacks mapped: in use plus free.
    pub(crate) mapped: usize,
    /// Stacks owned by a live [`Stack`].
    pub(crate) in_use: usize,
    /// Stacks on the free lists, ready for reuse.
    pub(crate) free: usize,
    /// Address space reserved for stacks, guard pages included.
    pub(crate) reserved_bytes: usize,
}

/// A snapshot of the allocator's counters.
pub(crate) fn stats() -> StackStats {
    let pool = Pool::lock();
    StackStats {
        mapped: pool.mapped,
        in_use: pool.in_use,
        free: pool.mapped - pool.in_use,
        reserved_bytes: pool.reserved_bytes,
    }
}

/// Unmaps every slab none of whose stacks is in use (called by `Runtime::shutdown` after all
/// its stacks were dropped). Stacks in use, and the slabs holding them, are untouched.
pub(crate) fn trim() {
    let empty = Pool::lock().take_empty_slabs();
    for slab in empty {
        // SAFETY: `take_empty_slabs` removed the slab from the pool, no slot of it is in use
        // and none is on a free list any more, so nothing refers to its memory.
        unsafe { slab.unmap() };
    }
}

/// An owned goroutine stack. Dropping it returns all its memory to the kernel
/// (`MADV_DONTNEED`) and the stack to the allocator's free pool.
///
/// The stack's memory is not accessible through this type: the scheduler hands
/// [`top`](Stack::top) to the context-switch code, which runs a goroutine on it.
pub(crate) struct Stack {
    /// One past the highest usable byte; page aligned.
    top: NonNull<u8>,
    /// Usable bytes, a multiple of the page size, at least one page.
    size: usize,
}

// SAFETY: a `Stack` is a unique claim on a slot of a slab that lives in the global pool; it
// holds no thread-affine state, and dropping it on any thread only takes the pool's mutex.
unsafe impl Send for Stack {}
// SAFETY: every `&self` method reads the two immutable fields or calls `madvise` on the
// stack's own range, which the kernel serialises.
unsafe impl Sync for Stack {}

impl Stack {
    /// Allocates a stack of at least `size` usable bytes (rounded up to whole pages), reusing a
    /// free one of the same size if there is one.
    ///
    /// Errors: `InvalidInput` if `size` is under one page or absurdly large, or if
    /// `GORT_STACK_GUARD` is malformed; the OS error (message naming the size, and for
    /// `ENOMEM` what ran out) if no memory could be mapped.
    pub(crate) fn alloc(size: usize) -> io::Result<Stack> {
        let size = round_size(size)?;
        let mode = slab::mode()?;
        if let Some(top) = Pool::lock().take_free(size) {
            return Ok(Stack::from_top(top, size));
        }
        let slab = Slab::map(size, mode)?;
        let top = Pool::lock().insert_slab(slab);
        Ok(Stack::from_top(top, size))
    }

    fn from_top(top: usize, size: usize) -> Stack {
        match NonNull::new(top as *mut u8) {
            Some(top) => Stack { top, size },
            None => signal::fatal(format_args!("stack pool handed out a null stack top")),
        }
    }

    /// The highest address of the stack, exclusive, page aligned: the initial stack pointer.
    ///
    /// Async-signal-safe.
    pub(crate) fn top(&self) -> *mut u8 {
        self.top.as_ptr()
    }

    /// The lowest usable address, just above the guard page.
    ///
    /// Async-signal-safe.
    pub(crate) fn bottom(&self) -> usize {
        self.top.as_ptr() as usize - self.size
    }

    /// Usable bytes (the requested size rounded up to pages).
    ///
    /// Async-signal-safe.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The guard page below the stack: any access to it faults.
    ///
    /// Async-signal-safe.
    pub(crate) fn guard(&self) -> Range<usize> {
        let bottom = self.bottom();
        bottom - slab::guard_len()..bottom
    }

    /// Gives the memory below the top page back to the kernel (`MADV_DONTNEED`): it reads as
    /// zeroes afterwards and is committed again on demand. The top page stays resident, as a
    /// goroutine reusing the stack touches it first anyway.
    ///
    /// Only call this on a stack no goroutine is running on.
    pub(crate) fn release_memory(&self) {
        self.dontneed(self.size - page_size());
    }

    /// `MADV_DONTNEED` on the lowest `len` bytes of the stack.
    fn dontneed(&self, len: usize) {
        if len == 0 {
            return;
        }
        let bottom = self.bottom();
        // SAFETY: [bottom, bottom + len) lies inside the mapping this stack owns; nothing
        // holds a Rust reference into it (the caller guarantees no goroutine runs on it), so
        // zeroing it behind the compiler's back is fine.
        let ret = unsafe { libc::madvise(bottom as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if ret != 0 {
            // EINTR policy: MADV_DONTNEED never returns EINTR. Any failure means our own
            // mapping is not what the pool believes.
            signal::fatal(format_args!(
                "madvise(MADV_DONTNEED) on the stack {bottom:#x}..{:#x} failed: {}",
                self.top.as_ptr() as usize,
                io::Error::last_os_error()
            ));
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // All of it, top page included: a stack back in the pool is cold (the scheduler keeps
        // its warm stacks on its G free lists), and this is how memory shrinks back after a
        // burst of goroutines.
        self.dontneed(self.size);
        Pool::lock().put_free(self.top.as_ptr() as usize, self.size);
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Stack({:#x}..{:#x}, {})",
            self.bottom(),
            self.top.as_ptr() as usize,
            HumanSize(self.size)
        )
    }
}

/// Rounds a requested stack size up to whole pages; refuses sizes under one page.
fn round_size(size: usize) -> io::Result<usize> {
    let page = page_size();
    if size < page {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("goroutine stack size {size} bytes is smaller than one page ({page} bytes)"),
        ));
    }
    size.checked_next_multiple_of(page)
        .filter(|&rounded| rounded <= isize::MAX as usize / 2)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("goroutine stack size {size} bytes is too large"),
            )
        })
}

/// Formats a byte count the way people read it: `256 KiB`, `8 MiB`, `1 GiB`, else `N bytes`.
///
/// Async-signal-safe (core formatting of integers only).
#[derive(Clone, Copy)]
pub(crate) struct HumanSize(pub(crate) usize);

impl fmt::Display for HumanSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(usize, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        let bytes = self.0;
        for (unit, name) in UNITS {
            if bytes >= unit && bytes % unit == 0 {
                return write!(f, "{} {name}", bytes / unit);
            }
        }
        write!(f, "{bytes} bytes")
    }
}

/// The free stacks of one size.
struct Class {
    /// Usable bytes of every stack in this class.
    size: usize,
    /// Tops of the free stacks; the last pushed is reused first.
    free: Vec<usize>,
}

/// All slabs and free lists. Only reached through [`Pool::lock`].
struct Pool {
    /// Every mapped slab, by base address (so a stack's slab is found from its top).
    slabs: BTreeMap<usize, Slab>,
    /// One entry per size with free stacks; a handful at most, so a linear scan.
    classes: Vec<Class>,
    /// Slots in all slabs.
    mapped: usize,
    /// Slots owned by a live `Stack`.
    in_use: usize,
    /// Bytes of all slab mappings.
    reserved_bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    slabs: BTreeMap::new(),
    classes: Vec::new(),
    mapped: 0,
    in_use: 0,
    reserved_bytes: 0,
});

impl Pool {
    /// Locks the pool. The lock is a leaf: nothing else is locked while it is held.
    fn lock() -> MutexGuard<'static, Pool> {
        // A panic cannot happen while the pool is half-updated (only allocation failure,
        // which aborts), so a poisoned lock still guards consistent state.
        POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Pops a free stack of exactly `size` bytes and marks it in use; returns its top.
    fn take_free(&mut self, size: usize) -> Option<usize> {
        let class = self.classes.iter_mut().find(|class| class.size == size)?;
        let top = class.free.pop()?;
        self.slab_of(top).mark_used(top);
        self.in_use += 1;
        Some(top)
    }

    /// Adds a freshly mapped slab, hands out its first slot and frees the others; returns the
    /// top of the slot handed out.
    fn insert_slab(&mut self, mut slab: Slab) -> usize {
        let size = slab.stack_size();
        let first = slab.top_of(0);
        slab.mark_used(first);
        self.mapped += slab.slots();
        self.in_use += 1;
        self.reserved_bytes += slab.len();
        let class = self.class_mut(size);
        // Pushed high to low, so later pops hand out ascending slots.
        class
            .free
            .extend((1..slab.slots()).rev().map(|slot| slab.top_of(slot)));
        self.slabs.insert(slab.base(), slab);
        first
    }

    /// Returns the stack with this top to its free list.
    fn put_free(&mut self, top: usize, size: usize) {
        self.slab_of(top).mark_free(top);
        self.in_use -= 1;
        self.class_mut(size).free.push(top);
    }

    /// Removes the slabs none of whose slots is in use, and their slots from the free lists.
    fn take_empty_slabs(&mut self) -> Vec<Slab> {
        let empty: Vec<usize> = self
            .slabs
            .iter()
            .filter(|(_, slab)| slab.is_unused())
            .map(|(&base, _)| base)
            .collect();
        if empty.is_empty() {
            return Vec::new();
        }
        let removed: Vec<Slab> = empty
            .iter()
            .filter_map(|base| self.slabs.remove(base))
            .collect();
        // `removed` is sorted by base (BTreeMap order): find a top's candidate slab by binary
        // search.
        let in_removed = |top: usize| {
            let index = removed.partition_point(|slab| slab.base() < top);
            index > 0 && removed[index - 1].contains_top(top)
        };
        for class in &mut self.classes {
            class.free.retain(|&top| !in_removed(top));
        }
        self.classes.retain(|class| !class.free.is_empty());
        for slab in &removed {
            self.mapped -= slab.slots();
            self.reserved_bytes -= slab.len();
        }
        removed
    }

    fn class_mut(&mut self, size: usize) -> &mut Class {
        let index = match self.classes.iter().position(|class| class.size == size) {
            Some(index) => index,
            None => {
                self.classes.push(Class {
                    size,
                    free: Vec::new(),
                });
                self.classes.len() - 1
            }
        };
        &mut self.classes[index]
    }

    /// The slab holding the stack whose top is `top`; fatal if there is none.
    fn slab_of(&mut self, top: usize) -> &mut Slab {
        match self.slabs.range_mut(..top).next_back() {
            Some((_, slab)) if slab.contains_top(top) => slab,
            _ => signal::fatal(format_args!("no stack slab holds the stack top {top:#x}")),
        }
    }
}
