//! The api's one error type. Handlers return `Result<_, ApiError>` and use `?` on
//! database errors, analytics statuses, timeouts and [`Problem`]s alike; the answer is
//! always problem+json. Server-side failures are logged here with their context and
//! answered without detail (a 5xx never says what broke); the request id, set by
//! `platform::http`'s layers on every response, is what ties the answer to the log.

use std::time::Duration;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use platform::http::Problem;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// An answer for the caller (4xx, or a 503 with `Retry-After`).
    #[error("{} {}", .0.status, .0.title)]
    Problem(Problem),
    /// A database error, with what the api was doing.
    #[error("{context}: {source}")]
    Db {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// Analytics answered with an error status.
    #[error("analytics: {0}")]
    Analytics(#[from] tonic::Status),
    /// A dependency did not answer in time.
    #[error("timed out")]
    Timeout(#[from] tokio::time::error::Elapsed),
}

impl From<Problem> for ApiError {
    fn from(p: Problem) -> Self {
        Self::Problem(p)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(source: sqlx::Error) -> Self {
        Self::Db {
            context: "database",
            source,
        }
    }
}

impl From<crate::credentials::Busy> for ApiError {
    fn from(busy: crate::credentials::Busy) -> Self {
        Self::Problem(busy.into())
    }
}

impl From<domain::PageSizeError> for ApiError {
    fn from(e: domain::PageSizeError) -> Self {
        Self::Problem(crate::extract::bad_query(e.to_string()))
    }
}

/// `.context("…")` on a database result: what failed, for the log (zero2prod's style).
pub trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, ApiError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, ApiError> {
        self.map_err(|source| ApiError::Db { context, source })
    }
}

/// The answer to a request that took too long (analytics, mostly).
pub fn timeout_problem() -> Problem {
    Problem::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        "Analytics took too long",
    )
}

/// A 400 with a detail the caller may see.
pub fn bad_request(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid request").detail(detail)
}

impl ApiError {
    /// The problem document this error is answered with; logs what the caller does
    /// not see.
    pub fn problem(self) -> Problem {
        let problem = match self {
            Self::Problem(p) => p,
            Self::Db { context, source } => {
                tracing::error!(error = %source, context, "database error");
                Problem::unavailable()
            }
            Self::Analytics(status) => {
                use tonic::Code;
                match status.code() {
                    // Analytics validates the request; its words are the caller's answer.
                    Code::InvalidArgument | Code::OutOfRange => {
                        bad_request(status.message().to_owned())
                    }
                    Code::NotFound => Problem::not_found(),
                    Code::DeadlineExceeded | Code::Cancelled => timeout_problem(),
                    code => {
                        tracing::warn!(?code, message = status.message(), "analytics call failed");
                        Problem::unavailable()
                    }
                }
            }
            Self::Timeout(_) => timeout_problem(),
        };
        without_server_detail(problem)
    }
}

/// No detail on a 5xx, whoever built the problem.
fn without_server_detail(mut p: Problem) -> Problem {
    if p.status >= 500 {
        p.detail = None;
        p.errors = None;
    }
    p
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.problem().into_response()
    }
}

/// Runs `f` with a hard deadline of its own, whatever the channel does.
pub async fn within<T, F>(limit: Duration, f: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    Ok(tokio::time::timeout(limit, f).await??.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn answer(e: ApiError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            platform::http::PROBLEM_JSON
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn an_unreachable_database_or_analytics_is_503_with_retry_after() {
        let io = || std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        for e in [
            ApiError::from(sqlx::Error::PoolTimedOut),
            sqlx::Error::Io(io()).into(),
            tonic::Status::unavailable("connection refused").into(),
        ] {
            let response = e.into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
        }
    }

    #[tokio::test]
    async fn server_errors_carry_no_detail_and_client_errors_keep_theirs() {
        let (status, body) = answer(sqlx::Error::PoolTimedOut.into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.get("detail").is_none(), "{body}");
        let (status, body) = answer(
            Err::<(), _>(sqlx::Error::Protocol("secret table app.users".into()))
                .context("listing users")
                .unwrap_err(),
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!body.to_string().contains("app.users"), "{body}");
        // A 5xx problem built with a detail loses it on the way out.
        let (status, body) = answer(Problem::internal().detail("stack trace here").into()).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.get("detail").is_none(), "{body}");
        let (status, body) = answer(tonic::Status::internal("pg: relation x").into()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.get("detail").is_none(), "{body}");
        let (status, _) = answer(tonic::Status::deadline_exceeded("slow").into()).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        // Analytics' validation errors pass through as the caller's 400.
        let (status, body) =
            answer(tonic::Status::invalid_argument("threshold must be in [0.5, 10]").into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["detail"], "threshold must be in [0.5, 10]");
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        let (status, _) = answer(elapsed.into()).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    }
}
