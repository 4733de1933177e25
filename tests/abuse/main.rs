//! Availability under abuse: every attack of issue 10 against real processes. Each
//! test asserts that answers are 4xx/503 problem+json (never a crash), that no
//! service's peak RSS crosses the memory limit of its Kubernetes manifest, and that
//! other tenants and users keep being served. Figures are printed and, with
//! `BEACON_ABUSE_REPORT` set, recorded for `cargo xtask bench abuse`.

mod analytics;
mod idle;
mod login;
mod transform;
