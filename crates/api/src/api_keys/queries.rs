//! The API keys' SQL, run in the caller's tenant transaction.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    credentials::NewApiKey,
    error::{ApiError, Context as _},
    extract::PageSize,
};
use domain::admin::ApiKey;

const COLUMNS: &str = "id, name, prefix, scopes, created_by, created_at, revoked_at, last_used_at";

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "api_keys.list"))]
pub(super) async fn list(
    conn: &mut PgConnection,
    prefix: Option<&str>,
    limit: PageSize,
    offset: i64,
) -> Result<Vec<ApiKey>, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.api_keys WHERE ($1::text IS NULL OR starts_with(prefix, $1))
         ORDER BY created_at, id LIMIT $2 OFFSET $3"
    ))
    .bind(prefix)
    .bind(limit.as_i64())
    .bind(offset)
    .fetch_all(conn)
    .await
    .context("listing API keys")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "api_keys.get"))]
pub(super) async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<ApiKey>, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM app.api_keys WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .context("reading an API key")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "api_keys.insert"))]
pub(super) async fn insert(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
    key: &NewApiKey,
    scopes: &[&str],
    created_by: Option<Uuid>,
) -> Result<ApiKey, ApiError> {
    sqlx::query_as(&format!(
        "INSERT INTO app.api_keys (id, tenant_id, name, prefix, secret_hash, scopes, created_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(name)
    .bind(&key.prefix)
    .bind(&key.secret_hash)
    .bind(scopes)
    .bind(created_by)
    .fetch_one(conn)
    .await
    .context("creating an API key")
}

/// Revokes a key (once); its prefix and whether this call revoked it.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "api_keys.revoke"))]
pub(super) async fn revoke(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, bool)>, ApiError> {
    sqlx::query_as(
        "UPDATE app.api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING prefix, revoked_at = now()",
    )
    .bind(id)
    .fetch_optional(conn)
    .await
    .context("revoking an API key")
}

/// Records that the key was just used (a token was issued for it). Writes at most once a
/// minute per key: within the minute the UPDATE matches no row and writes nothing, so
/// a client exchanging its key in a loop costs one row write a minute, not one a token.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "api_keys.mark_used"))]
pub(crate) async fn mark_used(conn: &mut PgConnection, id: Uuid) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE app.api_keys SET last_used_at = now()
         WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
    )
    .bind(id)
    .execute(conn)
    .await
    .context("recording an API key's last use")?;
    Ok(())
}
