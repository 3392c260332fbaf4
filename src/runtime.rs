//! `Runtime`: one scheduler instance (its Ps, Ms and goroutines), its builder, the default
//! runtime behind `gort::run`/`gort::go`, and shutdown.
//!
//! # Configuration
//! Every setting has three sources, strongest first: the builder method, the environment
//! (read when the runtime is built), the default. Environment variables: `GOMAXPROCS` (as Go:
//! a positive integer; default: the number of CPUs this process may run on), `GORT_STACK_KB`,
//! `GORT_PIN=0|1|strict`, `GORT_PREEMPT=off|handoff|migrate`, `GORT_QUANTUM_US`. A malformed value
//! is an error naming the variable and the value — never silently ignored (Go ignores a bad
//! GOMAXPROCS; we think a typo that silently changes the parallelism is worse).
//!
//! # Shutdown
//! [`Runtime::shutdown`] (also run by `Drop`) asks every M to stop at its next scheduling
//! point, waits for all of them to exit, and then:
//! * goroutines that finished: their structs are freed and their stacks unmapped;
//! * goroutines still runnable or parked: **abandoned**. They never run again; `join` on their
//!   handles returns `Err` with a [`crate::Abandoned`] payload; their closures and stack frames
//!   are leaked (destructors do not run), and their stacks stay mapped: channels, mutexes or
//!   other objects shared with the rest of the program may still hold pointers into them, and
//!   waking such a goroutine later must stay memory-safe (it is discarded).
//! * a goroutine that never reaches a scheduling point keeps its M, and shutdown waits for it.
//!
//! Calling `shutdown` from one of the runtime's own goroutines would wait for itself: it panics.

use crate::loom::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Mutex, Ordering};
use crate::sched::g::Status;
use crate::sched::m::current_m;
use crate::sched::p::{P, PCounters};
use crate::sched::task::{JoinHandle, TaskCell};
use crate::sched::{GlobalFree, MAX_PROCS, Sched, Synced, idle, schedule};
use std::io;
use std::sync::{Arc, Condvar, OnceLock};
use std::time::Duration;

/// How a goroutine that exceeded its time quantum is stopped (see DESIGN.md §6).
///
/// Goroutines that run longer than the quantum are stopped by SIGURG at an async-safe point
/// (see `preempt/mod.rs`); the mode says where they resume. With `Off`, goroutines switch
/// only at scheduling points (yield, park, channel operations, exit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Preempt {
    /// The preempted goroutine keeps its OS thread until its next scheduling point; its P
    /// moves to another thread. Sound for arbitrary Rust code.
    #[default]
    ThreadHandoff,
    /// Go's behaviour: the preempted goroutine may resume on any thread.
    Migrate,
    /// Cooperative only (as `GODEBUG=asyncpreemptoff=1`).
    Off,
}

/// Resolved runtime configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) procs: usize,
    pub(crate) stack_size: usize,
    pub(crate) pin: bool,
    pub(crate) pin_strict: bool,
    pub(crate) max_threads: usize,
    pub(crate) preempt: Preempt,
    pub(crate) quantum: Duration,
}

/// Builds a [`Runtime`]. Unset options come from the environment, then the defaults.
#[derive(Clone, Debug, Default)]
pub struct RuntimeBuilder {
    procs: Option<usize>,
    stack_size: Option<usize>,
    pin: Option<bool>,
    pin_strict: Option<bool>,
    max_threads: Option<usize>,
    preempt: Option<Preempt>,
    quantum: Option<Duration>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn env_var(name: &str) -> io::Result<Option<String>> {
    match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => {
            Err(invalid(format!("gort: {name}={v:?} is not valid UTF-8")))
        }
    }
}

fn env_usize(name: &str, what: &str) -> io::Result<Option<usize>> {
    match env_var(name)? {
        None => Ok(None),
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(invalid(format!(
                "gort: {name}={v:?} is not valid: expected {what}"
            ))),
        },
    }
}

/// The CPUs this process may run on.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data filled in by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

