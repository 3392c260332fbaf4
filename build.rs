//! Build script: refuses unsupported targets and assembles `asm/<arch>/*.S` with `cc`.
//!
//! gort runs on Linux x86_64 and aarch64 only; anything else stops here with one message that
//! names the target, rather than with a confusing error from the assembler or from `src/arch`.
//! Every `.S` file of the target architecture's directory is assembled (so adding
//! `preempt.S` needs no change here) with the `Context` offsets of `src/arch/offsets.rs`
//! passed as `-D NAME=value`: the assembly names offsets, it never spells numbers.
//!
//! Build scripts run on the host, so the target is read from `CARGO_CFG_TARGET_*`, never
//! from `cfg!`.

use std::env;
use std::path::PathBuf;

#[path = "src/arch/offsets.rs"]
#[allow(dead_code, reason = "the constants are read through the `ALL` tables")]
mod offsets;

const OFFSETS_FILE: &str = "src/arch/offsets.rs";

fn main() {
    let os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let target = env::var("TARGET").unwrap_or_default();

    let offsets: &[(&str, usize)] = match (os.as_str(), arch.as_str()) {
        ("linux", "x86_64") => offsets::x86_64::ALL,
        ("linux", "aarch64") => offsets::aarch64::ALL,
        _ => panic!(
            "gort supports only Linux on x86_64 and aarch64; target `{target}` \
             (os `{os}`, arch `{arch}`) is not supported"
        ),
    };

    let dir = PathBuf::from("asm").join(&arch);
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed={OFFSETS_FILE}");

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("gort: cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("gort: reading the asm directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "S"))
        .collect();
    sources.sort(); // a stable archive order whatever readdir returns
    if sources.is_empty() {
        panic!("gort: no .S files in {}", dir.display());
    }

    let mut build = cc::Build::new();
    for source in &sources {
        // Directory mtimes change only when entries are added or removed: watch edits too.
        println!("cargo:rerun-if-changed={}", source.display());
        build.file(source);
    }
    for (name, value) in offsets {
        build.define(name, value.to_string().as_str());
    }
    build.compile("gort_asm");
}
