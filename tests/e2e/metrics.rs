//! What an SRE scrapes: every service as its own process, its `/metrics` read right
//! after start and after traffic. The names and buckets below are the metric contract
//! (spelled here on purpose, not taken from the code, so a rename fails this test).

use std::{collections::BTreeSet, path::Path};

use beacon_e2e::{
    procs::ProcStack,
    scrape::{Exposition, scrape, scrape_text},
};
use sqlx::PgPool;
use xtask::seed::demo_tenants;

const DURATION_BUCKETS: &[&str] = &[
    "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
];
const DB_BUCKETS: &[&str] = &[
    "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
    "10", "+Inf",
];

const HTTP: &str = "http_server_request_duration_seconds";
const DB_OPERATION: &str = "db_client_operation_duration_seconds";
const RPC_SERVER: &str = "rpc_server_duration_seconds";
const RPC_CLIENT: &str = "rpc_client_duration_seconds";

/// (ProcStack name, `service` label, metrics of the contract it exports).
fn contract() -> Vec<(&'static str, &'static str, Vec<&'static str>)> {
    let http = [HTTP];
    let db = [
        DB_OPERATION,
        "db_client_connections_usage",
        "db_client_connections_max",
    ];
    let with = |parts: &[&[&'static str]]| {
        let mut all = vec!["beacon_build_info"];
        all.extend(parts.iter().flat_map(|p| p.iter().copied()));
        all
    };
    vec![
        (
            "analytics",
            "analytics",
            with(&[&db, &[RPC_SERVER, "analytics_requests_total"]]),
        ),
        (
            "api",
            "api",
            with(&[
                &http,
                &db,
                &[
                    RPC_CLIENT,
                    "auth_login_throttled_total",
                    "auth_login_failures_total",
                ],
            ]),
        ),
        (
            "loader",
            "pipeline-loader",
            with(&[&http, &db, &["loader_events_stored_total"]]),
        ),
        (
            "ingest",
            "pipeline-ingest",
            with(&[
                &http,
                &[
                    "ingest_events_accepted_total",
                    "ingest_events_duplicate_total",
                    "ingest_batches_rejected_total",
                    "ingest_rate_limited_total",
                ],
            ]),
        ),
        (
            "transform",
            "pipeline-transform",
            with(&[
                &db,
                &[
                    "transform_events_processed_total",
                    "transform_lag_seconds",
                    "transform_last_success_timestamp_seconds",
                    "transform_failures_total",
                    "transform_runs_total",
                ],
            ]),
        ),
        (
            "dashboard",
            "dashboard",
            with(&[&http, &["dashboard_csp_violations_total"]]),
        ),
    ]
}

/// `name`'s exposition; whenever it is read, every family in it is described.
async fn metrics_of(stack: &ProcStack, name: &str) -> Exposition {
    let e = scrape(&stack.client, stack.services[name].admin_port)
        .await
        .unwrap_or_else(|e| panic!("{name} /metrics: {e:#}"));
    for (family_name, family) in &e.families {
        assert!(
            family.help.is_some() && family.kind.is_some(),
            "{name}: {family_name} has no HELP or TYPE"
        );
    }
    e
}

fn bucket_bounds(e: &Exposition, family: &str) -> BTreeSet<String> {
    e.family(family)
        .unwrap()
        .matching("_bucket", &[])
        .filter_map(|s| s.label("le").map(str::to_owned))
        .collect()
}

#[sqlx::test(migrations = false)]
async fn every_service_exports_the_contract_from_start(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    for (name, service, names) in contract() {
        let e = metrics_of(&stack, name).await;
        for metric in &names {
            let family = e
                .family(metric)
                .unwrap_or_else(|| panic!("{name}: no {metric} right after start"));
            assert!(
                family.help.as_deref().is_some_and(|h| h.len() > 10),
                "{name}: {metric} has no HELP"
            );
            assert!(!family.samples.is_empty(), "{name}: {metric} has no series");
        }
        // Every series says which service it is from.
        for sample in e.samples() {
            assert_eq!(sample.label("service"), Some(service), "{name}: {sample:?}");
        }
        let info = &e.family("beacon_build_info").unwrap().samples[0];
        assert_eq!(info.value, 1.0);
        assert_eq!(info.label("version"), Some(env!("CARGO_PKG_VERSION")));
        assert!(info.label("commit").is_some_and(|c| !c.is_empty()));
        // Histograms, with the contract's buckets (never summaries).
        for (metric, buckets) in [
            (HTTP, DURATION_BUCKETS),
            (RPC_SERVER, DURATION_BUCKETS),
            (RPC_CLIENT, DURATION_BUCKETS),
            (DB_OPERATION, DB_BUCKETS),
        ] {
            if names.contains(&metric) {
                assert_eq!(
                    e.family(metric).unwrap().kind.as_deref(),
                    Some("histogram"),
                    "{name}: {metric}"
                );
                let expected: BTreeSet<String> = buckets.iter().map(|b| (*b).to_owned()).collect();
                assert_eq!(bucket_bounds(&e, metric), expected, "{name}: {metric}");
            }
        }
        for family in e.families.values() {
            assert_ne!(
                family.kind.as_deref(),
                Some("summary"),
                "{name}: {family:?}"
            );
        }
    }
    // Series known at start are there at 0: reasons, methods, pool states.
    let api = metrics_of(&stack, "api").await;
    let routes = api.family(HTTP).unwrap().label_values("route");
    for route in ["/v1/auth/token", "/v1/overview", "/v1/campaigns/{id}"] {
        assert!(routes.contains(route), "{route} in {routes:?}");
    }
    let throttled = api.family("auth_login_throttled_total").unwrap();
    assert_eq!(
        throttled.label_values("reason"),
        ["account", "address", "both"].map(String::from).into()
    );
    assert!(throttled.samples.iter().all(|s| s.value == 0.0));
    assert!(
        api.family(RPC_CLIENT)
            .unwrap()
            .label_values("rpc_method")
            .contains("GetOverview")
    );
    let analytics = metrics_of(&stack, "analytics").await;
    let served = analytics
        .family(RPC_SERVER)
        .unwrap()
        .label_values("rpc_method");
    for method in ["GetOverview", "ListCampaigns", "Check"] {
        assert!(served.contains(method), "{method} in {served:?}");
    }
    assert_eq!(
        analytics
            .family("db_client_connections_usage")
            .unwrap()
            .label_values("state"),
        ["idle", "used"].map(String::from).into()
    );
    let ingest = metrics_of(&stack, "ingest").await;
    assert_eq!(
        ingest
            .family("ingest_batches_rejected_total")
            .unwrap()
            .label_values("reason"),
        ["empty", "invalid", "too_large", "too_many_events"]
            .map(String::from)
            .into()
    );
}

#[sqlx::test(migrations = false)]
async fn traffic_is_counted_by_route_status_class_method_and_operation(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    let tenant = &demo_tenants("metrics-password")[0];
    let ingest_token = stack.tenant(tenant).await.unwrap();
    let api_url = stack.url("api");
    let before = metrics_of(&stack, "api").await;
    let login = [("route", "/v1/auth/token"), ("method", "POST")];

    // A refused sign-in: 4xx on the token route, and a login failure.
    let r = stack
        .client
        .post(format!("{api_url}/v1/auth/token"))
        .json(&serde_json::json!({
            "grant_type": "password", "username": tenant.viewer_email, "password": "wrong",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let token = beacon_e2e::password_token(
        &stack.client,
        &api_url,
        &tenant.viewer_email,
        &tenant.password,
    )
    .await;
    let r = stack
        .client
        .get(format!("{api_url}/v1/overview"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = stack
        .client
        .get(format!("{api_url}/v1/campaigns/{}", uuid::Uuid::new_v4()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let after = metrics_of(&stack, "api").await;
    let http = |e: &Exposition, labels: &[(&str, &str)]| e.family(HTTP).unwrap().count(labels);
    let delta = |labels: &[(&str, &str)]| http(&after, labels) - http(&before, labels);
    assert_eq!(delta(&[login[0], login[1], ("status_class", "4xx")]), 1.0);
    assert_eq!(delta(&[login[0], login[1], ("status_class", "2xx")]), 1.0);
    assert_eq!(
        delta(&[("route", "/v1/overview"), ("status_class", "2xx")]),
        1.0
    );
    // A path parameter is counted under its template, never as the path sent.
    assert_eq!(
        delta(&[
            ("route", "/v1/campaigns/{id}"),
            ("method", "GET"),
            ("status_class", "4xx")
        ]),
        1.0
    );
    let failures = |e: &Exposition| e.family("auth_login_failures_total").unwrap().samples[0].value;
    assert_eq!(failures(&after) - failures(&before), 1.0);
    // The overview went api → analytics over gRPC, and analytics read the database.
    let grpc = [
        ("rpc_service", "beacon.analytics.v1.Analytics"),
        ("rpc_method", "GetOverview"),
        ("grpc_code", "OK"),
    ];
    assert_eq!(
        after.family(RPC_CLIENT).unwrap().count(&grpc),
        1.0,
        "{:#?}",
        after
            .family(RPC_CLIENT)
            .unwrap()
            .matching("_count", &[])
            .collect::<Vec<_>>()
    );
    let analytics = metrics_of(&stack, "analytics").await;
    assert_eq!(analytics.family(RPC_SERVER).unwrap().count(&grpc), 1.0);
    assert_eq!(operations(&analytics, "overview"), 1.0);
    assert!(operations(&analytics, "ready_check") >= 1.0);
    // The api's own named queries and tenant transactions.
    assert!(operations(&after, "tenant.begin") >= 1.0);

    // Events in: accepted per tenant at ingest, stored by the loader.
    let events =
        xtask::seed::generate_events(7, 50, 3, tenant.currency, time::OffsetDateTime::now_utc());
    let (accepted, _) = xtask::seed::push(
        &stack.client,
        &stack.url("ingest"),
        &ingest_token,
        &events,
        50,
    )
    .await
    .unwrap();
    assert!(accepted > 0);
    let ingest = metrics_of(&stack, "ingest").await;
    let tenant_id = tenant.id.to_string();
    let accepted_series = ingest.family("ingest_events_accepted_total").unwrap();
    assert_eq!(
        accepted_series
            .samples
            .iter()
            .filter(|s| s.label("tenant") == Some(tenant_id.as_str()))
            .map(|s| s.value)
            .sum::<f64>(),
        accepted as f64
    );
    let loader = metrics_of(&stack, "loader").await;
    assert_eq!(
        loader.family("loader_events_stored_total").unwrap().samples[0].value,
        accepted as f64
    );
    assert!(operations(&loader, "raw_events.insert") >= 1.0);
}

/// How many times the database operation `operation` was timed.
fn operations(e: &Exposition, operation: &str) -> f64 {
    e.family(DB_OPERATION)
        .unwrap()
        .count(&[("operation", operation)])
}

/// Unknown paths, made-up methods and unknown gRPC methods all land in a fixed set of
/// series: a caller cannot grow the exposition.
#[sqlx::test(migrations = false)]
async fn callers_cannot_create_series(admin: PgPool) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    let marker = format!("probe{}", uuid::Uuid::new_v4().simple());
    for name in ["api", "dashboard", "ingest"] {
        let before = metrics_of(&stack, name).await;
        let base = stack.url(name);
        for i in 0..20 {
            let method = if i % 2 == 0 { "GET" } else { "BREW" };
            let r = stack
                .client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{base}/{marker}/{i}?{marker}={i}"),
                )
                .header("x-request-id", format!("{marker}-{i}"))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_client_error(), "{name}: {}", r.status());
        }
        let after = metrics_of(&stack, name).await;
        let text_after = scrape_text(&stack.client, stack.services[name].admin_port)
            .await
            .unwrap();
        assert!(!text_after.contains(&marker), "{name} exported the input");
        let http = |e: &Exposition, labels: &[(&str, &str)]| e.family(HTTP).unwrap().count(labels);
        let unmatched = [("route", "unmatched"), ("status_class", "4xx")];
        let counted = |method| {
            let labels = [unmatched[0], unmatched[1], ("method", method)];
            http(&after, &labels) - http(&before, &labels)
        };
        assert_eq!(counted("GET"), 10.0, "{name}");
        assert_eq!(counted("_OTHER"), 10.0, "{name}");
        let routes = after.family(HTTP).unwrap().label_values("route");
        assert!(
            routes
                .iter()
                .all(|r| r == "unmatched" || r.starts_with('/')),
            "{name}: {routes:?}"
        );
        let methods = after.family(HTTP).unwrap().label_values("method");
        let standard = [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
            "_OTHER",
        ];
        assert!(
            methods.iter().all(|m| standard.contains(&m.as_str())),
            "{name}: {methods:?}"
        );
    }

    // gRPC: a method analytics does not serve, from the allowed caller.
    let tls = platform::tls::Reloading::new(
        platform::tls::TlsFiles {
            cert: stack.certs.path().join("api.crt"),
            key: stack.certs.path().join("api.key"),
            ca: stack.certs.path().join("ca.crt"),
        },
        platform::tls::client_config,
    )
    .unwrap();
    let channel = platform::tls::grpc_channel(
        &format!("127.0.0.1:{}", stack.services["analytics"].port),
        "analytics",
        tls,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for i in 0..5 {
        grpc.ready().await.unwrap();
        let path = format!("/beacon.analytics.v1.Analytics/{marker}{i}");
        let status = grpc
            .unary(
                tonic::Request::new(tonic_health::pb::HealthCheckRequest::default()),
                path.parse::<tonic::codegen::http::uri::PathAndQuery>()
                    .unwrap(),
                tonic_prost::ProstCodec::<
                    tonic_health::pb::HealthCheckRequest,
                    tonic_health::pb::HealthCheckResponse,
                >::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented);
    }
    let analytics = metrics_of(&stack, "analytics").await;
    let served = analytics.family(RPC_SERVER).unwrap();
    assert_eq!(
        served.count(&[
            ("rpc_service", "_OTHER"),
            ("rpc_method", "_OTHER"),
            ("grpc_code", "UNIMPLEMENTED"),
        ]),
        5.0
    );
    assert!(
        analytics
            .samples()
            .all(|s| s.labels.values().all(|v| !v.contains(&marker)))
    );
}
