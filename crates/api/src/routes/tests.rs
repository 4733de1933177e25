use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{Request, StatusCode},
    response::Response,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use platform::{
    access::AccessModel,
    auth::{AUDIENCE, Claims, ISSUER, TokenVerifier, key_id},
};
use serde_json::json;
use tower::ServiceExt as _;
use uuid::Uuid;

use super::*;
use crate::TokenSigner;

fn table() -> BTreeSet<(String, String, String)> {
    ROUTES
        .iter()
        .map(|r| {
            (
                r.method.to_owned(),
                r.path.to_owned(),
                r.permission.to_owned(),
            )
        })
        .collect()
}

#[test]
fn route_table_equals_the_access_model_in_both_directions() {
    let model: BTreeSet<_> = AccessModel::load()
        .api
        .routes
        .into_iter()
        .map(|r| (r.method, r.path, r.permission))
        .collect();
    let routed = table();
    let undeclared: Vec<_> = routed.difference(&model).collect();
    let missing: Vec<_> = model.difference(&routed).collect();
    assert!(
        undeclared.is_empty() && missing.is_empty(),
        "routes without (or with a different) permission in security/access-model.toml: {undeclared:?}\n\
         routes in the model that the api does not serve: {missing:?}"
    );
    assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
}

fn openapi_operations() -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

#[test]
fn every_route_is_in_the_openapi_document_and_nothing_else() {
    let routed: BTreeSet<_> = ROUTES
        .iter()
        .map(|r| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    assert_eq!(openapi_operations(), routed);
    // Each handler documents exactly the method and path its table row declares.
    for route in ROUTES {
        let (_, paths, _) = (route.handler)();
        let doc = serde_json::to_value(&paths).unwrap();
        let item = &doc[route.path];
        assert!(
            item.get(route.method.to_lowercase()).is_some(),
            "{} {}: the handler documents {item}",
            route.method,
            route.path
        );
    }
    let doc = serde_json::to_value(openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(
        doc["paths"]["/v1/users"]["get"]["security"][0]["bearer"][0],
        "tenant:admin"
    );
}

/// What is wrong with the operation ids of an OpenAPI document: every operation
/// needs one, in lowerCamelCase with a verb and a noun (`listCampaigns`; utoipa's
/// default, the handler's snake_case function name, does not qualify), and no two
/// operations may share one (client generators name their methods after them).
fn operation_id_problems(doc: &serde_json::Value) -> Vec<String> {
    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let at = format!("{} {path}", method.to_uppercase());
            let Some(id) = op["operationId"].as_str() else {
                problems.push(format!("{at}: no operationId"));
                continue;
            };
            let camel = id.starts_with(|c: char| c.is_ascii_lowercase())
                && id.chars().all(|c| c.is_ascii_alphanumeric())
                && id.chars().any(|c| c.is_ascii_uppercase());
            if !camel {
                problems.push(format!(
                    "{at}: operationId {id:?} is not lowerCamelCase verb + noun (set operation_id in its #[utoipa::path])"
                ));
            }
            if let Some(other) = seen.insert(id.to_owned(), at.clone()) {
                problems.push(format!("{at}: operationId {id:?} is also {other}'s"));
            }
        }
    }
    problems
}

#[test]
fn every_operation_has_a_unique_meaningful_operation_id() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let problems = operation_id_problems(&doc);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(
        doc["paths"]["/v1/campaigns"]["get"]["operationId"],
        "listCampaigns"
    );
    assert_eq!(
        doc["paths"]["/v1/audit-log"]["get"]["operationId"],
        "listAuditLog"
    );
}

