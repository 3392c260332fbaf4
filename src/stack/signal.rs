//! Stack-overflow diagnosis: the process-wide SIGSEGV/SIGBUS handler, per-thread alternate
//! signal stacks, and the async-signal-safe fatal-error writer.
//!
//! # Protocol
//!
//! A goroutine that runs past the bottom of its stack touches the guard page below it and
//! the kernel delivers SIGSEGV to its M. The handler cannot run on the overflowed stack, so
//! every M owns an [`AltStack`] and the handler is installed with `SA_ONSTACK`. The handler:
//!
//! 1. asks the scheduler which goroutine this thread runs
//!    (`crate::sched::signal_current_goroutine`, async-signal-safe);
//! 2. if the fault was raised by the kernel (not sent with `kill`) and its address lies in
//!    that goroutine's guard page, or a little below it ([`BELOW_GUARD_SLACK`]: C code built
//!    without stack probes may step over the guard with one big frame), it writes
//!    `gort: fatal: goroutine N overflowed its stack (size S)` and aborts;
//! 3. otherwise the fault is not ours, and it *chains* to the handler that was installed
//!    before (std installs one at start-up to report overflows of std threads' stacks):
//!    - a `SA_SIGINFO` handler is called with the same three arguments, a plain one with
//!      the signal number; it then either aborts or (std's, for faults it does not own)
//!      resets the action to `SIG_DFL` and returns, and so do we;
//!    - `SIG_DFL`: we reset the action to `SIG_DFL` and return. The faulting instruction
//!      runs again, faults again, and the kernel now kills the process with the signal the
//!      fault really raised, so the exit status, core dump and parent's view are exactly
//!      those of a process without gort. A SIGSEGV sent by `kill` does not repeat itself on
//!      return, so it is raised again (it stays pending until the handler returns);
//!    - `SIG_IGN`: the kernel never lets a synchronous fault be ignored (it forces the
//!      default action), so a real fault is treated as `SIG_DFL`; a sent signal is ignored.
//!
//! Everything reachable from the handler is async-signal-safe: no allocation, no locks, no
//! lazily-initialised thread-locals. Messages are formatted into a buffer on the (alternate)
//! stack and written with write(2); the process ends with abort(3), which POSIX lists as
//! async-signal-safe.
//!
//! # Rejected designs
//!
//! - *Diagnosing overflow from the interrupted stack pointer* (as Go does with `sp <
//!   stack.lo`): reading the SP out of the `ucontext` is per-architecture code, which lives
//!   under `src/arch`; with one guard page and stack probes the fault address alone is exact.
//! - *Not chaining* (replacing std's handler): main-thread and std-thread overflows would lose
//!   std's message, and unrelated crashes their true signal.
//! - *Guard detection with `sigsetjmp`/recovery*: an overflowed goroutine's state is lost;
//!   Go also treats stack exhaustion as fatal.

use std::cell::UnsafeCell;
use std::fmt::{self, Write};
use std::io;
use std::marker::PhantomData;
use std::mem::{self, MaybeUninit};
use std::ptr;

use super::{HumanSize, Stack, page_size, slab};
use crate::loom::{AtomicBool, Mutex, Ordering};

/// A fault this far below a goroutine's guard page still counts as an overflow of its stack.
/// Stack probes make Rust code hit the guard itself; this covers a single big frame of C code
/// compiled without `-fstack-clash-protection`. In a slab the memory below the guard is the
/// neighbouring stack, which is mapped and never faults, so the slack can only matter for a
/// slab's lowest stack and in mprotect mode.
const BELOW_GUARD_SLACK: usize = 64 * 1024;

/// The smallest alternate signal stack we install: room for the overflow handler and the
/// preemption handler with their kernel signal frames (which include the full vector state).
const ALTSTACK_MIN: usize = 64 * 1024;

/// The signature of a `SA_SIGINFO` handler.
type SigInfoHandler = unsafe extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);
/// The signature of a plain handler.
type PlainHandler = unsafe extern "C" fn(libc::c_int);

