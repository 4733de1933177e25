//! The dashboard's only way to data: the public API, called with the signed-in
//! user's token. Errors are classified once, here, for every page. Every call carries
//! the browser's address in `X-Forwarded-For`, so the API throttles and audits the
//! person, not the dashboard (it believes the header only because it trusts the
//! dashboard by configuration).

use std::{net::IpAddr, sync::Arc};

use axum::{
    extract::Request,
    http::{StatusCode, header},
    middleware::Next,
    response::Response,
};
use domain::{
    Kpi,
    admin::{
        AuditPage, CreatedKey, CreatedUser, KeyList, NewKey, NewUser, User, UserChange, UserList,
    },
    answers::{Anomalies, Attribution, CampaignsPage, Channels, Order, Overview, TimeSeries},
};
use platform::client_addr::{ClientAddr, X_FORWARDED_FOR};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

tokio::task_local! {
    /// The browser's address while a request of it is handled.
    static BROWSER: IpAddr;
}

/// Middleware: makes the request's [`ClientAddr`] (resolved by
/// `platform::client_addr::layer`) the address every API call of it forwards.
pub async fn forward_client_addr(request: Request, next: Next) -> Response {
    match request.extensions().get::<ClientAddr>() {
        Some(&ClientAddr(ip)) => BROWSER.scope(ip, next.run(request)).await,
        None => next.run(request).await,
    }
}

#[derive(Debug, Clone)]
pub struct ApiClient {
    base: Arc<str>,
    http: reqwest::Client,
}

/// How an API call failed, as far as a page cares.
#[derive(Debug)]
pub enum ApiError {
    /// The token is missing, expired or revoked: sign in again.
    Unauthorized,
    /// The user may not do this.
    Forbidden,
    NotFound,
    /// The API refused the input; `detail` is safe to show (problem+json detail).
    Invalid(String),
    /// Too many attempts, or the API is busy: retry after this many seconds.
    Throttled {
        retry_after: u64,
    },
    /// The API or one of its dependencies is down or slow.
    Unavailable,
}

impl ApiClient {
    pub fn new(base: &str, http: reqwest::Client) -> Self {
        Self {
            base: base.trim_end_matches('/').into(),
            http,
        }
    }

    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .headers(platform::telemetry::current_context_headers());
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        if let Ok(ip) = BROWSER.try_with(|ip| *ip) {
            r = r.header(X_FORWARDED_FOR, ip.to_string());
        }
        r
    }

    /// Sends; a non-2xx answer is classified into an [`ApiError`].
    async fn checked(r: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
        let response = r.send().await.map_err(|e| {
            tracing::warn!(error = %e, "api unreachable");
            ApiError::Unavailable
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        Err(match (status, retry_after) {
            (StatusCode::UNAUTHORIZED, _) => ApiError::Unauthorized,
            (StatusCode::FORBIDDEN, _) => ApiError::Forbidden,
            (StatusCode::NOT_FOUND, _) => ApiError::NotFound,
            (StatusCode::TOO_MANY_REQUESTS, _) | (StatusCode::SERVICE_UNAVAILABLE, Some(_)) => {
                ApiError::Throttled {
                    retry_after: retry_after.unwrap_or(1).clamp(1, 3600),
                }
            }
            (s, _) if s.is_client_error() => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let detail = body["detail"]
                    .as_str()
                    .or(body["title"].as_str())
                    .unwrap_or("Invalid input");
                ApiError::Invalid(detail.chars().take(300).collect())
            }
            (s, _) => {
                tracing::warn!(status = s.as_u16(), "api error");
                ApiError::Unavailable
            }
        })
    }

    async fn send<T: DeserializeOwned>(r: reqwest::RequestBuilder) -> Result<T, ApiError> {
        Self::checked(r).await?.json::<T>().await.map_err(|e| {
            tracing::warn!(error = %e, "unexpected api answer");
            ApiError::Unavailable
        })
    }

    async fn get<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, ApiError> {
        Self::send(
            self.request(reqwest::Method::GET, path, Some(token))
                .query(query),
        )
        .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        Self::send(self.request(reqwest::Method::POST, path, token).json(body)).await
    }

    async fn patch<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        Self::send(
            self.request(reqwest::Method::PATCH, path, Some(token))
                .json(body),
        )
        .await
    }

    /// A request whose answer has no body (204).
    async fn no_content(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
    ) -> Result<(), ApiError> {
        Self::checked(self.request(method, path, Some(token)))
            .await
            .map(drop)
    }
}

/// A date range as the pages hold it: `from` and `to`, `YYYY-MM-DD`.
pub type Span = (String, String);

fn span_params((from, to): &Span) -> Vec<(&'static str, String)> {
    vec![("from", from.clone()), ("to", to.clone())]
}

/// What `POST /v1/auth/token` issues.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    pub access_token: String,
    pub expires_in: i64,
}

/// The sort, order and page of `GET /v1/kpis/campaigns`.
#[derive(Debug, Clone)]
pub struct CampaignsRequest {
    pub sort: Kpi,
    pub order: Order,
    pub page_size: u32,
    pub page_token: Option<String>,
}

