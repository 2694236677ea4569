#!/usr/bin/env bash
# `make chart-env-check`: every GAVEL_* variable the chart sets on a container is a
# flag of that container's binary (`--help` shows `[env: NAME=…]`, or `[env: NAME]` for hidden values), so renaming a flag in
# the Rust code cannot silently leave the chart setting a variable nobody reads.
# Builds the two binaries (debug) first. Quiet on success.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q --locked -p gavel-bid-api -p gavel-operator
target=$(cargo metadata -q --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The default values (JWT from an existing Secret) and the dev values (inline JWT secret,
# allowed origins, dev datastores) between them set every variable the chart can set.
helm template gavel charts/gavel > "$out/default.yaml"
helm template gavel charts/gavel -f charts/gavel/values-dev.yaml > "$out/dev.yaml"

fail=0
for container in bid-api operator; do
  "$target/debug/gavel-$container" --help > "$out/$container.help"
  names=$(tools/venv/bin/python - "$container" "$out/default.yaml" "$out/dev.yaml" <<'PY'
import sys, yaml
container, files = sys.argv[1], sys.argv[2:]
names = set()
for path in files:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                if c["name"] == container:
                    names |= {e["name"] for e in c.get("env", []) if e["name"].startswith("GAVEL_")}
print("\n".join(sorted(names)))
PY
)
  [ -n "$names" ] || { echo "chart-env-check: no GAVEL_ variables found for $container" >&2; fail=1; }
  for name in $names; do
    if ! grep -Eq "env: $name(=|\])" "$out/$container.help"; then
      echo "chart-env-check: the chart sets $name on $container, but gavel-$container --help has no such flag" >&2
      fail=1
    fi
  done
done
exit "$fail"
