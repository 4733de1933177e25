//! The KPI catalogue: every KPI Beacon reports, with the base facts it is computed
//! from, its formula, the SQL that sorts by it, its label and its format. Analytics
//! computes and sorts with it, the api serializes [`Totals`] and documents them from
//! it, the dashboard builds its columns and tiles from it. Adding a KPI is a variant
//! of [`Kpi`], an entry of [`CATALOGUE`] and a value of the proto's `Kpi` enum.

use std::fmt;

use serde::{Deserialize, Serialize, ser::SerializeMap};

/// A base fact: a column of `output.daily_campaign_facts`, summed per row of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fact {
    Impressions,
    Clicks,
    Conversions,
    Spend,
    Revenue,
}

impl Fact {
    /// Every fact, in the order aggregate queries select them.
    pub const ALL: [Fact; 5] = [
        Fact::Impressions,
        Fact::Clicks,
        Fact::Conversions,
        Fact::Spend,
        Fact::Revenue,
    ];

    /// The column of `output.daily_campaign_facts` (and the field of [`Facts`]).
    pub const fn column(self) -> &'static str {
        match self {
            Fact::Impressions => "impressions",
            Fact::Clicks => "clicks",
            Fact::Conversions => "conversions",
            Fact::Spend => "spend_micros",
            Fact::Revenue => "revenue_micros",
        }
    }

    /// The alias aggregate queries give the fact's sum (what sort expressions name).
    pub const fn alias(self) -> &'static str {
        match self {
            Fact::Impressions => "i",
            Fact::Clicks => "c",
            Fact::Conversions => "v",
            Fact::Spend => "s",
            Fact::Revenue => "r",
        }
    }
}

/// The summed base facts of one row; money in integer micros.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facts {
    pub impressions: i64,
    pub clicks: i64,
    pub conversions: i64,
    pub spend_micros: i64,
    pub revenue_micros: i64,
}

impl Facts {
    /// From the sums in [`Fact::ALL`] order, as aggregate queries select them.
    pub const fn from_sums([i, c, v, s, r]: [i64; 5]) -> Self {
        Self {
            impressions: i,
            clicks: c,
            conversions: v,
            spend_micros: s,
            revenue_micros: r,
        }
    }

    pub const fn get(&self, fact: Fact) -> i64 {
        match fact {
            Fact::Impressions => self.impressions,
            Fact::Clicks => self.clicks,
            Fact::Conversions => self.conversions,
            Fact::Spend => self.spend_micros,
            Fact::Revenue => self.revenue_micros,
        }
    }
}

impl std::ops::AddAssign for Facts {
    fn add_assign(&mut self, o: Self) {
        self.impressions += o.impressions;
        self.clicks += o.clicks;
        self.conversions += o.conversions;
        self.spend_micros += o.spend_micros;
        self.revenue_micros += o.revenue_micros;
    }
}

/// How a KPI is computed from the facts. A quotient with a zero denominator is
/// undefined (absent), never NaN or infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Formula {
    /// The fact itself.
    Sum(Fact),
    /// `num / den` as a real number (rates, return on spend).
    Ratio { num: Fact, den: Fact },
    /// `num × per / den` in integer micros, truncated (cost per click, per mille…).
    MoneyPer { num: Fact, den: Fact, per: i64 },
}

/// How a KPI is shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A whole number: `1,234`.
    Count,
    /// Integer micros of the answer's currency: `1,234.57 EUR`.
    Money,
    /// A ratio as a percentage: `5.12%`.
    Percent,
    /// A ratio as a multiple: `4.00×`.
    Multiple,
}

// A KPI. The order is the order of the fields of `Totals` (base facts first). (A
// plain comment: a doc comment would become the schema's description in the api's
// OpenAPI document.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Kpi {
    Impressions,
    Clicks,
    Conversions,
    Spend,
    Revenue,
    Ctr,
    Cvr,
    Cpc,
    Cpa,
    Roas,
    Cpm,
}

/// One KPI's entry in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Definition {
    pub kpi: Kpi,
    /// The name in queries, sort keys and the proto (`KPI_<KEY>`).
    pub key: &'static str,
    /// The field of [`Totals`] in JSON.
    pub field: &'static str,
    /// Short label (table headings, tiles).
    pub label: &'static str,
    /// What it is, in one line.
    pub description: &'static str,
    pub formula: Formula,
    pub format: Format,
    /// Shown as a tile on the overview and campaign pages.
    pub tile: bool,
}

