//! Pages. Every page sends a strict Content-Security-Policy; forms carry a CSRF token.
//! Handlers are thin: read the session, call the API as the user, shape a view.

use askama::Template;
use axum::{
    Form, Router,
    extract::{FromRef, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{
    Config,
    api_client::{ApiClient, ApiError},
    charts, format_count, format_money, format_ratio,
    session::{self, Session, SessionKey},
};

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
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/overview", get(overview))
        .route("/campaigns", get(campaigns))
        .route("/campaign", get(campaign))
        .route("/channels", get(channels))
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
    metrics::counter!("dashboard_csp_violations_total").increment(1);
    StatusCode::NO_CONTENT
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

pub(crate) fn render(t: &impl Template, status: StatusCode) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Renders a page for a signed-in user, setting the CSRF cookie if it was minted.
pub(crate) fn page(session: &Session, t: &impl Template) -> Response {
    let mut response = render(t, StatusCode::OK);
    if let Some(c) = &session.set_csrf {
        response.headers_mut().append(header::SET_COOKIE, c.clone());
    }
    response
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    request_id: String,
}

pub(crate) fn error_page(
    headers: &HeaderMap,
    status: StatusCode,
    title: &str,
    message: &str,
) -> Response {
    let request_id = headers
        .get(platform::http::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    render(
        &ErrorPage {
            title,
            message,
            request_id,
        },
        status,
    )
}

/// One mapping from API failures to pages, for every handler.
pub(crate) fn api_error(headers: &HeaderMap, e: ApiError) -> Response {
    match e {
        ApiError::Unauthorized => {
            let mut r = Redirect::to("/login").into_response();
            r.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(session::SESSION, "", 0),
            );
            r
        }
        ApiError::Forbidden => error_page(
            headers,
            StatusCode::FORBIDDEN,
            "Not allowed",
            "Your account cannot open this page.",
        ),
        ApiError::NotFound => error_page(
            headers,
            StatusCode::NOT_FOUND,
            "Not found",
            "There is nothing here.",
        ),
        ApiError::Invalid(detail) => error_page(
            headers,
            StatusCode::BAD_REQUEST,
            "Please check your input",
            &detail,
        ),
        ApiError::Throttled { retry_after } => with_retry_after(
            error_page(
                headers,
                StatusCode::TOO_MANY_REQUESTS,
                "Too many requests",
                &format!("Wait {retry_after} seconds and try again."),
            ),
            retry_after,
        ),
        ApiError::Unavailable => error_page(
            headers,
            StatusCode::SERVICE_UNAVAILABLE,
            "Data is unavailable",
            "We could not load your figures. Please try again in a moment.",
        ),
    }
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

// ---------------------------------------------------------------- sign in / out

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    csrf: String,
    error: Option<String>,
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let (csrf, set) = state.key.csrf_for(&headers);
    let mut response = render(&LoginPage { csrf, error: None }, StatusCode::OK);
    if let Some(c) = set {
        response.headers_mut().append(header::SET_COOKIE, c);
    }
    response
}

#[derive(Deserialize)]
struct LoginForm {
    csrf: String,
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: i64,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if !state.key.csrf_ok(&headers, &form.csrf) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "Session expired",
            "Please reload the sign-in page and try again.",
        );
    }
    let body = serde_json::json!({ "grant_type": "password", "username": form.email, "password": form.password });
    let retry = |message: &str, status| {
        render(
            &LoginPage {
                csrf: form.csrf.clone(),
                error: Some(message.into()),
            },
            status,
        )
    };
    match state
        .api
        .post::<TokenAnswer>(None, "/v1/auth/token", &body)
        .await
    {
        Ok(t) => {
            let mut response = Redirect::to("/overview").into_response();
            response.headers_mut().append(
                header::SET_COOKIE,
                session::set_cookie(session::SESSION, &t.access_token, t.expires_in),
            );
            response
        }
        Err(ApiError::Unauthorized | ApiError::Invalid(_)) => {
            retry("Wrong email or password.", StatusCode::UNAUTHORIZED)
        }
        Err(ApiError::Throttled { retry_after }) => with_retry_after(
            retry(
                &format!("Too many attempts. Wait {retry_after} seconds and try again."),
                StatusCode::TOO_MANY_REQUESTS,
            ),
            retry_after,
        ),
        Err(e) => api_error(&headers, e),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    pub csrf: String,
}

/// Sign-out: the API revokes the access token (so a copy of the cookie is worthless
/// from now on), then the cookie is deleted.
async fn logout(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return error_page(
            &headers,
            StatusCode::FORBIDDEN,
            "Session expired",
            "Please reload the page and try again.",
        );
    }
    match state
        .api
        .post::<serde_json::Value>(Some(&session.token), "/v1/auth/revoke", &())
        .await
    {
        // Unauthorized: already revoked or expired.
        Ok(_) | Err(ApiError::Unauthorized) => {}
        Err(e) => return api_error(&headers, e),
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        session::set_cookie(session::SESSION, "", 0),
    );
    response
}

