use clap::{Parser, Subcommand};
use platform::{Shutdown, config::exit_on_error, telemetry};

/// Beacon's event pipeline. One binary, three roles: each runs as its own container
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
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Ingest => "pipeline-ingest",
        Command::Loader => "pipeline-loader",
        Command::Transform { .. } => "pipeline-transform",
    };
    let telemetry = exit_on_error(telemetry::TelemetryConfig::from_env(name).map_err(Into::into));
    let _guard = exit_on_error(telemetry::init(&telemetry));
    let shutdown = Shutdown::new().on_signals();
    let result = match cli.command {
        Command::Ingest => match pipeline::ingest::Config::from_env() {
            Ok(config) => match pipeline::ingest::App::build(config).await {
                Ok(app) => app.run_until_stopped(shutdown).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        },
        Command::Loader => match pipeline::loader::Config::from_env() {
            Ok(config) => match pipeline::loader::App::build(config).await {
                Ok(app) => app.run_until_stopped(shutdown).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e.into()),
        },
        Command::Transform { once } => match pipeline::transform::Config::from_env() {
            Ok(config) if once => {
                pipeline::transform::run_once_with(&config.db.pool(), &config.settings)
                    .await
                    .map(|_| ())
            }
            Ok(config) => pipeline::transform::run(config, shutdown).await,
            Err(e) => Err(e.into()),
        },
    };
    exit_on_error(result);
}
