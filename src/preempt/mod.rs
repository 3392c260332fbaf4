//! Asynchronous preemption: a goroutine that runs longer than its quantum is stopped by a
//! signal at an async-safe point and yields, with every register restored when it resumes.
//!
//! # Model (Go's proposal 24543, for Rust)
//! * **Request.** The preemption monitor (`monitor`, the quantum half of Go's sysmon) watches
//!   each running P's `schedtick`: a tick that has not changed for a quantum (default 10 ms,
//!   `preempt_quantum`, `GORT_QUANTUM_US` down to 100 µs) means one goroutine has held the P
//!   that long. It sets the M's cooperative flag and sends `tgkill(pid, tid, SIGURG)`,
//!   coalesced per M ([`request`]); a refused request is retried at the next check.
//! * **Decision.** The handler (`signal.rs`) applies the async-safe-point policy
//!   (`policy.rs`) and counts refusals by reason.
//! * **Mechanism.** Accepted: the handler copies the kernel's signal frame onto the
//!   goroutine's stack and makes the thread return from the handler into the trampoline
//!   (`asm/<arch>/preempt.S`), which calls [`gort_preempt_yield`] and then resumes the
//!   interrupted code with `rt_sigreturn` from the copy: all registers, flags and vector
//!   state exactly as they were; errno is restored by the yield.
//! * **Resume modes** ([`crate::Preempt`]): `Migrate` (Go's: the goroutine goes to the
//!   global queue, any M resumes it); `Off` (no monitor, no signals; cooperative only);
//!   `ThreadHandoff` (DESIGN.md §6: the goroutine keeps its M, its P moves on; `handoff.rs`,
//!   on the locked-thread machinery of `sched/syscall.rs`).
//!
//! # Runtime sections (what must never be interrupted)
//! Two counts, both read by the handler on the interrupted thread itself:
//! * `LOCKS`, per thread (Go's `m.locks`): open while a runtime lock is held
//!   (`crate::loom::Mutex` guards, the channel lock) or the P's owner-only state is in use
//!   (`goready`, `spawn`). Such sections never span a goroutine switch, so a per-thread
//!   count is exact; one that ended on another thread would be a bug, and is fatal. The one
//!   exception, a goroutine whose P sysmon took while it was blocked in foreign code and that
//!   queues for one inside a runtime call (`syscall::regain_p`), carries its open sections
//!   to the thread it resumes on (`sections_carry_out`/`_in`).
//! * `G::nopreempt`, per goroutine: `gort::no_preempt` (may span switches: the count
//!   travels with the goroutine) and the scheduler's switch path (`mcall` raises it before
//!   it touches the M's state and lowers it after the goroutine is resumed; a goroutine that
//!   is not running therefore always has a non-zero count, so the handler, finding
//!   `curg` set while the thread is still in the switch, refuses). A fresh goroutine starts
//!   with 1 and drops it in `goroutine_entry`.
//!
//! Rejected: *pc ranges for runtime code* (policy.rs explains: inlined generics put runtime
//! code inside user functions); *timestamping every switch* for the quantum (a clock read
//! on the hot switch path; the monitor observes `schedtick` changes instead, as Go's
//! `sysmontick` does, so a slice's start is known to within one monitor period).
//!
//! # Latency figure
//! The monitor notes when it first saw a P's current `schedtick` (`since`), and requests
//! preemption once `now - since >= quantum`, stamping `since + quantum` (the expiry) on the
//! M. The yield records `now - expiry` in the histogram just before the goroutine leaves
//! the CPU. Because `since` is up to one monitor period later than the slice's true start,
//! the true latency may exceed the recorded one by up to that period (quantum/10, at most
//! 1 ms; see `monitor_period`).

pub(crate) mod handoff;
pub(crate) mod policy;
pub(crate) mod signal;

use crate::loom::{AtomicU64, Ordering};
use crate::runtime::Preempt;
use crate::sched::m::{Action, M, current_m};
use crate::sched::{Sched, fatal};
use policy::{REFUSAL_NAMES, REFUSALS};
use std::cell::Cell;
use std::sync::atomic::compiler_fence;
use std::time::Duration;

