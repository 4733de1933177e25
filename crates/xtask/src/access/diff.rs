//! `cargo xtask access diff <git-rev>`: what a change of the access model opens and
//! closes compared with another revision, as a Markdown table for reviewers (CI writes
//! it to a pull request's job summary).
//!
//! Both models are expanded into facts, one per thing someone may reach or do (a network
//! flow, a role's privilege on a table, a persona group's verb on a resource in a
//! namespace, a route a persona may call, an identity a gRPC server accepts) and the two
//! sets are compared. Protections are facts too (row-level security forced on a table):
//! removing one opens access, adding one closes it.

use std::{collections::BTreeSet, fmt::Write as _, path::Path, process::Command};

use anyhow::Context;
use platform::access::{AccessModel, PUBLIC};

use super::markdown::PRIVILEGES;

/// The model's path inside the repository.
pub const MODEL_PATH: &str = "security/access-model.toml";

/// One fact: (layer, what it allows), and whether it grants access or protects.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Fact {
    pub layer: &'static str,
    pub what: String,
    /// A protection (RLS): removing it opens.
    pub protection: bool,
}

fn grant(layer: &'static str, what: String) -> Fact {
    Fact {
        layer,
        what,
        protection: false,
    }
}

/// Every fact of `model`.
pub fn facts(model: &AccessModel) -> BTreeSet<Fact> {
    let mut out = BTreeSet::new();
    let workload = |component: &str| -> String {
        match model.components.get(component) {
            Some(c) => format!(
                "{}/{}",
                c.namespace,
                model.pod_of(component).unwrap_or(component)
            ),
            None => component.to_owned(),
        }
    };
    for f in &model.flows {
        let port = model.components[&f.to].ports[&f.port];
        out.insert(grant(
            "network",
            format!(
                "{} → {}:{port} ({} → {} {})",
                workload(&f.from),
                workload(&f.to),
                f.from,
                f.to,
                f.port
            ),
        ));
    }
    let db = &model.database;
    for (role, spec) in &db.roles {
        for table in &db.tables {
            for p in PRIVILEGES {
                if model.grants(role, table, p) {
                    out.insert(grant("database", format!("{role} {p} {table}")));
                }
            }
        }
        for function in &spec.functions {
            out.insert(grant("database", format!("{role} EXECUTE {function}")));
        }
    }
    for table in &db.tenant_tables {
        out.insert(Fact {
            layer: "database",
            what: format!("row-level security forced on {table}"),
            protection: true,
        });
    }
    for (group, permissions) in model.kube_permissions() {
        for (ns, api_group, resource, verb) in permissions {
            let resource = if api_group.is_empty() {
                resource
            } else {
                format!("{api_group}/{resource}")
            };
            out.insert(grant(
                "persona (Kubernetes)",
                format!("{group} may {verb} {resource} in {ns}"),
            ));
        }
    }
    for (name, p) in &model.personas {
        if let Some(role) = &p.db_role {
            out.insert(grant(
                "persona (database)",
                format!("{name} acts as {role}"),
            ));
        }
    }
    for route in &model.api.routes {
        let endpoint = format!("{} {}", route.method, route.path);
        if route.permission == PUBLIC {
            out.insert(grant("api", format!("{endpoint}: anyone (public)")));
            continue;
        }
        for (name, p) in &model.personas {
            if p.api_scopes.contains(&route.permission) {
                out.insert(grant(
                    "api",
                    format!("{endpoint}: {name} ({})", route.permission),
                ));
            }
        }
    }
    for server in model.grpc.keys() {
        for id in model.allowed_grpc_callers(server) {
            out.insert(grant("workload identity", format!("{server} accepts {id}")));
        }
    }
    out
}

/// One row of the table: `opens` or `closes`, the layer, the fact.
pub type Row = (&'static str, &'static str, String);

/// What `new` opens and closes compared with `old`: opening rows first.
pub fn changes(old: &AccessModel, new: &AccessModel) -> Vec<Row> {
    let (old, new) = (facts(old), facts(new));
    let mut rows: Vec<Row> = Vec::new();
    for f in new.difference(&old) {
        let verb = if f.protection { "closes" } else { "opens" };
        rows.push((verb, f.layer, f.what.clone()));
    }
    for f in old.difference(&new) {
        let verb = if f.protection { "opens" } else { "closes" };
        let what = if f.protection {
            format!("no longer: {}", f.what)
        } else {
            f.what.clone()
        };
        rows.push((verb, f.layer, what));
    }
    // "opens" before "closes", then by layer and fact.
    rows.sort_by(|a, b| b.0.cmp(a.0).then(a.1.cmp(b.1)).then(a.2.cmp(&b.2)));
    rows
}

/// The Markdown report for a comparison with `rev`.
pub fn markdown(rev: &str, rows: &[Row]) -> String {
    let mut out = format!("### Access changes against `{rev}`\n\n");
    if rows.is_empty() {
        out.push_str(
            "None: this change opens and closes nothing in `security/access-model.toml`.\n",
        );
        return out;
    }
    out.push_str("| change | layer | access |\n| --- | --- | --- |\n");
    for (verb, layer, what) in rows {
        let what = what.replace('|', "\\|");
        let _ = writeln!(out, "| **{verb}** | {layer} | {what} |");
    }
    out
}

