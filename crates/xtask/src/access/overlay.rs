//! Overlay-only flows (`[overlays.<name>]` in the model): flows that exist in one overlay
//! only, such as prod's PostgreSQL operator, with the peers outside the product they
//! involve. Rendered into `k8s/overlays/<name>/networkpolicy.yaml` as extra
//! NetworkPolicies: policies add up, so the base's default deny and per-pod policies
//! stay as they are and these open exactly the overlay's flows on top.
//!
//! A peer is a platform pod (namespace + `app.kubernetes.io/name`), whose ingress gets a
//! policy with exactly the flows into it, or an address range (`cidr`).

use std::collections::BTreeMap;

use anyhow::Context as _;
use platform::access::{AccessModel, Flow};
use serde::Deserialize;

use super::Generated;
use super::kube::{Peer, policy_head, rules, write_rules, yaml_file};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    pub description: String,
    /// Ports components gain in this overlay: component -> port name -> number.
    #[serde(default)]
    pub ports: BTreeMap<String, BTreeMap<String, u16>>,
    #[serde(default)]
    pub peers: BTreeMap<String, ExternalPeer>,
    pub flows: Vec<Flow>,
}

/// Something outside the product that an overlay's flows reach or come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalPeer {
    pub description: String,
    /// A platform pod: its namespace and `app.kubernetes.io/name`.
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub pod: Option<String>,
    /// Or addresses.
    #[serde(default)]
    pub cidr: Option<String>,
    #[serde(default)]
    pub ports: BTreeMap<String, u16>,
}

/// Where an overlay flow starts or ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// A pod: namespace, `app.kubernetes.io/name`, and whether it is the product's.
    Pod {
        ns: String,
        pod: String,
        product: bool,
    },
    Cidr(String),
}

impl Overlay {
    /// The port number of `flow` (a component's own port, one it gains here, or a peer's).
    pub fn port(&self, model: &AccessModel, flow: &Flow) -> Option<u16> {
        if let Some(peer) = self.peers.get(&flow.to) {
            return peer.ports.get(&flow.port).copied();
        }
        let c = model.components.get(&flow.to)?;
        c.ports
            .get(&flow.port)
            .or_else(|| self.ports.get(&flow.to)?.get(&flow.port))
            .copied()
    }

    /// A component or peer, as a pod or an address range.
    pub fn end(&self, model: &AccessModel, name: &str) -> Option<End> {
        if let Some(peer) = self.peers.get(name) {
            return Some(match (&peer.namespace, &peer.pod, &peer.cidr) {
                (Some(ns), Some(pod), None) => End::Pod {
                    ns: ns.clone(),
                    pod: pod.clone(),
                    product: false,
                },
                (None, None, Some(cidr)) => End::Cidr(cidr.clone()),
                _ => return None,
            });
        }
        let c = model.components.get(name)?;
        Some(End::Pod {
            ns: c.namespace.clone(),
            pod: model.pod_of(name).unwrap_or(name).to_owned(),
            product: true,
        })
    }

    fn check(&self, model: &AccessModel, name: &str) -> anyhow::Result<()> {
        for component in self.ports.keys() {
            anyhow::ensure!(
                model.components.contains_key(component),
                "overlay {name}: ports for unknown component {component}"
            );
        }
        for (peer, p) in &self.peers {
            anyhow::ensure!(
                !model.components.contains_key(peer) && peer != "internet",
                "overlay {name}: peer {peer} shadows a component"
            );
            anyhow::ensure!(
                self.end(model, peer).is_some(),
                "overlay {name}: peer {peer} needs either namespace and pod, or cidr"
            );
            if let Some(cidr) = &p.cidr {
                anyhow::ensure!(
                    cidr.split_once('/').is_some_and(|(ip, len)| {
                        ip.parse::<std::net::Ipv4Addr>().is_ok()
                            && len.parse::<u8>().is_ok_and(|l| l <= 32)
                    }),
                    "overlay {name}: peer {peer} has an invalid cidr {cidr}"
                );
            }
        }
        for f in &self.flows {
            for end in [&f.from, &f.to] {
                anyhow::ensure!(
                    self.end(model, end).is_some(),
                    "overlay {name}: flow names unknown component or peer {end}"
                );
            }
            anyhow::ensure!(
                self.port(model, f).is_some(),
                "overlay {name}: flow {} -> {} names unknown port {}",
                f.from,
                f.to,
                f.port
            );
            anyhow::ensure!(
                matches!(
                    self.end(model, &f.from),
                    Some(End::Pod { product: true, .. })
                ) || matches!(self.end(model, &f.to), Some(End::Pod { .. })),
                "overlay {name}: flow {} -> {} has no pod to put a policy on",
                f.from,
                f.to
            );
        }
        Ok(())
    }
}

