//! `cargo xtask up` on a machine where PostgreSQL is installed but nothing answers on
//! the port it looks at: it creates a throwaway cluster, migrates it, stops it again on
//! Ctrl-C, and reuses it on the next run.
//!
//! Drives the real binary as `cargo xtask` runs it (with the workspace DATABASE_URL that
//! `.cargo/config.toml` sets), `--database-only` so no service is built or started, on a
//! free port and in its own BEACON_DEV_DIR: the system PostgreSQL and the developer's
//! `.dev/` are untouched. Run as root (as CI runs), the cluster belongs to the `postgres`
//! OS user; run as anyone else, to them.

use std::{
    io::{BufRead as _, BufReader, Read},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use sqlx::{Connection as _, PgConnection, postgres::PgConnectOptions};

/// Generous: initdb and the migrations on a busy two-core machine.
const READY_WITHIN: Duration = Duration::from_secs(180);
const STOPPED_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn up_creates_migrates_stops_on_ctrl_c_and_reuses_a_throwaway_cluster() {
    let port = xtask::up::free_port().unwrap();
    let dev = Dev::new(port);
    let server = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres");
    assert!(
        PgConnection::connect_with(&server).await.is_err(),
        "something answers on 127.0.0.1:{port} before the test"
    );

    let mut first = Up::start(&dev.0, port);
    let output = first.wait_until_ready();
    assert_printed(&output, "creating a throwaway cluster");
    assert!(dev.data().join("PG_VERSION").is_file());
    let cluster = migrated_cluster(&server).await;
    let output = first.interrupt();
    assert_printed(&output, "stopping");
    assert_stopped(&dev, &server).await;

    let mut second = Up::start(&dev.0, port);
    let output = second.wait_until_ready();
    assert_printed(&output, "starting the throwaway cluster");
    assert!(
        !output.iter().any(|l| l.contains("creating")),
        "the second run created a cluster again:\n{}",
        output.join("\n")
    );
    assert_eq!(
        migrated_cluster(&server).await,
        cluster,
        "the second run did not reuse the first run's cluster"
    );
    second.interrupt();
    assert_stopped(&dev, &server).await;
}

/// The cluster's system identifier, after checking every migration was applied to
/// `beacon`.
async fn migrated_cluster(server: &PgConnectOptions) -> i64 {
    let mut conn = PgConnection::connect_with(&server.clone().database("beacon"))
        .await
        .expect("the throwaway cluster answers");
    let applied: i64 =
        sqlx::query_scalar("SELECT count(*) FROM migrations._sqlx_migrations WHERE success")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(applied, db::MIGRATOR.iter().count() as i64);
    let id: i64 = sqlx::query_scalar("SELECT system_identifier FROM pg_control_system()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    id
}

async fn assert_stopped(dev: &Dev, server: &PgConnectOptions) {
    assert!(
        PgConnection::connect_with(server).await.is_err(),
        "the throwaway cluster still answers after Ctrl-C"
    );
    assert!(
        !dev.data().join("postmaster.pid").exists(),
        "the throwaway cluster's postmaster.pid is still there after Ctrl-C"
    );
}

fn assert_printed(output: &[String], text: &str) {
    assert!(
        output.iter().any(|l| l.contains(text)),
        "`{text}` not printed:\n{}",
        output.join("\n")
    );
}

/// A fresh BEACON_DEV_DIR; on drop, stops a server left running there and removes it.
struct Dev(PathBuf);

impl Dev {
    fn new(port: u16) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-up-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn data(&self) -> PathBuf {
        self.0.join("postgres/data")
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let pid_file = self.data().join("postmaster.pid");
        if let Some(pid) = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|f| f.lines().next().map(str::to_owned))
        {
            // A failed assertion left it running: fast shutdown.
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            let deadline = Instant::now() + STOPPED_WITHIN;
            while pid_file.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `xtask up --database-only`, in its own process group as a terminal's
/// foreground job is, with its stdout and stderr lines.
struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Up {
    fn start(dev: &Path, port: u16) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["up", "--database-only", "--pg-port", &port.to_string()])
            .env("DATABASE_URL", xtask::up::WORKSPACE_DATABASE_URL)
            .env("BEACON_DEV_DIR", dev)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("starting xtask");
        let (send, lines) = mpsc::channel();
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        for stream in [stdout, stderr] {
            let send = send.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Everything printed until xtask says it is ready; panics if it exits or hangs.
    fn wait_until_ready(&mut self) -> Vec<String> {
        let deadline = Instant::now() + READY_WITHIN;
        while !self.seen.iter().any(|l| l == "Press Ctrl-C to stop.") {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => self.seen.push(line),
                Err(_) => {
                    let exited = self.child.try_wait().unwrap();
                    assert!(
                        exited.is_none() && Instant::now() < deadline,
                        "xtask up is not ready ({}):\n{}",
                        exited.map_or("still running".into(), |s| s.to_string()),
                        self.seen.join("\n")
                    );
                }
            }
        }
        self.seen.clone()
    }

    /// Ctrl-C, as a terminal sends it (SIGINT to the whole group); everything printed
    /// once xtask has exited successfully.
    fn interrupt(mut self) -> Vec<String> {
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + STOPPED_WITHIN;
        let exit = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "xtask up ignored Ctrl-C");
            std::thread::sleep(Duration::from_millis(100));
        };
        // The reader threads end with the pipes.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        assert!(exit.success(), "xtask up: {exit}\n{}", self.seen.join("\n"));
        std::mem::take(&mut self.seen)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().is_ok_and(|s| s.is_none()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
