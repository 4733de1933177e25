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
pub use roles::{ANALYST_ROLE, COMPONENT_ROLES, GROUP_ROLES, LOGIN_ROLES, MIGRATOR_ROLE, OWNER};

/// The statements that give every member of the groups `$1` its group's connection
/// limit and session settings, and no attribute beyond LOGIN.
const MEMBER_SYNC_SQL: &str = "
SELECT format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS CONNECTION LIMIT %s',
              m.rolname, g.rolconnlimit)
FROM pg_roles g
JOIN pg_auth_members a ON a.roleid = g.oid
JOIN pg_roles m ON m.oid = a.member
WHERE g.rolname = ANY($1)
UNION ALL
SELECT format('ALTER ROLE %I SET %I = %L', m.rolname, split_part(c.setting, '=', 1),
              substr(c.setting, strpos(c.setting, '=') + 1))
FROM pg_roles g
JOIN pg_auth_members a ON a.roleid = g.oid
JOIN pg_roles m ON m.oid = a.member
JOIN pg_db_role_setting s ON s.setrole = g.oid AND s.setdatabase = 0
CROSS JOIN unnest(s.setconfig) AS c(setting)
WHERE g.rolname = ANY($1)";

/// People log in as members of a group role ([`GROUP_ROLES`]: analysts, see `cargo
/// xtask analyst add`; offboarding operators), and PostgreSQL applies only a login
/// role's own settings and limit, not its groups'. Gives every member, as its own, the
/// settings and connection limit that `roles.sql` sets on its group from the access
/// model (a group cannot log in: its limit means only this).
async fn sync_members(admin: &PgPool) -> Result<(), sqlx::Error> {
    let statements: Vec<String> = sqlx::query_scalar(MEMBER_SYNC_SQL)
        .bind(&GROUP_ROLES[..])
        .fetch_all(admin)
        .await?;
    for sql in &statements {
        sqlx::raw_sql(sql).execute(admin).await?;
    }
    Ok(())
}

