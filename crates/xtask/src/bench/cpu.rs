//! CPU time from `/proc` (Linux): which side of a benchmark spent the CPU, whatever the
//! wall clock did on a shared machine. Threads of this process are told apart by their
//! names (a benchmark runs its server on a runtime with named threads); PostgreSQL
//! backends by `application_name`.

use std::{collections::HashMap, path::Path};

use sqlx::PgConnection;

/// Clock ticks per second of `utime`/`stime` in `/proc/.../stat` (`USER_HZ`, 100 on
/// Linux whatever the kernel's own tick).
const TICKS_PER_SECOND: f64 = 100.0;

/// The name and the user + system CPU seconds of a `/proc/.../stat` file.
fn stat(path: &Path) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The name is in parentheses and may contain spaces: fields follow the last ')'.
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let name = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some((name, ticks as f64 / TICKS_PER_SECOND))
}

/// CPU seconds of a live process (all its threads).
pub fn process(pid: u32) -> Option<f64> {
    stat(Path::new(&format!("/proc/{pid}/stat"))).map(|(_, cpu)| cpu)
}

/// CPU seconds of this process's live threads: (named with `prefix`, all others).
pub fn own_threads(prefix: &str) -> (f64, f64) {
    let mut split = (0.0, 0.0);
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return split;
    };
    for task in tasks.flatten() {
        if let Some((name, cpu)) = stat(&task.path().join("stat")) {
            if name.starts_with(prefix) {
                split.0 += cpu;
            } else {
                split.1 += cpu;
            }
        }
    }
    split
}

/// The CPU seconds each PostgreSQL backend of `database` with this `application_name`
/// has used so far (the server must run on this machine).
#[derive(Debug, Default, Clone)]
pub struct Backends(HashMap<u32, f64>);

impl Backends {
    /// Samples the live backends, keeping the last figure of backends that have gone.
    pub async fn sample(
        &mut self,
        admin: &mut PgConnection,
        database: &str,
        application: &str,
    ) -> anyhow::Result<()> {
        let pids: Vec<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = $2",
        )
        .bind(database)
        .bind(application)
        .fetch_all(admin)
        .await?;
        for pid in pids {
            let pid = pid.unsigned_abs();
            if let Some(cpu) = process(pid) {
                self.0.insert(pid, cpu);
            }
        }
        Ok(())
    }

    /// CPU seconds used since `before` (backends absent from `before` count from zero).
    pub fn since(&self, before: &Backends) -> f64 {
        self.0
            .iter()
            .map(|(pid, cpu)| cpu - before.0.get(pid).copied().unwrap_or(0.0))
            .sum()
    }
}

/// When `BEACON_BENCH_CALLGRIND` is set (the benchmark runs under
/// `valgrind --tool=callgrind`), zeroes callgrind's counters (`label` = `None`) or dumps
/// them under `label`, so a profile holds exactly one measured phase.
pub fn callgrind(label: Option<&str>) {
    if std::env::var_os("BEACON_BENCH_CALLGRIND").is_none() {
        return;
    }
    let action = label.map_or_else(|| "--zero".to_owned(), |l| format!("--dump={l}"));
    let status = std::process::Command::new("callgrind_control")
        .arg(action)
        .arg(std::process::id().to_string())
        .stdout(std::process::Stdio::null())
        .status();
    if !matches!(status, Ok(s) if s.success()) {
        eprintln!("callgrind_control failed: {status:?}");
    }
}
