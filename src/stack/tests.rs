//! Unit tests of the stack allocator and the overflow handler.
//!
//! Tests that must crash, that depend on process-wide state read once (`GORT_STACK_GUARD`,
//! `RLIMIT_AS`, the signal dispositions) or that need exact process-wide counters (RSS, VMA
//! count, allocator stats) run in a child process: the test binary re-runs itself with
//! `--exact stack::tests::child` and `GORT_STACK_TEST_CHILD=<role>`, bounded by a timeout.
//! The in-process tests use size classes of their own and keep a stack of their class alive
//! ("pin"), so a concurrent `trim` elsewhere cannot unmap their slab.

use super::signal::tests_hook;
use super::slab::{self, MapUsage};
use super::*;

use std::ffi::c_void;
use std::hint::black_box;
use std::mem::MaybeUninit;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHILD_ENV: &str = "GORT_STACK_TEST_CHILD";
const CHILD_TIMEOUT: Duration = Duration::from_secs(180);

fn page() -> usize {
    page_size()
}

/// How many pages of `range` are resident (mincore). Errors with ENOMEM if part of the
/// range is not mapped.
fn resident_pages(range: Range<usize>) -> io::Result<usize> {
    let pages = range.len() / page();
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the range; mincore only writes those.
    let ret = unsafe { libc::mincore(range.start as *mut c_void, range.len(), vec.as_mut_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec.iter().filter(|&&byte| byte & 1 != 0).count())
}

/// Whether the kernel refuses to read the byte at `addr` (EFAULT from write(2) into a
/// pipe), found out without a signal.
fn refuses_reads(addr: usize) -> bool {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two descriptors into `fds`.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the kernel reads one byte at `addr` or reports EFAULT.
    let written = unsafe { libc::write(fds[1], addr as *const c_void, 1) };
    let err = io::Error::last_os_error();
    for fd in fds {
        // SAFETY: opened above, closed once.
        unsafe { libc::close(fd) };
    }
    written < 0 && err.raw_os_error() == Some(libc::EFAULT)
}

/// The guard modes this kernel can be tested in.
fn guard_modes() -> Vec<&'static str> {
    match slab::kernel_guard_mode().unwrap() {
        GuardMode::MadviseGuard => vec!["madvise", "mprotect"],
        GuardMode::Mprotect => vec!["mprotect"],
    }
}

fn touch(addr: usize) {
    // SAFETY: callers pass an address inside a stack they own, which nothing else uses.
    unsafe { std::ptr::write_volatile(addr as *mut u8, 0xA5) };
}

#[test]
fn human_sizes() {
    assert_eq!(HumanSize(256 * 1024).to_string(), "256 KiB");
    assert_eq!(HumanSize(260 * 1024).to_string(), "260 KiB");
    assert_eq!(HumanSize(8 << 20).to_string(), "8 MiB");
    assert_eq!(HumanSize(1536 << 10).to_string(), "1536 KiB");
    assert_eq!(HumanSize(1 << 30).to_string(), "1 GiB");
    assert_eq!(HumanSize(4097).to_string(), "4097 bytes");
    assert_eq!(HumanSize(0).to_string(), "0 bytes");
}

#[test]
fn bad_sizes_are_refused_with_the_value() {
    for size in [0, 1, page() - 1] {
        let err = Stack::alloc(size).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let message = err.to_string();
        assert!(message.contains(&format!("{size} bytes")), "{message}");
        assert!(message.contains("smaller than one page"), "{message}");
    }
    let err = Stack::alloc(usize::MAX).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains(&usize::MAX.to_string()), "{err}");
}

#[test]
fn geometry() {
    let stack = Stack::alloc(3 * page() + 1).unwrap();
    assert_eq!(stack.size(), 4 * page());
    let top = stack.top() as usize;
    assert_eq!(top % page(), 0);
    assert_eq!(stack.bottom(), top - 4 * page());
    assert_eq!(stack.guard(), stack.bottom() - page()..stack.bottom());
    // The whole usable range is writable.
    for addr in (stack.bottom()..top).step_by(page()) {
        touch(addr);
    }
    touch(top - 1);
}

