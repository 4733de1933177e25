//! Tenant fairness in the transform: one tenant's hot key (20,000 clicks and 20,000
//! conversions of one `user_key` on one day, what a client sending a constant
//! "anonymous" produces) and a transaction left open elsewhere on the cluster must not
//! keep another tenant's numbers from appearing. And a stopping transform leaves no
//! statement running in PostgreSQL.

use std::time::{Duration, Instant};

use beacon_e2e::procs::{ProcStack, record};
use domain::{Currency, Event, EventType};
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use time::OffsetDateTime;
use xtask::seed::demo_tenants;

const HOT: usize = 20_000;

fn event(id: String, ty: EventType, at: OffsetDateTime, user: &str, currency: &str) -> Event {
    Event {
        event_id: id,
        event_type: ty,
        occurred_at: at,
        campaign: "Hot".to_owned(),
        channel: "search".to_owned(),
        user_key: Some(user.to_owned()),
        cost_micros: 0,
        revenue_micros: if ty == EventType::Conversion {
            1_000_000
        } else {
            0
        },
        currency: Currency::parse(currency).unwrap(),
        utm_source: None,
        utm_medium: None,
        utm_campaign: None,
        utm_term: None,
        utm_content: None,
    }
}

async fn user_token(stack: &ProcStack, email: &str, password: &str) -> String {
    beacon_e2e::password_token(&stack.client, &stack.url("api"), email, password).await
}