impl RuntimeBuilder {
    /// GOMAXPROCS: the number of Ps (goroutines running in parallel). Must be 1..=1024.
    pub fn procs(mut self, n: usize) -> Self {
        self.procs = Some(n);
        self
    }
    /// Pin each M to the CPU of the P it holds (default true; `GORT_PIN=0` disables).
    ///
    /// Pinning is relaxed while other processes compete for those CPUs (the running Ms wait
    /// in the kernel's run queue more than 10 % of the time), and restored once they have
    /// been calm for a second; see [`RuntimeBuilder::pin_strict`] and `Stats::pinning`.
    pub fn pin_threads(mut self, pin: bool) -> Self {
        self.pin = Some(pin);
        self
    }
    /// Keep the Ms pinned even while other processes compete for their CPUs (default false;
    /// `GORT_PIN=strict`): for measurements that need a fixed placement. Implies
    /// `pin_threads(true)` unless that is set to false.
    pub fn pin_strict(mut self, strict: bool) -> Self {
        self.pin_strict = Some(strict);
        self
    }
    /// Default goroutine stack reservation in bytes (default 256 KiB; at least one page).
    /// Stacks are demand-paged: a goroutine costs the pages it touches, not this size.
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }
    /// Maximum number of OS threads (Ms); exceeding it is fatal, as in Go (default 10,000).
    pub fn max_threads(mut self, n: usize) -> Self {
        self.max_threads = Some(n);
        self
    }
    /// Preemption mode (see [`Preempt`]).
    pub fn preempt(mut self, mode: Preempt) -> Self {
        self.preempt = Some(mode);
        self
    }
    /// Time quantum after which a running goroutine is asked to yield (default 10 ms).
    pub fn preempt_quantum(mut self, q: Duration) -> Self {
        self.quantum = Some(q);
        self
    }

    pub(crate) fn resolve(&self) -> io::Result<Config> {
        let procs = match self.procs {
            Some(0) => {
                return Err(invalid(
                    "gort: procs(0) is not valid: GOMAXPROCS must be at least 1".into(),
                ));
            }
            Some(n) => n,
            None => match env_usize("GOMAXPROCS", "a positive integer")? {
                Some(n) => n,
                None => allowed_cpus().len().max(1),
            },
        };
        if procs > MAX_PROCS {
            return Err(invalid(format!(
                "gort: GOMAXPROCS {procs} is too large: the maximum is {MAX_PROCS}"
            )));
        }
        let page = crate::stack::page_size();
        let stack_size = match self.stack_size {
            Some(n) => n,
            None => match env_usize("GORT_STACK_KB", "a positive number of KiB")? {
                Some(kb) => match kb.checked_mul(1024) {
                    Some(b) if b >= page => b,
                    _ => {
                        return Err(invalid(format!(
                            "gort: GORT_STACK_KB={kb} is not valid: expected at least {} (one page)",
                            page / 1024
                        )));
                    }
                },
                None => crate::stack::DEFAULT_STACK_SIZE,
            },
        };
        if stack_size < page {
            return Err(invalid(format!(
                "gort: stack size {stack_size} bytes is too small: the minimum is one page ({page} bytes)"
            )));
        }
        let pin_env = if self.pin.is_some() && self.pin_strict.is_some() {
            None
        } else {
            env_var("GORT_PIN")?
        };
        let (env_pin, env_strict) = match pin_env.as_deref().map(str::trim) {
            None | Some("1") => (true, false),
            Some("0") => (false, false),
            Some("strict") => (true, true),
            Some(v) => {
                return Err(invalid(format!(
                    "gort: GORT_PIN={v:?} is not valid: expected 0, 1 or strict"
                )));
            }
        };
        let pin = self.pin.unwrap_or(env_pin);
        let pin_strict = pin && self.pin_strict.unwrap_or(env_strict);
        let max_threads = self.max_threads.unwrap_or(10_000);
        if max_threads < procs {
            return Err(invalid(format!(
                "gort: max_threads {max_threads} is below GOMAXPROCS {procs}"
            )));
        }
        let preempt = match self.preempt {
            Some(p) => p,
            None => match env_var("GORT_PREEMPT")?.as_deref().map(str::trim) {
                None | Some("handoff") => Preempt::ThreadHandoff,
                Some("migrate") => Preempt::Migrate,
                Some("off") => Preempt::Off,
                Some(v) => {
                    return Err(invalid(format!(
                        "gort: GORT_PREEMPT={v:?} is not valid: expected off, handoff or migrate"
                    )));
                }
            },
        };
        let quantum = match self.quantum {
            Some(q) => q,
            None => match env_usize("GORT_QUANTUM_US", "a positive number of microseconds")? {
                Some(us) if us >= 100 => Duration::from_micros(us as u64),
                Some(us) => {
                    return Err(invalid(format!(
                        "gort: GORT_QUANTUM_US={us} is too short: the minimum is 100 (µs)"
                    )));
                }
                None => Duration::from_millis(10),
            },
        };
        if quantum < Duration::from_micros(100) {
            return Err(invalid(format!(
                "gort: preemption quantum {quantum:?} is too short: the minimum is 100µs"
            )));
        }
        Ok(Config {
            procs,
            stack_size,
            pin,
            pin_strict,
            max_threads,
            preempt,
            quantum,
        })
    }

    /// Build the runtime. Its threads start lazily, when the first goroutine is spawned.
    pub fn build(self) -> io::Result<Runtime> {
        let cfg = self.resolve()?;
        crate::stack::install_overflow_handler()?;
        let sched = Sched::start(&cfg);
        crate::preempt::start(&sched)?;
        Ok(Runtime { sched, cfg })
    }
}

