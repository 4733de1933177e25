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

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use anyhow::Context;
use platform::access::AccessModel;

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
            include_str!("../templates/new-service/test_helpers.rs"),
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
        Kind::Http => include_str!("../templates/new-service/http.rs"),
        Kind::Grpc => include_str!("../templates/new-service/grpc.rs"),
        Kind::Worker => include_str!("../templates/new-service/worker.rs"),
    };
    write(krate.join("src/lib.rs"), service.fill(template))?;
    if options.kind == Kind::Grpc {
        write(
            krate.join("build.rs"),
            service.fill(include_str!("../templates/new-service/build.rs")),
        )?;
        write(
            krate.join(format!(
                "proto/{}/{}/v1/{}.proto",
                model.product,
                service.snake(),
                service.snake()
            )),
            service.fill(include_str!("../templates/new-service/service.proto")),
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

fn cargo_toml(service: &Service<'_>) -> String {
    let name = service.name;
    let (deps, build, dev) = match service.options.kind {
        Kind::Http => (
            "axum.workspace = true\nserde_json.workspace = true\n",
            "",
            "tower.workspace = true\n",
        ),
        Kind::Grpc => (
            "prost.workspace = true\ntonic.workspace = true\ntonic-prost.workspace = true\ntracing.workspace = true\n",
            "\n[build-dependencies]\nprotox.workspace = true\ntonic-prost-build.workspace = true\n",
            "# The development CA issues the test's workload certificates.\nxtask = { path = \"../xtask\" }\ntime.workspace = true\n",
        ),
        Kind::Worker => (
            "metrics.workspace = true\ntracing.workspace = true\n",
            "",
            "",
        ),
    };
    let kind = format!("{:?}", service.options.kind).to_lowercase();
    let dev = if dev.is_empty() {
        String::new()
    } else {
        format!("\n[dev-dependencies]\n{dev}")
    };
    format!(
        r#"[package]
name = "{name}"
description = "{name}: a {product} {kind} service (scaffolded by `cargo xtask new-service`)"
version.workspace = true
edition.workspace = true
rust-version.workspace = true
license.workspace = true
publish.workspace = true

[lints]
workspace = true

[dependencies]
platform.workspace = true
anyhow.workspace = true
tokio.workspace = true
{deps}{build}{dev}"#,
        product = service.model.product,
    )
}

fn main_rs(name: &str) -> String {
    format!(
        "fn main() {{\n    platform::service::main(\"{name}\", {}::run);\n}}\n",
        snake(name)
    )
}

/// The crate's README: a paragraph to write, and the part `access render` keeps in step
/// with the model.
fn readme(service: &Service<'_>) -> String {
    let kind = match service.options.kind {
        Kind::Http => "an HTTP service",
        Kind::Grpc => "an internal gRPC service (mutual TLS, callers by identity)",
        Kind::Worker => "a worker (no port but the admin one)",
    };
    format!(
        "# {name}\n\nWhat it does and why it exists: (one paragraph). Scaffolded by `cargo xtask new-service` as\n{kind}{db}.\n\n{section}",
        name = service.name,
        db = if service.role.is_some() {
            ", with its own database role and schema"
        } else {
            ""
        },
        section = crate::access::crate_docs::placeholder(),
    )
}

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
fn model_text(text: &str, service: &Service<'_>) -> anyhow::Result<String> {
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

/// The next migration version: one past the highest in `dir`.
fn next_migration(dir: &Path) -> anyhow::Result<u64> {
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

fn migration(service: &Service<'_>, role: &str) -> String {
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
fn bootstrap_password(text: &str, role: &str) -> anyhow::Result<String> {
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

fn kustomization(service: &Service<'_>) -> String {
    let (name, namespace) = (service.name, &service.namespace);
    format!(
        "# {name}: everything the {namespace} namespace holds.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {namespace}
components:
- ../../components/namespace-baseline
resources:
- serviceaccounts.yaml
- rbac.yaml
- {name}.yaml
- networkpolicy.yaml
- admin-services.yaml
"
    )
}

fn workload(service: &Service<'_>) -> String {
    let (product, name, namespace) = (&service.model.product, service.name, &service.namespace);
    let admin = service.admin;
    let meta = format!(
        "metadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: {product}\n    app.kubernetes.io/name: {name}"
    );
    let mut ports = String::new();
    let mut env = String::new();
    let mut service_ports = String::new();
    if let Some((port, number)) = service.port {
        let _ = write!(
            ports,
            "\n        - name: {port}\n          containerPort: {number}\n          protocol: TCP"
        );
        let _ = write!(
            env,
            "\n        - name: BEACON_LISTEN_ADDR\n          value: 0.0.0.0:{number}"
        );
        let _ = write!(
            service_ports,
            "\n  - name: {port}\n    port: {number}\n    targetPort: {port}\n    protocol: TCP"
        );
    }
    let collector = &service.model.components["otel-collector"].namespace;
    let _ = write!(
        env,
        "
        - name: BEACON_ADMIN_ADDR
          value: 0.0.0.0:{admin}
        - name: BEACON_LOG_FORMAT
          value: json
        - name: RUST_LOG
          value: info
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: http://otel-collector.{collector}.svc:4317"
    );
    let mut mounts = String::new();
    let mut volumes = String::new();
    let mut secret = |volume: &str, dir: &str, secret: &str| {
        let _ = write!(
            mounts,
            "\n        - name: {volume}\n          mountPath: /etc/{product}/{dir}\n          readOnly: true"
        );
        let _ = write!(
            volumes,
            "\n      - name: {volume}\n        secret:\n          secretName: {secret}\n          defaultMode: 288"
        );
    };
    if let Some(role) = &service.role {
        let data = &service.model.components["postgres"].namespace;
        let _ = write!(
            env,
            "
        - name: DATABASE_HOST
          value: postgres.{data}.svc
        - name: DATABASE_PORT
          value: '5432'
        - name: DATABASE_NAME
          value: {product}
        - name: DATABASE_USER
          value: {role}
        - name: DATABASE_PASSWORD_FILE
          value: /etc/{product}/db/password
        - name: DATABASE_SSLMODE
          value: verify-full
        - name: DATABASE_SSLROOTCERT
          value: /etc/{product}/db/ca.crt"
        );
        secret("db", "db", &format!("{name}-db"));
    }
    if service.options.kind == Kind::Grpc {
        for (var, file) in [("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")] {
            let _ = write!(
                env,
                "\n        - name: BEACON_TLS_{var}_FILE\n          value: /etc/{product}/tls/{file}"
            );
        }
        secret("tls", "tls", &format!("{name}-tls"));
    }
    format!(
        "# {name} (scaffolded by `cargo xtask new-service`): restricted pod, probes on the admin
# port, no Kubernetes API token. Secrets are files (Secret volumes).
apiVersion: apps/v1
kind: Deployment
{meta}
spec:
  replicas: 1
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/part-of: {product}
        app.kubernetes.io/name: {name}
    spec:
      serviceAccountName: {name}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      terminationGracePeriodSeconds: 30
      containers:
      - name: {name}
        image: {product}/{name}:dev
        imagePullPolicy: Always
        ports:{ports}
        - name: admin
          containerPort: {admin}
          protocol: TCP
        env:{env}
        livenessProbe:
          httpGet:
            path: /healthz
            port: admin
          periodSeconds: 10
          timeoutSeconds: 2
          failureThreshold: 3
        readinessProbe:
          httpGet:
            path: /readyz
            port: admin
          periodSeconds: 5
          timeoutSeconds: 2
          failureThreshold: 3
        startupProbe:
          httpGet:
            path: /healthz
            port: admin
          periodSeconds: 2
          failureThreshold: 30
        resources:
          requests:
            cpu: 50m
            memory: 64Mi
          limits:
            cpu: 500m
            memory: 256Mi
        securityContext:
          runAsNonRoot: true
          runAsUser: 65532
          runAsGroup: 65532
          allowPrivilegeEscalation: false
          privileged: false
          readOnlyRootFilesystem: true
          capabilities:
            drop:
            - ALL
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
        - name: tmp
          mountPath: /tmp{mounts}
      volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 64Mi{volumes}

---
apiVersion: v1
kind: Service
{meta}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {name}
  ports:{service_ports}
  - name: admin
    port: {admin}
    targetPort: admin
    protocol: TCP

---
apiVersion: policy/v1
kind: PodDisruptionBudget
{meta}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
"
    )
}

/// The overlay with the new base (after the last `base/` entry); in dev, the new
/// secrets (database password, workload certificate) from the git-ignored `secrets/`
/// that `cargo xtask secrets` fills; in prod, the image pinned by a placeholder digest.
fn overlay_text(text: &str, service: &Service<'_>, prod: bool) -> anyhow::Result<String> {
    let (product, name, namespace) = (&service.model.product, service.name, &service.namespace);
    let last = text
        .lines()
        .rfind(|l| l.trim_start().starts_with("- ../../base/"))
        .context("the overlay lists no base")?;
    let entry = last.replacen(
        last.trim_start().trim_start_matches("- ../../base/"),
        name,
        1,
    );
    let mut out = text.replacen(&format!("{last}\n"), &format!("{last}\n{entry}\n"), 1);
    if !prod {
        // Dev: the local registry Tilt pushes to (never an unqualified name).
        let marker = "images:\n";
        anyhow::ensure!(out.contains(marker), "the dev overlay has no images list");
        let after = out.find(marker).map_or(0, |i| i + marker.len());
        // After the list's leading comment lines, if any.
        let insert = out[after..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + after;
        out.insert_str(
            insert,
            &format!("- name: {product}/{name}\n  newName: localhost:5001/{product}/{name}\n"),
        );
    }
    if prod {
        let marker = "images:\n";
        anyhow::ensure!(out.contains(marker), "the prod overlay has no images list");
        return Ok(out.replacen(
            marker,
            &format!(
                "{marker}- name: {product}/{name}\n  newName: registry.example.com/{product}/{name}\n  digest: sha256:{}\n",
                "0".repeat(64)
            ),
            1,
        ));
    }
    let mut secrets = String::new();
    if let Some(role) = &service.role {
        // The bootstrap Job's list of every login role's password.
        let lines: Vec<&str> = out.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.trim() == "- name: db-role-passwords")
            .context("the dev overlay has no db-role-passwords secret")?;
        let last = (start..lines.len())
            .take_while(|&i| i == start || !lines[i].trim_start().starts_with("- name:"))
            .filter(|&i| lines[i].contains(".password"))
            .last()
            .context("db-role-passwords lists no file")?;
        let indent = &lines[last][..lines[last].len() - lines[last].trim_start().len()];
        let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        edited.insert(
            last + 1,
            format!("{indent}- {role}=secrets/{role}.password"),
        );
        out = edited.join("\n") + "\n";
        let _ = write!(
            secrets,
            "  - name: {name}-db\n    namespace: {namespace}\n    files:\n      - password=secrets/{role}.password\n      - ca.crt=secrets/ca.crt\n"
        );
    }
    if service.options.kind == Kind::Grpc {
        let _ = write!(
            secrets,
            "  - name: {name}-tls\n    namespace: {namespace}\n    files:\n      - tls.crt=secrets/{name}.crt\n      - tls.key=secrets/{name}.key\n      - ca.crt=secrets/ca.crt\n"
        );
    }
    if !secrets.is_empty() {
        anyhow::ensure!(
            out.contains("\npatches:\n"),
            "the dev overlay has no patches after its secretGenerator"
        );
        out = out.replacen("\npatches:\n", &format!("\n{secrets}patches:\n"), 1);
    }
    Ok(out)
}

/// The prod overlay's patch that points a service with a database role at the primary.
fn database_endpoint(service: &Service<'_>) -> String {
    let (name, namespace) = (service.name, &service.namespace);
    let data = &service.model.components["postgres"].namespace;
    format!(
        "
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  template:
    spec:
      containers:
      - name: {name}
        env:
        - name: DATABASE_HOST
          value: postgres-rw.{data}.svc
"
    )
}

/// The prod workload certificate of a gRPC service (cert-manager, the platform's CA).
fn certificate(service: &Service<'_>) -> String {
    let (product, name, namespace) = (&service.model.product, service.name, &service.namespace);
    let id = format!(
        "spiffe://{}/ns/{namespace}/sa/{name}",
        service.model.trust_domain
    );
    format!(
        "
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {name}-mtls
  namespace: {namespace}
  labels:
    app.kubernetes.io/part-of: {product}
spec:
  secretName: {name}-tls
  duration: 720h
  renewBefore: 240h
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  uris:
  - {id}
  dnsNames:
  - {name}.{namespace}.svc
  - {name}.{namespace}.svc.cluster.local
  usages:
  - digital signature
  - key encipherment
  - server auth
  - client auth
  issuerRef:
    group: cert-manager.io
    kind: ClusterIssuer
    name: {product}-internal-ca
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Copy;

    fn http(name: &str) -> Options {
        Options {
            public: true,
            called_by: vec!["dashboard".into()],
            calls: vec!["api".into()],
            ..Options::http(name)
        }
    }

    /// An internal gRPC service with its own database, for the api.
    fn grpc(name: &str) -> Options {
        Options {
            kind: Kind::Grpc,
            database: true,
            called_by: vec!["api".into()],
            ..Options::http(name)
        }
    }

    /// A worker with its own database that calls analytics.
    fn worker(name: &str) -> Options {
        Options {
            kind: Kind::Worker,
            database: true,
            calls: vec!["analytics".into()],
            team: "data_engineer".into(),
            ..Options::http(name)
        }
    }

    fn network_rows(rows: &[crate::access::diff::Row]) -> Vec<&str> {
        rows.iter()
            .filter(|r| r.1 == "network")
            .map(|r| r.2.as_str())
            .collect()
    }

    #[test]
    fn scaffolding_edits_the_model_and_renders_every_layer() {
        let copy = Copy::new("new-service").unwrap();
        let dir = &copy.dir;
        scaffold(dir, &http("reports")).unwrap();
        let text = std::fs::read_to_string(dir.join(crate::access::diff::MODEL_PATH)).unwrap();
        let model = AccessModel::parse(&text).unwrap();
        let c = &model.components["reports"];
        assert_eq!(c.namespace, "beacon-reports");
        assert!(model.kubernetes.namespaces.contains(&c.namespace));
        crate::access::check(dir, &model).unwrap();
        let rows = crate::access::diff::changes(&AccessModel::load(), &model);
        let flows = network_rows(&rows);
        for flow in [
            "(internet → reports http)",
            "(dashboard → reports http)",
            "(reports → api http)",
        ] {
            assert!(flows.iter().any(|f| f.contains(flow)), "{flow}: {flows:?}");
        }
        assert!(rows.iter().all(|r| r.0 == "opens"), "{rows:?}");
        assert!(
            rows.iter()
                .any(|r| r.2 == "beacon:product-developers may delete pods in beacon-reports"),
            "{rows:?}"
        );
        // The SRE's Role stays in the baseline: the new namespace is one of "every".
        assert!(
            !std::fs::read_to_string(dir.join("k8s/base/reports/rbac.yaml"))
                .unwrap()
                .contains("name: sre\n")
        );
        // Its README says what it may touch, from the model.
        let readme = std::fs::read_to_string(dir.join("crates/reports/README.md")).unwrap();
        assert!(readme.contains("- reaches: api http (8081)"), "{readme}");
        assert!(scaffold(dir, &http("reports")).is_err(), "twice");
        for bad in ["Bad_Name", "trailing-", "9lives", ""] {
            assert!(scaffold(dir, &http(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_grpc_service_with_a_database_gets_its_role_schema_callers_and_secrets() {
        let copy = Copy::new("new-service").unwrap();
        let dir = &copy.dir;
        scaffold(dir, &grpc("ledger")).unwrap();
        let model = AccessModel::parse(
            &std::fs::read_to_string(dir.join(crate::access::diff::MODEL_PATH)).unwrap(),
        )
        .unwrap();
        crate::access::check(dir, &model).unwrap();
        assert_eq!(
            model.allowed_grpc_callers("ledger"),
            vec![model.spiffe_id("api").unwrap()]
        );
        // `cargo xtask up` starts it from the model: its port, its role, its mTLS files.
        let planned = crate::up::scaffolded(
            &model,
            &|role| Ok(vec![("DATABASE_USER", role.to_owned())]),
            &|name| vec![("BEACON_TLS_CERT_FILE", format!("{name}.crt"))],
        )
        .unwrap();
        let [ledger] = planned.as_slice() else {
            panic!("only the scaffolded service: {planned:?}")
        };
        let grpc_port = model.components["ledger"].ports["grpc"];
        assert_eq!(
            (ledger.name.as_str(), ledger.package.as_str()),
            ("ledger", "ledger")
        );
        assert_eq!(ledger.admin_port, model.components["ledger"].ports["admin"]);
        for want in [
            ("DATABASE_USER", "beacon_ledger".to_owned()),
            ("BEACON_TLS_CERT_FILE", "ledger.crt".to_owned()),
            ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{grpc_port}")),
        ] {
            assert!(ledger.env.contains(&want), "{want:?} in {:?}", ledger.env);
        }
        let c = &model.components["ledger"];
        assert_eq!(c.ports.keys().collect::<Vec<_>>(), ["admin", "grpc"]);
        assert_eq!(c.db_role.as_deref(), Some("beacon_ledger"));
        let role = &model.database.roles["beacon_ledger"];
        assert!(role.login);
        assert_eq!(
            role.grants["ledger.items"],
            ["SELECT", "INSERT", "UPDATE", "DELETE"]
        );
        assert!(
            model
                .database
                .tenant_tables
                .contains(&"ledger.items".to_owned())
        );
        assert!(model.database.schemas.contains(&"ledger".to_owned()));

        let rows = crate::access::diff::changes(&AccessModel::load(), &model);
        let flows = network_rows(&rows);
        assert!(
            flows.iter().any(|f| f.contains("(api → ledger grpc)")),
            "{flows:?}"
        );
        assert!(
            flows
                .iter()
                .any(|f| f.contains("(ledger → postgres postgres)")),
            "{flows:?}"
        );
        assert!(!flows.iter().any(|f| f.contains("internet")), "{flows:?}");
        // Generated: the role in roles.sql, roles.rs (so xtask up/secrets make its
        // password), and its grants.
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        assert!(read("crates/db/src/roles.rs").contains("\"beacon_ledger\""));
        assert!(read("crates/db/src/grants.sql").contains("ON ledger.items TO beacon_ledger"));
        // Wired by hand-kept files: the migration, the bootstrap Job, the dev secrets.
        let migrations: Vec<_> = std::fs::read_dir(dir.join("crates/db/migrations"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with("_ledger.sql"))
            .collect();
        assert_eq!(migrations.len(), 1, "{migrations:?}");
        assert!(read("k8s/base/data/jobs.yaml").contains(
            "        - name: BEACON_LEDGER_PASSWORD_FILE\n          value: /etc/beacon/passwords/beacon_ledger\n"
        ));
        let dev = read("k8s/overlays/dev/kustomization.yaml");
        assert!(
            dev.contains("      - beacon_ledger=secrets/beacon_ledger.password\n"),
            "{dev}"
        );
        assert!(
            dev.contains("  - name: ledger-db\n    namespace: beacon-ledger\n"),
            "{dev}"
        );
        assert!(dev.contains("  - name: ledger-tls\n"), "{dev}");
        assert!(
            read("k8s/overlays/prod/certificates.yaml")
                .contains("  - spiffe://beacon.local/ns/beacon-ledger/sa/ledger\n")
        );
        let lib = read("crates/ledger/src/lib.rs");
        assert!(lib.contains("DbConfig::from_env(\"beacon_ledger\", \"ledger\")"));
        assert!(
            !lib.contains("@db") && !lib.contains("__"),
            "placeholders left"
        );
    }

    #[test]
    fn a_worker_listens_on_its_admin_port_only() {
        let copy = Copy::new("new-service").unwrap();
        let dir = &copy.dir;
        scaffold(dir, &worker("sweeper")).unwrap();
        let model = AccessModel::parse(
            &std::fs::read_to_string(dir.join(crate::access::diff::MODEL_PATH)).unwrap(),
        )
        .unwrap();
        crate::access::check(dir, &model).unwrap();
        assert_eq!(
            model.components["sweeper"].ports.keys().collect::<Vec<_>>(),
            ["admin"]
        );
        let inbound: Vec<_> = model.flows.iter().filter(|f| f.to == "sweeper").collect();
        assert_eq!(inbound.len(), 1, "{inbound:?}");
        assert_eq!(
            (inbound[0].from.as_str(), inbound[0].port.as_str()),
            ("prometheus", "admin")
        );
        let lib = std::fs::read_to_string(dir.join("crates/sweeper/src/lib.rs")).unwrap();
        assert!(!lib.contains("BEACON_LISTEN_ADDR"), "{lib}");
        // Refused: a worker that others would call, a public gRPC service, a gRPC
        // service nobody may call.
        for (options, why) in [
            (
                Options {
                    called_by: vec!["api".into()],
                    ..worker("w2")
                },
                "admin port",
            ),
            (
                Options {
                    public: true,
                    ..grpc("g2")
                },
                "internal",
            ),
            (
                Options {
                    called_by: vec![],
                    ..grpc("g3")
                },
                "--called-by",
            ),
        ] {
            let err = scaffold(dir, &options).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }

    /// The issue's proof: in one copy of the repository, scaffold a service of each kind
    /// (HTTP; gRPC with a database; worker with a database) and run there, with no hand
    /// edit: the build, the new crates' tests (and the database crate's, which checks
    /// every role of the model, the new ones included, on a live PostgreSQL), `access
    /// check`, the render of both overlays, tests/k8s, and the network-config-analyzer
    /// snapshot update (`cargo xtask nca`). Needs `DATABASE_URL`, kubectl and nca.
    #[test]
    #[ignore = "builds and tests a copy of the workspace (minutes): cargo test -p xtask -- --ignored new_service"]
    fn scaffolded_services_of_every_kind_build_test_and_pass_the_checks() {
        let copy = Copy::new("new-service").unwrap();
        for options in [http("reports"), grpc("ledger"), worker("sweeper")] {
            scaffold(&copy.dir, &options).unwrap();
        }
        let packages = ["-p", "reports", "-p", "ledger", "-p", "sweeper"];
        let with = |first: &[&'static str], more: &[&'static str]| -> Vec<&'static str> {
            first.iter().chain(more).copied().collect()
        };
        copy.cargo(&with(&["build"], &packages)).unwrap();
        copy.cargo(&with(&["test"], &packages)).unwrap();
        copy.cargo(&["test", "-p", "db"]).unwrap();
        // Writes the nca snapshots (they now show the new namespaces), then checks them.
        copy.static_checks(true).unwrap();
        let snapshot =
            std::fs::read_to_string(copy.dir.join("k8s/nca/prod-connectivity.txt")).unwrap();
        assert!(snapshot.contains("beacon-ledger"), "{snapshot}");
    }
}
