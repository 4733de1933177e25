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
use platform::config;

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
