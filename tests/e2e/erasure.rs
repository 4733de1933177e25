//! Subject erasure end to end (api → ledger → transform → facts and attribution):
//! every number derived afterwards equals the one computed here from the remaining
//! events; the other tenant's identical `user_key` is untouched; the clear key is left
//! in no row of the tenant; only holders of `subjects:erase` may ask, only for their
//! own tenant, with a bounded number of erasures open.

use std::collections::BTreeMap;

use beacon_e2e::{Stack, actual_attribution, expected_attribution, same_currency_tenants};
use domain::{Currency, Event, EventType};
use pipeline::transform::Settings;
use serde_json::Value;
use sqlx::PgConnection;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

const SUBJECT: &str = "subject-42";

/// (day, campaign, channel, currency) → (impressions, clicks, conversions, spend, revenue).
type Facts = BTreeMap<(time::Date, String, String, String), [i64; 5]>;

fn expected_facts(events: &[Event]) -> Facts {
    let mut out = Facts::new();
    for e in events {
        let row = out
            .entry((
                e.occurred_at.date(),
                e.campaign.clone(),
                e.channel.clone(),
                e.currency.to_string(),
            ))
            .or_default();
        match e.event_type {
            EventType::Impression => row[0] += 1,
            EventType::Click => row[1] += 1,
            EventType::Conversion => row[2] += 1,
            EventType::Spend => {}
        }
        row[3] += e.cost_micros;
        row[4] += e.revenue_micros;
    }
    out
}

/// A facts row as read: the key, then the five counters.
type FactsRow = (time::Date, String, String, String, i64, i64, i64, i64, i64);

async fn actual_facts(owner: &mut PgConnection, tenant: Uuid) -> Facts {
    let rows: Vec<FactsRow> = sqlx::query_as(
        "SELECT day, campaign, channel, currency::text, impressions, clicks, conversions,
                    spend_micros, revenue_micros
             FROM output.daily_campaign_facts WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(owner)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(d, c, ch, cur, i, k, v, s, r)| ((d, c, ch, cur), [i, k, v, s, r]))
        .collect()
}

/// The subject's own path in a tenant: impressions, clicks on two campaigns (one of
/// them, "Subject Only", nobody else has), conversions on two days, a spend row.
fn subject_events(prefix: &str, currency: &str, now: OffsetDateTime) -> Vec<Event> {
    let at = |days: i64, hours: i64| {
        (now - Duration::days(days) + Duration::hours(hours))
            .replace_nanosecond(0)
            .unwrap()
    };
    let e = |n: usize, ty: EventType, at: OffsetDateTime, campaign: &str, cost, revenue| Event {
        event_id: format!("{prefix}-{n}"),
        event_type: ty,
        occurred_at: at,
        campaign: campaign.to_owned(),
        channel: "search".to_owned(),
        user_key: Some(SUBJECT.to_owned()),
        cost_micros: cost,
        revenue_micros: revenue,
        currency: Currency::parse(currency).unwrap(),
        utm_source: Some("search".to_owned()),
        utm_medium: None,
        utm_campaign: None,
        utm_term: Some(SUBJECT.to_owned()),
        utm_content: None,
    };
    vec![
        e(1, EventType::Impression, at(6, 1), "Brand Search", 4_000, 0),
        e(2, EventType::Click, at(6, 2), "Brand Search", 700_000, 0),
        e(3, EventType::Impression, at(5, 1), "Subject Only", 3_000, 0),
        e(4, EventType::Click, at(5, 2), "Subject Only", 500_000, 0),
        e(
            5,
            EventType::Conversion,
            at(5, 3),
            "Brand Search",
            0,
            90_000_000,
        ),
        e(6, EventType::Click, at(3, 1), "Retargeting", 300_000, 0),
        e(
            7,
            EventType::Conversion,
            at(2, 1),
            "Retargeting",
            0,
            40_000_000,
        ),
        e(8, EventType::Spend, at(2, 2), "Subject Only", 1_000_000, 0),
    ]
}

