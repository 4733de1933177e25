//! Beacon's event pipeline.
//!
//! - [`ingest`] faces the internet and parses hostile input, so it holds **no**
//!   database credential. It forwards each validated batch, with the caller's token,
//!   to the loader on 127.0.0.1 and answers 2xx only after the loader committed.
//! - [`loader`] is the sidecar in the same pod: it listens on loopback only, verifies
//!   the token again, and inserts as `beacon_loader` (INSERT on `raw.events`, nothing
//!   else), inside a transaction scoped to the token's tenant.
//! - [`transform`] aggregates `raw` into `output` incrementally, as `beacon_transform`,
//!   and advances subject erasures in the same per-tenant turns ([`erasure`]).
//! - [`retention`] keeps `raw.events` partitioned ahead and drops what is past the
//!   retention, as `beacon_retention` (a daily CronJob; one pass, then exit).

pub mod erasure;
pub mod ingest;
pub mod loader;
pub mod metrics;
pub mod retention;
pub mod transform;

use std::{sync::Arc, time::Duration};

use domain::Limits;
use platform::{Shutdown, auth::TokenVerifier, config};

/// `pipeline ingest`: configuration from the environment, build, serve until `shutdown`.
pub async fn run_ingest(shutdown: Shutdown) -> anyhow::Result<()> {
    let config = ingest::Config::from_env()?;
    ingest::App::build(config, Arc::new(TokenVerifier::from_env()?))
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// `pipeline loader`: configuration from the environment, build, serve until `shutdown`.
pub async fn run_loader(shutdown: Shutdown) -> anyhow::Result<()> {
    let config = loader::Config::from_env()?;
    loader::App::build(config, Arc::new(TokenVerifier::from_env()?))
        .await?
        .run_until_stopped(shutdown)
        .await
}

/// `pipeline transform`: the loop until `shutdown`, or one pass over what is pending
/// (`once`, for Jobs and tests).
pub async fn run_transform(shutdown: Shutdown, once: bool) -> anyhow::Result<()> {
    let config = transform::Config::from_env()?;
    platform::metrics::register(&[crate::metrics::TRANSFORM]);
    if once {
        transform::run_once_with(&config.db.pool(), &config.settings)
            .await
            .map(|_| ())
    } else {
        transform::run(config, shutdown).await
    }
}

/// `pipeline retention`: one pass (partitions ahead, expired partitions and aggregates
/// dropped), then exit.
pub async fn run_retention(_shutdown: Shutdown) -> anyhow::Result<()> {
    let config = retention::Config::from_env()?;
    retention::run_once(&config.db.pool(), &config.settings)
        .await
        .map(|_| ())
}

/// Each batch limit with the variable that sets it.
const LIMIT_VARS: [(&str, &str); 9] = [
    ("max_events", "BEACON_MAX_EVENTS_PER_BATCH"),
    ("max_string_len", "BEACON_MAX_STRING_LEN"),
    ("max_line_bytes", "BEACON_MAX_LINE_BYTES"),
    ("max_fields", "BEACON_MAX_FIELDS_PER_LINE"),
    ("max_depth", "BEACON_MAX_JSON_DEPTH"),
    ("max_batch_bytes", "BEACON_MAX_BATCH_BYTES"),
    ("max_errors", "BEACON_MAX_ERRORS_REPORTED"),
    ("max_past", "BEACON_MAX_EVENT_AGE_DAYS"),
    ("max_future", "BEACON_MAX_EVENT_FUTURE_MINUTES"),
];

fn limit_var(field: &str) -> &'static str {
    LIMIT_VARS
        .iter()
        .find(|(f, _)| *f == field)
        .map_or("BEACON_MAX_*", |(_, var)| var)
}

/// Batch limits, the one place ingest and loader take them from, so both enforce the
/// same rules: a batch ingest accepts is within the loader's limits, its body limit
/// included ([`Limits::max_batch_bytes`]). Limits that cannot work together are a
/// start-up error naming the variable.
pub fn limits_from_env() -> config::Result<Limits> {
    let d = Limits::default();
    let var = limit_var;
    let limits = Limits {
        max_events: config::or(var("max_events"), d.max_events)?,
        max_string_len: config::or(var("max_string_len"), d.max_string_len)?,
        max_line_bytes: config::or(var("max_line_bytes"), d.max_line_bytes)?,
        max_fields: config::or(var("max_fields"), d.max_fields)?,
        max_depth: config::or(var("max_depth"), d.max_depth)?,
        max_batch_bytes: config::or(var("max_batch_bytes"), d.max_batch_bytes)?,
        max_errors: config::or(var("max_errors"), d.max_errors)?,
        max_past: time::Duration::days(config::or(var("max_past"), d.max_past.whole_days())?),
        max_future: time::Duration::minutes(config::or(
            var("max_future"),
            d.max_future.whole_minutes(),
        )?),
        max_money_micros: d.max_money_micros,
    };
    limits
        .check()
        .map_err(|(field, reason)| config::ConfigError::new(limit_var(field), reason))?;
    Ok(limits)
}

/// The answer of ingest and loader to an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchOutcome {
    /// Events newly stored.
    pub accepted: u64,
    /// Re-sent events: the same `event_id` and `occurred_at` were already stored for
    /// this tenant (not stored again).
    pub duplicates: u64,
}

pub const NDJSON: &str = "application/x-ndjson";
pub const CSV: &str = "text/csv";

/// Turns a batch parse failure into a problem: 400 naming lines and fields, or 413
/// naming the limit when the batch is too large (split it; retrying cannot help).
pub fn batch_problem(e: &domain::BatchError) -> platform::http::Problem {
    use axum::http::StatusCode;
    use domain::BatchError;
    let (limit, max) = match e {
        BatchError::TooManyEvents { max } => ("events_per_batch", *max),
        BatchError::TooLarge { max_bytes } => ("batch_bytes", *max_bytes),
        BatchError::Empty | BatchError::Invalid { .. } => {
            let problem = platform::http::Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-batch",
                "Invalid event batch",
            )
            .detail(format!("{e}; nothing from this batch was stored"));
            return match e {
                BatchError::Invalid { errors, truncated } => problem.errors(serde_json::json!({
                    "lines": errors,
                    "truncated": truncated,
                })),
                _ => problem,
            };
        }
    };
    platform::http::Problem::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "batch-too-large",
        "Event batch too large",
    )
    .detail(format!(
        "{e}; nothing from this batch was stored; send it as smaller batches"
    ))
    .errors(serde_json::json!({ "limit": limit, "max": max }))
}

pub(crate) fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use domain::BatchError;

    use super::*;

    #[test]
    fn too_large_is_413_naming_the_limit_and_invalid_is_400() {
        let p = batch_problem(&BatchError::TooLarge { max_bytes: 7 });
        assert_eq!(p.status, 413);
        assert_eq!(
            p.errors.as_deref(),
            Some(&serde_json::json!({ "limit": "batch_bytes", "max": 7 }))
        );
        let p = batch_problem(&BatchError::TooManyEvents { max: 3 });
        assert_eq!((p.status, p.kind), (413, "batch-too-large"));
        assert_eq!(batch_problem(&BatchError::Empty).status, 400);
        // Every limit a check can name has its variable.
        for (field, var) in LIMIT_VARS {
            assert_eq!(limit_var(field), var);
        }
        let broken = Limits {
            max_fields: 3,
            ..Limits::default()
        };
        let (field, _) = broken.check().unwrap_err();
        assert_eq!(limit_var(field), "BEACON_MAX_FIELDS_PER_LINE");
    }
}
