#!/usr/bin/env bash
# compare.sh: gort side by side with Go 1.27 and the Rust peers (may, tokio, OS threads)
# on the yield, chanpingpong, spawn and memory workloads; prints a table of medians and
# gort/peer ratios.
#
#   bash benches/compare.sh             # 3 interleaved passes, about 3 minutes once built
#   RUNS=1 bash benches/compare.sh      # one quick pass
#
# A developer tool, not run by CI. Idempotent set-up: installs Go with the anchor's
# install.sh and builds the Go anchor and the Rust peers only if their binaries are
# missing; always (re)builds gort's `examples/bench` in release. Every command is bounded
# by `timeout`. The machine is shared: the script prints the load average before and after,
# and the table is only worth quoting when both are low.
#
# Knobs (environment):
#   RUNS=3                                   passes (each runs every command once)
#   GO_ANCHOR=/tmp/go-anchor                 anchor binary (built if missing)
#   PEERS_SRC=/tmp/rust-peers                writable copy of the peers (copied if missing)
#   PEERS_TARGET=/tmp/rust-peers-target      its cargo target dir
#   CARGO_TARGET_DIR                         gort's target dir (default: <repo>/target)
#   OUT=/tmp/gort-compare                    raw results and logs
#   SMALL_N=20000                            spawn count for may and OS threads
#   NICE=0                                   niceness of the benchmark commands; on a shared
#                                            machine NICE=-10 (as root) keeps compiles of
#                                            others from taking half the CPU mid-run
#   CHRT=                                    a SCHED_FIFO priority (e.g. 50, as root) for the
#                                            benchmark commands: on a machine loaded by
#                                            others, the only way latency figures (timers)
#                                            measure the runtime and not the other load
#
# Workloads (the same shapes and sizes everywhere; see examples/bench.rs for the gort side):
#   yield   2 goroutines x 10M yields, 1 P              ns per switch
#   spawn   1M empty goroutines, wait for all; 1 and 2 Ps; a cold then a warm round (Go,
#           gort); may and OS threads at 20k (may cannot hold more live coroutines under
#           the default vm.max_map_count; threads would take minutes)   ns per goroutine
#   chanpingpong  1M round trips over two unbuffered channels, 1 and 2 Ps (OS threads:
#           200k, std mpsc)                              ns per round trip
#   memory  100k goroutines parked (OS threads 10k; may as many as vm.max_map_count allows)
#                                                        RSS bytes per goroutine
#   timers  100k goroutines each sleep a random 1-100 ms once, 1 P / worker
#                                                        p99 oversleep, us
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-/work/shared/bench}
RUNS=${RUNS:-3}
GO_ANCHOR=${GO_ANCHOR:-/tmp/go-anchor}
PEERS_SRC=${PEERS_SRC:-/tmp/rust-peers}
PEERS_TARGET=${PEERS_TARGET:-/tmp/rust-peers-target}
OUT=${OUT:-/tmp/gort-compare}
NICE=${NICE:-0}
CHRT=${CHRT:-}
PRIO=(nice -n "$NICE")
[ -n "$CHRT" ] && PRIO=(chrt -f "$CHRT")
GORT_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
GORT="$GORT_TARGET/release/examples/bench"
P="$PEERS_TARGET/release"
T=120 # seconds: bound for one benchmark command
# may maps every coroutine stack with an mprotect guard (2 VMAs), so vm.max_map_count caps
# its live coroutines (~32k at the default 65530); OS threads take ~100 us each to spawn.
SMALL_N=${SMALL_N:-20000}

mkdir -p "$OUT"
RAW=$OUT/raw.txt
: >"$RAW"
: >"$OUT/commands.txt"
: >"$OUT/stderr.txt"

die() { echo "compare.sh: $*" >&2; exit 1; }
load() { cut -d' ' -f1-3 /proc/loadavg; }

# ---------------------------------------------------------------------------- set-up

. "$ROOT/benches/peers.sh"
need_go_anchor
need_peers may_bench tokio_bench threads_bench

echo "== building gort's examples/bench (release, target $GORT_TARGET)"
(cd "$ROOT" && CARGO_TARGET_DIR="$GORT_TARGET" timeout 1800 cargo build --release --example bench \
    2>&1 | tail -n 1) || die "building examples/bench failed"
[ -x "$GORT" ] || die "no $GORT"

# ---------------------------------------------------------------------------- running

