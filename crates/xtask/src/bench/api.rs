//! `cargo xtask bench api`: throughput and p99 latency of `GET /v1/overview` through
//! the api (with `wrk`), beside the same call made straight to analytics over mTLS
//! gRPC (a small load generator here), in the same run against the same stack and
//! data. Target: the api reaches at least 0.7× the direct gRPC throughput.
//!
//! The stack is the test-only `api-stack` binary (every service in one process, a
//! fresh database on the PostgreSQL at DATABASE_URL, two seeded tenants). Both the
//! stack and this generator run as release builds: when invoked from a debug build,
//! this command re-runs itself with `cargo run --release`.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use platform::tls::{self, TlsFiles};
use proto::analytics::v1::{DateRange, RequestScope, analytics_client::AnalyticsClient};

/// Runs `wrk`.
pub const TOOLS: &[super::Tool] = &[("wrk", "wrk")];

/// Options of `cargo xtask bench api`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchApi {
    /// Concurrent connections (wrk) and concurrent in-flight calls (gRPC). Default: the
    /// most one tenant may have in flight to analytics through the api
    /// (`api::Protection::analytics_in_flight_per_tenant`); more are answered 503 at once.
    #[arg(long, default_value_t = default_connections())]
    pub connections: u32,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Allow a debug build (numbers are then not comparable to anything).
    #[arg(long)]
    pub debug: bool,
}

fn default_connections() -> u32 {
    u32::try_from(api::Protection::default().analytics_in_flight_per_tenant).unwrap_or(16)
}

#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Failed calls (non-2xx, socket errors or timeouts), not counted in `requests/s`.
    pub errors: u64,
}

pub async fn run(args: BenchApi) -> anyhow::Result<()> {
    let root = crate::up::workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if cfg!(debug_assertions) && !args.debug {
        println!("· re-running as a release build");
        let status = Command::new(&cargo)
            .current_dir(&root)
            .args([
                "run",
                "--release",
                "--quiet",
                "-p",
                "xtask",
                "--",
                "bench",
                "api",
            ])
            .args(["--connections", &args.connections.to_string()])
            .args(["--duration", &args.duration.to_string()])
            .status()?;
        anyhow::ensure!(status.success(), "release benchmark failed");
        return Ok(());
    }
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    println!("· building api-stack ({profile})");
    let mut build = vec!["-p", "beacon-e2e", "--bin", "api-stack"];
    if profile == "release" {
        build.push("--release");
    }
    let api_stack = crate::up::cargo_build(&root, &build)?
        .remove("api-stack")
        .context("the build made no api-stack executable")?;

    println!("· starting the stack and seeding (fresh database)");
    let mut stack = Command::new(api_stack)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting api-stack")?;
    let mut line = String::new();
    BufReader::new(stack.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let info: serde_json::Value =
        serde_json::from_str(&line).context("api-stack did not print its address")?;
    let result = measure(&args, &info).await;
    drop(stack.stdin.take()); // closing stdin stops the stack, which drops its database
    let _ = stack.wait();
    let (grpc, http) = result?;
    let ratio = http.requests_per_sec / grpc.requests_per_sec;
    println!();
    println!(
        "| path | connections | requests/s | p50 ms | p99 ms | requests | errors |\n| --- | --- | --- | --- | --- | --- | --- |"
    );
    for (name, m) in [
        ("analytics gRPC, direct (mTLS)", grpc),
        ("api GET /v1/overview (wrk)", http),
    ] {
        println!(
            "| {name} | {} | {:.0} | {:.2} | {:.2} | {} | {} |",
            args.connections, m.requests_per_sec, m.p50_ms, m.p99_ms, m.requests, m.errors
        );
        anyhow::ensure!(
            m.errors * 1000 <= m.requests,
            "{name}: more than 0.1% of the calls failed"
        );
    }
    println!(
        "\napi / gRPC throughput: {ratio:.2} (target ≥ 0.70): {}",
        if ratio >= 0.7 { "met" } else { "NOT met" }
    );
    Ok(())
}

async fn measure(
    args: &BenchApi,
    info: &serde_json::Value,
) -> anyhow::Result<(Measurement, Measurement)> {
    let field = |k: &str| {
        info[k]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("api-stack output lacks {k}"))
    };
    let certs = PathBuf::from(field("cert_dir")?);
    let client_tls = tls::Reloading::new(
        TlsFiles {
            cert: certs.join("api.crt"),
            key: certs.join("api.key"),
            ca: certs.join("ca.crt"),
        },
        tls::client_config,
    )?;
    let channel = tls::grpc_channel(
        &field("analytics_addr")?,
        "analytics",
        client_tls,
        Duration::from_secs(10),
    )?;
    let today = time::OffsetDateTime::now_utc().date();
    let iso = domain::format_date;
    // The same request the api makes for GET /v1/overview without parameters.
    let request = RequestScope {
        tenant_id: field("tenant_id")?,
        range: Some(DateRange {
            from: iso(today - time::Duration::days(29)),
            to: iso(today),
        }),
        currency: field("currency")?,
    };
    let client = AnalyticsClient::new(channel);
    let url = format!("{}/v1/overview", field("api_url")?);
    let token = field("viewer_token")?;

    println!("· warming up");
    grpc_load(&client, &request, args.connections, Duration::from_secs(3)).await?;
    wrk(&url, &token, args.connections, 3)?;
    println!(
        "· gRPC straight to analytics: {} in flight, {} s",
        args.connections, args.duration
    );
    let grpc = grpc_load(
        &client,
        &request,
        args.connections,
        Duration::from_secs(args.duration),
    )
    .await?;
    println!(
        "· wrk against the api: {} connections, {} s",
        args.connections, args.duration
    );
    let http = wrk(&url, &token, args.connections, args.duration)?;
    Ok((grpc, http))
}

