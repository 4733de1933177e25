//! `cargo xtask new-service NAME`: a new service, wired into every layer.
//!
//! `--kind http` (default): a public or internal HTTP service; `--kind grpc`: an internal
//! gRPC server over mutual TLS whose callers are authorized by workload identity (the
//! model's `[grpc.NAME]`); `--kind worker`: no port but the admin one. `--database` gives
//! it its own PostgreSQL role, schema and tenant table (a migration, `[database.roles.*]`,
//! the role's password in the bootstrap Job and the dev secrets, the flow to postgres).
//!
//! It writes the crate (on `platform::service::main`: config from the environment,
//! health, readiness and metrics on the admin port, one example route, RPC or round of
//! work with a test), the access model's entries (component, image, namespace, flows,
//! gRPC callers, database role, persona grants), the namespace's kustomize base and its
//! place in both overlays, and then regenerates the layers the model decides (`cargo
//! xtask access render`). The Dockerfile and the Tiltfile build it from the generated
//! image list; `cargo xtask up`/`secrets` take the passwords from the generated roles.
//! The crates' templates are in `crates/xtask/templates/new-service/`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::access::AccessModel;

mod database;
mod krate;
mod kube;
mod model;
#[cfg(test)]
mod tests;

use database::{bootstrap_password, migration, next_migration};
use krate::{cargo_toml, main_rs, readme};
use kube::{certificate, database_endpoint, kustomization, overlay_text, workload};
use model::model_text;

/// What kind of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// HTTP on its own port (public with `--public`, or for `--called-by`).
    Http,
    /// An internal gRPC server over mutual TLS, for the `--called-by` identities only.
    Grpc,
    /// No port but the admin one: it works on a timer.
    Worker,
}

/// What the new service is and who it talks to.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The service's name: a crate, a component, an image and namespace `<product>-NAME`.
    pub name: String,
    /// What it is.
    #[arg(long, value_enum, default_value = "http")]
    pub kind: Kind,
    /// Its own database role `<product>_NAME`, schema `NAME` and tenant table `NAME.items`.
    #[arg(long)]
    pub database: bool,
    /// Reachable from the internet on its HTTP port (`--kind http` only).
    #[arg(long)]
    pub public: bool,
    /// Components that may call it on its port (comma-separated; required for gRPC).
    #[arg(long, value_delimiter = ',')]
    pub called_by: Vec<String>,
    /// Components it may call, each on its first port that is not `admin` (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub calls: Vec<String>,
    /// The persona that deploys and operates it (gets the same Kubernetes rights in its
    /// namespace as in the namespaces it already operates).
    #[arg(long, default_value = "product_developer")]
    pub team: String,
}

impl Options {
    /// An HTTP service without a database, for `name`.
    pub fn http(name: &str) -> Self {
        Self {
            name: name.into(),
            kind: Kind::Http,
            database: false,
            public: false,
            called_by: vec![],
            calls: vec![],
            team: "product_developer".into(),
        }
    }
}

/// Everything the templates and layers need to know about the new service.
struct Service<'a> {
    options: &'a Options,
    model: &'a AccessModel,
    name: &'a str,
    namespace: String,
    /// The serving port's name and number (none for a worker).
    port: Option<(&'static str, u16)>,
    admin: u16,
    /// The database role, when it has one.
    role: Option<String>,
}

impl Service<'_> {
    fn snake(&self) -> String {
        snake(self.name)
    }

    fn pascal(&self) -> String {
        self.name
            .split('-')
            .map(crate::access::capitalized)
            .collect()
    }

    /// A template with its placeholders filled and its `// @db` / `// @nodb` lines kept
    /// or dropped.
    fn fill(&self, template: &str) -> String {
        let (keep, drop) = if self.role.is_some() {
            (" // @db", " // @nodb")
        } else {
            (" // @nodb", " // @db")
        };
        let refused = self
            .model
            .components
            .iter()
            .find(|(n, c)| {
                c.image.is_some() && n.as_str() != self.name && !self.options.called_by.contains(n)
            })
            .map_or("", |(n, _)| n.as_str());
        let template = template.replace(
            "    // __test_helpers__\n",
            include_str!("../../templates/new-service/test_helpers.rs"),
        );
        let mut out = String::new();
        for line in template.lines() {
            if line.ends_with(drop) {
                continue;
            }
            out.push_str(line.strip_suffix(keep).unwrap_or(line));
            out.push('\n');
        }
        out.replace("__name__", self.name)
            .replace("__snake__", &self.snake())
            .replace("__Pascal__", &self.pascal())
            .replace("__product__", &self.model.product)
            .replace("__port__", &self.port.map_or(0, |p| p.1).to_string())
            .replace("__admin__", &self.admin.to_string())
            .replace("__role__", self.role.as_deref().unwrap_or(""))
            .replace(
                "__caller__",
                self.options.called_by.first().map_or("", String::as_str),
            )
            .replace("__refused__", refused)
    }
}

