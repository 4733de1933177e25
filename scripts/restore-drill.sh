#!/usr/bin/env bash
# Restore drill (docs/RUNBOOK-restore.md, on kind): proves that a point-in-time restore
# of a CloudNativePG Cluster from object storage gives back exactly the rows that existed
# at the target time, per tenant.
#
#   1. installs cert-manager, the CloudNativePG operator and the Barman Cloud plugin (the
#      versions pinned in k8s/overlays/prod/README.md) and MinIO as the object store;
#   2. creates a Cluster `source` archiving WAL to MinIO, the runbook's tables with rows
#      for three tenants, and a base backup;
#   3. notes the counts per tenant (the runbook's query) and the time T, then writes
#      more rows after T and switches WAL so they are archived too;
#   4. restores into a new Cluster `restored` with bootstrap.recovery to T;
#   5. fails unless the restored counts per tenant equal the counts at T.
#
# Needs kind, kubectl and a container runtime. Uses the current kubectl context when
# DRILL_CONTEXT is set (e.g. an e2e workflow's cluster), else creates the kind cluster
# DRILL_KIND_CLUSTER and deletes it at the end unless DRILL_KEEP=1.
set -euo pipefail

CNPG_VERSION=1.30.0
BARMAN_PLUGIN_VERSION=0.14.0
CERT_MANAGER_VERSION=v1.21.0
PG_IMAGE=ghcr.io/cloudnative-pg/postgresql:17.11-202608170816-system-trixie@sha256:ecaa395084a5f8831fd2655dbffc98b554473526265f53113ec969de6fc15848
MINIO_IMAGE="${MINIO_IMAGE:-minio/minio:RELEASE.2020-06-03T22-13-49Z}"
NS=restore-drill
KIND_CLUSTER="${DRILL_KIND_CLUSTER:-beacon-restore-drill}"
TIMEOUT=600s

step() { printf '\n==> %s\n' "$*"; }

if [ -z "${DRILL_CONTEXT:-}" ]; then
    step "kind cluster $KIND_CLUSTER"
    kind get clusters | grep -qx "$KIND_CLUSTER" || kind create cluster --name "$KIND_CLUSTER"
    if [ "${DRILL_KEEP:-0}" != 1 ]; then
        trap 'kind delete cluster --name "$KIND_CLUSTER"' EXIT
    fi
    kubectl config use-context "kind-$KIND_CLUSTER"
else
    kubectl config use-context "$DRILL_CONTEXT"
fi

step "cert-manager $CERT_MANAGER_VERSION, CloudNativePG $CNPG_VERSION, Barman Cloud plugin $BARMAN_PLUGIN_VERSION"
kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/$CERT_MANAGER_VERSION/cert-manager.yaml"
kubectl -n cert-manager rollout status deployment/cert-manager-webhook --timeout="$TIMEOUT"
kubectl apply --server-side -f \
    "https://raw.githubusercontent.com/cloudnative-pg/cloudnative-pg/release-${CNPG_VERSION%.*}/releases/cnpg-$CNPG_VERSION.yaml"
kubectl -n cnpg-system rollout status deployment/cnpg-controller-manager --timeout="$TIMEOUT"
kubectl apply -f \
    "https://github.com/cloudnative-pg/plugin-barman-cloud/releases/download/v$BARMAN_PLUGIN_VERSION/manifest.yaml"
kubectl -n cnpg-system rollout status deployment/barman-cloud --timeout="$TIMEOUT"

step "MinIO ($MINIO_IMAGE) with a bucket 'backups'"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
minio_password="$(head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')"
kubectl -n "$NS" create secret generic minio \
    --from-literal=ACCESS_KEY_ID=drill --from-literal=ACCESS_SECRET_KEY="$minio_password" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f - <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio}
spec:
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
      - name: minio
        image: $MINIO_IMAGE
        # A top-level directory is a bucket.
        command: [sh, -c, "mkdir -p /data/backups && exec minio server /data"]
        env:
        - {name: MINIO_ACCESS_KEY, valueFrom: {secretKeyRef: {name: minio, key: ACCESS_KEY_ID}}}
        - {name: MINIO_SECRET_KEY, valueFrom: {secretKeyRef: {name: minio, key: ACCESS_SECRET_KEY}}}
        ports: [{containerPort: 9000}]
        volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio}
spec:
  selector: {app: minio}
  ports: [{port: 9000}]
---
apiVersion: barmancloud.cnpg.io/v1
kind: ObjectStore
metadata: {name: drill-store}
spec:
  configuration:
    destinationPath: s3://backups/
    endpointURL: http://minio.$NS.svc:9000
    s3Credentials:
      accessKeyId: {name: minio, key: ACCESS_KEY_ID}
      secretAccessKey: {name: minio, key: ACCESS_SECRET_KEY}
    wal: {compression: gzip}
EOF
kubectl -n "$NS" rollout status deployment/minio --timeout="$TIMEOUT"

wait_cluster() {
    kubectl -n "$NS" wait "cluster/$1" --for=condition=Ready --timeout="$TIMEOUT"
}

# psql as the superuser inside an instance (local peer authentication).
sql() {
    local cluster="$1"
    shift
    kubectl -n "$NS" exec "$cluster-1" -c postgres -- psql -v ON_ERROR_STOP=1 -qAt -d beacon "$@"
}

