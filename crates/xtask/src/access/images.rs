//! `security/images.txt`: the product's images as plain lines, for the tools that cannot
//! read TOML (the Dockerfile's shell, the Tiltfile).

use std::fmt::Write as _;

use platform::access::AccessModel;

use super::{Generated, header};

pub fn files(model: &AccessModel) -> Vec<Generated> {
    let mut out = header("#");
    out.push_str(
        "#
# One line per image of [images] in the model: <image> <cargo package> <binary>.
# Read by the Dockerfile (what the builder compiles) and the Tiltfile (what it builds).
",
    );
    for (name, image) in &model.images {
        let _ = writeln!(out, "{name} {} {}", image.package, image.binary);
    }
    vec![Generated::new("security/images.txt", out)]
}

/// `-p <package>` for every image's crate: what `cargo build` needs to build them all.
pub fn cargo_packages(model: &AccessModel) -> Vec<String> {
    let mut packages: Vec<&str> = model.images.values().map(|i| i.package.as_str()).collect();
    packages.sort_unstable();
    packages.dedup();
    packages
        .into_iter()
        .flat_map(|p| ["-p".to_owned(), p.to_owned()])
        .collect()
}
