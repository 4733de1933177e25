//! PostgreSQL pools: one role per component, credentials from files, a statement
//! timeout on every session, and transactions scoped to one tenant.

use std::{path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    PgConnection, PgPool, Postgres, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions, PgSslMode},
};
use uuid::Uuid;

use crate::config;

/// The session setting row-level security policies read. Always set with
/// `set_config(…, true)` (= `SET LOCAL`) so it dies with the transaction and never
/// leaks to the next user of a pooled connection.
pub const TENANT_SETTING: &str = "beacon.tenant_id";

/// A pooled connection idle at least this long is pinged before it is handed out.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub username: String,
    pub password: Option<SecretString>,
    pub ssl_mode: PgSslMode,
    /// The CA certificate(s) that issued the server's certificate (PEM), for
    /// `verify-ca`/`verify-full`.
    pub ssl_root_cert: Option<PathBuf>,
    pub max_connections: u32,
    pub statement_timeout: Duration,
    pub acquire_timeout: Duration,
    pub application_name: String,
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_root_cert", &self.ssl_root_cert)
            .finish_non_exhaustive()
    }
}

impl DbConfig {
    /// `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_NAME`, `DATABASE_USER`,
    /// `DATABASE_PASSWORD_FILE`, `DATABASE_SSLMODE` (libpq's modes; in the cluster
    /// `verify-full`), `DATABASE_SSLROOTCERT` (the CA file; required by `verify-ca` and
    /// `verify-full`), `DATABASE_MAX_CONNECTIONS`, `DATABASE_STATEMENT_TIMEOUT_MS`.
    /// The user defaults to the component's role.
    pub fn from_env(default_role: &str, application_name: &str) -> config::Result<Self> {
        let ssl: String = config::or("DATABASE_SSLMODE", "prefer".to_owned())?;
        let ssl_mode = ssl
            .parse::<PgSslMode>()
            .map_err(|e| config::ConfigError::new("DATABASE_SSLMODE", e))?;
        let ssl_root_cert = config::optional::<String>("DATABASE_SSLROOTCERT")?.map(PathBuf::from);
        check_ssl(ssl_mode, ssl_root_cert.as_deref())?;
        Ok(Self {
            host: config::or("DATABASE_HOST", "127.0.0.1".to_owned())?,
            port: config::or("DATABASE_PORT", 5432)?,
            database: config::or("DATABASE_NAME", "beacon".to_owned())?,
            username: config::or("DATABASE_USER", default_role.to_owned())?,
            password: config::optional_secret("DATABASE_PASSWORD")?,
            ssl_mode,
            ssl_root_cert,
            max_connections: config::or("DATABASE_MAX_CONNECTIONS", 10)?,
            statement_timeout: config::millis("DATABASE_STATEMENT_TIMEOUT_MS", 5_000)?,
            acquire_timeout: config::millis("DATABASE_ACQUIRE_TIMEOUT_MS", 2_000)?,
            application_name: application_name.to_owned(),
        })
    }

    /// Settings for `role` on the database `base` points at (tests and tooling).
    pub fn for_role(base: &PgConnectOptions, role: &str) -> Self {
        Self {
            host: base.get_host().to_owned(),
            port: base.get_port(),
            database: base.get_database().unwrap_or("postgres").to_owned(),
            username: role.to_owned(),
            password: None,
            ssl_mode: PgSslMode::Prefer,
            ssl_root_cert: None,
            max_connections: 5,
            statement_timeout: Duration::from_secs(5),
            acquire_timeout: Duration::from_secs(2),
            application_name: role.to_owned(),
        }
    }

    pub fn connect_options(&self) -> PgConnectOptions {
        let mut options = PgConnectOptions::new()
            .host(&self.host)
            .port(self.port)
            .database(&self.database)
            .username(&self.username)
            .ssl_mode(self.ssl_mode)
            .application_name(&self.application_name)
            .options([(
                "statement_timeout",
                self.statement_timeout.as_millis().to_string(),
            )]);
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        if let Some(ca) = &self.ssl_root_cert {
            options = options.ssl_root_cert(ca);
        }
        options
    }

