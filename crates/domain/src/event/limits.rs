//! The limits of one batch.

use super::*;

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
