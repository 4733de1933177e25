#!/usr/bin/env bash
# On a live cluster (the e2e workflow, after `tilt ci` and `cargo xtask seed`): the
# analysts' path end to end, as docs/RECIPES.md tells the people involved to walk it.
#   1. The person who runs the database puts the analyst's password in a Secret (here
#      generated; in prod from the secret manager) and applies the Job `cargo xtask
#      analyst add NAME --kube` renders; the Job never prints the password.
#   2. The analyst (impersonated: --as/--as-group) starts a toolbox session, enters it
#      with `kubectl exec` and logs in as themselves: `select count(*) from raw.events`
#      works, `select * from app.users` is refused. They cannot port-forward, exec into
#      another namespace's pods, read Secrets, or start any other Job in their namespace.
#   3. `cargo xtask analyst remove NAME --kube`: the login no longer works.
# Needs a kubeconfig allowed to impersonate (the kind admin in e2e).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

name=e2e_analyst
login="analyst_${name}"
secret="analyst-e2e-analyst"
session=e2e-session
ws=beacon-analysts
analyst=(--as=e2e-analyst --as-group=beacon:analysts)
failed=0
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failed=1; }

tmp="$(mktemp -d)"
cleanup() {
    kubectl -n "$ws" delete job "$session" --ignore-not-found >/dev/null 2>&1 || true
    kubectl -n beacon-data delete secret "$secret" --ignore-not-found >/dev/null 2>&1 || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# --- 1. the login, made in the cluster with the bootstrap's credentials
(umask 077 && head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$tmp/password")
kubectl -n beacon-data create secret generic "$secret" --from-file=password="$tmp/password" >/dev/null
# The image the cluster runs (Tilt's build), not the overlay's name for it.
image="$(kubectl -n beacon-data get job db-bootstrap -o jsonpath='{.spec.template.spec.containers[0].image}')"
run_job() { # run_job add|remove
    cargo xtask analyst "$1" "$name" --kube --image "$image" > "$tmp/job-$1.json"
    kubectl apply -f "$tmp/job-$1.json" >/dev/null
    local job="analyst-$1-e2e-analyst"
    if kubectl -n beacon-data wait --for=condition=complete "job/$job" --timeout=180s >/dev/null; then
        ok "Job $job completed"
    else
        fail "Job $job did not complete"; kubectl -n beacon-data logs "job/$job" || true
    fi
    if kubectl -n beacon-data logs "job/$job" | grep -qF "$(cat "$tmp/password")"; then
        fail "Job $job printed the password"
    fi
    kubectl -n beacon-data delete job "$job" >/dev/null
}
run_job add
# The password stays in the secret manager: the Secret is not kept.
kubectl -n beacon-data delete secret "$secret" >/dev/null

# --- 2. the analyst's session
kubectl -n "$ws" create job "$session" --from=cronjob/analyst-toolbox "${analyst[@]}" >/dev/null
kubectl -n "$ws" wait --for=condition=ready pod -l "batch.kubernetes.io/job-name=$session" --timeout=180s >/dev/null
# psql as the analyst, inside the toolbox; the password on stdin (never an argument).
as_analyst() { # as_analyst SERVICE SQL
    # shellcheck disable=SC2016 # expanded by the toolbox's shell, from its arguments
    kubectl -n "$ws" exec -i "job/$session" "${analyst[@]}" -- \
        sh -c 'read -r PGPASSWORD && export PGPASSWORD && exec psql "service=$1" -U "$2" -v ON_ERROR_STOP=1 -tAc "$3"' \
        sh "$1" "$login" "$2" < "$tmp/password" 2>&1
}
refused_sql() { # refused_sql WHAT MESSAGE SERVICE SQL: the statement must fail with MESSAGE
    local what="$1" message="$2" out
    if out="$(as_analyst "$3" "$4")"; then
        fail "$what: not refused"
    elif grep -q "$message" <<<"$out"; then
        ok "$what: refused ($out)"
    else
        fail "$what: failed, but not as refused: $out"
    fi
}
if out="$(as_analyst read 'select count(*) from raw.events')" && [[ "$out" =~ ^[0-9]+$ ]]; then
    ok "analyst: select count(*) from raw.events = $out"
else
    fail "analyst cannot count raw.events: $out"
fi
if out="$(as_analyst write 'select count(*) from output.daily_campaign_facts')" && [[ "$out" =~ ^[0-9]+$ ]]; then
    ok "analyst: the write service (the primary) answers"
else
    fail "analyst cannot use the write service: $out"
fi
if out="$(as_analyst read 'select ssl from pg_stat_ssl where pid = pg_backend_pid()')" && [ "$out" = t ]; then
    ok "analyst: connected over TLS (verify-full)"
else
    fail "analyst not over TLS: $out"
fi
refused_sql "analyst: select * from app.users" "permission denied" read 'select * from app.users'

# Forbidden by RBAC (the control: the same analyst's exec into the toolbox above).
forbidden() { # forbidden WHAT CMD...
    local what="$1"; shift
    if out="$(timeout 20 "$@" 2>&1)"; then fail "allowed: $what"
    elif grep -qi "forbidden" <<<"$out"; then ok "forbidden: $what"
    else fail "failed, but not as forbidden: $what: $out"; fi
}
forbidden "analyst: port-forward to the toolbox" \
    kubectl -n "$ws" port-forward "job/$session" 15433:5432 "${analyst[@]}"
forbidden "analyst: exec into PostgreSQL" \
    kubectl -n beacon-data exec statefulset/postgres "${analyst[@]}" -- true
forbidden "analyst: exec into the transform" \
    kubectl -n beacon-pipeline exec deployment/transform "${analyst[@]}" -- true
forbidden "analyst: read a Secret" \
    kubectl -n beacon-data get secret postgres-admin "${analyst[@]}"
forbidden "analyst: a pod of their own" \
    kubectl -n "$ws" run e2e-pod --image=docker.io/library/busybox:1.37 --dry-run=server "${analyst[@]}"
# Refused by admission: any Job but the toolbox's.
job_from_toolbox() {
    kubectl -n "$ws" get cronjob analyst-toolbox -o json | jq --arg name "$1" \
        '{apiVersion: "batch/v1", kind: "Job", metadata: {name: $name, namespace: "beacon-analysts"},
          spec: .spec.jobTemplate.spec}'
}
refused() { # refused WHAT JQ-EDIT
    if out="$(kubectl create --dry-run=server "${analyst[@]}" -f <(job_from_toolbox e2e-hijack | jq "$2") 2>&1)"; then
        fail "admitted: $1"
    elif grep -q beacon-analyst-toolbox <<<"$out"; then ok "refused by beacon-analyst-toolbox: $1"
    else fail "refused, but not by beacon-analyst-toolbox: $1: $out"; fi
}
if kubectl create --dry-run=server "${analyst[@]}" -f <(job_from_toolbox e2e-control) >/dev/null; then
    ok "admitted: the toolbox Job as a manifest (the control)"
else
    fail "the toolbox Job as a manifest is refused"
fi
refused "another image" '.spec.template.spec.containers[0].image = "docker.io/library/busybox:1.37"'
refused "an API token" '.spec.template.spec.automountServiceAccountToken = true'
refused "a Secret volume" '.spec.template.spec.volumes += [{name: "x", secret: {secretName: "postgres-ca"}}]'
refused "a Service's label" '.spec.template.metadata.labels["app.kubernetes.io/name"] = "postgres"'

# --- 3. removed
run_job remove
refused_sql "removed: the login" "password authentication failed" read 'select 1'

[ "$failed" -eq 0 ] && echo "analysts: every check as the access model says"