    /// A lazy pool: the service starts (and answers `/healthz`) while the database is
    /// down, reports not ready, and recovers on its own when it returns.
    ///
    /// sqlx pings a connection (one round trip) before handing it out, and again when it
    /// comes back. The first ping is skipped for a connection idle less than
    /// [`PING_IF_IDLE_FOR`]: it was used moments ago, and a connection that broke since
    /// fails its statement like one that breaks mid-call (the call gets "unavailable";
    /// the ping on release discards it). The ping on release stays (sqlx has no option).
    pub fn pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    use sqlx::Connection as _;
                    Ok(meta.idle_for < PING_IF_IDLE_FOR || conn.ping().await.is_ok())
                })
            })
            .connect_lazy_with(self.connect_options())
    }
}

/// `verify-ca` and `verify-full` need the CA that issued the server's certificate: its
/// file must be named and readable, so a missing mount fails at start, by name, rather
/// than as a handshake error on the first query.
pub fn check_ssl(mode: PgSslMode, root_cert: Option<&std::path::Path>) -> config::Result<()> {
    let verifies = matches!(mode, PgSslMode::VerifyCa | PgSslMode::VerifyFull);
    match root_cert {
        None if verifies => Err(config::ConfigError::new(
            "DATABASE_SSLROOTCERT",
            "is required with DATABASE_SSLMODE verify-ca or verify-full (the CA file that issued the server's certificate)",
        )),
        Some(path) => std::fs::metadata(path).map(|_| ()).map_err(|e| {
            config::ConfigError::new(
                "DATABASE_SSLROOTCERT",
                format!("cannot read {}: {e}", path.display()),
            )
        }),
        None => Ok(()),
    }
}

/// Begins a transaction in which row-level security sees only `tenant`. Timed as the
/// database operation `tenant.begin` (a connection from the pool, `BEGIN` and the
/// tenant setting in one round trip): a saturated pool shows here first.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "tenant.begin"))]
pub async fn begin_for_tenant(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(begin_statement("BEGIN", tenant)).await
}

/// Like [`begin_for_tenant`], read-only: PostgreSQL refuses any write in it.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "tenant.begin_read_only"))]
pub async fn begin_read_only_for_tenant(
    pool: &PgPool,
    tenant: Uuid,
) -> Result<ReadTx, sqlx::Error> {
    pool.begin_with(begin_statement("BEGIN READ ONLY", tenant))
        .await
        .map(ReadTx)
}

/// A read-only transaction scoped to one tenant ([`begin_read_only_for_tenant`]); use
/// it as a connection (`&mut *tx`).
#[derive(Debug)]
pub struct ReadTx(Transaction<'static, Postgres>);

impl ReadTx {
    /// Ends the transaction. It has nothing to commit: it is rolled back, and sqlx
    /// sends that `ROLLBACK` together with the ping it makes when the connection
    /// returns to the pool, one round trip for both, where `COMMIT` would take one of
    /// its own. (Dropping it does the same.)
    pub fn end(self) {
        drop(self.0);
    }
}

impl std::ops::Deref for ReadTx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.0
    }
}

impl std::ops::DerefMut for ReadTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.0
    }
}

/// `BEGIN` and the tenant setting as one simple query: one round trip instead of two.
/// The setting's value is written into the SQL text, so it is only ever a [`Uuid`]:
/// its text form is 36 characters of `[0-9a-f-]`, nothing that can end a literal.
fn begin_statement(begin: &'static str, tenant: Uuid) -> String {
    let tenant = tenant.hyphenated();
    format!("{begin}; SELECT set_config('{TENANT_SETTING}', '{tenant}', true)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_begin_statement_holds_only_the_uuid_text() {
        for tenant in [Uuid::nil(), Uuid::max(), Uuid::new_v4()] {
            let sql = begin_statement("BEGIN READ ONLY", tenant);
            let want = [
                "BEGIN READ ONLY; SELECT set_config('beacon.tenant_id', '",
                &tenant.to_string(),
                "', true)",
            ];
            assert_eq!(sql, want.concat());
            let value =
                &sql["BEGIN READ ONLY; SELECT set_config('beacon.tenant_id', '".len()..][..36];
            assert!(
                value.chars().all(|c| c.is_ascii_hexdigit() || c == '-'),
                "{value}"
            );
        }
    }
}
