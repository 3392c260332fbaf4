//! sysmon: the runtime's watchdog thread (Go's `sysmon`) — retakes Ps from syscalls and from
//! Ms blocked in foreign code, and hosts the other periodic checks.
//!
//! # Model
//! One thread per runtime, started with its first M and stopped (joined) by shutdown. It is
//! not an M: it holds no P, runs no goroutine, and is not counted against `max_threads` (as
//! Go's). It sleeps, looks at every P, acts, and sleeps again:
//!
//! * **Period** (Go's constants): 20 µs while it finds things to do; after 50 idle rounds the
//!   sleep doubles each round, up to 10 ms. Its thread asks for 1 ns timer slack
//!   (`PR_SET_TIMERSLACK`; the default 50 µs would make a 20 µs sleep last 70 µs).
//! * **Deep sleep**: when every P is idle (none running, none in a syscall), there is nothing
//!   to watch: it sleeps on its futex word without a timeout, so an idle process has no
//!   periodic wake-ups. A P leaves the idle list only through `pidleget`, under the scheduler
//!   lock; sysmon decides to sleep deeply under the same lock after seeing every P idle, so
//!   `pidleget` either sees `DEEP` and wakes it ([`p_left_idle`]) or made a P busy before
//!   sysmon looked. Cost on the hot paths: none (yield and spawn never take a P off the idle
//!   list when every P is busy; `pidleget` pays one Relaxed load). Only a sysmon that has
//!   backed off (50 idle rounds, about 1 ms) sleeps deeply, and a P leaving the idle list
//!   does not reset its period: Ps that flap between idle and busy (a network server sharing
//!   the CPUs with its clients) cost at most one wake-up per backed-off period, not one per
//!   `pidleget`.
//! * **Nudge**: a sysmon backed off to 10 ms would retake a blocked syscall's P after up to
//!   20 ms. So `entersyscall` on a P with work queued (its ring, or the global queue), while
//!   sysmon sleeps longer than its base period, calls for help ([`syscall_entered`]). The
//!   syscall is retaken once it has lasted one base period (20 µs), counted from the call
//!   for help (the caller stamps the time: one clock read, on this rare path only). Where
//!   that help runs is the whole latency on a VM: waking a thread on a CPU the hypervisor
//!   has halted costs 85–130 µs here (`benches/probes/vcpu_wake.c`, idle 2-vCPU VM),
//!   against 10–18 µs on the waker's own CPU — and the syscall's CPU is the one about to fall
//!   idle. So, in order:
//!   1. **A syscall watcher** (`idle::watch_syscall`): an idle M pinned to the caller's CPU
//!      is woken with the order "watch this P's syscall". Runnable behind the caller, it gets
//!      the CPU the moment the syscall blocks, spins (no `sched_yield`: on EEVDF each yield
//!      pushes the thread's deadline a whole slice out, and the watcher then lost its CPU for
//!      milliseconds to the next runnable task) until the syscall is 20 µs old, and retakes
//!      the P for itself with the same CAS as sysmon's (`handoffs_syscall_watched`). One
//!      wake-up on the caller's CPU instead of sysmon's plus `startm`'s. At most one per
//!      10 ms (`watch_after`).
//!   2. Otherwise (Ms unpinned, no idle M pinned there): sysmon is moved onto the caller's
//!      CPU (`sched_setaffinity`, ~10 µs) and woken; it looks at once and, if the syscall is
//!      younger than 20 µs, yields (it sleeps afterwards, so the yields' deadline penalty is
//!      forgotten) until it is 20 µs old, then retakes; it goes back to every CPU at its next
//!      wake-up, not on the way to sleep, where the M it woke would wait for it.
//!
//!   Handoff stall (`GOMAXPROCS=1 bench handoff -trials 10 -sleep 100`, idle VM): 194 µs
//!   median before this (sysmon woken on the other, halted CPU, then `startm` there), 47 µs
//!   with (2) alone, 23 µs with (1). Coalesced: a nudge does not reset sysmon's back-off
//!   (only a retake does, as in Go), and after one nudge sysmon ignores nudges for its next
//!   period, so a loop of short syscalls with work queued pays one futex wake per sysmon
//!   period (≤ 10 ms) and keeps sysmon at its backed-off pace; without queued work, or with
//!   sysmon at its base period, entersyscall pays one Relaxed load.
//!
//! # What it checks, per P (`retake`, Go's `sysmontick` bookkeeping)
//! sysmon keeps, per P, the `schedtick` it last saw and when it first saw it (so "this P has
//! run the same goroutine for X" is `now - schedwhen`), and the same for `syscalltick`.
//! * **P in `Syscall`** for a whole tick (the same `syscalltick` at two looks): retake if it
//!   has work (ring not empty, or timers due), or if no M spins or idles (nobody would pick
//!   up new work), and after 10 ms regardless (Go's `retake`). The CAS protocol with
//!   exitsyscall is in `syscall.rs`.
//! * **P `Running` one goroutine for a quantum** (config `quantum`, `GORT_QUANTUM_US`, at least
//!   two base periods): the place for every "ran too long" check. Here: *foreign blocking* —
//!   the goroutine blocks in the kernel without `gort::syscall` (std::fs, a std Mutex,
//!   `thread::sleep`, a C library). Detection reads the M's thread state from
//!   `/proc/self/task/<tid>/stat` (`S` or `D`: asleep in the kernel), `.../syscall` (in a
//!   system call — not a page fault, which runtime code can take too) and its CPU time from
//!   `.../schedstat` (files kept open, one `pread` each); it must see the thread asleep at two
//!   looks a tick apart with no CPU time in between. Then [`retake_foreign`]: the P goes
//!   `Running -> Retaking`, sysmon looks once more (still asleep, still no CPU time: the M
//!   has not run since before the CAS, so its next runtime call will see the new word), and
//!   takes it (`Retaking -> Running`, sysmon holding) for `handoffp`; otherwise it reverts
//!   the word exactly, or loses to the M's reclaim CAS. The M's side (the choke point) is in
//!   `syscall.rs`. Cost: nothing unless a goroutine ran a whole quantum; then two `pread`s per
//!   look at that P. The M field `foreign_since` is the second detector's stamp (set by the
//!   preemption handler when it sees the M outside the executable's code, for its goroutine).
//!   A stamp says where the M *was*: it may be back in the runtime using its P by now, and
//!   "has not run since" cannot be had without /proc. So an M stamped for a quantum gets a
//!   [`Probe`]: the P goes `Running -> Retaking`, sysmon signals the M, and the handler acks
//!   only if it finds the M foreign *and* sees the mark — the M is then outside the runtime
//!   after the mark, so its next runtime call sees it. The ack names the probe (a token
//!   sysmon hands the M before the mark), never the word: words recur. Ack: sysmon takes the
//!   P (`Retaking -> Running`, decisive against the M's reclaim); no ack within
//!   [`PROBE_NS`]: exact revert. (`pword.rs`, `stamp_probe_vs_runtime_entry`, models it;
//!   taking the P on the stamp alone fails that model, and failed 1 run in 20 of the
//!   std-Mutex preemption test.) Under qemu-user the /proc detector is off
//!   ([`under_emulator`]); the probe works there.
//!
//! Other engineers' checks slot into the same loop: preemption requests sit next to the
//! foreign-blocking check (same `ran` condition); the network poll (`netpoll::sysmon_poll`: poll if
//! nobody has for 10 ms) goes before the P scan in [`Sysmon::tick`], in Go's order, and so
//! does the contention sample of adaptive pinning (`pinning.rs`, every 50 ms).
//!
//! Rejected: a timer-driven sysmon in the scheduler (an M that blocks cannot watch itself);
//! sysmon waking every 20 µs forever (an idle process must not burn CPU); signalling the
//! blocked thread to find out where it is (interrupting `read(2)` changes user-visible
//! behaviour for code that does not retry EINTR; /proc costs nothing to the watched thread).

