//! `cargo xtask secrets`: the development credentials the Kubernetes dev overlay's
//! secretGenerator reads from the git-ignored `k8s/overlays/dev/secrets/`: the dev CA and
//! workload certificates, the token key pair (see [`crate::certs`]), and one random
//! password per PostgreSQL login role plus the administrator's. Files that exist are
//! kept, so passwords stay stable across runs (a running database keeps working).

use std::path::{Path, PathBuf};

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
    // A folder filled before PostgreSQL spoke TLS gains its server certificate.
    wrote |= crate::certs::server_certificates(dir)?;
    for name in password_files() {
        let path = dir.join(&name);
        if path.exists() {
            continue;
        }
        std::fs::write(&path, crate::up::random_secret())?;
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
            "postgres.crt",
            "postgres.key",
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
        // A folder from before PostgreSQL's certificate gains it, from the same CA.
        std::fs::remove_file(dir.join("postgres.crt")).unwrap();
        assert!(super::generate(&dir).unwrap());
        let ca = std::fs::read(dir.join("ca.crt")).unwrap();
        let roots = platform::tls::load_certs(&dir.join("ca.crt")).unwrap();
        assert_eq!(roots.len(), 1, "{}", String::from_utf8_lossy(&ca));
        let server = platform::tls::load_certs(&dir.join("postgres.crt")).unwrap();
        assert_eq!(
            platform::tls::spiffe_identity(server[0].as_ref()).unwrap(),
            "spiffe://beacon.local/ns/beacon-data/sa/postgres"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("beacon-secrets-{}", uuid::Uuid::new_v4()))
    }
}