// ------------------------------------------------------------------- API shapes

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct Totals {
    pub impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub spend_micros: i64,
    pub revenue_micros: i64,
    pub ctr: Option<f64>,
    pub cvr: Option<f64>,
    pub cpc_micros: Option<i64>,
    pub cpa_micros: Option<i64>,
    pub roas: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct ApiRange {
    from: String,
    to: String,
}

#[derive(Debug, Deserialize)]
struct Overview {
    range: Option<ApiRange>,
    previous_range: Option<ApiRange>,
    currency: String,
    current: Totals,
    previous: Totals,
}

#[derive(Debug, Deserialize)]
struct Point {
    period_start: String,
    totals: Totals,
}

#[derive(Debug, Deserialize)]
struct Series {
    currency: String,
    points: Vec<Point>,
}

#[derive(Debug, Deserialize)]
struct AnomalyDay {
    day: String,
}

#[derive(Debug, Deserialize)]
struct Anomalies {
    anomalies: Vec<AnomalyDay>,
}

// ---------------------------------------------------------------- date ranges

/// `?from=&to=`; absent means the last 30 days (the API's default too).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct RangeQuery {
    pub from: Option<String>,
    pub to: Option<String>,
}

pub(crate) struct Preset {
    pub label: &'static str,
    pub query: String,
    pub active: bool,
}

