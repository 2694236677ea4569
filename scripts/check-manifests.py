#!/usr/bin/env python3
"""Offline check of rendered Kubernetes manifests (no API server needed).

usage: check-manifests.py [--crd CRD.yaml]... [--kube-version 1.30.0] FILE...

For every YAML document of every FILE:
- it is a mapping with a string apiVersion and kind and a DNS-compatible metadata.name;
- no two documents of one file name the same (group, kind, namespace, name);
- built-in kinds validate strictly (unknown fields are errors) against the
  Kubernetes OpenAPI schemas bundled with the `kubernetes-validate` package;
- custom resources of a CRD given with --crd (or present in the files) validate
  against that CRD's openAPIV3Schema (structure, types, enums, bounds; CEL rules
  need an API server and are not evaluated);
- kinds of other CRDs (ServiceMonitor) get the basic checks only.
Prints nothing and exits 0 when everything passes.
"""
import argparse
import copy
import re
import sys

import jsonschema
import kubernetes_validate
import yaml

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
# CRDs that are not ours and not shipped with the chart: basic checks only.
EXTERNAL_GROUPS = {"monitoring.coreos.com"}


def to_json_schema(node):
    """Turns a structural OpenAPI v3 schema into a JSON schema jsonschema accepts."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "format"):
            continue
        out[key] = to_json_schema(value)
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def crd_schemas(docs):
    schemas = {}
    for d in docs:
        if d.get("kind") != "CustomResourceDefinition":
            continue
        spec = d["spec"]
        for v in spec["versions"]:
            key = (f"{spec['group']}/{v['name']}", spec["names"]["kind"])
            schema = to_json_schema(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
            schema.setdefault("properties", {}).pop("metadata", None)
            schemas[key] = schema
    return schemas


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--crd", action="append", default=[])
    ap.add_argument("--kube-version", default="1.30.0")
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()

    errors = []
    docs = []
    for path in args.files:
        try:
            docs += [(path, i, d) for i, d in enumerate(load(path))]
        except yaml.YAMLError as e:
            errors.append(f"{path}: not valid YAML: {e}")
    crd_docs = [d for p in args.crd for d in load(p)] + [d for _, _, d in docs if isinstance(d, dict)]
    schemas = crd_schemas(crd_docs)

    seen = {}
    for path, i, d in docs:
        where = f"{path} document {i + 1}"
        if not isinstance(d, dict):
            errors.append(f"{where}: not a mapping")
            continue
        api, kind, meta = d.get("apiVersion"), d.get("kind"), d.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(api, str) or not isinstance(kind, str) or not isinstance(name, str):
            errors.append(f"{where}: needs string apiVersion, kind and metadata.name")
            continue
        if len(name) > 253 or not NAME_RE.match(name):
            errors.append(f"{where}: {kind} name {name!r} is not a valid Kubernetes name")
        where = f"{path}: {kind}/{name}"
        key = (path, api.split("/")[0] if "/" in api else "", kind, meta.get("namespace"), name)
        if key in seen:
            errors.append(f"{where}: defined twice in the same file")
        seen[key] = True

        group = api.split("/")[0] if "/" in api else ""
        if (api, kind) in schemas:
            for e in jsonschema.Draft7Validator(schemas[(api, kind)]).iter_errors(d):
                loc = ".".join(str(p) for p in e.absolute_path) or "(root)"
                errors.append(f"{where}: {loc}: {e.message}")
        elif group in EXTERNAL_GROUPS or group.endswith("gavel.dev"):
            if group.endswith("gavel.dev"):
                errors.append(f"{where}: no CRD found for {api} {kind}")
        else:
            try:
                kubernetes_validate.validate(d, args.kube_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                loc = ".".join(str(p) for p in e.path) or "(root)"
                errors.append(f"{where}: {loc}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                errors.append(f"{where}: unknown kind {api} {kind} for Kubernetes {args.kube_version}")

    for e in errors:
        print(e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
