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
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        target: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// GET /v1/overview through the api (wrk) beside the same call straight to analytics (gRPC).
    Api(xtask::bench_api::BenchApi),
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
            target: Bench::Api(args),
        } => xtask::bench_api::run(args).await,
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
