//! `cargo xtask tenant delete <slug> --yes`: offboards a tenant, an operator action.
//!
//! Connects with the given URL (a person's own login that is a member of the
//! offboarding role, or the administrator), switches to that role (`SET ROLE`; the
//! access model's role that may execute `app.offboard_tenant`, `beacon_offboard`), and
//! calls the function until the tenant is gone. Each call is its own transaction and
//! deletes at most `--batch` rows, so a large tenant never becomes one huge
//! transaction. The first call writes the tombstone (`app.offboarded_tenants`): from
//! then on the api refuses the tenant's tokens and the loader its events, even tokens
//! issued before. Nothing here reads or writes a table directly; the role cannot.

use std::collections::BTreeMap;

use anyhow::Context as _;
use platform::access::AccessModel;
use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};

/// The offboarding function, as the access model lists it.
pub const FUNCTION: &str = "app.offboard_tenant(text,integer)";

/// `cargo xtask tenant ...`
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Delete every row of the tenant in every schema, its users and API keys included;
    /// its tokens stop working at once. Irreversible.
    Delete {
        /// The tenant's slug.
        slug: String,
        /// Confirms the deletion (nothing happens without it).
        #[arg(long)]
        yes: bool,
        /// Rows deleted per transaction at most.
        #[arg(long, default_value_t = 10_000)]
        batch: i32,
        /// Where to connect, as a member of the offboarding role or the administrator.
        #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/beacon")]
        database_url: String,
        /// File holding that login's password (none: trust or ~/.pgpass).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
}

/// The role that may execute [`FUNCTION`], from the access model.
pub fn offboarding_role(model: &AccessModel) -> anyhow::Result<String> {
    model
        .database
        .roles
        .iter()
        .find(|(_, r)| r.functions.iter().any(|f| f == FUNCTION))
        .map(|(name, _)| name.clone())
        .with_context(|| format!("no role of the access model may execute {FUNCTION}"))
}

/// Rows deleted per relation (`schema.table`), `app.tenants` last.
pub type Deleted = BTreeMap<String, i64>;

/// Offboards `slug` on `conn`, which must already act as the offboarding role: calls
/// the function, one transaction per call, until it deleted the tenant itself.
pub async fn delete(conn: &mut PgConnection, slug: &str, batch: i32) -> anyhow::Result<Deleted> {
    anyhow::ensure!(batch >= 1, "--batch must be at least 1");
    let mut deleted = Deleted::new();
    loop {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT relation, deleted FROM app.offboard_tenant($1, $2)")
                .bind(slug)
                .bind(batch)
                .fetch_all(&mut *conn)
                .await
                .with_context(|| format!("offboarding {slug}"))?;
        let done = rows.iter().any(|(relation, _)| relation == "app.tenants");
        for (relation, n) in rows {
            *deleted.entry(relation).or_default() += n;
        }
        if done {
            return Ok(deleted);
        }
    }
}

/// Connects, switches to the offboarding role and runs [`delete`].
pub async fn run(action: Action) -> anyhow::Result<()> {
    let Action::Delete {
        slug,
        yes,
        batch,
        database_url,
        password_file,
    } = action;
    anyhow::ensure!(
        yes,
        "offboarding deletes every row of {slug} and cannot be undone: add --yes"
    );
    let role = offboarding_role(&AccessModel::load())?;
    let mut options: PgConnectOptions = database_url.parse().context("--database-url")?;
    if let Some(path) = password_file {
        let password = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        options = options.password(password.trim());
    }
    let mut conn = PgConnection::connect_with(&options.application_name("xtask-tenant-delete"))
        .await
        .context("connecting")?;
    // Quoting happens server-side.
    let set_role: String = sqlx::query_scalar("SELECT format('SET ROLE %I', $1::text)")
        .bind(&role)
        .fetch_one(&mut conn)
        .await?;
    sqlx::raw_sql(&set_role)
        .execute(&mut conn)
        .await
        .with_context(|| format!("this login may not act as {role}"))?;
    let deleted = delete(&mut conn, &slug, batch).await?;
    conn.close().await.ok();
    println!("tenant {slug} offboarded as {role}; rows deleted:");
    for (relation, n) in &deleted {
        println!("  {relation:<32} {n}");
    }
    Ok(())
}
