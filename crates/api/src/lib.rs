//! Beacon's public REST API. The tenant of every request comes from the verified
//! credential alone; the database session is scoped to it (row-level security) and
//! KPI reads go to the analytics service over mutual TLS.

mod analytics_slots;
mod api_keys;
mod audit;
mod auth;
mod campaigns;
pub mod credentials;
pub mod error;
mod extract;
mod kpis;
pub mod openapi;
mod revoke;
pub mod routes;
mod tenant;
mod token_cache;
mod users;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::extract::FromRef;
use platform::{
    admin::Check,
    auth::TokenVerifier,
    client_addr::TrustedProxies,
    config,
    db::DbConfig,
    http::{HttpLimits, HttpService},
    ratelimit::{BackoffConfig, RateLimiter},
    telemetry::GrpcTracePropagation,
    tls::{self, TlsFiles},
};
use proto::analytics::v1::analytics_client::AnalyticsClient;
use sqlx::PgPool;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

pub use auth::LoginThrottle;
pub use credentials::{PasswordHashing, TokenSigner};
pub use routes::router;

pub type Analytics = AnalyticsClient<InterceptedService<Channel, GrpcTracePropagation>>;

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub db: DbConfig,
    pub http: HttpLimits,
    pub signing_key_file: String,
    pub public_key_file: String,
    /// Still accepted while keys rotate.
    pub previous_public_key_file: Option<String>,
    pub token_ttl: time::Duration,
    /// host:port of the analytics gRPC service.
    pub analytics_addr: String,
    /// The name analytics' certificate is checked against.
    pub analytics_server_name: String,
    pub analytics_timeout: Duration,
    pub tls: TlsFiles,
    /// Origins allowed by CORS; empty (the default) = CORS off.
    pub cors_origins: Vec<String>,
    pub protection: Protection,
}

/// What keeps one client from exhausting the api or locking others out (see
/// docs/SECURITY.md, "Availability").
#[derive(Debug, Clone)]
pub struct Protection {
    /// Failed logins per account (e-mail or API-key prefix): exponential backoff.
    pub login_account: BackoffConfig,
    /// Failed logins per client address: slowed down, never locked out for long (many
    /// people share an address).
    pub login_address: BackoffConfig,
    /// Password verifications running at once; more answer 503 at once.
    pub hash_concurrency: usize,
    /// Callers whose `X-Forwarded-For` is believed (the dashboard, proxies).
    pub trusted_proxies: TrustedProxies,
    /// Permission-denied audit rows per tenant and subject: per minute, and in a burst.
    pub denied_audit_per_minute: u32,
    pub denied_audit_burst: u32,
    /// Analytics calls waiting at once, and of them per tenant; more answer 503
    /// (`Retry-After`) at once, so a hung analytics holds at most this many requests
    /// (and their memory) in the api, and one tenant cannot take every slot.
    pub analytics_in_flight: usize,
    pub analytics_in_flight_per_tenant: usize,
}

/// Longest wait the per-address login throttle may impose.
pub const MAX_ADDRESS_DELAY: Duration = Duration::from_secs(60);

impl Default for Protection {
    /// An account gets 5 free failures, then the wait doubles from 1 s up to 15 min; an
    /// address gets 20, then doubles from 1 s up to 30 s. One password verification per
    /// core. No proxy trusted. 10 denial rows in a burst, then 6 a minute. 64 analytics
    /// calls in flight, 16 of them for one tenant.
    fn default() -> Self {
        Self {
            login_account: BackoffConfig::default(),
            login_address: BackoffConfig {
                free_failures: 20,
                max_delay: Duration::from_secs(30),
                window: Duration::from_secs(15 * 60),
                ..BackoffConfig::default()
            },
            hash_concurrency: PasswordHashing::default_concurrency(),
            trusted_proxies: TrustedProxies::default(),
            denied_audit_per_minute: 6,
            denied_audit_burst: 10,
            analytics_in_flight: 64,
            analytics_in_flight_per_tenant: 16,
        }
    }
}

fn at_least_one<T>(var: &str, default: T) -> config::Result<T>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let value = config::or(var, default)?;
    if value < T::from(1) {
        return Err(config::ConfigError::new(var, "must be at least 1"));
    }
    Ok(value)
}

