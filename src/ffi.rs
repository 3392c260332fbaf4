//! The C ABI: every function declared in `include/gort.h`, for C programs that link
//! `libgort.a` (`-lgort -lpthread -ldl -lm`).
//!
//! # Conventions (the header repeats them for its readers)
//! * Every function returns an `int`: `0` on success, a negative errno value on failure
//!   (`-EINVAL` for a NULL pointer or a bad argument, `-EPIPE` for a closed channel,
//!   `-EAGAIN` for a `try_` that would block, `-ETIMEDOUT`, `-EPERM` for unlocking an
//!   unlocked mutex, `-ENOMEM`/`-EAGAIN` when no stack or thread can be had). The few that
//!   cannot fail return `void` or a value.
//! * Out-parameters are written only on success; every pointer is checked for NULL first.
//! * No panic crosses the boundary: each export runs inside `boundary`, which turns a
//!   panic into a message on stderr and `-ENOTRECOVERABLE` (a runtime that cannot be built
//!   from the environment — say `GOMAXPROCS=abc` — is reported that way, naming the variable).
//! * Objects come in `_new`/`_free` pairs. Freeing an object another goroutine is still
//!   using is undefined, as for `pthread_mutex_destroy`.
//! * Goroutines started from C own their floating-point control state (MXCSR and the x87
//!   control word; FPCR on aarch64): C may legally call `fesetround`, and the psABI says
//!   that mode survives calls, so each C goroutine keeps its own across switches (see
//!   `src/arch/mod.rs`, "FP control belongs to the thread unless a context owns it").
//!   Rust goroutines do not pay for it.
//!
//! Channels carry elements of a size fixed at creation, copied in and out as bytes (Go's
//! `chan T` for a C type `T`): up to 32 bytes (`INLINE`) travel inside the channel's slot,
//! larger ones in one heap block per element.

use std::ffi::{c_char, c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use crate::chan::{self, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

/// A C goroutine body: `void f(void *arg)`.
pub type GortFn = Option<unsafe extern "C" fn(*mut c_void)>;

/// Runs `f`; a panic becomes a message naming `func` and `-ENOTRECOVERABLE`.
fn boundary(func: &str, f: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(rc) => rc,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            eprintln!("gort: {func}: {msg}");
            -libc::ENOTRECOVERABLE
        }
    }
}

/// Make the running goroutine's context own its FP control state from now on (it holds the
/// ABI defaults at this point: a switch into a non-owning context loads them).
fn own_fp_control() {
    let g = crate::sched::m::current_g();
    if !g.is_null() {
        // SAFETY: the running G's context is written only by switches away from it, and we
        // are that G, running: no switch can touch it while we set the flag.
        unsafe { (*g).ctx.own_fp_control() };
    }
}

/// The negative errno of an `io::Error` (or `-EIO` when it carries none).
fn neg_errno(e: &std::io::Error) -> c_int {
    -e.raw_os_error().unwrap_or(libc::EIO)
}

/// A C function pointer and its argument, sent to the goroutine that calls it.
struct Call {
    f: unsafe extern "C" fn(*mut c_void),
    arg: *mut c_void,
}

// SAFETY: the C caller hands `arg` to another goroutine, which is exactly what `gort_go`
// documents; what `arg` points to and its synchronisation are the caller's contract, as
// with `pthread_create`.
unsafe impl Send for Call {}

impl Call {
    /// Body of a C goroutine: take ownership of this context's FP control, then call.
    /// Call `f(arg)` on the calling context as it is (`gort_syscall`).
    fn call(self) {
        // SAFETY: `f` is the non-null function the C caller passed with `arg`, to be called
        // once with it (the contract of gort_syscall).
        unsafe { (self.f)(self.arg) }
    }

    fn run(self) {
        own_fp_control();
        // SAFETY: `f` is the non-null function the C caller passed with `arg`, to be called
        // once with it (the contract of gort_run/gort_go).
        unsafe { (self.f)(self.arg) }
    }
}

