//! The route table: every route, the permission its caller needs, and its handler, in
//! ONE list ([`ROUTES`]). The router and the OpenAPI document are both built from it,
//! and tests check it against `[api]` in `security/access-model.toml` in both
//! directions. A handler learns who calls through the [`Caller`](crate::extract::Caller)
//! extractor, which only the permission layer below can satisfy.

mod middleware;
#[cfg(test)]
pub(crate) mod tests;

use axum::Router;
use platform::{access::PUBLIC, auth::scope, http::HttpLimits};
use utoipa_axum::{router::UtoipaMethodRouter, routes};

pub use crate::openapi::openapi;
use crate::{AppState, api_keys, audit, auth, campaigns, kpis, openapi, revoke, users};

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
    "GET" "/v1/openapi.json" PUBLIC => openapi::openapi_json;
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
    "GET" "/v1/users" ADMIN => users::list_users;
    "POST" "/v1/users" ADMIN => users::create_user;
    "GET" "/v1/users/{id}" ADMIN => users::get_user;
    "PATCH" "/v1/users/{id}" ADMIN => users::update_user;
    "GET" "/v1/api-keys" ADMIN => api_keys::list_keys;
    "POST" "/v1/api-keys" ADMIN => api_keys::create_key;
    "GET" "/v1/api-keys/{id}" ADMIN => api_keys::get_key;
    "DELETE" "/v1/api-keys/{id}" ADMIN => api_keys::revoke_key;
    "GET" "/v1/audit-log" ADMIN => audit::list;
};

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
                middleware::enforce,
            ))
        };
        router = router.routes((schemas, paths, method_router));
    }
    let (router, _) = router.split_for_parts();
    platform::metrics::register_http_routes(ROUTES.iter().map(|r| (r.method, r.path)));
    let trusted = state.trusted_proxies.clone();
    let router = router
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            trusted,
            platform::client_addr::layer,
        ));
    let router = middleware::security_headers(platform::http::with_standard_layers(router, limits));
    middleware::cors(router, cors_origins)
}
