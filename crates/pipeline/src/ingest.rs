//! `pipeline ingest`: the public event intake. No database credential, by design.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Body,
    extract::{FromRef, FromRequestParts, State},
    http::{HeaderMap, StatusCode, header, request::Parts},
    routing::post,
};
use domain::Limits;
use platform::{
    admin::Check,
    auth::{Bearer, Claims, TokenVerifier, scope},
    body::{BodyLimits, ByteBudget},
    config,
    http::{HttpLimits, HttpService, Problem},
    ratelimit::RateLimiter,
};
use uuid::Uuid;

use crate::{BatchOutcome, CSV, NDJSON, batch_problem, limits_from_env};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// The loader sidecar: must be a loopback address.
    pub loader_url: String,
    pub http: HttpLimits,
    pub limits: Limits,
    pub loader_timeout: Duration,
    /// The largest body after `Content-Encoding: gzip` is undone (gzip bombs).
    pub max_decoded_bytes: usize,
    /// Bytes all in-flight requests together may hold: bodies as sent and decoded,
    /// then the batches being forwarded. Must fit one request of each maximum.
    pub memory_budget_bytes: usize,
    /// How long a request waits for the budget before it is answered 503.
    pub budget_wait: Duration,
    /// Per-tenant requests per second (0 disables) and burst.
    pub rate_per_second: f64,
    pub rate_burst: u32,
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "0.0.0.0:8082")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9082")?,
            loader_url: config::or("BEACON_LOADER_URL", "http://127.0.0.1:8083".to_owned())?,
            http: HttpLimits {
                body_bytes: config::or("BEACON_MAX_BODY_BYTES", 8 * 1024 * 1024)?,
                request_timeout: config::millis(
                    "BEACON_REQUEST_TIMEOUT_MS",
                    crate::default_timeout().as_millis() as u64,
                )?,
            },
            limits: limits_from_env()?,
            loader_timeout: config::millis("BEACON_LOADER_TIMEOUT_MS", 20_000)?,
            max_decoded_bytes: config::or("BEACON_MAX_DECODED_BODY_BYTES", 16 * 1024 * 1024)?,
            memory_budget_bytes: config::or("BEACON_INGEST_MEMORY_BUDGET_BYTES", 32 * 1024 * 1024)?,
            budget_wait: config::millis("BEACON_INGEST_BUDGET_WAIT_MS", 2_000)?,
            rate_per_second: config::or("BEACON_RATE_LIMIT_PER_SEC", 20.0)?,
            rate_burst: config::or("BEACON_RATE_LIMIT_BURST", 40)?,
        })
    }
}

#[derive(Clone, Debug)]
struct AppState {
    verifier: Arc<TokenVerifier>,
    loader: reqwest::Client,
    batches_url: String,
    limits: Limits,
    body_limits: BodyLimits,
    budget: ByteBudget,
    limiter: Arc<RateLimiter<Uuid>>,
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or("");
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
        || rest.starts_with("[::1]")
}

/// The ingest router; tested without a socket.
pub fn router(config: &Config, verifier: Arc<TokenVerifier>) -> anyhow::Result<Router> {
    anyhow::ensure!(
        is_loopback_url(&config.loader_url),
        "BEACON_LOADER_URL must be an http:// loopback address (the loader is a sidecar), got {}",
        config.loader_url
    );
    let body_limits = BodyLimits {
        max_sent: config.http.body_bytes,
        max_decoded: config.max_decoded_bytes,
    };
    // One request of every maximum must fit, or it could never be served.
    let one_request =
        (body_limits.max_sent + body_limits.max_decoded + 1).max(config.limits.max_batch_bytes);
    anyhow::ensure!(
        config.memory_budget_bytes >= one_request,
        "BEACON_INGEST_MEMORY_BUDGET_BYTES ({}) must hold one request of every maximum: \
         BEACON_MAX_BODY_BYTES + BEACON_MAX_DECODED_BODY_BYTES + 1, and \
         BEACON_MAX_BATCH_BYTES ({one_request} bytes)",
        config.memory_budget_bytes
    );
    let loader = reqwest::Client::builder()
        .timeout(config.loader_timeout)
        .no_proxy()
        .build()?;
    let state = AppState {
        verifier,
        loader,
        batches_url: format!("{}/v1/batches", config.loader_url.trim_end_matches('/')),
        limits: config.limits,
        body_limits,
        budget: ByteBudget::new(config.memory_budget_bytes, config.budget_wait),
        limiter: Arc::new(RateLimiter::new(config.rate_per_second, config.rate_burst)),
    };
    let router = Router::new()
        .route("/v1/events", post(post_events))
        .with_state(state);
    Ok(platform::http::with_standard_layers(router, config.http))
}

/// A caller allowed to write events: a verified token with `events:write`, within its
/// tenant's rate limit. Runs before the body is read, so a limited caller costs no
/// body buffering or parsing.
struct Writer(Claims);

