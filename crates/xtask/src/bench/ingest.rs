//! `cargo xtask bench ingest`: events/s through ingest → loader over HTTP (real release
//! processes, several concurrent clients) against `psql \copy` of the same rows into an
//! identical fresh table, then transform throughput, and the peak RSS of each process.

use std::{
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::{build_release, machine, peak_rss_kib};
use crate::up::{Postgres, database_env, dev_dir, free_port, migrate, workspace_root};

/// Runs `psql` (its `\copy` is the comparison).
pub const TOOLS: &[super::Tool] = &[("psql", "postgresql-client")];

#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Events to generate and load.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Concurrent HTTP clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Events per request.
    #[arg(long, default_value_t = 5_000)]
    pub batch: usize,
    /// Seed of the event generator.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
}

const DATABASE: &str = "beacon_bench";
const COLUMNS: &str = "tenant_id, event_id, event_type, occurred_at, campaign, channel, user_key, \
     cost_micros, revenue_micros, currency, utm_source, utm_medium, utm_campaign, utm_term, utm_content";

fn spawn(bin: &Path, role: &str, env: &[(&str, String)]) -> anyhow::Result<Child> {
    Command::new(bin)
        .arg(role)
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting pipeline {role}"))
}

async fn wait_ready(client: &reqwest::Client, admin_port: u16) -> anyhow::Result<()> {
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("service on admin port {admin_port} did not become ready")
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let root = workspace_root();
    println!("· building the release binary");
    let bin = build_release(&root, "pipeline")?;
    let pg = Postgres::find_or_start().await?;
    let result = bench(&opts, &bin, &pg).await;
    pg.stop();
    result
}

