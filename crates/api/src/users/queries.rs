//! The users' SQL, run in the caller's tenant transaction.

use axum::http::StatusCode;
use platform::http::Problem;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    credentials::Email,
    error::{ApiError, Context as _},
    extract::PageSize,
};
use domain::admin::User;

const COLUMNS: &str =
    "id, email, display_name, role, disabled_at IS NOT NULL AS disabled, created_at";

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "users.list"))]
pub(super) async fn list(
    conn: &mut PgConnection,
    limit: PageSize,
    offset: i64,
) -> Result<Vec<User>, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.users ORDER BY created_at, id LIMIT $1 OFFSET $2"
    ))
    .bind(limit.as_i64())
    .bind(offset)
    .fetch_all(conn)
    .await
    .context("listing users")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "users.get"))]
pub(super) async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<User>, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM app.users WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .context("reading a user")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "users.insert"))]
pub(super) async fn insert(
    conn: &mut PgConnection,
    tenant: Uuid,
    email: &Email,
    display_name: &str,
    password_hash: &str,
    role: &str,
) -> Result<User, ApiError> {
    sqlx::query_as(&format!(
        "INSERT INTO app.users (id, tenant_id, email, display_name, password_hash, role)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(email.as_str())
    .bind(display_name)
    .bind(password_hash)
    .bind(role)
    .fetch_one(conn)
    .await
    .map_err(|e| match &e {
        // Taken, perhaps in another tenant: say nothing about where.
        sqlx::Error::Database(d) if d.constraint() == Some("users_email_key") => Problem::new(
            StatusCode::CONFLICT,
            "conflict",
            "This e-mail address cannot be used",
        )
        .into(),
        _ => ApiError::Db {
            context: "creating a user",
            source: e,
        },
    })
}

/// The user's role and disabled flag, locked until the transaction ends.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "users.lock"))]
pub(super) async fn lock(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<(String, bool)>, ApiError> {
    sqlx::query_as("SELECT role, disabled_at IS NOT NULL FROM app.users WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(conn)
        .await
        .context("locking a user")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "users.update"))]
pub(super) async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    role: Option<&str>,
    disabled: Option<bool>,
) -> Result<User, ApiError> {
    sqlx::query_as(&format!(
        "UPDATE app.users SET role = coalesce($2, role),
             disabled_at = CASE WHEN $3::boolean IS NULL THEN disabled_at
                                WHEN $3 THEN coalesce(disabled_at, now()) ELSE NULL END
         WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(role)
    .bind(disabled)
    .fetch_one(conn)
    .await
    .context("updating a user")
}
