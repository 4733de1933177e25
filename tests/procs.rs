//! Every Beacon service as its own OS process (the `beacon-testsvc` binary runs each
//! exactly as its own binary does), so a test can read a service's peak memory from
//! `/proc/<pid>/status`, compare it with the limit its Kubernetes manifest sets, and
//! see that hostile input never crashes a process.
//!
//! The abuse suite (`tests/abuse`) and `cargo xtask bench abuse` use this; the
//! in-process [`crate::Stack`] stays the harness for everything else.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use sqlx::PgPool;
use tokio::process::{Child, Command};

/// One running service process.
#[derive(Debug)]
pub struct Service {
    pub name: &'static str,
    child: Child,
    /// The data port (0 for the transform, which has none).
    pub port: u16,
    pub admin_port: u16,
}

impl Service {
    pub fn pid(&self) -> u32 {
        self.child.id().expect("service still running")
    }

    /// Whether the process is still running (a crash or an OOM kill ends it).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:") * 1024
    }

    /// Current resident set size (`VmRSS`), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:") * 1024
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process: `STOP` freezes it with its
    /// sockets open, what a hung or swapped-out dependency looks like to its callers.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "kill -{signal} {} failed", self.name);
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .context("service did not stop within 20 s of SIGTERM")??;
        anyhow::ensure!(status.success(), "{} exited with {status}", self.name);
        Ok(())
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The memory limit, in bytes, that the Kubernetes manifests under `k8s/base` set for
/// the container named `container` (the manifests are the one source of that limit).
pub fn manifest_memory_limit(container: &str) -> anyhow::Result<u64> {
    let mut found = Vec::new();
    let mut dirs = vec![workspace_root().join("k8s/base")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path)?;
                for doc in serde_yaml_ng::Deserializer::from_str(&text) {
                    let Ok(doc) = serde_yaml_ng::Value::deserialize(doc) else {
                        continue;
                    };
                    collect_limits(&doc, container, &mut found);
                }
            }
        }
    }
    // A container may appear in several workloads (the transform's Deployment and
    // its CronJob): the strictest limit is the one to stay under.
    let limits = found
        .iter()
        .map(|q| parse_quantity(q))
        .collect::<anyhow::Result<Vec<u64>>>()?;
    limits
        .into_iter()
        .min()
        .with_context(|| format!("no container {container:?} with a memory limit under k8s/base"))
}

use serde::Deserialize as _;

fn collect_limits(value: &serde_yaml_ng::Value, container: &str, out: &mut Vec<String>) {
    use serde_yaml_ng::Value;
    match value {
        Value::Mapping(map) => {
            let is_it = map.get("name").and_then(Value::as_str) == Some(container)
                && map.contains_key("image");
            if is_it
                && let Some(limit) = map
                    .get("resources")
                    .and_then(|r| r.get("limits"))
                    .and_then(|l| l.get("memory"))
                    .and_then(Value::as_str)
            {
                out.push(limit.to_owned());
            }
            for v in map.values() {
                collect_limits(v, container, out);
            }
        }
        Value::Sequence(seq) => seq.iter().for_each(|v| collect_limits(v, container, out)),
        _ => {}
    }
}

/// A Kubernetes memory quantity (`256Mi`, `1Gi`, `500M`, plain bytes) in bytes.
pub fn parse_quantity(q: &str) -> anyhow::Result<u64> {
    let units: [(&str, u64); 6] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return Ok(n.parse::<u64>().context(q.to_owned())? * factor);
        }
    }
    q.parse().with_context(|| format!("memory quantity {q:?}"))
}

/// A port nothing listens on, never handed out twice in this test process: the tests
/// of one binary start their stacks in parallel, and the kernel may return a port it
/// just gave another stack whose service has not bound it yet (that service would then
/// fail with "address in use" while the other stack's answers its readiness check).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        if GIVEN.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

/// Analytics, api, loader, ingest, transform (loop) and dashboard, each its own
/// process, on a migrated database with fresh certificates and keys.
#[derive(Debug)]
pub struct ProcStack {
    pub admin: PgPool,
    pub certs: tempfile::TempDir,
    pub services: BTreeMap<&'static str, Service>,
    pub client: reqwest::Client,
    /// Each service's environment as started, for [`ProcStack::restart`].
    envs: BTreeMap<&'static str, Vec<(String, String)>>,
}

/// In start-up order: each one's dependencies come before it (the list `cargo xtask up`
/// starts by name).
pub use xtask::up::SERVICES;

/// Extra or overriding environment for one service: `(service, variable, value)`.
pub type Override = (&'static str, &'static str, String);