#[test]
fn a_duplicate_or_missing_operation_id_is_detected() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let mut twice = doc.clone();
    twice["paths"]["/v1/audit-log"]["get"]["operationId"] = "listCampaigns".into();
    let problems = operation_id_problems(&twice);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("GET /v1/audit-log") && problems[0].contains("GET /v1/campaigns"));
    let mut missing = doc.clone();
    missing["paths"]["/v1/overview"]["get"]
        .as_object_mut()
        .unwrap()
        .remove("operationId");
    assert_eq!(
        operation_id_problems(&missing),
        ["GET /v1/overview: no operationId"]
    );
    let mut default = doc;
    default["paths"]["/v1/users"]["get"]["operationId"] = "list_users".into();
    assert_eq!(operation_id_problems(&default).len(), 1);
}

#[test]
fn a_route_in_the_table_but_not_the_model_fails_the_model_check() {
    // The check above is a set comparison: prove it notices a missing declaration.
    let mut model = AccessModel::load().api.routes;
    model.retain(|r| r.path != "/v1/audit-log");
    let model: BTreeSet<_> = model
        .into_iter()
        .map(|r| (r.method, r.path, r.permission))
        .collect();
    assert!(!table().is_subset(&model));
}

pub(crate) struct Keys {
    pub private: Vec<u8>,
    pub public: Vec<u8>,
}

pub(crate) fn keys() -> Keys {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Keys {
        private: pair.serialize_pem().into_bytes(),
        public: pair.public_key_pem().into_bytes(),
    }
}

/// State over a database and an analytics service that do not exist: every
/// request below is decided before either is reached.
pub(crate) fn state(keys: &Keys) -> AppState {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(200))
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .unwrap();
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
    let analytics = proto::analytics::v1::analytics_client::AnalyticsClient::new(
        platform::grpc::client(channel, &crate::analytics_metrics().unwrap()),
    );
    AppState::new(
        pool,
        Arc::new(TokenVerifier::from_public_pems(std::slice::from_ref(&keys.public)).unwrap()),
        Arc::new(
            TokenSigner::new(&keys.private, &keys.public, time::Duration::minutes(5)).unwrap(),
        ),
        analytics,
        Duration::from_millis(500),
    )
}

const LIMITS: HttpLimits = HttpLimits {
    body_bytes: 4096,
    request_timeout: Duration::from_secs(5),
};

fn app(keys: &Keys) -> Router {
    router(state(keys), LIMITS, &[]).unwrap()
}

pub(crate) fn claims(scope: &str) -> Claims {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        iss: ISSUER.into(),
        aud: AUDIENCE.into(),
        sub: format!("user:{}", Uuid::new_v4()),
        tenant: Uuid::new_v4(),
        scope: scope.into(),
        iat: now,
        nbf: now,
        exp: now + 300,
        jti: Uuid::new_v4(),
    }
}

pub(crate) fn sign(keys: &Keys, c: &Claims) -> String {
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(key_id(&keys.public).unwrap());
    jsonwebtoken::encode(&h, c, &EncodingKey::from_ed_pem(&keys.private).unwrap()).unwrap()
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> Response {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    app.clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

async fn problem(response: Response) -> (StatusCode, serde_json::Value) {
    let status = response.status();
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json",
        "{status}"
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn forged_and_broken_tokens_get_401_from_a_real_route() {
    let good = keys();
    let app = app(&good);
    let kid = key_id(&good.public).unwrap();
    let c = claims("kpis:read tenant:admin");
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let body = b64(&serde_json::to_value(&c).unwrap());
    let mut forged = vec![(
        "none",
        format!(
            "{}.{body}.",
            b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid }))
        ),
    )];
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    forged.push((
        "hs256 with the public key",
        jsonwebtoken::encode(&hs, &c, &EncodingKey::from_secret(&good.public)).unwrap(),
    ));
    let other = keys();
    let mut h = Header::new(Algorithm::EdDSA);
    h.kid = Some(kid.clone());
    forged.push((
        "wrong key, our kid",
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_ed_pem(&other.private).unwrap()).unwrap(),
    ));
    forged.push(("unknown key", sign(&other, &c)));
    let now = c.iat;
    forged.push((
        "expired",
        sign(
            &good,
            &Claims {
                exp: now - 60,
                nbf: now - 120,
                ..c.clone()
            },
        ),
    ));
    forged.push((
        "not yet valid",
        sign(
            &good,
            &Claims {
                nbf: now + 120,
                ..c.clone()
            },
        ),
    ));
    forged.push((
        "wrong audience",
        sign(
            &good,
            &Claims {
                aud: "other".into(),
                ..c.clone()
            },
        ),
    ));
    forged.push((
        "wrong issuer",
        sign(
            &good,
            &Claims {
                iss: "evil".into(),
                ..c.clone()
            },
        ),
    ));
    let valid = sign(&good, &c);
    let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
    parts[1] = b64(&serde_json::to_value(Claims {
        tenant: Uuid::new_v4(),
        ..c.clone()
    })
    .unwrap());
    forged.push(("tampered claims", parts.join(".")));
    forged.push(("garbage", "not-a-jwt".to_owned()));
    for path in ["/v1/overview", "/v1/users", "/v1/audit-log"] {
        let (status, _) = problem(get(&app, path, None).await).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "no token on {path}");
        for (name, token) in &forged {
            let response = get(&app, path, Some(token)).await;
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let (status, body) = problem(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} on {path}");
            assert_eq!(body["type"], "https://beacon.dev/problems/unauthorized");
        }
    }
}

