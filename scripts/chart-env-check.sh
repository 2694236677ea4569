#!/usr/bin/env bash
# `make chart-env-check`: every GAVEL_* variable the chart sets on a container is a
# flag of that container's binary (`--help` shows `[env: NAME=…]`, or `[env: NAME]` for hidden values), so renaming a flag in
# the Rust code cannot silently leave the chart setting a variable nobody reads.
# Builds the two binaries (debug) first. Quiet on success.
set -euo pipefail
cd "$(dirname "$0")/.."

# The binary targets that exist (a crate may not have its binary yet) and the target dir.
read -r target bins < <(cargo metadata -q --format-version 1 --no-deps | python3 -c '
import json, sys
m = json.load(sys.stdin)
bins = [t["name"] for p in m["packages"] for t in p["targets"] if "bin" in t["kind"]]
print(m["target_directory"], " ".join(b for b in bins if b in ("gavel-bid-api", "gavel-operator")))')
for container in bid-api operator; do
  [[ " $bins " == *" gavel-$container "* ]] || echo "chart-env-check: no gavel-$container binary yet; its variables are not checked" >&2
done
[ -n "$bins" ] || exit 0
# shellcheck disable=SC2046,SC2086 # one argument per binary
cargo build -q --locked $(printf -- '--bin %s ' $bins)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The default values (JWT from an existing Secret) and the dev values (inline JWT secret,
# allowed origins, dev datastores) between them set every variable the chart can set.
helm template gavel charts/gavel > "$out/default.yaml"
helm template gavel charts/gavel -f charts/gavel/values-dev.yaml > "$out/dev.yaml"

fail=0
for container in bid-api operator; do
  [[ " $bins " == *" gavel-$container "* ]] || continue
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
