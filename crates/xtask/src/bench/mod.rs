//! `cargo xtask bench <what>`: reproducible benchmarks against real processes (release
//! builds) and the local PostgreSQL. Each benchmark lives in its own module and prints
//! a Markdown report to paste into docs/BENCHMARKS.md.

pub mod abuse;
pub mod analytics;
pub mod api;
pub mod cpu;
pub mod ingest;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Peak resident set size (VmHWM) of a live process, in KiB. Read it before the
/// process exits: a zombie has no memory map.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// A short description of the machine: CPU model, cores, memory, load.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or_else(|| "?".into(), |kib| format!("{} GiB", kib / 1024 / 1024));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{cpu}, {cores} cores, {mem} RAM; load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// An external program a benchmark runs, and the Debian/Ubuntu package that has it.
pub type Tool = (&'static str, &'static str);

/// Fails unless every tool is on PATH, naming the missing ones and their packages.
pub fn require_tools(tools: &[Tool]) -> anyhow::Result<()> {
    let missing: Vec<Tool> = tools
        .iter()
        .copied()
        .filter(|(name, _)| crate::up::find_on_path(name).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = missing
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    let mut packages: Vec<&str> = missing.iter().map(|(_, package)| *package).collect();
    packages.sort_unstable();
    packages.dedup();
    anyhow::bail!(
        "this benchmark runs {}, not found on PATH. Install {} (Debian/Ubuntu: `apt-get \
         install {}`) and run it again",
        names.join(" and "),
        if missing.len() == 1 { "it" } else { "them" },
        packages.join(" ")
    )
}

/// Builds the release binary of `package` and returns its path.
pub fn build_release(root: &Path, package: &str) -> anyhow::Result<PathBuf> {
    crate::up::cargo_build(root, &["--release", "-p", package, "--bin", package])?
        .remove(package)
        .with_context(|| format!("the release build of {package} made no executable"))
}
