#!/usr/bin/env bash
# Compiles, without linking, every crate the macOS binary is built from for a darwin target, with
# clippy: `cargo clippy --target aarch64-apple-darwin` (or the targets given as arguments). Needs
# Rust's standard library for the target, which `rustup target add` downloads from
# static.rust-lang.org; no macOS SDK or linker is needed, because nothing is linked (blake3's C
# goes through scripts/darwin-check/cc, which writes empty objects).
#
# Exit 0: checked and clean. Exit 1: a compile error or a lint. Exit 3: the target's standard
# library is not installed and cannot be downloaded here (the check did not run).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(aarch64-apple-darwin)
for target in "${targets[@]}"; do
    if ! rustup target list --installed | grep -qx "$target"; then
        # A machine that cannot reach the download server should learn it in seconds, not after
        # rustup's retries.
        if command -v curl > /dev/null &&
            ! curl -sfI --max-time 15 https://static.rust-lang.org/dist/channel-rust-stable.toml > /dev/null; then
            echo "check-darwin: static.rust-lang.org is unreachable; cannot install Rust's standard library for $target; the darwin check did not run" >&2
            exit 3
        fi
        if ! timeout 300 rustup target add "$target"; then
            echo "check-darwin: cannot install Rust's standard library for $target (is static.rust-lang.org reachable?); the darwin check did not run" >&2
            exit 3
        fi
    fi
    env_target=${target//-/_}
    env "CC_${env_target}=$PWD/scripts/darwin-check/cc" "AR_${env_target}=$PWD/scripts/darwin-check/ar" \
        CARGO_TARGET_DIR=target/darwin-check \
        cargo clippy --target "$target" --workspace --exclude wgmesh-linux --all-targets -- -D warnings
    echo "check-darwin: $target: the workspace (without wgmesh-linux) compiles and is clippy-clean"
done
