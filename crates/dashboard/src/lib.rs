//! Beacon's web dashboard. Server-rendered, no inline script, no third-party origin.
//! It has no database role and no privileges of its own: it holds the signed-in
//! user's access token in a `__Host-` HttpOnly, SameSite=Strict cookie and calls the API with
//! it, so it can never show more than that user may see.

mod admin;
mod api_client;
mod charts;
mod format;
mod pages;
mod session;

use std::{net::SocketAddr, time::Duration};

use platform::{
    admin::Check,
    client_addr::TrustedProxies,
    config,
    http::{HttpLimits, HttpService},
    metrics::Metric,
};

pub use format::{format_count, format_money, format_ratio};
pub use pages::{format_credit, router};

/// Content-Security-Policy violations reported by browsers.
pub(crate) const CSP_VIOLATIONS: &str = "dashboard_csp_violations_total";

/// What the dashboard exports besides the shared metrics: registered at start.
pub const METRICS: &[Metric] = &[Metric::counter(
    CSP_VIOLATIONS,
    "Content-Security-Policy violations reported by browsers (a page breaking the policy).",
)];

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    /// Base URL of the API (`http://api.beacon-api.svc:8081`).
    pub api_url: String,
    /// Served over TLS: send HSTS. (Cookies are always `__Host-` and `Secure`;
    /// browsers accept those from http://localhost and http://127.0.0.1 too.)
    pub secure_cookies: bool,
    /// The key CSRF tokens are derived with (`BEACON_SESSION_KEY_FILE`); without
    /// one, a random key of this process (one replica only).
    pub session_key: Option<secrecy::SecretString>,
    pub http: HttpLimits,
    pub api_timeout: Duration,
    /// Proxies in front of the dashboard (the Gateway) whose `X-Forwarded-For` is
    /// believed; the browser's address so found is forwarded to the API.
    pub trusted_proxies: TrustedProxies,
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "0.0.0.0:8080")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9080")?,
            api_url: config::or("BEACON_API_URL", "http://127.0.0.1:8081".to_owned())?,
            secure_cookies: config::or("BEACON_SECURE_COOKIES", true)?,
            session_key: config::optional_secret("BEACON_SESSION_KEY")?,
            http: HttpLimits {
                body_bytes: config::or("BEACON_MAX_BODY_BYTES", 16 * 1024)?,
                request_timeout: config::millis("BEACON_REQUEST_TIMEOUT_MS", 10_000)?,
            },
            api_timeout: config::millis("BEACON_API_TIMEOUT_MS", 5_000)?,
            trusted_proxies: TrustedProxies::from_env("BEACON_TRUSTED_PROXIES")?,
        })
    }
}

/// Builds the bound dashboard service.
#[derive(Debug)]
pub struct App;

impl App {
    pub async fn build(config: Config) -> anyhow::Result<HttpService> {
        platform::metrics::register(&[METRICS]);
        let client = reqwest::Client::builder()
            .timeout(config.api_timeout)
            .no_proxy()
            .build()?;
        let api_check = {
            let (client, url) = (
                client.clone(),
                format!("{}/v1/auth/token", config.api_url.trim_end_matches('/')),
            );
            // Reachable = the API answers at all (a 405 on GET is an answer).
            Check::new("api", move || {
                let (client, url) = (client.clone(), url.clone());
                async move {
                    match client
                        .get(&url)
                        .timeout(Duration::from_secs(1))
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_server_error() => {
                            Err(format!("api answered {}", r.status()))
                        }
                        Ok(_) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
        };
        let router = router(&config, client);
        HttpService::bind(
            "dashboard",
            config.listen,
            config.admin,
            vec![api_check],
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
