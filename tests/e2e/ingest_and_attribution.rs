//! Pipeline behaviour beyond the walking skeleton: CSV and gzip ingest, gzip bombs,
//! per-tenant rate limits, and attribution (last-click and linear) checked against
//! values computed here, independently, from the fixture events, including late
//! clicks and conversions and a second run that must change nothing.

use std::io::Write as _;

use beacon_e2e::{ATTRIBUTION_WINDOW_DAYS, Stack, expected_attribution};
use domain::{Currency, Event, EventType};
use pipeline::transform::{RunStats, Settings};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use xtask::seed::{create_tenant, demo_tenants, generate_events, ingest_token};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

async fn stored(owner: &mut PgConnection, tenant: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM raw.events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(owner)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn csv_gzip_bombs_and_rate_limits(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants("e2e-password-3");
    let mut owner = stack.owner().await;
    let key_a = create_tenant(&mut owner, &tenants[0]).await.unwrap();
    let key_b = create_tenant(&mut owner, &tenants[1]).await.unwrap();
    let token_a = ingest_token(&stack.client, &stack.api_url, &key_a)
        .await
        .unwrap();
    let token_b = ingest_token(&stack.client, &stack.api_url, &key_b)
        .await
        .unwrap();
    let url = format!("{}/v1/events", stack.ingest_url);
    let now = OffsetDateTime::now_utc();
    let post = |token: &str, content_type: &str, gz: bool, body: Vec<u8>| {
        let mut r = stack
            .client
            .post(&url)
            .bearer_auth(token)
            .header("content-type", content_type);
        if gz {
            r = r.header("content-encoding", "gzip");
        }
        r.body(body).send()
    };

    // CSV: stored like NDJSON.
    let csv_events = generate_events(501, 300, 10, "EUR", now);
    let r = post(
        &token_a,
        "text/csv",
        false,
        domain::to_csv(&csv_events).into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(
        (outcome["accepted"].as_u64(), outcome["duplicates"].as_u64()),
        (Some(300), Some(0))
    );

    // gzip NDJSON and gzip CSV; the CSV re-sends 100 stored events as duplicates.
    let more = generate_events(502, 200, 10, "EUR", now);
    let r = post(
        &token_a,
        "application/x-ndjson",
        true,
        gzip(domain::to_ndjson(&more).as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let mut mixed = more[..100].to_vec();
    mixed.extend(generate_events(503, 50, 10, "EUR", now));
    let r = post(
        &token_a,
        "text/csv; charset=utf-8",
        true,
        gzip(domain::to_csv(&mixed).as_bytes()),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert_eq!(
        (outcome["accepted"].as_u64(), outcome["duplicates"].as_u64()),
        (Some(50), Some(100))
    );
    assert_eq!(stored(&mut owner, tenants[0].id).await, 550);

    // A CSV error names line, column and field; nothing of the batch is stored.
    let mut bad = domain::to_csv(&generate_events(504, 5, 10, "EUR", now));
    bad.push_str("x1,click,2026-11-01T00:00:00Z,Camp,Search,u,1,,EUR,,,,,\n");
    let r = post(&token_a, "text/csv", false, bad.into_bytes())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.unwrap();
    let first = &problem["errors"]["lines"][0];
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(7), Some(5)),
        "{problem}"
    );
    assert_eq!(first["field"], "channel");

    // A gzip bomb: 64 MiB of zeros in ~64 KiB; the decompressed limit is 4 MiB.
    let bomb = gzip(&vec![0u8; 64 * 1024 * 1024]);
    assert!(bomb.len() < 1024 * 1024, "the bomb passes the body limit");
    let r = post(&token_a, "application/x-ndjson", true, bomb)
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = post(&token_a, "application/x-ndjson", false, b"{}".to_vec())
        .await
        .map(|r| r.status());
    assert_eq!(r.unwrap(), 400);
    let r = post(&token_a, "application/json", false, b"{}".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(
        stored(&mut owner, tenants[0].id).await,
        550,
        "refused batches stored nothing"
    );

    // Rate limit (the test stack allows 5 requests/s per tenant, bursts of 30):
    // tenant A floods, gets 429 problem+json with Retry-After; tenant B is unaffected.
    let mut limited = None;
    for _ in 0..80 {
        let r = post(
            &token_a,
            "application/x-ndjson",
            false,
            b"not json".to_vec(),
        )
        .await
        .unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status(), 400);
    }
    let r = limited.expect("tenant A was never rate limited");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    let r = post(
        &token_b,
        "text/csv",
        false,
        domain::to_csv(&generate_events(505, 10, 10, "USD", now)).into_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "another tenant keeps being served");
}

// ------------------------------------------------------------------ attribution

fn event(
    id: &str,
    ty: EventType,
    at: OffsetDateTime,
    campaign: &str,
    user: Option<&str>,
    revenue: i64,
) -> Event {
    Event {
        event_id: id.to_owned(),
        event_type: ty,
        occurred_at: at,
        campaign: campaign.to_owned(),
        channel: "search".to_owned(),
        user_key: user.map(str::to_owned),
        cost_micros: if ty == EventType::Click { 100_000 } else { 0 },
        revenue_micros: revenue,
        currency: Currency::parse("EUR").unwrap(),
        utm_source: None,
        utm_medium: None,
        utm_campaign: None,
        utm_term: None,
        utm_content: None,
    }
}

/// Runs transform once and checks it processed exactly `expected` events: one run
/// takes everything committed, whatever else runs on the cluster (no watermark waits
/// for other databases' transactions any more).
async fn transform_until(pool: &PgPool, settings: &Settings, expected: usize) -> RunStats {
    let total = pipeline::transform::run_once_with(pool, settings)
        .await
        .unwrap();
    assert_eq!(
        total.events as usize, expected,
        "transform processed every event once"
    );
    total
}

#[sqlx::test(migrations = false)]
async fn attribution_matches_an_independent_computation_with_late_events(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let loader = beacon_e2e::role_pool(&admin, "beacon_loader");
    let transform = beacon_e2e::role_pool(&admin, "beacon_transform");
    let settings = Settings {
        attribution_window_days: ATTRIBUTION_WINDOW_DAYS as i32,
        chunk_events: 2_000,
        ..Settings::default()
    };
    let mut owner = beacon_e2e::owner_connection(&admin).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let day = |d: i64, h: u8| {
        (now - Duration::days(d)).replace_time(time::Time::from_hms(h, 0, 0).unwrap())
    };
    // Hand-made users exercising each rule; generated realistic events around them.
    let mut first = vec![
        event(
            "h-c1",
            EventType::Click,
            day(10, 9),
            "Alpha",
            Some("hu1"),
            0,
        ),
        event("h-c2", EventType::Click, day(8, 9), "Beta", Some("hu1"), 0),
        event(
            "h-v1",
            EventType::Conversion,
            day(7, 9),
            "Alpha",
            Some("hu1"),
            100_000_001,
        ),
        event(
            "h-c3",
            EventType::Click,
            day(45, 9),
            "Alpha",
            Some("hu2"),
            0,
        ),
        event(
            "h-v2",
            EventType::Conversion,
            day(7, 10),
            "Alpha",
            Some("hu2"),
            5_000_000,
        ),
        event(
            "h-v3",
            EventType::Conversion,
            day(7, 11),
            "Alpha",
            None,
            7_000_000,
        ),
        event(
            "h-c4",
            EventType::Click,
            day(20, 9),
            "Gamma",
            Some("hu3"),
            0,
        ),
        event(
            "h-c5",
            EventType::Click,
            day(20, 9),
            "Delta",
            Some("hu3"),
            0,
        ),
        event(
            "h-c6",
            EventType::Click,
            day(20, 9),
            "Epsilon",
            Some("hu3"),
            0,
        ),
        event(
            "h-v4",
            EventType::Conversion,
            day(19, 9),
            "Alpha",
            Some("hu3"),
            10_000_000,
        ),
    ];
    let generated = generate_events(77, 20_000, 60, "EUR", now);
    first.extend_from_slice(&generated[..14_000]);
    // Late arrivals, loaded after the first transform: a click that takes over hu1's
    // last click, one that only adds a linear touch, a conversion for an old day, and
    // a third of the generated events (late clicks and conversions for many days).
    let mut late = vec![
        event("h-c7", EventType::Click, day(7, 8), "Zeta", Some("hu1"), 0),
        event("h-c8", EventType::Click, day(9, 9), "Eta", Some("hu1"), 0),
        event(
            "h-v5",
            EventType::Conversion,
            day(40, 9),
            "Alpha",
            Some("hu4"),
            3_000_000,
        ),
        event(
            "h-c9",
            EventType::Click,
            day(41, 9),
            "Theta",
            Some("hu4"),
            0,
        ),
    ];
    late.extend_from_slice(&generated[14_000..]);
    // Tenant B shares user keys (the generator's user space) but never A's credit.
    let other = generate_events(78, 6_000, 60, "EUR", now);

    for chunk in first.chunks(1_000) {
        pipeline::loader::insert_batch(&loader, a, chunk)
            .await
            .unwrap();
    }
    for chunk in other.chunks(1_000) {
        pipeline::loader::insert_batch(&loader, b, chunk)
            .await
            .unwrap();
    }
    let stats = transform_until(&transform, &settings, first.len() + other.len()).await;
    assert!(
        stats.chunks > 1,
        "the backlog was processed in chunks: {stats:?}"
    );
    assert_eq!(
        beacon_e2e::actual_attribution(&mut owner, a).await,
        expected_attribution(&first, 50)
    );
    assert_eq!(
        beacon_e2e::actual_attribution(&mut owner, b).await,
        expected_attribution(&other, 50)
    );

    // The hand-made cases, spelled out.
    let got = beacon_e2e::actual_attribution(&mut owner, a).await;
    let d7 = day(7, 0).date();
    let key = |c: &str, m: &str| {
        (
            d7,
            c.to_owned(),
            "search".to_owned(),
            "EUR".to_owned(),
            m.to_owned(),
        )
    };
    assert_eq!(got[&key("Beta", "last_click")], (1_000_000, 100_000_001));
    assert_eq!(
        got[&key("Alpha", "linear")].0 % 1_000_000,
        500_000,
        "hu1's two clicks split a conversion"
    );

    for chunk in late.chunks(1_000) {
        pipeline::loader::insert_batch(&loader, a, chunk)
            .await
            .unwrap();
    }
    transform_until(&transform, &settings, late.len()).await;
    let all: Vec<Event> = first.iter().chain(&late).cloned().collect();
    let got = beacon_e2e::actual_attribution(&mut owner, a).await;
    assert_eq!(got, expected_attribution(&all, 50));
    assert_eq!(
        got[&key("Zeta", "last_click")],
        (1_000_000, 100_000_001),
        "a late click moved the credit"
    );
    assert!(
        !got.contains_key(&key("Beta", "last_click"))
            || got[&key("Beta", "last_click")].1 != 100_000_001
    );
    assert_eq!(
        beacon_e2e::actual_attribution(&mut owner, b).await,
        expected_attribution(&other, 50)
    );

    // Idempotent: a second run finds nothing and changes nothing.
    let facts_before: Vec<(String,)> = sqlx::query_as(
        "SELECT string_agg(f::text, ';' ORDER BY f::text) FROM output.daily_campaign_facts f",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    let again = pipeline::transform::run_once_with(&transform, &settings)
        .await
        .unwrap();
    assert_eq!(again, RunStats::default());
    assert_eq!(beacon_e2e::actual_attribution(&mut owner, a).await, got);
    let facts_after: Vec<(String,)> = sqlx::query_as(
        "SELECT string_agg(f::text, ';' ORDER BY f::text) FROM output.daily_campaign_facts f",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(facts_before, facts_after);
    // Nothing is left unprocessed.
    assert_eq!(
        pipeline::transform::lag_seconds(&transform).await.unwrap(),
        0.0
    );
}

/// The bound on clicks per conversion, at its edge: with `max_clicks = 3`, a path of
/// exactly 3 clicks is credited whole, a path of 4 loses its oldest click, a tie on
/// time at the boundary is broken by event_id, and the window edge is inclusive.
#[sqlx::test(migrations = false)]
async fn attribution_counts_the_n_most_recent_clicks_at_the_edge(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let loader = beacon_e2e::role_pool(&admin, "beacon_loader");
    let transform = beacon_e2e::role_pool(&admin, "beacon_transform");
    let settings = Settings {
        attribution_window_days: ATTRIBUTION_WINDOW_DAYS as i32,
        max_clicks: 3,
        ..Settings::default()
    };
    let mut owner = beacon_e2e::owner_connection(&admin).await;
    let tenant = Uuid::new_v4();
    let conv_at = (OffsetDateTime::now_utc() - Duration::days(2))
        .replace_time(time::Time::from_hms(12, 0, 0).unwrap());
    let before = |minutes: i64| conv_at - Duration::minutes(minutes);
    use EventType::{Click, Conversion};
    let events = vec![
        // Exactly N clicks: all three share the conversion.
        event("x-1", Click, before(30), "X1", Some("exact"), 0),
        event("x-2", Click, before(20), "X2", Some("exact"), 0),
        event("x-3", Click, before(10), "X3", Some("exact"), 0),
        event("x-v", Conversion, conv_at, "-", Some("exact"), 3_000_000),
        // N + 1 clicks: the oldest gets nothing; the one at the conversion's instant counts.
        event("o-0", Click, before(40), "Oldest", Some("over"), 0),
        event("o-1", Click, before(30), "O1", Some("over"), 0),
        event("o-2", Click, before(20), "O2", Some("over"), 0),
        event("o-3", Click, conv_at, "O3", Some("over"), 0),
        event("o-v", Conversion, conv_at, "-", Some("over"), 6_000_000),
        // A tie at the boundary: of t-a and t-b (same instant), only t-b (greater id)
        // is among the 3 latest.
        event("t-a", Click, before(30), "TieA", Some("tie"), 0),
        event("t-b", Click, before(30), "TieB", Some("tie"), 0),
        event("t-2", Click, before(20), "T2", Some("tie"), 0),
        event("t-3", Click, before(10), "T3", Some("tie"), 0),
        event("t-v", Conversion, conv_at, "-", Some("tie"), 0),
        // The window edge is inclusive: exactly 30 days before counts, a second more not.
        event(
            "w-in",
            Click,
            conv_at - Duration::days(ATTRIBUTION_WINDOW_DAYS),
            "EdgeIn",
            Some("edge"),
            0,
        ),
        event(
            "w-out",
            Click,
            conv_at - Duration::days(ATTRIBUTION_WINDOW_DAYS) - Duration::seconds(1),
            "EdgeOut",
            Some("edge"),
            0,
        ),
        event("w-v", Conversion, conv_at, "-", Some("edge"), 0),
    ];
    pipeline::loader::insert_batch(&loader, tenant, &events)
        .await
        .unwrap();
    transform_until(&transform, &settings, events.len()).await;
    let got = beacon_e2e::actual_attribution(&mut owner, tenant).await;
    assert_eq!(got, expected_attribution(&events, 3));

    // The same facts, by hand: what each campaign's linear credit must be.
    let linear = |campaign: &str| {
        got.iter()
            .filter(|((_, c, _, _, m), _)| c == campaign && m == "linear")
            .map(|(_, v)| v.0)
            .sum::<i64>()
    };
    assert_eq!(
        [linear("X1"), linear("X2"), linear("X3")],
        [333_333, 333_333, 333_334]
    );
    assert_eq!(linear("Oldest"), 0, "the (N+1)th click is not credited");
    assert_eq!(
        [linear("O1"), linear("O2"), linear("O3")],
        [333_333, 333_333, 333_334]
    );
    assert_eq!([linear("TieA"), linear("TieB")], [0, 333_333]);
    assert_eq!([linear("EdgeIn"), linear("EdgeOut")], [1_000_000, 0]);
    let last_click = |campaign: &str| {
        got.iter()
            .filter(|((_, c, _, _, m), _)| c == campaign && m == "last_click")
            .fold((0, 0), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.1))
    };
    assert_eq!(last_click("O3"), (1_000_000, 6_000_000));
}

/// Several transform replicas split the work (per-tenant advisory locks for facts,
/// `FOR UPDATE SKIP LOCKED` for attribution days) and still count every event once:
/// three replicas run at the same time over three tenants' batches, and the facts and
/// attribution equal what is computed independently from the raw events.
#[sqlx::test(migrations = false)]
async fn replicas_split_the_work_and_count_each_event_once(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let loader = beacon_e2e::role_pool(&admin, "beacon_loader");
    let settings = Settings {
        attribution_window_days: ATTRIBUTION_WINDOW_DAYS as i32,
        chunk_events: 300,
        ..Settings::default()
    };
    let now = OffsetDateTime::now_utc();
    let tenants = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    let mut all = Vec::new();
    for (i, tenant) in tenants.iter().enumerate() {
        let events = generate_events(900 + i as u64, 3_000, 20, "EUR", now);
        for batch in events.chunks(250) {
            pipeline::loader::insert_batch(&loader, *tenant, batch)
                .await
                .unwrap();
        }
        all.push(events);
    }
    let replica = || beacon_e2e::role_pool(&admin, "beacon_transform");
    let (r1, r2, r3) = (replica(), replica(), replica());
    let (s1, s2, s3) = tokio::join!(
        pipeline::transform::run_once_with(&r1, &settings),
        pipeline::transform::run_once_with(&r2, &settings),
        pipeline::transform::run_once_with(&r3, &settings),
    );
    let stats = [s1.unwrap(), s2.unwrap(), s3.unwrap()];
    let processed: i64 = stats.iter().map(|s| s.events).sum();
    assert_eq!(
        processed, 9_000,
        "every event aggregated by exactly one replica"
    );
    assert!(
        stats.iter().filter(|s| s.events > 0).count() >= 2,
        "the work was split: {stats:?}"
    );

    let mut owner = beacon_e2e::owner_connection(&admin).await;
    assert_eq!(
        beacon_e2e::facts_mismatches(&mut owner).await,
        0,
        "facts equal the raw events' totals"
    );
    for (tenant, events) in tenants.iter().zip(&all) {
        assert_eq!(
            beacon_e2e::actual_attribution(&mut owner, *tenant).await,
            expected_attribution(events, 50)
        );
    }
}

/// A tenant-day whose attribution exceeds its budget is set aside (attempts counted,
/// retried after a backoff, the error kept) while another tenant's day advances in the
/// same run; once the obstacle is gone the retry succeeds and nothing is left queued.
#[sqlx::test(migrations = false)]
async fn a_day_over_its_budget_is_set_aside_while_the_others_advance(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let loader = beacon_e2e::role_pool(&admin, "beacon_loader");
    let transform = beacon_e2e::role_pool(&admin, "beacon_transform");
    let settings = Settings {
        attribution_window_days: ATTRIBUTION_WINDOW_DAYS as i32,
        day_budget: std::time::Duration::from_millis(300),
        retry_base: std::time::Duration::from_secs(2),
        retry_max: std::time::Duration::from_secs(2),
        ..Settings::default()
    };
    let mut owner = beacon_e2e::owner_connection(&admin).await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let at = (OffsetDateTime::now_utc() - Duration::days(2))
        .replace_time(time::Time::from_hms(12, 0, 0).unwrap());
    let load = |tenant: Uuid, events: Vec<Event>| {
        let loader = loader.clone();
        async move {
            pipeline::loader::insert_batch(&loader, tenant, &events)
                .await
                .unwrap();
        }
    };
    let last_click = |tenant: Uuid| {
        let admin = admin.clone();
        async move {
            let mut owner = beacon_e2e::owner_connection(&admin).await;
            beacon_e2e::actual_attribution(&mut owner, tenant)
                .await
                .iter()
                .filter(|((.., m), _)| m == "last_click")
                .map(|(_, v)| v.0)
                .sum::<i64>()
        }
    };
    for (tenant, p) in [(a, "a"), (b, "b")] {
        load(
            tenant,
            vec![
                event(
                    &format!("{p}-k"),
                    EventType::Click,
                    at - Duration::hours(1),
                    "C",
                    Some("u"),
                    0,
                ),
                event(
                    &format!("{p}-v1"),
                    EventType::Conversion,
                    at,
                    "C",
                    Some("u"),
                    0,
                ),
            ],
        )
        .await;
    }
    let first = pipeline::transform::run_once_with(&transform, &settings)
        .await
        .unwrap();
    assert_eq!((first.attribution_days, first.days_set_aside), (2, 0));

    // A second conversion for each tenant on the same day; A's attribution rows are
    // held by another session, so A's recomputation cannot finish within its budget.
    for (tenant, p) in [(a, "a"), (b, "b")] {
        load(
            tenant,
            vec![event(
                &format!("{p}-v2"),
                EventType::Conversion,
                at + Duration::minutes(5),
                "C",
                Some("u"),
                0,
            )],
        )
        .await;
    }
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT * FROM output.attribution WHERE tenant_id = '{a}' FOR UPDATE;"
    ))
    .execute(&mut owner)
    .await
    .unwrap();
    let second = pipeline::transform::run_once_with(&transform, &settings)
        .await
        .unwrap();
    assert_eq!(
        (
            second.events,
            second.attribution_days,
            second.days_set_aside
        ),
        (2, 1, 1),
        "B advanced, A was set aside: {second:?}"
    );
    assert_eq!(
        last_click(b).await,
        2_000_000,
        "B's day counts both conversions"
    );
    let (attempts, waits, error): (i32, bool, String) = sqlx::query_as(
        "SELECT attempts, not_before > now(), coalesce(last_error, '')
         FROM output.attribution_work WHERE tenant_id = $1",
    )
    .bind(a)
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!((attempts, waits), (1, true));
    assert!(error.contains("statement timeout"), "{error}");

    // The obstacle goes; after the backoff the retry succeeds.
    sqlx::raw_sql("ROLLBACK").execute(&mut owner).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
    let third = pipeline::transform::run_once_with(&transform, &settings)
        .await
        .unwrap();
    assert_eq!((third.attribution_days, third.days_set_aside), (1, 0));
    assert_eq!(
        last_click(a).await,
        2_000_000,
        "A's day counts both conversions"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM output.attribution_work")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
