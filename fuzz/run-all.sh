#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and prints a summary table.
#
#   fuzz/run-all.sh 30            # from anywhere; CI uses a short bound
#   TARGETS="stun secret" fuzz/run-all.sh 600
#
# New corpus entries go to a scratch directory (WORK_DIR, default a fresh temp dir), not to the
# committed seeds in fuzz/corpus/<target>/. Crashes are written to fuzz/artifacts/<target>/ and
# make the script exit 1 after all targets ran. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`).
set -euo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
all_targets="$(cargo +nightly fuzz list)"
targets="${TARGETS:-$all_targets}"
work="${WORK_DIR:-$(mktemp -d -t wgmesh-fuzz.XXXXXX)}"
mkdir -p "$work/tmp"
# The state targets make a private temp dir per process; keep those inside $work.
export TMPDIR="$work/tmp"

cargo +nightly fuzz build >/dev/null

failed=()
summary=()
for target in $targets; do
    mkdir -p "$work/corpus/$target" "artifacts/$target"
    log="$work/$target.log"
    echo "== $target: ${seconds}s (log: $log)" >&2
    status=0
    cargo +nightly fuzz run "$target" "$work/corpus/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1 || status=$?
    last="$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -n 1 || true)"
    execs="$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' || true)"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    if [[ $status -ne 0 ]]; then
        failed+=("$target")
        result="CRASH (see $log, artifacts/$target/)"
        tail -n 40 "$log" >&2
    else
        result="ok"
    fi
    summary+=("$(printf '%-16s %12s %6s %6s %6ss  %s' "$target" "${execs:-?}" "${cov:-?}" "${ft:-?}" "$seconds" "$result")")
done

printf '%-16s %12s %6s %6s %7s  %s\n' target executions cov ft time result
printf '%s\n' "${summary[@]}"
rm -rf "$work/tmp"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "crashed: ${failed[*]}" >&2
    exit 1
fi
