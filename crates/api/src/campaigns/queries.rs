//! The campaigns' SQL, run in the caller's tenant transaction.

use axum::http::StatusCode;
use platform::http::Problem;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Campaign;
use crate::{
    error::{ApiError, Context as _},
    extract::PageSize,
};

const COLUMNS: &str = "id, name, archived, created_at, updated_at";

/// A unique name taken is the caller's conflict; anything else is ours.
fn conflict(e: sqlx::Error, context: &'static str) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.constraint() == Some("campaigns_tenant_name_key") => {
            Problem::new(
                StatusCode::CONFLICT,
                "conflict",
                "A campaign with this name exists",
            )
            .into()
        }
        _ => ApiError::Db { context, source: e },
    }
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "campaigns.list"))]
pub(super) async fn list(
    conn: &mut PgConnection,
    archived: Option<bool>,
    limit: PageSize,
    offset: i64,
) -> Result<Vec<Campaign>, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.campaigns WHERE ($1::boolean IS NULL OR archived = $1)
         ORDER BY name, id LIMIT $2 OFFSET $3"
    ))
    .bind(archived)
    .bind(limit.as_i64())
    .bind(offset)
    .fetch_all(conn)
    .await
    .context("listing campaigns")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "campaigns.get"))]
pub(super) async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Campaign>, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.campaigns WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
    .context("reading a campaign")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "campaigns.insert"))]
pub(super) async fn insert(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
    archived: bool,
) -> Result<Campaign, ApiError> {
    sqlx::query_as(&format!(
        "INSERT INTO app.campaigns (id, tenant_id, name, archived) VALUES ($1, $2, $3, $4)
         RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(name)
    .bind(archived)
    .fetch_one(conn)
    .await
    .map_err(|e| conflict(e, "creating a campaign"))
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "campaigns.update"))]
pub(super) async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    name: Option<&str>,
    archived: Option<bool>,
) -> Result<Option<Campaign>, ApiError> {
    sqlx::query_as(&format!(
        "UPDATE app.campaigns SET name = coalesce($2, name), archived = coalesce($3, archived),
             updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(name)
    .bind(archived)
    .fetch_optional(conn)
    .await
    .map_err(|e| conflict(e, "updating a campaign"))
}