/// `int gort_run(void (*f)(void *), void *arg)`: run `f(arg)` as a goroutine on the default
/// runtime (configured from `GOMAXPROCS`/`GORT_*`) and wait for it to return.
#[unsafe(no_mangle)]
pub extern "C" fn gort_run(f: GortFn, arg: *mut c_void) -> c_int {
    boundary("gort_run", || {
        let Some(f) = f else { return -libc::EINVAL };
        let rt = match crate::runtime::try_default_runtime() {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("{e}");
                return -libc::EINVAL;
            }
        };
        let call = Call { f, arg };
        rt.block_on(move || call.run());
        0
    })
}

/// `int gort_go(void (*f)(void *), void *arg)`: start `f(arg)` as a goroutine (on the calling
/// goroutine's runtime, or the default one) and return at once. Join it with a wait group
/// or a channel, as in Go.
#[unsafe(no_mangle)]
pub extern "C" fn gort_go(f: GortFn, arg: *mut c_void) -> c_int {
    boundary("gort_go", || {
        let Some(f) = f else { return -libc::EINVAL };
        if crate::sched::m::current_m().is_null()
            && let Err(e) = crate::runtime::try_default_runtime()
        {
            eprintln!("{e}");
            return -libc::EINVAL;
        }
        let call = Call { f, arg };
        match crate::Builder::new().spawn(move || call.run()) {
            Ok(_detached) => 0,
            Err(e) => neg_errno(&e),
        }
    })
}

/// `void gort_yield(void)`: let other goroutines run.
#[unsafe(no_mangle)]
pub extern "C" fn gort_yield() {
    boundary("gort_yield", || {
        crate::yield_now();
        0
    });
}

/// `int gort_sleep_ns(int64_t ns)`: park the calling goroutine (block a plain thread) for at
/// least `ns` nanoseconds. `-EINVAL` if `ns` is negative.
#[unsafe(no_mangle)]
pub extern "C" fn gort_sleep_ns(ns: i64) -> c_int {
    boundary("gort_sleep_ns", || {
        if ns < 0 {
            return -libc::EINVAL;
        }
        crate::sleep(Duration::from_nanos(ns as u64));
        0
    })
}

/// `int gort_syscall(gort_fn f, void *arg)`: run `f(arg)`, which may block in the kernel (a
/// blocking read, a C library call), without stalling other goroutines: the caller's P goes
/// to another thread if `f` lasts (`gort::syscall`). On a plain thread, just calls `f`.
/// `-EINVAL` if `f` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn gort_syscall(f: GortFn, arg: *mut c_void) -> c_int {
    boundary("gort_syscall", || {
        let Some(f) = f else { return -libc::EINVAL };
        let call = Call { f, arg };
        crate::syscall(move || call.call());
        0
    })
}

/// `void gort_lock_os_thread(void)`: wire the calling goroutine to its OS thread
/// (`gort::lock_os_thread`; nests). No-op on a plain thread.
#[unsafe(no_mangle)]
pub extern "C" fn gort_lock_os_thread() {
    boundary("gort_lock_os_thread", || {
        crate::lock_os_thread();
        0
    });
}

/// `void gort_unlock_os_thread(void)`: undo one `gort_lock_os_thread` (no-op without one).
#[unsafe(no_mangle)]
pub extern "C" fn gort_unlock_os_thread() {
    boundary("gort_unlock_os_thread", || {
        crate::unlock_os_thread();
        0
    });
}

/// `uint64_t gort_current_id(void)`: the calling goroutine's id, 0 on a plain thread.
#[unsafe(no_mangle)]
pub extern "C" fn gort_current_id() -> u64 {
    crate::current_id()
}

/// `int gort_set_max_procs(int n, int *old)`: set GOMAXPROCS (`n` = 0 only queries); the
/// previous value goes to `*old` if `old` is not NULL. `-EINVAL` outside 0..=1024.
///
/// # Safety
/// `old` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_set_max_procs(n: c_int, old: *mut c_int) -> c_int {
    boundary("gort_set_max_procs", || {
        if !(0..=crate::sched::MAX_PROCS as c_int).contains(&n) {
            return -libc::EINVAL;
        }
        let prev = crate::set_max_procs(n as usize);
        if !old.is_null() {
            // SAFETY: non-null, and the caller promises it points to a writable int.
            unsafe { *old = prev as c_int };
        }
        0
    })
}

// ---------------------------------------------------------------------------------------------
// Channels.

/// Elements up to this many bytes travel inline in the channel's slot.
const INLINE: usize = 32;