#[test]
fn freed_stacks_are_reused_last_in_first_out() {
    let size = 37 * page();
    let _pin = Stack::alloc(size).unwrap();
    let a = Stack::alloc(size).unwrap();
    let b = Stack::alloc(size).unwrap();
    let (top_a, top_b) = (a.top(), b.top());
    drop(a);
    drop(b);
    let again_b = Stack::alloc(size).unwrap();
    let again_a = Stack::alloc(size).unwrap();
    assert_eq!(again_b.top(), top_b);
    assert_eq!(again_a.top(), top_a);
}

#[test]
fn stacks_of_different_sizes_do_not_share_a_slab_or_a_free_list() {
    let small = Stack::alloc(38 * page()).unwrap();
    let top = small.top();
    drop(small);
    let big = Stack::alloc(39 * page()).unwrap();
    assert_eq!(big.size(), 39 * page());
    assert_ne!(big.top(), top);
}

#[test]
fn stacks_and_guards_are_disjoint() {
    let stacks: Vec<Stack> = (0..150)
        .map(|_| Stack::alloc(3 * page()).unwrap())
        .collect();
    let mut ranges: Vec<Range<usize>> = stacks
        .iter()
        .map(|stack| stack.guard().start..stack.top() as usize)
        .collect();
    ranges.sort_by_key(|range| range.start);
    for pair in ranges.windows(2) {
        assert!(
            pair[0].end <= pair[1].start,
            "{:x?} overlaps {:x?}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn stacks_are_demand_paged_and_release_memory_keeps_the_top_page() {
    let size = 41 * page();
    let _pin = Stack::alloc(size).unwrap();
    let stack = Stack::alloc(size).unwrap();
    let top = stack.top() as usize;
    let usable = stack.bottom()..top;
    assert_eq!(
        resident_pages(usable.clone()).unwrap(),
        0,
        "a fresh stack holds no memory"
    );

    touch(top - 8);
    assert_eq!(
        resident_pages(usable.clone()).unwrap(),
        1,
        "one touch, one page"
    );

    for k in 1..=5 {
        touch(top - k * page() - 8);
    }
    assert_eq!(resident_pages(usable.clone()).unwrap(), 6);

    stack.release_memory();
    assert_eq!(
        resident_pages(usable.clone()).unwrap(),
        1,
        "only the top page stays"
    );
    // SAFETY: inside the stack we own.
    let (kept, zeroed) = unsafe {
        (
            std::ptr::read_volatile((top - 8) as *const u8),
            std::ptr::read_volatile((top - page() - 8) as *const u8),
        )
    };
    assert_eq!(kept, 0xA5, "the top page keeps its contents");
    assert_eq!(zeroed, 0, "released pages read as zero");
    assert_eq!(resident_pages(usable.clone()).unwrap(), 2);

    // Dropping releases all of it: a stack back in the pool is cold.
    touch(top - 3 * page());
    drop(stack);
    assert_eq!(resident_pages(usable).unwrap(), 0);
}

#[test]
fn a_stack_can_be_dropped_on_another_thread() {
    let size = 42 * page();
    let _pin = Stack::alloc(size).unwrap();
    let stack = Stack::alloc(size).unwrap();
    let top = stack.top() as usize;
    std::thread::spawn(move || drop(stack)).join().unwrap();
    assert_eq!(Stack::alloc(size).unwrap().top() as usize, top);
}

#[test]
fn trim_unmaps_unused_slabs_and_keeps_used_ones() {
    let size = 43 * page();
    let kept = Stack::alloc(size).unwrap();
    let freed = Stack::alloc(size).unwrap();
    let usable = |stack: &Stack| stack.bottom()..stack.top() as usize;
    let (kept_range, freed_range) = (usable(&kept), usable(&freed));
    drop(freed);
    trim();
    assert!(
        resident_pages(kept_range.clone()).is_ok(),
        "a stack in use stays mapped"
    );
    // Its slab neighbour stays too; in mprotect mode each stack is a slab of its own.
    let freed_mapped = resident_pages(freed_range.clone()).is_ok();
    assert_eq!(freed_mapped, guard_mode() == GuardMode::MadviseGuard);
    drop(kept);
    trim();
    for range in [kept_range, freed_range] {
        let err = resident_pages(range).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc::ENOMEM),
            "the slab is unmapped"
        );
    }
    // The class still works after its slabs are gone.
    let again = Stack::alloc(size).unwrap();
    touch(again.top() as usize - 1);
}

