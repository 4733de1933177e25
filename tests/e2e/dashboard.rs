//! The dashboard, page by page, for both roles (HTTP), and in a real headless Chromium:
//! the numbers shown equal the API's, every chart's SVG is there, the browser reports
//! no Content-Security-Policy violation, a hostile campaign name runs nothing, and a
//! screenshot of every page lands in <target dir>/tmp/screenshots/.

use std::{path::PathBuf, time::Duration};

use beacon_e2e::Stack;
use domain::{Event, EventType};
use fantoccini::{ClientBuilder, Locator};
use serde_json::{Value, json};
use sqlx::PgPool;
use time::OffsetDateTime;
use xtask::seed::{DemoTenant, demo_tenants};

const XSS: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";
const PAGES: [&str; 4] = [
    "/overview",
    "/campaigns",
    "/channels",
    "/campaign?name=Brand+Search",
];
const ADMIN_PAGES: [&str; 3] = ["/admin/users", "/admin/api-keys", "/admin/audit"];

/// Two tenants with events, one campaign with a hostile name, transformed.
async fn stack_with_data(admin: PgPool, password: &str) -> (Stack, [DemoTenant; 2]) {
    let stack = Stack::start(admin).await.unwrap();
    let tenants = demo_tenants(password);
    let now = OffsetDateTime::now_utc();
    let seeded = stack.seed(&tenants, &[2_000, 900], now).await.unwrap();
    let hostile: Vec<Event> = (0..60)
        .map(|i| Event {
            event_id: format!("xss-{i}"),
            campaign: XSS.to_owned(),
            event_type: if i % 3 == 0 {
                EventType::Click
            } else {
                EventType::Impression
            },
            ..seeded[0].0[i].clone()
        })
        .collect();
    xtask::seed::push(
        &stack.client,
        &stack.ingest_url,
        &seeded[0].1,
        &hostile,
        100,
    )
    .await
    .unwrap();
    stack.transform().await;
    (stack, tenants)
}

/// Signs in through the form; returns the cookie header for later requests.
async fn sign_in(stack: &Stack, email: &str, password: &str) -> String {
    let page = stack
        .client
        .get(format!("{}/login", stack.dashboard_url))
        .send()
        .await
        .unwrap();
    let nonce = cookie(&page, "__Host-beacon_csrf").unwrap();
    let csrf = form_token(&page.text().await.unwrap());
    let r = stack
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
    assert_eq!(r.status(), 303, "sign in as {email}");
    format!(
        "__Host-beacon_csrf={nonce}; __Host-beacon_session={}",
        cookie(&r, "__Host-beacon_session").unwrap()
    )
}

/// The CSRF token a page's forms carry (bound to the session, not the cookie's value).
fn form_token(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

/// The CSRF token of the forms of `path` for this session.
async fn page_token(stack: &Stack, cookies: &str, path: &str) -> String {
    let (status, html) = get(stack, cookies, path).await;
    assert_eq!(status, 200, "{path}");
    form_token(&html)
}

fn cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|v| v.split(';').next().unwrap_or("").to_owned())
        })
}

async fn get(stack: &Stack, cookies: &str, path: &str) -> (u16, String) {
    let r = stack
        .client
        .get(format!("{}{path}", stack.dashboard_url))
        .header("cookie", cookies)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let csp = r
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && !csp.contains("unsafe"),
        "{path}: {csp}"
    );
    (status, r.text().await.unwrap())
}

