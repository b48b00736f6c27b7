#!/usr/bin/env bash
# Router memory with many apps configured (issue "Router data plane"): the
# router alone (router/examples/many_apps.rs: APPS apps, each with a rate
# limit keyed by client IP, a request and a response header rule and a
# routing script) against nginx with APPS equivalent server blocks
# (limit_req per client, proxy_set_header, add_header), both in front of
# the same upstream (an nginx serving a small file). RSS idle, after one
# request to every app, and at the end of wrk -t2 -c64 spread over every
# app; the peak (VmHWM) too. nginx's RSS is its master and workers summed.
# Then the proxies alone, one app and no rules each, against that fast
# upstream (not a sandboxed app): req/s and p99, medians of ROUNDS
# alternating rounds, beside the upstream directly.
set -euo pipefail
cd "$(dirname "$0")/.."
APPS=${APPS:-1000}
D=${D:-10s}
source bench/lib/file-upstream.sh

# The router.
target/release/examples/many_apps "$APPS" "127.0.0.1:$UP_PORT" > "$work/router.out" &
echo $! > "$work/router.pid"
for _ in $(seq 100); do grep -q listening "$work/router.out" 2>/dev/null && break; sleep 0.1; done
R_PORT=$(sed -n 's/^listening on 127.0.0.1://p' "$work/router.out")

# nginx with the same apps.
N_PORT=$(free_port)
{
  echo "worker_processes auto; pid $work/nginx.pid; error_log $work/nginx.err;"
  echo "events { worker_connections 4096; }"
  echo "http { access_log off; server_names_hash_max_size 4096; server_names_hash_bucket_size 64;"
  echo "  upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }"
  for i in $(seq 0 $((APPS - 1))); do
    echo "  limit_req_zone \$binary_remote_addr zone=app$i:64k rate=1000000r/s;"
    echo "  server { listen 127.0.0.1:$N_PORT; server_name app$i.localhost;"
    echo "    location / { limit_req zone=app$i burst=1000000 nodelay; proxy_pass http://app; proxy_http_version 1.1;"
    echo "      proxy_set_header Connection \"\"; proxy_set_header X-Served-By bifrost; add_header Cache-Control no-store; } }"
  done
  echo "}"
} > "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work"
sleep 1

