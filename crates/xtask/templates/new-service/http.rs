//! __name__: what it does, in one sentence (scaffolded by `cargo xtask new-service --kind http`).
//! What it may reach and who may reach it is in security/access-model.toml.

use std::{net::SocketAddr, time::Duration};

use axum::{Json, Router, routing::get};
use platform::{
    admin::Check, // @db
    config,
    db::DbConfig, // @db
    http::{HttpLimits, HttpService},
};

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub http: HttpLimits,
    /// Its own database role, `__role__` (password from `DATABASE_PASSWORD_FILE`). // @db
    pub db: DbConfig, // @db
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "0.0.0.0:__port__")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:__admin__")?,
            http: HttpLimits {
                body_bytes: config::or("BEACON_MAX_BODY_BYTES", 64 * 1024)?,
                request_timeout: config::millis("BEACON_REQUEST_TIMEOUT_MS", 10_000)?,
            },
            db: DbConfig::from_env("__role__", "__name__")?, // @db
        })
    }
}

/// The public routes (health, readiness and metrics are on the admin port).
pub fn router(config: &Config) -> Router {
    let routes = Router::new().route("/v1/__name__/hello", get(hello));
    platform::http::with_standard_layers(routes, config.http)
}

async fn hello() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "service": "__name__" }))
}

/// Builds the bound service.
#[derive(Debug)]
pub struct App;

impl App {
    pub async fn build(config: Config) -> anyhow::Result<HttpService> {
        let router = router(&config);
        let checks = vec![]; // @nodb
        let checks = vec![Check::postgres(config.db.pool())]; // @db
        HttpService::bind(
            "__name__",
            config.listen,
            config.admin,
            checks,
            router,
            Duration::from_secs(10),
        )
        .await
    }
}

/// Reads the configuration from the environment, builds and serves until `shutdown`.
pub async fn run(shutdown: platform::Shutdown) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    App::build(config).await?.run_until_stopped(shutdown).await
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt as _;

    use super::*;

    fn config() -> Config {
        Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            http: HttpLimits {
                body_bytes: 1024,
                request_timeout: Duration::from_secs(1),
            },
            db: unreachable_database(), // @db
        }
    }

    #[tokio::test]
    async fn hello_answers() {
        let response = router(&config())
            .oneshot(Request::get("/v1/__name__/hello").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    #[tokio::test]
    async fn health_readiness_and_metrics_are_on_the_admin_port() {
        let service = App::build(config()).await.unwrap();
        let admin = service.admin_port();
        let shutdown = platform::Shutdown::new();
        let task = tokio::spawn(service.run_until_stopped(shutdown.clone()));
        let ready = "200"; // @nodb
        let ready = "503"; // @db
        assert_admin_port(admin, ready).await;
        shutdown.trigger();
        task.await.unwrap().unwrap();
    }

    // __test_helpers__
}
