//! Production scheduling: HPAs own the replica counts, replicas spread across nodes and
//! zones, and every PodDisruptionBudget protects pods that exist without blocking drains.

use serde_json::Value;

use crate::render::{arr, kind, name, namespace};

/// The HPA that scales `Deployment ns/name`, if any.
fn hpa_for<'a>(docs: &'a [Value], ns: &str, deployment: &str) -> Option<&'a Value> {
    docs.iter().find(|h| {
        kind(h) == "HorizontalPodAutoscaler"
            && namespace(h) == ns
            && h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
            && h["spec"]["scaleTargetRef"]["name"] == deployment
    })
}

/// `labels` satisfies a `matchLabels` selector (`matchExpressions` are not used here and
/// count as a mismatch, so a selector this check cannot read is reported, not trusted).
fn selects(selector: &Value, labels: &Value) -> bool {
    let Some(want) = selector["matchLabels"].as_object() else {
        return false;
    };
    !want.is_empty()
        && selector.get("matchExpressions").is_none()
        && want.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The replicas a workload always has: its HPA's minReplicas, else `spec.replicas`
/// (default 1).
fn min_replicas(docs: &[Value], workload: &Value) -> u64 {
    hpa_for(docs, namespace(workload), name(workload))
        .and_then(|h| h["spec"]["minReplicas"].as_u64())
        .unwrap_or_else(|| workload["spec"]["replicas"].as_u64().unwrap_or(1))
}

/// An int-or-percent PDB field against `n` pods, rounded up as the disruption
/// controller does.
fn count(v: &Value, n: u64) -> Option<u64> {
    match v {
        Value::Number(x) => x.as_u64(),
        Value::String(s) => {
            let pct: u64 = s.strip_suffix('%')?.parse().ok()?;
            Some((pct * n).div_ceil(100))
        }
        _ => None,
    }
}

/// Every PDB selects the pods of exactly one workload in its namespace, and leaves at
/// least one of that workload's minimum replicas evictable (`minAvailable` below the
/// minimum, or `maxUnavailable` at least 1): a PDB that selects nothing protects
/// nothing, and one that allows no eviction blocks every node drain.
pub fn pdb_problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let workloads: Vec<&Value> = docs
        .iter()
        .filter(|d| matches!(kind(d), "Deployment" | "StatefulSet"))
        .collect();
    for pdb in docs.iter().filter(|d| kind(d) == "PodDisruptionBudget") {
        let id = format!("PodDisruptionBudget {}/{}", namespace(pdb), name(pdb));
        let spec = &pdb["spec"];
        let selected: Vec<&&Value> = workloads
            .iter()
            .filter(|w| {
                namespace(w) == namespace(pdb)
                    && selects(
                        &spec["selector"],
                        &w["spec"]["template"]["metadata"]["labels"],
                    )
            })
            .collect();
        let [workload] = selected[..] else {
            out.push(format!(
                "{id}: selects the pods of {} workloads, expected exactly one",
                selected.len()
            ));
            continue;
        };
        let min = min_replicas(docs, workload);
        let owner = format!("{} {}", kind(workload), name(workload));
        match (spec.get("minAvailable"), spec.get("maxUnavailable")) {
            (Some(v), None) => match count(v, min) {
                Some(n) if n < min => {}
                Some(n) => out.push(format!(
                    "{id}: minAvailable {v} = {n} is not below {owner}'s {min} minimum replicas (no pod could ever be evicted)"
                )),
                None => out.push(format!("{id}: minAvailable {v} unreadable")),
            },
            (None, Some(v)) => match count(v, min) {
                Some(n) if n >= 1 => {}
                _ => out.push(format!(
                    "{id}: maxUnavailable {v} allows no eviction of {owner}"
                )),
            },
            _ => out.push(format!(
                "{id}: needs exactly one of minAvailable and maxUnavailable"
            )),
        }
    }
    out
}