use crate::loom::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use crate::sched::m::set_affinity;
use crate::sched::note::{futex_wait, futex_wake};
use crate::sched::p::{P, PStatus, next_word, word_state};
use crate::sched::syscall::{Reason, handoffp};
use crate::sched::{Sched, fatal_fmt};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// Base period (Go's 20 µs).
const BASE_DELAY_NS: u64 = 20_000;
/// Longest period (Go's 10 ms).
const MAX_DELAY_NS: u64 = 10_000_000;
/// Idle rounds before the period starts doubling (Go's 50).
const IDLE_ROUNDS: u32 = 50;
/// A P in a syscall this long is retaken even with nothing to do (Go's 10 ms).
const SYSCALL_FORCE_NS: u64 = 10_000_000;

/// `Shared::state`: sysmon looks every base period (nudges are pointless).
const AWAKE: u32 = 0;
/// Sleeping longer than the base period: a syscall with queued work nudges it.
const LONG: u32 = 1;
/// Sleeping without a timeout: every P idle; `pidleget` wakes it.
const DEEP: u32 = 2;

/// The part of sysmon the rest of the runtime touches (in `Sched`).
pub(crate) struct Shared {
    /// Futex word: 1 = woken (nudge, P left idle, stop), 0 = nothing. sysmon resets it.
    word: AtomicU32,
    /// AWAKE / LONG / DEEP (DEEP only under the scheduler lock).
    state: AtomicU32,
    started: AtomicBool,
    stop: AtomicBool,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Ps retaken, by [`Reason`].
    pub(crate) handoffs: [AtomicU64; 4],
    /// Of `handoffs[SyscallWork]`, those by a syscall watcher (`idle::watch_syscall`).
    pub(crate) watched: AtomicU64,
    /// sysmon rounds (statistics).
    pub(crate) rounds: AtomicU64,
    /// The last nudge: `P id << 32 | syscalltick` and when (`time::nanotime`). Written by the
    /// nudger before its wake-up (Release), read by sysmon after (Acquire): the syscall is
    /// known to have begun by then, so sysmon's first look can already count from it.
    nudge_key: AtomicU64,
    nudge_at: AtomicU64,
    /// Foreign-blocking detection works here (`/proc/self/task/<tid>/schedstat` readable).
    pub(crate) foreign_detection: AtomicBool,
    /// sysmon's thread id (0 until it runs): a nudger moves sysmon onto its own CPU.
    tid: AtomicI32,
    /// No syscall watcher (`idle::watch_syscall`) before this time (ns): one per longest
    /// sysmon period, so that a loop of short syscalls with work queued pays one wake-up per
    /// 10 ms at most, as for nudges.
    watch_after: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            word: AtomicU32::new(0),
            state: AtomicU32::new(AWAKE),
            started: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: std::sync::Mutex::new(None),
            handoffs: Default::default(),
            rounds: AtomicU64::new(0),
            watched: AtomicU64::new(0),
            nudge_key: AtomicU64::new(u64::MAX),
            nudge_at: AtomicU64::new(0),
            foreign_detection: AtomicBool::new(true),
            tid: AtomicI32::new(0),
            watch_after: AtomicU64::new(0),
        }
    }

    /// Wake sysmon if it is not already woken. Any thread.
    fn wake(&self) {
        // Relaxed pre-check keeps a burst of wakers off the cache line; the swap decides.
        // Release: pairs with sysmon's Acquire swap: what the waker published is seen.
        if self.word.load(Ordering::Relaxed) == 0 && self.word.swap(1, Ordering::Release) == 0 {
            futex_wake(&self.word, 1);
        }
    }
}

