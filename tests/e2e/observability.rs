//! The cluster's dashboards and alert rules (k8s/base/observability) against what the
//! services export: every metric a Grafana dashboard or a Prometheus rule uses is on
//! some service's `/metrics`, as real processes serve it (one per service, as in the
//! cluster); every dashboard queries the provisioned datasource; the files Grafana is
//! given are exactly the dashboards in the repository.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use beacon_e2e::procs::{ProcStack, workspace_root};
use serde_json::Value;
use sqlx::PgPool;

fn observability() -> PathBuf {
    workspace_root().join("k8s/base/observability")
}

/// Series Prometheus makes itself (scrapes and alerts), not a service.
fn made_by_prometheus(name: &str) -> bool {
    matches!(name, "up" | "ALERTS" | "ALERTS_FOR_STATE") || name.starts_with("scrape_")
}

/// PromQL's keywords besides [`LABEL_LISTS`] (which are keywords too).
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// `text` without what `open`..`close` enclose (no nesting in PromQL's label matchers
/// and ranges), each replaced by one space.
fn without_enclosed(text: &str, open: char, close: char) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in text.chars() {
        if c == open {
            depth += 1;
        } else if c == close && depth > 0 {
            depth -= 1;
            if depth == 0 {
                out.push(' ');
            }
        } else if depth == 0 {
            out.push(c);
        }
    }
    out
}

/// `text` without string literals ("...", '...', `...`).
fn without_strings(text: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    out.push(' ');
                }
            }
            None if matches!(c, '"' | '\'' | '`') => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// Words that take a list of label names: `by (job, le)`, `ignoring (state)`, ...
const LABEL_LISTS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// A character of a PromQL identifier (metric names may contain `:`).
fn ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':')
}

/// The identifier of `chars` starting at `i`, and the index after it.
fn word_at(chars: &[char], mut i: usize) -> (String, usize) {
    let start = i;
    while i < chars.len() && ident(chars[i]) {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

/// `text` with the label list after each of [`LABEL_LISTS`] removed.
fn without_label_lists(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word_start = (c.is_ascii_alphabetic() || c == '_') && (i == 0 || !ident(chars[i - 1]));
        if !word_start {
            out.push(c);
            i += 1;
            continue;
        }
        let (word, next) = word_at(&chars, i);
        i = next;
        out.push_str(&word);
        if LABEL_LISTS.contains(&word.as_str()) {
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            if j < chars.len() && chars[j] == '(' {
                while j < chars.len() && chars[j] != ')' {
                    j += 1;
                }
                out.push(' ');
                i = j + 1;
            }
        }
    }
    out
}

/// The metric names a PromQL expression reads: identifiers that are not functions or
/// aggregations (followed by `(`), keywords, label names (inside `{}` or a label list),
/// numbers, durations and ranges (`[...]`), or Grafana variables (`$...`).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let text = without_strings(expr);
    let text = without_enclosed(&text, '{', '}');
    let text = without_enclosed(&text, '[', ']');
    let text = without_label_lists(&text);
    let chars: Vec<char> = text.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' || c.is_ascii_digit() || c == '.' {
            // A variable or a number (1e3, 0.95, 5m): skip the whole word.
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '.'))
            {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let (word, next) = word_at(&chars, i);
        i = next;
        let rest: String = chars[i..].iter().collect();
        let rest = rest.trim_start();
        // An aggregation with its grouping first: `sum by (job) (...)`.
        let grouped = ["by", "without"].iter().any(|kw| {
            rest.strip_prefix(kw)
                .is_some_and(|r| !r.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        });
        if rest.starts_with('(')
            || grouped
            || KEYWORDS
                .iter()
                .chain(&LABEL_LISTS)
                .any(|k| word.eq_ignore_ascii_case(k))
        {
            continue;
        }
        names.insert(word);
    }
    names
}

