#!/usr/bin/env python3
"""renovate.json's custom managers find every pin they are written for.

check-jsonschema (vendor.renovate) checks the configuration's shape; this checks what
the schema cannot: that each regex manager's patterns name existing files and that its
matchStrings capture every pin there, so a tool added to .ci/tools.sh without its
`# renovate:` comment, or a pin moved out of a pattern's reach, fails CI instead of
silently never being updated. A pin no Renovate datasource can follow is declared with
`# renovate: manual (<why>)` above it instead. Renovate's regexes are JavaScript's: `(?<name>` becomes
Python's `(?P<name>`.
"""

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
config = json.loads((ROOT / "renovate.json").read_text())
files = [p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*") if p.is_file()
         and not any(part in {".git", "target", "node_modules"} for part in p.parts)]
problems = []


def js_regex(pattern):
    return re.compile(pattern.replace("(?<", "(?P<").replace("(?P<=", "(?<=").replace("(?P<!", "(?<!"))


def matches(manager):
    """(file, match) for every capture of the manager's matchStrings in its files."""
    out = []
    for fp in manager["managerFilePatterns"]:
        assert fp.startswith("/") and fp.endswith("/"), f"{fp}: expected a /regex/ pattern"
        named = [f for f in files if js_regex(fp[1:-1]).search(f)]
        if not named:
            problems.append(f"managerFilePatterns {fp} names no file")
        for f in named:
            text = (ROOT / f).read_text()
            for ms in manager["matchStrings"]:
                out += [(f, m) for m in js_regex(ms).finditer(text)]
    return out


annotated, cnpg = config["customManagers"]

# 1. Every version pin of .ci/tools.sh and every ARG ..._VERSION of the Dockerfile is
#    annotated, with a datasource Renovate knows here.
found = {(f, m["depName"]): m for f, m in matches(annotated)}
for f, pin in [(".ci/tools.sh", r"^([A-Z_]+_VERSION)=(\S+)$"), ("Dockerfile", r"^ARG ([A-Z_]+_VERSION)=(\S+)$")]:
    for m in re.finditer(pin, (ROOT / f).read_text(), re.M):
        hit = [x for (ff, _), x in found.items() if ff == f and x["currentValue"] == m[2]
               and x.group(0).rstrip().endswith(m[0].split("=", 1)[1])]
        # A pin Renovate cannot follow says so, with its reason, on the line above:
        # `# renovate: manual (<why>)`; it is then updated by hand.
        text = (ROOT / f).read_text()
        above = text[:m.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        manual = re.fullmatch(r"# renovate: manual \(.+\)", above)
        if not hit and not manual:
            problems.append(f"{f}: {m[1]}={m[2]} has no `# renovate: datasource=... depName=...` "
                            "(or `# renovate: manual (why)`) line above it")
# Datasources Renovate has for what these files pin (a Debian package's version needs
# the `deb` datasource's registryUrls in renovate.json as well).
KNOWN = {"pypi", "crate", "npm", "deb", "docker", "github-releases", "github-tags"}
for (f, dep), m in found.items():
    if m["datasource"] not in KNOWN:
        problems.append(f"{f}: {dep}: datasource {m['datasource']} is not one of {sorted(KNOWN)}")

# 2. The CloudNativePG image: found wherever it is named, one tag and digest everywhere.
images = {(m["currentValue"], m["currentDigest"]) for _, m in matches(cnpg)}
named_in = {f for f, _ in matches(cnpg)}
if len(images) != 1 or len(named_in) != len(cnpg["managerFilePatterns"]):
    problems.append(f"CloudNativePG image: expected one tag@digest in each of {cnpg['managerFilePatterns']}, found {images} in {named_in}")

for p in problems:
    print(f"error: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"renovate.json: {len(found)} annotated pins and the CloudNativePG image ({len(named_in)} files) are in reach")
