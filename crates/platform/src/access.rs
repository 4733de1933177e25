//! The access model (`security/access-model.toml`), embedded at build time so every
//! service and test reads the same rules.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The model's text, as committed.
pub const MODEL_TOML: &str = include_str!("../../../security/access-model.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessModel {
    /// The product's name: the `app.kubernetes.io/part-of` label of everything it runs
    /// (models written before it existed were Beacon's).
    #[serde(default = "beacon")]
    pub product: String,
    pub trust_domain: String,
    pub personas: BTreeMap<String, Persona>,
    pub components: BTreeMap<String, Component>,
    /// The product's own container images, by name (`<product>/<name>`).
    #[serde(default)]
    pub images: BTreeMap<String, Image>,
    pub flows: Vec<Flow>,
    pub grpc: BTreeMap<String, GrpcPolicy>,
    pub database: Database,
    pub api: Api,
    pub kubernetes: Kubernetes,
    /// Flows that exist in one overlay only (`[overlays.<name>]`, e.g. prod's PostgreSQL
    /// operator), with the peers outside the product they involve. Read and checked by
    /// `cargo xtask access` (crates/xtask/src/access/overlay.rs), which renders them into
    /// that overlay; kept as TOML here so the services need not know them.
    #[serde(default)]
    pub overlays: toml::Table,
}

fn beacon() -> String {
    "beacon".to_owned()
}

/// The public API's permission table: every route and what its caller needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Api {
    /// Every scope a token may carry.
    pub scopes: Vec<String>,
    pub routes: Vec<ApiRoute>,
}

/// One route: `permission` is [`PUBLIC`] or one of [`Api::scopes`].
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct ApiRoute {
    pub method: String,
    pub path: String,
    pub permission: String,
}

/// The permission of a route anyone may call.
pub const PUBLIC: &str = "public";

/// What persona groups may do in Kubernetes, per namespace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// Every Beacon namespace.
    pub namespaces: Vec<String>,
    /// The namespaces that hold signing keys or database credentials. There, only the
    /// delivery identity creates or changes what a workload runs: a person's grant to
    /// create, update or patch workloads there must name the [`KubeGrant::admission`]
    /// policy that narrows it.
    #[serde(default)]
    pub protected_namespaces: Vec<String>,
    pub grants: Vec<KubeGrant>,
}

/// The admission policies a grant may be narrowed by (rendered into k8s/base/admission).
/// `transform-job`: Jobs whose pod equals CronJob transform-once's pod template only.
pub const ADMISSION_TRANSFORM_JOB: &str = "transform-job";
/// `restart-and-scale`: updates that change only the replica count and the
/// `kubectl.kubernetes.io/restartedAt` pod annotation (scale and rollout restart).
pub const ADMISSION_RESTART_AND_SCALE: &str = "restart-and-scale";
/// `analyst-toolbox`: Jobs whose pod equals CronJob analyst-toolbox's pod template only
/// (the analysts' psql toolbox).
pub const ADMISSION_ANALYST_TOOLBOX: &str = "analyst-toolbox";
/// Every admission policy a grant may name.
pub const ADMISSIONS: [&str; 3] = [
    ADMISSION_TRANSFORM_JOB,
    ADMISSION_RESTART_AND_SCALE,
    ADMISSION_ANALYST_TOOLBOX,
];

/// `persona` may use `verbs` on `resources` (`resource` or `group/resource`) in `namespaces`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeGrant {
    pub persona: String,
    pub namespaces: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    /// The admission policy ([`ADMISSIONS`]) that narrows what these verbs may change.
    #[serde(default)]
    pub admission: Option<String>,
}

/// One Kubernetes permission: (namespace, API group, resource, verb).
pub type KubePermission = (String, String, String, String);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub kind: String,
    pub description: String,
    #[serde(default)]
    pub group: Option<String>,
    /// A machine persona's Kubernetes identity, `namespace/name` of its ServiceAccount.
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub db_role: Option<String>,
    #[serde(default)]
    pub api_scopes: Vec<String>,
}

