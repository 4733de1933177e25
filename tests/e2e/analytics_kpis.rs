//! Analytics answers equal values computed here, independently, from the raw events
//! that went in through ingest.

use std::collections::{BTreeMap, HashSet};

use beacon_e2e::{Stack, expected_attribution, same_currency_tenants};
use domain::{Event, EventType, format_date as date};
use proto::analytics::v1::{
    AnomaliesRequest, DateRange, Granularity, Kpi, ListCampaignsRequest, RequestScope,
    TimeSeriesRequest, Totals,
};
use sqlx::PgPool;
use time::{Date, Duration, OffsetDateTime};

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sums {
    impressions: i64,
    clicks: i64,
    conversions: i64,
    spend: i64,
    revenue: i64,
}

impl Sums {
    fn add(&mut self, e: &Event) {
        match e.event_type {
            EventType::Impression => self.impressions += 1,
            EventType::Click => self.clicks += 1,
            EventType::Conversion => self.conversions += 1,
            EventType::Spend => {}
        }
        self.spend += e.cost_micros;
        self.revenue += e.revenue_micros;
    }

    fn of(t: &Option<Totals>) -> Self {
        let t = t.as_ref().expect("totals");
        Self {
            impressions: t.impressions,
            clicks: t.clicks,
            conversions: t.conversions,
            spend: t.spend_micros,
            revenue: t.revenue_micros,
        }
    }
}

fn group_by<K: Ord>(
    events: &[Event],
    from: Date,
    to: Date,
    key: impl Fn(&Event) -> K,
) -> BTreeMap<K, Sums> {
    let mut out = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| (from..=to).contains(&e.occurred_at.date()))
    {
        out.entry(key(e)).or_insert_with(Sums::default).add(e);
    }
    out
}

fn monday(d: Date) -> Date {
    d - Duration::days(i64::from(d.weekday().number_days_from_monday()))
}

