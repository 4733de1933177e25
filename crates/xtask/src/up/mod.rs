//! `cargo xtask up`: the whole product on a laptop, no cluster needed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use platform::shutdown::Shutdown;
use rand::{Rng, distr::Alphanumeric};
use sqlx::{Connection, PgConnection, PgPool};

mod postgres;
mod services;

pub use postgres::{
    Cluster, LocalPg, Postgres, ServerSecurity, THROWAWAY_PORT, WORKSPACE_DATABASE_URL,
};
pub use services::{Planned, SERVICES, scaffolded};
use services::{first_exit, spawn, spawn_planned, wait_ready};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// The git-ignored `.dev/` of the workspace, or `BEACON_DEV_DIR` when set (tests use
/// their own): generated secrets, certificates and the throwaway PostgreSQL cluster.
pub fn dev_dir() -> PathBuf {
    std::env::var_os("BEACON_DEV_DIR").map_or_else(|| workspace_root().join(".dev"), PathBuf::from)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo build <args>` in the workspace; returns the executables it produced by target
/// name, wherever the target directory is (`CARGO_TARGET_DIR`, `build.target-dir`).
pub fn cargo_build(root: &Path, args: &[&str]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let out = std::process::Command::new(cargo())
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--message-format=json-render-diagnostics",
        ])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build {} failed",
        args.join(" ")
    );
    Ok(out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            Some((name, PathBuf::from(m["executable"].as_str()?)))
        })
        .collect())
}

/// The workspace's target directory as cargo resolves it (`CARGO_TARGET_DIR`,
/// `build.target-dir`, or `target/`), never assumed.
pub fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version=1"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata gave no target_directory")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The first executable file called `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// 32 random alphanumeric characters.
pub fn random_secret() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A generated secret file under .dev/secrets, created once and reused.
pub fn secret_file(name: &str) -> anyhow::Result<PathBuf> {
    let path = dev_dir().join("secrets").join(name);
    crate::private_file::create(&path, random_secret().as_bytes())?;
    Ok(path)
}

/// What a service reads to reach `database` on `pg` as `role`: the server, and the
/// role's password from its generated secret file.
pub fn database_env(
    pg: &Postgres,
    database: &str,
    role: &str,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    Ok(vec![
        ("DATABASE_HOST", pg.admin.get_host().to_owned()),
        ("DATABASE_PORT", pg.admin.get_port().to_string()),
        ("DATABASE_NAME", database.to_owned()),
        ("DATABASE_USER", role.to_owned()),
        (
            "DATABASE_PASSWORD_FILE",
            secret_file(&format!("{role}.password"))?
                .to_string_lossy()
                .into_owned(),
        ),
    ])
}

/// Creates the `beacon` database if needed, roles, passwords (from generated files)
/// and runs the migrations. Returns the admin pool on that database.
pub async fn migrate(pg: &Postgres, database: &str) -> anyhow::Result<PgPool> {
    let mut admin = PgConnection::connect_with(&pg.admin).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await?;
    }
    let pool = PgPool::connect_with(pg.admin.clone().database(database)).await?;
    db::bootstrap_roles(&pool).await?;
    db::prepare_database(&pool, database).await?;
    for role in db::LOGIN_ROLES {
        let password = std::fs::read_to_string(secret_file(&format!("{role}.password"))?)?;
        db::set_password(&pool, role, password.trim()).await?;
    }
    db::migrate(
        pg.admin
            .clone()
            .database(database)
            .username(db::MIGRATOR_ROLE),
    )
    .await?;
    println!("· database `{database}` migrated");
    Ok(pool)
}

/// Options of `cargo xtask up`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Only PostgreSQL: find or start it, migrate the `beacon` database, wait for Ctrl-C.
    #[arg(long)]
    pub database_only: bool,
    #[command(flatten)]
    pub pg: LocalPg,
}

