//! Sign-out: `POST /v1/auth/revoke` puts the calling token's `jti` on a deny-list
//! (`app.revoked_tokens`) until the token expires. The permission layer of `routes`
//! asks [`is_revoked`] after verifying the signature, so a revoked token gets 401 on
//! every later request, on every replica of the api.

use axum::{extract::State, http::StatusCode};
use platform::http::Problem;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    AppState,
    audit::{self, Event, action},
    extract::{Caller, Meta},
    routes::{Errors, db_problem},
};

/// Whether the token with this `jti` was revoked. One statement through a
/// SECURITY DEFINER function that answers exactly this and nothing else.
#[tracing::instrument(name = "db.query", skip(pool), fields(db.operation = "token_revoked"))]
pub async fn is_revoked(pool: &PgPool, jti: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT app.token_revoked($1)")
        .bind(jti)
        .fetch_one(pool)
        .await
}

/// Revoke the access token that authenticates this request (sign out). Any later
/// request with it is answered 401 until it expires; its row is kept until then, and
/// the tenant's expired rows are deleted here.
#[utoipa::path(post, path = "/v1/auth/revoke", operation_id = "revokeToken", tag = "auth",
    responses((status = 204, description = "Revoked until it expires"), Errors))]
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    meta: Meta,
) -> Result<StatusCode, Problem> {
    let claims = &caller.0;
    let expires_at = time::OffsetDateTime::from_unix_timestamp(claims.exp).map_err(|_| {
        tracing::error!(exp = claims.exp, "verified token with an impossible expiry");
        Problem::internal()
    })?;
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    sqlx::query("DELETE FROM app.revoked_tokens WHERE expires_at < now()")
        .execute(&mut *tx)
        .await
        .map_err(db_problem)?;
    sqlx::query(
        "INSERT INTO app.revoked_tokens (jti, tenant_id, subject, expires_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(claims.jti)
    .bind(claims.tenant)
    .bind(&claims.sub)
    .bind(expires_at)
    .execute(&mut *tx)
    .await
    .map_err(db_problem)?;
    audit::record_in(
        &mut tx,
        Some(caller.tenant()),
        &meta,
        Event {
            actor: caller.actor(),
            action: action::TOKEN_REVOKED,
            outcome: "success",
            details: json!({ "jti": claims.jti, "expires_at": claims.exp }),
        },
    )
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    Ok(StatusCode::NO_CONTENT)
}
