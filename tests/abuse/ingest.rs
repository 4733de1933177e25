//! Hostile bodies against ingest (issue 10, item 3): ingest's memory is bounded by its
//! configuration, not by what a client sends. Every service runs with its production
//! defaults. Each scenario is answered 400/413/503 problem+json naming the limit,
//! stores nothing, keeps the peak RSS of ingest and loader under their manifests'
//! limits and every process running; afterwards a valid batch is accepted.

use std::{io::Write as _, path::Path, time::Instant};

use beacon_e2e::procs::{ProcStack, record};
use domain::Event;
use serde_json::Value;
use sqlx::PgPool;
use time::OffsetDateTime;
use xtask::seed::{DemoTenant, demo_tenants, generate_events};

const MIB: usize = 1 << 20;
/// The production default of `BEACON_MAX_DECODED_BODY_BYTES`.
const MAX_DECODED: usize = 16 * MIB;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Three tenants: the two demo ones and a third, so "several clients" are several
/// tenants, each within its own rate limit.
fn tenants() -> Vec<DemoTenant> {
    let mut all = demo_tenants("abuse-ingest-password").to_vec();
    let mut third = all[0].clone();
    third.id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"initech.beacon.local");
    third.slug = "initech";
    third.name = "Initech";
    third.admin_email = "admin@initech.example".into();
    third.viewer_email = "viewer@initech.example".into();
    all.push(third);
    all
}

/// Events whose canonical lines are about `line_bytes` long (at most ~2.3 KiB: eight
/// text fields of up to 256 characters), made of words, so gzip shrinks them about as
/// much as real data.
fn fat_events(seed: u64, n: usize, line_bytes: usize) -> Vec<Event> {
    const WORDS: [&str; 16] = [
        "spring", "launch", "brand", "search", "retarget", "promo", "summer", "sale", "outdoor",
        "retail", "shoes", "jacket", "email", "social", "display", "video",
    ];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut text = |len: usize| -> String {
        let mut out = String::with_capacity(len + 8);
        while out.len() < len {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            out.push_str(WORDS[(state % 16) as usize]);
            out.push(' ');
        }
        out.truncate(len);
        out.trim_end().to_owned()
    };
    let per_field = (line_bytes.saturating_sub(300) / 7).clamp(1, 250);
    generate_events(seed, n, 10, "EUR", OffsetDateTime::now_utc())
        .into_iter()
        .map(|mut e| {
            e.campaign = text(per_field);
            e.user_key = Some(text(per_field));
            for utm in [
                &mut e.utm_source,
                &mut e.utm_medium,
                &mut e.utm_campaign,
                &mut e.utm_term,
                &mut e.utm_content,
            ] {
                *utm = Some(text(per_field));
            }
            e
        })
        .collect()
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    problem: Value,
    seconds: f64,
}

/// Where to post events: the client and ingest's URL, cheap to clone into tasks.
#[derive(Clone)]
struct Ingest {
    client: reqwest::Client,
    url: String,
}

impl Ingest {
    fn of(stack: &ProcStack) -> Self {
        Self {
            client: stack.client.clone(),
            url: format!("{}/v1/events", stack.url("ingest")),
        }
    }

    async fn post(&self, token: &str, content_type: &str, gzipped: bool, body: Vec<u8>) -> Answer {
        post(self, token, content_type, gzipped, body).await
    }
}

