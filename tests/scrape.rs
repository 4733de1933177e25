//! A service's `/metrics` as the Prometheus text format says it: families with their
//! HELP and TYPE, each series with its labels and value. Tests read a running stack's
//! exposition through this (names, labels, bucket bounds, counts).

use std::collections::BTreeMap;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key).map(String::as_str)
    }
}

/// One metric family: its HELP, TYPE and samples (for a histogram, the `_bucket`,
/// `_sum` and `_count` lines).
#[derive(Debug, Clone, Default)]
pub struct Family {
    pub help: Option<String>,
    pub kind: Option<String>,
    pub samples: Vec<Sample>,
}

impl Family {
    /// Samples whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        suffix: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name.ends_with(suffix) && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
        })
    }

    /// The `_count` of the histogram series with `labels` (0 when absent).
    pub fn count(&self, labels: &[(&str, &str)]) -> f64 {
        self.matching("_count", labels).map(|s| s.value).sum()
    }

    /// The distinct values of label `key` across the family.
    pub fn label_values(&self, key: &str) -> std::collections::BTreeSet<String> {
        self.samples
            .iter()
            .filter_map(|s| s.label(key).map(str::to_owned))
            .collect()
    }
}

/// A whole exposition, by family name.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, Family>,
}

impl Exposition {
    /// Parses the text format; a line that does not parse is an error naming it.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut families: BTreeMap<String, Family> = BTreeMap::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
                families.entry(name.to_owned()).or_default().help = Some(help.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest
                    .split_once(' ')
                    .ok_or_else(|| anyhow::anyhow!("bad TYPE line {line:?}"))?;
                families.entry(name.to_owned()).or_default().kind = Some(kind.to_owned());
            } else if line.starts_with('#') {
                continue;
            } else {
                let sample = parse_sample(line)?;
                let family = family_of(&sample.name, &families);
                families.entry(family).or_default().samples.push(sample);
            }
        }
        Ok(Self { families })
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.get(name)
    }

    /// Every sample of every family.
    pub fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.families.values().flat_map(|f| f.samples.iter())
    }
}

/// A histogram's `_bucket`/`_sum`/`_count` lines belong to the family declared by TYPE.
fn family_of(sample: &str, families: &BTreeMap<String, Family>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = sample.strip_suffix(suffix)
            && families
                .get(base)
                .is_some_and(|f| matches!(f.kind.as_deref(), Some("histogram" | "summary")))
        {
            return base.to_owned();
        }
    }
    sample.to_owned()
}

fn parse_sample(line: &str) -> anyhow::Result<Sample> {
    let bad = || anyhow::anyhow!("bad sample line {line:?}");
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}').ok_or_else(bad)?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close]).ok_or_else(bad)?,
                &line[close + 1..],
            )
        }
        None => {
            let (name, rest) = line.split_once(' ').ok_or_else(bad)?;
            (name, BTreeMap::new(), rest)
        }
    };
    let value = rest.split_whitespace().next().ok_or_else(bad)?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| bad())?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",k2="v2"` with `\"`, `\\` and `\n` escapes.
fn parse_labels(text: &str) -> Option<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(labels);
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        chars.next()?; // '='
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_owned(), value);
    }
}

/// GETs `http://127.0.0.1:{admin_port}/metrics` as text.
pub async fn scrape_text(client: &reqwest::Client, admin_port: u16) -> anyhow::Result<String> {
    let response = client
        .get(format!("http://127.0.0.1:{admin_port}/metrics"))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "/metrics answered {}",
        response.status()
    );
    Ok(response.text().await?)
}

/// GETs `http://127.0.0.1:{admin_port}/metrics` and parses it.
pub async fn scrape(client: &reqwest::Client, admin_port: u16) -> anyhow::Result<Exposition> {
    Exposition::parse(&scrape_text(client, admin_port).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_histograms_counters_and_escapes() {
        let text = "# HELP h_seconds Duration.\n# TYPE h_seconds histogram\n\
            h_seconds_bucket{route=\"/a/{id}\",le=\"0.005\"} 1\n\
            h_seconds_bucket{route=\"/a/{id}\",le=\"+Inf\"} 2\n\
            h_seconds_sum{route=\"/a/{id}\"} 0.5\nh_seconds_count{route=\"/a/{id}\"} 2\n\n\
            # TYPE c_total counter\nc_total{v=\"a\\\"b\"} 3\nplain 4\n";
        let e = Exposition::parse(text).unwrap();
        let h = e.family("h_seconds").unwrap();
        assert_eq!(h.help.as_deref(), Some("Duration."));
        assert_eq!(h.count(&[("route", "/a/{id}")]), 2.0);
        assert_eq!(h.matching("_bucket", &[("le", "+Inf")]).count(), 1);
        let c = &e.family("c_total").unwrap().samples[0];
        assert_eq!((c.label("v"), c.value), (Some("a\"b"), 3.0));
        assert_eq!(e.family("plain").unwrap().samples[0].value, 4.0);
        assert!(Exposition::parse("x{a=\"1\" 2").is_err());
    }
}
