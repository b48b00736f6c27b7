#!/usr/bin/env bash
# SSE fan-out (goal: 20,000 subscribers, <= 4 KiB platform RSS each, one
# event to all within 1 s). Subscribers are split over client processes
# (each holds N/PROCS sockets); the platform's RSS is read from /proc
# before and after they connect; one deployment is created and each
# subscriber's first `status` event is timed against the moment of the POST.
#
# This machine caps open files at 20,000 per process (hard limit, cannot be
# raised here), so the platform can hold at most ~19,900 sockets: N defaults
# to 19,500.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-19500}
PROCS=${PROCS:-4}
ulimit -n "$(ulimit -Hn)"
cargo build --release --quiet -p bifrost-cli
cargo build --release --quiet -p bifrost-e2e --example sse_fanout
. bench/paused-platform.sh
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d "{\"name\":\"fanout\",\"repo\":\"$repo\"}" "$url/api/v1/projects"
rss() { awk '/VmRSS/ {print $2}' "/proc/$pid/status"; }
sleep 1
rss0=$(rss)
per=$(( N / PROCS ))
for i in $(seq "$PROCS"); do
  target/release/examples/sse_fanout "$addr" "$TOKEN" "$per" "$work/ready$i" "$work/out$i" &
done
for i in $(seq "$PROCS"); do
  for _ in $(seq 1500); do [ -s "$work/ready$i" ] && break; sleep 0.1; done
done
connected=$(cat "$work"/ready* | paste -sd+ | bc)
sleep 2
rss1=$(rss)
t0=$(date +%s%3N)
curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
  -d '{}' "$url/api/v1/projects/fanout/deployments"
wait $(jobs -p | grep -v "^$pid\$") 2>/dev/null || true
cat "$work"/out* > "$work/all"
python3 - "$work/all" "$t0" "$connected" "$((per * PROCS))" "$rss0" "$rss1" <<'PY'
import sys, statistics, datetime, os
path, t0, connected, n, rss0, rss1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
got = sorted(int(l) - t0 for l in open(path) if l.strip() and l.strip() != '-')
q = lambda p: got[min(len(got) - 1, int(p * len(got)))] if got else float('nan')
per_conn = (rss1 - rss0) * 1024 / max(connected, 1)
print(f"# SSE fan-out — {datetime.date.today()}, {os.cpu_count()} cores, loopback")
print("| subscribers | connected | got the event | p50 | p99 | last | platform RSS before → after | per subscriber |")
print("|---:|---:|---:|---:|---:|---:|---|---:|")
print(f"| {n} | {connected} | {len(got)} | {q(0.5)} ms | {q(0.99)} ms | {got[-1] if got else 'n/a'} ms | {rss0/1024:.1f} → {rss1/1024:.1f} MiB | {per_conn/1024:.2f} KiB |")
PY
