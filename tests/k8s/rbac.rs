//! What each group may do, computed from rendered Roles, ClusterRoles and bindings.

use std::collections::{BTreeMap, BTreeSet};

use platform::access::{AccessModel, KubePermission};
use serde_json::Value;

use crate::render::{arr, kind, name, namespace};

const FORBIDDEN_VERBS: [&str; 3] = ["escalate", "bind", "impersonate"];
const SRE: &str = "beacon:sre";
const ANALYSTS: &str = "beacon:analysts";
/// The analysts' workspace: the namespace of their toolbox, which holds no Secret and
/// where admission admits no pod but the toolbox. Analysts may exec there, nowhere else.
pub fn analysts_workspace(model: &AccessModel) -> &str {
    &model.components["analysts-toolbox"].namespace
}

/// Rule violations (wildcards, Secrets, escalation verbs, exec for non-SRE, cluster-wide
/// grants, bindings to anything but persona groups) and differences from the model.
pub fn problems(docs: &[Value], model: &AccessModel) -> Vec<String> {
    let mut out = Vec::new();
    // Persona groups, and the delivery pipeline's ServiceAccount (as its user name).
    let groups: BTreeSet<String> = model
        .personas
        .values()
        .filter_map(|p| p.subject())
        .collect();
    let mut roles: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for d in docs {
        match kind(d) {
            "Role" => {
                roles.insert((namespace(d).to_owned(), name(d).to_owned()), d);
            }
            "ClusterRole" => out.push(format!(
                "ClusterRole {}: Beacon grants nothing cluster-wide",
                name(d)
            )),
            "ClusterRoleBinding" => out.push(format!(
                "ClusterRoleBinding {} (to {}): Beacon binds nothing cluster-wide",
                name(d),
                d["roleRef"]["name"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }
    let mut actual: BTreeMap<String, BTreeSet<KubePermission>> = groups
        .iter()
        .map(|g| (g.clone(), BTreeSet::new()))
        .collect();
    for d in docs.iter().filter(|d| kind(d) == "RoleBinding") {
        let ns = namespace(d);
        let role_ref = &d["roleRef"];
        if role_ref["kind"] != "Role" {
            out.push(format!(
                "RoleBinding {ns}/{} refers to {} {}: only namespaced Roles may be bound",
                name(d),
                role_ref["kind"],
                role_ref["name"]
            ));
            continue;
        }
        let Some(role) = roles.get(&(
            ns.to_owned(),
            role_ref["name"].as_str().unwrap_or("").to_owned(),
        )) else {
            out.push(format!(
                "RoleBinding {ns}/{} refers to a missing Role",
                name(d)
            ));
            continue;
        };
        for s in arr(&d["subjects"]) {
            let sa_user;
            let subject = match s["kind"].as_str() {
                Some("ServiceAccount") => {
                    sa_user = format!(
                        "system:serviceaccount:{}:{}",
                        s["namespace"].as_str().unwrap_or(""),
                        s["name"].as_str().unwrap_or("")
                    );
                    sa_user.as_str()
                }
                _ => s["name"].as_str().unwrap_or(""),
            };
            if !["Group", "ServiceAccount"].contains(&s["kind"].as_str().unwrap_or(""))
                || !groups.contains(subject)
            {
                out.push(format!(
                    "RoleBinding {ns}/{} binds {} {subject}: only the model's persona groups and delivery ServiceAccount are bound",
                    name(d),
                    s["kind"]
                ));
                continue;
            }
            for rule in arr(&role["rules"]) {
                if rule.get("nonResourceURLs").is_some() || rule.get("resourceNames").is_some() {
                    out.push(format!(
                        "Role {ns}/{}: nonResourceURLs/resourceNames are not used",
                        name(role)
                    ));
                }
                for g in arr(&rule["apiGroups"]) {
                    for r in arr(&rule["resources"]) {
                        for v in arr(&rule["verbs"]) {
                            let (g, r, v) = (
                                g.as_str().unwrap_or(""),
                                r.as_str().unwrap_or(""),
                                v.as_str().unwrap_or(""),
                            );
                            if [g, r, v].iter().any(|x| x.contains('*')) {
                                out.push(format!(
                                    "Role {ns}/{}: wildcard in {g}/{r} {v}",
                                    name(role)
                                ));
                            }
                            if r == "secrets" || r.starts_with("secrets/") {
                                out.push(format!(
                                    "Role {ns}/{}: grants {v} on Secrets to {subject}",
                                    name(role)
                                ));
                            }
                            if FORBIDDEN_VERBS.contains(&v) {
                                out.push(format!(
                                    "Role {ns}/{}: grants {v} to {subject}",
                                    name(role)
                                ));
                            }
                            let toolbox_exec = r == "pods/exec"
                                && subject == ANALYSTS
                                && ns == analysts_workspace(model);
                            if ["pods/exec", "pods/attach", "pods/portforward"].contains(&r)
                                && subject != SRE
                                && !toolbox_exec
                            {
                                out.push(format!(
                                    "Role {ns}/{}: grants {r} to {subject}, only SRE may (and analysts exec in their workspace)",
                                    name(role)
                                ));
                            }
                            actual.entry(subject.to_owned()).or_default().insert((
                                ns.to_owned(),
                                g.to_owned(),
                                r.to_owned(),
                                v.to_owned(),
                            ));
                        }
                    }
                }
            }
        }
    }
    let expected = model.kube_permissions();
    for g in &groups {
        let a = actual.get(g).cloned().unwrap_or_default();
        let e = expected.get(g).cloned().unwrap_or_default();
        for p in a.difference(&e) {
            out.push(format!(
                "{g} may {} {}/{} in {}, the model does not grant it",
                p.3, p.1, p.2, p.0
            ));
        }
        for p in e.difference(&a) {
            out.push(format!(
                "{g} may not {} {}/{} in {}, the model grants it",
                p.3, p.1, p.2, p.0
            ));
        }
    }
    out
}

/// Every permission each bound subject has: subject -> {(namespace, group, resource, verb)},
/// from the rendered Roles and RoleBindings (the same walk as [`problems`], without
/// the rules).
pub fn permissions(docs: &[Value]) -> BTreeMap<String, BTreeSet<KubePermission>> {
    let mut roles: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for d in docs.iter().filter(|d| kind(d) == "Role") {
        roles.insert((namespace(d).to_owned(), name(d).to_owned()), d);
    }
    let mut out: BTreeMap<String, BTreeSet<KubePermission>> = BTreeMap::new();
    for d in docs.iter().filter(|d| kind(d) == "RoleBinding") {
        let ns = namespace(d);
        let Some(role) = roles.get(&(
            ns.to_owned(),
            d["roleRef"]["name"].as_str().unwrap_or("").to_owned(),
        )) else {
            continue;
        };
        for s in arr(&d["subjects"]) {
            let subject = if s["kind"] == "ServiceAccount" {
                format!(
                    "system:serviceaccount:{}:{}",
                    s["namespace"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or("")
                )
            } else {
                s["name"].as_str().unwrap_or("").to_owned()
            };
            let set = out.entry(subject).or_default();
            for rule in arr(&role["rules"]) {
                for g in arr(&rule["apiGroups"]) {
                    for r in arr(&rule["resources"]) {
                        for v in arr(&rule["verbs"]) {
                            set.insert((
                                ns.to_owned(),
                                g.as_str().unwrap_or("").to_owned(),
                                r.as_str().unwrap_or("").to_owned(),
                                v.as_str().unwrap_or("").to_owned(),
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}
