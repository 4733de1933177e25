#!/usr/bin/env bash
# CycloneDX 1.5 SBOM of the Cargo workspace: one JSON document per package, generated
# by cargo-cyclonedx (pinned in .ci/tools.sh, installed once), dependencies resolved for
# the host (x86_64 Linux; each image's own SBOM, from syft, lists what its architecture's
# binary contains), collected into OUTDIR and checked: a CycloneDX document naming its
# package, with every dependency as a `pkg:cargo/` component. Run by .ci/run and by .github/workflows/release.yml (which
# keeps the documents with the release run).
#
# Usage: .ci/sbom.sh OUTDIR
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:?usage: .ci/sbom.sh OUTDIR}"

# shellcheck source=.ci/tools.sh
source .ci/tools.sh
cargo_tool cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
cyclonedx="$TOOLS_DIR/cargo-cyclonedx-$CARGO_CYCLONEDX_VERSION/bin/cargo-cyclonedx"

# cargo-cyclonedx writes <package>.cdx.json beside each package's Cargo.toml: a marker
# file tells this run's documents from anything else, and they are moved out at once.
marker="$(mktemp)"
trap 'rm -f "$marker"' EXIT
"$cyclonedx" cyclonedx --format json --spec-version 1.5 --quiet
mkdir -p "$out"
mapfile -t docs < <(find . -path ./target -prune -o -name '*.cdx.json' -newer "$marker" -print)
if [ "${#docs[@]}" -eq 0 ]; then
    echo "error: cargo-cyclonedx wrote no *.cdx.json" >&2
    exit 1
fi
for doc in "${docs[@]}"; do
    mv "$doc" "$out/"
done

# Every package of the workspace has its document, and each lists its dependencies.
packages="$(cargo metadata --format-version 1 --no-deps --locked | python3 -c \
    'import json, sys; print("\n".join(sorted(p["name"] for p in json.load(sys.stdin)["packages"])))')"
python3 - "$out" "$packages" <<'PY'
import json, pathlib, sys

out, packages = pathlib.Path(sys.argv[1]), sys.argv[2].split()
seen, problems = set(), []
for path in sorted(out.glob("*.cdx.json")):
    bom = json.loads(path.read_text())
    name = bom.get("metadata", {}).get("component", {}).get("name")
    seen.add(name)
    if bom.get("bomFormat") != "CycloneDX" or bom.get("specVersion") != "1.5":
        problems.append(f"{path.name}: not a CycloneDX document")
    cargo = [c for c in bom.get("components", []) if c.get("purl", "").startswith("pkg:cargo/")]
    if not cargo:
        problems.append(f"{path.name}: no pkg:cargo/ components")
missing = sorted(set(packages) - seen)
if missing:
    problems.append(f"no SBOM for {missing}")
if problems:
    sys.exit("\n".join("error: " + p for p in problems))
print(f"{len(seen)} CycloneDX documents in {out}")
PY
