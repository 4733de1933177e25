//! `cargo xtask access allow FROM TO[:PORT]`: adds one network flow to the access model
//! and renders the layers. The model is edited as text (a `[[flows]]` table appended), so
//! its comments and layout stay as they are; `cargo xtask access diff HEAD` then shows
//! exactly the connection it opens.

use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::access::AccessModel;

/// What `access allow` takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// The calling component (or `internet`).
    pub from: String,
    /// The component called, optionally with the name of its port (default: its only
    /// port that is not `admin`).
    pub to: String,
    /// How the callee authenticates the caller (shown in docs/ACCESS.md and the
    /// NetworkPolicy's comment).
    #[arg(long)]
    pub auth: Option<String>,
}

/// The model `text` with the flow added; refuses unknown components and ports, a flow
/// that exists already, and a guess between several ports.
pub fn with_flow(text: &str, options: &Options) -> anyhow::Result<String> {
    let model = AccessModel::parse(text)?;
    let (to, port) = match options.to.split_once(':') {
        Some((to, port)) => (to, Some(port)),
        None => (options.to.as_str(), None),
    };
    let callee = model
        .components
        .get(to)
        .with_context(|| format!("unknown component {to}"))?;
    let port = match port {
        Some(port) => port.to_owned(),
        None => {
            let ports: Vec<&String> = callee.ports.keys().filter(|p| *p != "admin").collect();
            match ports.as_slice() {
                [one] => (*one).clone(),
                [] => anyhow::bail!("{to} listens on no port but admin"),
                _ => anyhow::bail!("{to} has several ports: name one ({to}:PORT)"),
            }
        }
    };
    anyhow::ensure!(
        !model
            .flows
            .iter()
            .any(|f| f.from == options.from && f.to == to && f.port == port),
        "{} may reach {to} on {port} already",
        options.from
    );
    let mut out = format!(
        "{}\n\n[[flows]]\nfrom = \"{}\"\nto = \"{to}\"\nport = \"{port}\"\n",
        text.trim_end(),
        options.from
    );
    if let Some(auth) = &options.auth {
        out.push_str(&format!("auth = {}\n", toml_string(auth)));
    }
    AccessModel::parse(&out).context("the model with the new flow")?;
    Ok(out)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Adds the flow to the model under `root` and renders; returns the files written.
pub fn allow(root: &Path, options: &Options) -> anyhow::Result<Vec<PathBuf>> {
    let path = root.join(super::diff::MODEL_PATH);
    let text = std::fs::read_to_string(&path).context("reading the access model")?;
    let new = with_flow(&text, options)?;
    std::fs::write(&path, &new)?;
    let mut wrote = vec![path];
    wrote.extend(super::render(root, &AccessModel::parse(&new)?)?);
    Ok(wrote)
}

#[cfg(test)]
mod tests {
    use platform::access::MODEL_TOML;

    use super::*;

    fn options(from: &str, to: &str) -> Options {
        Options {
            from: from.into(),
            to: to.into(),
            auth: Some("mutual TLS, caller identity".into()),
        }
    }

    /// The second case of issue 11: a flow between two existing services opens exactly
    /// one connection (tests/k8s proves the same on the rendered NetworkPolicies).
    #[test]
    fn one_flow_opens_exactly_one_connection() {
        let old = AccessModel::load();
        let text = with_flow(MODEL_TOML, &options("dashboard", "analytics")).unwrap();
        let new = AccessModel::parse(&text).unwrap();
        let rows = crate::access::diff::changes(&old, &new);
        assert_eq!(
            rows,
            vec![(
                "opens",
                "network",
                "beacon-dashboard/dashboard → beacon-analytics/analytics:50051 (dashboard → analytics grpc)"
                    .to_owned()
            )]
        );
        // The text is the old one plus one table: comments and order are kept.
        assert!(text.starts_with(MODEL_TOML.trim_end()));
        // Only the two namespaces' policies change among the Kubernetes files.
        let before = crate::access::generated(&old);
        let mut changed: Vec<String> = crate::access::generated(&new)
            .into_iter()
            .filter(|f| !before.contains(f) && f.path.ends_with(".yaml"))
            .map(|f| f.path)
            .collect();
        changed.sort();
        assert_eq!(
            changed,
            [
                "k8s/base/analytics/networkpolicy.yaml",
                "k8s/base/dashboard/networkpolicy.yaml"
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_add_exactly() {
        for (from, to, why) in [
            ("dashboard", "api", "already"),
            ("dashboard", "nothing", "unknown component"),
            ("nobody", "api", "unknown component nobody"),
            ("api", "api:smtp", "unknown port"),
            ("api", "transform", "no port but admin"),
            ("api", "jaeger", "several ports"),
        ] {
            let err = format!(
                "{:#}",
                with_flow(MODEL_TOML, &options(from, to)).unwrap_err()
            );
            assert!(err.contains(why), "{from} → {to}: {err}");
        }
    }
}