/// Creates (or re-asserts the attributes of) every Beacon role. Safe to run concurrently
/// from several test databases: a lost race on CREATE ROLE is retried.
pub async fn bootstrap_roles(admin: &PgPool) -> anyhow::Result<()> {
    // Tests set up many databases at once and roles are cluster-wide: a concurrent
    // CREATE ROLE may win the race, so retry on that conflict.
    let mut attempt = 0;
    loop {
        let result = async {
            sqlx::raw_sql(ROLES_SQL).execute(admin).await?;
            sync_members(admin).await
        };
        match result.await {
            Ok(()) => return Ok(()),
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

/// Database-level privileges: nobody but Beacon's roles (and the members of its group
/// roles) may connect, nobody may create temporary tables, and only the owner may
/// create schemas.
pub async fn prepare_database(admin: &PgPool, database: &str) -> anyhow::Result<()> {
    let statements = [
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC".to_owned(),
        "GRANT CONNECT, CREATE ON DATABASE {db} TO beacon_owner".to_owned(),
        format!(
            "GRANT CONNECT ON DATABASE {{db}} TO {}",
            LOGIN_ROLES
                .iter()
                .chain(&GROUP_ROLES)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
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

/// A person's login name: a plain lower-case identifier PostgreSQL keeps as it is.
pub fn check_login_name(login: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !login.is_empty()
            && login.len() <= 63
            && login.starts_with(|c: char| c.is_ascii_lowercase())
            && login
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "{login:?} is not a valid login name (lower-case letters, digits and _, starting with a letter)"
    );
    Ok(())
}

/// The login of the analyst (a person) `name`: `analyst_<name>`.
pub fn analyst_login(name: &str) -> String {
    format!("analyst_{name}")
}

/// Whether the person's login `login` exists, and whether it is a member of the group
/// role `group`; refuses a group that is not Beacon's and a name that is not plain.
async fn membership(admin: &PgPool, group: &str, login: &str) -> anyhow::Result<(bool, bool)> {
    anyhow::ensure!(
        GROUP_ROLES.contains(&group),
        "{group} is not a Beacon group role"
    );
    check_login_name(login)?;
    Ok(sqlx::query_as(
        "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1),
                EXISTS (SELECT FROM pg_auth_members a
                        JOIN pg_roles m ON m.oid = a.member
                        JOIN pg_roles g ON g.oid = a.roleid
                        WHERE m.rolname = $1 AND g.rolname = $2)",
    )
    .bind(login)
    .bind(group)
    .fetch_one(admin)
    .await?)
}

/// Creates `login` as a member of the group role `group` (a person's login: an
/// analyst's), or sets its password when it exists and is already that group's member;
/// then re-asserts the roles (`roles.sql`), which gives every member the group's
/// settings and connection limit. Refuses a name that is not a plain lower-case
/// identifier, and any existing role that is not already a member of `group` (a
/// component's role, the administrator): this never hands a group to an existing role.
pub async fn add_member(
    admin: &PgPool,
    group: &str,
    login: &str,
    password: &str,
) -> anyhow::Result<()> {
    let (exists, member) = membership(admin, group, login).await?;
    anyhow::ensure!(
        !exists || member,
        "the role {login} exists and is not a member of {group}: choose another name"
    );
    // Quoting happens server-side (`format('%I', '%L')`). The password is never logged.
    let sql: String = sqlx::query_scalar(
        "SELECT CASE WHEN $4
            THEN format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $3::text)
            ELSE format('CREATE ROLE %I LOGIN PASSWORD %L IN ROLE %I', $1::text, $3::text, $2::text)
        END",
    )
    .bind(login)
    .bind(group)
    .bind(password)
    .bind(exists)
    .fetch_one(admin)
    .await?;
    sqlx::raw_sql(&sql).execute(admin).await?;
    bootstrap_roles(admin).await
}

/// Removes the person's login `login` from the group role `group`: it can no longer log
/// in, its open sessions are ended, and the role is dropped. Refuses any role that is not
/// a member of `group` (a component's role, the administrator) and a bad name; a login
/// that does not exist is already removed. Returns whether there was one.
pub async fn remove_member(admin: &PgPool, group: &str, login: &str) -> anyhow::Result<bool> {
    let (exists, member) = membership(admin, group, login).await?;
    if !exists {
        return Ok(false);
    }
    anyhow::ensure!(
        member,
        "the role {login} is not a member of {group}: it is not a person's login, not removing it"
    );
    // First no new session, then none open, then no role.
    for template in ["ALTER ROLE %I NOLOGIN", "DROP ROLE %I"] {
        if template.starts_with("DROP") {
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            )
            .bind(login)
            .execute(admin)
            .await?;
        }
        let sql: String = sqlx::query_scalar("SELECT format($1, $2::text)")
            .bind(template)
            .bind(login)
            .fetch_one(admin)
            .await?;
        sqlx::raw_sql(&sql).execute(admin).await?;
    }
    Ok(true)
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

/// The partitions of `raw.events` (`events_pYYYYMM`, one per UTC month), oldest first.
pub async fn event_partitions(pool: &PgPool) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'raw.events'::regclass ORDER BY 1",
    )
    .fetch_all(pool)
    .await
}

/// The partition names of every UTC month from the one `back_days` ago through
/// `ahead_months` after the current one, by the database's clock: the months a
/// retention pass with those settings guarantees.
pub async fn event_partition_months(
    pool: &PgPool,
    back_days: i32,
    ahead_months: i32,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT 'events_p' || to_char(m, 'YYYYMM') FROM generate_series(
             date_trunc('month', (now() AT TIME ZONE 'UTC') - make_interval(days => $1)),
             date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => $2),
             interval '1 month') m",
    )
    .bind(back_days)
    .bind(ahead_months)
    .fetch_all(pool)
    .await
}