/// Start sysmon with the runtime's first M. Any thread.
pub(crate) fn ensure_started(s: &Sched) {
    // Relaxed pre-check; the swap makes one caller the starter.
    if s.sysmon.started.load(Ordering::Relaxed) || s.sysmon.started.swap(true, Ordering::AcqRel) {
        return;
    }
    let sp = s as *const Sched as usize;
    let t = std::thread::Builder::new()
        .name("gort-sysmon".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            // SAFETY: shutdown joins this thread (`stop`) before the runtime can be dropped.
            let s = unsafe { &*(sp as *const Sched) };
            Sysmon::new().run(s);
        });
    match t {
        Ok(h) => *s.sysmon.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(h),
        Err(e) => fatal_fmt(format_args!("cannot start sysmon's thread: {e}")),
    }
}

/// Stop sysmon and wait for its thread (shutdown; `shutting_down` is already set).
pub(crate) fn stop(s: &Sched) {
    // Release: pairs with sysmon's Acquire load after waking.
    s.sysmon.stop.store(true, Ordering::Release);
    let h = s
        .sysmon
        .thread
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(h) = h {
        {
            // Under the lock, so that a deep sleep decided under it is seen and ended.
            let _sy = s.lock();
            // Relaxed: under the lock, as every DEEP transition.
            s.sysmon.state.store(AWAKE, Ordering::Relaxed);
        }
        s.sysmon.wake();
        let _ = h.join();
    }
}

/// A P leaves the idle list (`pidleget`). Scheduler lock held.
#[inline]
pub(crate) fn p_left_idle(s: &Sched) {
    // Relaxed: DEEP is set and cleared under the scheduler lock, which we hold.
    if s.sysmon.state.load(Ordering::Relaxed) == DEEP {
        s.sysmon.state.store(AWAKE, Ordering::Relaxed);
        s.sysmon.wake();
    }
}