impl ProcStack {
    /// Starts every service from `bin` (the test's `CARGO_BIN_EXE_beacon-testsvc`) and
    /// waits until each one's `/readyz` answers 200. `overrides` replace or add
    /// variables of one service.
    pub async fn start(admin: PgPool, bin: &Path, overrides: &[Override]) -> anyhow::Result<Self> {
        db::setup(&admin).await?;
        let certs = tempfile::tempdir()?;
        xtask::certs::generate(certs.path())?;
        xtask::secrets::subject_hash_key(certs.path())?;
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()?;
        let mut stack = Self {
            admin,
            certs,
            services: BTreeMap::new(),
            client,
            envs: BTreeMap::new(),
        };
        let mut ports: BTreeMap<&str, (u16, u16)> = SERVICES
            .into_iter()
            .map(|s| (s, (free_port(), free_port())))
            .collect();
        // In start-up order, each ready before the next: a port picked free may be taken
        // by another test before the child binds it, so a service that exits during
        // start-up is started again on fresh ports (its dependents start after it).
        for name in SERVICES {
            let mut attempt = 0;
            let service = loop {
                attempt += 1;
                let (port, admin_port) = ports[name];
                let mut env = stack.env_of(name, &ports);
                for (service, var, value) in overrides {
                    if *service == name {
                        env.retain(|(k, _)| k != var);
                        env.push(((*var).to_owned(), value.clone()));
                    }
                }
                let mut service = spawn(bin, name, port, admin_port, &env)?;
                match wait_ready(&stack.client, &mut service).await {
                    Ok(()) => {
                        stack.envs.insert(name, env);
                        break service;
                    }
                    Err(e) if attempt < 3 && !service.is_running() => {
                        eprintln!("procs: {e}; retrying on fresh ports");
                        ports.insert(name, (free_port(), free_port()));
                    }
                    Err(e) => return Err(e),
                }
            };
            stack.services.insert(name, service);
        }
        Ok(stack)
    }

    fn cert(&self, name: &str) -> String {
        self.certs.path().join(name).to_string_lossy().into_owned()
    }

    fn env_of(&self, name: &str, ports: &BTreeMap<&str, (u16, u16)>) -> Vec<(String, String)> {
        let (port, admin_port) = ports[name];
        let options = self.admin.connect_options();
        let db = |role: &str| {
            vec![
                ("DATABASE_HOST", options.get_host().to_owned()),
                ("DATABASE_PORT", options.get_port().to_string()),
                (
                    "DATABASE_NAME",
                    options.get_database().unwrap_or("postgres").to_owned(),
                ),
                ("DATABASE_USER", role.to_owned()),
            ]
        };
        let tls = |component: &str| {
            vec![
                (
                    "BEACON_TLS_CERT_FILE",
                    self.cert(&format!("{component}.crt")),
                ),
                (
                    "BEACON_TLS_KEY_FILE",
                    self.cert(&format!("{component}.key")),
                ),
                ("BEACON_TLS_CA_FILE", self.cert("ca.crt")),
            ]
        };
        let mut env: Vec<(&str, String)> = vec![
            ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{admin_port}")),
        ];
        match name {
            "analytics" => {
                env.extend(db("beacon_analytics"));
                env.extend(tls("analytics"));
            }
            "api" => {
                env.extend(db("beacon_api"));
                env.extend(tls("api"));
                env.extend([
                    ("BEACON_JWT_SIGNING_KEY_FILE", self.cert("jwt-signing.key")),
                    ("BEACON_JWT_PUBLIC_KEY_FILE", self.cert("jwt-public.pem")),
                    (
                        "BEACON_ANALYTICS_ADDR",
                        format!("127.0.0.1:{}", ports["analytics"].0),
                    ),
                    ("BEACON_ANALYTICS_SERVER_NAME", "analytics".to_owned()),
                    (
                        "BEACON_SUBJECT_HASH_KEY_FILE",
                        self.cert(xtask::secrets::SUBJECT_HASH_KEY),
                    ),
                ]);
            }
            "loader" => {
                env.extend(db("beacon_loader"));
                env.push(("BEACON_JWT_PUBLIC_KEY_FILE", self.cert("jwt-public.pem")));
            }
            "ingest" => env.extend([
                ("BEACON_JWT_PUBLIC_KEY_FILE", self.cert("jwt-public.pem")),
                (
                    "BEACON_LOADER_URL",
                    format!("http://127.0.0.1:{}", ports["loader"].0),
                ),
            ]),
            "transform" => {
                env.retain(|(k, _)| *k != "BEACON_LISTEN_ADDR");
                env.extend(db("beacon_transform"));
                env.push(("BEACON_TRANSFORM_INTERVAL_MS", "200".to_owned()));
            }
            "dashboard" => env.extend([
                (
                    "BEACON_API_URL",
                    format!("http://127.0.0.1:{}", ports["api"].0),
                ),
                ("BEACON_SECURE_COOKIES", "false".to_owned()),
            ]),
            other => unreachable!("unknown service {other}"),
        }
        env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }

    pub fn service(&mut self, name: &str) -> &mut Service {
        self.services
            .get_mut(name)
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.services[name].port)
    }

    /// A connection as the migrator (acting as the owner), for seeding like an operator.
    pub async fn owner(&self) -> anyhow::Result<sqlx::PgConnection> {
        Ok(crate::owner_connection(&self.admin).await)
    }

    /// Creates `tenant` and trades its API key for an ingest token.
    pub async fn tenant(&self, tenant: &xtask::seed::DemoTenant) -> anyhow::Result<String> {
        let mut owner = self.owner().await?;
        let key = xtask::seed::create_tenant(&mut owner, tenant).await?;
        xtask::seed::ingest_token(&self.client, &self.url("api"), &key).await
    }

    /// SIGKILL: `name` dies at once, in the middle of whatever it was doing (no drain,
    /// no rollback but PostgreSQL's own); returns when the process is gone.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let service = self.service(name);
        service.child.start_kill()?;
        tokio::time::timeout(Duration::from_secs(10), service.child.wait())
            .await
            .with_context(|| format!("{name} still running 10 s after SIGKILL"))??;
        Ok(())
    }

    /// Starts `name` again from `bin`, with the environment and ports it had, and
    /// waits until its `/readyz` answers 200.
    pub async fn restart(&mut self, name: &str, bin: &Path) -> anyhow::Result<()> {
        let old = self.service(name);
        anyhow::ensure!(!old.is_running(), "{name} is still running");
        let (name, port, admin_port) = (old.name, old.port, old.admin_port);
        let mut service = spawn(bin, name, port, admin_port, &self.envs[name])?;
        wait_ready(&self.client, &mut service).await?;
        self.services.insert(name, service);
        Ok(())
    }

    /// Whether `name`'s `/readyz` answers 200 within `timeout`.
    pub async fn is_ready(&self, name: &str, timeout: Duration) -> bool {
        let url = format!("http://127.0.0.1:{}/readyz", self.services[name].admin_port);
        self.client
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    /// Every service still running; the name of the first one that is not.
    pub fn all_running(&mut self) -> Result<(), &'static str> {
        for (name, service) in &mut self.services {
            if !service.is_running() {
                return Err(name);
            }
        }
        Ok(())
    }

    /// Peak RSS of `service` beside its manifest limit, in MiB, for reports.
    pub fn memory_report(&mut self, service: &str, container: &str) -> anyhow::Result<(f64, f64)> {
        let peak = self.service(service).peak_rss_bytes() as f64 / f64::from(1 << 20);
        let limit = manifest_memory_limit(container)? as f64 / f64::from(1 << 20);
        Ok((peak, limit))
    }
}

impl Drop for ProcStack {
    fn drop(&mut self) {
        for service in self.services.values_mut() {
            let _ = service.child.start_kill();
        }
    }
}

fn spawn(
    bin: &Path,
    name: &'static str,
    port: u16,
    admin_port: u16,
    env: &[(String, String)],
) -> anyhow::Result<Service> {
    let mut cmd = Command::new(bin);
    cmd.arg(name)
        .env_clear()
        .env(
            "RUST_LOG",
            std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("BEACON_LOG_FORMAT", "json")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("spawn {} {name}", bin.display()))?;
    Ok(Service {
        name,
        child,
        port: if name == "transform" { 0 } else { port },
        admin_port,
    })
}

async fn wait_ready(client: &reqwest::Client, service: &mut Service) -> anyhow::Result<()> {
    let url = format!("http://127.0.0.1:{}/readyz", service.admin_port);
    for _ in 0..300 {
        if !service.is_running() {
            anyhow::bail!("{} exited during start-up", service.name);
        }
        if client
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{} not ready after 30 s", service.name)
}

/// One measured figure of the abuse suite beside the bound it is held to. With
/// `BEACON_ABUSE_REPORT=<file>` set (as `cargo xtask bench abuse` does) each figure is
/// appended to that file as a JSON line; the test itself asserts only generous bounds.
pub fn record(scenario: &str, figure: &str, value: f64, bound: f64, unit: &str) {
    eprintln!("abuse: {scenario}: {figure} = {value:.1} {unit} (bound {bound:.1} {unit})");
    if let Ok(path) = std::env::var("BEACON_ABUSE_REPORT") {
        use std::io::Write as _;
        let line = serde_json::json!({
            "scenario": scenario, "figure": figure, "value": value, "bound": bound, "unit": unit,
        });
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}