async fn post(
    ingest: &Ingest,
    token: &str,
    content_type: &str,
    gzipped: bool,
    body: Vec<u8>,
) -> Answer {
    let started = Instant::now();
    let mut request = ingest
        .client
        .post(&ingest.url)
        .bearer_auth(token)
        .header("content-type", content_type);
    if gzipped {
        request = request.header("content-encoding", "gzip");
    }
    let r = request.body(body).send().await.expect("ingest answers");
    let status = r.status().as_u16();
    let is_problem = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/problem+json");
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let problem: Value = r.json().await.unwrap_or(Value::Null);
    assert!(
        status == 200 || is_problem,
        "{status} without problem+json: {problem}"
    );
    Answer {
        status,
        retry_after,
        problem,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// Rows of `raw.events`, counted as the owner (no RLS in the way).
async fn stored(stack: &ProcStack) -> i64 {
    let mut owner = stack.owner().await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM raw.events")
        .fetch_one(&mut owner)
        .await
        .unwrap()
}

/// Resets `VmHWM` so the next peak is this scenario's alone.
fn reset_peaks(stack: &mut ProcStack) {
    for name in ["ingest", "loader"] {
        let pid = stack.service(name).pid();
        std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset peak RSS");
    }
}

/// Peak RSS of ingest and loader against their manifests' limits, recorded.
fn check_memory(stack: &mut ProcStack, scenario: &str) {
    for name in ["ingest", "loader"] {
        let (peak, limit) = stack.memory_report(name, name).unwrap();
        record(scenario, &format!("{name} peak RSS"), peak, limit, "MiB");
        assert!(
            peak < limit,
            "{scenario}: {name} peaked at {peak:.1} MiB, its manifest allows {limit:.1} MiB"
        );
    }
    assert_eq!(stack.all_running(), Ok(()), "{scenario}: a process died");
}

struct Hostile {
    scenario: &'static str,
    content_type: &'static str,
    gzipped: bool,
    body: Vec<u8>,
    status: u16,
    /// Text the problem must contain: the limit it hit.
    names: &'static str,
}

fn hostile_bodies() -> Vec<Hostile> {
    let just_under = MAX_DECODED - 64 * 1024;
    let deep_line = format!("{}{}\n", "[".repeat(4000), "]".repeat(4000));
    let wide_row = format!("{}\n", ",".repeat(4000));
    // CSV is smaller than its canonical NDJSON (no keys): within the decoded limit
    // as sent, over the canonical limit once parsed.
    let over_canonical = fat_events(7, 10_000, 1_750);
    let too_many_bytes = domain::to_csv(&over_canonical);
    assert!(
        too_many_bytes.len() < MAX_DECODED,
        "{}",
        too_many_bytes.len()
    );
    assert!(domain::to_ndjson(&over_canonical).len() > 16 * MIB);
    let too_many_events = domain::to_ndjson(&generate_events(
        8,
        10_001,
        10,
        "EUR",
        OffsetDateTime::now_utc(),
    ));
    vec![
        Hostile {
            scenario: "csv: 32 KB gzip of commas",
            content_type: "text/csv",
            gzipped: true,
            body: gzip(&vec![b','; 32 * MIB]),
            status: 413,
            names: "decoded_body_bytes",
        },
        Hostile {
            scenario: "csv: gzip of commas just under the decoded limit",
            content_type: "text/csv",
            gzipped: true,
            body: gzip(&vec![b','; just_under]),
            status: 400,
            names: "line longer than 8192 bytes",
        },
        Hostile {
            scenario: "csv: 4000 lines of 4000 commas",
            content_type: "text/csv",
            gzipped: true,
            body: gzip(wide_row.repeat(4000).as_bytes()),
            status: 400,
            names: "more than 32 fields",
        },
        Hostile {
            scenario: "csv: gzip bomb of newlines",
            content_type: "text/csv",
            gzipped: true,
            body: gzip(&vec![b'\n'; just_under]),
            status: 400,
            names: "empty",
        },
        Hostile {
            scenario: "ndjson: gzip bomb of newlines past the decoded limit",
            content_type: "application/x-ndjson",
            gzipped: true,
            body: gzip(&vec![b'\n'; 2 * MAX_DECODED]),
            status: 413,
            names: "decoded_body_bytes",
        },
        Hostile {
            scenario: "ndjson: one giant line",
            content_type: "application/x-ndjson",
            gzipped: true,
            body: gzip(
                &[
                    b"{\"event_id\":\"".as_slice(),
                    &vec![b'x'; just_under - 20],
                    b"\"}",
                ]
                .concat(),
            ),
            status: 400,
            names: "line longer than 8192 bytes",
        },
        Hostile {
            scenario: "ndjson: 2000 lines nested 4000 deep",
            content_type: "application/x-ndjson",
            gzipped: true,
            body: gzip(deep_line.repeat(2000).as_bytes()),
            status: 400,
            names: "JSON nested deeper than 8 levels",
        },
        Hostile {
            scenario: "csv: valid events, canonical batch over its limit",
            content_type: "text/csv",
            gzipped: true,
            body: gzip(too_many_bytes.as_bytes()),
            status: 413,
            names: "batch_bytes",
        },
        Hostile {
            scenario: "ndjson: one event more than a batch may hold",
            content_type: "application/x-ndjson",
            gzipped: false,
            body: too_many_events.into_bytes(),
            status: 413,
            names: "events_per_batch",
        },
    ]
}

/// What the problem says, as one searchable text.
fn problem_text(problem: &Value) -> String {
    problem.to_string()
}

#[sqlx::test(migrations = false)]
async fn hostile_bodies_are_refused_within_the_memory_limits(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let mut stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    let tenants = tenants();
    let token = stack.tenant(&tenants[0]).await.unwrap();
    let ingest = Ingest::of(&stack);
    for h in hostile_bodies() {
        reset_peaks(&mut stack);
        let sent = h.body.len();
        let answer = ingest.post(&token, h.content_type, h.gzipped, h.body).await;
        record(
            h.scenario,
            "body as sent",
            sent as f64 / 1024.0,
            8.0 * 1024.0,
            "KiB",
        );
        record(h.scenario, "answer time", answer.seconds, 30.0, "s");
        check_memory(&mut stack, h.scenario);
        assert_eq!(
            answer.status, h.status,
            "{}: {}",
            h.scenario, answer.problem
        );
        let text = problem_text(&answer.problem);
        assert!(
            text.contains(h.names),
            "{}: the problem does not name {:?}: {text}",
            h.scenario,
            h.names
        );
        if let Some(lines) = answer.problem["errors"]["lines"].as_array() {
            assert!(lines.len() <= 20, "{}: {} errors", h.scenario, lines.len());
        }
        assert_eq!(
            stored(&stack).await,
            0,
            "{}: something was stored",
            h.scenario
        );
    }
    // Afterwards a valid batch goes through.
    let events = generate_events(9, 500, 10, "EUR", OffsetDateTime::now_utc());
    let answer = ingest
        .post(
            &token,
            "text/csv",
            true,
            gzip(domain::to_csv(&events).as_bytes()),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.problem);
    assert_eq!(answer.problem["accepted"], 500);
    assert_eq!(stored(&stack).await, 500);
    for service in stack.services.values_mut() {
        service.terminate().await.unwrap();
    }
}

/// Many clients at once, each with a body at the size limits: the in-flight budget
/// makes the excess wait, then answers 503 with `Retry-After`; ingest and loader stay
/// under their limits; hostile bodies store nothing and valid ones are stored exactly.
#[sqlx::test(migrations = false)]
async fn concurrent_max_size_bodies_stay_within_the_budget(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let mut stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    let mut tokens = Vec::new();
    for t in tenants() {
        tokens.push(stack.tenant(&t).await.unwrap());
    }
    // Hostile, gzip: fat valid events just under the decoded limit (parsed in full),
    // then one bad line (400). Hostile, plain: just under the 8 MiB body limit, the
    // bad line last. Valid: 5,000 fat events (~7.5 MiB canonical) per client, stored.
    // Every body is ready before the first is sent, so they arrive together.
    let bad_line = "{\"event_id\":\"bad\"}\n";
    let mut events = fat_events(11, 9_999, 1_700);
    while domain::to_ndjson(&events).len() + bad_line.len() > MAX_DECODED - 64 * 1024 {
        events.truncate(events.len() - 100);
    }
    let zipped = gzip((domain::to_ndjson(&events) + bad_line).as_bytes());
    let plain = domain::to_ndjson(&fat_events(13, 3_400, 2_300)) + bad_line;
    assert!(plain.len() < 8 * MIB, "{}", plain.len());
    let mut bodies: Vec<(String, bool, bool, Vec<u8>)> = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        for _ in 0..3 {
            bodies.push((token.clone(), true, true, zipped.clone()));
        }
        for _ in 0..12 {
            bodies.push((token.clone(), true, false, plain.clone().into_bytes()));
        }
        let mut valid = fat_events(20 + i as u64, 5_000, 1_500);
        for e in &mut valid {
            e.event_id = format!("c{i}-{}", e.event_id);
        }
        let valid = gzip(domain::to_ndjson(&valid).as_bytes());
        bodies.push((token.clone(), false, true, valid));
    }
    let sent: usize = bodies.iter().map(|b| b.3.len()).sum();
    let ingest = Ingest::of(&stack);
    reset_peaks(&mut stack);
    let started = Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for (token, is_hostile, gzipped, body) in bodies {
        let ingest = ingest.clone();
        requests.spawn(async move {
            let answer = ingest
                .post(&token, "application/x-ndjson", gzipped, body)
                .await;
            (is_hostile, answer)
        });
    }
    let answers = requests.join_all().await;
    let elapsed = started.elapsed().as_secs_f64();
    let scenario = "48 concurrent max-size bodies from 3 tenants";
    check_memory(&mut stack, scenario);
    let (mut busy, mut accepted, mut refused) = (0, 0, 0);
    for (is_hostile, answer) in &answers {
        match answer.status {
            503 => {
                busy += 1;
                assert!(
                    answer.retry_after.is_some(),
                    "503 without Retry-After: {}",
                    answer.problem
                );
                // A hostile body never reaches the loader: its 503 can only be the
                // budget's. A valid batch may also meet a loader slower than ingest's
                // timeout on a busy machine (retry; re-sent events are deduplicated).
                let text = problem_text(&answer.problem);
                assert!(
                    text.contains("in_flight_bytes") || !is_hostile,
                    "{}",
                    answer.problem
                );
            }
            400 | 413 if *is_hostile => refused += 1,
            200 if !is_hostile => accepted += answer.problem["accepted"].as_i64().unwrap(),
            other => panic!("{scenario}: unexpected {other}: {}", answer.problem),
        }
    }
    record(
        scenario,
        "answered 503",
        f64::from(busy),
        answers.len() as f64,
        "requests",
    );
    record(
        scenario,
        "refused 400/413",
        f64::from(refused),
        45.0,
        "requests",
    );
    record(
        scenario,
        "bodies as sent",
        sent as f64 / MIB as f64,
        48.0 * 8.0,
        "MiB",
    );
    record(scenario, "all answered after", elapsed, 60.0, "s");
    // Nothing of a hostile body is stored; every accepted event is.
    let mut owner = stack.owner().await.unwrap();
    let (hostile_rows, valid_rows): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE event_id NOT LIKE 'c%'), count(*) FILTER (WHERE event_id LIKE 'c%') FROM raw.events",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert_eq!(hostile_rows, 0, "a hostile body stored something");
    assert!(
        valid_rows >= accepted,
        "{valid_rows} stored, {accepted} accepted"
    );

    // Valid batches just under the canonical limit, two per client at once: the
    // loader holds at most what ingest's budget lets through, and stores them whole.
    let scenario = "6 concurrent valid batches at the canonical limit";
    let mut requests = tokio::task::JoinSet::new();
    let mut sizes = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        for j in 0..2 {
            let prefix = format!("v{i}{j}-");
            let mut events = fat_events(30 + 2 * i as u64 + j, 8_000, 2_300);
            for e in &mut events {
                e.event_id = format!("{prefix}{}", e.event_id);
            }
            while domain::to_ndjson(&events).len() > 16 * MIB - 64 * 1024 {
                events.truncate(events.len() - 200);
            }
            let batch = domain::to_ndjson(&events);
            assert!(batch.len() > 15 * MIB, "{}", batch.len());
            sizes.push((prefix, events.len() as i64));
            let (ingest, token) = (ingest.clone(), token.clone());
            let body = gzip(batch.as_bytes());
            requests.spawn(async move {
                ingest
                    .post(&token, "application/x-ndjson", true, body)
                    .await
            });
        }
    }
    reset_peaks(&mut stack);
    let answers = requests.join_all().await;
    check_memory(&mut stack, scenario);
    let mut accepted = 0;
    for answer in &answers {
        match answer.status {
            200 => accepted += answer.problem["accepted"].as_i64().unwrap(),
            503 => assert!(answer.retry_after.is_some(), "{}", answer.problem),
            other => panic!("{scenario}: unexpected {other}: {}", answer.problem),
        }
    }
    record(
        scenario,
        "events accepted",
        accepted as f64,
        48_000.0,
        "events",
    );
    let mut stored = 0;
    for (prefix, len) in sizes {
        let rows: i64 =
            sqlx::query_scalar("SELECT count(*) FROM raw.events WHERE event_id LIKE $1")
                .bind(format!("{prefix}%"))
                .fetch_one(&mut owner)
                .await
                .unwrap();
        assert!(rows == 0 || rows == len, "{prefix}: {rows} of {len} stored");
        stored += rows;
    }
    assert!(stored >= accepted, "{stored} stored, {accepted} accepted");

    // Afterwards a valid batch goes through.
    let batch = generate_events(12, 100, 10, "EUR", OffsetDateTime::now_utc());
    let answer = ingest
        .post(
            &tokens[0],
            "application/x-ndjson",
            false,
            domain::to_ndjson(&batch).into_bytes(),
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.problem);
    for service in stack.services.values_mut() {
        service.terminate().await.unwrap();
    }
}
