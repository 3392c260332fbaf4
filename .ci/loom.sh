#!/usr/bin/env bash
# Runs the loom models of gort's lock-free cores (src/sched/runq.rs, and the idle/park
# protocol once it has models) under `--cfg loom`, where the ring shrinks to 4 slots.
#
# Usage: .ci/loom.sh [test-name-filter...]      (default: every loom model in the library)
#
# Environment:
#   LOOM_MAX_PREEMPTIONS  preemption bound for models that do not set their own (loom reads it;
#                         unset = exhaustive; the runq models take ~20 s exhaustively)
#   LOOM_TARGET_DIR       cargo target dir for the loom build (default: <target dir>/loom, so
#                         the `--cfg loom` build never invalidates the normal one)
#   LOOM_LOG=1, LOOM_LOCATION=1  loom's own diagnostics for a failing model
#
# Exits non-zero if any model fails (or the build does).
set -euo pipefail

cd "$(dirname "$0")/.."

base_target="${CARGO_TARGET_DIR:-target}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-$base_target/loom}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
# Loom models are CPU-bound and single-threaded each; one test thread per core.
threads="$(nproc 2>/dev/null || echo 2)"

echo "loom: target dir $CARGO_TARGET_DIR, LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-unbounded}"
# Under cfg(loom) only the lock-free cores and their models compile, so the library's test
# binary holds nothing but loom models; the filters narrow them further.
exec cargo test --release --lib -- --test-threads="$threads" "$@"
