//! Shared runtime for every Beacon service.
//!
//! Each service's `main` is: [`telemetry::init`] → its `Config::from_env` (built on
//! [`config`]) → `App::build` → `run_until_stopped`. Everything a service needs to be
//! a well-behaved process lives here once: typed configuration with secrets read from
//! files, JSON logs and OpenTelemetry traces with W3C propagation, the admin server
//! (`/healthz`, `/readyz`, `/metrics`), the metrics every service shares, graceful shutdown, the PostgreSQL pool (one
//! role per component, statement timeout, per-transaction tenant), mTLS configuration
//! with certificate reload, and access-token verification.

pub mod access;
pub mod admin;
pub mod auth;
pub mod body;
pub mod client_addr;
pub mod config;
pub mod db;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use shutdown::Shutdown;
