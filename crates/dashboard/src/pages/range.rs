//! Date ranges of the pages: `?from=&to=` and the 7/30/90-day presets.

use domain::{DateRange, format_date as iso};
use serde::{Deserialize, Serialize};

use crate::api_client::Span;

/// `?from=&to=`; absent means the last 30 days (the API's default too).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

pub(crate) struct Preset {
    pub label: &'static str,
    pub query: String,
    pub active: bool,
}

impl RangeQuery {
    /// The range asked for, absent ends filled in (the last 30 days).
    pub(crate) fn resolved(&self) -> Span {
        let last_30 = DateRange::ending(time::OffsetDateTime::now_utc().date(), 30);
        (
            self.from.clone().unwrap_or_else(|| iso(last_30.from)),
            self.to.clone().unwrap_or_else(|| iso(last_30.to)),
        )
    }

    /// Links for the last 7, 30 and 90 days, keeping `keep` parameters.
    pub(crate) fn presets(&self, keep: &[(String, String)]) -> Vec<Preset> {
        let today = time::OffsetDateTime::now_utc().date();
        let (from, to) = self.resolved();
        [("7 days", 6), ("30 days", 29), ("90 days", 89)]
            .into_iter()
            .map(|(label, back)| {
                let f = iso(today - time::Duration::days(back));
                let mut q = vec![
                    ("from".to_owned(), f.clone()),
                    ("to".to_owned(), iso(today)),
                ];
                q.extend(keep.iter().cloned());
                Preset {
                    label,
                    query: serde_urlencoded::to_string(&q).unwrap_or_default(),
                    active: f == from && to == iso(today),
                }
            })
            .collect()
    }
}