/// The anomaly rule, written again from its definition: a day whose value lies more
/// than `threshold` sample standard deviations from the mean of the previous `n` days.
fn expected_anomalies(
    daily: &BTreeMap<Date, i64>,
    from: Date,
    to: Date,
    n: i64,
    threshold: f64,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut day = from;
    while day <= to {
        let base: Vec<f64> = (1..=n)
            .map(|k| *daily.get(&(day - Duration::days(k))).unwrap_or(&0) as f64)
            .collect();
        let mean = base.iter().sum::<f64>() / n as f64;
        let sd = (base.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        let value = *daily.get(&day).unwrap_or(&0) as f64;
        if sd > 0.0 && ((value - mean) / sd).abs() > threshold {
            out.push(date(day));
        }
        day = day.next_day().unwrap();
    }
    out
}

#[sqlx::test(migrations = false)]
async fn kpis_equal_values_computed_from_the_raw_events(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    // One currency and the same campaign and channel names for both tenants: only
    // tenancy keeps B's rows out of A's numbers.
    let tenants = same_currency_tenants("kpi-password");
    let now = OffsetDateTime::now_utc();
    let seeded = stack.seed(&tenants, &[2_500, 1_200], now).await.unwrap();

    // A spike: 400 extra clicks on one day, ten days ago, for tenant A.
    let spike_day = now.date() - Duration::days(10);
    let spike: Vec<Event> = (0..400)
        .map(|i| Event {
            event_id: format!("spike-{i}"),
            event_type: EventType::Click,
            occurred_at: spike_day.with_hms(12, 0, 0).unwrap().assume_utc(),
            cost_micros: 100_000,
            ..seeded[0].0[0].clone()
        })
        .collect();
    xtask::seed::push(&stack.client, &stack.ingest_url, &seeded[0].1, &spike, 400)
        .await
        .unwrap();
    // Multi-touch paths, so last-click and linear credit differ per campaign: users who
    // click two or three campaigns, then convert (the generated data rarely has any).
    let path_day = now.date() - Duration::days(5);
    let paths: Vec<Vec<Event>> = seeded
        .iter()
        .enumerate()
        .map(|(t, (events, _))| {
            let at = |h: u8| path_day.with_hms(h, 0, 0).unwrap().assume_utc();
            let mut out = Vec::new();
            for k in 0..(6 + 3 * t) {
                let user = Some(format!("path-{k}"));
                let touches = ["Brand Search", "Retargeting", "Newsletter Promo"];
                for (n, campaign) in touches.iter().take(2 + k % 2).enumerate() {
                    out.push(Event {
                        event_id: format!("path-{k}-click-{n}"),
                        event_type: EventType::Click,
                        occurred_at: at(8 + n as u8),
                        campaign: (*campaign).to_owned(),
                        user_key: user.clone(),
                        cost_micros: 200_000,
                        revenue_micros: 0,
                        ..events[0].clone()
                    });
                }
                out.push(Event {
                    event_id: format!("path-{k}-conversion"),
                    event_type: EventType::Conversion,
                    occurred_at: at(12),
                    campaign: "Newsletter Promo".to_owned(),
                    user_key: user,
                    cost_micros: 0,
                    revenue_micros: 30_000_000 + k as i64,
                    ..events[0].clone()
                });
            }
            out
        })
        .collect();
    for ((_, token), path) in seeded.iter().zip(&paths) {
        xtask::seed::push(&stack.client, &stack.ingest_url, token, path, 400)
            .await
            .unwrap();
    }
    stack.transform().await;

    let mut client = stack.analytics_client("api");
    let (from, to) = (now.date() - Duration::days(34), now.date());
    let range = Some(DateRange {
        from: date(from),
        to: date(to),
    });
    for (index, (tenant, (events, _))) in tenants.iter().zip(&seeded).enumerate() {
        let mut events = events.clone();
        if index == 0 {
            events.extend(spike.iter().cloned());
        }
        events.extend(paths[index].iter().cloned());
        let tenant_id = tenant.id.to_string();
        let currency = tenant.currency.to_owned();
        let scope = RequestScope {
            tenant_id: tenant_id.clone(),
            range: range.clone(),
            currency: currency.clone(),
        };

        // Overview: the range's totals and the previous period's, whatever it is.
        let overview = client
            .get_overview(scope.clone())
            .await
            .unwrap()
            .into_inner();
        let total = |from: Date, to: Date| {
            group_by(&events, from, to, |_| ())
                .remove(&())
                .unwrap_or_default()
        };
        assert_eq!(
            Sums::of(&overview.current),
            total(from, to),
            "{} overview",
            tenant.name
        );
        let previous = overview.previous_range.as_ref().expect("previous range");
        let parse =
            |d: &str| Date::parse(d, &time::format_description::well_known::Iso8601::DATE).unwrap();
        assert_eq!(parse(&previous.to), from.previous_day().unwrap());
        assert_eq!(
            Sums::of(&overview.previous),
            total(parse(&previous.from), parse(&previous.to)),
            "{} previous period",
            tenant.name
        );

        // Attribution per campaign, both models, equals the independent computation.
        let mut want_attribution: BTreeMap<String, [i64; 4]> = BTreeMap::new();
        for ((day, campaign, _, cur, model), (conv, rev)) in expected_attribution(&events, 50) {
            if (from..=to).contains(&day) && cur == currency {
                let a = want_attribution.entry(campaign).or_default();
                let i = if model == "last_click" { 0 } else { 2 };
                a[i] += conv;
                a[i + 1] += rev;
            }
        }
        let got_attribution: BTreeMap<String, [i64; 4]> = client
            .get_attribution(scope.clone())
            .await
            .unwrap()
            .into_inner()
            .campaigns
            .into_iter()
            .map(|c| {
                (
                    c.campaign,
                    [
                        c.last_click_conversions_micros,
                        c.last_click_revenue_micros,
                        c.linear_conversions_micros,
                        c.linear_revenue_micros,
                    ],
                )
            })
            .collect();
        assert!(!want_attribution.is_empty());
        assert_eq!(
            got_attribution, want_attribution,
            "{} attribution",
            tenant.name
        );

        // Campaigns: every page, sorted by spend, equals the per-campaign sums.
        let want = group_by(&events, from, to, |e| e.campaign.clone());
        let mut got = BTreeMap::new();
        let mut order = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_campaigns(ListCampaignsRequest {
                    scope: Some(scope.clone()),
                    sort_by: Kpi::Spend as i32,
                    ascending: false,
                    page_size: 3,
                    page_token: token.clone(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(page.total_campaigns as usize, want.len());
            assert!(page.campaigns.len() <= 3);
            for c in page.campaigns {
                order.push(Sums::of(&c.totals).spend);
                got.insert(c.campaign, Sums::of(&c.totals));
            }
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(got, want, "{} campaigns", tenant.name);
        assert!(
            order.windows(2).all(|w| w[0] >= w[1]),
            "sorted by spend, descending: {order:?}"
        );

        // Sorting by a ratio: CTR ascending.
        let by_ctr = client
            .list_campaigns(ListCampaignsRequest {
                scope: Some(scope.clone()),
                sort_by: Kpi::Ctr as i32,
                ascending: true,
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let ctrs: Vec<f64> = by_ctr
            .campaigns
            .iter()
            .map(|c| c.totals.as_ref().unwrap().ctr.unwrap())
            .collect();
        assert!(ctrs.windows(2).all(|w| w[0] <= w[1]), "{ctrs:?}");
        for c in &by_ctr.campaigns {
            let s = want[&c.campaign];
            assert_eq!(
                c.totals.as_ref().unwrap().ctr,
                Some(s.clicks as f64 / s.impressions as f64)
            );
            assert_eq!(
                c.totals.as_ref().unwrap().cpa_micros,
                (s.conversions != 0).then(|| s.spend / s.conversions)
            );
        }

        // CPM, added to the KPI catalogue: PostgreSQL sorts by the catalogue's
        // expression, and the value equals spend per thousand impressions of the events.
        let by_cpm = client
            .list_campaigns(ListCampaignsRequest {
                scope: Some(scope.clone()),
                sort_by: Kpi::Cpm as i32,
                ascending: true,
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let cpms: Vec<Option<i64>> = by_cpm
            .campaigns
            .iter()
            .map(|c| {
                let s = want[&c.campaign];
                (s.impressions != 0).then(|| s.spend * 1000 / s.impressions)
            })
            .collect();
        let defined: Vec<i64> = cpms.iter().flatten().copied().collect();
        assert!(defined.len() >= 2, "{cpms:?}");
        assert!(defined.windows(2).all(|w| w[0] <= w[1]), "{cpms:?}");
        for c in &by_cpm.campaigns {
            let t = domain::Totals::from(c.totals.unwrap());
            let s = want[&c.campaign];
            assert_eq!(
                t.int(domain::Kpi::Cpm),
                (s.impressions != 0).then(|| s.spend * 1000 / s.impressions)
            );
        }

        // Daily and weekly series: one point per period, zero-filled.
        let daily = group_by(&events, from, to, |e| e.occurred_at.date());
        let weekly = group_by(&events, from, to, |e| monday(e.occurred_at.date()));
        for (granularity, want) in [(Granularity::Day, &daily), (Granularity::Week, &weekly)] {
            let points = client
                .get_time_series(TimeSeriesRequest {
                    scope: Some(scope.clone()),
                    granularity: granularity as i32,
                    campaign: None,
                })
                .await
                .unwrap()
                .into_inner()
                .points;
            let expected_len = match granularity {
                Granularity::Week => ((monday(to) - monday(from)).whole_days() / 7 + 1) as usize,
                _ => ((to - from).whole_days() + 1) as usize,
            };
            assert_eq!(points.len(), expected_len, "{granularity:?}");
            for p in points {
                let day = Date::parse(
                    &p.period_start,
                    &time::format_description::well_known::Iso8601::DATE,
                )
                .unwrap();
                assert_eq!(
                    Sums::of(&p.totals),
                    want.get(&day).copied().unwrap_or_default(),
                    "{granularity:?} {day}"
                );
            }
        }

        // One campaign's series.
        let campaign = want.keys().next().unwrap().clone();
        let one = group_by(&events, from, to, |e| {
            (e.campaign.clone(), e.occurred_at.date())
        });
        let points = client
            .get_time_series(TimeSeriesRequest {
                scope: Some(scope.clone()),
                granularity: Granularity::Day as i32,
                campaign: Some(campaign.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .points;
        let total: Sums =
            points
                .iter()
                .map(|p| Sums::of(&p.totals))
                .fold(Sums::default(), |mut a, b| {
                    a.impressions += b.impressions;
                    a.clicks += b.clicks;
                    a.conversions += b.conversions;
                    a.spend += b.spend;
                    a.revenue += b.revenue;
                    a
                });
        let want_one = one.iter().filter(|((c, _), _)| *c == campaign).fold(
            Sums::default(),
            |mut a, (_, b)| {
                a.impressions += b.impressions;
                a.clicks += b.clicks;
                a.conversions += b.conversions;
                a.spend += b.spend;
                a.revenue += b.revenue;
                a
            },
        );
        assert_eq!(total, want_one);

        // Channels.
        let channels = client
            .get_channels(scope.clone())
            .await
            .unwrap()
            .into_inner()
            .channels;
        let got: BTreeMap<String, Sums> = channels
            .into_iter()
            .map(|c| (c.channel, Sums::of(&c.totals)))
            .collect();
        assert_eq!(got, group_by(&events, from, to, |e| e.channel.clone()));

        // Anomalies on clicks: exactly the days the rule picks, computed here.
        let anomaly_from = now.date() - Duration::days(20);
        let all_daily: BTreeMap<Date, i64> =
            group_by(&events, from - Duration::days(30), to, |e| {
                e.occurred_at.date()
            })
            .into_iter()
            .map(|(d, s)| (d, s.clicks))
            .collect();
        let found = client
            .get_anomalies(AnomaliesRequest {
                scope: Some(RequestScope {
                    tenant_id: tenant_id.clone(),
                    range: Some(DateRange {
                        from: date(anomaly_from),
                        to: date(to),
                    }),
                    currency: currency.clone(),
                }),
                kpi: Kpi::Clicks as i32,
                baseline_days: 14,
                threshold: Some(3.0),
            })
            .await
            .unwrap()
            .into_inner()
            .anomalies;
        let days: Vec<String> = found.iter().map(|a| a.day.clone()).collect();
        assert_eq!(
            days,
            expected_anomalies(&all_daily, anomaly_from, to, 14, 3.0),
            "{}",
            tenant.name
        );
        if index == 0 {
            assert!(
                days.contains(&date(spike_day)),
                "the injected spike is found: {days:?}"
            );
        }
    }

    // Bad requests are refused with InvalidArgument, and leak nothing.
    let bad = client
        .list_campaigns(ListCampaignsRequest {
            scope: Some(RequestScope {
                tenant_id: tenants[0].id.to_string(),
                range: Some(DateRange {
                    from: "2020-01-01".into(),
                    to: "2026-01-01".into(),
                }),
                currency: "EUR".into(),
            }),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    let unknown: HashSet<_> = ["select", "sql", "postgres", "relation"]
        .into_iter()
        .collect();
    assert!(
        !unknown
            .iter()
            .any(|w| bad.message().to_lowercase().contains(w)),
        "{}",
        bad.message()
    );
}