fn iso(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

impl RangeQuery {
    fn resolved(&self) -> (String, String) {
        let today = time::OffsetDateTime::now_utc().date();
        (
            self.from
                .clone()
                .unwrap_or_else(|| iso(today - time::Duration::days(29))),
            self.to.clone().unwrap_or_else(|| iso(today)),
        )
    }

    fn params(&self) -> Vec<(&'static str, String)> {
        let (from, to) = self.resolved();
        vec![("from", from), ("to", to)]
    }

    /// Links for the last 7, 30 and 90 days, keeping `keep` parameters.
    fn presets(&self, keep: &[(String, String)]) -> Vec<Preset> {
        let today = time::OffsetDateTime::now_utc().date();
        let (from, to) = self.resolved();
        [("7 days", 6), ("30 days", 29), ("90 days", 89)]
            .into_iter()
            .map(|(label, back)| {
                let f = iso(today - time::Duration::days(back));
                let mut q = vec![
                    ("from".to_owned(), f.clone()),
                    ("to".to_owned(), iso(today)),
                ];
                q.extend(keep.iter().cloned());
                Preset {
                    label,
                    query: serde_urlencoded::to_string(&q).unwrap_or_default(),
                    active: f == from && to == iso(today),
                }
            })
            .collect()
    }
}

// -------------------------------------------------------------------- views

pub(crate) struct Tile {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
    pub delta: String,
    pub trend: &'static str,
}

pub(crate) struct Chart {
    pub key: &'static str,
    pub title: String,
    pub svg: String,
    pub anomalies: usize,
}

fn delta(current: f64, previous: f64) -> (String, &'static str) {
    if previous == 0.0 {
        return ("no data in the previous period".into(), "flat");
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

fn money_axis(v: f64) -> String {
    let units = v / 1_000_000.0;
    if units >= 1_000_000.0 {
        format!("{:.1}M", units / 1_000_000.0)
    } else if units >= 1_000.0 {
        format!("{:.1}k", units / 1_000.0)
    } else {
        format!("{units:.0}")
    }
}

fn count_axis(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The four trend metrics: (key, title, API kpi, value of a point, axis format).
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Totals) -> f64,
    fn(f64) -> String,
);

const METRICS: [Metric; 4] = [
    (
        "spend",
        "Spend",
        "spend",
        |t| t.spend_micros as f64,
        money_axis,
    ),
    (
        "clicks",
        "Clicks",
        "clicks",
        |t| t.clicks as f64,
        count_axis,
    ),
    (
        "conversions",
        "Conversions",
        "conversions",
        |t| t.conversions as f64,
        count_axis,
    ),
    (
        "revenue",
        "Revenue",
        "revenue",
        |t| t.revenue_micros as f64,
        money_axis,
    ),
];

fn line(
    key: &'static str,
    title: String,
    points: &[Point],
    value: fn(&Totals) -> f64,
    format: fn(f64) -> String,
    anomalies: &[String],
) -> Chart {
    let series: Vec<(String, f64)> = points
        .iter()
        .map(|p| (p.period_start.clone(), value(&p.totals)))
        .collect();
    let svg = charts::line_chart(&charts::Line {
        id: key,
        title: &title,
        points: &series,
        anomalies,
        format,
    });
    Chart {
        key,
        title,
        svg,
        anomalies: anomalies.len(),
    }
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    from: String,
    to: String,
    prev_from: String,
    prev_to: String,
    currency: String,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
}

async fn overview(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(range): Query<RangeQuery>,
) -> Response {
    let params = range.params();
    let token = session.token.as_str();
    let mut series_q = params.clone();
    series_q.push(("granularity", "day".into()));
    let anomaly_q = |kpi: &str| {
        let mut q = params.clone();
        q.push(("kpi", kpi.to_owned()));
        q
    };
    let aq = METRICS.map(|m| anomaly_q(m.2));
    let (overview, series, a0, a1, a2, a3) = tokio::join!(
        state.api.get::<Overview>(token, "/v1/overview", &params),
        state
            .api
            .get::<Series>(token, "/v1/kpis/timeseries", &series_q),
        state
            .api
            .get::<Anomalies>(token, "/v1/kpis/anomalies", &aq[0]),
        state
            .api
            .get::<Anomalies>(token, "/v1/kpis/anomalies", &aq[1]),
        state
            .api
            .get::<Anomalies>(token, "/v1/kpis/anomalies", &aq[2]),
        state
            .api
            .get::<Anomalies>(token, "/v1/kpis/anomalies", &aq[3]),
    );
    let (overview, series) = match (overview, series) {
        (Ok(o), Ok(s)) => (o, s),
        (Err(e), _) | (_, Err(e)) => return api_error(&headers, e),
    };
    let (cur, prev, currency) = (
        &overview.current,
        &overview.previous,
        overview.currency.clone(),
    );
    let money = |v: i64| format_money(v, &currency);
    let count_tile = |key, label, c: i64, p: i64| {
        let (delta, trend) = delta(c as f64, p as f64);
        Tile {
            key,
            label,
            value: format_count(c),
            delta,
            trend,
        }
    };
    let money_tile = |key, label, c: i64, p: i64| {
        let (delta, trend) = delta(c as f64, p as f64);
        Tile {
            key,
            label,
            value: money(c),
            delta,
            trend,
        }
    };
    let ratio_tile = |key, label, c: Option<f64>, p: Option<f64>, percent| {
        let (delta, trend) = match (c, p) {
            (Some(c), Some(p)) => delta(c, p),
            _ => ("no data in the previous period".into(), "flat"),
        };
        Tile {
            key,
            label,
            value: format_ratio(c, percent),
            delta,
            trend,
        }
    };
    let tiles = vec![
        money_tile("spend", "Spend", cur.spend_micros, prev.spend_micros),
        money_tile(
            "revenue",
            "Revenue",
            cur.revenue_micros,
            prev.revenue_micros,
        ),
        ratio_tile("roas", "ROAS", cur.roas, prev.roas, false),
        count_tile(
            "impressions",
            "Impressions",
            cur.impressions,
            prev.impressions,
        ),
        count_tile("clicks", "Clicks", cur.clicks, prev.clicks),
        ratio_tile("ctr", "CTR", cur.ctr, prev.ctr, true),
        count_tile(
            "conversions",
            "Conversions",
            cur.conversions,
            prev.conversions,
        ),
        ratio_tile("cvr", "Conversion rate", cur.cvr, prev.cvr, true),
    ];
    let anomalies: Vec<Vec<String>> = [a0, a1, a2, a3]
        .into_iter()
        .map(|a| {
            a.map(|a| a.anomalies.into_iter().map(|d| d.day).collect())
                .unwrap_or_default()
        })
        .collect();
    let charts = METRICS
        .iter()
        .zip(&anomalies)
        .map(|((key, title, _, value, format), days)| {
            let title = if matches!(*key, "spend" | "revenue") {
                format!("{title} ({currency})")
            } else {
                (*title).to_owned()
            };
            line(key, title, &series.points, *value, *format, days)
        })
        .collect();
    let (from, to) = range.resolved();
    let r = |r: &Option<ApiRange>, f: fn(&ApiRange) -> &String| {
        r.as_ref().map(|x| f(x).clone()).unwrap_or_default()
    };
    let view = OverviewPage {
        active: "overview",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&[]),
        keep: Vec::new(),
        from: r(&overview.range, |x| &x.from).max(from),
        to: r(&overview.range, |x| &x.to).max(to),
        prev_from: r(&overview.previous_range, |x| &x.from),
        prev_to: r(&overview.previous_range, |x| &x.to),
        currency,
        tiles,
        charts,
    };
    page(&session, &view)
}

// ----------------------------------------------------------------- campaigns

#[derive(Debug, Deserialize)]
struct CampaignKpis {
    campaign: String,
    totals: Totals,
}

#[derive(Debug, Deserialize)]
struct CampaignsPage {
    currency: String,
    campaigns: Vec<CampaignKpis>,
    next_page_token: Option<String>,
    total_campaigns: u32,
}

#[derive(Debug, Deserialize)]
struct CampaignsQuery {
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    page_token: Option<String>,
    /// Tokens of the pages before this one, for "previous".
    back: Option<String>,
}

pub(crate) struct Column {
    pub label: &'static str,
    pub query: String,
    pub sorted: &'static str,
}

pub(crate) struct Row {
    pub name: String,
    pub query: String,
    pub cells: Vec<String>,
}

const COLUMNS: [(&str, &str); 10] = [
    ("impressions", "Impressions"),
    ("clicks", "Clicks"),
    ("ctr", "CTR"),
    ("conversions", "Conversions"),
    ("cvr", "CVR"),
    ("spend", "Spend"),
    ("cpc", "CPC"),
    ("cpa", "CPA"),
    ("revenue", "Revenue"),
    ("roas", "ROAS"),
];

fn cells(t: &Totals, currency: &str) -> Vec<String> {
    let money = |v: Option<i64>| {
        v.map(|v| format_money(v, currency))
            .unwrap_or_else(|| "—".into())
    };
    vec![
        format_count(t.impressions),
        format_count(t.clicks),
        format_ratio(t.ctr, true),
        format_count(t.conversions),
        format_ratio(t.cvr, true),
        money(Some(t.spend_micros)),
        money(t.cpc_micros),
        money(t.cpa_micros),
        money(Some(t.revenue_micros)),
        format_ratio(t.roas, false),
    ]
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct CampaignsView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    from: String,
    to: String,
    currency: String,
    total: u32,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    columns: Vec<Column>,
    rows: Vec<Row>,
    prev_query: Option<String>,
    next_query: Option<String>,
}

async fn campaigns(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<CampaignsQuery>,
) -> Response {
    let range = RangeQuery {
        from: q.from.clone(),
        to: q.to.clone(),
    };
    let sort = q
        .sort
        .clone()
        .filter(|s| COLUMNS.iter().any(|c| c.0 == s))
        .unwrap_or_else(|| "spend".into());
    let order = if q.order.as_deref() == Some("asc") {
        "asc"
    } else {
        "desc"
    };
    let mut params = range.params();
    params.extend([
        ("sort", sort.clone()),
        ("order", order.to_owned()),
        ("page_size", "25".to_owned()),
    ]);
    if let Some(t) = &q.page_token {
        params.push(("page_token", t.clone()));
    }
    let data = match state
        .api
        .get::<CampaignsPage>(&session.token, "/v1/kpis/campaigns", &params)
        .await
    {
        Ok(p) => p,
        Err(e) => return api_error(&headers, e),
    };
    let currency = data.currency.clone();
    let (from, to) = range.resolved();
    let base = vec![
        ("from".to_owned(), from.clone()),
        ("to".to_owned(), to.clone()),
    ];
    let with = |extra: &[(&str, String)]| {
        let mut v = base.clone();
        v.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        serde_urlencoded::to_string(&v).unwrap_or_default()
    };
    let columns = COLUMNS
        .iter()
        .map(|(key, label)| {
            let is = *key == sort;
            let next_order = if is && order == "desc" { "asc" } else { "desc" };
            Column {
                label,
                query: with(&[
                    ("sort", (*key).to_owned()),
                    ("order", next_order.to_owned()),
                ]),
                sorted: match (is, order) {
                    (true, "asc") => "ascending",
                    (true, _) => "descending",
                    _ => "",
                },
            }
        })
        .collect();
    let rows = data
        .campaigns
        .iter()
        .map(|c| Row {
            name: c.campaign.clone(),
            query: with(&[("name", c.campaign.clone())]),
            cells: cells(&c.totals, &currency),
        })
        .collect();
    let mut back: Vec<String> = q
        .back
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let here = q.page_token.clone().unwrap_or_default();
    let sort_params = [("sort", sort.clone()), ("order", order.to_owned())];
    let next_query = data.next_page_token.as_ref().map(|t| {
        let mut b = back.clone();
        b.push(if here.is_empty() {
            "-".into()
        } else {
            here.clone()
        });
        let mut extra = sort_params.to_vec();
        extra.extend([("page_token", t.clone()), ("back", b.join(","))]);
        with(&extra)
    });
    let prev_query = back.pop().map(|t| {
        let mut extra = sort_params.to_vec();
        if t != "-" {
            extra.push(("page_token", t));
        }
        extra.push(("back", back.join(",")));
        with(&extra)
    });
    let keep = vec![
        ("sort".to_owned(), sort.clone()),
        ("order".to_owned(), order.to_owned()),
    ];
    let view = CampaignsView {
        active: "campaigns",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&keep),
        keep,
        from,
        to,
        currency,
        total: data.total_campaigns,
        columns,
        rows,
        prev_query,
        next_query,
    };
    page(&session, &view)
}

