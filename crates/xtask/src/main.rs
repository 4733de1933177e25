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
    /// Benchmarks against real release processes (results go to docs/BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// HTTP ingest → loader vs `psql \copy`, transform throughput, peak RSS.
    Ingest(xtask::bench::ingest::Options),
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
        Cmd::Bench {
            bench: Bench::Ingest(options),
        } => xtask::bench::ingest::run(options).await,
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
