#!/usr/bin/env bash
# Runs the fuzz targets for a while each (default 60 s). Needs cargo-fuzz;
# the stable toolchain works with RUSTC_BOOTSTRAP=1 (no nightly download).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_EACH=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/deploy_toml corpus/webhook_payload
cp -n seeds/deploy_toml/* corpus/deploy_toml/ 2>/dev/null || true
for t in deploy_toml webhook_payload; do
  echo "== $t (${SECONDS_EACH}s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$SECONDS_EACH" -max_len=8192 2>&1 | grep -E "^(#[0-9]+ +DONE|Done|INFO: -max_total_time|==[0-9]+== ERROR|SUMMARY)" || true
done
