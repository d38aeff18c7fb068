#!/usr/bin/env bash
# CI fuzzing: builds every cargo-fuzz target in fuzz/ and runs each for SECONDS (default 15),
# two at a time on a 2-core machine, on the *stable* toolchain (RUSTC_BOOTSTRAP=1 lets stable
# accept the -Z flags cargo-fuzz passes; AddressSanitizer works). Installs cargo-fuzz first if
# `cargo fuzz` is missing. See docs/fuzzing.md.
#
#   scripts/fuzz-ci.sh          # CI: 15 s per target, about 4 min on 2 cores incl. the build
#   scripts/fuzz-ci.sh 60
#
# Never dirties the tree: new corpus entries, logs and crashing inputs go to a temp dir (kept
# when something fails, removed otherwise). Exit status 1 if any target crashed, leaked, timed out
# or failed an assertion; the output names the target and the crashing input (path and base64,
# so the input survives a CI machine that is thrown away). Environment (see fuzz/run-all.sh):
# FUZZ_TOOLCHAIN, FUZZ_BUILD_ARGS (default "--codegen-units 16"), FUZZ_JOBS (default: the
# number of CPUs), TARGETS.
set -euo pipefail

seconds="${1:-15}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# 0.13.2 builds with Rust 1.95 (`--locked`: its own Cargo.lock); installing takes about a
# minute on 2 cores.
cargo_fuzz_version="0.13.2"

# libfuzzer-sys compiles libFuzzer's C++ sources (Debian: g++, in build-essential).
if ! command -v "${CXX:-c++}" >/dev/null 2>&1; then
    echo "scripts/fuzz-ci.sh: no C++ compiler (${CXX:-c++}); install g++" >&2
    exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz $cargo_fuzz_version" >&2
    install_start=$SECONDS
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
    echo "== cargo-fuzz installed in $((SECONDS - install_start))s" >&2
fi

export RUSTC_BOOTSTRAP=1
export FUZZ_JOBS="${FUZZ_JOBS:-$(nproc)}"
# 16 codegen units instead of cargo-fuzz's 1: the from-scratch build is most of the CI time, and
# a 15 s smoke run does not need the last few percent of speed.
export FUZZ_BUILD_ARGS="${FUZZ_BUILD_ARGS---codegen-units 16}"
work="$(mktemp -d -t wgmesh-fuzz-ci.XXXXXX)"
export WORK_DIR="$work" ARTIFACT_DIR="$work/artifacts"

start=$SECONDS
status=0
"$root/fuzz/run-all.sh" "$seconds" || status=$?
echo "== fuzzing took $((SECONDS - start))s (build included)" >&2

if [[ $status -ne 0 ]]; then
    for input in "$ARTIFACT_DIR"/*/*; do
        [[ -f "$input" ]] || continue
        target="$(basename "$(dirname "$input")")"
        echo "== $target crashing input $input, base64 (decode with base64 -d):" >&2
        head -c 65536 "$input" | base64 -w 0 >&2
        echo >&2
    done
    echo "fuzzing failed; logs and inputs kept in $work" >&2
    exit "$status"
fi
rm -rf "$work"