/// `entersyscall` froze `p`: if work waits and sysmon sleeps long, nudge it (module docs).
#[inline]
pub(crate) fn syscall_entered(s: &Sched, p: &P) {
    // Relaxed: a hint; a missed nudge costs latency (sysmon's next look), never correctness.
    if s.sysmon.state.load(Ordering::Relaxed) == AWAKE {
        return;
    }
    if (!p.runq.is_empty() || s.runqsize.load(Ordering::Relaxed) > 0)
        && s.sysmon.word.load(Ordering::Relaxed) == 0
    {
        let now = crate::time::nanotime();
        // Relaxed: a rate limit; two Ps racing past it only cost a second watcher.
        if now >= s.sysmon.watch_after.load(Ordering::Relaxed) {
            s.sysmon
                .watch_after
                .store(now + MAX_DELAY_NS, Ordering::Relaxed);
            if crate::sched::idle::watch_syscall(s, p, p.word(), now + BASE_DELAY_NS) {
                return;
            }
        }
        // Relaxed (both): published by the Release swap in `wake`.
        let tick = p.syscalltick.load(Ordering::Relaxed);
        s.sysmon
            .nudge_key
            .store(u64::from(p.id) << 32 | u64::from(tick), Ordering::Relaxed);
        s.sysmon.nudge_at.store(now, Ordering::Relaxed);
        // Move sysmon onto this CPU before waking it (module docs, "Nudge"). Relaxed: set
        // once before sysmon's first sleep; 0 (not yet running) skips the move.
        let tid = s.sysmon.tid.load(Ordering::Relaxed);
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        if tid != 0 && cpu >= 0 {
            set_affinity(tid, &[cpu as usize]);
        }
        s.sysmon.wake();
    }
}

/// Whether this process runs under qemu-user (which hides itself from `/proc/self/exe` but
/// not from `/proc/thread-self/exe`). There, foreign-blocking detection is off: qemu's own
/// threads block in host futexes inside *any* guest code — translation, the exclusive
/// sections that emulate some atomics — so "asleep in a system call" no longer means "outside
/// the runtime". `Stats::foreign_detection` says so.
fn under_emulator() -> bool {
    std::fs::read_link("/proc/thread-self/exe")
        .ok()
        .and_then(|p| Some(p.file_name()?.to_str()?.starts_with("qemu-")))
        .unwrap_or(false)
}

/// What sysmon remembers about one P (Go's `sysmontick`, plus the foreign-blocking watch).
#[derive(Default)]
struct PRecord {
    schedtick: u32,
    /// When sysmon first saw `schedtick` (ns).
    schedwhen: u64,
    syscalltick: u32,
    syscallwhen: u64,
    /// The P's M's thread, watched once its goroutine ran a quantum.
    watch: Option<ThreadWatch>,
    /// A stamp-driven retake in progress (see [`Probe`]).
    probe: Option<Probe>,
}

/// A stamp-driven foreign retake waiting for the handler's answer: sysmon gave the M the
/// probe's `token` (`M::probe_token`), marked the P `Retaking` (word `tentative`, from `orig`)
/// at `since`, then signalled the M. The handler acks (`M::foreign_ack = token`) only if it
/// finds the M in foreign code for its goroutine and the P marked, i.e. outside the runtime at
/// a moment after the mark — so the M's next runtime call sees the mark, and the P can be
/// taken. Without that answer within [`PROBE_NS`] (the M is in our code, or refused for a
/// runtime section), the word is reverted exactly. The M may also reclaim the P itself
/// meanwhile (`syscall::regain_p`, `P::cas_status`).
///
/// The answer names the probe by its token, not by the word: words recur. An exact revert
/// restores the word the next probe of that P marks from (the same `tentative`), and every P
/// counts its epochs from 0, so `tentative` of one P is that of another at some point (the
/// handler also answers the `/proc` detector's marks, which it cannot tell from a probe's).
/// When the answer was the word, an M that answered one mark and then got another P at the
/// word before it (both at epoch 3 in the case seen: `P1 0x404` answered and taken, `P0
/// 0x301` acquired in `exitsyscall_slow`) had that P's next probe answered in advance: sysmon
/// took it at its next look from an M back in the scheduler, which then idled it — "P0
/// status is Idle, expected Running (moving to Idle)" (`tests/sched.rs`,
/// `a_probe_is_answered_only_for_itself`).
#[derive(Clone, Copy)]
struct Probe {
    tentative: u64,
    orig: u64,
    since: u64,
    token: u64,
}

/// How long a probe waits for the handler's answer (signal delivery under load or qemu can
/// take milliseconds).
const PROBE_NS: u64 = 5_000_000;

/// Open /proc files of one thread, and its CPU time when last seen asleep.
struct ThreadWatch {
    tid: i32,
    stat: File,
    schedstat: File,
    syscall: File,
    asleep_at: Option<u64>,
}

impl ThreadWatch {
    fn open(tid: i32) -> Option<ThreadWatch> {
        let dir = format!("/proc/self/task/{tid}");
        Some(ThreadWatch {
            tid,
            stat: File::open(format!("{dir}/stat")).ok()?,
            schedstat: File::open(format!("{dir}/schedstat")).ok()?,
            syscall: File::open(format!("{dir}/syscall")).ok()?,
            asleep_at: None,
        })
    }