/// The model's overlays, checked: every flow names a component or a peer and one of its
/// ports.
pub fn overlays(model: &AccessModel) -> anyhow::Result<BTreeMap<String, Overlay>> {
    let out: BTreeMap<String, Overlay> = model
        .overlays
        .clone()
        .try_into()
        .context("[overlays] in security/access-model.toml")?;
    for (name, overlay) in &out {
        overlay.check(model, name)?;
    }
    Ok(out)
}

/// One overlay by name (none when the model has no such overlay).
pub fn overlay(model: &AccessModel, name: &str) -> Option<Overlay> {
    overlays(model)
        .expect("security/access-model.toml [overlays] is valid")
        .remove(name)
}

pub fn files(model: &AccessModel) -> Vec<Generated> {
    overlays(model)
        .expect("security/access-model.toml [overlays] is valid")
        .iter()
        .map(|(name, overlay)| {
            Generated::new(
                format!("k8s/overlays/{name}/networkpolicy.yaml"),
                network_policies(model, name, overlay),
            )
        })
        .collect()
}

/// docs/ACCESS.md: each overlay's extra flows and the peers they reach.
pub fn render_markdown(model: &AccessModel, out: &mut String) {
    use std::fmt::Write as _;
    let overlays = overlays(model).expect("security/access-model.toml [overlays] is valid");
    for (name, overlay) in &overlays {
        let _ = writeln!(
            out,
            "\n### In the {name} overlay only\n\n{} Rendered into `k8s/overlays/{name}/networkpolicy.yaml`.\n\n| from | to | port | authentication |\n| --- | --- | --- | --- |",
            overlay.description
        );
        for f in &overlay.flows {
            out.push_str(&super::markdown::flow_row(
                f,
                overlay.port(model, f).expect("checked"),
            ));
        }
        let _ = writeln!(out, "\n| peer | where | description |\n| --- | --- | --- |");
        for (peer, p) in &overlay.peers {
            let place = match (&p.namespace, &p.pod, &p.cidr) {
                (Some(ns), Some(pod), _) => format!("pods `{pod}` in `{ns}`"),
                (_, _, Some(cidr)) => format!("`{cidr}`"),
                _ => String::new(),
            };
            let _ = writeln!(out, "| {peer} | {place} | {} |", p.description);
        }
    }
}

fn peer(end: &End) -> Peer {
    match end {
        End::Pod { ns, pod, .. } => Peer::Pod {
            ns: ns.clone(),
            pod: pod.clone(),
        },
        End::Cidr(cidr) => Peer::Cidr(cidr.clone()),
    }
}

