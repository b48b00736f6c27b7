#!/usr/bin/env bash
# The cost of cluster mode on the router: wrk -t2 -c64 through a
# `bifrost-router` that follows `bifrost up`'s routes alone (cluster off),
# and through one of three clustered routers (gossip on, the app's
# app-wide rate limit counted across the cluster: every request reads the
# others' counts and publishes its own), alternately, same upstream, same
# run. The rate limit (50000/s) is set so it never triggers. Goal: cluster
# on costs <= 5% of req/s.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-10s}
ROUNDS=${ROUNDS:-3}
command -v wrk >/dev/null || { echo "installing wrk (apt)"; apt-get install -y -q wrk >/dev/null; }
cargo build --release --quiet -p bifrost-cli -p bifrost-router-node
BIN=$PWD/target/release/bifrost
ROUTER=$PWD/target/release/bifrost-router
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; pkill -f -- "--data-dir $work/data" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/site/public"
printf '[app]\nname = "upstream"\nruntime = "static"\n[health]\npath = "/"\ninterval = "30s"\ntimeout = "10s"\n[resources]\ncpu = "2"\n[traffic]\nrate_limit = "50000/s"\n' > "$work/site/deploy.toml"
printf 'hello from the upstream\n' > "$work/site/public/index.html"
BIFROST_ADMIN_TOKEN=bench BIFROST_LOG=warn $BIN up --listen 127.0.0.1:0 --ingest-listen 127.0.0.1:0 \
  --data-dir "$work/data" > "$work/up.out" 2>"$work/up.log" &
for _ in $(seq 100); do grep -q listening "$work/up.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^bifrost: listening on //p' "$work/up.out")
export BIFROST_SERVER=$URL BIFROST_TOKEN=bench BIFROST_CONFIG_DIR=$work/cfg
$BIN deploy "$work/site" --wait >/dev/null 2>&1
TOKEN=$(curl -s -H "authorization: Bearer bench" -H 'content-type: application/json' \
  -d '{"name": "bench-router", "role": "router"}' "$URL/api/v1/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_router() { # name config-file|"" -> prints its URL
  local name=$1 config=$2
  if [ -n "$config" ]; then export BIFROST_CONFIG=$config; else unset BIFROST_CONFIG; fi
  BIFROST_ROUTER_TOKEN=$TOKEN BIFROST_GOSSIP_KEY=bench-gossip-key-0123456789 BIFROST_LOG=warn \
    "$ROUTER" --listen 127.0.0.1:0 --advertise 127.0.0.1 --gateway "$URL" > "$work/$name.out" 2>"$work/$name.log" &
  for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  echo "http://$(sed -n 's/^bifrost-router: listening on //p' "$work/$name.out")"
}
ALONE=$(start_router alone "")
G1=$(free_port); G2=$(free_port); G3=$(free_port)
for i in 1 2 3; do
  eval port=\$G$i
  printf '{"cluster_config": {"enabled": true, "node_id": "bench-%s", "peers": ["127.0.0.1:%s", "127.0.0.1:%s", "127.0.0.1:%s"], "gossip": {"port": %s}}}' \
    "$i" "$G1" "$G2" "$G3" "$port" > "$work/c$i.json"
done
ON=$(start_router on1 "$work/c1.json"); start_router on2 "$work/c2.json" >/dev/null; start_router on3 "$work/c3.json" >/dev/null
for r in "$ALONE" "$ON"; do
  for _ in $(seq 300); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$r/ready")" = 200 ] && break; sleep 0.1; done
done
for _ in $(seq 300); do
  [ "$(curl -s "$ON/cluster/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["healthy_members"])')" = 3 ] && break
  sleep 0.1
done

parse() { # wrk output -> "req/s p99-ms non2xx"
  python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {ms(m.group(1), m.group(2)):.2f} {errs.group(1) if errs else 0}")'
}
for r in "$ALONE" "$ON"; do wrk -t2 -c64 -d2s -H "Host: upstream.localhost" "$r/" >/dev/null; done
: > "$work/alone.txt"; : > "$work/on.txt"
for _ in $(seq "$ROUNDS"); do
  wrk -t2 -c64 -d"$D" --latency -H "Host: upstream.localhost" "$ALONE/" | parse >> "$work/alone.txt"
  wrk -t2 -c64 -d"$D" --latency -H "Host: upstream.localhost" "$ON/" | parse >> "$work/on.txt"
done
median() { for k in 1 2 3; do cut -d' ' -f$k "$1" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p"; done | tr '\n' ' '; echo; }
read -r a_rps a_p99 a_err < <(median "$work/alone.txt")
read -r o_rps o_p99 o_err < <(median "$work/on.txt")
echo "| router | req/s (median of $ROUNDS × $D) | p99 | non-2xx |"
echo "|---|---:|---:|---:|"
echo "| cluster off (one bifrost-router) | $a_rps | ${a_p99} ms | $a_err |"
echo "| cluster on (1 of 3, shared rate limit) | $o_rps | ${o_p99} ms | $o_err |"
python3 -c "import sys; a, o = float(sys.argv[1]), float(sys.argv[2]); print(f'\ncluster on costs {100 * (1 - o / a):.1f}% of req/s')" "$a_rps" "$o_rps"
