#!/usr/bin/env bash
# End-to-end test of the chart and images on a throw-away kind cluster (`make e2e-kind`).
# Runs where Docker and kind exist (a laptop, a CI runner); needs docker, kind, helm,
# kubectl, cargo and python3.
#
#  1. create kind cluster $KIND_CLUSTER (default gavel-e2e);
#  2. build both images (Dockerfile targets bid-api, operator) and `kind load` them;
#  3. `helm install` charts/gavel with values-dev.yaml (dev Redis/PostgreSQL, dev auth)
#     and two bid-api pods, into namespace gavel enforcing the "restricted" Pod
#     Security Standard;
#  4. apply an Auction (manifests/auction-basic.yaml, renamed, ending in 60 s) in
#     namespace e2e, port-forward each bid-api pod and the dev PostgreSQL, bid on it;
#  5. run the scenarios of the e2e crate against the cluster (contract below);
#  6. check that `kubectl get auction` shows the smoke auction Closed with its winner;
#  7. delete the cluster (trap), unless KEEP_CLUSTER=1.
#
# Contract with the e2e crate: `cargo test -p gavel-e2e -- --include-ignored` with
#   GAVEL_E2E_WS_URLS    ws://127.0.0.1:<port>/v1/ws, one per bid-api pod, comma-separated
#   GAVEL_E2E_HTTP_URLS  http://127.0.0.1:<port>, the same pods in the same order
#   GAVEL_E2E_KUBECTL    the kubectl program: scenario auctions are `kubectl apply`-ed and
#                        read back with `kubectl get auction -o json`
#   GAVEL_E2E_NAMESPACE  namespace of the scenario auctions (e2e)
#   GAVEL_E2E_DATABASE_URL  the dev PostgreSQL, port-forwarded
# The bid-api runs with GAVEL_DEV_AUTH=true: bidders connect with ?bidder=<name>.
#
# Knobs: KIND_CLUSTER, KEEP_CLUSTER=1 (keep the cluster for debugging), SKIP_BUILD=1
# (images already built and tagged), E2E_TEST_ARGS (extra `cargo test` arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${KIND_CLUSTER:-gavel-e2e}
NS=gavel
AUCTION_NS=e2e
TAG=dev
PREFIX=ghcr.io/gavel-dev
PIDS=()

log() { printf '\n==> %s\n' "$*"; }
for tool in docker kind helm kubectl cargo python3; do
  command -v "$tool" >/dev/null || { echo "e2e-kind: $tool is required" >&2; exit 1; }
done

cleanup() {
  local rc=$?
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do kill "$pid" 2>/dev/null || true; done
  if [ "$rc" != 0 ]; then
    echo "e2e-kind: FAILED; cluster state:" >&2
    kubectl get pods,auctions -A -o wide >&2 || true
    kubectl -n "$NS" logs -l app.kubernetes.io/component=operator --tail=50 --prefix >&2 || true
    kubectl -n "$NS" logs -l app.kubernetes.io/component=bid-api --tail=50 --prefix >&2 || true
  fi
  if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
    echo "e2e-kind: keeping cluster $CLUSTER (kind delete cluster --name $CLUSTER)"
  else
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT

# Port-forwards $1 (a pod or service) to a free local port; prints the port.
forward() {
  local target=$1 remote=$2 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  kubectl -n "$NS" port-forward "$target" "$port:$remote" >/dev/null 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$port"; return; }
    sleep 0.2
  done
  echo "e2e-kind: port-forward to $target did not come up" >&2
  return 1
}

log "kind cluster $CLUSTER"
kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s
kubectl config use-context "kind-$CLUSTER" >/dev/null

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  log "images"
  docker build --target bid-api -t "$PREFIX/gavel-bid-api:$TAG" .
  docker build --target operator -t "$PREFIX/gavel-operator:$TAG" .
fi
kind load docker-image --name "$CLUSTER" "$PREFIX/gavel-bid-api:$TAG" "$PREFIX/gavel-operator:$TAG"

log "helm install (values-dev.yaml) into namespace $NS (Pod Security Standard: restricted)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl label namespace "$NS" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
helm upgrade --install gavel charts/gavel -n "$NS" -f charts/gavel/values-dev.yaml \
  --set bidApi.replicaCount=2 --wait --timeout 5m
kubectl create namespace "$AUCTION_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null

log "smoke auction $AUCTION_NS/kind-smoke, ending in 60 s"
ends=$(python3 -c 'import datetime as d; print((d.datetime.now(d.timezone.utc) + d.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
sed -e 's/^  name: .*/  name: kind-smoke/' -e "s/^  endsAt: .*/  endsAt: \"$ends\"/" manifests/auction-basic.yaml |
  kubectl -n "$AUCTION_NS" apply -f -
kubectl -n "$AUCTION_NS" wait auction/kind-smoke --for=jsonpath='{.status.phase}'=Open --timeout=60s

ws_urls=() http_urls=()
for pod in $(kubectl -n "$NS" get pods -l app.kubernetes.io/component=bid-api -o name); do
  port=$(forward "$pod" 8080)
  ws_urls+=("ws://127.0.0.1:$port/v1/ws")
  http_urls+=("http://127.0.0.1:$port")
done
pg_port=$(forward pod/gavel-postgresql-0 5432)

log "bids on the smoke auction (the gavel CLI)"
cargo build --workspace --all-features --locked --bins
target/debug/gavel bid --url "${ws_urls[0]}" --bidder alice "$AUCTION_NS/kind-smoke" --amount 2000
# Through the other pod, when there are two: the bid reaches Redis all the same.
target/debug/gavel bid --url "${ws_urls[${#ws_urls[@]}-1]}" --bidder bob "$AUCTION_NS/kind-smoke" --amount 2500

log "e2e scenarios"
join() { local IFS=,; echo "$*"; }
# shellcheck disable=SC2086 # E2E_TEST_ARGS is a list of arguments
GAVEL_E2E_WS_URLS=$(join "${ws_urls[@]}") \
GAVEL_E2E_HTTP_URLS=$(join "${http_urls[@]}") \
GAVEL_E2E_KUBECTL=$(command -v kubectl) \
GAVEL_E2E_NAMESPACE=$AUCTION_NS \
GAVEL_E2E_DATABASE_URL="postgres://gavel:gavel-dev-only@127.0.0.1:$pg_port/gavel" \
GAVEL_E2E_JWT_SECRET=gavel-dev-only-insecure-jwt-secret \
  cargo test -p gavel-e2e --locked ${E2E_TEST_ARGS:-} -- --include-ignored

log "result of the smoke auction"
kubectl -n "$AUCTION_NS" wait auction/kind-smoke --for=jsonpath='{.status.phase}'=Closed --timeout=120s
kubectl -n "$AUCTION_NS" get auction kind-smoke
winner=$(kubectl -n "$AUCTION_NS" get auction kind-smoke -o jsonpath='{.status.winner}')
price=$(kubectl -n "$AUCTION_NS" get auction kind-smoke -o jsonpath='{.status.finalPrice}')
if [ "$winner" != bob ] || [ "$price" != 2500 ]; then
  echo "e2e-kind: expected winner bob at 2500, got '$winner' at '$price'" >&2
  exit 1
fi
log "e2e-kind: passed (winner $winner at $price)"
