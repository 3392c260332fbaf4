//! The OS side of the stack allocator: mapping slabs of guarded stacks, choosing the guard
//! mode once per process, and explaining mapping failures.
//!
//! See the module essay in `mod.rs` for the slab layout. Every system call here states its
//! EINTR policy: `mmap`, `munmap`, `mprotect` and `madvise` (all advices but
//! `MADV_GUARD_INSTALL`) never fail with EINTR; `MADV_GUARD_INSTALL` restarts itself unless a
//! fatal signal is pending, and is retried on EINTR anyway since it is idempotent.

use std::io::{self, Read};
use std::ptr;
use std::sync::OnceLock;

use super::{GuardMode, HumanSize, page_size, signal};

/// `madvise` advice that installs guard markers (Linux 6.13, uapi
/// `asm-generic/mman-common.h`); not in the libc crate yet.
pub(super) const MADV_GUARD_INSTALL: libc::c_int = 102;

/// The most stacks one slab holds: one bit each in [`Slab::used`].
pub(super) const MAX_SLOTS: usize = u64::BITS as usize;

/// A slab is sized to about this much address space (but holds 1..=[`MAX_SLOTS`] stacks):
/// 64 default-sized stacks, fewer big ones, so a huge `stack_size` does not reserve 64 times
/// its size at once.
const SLAB_TARGET_BYTES: usize = 32 << 20;

/// The variable that forces a guard mode: `mprotect`, `madvise`, or `auto`/unset.
const GUARD_ENV: &str = "GORT_STACK_GUARD";

/// Bytes of guard below each stack: one page. Stack probes touch every page of a big frame
/// in order, so the first access past the bottom always lands in it.
///
/// Async-signal-safe (see [`page_size`]).
pub(super) fn guard_len() -> usize {
    page_size()
}

/// One mapping holding `slots` stacks of one size, each above its own guard page.
pub(super) struct Slab {
    /// Start of the mapping (the guard page of slot 0).
    base: usize,
    /// Guard plus usable stack: the distance between consecutive slots.
    stride: usize,
    /// Number of slots, 1..=MAX_SLOTS.
    slots: usize,
    /// Bit `i` set: slot `i` belongs to a live `Stack`.
    used: u64,
}

