#!/usr/bin/env bash
# Health sidecar budgets: stripped binary size (goal <= 1 MiB), steady RSS
# (goal <= 3 MiB) and CPU at one report per second (goal <= 0.5% of a core).
# The sidecar measured is the one `bifrost up` itself starts next to a
# deployed static app, reporting to the platform's ingest.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${S:-30}
cargo build --release --quiet -p bifrost-cli
cargo build --profile sidecar --quiet -p bifrost-sidecar
BIN=$PWD/target/release/bifrost
SIDECAR=$PWD/target/sidecar/bifrost-sidecar
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

mkdir -p "$work/site/public"
printf '[app]\nname = "probe-me"\nruntime = "static"\n[health]\npath = "/"\ninterval = "1s"\ntimeout = "500ms"\n' > "$work/site/deploy.toml"
echo ok > "$work/site/public/index.html"
BIFROST_ADMIN_TOKEN=bench BIFROST_LOG=warn $BIN up --listen 127.0.0.1:0 --ingest-listen 127.0.0.1:0 \
  --data-dir "$work/data" --sidecar-bin "$SIDECAR" > "$work/up.out" 2>"$work/up.err" &
for _ in $(seq 100); do grep -q "sidecar ingest" "$work/up.out" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^bifrost: listening on //p' "$work/up.out")
BIFROST_SERVER=$URL BIFROST_TOKEN=bench BIFROST_CONFIG_DIR=$work/cfg $BIN deploy "$work/site" --wait >/dev/null 2>&1
PID=$(pgrep -f "^$SIDECAR" | head -1)
[ -n "$PID" ] || { echo "no sidecar process found" >&2; exit 1; }
sleep 5
ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)
t0=$(ticks); s0=$(date +%s.%N)
sleep "$S"
t1=$(ticks); s1=$(date +%s.%N)
rss=$(awk '/VmRSS/ { print $2 }' "/proc/$PID/status")
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$PID/status")
size=$(stat -c %s "$SIDECAR")
python3 - "$size" "$rss" "$hwm" "$t0" "$t1" "$s0" "$s1" "$HZ" "$S" <<'PY'
import sys
size, rss, hwm, t0, t1, s0, s1, hz, s = sys.argv[1:]
cpu = (float(t1) - float(t0)) / float(hz) / (float(s1) - float(s0)) * 100
print(f"# sidecar budgets — {int(s)} s at 1 report/s, started by bifrost up next to a static app")
print("| measure | value | goal |")
print("|---|---|---|")
print(f"| stripped binary (profile `sidecar`) | {int(size):,} B = {int(size)/1048576:.2f} MiB | <= 1 MiB |")
print(f"| steady RSS (VmRSS) | {int(rss)/1024:.2f} MiB (peak {int(hwm)/1024:.2f} MiB) | <= 3 MiB |")
print(f"| CPU | {cpu:.3f} % of a core ({float(t1)-float(t0):.0f} ticks of 1/{hz} s in {float(s1)-float(s0):.1f} s) | <= 0.5 % |")
PY
