//! `cargo xtask erasure replay --ledger FILE --key-file F`: re-applies erasures after a
//! restore to an earlier point (docs/SECURITY.md §9). The ledger file holds one
//! `tenant_id,subject_hash_hex` line per erasure requested after the restore point
//! (exported from the current cluster; hashes only). For each tenant, every distinct
//! `user_key` of the restored raw events is hashed with the api's key; a match is
//! requested again as an erasure (`requested_by = system:restore-replay`), which the
//! transform then carries out as usual. One pass over the tenant's distinct keys, in
//! pages of [`PAGE`]: memory holds the ledger's hashes, not the events.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use sqlx::PgConnection;
use uuid::Uuid;

/// Distinct user keys read per query.
pub const PAGE: i64 = 10_000;

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (byte, pair) in out.iter_mut().zip(hex.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The ledger file's lines: tenant → subject hashes.
pub fn parse_ledger(text: &str) -> anyhow::Result<HashMap<Uuid, HashSet<[u8; 32]>>> {
    let mut ledger: HashMap<Uuid, HashSet<[u8; 32]>> = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let (tenant, hash) = line
            .trim()
            .split_once(',')
            .with_context(|| format!("ledger line {}: expected tenant_id,subject_hash", n + 1))?;
        let tenant: Uuid = tenant
            .parse()
            .with_context(|| format!("ledger line {}: tenant id", n + 1))?;
        let bytes = decode_hash(hash)
            .with_context(|| format!("ledger line {}: subject hash (64 hex digits)", n + 1))?;
        ledger.entry(tenant).or_default().insert(bytes);
    }
    Ok(ledger)
}

/// Requests again, on `owner` (a connection acting as the owner), the erasure of every
/// subject of `ledger` found in the restored events. Returns how many were requested.
pub async fn replay(
    owner: &mut PgConnection,
    key: &api::subjects::SubjectKey,
    ledger: &HashMap<Uuid, HashSet<[u8; 32]>>,
) -> anyhow::Result<u64> {
    let mut found = Vec::new();
    for (tenant, hashes) in ledger {
        let mut after = String::new();
        loop {
            let page: Vec<String> = sqlx::query_scalar(
                "SELECT DISTINCT user_key FROM raw.events
                 WHERE tenant_id = $1 AND user_key IS NOT NULL AND user_key > $2
                 ORDER BY user_key LIMIT $3",
            )
            .bind(tenant)
            .bind(&after)
            .bind(PAGE)
            .fetch_all(&mut *owner)
            .await
            .context("reading the restored events' user keys")?;
            let Some(last) = page.last().cloned() else {
                break;
            };
            for user_key in page {
                let hash = key.hash(*tenant, &user_key);
                if hashes.contains(&hash) {
                    found.push((*tenant, hash, user_key));
                }
            }
            after = last;
        }
    }
    let mut requested = 0;
    for (tenant, hash, user_key) in found {
        requested += sqlx::query(
            "INSERT INTO app.erasures (id, tenant_id, subject_hash, user_key, requested_by)
             VALUES ($1, $2, $3, $4, 'system:restore-replay') ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(tenant)
        .bind(hash.as_slice())
        .bind(&user_key)
        .execute(&mut *owner)
        .await?
        .rows_affected();
    }
    Ok(requested)
}

/// `cargo xtask erasure ...`
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// After a restore to an earlier point: request again the erasures of the ledger
    /// file (`tenant_id,subject_hash_hex` lines exported from the current cluster).
    Replay {
        #[arg(long)]
        ledger: std::path::PathBuf,
        /// The api's subject hash key (the `api-subject-hash` Secret's `key`).
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// The restored database, as its administrator or the migrator.
        #[arg(
            long,
            default_value = "postgres://beacon_migrator@127.0.0.1:5432/beacon"
        )]
        database_url: String,
        /// File holding that login's password (none: trust or ~/.pgpass).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
    },
}

pub async fn run(action: Action) -> anyhow::Result<()> {
    use sqlx::Connection as _;
    let Action::Replay {
        ledger,
        key_file,
        database_url,
        password_file,
    } = action;
    let text = std::fs::read_to_string(&ledger)
        .with_context(|| format!("reading {}", ledger.display()))?;
    let ledger = parse_ledger(&text)?;
    let key = api::subjects::SubjectKey::new(
        &std::fs::read(&key_file).with_context(|| format!("reading {}", key_file.display()))?,
    )?;
    let mut options: sqlx::postgres::PgConnectOptions =
        database_url.parse().context("--database-url")?;
    if let Some(path) = password_file {
        let password = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        options = options.password(password.trim());
    }
    let mut conn = PgConnection::connect_with(&options)
        .await
        .context("connecting")?;
    let requested = replay(&mut conn, &key, &ledger).await?;
    conn.close().await.ok();
    println!("{requested} erasures requested again; the transform carries them out");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_lines_are_tenant_and_hash() {
        let t = Uuid::new_v4();
        let h = "ab".repeat(32);
        let ledger = parse_ledger(&format!("{t},{h}\n\n{t},{}\n", "00".repeat(32))).unwrap();
        assert_eq!(ledger[&t].len(), 2);
        assert!(ledger[&t].contains(&[0xab; 32]));
        for bad in [
            format!("{t}"),
            format!("{t},abc"),
            format!("x,{h}"),
            format!("{t},{}", "zz".repeat(32)),
        ] {
            assert!(parse_ledger(&bad).is_err(), "{bad}");
        }
    }
}