fn network_policies(model: &AccessModel, name: &str, overlay: &Overlay) -> String {
    let end = |n: &str| overlay.end(model, n).expect("checked");
    // Every pod with a flow in or (for the product's pods) out, in the model's order.
    let mut subjects: Vec<End> = Vec::new();
    for f in &overlay.flows {
        for (e, ingress) in [(end(&f.to), true), (end(&f.from), false)] {
            let policed = match &e {
                End::Pod { product, .. } => ingress || *product,
                End::Cidr(_) => false,
            };
            if policed && !subjects.contains(&e) {
                subjects.push(e);
            }
        }
    }
    let mut docs = Vec::new();
    for subject in &subjects {
        let End::Pod { ns, pod, product } = subject else {
            continue;
        };
        let entries = |ingress: bool| -> Vec<(Peer, u16, String)> {
            overlay
                .flows
                .iter()
                .filter(|f| end(if ingress { &f.to } else { &f.from }) == *subject)
                .map(|f| {
                    let port = overlay.port(model, f).expect("checked");
                    let mut comment = format!("{} -> {}:{} ({port})", f.from, f.to, f.port);
                    if let Some(auth) = &f.auth {
                        comment.push_str(": ");
                        comment.push_str(auth);
                    }
                    (
                        peer(&end(if ingress { &f.from } else { &f.to })),
                        port,
                        comment,
                    )
                })
                .collect()
        };
        let ingress = rules(entries(true));
        // The platform's own pods: only what reaches them is the model's business.
        let egress = if *product {
            rules(entries(false))
        } else {
            Vec::new()
        };
        let mut types = Vec::new();
        if !ingress.is_empty() {
            types.push("Ingress");
        }
        if !egress.is_empty() {
            types.push("Egress");
        }
        let mut doc = String::new();
        policy_head(&mut doc, model, &format!("{pod}-{name}"), ns, pod, &types);
        if !ingress.is_empty() {
            write_rules(&mut doc, "ingress", "from", ns, &ingress);
        }
        if !egress.is_empty() {
            write_rules(&mut doc, "egress", "to", ns, &egress);
        }
        docs.push(doc);
    }
    yaml_file(
        &format!(
            "The {name} overlay only: {}
The model's [overlays.{name}] flows, on top of the base's policies (which stay default-deny:
policies add up). A platform pod gets an ingress policy with exactly the flows into it.
tests/k8s and network-config-analyzer (k8s/nca) check the rendered result.",
            overlay.description
        ),
        &docs,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(extra: &str) -> anyhow::Result<BTreeMap<String, Overlay>> {
        let text = format!("{}\n{extra}", platform::access::MODEL_TOML);
        overlays(&AccessModel::parse(&text)?)
    }

    #[test]
    fn the_model_s_overlays_are_valid() {
        let prod = overlays(&AccessModel::load())
            .unwrap()
            .remove("prod")
            .unwrap();
        assert!(prod.flows.iter().any(|f| f.to == "object-storage"));
    }

    #[test]
    fn unknown_names_and_ports_are_refused() {
        let flow = |from: &str, to: &str, port: &str| {
            format!(
                "[overlays.x]\ndescription = \"x\"\n[[overlays.x.flows]]\nfrom = \"{from}\"\nto = \"{to}\"\nport = \"{port}\""
            )
        };
        with(&flow("api", "postgres", "postgres")).unwrap();
        let err = with(&flow("api", "nowhere", "postgres")).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown component or peer nowhere"),
            "{err}"
        );
        let err = with(&flow("api", "postgres", "status")).unwrap_err();
        assert!(err.to_string().contains("unknown port status"), "{err}");
        let peer = "[overlays.x.peers.both]\ndescription = \"x\"\nnamespace = \"a\"\npod = \"b\"\ncidr = \"10.0.0.0/8\"";
        let err = with(&format!("{}\n{peer}", flow("api", "postgres", "postgres"))).unwrap_err();
        assert!(
            err.to_string()
                .contains("either namespace and pod, or cidr"),
            "{err}"
        );
    }

    #[test]
    fn prod_renders_only_the_overlay_flows() {
        let model = AccessModel::load();
        let prod = overlay(&model, "prod").unwrap();
        let yaml = network_policies(&model, "prod", &prod);
        // The operator's pod: ingress only, the webhook port only.
        let operator = yaml
            .split("---")
            .find(|d| d.contains("name: cloudnative-pg-prod"))
            .unwrap();
        assert!(operator.contains("  - Ingress\n"), "{operator}");
        assert!(!operator.contains("Egress"), "{operator}");
        assert!(operator.contains("port: 9443"), "{operator}");
        let postgres = yaml
            .split("---")
            .find(|d| d.contains("name: postgres-prod"))
            .unwrap();
        assert!(postgres.contains("cidr: 0.0.0.0/0"), "{postgres}");
        assert!(!postgres.contains("port: 50051"), "{postgres}");
    }
}
