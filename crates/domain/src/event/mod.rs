//! Raw marketing events: impression, click, conversion, spend.

use std::{borrow::Cow, fmt};

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

mod batch;
mod limits;
#[cfg(test)]
mod tests;

pub use batch::{parse_csv, parse_ndjson, to_csv, to_ndjson};
pub use limits::Limits;

/// What is wrong with one line (1-based), which CSV column (1-based, CSV only) and
/// which field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
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
    /// The batch as canonical NDJSON is larger than [`Limits::max_batch_bytes`].
    #[error("the batch is larger than {max_bytes} bytes as canonical NDJSON")]
    TooLarge { max_bytes: usize },
    #[error("{} invalid line(s)", errors.len())]
    Invalid {
        errors: Vec<FieldError>,
        /// More errors existed than the cap reports.
        truncated: bool,
    },
}

/// The fields of one event as they arrive, before validation. NDJSON deserializes
/// into it directly; CSV builds it from the header-mapped cells. Both then go through
/// the same [`validate`], so the two formats cannot drift apart.
///
/// Unknown JSON fields are refused (a typo must not be silently dropped) and a tenant
/// field is refused with an explanation.
#[derive(Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(rename = "type")]
    event_type: Cow<'a, str>,
    occurred_at: Cow<'a, str>,
    campaign: Cow<'a, str>,
    channel: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_key: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    cost_micros: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    revenue_micros: Option<i64>,
    currency: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_source: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_medium: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_campaign: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_term: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    utm_content: Option<Cow<'a, str>>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

const TENANT_FIELDS: [&str; 3] = ["tenant", "tenant_id", "tenantId"];
const TENANT_MESSAGE: &str = "the tenant comes from your credential; remove this field";

/// Every field name, in canonical (CSV header) order.
pub const FIELDS: [&str; 14] = [
    "event_id",
    "type",
    "occurred_at",
    "campaign",
    "channel",
    "user_key",
    "cost_micros",
    "revenue_micros",
    "currency",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
];
/// Fields every event must carry (a CSV header must name them).
const REQUIRED: [&str; 6] = [
    "event_id",
    "type",
    "occurred_at",
    "campaign",
    "channel",
    "currency",
];

struct LineCheck<'l> {
    line: usize,
    limits: &'l Limits,
    /// (field, 1-based column) for CSV; empty for NDJSON.
    columns: &'l [(&'static str, usize)],
    errors: Vec<FieldError>,
}

impl LineCheck<'_> {
    fn fail(&mut self, field: &str, message: impl Into<String>) {
        let column = self
            .columns
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, c)| *c);
        self.errors.push(FieldError {
            line: self.line,
            column,
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

fn line_error(line: usize, message: String) -> Vec<FieldError> {
    vec![FieldError::of_line(line, message)]
}

impl FieldError {
    /// An error about a whole line rather than one field.
    pub(crate) fn of_line(line: usize, message: String) -> Self {
        Self {
            line,
            column: None,
            field: None,
            message,
        }
    }
}

/// The errors of one batch, capped while they are collected: it never holds more than
/// `max_errors`, however many the input would produce.
pub(crate) struct ErrorList {
    errors: Vec<FieldError>,
    cap: usize,
    truncated: bool,
}

impl ErrorList {
    pub(crate) fn new(limits: &Limits) -> Self {
        Self {
            errors: Vec::new(),
            cap: limits.max_errors.max(1),
            truncated: false,
        }
    }

    /// Keeps `error` if there is room; `false` (and the list is marked truncated) when
    /// the cap was reached, which is the caller's cue to stop looking.
    pub(crate) fn push(&mut self, error: FieldError) -> bool {
        if self.errors.len() >= self.cap {
            self.truncated = true;
            return false;
        }
        self.errors.push(error);
        true
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when nothing was collected, else the batch error carrying them.
    pub(crate) fn into_result(self) -> Result<(), BatchError> {
        if self.errors.is_empty() {
            return Ok(());
        }
        Err(BatchError::Invalid {
            errors: self.errors,
            truncated: self.truncated,
        })
    }
}

/// The one set of rules for an event, whatever format it came in.
fn validate(
    wire: &Wire<'_>,
    check: &mut LineCheck<'_>,
    now: OffsetDateTime,
) -> Result<Event, Vec<FieldError>> {
    let c = check;
    let limits = c.limits;
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
    let mut utm =
        |field: &str, v: &Option<Cow<'_, str>>| v.as_deref().and_then(|v| c.text(field, v, false));
    let utm_source = utm("utm_source", &wire.utm_source);
    let utm_medium = utm("utm_medium", &wire.utm_medium);
    let utm_campaign = utm("utm_campaign", &wire.utm_campaign);
    let utm_term = utm("utm_term", &wire.utm_term);
    let utm_content = utm("utm_content", &wire.utm_content);
    if !c.errors.is_empty() {
        return Err(std::mem::take(&mut c.errors));
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
        ) => Ok(Event {
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
        _ => Err(line_error(c.line, "invalid event".into())),
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
        if line.len() > limits.max_line_bytes {
            return Err(line_error(
                line_no,
                format!("line longer than {} bytes", limits.max_line_bytes),
            ));
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
                        column: None,
                        field: Some(f),
                        message: TENANT_MESSAGE.into(),
                    }],
                    None => line_error(
                        line_no,
                        format!("invalid JSON event: {}", strip_position(&msg)),
                    ),
                });
            }
        };
        let mut check = LineCheck {
            line: line_no,
            limits,
            columns: &[],
            errors: Vec::new(),
        };
        validate(&wire, &mut check, now)
    }

    /// The canonical NDJSON line for this event (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.wire(&self.occurred_at_text())).unwrap_or_default()
    }

    /// The length of [`Event::to_json_line`], without building it.
    fn json_line_len(&self) -> usize {
        struct Count(usize);
        impl std::io::Write for Count {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut count = Count(0);
        let at = self.occurred_at_text();
        let _ = serde_json::to_writer(&mut count, &self.wire(&at));
        count.0
    }

    fn occurred_at_text(&self) -> String {
        self.occurred_at.format(&Rfc3339).unwrap_or_default()
    }

    fn wire<'s>(&'s self, occurred_at: &'s str) -> Wire<'s> {
        Wire {
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
        }
    }
}

/// serde_json appends " at line 1 column 17"; the column is useful, the line is ours.
fn strip_position(msg: &str) -> String {
    msg.replace(" at line 1 column", " at column")
}
