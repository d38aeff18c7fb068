#!/usr/bin/env bash
# The main job: build wgmesh and show the network a fresh secret derives to.
# (Replaced by the multi-node namespace demo once the daemon lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/wgmesh
secret_file=$(mktemp)
trap 'rm -f "$secret_file"' EXIT
"$bin" secret > "$secret_file"
for node in 1 2 3; do
    seed=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
    echo "== node $node"
    "$bin" derive --secret-file "$secret_file" --node-seed "$seed"
done
