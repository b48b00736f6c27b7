#!/usr/bin/env bash
# Dashboard budgets: the client wasm's size (goal <= 500 KiB gzip) and the
# time to first byte of a project's deployments page with 1,000
# deployments in the store (goal <= 50 ms), beside the API call that page
# makes (the floor) — release builds, loopback, curl.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
REQS=${REQS:-200}
scripts/setup-web.sh
cargo xtask web
cargo build --release --quiet -p bifrost-cli
pkg=target/site/pkg
raw=$(stat -c %s $pkg/bifrost_web_bg.wasm); gz=$(stat -c %s $pkg/bifrost_web_bg.wasm.gz)
js=$(stat -c %s $pkg/bifrost_web.js); jsgz=$(stat -c %s $pkg/bifrost_web.js.gz)

. bench/paused-platform.sh
api() { curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' "$@"; }
api -d "{\"name\":\"bench\",\"repo\":\"$repo\"}" "$url/api/v1/projects"
echo "creating $N deployments..." >&2
for _ in $(seq "$N"); do api -d '{}' "$url/api/v1/projects/bench/deployments"; done

# p50 / p99 of curl's time_starttransfer and time_total, in ms.
measure() {
  for _ in $(seq "$REQS"); do
    curl -s -o /dev/null -w '%{time_starttransfer} %{time_total}\n' "$@"
  done | python3 -c '
import sys
rows = [tuple(float(x) * 1000 for x in l.split()) for l in sys.stdin]
def q(vals, p):
    vals = sorted(vals); return vals[min(len(vals) - 1, int(p * len(vals)))]
ttfb, total = [r[0] for r in rows], [r[1] for r in rows]
print(f"{q(ttfb, .5):.1f} | {q(ttfb, .99):.1f} | {q(total, .5):.1f} | {q(total, .99):.1f}")'
}
page=$(measure -b "bifrost_session=$TOKEN" "$url/projects/bench")
floor=$(measure -H "Authorization: Bearer $TOKEN" "$url/api/v1/projects/bench/deployments?limit=100")
home=$(measure -b "bifrost_session=$TOKEN" "$url/")

echo "# Dashboard — $(date +%F), $(nproc) cores, release build"
echo
echo "| client bundle | raw | gzip |"
echo "|---|---:|---:|"
echo "| bifrost_web_bg.wasm | $((raw / 1024)) KiB | $((gz / 1024)) KiB |"
echo "| bifrost_web.js | $((js / 1024)) KiB | $((jsgz / 1024)) KiB |"
echo
echo "$N deployments in the store, $REQS sequential requests each (ms):"
echo
echo "| request | TTFB p50 | TTFB p99 | total p50 | total p99 |"
echo "|---|---:|---:|---:|---:|"
echo "| page /projects/bench (newest 100 rendered) | $page |"
echo "| page / (projects) | $home |"
echo "| API it calls: /api/v1/projects/bench/deployments?limit=100 | $floor |"
