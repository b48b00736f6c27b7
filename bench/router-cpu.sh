#!/usr/bin/env bash
# Where the router's time goes (issue "Router data plane", the ≥ 1.2× nginx
# goal): throughput and CPU per request of each proxy, wrk -t2 -c64, one
# app, no rules; the upstream an nginx worker serving a small file (never
# the bottleneck). Rows, alternating over ROUNDS rounds:
#   nginx proxy_pass (keepalive 128);
#   the router as `bifrost up` runs it (router/examples/many_apps … plain);
#   a bare hyper proxy (router/examples/hyper_floor): hyper's own floor;
#   a TCP relay (router/examples/tcp_relay): no HTTP at all, the least CPU
#   any proxy can spend per request here (its socket calls alone);
#   the router answering itself (a 404, no upstream hop);
#   the router writing its access log to a file, in batches as shipped,
#   and one write per line (as before batching).
# CPU is the process's user and system time (/proc/PID/stat) over the run,
# per request. Then one pass under `perf stat` counts syscalls and context
# switches per request (counting slows every process: compare the
# per-request columns, not its rates). BEFORE=path/to/an/older/many_apps
# adds a row for that build (a before/after in one run).
set -euo pipefail
cd "$(dirname "$0")/.."
D=${D:-6}
ROUNDS=${ROUNDS:-3}
command -v perf >/dev/null || { echo "installing perf (apt)"; apt-get install -y -q linux-perf >/dev/null; }
source bench/lib/file-upstream.sh
cargo build --release --quiet -p bifrost-router --example hyper_floor --example tcp_relay

