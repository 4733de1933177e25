//! Shape checks over a whole body, run before any record is parsed.
//!
//! A parser holds a whole record (or line) in memory before it can judge it, so a body
//! of one enormous record costs memory in proportion to the body: a CSV line of ten
//! million commas is ten million field boundaries, a header of that line ten million
//! error messages. These scans look at each line with constant memory and refuse the
//! batch, naming the line and the limit, before a parser sees it. Once a body has
//! passed, every record the parser builds is within [`Limits::max_line_bytes`] and
//! [`Limits::max_fields`], and at most [`Limits::max_errors`] errors are ever held.

use csv_core::ReadRecordResult;

use crate::event::{BatchError, ErrorList, FieldError, Limits};

fn too_long(line: usize, limits: &Limits) -> FieldError {
    FieldError::of_line(
        line,
        format!("line longer than {} bytes", limits.max_line_bytes),
    )
}

fn too_wide(line: usize, limits: &Limits) -> FieldError {
    FieldError::of_line(line, format!("more than {} fields", limits.max_fields))
}

fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|b| **b == b'\n').count()
}

/// Every record of a CSV body within the line and field limits.
///
/// The scan runs the same state machine as the parser (`csv_core`, with the `csv`
/// crate's default dialect: comma, `"` quotes doubled inside quoted cells, `\r`, `\n`
/// or `\r\n` ending a record, blank lines skipped), so it sees exactly the records the
/// parser will, quoted newlines included; it only counts, into fixed buffers. A
/// record's bytes are counted as sent, without its terminator, from its first line.
pub(crate) fn csv(body: &[u8], limits: &Limits) -> Result<(), BatchError> {
    let mut reader = csv_core::Reader::new();
    let mut output = [0u8; 1024];
    let mut ends = [0usize; 64];
    let mut errors = ErrorList::new(limits);
    // `start` is where the current record's bytes (with any blank lines before it)
    // begin; `line` is the line number at `start`.
    let (mut start, mut pos, mut line, mut fields) = (0, 0, 1, 0);
    loop {
        let (result, nin, _, nend) = reader.read_record(&body[pos..], &mut output, &mut ends);
        pos += nin;
        fields += nend;
        match result {
            ReadRecordResult::InputEmpty
            | ReadRecordResult::OutputFull
            | ReadRecordResult::OutputEndsFull => continue,
            ReadRecordResult::End => break,
            ReadRecordResult::Record => {}
        }
        let span = &body[start..pos];
        let is_terminator = |b: &&u8| matches!(**b, b'\r' | b'\n');
        let blank = span.iter().take_while(is_terminator).count();
        let trailing = span[blank..].iter().rev().take_while(is_terminator).count();
        let record_line = line + newlines(&span[..blank]);
        let problem = if span.len() - blank - trailing > limits.max_line_bytes {
            Some(too_long(record_line, limits))
        } else if fields > limits.max_fields {
            Some(too_wide(record_line, limits))
        } else {
            None
        };
        if let Some(problem) = problem
            && !errors.push(problem)
        {
            break;
        }
        line += newlines(span);
        start = pos;
        fields = 0;
    }
    errors.into_result()
}

/// Every line of an NDJSON body within the line, field and nesting limits.
///
/// Lines are split exactly as [`crate::parse_ndjson`] splits them. Fields are the
/// members of the outermost object (commas at depth 1, outside strings); depth counts
/// open arrays and objects.
pub(crate) fn ndjson(body: &[u8], limits: &Limits) -> Result<(), BatchError> {
    let mut errors = ErrorList::new(limits);
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let problem = if line.len() > limits.max_line_bytes {
            Some(too_long(i + 1, limits))
        } else {
            json_shape(i + 1, line, limits)
        };
        if let Some(problem) = problem
            && !errors.push(problem)
        {
            break;
        }
    }
    errors.into_result()
}

