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

/// Explicit limits for a batch. All are configurable per deployment (see
/// `pipeline::limits_from_env`); ingest and loader read the same ones, so a batch
/// ingest accepts is one the loader accepts.
///
/// Every limit on the *shape* of input (line bytes, fields per line, JSON nesting) is
/// checked by a scan over the whole body before any record is parsed, so memory spent
/// on a hostile body is bounded by these numbers, not by the body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_events: usize,
    pub max_string_len: usize,
    /// The longest line (a CSV record, which may span lines when quoted) in bytes as
    /// sent, excluding its line terminator.
    pub max_line_bytes: usize,
    /// The most fields on one line: CSV cells (header included), or members of an
    /// NDJSON object.
    pub max_fields: usize,
    /// The deepest nesting of JSON arrays and objects on one NDJSON line (an event
    /// object is depth 1).
    pub max_depth: usize,
    /// The largest batch as canonical NDJSON: what ingest forwards and the loader's
    /// body limit. A larger batch is [`BatchError::TooLarge`].
    pub max_batch_bytes: usize,
    /// The most errors reported (and ever held in memory) for one batch.
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
            max_fields: 32,
            max_depth: 8,
            max_batch_bytes: 16 * 1024 * 1024,
            max_errors: 20,
            max_past: Duration::days(400),
            max_future: Duration::minutes(10),
            max_money_micros: 1_000_000_000 * 1_000_000,
        }
    }
}

impl Limits {
    /// Whether these limits can work together: each problem names the limit (field
    /// name) and why. A deployment with such limits would refuse valid batches.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let min_line = 512;
        if self.max_events == 0 {
            return Err(("max_events", "must be at least 1".into()));
        }
        if self.max_errors == 0 {
            return Err(("max_errors", "must be at least 1".into()));
        }
        if self.max_fields < FIELDS.len() {
            return Err((
                "max_fields",
                format!("must be at least {} (one per field)", FIELDS.len()),
            ));
        }
        if self.max_depth == 0 {
            return Err(("max_depth", "must be at least 1 (the event object)".into()));
        }
        if self.max_line_bytes < min_line {
            return Err(("max_line_bytes", format!("must be at least {min_line}")));
        }
        if self.max_batch_bytes <= self.max_line_bytes {
            return Err((
                "max_batch_bytes",
                format!(
                    "must be larger than max_line_bytes ({})",
                    self.max_line_bytes
                ),
            ));
        }
        Ok(())
    }
}

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

/// Collects parsed lines into an all-or-nothing batch: the event limit, the size of
/// the canonical batch, the error cap and the rule that an `event_id` appears once per
/// batch, for every format.
struct BatchBuilder<'l> {
    limits: &'l Limits,
    events: Vec<Event>,
    errors: ErrorList,
    /// Bytes of the batch as canonical NDJSON so far (lines and newlines).
    canonical_bytes: usize,
    seen: std::collections::HashSet<String>,
}

impl<'l> BatchBuilder<'l> {
    fn new(limits: &'l Limits) -> Self {
        Self {
            limits,
            events: Vec::new(),
            errors: ErrorList::new(limits),
            canonical_bytes: 0,
            seen: std::collections::HashSet::new(),
        }
    }

    /// Room for one more line? `Err` when the batch is over its event limit.
    fn admit(&self) -> Result<(), BatchError> {
        if self.events.len() + self.errors.errors.len() >= self.limits.max_events {
            return Err(BatchError::TooManyEvents {
                max: self.limits.max_events,
            });
        }
        Ok(())
    }

