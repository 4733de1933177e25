//! The observability namespace's promises, on the rendered overlays: Grafana admits no
//! anonymous user and reads its admin password from a mounted Secret; Prometheus exposes
//! no admin, lifecycle or write endpoint, bounds its storage by time and size on a sized
//! volume, and finds its targets by DNS (no API token); Jaeger's store is bounded; the
//! collector no longer sends metrics nowhere.

use platform::access::AccessModel;
use serde_json::{Value, json};

use crate::render::{self, arr, containers, kind, name, namespace, templates};
use crate::{assert_none, find_mut};

const NS: &str = "beacon-observability";

fn env<'a>(c: &'a Value, var: &str) -> Option<&'a str> {
    arr(&c["env"])
        .iter()
        .find(|e| e["name"] == var)
        .and_then(|e| e["value"].as_str())
}

fn container<'a>(docs: &'a [Value], owner: &str) -> Option<(&'a Value, &'a Value)> {
    templates(docs)
        .into_iter()
        .find(|t| t.namespace == NS && t.owner == owner)
        .and_then(|t| containers(t.spec).first().map(|c| (t.spec, *c)))
}

/// The path where `c` mounts the volume of `spec` that holds Secret `secret`.
fn secret_mount(spec: &Value, c: &Value, secret: &str) -> Option<String> {
    let volume = arr(&spec["volumes"])
        .iter()
        .find(|v| v["secret"]["secretName"] == secret)?["name"]
        .as_str()?;
    arr(&c["volumeMounts"])
        .iter()
        .find(|m| m["name"] == volume)?["mountPath"]
        .as_str()
        .map(str::to_owned)
}

fn config_text(docs: &[Value], prefix: &str, key: &str) -> Option<String> {
    docs.iter()
        .find(|d| kind(d) == "ConfigMap" && namespace(d) == NS && name(d).starts_with(prefix))
        .and_then(|d| d["data"][key].as_str().map(str::to_owned))
}

pub fn problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let mut fail = |ok: bool, what: &str| {
        if !ok {
            out.push(what.to_owned());
        }
    };

    // Grafana.
    match container(docs, "Deployment/grafana") {
        None => fail(false, "no Grafana Deployment"),
        Some((spec, c)) => {
            fail(
                env(c, "GF_AUTH_ANONYMOUS_ENABLED") == Some("false"),
                "Grafana: anonymous access not disabled",
            );
            fail(
                env(c, "GF_USERS_ALLOW_SIGN_UP") == Some("false"),
                "Grafana: sign-up not disabled",
            );
            fail(
                !arr(&c["env"]).iter().any(|e| {
                    e["name"] == "GF_SECURITY_ADMIN_PASSWORD" || !e["valueFrom"].is_null()
                }) && c["envFrom"].is_null(),
                "Grafana: the admin password in a variable",
            );
            let mount = secret_mount(spec, c, "grafana-admin");
            fail(
                mount.as_ref().is_some_and(|m| {
                    env(c, "GF_SECURITY_ADMIN_PASSWORD__FILE")
                        .is_some_and(|f| f.starts_with(&format!("{m}/")))
                }),
                "Grafana: the admin password is not read from the grafana-admin Secret's file",
            );
            let datasources = config_text(docs, "grafana-provisioning", "datasources.yaml");
            fail(
                datasources.is_some_and(|d| {
                    d.contains("uid: prometheus")
                        && d.contains("url: http://prometheus.beacon-observability.svc:9090")
                }),
                "Grafana: the Prometheus datasource is not provisioned",
            );
        }
    }

    // Prometheus.
    match container(docs, "StatefulSet/prometheus") {
        None => fail(false, "no Prometheus StatefulSet"),
        Some((spec, c)) => {
            let args: Vec<&str> = arr(&c["args"]).iter().filter_map(Value::as_str).collect();
            for flag in [
                "--web.enable-admin-api",
                "--web.enable-lifecycle",
                "--web.enable-remote-write-receiver",
                "--web.enable-otlp-receiver",
            ] {
                fail(
                    !args.iter().any(|a| a.starts_with(flag)),
                    &format!("Prometheus: {flag}"),
                );
            }
            for flag in [
                "--storage.tsdb.retention.time=",
                "--storage.tsdb.retention.size=",
            ] {
                fail(
                    args.iter().any(|a| a.starts_with(flag)),
                    &format!("Prometheus: no {flag}"),
                );
            }
            fail(
                spec["automountServiceAccountToken"] == false,
                "Prometheus: a Kubernetes API token is mounted",
            );
            let sts = docs
                .iter()
                .find(|d| kind(d) == "StatefulSet" && name(d) == "prometheus")
                .expect("found above");
            fail(
                arr(&sts["spec"]["volumeClaimTemplates"])
                    .iter()
                    .any(|v| !v["spec"]["resources"]["requests"]["storage"].is_null()),
                "Prometheus: no sized volume",
            );
            let config = config_text(docs, "prometheus-config", "prometheus.yml");
            fail(
                config.as_ref().is_some_and(|t| {
                    t.contains("sample_limit:") && !t.contains("kubernetes_sd_configs")
                }),
                "Prometheus: no sample_limit, or Kubernetes API discovery",
            );
            let scrape = config_text(docs, "prometheus-scrape", "prometheus-scrape.yml");
            fail(
                scrape.is_some_and(|t| {
                    t.contains("dns_sd_configs") && !t.contains("kubernetes_sd_configs")
                }),
                "Prometheus: the generated jobs do not discover by DNS",
            );
        }
    }

    // Jaeger and the collector.
    fail(
        config_text(docs, "jaeger", "config.yaml").is_some_and(|t| t.contains("max_traces:")),
        "Jaeger: the trace store is not bounded",
    );
    fail(
        config_text(docs, "otel-collector", "config.yaml").is_some_and(|t| !t.contains("debug")),
        "the collector still exports to `debug`",
    );
    out
}