thread_local! {
    /// Open runtime sections on this thread (see the module docs). Const-initialised, no
    /// destructor: async-signal-safe to read.
    static LOCKS: Cell<u32> = const { Cell::new(0) };
}

/// Open runtime sections on this thread. Async-signal-safe.
#[inline]
pub(crate) fn locks() -> u32 {
    LOCKS.with(Cell::get)
}

/// A runtime section on this thread: no asynchronous preemption until dropped. Must be
/// dropped on the thread that created it (never held across a goroutine switch).
pub(crate) struct Section(());

impl Section {
    #[inline]
    pub(crate) fn enter() -> Section {
        locks_inc();
        Section(())
    }
}

impl Drop for Section {
    #[inline]
    fn drop(&mut self) {
        locks_dec();
    }
}

/// Take this thread's open runtime sections before a runtime call that may move the goroutine
/// to another thread with them still open (`syscall::regain_p`: a goroutine whose P was taken
/// queues for one); [`sections_carry_in`] on the thread it resumes on puts them back.
#[inline(never)]
pub(crate) fn sections_carry_out() -> u32 {
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
    LOCKS.with(|c| c.replace(0))
}

/// See [`sections_carry_out`].
#[inline(never)]
pub(crate) fn sections_carry_in(n: u32) {
    LOCKS.with(|c| c.set(c.get() + n));
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Open a runtime section without a guard object (the channel lock's explicit
/// `lock`/`unlock`); [`section_close`] on the same thread ends it.
#[inline]
pub(crate) fn section_open() {
    locks_inc();
}

/// See [`section_open`].
#[inline]
pub(crate) fn section_close() {
    locks_dec();
}

/// The thread pointer, read afresh by an opaque instruction every time (not `pure`: LLVM may
/// not reuse a value read before a goroutine switch, which can move us to another thread).
#[inline(always)]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads the thread pointer register; no memory access, no side effect.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, preserves_flags));
    }
    // SAFETY: as above.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nostack, preserves_flags));
    }
    tp
}

/// `&LOCKS - thread pointer`, the same in every thread when `LOCKS` lives in the main
/// executable's static TLS block; 0 until [`init_fast_locks`] proved that.
static LOCKS_OFFSET: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

