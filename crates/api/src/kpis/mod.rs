//! KPI routes for the caller's tenant, answered by the analytics service over mTLS
//! gRPC. The tenant is the token's; the currency is the tenant's reporting currency
//! unless the caller names another one. Analytics down → 503, slow → 504, never a hang.

mod queries;

use std::time::Duration;

use axum::{Json, extract::State};
use proto::analytics::v1 as pb;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    AppState,
    error::{ApiError, bad_request, within},
    extract::{AppQuery, PageSize, text},
    openapi::Errors,
    tenant::Tenant,
};

/// Calls analytics with a hard deadline of its own, whatever the channel does.
async fn call<T, F>(state: &AppState, f: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    within(state.analytics_timeout + Duration::from_millis(250), f).await
}

/// The currency the caller names, or the tenant's reporting currency (cached for a
/// minute: it almost never changes).
async fn currency(
    state: &AppState,
    tenant: &Tenant,
    wanted: Option<&str>,
) -> Result<String, ApiError> {
    if let Some(c) = wanted {
        if c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Ok(c.to_owned());
        }
        return Err(bad_request("currency must be three upper-case letters").into());
    }
    if let Some(c) = state.currencies.get(&tenant.id()) {
        return Ok(c);
    }
    let mut tx = tenant.begin().await?;
    let c = queries::reporting_currency(&mut tx).await?;
    tx.commit().await?;
    let c = c.ok_or_else(platform::http::Problem::not_found)?;
    state.currencies.insert(tenant.id(), c.clone());
    Ok(c)
}

fn iso(d: time::Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// `from`/`to` default to the last 30 days; analytics validates and bounds them.
fn range(from: Option<String>, to: Option<String>) -> pb::DateRange {
    let today = time::OffsetDateTime::now_utc().date();
    pb::DateRange {
        to: to.unwrap_or_else(|| iso(today)),
        from: from.unwrap_or_else(|| iso(today - time::Duration::days(29))),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DateRange {
    from: String,
    to: String,
}

impl From<pb::DateRange> for DateRange {
    fn from(r: pb::DateRange) -> Self {
        Self {
            from: r.from,
            to: r.to,
        }
    }
}

/// Totals; money in integer micros; ratios absent when their denominator is zero.
#[derive(Debug, Serialize, ToSchema)]
pub struct KpiTotals {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend_micros: i64,
    revenue_micros: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cvr: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpc_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpa_micros: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    roas: Option<f64>,
}

impl From<pb::Totals> for KpiTotals {
    fn from(t: pb::Totals) -> Self {
        Self {
            impressions: t.impressions,
            clicks: t.clicks,
            conversions: t.conversions,
            spend_micros: t.spend_micros,
            revenue_micros: t.revenue_micros,
            ctr: t.ctr,
            cvr: t.cvr,
            cpc_micros: t.cpc_micros,
            cpa_micros: t.cpa_micros,
            roas: t.roas,
        }
    }
}

fn totals(t: Option<pb::Totals>) -> KpiTotals {
    t.unwrap_or_default().into()
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    Impressions,
    Clicks,
    Conversions,
    Spend,
    Revenue,
    Ctr,
    Cvr,
    Cpc,
    Cpa,
    Roas,
}

impl From<Kpi> for pb::Kpi {
    fn from(k: Kpi) -> Self {
        match k {
            Kpi::Impressions => Self::Impressions,
            Kpi::Clicks => Self::Clicks,
            Kpi::Conversions => Self::Conversions,
            Kpi::Spend => Self::Spend,
            Kpi::Revenue => Self::Revenue,
            Kpi::Ctr => Self::Ctr,
            Kpi::Cvr => Self::Cvr,
            Kpi::Cpc => Self::Cpc,
            Kpi::Cpa => Self::Cpa,
            Kpi::Roas => Self::Roas,
        }
    }
}

// ------------------------------------------------------------------------- overview

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RangeQuery {
    /// First day, YYYY-MM-DD (default: 29 days before `to`).
    #[param(format = Date)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD, inclusive (default: today, UTC).
    #[param(format = Date)]
    to: Option<String>,
    /// ISO 4217 code (default: the tenant's reporting currency).
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Overview {
    range: Option<DateRange>,
    previous_range: Option<DateRange>,
    currency: String,
    current: KpiTotals,
    previous: KpiTotals,
}

/// Totals for a range and for the previous range of equal length.
#[utoipa::path(get, path = "/v1/overview", operation_id = "getOverview", tag = "kpis", params(RangeQuery),
    responses((status = 200, body = Overview), Errors))]
pub async fn overview(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<RangeQuery>,
) -> Result<Json<Overview>, ApiError> {
    let currency = currency(&state, &tenant, q.currency.as_deref()).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        client.get_overview(pb::OverviewRequest {
            tenant_id: tenant.id().to_string(),
            range: Some(range(q.from, q.to)),
            currency,
        }),
    )
    .await?;
    Ok(Json(Overview {
        range: r.range.map(Into::into),
        previous_range: r.previous_range.map(Into::into),
        currency: r.currency,
        current: totals(r.current),
        previous: totals(r.previous),
    }))
}

// ------------------------------------------------------------------------ campaigns

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignsQuery {
    #[param(format = Date)]
    from: Option<String>,
    #[param(format = Date)]
    to: Option<String>,
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Sort key (default: spend).
    #[param(inline)]
    sort: Option<Kpi>,
    /// Default: desc.
    #[param(inline)]
    order: Option<Order>,
    /// 1..=100, default 25.
    #[param(minimum = 1, maximum = 100)]
    page_size: Option<u32>,
    /// From `next_page_token` of the previous page.
    #[param(max_length = 200)]
    page_token: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignKpis {
    campaign: String,
    totals: KpiTotals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignsPage {
    /// Currency (ISO 4217) of every money amount in this answer.
    currency: String,
    campaigns: Vec<CampaignKpis>,
    /// Absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_page_token: Option<String>,
    total_campaigns: u32,
}

/// KPIs per campaign, sorted and paged.
#[utoipa::path(get, path = "/v1/kpis/campaigns", operation_id = "listCampaignKpis", tag = "kpis", params(CampaignsQuery),
    responses((status = 200, body = CampaignsPage), Errors))]
pub async fn campaigns(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<CampaignsQuery>,
) -> Result<Json<CampaignsPage>, ApiError> {
    let page_size = PageSize::parse(q.page_size, 25)?.get();
    let page_token = q
        .page_token
        .as_deref()
        .map(|t| text("page_token", t, 200))
        .transpose()?
        .unwrap_or_default();
    let currency = currency(&state, &tenant, q.currency.as_deref()).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        client.list_campaigns(pb::ListCampaignsRequest {
            tenant_id: tenant.id().to_string(),
            range: Some(range(q.from, q.to)),
            currency: currency.clone(),
            sort_by: pb::Kpi::from(q.sort.unwrap_or(Kpi::Spend)).into(),
            ascending: matches!(q.order, Some(Order::Asc)),
            page_size,
            page_token,
        }),
    )
    .await?;
    Ok(Json(CampaignsPage {
        currency,
        campaigns: r
            .campaigns
            .into_iter()
            .map(|c| CampaignKpis {
                campaign: c.campaign,
                totals: totals(c.totals),
            })
            .collect(),
        next_page_token: Some(r.next_page_token).filter(|t| !t.is_empty()),
        total_campaigns: r.total_campaigns,
    }))
}