/// A failed system call while preparing memory: which call, and the error.
type CallError = (&'static str, io::Error);

impl Slab {
    /// Maps a slab of stacks with `size` usable bytes each (a multiple of the page size).
    /// In mprotect mode a slab holds one stack, so freeing it can unmap both its VMAs.
    pub(super) fn map(size: usize, mode: GuardMode) -> io::Result<Slab> {
        let stride = size + guard_len();
        let slots = match mode {
            GuardMode::Mprotect => 1,
            GuardMode::MadviseGuard => (SLAB_TARGET_BYTES / stride).clamp(1, MAX_SLOTS),
        };
        let mapped = match Slab::map_slots(stride, slots, mode) {
            // A whole slab may not fit under RLIMIT_AS while one stack still does.
            Err((_, err)) if slots > 1 && err.raw_os_error() == Some(libc::ENOMEM) => {
                Slab::map_slots(stride, 1, mode)
            }
            result => result,
        };
        mapped.map_err(|(call, err)| explain(call, err, size, mode))
    }

    fn map_slots(stride: usize, slots: usize, mode: GuardMode) -> Result<Slab, CallError> {
        let len = stride.checked_mul(slots).ok_or((
            "mmap",
            io::Error::new(io::ErrorKind::InvalidInput, "slab size overflows"),
        ))?;
        // SAFETY: a new anonymous mapping at an address of the kernel's choosing; it replaces
        // nothing.
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
            return Err(("mmap", io::Error::last_os_error()));
        }
        let slab = Slab {
            base: addr as usize,
            stride,
            slots,
            used: 0,
        };
        if let Err(err) = slab.prepare(mode) {
            // SAFETY: the mapping was created above and nothing else knows of it.
            unsafe { slab.unmap() };
            return Err(err);
        }
        Ok(slab)
    }

    /// Advises the fresh mapping against huge pages and installs every guard page.
    fn prepare(&self, mode: GuardMode) -> Result<(), CallError> {
        // SAFETY: the range is exactly our own fresh mapping; the advice changes no contents.
        let ret = unsafe { libc::madvise(self.base as *mut _, self.len(), libc::MADV_NOHUGEPAGE) };
        // EINVAL: a kernel built without transparent huge pages, where the advice is moot.
        if ret != 0 && errno() != libc::EINVAL {
            return Err(("madvise(MADV_NOHUGEPAGE)", io::Error::last_os_error()));
        }
        for slot in 0..self.slots {
            // SAFETY: the guard page of `slot` lies inside our own fresh mapping, which no
            // stack uses yet.
            unsafe { install_guard(self.base + slot * self.stride, guard_len(), mode)? };
        }
        Ok(())
    }

    /// Unmaps the whole slab.
    ///
    /// # Safety
    ///
    /// No slot may be in use, and no pointer into the slab may be used afterwards.
    pub(super) unsafe fn unmap(self) {
        // SAFETY: the caller guarantees nothing uses the mapping; it is exactly ours.
        let ret = unsafe { libc::munmap(self.base as *mut _, self.len()) };
        if ret != 0 {
            signal::fatal(format_args!(
                "munmap of the stack slab {:#x}+{:#x} failed: {}",
                self.base,
                self.len(),
                io::Error::last_os_error()
            ));
        }
    }

    pub(super) fn base(&self) -> usize {
        self.base
    }

    pub(super) fn len(&self) -> usize {
        self.stride * self.slots
    }

    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    /// Usable bytes of each stack.
    pub(super) fn stack_size(&self) -> usize {
        self.stride - guard_len()
    }

    /// The top of the stack in `slot` (= the start of the next slot's guard).
    pub(super) fn top_of(&self, slot: usize) -> usize {
        self.base + (slot + 1) * self.stride
    }

    /// Whether `top` is the top of one of this slab's stacks.
    pub(super) fn contains_top(&self, top: usize) -> bool {
        top > self.base && top <= self.base + self.len() && (top - self.base) % self.stride == 0
    }

    pub(super) fn is_unused(&self) -> bool {
        self.used == 0
    }

    /// Marks the stack with this top in use; fatal if it already was.
    pub(super) fn mark_used(&mut self, top: usize) {
        let bit = self.bit(top);
        if self.used & bit != 0 {
            signal::fatal(format_args!("stack {top:#x} handed out twice"));
        }
        self.used |= bit;
    }

    /// Marks the stack with this top free; fatal if it already was.
    pub(super) fn mark_free(&mut self, top: usize) {
        let bit = self.bit(top);
        if self.used & bit == 0 {
            signal::fatal(format_args!("stack {top:#x} freed twice"));
        }
        self.used &= !bit;
    }

    fn bit(&self, top: usize) -> u64 {
        debug_assert!(self.contains_top(top));
        1 << ((top - self.base) / self.stride - 1)
    }
}

/// Makes `[addr, addr + len)` a guard: any access faults.
///
/// # Safety
///
/// The range must be page aligned, inside a private anonymous mapping we own, and hold
/// nothing anyone reads: its contents are discarded.
pub(super) unsafe fn install_guard(
    addr: usize,
    len: usize,
    mode: GuardMode,
) -> Result<(), CallError> {
    match mode {
        GuardMode::MadviseGuard => loop {
            // SAFETY: the caller guarantees the range is ours and disposable.
            let ret = unsafe { libc::madvise(addr as *mut _, len, MADV_GUARD_INSTALL) };
            if ret == 0 {
                return Ok(());
            }
            if errno() != libc::EINTR {
                return Err(("madvise(MADV_GUARD_INSTALL)", io::Error::last_os_error()));
            }
        },
        GuardMode::Mprotect => {
            // SAFETY: the caller guarantees the range is ours and disposable.
            let ret = unsafe { libc::mprotect(addr as *mut _, len, libc::PROT_NONE) };
            if ret != 0 {
                return Err(("mprotect(PROT_NONE)", io::Error::last_os_error()));
            }
            Ok(())
        }
    }
}

fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The guard mode for goroutine stacks, decided once: `GORT_STACK_GUARD`, then whether the
/// kernel accepts `MADV_GUARD_INSTALL`. A malformed variable is an `InvalidInput` error on
/// every call (so every allocation reports it). A probe that fails for another reason than
/// the kernel refusing the advice (say `ENOMEM`) is returned and not cached.
pub(super) fn mode() -> io::Result<GuardMode> {
    static MODE: OnceLock<Result<GuardMode, String>> = OnceLock::new();
    let decided = match MODE.get() {
        Some(decided) => decided,
        None => {
            let decided = decide_mode(std::env::var_os(GUARD_ENV))?;
            MODE.get_or_init(|| decided)
        }
    };
    decided
        .clone()
        .map_err(|message| io::Error::new(io::ErrorKind::InvalidInput, message))
}

