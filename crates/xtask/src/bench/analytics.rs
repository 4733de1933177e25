//! `cargo xtask bench analytics`: latency and throughput of the analytics gRPC calls
//! at 1M and 10M raw events (after transform), beside the same SQL run by `pgbench`
//! against the same database in the same run.
//!
//! Method: for each volume, a fresh database gets N raw events for one tenant
//! (20 campaigns × 5 channels × 90 days, generated in SQL), transform aggregates them,
//! then C concurrent gRPC clients (mutual TLS, the api's certificate) call GetOverview
//! and ListCampaigns for D seconds each, recording every latency. `pgbench` runs the
//! identical transaction (BEGIN READ ONLY, set the tenant with set_config(…, true),
//! the same SELECT, COMMIT) as beacon_analytics with the same concurrency.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use proto::analytics::v1::{
    DateRange, Kpi, ListCampaignsRequest, RequestScope, analytics_client::AnalyticsClient,
};
use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use uuid::Uuid;

use crate::up::Postgres;

/// Runs `pgbench` (Debian/Ubuntu: in the server package).
pub const TOOLS: &[super::Tool] = &[("pgbench", "postgresql")];

#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub volumes: [u64; 2],
    pub concurrency: usize,
    pub seconds: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            volumes: [1_000_000, 10_000_000],
            concurrency: 8,
            seconds: 10,
        }
    }
}

