#!/usr/bin/env bash
# Creates the kind cluster `beacon` (k8s/kind/cluster.yaml) with a local image registry
# on 127.0.0.1:5001 that Tilt detects (KEP-1755 ConfigMap local-registry-hosting), so
# Tilt pushes images there instead of `kind load`, and the dev overlay's
# localhost:5001/beacon/* names resolve to it from the nodes. Idempotent.
# Follows kind's local-registry recipe (kind.sigs.k8s.io/docs/user/local-registry).
#
#   scripts/kind-up.sh                                      # Docker
#   KIND_EXPERIMENTAL_PROVIDER=podman scripts/kind-up.sh    # Podman (see README)
#   scripts/kind-up.sh --delete                             # remove cluster and registry
set -euo pipefail
cd "$(dirname "$0")/.."

cluster=beacon
reg_name=kind-registry
reg_port=5001
# registry 3.0.0, pinned by digest.
reg_image=docker.io/library/registry:3.0.0@sha256:6c5666b861f3505b116bb9aa9b25175e71210414bd010d92035ff64018f9457e
engine="${KIND_EXPERIMENTAL_PROVIDER:-docker}"

if [ "${1:-}" = "--delete" ]; then
    kind delete cluster --name "$cluster"
    "$engine" rm -f "$reg_name" >/dev/null 2>&1 || true
    exit 0
fi

if [ "$("$engine" inspect -f '{{.State.Running}}' "$reg_name" 2>/dev/null || true)" != true ]; then
    "$engine" rm -f "$reg_name" >/dev/null 2>&1 || true
    "$engine" run -d --restart=always -p "127.0.0.1:${reg_port}:5000" --name "$reg_name" "$reg_image"
fi

if ! kind get clusters | grep -qx "$cluster"; then
    kind create cluster --config k8s/kind/cluster.yaml --wait 180s
fi

# localhost:5001 on a node is the node itself: point containerd at the registry
# container by name, on the kind network.
for node in $(kind get nodes --name "$cluster"); do
    "$engine" exec "$node" mkdir -p "/etc/containerd/certs.d/localhost:${reg_port}"
    printf '[host."http://%s:5000"]\n' "$reg_name" \
        | "$engine" exec -i "$node" cp /dev/stdin "/etc/containerd/certs.d/localhost:${reg_port}/hosts.toml"
done
if ! "$engine" network inspect kind -f '{{range .Containers}}{{.Name}} {{end}}' 2>/dev/null | grep -qw "$reg_name"; then
    "$engine" network connect kind "$reg_name" 2>/dev/null || true
fi

kubectl --context "kind-$cluster" apply -f - <<YAML
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-registry-hosting
  namespace: kube-public
data:
  localRegistryHosting.v1: |
    host: "localhost:${reg_port}"
    help: "https://kind.sigs.k8s.io/docs/user/local-registry/"
YAML
echo "kind cluster $cluster with registry localhost:${reg_port} ready (context kind-$cluster)"
