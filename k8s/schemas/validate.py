#!/usr/bin/env python3
"""Validates the custom resources of rendered manifests against the vendored schemas.

Usage: validate.py MANIFESTS.yaml...

kubernetes-validate knows only built-in kinds and has no option to load more schemas: it
skips custom resources with a warning. This checks every object whose API group has a
schema here (k8s/schemas/<kind>-<group>-<version>.json, from convert.py) against it, and
fails when an object of a vendored API group has no schema (a kind or version that was
never vendored would otherwise pass unchecked). Objects of other groups (cert-manager,
Gateway API) are left to tests/k8s. Needs jsonschema and PyYAML (both in
kubernetes-validate's virtualenv).
"""

import glob
import json
import os
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def schemas():
    out = {}
    for path in glob.glob(os.path.join(HERE, "*.json")):
        with open(path, encoding="utf-8") as f:
            out[os.path.basename(path)[: -len(".json")]] = json.load(f)
    return out


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    known = schemas()
    groups = {name.split("-")[-2] for name in known}
    failed = checked = 0
    for path in argv[1:]:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in docs:
            api_version = doc.get("apiVersion", "")
            if "/" not in api_version:
                continue
            group, version = api_version.split("/", 1)
            short = group.split(".")[0]
            if short not in groups:
                continue
            what = f"{path}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
            key = f"{doc.get('kind', '').lower()}-{short}-{version}"
            schema = known.get(key)
            if schema is None:
                print(f"{what}: no vendored schema {key}.json", file=sys.stderr)
                failed += 1
                continue
            errors = sorted(
                jsonschema.Draft7Validator(schema).iter_errors(doc),
                key=lambda e: list(e.absolute_path),
            )
            for e in errors:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                print(f"{what}: {where}: {e.message}", file=sys.stderr)
            failed += bool(errors)
            checked += 1
    if failed:
        sys.exit(f"{failed} custom resource(s) invalid")
    print(f"{checked} custom resources valid against k8s/schemas")


if __name__ == "__main__":
    main(sys.argv)
