//! The route table: every route, the permission its caller needs, and its handler, in
//! ONE list ([`ROUTES`]). The router and the OpenAPI document are both built from it,
//! and tests check it against `[api]` in `security/access-model.toml` in both
//! directions. A handler learns who calls through the [`Caller`](crate::extract::Caller)
//! extractor, which only the permission layer below can satisfy.

use std::sync::OnceLock;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use platform::{
    access::PUBLIC,
    auth::scope,
    http::{HttpLimits, Problem},
};
use serde::Serialize;
use serde_json::json;
use tower_http::{cors::CorsLayer, set_header::SetResponseHeaderLayer};
use utoipa::{
    IntoResponses, OpenApi, ToSchema,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
};
use utoipa_axum::{router::UtoipaMethodRouter, routes};

use crate::{AppState, accounts, audit, auth, campaigns, extract::Meta, kpis, revoke};

/// One route: method and path (as in the handler's `#[utoipa::path]`), the permission
/// (`public` or the scope the token must carry), and the handler.
#[derive(Debug)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub permission: &'static str,
    pub handler: fn() -> UtoipaMethodRouter<AppState>,
}

const ADMIN: &str = scope::TENANT_ADMIN;
const KPIS: &str = scope::KPIS_READ;

macro_rules! table {
    ($($method:literal $path:literal $permission:expr => $handler:path;)*) => {
        &[$(Route {
            method: $method,
            path: $path,
            permission: $permission,
            handler: || routes!($handler),
        }),*]
    };
}

/// Every route of the API. Nothing else is routed.
pub static ROUTES: &[Route] = table! {
    "POST" "/v1/auth/token" PUBLIC => auth::token;
    "POST" "/v1/auth/revoke" KPIS => revoke::revoke;
    "GET" "/v1/openapi.json" PUBLIC => openapi_json;
    "GET" "/v1/overview" KPIS => kpis::overview;
    "GET" "/v1/kpis/campaigns" KPIS => kpis::campaigns;
    "GET" "/v1/kpis/timeseries" KPIS => kpis::timeseries;
    "GET" "/v1/kpis/channels" KPIS => kpis::channels;
    "GET" "/v1/kpis/attribution" KPIS => kpis::attribution;
    "GET" "/v1/kpis/anomalies" KPIS => kpis::anomalies;
    "GET" "/v1/campaigns" KPIS => campaigns::list;
    "GET" "/v1/campaigns/{id}" KPIS => campaigns::get;
    "POST" "/v1/campaigns" ADMIN => campaigns::create;
    "PATCH" "/v1/campaigns/{id}" ADMIN => campaigns::update;
    "GET" "/v1/users" ADMIN => accounts::list_users;
    "POST" "/v1/users" ADMIN => accounts::create_user;
    "GET" "/v1/users/{id}" ADMIN => accounts::get_user;
    "PATCH" "/v1/users/{id}" ADMIN => accounts::update_user;
    "GET" "/v1/api-keys" ADMIN => accounts::list_keys;
    "POST" "/v1/api-keys" ADMIN => accounts::create_key;
    "GET" "/v1/api-keys/{id}" ADMIN => accounts::get_key;
    "DELETE" "/v1/api-keys/{id}" ADMIN => accounts::revoke_key;
    "GET" "/v1/audit-log" ADMIN => audit::list;
};

/// Largest page any list returns.
pub const MAX_PAGE_SIZE: u32 = 100;

pub(crate) fn page_size(requested: Option<u32>, default: u32) -> Result<u32, Problem> {
    match requested.unwrap_or(default) {
        n @ 1..=MAX_PAGE_SIZE => Ok(n),
        _ => Err(
            Problem::new(StatusCode::BAD_REQUEST, "bad-request", "Invalid query")
                .detail(format!("page size must be 1..={MAX_PAGE_SIZE}")),
        ),
    }
}

pub(crate) fn db_problem(e: sqlx::Error) -> Problem {
    tracing::error!(error = %e, "database error");
    Problem::unavailable()
}

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
    #[response(
        status = 503,
        description = "A dependency is unavailable",
        content_type = "application/problem+json"
    )]
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
        headers(("Retry-After" = u64, description = "Seconds to wait, when busy")))]
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