/// One method per route the dashboard calls, each returning the API's own types
/// (`domain::answers`): a route or a shape the API does not have does not compile.
impl ApiClient {
    /// `POST /v1/auth/token`, password grant.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<TokenAnswer, ApiError> {
        let body = serde_json::json!({ "grant_type": "password", "username": email, "password": password });
        self.post(None, "/v1/auth/token", &body).await
    }

    /// `POST /v1/auth/revoke`: sign-out, the token is refused from now on.
    pub async fn revoke_token(&self, token: &str) -> Result<(), ApiError> {
        self.no_content(reqwest::Method::POST, token, "/v1/auth/revoke")
            .await
    }

    /// `GET /v1/overview`.
    pub async fn overview(&self, token: &str, span: &Span) -> Result<Overview, ApiError> {
        self.get(token, "/v1/overview", &span_params(span)).await
    }

    /// `GET /v1/kpis/campaigns`.
    pub async fn campaign_kpis(
        &self,
        token: &str,
        span: &Span,
        r: &CampaignsRequest,
    ) -> Result<CampaignsPage, ApiError> {
        let mut q = span_params(span);
        q.extend([
            ("sort", r.sort.key().to_owned()),
            (
                "order",
                match r.order {
                    Order::Asc => "asc",
                    Order::Desc => "desc",
                }
                .to_owned(),
            ),
            ("page_size", r.page_size.to_string()),
        ]);
        if let Some(t) = &r.page_token {
            q.push(("page_token", t.clone()));
        }
        self.get(token, "/v1/kpis/campaigns", &q).await
    }

    /// `GET /v1/kpis/timeseries`, daily, for one campaign or all.
    pub async fn daily_series(
        &self,
        token: &str,
        span: &Span,
        campaign: Option<&str>,
    ) -> Result<TimeSeries, ApiError> {
        let mut q = span_params(span);
        q.push(("granularity", "day".to_owned()));
        if let Some(c) = campaign {
            q.push(("campaign", c.to_owned()));
        }
        self.get(token, "/v1/kpis/timeseries", &q).await
    }

    /// `GET /v1/kpis/channels`.
    pub async fn channels(&self, token: &str, span: &Span) -> Result<Channels, ApiError> {
        self.get(token, "/v1/kpis/channels", &span_params(span))
            .await
    }

    /// `GET /v1/kpis/attribution`.
    pub async fn attribution(&self, token: &str, span: &Span) -> Result<Attribution, ApiError> {
        self.get(token, "/v1/kpis/attribution", &span_params(span))
            .await
    }

    /// `GET /v1/kpis/anomalies` for one KPI, with the API's default baseline.
    pub async fn anomalies(
        &self,
        token: &str,
        span: &Span,
        kpi: Kpi,
    ) -> Result<Anomalies, ApiError> {
        let mut q = span_params(span);
        q.push(("kpi", kpi.key().to_owned()));
        self.get(token, "/v1/kpis/anomalies", &q).await
    }
}

/// The admin routes, with `domain::admin`'s types.
impl ApiClient {
    /// `GET /v1/users` (the first 100).
    pub async fn users(&self, token: &str) -> Result<UserList, ApiError> {
        self.get(token, "/v1/users", &[("limit", "100".into())])
            .await
    }

    /// `POST /v1/users`.
    pub async fn create_user(&self, token: &str, new: &NewUser) -> Result<CreatedUser, ApiError> {
        self.post(Some(token), "/v1/users", new).await
    }

    /// `PATCH /v1/users/{id}`.
    pub async fn update_user(
        &self,
        token: &str,
        id: Uuid,
        change: &UserChange,
    ) -> Result<User, ApiError> {
        self.patch(token, &format!("/v1/users/{id}"), change).await
    }

    /// `GET /v1/api-keys` (the first 100).
    pub async fn api_keys(&self, token: &str) -> Result<KeyList, ApiError> {
        self.get(token, "/v1/api-keys", &[("limit", "100".into())])
            .await
    }

    /// `POST /v1/api-keys`.
    pub async fn create_api_key(&self, token: &str, new: &NewKey) -> Result<CreatedKey, ApiError> {
        self.post(Some(token), "/v1/api-keys", new).await
    }

    /// `DELETE /v1/api-keys/{id}` (204, no body).
    pub async fn revoke_api_key(&self, token: &str, id: Uuid) -> Result<(), ApiError> {
        self.no_content(
            reqwest::Method::DELETE,
            token,
            &format!("/v1/api-keys/{id}"),
        )
        .await
    }

    /// `GET /v1/audit-log`, 50 entries older than `before`.
    pub async fn audit_log(&self, token: &str, before: Option<i64>) -> Result<AuditPage, ApiError> {
        let mut q = vec![("limit", "50".to_owned())];
        if let Some(b) = before {
            q.push(("before", b.to_string()));
        }
        self.get(token, "/v1/audit-log", &q).await
    }
}
