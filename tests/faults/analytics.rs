//! Analytics killed (SIGKILL) and, later, frozen (SIGSTOP: connections open, nothing
//! answered) while 24 clients read KPIs through the api. The api answers 503/504
//! problem+json within its configured analytics timeout, holds at most
//! `BEACON_ANALYTICS_MAX_IN_FLIGHT` requests waiting on analytics (the others are
//! answered 503 at once), keeps its memory within its manifest's limit, and serves
//! 200s again once analytics is back. No process exits.

use std::{path::Path, time::Duration};

use beacon_e2e::procs::{ProcStack, manifest_memory_limit, proc_status_kib};
use sqlx::PgPool;
use xtask::seed::{demo_tenants, generate_events};

use crate::common::{
    Answer, Log, assert_clean_failures, client, figure, max_latency, viewer_token, wait_until,
};

const READERS: usize = 24;
/// `BEACON_ANALYTICS_MAX_IN_FLIGHT` of the api in this test (fewer than the readers).
const IN_FLIGHT: usize = 8;
/// `BEACON_ANALYTICS_TIMEOUT_MS` of the api in this test.
const ANALYTICS_TIMEOUT: Duration = Duration::from_millis(1_500);
/// The api's own margin over the channel's timeout (kpis::call), plus what a loaded
/// 2-core machine adds.
const SLACK: Duration = Duration::from_millis(1_750);
const MIB: f64 = (1 << 20) as f64;

