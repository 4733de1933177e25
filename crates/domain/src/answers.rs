//! The KPI answers of the public API, shared by the api (which serializes and
//! documents them) and the dashboard (which reads them): one definition of each shape.

use serde::{Deserialize, Serialize};

use crate::{DateRange, Kpi, Totals};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Overview {
    pub range: Option<DateRange>,
    pub previous_range: Option<DateRange>,
    pub currency: String,
    pub current: Totals,
    pub previous: Totals,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Asc,
    Desc,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CampaignKpis {
    pub campaign: String,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CampaignsPage {
    /// Currency (ISO 4217) of every money amount in this answer.
    pub currency: String,
    pub campaigns: Vec<CampaignKpis>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
    pub total_campaigns: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Day,
    Week,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TimeSeriesPoint {
    /// The first day of the period (a Monday for weeks).
    pub period_start: String,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TimeSeries {
    /// Currency (ISO 4217) of every money amount in this answer.
    pub currency: String,
    pub granularity: Granularity,
    /// One point per period, zero-filled.
    pub points: Vec<TimeSeriesPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ChannelKpis {
    pub channel: String,
    pub totals: Totals,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Channels {
    /// Currency (ISO 4217) of every money amount in this answer.
    pub currency: String,
    pub channels: Vec<ChannelKpis>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct CampaignAttribution {
    pub campaign: String,
    /// Credited conversions in millionths of a conversion.
    pub last_click_conversions_micros: i64,
    pub last_click_revenue_micros: i64,
    pub linear_conversions_micros: i64,
    pub linear_revenue_micros: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Attribution {
    /// Currency (ISO 4217) of every money amount in this answer.
    pub currency: String,
    pub campaigns: Vec<CampaignAttribution>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct AnomalyDay {
    pub day: String,
    pub value: f64,
    pub baseline_mean: f64,
    pub baseline_stddev: f64,
    pub z_score: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Anomalies {
    pub kpi: Kpi,
    pub anomalies: Vec<AnomalyDay>,
}
