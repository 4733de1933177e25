use proptest::prelude::*;
use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2026-06-15 12:00 UTC);

fn line(extra: &str) -> String {
    format!(
        r#"{{"event_id":"e1","type":"click","occurred_at":"2026-06-15T10:00:00+02:00","campaign":"Summer Sale","channel":"search","currency":"EUR","cost_micros":250000{extra}}}"#
    )
}

#[test]
fn parses_a_valid_event_in_utc() {
    let events = parse_ndjson(line("").as_bytes(), &Limits::default(), NOW).unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].occurred_at, datetime!(2026-06-15 08:00 UTC));
    assert_eq!(events[0].cost_micros, 250_000);
    assert_eq!(events[0].currency.as_str(), "EUR");
}

#[test]
fn tenant_field_is_refused_with_an_explanation() {
    let err = parse_ndjson(
        line(r#","tenant_id":"x""#).as_bytes(),
        &Limits::default(),
        NOW,
    )
    .unwrap_err();
    let BatchError::Invalid { errors, .. } = err else {
        panic!("{err:?}")
    };
    assert_eq!(errors[0].field.as_deref(), Some("tenant_id"));
    assert!(errors[0].message.contains("credential"));
}

#[test]
fn errors_name_line_and_field_and_the_batch_is_refused() {
    let body = format!(
        "{}\n{}\n",
        line(""),
        line("").replace("click", "clack").replace("e1", "e2")
    );
    let BatchError::Invalid { errors, .. } =
        parse_ndjson(body.as_bytes(), &Limits::default(), NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(
        errors,
        vec![FieldError {
            line: 2,
            column: None,
            field: Some("type".into()),
            message: "must be one of impression, click, conversion, spend".into()
        }]
    );
}

#[test]
fn limits_are_enforced() {
    let limits = Limits {
        max_events: 1,
        ..Limits::default()
    };
    let body = format!("{}\n{}\n", line(""), line("").replace("e1", "e2"));
    assert_eq!(
        parse_ndjson(body.as_bytes(), &limits, NOW).unwrap_err(),
        BatchError::TooManyEvents { max: 1 }
    );
    let far_future = line("").replace("2026-06-15T10", "2026-06-16T10");
    assert!(parse_ndjson(far_future.as_bytes(), &Limits::default(), NOW).is_err());
    let negative = line("").replace("250000", "-1");
    assert!(parse_ndjson(negative.as_bytes(), &Limits::default(), NOW).is_err());
    assert_eq!(
        parse_ndjson(b"\n\n", &Limits::default(), NOW).unwrap_err(),
        BatchError::Empty
    );
}

#[test]
fn conversion_needs_revenue_and_duplicates_are_refused() {
    let conv = line("").replace("click", "conversion");
    assert!(parse_ndjson(conv.as_bytes(), &Limits::default(), NOW).is_err());
    let dup = format!("{}\n{}\n", line(""), line(""));
    assert!(parse_ndjson(dup.as_bytes(), &Limits::default(), NOW).is_err());
}

fn csv_body(rows: &[&str]) -> String {
    let mut s =
        "event_id,type,occurred_at,campaign,channel,currency,cost_micros,revenue_micros,user_key\n"
            .to_owned();
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

#[test]
fn csv_parses_like_ndjson() {
    let body = csv_body(&[
        "e1,click,2026-06-15T10:00:00+02:00,Summer Sale,search,EUR,250000,,u1",
        "e2,conversion,2026-06-15T11:00:00Z,\"Sale, \"\"big\"\"\",search,EUR,,990000,u1",
    ]);
    let events = parse_csv(body.as_bytes(), &Limits::default(), NOW).unwrap();
    assert_eq!(events.len(), 2);
    let from_json = parse_ndjson(
        line("")
            .replace("\"cost", "\"user_key\":\"u1\",\"cost")
            .as_bytes(),
        &Limits::default(),
        NOW,
    )
    .unwrap();
    assert_eq!(events[0], from_json[0]);
    assert_eq!(events[1].campaign, "Sale, \"big\"");
    assert_eq!(events[1].revenue_micros, 990_000);
}

#[test]
fn csv_errors_name_line_column_and_field() {
    let body = csv_body(&[
        "e1,click,2026-06-15T10:00:00Z,Summer Sale,search,EUR,250000,,u1",
        "e2,click,2026-06-15T10:00:00Z,Summer Sale,search,EUR,lots,,u1",
        "e3,clack,2026-06-15T10:00:00Z,Summer Sale,search,EUR,1,,u1",
        "e4,click,2026-06-15T10:00:00Z,Summer Sale,search",
    ]);
    let BatchError::Invalid { errors, .. } =
        parse_csv(body.as_bytes(), &Limits::default(), NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(errors[0].line, 3);
    assert_eq!(errors[0].column, Some(7));
    assert_eq!(errors[0].field.as_deref(), Some("cost_micros"));
    assert_eq!(errors[1].line, 4);
    assert_eq!(errors[1].column, Some(2));
    assert_eq!(errors[1].field.as_deref(), Some("type"));
    assert_eq!(errors[2].line, 5);
    assert!(errors[2].message.contains("fields"), "{:?}", errors[2]);
}

#[test]
fn csv_header_is_checked() {
    let tenant = "event_id,type,occurred_at,campaign,channel,currency,tenant_id\n";
    let BatchError::Invalid { errors, .. } =
        parse_csv(tenant.as_bytes(), &Limits::default(), NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(errors[0].column, Some(7));
    assert!(errors[0].message.contains("credential"));
    let missing = "event_id,type,occurred_at,campaign,channel,colour\n";
    let BatchError::Invalid { errors, .. } =
        parse_csv(missing.as_bytes(), &Limits::default(), NOW).unwrap_err()
    else {
        panic!()
    };
    assert!(
        errors
            .iter()
            .any(|e| e.column == Some(6) && e.message.contains("unknown column"))
    );
    assert!(
        errors
            .iter()
            .any(|e| e.field.as_deref() == Some("currency") && e.message.contains("missing"))
    );
    assert_eq!(
        parse_csv(b"", &Limits::default(), NOW).unwrap_err(),
        BatchError::Empty
    );
    let header_only = csv_body(&[]);
    assert_eq!(
        parse_csv(header_only.as_bytes(), &Limits::default(), NOW).unwrap_err(),
        BatchError::Empty
    );
}

#[test]
fn csv_limits_and_duplicates() {
    let limits = Limits {
        max_events: 1,
        ..Limits::default()
    };
    let body = csv_body(&[
        "e1,click,2026-06-15T10:00:00Z,S,search,EUR,1,,u1",
        "e2,click,2026-06-15T10:00:00Z,S,search,EUR,1,,u1",
    ]);
    assert_eq!(
        parse_csv(body.as_bytes(), &limits, NOW).unwrap_err(),
        BatchError::TooManyEvents { max: 1 }
    );
    let dup = csv_body(&[
        "e1,click,2026-06-15T10:00:00Z,S,search,EUR,1,,u1",
        "e1,click,2026-06-15T10:00:00Z,S,search,EUR,1,,u1",
    ]);
    let BatchError::Invalid { errors, .. } =
        parse_csv(dup.as_bytes(), &Limits::default(), NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!((errors[0].line, errors[0].column), (3, Some(1)));
}

fn arb_event() -> impl Strategy<Value = Event> {
    (
        "[a-zA-Z0-9-]{1,40}",
        prop_oneof![
            Just(EventType::Impression),
            Just(EventType::Click),
            Just(EventType::Conversion),
            Just(EventType::Spend)
        ],
        0i64..86_400 * 30,
        "[ -~]{1,60}",
        "[a-z0-9_-]{1,20}",
        proptest::option::of("[a-f0-9]{8,32}"),
        1i64..1_000_000_000,
        0i64..1_000_000_000,
        proptest::option::of("[ -~]{1,30}"),
    )
        .prop_map(
            |(id, ty, secs, campaign, channel, user, cost, revenue, utm)| Event {
                event_id: id,
                event_type: ty,
                occurred_at: NOW - Duration::seconds(secs),
                campaign,
                channel,
                user_key: user,
                cost_micros: cost,
                revenue_micros: if ty == EventType::Conversion {
                    revenue
                } else {
                    0
                },
                currency: Currency::parse("USD").unwrap(),
                utm_source: utm,
                utm_medium: None,
                utm_campaign: None,
                utm_term: None,
                utm_content: None,
            },
        )
}

fn valid_batch(events: Vec<Event>) -> Vec<Event> {
    let mut seen = std::collections::HashSet::new();
    events
        .into_iter()
        .filter(|e| seen.insert(e.event_id.clone()))
        .collect()
}

fn is_clear(result: &Result<Vec<Event>, BatchError>) -> bool {
    match result {
        Ok(events) => !events.is_empty(),
        Err(BatchError::Invalid { errors, .. }) => {
            !errors.is_empty() && errors.iter().all(|e| e.line >= 1 && !e.message.is_empty())
        }
        Err(BatchError::Empty | BatchError::TooManyEvents { .. } | BatchError::TooLarge { .. }) => {
            true
        }
    }
}

fn capped(result: &Result<Vec<Event>, BatchError>, limits: &Limits) -> bool {
    match result {
        Err(BatchError::Invalid { errors, .. }) => errors.len() <= limits.max_errors,
        _ => true,
    }
}

#[test]
fn header_errors_are_capped_while_collected() {
    // Wide enough to pass the scan: the cap, not the scan, bounds the list.
    let limits = Limits {
        max_fields: 200_000,
        max_line_bytes: 1 << 20,
        ..Limits::default()
    };
    let header = vec!["colour"; 100_000].join(",");
    let BatchError::Invalid { errors, truncated } =
        parse_csv(header.as_bytes(), &limits, NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(errors.len(), limits.max_errors);
    assert!(truncated);
    assert_eq!(errors.last().unwrap().column, Some(20));
    // Exactly at the cap: nothing was dropped, so not truncated.
    let few = Limits {
        max_errors: 7,
        ..Limits::default()
    };
    // Six unknown columns and the missing currency: seven errors, all kept.
    let header = "event_id,type,occurred_at,campaign,channel,a,b,c,d,e,f\n";
    let BatchError::Invalid { errors, truncated } =
        parse_csv(header.as_bytes(), &few, NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!((errors.len(), truncated), (7, false));
}

#[test]
fn line_errors_are_capped_while_collected() {
    let limits = Limits {
        max_errors: 3,
        ..Limits::default()
    };
    // Each line has seven wrong fields: the list stops at three, mid-line.
    let bad = r#"{"event_id":"","type":"x","occurred_at":"x","campaign":"","channel":"X","currency":"x","cost_micros":-1}"#;
    let body = format!("{bad}\n").repeat(50);
    let BatchError::Invalid { errors, truncated } =
        parse_ndjson(body.as_bytes(), &limits, NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(errors.len(), 3);
    assert!(truncated);
    assert!(errors.iter().all(|e| e.line == 1));
}

#[test]
fn the_canonical_batch_is_bounded() {
    let events: Vec<Event> = (0..100)
        .map(|i| {
            let mut e =
                parse_ndjson(line("").as_bytes(), &Limits::default(), NOW).unwrap()[0].clone();
            e.event_id = format!("e{i}");
            e
        })
        .collect();
    let body = to_ndjson(&events);
    let exact = Limits {
        max_batch_bytes: body.len(),
        ..Limits::default()
    };
    assert_eq!(parse_ndjson(body.as_bytes(), &exact, NOW).unwrap(), events);
    assert_eq!(
        parse_csv(to_csv(&events).as_bytes(), &exact, NOW).unwrap(),
        events
    );
    let one_less = Limits {
        max_batch_bytes: body.len() - 1,
        ..Limits::default()
    };
    for parsed in [
        parse_ndjson(body.as_bytes(), &one_less, NOW),
        parse_csv(to_csv(&events).as_bytes(), &one_less, NOW),
    ] {
        assert_eq!(
            parsed.unwrap_err(),
            BatchError::TooLarge {
                max_bytes: body.len() - 1
            }
        );
    }
}

#[test]
fn an_event_the_loader_would_refuse_is_refused_here() {
    // CSV backslashes double in JSON: a CSV line within the limit whose canonical
    // line is not would pass ingest and fail at the loader.
    let limits = Limits {
        max_line_bytes: 600,
        ..Limits::default()
    };
    let slashes = "\\".repeat(250);
    let body = csv_body(&[&format!(
        "e1,click,2026-06-15T10:00:00Z,{slashes},search,EUR,1,,u1"
    )]);
    assert!(body.lines().all(|l| l.len() <= 600));
    let BatchError::Invalid { errors, .. } = parse_csv(body.as_bytes(), &limits, NOW).unwrap_err()
    else {
        panic!()
    };
    assert_eq!(errors[0].line, 2);
    assert!(errors[0].message.contains("canonical"), "{:?}", errors[0]);
    assert!(limits.check().is_ok());
    assert_eq!(
        Limits {
            max_fields: 13,
            ..limits
        }
        .check()
        .unwrap_err()
        .0,
        "max_fields"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        prop_assert!(is_clear(&parse_ndjson(&body, &Limits::default(), NOW)));
        prop_assert!(is_clear(&parse_csv(&body, &Limits::default(), NOW)));
    }

    /// Whatever the body, the error list never holds more than the cap.
    #[test]
    fn error_lists_never_exceed_the_cap(
        rows in proptest::collection::vec("[a-z0-9,\"\r\n:{}\\[\\]TZ. -]{0,60}", 0..60),
        max_errors in 1usize..6,
    ) {
        let limits = Limits { max_errors, max_line_bytes: 512, max_fields: 14, ..Limits::default() };
        let mut body = FIELDS.join(",");
        for r in rows { body.push('\n'); body.push_str(&r); }
        prop_assert!(capped(&parse_csv(body.as_bytes(), &limits, NOW), &limits));
        prop_assert!(capped(&parse_ndjson(body.as_bytes(), &limits, NOW), &limits));
        prop_assert!(capped(&parse_csv(&body.as_bytes()[FIELDS.join(",").len()..], &limits, NOW), &limits));
    }

    /// Bytes that look like CSV (a valid header, then noise with commas, quotes and
    /// newlines) reach the record parser rather than stopping at the header.
    #[test]
    fn csv_like_noise_never_panics(rows in proptest::collection::vec("[a-z0-9,\"\r\n:TZ. -]{0,80}", 0..20)) {
        let mut body = FIELDS.join(",");
        for r in rows { body.push('\n'); body.push_str(&r); }
        prop_assert!(is_clear(&parse_csv(body.as_bytes(), &Limits::default(), NOW)));
    }

    #[test]
    fn valid_events_round_trip(events in proptest::collection::vec(arb_event(), 1..20)) {
        let events = valid_batch(events);
        let parsed = parse_ndjson(to_ndjson(&events).as_bytes(), &Limits::default(), NOW).unwrap();
        prop_assert_eq!(parsed, events);
    }

    #[test]
    fn valid_events_round_trip_through_csv(events in proptest::collection::vec(arb_event(), 1..20)) {
        let events = valid_batch(events);
        let parsed = parse_csv(to_csv(&events).as_bytes(), &Limits::default(), NOW).unwrap();
        prop_assert_eq!(parsed, events);
    }
}
