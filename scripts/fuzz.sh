#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads untrusted bytes (fuzz/, cargo fuzz).
#
#   scripts/fuzz.sh [SECONDS]          each target for SECONDS (default 15), FUZZ_JOBS (default:
#                                      the cores) at a time
#   FUZZ_TARGETS="frame md5" scripts/fuzz.sh 60      some targets only
#   scripts/fuzz.sh build              only build the targets (scripts/test.sh does it early,
#                                      in the background)
#
# Idempotent: installs cargo-fuzz when it is missing (needs the nightly toolchain, which
# cargo fuzz uses for its sanitizer flags). Each target starts from its committed seeds,
# fuzz/corpus/<target>/seed-*; what a run adds there is not committed (fuzz/.gitignore).
# Exits 1 when a target fails (a panic, an assertion of its property, a sanitizer report,
# a timeout): the input is in fuzz/artifacts/<target>/, and its run's log in
# fuzz/artifacts/<target>.log. Builds and runs hold /tmp/pgmux-cargo.lock (PGMUX_CARGO_LOCK;
# "" for none), as the other cargo commands on a shared machine do, unless an ancestor holds it
# already (`flock /tmp/pgmux-cargo.lock scripts/test.sh`, which runs this): taking it again
# would wait forever.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_ONLY=0
[ "${1:-}" = build ] && BUILD_ONLY=1 && shift
SECONDS_EACH=${1:-15}
LOCK=${PGMUX_CARGO_LOCK-/tmp/pgmux-cargo.lock}
cd "$ROOT/fuzz"
# The targets are built into fuzz/target and run from there, whatever CARGO_TARGET_DIR the
# caller set for pgmux's own build (with it, they were built elsewhere and stale ones run).
export CARGO_TARGET_DIR="$ROOT/fuzz/target"

# Whether this process or one of its ancestors holds flock $1 (/proc/locks: "N: FLOCK ADVISORY
# WRITE PID MAJ:MIN:INODE ..."; a waiter's line has "->" in the second field).
held_by_ancestor() {
    [ -e "$1" ] || return 1
    local inode holders pid h
    inode=$(stat -c %i "$1") || return 1
    holders=$(awk -v inode="$inode" '$2 == "FLOCK" { n = split($6, f, ":"); if (f[n] == inode) print $5 }' /proc/locks) || return 1
    pid=$$
    while [ -n "$pid" ] && [ "$pid" -gt 1 ]; do
        for h in $holders; do
            [ "$h" = "$pid" ] && return 0
        done
        pid=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f2) || return 1
    done
    return 1
}
if [ -n "$LOCK" ] && held_by_ancestor "$LOCK"; then
    echo "fuzz.sh: $LOCK is held by a caller already: not taking it again" >&2
    LOCK=""
fi
locked() {
    if [ -n "$LOCK" ]; then flock "$LOCK" "$@"; else "$@"; fi
}

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing the nightly toolchain (cargo fuzz needs it)" >&2
    locked rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    locked cargo install --locked cargo-fuzz
fi

TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}

# One build of every target (with debug assertions: an overflow is a finding), then the runs
# of the built binaries (`cargo fuzz run` would check the build again before each), FUZZ_JOBS
# at a time (default: one per core; libFuzzer runs on one), each batch holding the lock for its
# SECONDS only.
locked cargo +nightly fuzz build -O -a
[ "$BUILD_ONLY" = 1 ] && exit 0
BIN=target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
JOBS=${FUZZ_JOBS:-$(nproc)}
mkdir -p artifacts

lock() {
    if [ -n "$LOCK" ]; then
        exec 9>>"$LOCK"
        flock 9
    fi
}
unlock() {
    if [ -n "$LOCK" ]; then
        flock -u 9
        exec 9>&-
    fi
}
# A libFuzzer statistic of a run's log (-print_final_stats=1).
final_stat() { grep -o "stat::$2: *[0-9]*" "$1" | grep -o '[0-9]*$' || echo '?'; }

read -r -a targets <<<"$(echo $TARGETS)"
failed=()
for ((i = 0; i < ${#targets[@]}; i += JOBS)); do
    batch=("${targets[@]:i:JOBS}")
    pids=()
    lock
    for target in "${batch[@]}"; do
        mkdir -p "corpus/$target" "artifacts/$target"
        "$BIN/$target" "corpus/$target" -artifact_prefix="artifacts/$target/" \
            -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            >"artifacts/$target.log" 2>&1 &
        pids+=($!)
    done
    for k in "${!batch[@]}"; do
        target=${batch[k]}
        log="artifacts/$target.log"
        if wait "${pids[k]}"; then
            echo "fuzz.sh: $target: ok, $(final_stat "$log" number_of_executed_units) executions in ${SECONDS_EACH}s," \
                "$(final_stat "$log" new_units_added) new inputs, peak RSS $(final_stat "$log" peak_rss_mb) MB"
        else
            echo "fuzz.sh: $target: FAILED (see fuzz/$log)" >&2
            grep -E 'panicked|Test unit written|SUMMARY' "$log" | head -5 >&2 || true
            failed+=("$target")
        fi
    done
    unlock
done

if ((${#failed[@]})); then
    echo "fuzz.sh: failing targets: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: every target ran ${SECONDS_EACH}s without a failure"
