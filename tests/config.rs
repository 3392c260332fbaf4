//! Integration tests of runtime configuration: bad input is a clear error naming what was
//! wrong, never silently ignored; good input is honoured.
//!
//! Environment variables are process-wide and the default runtime is a process-wide
//! singleton, so every environment case runs in a child process: this test binary re-runs
//! itself with `--exact child` and `GORT_CONFIG_IT_CHILD=<role>`, with a clean gort
//! environment plus the variable under test. Builder cases need no environment and run here.

mod common;

use std::io::ErrorKind;
use std::process::Output;
use std::time::Duration;

use gort::{Builder, Runtime};

const CHILD_ENV: &str = "GORT_CONFIG_IT_CHILD";
/// Generous bound on a child process; it only turns a hang into a failure.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);
/// Every variable the runtime reads; children start without any of them.
const GORT_VARS: &[&str] = &[
    "GOMAXPROCS",
    "GORT_PIN",
    "GORT_STACK_KB",
    "GORT_PREEMPT",
    "GORT_QUANTUM_US",
    "GORT_STACK_GUARD",
    "GORT_SCHEDTRACE",
    "GORT_TRACE",
];

// ---------------------------------------------------------------------------------------------
// Child processes.

/// Runs the `child` test of this binary in a new process with `role` and `env` (on top of an
/// environment without any gort variable).
fn run_child(role: &str, env: &[(&str, &str)]) -> Output {
    common::run_child_test(CHILD_ENV, role, env, GORT_VARS, CHILD_TIMEOUT)
}

use common::describe;

/// The line a child printed after `prefix`, if any (the harness may print on the same line).
fn reported(output: &Output, prefix: &str) -> Option<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| {
            line.split_once(prefix)
                .map(|(_, rest)| rest.trim().to_owned())
        })
}

/// The entry point of every child process; does nothing in a normal test run.
#[test]
fn child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    match role.as_str() {
        // Build a runtime from the environment and report the outcome.
        "build" => match Runtime::builder().build() {
            Ok(rt) => {
                println!(
                    "BUILD ok procs={} pinning={}",
                    rt.procs(),
                    rt.stats().pinning
                );
                rt.shutdown();
            }
            Err(e) => println!("BUILD err kind={:?} message={e}", e.kind()),
        },
        // Use the default runtime; a bad environment makes this panic (the test fails and
        // the process exits non-zero).
        "run" => {
            let procs = gort::run(|| gort::stats().procs);
            println!("RUN ok procs={procs}");
        }
        // The default runtime honours GOMAXPROCS, and set_max_procs(0) only queries.
        "default_procs" => {
            let procs = gort::run(|| gort::stats().procs);
            let queried = gort::set_max_procs(0);
            let after = gort::stats().procs;
            let inside = gort::run(|| (gort::set_max_procs(0), gort::stats().procs));
            println!(
                "DEFAULT procs={procs} queried={queried} after={after} inside={}/{}",
                inside.0, inside.1
            );
        }
        other => panic!("unknown child role {other}"),
    }
}

