//! Connectivity computed from rendered NetworkPolicies (the Kubernetes semantics: a pod
//! is isolated in a direction when a policy of that type selects it; then only what some
//! selecting policy's rule allows gets through; a connection needs the source's egress
//! AND the destination's ingress), compared with the access model's flows.

use std::collections::{BTreeMap, BTreeSet};

use platform::access::AccessModel;
use serde_json::Value;

use crate::render::{arr, kind, name, namespace, templates};

const NAME: &str = "app.kubernetes.io/name";

/// An endpoint: a Beacon pod, or a stand-in for everything else.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ep {
    /// A Beacon pod, by namespace and `app.kubernetes.io/name`.
    Pod(String, String),
    /// A platform pod that an overlay's flows name (the PostgreSQL operator in prod),
    /// present when a rendered policy lives in its namespace.
    Platform(String, String),
    /// An address on the internet (203.0.113.7).
    Internet,
    /// A pod in a namespace that is not Beacon's (default/other).
    ForeignPod,
    /// CoreDNS in kube-system.
    KubeDns,
    /// A node address (kind's docker network, 172.18.0.2): nothing may reach a pod from there.
    Node,
}

impl std::fmt::Display for Ep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ep::Pod(ns, n) | Ep::Platform(ns, n) => write!(f, "{ns}/{n}"),
            other => write!(f, "{other:?}"),
        }
    }
}

/// (from, to, protocol, port)
pub type Conn = (Ep, Ep, String, u16);

