//! Both batch parsers on arbitrary bytes: they must never panic, never report more
//! errors than the cap, and whatever they accept must fit the canonical batch limit and
//! survive a round trip through the canonical encodings.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = domain::Limits::default();
    let now = time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
    for parse in [domain::parse_ndjson, domain::parse_csv] {
        match parse(data, &limits, now) {
            Ok(events) => {
                let json = domain::to_ndjson(&events);
                assert!(json.len() <= limits.max_batch_bytes);
                assert_eq!(domain::parse_ndjson(json.as_bytes(), &limits, now).unwrap(), events);
                let csv = domain::to_csv(&events);
                assert_eq!(domain::parse_csv(csv.as_bytes(), &limits, now).unwrap(), events);
            }
            Err(domain::BatchError::Invalid { errors, .. }) => {
                assert!(!errors.is_empty() && errors.len() <= limits.max_errors);
            }
            Err(_) => {}
        }
    }
});
