//! `cargo xtask nca [--check]`: the network-config-analyzer snapshots in `k8s/nca/`.
//!
//! For each overlay, renders it with `kubectl kustomize` into a scratch directory, runs
//! `nca --connectivity` on it (the program named by `NCA`, else `nca` on `PATH`) and
//! writes what it computes to `k8s/nca/<overlay>-connectivity.txt`; with `--check`, fails
//! when that differs from the checked-in file instead (what `.ci/run` does). After an
//! intended change of the NetworkPolicies, run it and review the snapshots' diff.

use std::{path::Path, process::Command};

use anyhow::Context;

pub const OVERLAYS: [&str; 2] = ["dev", "prod"];

/// The snapshot's path for `overlay`, relative to the workspace root.
pub fn snapshot_path(overlay: &str) -> String {
    format!("k8s/nca/{overlay}-connectivity.txt")
}

/// The nca program: `NCA`, else `nca`.
pub fn program() -> String {
    std::env::var("NCA").unwrap_or_else(|_| "nca".into())
}

/// What nca computes for `overlay` of the workspace at `root`, as the snapshot holds it.
pub fn connectivity(root: &Path, overlay: &str) -> anyhow::Result<String> {
    let scratch = std::env::temp_dir().join(format!("beacon-nca-{}", uuid::Uuid::new_v4()));
    let manifests = scratch.join("manifests");
    std::fs::create_dir_all(&manifests)?;
    let result = (|| {
        let rendered = Command::new("kubectl")
            .current_dir(root)
            .args(["kustomize", &format!("k8s/overlays/{overlay}")])
            .output()
            .context("running kubectl kustomize")?;
        anyhow::ensure!(
            rendered.status.success(),
            "kubectl kustomize k8s/overlays/{overlay}: {}",
            String::from_utf8_lossy(&rendered.stderr)
        );
        // The directory must hold only the rendered manifests, without ConfigMaps: nca
        // needs none, and skips a whole file in which it sees `{{` (a Helm template), as
        // in the Prometheus rules' annotations.
        let rendered = String::from_utf8(rendered.stdout).context("kustomize output")?;
        std::fs::write(
            manifests.join("manifests.yaml"),
            without_config_maps(&rendered),
        )?;
        // nca reads workloads, not custom resources: where an operator makes pods
        // (prod's CloudNativePG), stand-ins for them (k8s/nca/README.md).
        let stand_ins = root.join(format!("k8s/nca/{overlay}-stand-ins.yaml"));
        if stand_ins.exists() {
            std::fs::copy(&stand_ins, manifests.join("stand-ins.yaml"))?;
        }
        let out = scratch.join("out.txt");
        let nca = program();
        let run = Command::new(&nca)
            .arg("--connectivity")
            .arg("-r")
            .arg(&manifests)
            .arg("--file_out")
            .arg(&out)
            .output()
            .with_context(|| {
                format!("running {nca} (install network-config-analyzer, or set NCA)")
            })?;
        anyhow::ensure!(
            run.status.success(),
            "{nca} failed: {}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        let text = std::fs::read_to_string(&out)?;
        Ok(text
            .lines()
            .filter(|l| !l.starts_with("final fw rules"))
            .map(|l| format!("{l}\n"))
            .collect())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// The YAML stream `rendered` without its ConfigMap documents.
fn without_config_maps(rendered: &str) -> String {
    rendered
        .split("\n---\n")
        .filter(|doc| !doc.lines().any(|l| l == "kind: ConfigMap"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Writes (or with `check`, compares) every overlay's snapshot; returns what changed.
pub fn run(root: &Path, check: bool) -> anyhow::Result<Vec<String>> {
    // The dev overlay's secretGenerator reads git-ignored files: make them (kept if present).
    crate::secrets::generate(&root.join("k8s/overlays/dev/secrets"))?;
    let mut changed = Vec::new();
    for overlay in OVERLAYS {
        let path = root.join(snapshot_path(overlay));
        let now = connectivity(root, overlay)?;
        if std::fs::read_to_string(&path).ok().as_deref() != Some(now.as_str()) {
            if !check {
                std::fs::write(&path, &now)?;
            }
            changed.push(snapshot_path(overlay));
        }
    }
    anyhow::ensure!(
        !check || changed.is_empty(),
        "the NetworkPolicies' connectivity differs from the reviewed snapshots (run `cargo xtask nca` and review the diff): {}",
        changed.join(", ")
    );
    Ok(changed)
}
