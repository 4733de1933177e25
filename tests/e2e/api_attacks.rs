//! Attacks on the public API through the real stack: tenant isolation for every route
//! of the route table, roles and scopes, revocation, throttling, audit trail, and a
//! dependency that is down.

use std::{collections::BTreeSet, time::Duration};

use beacon_e2e::Stack;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use xtask::seed::{DemoTenant, create_tenant, demo_tenants, generate_events, ingest_token, push};

const PASSWORD: &str = "attack-password-1";

async fn login(stack: &Stack, email: &str, password: &str) -> reqwest::Response {
    stack.sign_in(email, password).await
}

async fn token(stack: &Stack, email: &str) -> String {
    stack.login(email, PASSWORD).await
}

async fn call(
    stack: &Stack,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, String) {
    let mut req = stack
        .client
        .request(method, format!("{}{path}", stack.api_url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    (status, r.text().await.unwrap())
}

async fn ok(stack: &Stack, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
    let (status, text) = call(stack, method, path, token, body).await;
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Two tenants with users, ingest keys and events; tenant B's events use a campaign
/// name that must never show up for tenant A.
async fn two_tenants(stack: &Stack) -> ([DemoTenant; 2], [String; 2]) {
    let tenants = demo_tenants(PASSWORD);
    let mut owner = stack.owner().await;
    let now = OffsetDateTime::now_utc();
    let mut keys = Vec::new();
    let mut pushed = 0;
    for (i, t) in tenants.iter().enumerate() {
        let key = create_tenant(&mut owner, t).await.unwrap();
        let ingest = ingest_token(&stack.client, &stack.api_url, &key)
            .await
            .unwrap();
        let mut events = generate_events(40 + i as u64, 400, 20, t.currency, now);
        if i == 1 {
            for e in &mut events {
                e.campaign = "B-secret-campaign".to_owned();
                e.channel = "b-secret-channel".to_owned();
            }
        }
        push(&stack.client, &stack.ingest_url, &ingest, &events, 400)
            .await
            .unwrap();
        pushed += events.len() as i64;
        keys.push(key);
    }
    assert_eq!(stack.transform().await.events, pushed);
    (tenants, [keys[0].clone(), keys[1].clone()])
}

fn body_for(method: &str, path: &str, n: usize) -> Option<Value> {
    match (method, path) {
        ("POST", "/v1/campaigns") => Some(json!({ "name": format!("A campaign {n}") })),
        ("PATCH", "/v1/campaigns/{id}") => Some(json!({ "archived": true, "name": "hijacked" })),
        ("POST", "/v1/users") => Some(json!({
            "email": format!("new{n}@acme.example"), "display_name": "New", "role": "viewer"
        })),
        ("PATCH", "/v1/users/{id}") => Some(json!({ "role": "admin", "disabled": true })),
        ("POST", "/v1/api-keys") => {
            Some(json!({ "name": format!("k{n}"), "scopes": ["kpis:read"] }))
        }
        _ => None,
    }
}

#[sqlx::test(migrations = false)]
async fn tenant_a_cannot_see_or_touch_tenant_b_on_any_route(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let ([a, b], [a_ingest_key, _]) = two_tenants(&stack).await;

    // Tenant B's resources.
    let b_admin = token(&stack, &b.admin_email).await;
    let b_campaign = ok(
        &stack,
        Method::POST,
        "/v1/campaigns",
        &b_admin,
        Some(json!({ "name": "B-secret-campaign" })),
    )
    .await;
    let b_user = ok(
        &stack,
        Method::POST,
        "/v1/users",
        &b_admin,
        Some(json!({
            "email": "secret-user@globex.example", "display_name": "B secret user", "role": "viewer"
        })),
    )
    .await;
    let b_key = ok(
        &stack,
        Method::POST,
        "/v1/api-keys",
        &b_admin,
        Some(json!({ "name": "B secret key", "scopes": ["kpis:read"] })),
    )
    .await;
    let b_ids = [
        b_campaign["id"].as_str().unwrap().to_owned(),
        b_user["user"]["id"].as_str().unwrap().to_owned(),
        b_key["key"]["id"].as_str().unwrap().to_owned(),
    ];
    let b_secrets: Vec<String> = b_ids
        .iter()
        .cloned()
        .chain([
            b.id.to_string(),
            "B-secret-campaign".into(),
            "b-secret-channel".into(),
            "secret-user@globex.example".into(),
            b.admin_email.clone(),
            b.viewer_email.clone(),
            b_key["key"]["prefix"].as_str().unwrap().to_owned(),
        ])
        .collect();

    // Tenant A's credentials: a viewer, an admin, a kpis:read key, an events:write key.
    let a_viewer = token(&stack, &a.viewer_email).await;
    let a_admin = token(&stack, &a.admin_email).await;
    let a_kpi_key = ok(
        &stack,
        Method::POST,
        "/v1/api-keys",
        &a_admin,
        Some(json!({ "name": "A reader", "scopes": ["kpis:read"] })),
    )
    .await;
    let a_kpi_token = ingest_token(
        &stack.client,
        &stack.api_url,
        a_kpi_key["secret"].as_str().unwrap(),
    )
    .await
    .unwrap();
    let a_ingest_token = ingest_token(&stack.client, &stack.api_url, &a_ingest_key)
        .await
        .unwrap();
    let credentials = [
        ("viewer", a_viewer.as_str(), vec!["kpis:read"]),
        (
            "admin",
            a_admin.as_str(),
            vec!["kpis:read", "tenant:admin", "subjects:erase"],
        ),
        ("kpis:read key", a_kpi_token.as_str(), vec!["kpis:read"]),
        (
            "events:write key",
            a_ingest_token.as_str(),
            vec!["events:write"],
        ),
    ];

    let mut n = 0;
    let mut checked = BTreeSet::new();
    // Sign-out last: it revokes the token that calls it.
    let (sign_out, rest): (Vec<_>, Vec<_>) = api::routes::ROUTES
        .iter()
        .partition(|r| r.path == "/v1/auth/revoke");
    for route in rest.into_iter().chain(sign_out) {
        if route.permission == platform::access::PUBLIC {
            continue;
        }
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        for (who, token, scopes) in &credentials {
            let allowed = scopes.contains(&route.permission);
            let targets: Vec<String> = if route.path.contains("{id}") {
                b_ids
                    .iter()
                    .map(|id| route.path.replace("{id}", id))
                    .collect()
            } else {
                vec![route.path.to_owned()]
            };
            for path in targets {
                n += 1;
                let (status, text) = call(
                    &stack,
                    method.clone(),
                    &path,
                    token,
                    body_for(route.method, route.path, n),
                )
                .await;
                // The audit log echoes the paths A itself requested (with B's ids
                // in them): A's own input, not a leak. Everything else is checked.
                let text = if route.path == "/v1/audit-log" {
                    let mut v: Value = serde_json::from_str(&text).unwrap_or_default();
                    for e in v["entries"].as_array_mut().into_iter().flatten() {
                        e["details"]["path"] = Value::Null;
                    }
                    v.to_string()
                } else {
                    text
                };
                for secret in &b_secrets {
                    assert!(
                        !text.contains(secret.as_str()),
                        "{who} {} {path} leaked {secret}: {text}",
                        route.method
                    );
                }
                let expected = if !allowed {
                    StatusCode::FORBIDDEN
                } else if route.path.contains("{id}") {
                    StatusCode::NOT_FOUND
                } else {
                    status // lists and KPIs: success, checked for leaks above
                };
                assert_eq!(status, expected, "{who} {} {path}: {text}", route.method);
                if allowed && !route.path.contains("{id}") {
                    assert!(
                        status.is_success(),
                        "{who} {} {path}: {status} {text}",
                        route.method
                    );
                }
                checked.insert((route.method, route.path));
            }
        }
    }
    let protected = api::routes::ROUTES
        .iter()
        .filter(|r| r.permission != platform::access::PUBLIC)
        .count();
    assert_eq!(
        checked.len(),
        protected,
        "every protected route was attacked"
    );

    // A's users signed out at the end of the attack: sign in again.
    let a_viewer = token(&stack, &a.viewer_email).await;
    let a_admin = token(&stack, &a.admin_email).await;
    // B's resources are untouched.
    let campaign = ok(
        &stack,
        Method::GET,
        &format!("/v1/campaigns/{}", b_ids[0]),
        &b_admin,
        None,
    )
    .await;
    assert_eq!(
        (campaign["name"].as_str(), campaign["archived"].as_bool()),
        (Some("B-secret-campaign"), Some(false))
    );
    let user = ok(
        &stack,
        Method::GET,
        &format!("/v1/users/{}", b_ids[1]),
        &b_admin,
        None,
    )
    .await;
    assert_eq!(
        (user["role"].as_str(), user["disabled"].as_bool()),
        (Some("viewer"), Some(false))
    );
    assert!(
        ingest_token(
            &stack.client,
            &stack.api_url,
            b_key["secret"].as_str().unwrap()
        )
        .await
        .is_ok(),
        "B's key was not revoked by A"
    );
    // A's KPIs are A's own: A's campaigns appear, B's never do.
    let kpis = ok(
        &stack,
        Method::GET,
        "/v1/kpis/campaigns?sort=clicks&order=asc&page_size=2",
        &a_viewer,
        None,
    )
    .await;
    assert_eq!(kpis["campaigns"].as_array().unwrap().len(), 2);
    assert!(kpis["next_page_token"].is_string());
    // B's admin sees B's data; A's denials are in A's audit log, not B's.
    let b_kpis = ok(&stack, Method::GET, "/v1/kpis/channels", &b_admin, None).await;
    assert!(b_kpis.to_string().contains("b-secret-channel"));
    let a_log = ok(
        &stack,
        Method::GET,
        "/v1/audit-log?limit=100",
        &a_admin,
        None,
    )
    .await;
    assert!(
        a_log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "permission.denied")
    );
    let b_log = ok(
        &stack,
        Method::GET,
        "/v1/audit-log?limit=100",
        &b_admin,
        None,
    )
    .await;
    assert!(!b_log.to_string().contains(&a.id.to_string()));
    assert!(
        b_log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["action"] != "permission.denied")
    );
}

#[sqlx::test(migrations = false)]
async fn roles_scopes_revocation_and_the_audit_trail(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants(PASSWORD);
    let mut owner = stack.owner().await;
    let ingest_key = create_tenant(&mut owner, &tenants[0]).await.unwrap();
    let t = &tenants[0];
    let admin = token(&stack, &t.admin_email).await;
    let viewer = token(&stack, &t.viewer_email).await;

    // Viewer on admin routes → 403 (and the denial is audited with our request id).
    let r = stack
        .client
        .get(format!("{}/v1/users", stack.api_url))
        .bearer_auth(&viewer)
        .header("x-request-id", "attack-viewer-users")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-request-id"], "attack-viewer-users");
    // events:write key on KPI routes → 403.
    let ingest = ingest_token(&stack.client, &stack.api_url, &ingest_key)
        .await
        .unwrap();
    for path in [
        "/v1/overview",
        "/v1/kpis/campaigns",
        "/v1/kpis/timeseries",
        "/v1/kpis/channels",
        "/v1/kpis/attribution",
        "/v1/kpis/anomalies",
        "/v1/campaigns",
    ] {
        assert_eq!(
            call(&stack, Method::GET, path, &ingest, None).await.0,
            403,
            "{path}"
        );
    }

    // A key works until it is revoked, then fails at once; listed by prefix, secret never again.
    let created = ok(
        &stack,
        Method::POST,
        "/v1/api-keys",
        &admin,
        Some(json!({ "name": "to revoke", "scopes": ["events:write", "kpis:read"] })),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["key"]["id"].as_str().unwrap().to_owned();
    let prefix = created["key"]["prefix"].as_str().unwrap().to_owned();
    assert!(
        ingest_token(&stack.client, &stack.api_url, &secret)
            .await
            .is_ok()
    );
    let listed = ok(
        &stack,
        Method::GET,
        &format!("/v1/api-keys?prefix={}", &prefix[..6]),
        &admin,
        None,
    )
    .await;
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(
        !listed.to_string().contains(&secret[16..]),
        "the secret is shown once only"
    );
    assert_eq!(
        call(
            &stack,
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            &admin,
            None
        )
        .await
        .0,
        204
    );
    let r = stack
        .client
        .post(format!("{}/v1/auth/token", stack.api_url))
        .json(&json!({ "grant_type": "client_credentials", "client_secret": secret }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let key = ok(
        &stack,
        Method::GET,
        &format!("/v1/api-keys/{id}"),
        &admin,
        None,
    )
    .await;
    assert!(key["revoked_at"].is_string());

    // Role change and disabling take effect at the next token exchange.
    let users = ok(&stack, Method::GET, "/v1/users", &admin, None).await;
    let viewer_id = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == t.viewer_email.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    ok(
        &stack,
        Method::PATCH,
        &format!("/v1/users/{viewer_id}"),
        &admin,
        Some(json!({ "role": "admin" })),
    )
    .await;
    let promoted = login(&stack, &t.viewer_email, PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert!(promoted["scope"].as_str().unwrap().contains("tenant:admin"));
    ok(
        &stack,
        Method::PATCH,
        &format!("/v1/users/{viewer_id}"),
        &admin,
        Some(json!({ "disabled": true })),
    )
    .await;
    assert_eq!(login(&stack, &t.viewer_email, PASSWORD).await.status(), 401);
    // Admins cannot lock themselves out.
    let me = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["email"] == t.admin_email.as_str())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(
            &stack,
            Method::PATCH,
            &format!("/v1/users/{me}"),
            &admin,
            Some(json!({ "disabled": true }))
        )
        .await
        .0,
        409
    );
    // A new user gets a one-time initial password that works.
    let invited = ok(
        &stack,
        Method::POST,
        "/v1/users",
        &admin,
        Some(json!({
            "email": "Invited@Acme.example", "display_name": "Invited", "role": "viewer"
        })),
    )
    .await;
    assert_eq!(invited["user"]["email"], "invited@acme.example");
    let initial = invited["initial_password"].as_str().unwrap();
    assert_eq!(
        login(&stack, "invited@acme.example", initial)
            .await
            .status(),
        200
    );
    assert_eq!(
        call(
            &stack,
            Method::POST,
            "/v1/users",
            &admin,
            Some(json!({
                "email": "invited@acme.example", "display_name": "Again", "role": "viewer"
            }))
        )
        .await
        .0,
        409
    );
    // Wrong password, audited.
    assert_eq!(login(&stack, &t.admin_email, "wrong").await.status(), 401);

    // The audit trail has every kind of event, with actor, address and request id.
    let log = ok(&stack, Method::GET, "/v1/audit-log?limit=100", &admin, None).await;
    let entries = log["entries"].as_array().unwrap();
    let has = |action: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["outcome"] == outcome)
    };
    for (action, outcome) in [
        ("login", "success"),
        ("login", "failure"),
        ("token.issued", "success"),
        ("api_key.created", "success"),
        ("api_key.revoked", "success"),
        ("user.role_changed", "success"),
        ("user.disabled", "success"),
        ("user.created", "success"),
        ("permission.denied", "denied"),
    ] {
        assert!(has(action, outcome), "no {action}/{outcome} in {log}");
    }
    let denial = entries
        .iter()
        .find(|e| e["request_id"] == "attack-viewer-users")
        .expect("denial with request id");
    assert_eq!(denial["action"], "permission.denied");
    assert_eq!(denial["client_addr"], "127.0.0.1");
    assert!(denial["actor"].as_str().unwrap().starts_with("user:"));
    assert!(entries.iter().all(|e| e["request_id"].is_string()));
    // Viewers cannot read it.
    let viewer2 = ok(
        &stack,
        Method::POST,
        "/v1/users",
        &admin,
        Some(json!({
            "email": "viewer2@acme.example", "display_name": "V2", "role": "viewer"
        })),
    )
    .await;
    let v2 = login(
        &stack,
        "viewer2@acme.example",
        viewer2["initial_password"].as_str().unwrap(),
    )
    .await
    .json::<Value>()
    .await
    .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        call(&stack, Method::GET, "/v1/audit-log", &v2, None)
            .await
            .0,
        403
    );
}

