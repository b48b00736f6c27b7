#!/usr/bin/env bash
# Cost of the sandbox: a replica's start (spawn -> listening on $PORT),
# directly vs through `bifrost sandbox run` (release build), same run,
# alternating; then the overhead bench (webhook -> healthy) sandboxed, and
# with Landlock off (--insecure-no-sandbox), same run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-30}
N=${N:-20}
cargo build --release --quiet -p bifrost-cli -p bifrost-sidecar
cargo build --release --quiet -p bifrost-e2e --example sandbox_cost --example overhead
export BIFROST_BIN="$PWD/target/release/bifrost"
echo "== replica start"
target/release/examples/sandbox_cost "$ROUNDS"
echo "== overhead, sandboxed (default)"
target/release/examples/overhead "$N" | tail -3
echo "== overhead, Landlock off (--insecure-no-sandbox; uid, cgroup, supervisor stay)"
BIFROST_INSECURE_NO_SANDBOX=1 target/release/examples/overhead "$N" | tail -3
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
