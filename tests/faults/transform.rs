//! The transform killed (SIGKILL) in the middle of a chunk, twice, while it works
//! through a backlog of 80,000 events of two tenants. A chunk is one transaction
//! (facts, queued attribution days, batches deleted), so the killed one is rolled back
//! whole: after each kill the facts equal exactly the events whose batches are gone,
//! and after a restart the transform finishes with facts and attribution equal to a
//! recomputation from the raw events (nothing counted twice, nothing missed).

use std::{
    path::Path,
    time::{Duration, Instant},
};

use beacon_e2e::{expected_attribution, facts_mismatches, procs::ProcStack};
use sqlx::PgPool;
use xtask::seed::{demo_tenants, generate_events};

use crate::common::{figure, wait_until};

const EVENTS: [usize; 2] = [60_000, 20_000];
/// Events per loading transaction (one `raw.batches` row each).
const LOAD_BATCH: usize = 2_000;
/// `BEACON_TRANSFORM_CHUNK_EVENTS`: several chunks per tenant.
const CHUNK: usize = 15_000;
const KILLS: usize = 2;

#[sqlx::test(migrations = false)]
async fn a_transform_killed_mid_chunk_counts_nothing_twice_and_misses_nothing(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let overrides = [(
        "transform",
        "BEACON_TRANSFORM_CHUNK_EVENTS",
        CHUNK.to_string(),
    )];
    let mut stack = ProcStack::start(admin.clone(), bin, &overrides)
        .await
        .unwrap();
    // The backlog builds up while no transform runs.
    stack.kill("transform").await.unwrap();
    let mut owner = stack.owner().await.unwrap();
    let loader = beacon_e2e::role_pool(&admin, "beacon_loader");
    let now = time::OffsetDateTime::now_utc();
    let mut loaded = Vec::new();
    for (i, (tenant, n)) in demo_tenants("faults-password-tr")
        .iter()
        .zip(EVENTS)
        .enumerate()
    {
        xtask::seed::create_tenant(&mut owner, tenant)
            .await
            .unwrap();
        let events = generate_events(70 + i as u64, n, 30, tenant.currency, now);
        for batch in events.chunks(LOAD_BATCH) {
            pipeline::loader::insert_batch(&loader, tenant.id, batch)
                .await
                .unwrap();
        }
        loaded.push((tenant.id, events));
    }

    let scenario = "transform killed mid-chunk";
    let mut kills = 0;
    let mut attempts = 0;
    while kills < KILLS {
        attempts += 1;
        assert!(
            attempts <= 3 * KILLS,
            "never caught the transform mid-chunk"
        );
        let pending_before = pending_batches(&admin).await;
        stack.restart("transform", bin).await.unwrap();
        // Let a chunk commit first, then catch the next one in the middle.
        wait_until(Duration::from_secs(60), "a chunk committed", || {
            let admin = admin.clone();
            async move { pending_batches(&admin).await < pending_before }
        })
        .await;
        let xid = inside_a_chunk(&admin, Duration::from_secs(30)).await;
        stack.kill("transform").await.unwrap();
        // PostgreSQL ends the killed process's session (and its transaction) once it
        // notices the connection gone.
        wait_until(Duration::from_secs(30), "the killed session ends", || {
            let admin = admin.clone();
            async move { transform_sessions(&admin).await == 0 }
        })
        .await;
        let status: Option<String> = sqlx::query_scalar(
            "SELECT pg_xact_status(((pg_current_xact_id()::text::bigint >> 32 << 32)
                                    | $1::bigint)::text::xid8)",
        )
        .bind(xid)
        .fetch_one(&admin)
        .await
        .unwrap();
        let pending = pending_batches(&admin).await;
        assert!(pending > 0, "the whole backlog was done before the kill");
        if status.as_deref() != Some("aborted") {
            // The chunk committed just before the signal landed: not mid-chunk.
            continue;
        }
        kills += 1;
        assert_eq!(
            facts_mismatches(&mut owner).await,
            0,
            "after kill {kills}: facts are exactly the aggregated batches' events"
        );
        figure(
            scenario,
            &format!("batches pending after kill {kills} (of {pending_before})"),
            pending as f64,
            "",
        );
    }

    stack.restart("transform", bin).await.unwrap();
    let started = Instant::now();
    wait_until(Duration::from_secs(120), "the transform finishes", || {
        let admin = admin.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT NOT EXISTS (SELECT FROM raw.batches)
                    AND NOT EXISTS (SELECT FROM output.attribution_work)",
            )
            .fetch_one(&admin)
            .await
            .unwrap_or(false)
        }
    })
    .await;
    figure(scenario, "kills (rolled-back chunks)", kills as f64, "");
    figure(
        scenario,
        "finished after the last restart",
        started.elapsed().as_secs_f64(),
        "s",
    );

    assert_eq!(stack.all_running(), Ok(()), "a service exited");
    assert_eq!(facts_mismatches(&mut owner).await, 0, "facts vs raw events");
    for (tenant, events) in &loaded {
        let stored: i64 =
            sqlx::query_scalar("SELECT count(*) FROM raw.events WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_one(&mut owner)
                .await
                .unwrap();
        assert_eq!(stored, events.len() as i64);
        assert_eq!(
            beacon_e2e::actual_attribution(&mut owner, *tenant).await,
            expected_attribution(events, 50),
            "attribution of {tenant}"
        );
    }
}

/// Waits until a transform session is inside a chunk's transaction, after its first
/// write (it has a transaction id) and before its commit; returns that transaction id.
/// Polls every 5 ms: a chunk lasts a few hundred milliseconds.
async fn inside_a_chunk(admin: &PgPool, limit: Duration) -> i64 {
    let started = Instant::now();
    loop {
        let xid: Option<i64> = sqlx::query_scalar(
            "SELECT backend_xid::text::bigint FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = 'transform'
               AND backend_xid IS NOT NULL
               AND (query LIKE '%daily_campaign_facts%' OR query LIKE '%raw.batches%'
                    OR query LIKE '%WITH new AS%')
             LIMIT 1",
        )
        .fetch_optional(admin)
        .await
        .unwrap();
        if let Some(xid) = xid {
            return xid;
        }
        assert!(
            started.elapsed() < limit,
            "no chunk in progress within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn pending_batches(admin: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM raw.batches")
        .fetch_one(admin)
        .await
        .unwrap()
}

async fn transform_sessions(admin: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND application_name = 'transform'",
    )
    .fetch_one(admin)
    .await
    .unwrap()
}
