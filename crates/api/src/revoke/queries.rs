//! The deny-list's SQL: the look-up on every authenticated request (no transaction),
//! and the sign-out's writes in the caller's tenant transaction.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::{ApiError, Context as _};

/// Whether the token with this `jti` was revoked, or its tenant offboarded. One
/// statement through a SECURITY DEFINER function that answers exactly this and nothing
/// else.
#[tracing::instrument(name = "db.query", skip(pool), fields(db.operation = "revoked_tokens.is_revoked"))]
pub(crate) async fn is_revoked(pool: &PgPool, jti: Uuid, tenant: Uuid) -> Result<bool, ApiError> {
    sqlx::query_scalar("SELECT app.token_revoked($1, $2)")
        .bind(jti)
        .bind(tenant)
        .fetch_one(pool)
        .await
        .context("checking the token deny-list")
}

/// Deletes the tenant's rows whose tokens have expired (they fail verification anyway).
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "revoked_tokens.prune"))]
pub(super) async fn prune_expired(conn: &mut PgConnection) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM app.revoked_tokens WHERE expires_at < now()")
        .execute(conn)
        .await
        .context("pruning expired revoked tokens")?;
    Ok(())
}

/// Puts a token on the deny-list until it expires (once: a second sign-out is a no-op).
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "revoked_tokens.insert"))]
pub(super) async fn insert(
    conn: &mut PgConnection,
    jti: Uuid,
    tenant: Uuid,
    subject: &str,
    expires_at: time::OffsetDateTime,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO app.revoked_tokens (jti, tenant_id, subject, expires_at)
         VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(tenant)
    .bind(subject)
    .bind(expires_at)
    .execute(conn)
    .await
    .context("revoking a token")?;
    Ok(())
}
