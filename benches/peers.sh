# peers.sh: sourced by compare.sh and net.sh. Builds what the comparisons run against, once:
# the Go 1.27 anchor (installing Go with the anchor's install.sh) and the Rust peers' binaries.
# Expects SHARED, GO_ANCHOR, PEERS_SRC, PEERS_TARGET and a `die` function.

# need_go_anchor: build $GO_ANCHOR if it is missing.
need_go_anchor() {
    [ -x "$GO_ANCHOR" ] && return
    echo "== installing Go and building the anchor -> $GO_ANCHOR"
    local go
    go=$(timeout 900 bash "$SHARED/go-anchor/install.sh" | sed -n 's/^GO=//p' | tail -n1)
    [ -n "$go" ] || die "the anchor's install.sh gave no GO=<path>"
    (cd "$SHARED/go-anchor/src" &&
        GOTOOLCHAIN=local GOPROXY=off GOSUMDB=off GOFLAGS=-mod=mod \
            timeout 600 "$go" build -o "$GO_ANCHOR" .) || die "building the Go anchor failed"
}

# need_peers <bin>...: build the Rust peers' binaries if any of them is missing.
need_peers() {
    local b missing=0 args=()
    for b in "$@"; do
        [ -x "$PEERS_TARGET/release/$b" ] || missing=1
        args+=(--bin "$b")
    done
    [ "$missing" = 1 ] || return 0
    echo "== building the Rust peers in $PEERS_SRC (target $PEERS_TARGET)"
    [ -d "$PEERS_SRC" ] || cp -r "$SHARED/rust-peers" "$PEERS_SRC" || die "cannot copy the peers"
    (cd "$PEERS_SRC" && CARGO_TARGET_DIR="$PEERS_TARGET" timeout 1800 cargo build --release \
        "${args[@]}") || die "building the peers failed"
}
