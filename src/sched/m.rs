//! M: an OS thread (a raw pthread) that runs goroutines while it holds a P.
//!
//! Each M runs its scheduler loop on its own pthread stack, which plays Go's g0: goroutines
//! switch to it (`mcall`) to yield, park or exit, and it picks the next G. The M's fields are
//! touched only by its own thread, except `nextp`/`wake_spinning` (written by the M that wakes
//! it, before `park.wake()`'s release), and the atomics sysmon reads (`tid`, `rt_blocking`,
//! `foreign_since`).
//!
//! # States
//! running a G (`curg` set, holds a P) · in a syscall (`curg` set, no P, `oldp` set:
//! `syscall.rs`) · running a G without a P (sysmon took it while the M blocked in foreign code;
//! `p` still set but no longer ours, found out at the next runtime call) · in the scheduler on
//! g0 (holds a P, maybe spinning) · idle (on the idle-M list, asleep on `park`, no P) · locked
//! and waiting (its locked G is not running: asleep on `park`, on `Synced::mlocked`) · exited
//! (shutdown, or its locked goroutine exited).

use crate::arch::Context;
use crate::loom::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use crate::sched::Sched;
use crate::sched::g::G;
use crate::sched::note::Note;
use crate::sched::p::P;
use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::sync::Arc;

/// What a goroutine asked its M's g0 to do with it after switching away (Go's `mcall` fn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    None,
    /// Put the G at the tail of the local run queue and schedule.
    Yield,
    /// Spawn back-pressure: like `Yield`, but behind everything (the global queue), and not
    /// counted as a `yield_now`.
    Backoff,
    /// Mark the G Waiting, then call `park_fn(g, park_arg)`; if it returns false the G is
    /// resumed at once (Go's `gopark` unlock function).
    Park,
    /// The G finished: free it.
    Exit,
    /// The G lost its P (a syscall or foreign blocking call outlasted sysmon's patience) and
    /// found no idle one: it goes to the global queue (`syscall.rs`, exitsyscall's slow path).
    NoP,
    /// The G finished and lost its P on the way out (sysmon took it while the exit path
    /// slept in the kernel, e.g. in `free`): free it without a P; the M then has none and
    /// idles. Without this the dead-to-be G queued for a P like any other (`NoP`) and, if a
    /// shutdown came first, was abandoned with its stack.
    ExitNoP,
    /// The G parks, and its M lost its P while it ran (foreign blocking): g0 marks it Waiting
    /// and calls `park_fn` without a P, then the M idles. `park_fn` is what releases the lock
    /// of a channel the G parks on; waiting for a P first (`regain_p`, as any other runtime
    /// call) held that lock while the M that got the P blocked on it — a deadlock with one
    /// P (the chan suite under 100 µs quanta and two busy loops: 3 runs in 10 hung).
    ParkNoP,
}

pub(crate) type ParkFn = unsafe fn(*mut G, usize) -> bool;