N_PORT=$(free_port)
cat > "$work/nginx.conf" <<NGINX
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server { listen 127.0.0.1:$N_PORT; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
nginx -c "$work/nginx.conf" -p "$work"

# start NAME COMMAND...: its pid and port in NAME.pid, NAME.port.
start() {
  local name=$1
  shift
  "$@" > "$work/$name.out" &
  echo $! > "$work/$name.pid"
  for _ in $(seq 100); do grep -q listening "$work/$name.out" 2>/dev/null && break; sleep 0.1; done
  sed -n 's/^listening on 127.0.0.1://p' "$work/$name.out" | head -1 > "$work/$name.port"
}
start router target/release/examples/many_apps 1 "127.0.0.1:$UP_PORT" plain
start floor target/release/examples/hyper_floor "127.0.0.1:$UP_PORT"
start relay target/release/examples/tcp_relay "127.0.0.1:$UP_PORT"
# A router logging to $work/NAME.log (exec all the way down: the pid start()
# records is the router's).
logged() { exec env BIFROST_LOG=warn,bifrost::access=info "${@:2}" sh -c 'exec "$0" "$@" 2>"'"$work/$1.log"'"' \
  target/release/examples/many_apps 1 "127.0.0.1:$UP_PORT" plain; }
start logged logged logged
start logdirect logged logdirect BIFROST_BENCH_LOG=direct
[ -n "${BEFORE:-}" ] && start before "$BEFORE" 1 "127.0.0.1:$UP_PORT" plain
sleep 0.5
echo "$(pgrep -d, -P "$(cat "$work/nginx.pid")")" > "$work/nginxw.pid"
echo "$N_PORT" > "$work/nginxw.port"

# LABEL|NAME|HOST per row.
ROWS=(
  "nginx proxy_pass (keepalive 128)|nginxw|app0.localhost"
  "Bifrost router (as shipped)|router|app0.localhost"
  "bare hyper proxy (the floor)|floor|app0.localhost"
  "TCP relay, no HTTP (the ceiling)|relay|app0.localhost"
  "router answering itself (404)|router|nope.localhost"
  "router, access log to a file (batched, as shipped)|logged|app0.localhost"
  "router, access log, one write per line|logdirect|app0.localhost"
)
[ -n "${BEFORE:-}" ] && ROWS+=("router, the BEFORE build|before|app0.localhost")
ticks() { for p in ${1//,/ }; do awk '{print $14, $15}' "/proc/$p/stat"; done | awk '{u+=$1; s+=$2} END{print u, s}'; }
# The whole machine's busy ticks (everything but idle and iowait).
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# round NAME HOST: "req/s p99_ms usr_us sys_us rest_us", rest: the CPU per
# request of everything else on the machine (wrk, the upstream, the kernel's
# interrupts), which bounds what any proxy can reach here.
round() {
  local pids port a b ma mb
  pids=$(cat "$work/$1.pid") port=$(cat "$work/$1.port")
  a=$(ticks "$pids") ma=$(busy)
  wrk -t2 -c64 -d"${D}s" --latency -H "Host: $2" "http://127.0.0.1:$port/" > "$work/wrk.txt"
  b=$(ticks "$pids") mb=$(busy)
  python3 - "$work/wrk.txt" "$a" "$b" "$(getconf CLK_TCK)" "$ma" "$mb" <<'PY'
import re, sys
out, a, b, hz = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], int(sys.argv[4])
machine = (int(sys.argv[6]) - int(sys.argv[5])) * 1e6 / hz
n = int(re.search(r"(\d+) requests in", out).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
v, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()
p99 = float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
(ua, sa), (ub, sb) = [map(int, x.split()) for x in (a, b)]
usr, sys_ = (ub - ua) * 1e6 / hz / n, (sb - sa) * 1e6 / hz / n
print(rps, p99, usr, sys_, machine / n - usr - sys_)
PY
}

for r in $(seq "$ROUNDS"); do
  for i in "${!ROWS[@]}"; do
    IFS='|' read -r _ name host <<< "${ROWS[$i]}"
    round "$name" "$host" >> "$work/row$i.txt"
  done
done

echo "# CPU per request — $(date -u +%Y-%m-%d) — $(nproc) cores — wrk -t2 -c64 -d${D}s × $ROUNDS rounds, one app, no rules"
echo
echo "| process | req/s (median) | p99 ms (median) | user µs / req | system µs / req | rest of the machine µs / req | rounds (req/s) |"
echo "|---|---|---|---|---|---|---|"
for i in "${!ROWS[@]}"; do
  IFS='|' read -r label _ _ <<< "${ROWS[$i]}"
  python3 - "$label" "$work/row$i.txt" <<'PY'
import statistics, sys
label, rows = sys.argv[1], [list(map(float, l.split())) for l in open(sys.argv[2])]
col = lambda k: statistics.median(r[k] for r in rows)
rounds = " / ".join(f"{r[0]:,.0f}" for r in rows)
print(f"| {label} | {col(0):,.0f} | {col(1):.2f} | {col(2):.1f} | {col(3):.1f} | {col(4):.1f} | {rounds} |")
PY
done

# One pass under perf stat: syscalls and context switches per request.
echo
echo "| process (under perf stat) | syscalls / req | context switches / req | CPU µs / req |"
echo "|---|---|---|---|"
for i in 0 1 2 3; do
  IFS='|' read -r label name host <<< "${ROWS[$i]}"
  perf stat -e raw_syscalls:sys_enter,context-switches,task-clock -p "$(cat "$work/$name.pid")" -o "$work/perf.txt" -- sleep "$D" &
  stat=$!
  wrk -t2 -c64 -d"${D}s" -H "Host: $host" "http://127.0.0.1:$(cat "$work/$name.port")/" > "$work/wrk.txt"
  wait $stat
  python3 - "$label" "$work/wrk.txt" "$work/perf.txt" <<'PY'
import re, sys
label, wrk, perf = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
n = int(re.search(r"(\d+) requests in", wrk).group(1))
count = lambda ev: float(re.search(r"([\d,.]+)\s+(?:msec\s+)?" + ev, perf).group(1).replace(",", ""))
print(f"| {label} | {count('raw_syscalls:sys_enter') / n:.1f} | {count('context-switches') / n:.2f} "
      f"| {count('task-clock') * 1000 / n:.1f} |")
PY
done