use Fact::{Clicks, Conversions, Impressions, Revenue, Spend};

/// Every KPI, in the order tables show them.
pub const CATALOGUE: &[Definition] = &[
    Definition {
        kpi: Kpi::Impressions,
        key: "impressions",
        field: "impressions",
        label: "Impressions",
        description: "Ads shown",
        formula: Formula::Sum(Impressions),
        format: Format::Count,
        tile: true,
    },
    Definition {
        kpi: Kpi::Clicks,
        key: "clicks",
        field: "clicks",
        label: "Clicks",
        description: "Ads clicked",
        formula: Formula::Sum(Clicks),
        format: Format::Count,
        tile: true,
    },
    Definition {
        kpi: Kpi::Ctr,
        key: "ctr",
        field: "ctr",
        label: "CTR",
        description: "clicks / impressions",
        formula: Formula::Ratio {
            num: Clicks,
            den: Impressions,
        },
        format: Format::Percent,
        tile: true,
    },
    Definition {
        kpi: Kpi::Conversions,
        key: "conversions",
        field: "conversions",
        label: "Conversions",
        description: "Conversions attributed",
        formula: Formula::Sum(Conversions),
        format: Format::Count,
        tile: true,
    },
    Definition {
        kpi: Kpi::Cvr,
        key: "cvr",
        field: "cvr",
        label: "CVR",
        description: "conversions / clicks",
        formula: Formula::Ratio {
            num: Conversions,
            den: Clicks,
        },
        format: Format::Percent,
        tile: true,
    },
    Definition {
        kpi: Kpi::Spend,
        key: "spend",
        field: "spend_micros",
        label: "Spend",
        description: "Ad spend",
        formula: Formula::Sum(Spend),
        format: Format::Money,
        tile: true,
    },
    Definition {
        kpi: Kpi::Cpc,
        key: "cpc",
        field: "cpc_micros",
        label: "CPC",
        description: "spend / clicks",
        formula: Formula::MoneyPer {
            num: Spend,
            den: Clicks,
            per: 1,
        },
        format: Format::Money,
        tile: false,
    },
    Definition {
        kpi: Kpi::Cpa,
        key: "cpa",
        field: "cpa_micros",
        label: "CPA",
        description: "spend / conversions",
        formula: Formula::MoneyPer {
            num: Spend,
            den: Conversions,
            per: 1,
        },
        format: Format::Money,
        tile: false,
    },
    Definition {
        kpi: Kpi::Cpm,
        key: "cpm",
        field: "cpm_micros",
        label: "CPM",
        description: "spend per thousand impressions",
        formula: Formula::MoneyPer {
            num: Spend,
            den: Impressions,
            per: 1000,
        },
        format: Format::Money,
        tile: false,
    },
    Definition {
        kpi: Kpi::Revenue,
        key: "revenue",
        field: "revenue_micros",
        label: "Revenue",
        description: "Conversion value",
        formula: Formula::Sum(Revenue),
        format: Format::Money,
        tile: true,
    },
    Definition {
        kpi: Kpi::Roas,
        key: "roas",
        field: "roas",
        label: "ROAS",
        description: "revenue / spend",
        formula: Formula::Ratio {
            num: Revenue,
            den: Spend,
        },
        format: Format::Multiple,
        tile: true,
    },
];

/// A KPI's value: a whole number (counts, money in micros) or a real one (ratios).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Real(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(v) => v as f64,
            Value::Real(v) => v,
        }
    }
}

impl Formula {
    /// The value over `facts`; `None` when a denominator is zero (or the result does
    /// not fit).
    pub fn apply(self, facts: &Facts) -> Option<Value> {
        match self {
            Formula::Sum(f) => Some(Value::Int(facts.get(f))),
            Formula::Ratio { num, den } => {
                let d = facts.get(den);
                (d != 0).then(|| Value::Real(facts.get(num) as f64 / d as f64))
            }
            Formula::MoneyPer { num, den, per } => {
                let d = facts.get(den);
                if d == 0 {
                    return None;
                }
                facts.get(num).checked_mul(per).map(|n| Value::Int(n / d))
            }
        }
    }

