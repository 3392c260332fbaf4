#!/usr/bin/env bash
# net.sh: the network figures of issue #6 side by side — TCP echo (64 connections x 64-byte
# round trips, 5 s) and HTTP hello (`wrk -t1 -c64 -d5s --latency`) on gort's examples, Go
# 1.27's anchor servers and tokio (multi-thread, 2 workers), client and server sharing the
# machine. Rounds alternate the servers, so every median comes from one sitting.
#
#   bash benches/net.sh                 # 5 rounds of echo, then 5 of HTTP (~4 minutes)
#   ROUNDS=3 WHAT=echo bash benches/net.sh
#   EXTRA="GORT_PIN=0" bash benches/net.sh     # one more gort column, with that environment
#   THREADS=1 bash benches/net.sh       # also, per run, each thread's CPU and run-queue wait
#   BASE=HEAD~1 bash benches/net.sh     # one more column: gort's examples built at that commit
#   SCHED=1 bash benches/net.sh         # also, per run, where the client waited (perf sched)
#
# A developer tool, not run by CI. Set-up as compare.sh: the Go anchor and the Rust peers
# (echoclient, tokio_bench) are built if missing; gort's examples always (release). Needs
# `wrk` for HTTP (apt-get install wrk). Every command is bounded by `timeout`.
#
# THREADS=1 prints, for a 3 s window in the middle of each run, every thread of the server
# and of the client that ran: CPU (ms), time runnable but waiting for a CPU (ms), voluntary
# and involuntary context switches per round trip or request, and each side's CPU per round
# trip. On a machine where client and server saturate the CPUs, throughput is the CPUs
# divided by the sum of the two sides' CPU per round trip (BENCHMARKS.md, "Network").
#
# SCHED=1 (needs `perf`, from Debian's linux-perf) records the kernel's scheduler events for
# 1 s in the middle of each run and prints how long the client was runnable but not running,
# how much of that while some CPU was idle (time a better placement of the server's threads
# would have given the client), and which threads preempted it. On a saturated machine that
# idle-CPU wait is throughput lost to placement, not to anybody's CPU cost.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-/work/shared/bench}
ROUNDS=${ROUNDS:-5}
WHAT=${WHAT:-echo http}
EXTRA=${EXTRA:-}
THREADS=${THREADS:-0}
SCHED=${SCHED:-0}
BASE=${BASE:-}
GO_ANCHOR=${GO_ANCHOR:-/tmp/go-anchor}
PEERS_SRC=${PEERS_SRC:-/tmp/rust-peers}
PEERS_TARGET=${PEERS_TARGET:-/tmp/rust-peers-target}
GORT_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
P="$PEERS_TARGET/release"
EX="$GORT_TARGET/release/examples"

die() { echo "net.sh: $*" >&2; exit 1; }

. "$ROOT/benches/peers.sh"
need_go_anchor
need_peers echoclient tokio_bench
echo "== building gort's examples echo and http (release)"
(cd "$ROOT" && CARGO_TARGET_DIR="$GORT_TARGET" timeout 1800 cargo build --release \
    --example echo --example http 2>&1 | tail -n 1) || die "building the examples failed"
case " $WHAT " in *" http "*) command -v wrk >/dev/null || die "HTTP needs wrk";; esac
[ "$SCHED" = 1 ] && { command -v perf >/dev/null || die "SCHED=1 needs perf (apt-get install linux-perf)"; }

SERVERS=(gort go tokio)
[ -n "$EXTRA" ] && SERVERS+=(gort+)
if [ -n "$BASE" ]; then
    # The before of a before/after: that commit's tree (git archive: no worktree to clean up),
    # built once into its own directory and reused while the commit is the same.
    rev=$(git -C "$ROOT" rev-parse --verify --quiet "$BASE^{commit}") || die "BASE=$BASE is not a commit"
    BASE_DIR=${TMPDIR:-/tmp}/gort-net-base-${rev:0:12}
    echo "== building gort's examples at $BASE (${rev:0:12}) in $BASE_DIR"
    if [ ! -f "$BASE_DIR/Cargo.toml" ]; then
        mkdir -p "$BASE_DIR" && git -C "$ROOT" archive "$rev" | tar -x -C "$BASE_DIR" ||
            die "cannot extract $BASE into $BASE_DIR"
    fi
    (cd "$BASE_DIR" && CARGO_TARGET_DIR="$BASE_DIR/target" timeout 1800 cargo build --release \
        --example echo --example http 2>&1 | tail -n 1) || die "building $BASE's examples failed"
    BEX="$BASE_DIR/target/release/examples"
    SERVERS+=(base)
