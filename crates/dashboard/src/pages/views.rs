//! View models shared by the pages: tiles, table columns and cells, charts, all
//! built from the KPI catalogue (`domain::kpi`), so a KPI added there shows up here.

use domain::{CATALOGUE, Format, Kpi, Totals, answers::TimeSeriesPoint};

use crate::{charts, format_count, format_money, format_ratio};

pub(crate) struct Tile {
    pub key: &'static str,
    pub label: &'static str,
    pub value: String,
    pub delta: String,
    pub trend: &'static str,
}

pub(crate) struct Chart {
    pub key: &'static str,
    pub title: String,
    pub svg: String,
    pub anomalies: usize,
}

pub(crate) fn delta(current: f64, previous: f64) -> (String, &'static str) {
    if previous == 0.0 {
        return ("no data in the previous period".into(), "flat");
    }
    let change = (current - previous) / previous * 100.0;
    let trend = if change > 0.05 {
        "up"
    } else if change < -0.05 {
        "down"
    } else {
        "flat"
    };
    (format!("{change:+.1}% vs previous period"), trend)
}

pub(crate) fn money_axis(v: f64) -> String {
    let units = v / 1_000_000.0;
    if units >= 1_000_000.0 {
        format!("{:.1}M", units / 1_000_000.0)
    } else if units >= 1_000.0 {
        format!("{:.1}k", units / 1_000.0)
    } else {
        format!("{units:.0}")
    }
}

pub(crate) fn count_axis(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.1}k", v / 1_000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The daily trend charts (with their anomalies), in this order.
pub(crate) const TRENDS: [Kpi; 4] = [Kpi::Spend, Kpi::Clicks, Kpi::Conversions, Kpi::Revenue];

/// A chart axis for a KPI's values.
pub(crate) fn axis(kpi: Kpi) -> fn(f64) -> String {
    match kpi.def().format {
        Format::Money => money_axis,
        _ => count_axis,
    }
}

/// A KPI's value for people, in `currency` for money; an em dash when undefined.
pub(crate) fn cell(t: &Totals, kpi: Kpi, currency: &str) -> String {
    match kpi.def().format {
        Format::Count => t.int(kpi).map(format_count).unwrap_or_else(|| "—".into()),
        Format::Money => t
            .int(kpi)
            .map(|v| format_money(v, currency))
            .unwrap_or_else(|| "—".into()),
        Format::Percent => format_ratio(t.real(kpi), true),
        Format::Multiple => format_ratio(t.real(kpi), false),
    }
}

/// Every KPI of the catalogue, in table order.
pub(crate) fn cells(t: &Totals, currency: &str) -> Vec<String> {
    CATALOGUE.iter().map(|d| cell(t, d.kpi, currency)).collect()
}

/// The tiles of the catalogue: values of `current`, compared with `previous` when given.
pub(crate) fn tiles(current: &Totals, previous: Option<&Totals>, currency: &str) -> Vec<Tile> {
    CATALOGUE
        .iter()
        .filter(|d| d.tile)
        .map(|d| {
            let (delta, trend) = match previous {
                None => (String::new(), "flat"),
                Some(p) => match (current.number(d.kpi), p.number(d.kpi)) {
                    (Some(c), Some(p)) => delta(c, p),
                    _ => ("no data in the previous period".into(), "flat"),
                },
            };
            Tile {
                key: d.key,
                label: d.label,
                value: cell(current, d.kpi, currency),
                delta,
                trend,
            }
        })
        .collect()
}

/// The title of a KPI's chart; money names its currency.
pub(crate) fn chart_title(kpi: Kpi, currency: &str) -> String {
    match kpi.def().format {
        Format::Money => format!("{} ({currency})", kpi.def().label),
        _ => kpi.def().label.to_owned(),
    }
}

pub(crate) fn line(
    key: &'static str,
    title: String,
    points: &[TimeSeriesPoint],
    kpi: Kpi,
    anomalies: &[String],
) -> Chart {
    let series: Vec<(String, f64)> = points
        .iter()
        .map(|p| (p.period_start.clone(), p.totals.number(kpi).unwrap_or(0.0)))
        .collect();
    let svg = charts::line_chart(&charts::Line {
        id: key,
        title: &title,
        points: &series,
        anomalies,
        format: axis(kpi),
    });
    Chart {
        key,
        title,
        svg,
        anomalies: anomalies.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_format() {
        assert_eq!(money_axis(2_500_000_000.0), "2.5k");
        assert_eq!(count_axis(999.0), "999");
    }

    #[test]
    fn every_kpi_of_the_catalogue_is_a_column_and_cpm_is_one_of_them() {
        let t = Totals::new(domain::Facts::from_sums([4000, 50, 5, 2_500_000, 0]));
        let row = cells(&t, "EUR");
        assert_eq!(row.len(), CATALOGUE.len());
        let at = |key: &str| CATALOGUE.iter().position(|d| d.key == key).unwrap();
        assert_eq!(row[at("cpm")], "0.63 EUR");
        assert_eq!(row[at("ctr")], "1.25%");
        assert_eq!(row[at("roas")], "0.00×");
        assert_eq!(row[at("spend")], "2.50 EUR");
        let zero = cells(&Totals::default(), "EUR");
        assert_eq!(zero[at("cpm")], "—");
        let tiles = tiles(&t, Some(&t), "EUR");
        assert!(tiles.iter().any(|t| t.key == "spend" && t.trend == "flat"));
        assert_eq!(tiles.len(), CATALOGUE.iter().filter(|d| d.tile).count());
    }

    #[test]
    fn deltas_compare_with_the_previous_period() {
        assert_eq!(
            delta(110.0, 100.0),
            ("+10.0% vs previous period".to_owned(), "up")
        );
        assert_eq!(delta(90.0, 100.0).1, "down");
        assert_eq!(delta(5.0, 0.0).1, "flat");
    }
}
