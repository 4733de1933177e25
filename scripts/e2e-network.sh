#!/usr/bin/env bash
# On a live cluster (the e2e workflow, after `tilt ci`): the NetworkPolicies in both
# directions, with controls so that a refusal proves something.
#  1. From a pod in `default` (not Beacon's): PostgreSQL, analytics, the loader and
#     every admin port are unreachable; the public ports (dashboard, api, ingest) are
#     reachable (control).
#  2. From inside every Beacon workload's pod (an ephemeral container shares its
#     network, so its policies apply): the internet is unreachable; from the `default`
#     pod it is reachable (control).
# The admin ports and the loader's port come from security/access-model.toml.
set -euo pipefail
busybox=docker.io/library/busybox:1.37
failed=0
fail() { echo "FAIL: $*"; failed=1; }

kubectl -n default delete pod e2e-probe --ignore-not-found --wait=true >/dev/null
kubectl -n default run e2e-probe --image="$busybox" --restart=Never -- sleep 3600 >/dev/null
kubectl -n default wait --for=condition=Ready pod/e2e-probe --timeout=180s >/dev/null
from_default() { kubectl -n default exec e2e-probe -- nc -z -w 5 "$1" "$2" >/dev/null 2>&1; }

# namespace, pod name label, port: every admin port, and the loader's (loopback only).
targets="$(python3 - <<'PY'
import tomllib
m = tomllib.load(open("security/access-model.toml", "rb"))
for name, c in m["components"].items():
    pod = c.get("pod", name)
    for port_name, port in c["ports"].items():
        if port_name == "admin" or c.get("loopback_only"):
            print(c["namespace"], pod, port, f"{name}:{port_name}")
PY
)"
pod_ip() {
    kubectl -n "$1" get pod -l "app.kubernetes.io/name=$2" \
        --field-selector=status.phase=Running -o jsonpath='{.items[0].status.podIP}'
}

echo "== from default: public ports reachable (control)"
for svc in dashboard.beacon-dashboard.svc:8080 api.beacon-api.svc:8081 ingest.beacon-pipeline.svc:8082; do
    if from_default "${svc%:*}" "${svc#*:}"; then echo "ok: default -> $svc"
    else fail "default cannot reach $svc (control)"; fi
done
echo "== from default: data, analytics, loader and admin ports unreachable"
for svc in postgres.beacon-data.svc:5432 analytics.beacon-analytics.svc:50051; do
    if from_default "${svc%:*}" "${svc#*:}"; then fail "default reached $svc"
    else echo "ok: default -/-> $svc"; fi
done
pg_ip="$(pod_ip beacon-data postgres)"
if from_default "$pg_ip" 5432; then fail "default reached the postgres pod $pg_ip:5432"
else echo "ok: default -/-> postgres pod $pg_ip:5432"; fi
while read -r ns pod port what; do
    ip="$(pod_ip "$ns" "$pod")"
    [ -n "$ip" ] || { fail "no running pod $ns/$pod"; continue; }
    if from_default "$ip" "$port"; then fail "default reached $what ($ns/$pod $ip:$port)"
    else echo "ok: default -/-> $what ($ns/$pod $ip:$port)"; fi
done <<<"$targets"

echo "== egress to the internet"
if from_default 1.1.1.1 443; then echo "ok: default -> 1.1.1.1:443 (control)"
else fail "default cannot reach the internet: the checks below would prove nothing"; fi
echo '{"securityContext":{"runAsUser":65532,"runAsGroup":65532}}' > /tmp/e2e-nonroot.json
# from_pod NS POD NAME HOST PORT: nc in an ephemeral container of POD; prints its exit code.
from_pod() {
    kubectl -n "$1" debug "$2" --image="$busybox" --profile=restricted \
        --custom=/tmp/e2e-nonroot.json --container="$3" -- nc -z -w 5 "$4" "$5" >/dev/null
    for _ in $(seq 1 60); do
        code="$(kubectl -n "$1" get pod "$2" -o jsonpath="{.status.ephemeralContainerStatuses[?(@.name==\"$3\")].state.terminated.exitCode}")"
        if [ -n "$code" ]; then echo "$code"; return; fi
        sleep 2
    done
    echo timeout
}
for workload in beacon-dashboard/dashboard beacon-api/api beacon-pipeline/pipeline \
    beacon-pipeline/transform beacon-analytics/analytics beacon-data/postgres \
    beacon-observability/otel-collector beacon-observability/jaeger; do
    ns="${workload%/*}" name="${workload#*/}"
    pod="$(kubectl -n "$ns" get pod -l "app.kubernetes.io/name=$name" -o jsonpath='{.items[0].metadata.name}')"
    code="$(from_pod "$ns" "$pod" "e2e-egress-$RANDOM" 1.1.1.1 443)"
    if [ "$code" = "0" ]; then fail "$workload reached the internet"
    else echo "ok: $workload -/-> 1.1.1.1:443 (exit $code)"; fi
done

kubectl -n default delete pod e2e-probe --wait=false >/dev/null
[ "$failed" -eq 0 ] && echo "network: both directions as the access model says"
