//! Pages. Every page sends a strict Content-Security-Policy; forms carry a CSRF token
//! (double submit: an HttpOnly SameSite=Strict cookie and a hidden field must match).

use std::sync::Arc;

use askama::Template;
use axum::{
    Form, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use base64::Engine as _;
use rand::RngCore;
use serde::Deserialize;
use serde_json::Value;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{Config, format_count, format_money, format_ratio};

const SESSION: &str = "beacon_session";
const CSRF: &str = "beacon_csrf";
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(Clone, Debug)]
struct AppState {
    api: Arc<str>,
    client: reqwest::Client,
    secure: bool,
}

pub fn router(config: &Config, client: reqwest::Client) -> Router {
    let state = AppState {
        api: config.api_url.trim_end_matches('/').into(),
        client,
        secure: config.secure_cookies,
    };
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/overview") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", axum::routing::post(logout))
        .route("/overview", get(overview))
        .route("/static/app.css", get(css))
        .with_state(state)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ));
    if config.secure_cookies {
        router = router.layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    }
    platform::http::with_standard_layers(router, config.http)
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../static/app.css"),
    )
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

fn set_cookie(name: &str, value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn new_csrf() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The CSRF token of this browser, minting (and setting) one if absent.
fn csrf_for(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie(headers, CSRF) {
        Some(t) => (t.to_owned(), None),
        None => {
            let t = new_csrf();
            let c = set_cookie(CSRF, &t, 8 * 3600, secure);
            (t, Some(c))
        }
    }
}

fn csrf_ok(headers: &HeaderMap, submitted: &str) -> bool {
    cookie(headers, CSRF).is_some_and(|c| {
        c.len() == submitted.len()
            && c.bytes()
                .zip(submitted.bytes())
                .fold(0u8, |a, (x, y)| a | (x ^ y))
                == 0
    })
}

fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn with_cookies(
    mut response: Response,
    cookies: impl IntoIterator<Item = HeaderValue>,
) -> Response {
    for c in cookies {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: String,
    message: String,
    request_id: String,
}

fn error_page(headers: &HeaderMap, status: StatusCode, title: &str, message: &str) -> Response {
    let request_id = headers
        .get(platform::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    render(
        &ErrorPage {
            title: title.into(),
            message: message.into(),
            request_id,
        },
        status,
    )
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = csrf_for(&headers, state.secure);
    with_cookies(
        render(&LoginPage { csrf, error: None }, StatusCode::OK),
        set,
    )
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "Session expired",
            "Please reload the sign-in page and try again.",
        );
    }
    let answer = state
        .client
        .post(format!("{}/v1/auth/token", state.api))
        .headers(platform::telemetry::current_context_headers())
        .json(&serde_json::json!({ "grant_type": "password", "username": form.email, "password": form.password }))
        .send()
        .await;
    match answer {
        Ok(r) if r.status().is_success() => {
            let body: Value = r.json().await.unwrap_or_default();
            let (Some(token), Some(ttl)) =
                (body["access_token"].as_str(), body["expires_in"].as_i64())
            else {
                return error_page(
                    &headers,
                    StatusCode::BAD_GATEWAY,
                    "Sign-in failed",
                    "The service answered unexpectedly.",
                );
            };
            let mut response = Redirect::to("/overview").into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(SESSION, token, ttl, state.secure),
            );
            response
        }
        Ok(r)
            if r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::BAD_REQUEST =>
        {
            render(
                &LoginPage {
                    csrf: form.csrf,
                    error: Some("Wrong email or password.".into()),
                },
                StatusCode::UNAUTHORIZED,
            )
        }
        Ok(r) if r.status() == StatusCode::TOO_MANY_REQUESTS => render(
            &LoginPage {
                csrf: form.csrf,
                error: Some("Too many attempts. Wait a moment and try again.".into()),
            },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Ok(r) => {
            tracing::warn!(status = r.status().as_u16(), "api refused login");
            error_page(
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                "Beacon is unavailable",
                "Please try again in a moment.",
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "api unreachable");
            error_page(
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                "Beacon is unavailable",
                "Please try again in a moment.",
            )
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !csrf_ok(&headers, &form.csrf) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "Session expired",
            "Please reload the page and try again.",
        );
    }
    with_cookies(
        Redirect::to("/login").into_response(),
        [set_cookie(SESSION, "", 0, state.secure)],
    )
}

struct Tile {
    key: &'static str,
    label: &'static str,
    value: String,
    delta: String,
    trend: &'static str,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    csrf: String,
    from: String,
    to: String,
    prev_from: String,
    prev_to: String,
    currency: String,
    tiles: Vec<Tile>,
}

fn delta(current: f64, previous: f64) -> (String, &'static str) {
    if previous == 0.0 {
        return ("no previous data".into(), "flat");
    }
    let change = (current - previous) / previous * 100.0;
    let trend = if change > 0.05 {
        "up"
    } else if change < -0.05 {
        "down"
    } else {
        "flat"
    };
    (format!("{change:+.1}% vs previous period"), trend)
}

async fn overview(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = cookie(&headers, SESSION) else {
        return Redirect::to("/login").into_response();
    };
    let answer = state
        .client
        .get(format!("{}/v1/overview", state.api))
        .headers(platform::telemetry::current_context_headers())
        .bearer_auth(token)
        .send()
        .await;
    let body: Value = match answer {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        Ok(r) if r.status() == StatusCode::UNAUTHORIZED => {
            return Redirect::to("/login").into_response();
        }
        Ok(r) if r.status() == StatusCode::FORBIDDEN => {
            return error_page(
                &headers,
                StatusCode::FORBIDDEN,
                "Not allowed",
                "Your account cannot view this page.",
            );
        }
        Ok(r) => {
            tracing::warn!(status = r.status().as_u16(), "api error");
            return error_page(
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                "Data is unavailable",
                "We could not load your figures. Please try again in a moment.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "api unreachable");
            return error_page(
                &headers,
                StatusCode::SERVICE_UNAVAILABLE,
                "Data is unavailable",
                "We could not load your figures. Please try again in a moment.",
            );
        }
    };
    let currency = body["currency"].as_str().unwrap_or("").to_owned();
    let (cur, prev) = (&body["current"], &body["previous"]);
    let int = |v: &Value, k: &str| v[k].as_i64().unwrap_or(0);
    let opt = |v: &Value, k: &str| v[k].as_f64();
    let count_tile = |key, label, k: &str| {
        let (delta, trend) = delta(int(cur, k) as f64, int(prev, k) as f64);
        Tile {
            key,
            label,
            value: format_count(int(cur, k)),
            delta,
            trend,
        }
    };
    let money_tile = |key, label, k: &str| {
        let (delta, trend) = delta(int(cur, k) as f64, int(prev, k) as f64);
        Tile {
            key,
            label,
            value: format_money(int(cur, k), &currency),
            delta,
            trend,
        }
    };
    let ratio_tile = |key, label, k: &str, percent| {
        let (delta, trend) = match (opt(cur, k), opt(prev, k)) {
            (Some(c), Some(p)) => delta(c, p),
            _ => ("no previous data".into(), "flat"),
        };
        Tile {
            key,
            label,
            value: format_ratio(opt(cur, k), percent),
            delta,
            trend,
        }
    };
    let tiles = vec![
        money_tile("spend", "Spend", "spend_micros"),
        money_tile("revenue", "Revenue", "revenue_micros"),
        ratio_tile("roas", "ROAS", "roas", false),
        count_tile("impressions", "Impressions", "impressions"),
        count_tile("clicks", "Clicks", "clicks"),
        ratio_tile("ctr", "CTR", "ctr", true),
        count_tile("conversions", "Conversions", "conversions"),
        ratio_tile("cvr", "Conversion rate", "cvr", true),
    ];
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let (csrf, set) = csrf_for(&headers, state.secure);
    let page = OverviewPage {
        csrf,
        from: s(&body["range"]["from"]),
        to: s(&body["range"]["to"]),
        prev_from: s(&body["previous_range"]["from"]),
        prev_to: s(&body["previous_range"]["to"]),
        currency: currency.clone(),
        tiles,
    };
    with_cookies(render(&page, StatusCode::OK), set)
}
