//! KPI routes for the caller's tenant, answered by the analytics service over mTLS
//! gRPC. The tenant is the token's; the currency is the tenant's reporting currency
//! unless the caller names another one. Analytics down → 503, slow → 504, never a hang.

mod queries;

use std::time::Duration;

use axum::{Json, extract::State};
use domain::{
    AnomalyParams, DateRange, Kpi, PageSize, Totals,
    answers::{
        Anomalies, AnomalyDay, Attribution, CampaignAttribution, CampaignKpis, CampaignsPage,
        ChannelKpis, Channels, Granularity, Order, Overview, TimeSeries, TimeSeriesPoint,
    },
    format_date,
};
use proto::analytics::v1 as pb;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::{
    AppState,
    error::{ApiError, bad_request, within},
    extract::{AppQuery, text},
    openapi::Errors,
    tenant::Tenant,
};

/// Calls analytics with a hard deadline of its own, whatever the channel does, holding
/// one of the process's and the tenant's analytics slots: with none free the answer is
/// 503 with `Retry-After` at once, so a hung analytics cannot pile requests up here.
async fn call<T, F>(state: &AppState, tenant: &Tenant, f: F) -> Result<T, ApiError>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let Some(_slot) = state.analytics_slots.try_take(tenant.id()) else {
        metrics::counter!("api_analytics_shed_total").increment(1);
        return Err(platform::http::Problem::unavailable().into());
    };
    within(state.analytics_timeout + Duration::from_millis(250), f).await
}

/// The currency the caller names (analytics validates it, with `domain`'s rule, like
/// the range), or the tenant's reporting currency (cached for a minute: it almost
/// never changes).
async fn currency(
    state: &AppState,
    tenant: &Tenant,
    wanted: Option<String>,
) -> Result<String, ApiError> {
    if let Some(c) = wanted {
        return Ok(c);
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

/// `from`/`to` default to the last 30 days; analytics validates and bounds them.
fn range(from: Option<String>, to: Option<String>) -> pb::DateRange {
    let last_30 = DateRange::ending(time::OffsetDateTime::now_utc().date(), 30);
    pb::DateRange {
        from: from.unwrap_or_else(|| format_date(last_30.from)),
        to: to.unwrap_or_else(|| format_date(last_30.to)),
    }
}

/// What every analytics request is scoped to: the caller's tenant, the range (the
/// last 30 days by default) and the currency.
fn scope(
    tenant: &Tenant,
    from: Option<String>,
    to: Option<String>,
    currency: String,
) -> pb::RequestScope {
    pb::RequestScope {
        tenant_id: tenant.id().to_string(),
        range: Some(range(from, to)),
        currency,
    }
}

/// The totals of an answer (absent = nothing counted).
fn totals(t: Option<pb::Totals>) -> Totals {
    t.unwrap_or_default().into()
}

/// A range analytics answered with.
fn answered(r: Option<pb::DateRange>) -> Option<DateRange> {
    r.and_then(|r| DateRange::try_from(r).ok())
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

/// Totals for a range and for the previous range of equal length.
#[utoipa::path(get, path = "/v1/overview", operation_id = "getOverview", tag = "kpis", params(RangeQuery),
    responses((status = 200, body = Overview), Errors))]
pub async fn overview(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<RangeQuery>,
) -> Result<Json<Overview>, ApiError> {
    let currency = currency(&state, &tenant, q.currency).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        &tenant,
        client.get_overview(scope(&tenant, q.from, q.to, currency)),
    )
    .await?;
    Ok(Json(Overview {
        range: answered(r.range),
        previous_range: answered(r.previous_range),
        currency: r.currency,
        current: totals(r.current),
        previous: totals(r.previous),
    }))
}

// ------------------------------------------------------------------------ campaigns

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
    let currency = currency(&state, &tenant, q.currency).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        &tenant,
        client.list_campaigns(pb::ListCampaignsRequest {
            scope: Some(scope(&tenant, q.from, q.to, currency.clone())),
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
    let currency = currency(&state, &tenant, q.currency).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        &tenant,
        client.get_time_series(pb::TimeSeriesRequest {
            scope: Some(scope(&tenant, q.from, q.to, currency.clone())),
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

/// KPIs per channel.
#[utoipa::path(get, path = "/v1/kpis/channels", operation_id = "listChannelKpis", tag = "kpis", params(RangeQuery),
    responses((status = 200, body = Channels), Errors))]
pub async fn channels(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<RangeQuery>,
) -> Result<Json<Channels>, ApiError> {
    let currency = currency(&state, &tenant, q.currency).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        &tenant,
        client.get_channels(scope(&tenant, q.from, q.to, currency.clone())),
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

/// Last-click versus linear attribution per campaign.
#[utoipa::path(get, path = "/v1/kpis/attribution", operation_id = "getAttribution", tag = "kpis", params(RangeQuery),
    responses((status = 200, body = Attribution), Errors))]
pub async fn attribution(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<RangeQuery>,
) -> Result<Json<Attribution>, ApiError> {
    let currency = currency(&state, &tenant, q.currency).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        &tenant,
        client.get_attribution(scope(&tenant, q.from, q.to, currency.clone())),
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
    #[param(minimum = 0.5, maximum = 10.0)]
    threshold: Option<f64>,
}

/// Days on which a KPI deviates from its trailing baseline.
#[utoipa::path(get, path = "/v1/kpis/anomalies", operation_id = "listAnomalies", tag = "kpis", params(AnomaliesQuery),
    responses((status = 200, body = Anomalies), Errors))]
pub async fn anomalies(
    State(state): State<AppState>,
    tenant: Tenant,
    AppQuery(q): AppQuery<AnomaliesQuery>,
) -> Result<Json<Anomalies>, ApiError> {
    // The one set of limits (domain's), as analytics applies them.
    let params = AnomalyParams::parse(q.baseline_days, q.threshold)
        .map_err(|e| bad_request(e.to_string()))?;
    let kpi = q.kpi.unwrap_or(Kpi::Clicks);
    let currency = currency(&state, &tenant, q.currency).await?;
    let mut client = state.analytics.clone();
    let r = call(
        &state,
        &tenant,
        client.get_anomalies(pb::AnomaliesRequest {
            scope: Some(scope(&tenant, q.from, q.to, currency)),
            kpi: pb::Kpi::from(kpi).into(),
            baseline_days: params.baseline_days,
            threshold: Some(params.threshold),
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