/// The signals the handler is installed for, in [`PREVIOUS`] order.
const SIGNALS: [libc::c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// The action that was installed for one of [`SIGNALS`] before ours.
struct Previous {
    /// Set (Release) once `action` is written; read (Acquire) by the handler.
    saved: AtomicBool,
    action: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: `action` is written once, under `INSTALLED`'s lock, before `saved` is set with
// Release; it is only read after `saved` was seen set with Acquire, and never written again.
unsafe impl Sync for Previous {}

static PREVIOUS: [Previous; 2] = [
    Previous {
        saved: AtomicBool::new(false),
        action: UnsafeCell::new(MaybeUninit::uninit()),
    },
    Previous {
        saved: AtomicBool::new(false),
        action: UnsafeCell::new(MaybeUninit::uninit()),
    },
];

/// Whether the handler is installed; the lock serialises installation.
static INSTALLED: Mutex<bool> = Mutex::new(false);

/// Installs the process-wide SIGSEGV/SIGBUS handler once (later calls return `Ok` at once),
/// `SA_SIGINFO | SA_ONSTACK`, all signals blocked while it runs, remembering the previous
/// handlers to chain to.
///
/// A handler some other library installs later replaces ours (and may chain back to it); one
/// installed concurrently with this call, between our reading the old action and setting
/// ours, would be lost. gort calls this at runtime start.
pub(crate) fn install_overflow_handler() -> io::Result<()> {
    let mut installed = INSTALLED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *installed {
        return Ok(());
    }
    // The handler must not be the first to ask for the page size.
    page_size();
    for (signal, previous) in SIGNALS.into_iter().zip(&PREVIOUS) {
        // Not yet saved (an earlier attempt may have failed between the two sigaction calls).
        // Relaxed: the flag is only written under `INSTALLED`'s lock, which we hold.
        if !previous.saved.load(Ordering::Relaxed) {
            let mut old = MaybeUninit::<libc::sigaction>::zeroed();
            // SAFETY: with a null new action, sigaction only writes the current one to `old`.
            let ret = unsafe { libc::sigaction(signal, ptr::null(), old.as_mut_ptr()) };
            if ret != 0 {
                return Err(sigaction_error(signal));
            }
            // SAFETY: `saved` is false and we hold the lock, so nobody reads or writes
            // `action` concurrently (the handler reads it only once `saved` is set).
            unsafe { *previous.action.get() = old };
            // Release: publishes `action` to the handler's Acquire load in `chain`.
            previous.saved.store(true, Ordering::Release);
        }
        // SAFETY: an all-zero sigaction is valid (empty flags, SIG_DFL); the mask is filled
        // by sigfillset below.
        let mut action: libc::sigaction = unsafe { mem::zeroed() };
        action.sa_sigaction = overflow_handler as SigInfoHandler as libc::sighandler_t;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: sigfillset writes the mask we pass.
        unsafe { libc::sigfillset(&mut action.sa_mask) };
        // SAFETY: `action` is fully initialised and its handler is a valid SA_SIGINFO handler
        // for the whole life of the process.
        let ret = unsafe { libc::sigaction(signal, &action, ptr::null_mut()) };
        if ret != 0 {
            return Err(sigaction_error(signal));
        }
    }
    *installed = true;
    Ok(())
}

fn sigaction_error(signal: libc::c_int) -> io::Error {
    let err = io::Error::last_os_error();
    io::Error::new(
        err.kind(),
        format!("cannot install the stack-overflow handler for signal {signal}: {err}"),
    )
}

/// The SIGSEGV/SIGBUS handler. See the module essay for the protocol.
///
/// Async-signal-safe.
///
/// # Safety
///
/// Only the kernel calls this, as an `SA_SIGINFO` handler, with valid `info` and `context`.
unsafe extern "C" fn overflow_handler(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // si_code > 0: raised by the kernel for a fault, so `addr` is the faulting address.
    let goroutine = if code > 0 { current_goroutine() } else { None };
    if let Some((id, stack)) = goroutine.filter(|(_, stack)| !stack.is_null()) {
        // SAFETY: the scheduler guarantees the running goroutine's stack outlives it, and
        // the goroutine cannot go away while its thread is in this handler.
        let stack = unsafe { &*stack };
        if is_overflow(addr, stack) {
            report_overflow(id, stack, addr);
        }
    }
    // SAFETY: forwarded unchanged from the kernel.
    unsafe { chain(signal, info, context) };
}

/// Whether a fault at `addr` is `stack` running out: in its guard page or a little below.
///
/// Async-signal-safe.
pub(super) fn is_overflow(addr: usize, stack: &Stack) -> bool {
    let guard = stack.guard();
    guard.start.saturating_sub(BELOW_GUARD_SLACK) <= addr && addr < guard.end
}

/// The goroutine running on this thread, if any.
///
/// Async-signal-safe.
fn current_goroutine() -> Option<(u64, *const Stack)> {
    #[cfg(test)]
    {
        let (id, stack) = tests_hook::CURRENT.with(std::cell::Cell::get);
        if !stack.is_null() {
            return Some((id, stack));
        }
    }
    crate::sched::signal_current_goroutine()
}

/// Prints the overflow diagnosis and aborts.
///
/// Async-signal-safe.
fn report_overflow(id: u64, stack: &Stack, addr: usize) -> ! {
    let guard = stack.guard();
    let mut out = SignalBuf::new();
    // Formatting into a fixed buffer cannot fail; a too-long message is truncated.
    let _ = write!(
        out,
        "gort: fatal: goroutine {id} overflowed its stack (size {})\n\
         gort: fault at {addr:#x}; guard page {:#x}..{:#x}, stack {:#x}..{:#x}; \
         give it a bigger stack (Builder::stack_size, GORT_STACK_KB)\n",
        HumanSize(stack.size()),
        guard.start,
        guard.end,
        stack.bottom(),
        stack.top() as usize,
    );
    out.write_to_stderr();
    // SAFETY: abort has no preconditions and is async-signal-safe.
    unsafe { libc::abort() }
}

/// Hands a fault that is not a goroutine overflow to the previous handler.
///
/// Async-signal-safe.
///
/// # Safety
///
/// The arguments must be the ones the kernel passed to [`overflow_handler`].
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let index = SIGNALS.iter().position(|&s| s == signal);
    let previous = index.map(|index| &PREVIOUS[index]);
    // Acquire: pairs with the Release store in `install_overflow_handler`, making `action`
    // visible.
    let action = match previous {
        // SAFETY: `saved` is set, so `action` was initialised and is never written again.
        Some(previous) if previous.saved.load(Ordering::Acquire) => unsafe {
            (*previous.action.get()).assume_init_ref()
        },
        _ => {
            // SAFETY: the kernel passed valid arguments.
            unsafe { default_action(signal, info) };
            return;
        }
    };
    let handler = action.sa_sigaction;
    let ours = overflow_handler as SigInfoHandler as libc::sighandler_t;
    if handler == libc::SIG_IGN {
        // SAFETY: the kernel passed a valid siginfo.
        if unsafe { (*info).si_code } <= 0 {
            return; // a sent signal the process chose to ignore
        }
        // SAFETY: the kernel passed valid arguments.
        unsafe { default_action(signal, info) };
    } else if handler == libc::SIG_DFL || handler == ours {
        // SAFETY: the kernel passed valid arguments.
        unsafe { default_action(signal, info) };
    } else if action.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous owner installed this value as an SA_SIGINFO handler, so it is
        // a function of that signature; it gets the kernel's own arguments.
        unsafe {
            let handler = mem::transmute::<libc::sighandler_t, SigInfoHandler>(handler);
            handler(signal, info, context);
        }
    } else {
        // SAFETY: the previous owner installed this value as a plain handler.
        unsafe {
            let handler = mem::transmute::<libc::sighandler_t, PlainHandler>(handler);
            handler(signal);
        }
    }
}

