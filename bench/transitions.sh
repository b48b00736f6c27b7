#!/usr/bin/env bash
# Guarded transitions per second on embedded SQLite (goal >= 10,000/s), with
# one and two writer threads, beside bare SQLite updates in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3000}
cargo build --release --quiet -p bifrost-sqlite --example bench_transitions
echo "# transitions — $(date -u +%Y-%m-%d) — $(nproc) cores, $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
target/release/examples/bench_transitions "$N" 1
target/release/examples/bench_transitions "$N" 2 | sed -n '3p;5p'
