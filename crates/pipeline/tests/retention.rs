//! The retention pass against a real PostgreSQL, as `beacon_retention`: partitions exist
//! ahead, raw partitions older than the raw retention are dropped (and nothing younger),
//! at most the configured number per pass; aggregates keep their own retention; an
//! event at either edge of ingest's accepted window always finds its partition.

use pipeline::retention::{RunStats, Settings, run_once};
use platform::db::DbConfig;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

fn pool(admin: &PgPool, role: &str) -> PgPool {
    DbConfig::for_role(&admin.connect_options(), role).pool()
}

async fn owner(admin: &PgPool) -> PgConnection {
    PgConnection::connect_with(
        &(*admin.connect_options())
            .clone()
            .username(db::MIGRATOR_ROLE),
    )
    .await
    .expect("connect as the migrator")
}

async fn partitions(admin: &PgPool) -> Vec<String> {
    db::event_partitions(admin).await.unwrap()
}

/// Inserts one click of `tenant` per age (days before now), as the owner: outside
/// ingest's window on purpose, to stand for data that has aged since it was accepted.
async fn events_aged(owner: &mut PgConnection, tenant: Uuid, ages_days: &[i32]) {
    for age in ages_days {
        sqlx::query("SELECT raw.create_event_partition((now() - make_interval(days => $1))::date)")
            .bind(age)
            .execute(&mut *owner)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
             VALUES ($1, 'age-' || $2, 'click', now() - make_interval(days => $2), 'c', 'search', 'EUR')",
        )
        .bind(tenant)
        .bind(age)
        .execute(&mut *owner)
        .await
        .unwrap();
    }
}

async fn ages_left(admin: &PgPool, tenant: Uuid) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT substr(event_id, 5)::int FROM raw.events WHERE tenant_id = $1 ORDER BY 1",
    )
    .bind(tenant)
    .fetch_all(admin)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn raw_partitions_past_the_retention_are_dropped_and_nothing_younger(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let settings = Settings::defaults_for(400);
    assert_eq!(settings.raw_retention_days, 431);
    let tenant = Uuid::new_v4();
    let mut owner = owner(&admin).await;
    // Ages around the retention: 430 and 431 - a minute are younger than it.
    let ages = [700, 640, 580, 520, 470, 431 + 31, 430, 400, 200, 1, 0];
    events_aged(&mut owner, tenant, &ages).await;
    sqlx::query(
        "INSERT INTO output.daily_campaign_facts (tenant_id, day, campaign, channel, currency, clicks)
         VALUES ($1, current_date - 700, 'c', 'search', 'EUR', 1)",
    )
    .bind(tenant)
    .execute(&mut owner)
    .await
    .unwrap();
    // Which partitions must go: those whose every row is older than the retention.
    let expired: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'raw.events'::regclass
           AND (to_date(substr(c.relname, 9), 'YYYYMM') + interval '1 month')::timestamp AT TIME ZONE 'UTC'
               <= now() - interval '431 days'
         ORDER BY 1",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(expired.len() > 3, "the fixture spans more than one pass");

    let retention = pool(&admin, "beacon_retention");
    // Bounded work: three drops per pass by default, oldest first.
    let first = run_once(&retention, &settings).await.unwrap();
    assert_eq!(first.partitions_dropped, expired[..3].to_vec());
    let mut dropped = first.partitions_dropped.clone();
    for _ in 0..expired.len() {
        let RunStats {
            partitions_dropped, ..
        } = run_once(&retention, &settings).await.unwrap();
        if partitions_dropped.is_empty() {
            break;
        }
        dropped.extend(partitions_dropped);
    }
    assert_eq!(dropped, expired);
    // Nothing left to drop: a pass that re-creates what another drops would never end.
    let settled = run_once(&retention, &settings).await.unwrap();
    assert_eq!(settled, RunStats::default());

    // Rows older than the retention are gone with their partitions (a partition is kept
    // while any row in it may be younger, so some older rows of the boundary month may
    // stay: at most a month longer). Every row younger than the retention is still there.
    let left = ages_left(&admin, tenant).await;
    for age in ages {
        if age < 431 {
            assert!(left.contains(&age), "age {age} dropped: {left:?}");
        }
        if age >= 431 + 31 {
            assert!(!left.contains(&age), "age {age} kept: {left:?}");
        }
    }
    // Aggregates keep their own retention (three years by default).
    let facts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM output.daily_campaign_facts WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert_eq!(facts, 1);
    // Partitions exist from the retention back to the horizon ahead, without a gap.
    let have = partitions(&admin).await;
    assert_eq!(
        have,
        db::event_partition_months(&admin, 431, 2).await.unwrap()
    );
}