    /// `Some(cpu_ns)` if the thread is asleep in a system call (state S or D, and
    /// `.../syscall` names one), with its total CPU time so far; `None` if it is running,
    /// runnable, in a page fault, or unreadable.
    fn asleep(&self) -> Option<u64> {
        let mut buf = [0u8; 512];
        let n = self.stat.read_at(&mut buf, 0).ok()?;
        let text = &buf[..n];
        // The state follows the command name, which is in parentheses and may contain any byte.
        let close = text.iter().rposition(|&b| b == b')')?;
        let state = *text.get(close + 2)?;
        if state != b'S' && state != b'D' {
            return None;
        }
        // In a system call, not a page fault (`-1`): a fault can stall runtime code too.
        let n = self.syscall.read_at(&mut buf, 0).ok()?;
        if buf[..n].first().is_none_or(|b| !b.is_ascii_digit()) {
            return None;
        }
        schedstat_field(&self.schedstat, 0)
    }
}

/// Field `k` of an open `/proc/.../schedstat` (0: time on a CPU, 1: time runnable but
/// waiting for one, in ns), read afresh with one `pread`.
pub(crate) fn schedstat_field(file: &File, k: usize) -> Option<u64> {
    let mut buf = [0u8; 96];
    let n = file.read_at(&mut buf, 0).ok()?;
    let field = buf[..n].split(|&b| b == b' ').nth(k)?;
    std::str::from_utf8(field).ok()?.trim().parse().ok()
}

/// sysmon's own state (its thread only).
struct Sysmon {
    ps: Vec<PRecord>,
    /// Contention-adaptive pinning's sampler (`pinning.rs`).
    pinning: crate::sched::pinning::Watch,
    /// The netpoll blocker's CPU-idleness sampler (`netpoll/place.rs`).
    place: crate::netpoll::place::Sampler,
    /// The earliest time a nudged syscall will have lasted a tick (or `u64::MAX`).
    due: u64,
    /// Probes started so far: the next probe's token is one more (see [`Probe`]).
    probes: u64,
}

impl Sysmon {
    fn new() -> Sysmon {
        Sysmon {
            ps: Vec::new(),
            pinning: crate::sched::pinning::Watch::new(),
            place: crate::netpoll::place::Sampler::new(),
            due: u64::MAX,
            probes: 0,
        }
    }

