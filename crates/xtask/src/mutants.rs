//! `cargo xtask mutants`: every proof must be able to fail.
//!
//! `security/mutations.toml` lists bugs (SQL, Rust, manifests) as a find/replace in one
//! file, each with the test command that must fail on it. Each mutation is applied in
//! turn to a scratch copy of the repository (a detached git worktree of `HEAD` plus the
//! uncommitted changes to tracked files), the command runs there, the file is restored,
//! and the result is a Markdown table: caught, missed, or broken (the mutation did not
//! apply, or the command failed to compile rather than failed a test).
//!
//! Each command's output is kept in `<target>/mutants-logs/<name>.log`.
//! The scratch copy builds into the current target directory (`CARGO_TARGET_DIR`, or
//! `target/`), so dependencies are not rebuilt. Its workspace version is changed
//! (`0.0.0-mutants`): Cargo names a path crate's artifacts by name, version and path
//! relative to the workspace, so without it the scratch's (mutated) crates would
//! overwrite the checkout's, and either tree could pick up the other's as fresh.

use anyhow::{Context, bail};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
pub struct Mutations {
    pub mutation: Vec<Mutation>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mutation {
    /// Short, unique name (`--only` matches on it).
    pub name: String,
    /// The claim (README's "What is verified where") this mutation breaks.
    pub claim: String,
    /// Path relative to the workspace root.
    pub file: String,
    /// Text that must occur exactly once in `file`.
    pub find: String,
    pub replace: String,
    /// Shell command, run at the scratch copy's root, that must fail.
    pub test: String,
    /// Further edits that make up the same bug (e.g. both layers of a defence in depth).
    #[serde(default)]
    pub also: Vec<Edit>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub file: String,
    pub find: String,
    pub replace: String,
}

impl Mutation {
    /// Every edit of this mutation, the main one first.
    pub fn edits(&self) -> Vec<Edit> {
        let main = Edit {
            file: self.file.clone(),
            find: self.find.clone(),
            replace: self.replace.clone(),
        };
        std::iter::once(main)
            .chain(self.also.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Caught,
    Missed,
    /// The find text is not in the file exactly once, or the build failed.
    Broken,
}

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Only the mutations whose name contains this text (repeatable).
    #[arg(long)]
    pub only: Vec<String>,
    /// The list of mutations.
    #[arg(long, default_value = "security/mutations.toml")]
    pub list: PathBuf,
    /// Seconds a test command may run before it counts as missed.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
    /// Also write the table to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Only check that every mutation applies (find occurs once); run nothing.
    #[arg(long)]
    pub check: bool,
}

pub fn load(path: &Path) -> anyhow::Result<Mutations> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let list: Mutations = toml::from_str(&text).with_context(|| path.display().to_string())?;
    let mut names: Vec<&str> = list.mutation.iter().map(|m| m.name.as_str()).collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
        bail!("mutation {} is listed twice", w[0]);
    }
    Ok(list)
}

/// `text` with the edit applied, or why it cannot be.
pub fn apply(text: &str, e: &Edit) -> anyhow::Result<String> {
    match text.matches(e.find.as_str()).count() {
        1 => Ok(text.replacen(e.find.as_str(), &e.replace, 1)),
        n => bail!(
            "`find` occurs {n} times in {} (must be once): {:?}",
            e.file,
            e.find
        ),
    }
}

/// Applies every edit of `m` under `root`; returns the original contents to restore.
pub fn apply_all(root: &Path, m: &Mutation) -> anyhow::Result<Vec<(PathBuf, String)>> {
    let mut originals: Vec<(PathBuf, String)> = Vec::new();
    for edit in m.edits() {
        let path = root.join(&edit.file);
        let text = std::fs::read_to_string(&path).with_context(|| edit.file.clone())?;
        if !originals.iter().any(|(p, _)| *p == path) {
            originals.push((path.clone(), text.clone()));
        }
        let mutated = apply(&text, &edit).with_context(|| m.name.clone());
        match mutated {
            Ok(mutated) => std::fs::write(&path, mutated)?,
            Err(e) => {
                restore(&originals)?;
                return Err(e);
            }
        }
    }
    Ok(originals)
}

/// Applies every edit of `m` in memory (the working tree is never touched): each one
/// must apply, and change something.
pub fn check(root: &Path, m: &Mutation) -> anyhow::Result<()> {
    let mut texts: Vec<(String, String)> = Vec::new();
    for edit in m.edits() {
        let text = match texts.iter().find(|(f, _)| *f == edit.file) {
            Some((_, t)) => t.clone(),
            None => {
                std::fs::read_to_string(root.join(&edit.file)).with_context(|| edit.file.clone())?
            }
        };
        let mutated = apply(&text, &edit).with_context(|| m.name.clone())?;
        anyhow::ensure!(mutated != text, "{}: an edit changes nothing", m.name);
        texts.retain(|(f, _)| *f != edit.file);
        texts.push((edit.file.clone(), mutated));
    }
    Ok(())
}

pub fn restore(originals: &[(PathBuf, String)]) -> anyhow::Result<()> {
    for (path, text) in originals {
        std::fs::write(path, text)?;
    }
    Ok(())
}

/// The command failed because it did not build (not because a test failed).
fn did_not_build(output: &str) -> bool {
    output.contains("could not compile") || output.contains("error: could not find")
}

