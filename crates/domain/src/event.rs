//! Raw marketing events: impression, click, conversion, spend.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    Impression,
    Click,
    Conversion,
    Spend,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Impression => "impression",
            Self::Click => "click",
            Self::Conversion => "conversion",
            Self::Spend => "spend",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "impression" => Self::Impression,
            "click" => Self::Click,
            "conversion" => Self::Conversion,
            "spend" => Self::Spend,
            _ => return None,
        })
    }
}

/// An ISO 4217 alphabetic currency code (three upper-case ASCII letters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    pub fn parse(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        (b.len() == 3 && b.iter().all(u8::is_ascii_uppercase)).then(|| Self([b[0], b[1], b[2]]))
    }
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("XXX")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated event. Money is in integer micros (1 unit = 1_000_000), never floats;
/// `occurred_at` is UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event_id: String,
    pub event_type: EventType,
    pub occurred_at: OffsetDateTime,
    pub campaign: String,
    pub channel: String,
    pub user_key: Option<String>,
    pub cost_micros: i64,
    pub revenue_micros: i64,
    pub currency: Currency,
    pub utm_source: Option<String>,
    pub utm_medium: Option<String>,
    pub utm_campaign: Option<String>,
    pub utm_term: Option<String>,
    pub utm_content: Option<String>,
}

/// Explicit limits for a batch. All are configurable per deployment.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_string_len: usize,
    pub max_line_bytes: usize,
    pub max_errors: usize,
    pub max_past: Duration,
    pub max_future: Duration,
    /// The largest cost or revenue of one event, in micros.
    pub max_money_micros: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_events: 10_000,
            max_string_len: 256,
            max_line_bytes: 8 * 1024,
            max_errors: 20,
            max_past: Duration::days(400),
            max_future: Duration::minutes(10),
            max_money_micros: 1_000_000_000 * 1_000_000,
        }
    }
}

/// What is wrong with one line (1-based) and which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

/// Why a batch was refused. A batch is all-or-nothing: one bad line refuses it all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
pub enum BatchError {
    #[error("the batch is empty")]
    Empty,
    #[error("the batch has more than {max} events")]
    TooManyEvents { max: usize },
    #[error("{} invalid line(s)", errors.len())]
    Invalid {
        errors: Vec<FieldError>,
        /// More errors existed than the cap reports.
        truncated: bool,
    },
}

/// The wire shape of one NDJSON line. Unknown fields are refused (a typo must not be
/// silently dropped) and a tenant field is refused with an explanation.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    event_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type")]
    event_type: std::borrow::Cow<'a, str>,
    occurred_at: std::borrow::Cow<'a, str>,
    campaign: std::borrow::Cow<'a, str>,
    channel: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_key: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    cost_micros: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revenue_micros: Option<i64>,
    currency: std::borrow::Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_source: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_medium: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_campaign: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_term: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_content: Option<std::borrow::Cow<'a, str>>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

const TENANT_FIELDS: [&str; 3] = ["tenant", "tenant_id", "tenantId"];

struct LineCheck<'l> {
    line: usize,
    limits: &'l Limits,
    errors: Vec<FieldError>,
}

impl LineCheck<'_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            line: self.line,
            field: Some(field.to_owned()),
            message: message.into(),
        });
    }

    fn text(&mut self, field: &str, value: &str, required: bool) -> Option<String> {
        if value.is_empty() {
            if required {
                self.fail(field, "must not be empty");
            }
            return None;
        }
        if value.chars().count() > self.limits.max_string_len {
            self.fail(
                field,
                format!("longer than {} characters", self.limits.max_string_len),
            );
            return None;
        }
        if value.chars().any(char::is_control) {
            self.fail(field, "contains control characters");
            return None;
        }
        Some(value.to_owned())
    }

    fn token(&mut self, field: &str, value: &str) -> Option<String> {
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok {
            Some(value.to_owned())
        } else {
            self.fail(field, "must be 1-64 characters of a-z, 0-9, '_' or '-'");
            None
        }
    }

    fn money(&mut self, field: &str, value: i64) -> i64 {
        if !(0..=self.limits.max_money_micros).contains(&value) {
            self.fail(
                field,
                format!(
                    "must be between 0 and {} micros",
                    self.limits.max_money_micros
                ),
            );
        }
        value
    }
}

