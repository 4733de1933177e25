//! `cargo xtask secrets`: the development credentials the Kubernetes dev overlay's
//! secretGenerator reads from the git-ignored `k8s/overlays/dev/secrets/`: the dev CA and
//! workload certificates, the token key pair (see [`crate::certs`]), and one random
//! password per PostgreSQL login role plus the administrator's. Files that exist are
//! kept, so passwords stay stable across runs (a running database keeps working).

use std::path::{Path, PathBuf};

/// Password files written next to the certificates: the administrator, every login
/// role, the demo users' password used by `cargo xtask seed`, and Grafana's admin.
pub fn password_files() -> Vec<String> {
    let mut names = vec![
        "postgres-admin".to_owned(),
        "demo-user".to_owned(),
        GRAFANA_ADMIN.to_owned(),
    ];
    names.extend(db::LOGIN_ROLES.iter().map(|r| (*r).to_owned()));
    names.into_iter().map(|n| format!("{n}.password")).collect()
}

pub fn dev_overlay_dir() -> PathBuf {
    crate::up::workspace_root().join("k8s/overlays/dev/secrets")
}

/// The dashboard's key for session-bound CSRF tokens (`BEACON_SESSION_KEY_FILE`): one
/// key for every replica, so a token issued by one is accepted by the others.
pub const DASHBOARD_SESSION_KEY: &str = "dashboard-session.key";

/// The api's key for the keyed hash of erased subjects (`BEACON_SUBJECT_HASH_KEY_FILE`):
/// one key for every replica, and kept, so the erasure ledger's hashes stay comparable.
pub const SUBJECT_HASH_KEY: &str = "api-subject-hash.key";

/// `dir`/[`SUBJECT_HASH_KEY`], generated (private, atomically) unless it exists; its path.
pub fn subject_hash_key(dir: &Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(SUBJECT_HASH_KEY);
    crate::private_file::create(&path, crate::up::random_secret().as_bytes())?;
    Ok(path)
}

/// Grafana's admin password (user `admin`; the dev overlay's Secret `grafana-admin`).
pub const GRAFANA_ADMIN: &str = "grafana-admin";

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
    wrote |= crate::private_file::create(
        &dir.join(DASHBOARD_SESSION_KEY),
        crate::up::random_secret().as_bytes(),
    )?;
    let key_existed = dir.join(SUBJECT_HASH_KEY).exists();
    subject_hash_key(dir)?;
    wrote |= !key_existed;
    for name in password_files() {
        wrote |=
            crate::private_file::create(&dir.join(&name), crate::up::random_secret().as_bytes())?;
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

    /// The password files come from the generated `db::LOGIN_ROLES`; the two hand-kept
    /// lists that name them again (the dev overlay's `db-role-passwords` Secret and the
    /// bootstrap Job's `<ROLE>_PASSWORD_FILE` variables, which `new-service --database`
    /// extends) must name exactly the same roles.
    #[test]
    fn every_list_of_role_passwords_is_the_models() {
        let root = crate::up::workspace_root();
        let mut roles: Vec<&str> = db::LOGIN_ROLES.to_vec();
        roles.sort_unstable();
        let files = super::password_files();
        for role in &roles {
            assert!(files.contains(&format!("{role}.password")), "{role}");
        }
        let dev =
            std::fs::read_to_string(root.join("k8s/overlays/dev/kustomization.yaml")).unwrap();
        let block = dev.split("- name: db-role-passwords").nth(1).unwrap();
        let block = block.split("  - name:").next().unwrap();
        let mut listed: Vec<&str> = block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        listed.sort_unstable();
        assert_eq!(listed, roles, "k8s/overlays/dev db-role-passwords");
        let jobs = std::fs::read_to_string(root.join("k8s/base/data/jobs.yaml")).unwrap();
        let mut variables: Vec<String> = jobs
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .filter(|v| v.ends_with("_PASSWORD_FILE") && !v.starts_with("DATABASE_"))
            .map(|v| v.trim_end_matches("_PASSWORD_FILE").to_lowercase())
            .collect();
        variables.sort_unstable();
        assert_eq!(variables, roles, "k8s/base/data/jobs.yaml bootstrap");
    }

    fn tempfile_dir() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("beacon-secrets-{}", uuid::Uuid::new_v4()))
    }
}
