//! Runs one Beacon service exactly as its own binary does (`platform::service::main`
//! with the service's `run`), so tests in this crate can start real processes, kill
//! them, and collect their telemetry: `beacon-testsvc api|analytics|dashboard|ingest|loader|transform`.

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("api") => platform::service::main("api", api::run),
        Some("analytics") => platform::service::main("analytics", analytics::run),
        Some("dashboard") => platform::service::main("dashboard", dashboard::run),
        Some("ingest") => platform::service::main("pipeline-ingest", pipeline::run_ingest),
        Some("loader") => platform::service::main("pipeline-loader", pipeline::run_loader),
        Some("transform") => {
            platform::service::main("pipeline-transform", |s| pipeline::run_transform(s, false))
        }
        _ => {
            eprintln!("usage: beacon-testsvc api|analytics|dashboard|ingest|loader|transform");
            std::process::exit(2);
        }
    }
}
