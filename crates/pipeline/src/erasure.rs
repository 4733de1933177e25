//! Subject erasure, the transform's part. The api records an erasure request in
//! `app.erasures` (one end user, `user_key`, of one tenant); in each of that tenant's
//! turns the transform advances the tenant's oldest open erasure by one step, after
//! the turn's facts chunk and before its attribution day:
//!
//! - `pending`: one transaction deletes at most [`Limits::batch`] clicks and as many
//!   conversions of the subject (through the `user_key` indexes attribution uses), and
//!   the subject's impressions and spend among the next [`Limits::scan_rows`] events of
//!   the tenant in primary-key order (a cursor kept in the ledger: no index for them
//!   on the ingest path, where it would cost every load far more than the rare
//!   erasure saves); subtracts from the daily facts the deleted events already
//!   aggregated (an event whose batch is still queued was never added), and queues the
//!   days of the deleted conversions in `output.attribution_work`. When the indexes
//!   give fewer than the batch and the cursor reaches the end, nothing of the subject
//!   is left: the ledger forgets the `user_key` (only its keyed hash stays) and the
//!   erasure is `recomputing`;
//! - `recomputing`: the queued days are recomputed by the transform's attribution
//!   work like any other day; once none of them is queued any more, `completed`.
//!
//! Every step runs under the tenant's facts lock (the one [`aggregate_chunk`] takes),
//! so no chunk of the tenant is aggregated meanwhile, and through
//! `app.erasure_step`, a SECURITY DEFINER function: `beacon_transform` holds no DELETE
//! on `raw.events` and can delete nothing but the events of a subject its tenant asked
//! to erase. Cost per step is bounded by [`Limits`]; the number of open erasures per
//! tenant is bounded by the api. An erasure of a tenant with N raw events takes about
//! N / `scan_rows` steps.
//!
//! [`aggregate_chunk`]: crate::transform

use platform::config;
use sqlx::PgPool;
use uuid::Uuid;

use crate::transform::{RunStats, Settings, try_lock_tenant};

/// What one erasure step may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Clicks, and conversions, of the subject deleted at most per step
    /// (`BEACON_ERASURE_BATCH_EVENTS`).
    pub batch: i32,
    /// Events of the tenant looked at per step for the subject's impressions and spend
    /// (`BEACON_ERASURE_SCAN_ROWS`).
    pub scan_rows: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            batch: 10_000,
            scan_rows: 50_000,
        }
    }
}

type InRange = fn(&'static str, i32, i32, i32) -> config::Result<i32>;

impl Limits {
    pub(crate) fn from_env(in_range: InRange) -> config::Result<Self> {
        let d = Self::default();
        Ok(Self {
            batch: in_range(
                "BEACON_ERASURE_BATCH_EVENTS",
                config::or("BEACON_ERASURE_BATCH_EVENTS", d.batch)?,
                1,
                1_000_000,
            )?,
            scan_rows: in_range(
                "BEACON_ERASURE_SCAN_ROWS",
                config::or("BEACON_ERASURE_SCAN_ROWS", d.scan_rows)?,
                1,
                10_000_000,
            )?,
        })
    }
}

/// Advances the oldest open erasure of `tenant` by one step. Zero stats when the tenant
/// has none, another replica holds the tenant, or its erasure waits for attribution.
pub async fn step(pool: &PgPool, tenant: Uuid, settings: &Settings) -> anyhow::Result<RunStats> {
    let mut tx = pool.begin().await?;
    if !try_lock_tenant(&mut tx, tenant).await? {
        return Ok(RunStats::default());
    }
    let advanced: Option<(Uuid, i64, String)> =
        sqlx::query_as("SELECT erasure, deleted, status FROM app.erasure_step($1, $2, $3)")
            .bind(tenant)
            .bind(settings.erasure.batch)
            .bind(settings.erasure.scan_rows)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let Some((erasure, deleted, status)) = advanced else {
        return Ok(RunStats::default());
    };
    metrics::counter!(crate::metrics::TRANSFORM_EVENTS_ERASED).increment(deleted.max(0) as u64);
    if status == "completed" {
        metrics::counter!(crate::metrics::TRANSFORM_ERASURES_COMPLETED).increment(1);
    }
    tracing::info!(%tenant, %erasure, deleted, status, "subject erasure step");
    Ok(RunStats {
        erasure_steps: 1,
        events_erased: deleted,
        ..RunStats::default()
    })
}
