#![allow(
    dead_code,
    reason = "wired into the pages with the KPI routes of the API"
)]
//! Charts, rendered on the server as SVG with plotters: no script, no third-party
//! origin, nothing for the Content-Security-Policy to allow. Every chart carries a
//! `<title>` and a `<desc>` (its text alternative) and scales to its container.

use std::sync::OnceLock;

use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const ACCENT: RGBColor = RGBColor(48, 86, 211);
const ANOMALY: RGBColor = RGBColor(180, 35, 24);
const GRID: RGBColor = RGBColor(228, 231, 236);
const INK: RGBColor = RGBColor(29, 36, 51);

fn fonts() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        // The embedded font only measures text for layout; browsers draw it.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Escapes text for XML: labels come from tenant data (campaign names).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Makes plotters' SVG responsive and accessible: drops the fixed size (the viewBox
/// stays), adds `role="img"`, a title and a description.
fn finish(svg: String, id: &str, title: &str, desc: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return svg;
    };
    let Some(end) = svg[start..].find('>').map(|i| start + i) else {
        return svg;
    };
    let open = &svg[start..end];
    let mut attrs: Vec<&str> = open
        .split_whitespace()
        .skip(1)
        .filter(|a| !a.starts_with("width=") && !a.starts_with("height="))
        .collect();
    let aria =
        format!(r#"role="img" aria-labelledby="{id}-title {id}-desc" class="chart" id="{id}""#);
    attrs.push(&aria);
    format!(
        "{}<svg {}><title id=\"{id}-title\">{}</title><desc id=\"{id}-desc\">{}</desc>{}",
        &svg[..start],
        attrs.join(" "),
        escape(title),
        escape(desc),
        &svg[end + 1..]
    )
}

/// One line series over days, with anomalous days marked.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    pub id: &'a str,
    pub title: &'a str,
    /// (day label, value)
    pub points: &'a [(String, f64)],
    pub anomalies: &'a [String],
    pub format: fn(f64) -> String,
}

pub fn line_chart(line: &Line<'_>) -> String {
    fonts();
    let mut svg = String::new();
    let n = line.points.len().max(1);
    let max = line.points.iter().map(|p| p.1).fold(0.0_f64, f64::max);
    let top = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (640, 260)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(72)
            .build_cartesian_2d(0..n.saturating_sub(1).max(1), 0.0..top)?;
        let labels: Vec<String> = line
            .points
            .iter()
            .map(|p| p.0.get(5..).unwrap_or(&p.0).to_owned())
            .collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .axis_style(GRID)
            .x_labels(6)
            .y_labels(5)
            .label_style(("sans-serif", 14).into_font().color(&INK))
            .x_label_formatter(&|i| labels.get(*i).cloned().unwrap_or_default())
            .y_label_formatter(&|v| (line.format)(*v))
            .draw()?;
        chart.draw_series(AreaSeries::new(
            line.points.iter().enumerate().map(|(i, p)| (i, p.1)),
            0.0,
            ACCENT.mix(0.12),
        ))?;
        chart.draw_series(LineSeries::new(
            line.points.iter().enumerate().map(|(i, p)| (i, p.1)),
            ACCENT.stroke_width(2),
        ))?;
        chart.draw_series(
            line.points
                .iter()
                .enumerate()
                .filter(|(_, p)| line.anomalies.contains(&p.0))
                .map(|(i, p)| Circle::new((i, p.1), 5, ANOMALY.filled())),
        )?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        tracing::warn!(error = %e, chart = line.id, "chart failed");
        return String::new();
    }
    let total: f64 = line.points.iter().map(|p| p.1).sum();
    let (first, last) = (
        line.points.first().map(|p| p.0.as_str()).unwrap_or(""),
        line.points.last().map(|p| p.0.as_str()).unwrap_or(""),
    );
    let mut desc = format!(
        "{} per day from {first} to {last}: highest {}, total {}.",
        line.title,
        (line.format)(max),
        (line.format)(total)
    );
    if !line.anomalies.is_empty() {
        desc.push_str(&format!(" Unusual days: {}.", line.anomalies.join(", ")));
    }
    finish(svg, line.id, line.title, &desc)
}