async fn bench(opts: &Options, bin: &Path, pg: &Postgres) -> anyhow::Result<()> {
    let machine = machine();
    // A fresh database, set up exactly like `cargo xtask migrate` does.
    let mut server = PgConnection::connect_with(&pg.admin).await?;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .execute(&mut server)
        .await?;
    server.close().await?;
    let admin = migrate(pg, DATABASE).await?;
    let server_version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await?;

    let dir = dev_dir().join("bench");
    let certs = dir.join("certs");
    crate::certs::generate(&certs)?;
    let read = |name: &str| std::fs::read(certs.join(name));
    let signer = api::credentials::TokenSigner::new(
        &read("jwt-signing.key")?,
        &read("jwt-public.pem")?,
        time::Duration::hours(2),
    )?;
    let tenant = Uuid::new_v5(&Uuid::NAMESPACE_DNS, b"bench.beacon.local");
    let (token, _) = signer.sign("key:bench".into(), tenant, "events:write")?;

    let db_env = |role: &str| database_env(pg, DATABASE, role);
    let jwt = (
        "BEACON_JWT_PUBLIC_KEY_FILE",
        certs.join("jwt-public.pem").to_string_lossy().into_owned(),
    );
    let [
        ingest_port,
        ingest_admin,
        loader_port,
        loader_admin,
        transform_admin,
    ] = [
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
        free_port()?,
    ];
    let mut env = db_env("beacon_loader")?;
    env.extend([
        jwt.clone(),
        ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{loader_port}")),
        ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{loader_admin}")),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "60000".into()),
    ]);
    let mut loader = spawn(bin, "loader", &env)?;
    let mut ingest = spawn(
        bin,
        "ingest",
        &[
            jwt,
            ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{ingest_port}")),
            ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{ingest_admin}")),
            (
                "BEACON_LOADER_URL",
                format!("http://127.0.0.1:{loader_port}"),
            ),
            ("BEACON_LOADER_TIMEOUT_MS", "60000".into()),
            // The benchmark measures throughput, not the per-tenant limit.
            ("BEACON_RATE_LIMIT_PER_SEC", "0".into()),
        ],
    )?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    wait_ready(&client, loader_admin).await?;
    wait_ready(&client, ingest_admin).await?;

    println!("· generating {} events (seed {})", opts.events, opts.seed);
    let now = time::OffsetDateTime::now_utc();
    let events = crate::seed::generate_events(opts.seed, opts.events, 60, "EUR", now);
    let bodies: Arc<Vec<String>> =
        Arc::new(events.chunks(opts.batch).map(domain::to_ndjson).collect());
    let csv_path = dir.join("events.csv");
    write_copy_csv(&csv_path, tenant, &events)?;
    let n = events.len();
    drop(events);

    println!(
        "· HTTP: {} clients x {}-event NDJSON batches → ingest → loader",
        opts.clients, opts.batch
    );
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("http://127.0.0.1:{ingest_port}/v1/events");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..opts.clients {
        let (client, url, token, bodies, next) = (
            client.clone(),
            url.clone(),
            token.clone(),
            bodies.clone(),
            next.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(body) = bodies.get(i) else { break };
                let r = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("content-type", "application/x-ndjson")
                    .body(body.clone())
                    .send()
                    .await?;
                let status = r.status();
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                anyhow::ensure!(status.is_success(), "ingest answered {status}: {v}");
                accepted += v["accepted"].as_u64().unwrap_or(0);
            }
            anyhow::Ok(accepted)
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await??;
    }
    let http_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(accepted as usize == n, "accepted {accepted} of {n} events");
    println!("  {:.0} events/s in {http_secs:.1} s", n as f64 / http_secs);
    let ingest_rss = ingest.id().and_then(peak_rss_kib);
    let loader_rss = loader.id().and_then(peak_rss_kib);
    drop(bodies);

    println!("· psql \\copy of the same rows into an identical fresh table");
    // Same columns, checks, keys and indexes and, when raw.events is partitioned, the
    // same monthly partitions, so COPY pays the same partition routing as the loader's
    // INSERT. (An unpartitioned raw.events, as before the partitioning migration, gets
    // a plain copy: the same command measures both.)
    sqlx::raw_sql(
        "CREATE SCHEMA bench;
         DO $$
         DECLARE r record;
         BEGIN
             IF (SELECT relkind FROM pg_class WHERE oid = 'raw.events'::regclass) = 'p' THEN
                 CREATE TABLE bench.events (LIKE raw.events INCLUDING ALL) PARTITION BY RANGE (occurred_at);
             ELSE
                 CREATE TABLE bench.events (LIKE raw.events INCLUDING ALL);
             END IF;
             FOR r IN SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
                      FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                      WHERE i.inhparent = 'raw.events'::regclass
             LOOP
                 EXECUTE format('CREATE TABLE bench.%I PARTITION OF bench.events %s', r.relname, r.bound);
             END LOOP;
         END
         $$;",
    )
    .execute(&admin)
    .await?;
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .env("PGHOST", pg.admin.get_host())
        .env("PGPORT", pg.admin.get_port().to_string())
        .env("PGUSER", pg.admin.get_username())
        .env("PGDATABASE", DATABASE)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!(
            "\\copy bench.events ({COLUMNS}) FROM '{}' WITH (FORMAT csv)",
            csv_path.display()
        ))
        .status()
        .context("running psql")?;
    let copy_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(status.success(), "psql \\copy failed");
    let _ = std::fs::remove_file(&csv_path);
    let copied: i64 = sqlx::query_scalar("SELECT count(*) FROM bench.events")
        .fetch_one(&admin)
        .await?;
    anyhow::ensure!(copied as usize == n, "copied {copied} of {n}");
    println!("  {:.0} events/s in {copy_secs:.1} s", n as f64 / copy_secs);

    println!("· transform: raw → daily facts + attribution");
    let mut env = db_env("beacon_transform")?;
    env.extend([
        ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{transform_admin}")),
        ("BEACON_TRANSFORM_INTERVAL_MS", "200".into()),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "600000".into()),
    ]);
    let started = Instant::now();
    let mut transform = spawn(bin, "transform", &env)?;
    let mut transform_secs = None;
    for _ in 0..6_000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM raw.batches) + (SELECT count(*) FROM output.attribution_work)",
        )
        .fetch_one(&admin)
        .await?;
        if pending == 0 {
            transform_secs = Some(started.elapsed().as_secs_f64());
            break;
        }
    }
    let transform_secs = transform_secs.context("transform did not finish in 10 minutes")?;
    let transform_rss = transform.id().and_then(peak_rss_kib);
    let (facts, attribution): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM output.daily_campaign_facts), (SELECT count(*) FROM output.attribution)",
    )
    .fetch_one(&admin)
    .await?;
    for child in [&mut ingest, &mut loader, &mut transform] {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }

    let http_eps = n as f64 / http_secs;
    let copy_eps = n as f64 / copy_secs;
    println!();
    println!("## `cargo xtask bench ingest` ({})", now.date());
    println!();
    println!("Machine: {machine}; PostgreSQL {server_version}.");
    println!(
        "Run: {n} events (seed {}), {} clients, {} events per request.",
        opts.seed, opts.clients, opts.batch
    );
    println!();
    println!("| measure | result | target |");
    println!("| --- | --- | --- |");
    println!(
        "| HTTP ingest → loader → `raw.events` | {http_eps:.0} events/s ({http_secs:.1} s) | |"
    );
    println!(
        "| `psql \\copy` into an identical table | {copy_eps:.0} events/s ({copy_secs:.1} s) | |"
    );
    println!("| ratio HTTP / COPY | {:.2} | ≥ 0.5 |", http_eps / copy_eps);
    println!(
        "| transform (facts + attribution) | {:.0} events/s ({transform_secs:.1} s; {facts} fact rows, {attribution} attribution rows) | |",
        n as f64 / transform_secs
    );
    println!("| peak RSS ingest | {} | < 100 MiB |", mib(ingest_rss));
    println!("| peak RSS loader | {} | < 100 MiB |", mib(loader_rss));
    println!(
        "| peak RSS transform | {} | < 100 MiB |",
        mib(transform_rss)
    );
    Ok(())
}

/// The rows as `COPY … (FORMAT csv)` reads them: an empty unquoted cell is NULL.
fn write_copy_csv(path: &Path, tenant: Uuid, events: &[domain::Event]) -> anyhow::Result<()> {
    use time::format_description::well_known::Rfc3339;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_path(path)?;
    let tenant = tenant.to_string();
    for e in events {
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        w.write_record([
            tenant.clone(),
            e.event_id.clone(),
            e.event_type.as_str().to_owned(),
            e.occurred_at.format(&Rfc3339)?,
            e.campaign.clone(),
            e.channel.clone(),
            o(&e.user_key),
            e.cost_micros.to_string(),
            e.revenue_micros.to_string(),
            e.currency.to_string(),
            o(&e.utm_source),
            o(&e.utm_medium),
            o(&e.utm_campaign),
            o(&e.utm_term),
            o(&e.utm_content),
        ])?;
    }
    w.flush()?;
    Ok(())
}
