//! Service identity: analytics accepts the `api` workload and nobody else, whatever
//! else they hold; certificates rotate without a restart.

use std::{path::Path, sync::Arc, time::Duration};

use beacon_e2e::Stack;
use platform::tls::{self, Reloading, TlsFiles};
use proto::analytics::v1::{DateRange, RequestScope, analytics_client::AnalyticsClient};
use sqlx::PgPool;
use time::OffsetDateTime;
use tonic::Code;
use xtask::certs::Ca;

fn request() -> RequestScope {
    RequestScope {
        tenant_id: uuid::Uuid::new_v4().to_string(),
        range: Some(DateRange {
            from: "2026-01-01".into(),
            to: "2026-01-31".into(),
        }),
        currency: "EUR".into(),
    }
}

async fn call(addr: &str, tls: Arc<tls::ReloadingClient>) -> Result<(), tonic::Status> {
    let channel = tls::grpc_channel(addr, "analytics", tls, Duration::from_secs(3)).unwrap();
    AnalyticsClient::new(channel)
        .get_overview(request())
        .await
        .map(|_| ())
}

/// The TLS layer refused the connection with `alert` (TLS 1.3 reports a client
/// certificate problem after the handshake, as a fatal alert on the first read).
fn assert_tls_refused(status: &tonic::Status, alert: &str) {
    assert!(
        matches!(status.code(), Code::Unavailable | Code::Unknown),
        "{status:?}"
    );
    assert!(
        format!("{status:?}").contains(alert),
        "expected TLS alert {alert}: {status:?}"
    );
}

fn client(files: TlsFiles) -> Arc<tls::ReloadingClient> {
    Reloading::new(files, tls::client_config).unwrap()
}

/// Writes a certificate and key under `dir` and returns the files (with `ca`).
fn write_identity(dir: &Path, name: &str, (cert, key): (String, String), ca: &Path) -> TlsFiles {
    let files = TlsFiles {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        ca: ca.to_owned(),
    };
    std::fs::write(&files.cert, cert).unwrap();
    std::fs::write(&files.key, key).unwrap();
    files
}

