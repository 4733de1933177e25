//! The gRPC handlers: parse the request, run one tenant-scoped read transaction, map
//! errors to statuses that leak nothing. The SQL lives in [`crate::queries`].

use domain::{AnomalyParams, PageSize, format_date};
use proto::analytics::v1::{
    AnomaliesRequest, AnomaliesResponse, AttributionResponse, ChannelsResponse, DateRange,
    Granularity, Kpi, ListCampaignsRequest, ListCampaignsResponse, OverviewResponse, RequestScope,
    TimeSeriesRequest, TimeSeriesResponse, analytics_server::Analytics,
};
use sqlx::PgPool;
use time::Date;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{anomaly, queries};

/// Request bounds, all configurable.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_range_days: i64,
    /// May lower `domain::PageSize::MAX` (the one bound), never raise it.
    pub max_page_size: u32,
    pub default_page_size: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_range_days: 731,
            max_page_size: PageSize::MAX,
            default_page_size: 25,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AnalyticsService {
    pool: PgPool,
    bounds: Bounds,
}

impl AnalyticsService {
    pub fn new(pool: PgPool, bounds: Bounds) -> Self {
        Self { pool, bounds }
    }
}

/// What every request names: a tenant, a bounded range, a currency.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub tenant: Uuid,
    pub from: Date,
    pub to: Date,
    pub currency: String,
}

fn invalid(e: domain::ParamError) -> Status {
    Status::invalid_argument(e.0)
}

/// An inclusive day range, bounded in length (`domain::DateRange`'s rules).
fn parse_range(range: Option<&DateRange>, max_days: i64) -> Result<domain::DateRange, Status> {
    let range = range.ok_or_else(|| Status::invalid_argument("range is required"))?;
    domain::DateRange::parse(&range.from, &range.to, max_days).map_err(invalid)
}

fn parse_scope(scope: Option<&RequestScope>, bounds: &Bounds) -> Result<Scope, Status> {
    let RequestScope {
        tenant_id,
        range,
        currency,
    } = scope.ok_or_else(|| Status::invalid_argument("scope is required"))?;
    let tenant = Uuid::parse_str(tenant_id)
        .map_err(|_| Status::invalid_argument("tenant_id must be a UUID"))?;
    let range = parse_range(range.as_ref(), bounds.max_range_days)?;
    if domain::Currency::parse(currency).is_none() {
        return Err(Status::invalid_argument(
            "currency must be an ISO 4217 code",
        ));
    }
    Ok(Scope {
        tenant,
        from: range.from,
        to: range.to,
        currency: currency.clone(),
    })
}

/// The tenant a request names, for its span (before it is parsed).
fn tenant_of(scope: Option<&RequestScope>) -> &str {
    scope.map_or("", |s| s.tenant_id.as_str())
}

fn range(from: Date, to: Date) -> Option<DateRange> {
    Some(DateRange {
        from: format_date(from),
        to: format_date(to),
    })
}

