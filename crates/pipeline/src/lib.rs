//! Beacon's event pipeline.
//!
//! - [`ingest`] faces the internet and parses hostile input, so it holds **no**
//!   database credential. It forwards each validated batch, with the caller's token,
//!   to the loader on 127.0.0.1 and answers 2xx only after the loader committed.
//! - [`loader`] is the sidecar in the same pod: it listens on loopback only, verifies
//!   the token again, and inserts as `beacon_loader` (INSERT on `raw.events`, nothing
//!   else), inside a transaction scoped to the token's tenant.
//! - [`transform`] aggregates `raw` into `output` incrementally, as `beacon_transform`.

pub mod ingest;
pub mod loader;
pub mod transform;

use std::time::Duration;

use domain::Limits;
use platform::{Shutdown, config};

/// `pipeline ingest`: configuration from the environment, build, serve until `shutdown`.
pub async fn run_ingest(shutdown: Shutdown) -> anyhow::Result<()> {
    let config = ingest::Config::from_env()?;
    ingest::App::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// `pipeline loader`: configuration from the environment, build, serve until `shutdown`.
pub async fn run_loader(shutdown: Shutdown) -> anyhow::Result<()> {
    let config = loader::Config::from_env()?;
    loader::App::build(config)
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// `pipeline transform`: the loop until `shutdown`, or one pass over what is pending
/// (`once`, for Jobs and tests).
pub async fn run_transform(shutdown: Shutdown, once: bool) -> anyhow::Result<()> {
    let config = transform::Config::from_env()?;
    if once {
        transform::run_once_with(&config.db.pool(), &config.settings)
            .await
            .map(|_| ())
    } else {
        transform::run(config, shutdown).await
    }
}

/// Batch limits, shared by ingest and loader so both enforce the same rules.
pub fn limits_from_env() -> config::Result<Limits> {
    let d = Limits::default();
    Ok(Limits {
        max_events: config::or("BEACON_MAX_EVENTS_PER_BATCH", d.max_events)?,
        max_string_len: config::or("BEACON_MAX_STRING_LEN", d.max_string_len)?,
        max_line_bytes: config::or("BEACON_MAX_LINE_BYTES", d.max_line_bytes)?,
        max_errors: config::or("BEACON_MAX_ERRORS_REPORTED", d.max_errors)?,
        max_past: time::Duration::days(config::or(
            "BEACON_MAX_EVENT_AGE_DAYS",
            d.max_past.whole_days(),
        )?),
        max_future: time::Duration::minutes(config::or(
            "BEACON_MAX_EVENT_FUTURE_MINUTES",
            d.max_future.whole_minutes(),
        )?),
        max_money_micros: d.max_money_micros,
    })
}

/// The answer of ingest and loader to an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    /// Events newly stored.
    pub accepted: u64,
    /// Events whose `event_id` was already stored for this tenant (not stored again).
    pub duplicates: u64,
}

pub const NDJSON: &str = "application/x-ndjson";
pub const CSV: &str = "text/csv";

/// Turns a batch parse failure into a 400 problem naming lines and fields.
pub fn batch_problem(e: &domain::BatchError) -> platform::http::Problem {
    use axum::http::StatusCode;
    let problem = platform::http::Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-batch",
        "Invalid event batch",
    )
    .detail(format!("{e}; nothing from this batch was stored"));
    match e {
        domain::BatchError::Invalid { errors, truncated } => problem.errors(serde_json::json!({
            "lines": errors,
            "truncated": truncated,
        })),
        _ => problem,
    }
}

pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
