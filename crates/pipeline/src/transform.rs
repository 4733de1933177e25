//! `pipeline transform`: incremental aggregation of `raw.events` into
//! `output.daily_campaign_facts` and `output.attribution`, per tenant.
//!
//! **Work, not a watermark.** A trigger on `raw.events` writes one `raw.batches` row
//! per loading transaction and tenant, in that same transaction: the row becomes
//! visible exactly when the events do. The transform aggregates committed batches and
//! deletes their rows in the transaction that adds their deltas to the facts, so each
//! event counts exactly once, a second run finds nothing, and a late event for an old
//! day simply updates that day. Nothing waits for a transaction that has not
//! committed: an analyst's open transaction, or a busy database next door, holds back
//! no one (the xid8 watermark this replaces waited for the oldest transaction on the
//! whole PostgreSQL cluster). PostgreSQL does the aggregation, so memory stays bounded
//! whatever the backlog.
//!
//! **Tenants do not wait for each other.** A pass takes, for every tenant with work,
//! one chunk of batches (about `chunk_events` events, whole loading transactions) and
//! then one tenant-day of attribution, up to `concurrency` tenants at once; then the
//! next pass. A tenant with a huge backlog gets one chunk per pass like everyone else.
//! Several replicas split the work: a tenant's batches are taken under a per-tenant
//! advisory lock (`pg_try_advisory_xact_lock`: a busy tenant is skipped, not waited
//! for) and attribution days with `FOR UPDATE SKIP LOCKED`.
//!
//! **Attribution** is not additive (a late click can move the credit of a conversion
//! that was already attributed), so it is *recomputed* per tenant-day: aggregating a
//! chunk queues the days of its conversions, and the days of the conversions its clicks
//! may now be credited for (same user, within the window after the click), in
//! `output.attribution_work`. Each queued day is recomputed in its own transaction
//! from every committed event, under a time budget (`day_budget`, a statement
//! timeout). Work per conversion is bounded: only the `max_clicks` most recent clicks
//! in the window count (exact for shorter paths), so a constant `user_key` shared by
//! thousands of clicks costs `max_clicks` index entries per conversion, not all of
//! them. A day that fails or exceeds its budget is set aside with exponential backoff
//! (logged, counted in `transform_attribution_days_set_aside_total`, visible in
//! `transform_attribution_days_deferred`) while every other day and tenant advances.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    time::Duration,
};

use platform::{
    Shutdown,
    admin::{AdminServer, Check},
    config,
    db::DbConfig,
};
use sqlx::PgPool;
use uuid::Uuid;

/// How a run works; from the environment in production, explicit in tests.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// A click is credited for a conversion of the same user at most this many days
    /// (exactly 24 h each: SQL uses an hours interval, because a days interval would
    /// follow the session time zone's daylight-saving changes) after it.
    pub attribution_window_days: i32,
    /// At most this many of a user's most recent clicks in the window are credited for
    /// one conversion (bounds the work per conversion).
    pub max_clicks: i32,
    /// Events per chunk (a chunk is one transaction and one tenant; a loading
    /// transaction is never split, so a chunk may exceed this by one batch).
    pub chunk_events: i64,
    /// Time budget of one tenant-day's attribution (its statement timeout).
    pub day_budget: Duration,
    /// First wait before a set-aside day is tried again; doubles per attempt.
    pub retry_base: Duration,
    /// Longest wait between two attempts of a set-aside day.
    pub retry_max: Duration,
    /// Tenants worked on at once by one replica (database connections in use).
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            attribution_window_days: 30,
            max_clicks: 50,
            chunk_events: 50_000,
            day_budget: Duration::from_secs(30),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(15 * 60),
            concurrency: 2,
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

