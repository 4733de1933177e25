//! `pipeline transform`: incremental aggregation of `raw.events` into
//! `output.daily_campaign_facts` and `output.attribution`.
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
//!
//! **Chunks.** A backlog is processed in chunks of about `chunk_events` rows, each its
//! own transaction that advances the watermark to a transaction-id boundary (all rows
//! of one loading transaction are always in the same chunk). A crash loses at most one
//! chunk of work, never correctness.
//!
//! **Attribution** is not additive (a late click can move the credit of a conversion
//! that was already attributed), so it is *recomputed* per affected tenant-day rather
//! than incremented: the days of new conversions, and the days of the conversions a
//! new click may now be credited for (same user, within the window after the click).
//! Those days are deleted and recomputed from `raw.events` with `loaded_xid` below the
//! new watermark, in the same transaction. Recomputing a day from the same rows gives
//! the same rows, so running twice changes nothing.

use std::{net::SocketAddr, time::Duration};

use platform::{
    Shutdown,
    admin::{AdminServer, Check},
    config,
    db::DbConfig,
};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

/// How a run works; from the environment in production, explicit in tests.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A click is credited for a conversion of the same user at most this many days
    /// (exactly 24 h each: SQL uses an hours interval, because a days interval would
    /// follow the session time zone's daylight-saving changes) after it.
    pub attribution_window_days: i32,
    /// Rows per chunk (a chunk is one transaction).
    pub chunk_events: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            attribution_window_days: 30,
            chunk_events: 100_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: SocketAddr,
    pub db: DbConfig,
    pub interval: Duration,
    pub settings: Settings,
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        let d = Settings::default();
        let window: i32 = config::or("BEACON_ATTRIBUTION_WINDOW_DAYS", d.attribution_window_days)?;
        if !(1..=400).contains(&window) {
            return Err(config::ConfigError::new(
                "BEACON_ATTRIBUTION_WINDOW_DAYS",
                "must be between 1 and 400",
            ));
        }
        let chunk: i64 = config::or("BEACON_TRANSFORM_CHUNK_EVENTS", d.chunk_events)?;
        if chunk < 1 {
            return Err(config::ConfigError::new(
                "BEACON_TRANSFORM_CHUNK_EVENTS",
                "must be positive",
            ));
        }
        let mut db = DbConfig::from_env("beacon_transform", "transform")?;
        // A batch job: its default statement timeout is minutes, not the services'
        // seconds (a chunk on tables not yet analysed can take a while).
        db.statement_timeout = config::millis("DATABASE_STATEMENT_TIMEOUT_MS", 300_000)?;
        Ok(Self {
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9084")?,
            db,
            interval: config::millis("BEACON_TRANSFORM_INTERVAL_MS", 10_000)?,
            settings: Settings {
                attribution_window_days: window,
                chunk_events: chunk,
            },
        })
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunStats {
    /// Raw events newly aggregated.
    pub events: i64,
    /// Fact rows inserted or updated.
    pub facts_touched: i64,
    /// Tenant-days whose attribution was recomputed.
    pub attribution_days: i64,
    /// Transactions (chunks) committed.
    pub chunks: i64,
}

/// Processes everything pending once, with the default settings.
pub async fn run_once(pool: &PgPool) -> anyhow::Result<RunStats> {
    run_once_with(pool, &Settings::default()).await
}

/// Processes everything pending once, chunk by chunk, until caught up with the
/// oldest running transaction.
pub async fn run_once_with(pool: &PgPool, settings: &Settings) -> anyhow::Result<RunStats> {
    let mut total = RunStats::default();
    loop {
        let (stats, caught_up) = run_chunk(pool, settings).await?;
        total.events += stats.events;
        total.facts_touched += stats.facts_touched;
        total.attribution_days += stats.attribution_days;
        total.chunks += 1;
        if caught_up {
            break;
        }
    }
    metrics::counter!("transform_runs_total").increment(1);
    metrics::gauge!("transform_last_success_timestamp_seconds")
        .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
    Ok(total)
}

fn xid(text: &str) -> anyhow::Result<u64> {
    text.parse()
        .map_err(|e| anyhow::anyhow!("bad xid8 {text:?}: {e}"))
}

