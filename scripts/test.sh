#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and property tests, and the root-only
# integration tests (network namespaces with wireguard-go, the kernel VM, the systemd lab), and a
# short run of every fuzz target. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
    echo "scripts/test.sh: run as root (the labs create network namespaces)" >&2
    exit 2
fi
./scripts/prereqs.sh
export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -- -D warnings
# The macOS build, compiled (not linked) for aarch64-apple-darwin with clippy when Rust's standard
# library for it can be downloaded (static.rust-lang.org); exit 3 means it could not. Then src/ is
# at least compiled and linted against the macOS platform module on Linux, where a cfg selects it
# (tests/macos_lab.rs runs a mesh with that build). The macOS dependency tree, wgmesh-macos and no
# netlink, is `tests/dependency_policy.rs`.
darwin=0
./scripts/check-darwin.sh || darwin=$?
if [[ $darwin == 3 ]]; then
    echo "NOTICE: the darwin compile check did not run (no standard library for aarch64-apple-darwin); checking src/ against the macOS module on Linux instead" >&2
    RUSTFLAGS="--cfg wgmesh_check_macos" CARGO_TARGET_DIR=target/macos-check \
        cargo clippy --bin wgmesh --all-targets -- -D warnings
elif [[ $darwin != 0 ]]; then
    exit "$darwin"
fi
cargo test --workspace --all-features --no-fail-fast
# The membership simulator's scaling report (formation time, datagrams per member per minute for
# 25, 50 and 100 simulated members) and the 1,000-member scenario (every pair through the real
# exchange, then its steady state against the per-member budget): release only, ignored in
# debug builds.
cargo test --release -p wgmesh-membership --test scale -- --nocapture
# The Debian package: build (lintian clean), dpkg -i, check, dpkg -r (scripts/deb-test.sh).
./scripts/deb-test.sh
# The unit under a real systemd 252 (PID 1 of two nspawn containers), installed from the package.
./scripts/systemd-lab.sh
# Every fuzz target for a bounded time (stable toolchain; installs cargo-fuzz if missing).
./scripts/fuzz-ci.sh 15
