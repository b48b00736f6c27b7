#!/usr/bin/env bash
# Router throughput: wrk -t2 -c64 -d10s against one upstream, through the
# Bifrost router and through nginx proxy_pass (keepalive), same upstream,
# same run. Goal: >= 1.0x nginx now (later 1.2x).
#
# The upstream is an app deployed by Bifrost itself (a static site: one
# replica of `bifrost serve-static`); nginx is pointed at that same replica.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-10s}
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "installing $tool (apt)"; apt-get install -y -q wrk nginx-light >/dev/null; }
done
cargo build --release --quiet -p bifrost-cli
BIN=$PWD/target/release/bifrost
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/site/public"
printf '[app]\nname = "upstream"\nruntime = "static"\n[health]\npath = "/"\ninterval = "1s"\ntimeout = "500ms"\n' > "$work/site/deploy.toml"
printf 'hello from the upstream\n' > "$work/site/public/index.html"

BIFROST_ADMIN_TOKEN=bench BIFROST_LOG=warn $BIN up --listen 127.0.0.1:0 --data-dir "$work/data" > "$work/up.out" 2>"$work/up.err" &
for _ in $(seq 100); do grep -q listening "$work/up.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^bifrost: listening on //p' "$work/up.out")
PORT=${URL##*:}
export BIFROST_SERVER=$URL BIFROST_TOKEN=bench BIFROST_CONFIG_DIR=$work/cfg
$BIN deploy "$work/site" --wait --json > "$work/deploy.json" 2>/dev/null
DEP=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/deploy.json")
UP=$(curl -s -H "authorization: Bearer bench" "$URL/api/v1/deployments/$DEP/replicas" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["address"])')

NGINX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server $UP; keepalive 128; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work" -e "$work/nginx.err"
sleep 0.5

parse() { # wrk output -> "req/s p99"
  python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1, "s": 1000}[u]
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(f"{rps:.0f} {ms(m.group(1), m.group(2)):.2f} {errs.group(1) if errs else 0}")'
}
# Warm both paths, then measure nginx and the router alternately.
wrk -t2 -c64 -d2s "http://127.0.0.1:$NGINX_PORT/" >/dev/null
wrk -t2 -c64 -d2s -H "Host: upstream.localhost:$PORT" "http://127.0.0.1:$PORT/" >/dev/null
# Alternate nginx and the router ROUNDS times; report the median round of each.
ROUNDS=${ROUNDS:-3}
: > "$work/nginx.txt"; : > "$work/router.txt"
for _ in $(seq "$ROUNDS"); do
  wrk -t2 -c64 -d"$D" --latency "http://127.0.0.1:$NGINX_PORT/" | parse >> "$work/nginx.txt"
  wrk -t2 -c64 -d"$D" --latency -H "Host: upstream.localhost:$PORT" "http://127.0.0.1:$PORT/" | parse >> "$work/router.txt"
done
# Median of each column on its own (req/s, p99, non-2xx).
median() { for k in 1 2 3; do cut -d' ' -f$k "$1" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p"; done | tr '\n' ' '; }
read -r n_rps n_p99 n_err < <(median "$work/nginx.txt")
read -r b_rps b_p99 b_err < <(median "$work/router.txt")
direct=$(wrk -t2 -c64 -d"$D" --latency "http://$UP/" | parse)

echo "# router vs nginx — $(date -u +%Y-%m-%d) — $(nproc) cores — wrk -t2 -c64 -d$D, median of $ROUNDS alternating rounds, upstream = one bifrost serve-static replica"
echo "rounds (req/s p99 non-2xx): nginx: $(tr '\n' ';' < "$work/nginx.txt") router: $(tr '\n' ';' < "$work/router.txt")"
echo "| path | req/s | p99 ms | non-2xx |"
echo "|---|---|---|---|"
echo "| upstream directly (no proxy) | ${direct% * *} | $(echo $direct | cut -d' ' -f2) | $(echo $direct | cut -d' ' -f3) |"
echo "| nginx 1.22 proxy_pass (keepalive 128) | $n_rps | $n_p99 | $n_err |"
echo "| bifrost router | $b_rps | $b_p99 | $b_err |"
python3 -c "print(f'| ratio router / nginx | {$b_rps/$n_rps:.2f}x | {$b_p99/$n_p99:.2f}x | |')"