/// Enable the inline section counting: only when gort's code (hence `LOCKS`) is part of the
/// main executable, whose TLS block sits at one fixed offset from every thread's thread
/// pointer (the local-exec model's premise). A gort inside a shared object keeps the
/// out-of-line path. Called after `policy::snapshot`.
pub(crate) fn init_fast_locks() {
    if !policy::in_executable(locks_inc_slow as *const () as usize) {
        return;
    }
    let tp = thread_pointer() as isize;
    let addr = LOCKS.with(|c| c as *const Cell<u32> as isize);
    // Relaxed (both): any thread that misses them uses the out-of-line paths, which are
    // equivalent; the handler is installed after this (a system call) and Ms start after it.
    LOCKS_OFFSET.store(addr - tp, std::sync::atomic::Ordering::Relaxed);
    CURRENT_M_OFFSET.store(
        crate::sched::m::current_m_slot() - tp,
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// `&CURRENT_M - thread pointer`, under the same premise as [`LOCKS_OFFSET`]; 0 until
/// [`init_fast_locks`].
static CURRENT_M_OFFSET: std::sync::atomic::AtomicIsize = std::sync::atomic::AtomicIsize::new(0);

unsafe extern "C" {
    /// See asm/<arch>/preempt.S: both lie in the pc range the handler refuses.
    // Opaque pointers for the asm (it only adds the offsets it is given).
    fn gort_current_g(m_off: isize, curg_off: usize) -> *mut u8;
    fn gort_switch_enter(m_off: isize, curg_off: usize, nopreempt_off: usize) -> *const u8;
}

/// The running goroutine (null off one), read so that a preemption cannot come between
/// finding this thread's M and reading its `curg`: by one helper in the handler's refused
/// range, or (gort outside the executable, where its code is never preempted) directly.
#[inline]
pub(crate) fn current_g() -> *mut crate::sched::g::G {
    // Relaxed: a constant once set.
    let off = CURRENT_M_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
    if off == 0 {
        return crate::sched::m::current_g_pinned();
    }
    // SAFETY: `off` locates this thread's CURRENT_M (init_fast_locks); the offset of `curg`
    // is the compiler's; the helper only reads.
    unsafe { gort_current_g(off, crate::sched::m::CURG_OFFSET) as *mut crate::sched::g::G }
}

/// `mcall`'s first step: raise the running goroutine's no-preempt count and return its M and
/// G, with no preemption possible in between (see [`current_g`]). None off a goroutine (a
/// plain thread, g0): nothing raised.
#[inline]
pub(crate) fn switch_enter() -> Option<(&'static M, *mut crate::sched::g::G)> {
    // Relaxed: a constant once set.
    let off = CURRENT_M_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
    let m = if off == 0 {
        // Not preemptible here (see `current_g`).
        let m = current_m();
        let g = if m.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: a non-null current M is this thread's own, alive while it runs.
            unsafe { (*m).curg.get() }
        };
        if g.is_null() {
            return None;
        }
        // SAFETY: `g` is this thread's running goroutine.
        unsafe { g_nopreempt_inc(g) };
        m as *const M
    } else {
        // SAFETY: as in `current_g`; the helper raises `curg`'s count, which only this thread
        // (and its signal handler, which reads it) touches.
        unsafe {
            gort_switch_enter(
                off,
                crate::sched::m::CURG_OFFSET,
                std::mem::offset_of!(crate::sched::g::G, nopreempt),
            ) as *const M
        }
    };
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
    if m.is_null() {
        return None;
    }
    // SAFETY: this thread's M (the raised count keeps the goroutine on it), alive while it runs.
    let m: &'static M = unsafe { &*m };
    Some((m, m.curg.get()))
}

/// Raise this thread's `LOCKS`, without an out-of-line call when the offset is known.
///
/// The increment must be one step as far as the handler is concerned: a preemption between
/// reading the thread pointer and storing the count could move the goroutine to another
/// thread, which would then raise the first thread's count (and race with it). On x86_64 it
/// is one instruction addressing through `fs`; on aarch64 (thread pointer read, load, add,
/// store) it is `gort_locks_inc`, which lies inside the trampoline's pc range, the one range
/// the handler refuses by address (asm/aarch64/preempt.S).
#[inline(always)]
fn locks_inc() {
    // Relaxed: a constant once set.
    let off = LOCKS_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
    if off == 0 {
        return locks_inc_slow();
    }
    // SAFETY: `init_fast_locks` proved `LOCKS` (a `Cell<u32>`) is at `off` from the thread
    // pointer in every thread's static TLS; the instruction touches only that word.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        std::arch::asm!("inc dword ptr fs:[{off}]", off = in(reg) off, options(nostack));
    }
    // SAFETY: as above; `gort_locks_inc` clobbers only x1, x2 and the link register.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        std::arch::asm!(
            "bl {f}",
            f = sym gort_locks_inc,
            in("x0") off,
            out("x1") _,
            out("x2") _,
            out("x30") _,
            options(nostack),
        );
    }
    // The count is raised before anything of the section runs (the handler runs on this
    // thread: only compiler reordering matters).
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[cfg(target_arch = "aarch64")]
unsafe extern "C" {
    /// `LOCKS += 1` at `tpidr_el0 + x0`, inside the trampoline's refused pc range.
    fn gort_locks_inc();
}

/// Lower this thread's `LOCKS`. Several steps are fine here: the count stays raised, so the
/// handler refuses, until the store that lowers it.
#[inline(always)]
fn locks_dec() {
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
    // Relaxed: as in `locks_inc`.
    let off = LOCKS_OFFSET.load(std::sync::atomic::Ordering::Relaxed);
    if off == 0 {
        return locks_dec_slow();
    }
    let c = (thread_pointer() as isize + off) as *const Cell<u32>;
    // SAFETY: as in `locks_inc`.
    let c = unsafe { &*c };
    match c.get() {
        0 => section_underflow(),
        n => c.set(n - 1),
    }
}

