#!/usr/bin/env bash
# What one edit costs a developer (dev profile, incremental): in an already
# built checkout DIR, touch FILE, rebuild PACKAGE, and print the wall time
# and the crates compiled again. A first build of PACKAGE alone (its own
# features) runs untimed before.
#   bench/rebuild.sh DIR PACKAGE FILE
set -euo pipefail
dir=$1 pkg=$2 file=$3
cd "$dir"
cargo build -q -p "$pkg" >/dev/null 2>&1
touch "$file"
start=$(date +%s.%N)
crates=$(cargo build -p "$pkg" --message-format json 2>/dev/null | python3 -c '
import json, sys
names = set()
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and not m.get("fresh") and "build-script" not in m["target"]["kind"]:
        names.add(m["target"]["name"])
print(" ".join(sorted(names)))')
echo "$(git -C "$dir" log -1 --format=%h) $pkg after touching $file: $(python3 -c "print(f'{$(date +%s.%N) - $start:.1f}')") s, compiled: $crates"
