//! `cargo xtask release-digests`: writes the digests the release workflow pushed
//! (.github/workflows/release.yml) into the prod overlay's `images:`, for its pull request.
//!
//! Input: one line per image, `<image> sha256:<64 hex>`, for exactly the images of the
//! access model's `[images]` (no more, no fewer, none twice). Only the entries
//! `name: <product>/<image>` of `images:` change (their `newName` becomes
//! `<registry>/<product>/<image>` and their `digest` the given one); every other line of
//! the file, comments included, is kept as it is. Anything unexpected is an error and
//! nothing is written.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail, ensure};
use platform::access::AccessModel;

/// The overlay whose digests a release sets.
pub fn prod_kustomization() -> PathBuf {
    crate::up::workspace_root().join("k8s/overlays/prod/kustomization.yaml")
}

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Registry and path the images were pushed to, e.g. `ghcr.io/acme`.
    #[arg(long)]
    pub registry: String,
    /// File of `<image> sha256:<digest>` lines (the release workflow's digests.txt).
    #[arg(long)]
    pub digests: PathBuf,
    /// The kustomization to rewrite (default: the prod overlay's).
    #[arg(long)]
    pub kustomization: Option<PathBuf>,
}

pub fn run(options: &Options) -> Result<()> {
    let model = AccessModel::load();
    let path = options
        .kustomization
        .clone()
        .unwrap_or_else(prod_kustomization);
    let digests = std::fs::read_to_string(&options.digests)
        .with_context(|| format!("reading {}", options.digests.display()))?;
    let digests = parse_digests(&digests, &model.images.keys().cloned().collect())?;
    rewrite_file(&path, &model.product, &options.registry, &digests)?;
    for (image, digest) in &digests {
        println!(
            "{}: {}/{}/{image}@{digest}",
            path.display(),
            options.registry,
            model.product
        );
    }
    Ok(())
}

/// Rewrites `path` in place (through a temporary file and a rename: never half-written).
pub fn rewrite_file(
    path: &Path,
    product: &str,
    registry: &str,
    digests: &BTreeMap<String, String>,
) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let new = set_digests(&text, product, registry, digests)
        .with_context(|| format!("rewriting {}", path.display()))?;
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Reads `<image> sha256:<hex>` lines; `expected` is the model's image names.
pub fn parse_digests(text: &str, expected: &BTreeSet<String>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [image, digest] = fields[..] else {
            bail!(
                "line {}: expected `<image> sha256:<digest>`, got {line:?}",
                n + 1
            );
        };
        ensure!(
            expected.contains(image),
            "line {}: {image:?} is not an image of the access model ({expected:?})",
            n + 1
        );
        check_digest(digest).with_context(|| format!("line {} ({image})", n + 1))?;
        ensure!(
            out.insert(image.to_owned(), digest.to_owned()).is_none(),
            "line {}: {image} appears twice",
            n + 1
        );
    }
    let missing: Vec<&String> = expected.iter().filter(|i| !out.contains_key(*i)).collect();
    ensure!(missing.is_empty(), "no digest for {missing:?}");
    Ok(out)
}

fn check_digest(digest: &str) -> Result<()> {
    let Some(hex) = digest.strip_prefix("sha256:") else {
        bail!("{digest:?} is not a sha256 digest");
    };
    ensure!(
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{digest:?} is not 64 lowercase hex digits"
    );
    ensure!(
        hex.bytes().any(|b| b != b'0'),
        "{digest:?} is the placeholder, not a pushed image"
    );
    Ok(())
}

/// A registry host with an optional port and path, lowercase (OCI reference rules).
fn check_registry(registry: &str) -> Result<()> {
    let ok = !registry.is_empty()
        && registry.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b':'))
        })
        && registry
            .split('/')
            .next()
            .is_some_and(|host| host.contains('.') || host.contains(':') || host == "localhost");
    ensure!(
        ok,
        "registry {registry:?}: expected a lowercase host[:port][/path], e.g. ghcr.io/acme"
    );
    Ok(())
}

