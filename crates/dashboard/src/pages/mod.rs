//! Pages. Every page sends a strict Content-Security-Policy; forms carry a CSRF token.
//! Handlers are thin: read the session, call the API as the user, shape a view.

mod campaigns;
mod channels;
mod errors;
mod login;
mod overview;
mod range;
mod views;

use axum::{
    Router,
    extract::FromRef,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use tower_http::set_header::SetResponseHeaderLayer;

pub use campaigns::format_credit;
pub(crate) use errors::{api_error, error_page, page};
pub(crate) use login::CsrfForm;

use crate::{Config, api_client::ApiClient, session::SessionKey};

pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
                       report-uri /csp-report";

#[derive(Clone, Debug)]
pub struct AppState {
    pub api: ApiClient,
    pub key: SessionKey,
}

impl FromRef<AppState> for SessionKey {
    fn from_ref(state: &AppState) -> Self {
        state.key.clone()
    }
}

pub fn router(config: &Config, client: reqwest::Client) -> Router {
    let trusted = config.trusted_proxies.clone();
    let state = AppState {
        api: ApiClient::new(&config.api_url, client),
        key: SessionKey::new(config.session_key.as_ref()),
    };
    let mut router = Router::new()
        .route("/", get(|| async { Redirect::to("/overview") }))
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/overview", get(overview::overview))
        .route("/campaigns", get(campaigns::campaigns))
        .route("/campaign", get(campaigns::campaign))
        .route("/channels", get(channels::channels))
        .merge(crate::admin::routes())
        .route("/static/app.css", get(css))
        .route("/csp-report", post(csp_report))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            crate::api_client::forward_client_addr,
        ))
        .layer(axum::middleware::from_fn_with_state(
            trusted,
            platform::client_addr::layer,
        ))
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

/// Browsers post Content-Security-Policy violations here: each is logged and counted
/// (`dashboard_csp_violations_total`), so a page that breaks the policy shows up on a
/// dashboard instead of silently losing a feature. The body is bounded and never echoed.
async fn csp_report(body: axum::body::Bytes) -> StatusCode {
    let report: serde_json::Value =
        serde_json::from_slice(&body[..body.len().min(8 * 1024)]).unwrap_or_default();
    let r = &report["csp-report"];
    tracing::warn!(
        directive = r["violated-directive"].as_str().unwrap_or("?"),
        blocked = r["blocked-uri"].as_str().unwrap_or("?"),
        page = r["document-uri"].as_str().unwrap_or("?"),
        "content security policy violation"
    );
    metrics::counter!(crate::CSP_VIOLATIONS).increment(1);
    StatusCode::NO_CONTENT
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/app.css"),
    )
}
