#!/usr/bin/env bash
# Router throughput: wrk -t2 -c64 against one upstream, through the
# Bifrost router and through nginx proxy_pass (keepalive), same upstream,
# same run, twice: with no traffic rules, and with every layer on (a rate
# limit too high to trigger, a request and a response header rule, a 90/10
# split between two deployments, access log to a file; metrics are always
# on) against nginx with the equivalent (limit_req, proxy_set_header,
# add_header, split_clients over two upstreams, access_log). Goal: >= 1.2x
# nginx req/s and p99 <= nginx's.
#
# The upstream is an app deployed by Bifrost itself (a static site: one
# replica of `bifrost serve-static`); nginx is pointed at the same replicas.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-10s}
for tool in wrk nginx; do
  command -v $tool >/dev/null || { echo "installing $tool (apt)"; apt-get install -y -q wrk nginx-light >/dev/null; }
done
cargo build --release --quiet -p bifrost-cli
BIN=$PWD/target/release/bifrost
work=$(mktemp -d)
# A failed run keeps its work directory (the platforms' data and logs: a
# replica replaced mid-run shows there), as KEEP=1 does.
cleanup() { local rc=$?; kill $(jobs -p) 2>/dev/null || true; pkill -f -- "--data-dir $work/data-" 2>/dev/null || true; { [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")"; } 2>/dev/null || true; if [ -n "${KEEP:-}" ] || [ "$rc" != 0 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi; }
trap cleanup EXIT

mkdir -p "$work/site/public"
# The upstream is not what is measured: cpu = "2" (under the default 250m,
# a CFS quota since apps run in cgroups, it is throttled to ~1,500 req/s),
# and a lenient probe (a saturated replica must not be restarted mid-run).
printf '[app]\nname = "upstream"\nruntime = "static"\n[health]\npath = "/"\ninterval = "30s"\ntimeout = "10s"\n[resources]\ncpu = "2"\n' > "$work/site/deploy.toml"
printf 'hello from the upstream\n' > "$work/site/public/index.html"
# The same site with every layer on.
cp -r "$work/site" "$work/layered"
sed -i 's/name = "upstream"/name = "layered"/' "$work/layered/deploy.toml"
printf '[traffic]\nrate_limit = "50000/s"\nheaders.set = { X-Served-By = "bifrost" }\nresponse_headers.set = { Cache-Control = "no-store" }\n' >> "$work/layered/deploy.toml"

# Two platforms: the access log is per process, so "no rules" runs without
# it (as nginx's plain server) and "every layer on" with it (to a file).
start_platform() { # name log-filter site -> "URL PORT UPSTREAM"
  local name=$1 filter=$2 site=$3
  BIFROST_ADMIN_TOKEN=bench BIFROST_LOG=$filter $BIN up --listen 127.0.0.1:0 --ingest-listen 127.0.0.1:0 \
    --data-dir "$work/data-$name" > "$work/up-$name.out" 2>"$work/log-$name" &
  for _ in $(seq 100); do grep -q listening "$work/up-$name.out" 2>/dev/null && break; sleep 0.1; done
  local url; url=$(sed -n 's/^bifrost: listening on //p' "$work/up-$name.out")
  BIFROST_SERVER=$url BIFROST_TOKEN=bench BIFROST_CONFIG_DIR=$work/cfg-$name $BIN deploy "$site" --wait --json > "$work/deploy-$name.json" 2>/dev/null || true
  local dep; dep=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/deploy-$name.json")
  # (e.g. the default policy refuses deploys while the host's load is high,
  # as right after another bench: wait for it to settle.)
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d["status"] == "failed" and sys.exit("deploying the upstream failed: " + str(d.get("reason")))' "$work/deploy-$name.json"
  echo "$url ${url##*:} $(replica "$url" "$dep") $dep"
}
replica() { # url deployment -> the address of its first replica (waits for one)
  for _ in $(seq 100); do
    curl -s -H "authorization: Bearer bench" "$1/api/v1/deployments/$2/replicas" \
      | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r[0]["address"]) if r else sys.exit(1)' && return
    sleep 0.2
  done
  echo "deployment $2 has no replica" >&2
  return 1
}
read -r URL PORT UP _ < <(start_platform plain warn "$work/site")
read -r URL2 PORT2 CANARY CANARY_DEP < <(start_platform layered warn,bifrost::access=info "$work/layered")
# Every layer includes a 90/10 split: a second deployment goes live (the
# stable side) and the first takes 10 % of the clients (the canary side).
cli2() { BIFROST_SERVER=$URL2 BIFROST_TOKEN=bench BIFROST_CONFIG_DIR=$work/cfg-layered $BIN "$@"; }
printf 'the live build\n' > "$work/layered/public/index.html"
cli2 deploy "$work/layered" --wait --json > "$work/deploy-layered2.json" 2>/dev/null
UP2=$(replica "$URL2" "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$work/deploy-layered2.json")")
cli2 traffic split layered --to "$CANARY_DEP" --weight 10 >/dev/null
CANARY=$(replica "$URL2" "$CANARY_DEP")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
NGINX_PORT=$(free_port)
NGINX_LAYERED=$(free_port)
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server $UP; keepalive 128; }
  upstream layered { server $UP2; keepalive 128; }
  upstream canary { server $CANARY; keepalive 128; }
  split_clients "\${remote_addr}layered" \$variant { 10% canary; * layered; }
  limit_req_zone \$server_name zone=app:1m rate=50000r/s;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
  server {
    listen 127.0.0.1:$NGINX_LAYERED;
    # Written in batches, as the router writes its own (at most 256 KiB or
    # 50 ms behind).
    access_log $work/nginx-access.log combined buffer=256k flush=50ms;
    location / {
      limit_req zone=app burst=50000 nodelay;
      proxy_pass http://\$variant;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Served-By bifrost;
      proxy_set_header X-Request-Id \$request_id;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      add_header Cache-Control no-store;
      add_header X-Request-Id \$request_id;
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
# Warm every path, then measure nginx and the router alternately.
for target in "http://127.0.0.1:$NGINX_PORT/" "http://127.0.0.1:$NGINX_LAYERED/"; do wrk -t2 -c64 -d2s "$target" >/dev/null; done
wrk -t2 -c64 -d2s -H "Host: upstream.localhost:$PORT" "http://127.0.0.1:$PORT/" >/dev/null
wrk -t2 -c64 -d2s -H "Host: layered.localhost:$PORT2" "http://127.0.0.1:$PORT2/" >/dev/null
ROUNDS=${ROUNDS:-3}
# Median of each column on its own (req/s, p99, non-2xx), one line.
median() { for k in 1 2 3; do cut -d' ' -f$k "$1" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p"; done | tr '\n' ' '; echo; }
measure() { # label nginx-port app router-port -> table rows; nginx and the router alternate ROUNDS times
  local label=$1 nport=$2 app=$3 rport=$4
  : > "$work/nginx.txt"; : > "$work/router.txt"
  for _ in $(seq "$ROUNDS"); do
    wrk -t2 -c64 -d"$D" --latency "http://127.0.0.1:$nport/" | parse >> "$work/nginx.txt"
    wrk -t2 -c64 -d"$D" --latency -H "Host: $app.localhost:$rport" "http://127.0.0.1:$rport/" | parse >> "$work/router.txt"
  done
  local n_rps n_p99 n_err b_rps b_p99 b_err
  read -r n_rps n_p99 n_err < <(median "$work/nginx.txt")
  read -r b_rps b_p99 b_err < <(median "$work/router.txt")
  echo "rounds ($label; req/s p99 non-2xx): nginx: $(tr '\n' ';' < "$work/nginx.txt") router: $(tr '\n' ';' < "$work/router.txt")" >&2
  echo "| $label | nginx 1.22 proxy_pass (keepalive 128) | $n_rps | $n_p99 | $n_err |"
  echo "| $label | bifrost router | $b_rps | $b_p99 | $b_err |"
  python3 -c "print(f'| $label | ratio router / nginx | {$b_rps/$n_rps:.2f}x | {$b_p99/$n_p99:.2f}x | |')"
}
plain=$(measure "no rules" "$NGINX_PORT" upstream "$PORT")
layered=$(measure "every layer on" "$NGINX_LAYERED" layered "$PORT2")
direct=$(wrk -t2 -c64 -d"$D" --latency "http://$UP/" | parse)

echo "# router vs nginx — $(date -u +%Y-%m-%d) — $(nproc) cores — wrk -t2 -c64 -d$D, median of $ROUNDS alternating rounds, upstream = one bifrost serve-static replica"
echo "| config | path | req/s | p99 ms | non-2xx |"
echo "|---|---|---|---|---|"
read -r d_rps d_p99 d_err <<< "$direct"
echo "| — | upstream directly (no proxy) | $d_rps | $d_p99 | $d_err |"
echo "$plain"
echo "$layered"
