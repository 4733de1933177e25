//! `cargo xtask analyst add|remove NAME --kube`: the one-shot Job that creates (or
//! removes) a person's login inside the cluster, in beacon-data, with the credentials the
//! bootstrap Job already has.
//!
//! The Job is the overlay's own `db-bootstrap` Job (rendered with `kubectl kustomize`),
//! changed only where it must: another name, the command `beacon-db analyst add|remove
//! NAME`, and, instead of the component roles' passwords, the one Secret the operator
//! made from the secret manager for this person (`analyst-<name>`, key `password`). So it
//! connects exactly as the bootstrap does (the administrator's password and CA, the
//! overlay's host, `verify-full`), its pod carries the bootstrap's label and therefore
//! its NetworkPolicy (to PostgreSQL, nothing else), and its image is the overlay's. The
//! password is read from the mounted file by `beacon-db`; it is never in the manifest,
//! an argument or a log.

use std::process::Command;

use anyhow::Context;
use serde::Deserialize;
use serde_json::{Value, json};

/// The Job's purpose: create (or re-assert) the login, or remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
}

impl Op {
    fn verb(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Remove => "remove",
        }
    }
}

/// The Kubernetes name for `name` (a login name may hold `_`, a Kubernetes name not).
pub fn kube_name(name: &str) -> String {
    name.replace('_', "-")
}

/// The Secret the operator makes for analyst `name` (key `password`).
pub fn secret_name(name: &str) -> String {
    format!("analyst-{}", kube_name(name))
}

/// The Job's name.
pub fn job_name(op: Op, name: &str) -> String {
    format!("analyst-{}-{}", op.verb(), kube_name(name))
}

/// Where the Job mounts the analyst's Secret.
const ANALYST_DIR: &str = "/etc/beacon/analyst";

/// The overlay `overlay` rendered by `kubectl kustomize` (dev: with its generated
/// secrets folder filled first, as the Tiltfile does).
pub fn render_overlay(overlay: &str) -> anyhow::Result<Vec<Value>> {
    anyhow::ensure!(
        crate::nca::OVERLAYS.contains(&overlay),
        "unknown overlay {overlay} (known: {:?})",
        crate::nca::OVERLAYS
    );
    if overlay == "dev" {
        crate::secrets::generate(&crate::secrets::dev_overlay_dir())?;
    }
    let root = crate::up::workspace_root();
    let out = Command::new("kubectl")
        .current_dir(&root)
        .args(["kustomize", &format!("k8s/overlays/{overlay}")])
        .output()
        .context("running kubectl kustomize (install kubectl)")?;
    anyhow::ensure!(
        out.status.success(),
        "kubectl kustomize k8s/overlays/{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("kustomize output is not UTF-8")?;
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).context("kustomize output is not YAML"))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

