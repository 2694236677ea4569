#!/usr/bin/env bash
# The e2e scenarios through the kubectl backend, against a real kube-apiserver (part of
# `make test`): `gavel-local up --kube` starts etcd and a kube-apiserver on loopback,
# applies the chart's CRD and RBAC, and runs the operator out of the cluster as the chart's
# operator ServiceAccount beside Redis, PostgreSQL and two bid-api processes; every
# scenario's Auction is then `kubectl apply`-ed and read back with `kubectl get`.
#
# Uses the debug binaries `make test` has just built (GAVEL_BIN_DIR to use others) and
# stops everything it started, also on failure. Extra arguments go to the test binary
# (e.g. a scenario's name).
set -euo pipefail
cd "$(dirname "$0")/.."
bin_dir=${GAVEL_BIN_DIR:-$PWD/target/debug}
export GAVEL_BIN_DIR=$bin_dir
dir=$(mktemp -d "${TMPDIR:-/tmp}/gavel-e2e-kube.XXXXXX")
stop() {
  "$bin_dir/gavel-local" down --dir "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
started=$(date +%s)
if ! "$bin_dir/gavel-local" up --kube --dir "$dir" >/dev/null; then
  echo "e2e-kube: the platform did not start; its logs:" >&2
  tail -n 30 "$dir"/local.log "$dir"/logs/*.log >&2 || true
  exit 1
fi
# shellcheck disable=SC1091 # written by gavel-local up
. "$dir/env"
"$GAVEL_KUBECTL" create namespace e2e >/dev/null
echo "e2e-kube: platform up in $(( $(date +%s) - started ))s (kube-apiserver, operator as its ServiceAccount); running the scenarios"
status=0
GAVEL_E2E_WS_URLS=$GAVEL_WS_URLS \
GAVEL_E2E_HTTP_URLS=$GAVEL_HTTP_URLS \
GAVEL_E2E_DATABASE_URL=$GAVEL_DATABASE_URL \
GAVEL_E2E_JWT_SECRET=$GAVEL_JWT_SECRET \
GAVEL_E2E_KUBECTL=$GAVEL_KUBECTL \
GAVEL_E2E_NAMESPACE=e2e \
  cargo test --workspace --all-features --locked --test scenarios -- "$@" || status=$?
if ((status != 0)); then
  echo "e2e-kube: scenarios failed; the operator's log:" >&2
  tail -n 60 "$dir"/logs/operator*.log >&2 || true
  exit "$status"
fi
echo "e2e-kube: passed in $(( $(date +%s) - started ))s"