/// The kustomization `text` with each `<product>/<image>` entry of its top-level
/// `images:` list pointing at `<registry>/<product>/<image>@<digest>`.
pub fn set_digests(
    text: &str,
    product: &str,
    registry: &str,
    digests: &BTreeMap<String, String>,
) -> Result<String> {
    check_registry(registry)?;
    for digest in digests.values() {
        check_digest(digest)?;
    }
    let mut out: Vec<String> = Vec::new();
    let mut in_images = false;
    // The image whose entry is being read, and which of its fields were written.
    let mut current: Option<(String, bool, bool)> = None;
    let mut done = BTreeSet::new();
    let finish = |out: &mut Vec<String>, current: &mut Option<(String, bool, bool)>| {
        if let Some((image, name_written, digest_written)) = current.take() {
            if !name_written {
                out.push(format!("  newName: {registry}/{product}/{image}"));
            }
            if !digest_written {
                out.push(format!("  digest: {}", digests[&image]));
            }
        }
    };
    for line in text.lines() {
        let top_level = !line.starts_with([' ', '-', '#']) && !line.is_empty();
        if top_level {
            finish(&mut out, &mut current);
            in_images = line.trim_end() == "images:";
            out.push(line.to_owned());
            continue;
        }
        if in_images && line.starts_with("- ") {
            finish(&mut out, &mut current);
            let entry = line[2..].trim();
            if let Some(name) = entry.strip_prefix("name:") {
                let name = name.trim();
                if let Some(image) = name
                    .strip_prefix(product)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|image| digests.contains_key(*image))
                {
                    ensure!(done.insert(image.to_owned()), "{name} listed twice");
                    current = Some((image.to_owned(), false, false));
                }
            } else if digests
                .keys()
                .any(|i| entry.contains(&format!("{product}/{i}")))
            {
                bail!("an images: entry not starting with `name:` names a product image: {line:?}");
            }
            out.push(line.to_owned());
            continue;
        }
        if let Some((image, name_written, digest_written)) = current.as_mut() {
            let field = line.trim_start();
            if line.starts_with("  ") && field.starts_with("newName:") {
                out.push(format!("  newName: {registry}/{product}/{image}"));
                *name_written = true;
                continue;
            }
            if line.starts_with("  ") && field.starts_with("digest:") {
                out.push(format!("  digest: {}", digests[image.as_str()]));
                *digest_written = true;
                continue;
            }
            ensure!(
                !(line.starts_with("  ") && field.starts_with("newTag:")),
                "{product}/{image}: a newTag beside the digest would be ambiguous"
            );
        }
        out.push(line.to_owned());
    }
    finish(&mut out, &mut current);
    let missing: Vec<&String> = digests.keys().filter(|i| !done.contains(*i)).collect();
    ensure!(
        missing.is_empty(),
        "the kustomization's images: has no entry for {missing:?} (expected `- name: {product}/<image>`)"
    );
    let mut new = out.join("\n");
    if text.ends_with('\n') {
        new.push('\n');
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

    fn fake(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    fn images() -> BTreeSet<String> {
        ["api", "db"].iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn parses_exactly_the_models_images() {
        let ok = parse_digests(
            &format!("# pushed\napi {}\n\ndb {}\n", fake(1), fake(2)),
            &images(),
        )
        .unwrap();
        assert_eq!(ok["api"], fake(1));
        for (bad, why) in [
            (format!("api {}\n", fake(1)), "no digest for"),
            (
                format!("api {}\ndb {}\napi {}\n", fake(1), fake(2), fake(3)),
                "twice",
            ),
            (
                format!("api {}\ndb {}\nweb {}\n", fake(1), fake(2), fake(3)),
                "not an image",
            ),
            (format!("api {ZERO}\ndb {}\n", fake(2)), "placeholder"),
            (
                format!("api sha256:ABC\ndb {}\n", fake(2)),
                "64 lowercase hex",
            ),
            (
                format!("api md5:{}\ndb {}\n", "a".repeat(32), fake(2)),
                "not a sha256",
            ),
            (
                format!("api {} extra\ndb {}\n", fake(1), fake(2)),
                "expected",
            ),
        ] {
            let e = format!("{:#}", parse_digests(&bad, &images()).unwrap_err());
            assert!(e.contains(why), "{why}: {e}");
        }
    }

    #[test]
    fn rewrites_only_the_product_entries() {
        let text = format!(
            "# keep me\nresources:\n- a.yaml\nimages:\n- name: beacon/api\n  newName: registry.example.com/beacon/api\n  digest: {ZERO}\n- name: otel/collector\n  newName: docker.io/otel/collector\n  digest: {ZERO}\n- name: beacon/db\npatches:\n- path: p.yaml\n"
        );
        let digests: BTreeMap<String, String> =
            [("api".to_owned(), fake(1)), ("db".to_owned(), fake(2))].into();
        let new = set_digests(&text, "beacon", "ghcr.io/acme", &digests).unwrap();
        assert_eq!(
            new,
            format!(
                "# keep me\nresources:\n- a.yaml\nimages:\n- name: beacon/api\n  newName: ghcr.io/acme/beacon/api\n  digest: {}\n- name: otel/collector\n  newName: docker.io/otel/collector\n  digest: {ZERO}\n- name: beacon/db\n  newName: ghcr.io/acme/beacon/db\n  digest: {}\npatches:\n- path: p.yaml\n",
                fake(1),
                fake(2)
            )
        );
        // Idempotent: the same input gives the same file.
        assert_eq!(
            set_digests(&new, "beacon", "ghcr.io/acme", &digests).unwrap(),
            new
        );

        let only_api = text.replace("- name: beacon/db\n", "");
        let e = format!(
            "{:#}",
            set_digests(&only_api, "beacon", "ghcr.io/acme", &digests).unwrap_err()
        );
        assert!(e.contains("no entry for [\"db\"]"), "{e}");
        for registry in [
            "",
            "GHCR.io/acme",
            "ghcr.io//acme",
            "acme",
            "ghcr.io/acme x",
        ] {
            assert!(
                set_digests(&text, "beacon", registry, &digests).is_err(),
                "{registry:?}"
            );
        }
        let tagged = text.replace("  digest: ", "  newTag: v1\n  digest: ");
        assert!(set_digests(&tagged, "beacon", "ghcr.io/acme", &digests).is_err());
    }
}
