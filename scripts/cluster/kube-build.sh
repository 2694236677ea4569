#!/usr/bin/env bash
# Builds (once) and caches the Kubernetes binaries that the real-cluster suite (#22) and the
# local control plane (#12) run: kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy, kubectl, etcd at the version Kubernetes itself requires, CoreDNS, and
# containerd 2 (Kubernetes 1.37 no longer supports containerd 1.x, which is what Debian 12 has),
# and metrics-server (the resource metrics API that lets the HorizontalPodAutoscaler act).
#
# Source comes from the Go module proxy. k8s.io/kubernetes replaces its k8s.io/* staging modules
# with paths inside its own tree, so `go install k8s.io/kubernetes/cmd/...@vX` is refused; we build
# from a small wrapper module that requires k8s.io/kubernetes vX and points every staging module at
# the copy shipped inside that same module (exactly the code of that release).
#
# Output: $GAVEL_KUBE_CACHE/bin/* (default ~/.cache/gavel/kube-<version>), keyed by version.
# Prints the bin directory on stdout. Re-running with the cache present does nothing.
#
#   kube-build.sh                               everything (make e2e-cluster, make kube-build)
#   kube-build.sh kube-apiserver etcd kubectl   only these, if missing (make test: the bare
#                                               control plane of control-plane.sh)
set -euo pipefail
. "$(dirname "$0")/versions.sh"

BIN="$KUBE_CACHE/bin"
all=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns containerd containerd-shim-runc-v2 ctr metrics-server)
if (($#)); then
  for b in "$@"; do
    [[ " ${all[*]} " == *" $b "* ]] || { echo "kube-build: unknown binary $b (one of: ${all[*]})" >&2; exit 2; }
  done
  want=("$@")
else
  want=("${all[@]}")
fi
# Whether <binary> is wanted and not built yet.
needed() { [[ " ${want[*]} " == *" $1 "* && ! -x "$BIN/$1" ]]; }
missing=()
for b in "${want[@]}"; do [[ -x "$BIN/$b" ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then echo "$BIN"; exit 0; fi
# One build at a time per cache (CI builds everything in the background while `make test`
# builds its subset): wait for the other, then build only what is still missing.
mkdir -p "$KUBE_CACHE"
exec 9>"$KUBE_CACHE/.build.lock"
flock 9
missing=()
for b in "${want[@]}"; do [[ -x "$BIN/$b" ]] || missing+=("$b"); done
if ((${#missing[@]} == 0)); then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "kube-build: Go is needed (go version >= 1.26)" >&2; exit 1; }
log() { echo "kube-build: $*" >&2; }
mkdir -p "$BIN" "$KUBE_CACHE/src"
# An older Go (>= 1.21) fetches the toolchain the modules ask for from the module proxy.
export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=auto
START=$(date +%s)

# --- Kubernetes ---------------------------------------------------------------------------
W="$KUBE_CACHE/src/kubernetes"
mkdir -p "$W"
KMOD=$(cd /tmp && go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
[[ -f "$KMOD" ]] || { log "cannot download k8s.io/kubernetes v$KUBE_VERSION"; exit 1; }
# The module zip leaves the staging modules out (they are modules of their own): pin each one to
# its release published with this Kubernetes version (v1.X.Y -> v0.X.Y).
staging=$(sed -n 's|^\t\(k8s.io/[a-z0-9-]*\) => ./staging/.*|\1|p' "$KMOD")
{
  echo "module gavel.dev/kube-build"
  echo
  echo "go 1.26.0"
  echo
  echo "require k8s.io/kubernetes v$KUBE_VERSION"
  echo
  for m in $staging; do
    echo "replace $m => $m v0.${KUBE_VERSION#*.}"
  done
} > "$W/go.mod"
cat > "$W/tools.go" <<'GO'
//go:build tools

// Package tools only anchors the build's dependencies.
package tools
GO
ver="v$KUBE_VERSION"
major=${KUBE_VERSION%%.*}; minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
LDF="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDF+=" -X $p.gitVersion=$ver -X $p.gitMajor=$major -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done
cd "$W"
kcmds=()
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
  if needed "$b"; then kcmds+=("k8s.io/kubernetes/cmd/$b"); fi
done
if ((${#kcmds[@]})); then
  log "resolving modules for Kubernetes $ver"
  go get "${kcmds[@]}" >&2
  for c in "${kcmds[@]}"; do
    log "building $(basename "$c")"
    go build -trimpath -ldflags "$LDF" -o "$BIN/$(basename "$c")" "$c"
  done
fi

# --- etcd: the server version Kubernetes' own go.mod pins ----------------------------------
if needed etcd; then
  ev=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
  E="$KUBE_CACHE/src/etcd"; mkdir -p "$E"; cd "$E"
  printf 'module gavel.dev/etcd-build\n\ngo 1.26.0\n' > go.mod
  log "building etcd $ev"
  go get "go.etcd.io/etcd/server/v3@$ev" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd" go.etcd.io/etcd/server/v3
fi

# --- CoreDNS: the cluster DNS (runs on the node, serves the cluster DNS address) ------------
# Built with only the plugins cluster.sh's Corefile uses (about half the packages of the full
# server, which also carries every cloud provider's SDK).
if needed coredns; then
  C="$KUBE_CACHE/src/coredns"; mkdir -p "$C"; cd "$C"
  printf 'module gavel.dev/coredns-build\n\ngo 1.26.0\n' > go.mod
  cat > main.go <<'GO'
// CoreDNS with only the plugins the one-node cluster's Corefile uses.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

// The plugins' order in a request's chain, as in CoreDNS's plugin.cfg.
func init() { dnsserver.Directives = []string{"ready", "errors", "cache", "kubernetes"} }

func main() { coremain.Run() }
GO
  log "building coredns $COREDNS_VERSION (plugins: ready, errors, cache, kubernetes)"
  go get "github.com/coredns/coredns@$COREDNS_VERSION" >&2
  go build -trimpath -ldflags "-s -w" -o "$BIN/coredns" .
fi
# --- containerd 2 (its module has no replace lines: go install works as is) -----------------
if needed containerd || needed containerd-shim-runc-v2 || needed ctr; then
  log "building containerd $CONTAINERD_VERSION"
  (cd /tmp && GOFLAGS= GOBIN="$BIN" go install -trimpath -tags "no_btrfs no_devmapper no_zfs no_aufs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" >&2)
fi
# --- metrics-server (no replace lines either; static, for its FROM-scratch image) ------------
if needed metrics-server; then
  log "building metrics-server $METRICS_SERVER_VERSION"
  (cd /tmp && GOFLAGS= GOBIN="$BIN" go install -trimpath \
    -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$METRICS_SERVER_VERSION" \
    "sigs.k8s.io/metrics-server/cmd/metrics-server@$METRICS_SERVER_VERSION" >&2)
fi
log "done in $(( $(date +%s) - START ))s"
echo "$BIN"
