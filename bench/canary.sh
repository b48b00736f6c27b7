#!/usr/bin/env bash
# Canary timing (issue "Progressive delivery"): a window's end → the next
# step recorded (goal <= 250 ms, plus the router's 200 ms re-read), and a
# policy deny → the canary's last answer through the router (goal <= 1 s),
# over ROUNDS canaries of ten 1-second steps against the real `bifrost up`
# (release build) with 50 sticky clients.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example canary_timing
echo "machine: $(nproc) cores, $(uname -r); $(date -u +%Y-%m-%dT%H:%MZ)"
BIFROST_BIN="$PWD/target/release/bifrost" target/release/examples/canary_timing "$ROUNDS"
