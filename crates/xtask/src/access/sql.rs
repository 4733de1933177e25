//! The database layer: roles (`crates/db/src/roles.sql`, and their names as Rust
//! constants in `crates/db/src/roles.rs`) and grants (`crates/db/src/grants.sql`).
//!
//! Migrations are immutable history: they create schemas, tables, functions and
//! row-level-security policies. Who may use those objects is not history but the
//! model's current word, so `grants.sql` is applied by `db::migrate` after every
//! migration run: it revokes every privilege the model's roles hold on Beacon's schemas,
//! then grants exactly the model's, in one transaction. A GRANT left in an old migration
//! is therefore harmless, and a grant removed from the model is really removed.

use std::fmt::Write as _;

use platform::access::AccessModel;

use super::{Generated, header, markdown::PRIVILEGES};

pub fn files(model: &AccessModel) -> Vec<Generated> {
    vec![
        Generated::new("crates/db/src/roles.sql", roles_sql(model)),
        Generated::new("crates/db/src/roles.rs", roles_rs(model)),
        Generated::new("crates/db/src/grants.sql", grants_sql(model)),
    ]
}

/// Roles that log in: the migrator, then every login role of the model.
fn login_roles(model: &AccessModel) -> Vec<&str> {
    std::iter::once(model.database.migrator.as_str())
        .chain(
            model
                .database
                .roles
                .iter()
                .filter(|(_, r)| r.login)
                .map(|(name, _)| name.as_str()),
        )
        .collect()
}

/// Database roles of components (not of people), each once.
fn component_roles(model: &AccessModel) -> Vec<&str> {
    let mut roles: Vec<&str> = model
        .components
        .values()
        .filter_map(|c| c.db_role.as_deref())
        .collect();
    roles.sort_unstable();
    roles.dedup();
    roles
}

fn roles_sql(model: &AccessModel) -> String {
    let db = &model.database;
    let mut out = header("--");
    out.push_str(
        "--
-- Cluster-wide roles, created idempotently (roles outlive any one database).
-- Run by an administrator (a superuser, or the bootstrap Job in Kubernetes); never by a
-- component. Passwords are set separately, from files, never written here.
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM (VALUES\n",
    );
    let mut roles = vec![(db.owner.as_str(), false), (db.migrator.as_str(), true)];
    roles.extend(db.roles.iter().map(|(name, r)| (name.as_str(), r.login)));
    let values: Vec<String> = roles
        .iter()
        .map(|(name, login)| format!("        ('{name}', {login})"))
        .collect();
    out.push_str(&values.join(",\n"));
    let _ = write!(
        out,
        "
    ) AS t(name, login)
    LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r.name) THEN
            EXECUTE format('CREATE ROLE %I %s', r.name, CASE WHEN r.login THEN 'LOGIN' ELSE 'NOLOGIN' END);
        END IF;
        EXECUTE format('ALTER ROLE %I NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS', r.name);
    END LOOP;
END
$$;
-- The migrator acts as the owner: objects it creates belong to {owner}, which
-- cannot log in. Component roles are not members of anything.
GRANT {owner} TO {migrator};
ALTER ROLE {migrator} SET role = '{owner}';
",
        owner = db.owner,
        migrator = db.migrator
    );
    // Per setting, every role that has it, in the order of the model's roles.
    let mut names: Vec<&String> = db.roles.values().flat_map(|r| r.settings.keys()).collect();
    names.sort_unstable();
    names.dedup();
    if !names.is_empty() {
        out.push_str(
            "-- Session settings of the roles ([database.roles.*] settings in the model).\n",
        );
    }
    for name in names {
        for (role, spec) in &db.roles {
            if let Some(value) = spec.settings.get(name) {
                let _ = writeln!(out, "ALTER ROLE {role} SET {name} = '{value}';");
            }
        }
    }
    for role in group_roles(model) {
        if let Some(limit) = db.roles[role].member_connection_limit {
            let _ = writeln!(
                out,
                "-- Sessions each member of {role} may hold at once: {limit} (`db::bootstrap_roles` gives every
-- member its group's limit and settings: PostgreSQL applies only a login role's own).
ALTER ROLE {role} CONNECTION LIMIT {limit};"
            );
        }
    }
    out
}

/// Group roles (`login = false`): people log in as members of them.
fn group_roles(model: &AccessModel) -> Vec<&str> {
    model
        .database
        .roles
        .iter()
        .filter(|(_, r)| !r.login)
        .map(|(name, _)| name.as_str())
        .collect()
}

fn rust_array(name: &str, doc: &str, items: &[&str]) -> String {
    let mut out = format!("/// {doc}\npub const {name}: [&str; {}] = [\n", items.len());
    for item in items {
        let _ = writeln!(out, "    \"{item}\",");
    }
    out.push_str("];\n");
    out
}