/// Workloads an HPA scales must not set `spec.replicas` (every apply would reset the
/// HPA's count), must have a PDB, and must spread their replicas across nodes (hard) and
/// zones (soft), with a selector that matches their own pods.
pub fn hpa_workload_problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for hpa in docs.iter().filter(|d| kind(d) == "HorizontalPodAutoscaler") {
        let ns = namespace(hpa);
        let target = hpa["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or("");
        let id = format!("Deployment {ns}/{target}");
        let Some(d) = docs
            .iter()
            .find(|d| kind(d) == "Deployment" && namespace(d) == ns && name(d) == target)
        else {
            out.push(format!(
                "HorizontalPodAutoscaler {ns}/{}: scales {target}, which is not rendered",
                name(hpa)
            ));
            continue;
        };
        if d["spec"].get("replicas").is_some() {
            out.push(format!(
                "{id}: sets replicas although HorizontalPodAutoscaler {} manages them",
                name(hpa)
            ));
        }
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        if !docs.iter().any(|p| {
            kind(p) == "PodDisruptionBudget"
                && namespace(p) == ns
                && selects(&p["spec"]["selector"], labels)
        }) {
            out.push(format!("{id}: no PodDisruptionBudget"));
        }
        let spread = arr(&d["spec"]["template"]["spec"]["topologySpreadConstraints"]);
        for (key, when) in [
            ("kubernetes.io/hostname", "DoNotSchedule"),
            ("topology.kubernetes.io/zone", "ScheduleAnyway"),
        ] {
            let ok = spread.iter().any(|c| {
                c["topologyKey"] == key
                    && c["whenUnsatisfiable"] == when
                    && c["maxSkew"] == 1
                    && selects(&c["labelSelector"], labels)
            });
            if !ok {
                out.push(format!(
                    "{id}: no topologySpreadConstraint over {key} (maxSkew 1, {when}, selecting its own pods)"
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod checks {
    use serde_json::{Value, json};

    use super::{hpa_workload_problems, pdb_problems};
    use crate::{assert_none, find_mut, overlays, render};

    /// `f` breaks a copy of the prod manifests; `check` must then report `what`.
    fn broken(check: fn(&[Value]) -> Vec<String>, what: &str, f: &dyn Fn(&mut Vec<Value>)) {
        let mut docs = render::prod();
        f(&mut docs);
        let p = check(&docs);
        assert!(p.iter().any(|x| x.contains(what)), "{what}: {p:?}");
    }

    fn pdb<'a>(docs: &'a mut [Value], ns: &str, n: &str) -> &'a mut Value {
        &mut find_mut(docs, "PodDisruptionBudget", ns, n)["spec"]
    }

    #[test]
    fn pod_disruption_budgets_protect_pods_that_exist_and_allow_drains() {
        for (overlay, docs) in overlays() {
            assert_none("PodDisruptionBudgets", overlay, pdb_problems(&docs));
        }
        // minAvailable at the HPA's minimum (2): no api pod could ever be evicted.
        for min in [json!(2), json!("100%"), json!("51%")] {
            broken(pdb_problems, "is not below Deployment api's 2", &|d| {
                let spec = pdb(d, "beacon-api", "api");
                spec.as_object_mut().unwrap().remove("maxUnavailable");
                spec["minAvailable"] = min.clone();
            });
        }
        // Below the minimum is fine: one of two may go.
        let mut docs = render::prod();
        let spec = pdb(&mut docs, "beacon-api", "api");
        spec.as_object_mut().unwrap().remove("maxUnavailable");
        spec["minAvailable"] = json!(1);
        assert_none("PodDisruptionBudgets", "prod", pdb_problems(&docs));

        broken(pdb_problems, "allows no eviction", &|d| {
            pdb(d, "beacon-pipeline", "transform")["maxUnavailable"] = json!(0)
        });
        broken(pdb_problems, "selects the pods of 0 workloads", &|d| {
            pdb(d, "beacon-analytics", "analytics")["selector"]["matchLabels"] =
                json!({"app.kubernetes.io/name": "analytic"})
        });
        broken(pdb_problems, "selects the pods of 0 workloads", &|d| {
            pdb(d, "beacon-dashboard", "dashboard")["selector"] = json!({})
        });
        broken(pdb_problems, "exactly one of", &|d| {
            pdb(d, "beacon-api", "api")["minAvailable"] = json!(1)
        });
    }

    #[test]
    fn prod_hpas_own_the_replicas_and_spread_them_across_nodes_and_zones() {
        assert_none(
            "HPA-managed workloads",
            "prod",
            hpa_workload_problems(&render::prod()),
        );
        fn deployment<'a>(docs: &'a mut [Value], ns: &str, n: &str) -> &'a mut Value {
            find_mut(docs, "Deployment", ns, n)
        }
        broken(hpa_workload_problems, "sets replicas", &|d| {
            deployment(d, "beacon-api", "api")["spec"]["replicas"] = json!(2)
        });
        broken(
            hpa_workload_problems,
            "over topology.kubernetes.io/zone",
            &|d| {
                let spread = &mut deployment(d, "beacon-pipeline", "transform")["spec"]["template"]
                    ["spec"]["topologySpreadConstraints"];
                spread
                    .as_array_mut()
                    .unwrap()
                    .retain(|c| c["topologyKey"] != "topology.kubernetes.io/zone");
            },
        );
        broken(hpa_workload_problems, "over kubernetes.io/hostname", &|d| {
            let spread = &mut deployment(d, "beacon-dashboard", "dashboard")["spec"]["template"]["spec"]
                ["topologySpreadConstraints"];
            for c in spread.as_array_mut().unwrap() {
                c["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] = json!("api");
            }
        });
        broken(hpa_workload_problems, "no PodDisruptionBudget", &|d| {
            d.retain(|x| {
                !(render::kind(x) == "PodDisruptionBudget" && render::name(x) == "pipeline")
            })
        });
    }
}
