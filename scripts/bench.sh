#!/usr/bin/env bash
# The comparison that matters, in one command: the embedded broker
# (`gatehouse serve`) vs Mosquitto + the Gatehouse plugin vs plain Mosquitto
# with the same rules in acl_file, for connect, publish QoS 0 and 1 (flat
# out), saturate QoS 0 and 1 (highest zero-loss rate, 4x overload goodput,
# exact loss accounting), ingest and revoke; contenders interleaved
# (A B C A B C ...), medians of 3 rounds and the ratios. Builds the release
# binaries first; every server it uses (private PostgreSQL, Mosquitto,
# gatehouse serve) is started and stopped by gatehouse-bench itself. About
# 25 minutes on a 2-core machine, estimated: saturate alone took 17.5 min on
# 2026-12-03, the other scenarios 6.5 min on 2026-12-01.
#
#   scripts/bench.sh                  # full run, ~25 min (estimate)
#   scripts/bench.sh --quick          # smoke run (or BENCH_QUICK=1): every scenario once, tiny durations
#   scripts/bench.sh --only saturate-qos0,saturate-qos1   # the saturation table
#   scripts/bench.sh --rounds 5       # any `gatehouse-bench suite` option
#
# Results: the table on stdout, JSON in target/bench/results.json
# (BENCH_JSON=FILE to change). Not part of scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*" >&2; }

# The same system packages as the tests (PostgreSQL, Mosquitto, headers for
# the plugin), plus taskset (util-linux) for pinning.
APT_PACKAGES=(gcc make pkg-config ca-certificates postgresql util-linux procps
    mosquitto mosquitto-dev libmosquitto-dev libclang-dev libssl-dev)
. scripts/ensure-packages.sh
ensure_packages "${APT_PACKAGES[@]}"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

args=("$@")
if [ "${BENCH_QUICK:-0}" != 0 ]; then
    args+=(--quick)
fi

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
log "cargo build --release (gatehouse, gatehouse-bench, libgatehouse_mosquitto.so)"
cargo build --release --locked -p gatehouse-broker -p gatehouse-bench -p gatehouse-mosquitto
export GATEHOUSE_PLUGIN_SO="$target_dir/release/libgatehouse_mosquitto.so"

# Connections held at once stay far below this, but sockets in TIME_WAIT and
# idle sessions add up.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# With 2+ cores: the broker under test on CPU 0, the load generator on CPU 1
# (PostgreSQL is started before the pinning and floats).
pin=()
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    pin=(--pin-broker 0 --pin-client 1)
fi

json="${BENCH_JSON:-$target_dir/bench/results.json}"
mkdir -p "$(dirname "$json")"
log "gatehouse-bench suite ${pin[*]} ${args[*]}"
"$target_dir/release/gatehouse-bench" suite \
    --gatehouse "$target_dir/release/gatehouse" \
    --json "$json" "${pin[@]}" "${args[@]}"
log "JSON: $json"
