//! Child-process machinery shared by the integration tests: re-run the current test binary
//! with a role in an environment variable, bounded by a timeout, under the same emulator when
//! the suite runs under qemu-user.
#![allow(dead_code, unused_macros)] // each test binary uses a different subset

use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `body` on a plain thread named "test body" and returns its result; resumes its panic,
/// and fails the test if it does not finish within `timeout` (a hang guard, not a timing
/// assertion).
pub fn run_guarded<T: Send + 'static>(
    timeout: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("test body".into())
        .spawn(move || {
            let _ = sender.send(panic::catch_unwind(AssertUnwindSafe(body)));
        })
        .unwrap();
    match receiver.recv_timeout(timeout) {
        Ok(Ok(value)) => {
            thread.join().unwrap();
            value
        }
        Ok(Err(payload)) => panic::resume_unwind(payload),
        Err(_) => panic!("hung: the test did not finish within {timeout:?}"),
    }
}

/// Generates `mod $name { procs_1, procs_2, procs_8 }`, each test running `$name(procs)`
/// through the suite's own `guarded` (its hang guard and panic hook).
macro_rules! at_procs {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn procs_1() {
                super::guarded(|| super::$name(1))
            }
            #[test]
            fn procs_2() {
                super::guarded(|| super::$name(2))
            }
            #[test]
            fn procs_8() {
                super::guarded(|| super::$name(8))
            }
        }
    )*};
}

/// The command that re-runs this test binary: through `GORT_TEST_RUNNER` if set (split at
/// whitespace, e.g. `qemu-aarch64 -L /usr/aarch64-linux-gnu`); through the emulator this
/// process runs under, if any (qemu-user without binfmt_misc cannot exec a foreign binary;
/// it hides itself from `/proc/self/exe` but not from `/proc/thread-self/exe`); else directly.
pub fn self_command() -> Command {
    let exe = std::env::current_exe().unwrap();
    if let Ok(runner) = std::env::var("GORT_TEST_RUNNER") {
        let mut words = runner.split_whitespace();
        if let Some(program) = words.next() {
            let mut command = Command::new(program);
            command.args(words).arg(exe);
            dies_with_parent(&mut command);
            return command;
        }
    }
    command_for(&exe)
}

/// A command running the program `exe`, built for this arch: under the same emulator as
/// this process when it is emulated (qemu-user, with the cross sysroot), else directly.
pub fn command_for(exe: &std::path::Path) -> Command {
    if let Some(emulator) = emulator() {
        let mut command = Command::new(emulator);
        let sysroot = format!("/usr/{}-linux-gnu", std::env::consts::ARCH);
        if std::path::Path::new(&sysroot).is_dir() {
            command.arg("-L").arg(sysroot);
        }
        command.arg(exe);
        dies_with_parent(&mut command);
        return command;
    }
    let mut command = Command::new(exe);
    dies_with_parent(&mut command);
    command
}

/// The child gets SIGKILL when the thread that spawned it ends (`PR_SET_PDEATHSIG`): a test
/// binary killed by a timeout or ^C must not leave children behind — a spinning stress child
/// outliving its parent skews every later run on a 2-CPU machine (the pinning tests and the
/// benchmarks measure CPU placement and time).
pub fn dies_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid is async-signal-safe, called before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid, _exit); it touches no lock or allocation.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between the fork and the prctl: no signal will come.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

/// The qemu-user binary running this process, if it is emulated.
pub fn emulator() -> Option<std::path::PathBuf> {
    let host_exe = std::fs::read_link("/proc/thread-self/exe").ok()?;
    let name = host_exe.file_name()?.to_str()?;
    name.starts_with("qemu-").then_some(host_exe)
}

/// Runs the test named `child` of this binary in a new process, with `child_env=role` and
/// `env` set and the variables in `remove` unset; kills it and panics after `timeout`.
pub fn run_child_test(
    child_env: &str,
    role: &str,
    env: &[(&str, &str)],
    remove: &[&str],
    timeout: Duration,
) -> Output {
    let mut command = self_command();
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(child_env, role)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in remove {
        command.env_remove(var);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    output_within(command, timeout, &format!("child {role}"))
}

/// Runs `command` to completion and returns its output; kills it and panics (naming it
/// `what`) if it does not finish within `timeout`.
pub fn output_within(mut command: Command, timeout: Duration, what: &str) -> Output {
    let child = command.spawn().unwrap();
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(timeout) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what} did not finish within {timeout:?}");
        }
    }
}

/// Exit status and both output streams, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// [`run_child_test`] with nothing unset; asserts the child exited successfully and printed
/// "`role` ok", echoes its stdout (shown with the test's own output) and returns it.
pub fn child_ok(child_env: &str, role: &str, env: &[(&str, &str)], timeout: Duration) -> String {
    let out = run_child_test(child_env, role, env, &[], timeout);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains(&format!("{role} ok")),
        "child {role}: {}",
        describe(&out)
    );
    eprint!("{stdout}");
    stdout
}

/// Process CPU time (user + system) so far.
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut ru), 0);
        ru
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Context switches (voluntary + involuntary) so far of each of this process's threads whose
/// name starts with `prefix`, by thread id and name.
pub fn thread_switches(prefix: &str) -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread that exits between the listing and the read is skipped.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let name = field("Name:").unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let count = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.push((
            tid,
            name,
            count("voluntary_ctxt_switches:") + count("nonvoluntary_ctxt_switches:"),
        ));
    }
    out
}

/// How often each thread named `prefix*` was switched in over `window`: a thread asleep
/// without a timeout counts 0; one polling on a 1 ms timer counts about one per millisecond.
pub fn wakeups_over(prefix: &str, window: Duration) -> Vec<(String, u64)> {
    let before = thread_switches(prefix);
    std::thread::sleep(window);
    let after = thread_switches(prefix);
    after
        .into_iter()
        .map(|(tid, name, n)| {
            let n0 = before.iter().find(|b| b.0 == tid).map_or(0, |b| b.2);
            (name, n - n0)
        })
        .collect()
}