/// Restores `SIG_DFL` so that the signal, delivered again, takes its default action: a
/// kernel fault repeats by itself when the handler returns; a sent signal is raised again
/// (it stays pending until the handler returns, as all signals are blocked in it).
///
/// Async-signal-safe.
///
/// # Safety
///
/// `info` must be the siginfo the kernel passed to the handler.
unsafe fn default_action(signal: libc::c_int, info: *mut libc::siginfo_t) {
    // SAFETY: an all-zero sigaction is SIG_DFL with no flags and an empty mask.
    let action: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: installs SIG_DFL; sigaction is async-signal-safe.
    unsafe { libc::sigaction(signal, &action, ptr::null_mut()) };
    // SAFETY: the kernel passed a valid siginfo.
    if unsafe { (*info).si_code } <= 0 {
        // SAFETY: raise is async-signal-safe.
        unsafe { libc::raise(signal) };
    }
}

/// Prints `gort: fatal: <message>` to stderr and aborts.
///
/// Async-signal-safe as long as `message` only formats integers and strings: it formats
/// into a buffer on the stack and writes it with write(2).
pub(crate) fn fatal(message: fmt::Arguments<'_>) -> ! {
    let mut out = SignalBuf::new();
    // Formatting into a fixed buffer cannot fail; a too-long message is truncated.
    let _ = writeln!(out, "gort: fatal: {message}");
    out.write_to_stderr();
    // SAFETY: abort has no preconditions and is async-signal-safe.
    unsafe { libc::abort() }
}

