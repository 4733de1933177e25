//! `cargo xtask up`: the whole product on a laptop, no cluster needed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use platform::shutdown::Shutdown;
use rand::{Rng, distr::Alphanumeric};
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::process::{Child, Command};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// The git-ignored `.dev/` of the workspace, or `BEACON_DEV_DIR` when set (tests use
/// their own): generated secrets, certificates and the throwaway PostgreSQL cluster.
pub fn dev_dir() -> PathBuf {
    std::env::var_os("BEACON_DEV_DIR").map_or_else(|| workspace_root().join(".dev"), PathBuf::from)
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// `cargo build <args>` in the workspace; returns the executables it produced by target
/// name, wherever the target directory is (`CARGO_TARGET_DIR`, `build.target-dir`).
pub fn cargo_build(root: &Path, args: &[&str]) -> anyhow::Result<HashMap<String, PathBuf>> {
    let out = std::process::Command::new(cargo())
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "--message-format=json-render-diagnostics",
        ])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    anyhow::ensure!(
        out.status.success(),
        "cargo build {} failed",
        args.join(" ")
    );
    Ok(out
        .stdout
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let name = m["target"]["name"].as_str()?.to_owned();
            Some((name, PathBuf::from(m["executable"].as_str()?)))
        })
        .collect())
}

/// The workspace's target directory as cargo resolves it (`CARGO_TARGET_DIR`,
/// `build.target-dir`, or `target/`), never assumed.
pub fn target_dir(root: &Path) -> anyhow::Result<PathBuf> {
    let out = std::process::Command::new(cargo())
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version=1"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo metadata")?;
    anyhow::ensure!(out.status.success(), "cargo metadata failed");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata gave no target_directory")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The first executable file called `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The `DATABASE_URL` that `.cargo/config.toml` gives every process cargo runs (tests
/// use it). For `cargo xtask` it is no choice of the user's: that server is tried, and
/// when it does not answer, a throwaway cluster is started instead. Any other value
/// was exported by the user and is used as given.
pub const WORKSPACE_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Where the throwaway cluster listens unless `--pg-port` says otherwise.
pub const THROWAWAY_PORT: u16 = 54329;

/// Where the local PostgreSQL is (options of `cargo xtask up` and `migrate`).
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct LocalPg {
    /// Look for PostgreSQL on 127.0.0.1:PORT, and start the throwaway cluster there when
    /// nothing usable answers (default: look on 5432, start on 54329). An exported
    /// DATABASE_URL takes precedence.
    #[arg(long, value_name = "PORT")]
    pub pg_port: Option<u16>,
}

/// Where PostgreSQL is: an exported DATABASE_URL, else a server on 127.0.0.1:5432 that
/// trusts `postgres`, else a throwaway cluster in .dev/postgres, started with the installed
/// PostgreSQL and stopped again by [`Postgres::stop`].
#[derive(Debug)]
pub struct Postgres {
    pub admin: PgConnectOptions,
    throwaway: Option<Cluster>,
}

impl Postgres {
    pub async fn find_or_start() -> anyhow::Result<Self> {
        Self::find_or_start_on(LocalPg::default()).await
    }