impl Event {
    /// Parses one JSON object (`line` is its 1-based line number, for errors).
    pub fn parse(
        line_no: usize,
        line: &[u8],
        limits: &Limits,
        now: OffsetDateTime,
    ) -> Result<Self, Vec<FieldError>> {
        let line_error = |message: String| {
            vec![FieldError {
                line: line_no,
                field: None,
                message,
            }]
        };
        if line.len() > limits.max_line_bytes {
            return Err(line_error(format!(
                "line longer than {} bytes",
                limits.max_line_bytes
            )));
        }
        let wire: Wire<'_> = match serde_json::from_slice(line) {
            Ok(w) => w,
            Err(e) => {
                let msg = e.to_string();
                let field = TENANT_FIELDS
                    .iter()
                    .find(|f| msg.contains(&format!("unknown field `{f}`")))
                    .map(|f| (*f).to_owned());
                return Err(match field {
                    Some(f) => vec![FieldError {
                        line: line_no,
                        field: Some(f),
                        message: "the tenant comes from your credential; remove this field".into(),
                    }],
                    None => line_error(format!("invalid JSON event: {}", strip_position(&msg))),
                });
            }
        };
        let mut c = LineCheck {
            line: line_no,
            limits,
            errors: Vec::new(),
        };
        let event_id = c.text("event_id", &wire.event_id, true);
        let event_type = EventType::parse(&wire.event_type);
        if event_type.is_none() {
            c.fail(
                "type",
                "must be one of impression, click, conversion, spend",
            );
        }
        let occurred_at = match OffsetDateTime::parse(&wire.occurred_at, &Rfc3339) {
            Ok(t) => {
                let t = t.to_offset(UtcOffset::UTC);
                if t < now - limits.max_past {
                    c.fail(
                        "occurred_at",
                        format!(
                            "more than {} days in the past",
                            limits.max_past.whole_days()
                        ),
                    );
                } else if t > now + limits.max_future {
                    c.fail(
                        "occurred_at",
                        format!(
                            "more than {} minutes in the future",
                            limits.max_future.whole_minutes()
                        ),
                    );
                }
                Some(t)
            }
            Err(_) => {
                c.fail(
                    "occurred_at",
                    "must be an RFC 3339 timestamp with offset, e.g. 2026-01-31T12:00:00Z",
                );
                None
            }
        };
        let campaign = c.text("campaign", &wire.campaign, true);
        let channel = c.token("channel", &wire.channel);
        let user_key = wire
            .user_key
            .as_deref()
            .and_then(|v| c.text("user_key", v, false));
        let cost_micros = c.money("cost_micros", wire.cost_micros);
        let revenue_micros = match (event_type, wire.revenue_micros) {
            (Some(EventType::Conversion), None) => {
                c.fail("revenue_micros", "is required for a conversion");
                0
            }
            (Some(EventType::Conversion), Some(v)) => c.money("revenue_micros", v),
            (Some(_), Some(_)) => {
                c.fail("revenue_micros", "is only allowed on a conversion");
                0
            }
            _ => 0,
        };
        if event_type == Some(EventType::Spend) && cost_micros == 0 {
            c.fail(
                "cost_micros",
                "is required (and positive) for a spend event",
            );
        }
        let currency = Currency::parse(&wire.currency);
        if currency.is_none() {
            c.fail("currency", "must be an ISO 4217 code such as EUR or USD");
        }
        let mut utm = |field: &str, v: &Option<std::borrow::Cow<'_, str>>| {
            v.as_deref().and_then(|v| c.text(field, v, false))
        };
        let utm_source = utm("utm_source", &wire.utm_source);
        let utm_medium = utm("utm_medium", &wire.utm_medium);
        let utm_campaign = utm("utm_campaign", &wire.utm_campaign);
        let utm_term = utm("utm_term", &wire.utm_term);
        let utm_content = utm("utm_content", &wire.utm_content);
        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        match (
            event_id,
            event_type,
            occurred_at,
            campaign,
            channel,
            currency,
        ) {
            (
                Some(event_id),
                Some(event_type),
                Some(occurred_at),
                Some(campaign),
                Some(channel),
                Some(currency),
            ) => Ok(Self {
                event_id,
                event_type,
                occurred_at,
                campaign,
                channel,
                user_key,
                cost_micros,
                revenue_micros,
                currency,
                utm_source,
                utm_medium,
                utm_campaign,
                utm_term,
                utm_content,
            }),
            _ => Err(line_error("invalid event".into())),
        }
    }

    /// The canonical NDJSON line for this event (no trailing newline).
    pub fn to_json_line(&self) -> String {
        let occurred_at = self.occurred_at.format(&Rfc3339).unwrap_or_default();
        let wire = Wire {
            event_id: self.event_id.as_str().into(),
            event_type: self.event_type.as_str().into(),
            occurred_at: occurred_at.into(),
            campaign: self.campaign.as_str().into(),
            channel: self.channel.as_str().into(),
            user_key: self.user_key.as_deref().map(Into::into),
            cost_micros: self.cost_micros,
            revenue_micros: (self.event_type == EventType::Conversion)
                .then_some(self.revenue_micros),
            currency: self.currency.as_str().into(),
            utm_source: self.utm_source.as_deref().map(Into::into),
            utm_medium: self.utm_medium.as_deref().map(Into::into),
            utm_campaign: self.utm_campaign.as_deref().map(Into::into),
            utm_term: self.utm_term.as_deref().map(Into::into),
            utm_content: self.utm_content.as_deref().map(Into::into),
        };
        serde_json::to_string(&wire).unwrap_or_default()
    }
}