    /// The SQL expression over the aliases of [`Fact::alias`]. A fixed text per
    /// formula: nothing from a request reaches it.
    pub fn sql(self) -> String {
        match self {
            Formula::Sum(f) => f.alias().to_owned(),
            Formula::Ratio { num, den } => {
                format!("{}::float8 / NULLIF({}, 0)", num.alias(), den.alias())
            }
            Formula::MoneyPer { num, den, per: 1 } => {
                format!("{} / NULLIF({}, 0)", num.alias(), den.alias())
            }
            Formula::MoneyPer { num, den, per } => {
                format!("{} * {per} / NULLIF({}, 0)", num.alias(), den.alias())
            }
        }
    }

    /// Whether the value is an integer (counts and money) rather than a real number.
    pub const fn is_integer(self) -> bool {
        !matches!(self, Formula::Ratio { .. })
    }

    /// Whether the value may be absent (a quotient).
    pub const fn is_optional(self) -> bool {
        !matches!(self, Formula::Sum(_))
    }
}

impl Kpi {
    /// Every KPI in declaration order (the order of [`Totals`]' fields).
    pub fn all() -> impl Iterator<Item = Kpi> {
        let mut kpis: Vec<Kpi> = CATALOGUE.iter().map(|d| d.kpi).collect();
        kpis.sort_by_key(|k| *k as u8);
        kpis.into_iter()
    }

    /// The catalogue entry.
    pub fn def(self) -> &'static Definition {
        CATALOGUE
            .iter()
            .find(|d| d.kpi == self)
            .unwrap_or(&CATALOGUE[0])
    }

    pub fn key(self) -> &'static str {
        self.def().key
    }

    /// The KPI named `key` (`"ctr"`), if any.
    pub fn parse(key: &str) -> Option<Kpi> {
        CATALOGUE.iter().find(|d| d.key == key).map(|d| d.kpi)
    }

    /// The SQL that sorts rows by this KPI.
    pub fn sort_expression(self) -> String {
        self.def().formula.sql()
    }
}

impl fmt::Display for Kpi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// The KPIs of one row (a period, a campaign, a channel): its facts, and every
/// KPI of the catalogue computed from them. Serialized as one object with a field per
/// KPI ([`Definition::field`]); undefined KPIs are left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub facts: Facts,
}

impl Totals {
    pub const fn new(facts: Facts) -> Self {
        Self { facts }
    }

    pub fn value(&self, kpi: Kpi) -> Option<Value> {
        kpi.def().formula.apply(&self.facts)
    }

    /// The value as a number (money in micros), for sorting, charts and statistics.
    pub fn number(&self, kpi: Kpi) -> Option<f64> {
        self.value(kpi).map(Value::as_f64)
    }

    /// A ratio KPI's value (`None` when undefined or not a ratio).
    pub fn real(&self, kpi: Kpi) -> Option<f64> {
        match self.value(kpi)? {
            Value::Real(v) => Some(v),
            Value::Int(_) => None,
        }
    }

    /// A count or money KPI's value (`None` when undefined or a ratio).
    pub fn int(&self, kpi: Kpi) -> Option<i64> {
        match self.value(kpi)? {
            Value::Int(v) => Some(v),
            Value::Real(_) => None,
        }
    }
}

impl Serialize for Totals {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for kpi in Kpi::all() {
            match self.value(kpi) {
                Some(Value::Int(v)) => map.serialize_entry(kpi.def().field, &v)?,
                Some(Value::Real(v)) => map.serialize_entry(kpi.def().field, &v)?,
                None => {}
            }
        }
        map.end()
    }
}

/// Reads the facts; the derived fields are recomputed, never trusted.
impl<'de> Deserialize<'de> for Totals {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Wire {
            impressions: i64,
            clicks: i64,
            conversions: i64,
            spend_micros: i64,
            revenue_micros: i64,
        }
        let w = Wire::deserialize(d)?;
        Ok(Self::new(Facts {
            impressions: w.impressions,
            clicks: w.clicks,
            conversions: w.conversions,
            spend_micros: w.spend_micros,
            revenue_micros: w.revenue_micros,
        }))
    }
}

#[cfg(feature = "utoipa")]
mod schema;
#[cfg(test)]
mod tests;
