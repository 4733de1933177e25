//! Test harness: every Beacon service started in-process on free ports against a fresh
//! database, with freshly generated certificates and keys. Each service is the same
//! `App` its binary runs; only the configuration differs.

pub mod procs;
pub mod scrape;

use std::{path::PathBuf, sync::Arc, time::Duration};

use platform::{Shutdown, auth::TokenVerifier, db::DbConfig, http::HttpLimits, tls::TlsFiles};
use sqlx::{Connection, PgConnection, PgPool};

/// A connection as the migrator (acting as the owner) to the database of `admin`, for
/// seeding and inspecting like an operator.
pub async fn owner_connection(admin: &PgPool) -> PgConnection {
    let options = admin
        .connect_options()
        .as_ref()
        .clone()
        .username(db::MIGRATOR_ROLE);
    PgConnection::connect_with(&options)
        .await
        .expect("connect as migrator")
}

/// A pool connecting as `role` to the database of `admin`.
pub fn role_pool(admin: &PgPool, role: &str) -> PgPool {
    DbConfig::for_role(&admin.connect_options(), role).pool()
}

/// Trades a user's e-mail and password for an access token (password grant).
pub async fn password_token(
    client: &reqwest::Client,
    api_url: &str,
    email: &str,
    password: &str,
) -> String {
    let r = client
        .post(format!("{api_url}/v1/auth/token"))
        .json(&serde_json::json!({ "grant_type": "password", "username": email, "password": password }))
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200, "password grant for {email}");
    r.json::<serde_json::Value>().await.expect("token JSON")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

#[derive(Debug)]
pub struct Stack {
    pub admin: PgPool,
    pub certs: tempfile::TempDir,
    pub api_url: String,
    /// host:port of analytics (mTLS gRPC; the `api` certificate is the allowed caller).
    pub analytics_addr: String,
    pub ingest_url: String,
    pub dashboard_url: String,
    pub loader_port: u16,
    pub admin_ports: Vec<(&'static str, u16)>,
    pub shutdown: Shutdown,
    pub client: reqwest::Client,
}

fn local(port: u16) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], port))
}

impl Stack {
    /// One sign-in attempt (password grant), whatever its answer.
    pub async fn sign_in(&self, email: &str, password: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/auth/token", self.api_url))
            .json(&serde_json::json!({ "grant_type": "password", "username": email, "password": password }))
            .send()
            .await
            .expect("token request")
    }

    /// A user's access token; the sign-in must succeed.
    pub async fn login(&self, email: &str, password: &str) -> String {
        password_token(&self.client, &self.api_url, email, password).await
    }

    /// The status of an api request with a token (no body).
    pub async fn api_status(&self, method: reqwest::Method, path: &str, token: &str) -> u16 {
        self.client
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("api request")
            .status()
            .as_u16()
    }

