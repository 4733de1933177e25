//! The layers around the route table: the permission check (token verification,
//! scope, audited denials, the sign-out deny-list), the security headers and CORS.

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use platform::http::Problem;
use serde_json::json;
use tower_http::{cors::CorsLayer, set_header::SetResponseHeaderLayer};

use crate::{AppState, audit, extract::Meta, revoke};

/// Verifies the bearer token and checks the route's permission; puts the claims in
/// the request for [`Caller`](crate::extract::Caller). A denial is audited.
pub(super) async fn enforce(
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
        metrics::counter!(crate::PERMISSION_DENIED).increment(1);
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
        Err(e) => return e.into_response(),
    }
    request.extensions_mut().insert(claims);
    next.run(request).await
}

/// What every answer of the api carries: it is never framed, never a document that
/// loads anything, and only ever spoken to over TLS.
pub(super) fn security_headers(router: Router) -> Router {
    router
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
        ))
}

/// CORS for the configured origins only; none configured (the default) = CORS off.
pub(super) fn cors(router: Router, origins: &[String]) -> anyhow::Result<Router> {
    if origins.is_empty() {
        return Ok(router);
    }
    let origins = origins
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
