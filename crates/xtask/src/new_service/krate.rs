//! The new service's crate: its manifest, `main`, and README.

use super::{Kind, Service, snake};

pub(super) fn cargo_toml(service: &Service<'_>) -> String {
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

pub(super) fn main_rs(name: &str) -> String {
    format!(
        "fn main() {{\n    platform::service::main(\"{name}\", {}::run);\n}}\n",
        snake(name)
    )
}

/// The crate's README: a paragraph to write, and the part `access render` keeps in step
/// with the model.
pub(super) fn readme(service: &Service<'_>) -> String {
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
