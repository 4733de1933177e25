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
    Up(xtask::up::Options),
    /// Create roles and passwords, and migrate the `beacon` database.
    Migrate(xtask::up::LocalPg),
    /// Generate the development CA, workload certificates and token keys (into .dev/certs).
    Certs,
    /// People's database logins: `analyst add|remove NAME` (local database; `--kube`:
    /// the Job that does it in the cluster).
    Analyst {
        #[command(subcommand)]
        action: xtask::analyst::Action,
    },
    /// After a restore to an earlier point: `erasure replay --ledger F --key-file K`.
    Erasure {
        #[command(subcommand)]
        action: xtask::erasure::Action,
    },
    /// Operator actions on a tenant: `tenant delete SLUG --yes` (offboarding).
    Tenant {
        #[command(subcommand)]
        action: xtask::tenant::Action,
    },
    /// The layers generated from security/access-model.toml (default: render).
    Access {
        #[command(subcommand)]
        action: Option<xtask::access::Action>,
    },
    /// Scaffold a new service (HTTP, gRPC or worker; optionally with its own database
    /// role and schema): crate, access-model entries, Kubernetes base, overlays, and the
    /// generated layers.
    NewService(xtask::new_service::Options),
    /// Rename the product (namespaces, trust domain, database and roles, images, cookies,
    /// token issuer and audience, docs) in this working tree.
    NewProduct(xtask::new_product::Options),
    /// Recompute the network-config-analyzer snapshots in k8s/nca/ (needs kubectl and nca).
    Nca {
        /// Fail when a snapshot differs instead of writing it.
        #[arg(long)]
        check: bool,
    },
    /// Fill the git-ignored k8s/overlays/dev/secrets/ (certificates, token keys, passwords)
    /// for the Kubernetes dev overlay. Existing files are kept.
    Secrets,
    /// Seed the demo tenants into a running Beacon (e.g. the kind cluster through Tilt's
    /// port-forwards): tenants and API keys as the migrator, events through ingest.
    Seed {
        #[arg(
            long,
            default_value = "postgres://beacon_migrator@127.0.0.1:15432/beacon"
        )]
        database_url: String,
        /// File holding the migrator's password (default: the dev overlay's).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        #[arg(long, default_value = "http://127.0.0.1:8081")]
        api: String,
        #[arg(long, default_value = "http://127.0.0.1:8082")]
        ingest: String,
    },
    /// Apply each mutation of security/mutations.toml to a scratch copy, run the test
    /// that must catch it, and report caught/missed as a Markdown table.
    Mutants(xtask::mutants::Options),
    /// Point the prod overlay's Beacon images at a release's pushed digests
    /// (`<image> sha256:<digest>` lines; run by .github/workflows/release.yml).
    ReleaseDigests(xtask::release::Options),
    /// Benchmarks (results go in docs/BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Analytics gRPC calls at 1M and 10M raw events, beside pgbench on the same SQL.
    Analytics {
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Raw-event volumes to compare (two).
        #[arg(long, num_args = 2, default_values_t = [1_000_000u64, 10_000_000])]
        volumes: Vec<u64>,
    },
    /// GET /v1/overview through the api (wrk) beside the same call straight to analytics (gRPC).
    Api(xtask::bench::api::BenchApi),
    /// HTTP ingest → loader vs `psql \copy`, transform throughput, peak RSS.
    Ingest(xtask::bench::ingest::Options),
    /// The abuse suite (tests/abuse) optimised: peak RSS, lag and lock-out figures beside their bounds.
    Abuse,
}

