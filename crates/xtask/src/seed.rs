//! Demo data: tenants, users, API keys (written as the owner, like an operator would),
//! and realistic events generated from a fixed seed, pushed through the real ingest path.

use domain::{Currency, Event, EventType};
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct DemoTenant {
    pub id: Uuid,
    pub slug: &'static str,
    pub name: &'static str,
    pub currency: &'static str,
    pub admin_email: String,
    pub viewer_email: String,
    pub password: String,
}

pub fn demo_tenants(password: &str) -> [DemoTenant; 2] {
    let t = |slug: &'static str, name, currency| DemoTenant {
        id: Uuid::new_v5(
            &Uuid::NAMESPACE_DNS,
            format!("{slug}.beacon.local").as_bytes(),
        ),
        slug,
        name,
        currency,
        admin_email: format!("admin@{slug}.example"),
        viewer_email: format!("viewer@{slug}.example"),
        password: password.to_owned(),
    };
    [
        t("acme", "Acme Outdoor", "EUR"),
        t("globex", "Globex Retail", "USD"),
    ]
}

/// Creates (or keeps) a tenant, its admin and viewer, and a fresh ingest API key.
/// Runs on a connection of `beacon_migrator` (acting as the owner). Returns the key.
pub async fn create_tenant(owner: &mut PgConnection, t: &DemoTenant) -> anyhow::Result<String> {
    ensure_tenant(owner, t).await?;
    new_ingest_key(owner, t).await
}

/// Creates (or keeps) a tenant with its admin and viewer (passwords set to `t`'s).
pub async fn ensure_tenant(owner: &mut PgConnection, t: &DemoTenant) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO app.tenants (id, slug, name, currency) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING")
        .bind(t.id)
        .bind(t.slug)
        .bind(t.name)
        .bind(t.currency)
        .execute(&mut *owner)
        .await?;
    let hash = api::credentials::hash_password(&t.password)?;
    for (email, role) in [(&t.admin_email, "admin"), (&t.viewer_email, "viewer")] {
        sqlx::query(
            "INSERT INTO app.users (id, tenant_id, email, display_name, password_hash, role) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (email) DO UPDATE SET password_hash = excluded.password_hash",
        )
        .bind(Uuid::new_v4())
        .bind(t.id)
        .bind(email)
        .bind(format!("{} {role}", t.name))
        .bind(&hash)
        .bind(role)
        .execute(&mut *owner)
        .await?;
    }
    Ok(())
}

async fn new_ingest_key(owner: &mut PgConnection, t: &DemoTenant) -> anyhow::Result<String> {
    let key = api::credentials::new_api_key();
    sqlx::query(
        "INSERT INTO app.api_keys (id, tenant_id, name, prefix, secret_hash, scopes) VALUES ($1, $2, 'demo ingest', $3, $4, ARRAY['events:write'])",
    )
    .bind(Uuid::new_v4())
    .bind(t.id)
    .bind(&key.prefix)
    .bind(&key.secret_hash)
    .execute(&mut *owner)
    .await?;
    Ok(key.token)
}

/// The tenant's demo ingest key, kept in `file` (mode 0600): reused while that key is
/// still an active key of the tenant in the database, else a new one is created and
/// written there. So `cargo xtask up` does not add a key on every run.
pub async fn demo_ingest_key(
    owner: &mut PgConnection,
    t: &DemoTenant,
    file: &std::path::Path,
) -> anyhow::Result<String> {
    if let Ok(saved) = std::fs::read_to_string(file)
        && let Some((prefix, hash)) = api::credentials::parse_api_key(saved.trim())
    {
        let active: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT FROM app.api_keys WHERE tenant_id = $1 AND prefix = $2
                            AND secret_hash = $3 AND revoked_at IS NULL)",
        )
        .bind(t.id)
        .bind(prefix)
        .bind(hash)
        .fetch_one(&mut *owner)
        .await?;
        if active {
            return Ok(saved.trim().to_owned());
        }
    }
    let key = new_ingest_key(owner, t).await?;
    crate::private_file::replace(file, key.as_bytes())?;
    Ok(key)
}

const CAMPAIGNS: [&str; 4] = [
    "Spring Launch",
    "Brand Search",
    "Retargeting",
    "Newsletter Promo",
];
const CHANNELS: [&str; 4] = ["search", "social", "display", "email"];

