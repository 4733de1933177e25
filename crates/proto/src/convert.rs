//! The one conversion between the gRPC messages and `domain`'s KPI types, used by
//! analytics (domain → proto) and the api (proto → domain) alike.

use domain::{
    DateRange, ParamError,
    kpi::{Facts, Kpi, Totals},
};

use crate::analytics::v1 as pb;

impl From<Totals> for pb::Totals {
    fn from(t: Totals) -> Self {
        let f = t.facts;
        Self {
            impressions: f.impressions,
            clicks: f.clicks,
            conversions: f.conversions,
            spend_micros: f.spend_micros,
            revenue_micros: f.revenue_micros,
            ctr: t.real(Kpi::Ctr),
            cvr: t.real(Kpi::Cvr),
            cpc_micros: t.int(Kpi::Cpc),
            cpa_micros: t.int(Kpi::Cpa),
            roas: t.real(Kpi::Roas),
        }
    }
}

/// The facts; every KPI is recomputed from them by the catalogue.
impl From<pb::Totals> for Totals {
    fn from(t: pb::Totals) -> Self {
        Totals::new(Facts {
            impressions: t.impressions,
            clicks: t.clicks,
            conversions: t.conversions,
            spend_micros: t.spend_micros,
            revenue_micros: t.revenue_micros,
        })
    }
}

/// `KPI_<KEY>` of the proto for each KPI of the catalogue.
impl From<Kpi> for pb::Kpi {
    fn from(k: Kpi) -> Self {
        pb::Kpi::from_str_name(&format!("KPI_{}", k.key().to_ascii_uppercase()))
            .unwrap_or(pb::Kpi::Unspecified)
    }
}

impl TryFrom<pb::Kpi> for Kpi {
    type Error = ();
    fn try_from(k: pb::Kpi) -> Result<Self, ()> {
        k.as_str_name()
            .strip_prefix("KPI_")
            .and_then(|key| Kpi::parse(&key.to_ascii_lowercase()))
            .ok_or(())
    }
}

impl From<DateRange> for pb::DateRange {
    fn from(r: DateRange) -> Self {
        Self {
            from: domain::format_date(r.from),
            to: domain::format_date(r.to),
        }
    }
}

/// Any well-formed range (bounds in length are the server's to apply).
impl TryFrom<pb::DateRange> for DateRange {
    type Error = ParamError;
    fn try_from(r: pb::DateRange) -> Result<Self, ParamError> {
        DateRange::parse(&r.from, &r.to, i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kpi_of_the_catalogue_is_in_the_proto_and_back() {
        for kpi in Kpi::all() {
            let wire = pb::Kpi::from(kpi);
            assert_ne!(
                wire,
                pb::Kpi::Unspecified,
                "{kpi} is missing from analytics.proto"
            );
            assert_eq!(Kpi::try_from(wire), Ok(kpi));
        }
        assert!(Kpi::try_from(pb::Kpi::Unspecified).is_err());
    }

    #[test]
    fn totals_cross_the_wire_as_facts() {
        let t = Totals::new(Facts::from_sums([1000, 50, 5, 10_000_000, 40_000_000]));
        let wire = pb::Totals::from(t);
        assert_eq!(wire.cpc_micros, Some(200_000));
        assert_eq!(wire.ctr, Some(0.05));
        assert_eq!(Totals::from(wire), t);
    }
}