fn json_shape(line_no: usize, line: &[u8], limits: &Limits) -> Option<FieldError> {
    let (mut depth, mut commas) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in line {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limits.max_depth {
                    return Some(FieldError::of_line(
                        line_no,
                        format!("JSON nested deeper than {} levels", limits.max_depth),
                    ));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => {
                commas += 1;
                if commas >= limits.max_fields {
                    return Some(too_wide(line_no, limits));
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn errors_of(result: Result<(), BatchError>) -> (Vec<FieldError>, bool) {
        match result {
            Err(BatchError::Invalid { errors, truncated }) => (errors, truncated),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_line_of_a_million_commas_is_refused_at_once() {
        let limits = Limits::default();
        let body = vec![b','; 1_000_000];
        let (errors, truncated) = errors_of(csv(&body, &limits));
        assert_eq!(errors.len(), 1);
        assert!(!truncated);
        assert_eq!(errors[0].line, 1);
        // Too long is reported before too wide: both hold.
        assert_eq!(errors[0].message, "line longer than 8192 bytes");
        let narrow = vec![b','; 100];
        let (errors, _) = errors_of(csv(&narrow, &limits));
        assert_eq!(errors[0].message, "more than 32 fields");
        // And through the public parser, before the header is looked at.
        let Err(BatchError::Invalid { errors, .. }) =
            crate::parse_csv(&body, &limits, time::OffsetDateTime::UNIX_EPOCH)
        else {
            panic!()
        };
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn csv_fields_and_bytes_at_the_edge() {
        let limits = Limits {
            max_fields: 14,
            max_line_bytes: 600,
            ..Limits::default()
        };
        let row = |fields: usize| vec!["x"; fields].join(",");
        assert!(csv(row(14).as_bytes(), &limits).is_ok());
        assert!(csv(row(15).as_bytes(), &limits).is_err());
        let exactly = "y".repeat(600);
        assert!(csv(format!("{exactly}\r\n{exactly}\n").as_bytes(), &limits).is_ok());
        let (errors, _) = errors_of(csv(format!("a\n\n\n{exactly}y\n").as_bytes(), &limits));
        assert_eq!(
            errors[0].line, 4,
            "blank lines count, the record's own line is named"
        );
    }

    #[test]
    fn quoted_commas_and_newlines_are_cells_not_fields_or_lines() {
        let limits = Limits {
            max_fields: 14,
            ..Limits::default()
        };
        let quoted = format!("a,\"{}\",b\n", ",\n".repeat(100));
        assert!(csv(quoted.as_bytes(), &limits).is_ok());
        // A quoted record spanning lines is one record: its line is where it starts.
        let long = Limits {
            max_line_bytes: 512,
            ..Limits::default()
        };
        let body = format!("h\nok\n\"{}\"\nnext\n", "line\n".repeat(200));
        let (errors, _) = errors_of(csv(body.as_bytes(), &long));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].line, 3);
    }

    #[test]
    fn ndjson_lines_depth_and_fields() {
        let limits = Limits::default();
        let deep = format!("{}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let (errors, _) = errors_of(ndjson(deep.as_bytes(), &limits));
        assert_eq!(errors[0].message, "line longer than 8192 bytes");
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(8), "]".repeat(8));
        let (errors, _) = errors_of(ndjson(deep.as_bytes(), &limits));
        assert_eq!(errors[0].message, "JSON nested deeper than 8 levels");
        let ok = format!("{{\"a\":{}1{}}}", "[".repeat(7), "]".repeat(7));
        assert!(ndjson(ok.as_bytes(), &limits).is_ok());
        let wide = |n: usize| {
            let members: Vec<String> = (0..n).map(|i| format!("\"f{i}\":1")).collect();
            format!("{{{}}}", members.join(","))
        };
        assert!(ndjson(wide(32).as_bytes(), &limits).is_ok());
        let (errors, _) = errors_of(ndjson(wide(33).as_bytes(), &limits));
        assert_eq!(errors[0].message, "more than 32 fields");
        // Brackets and commas inside strings, escaped quotes, nested commas: not fields.
        let strings = format!(
            "{{\"a\":\"{}\\\"[{{,\",\"b\":[1,2,3,4],\"c\":{{\"d\":1,\"e\":2}}}}\r\n",
            ",[{".repeat(1000)
        );
        assert!(ndjson(strings.as_bytes(), &limits).is_ok());
        let (errors, _) = errors_of(ndjson(format!("\n\n{deep}\n").as_bytes(), &limits));
        assert_eq!(errors[0].line, 3);
    }

    #[test]
    fn scan_errors_never_exceed_the_cap() {
        let limits = Limits {
            max_errors: 5,
            max_line_bytes: 512,
            ..Limits::default()
        };
        let long = "z".repeat(600);
        let body = format!("{long}\n").repeat(1000);
        for result in [
            csv(body.as_bytes(), &limits),
            ndjson(body.as_bytes(), &limits),
        ] {
            let (errors, truncated) = errors_of(result);
            assert_eq!(errors.len(), 5);
            assert!(truncated);
            assert_eq!(
                errors.iter().map(|e| e.line).collect::<Vec<_>>(),
                [1, 2, 3, 4, 5]
            );
        }
    }

    proptest! {
        /// The scan sees the records the `csv` crate reads: when it accepts a body,
        /// every record is within the limits; when it refuses one, some record is not.
        #[test]
        fn csv_scan_agrees_with_the_csv_reader(
            rows in proptest::collection::vec("[a,\"\r\n]{0,40}", 0..30),
            max_fields in 14usize..20,
        ) {
            let limits = Limits { max_fields, max_line_bytes: 1 << 20, ..Limits::default() };
            let body = rows.concat();
            let mut reader = ::csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(body.as_bytes());
            let widest = reader
                .byte_records()
                .map(|r| r.map(|r| r.len()).unwrap_or(0))
                .max()
                .unwrap_or(0);
            // No record is near the line limit, so only the width decides.
            prop_assert_eq!(csv(body.as_bytes(), &limits).is_ok(), widest <= max_fields);
        }

        #[test]
        fn scans_are_total_and_capped(body in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let limits = Limits { max_errors: 3, max_line_bytes: 512, max_fields: 14, max_depth: 2, ..Limits::default() };
            for result in [csv(&body, &limits), ndjson(&body, &limits)] {
                if let Err(e) = result {
                    let (errors, _) = errors_of(Err(e));
                    prop_assert!(!errors.is_empty() && errors.len() <= 3);
                }
            }
        }
    }
}