#[sqlx::test(migrations = false)]
async fn logins_are_throttled_per_account_and_per_address(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants(PASSWORD);
    let mut owner = stack.owner().await;
    create_tenant(&mut owner, &tenants[0]).await.unwrap();
    let t = &tenants[0];
    for _ in 0..5 {
        assert_eq!(login(&stack, &t.admin_email, "guess").await.status(), 401);
    }
    // The sixth failure imposes a wait; after it, even the right password waits.
    assert_eq!(login(&stack, &t.admin_email, "guess").await.status(), 401);
    let r = login(&stack, &t.admin_email, PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    // Another account from the same address is not blocked yet…
    assert_eq!(login(&stack, &t.viewer_email, PASSWORD).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100 * retry)).await;
    assert_eq!(
        login(&stack, &t.admin_email, PASSWORD).await.status(),
        200,
        "after the wait"
    );
    // …but spraying many accounts from one address is.
    let mut throttled_after = None;
    for i in 0..40 {
        let r = login(&stack, &format!("nobody{i}@acme.example"), "guess").await;
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            throttled_after = Some(i);
            break;
        }
        assert_eq!(r.status(), 401);
    }
    assert!(throttled_after.is_some(), "address throttle never engaged");
}

#[sqlx::test(migrations = false)]
async fn analytics_down_or_silent_is_503_or_504_and_not_ready(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants(PASSWORD);
    let mut owner = stack.owner().await;
    create_tenant(&mut owner, &tenants[0]).await.unwrap();
    let viewer = token(&stack, &tenants[0].viewer_email).await;

    // Down: nothing listens. Silent: accepts connections and never answers.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    for addr in [closed, silent_addr] {
        let api = api::App::build(stack.api_config(addr.to_string()))
            .await
            .unwrap();
        let (url, admin_port) = (format!("http://127.0.0.1:{}", api.port()), api.admin_port());
        tokio::spawn(api.run_until_stopped(stack.shutdown.clone()));
        let started = std::time::Instant::now();
        let r = stack
            .client
            .get(format!("{url}/v1/overview"))
            .bearer_auth(&viewer)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert!(status == 503 || status == 504, "{addr}: {status}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await.unwrap();
        assert!(body.get("detail").is_none(), "no internals: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{addr}: took {:?}",
            started.elapsed()
        );
        let ready = stack
            .client
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 503);
        let ready: Value = ready.json().await.unwrap();
        assert_eq!(ready["checks"]["analytics"], false);
    }
}

#[sqlx::test(migrations = false)]
async fn the_served_openapi_document_has_every_route(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let doc: Value = stack
        .client
        .get(format!("{}/v1/openapi.json", stack.api_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for route in api::routes::ROUTES {
        assert!(
            doc["paths"][route.path][route.method.to_lowercase()].is_object(),
            "{} {} missing from /v1/openapi.json",
            route.method,
            route.path
        );
    }
}
