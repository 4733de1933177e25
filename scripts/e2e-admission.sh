#!/usr/bin/env bash
# On a live cluster (the e2e workflow, after `tilt ci`): the admission policies of
# k8s/base/admission, asked with server-side dry runs (admission runs, nothing is
# stored), impersonating each persona. Each refusal must come from the policy (its name
# is in the error), and each has a control that the same identity is admitted for the
# legitimate request, so a refusal for any other reason fails the check.
set -euo pipefail
pipeline=beacon-pipeline
analyst=(--as=e2e-analyst --as-group=beacon:analysts)
developer=(--as=e2e-product_developer --as-group=beacon:product-developers)
sre=(--as=e2e-sre --as-group=beacon:sre)
delivery=(--as=system:serviceaccount:beacon-delivery:deployer)
failed=0

# admitted WHAT CMD...: the command must succeed.
admitted() {
    local what="$1"; shift
    if out="$("$@" 2>&1)"; then echo "ok: admitted: $what"
    else echo "FAIL: refused: $what: $out"; failed=1; fi
}
# refused WHAT POLICY CMD...: the command must fail, naming the policy.
refused() {
    local what="$1" policy="$2"; shift 2
    if out="$("$@" 2>&1)"; then echo "FAIL: admitted: $what"; failed=1
    elif grep -q "$policy" <<<"$out"; then echo "ok: refused by $policy: $what"
    else echo "FAIL: refused, but not by $policy: $what: $out"; failed=1; fi
}

# --- analysts' Jobs: the transform, and nothing else
admitted "analyst: kubectl create job --from=cronjob/transform-once" \
    kubectl -n "$pipeline" create job e2e-transform --from=cronjob/transform-once \
    --dry-run=server "${analyst[@]}"
# The same Job as a manifest (the control for the hijacks below), then hijacked.
job_from_cronjob() {
    kubectl -n "$pipeline" get cronjob transform-once -o json | jq --arg name "$1" \
        '{apiVersion: "batch/v1", kind: "Job", metadata: {name: $name, namespace: "beacon-pipeline"},
          spec: .spec.jobTemplate.spec}'
}
admitted "analyst: the transform Job as a manifest" \
    kubectl create -f <(job_from_cronjob e2e-control) --dry-run=server "${analyst[@]}"
refused "analyst: Job with another image" beacon-analyst-jobs \
    kubectl create --dry-run=server "${analyst[@]}" -f <(job_from_cronjob e2e-image \
        | jq '.spec.template.spec.containers[0].image = "docker.io/library/busybox:1.37"
              | .spec.template.spec.containers[0].command = ["cat", "/etc/beacon/db/password"]')
refused "analyst: Job labelled as the pipeline (an endpoint of the ingest Service)" beacon-analyst-jobs \
    kubectl create --dry-run=server "${analyst[@]}" -f <(job_from_cronjob e2e-label \
        | jq '.spec.template.metadata.labels["app.kubernetes.io/name"] = "pipeline"')
refused "analyst: Job mounting the loader's Secret" beacon-analyst-jobs \
    kubectl create --dry-run=server "${analyst[@]}" -f <(job_from_cronjob e2e-secret \
        | jq '.spec.template.spec.volumes += [{name: "x", secret: {secretName: "loader-db"}}]')

# --- workloads where Secrets live: scale and restart yes, another image no
restart='{"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2026-01-01T00:00:00Z"}}}}}'
swap_api='{"spec":{"template":{"spec":{"containers":[{"name":"api","image":"docker.io/library/busybox:1.37","command":["cat","/etc/beacon/jwt/jwt-signing.key"]}]}}}}'
admitted "developer: rollout restart of the api" \
    kubectl -n beacon-api patch deployment api --dry-run=server "${developer[@]}" -p "$restart"
admitted "developer: scale the api" \
    kubectl -n beacon-api scale deployment api --replicas=1 --dry-run=server "${developer[@]}"
refused "developer: the api with another image, keeping the signing key's volume" beacon-workload-changes \
    kubectl -n beacon-api patch deployment api --dry-run=server "${developer[@]}" -p "$swap_api"
admitted "SRE: rollout restart of the api" \
    kubectl -n beacon-api patch deployment api --dry-run=server "${sre[@]}" -p "$restart"
refused "SRE: the api with another image" beacon-workload-changes \
    kubectl -n beacon-api patch deployment api --dry-run=server "${sre[@]}" -p "$swap_api"
refused "SRE: PostgreSQL with another image" beacon-workload-changes \
    kubectl -n beacon-data patch statefulset postgres --dry-run=server "${sre[@]}" \
    -p '{"spec":{"template":{"spec":{"containers":[{"name":"postgres","image":"docker.io/library/busybox:1.37"}]}}}}'
admitted "delivery: the api with another image (the delivery path)" \
    kubectl -n beacon-api patch deployment api --dry-run=server "${delivery[@]}" -p "$swap_api"

[ "$failed" -eq 0 ] && echo "admission: every check as the access model says"
