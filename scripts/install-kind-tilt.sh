#!/usr/bin/env bash
# Installs the pinned kind (and, unless --no-tilt, Tilt) release binaries into DIR (default
# $RUNNER_TEMP/bin), checking each download's SHA-256 (a mismatch stops here), and adds
# DIR to GITHUB_PATH when it is set. Versions and checksums come from the environment
# (.github/workflows/e2e.yml): KIND_VERSION, KIND_SHA256, TILT_VERSION, TILT_SHA256.
set -euo pipefail

tilt=1
if [ "${1:-}" = --no-tilt ]; then
    tilt=0
    shift
fi
bin="${1:-${RUNNER_TEMP:?}/bin}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$bin"

curl -fsSL --retry 3 -o "$tmp/kind" \
    "https://github.com/kubernetes-sigs/kind/releases/download/${KIND_VERSION:?}/kind-linux-amd64"
echo "${KIND_SHA256:?}  $tmp/kind" | sha256sum --check --strict
install -m 0755 "$tmp/kind" "$bin/kind"
"$bin/kind" version

if [ "$tilt" = 1 ]; then
    curl -fsSL --retry 3 -o "$tmp/tilt.tar.gz" \
        "https://github.com/tilt-dev/tilt/releases/download/v${TILT_VERSION:?}/tilt.${TILT_VERSION}.linux.x86_64.tar.gz"
    echo "${TILT_SHA256:?}  $tmp/tilt.tar.gz" | sha256sum --check --strict
    tar -xzf "$tmp/tilt.tar.gz" -C "$bin" tilt
    "$bin/tilt" version
fi

if [ -n "${GITHUB_PATH:-}" ]; then
    echo "$bin" >> "$GITHUB_PATH"
fi
