//! The persona groups' Roles and RoleBindings: per namespace, and once in the
//! namespace-baseline component for personas granted the same everywhere (SRE).

use std::fmt::Write as _;

use platform::access::{AccessModel, KubeGrant, split_resource};

use super::{metadata, yaml_file};

/// `beacon:product-developers` -> `product-developers`.
pub fn role_name(group: &str) -> &str {
    group.rsplit(':').next().unwrap_or(group)
}

/// Personas granted exactly the same in every namespace (SRE): their Roles belong to
/// the namespace-baseline component, written once.
fn baseline_personas(model: &AccessModel) -> Vec<&str> {
    let every = |namespaces: &[String]| {
        model
            .kubernetes
            .namespaces
            .iter()
            .all(|n| namespaces.contains(n))
    };
    model
        .personas
        .iter()
        .filter(|(name, p)| {
            let mut grants = model
                .kubernetes
                .grants
                .iter()
                .filter(|g| &g.persona == *name);
            p.subject().is_some()
                && grants.clone().next().is_some()
                && grants.all(|g| every(&g.namespaces))
        })
        .map(|(name, _)| name.as_str())
        .collect()
}

/// The Role and RoleBinding of `persona` in `ns` ("" in the component), from `grants`.
fn persona_role(model: &AccessModel, persona: &str, ns: &str, grants: &[&KubeGrant]) -> String {
    let p = &model.personas[persona];
    let subject = p.subject().unwrap_or_else(|| persona.to_owned());
    let role = role_name(&subject);
    let mut out = String::from("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n");
    metadata(&mut out, model, role, ns, None);
    out.push_str("rules:\n");
    for g in grants {
        // One rule per API group, in the order the grant names them.
        let mut by_group: Vec<(&str, Vec<&str>)> = Vec::new();
        for r in &g.resources {
            let (api_group, resource) = split_resource(r);
            match by_group.iter_mut().find(|(ag, _)| *ag == api_group) {
                Some((_, list)) => list.push(resource),
                None => by_group.push((api_group, vec![resource])),
            }
        }
        for (api_group, resources) in by_group {
            let quoted = if api_group.is_empty() {
                "''"
            } else {
                api_group
            };
            let _ = writeln!(out, "- apiGroups:\n  - {quoted}\n  resources:");
            for r in resources {
                let _ = writeln!(out, "  - {r}");
            }
            out.push_str("  verbs:\n");
            for v in &g.verbs {
                let _ = writeln!(out, "  - {v}");
            }
        }
    }
    out.push_str("\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n");
    metadata(&mut out, model, role, ns, None);
    let subject = match p
        .service_account
        .as_deref()
        .and_then(|sa| sa.split_once('/'))
    {
        Some((sa_ns, sa)) if p.group.is_none() => {
            format!("- kind: ServiceAccount\n  name: {sa}\n  namespace: {sa_ns}\n")
        }
        _ => format!("- kind: Group\n  apiGroup: rbac.authorization.k8s.io\n  name: {subject}\n"),
    };
    let _ = write!(
        out,
        "subjects:
{subject}roleRef:
  kind: Role
  apiGroup: rbac.authorization.k8s.io
  name: {role}
"
    );
    out
}

const RBAC_INTRO: &str =
    "From [kubernetes] in the model: namespaced only, no wildcards, no Secrets, port-forward
for SRE only, exec for SRE and (into their toolbox) analysts. tests/k8s recomputes each
group's permissions from the rendered Roles and bindings and compares them with the model.";

/// The Roles of the personas that are not in the baseline, in namespace `ns`.
pub(super) fn rbac(model: &AccessModel, ns: &str) -> String {
    let baseline = baseline_personas(model);
    let docs: Vec<String> = model
        .personas
        .iter()
        .filter(|(name, p)| p.subject().is_some() && !baseline.contains(&name.as_str()))
        .filter_map(|(name, _)| {
            let grants: Vec<&KubeGrant> = model
                .kubernetes
                .grants
                .iter()
                .filter(|g| &g.persona == name && g.namespaces.iter().any(|n| n == ns))
                .collect();
            (!grants.is_empty()).then(|| persona_role(model, name, ns, &grants))
        })
        .collect();
    let intro = format!(
        "The persona groups' Roles in {ns} (those granted the same everywhere are in the
namespace-baseline component).
{RBAC_INTRO}"
    );
    yaml_file(&intro, &docs)
}

/// The Roles of the personas granted the same in every namespace, for the component.
pub(super) fn baseline_rbac(model: &AccessModel) -> String {
    let docs: Vec<String> = baseline_personas(model)
        .into_iter()
        .map(|name| {
            let grants: Vec<&KubeGrant> = model
                .kubernetes
                .grants
                .iter()
                .filter(|g| g.persona == name)
                .collect();
            persona_role(model, name, "", &grants)
        })
        .collect();
    let intro = format!(
        "The Roles of the persona groups granted the same in every namespace, part of every
namespace's baseline.
{RBAC_INTRO}"
    );
    yaml_file(&intro, &docs)
}