pub(crate) fn db_error(e: sqlx::Error) -> Status {
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

/// A KPI of the catalogue; `None` when unspecified.
fn kpi(value: i32) -> Result<Option<domain::Kpi>, Status> {
    match Kpi::try_from(value) {
        Ok(Kpi::Unspecified) => Ok(None),
        Ok(k) => domain::Kpi::try_from(k)
            .map(Some)
            .map_err(|()| Status::invalid_argument("unknown kpi")),
        Err(_) => Err(Status::invalid_argument("unknown kpi")),
    }
}

fn count(method: &'static str) {
    metrics::counter!(crate::REQUESTS, "method" => method).increment(1);
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_overview(
        &self,
        request: Request<RequestScope>,
    ) -> Result<Response<OverviewResponse>, Status> {
        let scope = parse_scope(Some(request.get_ref()), &self.bounds)?;
        let previous = domain::DateRange {
            from: scope.from,
            to: scope.to,
        }
        .previous()
        .ok_or_else(|| Status::invalid_argument("range.from too early"))?;
        let (prev_from, prev_to) = (previous.from, previous.to);
        let (current, previous) = queries::overview(&self.pool, &scope, prev_from)
            .await
            .map_err(db_error)?;
        count("GetOverview");
        Ok(Response::new(OverviewResponse {
            range: range(scope.from, scope.to),
            previous_range: range(prev_from, prev_to),
            currency: scope.currency,
            current: Some(current),
            previous: Some(previous),
        }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_of(request.get_ref().scope.as_ref())))]
    async fn list_campaigns(
        &self,
        request: Request<ListCampaignsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(req.scope.as_ref(), &self.bounds)?;
        let sort = kpi(req.sort_by)?.unwrap_or(domain::Kpi::Spend);
        let page_size = PageSize::parse_within(
            Some(req.page_size).filter(|n| *n != 0),
            self.bounds.default_page_size,
            self.bounds.max_page_size,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?
        .get();
        let offset = queries::decode_page_token(&req.page_token)?;
        let (campaigns, total) = queries::campaigns(
            &self.pool,
            &scope,
            sort.into(),
            req.ascending,
            page_size,
            offset,
        )
        .await
        .map_err(db_error)?;
        let next = offset + u64::from(page_size);
        count("ListCampaigns");
        Ok(Response::new(ListCampaignsResponse {
            campaigns,
            next_page_token: if next < total {
                queries::encode_page_token(next)
            } else {
                String::new()
            },
            total_campaigns: u32::try_from(total).unwrap_or(u32::MAX),
        }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_of(request.get_ref().scope.as_ref())))]
    async fn get_time_series(
        &self,
        request: Request<TimeSeriesRequest>,
    ) -> Result<Response<TimeSeriesResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(req.scope.as_ref(), &self.bounds)?;
        let week = match Granularity::try_from(req.granularity) {
            Ok(Granularity::Unspecified | Granularity::Day) => false,
            Ok(Granularity::Week) => true,
            Err(_) => return Err(Status::invalid_argument("unknown granularity")),
        };
        let points = queries::time_series(&self.pool, &scope, week, req.campaign.as_deref())
            .await
            .map_err(db_error)?;
        count("GetTimeSeries");
        Ok(Response::new(TimeSeriesResponse { points }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_channels(
        &self,
        request: Request<RequestScope>,
    ) -> Result<Response<ChannelsResponse>, Status> {
        let scope = parse_scope(Some(request.get_ref()), &self.bounds)?;
        let channels = queries::channels(&self.pool, &scope)
            .await
            .map_err(db_error)?;
        count("GetChannels");
        Ok(Response::new(ChannelsResponse { channels }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_attribution(
        &self,
        request: Request<RequestScope>,
    ) -> Result<Response<AttributionResponse>, Status> {
        let scope = parse_scope(Some(request.get_ref()), &self.bounds)?;
        let campaigns = queries::attribution(&self.pool, &scope)
            .await
            .map_err(db_error)?;
        count("GetAttribution");
        Ok(Response::new(AttributionResponse { campaigns }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %tenant_of(request.get_ref().scope.as_ref())))]
    async fn get_anomalies(
        &self,
        request: Request<AnomaliesRequest>,
    ) -> Result<Response<AnomaliesResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(req.scope.as_ref(), &self.bounds)?;
        let kpi = kpi(req.kpi)?.ok_or_else(|| Status::invalid_argument("kpi is required"))?;
        let AnomalyParams {
            baseline_days,
            threshold,
        } = AnomalyParams::parse(Some(req.baseline_days).filter(|d| *d != 0), req.threshold)
            .map_err(invalid)?;
        let extended = Scope {
            from: scope.from - time::Duration::days(i64::from(baseline_days)),
            ..scope.clone()
        };
        let daily = queries::time_series(&self.pool, &extended, false, None)
            .await
            .map_err(db_error)?;
        let anomalies = anomaly::detect(
            &daily,
            kpi,
            baseline_days as usize,
            threshold,
            &format_date(scope.from),
        );
        count("GetAnomalies");
        Ok(Response::new(AnomaliesResponse {
            kpi: Kpi::from(kpi).into(),
            anomalies,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Ranges are parsed by domain's one set of rules.
        // Extended years parse as dates but are refused before any arithmetic.
        for far in ["-009999-01-02", "+010000-01-01", "1899-12-31"] {
            let e = parse_range(Some(&r(far, "2026-01-31")), 731).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{far}");
        }
        assert!(parse_range(Some(&r("1900-01-01", "1900-01-02")), 731).is_ok());
    }

    #[test]
    fn scope_refuses_bad_tenant_and_currency_and_absence() {
        let scope = |tenant: &str, currency: &str| RequestScope {
            tenant_id: tenant.into(),
            range: Some(DateRange {
                from: "2026-01-01".into(),
                to: "2026-01-02".into(),
            }),
            currency: currency.into(),
        };
        let nil = Uuid::nil().to_string();
        let parse = |s: &RequestScope| parse_scope(Some(s), &Bounds::default());
        assert!(parse(&scope("nope", "EUR")).is_err());
        assert!(parse(&scope(&nil, "euro")).is_err());
        assert!(parse(&scope(&nil, "EUR")).is_ok());
        // A request of a peer from before the scope was one message has none.
        let e = parse_scope(None, &Bounds::default()).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