pub fn run(options: Options) -> anyhow::Result<()> {
    let root = crate::up::workspace_root();
    let list = load(&root.join(&options.list))?;
    let selected: Vec<&Mutation> = list
        .mutation
        .iter()
        .filter(|m| options.only.is_empty() || options.only.iter().any(|o| m.name.contains(o)))
        .collect();
    if selected.is_empty() {
        bail!("no mutation matches {:?}", options.only);
    }
    if options.check {
        for m in &selected {
            check(&root, m)?;
        }
        println!("{} mutations apply", selected.len());
        return Ok(());
    }

    let target = crate::up::target_dir(&root)?;
    let scratch = target.join("mutants-scratch");
    prepare_scratch(&root, &scratch)?;

    let mut rows = Vec::new();
    for m in selected {
        let originals = apply_all(&scratch, m)?;
        let started = Instant::now();
        println!("== {}: {}", m.name, m.test);
        let result = run_test(
            &scratch,
            &target,
            &m.test,
            Duration::from_secs(options.timeout),
        );
        restore(&originals)?;
        if let Ok((_, output)) = &result {
            let logs = target.join("mutants-logs");
            std::fs::create_dir_all(&logs)?;
            std::fs::write(logs.join(format!("{}.log", m.name)), output)?;
        }
        let (outcome, note) = match result {
            Ok((false, output)) if did_not_build(&output) => {
                (Outcome::Broken, "did not build".to_owned())
            }
            Ok((false, _)) => (Outcome::Caught, String::new()),
            Ok((true, _)) => (Outcome::Missed, "the test passed".to_owned()),
            Err(e) => (Outcome::Missed, e.to_string()),
        };
        println!("   {outcome:?} in {:.0?}", started.elapsed());
        rows.push((m, outcome, note, started.elapsed()));
    }
    // The scratch worktree goes; the logs stay.
    let git_remove = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["worktree", "remove", "--force"])
        .arg(&scratch)
        .status();
    if !git_remove.is_ok_and(|s| s.success()) {
        println!(
            "could not remove the scratch worktree {}",
            scratch.display()
        );
    }
    let mut table = String::from(
        "| mutation | file | test | result | time |\n| --- | --- | --- | --- | --- |\n",
    );
    for (m, outcome, note, took) in &rows {
        table.push_str(&format!(
            "| {} | `{}` | `{}` | {}{} | {}s |\n",
            m.name,
            m.file,
            m.test,
            match outcome {
                Outcome::Caught => "caught",
                Outcome::Missed => "**missed**",
                Outcome::Broken => "**broken**",
            },
            if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            },
            took.as_secs()
        ));
    }
    println!("\n{table}");
    if let Some(out) = &options.out {
        std::fs::write(out, &table)?;
    }
    let bad = rows.iter().filter(|r| r.1 != Outcome::Caught).count();
    if bad > 0 {
        bail!("{bad} of {} mutations not caught", rows.len());
    }
    Ok(())
}

/// A detached worktree of HEAD at `scratch`, with the uncommitted changes to tracked files.
fn prepare_scratch(root: &Path, scratch: &Path) -> anyhow::Result<()> {
    let git = |dir: &Path, args: &[&str]| -> anyhow::Result<Vec<u8>> {
        let out = Command::new("git").arg("-C").arg(dir).args(args).output()?;
        if !out.status.success() {
            bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    if scratch.exists() {
        git(
            root,
            &["worktree", "remove", "--force", &scratch.to_string_lossy()],
        )
        .ok();
        if scratch.exists() {
            std::fs::remove_dir_all(scratch)?;
        }
        git(root, &["worktree", "prune"])?;
    }
    git(
        root,
        &[
            "worktree",
            "add",
            "--detach",
            &scratch.to_string_lossy(),
            "HEAD",
        ],
    )?;
    let diff = git(root, &["diff", "HEAD", "--binary"])?;
    if !diff.is_empty() {
        let patch = scratch.join(".mutants.patch");
        std::fs::write(&patch, diff)?;
        git(scratch, &["apply", ".mutants.patch"])?;
        std::fs::remove_file(patch)?;
    }
    let manifest = scratch.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)?;
    let version = "\nversion = \"";
    let Some(at) = text.find(version) else {
        bail!("no workspace version in {}", manifest.display());
    };
    let end = at + version.len();
    let close = end + text[end..].find('"').context("unterminated version")?;
    std::fs::write(
        &manifest,
        format!("{}0.0.0-mutants{}", &text[..end], &text[close..]),
    )?;
    Ok(())
}

/// Runs `command` under `sh -c` in `dir`; `(succeeded, output)`.
fn run_test(
    dir: &Path,
    target: &Path,
    command: &str,
    timeout: Duration,
) -> anyhow::Result<(bool, String)> {
    let log = dir.join(".mutants.log");
    let mut shell = Command::new("sh");
    // What `cargo run` set for this process (CARGO_PKG_*, CARGO_MANIFEST_DIR, …) would
    // change build-script fingerprints and rebuild dependencies: the test gets a clean
    // environment, as if typed in a shell.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if (name.starts_with("CARGO_") && name != "CARGO_HOME") || name.starts_with("RUSTC") {
            shell.env_remove(name.as_ref());
        }
    }
    let mut child = shell
        .arg("-c")
        .arg(format!("{command} >.mutants.log 2>&1"))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        // Every build there is a one-off: incremental state would only fill the disk.
        .env("CARGO_INCREMENTAL", "0")
        .spawn()?;
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            bail!("timed out after {}s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    std::fs::remove_file(&log).ok();
    Ok((status.success(), output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_mutation_applies_exactly_once() {
        let root = crate::up::workspace_root();
        let list = load(&root.join("security/mutations.toml")).unwrap();
        assert!(!list.mutation.is_empty());
        for m in &list.mutation {
            check(&root, m).unwrap();
        }
    }
}
