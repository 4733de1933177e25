#!/usr/bin/env python3
"""Converts CustomResourceDefinition YAML into the JSON schemas k8s/schemas/validate.py reads.

Usage: convert.py OUT_DIR CRD.yaml...

For every CRD and every served version it writes OUT_DIR/<kind>-<group>-<version>.json
(kind lower-cased, group up to its first dot: cluster-postgresql-v1.json), the naming
kubernetes-validate uses for its built-in schemas. The schemas are strict: every object
that lists its properties and does not preserve unknown fields gets
`additionalProperties: false`, so a misspelt or misplaced field fails validation, as
`kubernetes-validate --strict` does for built-in kinds.
Needs PyYAML (present in kubernetes-validate's virtualenv).
"""

import json
import os
import sys

import yaml


def strict(node):
    if isinstance(node, dict):
        for value in node.values():
            strict(value)
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
    elif isinstance(node, list):
        for value in node:
            strict(value)
    return node


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    out_dir = argv[1]
    os.makedirs(out_dir, exist_ok=True)
    for path in argv[2:]:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for crd in docs:
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            group = spec["group"].split(".")[0]
            kind = spec["names"]["kind"].lower()
            for version in spec["versions"]:
                if not version.get("served", True):
                    continue
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$comment"] = (
                    f"{spec['names']['kind']} {spec['group']}/{version['name']}, "
                    f"converted by k8s/schemas/convert.py from {os.path.basename(path)}"
                )
                name = f"{kind}-{group}-{version['name']}.json"
                with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
                    json.dump(schema, f, indent=1, sort_keys=True)
                    f.write("\n")
                print(f"wrote {name}")


if __name__ == "__main__":
    main(sys.argv)
