//! `pipeline loader`: the sidecar that writes validated batches to `raw.events`.
//!
//! It listens on loopback only (it refuses any other address), so only containers of
//! its own pod reach it. It trusts nothing ingest says: it verifies the caller's
//! token again, re-parses the batch with the same rules, and inserts in a transaction
//! whose tenant comes from that token. Row-level security (`WITH CHECK`) refuses any
//! row of another tenant, so even a bug here cannot write across tenants.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{FromRef, State},
    routing::post,
};
use domain::{Event, Limits};
use platform::{
    admin::Check,
    auth::{Bearer, TokenVerifier, scope},
    config,
    db::DbConfig,
    http::{HttpLimits, HttpService, Problem},
};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{BatchOutcome, batch_problem, limits_from_env};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub db: DbConfig,
    pub request_timeout: Duration,
    /// Also the body limit: [`Limits::max_batch_bytes`], the largest batch ingest sends.
    pub limits: Limits,
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "127.0.0.1:8083")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9083")?,
            db: DbConfig::from_env("beacon_loader", "loader")?,
            request_timeout: config::millis("BEACON_REQUEST_TIMEOUT_MS", 20_000)?,
            limits: limits_from_env()?,
        })
    }
}

#[derive(Clone, Debug)]
struct AppState {
    verifier: Arc<TokenVerifier>,
    pool: PgPool,
    limits: Limits,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

pub fn router(pool: PgPool, verifier: Arc<TokenVerifier>, config: &Config) -> Router {
    // What ingest's readiness asks (this port is loopback only: its pod-mate): "ok"
    // while a batch can be stored, i.e. PostgreSQL answers; 503 otherwise.
    let database = Check::postgres(pool.clone());
    let healthz = axum::routing::get(move || {
        let database = database.clone();
        async move {
            match database.probe().await {
                Ok(()) => Ok("ok"),
                Err(e) => {
                    tracing::warn!(error = %e, "loader cannot reach PostgreSQL");
                    Err(Problem::unavailable())
                }
            }
        }
    });
    let state = AppState {
        verifier,
        pool,
        limits: config.limits,
    };
    let router = Router::new()
        .route("/v1/batches", post(post_batch))
        .route("/healthz", healthz)
        .with_state(state);
    // The body limit is derived, never set on its own: a batch ingest accepted is
    // never too large here.
    let http = HttpLimits {
        body_bytes: config.limits.max_batch_bytes,
        request_timeout: config.request_timeout,
    };
    platform::http::with_standard_layers(router, http)
}

#[tracing::instrument(skip_all, fields(tenant = %claims.tenant))]
async fn post_batch(
    State(state): State<AppState>,
    Bearer(claims): Bearer,
    body: Bytes,
) -> Result<Json<BatchOutcome>, Problem> {
    claims.require(scope::EVENTS_WRITE)?;
    let events = domain::parse_ndjson(&body, &state.limits, time::OffsetDateTime::now_utc())
        .map_err(|e| batch_problem(&e))?;
    let accepted = insert_batch(&state.pool, claims.tenant, &events)
        .await
        .map_err(|e| match &e {
            // The tenant was offboarded (raw.enqueue_batch): the token is dead, retrying
            // cannot help.
            sqlx::Error::Database(d) if d.code().as_deref() == Some("42501") => {
                tracing::info!("batch refused: the tenant is offboarded");
                Problem::unauthorized()
            }
            _ => {
                if is_missing_partition(&e) {
                    // Only if the retention CronJob has not run for longer than its horizon
                    // (BEACON_PARTITIONS_AHEAD_MONTHS): nothing is stored, the client retries.
                    metrics::counter!(crate::metrics::LOADER_MISSING_PARTITION).increment(1);
                    tracing::error!(error = %e, "no raw.events partition for an accepted event: run `pipeline retention`");
                } else {
                    tracing::error!(error = %e, "batch insert failed");
                }
                Problem::unavailable().detail("the batch was not stored; retry it")
            }
        })?;
    let outcome = BatchOutcome {
        accepted,
        duplicates: events.len() as u64 - accepted,
    };
    metrics::counter!(crate::metrics::LOADER_EVENTS_STORED).increment(outcome.accepted);
    tracing::info!(
        accepted = outcome.accepted,
        duplicates = outcome.duplicates,
        "batch committed"
    );
    Ok(Json(outcome))
}

/// PostgreSQL's answer when a row's `occurred_at` has no partition of `raw.events`.
fn is_missing_partition(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d)
        if d.code().as_deref() == Some("23514") && d.message().starts_with("no partition of relation"))
}