#[tokio::test]
async fn scopes_are_enforced_by_the_table() {
    let k = keys();
    let app = app(&k);
    let viewer = sign(&k, &claims("kpis:read"));
    let ingest = sign(&k, &claims("events:write"));
    for route in ROUTES
        .iter()
        .filter(|r| r.permission == ADMIN && r.method == "GET")
    {
        let path = route.path.replace("{id}", &Uuid::new_v4().to_string());
        let (status, _) = problem(get(&app, &path, Some(&viewer)).await).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "viewer on {path}");
    }
    for route in ROUTES.iter().filter(|r| r.permission == KPIS) {
        let path = route.path.replace("{id}", &Uuid::new_v4().to_string());
        let mut req = Request::builder().method(route.method).uri(&path);
        req = req.header("authorization", format!("Bearer {ingest}"));
        let response = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "events:write key on {path}");
        assert!(body["detail"].as_str().unwrap().contains("kpis:read"));
    }
}

#[tokio::test]
async fn errors_are_problems_and_headers_are_set() {
    let k = keys();
    let app = app(&k);
    let response = get(&app, "/v1/nope", None).await;
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(response.headers().contains_key("x-request-id"));
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    let (status, _) = problem(response).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Strict JSON: unknown fields, wrong types, wrong content type, oversize.
    let post = |body: &str, ct: &str| {
        Request::post("/v1/auth/token")
            .header("content-type", ct)
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    for (body, ct, want) in [
        (
            r#"{"grant_type":"password","username":"a","password":"b","admin":true}"#,
            "application/json",
            422,
        ),
        (r#"{"grant_type":"magic"}"#, "application/json", 422),
        ("{", "application/json", 400),
        (
            "grant_type=password",
            "application/x-www-form-urlencoded",
            415,
        ),
    ] {
        let response = app.clone().oneshot(post(body, ct)).await.unwrap();
        let (status, _) = problem(response).await;
        assert_eq!(status.as_u16(), want, "{body}");
    }
    let huge = format!(
        r#"{{"grant_type":"password","username":"{}","password":"x"}}"#,
        "a".repeat(10_000)
    );
    let (status, _) = problem(
        app.clone()
            .oneshot(post(&huge, "application/json"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    // The spec is public.
    let spec = get(&app, "/v1/openapi.json", None).await;
    assert_eq!(spec.status(), StatusCode::OK);
    // Bad queries of signed-in callers (page size, unknown fields, a bad id) are
    // checked in tests/e2e/session.rs: the deny-list look-up needs the database.
}

#[tokio::test]
async fn analytics_down_is_a_fast_503_not_a_hang() {
    let k = keys();
    let app = app(&k);
    let viewer = sign(&k, &claims("kpis:read"));
    let started = std::time::Instant::now();
    let (status, body) = problem(get(&app, "/v1/overview?currency=EUR", Some(&viewer)).await).await;
    assert!(
        status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
        "{status}"
    );
    assert!(body.get("detail").is_none(), "5xx carry no detail: {body}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn cors_is_off_unless_configured() {
    let k = keys();
    let app = router(state(&k), LIMITS, &["https://app.example".to_owned()]).unwrap();
    let preflight = |origin: &str| {
        Request::options("/v1/overview")
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .body(Body::empty())
            .unwrap()
    };
    let ok = app
        .clone()
        .oneshot(preflight("https://app.example"))
        .await
        .unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let evil = app
        .oneshot(preflight("https://evil.example"))
        .await
        .unwrap();
    assert!(evil.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn login_limits_apply_before_any_database_work() {
    let k = keys();
    let state = AppState {
        trusted_proxies: platform::client_addr::TrustedProxies::parse("10.0.0.1").unwrap(),
        ..state(&k)
    };
    let hashing = state.hashing.clone();
    let app = router(state, LIMITS, &[]).unwrap();
    let grant = |peer: &str, forwarded: &str, username: &str| {
        let peer: std::net::SocketAddr = format!("{peer}:4711").parse().unwrap();
        let body = json!({ "grant_type": "password", "username": username, "password": "x" });
        let request = Request::post("/v1/auth/token")
            .header("content-type", "application/json")
            .header("x-forwarded-for", forwarded)
            .extension(axum::extract::ConnectInfo(peer))
            .body(Body::from(body.to_string()))
            .unwrap();
        let app = app.clone();
        async move { problem(app.oneshot(request).await.unwrap()).await }
    };
    // Malformed usernames are refused without a look-up (there is no database) and
    // cost the address a failure; an untrusted caller's X-Forwarded-For is ignored.
    for i in 0..21 {
        let (status, _) = grant("192.0.2.1", &format!("198.51.100.{i}"), "not an address").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let (status, body) = grant("192.0.2.1", "198.51.100.99", "nobody@acme.example").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    // A trusted proxy's forwarded address is a key of its own.
    let (status, _) = grant("10.0.0.1", "198.51.100.1", "not an address").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Every verification permit taken: 503 with Retry-After at once, no look-up.
    let held: Vec<_> = std::iter::from_fn(|| hashing.try_acquire().ok()).collect();
    assert!(!held.is_empty());
    let response = app
        .clone()
        .oneshot(
            Request::post("/v1/auth/token")
                .header("content-type", "application/json")
                .extension(axum::extract::ConnectInfo(
                    "10.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
                ))
                .body(Body::from(
                    r#"{"grant_type":"password","username":"Someone@Acme.Example","password":"x"}"#,
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = problem(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["type"], "https://beacon.dev/problems/busy");
}

#[test]
fn the_openapi_document_takes_its_kpis_and_limits_from_domain() {
    let doc = serde_json::to_value(openapi()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let kpis: BTreeSet<&str> = schemas["Kpi"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let catalogue: BTreeSet<&str> = domain::CATALOGUE.iter().map(|d| d.key).collect();
    assert_eq!(kpis, catalogue);
    assert!(kpis.contains("cpm"));
    let fields = schemas["KpiTotals"]["properties"].as_object().unwrap();
    for d in domain::CATALOGUE {
        assert!(
            fields.contains_key(d.field),
            "{} missing from KpiTotals",
            d.field
        );
    }
    let threshold = doc["paths"]["/v1/kpis/anomalies"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "threshold")
        .unwrap()
        .clone();
    assert_eq!(
        threshold["schema"]["maximum"].as_f64(),
        Some(domain::AnomalyParams::MAX_THRESHOLD)
    );
    assert_eq!(
        threshold["schema"]["minimum"].as_f64(),
        Some(domain::AnomalyParams::MIN_THRESHOLD)
    );
}
