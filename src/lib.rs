//! gort: Go's goroutine scheduler (the G/M/P model) for Rust and C programs on Linux.
//!
//! Goroutines are stackful green threads on small, demand-paged, guarded stacks. They are run
//! by Ms (OS threads), each holding one of GOMAXPROCS Ps (scheduling contexts with lock-free
//! local run queues); idle Ms steal work from busy Ps. A goroutine that blocks (on `join`, and
//! on the channels, locks and timers built on the same park/ready primitive) parks and frees
//! its thread for other goroutines.
//!
//! ```
//! let total = gort::run(|| {
//!     let handles: Vec<_> = (0..100u64).map(|i| gort::go(move || i)).collect();
//!     handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
//! });
//! assert_eq!(total, 4950);
//! ```
//!
//! Layout: `arch` (context switch, with the assembly in `asm/`), `stack` (mmap'd stacks),
//! `sched` (G, M, P, run queues, the scheduler loop, parking), `time` (per-P timer heaps,
//! sleep, timers, tickers), `chan` (channels and `select!`), `sync` (mutexes, condition
//! variables, wait groups that park goroutines), `local` (goroutine-local storage), `runtime`
//! (configuration, default runtime, shutdown), `stats`. See DESIGN.md for the architecture.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!("gort runs on Linux only");

pub(crate) mod loom;

#[cfg(not(loom))]
pub(crate) mod arch;
pub mod chan;
#[cfg(not(loom))]
pub mod ffi;
#[cfg(not(loom))]
pub mod local;
#[cfg(not(loom))]
pub mod net;
#[cfg(not(loom))]
pub(crate) mod netpoll;
#[cfg(all(test, loom))]
#[path = "netpoll/loom_models.rs"]
mod netpoll_loom_models;
#[cfg(not(loom))]
pub(crate) mod preempt;
#[cfg(not(loom))]
mod runtime;
pub(crate) mod sched;
#[cfg(not(loom))]
pub(crate) mod stack;
#[cfg(not(loom))]
mod stats;
pub mod sync;
#[cfg(not(loom))]
pub mod time;

#[cfg(not(loom))]
pub use api::*;

#[cfg(not(loom))]
mod api {
    pub use crate::preempt::{PreemptStats, no_preempt};
    pub use crate::runtime::{Preempt, Runtime, RuntimeBuilder};
    pub use crate::sched::task::{Abandoned, JoinHandle};
    pub use crate::stats::Stats;
    pub use crate::time::sleep;

    use crate::runtime::{default_runtime, spawn_on, with_current};
    use crate::sched::m::current_g;
    use std::io;

    /// Run `f` as a goroutine on the default runtime and wait for its result.
    ///
    /// The default runtime is configured from the environment (`GOMAXPROCS`, `GORT_*`; see
    /// [`RuntimeBuilder`]) and created on first use; a malformed variable makes this panic
    /// with a message naming it. A panic in `f` resumes in the caller.
    pub fn run<F, T>(f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        default_runtime().block_on(f)
    }

    /// Spawn a goroutine: on the calling goroutine's runtime, or on the default runtime when
    /// called from a plain thread.
    ///
    /// Panics only if no stack can be had (see [`Builder::spawn`] for the fallible form).
    pub fn go<F, T>(f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match with_current(|s| spawn_on(s, f, None, None)) {
            Ok(h) => h,
            Err(e) => panic!("gort::go: cannot spawn a goroutine: {e}"),
        }
    }

    /// Goroutine factory with options (Go has none; `std::thread::Builder`'s shape).
    #[derive(Debug, Default, Clone)]
    pub struct Builder {
        stack_size: Option<usize>,
        name: Option<String>,
    }

    impl Builder {
        /// A builder with the runtime's defaults.
        pub fn new() -> Builder {
            Builder::default()
        }

        /// Stack reservation for this goroutine, in bytes (rounded up to pages; at least one).
        pub fn stack_size(mut self, bytes: usize) -> Builder {
            self.stack_size = Some(bytes);
            self
        }

        /// A name, for diagnostics.
        pub fn name(mut self, name: impl Into<String>) -> Builder {
            self.name = Some(name.into());
            self
        }