fi

# start <workload> <server>: start the server in the background; sets SP and PORT.
start() {
    local env=()
    [ "$2" = gort+ ] && read -r -a env <<<"$EXTRA"
    case "$1:$2" in
    echo:gort*) timeout 60 env "${env[@]}" "$EX/echo" 127.0.0.1:7000 >/dev/null & PORT=7000 ;;
    echo:base) timeout 60 "$BEX/echo" 127.0.0.1:7000 >/dev/null & PORT=7000 ;;
    echo:go) timeout 60 "$GO_ANCHOR" tcpecho-server -addr 127.0.0.1:7001 -life 50s >/dev/null 2>&1 & PORT=7001 ;;
    echo:tokio) timeout 60 "$P/tokio_bench" mt echo 2 50 >/dev/null 2>&1 & PORT=18080 ;;
    http:gort*) timeout 60 env "${env[@]}" "$EX/http" 127.0.0.1:8080 >/dev/null & PORT=8080 ;;
    http:base) timeout 60 "$BEX/http" 127.0.0.1:8080 >/dev/null & PORT=8080 ;;
    http:go) timeout 60 "$GO_ANCHOR" httpserver -addr 127.0.0.1:8081 -life 50s >/dev/null 2>&1 & PORT=8081 ;;
    http:tokio) timeout 60 "$P/tokio_bench" mt http 2 50 >/dev/null 2>&1 & PORT=18081 ;;
    esac
    SP=$!
    sleep 0.5
}

# snap <pid>: one line per thread: tid comm run_ns wait_ns voluntary involuntary.
snap() {
    local t
    for t in /proc/"$1"/task/*; do
        echo "${t##*/} $(tr ' ' _ <"$t/comm") $(cut -d' ' -f1,2 "$t/schedstat")" \
            "$(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' "$t/status")"
    done 2>/dev/null | sort
}

# threads <side> <before> <after> <operations>: the per-thread table of one side.
threads() {
    join "$2" "$3" | awk -v side="$1" -v n="$4" '
        { run = ($8 - $3) / 1e6; wt = ($9 - $4) / 1e6; tr += run; tw += wt
          v += $10 - $5; iv += $11 - $6
          if (run > 1) printf "    %s %-16s cpu %5.0f ms  waiting %5.0f ms  vcs %.3f  ivcs %.3f\n",
              side, $2, run, wt, ($10 - $5) / n, ($11 - $6) / n }
        END { printf "    %s total  cpu %5.0f ms  waiting %5.0f ms  vcs %.3f  ivcs %.3f  cpu/op %.1f us\n",
              side, tr, tw, v / n, iv / n, tr * 1000 / n }'
}

# placement <perf.data> <client tids> <server tids>: the client's waits in a `perf sched
# record` (SCHED=1, see the top). Threads are told apart by tid, CPUs idle by `swapper`.
placement() {
    perf script -i "$1" -F cpu,time,event,trace 2>/dev/null | awk -v cl=" $2 " -v sv=" $3 " '
        function isc(t) { return index(cl, " " t " ") > 0 }
        function iss(t) { return index(sv, " " t " ") > 0 }
        function field(name,   i) {
            for (i = 1; i <= NF; i++) if (index($i, name "=") == 1) return substr($i, length(name) + 2)
            return ""
        }
        {
            cpu = $1; gsub(/[][]/, "", cpu); cpu += 0; t = $2; sub(/:$/, "", t); t += 0
            ev = $3; sub(/:$/, "", ev)
            if (NR == 1) t0 = t
            if (!(cpu in cur)) { cur[cpu] = -1; ncpu++ }
            if (last != "") {
                dt = t - last; idle = 0
                for (c in cur) if (cur[c] == 0) idle = 1
                for (w in runnable) if (runnable[w] && !(w in oncpu)) { wait += dt; if (idle) wait_idle += dt }
            }
            last = t
            if (ev == "sched:sched_switch") {
                prev = field("prev_pid"); st = field("prev_state"); nxt = field("next_pid")
                if (isc(prev)) {
                    delete oncpu[prev]; runnable[prev] = (st ~ /^R/)
                    if (st ~ /^R/) { if (iss(nxt)) by_server++; else by_other++ }
                }
                cur[cpu] = nxt + 0
                if (isc(nxt)) { oncpu[nxt] = 1; runnable[nxt] = 1 }
            } else if (ev == "sched:sched_waking") {
                w = field("pid"); if (isc(w)) runnable[w] = 1
            }
        }
        END {
            printf "    client waited %4.0f ms runnable in %.2f s, %4.0f ms of it with a CPU idle; preempted by the server %d times, by others %d\n",
                wait * 1000, last - t0, wait_idle * 1000, by_server, by_other
        }'
}

