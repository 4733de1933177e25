//! The campaigns table (sortable by every KPI of the catalogue, paged) and one
//! campaign's page.

use askama::Template;
use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use domain::{CATALOGUE, Facts, Kpi, Totals, answers::Order};
use serde::Deserialize;

use super::{
    AppState,
    errors::{api_error, error_page, page},
    range::{Preset, RangeQuery},
    views::{Chart, Tile, cells, chart_title, line, tiles},
};
use crate::{api_client::CampaignsRequest, format_count, format_money, session::Session};

#[derive(Debug, Deserialize)]
pub(super) struct CampaignsQuery {
    from: Option<String>,
    to: Option<String>,
    sort: Option<String>,
    order: Option<String>,
    page_token: Option<String>,
    /// Tokens of the pages before this one, for "previous".
    back: Option<String>,
}

pub(crate) struct Column {
    pub label: &'static str,
    pub query: String,
    pub sorted: &'static str,
}

pub(crate) struct Row {
    pub name: String,
    pub query: String,
    pub cells: Vec<String>,
}

#[derive(Template)]
#[template(path = "campaigns.html")]
struct CampaignsView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    from: String,
    to: String,
    currency: String,
    total: u32,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    columns: Vec<Column>,
    rows: Vec<Row>,
    prev_query: Option<String>,
    next_query: Option<String>,
}

pub(super) async fn campaigns(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<CampaignsQuery>,
) -> Response {
    let range = RangeQuery {
        from: q.from.clone(),
        to: q.to.clone(),
    };
    let kpi = q.sort.as_deref().and_then(Kpi::parse).unwrap_or(Kpi::Spend);
    let sort = kpi.key().to_owned();
    let (order, ascending) = if q.order.as_deref() == Some("asc") {
        ("asc", Order::Asc)
    } else {
        ("desc", Order::Desc)
    };
    let (from, to) = range.resolved();
    let request = CampaignsRequest {
        sort: kpi,
        order: ascending,
        page_size: 25,
        page_token: q.page_token.clone(),
    };
    let data = match state
        .api
        .campaign_kpis(&session.token, &(from.clone(), to.clone()), &request)
        .await
    {
        Ok(p) => p,
        Err(e) => return api_error(&headers, e),
    };
    let currency = data.currency.clone();
    let base = vec![
        ("from".to_owned(), from.clone()),
        ("to".to_owned(), to.clone()),
    ];
    let with = |extra: &[(&str, String)]| {
        let mut v = base.clone();
        v.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        serde_urlencoded::to_string(&v).unwrap_or_default()
    };
    let columns = CATALOGUE
        .iter()
        .map(|d| {
            let (key, label) = (&d.key, d.label);
            let is = *key == sort;
            let next_order = if is && order == "desc" { "asc" } else { "desc" };
            Column {
                label,
                query: with(&[
                    ("sort", (*key).to_owned()),
                    ("order", next_order.to_owned()),
                ]),
                sorted: match (is, order) {
                    (true, "asc") => "ascending",
                    (true, _) => "descending",
                    _ => "",
                },
            }
        })
        .collect();
    let rows = data
        .campaigns
        .iter()
        .map(|c| Row {
            name: c.campaign.clone(),
            query: with(&[("name", c.campaign.clone())]),
            cells: cells(&c.totals, &currency),
        })
        .collect();
    let mut back: Vec<String> = q
        .back
        .as_deref()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    let here = q.page_token.clone().unwrap_or_default();
    let sort_params = [("sort", sort.clone()), ("order", order.to_owned())];
    let next_query = data.next_page_token.as_ref().map(|t| {
        let mut b = back.clone();
        b.push(if here.is_empty() {
            "-".into()
        } else {
            here.clone()
        });
        let mut extra = sort_params.to_vec();
        extra.extend([("page_token", t.clone()), ("back", b.join(","))]);
        with(&extra)
    });
    let prev_query = back.pop().map(|t| {
        let mut extra = sort_params.to_vec();
        if t != "-" {
            extra.push(("page_token", t));
        }
        extra.push(("back", back.join(",")));
        with(&extra)
    });
    let keep = vec![
        ("sort".to_owned(), sort.clone()),
        ("order".to_owned(), order.to_owned()),
    ];
    let view = CampaignsView {
        active: "campaigns",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&keep),
        keep,
        from,
        to,
        currency,
        total: data.total_campaigns,
        columns,
        rows,
        prev_query,
        next_query,
    };
    page(&session, &view)
}