        fn check(&self) -> io::Result<()> {
            if let Some(n) = self.stack_size {
                let page = crate::stack::page_size();
                if n < page {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "gort: stack size {n} bytes is too small: the minimum is one page ({page} bytes)"
                        ),
                    ));
                }
            }
            Ok(())
        }

        /// Spawn on the calling goroutine's runtime (or the default one). Fails with a clear
        /// error if no stack can be mapped (address space, `vm.max_map_count`, bad size).
        pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            self.check()?;
            let name = self.name.map(String::into_boxed_str);
            with_current(|s| spawn_on(s, f, self.stack_size, name))
        }

        /// Spawn on a given runtime.
        pub fn spawn_on<F, T>(self, rt: &Runtime, f: F) -> io::Result<JoinHandle<T>>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            self.check()?;
            let name = self.name.map(String::into_boxed_str);
            spawn_on(&rt.sched, f, self.stack_size, name)
        }
    }

    /// Let other goroutines run: the caller goes to the back of its P's run queue. On a plain
    /// thread, `std::thread::yield_now`.
    pub fn yield_now() {
        if !crate::sched::schedule::gosched() {
            std::thread::yield_now();
        }
    }

    /// The calling goroutine's id (unique in the process, never 0), or 0 on a plain thread.
    pub fn current_id() -> u64 {
        let g = current_g();
        if g.is_null() {
            0
        } else {
            // SAFETY: the running G is alive; its id does not change while it runs.
            unsafe { (*g).id }
        }
    }

    /// The calling goroutine's name (from [`Builder::name`]), if any.
    pub fn current_name() -> Option<String> {
        let g = current_g();
        if g.is_null() {
            return None;
        }
        // SAFETY: as in `current_id`.
        unsafe { (*g).name.as_deref().map(str::to_owned) }
    }

    /// Set GOMAXPROCS of the calling goroutine's runtime (or the default one); returns the
    /// previous value. `0` only queries (as Go's `runtime.GOMAXPROCS(0)`). Panics above 1024.
    ///
    /// Growing takes effect at once. Shrinking retires the surplus Ps at their next
    /// scheduling point (their queued goroutines move to the global queue).
    pub fn set_max_procs(n: usize) -> usize {
        with_current(|s| crate::runtime::set_procs(s, n))
    }

    /// Number of goroutines spawned and not yet finished (calling goroutine's runtime, or the
    /// default one).
    pub fn num_goroutines() -> usize {
        with_current(crate::sched::schedule::live_goroutines)
    }

    /// Counters of the calling goroutine's runtime (or the default one).
    pub fn stats() -> Stats {
        with_current(crate::stats::collect)
    }

    /// Run `f`, which may block in the kernel (a blocking `read(2)`, a C library call), without
    /// stalling other goroutines: the caller's P is frozen while `f` runs, and if `f` lasts
    /// longer than a sysmon tick (≥ 20 µs) while other goroutines wait, the P is handed to
    /// another thread (Go's `entersyscall`/`exitsyscall`). Returns `f`'s result; the goroutine
    /// may continue on another thread afterwards. Costs two uncontended atomic operations
    /// when `f` is short. On a plain thread (not a goroutine), just calls `f`.
    ///
    /// `f` runs on the calling thread; it may call back into gort (a runtime call that needs
    /// the P ends the syscall state first).
    ///
    /// **errno is per thread**: read it inside `f`. After `syscall` returns, the goroutine may
    /// be on another thread, whose errno is not the call's (Go returns errno from its syscall
    /// wrapper for the same reason).
    ///
    /// ```
    /// let pid = gort::run(|| gort::syscall(|| unsafe { libc::getpid() }));
    /// assert!(pid > 0);
    /// // A failing call: take errno with the result, inside the closure.
    /// let (r, err) = gort::run(|| {
    ///     gort::syscall(|| {
    ///         let r = unsafe { libc::close(-1) };
    ///         (r, std::io::Error::last_os_error())
    ///     })
    /// });
    /// assert_eq!((r, err.raw_os_error()), (-1, Some(libc::EBADF)));
    /// ```
    #[inline]
    pub fn syscall<R>(f: impl FnOnce() -> R) -> R {
        crate::sched::syscall::syscall(f)
    }

    /// Wire the calling goroutine to its current OS thread (Go's `runtime.LockOSThread`):
    /// until a matching [`unlock_os_thread`], it runs only on this thread, and the thread runs
    /// no other goroutine. Calls nest (the goroutine stays locked until as many unlocks).
    /// While the goroutine parks, its thread sleeps and its P runs other goroutines on another
    /// thread. If the goroutine returns while locked, its thread exits instead of running other
    /// goroutines (as in Go: the thread may carry state the goroutine changed). On a plain
    /// thread, does nothing.
    pub fn lock_os_thread() {
        crate::sched::syscall::lock_thread(false)
    }

    /// Undo one [`lock_os_thread`]. Without a matching lock, does nothing.
    pub fn unlock_os_thread() {
        crate::sched::syscall::unlock_thread(false)
    }
}
