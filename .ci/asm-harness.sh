#!/usr/bin/env bash
# .ci/asm-harness.sh <x86_64|aarch64>: check asm/<arch>/switch.S from C, without Rust.
#
# Assembles asm/<arch>/switch.S with the offsets of src/arch/offsets.rs, passed as -D exactly
# as build.rs passes them (the `NAME = value;` lines of `pub mod <arch>`), links it with
# asm/harness/switch_harness.c and runs the result: natively when the host is <arch>,
# otherwise with <arch>-linux-gnu-gcc under qemu-<arch>. Exit status: the harness's.
set -euo pipefail

arch=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
offsets=$root/src/arch/offsets.rs

case $arch in
    x86_64 | aarch64) ;;
    *) echo "usage: $0 x86_64|aarch64" >&2; exit 2 ;;
esac

if [ "$(uname -m)" = "$arch" ]; then
    cc=${CC:-gcc}
    run=()
else
    cc=$arch-linux-gnu-gcc
    run=(qemu-"$arch" -L /usr/"$arch"-linux-gnu)
fi

# The `pub mod <arch> { ... }` block of offsets.rs, one `-DNAME=value` per constant.
defs=$(awk -v arch="$arch" '
    $0 ~ "^pub mod " arch " [{]" { inside = 1; next }
    inside && /^[}]/ { inside = 0 }
    inside && $1 ~ /^[A-Z][A-Z0-9_]*$/ && $2 == "=" {
        value = $3; sub(/;$/, "", value); printf "-D%s=%s ", $1, value
    }' "$offsets")
if [ -z "$defs" ]; then
    echo "$0: no constants for $arch in $offsets" >&2
    exit 1
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# shellcheck disable=SC2086 # $defs is a list of words on purpose
"$cc" -O2 -Wall -Wextra -Werror $defs -o "$out/switch_harness" \
    "$root/asm/harness/switch_harness.c" "$root/asm/$arch/switch.S"
"${run[@]}" "$out/switch_harness"