/// Applies the variable's value (if any) to the kernel's capability. The outer error is a
/// failed probe, the inner one a configuration error to report on every allocation.
pub(super) fn decide_mode(
    var: Option<std::ffi::OsString>,
) -> io::Result<Result<GuardMode, String>> {
    let wanted = match var.as_deref().map(|value| value.to_str()) {
        None | Some(Some("" | "auto")) => None,
        Some(Some("madvise")) => Some(GuardMode::MadviseGuard),
        Some(Some("mprotect")) => return Ok(Ok(GuardMode::Mprotect)),
        Some(_) => {
            return Ok(Err(format!(
                "{GUARD_ENV}={:?} is not valid: expected `madvise`, `mprotect`, `auto` or unset",
                var.unwrap_or_default()
            )));
        }
    };
    Ok(match (kernel_guard_mode()?, wanted) {
        (GuardMode::MadviseGuard, _) => Ok(GuardMode::MadviseGuard),
        (GuardMode::Mprotect, None) => Ok(GuardMode::Mprotect),
        (GuardMode::Mprotect, Some(_)) => Err(format!(
            "{GUARD_ENV}=madvise, but this kernel refuses MADV_GUARD_INSTALL (it needs Linux \
             6.13 or later); set {GUARD_ENV}=mprotect or unset it"
        )),
    })
}

/// The best guard mode this kernel offers, probed once: `MadviseGuard` if it accepts
/// `MADV_GUARD_INSTALL` on an anonymous mapping and the page then really refuses access,
/// `Mprotect` if it answers EINVAL (or ignores the advice).
pub(super) fn kernel_guard_mode() -> io::Result<GuardMode> {
    static KERNEL: OnceLock<GuardMode> = OnceLock::new();
    if let Some(&mode) = KERNEL.get() {
        return Ok(mode);
    }
    let page = page_size();
    // SAFETY: a new anonymous mapping at an address of the kernel's choosing.
    let addr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            2 * page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("cannot probe for MADV_GUARD_INSTALL: mmap failed: {err}"),
        ));
    }
    // SAFETY: the first page of the probe mapping, which nothing uses.
    let installed = unsafe { install_guard(addr as usize, page, GuardMode::MadviseGuard) };
    let guarded = installed.is_ok() && guard_refuses_reads(addr as usize);
    // SAFETY: the probe mapping is ours and unused. A failure would only leak two pages.
    unsafe { libc::munmap(addr, 2 * page) };
    let mode = match installed {
        Ok(()) if guarded => GuardMode::MadviseGuard,
        // Accepted but not applied: an emulator (qemu-user) that treats unknown advice as
        // a no-op hint. Guards must really fault, so fall back.
        Ok(()) => GuardMode::Mprotect,
        Err((_, err)) if err.raw_os_error() == Some(libc::EINVAL) => GuardMode::Mprotect,
        Err((call, err)) => {
            return Err(io::Error::new(
                err.kind(),
                format!("cannot probe for MADV_GUARD_INSTALL: {call} failed: {err}"),
            ));
        }
    };
    Ok(*KERNEL.get_or_init(|| mode))
}

/// Whether reading the byte at `addr` faults, found out without a signal: write(2) from it
/// into a pipe fails with EFAULT if the page is a guard. If no pipe can be had, the advice's
/// success is trusted.
fn guard_refuses_reads(addr: usize) -> bool {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return true;
    }
    // EINTR policy: a 1-byte write to an empty non-blocking pipe does not block, so it is
    // not interrupted.
    // SAFETY: the kernel reads one byte at `addr` (or reports EFAULT); `fds[1]` is ours.
    let written = unsafe { libc::write(fds[1], addr as *const libc::c_void, 1) };
    let refused = written < 0 && errno() == libc::EFAULT;
    for fd in fds {
        // SAFETY: both descriptors were opened above and are closed once.
        unsafe { libc::close(fd) };
    }
    refused
}

