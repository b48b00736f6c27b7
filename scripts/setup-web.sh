#!/usr/bin/env bash
# What building the dashboard's client needs, installed once per machine:
# the wasm32 target (rustup) and wasm-opt from npm binaryen@132 into
# .tools/ (Debian's binaryen 108 produces a wasm that fails to hydrate).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "adding the wasm32-unknown-unknown target (one time)"
  rustup target add wasm32-unknown-unknown >/dev/null
fi
if [ ! -x .tools/node_modules/.bin/wasm-opt ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "installing wasm-opt (npm binaryen@132) into .tools/ (one time)"
    npm install --prefix .tools --no-audit --no-fund --silent binaryen@132 >/dev/null
  else
    echo "npm not found: the dashboard's wasm is built without wasm-opt (larger, works)" >&2
  fi
fi