/// A fixed buffer to format a message into without allocating.
///
/// Async-signal-safe.
struct SignalBuf {
    bytes: [u8; 512],
    len: usize,
}

impl SignalBuf {
    fn new() -> SignalBuf {
        SignalBuf {
            bytes: [0; 512],
            len: 0,
        }
    }

    /// Writes the buffer to stderr with write(2), retrying partial writes and EINTR.
    fn write_to_stderr(&self) {
        let mut rest = &self.bytes[..self.len];
        while !rest.is_empty() {
            // SAFETY: `rest` is a valid readable buffer of that length.
            let ret = unsafe { libc::write(libc::STDERR_FILENO, rest.as_ptr().cast(), rest.len()) };
            match usize::try_from(ret) {
                Ok(written) if written > 0 => rest = &rest[written..],
                // EINTR: retry. Anything else (stderr closed, full disk): give up, we are
                // about to abort anyway.
                _ if ret < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => {}
                _ => return,
            }
        }
    }
}

impl Write for SignalBuf {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let room = self.bytes.len() - self.len;
        let n = text.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&text.as_bytes()[..n]);
        self.len += n;
        if n < text.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// An alternate signal stack for the calling thread, on which the overflow handler (and the
/// preemption handler) runs. Each M installs one at start: Ms are raw pthreads, so nobody
/// else does. Dropping it restores the thread's previous alternate stack (none, for an M)
/// and unmaps it.
///
/// Not `Send`: `sigaltstack` is per thread, so it must be dropped on the thread that
/// installed it.
pub(crate) struct AltStack {
    /// Start of the mapping: the guard page, then the stack.
    base: usize,
    /// Bytes of the mapping.
    len: usize,
    /// The alternate stack this thread had before (usually `SS_DISABLE`).
    previous: libc::stack_t,
    _per_thread: PhantomData<*mut ()>,
}

