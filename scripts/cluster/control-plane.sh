#!/usr/bin/env bash
# A bare Kubernetes control plane — etcd and kube-apiserver only — on free loopback ports,
# for the operator's tests (like controller-runtime's envtest) and for `make k8s-up`:
#
#   scripts/cluster/control-plane.sh up <dir>              start it; prints <dir>/admin.kubeconfig
#   scripts/cluster/control-plane.sh down <dir>            stop what `up` started, remove <dir>
#   scripts/cluster/control-plane.sh stop-apiserver <dir>  stop the API server only (etcd keeps the data)
#   scripts/cluster/control-plane.sh start-apiserver <dir> start it again on the same port
#
# Needs no root: no network namespace, no kubelet, no controller-manager. So no pod ever runs,
# namespaces never finish deleting and nothing is garbage-collected; the API server itself
# serves CRDs (with their CEL rules), RBAC, TokenRequest and Leases. Binaries: kube-build.sh
# (kube-apiserver, etcd, kubectl; cached by version). Shares its certificates and flags with
# cluster.sh (lib.sh).
#
# <dir> holds: admin.kubeconfig (client certificate in system:masters), pki/, ports (sourceable:
# ETCD_PORT, ETCD_PEER_PORT, APISERVER_PORT, and BIN, the folder of kubectl), pids/, logs/,
# and audit.log: every request of a ServiceAccount (metadata level), so tests can prove that
# none was refused.
set -euo pipefail
cmd=${1:-}
D=${2:-}
[[ -n $D ]] || { echo "usage: $0 up|down|stop-apiserver|start-apiserver <dir>" >&2; exit 2; }
[[ $D == /* ]] || D=$PWD/$D
cd "$(dirname "$0")/../.."
. scripts/cluster/versions.sh
. scripts/cluster/lib.sh
BIN=$KUBE_CACHE/bin
log() { echo "control-plane: $*" >&2; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Starts "$@" detached from this script (it outlives it), its log in $D/logs/<name>.log.
start() {
  local name=$1; shift
  setsid "$@" </dev/null >"$D/logs/$name.log" 2>&1 &
  echo "$!" >"$D/pids/$name"
}

stop() {  # <name>: SIGTERM, then SIGKILL after 10 s
  local f=$D/pids/$1 pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$f"
}

wait_ready() {  # <what> <seconds> <command...>
  local what=$1 secs=$2; shift 2
  local deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      log "$what not ready after ${secs}s; last lines of its log:"
      tail -20 "$D/logs/$what.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

start_apiserver() {
  # shellcheck disable=SC1091 # written by up
  . "$D/ports"
  apiserver_args "$D/pki" "http://127.0.0.1:$ETCD_PORT" 127.0.0.1 "$APISERVER_PORT" 127.0.0.1 10.0.0.0/24
  # Loopback only: the endpoint reconciler refuses a loopback address for the kubernetes
  # Service, and nothing here would use it.
  start kube-apiserver "$BIN/kube-apiserver" "${APISERVER_ARGS[@]}" --authorization-mode=RBAC \
    --endpoint-reconciler-type=none --audit-policy-file="$D/audit-policy.yaml" \
    --audit-log-path="$D/audit.log" --audit-log-format=json
  wait_ready kube-apiserver 120 "$BIN/kubectl" --kubeconfig "$D/admin.kubeconfig" get --raw /readyz
}

up() {
  for b in kube-apiserver etcd kubectl; do
    [[ -x $BIN/$b ]] || { log "$BIN/$b missing: scripts/cluster/kube-build.sh kube-apiserver etcd kubectl"; exit 1; }
  done
  [[ ! -f $D/pids/kube-apiserver && ! -f $D/pids/etcd ]] || { log "$D is in use: control-plane.sh down $D first"; exit 1; }
  rm -rf "$D"; mkdir -p "$D"/{logs,pids,etcd}
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPISERVER_PORT=%s\nBIN=%s\n' "$(free_port)" "$(free_port)" "$(free_port)" "$BIN" >"$D/ports"
  # shellcheck disable=SC1091
  . "$D/ports"
  pki_ca "$D/pki"
  pki_issue "$D/pki" apiserver /CN=kube-apiserver "IP:127.0.0.1,DNS:localhost"
  pki_issue "$D/pki" admin "/O=system:masters/CN=gavel-admin"
  write_kubeconfig "$D/admin.kubeconfig" "https://127.0.0.1:$APISERVER_PORT" "$D/pki" admin
  cat >"$D/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
YAML
  etcd_args "$D/etcd" "$ETCD_PORT" "$ETCD_PEER_PORT"
  start etcd "$BIN/etcd" "${ETCD_ARGS[@]}" --log-level=warn
  wait_ready etcd 30 curl -sf --noproxy '*' "http://127.0.0.1:$ETCD_PORT/health"
  start_apiserver
  echo "$D/admin.kubeconfig"
}

down() {
  [[ -d $D ]] || return 0
  stop kube-apiserver
  stop etcd
  rm -rf "$D"
}

case $cmd in
  up) up ;;
  down) down ;;
  stop-apiserver) stop kube-apiserver ;;
  start-apiserver) start_apiserver ;;
  *) echo "usage: $0 up|down|stop-apiserver|start-apiserver <dir>" >&2; exit 2 ;;
esac