rss_kib() { # pids... -> "RSS HWM" (KiB, summed)
  local rss=0 hwm=0 pid
  for pid in "$@"; do
    rss=$((rss + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
    hwm=$((hwm + $(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")))
  done
  echo "$rss $hwm"
}
router_pids() { cat "$work/router.pid"; }
nginx_pids() { local m; m=$(cat "$work/nginx.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
mib() { python3 -c "print(f'{$1/1024:.1f}')"; }

cat > "$work/spread.lua" <<LUA
local i = 0
request = function()
  i = (i + 1) % $APPS
  return wrk.format("GET", "/", { Host = "app" .. i .. ".localhost" })
end
LUA

measure() { # name port pids-fn -> row
  local name=$1 port=$2 pids=$3 idle touched loaded rps
  idle=$(rss_kib $($pids))
  for i in $(seq 0 $((APPS - 1))); do echo "url = \"http://127.0.0.1:$port/\""; echo "header = \"Host: app$i.localhost\""; done > "$work/touch.cfg"
  curl -s -K "$work/touch.cfg" --parallel --parallel-max 16 -o /dev/null >/dev/null 2>&1
  touched=$(rss_kib $($pids))
  rps=$(wrk -t2 -c64 -d"$D" -s "$work/spread.lua" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  loaded=$(rss_kib $($pids))
  read -r i_rss _ <<< "$idle"; read -r t_rss _ <<< "$touched"; read -r l_rss l_hwm <<< "$loaded"
  echo "| $name | $(mib "$i_rss") | $(mib "$t_rss") | $(mib "$l_rss") | $(mib "$l_hwm") | $rps |"
}
check() { curl -s -o /dev/null -w '%{http_code}' -H "Host: app$((APPS - 1)).localhost" "http://127.0.0.1:$1/"; }
c=$(check "$R_PORT"); [ "$c" = 200 ] || { echo "the router does not answer 200 ($c, port $R_PORT)"; cat "$work/router.out"; exit 1; }
[ "$(check "$N_PORT")" = 200 ] || { echo "nginx does not answer 200"; exit 1; }

echo "# router RSS with $APPS apps — $(date -u +%Y-%m-%d) — $(nproc) cores — wrk -t2 -c64 -d$D over every app"
echo "| proxy | idle MiB | after one request to each app MiB | after load MiB | peak MiB | req/s under load |"
echo "|---|---|---|---|---|---|"
measure "bifrost router" "$R_PORT" router_pids
measure "nginx 1.22, $APPS server blocks" "$N_PORT" nginx_pids

# The proxies alone: one app, no rules, the same fast upstream.
target/release/examples/many_apps 1 "127.0.0.1:$UP_PORT" plain > "$work/plain.out" &
echo $! > "$work/plain.pid"
for _ in $(seq 100); do grep -q listening "$work/plain.out" 2>/dev/null && break; sleep 0.1; done
P_PORT=$(sed -n 's/^listening on 127.0.0.1://p' "$work/plain.out")
NP_PORT=$(free_port)
cat > "$work/plain.conf" <<NGINX
worker_processes auto;
pid $work/nginx-plain.pid;
error_log $work/nginx-plain.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server { listen 127.0.0.1:$NP_PORT; location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
nginx -c "$work/plain.conf" -p "$work"
sleep 0.5
ROUNDS=${ROUNDS:-3}
run() { wrk -t2 -c64 -d"$D" --latency "$@" | python3 -c '
import re, sys
t = sys.stdin.read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)", t)
scale = dict(us=0.001, ms=1, s=1000)[m.group(2)]
n = int(re.search(r"(\d+) requests in", t).group(1))
print(f"{rps:.0f} {float(m.group(1)) * scale:.2f} {n}")'; }
: > "$work/n.txt"; : > "$work/r.txt"; : > "$work/d.txt"
for _ in $(seq "$ROUNDS"); do
  run "http://127.0.0.1:$NP_PORT/" >> "$work/n.txt"
  run -H "Host: app0.localhost" "http://127.0.0.1:$P_PORT/" >> "$work/r.txt"
  run "http://127.0.0.1:$UP_PORT/" >> "$work/d.txt"
done
med() { for k in 1 2; do cut -d' ' -f$k "$1" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p"; done | tr '\n' ' '; }
read -r n_rps n_p99 <<< "$(med "$work/n.txt")"; read -r r_rps r_p99 <<< "$(med "$work/r.txt")"; read -r d_rps d_p99 <<< "$(med "$work/d.txt")"
echo
echo "# the proxies alone, one app, no rules — upstream: nginx serving a file — wrk -t2 -c64 -d$D, median of $ROUNDS"
echo "| path | req/s | p99 ms |"
echo "|---|---|---|"
echo "| upstream directly | $d_rps | $d_p99 |"
echo "| nginx 1.22 proxy_pass (keepalive 128) | $n_rps | $n_p99 |"
echo "| bifrost router | $r_rps | $r_p99 |"
python3 -c "print(f'| ratio router / nginx | {$r_rps/$n_rps:.2f}x | {$r_p99/$n_p99:.2f}x |')"
echo "rounds (req/s p99): nginx $(tr '\n' ';' < "$work/n.txt") router $(tr '\n' ';' < "$work/r.txt") direct $(tr '\n' ';' < "$work/d.txt")"

# A Lua script per request in both (OpenResty-class peer: Debian's
# ngx_http_lua module), one app, no other rules: the same logic as the
# router's script (a pattern find on the path, a response header).
if [ ! -f /usr/lib/nginx/modules/ngx_http_lua_module.so ]; then
  echo "installing libnginx-mod-http-lua (apt)"; apt-get install -y -q libnginx-mod-http-lua >/dev/null
fi
target/release/examples/many_apps 1 "127.0.0.1:$UP_PORT" script > "$work/script.out" &
echo $! > "$work/script.pid"
for _ in $(seq 100); do grep -q listening "$work/script.out" 2>/dev/null && break; sleep 0.1; done
S_PORT=$(sed -n 's/^listening on 127.0.0.1://p' "$work/script.out")
NL_PORT=$(free_port)
cat > "$work/lua.conf" <<NGINX
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes auto;
pid $work/nginx-lua.pid;
error_log $work/nginx-lua.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NL_PORT;
    location / {
      access_by_lua_block { if ngx.var.uri:find("^/admin") then ngx.status = 403; ngx.say("forbidden"); return ngx.exit(403) end }
      header_filter_by_lua_block { ngx.header["x-served-by"] = "lua" }
      proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -c "$work/lua.conf" -p "$work"
sleep 0.5
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$NL_PORT/admin")" = 403 ] || { echo "nginx lua does not run the script"; exit 1; }
: > "$work/nl.txt"; : > "$work/rs.txt"; : > "$work/n2.txt"; : > "$work/r2.txt"
# The proxy's own CPU (user + system, workers summed) per request, beside
# the old estimate from throughput on the shared cores.
ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s}'; }
workers() { pgrep -P "$(cat "$work/$1")" | tr '\n' ' '; }
run_cpu() { # FILE PIDS WRK-ARGS...: appends "req/s p99 requests cpu-µs-per-request"
  local file=$1 pids=$2 a b line
  shift 2
  a=$(ticks $pids)
  line=$(run "$@")
  b=$(ticks $pids)
  python3 -c "import sys; r, p, n = sys.argv[1].split(); print(r, p, n, f'{($b - $a) * 1e6 / $(getconf CLK_TCK) / int(n):.1f}')" "$line" >> "$file"
}
for _ in $(seq "$ROUNDS"); do
  run_cpu "$work/n2.txt" "$(workers nginx-plain.pid)" "http://127.0.0.1:$NP_PORT/"
  run_cpu "$work/nl.txt" "$(workers nginx-lua.pid)" "http://127.0.0.1:$NL_PORT/"
  run_cpu "$work/r2.txt" "$(cat "$work/plain.pid")" -H "Host: app0.localhost" "http://127.0.0.1:$P_PORT/"
  run_cpu "$work/rs.txt" "$(cat "$work/script.pid")" -H "Host: app0.localhost" "http://127.0.0.1:$S_PORT/"
done
read -r n2 _ <<< "$(med "$work/n2.txt")"; read -r nl _ <<< "$(med "$work/nl.txt")"
read -r r2 _ <<< "$(med "$work/r2.txt")"; read -r rs _ <<< "$(med "$work/rs.txt")"
cpu() { cut -d' ' -f4 "$1" | sort -g | sed -n "$(( (ROUNDS + 1) / 2 ))p"; }
echo
echo "# a Lua script per request — wrk -t2 -c64 -d$D, median of $ROUNDS"
echo "| proxy | without script req/s | with script req/s | from throughput: $(nproc) cores / req/s, with − without (µs) | the proxy's own CPU per request without → with (µs) | script's share of the proxy's CPU (µs) |"
echo "|---|---|---|---|---|---|"
python3 -c "
c = $(nproc) * 1e6
print(f'| nginx 1.22 + ngx_http_lua | $n2 | $nl | {c/$nl - c/$n2:.1f} | $(cpu "$work/n2.txt") → $(cpu "$work/nl.txt") | {$(cpu "$work/nl.txt") - $(cpu "$work/n2.txt"):.1f} |')
print(f'| bifrost router | $r2 | $rs | {c/$rs - c/$r2:.1f} | $(cpu "$work/r2.txt") → $(cpu "$work/rs.txt") | {$(cpu "$work/rs.txt") - $(cpu "$work/r2.txt"):.1f} |')"