struct PodInfo {
    ns: String,
    labels: BTreeMap<String, String>,
    ports: BTreeMap<String, u16>,
    ip: [u8; 4],
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn selector_matches(sel: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            if labels.get(k).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for e in arr(&sel["matchExpressions"]) {
        let key = e["key"].as_str().unwrap_or("");
        let values: Vec<&str> = arr(&e["values"]).iter().filter_map(Value::as_str).collect();
        let have = labels.get(key);
        let ok = match e["operator"].as_str().unwrap_or("") {
            "In" => have.is_some_and(|h| values.contains(&h.as_str())),
            "NotIn" => have.is_none_or(|h| !values.contains(&h.as_str())),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            op => panic!("unknown selector operator {op}"),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn parse_cidr(c: &str) -> ([u8; 4], u8) {
    let (ip, len) = c.split_once('/').expect("CIDR with a prefix length");
    let octets: Vec<u8> = ip
        .split('.')
        .map(|o| o.parse().expect("IPv4 CIDR"))
        .collect();
    (
        [octets[0], octets[1], octets[2], octets[3]],
        len.parse().expect("prefix length"),
    )
}

fn in_cidr(ip: [u8; 4], cidr: &str) -> bool {
    let (net, len) = parse_cidr(cidr);
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from_be_bytes(ip) & mask == u32::from_be_bytes(net) & mask
}

pub struct Network {
    pods: BTreeMap<Ep, PodInfo>,
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
    policies: Vec<Value>,
}

impl Network {
    pub fn from_docs(docs: &[Value]) -> Self {
        let mut ns_labels = BTreeMap::new();
        for d in docs.iter().filter(|d| kind(d) == "Namespace") {
            let mut l = labels_of(&d["metadata"]["labels"]);
            // Set by the API server on every namespace.
            l.insert("kubernetes.io/metadata.name".into(), name(d).into());
            ns_labels.insert(name(d).to_owned(), l);
        }
        for ns in ["kube-system", "default"] {
            ns_labels.insert(
                ns.into(),
                [("kubernetes.io/metadata.name".to_owned(), ns.to_owned())].into(),
            );
        }
        let mut pods = BTreeMap::new();
        for (i, t) in templates(docs).into_iter().enumerate() {
            let labels = labels_of(t.labels);
            let pod_name = labels
                .get(NAME)
                .cloned()
                .unwrap_or_else(|| panic!("{} has no {NAME} label", t.owner));
            let mut ports = BTreeMap::new();
            for c in crate::render::containers(t.spec) {
                for p in arr(&c["ports"]) {
                    if let (Some(n), Some(num)) = (p["name"].as_str(), p["containerPort"].as_u64())
                    {
                        ports.insert(n.to_owned(), num as u16);
                    }
                }
            }
            pods.entry(Ep::Pod(t.namespace.clone(), pod_name))
                .or_insert(PodInfo {
                    ns: t.namespace.clone(),
                    labels,
                    ports,
                    ip: [10, 244, 1, 10 + i as u8],
                });
        }
        // CloudNativePG Clusters: their instance pods carry the Cluster's inherited labels.
        for (i, d) in docs
            .iter()
            .filter(|d| kind(d) == "Cluster" && d["apiVersion"] == "postgresql.cnpg.io/v1")
            .enumerate()
        {
            let mut labels = labels_of(&d["spec"]["inheritedMetadata"]["labels"]);
            labels.insert("cnpg.io/cluster".into(), name(d).into());
            labels.insert("cnpg.io/podRole".into(), "instance".into());
            let pod_name = labels
                .get(NAME)
                .cloned()
                .unwrap_or_else(|| panic!("Cluster {} has no {NAME} label", name(d)));
            let ports = [("postgresql", 5432), ("status", 8000), ("metrics", 9187)]
                .map(|(n, p)| (n.to_owned(), p))
                .into();
            pods.insert(
                Ep::Pod(namespace(d).to_owned(), pod_name),
                PodInfo {
                    ns: namespace(d).to_owned(),
                    labels,
                    ports,
                    ip: [10, 244, 3, 10 + i as u8],
                },
            );
        }
        // Platform pods named by the model's overlays, where a policy puts rules on them.
        let overlays = xtask::access::overlay::overlays(&AccessModel::load()).unwrap();
        let mut i = 0;
        for peer in overlays.values().flat_map(|o| o.peers.values()) {
            let (Some(ns), Some(pod)) = (&peer.namespace, &peer.pod) else {
                continue;
            };
            if !docs
                .iter()
                .any(|d| kind(d) == "NetworkPolicy" && namespace(d) == ns)
            {
                continue;
            }
            ns_labels.insert(
                ns.clone(),
                [("kubernetes.io/metadata.name".to_owned(), ns.clone())].into(),
            );
            pods.insert(
                Ep::Platform(ns.clone(), pod.clone()),
                PodInfo {
                    ns: ns.clone(),
                    labels: [(NAME.to_owned(), pod.clone())].into(),
                    ports: BTreeMap::new(),
                    ip: [10, 244, 4, 10 + i],
                },
            );
            i += 1;
        }
        pods.insert(
            Ep::ForeignPod,
            PodInfo {
                ns: "default".into(),
                labels: [("app".to_owned(), "other".to_owned())].into(),
                ports: BTreeMap::new(),
                ip: [10, 244, 2, 9],
            },
        );
        pods.insert(
            Ep::KubeDns,
            PodInfo {
                ns: "kube-system".into(),
                labels: [("k8s-app".to_owned(), "kube-dns".to_owned())].into(),
                ports: BTreeMap::new(),
                ip: [10, 244, 0, 10],
            },
        );
        let policies = docs
            .iter()
            .filter(|d| kind(d) == "NetworkPolicy")
            .cloned()
            .collect();
        Self {
            pods,
            ns_labels,
            policies,
        }
    }

    fn ip(&self, ep: &Ep) -> [u8; 4] {
        match ep {
            Ep::Internet => [203, 0, 113, 7],
            Ep::Node => [172, 18, 0, 2],
            other => self.pods[other].ip,
        }
    }

    /// Policies of `direction` ("Ingress"/"Egress") that select `ep`.
    fn selecting<'a>(&'a self, ep: &Ep, direction: &str) -> Vec<&'a Value> {
        let Some(pod) = self.pods.get(ep) else {
            return vec![];
        };
        self.policies
            .iter()
            .filter(|p| namespace(p) == pod.ns)
            .filter(|p| selector_matches(&p["spec"]["podSelector"], &pod.labels))
            .filter(|p| {
                let types = arr(&p["spec"]["policyTypes"]);
                if types.is_empty() {
                    direction == "Ingress"
                        || (direction == "Egress" && p["spec"]["egress"].is_array())
                } else {
                    types.iter().any(|t| t == direction)
                }
            })
            .collect()
    }

    fn peer_matches(&self, policy_ns: &str, peer: &Value, ep: &Ep) -> bool {
        if let Some(block) = peer.get("ipBlock") {
            let ip = self.ip(ep);
            let cidr = block["cidr"].as_str().expect("ipBlock.cidr");
            return in_cidr(ip, cidr)
                && !arr(&block["except"])
                    .iter()
                    .any(|e| in_cidr(ip, e.as_str().unwrap_or("")));
        }
        let Some(pod) = self.pods.get(ep) else {
            return false;
        };
        let ns_ok = match peer.get("namespaceSelector") {
            Some(sel) => {
                selector_matches(sel, self.ns_labels.get(&pod.ns).unwrap_or(&BTreeMap::new()))
            }
            None => pod.ns == policy_ns,
        };
        let pod_ok = match peer.get("podSelector") {
            Some(sel) => selector_matches(sel, &pod.labels),
            None => true,
        };
        ns_ok && pod_ok
    }

    fn port_matches(&self, ports: &Value, dst: &Ep, proto: &str, port: u16) -> bool {
        let list = arr(ports);
        if list.is_empty() {
            return true;
        }
        list.iter().any(|p| {
            if p["protocol"].as_str().unwrap_or("TCP") != proto {
                return false;
            }
            let start = match &p["port"] {
                Value::Null => return true,
                Value::Number(n) => n.as_u64().unwrap_or(0) as u16,
                Value::String(named) => match self.pods.get(dst).and_then(|d| d.ports.get(named)) {
                    Some(n) => *n,
                    None => return false,
                },
                _ => return false,
            };
            let end = p["endPort"].as_u64().map_or(start, |e| e as u16);
            (start..=end).contains(&port)
        })
    }

    fn direction_allows(
        &self,
        subject: &Ep,
        other: &Ep,
        dst: &Ep,
        direction: &str,
        proto: &str,
        port: u16,
    ) -> bool {
        if !self.pods.contains_key(subject) {
            return true; // not a pod: nothing here governs it
        }
        let policies = self.selecting(subject, direction);
        if policies.is_empty() {
            return true; // not isolated in this direction
        }
        let (rules_key, peers_key) = if direction == "Ingress" {
            ("ingress", "from")
        } else {
            ("egress", "to")
        };
        policies.iter().any(|p| {
            arr(&p["spec"][rules_key]).iter().any(|rule| {
                let peers = arr(&rule[peers_key]);
                (peers.is_empty()
                    || peers
                        .iter()
                        .any(|peer| self.peer_matches(namespace(p), peer, other)))
                    && self.port_matches(&rule["ports"], dst, proto, port)
            })
        })
    }

    pub fn allowed(&self, src: &Ep, dst: &Ep, proto: &str, port: u16) -> bool {
        self.direction_allows(src, dst, dst, "Egress", proto, port)
            && self.direction_allows(dst, src, dst, "Ingress", proto, port)
    }

    pub fn platform_pods(&self) -> Vec<Ep> {
        self.pods
            .keys()
            .filter(|e| matches!(e, Ep::Platform(..)))
            .cloned()
            .collect()
    }

    pub fn beacon_pods(&self) -> Vec<Ep> {
        self.pods
            .keys()
            .filter(|e| matches!(e, Ep::Pod(..)))
            .cloned()
            .collect()
    }

    /// Every allowed connection that involves a Beacon pod, over every port that the
    /// model or any policy mentions, plus DNS and an unrelated port.
    pub fn connectivity(&self, model: &AccessModel) -> BTreeSet<Conn> {
        let mut ports: BTreeSet<u16> = [53, 443, 5432, 12345].into();
        for c in model.components.values() {
            ports.extend(c.ports.values().copied());
        }
        for p in &self.policies {
            for dir in ["ingress", "egress"] {
                for rule in arr(&p["spec"][dir]) {
                    for port in arr(&rule["ports"]) {
                        if let Some(n) = port["port"].as_u64() {
                            ports.insert(n as u16);
                        }
                    }
                }
            }
        }
        let mut all: Vec<Ep> = self.pods.keys().cloned().collect();
        all.extend([Ep::Internet, Ep::Node]);
        let mut out = BTreeSet::new();
        for src in &all {
            for dst in &all {
                // Connections of Beacon pods, and into the platform pods that the model's
                // overlays put policies on (what leaves those is the platform's).
                let ours =
                    matches!(src, Ep::Pod(..)) || matches!(dst, Ep::Pod(..) | Ep::Platform(..));
                if src == dst || !ours {
                    continue;
                }
                for proto in ["TCP", "UDP"] {
                    for &port in &ports {
                        if self.allowed(src, dst, proto, port) {
                            out.insert((src.clone(), dst.clone(), proto.to_owned(), port));
                        }
                    }
                }
            }
        }
        out
    }
}

fn component_pod(model: &AccessModel, component: &str) -> Ep {
    let c = &model.components[component];
    Ep::Pod(
        c.namespace.clone(),
        c.pod.clone().unwrap_or_else(|| component.to_owned()),
    )
}

/// Every endpoint that is neither a Beacon pod nor a platform pod the model names.
const ELSEWHERE: [Ep; 4] = [Ep::Internet, Ep::ForeignPod, Ep::KubeDns, Ep::Node];

/// What the model says must be reachable: its [[flows]] (in-pod loopback flows excluded:
/// they never touch the network), DNS to kube-dns for every Beacon pod, and in prod the
/// prod overlay's flows ([overlays.prod]). Nothing is opened to the nodes in either
/// overlay (kind >= 0.28 lets kubelet probes through a default deny).
pub fn expected(model: &AccessModel, pods: &[Ep], platform: &[Ep], prod: bool) -> BTreeSet<Conn> {
    let mut out = BTreeSet::new();
    for f in &model.flows {
        let to = component_pod(model, &f.to);
        let port = model.components[&f.to].ports[&f.port];
        let froms = if f.from == "internet" {
            ELSEWHERE.iter().chain(platform).cloned().collect()
        } else {
            vec![component_pod(model, &f.from)]
        };
        for from in froms {
            if from != to {
                out.insert((from, to.clone(), "TCP".into(), port));
            }
        }
    }
    for p in pods {
        for proto in ["TCP", "UDP"] {
            out.insert((p.clone(), Ep::KubeDns, proto.into(), 53));
        }
    }
    if prod && let Some(overlay) = xtask::access::overlay::overlay(model, "prod") {
        use xtask::access::overlay::End;
        let eps = |name: &str| match overlay.end(model, name).expect("a valid overlay") {
            End::Pod {
                ns,
                pod,
                product: true,
            } => vec![Ep::Pod(ns, pod)],
            End::Pod {
                ns,
                pod,
                product: false,
            } => vec![Ep::Platform(ns, pod)],
            End::Cidr(_) => ELSEWHERE.to_vec(),
        };
        for f in &overlay.flows {
            let port = overlay.port(model, f).expect("a valid overlay");
            for from in eps(&f.from) {
                for to in eps(&f.to) {
                    if from != to {
                        out.insert((from.clone(), to, "TCP".into(), port));
                    }
                }
            }
        }
    }
    out
}

/// Empty when the rendered policies allow exactly the model's flows; otherwise each
/// extra and missing connection, one per line.
/// `prod`: the docs are the prod overlay's, so its `[overlays.prod]` flows are expected.
pub fn differences(docs: &[Value], model: &AccessModel, prod: bool) -> Vec<String> {
    let net = Network::from_docs(docs);
    let actual = net.connectivity(model);
    let expected = expected(model, &net.beacon_pods(), &net.platform_pods(), prod);
    let fmt = |c: &Conn| format!("{} -> {} {}/{}", c.0, c.1, c.2, c.3);
    let mut out: Vec<String> = actual
        .difference(&expected)
        .map(|c| format!("allowed but not in the model: {}", fmt(c)))
        .collect();
    out.extend(
        expected
            .difference(&actual)
            .map(|c| format!("in the model but blocked: {}", fmt(c))),
    );
    out
}