// ------------------------------------------------------------ campaign detail

#[derive(Debug, Deserialize)]
struct CampaignQuery {
    name: String,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AttributionRow {
    campaign: String,
    last_click_conversions_micros: i64,
    last_click_revenue_micros: i64,
    linear_conversions_micros: i64,
    linear_revenue_micros: i64,
}

#[derive(Debug, Deserialize)]
struct Attribution {
    campaigns: Vec<AttributionRow>,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    name: String,
    from: String,
    to: String,
    currency: String,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
    last_click_conversions: String,
    last_click_revenue: String,
    linear_conversions: String,
    linear_revenue: String,
}

/// Credited conversions, from millionths, with two decimals.
pub fn format_credit(micros: i64) -> String {
    let hundredths = (micros + 5_000) / 10_000;
    format!("{}.{:02}", format_count(hundredths / 100), hundredths % 100)
}

async fn campaign(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<CampaignQuery>,
) -> Response {
    if q.name.is_empty() || q.name.chars().count() > 256 {
        return error_page(
            &headers,
            StatusCode::BAD_REQUEST,
            "Please check your input",
            "Unknown campaign.",
        );
    }
    let range = RangeQuery {
        from: q.from.clone(),
        to: q.to.clone(),
    };
    let mut series_q = range.params();
    series_q.extend([
        ("granularity", "day".to_owned()),
        ("campaign", q.name.clone()),
    ]);
    let range_params = range.params();
    let (series, attribution) = tokio::join!(
        state
            .api
            .get::<Series>(&session.token, "/v1/kpis/timeseries", &series_q),
        state
            .api
            .get::<Attribution>(&session.token, "/v1/kpis/attribution", &range_params),
    );
    let (series, attribution) = match (series, attribution) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(e), _) | (_, Err(e)) => return api_error(&headers, e),
    };
    let currency = series.currency.clone();
    let mut sum = Totals::default();
    for p in &series.points {
        sum.impressions += p.totals.impressions;
        sum.clicks += p.totals.clicks;
        sum.conversions += p.totals.conversions;
        sum.spend_micros += p.totals.spend_micros;
        sum.revenue_micros += p.totals.revenue_micros;
    }
    let tile = |key, label, value| Tile {
        key,
        label,
        value,
        delta: String::new(),
        trend: "flat",
    };
    let ratio = |n: i64, d: i64| (d != 0).then(|| n as f64 / d as f64);
    let tiles = vec![
        tile("spend", "Spend", format_money(sum.spend_micros, &currency)),
        tile(
            "revenue",
            "Revenue",
            format_money(sum.revenue_micros, &currency),
        ),
        tile(
            "roas",
            "ROAS",
            format_ratio(ratio(sum.revenue_micros, sum.spend_micros), false),
        ),
        tile("clicks", "Clicks", format_count(sum.clicks)),
        tile(
            "ctr",
            "CTR",
            format_ratio(ratio(sum.clicks, sum.impressions), true),
        ),
        tile("conversions", "Conversions", format_count(sum.conversions)),
    ];
    let charts = [METRICS[0], METRICS[2]]
        .iter()
        .map(|(key, title, _, value, format)| {
            line(
                key,
                (*title).to_owned(),
                &series.points,
                *value,
                *format,
                &[],
            )
        })
        .collect();
    let a = attribution.campaigns.iter().find(|a| a.campaign == q.name);
    let (lc, lr, nc, nr) = a.map_or((0, 0, 0, 0), |a| {
        (
            a.last_click_conversions_micros,
            a.last_click_revenue_micros,
            a.linear_conversions_micros,
            a.linear_revenue_micros,
        )
    });
    let (from, to) = range.resolved();
    let keep = vec![("name".to_owned(), q.name.clone())];
    let view = CampaignView {
        active: "campaigns",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&keep),
        keep,
        name: q.name,
        from,
        to,
        tiles,
        charts,
        last_click_conversions: format_credit(lc),
        last_click_revenue: format_money(lr, &currency),
        linear_conversions: format_credit(nc),
        linear_revenue: format_money(nr, &currency),
        currency,
    };
    page(&session, &view)
}