impl Protection {
    pub fn from_env() -> config::Result<Self> {
        let d = Self::default();
        let address_delay = config::or(
            "BEACON_LOGIN_ADDRESS_MAX_DELAY_SECONDS",
            d.login_address.max_delay.as_secs(),
        )?;
        if address_delay == 0 || address_delay > MAX_ADDRESS_DELAY.as_secs() {
            return Err(config::ConfigError::new(
                "BEACON_LOGIN_ADDRESS_MAX_DELAY_SECONDS",
                "must be 1 to 60: an address is slowed down, never locked out",
            ));
        }
        let hash_concurrency =
            at_least_one("BEACON_PASSWORD_HASH_CONCURRENCY", d.hash_concurrency)?;
        Ok(Self {
            login_account: BackoffConfig {
                free_failures: config::or(
                    "BEACON_LOGIN_FREE_FAILURES_PER_ACCOUNT",
                    d.login_account.free_failures,
                )?,
                ..d.login_account
            },
            login_address: BackoffConfig {
                free_failures: config::or(
                    "BEACON_LOGIN_FREE_FAILURES_PER_ADDRESS",
                    d.login_address.free_failures,
                )?,
                max_delay: Duration::from_secs(address_delay),
                ..d.login_address
            },
            hash_concurrency,
            trusted_proxies: TrustedProxies::from_env("BEACON_TRUSTED_PROXIES")?,
            denied_audit_per_minute: at_least_one(
                "BEACON_AUDIT_DENIALS_PER_MINUTE",
                d.denied_audit_per_minute,
            )?,
            denied_audit_burst: at_least_one("BEACON_AUDIT_DENIALS_BURST", d.denied_audit_burst)?,
            analytics_in_flight: at_least_one(
                "BEACON_ANALYTICS_MAX_IN_FLIGHT",
                d.analytics_in_flight,
            )?,
            analytics_in_flight_per_tenant: at_least_one(
                "BEACON_ANALYTICS_MAX_IN_FLIGHT_PER_TENANT",
                d.analytics_in_flight_per_tenant,
            )?,
        })
    }
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        let analytics_addr: String =
            config::or("BEACON_ANALYTICS_ADDR", "127.0.0.1:50051".to_owned())?;
        let default_name = analytics_addr
            .rsplit_once(':')
            .map(|(h, _)| h.to_owned())
            .unwrap_or_default();
        Ok(Self {
            listen: config::addr("BEACON_LISTEN_ADDR", "0.0.0.0:8081")?,
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:9081")?,
            db: DbConfig::from_env("beacon_api", "api")?,
            http: HttpLimits {
                body_bytes: config::or("BEACON_MAX_BODY_BYTES", 64 * 1024)?,
                request_timeout: config::millis("BEACON_REQUEST_TIMEOUT_MS", 10_000)?,
            },
            signing_key_file: config::required("BEACON_JWT_SIGNING_KEY_FILE")?,
            public_key_file: config::required("BEACON_JWT_PUBLIC_KEY_FILE")?,
            previous_public_key_file: config::optional("BEACON_JWT_PREVIOUS_PUBLIC_KEY_FILE")?,
            token_ttl: time::Duration::minutes(config::or("BEACON_TOKEN_TTL_MINUTES", 15)?),
            analytics_server_name: config::or("BEACON_ANALYTICS_SERVER_NAME", default_name)?,
            analytics_addr,
            analytics_timeout: config::millis("BEACON_ANALYTICS_TIMEOUT_MS", 3_000)?,
            tls: TlsFiles::from_env("BEACON_TLS")?,
            cors_origins: config::optional::<String>("BEACON_CORS_ALLOWED_ORIGINS")?
                .map(|v| {
                    v.split(',')
                        .map(|o| o.trim().to_owned())
                        .filter(|o| !o.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            protection: Protection::from_env()?,
        })
    }
}

/// Shared state of the handlers.
#[derive(Clone, Debug)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: Arc<TokenVerifier>,
    pub signer: Arc<TokenSigner>,
    pub analytics: Analytics,
    /// Upper bound of one analytics call (answered 504 beyond).
    pub analytics_timeout: Duration,
    /// Analytics calls in flight, a bounded number ([`Protection::analytics_in_flight`]).
    pub analytics_slots: Arc<analytics_slots::AnalyticsSlots>,
    pub throttle: Arc<LoginThrottle>,
    /// Password verification, a bounded number at a time.
    pub hashing: PasswordHashing,
    /// Callers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: TrustedProxies,
    /// Samples permission-denied audit rows per tenant and subject.
    pub denials: Arc<RateLimiter<(uuid::Uuid, String)>>,
    /// Reporting currency per tenant, cached briefly (it almost never changes).
    pub currencies: moka::sync::Cache<uuid::Uuid, String>,
    /// Tokens already verified, by the SHA-256 of their exact bytes.
    pub verified: Arc<token_cache::VerifiedTokens>,
}

impl AppState {
    /// State for tests and tools: the given pool and analytics client, default
    /// [`Protection`].
    pub fn new(
        pool: PgPool,
        verifier: Arc<TokenVerifier>,
        signer: Arc<TokenSigner>,
        analytics: Analytics,
        analytics_timeout: Duration,
    ) -> Self {
        Self::with_protection(
            pool,
            verifier,
            signer,
            analytics,
            analytics_timeout,
            &Protection::default(),
        )
    }