    pub async fn find_or_start_on(local: LocalPg) -> anyhow::Result<Self> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if url != WORKSPACE_DATABASE_URL => return Self::exported(&url).await,
            _ => {}
        }
        let server = |port| {
            PgConnectOptions::new()
                .host("127.0.0.1")
                .port(port)
                .username("postgres")
                .database("postgres")
        };
        let probe = local.pg_port.unwrap_or(5432);
        let cluster = Cluster::at(dev_dir().join("postgres"));
        if let Some(port) = cluster.running_port() {
            println!(
                "· PostgreSQL: the throwaway cluster in {} is already running on 127.0.0.1:{port}; \
                 using it and leaving it running (`cargo xtask up` stops only what it started)",
                cluster.dir.display()
            );
            return Ok(Self {
                admin: server(port),
                throwaway: None,
            });
        }
        if PgConnection::connect_with(&server(probe)).await.is_ok() {
            println!("· PostgreSQL: 127.0.0.1:{probe}");
            return Ok(Self {
                admin: server(probe),
                throwaway: None,
            });
        }
        println!(
            "· PostgreSQL: nothing on 127.0.0.1:{probe} lets `postgres` in without a password"
        );
        let port = local.pg_port.unwrap_or(THROWAWAY_PORT);
        let cluster = cluster.start(probe, port)?;
        println!("· PostgreSQL: throwaway cluster on 127.0.0.1:{port} (Ctrl-C stops it)");
        Ok(Self {
            admin: server(port),
            throwaway: Some(cluster),
        })
    }

    async fn exported(url: &str) -> anyhow::Result<Self> {
        let admin: PgConnectOptions = url
            .parse()
            .context("DATABASE_URL is not a valid postgres URL")?;
        PgConnection::connect_with(&admin).await.with_context(|| {
            format!(
                "cannot connect to the DATABASE_URL exported in your environment ({}:{}, user {}). \
                 Start that server, or unset DATABASE_URL to let `cargo xtask` use a server \
                 on 127.0.0.1:5432 or start a throwaway one",
                admin.get_host(),
                admin.get_port(),
                admin.get_username()
            )
        })?;
        println!("· PostgreSQL: DATABASE_URL");
        Ok(Self {
            admin,
            throwaway: None,
        })
    }

    /// Stops the throwaway cluster if this process started it.
    pub fn stop(&self) {
        if let Some(cluster) = &self.throwaway {
            cluster.stop();
        }
    }
}

/// The oldest PostgreSQL whose binaries the throwaway cluster may use.
const MIN_POSTGRES: u32 = 15;

/// How a new throwaway cluster authenticates, and whether it speaks TLS. The default is
/// `cargo xtask up`'s: trust on loopback, no TLS.
#[derive(Debug, Clone, Default)]
pub struct ServerSecurity {
    /// The administrator's (`postgres`) password, from this file: every connection must
    /// then authenticate with scram-sha-256, local ones included.
    pub admin_password_file: Option<PathBuf>,
    /// The server's certificate and key (PEM): TLS on, and connections without TLS
    /// refused (`hostnossl ... reject`).
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl ServerSecurity {
    /// `pg_hba.conf`: who may connect how.
    fn hba(&self) -> String {
        let method = if self.admin_password_file.is_some() {
            "scram-sha-256"
        } else {
            "trust"
        };
        let host = if self.tls.is_some() {
            "hostssl"
        } else {
            "host"
        };
        let mut hba = format!(
            "# Written by cargo xtask (up::ServerSecurity).\n\
             local all all {method}\n\
             {host} all all 127.0.0.1/32 {method}\n\
             {host} all all ::1/128 {method}\n"
        );
        if self.tls.is_some() {
            hba.push_str("hostnossl all all 0.0.0.0/0 reject\nhostnossl all all ::/0 reject\n");
        }
        hba
    }
}

/// A throwaway cluster: `data/` and `server.log` in one directory, created by the
/// installed `initdb` (on PATH, `pg_config --bindir`, or Debian's and Ubuntu's
/// /usr/lib/postgresql/<version>/bin) and reused on the next run. initdb and postgres
/// refuse to run as root, so as root the cluster belongs to the `postgres` OS user
/// (every PostgreSQL package creates it) and its tools run through `runuser`.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<&'static str>,
    security: ServerSecurity,
}

impl Cluster {
    /// The cluster in `dir`, before its binaries are looked for.
    pub fn at(dir: PathBuf) -> Self {
        Self {
            dir,
            bin: PathBuf::new(),
            run_as: None,
            security: ServerSecurity::default(),
        }
    }

