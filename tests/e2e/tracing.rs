//! One dashboard request produces one trace whose spans come from dashboard, api and
//! analytics (and its database queries), with correct parent links. The services run
//! as real processes exporting OTLP/gRPC to a collector endpoint inside this test.

use std::{
    collections::HashMap,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value as AnyValue,
};
use sqlx::PgPool;
use tokio::process::{Child, Command};

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

#[derive(Default, Clone)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                spans.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent: span.parent_span_id,
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn spawn(service: &str, env: &[(&str, String)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    cmd.arg(service)
        .env_clear()
        .env("RUST_LOG", "info")
        .env("BEACON_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Proc(cmd.spawn().expect("spawn service"))
}

async fn terminate(proc: &mut Proc) {
    if let Some(pid) = proc.0.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(Duration::from_secs(20), proc.0.wait()).await;
    assert!(
        matches!(status, Ok(Ok(s)) if s.success()),
        "service did not stop cleanly: {status:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn one_dashboard_request_is_one_trace_across_all_hops(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    xtask::certs::generate(certs.path()).unwrap();
    xtask::secrets::subject_hash_key(certs.path()).unwrap();
    let cert = |f: &str| certs.path().join(f).to_string_lossy().into_owned();
    let tenant = &xtask::seed::demo_tenants("trace-password")[0];
    let mut owner = beacon_e2e::owner_connection(&admin).await;
    xtask::seed::create_tenant(&mut owner, tenant)
        .await
        .unwrap();

    // The collector.
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector.clone()))
            .serve_with_incoming(tokio_stream_listener(listener)),
    );

    let options = admin.connect_options();
    let db = |role: &str| {
        vec![
            ("DATABASE_HOST", options.get_host().to_owned()),
            ("DATABASE_PORT", options.get_port().to_string()),
            ("DATABASE_NAME", options.get_database().unwrap().to_owned()),
            ("DATABASE_USER", role.to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
        ]
    };
    let (grpc, api_port, dash_port) = (free_port(), free_port(), free_port());
    let admin_ports = [free_port(), free_port(), free_port()];
    let mut env = db("beacon_analytics");
    env.extend([
        ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{grpc}")),
        ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{}", admin_ports[0])),
        ("BEACON_TLS_CERT_FILE", cert("analytics.crt")),
        ("BEACON_TLS_KEY_FILE", cert("analytics.key")),
        ("BEACON_TLS_CA_FILE", cert("ca.crt")),
    ]);
    let mut analytics = spawn("analytics", &env);
    let mut env = db("beacon_api");
    env.extend([
        ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{api_port}")),
        ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{}", admin_ports[1])),
        ("BEACON_TLS_CERT_FILE", cert("api.crt")),
        ("BEACON_TLS_KEY_FILE", cert("api.key")),
        ("BEACON_TLS_CA_FILE", cert("ca.crt")),
        ("BEACON_JWT_SIGNING_KEY_FILE", cert("jwt-signing.key")),
        ("BEACON_JWT_PUBLIC_KEY_FILE", cert("jwt-public.pem")),
        ("BEACON_ANALYTICS_ADDR", format!("127.0.0.1:{grpc}")),
        ("BEACON_ANALYTICS_SERVER_NAME", "analytics".to_owned()),
        (
            "BEACON_SUBJECT_HASH_KEY_FILE",
            cert(xtask::secrets::SUBJECT_HASH_KEY),
        ),
    ]);
    let mut api = spawn("api", &env);
    let env = vec![
        ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{dash_port}")),
        ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{}", admin_ports[2])),
        ("BEACON_API_URL", format!("http://127.0.0.1:{api_port}")),
        ("BEACON_SECURE_COOKIES", "false".to_owned()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone()),
    ];
    let mut dashboard = spawn("dashboard", &env);

    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for port in admin_ports {
        let mut ready = false;
        for _ in 0..200 {
            if client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ready, "service with admin port {port} not ready");
    }

    // Sign in through the form, then open the overview.
    let dash = format!("http://127.0.0.1:{dash_port}");
    let page = client.get(format!("{dash}/login")).send().await.unwrap();
    let csrf = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("__Host-beacon_csrf=")
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    // The form's token is bound to the nonce cookie; it is not the cookie's value.
    let html = page.text().await.unwrap();
    let at = html.find(r#"name="csrf" value=""#).unwrap() + 19;
    let token = html[at..].split('"').next().unwrap().to_owned();
    let signed_in = client
        .post(format!("{dash}/login"))
        .header("cookie", format!("__Host-beacon_csrf={csrf}"))
        .form(&[
            ("csrf", token.as_str()),
            ("email", tenant.viewer_email.as_str()),
            ("password", "trace-password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let session = signed_in
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|v| {
            v.to_str()
                .ok()?
                .strip_prefix("__Host-beacon_session=")
                .map(|r| r.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    let overview = client
        .get(format!("{dash}/overview"))
        .header("cookie", format!("__Host-beacon_session={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);

    // Stopping flushes every exporter.
    terminate(&mut dashboard).await;
    terminate(&mut api).await;
    terminate(&mut analytics).await;

    let spans = collector.0.lock().unwrap().clone();
    let root = spans
        .iter()
        .find(|s| s.service == "dashboard" && s.name == "GET /overview")
        .unwrap_or_else(|| {
            panic!(
                "no dashboard span for GET /overview in {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.service, &s.name))
                    .collect::<Vec<_>>()
            )
        });
    assert!(
        root.parent.is_empty(),
        "the dashboard request is the root of its trace"
    );
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .collect();
    let by_id: HashMap<&[u8], &Span> = trace.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
    let parent_service = |s: &Span| by_id.get(s.parent.as_slice()).map(|p| p.service.clone());

    let api_span = trace
        .iter()
        .find(|s| s.service == "api" && s.name == "GET /v1/overview")
        .expect("api span in the same trace");
    assert_eq!(
        parent_service(api_span).as_deref(),
        Some("dashboard"),
        "api span's parent is in dashboard"
    );
    let grpc_span = trace
        .iter()
        .find(|s| s.service == "analytics" && s.name.ends_with("GetOverview"))
        .expect("analytics span in the same trace");
    assert_eq!(
        parent_service(grpc_span).as_deref(),
        Some("api"),
        "analytics span's parent is in api"
    );
    let db_span = trace
        .iter()
        .find(|s| s.service == "analytics" && s.name == "db.query")
        .expect("database span in the same trace");
    assert_eq!(parent_service(db_span).as_deref(), Some("analytics"));
    // The overview query itself is traced: a database span under GetOverview.
    let under_overview = |s: &Span| {
        let mut parent = by_id.get(s.parent.as_slice());
        while let Some(p) = parent {
            if p.span_id == grpc_span.span_id {
                return true;
            }
            parent = by_id.get(p.parent.as_slice());
        }
        false
    };
    assert!(
        trace
            .iter()
            .any(|s| s.service == "analytics" && s.name == "db.query" && under_overview(s)),
        "no db.query span under {}",
        grpc_span.name
    );
    // Every span of the trace hangs off the root.
    for span in &trace {
        let mut cursor = *span;
        let mut hops = 0;
        while !cursor.parent.is_empty() {
            cursor = by_id.get(cursor.parent.as_slice()).unwrap_or_else(|| {
                panic!(
                    "{} ({}) has a parent outside the trace",
                    span.name, span.service
                )
            });
            hops += 1;
            assert!(hops < 50);
        }
        assert_eq!(cursor.span_id, root.span_id);
    }
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::wrappers::TcpListenerStream::new(listener)
}
