//! The gRPC handlers: parse the request, run one tenant-scoped read transaction, map
//! errors to statuses that leak nothing.

use proto::analytics::v1::{
    DateRange, OverviewRequest, OverviewResponse, Totals, analytics_server::Analytics,
};
use sqlx::PgPool;
use time::{Date, format_description::well_known::Iso8601};
use tonic::{Request, Response, Status};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct AnalyticsService {
    pool: PgPool,
    max_range_days: i64,
}

impl AnalyticsService {
    pub fn new(pool: PgPool, max_range_days: i64) -> Self {
        Self {
            pool,
            max_range_days,
        }
    }
}

fn parse_tenant(s: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(s).map_err(|_| Status::invalid_argument("tenant_id must be a UUID"))
}

fn parse_date(field: &str, s: &str) -> Result<Date, Status> {
    Date::parse(s, &Iso8601::DATE)
        .map_err(|_| Status::invalid_argument(format!("{field} must be a date YYYY-MM-DD")))
}

/// An inclusive day range, bounded in length.
fn parse_range(range: Option<&DateRange>, max_days: i64) -> Result<(Date, Date), Status> {
    let range = range.ok_or_else(|| Status::invalid_argument("range is required"))?;
    let from = parse_date("range.from", &range.from)?;
    let to = parse_date("range.to", &range.to)?;
    if to < from {
        return Err(Status::invalid_argument("range.to is before range.from"));
    }
    if (to - from).whole_days() + 1 > max_days {
        return Err(Status::invalid_argument(format!(
            "range longer than {max_days} days"
        )));
    }
    Ok((from, to))
}

fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn db_error(e: sqlx::Error) -> Status {
    match &e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            tracing::warn!(error = %e, "database unavailable");
            Status::unavailable("analytics store unavailable")
        }
        sqlx::Error::Database(d) if d.code().as_deref() == Some("57014") => {
            Status::deadline_exceeded("query took too long")
        }
        _ => {
            tracing::error!(error = %e, "query failed");
            Status::internal("internal error")
        }
    }
}

/// KPI ratios; absent when the denominator is zero.
pub fn totals(impressions: i64, clicks: i64, conversions: i64, spend: i64, revenue: i64) -> Totals {
    let ratio = |n: i64, d: i64| (d != 0).then(|| n as f64 / d as f64);
    let per = |n: i64, d: i64| (d != 0).then(|| n / d);
    Totals {
        impressions,
        clicks,
        conversions,
        spend_micros: spend,
        revenue_micros: revenue,
        ctr: ratio(clicks, impressions),
        cvr: ratio(conversions, clicks),
        cpc_micros: per(spend, clicks),
        cpa_micros: per(spend, conversions),
        roas: ratio(revenue, spend),
    }
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_overview(
        &self,
        request: Request<OverviewRequest>,
    ) -> Result<Response<OverviewResponse>, Status> {
        let req = request.into_inner();
        let tenant = parse_tenant(&req.tenant_id)?;
        let (from, to) = parse_range(req.range.as_ref(), self.max_range_days)?;
        if domain::Currency::parse(&req.currency).is_none() {
            return Err(Status::invalid_argument(
                "currency must be an ISO 4217 code",
            ));
        }
        let days = (to - from).whole_days() + 1;
        let prev_to = from
            .previous_day()
            .ok_or_else(|| Status::invalid_argument("range.from too early"))?;
        let prev_from = from - time::Duration::days(days);

        let mut tx = platform::db::begin_for_tenant(&self.pool, tenant)
            .await
            .map_err(db_error)?;
        // The tenant filter is for the index; row-level security keeps this transaction
        // inside its tenant whatever the query says (see crates/db/tests/access_model.rs).
        let row: (i64, i64, i64, i64, i64, i64, i64, i64, i64, i64) = sqlx::query_as(
            "SELECT
                coalesce(sum(impressions)    FILTER (WHERE day >= $1), 0)::bigint,
                coalesce(sum(clicks)         FILTER (WHERE day >= $1), 0)::bigint,
                coalesce(sum(conversions)    FILTER (WHERE day >= $1), 0)::bigint,
                coalesce(sum(spend_micros)   FILTER (WHERE day >= $1), 0)::bigint,
                coalesce(sum(revenue_micros) FILTER (WHERE day >= $1), 0)::bigint,
                coalesce(sum(impressions)    FILTER (WHERE day < $1), 0)::bigint,
                coalesce(sum(clicks)         FILTER (WHERE day < $1), 0)::bigint,
                coalesce(sum(conversions)    FILTER (WHERE day < $1), 0)::bigint,
                coalesce(sum(spend_micros)   FILTER (WHERE day < $1), 0)::bigint,
                coalesce(sum(revenue_micros) FILTER (WHERE day < $1), 0)::bigint
             FROM output.daily_campaign_facts
             WHERE tenant_id = $5 AND day BETWEEN $2 AND $3 AND currency = $4",
        )
        .bind(from)
        .bind(prev_from)
        .bind(to)
        .bind(&req.currency)
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        metrics::counter!("analytics_requests_total", "method" => "GetOverview").increment(1);
        Ok(Response::new(OverviewResponse {
            range: Some(DateRange {
                from: format_date(from),
                to: format_date(to),
            }),
            previous_range: Some(DateRange {
                from: format_date(prev_from),
                to: format_date(prev_to),
            }),
            currency: req.currency,
            current: Some(totals(row.0, row.1, row.2, row.3, row.4)),
            previous: Some(totals(row.5, row.6, row.7, row.8, row.9)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_denominators_are_absent() {
        let t = totals(0, 0, 0, 0, 0);
        assert!(
            t.ctr.is_none()
                && t.cvr.is_none()
                && t.cpc_micros.is_none()
                && t.cpa_micros.is_none()
                && t.roas.is_none()
        );
        let t = totals(1000, 50, 5, 10_000_000, 40_000_000);
        assert_eq!(t.ctr, Some(0.05));
        assert_eq!(t.cpa_micros, Some(2_000_000));
        assert_eq!(t.roas, Some(4.0));
    }

    #[test]
    fn ranges_are_bounded() {
        let r = |f: &str, t: &str| DateRange {
            from: f.into(),
            to: t.into(),
        };
        assert!(parse_range(Some(&r("2026-01-01", "2026-01-31")), 731).is_ok());
        assert!(parse_range(Some(&r("2026-02-01", "2026-01-31")), 731).is_err());
        assert!(parse_range(Some(&r("2020-01-01", "2026-01-31")), 731).is_err());
        assert!(parse_range(Some(&r("yesterday", "2026-01-31")), 731).is_err());
        assert!(parse_range(None, 731).is_err());
    }
}