step "Cluster 'source', archiving WAL to MinIO"
kubectl -n "$NS" apply -f - <<EOF
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: source}
spec:
  instances: 1
  imageName: $PG_IMAGE
  bootstrap: {initdb: {database: beacon, owner: beacon_owner}}
  storage: {size: 1Gi}
  plugins:
  - name: barman-cloud.cloudnative-pg.io
    isWALArchiver: true
    parameters: {barmanObjectName: drill-store}
EOF
wait_cluster source

step "The runbook's tables, three tenants, rows"
sql source <<'EOF'
CREATE SCHEMA app; CREATE SCHEMA raw; CREATE SCHEMA output;
CREATE TABLE app.tenants (id uuid PRIMARY KEY, slug text NOT NULL UNIQUE);
CREATE TABLE app.users (tenant_id uuid NOT NULL, id serial);
CREATE TABLE app.campaigns (tenant_id uuid NOT NULL, id serial);
CREATE TABLE raw.events (tenant_id uuid NOT NULL, event_id text NOT NULL, PRIMARY KEY (tenant_id, event_id));
CREATE TABLE output.daily_campaign_facts (tenant_id uuid NOT NULL, day date NOT NULL);
CREATE TABLE output.attribution (tenant_id uuid NOT NULL, day date NOT NULL);
INSERT INTO app.tenants
SELECT gen_random_uuid(), 'tenant-' || n FROM generate_series(1, 3) n;
-- Tenant n gets n * 1000 events, n * 10 users, campaigns and facts.
INSERT INTO raw.events SELECT t.id, 'e' || i FROM app.tenants t,
    generate_series(1, 1000 * substr(t.slug, 8)::int) i;
INSERT INTO app.users (tenant_id) SELECT t.id FROM app.tenants t, generate_series(1, 10 * substr(t.slug, 8)::int);
INSERT INTO app.campaigns (tenant_id) SELECT tenant_id FROM app.users;
INSERT INTO output.daily_campaign_facts SELECT tenant_id, current_date FROM app.users;
INSERT INTO output.attribution SELECT tenant_id, current_date FROM app.users;
EOF

step "Base backup"
kubectl -n "$NS" apply -f - <<'EOF'
apiVersion: postgresql.cnpg.io/v1
kind: Backup
metadata: {name: drill-base}
spec:
  cluster: {name: source}
  method: plugin
  pluginConfiguration: {name: barman-cloud.cloudnative-pg.io}
EOF
kubectl -n "$NS" wait backup/drill-base --for=jsonpath='{.status.phase}'=completed --timeout="$TIMEOUT"

# The runbook's verification query (docs/RUNBOOK-restore.md), one line per tenant.
COUNTS="$(cat <<'EOF'
SELECT t.slug,
       (SELECT count(*) FROM raw.events e WHERE e.tenant_id = t.id) AS raw_events,
       (SELECT count(*) FROM output.daily_campaign_facts f WHERE f.tenant_id = t.id) AS facts,
       (SELECT count(*) FROM output.attribution a WHERE a.tenant_id = t.id) AS attribution,
       (SELECT count(*) FROM app.users u WHERE u.tenant_id = t.id) AS users,
       (SELECT count(*) FROM app.campaigns c WHERE c.tenant_id = t.id) AS campaigns
FROM app.tenants t ORDER BY t.slug
EOF
)"

step "Counts at the target time T, then more rows after T"
expected="$(sql source -c "$COUNTS")"
target="$(sql source -c "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US+00')")"
printf 'T = %s\n%s\n' "$target" "$expected"
sleep 2
sql source -c "INSERT INTO raw.events SELECT id, 'late-' || i FROM app.tenants, generate_series(1, 500) i"
sql source -c "INSERT INTO app.users (tenant_id) SELECT id FROM app.tenants"
after="$(sql source -c "$COUNTS")"
[ "$after" != "$expected" ] || { echo "error: rows written after T changed nothing" >&2; exit 1; }
# Close the WAL segment holding T so the archive reaches past it.
sql source -c "SELECT pg_switch_wal()" >/dev/null
sleep 10

step "Restore into a new Cluster 'restored' at T"
kubectl -n "$NS" apply -f - <<EOF
apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: restored}
spec:
  instances: 1
  imageName: $PG_IMAGE
  storage: {size: 1Gi}
  bootstrap:
    recovery:
      source: source
      database: beacon
      owner: beacon_owner
      recoveryTarget:
        targetTime: "$target"
  externalClusters:
  - name: source
    plugin:
      name: barman-cloud.cloudnative-pg.io
      parameters: {barmanObjectName: drill-store, serverName: source}
EOF
wait_cluster restored

step "Counts per tenant in 'restored' equal those at T"
restored="$(sql restored -c "$COUNTS")"
printf '%s\n' "$restored"
if [ "$restored" != "$expected" ]; then
    echo "error: restored counts differ from those at T" >&2
    diff <(printf '%s\n' "$expected") <(printf '%s\n' "$restored") >&2 || true
    exit 1
fi
echo "restore drill passed: point-in-time restore gives back exactly the rows at T"
