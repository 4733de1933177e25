//! Faults under load (issue 15, item 4), against real processes and a real PostgreSQL:
//! PostgreSQL restarted while clients push events and read KPIs (on a cluster of the
//! test's own, on its own port), analytics killed and frozen under api load, and the
//! transform killed in the middle of a chunk. Each test asserts the guarantee of
//! docs/ARCHITECTURE.md ("Failure behaviour") and prints its figures (`faults: …`),
//! recorded in docs/BENCHMARKS.md.

mod analytics;
mod common;
mod postgres;
mod transform;