async fn impressions(stack: &ProcStack, token: &str) -> i64 {
    let r = stack
        .client
        .get(format!("{}/v1/overview", stack.url("api")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["current"]["impressions"]
        .as_i64()
        .unwrap_or(0)
}

/// A transaction holding a transaction id, in another database of the same cluster:
/// what an analyst's forgotten session or a neighbouring test looks like to a
/// cluster-wide watermark.
async fn open_transaction_elsewhere(admin: &PgPool) -> PgConnection {
    let options = admin
        .connect_options()
        .as_ref()
        .clone()
        .database("postgres");
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql("BEGIN; SELECT pg_current_xact_id();")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

#[sqlx::test(migrations = false)]
async fn a_hot_key_flood_and_an_open_transaction_do_not_hold_back_another_tenant(admin: PgPool) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let mut stack = ProcStack::start(admin.clone(), bin, &[]).await.unwrap();
    let tenants = demo_tenants("abuse-password-t");
    let (a, b) = (&tenants[0], &tenants[1]);
    let ingest_a = stack.tenant(a).await.unwrap();
    let ingest_b = stack.tenant(b).await.unwrap();
    let viewer_b = user_token(&stack, &b.viewer_email, &b.password).await;
    let _held = open_transaction_elsewhere(&admin).await;

    // Tenant A: one user, 20,000 clicks and 20,000 conversions interleaved on one day,
    // so the n-th conversion has n clicks before it.
    let day =
        (OffsetDateTime::now_utc() - time::Duration::days(1)).replace_time(time::Time::MIDNIGHT);
    let mut flood = Vec::with_capacity(2 * HOT);
    for i in 0..HOT as i64 {
        let at = day + time::Duration::seconds(2 * i);
        flood.push(event(
            format!("c{i}"),
            EventType::Click,
            at,
            "anonymous",
            a.currency,
        ));
        flood.push(event(
            format!("v{i}"),
            EventType::Conversion,
            at + time::Duration::seconds(1),
            "anonymous",
            a.currency,
        ));
    }
    let started = Instant::now();
    let (accepted, _) = xtask::seed::push(
        &stack.client,
        &stack.url("ingest"),
        &ingest_a,
        &flood,
        5_000,
    )
    .await
    .unwrap();
    assert_eq!(accepted, flood.len() as u64);
    let pushed_a = started.elapsed();

    // Tenant B: five impressions, pushed while A's flood is being transformed.
    let now = OffsetDateTime::now_utc();
    let mut mine = Vec::new();
    for i in 0..5 {
        let mut e = event(
            format!("b{i}"),
            EventType::Impression,
            now,
            "someone",
            b.currency,
        );
        e.user_key = None;
        mine.push(e);
    }
    let sent_b = Instant::now();
    xtask::seed::push(&stack.client, &stack.url("ingest"), &ingest_b, &mine, 100)
        .await
        .unwrap();
    let mut visible_after = None;
    while sent_b.elapsed() < Duration::from_secs(60) {
        if impressions(&stack, &viewer_b).await == 5 {
            visible_after = Some(sent_b.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut owner = stack.owner().await.unwrap();
    let a_pending: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM raw.batches WHERE tenant_id = $1)
              + (SELECT count(*) FROM output.attribution_work WHERE tenant_id = $1)",
    )
    .bind(a.id)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    let visible_after = visible_after
        .expect("tenant B's events not visible through the api within 60 s of A's flood");
    record(
        "hot key",
        "another tenant's event visible after",
        visible_after.as_secs_f64(),
        10.0,
        "s",
    );
    eprintln!("abuse: hot key: A's work items still pending when B's became visible: {a_pending}");

    // A's flood completes too, with every conversion attributed exactly once.
    let mut done_after = None;
    while started.elapsed() < Duration::from_secs(300) {
        let (batches, days): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM raw.batches), (SELECT count(*) FROM output.attribution_work)",
        )
        .fetch_one(&mut owner)
        .await
        .unwrap();
        if (batches, days) == (0, 0) {
            done_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let done_after = done_after.expect("A's flood not transformed within 300 s");
    record(
        "hot key",
        "flood pushed (40,000 events)",
        pushed_a.as_secs_f64(),
        f64::NAN,
        "s",
    );
    record(
        "hot key",
        "flood pushed and fully transformed",
        done_after.as_secs_f64(),
        f64::NAN,
        "s",
    );
    let (last_click, linear): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(conversions_micros) FILTER (WHERE model = 'last_click'), 0)::bigint,
                coalesce(sum(conversions_micros) FILTER (WHERE model = 'linear'), 0)::bigint
         FROM output.attribution WHERE tenant_id = $1",
    )
    .bind(a.id)
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(
        (last_click, linear),
        (HOT as i64 * 1_000_000, HOT as i64 * 1_000_000)
    );

    for (service, container) in [
        ("transform", "transform"),
        ("ingest", "ingest"),
        ("loader", "loader"),
    ] {
        let (peak, limit) = stack.memory_report(service, container).unwrap();
        record(
            "hot key",
            &format!("{service} peak RSS"),
            peak,
            limit,
            "MiB",
        );
        assert!(
            peak < limit,
            "{service}: peak {peak:.1} MiB over its limit {limit:.1} MiB"
        );
    }
    assert_eq!(stack.all_running(), Ok(()));
}

/// SIGTERM while the transform's statement waits in PostgreSQL: the process exits
/// cleanly and PostgreSQL no longer runs anything for it a few seconds later.
#[sqlx::test(migrations = false)]
async fn a_stopping_transform_leaves_no_statement_running(admin: PgPool) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let mut stack = ProcStack::start(admin.clone(), bin, &[]).await.unwrap();
    let tenant = &demo_tenants("abuse-password-s")[0];
    let token = stack.tenant(tenant).await.unwrap();
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&admin)
        .await
        .unwrap();

    // Hold the attribution table: the transform's recomputation will wait on it.
    let mut blocker = stack.owner().await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE output.attribution IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut blocker)
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let events = vec![
        event(
            "k".into(),
            EventType::Click,
            now - time::Duration::minutes(5),
            "u",
            tenant.currency,
        ),
        event("v".into(), EventType::Conversion, now, "u", tenant.currency),
    ];
    xtask::seed::push(&stack.client, &stack.url("ingest"), &token, &events, 10)
        .await
        .unwrap();
    let active = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE usename = 'beacon_transform' AND datname = $1 AND state = 'active'",
        )
        .bind(&database)
        .fetch_one(&admin)
        .await
        .unwrap()
    };
    let mut waiting = false;
    for _ in 0..200 {
        if active().await > 0 {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the transform never started its statement");

    stack.service("transform").terminate().await.unwrap();
    let stopped = Instant::now();
    let mut gone_after = None;
    while stopped.elapsed() < Duration::from_secs(15) {
        if active().await == 0 {
            gone_after = Some(stopped.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();
    let gone_after =
        gone_after.expect("a statement of the stopped transform still runs after 15 s");
    record(
        "shutdown",
        "transform statement cancelled after SIGTERM",
        gone_after.as_secs_f64(),
        2.0,
        "s",
    );
}