/// serde_json appends " at line 1 column 17"; the column is useful, the line is ours.
fn strip_position(msg: &str) -> String {
    msg.replace(" at line 1 column", " at column")
}

/// Parses an NDJSON batch: one event per non-blank line, all or nothing. Also rejects
/// an `event_id` repeated within the batch.
pub fn parse_ndjson(
    body: &[u8],
    limits: &Limits,
    now: OffsetDateTime,
) -> Result<Vec<Event>, BatchError> {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut truncated = false;
    let mut seen = std::collections::HashSet::new();
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if events.len() + errors.len() >= limits.max_events {
            return Err(BatchError::TooManyEvents {
                max: limits.max_events,
            });
        }
        match Event::parse(i + 1, line, limits, now) {
            Ok(event) => {
                if !seen.insert(event.event_id.clone()) {
                    errors.push(FieldError {
                        line: i + 1,
                        field: Some("event_id".into()),
                        message: "repeated within this batch".into(),
                    });
                } else if errors.is_empty() {
                    events.push(event);
                }
            }
            Err(mut e) => errors.append(&mut e),
        }
        if errors.len() > limits.max_errors {
            errors.truncate(limits.max_errors);
            truncated = true;
            break;
        }
    }
    if !errors.is_empty() {
        return Err(BatchError::Invalid { errors, truncated });
    }
    if events.is_empty() {
        return Err(BatchError::Empty);
    }
    Ok(events)
}

/// The canonical NDJSON body for events.
pub fn to_ndjson(events: &[Event]) -> String {
    let mut out = String::with_capacity(events.len() * 200);
    for e in events {
        out.push_str(&e.to_json_line());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
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

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            match parse_ndjson(&body, &Limits::default(), NOW) {
                Ok(events) => prop_assert!(!events.is_empty()),
                Err(BatchError::Invalid { errors, .. }) => prop_assert!(!errors.is_empty() && errors.iter().all(|e| e.line >= 1 && !e.message.is_empty())),
                Err(_) => {}
            }
        }

        #[test]
        fn valid_events_round_trip(events in proptest::collection::vec(arb_event(), 1..20)) {
            let mut seen = std::collections::HashSet::new();
            let events: Vec<Event> = events.into_iter().filter(|e| seen.insert(e.event_id.clone())).collect();
            let parsed = parse_ndjson(to_ndjson(&events).as_bytes(), &Limits::default(), NOW).unwrap();
            prop_assert_eq!(parsed, events);
        }
    }
}
