//! KPIs per channel: two bar charts and the catalogue's table.

use askama::Template;
use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
};
use domain::{CATALOGUE, Kpi};

use super::{
    AppState,
    campaigns::Row,
    errors::{api_error, page},
    range::{Preset, RangeQuery},
    views::{Chart, cells, count_axis, money_axis},
};
use crate::{charts, session::Session};

#[derive(Template)]
#[template(path = "channels.html")]
struct ChannelsView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    from: String,
    to: String,
    currency: String,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    charts: Vec<Chart>,
    columns: Vec<&'static str>,
    rows: Vec<Row>,
}

pub(super) async fn channels(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(range): Query<RangeQuery>,
) -> Response {
    let data = match state.api.channels(&session.token, &range.resolved()).await {
        Ok(d) => d,
        Err(e) => return api_error(&headers, e),
    };
    let currency = data.currency.clone();
    let bars = |kpi: Kpi| -> Vec<(String, f64)> {
        data.channels
            .iter()
            .map(|c| (c.channel.clone(), c.totals.number(kpi).unwrap_or(0.0)))
            .collect()
    };
    let spend = bars(Kpi::Spend);
    let conversions = bars(Kpi::Conversions);
    let spend_title = format!("Spend by channel ({currency})");
    let charts = vec![
        Chart {
            key: "channel-spend",
            svg: charts::bar_chart(&charts::Bars {
                id: "channel-spend",
                title: &spend_title,
                bars: &spend,
                format: money_axis,
            }),
            title: spend_title.clone(),
            anomalies: 0,
        },
        Chart {
            key: "channel-conversions",
            svg: charts::bar_chart(&charts::Bars {
                id: "channel-conversions",
                title: "Conversions by channel",
                bars: &conversions,
                format: count_axis,
            }),
            title: "Conversions by channel".into(),
            anomalies: 0,
        },
    ];
    let rows = data
        .channels
        .iter()
        .map(|c| Row {
            name: c.channel.clone(),
            query: String::new(),
            cells: cells(&c.totals, &currency),
        })
        .collect();
    let (from, to) = range.resolved();
    let view = ChannelsView {
        active: "channels",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&[]),
        keep: Vec::new(),
        from,
        to,
        currency,
        charts,
        columns: CATALOGUE.iter().map(|d| d.label).collect(),
        rows,
    };
    page(&session, &view)
}