/// One chunk in one transaction. Returns whether everything below the snapshot's
/// xmin is now processed.
async fn run_chunk(pool: &PgPool, settings: &Settings) -> anyhow::Result<(RunStats, bool)> {
    let mut tx = pool.begin().await?;
    // Locks the state row: concurrent runs serialize instead of double counting.
    let (low, high): (String, String) = sqlx::query_as(
        "SELECT watermark::text, pg_snapshot_xmin(pg_current_snapshot())::text
         FROM output.transform_state FOR UPDATE",
    )
    .fetch_one(&mut *tx)
    .await?;
    let (upper, caught_up) = chunk_upper(&mut tx, &low, &high, settings.chunk_events).await?;
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
    .bind(&upper)
    .fetch_one(&mut *tx)
    .await?;
    let attribution_days =
        attribute(&mut tx, &low, &upper, settings.attribution_window_days).await?;
    sqlx::query("UPDATE output.transform_state SET watermark = $1::xid8, updated_at = now()")
        .bind(&upper)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    metrics::counter!("transform_events_processed_total").increment(events as u64);
    metrics::counter!("transform_attribution_days_recomputed_total")
        .increment(attribution_days as u64);
    tracing::info!(events, facts_touched, attribution_days, watermark = %upper, caught_up, "transform chunk");
    Ok((
        RunStats {
            events,
            facts_touched,
            attribution_days,
            chunks: 1,
        },
        caught_up,
    ))
}

/// The end of this chunk: the loading transaction of about the `chunk`-th pending
/// row, so that a chunk never splits one transaction's rows; `high` when fewer rows
/// are pending.
async fn chunk_upper(
    tx: &mut Transaction<'static, Postgres>,
    low: &str,
    high: &str,
    chunk: i64,
) -> anyhow::Result<(String, bool)> {
    let candidate: Option<String> = sqlx::query_scalar(
        "SELECT loaded_xid::text FROM raw.events
         WHERE loaded_xid >= $1::xid8 AND loaded_xid < $2::xid8
         ORDER BY loaded_xid OFFSET $3 LIMIT 1",
    )
    .bind(low)
    .bind(high)
    .bind(chunk)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(candidate) = candidate else {
        return Ok((high.to_owned(), true));
    };
    let first: String = sqlx::query_scalar(
        "SELECT loaded_xid::text FROM raw.events
         WHERE loaded_xid >= $1::xid8 AND loaded_xid < $2::xid8 ORDER BY loaded_xid LIMIT 1",
    )
    .bind(low)
    .bind(high)
    .fetch_one(&mut **tx)
    .await?;
    if xid(&candidate)? > xid(&first)? {
        return Ok((candidate, false));
    }
    // One loading transaction holds more than a chunk: take all of it.
    let next: Option<String> = sqlx::query_scalar(
        "SELECT loaded_xid::text FROM raw.events
         WHERE loaded_xid > $1::xid8 AND loaded_xid < $2::xid8 ORDER BY loaded_xid LIMIT 1",
    )
    .bind(&candidate)
    .bind(high)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match next {
        Some(next) => (next, false),
        None => (high.to_owned(), true),
    })
}