    fn run(&mut self, s: &Sched) {
        // SAFETY: prctl on the calling thread; 1 ns of timer slack (see the module docs). A
        // failure only makes short sleeps longer.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        if under_emulator() {
            // Relaxed: read by `stats()` and by this thread only.
            s.sysmon.foreign_detection.store(false, Ordering::Relaxed);
        }
        // Relaxed: read by nudgers as a hint (see `syscall_entered`).
        // SAFETY: gettid has no preconditions.
        s.sysmon
            .tid
            .store(unsafe { libc::gettid() }, Ordering::Relaxed);
        // The thread that started sysmon may have been a pinned M: watch from every CPU.
        set_affinity(0, &s.cpus);
        let mut idle = 0u32;
        let mut delay = BASE_DELAY_NS;
        // Sleeps left during which nudges are off (one nudge per back-off period).
        let mut quiet = 0u32;
        // A nudger moved sysmon onto its CPU; undone once the nudged syscall is dealt with.
        let mut moved = false;
        loop {
            if idle == 0 {
                delay = BASE_DELAY_NS;
            } else if idle > IDLE_ROUNDS {
                delay = (delay * 2).min(MAX_DELAY_NS);
            }
            // Deep sleep only once sysmon has backed off (50 idle rounds): a runtime whose Ps
            // flap between idle and busy thousands of times a second (a TCP echo server
            // sharing the CPUs with its clients) would otherwise have every `pidleget` wake
            // sysmon, which then ran base-period rounds: 4,000 wake-ups/s, 6% of the server's
            // CPU in an echo profile.
            if idle > IDLE_ROUNDS && self.deep_sleep(s) {
                // Woken because a P left the idle list: keep the backed-off period (Go resets
                // it only for a wake-up by a syscall; ours are nudges, handled below).
                quiet = 0;
                // Acquire: pairs with the Release swap of the waker.
                s.sysmon.word.swap(0, Ordering::Acquire);
                if moved {
                    set_affinity(0, &s.cpus);
                    moved = false;
                }
            } else {
                // A nudged syscall due before the period ends: look exactly then.
                let mut sleep = delay;
                let due = std::mem::replace(&mut self.due, u64::MAX);
                if due != u64::MAX {
                    sleep = sleep.min(due.saturating_sub(crate::time::nanotime()).max(1));
                }
                quiet = quiet.saturating_sub(1);
                if moved && due != u64::MAX && sleep <= BASE_DELAY_NS {
                    // On the nudger's CPU, until the nudged syscall has lasted a tick: yield
                    // rather than sleep. The nudger's M runs until it blocks; then this CPU
                    // is free and sysmon looks at the exact moment, with no timer to wake
                    // a halted CPU (module docs, "Nudge").
                    while crate::time::nanotime() < due {
                        // SAFETY: sched_yield has no preconditions.
                        unsafe { libc::sched_yield() };
                    }
                } else {
                    let nudgeable = sleep > BASE_DELAY_NS && quiet == 0;
                    // Relaxed: a hint for nudgers (see `syscall_entered`).
                    let state = if nudgeable { LONG } else { AWAKE };
                    s.sysmon.state.store(state, Ordering::Relaxed);
                    futex_wait(&s.sysmon.word, 0, Some(Duration::from_nanos(sleep)));
                    s.sysmon.state.store(AWAKE, Ordering::Relaxed);
                }
                // Acquire: pairs with the Release swap of the waker.
                if s.sysmon.word.swap(0, Ordering::Acquire) != 0 {
                    // Nudged: look now (and at the nudged syscall's tick, `due`); no more
                    // nudges until the period after next, so that a loop of short syscalls
                    // with work queued wakes sysmon at most once per back-off period. The
                    // nudger moved sysmon onto its CPU (a wake-up without a nudge, from
                    // `p_left_idle` or `stop`, may see it too: harmless, undone below).
                    quiet = 2;
                    moved = true;
                } else if moved && due == u64::MAX {
                    // The nudged syscall was dealt with at the last look; back to every CPU
                    // now (doing it then would have kept the M that look woke waiting).
                    set_affinity(0, &s.cpus);
                    moved = false;
                }
            }
            // Acquire: pairs with the store in `stop`.
            if s.sysmon.stop.load(Ordering::Acquire) {
                return;
            }
            if self.tick(s, crate::time::nanotime()) {
                idle = 0;
            } else {
                idle += 1;
            }
        }
    }

    /// Every P idle: sleep without a timeout until one leaves the idle list. Returns whether
    /// it slept.
    fn deep_sleep(&mut self, s: &Sched) -> bool {
        // Relaxed: a hint, re-checked under the lock.
        if s.npidle.load(Ordering::Relaxed) < s.procs() {
            return false;
        }
        {
            let _sy = s.lock();
            // Relaxed: npidle changes under the lock we hold; `stop` is re-checked after it.
            if s.npidle.load(Ordering::Relaxed) < s.procs() || s.sysmon.stop.load(Ordering::Acquire)
            {
                return false;
            }
            // Relaxed: under the lock (`p_left_idle` reads it under the same lock).
            s.sysmon.state.store(DEEP, Ordering::Relaxed);
        }
        // Acquire: pairs with the Release swap of the waker.
        while s.sysmon.word.load(Ordering::Acquire) == 0 {
            futex_wait(&s.sysmon.word, 0, None);
        }
        // Records are stale after a long sleep: start afresh.
        self.ps.clear();
        true
    }

    /// One look at every P; true if it did something (keeps the period short).
    fn tick(&mut self, s: &Sched, now: u64) -> bool {
        // Relaxed: statistics, single writer.
        s.sysmon.rounds.fetch_add(1, Ordering::Relaxed);
        // Go's order: the network first (poll if nobody has for 10 ms), then retake.
        let polled = crate::netpoll::sysmon_poll(s, now) > 0;
        if s.pin_adaptive {
            self.pinning.look(s, now);
        }
        self.place.look(s, now);
        self.retake(s, now) || polled
    }

    /// Go's `retake`: Ps blocked in syscalls, and Ps whose goroutine ran a quantum.
    fn retake(&mut self, s: &Sched, now: u64) -> bool {
        let n = (s.procs() as usize).min(s.nprocs_created.load(Ordering::Acquire) as usize);
        if self.ps.len() < n {
            self.ps.resize_with(n, PRecord::default);
        }
        let quantum = s.quantum_ns.max(2 * BASE_DELAY_NS);
        let mut taken = 0;
        let mut busy = false;
        for i in 0..n {
            // SAFETY: Ps below nprocs_created live as long as the runtime.
            let p = unsafe { &*s.p(i) };
            let rec = &mut self.ps[i];
            let w = p.word();
            // Relaxed: the holder's counter; only compared across looks.
            let t = p.schedtick.load(Ordering::Relaxed);
            if rec.schedtick != t || rec.schedwhen == 0 {
                rec.schedtick = t;
                rec.schedwhen = now;
                if let Some(wt) = rec.watch.as_mut() {
                    wt.asleep_at = None;
                }
            }
            if let Some(probe) = rec.probe {
                match probe_answer(s, p, probe, now) {
                    Some(true) => taken += 1,
                    Some(false) => {}
                    None => {
                        // Still waiting: keep looking at the base period.
                        busy = true;
                        continue;
                    }
                }
                self.ps[i].probe = None;
                continue;
            }
            match word_state(w) {
                PStatus::Syscall if retake_syscall(s, p, rec, w, now, &mut self.due) => taken += 1,
                PStatus::Running => {
                    let ran = now.saturating_sub(rec.schedwhen);
                    if ran >= quantum && self.foreign_check(s, i, w, now, quantum) {
                        taken += 1;
                    }
                }
                _ => {}
            }
        }
        // A pending probe counts as activity: the period stays at its base.
        taken > 0 || busy
    }

    /// P `i` has run one goroutine for a quantum: is its M blocked in the kernel (or stamped
    /// foreign)? If so, retake it.
    fn foreign_check(&mut self, s: &Sched, i: usize, w: u64, now: u64, quantum: u64) -> bool {
        // SAFETY: as in `retake`.
        let p = unsafe { &*s.p(i) };
        // Relaxed: a hint; `retake_foreign` re-checks through the status word.
        let m = p.m.load(Ordering::Relaxed);
        if m.is_null() {
            return false;
        }
        // SAFETY: Ms are freed only when the runtime is dropped.
        let mr = unsafe { &*m };
        // Relaxed: the stamp's writer is the M's own signal handler; a stale read delays.
        let stamp = mr.foreign_since.load(Ordering::Relaxed);
        // Only a stamp the handler confirmed in answer to the latest signal: a thread that
        // came back into our code since it was stamped keeps the stamp until the next
        // signal, and must not lose its P for it. Relaxed (both): see above.
        let confirmed = || {
            let seen = mr.foreign_seen.load(Ordering::Relaxed);
            seen != 0 && seen >= mr.signal_sent_at.load(Ordering::Relaxed)
        };
        if stamp != 0 && now.saturating_sub(stamp) >= quantum && confirmed() {
            // The stamp says where the M *was*; it may have come back into the runtime since
            // and be using the P right now. Mark the P, then ask the handler (see `Probe`).
            let tentative = next_word(w, PStatus::Retaking);
            // The probe's token before its mark: Release pairs with the handler's Acquire load
            // (see `Probe`). A probe that fails to mark wastes a token.
            self.probes += 1;
            let token = self.probes;
            mr.probe_token.store(token, Ordering::Release);
            if p.cas_word(w, tentative) {
                self.ps[i].probe = Some(Probe {
                    tentative,
                    orig: w,
                    since: now,
                    token,
                });
                // Expiry 0: not a quantum expiry, kept out of the latency figures.
                crate::preempt::request(s, mr, 0, None);
            }
            return false;
        }
        if !s.sysmon.foreign_detection.load(Ordering::Relaxed) {
            return false;
        }
        // Relaxed: written once by the M's thread at start.
        let tid = mr.tid.load(Ordering::Relaxed);
        let rec = &mut self.ps[i];
        if rec.watch.as_ref().is_none_or(|wt| wt.tid != tid) {
            rec.watch = ThreadWatch::open(tid);
            if rec.watch.is_none() {
                if std::fs::metadata("/proc/self/task").is_err() {
                    // No /proc: say so in the stats, stop trying.
                    s.sysmon.foreign_detection.store(false, Ordering::Relaxed);
                }
                return false;
            }
        }
        let wt = rec.watch.as_mut().expect("opened above");
        // Relaxed: see `M::rt_blocking`.
        let cpu = match wt.asleep() {
            Some(cpu) if mr.rt_blocking.load(Ordering::Relaxed) == 0 => cpu,
            _ => {
                wt.asleep_at = None;
                return false;
            }
        };
        if wt.asleep_at != Some(cpu) {
            // First look at this sleep: it must last until the next one.
            wt.asleep_at = Some(cpu);
            return false;
        }
        let wt = &*wt;
        let taken = retake_foreign(s, p, w, || {
            // Relaxed: see `M::rt_blocking`.
            mr.rt_blocking.load(Ordering::Relaxed) == 0 && wt.asleep() == Some(cpu)
        });
        if taken {
            self.ps[i].watch.as_mut().expect("watched").asleep_at = None;
        }
        taken
    }
}

