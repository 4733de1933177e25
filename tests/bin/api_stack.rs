//! Test-only: starts every Beacon service in this process against a fresh database on
//! the PostgreSQL at `DATABASE_URL`, seeds two demo tenants with events through the
//! real ingest path, runs the transform, and prints one JSON line with the URLs, the
//! certificate directory, the first tenant's demo logins and fresh tokens. Runs until
//! stdin closes or SIGINT/SIGTERM, then drops its database. Used through
//! `scripts/lib/api-stack.sh` (schemathesis, the OpenAPI validator, the generated-client
//! test) and by `cargo xtask bench api`.
#![allow(
    clippy::print_stdout,
    reason = "the JSON line on stdout is this tool's output"
)]

use beacon_e2e::Stack;
use serde_json::json;
use sqlx::{PgPool, postgres::PgConnectOptions};
use xtask::seed::{create_tenant, demo_tenants, generate_events, ingest_token, push};

async fn token(stack: &Stack, email: &str, password: &str) -> anyhow::Result<String> {
    let r = stack
        .client
        .post(format!("{}/v1/auth/token", stack.api_url))
        .json(&json!({ "grant_type": "password", "username": email, "password": password }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "login failed: {}", r.status());
    let body: serde_json::Value = r.json().await?;
    Ok(body["access_token"].as_str().unwrap_or_default().to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let server: PgConnectOptions = url.parse()?;
    let name = format!("beacon_stack_{}", std::process::id());
    let root = PgPool::connect_with(server.clone()).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
        .execute(&root)
        .await?;
    let admin = PgPool::connect_with(server.clone().database(&name)).await?;
    let result = run(admin.clone()).await;
    admin.close().await;
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&root)
        .await?;
    result
}

async fn run(admin: PgPool) -> anyhow::Result<()> {
    let stack = Stack::start(admin).await?;
    let password = "stack-password-1";
    let tenants = demo_tenants(password);
    let mut owner = stack.owner().await;
    let now = time::OffsetDateTime::now_utc();
    let mut pushed = 0;
    for (i, t) in tenants.iter().enumerate() {
        let key = create_tenant(&mut owner, t).await?;
        let ingest = ingest_token(&stack.client, &stack.api_url, &key).await?;
        let events = generate_events(100 + i as u64, 3_000, 60, t.currency, now);
        push(&stack.client, &stack.ingest_url, &ingest, &events, 500).await?;
        pushed += events.len() as i64;
    }
    let processed = stack.transform().await.events;
    anyhow::ensure!(
        processed == pushed,
        "transform processed {processed} of {pushed} events"
    );
    let t = &tenants[0];
    let info = json!({
        "api_url": stack.api_url,
        "analytics_addr": stack.analytics_addr,
        "cert_dir": stack.certs.path(),
        "tenant_id": t.id,
        "currency": t.currency,
        "admin_email": t.admin_email,
        "viewer_email": t.viewer_email,
        "password": password,
        "admin_token": token(&stack, &t.admin_email, password).await?,
        "viewer_token": token(&stack, &t.viewer_email, password).await?,
    });
    println!("{info}");
    let stdin_closed = tokio::task::spawn_blocking(|| {
        use std::io::Read as _;
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    drop(stack);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    Ok(())
}
