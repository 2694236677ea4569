#!/usr/bin/env bash
# Offline checks of the Helm chart and the manifests (`make chart-check`); quiet on success.
#
# 1. helm lint --strict with the default and the development values;
# 2. helm template with the default, development and feature variants of the values,
#    and refusal of values the schema or the chart must reject;
# 3. every rendered object, the example Auctions and install.yaml parse as Kubernetes
#    objects and validate strictly against the Kubernetes schemas (scripts/check-manifests.py);
# 4. charts/gavel/crds/auction.yaml equals the generated crds/auction.yaml (`make chart-sync`);
# 5. manifests/install.yaml is what `make manifests` renders now.
# Needs helm and tools/venv (`make tools`).
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=charts/gavel
PY=tools/venv/bin/python
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0

# Runs a command; shows its output only when it fails.
quiet() {
  local log
  if ! log=$("$@" 2>&1); then
    echo "chart-check: FAILED: $*" >&2
    echo "$log" >&2
    fail=1
    return 1
  fi
}

quiet helm lint --strict "$CHART"
quiet helm lint --strict "$CHART" -f "$CHART/values-dev.yaml"

pem='MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE' # any single-word stand-in for a PEM key
# Renders the chart with one set of values into $out/NAME.yaml.
render() {
  local name=$1
  shift
  if ! helm template gavel "$CHART" --namespace gavel --include-crds "$@" >"$out/$name.yaml" 2>"$out/$name.err"; then
    echo "chart-check: FAILED: helm template with the $name values" >&2
    cat "$out/$name.err" >&2
    fail=1
  fi
}
render default
render dev -f "$CHART/values-dev.yaml"
render dev-full -f "$CHART/values-dev.yaml" --set dev.persistence.enabled=true \
  --set serviceMonitor.enabled=true --set bidApi.podDisruptionBudget.enabled=true
render external --set redis.url=rediss://redis.example:6380/0 \
  --set database.url=postgres://gavel:x@pg.example:5432/gavel --set-string "auth.jwt.publicKey=$pem" \
  --set operator.image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef \
  --set "bidApi.allowedOrigins={https://a.example,https://b.example}" --set bidApi.autoscaling.enabled=false \
  --set operator.replicaCount=1 --set operator.leaderElection.leaseName=auctions-leader \
  --set operator.leaderElection.leaseDuration=30s --set networkPolicy.enabled=false --set fullnameOverride=auctions
render oidc --set auth.oidc.issuer=https://keycloak.example/realms/shop --set auth.oidc.audience=gavel \
  --set auth.oidc.bidRole=bidder --set auth.oidc.rolesClaim=realm_access.roles --set auth.oidc.nameClaim=preferred_username \
  --set auth.oidc.caConfigMap=corp-ca --set "networkPolicy.egress.identityProvider.to[0].ipBlock.cidr=10.1.0.0/16"
render events --set events.sink=https://hooks.example/gavel --set events.existingSecret=gavel-events \
  --set "networkPolicy.egress.eventSinks.to[0].ipBlock.cidr=10.2.0.0/16"
render events-inline --set-string events.secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw --set events.maxAttempts=5
render restricted-egress --set "networkPolicy.egress.redis.to[0].ipBlock.cidr=10.0.0.0/24" \
  --set-string "networkPolicy.bidApiFrom[0].namespaceSelector.matchLabels.ingress=true" --set serviceMonitor.enabled=true
# The real-cluster suite's HPA values (short behaviour windows), and Kubernetes' own behaviour.
render hpa-test -f scripts/cluster/values-hpa.yaml
render hpa-k8s-behavior --set bidApi.autoscaling.behavior=null
grep -q 'stabilizationWindowSeconds: 15' "$out/hpa-test.yaml" || { echo "chart-check: FAILED: values-hpa.yaml's behavior not rendered" >&2; fail=1; }
! grep -q 'behavior:' "$out/hpa-k8s-behavior.yaml" || { echo "chart-check: FAILED: behavior=null still renders a behavior" >&2; fail=1; }

# Values that must be refused.
must_fail() {
  if helm template gavel "$CHART" "$@" >/dev/null 2>&1; then
    echo "chart-check: FAILED: helm template accepted bad values: $*" >&2
    fail=1
  fi
}
must_fail --set unknownValue=1
must_fail --set operator.replicas=3
must_fail --set bidApi.autoscaling.minReplicas=5 --set bidApi.autoscaling.maxReplicas=3
must_fail --set bidApi.autoscaling.behavior.scaleSideways.selectPolicy=Max
must_fail --set operator.leaderElection.leaseDuration=soon
must_fail --set auth.oidc.leeway=soon
must_fail --set bidApi.image.pullPolicy=Sometimes
must_fail --set auth.jwt.secret=s --set-string auth.jwt.publicKey=p
must_fail --set events.sink=ftp://hooks.example/x
must_fail --set events.secret=hunter2
must_fail --set events.backoff=soon
must_fail --set events.sink=https://hooks.example/gavel

examples=(manifests/auction-*.yaml)
[ -e "${examples[0]}" ] || examples=()
quiet "$PY" scripts/check-manifests.py --crd "$CHART/crds/auction.yaml" "$out"/*.yaml "${examples[@]}" manifests/install.yaml

if [ -f crds/auction.yaml ] && ! cmp -s crds/auction.yaml "$CHART/crds/auction.yaml"; then
  echo "chart-check: FAILED: $CHART/crds/auction.yaml differs from crds/auction.yaml; run 'make chart-sync'" >&2
  fail=1
fi

scripts/render-install.sh > "$out/install.yaml"
if ! cmp -s "$out/install.yaml" manifests/install.yaml; then
  echo "chart-check: FAILED: manifests/install.yaml is stale; run 'make manifests'" >&2
  diff -u manifests/install.yaml "$out/install.yaml" | head -40 >&2 || true
  fail=1
fi

exit "$fail"
