//! `cargo xtask up`: the whole product on a laptop, no cluster needed.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use rand::{Rng, distr::Alphanumeric};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::process::{Child, Command};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

pub fn dev_dir() -> PathBuf {
    workspace_root().join(".dev")
}

/// Where PostgreSQL is: DATABASE_URL, else a server on 127.0.0.1:5432, else a
/// throwaway cluster under .dev/pgdata from the `initdb`/`pg_ctl` on PATH.
#[derive(Debug)]
pub struct Postgres {
    pub admin: PgConnectOptions,
    throwaway: Option<PathBuf>,
}

impl Postgres {
    pub async fn find_or_start() -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let admin: PgConnectOptions = url
                .parse()
                .context("DATABASE_URL is not a valid postgres URL")?;
            PgConnection::connect_with(&admin)
                .await
                .context("cannot connect to DATABASE_URL")?;
            println!("· PostgreSQL: DATABASE_URL");
            return Ok(Self {
                admin,
                throwaway: None,
            });
        }
        let local: PgConnectOptions = "postgres://postgres@127.0.0.1:5432/postgres".parse()?;
        if PgConnection::connect_with(&local).await.is_ok() {
            println!("· PostgreSQL: 127.0.0.1:5432");
            return Ok(Self {
                admin: local,
                throwaway: None,
            });
        }
        let data = dev_dir().join("pgdata");
        if !data.join("PG_VERSION").exists() {
            println!(
                "· PostgreSQL: creating a throwaway cluster in {}",
                data.display()
            );
            let status = std::process::Command::new("initdb")
                .args(["-D", &data.to_string_lossy(), "-U", "postgres", "--auth=trust", "--no-instructions"])
                .stdout(Stdio::null())
                .status()
                .context("no PostgreSQL found and `initdb` is not on PATH: install PostgreSQL or set DATABASE_URL")?;
            anyhow::ensure!(status.success(), "initdb failed");
        }
        let status = std::process::Command::new("pg_ctl")
            .args([
                "-D",
                &data.to_string_lossy(),
                "-l",
                &dev_dir().join("postgres.log").to_string_lossy(),
                "-w",
            ])
            .args([
                "-o",
                &format!(
                    "-p 54329 -c listen_addresses=127.0.0.1 -k {}",
                    std::env::temp_dir().display()
                ),
            ])
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .context("`pg_ctl` is not on PATH")?;
        anyhow::ensure!(
            status.success(),
            "pg_ctl start failed; see .dev/postgres.log"
        );
        println!("· PostgreSQL: throwaway cluster on 127.0.0.1:54329");
        Ok(Self {
            admin: "postgres://postgres@127.0.0.1:54329/postgres".parse()?,
            throwaway: Some(data),
        })
    }

    pub fn stop(&self) {
        if let Some(data) = &self.throwaway {
            let _ = std::process::Command::new("pg_ctl")
                .args(["-D", &data.to_string_lossy(), "-m", "fast", "stop"])
                .stdout(Stdio::null())
                .status();
        }
    }
}

fn random_secret() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A generated secret file under .dev/secrets, created once and reused.
pub fn secret_file(name: &str) -> anyhow::Result<PathBuf> {
    let dir = dev_dir().join("secrets");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(name);
    if !path.exists() {
        std::fs::write(&path, random_secret())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(path)
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

struct Service {
    name: &'static str,
    child: Child,
    admin_port: u16,
}

fn spawn(
    bin: &Path,
    args: &[&str],
    name: &'static str,
    env: &[(&str, String)],
    admin_port: u16,
) -> anyhow::Result<Service> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("BEACON_LOG_FORMAT", "pretty")
        .env("BEACON_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("BEACON_SECURE_COOKIES", "false")
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info,sqlx=warn");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Service {
        name,
        child,
        admin_port,
    })
}