#[test]
fn overflow_is_recognised_in_and_just_below_the_guard_only() {
    let stack = Stack::alloc(4 * page()).unwrap();
    let guard = stack.guard();
    let is_overflow = |addr| super::signal::is_overflow(addr, &stack);
    assert!(is_overflow(guard.start));
    assert!(is_overflow(guard.end - 1));
    assert!(is_overflow(guard.start - 4096));
    assert!(
        !is_overflow(guard.end),
        "the bottom byte of the stack is usable"
    );
    assert!(!is_overflow(stack.top() as usize));
    assert!(!is_overflow(0));
    assert!(!is_overflow(guard.start - 1024 * 1024));
}

#[test]
fn guard_mode_variable_is_parsed_strictly() {
    let parse = |value: &str| slab::decide_mode(Some(value.into())).unwrap();
    assert_eq!(parse("mprotect"), Ok(GuardMode::Mprotect));
    let kernel = slab::kernel_guard_mode().unwrap();
    assert_eq!(parse(""), Ok(kernel));
    assert_eq!(parse("auto"), Ok(kernel));
    assert_eq!(slab::decide_mode(None).unwrap(), Ok(kernel));
    for bad in ["bogus", "MPROTECT", " mprotect", "madvise,mprotect"] {
        let message = parse(bad).unwrap_err();
        assert!(message.contains("GORT_STACK_GUARD"), "{message}");
        assert!(message.contains(bad), "{message}");
    }
    match kernel {
        GuardMode::MadviseGuard => assert_eq!(parse("madvise"), Ok(GuardMode::MadviseGuard)),
        GuardMode::Mprotect => assert!(parse("madvise").unwrap_err().contains("6.13")),
    }
}

#[test]
fn this_kernel_offers_guard_markers() {
    // The project's machines run Linux >= 6.13; if this fails the fallback is in use.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut numbers = release
        .trim()
        .split(['.', '-'])
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    // Under qemu-user the host kernel's version says nothing about the emulated madvise.
    if version >= (6, 13) && emulator().is_none() {
        assert_eq!(slab::kernel_guard_mode().unwrap(), GuardMode::MadviseGuard);
    }
}

#[test]
fn enomem_messages_say_what_ran_out() {
    let at_limit = MapUsage {
        count: Some(65_528),
        max: Some(65_530),
    };
    let message = slab::enomem_message(
        "mprotect(PROT_NONE)",
        256 * 1024,
        GuardMode::Mprotect,
        at_limit,
        None,
    );
    assert!(message.contains("256 KiB"), "{message}");
    assert!(message.contains("hit vm.max_map_count"), "{message}");
    assert!(message.contains("65530"), "{message}");
    assert!(
        message.contains("sysctl -w vm.max_map_count=262144"),
        "{message}"
    );
    assert!(message.contains("32765"), "{message}");

    let unknown = MapUsage {
        count: None,
        max: None,
    };
    let message = slab::enomem_message("mmap", 256 * 1024, GuardMode::Mprotect, unknown, None);
    assert!(message.contains("vm.max_map_count"), "{message}");

    // No RLIMIT_AS: in mprotect mode the map count is still the suspect.
    let low = MapUsage {
        count: Some(100),
        max: Some(65_530),
    };
    let message = slab::enomem_message("mmap", 256 * 1024, GuardMode::Mprotect, low, None);
    assert!(
        message.contains("hit vm.max_map_count (limit 65530 memory mappings)"),
        "{message}"
    );

    // Far below the map limit under an RLIMIT_AS, or with guard markers: the address space
    // ran out.
    let low = MapUsage {
        count: Some(100),
        max: Some(65_530),
    };
    for mode in [GuardMode::Mprotect, GuardMode::MadviseGuard] {
        let message = slab::enomem_message("mmap", 1 << 30, mode, low, Some(512 << 20));
        assert!(message.contains("1 GiB"), "{message}");
        assert!(!message.contains("max_map_count"), "{message}");
        assert!(message.contains("RLIMIT_AS is 512 MiB"), "{message}");
    }
}