    /// How the cluster is made when it is created (an existing one is kept as it is).
    #[must_use]
    pub fn with_security(mut self, security: ServerSecurity) -> Self {
        self.security = security;
        self
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The port of the server running on `data/`, if one is (its postmaster.pid).
    fn running_port(&self) -> Option<u16> {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        let mut lines = pid_file.lines();
        let pid = lines.next()?.trim();
        // A stale file from a crashed server names a process that is gone.
        let alive = std::process::Command::new("kill")
            .args(["-0", pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        alive.then(|| lines.nth(2)?.trim().parse().ok())?
    }

    /// Creates the cluster if needed and starts it on 127.0.0.1:`port`. `probed` is the
    /// port where no usable server answered, for the error messages.
    pub fn start(mut self, probed: u16, port: u16) -> anyhow::Result<Self> {
        self.bin = find_server_bin().ok_or_else(|| {
            anyhow::anyhow!(
                "no PostgreSQL to use: DATABASE_URL is not exported, nothing on 127.0.0.1:{probed} \
                 accepts the user `postgres` without a password, and `initdb`/`pg_ctl` are neither \
                 on PATH, nor in `pg_config --bindir`, nor in /usr/lib/postgresql/<version>/bin. \
                 Install PostgreSQL {MIN_POSTGRES} or later (Debian/Ubuntu: `apt-get install \
                 postgresql`; Fedora: `dnf install postgresql-server`; elsewhere put its `bin` \
                 directory on PATH) and run this again: it then starts its own cluster in {}. Or \
                 export DATABASE_URL naming a server whose user may create databases and roles",
                self.dir.display()
            )
        })?;
        let version = server_version(&self.bin)?;
        anyhow::ensure!(
            version >= MIN_POSTGRES,
            "the PostgreSQL found in {} is version {version}; Beacon needs {MIN_POSTGRES} or later \
             (Debian/Ubuntu: `apt-get install postgresql-{MIN_POSTGRES}` or newer)",
            self.bin.display()
        );
        self.run_as = run_as()?;
        std::fs::create_dir_all(&self.dir)?;
        if let Some(user) = self.run_as {
            self.hand_over(user)?;
        }
        let data = self.data();
        match std::fs::read_to_string(data.join("PG_VERSION")) {
            Ok(made_by) => {
                anyhow::ensure!(
                    made_by.trim() == version.to_string(),
                    "the throwaway cluster in {} was made by PostgreSQL {}, but the binaries found \
                     are version {version} ({}): delete that directory (it holds only development \
                     data) and run this again",
                    data.display(),
                    made_by.trim(),
                    self.bin.display()
                );
                println!(
                    "· PostgreSQL: starting the throwaway cluster in {}",
                    data.display()
                );
            }
            Err(_) => {
                println!(
                    "· PostgreSQL: creating a throwaway cluster in {} (PostgreSQL {version} from {})",
                    data.display(),
                    self.bin.display()
                );
                self.initdb(&data)?;
            }
        }
        let log = self.dir.join("server.log");
        let status = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-o"])
            // Loopback TCP only, no Unix socket to collide with another server's.
            .arg(format!(
                "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories=''{}",
                // The certificate and key are server.crt and server.key in data/.
                if self.security.tls.is_some() {
                    " -c ssl=on"
                } else {
                    ""
                }
            ))
            .arg("start")
            .stdout(Stdio::null())
            .status()
            .context("running pg_ctl")?;
        anyhow::ensure!(
            status.success(),
            "the throwaway PostgreSQL did not start on 127.0.0.1:{port} (is the port taken?); see {}",
            log.display()
        );
        Ok(self)
    }

    /// Runs initdb on `data`, then writes what [`ServerSecurity`] asks for.
    fn initdb(&self, data: &Path) -> anyhow::Result<()> {
        let mut initdb = self.tool("initdb");
        initdb
            .arg("-D")
            .arg(data)
            .args(["-U", "postgres", "-E", "UTF8", "--no-locale"])
            .arg("--no-instructions");
        // initdb reads the password as the cluster's owner: a copy in its directory.
        let pwfile = self.dir.join("admin.password");
        match &self.security.admin_password_file {
            Some(file) => {
                self.install(file, &pwfile)?;
                initdb
                    .arg("--auth=scram-sha-256")
                    .arg("--pwfile")
                    .arg(&pwfile);
            }
            None => {
                initdb.arg("--auth=trust");
            }
        }
        let out = initdb.output().context("running initdb");
        let _ = std::fs::remove_file(&pwfile);
        let out = out?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        if let Some((cert, key)) = &self.security.tls {
            self.install(cert, &data.join("server.crt"))?;
            self.install(key, &data.join("server.key"))?;
        }
        let hba = data.join("pg_hba.conf");
        std::fs::write(&hba, self.security.hba())
            .with_context(|| format!("writing {}", hba.display()))?;
        self.give(&hba)
    }

    /// Copies `from` to `to`, readable by the cluster's owner only (PostgreSQL refuses a
    /// key file others can read).
    fn install(&self, from: &Path, to: &Path) -> anyhow::Result<()> {
        std::fs::copy(from, to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o600))?;
        }
        self.give(to)
    }

    /// Makes `path` the cluster owner's (when that is another OS user).
    fn give(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(user) = self.run_as {
            let status = std::process::Command::new("chown")
                .arg(format!("{user}:"))
                .arg(path)
                .status()
                .context("running chown")?;
            anyhow::ensure!(status.success(), "chown {user} {} failed", path.display());
        }
        Ok(())
    }

    pub fn stop(&self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .status();
    }

    /// A command running `bin/name`, as the cluster's owner, in the cluster's directory
    /// (the caller's may be closed to that user).
    fn tool(&self, name: &str) -> std::process::Command {
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut cmd = std::process::Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(self.bin.join(name));
                cmd
            }
            None => std::process::Command::new(self.bin.join(name)),
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Makes the cluster's directory the OS user's, and checks that user can reach it.
    fn hand_over(&self, user: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("chown")
            .arg(format!("{user}:"))
            .arg(&self.dir)
            .status()
            .context("running chown")?;
        anyhow::ensure!(
            status.success(),
            "chown {user} {} failed",
            self.dir.display()
        );
        let reachable = std::process::Command::new("runuser")
            .args(["-u", user, "--", "test", "-w"])
            .arg(&self.dir)
            .current_dir("/")
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(
            reachable,
            "`cargo xtask up` runs as root, and PostgreSQL refuses to, so the throwaway cluster \
             runs as the `{user}` user, which cannot reach {} (a parent directory is closed to \
             other users, as /root usually is). Run as a normal user, put the workspace (or \
             BEACON_DEV_DIR) where other users may enter, or export DATABASE_URL",
            self.dir.display()
        );
        Ok(())
    }
}

/// The directory with `initdb` and `pg_ctl`: PATH, then `pg_config --bindir`, then the
/// highest version in /usr/lib/postgresql/<version>/bin (Debian, Ubuntu).
fn find_server_bin() -> Option<PathBuf> {
    let on_path = find_on_path("initdb").and_then(|p| Some(p.parent()?.to_owned()));
    let pg_config = || {
        let out = std::process::Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())?;
        Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    };
    let has_tools = |dir: &PathBuf| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    on_path
        .filter(has_tools)
        .or_else(|| pg_config().filter(has_tools))
        .or_else(|| highest_version_bin(Path::new("/usr/lib/postgresql")).filter(has_tools))
}