/// A client that trusts the CA but presents no certificate at all.
fn no_client_cert(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in tls::load_certs(&files.ca)? {
        roots.add(cert)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[sqlx::test(migrations = false)]
async fn analytics_accepts_only_the_api_identity(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let addr = stack.analytics_addr.clone();
    let dir = tempfile::tempdir().unwrap();
    let api_id = platform::access::AccessModel::load()
        .spiffe_id("api")
        .unwrap();
    let now = OffsetDateTime::now_utc();

    // The api identity is accepted.
    call(&addr, client(stack.tls_files("api")))
        .await
        .expect("api is allowed");

    // The dashboard holds a valid certificate from the same CA, but is not allowed.
    let status = call(&addr, client(stack.tls_files("dashboard")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The api's identity, signed by another CA: the handshake fails.
    let rogue = Ca::new("Rogue CA").unwrap();
    let issued = rogue
        .issue(
            &api_id,
            &["api".into()],
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        )
        .unwrap();
    let forged = write_identity(dir.path(), "forged", issued, &stack.cert("ca.crt"));
    let status = call(&addr, client(forged)).await.unwrap_err();
    assert_tls_refused(&status, "UnknownCA");

    // The api's identity from the right CA, but expired: refused.
    let ca = Ca::from_files(&stack.cert("ca.crt"), &stack.cert("ca.key")).unwrap();
    let expired = ca
        .issue(
            &api_id,
            &["api".into()],
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    let expired = write_identity(dir.path(), "expired", expired, &stack.cert("ca.crt"));
    let status = call(&addr, client(expired)).await.unwrap_err();
    assert_tls_refused(&status, "CertificateExpired");

    // No client certificate: refused.
    let status = call(
        &addr,
        Reloading::new(stack.tls_files("api"), no_client_cert).unwrap(),
    )
    .await
    .unwrap_err();
    assert_tls_refused(&status, "CertificateRequired");

    // Plaintext gRPC: refused.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(3))
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            AnalyticsClient::new(channel)
                .get_overview(request())
                .await
                .is_err()
        );
    }
}

#[sqlx::test(migrations = false)]
async fn certificates_rotate_without_a_restart(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = platform::access::AccessModel::load();
    let now = OffsetDateTime::now_utc();
    let valid = (
        now - time::Duration::hours(1),
        now + time::Duration::days(1),
    );

    // An analytics server with its own copies of its files.
    let server = TlsFiles {
        cert: dir.path().join("server.crt"),
        key: dir.path().join("server.key"),
        ca: dir.path().join("server-ca.crt"),
    };
    std::fs::copy(stack.cert("analytics.crt"), &server.cert).unwrap();
    std::fs::copy(stack.cert("analytics.key"), &server.key).unwrap();
    std::fs::copy(stack.cert("ca.crt"), &server.ca).unwrap();
    let app = analytics::App::build(analytics::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        db: stack.db("beacon_analytics"),
        tls: server.clone(),
        request_timeout: Duration::from_secs(5),
        bounds: analytics::Bounds::default(),
        reflection: false,
    })
    .await
    .unwrap();
    let addr = format!("127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(stack.shutdown.clone()));

    // The api client trusts only the original CA, from its own CA file.
    let client_files = TlsFiles {
        ca: dir.path().join("client-ca.crt"),
        ..stack.tls_files("api")
    };
    std::fs::copy(stack.cert("ca.crt"), &client_files.ca).unwrap();
    let api = client(client_files.clone());
    call(&addr, api.clone()).await.expect("before rotation");

    // Rotate the server to a certificate from a new CA (the server keeps trusting the
    // old CA for its callers). New connections get the new certificate at once, so
    // the client that does not trust the new CA yet is refused: the server reloaded.
    let new_ca = Ca::new("Beacon CA 2").unwrap();
    let rotated = new_ca
        .issue(
            &model.spiffe_id("analytics").unwrap(),
            &xtask::certs::dns_names(&model, "analytics"),
            valid.0,
            valid.1,
        )
        .unwrap();
    std::fs::write(&server.key, rotated.1).unwrap();
    std::fs::write(&server.cert, rotated.0).unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let status = call(&addr, api.clone()).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "server still presents the old certificate"
    );

    // The client's CA bundle gains the new CA: the same client object reloads it.
    let bundle = format!(
        "{}{}",
        std::fs::read_to_string(stack.cert("ca.crt")).unwrap(),
        new_ca.cert_pem
    );
    std::fs::write(&client_files.ca, bundle).unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    call(&addr, api.clone())
        .await
        .expect("after the client reloaded its CA bundle");

    // A broken rotation (garbage written) keeps the last good certificate.
    std::fs::write(&server.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    call(&addr, api)
        .await
        .expect("last good certificate still served");
}

/// A workload certificate with exactly `sans`, from the stack's CA. (Ca::issue always
/// writes one SPIFFE id; these identities are the odd ones.)
fn issue_with_sans(stack: &Stack, sans: Vec<rcgen::SanType>) -> (String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    // The development CA's distinguished name, as xtask::certs writes it.
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "Beacon development CA");
    ca.distinguished_name
        .push(DnType::OrganizationName, "Beacon development");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(stack.cert("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "api");
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Calls analytics with a certificate holding exactly `sans`, written under `dir`.
async fn call_with_sans(
    stack: &Stack,
    dir: &Path,
    name: &str,
    sans: Vec<rcgen::SanType>,
) -> Result<(), tonic::Status> {
    let issued = issue_with_sans(stack, sans);
    let files = write_identity(dir, name, issued, &stack.cert("ca.crt"));
    call(&stack.analytics_addr, client(files)).await
}

fn uri(id: &str) -> rcgen::SanType {
    rcgen::SanType::URI(id.try_into().unwrap())
}

fn dns(name: &str) -> rcgen::SanType {
    rcgen::SanType::DnsName(name.try_into().unwrap())
}

/// Valid certificates from the right CA that are not the api: a DNS name "api" with no
/// SPIFFE id, and the pipeline's identities. Each is PermissionDenied.
#[sqlx::test(migrations = false)]
async fn analytics_refuses_the_api_name_without_its_identity_and_the_pipeline(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = platform::access::AccessModel::load();
    let mut cases = vec![(
        "dns-only-api".to_owned(),
        vec![dns("api"), dns("api.beacon-api.svc"), dns("localhost")],
    )];
    for component in ["ingest", "loader", "transform"] {
        let id = model.spiffe_id(component).unwrap();
        cases.push((component.to_owned(), vec![uri(&id), dns(component)]));
    }
    for (name, sans) in cases {
        let status = call_with_sans(&stack, dir.path(), &name, sans).await;
        assert_eq!(
            status.map_err(|s| s.code()),
            Err(Code::PermissionDenied),
            "{name}"
        );
    }
    // The control: the same construction with the api's identity is accepted.
    let api = model.spiffe_id("api").unwrap();
    call_with_sans(&stack, dir.path(), "control", vec![uri(&api), dns("api")])
        .await
        .expect("the api's identity, issued here, is accepted");
}

/// A certificate naming two workloads is nobody: refused whichever comes first.
#[sqlx::test(migrations = false)]
async fn analytics_refuses_a_certificate_with_two_spiffe_ids(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = platform::access::AccessModel::load();
    let (api, dashboard) = (
        model.spiffe_id("api").unwrap(),
        model.spiffe_id("dashboard").unwrap(),
    );
    for (name, sans) in [
        ("api-first", vec![uri(&api), uri(&dashboard)]),
        ("dashboard-first", vec![uri(&dashboard), uri(&api)]),
        ("api-twice", vec![uri(&api), uri(&api)]),
        // One SPIFFE id plus another URI: a workload certificate has exactly one URI.
        ("api-and-https", vec![uri(&api), uri("https://api.example")]),
        (
            "api-as-https",
            vec![uri("https://beacon.local/ns/beacon-api/sa/api")],
        ),
    ] {
        let status = call_with_sans(&stack, dir.path(), name, sans).await;
        assert_eq!(
            status.map_err(|s| s.code()),
            Err(Code::PermissionDenied),
            "{name}"
        );
    }
}

/// An analytics server with `server` files (and reflection on or off), served until the
/// stack stops; returns its address.
async fn analytics_with(stack: &Stack, server: TlsFiles, reflection: bool) -> String {
    let app = analytics::App::build(analytics::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        db: stack.db("beacon_analytics"),
        tls: server,
        request_timeout: Duration::from_secs(5),
        bounds: analytics::Bounds::default(),
        reflection,
    })
    .await
    .unwrap();
    let addr = format!("127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped(stack.shutdown.clone()));
    addr
}

/// The api checks analytics' workload identity, not only its name: a server with a
/// valid certificate from the same CA for the name `analytics`, but another workload's
/// SPIFFE id (the dashboard's), is refused in the handshake, so the api never sends it
/// a tenant's query. The control: the stack's own api, with the real analytics, is ready.
#[sqlx::test(migrations = false)]
async fn api_refuses_an_analytics_server_with_the_right_name_but_another_identity(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = platform::access::AccessModel::load();
    let now = OffsetDateTime::now_utc();
    let ca = Ca::from_files(&stack.cert("ca.crt"), &stack.cert("ca.key")).unwrap();
    let impostor = ca
        .issue(
            &model.spiffe_id("dashboard").unwrap(),
            &xtask::certs::dns_names(&model, "analytics"),
            now - time::Duration::hours(1),
            now + time::Duration::days(1),
        )
        .unwrap();
    let impostor = write_identity(dir.path(), "impostor", impostor, &stack.cert("ca.crt"));
    let impostor_addr = analytics_with(&stack, impostor, false).await;

    let api = api::App::build(stack.api_config(impostor_addr))
        .await
        .unwrap();
    let (api_port, api_admin) = (api.port(), api.admin_port());
    tokio::spawn(api.run_until_stopped(stack.shutdown.clone()));
    let ready = |port: u16| {
        let client = stack.client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let real_api_admin = stack
        .admin_ports
        .iter()
        .find(|(name, _)| *name == "api")
        .unwrap()
        .1;
    assert_eq!(ready(real_api_admin).await, 200, "control: the real pair");
    assert_eq!(ready(api_admin).await, 503, "the impostor is not analytics");

    // A tenant's KPI request through that api fails instead of reaching the impostor.
    let tenant = &xtask::seed::demo_tenants("irrelevant-password")[0];
    xtask::seed::create_tenant(&mut stack.owner().await, tenant)
        .await
        .unwrap();
    let token = stack.sign_token(tenant.id, "kpis:read", time::Duration::minutes(5));
    let overview = |base: String| {
        let (client, token) = (stack.client.clone(), token.clone());
        async move {
            client
                .get(format!("{base}/v1/overview"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(overview(stack.api_url.clone()).await, 200, "control");
    let status = overview(format!("http://127.0.0.1:{api_port}")).await;
    assert!(status.is_server_error(), "{status}");
}

/// gRPC health and reflection answer only the allowed identity, like the KPI service:
/// the dashboard's valid certificate gets PermissionDenied from both (reflection on);
/// the api gets SERVING, and reflection answers it (it is not Unimplemented, as it is
/// on a server with reflection off).
#[sqlx::test(migrations = false)]
async fn grpc_health_and_reflection_are_behind_the_identity_check(admin: PgPool) {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let stack = Stack::start(admin).await.unwrap();
    let with_reflection = analytics_with(&stack, stack.tls_files("analytics"), true).await;

    let channel = |addr: &str, who: &str| {
        tls::grpc_channel(
            addr,
            "analytics",
            client(stack.tls_files(who)),
            Duration::from_secs(3),
        )
        .unwrap()
    };
    let health = |addr: String, who: &'static str| {
        let channel = channel(&addr, who);
        async move {
            HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
                .map(|r| r.into_inner().status)
        }
    };
    // A unary call on the reflection method's path: enough to see who answers it.
    let reflection = |addr: String, who: &'static str| {
        let channel = channel(&addr, who);
        async move {
            let mut grpc = tonic::client::Grpc::new(channel);
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
            let codec = tonic_prost::ProstCodec::<
                HealthCheckRequest,
                tonic_health::pb::HealthCheckResponse,
            >::default();
            grpc.unary(
                tonic::Request::new(HealthCheckRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                ),
                codec,
            )
            .await
            .map(|_| ())
        }
    };

    for addr in [stack.analytics_addr.clone(), with_reflection.clone()] {
        let denied = health(addr.clone(), "dashboard").await.unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
        let serving = health(addr, "api").await.expect("api may ask for health");
        assert_eq!(
            serving,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }
    let denied = reflection(with_reflection.clone(), "dashboard")
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let off = reflection(stack.analytics_addr.clone(), "api")
        .await
        .unwrap_err();
    assert_eq!(
        off.code(),
        Code::Unimplemented,
        "reflection is off: {off:?}"
    );
    let answered = reflection(with_reflection, "api").await;
    assert!(
        !matches!(
            answered.as_ref().map_err(tonic::Status::code),
            Err(Code::PermissionDenied | Code::Unimplemented)
        ),
        "the api reaches reflection when it is on: {answered:?}"
    );
}
