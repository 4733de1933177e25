//! End to end: events in through ingest → loader → raw, transform → output, and the
//! overview out through dashboard → api → analytics, for two tenants.

mod analytics_kpis;
mod api_attacks;
mod dashboard;
mod erasure;
mod identity;
mod ingest_and_attribution;
mod metrics;
mod observability;
mod offboarding;
mod retention;
mod session;
mod tracing;
mod walking_skeleton;
