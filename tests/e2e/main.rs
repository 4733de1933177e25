//! End to end: events in through ingest → loader → raw, transform → output, and the
//! overview out through dashboard → api → analytics, for two tenants.

mod ingest_and_attribution;
mod walking_skeleton;