pub(crate) struct M {
    pub(crate) id: u64,
    /// g0's saved context while a goroutine runs on this thread.
    pub(crate) g0: UnsafeCell<Context>,
    /// The goroutine running on this M, or null on g0.
    pub(crate) curg: Cell<*mut G>,
    /// The P held, or null.
    pub(crate) p: Cell<*mut P>,
    /// A P handed to this M by the thread that woke it (read after `park` is signalled).
    pub(crate) nextp: AtomicPtr<P>,
    /// Whether the M was woken to spin (handed over with `nextp`).
    pub(crate) wake_spinning: AtomicBool,
    /// Woken to watch a syscall (`idle::watch_syscall`): the `Syscall` word of `nextp` to
    /// retake from, 0 for an ordinary hand-over; and when it may be retaken (ns). Handed
    /// over with `nextp`.
    pub(crate) watch_word: AtomicU64,
    pub(crate) watch_due: AtomicU64,
    pub(crate) spinning: Cell<bool>,
    pub(crate) park: Note,
    pub(crate) action: Cell<Action>,
    /// A goroutine that just switched directly to `curg` (without passing through g0), and
    /// the action it asked for: carried out by `post_switch` on `curg`'s stack.
    pub(crate) prev: Cell<*mut G>,
    pub(crate) prev_action: Cell<Action>,
    pub(crate) park_fn: Cell<Option<ParkFn>>,
    pub(crate) park_arg: Cell<usize>,
    /// The runtime this M belongs to. The M's thread keeps it alive through `keepalive`.
    pub(crate) sched: SchedRef,
    /// The M thread's strong reference to its runtime, taken by `mstart` and dropped when the
    /// thread exits (an `Arc` inside the M itself would be a cycle: the runtime frees its Ms).
    pub(crate) keepalive: Cell<Option<Arc<Sched>>>,
    pub(crate) tid: AtomicI32,
    /// The word this M installed in its P's status (`p.rs`): "still mine?" is `p.word() ==
    /// pword`. Own thread only.
    pub(crate) pword: Cell<u64>,
    /// The P this M held when it entered `gort::syscall` (Go's `m.oldp`). Own thread only.
    pub(crate) oldp: Cell<*mut P>,
    /// The goroutine locked to this M (Go's `m.lockedg`), or null. Own thread, and the M that
    /// hands this one its P in `startlockedm` (after reading the G's `lockedm`).
    pub(crate) lockedg: Cell<*mut G>,
    /// `lock_os_thread` nesting (Go's `lockedExt`). Own thread only.
    pub(crate) locked_ext: Cell<u32>,
    /// Runtime-internal temporary locks (Go's `lockedInt`; preemption's ThreadHandoff). Own
    /// thread only.
    pub(crate) locked_int: Cell<u32>,
    /// The M's locked goroutine exited while locked: the thread exits instead of running
    /// anything else (Go's rule since 1.10). Own thread only.
    pub(crate) exit_thread: Cell<bool>,
    /// Nonzero while the M blocks inside the runtime itself holding a P (a contended scheduler
    /// lock, the steal back-off, mmap of a stack): sysmon must not mistake that for foreign
    /// blocking. Written by the own thread (Relaxed: read by sysmon only while this thread is
    /// asleep in the kernel, after the context switch, a full barrier).
    pub(crate) rt_blocking: AtomicU32,
    /// When (`time::nanotime`) this M was seen running outside the executable's code, or 0.
    /// Stamped by the preemption signal handler; sysmon retakes the P of an M that stayed
    /// foreign for a quantum (`sysmon.rs`).
    pub(crate) foreign_since: AtomicU64,
    /// When the handler last saw this M outside the executable's code (ns), or 0 once it
    /// saw it back inside. Compared by sysmon with `signal_sent_at`: only a stamp confirmed
    /// by the answer to the latest signal counts (a thread back in Rust code that nobody
    /// signalled since would otherwise keep a stale stamp).
    pub(crate) foreign_seen: AtomicU64,
    /// When the preemption requester last sent this M a SIGURG (ns).
    pub(crate) signal_sent_at: AtomicU64,
    /// The token of sysmon's latest probe of this M's P (`sysmon.rs`, `Probe`), written by
    /// sysmon before it marks the P `Retaking`; 0 before the first.
    pub(crate) probe_token: AtomicU64,
    /// The probe token the preemption handler read while it found the M in foreign code on
    /// behalf of its goroutine, with this M's P marked `Retaking` before and after the read:
    /// sysmon's proof, for a stamp-driven retake, that the M was outside the runtime *after*
    /// that probe's mark. A token, not the word seen: a status word names no P and recurs (a
    /// revert restores it; every P counts its epochs from 0), so an answer left from an
    /// earlier mark would answer a later probe in advance (`sysmon.rs`, `Probe`).
    pub(crate) foreign_ack: AtomicU64,
    /// The CPU (index into the allowed set) this thread is pinned to, -1 if none.
    pub(crate) pinned: Cell<i32>,
    /// Whether this M last applied relaxed pinning (`pinning::follow`).
    pub(crate) pin_relaxed: Cell<bool>,
    /// `pinned`, readable by other threads (`idle::watch_syscall` picks an idle M by it).
    pub(crate) pinned_shared: AtomicI32,
    /// xorshift state for victim selection.
    pub(crate) rand: Cell<u64>,
    /// A preemption signal is in flight to this thread (`preempt::request` sets it, the
    /// handler clears it: how the handler tells our SIGURGs from others').
    pub(crate) preempt_pending: AtomicBool,
    /// The cooperative half of a request (`preempt::cooperative_check`).
    pub(crate) preempt_coop: AtomicBool,
    /// When the quantum of the goroutine a request targets expired (ns), for the latency.
    pub(crate) preempt_expiry: AtomicU64,
    /// The slice a request is for: the P's `schedtick` when the monitor saw it expire, or
    /// `preempt::ANY_SLICE` (sysmon's probe). A request for a slice that has ended meanwhile
    /// is stale and refused (Go clears `gp.preempt` when it schedules a G, to the same end).
    /// Published like `preempt_expiry`.
    pub(crate) preempt_tick: AtomicU64,
}