#[test]
fn alt_stack_is_installed_and_restored() {
    std::thread::spawn(|| {
        let query = || {
            let mut current = MaybeUninit::<libc::stack_t>::zeroed();
            // SAFETY: queries this thread's alternate stack.
            let ret = unsafe { libc::sigaltstack(std::ptr::null(), current.as_mut_ptr()) };
            assert_eq!(ret, 0);
            // SAFETY: written by sigaltstack.
            unsafe { current.assume_init() }
        };
        let before = query();
        let alt = AltStack::install().unwrap();
        let during = query();
        assert_eq!(during.ss_flags & libc::SS_DISABLE, 0);
        assert!(during.ss_size >= 64 * 1024);
        assert_ne!(during.ss_sp, before.ss_sp);
        // The page below it is a guard.
        assert!(refuses_reads(during.ss_sp as usize - page()));
        assert!(!refuses_reads(during.ss_sp as usize));
        drop(alt);
        let after = query();
        assert_eq!(after.ss_sp, before.ss_sp);
        assert_eq!(
            after.ss_flags & libc::SS_DISABLE,
            before.ss_flags & libc::SS_DISABLE
        );
    })
    .join()
    .unwrap();
}

#[test]
fn overflow_handler_installs_once() {
    install_overflow_handler().unwrap();
    install_overflow_handler().unwrap();
    let mut action = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: queries the current action.
    let ret = unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), action.as_mut_ptr()) };
    assert_eq!(ret, 0);
    // SAFETY: written by sigaction.
    let action = unsafe { action.assume_init() };
    assert_ne!(action.sa_flags & libc::SA_ONSTACK, 0);
    assert_ne!(action.sa_flags & libc::SA_SIGINFO, 0);
}

// ---- child processes ----

/// The command that re-runs this test binary: through `GORT_TEST_RUNNER` if set (split at
/// whitespace, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`); through the emulator this
/// process runs under, if any (qemu-user without binfmt_misc cannot exec a foreign binary;
/// it hides itself from `/proc/self/exe` but not from `/proc/thread-self/exe`); else directly.
fn self_command() -> Command {
    let exe = std::env::current_exe().unwrap();
    if let Ok(runner) = std::env::var("GORT_TEST_RUNNER") {
        let mut words = runner.split_whitespace();
        if let Some(program) = words.next() {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            return command;
        }
    }
    if let Some(emulator) = emulator() {
        let mut command = Command::new(emulator);
        let sysroot = format!("/usr/{}-linux-gnu", std::env::consts::ARCH);
        if std::path::Path::new(&sysroot).is_dir() {
            command.arg("-L").arg(sysroot);
        }
        command.arg(exe);
        return command;
    }
    Command::new(exe)
}

/// The qemu-user binary running this process, if it is emulated.
fn emulator() -> Option<std::path::PathBuf> {
    let host_exe = std::fs::read_link("/proc/thread-self/exe").ok()?;
    let name = host_exe.file_name()?.to_str()?;
    name.starts_with("qemu-").then_some(host_exe)
}

/// Runs this test binary's `child` test in a new process with `role`, bounded by
/// [`CHILD_TIMEOUT`].
fn run_child(role: &str, env: &[(&str, &str)]) -> Output {
    let mut command = self_command();
    command
        .args([
            "--exact",
            "stack::tests::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .env_remove("GORT_STACK_GUARD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(CHILD_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("child {role} did not finish within {CHILD_TIMEOUT:?}");
        }
    }
}

fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Asserts the child printed `<role> ok` and exited normally.
fn assert_child_ok(role: &str, env: &[(&str, &str)]) -> Output {
    let output = run_child(role, env);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(&format!("{role} ok")),
        "{}",
        describe(&output)
    );
    output
}

