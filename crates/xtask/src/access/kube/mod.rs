//! The Kubernetes layer: per namespace (`k8s/base/<namespace without the product
//! prefix>/`) the NetworkPolicies of the model's flows, the workloads' ServiceAccounts
//! and the persona Roles and RoleBindings; the Roles of personas granted the same in
//! every namespace (SRE) in the namespace-baseline component (`k8s/components/`), which
//! also holds the hand-written baseline (Namespace, quota, default deny, DNS); and the
//! admission policies that narrow persona grants (`k8s/base/admission`). Each
//! namespace's directory also gets a README saying what runs there, what it may reach
//! and touch, and what people may do.
//!
//! YAML is written as text, not serialised, so that it reads like hand-written YAML
//! and every rule says which flow of the model it carries.

use std::fmt::Write as _;

use platform::access::{AccessModel, Flow};

use super::{Generated, header};

mod rbac;

pub use rbac::role_name;
use rbac::{baseline_rbac, rbac};

const NAME: &str = "app.kubernetes.io/name";
const INTERNET: &str = "internet";

pub fn files(model: &AccessModel) -> Vec<Generated> {
    let mut out = Vec::new();
    for ns in &model.kubernetes.namespaces {
        let dir = format!("k8s/base/{}", base_dir(ns));
        out.push(Generated::new(
            format!("{dir}/networkpolicy.yaml"),
            network_policies(model, ns),
        ));
        out.push(Generated::new(
            format!("{dir}/serviceaccounts.yaml"),
            service_accounts(model, ns),
        ));
        out.push(Generated::new(format!("{dir}/rbac.yaml"), rbac(model, ns)));
        out.push(Generated::new(
            format!("{dir}/README.md"),
            readme(model, ns),
        ));
    }
    out.push(Generated::new(
        "k8s/components/namespace-baseline/rbac.yaml",
        baseline_rbac(model),
    ));
    out.push(Generated::new(
        "k8s/base/admission/analyst-jobs.yaml",
        super::admission::transform_jobs(model),
    ));
    out.push(Generated::new(
        "k8s/base/admission/workload-changes.yaml",
        super::admission::workload_changes(model),
    ));
    out
}

/// `beacon-data` -> `data`: a namespace's base directory is its name without the
/// product prefix.
pub fn base_dir(namespace: &str) -> &str {
    namespace
        .split_once('-')
        .map_or(namespace, |(_, rest)| rest)
}

/// `metadata:` with name, namespace (none in a component: the including base sets it)
/// and labels.
pub(super) fn metadata(
    out: &mut String,
    model: &AccessModel,
    name: &str,
    ns: &str,
    app: Option<&str>,
) {
    let _ = writeln!(out, "metadata:\n  name: {name}");
    if !ns.is_empty() {
        let _ = writeln!(out, "  namespace: {ns}");
    }
    let _ = writeln!(
        out,
        "  labels:\n    app.kubernetes.io/part-of: {}",
        model.product
    );
    if let Some(app) = app {
        let _ = writeln!(out, "    {NAME}: {app}");
    }
}

/// The pods of namespace `ns` (their `app.kubernetes.io/name`), each once, sorted.
fn pods_in<'a>(model: &'a AccessModel, ns: &str) -> Vec<&'a str> {
    let mut pods: Vec<&str> = model
        .components
        .iter()
        .filter(|(_, c)| c.namespace == ns)
        .filter_map(|(name, _)| model.pod_of(name))
        .collect();
    pods.sort_unstable();
    pods.dedup();
    pods
}

/// Where a flow ends or starts, seen from a policy in namespace `here`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Peer {
    /// Anything: the internet, and every pod.
    Anywhere,
    Pod {
        ns: String,
        pod: String,
    },
    /// An address range outside the cluster's pods (an overlay's peer, [`super::overlay`]).
    Cidr(String),
}

impl Peer {
    fn of(model: &AccessModel, component: &str) -> Self {
        if component == INTERNET {
            return Self::Anywhere;
        }
        Self::Pod {
            ns: model.components[component].namespace.clone(),
            pod: model.pod_of(component).unwrap_or(component).to_owned(),
        }
    }

