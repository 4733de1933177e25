//! The OpenAPI document: the problem responses every route shares, and the document
//! built from the handlers of the route table.

use std::sync::OnceLock;

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use platform::access::PUBLIC;
use serde::Serialize;
use utoipa::{
    IntoResponses, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
};

use crate::{AppState, routes::ROUTES};

/// An RFC 9457 problem document, as every error of this API is answered.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProblemDoc {
    /// `https://beacon.dev/problems/<slug>`.
    #[serde(rename = "type")]
    kind: String,
    title: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The errors any route may answer (all `application/problem+json`).
#[derive(Debug, IntoResponses)]
pub enum Errors {
    #[response(
        status = 400,
        description = "Invalid request",
        content_type = "application/problem+json"
    )]
    BadRequest(#[to_schema] ProblemDoc),
    #[response(
        status = 401,
        description = "Missing or invalid token",
        content_type = "application/problem+json"
    )]
    Unauthorized(ProblemDoc),
    #[response(
        status = 403,
        description = "The token lacks the route's permission",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemDoc),
    #[response(
        status = 404,
        description = "Not found (also: another tenant's id)",
        content_type = "application/problem+json"
    )]
    NotFound(ProblemDoc),
    #[response(
        status = 405,
        description = "Method not allowed",
        content_type = "application/problem+json"
    )]
    MethodNotAllowed(ProblemDoc),
    #[response(
        status = 409,
        description = "Conflict",
        content_type = "application/problem+json"
    )]
    Conflict(ProblemDoc),
    #[response(
        status = 413,
        description = "Body too large",
        content_type = "application/problem+json"
    )]
    TooLarge(ProblemDoc),
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(ProblemDoc),
    #[response(
        status = 422,
        description = "Invalid body",
        content_type = "application/problem+json"
    )]
    Unprocessable(ProblemDoc),
    #[response(
        status = 500,
        description = "Internal error (no detail)",
        content_type = "application/problem+json"
    )]
    Internal(ProblemDoc),
    #[response(status = 503, description = "A dependency is unavailable (the database, analytics); see Retry-After", content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ProblemDoc),
    #[response(
        status = 504,
        description = "A dependency took too long",
        content_type = "application/problem+json"
    )]
    Timeout(ProblemDoc),
}

/// The token endpoint's errors: the standard ones and 429 with `Retry-After`.
#[derive(Debug, IntoResponses)]
pub enum TokenErrors {
    #[response(
        status = 400,
        description = "Invalid request",
        content_type = "application/problem+json"
    )]
    BadRequest(ProblemDoc),
    #[response(
        status = 401,
        description = "Invalid credentials (same answer for unknown account and wrong secret)",
        content_type = "application/problem+json"
    )]
    Unauthorized(ProblemDoc),
    #[response(
        status = 405,
        description = "Method not allowed",
        content_type = "application/problem+json"
    )]
    MethodNotAllowed(ProblemDoc),
    #[response(
        status = 413,
        description = "Body too large",
        content_type = "application/problem+json"
    )]
    TooLarge(ProblemDoc),
    #[response(
        status = 415,
        description = "Not JSON",
        content_type = "application/problem+json"
    )]
    UnsupportedMediaType(ProblemDoc),
    #[response(
        status = 422,
        description = "Invalid body",
        content_type = "application/problem+json"
    )]
    Unprocessable(ProblemDoc),
    #[response(status = 429, description = "Too many failed attempts; see Retry-After", content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    TooMany(ProblemDoc),
    #[response(
        status = 500,
        description = "Internal error (no detail)",
        content_type = "application/problem+json"
    )]
    Internal(ProblemDoc),
    #[response(status = 503, description = "Too many sign-ins in progress (see Retry-After), or a dependency is unavailable", content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait")))]
    Unavailable(ProblemDoc),
    #[response(
        status = 504,
        description = "Took too long",
        content_type = "application/problem+json"
    )]
    Timeout(ProblemDoc),
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Beacon API",
        description = "Beacon's public API. The tenant of every request is the tenant of its token; another tenant's resources are simply not found.",
        version = "1"
    ),
    components(schemas(ProblemDoc))
)]
struct ApiDoc;

/// The OpenAPI 3.1 document, generated from the handlers of [`ROUTES`], with each
/// route's permission (from the same table) as its security requirement.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut router =
        utoipa_axum::router::OpenApiRouter::<AppState>::with_openapi(ApiDoc::openapi());
    for route in ROUTES {
        router = router.routes((route.handler)());
    }
    let (_, mut api) = router.split_for_parts();
    api.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    for route in ROUTES {
        let Some(item) = api.paths.paths.get_mut(route.path) else {
            continue;
        };
        let op = match route.method {
            "GET" => item.get.as_mut(),
            "POST" => item.post.as_mut(),
            "PATCH" => item.patch.as_mut(),
            "PUT" => item.put.as_mut(),
            "DELETE" => item.delete.as_mut(),
            _ => None,
        };
        if let Some(op) = op {
            if route.permission == PUBLIC {
                op.security = Some(vec![SecurityRequirement::default()]);
            } else {
                op.security = Some(vec![SecurityRequirement::new("bearer", [route.permission])]);
                let note = format!(
                    "\n\nRequires a token with the `{}` scope.",
                    route.permission
                );
                op.description = Some(op.description.clone().unwrap_or_default() + &note);
            }
        }
    }
    api
}

fn openapi_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| openapi().to_json().unwrap_or_else(|_| "{}".to_owned()))
}

/// This document.
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "getOpenApiDocument", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object), Errors))]
pub async fn openapi_json() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        openapi_text(),
    )
        .into_response()
}