/// The label matchers of each `metric{...}` selector of a PromQL expression: (metric,
/// label names).
pub fn selectors(expr: &str) -> Vec<(String, Vec<String>)> {
    let text = without_strings(expr);
    let mut out = Vec::new();
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        let before: Vec<char> = rest[..open].trim_end().chars().collect();
        let mut start = before.len();
        while start > 0 && ident(before[start - 1]) {
            start -= 1;
        }
        let metric: String = before[start..].iter().collect();
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let labels = rest[open + 1..open + close]
            .split(',')
            .filter_map(|m| m.split(['=', '!', '~']).next())
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        if !metric.is_empty() {
            out.push((metric, labels));
        }
        rest = &rest[open + close + 1..];
    }
    out
}

/// The expressions of the rule files and the names they record.
fn rules() -> (Vec<String>, BTreeSet<String>) {
    let mut exprs = Vec::new();
    let mut recorded = BTreeSet::new();
    let dir = observability().join("prometheus/rules");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for group in doc["groups"].as_sequence().unwrap() {
            for rule in group["rules"].as_sequence().unwrap() {
                exprs.push(rule["expr"].as_str().unwrap().to_owned());
                if let Some(name) = rule["record"].as_str() {
                    recorded.insert(name.to_owned());
                }
            }
        }
    }
    (exprs, recorded)
}

/// Every dashboard, by file name.
fn dashboards() -> BTreeMap<String, Value> {
    let dir = observability().join("grafana/dashboards");
    std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), json)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The PromQL of a dashboard: its panels' targets and its query variables
/// (`label_values(metric, label)` reads `metric`; `query_result(expr)` reads `expr`).
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(dashboard)
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or("");
        if let Some(args) = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
        {
            if let Some((metric, _label)) = args.rsplit_once(',') {
                out.push(metric.trim().to_owned());
            }
        } else if let Some(expr) = q
            .strip_prefix("query_result(")
            .and_then(|r| r.strip_suffix(')'))
        {
            out.push(expr.to_owned());
        }
    }
    out
}

/// The provisioned datasource's uid (grafana/datasources.yaml).
fn datasource_uid() -> String {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(observability().join("grafana/datasources.yaml")).unwrap(),
    )
    .unwrap();
    let sources = doc["datasources"].as_sequence().unwrap();
    assert_eq!(sources.len(), 1, "one datasource");
    assert_eq!(sources[0]["type"].as_str(), Some("prometheus"));
    sources[0]["uid"].as_str().unwrap().to_owned()
}

/// What is wrong with `dashboards` given the provisioned datasource `uid`.
fn dashboard_problems(dashboards: &BTreeMap<String, Value>, uid: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut uids = BTreeSet::new();
    let ds_ok = |ds: &Value| ds["uid"] == uid && ds["type"] == "prometheus";
    for (file, d) in dashboards {
        match d["uid"].as_str() {
            Some(u) if !u.is_empty() && u.len() <= 40 => {
                if !uids.insert(u.to_owned()) {
                    out.push(format!("{file}: uid {u} used twice"));
                }
            }
            _ => out.push(format!("{file}: no uid (or longer than 40 characters)")),
        }
        if d["title"].as_str().is_none_or(str::is_empty) {
            out.push(format!("{file}: no title"));
        }
        for p in panels(d) {
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or("?");
            if !ds_ok(&p["datasource"]) {
                out.push(format!(
                    "{file}: panel {title}: datasource {}",
                    p["datasource"]
                ));
            }
            let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if targets.is_empty() {
                out.push(format!("{file}: panel {title}: no query"));
            }
            for t in targets {
                if !ds_ok(&t["datasource"]) {
                    out.push(format!(
                        "{file}: panel {title}: target datasource {}",
                        t["datasource"]
                    ));
                }
                if t["expr"].as_str().is_none_or(str::is_empty) {
                    out.push(format!("{file}: panel {title}: a target without expr"));
                }
            }
        }
        for v in d["templating"]["list"].as_array().into_iter().flatten() {
            if v["type"] == "query" && !ds_ok(&v["datasource"]) {
                out.push(format!(
                    "{file}: variable {}: datasource {}",
                    v["name"], v["datasource"]
                ));
            }
        }
    }
    out
}

