//! The new service's entries in the access model.

use std::fmt::Write as _;

use anyhow::Context;

use super::{Kind, Service};

/// Adds `"item"` to the TOML array that starts on the line `key = [`.
fn add_to_list(text: &str, key: &str, item: &str) -> anyhow::Result<String> {
    let start = text
        .find(&format!("\n{key} = ["))
        .with_context(|| format!("the model has no `{key} = [` line"))?
        + 1;
    let close = start + text[start..].find(']').context("unclosed list")?;
    let before = text[..close].trim_end();
    let sep = if before.ends_with('[') {
        ""
    } else if before.ends_with(',') {
        " "
    } else {
        ", "
    };
    Ok(format!("{before}{sep}\"{item}\"{}", &text[before.len()..]))
}

/// The model with the new service's entries: component and image appended as tables,
/// flows appended, the namespace added wherever every namespace is listed and wherever
/// the team's grants list their namespaces, the schema and table to the database's.
pub(super) fn model_text(text: &str, service: &Service<'_>) -> anyhow::Result<String> {
    let (model, options, namespace) = (service.model, service.options, &service.namespace);
    let name = options.name.as_str();
    let all = format!(
        "namespaces = [{}]",
        model
            .kubernetes
            .namespaces
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    anyhow::ensure!(
        text.contains(&all),
        "the model does not list its namespaces as `{all}`"
    );
    let with_new = format!("{}, \"{namespace}\"]", &all[..all.len() - 1]);
    let mut out = text.replace(&all, &with_new);
    // The team's grants: `persona = "<team>"` followed by its namespaces line.
    let marker = format!("persona = \"{}\"\nnamespaces = [", options.team);
    anyhow::ensure!(
        out.contains(&marker),
        "persona {} has no Kubernetes grants to extend",
        options.team
    );
    let mut rebuilt = String::new();
    let mut rest = out.as_str();
    while let Some(i) = rest.find(&marker) {
        let end = i + marker.len() + rest[i + marker.len()..].find(']').unwrap_or(0);
        let _ = write!(rebuilt, "{}, \"{namespace}\"", &rest[..end]);
        rest = &rest[end..];
    }
    rebuilt.push_str(rest);
    out = rebuilt;
    let schema = service.snake();
    if service.role.is_some() {
        let table = format!("{schema}.items");
        out = add_to_list(&out, "schemas", &schema)?;
        out = add_to_list(&out, "tables", &table)?;
        out = add_to_list(&out, "tenant_tables", &table)?;
    }

    let ports = match service.port {
        Some((port, number)) => format!("{{ {port} = {number}, admin = {} }}", service.admin),
        None => format!("{{ admin = {} }}", service.admin),
    };
    let _ = write!(
        out,
        "
# ------------------------------------------------------------ {name} (new-service)
[components.{name}]
namespace = \"{namespace}\"
image = \"{name}\"
service_account = \"{name}\"
ports = {ports}
"
    );
    if let Some(role) = &service.role {
        let _ = writeln!(out, "db_role = \"{role}\"");
    }
    let _ = write!(
        out,
        "
[images.{name}]
package = \"{name}\"
binary = \"{name}\"
"
    );
    if let Some(role) = &service.role {
        let _ = write!(
            out,
            "
[database.roles.{role}]
login = true
settings = {{ idle_in_transaction_session_timeout = \"10s\", client_connection_check_interval = \"1s\" }}
grants = {{ \"{schema}.items\" = [\"SELECT\", \"INSERT\", \"UPDATE\", \"DELETE\"] }}
"
        );
    }
    if options.kind == Kind::Grpc {
        let callers = options
            .called_by
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(out, "\n[grpc.{name}]\nallowed_callers = [{callers}]\n");
    }
    let mut flows: Vec<(String, String, String)> = Vec::new();
    if options.public {
        flows.push(("internet".into(), name.into(), "http".into()));
    }
    if let Some((port, _)) = service.port {
        for c in &options.called_by {
            flows.push((c.clone(), name.into(), port.into()));
        }
    }
    for c in &options.calls {
        let port = model.components[c]
            .ports
            .keys()
            .find(|p| *p != "admin")
            .with_context(|| format!("{c} has no port to call"))?;
        flows.push((name.into(), c.clone(), port.clone()));
    }
    if service.role.is_some() {
        flows.push((name.into(), "postgres".into(), "postgres".into()));
    }
    flows.push((name.into(), "otel-collector".into(), "otlp".into()));
    // Prometheus scrapes its admin port through the generated headless admin Service.
    flows.push(("prometheus".into(), name.into(), "admin".into()));
    for (from, to, port) in flows {
        let _ = write!(
            out,
            "\n[[flows]]\nfrom = \"{from}\"\nto = \"{to}\"\nport = \"{port}\"\n"
        );
    }
    Ok(out)
}