impl Persona {
    /// Who Kubernetes RBAC binds: the group, or the ServiceAccount's user name
    /// (`system:serviceaccount:<namespace>:<name>`).
    pub fn subject(&self) -> Option<String> {
        self.group.clone().or_else(|| {
            self.service_account.as_ref().map(|sa| {
                let (ns, name) = sa.split_once('/').unwrap_or(("", sa));
                format!("system:serviceaccount:{ns}:{name}")
            })
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// What it does, in a sentence (for the generated READMEs and docs/ACCESS.md).
    #[serde(default)]
    pub description: Option<String>,
    pub namespace: String,
    pub service_account: String,
    #[serde(default)]
    pub pod: Option<String>,
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub db_role: Option<String>,
    #[serde(default)]
    pub loopback_only: bool,
    /// The product image this component runs from ([`AccessModel::images`]); none for
    /// third-party software (PostgreSQL, the collector, Jaeger).
    #[serde(default)]
    pub image: Option<String>,
}

/// A container image built from the workspace: the crate and its binary.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub package: String,
    pub binary: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub from: String,
    pub to: String,
    pub port: String,
    #[serde(default)]
    pub auth: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcPolicy {
    pub allowed_callers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub owner: String,
    pub migrator: String,
    pub schemas: Vec<String>,
    pub tables: Vec<String>,
    pub tenant_tables: Vec<String>,
    pub roles: BTreeMap<String, DbRole>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DbRole {
    pub login: bool,
    /// Session settings of the role (`ALTER ROLE ... SET name = 'value'`). A group role's
    /// (`login = false`) are also given to each of its members, which log in as
    /// themselves: PostgreSQL applies only the login role's own settings.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// A group role's: how many sessions each member may hold at once.
    #[serde(default)]
    pub member_connection_limit: Option<u32>,
    #[serde(default)]
    pub functions: Vec<String>,
    pub grants: BTreeMap<String, Vec<String>>,
}

impl AccessModel {
    /// The committed model. Panics only if the committed file is malformed, which the
    /// model's own unit test catches first.
    pub fn load() -> Self {
        Self::parse(MODEL_TOML).expect("security/access-model.toml is valid")
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let model: Self = toml::from_str(text)?;
        model.check()?;
        Ok(model)
    }

    /// Internal consistency: every reference names something that exists.
    fn check(&self) -> anyhow::Result<()> {
        for flow in &self.flows {
            let to = self
                .components
                .get(&flow.to)
                .ok_or_else(|| anyhow::anyhow!("flow to unknown component {}", flow.to))?;
            anyhow::ensure!(
                flow.from == "internet" || self.components.contains_key(&flow.from),
                "flow from unknown component {}",
                flow.from
            );
            anyhow::ensure!(
                to.ports.contains_key(&flow.port),
                "flow to {} names unknown port {}",
                flow.to,
                flow.port
            );
        }
        for (server, policy) in &self.grpc {
            anyhow::ensure!(
                self.components.contains_key(server),
                "grpc policy for unknown component {server}"
            );
            for caller in &policy.allowed_callers {
                anyhow::ensure!(
                    self.components.contains_key(caller),
                    "unknown gRPC caller {caller}"
                );
                anyhow::ensure!(
                    self.flows
                        .iter()
                        .any(|f| &f.from == caller && &f.to == server),
                    "gRPC caller {caller} of {server} has no network flow"
                );
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for route in &self.api.routes {
            anyhow::ensure!(
                route.permission == PUBLIC || self.api.scopes.contains(&route.permission),
                "api route {} {} needs unknown permission {}",
                route.method,
                route.path,
                route.permission
            );
            anyhow::ensure!(
                seen.insert((&route.method, &route.path)),
                "api route {} {} is listed twice",
                route.method,
                route.path
            );
        }
        for (name, persona) in &self.personas {
            for scope in &persona.api_scopes {
                anyhow::ensure!(
                    self.api.scopes.contains(scope),
                    "persona {name} has unknown API scope {scope}"
                );
            }
        }
        for (role, spec) in &self.database.roles {
            anyhow::ensure!(
                !spec.login || spec.member_connection_limit.is_none(),
                "{role}: member_connection_limit is for group roles (login = false)"
            );
            for (table, privileges) in &spec.grants {
                anyhow::ensure!(
                    self.database.tables.contains(table),
                    "{role}: grant on unlisted table {table}"
                );
                for p in privileges {
                    anyhow::ensure!(
                        ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"].contains(&p.as_str()),
                        "{role}: unknown privilege {p}"
                    );
                }
            }
        }
        for (name, c) in &self.components {
            if let Some(image) = &c.image {
                anyhow::ensure!(
                    self.images.contains_key(image),
                    "component {name} runs from unknown image {image}"
                );
            }
        }
        for image in self.images.keys() {
            anyhow::ensure!(
                self.components
                    .values()
                    .any(|c| c.image.as_ref() == Some(image)),
                "image {image} runs no component"
            );
        }
        for (name, c) in &self.components {
            anyhow::ensure!(
                self.kubernetes.namespaces.contains(&c.namespace),
                "component {name} is in {}, not a listed Kubernetes namespace",
                c.namespace
            );
        }
        const VERBS: [&str; 8] = [
            "get",
            "list",
            "watch",
            "create",
            "update",
            "patch",
            "delete",
            "deletecollection",
        ];
        for g in &self.kubernetes.grants {
            let persona = self.personas.get(&g.persona).ok_or_else(|| {
                anyhow::anyhow!("Kubernetes grant for unknown persona {}", g.persona)
            })?;
            anyhow::ensure!(
                persona.subject().is_some(),
                "persona {} has no group or service account to bind Kubernetes roles to",
                g.persona
            );
            if let Some(a) = &g.admission {
                anyhow::ensure!(
                    ADMISSIONS.contains(&a.as_str()),
                    "unknown admission policy {a} (known: {ADMISSIONS:?})"
                );
            }
            for ns in &g.namespaces {
                anyhow::ensure!(
                    self.kubernetes.namespaces.contains(ns),
                    "Kubernetes grant for {} in unknown namespace {ns}",
                    g.persona
                );
            }
            for v in &g.verbs {
                anyhow::ensure!(
                    VERBS.contains(&v.as_str()),
                    "unknown or forbidden Kubernetes verb {v}"
                );
            }
            for r in g.resources.iter().chain(&g.verbs) {
                anyhow::ensure!(
                    !r.contains('*'),
                    "wildcards are not allowed in Kubernetes grants"
                );
            }
            anyhow::ensure!(
                !g.resources.iter().any(|r| r == "secrets"),
                "no persona may read Secrets"
            );
        }
        for ns in &self.kubernetes.protected_namespaces {
            anyhow::ensure!(
                self.kubernetes.namespaces.contains(ns),
                "protected namespace {ns} is not a listed Kubernetes namespace"
            );
        }
        for (name, p) in &self.personas {
            if let Some(sa) = &p.service_account {
                anyhow::ensure!(
                    p.group.is_none()
                        && sa
                            .split_once('/')
                            .is_some_and(|(n, s)| !n.is_empty() && !s.is_empty()),
                    "persona {name}: service_account is `namespace/name`, and a persona has a group or a service account, not both"
                );
            }
        }
        Ok(())
    }

    /// Every Kubernetes permission of each persona's RBAC subject, expanded:
    /// group or service-account user name -> {(namespace, API group, resource, verb)}.
    pub fn kube_permissions(&self) -> BTreeMap<String, std::collections::BTreeSet<KubePermission>> {
        let mut out: BTreeMap<String, std::collections::BTreeSet<KubePermission>> = self
            .personas
            .values()
            .filter_map(Persona::subject)
            .map(|g| (g, Default::default()))
            .collect();
        for g in &self.kubernetes.grants {
            let Some(group) = self.personas.get(&g.persona).and_then(Persona::subject) else {
                continue;
            };
            let set = out.entry(group).or_default();
            for ns in &g.namespaces {
                for r in &g.resources {
                    let (api_group, resource) = split_resource(r);
                    for v in &g.verbs {
                        set.insert((
                            ns.clone(),
                            api_group.to_owned(),
                            resource.to_owned(),
                            v.clone(),
                        ));
                    }
                }
            }
        }
        out
    }

    /// The pod (its `app.kubernetes.io/name`) that runs `component`: its own, unless it
    /// is a container of a shared pod (`pod = ...`).
    pub fn pod_of(&self, component: &str) -> Option<&str> {
        self.components
            .get_key_value(component)
            .map(|(name, c)| c.pod.as_deref().unwrap_or(name))
    }

    pub fn spiffe_id(&self, component: &str) -> Option<String> {
        self.components.get(component).map(|c| {
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.trust_domain, c.namespace, c.service_account
            )
        })
    }

    /// Components that hold a workload certificate: every gRPC server and its allowed
    /// callers (mutual TLS).
    pub fn mtls_components(&self) -> Vec<&str> {
        let mut out: Vec<&str> = self
            .grpc
            .iter()
            .flat_map(|(server, p)| {
                std::iter::once(server.as_str()).chain(p.allowed_callers.iter().map(String::as_str))
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The SPIFFE ids allowed to call `server` over gRPC.
    pub fn allowed_grpc_callers(&self, server: &str) -> Vec<String> {
        self.grpc
            .get(server)
            .map(|p| {
                p.allowed_callers
                    .iter()
                    .filter_map(|c| self.spiffe_id(c))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `role` holds `privilege` on `table` according to the model.
    pub fn grants(&self, role: &str, table: &str, privilege: &str) -> bool {
        self.database
            .roles
            .get(role)
            .and_then(|r| r.grants.get(table))
            .is_some_and(|ps| ps.iter().any(|p| p == privilege))
    }
}

/// `apps/deployments/scale` -> (`apps`, `deployments/scale`); `pods/log` -> (``, `pods/log`).
pub fn split_resource(r: &str) -> (&str, &str) {
    const CORE: [&str; 11] = [
        "pods",
        "events",
        "services",
        "endpoints",
        "configmaps",
        "persistentvolumeclaims",
        "resourcequotas",
        "limitranges",
        "serviceaccounts",
        "secrets",
        "namespaces",
    ];
    match r.split_once('/') {
        Some((first, _)) if CORE.contains(&first) => ("", r),
        Some((group, rest)) => (group, rest),
        None => ("", r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_model_is_valid() {
        let model = AccessModel::load();
        assert_eq!(
            model.allowed_grpc_callers("analytics"),
            vec!["spiffe://beacon.local/ns/beacon-api/sa/api".to_owned()]
        );
        assert!(model.grants("beacon_loader", "raw.events", "INSERT"));
        assert!(!model.grants("beacon_loader", "raw.events", "SELECT"));
        let k8s = model.kube_permissions();
        let analysts = &k8s["beacon:analysts"];
        let has = |ns: &str, g: &str, r: &str, v: &str| {
            analysts.contains(&(ns.into(), g.into(), r.into(), v.into()))
        };
        assert!(has("beacon-pipeline", "", "pods/log", "get"));
        assert!(has("beacon-pipeline", "batch", "jobs", "create"));
        assert!(has("beacon-analysts", "", "pods/exec", "create"));
        assert!(
            !analysts
                .iter()
                .any(|p| p.0 != "beacon-pipeline" && p.0 != "beacon-analysts")
        );
        assert_eq!(
            super::split_resource("apps/deployments/scale"),
            ("apps", "deployments/scale")
        );
    }

    #[test]
    fn kubernetes_grants_cannot_name_secrets_or_wildcards() {
        let secrets = MODEL_TOML.replacen(
            "resources = [\"pods\", \"pods/log\"",
            "resources = [\"secrets\", \"pods/log\"",
            1,
        );
        assert!(
            AccessModel::parse(&secrets)
                .unwrap_err()
                .to_string()
                .contains("Secrets")
        );
        let wildcard = MODEL_TOML.replacen("verbs = [\"get\", \"create\"]", "verbs = [\"*\"]", 1);
        assert!(AccessModel::parse(&wildcard).is_err());
        let escalate =
            MODEL_TOML.replacen("verbs = [\"get\", \"create\"]", "verbs = [\"escalate\"]", 1);
        assert!(AccessModel::parse(&escalate).is_err());
    }

    #[test]
    fn inconsistent_models_are_refused() {
        let broken = MODEL_TOML.replace(
            "allowed_callers = [\"api\"]",
            "allowed_callers = [\"dashboard\"]",
        );
        assert!(
            AccessModel::parse(&broken)
                .unwrap_err()
                .to_string()
                .contains("no network flow")
        );
        let unknown_scope = MODEL_TOML.replace(
            "path = \"/v1/audit-log\", permission = \"tenant:admin\"",
            "path = \"/v1/audit-log\", permission = \"tenant:root\"",
        );
        assert!(
            AccessModel::parse(&unknown_scope)
                .unwrap_err()
                .to_string()
                .contains("unknown permission")
        );
    }
}