/// Pushes through ingest, `batch` events per request (one loading transaction each).
async fn push(stack: &Stack, token: &str, events: &[Event], batch: usize) {
    let (accepted, duplicates) =
        xtask::seed::push(&stack.client, &stack.ingest_url, token, events, batch)
            .await
            .unwrap();
    assert_eq!((accepted, duplicates), (events.len() as u64, 0));
}

async fn erase(stack: &Stack, token: &str, user_key: &str) -> reqwest::Response {
    let mut url = reqwest::Url::parse(&stack.api_url).unwrap();
    url.path_segments_mut()
        .unwrap()
        .extend(["v1", "subjects", user_key]);
    stack
        .client
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

async fn accepted(stack: &Stack, token: &str, user_key: &str) -> Value {
    let r = erase(stack, token, user_key).await;
    assert_eq!(r.status(), 202, "erasure of {user_key:?}");
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        location,
        format!("/v1/subjects/erasures/{}", body["id"].as_str().unwrap())
    );
    body
}

/// Runs the transform as `beacon_transform` until nothing is left (small chunks, so
/// erasure steps meet batches not yet aggregated).
async fn transform_all(stack: &Stack, settings: &Settings) {
    let pool = stack.db("beacon_transform").pool();
    for _ in 0..50 {
        let stats = pipeline::transform::run_once_with(&pool, settings)
            .await
            .unwrap();
        if stats == Default::default() {
            return;
        }
    }
    panic!("the transform did not finish");
}

/// Raw events of [`SUBJECT`] in `tenant`.
async fn subject_events_of(owner: &mut PgConnection, tenant: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM raw.events WHERE tenant_id = $1 AND user_key = $2")
        .bind(tenant)
        .bind(SUBJECT)
        .fetch_one(owner)
        .await
        .unwrap()
}

/// Every row of `tenant` in every Beacon table whose text contains `needle`, by table.
async fn rows_containing(owner: &mut PgConnection, tenant: Uuid, needle: &str) -> Vec<String> {
    let tables: Vec<(String, bool)> = sqlx::query_as(
        "SELECT format('%I.%I', n.nspname, c.relname),
                EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id')
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('app', 'raw', 'output') AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY 1",
    )
    .fetch_all(&mut *owner)
    .await
    .unwrap();
    assert!(tables.len() > 10, "{tables:?}");
    let mut found = Vec::new();
    for (table, tenant_column) in tables {
        let filter = if tenant_column {
            "x.tenant_id = $1"
        } else if table == "app.tenants" {
            "x.id = $1"
        } else {
            "true"
        };
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} x WHERE {filter} AND strpos(x::text, $2) > 0"
        ))
        .bind(tenant)
        .bind(needle)
        .fetch_one(&mut *owner)
        .await
        .unwrap();
        if n > 0 {
            found.push(format!("{table}: {n}"));
        }
    }
    found
}

