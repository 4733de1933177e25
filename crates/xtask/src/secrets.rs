//! `cargo xtask secrets`: the development credentials the Kubernetes dev overlay's
//! secretGenerator reads from the git-ignored `k8s/overlays/dev/secrets/`: the dev CA and
//! workload certificates, the token key pair (see [`crate::certs`]), and one random
//! password per PostgreSQL login role plus the administrator's. Files that exist are
//! kept, so passwords stay stable across runs (a running database keeps working).

use std::path::{Path, PathBuf};

use rand::{Rng, distr::Alphanumeric};

/// Password files written next to the certificates: the administrator, every login
/// role, and the demo users' password used by `cargo xtask seed`.
pub fn password_files() -> Vec<String> {
    let mut names = vec!["postgres-admin".to_owned(), "demo-user".to_owned()];
    names.extend(db::LOGIN_ROLES.iter().map(|r| (*r).to_owned()));
    names.into_iter().map(|n| format!("{n}.password")).collect()
}

pub fn dev_overlay_dir() -> PathBuf {
    crate::up::workspace_root().join("k8s/overlays/dev/secrets")
}

/// Fills `dir`; returns whether anything was written.
pub fn generate(dir: &Path) -> anyhow::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let mut wrote = false;
    if !dir.join("ca.crt").exists() || !dir.join("jwt-public.pem").exists() {
        crate::certs::generate(dir)?;
        wrote = true;
    }
    for name in password_files() {
        let path = dir.join(&name);
        if path.exists() {
            continue;
        }
        let secret: String = rand::rng()
            .sample_iter(&Alphanumeric)
            .take(32)
            .map(char::from)
            .collect();
        std::fs::write(&path, secret)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        wrote = true;
    }
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    #[test]
    fn generates_every_file_once_and_keeps_them() {
        let dir = tempfile_dir();
        assert!(super::generate(&dir).unwrap());
        let before = std::fs::read_to_string(dir.join("beacon_api.password")).unwrap();
        assert_eq!(before.len(), 32);
        for f in [
            "ca.crt",
            "api.crt",
            "api.key",
            "analytics.crt",
            "jwt-signing.key",
            "jwt-public.pem",
        ] {
            assert!(dir.join(f).exists(), "{f} missing");
        }
        assert!(
            !super::generate(&dir).unwrap(),
            "second run must not rewrite"
        );
        let after = std::fs::read_to_string(dir.join("beacon_api.password")).unwrap();
        assert_eq!(before, after);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("beacon-secrets-{}", uuid::Uuid::new_v4()))
    }
}