/// Asserts the child was killed by `signal`.
fn assert_child_killed(role: &str, env: &[(&str, &str)], signal: libc::c_int) -> Output {
    let output = run_child(role, env);
    assert_eq!(
        output.status.signal(),
        Some(signal),
        "{}",
        describe(&output)
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn guard_page_faults() {
    for mode in guard_modes() {
        let env = [("GORT_STACK_GUARD", mode)];
        let output = assert_child_killed("touch_guard", &env, libc::SIGSEGV);
        assert!(
            !stderr(&output).contains("overflowed"),
            "{}",
            describe(&output)
        );
    }
}

#[test]
fn overflow_is_reported_and_aborts() {
    let roles = ["overflow_small_frames", "overflow_big_frames"];
    for (role, mode) in roles
        .into_iter()
        .flat_map(|r| guard_modes().into_iter().map(move |m| (r, m)))
    {
        let env = [("GORT_STACK_GUARD", mode)];
        let output = assert_child_killed(role, &env, libc::SIGABRT);
        let stderr = stderr(&output);
        assert!(
            stderr.contains("gort: fatal: goroutine 7 overflowed its stack (size 256 KiB)"),
            "{role} {mode}: {}",
            describe(&output)
        );
        assert!(!stderr.contains("SURVIVED"), "{}", describe(&output));
    }
}

#[test]
fn other_faults_chain_to_the_previous_handler() {
    // std's handler: not its guard, so it resets to SIG_DFL; the fault repeats and kills.
    for role in ["null_in_goroutine", "null_in_thread"] {
        let output = assert_child_killed(role, &[], libc::SIGSEGV);
        assert!(
            !stderr(&output).contains("overflowed"),
            "{}",
            describe(&output)
        );
    }
    // No previous handler: the fault repeats under SIG_DFL.
    assert_child_killed("null_with_default_previous", &[], libc::SIGSEGV);
    // A sent SIGSEGV with SIG_DFL before us is raised again.
    assert_child_killed("kill_with_default_previous", &[], libc::SIGSEGV);
    // A plain (non-SA_SIGINFO) previous handler is called.
    let output = run_child("null_with_plain_previous", &[]);
    assert_eq!(output.status.code(), Some(42), "{}", describe(&output));
    assert!(
        stderr(&output).contains("plain handler called"),
        "{}",
        describe(&output)
    );
}

#[test]
fn malformed_guard_variable_is_an_error() {
    assert_child_ok("bad_guard_env", &[("GORT_STACK_GUARD", "bogus")]);
}

#[test]
fn mprotect_mode_costs_two_mappings_per_stack() {
    assert_child_ok("mprotect_vmas", &[("GORT_STACK_GUARD", "mprotect")]);
}

#[test]
fn madvise_mode_keeps_a_slab_in_one_mapping() {
    if slab::kernel_guard_mode().unwrap() == GuardMode::MadviseGuard {
        assert_child_ok("madvise_vmas", &[]);
    }
}

#[test]
fn stats_count_exactly() {
    for mode in guard_modes() {
        assert_child_ok("stats", &[("GORT_STACK_GUARD", mode)]);
    }
}

#[test]
fn mprotect_mode_reports_vm_max_map_count() {
    let max: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if emulator().is_some() {
        eprintln!("qemu-user maps guest memory its own way: skipped");
        return;
    }
    if max > 1_000_000 {
        eprintln!("vm.max_map_count is {max}: too high to exhaust in a test, skipped");
        return;
    }
    assert_child_ok("map_count", &[("GORT_STACK_GUARD", "mprotect")]);
}

#[test]
fn small_address_space_limit_gives_clear_errors() {
    if emulator().is_some() {
        eprintln!("qemu-user does not apply RLIMIT_AS to the guest: skipped");
        return;
    }
    for mode in guard_modes() {
        assert_child_ok("rlimit_as", &[("GORT_STACK_GUARD", mode)]);
    }
}

#[test]
fn rss_per_touched_stack_is_about_one_page() {
    let output = assert_child_ok("rss", &[]);
    print!("{}", String::from_utf8_lossy(&output.stdout));
}

/// The entry point of every child process; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) only changes this process's dump flag: crashing
    // children must not write core files.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    match role.as_str() {
        "touch_guard" => {
            let stack = Stack::alloc(4 * page()).unwrap();
            touch(stack.guard().start);
        }
        "overflow_small_frames" => overflow_child(recurse_small),
        "overflow_big_frames" => overflow_child(recurse_big),
        "null_in_goroutine" => {
            install_overflow_handler().unwrap();
            let stack = Stack::alloc(ON_STACK_SIZE).unwrap();
            run_on_stack(&stack, 7, read_null);
        }
        "null_in_thread" => {
            install_overflow_handler().unwrap();
            std::thread::spawn(read_null).join().unwrap();
        }
        "null_with_default_previous" => {
            set_action(libc::SIGSEGV, libc::SIG_DFL, 0);
            install_overflow_handler().unwrap();
            read_null();
        }
        "kill_with_default_previous" => {
            set_action(libc::SIGSEGV, libc::SIG_DFL, 0);
            install_overflow_handler().unwrap();
            // SAFETY: sends ourselves a signal.
            unsafe { libc::kill(libc::getpid(), libc::SIGSEGV) };
            std::thread::sleep(Duration::from_secs(5));
        }
        "null_with_plain_previous" => {
            let handler = plain_handler as extern "C" fn(libc::c_int) as libc::sighandler_t;
            set_action(libc::SIGSEGV, handler, 0);
            install_overflow_handler().unwrap();
            read_null();
        }
        "bad_guard_env" => {
            let err = Stack::alloc(DEFAULT_STACK_SIZE).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
            let message = err.to_string();
            assert!(message.contains("GORT_STACK_GUARD=\"bogus\""), "{message}");
            assert!(message.contains("mprotect"), "{message}");
            assert_eq!(guard_mode(), GuardMode::Mprotect);
            // Read once: the error stays.
            assert!(Stack::alloc(DEFAULT_STACK_SIZE).is_err());
        }
        "mprotect_vmas" => {
            assert_eq!(guard_mode(), GuardMode::Mprotect);
            // Map the first stack (and warm up the pool's own allocations) before counting.
            drop(Stack::alloc(5 * page()).unwrap());
            trim();
            let mut stacks = Vec::with_capacity(100);
            let before = maps_count();
            for _ in 0..10 {
                stacks.push(Stack::alloc(5 * page()).unwrap());
            }
            let grown = maps_count() - before;
            assert!(
                (18..=22).contains(&grown),
                "10 stacks added {grown} mappings"
            );
            assert_eq!(stats().reserved_bytes, 10 * 6 * page());
            stacks.clear();
            trim();
            assert!(maps_count() <= before + 2, "trim unmaps them");
        }
        "madvise_vmas" => {
            assert_eq!(guard_mode(), GuardMode::MadviseGuard);
            drop(Stack::alloc(5 * page()).unwrap());
            trim();
            let mut stacks = Vec::with_capacity(100);
            let before = maps_count();
            for _ in 0..64 {
                stacks.push(Stack::alloc(5 * page()).unwrap());
            }
            let grown = maps_count() - before;
            assert!(grown <= 2, "64 stacks added {grown} mappings");
            assert_eq!(stats().mapped, 64);
        }
        "stats" => stats_child(),
        "map_count" => map_count_child(),
        "rlimit_as" => rlimit_child(),
        "rss" => rss_child(),
        other => panic!("unknown child role {other}"),
    }
    println!("{role} ok");
}

