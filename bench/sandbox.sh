#!/usr/bin/env bash
# Cost of the sandbox: (1) a replica's start (spawn -> listening on $PORT),
# directly vs through `bifrost sandbox run` (release build), same run,
# alternating; (2) the overhead bench (webhook -> healthy) against this
# build and, when BASE is set (a commit before the sandbox, e.g. e1c576a),
# against that build too, alternating. Without health sidecars, as in
# BENCHMARKS.md's overhead section.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-40}
N=${N:-20}
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example sandbox_cost --example overhead
bin=target/release
hide_sidecar() { [ -e "$1/bifrost-sidecar" ] && mv "$1/bifrost-sidecar" "$1/bifrost-sidecar.bench-off" || true; }
restore_sidecar() { [ -e "$1/bifrost-sidecar.bench-off" ] && mv "$1/bifrost-sidecar.bench-off" "$1/bifrost-sidecar" || true; }
base_dir=""
if [ -n "${BASE:-}" ]; then
  base_dir=$(mktemp -d)
  git worktree add -q -f "$base_dir" "$BASE"
  (cd "$base_dir" && cargo build --release --quiet -p bifrost-cli && cargo build --release --quiet -p bifrost-e2e --example overhead)
fi
trap 'restore_sidecar "$bin"; [ -n "$base_dir" ] && { restore_sidecar "$base_dir/target/release"; git worktree remove --force "$base_dir"; }' EXIT
echo "== replica start"
BIFROST_BIN="$PWD/$bin/bifrost" "$bin/examples/sandbox_cost" "$ROUNDS"
hide_sidecar "$bin"
[ -n "$base_dir" ] && hide_sidecar "$base_dir/target/release"
for round in 1 2; do
  echo "== overhead, this build (sandboxed), round $round"
  BIFROST_BIN="$PWD/$bin/bifrost" "$bin/examples/overhead" "$N" | tail -1
  if [ -n "$base_dir" ]; then
    echo "== overhead, $BASE (before the sandbox), round $round"
    (cd "$base_dir" && BIFROST_BIN="$base_dir/target/release/bifrost" target/release/examples/overhead "$N" | tail -1)
  fi
done
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