impl FromRequestParts<AppState> for Writer {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Problem> {
        let Bearer(claims) = Bearer::from_request_parts(parts, state).await?;
        claims.require(scope::EVENTS_WRITE)?;
        if let Err(wait) = state.limiter.check(&claims.tenant) {
            metrics::counter!(crate::metrics::INGEST_RATE_LIMITED).increment(1);
            tracing::info!(tenant = %claims.tenant, "rate limited");
            return Err(Problem::too_many_requests(wait));
        }
        Ok(Self(claims))
    }
}

#[tracing::instrument(skip_all, fields(tenant = %claims.tenant, events = tracing::field::Empty))]
async fn post_events(
    State(state): State<AppState>,
    Writer(claims): Writer,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchOutcome>, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parse = if content_type.starts_with(NDJSON) {
        domain::parse_ndjson
    } else if content_type.starts_with(CSV) {
        domain::parse_csv
    } else {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .detail(format!("send {NDJSON} or {CSV} (with a header row)")));
    };
    // Every buffer below is paid for from the process-wide budget before it grows:
    // the body as sent and decoded, then the canonical batch until the loader answers.
    let mut lease = state.budget.lease();
    let body = platform::body::read_body(&headers, body, state.body_limits, &mut lease).await?;
    let events = parse(&body, &state.limits, time::OffsetDateTime::now_utc()).map_err(|e| {
        metrics::counter!(
            crate::metrics::INGEST_BATCHES_REJECTED,
            "reason" => crate::metrics::rejection_reason(&e),
        )
        .increment(1);
        batch_problem(&e)
    })?;
    drop(body);
    tracing::Span::current().record("events", events.len());
    let mut batch = domain::to_ndjson(&events);
    drop(events);
    // Exactly its size, so a batch within the limits always fits the budget.
    batch.shrink_to_fit();
    lease.resize(batch.capacity()).await?;
    let mut forward = platform::telemetry::current_context_headers();
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        forward.insert(header::AUTHORIZATION, auth.clone());
    }
    forward.insert(header::CONTENT_TYPE, NDJSON.parse().expect("static header"));
    let response = state
        .loader
        .post(&state.batches_url)
        .headers(forward)
        .body(batch)
        .send()
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "loader unreachable");
            loader_unavailable()
        })?;
    let status = response.status();
    if status.is_success() {
        let outcome: BatchOutcome = response.json().await.map_err(|e| {
            tracing::error!(error = %e, "bad loader answer");
            Problem::unavailable()
                .detail("the batch may not be stored; retry it (re-sent events are deduplicated)")
        })?;
        let tenant = claims.tenant.to_string();
        metrics::counter!(crate::metrics::INGEST_EVENTS_ACCEPTED, "tenant" => tenant.clone())
            .increment(outcome.accepted);
        metrics::counter!(crate::metrics::INGEST_EVENTS_DUPLICATE, "tenant" => tenant)
            .increment(outcome.duplicates);
        return Ok(Json(outcome));
    }
    tracing::warn!(status = status.as_u16(), "loader refused batch");
    Err(match status {
        StatusCode::UNAUTHORIZED => Problem::unauthorized(),
        StatusCode::BAD_REQUEST => Problem::new(
            StatusCode::BAD_REQUEST,
            "invalid-batch",
            "Invalid event batch",
        ),
        // Cannot happen while both read the same limits; if it does, retrying the
        // same batch cannot help, so the client must not be told to.
        StatusCode::PAYLOAD_TOO_LARGE => batch_problem(&domain::BatchError::TooLarge {
            max_bytes: state.limits.max_batch_bytes,
        }),
        _ => loader_unavailable(),
    })
}

/// 503 when the loader failed: transient, so the client is told when to retry
/// (`Retry-After`, as every 503).
fn loader_unavailable() -> Problem {
    Problem::unavailable().detail("the batch was not stored; retry it")
}

/// Builds the bound ingest service.
#[derive(Debug)]
pub struct App;

impl App {
    /// Binds the service; `verifier` checks callers' tokens (from the environment in
    /// [`crate::run_ingest`] and [`crate::run_loader`], a test's own in tests).
    pub async fn build(
        config: Config,
        verifier: Arc<TokenVerifier>,
    ) -> anyhow::Result<HttpService> {
        platform::metrics::register(&[crate::metrics::INGEST]);
        let router = router(&config, verifier)?;
        let loader_ready = {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(1))
                .no_proxy()
                .build()?;
            // The loader answers "ok" only while it reaches PostgreSQL: a batch sent
            // while the database is down could only be refused.
            let url = format!("{}/healthz", config.loader_url.trim_end_matches('/'));
            Check::new("loader", move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => Ok(()),
                        Ok(r) => Err(format!("loader answered {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
        };
        HttpService::bind(
            "ingest",
            config.listen,
            config.admin,
            vec![loader_ready],
            router,
            Duration::from_secs(25),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::is_loopback_url;

    #[test]
    fn loader_must_be_on_loopback() {
        assert!(is_loopback_url("http://127.0.0.1:8083"));
        assert!(is_loopback_url("http://localhost:8083"));
        assert!(is_loopback_url("http://[::1]:8083"));
        assert!(!is_loopback_url("http://loader.beacon-pipeline.svc:8083"));
        assert!(!is_loopback_url("http://10.0.0.5:8083"));
        assert!(!is_loopback_url("https://127.0.0.1.evil.example:8083"));
    }
}
