//! The C API from C: `tests/c/api.c` compiled against `include/gort.h` and the `libgort.a`
//! that cargo built for this test run, then run (under qemu-user when the tests are); and a
//! check that the header declares exactly the functions `src/ffi.rs` exports.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How long the C program may take before it counts as hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

/// The static library cargo built alongside this test (`deps/libgort-<hash>.a`, the newest
/// if several builds left one).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let mut libs: Vec<_> = std::fs::read_dir(deps)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("libgort-") && n.ends_with(".a")
        })
        .collect();
    libs.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    libs.pop().unwrap_or_else(|| {
        panic!(
            "no libgort-*.a in {}: is crate-type staticlib?",
            deps.display()
        )
    })
}

/// The C compiler for the arch this test was built for: the host's `cc`, or the cross
/// compiler when the tests run under qemu-user.
fn c_compiler() -> &'static str {
    if common::emulator().is_some() {
        match std::env::consts::ARCH {
            "aarch64" => "aarch64-linux-gnu-gcc",
            "x86_64" => "x86_64-linux-gnu-gcc",
            other => panic!("no cross C compiler known for {other}"),
        }
    } else {
        "cc"
    }
}

/// Compile tests/c/api.c into the test's own directory; returns the binary.
fn build_api() -> PathBuf {
    let lib = static_lib();
    let out = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(format!("gort-c-api-{}", std::process::id()));
    let status = Command::new(c_compiler())
        .args([
            "-std=c11",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
        ])
        .arg(format!("-I{ROOT}/include"))
        .arg(format!("{ROOT}/tests/c/api.c"))
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {}: {e}", c_compiler()));
    assert!(
        status.success(),
        "compiling tests/c/api.c against {} failed",
        lib.display()
    );
    out
}

/// Run `bin` (under the emulator when the tests run under one), bounded by CHILD_TIMEOUT.
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = common::command_for(bin);
    cmd.args(args)
        .env_remove("GOMAXPROCS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    common::output_within(cmd, CHILD_TIMEOUT, &bin.display().to_string())
}

/// Every function of the header, from C, at GOMAXPROCS 1, 2 and 8 (8 oversubscribes the
/// machine: the FP-control check then sees goroutines migrate between threads).
#[test]
fn c_program_uses_the_whole_api() {
    let bin = build_api();
    for procs in ["1", "2", "8"] {
        let out = run(&bin, &[], &[("GOMAXPROCS", procs)]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("api ok"),
            "GOMAXPROCS={procs}: {}",
            common::describe(&out)
        );
    }
    let out = run(&bin, &["badenv"], &[("GOMAXPROCS", "lots")]);
    assert!(out.status.success(), "{}", common::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GOMAXPROCS"), "{}", common::describe(&out));
    let _ = std::fs::remove_file(&bin);
}

/// The `gort_*` function names declared in a C header.
fn header_functions(h: &str) -> Vec<String> {
    let mut names = Vec::new();
    for line in h.lines() {
        let line = line.trim();
        if line.starts_with("/*") || line.starts_with('*') || line.starts_with("typedef") {
            continue;
        }
        if let Some(open) = line.find('(') {
            if let Some(name) = line[..open].split_whitespace().last() {
                let name = name.trim_start_matches('*');
                if name.starts_with("gort_") && line.ends_with(");") {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    names
}

/// The `gort_*` functions `src/ffi.rs` exports (`#[unsafe(no_mangle)]`).
fn exported_functions(src: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut exported = false;
    for line in src.lines() {
        let line = line.trim();
        if line == "#[unsafe(no_mangle)]" {
            exported = true;
            continue;
        }
        if exported && let Some(i) = line.find("extern \"C\" fn ") {
            let rest = &line[i + "extern \"C\" fn ".len()..];
            names.push(rest[..rest.find('(').unwrap()].to_string());
        }
        exported = false;
    }
    names.sort();
    names
}

#[test]
fn header_declares_exactly_the_exports() {
    let h = std::fs::read_to_string(format!("{ROOT}/include/gort.h")).unwrap();
    let src = std::fs::read_to_string(format!("{ROOT}/src/ffi.rs")).unwrap();
    let declared = header_functions(&h);
    let exported = exported_functions(&src);
    assert!(declared.len() >= 25, "header parse found only {declared:?}");
    assert_eq!(declared, exported, "include/gort.h and src/ffi.rs disagree");

    // And the library really defines each one (nm: `T gort_...`).
    let out = Command::new("nm")
        .args(["--defined-only", "-g"])
        .arg(static_lib())
        .output();
    match out {
        Ok(out) if out.status.success() => {
            let syms = String::from_utf8_lossy(&out.stdout);
            for f in &declared {
                assert!(
                    syms.lines().any(|l| l.ends_with(&format!(" T {f}"))),
                    "libgort.a does not define {f}"
                );
            }
        }
        _ => eprintln!("nm is not available: the symbol check was skipped"),
    }
}