// ---------------------------------------------------------------------- time series

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    Week,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimeSeriesQuery {
    #[param(format = Date)]
    from: Option<String>,
    #[param(format = Date)]
    to: Option<String>,
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Default: day.
    #[param(inline)]
    granularity: Option<Granularity>,
    /// Only this campaign.
    #[param(min_length = 1, max_length = 200)]
    campaign: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeSeriesPoint {
    /// The first day of the period (a Monday for weeks).
    period_start: String,
    totals: KpiTotals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimeSeries {
    /// Currency (ISO 4217) of every money amount in this answer.
    currency: String,
    granularity: Granularity,
    /// One point per period, zero-filled.
    points: Vec<TimeSeriesPoint>,
}

/// KPIs per day or ISO week, optionally for one campaign.
#[utoipa::path(get, path = "/v1/kpis/timeseries", operation_id = "getTimeSeries", tag = "kpis", params(TimeSeriesQuery),
    responses((status = 200, body = TimeSeries), Errors))]
pub async fn timeseries(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<TimeSeriesQuery>,
) -> Result<Json<TimeSeries>, ApiError> {
    let campaign = q
        .campaign
        .as_deref()
        .map(|c| text("campaign", c, 200).map_err(|p| bad_request(p.detail.unwrap_or_default())))
        .transpose()?;
    let granularity = q.granularity.unwrap_or(Granularity::Day);
    let currency = currency(&state, &tenant, q.currency.as_deref()).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        client.get_time_series(pb::TimeSeriesRequest {
            tenant_id: tenant.id().to_string(),
            range: Some(range(q.from, q.to)),
            currency: currency.clone(),
            granularity: match granularity {
                Granularity::Day => pb::Granularity::Day,
                Granularity::Week => pb::Granularity::Week,
            }
            .into(),
            campaign,
        }),
    )
    .await?;
    Ok(Json(TimeSeries {
        currency,
        granularity,
        points: r
            .points
            .into_iter()
            .map(|p| TimeSeriesPoint {
                period_start: p.period_start,
                totals: totals(p.totals),
            })
            .collect(),
    }))
}

// ------------------------------------------------------------------------- channels

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelKpis {
    channel: String,
    totals: KpiTotals,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Channels {
    /// Currency (ISO 4217) of every money amount in this answer.
    currency: String,
    channels: Vec<ChannelKpis>,
}

/// KPIs per channel.
#[utoipa::path(get, path = "/v1/kpis/channels", operation_id = "listChannelKpis", tag = "kpis", params(RangeQuery),
    responses((status = 200, body = Channels), Errors))]
