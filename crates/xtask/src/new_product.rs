//! `cargo xtask new-product NAME`: makes this working tree a product of its own.
//!
//! The product's name is `product` in security/access-model.toml, and every generated
//! layer derives its names from it (namespaces, persona groups, database roles, images,
//! SPIFFE ids from `trust_domain`). The hand-written files name it too: workload YAML,
//! migrations (role names), the services' constants (trust domain, tenant setting,
//! cookie names, token issuer and audience), environment variables (`BEACON_*`), crate
//! and binary names (`beacon-e2e`, `beacon-db`), the gRPC package, the docs. The command
//! renames all of them at once, case by case (`beacon` → `acme`, `Beacon` → `Acme`,
//! `BEACON` → `ACME`), in file contents and paths, so that the one name stays one name.
//! It keeps nothing else of the old name but one line in README.md saying where the
//! tree came from. Then the generated files are rendered again (they must already
//! match: the check is that the rename left the model and the layers consistent) and
//! Cargo.lock is re-sorted. docs/RECIPES.md ("Start a product") lists what is renamed.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;
use platform::access::AccessModel;

/// The product's new name.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Lowercase letters and digits, starting with a letter (it becomes a Kubernetes
    /// namespace prefix, a PostgreSQL role prefix and a Rust identifier prefix).
    pub name: String,
    /// The SPIFFE trust domain (default: NAME.local).
    #[arg(long)]
    pub trust_domain: Option<String>,
}

/// Directories never renamed in: build output, local state, version control.
const SKIP_DIRS: [&str; 5] = [".git", "target", ".dev", "node_modules", "secrets"];

/// The three spellings of `old`, each with its replacement.
fn spellings(old: &str, new: &str) -> [(String, String); 3] {
    let capital = crate::access::capitalized;
    [
        (old.to_uppercase(), new.to_uppercase()),
        (capital(old), capital(new)),
        (old.to_owned(), new.to_owned()),
    ]
}

/// `text` with every spelling of the old name replaced.
pub fn rename_text(text: &str, old: &str, new: &str) -> String {
    spellings(old, new)
        .iter()
        .fold(text.to_owned(), |t, (from, to)| t.replace(from, to))
}