    /// `GET` an api path with a token; the answer must be 200 JSON.
    pub async fn get_json(&self, token: &str, path: &str) -> serde_json::Value {
        let r = self
            .client
            .get(format!("{}{path}", self.api_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("api request");
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.expect("JSON answer")
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    pub fn tls_files(&self, component: &str) -> TlsFiles {
        TlsFiles {
            cert: self.cert(&format!("{component}.crt")),
            key: self.cert(&format!("{component}.key")),
            ca: self.cert("ca.crt"),
        }
    }

    pub fn db(&self, role: &str) -> DbConfig {
        DbConfig::for_role(&self.admin.connect_options(), role)
    }

    /// A connection as the migrator (acting as the owner), for seeding like an operator.
    pub async fn owner(&self) -> PgConnection {
        owner_connection(&self.admin).await
    }

    /// The api's configuration in this stack, talking to analytics at `analytics_addr`.
    pub fn api_config(&self, analytics_addr: String) -> api::Config {
        api::Config {
            listen: local(0),
            admin: local(0),
            db: self.db("beacon_api"),
            http: HttpLimits {
                body_bytes: 64 * 1024,
                request_timeout: Duration::from_secs(10),
            },
            signing_key_file: self.cert("jwt-signing.key").to_string_lossy().into_owned(),
            public_key_file: self.cert("jwt-public.pem").to_string_lossy().into_owned(),
            previous_public_key_file: None,
            token_ttl: time::Duration::minutes(15),
            analytics_addr,
            analytics_server_name: "analytics".into(),
            analytics_timeout: Duration::from_secs(3),
            tls: self.tls_files("api"),
            cors_origins: Vec::new(),
            protection: api::Protection::default(),
            subject_hash_key_file: self
                .cert(xtask::secrets::SUBJECT_HASH_KEY)
                .to_string_lossy()
                .into_owned(),
        }
    }

    /// Migrates the database and starts analytics, api, loader, ingest and dashboard.
    pub async fn start(admin: PgPool) -> anyhow::Result<Self> {
        platform::telemetry::init_propagator();
        db::setup(&admin).await?;
        let certs = tempfile::tempdir()?;
        xtask::certs::generate(certs.path())?;
        xtask::secrets::subject_hash_key(certs.path())?;
        let shutdown = Shutdown::new();
        let http = HttpLimits {
            body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
        };
        let mut stack = Self {
            admin,
            certs,
            api_url: String::new(),
            ingest_url: String::new(),
            dashboard_url: String::new(),
            loader_port: 0,
            analytics_addr: String::new(),
            admin_ports: Vec::new(),
            shutdown: shutdown.clone(),
            client: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(20))
                .build()?,
        };
        let public = std::fs::read(stack.cert("jwt-public.pem"))?;
        let verifier = Arc::new(TokenVerifier::from_public_pems(&[public])?);

        let analytics = analytics::App::build(analytics::Config {
            listen: local(0),
            admin: local(0),
            db: stack.db("beacon_analytics"),
            tls: stack.tls_files("analytics"),
            request_timeout: Duration::from_secs(5),
            bounds: analytics::Bounds::default(),
            reflection: false,
        })
        .await?;
        let analytics_port = analytics.port();
        stack.analytics_addr = format!("127.0.0.1:{analytics_port}");
        stack
            .admin_ports
            .push(("analytics", analytics.admin_port()));
        tokio::spawn(analytics.run_until_stopped(shutdown.clone()));

        let api = api::App::build(stack.api_config(format!("127.0.0.1:{analytics_port}"))).await?;
        stack.api_url = format!("http://127.0.0.1:{}", api.port());
        stack.admin_ports.push(("api", api.admin_port()));
        tokio::spawn(api.run_until_stopped(shutdown.clone()));

        let limits = domain::Limits::default();
        let loader = pipeline::loader::App::build(
            pipeline::loader::Config {
                listen: local(0),
                admin: local(0),
                db: stack.db("beacon_loader"),
                request_timeout: http.request_timeout,
                limits,
            },
            verifier.clone(),
        )
        .await?;
        stack.loader_port = loader.port();
        stack.admin_ports.push(("loader", loader.admin_port()));
        tokio::spawn(loader.run_until_stopped(shutdown.clone()));

        let ingest = pipeline::ingest::App::build(
            pipeline::ingest::Config {
                listen: local(0),
                admin: local(0),
                loader_url: format!("http://127.0.0.1:{}", stack.loader_port),
                http,
                limits,
                loader_timeout: Duration::from_secs(10),
                max_decoded_bytes: 4 * 1024 * 1024,
                memory_budget_bytes: 32 * 1024 * 1024,
                budget_wait: Duration::from_secs(2),
                rate_per_second: 5.0,
                rate_burst: 30,
            },
            verifier,
        )
        .await?;
        stack.ingest_url = format!("http://127.0.0.1:{}", ingest.port());
        stack.admin_ports.push(("ingest", ingest.admin_port()));
        tokio::spawn(ingest.run_until_stopped(shutdown.clone()));

        let dashboard = dashboard::App::build(dashboard::Config {
            listen: local(0),
            admin: local(0),
            api_url: stack.api_url.clone(),
            secure_cookies: false,
            session_key: None,
            http,
            api_timeout: Duration::from_secs(5),
            trusted_proxies: Default::default(),
        })
        .await?;
        stack.dashboard_url = format!("http://127.0.0.1:{}", dashboard.port());
        stack
            .admin_ports
            .push(("dashboard", dashboard.admin_port()));
        tokio::spawn(dashboard.run_until_stopped(shutdown.clone()));
        Ok(stack)
    }

    /// Creates the tenants, trades each one's API key for an ingest token, and pushes
    /// `sizes[i]` generated events for tenant `i` through ingest. Returns the events
    /// and the ingest tokens.
    pub async fn seed(
        &self,
        tenants: &[xtask::seed::DemoTenant],
        sizes: &[usize],
        now: time::OffsetDateTime,
    ) -> anyhow::Result<Vec<(Vec<domain::Event>, String)>> {
        let mut owner = self.owner().await;
        let mut out = Vec::new();
        for (i, (tenant, size)) in tenants.iter().zip(sizes).enumerate() {
            let key = xtask::seed::create_tenant(&mut owner, tenant).await?;
            let token = xtask::seed::ingest_token(&self.client, &self.api_url, &key).await?;
            let events =
                xtask::seed::generate_events(7 + i as u64, *size, 50, tenant.currency, now);
            let (accepted, duplicates) =
                xtask::seed::push(&self.client, &self.ingest_url, &token, &events, 400).await?;
            anyhow::ensure!(
                (accepted, duplicates) == (events.len() as u64, 0),
                "seed: {accepted} accepted, {duplicates} duplicates"
            );
            out.push((events, token));
        }
        Ok(out)
    }

    /// A token as the api would sign it (with this stack's signing key), for `tenant`
    /// with `scope`, valid for `ttl` from now (negative: already expired).
    pub fn sign_token(&self, tenant: uuid::Uuid, scope: &str, ttl: time::Duration) -> String {
        let signer = api::credentials::TokenSigner::new(
            &std::fs::read(self.cert("jwt-signing.key")).expect("signing key"),
            &std::fs::read(self.cert("jwt-public.pem")).expect("public key"),
            ttl,
        )
        .expect("signer");
        signer
            .sign(format!("key:{}", uuid::Uuid::new_v4()), tenant, scope)
            .expect("sign")
            .0
    }

    /// A gRPC client of analytics holding `component`'s certificate.
    pub fn analytics_client(
        &self,
        component: &str,
    ) -> proto::analytics::v1::analytics_client::AnalyticsClient<tonic::transport::Channel> {
        let tls =
            platform::tls::Reloading::new(self.tls_files(component), platform::tls::client_config)
                .expect("client TLS");
        let channel = platform::tls::grpc_channel(
            &self.analytics_addr,
            "analytics",
            tls,
            Duration::from_secs(5),
        )
        .expect("channel");
        proto::analytics::v1::analytics_client::AnalyticsClient::new(channel)
    }

    /// Runs transform as `beacon_transform` once: it takes every committed batch and
    /// every queued attribution day, whatever other transactions run on the cluster.
    /// Checks that nothing is left behind, and returns what the run did.
    pub async fn transform(&self) -> pipeline::transform::RunStats {
        let pool = self.db("beacon_transform").pool();
        let stats = pipeline::transform::run_once(&pool)
            .await
            .expect("transform");
        let mut owner = self.owner().await;
        let (batches, days): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM raw.batches), (SELECT count(*) FROM output.attribution_work)",
        )
        .fetch_one(&mut owner)
        .await
        .expect("transform backlog");
        assert_eq!(
            (batches, days),
            (0, 0),
            "transform left work behind: {stats:?}"
        );
        stats
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// (day, campaign, channel, currency, model) of an `output.attribution` row.
pub type AttributionKey = (time::Date, String, String, String, String);

/// `output.attribution` of `tenant` as read by the owner, keyed like
/// [`expected_attribution`].
pub async fn actual_attribution(
    owner: &mut PgConnection,
    tenant: uuid::Uuid,
) -> std::collections::BTreeMap<AttributionKey, (i64, i64)> {
    let rows: Vec<(time::Date, String, String, String, String, i64, i64)> = sqlx::query_as(
        "SELECT day, campaign, channel, currency::text, model, conversions_micros, revenue_micros
         FROM output.attribution WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(owner)
    .await
    .expect("reading output.attribution");
    rows.into_iter()
        .map(|(d, c, ch, cur, m, conv, rev)| ((d, c, ch, cur, m), (conv, rev)))
        .collect()
}

/// The transform's default attribution window (pipeline::transform::Settings).
pub const ATTRIBUTION_WINDOW_DAYS: i64 = 30;

/// Attribution computed from the events alone: for each conversion with a user key,
/// the clicks of the same tenant and user at most ATTRIBUTION_WINDOW_DAYS before it
/// (inclusive), ordered by (time, event_id), of which only the `max_clicks` latest
/// count. last_click: the last one gets everything. linear: each gets 1/n of a
/// conversion (in millionths) and of the revenue, remainders to the last.
pub fn expected_attribution(
    events: &[domain::Event],
    max_clicks: usize,
) -> std::collections::BTreeMap<AttributionKey, (i64, i64)> {
    use domain::{Event, EventType};
    let mut out: std::collections::BTreeMap<AttributionKey, (i64, i64)> = Default::default();
    for conv in events
        .iter()
        .filter(|e| e.event_type == EventType::Conversion)
    {
        let Some(user) = &conv.user_key else { continue };
        let mut clicks: Vec<&Event> = events
            .iter()
            .filter(|k| {
                k.event_type == EventType::Click
                    && k.user_key.as_ref() == Some(user)
                    && k.occurred_at <= conv.occurred_at
                    && k.occurred_at
                        >= conv.occurred_at - time::Duration::days(ATTRIBUTION_WINDOW_DAYS)
            })
            .collect();
        if clicks.is_empty() {
            continue;
        }
        clicks.sort_by(|a, b| {
            (a.occurred_at, a.event_id.as_bytes()).cmp(&(b.occurred_at, b.event_id.as_bytes()))
        });
        let clicks = &clicks[clicks.len().saturating_sub(max_clicks)..];
        let n = clicks.len() as i64;
        let day = conv.occurred_at.date();
        let key = |k: &Event, model: &str| {
            (
                day,
                k.campaign.clone(),
                k.channel.clone(),
                conv.currency.to_string(),
                model.to_owned(),
            )
        };
        let last = clicks[clicks.len() - 1];
        let e = out.entry(key(last, "last_click")).or_default();
        e.0 += 1_000_000;
        e.1 += conv.revenue_micros;
        for (i, k) in clicks.iter().enumerate() {
            let is_last = i + 1 == clicks.len();
            let e = out.entry(key(k, "linear")).or_default();
            e.0 += 1_000_000 / n + if is_last { 1_000_000 % n } else { 0 };
            e.1 += conv.revenue_micros / n + if is_last { conv.revenue_micros % n } else { 0 };
        }
    }
    out
}

/// The demo tenants with one currency (and, like every generated data set, the same
/// campaign and channel names): nothing but tenancy keeps their numbers apart.
pub fn same_currency_tenants(password: &str) -> [xtask::seed::DemoTenant; 2] {
    let mut tenants = xtask::seed::demo_tenants(password);
    tenants[1].currency = tenants[0].currency;
    tenants
}

/// Facts that differ from a recomputation from the raw events, over every tenant (rows
/// only in one of the two), as the owner. Only the events the transform has taken
/// count (their loading transaction's `raw.batches` row is gone), so this holds at
/// every moment, not only once the transform has caught up.
pub async fn facts_mismatches(owner: &mut PgConnection) -> i64 {
    sqlx::query_scalar(
        "WITH expected AS (
             SELECT tenant_id, (occurred_at AT TIME ZONE 'UTC')::date AS day, campaign, channel, currency,
                    count(*) FILTER (WHERE event_type = 'impression') AS impressions,
                    count(*) FILTER (WHERE event_type = 'click') AS clicks,
                    count(*) FILTER (WHERE event_type = 'conversion') AS conversions,
                    sum(cost_micros) AS spend, sum(revenue_micros) AS revenue
             FROM raw.events e
             -- Aggregated = its loading transaction's batch is gone.
             WHERE NOT EXISTS (SELECT FROM raw.batches b
                               WHERE b.tenant_id = e.tenant_id AND b.loaded_xid = e.loaded_xid)
             GROUP BY 1, 2, 3, 4, 5
         ), actual AS (
             SELECT tenant_id, day, campaign, channel, currency, impressions, clicks, conversions,
                    spend_micros, revenue_micros
             FROM output.daily_campaign_facts
         )
         SELECT count(*) FROM ((TABLE expected EXCEPT TABLE actual)
                               UNION ALL (TABLE actual EXCEPT TABLE expected)) d",
    )
    .fetch_one(owner)
    .await
    .expect("facts against raw events")
}