// ------------------------------------------------------------ campaign detail

#[derive(Debug, Deserialize)]
pub(super) struct CampaignQuery {
    name: String,
    from: Option<String>,
    to: Option<String>,
}

#[derive(Template)]
#[template(path = "campaign.html")]
struct CampaignView {
    active: &'static str,
    is_admin: bool,
    csrf: String,
    name: String,
    from: String,
    to: String,
    currency: String,
    presets: Vec<Preset>,
    keep: Vec<(String, String)>,
    tiles: Vec<Tile>,
    charts: Vec<Chart>,
    last_click_conversions: String,
    last_click_revenue: String,
    linear_conversions: String,
    linear_revenue: String,
}

/// Credited conversions, from millionths, with two decimals.
pub fn format_credit(micros: i64) -> String {
    let hundredths = (micros + 5_000) / 10_000;
    format!("{}.{:02}", format_count(hundredths / 100), hundredths % 100)
}

pub(super) async fn campaign(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(q): Query<CampaignQuery>,
) -> Response {
    if q.name.is_empty() || q.name.chars().count() > 256 {
        return error_page(
            &headers,
            StatusCode::BAD_REQUEST,
            "Please check your input",
            "Unknown campaign.",
        );
    }
    let range = RangeQuery {
        from: q.from.clone(),
        to: q.to.clone(),
    };
    let span = range.resolved();
    let (series, attribution) = tokio::join!(
        state
            .api
            .daily_series(&session.token, &span, Some(q.name.as_str())),
        state.api.attribution(&session.token, &span),
    );
    let (series, attribution) = match (series, attribution) {
        (Ok(s), Ok(a)) => (s, a),
        (Err(e), _) | (_, Err(e)) => return api_error(&headers, e),
    };
    let currency = series.currency.clone();
    let mut sum = Facts::default();
    for p in &series.points {
        sum += p.totals.facts;
    }
    let tiles = tiles(&Totals::new(sum), None, &currency);
    let charts = [Kpi::Spend, Kpi::Conversions]
        .into_iter()
        .map(|kpi| {
            line(
                kpi.key(),
                chart_title(kpi, &currency),
                &series.points,
                kpi,
                &[],
            )
        })
        .collect();
    let a = attribution.campaigns.iter().find(|a| a.campaign == q.name);
    let (lc, lr, nc, nr) = a.map_or((0, 0, 0, 0), |a| {
        (
            a.last_click_conversions_micros,
            a.last_click_revenue_micros,
            a.linear_conversions_micros,
            a.linear_revenue_micros,
        )
    });
    let (from, to) = range.resolved();
    let keep = vec![("name".to_owned(), q.name.clone())];
    let view = CampaignView {
        active: "campaigns",
        is_admin: session.is_admin,
        csrf: session.csrf.clone(),
        presets: range.presets(&keep),
        keep,
        name: q.name,
        from,
        to,
        tiles,
        charts,
        last_click_conversions: format_credit(lc),
        last_click_revenue: format_money(lr, &currency),
        linear_conversions: format_credit(nc),
        linear_revenue: format_money(nr, &currency),
        currency,
    };
    page(&session, &view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_format() {
        assert_eq!(format_credit(2_500_000), "2.50");
        assert_eq!(format_credit(1_234_567_890), "1,234.57");
    }
}