/// The P is in `Syscall` (word `w`): retake it if the syscall lasted a tick and Go's
/// conditions hold (module docs). A nudged syscall that has not lasted a tick yet lowers
/// `due` to when it will have.
fn retake_syscall(s: &Sched, p: &P, rec: &mut PRecord, w: u64, now: u64, due: &mut u64) -> bool {
    // Relaxed: the holder's counter; only compared across looks.
    let t = p.syscalltick.load(Ordering::Relaxed);
    if rec.syscalltick != t || rec.syscallwhen == 0 {
        rec.syscalltick = t;
        rec.syscallwhen = now;
        // Relaxed (both): ordered by the Acquire swap of the nudge's wake-up word.
        if s.sysmon.nudge_key.load(Ordering::Relaxed) != u64::from(p.id) << 32 | u64::from(t) {
            return false;
        }
        // Nudged by this very syscall: it began no later than the nudge.
        rec.syscallwhen = s.sysmon.nudge_at.load(Ordering::Relaxed).min(now);
        if now - rec.syscallwhen < BASE_DELAY_NS {
            *due = (*due).min(rec.syscallwhen + BASE_DELAY_NS);
            return false;
        }
    }
    let work = !p.runq.is_empty() || p.timers.next_when() <= now;
    // Relaxed: heuristics, as Go's.
    let nobody = s.nmspinning.load(Ordering::Relaxed) + s.npidle.load(Ordering::Relaxed) == 0;
    let long = now.saturating_sub(rec.syscallwhen) >= SYSCALL_FORCE_NS;
    let reason = if work {
        Reason::SyscallWork
    } else if nobody {
        Reason::SyscallIdle
    } else if long {
        Reason::SyscallLong
    } else {
        return false;
    };
    // The decisive CAS against exitsyscall's (syscall.rs): from the exact word we saw.
    if !p.cas_word(w, next_word(w, PStatus::Running)) {
        return false;
    }
    take(s, p, reason);
    true
}

