//! Rendering the overlays with `kubectl kustomize` and reading the YAML.

use std::{path::PathBuf, process::Command, sync::OnceLock};

use serde::Deserialize;
use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Renders `k8s/overlays/<overlay>`. Fails loudly when kubectl is missing: these checks
/// must never pass by not running.
pub fn render(overlay: &str) -> Vec<Value> {
    if overlay == "dev" {
        static SECRETS: OnceLock<()> = OnceLock::new();
        SECRETS.get_or_init(|| {
            // The dev overlay's secretGenerator reads these git-ignored files.
            xtask::secrets::generate(&xtask::secrets::dev_overlay_dir())
                .expect("generating k8s/overlays/dev/secrets");
        });
    }
    let dir = root().join("k8s/overlays").join(overlay);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `kubectl kustomize` ({e}): install kubectl (with kustomize) to run the \
                 Kubernetes manifest tests; they do not pass without it"
            )
        });
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    parse(&String::from_utf8(output.stdout).expect("UTF-8 manifests"))
}

pub fn parse(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

pub fn dev() -> Vec<Value> {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| render("dev")).clone()
}

pub fn prod() -> Vec<Value> {
    static DOCS: OnceLock<Vec<Value>> = OnceLock::new();
    DOCS.get_or_init(|| render("prod")).clone()
}

pub fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

pub fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

pub fn namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or("")
}

/// Every pod template: (kind/name, namespace, pod spec, pod labels, long-running?).
pub struct Template<'a> {
    pub owner: String,
    pub namespace: String,
    pub spec: &'a Value,
    pub labels: &'a Value,
    pub long_running: bool,
}

pub fn templates(docs: &[Value]) -> Vec<Template<'_>> {
    let mut out = Vec::new();
    for d in docs {
        let (t, long_running) = match kind(d) {
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => {
                (&d["spec"]["template"], true)
            }
            "Job" => (&d["spec"]["template"], false),
            "CronJob" => (&d["spec"]["jobTemplate"]["spec"]["template"], false),
            "Pod" => (d, true),
            _ => continue,
        };
        out.push(Template {
            owner: format!("{}/{}", kind(d), name(d)),
            namespace: namespace(d).to_owned(),
            spec: &t["spec"],
            labels: &t["metadata"]["labels"],
            long_running,
        });
    }
    out
}

/// `pod spec` containers and init containers.
pub fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect()
}

pub fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}
