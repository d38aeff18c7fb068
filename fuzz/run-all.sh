#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints a summary table.
#
#   fuzz/run-all.sh 30                          # from anywhere
#   TARGETS="stun secret" fuzz/run-all.sh 600   # a subset, longer
#   FUZZ_JOBS=2 fuzz/run-all.sh 240             # two targets at a time (one core each)
#   FUZZ_TOOLCHAIN=nightly fuzz/run-all.sh 60   # cargo +nightly instead of the default toolchain
#
# Environment:
#   FUZZ_TOOLCHAIN   rustup toolchain for `cargo +TOOLCHAIN fuzz`; unset or empty: plain `cargo`
#                    (the default toolchain, stable in CI).
#   RUSTC_BOOTSTRAP  defaults to 1: cargo-fuzz passes -Zsanitizer=address, which a
#                    stable compiler accepts only with it. Harmless on nightly.
#   FUZZ_BUILD_ARGS  extra `cargo fuzz build/run` options, e.g. "--sanitizer none" or
#                    "--target-dir DIR" (the same for build and run, so run never rebuilds).
#   FUZZ_JOBS        targets run at the same time (default 1).
#   WORK_DIR         scratch dir (default a fresh temp dir): new corpus entries go to
#                    WORK_DIR/corpus/<target>/, the committed seeds in fuzz/corpus/<target>/ are
#                    only read, so a run never dirties the tree. Logs: WORK_DIR/<target>.log.
#   ARTIFACT_DIR     where crashing inputs go (default fuzz/artifacts, git-ignored):
#                    ARTIFACT_DIR/<target>/crash-<sha1> (or leak-, timeout-, oom-).
#
# Exit status 1 after all targets ran if any target failed (crash, leak, timeout, failed
# assertion); each failure names the target and the input that reproduces it. Needs cargo-fuzz
# (`cargo install cargo-fuzz --locked`; scripts/fuzz-ci.sh installs it).
set -euo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP-1}"
toolchain=()
if [[ -n "${FUZZ_TOOLCHAIN:-}" ]]; then
    toolchain=("+$FUZZ_TOOLCHAIN")
fi
read -r -a build_args <<<"${FUZZ_BUILD_ARGS:-}"
jobs="${FUZZ_JOBS:-1}"
work="${WORK_DIR:-$(mktemp -d -t wgmesh-fuzz.XXXXXX)}"
artifacts="${ARTIFACT_DIR:-$here/artifacts}"
mkdir -p "$work/tmp" "$artifacts"
work="$(cd "$work" && pwd)"
artifacts="$(cd "$artifacts" && pwd)"
# The state targets make a private temp dir per process; keep those inside $work.
export TMPDIR="$work/tmp"

cargo_fuzz() {
    cargo "${toolchain[@]}" fuzz "$@"
}

all_targets="$(cargo_fuzz list)"
targets="${TARGETS:-$all_targets}"

build_start=$SECONDS
cargo_fuzz build "${build_args[@]}" >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    echo "fuzz build failed (log: $work/build.log)" >&2
    exit 1
}
echo "== built every target in $((SECONDS - build_start))s" >&2

# Runs one target; its summary line goes to $work/<target>.result.
run_target() {
    local target="$1" log="$work/$1.log" status=0 last execs cov ft result
    mkdir -p "$work/corpus/$target" "$artifacts/$target"
    # libFuzzer takes the last -artifact_prefix, so ours overrides cargo-fuzz's.
    cargo_fuzz run "${build_args[@]}" "$target" "$work/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$artifacts/$target/" >"$log" 2>&1 || status=$?
    last="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)"
    execs="$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    if [[ $status -ne 0 ]]; then
        result="FAILED (exit $status, log $log)"
        {
            echo "== $target FAILED (exit $status); last lines of $log:"
            tail -n 40 "$log"
            # The reproducer: libFuzzer names it on a line "Test unit written to PATH".
            sed -nE "s/.*Test unit written to (.*)\$/== $target failing input: \\1/p" "$log"
        } >&2
    else
        result="ok"
    fi
    printf '%-16s %12s %6s %6s %6ss  %s\n' "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" \
        "$seconds" "$result" >"$work/$target.result"
    return "$status"
}

failed=()
running=0
declare -A pid_target=()
reap() {
    local pid status=0
    wait -n -p pid "${!pid_target[@]}" || status=$?
    if [[ $status -ne 0 ]]; then
        failed+=("${pid_target[$pid]}")
    fi
    unset "pid_target[$pid]"
    running=$((running - 1))
}
for target in $targets; do
    if ((running >= jobs)); then
        reap
    fi
    echo "== $target: ${seconds}s (log: $work/$target.log)" >&2
    run_target "$target" &
    pid_target[$!]="$target"
    running=$((running + 1))
done
while ((running > 0)); do
    reap
done

printf '%-16s %12s %6s %6s %7s  %s\n' target executions cov ft time result
for target in $targets; do
    cat "$work/$target.result" 2>/dev/null || printf '%-16s (no result)\n' "$target"
done
rm -rf "$work/tmp"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "fuzz targets failed: ${failed[*]}" >&2
    for target in "${failed[@]}"; do
        inputs="$(sed -nE 's/.*Test unit written to (.*)$/\1/p' "$work/$target.log")"
        if [[ -z "$inputs" ]]; then
            echo "  $target: no input written; see $work/$target.log" >&2
        fi
        while read -r input; do
            [[ -n "$input" ]] || continue
            echo "  $target: $input  (reproduce: cd fuzz && cargo fuzz run $target $input)" >&2
        done <<<"$inputs"
    done
    exit 1
fi
