use std::collections::HashMap;

use beacon_e2e::Stack;
use domain::{Event, EventType};
use serde_json::Value;
use sqlx::PgPool;
use time::{Duration, OffsetDateTime};
use xtask::seed::{DemoTenant, create_tenant, demo_tenants, generate_events, ingest_token, push};

/// Totals computed straight from the generated events, independently of the product.
#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend: i64,
    revenue: i64,
}

fn expected(events: &[Event], from: time::Date, to: time::Date) -> Expected {
    let mut e = Expected::default();
    for ev in events
        .iter()
        .filter(|ev| (from..=to).contains(&ev.occurred_at.date()))
    {
        match ev.event_type {
            EventType::Impression => e.impressions += 1,
            EventType::Click => e.clicks += 1,
            EventType::Conversion => e.conversions += 1,
            EventType::Spend => {}
        }
        e.spend += ev.cost_micros;
        e.revenue += ev.revenue_micros;
    }
    e
}

fn totals(v: &Value) -> Expected {
    let i = |k: &str| v[k].as_i64().unwrap_or(-1);
    Expected {
        impressions: i("impressions"),
        clicks: i("clicks"),
        conversions: i("conversions"),
        spend: i("spend_micros"),
        revenue: i("revenue_micros"),
    }
}

fn cookie_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
}