/// Inserts a batch in one statement and one transaction (all or nothing). Re-sent
/// events are skipped by `ON CONFLICT DO NOTHING`, which needs only INSERT. It names no
/// conflict target on purpose: a target makes PostgreSQL require SELECT on its columns,
/// and the loader must never read. The primary key (tenant_id, event_id, occurred_at)
/// is the only unique constraint, so it is the one that dedupes: `raw.events` is
/// partitioned by `occurred_at`, and a re-sent event carries its own time, so it meets
/// its original in the same partition. Returns how many rows were new.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "raw_events.insert"))]
pub async fn insert_batch(
    pool: &PgPool,
    tenant: Uuid,
    events: &[Event],
) -> Result<u64, sqlx::Error> {
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut at = Vec::with_capacity(n);
    let mut campaigns = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut users = Vec::with_capacity(n);
    let mut costs = Vec::with_capacity(n);
    let mut revenues = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut utm: [Vec<Option<&str>>; 5] = Default::default();
    for e in events {
        ids.push(e.event_id.as_str());
        types.push(e.event_type.as_str());
        at.push(e.occurred_at);
        campaigns.push(e.campaign.as_str());
        channels.push(e.channel.as_str());
        users.push(e.user_key.as_deref());
        costs.push(e.cost_micros);
        revenues.push(e.revenue_micros);
        currencies.push(e.currency.as_str());
        for (column, value) in utm.iter_mut().zip([
            &e.utm_source,
            &e.utm_medium,
            &e.utm_campaign,
            &e.utm_term,
            &e.utm_content,
        ]) {
            column.push(value.as_deref());
        }
    }
    let mut tx = platform::db::begin_for_tenant(pool, tenant).await?;
    let result = sqlx::query(
        "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, user_key,
                                 cost_micros, revenue_micros, currency,
                                 utm_source, utm_medium, utm_campaign, utm_term, utm_content)
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
                                  $8::bigint[], $9::bigint[], $10::text[],
                                  $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&types)
    .bind(&at)
    .bind(&campaigns)
    .bind(&channels)
    .bind(&users)
    .bind(&costs)
    .bind(&revenues)
    .bind(&currencies)
    .bind(&utm[0])
    .bind(&utm[1])
    .bind(&utm[2])
    .bind(&utm[3])
    .bind(&utm[4])
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(result.rows_affected())
}

/// Builds the bound loader service.
#[derive(Debug)]
pub struct App;

impl App {
    /// Binds the service; `verifier` checks callers' tokens (from the environment in
    /// [`crate::run_ingest`] and [`crate::run_loader`], a test's own in tests).
    pub async fn build(
        config: Config,
        verifier: Arc<TokenVerifier>,
    ) -> anyhow::Result<HttpService> {
        anyhow::ensure!(
            config.listen.ip().is_loopback(),
            "BEACON_LISTEN_ADDR: the loader listens on loopback only (it is a sidecar), refusing {}",
            config.listen
        );
        platform::metrics::register(&[crate::metrics::LOADER]);
        let pool = config.db.pool();
        let checks = vec![Check::postgres(pool.clone())];
        let router = router(pool, verifier, &config);
        HttpService::bind(
            "loader",
            config.listen,
            config.admin,
            checks,
            router,
            Duration::from_secs(25),
        )
        .await
    }
}
