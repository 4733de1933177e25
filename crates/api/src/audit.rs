//! The audit log (`app.audit_log`): security events with tenant, actor, client address
//! and request id. The api may only INSERT and SELECT, and row-level security limits
//! it to the tenant of the transaction (events without a tenant, such as a failed
//! login for an unknown account, are visible to operators only).

use axum::Json;
use platform::http::Problem;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    AppState,
    extract::{AppQuery, Caller, Meta},
    routes::{Errors, db_problem},
};

pub mod action {
    pub const LOGIN: &str = "login";
    pub const TOKEN_ISSUED: &str = "token.issued";
    pub const TOKEN_REVOKED: &str = "token.revoked";
    pub const PERMISSION_DENIED: &str = "permission.denied";
    pub const USER_CREATED: &str = "user.created";
    pub const USER_ROLE_CHANGED: &str = "user.role_changed";
    pub const USER_DISABLED: &str = "user.disabled";
    pub const USER_ENABLED: &str = "user.enabled";
    pub const API_KEY_CREATED: &str = "api_key.created";
    pub const API_KEY_REVOKED: &str = "api_key.revoked";
    pub const CAMPAIGN_CREATED: &str = "campaign.created";
    pub const CAMPAIGN_UPDATED: &str = "campaign.updated";
}

/// One event to record.
#[derive(Debug)]
pub struct Event<'a> {
    pub actor: &'a str,
    pub action: &'static str,
    /// `success`, `failure` or `denied`.
    pub outcome: &'static str,
    pub details: serde_json::Value,
}

/// Records inside an open transaction (whose tenant row-level security checks).
pub async fn record_in(
    conn: &mut PgConnection,
    tenant: Option<Uuid>,
    meta: &Meta,
    event: Event<'_>,
) -> Result<(), sqlx::Error> {
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
    .await?;
    Ok(())
}

/// Records in a transaction of its own. Failing to audit is logged, never hidden.
pub async fn record(pool: &PgPool, tenant: Option<Uuid>, meta: &Meta, event: Event<'_>) {
    let result = async {
        match tenant {
            Some(t) => {
                let mut tx = platform::db::begin_for_tenant(pool, t).await?;
                record_in(&mut tx, tenant, meta, event).await?;
                tx.commit().await
            }
            None => {
                let mut conn = pool.acquire().await?;
                record_in(&mut conn, None, meta, event).await
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "audit record failed");
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Entries older than this id (from `next_before`).
    #[param(minimum = 1)]
    before: Option<i64>,
    /// 1..=100, default 50.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct AuditEntry {
    id: i64,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    occurred_at: time::OffsetDateTime,
    actor: String,
    action: String,
    outcome: String,
    client_addr: Option<String>,
    request_id: Option<String>,
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<i64>,
}

/// The caller's tenant's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit-log", operation_id = "listAuditLog", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), Errors))]
pub async fn list(
    axum::extract::State(state): axum::extract::State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<AuditQuery>,
) -> Result<Json<AuditPage>, Problem> {
    let limit = crate::routes::page_size(q.limit, 50)?;
    if q.before.is_some_and(|b| b < 1) {
        return Err(Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            "bad-request",
            "Invalid query",
        )
        .detail("before must be at least 1"));
    }
    let mut tx = platform::db::begin_for_tenant(&state.pool, caller.tenant())
        .await
        .map_err(db_problem)?;
    let entries: Vec<AuditEntry> = sqlx::query_as(
        "SELECT id, occurred_at, actor, action, outcome, client_addr, request_id, details
         FROM app.audit_log WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(q.before)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await
    .map_err(db_problem)?;
    tx.commit().await.map_err(db_problem)?;
    let next_before = (entries.len() == limit as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}