type Client = AnalyticsClient<tonic::transport::Channel>;

/// `connections` tasks calling GetOverview back to back over one channel (as the api
/// does: one HTTP/2 connection, multiplexed).
async fn grpc_load(
    client: &Client,
    request: &RequestScope,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<Measurement> {
    let deadline = Instant::now() + duration;
    let request = Arc::new(request.clone());
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (mut client, request) = (client.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let started = Instant::now();
                match client.get_overview((*request).clone()).await {
                    Ok(_) => latencies.push(started.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (latencies, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (latencies, e) = t.await?;
        all.extend(latencies);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Measurement {
        requests_per_sec: all.len() as f64 / duration.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        requests: all.len() as u64,
        errors,
    })
}

fn wrk(url: &str, token: &str, connections: u32, seconds: u64) -> anyhow::Result<Measurement> {
    let out = Command::new("wrk")
        .args(["-t2", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args([
            "--latency",
            "-H",
            &format!("Authorization: Bearer {token}"),
            url,
        ])
        .output()
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success(), "wrk failed: {text}");
    parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Parses wrk's `Requests/sec:`, the 50% and 99% latency lines, the request count and
/// the errors (non-2xx answers and socket errors). Requests/s is wrk's, which counts
/// every answer; errors are reported beside it.
pub fn parse_wrk(text: &str) -> Option<Measurement> {
    let ms = |v: &str| -> Option<f64> {
        let (num, factor) = if let Some(n) = v.strip_suffix("us") {
            (n, 0.001)
        } else if let Some(n) = v.strip_suffix("ms") {
            (n, 1.0)
        } else if let Some(n) = v.strip_suffix('s') {
            (n, 1000.0)
        } else {
            return None;
        };
        num.parse::<f64>().ok().map(|n| n * factor)
    };
    let word = |prefix: &str, index: usize| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(index).map(str::to_owned))
    };
    Some(Measurement {
        requests_per_sec: word("Requests/sec:", 1)?.parse().ok()?,
        p50_ms: ms(&word("50%", 1)?)?,
        p99_ms: ms(&word("99%", 1)?)?,
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())?,
        errors: {
            let after = |prefix: &str| -> u64 {
                text.lines()
                    .map(str::trim)
                    .find_map(|l| l.strip_prefix(prefix))
                    .map_or(0, |rest| {
                        rest.split(|c: char| !c.is_ascii_digit())
                            .filter_map(|n| n.parse::<u64>().ok())
                            .sum()
                    })
            };
            after("Non-2xx or 3xx responses:") + after("Socket errors:")
        },
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn wrk_output_is_parsed() {
        let text = "Running 10s test @ http://127.0.0.1:1/v1/overview
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    12.10ms    3.20ms  60.01ms   80.00%
  Latency Distribution
     50%   11.50ms
     75%   13.00ms
     90%   16.00ms
     99%    1.02s
  26000 requests in 10.00s, 20.00MB read
  Socket errors: connect 0, read 0, write 0, timeout 2
  Non-2xx or 3xx responses: 1
Requests/sec:   2600.12
Transfer/sec:      2.00MB
";
        let m = super::parse_wrk(text).unwrap();
        assert_eq!(m.requests, 26_000);
        assert!((m.requests_per_sec - 2600.12).abs() < 1e-6);
        assert!((m.p50_ms - 11.5).abs() < 1e-9);
        assert!((m.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!(m.errors, 3);
    }
}