/// Recomputes `output.attribution` for every tenant-day the events in `[low, upper)`
/// can change. Returns the number of tenant-days recomputed.
async fn attribute(
    tx: &mut Transaction<'static, Postgres>,
    low: &str,
    upper: &str,
    window_days: i32,
) -> anyhow::Result<i64> {
    // Bounded: at most (tenants with new events) x (days an event may lie in the past).
    let affected: Vec<(Uuid, time::Date)> = sqlx::query_as(
        "WITH new AS (
             SELECT tenant_id, user_key, event_type, occurred_at FROM raw.events
             WHERE loaded_xid >= $1::xid8 AND loaded_xid < $2::xid8
               AND event_type IN ('click', 'conversion')
         )
         SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date FROM new WHERE event_type = 'conversion'
         UNION
         SELECT DISTINCT c.tenant_id, (c.occurred_at AT TIME ZONE 'UTC')::date
         FROM (SELECT DISTINCT tenant_id, user_key, occurred_at FROM new
               WHERE event_type = 'click' AND user_key IS NOT NULL) k
         JOIN raw.events c
           ON c.tenant_id = k.tenant_id AND c.user_key = k.user_key
          AND c.event_type = 'conversion'
          AND c.occurred_at >= k.occurred_at
          AND c.occurred_at <= k.occurred_at + make_interval(hours => 24 * $3)
          AND c.loaded_xid < $2::xid8",
    )
    .bind(low)
    .bind(upper)
    .bind(window_days)
    .fetch_all(&mut **tx)
    .await?;
    if affected.is_empty() {
        return Ok(0);
    }
    let (tenants, days): (Vec<Uuid>, Vec<time::Date>) = affected.into_iter().unzip();
    sqlx::query(
        "DELETE FROM output.attribution a
         USING unnest($1::uuid[], $2::date[]) AS d(tenant_id, day)
         WHERE a.tenant_id = d.tenant_id AND a.day = d.day",
    )
    .bind(&tenants)
    .bind(&days)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "WITH days AS (
             SELECT * FROM unnest($1::uuid[], $2::date[]) AS d(tenant_id, day)
         ), conv AS (
             SELECT e.tenant_id, e.event_id, e.user_key, e.occurred_at, e.currency, e.revenue_micros, d.day
             FROM days d
             JOIN raw.events e
               ON e.tenant_id = d.tenant_id AND e.event_type = 'conversion'
              AND (e.occurred_at AT TIME ZONE 'UTC')::date = d.day
              AND e.user_key IS NOT NULL
              AND e.loaded_xid < $3::xid8
         ), touch AS (
             SELECT c.tenant_id, c.day, c.currency, c.revenue_micros, k.campaign, k.channel,
                    row_number() OVER w AS rn, count(*) OVER (PARTITION BY c.tenant_id, c.event_id) AS n
             FROM conv c
             JOIN raw.events k
               ON k.tenant_id = c.tenant_id AND k.user_key = c.user_key AND k.event_type = 'click'
              AND k.occurred_at <= c.occurred_at
              AND k.occurred_at >= c.occurred_at - make_interval(hours => 24 * $4)
              AND k.loaded_xid < $3::xid8
             WINDOW w AS (PARTITION BY c.tenant_id, c.event_id ORDER BY k.occurred_at, k.event_id COLLATE \"C\")
         ), credit AS (
             SELECT tenant_id, day, campaign, channel, currency, 'last_click' AS model,
                    1000000::bigint AS conversions_micros, revenue_micros
             FROM touch WHERE rn = n
             UNION ALL
             SELECT tenant_id, day, campaign, channel, currency, 'linear',
                    1000000 / n + CASE WHEN rn = n THEN 1000000 % n ELSE 0 END,
                    revenue_micros / n + CASE WHEN rn = n THEN revenue_micros % n ELSE 0 END
             FROM touch
         )
         INSERT INTO output.attribution
             (tenant_id, day, campaign, channel, currency, model, conversions_micros, revenue_micros)
         SELECT tenant_id, day, campaign, channel, currency, model, sum(conversions_micros), sum(revenue_micros)
         FROM credit GROUP BY tenant_id, day, campaign, channel, currency, model",
    )
    .bind(&tenants)
    .bind(&days)
    .bind(upper)
    .bind(window_days)
    .execute(&mut **tx)
    .await?;
    Ok(tenants.len() as i64)
}

/// Transform lag: the age of the oldest event not yet processed (0 when caught up),
/// and the number of such events is visible as the difference of the ingest and
/// transform counters. Exported as `transform_lag_seconds`.
pub async fn lag_seconds(pool: &PgPool) -> anyhow::Result<f64> {
    let lag: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - e.received_at)::float8
         FROM raw.events e, output.transform_state s
         WHERE e.loaded_xid >= s.watermark ORDER BY e.loaded_xid LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(lag.unwrap_or(0.0).max(0.0))
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
                match lag_seconds(&pool).await {
                    Ok(lag) => metrics::gauge!("transform_lag_seconds").set(lag),
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "cannot measure lag"),
                }
                if let Err(e) = run_once_with(&pool, &config.settings).await {
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
