//! The overview: the catalogue's tiles against the previous period, and the daily
//! trends with their unusual days.

use askama::Template;
use axum::{
    extract::{Query, State},
    http::HeaderMap,
    response::Response,
};
use domain::format_date;

use super::{
    AppState,
    errors::{api_error, page},
    range::{Preset, RangeQuery},
    views::{Chart, TRENDS, Tile, chart_title, line, tiles},
};
use crate::session::Session;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    from: String,
    to: String,
    prev_from: String,
    prev_to: String,
    currency: String,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
}

pub(super) async fn overview(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(range): Query<RangeQuery>,
) -> Response {
    let span = range.resolved();
    let (api, token) = (&state.api, session.token.as_str());
    let (overview, series, a0, a1, a2, a3) = tokio::join!(
        api.overview(token, &span),
        api.daily_series(token, &span, None),
        api.anomalies(token, &span, TRENDS[0]),
        api.anomalies(token, &span, TRENDS[1]),
        api.anomalies(token, &span, TRENDS[2]),
        api.anomalies(token, &span, TRENDS[3]),
    );
    let (overview, series) = match (overview, series) {
        (Ok(o), Ok(s)) => (o, s),
        (Err(e), _) | (_, Err(e)) => return api_error(&headers, e),
    };
    let currency = overview.currency.clone();
    let tiles = tiles(&overview.current, Some(&overview.previous), &currency);
    // An anomaly call that failed only loses its badges, not the page.
    let charts = TRENDS
        .iter()
        .zip([a0, a1, a2, a3])
        .map(|(&kpi, anomalies)| {
            let days: Vec<String> = anomalies
                .map(|a| a.anomalies.into_iter().map(|d| d.day).collect())
                .unwrap_or_default();
            line(
                kpi.key(),
                chart_title(kpi, &currency),
                &series.points,
                kpi,
                &days,
            )
        })
        .collect();
    let (from, to) = span;
    let answered = |r: Option<domain::DateRange>| {
        r.map(|r| (format_date(r.from), format_date(r.to)))
            .unwrap_or_default()
    };
    let (answered_from, answered_to) = answered(overview.range);
    let (prev_from, prev_to) = answered(overview.previous_range);
    let view = OverviewPage {
        active: "overview",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&[]),
        keep: Vec::new(),
        from: answered_from.max(from),
        to: answered_to.max(to),
        prev_from,
        prev_to,
        currency,
        tiles,
        charts,
    };
    page(&session, &view)
}