#[sqlx::test(migrations = false)]
async fn analytics_killed_or_frozen_under_load_is_answered_quickly_and_recovers(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let overrides = [
        (
            "api",
            "BEACON_ANALYTICS_TIMEOUT_MS",
            ANALYTICS_TIMEOUT.as_millis().to_string(),
        ),
        (
            "api",
            "BEACON_ANALYTICS_MAX_IN_FLIGHT",
            IN_FLIGHT.to_string(),
        ),
    ];
    let mut stack = ProcStack::start(admin, bin, &overrides).await.unwrap();
    let tenant = &demo_tenants("faults-password-an")[0];
    let ingest = stack.tenant(tenant).await.unwrap();
    let events = generate_events(
        5,
        2_000,
        20,
        tenant.currency,
        time::OffsetDateTime::now_utc(),
    );
    xtask::seed::push(&stack.client, &stack.url("ingest"), &ingest, &events, 1_000)
        .await
        .unwrap();
    let viewer = viewer_token(&stack, tenant).await;

    let log = Log::new();
    let http = client(Duration::from_secs(30));
    let url = format!("{}/v1/overview", stack.url("api"));
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..READERS {
        let (log, http, url, viewer) = (log.clone(), http.clone(), url.clone(), viewer.clone());
        // Each reader waits as long as a 503's Retry-After says, like a client should.
        clients.spawn(async move {
            while !log.stopped() {
                let (answer, _) = log.send("api", http.get(&url).bearer_auth(&viewer)).await;
                let pause = match answer.retry_after {
                    Some(s) if answer.status == 503 => Duration::from_secs(s),
                    _ => Duration::from_millis(50),
                };
                tokio::time::sleep(pause).await;
            }
        });
    }
    let api_pid = stack.service("api").pid();
    let rss = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            while !log.stopped() {
                samples.push((log.now(), rss_mib(api_pid, "VmRSS:")));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            samples
        })
    };

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let kill_sent = log.now();
    stack.kill("analytics").await.unwrap();
    let killed_at = log.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart_at = log.now();
    stack.restart("analytics", bin).await.unwrap();
    let back_at = log.now();
    let first_ok = wait_until(Duration::from_secs(30), "api 200 after restart", || {
        let answers = log.of("api", back_at, Duration::MAX);
        async move { answers.iter().any(Answer::ok) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let frozen_at = log.now();
    stack.service("analytics").signal("STOP").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stack.service("analytics").signal("CONT").unwrap();
    let thawed_at = log.now();
    let thaw_ok = wait_until(Duration::from_secs(30), "api 200 after SIGCONT", || {
        let answers = log.of("api", thawed_at, Duration::MAX);
        async move { answers.iter().any(Answer::ok) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    log.stop();
    while let Some(joined) = clients.join_next().await {
        joined.expect("reader task");
    }
    let rss = rss.await.unwrap();
    let end = log.now();

    assert_eq!(stack.all_running(), Ok(()), "a service exited");
    let scenario = "analytics down";
    let all = log.of("api", Duration::ZERO, end);
    assert_clean_failures(&all, &[503, 504], "api");

    // Killed: 503/504 for every request sent after the kill, quickly.
    let margin = Duration::from_millis(100);
    let killed = log.of("api", killed_at + margin, restart_at);
    assert!(
        !killed.is_empty() && killed.iter().all(|a| !a.ok()),
        "{killed:?}"
    );
    let slowest = max_latency(&killed);
    assert!(slowest <= ANALYTICS_TIMEOUT + SLACK, "killed: {slowest:?}");
    let killed_503 = killed.iter().filter(|a| a.status == 503).count();
    figure(scenario, "killed: answers", killed.len() as f64, "");
    figure(scenario, "killed: of them 503", killed_503 as f64, "");
    figure(scenario, "killed: max latency", ms(slowest), "ms");
    figure(
        scenario,
        "killed: first 200 after analytics ready",
        ms(first_ok),
        "ms",
    );
    figure(
        scenario,
        "analytics restart to ready",
        ms(back_at - restart_at),
        "ms",
    );

    // Frozen: 504 after the timeout for those holding a slot, 503 at once for the rest.
    // Sent once the freeze was in place, early enough not to be answered after it.
    let frozen = log.of(
        "api",
        frozen_at + margin,
        thawed_at - ANALYTICS_TIMEOUT - Duration::from_millis(500),
    );
    assert!(frozen.iter().all(|a| !a.ok()), "{frozen:?}");
    let slowest = max_latency(&frozen);
    assert!(slowest <= ANALYTICS_TIMEOUT + SLACK, "frozen: {slowest:?}");
    let timed_out = frozen.iter().filter(|a| a.status == 504).count();
    let shed: Vec<_> = frozen.iter().filter(|a| a.status == 503).collect();
    assert!(timed_out > 0, "frozen: no 504");
    assert!(
        !shed.is_empty(),
        "frozen: {READERS} readers, {IN_FLIGHT} slots, none shed"
    );
    let shed_slowest = shed.iter().map(|a| a.latency).max().unwrap_or_default();
    assert!(
        shed_slowest < Duration::from_millis(750),
        "a shed request waited {shed_slowest:?}"
    );
    // Requests waiting on analytics at once: never more than the slots.
    let waiting = most_waiting_at_once(&frozen, Duration::from_millis(500));
    assert!(waiting <= IN_FLIGHT, "{waiting} requests waited at once");
    figure(scenario, "frozen: answers", frozen.len() as f64, "");
    figure(scenario, "frozen: 504s", timed_out as f64, "");
    figure(
        scenario,
        "frozen: 503s (shed at once)",
        shed.len() as f64,
        "",
    );
    figure(scenario, "frozen: max latency", ms(slowest), "ms");
    figure(
        scenario,
        "frozen: max latency of a shed request",
        ms(shed_slowest),
        "ms",
    );
    figure(
        scenario,
        "frozen: most requests waiting at once",
        waiting as f64,
        "",
    );
    figure(
        scenario,
        "frozen: first 200 after SIGCONT",
        ms(thaw_ok),
        "ms",
    );

    // Healthy, before and after: answers from analytics (200), and, with more readers
    // than slots, some requests shed at once (503), never one waiting out a deadline.
    let before: Vec<Answer> = log
        .of("api", Duration::ZERO, kill_sent)
        .into_iter()
        .filter(|a| a.done() < kill_sent)
        .collect();
    let after = log.of("api", thawed_at + thaw_ok + Duration::from_secs(1), end);
    for (phase, answers) in [("before", &before), ("after", &after)] {
        let ok = answers.iter().filter(|a| a.ok()).count();
        assert!(ok > 0, "{phase}: no 200: {answers:?}");
        for a in answers.iter().filter(|a| !a.ok()) {
            assert!(
                a.status == 503 && a.latency < Duration::from_millis(750),
                "{phase}: {a:?}"
            );
        }
        figure(
            scenario,
            &format!("healthy {phase}: answers"),
            answers.len() as f64,
            "",
        );
        figure(scenario, &format!("healthy {phase}: 200s"), ok as f64, "");
    }

    // Memory: what the api held meanwhile, against its manifest's limit.
    let rss_before = rss
        .iter()
        .filter(|(at, _)| *at < kill_sent)
        .map(|(_, m)| *m)
        .fold(0.0, f64::max);
    let during = rss.iter().map(|(_, m)| *m).fold(0.0, f64::max);
    let peak = rss_mib(api_pid, "VmHWM:");
    let limit = manifest_memory_limit("api").unwrap() as f64 / MIB;
    assert!(
        peak < limit,
        "api peak RSS {peak:.1} MiB over its limit {limit:.1} MiB"
    );
    assert!(
        during - rss_before < 32.0,
        "api RSS grew by {:.1} MiB while analytics was down",
        during - rss_before
    );
    figure(scenario, "api RSS before", rss_before, "MiB");
    figure(scenario, "api RSS max during faults", during, "MiB");
    figure(scenario, "api peak RSS (VmHWM)", peak, "MiB");
    figure(scenario, "api memory limit (manifest)", limit, "MiB");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    proc_status_kib(pid, field) as f64 / 1024.0
}

/// The most answers that were waiting together at one moment, counting only those
/// that waited at least `long` (held a slot until the timeout): sampled `long` after
/// each one was sent, ignoring the last 300 ms of each (the answer on its way back
/// while the slot is already free).
fn most_waiting_at_once(answers: &[Answer], long: Duration) -> usize {
    let slow: Vec<&Answer> = answers.iter().filter(|a| a.latency >= long).collect();
    slow.iter()
        .map(|r| {
            let t = r.sent + long;
            slow.iter()
                .filter(|s| s.sent <= t && t + Duration::from_millis(300) < s.done())
                .count()
        })
        .max()
        .unwrap_or(0)
}
