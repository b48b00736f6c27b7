#!/usr/bin/env bash
# Platform RSS and /healthz latency during three parallel upload bombs
# (goals: RSS +<= 64 MiB, p99 <= 50 ms), against the release build; with
# BASE set (a commit), against that build too, same run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example bombs
base_bin=""
if [ -n "${BASE:-}" ]; then
  base_dir=$(mktemp -d)
  trap 'git worktree remove --force "$base_dir"' EXIT
  git worktree add -q -f "$base_dir" "$BASE"
  (cd "$base_dir" && cargo build --release --quiet -p bifrost-cli)
  base_bin="$base_dir/target/release/bifrost"
fi
for round in 1 2; do
  echo "== this build, round $round"
  BIFROST_BIN="$PWD/target/release/bifrost" target/release/examples/bombs
  if [ -n "$base_bin" ]; then
    echo "== $BASE, round $round"
    BIFROST_BIN="$base_bin" target/release/examples/bombs
  fi
done
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