/// Every scrape job reaches what it names: its DNS name is a headless Service (not-ready
/// pods published) with the job's port, selecting a workload whose container listens
/// there; and every flow `prometheus -> <component>:admin` of the model has its job.
/// Checked on the rendered manifests, independently of the generator.
pub fn scrape_problems(docs: &[Value], model: &AccessModel) -> Vec<String> {
    let mut out = Vec::new();
    let mut jobs: Vec<String> = Vec::new();
    for cm in docs.iter().filter(|d| {
        kind(d) == "ConfigMap" && namespace(d) == NS && name(d).starts_with("prometheus-scrape")
    }) {
        for text in cm["data"].as_object().into_iter().flat_map(|m| m.values()) {
            let parsed: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(text.as_str().unwrap_or("")).unwrap_or_default();
            for job in parsed["scrape_configs"].as_sequence().into_iter().flatten() {
                let job_name = job["job_name"].as_str().unwrap_or("?").to_owned();
                for sd in job["dns_sd_configs"].as_sequence().into_iter().flatten() {
                    let port = sd["port"].as_u64().unwrap_or(0);
                    for dns in sd["names"].as_sequence().into_iter().flatten() {
                        let dns = dns.as_str().unwrap_or("");
                        let mut parts = dns.split('.');
                        let (svc, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                        let service = docs
                            .iter()
                            .find(|d| kind(d) == "Service" && name(d) == svc && namespace(d) == ns);
                        let Some(service) = service else {
                            out.push(format!("job {job_name}: no Service {svc} in {ns}"));
                            continue;
                        };
                        let spec = &service["spec"];
                        if spec["clusterIP"] != "None" || spec["publishNotReadyAddresses"] != true {
                            out.push(format!(
                                "job {job_name}: {ns}/{svc} is not headless with not-ready pods published"
                            ));
                        }
                        if !arr(&spec["ports"]).iter().any(|p| p["port"] == port) {
                            out.push(format!("job {job_name}: {ns}/{svc} has no port {port}"));
                        }
                        // Workloads of the model: a pod template selected by the Service
                        // listens on the port (not prod's PostgreSQL instances: the
                        // operator makes those pods, selected by its own labels).
                        let selector = spec["selector"].as_object().cloned().unwrap_or_default();
                        let operators = selector.keys().all(|k| k.starts_with("cnpg.io/"));
                        if model.components.contains_key(&job_name) && !operators {
                            let listens = templates(docs).iter().any(|t| {
                                t.namespace == ns
                                    && !selector.is_empty()
                                    && selector.iter().all(|(k, v)| &t.labels[k] == v)
                                    && containers(t.spec).iter().any(|c| {
                                        arr(&c["ports"]).iter().any(|p| p["containerPort"] == port)
                                    })
                            });
                            if !listens {
                                out.push(format!(
                                    "job {job_name}: no pod selected by {ns}/{svc} listens on {port}"
                                ));
                            }
                        }
                    }
                }
                jobs.push(job_name);
            }
        }
    }
    for f in model
        .flows
        .iter()
        .filter(|f| f.from == "prometheus" && f.port == "admin")
    {
        if !jobs.contains(&f.to) {
            out.push(format!(
                "no scrape job for the flow prometheus -> {}:admin",
                f.to
            ));
        }
    }
    out
}

#[test]
fn every_scrape_job_reaches_a_listening_pod_through_a_headless_service() {
    let model = AccessModel::load();
    for (overlay, docs) in [("dev", render::dev()), ("prod", render::prod())] {
        assert_none("scrape jobs", overlay, scrape_problems(&docs, &model));
    }
    let docs = render::dev();
    let broken = |what: &str, f: &dyn Fn(&mut Vec<Value>)| {
        let mut docs = docs.clone();
        f(&mut docs);
        let p = scrape_problems(&docs, &model);
        assert!(p.iter().any(|x| x.contains(what)), "{what}: {p:?}");
    };
    broken("not headless", &|d| {
        find_mut(d, "Service", "beacon-api", "api-admin")["spec"]["publishNotReadyAddresses"] =
            json!(false)
    });
    broken("no Service api-admin", &|d| {
        d.retain(|x| !(kind(x) == "Service" && name(x) == "api-admin"))
    });
    broken("listens on 9084", &|d| {
        find_mut(d, "Service", "beacon-pipeline", "transform-admin")["spec"]["selector"] =
            json!({"app.kubernetes.io/name": "pipeline"})
    });
    broken("prometheus -> loader:admin", &|d| {
        let cm = d
            .iter_mut()
            .find(|x| kind(x) == "ConfigMap" && name(x).starts_with("prometheus-scrape"))
            .unwrap();
        let text = cm["data"]["prometheus-scrape.yml"]
            .as_str()
            .unwrap()
            .replace("job_name: loader", "job_name: other");
        cm["data"]["prometheus-scrape.yml"] = json!(text);
    });
}

#[test]
fn observability_is_closed_bounded_and_needs_no_api_token() {
    for (overlay, docs) in [("dev", render::dev()), ("prod", render::prod())] {
        assert_none("observability", overlay, problems(&docs));
    }
    let docs = render::dev();
    let broken = |what: &str, f: &dyn Fn(&mut Vec<Value>)| {
        let mut docs = docs.clone();
        f(&mut docs);
        let p = problems(&docs);
        assert!(p.iter().any(|x| x.contains(what)), "{what}: {p:?}");
    };
    fn grafana(d: &mut [Value]) -> &mut Value {
        &mut find_mut(d, "Deployment", NS, "grafana")["spec"]["template"]["spec"]["containers"][0]
    }
    fn prometheus(d: &mut [Value]) -> &mut Value {
        &mut find_mut(d, "StatefulSet", NS, "prometheus")["spec"]["template"]["spec"]
    }
    broken("anonymous", &|d| {
        let env = grafana(d)["env"].as_array_mut().unwrap();
        env.retain(|e| e["name"] != "GF_AUTH_ANONYMOUS_ENABLED");
        env.push(json!({"name": "GF_AUTH_ANONYMOUS_ENABLED", "value": "true"}));
    });
    broken("in a variable", &|d| {
        grafana(d)["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "GF_SECURITY_ADMIN_PASSWORD", "value": "admin"}));
    });
    broken("Secret's file", &|d| {
        grafana(d)["env"]
            .as_array_mut()
            .unwrap()
            .retain(|e| e["name"] != "GF_SECURITY_ADMIN_PASSWORD__FILE");
    });
    broken("--web.enable-admin-api", &|d| {
        prometheus(d)["containers"][0]["args"]
            .as_array_mut()
            .unwrap()
            .push(json!("--web.enable-admin-api"));
    });
    broken("retention.size", &|d| {
        prometheus(d)["containers"][0]["args"]
            .as_array_mut()
            .unwrap()
            .retain(|a| {
                !a.as_str()
                    .unwrap()
                    .starts_with("--storage.tsdb.retention.size")
            });
    });
    broken("API token", &|d| {
        prometheus(d)["automountServiceAccountToken"] = json!(true);
    });
    broken("trace store", &|d| {
        let cm = d
            .iter_mut()
            .find(|x| kind(x) == "ConfigMap" && namespace(x) == NS && name(x).starts_with("jaeger"))
            .unwrap();
        let text = cm["data"]["config.yaml"]
            .as_str()
            .unwrap()
            .replace("max_traces", "x");
        cm["data"]["config.yaml"] = json!(text);
    });
}
