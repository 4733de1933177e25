//! Subject erasure, the transform's part. The api records an erasure request in
//! `app.erasures` (one end user, `user_key`, of one tenant); in each of that tenant's
//! turns the transform advances the tenant's oldest open erasure by one step, after
//! the turn's facts chunk and before its attribution day:
//!
//! - `pending`: one transaction deletes at most `erasure_batch` of the subject's raw
//!   events, subtracts from the daily facts those already aggregated (an event whose
//!   batch is still queued was never added), and queues the days of the deleted
//!   conversions in `output.attribution_work`. When a step finds fewer than the batch,
//!   nothing of the subject is left: the ledger forgets the `user_key` (only its keyed
//!   hash stays) and the erasure is `recomputing`;
//! - `recomputing`: the queued days are recomputed by the transform's attribution
//!   work like any other day; once none of them is queued any more, `completed`.
//!
//! Every step runs under the tenant's facts lock (the one [`aggregate_chunk`] takes),
//! so no chunk of the tenant is aggregated meanwhile, and through
//! `app.erasure_step`, a SECURITY DEFINER function: `beacon_transform` holds no DELETE
//! on `raw.events` and can delete nothing but the events of a subject its tenant asked
//! to erase. Cost per step is bounded by `erasure_batch` (index look-ups per event
//! type); the number of open erasures per tenant is bounded by the api.
//!
//! [`aggregate_chunk`]: crate::transform

use sqlx::PgPool;
use uuid::Uuid;

use crate::transform::{RunStats, Settings, try_lock_tenant};

/// Advances the oldest open erasure of `tenant` by one step. Zero stats when the tenant
/// has none, another replica holds the tenant, or its erasure waits for attribution.
pub async fn step(pool: &PgPool, tenant: Uuid, settings: &Settings) -> anyhow::Result<RunStats> {
    let mut tx = pool.begin().await?;
    if !try_lock_tenant(&mut tx, tenant).await? {
        return Ok(RunStats::default());
    }
    let advanced: Option<(Uuid, i64, String)> =
        sqlx::query_as("SELECT erasure, deleted, status FROM app.erasure_step($1, $2)")
            .bind(tenant)
            .bind(settings.erasure_batch)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    let Some((erasure, deleted, status)) = advanced else {
        return Ok(RunStats::default());
    };
    metrics::counter!("transform_events_erased_total").increment(deleted.max(0) as u64);
    if status == "completed" {
        metrics::counter!("transform_erasures_completed_total").increment(1);
    }
    tracing::info!(%tenant, %erasure, deleted, status, "subject erasure step");
    Ok(RunStats {
        erasure_steps: 1,
        events_erased: deleted,
        ..RunStats::default()
    })
}