// SAFETY: the `Cell`/`UnsafeCell` fields are touched only by the M's own thread (goroutines
// running on it included); cross-thread fields are atomics or the futex note.
unsafe impl Sync for M {}
// SAFETY: as above; an M is created on one thread and then used by its own thread.
unsafe impl Send for M {}

/// A borrowed pointer to an M's runtime, valid while the M's thread holds `keepalive` (and,
/// for goroutines, while they run on that M).
pub(crate) struct SchedRef(*const Sched);

impl std::ops::Deref for SchedRef {
    type Target = Sched;
    fn deref(&self) -> &Sched {
        // SAFETY: see the type's docs: the runtime outlives every use through an M.
        unsafe { &*self.0 }
    }
}

thread_local! {
    /// The M running on this thread, or null for a thread that is not an M. Const-initialised
    /// and without a destructor, so reading it is async-signal-safe.
    static CURRENT_M: Cell<*mut M> = const { Cell::new(ptr::null_mut()) };
}

/// The M of this thread, or null.
///
/// Never inlined: LLVM treats the thread pointer (`fs` base on x86_64, `tpidr_el0` on
/// aarch64) as a constant within a function and may keep a TLS address computed before a
/// call in a register after it — but a goroutine can come back from a switch on another
/// thread. Out of line, every call reads the current thread's value. (Seen: `current_id()`
/// inlined into a goroutine returned another goroutine's id after a `yield_now` moved it.)
///
/// The M is the *thread's*: on a goroutine, asynchronous preemption in `Migrate` mode can move
/// the caller to another thread at any instruction where it is preemptible, after which the
/// value is another thread's M. Goroutine code uses it only where it cannot be moved: inside
/// a runtime section (`preempt::Section`) or with its no-preempt count raised (`mcall`), or
/// for what every M of a runtime shares (`sched`).
#[inline(never)]
pub(crate) fn current_m() -> *mut M {
    CURRENT_M.with(|c| c.get())
}

pub(crate) fn set_current_m(m: *mut M) {
    CURRENT_M.with(|c| c.set(m));
}

/// The goroutine running on this thread, or null. Read so that no preemption can come between
/// finding this thread's M and reading its `curg` (`preempt::current_g`): otherwise the
/// goroutine could be moved to another thread, and the first M's `curg` would by then be
/// another goroutine (seen under qemu: a sleep's timer readied a worker that was running).
#[inline]
pub(crate) fn current_g() -> *mut G {
    crate::preempt::current_g()
}

/// Where this thread's `CURRENT_M` lives (for `preempt::init_fast_locks`).
pub(crate) fn current_m_slot() -> isize {
    CURRENT_M.with(|c| c as *const Cell<*mut M> as isize)
}