impl Bench {
    /// The external programs the benchmark runs.
    fn tools(&self) -> &'static [xtask::bench::Tool] {
        match self {
            Self::Analytics { .. } => xtask::bench::analytics::TOOLS,
            Self::Api(_) => xtask::bench::api::TOOLS,
            Self::Ingest(_) => xtask::bench::ingest::TOOLS,
            Self::Abuse => xtask::bench::abuse::TOOLS,
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse().command).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain only: a backtrace (RUST_BACKTRACE) is for panics.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Up(options) => xtask::up::up(options).await,
        Cmd::Migrate(local) => {
            let pg = xtask::up::Postgres::find_or_start_on(local).await?;
            let result = xtask::up::migrate(&pg, "beacon").await.map(|_| ());
            pg.stop();
            result
        }
        Cmd::Analyst { action } => xtask::analyst::run(action).await,
        Cmd::Tenant { action } => xtask::tenant::run(action).await,
        Cmd::Erasure { action } => xtask::erasure::run(action).await,
        Cmd::Certs => {
            let dir = xtask::up::dev_dir().join("certs");
            xtask::certs::generate(&dir)?;
            println!("wrote {}", dir.display());
            Ok(())
        }
        Cmd::Mutants(options) => xtask::mutants::run(options),
        Cmd::Bench { which } if cfg!(debug_assertions) => {
            // `cargo xtask bench` starts here. Before anything is built: the tools it runs.
            xtask::bench::require_tools(which.tools())?;
            // Numbers from a debug build mean nothing: re-run this command optimised.
            let status = std::process::Command::new(
                std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
            )
            .current_dir(xtask::up::workspace_root())
            .args(["run", "--quiet", "--release", "-p", "xtask", "--"])
            .args(std::env::args().skip(1))
            .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Cmd::Bench {
            which:
                Bench::Analytics {
                    concurrency,
                    seconds,
                    volumes,
                },
        } => {
            let options = xtask::bench::analytics::Options {
                volumes: [volumes[0], volumes[1]],
                concurrency,
                seconds,
            };
            println!("{}", xtask::bench::analytics::run(options).await?);
            Ok(())
        }
        Cmd::Bench {
            which: Bench::Api(args),
        } => xtask::bench::api::run(args).await,
        Cmd::Bench {
            which: Bench::Ingest(options),
        } => xtask::bench::ingest::run(options).await,
        Cmd::Bench {
            which: Bench::Abuse,
        } => xtask::bench::abuse::run(),
        Cmd::Secrets => {
            let dir = xtask::secrets::dev_overlay_dir();
            let wrote = xtask::secrets::generate(&dir)?;
            println!("{} {}", if wrote { "wrote" } else { "kept" }, dir.display());
            Ok(())
        }
        Cmd::Seed {
            database_url,
            password_file,
            api,
            ingest,
        } => {
            use sqlx::Connection as _;
            let dir = xtask::secrets::dev_overlay_dir();
            let password_file =
                password_file.unwrap_or_else(|| dir.join("beacon_migrator.password"));
            let password = std::fs::read_to_string(&password_file)?;
            let options: sqlx::postgres::PgConnectOptions = database_url.parse()?;
            let mut owner =
                sqlx::PgConnection::connect_with(&options.password(password.trim())).await?;
            let demo = std::fs::read_to_string(dir.join("demo-user.password"))?;
            println!("seeding demo tenants (password: {})", demo.trim());
            xtask::seed::seed_running(&mut owner, &api, &ingest, demo.trim()).await
        }
        Cmd::Access { action } => xtask::access::run(action.unwrap_or_default()),
        Cmd::ReleaseDigests(options) => xtask::release::run(&options),
        Cmd::Nca { check } => {
            let changed = xtask::nca::run(&xtask::up::workspace_root(), check)?;
            if changed.is_empty() {
                println!("k8s/nca: connectivity as reviewed");
            }
            for path in changed {
                println!("wrote {path} (review the diff)");
            }
            Ok(())
        }
        Cmd::NewProduct(options) => {
            let root = xtask::up::workspace_root();
            let report = xtask::new_product::rename(&root, &options)?;
            println!("{report}");
            Ok(())
        }
        Cmd::NewService(options) => {
            let root = xtask::up::workspace_root();
            for path in xtask::new_service::scaffold(&root, &options)? {
                println!(
                    "wrote {}",
                    path.strip_prefix(&root).unwrap_or(&path).display()
                );
            }
            println!(
                "next: cargo build (adds the crate to Cargo.lock), cargo xtask access diff HEAD, \
                 cargo xtask nca (review the connectivity snapshots' diff)"
            );
            Ok(())
        }
    }
}
