//! Beacon's database: schemas (`app`, `raw`, `output`), the login-less owner, one
//! login role per component, and the steps that put them in place.
//!
//! Order on a new database (what `cargo xtask migrate` and the Kubernetes bootstrap
//! and migration Jobs do):
//! 1. [`bootstrap_roles`] as an administrator: cluster-wide roles, idempotent;
//! 2. [`prepare_database`] as an administrator: who may connect, who may create schemas;
//! 3. [`set_password`] for each login role, from a file (never in a migration);
//! 4. [`migrate`] as `beacon_migrator`, whose objects belong to `beacon_owner`; then
//!    `grants.sql` (generated from the access model) gives each role exactly its grants.

use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Idempotent role creation (see `roles.sql`).
pub const ROLES_SQL: &str = include_str!("roles.sql");

/// Who may use the objects the migrations create, applied after them (see [`migrate`]).
pub const GRANTS_SQL: &str = include_str!("grants.sql");

// Role names, generated from the access model with roles.sql and grants.sql.
#[rustfmt::skip]
mod roles;
pub use roles::{COMPONENT_ROLES, LOGIN_ROLES, MIGRATOR_ROLE, OWNER};

/// Creates (or re-asserts the attributes of) every Beacon role. Safe to run concurrently
/// from several test databases: a lost race on CREATE ROLE is retried.
pub async fn bootstrap_roles(admin: &PgPool) -> anyhow::Result<()> {
    // Tests set up many databases at once and roles are cluster-wide: a concurrent
    // CREATE ROLE may win the race, so retry on that conflict.
    let mut attempt = 0;
    loop {
        match sqlx::raw_sql(ROLES_SQL).execute(admin).await {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e))
                if attempt < 10
                    && (e.code().as_deref() == Some("23505")
                        || e.code().as_deref() == Some("XX000")
                        || e.code().as_deref() == Some("40001")) =>
            {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Database-level privileges: nobody but Beacon's roles may connect, nobody may create
/// temporary tables, and only the owner may create schemas.
pub async fn prepare_database(admin: &PgPool, database: &str) -> anyhow::Result<()> {
    let statements = [
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC".to_owned(),
        "GRANT CONNECT, CREATE ON DATABASE {db} TO beacon_owner".to_owned(),
        format!(
            "GRANT CONNECT ON DATABASE {{db}} TO {}",
            LOGIN_ROLES.join(", ")
        ),
        "REVOKE ALL ON SCHEMA public FROM PUBLIC".to_owned(),
    ];
    for statement in statements {
        let sql: String = sqlx::query_scalar("SELECT replace($1, '{db}', quote_ident($2))")
            .bind(&statement)
            .bind(database)
            .fetch_one(admin)
            .await?;
        sqlx::raw_sql(&sql).execute(admin).await?;
    }
    Ok(())
}

/// Sets a login role's password. Quoting happens server-side (`format('%L')`).
pub async fn set_password(admin: &PgPool, role: &str, password: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        LOGIN_ROLES.contains(&role),
        "{role} is not a Beacon login role"
    );
    let sql: String =
        sqlx::query_scalar("SELECT format('ALTER ROLE %I PASSWORD %L', $1::text, $2::text)")
            .bind(role)
            .bind(password)
            .fetch_one(admin)
            .await?;
    sqlx::raw_sql(&sql).execute(admin).await?;
    Ok(())
}

/// Runs pending migrations, connected as `beacon_migrator` (acting as `beacon_owner`),
/// then applies [`GRANTS_SQL`]: the access model's grants, nothing else.
pub async fn migrate(migrator: PgConnectOptions) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&migrator).await?;
    let role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await?;
    anyhow::ensure!(
        role == OWNER,
        "migrations must run as {MIGRATOR_ROLE} acting as {OWNER}, not {role}"
    );
    // sqlx's bookkeeping table lives in its own schema: `public` is closed to everyone.
    sqlx::raw_sql("CREATE SCHEMA IF NOT EXISTS migrations; SET search_path TO migrations")
        .execute(&mut conn)
        .await?;
    MIGRATOR.run(&mut conn).await?;
    // Then exactly the access model's grants (one implicit transaction).
    sqlx::raw_sql(GRANTS_SQL).execute(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// The whole set-up on a database, as an administrator connected to it (tests, xtask).
pub async fn setup(admin: &PgPool) -> anyhow::Result<()> {
    bootstrap_roles(admin).await?;
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(admin)
        .await?;
    prepare_database(admin, &database).await?;
    let options = (*admin.connect_options()).clone().username(MIGRATOR_ROLE);
    migrate(options).await
}
