//! The only way a handler reaches the database: [`Tenant`], extracted from the
//! verified caller, opens transactions scoped to the caller's tenant (row-level
//! security). Handlers never see the pool, so none can open a tenant-less transaction
//! or one for another tenant.
//!
//! `Tenant` opens its transaction when the handler asks ([`Tenant::begin`]), not
//! while extracting: a request is validated (query, body, page sizes) before any
//! connection is taken, so a flood of bad requests costs no database work.

use std::ops::{Deref, DerefMut};

use axum::{extract::FromRequestParts, http::request::Parts};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    AppState,
    error::{ApiError, Context as _},
    extract::Caller,
};

/// The verified caller and the way to its tenant's data.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub caller: Caller,
    pool: PgPool,
}

impl Tenant {
    pub fn id(&self) -> Uuid {
        self.caller.tenant()
    }

    /// A transaction in which row-level security sees only the caller's tenant.
    pub async fn begin(&self) -> Result<TenantTx, ApiError> {
        TenantTx::begin(&self.pool, self.id()).await
    }
}

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        Ok(Self {
            caller,
            pool: state.pool.clone(),
        })
    }
}

/// An open transaction of one tenant; dereferences to the connection the query
/// functions take. Dropped without [`commit`](Self::commit), it rolls back.
#[derive(Debug)]
pub struct TenantTx {
    tenant: Uuid,
    tx: Transaction<'static, Postgres>,
}

impl TenantTx {
    /// For a tenant proven otherwise than by a bearer token: the token endpoint,
    /// whose tenant is the one of the credential it just verified.
    pub(crate) async fn begin(pool: &PgPool, tenant: Uuid) -> Result<Self, ApiError> {
        let tx = platform::db::begin_for_tenant(pool, tenant)
            .await
            .context("beginning a tenant transaction")?;
        Ok(Self { tenant, tx })
    }

    pub fn tenant(&self) -> Uuid {
        self.tenant
    }

    pub async fn commit(self) -> Result<(), ApiError> {
        self.tx.commit().await.context("committing")
    }
}

impl Deref for TenantTx {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse as _;

    use super::*;

    /// A handler that takes `Tenant` on a request the permission layer did not
    /// verify gets no transaction at all: 401, before any database work (the pool
    /// here points nowhere).
    #[tokio::test]
    async fn no_verified_caller_no_tenant() {
        let state = crate::routes::tests::state(&crate::routes::tests::keys());
        let (mut parts, _) = Request::get("/v1/users").body(()).unwrap().into_parts();
        let refused = Tenant::from_request_parts(&mut parts, &state)
            .await
            .unwrap_err()
            .into_response();
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    }
}
