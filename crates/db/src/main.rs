//! `beacon-db`: the database set-up steps as a small binary for the Kubernetes Jobs.
//!
//! - `beacon-db bootstrap`: as the PostgreSQL administrator, creates the `beacon`
//!   database if missing, the roles (`roles.sql`), restricts the database and sets each
//!   login role's password from the file named by `<ROLE>_PASSWORD_FILE`
//!   (e.g. `BEACON_API_PASSWORD_FILE`).
//! - `beacon-db migrate`: as `beacon_migrator`, runs the migrations.
//! - `beacon-db analyst add NAME` / `analyst remove NAME`: as the PostgreSQL
//!   administrator, creates (or re-asserts, with the password from the file named by
//!   `ANALYST_PASSWORD_FILE`) or removes the person's login `analyst_NAME` in the
//!   analysts' group role (the Jobs `cargo xtask analyst add|remove NAME --kube` renders).
//!
//! Connection: `DATABASE_HOST`, `DATABASE_PORT`, `DATABASE_NAME`, `DATABASE_USER`,
//! `DATABASE_SSLMODE`, `DATABASE_SSLROOTCERT` (the CA file for `verify-full`) and the
//! password from the file named by `DATABASE_PASSWORD_FILE`.
//! A password in a plain variable is refused. PostgreSQL may still be starting: the
//! first connection is retried for up to a minute.
#![allow(clippy::print_stdout, reason = "a one-shot Job reports on stdout")]

use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgSslMode},
};

#[derive(Parser)]
#[command(name = "beacon-db", about = "Beacon database bootstrap and migrations")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// As an administrator: database, roles, privileges, login passwords from files.
    Bootstrap,
    /// As beacon_migrator: run pending migrations.
    Migrate,
    /// As an administrator: a person's login in the analysts' group role.
    Analyst {
        #[command(subcommand)]
        action: AnalystCmd,
    },
}

#[derive(Subcommand)]
enum AnalystCmd {
    /// Create (or re-assert) `analyst_NAME`, password from ANALYST_PASSWORD_FILE.
    Add { name: String },
    /// Remove `analyst_NAME`: no new session, open ones ended, role dropped.
    Remove { name: String },
}

fn var(name: &str, default: Option<&str>) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => default
            .map(str::to_owned)
            .with_context(|| format!("{name} must be set")),
    }
}

fn read_secret(var_name: &str) -> anyhow::Result<String> {
    let path = var(var_name, None)?;
    let secret = std::fs::read_to_string(&path)
        .with_context(|| format!("{var_name}: cannot read {path}"))?;
    let secret = secret.trim().to_owned();
    anyhow::ensure!(!secret.is_empty(), "{var_name}: {path} is empty");
    Ok(secret)
}

/// Connection options from the environment, for `database`.
fn options(default_user: &str, database: &str) -> anyhow::Result<PgConnectOptions> {
    anyhow::ensure!(
        std::env::var_os("DATABASE_PASSWORD").is_none(),
        "DATABASE_PASSWORD is refused: put the password in a file named by DATABASE_PASSWORD_FILE"
    );
    let ssl: PgSslMode = var("DATABASE_SSLMODE", Some("prefer"))?
        .parse()
        .context("DATABASE_SSLMODE")?;
    let mut options = PgConnectOptions::new();
    match var("DATABASE_SSLROOTCERT", None) {
        Ok(ca) => options = options.ssl_root_cert(ca),
        Err(_) => anyhow::ensure!(
            !matches!(ssl, PgSslMode::VerifyCa | PgSslMode::VerifyFull),
            "DATABASE_SSLROOTCERT must name the CA file with DATABASE_SSLMODE verify-ca or verify-full"
        ),
    }
    Ok(options
        .host(&var("DATABASE_HOST", Some("127.0.0.1"))?)
        .port(
            var("DATABASE_PORT", Some("5432"))?
                .parse()
                .context("DATABASE_PORT")?,
        )
        .username(&var("DATABASE_USER", Some(default_user))?)
        .password(&read_secret("DATABASE_PASSWORD_FILE")?)
        .database(database)
        .ssl_mode(ssl)
        .application_name("beacon-db"))
}

async fn connect_with_retry(options: &PgConnectOptions) -> anyhow::Result<PgConnection> {
    let mut last = None;
    for _ in 0..30 {
        match PgConnection::connect_with(options).await {
            Ok(c) => return Ok(c),
            Err(e) => {
                println!("waiting for PostgreSQL: {e}");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no attempt"), Into::into))
}

async fn bootstrap() -> anyhow::Result<()> {
    let database = var("DATABASE_NAME", Some("beacon"))?;
    // Every password first: a missing file fails before anything changes.
    let mut passwords = Vec::new();
    for role in db::LOGIN_ROLES {
        passwords.push((
            role,
            read_secret(&format!("{}_PASSWORD_FILE", role.to_uppercase()))?,
        ));
    }
    let mut admin = connect_with_retry(&options("postgres", "postgres")?).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(&database)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let sql: String = sqlx::query_scalar("SELECT format('CREATE DATABASE %I', $1::text)")
            .bind(&database)
            .fetch_one(&mut admin)
            .await?;
        sqlx::raw_sql(&sql).execute(&mut admin).await?;
        println!("created database {database}");
    }
    admin.close().await?;
    let pool = PgPool::connect_with(options("postgres", &database)?).await?;
    db::bootstrap_roles(&pool).await?;
    db::prepare_database(&pool, &database).await?;
    for (role, password) in &passwords {
        db::set_password(&pool, role, password).await?;
    }
    println!("roles, privileges and passwords in place on {database}");
    Ok(())
}

async fn migrate() -> anyhow::Result<()> {
    let database = var("DATABASE_NAME", Some("beacon"))?;
    let options = options(db::MIGRATOR_ROLE, &database)?;
    connect_with_retry(&options).await?.close().await?;
    db::migrate(options).await?;
    println!("migrations applied to {database}");
    Ok(())
}

/// `beacon-db analyst add|remove NAME` (login `analyst_NAME`, as `cargo xtask analyst`).
async fn analyst(action: AnalystCmd) -> anyhow::Result<()> {
    let database = var("DATABASE_NAME", Some("beacon"))?;
    let (name, password) = match &action {
        AnalystCmd::Add { name } => (name, Some(read_secret("ANALYST_PASSWORD_FILE")?)),
        AnalystCmd::Remove { name } => (name, None),
    };
    db::check_login_name(name)?;
    let login = db::analyst_login(name);
    let options = options("postgres", &database)?;
    connect_with_retry(&options).await?.close().await?;
    let admin = PgPool::connect_with(options).await?;
    match password {
        Some(password) => {
            db::add_member(&admin, db::ANALYST_ROLE, &login, &password).await?;
            println!(
                "{login} can log in to {database} as a member of {}",
                db::ANALYST_ROLE
            );
        }
        None if db::remove_member(&admin, db::ANALYST_ROLE, &login).await? => {
            println!("{login} removed: no session left, cannot log in");
        }
        None => println!("{login} does not exist: nothing to remove"),
    }
    admin.close().await;
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Bootstrap => bootstrap().await,
        Cmd::Migrate => migrate().await,
        Cmd::Analyst { action } => analyst(action).await,
    }
}