    /// The peer entry of a rule, indented for a list under `from:`/`to:`. A pod of the
    /// policy's own namespace is named by its pod selector alone; any other by namespace
    /// AND pod selector in one peer (two peers would mean OR).
    fn yaml(&self, here: &str) -> String {
        match self {
            Self::Anywhere => String::new(),
            Self::Cidr(cidr) => format!("    - ipBlock:\n        cidr: {cidr}\n"),
            Self::Pod { ns, pod } if ns == here => {
                format!("    - podSelector:\n        matchLabels:\n          {NAME}: {pod}\n")
            }
            Self::Pod { ns, pod } => format!(
                "    - namespaceSelector:\n        matchLabels:\n          kubernetes.io/metadata.name: {ns}\n      podSelector:\n        matchLabels:\n          {NAME}: {pod}\n"
            ),
        }
    }
}

/// One rule of a policy: peers, ports, and the flows it carries (for the comment).
pub(super) struct Rule {
    peers: Vec<Peer>,
    ports: Vec<u16>,
    flows: Vec<String>,
}

/// Flows grouped into rules: first one entry per peer with all of its ports, then peers
/// with the same ports merged into one rule. Order follows the model's flows.
pub(super) fn rules(entries: Vec<(Peer, u16, String)>) -> Vec<Rule> {
    let mut per_peer: Vec<Rule> = Vec::new();
    for (peer, port, flow) in entries {
        match per_peer.iter_mut().find(|r| r.peers[0] == peer) {
            Some(rule) => {
                if !rule.ports.contains(&port) {
                    rule.ports.push(port);
                }
                rule.flows.push(flow);
            }
            None => per_peer.push(Rule {
                peers: vec![peer],
                ports: vec![port],
                flows: vec![flow],
            }),
        }
    }
    // A port open to anywhere needs no narrower rule: its flows are noted on that rule.
    if let Some(i) = per_peer.iter().position(|r| r.peers[0] == Peer::Anywhere) {
        let open = per_peer[i].ports.clone();
        let mut covered = Vec::new();
        per_peer.retain(|r| {
            let redundant =
                r.peers[0] != Peer::Anywhere && r.ports.iter().all(|p| open.contains(p));
            if redundant {
                covered.extend(
                    r.flows
                        .iter()
                        .map(|f| format!("{f} (open to anyone anyway)")),
                );
            }
            !redundant
        });
        if let Some(anywhere) = per_peer.iter_mut().find(|r| r.peers[0] == Peer::Anywhere) {
            anywhere.flows.extend(covered);
        }
    }
    let mut merged: Vec<Rule> = Vec::new();
    for rule in per_peer {
        match merged
            .iter_mut()
            .find(|m| m.ports == rule.ports && !m.peers.contains(&Peer::Anywhere))
        {
            Some(m) if rule.peers[0] != Peer::Anywhere => {
                m.peers.extend(rule.peers);
                m.flows.extend(rule.flows);
            }
            _ => merged.push(rule),
        }
    }
    merged
}

fn flow_comment(model: &AccessModel, f: &Flow) -> String {
    let port = model.components[&f.to].ports[&f.port];
    let mut s = format!("{} -> {}:{} ({port})", f.from, f.to, f.port);
    if let Some(auth) = &f.auth {
        let _ = write!(s, ": {auth}");
    }
    s
}

pub(super) fn write_rules(
    out: &mut String,
    key: &str,
    peers_key: &str,
    here: &str,
    rules: &[Rule],
) {
    if rules.is_empty() {
        let _ = writeln!(out, "  {key}: [] # no flow of the model");
        return;
    }
    let _ = writeln!(out, "  {key}:");
    for rule in rules {
        for flow in &rule.flows {
            let _ = writeln!(out, "  # {flow}");
        }
        let peers: String = rule.peers.iter().map(|p| p.yaml(here)).collect();
        let mut first = "  - ";
        if !peers.is_empty() {
            let _ = write!(out, "{first}{peers_key}:\n{peers}");
            first = "    ";
        }
        let _ = writeln!(out, "{first}ports:");
        for port in &rule.ports {
            let _ = writeln!(out, "    - protocol: TCP\n      port: {port}");
        }
    }
}

/// A NetworkPolicy up to its rules, selecting the pods named `pod`.
pub(super) fn policy_head(
    out: &mut String,
    model: &AccessModel,
    name: &str,
    ns: &str,
    pod: &str,
    types: &[&str],
) {
    out.push_str("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n");
    metadata(out, model, name, ns, None);
    let _ = writeln!(
        out,
        "spec:\n  podSelector:\n    matchLabels:\n      {NAME}: {pod}\n  policyTypes:"
    );
    for t in types {
        let _ = writeln!(out, "  - {t}");
    }
}

