//! Whole batches: NDJSON and CSV, all or nothing, and their canonical bodies.

use super::*;

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