# run <workload> <server>: one run; prints "value [p99]".
run() {
    local out cp wp sp d
    d=$(mktemp -d)
    start "$1" "$2"
    if [ "$1" = echo ]; then
        timeout 30 "$P/echoclient" "$2" 2 5 64 "$PORT" >"$d/out" 2>&1 &
    else
        timeout 30 wrk -t1 -c64 -d5s --latency "http://127.0.0.1:$PORT/" >"$d/out" 2>&1 &
    fi
    cp=$!
    if [ "$SCHED" = 1 ]; then
        sleep 2
        sp=$(pgrep -n -P "$SP" || echo "$SP")
        wp=$(pgrep -n -P "$cp" || echo "$cp")
        local stids ctids
        stids=$(ls /proc/"$sp"/task 2>/dev/null | tr '\n' ' ')
        ctids=$(ls /proc/"$wp"/task 2>/dev/null | tr '\n' ' ')
        timeout 20 perf sched record -o "$d/sched.data" -- sleep 1 >/dev/null 2>&1
    fi
    if [ "$THREADS" = 1 ]; then
        sleep 1.5
        # The processes under `timeout`.
        sp=$(pgrep -n -P "$SP" || echo "$SP")
        wp=$(pgrep -n -P "$cp" || echo "$cp")
        snap "$sp" >"$d/s1"; snap "$wp" >"$d/c1"; sleep 3; snap "$sp" >"$d/s2"; snap "$wp" >"$d/c2"
    fi
    wait "$cp"
    kill "$SP" 2>/dev/null; wait "$SP" 2>/dev/null
    if [ "$1" = echo ]; then
        out=$(grep -oE 'value=[0-9]+' "$d/out" | head -n1 | cut -d= -f2)
    else
        out="$(awk '/Requests\/sec/{printf "%d", $2}' "$d/out") $(awk '$1=="99%"{print $2}' "$d/out")"
    fi
    echo "$out"
    if [ "$SCHED" = 1 ] && [ -s "$d/sched.data" ]; then
        placement "$d/sched.data" "$ctids" "$stids" >&2
    fi
    if [ "$THREADS" = 1 ] && [ -s "$d/s2" ]; then
        local ops=$(( ${out%% *} * 3 ))
        [ "$ops" -gt 0 ] && { threads server "$d/s1" "$d/s2" "$ops"; threads client "$d/c1" "$d/c2" "$ops"; } >&2
    fi
    rm -rf "$d"
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END{print (NR ? a[int((NR+1)/2)] : "-")}'; }

for w in $WHAT; do
    declare -A vals=() p99s=()
    echo "== $w: $ROUNDS alternated rounds (load $(cut -d' ' -f1-3 /proc/loadavg))"
    for r in $(seq 1 "$ROUNDS"); do
        line="  round $r:"
        for s in "${SERVERS[@]}"; do
            res=$(run "$w" "$s")
            vals[$s]+=" ${res%% *}"
            [ "$w" = http ] && p99s[$s]+=" ${res#* }"
            line+="  $s $res"
        done
        echo "$line"
    done
    g=$(echo "${vals[gort]}" | median)
    for s in "${SERVERS[@]}"; do
        m=$(echo "${vals[$s]}" | median)
        extra=""
        [ "$w" = http ] && extra="  p99s:${p99s[$s]}"
        ratio="        "
        [ "$s" != gort ] && ratio="gort/$s $(awk -v a="$g" -v b="$m" 'BEGIN{printf (b > 0 ? "%.2f" : "-"), a / b}')"
        printf "  %-6s median %8s  %s  runs:%s%s\n" "$s" "$m" "$ratio" "${vals[$s]}" "$extra"
    done
    unset vals p99s
done
if [ -n "$EXTRA" ]; then echo "(gort+ is gort with $EXTRA)"; fi
if [ -n "$BASE" ]; then echo "(base is gort at $BASE, ${rev:0:12})"; fi