impl Sched {
    pub(crate) fn start(cfg: &Config) -> Arc<Sched> {
        let allp: Box<[AtomicPtr<P>]> = (0..MAX_PROCS)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect();
        let cpus = allowed_cpus();
        let ncpus = cpus.len();
        let s = Arc::new(Sched {
            stack_size: cfg.stack_size,
            pin: cfg.pin,
            pin_adaptive: cfg.pin && !cfg.pin_strict,
            max_threads: cfg.max_threads,
            cpus,
            gomaxprocs: AtomicU32::new(0),
            allp,
            nprocs_created: AtomicU32::new(0),
            nmspinning: AtomicU32::new(0),
            npidle: AtomicU32::new(0),
            runqsize: AtomicU32::new(0),
            synced: Mutex::new(Synced {
                runq: crate::sched::g::GQueue::new(),
                pidle: Vec::new(),
                midle: Vec::new(),
                mcount: 0,
                allm: Vec::new(),
                mlocked: Vec::new(),
            }),
            gfree: Mutex::new(GlobalFree {
                warm: crate::sched::g::GQueue::new(),
                cold: crate::sched::g::GQueue::new(),
                taken: 0,
                excess_timer: false,
            }),
            allgs: Mutex::new(Vec::new()),
            shutting_down: AtomicBool::new(false),
            mlive: std::sync::Mutex::new(0),
            mlive_cv: Condvar::new(),
            spawned_outside: AtomicU64::new(0),
            ms_created: AtomicU64::new(0),
            m_wakeups: AtomicU64::new(0),
            retired_counters: PCounters::default(),
            timers: crate::time::SchedTimers::new(),
            netpoll: crate::netpoll::Poller::new(),
            place: crate::netpoll::place::Place::new(ncpus),
            preempt: crate::preempt::PreemptState::new(cfg.preempt, cfg.quantum),
            mlocked: AtomicU64::new(0),
            quantum_ns: cfg.quantum.as_nanos().min(u64::MAX as u128) as u64,
            sysmon: crate::sched::sysmon::Shared::new(),
            pinning: crate::sched::pinning::Shared::new(),
        });
        s.resize(cfg.procs);
        s
    }

