//! What each pipeline role exports besides the shared metrics, registered at start
//! (each series present with value 0), and the names its code records under.
//!
//! `tenant` labels carry the tenant id of a verified token: one series per tenant that
//! sent events since the process started (bounded by the number of tenants, which only
//! an operator creates). The unlabelled series is there from start and stays 0.

use platform::metrics::Metric;

pub const INGEST_EVENTS_ACCEPTED: &str = "ingest_events_accepted_total";
pub const INGEST_EVENTS_DUPLICATE: &str = "ingest_events_duplicate_total";
pub const INGEST_BATCHES_REJECTED: &str = "ingest_batches_rejected_total";
pub const INGEST_RATE_LIMITED: &str = "ingest_rate_limited_total";
pub const LOADER_EVENTS_STORED: &str = "loader_events_stored_total";
pub const LOADER_MISSING_PARTITION: &str = "loader_missing_partition_total";
pub const TRANSFORM_EVENTS_PROCESSED: &str = "transform_events_processed_total";
pub const TRANSFORM_LAG: &str = "transform_lag_seconds";
pub const TRANSFORM_LAST_SUCCESS: &str = "transform_last_success_timestamp_seconds";
pub const TRANSFORM_FAILURES: &str = "transform_failures_total";
pub const TRANSFORM_RUNS: &str = "transform_runs_total";
pub const TRANSFORM_PENDING_BATCHES: &str = "transform_pending_batches";
pub const TRANSFORM_DAYS_PENDING: &str = "transform_attribution_days_pending";
pub const TRANSFORM_DAYS_DEFERRED: &str = "transform_attribution_days_deferred";
pub const TRANSFORM_DAYS_RECOMPUTED: &str = "transform_attribution_days_recomputed_total";
pub const TRANSFORM_DAYS_SET_ASIDE: &str = "transform_attribution_days_set_aside_total";
pub const TRANSFORM_DAY_DURATION: &str = "transform_attribution_day_seconds";
pub const TRANSFORM_EVENTS_ERASED: &str = "transform_events_erased_total";
pub const TRANSFORM_ERASURES_COMPLETED: &str = "transform_erasures_completed_total";

/// The `reason` of a refused batch: one per [`domain::BatchError`] variant.
pub fn rejection_reason(e: &domain::BatchError) -> &'static str {
    use domain::BatchError;
    match e {
        BatchError::Empty => "empty",
        BatchError::TooManyEvents { .. } => "too_many_events",
        BatchError::TooLarge { .. } => "too_large",
        BatchError::Invalid { .. } => "invalid",
    }
}

/// `pipeline ingest`.
pub const INGEST: &[Metric] = &[
    Metric::counter(
        INGEST_EVENTS_ACCEPTED,
        "Events stored for the first time (the loader committed them), by tenant.",
    ),
    Metric::counter(
        INGEST_EVENTS_DUPLICATE,
        "Events sent again and skipped (already stored), by tenant.",
    ),
    Metric::counter(
        INGEST_BATCHES_REJECTED,
        "Batches refused as invalid, by reason (empty, too_many_events, too_large, invalid).",
    )
    .with_series(&[
        &[("reason", "empty")],
        &[("reason", "too_many_events")],
        &[("reason", "too_large")],
        &[("reason", "invalid")],
    ]),
    Metric::counter(
        INGEST_RATE_LIMITED,
        "Requests refused (429) because their tenant was over its ingest rate.",
    ),
];

/// `pipeline loader`.
pub const LOADER: &[Metric] = &[
    Metric::counter(
        LOADER_EVENTS_STORED,
        "Events inserted into raw storage (re-sent events excluded).",
    ),
    Metric::counter(
        LOADER_MISSING_PARTITION,
        "Batches refused (503) because raw.events had no partition for an event's month.",
    ),
];

/// `pipeline transform`.
pub const TRANSFORM: &[Metric] = &[
    Metric::counter(
        TRANSFORM_EVENTS_PROCESSED,
        "Raw events aggregated into the output tables.",
    ),
    Metric::gauge(
        TRANSFORM_LAG,
        "Age of the oldest committed batch not yet aggregated, in seconds (0 when caught up).",
    ),
    Metric::gauge(
        TRANSFORM_LAST_SUCCESS,
        "Unix time of the end of the last successful transform run (0: none since start).",
    ),
    Metric::counter(
        TRANSFORM_FAILURES,
        "Transform runs or tenant turns that failed (retried at the next run).",
    ),
    Metric::counter(TRANSFORM_RUNS, "Transform runs completed."),
    Metric::gauge(
        TRANSFORM_PENDING_BATCHES,
        "Committed batches waiting to be aggregated.",
    ),
    Metric::gauge(
        TRANSFORM_DAYS_PENDING,
        "Attribution days waiting to be recomputed.",
    ),
    Metric::gauge(
        TRANSFORM_DAYS_DEFERRED,
        "Attribution days waiting after a failed attempt (backing off).",
    ),
    Metric::counter(TRANSFORM_DAYS_RECOMPUTED, "Attribution days recomputed."),
    Metric::counter(
        TRANSFORM_DAYS_SET_ASIDE,
        "Attribution days set aside after a failed recomputation.",
    ),
    Metric::histogram(
        TRANSFORM_DAY_DURATION,
        "Duration of one attribution day's recomputation, in seconds.",
    ),
    Metric::counter(
        TRANSFORM_EVENTS_ERASED,
        "Raw events deleted by subject-erasure steps.",
    ),
    Metric::counter(
        TRANSFORM_ERASURES_COMPLETED,
        "Subject erasures whose recomputation finished.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_reason_has_its_series_from_start() {
        use domain::BatchError;
        let series = match INGEST[2].series {
            platform::metrics::Series::Labelled(s) => s,
            other => panic!("{other:?}"),
        };
        for e in [
            BatchError::Empty,
            BatchError::TooManyEvents { max: 1 },
            BatchError::TooLarge { max_bytes: 1 },
            BatchError::Invalid {
                errors: Vec::new(),
                truncated: false,
            },
        ] {
            let reason = rejection_reason(&e);
            assert!(
                series.iter().any(|l| l == &[("reason", reason)]),
                "{reason}"
            );
        }
    }
}