#[sqlx::test(migrations = false)]
async fn every_page_for_both_roles_and_admin_pages_only_for_admins(admin: PgPool) {
    let (stack, tenants) = stack_with_data(admin, "dash-routes-1").await;
    let t = &tenants[0];
    let viewer = sign_in(&stack, &t.viewer_email, &t.password).await;
    let admin = sign_in(&stack, &t.admin_email, &t.password).await;

    for path in PAGES {
        for (who, cookies) in [("viewer", &viewer), ("admin", &admin)] {
            let (status, html) = get(&stack, cookies, path).await;
            assert_eq!(status, 200, "{who} {path}: {html}");
            assert!(
                html.contains("<svg") || path == "/campaigns",
                "{who} {path} has its charts"
            );
            // Navigation offers admin pages to admins only.
            assert_eq!(
                html.contains("href=\"/admin/users\""),
                who == "admin",
                "{who} {path} navigation"
            );
            assert!(
                !html.contains("<script"),
                "{who} {path}: no script on any page"
            );
        }
    }
    for path in ADMIN_PAGES {
        let (status, html) = get(&stack, &admin, path).await;
        assert_eq!(status, 200, "admin {path}");
        assert!(html.contains("<table"), "admin {path}");
        // A viewer who types the URL gets the "Not allowed" page, from the API's 403.
        let (status, html) = get(&stack, &viewer, path).await;
        assert_eq!(status, 403, "viewer {path}");
        assert!(
            html.contains("Not allowed") && !html.contains("<table"),
            "viewer {path}"
        );
    }
    // Without a session every page sends the browser to the login page.
    for path in PAGES.iter().chain(&ADMIN_PAGES) {
        let r = stack
            .client
            .get(format!("{}{path}", stack.dashboard_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()["location"], "/login");
    }
    // A form posted without the CSRF cookie is refused.
    let session_only = admin
        .split("; ")
        .find(|c| c.starts_with("__Host-beacon_session="))
        .unwrap()
        .to_owned();
    let r = stack
        .client
        .post(format!("{}/admin/api-keys", stack.dashboard_url))
        .header("cookie", &session_only)
        .form(&[("csrf", "guess"), ("name", "x"), ("events_write", "on")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // An admin creates a key through the form: the secret is shown once, then only its prefix.
    let csrf = page_token(&stack, &admin, "/admin/api-keys").await;
    let r = stack
        .client
        .post(format!("{}/admin/api-keys", stack.dashboard_url))
        .header("cookie", &admin)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "dashboard test key"),
            ("kpis_read", "on"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let secret = html
        .split("<code id=\"new-secret\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap()
        .to_owned();
    assert!(secret.starts_with("bk_"));
    let (_, again) = get(&stack, &admin, "/admin/api-keys").await;
    assert!(!again.contains(&secret), "the secret is never shown again");
    assert!(again.contains("dashboard test key"));
    // Each key shows when it was last used: the new one never, the seeded ingest key
    // (traded for a token when the stack was seeded) at a minute of today.
    let row = |prefix: &str| {
        let at = again
            .find(&format!("data-key=\"{prefix}\""))
            .expect("key row");
        again[at..].split("</tr>").next().unwrap().to_owned()
    };
    let new_prefix = secret.split('_').nth(1).unwrap();
    assert!(
        row(new_prefix).contains("<td>never</td>"),
        "{}",
        row(new_prefix)
    );
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        again.contains("Last used") && again.contains(&format!("<td>{today} ")),
        "{again}"
    );

    // The API down: a friendly page with the request id, and /readyz false.
    stack.shutdown.trigger();
}

/// The browser, its driver and a place for screenshots. Skips (loudly) only when
/// chromedriver is absent and BEACON_REQUIRE_BROWSER is not set; .ci/run sets it.
fn chromedriver() -> Option<String> {
    let path = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
    if std::path::Path::new(&path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("BEACON_REQUIRE_BROWSER").is_none(),
        "BEACON_REQUIRE_BROWSER is set but {path} is missing: apt-get install chromium chromium-driver"
    );
    eprintln!(
        "SKIPPED browser test: no chromedriver at {path} (apt-get install chromium chromium-driver)"
    );
    None
}

fn screenshots() -> PathBuf {
    // Inside the target directory cargo uses, wherever CARGO_TARGET_DIR puts it.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn csp_violations(stack: &Stack) -> u64 {
    let port = stack
        .admin_ports
        .iter()
        .find(|(n, _)| *n == "dashboard")
        .unwrap()
        .1;
    let metrics = beacon_e2e::scrape::scrape(&stack.client, port)
        .await
        .unwrap();
    metrics
        .family("dashboard_csp_violations_total")
        .map_or(0.0, |f| f.samples.iter().map(|s| s.value).sum()) as u64
}

struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[sqlx::test(migrations = false)]
async fn a_real_browser_sees_the_apis_numbers_under_a_strict_policy(admin: PgPool) {
    let Some(driver_path) = chromedriver() else {
        return;
    };
    let (stack, tenants) = stack_with_data(admin, "dash-browser-1").await;
    let t = &tenants[0];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _driver = Driver(
        std::process::Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver"),
    );
    let profile = tempfile::tempdir().unwrap();
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let mut client = None;
    for _ in 0..50 {
        match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let c = client.expect("a WebDriver session");
    let shots = screenshots();
    let shot = |name: &str| {
        let (c, path) = (c.clone(), shots.join(format!("{name}.png")));
        async move { std::fs::write(path, c.screenshot().await.unwrap()).unwrap() }
    };
    let base = stack.dashboard_url.clone();
    let violations_before = csp_violations(&stack).await;

    // Sign in through the real form.
    c.goto(&format!("{base}/login")).await.unwrap();
    shot("login").await;
    let form = c.form(Locator::Css("form[action='/login']")).await.unwrap();
    form.set_by_name("email", &t.admin_email).await.unwrap();
    form.set_by_name("password", &t.password).await.unwrap();
    form.submit().await.unwrap();
    // The click can return before its navigation (a password check) ends on a loaded
    // machine: wait for the page, boundedly.
    let mut url = String::new();
    for _ in 0..150 {
        url = c.current_url().await.unwrap().to_string();
        if url.ends_with("/overview") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        url.ends_with("/overview"),
        "signed in, the browser is at {url}"
    );

    // Overview: the tiles show exactly the API's numbers for the same user.
    let token = stack.login(&t.admin_email, &t.password).await;
    let api = |path: &'static str| stack.get_json(&token, path);
    let overview = api("/v1/overview").await;
    let text = |sel: String| {
        let c = c.clone();
        async move {
            c.find(Locator::Css(&sel))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let cur = &overview["current"];
    for (kpi, want) in [
        (
            "impressions",
            dashboard::format_count(cur["impressions"].as_i64().unwrap()),
        ),
        (
            "clicks",
            dashboard::format_count(cur["clicks"].as_i64().unwrap()),
        ),
        (
            "conversions",
            dashboard::format_count(cur["conversions"].as_i64().unwrap()),
        ),
        (
            "spend",
            dashboard::format_money(cur["spend_micros"].as_i64().unwrap(), "EUR"),
        ),
        (
            "revenue",
            dashboard::format_money(cur["revenue_micros"].as_i64().unwrap(), "EUR"),
        ),
    ] {
        assert_eq!(
            text(format!("[data-kpi='{kpi}'] .value")).await,
            want,
            "overview {kpi}"
        );
    }
    for chart in ["spend", "clicks", "conversions", "revenue"] {
        let svg = c
            .find(Locator::Css(&format!(
                "figure[data-chart='{chart}'] svg.chart"
            )))
            .await
            .unwrap();
        assert!(
            svg.attr("role").await.unwrap().as_deref() == Some("img"),
            "{chart} chart"
        );
    }
    shot("overview").await;

    // Campaigns: the table equals the API's page, the hostile name is inert text.
    c.goto(&format!("{base}/campaigns")).await.unwrap();
    let campaigns = api("/v1/kpis/campaigns").await;
    let rows = c
        .find_all(Locator::Css("#campaigns tbody tr[data-campaign]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), campaigns["campaigns"].as_array().unwrap().len());
    for (row, want) in rows.iter().zip(campaigns["campaigns"].as_array().unwrap()) {
        assert_eq!(
            row.attr("data-campaign").await.unwrap().as_deref(),
            want["campaign"].as_str()
        );
        let cells = row.find_all(Locator::Css("td")).await.unwrap();
        let spend = cells[5].text().await.unwrap();
        assert_eq!(
            spend,
            dashboard::format_money(want["totals"]["spend_micros"].as_i64().unwrap(), "EUR")
        );
    }
    // The columns are the KPI catalogue's, CPM included.
    let mut headings = Vec::new();
    for th in c
        .find_all(Locator::Css("#campaigns thead th"))
        .await
        .unwrap()
    {
        headings.push(th.text().await.unwrap());
    }
    assert_eq!(headings.len(), domain::CATALOGUE.len() + 1, "{headings:?}");
    assert!(
        headings.iter().any(|h| h.starts_with("CPM")),
        "{headings:?}"
    );
    let hostile = c.find(Locator::Css("#campaigns tbody tr th a")).await;
    assert!(hostile.is_ok());
    let names: Vec<String> = {
        let mut v = Vec::new();
        for a in c
            .find_all(Locator::Css("#campaigns tbody th a"))
            .await
            .unwrap()
        {
            v.push(a.text().await.unwrap());
        }
        v
    };
    assert!(
        names.iter().any(|n| n == XSS),
        "the hostile name is shown as text: {names:?}"
    );
    assert!(c.get_alert_text().await.is_err(), "no alert ran");
    let injected: Value = c
        .execute(
            "return [document.scripts.length, document.querySelectorAll('img').length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        injected,
        json!([0, 0]),
        "no script and no img element made it into the page"
    );
    shot("campaigns").await;

    // Campaign detail, reached by clicking, with its charts and attribution comparison.
    let first = c
        .find(Locator::Css("#campaigns tbody tr[data-campaign] th a"))
        .await
        .unwrap();
    let name = first.text().await.unwrap();
    first.click().await.unwrap();
    assert_eq!(text("#campaign-name".into()).await, name);
    for chart in ["spend", "conversions"] {
        c.find(Locator::Css(&format!(
            "figure[data-chart='{chart}'] svg.chart"
        )))
        .await
        .unwrap();
    }
    c.find(Locator::Css("#attribution tr[data-model='linear']"))
        .await
        .unwrap();
    shot("campaign").await;

    // The hostile campaign's own page: its name is the heading's text, nothing runs.
    c.goto(&format!("{base}/campaign?name={}", urlencode(XSS)))
        .await
        .unwrap();
    assert_eq!(text("#campaign-name".into()).await, XSS);
    assert!(c.get_alert_text().await.is_err(), "no alert ran");
    shot("campaign-hostile-name").await;

    // Channels and the admin pages.
    c.goto(&format!("{base}/channels")).await.unwrap();
    for chart in ["channel-spend", "channel-conversions"] {
        c.find(Locator::Css(&format!(
            "figure[data-chart='{chart}'] svg.chart"
        )))
        .await
        .unwrap();
    }
    shot("channels").await;
    for (path, name) in [
        ("/admin/users", "admin-users"),
        ("/admin/api-keys", "admin-api-keys"),
        ("/admin/audit", "admin-audit"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        c.find(Locator::Css("table.data")).await.unwrap();
        shot(name).await;
    }

    // Phone width.
    c.set_window_size(390, 844).await.unwrap();
    c.goto(&format!("{base}/overview")).await.unwrap();
    shot("overview-phone").await;

    // The browser reported no CSP violation on any page...
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        csp_violations(&stack).await,
        violations_before,
        "CSP violations were reported"
    );
    // ...and the detector works: an inline script added through WebDriver is blocked
    // by the policy and reported.
    c.execute(
        "const s = document.createElement('script'); s.textContent = 'window.ran = 1'; document.body.appendChild(s); return window.ran === undefined;",
        vec![],
    )
    .await
    .map(|blocked| assert_eq!(blocked, json!(true), "an inline script ran"))
    .unwrap();
    let mut reported = false;
    for _ in 0..50 {
        if csp_violations(&stack).await > violations_before {
            reported = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported, "the violation was reported to /csp-report");
    c.close().await.unwrap();
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[tokio::test]
async fn api_down_gives_a_friendly_page_with_the_request_id_and_not_ready() {
    // An API address where nothing listens.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let app = dashboard::App::build(dashboard::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        api_url: format!("http://{dead}"),
        secure_cookies: true,
        session_key: None,
        http: platform::http::HttpLimits {
            body_bytes: 16 * 1024,
            request_timeout: Duration::from_secs(5),
        },
        api_timeout: Duration::from_secs(2),
        trusted_proxies: Default::default(),
    })
    .await
    .unwrap();
    let (port, admin_port) = (app.port(), app.admin_port());
    let shutdown = platform::Shutdown::new();
    tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client
        .get(format!("http://127.0.0.1:{port}/overview"))
        .header(
            "cookie",
            "__Host-beacon_session=x.e30.y; __Host-beacon_csrf=c",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let request_id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    // Served over TLS in production: HSTS is on when cookies are Secure.
    assert!(r.headers().contains_key("strict-transport-security"));
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Data is unavailable") && html.contains(&request_id),
        "{html}"
    );
    for leak in ["error", "reqwest", "Connection refused", "panicked", "src/"] {
        assert!(!html.contains(leak), "the page leaks {leak:?}");
    }
    let ready = client
        .get(format!("http://127.0.0.1:{admin_port}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let health = client
        .get(format!("http://127.0.0.1:{admin_port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    shutdown.trigger();
}

/// Every form refuses a post without its CSRF token (session cookie alone, or both
/// cookies and a wrong token in the form), and the refused post changed nothing.
#[sqlx::test(migrations = false)]
async fn every_form_refuses_a_post_without_its_csrf_token(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let t = &demo_tenants("csrf-password")[0];
    let mut owner = stack.owner().await;
    xtask::seed::create_tenant(&mut owner, t).await.unwrap();
    let cookies = sign_in(&stack, &t.admin_email, &t.password).await;
    let session_only = cookies
        .split("; ")
        .find(|c| c.starts_with("__Host-beacon_session="))
        .unwrap()
        .to_owned();
    let viewer: uuid::Uuid = sqlx::query_scalar("SELECT id FROM app.users WHERE email = $1")
        .bind(&t.viewer_email)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    let key: uuid::Uuid = sqlx::query_scalar("SELECT id FROM app.api_keys WHERE tenant_id = $1")
        .bind(t.id)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    let query = "SELECT (SELECT count(*) FROM app.users), (SELECT count(*) FROM app.api_keys),
                        (SELECT role || coalesce(disabled_at::text, '') FROM app.users WHERE id = $1),
                        (SELECT revoked_at IS NULL FROM app.api_keys WHERE id = $2),
                        (SELECT count(*) FROM app.audit_log WHERE outcome = 'success' AND action <> 'login')";
    let state = sqlx::query_as::<_, (i64, i64, String, bool, i64)>(query)
        .bind(viewer)
        .bind(key);
    // A valid token of another session of the same user, and this session's token
    // under the nonce of another browser.
    let other = sign_in(&stack, &t.admin_email, &t.password).await;
    let other_token = page_token(&stack, &other, "/admin/api-keys").await;
    let own_token = page_token(&stack, &cookies, "/admin/api-keys").await;
    let foreign_nonce = format!("{}; {}", other.split("; ").next().unwrap(), session_only);
    // This browser's nonce with another session: the token names the session too.
    let foreign_session = format!(
        "{}; {}",
        cookies.split("; ").next().unwrap(),
        other.split("; ").nth(1).unwrap()
    );
    let before = state.fetch_one(&mut owner).await.unwrap();
    let user_path = format!("/admin/users/{viewer}");
    let revoke_path = format!("/admin/api-keys/{key}/revoke");
    let forms: [(&str, Vec<(&str, &str)>); 6] = [
        (
            "/login",
            vec![("email", &t.admin_email), ("password", &t.password)],
        ),
        ("/logout", vec![]),
        (
            "/admin/users",
            vec![
                ("email", "new@acme.example"),
                ("display_name", "New"),
                ("role", "admin"),
            ],
        ),
        (&user_path, vec![("role", "admin"), ("disabled", "true")]),
        (
            "/admin/api-keys",
            vec![("name", "csrf key"), ("events_write", "on")],
        ),
        (&revoke_path, vec![]),
    ];
    for (path, fields) in &forms {
        for (which, cookie, token) in [
            ("session cookie only", &session_only, "guess"),
            ("both cookies", &cookies, "guess"),
            ("both cookies", &cookies, ""),
            ("another session's token", &cookies, other_token.as_str()),
            (
                "another browser's nonce",
                &foreign_nonce,
                own_token.as_str(),
            ),
            ("another session", &foreign_session, own_token.as_str()),
        ] {
            let mut form = fields.clone();
            form.push(("csrf", token));
            let r = stack
                .client
                .post(format!("{}{path}", stack.dashboard_url))
                .header("cookie", cookie.as_str())
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{path} with csrf={token:?}, {which}");
        }
    }
    let after = sqlx::query_as::<_, (i64, i64, String, bool, i64)>(query)
        .bind(viewer)
        .bind(key)
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!(after, before, "a refused form changed something");
    // Sign-out was refused too: the session still works.
    let (status, _) = get(&stack, &cookies, "/overview").await;
    assert_eq!(status, 200);
    // The session token in a cookie without the `__Host-` prefix is not read.
    let session = session_only.split_once('=').unwrap().1;
    let (status, _) = get(&stack, &format!("beacon_session={session}"), "/overview").await;
    assert_eq!(status, 303, "an unprefixed session cookie was accepted");
}

/// Sign-out revokes the access token: the cookie's value, replayed after sign-out,
/// opens nothing, in the dashboard or at the API.
#[sqlx::test(migrations = false)]
async fn sign_out_revokes_the_access_token(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let t = &demo_tenants("sign-out-password")[0];
    let mut owner = stack.owner().await;
    xtask::seed::create_tenant(&mut owner, t).await.unwrap();
    let cookies = sign_in(&stack, &t.admin_email, &t.password).await;
    let token = cookies
        .split("__Host-beacon_session=")
        .nth(1)
        .unwrap()
        .to_owned();
    let csrf = page_token(&stack, &cookies, "/overview").await;
    let r = stack
        .client
        .post(format!("{}/logout", stack.dashboard_url))
        .header("cookie", &cookies)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert!(
        cookie(&r, "__Host-beacon_session").is_some_and(|v| v.is_empty()),
        "the session cookie is deleted"
    );
    // The forbidden thing: the old cookie (a copy an attacker kept) after sign-out.
    let (status, _) = get(&stack, &cookies, "/overview").await;
    assert_eq!(
        status, 303,
        "the dashboard sends a revoked session to sign-in"
    );
    assert_eq!(
        stack
            .api_status(reqwest::Method::GET, "/v1/overview", &token)
            .await,
        401,
        "the api refuses the revoked token"
    );
}
