//! The audit log's SQL.

use sqlx::PgConnection;
use uuid::Uuid;

use domain::admin::AuditEntry;

use super::Event;
use crate::{
    error::{ApiError, Context as _},
    extract::{Meta, PageSize},
};

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "audit.insert", action = event.action))]
pub(super) async fn insert(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    meta: &Meta,
    event: &Event<'_>,
) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO app.audit_log (tenant_id, actor, action, outcome, client_addr, request_id, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(event.actor)
    .bind(event.action)
    .bind(event.outcome)
    .bind(&meta.client_addr)
    .bind(&meta.request_id)
    .bind(&event.details)
    .execute(conn)
    .await
    .context("recording an audit event")?;
    Ok(())
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "audit.list"))]
pub(super) async fn list(
    conn: &mut PgConnection,
    before: Option<i64>,
    limit: PageSize,
) -> Result<Vec<AuditEntry>, ApiError> {
    sqlx::query_as(
        "SELECT id, occurred_at, actor, action, outcome, client_addr, request_id, details
         FROM app.audit_log WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit.as_i64())
    .fetch_all(conn)
    .await
    .context("listing the audit log")
}
