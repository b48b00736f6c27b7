#!/usr/bin/env bash
# Webhook accept latency (goal p99 <= 10 ms) under a closed-loop load on
# loopback, beside GET /healthz on the same server in the same run.
# Two runs: `--paused` (the accept path alone) and live (the pipeline
# validating every accepted push at the same time).
set -euo pipefail
cd "$(dirname "$0")/.."
C=${C:-16}
S=${S:-10}
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example loadgen
BIN=target/release/bifrost
LOAD=target/release/examples/loadgen
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

git init -q -b main "$work/repo"
printf '[app]\nname = "app"\nruntime = "static"\n' > "$work/repo/deploy.toml"
git -C "$work/repo" add -A
git -C "$work/repo" -c user.email=b@b -c user.name=b commit -qm bench
COMMIT=$(git -C "$work/repo" rev-parse HEAD)

run() { # $1 = label, $2 = paused flag
  local dir="$work/data-$1"
  BIFROST_ADMIN_TOKEN=bench BIFROST_LOG=warn $BIN up --listen 127.0.0.1:0 --data-dir "$dir" $2 > "$work/up-$1.out" 2>"$work/up-$1.err" &
  local pid=$!
  for _ in $(seq 100); do grep -q listening "$work/up-$1.out" 2>/dev/null && break; sleep 0.1; done
  local url; url=$(sed -n 's/^bifrost: listening on //p' "$work/up-$1.out")
  BIFROST_SERVER=$url BIFROST_TOKEN=bench $BIN projects add app --repo "$work/repo" --webhook-secret s3 >/dev/null
  local h w
  h=$($LOAD get "$url/healthz" "$C" "$S")
  w=$($LOAD webhook "$url/api/v1/webhooks/github" s3 "$work/repo" "$COMMIT" "$C" "$S")
  kill $pid; wait $pid 2>/dev/null || true
  python3 - "$1" "$h" "$w" <<'PY'
import json, sys
label, h, w = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for name, r in (("GET /healthz", h), ("POST webhook (new push)", w)):
    print(f"| {label} | {name} | {r['requests']} | {r['errors']} | {r['rps']:.0f} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
print(f"| {label} | webhook p99 / healthz p99 | | | | | {w['p99_ms'] / max(h['p99_ms'], 0.001):.1f}× | |")
PY
}

echo "# webhook accept latency — $(date -u +%Y-%m-%d) — $(nproc) cores — concurrency $C, ${S}s each"
echo "| mode | request | requests | errors | req/s | p50 ms | p99 ms | max ms |"
echo "|---|---|---|---|---|---|---|---|"
run paused --paused
run live ""
