//! The one read the KPI routes make themselves: the tenant's reporting currency.

use sqlx::PgConnection;

use crate::error::{ApiError, Context as _};

#[tracing::instrument(name = "db.query", skip_all, fields(db.operation = "tenants.currency"))]
pub(super) async fn reporting_currency(
    conn: &mut PgConnection,
) -> Result<Option<String>, ApiError> {
    sqlx::query_scalar("SELECT currency::text FROM app.tenants")
        .fetch_optional(conn)
        .await
        .context("reading the reporting currency")
}
