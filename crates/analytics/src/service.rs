//! The gRPC handlers: parse the request, run one tenant-scoped read transaction, map
//! errors to statuses that leak nothing. The SQL lives in [`crate::queries`].

use proto::analytics::v1::{
    AnomaliesRequest, AnomaliesResponse, AttributionRequest, AttributionResponse, ChannelsRequest,
    ChannelsResponse, DateRange, Granularity, Kpi, ListCampaignsRequest, ListCampaignsResponse,
    OverviewRequest, OverviewResponse, TimeSeriesRequest, TimeSeriesResponse,
    analytics_server::Analytics,
};
use sqlx::PgPool;
use time::{Date, format_description::well_known::Iso8601};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{anomaly, queries};

/// Request bounds, all configurable.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_range_days: i64,
    pub max_page_size: u32,
    pub default_page_size: u32,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_range_days: 731,
            max_page_size: 100,
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

/// The dates a range may name. Anything outside is refused before any date arithmetic
/// (the previous period and the anomaly baseline lie before `from`): `time` panics on
/// dates beyond ±9999 years, and no marketing data is that old.
const EARLIEST: Date = time::macros::date!(1900 - 01 - 01);
const LATEST: Date = time::macros::date!(9999 - 12 - 31);

fn parse_date(field: &str, s: &str) -> Result<Date, Status> {
    let date = Date::parse(s, &Iso8601::DATE)
        .map_err(|_| Status::invalid_argument(format!("{field} must be a date YYYY-MM-DD")))?;
    if !(EARLIEST..=LATEST).contains(&date) {
        return Err(Status::invalid_argument(format!(
            "{field} must be between {} and {}",
            format_date(EARLIEST),
            format_date(LATEST)
        )));
    }
    Ok(date)
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

fn parse_scope(
    tenant: &str,
    range: Option<&DateRange>,
    currency: &str,
    bounds: &Bounds,
) -> Result<Scope, Status> {
    let tenant = Uuid::parse_str(tenant)
        .map_err(|_| Status::invalid_argument("tenant_id must be a UUID"))?;
    let (from, to) = parse_range(range, bounds.max_range_days)?;
    if domain::Currency::parse(currency).is_none() {
        return Err(Status::invalid_argument(
            "currency must be an ISO 4217 code",
        ));
    }
    Ok(Scope {
        tenant,
        from,
        to,
        currency: currency.to_owned(),
    })
}

pub(crate) fn format_date(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
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

fn kpi(value: i32) -> Result<Kpi, Status> {
    match Kpi::try_from(value) {
        Ok(k) => Ok(k),
        Err(_) => Err(Status::invalid_argument("unknown kpi")),
    }
}

fn count(method: &'static str) {
    metrics::counter!("analytics_requests_total", "method" => method).increment(1);
}

#[tonic::async_trait]
impl Analytics for AnalyticsService {
    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_overview(
        &self,
        request: Request<OverviewRequest>,
    ) -> Result<Response<OverviewResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(
            &req.tenant_id,
            req.range.as_ref(),
            &req.currency,
            &self.bounds,
        )?;
        let days = (scope.to - scope.from).whole_days() + 1;
        let prev_to = scope
            .from
            .previous_day()
            .ok_or_else(|| Status::invalid_argument("range.from too early"))?;
        let prev_from = scope.from - time::Duration::days(days);
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

    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn list_campaigns(
        &self,
        request: Request<ListCampaignsRequest>,
    ) -> Result<Response<ListCampaignsResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(
            &req.tenant_id,
            req.range.as_ref(),
            &req.currency,
            &self.bounds,
        )?;
        let sort = match kpi(req.sort_by)? {
            Kpi::Unspecified => Kpi::Spend,
            k => k,
        };
        let page_size = match req.page_size {
            0 => self.bounds.default_page_size,
            n if n > self.bounds.max_page_size => {
                return Err(Status::invalid_argument(format!(
                    "page_size above {}",
                    self.bounds.max_page_size
                )));
            }
            n => n,
        };
        let offset = queries::decode_page_token(&req.page_token)?;
        let (campaigns, total) =
            queries::campaigns(&self.pool, &scope, sort, req.ascending, page_size, offset)
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

    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_time_series(
        &self,
        request: Request<TimeSeriesRequest>,
    ) -> Result<Response<TimeSeriesResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(
            &req.tenant_id,
            req.range.as_ref(),
            &req.currency,
            &self.bounds,
        )?;
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
        request: Request<ChannelsRequest>,
    ) -> Result<Response<ChannelsResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(
            &req.tenant_id,
            req.range.as_ref(),
            &req.currency,
            &self.bounds,
        )?;
        let channels = queries::channels(&self.pool, &scope)
            .await
            .map_err(db_error)?;
        count("GetChannels");
        Ok(Response::new(ChannelsResponse { channels }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_attribution(
        &self,
        request: Request<AttributionRequest>,
    ) -> Result<Response<AttributionResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(
            &req.tenant_id,
            req.range.as_ref(),
            &req.currency,
            &self.bounds,
        )?;
        let campaigns = queries::attribution(&self.pool, &scope)
            .await
            .map_err(db_error)?;
        count("GetAttribution");
        Ok(Response::new(AttributionResponse { campaigns }))
    }

    #[tracing::instrument(skip_all, fields(tenant = %request.get_ref().tenant_id))]
    async fn get_anomalies(
        &self,
        request: Request<AnomaliesRequest>,
    ) -> Result<Response<AnomaliesResponse>, Status> {
        let req = request.into_inner();
        let scope = parse_scope(
            &req.tenant_id,
            req.range.as_ref(),
            &req.currency,
            &self.bounds,
        )?;
        let kpi = match kpi(req.kpi)? {
            Kpi::Unspecified => return Err(Status::invalid_argument("kpi is required")),
            k => k,
        };
        let baseline_days = match req.baseline_days {
            0 => 14,
            n @ 7..=56 => n,
            _ => {
                return Err(Status::invalid_argument(
                    "baseline_days must be between 7 and 56",
                ));
            }
        };
        let threshold = req.threshold.unwrap_or(3.0);
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 10.0) {
            return Err(Status::invalid_argument("threshold must be in (0, 10]"));
        }
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
            kpi: kpi as i32,
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
        // Extended years parse as dates but are refused before any arithmetic.
        for far in ["-009999-01-02", "+010000-01-01", "1899-12-31"] {
            let e = parse_range(Some(&r(far, "2026-01-31")), 731).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{far}");
        }
        assert!(parse_range(Some(&r("1900-01-01", "1900-01-02")), 731).is_ok());
    }

    #[test]
    fn scope_refuses_bad_tenant_and_currency() {
        let r = Some(DateRange {
            from: "2026-01-01".into(),
            to: "2026-01-02".into(),
        });
        assert!(parse_scope("nope", r.as_ref(), "EUR", &Bounds::default()).is_err());
        assert!(
            parse_scope(
                &Uuid::nil().to_string(),
                r.as_ref(),
                "euro",
                &Bounds::default()
            )
            .is_err()
        );
        assert!(
            parse_scope(
                &Uuid::nil().to_string(),
                r.as_ref(),
                "EUR",
                &Bounds::default()
            )
            .is_ok()
        );
    }
}
