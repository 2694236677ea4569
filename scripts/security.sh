#!/usr/bin/env bash
# `make security`: checkov over the rendered chart (default values, and development
# values with every optional object on) and the Dockerfile. Any failed check fails.
# A check may only be skipped where the object is made, with its reason: a
# `checkov.io/skipN: CHECK_ID=reason` annotation in the chart's templates, or a
# `# checkov:skip=CHECK_ID: reason` comment in the Dockerfile. Offline: nothing is
# downloaded from or sent to any platform.
set -euo pipefail
cd "$(dirname "$0")/.."

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
helm template gavel charts/gavel --namespace gavel --include-crds > "$out/default.yaml"
helm template gavel charts/gavel --namespace gavel -f charts/gavel/values-dev.yaml \
  --set serviceMonitor.enabled=true --set dev.persistence.enabled=true > "$out/dev.yaml"
cp Dockerfile "$out/Dockerfile"

if ! tools/venv/bin/checkov --directory "$out" --framework kubernetes dockerfile \
  --skip-download --compact --quiet > "$out/report.txt" 2>&1; then
  grep -v '^\s*$' "$out/report.txt" >&2
  echo "security: checkov found failed checks (fix them, or skip with a reason where the object is made)" >&2
  exit 1
fi