/// Count a retaken P (sysmon, or a syscall watcher: `idle::watch_syscall`).
pub(crate) fn count_handoff(s: &Sched, reason: Reason) {
    // Relaxed: a statistics counter.
    s.sysmon.handoffs[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// Retake the P of an M that is blocked in the kernel or running foreign code without
/// `gort::syscall`. `w` is the `Running` word sysmon saw; `still` re-checks the detector's
/// condition after the P is marked `Retaking` (it must imply that the M has not run runtime
/// code since the detector's first look). Returns whether the P was taken (and handed off).
/// sysmon's thread only.
pub(crate) fn retake_foreign(s: &Sched, p: &P, w: u64, still: impl FnOnce() -> bool) -> bool {
    let tentative = next_word(w, PStatus::Retaking);
    if !p.cas_word(w, tentative) {
        return false;
    }
    if !still() {
        // Restore the exact word: the M still owns it. Fails only if the M already reclaimed it.
        let _ = p.cas_word(tentative, w);
        return false;
    }
    take_retaking(s, p, tentative)
}

/// The decisive step of a foreign retake: `Retaking -> Running` with sysmon holding, then the
/// handoff. Fails only if the M came back and reclaimed the P meanwhile.
fn take_retaking(s: &Sched, p: &P, tentative: u64) -> bool {
    if !p.cas_word(tentative, next_word(tentative, PStatus::Running)) {
        return false;
    }
    take(s, p, Reason::Foreign);
    true
}

/// A pending [`Probe`] on `p`: `Some(true)` if the handler answered and the P was taken,
/// `Some(false)` if the probe is over without a retake (the M reclaimed the P, or no answer in
/// time: reverted), `None` while waiting.
fn probe_answer(s: &Sched, p: &P, probe: Probe, now: u64) -> Option<bool> {
    if p.word() != probe.tentative {
        // The M reclaimed it (or moved it on): it is not blocked.
        return Some(false);
    }
    // Relaxed: a hint; the M is re-read through the word's owner below only as a pointer.
    let m = p.m.load(Ordering::Relaxed);
    // SAFETY: Ms are freed only when the runtime is dropped.
    let acked = !m.is_null()
        // Acquire: pairs with the handler's Release store.
        && unsafe { &*m }.foreign_ack.load(Ordering::Acquire) == probe.token;
    if acked {
        return Some(take_retaking(s, p, probe.tentative));
    }
    if now.saturating_sub(probe.since) < PROBE_NS {
        return None;
    }
    // No answer: restore the exact word (the M still owns it). Fails only if it reclaimed it.
    let _ = p.cas_word(probe.tentative, probe.orig);
    Some(false)
}

/// sysmon holds `p` (status Running, taken from an M): count and hand it off.
fn take(s: &Sched, p: &P, reason: Reason) {
    // Relaxed: a hint for the next holder's diagnostics; we hold the P.
    p.m.store(std::ptr::null_mut(), Ordering::Relaxed);
    count_handoff(s, reason);
    handoffp(s, p as *const P as *mut P);
}