/// The files of the working tree at `root` (git's view when it is a repository: tracked,
/// and untracked but not ignored; otherwise every file outside [`SKIP_DIRS`]).
fn files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if root.join(".git").exists()
        && let Ok(files) = crate::scratch::workspace_files(root)
    {
        return Ok(files);
    }
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(root.join(&dir))? {
            let entry = entry?;
            let path = dir.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                if !SKIP_DIRS.iter().any(|s| entry.file_name() == *s) {
                    dirs.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// A Cargo.lock with its packages in cargo's order (by name; a stable sort keeps the
/// versions of one name in order), as `cargo build --locked` expects it.
pub fn sort_lock(text: &str) -> String {
    const SEP: &str = "\n[[package]]\n";
    let mut parts = text.split(SEP);
    let head = parts.next().unwrap_or_default();
    let mut blocks: Vec<&str> = parts.collect();
    blocks.sort_by_key(|b| b.lines().next().unwrap_or_default());
    if blocks.is_empty() {
        return text.to_owned();
    }
    format!("{head}{SEP}{}", blocks.join(SEP))
}

/// Renames the product in the working tree at `root`; returns a summary for people.
pub fn rename(root: &Path, options: &Options) -> anyhow::Result<String> {
    let name = options.name.as_str();
    anyhow::ensure!(
        name.len() >= 2
            && name.len() <= 30
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "product names are 2 to 30 lowercase letters and digits, starting with a letter ({name:?})"
    );
    let model_path = root.join(crate::access::diff::MODEL_PATH);
    let model = AccessModel::parse(&std::fs::read_to_string(&model_path)?)?;
    let old = model.product.clone();
    anyhow::ensure!(name != old, "the product is called {old} already");
    // A name that is already a word of the tree would merge with it (say `db`: the crate
    // `db` and the image `<product>-db`).
    let crates = root.join("crates");
    anyhow::ensure!(
        !crates.join(name).exists() && !model.components.contains_key(name),
        "{name} is a crate or component of this workspace already"
    );
    let mut changed = 0;
    let mut moved = Vec::new();
    for path in files(root)? {
        let full = root.join(&path);
        // Binary files (the dashboard's font) are left alone.
        if let Ok(text) = std::fs::read_to_string(&full) {
            let new = rename_text(&text, &old, name);
            if new != text {
                std::fs::write(&full, new)
                    .with_context(|| format!("writing {}", path.display()))?;
                changed += 1;
            }
        }
        let renamed = PathBuf::from(rename_text(&path.to_string_lossy(), &old, name));
        if renamed != path {
            let target = root.join(&renamed);
            std::fs::create_dir_all(target.parent().context("a file has a parent")?)?;
            std::fs::rename(&full, &target)?;
            moved.push(format!("{} → {}", path.display(), renamed.display()));
            // Leave no empty directory behind.
            let mut dir = full.parent();
            while let Some(d) = dir {
                if d == root || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
    }
    if let Some(domain) = &options.trust_domain {
        let text = std::fs::read_to_string(&model_path)?;
        let default = format!("{name}.local");
        for path in files(root)? {
            let full = root.join(&path);
            if let Ok(text) = std::fs::read_to_string(&full)
                && text.contains(&default)
            {
                std::fs::write(&full, text.replace(&default, domain))?;
            }
        }
        anyhow::ensure!(text.contains(&default), "the model names no {default}");
    }
    // Where it came from: the one line that keeps the old name.
    let readme = root.join("README.md");
    if let Ok(text) = std::fs::read_to_string(&readme) {
        let mut lines: Vec<&str> = text.lines().collect();
        let origin = format!(
            "\n> Started from [{}](https://example.invalid/{old}) with `cargo xtask new-product {name}`.",
            spellings(&old, name)[1].0
        );
        lines.insert(1.min(lines.len()), &origin);
        std::fs::write(&readme, lines.join("\n") + "\n")?;
    }
    // The generated layers must agree with the renamed model as they are.
    let model = AccessModel::parse(&std::fs::read_to_string(&model_path)?)?;
    let stale = crate::access::stale(root, &model);
    // Cargo.lock lists packages by name: the renamed ones move.
    let lock = root.join("Cargo.lock");
    if let Ok(text) = std::fs::read_to_string(&lock) {
        std::fs::write(&lock, sort_lock(&text))?;
    }
    let mut report = format!(
        "renamed {old} to {name}: {changed} files changed, {} moved\n",
        moved.len()
    );
    for m in &moved {
        let _ = writeln!(report, "  moved {m}");
    }
    anyhow::ensure!(
        stale.is_empty(),
        "{report}but these generated files differ from the renamed model (a name the generator \
         spells differently?): {}",
        stale.join(", ")
    );
    let _ = write!(
        report,
        "next: remove the old local secrets (rm -r .dev k8s/overlays/dev/secrets; they name the old \
         roles), then cargo build, cargo xtask access check, cargo xtask nca --check, .ci/run"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Copy;

    #[test]
    fn the_lock_file_is_in_cargo_order_after_a_rename() {
        let text = std::fs::read_to_string(crate::up::workspace_root().join("Cargo.lock")).unwrap();
        assert_eq!(sort_lock(&text), text, "the committed lock is sorted");
        let renamed = sort_lock(&rename_text(&text, "beacon", "acme"));
        let names: Vec<&str> = renamed
            .lines()
            .filter(|l| l.starts_with("name = "))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.contains(&"name = \"acme-e2e\""));
    }

    #[test]
    fn every_spelling_is_renamed() {
        assert_eq!(
            rename_text(
                "Beacon: beacon-api, beacon_api, BEACON_LISTEN_ADDR, spiffe://beacon.local",
                "beacon",
                "acme"
            ),
            "Acme: acme-api, acme_api, ACME_LISTEN_ADDR, spiffe://acme.local"
        );
    }

    /// The trust domain is named twice (the model, and platform::tls for the services'
    /// identities): the rename keeps them equal, and this keeps them equal before it.
    #[test]
    fn the_trust_domain_is_the_models() {
        assert_eq!(
            platform::tls::TRUST_DOMAIN,
            AccessModel::load().trust_domain
        );
    }

    #[test]
    fn refuses_names_that_would_collide_or_break_identifiers() {
        let root = crate::up::workspace_root();
        for bad in ["a", "Acme", "my-co", "9co", "beacon", "db", "api"] {
            let options = Options {
                name: bad.into(),
                trust_domain: None,
            };
            assert!(rename(&root, &options).is_err(), "{bad}");
        }
    }

    /// A renamed copy keeps no trace of the old name but its origin line, and its
    /// generated layers still match its model (rename checks that itself).
    #[test]
    fn a_renamed_copy_names_only_the_new_product() {
        let copy = Copy::new("new-product").unwrap();
        let report = rename(
            &copy.dir,
            &Options {
                name: "acme".into(),
                trust_domain: None,
            },
        )
        .unwrap();
        assert!(
            report.contains("crates/proto/proto/acme/analytics/v1/analytics.proto"),
            "{report}"
        );
        let model = AccessModel::parse(
            &std::fs::read_to_string(copy.dir.join(crate::access::diff::MODEL_PATH)).unwrap(),
        )
        .unwrap();
        assert_eq!(model.product, "acme");
        assert_eq!(model.trust_domain, "acme.local");
        assert_eq!(model.components["api"].namespace, "acme-api");
        crate::access::check(&copy.dir, &model).unwrap();
        let mut left = Vec::new();
        for path in files(&copy.dir).unwrap() {
            let Ok(text) = std::fs::read_to_string(copy.dir.join(&path)) else {
                continue;
            };
            for line in text.lines().filter(|l| l.to_lowercase().contains("beacon")) {
                left.push(format!("{}: {line}", path.display()));
            }
        }
        assert_eq!(
            left,
            [
                "README.md: > Started from [Beacon](https://example.invalid/beacon) with `cargo xtask new-product acme`."
            ]
        );
    }

    /// The proof: the renamed copy builds and passes the static checks (`access
    /// check`, both overlays' render, tests/k8s, the nca snapshots unchanged in content
    /// but for the names) with no hand edit. Needs kubectl and nca.
    #[test]
    #[ignore = "builds a renamed copy of the workspace (minutes): cargo test -p xtask -- --ignored new_product"]
    fn a_renamed_copy_builds_and_passes_the_static_checks() {
        let copy = Copy::new("new-product").unwrap();
        rename(
            &copy.dir,
            &Options {
                name: "acme".into(),
                trust_domain: Some("acme.example".into()),
            },
        )
        .unwrap();
        copy.cargo(&["build", "--workspace", "--locked"]).unwrap();
        // The snapshots were renamed with the rest: they must match as they are.
        copy.static_checks(false).unwrap();
        copy.cargo(&["test", "--locked", "-p", "xtask", "--lib", "access"])
            .unwrap();
    }
}
