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
use platform::client_addr::{ClientAddr, X_FORWARDED_FOR};
use serde::{Serialize, de::DeserializeOwned};

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

    async fn send<T: DeserializeOwned>(r: reqwest::RequestBuilder) -> Result<T, ApiError> {
        let response = r.send().await.map_err(|e| {
            tracing::warn!(error = %e, "api unreachable");
            ApiError::Unavailable
        })?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            // No body: `()` or `serde_json::Value::Null`.
            return T::deserialize(serde_json::Value::Null).map_err(|e| {
                tracing::warn!(error = %e, "unexpected empty api answer");
                ApiError::Unavailable
            });
        }
        if status.is_success() {
            return response.json::<T>().await.map_err(|e| {
                tracing::warn!(error = %e, "unexpected api answer");
                ApiError::Unavailable
            });
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

    pub async fn get<T: DeserializeOwned>(
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

    pub async fn post<T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, ApiError> {
        Self::send(self.request(reqwest::Method::POST, path, token).json(body)).await
    }

    pub async fn patch<T: DeserializeOwned>(
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

    pub async fn delete<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<T, ApiError> {
        Self::send(self.request(reqwest::Method::DELETE, path, Some(token))).await
    }
}