fn roles_rs(model: &AccessModel) -> String {
    let db = &model.database;
    let mut out = header("//");
    let _ = write!(
        out,
        "
/// The login-less owner of every object.
pub const OWNER: &str = \"{}\";
/// The role migrations connect as; its sessions act as [`OWNER`].
pub const MIGRATOR_ROLE: &str = \"{}\";
",
        db.owner, db.migrator
    );
    out.push_str(&rust_array(
        "LOGIN_ROLES",
        "Roles that log in: the migrator and one per component.",
        &login_roles(model),
    ));
    out.push_str(&rust_array(
        "GROUP_ROLES",
        "Group roles, for people: each person logs in as a member (see `add_member`).",
        &group_roles(model),
    ));
    if let Some(role) = model
        .personas
        .get("analyst")
        .and_then(|p| p.db_role.as_deref())
    {
        let _ = write!(
            out,
            "/// The analysts' group role (the `analyst` persona's `db_role`).\npub const ANALYST_ROLE: &str = \"{role}\";\n"
        );
    }
    out.push_str(&rust_array(
        "COMPONENT_ROLES",
        "The database roles of components (`db_role` of `[components.*]`).",
        &component_roles(model),
    ));
    out
}

/// `app.login_lookup(text)` -> `app`.
fn schema_of(object: &str) -> &str {
    object.split_once('.').map_or(object, |(schema, _)| schema)
}

fn grants_sql(model: &AccessModel) -> String {
    let db = &model.database;
    let schemas = db.schemas.join(", ");
    let roles = db.roles.keys().cloned().collect::<Vec<_>>().join(", ");
    let mut out = header("--");
    let _ = write!(
        out,
        "--
-- Who may use {product}'s objects. Applied by db::migrate after the migrations, in one
-- transaction, as {owner} (the owner of every object): first every privilege the model's
-- roles hold in the schemas {schemas} is revoked, then exactly the model's are granted.
-- Migrations create objects and row-level-security policies; they grant nothing that
-- survives this file. crates/db/tests/access_model.rs tries every role x table x
-- operation on a live database against the model, independently of this generator.

REVOKE ALL ON SCHEMA {schemas} FROM {roles};
REVOKE ALL ON ALL TABLES IN SCHEMA {schemas} FROM {roles};
REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schemas} FROM {roles};
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schemas} FROM {roles};
",
        product = super::display_name(model),
        owner = db.owner
    );
    for (role, spec) in &db.roles {
        let _ = writeln!(out, "\n-- {role}");
        let mut used: Vec<&str> = spec
            .grants
            .keys()
            .map(String::as_str)
            .chain(spec.functions.iter().map(String::as_str))
            .map(schema_of)
            .collect();
        used.sort_unstable();
        used.dedup();
        // Schemas in the model's order.
        for schema in db.schemas.iter().filter(|s| used.contains(&s.as_str())) {
            let _ = writeln!(out, "GRANT USAGE ON SCHEMA {schema} TO {role};");
        }
        for table in db.tables.iter().filter(|t| spec.grants.contains_key(*t)) {
            let privileges: Vec<&str> = PRIVILEGES
                .iter()
                .copied()
                .filter(|p| model.grants(role, table, p))
                .collect();
            if !privileges.is_empty() {
                let _ = writeln!(out, "GRANT {} ON {table} TO {role};", privileges.join(", "));
            }
        }
        if !spec.functions.is_empty() {
            let _ = writeln!(
                out,
                "GRANT EXECUTE ON FUNCTION {} TO {role};",
                spec.functions.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_follow_the_model() {
        let model = AccessModel::load();
        let sql = grants_sql(&model);
        assert!(sql.contains("GRANT INSERT ON raw.events TO beacon_loader;\n"));
        assert!(sql.contains("GRANT USAGE ON SCHEMA raw TO beacon_loader;\n"));
        assert!(!sql.contains("ON SCHEMA app TO beacon_loader"));
        assert!(sql.contains("GRANT EXECUTE ON FUNCTION app.login_lookup(text)"));
        let roles = roles_rs(&model);
        assert!(
            roles.contains("pub const LOGIN_ROLES: [&str; 6]")
                && roles.contains("pub const GROUP_ROLES: [&str; 2]"),
            "{roles}"
        );
        let roles_sql = roles_sql(&model);
        assert!(roles_sql.contains("('beacon_analyst', false)"));
        // A group's members get its limit (and settings) from db::bootstrap_roles.
        assert!(
            roles_sql.contains("ALTER ROLE beacon_analyst CONNECTION LIMIT 3;\n"),
            "{roles_sql}"
        );
    }
}
