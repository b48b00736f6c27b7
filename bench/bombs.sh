#!/usr/bin/env bash
# Platform RSS and /healthz latency during three parallel upload bombs
# (goals: RSS +<= 64 MiB, p99 <= 50 ms), against the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example bombs
BIFROST_BIN="$PWD/target/release/bifrost" target/release/examples/bombs
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
