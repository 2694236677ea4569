#!/usr/bin/env bash
# Prints manifests/install.yaml: the chart rendered with its default values as release
# "gavel" in namespace "gavel", after that Namespace (enforcing the "restricted" Pod
# Security Standard). `make manifests` writes it; `make chart-check` checks it is current.
set -euo pipefail
cd "$(dirname "$0")/.."
cat <<'HEADER'
# Gavel install manifest: charts/gavel rendered with its default values by
# `make manifests`. Do not edit; change the chart and run `make manifests`.
#
# Before `kubectl apply -f manifests/install.yaml`, create in namespace gavel:
#   Secret gavel-connections with keys redis-url and database-url
#   Secret gavel-jwt with key jwt-secret (HS256) or jwt-public-key (PEM)
# (see the "Deploying on Kubernetes" section of README.md). For anything else, use
# the Helm chart.
apiVersion: v1
kind: Namespace
metadata:
  name: gavel
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
    pod-security.kubernetes.io/audit: restricted
HEADER
helm template gavel charts/gavel --namespace gavel --include-crds
