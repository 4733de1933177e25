//! The SQL. Every query runs in a read-only transaction whose tenant is set for that
//! transaction only (`platform::db::begin_read_only_for_tenant`), so row-level security, not only the WHERE
//! clause, keeps tenants apart. Queries read only `output` (O(days × campaigns)),
//! never `raw`, so their cost does not grow with event volume.

use domain::kpi::{Facts, Kpi};
use platform::db::ReadTx;
use proto::analytics::v1::{
    self as pb, CampaignAttribution, CampaignKpis, ChannelKpis, TimeSeriesPoint, Totals,
};
use sqlx::PgPool;
use tonic::Status;

use crate::service::Scope;

/// The wire totals of the five sums, in [`domain::Fact::ALL`] order: every KPI is
/// computed by the catalogue.
fn totals(sums: [i64; 5]) -> Totals {
    domain::Totals::new(Facts::from_sums(sums)).into()
}

const SUMS: &str = "coalesce(sum(impressions), 0)::bigint AS i, coalesce(sum(clicks), 0)::bigint AS c,
                    coalesce(sum(conversions), 0)::bigint AS v, coalesce(sum(spend_micros), 0)::bigint AS s,
                    coalesce(sum(revenue_micros), 0)::bigint AS r";

async fn begin(pool: &PgPool, scope: &Scope) -> Result<ReadTx, sqlx::Error> {
    platform::db::begin_read_only_for_tenant(pool, scope.tenant).await
}

/// The overview query: $1 tenant, $2 first day of the range, $3 first day of the
/// previous range, $4 last day, $5 currency. Public so benchmarks run the same SQL.
pub fn overview_sql() -> String {
    format!(
        "SELECT day >= $2 AS current, {SUMS} FROM output.daily_campaign_facts
         WHERE tenant_id = $1 AND day BETWEEN $3 AND $4 AND currency = $5
         GROUP BY 1"
    )
}

/// The campaign KPI query: $1 tenant, $2 from, $3 to, $4 currency, $5 limit, $6 offset.
/// The sort expression is the catalogue's (unspecified: spend).
pub fn campaigns_sql(sort: pb::Kpi, ascending: bool) -> String {
    let direction = if ascending { "ASC" } else { "DESC" };
    let order = Kpi::try_from(sort).unwrap_or(Kpi::Spend).sort_expression();
    format!(
        "WITH per_campaign AS (
             SELECT campaign, {SUMS} FROM output.daily_campaign_facts
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND currency = $4
             GROUP BY campaign)
         SELECT campaign, i, c, v, s, r, count(*) OVER () FROM per_campaign
         ORDER BY {order} {direction} NULLS LAST, campaign
         LIMIT $5 OFFSET $6"
    )
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.system = "postgresql", db.operation = "overview", otel.kind = "client"))]
pub(crate) async fn overview(
    pool: &PgPool,
    scope: &Scope,
    prev_from: time::Date,
) -> Result<(Totals, Totals), sqlx::Error> {
    let mut tx = begin(pool, scope).await?;
    let rows: Vec<(bool, [i64; 5])> =
        sqlx::query_as::<_, (bool, i64, i64, i64, i64, i64)>(&overview_sql())
            .bind(scope.tenant)
            .bind(scope.from)
            .bind(prev_from)
            .bind(scope.to)
            .bind(&scope.currency)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(cur, i, c, v, s, r)| (cur, [i, c, v, s, r]))
            .collect();
    tx.end();
    let zero = || totals([0; 5]);
    let (mut current, mut previous) = (zero(), zero());
    for (is_current, sums) in rows {
        if is_current {
            current = totals(sums);
        } else {
            previous = totals(sums);
        }
    }
    Ok((current, previous))
}

pub(crate) fn encode_page_token(offset: u64) -> String {
    format!("o{offset}")
}