/// `root/<version>/bin` of the highest version (`9.6` < `15` < `17`).
fn highest_version_bin(root: &Path) -> Option<PathBuf> {
    std::fs::read_dir(root)
        .ok()?
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let version: Vec<u32> = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((version, path.join("bin")))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// The major version of the PostgreSQL in `bin` (`initdb (PostgreSQL) 15.4 (Debian …)`).
fn server_version(bin: &Path) -> anyhow::Result<u32> {
    let out = std::process::Command::new(bin.join("initdb"))
        .arg("--version")
        .output()
        .context("running initdb --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_once(") ")
        .and_then(|(_, v)| v.split(['.', ' ', '\n']).next()?.parse().ok())
        .with_context(|| format!("unexpected `initdb --version` output: {text}"))
}

/// The OS user to run the cluster as: none for a normal user; `postgres` for root.
fn run_as() -> anyhow::Result<Option<&'static str>> {
    let uid = |user: Option<&str>| {
        std::process::Command::new("id")
            .arg("-u")
            .args(user)
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if uid(None).as_deref() != Some("0") {
        return Ok(None);
    }
    let lacking = if uid(Some("postgres")).is_none() {
        "the `postgres` user (`useradd --system --home-dir /var/lib/postgresql postgres`)"
    } else if find_on_path("runuser").is_none() {
        "`runuser` (package util-linux)"
    } else {
        return Ok(Some("postgres"));
    };
    anyhow::bail!(
        "`cargo xtask up` runs as root, and initdb and postgres refuse to: the throwaway cluster \
         runs as the `postgres` user through `runuser`, but this machine lacks {lacking}. Install \
         it, run as a normal user, or export DATABASE_URL"
    )
}

/// 32 random alphanumeric characters.
pub fn random_secret() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A generated secret file under .dev/secrets, created once and reused.
pub fn secret_file(name: &str) -> anyhow::Result<PathBuf> {
    let path = dev_dir().join("secrets").join(name);
    crate::private_file::create(&path, random_secret().as_bytes())?;
    Ok(path)
}

/// Creates the `beacon` database if needed, roles, passwords (from generated files)
/// and runs the migrations. Returns the admin pool on that database.
pub async fn migrate(pg: &Postgres, database: &str) -> anyhow::Result<PgPool> {
    let mut admin = PgConnection::connect_with(&pg.admin).await?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        sqlx::raw_sql(&format!("CREATE DATABASE \"{database}\""))
            .execute(&mut admin)
            .await?;
    }
    let pool = PgPool::connect_with(pg.admin.clone().database(database)).await?;
    db::bootstrap_roles(&pool).await?;
    db::prepare_database(&pool, database).await?;
    for role in db::LOGIN_ROLES {
        let password = std::fs::read_to_string(secret_file(&format!("{role}.password"))?)?;
        db::set_password(&pool, role, password.trim()).await?;
    }
    db::migrate(
        pg.admin
            .clone()
            .database(database)
            .username(db::MIGRATOR_ROLE),
    )
    .await?;
    println!("· database `{database}` migrated");
    Ok(pool)
}

