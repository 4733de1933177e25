//! KPI arithmetic: ratios with zero denominators are absent, money stays integer.

use proto::analytics::v1::{Kpi, Totals};

/// Totals with every derived ratio.
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

/// One KPI of a totals row, as a number (money in micros); `None` when undefined.
pub fn value(t: &Totals, kpi: Kpi) -> Option<f64> {
    match kpi {
        Kpi::Unspecified => None,
        Kpi::Impressions => Some(t.impressions as f64),
        Kpi::Clicks => Some(t.clicks as f64),
        Kpi::Conversions => Some(t.conversions as f64),
        Kpi::Spend => Some(t.spend_micros as f64),
        Kpi::Revenue => Some(t.revenue_micros as f64),
        Kpi::Ctr => t.ctr,
        Kpi::Cvr => t.cvr,
        Kpi::Cpc => t.cpc_micros.map(|v| v as f64),
        Kpi::Cpa => t.cpa_micros.map(|v| v as f64),
        Kpi::Roas => t.roas,
    }
}

/// The SQL expression that sorts campaigns by a KPI, over the aggregate columns
/// `i, c, v, s, r`. A fixed whitelist: nothing from the request reaches the SQL text.
pub fn sort_expression(kpi: Kpi) -> &'static str {
    match kpi {
        Kpi::Impressions => "i",
        Kpi::Clicks => "c",
        Kpi::Conversions => "v",
        Kpi::Unspecified | Kpi::Spend => "s",
        Kpi::Revenue => "r",
        Kpi::Ctr => "c::float8 / NULLIF(i, 0)",
        Kpi::Cvr => "v::float8 / NULLIF(c, 0)",
        Kpi::Cpc => "s / NULLIF(c, 0)",
        Kpi::Cpa => "s / NULLIF(v, 0)",
        Kpi::Roas => "r::float8 / NULLIF(s, 0)",
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
        for k in [Kpi::Ctr, Kpi::Cvr, Kpi::Cpc, Kpi::Cpa, Kpi::Roas] {
            assert_eq!(value(&t, k), None);
        }
        let t = totals(1000, 50, 5, 10_000_000, 40_000_000);
        assert_eq!(t.ctr, Some(0.05));
        assert_eq!(t.cvr, Some(0.1));
        assert_eq!(t.cpc_micros, Some(200_000));
        assert_eq!(t.cpa_micros, Some(2_000_000));
        assert_eq!(t.roas, Some(4.0));
    }
}
