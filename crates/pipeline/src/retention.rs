//! `pipeline retention`: one bounded pass of data lifecycle, run daily by a CronJob as
//! `beacon_retention`, then exit.
//!
//! `raw.events` is partitioned by UTC month of `occurred_at` (`raw.events_pYYYYMM`). A
//! pass:
//! 1. **creates partitions ahead**: every month from `raw_retention_days` ago through
//!    `partitions_ahead_months` after the current one has its partition. Ingest accepts
//!    `occurred_at` from `BEACON_MAX_EVENT_AGE_DAYS` back (less than the raw retention)
//!    to `BEACON_MAX_EVENT_FUTURE_MINUTES` ahead (minutes), so after any successful pass
//!    an accepted event finds its partition for at least `partitions_ahead_months`
//!    whole months, even if every later pass fails: the horizon;
//! 2. **drops expired raw partitions**: the oldest partition whose every row is older
//!    than `raw_retention_days`, one per transaction, at most
//!    `max_partition_drops` per pass (dropping takes a short exclusive lock; a lock
//!    not granted within 2 s fails the pass, which the CronJob retries);
//! 3. **expires aggregates**: daily facts and attribution rows whose day is more than
//!    `aggregate_retention_days` old, at most `max_aggregate_rows` per pass, in
//!    transactions of at most [`AGGREGATE_BATCH`] rows.
//!
//! The role holds no table privilege: each step is a SECURITY DEFINER function owned by
//! the table owner, with fixed rules and its arguments checked
//! (`crates/db/migrations/20261201000001_partitioned_raw_events.sql`). The database's
//! clock decides what is old; the job only says how long to keep.

use platform::{config, db::DbConfig};
use sqlx::PgPool;

/// Aggregate rows deleted per transaction.
pub const AGGREGATE_BATCH: i64 = 10_000;

/// How long data is kept and how much one pass may do. From the environment in
/// production ([`Config::from_env`]), explicit in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Raw events are kept at least this many days (by `occurred_at`), and dropped a
    /// whole month at a time once the youngest row of the month is older: at most one
    /// month longer. Must exceed the accepted event age, so an event ingest accepts
    /// always finds its partition (and its original, when it is a re-send).
    pub raw_retention_days: i32,
    /// Daily facts and attribution are kept this many days (by their day). Not shorter
    /// than the raw retention: every day that raw events can still change is kept.
    pub aggregate_retention_days: i32,
    /// Months after the current one that always have a partition (1–12).
    pub partitions_ahead_months: i32,
    /// Raw partitions dropped at most per pass.
    pub max_partition_drops: u32,
    /// Aggregate rows (facts and attribution) deleted at most per pass.
    pub max_aggregate_rows: i64,
}

/// Each setting with the variable that sets it (and names it in errors).
pub const VARS: [(&str, &str); 5] = [
    ("raw_retention_days", "BEACON_RAW_RETENTION_DAYS"),
    (
        "aggregate_retention_days",
        "BEACON_AGGREGATE_RETENTION_DAYS",
    ),
    ("partitions_ahead_months", "BEACON_PARTITIONS_AHEAD_MONTHS"),
    (
        "max_partition_drops",
        "BEACON_RETENTION_MAX_PARTITION_DROPS",
    ),
    ("max_aggregate_rows", "BEACON_RETENTION_MAX_AGGREGATE_ROWS"),
];

fn var(field: &str) -> &'static str {
    VARS.iter()
        .find(|(f, _)| *f == field)
        .map_or("BEACON_RETENTION_*", |(_, v)| v)
}

/// Days a raw event is kept beyond the accepted event age by default: the transform's
/// default attribution window (30 days: a conversion that may still arrive looks back
/// that far for its clicks) plus one day for clocks and the daily schedule.
pub const RAW_MARGIN_DAYS: i32 = 31;

impl Settings {
    /// The defaults for a deployment that accepts events up to `max_event_age_days`
    /// old: raw kept that long plus [`RAW_MARGIN_DAYS`] (431 days with the default
    /// 400), aggregates three years (1096 days), two months of partitions ahead, three
    /// partition drops and 100,000 aggregate rows per pass.
    pub fn defaults_for(max_event_age_days: i32) -> Self {
        Self {
            raw_retention_days: max_event_age_days.saturating_add(RAW_MARGIN_DAYS),
            aggregate_retention_days: 1096,
            partitions_ahead_months: 2,
            max_partition_drops: 3,
            max_aggregate_rows: 100_000,
        }
    }

