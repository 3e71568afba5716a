#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder that reads untrusted bytes (fuzz/, cargo fuzz).
#
#   scripts/fuzz.sh [SECONDS]          each target for SECONDS (default 15: 13 targets, a rebuild
#                                      and the runs stay under 5 minutes on 2 cores)
#   FUZZ_TARGETS="frame md5" scripts/fuzz.sh 60      some targets only
#
# Idempotent: installs cargo-fuzz when it is missing (needs the nightly toolchain, which
# cargo fuzz uses for its sanitizer flags). Each target starts from its committed seeds,
# fuzz/corpus/<target>/seed-*; what a run adds there is not committed (fuzz/.gitignore).
# Exits 1 when a target fails (a panic, an assertion of its property, a sanitizer report,
# a timeout): the input is in fuzz/artifacts/<target>/, and its run's log in
# fuzz/artifacts/<target>.log. Builds and runs hold /tmp/pgmux-cargo.lock, as the other
# cargo commands on a shared machine do.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_EACH=${1:-15}
LOCK=/tmp/pgmux-cargo.lock
cd "$ROOT/fuzz"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz" >&2
    flock "$LOCK" cargo install --locked cargo-fuzz
fi

TARGETS=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}

# One build of every target (with debug assertions: an overflow is a finding), then the runs
# (each holding the lock for its SECONDS only), of the built binaries: `cargo fuzz run` would
# check the build again before each.
flock "$LOCK" cargo +nightly fuzz build -O -a
BIN=target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
mkdir -p artifacts
failed=()
for target in $TARGETS; do
    mkdir -p "corpus/$target"
    log="artifacts/$target.log"
    mkdir -p "artifacts/$target"
    if flock "$LOCK" "$BIN/$target" "corpus/$target" -artifact_prefix="artifacts/$target/" \
        -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
        echo "fuzz.sh: $target: ok, $execs executions in ${SECONDS_EACH}s"
    else
        echo "fuzz.sh: $target: FAILED (see fuzz/$log)" >&2
        grep -E 'panicked|Test unit written|SUMMARY' "$log" | head -5 >&2 || true
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    echo "fuzz.sh: failing targets: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz.sh: every target ran ${SECONDS_EACH}s without a failure"