pub async fn up(options: Options) -> anyhow::Result<()> {
    // From here on Ctrl-C (or SIGTERM) stops what this command started.
    let shutdown = Shutdown::new().on_signals();
    if options.database_only {
        println!("Beacon: PostgreSQL only");
    } else {
        println!("Beacon: starting everything locally");
    }
    let pg = Postgres::find_or_start_on(options.pg).await?;
    let result = if options.database_only {
        database_only(&pg, &shutdown).await
    } else {
        run(&workspace_root(), &pg, &shutdown).await
    };
    pg.stop();
    result
}

async fn database_only(pg: &Postgres, shutdown: &Shutdown) -> anyhow::Result<()> {
    migrate(pg, "beacon").await?.close().await;
    println!(
        "PostgreSQL is ready on {}:{} (user {}, database beacon; roles' passwords in {}).",
        pg.admin.get_host(),
        pg.admin.get_port(),
        pg.admin.get_username(),
        dev_dir().join("secrets").display()
    );
    println!(
        "Tests against it: DATABASE_URL=postgres://{}@{}:{}/postgres cargo test --workspace",
        pg.admin.get_username(),
        pg.admin.get_host(),
        pg.admin.get_port()
    );
    println!("Press Ctrl-C to stop.");
    shutdown.wait().await;
    println!("\nstopping…");
    Ok(())
}

