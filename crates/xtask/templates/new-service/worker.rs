//! __name__: what it does, in one sentence (scaffolded by `cargo xtask new-service --kind worker`).
//!
//! A worker: it listens on nothing but its admin port (health, readiness, metrics) and
//! does its work every `BEACON_TICK_MS`. What it may reach is in
//! security/access-model.toml.

use std::{net::SocketAddr, time::Duration};

use platform::{
    Shutdown,
    admin::{AdminServer, Check},
    config,
    db::DbConfig, // @db
};

#[derive(Debug, Clone)]
pub struct Config {
    pub admin: SocketAddr,
    /// Time between two rounds of work.
    pub tick: Duration,
    /// Its own database role, `__role__` (password from `DATABASE_PASSWORD_FILE`). // @db
    pub db: DbConfig, // @db
}

impl Config {
    pub fn from_env() -> config::Result<Self> {
        Ok(Self {
            admin: config::addr("BEACON_ADMIN_ADDR", "0.0.0.0:__admin__")?,
            tick: config::millis("BEACON_TICK_MS", 10_000)?,
            db: DbConfig::from_env("__role__", "__name__")?, // @db
        })
    }
}

/// The bound worker.
#[derive(Debug)]
pub struct App {
    admin: AdminServer,
    tick: Duration,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let checks: Vec<Check> = vec![]; // @nodb
        let checks = vec![Check::postgres(config.db.pool())]; // @db
        let admin = AdminServer::bind(config.admin, checks).await?;
        tracing::info!(admin = %admin.local_addr(), "__name__ started");
        Ok(Self {
            admin,
            tick: config.tick,
        })
    }

    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().port()
    }

    /// Works every tick until `shutdown`; a round in progress is finished first.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let admin = tokio::spawn(self.admin.run(shutdown.clone()));
        let mut ticks = tokio::time::interval(self.tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = shutdown.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => break,
                _ = ticks.tick() => work(),
            }
        }
        admin.await??;
        tracing::info!("__name__ stopped");
        Ok(())
    }
}

/// One round of work (the example counts its rounds).
fn work() {
    metrics::counter!("__snake___rounds_total").increment(1);
}

/// Reads the configuration from the environment, builds and works until `shutdown`.
pub async fn run(shutdown: Shutdown) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    App::build(config).await?.run_until_stopped(shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn works_and_reports_on_the_admin_port_until_stopped() {
        let app = App::build(Config {
            admin: "127.0.0.1:0".parse().unwrap(),
            tick: Duration::from_millis(10),
            db: unreachable_database(), // @db
        })
        .await
        .unwrap();
        let admin = app.admin_port();
        let shutdown = Shutdown::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ready = "200"; // @nodb
        let ready = "503"; // @db
        assert_admin_port(admin, ready).await;
        let metrics = get(admin, "/metrics").await;
        assert!(metrics.contains("__snake___rounds_total"), "{metrics}");
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap().unwrap();
    }

    // __test_helpers__
}