/// Scaffolds `options` into the workspace at `root`; returns the files it wrote.
pub fn scaffold(root: &Path, options: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let name = options.name.as_str();
    anyhow::ensure!(
        !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.ends_with('-')
            && !name.contains("--"),
        "service names are lowercase letters, digits and single '-' inside ({name:?})"
    );
    let model_path = root.join(crate::access::diff::MODEL_PATH);
    let text = std::fs::read_to_string(&model_path).context("reading the access model")?;
    let model = AccessModel::parse(&text)?;
    anyhow::ensure!(
        !model.components.contains_key(name) && !root.join("crates").join(name).exists(),
        "{name} exists already"
    );
    for other in options.called_by.iter().chain(&options.calls) {
        anyhow::ensure!(
            model.components.contains_key(other),
            "unknown component {other}"
        );
    }
    match options.kind {
        Kind::Http => {}
        Kind::Grpc => {
            anyhow::ensure!(!options.public, "a gRPC service is internal: no --public");
            anyhow::ensure!(
                !options.called_by.is_empty(),
                "a gRPC service needs --called-by: the identities it answers"
            );
        }
        Kind::Worker => anyhow::ensure!(
            !options.public && options.called_by.is_empty(),
            "a worker listens on nothing but its admin port: no --public, no --called-by"
        ),
    }
    let used: Vec<u16> = model
        .components
        .values()
        .flat_map(|c| c.ports.values().copied())
        .collect();
    let service = Service {
        options,
        model: &model,
        name,
        namespace: format!("{}-{name}", model.product),
        port: match options.kind {
            Kind::Http => Some(("http", next_free(&used, 8000..9000))),
            Kind::Grpc => Some(("grpc", next_free(&used, 50051..51000))),
            Kind::Worker => None,
        },
        admin: next_free(&used, 9000..10000),
        role: options
            .database
            .then(|| format!("{}_{}", model.product, snake(name))),
    };
    let mut wrote = Vec::new();
    let mut write = |path: PathBuf, contents: String| -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        wrote.push(path);
        Ok(())
    };

    // The crate.
    let krate = root.join("crates").join(name);
    write(krate.join("Cargo.toml"), cargo_toml(&service))?;
    write(krate.join("src/main.rs"), main_rs(name))?;
    let template = match options.kind {
        Kind::Http => include_str!("../../templates/new-service/http.rs"),
        Kind::Grpc => include_str!("../../templates/new-service/grpc.rs"),
        Kind::Worker => include_str!("../../templates/new-service/worker.rs"),
    };
    write(krate.join("src/lib.rs"), service.fill(template))?;
    if options.kind == Kind::Grpc {
        write(
            krate.join("build.rs"),
            service.fill(include_str!("../../templates/new-service/build.rs")),
        )?;
        write(
            krate.join(format!(
                "proto/{}/{}/v1/{}.proto",
                model.product,
                service.snake(),
                service.snake()
            )),
            service.fill(include_str!("../../templates/new-service/service.proto")),
        )?;
    }
    write(krate.join("README.md"), readme(&service))?;

    // The model.
    write(model_path.clone(), model_text(&text, &service)?)?;

    // The database: a schema with one tenant table, for the new role.
    if let Some(role) = &service.role {
        let dir = root.join("crates/db/migrations");
        let path = dir.join(format!("{}_{}.sql", next_migration(&dir)?, service.snake()));
        write(path, migration(&service, role))?;
        let jobs = root.join("k8s/base/data/jobs.yaml");
        write(
            jobs.clone(),
            bootstrap_password(&std::fs::read_to_string(&jobs)?, role)?,
        )?;
    }

    // Kubernetes: the namespace's base and its place in the overlays.
    let base = root.join("k8s/base").join(name);
    write(base.join("kustomization.yaml"), kustomization(&service))?;
    write(base.join(format!("{name}.yaml")), workload(&service))?;
    for overlay in ["dev", "prod"] {
        let path = root
            .join("k8s/overlays")
            .join(overlay)
            .join("kustomization.yaml");
        let text = std::fs::read_to_string(&path)?;
        write(path, overlay_text(&text, &service, overlay == "prod")?)?;
    }
    if service.role.is_some() {
        // Prod: a writer, so the CloudNativePG primary (postgres-rw).
        let path = root.join("k8s/overlays/prod/database-endpoints.yaml");
        let text = std::fs::read_to_string(&path)?;
        write(path, format!("{text}{}", database_endpoint(&service)))?;
    }
    if options.kind == Kind::Grpc {
        let path = root.join("k8s/overlays/prod/certificates.yaml");
        let text = std::fs::read_to_string(&path)?;
        write(path, format!("{text}{}", certificate(&service)))?;
    }

    // Everything the model decides.
    let model = AccessModel::parse(&std::fs::read_to_string(&model_path)?)?;
    wrote.extend(crate::access::render(root, &model)?);
    Ok(wrote)
}

/// One past the highest port of `range` in use (its start when none is).
fn next_free(used: &[u16], range: std::ops::Range<u16>) -> u16 {
    used.iter()
        .copied()
        .filter(|p| range.contains(p))
        .max()
        .map_or(range.start, |p| p + 1)
}

fn snake(name: &str) -> String {
    name.replace('-', "_")
}
