#!/usr/bin/env bash
# Runs every test in the workspace. On a fresh Debian machine it first installs
# the system packages the tests need (when missing), so CI and a new developer
# machine need nothing done by hand. Fails loudly on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }

# System packages the build and the tests need. Later parts of Gatehouse add
# theirs here. postgresql: the private test clusters of tests/src/postgres.rs;
# util-linux: setpriv (runs them as `postgres`); procps: kill;
# mosquitto-clients: mosquitto_pub/mosquitto_sub in the broker tests;
# curl openssl jq unzip: the provisioning walkthrough test (README).
APT_PACKAGES=(gcc make pkg-config ca-certificates postgresql util-linux procps
    curl openssl jq unzip
    # Mosquitto plugin: headers for bindgen (+ libclang), libcrypto to link,
    # the broker and its command-line clients for the end-to-end tests.
    mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev libclang-dev libssl-dev)

. scripts/ensure-packages.sh
ensure_packages "${APT_PACKAGES[@]}"

command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy

# The broker load test holds 500 client connections in one process.
ulimit -n 4096 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

export RUST_BACKTRACE=1
export CARGO_TERM_COLOR=never

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "build libgatehouse_mosquitto.so for the Mosquitto end-to-end tests"
cargo build --locked -p gatehouse-mosquitto
export GATEHOUSE_PLUGIN_SO="${CARGO_TARGET_DIR:-$PWD/target}/debug/libgatehouse_mosquitto.so"

log "cargo test (unit, integration, doc tests; benchmarks run once in test mode)"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --workspace --all-targets --locked 2>&1 | tee -a "$results"
cargo test --workspace --doc --locked 2>&1 | tee -a "$results"

# One closing line over every test binary: "N passed, N failed".
read -r passed failed < <(awk '/^test result: /{
    for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i }
} END { print p + 0, f + 0 }' "$results")
log "all tests passed"
echo "${passed:-0} passed, ${failed:-0} failed"
