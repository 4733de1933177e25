//! `cargo xtask <command>`.
#![allow(
    clippy::print_stdout,
    reason = "a command-line tool talks to its user on stdout"
)]

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Beacon developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole product locally: PostgreSQL, migrations, certificates, services, demo data.
    Up,
    /// Create roles and passwords, and migrate the `beacon` database.
    Migrate,
    /// Generate the development CA, workload certificates and token keys (into .dev/certs).
    Certs,
    /// Regenerate docs/ACCESS.md from security/access-model.toml.
    Access,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Up => xtask::up::up().await,
        Cmd::Migrate => {
            let pg = xtask::up::Postgres::find_or_start().await?;
            let result = xtask::up::migrate(&pg, "beacon").await.map(|_| ());
            pg.stop();
            result
        }
        Cmd::Certs => {
            let dir = xtask::up::dev_dir().join("certs");
            xtask::certs::generate(&dir)?;
            println!("wrote {}", dir.display());
            Ok(())
        }
        Cmd::Access => {
            let path = xtask::up::workspace_root().join("docs/ACCESS.md");
            std::fs::write(
                &path,
                xtask::access::render(&platform::access::AccessModel::load()),
            )?;
            println!("wrote {}", path.display());
            Ok(())
        }
    }
}
