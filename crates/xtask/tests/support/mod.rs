//! A throwaway PostgreSQL as the cluster runs it (the cluster `cargo xtask up` starts,
//! `up::Cluster`): TLS with a certificate from a development CA for the postgres
//! Service's name and 127.0.0.1, scram-sha-256 for every connection, an administrator
//! password from a file. Run as root (as CI runs), the cluster belongs to the `postgres`
//! OS user.

use std::path::PathBuf;

use time::OffsetDateTime;
use xtask::{
    certs::Ca,
    up::{Cluster, ServerSecurity},
};

/// The server's DNS name (the dev postgres Service's).
pub const SERVER_NAME: &str = "postgres.beacon-data.svc";

pub struct TlsPostgres {
    pub port: u16,
    /// The `postgres` administrator's password (also in `admin.password`).
    pub admin_password: String,
    dir: PathBuf,
    cluster: Option<Cluster>,
}

impl TlsPostgres {
    /// Starts the server; its CA certificate is [`Self::file`]`("ca.crt")`.
    pub fn start(test: &str) -> Self {
        let port = xtask::up::free_port().unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-{test}-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut pg = Self {
            port,
            admin_password: uuid::Uuid::new_v4().to_string(),
            dir,
            cluster: None,
        };
        let model = platform::access::AccessModel::load();
        let now = OffsetDateTime::now_utc();
        let ca = Ca::new("Beacon development CA").unwrap();
        pg.write("ca.crt", &ca.cert_pem);
        // The postgres Service's name (and 127.0.0.1, which every Ca::issue certificate names).
        let (cert, key) = ca
            .issue(
                &model.spiffe_id("postgres").unwrap(),
                &[SERVER_NAME.to_owned()],
                now - time::Duration::hours(1),
                now + time::Duration::days(1),
            )
            .unwrap();
        pg.write("server.crt", &cert);
        pg.write("server.key", &key);
        pg.write("admin.password", &pg.admin_password.clone());
        pg.cluster = Some(
            Cluster::at(pg.file("postgres"))
                .with_security(ServerSecurity {
                    admin_password_file: Some(pg.file("admin.password")),
                    tls: Some((pg.file("server.crt"), pg.file("server.key"))),
                })
                .start(port, port)
                .expect("the throwaway cluster starts with TLS and scram"),
        );
        pg
    }

    /// A file of the test's directory (which other users may enter: the cluster may run
    /// as `postgres`).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.file(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