pub(crate) fn decode_page_token(token: &str) -> Result<u64, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token
        .strip_prefix('o')
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n <= 1_000_000)
        .ok_or_else(|| Status::invalid_argument("invalid page_token"))
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.system = "postgresql", db.operation = "campaigns", otel.kind = "client"))]
pub(crate) async fn campaigns(
    pool: &PgPool,
    scope: &Scope,
    sort: pb::Kpi,
    ascending: bool,
    limit: u32,
    offset: u64,
) -> Result<(Vec<CampaignKpis>, u64), sqlx::Error> {
    let mut tx = begin(pool, scope).await?;
    let rows: Vec<(String, i64, i64, i64, i64, i64, i64)> =
        sqlx::query_as(&campaigns_sql(sort, ascending))
            .bind(scope.tenant)
            .bind(scope.from)
            .bind(scope.to)
            .bind(&scope.currency)
            .bind(i64::from(limit))
            .bind(offset as i64)
            .fetch_all(&mut *tx)
            .await?;
    tx.end();
    let total = rows.first().map(|r| r.6 as u64).unwrap_or(0);
    let campaigns = rows
        .into_iter()
        .map(|(campaign, i, c, v, s, r, _)| CampaignKpis {
            campaign,
            totals: Some(totals([i, c, v, s, r])),
        })
        .collect();
    Ok((campaigns, total))
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.system = "postgresql", db.operation = "time_series", otel.kind = "client"))]
pub(crate) async fn time_series(
    pool: &PgPool,
    scope: &Scope,
    week: bool,
    campaign: Option<&str>,
) -> Result<Vec<TimeSeriesPoint>, sqlx::Error> {
    let unit = if week { "week" } else { "day" };
    let mut tx = begin(pool, scope).await?;
    let rows: Vec<(time::Date, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "WITH periods AS (
             SELECT p::date AS period FROM generate_series(date_trunc('{unit}', $2::date), $3::date, interval '1 {unit}') p),
         facts AS (
             SELECT date_trunc('{unit}', day)::date AS period, {SUMS} FROM output.daily_campaign_facts
             WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND currency = $4
               AND ($5::text IS NULL OR campaign = $5)
             GROUP BY 1)
         SELECT periods.period, coalesce(i, 0), coalesce(c, 0), coalesce(v, 0), coalesce(s, 0), coalesce(r, 0)
         FROM periods LEFT JOIN facts USING (period) ORDER BY 1"
    ))
    .bind(scope.tenant)
    .bind(scope.from)
    .bind(scope.to)
    .bind(&scope.currency)
    .bind(campaign)
    .fetch_all(&mut *tx)
    .await?;
    tx.end();
    Ok(rows
        .into_iter()
        .map(|(day, i, c, v, s, r)| TimeSeriesPoint {
            period_start: domain::format_date(day),
            totals: Some(totals([i, c, v, s, r])),
        })
        .collect())
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.system = "postgresql", db.operation = "channels", otel.kind = "client"))]
pub(crate) async fn channels(
    pool: &PgPool,
    scope: &Scope,
) -> Result<Vec<ChannelKpis>, sqlx::Error> {
    let mut tx = begin(pool, scope).await?;
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT channel, {SUMS} FROM output.daily_campaign_facts
         WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND currency = $4
         GROUP BY channel ORDER BY s DESC, channel"
    ))
    .bind(scope.tenant)
    .bind(scope.from)
    .bind(scope.to)
    .bind(&scope.currency)
    .fetch_all(&mut *tx)
    .await?;
    tx.end();
    Ok(rows
        .into_iter()
        .map(|(channel, i, c, v, s, r)| ChannelKpis {
            channel,
            totals: Some(totals([i, c, v, s, r])),
        })
        .collect())
}

#[tracing::instrument(name = "db.query", skip_all, fields(db.system = "postgresql", db.operation = "attribution", otel.kind = "client"))]
pub(crate) async fn attribution(
    pool: &PgPool,
    scope: &Scope,
) -> Result<Vec<CampaignAttribution>, sqlx::Error> {
    let mut tx = begin(pool, scope).await?;
    let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT campaign,
                coalesce(sum(conversions_micros) FILTER (WHERE model = 'last_click'), 0)::bigint,
                coalesce(sum(revenue_micros)     FILTER (WHERE model = 'last_click'), 0)::bigint,
                coalesce(sum(conversions_micros) FILTER (WHERE model = 'linear'), 0)::bigint,
                coalesce(sum(revenue_micros)     FILTER (WHERE model = 'linear'), 0)::bigint
         FROM output.attribution
         WHERE tenant_id = $1 AND day BETWEEN $2 AND $3 AND currency = $4
         GROUP BY campaign ORDER BY 3 DESC, campaign",
    )
    .bind(scope.tenant)
    .bind(scope.from)
    .bind(scope.to)
    .bind(&scope.currency)
    .fetch_all(&mut *tx)
    .await?;
    tx.end();
    Ok(rows
        .into_iter()
        .map(|(campaign, lc, lr, nc, nr)| CampaignAttribution {
            campaign,
            last_click_conversions_micros: lc,
            last_click_revenue_micros: lr,
            linear_conversions_micros: nc,
            linear_revenue_micros: nr,
        })
        .collect())
}
