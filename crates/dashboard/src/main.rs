use dashboard::{App, Config};
use platform::{Shutdown, config::exit_on_error, telemetry};

#[tokio::main]
async fn main() {
    let telemetry =
        exit_on_error(telemetry::TelemetryConfig::from_env("dashboard").map_err(Into::into));
    let _guard = exit_on_error(telemetry::init(&telemetry));
    let config = exit_on_error(Config::from_env().map_err(Into::into));
    let app = exit_on_error(App::build(config).await);
    exit_on_error(app.run_until_stopped(Shutdown::new().on_signals()).await);
}