// ----------------------------------------------------------------- channels

#[derive(Debug, Deserialize)]
struct ChannelKpis {
    channel: String,
    totals: Totals,
}

#[derive(Debug, Deserialize)]
struct Channels {
    currency: String,
    channels: Vec<ChannelKpis>,
}

#[derive(Template)]
#[template(path = "channels.html")]
struct ChannelsView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    from: String,
    to: String,
    currency: String,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    charts: Vec<Chart>,
    columns: Vec<&'static str>,
    rows: Vec<Row>,
}

async fn channels(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(range): Query<RangeQuery>,
) -> Response {
    let data = match state
        .api
        .get::<Channels>(&session.token, "/v1/kpis/channels", &range.params())
        .await
    {
        Ok(d) => d,
        Err(e) => return api_error(&headers, e),
    };
    let currency = data.currency.clone();
    let bars = |value: fn(&Totals) -> f64| -> Vec<(String, f64)> {
        data.channels
            .iter()
            .map(|c| (c.channel.clone(), value(&c.totals)))
            .collect()
    };
    let spend = bars(|t| t.spend_micros as f64);
    let conversions = bars(|t| t.conversions as f64);
    let spend_title = format!("Spend by channel ({currency})");
    let charts = vec![
        Chart {
            key: "channel-spend",
            svg: charts::bar_chart(&charts::Bars {
                id: "channel-spend",
                title: &spend_title,
                bars: &spend,
                format: money_axis,
            }),
            title: spend_title.clone(),
            anomalies: 0,
        },
        Chart {
            key: "channel-conversions",
            svg: charts::bar_chart(&charts::Bars {
                id: "channel-conversions",
                title: "Conversions by channel",
                bars: &conversions,
                format: count_axis,
            }),
            title: "Conversions by channel".into(),
            anomalies: 0,
        },
    ];
    let rows = data
        .channels
        .iter()
        .map(|c| Row {
            name: c.channel.clone(),
            query: String::new(),
            cells: cells(&c.totals, &currency),
        })
        .collect();
    let (from, to) = range.resolved();
    let view = ChannelsView {
        active: "channels",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&[]),
        keep: Vec::new(),
        from,
        to,
        currency,
        charts,
        columns: COLUMNS.iter().map(|c| c.1).collect(),
        rows,
    };
    page(&session, &view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_and_axes_format() {
        assert_eq!(format_credit(2_500_000), "2.50");
        assert_eq!(format_credit(1_234_567_890), "1,234.57");
        assert_eq!(money_axis(2_500_000_000.0), "2.5k");
        assert_eq!(count_axis(999.0), "999");
    }

    #[test]
    fn deltas_compare_with_the_previous_period() {
        assert_eq!(
            delta(110.0, 100.0),
            ("+10.0% vs previous period".to_owned(), "up")
        );
        assert_eq!(delta(90.0, 100.0).1, "down");
        assert_eq!(delta(5.0, 0.0).1, "flat");
    }
}