#[sqlx::test(migrations = false)]
async fn erasing_a_subject_recomputes_every_number_from_the_remaining_events(admin: sqlx::PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let tenants = same_currency_tenants("erasure-test-password");
    let (a, b) = (&tenants[0], &tenants[1]);
    let seeded = stack.seed(&tenants, &[1500, 1500], now).await.unwrap();
    let (mut events_a, token_a) = seeded[0].clone();
    let (mut events_b, token_b) = seeded[1].clone();
    // The same subject in both tenants; in A part of it arrives after the first run,
    // so the erasure meets events whose batch is not aggregated yet.
    let subject_a = subject_events("subject-a", a.currency, now);
    let subject_b = subject_events("subject-b", b.currency, now);
    push(&stack, &token_a, &subject_a[..5], 400).await;
    push(&stack, &token_b, &subject_b, 400).await;
    events_a.extend_from_slice(&subject_a[..5]);
    events_b.extend_from_slice(&subject_b);
    stack.transform().await;
    // Late: other users' events, then the rest of the subject, one batch each (the
    // transform takes the oldest batch first, so the subject's are still queued when
    // the first erasure steps delete them).
    let late = xtask::seed::generate_events(99, 12, 10, a.currency, now);
    let late: Vec<Event> = late
        .into_iter()
        .chain(subject_a[5..].iter().cloned())
        .collect();
    push(&stack, &token_a, &late, 1).await;
    events_a.extend_from_slice(&late);
    let mut owner = stack.owner().await;

    // Before: the derived numbers are the events' (A's late batch not yet counted).
    let b_facts = actual_facts(&mut owner, b.id).await;
    let b_attribution = actual_attribution(&mut owner, b.id).await;
    assert_eq!(b_facts, expected_facts(&events_b));
    assert_eq!(b_attribution, expected_attribution(&events_b, 50));
    assert!(
        b_attribution.keys().any(|k| k.1 == "Subject Only"),
        "the subject's clicks are credited before"
    );

    let admin_token = stack.login(&a.admin_email, &a.password).await;
    let first = accepted(&stack, &admin_token, SUBJECT).await;
    assert_eq!(first["status"], "pending");
    // Idempotent while open: the same erasure, not a second one.
    let again = accepted(&stack, &admin_token, SUBJECT).await;
    assert_eq!(again["id"], first["id"]);
    let id = first["id"].as_str().unwrap();

    // One batch per chunk and small steps: the first step meets batches (with the
    // subject's late events) that are not aggregated yet.
    let settings = Settings {
        chunk_events: 1,
        erasure: pipeline::erasure::Limits {
            batch: 3,
            scan_rows: 40,
        },
        ..Settings::default()
    };
    transform_all(&stack, &settings).await;

    let done = stack
        .get_json(&admin_token, &format!("/v1/subjects/erasures/{id}"))
        .await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["events_erased"], subject_a.len() as i64);
    assert_eq!(done["days_recomputed"], 2);
    assert!(done["completed_at"].is_string() && done["erased_at"].is_string());

    // After: A's numbers are those of the remaining events, B's did not move.
    let remaining: Vec<Event> = events_a
        .iter()
        .filter(|e| e.user_key.as_deref() != Some(SUBJECT))
        .cloned()
        .collect();
    assert_eq!(remaining.len(), events_a.len() - subject_a.len());
    let facts_a = actual_facts(&mut owner, a.id).await;
    assert_eq!(facts_a, expected_facts(&remaining));
    assert!(
        !facts_a.keys().any(|k| k.1 == "Subject Only"),
        "a facts row only the subject made is gone"
    );
    assert_eq!(
        actual_attribution(&mut owner, a.id).await,
        expected_attribution(&remaining, 50)
    );
    assert_eq!(actual_facts(&mut owner, b.id).await, b_facts);
    assert_eq!(actual_attribution(&mut owner, b.id).await, b_attribution);
    assert_eq!(
        subject_events_of(&mut owner, b.id).await,
        subject_b.len() as i64,
        "B's subject untouched"
    );

    // The KPIs the api serves agree: revenue over the whole range is the remaining
    // events' revenue.
    let from = (now - Duration::days(60)).date();
    let overview = stack
        .get_json(
            &admin_token,
            &format!("/v1/overview?from={from}&to={}", now.date()),
        )
        .await;
    let sums = expected_facts(&remaining)
        .values()
        .fold([0; 5], |mut acc, row| {
            for (a, v) in acc.iter_mut().zip(row) {
                *a += v;
            }
            acc
        });
    let current = &overview["current"];
    let served: Vec<i64> = [
        "impressions",
        "clicks",
        "conversions",
        "spend_micros",
        "revenue_micros",
    ]
    .iter()
    .map(|k| current[k].as_i64().unwrap_or(-1))
    .collect();
    assert_eq!(served, sums.to_vec(), "{overview}");

    // The clear key is in no row of A, anywhere; the audit log names the hash.
    assert_eq!(
        rows_containing(&mut owner, a.id, SUBJECT).await,
        Vec::<String>::new()
    );
    assert!(!rows_containing(&mut owner, b.id, SUBJECT).await.is_empty());
    let audit = stack.get_json(&admin_token, "/v1/audit-log").await;
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "subject.erasure_requested")
        .expect("the request is audited");
    assert_eq!(entry["details"]["erasure"], first["id"]);
    assert_eq!(entry["details"]["subject_hash"], first["subject_hash"]);
    assert!(entry["actor"].as_str().unwrap().starts_with("user:"));
    assert_eq!(first["subject_hash"].as_str().unwrap().len(), 64);
    let requests = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "subject.erasure_requested")
        .count();
    assert_eq!(requests, 1, "a repeated request is not a second erasure");

    // Asked again once completed: a new erasure that finds nothing, and nothing changes.
    let later = accepted(&stack, &admin_token, SUBJECT).await;
    assert_ne!(later["id"], first["id"]);
    assert_eq!(later["subject_hash"], first["subject_hash"]);
    transform_all(&stack, &Settings::default()).await;
    let later = stack
        .get_json(
            &admin_token,
            &format!("/v1/subjects/erasures/{}", later["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(
        (later["status"].as_str(), later["events_erased"].as_i64()),
        (Some("completed"), Some(0))
    );
    assert_eq!(actual_facts(&mut owner, a.id).await, facts_a);
}

#[sqlx::test(migrations = false)]
async fn only_the_scope_erases_only_in_its_tenant_and_open_erasures_are_bounded(
    admin: sqlx::PgPool,
) {
    let stack = Stack::start(admin).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let tenants = same_currency_tenants("erasure-test-password");
    let (a, b) = (&tenants[0], &tenants[1]);
    let seeded = stack.seed(&tenants, &[20, 20], now).await.unwrap();
    // A key only tenant B has.
    let only_b = subject_events("only-b", b.currency, now);
    push(&stack, &seeded[1].1, &only_b, 400).await;
    stack.transform().await;

    // Without the scope: 403, whoever asks.
    let viewer = stack.login(&a.viewer_email, &a.password).await;
    let hour = time::Duration::hours(1);
    let forbidden = [
        viewer,
        stack.sign_token(a.id, "kpis:read", hour),
        stack.sign_token(a.id, "events:write", hour),
        stack.sign_token(a.id, "kpis:read tenant:admin", hour),
    ];
    for token in &forbidden {
        assert_eq!(erase(&stack, token, SUBJECT).await.status(), 403);
        let missing = format!("/v1/subjects/erasures/{}", Uuid::new_v4());
        assert_eq!(
            stack
                .api_status(reqwest::Method::GET, &missing, token)
                .await,
            403
        );
    }
    assert_eq!(erase(&stack, "not-a-token", SUBJECT).await.status(), 401);

    // An API key created with the scope (the tenant's privacy tooling) may.
    let admin_token = stack.login(&a.admin_email, &a.password).await;
    let created: Value = stack
        .client
        .post(format!("{}/v1/api-keys", stack.api_url))
        .bearer_auth(&admin_token)
        .json(&serde_json::json!({ "name": "privacy tool", "scopes": ["subjects:erase"] }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key_token = xtask::seed::ingest_token(
        &stack.client,
        &stack.api_url,
        created["secret"].as_str().unwrap(),
    )
    .await
    .unwrap();
    // Tenant A erasing a key only B has deletes nothing of B's.
    let erasure = accepted(&stack, &key_token, SUBJECT).await;
    assert!(
        erasure["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("key:")
    );
    stack.transform().await;
    let path = format!("/v1/subjects/erasures/{}", erasure["id"].as_str().unwrap());
    let done = stack.get_json(&key_token, &path).await;
    assert_eq!(
        (done["status"].as_str(), done["events_erased"].as_i64()),
        (Some("completed"), Some(0))
    );
    let mut owner = stack.owner().await;
    assert_eq!(
        subject_events_of(&mut owner, b.id).await,
        only_b.len() as i64
    );
    // B cannot see A's erasure: not found, like any id.
    let b_admin = stack.login(&b.admin_email, &b.password).await;
    assert_eq!(
        stack
            .api_status(reqwest::Method::GET, &path, &b_admin)
            .await,
        404
    );

    // Bad keys: 400 problem+json.
    for bad in [
        "a\u{1}b",
        &"x".repeat(api::subjects::MAX_USER_KEY_CHARS + 1),
    ] {
        let r = erase(&stack, &admin_token, bad).await;
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{bad:?}"
        );
    }

    // At most max_pending_erasures open (nothing runs the transform now): then 429
    // with Retry-After, while repeating an open one still answers it.
    let limit = api::Protection::default().max_pending_erasures;
    let mut open = Vec::new();
    for i in 0..limit {
        open.push(accepted(&stack, &admin_token, &format!("user-{i}")).await);
    }
    let refused = erase(&stack, &admin_token, "one-too-many").await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let again = accepted(&stack, &admin_token, "user-0").await;
    assert_eq!(again["id"], open[0]["id"]);
    // B's own budget is its own.
    accepted(&stack, &b_admin, "one-too-many").await;
    // Once they complete, A may ask again.
    stack.transform().await;
    accepted(&stack, &admin_token, "one-too-many").await;
}

/// A restore to a point before an erasure brings the subject's events back; replaying
/// the ledger (hashes only) erases them again, and only them.
#[sqlx::test(migrations = false)]
async fn a_restore_to_an_earlier_point_replays_the_erasure_ledger(admin: sqlx::PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let tenants = same_currency_tenants("erasure-test-password");
    let (a, b) = (&tenants[0], &tenants[1]);
    let seeded = stack.seed(&tenants, &[200, 200], now).await.unwrap();
    let subject_a = subject_events("subject-a", a.currency, now);
    let subject_b = subject_events("subject-b", b.currency, now);
    push(&stack, &seeded[0].1, &subject_a, 400).await;
    push(&stack, &seeded[1].1, &subject_b, 400).await;
    stack.transform().await;
    let admin_token = stack.login(&a.admin_email, &a.password).await;
    accepted(&stack, &admin_token, SUBJECT).await;
    stack.transform().await;
    let mut owner = stack.owner().await;
    let erased_facts = actual_facts(&mut owner, a.id).await;

    // The ledger, exported from the current cluster: no clear key in it.
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT tenant_id, encode(subject_hash, 'hex') FROM app.erasures")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    let ledger: String = rows.iter().map(|(t, h)| format!("{t},{h}\n")).collect();
    assert!(!ledger.contains(SUBJECT));
    // "Restored" to before the erasure: the subject's events are back, the ledger row
    // is not.
    sqlx::query("DELETE FROM app.erasures")
        .execute(&mut owner)
        .await
        .unwrap();
    push(&stack, &seeded[0].1, &subject_a, 400).await;
    stack.transform().await;
    assert_eq!(
        subject_events_of(&mut owner, a.id).await,
        subject_a.len() as i64
    );

    let key = api::subjects::SubjectKey::new(
        &std::fs::read(stack.cert(xtask::secrets::SUBJECT_HASH_KEY)).unwrap(),
    )
    .unwrap();
    let ledger = xtask::erasure::parse_ledger(&ledger).unwrap();
    let requested = xtask::erasure::replay(&mut owner, &key, &ledger)
        .await
        .unwrap();
    assert_eq!(requested, 1);
    stack.transform().await;
    assert_eq!(subject_events_of(&mut owner, a.id).await, 0);
    assert_eq!(actual_facts(&mut owner, a.id).await, erased_facts);
    assert_eq!(
        subject_events_of(&mut owner, b.id).await,
        subject_b.len() as i64,
        "only the ledger's subjects"
    );
    let open: i64 =
        sqlx::query_scalar("SELECT count(*) FROM app.erasures WHERE status <> 'completed'")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert_eq!(open, 0);
}
