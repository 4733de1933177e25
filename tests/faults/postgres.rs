//! PostgreSQL stopped and started again (`pg_ctl stop -m fast`, then `start`, same data
//! and port) while two clients push events through ingest and one reads KPIs through
//! the api. Every event acknowledged with 2xx is stored exactly once; every other
//! answer is 503 problem+json with `Retry-After`, within the configured pool acquire
//! timeout (never a 500, never a hang); every service's readiness goes false and comes
//! back; no process exits; the transform then catches up without counting anything
//! twice.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use beacon_e2e::{
    facts_mismatches,
    procs::{Override, ProcStack},
};
use xtask::seed::{demo_tenants, generate_events};

use crate::common::{
    Log, OwnCluster, assert_clean_failures, client, figure, max_latency, viewer_token, wait_until,
    watch_readiness,
};

/// The services whose readiness depends on PostgreSQL (ingest's through its loader).
const WATCHED: [&str; 5] = ["api", "analytics", "loader", "ingest", "transform"];
/// `DATABASE_ACQUIRE_TIMEOUT_MS` of every service with a pool, set here so the bound
/// below is the configured one (it is also the default).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// What a loaded 2-core machine may add to the acquire timeout (token checks, parsing,
/// the hop from ingest to the loader, scheduling).
const SLACK: Duration = Duration::from_millis(2_500);
const OUTAGE: Duration = Duration::from_secs(5);
const BATCH: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_loses_no_acknowledged_event_and_answers_503() {
    let mut pg = OwnCluster::start().await.expect("throwaway PostgreSQL");
    let admin = pg.database("beacon").await.unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let overrides: Vec<Override> = ["api", "analytics", "loader", "transform"]
        .into_iter()
        .map(|s| {
            let ms = ACQUIRE_TIMEOUT.as_millis().to_string();
            (s, "DATABASE_ACQUIRE_TIMEOUT_MS", ms)
        })
        .collect();
    let mut stack = ProcStack::start(admin.clone(), bin, &overrides)
        .await
        .unwrap();
    let tenant = &demo_tenants("faults-password-pg")[0];
    let ingest_token = stack.tenant(tenant).await.unwrap();
    let viewer = viewer_token(&stack, tenant).await;

    let log = Log::new();
    let http = client(Duration::from_secs(30));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let duplicates = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..2_u64 {
        let (log, http, acked, duplicates) =
            (log.clone(), http.clone(), acked.clone(), duplicates.clone());
        let (url, token) = (
            format!("{}/v1/events", stack.url("ingest")),
            ingest_token.clone(),
        );
        let currency = tenant.currency;
        // A well-behaved client: a batch is sent again after a 503 (waiting as long as
        // Retry-After says) until it is acknowledged; then the next one.
        clients.spawn(async move {
            let mut k = 0_u64;
            while !log.stopped() {
                let events = generate_events(
                    (worker + 1) * 1_000_000 + k,
                    BATCH,
                    20,
                    currency,
                    time::OffsetDateTime::now_utc(),
                );
                let body = domain::to_ndjson(&events);
                loop {
                    let request = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/x-ndjson")
                        .body(body.clone());
                    let (answer, json) = log.send("ingest", request).await;
                    if answer.ok() {
                        let json = json.expect("ingest answers JSON");
                        duplicates.fetch_add(
                            json["duplicates"].as_u64().unwrap_or(0),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        let mut acked = acked.lock().unwrap();
                        acked.extend(events.iter().map(|e| e.event_id.clone()));
                        break;
                    }
                    let wait = answer.retry_after.map_or(500, |s| s * 1000).min(1000);
                    tokio::time::sleep(Duration::from_millis(wait)).await;
                }
                k += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    {
        let (log, http) = (log.clone(), http.clone());
        let url = format!("{}/v1/overview", stack.url("api"));
        clients.spawn(async move {
            while !log.stopped() {
                log.send("api", http.get(&url).bearer_auth(&viewer)).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
    }
    let watched = WATCHED
        .iter()
        .map(|name| (*name, stack.services[*name].admin_port))
        .collect();
    let readiness = watch_readiness(&log, watched);

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !acked.lock().unwrap().is_empty(),
        "nothing acknowledged before the outage"
    );
    let down_at = log.now();
    pg.stop().await.unwrap();
    tokio::time::sleep(OUTAGE).await;
    let up_at = log.now();
    pg.start_again().await.unwrap();
    let restarted_in = log.now() - up_at;
    let mut ready_after = Vec::new();
    for name in WATCHED {
        wait_until(Duration::from_secs(60), name, || {
            stack.is_ready(name, Duration::from_secs(2))
        })
        .await;
        ready_after.push((name, log.now() - up_at));
    }
    let all_ready_at = log.now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    log.stop();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(joined) = clients.join_next().await {
            joined.expect("client task");
        }
    })
    .await
    .expect("the clients finish their last batch");
    let readiness = readiness.await.unwrap();

    // No process exited.
    assert_eq!(stack.all_running(), Ok(()), "a service exited");

    // Every failure was a 503 problem+json with Retry-After (ingest's clients stay
    // within their rate limit, so no 429 either), never a 500 or a broken connection,
    // and within the acquire timeout.
    let end = log.now();
    let scenario = "postgres restart";
    figure(scenario, "outage", (up_at - down_at).as_secs_f64(), "s");
    figure(scenario, "pg_ctl start", restarted_in.as_secs_f64(), "s");
    for service in ["ingest", "api"] {
        let all = log.of(service, Duration::ZERO, end);
        assert_clean_failures(&all, &[503], service);
        let during = log.of(service, down_at, up_at);
        let unavailable = during.iter().filter(|a| a.status == 503).count();
        assert!(unavailable > 0, "{service}: no 503 during the outage");
        let slowest = max_latency(&all);
        assert!(
            slowest <= ACQUIRE_TIMEOUT + SLACK,
            "{service}: an answer took {slowest:?} (acquire timeout {ACQUIRE_TIMEOUT:?})"
        );
        let after = log.of(service, all_ready_at, end);
        assert!(
            !after.is_empty() && after.iter().all(|a| a.ok()),
            "{service} did not recover: {after:?}"
        );
        figure(
            scenario,
            &format!("{service} requests"),
            all.len() as f64,
            "",
        );
        figure(scenario, &format!("{service} 503s"), unavailable as f64, "");
        figure(
            scenario,
            &format!("{service} max latency"),
            slowest.as_secs_f64() * 1000.0,
            "ms",
        );
    }

    // Readiness: false during the outage, true again after it, for every service.
    for name in WATCHED {
        let seen: Vec<_> = readiness.iter().filter(|(n, ..)| *n == name).collect();
        assert!(
            seen.iter()
                .any(|(_, at, ready)| !ready && *at >= down_at && *at <= up_at + restarted_in),
            "{name}: readiness never went false during the outage"
        );
        assert!(
            seen.iter().any(|(_, at, ready)| *ready && *at > up_at),
            "{name}: readiness never came back"
        );
    }
    for (name, after) in &ready_after {
        figure(
            scenario,
            &format!("{name} ready after restart"),
            after.as_secs_f64(),
            "s",
        );
    }

    // Every acknowledged event stored exactly once, and nothing else stored.
    let acked = acked.lock().unwrap().clone();
    let mut owner = stack.owner().await.unwrap();
    let (rows, distinct, of_acked): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT event_id), count(*) FILTER (WHERE event_id = ANY($2))
         FROM raw.events WHERE tenant_id = $1",
    )
    .bind(tenant.id)
    .bind(&acked)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        (rows, distinct, of_acked),
        (acked.len() as i64, acked.len() as i64, acked.len() as i64),
        "stored rows, distinct event ids, acknowledged ids found"
    );
    figure(scenario, "events acknowledged", acked.len() as f64, "");
    figure(
        scenario,
        "re-sent events found already stored",
        duplicates.load(std::sync::atomic::Ordering::Relaxed) as f64,
        "",
    );

    // The transform catches up across the restart and counts every event once.
    let caught_up = wait_until(Duration::from_secs(60), "transform backlog", || {
        let admin = admin.clone();
        async move {
            let mut owner = beacon_e2e::owner_connection(&admin).await;
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM raw.batches")
                .fetch_one(&mut owner)
                .await
                .is_ok_and(|n| n == 0)
        }
    })
    .await;
    figure(
        scenario,
        "transform caught up after",
        caught_up.as_secs_f64(),
        "s",
    );
    assert_eq!(facts_mismatches(&mut owner).await, 0, "facts vs raw events");
    drop(owner);
    drop(stack);
    admin.close().await;
}
