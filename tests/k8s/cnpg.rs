//! The prod overlay's PostgreSQL: a CloudNativePG Cluster with what k8s/overlays/prod/
//! README.md and docs/ARCHITECTURE.md (Data tier) promise: three instances on distinct
//! nodes, TLS from cert-manager, scram-sha-256 and no plain text, WAL archiving and
//! scheduled backups through the Barman Cloud plugin, PDBs, the metrics exporter; the
//! writers on the primary (`-rw`) and analytics on the replicas (`-ro`); a quota with room
//! for it all.

use serde_json::Value;

use crate::pods::quantity;
use crate::render::{arr, containers, kind, name, namespace, templates};

pub const NS: &str = "beacon-data";
pub const PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    docs.iter()
        .find(|d| kind(d) == k && namespace(d) == NS && name(d) == n)
}

pub fn cluster(docs: &[Value]) -> Option<&Value> {
    docs.iter()
        .find(|d| kind(d) == "Cluster" && d["apiVersion"] == "postgresql.cnpg.io/v1")
}

/// Everything the Cluster and its companions do not do as documented, one line each.
pub fn cluster_problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(c) = cluster(docs) else {
        return vec!["no CloudNativePG Cluster".into()];
    };
    let cname = name(c);
    let spec = &c["spec"];
    let mut fail = |ok: bool, what: &str| {
        if !ok {
            out.push(format!("Cluster {cname}: {what}"));
        }
    };
    fail(namespace(c) == NS, "not in beacon-data");
    fail(spec["instances"] == 3, "not 3 instances");
    let image = spec["imageName"].as_str().unwrap_or("");
    let (reference, digest) = image.split_once('@').unwrap_or((image, ""));
    fail(
        reference.starts_with("ghcr.io/cloudnative-pg/postgresql:17.")
            && reference
                .rsplit(':')
                .next()
                .is_some_and(|t| t.contains('.')),
        "image not pinned to a PostgreSQL 17 minor version",
    );
    fail(
        digest.strip_prefix("sha256:").is_some_and(|d| {
            d.len() == 64
                && d.bytes().all(|b| b.is_ascii_hexdigit())
                && d.bytes().any(|b| b != b'0')
        }),
        "image not pinned by a real sha256 digest",
    );
    let aff = &spec["affinity"];
    fail(
        aff["enablePodAntiAffinity"] == true
            && aff["podAntiAffinityType"] == "required"
            && aff["topologyKey"] == "kubernetes.io/hostname",
        "instances not required on distinct nodes",
    );
    fail(spec["enablePDB"] != false, "PodDisruptionBudgets disabled");
    fail(
        spec["inheritedMetadata"]["labels"]["app.kubernetes.io/name"] == "postgres",
        "instances not labelled app.kubernetes.io/name=postgres (the model's pod)",
    );
    // TLS: the server certificate is a cert-manager Certificate from the internal CA,
    // valid for the Services the clients use, reloaded on renewal.
    let secret = spec["certificates"]["serverTLSSecret"]
        .as_str()
        .unwrap_or("");
    fail(
        spec["certificates"]["serverCASecret"] == secret,
        "server CA not the certificate's own ca.crt",
    );
    let cert = docs.iter().find(|d| {
        kind(d) == "Certificate" && namespace(d) == NS && d["spec"]["secretName"] == secret
    });
    match cert {
        None => fail(false, "serverTLSSecret is no cert-manager Certificate's"),
        Some(cert) => {
            let dns: Vec<&str> = arr(&cert["spec"]["dnsNames"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            for svc in ["rw", "ro"] {
                fail(
                    dns.contains(&format!("{cname}-{svc}.{NS}.svc").as_str()),
                    &format!("server certificate lacks {cname}-{svc}.{NS}.svc"),
                );
            }
            fail(
                cert["spec"]["issuerRef"]["name"] == "beacon-internal-ca",
                "server certificate not from beacon-internal-ca",
            );
            fail(
                cert["spec"]["secretTemplate"]["labels"]
                    .get("cnpg.io/reload")
                    .is_some(),
                "renewed certificate not reloaded (cnpg.io/reload)",
            );
        }
    }
    // Authentication: no plain text, scram-sha-256 for every TCP login.
    let pg = &spec["postgresql"];
    fail(
        pg["parameters"]["password_encryption"] == "scram-sha-256",
        "password_encryption not scram-sha-256",
    );
    let hba: Vec<&str> = arr(&pg["pg_hba"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    fail(
        hba.first() == Some(&"hostnossl all all all reject"),
        "plain-text connections not refused first",
    );
    fail(
        hba.contains(&"hostssl all all all scram-sha-256"),
        "TLS logins not scram-sha-256",
    );
    fail(
        hba.iter()
            .all(|l| !l.contains(" trust") && !l.ends_with(" md5") && !l.ends_with(" password")),
        "a pg_hba rule allows trust, md5 or a clear-text password",
    );
    // Roles stay with Beacon's Jobs: the superuser is what db-bootstrap uses.
    fail(
        spec["enableSuperuserAccess"] == true
            && spec["superuserSecret"]["name"] == "postgres-admin",
        "superuser not from the postgres-admin Secret",
    );
    fail(
        arr(&spec["bootstrap"]["initdb"]["postInitApplicationSQL"])
            .iter()
            .any(|s| s == "ALTER ROLE beacon_owner NOLOGIN"),
        "beacon_owner left able to log in",
    );
    // Backups: WAL archiving through the plugin to an ObjectStore, and a schedule.
    let plugin = arr(&spec["plugins"]).iter().find(|p| p["name"] == PLUGIN);
    fail(
        plugin.is_some_and(|p| p["isWALArchiver"] == true && p["enabled"] != false),
        "WAL archiving not through the Barman Cloud plugin",
    );
    let store = plugin.and_then(|p| p["parameters"]["barmanObjectName"].as_str());
    match store.and_then(|s| find(docs, "ObjectStore", s)) {
        None => fail(false, "the plugin names no rendered ObjectStore"),
        Some(s) => fail(
            s["spec"]["retentionPolicy"]
                .as_str()
                .is_some_and(|r| r.ends_with('d'))
                && s["spec"]["configuration"]["destinationPath"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("s3://")),
            "ObjectStore without an S3 destination and a retention in days",
        ),
    }
    fail(
        docs.iter().any(|d| {
            kind(d) == "ScheduledBackup"
                && namespace(d) == NS
                && d["spec"]["cluster"]["name"] == cname
                && d["spec"]["method"] == "plugin"
                && d["spec"]["pluginConfiguration"]["name"] == PLUGIN
                && d["spec"]["suspend"] != true
        }),
        "no active ScheduledBackup through the plugin",
    );
    // Monitoring: the exporter's default queries (cnpg_pg_replication_lag among them).
    fail(
        spec["monitoring"]["disableDefaultQueries"] != true,
        "the exporter's default queries disabled",
    );
    // ... scraped by the collector through a headless Service of the instances.
    let metrics = docs.iter().find(|d| {
        kind(d) == "Service"
            && namespace(d) == NS
            && d["spec"]["selector"]["cnpg.io/cluster"] == cname
            && arr(&d["spec"]["ports"]).iter().any(|p| p["port"] == 9187)
    });
    let scraped = metrics.is_some_and(|svc| {
        let dns = format!("{}.{NS}.svc.cluster.local", name(svc));
        let configs: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                kind(d) == "ConfigMap"
                    && namespace(d) == "beacon-observability"
                    && d["data"].as_object().is_some_and(|m| {
                        m.values()
                            .any(|v| v.as_str().is_some_and(|t| t.contains(&dns)))
                    })
            })
            .collect();
        docs.iter()
            .filter(|d| kind(d) == "Deployment" && name(d) == "otel-collector")
            .flat_map(|d| templates(std::slice::from_ref(d)))
            .any(|t| {
                let mounted: Vec<&str> = arr(&t.spec["volumes"])
                    .iter()
                    .filter(|v| configs.iter().any(|c| v["configMap"]["name"] == name(c)))
                    .filter_map(|v| v["name"].as_str())
                    .collect();
                containers(t.spec).iter().any(|c| {
                    arr(&c["volumeMounts"]).iter().any(|m| {
                        mounted.contains(&m["name"].as_str().unwrap_or(""))
                            && arr(&c["args"]).iter().any(|a| {
                                a.as_str().is_some_and(|a| {
                                    a.starts_with(&format!(
                                        "--config={}/",
                                        m["mountPath"].as_str().unwrap_or("?")
                                    ))
                                })
                            })
                    })
                })
            })
    });
    fail(
        scraped,
        "the collector does not scrape the instances' exporter",
    );
    // Nothing of the base's single server is left.
    for k in ["StatefulSet", "Service", "PodDisruptionBudget"] {
        fail(
            find(docs, k, "postgres").is_none(),
            &format!("the base's {k} postgres is still rendered"),
        );
    }
    out
}

/// The database host each workload's containers use: (owner, container, host).
fn hosts(docs: &[Value]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for t in templates(docs) {
        for c in containers(t.spec) {
            for e in arr(&c["env"]) {
                if e["name"] == "DATABASE_HOST" {
                    out.push((
                        t.owner.clone(),
                        c["name"].as_str().unwrap_or("").to_owned(),
                        e["value"].as_str().unwrap_or("").to_owned(),
                    ));
                }
            }
        }
    }
    out
}

/// Analytics on the replicas, every other database client on the primary.
pub fn endpoint_problems(docs: &[Value]) -> Vec<String> {
    let Some(c) = cluster(docs) else {
        return vec!["no CloudNativePG Cluster".into()];
    };
    let hosts = hosts(docs);
    let mut out = Vec::new();
    if hosts.len() < 7 {
        out.push(format!("expected 7 database clients, found {hosts:?}"));
    }
    for (owner, container, host) in hosts {
        let want = if container == "analytics" { "ro" } else { "rw" };
        let want = format!("{}-{want}.{NS}.svc", name(c));
        if host != want {
            out.push(format!(
                "{owner} ({container}) connects to {host}, not {want}"
            ));
        }
    }
    out
}

/// beacon-data's quota holds the Cluster at its largest: every instance (PostgreSQL and
/// the plugin's sidecar) plus one join or replacement pod, the Jobs, and a data and a
/// WAL volume per instance.
pub fn quota_problems(docs: &[Value]) -> Vec<String> {
    let Some(c) = cluster(docs) else {
        return vec!["no CloudNativePG Cluster".into()];
    };
    let Some(q) = find(docs, "ResourceQuota", "quota") else {
        return vec!["no quota in beacon-data".into()];
    };
    let hard = &q["spec"]["hard"];
    let instances = c["spec"]["instances"].as_u64().unwrap_or(0);
    let sidecar = arr(&c["spec"]["plugins"])
        .iter()
        .find(|p| p["name"] == PLUGIN)
        .and_then(|p| p["parameters"]["barmanObjectName"].as_str())
        .and_then(|s| find(docs, "ObjectStore", s))
        .map(|s| &s["spec"]["instanceSidecarConfiguration"]["resources"]);
    let per_pod = |key: &str, what: &str| {
        quantity(&c["spec"]["resources"][key][what])
            + sidecar.map_or(0, |r| quantity(&r[key][what]))
    };
    let jobs: Vec<&Value> = docs
        .iter()
        .filter(|d| kind(d) == "Job" && namespace(d) == NS)
        .collect();
    let job = |key: &str, what: &str| -> u64 {
        templates(&jobs.iter().map(|j| (*j).clone()).collect::<Vec<_>>())
            .iter()
            .flat_map(|t| containers(t.spec))
            .map(|x| quantity(&x["resources"][key][what]))
            .sum()
    };
    let mut out = Vec::new();
    for (key, what, quota) in [
        ("requests", "cpu", "requests.cpu"),
        ("requests", "memory", "requests.memory"),
        ("limits", "cpu", "limits.cpu"),
        ("limits", "memory", "limits.memory"),
    ] {
        let need = (instances + 1) * per_pod(key, what) + job(key, what);
        let have = quantity(&hard[quota]);
        if per_pod(key, what) == 0 || need > have {
            out.push(format!(
                "{quota}: the Cluster and the Jobs need {need}, quota allows {have}"
            ));
        }
    }
    let count = |k: &str| {
        hard[k]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let pods = instances + 1 + jobs.len() as u64;
    if pods > count("pods") {
        out.push(format!(
            "pods: {pods} needed, quota allows {}",
            count("pods")
        ));
    }
    let volumes = instances
        * if c["spec"]["walStorage"].is_object() {
            2
        } else {
            1
        };
    if volumes > count("persistentvolumeclaims") {
        out.push(format!(
            "{volumes} volumes needed, quota allows {}",
            count("persistentvolumeclaims")
        ));
    }
    let storage = instances
        * (quantity(&c["spec"]["storage"]["size"]) + quantity(&c["spec"]["walStorage"]["size"]));
    if storage > quantity(&hard["requests.storage"]) {
        out.push(format!(
            "storage: {storage} bytes needed, quota allows {:?}",
            hard["requests.storage"]
        ));
    }
    out
}
