//! The admin server, on its own port, never on the public one: `/healthz` (the process
//! is alive), `/readyz` (its dependencies are reachable) and `/metrics` (Prometheus:
//! `beacon_build_info`, and the database pool's usage sampled at each scrape).

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;

use crate::{Shutdown, metrics as m};

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named readiness check.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    run: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
    /// The pool a `postgres` check reads: its usage is exported at each scrape.
    pool: Option<sqlx::PgPool>,
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

impl Check {
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            run: Arc::new(move || Box::pin(run())),
            pool: None,
        }
    }

    /// Ready when `SELECT 1` answers on the pool within a second (the database
    /// operation `ready_check`). The admin server exports the pool's usage.
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        let check = pool.clone();
        Self {
            pool: Some(pool),
            ..Self::new("postgres", move || {
                let pool = check.clone();
                async move {
                    tokio::time::timeout(Duration::from_secs(1), ready_check(&pool))
                        .await
                        .map_err(|_| "timed out".to_owned())?
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
        }
    }
}

/// Timed without a span: probes every few seconds must not each export a trace.
async fn ready_check(pool: &sqlx::PgPool) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let result = sqlx::query("SELECT 1").execute(pool).await.map(|_| ());
    m::record_db_operation(m::READY_CHECK_OPERATION.into(), started.elapsed());
    result
}

/// Exports the usage of `pool` (`db_client_connections_*`).
fn sample_pool(pool: &sqlx::PgPool) {
    let size = pool.size();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
    metrics::gauge!(m::DB_CONNECTIONS_USAGE, "state" => "idle").set(f64::from(idle));
    metrics::gauge!(m::DB_CONNECTIONS_USAGE, "state" => "used").set(f64::from(size - idle));
    metrics::gauge!(m::DB_CONNECTIONS_MAX).set(f64::from(pool.options().get_max_connections()));
}

#[derive(Clone)]
struct AdminState {
    checks: Arc<Vec<Check>>,
    metrics: PrometheusHandle,
}

/// The admin router; tested without a socket. Registers what every service exports
/// ([`m::COMMON`], and [`m::DB_CLIENT`] with a database check).
pub fn router(checks: Vec<Check>) -> Router {
    let state = AdminState {
        checks: Arc::new(checks),
        metrics: m::handle(),
    };
    m::register_build_info();
    for pool in state.checks.iter().filter_map(|c| c.pool.as_ref()) {
        m::register(&[m::DB_CLIENT]);
        sample_pool(pool);
    }
    Router::new()
        .route("/healthz", get(|| async { (StatusCode::OK, "ok") }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let mut ready = true;
    let mut report = serde_json::Map::new();
    for check in state.checks.iter() {
        let result = (check.run)().await;
        if let Err(e) = &result {
            ready = false;
            tracing::warn!(check = check.name, error = %e, "readiness check failed");
        }
        report.insert(check.name.to_owned(), json!(result.is_ok()));
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "checks": report })),
    )
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    for pool in state.checks.iter().filter_map(|c| c.pool.as_ref()) {
        sample_pool(pool);
    }
    state.metrics.run_upkeep();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// A bound admin server.
#[derive(Debug)]
pub struct AdminServer {
    listener: TcpListener,
    router: Router,
}

impl AdminServer {
    pub async fn bind(addr: SocketAddr, checks: Vec<Check>) -> anyhow::Result<Self> {
        Ok(Self {
            listener: crate::http::bind(addr).await?,
            router: router(checks),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        crate::http::serve(self.listener, self.router, shutdown, Duration::from_secs(1)).await
    }
}
