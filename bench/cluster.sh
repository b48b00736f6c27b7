#!/usr/bin/env bash
# Router cluster membership: time for a crashed node to be seen suspect and
# dead (3 nodes on loopback) at timeout_seconds 2 and 10, and the gossip
# bytes a node sends per second. ROUNDS (default 3) per setting.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run --quiet --release -p bifrost-cluster --example detection
