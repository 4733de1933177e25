//! PostgreSQL's connections in the rendered manifests: the server speaks TLS and takes
//! scram-sha-256 only (no `trust`, no plaintext TCP), its container does not hold the
//! administrator password after initialisation, and every client verifies it
//! (`sslmode=verify-full` with a CA file from a mounted volume). Where an operator runs
//! the server (prod's CloudNativePG Cluster), the server's side is cnpg.rs's.

use serde_json::Value;

use crate::render::{arr, containers, kind, name, templates};

fn env<'a>(c: &'a Value, var: &str) -> Option<&'a str> {
    arr(&c["env"])
        .iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str())
}

/// Whether `path` lies under one of `c`'s volume mounts.
fn mounted(c: &Value, path: &str) -> bool {
    arr(&c["volumeMounts"])
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .any(|m| path.starts_with(&format!("{}/", m.trim_end_matches('/'))))
}

pub fn problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let mut server = false;
    for t in templates(docs) {
        let o = &t.owner;
        for c in containers(t.spec) {
            let cn = c["name"].as_str().unwrap_or("?");
            if env(c, "DATABASE_HOST").is_some() {
                if env(c, "DATABASE_SSLMODE") != Some("verify-full") {
                    out.push(format!("{o} {cn}: DATABASE_SSLMODE must be verify-full"));
                }
                match env(c, "DATABASE_SSLROOTCERT") {
                    Some(ca) if mounted(c, ca) => {}
                    other => out.push(format!(
                        "{o} {cn}: DATABASE_SSLROOTCERT {other:?} must name a file on a mounted volume"
                    )),
                }
            }
        }
        if o != "StatefulSet/postgres" {
            continue;
        }
        server = true;
        let admin_volumes: Vec<&str> = arr(&t.spec["volumes"])
            .iter()
            .filter(|v| v["secret"]["secretName"] == "postgres-admin")
            .filter_map(|v| v["name"].as_str())
            .collect();
        for c in arr(&t.spec["containers"]) {
            let cn = c["name"].as_str().unwrap_or("?");
            if arr(&c["volumeMounts"])
                .iter()
                .any(|m| admin_volumes.contains(&m["name"].as_str().unwrap_or("")))
            {
                out.push(format!(
                    "{o} {cn}: the server must not mount postgres-admin"
                ));
            }
            if arr(&c["env"]).iter().any(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("POSTGRES_PASSWORD"))
            }) {
                out.push(format!(
                    "{o} {cn}: the server must not be given the password"
                ));
            }
            let args: Vec<&str> = arr(&c["args"]).iter().filter_map(Value::as_str).collect();
            for needed in ["ssl=on", "password_encryption=scram-sha-256"] {
                if !args.contains(&needed) {
                    out.push(format!("{o} {cn}: must run with -c {needed}"));
                }
            }
            if !args.iter().any(|a| a.starts_with("hba_file=")) {
                out.push(format!("{o} {cn}: must use the postgres-hba ConfigMap"));
            }
        }
    }
    // Where an operator runs the server (prod: CloudNativePG), its Cluster carries the
    // server's TLS, scram and pg_hba, checked by cnpg.rs; the clients' side stays here.
    let operator = docs.iter().any(|d| {
        kind(d) == "Cluster"
            && d["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("postgresql.cnpg.io/"))
    });
    if operator {
        return out;
    }
    if !server {
        out.push("no StatefulSet/postgres rendered".into());
    }
    let hba = docs
        .iter()
        .find(|d| kind(d) == "ConfigMap" && name(d) == "postgres-hba")
        .and_then(|d| d["data"]["pg_hba.conf"].as_str());
    match hba {
        None => out.push("no postgres-hba ConfigMap".into()),
        Some(hba) => {
            for line in hba.lines().map(str::trim) {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (ty, method) = (fields[0], fields[fields.len() - 1]);
                let ok = match ty {
                    "hostnossl" => method == "reject",
                    "local" | "hostssl" => method == "scram-sha-256",
                    _ => false,
                };
                if !ok {
                    out.push(format!(
                        "pg_hba.conf: {line:?} (scram over TLS or local only)"
                    ));
                }
            }
        }
    }
    out
}
