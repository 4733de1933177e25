//! The admin server, on its own port, never on the public one: `/healthz` (the process
//! is alive), `/readyz` (its dependencies are reachable) and `/metrics` (Prometheus).

use std::{future::Future, net::SocketAddr, pin::Pin, sync::Arc, sync::OnceLock, time::Duration};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::TcpListener;

use crate::Shutdown;

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named readiness check.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    run: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
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
        }
    }

    /// Runs the check once: `Err` says why it failed.
    pub async fn probe(&self) -> Result<(), String> {
        (self.run)().await
    }

    /// Ready when `SELECT 1` answers on the pool within a second.
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::new("postgres", move || {
            let pool = pool.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    sqlx::query("SELECT 1").execute(&pool),
                )
                .await
                .map_err(|_| "timed out".to_owned())?
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        })
    }
}

/// The process-wide Prometheus recorder (installed once, shared by in-process apps).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

#[derive(Clone)]
struct AdminState {
    checks: Arc<Vec<Check>>,
    metrics: PrometheusHandle,
}

/// The admin router; tested without a socket.
pub fn router(checks: Vec<Check>) -> Router {
    let state = AdminState {
        checks: Arc::new(checks),
        metrics: metrics_handle(),
    };
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
