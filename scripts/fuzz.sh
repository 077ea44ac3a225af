#!/usr/bin/env bash
# Coverage-guided fuzzing with cargo-afl (AFL++) on the stable toolchain.
#
#   scripts/fuzz.sh [--minutes N] [--target NAME]...
#
# Installs what it needs when missing (Debian packages, cargo-afl matching the
# `afl` crate in Cargo.lock, the AFL++ runtime), writes the seed corpora,
# builds the AFL binaries, fuzzes every target (or the named ones) for N
# minutes each (default 10), at most `nproc` at a time, and prints per target
# executions, corpus size, crashes and hangs. Crash inputs are copied into
# fuzz/regressions/<target>/ (replayed by `cargo test -p gatehouse-fuzz`), the
# minimised queue into fuzz/corpus/<target>/ when it is small (< 200 files and
# < 1 MiB). Exits non-zero when any target crashed or a fuzzer failed.
#
# Work files (seeds, AFL output, logs): $FUZZ_WORK_DIR, default
# ${CARGO_TARGET_DIR:-target}/fuzz-work.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."

minutes=10
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="${2:?--minutes needs a number}"; shift 2 ;;
        --target) targets+=("${2:?--target needs a name}"); shift 2 ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$minutes" in ''|*[!0-9.]*) echo "--minutes wants a number, got '$minutes'" >&2; exit 2 ;; esac
seconds=$(awk -v m="$minutes" 'BEGIN { s = int(m * 60); print (s < 10 ? 10 : s) }')

log() { printf '\n== %s\n' "$*"; }

# gcc + make: cargo-afl builds AFL++ from the source shipped in the crate.
. scripts/ensure-packages.sh
ensure_packages gcc make
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }

# cargo-afl must match the `afl` crate the binaries link.
afl_version=$(awk '$0 == "name = \"afl\"" { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
[ -n "$afl_version" ] || { echo "no afl package in Cargo.lock" >&2; exit 1; }
if ! cargo afl --version 2>/dev/null | grep -q "^cargo-afl $afl_version "; then
    log "installing cargo-afl $afl_version"
    cargo install cargo-afl --locked --version "$afl_version" --force
fi
# AFL++ itself (afl-fuzz and the LLVM runtime for this rustc); a no-op when built.
if ! out=$(cargo afl config --build 2>&1); then
    grep -q "already built" <<<"$out" || { echo "$out" >&2; echo "cargo afl config --build failed" >&2; exit 1; }
fi

# afl-cmin.bash from the AFL++ build of this rustc (the Python afl-cmin of
# AFL++ 4.40c keeps no file of a Rust persistent-mode target).
rustc_id=$(rustc -V | awk '{ print $2 "-" substr($3, 2, 7) }')
afl_bin="${XDG_DATA_HOME:-$HOME/.local/share}/afl.rs/rustc-$rustc_id/afl.rs-$afl_version/afl/bin"
[ -x "$afl_bin/afl-cmin.bash" ] || { echo "no $afl_bin/afl-cmin.bash after cargo afl config --build" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
work="${FUZZ_WORK_DIR:-$target_dir/fuzz-work}"
mkdir -p "$work"

log "seed corpora -> $work/seeds"
rm -rf "$work/seeds"
cargo run --locked -q -p gatehouse-fuzz --bin gen-seeds -- "$work/seeds" "${targets[@]}"
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo run --locked -q -p gatehouse-fuzz --bin gen-seeds -- --list)
fi
# Inputs worth keeping from earlier runs start the next one too.
for t in "${targets[@]}"; do
    for d in fuzz/corpus/"$t" fuzz/regressions/"$t"; do
        [ -d "$d" ] || continue
        find "$d" -maxdepth 1 -type f ! -name 'README*' ! -name '.*' -exec cp {} "$work/seeds/$t/" \;
    done
done

log "cargo afl build --release --features afl -p gatehouse-fuzz"
cargo afl build --locked --release --features afl -p gatehouse-fuzz
bin_dir="$target_dir/release"

export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1 \
    AFL_NO_AFFINITY=1
jobs_max=$(nproc)
log "fuzzing ${targets[*]} for ${seconds}s each, at most $jobs_max at a time (logs: $work/<target>.log)"
pids=()
for t in "${targets[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do wait -n || true; done
    rm -rf "$work/out/$t"
    mkdir -p "$work/out"
    echo "start $t"
    nice -n 10 cargo afl fuzz -i "$work/seeds/$t" -o "$work/out/$t" -V "$seconds" \
        -- "$bin_dir/afl_$t" >"$work/$t.log" 2>&1 &
    pids+=("$!")
done
failed_start=()
for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || failed_start+=("${targets[$i]}")
done

stat() { awk -F' *: *' -v k="$1" '$1 == k { print $2 }' "$2"; }
status=0
log "results"
printf '%-18s %12s %10s %8s %8s %6s\n' target executions exec/s corpus crashes hangs
for t in "${targets[@]}"; do
    stats="$work/out/$t/default/fuzzer_stats"
    if [ ! -f "$stats" ]; then
        printf '%-18s did not run: see %s\n' "$t" "$work/$t.log"
        tail -n 20 "$work/$t.log" >&2 || true
        status=1
        continue
    fi
    execs=$(stat execs_done "$stats")
    runtime=$(stat run_time "$stats")
    rate=$(awk -v e="$execs" -v s="$runtime" 'BEGIN { printf "%.0f", (s > 0 ? e / s : 0) }')
    crashes=$(stat saved_crashes "$stats")
    hangs=$(stat saved_hangs "$stats")
    printf '%-18s %12s %10s %8s %8s %6s\n' "$t" "$execs" "$rate" \
        "$(stat corpus_count "$stats")" "$crashes" "$hangs"
    if [[ " ${failed_start[*]} " == *" $t "* ]]; then
        echo "  afl-fuzz exited with an error: see $work/$t.log"
        status=1
    fi
    if [ "${crashes:-0}" -gt 0 ]; then
        status=1
        mkdir -p "fuzz/regressions/$t"
        for f in "$work/out/$t/default/crashes"/id:*; do
            name="crash-$(sha256sum "$f" | cut -c1-16)"
            cp "$f" "fuzz/regressions/$t/$name"
            echo "  crash -> fuzz/regressions/$t/$name"
        done
    fi
    if [ "${hangs:-0}" -gt 0 ]; then
        echo "  hangs (not copied): $work/out/$t/default/hangs/"
    fi
    # Minimised queue, kept in the repository only when small.
    min="$work/min/$t"
    rm -rf "$min"
    if PATH="$afl_bin:$PATH" afl-cmin.bash -i "$work/out/$t/default/queue" -o "$min" \
        -- "$bin_dir/afl_$t" >"$work/$t.cmin.log" 2>&1; then
        count=$(find "$min" -type f | wc -l)
        bytes=$(du -sb "$min" | cut -f1)
        if [ "$count" -lt 200 ] && [ "$bytes" -lt 1048576 ]; then
            rm -rf "fuzz/corpus/$t"
            mkdir -p "fuzz/corpus/$t"
            for f in "$min"/*; do
                cp "$f" "fuzz/corpus/$t/$(sha256sum "$f" | cut -c1-16)"
            done
            echo "  minimised corpus: $count files, $bytes bytes -> fuzz/corpus/$t/"
        else
            echo "  minimised corpus: $count files, $bytes bytes (too large to keep; in $min)"
        fi
    else
        echo "  afl-cmin failed: see $work/$t.cmin.log"
    fi
done
[ "$status" -eq 0 ] && log "no crashes" || log "FAILED: crashes or fuzzer errors above"
exit "$status"