/// A generated YAML file: the header, an introduction (comment lines), the documents.
pub(super) fn yaml_file(intro: &str, docs: &[String]) -> String {
    let mut out = header("#");
    out.push_str("#\n");
    for line in intro.lines() {
        let _ = writeln!(out, "# {line}");
    }
    out.push_str(&docs.join("\n---\n"));
    out
}

fn network_policies(model: &AccessModel, ns: &str) -> String {
    let mut docs = Vec::new();
    for pod in pods_in(model, ns) {
        let in_pod = |component: &str| {
            component != INTERNET
                && model.components[component].namespace == ns
                && model.pod_of(component) == Some(pod)
        };
        // Loopback flows inside the pod never touch the network.
        let network = |f: &&Flow| !(in_pod(&f.from) && in_pod(&f.to));
        // (peer, port, comment) of every network flow into (ingress) or out of the pod.
        let entries = |ingress: bool| -> Vec<(Peer, u16, String)> {
            model
                .flows
                .iter()
                .filter(|f| in_pod(if ingress { &f.to } else { &f.from }))
                .filter(network)
                .map(|f| {
                    let peer = if ingress { &f.from } else { &f.to };
                    (
                        Peer::of(model, peer),
                        model.components[&f.to].ports[&f.port],
                        flow_comment(model, f),
                    )
                })
                .collect()
        };
        let mut doc = String::new();
        policy_head(&mut doc, model, pod, ns, pod, &["Ingress", "Egress"]);
        write_rules(&mut doc, "ingress", "from", ns, &rules(entries(true)));
        write_rules(&mut doc, "egress", "to", ns, &rules(entries(false)));
        docs.push(doc);
    }
    yaml_file(
        &format!(
            "{ns}: per pod, exactly the model's [[flows]] (flows between containers of one pod use
loopback and need no rule). Default deny and DNS come from the namespace-baseline
component. tests/k8s and network-config-analyzer (k8s/nca) check the rendered result."
        ),
        &docs,
    )
}

fn service_accounts(model: &AccessModel, ns: &str) -> String {
    let mut accounts: Vec<&str> = model
        .components
        .values()
        .filter(|c| c.namespace == ns)
        .map(|c| c.service_account.as_str())
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    let docs: Vec<String> = accounts
        .iter()
        .map(|sa| {
            let mut doc = String::from("apiVersion: v1\nkind: ServiceAccount\n");
            metadata(&mut doc, model, sa, ns, Some(sa));
            doc.push_str("automountServiceAccountToken: false\n");
            doc
        })
        .collect();
    yaml_file(
        &format!(
            "One ServiceAccount per workload identity of {ns} (spiffe://{}/ns/{ns}/sa/<name>),
with no API token: no {} workload talks to the Kubernetes API.",
            model.trust_domain, model.product
        ),
        &docs,
    )
}