/// The model as committed at `rev` in the repository at `root`.
pub fn model_at(root: &Path, rev: &str) -> anyhow::Result<AccessModel> {
    let output = Command::new("git")
        .current_dir(root)
        .args(["show", &format!("{rev}:{MODEL_PATH}")])
        .output()
        .context("running git")?;
    anyhow::ensure!(
        output.status.success(),
        "git show {rev}:{MODEL_PATH}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    AccessModel::parse(&String::from_utf8(output.stdout)?)
        .with_context(|| format!("the model at {rev}"))
}

/// `cargo xtask access diff REV`: the working tree's model against `rev`'s.
pub fn report(root: &Path, rev: &str) -> anyhow::Result<String> {
    let old = model_at(root, rev)?;
    let text = std::fs::read_to_string(root.join(MODEL_PATH))
        .with_context(|| format!("reading {MODEL_PATH}"))?;
    let new = AccessModel::parse(&text).context("the working tree's model")?;
    Ok(markdown(rev, &changes(&old, &new)))
}

#[cfg(test)]
mod tests {
    use platform::access::MODEL_TOML;

    use super::*;

    fn diff(edit: impl Fn(&str) -> String) -> Vec<Row> {
        let old = AccessModel::parse(MODEL_TOML).unwrap();
        let edited = edit(MODEL_TOML);
        assert_ne!(edited, MODEL_TOML, "the scripted edit changed nothing");
        changes(&old, &AccessModel::parse(&edited).unwrap())
    }

    fn row(verb: &'static str, layer: &'static str, what: &str) -> Row {
        (verb, layer, what.to_owned())
    }

    #[test]
    fn the_same_model_changes_nothing() {
        let model = AccessModel::load();
        assert_eq!(changes(&model, &model), vec![]);
        assert!(markdown("main", &[]).contains("None"));
    }

    #[test]
    fn adding_a_flow_opens_exactly_that_flow() {
        let rows = diff(|m| {
            format!("{m}\n[[flows]]\nfrom = \"dashboard\"\nto = \"analytics\"\nport = \"grpc\"\n")
        });
        assert_eq!(
            rows,
            vec![row(
                "opens",
                "network",
                "beacon-dashboard/dashboard → beacon-analytics/analytics:50051 (dashboard → analytics grpc)"
            )]
        );
    }

    #[test]
    fn widening_a_grant_opens_exactly_that_privilege() {
        let rows = diff(|m| {
            m.replace(
                "grants = { \"raw.events\" = [\"INSERT\"] }",
                "grants = { \"raw.events\" = [\"INSERT\", \"SELECT\"] }",
            )
        });
        assert_eq!(
            rows,
            vec![row("opens", "database", "beacon_loader SELECT raw.events")]
        );
    }

    #[test]
    fn adding_a_persona_verb_opens_exactly_that_permission() {
        let rows = diff(|m| {
            m.replace(
                "resources = [\"batch/jobs\"]\nverbs = [\"get\", \"list\", \"watch\", \"delete\"]",
                "resources = [\"batch/jobs\"]\nverbs = [\"get\", \"list\", \"watch\", \"delete\", \"update\"]",
            )
        });
        assert_eq!(
            rows,
            vec![row(
                "opens",
                "persona (Kubernetes)",
                "beacon:analysts may update batch/jobs in beacon-pipeline"
            )]
        );
    }

    #[test]
    fn dropping_rls_opens_and_narrowing_closes() {
        let rows = diff(|m| {
            m.replace(
                "tenant_tables = [\n  \"app.users\", ",
                "tenant_tables = [\n  ",
            )
            .replace("allowed_callers = [\"api\"]", "allowed_callers = []")
            .replace(
                "{ method = \"GET\", path = \"/v1/audit-log\", permission = \"tenant:admin\" },\n",
                "",
            )
        });
        assert_eq!(
            rows,
            vec![
                row(
                    "opens",
                    "database",
                    "no longer: row-level security forced on app.users"
                ),
                row(
                    "closes",
                    "api",
                    "GET /v1/audit-log: tenant_admin (tenant:admin)"
                ),
                row(
                    "closes",
                    "workload identity",
                    "analytics accepts spiffe://beacon.local/ns/beacon-api/sa/api"
                ),
            ]
        );
        let md = markdown("origin/main", &rows);
        assert!(
            md.contains(
                "| **opens** | database | no longer: row-level security forced on app.users |"
            ),
            "{md}"
        );
    }

    /// The git plumbing: a scripted commit in a scratch repository, compared with its parent.
    #[test]
    fn diff_against_a_revision_of_a_repository() {
        let dir = std::env::temp_dir().join(format!("beacon-diff-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("security")).unwrap();
        let git = |args: &[&str]| {
            let status = Command::new("git")
                .current_dir(&dir)
                .args(["-c", "user.name=t", "-c", "user.email=t@localhost"])
                .args(args)
                .output()
                .unwrap();
            assert!(status.status.success(), "git {args:?}: {status:?}");
        };
        git(&["init", "-q"]);
        std::fs::write(dir.join(MODEL_PATH), MODEL_TOML).unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "model"]);
        let widened = MODEL_TOML.replace(
            "grants = { \"output.daily_campaign_facts\" = [\"SELECT\"], ",
            "grants = { \"output.daily_campaign_facts\" = [\"SELECT\"], \"raw.events\" = [\"SELECT\"], ",
        );
        std::fs::write(dir.join(MODEL_PATH), &widened).unwrap();
        let report = report(&dir, "HEAD").unwrap();
        assert_eq!(
            report
                .lines()
                .filter(|l| l.starts_with("| **"))
                .collect::<Vec<_>>(),
            vec!["| **opens** | database | beacon_analytics SELECT raw.events |"],
            "{report}"
        );
        assert!(super::report(&dir, "no-such-rev").is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