pub async fn channels(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<RangeQuery>,
) -> Result<Json<Channels>, ApiError> {
    let currency = currency(&state, &tenant, q.currency.as_deref()).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        client.get_channels(pb::ChannelsRequest {
            tenant_id: tenant.id().to_string(),
            range: Some(range(q.from, q.to)),
            currency: currency.clone(),
        }),
    )
    .await?;
    Ok(Json(Channels {
        currency,
        channels: r
            .channels
            .into_iter()
            .map(|c| ChannelKpis {
                channel: c.channel,
                totals: totals(c.totals),
            })
            .collect(),
    }))
}

// ---------------------------------------------------------------------- attribution

#[derive(Debug, Serialize, ToSchema)]
pub struct CampaignAttribution {
    campaign: String,
    /// Credited conversions in millionths of a conversion.
    last_click_conversions_micros: i64,
    last_click_revenue_micros: i64,
    linear_conversions_micros: i64,
    linear_revenue_micros: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Attribution {
    /// Currency (ISO 4217) of every money amount in this answer.
    currency: String,
    campaigns: Vec<CampaignAttribution>,
}

/// Last-click versus linear attribution per campaign.
#[utoipa::path(get, path = "/v1/kpis/attribution", operation_id = "getAttribution", tag = "kpis", params(RangeQuery),
    responses((status = 200, body = Attribution), Errors))]
pub async fn attribution(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<RangeQuery>,
) -> Result<Json<Attribution>, ApiError> {
    let currency = currency(&state, &tenant, q.currency.as_deref()).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        client.get_attribution(pb::AttributionRequest {
            tenant_id: tenant.id().to_string(),
            range: Some(range(q.from, q.to)),
            currency: currency.clone(),
        }),
    )
    .await?;
    Ok(Json(Attribution {
        currency,
        campaigns: r
            .campaigns
            .into_iter()
            .map(|c| CampaignAttribution {
                campaign: c.campaign,
                last_click_conversions_micros: c.last_click_conversions_micros,
                last_click_revenue_micros: c.last_click_revenue_micros,
                linear_conversions_micros: c.linear_conversions_micros,
                linear_revenue_micros: c.linear_revenue_micros,
            })
            .collect(),
    }))
}

// ------------------------------------------------------------------------ anomalies

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AnomaliesQuery {
    #[param(format = Date)]
    from: Option<String>,
    #[param(format = Date)]
    to: Option<String>,
    #[param(pattern = "^[A-Z]{3}$")]
    currency: Option<String>,
    /// Default: clicks.
    #[param(inline)]
    kpi: Option<Kpi>,
    /// Trailing days forming each day's baseline: 7..=56, default 14.
    #[param(minimum = 7, maximum = 56)]
    baseline_days: Option<u32>,
    /// |z| above which a day is anomalous (default 3.0).
    #[param(minimum = 0.5, maximum = 100.0)]
    threshold: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AnomalyDay {
    day: String,
    value: f64,
    baseline_mean: f64,
    baseline_stddev: f64,
    z_score: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Anomalies {
    kpi: Kpi,
    anomalies: Vec<AnomalyDay>,
}

/// Days on which a KPI deviates from its trailing baseline.
#[utoipa::path(get, path = "/v1/kpis/anomalies", operation_id = "listAnomalies", tag = "kpis", params(AnomaliesQuery),
    responses((status = 200, body = Anomalies), Errors))]
pub async fn anomalies(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<AnomaliesQuery>,
) -> Result<Json<Anomalies>, ApiError> {
    if q.baseline_days.is_some_and(|d| !(7..=56).contains(&d)) {
        return Err(bad_request("baseline_days must be 7..=56").into());
    }
    if q.threshold.is_some_and(|t| !(0.5..=100.0).contains(&t)) {
        return Err(bad_request("threshold must be 0.5..=100").into());
    }
    let kpi = q.kpi.unwrap_or(Kpi::Clicks);
    let currency = currency(&state, &tenant, q.currency.as_deref()).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        client.get_anomalies(pb::AnomaliesRequest {
            tenant_id: tenant.id().to_string(),
            range: Some(range(q.from, q.to)),
            currency,
            kpi: pb::Kpi::from(kpi).into(),
            baseline_days: q.baseline_days.unwrap_or(0),
            threshold: q.threshold,
        }),
    )
    .await?;
    Ok(Json(Anomalies {
        kpi,
        anomalies: r
            .anomalies
            .into_iter()
            .filter(|a| {
                [a.value, a.baseline_mean, a.baseline_stddev, a.z_score]
                    .iter()
                    .all(|v| v.is_finite())
            })
            .map(|a| AnomalyDay {
                day: a.day,
                value: a.value,
                baseline_mean: a.baseline_mean,
                baseline_stddev: a.baseline_stddev,
                z_score: a.z_score,
            })
            .collect(),
    }))
}
