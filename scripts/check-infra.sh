#!/usr/bin/env bash
# The GCP infrastructure checks that can run here: terraform fmt on
# terraform/, and checkov (PyPI, pinned, in .tools/checkov) on terraform/
# on the GKE manifests the golden tests pin, on docker/Dockerfile and on the
# Dockerfiles the Cloud Build builder generates (golden files). `terraform validate` needs
# the google provider, which cannot be downloaded here (docs/gcp.md).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOV_VERSION=3.3.30
venv=.tools/checkov
if [ ! -x "$venv/bin/checkov" ] || ! "$venv/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  echo "installing checkov $CHECKOV_VERSION (PyPI) into $venv (one time)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION" >/dev/null
fi
if command -v terraform >/dev/null 2>&1; then
  terraform fmt -check -recursive terraform/ 2>/dev/null || { echo "terraform fmt: run \`terraform fmt -recursive terraform/\`" >&2; exit 1; }
  echo "terraform fmt: clean"
else
  echo "terraform not found: skipping terraform fmt" >&2
  [ -z "${BIFROST_REQUIRE_ALL_TESTS:-}" ] || exit 1
fi
# --skip-download: no calls to the vendor's API (no network here anyway).
run_checkov() {
  local out
  if ! out=$("$venv/bin/checkov" --skip-download --quiet --compact "$@" 2>&1); then
    echo "$out" >&2
    return 1
  fi
  echo "$out" | grep -E "scan results|Passed checks" | paste -sd' ' | sed 's/^/checkov: /'
}
run_checkov -d terraform --framework terraform
run_checkov -d shared/gcp/tests/golden/gke --framework kubernetes
run_checkov -d docker --framework dockerfile
run_checkov -d shared/gcp/tests/golden/cloud_build --framework dockerfile