#[sqlx::test(migrations = false)]
async fn partitions_are_created_ahead_up_to_the_configured_horizon(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let retention = pool(&admin, "beacon_retention");
    let settings = Settings {
        partitions_ahead_months: 6,
        ..Settings::defaults_for(400)
    };
    let stats = run_once(&retention, &settings).await.unwrap();
    // The migration made two months ahead; four more now, and the month 431 days back
    // when it is older than the migration's 401 days.
    assert!((4..=5).contains(&stats.partitions_created), "{stats:?}");
    let again = run_once(&retention, &settings).await.unwrap();
    assert_eq!(
        again,
        RunStats::default(),
        "a second pass has nothing to do"
    );
    let horizon = db::event_partition_months(&admin, 431, 6).await.unwrap();
    assert_eq!(partitions(&admin).await, horizon);
}

#[sqlx::test(migrations = false)]
async fn aggregates_expire_after_their_own_retention_in_bounded_passes(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let tenant = Uuid::new_v4();
    let mut owner = owner(&admin).await;
    // Ages in days: 1097 and more are past a 1096-day retention; 1096 is not.
    for age in [1200, 1150, 1100, 1097, 1096, 30] {
        sqlx::query(
            "INSERT INTO output.daily_campaign_facts (tenant_id, day, campaign, channel, currency, clicks)
             VALUES ($1, (now() AT TIME ZONE 'UTC')::date - $2, 'c', 'search', 'EUR', 1)",
        )
        .bind(tenant)
        .bind(age)
        .execute(&mut owner)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO output.attribution (tenant_id, day, campaign, channel, currency, model, conversions_micros)
             VALUES ($1, (now() AT TIME ZONE 'UTC')::date - $2, 'c', 'search', 'EUR', 'last_click', 1000000)",
        )
        .bind(tenant)
        .bind(age)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    let retention = pool(&admin, "beacon_retention");
    let settings = Settings {
        max_aggregate_rows: 3,
        ..Settings::defaults_for(400)
    };
    assert_eq!(settings.aggregate_retention_days, 1096);
    let ages = |table: &'static str| {
        let admin = admin.clone();
        async move {
            sqlx::query_scalar::<_, i32>(&format!(
                "SELECT (now() AT TIME ZONE 'UTC')::date - day FROM {table} WHERE tenant_id = $1 ORDER BY 1"
            ))
            .bind(tenant)
            .fetch_all(&admin)
            .await
            .unwrap()
        }
    };
    // Eight rows are past the retention; three per pass.
    let mut passes = Vec::new();
    for _ in 0..10 {
        let stats = run_once(&retention, &settings).await.unwrap();
        if stats.aggregate_rows_deleted == 0 {
            break;
        }
        passes.push(stats.aggregate_rows_deleted);
    }
    assert_eq!(passes, vec![3, 3, 2]);
    assert_eq!(ages("output.daily_campaign_facts").await, vec![30, 1096]);
    assert_eq!(ages("output.attribution").await, vec![30, 1096]);
}

#[sqlx::test(migrations = false)]
async fn an_event_at_either_edge_of_the_accepted_window_finds_its_partition(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let limits = domain::Limits::default();
    let retention = pool(&admin, "beacon_retention");
    let loader = pool(&admin, "beacon_loader");
    // After a retention pass with the defaults (which drops what it may), the oldest and
    // the newest occurred_at ingest accepts are both stored.
    run_once(&retention, &Settings::defaults_for(400))
        .await
        .unwrap();
    let now = time::OffsetDateTime::now_utc();
    let edges = [
        now - limits.max_past + time::Duration::minutes(1),
        now + limits.max_future - time::Duration::seconds(1),
    ];
    let body: String = edges
        .iter()
        .enumerate()
        .map(|(i, at)| {
            format!(
                "{{\"event_id\":\"edge-{i}\",\"type\":\"click\",\"occurred_at\":\"{}\",\"campaign\":\"c\",\"channel\":\"search\",\"currency\":\"EUR\"}}\n",
                at.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            )
        })
        .collect();
    let events = domain::parse_ndjson(body.as_bytes(), &limits, now).expect("within the window");
    let stored = pipeline::loader::insert_batch(&loader, Uuid::new_v4(), &events)
        .await
        .expect("a partition for every accepted event");
    assert_eq!(stored, 2);
    // Just outside the window: refused at parse, naming occurred_at, nothing stored.
    let old = body.replace(
        &edges[0]
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
        &(now - limits.max_past - time::Duration::minutes(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    let err = domain::parse_ndjson(old.as_bytes(), &limits, now).unwrap_err();
    let problem = pipeline::batch_problem(&err);
    assert_eq!(problem.status, 400);
    assert!(
        format!("{:?}", problem.errors).contains("occurred_at"),
        "{problem:?}"
    );
}
