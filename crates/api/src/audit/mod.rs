//! The audit log (`app.audit_log`): security events with tenant, actor, client address
//! and request id. The api may only INSERT and SELECT, and row-level security limits
//! it to the tenant of the transaction (events without a tenant, such as a failed
//! login for an unknown account, are visible to operators only).

mod queries;

use axum::Json;
use domain::admin::AuditPage;
use serde::Deserialize;
use sqlx::PgPool;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    error::{ApiError, Context as _},
    extract::{AppQuery, Meta, PageSize, bad_query},
    openapi::Errors,
    tenant::{Tenant, TenantTx},
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
    /// Details name the erasure and the subject's keyed hash, never the `user_key`.
    pub const SUBJECT_ERASURE_REQUESTED: &str = "subject.erasure_requested";
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

/// Records inside the caller's open transaction (whose tenant row-level security
/// checks).
pub async fn record_in(tx: &mut TenantTx, meta: &Meta, event: Event<'_>) -> Result<(), ApiError> {
    let tenant = tx.tenant();
    queries::insert(tx, Some(tenant), meta, &event).await
}

/// Records, inside the caller's open transaction, that `actor` did `action`.
pub async fn success(
    tx: &mut TenantTx,
    meta: &Meta,
    actor: &str,
    action: &'static str,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    let outcome = "success";
    record_in(
        tx,
        meta,
        Event {
            actor,
            action,
            outcome,
            details,
        },
    )
    .await
}

/// Records in a transaction of its own. Failing to audit is logged, never hidden.
pub async fn record(pool: &PgPool, tenant: Option<Uuid>, meta: &Meta, event: Event<'_>) {
    let result = async {
        match tenant {
            Some(t) => {
                let mut tx = TenantTx::begin(pool, t).await?;
                record_in(&mut tx, meta, event).await?;
                tx.commit().await
            }
            None => {
                let mut conn = pool.acquire().await.context("audit connection")?;
                queries::insert(&mut conn, None, meta, &event).await
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

/// The caller's tenant's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit-log", operation_id = "listAuditLog", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), Errors))]
pub async fn list(
    tenant: Tenant,
    AppQuery(q): AppQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let limit = PageSize::parse(q.limit, 50)?;
    if q.before.is_some_and(|b| b < 1) {
        return Err(bad_query("before must be at least 1").into());
    }
    let mut tx = tenant.begin().await?;
    let entries = queries::list(&mut tx, q.before, limit).await?;
    tx.commit().await?;
    let next_before = (entries.len() == limit.get() as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}