    /// State under the limits of `p`.
    pub fn with_protection(
        pool: PgPool,
        verifier: Arc<TokenVerifier>,
        signer: Arc<TokenSigner>,
        analytics: Analytics,
        analytics_timeout: Duration,
        p: &Protection,
    ) -> Self {
        Self {
            pool,
            verifier,
            signer,
            analytics,
            analytics_timeout,
            analytics_slots: Arc::new(analytics_slots::AnalyticsSlots::new(
                p.analytics_in_flight,
                p.analytics_in_flight_per_tenant,
            )),
            throttle: Arc::new(LoginThrottle::new(p.login_account, p.login_address)),
            hashing: PasswordHashing::new(p.hash_concurrency),
            trusted_proxies: p.trusted_proxies.clone(),
            denials: Arc::new(RateLimiter::new(
                f64::from(p.denied_audit_per_minute) / 60.0,
                p.denied_audit_burst,
            )),
            currencies: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(Duration::from_secs(60))
                .build(),
            verified: Arc::new(token_cache::VerifiedTokens::new(10_000)),
        }
    }
}

impl FromRef<AppState> for Arc<TokenVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// Builds the bound API service.
#[derive(Debug)]
pub struct App;

impl App {
    pub async fn build(config: Config) -> anyhow::Result<HttpService> {
        let read = |var: &str, path: &str| {
            std::fs::read(path)
                .map_err(|e| config::ConfigError::new(var, format!("cannot read {path}: {e}")))
        };
        let private = read("BEACON_JWT_SIGNING_KEY_FILE", &config.signing_key_file)?;
        let public = read("BEACON_JWT_PUBLIC_KEY_FILE", &config.public_key_file)?;
        let signer = Arc::new(TokenSigner::new(&private, &public, config.token_ttl)?);
        let mut public_keys = vec![public.clone()];
        if let Some(previous) = &config.previous_public_key_file {
            public_keys.push(read("BEACON_JWT_PREVIOUS_PUBLIC_KEY_FILE", previous)?);
        }
        let verifier = Arc::new(TokenVerifier::from_public_pems(&public_keys)?);
        // The signing key and the published public key must be a pair.
        let (probe, _) = signer.sign("probe".into(), uuid::Uuid::nil(), "")?;
        verifier.verify(&probe).map_err(|e| {
            anyhow::anyhow!(
                "BEACON_JWT_SIGNING_KEY_FILE does not match BEACON_JWT_PUBLIC_KEY_FILE: {e}"
            )
        })?;

        // Analytics must prove its workload identity (the access model's), not only the
        // DNS name it is called by.
        let analytics_id = platform::access::AccessModel::load()
            .spiffe_id("analytics")
            .ok_or_else(|| anyhow::anyhow!("the access model has no analytics component"))?;
        let client_tls =
            tls::Reloading::new(config.tls.clone(), tls::client_config_for(&analytics_id))?;
        let channel = tls::grpc_channel(
            &config.analytics_addr,
            &config.analytics_server_name,
            client_tls.clone(),
            config.analytics_timeout,
        )?;
        let analytics = AnalyticsClient::with_interceptor(channel, GrpcTracePropagation);
        let pool = config.db.pool();
        let analytics_check = {
            let (addr, name) = (
                config.analytics_addr.clone(),
                config.analytics_server_name.clone(),
            );
            Check::new("analytics", move || {
                let (tls, addr, name) = (client_tls.clone(), addr.clone(), name.clone());
                async move {
                    tokio::time::timeout(Duration::from_secs(1), tls::connect(&tls, &addr, &name))
                        .await
                        .map_err(|_| "timed out".to_owned())?
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                }
            })
        };
        let state = AppState::with_protection(
            pool.clone(),
            verifier,
            signer,
            analytics,
            config.analytics_timeout,
            &config.protection,
        );
        let checks = vec![Check::postgres(pool), analytics_check];
        HttpService::bind(
            "api",
            config.listen,
            config.admin,
            checks,
            router(state, config.http, &config.cors_origins)?,
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