/// Signs in through the dashboard's form and returns the overview page's HTML.
async fn dashboard_overview(stack: &Stack, email: &str, password: &str) -> String {
    let page = stack
        .client
        .get(format!("{}/login", stack.dashboard_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("default-src 'self'")
            && csp.contains("frame-ancestors 'none'")
            && !csp.contains("unsafe-inline")
    );
    let nonce = cookie_of(&page, "__Host-beacon_csrf").expect("csrf nonce cookie");
    let html = page.text().await.unwrap();
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("form carries a CSRF token")
        + 19;
    let csrf = html[at..].split('"').next().unwrap().to_owned();
    assert_ne!(
        csrf, nonce,
        "the token is bound to the session, not the cookie echoed"
    );

    // Without the CSRF cookie the form is refused.
    let forged = stack
        .client
        .post(format!("{}/login", stack.dashboard_url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    let signed_in = stack
        .client
        .post(format!("{}/login", stack.dashboard_url))
        .header("cookie", format!("__Host-beacon_csrf={nonce}"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let set_cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.starts_with("__Host-")
            && set_cookie.contains("HttpOnly")
            && set_cookie.contains("SameSite=Strict")
            && set_cookie.contains("Secure")
            && set_cookie.contains("Path=/")
            && !set_cookie.contains("Domain"),
        "{set_cookie}"
    );
    let session = cookie_of(&signed_in, "__Host-beacon_session").expect("session cookie");
    let overview = stack
        .client
        .get(format!("{}/overview", stack.dashboard_url))
        .header(
            "cookie",
            format!("__Host-beacon_session={session}; __Host-beacon_csrf={nonce}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    overview.text().await.unwrap()
}

async fn seed(stack: &Stack, tenants: &[DemoTenant], now: OffsetDateTime) -> Vec<Vec<Event>> {
    let mut all = Vec::new();
    for (events, token) in stack.seed(tenants, &[1_500, 2_200], now).await.unwrap() {
        // Re-sending is harmless: every event is a duplicate, nothing is stored twice.
        let (accepted, duplicates) = push(
            &stack.client,
            &stack.ingest_url,
            &token,
            &events[..400],
            400,
        )
        .await
        .unwrap();
        assert_eq!((accepted, duplicates), (0, 400));
        all.push(events);
    }
    all
}

#[sqlx::test(migrations = false)]
async fn overview_flows_from_ingest_to_dashboard_and_tenants_stay_apart(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants("e2e-password-1");
    let now = OffsetDateTime::now_utc();
    let events = seed(&stack, &tenants, now).await;

    let total = events.iter().map(Vec::len).sum::<usize>();
    let stats = stack.transform().await;
    assert_eq!(stats.events as usize, total);
    assert_eq!(
        stack.transform().await.events,
        0,
        "a second run finds nothing new"
    );

    let today = now.date();
    let from = today - Duration::days(29);
    let prev_from = from - Duration::days(30);
    let mut seen = HashMap::new();
    for (t, events) in tenants.iter().zip(&events) {
        let want_current = expected(events, from, today);
        let want_previous = expected(events, prev_from, from - Duration::days(1));
        for email in [&t.admin_email, &t.viewer_email] {
            let token = stack.login(email, &t.password).await;
            let r = stack
                .client
                .get(format!("{}/v1/overview", stack.api_url))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["currency"], t.currency);
            assert_eq!(
                totals(&body["current"]),
                want_current,
                "{email} current period"
            );
            assert_eq!(
                totals(&body["previous"]),
                want_previous,
                "{email} previous period"
            );
        }
        // The dashboard shows the same numbers, through api and analytics.
        let html = dashboard_overview(&stack, &t.viewer_email, &t.password).await;
        for (kpi, value) in [
            (
                "impressions",
                dashboard::format_count(want_current.impressions),
            ),
            ("clicks", dashboard::format_count(want_current.clicks)),
            (
                "conversions",
                dashboard::format_count(want_current.conversions),
            ),
            (
                "spend",
                dashboard::format_money(want_current.spend, t.currency),
            ),
            (
                "revenue",
                dashboard::format_money(want_current.revenue, t.currency),
            ),
        ] {
            let tile = html
                .split(&format!("data-kpi=\"{kpi}\""))
                .nth(1)
                .unwrap_or_else(|| panic!("no {kpi} tile"));
            let shown = tile
                .split("class=\"value\">")
                .nth(1)
                .and_then(|s| s.split('<').next())
                .unwrap();
            assert_eq!(shown, value, "{} {kpi}", t.name);
        }
        seen.insert(t.slug, want_current);
    }
    // The two tenants' figures differ, so a leak would show.
    assert_ne!(seen["acme"], seen["globex"]);
}

#[sqlx::test(migrations = false)]
async fn bad_input_is_refused_and_nothing_is_half_written(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants("e2e-password-2");
    let mut owner = stack.owner().await;
    let key = create_tenant(&mut owner, &tenants[0]).await.unwrap();
    let token = ingest_token(&stack.client, &stack.api_url, &key)
        .await
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let events = generate_events(99, 3, 5, "EUR", now);
    let url = format!("{}/v1/events", stack.ingest_url);
    let post = |auth: Option<String>, body: String| {
        let mut r = stack
            .client
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .body(body);
        if let Some(a) = auth {
            r = r.header("authorization", a);
        }
        r.send()
    };

    // No token, a garbage token, a token of the wrong scope: 401/403, problem+json.
    for auth in [None, Some("Bearer not-a-jwt".to_owned())] {
        let r = post(auth, domain::to_ndjson(&events)).await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    let user_token = stack
        .login(&tenants[0].admin_email, &tenants[0].password)
        .await;
    let r = post(
        Some(format!("Bearer {user_token}")),
        domain::to_ndjson(&events),
    )
    .await
    .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a dashboard user's token cannot write events"
    );

    // One malformed line: 400 naming line and field, and nothing of the batch stored.
    let mut body = domain::to_ndjson(&events);
    body.push_str(r#"{"event_id":"x","type":"click","occurred_at":"yesterday","campaign":"c","channel":"search","currency":"EUR"}"#);
    let r = post(Some(format!("Bearer {token}")), body).await.unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["errors"]["lines"][0]["line"], 4);
    assert_eq!(problem["errors"]["lines"][0]["field"], "occurred_at");

    // A tenant field in the payload is refused: the tenant comes from the token.
    let sneaky = domain::to_ndjson(&events[..1]).replace(
        "{\"event_id\"",
        "{\"tenant_id\":\"00000000-0000-0000-0000-000000000000\",\"event_id\"",
    );
    let r = post(Some(format!("Bearer {token}")), sneaky).await.unwrap();
    assert_eq!(r.status(), 400);

    // Too large: 413 problem+json.
    let r = post(Some(format!("Bearer {token}")), "x".repeat(2 * 1024 * 1024))
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.events")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(stored, 0, "refused batches stored nothing");

    // The loader is not reachable except on loopback, and refuses to bind elsewhere.
    let err = pipeline::loader::App::build(
        pipeline::loader::Config {
            listen: "0.0.0.0:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            db: stack.db("beacon_loader"),
            request_timeout: std::time::Duration::from_secs(1),
            limits: domain::Limits::default(),
        },
        std::sync::Arc::new(
            platform::auth::TokenVerifier::from_public_pems(&[std::fs::read(
                stack.cert("jwt-public.pem"),
            )
            .unwrap()])
            .unwrap(),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err}");

    // A wrong password and an unknown user get the same answer.
    for (user, pw) in [
        (tenants[0].admin_email.as_str(), "wrong"),
        ("nobody@example.com", "wrong"),
    ] {
        let r = stack.sign_in(user, pw).await;
        assert_eq!(r.status(), 401);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["type"],
            "https://beacon.dev/problems/invalid-credentials"
        );
    }
}

/// The loader re-verifies everything itself: a request sent straight to its port, past
/// ingest, without a token, with a token lacking `events:write`, an expired one, one
/// signed by another key, or tenant A's token with a tenant field for B, is refused and
/// stores nothing. The same batch with A's valid token is stored, for A.
#[sqlx::test(migrations = false)]
async fn the_loader_trusts_nothing_ingest_says(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    let now = OffsetDateTime::now_utc();
    let events = generate_events(3, 5, 2, "EUR", now);
    let batch = domain::to_ndjson(&events);
    let loader = format!("http://127.0.0.1:{}/v1/batches", stack.loader_port);
    let post = |token: Option<String>, body: String| {
        let mut r = stack
            .client
            .post(&loader)
            .header("content-type", "application/x-ndjson")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let valid = stack.sign_token(a, "events:write", Duration::minutes(5));
    let other_key = {
        let dir = tempfile::tempdir().unwrap();
        xtask::certs::generate(dir.path()).unwrap();
        let signer = api::credentials::TokenSigner::new(
            &std::fs::read(dir.path().join("jwt-signing.key")).unwrap(),
            &std::fs::read(dir.path().join("jwt-public.pem")).unwrap(),
            Duration::minutes(5),
        )
        .unwrap();
        signer.sign("key:x".into(), a, "events:write").unwrap().0
    };
    let sneaky = batch.replace(
        "{\"event_id\"",
        &format!("{{\"tenant_id\":\"{b}\",\"event_id\""),
    );
    assert_ne!(sneaky, batch);
    for (what, token, body, status) in [
        ("no token", None, batch.clone(), 401),
        (
            "garbage token",
            Some("x.y.z".to_owned()),
            batch.clone(),
            401,
        ),
        (
            "kpis:read only",
            Some(stack.sign_token(a, "kpis:read", Duration::minutes(5))),
            batch.clone(),
            403,
        ),
        (
            "tenant admin only",
            Some(stack.sign_token(a, "tenant:admin kpis:read", Duration::minutes(5))),
            batch.clone(),
            403,
        ),
        (
            "expired",
            Some(stack.sign_token(a, "events:write", Duration::minutes(-5))),
            batch.clone(),
            401,
        ),
        ("another signing key", Some(other_key), batch.clone(), 401),
        (
            "A's token, B in the payload",
            Some(valid.clone()),
            sneaky,
            400,
        ),
    ] {
        let r = post(token, body).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{what}");
    }
    let mut owner = stack.owner().await;
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.events")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(stored, 0, "a refused request stored events");
    let r = post(Some(valid), batch).await.unwrap();
    assert_eq!(r.status(), 200);
    let tenants: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT tenant_id, count(*) FROM raw.events GROUP BY 1")
            .fetch_all(&mut owner)
            .await
            .unwrap();
    assert_eq!(tenants, vec![(a, events.len() as i64)]);
}

#[sqlx::test(migrations = false)]
async fn health_and_readiness_are_on_the_admin_ports(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    for (name, port) in &stack.admin_ports {
        for path in ["/healthz", "/readyz", "/metrics"] {
            let r = stack
                .client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{name} {path}");
        }
    }
    // Not on the public ports, whatever the path. The loader's data port (loopback
    // only, inside the pod) answers `/healthz` with "ok" and nothing else: it is how
    // ingest's readiness knows its loader is up (docs/SECURITY.md §6).
    let loader_url = format!("http://127.0.0.1:{}", stack.loader_port);
    for url in [
        &stack.api_url,
        &stack.ingest_url,
        &stack.dashboard_url,
        &loader_url,
    ] {
        for path in [
            "/metrics",
            "/readyz",
            "/healthz",
            "/metrics/",
            "/v1/metrics",
        ] {
            let r = stack
                .client
                .get(format!("{url}{path}"))
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            if url == &loader_url && path == "/healthz" {
                assert_eq!((status.as_u16(), body.as_str()), (200, "ok"), "{url}{path}");
                continue;
            }
            assert!(
                status == 404 || status == 405,
                "{url}{path} answered {status}: {body}"
            );
            assert!(
                !body.contains("# TYPE") && !body.contains("http_request"),
                "{url}{path} leaks metrics"
            );
        }
    }
}

/// `Cache-Control: no-store` (nothing an api or dashboard answer holds may be cached:
/// tokens, tenant numbers, CSRF tokens) and `Referrer-Policy: no-referrer` on the api
/// and dashboard, for success, redirect and error answers.
#[sqlx::test(migrations = false)]
async fn api_and_dashboard_answers_are_never_cached_nor_leak_referrers(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let requests = [
        stack.client.get(format!("{}/v1/openapi.json", stack.api_url)),
        stack.client.get(format!("{}/v1/overview", stack.api_url)),
        stack.client.get(format!("{}/v1/nowhere", stack.api_url)),
        stack
            .client
            .post(format!("{}/v1/auth/token", stack.api_url))
            .json(&serde_json::json!({ "grant_type": "password", "username": "nobody@x.test", "password": "x" })),
        stack.client.get(format!("{}/login", stack.dashboard_url)),
        stack.client.get(format!("{}/", stack.dashboard_url)),
        stack.client.get(format!("{}/overview", stack.dashboard_url)),
        stack.client.get(format!("{}/nowhere", stack.dashboard_url)),
    ];
    for request in requests {
        let r = request.send().await.unwrap();
        let what = format!("{} {}", r.url(), r.status());
        let header = |name: &str| {
            r.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(
            header("cache-control").as_deref(),
            Some("no-store"),
            "{what}"
        );
        assert_eq!(
            header("referrer-policy").as_deref(),
            Some("no-referrer"),
            "{what}"
        );
        assert_eq!(
            header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{what}"
        );
    }
}