/// The Job for `op` on analyst `name`, made from the rendered `docs`' db-bootstrap Job;
/// `image` replaces its image (a live cluster's, e.g. what Tilt built).
pub fn job(docs: &[Value], op: Op, name: &str, image: Option<&str>) -> anyhow::Result<Value> {
    db::check_login_name(name)?;
    let bootstrap = docs
        .iter()
        .find(|d| d["kind"] == "Job" && d["metadata"]["name"] == "db-bootstrap")
        .context("the overlay has no Job db-bootstrap")?;
    let mut job = bootstrap.clone();
    let job_name = job_name(op, name);
    job["metadata"]["name"] = json!(job_name);
    let meta = job["metadata"]
        .as_object_mut()
        .context("db-bootstrap has metadata")?;
    meta.remove("annotations");
    let spec = &mut job["spec"];
    spec["backoffLimit"] = json!(6);
    spec["activeDeadlineSeconds"] = json!(300);
    spec["ttlSecondsAfterFinished"] = json!(600);
    let pod = &mut spec["template"]["spec"];
    let container = pod["containers"]
        .get_mut(0)
        .context("db-bootstrap has a container")?;
    container["name"] = json!("analyst");
    if let Some(image) = image {
        container["image"] = json!(image);
    }
    container["args"] = json!(["analyst", op.verb(), name]);
    // The component roles' passwords are the bootstrap's business, not this Job's.
    let passwords_mount = container["volumeMounts"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["mountPath"] == "/etc/beacon/passwords"))
        .and_then(|m| m["name"].as_str())
        .context("db-bootstrap mounts the role passwords at /etc/beacon/passwords")?
        .to_owned();
    if let Some(env) = container["env"].as_array_mut() {
        env.retain(|e| {
            !e["value"]
                .as_str()
                .is_some_and(|v| v.starts_with("/etc/beacon/passwords/"))
        });
        if op == Op::Add {
            env.push(json!({"name": "ANALYST_PASSWORD_FILE", "value": format!("{ANALYST_DIR}/password")}));
        }
    }
    if let Some(mounts) = container["volumeMounts"].as_array_mut() {
        mounts.retain(|m| m["name"] != passwords_mount.as_str());
        if op == Op::Add {
            mounts.push(json!({"name": "analyst", "mountPath": ANALYST_DIR, "readOnly": true}));
        }
    }
    if let Some(volumes) = pod["volumes"].as_array_mut() {
        volumes.retain(|v| v["name"] != passwords_mount.as_str());
        if op == Op::Add {
            volumes.push(json!({"name": "analyst",
                "secret": {"secretName": secret_name(name), "defaultMode": 288}}));
        }
    }
    Ok(job)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<Value> {
        render_overlay("prod").unwrap()
    }

    #[test]
    fn the_add_job_is_the_bootstrap_job_with_one_persons_secret_instead_of_every_role_s() {
        let docs = docs();
        let bootstrap = docs
            .iter()
            .find(|d| d["kind"] == "Job" && d["metadata"]["name"] == "db-bootstrap")
            .unwrap();
        let job = job(&docs, Op::Add, "alice_b", None).unwrap();
        assert_eq!(job["metadata"]["name"], "analyst-add-alice-b");
        assert_eq!(job["metadata"]["namespace"], "beacon-data");
        let (pod, boot) = (
            &job["spec"]["template"]["spec"],
            &bootstrap["spec"]["template"]["spec"],
        );
        // Same identity, labels (its NetworkPolicy), security and image.
        assert_eq!(
            job["spec"]["template"]["metadata"],
            bootstrap["spec"]["template"]["metadata"]
        );
        for field in [
            "serviceAccountName",
            "automountServiceAccountToken",
            "securityContext",
        ] {
            assert_eq!(pod[field], boot[field], "{field}");
        }
        let c = &pod["containers"][0];
        assert_eq!(c["image"], boot["containers"][0]["image"]);
        assert_eq!(c["args"], json!(["analyst", "add", "alice_b"]));
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("db-role-passwords"), "{text}");
        assert!(!text.contains("/etc/beacon/passwords"), "{text}");
        assert!(
            text.contains("\"secretName\":\"analyst-alice-b\""),
            "{text}"
        );
        assert!(text.contains("\"secretName\":\"postgres-admin\""), "{text}");
        let env = |name: &str| {
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env("ANALYST_PASSWORD_FILE"),
            Some(json!("/etc/beacon/analyst/password"))
        );
        // prod: the primary, verified TLS.
        assert_eq!(
            env("DATABASE_HOST"),
            Some(json!("postgres-rw.beacon-data.svc"))
        );
        assert_eq!(env("DATABASE_SSLMODE"), Some(json!("verify-full")));
    }

    #[test]
    fn the_remove_job_mounts_no_analyst_secret_and_names_are_checked() {
        let docs = docs();
        let job = job(
            &docs,
            Op::Remove,
            "alice",
            Some("registry.example.com/beacon/db:x"),
        )
        .unwrap();
        assert_eq!(job["metadata"]["name"], "analyst-remove-alice");
        let text = serde_json::to_string(&job).unwrap();
        assert!(!text.contains("analyst-alice\""), "{text}");
        assert!(!text.contains("ANALYST_PASSWORD_FILE"), "{text}");
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["image"],
            "registry.example.com/beacon/db:x"
        );
        assert!(super::job(&docs, Op::Add, "Robert'); DROP", None).is_err());
        assert!(render_overlay("staging").is_err());
    }
}
