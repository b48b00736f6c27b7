#!/usr/bin/env bash
# The crate boundaries ARCHITECTURE.md promises, checked on the real
# dependency trees: every crate builds alone (its own features, nothing
# unified in from its neighbours), the core has no I/O crate in its tree,
# and nothing that talks to Firestore carries SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."

fail=0
tree() { { cargo tree --quiet -e normal --prefix none -p "$@" 2>/dev/null || true; } | awk '{print $1}' | sort -u; }
forbid() { # forbid <package> <why> <crate>...
  local pkg=$1 why=$2; shift 2
  local have; have=$(tree "$pkg")
  for c in "$@"; do
    if grep -qx "$c" <<<"$have"; then echo "crate boundary: $pkg has $c in its tree ($why)"; fail=1; fi
  done
}

forbid bifrost-core "the core does no I/O" rusqlite hyper reqwest tonic firestore kube mio landlock nix
forbid bifrost-api "wire types only (the dashboard builds it for wasm)" rusqlite hyper reqwest tonic firestore kube mio tokio
for pkg in $(cargo metadata --format-version 1 --no-deps | python3 -c '
import json, sys
for p in json.load(sys.stdin)["packages"]:
    print(p["name"])'); do
  # The end-to-end suite runs both homes side by side on purpose.
  if [ "$pkg" != bifrost-e2e ] && tree "$pkg" | grep -qx firestore; then
    forbid "$pkg" "it talks to Firestore" rusqlite
  fi
  cargo check --quiet -p "$pkg" || { echo "crate boundary: $pkg does not build alone"; fail=1; }
  # README's crate table names every crate (bifrost-cli is listed by its binary).
  [ "$pkg" = bifrost-cli ] || grep -q "| \`$pkg\`" README.md || { echo "README.md's crate table lacks $pkg"; fail=1; }
done
[ $fail = 0 ] && echo "crates: each builds alone, is in README's table; core has no I/O crate; no Firestore crate has SQLite"
exit $fail