    /// Whether these settings keep ingest's promises; each problem names the setting.
    pub fn check(&self, max_event_age_days: i32) -> Result<(), (&'static str, String)> {
        if self.raw_retention_days <= max_event_age_days || self.raw_retention_days > 3650 {
            return Err((
                "raw_retention_days",
                format!(
                    "must be more than BEACON_MAX_EVENT_AGE_DAYS ({max_event_age_days}: an accepted event must find its partition) and at most 3650"
                ),
            ));
        }
        if self.aggregate_retention_days < self.raw_retention_days
            || self.aggregate_retention_days > 36_500
        {
            return Err((
                "aggregate_retention_days",
                format!(
                    "must be at least the raw retention ({} days) and at most 36500",
                    self.raw_retention_days
                ),
            ));
        }
        if !(1..=12).contains(&self.partitions_ahead_months) {
            return Err(("partitions_ahead_months", "must be between 1 and 12".into()));
        }
        if self.max_partition_drops == 0 {
            return Err(("max_partition_drops", "must be at least 1".into()));
        }
        if self.max_aggregate_rows < 1 {
            return Err(("max_aggregate_rows", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub db: DbConfig,
    pub settings: Settings,
}

impl Config {
    /// The settings from `VARS` (defaults: [`Settings::defaults_for`] the accepted event
    /// age, `BEACON_MAX_EVENT_AGE_DAYS`, read exactly as ingest and loader read it).
    pub fn from_env() -> config::Result<Self> {
        let max_age = i32::try_from(crate::limits_from_env()?.max_past.whole_days())
            .map_err(|e| config::ConfigError::new("BEACON_MAX_EVENT_AGE_DAYS", e))?;
        let d = Settings::defaults_for(max_age);
        let settings = Settings {
            raw_retention_days: config::or(var("raw_retention_days"), d.raw_retention_days)?,
            aggregate_retention_days: config::or(
                var("aggregate_retention_days"),
                d.aggregate_retention_days,
            )?,
            partitions_ahead_months: config::or(
                var("partitions_ahead_months"),
                d.partitions_ahead_months,
            )?,
            max_partition_drops: config::or(var("max_partition_drops"), d.max_partition_drops)?,
            max_aggregate_rows: config::or(var("max_aggregate_rows"), d.max_aggregate_rows)?,
        };
        settings
            .check(max_age)
            .map_err(|(field, reason)| config::ConfigError::new(var(field), reason))?;
        Ok(Self {
            db: DbConfig::from_env("beacon_retention", "retention")?,
            settings,
        })
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStats {
    pub partitions_created: i32,
    /// Names of the raw partitions dropped, oldest first.
    pub partitions_dropped: Vec<String>,
    pub aggregate_rows_deleted: i64,
}

/// One pass (see the module documentation). Each step is its own transaction; an error
/// stops the pass and is returned (what was done stays done; the next pass goes on).
pub async fn run_once(pool: &PgPool, settings: &Settings) -> anyhow::Result<RunStats> {
    let mut stats = RunStats {
        partitions_created: sqlx::query_scalar("SELECT raw.ensure_event_partitions($1, $2)")
            .bind(settings.raw_retention_days)
            .bind(settings.partitions_ahead_months)
            .fetch_one(pool)
            .await?,
        ..RunStats::default()
    };
    for _ in 0..settings.max_partition_drops {
        let dropped: Option<String> =
            sqlx::query_scalar("SELECT raw.drop_expired_event_partition($1)")
                .bind(settings.raw_retention_days)
                .fetch_one(pool)
                .await?;
        match dropped {
            Some(name) => {
                tracing::info!(partition = %name, "raw partition dropped");
                stats.partitions_dropped.push(name);
            }
            None => break,
        }
    }
    while stats.aggregate_rows_deleted < settings.max_aggregate_rows {
        let batch = AGGREGATE_BATCH.min(settings.max_aggregate_rows - stats.aggregate_rows_deleted);
        let deleted: i64 = sqlx::query_scalar("SELECT output.expire_aggregates($1, $2)")
            .bind(settings.aggregate_retention_days)
            .bind(i32::try_from(batch)?)
            .fetch_one(pool)
            .await?;
        if deleted == 0 {
            break;
        }
        stats.aggregate_rows_deleted += deleted;
    }
    tracing::info!(
        partitions_created = stats.partitions_created,
        partitions_dropped = stats.partitions_dropped.len(),
        aggregate_rows_deleted = stats.aggregate_rows_deleted,
        raw_retention_days = settings.raw_retention_days,
        aggregate_retention_days = settings.aggregate_retention_days,
        "retention pass done"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_the_promises_and_bad_settings_name_their_variable() {
        let d = Settings::defaults_for(400);
        assert_eq!(d.raw_retention_days, 431);
        assert_eq!(d.check(400), Ok(()));
        let short = Settings {
            raw_retention_days: 400,
            ..d
        };
        assert_eq!(
            var(short.check(400).unwrap_err().0),
            "BEACON_RAW_RETENTION_DAYS"
        );
        let facts = Settings {
            aggregate_retention_days: 430,
            ..d
        };
        assert_eq!(
            var(facts.check(400).unwrap_err().0),
            "BEACON_AGGREGATE_RETENTION_DAYS"
        );
        let ahead = Settings {
            partitions_ahead_months: 0,
            ..d
        };
        assert_eq!(
            var(ahead.check(400).unwrap_err().0),
            "BEACON_PARTITIONS_AHEAD_MONTHS"
        );
        let drops = Settings {
            max_partition_drops: 0,
            ..d
        };
        assert_eq!(
            var(drops.check(400).unwrap_err().0),
            "BEACON_RETENTION_MAX_PARTITION_DROPS"
        );
        let rows = Settings {
            max_aggregate_rows: 0,
            ..d
        };
        assert_eq!(
            var(rows.check(400).unwrap_err().0),
            "BEACON_RETENTION_MAX_AGGREGATE_ROWS"
        );
    }
}