# run <pass> <tool> <command...>: run bounded, keep result lines tagged with pass and tool.
# gort and Go print `workload=W procs=N value=V unit=U`; the peers print
# `peer=X workload=W threads=N value=V unit=U [extras]`. Both become
# `run=R tool=TOOL key=W@N value=V unit=U` (spawn keys of the peers carry their n).
run() {
    local pass=$1 tool=$2
    shift 2
    echo "${PRIO[*]} timeout $T env $*" >>"$OUT/commands.txt"
    local out rc
    out=$("${PRIO[@]}" timeout "$T" env "$@" 2>>"$OUT/stderr.txt")
    rc=$?
    [ $rc -eq 0 ] || echo "  !! rc=$rc: $*" >&2
    echo "$out" | awk -v run="$pass" -v tool="$tool" '
        /workload=/ {
            delete f
            for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = substr($i, length(kv[1]) + 2) }
            if (tool == "peer") tool_ = f["peer"]; else tool_ = tool
            n = ("threads" in f) ? f["threads"] : f["procs"]
            w = f["workload"]
            if (w == "spawn" && ("n" in f)) w = w "/" f["n"]
            # the peers report the timers p99 in ms; gort and Go in us
            if (w == "timers_p99") { w = "timers_100k_oversleep_p99"; f["value"] = f["value"] * 1000; f["unit"] = "us" }
            extra = ("parked" in f) ? " parked=" f["parked"] : ""
            printf "run=%s tool=%s key=%s@%s value=%s unit=%s%s\n", run, tool_, w, n, f["value"], f["unit"], extra
        }' | tee -a "$RAW"
}

one_pass() {
    local r=$1
    echo "== pass $r / $RUNS (load $(load))"
    # yield: 2 x 10M, one P / worker
    run "$r" gort GOMAXPROCS=1 "$GORT" yield -g 2 -n 10000000
    run "$r" go GOMAXPROCS=1 "$GO_ANCHOR" yield -g 2 -n 10000000
    run "$r" peer "$P/may_bench" yield 1
    run "$r" peer "$P/tokio_bench" ct yield 1
    run "$r" peer "$P/tokio_bench" mt yield 1
    run "$r" peer "$P/threads_bench" yield 1
    # chanpingpong: 1M round trips over unbuffered channels (OS threads: their default 200k)
    for procs in 1 2; do
        run "$r" gort GOMAXPROCS=$procs "$GORT" chanpingpong -n 1000000
        run "$r" go GOMAXPROCS=$procs "$GO_ANCHOR" chanpingpong -n 1000000
        run "$r" peer "$P/may_bench" chanpingpong $procs
        run "$r" peer "$P/tokio_bench" mt chanpingpong $procs
        run "$r" peer "$P/threads_bench" chanpingpong $procs
    done
    run "$r" peer "$P/tokio_bench" ct chanpingpong 1
    # spawn: 1M (may and OS threads: $SMALL_N)
    for procs in 1 2; do
        run "$r" gort GOMAXPROCS=$procs "$GORT" spawn -n 1000000
        run "$r" go GOMAXPROCS=$procs "$GO_ANCHOR" spawn -n 1000000
        run "$r" peer "$P/may_bench" spawn $procs $SMALL_N
        run "$r" peer "$P/tokio_bench" mt spawn $procs 1000000
        run "$r" peer "$P/threads_bench" spawn $procs $SMALL_N
    done
    run "$r" peer "$P/tokio_bench" ct spawn 1 1000000
    # memory: 100k parked (OS threads: 10k)
    run "$r" gort GOMAXPROCS=2 "$GORT" memory -n 100000
    run "$r" go GOMAXPROCS=2 "$GO_ANCHOR" memory -n 100000
    run "$r" peer "$P/may_bench" memory 1
    run "$r" peer "$P/tokio_bench" ct memory 1
    run "$r" peer "$P/threads_bench" memory 1
    # timers: 100k sleepers of 1-100 ms, 1 P / worker
    run "$r" gort GOMAXPROCS=1 "$GORT" timers -n 100000
    run "$r" go GOMAXPROCS=1 "$GO_ANCHOR" timers -n 100000
    run "$r" peer "$P/may_bench" timers 1 100000
    run "$r" peer "$P/tokio_bench" ct timers 1 100000
    run "$r" peer "$P/tokio_bench" mt timers 1 100000
}

LOAD_BEFORE=$(load)
START=$(date +%s)
for r in $(seq 1 "$RUNS"); do one_pass "$r"; done
LOAD_AFTER=$(load)

# ---------------------------------------------------------------------------- table

# median <tool> <key>: median of the numeric values over the passes, or "-".
median() {
    awk -v tool="$1" -v key="$2" '
        { delete f; for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] } }
        f["tool"] == tool && f["key"] == key && f["value"] ~ /^[0-9.]+$/ { print f["value"] }' "$RAW" |
        sort -g | awk '{ v[NR] = $1 } END {
            if (NR == 0) { print "-"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m }'
}

