//! Durability under crashes, with the real binary: a client streams batches (retrying
//! on any failure) while the loader is SIGKILLed and restarted, and then while ingest
//! is. Afterwards every event whose batch got a 2xx is stored exactly once, and nothing
//! is stored twice. Loopback only; every loop is bounded; the test stops by itself.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use sqlx::PgPool;
use tokio::process::{Child, Command};
use uuid::Uuid;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[derive(Clone)]
struct Env {
    vars: Vec<(&'static str, String)>,
}

fn spawn(role: &str, env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_pipeline"))
        .arg(role)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn")
        .envs(env.vars.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("start pipeline {role}: {e}"))
}

/// SIGKILL (tokio's `start_kill` on unix) and reap.
async fn sigkill(child: &mut Child) {
    child.start_kill().expect("kill");
    child.wait().await.expect("reap");
}

async fn wait_healthy(client: &reqwest::Client, admin_port: u16) {
    for _ in 0..200 {
        if client
            .get(format!("http://127.0.0.1:{admin_port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("service on admin port {admin_port} never became ready");
}

#[derive(Default)]
struct Tally {
    acked: HashSet<String>,
    accepted: u64,
    duplicates: u64,
    failures: u64,
    /// Answers that do not account for their batch: accepted + duplicates is not the
    /// batch's size, or duplicates without an earlier failed attempt of that batch.
    unaccounted: Vec<String>,
}

#[sqlx::test(migrations = false)]
async fn acknowledged_events_survive_sigkill_of_loader_and_ingest(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let certs = tempfile::tempdir().unwrap();
    xtask::certs::generate(certs.path()).unwrap();
    let read = |name: &str| std::fs::read(certs.path().join(name)).unwrap();
    let signer = api::credentials::TokenSigner::new(
        &read("jwt-signing.key"),
        &read("jwt-public.pem"),
        time::Duration::minutes(15),
    )
    .unwrap();
    let tenant = Uuid::new_v4();
    let (token, _) = signer
        .sign("key:durability".into(), tenant, "events:write")
        .unwrap();

    let options = admin.connect_options();
    let public_key = certs.path().join("jwt-public.pem");
    let [ingest_port, ingest_admin, loader_port, loader_admin] =
        [free_port(), free_port(), free_port(), free_port()];
    let jwt = (
        "BEACON_JWT_PUBLIC_KEY_FILE",
        Path::new(&public_key).to_string_lossy().into_owned(),
    );
    let loader_env = Env {
        vars: vec![
            jwt.clone(),
            ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{loader_port}")),
            ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{loader_admin}")),
            ("DATABASE_HOST", options.get_host().to_owned()),
            ("DATABASE_PORT", options.get_port().to_string()),
            (
                "DATABASE_NAME",
                options.get_database().unwrap_or("postgres").to_owned(),
            ),
            ("DATABASE_USER", "beacon_loader".into()),
        ],
    };
    let ingest_env = Env {
        vars: vec![
            jwt,
            ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{ingest_port}")),
            ("BEACON_ADMIN_ADDR", format!("127.0.0.1:{ingest_admin}")),
            (
                "BEACON_LOADER_URL",
                format!("http://127.0.0.1:{loader_port}"),
            ),
            ("BEACON_LOADER_TIMEOUT_MS", "5000".into()),
            ("BEACON_RATE_LIMIT_PER_SEC", "0".into()),
        ],
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut loader = spawn("loader", &loader_env);
    let mut ingest = spawn("ingest", &ingest_env);
    wait_healthy(&client, loader_admin).await;
    wait_healthy(&client, ingest_admin).await;

    const BATCHES: usize = 120;
    const BATCH: usize = 50;
    let events = xtask::seed::generate_events(
        4242,
        BATCHES * BATCH,
        10,
        "EUR",
        time::OffsetDateTime::now_utc(),
    );
    let batches: Arc<Vec<(Vec<String>, String)>> = Arc::new(
        events
            .chunks(BATCH)
            .map(|c| {
                (
                    c.iter().map(|e| e.event_id.clone()).collect(),
                    domain::to_ndjson(c),
                )
            })
            .collect(),
    );
    let tally = Arc::new(Mutex::new(Tally::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let url = format!("http://127.0.0.1:{ingest_port}/v1/events");

    // Two clients, each streaming every other batch, retrying until a 2xx (bounded).
    let clients: Vec<_> = (0..2)
        .map(|k| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            let (batches, tally, done) = (batches.clone(), tally.clone(), done.clone());
            tokio::spawn(async move {
                for (ids, body) in batches.iter().skip(k).step_by(2) {
                    let mut ok = false;
                    for attempt in 0..400 {
                        let r = client
                            .post(&url)
                            .bearer_auth(&token)
                            .header("content-type", "application/x-ndjson")
                            .body(body.clone())
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                let v: serde_json::Value = r.json().await.unwrap_or_default();
                                let mut t = tally.lock().unwrap();
                                let accepted = v["accepted"].as_u64().unwrap_or(0);
                                let duplicates = v["duplicates"].as_u64().unwrap_or(0);
                                // Duplicates come only from an earlier attempt of this
                                // batch that was stored but whose answer was lost.
                                if accepted + duplicates != ids.len() as u64
                                    || (duplicates > 0 && attempt == 0)
                                {
                                    t.unaccounted
                                        .push(format!("{}: attempt {attempt}, {v}", ids[0]));
                                }
                                t.accepted += accepted;
                                t.duplicates += duplicates;
                                t.acked.extend(ids.iter().cloned());
                                ok = true;
                                break;
                            }
                            Ok(r) => {
                                // Only "retry later" answers are expected.
                                assert!(
                                    r.status().is_server_error(),
                                    "unexpected answer {}",
                                    r.status()
                                );
                                tally.lock().unwrap().failures += 1;
                            }
                            Err(_) => tally.lock().unwrap().failures += 1,
                        }
                        tokio::time::sleep(Duration::from_millis(25)).await;
                    }
                    assert!(ok, "a batch was never accepted");
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // Chaos, mid-stream: kill the loader twice, then ingest twice.
    let until = |n: usize| {
        let done = done.clone();
        async move {
            for _ in 0..2_000 {
                if done.load(Ordering::SeqCst) >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            panic!("the stream stalled before {n} batches");
        }
    };
    let mut kills = HashMap::new();
    for (at, target) in [
        (15, "loader"),
        (40, "loader"),
        (65, "ingest"),
        (90, "ingest"),
    ] {
        until(at).await;
        let child = if target == "loader" {
            &mut loader
        } else {
            &mut ingest
        };
        sigkill(child).await;
        *kills.entry(target).or_insert(0) += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        *child = spawn(
            target,
            if target == "loader" {
                &loader_env
            } else {
                &ingest_env
            },
        );
    }
    tokio::time::timeout(Duration::from_secs(180), async {
        for c in clients {
            c.await.expect("client task");
        }
    })
    .await
    .expect("clients finished in time");

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    assert_eq!(kills, HashMap::from([("loader", 2), ("ingest", 2)]));
    assert!(
        tally.failures > 0,
        "the kills happened while the client was streaming"
    );
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event_id, count(*) FROM raw.events WHERE tenant_id = $1 GROUP BY event_id",
    )
    .bind(tenant)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(
        tally.unaccounted.is_empty(),
        "answers that do not account for their batch: {:?}",
        tally.unaccounted
    );
    let twice: Vec<_> = rows.iter().filter(|(_, n)| *n != 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let stored: HashSet<String> = rows.into_iter().map(|(id, _)| id).collect();
    let missing: Vec<_> = tally.acked.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert_eq!(
        tally.acked.len(),
        BATCHES * BATCH,
        "every batch was acknowledged"
    );
    assert_eq!(
        stored.len(),
        BATCHES * BATCH,
        "nothing unacknowledged was stored"
    );
    // A batch whose answer was lost in a crash was committed once and re-sent as
    // duplicates: accepted counts each event once.
    assert_eq!(tally.accepted as usize, stored.len() - lost_answers(&tally));
    sigkill(&mut loader).await;
    sigkill(&mut ingest).await;
}

/// Events committed by an attempt whose 2xx never reached the client: they show up
/// as duplicates of the retry. (Duplicates only arise that way in this test.)
fn lost_answers(t: &Tally) -> usize {
    t.duplicates as usize
}
