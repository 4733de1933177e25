//! __name__: what it does, in one sentence (scaffolded by `cargo xtask new-service --kind grpc`).
//!
//! An internal gRPC server over mutual TLS. Every call is authorized by the caller's
//! workload identity (the SPIFFE URI SAN of its certificate), checked against the
//! callers `[grpc.__name__]` of security/access-model.toml allows; the chain itself is
//! verified in the handshake. Health, readiness and metrics are on the admin port.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use platform::{
    Shutdown,
    access::AccessModel,
    admin::{AdminServer, Check},
    config,
    db::DbConfig, // @db
    tls::{self, AllowedCallers, ReloadingServer, TlsFiles},
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// The contract, generated at build time from `proto/` (protox: no system `protoc`).
#[allow(clippy::all, missing_debug_implementations)]
pub mod v1 {
    tonic::include_proto!("__product__.__snake__.v1");
}

use v1::{
    HelloReply, HelloRequest,
    __snake___server::{__Pascal__, __Pascal__Server},
};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub tls: TlsFiles,
    /// Calls without a shorter `grpc-timeout` are cut off after this.
    pub request_timeout: Duration,
    /// Its own database role, `__role__` (password from `DATABASE_PASSWORD_FILE`). // @db
    pub db: DbConfig, // @db
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "0.0.0.0:__port__")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:__admin__")?,
            tls: TlsFiles::from_env("BEACON_TLS")?,
            request_timeout: config::millis("BEACON_REQUEST_TIMEOUT_MS", 5_000)?,
            db: DbConfig::from_env("__role__", "__name__")?, // @db
        })
    }
}

/// The example RPC.
#[derive(Debug, Clone)]
pub struct Service {
    callers: AllowedCallers,
}

#[tonic::async_trait]
impl __Pascal__ for Service {
    async fn hello(&self, request: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let caller = self.callers.authorize(&request)?;
        let name = request.into_inner().name;
        if name.is_empty() || name.len() > 100 {
            return Err(Status::invalid_argument("name must be 1 to 100 bytes"));
        }
        Ok(Response::new(HelloReply {
            message: format!("hello, {name}"),
            caller,
        }))
    }
}

/// The bound server: gRPC (mTLS) and admin listeners.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    admin: AdminServer,
    tls: Arc<ReloadingServer>,
    callers: AllowedCallers,
    request_timeout: Duration,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let tls = tls::Reloading::new(config.tls.clone(), tls::server_config)?;
        let callers = AllowedCallers::new(AccessModel::load().allowed_grpc_callers("__name__"));
        anyhow::ensure!(!callers.is_empty(), "the access model allows no caller of __name__");
        let listener = platform::http::bind(config.listen).await?;
        let checks: Vec<Check> = vec![]; // @nodb
        let checks = vec![Check::postgres(config.db.pool())]; // @db
        let admin = AdminServer::bind(config.admin, checks).await?;
        tracing::info!(addr = %listener.local_addr()?, admin = %admin.local_addr(), "__name__ listening (mTLS)");
        Ok(Self {
            listener,
            admin,
            tls,
            callers,
            request_timeout: config.request_timeout,
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
        let service = Service {
            callers: self.callers.clone(),
        };
        let incoming = tls::incoming(self.listener, self.tls, Duration::from_secs(5));
        let server = tonic::transport::Server::builder()
            .timeout(self.request_timeout)
            .layer(platform::telemetry::grpc_trace_layer())
            // Every RPC, present and future, is refused to identities the model does not allow.
            .add_service(__Pascal__Server::with_interceptor(service, self.callers))
            .serve_with_incoming_shutdown(incoming, shutdown.wait());
        platform::shutdown::drain(&shutdown, Duration::from_secs(10), server)
            .await
            .transpose()?;
        admin.await??;
        Ok(())
    }
}

/// Reads the configuration from the environment, builds and serves until `shutdown`.
pub async fn run(shutdown: Shutdown) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    App::build(config).await?.run_until_stopped(shutdown).await
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use time::OffsetDateTime;
    use v1::__snake___client::__Pascal__Client;

    use super::*;

    /// A CA, and certificates for the server and for `identities`, under `dir`.
    fn certificates(dir: &Path, identities: &[&str]) -> TlsFiles {
        let model = AccessModel::load();
        let ca = xtask::certs::Ca::new("test CA").unwrap();
        std::fs::write(dir.join("ca.crt"), &ca.cert_pem).unwrap();
        let now = OffsetDateTime::now_utc();
        for component in identities.iter().chain(&["__name__"]) {
            let id = model.spiffe_id(component).unwrap();
            let dns = xtask::certs::dns_names(&model, component);
            let (cert, key) = ca.issue(&id, &dns, now - time::Duration::hours(1), now + time::Duration::hours(1)).unwrap();
            std::fs::write(dir.join(format!("{component}.crt")), cert).unwrap();
            std::fs::write(dir.join(format!("{component}.key")), key).unwrap();
        }
        files(dir, "__name__")
    }

    fn files(dir: &Path, component: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(format!("{component}.crt")),
            key: dir.join(format!("{component}.key")),
            ca: dir.join("ca.crt"),
        }
    }

    fn unique_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("__name__-test-{}-{}", std::process::id(), OffsetDateTime::now_utc().unix_timestamp_nanos()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn call(dir: &Path, as_component: &str, port: u16, name: &str) -> Result<HelloReply, Status> {
        let client = tls::Reloading::new(files(dir, as_component), tls::client_config).unwrap();
        let channel = tls::grpc_channel(&format!("127.0.0.1:{port}"), "localhost", client, Duration::from_secs(5)).unwrap();
        __Pascal__Client::new(channel)
            .hello(HelloRequest { name: name.into() })
            .await
            .map(Response::into_inner)
    }

    /// The model's caller is answered; another workload of the same CA is refused.
    #[tokio::test]
    async fn only_the_models_callers_are_answered() {
        let dir = unique_dir();
        let tls = certificates(&dir, &["__caller__", "__refused__"]);
        let app = App::build(Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            tls,
            request_timeout: Duration::from_secs(5),
            db: unreachable_database(), // @db
        })
        .await
        .unwrap();
        let (port, admin) = (app.port(), app.admin_port());
        let shutdown = Shutdown::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));

        let reply = call(&dir, "__caller__", port, "world").await.unwrap();
        assert_eq!(reply.message, "hello, world");
        assert_eq!(reply.caller, AccessModel::load().spiffe_id("__caller__").unwrap());
        let refused = call(&dir, "__refused__", port, "world").await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        let empty = call(&dir, "__caller__", port, "").await.unwrap_err();
        assert_eq!(empty.code(), tonic::Code::InvalidArgument, "{empty:?}");

        let ready = "200"; // @nodb
        let ready = "503"; // @db
        assert_admin_port(admin, ready).await;
        shutdown.trigger();
        task.await.unwrap().unwrap();
        std::fs::remove_dir_all(&dir).ok();
    }

    // __test_helpers__
}
