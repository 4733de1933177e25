//! Attribution of one tenant-day: claimed from `output.attribution_work`, recomputed
//! from every committed event under the day's time budget, or set aside with backoff.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use super::{RunStats, Settings};

/// Recomputes the attribution of one due tenant-day of `tenant` within the day
/// budget; on failure or timeout sets the day aside with backoff instead.
pub(super) async fn attribute_next_day(
    pool: &PgPool,
    tenant: Uuid,
    settings: &Settings,
) -> anyhow::Result<RunStats> {
    let mut tx = pool.begin().await?;
    let claimed: Option<(time::Date, i32)> = sqlx::query_as(
        "SELECT day, attempts FROM output.attribution_work
         WHERE tenant_id = $1 AND not_before <= now()
         ORDER BY not_before, day LIMIT 1 FOR UPDATE SKIP LOCKED",
    )
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((day, attempts)) = claimed else {
        return Ok(RunStats::default());
    };
    let started = std::time::Instant::now();
    match recompute_day(&mut tx, tenant, day, settings).await {
        Ok(()) => {
            tx.commit().await?;
            metrics::counter!(crate::metrics::TRANSFORM_DAYS_RECOMPUTED).increment(1);
            metrics::histogram!(crate::metrics::TRANSFORM_DAY_DURATION)
                .record(started.elapsed().as_secs_f64());
            Ok(RunStats {
                attribution_days: 1,
                ..RunStats::default()
            })
        }
        Err(e) => {
            drop(tx);
            let attempts = attempts.saturating_add(1);
            let wait = backoff(settings, attempts);
            sqlx::query(
                "UPDATE output.attribution_work
                 SET attempts = $3, not_before = now() + make_interval(secs => $4), last_error = $5
                 WHERE tenant_id = $1 AND day = $2",
            )
            .bind(tenant)
            .bind(day)
            .bind(attempts)
            .bind(wait.as_secs_f64())
            .bind(format!("{e:#}").chars().take(500).collect::<String>())
            .execute(pool)
            .await?;
            metrics::counter!(crate::metrics::TRANSFORM_DAYS_SET_ASIDE).increment(1);
            tracing::warn!(%tenant, %day, attempts, retry_in_s = wait.as_secs(), error = format!("{e:#}"),
                "attribution of a tenant-day failed or exceeded its budget; set aside");
            Ok(RunStats {
                days_set_aside: 1,
                ..RunStats::default()
            })
        }
    }
}

fn backoff(settings: &Settings, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    settings
        .retry_base
        .saturating_mul(1 << doublings)
        .min(settings.retry_max)
}

/// Deletes and recomputes `output.attribution` of one tenant-day from every committed
/// event, then removes the day from the work queue.
async fn recompute_day(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    day: time::Date,
    settings: &Settings,
) -> anyhow::Result<()> {
    sqlx::query("SELECT set_config('statement_timeout', $1, true)")
        .bind(settings.day_budget.as_millis().max(1).to_string())
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM output.attribution WHERE tenant_id = $1 AND day = $2")
        .bind(tenant)
        .bind(day)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "WITH conv AS (
             SELECT e.event_id, e.user_key, e.occurred_at, e.currency, e.revenue_micros
             FROM raw.events e
             WHERE e.tenant_id = $1 AND e.event_type = 'conversion'
               AND (e.occurred_at AT TIME ZONE 'UTC')::date = $2
               AND e.user_key IS NOT NULL
         ), touch AS (
             SELECT c.currency, c.revenue_micros, k.campaign, k.channel,
                    row_number() OVER w AS rn, count(*) OVER (PARTITION BY c.event_id) AS n
             FROM conv c
             CROSS JOIN LATERAL (
                 SELECT k.campaign, k.channel, k.occurred_at, k.event_id
                 FROM raw.events k
                 WHERE k.tenant_id = $1 AND k.user_key = c.user_key AND k.event_type = 'click'
                   AND k.occurred_at <= c.occurred_at
                   AND k.occurred_at >= c.occurred_at - make_interval(hours => 24 * $3)
                 ORDER BY k.occurred_at DESC, k.event_id COLLATE \"C\" DESC
                 LIMIT $4
             ) k
             WINDOW w AS (PARTITION BY c.event_id ORDER BY k.occurred_at, k.event_id COLLATE \"C\")
         ), credit AS (
             SELECT campaign, channel, currency, 'last_click' AS model,
                    1000000::bigint AS conversions_micros, revenue_micros
             FROM touch WHERE rn = n
             UNION ALL
             SELECT campaign, channel, currency, 'linear',
                    1000000 / n + CASE WHEN rn = n THEN 1000000 % n ELSE 0 END,
                    revenue_micros / n + CASE WHEN rn = n THEN revenue_micros % n ELSE 0 END
             FROM touch
         )
         INSERT INTO output.attribution
             (tenant_id, day, campaign, channel, currency, model, conversions_micros, revenue_micros)
         SELECT $1, $2, campaign, channel, currency, model, sum(conversions_micros), sum(revenue_micros)
         FROM credit GROUP BY campaign, channel, currency, model",
    )
    .bind(tenant)
    .bind(day)
    .bind(settings.attribution_window_days)
    .bind(i64::from(settings.max_clicks))
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM output.attribution_work WHERE tenant_id = $1 AND day = $2")
        .bind(tenant)
        .bind(day)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
