//! A copy of the workspace to try a scaffolding command in (`new-service`, `access allow`,
//! `new-product`) and build, test and check it there, without touching the real tree.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Context;

/// A copy of the tracked and untracked-but-not-ignored files of the workspace (as in the
/// working tree), like a fresh clone with the current changes. Removed on drop unless
/// `KEEP_SCRATCH` is set (to look at what a failing proof left).
#[derive(Debug)]
pub struct Copy {
    pub dir: PathBuf,
}

impl Copy {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let root = crate::up::workspace_root();
        let dir = std::env::temp_dir().join(format!("beacon-{label}-{}", uuid::Uuid::new_v4()));
        for path in workspace_files(&root)? {
            let (from, to) = (root.join(&path), dir.join(&path));
            std::fs::create_dir_all(to.parent().context("a file has a parent")?)?;
            std::fs::copy(&from, &to).with_context(|| format!("copying {}", path.display()))?;
        }
        Ok(Self { dir })
    }

    /// The static checks, with no hand edit: `access check`, the render of both overlays
    /// (after `secrets`, which the dev overlay reads), tests/k8s, and the
    /// network-config-analyzer snapshots: written first when `update_nca`, then compared.
    pub fn static_checks(&self, update_nca: bool) -> anyhow::Result<()> {
        let xtask = |args: &[&str]| {
            let mut all = vec!["run", "-q", "-p", "xtask", "--"];
            all.extend(args);
            self.cargo(&all)
        };
        xtask(&["access", "check"])?;
        xtask(&["secrets"])?;
        for overlay in crate::nca::OVERLAYS {
            let out = format!("{}/rendered-{overlay}.yaml", self.dir.display());
            self.run(
                "kubectl",
                &["kustomize", &format!("k8s/overlays/{overlay}"), "-o", &out],
            )?;
            std::fs::remove_file(&out)?;
        }
        let model = platform::access::AccessModel::parse(&std::fs::read_to_string(
            self.dir.join(crate::access::diff::MODEL_PATH),
        )?)?;
        let e2e = format!("{}-e2e", model.product);
        self.cargo(&["test", "-p", &e2e, "--test", "k8s"])?;
        if update_nca {
            xtask(&["nca"])?;
        }
        xtask(&["nca", "--check"])
    }

    /// Runs `program args` in the copy; an error names the command when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        run_in(&self.dir, program, args)
    }

    /// `cargo args` in the copy (the cargo running the tests, and its target directory,
    /// so the dependencies built already are reused).
    pub fn cargo(&self, args: &[&str]) -> anyhow::Result<()> {
        self.run(&cargo(), args)
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_SCRATCH").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The files of the working tree at `root` that git tracks or would track (untracked
/// but not ignored), as paths relative to `root`.
pub fn workspace_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let files = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .context("git ls-files")?;
    anyhow::ensure!(files.status.success(), "git ls-files failed");
    Ok(files
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .filter_map(|p| std::str::from_utf8(p).ok())
        .map(PathBuf::from)
        .filter(|p| root.join(p).is_file())
        .collect())
}

/// The cargo that runs this process (`CARGO`), or `cargo`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

pub fn run_in(dir: &Path, program: &str, args: &[&str]) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let status = Command::new(program)
        .current_dir(dir)
        .args(args)
        .status()
        .with_context(|| format!("starting {program}"))?;
    anyhow::ensure!(
        status.success(),
        "`{program} {}` failed in {}",
        args.join(" "),
        dir.display()
    );
    eprintln!(
        "ok ({:.0?}): {program} {}",
        started.elapsed(),
        args.join(" ")
    );
    Ok(())
}