fn in_range<T: PartialOrd + std::fmt::Display>(
    var: &'static str,
    value: T,
    min: T,
    max: T,
) -> config::Result<T> {
    if value < min || value > max {
        return Err(config::ConfigError::new(
            var,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(value)
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        let d = Settings::default();
        let settings = Settings {
            attribution_window_days: in_range(
                "BEACON_ATTRIBUTION_WINDOW_DAYS",
                config::or("BEACON_ATTRIBUTION_WINDOW_DAYS", d.attribution_window_days)?,
                1,
                400,
            )?,
            max_clicks: in_range(
                "BEACON_ATTRIBUTION_MAX_CLICKS",
                config::or("BEACON_ATTRIBUTION_MAX_CLICKS", d.max_clicks)?,
                1,
                10_000,
            )?,
            chunk_events: in_range(
                "BEACON_TRANSFORM_CHUNK_EVENTS",
                config::or("BEACON_TRANSFORM_CHUNK_EVENTS", d.chunk_events)?,
                1,
                10_000_000,
            )?,
            day_budget: config::millis(
                "BEACON_ATTRIBUTION_DAY_BUDGET_MS",
                d.day_budget.as_millis() as u64,
            )?,
            retry_base: config::millis(
                "BEACON_TRANSFORM_RETRY_BASE_MS",
                d.retry_base.as_millis() as u64,
            )?,
            retry_max: config::millis(
                "BEACON_TRANSFORM_RETRY_MAX_MS",
                d.retry_max.as_millis() as u64,
            )?,
            concurrency: in_range(
                "BEACON_TRANSFORM_CONCURRENCY",
                config::or("BEACON_TRANSFORM_CONCURRENCY", d.concurrency)?,
                1,
                64,
            )?,
        };
        let mut db = DbConfig::from_env("beacon_transform", "transform")?;
        // A batch job: one chunk's statements get more than the services' seconds; a
        // tenant-day's attribution has its own budget on top (`day_budget`).
        db.statement_timeout = config::millis("DATABASE_STATEMENT_TIMEOUT_MS", 120_000)?;
        // One connection per tenant worked on, one for the pass itself.
        db.max_connections = db.max_connections.max(settings.concurrency as u32 + 1);
        Ok(Self {
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9084")?,
            db,
            interval: config::millis("BEACON_TRANSFORM_INTERVAL_MS", 10_000)?,
            settings,
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
    /// Tenant-days whose attribution failed or exceeded its budget (set aside).
    pub days_set_aside: i64,
    /// Transactions (chunks) of facts committed.
    pub chunks: i64,
}

impl std::ops::AddAssign for RunStats {
    fn add_assign(&mut self, o: Self) {
        self.events += o.events;
        self.facts_touched += o.facts_touched;
        self.attribution_days += o.attribution_days;
        self.days_set_aside += o.days_set_aside;
        self.chunks += o.chunks;
    }
}

/// How often a free slot looks for newly arrived work while other tenants' turns run.
const POLL: Duration = Duration::from_millis(250);

/// Advisory-lock namespace of the per-tenant facts work (first key of the pair).
const FACTS_LOCK: i32 = 0x6265_6163; // "beac"

/// Processes everything committed and due once, with the default settings.
pub async fn run_once(pool: &PgPool) -> anyhow::Result<RunStats> {
    run_once_with(pool, &Settings::default()).await
}

/// Processes everything committed and due until nothing is left that this replica
/// can take. Tenants are served `concurrency` at a time, each turn one chunk of facts
/// and one attribution day, the least recently served tenant first; a slot that frees
/// up goes to whichever tenant has work then, so a tenant whose turn is slow (a hot
/// key's attribution day, up to `day_budget`) occupies one slot and no one waits for it.
pub async fn run_once_with(pool: &PgPool, settings: &Settings) -> anyhow::Result<RunStats> {
    let slots = settings.concurrency.max(1);
    let mut total = RunStats::default();
    let mut running = tokio::task::JoinSet::new();
    let mut busy = HashSet::new();
    // Tenants whose last turn found nothing it could take (another replica holds them,
    // or their days are not due) or failed: left for the next run, not spun on.
    let mut idle = HashSet::new();
    let mut served: HashMap<Uuid, u64> = HashMap::new();
    let mut turn = 0_u64;
    let mut first_error = None;
    loop {
        if running.len() < slots {
            let mut waiting: Vec<Uuid> = tenants_with_work(pool)
                .await?
                .into_iter()
                .filter(|t| !busy.contains(t) && !idle.contains(t))
                .collect();
            waiting.sort_by_key(|t| served.get(t).copied().unwrap_or(0));
            for tenant in waiting.into_iter().take(slots - running.len()) {
                turn += 1;
                served.insert(tenant, turn);
                busy.insert(tenant);
                let (pool, settings) = (pool.clone(), *settings);
                running.spawn(async move {
                    let result = async {
                        let mut stats = aggregate_chunk(&pool, tenant, &settings).await?;
                        stats += attribute_next_day(&pool, tenant, &settings).await?;
                        anyhow::Ok(stats)
                    }
                    .await;
                    (tenant, result)
                });
            }
        }
        if running.is_empty() {
            break;
        }
        // With a slot free, look for newly arrived work every POLL while the others run.
        let joined = if running.len() < slots {
            match tokio::time::timeout(POLL, running.join_next()).await {
                Ok(joined) => joined,
                Err(_) => continue,
            }
        } else {
            running.join_next().await
        };
        let Some(joined) = joined else { break };
        let (tenant, result) = joined?;
        busy.remove(&tenant);
        match result {
            // A turn that took nothing or only set a day aside: done for this run
            // (a set-aside day waits for its backoff, whatever the settings say).
            Ok(stats) if stats.chunks == 0 && stats.attribution_days == 0 => {
                idle.insert(tenant);
                total += stats;
            }
            Ok(stats) => total += stats,
            // One tenant's failure does not stop the others: reported after the run.
            Err(e) => {
                tracing::warn!(%tenant, error = format!("{e:#}"), "transform: a tenant's turn failed");
                metrics::counter!(crate::metrics::TRANSFORM_FAILURES).increment(1);
                idle.insert(tenant);
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error
        && total == RunStats::default()
    {
        return Err(e);
    }
    metrics::counter!(crate::metrics::TRANSFORM_RUNS).increment(1);
    metrics::gauge!(crate::metrics::TRANSFORM_LAST_SUCCESS)
        .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
    Ok(total)
}

/// Tenants with committed batches or due attribution days.
async fn tenants_with_work(pool: &PgPool) -> anyhow::Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT tenant_id FROM raw.batches
         UNION
         SELECT tenant_id FROM output.attribution_work WHERE not_before <= now()",
    )
    .fetch_all(pool)
    .await?)
}

/// Aggregates the next chunk of one tenant's committed batches into the daily facts,
/// queues the attribution days they touch, and deletes the batches, in one
/// transaction. Returns zero stats when another replica holds the tenant.
async fn aggregate_chunk(
    pool: &PgPool,
    tenant: Uuid,
    settings: &Settings,
) -> anyhow::Result<RunStats> {
    let mut tx = pool.begin().await?;
    let mine: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext($2::text))")
        .bind(FACTS_LOCK)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    if !mine {
        return Ok(RunStats::default());
    }
    // Whole loading transactions, oldest first, up to about `chunk_events` events.
    let batches: Vec<(String, i64)> = sqlx::query_as(
        "SELECT loaded_xid::text, events FROM raw.batches
         WHERE tenant_id = $1 ORDER BY loaded_xid LIMIT 10000",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await?;
    let mut xids = Vec::new();
    let mut planned = 0;
    for (xid, events) in batches {
        if !xids.is_empty() && planned + events > settings.chunk_events {
            break;
        }
        planned += events;
        xids.push(xid);
    }
    if xids.is_empty() {
        return Ok(RunStats::default());
    }
    let (events, facts_touched): (i64, i64) = sqlx::query_as(
        "WITH src AS (
             SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day, campaign, channel, currency,
                    event_type, revenue_micros, cost_micros
             FROM raw.events
             WHERE tenant_id = $1 AND loaded_xid = ANY($2::text[]::xid8[])
         ), upserted AS (
             INSERT INTO output.daily_campaign_facts AS f
                 (tenant_id, day, campaign, channel, currency, impressions, clicks, conversions, spend_micros, revenue_micros)
             SELECT $1, day, campaign, channel, currency,
                    count(*) FILTER (WHERE event_type = 'impression'),
                    count(*) FILTER (WHERE event_type = 'click'),
                    count(*) FILTER (WHERE event_type = 'conversion'),
                    coalesce(sum(cost_micros), 0),
                    coalesce(sum(revenue_micros), 0)
             FROM src GROUP BY day, campaign, channel, currency
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
    .bind(tenant)
    .bind(&xids)
    .fetch_one(&mut *tx)
    .await?;
    // The days whose attribution these events can change: their conversions' days,
    // and the days of the user's conversions within the window after their clicks
    // (one index range per user: from the user's first new click to the last + window).
    sqlx::query(
        "WITH new AS (
             SELECT user_key, event_type, occurred_at FROM raw.events
             WHERE tenant_id = $1 AND loaded_xid = ANY($2::text[]::xid8[])
               AND event_type IN ('click', 'conversion')
         ), days AS (
             SELECT (occurred_at AT TIME ZONE 'UTC')::date AS day FROM new WHERE event_type = 'conversion'
             UNION
             SELECT (c.occurred_at AT TIME ZONE 'UTC')::date
             FROM (SELECT user_key, min(occurred_at) AS first, max(occurred_at) AS last FROM new
                   WHERE event_type = 'click' AND user_key IS NOT NULL GROUP BY user_key) k
             JOIN raw.events c
               ON c.tenant_id = $1 AND c.user_key = k.user_key AND c.event_type = 'conversion'
              AND c.occurred_at >= k.first
              AND c.occurred_at <= k.last + make_interval(hours => 24 * $3)
         )
         INSERT INTO output.attribution_work (tenant_id, day)
         SELECT $1, day FROM days
         ON CONFLICT (tenant_id, day) DO NOTHING",
    )
    .bind(tenant)
    .bind(&xids)
    .bind(settings.attribution_window_days)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM raw.batches WHERE tenant_id = $1 AND loaded_xid = ANY($2::text[]::xid8[])",
    )
    .bind(tenant)
    .bind(&xids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    metrics::counter!(crate::metrics::TRANSFORM_EVENTS_PROCESSED).increment(events as u64);
    tracing::info!(%tenant, events, facts_touched, batches = xids.len(), "transform chunk");
    Ok(RunStats {
        events,
        facts_touched,
        chunks: 1,
        ..RunStats::default()
    })
}

/// Recomputes the attribution of one due tenant-day of `tenant` within the day
/// budget; on failure or timeout sets the day aside with backoff instead.
async fn attribute_next_day(
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

/// Transform lag: the age of the oldest committed batch not yet aggregated (0 when
/// caught up). Exported as `transform_lag_seconds`, beside the number of pending
/// batches and of attribution days waiting (of which set aside after a failure).
pub async fn lag_seconds(pool: &PgPool) -> anyhow::Result<f64> {
    let lag: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(received_at))::float8 FROM raw.batches",
    )
    .fetch_one(pool)
    .await?;
    Ok(lag.unwrap_or(0.0).max(0.0))
}

async fn export_backlog(pool: &PgPool) -> anyhow::Result<()> {
    metrics::gauge!(crate::metrics::TRANSFORM_LAG).set(lag_seconds(pool).await?);
    let (batches, days, deferred): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM raw.batches),
                count(*), count(*) FILTER (WHERE attempts > 0)
         FROM output.attribution_work",
    )
    .fetch_one(pool)
    .await?;
    metrics::gauge!(crate::metrics::TRANSFORM_PENDING_BATCHES).set(batches as f64);
    metrics::gauge!(crate::metrics::TRANSFORM_DAYS_PENDING).set(days as f64);
    metrics::gauge!(crate::metrics::TRANSFORM_DAYS_DEFERRED).set(deferred as f64);
    Ok(())
}

/// Loop mode: a run every `interval` until shutdown; failures are logged and retried.
/// Shutdown interrupts a run in the middle: its transaction is rolled back (work is
/// only ever committed whole) and PostgreSQL cancels the statement once it sees the
/// connection gone (`client_connection_check_interval` of the component roles).
pub async fn run(config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let pool = config.db.pool();
    let admin = AdminServer::bind(config.admin, vec![Check::postgres(pool.clone())]).await?;
    let admin = tokio::spawn(admin.run(shutdown.clone()));
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let work = async {
        loop {
            ticker.tick().await;
            if let Err(e) = export_backlog(&pool).await {
                tracing::warn!(error = format!("{e:#}"), "cannot measure the backlog");
            }
            if let Err(e) = run_once_with(&pool, &config.settings).await {
                metrics::counter!(crate::metrics::TRANSFORM_FAILURES).increment(1);
                tracing::warn!(error = format!("{e:#}"), "transform run failed, will retry");
            }
        }
    };
    tokio::select! {
        () = work => {}
        () = shutdown.wait() => tracing::info!("transform: stopping, in-flight work rolled back"),
    }
    // Closing waits for connections in use; a statement cut off above is cancelled by
    // PostgreSQL when the process is gone, so do not wait for it here.
    let _ = tokio::time::timeout(Duration::from_secs(5), pool.close()).await;
    admin.await??;
    Ok(())
}
