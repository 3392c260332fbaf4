//! gort: Go's goroutine scheduler (the G/M/P model) for Rust and C programs.
//!
//! (Crate essay: see README.md and ../DESIGN; filled in as subsystems land.)

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

#[cfg(not(target_os = "linux"))]
compile_error!("gort runs on Linux only");

pub(crate) mod loom;

#[cfg(not(loom))]
pub(crate) mod arch;
#[cfg(not(loom))]
pub(crate) mod stack;

pub(crate) mod sched;