fn set_action(signal: libc::c_int, handler: libc::sighandler_t, flags: libc::c_int) {
    // SAFETY: an all-zero sigaction is valid; we fill in the handler and flags.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler;
    action.sa_flags = flags;
    // SAFETY: `handler` is SIG_DFL or a plain handler valid for the process's life.
    let ret = unsafe { libc::sigaction(signal, &action, std::ptr::null_mut()) };
    assert_eq!(ret, 0);
}

extern "C" fn plain_handler(_signal: libc::c_int) {
    let message = b"plain handler called\n";
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(libc::STDERR_FILENO, message.as_ptr().cast(), message.len());
        libc::_exit(42);
    }
}

fn read_null() {
    // SAFETY: none: this is the fault under test.
    let value = unsafe { std::ptr::read_volatile(black_box(std::ptr::null::<u8>())) };
    println!("SURVIVED {value}");
}

fn overflow_child(body: fn()) {
    install_overflow_handler().unwrap();
    let stack = Stack::alloc(ON_STACK_SIZE).unwrap();
    run_on_stack(&stack, 7, body);
    println!("SURVIVED");
}

#[inline(never)]
fn recurse_small() {
    #[inline(never)]
    fn down(depth: u64) -> u64 {
        let frame = [depth; 16];
        if black_box(depth) == u64::MAX {
            return 0;
        }
        down(depth + 1).wrapping_add(black_box(&frame)[3])
    }
    black_box(down(0));
}

