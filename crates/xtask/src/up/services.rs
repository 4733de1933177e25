//! The services `cargo xtask up` starts: each a child process with its environment,
//! waited for until ready, stopped with the command.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use tokio::process::{Child, Command};

pub(super) struct Service {
    name: &'static str,
    pub(super) child: Child,
    admin_port: u16,
}

pub(super) fn spawn(
    bin: &Path,
    args: &[&str],
    name: &'static str,
    env: &[(&str, String)],
    admin_port: u16,
) -> anyhow::Result<Service> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("BEACON_LOG_FORMAT", "pretty")
        .env("BEACON_ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("BEACON_SECURE_COOKIES", "false")
        .kill_on_drop(true);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info,sqlx=warn");
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    Ok(Service {
        name,
        child,
        admin_port,
    })
}

pub(super) async fn wait_ready(
    client: &reqwest::Client,
    services: &[Service],
) -> anyhow::Result<()> {
    for s in services {
        let url = format!("http://127.0.0.1:{}/readyz", s.admin_port);
        let mut ok = false;
        for _ in 0..120 {
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        anyhow::ensure!(ok, "{} did not become ready ({url})", s.name);
    }
    Ok(())
}

/// A service's environment: `(variable, value)`.
type Env = Vec<(&'static str, String)>;

/// The services `run` starts one by one, each with its own settings, in start-up order
/// (each one's dependencies come before it); `tests/procs.rs` starts them the same way.
pub const SERVICES: [&str; 6] = [
    "analytics",
    "api",
    "loader",
    "ingest",
    "transform",
    "dashboard",
];

/// One service to start: its name, its package's binary, its environment, its admin port.
#[derive(Debug)]
pub struct Planned {
    pub name: String,
    pub package: String,
    pub env: Env,
    pub admin_port: u16,
}

/// Every other service of the model (those `cargo xtask new-service` adds), with what a
/// scaffolded crate reads: its listening port, its database role, its mTLS files.
pub fn scaffolded(
    model: &platform::access::AccessModel,
    db_env: &dyn Fn(&str) -> anyhow::Result<Env>,
    tls: &dyn Fn(&str) -> Env,
) -> anyhow::Result<Vec<Planned>> {
    let mut out = Vec::new();
    for (name, c) in &model.components {
        let (Some(image), Some(admin)) = (&c.image, c.ports.get("admin")) else {
            continue; // PostgreSQL, the set-up Jobs
        };
        if SERVICES.contains(&name.as_str()) {
            continue;
        }
        let mut env = match &c.db_role {
            Some(role) => db_env(role)?,
            None => Vec::new(),
        };
        if c.ports.contains_key("grpc") {
            env.extend(tls(name));
        }
        if let Some(port) = c.ports.iter().find(|(p, _)| *p != "admin").map(|(_, n)| n) {
            env.push(("BEACON_LISTEN_ADDR", format!("127.0.0.1:{port}")));
        }
        out.push(Planned {
            name: name.clone(),
            package: model.images[image].package.clone(),
            env,
            admin_port: *admin,
        });
    }
    Ok(out)
}

pub(super) fn spawn_planned(
    planned: Vec<Planned>,
    bin: &dyn Fn(&str) -> anyhow::Result<PathBuf>,
) -> anyhow::Result<Vec<Service>> {
    let mut out = Vec::new();
    for p in planned {
        for (var, file) in &p.env {
            anyhow::ensure!(
                !var.ends_with("_FILE") || Path::new(file).exists(),
                "{}: no {file} ({var}); for a new gRPC service run `cargo xtask certs`",
                p.name
            );
        }
        // Service names are &'static for the whole run; a handful, leaked once.
        let name: &'static str = Box::leak(p.name.into_boxed_str());
        out.push(spawn(&bin(&p.package)?, &[], name, &p.env, p.admin_port)?);
    }
    Ok(out)
}

pub(super) async fn first_exit(services: &mut [Service]) -> (&'static str, String) {
    loop {
        for s in services.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return (s.name, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
