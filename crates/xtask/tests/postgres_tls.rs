//! PostgreSQL as the cluster runs it: TLS on, scram-sha-256 for every connection, no
//! plaintext, and clients that verify the server (`sslmode=verify-full` with the CA file,
//! what every component uses in Kubernetes) through `platform::db`.
//!
//! A throwaway cluster (the one `cargo xtask up` starts, `up::Cluster`) with a server
//! certificate from a development CA for the Service name and 127.0.0.1. Then: the right
//! CA and name connect over TLS; another CA, another name, no password, a wrong password
//! and no TLS are each refused. Run as root (as CI runs), the cluster belongs to the
//! `postgres` OS user.

use std::{path::PathBuf, time::Duration};

use platform::db::DbConfig;
use secrecy::SecretString;
use sqlx::{
    Connection as _, PgConnection,
    postgres::{PgConnectOptions, PgSslMode},
};
use time::OffsetDateTime;
use xtask::{
    certs::Ca,
    up::{Cluster, ServerSecurity},
};

/// A directory other users may enter (the cluster may run as `postgres`), removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Stops the cluster however the test ends (declared after [`Dir`]: dropped first).
struct Running(Cluster);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.stop();
    }
}

fn write(path: &PathBuf, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[tokio::test]
async fn verify_full_connects_only_to_the_right_server_and_the_server_takes_only_scram_over_tls() {
    let port = xtask::up::free_port().unwrap();
    let dir = Dir(std::env::temp_dir().join(format!("xtask-pg-tls-{}-{port}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let file = |name: &str| dir.0.join(name);

    let model = platform::access::AccessModel::load();
    let now = OffsetDateTime::now_utc();
    let valid = (
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    );
    let ca = Ca::new("Beacon development CA").unwrap();
    write(&file("ca.crt"), &ca.cert_pem);
    // The postgres Service's name (and 127.0.0.1, which every Ca::issue certificate names).
    let (cert, key) = ca
        .issue(
            &model.spiffe_id("postgres").unwrap(),
            &["postgres.beacon-data.svc".to_owned()],
            valid.0,
            valid.1,
        )
        .unwrap();
    write(&file("server.crt"), &cert);
    write(&file("server.key"), &key);
    let rogue = Ca::new("Rogue CA").unwrap();
    write(&file("rogue.crt"), &rogue.cert_pem);
    let password = uuid::Uuid::new_v4().to_string();
    write(&file("admin.password"), &password);

    let _cluster = Running(
        Cluster::at(file("postgres"))
            .with_security(ServerSecurity {
                admin_password_file: Some(file("admin.password")),
                tls: Some((file("server.crt"), file("server.key"))),
            })
            .start(port, port)
            .expect("the throwaway cluster starts with TLS and scram"),
    );

    let base = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .database("postgres");
    let config = |host: &str, mode: PgSslMode, ca: Option<&str>, password: Option<&str>| {
        let mut c = DbConfig::for_role(&base, "postgres");
        c.host = host.to_owned();
        c.ssl_mode = mode;
        c.ssl_root_cert = ca.map(file);
        c.password = password.map(|p| SecretString::from(p.to_owned()));
        c.acquire_timeout = Duration::from_secs(5);
        c
    };
    let connect =
        |c: DbConfig| async move { PgConnection::connect_with(&c.connect_options()).await };

    // The right CA, the right name (127.0.0.1), the password: connected, over TLS.
    let mut conn = connect(config(
        "127.0.0.1",
        PgSslMode::VerifyFull,
        Some("ca.crt"),
        Some(&password),
    ))
    .await
    .expect("verify-full with the right CA and name");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ssl);
    let method: String = sqlx::query_scalar("SELECT current_setting('password_encryption')")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(method, "scram-sha-256");
    conn.close().await.unwrap();

    let refusals = [
        // The server's certificate is from a CA the client does not trust.
        (
            "another CA",
            config(
                "127.0.0.1",
                PgSslMode::VerifyFull,
                Some("rogue.crt"),
                Some(&password),
            ),
            "UnknownIssuer",
        ),
        // The same server by a name its certificate does not carry.
        (
            "another name",
            config(
                "localhost",
                PgSslMode::VerifyFull,
                Some("ca.crt"),
                Some(&password),
            ),
            "not valid for name",
        ),
        // scram-sha-256 for every connection: no password, a wrong one.
        (
            "no password",
            config("127.0.0.1", PgSslMode::VerifyFull, Some("ca.crt"), None),
            "password",
        ),
        (
            "wrong password",
            config(
                "127.0.0.1",
                PgSslMode::VerifyFull,
                Some("ca.crt"),
                Some("wrong"),
            ),
            "password authentication failed",
        ),
        // No TLS, even with the password: pg_hba rejects it.
        (
            "plaintext",
            config("127.0.0.1", PgSslMode::Disable, None, Some(&password)),
            "no encryption",
        ),
    ];
    for (case, c, expected) in refusals {
        let err = connect(c).await.expect_err(case);
        assert!(
            err.to_string().contains(expected),
            "{case}: expected {expected:?} in {err}"
        );
    }
}

/// `verify-full` without a CA file is a configuration error, by name, at start.
#[test]
fn verify_full_needs_the_ca_file() {
    let err = platform::db::check_ssl(PgSslMode::VerifyFull, None).unwrap_err();
    assert_eq!(err.var, "DATABASE_SSLROOTCERT");
    let err = platform::db::check_ssl(
        PgSslMode::VerifyFull,
        Some(std::path::Path::new("/nonexistent/ca.crt")),
    )
    .unwrap_err();
    assert!(err.reason.contains("/nonexistent/ca.crt"), "{err}");
    platform::db::check_ssl(PgSslMode::Prefer, None).expect("prefer needs no CA file");
}