#[inline(never)]
fn recurse_big() {
    #[inline(never)]
    fn down(depth: u64) -> u64 {
        // Four pages: the stack probe walks it page by page, into the guard.
        let frame = [depth as u8; 16 * 1024];
        if black_box(depth) == u64::MAX {
            return 0;
        }
        down(depth + 1).wrapping_add(u64::from(black_box(&frame)[3]))
    }
    black_box(down(0));
}

/// The stack size for threads run on a [`Stack`]: at least glibc's PTHREAD_STACK_MIN
/// (128 KiB on aarch64).
const ON_STACK_SIZE: usize = 256 * 1024;

/// What a thread running on a [`Stack`] does, as if it were goroutine `id`.
struct OnStack {
    id: u64,
    stack: *const Stack,
    body: fn(),
}

/// Runs `body` on a pthread whose stack is `stack`, with its own [`AltStack`], presenting
/// itself to the overflow handler as goroutine `id`.
fn run_on_stack(stack: &Stack, id: u64, body: fn()) {
    extern "C" fn entry(arg: *mut c_void) -> *mut c_void {
        // SAFETY: `run_on_stack` passes a pointer to an `OnStack` it keeps alive until join.
        let on = unsafe { &*(arg as *const OnStack) };
        let _alt = AltStack::install().unwrap();
        tests_hook::CURRENT.with(|current| current.set((on.id, on.stack)));
        (on.body)();
        tests_hook::CURRENT.with(|current| current.set((0, std::ptr::null())));
        std::ptr::null_mut()
    }
    let on = OnStack { id, stack, body };
    let mut attr = MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: initialises `attr`, then points it at the stack we own for the thread's life.
    unsafe {
        assert_eq!(libc::pthread_attr_init(attr.as_mut_ptr()), 0);
        let bottom = stack.bottom() as *mut c_void;
        assert_eq!(
            libc::pthread_attr_setstack(attr.as_mut_ptr(), bottom, stack.size()),
            0
        );
    }
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `attr` is initialised; `on` outlives the thread, which is joined below.
    unsafe {
        let arg = &on as *const OnStack as *mut c_void;
        assert_eq!(
            libc::pthread_create(&mut thread, attr.as_ptr(), entry, arg),
            0
        );
        assert_eq!(libc::pthread_join(thread, std::ptr::null_mut()), 0);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
    }
}

fn maps_count() -> usize {
    slab::count_lines("/proc/self/maps").unwrap()
}

fn stats_child() {
    let size = 5 * page();
    let stride = size + page();
    let start = stats();
    assert_eq!(
        start,
        StackStats {
            mapped: 0,
            in_use: 0,
            free: 0,
            reserved_bytes: 0
        }
    );
    let stats_of = |mapped: usize, in_use: usize| StackStats {
        mapped,
        in_use,
        free: mapped - in_use,
        reserved_bytes: mapped * stride,
    };
    // A madvise-mode slab holds 64 such stacks; in mprotect mode each stack is its own slab.
    let madvise = guard_mode() == GuardMode::MadviseGuard;
    let a = Stack::alloc(size).unwrap();
    let b = Stack::alloc(size).unwrap();
    let c = Stack::alloc(size).unwrap();
    assert_eq!(stats(), stats_of(if madvise { 64 } else { 3 }, 3));
    drop(b);
    assert_eq!(stats(), stats_of(if madvise { 64 } else { 3 }, 2));
    trim();
    assert_eq!(stats(), stats_of(if madvise { 64 } else { 2 }, 2));
    drop(a);
    drop(c);
    assert_eq!(stats(), stats_of(if madvise { 64 } else { 2 }, 0));
    trim();
    assert_eq!(stats(), start);
}

fn map_count_child() {
    assert_eq!(guard_mode(), GuardMode::Mprotect);
    let mut stacks = Vec::with_capacity(1 << 20);
    let err = loop {
        match Stack::alloc(DEFAULT_STACK_SIZE) {
            Ok(stack) => stacks.push(stack),
            Err(err) => break err,
        }
    };
    let count = stacks.len();
    drop(stacks);
    trim();
    let message = err.to_string();
    println!("{count} stacks, then: {message}");
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{message}");
    assert!(message.contains("256 KiB"), "{message}");
    assert!(message.contains("hit vm.max_map_count"), "{message}");
    assert!(
        message.contains("sysctl -w vm.max_map_count=262144"),
        "{message}"
    );
    assert!(count > 1000, "{count}");
}

