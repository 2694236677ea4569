#!/usr/bin/env bash
# Debian packages the real-cluster scripts need (installed when root, else named): the
# container runtime's runc and CNI plugins, busybox (the dev PostgreSQL image's shell),
# conntrack (kube-proxy), iptables, gcc (the pause image), psql (the suite), and
# the dev datastores' Redis and PostgreSQL (scripts/system-deps.sh).
set -euo pipefail
"$(dirname "$0")/../system-deps.sh"
missing=()
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
command -v busybox >/dev/null || missing+=(busybox-static)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v iptables >/dev/null || missing+=(iptables)
command -v gcc >/dev/null || missing+=(gcc libc6-dev)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v psql >/dev/null || missing+=(postgresql-client)
((${#missing[@]})) || exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "cluster: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "cluster: missing packages: ${missing[*]} (apt-get install them)" >&2
  exit 1
fi
