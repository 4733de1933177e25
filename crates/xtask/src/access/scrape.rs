//! Metrics scraping, from the model's flows to `admin` ports (`<scraper> -> <component>:admin`):
//!
//! - next to each scraped pod, a headless Service `<pod>-admin` (`k8s/base/<namespace>/
//!   admin-services.yaml`) with one port per scraped component of the pod: its DNS name
//!   answers with one A record per pod, ready or not, so the scraper sees every replica
//!   (and a replica that stopped answering as `up == 0`) without a Kubernetes API token;
//! - the scraper's jobs (`k8s/base/<its namespace>/<scraper>-scrape.yml`, Prometheus
//!   `scrape_config_files` syntax): one job per scraped component, named after it,
//!   resolving that Service by DNS (`dns_sd_configs`, type A, the component's admin port).
//!
//! The NetworkPolicies that let the scraper in are the same flows ([`super::kube`]), so
//! what is scraped and what is allowed cannot drift apart.

use std::fmt::Write as _;

use platform::access::{AccessModel, Flow};

use super::{Generated, header, kube};

/// The port name of the scraped endpoints (`/healthz`, `/readyz`, `/metrics`).
pub const ADMIN: &str = "admin";

/// Every flow to an `admin` port, in the model's order.
fn scrapes(model: &AccessModel) -> Vec<&Flow> {
    model.flows.iter().filter(|f| f.port == ADMIN).collect()
}

/// The headless Service of `pod`'s admin ports.
pub fn service_name(pod: &str) -> String {
    format!("{pod}-{ADMIN}")
}

pub fn files(model: &AccessModel) -> Vec<Generated> {
    let mut out: Vec<Generated> = model
        .kubernetes
        .namespaces
        .iter()
        .map(|ns| {
            Generated::new(
                format!("k8s/base/{}/admin-services.yaml", kube::base_dir(ns)),
                services(model, ns),
            )
        })
        .collect();
    let mut scrapers: Vec<&str> = scrapes(model).iter().map(|f| f.from.as_str()).collect();
    scrapers.sort_unstable();
    scrapers.dedup();
    for scraper in scrapers {
        let ns = &model.components[scraper].namespace;
        out.push(Generated::new(
            format!("k8s/base/{}/{scraper}-scrape.yml", kube::base_dir(ns)),
            jobs(model, scraper),
        ));
    }
    out
}

/// The scraped pods of namespace `ns`, each with its scraped components (sorted, once).
fn scraped_pods<'a>(model: &'a AccessModel, ns: &str) -> Vec<(&'a str, Vec<&'a str>)> {
    let mut pods: Vec<(&str, Vec<&str>)> = Vec::new();
    for f in scrapes(model) {
        if model.components[&f.to].namespace != ns {
            continue;
        }
        let pod = model.pod_of(&f.to).unwrap_or(&f.to);
        match pods.iter_mut().find(|(p, _)| *p == pod) {
            Some((_, components)) if !components.contains(&f.to.as_str()) => components.push(&f.to),
            Some(_) => {}
            None => pods.push((pod, vec![&f.to])),
        }
    }
    pods.sort_unstable();
    pods
}

fn services(model: &AccessModel, ns: &str) -> String {
    let docs: Vec<String> = scraped_pods(model, ns)
        .into_iter()
        .map(|(pod, components)| {
            let mut doc = String::from("apiVersion: v1\nkind: Service\n");
            kube::metadata(&mut doc, model, &service_name(pod), ns, None);
            let _ = writeln!(
                doc,
                "spec:\n  clusterIP: None\n  publishNotReadyAddresses: true\n  selector:\n    app.kubernetes.io/name: {pod}\n  ports:"
            );
            for c in components {
                let port = model.components[c].ports[ADMIN];
                let _ = writeln!(
                    doc,
                    "  - name: {c}\n    port: {port}\n    targetPort: {port}\n    protocol: TCP"
                );
            }
            doc
        })
        .collect();
    let intro = format!(
        "{ns}: one headless Service per pod whose admin port (/healthz, /readyz, /metrics) is scraped,
a port per component of the pod. Headless (no cluster IP): its DNS name answers with every
pod's address, not-ready ones too, which is how the scraper finds each replica without a
Kubernetes API token. The NetworkPolicies admit the scraper alone on these ports."
    );
    if docs.is_empty() {
        let mut out = kube::yaml_file(&intro, &[]);
        out.push_str("# Nothing here is scraped.\n");
        return out;
    }
    kube::yaml_file(&intro, &docs)
}

fn jobs(model: &AccessModel, scraper: &str) -> String {
    let mut out = header("#");
    let _ = writeln!(
        out,
        "#
# {scraper}'s scrape jobs (a file of Prometheus' `scrape_config_files`): one per flow
# `{scraper} -> <component>:{ADMIN}` of the model, found through the component's headless
# admin Service by DNS (no Kubernetes API token). Each job is named after its component.
scrape_configs:"
    );
    for f in scrapes(model).into_iter().filter(|f| f.from == scraper) {
        let c = &model.components[&f.to];
        let pod = model.pod_of(&f.to).unwrap_or(&f.to);
        let port = c.ports[ADMIN];
        let _ = writeln!(
            out,
            "  # {scraper} -> {}:{ADMIN} ({port})
  - job_name: {}
    metrics_path: /metrics
    dns_sd_configs:
      - names:
          - {}.{}.svc
        type: A
        port: {port}
    relabel_configs:
      - target_label: namespace
        replacement: {}",
            f.to,
            f.to,
            service_name(pod),
            c.namespace,
            c.namespace
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scraped_component_has_a_service_port_and_a_job() {
        let model = AccessModel::load();
        let files = files(&model);
        let scraped: Vec<&Flow> = scrapes(&model);
        assert!(!scraped.is_empty());
        for f in scraped {
            let c = &model.components[&f.to];
            let port = c.ports[ADMIN];
            let svc = files
                .iter()
                .find(|g| {
                    g.path
                        == format!(
                            "k8s/base/{}/admin-services.yaml",
                            kube::base_dir(&c.namespace)
                        )
                })
                .unwrap();
            assert!(
                svc.contents
                    .contains(&format!("  - name: {}\n    port: {port}\n", f.to)),
                "{}",
                svc.contents
            );
            let job = files
                .iter()
                .find(|g| g.path.ends_with(&format!("/{}-scrape.yml", f.from)))
                .unwrap();
            assert!(
                job.contents.contains(&format!("  - job_name: {}\n", f.to)),
                "{}",
                job.contents
            );
        }
    }

    #[test]
    fn two_components_of_one_pod_share_its_service() {
        let model = AccessModel::load();
        let pods = scraped_pods(&model, "beacon-pipeline");
        let pipeline = pods.iter().find(|(p, _)| *p == "pipeline").unwrap();
        assert_eq!(pipeline.1, ["ingest", "loader"]);
    }
}