struct Service {
    name: &'static str,
    child: Child,
    admin_port: u16,
}

fn spawn(
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

async fn wait_ready(client: &reqwest::Client, services: &[Service]) -> anyhow::Result<()> {
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

/// Options of `cargo xtask up`.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Options {
    /// Only PostgreSQL: find or start it, migrate the `beacon` database, wait for Ctrl-C.
    #[arg(long)]
    pub database_only: bool,
    #[command(flatten)]
    pub pg: LocalPg,
}

pub async fn up(options: Options) -> anyhow::Result<()> {
    // From here on Ctrl-C (or SIGTERM) stops what this command started.
    let shutdown = Shutdown::new().on_signals();
    if options.database_only {
        println!("Beacon: PostgreSQL only");
    } else {
        println!("Beacon: starting everything locally");
    }
    let pg = Postgres::find_or_start_on(options.pg).await?;
    let result = if options.database_only {
        database_only(&pg, &shutdown).await
    } else {
        run(&workspace_root(), &pg, &shutdown).await
    };
    pg.stop();
    result
}

async fn database_only(pg: &Postgres, shutdown: &Shutdown) -> anyhow::Result<()> {
    migrate(pg, "beacon").await?.close().await;
    println!(
        "PostgreSQL is ready on {}:{} (user {}, database beacon; roles' passwords in {}).",
        pg.admin.get_host(),
        pg.admin.get_port(),
        pg.admin.get_username(),
        dev_dir().join("secrets").display()
    );
    println!(
        "Tests against it: DATABASE_URL=postgres://{}@{}:{}/postgres cargo test --workspace",
        pg.admin.get_username(),
        pg.admin.get_host(),
        pg.admin.get_port()
    );
    println!("Press Ctrl-C to stop.");
    shutdown.wait().await;
    println!("\nstopping…");
    Ok(())
}

async fn run(root: &Path, pg: &Postgres, shutdown: &Shutdown) -> anyhow::Result<()> {
    let admin = migrate(pg, "beacon").await?;
    let certs = dev_dir().join("certs");
    if !certs.join("ca.crt").exists() {
        crate::certs::generate(&certs)?;
        println!(
            "· development certificates and token keys in {}",
            certs.display()
        );
    }
    println!("· building the services");
    // The packages that have images, from the access model (one list of services).
    let model = platform::access::AccessModel::load();
    let packages = crate::access::images::cargo_packages(&model);
    let mut args: Vec<&str> = packages.iter().map(String::as_str).collect();
    args.push("--bins");
    let bins = cargo_build(root, &args)?;
    let bin = |name: &str| {
        bins.get(name)
            .cloned()
            .with_context(|| format!("cargo build made no `{name}` executable"))
    };
    let host = pg.admin.get_host().to_owned();
    let port = pg.admin.get_port().to_string();
    let db_env = |role: &str| -> anyhow::Result<Vec<(&'static str, String)>> {
        Ok(vec![
            ("DATABASE_HOST", host.clone()),
            ("DATABASE_PORT", port.clone()),
            ("DATABASE_NAME", "beacon".into()),
            ("DATABASE_USER", role.into()),
            (
                "DATABASE_PASSWORD_FILE",
                secret_file(&format!("{role}.password"))?
                    .to_string_lossy()
                    .into_owned(),
            ),
        ])
    };
    let c = |f: &str| certs.join(f).to_string_lossy().into_owned();
    let jwt = ("BEACON_JWT_PUBLIC_KEY_FILE", c("jwt-public.pem"));
    let tls = |name: &str| {
        vec![
            ("BEACON_TLS_CERT_FILE", c(&format!("{name}.crt"))),
            ("BEACON_TLS_KEY_FILE", c(&format!("{name}.key"))),
            ("BEACON_TLS_CA_FILE", c("ca.crt")),
        ]
    };
    let mut services = Vec::new();
    let mut env = db_env("beacon_analytics")?;
    env.extend(tls("analytics"));
    env.push(("BEACON_LISTEN_ADDR", "127.0.0.1:50051".into()));
    services.push(spawn(&bin("analytics")?, &[], "analytics", &env, 9085)?);
    let mut env = db_env("beacon_api")?;
    env.extend(tls("api"));
    env.extend([
        jwt.clone(),
        ("BEACON_JWT_SIGNING_KEY_FILE", c("jwt-signing.key")),
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8081".into()),
        ("BEACON_ANALYTICS_ADDR", "127.0.0.1:50051".into()),
        ("BEACON_ANALYTICS_SERVER_NAME", "analytics".into()),
        (
            "BEACON_SUBJECT_HASH_KEY_FILE",
            secret_file(crate::secrets::SUBJECT_HASH_KEY)?
                .display()
                .to_string(),
        ),
    ]);
    services.push(spawn(&bin("api")?, &[], "api", &env, 9081)?);
    let mut env = db_env("beacon_loader")?;
    env.extend([jwt.clone(), ("BEACON_LISTEN_ADDR", "127.0.0.1:8083".into())]);
    services.push(spawn(&bin("pipeline")?, &["loader"], "loader", &env, 9083)?);
    let env = vec![
        jwt.clone(),
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8082".into()),
        ("BEACON_LOADER_URL", "http://127.0.0.1:8083".into()),
    ];
    services.push(spawn(&bin("pipeline")?, &["ingest"], "ingest", &env, 9082)?);
    let mut env = db_env("beacon_transform")?;
    env.push(("BEACON_TRANSFORM_INTERVAL_MS", "2000".into()));
    services.push(spawn(
        &bin("pipeline")?,
        &["transform"],
        "transform",
        &env,
        9084,
    )?);
    let env = vec![
        ("BEACON_LISTEN_ADDR", "127.0.0.1:8080".into()),
        ("BEACON_API_URL", "http://127.0.0.1:8081".into()),
        (
            "BEACON_SESSION_KEY_FILE",
            secret_file("dashboard-session.key")?.display().to_string(),
        ),
    ];
    services.push(spawn(&bin("dashboard")?, &[], "dashboard", &env, 9080)?);
    services.extend(spawn_planned(scaffolded(&model, &db_env, &tls)?, &bin)?);

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()?;
    let outcome = async {
        wait_ready(&client, &services).await?;
        println!("· all services ready; seeding demo tenants through ingest");
        let password = std::fs::read_to_string(secret_file("demo-user.password")?)?;
        let tenants = crate::seed::demo_tenants(password.trim());
        let mut owner = PgConnection::connect_with(
            &admin
                .connect_options()
                .as_ref()
                .clone()
                .username(db::MIGRATOR_ROLE),
        )
        .await?;
        for (i, t) in tenants.iter().enumerate() {
            crate::seed::ensure_tenant(&mut owner, t).await?;
            let key_file = dev_dir().join(format!("secrets/{}-ingest.key", t.slug));
            let key = crate::seed::demo_ingest_key(&mut owner, t, &key_file).await?;
            let token = crate::seed::ingest_token(&client, "http://127.0.0.1:8081", &key).await?;
            let events = crate::seed::generate_events(
                42 + i as u64,
                4_000,
                60,
                t.currency,
                time::OffsetDateTime::now_utc(),
            );
            let (accepted, duplicates) =
                crate::seed::push(&client, "http://127.0.0.1:8082", &token, &events, 500).await?;
            println!(
                "  {}: {accepted} events stored, {duplicates} already present",
                t.name
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!();
        println!("Beacon is running:");
        println!("  dashboard  http://127.0.0.1:8080");
        println!("  api        http://127.0.0.1:8081   (POST /v1/auth/token, GET /v1/overview)");
        println!("  ingest     http://127.0.0.1:8082   (POST /v1/events)");
        println!("  admin      http://127.0.0.1:90{{80..85}}/readyz, /metrics");
        println!("Demo logins (password: {}):", password.trim());
        for t in &tenants {
            println!(
                "  {:<14} admin {}   viewer {}",
                t.name, t.admin_email, t.viewer_email
            );
        }
        println!("Press Ctrl-C to stop.");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = &outcome {
        eprintln!("error: {e:#}");
    } else {
        tokio::select! {
            () = shutdown.wait() => {}
            (name, status) = first_exit(&mut services) => eprintln!("{name} exited ({status}); stopping"),
        }
    }
    println!("\nstopping…");
    for s in &services {
        if let Some(pid) = s.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
    for s in &mut services {
        let _ = tokio::time::timeout(Duration::from_secs(15), s.child.wait()).await;
    }
    outcome
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

fn spawn_planned(
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

async fn first_exit(services: &mut [Service]) -> (&'static str, String) {
    loop {
        for s in services.iter_mut() {
            if let Ok(Some(status)) = s.child.try_wait() {
                return (s.name, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_database_url_is_the_one_cargo_config_sets() {
        let config: toml::Table = toml::from_str(
            &std::fs::read_to_string(workspace_root().join(".cargo/config.toml")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            config["env"]["DATABASE_URL"]["value"].as_str(),
            Some(WORKSPACE_DATABASE_URL)
        );
    }

    #[test]
    fn the_highest_installed_version_is_chosen() {
        let root = std::env::temp_dir().join(format!("xtask-versions-{}", std::process::id()));
        for version in ["9.6", "10", "15", "17", "16.2", "notes"] {
            std::fs::create_dir_all(root.join(version).join("bin")).unwrap();
        }
        assert_eq!(highest_version_bin(&root), Some(root.join("17/bin")));
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(highest_version_bin(&root), None);
    }
}
