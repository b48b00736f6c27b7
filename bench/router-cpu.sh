#!/usr/bin/env bash
# Where the router's time goes (issue "Router data plane", the ≥ 1.2× nginx
# goal): CPU time, syscalls and context switches per request of each proxy
# process, counted by `perf stat` around wrk -t2 -c64. One app, no rules;
# the upstream an nginx worker serving a small file (never the bottleneck).
# Rows: nginx proxy_pass (keepalive 128); the router as `bifrost up` runs it
# (one multi-thread runtime); the router with a current-thread runtime per
# core (BIFROST_BENCH_PER_CORE=2); both routers answering a request
# themselves (a 404: no upstream hop). Counting syscalls slows every
# process: compare the per-request columns, not the rates.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-6}
command -v perf >/dev/null || { echo "installing perf (apt)"; apt-get install -y -q linux-perf >/dev/null; }
source bench/lib/file-upstream.sh

N_PORT=$(free_port)
cat > "$work/proxy.conf" <<NGINX
worker_processes auto;
pid $work/proxy.pid;
error_log $work/proxy.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server { listen 127.0.0.1:$N_PORT; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
nginx -c "$work/proxy.conf" -p "$work"

# start_router NAME [ENV...]: a one-app router; its pid and port in NAME.pid, NAME.port.
start_router() {
  local name=$1
  shift
  env "$@" target/release/examples/many_apps 1 "127.0.0.1:$UP_PORT" plain > "$work/$name.out" &
  echo $! > "$work/$name.pid"
  for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^listening on 127.0.0.1://p' "$work/$name.out" | head -1 > "$work/$name.port"
}
start_router shared
start_router percore BIFROST_BENCH_PER_CORE=2
sleep 0.5

# measure LABEL PIDS PORT HOST: one row.
measure() {
  perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$2" -o "$work/perf.txt" -- sleep "$D" &
  local stat=$!
  wrk -t2 -c64 -d"${D}s" -H "Host: $4" "http://127.0.0.1:$3/" > "$work/wrk.txt"
  wait $stat
  python3 - "$1" "$work/wrk.txt" "$work/perf.txt" <<'PY'
import re, sys
label, wrk, perf = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
n = int(re.search(r"(\d+) requests in", wrk).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", wrk)
count = lambda ev: float(re.search(r"([\d,.]+)\s+(?:msec\s+)?" + ev, perf).group(1).replace(",", ""))
print(f"| {label} | {rps:,.0f} | {count('raw_syscalls:sys_enter') / n:.1f} | {count('context-switches') / n:.2f} "
      f"| {count('task-clock') * 1000 / n:.1f} | {bad.group(1) if bad else 0} |")
PY
}
nginx_workers=$(pgrep -d, -P "$(cat "$work/proxy.pid")")
echo "# CPU per request — $(date -u +%Y-%m-%d) — $(nproc) cores — wrk -t2 -c64 -d${D}s, one app, no rules"
echo
echo "| process | req/s | syscalls / req | context switches / req | CPU µs / req | non-2xx |"
echo "|---|---|---|---|---|---|"
measure "nginx proxy_pass (keepalive 128)" "$nginx_workers" "$N_PORT" app0.localhost
measure "router, one multi-thread runtime" "$(cat "$work/shared.pid")" "$(cat "$work/shared.port")" app0.localhost
measure "router, a runtime per core" "$(cat "$work/percore.pid")" "$(cat "$work/percore.port")" app0.localhost
measure "router answering itself (404), multi-thread" "$(cat "$work/shared.pid")" "$(cat "$work/shared.port")" nope.localhost
measure "router answering itself (404), per core" "$(cat "$work/percore.pid")" "$(cat "$work/percore.port")" nope.localhost
