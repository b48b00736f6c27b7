#!/usr/bin/env bash
# Builds Bifrost (release) and starts the embedded platform: API, webhook,
# pipeline and dashboard on http://127.0.0.1:7070 (override with --listen).
# Arguments are passed to `bifrost up`; see `bifrost up --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "building bifrost (release; the first build takes a few minutes)..." >&2
# The dashboard's browser half (wasm) first: the server serves target/site.
scripts/setup-web.sh
cargo xtask web
cargo build --release --quiet -p bifrost-cli
# The health sidecar each replica gets, built small (profile `sidecar`).
cargo build --profile sidecar --quiet -p bifrost-sidecar
exec target/release/bifrost up --sidecar-bin target/sidecar/bifrost-sidecar "$@"