    /// Adds one line's outcome; `Ok(false)` once the error cap is reached, `Err` when
    /// the canonical batch outgrows [`Limits::max_batch_bytes`].
    fn push(
        &mut self,
        line: usize,
        column: Option<usize>,
        parsed: Result<Event, Vec<FieldError>>,
    ) -> Result<bool, BatchError> {
        let event = match parsed {
            Ok(event) => event,
            Err(errors) => return Ok(errors.into_iter().all(|e| self.errors.push(e))),
        };
        // The loader re-parses what ingest sends with these same limits: an event
        // whose canonical line it would refuse is refused here, naming the line.
        let len = event.json_line_len();
        self.canonical_bytes += len + 1;
        if self.canonical_bytes > self.limits.max_batch_bytes {
            return Err(BatchError::TooLarge {
                max_bytes: self.limits.max_batch_bytes,
            });
        }
        let error = if !self.seen.insert(event.event_id.clone()) {
            FieldError {
                line,
                column,
                field: Some("event_id".into()),
                message: "repeated within this batch".into(),
            }
        } else if len > self.limits.max_line_bytes {
            FieldError::of_line(
                line,
                format!(
                    "longer than {} bytes once written as canonical NDJSON",
                    self.limits.max_line_bytes
                ),
            )
        } else {
            if self.errors.is_empty() {
                self.events.push(event);
            }
            return Ok(true);
        };
        Ok(self.errors.push(error))
    }

    fn finish(self) -> Result<Vec<Event>, BatchError> {
        self.errors.into_result()?;
        if self.events.is_empty() {
            return Err(BatchError::Empty);
        }
        Ok(self.events)
    }
}

/// Parses an NDJSON batch: one event per non-blank line, all or nothing. Also rejects
/// an `event_id` repeated within the batch. The body's shape is scanned first
/// ([`crate::scan::ndjson`]).
pub fn parse_ndjson(
    body: &[u8],
    limits: &Limits,
    now: OffsetDateTime,
) -> Result<Vec<Event>, BatchError> {
    crate::scan::ndjson(body, limits)?;
    let mut batch = BatchBuilder::new(limits);
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        batch.admit()?;
        if !batch.push(i + 1, None, Event::parse(i + 1, line, limits, now))? {
            break;
        }
    }
    batch.finish()
}

/// Parses a CSV batch (RFC 4180, comma-separated, a header row naming the columns in
/// any order, see [`FIELDS`]), all or nothing, with exactly the rules of
/// [`parse_ndjson`]. An empty cell is an absent optional field; quoted cells may hold
/// commas, quotes and newlines. Errors name the line, the column (1-based) and the
/// field. The body's shape is scanned first ([`crate::scan::csv`]), so the CSV reader
/// never holds a record longer than [`Limits::max_line_bytes`] or wider than
/// [`Limits::max_fields`].
pub fn parse_csv(
    body: &[u8],
    limits: &Limits,
    now: OffsetDateTime,
) -> Result<Vec<Event>, BatchError> {
    crate::scan::csv(body, limits)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(body);
    let header = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            return Err(BatchError::Invalid {
                errors: line_error(1, format!("cannot read the header row: {e}")),
                truncated: false,
            });
        }
    };
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(BatchError::Empty);
    }
    let columns = csv_columns(&header, limits)?;
    let mut batch = BatchBuilder::new(limits);
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line() as usize;
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                batch.push(
                    line,
                    None,
                    Err(line_error(line, format!("malformed CSV: {e}"))),
                )?;
                break;
            }
        }
        let line = record.position().map_or(line, |p| p.line() as usize);
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        batch.admit()?;
        let parsed = csv_record(line, &record, header.len(), &columns, limits, now);
        if !batch.push(line, column_of(&columns, "event_id"), parsed)? {
            break;
        }
    }
    batch.finish()
}

