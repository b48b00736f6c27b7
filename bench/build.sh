#!/usr/bin/env bash
# Build times on this machine, before and after a change (BASE, e.g. the
# commit before the crate split), each in a fresh worktree with its own
# empty target dir, one after the other: (1) a clean release build of the
# workspace's default members; (2) a release rebuild of the CLI after
# touching the Firestore store, and after touching the router — with the
# crates each rebuild compiled. BASE_DIR: an already built worktree of BASE
# (its clean build is then not timed again, only its rebuilds).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:?set BASE to the commit to compare with}
HEAD_REV=$(git rev-parse HEAD)
work=$(mktemp -d)
trap 'for d in "$work"/*/; do git worktree remove --force "$d" 2>/dev/null || true; done; rm -rf "$work"' EXIT

secs() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1; python3 -c "print(f'{$(date +%s.%N) - $s:.0f}')"; }
rebuilt() { # the crates a `cargo build` compiled (not fresh), and its wall time
  local s; s=$(date +%s.%N)
  local crates
  crates=$(cargo build --release -p bifrost-cli --message-format json 2>/dev/null | python3 -c '
import json, sys
names = []
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and not m.get("fresh") and "build-script" not in m["target"]["kind"]:
        names.append(m["target"]["name"])
print(" ".join(sorted(set(names))))')
  echo "$(python3 -c "print(f'{$(date +%s.%N) - $s:.0f}')") s: $crates"
}

for rev in "$BASE" "$HEAD_REV"; do
  dir="$work/$rev"
  reuse=""
  if [ "$rev" = "$BASE" ] && [ -n "${BASE_DIR:-}" ]; then dir=$BASE_DIR; reuse=1; else git worktree add -q -f "$dir" "$rev"; fi
  (
    cd "$dir"
    export CARGO_TARGET_DIR="$dir/target"
    echo "== $(git log -1 --format='%h %s' | cut -c1-70)"
    if [ -z "$reuse" ]; then
      echo "clean release build (default members): $(secs cargo build --release) s"
    else
      cargo build --release >/dev/null 2>&1
      echo "(clean build not timed again: BASE_DIR=$dir)"
    fi
    cargo build --release -p bifrost-cli >/dev/null 2>&1
    store=""
    for f in shared/src/gcp/firestore.rs shared/gcp/src/firestore.rs shared/gcp/src/firestore/mod.rs; do [ -e "$f" ] && store=$f; done
    touch "$store"
    echo "touch $store, rebuild the CLI: $(rebuilt)"
    touch router/src/lib.rs
    echo "touch router/src/lib.rs, rebuild the CLI: $(rebuilt)"
  )
done
echo "machine: $(nproc) cores, $(uname -r), $(date -u +%F)"
