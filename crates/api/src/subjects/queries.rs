//! The erasure ledger's SQL, run in the caller's tenant transaction (row-level security
//! limits every statement to the caller's tenant; the api may only SELECT and INSERT).

use sqlx::PgConnection;
use uuid::Uuid;

use domain::admin::Erasure;

use crate::error::{ApiError, Context as _};

const COLUMNS: &str =
    "id, status, encode(subject_hash, 'hex') AS subject_hash, requested_by, requested_at,
     events_erased, cardinality(days) AS days_recomputed, erased_at, completed_at";

/// Advisory-lock namespace of a tenant's erasure requests ("bers").
const REQUEST_LOCK: i32 = 0x6265_7273;

/// Serializes the erasure requests of one tenant until the transaction ends.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "erasures.lock"))]
pub(super) async fn lock_tenant(conn: &mut PgConnection, tenant: Uuid) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2::text))")
        .bind(REQUEST_LOCK)
        .bind(tenant)
        .execute(conn)
        .await
        .context("locking the tenant's erasure requests")?;
    Ok(())
}

/// The open erasure of this subject, if any.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "erasures.open_for"))]
pub(super) async fn open_for(
    conn: &mut PgConnection,
    hash: &[u8; 32],
) -> Result<Option<Erasure>, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM app.erasures WHERE subject_hash = $1 AND status <> 'completed'"
    ))
    .bind(hash.as_slice())
    .fetch_optional(conn)
    .await
    .context("looking up an open erasure")
}

/// How many erasures of the tenant are open.
#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "erasures.count_open"))]
pub(super) async fn count_open(conn: &mut PgConnection) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT count(*) FROM app.erasures WHERE status <> 'completed'")
        .fetch_one(conn)
        .await
        .context("counting open erasures")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "erasures.insert"))]
pub(super) async fn insert(
    conn: &mut PgConnection,
    tenant: Uuid,
    hash: &[u8; 32],
    user_key: &str,
    requested_by: &str,
) -> Result<Erasure, ApiError> {
    sqlx::query_as(&format!(
        "INSERT INTO app.erasures (id, tenant_id, subject_hash, user_key, requested_by)
         VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::new_v4())
    .bind(tenant)
    .bind(hash.as_slice())
    .bind(user_key)
    .bind(requested_by)
    .fetch_one(conn)
    .await
    .context("recording an erasure")
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "erasures.get"))]
pub(super) async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<Erasure>, ApiError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM app.erasures WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .context("reading an erasure")
}