/// A bounded memo of verified tokens, keyed by the SHA-256 of the token's exact bytes,
/// so a client sending the same token again skips the Ed25519 verification. A hit
/// re-checks expiry; different bytes (a tampered token) never hit. Only tokens that
/// passed full verification are stored; the map is cleared when full.
#[derive(Debug)]
pub struct VerifiedTokens {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], platform::auth::Claims>>,
    max: usize,
}

impl VerifiedTokens {
    pub fn new(max: usize) -> Self {
        Self {
            entries: std::sync::Mutex::default(),
            max,
        }
    }

    fn key(token: &str) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(token.as_bytes()).into()
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    /// Verifies `Authorization: Bearer …`, from the memo when these exact bytes passed before.
    pub fn verify(
        &self,
        verifier: &platform::auth::TokenVerifier,
        header: Option<&HeaderValue>,
    ) -> Result<platform::auth::Claims, platform::auth::TokenError> {
        let token = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let key = token.map(Self::key);
        if let Some(key) = &key {
            let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(claims) = entries.get(key).filter(|c| c.exp > Self::now()) {
                return Ok(claims.clone());
            }
        }
        let claims = verifier.verify_bearer(header)?;
        if let Some(key) = key {
            let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
            if entries.len() >= self.max {
                entries.clear();
            }
            entries.insert(key, claims.clone());
        }
        Ok(claims)
    }
}

