#!/usr/bin/env bash
# The benchmarks behind BENCHMARKS.md, in one run: the namespace lab (wgmesh, Nebula and a
# hand-made wireguard-go tunnel side by side) and the reconcile at 1,000 peers. Writes the
# tables into BENCHMARKS.md and prints them. Run as root on an otherwise idle machine.
#
#   sudo ./scripts/bench.sh                       # everything, 5 repetitions
#   WGMESH_BENCH_REPS=3 sudo -E ./scripts/bench.sh
#   WGMESH_BENCH_ONLY=convergence,others ...      # a subset of the lab (see benches/lab.rs)
#   WGMESH_BENCH_ONLY=scale WGMESH_BENCH_SCALE_SIZES=25,50 ...   # the scale sweep (issue 11)
#
# A subset run prints its tables without rewriting BENCHMARKS.md; a run with the scale sweep
# redraws docs/bench-scale.png.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
    echo "scripts/bench.sh: run as root (the lab creates network namespaces)" >&2
    exit 2
fi
./scripts/prereqs.sh
export CARGO_TERM_COLOR=never
mkdir -p target/bench
start=$(date +%s)
cargo bench --features root-tests --bench lab
cargo bench -p wgmesh-uapi --bench apply
python3 scripts/bench-report.py --write BENCHMARKS.md
echo "bench: $(( $(date +%s) - start )) s"
