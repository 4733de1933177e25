//! The analytics gRPC service: per-tenant KPIs read from `output` as
//! `beacon_analytics`, under row-level security, for callers authenticated by mutual
//! TLS and authorized by their workload identity (from the access model).

mod anomaly;
pub mod queries;
mod service;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use platform::{
    Shutdown,
    access::AccessModel,
    admin::{AdminServer, Check},
    config,
    db::DbConfig,
    grpc::{Methods, RpcMetricsLayer},
    metrics::Metric,
    tls::{self, AllowedCallers, ReloadingServer, TlsFiles},
};
use proto::analytics::v1::analytics_server::AnalyticsServer;
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use service::{AnalyticsService, Bounds};

/// Successful KPI reads by gRPC method (`rpc_server_duration_seconds` counts every call).
pub const REQUESTS: &str = "analytics_requests_total";

/// What analytics exports besides the shared metrics (the admin server's, the gRPC
/// server's): registered at start.
pub const METRICS: &[Metric] =
    &[Metric::counter(REQUESTS, "KPI reads answered successfully, by gRPC method.").dynamic()];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub db: DbConfig,
    pub tls: TlsFiles,
    /// Calls without a shorter `grpc-timeout` are cut off after this.
    pub request_timeout: Duration,
    /// Date-range and page-size limits.
    pub bounds: Bounds,
    /// Serve gRPC reflection (off by default: it describes the API to anyone who may call).
    pub reflection: bool,
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "0.0.0.0:50051")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9085")?,
            db: DbConfig::from_env("beacon_analytics", "analytics")?,
            tls: TlsFiles::from_env("BEACON_TLS")?,
            request_timeout: config::millis("BEACON_REQUEST_TIMEOUT_MS", 5_000)?,
            bounds: Bounds {
                max_range_days: config::or("BEACON_MAX_RANGE_DAYS", 731)?,
                max_page_size: config::or("BEACON_MAX_PAGE_SIZE", domain::PageSize::MAX)?,
                default_page_size: 25,
            },
            reflection: config::or("BEACON_GRPC_REFLECTION", false)?,
        })
    }
}

#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    admin: AdminServer,
    tls: Arc<ReloadingServer>,
    pool: PgPool,
    callers: AllowedCallers,
    rpc_metrics: RpcMetricsLayer,
    config: Config,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let tls = tls::Reloading::new(config.tls.clone(), tls::server_config)?;
        let pool = config.db.pool();
        let callers = AllowedCallers::new(AccessModel::load().allowed_grpc_callers("analytics"));
        anyhow::ensure!(
            !callers.is_empty(),
            "the access model allows no caller of analytics"
        );
        // Every method served (health and reflection included) has its series from start.
        let rpc_metrics = RpcMetricsLayer::server(Methods::from_descriptor_sets(&[
            proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ])?);
        platform::metrics::register(&[METRICS]);
        for (_, method) in Methods::from_descriptor_sets(&[proto::FILE_DESCRIPTOR_SET])?.iter() {
            METRICS[0].series_with(vec![metrics::Label::new("method", method.to_owned())]);
        }
        let listener = platform::http::bind(config.listen).await?;
        let admin = AdminServer::bind(config.admin, vec![Check::postgres(pool.clone())]).await?;
        tracing::info!(addr = %listener.local_addr()?, admin = %admin.local_addr(), "analytics listening (mTLS)");
        Ok(Self {
            listener,
            admin,
            tls,
            pool,
            callers,
            rpc_metrics,
            config,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().port()
    }

    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let admin = tokio::spawn(self.admin.run(shutdown.clone()));
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<AnalyticsServer<AnalyticsService>>()
            .await;
        let service = AnalyticsService::new(self.pool, self.config.bounds);
        let reflection = if self.config.reflection {
            Some(
                tonic_reflection::server::Builder::configure()
                    .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
                    .build_v1()?,
            )
        } else {
            None
        };
        let incoming = tls::incoming(self.listener, self.tls, Duration::from_secs(5));
        // Every gRPC service on this port, health and reflection included, answers only
        // the allowed workload identities (the Kubernetes probes use the admin port).
        let server = tonic::transport::Server::builder()
            .timeout(self.config.request_timeout)
            .layer(platform::telemetry::grpc_trace_layer())
            // Refusals of the caller check below are counted too.
            .layer(self.rpc_metrics)
            .layer(tonic::service::InterceptorLayer::new(self.callers))
            .add_service(health_service)
            .add_optional_service(reflection)
            .add_service(AnalyticsServer::new(service))
            .serve_with_incoming_shutdown(incoming, shutdown.wait());
        platform::shutdown::drain(&shutdown, Duration::from_secs(10), server)
            .await
            .transpose()?;
        admin.await??;
        tracing::info!("analytics stopped");
        Ok(())
    }
}

/// Reads the configuration from the environment, builds and serves until `shutdown`.
pub async fn run(shutdown: platform::Shutdown) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    App::build(config).await?.run_until_stopped(shutdown).await
}
