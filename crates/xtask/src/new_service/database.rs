//! A service's own database: its migration (schema and tenant table) and its
//! role's password in the bootstrap Job.

use std::path::Path;

use anyhow::Context;

use super::Service;

/// The next migration version: one past the highest in `dir`.
pub(super) fn next_migration(dir: &Path) -> anyhow::Result<u64> {
    let mut highest = 0;
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        if let Some(version) = name
            .to_str()
            .and_then(|n| n.split('_').next())
            .and_then(|v| v.parse::<u64>().ok())
        {
            highest = highest.max(version);
        }
    }
    Ok(highest + 1)
}

pub(super) fn migration(service: &Service<'_>, role: &str) -> String {
    let (db, schema) = (&service.model.database, service.snake());
    format!(
        "-- {name}'s own data (scaffolded by `cargo xtask new-service --database`).
-- Runs as {migrator} acting as {owner}. The grants are generated from
-- security/access-model.toml ([database.roles.{role}]) into crates/db/src/grants.sql.
-- Every row belongs to one tenant: row-level security is enabled and forced, and
-- {role} sees only the tenant its transaction names (platform::db::begin_for_tenant).
CREATE SCHEMA {schema};

CREATE TABLE {schema}.items (
    tenant_id   uuid NOT NULL REFERENCES app.tenants (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    body        text NOT NULL CHECK (length(body) BETWEEN 1 AND 1000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

ALTER TABLE {schema}.items ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.items FORCE ROW LEVEL SECURITY;
CREATE POLICY owner_all ON {schema}.items TO {owner} USING (true);
CREATE POLICY {schema}_tenant ON {schema}.items TO {role}
    USING (tenant_id = app.current_tenant())
    WITH CHECK (tenant_id = app.current_tenant());
",
        name = service.name,
        migrator = db.migrator,
        owner = db.owner,
    )
}

/// The bootstrap Job with the new role's password file (`<ROLE>_PASSWORD_FILE`), next to
/// the other login roles'.
pub(super) fn bootstrap_password(text: &str, role: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let i = lines
        .iter()
        .rposition(|l| {
            let l = l.trim();
            l.starts_with("- name: ") && l.ends_with("_PASSWORD_FILE") && !l.contains("DATABASE_")
        })
        .context("the bootstrap Job names no role's password file")?;
    let (name_line, value_line) = (lines[i], *lines.get(i + 1).context("no value")?);
    let old_var = name_line.trim().trim_start_matches("- name: ");
    let old_role = value_line
        .rsplit('/')
        .next()
        .context("the password file has no path")?;
    let new = [
        name_line.replace(old_var, &format!("{}_PASSWORD_FILE", role.to_uppercase())),
        value_line.replace(&format!("/{old_role}"), &format!("/{role}")),
    ];
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    out.splice(i + 2..i + 2, new);
    Ok(out.join("\n") + "\n")
}