#[derive(Debug, Clone)]
struct Measure {
    calls: usize,
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn measure(mut latencies: Vec<Duration>, elapsed: Duration) -> Measure {
    latencies.sort();
    let pct = |p: f64| {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    Measure {
        calls: latencies.len(),
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

async fn load<F, Fut>(concurrency: usize, seconds: u64, call: F) -> anyhow::Result<Measure>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                call().await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(measure(all, start.elapsed()))
}

/// Substitutes `$n` parameters with SQL literals (pgbench scripts take no binds).
fn inline(sql: &str, params: &[String]) -> String {
    let mut out = sql.to_owned();
    for (i, p) in params.iter().enumerate().rev() {
        out = out.replace(&format!("${}", i + 1), p);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// CPU seconds per call of one side of a measurement: its client, the analytics server
/// (gRPC only) and the PostgreSQL backends.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    client: f64,
    server: f64,
    postgres: f64,
}

impl Cpu {
    fn per_call(self, calls: usize) -> Self {
        let n = calls.max(1) as f64;
        Self {
            client: self.client / n,
            server: self.server / n,
            postgres: self.postgres / n,
        }
    }

    fn total(self) -> f64 {
        self.client + self.server + self.postgres
    }
}

/// Names the threads of the analytics server's runtime, so its CPU is told from the
/// load generator's (`/proc/self/task/*/stat`).
const SERVER_THREADS: &str = "analytics-srv";

/// The analytics server's runtime, shut down without waiting however the measurement
/// ends (a runtime dropped inside another one panics, hiding the error).
struct ServerRuntime(Option<tokio::runtime::Runtime>);

impl ServerRuntime {
    fn handle(&self) -> tokio::runtime::Handle {
        self.0
            .as_ref()
            .map(|r| r.handle().clone())
            .expect("the runtime lives until dropped")
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

struct Pgbench<'a> {
    options: &'a PgConnectOptions,
    database: &'a str,
    concurrency: usize,
    seconds: u64,
}

impl Pgbench<'_> {
    /// Runs `script`; the CPU of the pgbench process and of its backends is sampled
    /// every 100 ms while it runs (the last ≤ 100 ms before they exit are not counted).
    async fn run(
        &self,
        admin: &mut PgConnection,
        script: &Path,
        logs: &Path,
    ) -> anyhow::Result<(Measure, Cpu)> {
        let _ = std::fs::remove_dir_all(logs);
        std::fs::create_dir_all(logs)?;
        let mut child = std::process::Command::new("pgbench")
            .current_dir(logs)
            .args(["-n", "-M", "prepared", "-l", "--log-prefix", "tx"])
            .args([
                "-c",
                &self.concurrency.to_string(),
                "-j",
                "2",
                "-T",
                &self.seconds.to_string(),
            ])
            .args([
                "-h",
                self.options.get_host(),
                "-p",
                &self.options.get_port().to_string(),
                "-U",
                "beacon_analytics",
            ])
            .arg("-f")
            .arg(script)
            .arg(self.database)
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("pgbench not found: install the PostgreSQL client tools")?;
        let (mut backends, mut client) = (super::cpu::Backends::default(), 0.0);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            client = super::cpu::process(child.id()).unwrap_or(client);
            backends.sample(admin, self.database, "pgbench").await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        anyhow::ensure!(status.success(), "pgbench failed");
        let mut latencies = Vec::new();
        for entry in std::fs::read_dir(logs)? {
            for line in std::fs::read_to_string(entry?.path())?.lines() {
                // client_id transaction_no time_us script_no time_epoch time_us
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    latencies.push(Duration::from_micros(us));
                }
            }
        }
        let measure = measure(latencies, Duration::from_secs(self.seconds));
        let cpu = Cpu {
            client,
            server: 0.0,
            postgres: backends.since(&Default::default()),
        };
        Ok((measure.clone(), cpu.per_call(measure.calls)))
    }
}

/// Runs `load` once briefly (connections, TLS sessions, prepared statements), then
/// measured, with the CPU of the load generator's threads, the server's threads and
/// the pool's backends over the measured part.
async fn measured<F, Fut>(
    options: &Options,
    admin: &mut PgConnection,
    database: &str,
    label: &str,
    call: F,
) -> anyhow::Result<(Measure, Cpu)>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    load(options.concurrency, 1, call.clone()).await?;
    let mut before = super::cpu::Backends::default();
    before.sample(admin, database, "beacon_analytics").await?;
    super::cpu::callgrind(None);
    let threads = super::cpu::own_threads(SERVER_THREADS);
    let measure = load(options.concurrency, options.seconds, call).await?;
    let after_threads = super::cpu::own_threads(SERVER_THREADS);
    super::cpu::callgrind(Some(label));
    let mut after = before.clone();
    after.sample(admin, database, "beacon_analytics").await?;
    let cpu = Cpu {
        client: after_threads.1 - threads.1,
        server: after_threads.0 - threads.0,
        postgres: after.since(&before),
    };
    Ok((measure.clone(), cpu.per_call(measure.calls)))
}

pub async fn run(options: Options) -> anyhow::Result<String> {
    let pg = Postgres::find_or_start().await?;
    let result = run_on(&pg, options).await;
    pg.stop();
    result
}

async fn run_on(pg: &Postgres, options: Options) -> anyhow::Result<String> {
    let work = crate::up::target_dir(&crate::up::workspace_root())?.join("bench/analytics");
    std::fs::create_dir_all(&work)?;
    let certs = work.join("certs");
    crate::certs::generate(&certs)?;
    let tenant = Uuid::new_v4();
    let mut report = String::new();
    writeln!(
        report,
        "| raw events | call | gRPC calls/s | gRPC p50 ms | gRPC p99 ms | pgbench tx/s | pgbench p50 ms | pgbench p99 ms | gRPC / pgbench |"
    )?;
    writeln!(
        report,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    )?;
    let mut cpu_report = String::from(
        "CPU per call, µs (user + system, from /proc; gRPC: load generator, analytics \
         server, its PostgreSQL backends; pgbench: the pgbench process, its backends):\n\n\
         | raw events | call | gRPC client | gRPC server | gRPC PostgreSQL | gRPC total \
         | pgbench client | pgbench PostgreSQL | pgbench total |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let mut p50 = Vec::new();
    for volume in options.volumes {
        let database = format!("beacon_bench_analytics_{volume}");
        let mut admin = PgConnection::connect_with(&pg.admin).await?;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
        sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await?;
        let admin_pool = sqlx::PgPool::connect_with(pg.admin.clone().database(&database)).await?;
        db::setup(&admin_pool).await?;
        let migrator = pg
            .admin
            .clone()
            .database(&database)
            .username(db::MIGRATOR_ROLE);
        let mut owner = PgConnection::connect_with(&migrator).await?;
        println!("· {volume} raw events: generating");
        sqlx::query(
            "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, user_key, cost_micros, revenue_micros, currency)
             SELECT $1, 'e' || g,
                    (ARRAY['impression','impression','impression','impression','impression','impression','impression','impression','click','conversion'])[1 + g % 10],
                    date_trunc('day', now()) - ((g % 90) || ' days')::interval + ((g % 86400) || ' seconds')::interval,
                    'Campaign ' || (g % 20), (ARRAY['search','social','display','email','video'])[1 + g % 5],
                    'u' || (g % 50000), 1000 + g % 5000, CASE WHEN g % 10 = 9 THEN 20000000 ELSE 0 END, 'EUR'
             FROM generate_series(1, $2) g",
        )
        .bind(tenant)
        .bind(volume as i64)
        .execute(&mut owner)
        .await?;
        sqlx::raw_sql("ANALYZE raw.events")
            .execute(&mut owner)
            .await?;
        // One run takes every committed batch; loop in case a day was set aside.
        let t = Instant::now();
        let mut transform = platform::db::DbConfig::for_role(&migrator, "beacon_transform");
        transform.statement_timeout = Duration::from_secs(1800);
        let transform = transform.pool();
        let mut processed = 0;
        while processed < volume as i64 {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(1800),
                "transform did not catch up"
            );
            let settings = pipeline::transform::Settings {
                day_budget: Duration::from_secs(1800),
                ..Default::default()
            };
            let stats = pipeline::transform::run_once_with(&transform, &settings).await?;
            if stats.events == 0 {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            processed += stats.events;
        }
        println!(
            "  transform: {processed} events in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        // The bulk load leaves autovacuum work on `raw` behind (10M rows: a minute of one
        // core) that would otherwise run during, and slow, the measurements: do it now.
        // (One statement per query: VACUUM refuses to run in a multi-statement one.)
        for table in ["raw.events", "output.daily_campaign_facts"] {
            sqlx::raw_sql(&format!("VACUUM (ANALYZE) {table}"))
                .execute(&mut owner)
                .await?;
        }

        let mut db = platform::db::DbConfig::for_role(&migrator, "beacon_analytics");
        db.max_connections = options.concurrency as u32;
        let files = |name: &str| platform::tls::TlsFiles {
            cert: certs.join(format!("{name}.crt")),
            key: certs.join(format!("{name}.key")),
            ca: certs.join("ca.crt"),
        };
        // The server on its own runtime (as in its own process), with named threads so
        // its CPU is told from the load generator's.
        let runtime = ServerRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(SERVER_THREADS)
                .enable_all()
                .build()?,
        ));
        let server_runtime = runtime.handle();
        let app = server_runtime
            .spawn(analytics::App::build(analytics::Config {
                listen: "127.0.0.1:0".parse()?,
                admin: "127.0.0.1:0".parse()?,
                db,
                tls: files("analytics"),
                request_timeout: Duration::from_secs(10),
                bounds: analytics::Bounds::default(),
                reflection: false,
            }))
            .await??;
        let addr = format!("127.0.0.1:{}", app.port());
        let shutdown = platform::Shutdown::new();
        let server = server_runtime.spawn(app.run_until_stopped(shutdown.clone()));
        let tls = platform::tls::Reloading::new(files("api"), platform::tls::client_config)?;
        let channel =
            platform::tls::grpc_channel(&addr, "analytics", tls, Duration::from_secs(10))?;

        let today = time::OffsetDateTime::now_utc().date();
        let fmt = domain::format_date;
        let (from, to, prev) = (
            today - time::Duration::days(29),
            today,
            today - time::Duration::days(59),
        );
        let range = Some(DateRange {
            from: fmt(from),
            to: fmt(to),
        });
        let lit = |s: String| format!("'{s}'");
        let tx = |sql: String| {
            format!(
                "BEGIN READ ONLY;\nSELECT set_config('beacon.tenant_id', '{tenant}', true);\n{sql};\nCOMMIT;\n"
            )
        };
        let calls: [(&str, String); 2] = [
            (
                "GetOverview",
                tx(inline(
                    &analytics::queries::overview_sql(),
                    &[
                        lit(tenant.to_string()),
                        lit(fmt(from)),
                        lit(fmt(prev)),
                        lit(fmt(to)),
                        lit("EUR".into()),
                    ],
                )),
            ),
            (
                "ListCampaigns",
                tx(inline(
                    &analytics::queries::campaigns_sql(Kpi::Spend, false),
                    &[
                        lit(tenant.to_string()),
                        lit(fmt(from)),
                        lit(fmt(to)),
                        lit("EUR".into()),
                        "25".into(),
                        "0".into(),
                    ],
                )),
            ),
        ];
        for (name, script) in calls {
            let client = AnalyticsClient::new(channel.clone());
            let range = range.clone();
            let tenant_id = tenant.to_string();
            let (grpc, grpc_cpu) = if name == "GetOverview" {
                measured(&options, &mut admin, &database, name, move || {
                    let (mut client, range, tenant_id) =
                        (client.clone(), range.clone(), tenant_id.clone());
                    async move {
                        client
                            .get_overview(RequestScope {
                                tenant_id,
                                range,
                                currency: "EUR".into(),
                            })
                            .await?;
                        Ok(())
                    }
                })
                .await?
            } else {
                measured(&options, &mut admin, &database, name, move || {
                    let (mut client, range, tenant_id) =
                        (client.clone(), range.clone(), tenant_id.clone());
                    async move {
                        client
                            .list_campaigns(ListCampaignsRequest {
                                scope: Some(RequestScope {
                                    tenant_id,
                                    range,
                                    currency: "EUR".into(),
                                }),
                                sort_by: Kpi::Spend as i32,
                                page_size: 25,
                                ..Default::default()
                            })
                            .await?;
                        Ok(())
                    }
                })
                .await?
            };
            let script_path = work.join(format!("{name}.sql"));
            std::fs::write(&script_path, script)?;
            let (sql, sql_cpu) = Pgbench {
                options: &pg.admin,
                database: &database,
                concurrency: options.concurrency,
                seconds: options.seconds,
            }
            .run(&mut admin, &script_path, &work.join(format!("logs-{name}")))
            .await?;
            let us = |s: f64| s * 1e6;
            writeln!(
                cpu_report,
                "| {volume} | {name} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
                us(grpc_cpu.client),
                us(grpc_cpu.server),
                us(grpc_cpu.postgres),
                us(grpc_cpu.total()),
                us(sql_cpu.client),
                us(sql_cpu.postgres),
                us(sql_cpu.total()),
            )?;
            println!(
                "  {name}: gRPC {:.0}/s p50 {:.2} ms p99 {:.2} ms; pgbench {:.0}/s p50 {:.2} ms p99 {:.2} ms",
                grpc.per_second, grpc.p50_ms, grpc.p99_ms, sql.per_second, sql.p50_ms, sql.p99_ms
            );
            writeln!(
                report,
                "| {volume} | {name} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} |",
                grpc.per_second,
                grpc.p50_ms,
                grpc.p99_ms,
                sql.per_second,
                sql.p50_ms,
                sql.p99_ms,
                grpc.per_second / sql.per_second
            )?;
            p50.push((volume, name, grpc.p50_ms, grpc.calls));
        }
        shutdown.trigger();
        let _ = server.await;
        drop(owner);
        admin_pool.close().await;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
            .execute(&mut admin)
            .await?;
    }
    writeln!(report)?;
    for name in ["GetOverview", "ListCampaigns"] {
        let at = |v: u64| {
            p50.iter()
                .find(|(vol, n, ..)| *vol == v && *n == name)
                .map(|x| x.2)
                .unwrap_or(f64::NAN)
        };
        let (small, large) = (at(options.volumes[0]), at(options.volumes[1]));
        writeln!(
            report,
            "{name}: p50 at {} / p50 at {} = {:.2} (target ≤ 1.3)",
            options.volumes[1],
            options.volumes[0],
            large / small
        )?;
    }
    writeln!(report)?;
    report.push_str(&cpu_report);
    std::fs::write(work.join("report.md"), &report)?;
    Ok(report)
}
