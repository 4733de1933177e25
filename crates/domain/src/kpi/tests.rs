use super::*;

fn totals(i: i64, c: i64, v: i64, s: i64, r: i64) -> Totals {
    Totals::new(Facts::from_sums([i, c, v, s, r]))
}

#[test]
fn the_catalogue_names_every_kpi_once() {
    let mut keys: Vec<_> = CATALOGUE.iter().map(|d| d.key).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), CATALOGUE.len());
    assert_eq!(Kpi::all().count(), CATALOGUE.len());
    for kpi in Kpi::all() {
        assert_eq!(kpi.def().kpi, kpi);
        assert_eq!(Kpi::parse(kpi.key()), Some(kpi));
        // The serde name is the key.
        assert_eq!(serde_json::to_value(kpi).unwrap(), kpi.key());
    }
    // Base facts come first, in the order queries select them.
    let first: Vec<_> = Kpi::all().take(5).map(|k| k.def().formula).collect();
    assert_eq!(first, Fact::ALL.map(Formula::Sum));
}

#[test]
fn zero_denominators_are_absent() {
    let t = totals(0, 0, 0, 0, 0);
    for kpi in Kpi::all().filter(|k| k.def().formula.is_optional()) {
        assert_eq!(t.value(kpi), None, "{kpi}");
    }
    let json = serde_json::to_value(t).unwrap();
    assert_eq!(json.as_object().unwrap().len(), 5, "{json}");
}

#[test]
fn formulas() {
    let t = totals(1000, 50, 5, 10_000_000, 40_000_000);
    assert_eq!(t.real(Kpi::Ctr), Some(0.05));
    assert_eq!(t.real(Kpi::Cvr), Some(0.1));
    assert_eq!(t.int(Kpi::Cpc), Some(200_000));
    assert_eq!(t.int(Kpi::Cpa), Some(2_000_000));
    assert_eq!(t.real(Kpi::Roas), Some(4.0));
    assert_eq!(t.int(Kpi::Spend), Some(10_000_000));
    assert_eq!(t.number(Kpi::Clicks), Some(50.0));
}

#[test]
fn cpm_is_spend_per_thousand_impressions() {
    // 10 EUR for 1000 impressions: 10 EUR per mille.
    let t = totals(1000, 50, 5, 10_000_000, 0);
    assert_eq!(t.int(Kpi::Cpm), Some(10_000_000));
    // 2.5 EUR for 4000 impressions: 0.625 EUR per mille.
    assert_eq!(
        totals(4000, 0, 0, 2_500_000, 0).int(Kpi::Cpm),
        Some(625_000)
    );
    assert_eq!(totals(0, 0, 0, 2_500_000, 0).int(Kpi::Cpm), None);
    // Overflow is undefined, not a panic or a wrapped number.
    assert_eq!(totals(1, 0, 0, i64::MAX, 0).int(Kpi::Cpm), None);
    assert_eq!(Kpi::Cpm.sort_expression(), "s * 1000 / NULLIF(i, 0)");
    assert_eq!(Kpi::parse("cpm"), Some(Kpi::Cpm));
    let json = serde_json::to_value(t).unwrap();
    assert_eq!(json["cpm_micros"], 10_000_000);
}

#[test]
fn sort_expressions_are_fixed_sql() {
    assert_eq!(Kpi::Spend.sort_expression(), "s");
    assert_eq!(Kpi::Ctr.sort_expression(), "c::float8 / NULLIF(i, 0)");
    assert_eq!(Kpi::Cpc.sort_expression(), "s / NULLIF(c, 0)");
    assert_eq!(Kpi::Roas.sort_expression(), "r::float8 / NULLIF(s, 0)");
}

#[test]
fn totals_round_trip_and_derived_fields_are_recomputed() {
    let t = totals(1000, 50, 5, 10_000_000, 40_000_000);
    let mut json = serde_json::to_value(t).unwrap();
    assert_eq!(json["ctr"], 0.05);
    assert_eq!(json["cpc_micros"], 200_000);
    json["ctr"] = 0.9.into();
    let back: Totals = serde_json::from_value(json).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.real(Kpi::Ctr), Some(0.05));
}
