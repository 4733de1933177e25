//! `cargo xtask bench abuse`: the abuse suite (`tests/abuse`: hostile logins, hostile
//! ingest bodies, a hot key in the transform, an open transaction elsewhere on the
//! cluster, out-of-range dates, shutdown under load) run optimised and one test at a
//! time, each figure printed beside the bound it is held to. The tests assert only
//! generous bounds (no timing assertion that could flake); the real figures live here
//! and in docs/BENCHMARKS.md.

use std::fmt::Write as _;

use anyhow::Context as _;

/// Nothing beyond cargo and the PostgreSQL at `DATABASE_URL` the tests use.
pub const TOOLS: &[super::Tool] = &[];

#[derive(Debug, serde::Deserialize)]
struct Figure {
    scenario: String,
    figure: String,
    value: f64,
    bound: Option<f64>,
    unit: String,
}

pub fn run() -> anyhow::Result<()> {
    let root = crate::up::workspace_root();
    let report = std::env::temp_dir().join(format!("beacon-abuse-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let machine = super::machine();
    let args = [
        "test",
        "--release",
        "--locked",
        "-p",
        "beacon-e2e",
        "--test",
        "abuse",
        "--",
        "--test-threads=1",
    ];
    println!("· cargo {} (BEACON_ABUSE_REPORT set)", args.join(" "));
    let status =
        std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(args)
            .env("BEACON_ABUSE_REPORT", &report)
            .status()?;
    let text = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    anyhow::ensure!(status.success(), "the abuse suite failed (see above)");
    let figures = text
        .lines()
        .map(|l| serde_json::from_str::<Figure>(l).with_context(|| format!("report line {l:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!figures.is_empty(), "the abuse suite recorded no figure");
    println!("{}", render(&machine, &figures));
    Ok(())
}

fn render(machine: &str, figures: &[Figure]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "\nMachine: {machine}\n");
    let _ = writeln!(out, "| scenario | figure | measured | bound |");
    let _ = writeln!(out, "| --- | --- | ---: | ---: |");
    for f in figures {
        let bound = f
            .bound
            .filter(|b| b.is_finite())
            .map_or_else(|| "–".to_owned(), |b| format!("{b:.1} {}", f.unit));
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} {} | {bound} |",
            f.scenario, f.figure, f.value, f.unit
        );
    }
    out
}