async fn wait_ready(client: &reqwest::Client, services: &[Service]) -> anyhow::Result<()> {
    for s in services {
        let url = format!("http://127.0.0.1:{}/readyz", s.admin_port);
        let mut ok = false;
        for _ in 0..120 {
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::ensure!(ok, "{} did not become ready ({url})", s.name);
    }
    Ok(())
}

pub async fn up() -> anyhow::Result<()> {
    let root = workspace_root();
    println!("Beacon: starting everything locally");
    let pg = Postgres::find_or_start().await?;
    let result = run(&root, &pg).await;
    pg.stop();
    result
}

async fn run(root: &Path, pg: &Postgres) -> anyhow::Result<()> {
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
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(root)
            .args(["build", "--quiet", "--bins"])
            .args(crate::access::images::cargo_packages(
                &platform::access::AccessModel::load(),
            ))
            .status()?;
    anyhow::ensure!(status.success(), "build failed");
    let bin = |name: &str| root.join("target/debug").join(name);
    let host = pg.admin.get_host().to_owned();
    let port = pg.admin.get_port().to_string();
    let db_env = |role: &str| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("DATABASE_HOST", host.clone()),
            ("DATABASE_PORT", port.clone()),
            ("DATABASE_NAME", "beacon".into()),
            ("DATABASE_USER", role.into()),
            (
                "DATABASE_PASSWORD_FILE",
                secret_file(&format!("{role}.password"))?
                    .to_string_lossy()
                    .into_owned(),
            ),
        ])
    };
    let c = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let jwt = ("BEACON_JWT_PUBLIC_KEY_FILE", c("jwt-public.pem"));
    let tls = |name: &str| {
        vec![
            ("BEACON_TLS_CERT_FILE", c(&format!("{name}.crt"))),
            ("BEACON_TLS_KEY_FILE", c(&format!("{name}.key"))),
            ("BEACON_TLS_CA_FILE", c("ca.crt")),
        ]
    };
    let mut services = Vec::new();
    let mut env = db_env("beacon_analytics")?;
    env.extend(tls("analytics"));
    env.push(("BEACON_LISTEN_ADDR", "127.0.0.1:50051".into()));
    services.push(spawn(&bin("analytics"), &[], "analytics", &env, 9085)?);
    let mut env = db_env("beacon_api")?;
    env.extend(tls("api"));
    env.extend([
        jwt.clone(),
        ("BEACON_JWT_SIGNING_KEY_FILE", c("jwt-signing.key")),
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8081".into()),
        ("BEACON_ANALYTICS_ADDR", "127.0.0.1:50051".into()),
        ("BEACON_ANALYTICS_SERVER_NAME", "analytics".into()),
    ]);
    services.push(spawn(&bin("api"), &[], "api", &env, 9081)?);
    let mut env = db_env("beacon_loader")?;
    env.extend([jwt.clone(), ("BEACON_LISTEN_ADDR", "127.0.0.1:8083".into())]);
    services.push(spawn(&bin("pipeline"), &["loader"], "loader", &env, 9083)?);
    let env = vec![
        jwt.clone(),
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8082".into()),
        ("BEACON_LOADER_URL", "http://127.0.0.1:8083".into()),
    ];
    services.push(spawn(&bin("pipeline"), &["ingest"], "ingest", &env, 9082)?);
    let mut env = db_env("beacon_transform")?;
    env.push(("BEACON_TRANSFORM_INTERVAL_MS", "2000".into()));
    services.push(spawn(
        &bin("pipeline"),
        &["transform"],
        "transform",
        &env,
        9084,
    )?);
    let env = vec![
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8080".into()),
        ("BEACON_API_URL", "http://127.0.0.1:8081".into()),
    ];
    services.push(spawn(&bin("dashboard"), &[], "dashboard", &env, 9080)?);

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
            let key = crate::seed::create_tenant(&mut owner, t).await?;
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
            _ = tokio::signal::ctrl_c() => {}
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

async fn first_exit(services: &mut [Service]) -> (&'static str, String) {
    loop {
        for s in services.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return (s.name, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