ratio() { # gort/peer: 2 decimals (2 significant digits below 0.1), "-" when either is missing
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b + 0 == 0) { print "-"; exit }
        r = a / b; if (r < 0.1) printf "%.2g\n", r; else printf "%.2f\n", r }'
}

min2() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-") print b; else if (b == "-" || a + 0 <= b + 0) print a; else print b }'; }

echo
echo "== gort vs peers: medians of $RUNS run(s); lower is better; ratio = gort / peer"
echo "   $(date -u +%Y-%m-%dT%H:%M:%SZ), $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), kernel $(uname -r)"
echo "   load average before $LOAD_BEFORE, after $LOAD_AFTER; $(($(date +%s) - START)) s of measuring; ${PRIO[*]}"
echo
printf '| %-40s | %-12s | %9s | %9s | %9s | %9s | %9s | %9s | %7s | %8s | %10s |\n' \
    workload unit gort Go may tokio-ct tokio-mt threads gort/Go gort/may gort/tokio
printf '|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|%s|\n' ------------------------------------------ \
    -------------- ----------- ----------- ----------- ----------- ----------- ----------- \
    --------- ---------- ------------

# row <label> <unit> <gort key> <go key> <may key> <tokio-ct key> <tokio-mt key> <threads key>
row() {
    local g go may tct tmt th tbest
    g=$(median gort "$3")
    go=$(median go "$4")
    may=$(median may "$5")
    tct=$(median tokio-ct "$6")
    tmt=$(median tokio-mt "$7")
    th=$(median os-threads "$8")
    tbest=$(min2 "$tct" "$tmt")
    printf '| %-40s | %-12s | %9s | %9s | %9s | %9s | %9s | %9s | %7s | %8s | %10s |\n' \
        "$1" "$2" "$g" "$go" "$may" "$tct" "$tmt" "$th" \
        "$(ratio "$g" "$go")" "$(ratio "$g" "$may")" "$(ratio "$g" "$tbest")"
}

row "yield, 2 x 10M, 1 P" ns/switch yield@1 yield@1 yield@1 yield@1 yield@1 yield@1
row "chan ping-pong, 1M round trips, 1 P" ns/roundtrip chanpingpong@1 chanpingpong@1 chanpingpong@1 chanpingpong@1 chanpingpong@1 chanpingpong@1
row "chan ping-pong, 1M round trips, 2 P" ns/roundtrip chanpingpong@2 chanpingpong@2 chanpingpong@2 - chanpingpong@2 chanpingpong@2
row "spawn 1M, 1 P (may, threads: *)" ns/goroutine spawn@1 spawn@1 spawn/$SMALL_N@1 spawn/1000000@1 spawn/1000000@1 spawn/$SMALL_N@1
row "spawn 1M, 2 P (may, threads: *)" ns/goroutine spawn@2 spawn@2 spawn/$SMALL_N@2 - spawn/1000000@2 spawn/$SMALL_N@2
row "spawn 1M warm round, 1 P" ns/goroutine spawn_warm@1 spawn_warm@1 - - - -
row "spawn 1M warm round, 2 P" ns/goroutine spawn_warm@2 spawn_warm@2 - - - -
row "spawn 1M VmHWM, 1 P" MiB spawn_vmhwm@1 spawn_vmhwm@1 - - - -
row "spawn 1M VmHWM, 2 P" MiB spawn_vmhwm@2 spawn_vmhwm@2 - - - -
row "spawn 1M: VmRSS after 2 s idle, 1 P" MiB spawn_rss_idle@1 - - - - -
row "spawn 1M: VmRSS after 2 s idle, 2 P" MiB spawn_rss_idle@2 - - - - -
row "memory: 100k parked (may, threads: *)" bytes/parked memory_100k_rss_per_goroutine@2 \
    memory_100k_rss_per_goroutine@2 memory@1 memory@1 - memory@1
row "timers: 100k sleepers, p99 oversleep, 1 P" us timers_100k_oversleep_p99@1 \
    timers_100k_oversleep_p99@1 timers_100k_oversleep_p99@1 timers_100k_oversleep_p99@1 \
    timers_100k_oversleep_p99@1 -
echo
echo "* may and OS threads spawn $SMALL_N; OS threads park 10k; may parks as many of 100k as it can map:" \
    "$(grep -o 'tool=may key=memory@1 .*parked=[0-9]*' "$RAW" | sed 's/.*parked=//' | sort -u | tr '\n' ' ')"
echo "  threads' yield is sched_yield(2); their ping-pong uses std mpsc, 200k round trips."
echo "  Go and gort memory run at GOMAXPROCS=2, the peers on 1 worker."
echo "Raw results: $RAW; commands: $OUT/commands.txt; stderr: $OUT/stderr.txt"