/// Verifies the bearer token and checks the route's permission; puts the claims in
/// the request for [`Caller`](crate::extract::Caller). A denial is audited.
async fn enforce(
    State((state, permission)): State<(AppState, &'static str)>,
    mut request: Request,
    next: Next,
) -> Response {
    let claims = match state.verified.verify(
        &state.verifier,
        request.headers().get(header::AUTHORIZATION),
    ) {
        Ok(claims) => claims,
        Err(e) => {
            tracing::info!(reason = %e, "token refused");
            return Problem::unauthorized().into_response();
        }
    };
    if !claims.has_scope(permission) {
        let (parts, body) = request.into_parts();
        let meta = Meta::from_parts(&parts);
        drop(body);
        tracing::info!(sub = %claims.sub, needed = permission, "permission denied");
        metrics::counter!("api_permission_denied_total").increment(1);
        // Sampled per tenant and subject: a client hammering a forbidden route writes a
        // bounded number of rows, each counting the denials left out before it.
        if let Some(left_out) = state.denials.sample(&(claims.tenant, claims.sub.clone())) {
            audit::record(
                &state.pool,
                Some(claims.tenant),
                &meta,
                audit::Event {
                    actor: &claims.sub,
                    action: audit::action::PERMISSION_DENIED,
                    outcome: "denied",
                    details: json!({
                        "method": parts.method.as_str(),
                        "path": parts.uri.path(),
                        "needed": permission,
                        "denials_not_recorded_before": left_out,
                    }),
                },
            )
            .await;
        }
        return Problem::forbidden()
            .detail(format!("this credential lacks the {permission} scope"))
            .into_response();
    }
    // After the scope check, which needs no database: signed-out tokens are refused.
    match revoke::is_revoked(&state.pool, claims.jti).await {
        Ok(false) => {}
        Ok(true) => {
            tracing::info!(sub = %claims.sub, "token refused: revoked");
            return Problem::unauthorized().into_response();
        }
        Err(e) => return db_problem(e).into_response(),
    }
    request.extensions_mut().insert(claims);
    next.run(request).await
}

/// The API router: every route of [`ROUTES`] behind its permission, the standard
/// layers, security headers, and CORS only for configured origins.
pub fn router(
    state: AppState,
    limits: HttpLimits,
    cors_origins: &[String],
) -> anyhow::Result<Router> {
    let mut router = utoipa_axum::router::OpenApiRouter::<AppState>::new();
    for route in ROUTES {
        let (schemas, paths, method_router) = (route.handler)();
        let method_router = if route.permission == PUBLIC {
            method_router
        } else {
            method_router.route_layer(axum::middleware::from_fn_with_state(
                (state.clone(), route.permission),
                enforce,
            ))
        };
        router = router.routes((schemas, paths, method_router));
    }
    let (router, _) = router.split_for_parts();
    let trusted = state.trusted_proxies.clone();
    let router = router
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            trusted,
            platform::client_addr::layer,
        ));
    let router = platform::http::with_standard_layers(router, limits)
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        ));
    if cors_origins.is_empty() {
        return Ok(router);
    }
    let origins = cors_origins
        .iter()
        .map(|o| {
            HeaderValue::from_str(o)
                .map_err(|_| anyhow::anyhow!("BEACON_CORS_ALLOWED_ORIGINS: invalid origin {o:?}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(router.layer(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([platform::http::REQUEST_ID, header::RETRY_AFTER])
            .max_age(std::time::Duration::from_secs(600)),
    ))
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeSet, sync::Arc, time::Duration};

    use axum::body::Body;
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use platform::{
        access::AccessModel,
        auth::{AUDIENCE, Claims, ISSUER, TokenVerifier, key_id},
    };
    use tower::ServiceExt as _;
    use uuid::Uuid;

    use super::*;
    use crate::TokenSigner;

    fn table() -> BTreeSet<(String, String, String)> {
        ROUTES
            .iter()
            .map(|r| {
                (
                    r.method.to_owned(),
                    r.path.to_owned(),
                    r.permission.to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn route_table_equals_the_access_model_in_both_directions() {
        let model: BTreeSet<_> = AccessModel::load()
            .api
            .routes
            .into_iter()
            .map(|r| (r.method, r.path, r.permission))
            .collect();
        let routed = table();
        let undeclared: Vec<_> = routed.difference(&model).collect();
        let missing: Vec<_> = model.difference(&routed).collect();
        assert!(
            undeclared.is_empty() && missing.is_empty(),
            "routes without (or with a different) permission in security/access-model.toml: {undeclared:?}\n\
             routes in the model that the api does not serve: {missing:?}"
        );
        assert_eq!(routed.len(), ROUTES.len(), "a route is listed twice");
    }

    fn openapi_operations() -> BTreeSet<(String, String)> {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn every_route_is_in_the_openapi_document_and_nothing_else() {
        let routed: BTreeSet<_> = ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(openapi_operations(), routed);
        // Each handler documents exactly the method and path its table row declares.
        for route in ROUTES {
            let (_, paths, _) = (route.handler)();
            let doc = serde_json::to_value(&paths).unwrap();
            let item = &doc[route.path];
            assert!(
                item.get(route.method.to_lowercase()).is_some(),
                "{} {}: the handler documents {item}",
                route.method,
                route.path
            );
        }
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["paths"]["/v1/users"]["get"]["security"][0]["bearer"][0],
            "tenant:admin"
        );
    }

    /// What is wrong with the operation ids of an OpenAPI document: every operation
    /// needs one, in lowerCamelCase with a verb and a noun (`listCampaigns`; utoipa's
    /// default, the handler's snake_case function name, does not qualify), and no two
    /// operations may share one (client generators name their methods after them).
    fn operation_id_problems(doc: &serde_json::Value) -> Vec<String> {
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeMap::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                if !METHODS.contains(&method.as_str()) {
                    continue;
                }
                let at = format!("{} {path}", method.to_uppercase());
                let Some(id) = op["operationId"].as_str() else {
                    problems.push(format!("{at}: no operationId"));
                    continue;
                };
                let camel = id.starts_with(|c: char| c.is_ascii_lowercase())
                    && id.chars().all(|c| c.is_ascii_alphanumeric())
                    && id.chars().any(|c| c.is_ascii_uppercase());
                if !camel {
                    problems.push(format!(
                        "{at}: operationId {id:?} is not lowerCamelCase verb + noun (set operation_id in its #[utoipa::path])"
                    ));
                }
                if let Some(other) = seen.insert(id.to_owned(), at.clone()) {
                    problems.push(format!("{at}: operationId {id:?} is also {other}'s"));
                }
            }
        }
        problems
    }

    #[test]
    fn every_operation_has_a_unique_meaningful_operation_id() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let problems = operation_id_problems(&doc);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert_eq!(
            doc["paths"]["/v1/campaigns"]["get"]["operationId"],
            "listCampaigns"
        );
        assert_eq!(
            doc["paths"]["/v1/audit-log"]["get"]["operationId"],
            "listAuditLog"
        );
    }

    #[test]
    fn a_duplicate_or_missing_operation_id_is_detected() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut twice = doc.clone();
        twice["paths"]["/v1/audit-log"]["get"]["operationId"] = "listCampaigns".into();
        let problems = operation_id_problems(&twice);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("GET /v1/audit-log") && problems[0].contains("GET /v1/campaigns")
        );
        let mut missing = doc.clone();
        missing["paths"]["/v1/overview"]["get"]
            .as_object_mut()
            .unwrap()
            .remove("operationId");
        assert_eq!(
            operation_id_problems(&missing),
            ["GET /v1/overview: no operationId"]
        );
        let mut default = doc;
        default["paths"]["/v1/users"]["get"]["operationId"] = "list_users".into();
        assert_eq!(operation_id_problems(&default).len(), 1);
    }

    #[test]
    fn a_route_in_the_table_but_not_the_model_fails_the_model_check() {
        // The check above is a set comparison: prove it notices a missing declaration.
        let mut model = AccessModel::load().api.routes;
        model.retain(|r| r.path != "/v1/audit-log");
        let model: BTreeSet<_> = model
            .into_iter()
            .map(|r| (r.method, r.path, r.permission))
            .collect();
        assert!(!table().is_subset(&model));
    }

    struct Keys {
        private: Vec<u8>,
        public: Vec<u8>,
    }

    fn keys() -> Keys {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Keys {
            private: pair.serialize_pem().into_bytes(),
            public: pair.public_key_pem().into_bytes(),
        }
    }

    /// State over a database and an analytics service that do not exist: every
    /// request below is decided before either is reached.
    fn state(keys: &Keys) -> AppState {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(200))
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:1").connect_lazy();
        let analytics = proto::analytics::v1::analytics_client::AnalyticsClient::with_interceptor(
            channel,
            platform::telemetry::GrpcTracePropagation,
        );
        AppState::new(
            pool,
            Arc::new(TokenVerifier::from_public_pems(std::slice::from_ref(&keys.public)).unwrap()),
            Arc::new(
                TokenSigner::new(&keys.private, &keys.public, time::Duration::minutes(5)).unwrap(),
            ),
            analytics,
            Duration::from_millis(500),
        )
    }

    const LIMITS: HttpLimits = HttpLimits {
        body_bytes: 4096,
        request_timeout: Duration::from_secs(5),
    };

    fn app(keys: &Keys) -> Router {
        router(state(keys), LIMITS, &[]).unwrap()
    }

    fn claims(scope: &str) -> Claims {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: format!("user:{}", Uuid::new_v4()),
            tenant: Uuid::new_v4(),
            scope: scope.into(),
            iat: now,
            nbf: now,
            exp: now + 300,
            jti: Uuid::new_v4(),
        }
    }

    fn sign(keys: &Keys, c: &Claims) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(key_id(&keys.public).unwrap());
        jsonwebtoken::encode(&h, c, &EncodingKey::from_ed_pem(&keys.private).unwrap()).unwrap()
    }

    async fn get(app: &Router, path: &str, token: Option<&str>) -> Response {
        let mut req = Request::get(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        app.clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn problem(response: Response) -> (StatusCode, serde_json::Value) {
        let status = response.status();
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{status}"
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn forged_and_broken_tokens_get_401_from_a_real_route() {
        let good = keys();
        let app = app(&good);
        let kid = key_id(&good.public).unwrap();
        let c = claims("kpis:read tenant:admin");
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
        let body = b64(&serde_json::to_value(&c).unwrap());
        let mut forged = vec![(
            "none",
            format!(
                "{}.{body}.",
                b64(&json!({ "alg": "none", "typ": "JWT", "kid": kid }))
            ),
        )];
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.clone());
        forged.push((
            "hs256 with the public key",
            jsonwebtoken::encode(&hs, &c, &EncodingKey::from_secret(&good.public)).unwrap(),
        ));
        let other = keys();
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(kid.clone());
        forged.push((
            "wrong key, our kid",
            jsonwebtoken::encode(&h, &c, &EncodingKey::from_ed_pem(&other.private).unwrap())
                .unwrap(),
        ));
        forged.push(("unknown key", sign(&other, &c)));
        let now = c.iat;
        forged.push((
            "expired",
            sign(
                &good,
                &Claims {
                    exp: now - 60,
                    nbf: now - 120,
                    ..c.clone()
                },
            ),
        ));
        forged.push((
            "not yet valid",
            sign(
                &good,
                &Claims {
                    nbf: now + 120,
                    ..c.clone()
                },
            ),
        ));
        forged.push((
            "wrong audience",
            sign(
                &good,
                &Claims {
                    aud: "other".into(),
                    ..c.clone()
                },
            ),
        ));
        forged.push((
            "wrong issuer",
            sign(
                &good,
                &Claims {
                    iss: "evil".into(),
                    ..c.clone()
                },
            ),
        ));
        let valid = sign(&good, &c);
        let mut parts: Vec<String> = valid.split('.').map(str::to_owned).collect();
        parts[1] = b64(&serde_json::to_value(Claims {
            tenant: Uuid::new_v4(),
            ..c.clone()
        })
        .unwrap());
        forged.push(("tampered claims", parts.join(".")));
        forged.push(("garbage", "not-a-jwt".to_owned()));
        for path in ["/v1/overview", "/v1/users", "/v1/audit-log"] {
            let (status, _) = problem(get(&app, path, None).await).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "no token on {path}");
            for (name, token) in &forged {
                let response = get(&app, path, Some(token)).await;
                assert_eq!(response.headers()["www-authenticate"], "Bearer");
                let (status, body) = problem(response).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{name} on {path}");
                assert_eq!(body["type"], "https://beacon.dev/problems/unauthorized");
            }
        }
    }

    #[test]
    fn the_verified_token_memo_rechecks_expiry_and_never_matches_other_bytes() {
        let k = keys();
        let verifier = TokenVerifier::from_public_pems(std::slice::from_ref(&k.public)).unwrap();
        let memo = VerifiedTokens::new(2);
        let header = |t: &str| HeaderValue::from_str(&format!("Bearer {t}")).unwrap();
        let c = claims("kpis:read");
        let good = sign(&k, &c);
        assert_eq!(memo.verify(&verifier, Some(&header(&good))).unwrap(), c);
        assert_eq!(memo.verify(&verifier, Some(&header(&good))).unwrap(), c);
        // A token that verified once but has expired since is refused from the memo.
        let key = VerifiedTokens::key(&good);
        memo.entries.lock().unwrap().get_mut(&key).unwrap().exp = 0;
        assert!(
            memo.verify(&verifier, Some(&header(&good))).is_ok(),
            "re-verified"
        );
        let expired = Claims {
            exp: c.iat - 60,
            nbf: c.iat - 120,
            ..c.clone()
        };
        memo.entries
            .lock()
            .unwrap()
            .insert(VerifiedTokens::key("forged"), expired);
        assert!(memo.verify(&verifier, Some(&header("forged"))).is_err());
        // Bounded.
        for _ in 0..5 {
            let t = sign(&k, &claims("kpis:read"));
            memo.verify(&verifier, Some(&header(&t))).unwrap();
        }
        assert!(memo.entries.lock().unwrap().len() <= 2);
    }

    #[tokio::test]
    async fn scopes_are_enforced_by_the_table() {
        let k = keys();
        let app = app(&k);
        let viewer = sign(&k, &claims("kpis:read"));
        let ingest = sign(&k, &claims("events:write"));
        for route in ROUTES
            .iter()
            .filter(|r| r.permission == ADMIN && r.method == "GET")
        {
            let path = route.path.replace("{id}", &Uuid::new_v4().to_string());
            let (status, _) = problem(get(&app, &path, Some(&viewer)).await).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "viewer on {path}");
        }
        for route in ROUTES.iter().filter(|r| r.permission == KPIS) {
            let path = route.path.replace("{id}", &Uuid::new_v4().to_string());
            let mut req = Request::builder().method(route.method).uri(&path);
            req = req.header("authorization", format!("Bearer {ingest}"));
            let response = app
                .clone()
                .oneshot(req.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let (status, body) = problem(response).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "events:write key on {path}");
            assert!(body["detail"].as_str().unwrap().contains("kpis:read"));
        }
    }

    #[tokio::test]
    async fn errors_are_problems_and_headers_are_set() {
        let k = keys();
        let app = app(&k);
        let response = get(&app, "/v1/nope", None).await;
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert!(response.headers().contains_key("x-request-id"));
        assert!(
            response
                .headers()
                .get("access-control-allow-origin")
                .is_none()
        );
        let (status, _) = problem(response).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // Strict JSON: unknown fields, wrong types, wrong content type, oversize.
        let post = |body: &str, ct: &str| {
            Request::post("/v1/auth/token")
                .header("content-type", ct)
                .body(Body::from(body.to_owned()))
                .unwrap()
        };
        for (body, ct, want) in [
            (
                r#"{"grant_type":"password","username":"a","password":"b","admin":true}"#,
                "application/json",
                422,
            ),
            (r#"{"grant_type":"magic"}"#, "application/json", 422),
            ("{", "application/json", 400),
            (
                "grant_type=password",
                "application/x-www-form-urlencoded",
                415,
            ),
        ] {
            let response = app.clone().oneshot(post(body, ct)).await.unwrap();
            let (status, _) = problem(response).await;
            assert_eq!(status.as_u16(), want, "{body}");
        }
        let huge = format!(
            r#"{{"grant_type":"password","username":"{}","password":"x"}}"#,
            "a".repeat(10_000)
        );
        let (status, _) = problem(
            app.clone()
                .oneshot(post(&huge, "application/json"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        // The spec is public.
        let spec = get(&app, "/v1/openapi.json", None).await;
        assert_eq!(spec.status(), StatusCode::OK);
        // Bad queries of signed-in callers (page size, unknown fields, a bad id) are
        // checked in tests/e2e/session.rs: the deny-list look-up needs the database.
    }

    #[tokio::test]
    async fn analytics_down_is_a_fast_503_not_a_hang() {
        let k = keys();
        let app = app(&k);
        let viewer = sign(&k, &claims("kpis:read"));
        let started = std::time::Instant::now();
        let (status, body) =
            problem(get(&app, "/v1/overview?currency=EUR", Some(&viewer)).await).await;
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::GATEWAY_TIMEOUT,
            "{status}"
        );
        assert!(body.get("detail").is_none(), "5xx carry no detail: {body}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn cors_is_off_unless_configured() {
        let k = keys();
        let app = router(state(&k), LIMITS, &["https://app.example".to_owned()]).unwrap();
        let preflight = |origin: &str| {
            Request::options("/v1/overview")
                .header("origin", origin)
                .header("access-control-request-method", "GET")
                .body(Body::empty())
                .unwrap()
        };
        let ok = app
            .clone()
            .oneshot(preflight("https://app.example"))
            .await
            .unwrap();
        assert_eq!(
            ok.headers()["access-control-allow-origin"],
            "https://app.example"
        );
        let evil = app
            .oneshot(preflight("https://evil.example"))
            .await
            .unwrap();
        assert!(evil.headers().get("access-control-allow-origin").is_none());
    }

    #[tokio::test]
    async fn login_limits_apply_before_any_database_work() {
        let k = keys();
        let state = AppState {
            trusted_proxies: platform::client_addr::TrustedProxies::parse("10.0.0.1").unwrap(),
            ..state(&k)
        };
        let hashing = state.hashing.clone();
        let app = router(state, LIMITS, &[]).unwrap();
        let grant = |peer: &str, forwarded: &str, username: &str| {
            let peer: std::net::SocketAddr = format!("{peer}:4711").parse().unwrap();
            let body = json!({ "grant_type": "password", "username": username, "password": "x" });
            let request = Request::post("/v1/auth/token")
                .header("content-type", "application/json")
                .header("x-forwarded-for", forwarded)
                .extension(axum::extract::ConnectInfo(peer))
                .body(Body::from(body.to_string()))
                .unwrap();
            let app = app.clone();
            async move { problem(app.oneshot(request).await.unwrap()).await }
        };
        // Malformed usernames are refused without a look-up (there is no database) and
        // cost the address a failure; an untrusted caller's X-Forwarded-For is ignored.
        for i in 0..21 {
            let (status, _) =
                grant("192.0.2.1", &format!("198.51.100.{i}"), "not an address").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
        }
        let (status, body) = grant("192.0.2.1", "198.51.100.99", "nobody@acme.example").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        // A trusted proxy's forwarded address is a key of its own.
        let (status, _) = grant("10.0.0.1", "198.51.100.1", "not an address").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // Every verification permit taken: 503 with Retry-After at once, no look-up.
        let held: Vec<_> = std::iter::from_fn(|| hashing.try_acquire().ok()).collect();
        assert!(!held.is_empty());
        let response = app
            .clone()
            .oneshot(
                Request::post("/v1/auth/token")
                    .header("content-type", "application/json")
                    .extension(axum::extract::ConnectInfo(
                        "10.0.0.1:1".parse::<std::net::SocketAddr>().unwrap(),
                    ))
                    .body(Body::from(
                        r#"{"grant_type":"password","username":"Someone@Acme.Example","password":"x"}"#,
                    ))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.headers()["retry-after"], "1");
        let (status, body) = problem(response).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["type"], "https://beacon.dev/problems/busy");
    }
}