#[cold]
fn section_underflow() -> ! {
    fatal("a runtime section ended on a thread where it was not open")
}

/// Out of line: the thread pointer must be read afresh (see `current_m`). Taken only when gort
/// is not part of the main executable, whose code the handler then never preempts (its pc is
/// foreign), so the steps of this increment need no protection.
#[inline(never)]
fn locks_inc_slow() {
    LOCKS.with(|c| c.set(c.get() + 1));
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

#[inline(never)]
fn locks_dec_slow() {
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
    LOCKS.with(|c| match c.get() {
        0 => section_underflow(),
        n => c.set(n - 1),
    });
}

/// Raise goroutine `g`'s no-preempt count. Only the goroutine itself (or g0 for a G it owns).
///
/// # Safety
/// `g` is valid.
#[inline]
pub(crate) unsafe fn g_nopreempt_inc(g: *mut crate::sched::g::G) {
    // SAFETY: valid G; only its own execution writes the count, the handler on the same
    // thread reads it. Relaxed + compiler fence: same-thread visibility is program order.
    unsafe {
        let c = &(*g).nopreempt;
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

/// Lower it again.
///
/// # Safety
/// `g` is valid and its count was raised.
#[inline]
pub(crate) unsafe fn g_nopreempt_dec(g: *mut crate::sched::g::G) {
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: as in `g_nopreempt_inc`.
    unsafe {
        let c = &(*g).nopreempt;
        c.store(c.load(Ordering::Relaxed) - 1, Ordering::Relaxed);
    }
}

/// Run `f` with asynchronous preemption disabled for the calling goroutine (it may still
/// yield or park voluntarily; the count follows it). On a plain thread, just runs `f`.
pub fn no_preempt<R>(f: impl FnOnce() -> R) -> R {
    let g = crate::sched::m::current_g();
    if g.is_null() {
        return f();
    }
    struct Restore(*mut crate::sched::g::G);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: the G of this goroutine (stable across switches); raised below.
            unsafe { g_nopreempt_dec(self.0) };
            // A request that arrived inside the section is honoured now (Go's check at
            // `releasem`).
            // SAFETY: valid G.
            if unsafe { (*self.0).nopreempt.load(Ordering::Relaxed) } == 0 {
                cooperative_check();
            }
        }
    }
    // SAFETY: `g` is the running goroutine.
    unsafe { g_nopreempt_inc(g) };
    let _restore = Restore(g);
    f()
}

/// If the monitor asked this goroutine's M to preempt it, yield now (cooperatively).
pub(crate) fn cooperative_check() {
    let m = current_m();
    if m.is_null() {
        return;
    }
    // SAFETY: this thread's own M.
    let mr = unsafe { &*m };
    // Relaxed: a hint set by the monitor; a missed one is retried at its next check.
    if mr.preempt_coop.swap(false, Ordering::Relaxed)
        && !mr.curg.get().is_null()
        && !request_is_stale(mr)
    {
        mr.sched.preempt.cooperative.fetch_add(1, Ordering::Relaxed);
        // The back of the line, as an asynchronous preemption (and Go's `gopreempt_m`): a
        // plain yield would go to the local queue, ahead of those waiting in the global one.
        let _ = crate::sched::schedule::mcall(crate::sched::m::Action::Backoff, None);
    }
}

/// Latency histogram: 64 power-of-two ranges of nanoseconds, each cut in 8 linear buckets.
pub(crate) struct Histogram {
    buckets: [AtomicU64; 64 * 8],
    max: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; 64 * 8],
            max: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn index(v: u64) -> usize {
        if v < 8 {
            return v as usize;
        }
        let log = 63 - v.leading_zeros() as usize; // >= 3
        let sub = ((v >> (log - 3)) & 7) as usize;
        (log - 2) * 8 + sub
    }

    /// The upper bound of bucket `i` (inclusive).
    fn upper(i: usize) -> u64 {
        if i < 8 {
            return i as u64;
        }
        let log = i / 8 + 2;
        let sub = (i % 8) as u64;
        ((8 + sub + 1) << (log - 3)) - 1
    }

    fn record(&self, v: u64) {
        // Relaxed: statistics.
        self.buckets[Self::index(v)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(v, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The `q`-quantile (0..=1) as the upper bound of its bucket (at most 12.5 % high).
    fn quantile(&self, q: f64) -> u64 {
        // Relaxed: statistics snapshot.
        let n = self.count.load(Ordering::Relaxed);
        if n == 0 {
            return 0;
        }
        let want = ((n as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return Self::upper(i).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }
}

/// Per-runtime preemption state: the mode, the quantum, the monitor and the counters.
pub(crate) struct PreemptState {
    pub(crate) mode: Preempt,
    pub(crate) quantum: Duration,
    pub(crate) requests: AtomicU64,
    pub(crate) signals: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) migrated: AtomicU64,
    pub(crate) handed_off: AtomicU64,
    pub(crate) in_place: AtomicU64,
    pub(crate) cooperative: AtomicU64,
    /// sysmon's probes (`request` with no slice): not quantum requests.
    pub(crate) probes: AtomicU64,
    pub(crate) refused: [AtomicU64; REFUSALS],
    pub(crate) latency: Histogram,
    monitor: monitor::Control,
}

impl PreemptState {
    pub(crate) fn new(mode: Preempt, quantum: Duration) -> PreemptState {
        PreemptState {
            mode,
            quantum,
            requests: AtomicU64::new(0),
            signals: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            migrated: AtomicU64::new(0),
            handed_off: AtomicU64::new(0),
            in_place: AtomicU64::new(0),
            cooperative: AtomicU64::new(0),
            probes: AtomicU64::new(0),
            refused: [const { AtomicU64::new(0) }; REFUSALS],
            latency: Histogram::new(),
            monitor: monitor::Control::new(),
        }
    }

    /// Whether asynchronous preemption is active in this runtime.
    pub(crate) fn active(&self) -> bool {
        matches!(self.mode, Preempt::Migrate | Preempt::ThreadHandoff)
    }

    /// A snapshot for `Stats`.
    pub(crate) fn stats(&self) -> PreemptStats {
        // Relaxed: statistics.
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let refused = std::array::from_fn(|i| l(&self.refused[i]));
        PreemptStats {
            mode: self.mode,
            quantum: self.quantum,
            requests: l(&self.requests),
            signals: l(&self.signals),
            preemptions: l(&self.accepted),
            migrated: l(&self.migrated),
            handed_off: l(&self.handed_off),
            in_place: l(&self.in_place),
            cooperative: l(&self.cooperative),
            probes: l(&self.probes),
            refused,
            latency_count: l(&self.latency.count),
            latency_p50: Duration::from_nanos(self.latency.quantile(0.5)),
            latency_p99: Duration::from_nanos(self.latency.quantile(0.99)),
            latency_max: Duration::from_nanos(l(&self.latency.max)),
        }
    }
}

/// Preemption counters of a runtime (part of [`crate::Stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PreemptStats {
    /// The resume mode.
    pub mode: Preempt,
    /// The quantum.
    pub quantum: Duration,
    /// Requests made (a goroutine ran past its quantum; retried requests counted again).
    pub requests: u64,
    /// SIGURG signals sent (requests coalesce per thread), sysmon's probes included.
    pub signals: u64,
    /// Signals that stopped the goroutine (accepted by the policy).
    pub preemptions: u64,
    /// Preemptions resumed through the global queue (`Migrate`).
    pub migrated: u64,
    /// Preemptions that handed the P to another thread (`ThreadHandoff`).
    pub handed_off: u64,
    /// Preemptions that found nothing else to run and resumed at once (`ThreadHandoff`).
    pub in_place: u64,
    /// Cooperative yields at the end of a `no_preempt` section.
    pub cooperative: u64,
    /// sysmon's probes of a thread stamped in foreign code (foreign-blocking handoff): each
    /// sends a SIGURG (counted in `signals`) but is not a quantum request (not in `requests`,
    /// nor in the latency figures).
    pub probes: u64,
    /// Signals refused, by reason, in the order of [`PreemptStats::REFUSAL_REASONS`].
    pub refused: [u64; REFUSALS],
    /// Latency samples (quantum expiry -> goroutine off the CPU).
    pub latency_count: u64,
    /// Median latency (bucket upper bound, at most 12.5 % high).
    pub latency_p50: Duration,
    /// 99th percentile latency (likewise).
    pub latency_p99: Duration,
    /// Largest latency seen (exact).
    pub latency_max: Duration,
}

impl PreemptStats {
    /// Names of the refusal reasons: `not_goroutine` (the thread ran the scheduler or was
    /// no goroutine's), `runtime` (a runtime section was open), `no_preempt`, `foreign` (pc
    /// outside the executable: libc, other shared objects), `panicking`, `stack` (no room for
    /// the copied frame), `frame` (a signal frame we cannot copy), `syscall` (inside
    /// `gort::syscall`), `vdso` (pc in the vdso: refused, but not a blocking call), `stale`
    /// (the request was for a slice that had ended when the signal landed).
    pub const REFUSAL_REASONS: [&'static str; REFUSALS] = REFUSAL_NAMES;

    /// Refusals for the reason named `name` (0 for an unknown name).
    pub fn refused_for(&self, name: &str) -> u64 {
        Self::REFUSAL_REASONS
            .iter()
            .position(|n| *n == name)
            .map_or(0, |i| self.refused[i])
    }

    /// Refusals, all reasons.
    pub fn refused_total(&self) -> u64 {
        self.refused.iter().sum()
    }
}

impl std::fmt::Display for PreemptStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "preempt {:?} quantum {:?}: requests {} signals {} preemptions {} (migrated {}, handed off {}, in place {}) cooperative {} probes {}; refused",
            self.mode,
            self.quantum,
            self.requests,
            self.signals,
            self.preemptions,
            self.migrated,
            self.handed_off,
            self.in_place,
            self.cooperative,
            self.probes
        )?;
        for (name, n) in Self::REFUSAL_REASONS.iter().zip(&self.refused) {
            if *n > 0 {
                write!(f, " {name}={n}")?;
            }
        }
        write!(
            f,
            "; latency n={} p50 {:?} p99 {:?} max {:?}",
            self.latency_count, self.latency_p50, self.latency_p99, self.latency_max
        )
    }
}

/// `M::preempt_tick` of a request for whatever runs (sysmon's probe).
pub(crate) const ANY_SLICE: u64 = u64::MAX;

/// Whether the request on `m` (this thread's M) is for a slice that has ended: the monitor
/// saw slice `preempt_tick` expire, but the P has scheduled since (or the M holds no P).
/// Async-signal-safe.
pub(crate) fn request_is_stale(m: &M) -> bool {
    // Relaxed (both): published by the requester's Release swap of `preempt_pending`
    // (Acquired by the handler), a hint for `cooperative_check`; the tick is the holder's.
    let want = m.preempt_tick.load(Ordering::Relaxed);
    if want == ANY_SLICE {
        return false;
    }
    let p = m.p.get();
    // SAFETY: this thread's M's P (Ps live as long as their runtime).
    p.is_null() || u64::from(unsafe { (*p).schedtick.load(Ordering::Relaxed) }) != want
}

/// Ask the goroutine running on `m` to yield: the cooperative flag, then SIGURG unless one
/// is already in flight to that thread. `expired_at`: when its quantum ran out (ns); `slice`:
/// the P's `schedtick` of that quantum (`None`: whatever runs).
pub(crate) fn request(s: &Sched, m: &M, expired_at: u64, slice: Option<u32>) {
    let st = &s.preempt;
    // Relaxed: statistics.
    if slice.is_some() {
        st.requests.fetch_add(1, Ordering::Relaxed);
    } else {
        st.probes.fetch_add(1, Ordering::Relaxed);
    }
    // Relaxed (both): published by the Release swap below (and read by `cooperative_check`
    // after the flag, as hints).
    m.preempt_expiry.store(expired_at, Ordering::Relaxed);
    m.preempt_tick
        .store(slice.map_or(ANY_SLICE, u64::from), Ordering::Relaxed);
    // Relaxed: a hint (see `cooperative_check`).
    m.preempt_coop.store(true, Ordering::Relaxed);
    // Release: pairs with the handler's Acquire swap (`claim_pending`): it sees the expiry.
    if m.preempt_pending.swap(true, Ordering::Release) {
        return; // a signal is in flight already
    }
    // Relaxed: written by the M's thread before it could hold a P.
    let tid = m.tid.load(Ordering::Relaxed);
    // Relaxed: sysmon compares it with the handler's `foreign_seen`; a stale read only
    // delays a foreign retake by a tick.
    m.signal_sent_at
        .store(crate::time::nanotime(), Ordering::Relaxed);
    // SAFETY: tgkill has no memory-safety preconditions; a stale tid at worst signals a
    // thread of ours that is no longer this M (its handler finds no pending flag and chains).
    let r = unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, libc::SIGURG) };
    if r == 0 {
        st.signals.fetch_add(1, Ordering::Relaxed);
    } else {
        m.preempt_pending.store(false, Ordering::Relaxed);
    }
}