/// One element's bytes.
enum Elem {
    Inline([u8; INLINE]),
    Boxed(Box<[u8]>),
}

/// `gort_chan`: a channel of `size`-byte elements (the C side sees an opaque pointer).
pub struct GortChan {
    size: usize,
    tx: chan::Sender<Elem>,
    rx: chan::Receiver<Elem>,
}

impl GortChan {
    /// Copy `size` bytes from `src` into an element.
    ///
    /// # Safety
    /// `src` must be valid for reads of `self.size` bytes.
    unsafe fn load(&self, src: *const c_void) -> Elem {
        if self.size <= INLINE {
            let mut b = [0u8; INLINE];
            // SAFETY: the caller's contract; `b` has room for `size` ≤ INLINE bytes.
            unsafe { std::ptr::copy_nonoverlapping(src as *const u8, b.as_mut_ptr(), self.size) };
            Elem::Inline(b)
        } else {
            // SAFETY: the caller's contract.
            let s = unsafe { std::slice::from_raw_parts(src as *const u8, self.size) };
            Elem::Boxed(s.into())
        }
    }

    /// Copy an element's bytes to `dst`.
    ///
    /// # Safety
    /// `dst` must be valid for writes of `self.size` bytes.
    unsafe fn store(&self, e: &Elem, dst: *mut c_void) {
        let src = match e {
            Elem::Inline(b) => b.as_ptr(),
            Elem::Boxed(b) => b.as_ptr(),
        };
        // SAFETY: the caller's contract; the element holds `size` bytes.
        unsafe { std::ptr::copy_nonoverlapping(src, dst as *mut u8, self.size) };
    }
}

/// Turn a C channel pointer into a reference, or `None` for NULL.
///
/// # Safety
/// Non-null `c` must come from `gort_chan_new` and not be freed.
unsafe fn chan_ref<'a>(c: *const GortChan) -> Option<&'a GortChan> {
    // SAFETY: the caller's contract.
    unsafe { c.as_ref() }
}

/// `int gort_chan_new(size_t elem_size, size_t cap, gort_chan **out)`: a channel of
/// `elem_size`-byte elements buffering `cap` of them (`cap` = 0: unbuffered rendezvous).
/// `elem_size` may be 0 (a signal channel: `elem` pointers may then be NULL).
///
/// # Safety
/// `out` is NULL or a writable pointer slot.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_new(
    elem_size: usize,
    cap: usize,
    out: *mut *mut GortChan,
) -> c_int {
    boundary("gort_chan_new", || {
        if out.is_null() || elem_size > isize::MAX as usize {
            return -libc::EINVAL;
        }
        let (tx, rx) = chan::bounded(cap);
        let c = Box::new(GortChan {
            size: elem_size,
            tx,
            rx,
        });
        // SAFETY: non-null, and the caller promises a writable pointer slot.
        unsafe { *out = Box::into_raw(c) };
        0
    })
}

/// `int gort_chan_free(gort_chan *c)`: free a channel nobody uses any more (buffered
/// elements are dropped).
///
/// # Safety
/// `c` is NULL or comes from `gort_chan_new` and is freed once, after its last use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_free(c: *mut GortChan) -> c_int {
    boundary("gort_chan_free", || {
        if c.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: the caller's contract: ours since gort_chan_new, and no longer used.
        drop(unsafe { Box::from_raw(c) });
        0
    })
}

/// A NULL element pointer is allowed only for zero-size elements.
fn bad_elem(c: &GortChan, p: *const c_void) -> bool {
    p.is_null() && c.size != 0
}

/// `int gort_chan_send(gort_chan *c, const void *elem)`: send a copy of `*elem`, parking
/// until a receiver or buffer space takes it. `-EPIPE` if the channel is closed.
///
/// # Safety
/// `c` as for [`gort_chan_free`]; `elem` readable for the element size.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_send(c: *const GortChan, elem: *const c_void) -> c_int {
    boundary("gort_chan_send", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if bad_elem(c, elem) {
            return -libc::EINVAL;
        }
        // SAFETY: `elem` is readable for `size` bytes (the caller's contract).
        let e = unsafe { c.load(elem) };
        match c.tx.send(e) {
            Ok(()) => 0,
            Err(_) => -libc::EPIPE,
        }
    })
}

