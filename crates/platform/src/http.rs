//! HTTP building blocks shared by the HTTP services: problem+json errors (RFC 9457),
//! the standard middleware stack (request ids, trace spans with propagated context,
//! timeouts, body limits, security headers) and a server with graceful shutdown.

use std::{net::SocketAddr, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::MatchedPath,
    http::{HeaderName, HeaderValue, Request, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tokio::net::TcpListener;
use tower_http::{
    limit::RequestBodyLimitLayer,
    propagate_header::PropagateHeaderLayer,
    request_id::{MakeRequestUuid, RequestId, SetRequestIdLayer},
    sensitive_headers::SetSensitiveRequestHeadersLayer,
    set_header::SetResponseHeaderLayer,
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{Shutdown, telemetry};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const PROBLEM_JSON: &str = "application/problem+json";
/// `Retry-After` of every 503 [`Problem::unavailable`]: a restarting dependency
/// (PostgreSQL, analytics) is back within seconds, and a client that waits this long
/// between attempts adds at most one request per second to the recovery.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 1;

/// An RFC 9457 problem document. 5xx problems carry no detail: the cause is logged
/// with the request id, never returned.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The problem type, a slug under `https://beacon.dev/problems/`.
    #[serde(rename = "type", serialize_with = "problem_type")]
    pub kind: &'static str,
    pub title: &'static str,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Box<serde_json::Value>>,
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

fn problem_type<S: serde::Serializer>(slug: &&'static str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("https://beacon.dev/problems/{slug}"))
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, title: &'static str) -> Self {
        Self {
            kind: slug,
            title,
            status: status.as_u16(),
            detail: None,
            errors: None,
            retry_after: None,
        }
    }
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn errors(mut self, errors: serde_json::Value) -> Self {
        self.errors = Some(Box::new(errors));
        self
    }
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or invalid credentials",
        )
    }
    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Not allowed")
    }
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found")
    }
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
        )
    }
    /// 429 with `Retry-After`, for a caller over its rate limit.
    pub fn too_many_requests(wait: Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate-limited",
            "Too many requests",
        )
        .detail("slow down and retry after the number of seconds in Retry-After")
        .retry_after(crate::ratelimit::retry_after_secs(wait))
    }
    /// 503 with `Retry-After` ([`UNAVAILABLE_RETRY_AFTER_SECS`]): a dependency (the
    /// database, analytics, the loader) is down or its pool could not hand out a
    /// connection within the configured acquire timeout. Transient by definition, so
    /// the caller is always told when to try again.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "A dependency is unavailable, try again later",
        )
        .retry_after(UNAVAILABLE_RETRY_AFTER_SECS)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (
            status,
            [(header::CONTENT_TYPE, PROBLEM_JSON)],
            axum::Json(&self),
        )
            .into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// Limits every HTTP service states explicitly.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub body_bytes: usize,
    pub request_timeout: Duration,
}

/// The standard stack: request id (set, propagated), a span per request named by the
/// matched route and parented on the caller's `traceparent`, a timeout answering 503
/// problem+json, a body limit answering 413, and security headers.
pub fn with_standard_layers(router: Router, limits: HttpLimits) -> Router {
    router
        // axum's own extractor default (2 MiB) would silently override a larger limit.
        .layer(axum::extract::DefaultBodyLimit::max(limits.body_bytes))
        .layer(RequestBodyLimitLayer::new(limits.body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(axum::middleware::map_response(problem_for_bare_errors))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map(|m| m.as_str().to_owned())
                        .unwrap_or_else(|| "unmatched".to_owned());
                    let request_id = req
                        .extensions()
                        .get::<RequestId>()
                        .and_then(|id| id.header_value().to_str().ok())
                        .unwrap_or("-")
                        .to_owned();
                    let span = tracing::info_span!(
                        "http.request",
                        otel.name = format!("{} {}", req.method(), route),
                        otel.kind = "server",
                        http.request.method = %req.method(),
                        http.route = %route,
                        request_id = %request_id,
                        http.response.status_code = tracing::field::Empty,
                    );
                    telemetry::set_parent_from_headers(&span, req.headers());
                    span
                })
                .on_response(|res: &Response, latency: Duration, span: &tracing::Span| {
                    span.record("http.response.status_code", res.status().as_u16());
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_ms = latency.as_millis() as u64,
                        "request"
                    );
                    metrics::histogram!("http_request_duration_seconds")
                        .record(latency.as_secs_f64());
                }),
        )
        .layer(PropagateHeaderLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(drop_invalid_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            header::COOKIE,
        ]))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// Longest `X-Request-Id` accepted from a caller.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// An incoming request id is kept only if it is 1 to 64 characters of `[A-Za-z0-9-]`
/// (a UUID, a trace-style id), so it can be logged, stored in the audit log and echoed
/// without escaping or unbounded size.
pub fn is_valid_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