    /// Change GOMAXPROCS to `n` (1..=MAX_PROCS); returns the old value. Growing creates or
    /// revives Ps (idle); shrinking retires Ps `>= n` at their next scheduling point (their
    /// queued Gs move to the global queue) — no stop-the-world needed.
    pub(crate) fn resize(&self, n: usize) -> usize {
        let mut sy = self.lock();
        // Relaxed: we are the only writer (under the lock).
        let old = self.gomaxprocs.load(Ordering::Relaxed) as usize;
        let created = self.nprocs_created.load(Ordering::Relaxed) as usize;
        for i in created..n {
            let cpu = if self.pin { i as i32 } else { -1 };
            let p = Box::into_raw(Box::new(P::new(i as u32, cpu)));
            // Release: publishes the P's initialisation to lock-free readers (`Sched::p`).
            self.allp[i].store(p, Ordering::Release);
        }
        if n > created {
            // Release: pairs with the Acquire loads that bound iteration over allp.
            self.nprocs_created.store(n as u32, Ordering::Release);
        }
        // Relaxed: readers use it as a hint; retirement is re-checked by each P's holder.
        self.gomaxprocs.store(n as u32, Ordering::Relaxed);
        for i in 0..n {
            let p = self.p(i);
            // SAFETY: created above or earlier; never freed while the scheduler lives.
            let pr = unsafe { &*p };
            let revive = pr.status() == crate::sched::p::PStatus::Dead;
            let fresh = i >= created;
            if revive {
                pr.cas_status(
                    crate::sched::p::PStatus::Dead,
                    crate::sched::p::PStatus::Running,
                );
            }
            if revive || fresh {
                if fresh {
                    pr.cas_status(
                        crate::sched::p::PStatus::Idle,
                        crate::sched::p::PStatus::Running,
                    );
                }
                idle::pidleput(self, &mut sy, p);
            }
        }
        let has_work = !sy.runq.is_empty();
        drop(sy);
        if n > old && has_work {
            for _ in old..n {
                idle::wake_for_global(self);
            }
        }
        old
    }

    fn shutdown(self: &Arc<Sched>) {
        let m = current_m();
        // SAFETY: a non-null current M is this thread's own.
        if !m.is_null() && std::ptr::eq(&*unsafe { &*m }.sched, &**self) {
            panic!("gort: Runtime::shutdown called from one of the runtime's own goroutines");
        }
        // SeqCst: ordered before we take the lock and walk the idle list (see `stopm`).
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        crate::preempt::stop(self);
        crate::sched::sysmon::stop(self);
        {
            let mut sy = self.lock();
            let locked: Vec<*mut crate::sched::m::M> = sy.mlocked.drain(..).collect();
            for m in locked.into_iter().chain(sy.midle.drain(..)) {
                // SAFETY: idle Ms are alive and asleep (or about to sleep) on their notes.
                let mr = unsafe { &*m };
                mr.nextp.store(std::ptr::null_mut(), Ordering::Relaxed);
                mr.park.wake();
                crate::netpoll::kick_m(self, m);
            }
        }
        let mut live = self.mlive.lock().unwrap_or_else(|e| e.into_inner());
        while *live > 0 {
            live = self.mlive_cv.wait(live).unwrap_or_else(|e| e.into_inner());
        }
        drop(live);
        // Exited Ms drop their references right after signalling; wait for them so the
        // runtime's destructor (which unmaps the stacks) runs on the caller's thread.
        while Arc::strong_count(self) > 1 {
            std::thread::yield_now();
        }
        // Every M has stopped. First mark every unfinished goroutine Abandoned, so that the
        // wake-ups the next loop causes (an abandoned joiner of an abandoned goroutine) are
        // discarded by `goready` instead of queueing Gs on a runtime that is gone; then
        // release their joiners.
        let gs = self.allgs.lock().unwrap_or_else(|e| e.into_inner());
        let mut abandoned = Vec::new();
        for &g in gs.iter() {
            // SAFETY: no M runs any more; Gs are alive until the scheduler is dropped (and
            // unfinished ones forever).
            unsafe {
                match (*g).status() {
                    Status::Runnable | Status::Waiting | Status::Running => {
                        (*g).set_status(Status::Abandoned);
                        abandoned.push(g);
                    }
                    Status::Idle | Status::Dead | Status::Abandoned => {}
                }
            }
        }
        drop(gs);
        for g in abandoned {
            // SAFETY: as above; `task_ptr` is valid while the G is unfinished.
            unsafe {
                (*(*g).task_ptr).abandon();
                (*g).task = None;
            }
        }
    }
}

impl Drop for Sched {
    fn drop(&mut self) {
        let gs = std::mem::take(&mut *self.allgs.lock().unwrap_or_else(|e| e.into_inner()));
        for g in gs {
            // SAFETY: every M has exited (they hold Arcs to us), so nothing references the
            // finished Gs; unfinished ones are leaked on purpose (see the module docs).
            unsafe {
                match (*g).status() {
                    Status::Idle | Status::Dead => drop(Box::from_raw(g)),
                    _ => {}
                }
            }
        }
        let sy = self.synced.get_mut().unwrap_or_else(|e| e.into_inner());
        for &m in &sy.allm {
            // SAFETY: the M's thread has exited (it held an Arc to us until then).
            unsafe { drop(Box::from_raw(m)) };
        }
        let n = *self.nprocs_created.get_mut() as usize;
        for i in 0..n {
            let p = *self.allp[i].get_mut();
            // SAFETY: Ps are owned by the scheduler; nothing else references them now.
            unsafe { drop(Box::from_raw(p)) };
        }
        crate::stack::trim();
    }
}