/// Horizontal bars, one per label.
#[derive(Debug, Clone)]
pub struct Bars<'a> {
    pub id: &'a str,
    pub title: &'a str,
    pub bars: &'a [(String, f64)],
    pub format: fn(f64) -> String,
}

pub fn bar_chart(bars: &Bars<'_>) -> String {
    fonts();
    let mut svg = String::new();
    let n = bars.bars.len().max(1);
    let max = bars.bars.iter().map(|b| b.1).fold(0.0_f64, f64::max);
    let right = if max <= 0.0 { 1.0 } else { max * 1.15 };
    let height = (60 + 34 * n as u32).min(900);
    let escaped: Vec<String> = bars.bars.iter().map(|b| escape(&b.0)).collect();
    // Segments count from the bottom: draw the first bar at the top.
    let at = |i: usize| n - 1 - i;
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (640, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(28)
            .y_label_area_size(120)
            .build_cartesian_2d(0.0..right, (0..n).into_segmented())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .bold_line_style(GRID)
            .axis_style(GRID)
            .x_labels(5)
            .label_style(("sans-serif", 14).into_font().color(&INK))
            .x_label_formatter(&|v| (bars.format)(*v))
            .y_label_formatter(&|seg| match seg {
                SegmentValue::CenterOf(i) if *i < n => {
                    escaped.get(at(*i)).cloned().unwrap_or_default()
                }
                _ => String::new(),
            })
            .draw()?;
        chart.draw_series(bars.bars.iter().enumerate().map(|(i, b)| {
            let mut rect = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(i)),
                    (b.1, SegmentValue::Exact(i + 1)),
                ],
                ACCENT.mix(0.85).filled(),
            );
            rect.set_margin(6, 6, 0, 0);
            rect
        }))?;
        root.present()?;
        Ok(())
    })();
    if let Err(e) = drawn {
        tracing::warn!(error = %e, chart = bars.id, "chart failed");
        return String::new();
    }
    let desc = bars
        .bars
        .iter()
        .map(|b| format!("{}: {}", b.0, (bars.format)(b.1)))
        .collect::<Vec<_>>()
        .join("; ");
    finish(svg, bars.id, bars.title, &desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(v: f64) -> String {
        format!("{v:.0}")
    }

    #[test]
    fn line_chart_is_accessible_responsive_and_marks_anomalies() {
        let points: Vec<(String, f64)> = (1..=14)
            .map(|d| (format!("2026-01-{d:02}"), d as f64 * 10.0))
            .collect();
        let anomalies = vec!["2026-01-07".to_owned()];
        let svg = line_chart(&Line {
            id: "spend",
            title: "Spend",
            points: &points,
            anomalies: &anomalies,
            format: money,
        });
        assert!(
            svg.contains(r#"role="img""#)
                && svg.contains("<title id=\"spend-title\">Spend</title>")
        );
        assert!(svg.contains("Unusual days: 2026-01-07"));
        assert!(svg.contains("viewBox"));
        let open = &svg[..svg.find('>').unwrap()];
        assert!(
            !open.contains("width=") && !open.contains("height="),
            "fixed size removed: {open}"
        );
        assert!(
            !svg.contains("style="),
            "no inline style: the CSP forbids it"
        );
        assert!(svg.matches("<circle").count() >= 1);
    }

    #[test]
    fn labels_from_tenant_data_are_escaped() {
        let evil = "<script>alert(1)</script><img src=x onerror=alert(2)>";
        let bars = vec![(evil.to_owned(), 10.0), ("Brand".to_owned(), 5.0)];
        let svg = bar_chart(&Bars {
            id: "c",
            title: evil,
            bars: &bars,
            format: money,
        });
        assert!(!svg.contains("<script") && !svg.contains("<img"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"));
    }
}
