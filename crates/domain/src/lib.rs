//! Beacon's marketing types, parsed (not merely validated) from untrusted input.
//!
//! A value of these types is valid by construction: the only ways to get an [`Event`]
//! are [`parse_ndjson`], [`parse_csv`] and [`Event::parse`], which enforce every rule and
//! limit; a [`DateRange`], [`PageSize`] or [`AnomalyParams`] comes only from its
//! `parse`. The KPI catalogue ([`kpi`]) is the one definition of every KPI.

pub mod event;
mod scan;

pub use event::{
    BatchError, Currency, Event, EventType, FIELDS, FieldError, Limits, parse_csv, parse_ndjson,
    to_csv, to_ndjson,
};
pub mod admin;
pub mod answers;
pub mod kpi;
pub mod page;
pub mod range;

pub use kpi::{CATALOGUE, Definition, Fact, Facts, Format, Formula, Kpi, Totals, Value};
pub use page::{PageSize, PageSizeError};
pub use range::{AnomalyParams, DateRange, ParamError, format_date};
