//! The release workflow's last step, `cargo xtask release-digests`, on fake digests: the
//! prod overlay, rewritten in a copy of `k8s/`, renders every Beacon image from the
//! given registry at the given digest and nothing else differently.

use std::{collections::BTreeMap, path::Path};

use serde_json::Value;

use crate::{model, render};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every container image of the rendered pod templates, with its owner.
fn images(docs: &[Value]) -> Vec<(String, String)> {
    render::templates(docs)
        .iter()
        .flat_map(|t| {
            render::containers(t.spec).into_iter().map(|c| {
                (
                    t.owner.clone(),
                    c["image"].as_str().unwrap_or("").to_owned(),
                )
            })
        })
        .collect()
}

#[test]
fn release_digests_point_prod_at_the_pushed_images() {
    let model = model();
    let digests: BTreeMap<String, String> = model
        .images
        .keys()
        .enumerate()
        .map(|(i, image)| {
            (
                image.clone(),
                format!("sha256:{}", format!("{:02x}", i + 1).repeat(32)),
            )
        })
        .collect();
    let input: String = digests.iter().map(|(i, d)| format!("{i} {d}\n")).collect();
    let expected: std::collections::BTreeSet<String> = model.images.keys().cloned().collect();
    let parsed = xtask::release::parse_digests(&input, &expected).expect("the workflow's format");

    let dir = tempfile::tempdir().unwrap();
    copy_dir(&render::root().join("k8s"), &dir.path().join("k8s"));
    let kustomization = dir.path().join("k8s/overlays/prod/kustomization.yaml");
    xtask::release::rewrite_file(&kustomization, &model.product, "ghcr.io/acme", &parsed)
        .expect("rewrite");
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(dir.path().join("k8s/overlays/prod"))
        .output()
        .expect("kubectl kustomize");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let after = render::parse(&String::from_utf8(output.stdout).unwrap());
    let before = render::prod();

    // Every Beacon image is now the pushed one, and every image of the model is used.
    let prefix = format!("/{}/", model.product);
    let mut used = std::collections::BTreeSet::new();
    for (owner, image) in images(&after) {
        let Some((repo, digest)) = image.split_once('@') else {
            panic!("{owner}: {image} not pinned by digest");
        };
        if let Some(name) = repo
            .strip_prefix("ghcr.io/acme")
            .and_then(|r| r.strip_prefix(&prefix))
        {
            assert_eq!(digest, digests[name], "{owner}");
            used.insert(name.to_owned());
        } else {
            assert!(
                !repo.contains(&prefix),
                "{owner}: {image} still names the old registry"
            );
        }
    }
    assert_eq!(used, expected, "images of the model in prod");

    // Nothing but those images changed: replace them back and compare the documents.
    let mut restored = serde_json::to_string(&after).unwrap();
    for ((owner, new), (owner_before, old)) in images(&after).iter().zip(&images(&before)) {
        assert_eq!(owner, owner_before);
        restored = restored.replace(&format!("\"{new}\""), &format!("\"{old}\""));
    }
    assert_eq!(
        serde_json::from_str::<Vec<Value>>(&restored).unwrap(),
        before,
        "the rewrite changed more than the Beacon images"
    );

    // A placeholder digest is refused before anything is written.
    let zero = input.replacen(&digests.values().next().unwrap()[7..], &"0".repeat(64), 1);
    assert!(xtask::release::parse_digests(&zero, &expected).is_err());
}
