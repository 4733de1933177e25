//! Date ranges and the other parameters of a KPI question, parsed once: a value of
//! these types is in bounds.

use serde::{Serialize, Serializer};
use time::{Date, format_description::well_known::Iso8601, macros::date};

/// `YYYY-MM-DD`, the one date format of Beacon's APIs.
pub fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Why a range or a KPI parameter was refused; the text is safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(pub String);

// An inclusive range of UTC days, within `DateRange::EARLIEST..=DateRange::LATEST`.
// (A plain comment: a doc comment would become the schema's description in the api's
// OpenAPI document.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct DateRange {
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub from: Date,
    #[cfg_attr(feature = "utoipa", schema(value_type = String))]
    pub to: Date,
}

fn as_iso<S: Serializer>(d: &Date, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_date(*d))
}

impl Serialize for DateRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(serialize_with = "as_iso")]
            from: &'a Date,
            #[serde(serialize_with = "as_iso")]
            to: &'a Date,
        }
        Wire {
            from: &self.from,
            to: &self.to,
        }
        .serialize(s)
    }
}

/// Reads `{"from": "YYYY-MM-DD", "to": …}` (an answer of the api), in bounds.
impl<'de> serde::Deserialize<'de> for DateRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Wire {
            from: String,
            to: String,
        }
        let w = Wire::deserialize(d)?;
        DateRange::parse(&w.from, &w.to, i64::MAX).map_err(serde::de::Error::custom)
    }
}

impl DateRange {
    /// The dates a range may name. Anything outside is refused before any date
    /// arithmetic (the previous period and the anomaly baseline lie before `from`):
    /// `time` panics on dates beyond ±9999 years, and no marketing data is that old.
    pub const EARLIEST: Date = date!(1900 - 01 - 01);
    pub const LATEST: Date = date!(9999 - 12 - 31);

    /// One date, named `field` in errors.
    pub fn parse_date(field: &str, s: &str) -> Result<Date, ParamError> {
        let date = Date::parse(s, &Iso8601::DATE)
            .map_err(|_| ParamError(format!("{field} must be a date YYYY-MM-DD")))?;
        if !(Self::EARLIEST..=Self::LATEST).contains(&date) {
            return Err(ParamError(format!(
                "{field} must be between {} and {}",
                format_date(Self::EARLIEST),
                format_date(Self::LATEST)
            )));
        }
        Ok(date)
    }

    /// `from..=to`, at most `max_days` long.
    pub fn parse(from: &str, to: &str, max_days: i64) -> Result<Self, ParamError> {
        let range = Self {
            from: Self::parse_date("range.from", from)?,
            to: Self::parse_date("range.to", to)?,
        };
        if range.to < range.from {
            return Err(ParamError("range.to is before range.from".into()));
        }
        if range.days() > max_days {
            return Err(ParamError(format!("range longer than {max_days} days")));
        }
        Ok(range)
    }

    /// The `days` days up to and including `last`.
    pub fn ending(last: Date, days: i64) -> Self {
        Self {
            from: last - time::Duration::days(days - 1),
            to: last,
        }
    }

    /// Days in the range, both ends included.
    pub fn days(&self) -> i64 {
        (self.to - self.from).whole_days() + 1
    }

    /// The range of equal length just before this one.
    pub fn previous(&self) -> Option<Self> {
        let to = self.from.previous_day()?;
        Some(Self {
            from: to - time::Duration::days(self.days() - 1),
            to,
        })
    }
}

/// The parameters of anomaly detection, one set of limits for every caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnomalyParams {
    /// Trailing days forming each day's baseline.
    pub baseline_days: u32,
    /// |z| above which a day is anomalous.
    pub threshold: f64,
}

impl AnomalyParams {
    pub const BASELINE_DAYS: std::ops::RangeInclusive<u32> = 7..=56;
    pub const DEFAULT_BASELINE_DAYS: u32 = 14;
    pub const MIN_THRESHOLD: f64 = 0.5;
    pub const MAX_THRESHOLD: f64 = 10.0;
    pub const DEFAULT_THRESHOLD: f64 = 3.0;

    /// Absent values take their defaults.
    pub fn parse(baseline_days: Option<u32>, threshold: Option<f64>) -> Result<Self, ParamError> {
        let baseline_days = baseline_days.unwrap_or(Self::DEFAULT_BASELINE_DAYS);
        if !Self::BASELINE_DAYS.contains(&baseline_days) {
            return Err(ParamError(format!(
                "baseline_days must be between {} and {}",
                Self::BASELINE_DAYS.start(),
                Self::BASELINE_DAYS.end()
            )));
        }
        let threshold = threshold.unwrap_or(Self::DEFAULT_THRESHOLD);
        if !(Self::MIN_THRESHOLD..=Self::MAX_THRESHOLD).contains(&threshold) {
            return Err(ParamError(format!(
                "threshold must be between {} and {}",
                Self::MIN_THRESHOLD,
                Self::MAX_THRESHOLD
            )));
        }
        Ok(Self {
            baseline_days,
            threshold,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_bounded() {
        assert!(DateRange::parse("2026-01-01", "2026-01-31", 731).is_ok());
        assert!(DateRange::parse("2026-02-01", "2026-01-31", 731).is_err());
        assert!(DateRange::parse("2020-01-01", "2026-01-31", 731).is_err());
        assert!(DateRange::parse("yesterday", "2026-01-31", 731).is_err());
        // Extended years parse as dates but are refused before any arithmetic.
        for far in ["-009999-01-02", "+010000-01-01", "1899-12-31"] {
            assert!(DateRange::parse(far, "2026-01-31", 731).is_err(), "{far}");
        }
        assert!(DateRange::parse("1900-01-01", "1900-01-02", 731).is_ok());
    }

    #[test]
    fn previous_ranges_and_the_wire_form() {
        let r = DateRange::parse("2026-03-01", "2026-03-10", 731).unwrap();
        assert_eq!(r.days(), 10);
        let p = r.previous().unwrap();
        assert_eq!(
            (format_date(p.from), format_date(p.to)),
            ("2026-02-19".into(), "2026-02-28".into())
        );
        assert_eq!(
            serde_json::to_value(r).unwrap(),
            serde_json::json!({ "from": "2026-03-01", "to": "2026-03-10" })
        );
        assert_eq!(DateRange::ending(r.to, 10), r);
    }

    #[test]
    fn anomaly_parameters_have_one_set_of_limits() {
        let d = AnomalyParams::parse(None, None).unwrap();
        assert_eq!((d.baseline_days, d.threshold), (14, 3.0));
        assert!(AnomalyParams::parse(Some(6), None).is_err());
        assert!(AnomalyParams::parse(Some(57), None).is_err());
        assert!(AnomalyParams::parse(None, Some(10.0)).is_ok());
        assert!(AnomalyParams::parse(None, Some(10.5)).is_err());
        assert!(AnomalyParams::parse(None, Some(100.0)).is_err());
        assert!(AnomalyParams::parse(None, Some(0.4)).is_err());
        assert!(AnomalyParams::parse(None, Some(f64::NAN)).is_err());
    }
}
