//! PostgreSQL as the cluster runs it: TLS on, scram-sha-256 for every connection, no
//! plaintext, and clients that verify the server (`sslmode=verify-full` with the CA file,
//! what every component uses in Kubernetes) through `platform::db`.
//!
//! A throwaway cluster (the one `cargo xtask up` starts, `up::Cluster`) with a server
//! certificate from a development CA for the Service name and 127.0.0.1. Then: the right
//! CA and name connect over TLS; another CA, another name, no password, a wrong password
//! and no TLS are each refused. Run as root (as CI runs), the cluster belongs to the
//! `postgres` OS user.

mod support;

use std::time::Duration;

use platform::db::DbConfig;
use secrecy::SecretString;
use sqlx::{
    Connection as _, PgConnection,
    postgres::{PgConnectOptions, PgSslMode},
};
use xtask::certs::Ca;

#[tokio::test]
async fn verify_full_connects_only_to_the_right_server_and_the_server_takes_only_scram_over_tls() {
    let pg = support::TlsPostgres::start("pg-tls");
    let (port, password) = (pg.port, pg.admin_password.clone());
    let file = |name: &str| pg.file(name);
    let rogue = Ca::new("Rogue CA").unwrap();
    pg.write("rogue.crt", &rogue.cert_pem);

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
