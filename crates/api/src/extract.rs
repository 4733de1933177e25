//! Extractors: strict JSON, query and path parsing whose rejections are problem+json,
//! the verified caller (set by the permission layer of `routes`), and request metadata
//! for the audit log.

use std::net::SocketAddr;

use axum::{
    extract::{
        ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request,
        rejection::{PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
};
use platform::{
    auth::Claims,
    client_addr::ClientAddr,
    http::{Problem, REQUEST_ID},
};
use serde::de::DeserializeOwned;
use uuid::Uuid;

fn rejection(status: StatusCode, text: String) -> Problem {
    let (slug, title) = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported-media-type",
            "Expected Content-Type: application/json",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Request body too large"),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", "Invalid request body"),
        _ => ("bad-request", "Invalid request"),
    };
    let status = if status.is_server_error() {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    Problem::new(status, slug, title).detail(text)
}

/// JSON body, `deny_unknown_fields` on every request type; rejections are problem+json.
#[derive(Debug, Clone, Copy, Default)]
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        // Every request body of this API is a JSON object; serde would also accept a
        // struct written as an array, so refuse anything but an object first.
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(value)) => value,
            Err(e) => return Err(rejection(e.status(), e.body_text())),
        };
        if !value.is_object() {
            return Err(rejection(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the body must be a JSON object".to_owned(),
            ));
        }
        serde_json::from_value(value)
            .map(Self)
            .map_err(|e| rejection(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
    }
}

/// Query string; rejections are problem+json (400).
#[derive(Debug, Clone, Copy, Default)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e: QueryRejection| rejection(StatusCode::BAD_REQUEST, e.body_text()))
    }
}

/// A resource id in the path. Anything that is not a UUID is simply not found: the
/// answer for a malformed id and for another tenant's id is the same 404.
#[derive(Debug, Clone, Copy)]
pub struct Id(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Self(id))
            .map_err(|_: PathRejection| Problem::not_found())
    }
}

/// Client address and request id, for the audit log and the login throttle. The
/// address is the one `platform::client_addr` resolved: the TCP peer, or what a
/// trusted proxy (`BEACON_TRUSTED_PROXIES`, such as the dashboard) forwarded.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub client_addr: Option<String>,
    pub request_id: Option<String>,
}

impl Meta {
    pub fn from_parts(parts: &Parts) -> Self {
        Self {
            client_addr: parts
                .extensions
                .get::<ClientAddr>()
                .map(|c| c.0)
                .or_else(|| {
                    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
                    Some(peer.0.ip().to_canonical())
                })
                .map(|ip| ip.to_string()),
            request_id: parts
                .headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(parts))
    }
}

/// The verified caller. Only the permission layer (built from the route table) puts
/// claims into a request, so a handler that takes `Caller` on a route without a
/// declared permission fails closed (401).
#[derive(Debug, Clone)]
pub struct Caller(pub Claims);

impl Caller {
    pub fn tenant(&self) -> Uuid {
        self.0.tenant
    }
    pub fn actor(&self) -> &str {
        &self.0.sub
    }
    /// The user id, when the caller is a user (not an API key).
    pub fn user_id(&self) -> Option<Uuid> {
        self.0
            .sub
            .strip_prefix("user:")
            .and_then(|id| id.parse().ok())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Claims>()
            .cloned()
            .map(Self)
            .ok_or_else(Problem::unauthorized)
    }
}

pub use domain::PageSize;

/// A 400 for a query parameter out of range.
pub fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid query").detail(detail)
}

/// Rows to skip in a list: at most 10000 (deeper pages are a scan, not a page).
pub fn offset(o: Option<u32>) -> Result<i64, Problem> {
    match o.unwrap_or(0) {
        n if n <= 10_000 => Ok(i64::from(n)),
        _ => Err(bad_query("offset must be at most 10000")),
    }
}

/// Untrusted text for names and filters: trimmed, 1..=`max` characters, no control
/// characters (PostgreSQL refuses NUL; nothing else needs them).
pub fn text(field: &'static str, value: &str, max: usize) -> Result<String, Problem> {
    let value = value.trim();
    let len = value.chars().count();
    if len == 0 || len > max || value.chars().any(char::is_control) {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            "Invalid request body",
        )
        .detail(format!(
            "{field} must be 1 to {max} characters without control characters"
        )));
    }
    Ok(value.to_owned())
}
