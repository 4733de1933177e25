//! Sign-out: `POST /v1/auth/revoke` puts the calling token's `jti` on a deny-list
//! (`app.revoked_tokens`) until the token expires. The permission layer of `routes`
//! asks [`is_revoked`] after verifying the signature, so a revoked token gets 401 on
//! every later request, on every replica of the api.

mod queries;

use axum::http::StatusCode;
use platform::http::Problem;
use serde_json::json;

pub(crate) use queries::is_revoked;

use crate::{
    audit::{self, action},
    error::ApiError,
    extract::Meta,
    openapi::Errors,
    tenant::Tenant,
};

/// Revoke the access token that authenticates this request (sign out). Any later
/// request with it is answered 401 until it expires; its row is kept until then, and
/// the tenant's expired rows are deleted here.
#[utoipa::path(post, path = "/v1/auth/revoke", operation_id = "revokeToken", tag = "auth",
    responses((status = 204, description = "Revoked until it expires"), Errors))]
pub async fn revoke(tenant: Tenant, meta: Meta) -> Result<StatusCode, ApiError> {
    let claims = &tenant.caller.0;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| {
        tracing::error!(exp = claims.exp, "verified token with an impossible expiry");
        Problem::internal()
    })?;
    let mut tx = tenant.begin().await?;
    queries::prune_expired(&mut tx).await?;
    queries::insert(&mut tx, claims.jti, tenant.id(), &claims.sub, expires_at).await?;
    audit::success(
        &mut tx,
        &meta,
        tenant.caller.actor(),
        action::TOKEN_REVOKED,
        json!({ "jti": claims.jti, "expires_at": claims.exp }),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