/// Turns a failed call into an error that names the stack size, and for ENOMEM says what
/// probably ran out.
fn explain(call: &'static str, err: io::Error, size: usize, mode: GuardMode) -> io::Error {
    if err.raw_os_error() == Some(libc::ENOMEM) {
        // Reading /proc/self/maps costs a buffer and a walk of every mapping: only worth it
        // when the map count is the suspect.
        let usage = match mode {
            GuardMode::Mprotect => MapUsage::read(),
            GuardMode::MadviseGuard => MapUsage {
                count: None,
                max: None,
            },
        };
        let message = enomem_message(call, size, mode, usage, address_space_limit());
        return io::Error::new(io::ErrorKind::OutOfMemory, message);
    }
    io::Error::new(
        err.kind(),
        format!(
            "cannot map a {} goroutine stack: {call} failed: {err}",
            HumanSize(size)
        ),
    )
}

/// How many memory mappings the process has, against `vm.max_map_count`.
#[derive(Clone, Copy, Debug)]
pub(super) struct MapUsage {
    /// Lines of `/proc/self/maps`, if readable.
    pub(super) count: Option<usize>,
    /// `/proc/sys/vm/max_map_count`, if readable.
    pub(super) max: Option<usize>,
}

impl MapUsage {
    /// Reads both numbers (only on the error path: it reads all of `/proc/self/maps`).
    fn read() -> MapUsage {
        let max = std::fs::read_to_string("/proc/sys/vm/max_map_count")
            .ok()
            .and_then(|text| text.trim().parse().ok());
        MapUsage {
            count: count_lines("/proc/self/maps"),
            max,
        }
    }

    /// Whether the process is at (or within a few mappings of) the limit. Unknown numbers count
    /// as at the limit: in mprotect mode that is the likeliest ENOMEM.
    fn at_limit(&self) -> bool {
        match (self.count, self.max) {
            (Some(count), Some(max)) => count + 8 >= max,
            _ => true,
        }
    }
}

/// Counts the lines of a file with a small buffer (this may run on a goroutine stack, and
/// near the mapping limit, so no big allocation).
pub(super) fn count_lines(path: &str) -> Option<usize> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut lines = 0;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Some(lines),
            Ok(n) => lines += buf[..n].iter().filter(|&&byte| byte == b'\n').count(),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// The soft `RLIMIT_AS`, if finite.
fn address_space_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    let ret = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut limit) };
    (ret == 0 && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The message for an ENOMEM from `call` while mapping a stack of `size` usable bytes.
pub(super) fn enomem_message(
    call: &str,
    size: usize,
    mode: GuardMode,
    usage: MapUsage,
    rlimit_as: Option<u64>,
) -> String {
    let size = HumanSize(size);
    // In mprotect mode the map count is the suspect if the count says so, and also when
    // no address-space limit is set: `MAP_NORESERVE` mappings are not charged to overcommit,
    // so what else runs out is the mapping count (and /proc/self/maps may under-report it,
    // e.g. under qemu-user, which shows only the guest's mappings).
    if mode == GuardMode::Mprotect && (usage.at_limit() || rlimit_as.is_none()) {
        let max = usage
            .max
            .map_or_else(|| "unknown".to_owned(), |max| max.to_string());
        let count = match usage.count {
            Some(count) if usage.at_limit() => format!(", {count} in use"),
            _ => String::new(),
        };
        let cap = usage
            .max
            .map_or_else(String::new, |max| format!(" near {}", max / 2));
        return format!(
            "cannot map a {size} goroutine stack: {call} failed with ENOMEM: the process has \
             hit vm.max_map_count (limit {max} memory mappings{count}). With mprotect guard \
             pages every goroutine stack costs 2 mappings, which caps live goroutines{cap}. \
             Raise the limit (as root) with `sysctl -w vm.max_map_count=262144`, or run on \
             Linux 6.13 or later with {GUARD_ENV} unset, where guard pages cost no mapping"
        );
    }
    let limit = rlimit_as.map_or_else(String::new, |limit| {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        format!(" (RLIMIT_AS is {})", HumanSize(limit))
    });
    format!(
        "cannot map a {size} goroutine stack (plus its {} guard page): {call} failed with \
         ENOMEM: out of address space or memory. Check the address-space limit (`ulimit -v`){limit} \
         and vm.overcommit_memory, or ask for smaller stacks",
        HumanSize(guard_len())
    )
}
