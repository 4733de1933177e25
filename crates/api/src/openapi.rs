//! The OpenAPI document: the problem responses every route shares, and the document
//! built from the handlers of the route table.

use std::{collections::BTreeMap, sync::OnceLock};

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use platform::access::PUBLIC;
use serde::Serialize;
use utoipa::{
    IntoResponses, OpenApi, PartialSchema, ToSchema,
    openapi::{
        self, ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
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

/// One problem answer in the document: its status, what it means, and whether it
/// carries `Retry-After`.
struct Problem {
    status: u16,
    description: &'static str,
    retry_after: bool,
}

impl Problem {
    const fn new(status: u16, description: &'static str) -> Self {
        Self {
            status,
            description,
            retry_after: false,
        }
    }

    const fn retry(status: u16, description: &'static str) -> Self {
        Self {
            status,
            description,
            retry_after: true,
        }
    }

    fn response(&self) -> RefOr<openapi::response::Response> {
        let content = ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ProblemDoc")))
            .build();
        let mut response = ResponseBuilder::new()
            .description(self.description)
            .content("application/problem+json", content);
        if self.retry_after {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(u64::schema())
                    .description(Some("Seconds to wait"))
                    .build(),
            );
        }
        RefOr::T(response.build())
    }
}

/// The problems any route may answer (all `application/problem+json`, no detail on 5xx).
const ERRORS: &[Problem] = &[
    Problem::new(400, "Invalid request"),
    Problem::new(401, "Missing or invalid token"),
    Problem::new(403, "The token lacks the route's permission"),
    Problem::new(404, "Not found (also: another tenant's id)"),
    Problem::new(405, "Method not allowed"),
    Problem::new(409, "Conflict"),
    Problem::new(413, "Body too large"),
    Problem::new(415, "Not JSON"),
    Problem::new(422, "Invalid body"),
    Problem::new(500, "Internal error (no detail)"),
    Problem::retry(
        503,
        "A dependency is unavailable (the database, analytics); see Retry-After",
    ),
    Problem::new(504, "A dependency took too long"),
];

/// The token endpoint's own answers; with those of [`ERRORS`] in [`TOKEN_SHARED`].
const TOKEN_ERRORS: &[Problem] = &[
    Problem::new(400, "Invalid request"),
    Problem::new(
        401,
        "Invalid credentials (same answer for unknown account and wrong secret)",
    ),
    Problem::retry(429, "Too many failed attempts; see Retry-After"),
    Problem::retry(
        503,
        "Too many sign-ins in progress (see Retry-After), or a dependency is unavailable",
    ),
    Problem::new(504, "Took too long"),
];

/// The statuses of [`ERRORS`] the token endpoint answers as every route does.
const TOKEN_SHARED: [u16; 5] = [405, 413, 415, 422, 500];

fn responses<'a>(
    problems: impl IntoIterator<Item = &'a Problem>,
) -> BTreeMap<String, RefOr<openapi::response::Response>> {
    problems
        .into_iter()
        .map(|p| (p.status.to_string(), p.response()))
        .collect()
}

/// The errors any route may answer: [`ERRORS`], for `responses(…, Errors)`.
#[derive(Debug)]
pub struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<openapi::response::Response>> {
        responses(ERRORS)
    }
}

/// The token endpoint's errors: its own ([`TOKEN_ERRORS`]) and the shared ones it can
/// answer.
#[derive(Debug)]
pub struct TokenErrors;

impl IntoResponses for TokenErrors {
    fn responses() -> BTreeMap<String, RefOr<openapi::response::Response>> {
        let shared = ERRORS.iter().filter(|p| TOKEN_SHARED.contains(&p.status));
        responses(shared.chain(TOKEN_ERRORS))
    }
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