/// A gort runtime: GOMAXPROCS Ps, the threads that run them, and their goroutines.
///
/// ```
/// let rt = gort::Runtime::builder().procs(2).build().unwrap();
/// let sum = rt.block_on(|| {
///     let hs: Vec<_> = (0..10u64).map(|i| gort::go(move || i * i)).collect();
///     hs.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
/// });
/// assert_eq!(sum, 285);
/// rt.shutdown();
/// ```
pub struct Runtime {
    pub(crate) sched: Arc<Sched>,
    cfg: Config,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("procs", &self.sched.procs())
            .field("config", &self.cfg)
            .finish()
    }
}

impl Runtime {
    /// A builder; see [`RuntimeBuilder`].
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder::default()
    }

    /// Run `f` as a goroutine of this runtime and wait for it (parking if called from a
    /// goroutine, blocking if called from a plain thread). A panic in `f` resumes here.
    pub fn block_on<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn(f).join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        }
    }

    /// Spawn a goroutine on this runtime. Panics if no stack can be mapped (see
    /// [`crate::Builder::spawn_on`] for the fallible form).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match spawn_on(&self.sched, f, None, None) {
            Ok(h) => h,
            Err(e) => panic!("gort: cannot spawn a goroutine: {e}"),
        }
    }

    /// Stop every thread of this runtime and unmap its stacks (see the module docs for what
    /// happens to goroutines that have not finished).
    pub fn shutdown(self) {
        drop(self)
    }

    /// GOMAXPROCS of this runtime.
    pub fn procs(&self) -> usize {
        self.sched.procs() as usize
    }

    /// Change GOMAXPROCS; returns the previous value. `n == 0` only queries.
    pub fn set_max_procs(&self, n: usize) -> usize {
        set_procs(&self.sched, n)
    }

    /// Counters of this runtime.
    pub fn stats(&self) -> crate::Stats {
        crate::stats::collect(&self.sched)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.sched.shutdown();
    }
}

pub(crate) fn set_procs(s: &Sched, n: usize) -> usize {
    if n == 0 {
        return s.procs() as usize;
    }
    if n > MAX_PROCS {
        panic!("gort: set_max_procs({n}): GOMAXPROCS must be at most {MAX_PROCS}");
    }
    s.resize(n)
}

pub(crate) fn spawn_on<F, T>(
    s: &Sched,
    f: F,
    stack_size: Option<usize>,
    name: Option<Box<str>>,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // Acquire: pairs with the store in shutdown.
    if s.shutting_down.load(Ordering::Acquire) {
        return Err(io::Error::other("gort: the runtime is shut down"));
    }
    let size = stack_size.unwrap_or(s.stack_size);
    let cell = Arc::new(TaskCell::new(f));
    let task: Arc<dyn crate::sched::task::Task> = cell.clone();
    let id = schedule::spawn(s, task, size, name)?;
    Ok(JoinHandle { target: cell, id })
}

static DEFAULT: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The default runtime (configured from the environment), created on first use.
pub(crate) fn default_runtime() -> &'static Runtime {
    match try_default_runtime() {
        Ok(rt) => rt,
        Err(e) => panic!("{e}"),
    }
}

/// The default runtime, or the error that stops it from being built (a malformed
/// environment variable, named in the message).
pub(crate) fn try_default_runtime() -> Result<&'static Runtime, &'static str> {
    match DEFAULT.get_or_init(|| RuntimeBuilder::default().build().map_err(|e| e.to_string())) {
        Ok(rt) => Ok(rt),
        Err(e) => Err(e.as_str()),
    }
}

/// Run `f` with the scheduler of the calling goroutine, or the default one.
pub(crate) fn with_current<R>(f: impl FnOnce(&Sched) -> R) -> R {
    let m = current_m();
    if !m.is_null() {
        // SAFETY: this thread's M; its scheduler outlives it.
        return f(unsafe { &(*m).sched });
    }
    f(&default_runtime().sched)
}
