//! `pipeline transform`: incremental aggregation of `raw.events` into
//! `output.daily_campaign_facts`.
//!
//! The watermark is a transaction id, not a timestamp or a sequence: each raw row
//! records the transaction that loaded it (`loaded_xid`), and a run takes the rows
//! with `watermark <= loaded_xid < xmin`, where `xmin` is the oldest transaction still
//! running. Everything below `xmin` has committed or aborted, so a slow loader
//! transaction is never skipped (the classic bug of sequence watermarks). The deltas
//! are added to the facts in the same transaction that advances the watermark: each
//! event counts exactly once, a second run finds nothing new, and a late event for an
//! old day simply updates that day. PostgreSQL does the aggregation, so memory stays
//! bounded whatever the backlog.

use std::{net::SocketAddr, time::Duration};

use platform::{
    Shutdown,
    admin::{AdminServer, Check},
    config,
    db::DbConfig,
};
use sqlx::PgPool;

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: SocketAddr,
    pub db: DbConfig,
    pub interval: Duration,
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9084")?,
            db: DbConfig::from_env("beacon_transform", "transform")?,
            interval: config::millis("BEACON_TRANSFORM_INTERVAL_MS", 10_000)?,
        })
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunStats {
    pub events: i64,
    pub facts_touched: i64,
}

/// Processes everything pending once.
pub async fn run_once(pool: &PgPool) -> anyhow::Result<RunStats> {
    let mut tx = pool.begin().await?;
    // Locks the state row: concurrent runs serialize instead of double counting.
    let (low, high): (String, String) = sqlx::query_as(
        "SELECT watermark::text, pg_snapshot_xmin(pg_current_snapshot())::text
         FROM output.transform_state FOR UPDATE",
    )
    .fetch_one(&mut *tx)
    .await?;
    let (events, facts_touched): (i64, i64) = sqlx::query_as(
        "WITH src AS (
             SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, campaign, channel, currency,
                    event_type, revenue_micros, cost_micros
             FROM raw.events
             WHERE loaded_xid >= $1::xid8 AND loaded_xid < $2::xid8
         ), upserted AS (
             INSERT INTO output.daily_campaign_facts AS f
                 (tenant_id, day, campaign, channel, currency, impressions, clicks, conversions, spend_micros, revenue_micros)
             SELECT tenant_id, day, campaign, channel, currency,
                    count(*) FILTER (WHERE event_type = 'impression'),
                    count(*) FILTER (WHERE event_type = 'click'),
                    count(*) FILTER (WHERE event_type = 'conversion'),
                    coalesce(sum(cost_micros), 0),
                    coalesce(sum(revenue_micros), 0)
             FROM src GROUP BY tenant_id, day, campaign, channel, currency
             ON CONFLICT (tenant_id, day, campaign, channel, currency) DO UPDATE SET
                 impressions = f.impressions + excluded.impressions,
                 clicks = f.clicks + excluded.clicks,
                 conversions = f.conversions + excluded.conversions,
                 spend_micros = f.spend_micros + excluded.spend_micros,
                 revenue_micros = f.revenue_micros + excluded.revenue_micros,
                 updated_at = now()
             RETURNING 1
         )
         SELECT (SELECT count(*) FROM src), (SELECT count(*) FROM upserted)",
    )
    .bind(&low)
    .bind(&high)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE output.transform_state SET watermark = $1::xid8, updated_at = now()")
        .bind(&high)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("transform_events_processed_total").increment(events as u64);
    metrics::counter!("transform_runs_total").increment(1);
    tracing::info!(events, facts_touched, watermark = %high, "transform run");
    Ok(RunStats {
        events,
        facts_touched,
    })
}

/// Loop mode: a run every `interval` until shutdown; failures are logged and retried.
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = config.db.pool();
    let admin = AdminServer::bind(config.admin, vec![Check::postgres(pool.clone())]).await?;
    let admin = tokio::spawn(admin.run(shutdown.clone()));
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if let Err(e) = run_once(&pool).await {
                    metrics::counter!("transform_failures_total").increment(1);
                    tracing::warn!(error = format!("{e:#}"), "transform run failed, will retry");
                }
            }
            () = shutdown.wait() => break,
        }
    }
    admin.await??;
    Ok(())
}