impl AltStack {
    /// Maps `max(64 KiB, SIGSTKSZ, 4 x AT_MINSIGSTKSZ)` bytes (rounded to pages) above a guard
    /// page and makes them this thread's alternate signal stack.
    pub(crate) fn install() -> io::Result<AltStack> {
        let page = page_size();
        let size = altstack_size().next_multiple_of(page);
        let len = size + page;
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing.
        let addr = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(
                err.kind(),
                format!(
                    "cannot map a {} alternate signal stack: mmap failed: {err}",
                    HumanSize(size)
                ),
            ));
        }
        let base = addr as usize;
        let unmap = || {
            // SAFETY: the mapping was made above and is not in use.
            unsafe { libc::munmap(addr, len) };
        };
        // The kernel's best guard; GORT_STACK_GUARD concerns goroutine stacks only.
        let mode = match slab::kernel_guard_mode() {
            Ok(mode) => mode,
            Err(err) => {
                unmap();
                return Err(err);
            }
        };
        // SAFETY: the first page of our fresh mapping, which nothing uses.
        if let Err((call, err)) = unsafe { slab::install_guard(base, page, mode) } {
            unmap();
            return Err(io::Error::new(
                err.kind(),
                format!("cannot guard an alternate signal stack: {call} failed: {err}"),
            ));
        }
        let stack = libc::stack_t {
            ss_sp: (base + page) as *mut libc::c_void,
            ss_flags: 0,
            ss_size: size,
        };
        let mut previous = MaybeUninit::<libc::stack_t>::zeroed();
        // SAFETY: `stack` describes mapped, writable memory that stays mapped until drop,
        // which restores `previous` first; sigaltstack writes `previous`.
        let ret = unsafe { libc::sigaltstack(&stack, previous.as_mut_ptr()) };
        if ret != 0 {
            let err = io::Error::last_os_error();
            unmap();
            return Err(io::Error::new(
                err.kind(),
                format!("sigaltstack failed: {err}"),
            ));
        }
        Ok(AltStack {
            base,
            len,
            // SAFETY: sigaltstack succeeded, so it wrote the previous stack.
            previous: unsafe { previous.assume_init() },
            _per_thread: PhantomData,
        })
    }
}

/// Bytes the alternate stack needs: the handlers' own frames plus the kernel's signal frame,
/// whose size depends on the CPU's vector state (AT_MINSIGSTKSZ, 0 if the kernel is silent).
fn altstack_size() -> usize {
    // SAFETY: getauxval has no preconditions.
    let kernel_min = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    ALTSTACK_MIN
        .max(libc::SIGSTKSZ)
        .max(kernel_min.saturating_mul(4))
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let ours = (self.base + page_size()) as *mut libc::c_void;
        let mut current = MaybeUninit::<libc::stack_t>::zeroed();
        // SAFETY: with a null new stack, sigaltstack only writes the current one.
        let ret = unsafe { libc::sigaltstack(ptr::null(), current.as_mut_ptr()) };
        // SAFETY: on success sigaltstack wrote it; the zeroed value is valid anyway.
        let current = unsafe { current.assume_init() };
        if ret == 0 && current.ss_sp == ours {
            if current.ss_flags & libc::SS_ONSTACK != 0 {
                fatal(format_args!(
                    "an alternate signal stack was dropped while a handler ran on it"
                ));
            }
            let restore = if self.previous.ss_flags & libc::SS_DISABLE != 0 {
                libc::stack_t {
                    ss_sp: ptr::null_mut(),
                    ss_flags: libc::SS_DISABLE,
                    ss_size: 0,
                }
            } else {
                libc::stack_t {
                    ss_flags: 0,
                    ..self.previous
                }
            };
            // SAFETY: `restore` disables the alternate stack or names the one this thread
            // had before, which its owner still keeps mapped.
            if unsafe { libc::sigaltstack(&restore, ptr::null_mut()) } != 0 {
                fatal(format_args!(
                    "sigaltstack could not restore the previous alternate stack: {}",
                    io::Error::last_os_error()
                ));
            }
        }
        // SAFETY: the mapping is ours and no longer this thread's alternate stack (or was
        // replaced by someone else's), so no handler runs on it.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

/// Unit tests run threads on a `Stack` without a scheduler; they say so here.
#[cfg(test)]
pub(super) mod tests_hook {
    use super::Stack;
    use std::cell::Cell;

    thread_local! {
        /// Const-initialised without a destructor, so reading it is async-signal-safe.
        pub(in crate::stack) static CURRENT: Cell<(u64, *const Stack)> =
            const { Cell::new((0, std::ptr::null())) };
    }
}