/// What runs in namespace `ns`, what each workload may reach and touch and who may reach
/// it, and what people may do there: the model, read for one namespace.
fn readme(model: &AccessModel, ns: &str) -> String {
    let mut out = format!(
        "# {ns}\n\n{}\n{}\n\nHere: `networkpolicy.yaml`, `serviceaccounts.yaml`, `rbac.yaml` and this file are generated;\nthe workloads' YAML is written by hand; the baseline (Namespace, quota, default deny,\nDNS, SRE) is the `k8s/components/namespace-baseline` component.\n",
        super::GENERATED,
        super::CHECKED
    );
    for (name, _) in model.components.iter().filter(|(_, c)| c.namespace == ns) {
        out.push_str(&component_section(model, name));
    }
    let _ = writeln!(out, "\n## People\n");
    let mut any = false;
    for g in model
        .kubernetes
        .grants
        .iter()
        .filter(|g| g.namespaces.iter().any(|n| n == ns))
    {
        any = true;
        let subject = model.personas[&g.persona].subject().unwrap_or_default();
        let narrowed = g
            .admission
            .as_deref()
            .map(|a| format!(" (narrowed by the admission policy `{a}`)"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "- {} (`{subject}`): {} on {}{narrowed}",
            g.persona,
            g.verbs.join(", "),
            g.resources.join(", ")
        );
    }
    if !any {
        out.push_str("Nobody has Kubernetes permissions here.\n");
    }
    out
}

/// One component, read from the model: what it is, its identity, what it listens on,
/// who reaches it, what it reaches, and its database role's privileges.
pub fn component_section(model: &AccessModel, name: &str) -> String {
    let mut out = String::new();
    let c = &model.components[name];
    let port_of = |f: &Flow| model.components[&f.to].ports[&f.port];
    let _ = writeln!(out, "\n## {name}\n");
    if let Some(d) = &c.description {
        let _ = writeln!(out, "{d}\n");
    }
    let _ = writeln!(
        out,
        "- identity: `{}` (service account `{}`){}",
        model.spiffe_id(name).unwrap_or_default(),
        c.service_account,
        c.image
            .as_ref()
            .map(|i| format!(", image `{}/{i}`", model.product))
            .unwrap_or_default()
    );
    if !c.ports.is_empty() {
        let ports: Vec<String> = c.ports.iter().map(|(p, n)| format!("{p} {n}")).collect();
        let _ = writeln!(
            out,
            "- listens: {}{}",
            ports.join(", "),
            if c.loopback_only {
                " (loopback only)"
            } else {
                ""
            }
        );
    }
    let inbound: Vec<String> = model
        .flows
        .iter()
        .filter(|f| f.to == name)
        .map(|f| {
            let auth = f
                .auth
                .as_deref()
                .map(|a| format!(": {a}"))
                .unwrap_or_default();
            format!("{} on {} ({}){auth}", f.from, f.port, port_of(f))
        })
        .collect();
    let outbound: Vec<String> = model
        .flows
        .iter()
        .filter(|f| f.from == name)
        .map(|f| format!("{} {} ({})", f.to, f.port, port_of(f)))
        .collect();
    for (what, list) in [("reached by", inbound), ("reaches", outbound)] {
        let text = if list.is_empty() {
            "nothing".to_owned()
        } else {
            list.join("; ")
        };
        let _ = writeln!(out, "- {what}: {text}");
    }
    if let Some(callers) = model.grpc.get(name) {
        let _ = writeln!(
            out,
            "- accepts gRPC calls from: {}",
            callers.allowed_callers.join(", ")
        );
    }
    if let Some(role) = &c.db_role {
        let spec = &model.database.roles[role];
        let mut grants: Vec<String> = model
            .database
            .tables
            .iter()
            .filter_map(|t| spec.grants.get(t).map(|p| format!("{} {t}", p.join(", "))))
            .collect();
        grants.extend(spec.functions.iter().map(|f| format!("EXECUTE {f}")));
        let _ = writeln!(out, "- database role `{role}`: {}", grants.join("; "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline is written once: every namespace's base includes the component and
    /// copies none of it.
    #[test]
    fn every_namespace_uses_the_baseline_component() {
        let model = AccessModel::load();
        let root = crate::up::workspace_root();
        for ns in &model.kubernetes.namespaces {
            let dir = root.join("k8s/base").join(base_dir(ns));
            let k = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
            assert!(k.contains(&format!("\nnamespace: {ns}\n")), "{ns}: {k}");
            assert!(
                k.contains("- ../../components/namespace-baseline\n"),
                "{ns}: {k}"
            );
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                // Subdirectories hold configuration files (observability's Prometheus
                // and Grafana files), not manifests.
                if path.is_dir() {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for copied in [
                    "kind: Namespace\n",
                    "kind: LimitRange\n",
                    "name: default-deny\n",
                    "name: allow-dns\n",
                ] {
                    assert!(
                        !text.contains(copied),
                        "{} copies the baseline ({copied})",
                        path.display()
                    );
                }
            }
        }
    }

    #[test]
    fn names_follow_the_conventions() {
        assert_eq!(base_dir("beacon-data"), "data");
        assert_eq!(role_name("beacon:product-developers"), "product-developers");
    }

    #[test]
    fn same_ports_share_a_rule_and_loopback_needs_none() {
        let model = AccessModel::load();
        let data = network_policies(&model, "beacon-data");
        // Every client of PostgreSQL on one port: one rule with a peer per client.
        let clients = model.flows.iter().filter(|f| f.to == "postgres").count();
        assert!(clients >= 7, "{clients}");
        let postgres = data
            .split("---")
            .find(|d| d.contains("  name: postgres\n  namespace"))
            .unwrap();
        assert_eq!(postgres.matches("- protocol: TCP").count(), 1, "{postgres}");
        assert_eq!(
            postgres
                .matches("podSelector:\n        matchLabels")
                .count(),
            clients
        );
        let pipeline = network_policies(&model, "beacon-pipeline");
        assert!(!pipeline.contains("port: 8083"), "loader is loopback only");
        assert!(!pipeline.contains("# ingest -> loader"));
    }
}