/// Removes every incoming `X-Request-Id` unless there is exactly one and it is valid;
/// the service then generates its own.
async fn drop_invalid_request_id(mut request: Request<Body>) -> Request<Body> {
    let mut ids = request.headers().get_all(REQUEST_ID).iter();
    let keep =
        matches!((ids.next(), ids.next()), (Some(id), None) if is_valid_request_id(id.as_bytes()));
    if !keep {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// Rewrites framework errors that carry no body (413 from the body limit, 504 from the
/// timeout, 404/405 from routing) into problem+json, so every error has one shape.
async fn problem_for_bare_errors(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| {
            v.as_bytes().starts_with(b"application/problem+json")
                || v.as_bytes().starts_with(b"text/html")
        });
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    if status == StatusCode::SERVICE_UNAVAILABLE {
        return Problem::unavailable().into_response();
    }
    let (slug, title) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Request body too large"),
        StatusCode::GATEWAY_TIMEOUT => ("timeout", "The request took too long"),
        StatusCode::NOT_FOUND => ("not-found", "Not found"),
        StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
        StatusCode::UNPROCESSABLE_ENTITY => ("unprocessable", "Unprocessable request"),
        _ if status.is_server_error() => ("internal", "Internal error"),
        _ => ("error", "Request failed"),
    };
    Problem::new(status, slug, title).into_response()
}

/// Binds a listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind {addr}: {e}"))
}

/// Serves `router` until shutdown, then drains in-flight requests for at most `drain`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
    drain: Duration,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt as _;
    // Without TCP_NODELAY a response written in two segments waits for the client's
    // delayed ACK (~40 ms on Linux) before its second half leaves.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.wait());
    match crate::shutdown::drain(&shutdown, drain, server.into_future()).await {
        Some(result) => Ok(result?),
        None => Ok(()),
    }
}

/// A bound HTTP service with its admin server: what every HTTP `App::build` returns.
#[derive(Debug)]
pub struct HttpService {
    listener: TcpListener,
    admin: crate::admin::AdminServer,
    router: Router,
    drain: Duration,
}

impl HttpService {
    /// Binds the public and admin listeners.
    pub async fn bind(
        name: &'static str,
        listen: SocketAddr,
        admin: SocketAddr,
        checks: Vec<crate::admin::Check>,
        router: Router,
        drain: Duration,
    ) -> anyhow::Result<Self> {
        let listener = bind(listen).await?;
        let admin = crate::admin::AdminServer::bind(admin, checks).await?;
        tracing::info!(service = name, addr = %listener.local_addr()?, admin = %admin.local_addr(), "listening");
        Ok(Self {
            listener,
            admin,
            router,
            drain,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn admin_port(&self) -> u16 {
        self.admin.local_addr().port()
    }

    /// Serves until shutdown, then drains for at most the configured time.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let admin = tokio::spawn(self.admin.run(shutdown.clone()));
        serve(self.listener, self.router, shutdown, self.drain).await?;
        admin.await??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    use super::*;

    #[test]
    fn request_ids_are_short_and_plain() {
        for ok in ["a", "0f8e1c2d-aaaa-4bbb-8ccc-123456789abc", &"x".repeat(64)] {
            assert!(is_valid_request_id(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a\nb",
            "<script>",
            "id_1",
            "ä",
            "a;b",
        ] {
            assert!(!is_valid_request_id(bad.as_bytes()), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn an_invalid_incoming_request_id_is_replaced() {
        let app = with_standard_layers(
            Router::new().route(
                "/",
                axum::routing::get(|h: axum::http::HeaderMap| async move {
                    h.get(REQUEST_ID).unwrap().to_str().unwrap().to_owned()
                }),
            ),
            HttpLimits {
                body_bytes: 1024,
                request_timeout: Duration::from_secs(5),
            },
        );
        let call = |ids: &[&str]| {
            let mut req = Request::get("/");
            for id in ids {
                req = req.header(REQUEST_ID, *id);
            }
            let app = app.clone();
            let req = req.body(Body::empty()).unwrap();
            async move {
                let response = app.oneshot(req).await.unwrap();
                let echoed = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
                let body = axum::body::to_bytes(response.into_body(), 1024)
                    .await
                    .unwrap();
                assert_eq!(body, echoed.as_bytes(), "the handler sees the id returned");
                echoed
            }
        };
        assert_eq!(call(&["trace-42"]).await, "trace-42");
        let long = "a".repeat(65);
        for ids in [
            &[long.as_str()][..],
            &["evil id"],
            &["a_b"],
            &["one", "two"],
        ] {
            let id = call(ids).await;
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{ids:?} became {id}");
        }
        let generated = call(&[]).await;
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
    }

    #[tokio::test]
    async fn every_503_says_when_to_retry() {
        let response = Problem::unavailable().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(response.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        // A bare 503 from a layer becomes the same problem, Retry-After included.
        let bare = problem_for_bare_errors(StatusCode::SERVICE_UNAVAILABLE.into_response()).await;
        assert_eq!(bare.headers()[header::RETRY_AFTER], "1");
        assert_eq!(bare.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
    }

    #[test]
    fn too_many_requests_rounds_retry_after_up() {
        let p = Problem::too_many_requests(Duration::from_millis(1200));
        assert_eq!((p.status, p.retry_after), (429, Some(2)));
    }
}
