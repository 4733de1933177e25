//! End to end: events in through ingest → loader → raw, transform → output, and the
//! overview out through dashboard → api → analytics, for two tenants.

mod api_attacks;
mod walking_skeleton;