/// The offset of `curg` in an M (for the helpers in asm/<arch>/preempt.S).
pub(crate) const CURG_OFFSET: usize = std::mem::offset_of!(M, curg);

/// [`current_g`] for code that cannot be moved to another thread meanwhile: g0, a signal
/// handler, an open runtime section, a raised no-preempt count.
#[inline]
pub(crate) fn current_g_pinned() -> *mut G {
    let m = current_m();
    if m.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: a non-null CURRENT_M is this thread's own M, alive while the thread runs.
    unsafe { (*m).curg.get() }
}

impl M {
    /// Run `f` marked as runtime code that may block in the kernel while this M holds a P
    /// (`rt_blocking`; sysmon then leaves the P alone). Nests. Own thread only, and `f` must
    /// not switch goroutines (it would carry the mark to another). Callers off a known M use
    /// `syscall::runtime_blocking`.
    #[inline(always)]
    pub(crate) fn runtime_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        // Relaxed: own-thread counter, read by sysmon only while this thread sleeps in the
        // kernel.
        let n = self.rt_blocking.load(Ordering::Relaxed);
        self.rt_blocking.store(n + 1, Ordering::Relaxed);
        let r = f();
        self.rt_blocking.store(n, Ordering::Relaxed);
        r
    }

    pub(crate) fn new(id: u64, sched: Arc<Sched>) -> Box<M> {
        Box::new(M {
            id,
            g0: UnsafeCell::new(Context::new()),
            curg: Cell::new(ptr::null_mut()),
            p: Cell::new(ptr::null_mut()),
            nextp: AtomicPtr::new(ptr::null_mut()),
            watch_word: AtomicU64::new(0),
            watch_due: AtomicU64::new(0),
            wake_spinning: AtomicBool::new(false),
            spinning: Cell::new(false),
            park: Note::new(),
            action: Cell::new(Action::None),
            prev: Cell::new(ptr::null_mut()),
            prev_action: Cell::new(Action::None),
            park_fn: Cell::new(None),
            park_arg: Cell::new(0),
            sched: SchedRef(Arc::as_ptr(&sched)),
            keepalive: Cell::new(Some(sched)),
            tid: AtomicI32::new(0),
            pword: Cell::new(0),
            oldp: Cell::new(ptr::null_mut()),
            lockedg: Cell::new(ptr::null_mut()),
            locked_ext: Cell::new(0),
            locked_int: Cell::new(0),
            exit_thread: Cell::new(false),
            rt_blocking: AtomicU32::new(0),
            foreign_since: AtomicU64::new(0),
            foreign_seen: AtomicU64::new(0),
            signal_sent_at: AtomicU64::new(0),
            probe_token: AtomicU64::new(0),
            foreign_ack: AtomicU64::new(0),
            pinned: Cell::new(-1),
            pinned_shared: AtomicI32::new(-1),
            pin_relaxed: Cell::new(false),
            rand: Cell::new(0x9E37_79B9_7F4A_7C15 ^ (id.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1)),
            preempt_pending: AtomicBool::new(false),
            preempt_coop: AtomicBool::new(false),
            preempt_expiry: AtomicU64::new(0),
            preempt_tick: AtomicU64::new(u64::MAX),
        })
    }

    /// A pseudo-random number (xorshift64*), for victim selection. Own thread only.
    #[inline]
    pub(crate) fn fastrand(&self) -> u32 {
        let mut x = self.rand.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rand.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u32
    }

    /// Pin this thread to the `cpu`-th allowed CPU, unless already there. Own thread only.
    pub(crate) fn pin(&self, cpu: i32) {
        if cpu < 0 || self.pinned.get() == cpu {
            return;
        }
        let cpus = &self.sched.cpus;
        if cpus.is_empty() {
            return;
        }
        set_affinity(0, &[cpus[cpu as usize % cpus.len()]]);
        self.pinned.set(cpu);
        // Relaxed: a hint for `idle::watch_syscall`, read under the scheduler lock while this
        // M is idle (it pinned itself before going idle).
        self.pinned_shared.store(cpu, Ordering::Relaxed);
    }

    /// Pin this thread to `cpu`, the CPU of the P it has just taken, unless pinning is off or
    /// relaxed (`pinning.rs`: the M then follows the kernel's placement). Own thread only.
    pub(crate) fn pin_for_p(&self, cpu: i32) {
        if self.sched.pin && !self.pin_relaxed.get() {
            self.pin(cpu);
        }
    }

    /// Allow this thread on every CPU of the process again (`pinning::follow`). Own thread.
    pub(crate) fn unpin(&self) {
        set_affinity(0, &self.sched.cpus);
        self.pinned.set(-1);
        // Relaxed: as in `pin`.
        self.pinned_shared.store(-1, Ordering::Relaxed);
    }
}