async fn run(root: &Path, pg: &Postgres, shutdown: &Shutdown) -> anyhow::Result<()> {
    let admin = migrate(pg, "beacon").await?;
    let certs = dev_dir().join("certs");
    if !certs.join("ca.crt").exists() {
        crate::certs::generate(&certs)?;
        println!(
            "· development certificates and token keys in {}",
            certs.display()
        );
    }
    println!("· building the services");
    // The packages that have images, from the access model (one list of services).
    let model = platform::access::AccessModel::load();
    let packages = crate::access::images::cargo_packages(&model);
    let mut args: Vec<&str> = packages.iter().map(String::as_str).collect();
    args.push("--bins");
    let bins = cargo_build(root, &args)?;
    let bin = |name: &str| {
        bins.get(name)
            .cloned()
            .with_context(|| format!("cargo build made no `{name}` executable"))
    };
    let db_env = |role: &str| database_env(pg, "beacon", role);
    let c = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let jwt = ("BEACON_JWT_PUBLIC_KEY_FILE", c("jwt-public.pem"));
    let tls = |name: &str| {
        vec![
            ("BEACON_TLS_CERT_FILE", c(&format!("{name}.crt"))),
            ("BEACON_TLS_KEY_FILE", c(&format!("{name}.key"))),
            ("BEACON_TLS_CA_FILE", c("ca.crt")),
        ]
    };
    // One retention pass first, as the daily CronJob does in the cluster: raw.events'
    // partitions exist months ahead (a dev database kept for months keeps ingesting)
    // and what is past the retention goes.
    let mut retention = spawn(
        &bin("pipeline")?,
        &["retention"],
        "retention",
        &db_env("beacon_retention")?,
        9086,
    )?;
    let status = retention.child.wait().await?;
    anyhow::ensure!(status.success(), "the retention pass failed ({status})");
    let mut services = Vec::new();
    let mut env = db_env("beacon_analytics")?;
    env.extend(tls("analytics"));
    env.push(("BEACON_LISTEN_ADDR", "127.0.0.1:50051".into()));
    services.push(spawn(&bin("analytics")?, &[], "analytics", &env, 9085)?);
    let mut env = db_env("beacon_api")?;
    env.extend(tls("api"));
    env.extend([
        jwt.clone(),
        ("BEACON_JWT_SIGNING_KEY_FILE", c("jwt-signing.key")),
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8081".into()),
        ("BEACON_ANALYTICS_ADDR", "127.0.0.1:50051".into()),
        ("BEACON_ANALYTICS_SERVER_NAME", "analytics".into()),
        (
            "BEACON_SUBJECT_HASH_KEY_FILE",
            secret_file(crate::secrets::SUBJECT_HASH_KEY)?
                .display()
                .to_string(),
        ),
    ]);
    services.push(spawn(&bin("api")?, &[], "api", &env, 9081)?);
    let mut env = db_env("beacon_loader")?;
    env.extend([jwt.clone(), ("BEACON_LISTEN_ADDR", "127.0.0.1:8083".into())]);
    services.push(spawn(&bin("pipeline")?, &["loader"], "loader", &env, 9083)?);
    let env = vec![
        jwt.clone(),
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8082".into()),
        ("BEACON_LOADER_URL", "http://127.0.0.1:8083".into()),
    ];
    services.push(spawn(&bin("pipeline")?, &["ingest"], "ingest", &env, 9082)?);
    let mut env = db_env("beacon_transform")?;
    env.push(("BEACON_TRANSFORM_INTERVAL_MS", "2000".into()));
    services.push(spawn(
        &bin("pipeline")?,
        &["transform"],
        "transform",
        &env,
        9084,
    )?);
    let env = vec![
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8080".into()),
        ("BEACON_API_URL", "http://127.0.0.1:8081".into()),
        (
            "BEACON_SESSION_KEY_FILE",
            secret_file("dashboard-session.key")?.display().to_string(),
        ),
    ];
    services.push(spawn(&bin("dashboard")?, &[], "dashboard", &env, 9080)?);
    services.extend(spawn_planned(scaffolded(&model, &db_env, &tls)?, &bin)?);

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let outcome = async {
        wait_ready(&client, &services).await?;
        println!("· all services ready; seeding demo tenants through ingest");
        let password = std::fs::read_to_string(secret_file("demo-user.password")?)?;
        let tenants = crate::seed::demo_tenants(password.trim());
        let mut owner = PgConnection::connect_with(
            &admin
                .connect_options()
                .as_ref()
                .clone()
                .username(db::MIGRATOR_ROLE),
        )
        .await?;
        for (i, t) in tenants.iter().enumerate() {
            crate::seed::ensure_tenant(&mut owner, t).await?;
            let key_file = dev_dir().join(format!("secrets/{}-ingest.key", t.slug));
            let key = crate::seed::demo_ingest_key(&mut owner, t, &key_file).await?;
            let token = crate::seed::ingest_token(&client, "http://127.0.0.1:8081", &key).await?;
            let events = crate::seed::generate_events(
                42 + i as u64,
                4_000,
                60,
                t.currency,
                time::OffsetDateTime::now_utc(),
            );
            let (accepted, duplicates) =
                crate::seed::push(&client, "http://127.0.0.1:8082", &token, &events, 500).await?;
            println!(
                "  {}: {accepted} events stored, {duplicates} already present",
                t.name
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!();
        println!("Beacon is running:");
        println!("  dashboard  http://127.0.0.1:8080");
        println!("  api        http://127.0.0.1:8081   (POST /v1/auth/token, GET /v1/overview)");
        println!("  ingest     http://127.0.0.1:8082   (POST /v1/events)");
        println!("  admin      http://127.0.0.1:90{{80..85}}/readyz, /metrics");
        println!("Demo logins (password: {}):", password.trim());
        for t in &tenants {
            println!(
                "  {:<14} admin {}   viewer {}",
                t.name, t.admin_email, t.viewer_email
            );
        }
        println!("Press Ctrl-C to stop.");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &outcome {
        eprintln!("error: {e:#}");
    } else {
        tokio::select! {
            () = shutdown.wait() => {}
            (name, status) = first_exit(&mut services) => eprintln!("{name} exited ({status}); stopping"),
        }
    }
    println!("\nstopping…");
    for s in &services {
        if let Some(pid) = s.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for s in &mut services {
        let _ = tokio::time::timeout(Duration::from_secs(15), s.child.wait()).await;
    }
    outcome
}