/// `n` realistic events over the last `days` days ending `now`, deterministic for a
/// seed: impressions with CPM cost, clicks with CPC cost, conversions with revenue
/// from users who clicked, and daily spend adjustments.
pub fn generate_events(
    seed: u64,
    n: usize,
    days: i64,
    currency: &str,
    now: OffsetDateTime,
) -> Vec<Event> {
    let mut rng = StdRng::seed_from_u64(seed);
    let currency = Currency::parse(currency).expect("valid currency");
    let mut events = Vec::with_capacity(n);
    for i in 0..n {
        let campaign = CAMPAIGNS[rng.random_range(0..CAMPAIGNS.len())];
        let channel = CHANNELS[rng.random_range(0..CHANNELS.len())];
        let roll: f64 = rng.random();
        let (event_type, cost, revenue) = if roll < 0.80 {
            (EventType::Impression, rng.random_range(1_000..12_000), 0)
        } else if roll < 0.96 {
            (EventType::Click, rng.random_range(150_000..1_800_000), 0)
        } else if roll < 0.99 {
            (
                EventType::Conversion,
                0,
                rng.random_range(15_000_000..180_000_000),
            )
        } else {
            (EventType::Spend, rng.random_range(5_000_000..60_000_000), 0)
        };
        let age = Duration::seconds(rng.random_range(60..days * 86_400));
        let user = format!("u{:06x}", rng.random_range(0..5_000u32));
        events.push(Event {
            event_id: format!("seed-{seed}-{i}"),
            event_type,
            occurred_at: (now - age).replace_nanosecond(0).unwrap_or(now),
            campaign: campaign.to_owned(),
            channel: channel.to_owned(),
            user_key: Some(user),
            cost_micros: cost,
            revenue_micros: revenue,
            currency,
            utm_source: Some(channel.to_owned()),
            utm_medium: Some(if channel == "search" { "cpc" } else { "paid" }.to_owned()),
            utm_campaign: Some(campaign.to_lowercase().replace(' ', "-")),
            utm_term: None,
            utm_content: None,
        });
    }
    events
}

/// Trades an API key for an ingest token at the API.
pub async fn ingest_token(
    client: &reqwest::Client,
    api_url: &str,
    api_key: &str,
) -> anyhow::Result<String> {
    let r = client
        .post(format!("{api_url}/v1/auth/token"))
        .json(&serde_json::json!({ "grant_type": "client_credentials", "client_secret": api_key }))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "token request failed: {}",
        r.status()
    );
    let body: serde_json::Value = r.json().await?;
    body["access_token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no access_token in answer"))
}

/// Pushes events through ingest in batches; returns (accepted, duplicates).
pub async fn push(
    client: &reqwest::Client,
    ingest_url: &str,
    token: &str,
    events: &[Event],
    batch: usize,
) -> anyhow::Result<(u64, u64)> {
    let (mut accepted, mut duplicates) = (0, 0);
    for chunk in events.chunks(batch) {
        let r = client
            .post(format!("{ingest_url}/v1/events"))
            .bearer_auth(token)
            .header("content-type", "application/x-ndjson")
            .body(domain::to_ndjson(chunk))
            .send()
            .await?;
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success(),
            "ingest refused a batch: {status} {body}"
        );
        accepted += body["accepted"].as_u64().unwrap_or(0);
        duplicates += body["duplicates"].as_u64().unwrap_or(0);
    }
    Ok((accepted, duplicates))
}

/// Seeds the demo tenants into a running Beacon (the Tilt "seed" button): tenants and
/// keys as the owner over `owner`, then 4,000 events per tenant through `ingest`.
pub async fn seed_running(
    owner: &mut PgConnection,
    api: &str,
    ingest: &str,
    demo_password: &str,
) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()?;
    let tenants = demo_tenants(demo_password);
    for (i, t) in tenants.iter().enumerate() {
        let key = create_tenant(owner, t).await?;
        let token = ingest_token(&client, api, &key).await?;
        let events = generate_events(
            42 + i as u64,
            4_000,
            60,
            t.currency,
            OffsetDateTime::now_utc(),
        );
        let (accepted, duplicates) = push(&client, ingest, &token, &events, 500).await?;
        println!(
            "  {}: {accepted} events stored, {duplicates} already present",
            t.name
        );
        println!("    log in as {} or {}", t.admin_email, t.viewer_email);
    }
    Ok(())
}