fn column_of(columns: &[(&'static str, usize)], field: &str) -> Option<usize> {
    columns.iter().find(|(f, _)| *f == field).map(|(_, c)| *c)
}

/// Maps header cells to fields; refuses unknown, repeated, tenant and missing columns.
fn csv_columns(
    header: &csv::ByteRecord,
    limits: &Limits,
) -> Result<Vec<(&'static str, usize)>, BatchError> {
    let mut columns = Vec::new();
    let mut errors = ErrorList::new(limits);
    let error = |column: Option<usize>, field: Option<&str>, message: String| FieldError {
        line: 1,
        column,
        field: field.map(str::to_owned),
        message,
    };
    for (i, cell) in header.iter().enumerate() {
        let column = i + 1;
        let name = std::str::from_utf8(cell).unwrap_or("").trim();
        let problem = if TENANT_FIELDS.contains(&name) {
            error(Some(column), Some(name), TENANT_MESSAGE.into())
        } else if let Some(field) = FIELDS.iter().find(|f| **f == name) {
            if column_of(&columns, field).is_none() {
                columns.push((*field, column));
                continue;
            }
            error(
                Some(column),
                Some(name),
                "column repeated in the header".into(),
            )
        } else {
            let shown: String = String::from_utf8_lossy(cell).chars().take(64).collect();
            error(
                Some(column),
                None,
                format!(
                    "unknown column {shown:?}; expected one of {}",
                    FIELDS.join(", ")
                ),
            )
        };
        if !errors.push(problem) {
            break;
        }
    }
    for field in REQUIRED {
        if column_of(&columns, field).is_none()
            && !errors.push(error(
                None,
                Some(field),
                "required column missing from the header".into(),
            ))
        {
            break;
        }
    }
    errors.into_result().map(|()| columns)
}

fn csv_record(
    line: usize,
    record: &csv::ByteRecord,
    width: usize,
    columns: &[(&'static str, usize)],
    limits: &Limits,
    now: OffsetDateTime,
) -> Result<Event, Vec<FieldError>> {
    if record.len() != width {
        return Err(line_error(
            line,
            format!("has {} fields, the header has {width}", record.len()),
        ));
    }
    let mut check = LineCheck {
        line,
        limits,
        columns,
        errors: Vec::new(),
    };
    let mut wire = Wire::default();
    for &(field, column) in columns {
        let Ok(cell) = std::str::from_utf8(&record[column - 1]) else {
            check.fail(field, "is not valid UTF-8");
            continue;
        };
        let text = || Some(Cow::Borrowed(cell)).filter(|c| !c.is_empty());
        let number = |check: &mut LineCheck<'_>| {
            if cell.is_empty() {
                return None;
            }
            cell.parse::<i64>()
                .map_err(|_| check.fail(field, "must be an integer number of micros"))
                .ok()
        };
        match field {
            "event_id" => wire.event_id = cell.into(),
            "type" => wire.event_type = cell.into(),
            "occurred_at" => wire.occurred_at = cell.into(),
            "campaign" => wire.campaign = cell.into(),
            "channel" => wire.channel = cell.into(),
            "currency" => wire.currency = cell.into(),
            "user_key" => wire.user_key = text(),
            "cost_micros" => wire.cost_micros = number(&mut check).unwrap_or(0),
            "revenue_micros" => wire.revenue_micros = number(&mut check),
            "utm_source" => wire.utm_source = text(),
            "utm_medium" => wire.utm_medium = text(),
            "utm_campaign" => wire.utm_campaign = text(),
            "utm_term" => wire.utm_term = text(),
            "utm_content" => wire.utm_content = text(),
            _ => {}
        }
    }
    if !check.errors.is_empty() {
        return Err(check.errors);
    }
    validate(&wire, &mut check, now)
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

/// A CSV body for events: the header row ([`FIELDS`]) and one row per event.
pub fn to_csv(events: &[Event]) -> String {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(events.len() * 160));
    let _ = writer.write_record(FIELDS);
    for e in events {
        let at = e.occurred_at_text();
        let w = e.wire(&at);
        let cost = w.cost_micros.to_string();
        let revenue = w.revenue_micros.map(|r| r.to_string()).unwrap_or_default();
        let o = |v: &Option<Cow<'_, str>>| v.as_deref().unwrap_or("").to_owned();
        let _ = writer.write_record([
            w.event_id.as_ref(),
            w.event_type.as_ref(),
            w.occurred_at.as_ref(),
            w.campaign.as_ref(),
            w.channel.as_ref(),
            &o(&w.user_key),
            &cost,
            &revenue,
            w.currency.as_ref(),
            &o(&w.utm_source),
            &o(&w.utm_medium),
            &o(&w.utm_campaign),
            &o(&w.utm_term),
            &o(&w.utm_content),
        ]);
    }
    String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
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
        let mut s = "event_id,type,occurred_at,campaign,channel,currency,cost_micros,revenue_micros,user_key\n".to_owned();
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
            Err(
                BatchError::Empty | BatchError::TooManyEvents { .. } | BatchError::TooLarge { .. },
            ) => true,
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
        let BatchError::Invalid { errors, .. } =
            parse_csv(body.as_bytes(), &limits, NOW).unwrap_err()
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
}
