//! What the fault tests share: a PostgreSQL cluster of their own, clients that record
//! every answer they get, readiness watched over time, and the figures they print.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sqlx::{
    Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use xtask::up::Cluster;

/// A throwaway PostgreSQL cluster (`cargo xtask up`'s [`Cluster`]) in a temporary
/// directory, on a port of its own, that the test stops and starts; stopped and removed
/// when dropped.
#[derive(Debug)]
pub struct OwnCluster {
    cluster: Option<Cluster>,
    port: u16,
    dir: tempfile::TempDir,
}

impl OwnCluster {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("beacon-faults-pg-")
            .tempdir()?;
        let port = xtask::up::free_port()?;
        let mut own = Self {
            cluster: None,
            port,
            dir,
        };
        own.start_again().await?;
        Ok(own)
    }

    /// The superuser `postgres` on `database`.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database(database)
    }

    /// Creates `name` and returns a pool on it as the superuser.
    pub async fn database(&self, name: &str) -> anyhow::Result<PgPool> {
        let mut conn = PgConnection::connect_with(&self.options("postgres")).await?;
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await?;
        Ok(PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(self.options(name))
            .await?)
    }

    /// `pg_ctl stop -m fast`: open transactions are rolled back, every session is cut.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let cluster = self.cluster.take().context("the cluster is not running")?;
        tokio::task::spawn_blocking(move || cluster.stop()).await?;
        anyhow::ensure!(
            PgConnection::connect_with(&self.options("postgres"))
                .await
                .is_err(),
            "PostgreSQL still answers after pg_ctl stop"
        );
        Ok(())
    }

    /// Starts the same cluster (same data, same port) again.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.cluster.is_none(), "the cluster is running");
        let (dir, port) = (self.dir.path().to_owned(), self.port);
        let cluster =
            tokio::task::spawn_blocking(move || Cluster::at(dir).start(port, port)).await??;
        self.cluster = Some(cluster);
        Ok(())
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.stop();
        }
    }
}

/// An HTTP client that gives up after `timeout`: a hang is recorded as a failure (status
/// 0), never waited out.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("HTTP client")
}

/// One answer a client got.
#[derive(Debug, Clone)]
pub struct Answer {
    pub service: &'static str,
    /// When the request was sent, since the test's epoch.
    pub sent: Duration,
    pub latency: Duration,
    /// 0 when there was no HTTP answer (connection refused or reset, client timeout).
    pub status: u16,
    pub problem_json: bool,
    pub retry_after: Option<u64>,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn done(&self) -> Duration {
        self.sent + self.latency
    }
}

/// Every answer of every client of a test.
#[derive(Debug, Clone)]
pub struct Log {
    epoch: Instant,
    answers: Arc<Mutex<Vec<Answer>>>,
    stop: Arc<AtomicBool>,
}

impl Log {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            answers: Arc::default(),
            stop: Arc::default(),
        }
    }

    /// Time since the test's epoch.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Sends `request`, records the answer, and returns it with its JSON body (if any).
    pub async fn send(
        &self,
        service: &'static str,
        request: reqwest::RequestBuilder,
    ) -> (Answer, Option<serde_json::Value>) {
        let sent = self.now();
        let started = Instant::now();
        let (status, problem_json, retry_after, body) = match request.send().await {
            Ok(r) => {
                let header = |name| {
                    r.headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let problem = header(reqwest::header::CONTENT_TYPE)
                    .is_some_and(|v| v.starts_with("application/problem+json"));
                let retry = header(reqwest::header::RETRY_AFTER).and_then(|v| v.parse().ok());
                let status = r.status().as_u16();
                (status, problem, retry, r.json().await.ok())
            }
            Err(_) => (0, false, None, None),
        };
        let answer = Answer {
            service,
            sent,
            latency: started.elapsed(),
            status,
            problem_json,
            retry_after,
        };
        lock(&self.answers).push(answer.clone());
        (answer, body)
    }

    /// The answers of `service` sent within `[from, to)`.
    pub fn of(&self, service: &str, from: Duration, to: Duration) -> Vec<Answer> {
        lock(&self.answers)
            .iter()
            .filter(|a| a.service == service && a.sent >= from && a.sent < to)
            .cloned()
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Every failure answer must say what it is and when to come back: problem+json, and
/// `Retry-After` on a 503; its status must be one of `allowed`.
pub fn assert_clean_failures(answers: &[Answer], allowed: &[u16], context: &str) {
    for a in answers.iter().filter(|a| !a.ok()) {
        assert!(
            allowed.contains(&a.status),
            "{context}: {} answered {} (allowed: 2xx, {allowed:?}): {a:?}",
            a.service,
            a.status
        );
        assert!(a.problem_json, "{context}: not problem+json: {a:?}");
        if a.status == 503 || a.status == 429 {
            assert!(a.retry_after.is_some(), "{context}: no Retry-After: {a:?}");
        }
    }
}

pub fn max_latency(answers: &[Answer]) -> Duration {
    answers.iter().map(|a| a.latency).max().unwrap_or_default()
}

/// Readiness of services over time: `(service, when, ready)`, one task per service
/// polling its `/readyz` every 100 ms until the log is stopped.
pub fn watch_readiness(
    log: &Log,
    services: Vec<(&'static str, u16)>,
) -> tokio::task::JoinHandle<Vec<(&'static str, Duration, bool)>> {
    let log = log.clone();
    tokio::spawn(async move {
        let client = client(Duration::from_secs(3));
        let mut tasks = tokio::task::JoinSet::new();
        for (name, admin_port) in services {
            let (log, client) = (log.clone(), client.clone());
            tasks.spawn(async move {
                let url = format!("http://127.0.0.1:{admin_port}/readyz");
                let mut seen = Vec::new();
                while !log.stopped() {
                    let at = log.now();
                    let ready = client
                        .get(&url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    seen.push((name, at, ready));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                seen
            });
        }
        let mut all = Vec::new();
        while let Some(seen) = tasks.join_next().await {
            all.extend(seen.expect("readiness watcher"));
        }
        all
    })
}

/// Polls `probe` every 100 ms until it is true; how long that took.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !probe().await {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// One measured figure, printed for docs/BENCHMARKS.md.
pub fn figure(scenario: &str, name: &str, value: f64, unit: &str) {
    eprintln!("faults: {scenario}: {name} = {value:.2} {unit}");
}

/// The access token of `tenant`'s viewer (KPI reads), signed in at the stack's api.
pub async fn viewer_token(
    stack: &beacon_e2e::procs::ProcStack,
    tenant: &xtask::seed::DemoTenant,
) -> String {
    beacon_e2e::password_token(
        &stack.client,
        &stack.url("api"),
        &tenant.viewer_email,
        &tenant.password,
    )
    .await
}
