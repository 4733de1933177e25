//! The one `main` every service binary runs: telemetry first, then the service's own
//! `run` (config from the environment → build → serve), then a flush of telemetry.
//! A configuration or start-up error exits with status 2 and a message naming the
//! variable; SIGTERM/SIGINT start a bounded drain.

use std::future::Future;

use crate::{Shutdown, telemetry};

/// Runs a service to completion and exits the process.
pub fn main<F, Fut>(service: &'static str, run: F) -> !
where
    F: FnOnce(Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = runtime.block_on(async move {
        let config = match telemetry::TelemetryConfig::from_env(service) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        };
        // Before anything records: every series carries `service`.
        crate::metrics::install(service);
        let guard = match telemetry::init(&config) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: cannot initialise telemetry: {e:#}");
                return 2;
            }
        };
        let result = run(Shutdown::new().on_signals()).await;
        let code = match &result {
            Ok(()) => 0,
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "fatal");
                eprintln!("error: {e:#}");
                2
            }
        };
        // Flushing waits on the exporter, which needs the runtime: do it off the workers.
        let _ = tokio::task::spawn_blocking(move || drop(guard)).await;
        code
    });
    drop(runtime);
    std::process::exit(code);
}