#[test]
fn metric_names_are_read_from_promql() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (job, le) (rate(http_server_request_duration_seconds_bucket{job=~"$job",le="0.5"}[$__rate_interval])))"#
        ),
        ["http_server_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            r#"max by (job) (db_client_connections_usage{state="used"} / ignoring(state) db_client_connections_max) > 0.9"#
        ),
        ["db_client_connections_max", "db_client_connections_usage"]
    );
    assert_eq!(
        names(
            "analytics:rpc_slow:ratio_rate1h > (14.4 * 0.01) and analytics:rpc_slow:ratio_rate5m > bool 1e3"
        ),
        [
            "analytics:rpc_slow:ratio_rate1h",
            "analytics:rpc_slow:ratio_rate5m"
        ]
    );
    assert_eq!(
        selectors(
            r#"sum(rate(x_count{job=~"$job",status_class!="5xx"}[5m])) / y{le="0.5", state = "a,b"} + z"#
        ),
        [
            (
                "x_count".to_owned(),
                vec!["job".to_owned(), "status_class".to_owned()]
            ),
            ("y".to_owned(), vec!["le".to_owned(), "state".to_owned()])
        ]
    );
    assert_eq!(
        names("time() - max(transform_last_success_timestamp_seconds) offset 5m"),
        ["transform_last_success_timestamp_seconds"]
    );
    assert_eq!(
        names(
            r#"topk(10, sum without (instance) (rate(ingest_events_accepted_total{tenant=~"a|b"}[5m]))) or on (job) up"#
        ),
        ["ingest_events_accepted_total", "up"]
    );
}

