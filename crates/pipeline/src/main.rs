use clap::{Parser, Subcommand};

/// Beacon's event pipeline. One binary, four roles: each runs as its own container
/// with its own identity and credentials.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Public event intake: verifies tokens, validates batches, forwards to the loader. Holds no database credential.
    Ingest,
    /// The sidecar: writes validated batches to raw storage. Listens on loopback only.
    Loader,
    /// Aggregates raw events into the output tables, incrementally.
    Transform {
        /// Process what is pending once and exit (for Jobs and tests).
        #[arg(long)]
        once: bool,
    },
    /// One retention pass: raw partitions created ahead, expired ones dropped, old aggregates deleted. Then exits.
    Retention,
}

fn main() {
    match Cli::parse().command {
        Command::Ingest => platform::service::main("pipeline-ingest", pipeline::run_ingest),
        Command::Loader => platform::service::main("pipeline-loader", pipeline::run_loader),
        Command::Transform { once } => platform::service::main("pipeline-transform", move |s| {
            pipeline::run_transform(s, once)
        }),
        Command::Retention => {
            platform::service::main("pipeline-retention", pipeline::run_retention)
        }
    }
}