/// `int gort_chan_try_send(gort_chan *c, const void *elem)`: send without waiting; `-EAGAIN`
/// if that would block, `-EPIPE` if closed.
///
/// # Safety
/// As for [`gort_chan_send`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_try_send(c: *const GortChan, elem: *const c_void) -> c_int {
    boundary("gort_chan_try_send", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if bad_elem(c, elem) {
            return -libc::EINVAL;
        }
        // SAFETY: as in gort_chan_send.
        let e = unsafe { c.load(elem) };
        match c.tx.try_send(e) {
            Ok(()) => 0,
            Err(TrySendError::Full(_)) => -libc::EAGAIN,
            Err(TrySendError::Disconnected(_)) => -libc::EPIPE,
        }
    })
}

/// `int gort_chan_send_timeout(gort_chan *c, const void *elem, int64_t timeout_ns)`: as
/// `gort_chan_send`, giving up with `-ETIMEDOUT` after `timeout_ns` (≥ 0).
///
/// # Safety
/// As for [`gort_chan_send`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_send_timeout(
    c: *const GortChan,
    elem: *const c_void,
    timeout_ns: i64,
) -> c_int {
    boundary("gort_chan_send_timeout", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if bad_elem(c, elem) || timeout_ns < 0 {
            return -libc::EINVAL;
        }
        // SAFETY: as in gort_chan_send.
        let e = unsafe { c.load(elem) };
        match c
            .tx
            .send_timeout(e, Duration::from_nanos(timeout_ns as u64))
        {
            Ok(()) => 0,
            Err(SendTimeoutError::Timeout(_)) => -libc::ETIMEDOUT,
            Err(SendTimeoutError::Disconnected(_)) => -libc::EPIPE,
        }
    })
}

/// `int gort_chan_recv(gort_chan *c, void *out)`: receive into `*out`, parking until an
/// element arrives. `-EPIPE` once the channel is closed and drained (`*out` untouched).
///
/// # Safety
/// `c` as for [`gort_chan_free`]; `out` writable for the element size.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_recv(c: *const GortChan, out: *mut c_void) -> c_int {
    boundary("gort_chan_recv", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if bad_elem(c, out) {
            return -libc::EINVAL;
        }
        match c.rx.recv() {
            Ok(e) => {
                // SAFETY: `out` is writable for `size` bytes (the caller's contract).
                unsafe { c.store(&e, out) };
                0
            }
            Err(_) => -libc::EPIPE,
        }
    })
}

/// `int gort_chan_try_recv(gort_chan *c, void *out)`: receive without waiting; `-EAGAIN` if
/// nothing is ready, `-EPIPE` if closed and drained.
///
/// # Safety
/// As for [`gort_chan_recv`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_try_recv(c: *const GortChan, out: *mut c_void) -> c_int {
    boundary("gort_chan_try_recv", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if bad_elem(c, out) {
            return -libc::EINVAL;
        }
        match c.rx.try_recv() {
            Ok(e) => {
                // SAFETY: as in gort_chan_recv.
                unsafe { c.store(&e, out) };
                0
            }
            Err(TryRecvError::Empty) => -libc::EAGAIN,
            Err(TryRecvError::Disconnected) => -libc::EPIPE,
        }
    })
}

/// `int gort_chan_recv_timeout(gort_chan *c, void *out, int64_t timeout_ns)`: as
/// `gort_chan_recv`, giving up with `-ETIMEDOUT` after `timeout_ns` (≥ 0).
///
/// # Safety
/// As for [`gort_chan_recv`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_recv_timeout(
    c: *const GortChan,
    out: *mut c_void,
    timeout_ns: i64,
) -> c_int {
    boundary("gort_chan_recv_timeout", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if bad_elem(c, out) || timeout_ns < 0 {
            return -libc::EINVAL;
        }
        match c.rx.recv_timeout(Duration::from_nanos(timeout_ns as u64)) {
            Ok(e) => {
                // SAFETY: as in gort_chan_recv.
                unsafe { c.store(&e, out) };
                0
            }
            Err(RecvTimeoutError::Timeout) => -libc::ETIMEDOUT,
            Err(RecvTimeoutError::Disconnected) => -libc::EPIPE,
        }
    })
}