/// Called by the trampoline on the preempted goroutine's stack (see the module docs).
/// Yields according to the mode, then prepares the resume from `pf` on whatever thread
/// resumed the goroutine. Returns the goroutine's no-preempt count, still raised: the
/// trampoline lowers it, inside its own pc range, which the handler refuses. Lowered here,
/// a second preemption could land between `prepare_resume` and `rt_sigreturn`, move the
/// goroutine to another thread, and the outer frame would then install the first thread's
/// alternate signal stack (and mask) on the second: two threads sharing one alternate stack.
///
/// # Safety
/// Only `gort_preempt_trampoline` calls it, with the frame the handler built.
#[unsafe(no_mangle)]
pub(crate) unsafe extern "C" fn gort_preempt_yield(
    pf: *mut signal::PreemptFrame,
) -> *const std::sync::atomic::AtomicU32 {
    let g = crate::sched::m::current_g();
    // SAFETY: the handler accepted only with a running goroutine on this thread.
    unsafe { g_nopreempt_inc(g) };
    // SAFETY: this thread's own M (the goroutine runs on it).
    let m = unsafe { &*current_m() };
    let st = &m.sched.preempt;
    // SAFETY: the frame the handler built on our stack.
    let expired = unsafe { (*pf).expired_at };
    if expired != 0 {
        st.latency
            .record(crate::time::nanotime().saturating_sub(expired));
    }
    // Relaxed: the request is being served.
    m.preempt_coop.store(false, Ordering::Relaxed);
    if st.mode == Preempt::ThreadHandoff {
        handoff::yield_keeping_thread(m);
    } else {
        // Relaxed: statistics.
        st.migrated.fetch_add(1, Ordering::Relaxed);
        // To the back of the global queue (Go's `gopreempt_m`); any M resumes us.
        let _ = crate::sched::schedule::mcall(Action::Backoff, None);
    }
    // SAFETY: our frame; we run on the thread that will rt_sigreturn (the raised count
    // keeps this goroutine here until then).
    unsafe { signal::prepare_resume(pf) };
    compiler_fence(std::sync::atomic::Ordering::SeqCst);
    // SAFETY: `g` is ours wherever we resumed; the trampoline lowers the count.
    unsafe { &(*g).nopreempt }
}

/// Start the monitor for a new runtime (when preemption is active) and install the handler.
pub(crate) fn start(s: &std::sync::Arc<Sched>) -> std::io::Result<()> {
    policy::snapshot();
    init_fast_locks();
    if !s.preempt.active() {
        return Ok(());
    }
    signal::install()?;
    monitor::start(s)
}

/// Stop the monitor (runtime shutdown), waiting for its thread.
pub(crate) fn stop(s: &Sched) {
    monitor::stop(s);
}

/// A P was taken by an M: wake the monitor if it sleeps because every P was idle.
#[inline]
pub(crate) fn p_busy(s: &Sched) {
    s.preempt.monitor.p_busy();
}

mod monitor;
