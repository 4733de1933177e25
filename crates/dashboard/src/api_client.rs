//! The dashboard's only way to data: the public API, called with the signed-in
//! user's token. Errors are classified once, here, for every page.

use std::sync::Arc;

use axum::http::StatusCode;
use serde::{Serialize, de::DeserializeOwned};

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
    /// Too many attempts.
    Throttled,
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
        r
    }

    async fn send<T: DeserializeOwned>(r: reqwest::RequestBuilder) -> Result<T, ApiError> {
        let response = r.send().await.map_err(|e| {
            tracing::warn!(error = %e, "api unreachable");
            ApiError::Unavailable
        })?;
        let status = response.status();
        if status.is_success() {
            return response.json::<T>().await.map_err(|e| {
                tracing::warn!(error = %e, "unexpected api answer");
                ApiError::Unavailable
            });
        }
        Err(match status {
            StatusCode::UNAUTHORIZED => ApiError::Unauthorized,
            StatusCode::FORBIDDEN => ApiError::Forbidden,
            StatusCode::NOT_FOUND => ApiError::NotFound,
            StatusCode::TOO_MANY_REQUESTS => ApiError::Throttled,
            s if s.is_client_error() => {
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let detail = body["detail"]
                    .as_str()
                    .or(body["title"].as_str())
                    .unwrap_or("Invalid input");
                ApiError::Invalid(detail.chars().take(300).collect())
            }
            s => {
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