/// A malformed `var=value` makes `Runtime::builder().build()` fail with `InvalidInput`
/// naming the variable and the value, and makes `gort::run` panic with that message.
fn assert_rejected(var: &str, value: &str) {
    let env = [(var, value)];

    let output = run_child("build", &env);
    assert!(output.status.success(), "{}", describe(&output));
    let line = reported(&output, "BUILD ").unwrap_or_default();
    assert!(
        line.starts_with("err kind=InvalidInput "),
        "{var}={value}: build() did not fail with InvalidInput\n{}",
        describe(&output)
    );
    assert!(
        line.contains(var) && line.contains(value),
        "{var}={value}: the error does not name the variable and the value: {line}"
    );

    let output = run_child("run", &env);
    assert!(
        !output.status.success(),
        "{var}={value}: gort::run did not panic\n{}",
        describe(&output)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    let panic_line = stderr
        .lines()
        .skip_while(|line| !line.contains("panicked at"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        panic_line.contains(var) && panic_line.contains(value),
        "{var}={value}: the panic does not name the variable and the value\n{}",
        describe(&output)
    );
    assert!(
        reported(&output, "RUN ").is_none(),
        "{var}={value}: gort::run ran\n{}",
        describe(&output)
    );
}

// ---------------------------------------------------------------------------------------------
// Environment.

#[test]
fn gomaxprocs_not_a_number_is_rejected() {
    assert_rejected("GOMAXPROCS", "abc");
}

#[test]
fn gomaxprocs_zero_is_rejected() {
    assert_rejected("GOMAXPROCS", "0");
}

#[test]
fn gomaxprocs_negative_is_rejected() {
    assert_rejected("GOMAXPROCS", "-1");
}

#[test]
fn gomaxprocs_too_large_is_rejected() {
    assert_rejected("GOMAXPROCS", "5000");
}

#[test]
fn gort_pin_yes_is_rejected() {
    assert_rejected("GORT_PIN", "yes");
}

/// `GORT_PIN` selects the placement: pinned (adaptive) by default and with 1, never relaxed
/// with `strict`, off with 0.
#[test]
fn gort_pin_modes() {
    for (value, mode) in [
        (None, "pinned"),
        (Some("1"), "pinned"),
        (Some(" strict "), "strict"),
        (Some("0"), "off"),
    ] {
        let env: Vec<(&str, &str)> = value.map(|v| ("GORT_PIN", v)).into_iter().collect();
        let output = run_child("build", &env);
        let line = reported(&output, "BUILD ").unwrap_or_default();
        assert!(
            line.starts_with("ok ") && line.ends_with(&format!(" pinning={mode}")),
            "GORT_PIN={value:?}\n{}",
            describe(&output)
        );
    }
}

#[test]
fn gort_stack_kb_zero_is_rejected() {
    assert_rejected("GORT_STACK_KB", "0");
}

#[test]
fn gort_preempt_bogus_is_rejected() {
    assert_rejected("GORT_PREEMPT", "bogus");
}

/// 5 µs parses, but is below the 100 µs minimum: still an error (the variable-naming part is
/// checked separately below).
#[test]
fn gort_quantum_us_too_small_is_rejected() {
    let output = run_child("build", &[("GORT_QUANTUM_US", "5")]);
    let line = reported(&output, "BUILD ").unwrap_or_default();
    assert!(
        line.starts_with("err kind=InvalidInput ") && line.contains("100"),
        "{}",
        describe(&output)
    );
    let output = run_child("run", &[("GORT_QUANTUM_US", "5")]);
    assert!(!output.status.success(), "{}", describe(&output));
}

#[test]
fn gort_quantum_us_too_small_names_the_variable() {
    assert_rejected("GORT_QUANTUM_US", "5");
}

#[test]
fn gort_stack_kb_below_a_page_names_the_variable() {
    assert_rejected("GORT_STACK_KB", "1");
}

#[test]
fn gomaxprocs_is_honoured_by_the_default_runtime() {
    let output = run_child("default_procs", &[("GOMAXPROCS", "3")]);
    assert_eq!(
        reported(&output, "DEFAULT ").as_deref(),
        Some("procs=3 queried=3 after=3 inside=3/3"),
        "{}",
        describe(&output)
    );
}

#[test]
fn good_values_are_accepted() {
    for env in [
        [("GOMAXPROCS", "2"), ("GORT_PIN", "0")],
        [("GORT_PIN", "1"), ("GORT_STACK_KB", "64")],
        [("GORT_PREEMPT", "off"), ("GORT_QUANTUM_US", "100")],
        [("GORT_PREEMPT", "migrate"), ("GOMAXPROCS", " 1 ")],
    ] {
        let output = run_child("build", &env);
        let line = reported(&output, "BUILD ").unwrap_or_default();
        assert!(
            line.starts_with("ok procs="),
            "{env:?}\n{}",
            describe(&output)
        );
        let output = run_child("run", &env);
        assert!(
            output.status.success() && reported(&output, "RUN ").is_some(),
            "{env:?}\n{}",
            describe(&output)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Builders (no environment involved: every option read from it is set explicitly, or the
// check fails before the environment is read).

fn build_error(builder: gort::RuntimeBuilder) -> std::io::Error {
    match builder.build() {
        Ok(rt) => panic!("built a runtime with {} procs", rt.procs()),
        Err(e) => e,
    }
}

#[test]
fn pinning_options() {
    for (pin, strict, mode) in [
        (true, false, "pinned"),
        (true, true, "strict"),
        (false, true, "off"),
        (false, false, "off"),
    ] {
        let rt = Runtime::builder()
            .procs(1)
            .pin_threads(pin)
            .pin_strict(strict)
            .build()
            .unwrap();
        assert_eq!(
            rt.stats().pinning,
            mode,
            "pin_threads({pin}) pin_strict({strict})"
        );
        rt.shutdown();
    }
}

#[test]
fn procs_zero_is_rejected() {
    let e = build_error(Runtime::builder().procs(0));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("procs"), "{e}");
}

#[test]
fn procs_above_the_maximum_is_rejected() {
    let e = build_error(Runtime::builder().procs(5000));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("5000"), "{e}");
    // 1024 is the maximum, and allowed.
    let rt = Runtime::builder().procs(1024).build().unwrap();
    assert_eq!(rt.procs(), 1024);
    assert_eq!(rt.block_on(|| 1 + 1), 2);
    rt.shutdown();
}

#[test]
fn stack_size_below_a_page_is_rejected() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let e = build_error(Runtime::builder().procs(1).stack_size(100));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let message = e.to_string();
    assert!(message.contains("100"), "{message}");
    assert!(
        message.contains("page") && message.contains(&page.to_string()),
        "{message}"
    );
    // One page is the minimum, and allowed.
    let rt = Runtime::builder()
        .procs(1)
        .stack_size(page)
        .build()
        .unwrap();
    assert_eq!(rt.block_on(|| 7), 7);
    rt.shutdown();
}

#[test]
fn max_threads_below_procs_is_rejected() {
    let e = build_error(Runtime::builder().procs(4).max_threads(2));
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("max_threads"), "{e}");
}

#[test]
fn quantum_below_the_minimum_is_rejected() {
    let e = build_error(
        Runtime::builder()
            .procs(1)
            .preempt_quantum(Duration::from_micros(5)),
    );
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[test]
fn goroutine_stack_size_below_a_page_is_rejected() {
    // From a plain thread: the check comes before the default runtime is touched.
    let e = Builder::new().stack_size(100).spawn(|| ()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("100"), "{e}");

    let rt = Runtime::builder().procs(1).build().unwrap();
    let e = Builder::new()
        .stack_size(100)
        .spawn_on(&rt, || ())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    // From a goroutine, on its runtime.
    let kind = rt.block_on(|| {
        Builder::new()
            .stack_size(1)
            .spawn(|| ())
            .map(drop)
            .unwrap_err()
            .kind()
    });
    assert_eq!(kind, ErrorKind::InvalidInput);
    // A small but valid size works.
    let h = Builder::new()
        .stack_size(16 * 1024)
        .spawn_on(&rt, || 5)
        .unwrap();
    assert_eq!(h.join().unwrap(), 5);
    rt.shutdown();
}

#[test]
fn set_max_procs_zero_only_queries() {
    let rt = Runtime::builder().procs(3).build().unwrap();
    assert_eq!(rt.set_max_procs(0), 3);
    assert_eq!(rt.procs(), 3);
    assert_eq!(rt.stats().procs, 3);
    assert_eq!(rt.block_on(|| gort::set_max_procs(0)), 3);
    assert_eq!(rt.procs(), 3);
    rt.shutdown();
}

#[test]
fn set_max_procs_above_the_maximum_panics() {
    let rt = Runtime::builder().procs(1).build().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rt.set_max_procs(1025)));
    let payload = caught.expect_err("set_max_procs(1025) returned");
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("1025") && message.contains("1024"),
        "{message}"
    );
    assert_eq!(rt.procs(), 1);
    rt.shutdown();
}
