#!/usr/bin/env bash
# Platform overhead (goal p50 <= 300 ms): (webhook -> healthy) minus the
# build steps' own time, the app's own start time and the probe waits its
# [health] asks for, over N deploys of examples/hello-python pushed as
# signed webhooks to the real `bifrost up` (release build).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-20}
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example overhead
BIFROST_BIN="$PWD/target/release/bifrost" target/release/examples/overhead "$N"