#[test]
fn dashboards_use_the_provisioned_datasource_and_are_all_provisioned() {
    let uid = datasource_uid();
    let dashboards = dashboards();
    assert!(dashboards.len() >= 3, "{:?}", dashboards.keys());
    let problems = dashboard_problems(&dashboards, &uid);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // Each broken copy is reported.
    let broken = |what: &str, f: &dyn Fn(&mut BTreeMap<String, Value>)| {
        let mut copy = dashboards.clone();
        f(&mut copy);
        let p = dashboard_problems(&copy, &uid);
        assert!(p.iter().any(|x| x.contains(what)), "{what}: {p:?}");
    };
    let first = dashboards.keys().next().unwrap().clone();
    let first_panel = |d: &mut BTreeMap<String, Value>| -> Value {
        d[&first]["panels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] != "row")
            .unwrap()["id"]
            .clone()
    };
    let with_panel = |d: &mut BTreeMap<String, Value>, f: &dyn Fn(&mut Value)| {
        let id = first_panel(d);
        let panels = d.get_mut(&first).unwrap()["panels"].as_array_mut().unwrap();
        f(panels.iter_mut().find(|p| p["id"] == id).unwrap());
    };
    broken("datasource", &|d| {
        with_panel(d, &|p| p["datasource"]["uid"] = "elsewhere".into())
    });
    broken("used twice", &|d| {
        let copy = d[&first].clone();
        d.insert("copy.json".into(), copy);
    });
    broken("no query", &|d| {
        with_panel(d, &|p| p["targets"] = serde_json::json!([]))
    });

    // Grafana is given exactly these files (the kustomization's configMapGenerator).
    let kustomization: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(observability().join("kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let generated: BTreeSet<String> = kustomization["configMapGenerator"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|g| g["name"] == "grafana-dashboards")
        .flat_map(|g| g["files"].as_sequence().unwrap().iter())
        .filter_map(|f| f.as_str())
        .filter_map(|f| Path::new(f).file_name())
        .map(|f| f.to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        generated,
        dashboards.keys().cloned().collect::<BTreeSet<_>>(),
        "grafana-dashboards ConfigMap vs grafana/dashboards/*.json"
    );
}

/// The names of the samples in a Prometheus text exposition, each with the names of
/// the labels it is exported with.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or("").to_owned();
        let labels = out.entry(name).or_default();
        if let Some((_, rest)) = line.split_once('{') {
            let inside = without_strings(rest.split('}').next().unwrap_or(""));
            labels.extend(
                inside
                    .split(',')
                    .filter_map(|m| m.split('=').next())
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

#[sqlx::test(migrations = false)]
async fn every_metric_of_the_dashboards_and_rules_is_exported(admin: PgPool) {
    let (rule_exprs, recorded) = rules();
    // (expression, where it is used)
    let mut exprs: Vec<(String, String)> = rule_exprs
        .into_iter()
        .map(|e| (e, "rules".to_owned()))
        .collect();
    for (file, d) in dashboards() {
        exprs.extend(dashboard_exprs(&d).into_iter().map(|e| (e, file.clone())));
    }
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (e, origin) in &exprs {
        for n in metric_names(e) {
            used.entry(n).or_default().insert(origin.clone());
        }
    }
    assert!(used.len() > 20, "too few metric names found: {used:?}");
    let ours = |n: &str| !made_by_prometheus(n) && !recorded.contains(n);

    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let stack = ProcStack::start(admin, bin, &[]).await.expect("stack");
    // Some traffic, so that series created on first use exist too (the per-tenant
    // ingest counters): a tenant's events, a refused sign-in, an unauthenticated KPI
    // query and ingest, the dashboard's sign-in page. The transform runs on its own
    // (every 200 ms here).
    let client = &stack.client;
    let tenant = &xtask::seed::demo_tenants("a long enough password")[0];
    let token = stack.tenant(tenant).await.expect("tenant");
    let events =
        xtask::seed::generate_events(1, 20, 3, tenant.currency, time::OffsetDateTime::now_utc());
    xtask::seed::push(client, &stack.url("ingest"), &token, &events, 10)
        .await
        .expect("events accepted");
    let _ = client
        .post(format!("{}/v1/auth/token", stack.url("api")))
        .json(&serde_json::json!({"grant_type": "password", "username": "nobody@example.com", "password": "wrong"}))
        .send()
        .await;
    let _ = client
        .get(format!("{}/v1/overview", stack.url("api")))
        .send()
        .await;
    let _ = client
        .post(format!("{}/v1/events", stack.url("ingest")))
        .body("{}\n")
        .send()
        .await;
    let _ = client.get(stack.url("dashboard")).send().await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;

    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut silent = Vec::new();
    for (service, s) in &stack.services {
        let text = client
            .get(format!("http://127.0.0.1:{}/metrics", s.admin_port))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mine = exported(&text);
        if mine.is_empty() {
            silent.push(*service);
        }
        for (name, labels) in mine {
            names.entry(name).or_default().extend(labels);
        }
    }
    let mut problems: Vec<String> = used
        .iter()
        .filter(|(n, _)| ours(n) && !names.contains_key(*n))
        .map(|(n, by)| {
            format!(
                "{n} (used by {}) is exported by no service",
                by.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    // Every label a selector matches on is one the metric has (or one Prometheus adds:
    // job and instance, and namespace from the generated scrape jobs).
    for (e, origin) in &exprs {
        for (metric, labels) in selectors(e) {
            let Some(has) = names.get(&metric) else {
                continue;
            };
            for l in labels {
                if !has.contains(&l) && !["job", "instance", "namespace"].contains(&l.as_str()) {
                    problems.push(format!("{origin}: {metric} has no label {l}"));
                }
            }
        }
    }
    problems.extend(silent.iter().map(|s| format!("{s} exports nothing")));
    assert!(
        problems.is_empty(),
        "dashboards and rules against the services' /metrics:\n  {}\nexported: {:?}",
        problems.join("\n  "),
        names.keys().collect::<Vec<_>>()
    );
}