/// `int gort_chan_close(gort_chan *c)`: close the channel (Go's `close`): parked senders
/// fail with `-EPIPE`, receivers drain what is buffered and then get `-EPIPE`. `-EPIPE` if
/// it was already closed (Go panics there).
///
/// # Safety
/// `c` as for [`gort_chan_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_close(c: *const GortChan) -> c_int {
    boundary("gort_chan_close", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if c.tx.close() { 0 } else { -libc::EPIPE }
    })
}

/// `int gort_chan_len(const gort_chan *c, size_t *len)`: elements buffered now.
///
/// # Safety
/// `c` as for [`gort_chan_free`]; `len` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_chan_len(c: *const GortChan, len: *mut usize) -> c_int {
    boundary("gort_chan_len", || {
        // SAFETY: the caller's contract.
        let Some(c) = (unsafe { chan_ref(c) }) else {
            return -libc::EINVAL;
        };
        if len.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: non-null and writable (the caller's contract).
        unsafe { *len = c.rx.len() };
        0
    })
}

// ---------------------------------------------------------------------------------------------
// Wait groups and mutexes.

/// `gort_wg`: Go's `sync.WaitGroup`.
pub type GortWg = crate::sync::WaitGroup;

/// `int gort_wg_new(gort_wg **out)`.
///
/// # Safety
/// `out` is NULL or a writable pointer slot.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_wg_new(out: *mut *mut GortWg) -> c_int {
    boundary("gort_wg_new", || {
        if out.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: non-null, and the caller promises a writable pointer slot.
        unsafe { *out = Box::into_raw(Box::new(GortWg::new())) };
        0
    })
}

/// `int gort_wg_free(gort_wg *wg)`.
///
/// # Safety
/// `wg` is NULL or comes from `gort_wg_new` and is freed once, after its last use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_wg_free(wg: *mut GortWg) -> c_int {
    boundary("gort_wg_free", || {
        if wg.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(wg) });
        0
    })
}

/// `int gort_wg_add(gort_wg *wg, int delta)`: `-EINVAL` (counter unchanged) if it would go
/// below zero.
///
/// # Safety
/// `wg` as for [`gort_wg_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_wg_add(wg: *const GortWg, delta: c_int) -> c_int {
    // SAFETY: the caller's contract.
    let Some(wg) = (unsafe { wg.as_ref() }) else {
        return -libc::EINVAL;
    };
    if delta < 0 && wg.count() < -delta {
        return -libc::EINVAL;
    }
    boundary("gort_wg_add", || {
        wg.add(delta);
        0
    })
}

/// `int gort_wg_done(gort_wg *wg)`: `gort_wg_add(wg, -1)`.
///
/// # Safety
/// `wg` as for [`gort_wg_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_wg_done(wg: *const GortWg) -> c_int {
    // SAFETY: the caller's contract, passed on.
    unsafe { gort_wg_add(wg, -1) }
}

/// `int gort_wg_wait(gort_wg *wg)`: park until the counter is zero.
///
/// # Safety
/// `wg` as for [`gort_wg_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_wg_wait(wg: *const GortWg) -> c_int {
    boundary("gort_wg_wait", || {
        // SAFETY: the caller's contract.
        let Some(wg) = (unsafe { wg.as_ref() }) else {
            return -libc::EINVAL;
        };
        wg.wait();
        0
    })
}

/// `gort_mutex`: Go's `sync.Mutex` (starvation mode included; any goroutine may unlock).
pub struct GortMutex(crate::sync::mutex::RawMutex);

/// `int gort_mutex_new(gort_mutex **out)`.
///
/// # Safety
/// `out` is NULL or a writable pointer slot.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_mutex_new(out: *mut *mut GortMutex) -> c_int {
    boundary("gort_mutex_new", || {
        if out.is_null() {
            return -libc::EINVAL;
        }
        let m = Box::new(GortMutex(crate::sync::mutex::RawMutex::new()));
        // SAFETY: non-null, and the caller promises a writable pointer slot.
        unsafe { *out = Box::into_raw(m) };
        0
    })
}

