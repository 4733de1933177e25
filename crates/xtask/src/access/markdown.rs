//! docs/ACCESS.md: the access model as tables for people.

use std::fmt::Write as _;

use platform::access::AccessModel;

pub const PRIVILEGES: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"];

pub fn render(model: &AccessModel) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {} access matrix\n", super::display_name(model));
    let _ = writeln!(out, "{}\n{}\n", super::GENERATED, super::CHECKED);
    let _ = writeln!(
        out,
        "## Personas\n\n| persona | kind | group or ServiceAccount | API scopes | database role | description |\n| --- | --- | --- | --- | --- | --- |"
    );
    for (name, p) in &model.personas {
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {} |",
            p.kind,
            p.subject().as_deref().unwrap_or("–"),
            if p.api_scopes.is_empty() {
                "–".to_owned()
            } else {
                p.api_scopes.join(", ")
            },
            p.db_role.as_deref().unwrap_or("–"),
            p.description
        );
    }
    let _ = writeln!(
        out,
        "\n## Components and identities\n\n| component | namespace | identity | ports | database role |\n| --- | --- | --- | --- | --- |"
    );
    for (name, c) in &model.components {
        let ports = c
            .ports
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {name} | {} | `{}` | {ports}{} | {} |",
            c.namespace,
            model.spiffe_id(name).unwrap_or_default(),
            if c.loopback_only {
                " (loopback only)"
            } else {
                ""
            },
            c.db_role.as_deref().unwrap_or("none")
        );
    }
    let _ = writeln!(
        out,
        "\n## Network flows (everything else is denied)\n\n| from | to | port | authentication |\n| --- | --- | --- | --- |"
    );
    for f in &model.flows {
        out.push_str(&flow_row(f, model.components[&f.to].ports[&f.port]));
    }
    super::overlay::render_markdown(model, &mut out);
    let _ = writeln!(
        out,
        "\n## gRPC callers\n\n| server | allowed caller identities |\n| --- | --- |"
    );
    for server in model.grpc.keys() {
        let _ = writeln!(
            out,
            "| {server} | {} |",
            model
                .allowed_grpc_callers(server)
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let roles: Vec<&String> = model.database.roles.keys().collect();
    let _ = write!(
        out,
        "\n## Database privileges\n\nS = SELECT, I = INSERT, U = UPDATE, D = DELETE, T = TRUNCATE. Nothing else is granted; objects belong to the login-less `{}`.\n\n| table |",
        model.database.owner
    );
    for r in &roles {
        let _ = write!(out, " {r} |");
    }
    let _ = write!(out, "\n| --- |");
    for _ in &roles {
        let _ = write!(out, " --- |");
    }
    let _ = writeln!(out);
    for table in &model.database.tables {
        let rls = if model.database.tenant_tables.contains(table) {
            " (RLS)"
        } else {
            ""
        };
        let _ = write!(out, "| {table}{rls} |");
        for r in &roles {
            let cell: String = PRIVILEGES
                .iter()
                .filter(|p| model.grants(r, table, p))
                .map(|p| &p[..1])
                .collect();
            let _ = write!(out, " {} |", if cell.is_empty() { "–" } else { &cell });
        }
        let _ = writeln!(out);
    }
    for (role, spec) in &model.database.roles {
        if !spec.functions.is_empty() {
            let _ = writeln!(
                out,
                "\n`{role}` may also execute: {}.",
                spec.functions
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    render_api(model, &mut out);
    let _ = writeln!(
        out,
        "\n## Kubernetes permissions of people\n\nNamespaced Roles bound to each persona's group (the delivery pipeline's: to its ServiceAccount); nothing else (no cluster-scoped grant, no Secrets, no wildcard; exec and port-forward for SRE only). In the protected namespaces ({}), which hold signing keys or database credentials, only the delivery identity creates or changes what a workload runs: a person's grant that writes workloads there is narrowed by the admission policy it names (k8s/base/admission).\n\n| persona | group or ServiceAccount | namespaces | resources | verbs | narrowed by |\n| --- | --- | --- | --- | --- | --- |",
        model.kubernetes.protected_namespaces.join(", ")
    );
    for g in &model.kubernetes.grants {
        let group = model
            .personas
            .get(&g.persona)
            .and_then(|p| p.subject())
            .unwrap_or_else(|| "–".to_owned());
        let _ = writeln!(
            out,
            "| {} | {group} | {} | {} | {} | {} |",
            g.persona,
            g.namespaces.join(", "),
            g.resources.join(", "),
            g.verbs.join(", "),
            g.admission.as_deref().unwrap_or("–")
        );
    }
    let _ = writeln!(
        out,
        "\nNamespaces: {}. A persona absent from a namespace above can do nothing there.",
        model.kubernetes.namespaces.join(", ")
    );
    out
}

/// The API permission matrix: every route, the scope it needs, and which personas
/// hold that scope.
/// A row of a flows table: from, to, port, authentication.
pub(super) fn flow_row(f: &platform::access::Flow, port: u16) -> String {
    format!(
        "| {} | {} | {} ({port}) | {} |\n",
        f.from,
        f.to,
        f.port,
        f.auth.as_deref().unwrap_or("–")
    )
}

fn render_api(model: &AccessModel, out: &mut String) {
    let personas: Vec<&String> = model
        .personas
        .iter()
        .filter(|(_, p)| !p.api_scopes.is_empty())
        .map(|(name, _)| name)
        .collect();
    let _ = write!(
        out,
        "\n## API permissions\n\nEvery route of the public API and what its caller needs. The api builds its router from a table that a test compares with this list in both directions; the tenant always comes from the token, so another tenant's ids answer 404. ✓ = allowed.\n\n| method | path | needs |"
    );
    for p in &personas {
        let _ = write!(out, " {p} |");
    }
    let _ = write!(out, "\n| --- | --- | --- |");
    for _ in &personas {
        let _ = write!(out, " --- |");
    }
    let _ = writeln!(out);
    for route in &model.api.routes {
        let _ = write!(
            out,
            "| {} | `{}` | {} |",
            route.method, route.path, route.permission
        );
        for p in &personas {
            let allowed = route.permission == platform::access::PUBLIC
                || model.personas[*p].api_scopes.contains(&route.permission);
            let _ = write!(out, " {} |", if allowed { "✓" } else { "–" });
        }
        let _ = writeln!(out);
    }
}
