//! The access model (`security/access-model.toml`), embedded at build time so every
//! service and test reads the same rules.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The model's text, as committed.
pub const MODEL_TOML: &str = include_str!("../../../security/access-model.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessModel {
    pub trust_domain: String,
    pub personas: BTreeMap<String, Persona>,
    pub components: BTreeMap<String, Component>,
    pub flows: Vec<Flow>,
    pub grpc: BTreeMap<String, GrpcPolicy>,
    pub database: Database,
    pub api: Api,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub kind: String,
    pub description: String,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub db_role: Option<String>,
    #[serde(default)]
    pub api_scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub namespace: String,
    pub service_account: String,
    #[serde(default)]
    pub pod: Option<String>,
    pub ports: BTreeMap<String, u16>,
    #[serde(default)]
    pub db_role: Option<String>,
    #[serde(default)]
    pub loopback_only: bool,
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
        Ok(())
    }

    pub fn spiffe_id(&self, component: &str) -> Option<String> {
        self.components.get(component).map(|c| {
            format!(
                "spiffe://{}/ns/{}/sa/{}",
                self.trust_domain, c.namespace, c.service_account
            )
        })
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
