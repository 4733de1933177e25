//! Beacon's marketing types, parsed (not merely validated) from untrusted input.
//!
//! A value of these types is valid by construction: the only ways to get an [`Event`]
//! are [`parse_ndjson`], [`parse_csv`] and [`Event::parse`], which enforce every rule and limit.

pub mod event;
mod scan;

pub use event::{
    BatchError, Currency, Event, EventType, FIELDS, FieldError, Limits, parse_csv, parse_ndjson,
    to_csv, to_ndjson,
};
pub mod page;

pub use page::{PageSize, PageSizeError};