/// Allow thread `tid` (0: the caller) on `cpus` (raw CPU numbers) only; empty: leave it. A
/// failure (EINVAL: a CPU went offline, a cgroup changed) costs only locality or latency.
pub(crate) fn set_affinity(tid: i32, cpus: &[usize]) {
    if cpus.is_empty() {
        return;
    }
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write into it; `tid` is a thread
    // of this process (the caller, or sysmon's, which lives as long as the runtime).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Start a new OS thread running `mstart(m)`.
pub(crate) fn spawn_thread(m: *mut M) -> std::io::Result<()> {
    // SAFETY: plain pthread calls on a zeroed attr we initialise; `m` is passed through to
    // `mstart`, which takes ownership of the raw Box.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let rc = libc::pthread_attr_init(&mut attr);
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        libc::pthread_attr_setstacksize(&mut attr, M_STACK_SIZE);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, mstart, m as *mut libc::c_void);
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
    }
    Ok(())
}

/// g0 stack size for Ms: the scheduler loop and signal handlers (which use the alternate
/// stack) need little, but user `Drop`s of task closures can run here at shutdown.
const M_STACK_SIZE: usize = 512 * 1024;

extern "C" fn mstart(arg: *mut libc::c_void) -> *mut libc::c_void {
    let m = arg as *mut M;
    set_current_m(m);
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    // SAFETY: `m` is this thread's M, alive until it is reclaimed at shutdown after we exit.
    let mr = unsafe { &*m };
    // Relaxed: diagnostics only.
    mr.tid.store(tid, Ordering::Relaxed);
    // Our own name: a new thread inherits its creator's, and Ms are created by whatever
    // thread needed one (sysmon, another M), which misleads profilers (`perf --comm`, top -H).
    // No allocation: a new M may be started exactly when memory mappings ran out.
    // Formatting into a slice allocates nothing; a name longer than 15 bytes is cut (the
    // write reports the truncation, which is fine), and byte 16 stays the terminating NUL.
    let mut name = [0u8; 16];
    let _ = std::io::Write::write_fmt(&mut &mut name[..15], format_args!("gort-m{}", mr.id));
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes from `name`.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong) };
    // An M that sleeps until the next timer must wake at it, not up to 50 µs later (the
    // default timer slack of a normal thread, which futex timeouts honour): the slack was
    // the median oversleep of every goroutine woken by an idle runtime.
    // SAFETY: prctl(PR_SET_TIMERSLACK) only sets this thread's slack; it cannot fail for
    // a positive value, and a failure would only leave the default slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    let alt = crate::stack::AltStack::install();
    if let Err(e) = &alt {
        crate::sched::fatal_fmt(format_args!("M{}: cannot install sigaltstack: {e}", mr.id));
    }
    let keepalive = mr.keepalive.take();
    crate::sched::schedule::mstart_loop(mr);
    drop(alt);
    set_current_m(ptr::null_mut());
    crate::sched::schedule::mexit(mr);
    // Last: may run the runtime's destructor, which frees this M.
    drop(keepalive);
    ptr::null_mut()
}
