#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it (.ci/run calls this script).
# Installs what the tests need, checks formatting and lints, builds, runs
# every test, and prints the summary last.
#
#   scripts/test.sh            everything
#   scripts/test.sh --quick    skip fmt/clippy (local iteration)
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
start=$(date +%s)

step "Tools"
# A fresh clone gains nothing from incremental caches (they took 19 GB of a
# 43 GB target here); CI runs without them.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi
# The whole suite needs ~15 GB under target/ (several feature sets of the
# workspace, release-built sidecar, wasm). Say so before cargo runs out.
free_gb=$(df -Pk . | awk 'NR==2 {print int($4 / 1048576)}')
if [ "${free_gb:-0}" -lt 15 ]; then
  echo "warning: only ${free_gb} GB free on $(df -P . | awk 'NR==2 {print $6}'); the test suite needs ~15 GB under target/" >&2
fi
command -v git >/dev/null || { echo "git is required" >&2; exit 1; }
if ! command -v cargo-nextest >/dev/null 2>&1; then
  echo "cargo-nextest not found; installing it (one time)"
  cargo install --locked cargo-nextest >/dev/null
fi
cargo --version
# Google's Firestore emulator (a JVM) backs the Firestore store's tests.
if [ ! -x /usr/lib/google-cloud-sdk/platform/cloud-firestore-emulator/cloud_firestore_emulator ]; then
  echo "Google's Firestore emulator is missing (expected under /usr/lib/google-cloud-sdk/platform/)" >&2
fi
# Google ships no Cloud Storage emulator: PyPI's gcp-storage-emulator
# (pinned) backs the Cloud Storage and Cloud Build tests.
GCS_EMULATOR_VERSION=2026.7.19
gcs_venv=.tools/gcs-emulator
if [ ! -x "$gcs_venv/bin/gcp-storage-emulator" ] \
  || [ "$("$gcs_venv/bin/pip" show gcp-storage-emulator 2>/dev/null | sed -n 's/^Version: //p')" != "$GCS_EMULATOR_VERSION" ]; then
  echo "installing gcp-storage-emulator $GCS_EMULATOR_VERSION (PyPI) into $gcs_venv (one time)"
  python3 -m venv "$gcs_venv"
  "$gcs_venv/bin/pip" install -q --disable-pip-version-check "gcp-storage-emulator==$GCS_EMULATOR_VERSION" >/dev/null
fi
# The dashboard: its client is wasm (built by `cargo xtask web`, shrunk by
# npm binaryen's wasm-opt); its browser tests drive Debian's Chromium.
scripts/setup-web.sh
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver (apt, one time)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }
fi

# promtool (Debian's prometheus package) checks the /metrics exposition.
if ! command -v promtool >/dev/null 2>&1; then
  echo "installing prometheus for promtool (apt, one time)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq prometheus >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq prometheus >/dev/null; }
fi

# The router cluster's discovery tests run against real peers: Debian's
# etcd-server (etcd) and dnsmasq-base (a DNS server with A and SRV records),
# between network namespaces (iproute2; curl reads a namespace's view).
if ! command -v etcd >/dev/null 2>&1 || ! command -v dnsmasq >/dev/null 2>&1 \
  || ! command -v ip >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
  echo "installing etcd-server, dnsmasq-base, iproute2, curl (apt, one time)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -qq etcd-server dnsmasq-base iproute2 curl >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null && $SUDO apt-get install -y -qq etcd-server dnsmasq-base iproute2 curl >/dev/null; }
fi

# Apps run as users of their own when the platform is root: a toolchain
# under /root (rustup's) is out of their reach, so the Rust example builds
# with the distribution's cargo (readable by every user).
if [ "$(id -u)" = 0 ] && [ ! -x /usr/bin/cargo ]; then
  echo "installing Debian's cargo for apps' Rust builds (apt, one time)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq cargo >/dev/null 2>&1 \
    || { apt-get update -qq >/dev/null && apt-get install -y -qq cargo >/dev/null; }
fi

if [ "$quick" = 0 ]; then
  step "Format"
  cargo fmt --all -- --check
  step "Lint (clippy -D warnings)"
  cargo clippy --quiet --workspace --all-targets -- -D warnings
  # The browser half of the dashboard is only compiled for wasm.
  cargo clippy --quiet -p bifrost-web --lib --target wasm32-unknown-unknown --features hydrate -- -D warnings
  step "Crate boundaries"
  scripts/check-crates.sh
  step "Infrastructure (terraform fmt, checkov)"
  scripts/check-infra.sh
fi

step "Build"
cargo build --quiet --workspace --all-targets
# What scripts/up.sh runs next to every replica (the README test starts it so).
cargo build --quiet --profile sidecar -p bifrost-sidecar
cargo xtask web
# The e2e tests run the real binary.
export BIFROST_BIN="$PWD/target/debug/bifrost"

step "Tests"
# In CI no test may skip for a missing tool.
if [ "${CI:-}" = "true" ]; then export BIFROST_REQUIRE_ALL_TESTS=1; fi
set +e
cargo nextest run --workspace --no-fail-fast --hide-progress-bar \
  --status-level fail --final-status-level slow --failure-output final
rc=$?
set -e

step "Summary"
echo "elapsed: $(( $(date +%s) - start ))s"
if [ $rc -eq 0 ]; then echo "ALL TESTS PASSED"; else echo "TESTS FAILED (exit $rc)"; fi
exit $rc