/// `int gort_mutex_free(gort_mutex *m)`: `-EBUSY` (not freed) while it is locked.
///
/// # Safety
/// `m` is NULL or comes from `gort_mutex_new` and is freed once, after its last use.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_mutex_free(m: *mut GortMutex) -> c_int {
    boundary("gort_mutex_free", || {
        // SAFETY: the caller's contract.
        let Some(r) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        if r.0.is_locked() {
            return -libc::EBUSY;
        }
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(m) });
        0
    })
}

/// `int gort_mutex_lock(gort_mutex *m)`: park until locked.
///
/// # Safety
/// `m` as for [`gort_mutex_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_mutex_lock(m: *const GortMutex) -> c_int {
    boundary("gort_mutex_lock", || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        m.0.lock();
        0
    })
}

/// `int gort_mutex_trylock(gort_mutex *m)`: `-EBUSY` if it is held.
///
/// # Safety
/// `m` as for [`gort_mutex_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_mutex_trylock(m: *const GortMutex) -> c_int {
    boundary("gort_mutex_trylock", || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        if m.0.try_lock() { 0 } else { -libc::EBUSY }
    })
}

/// `int gort_mutex_unlock(gort_mutex *m)`: `-EPERM` if it is not locked (Go aborts there).
///
/// # Safety
/// `m` as for [`gort_mutex_free`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_mutex_unlock(m: *const GortMutex) -> c_int {
    boundary("gort_mutex_unlock", || {
        // SAFETY: the caller's contract.
        let Some(m) = (unsafe { m.as_ref() }) else {
            return -libc::EINVAL;
        };
        if !m.0.try_unlock() {
            return -libc::EPERM;
        }
        0
    })
}

// ---------------------------------------------------------------------------------------------
// Statistics.

/// `gort_stats_t`: a snapshot of the runtime's counters (fields are only ever appended).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GortStats {
    /// GOMAXPROCS.
    pub procs: u64,
    /// Goroutines spawned and not finished.
    pub goroutines: u64,
    /// Goroutines spawned.
    pub spawned: u64,
    /// Goroutines finished.
    pub completed: u64,
    /// `yield` calls by goroutines.
    pub yields: u64,
    /// Goroutine parks.
    pub parks: u64,
    /// Successful steals.
    pub steals: u64,
    /// Timer callbacks run.
    pub timers_run: u64,
    /// OS threads (Ms) created.
    pub threads: u64,
    /// Goroutine stacks mapped, process-wide.
    pub stacks_mapped: u64,
}

/// `int gort_stats(gort_stats_t *out)`: counters of the calling goroutine's runtime (or the
/// default one).
///
/// # Safety
/// `out` is NULL or points to a writable `gort_stats_t`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_stats(out: *mut GortStats) -> c_int {
    boundary("gort_stats", || {
        if out.is_null() {
            return -libc::EINVAL;
        }
        let s = crate::stats();
        let v = GortStats {
            procs: s.procs as u64,
            goroutines: s.goroutines as u64,
            spawned: s.spawned,
            completed: s.completed,
            yields: s.yields,
            parks: s.parks,
            steals: s.steals,
            timers_run: s.timers_run,
            threads: s.threads,
            stacks_mapped: s.stacks_mapped as u64,
        };
        // SAFETY: non-null, and the caller promises a writable gort_stats_t.
        unsafe { *out = v };
        0
    })
}

/// `int gort_stats_text(char *buf, size_t len, size_t *needed)`: the runtime's one-screen
/// summary (`gort::stats()`'s `Display`), NUL-terminated, into `buf` if it fits in `len`
/// bytes; `*needed` (if not NULL) gets the size it takes, NUL included. `-ERANGE` (buffer
/// untouched) if it does not fit.
///
/// # Safety
/// `buf` writable for `len` bytes (or NULL with `len` 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn gort_stats_text(
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    boundary("gort_stats_text", || {
        let text = crate::stats().to_string();
        let n = text.len() + 1;
        if !needed.is_null() {
            // SAFETY: non-null and writable (the caller's contract).
            unsafe { *needed = n };
        }
        if buf.is_null() || len < n {
            return -libc::ERANGE;
        }
        // SAFETY: `buf` has room for `n` ≤ `len` bytes (the caller's contract).
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, text.len());
            *buf.add(text.len()) = 0;
        }
        0
    })
}
