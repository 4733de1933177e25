//! The dedupe window of the month-partitioned `raw.events`, through the real ingest →
//! loader path: a re-sent event (same `event_id` and `occurred_at`) is never stored
//! twice, including when the original lies just before a partition boundary and the
//! retry arrives after it, as a client's retry does; an event outside the accepted
//! window is refused with problem+json before anything is stored.

use beacon_e2e::Stack;
use serde_json::Value;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime, format_description::well_known::Rfc3339};
use xtask::seed::{create_tenant, demo_tenants, ingest_token};

fn event(id: &str, at: OffsetDateTime) -> String {
    format!(
        "{{\"event_id\":\"{id}\",\"type\":\"click\",\"occurred_at\":\"{}\",\"campaign\":\"c\",\"channel\":\"search\",\"currency\":\"EUR\"}}\n",
        at.format(&Rfc3339).unwrap()
    )
}

#[sqlx::test(migrations = false)]
async fn resent_events_are_deduplicated_across_partition_boundaries(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants("e2e-password-retention");
    let mut owner = stack.owner().await;
    let key = create_tenant(&mut owner, &tenants[0]).await.unwrap();
    let token = ingest_token(&stack.client, &stack.api_url, &key)
        .await
        .unwrap();
    let url = format!("{}/v1/events", stack.ingest_url);
    let post = |body: String| {
        let (client, url, token) = (stack.client.clone(), url.clone(), token.clone());
        async move {
            let r = client
                .post(&url)
                .bearer_auth(&token)
                .header("content-type", "application/x-ndjson")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let content_type = r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, content_type, r.json::<Value>().await.unwrap())
        }
    };
    let outcome = |v: &Value| (v["accepted"].as_u64(), v["duplicates"].as_u64());

    // The last millisecond of the previous month and the first of this one (UTC): two
    // partitions.
    let now = OffsetDateTime::now_utc();
    let month_start = now
        .replace_day(1)
        .unwrap()
        .replace_time(time::Time::MIDNIGHT);
    let before = month_start - Duration::milliseconds(1);

    // The original, then its retry. The retry reaches the loader later, possibly in the
    // next month, but carries the event's own occurred_at: same partition, deduplicated.
    let (status, _, v) = post(event("boundary", before)).await;
    assert_eq!((status, outcome(&v)), (200, (Some(1), Some(0))), "{v}");
    let (status, _, v) = post(event("boundary", before) + &event("fresh", now)).await;
    assert_eq!((status, outcome(&v)), (200, (Some(1), Some(1))), "{v}");
    // A retry of an event well inside one partition: deduplicated too.
    let (status, _, v) = post(event("fresh", now)).await;
    assert_eq!((status, outcome(&v)), (200, (Some(0), Some(1))), "{v}");

    // Not a retry: the same event_id with another occurred_at is another event (the
    // event's identity is (event_id, occurred_at)), stored once, in its own partition.
    let (status, _, v) = post(event("boundary", month_start)).await;
    assert_eq!((status, outcome(&v)), (200, (Some(1), Some(0))), "{v}");
    let (status, _, v) = post(event("boundary", month_start)).await;
    assert_eq!((status, outcome(&v)), (200, (Some(0), Some(1))), "{v}");

    let stored: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id, tableoid::regclass::text, count(*) FROM raw.events
         WHERE tenant_id = $1 GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(tenants[0].id)
    .fetch_all(&stack.admin)
    .await
    .unwrap();
    let partition =
        |at: OffsetDateTime| format!("raw.events_p{:04}{:02}", at.year(), u8::from(at.month()));
    let mut expected = vec![
        ("boundary".to_owned(), partition(before), 1),
        ("boundary".to_owned(), partition(month_start), 1),
        ("fresh".to_owned(), partition(now), 1),
    ];
    expected.sort();
    assert_eq!(stored, expected);

    // Outside the accepted window (older than BEACON_MAX_EVENT_AGE_DAYS, 400 days by
    // default): refused with problem+json naming the field; nothing of the batch stored.
    let too_old = now - Duration::days(400) - Duration::minutes(5);
    let (status, content_type, v) = post(event("ok", now) + &event("old", too_old)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    assert!(v.to_string().contains("occurred_at"), "{v}");
    let (status, _, v) = post(event("future", now + Duration::minutes(11))).await;
    assert_eq!(status, 400, "{v}");
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM raw.events WHERE tenant_id = $1 AND event_id IN ('ok', 'old', 'future')",
    )
    .bind(tenants[0].id)
    .fetch_one(&stack.admin)
    .await
    .unwrap();
    assert_eq!(count, 0);
}