fn statm() -> (usize, usize) {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap();
    let mut fields = text
        .split_whitespace()
        .map(|field| field.parse::<usize>().unwrap());
    let size = fields.next().unwrap() * page();
    let resident = fields.next().unwrap() * page();
    (size, resident)
}

fn rlimit_child() {
    let mut stacks = Vec::with_capacity(100_000);
    // Decide the mode and warm up before limiting the address space.
    drop(Stack::alloc(DEFAULT_STACK_SIZE).unwrap());
    trim();
    let (vm_size, _) = statm();
    let limit = (vm_size + (64 << 20)) as u64;
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rlimit) }, 0);

    let err = Stack::alloc(1 << 30).unwrap_err();
    let message = err.to_string();
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{message}");
    assert!(message.contains("1 GiB goroutine stack"), "{message}");
    assert!(message.contains("RLIMIT_AS is"), "{message}");

    // Default stacks still come until the limit (whole slabs, then single stacks).
    let err = loop {
        match Stack::alloc(DEFAULT_STACK_SIZE) {
            Ok(stack) => stacks.push(stack),
            Err(err) => break err,
        }
    };
    let count = stacks.len();
    drop(stacks);
    trim();
    let message = err.to_string();
    println!("{count} stacks under a 64 MiB headroom, then: {message}");
    assert_eq!(err.kind(), io::ErrorKind::OutOfMemory, "{message}");
    assert!(message.contains("256 KiB goroutine stack"), "{message}");
    assert!(count * (DEFAULT_STACK_SIZE + page()) > 48 << 20, "{count}");
}

fn rss_child() {
    // Each mprotect-mode stack costs 2 of the 65530 mappings a process may have by default.
    let stacks_wanted = match guard_mode() {
        GuardMode::MadviseGuard => 100_000,
        GuardMode::Mprotect => 20_000,
    };
    // The target is one page per stack plus bookkeeping; qemu-user adds its own per-page
    // tracking to the host process's RSS.
    let bound = if emulator().is_some() { 8192 } else { 4608 };
    let mut stacks = Vec::with_capacity(stacks_wanted);
    // Touch the vector's pages before the baseline: they are not the stacks' cost.
    stacks.extend((0..stacks_wanted).map(|_| None::<Stack>));
    stacks.clear();
    let (_, before) = statm();
    for _ in 0..stacks_wanted {
        let stack = Stack::alloc(DEFAULT_STACK_SIZE).unwrap();
        // A parked goroutine's frames: a few hundred bytes in the top page.
        touch(stack.top() as usize - 512);
        stacks.push(Some(stack));
    }
    let (_, touched) = statm();
    let per_stack = (touched - before) / stacks_wanted;
    println!(
        "rss: {stacks_wanted} stacks of {} ({:?}), top page touched: {per_stack} bytes of RSS per stack",
        HumanSize(DEFAULT_STACK_SIZE),
        guard_mode()
    );
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines().filter(|line| line.starts_with("VmPTE")) {
            println!("rss: {line} (page tables, not in RSS)");
        }
    }
    assert!(per_stack <= bound, "{per_stack} bytes per stack");
    assert!(
        per_stack >= 4096,
        "{per_stack} bytes per stack: pages not counted?"
    );

    // A burst: each goroutine went 16 pages deep, then all finished.
    for stack in stacks.iter().take(10_000).flatten() {
        for k in 1..16 {
            touch(stack.top() as usize - k * page() - 8);
        }
    }
    let (_, burst) = statm();
    stacks.clear();
    let (_, released) = statm();
    println!(
        "rss: after a 16-page burst in 10000 stacks: {} MiB; after freeing all: {} MiB",
        (burst - before) >> 20,
        (released - before) >> 20
    );
    assert!(
        burst - before > 10_000 * 15 * page(),
        "the burst was resident"
    );
    assert!(
        released - before <= stacks_wanted * bound,
        "freed stacks shrank to their top page"
    );
    trim();
    let (_, trimmed) = statm();
    println!(
        "rss: after trim: {} MiB above the baseline",
        trimmed.saturating_sub(before) >> 20
    );
    assert!(
        trimmed
            < before
                + if emulator().is_some() {
                    64 << 20
                } else {
                    16 << 20
                },
        "trim returned the memory"
    );
}
