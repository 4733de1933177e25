//! Logins under abuse (issue 10, items 1, 2 and 5): floods of password grants cost
//! bounded memory; a flood from one address slows that address down without locking
//! anyone out; a forged `X-Forwarded-For` does not move a caller to another throttle
//! key; a client hammering a forbidden route writes a bounded number of audit rows.
//!
//! Other addresses are real: `127.0.0.0/8` is all loopback on Linux, so a client bound
//! to `127.0.1.7` reaches the api from that address, like another machine would.

use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use beacon_e2e::procs::{Override, ProcStack, manifest_memory_limit, record};
use reqwest::{Client, Response};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::task::JoinSet;
use xtask::seed::{DemoTenant, demo_tenants};

const PASSWORD: &str = "abuse-password-1";
/// Generous bound of the test; the bench records the real figure.
const WITHIN: Duration = Duration::from_secs(60);

/// The tests of this module run one at a time: their figures are timings and peaks
/// that a neighbouring stack on the same cores would distort.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Every service as a process, with both demo tenants created.
async fn start(admin: PgPool, overrides: &[Override]) -> (ProcStack, [DemoTenant; 2]) {
    let bin = Path::new(env!("CARGO_BIN_EXE_beacon-testsvc"));
    let stack = ProcStack::start(admin, bin, overrides)
        .await
        .expect("stack");
    let tenants = demo_tenants(PASSWORD);
    for t in &tenants {
        stack.tenant(t).await.unwrap();
    }
    (stack, tenants)
}

/// A client whose connections come from `from` (a loopback address).
fn client_from(from: &str) -> Client {
    Client::builder()
        .no_proxy()
        .local_address(from.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

async fn grant(client: &Client, api: &str, username: &str, password: &str) -> Response {
    client
        .post(format!("{api}/v1/auth/token"))
        .json(&json!({ "grant_type": "password", "username": username, "password": password }))
        .send()
        .await
        .unwrap()
}

/// A refused grant: 401, 429 or 503, problem+json, with `Retry-After` when it says wait.
async fn refused(r: Response) -> u16 {
    let status = r.status().as_u16();
    assert!(matches!(status, 401 | 429 | 503), "answer {status}");
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    if status != 401 {
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&wait), "Retry-After {wait}");
    }
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], status);
    status
}

#[derive(Debug, Default)]
struct Tally {
    unauthorized: u32,
    throttled: u32,
    busy: u32,
}

impl Tally {
    fn add(&mut self, status: u16) {
        match status {
            401 => self.unauthorized += 1,
            429 => self.throttled += 1,
            _ => self.busy += 1,
        }
    }
}

/// Sends every `(from, username)` grant at once, each from its own address.
async fn wave(api: &str, grants: Vec<(String, String)>, tally: &mut Tally) {
    let mut set = JoinSet::new();
    for (from, username) in grants {
        let api = api.to_owned();
        set.spawn(async move {
            let r = grant(&client_from(&from), &api, &username, "wrong-password").await;
            refused(r).await
        });
    }
    while let Some(status) = set.join_next().await {
        tally.add(status.unwrap());
    }
}

/// (a) Parallel password grants (unknown users, one real account, odd and many
/// distinct usernames), each from its own address so that only the bound on password
/// verification, not the per-address throttle, stands between them and the memory.
#[sqlx::test(migrations = false)]
async fn password_floods_stay_under_the_memory_limit(admin: PgPool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (mut stack, tenants) = start(admin, &[]).await;
    let api = stack.url("api");
    let from = |i: usize| format!("127.0.{}.{}", 1 + i / 250, 1 + i % 250);
    let mut tally = Tally::default();
    let started = Instant::now();
    // Unknown users.
    let unknown = (0..48)
        .map(|i| (from(i), format!("nobody{i}@flood.example")))
        .collect();
    wave(&api, unknown, &mut tally).await;
    // One real account, wrong passwords.
    let real = (0..48)
        .map(|i| (from(100 + i), tenants[0].viewer_email.clone()))
        .collect();
    wave(&api, real, &mut tally).await;
    // Odd usernames: the longest valid one, too long, non-ASCII, control characters,
    // case variants of one account, empty.
    let odd = [
        format!("{}@x.example", "a".repeat(244)),
        format!("{}@x.example", "a".repeat(300)),
        "müller@acme.example".to_owned(),
        "ad\u{0}min@acme.example".to_owned(),
        "VIEWER@ACME.EXAMPLE".to_owned(),
        " Viewer@Acme.Example ".to_owned(),
        String::new(),
        "a@b".to_owned(),
    ];
    let odd = (0..48)
        .map(|i| (from(200 + i), odd[i % odd.len()].clone()))
        .collect();
    wave(&api, odd, &mut tally).await;
    // Many distinct usernames, in waves of 64.
    for round in 0..4 {
        let many = (0..64)
            .map(|i| {
                (
                    from(300 + round * 64 + i),
                    format!("spray{round}-{i}@flood.example"),
                )
            })
            .collect();
        wave(&api, many, &mut tally).await;
    }
    let elapsed = started.elapsed();
    assert_eq!(stack.all_running(), Ok(()), "a service died");
    let (peak, limit) = stack.memory_report("api", "api").unwrap();
    eprintln!("login flood: {tally:?} in {elapsed:?}");
    record("login flood", "api peak RSS", peak, limit, "MiB");
    record(
        "login flood",
        "grants answered 503 busy",
        f64::from(tally.busy),
        f64::from(tally.unauthorized + tally.throttled + tally.busy),
        "answers",
    );
    assert!(
        peak < limit,
        "api peak RSS {peak:.1} MiB, manifest limit {limit:.1} MiB"
    );
    assert!(tally.unauthorized > 0, "some grants were really verified");
    // Still serving: a correct login after the flood.
    let ok = grant(
        &client_from("127.0.9.1"),
        &api,
        &tenants[0].admin_email,
        PASSWORD,
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(manifest_memory_limit("api").unwrap() >> 20, limit as u64);
    for service in stack.services.values_mut() {
        service.terminate().await.unwrap();
    }
}

/// Signs in through the dashboard's form, as a browser behind the Gateway at `from`
/// (the test is the Gateway: it connects from 127.0.0.1 and forwards the address).
async fn dashboard_sign_in(
    client: &Client,
    dashboard: &str,
    from: &str,
    email: &str,
    password: &str,
) -> Response {
    // The form's CSRF token is bound to the nonce cookie the login page sets.
    let page = client
        .get(format!("{dashboard}/login"))
        .header("x-forwarded-for", from)
        .send()
        .await
        .unwrap();
    let nonce = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("__Host-beacon_csrf="))
        .and_then(|c| c.split(';').next())
        .expect("login page sets the CSRF nonce")
        .to_owned();
    let html = page.text().await.unwrap();
    let at = html.find(r#"name="csrf" value=""#).expect("CSRF field") + 19;
    let token = html[at..].split('"').next().unwrap().to_owned();
    client
        .post(format!("{dashboard}/login"))
        .header("cookie", format!("__Host-beacon_csrf={nonce}"))
        .header("x-forwarded-for", from)
        .form(&[
            ("csrf", token.as_str()),
            ("email", email),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// Signs in through the dashboard until it works, waiting what `Retry-After` says;
/// returns how long it took.
async fn sign_in_eventually(stack: &ProcStack, from: &str, email: &str) -> Duration {
    let started = Instant::now();
    loop {
        let r = dashboard_sign_in(
            &stack.client,
            &stack.url("dashboard"),
            from,
            email,
            PASSWORD,
        )
        .await;
        match r.status().as_u16() {
            303 => return started.elapsed(),
            429 => {
                let wait: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(wait <= 60, "{email} from {from} told to wait {wait} s");
                assert!(
                    started.elapsed() + Duration::from_secs(wait) < WITHIN,
                    "{email} from {from} still refused after {:?}, told to wait {wait} s more",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            other => panic!("{email} from {from}: {other}"),
        }
    }
}

/// Addresses of the login-failure audit rows (as the operator, who sees every tenant).
async fn failure_addresses(stack: &ProcStack) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT client_addr FROM app.audit_log
         WHERE action = 'login' AND outcome = 'failure' AND client_addr IS NOT NULL",
    )
    .fetch_all(&stack.admin)
    .await
    .unwrap()
}

/// (b) 60 bad logins from one place through the dashboard: the right password from
/// there gets in within a minute, and other tenants are not locked out meanwhile.
/// (c) A caller the api does not trust sends `X-Forwarded-For`: it stays keyed on
/// its own address.
#[sqlx::test(migrations = false)]
async fn a_flood_from_one_address_locks_nobody_out(admin: PgPool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The dashboard trusts the Gateway (here: the test, at 127.0.0.1); the api trusts
    // the dashboard (127.0.0.1 too) and nobody else.
    let trust = |service| (service, "BEACON_TRUSTED_PROXIES", "127.0.0.1/32".to_owned());
    let (mut stack, tenants) = start(admin, &[trust("api"), trust("dashboard")]).await;
    let (victim, other) = (&tenants[0], &tenants[1]);
    let attacker = "203.0.113.7";
    let elsewhere = "198.51.100.9";

    // 30 bad logins at once, then 30 more in a row, without waiting: a few on the
    // victim's account, the rest on accounts that do not exist.
    let email = |i: usize| {
        if i.is_multiple_of(10) {
            victim.viewer_email.clone()
        } else {
            format!("guess{i}@acme.example")
        }
    };
    let mut answers = Vec::new();
    let mut set = JoinSet::new();
    for i in 0..30 {
        let (client, url, email) = (stack.client.clone(), stack.url("dashboard"), email(i));
        set.spawn(async move {
            let r = dashboard_sign_in(&client, &url, attacker, &email, "guess").await;
            r.status().as_u16()
        });
    }
    while let Some(status) = set.join_next().await {
        answers.push(status.unwrap());
    }
    for i in 30..60 {
        let url = stack.url("dashboard");
        let r = dashboard_sign_in(&stack.client, &url, attacker, &email(i), "guess").await;
        answers.push(r.status().as_u16());
    }
    assert!(
        answers.iter().all(|s| matches!(s, 401 | 429)),
        "bad logins answered {answers:?}"
    );
    assert!(
        answers.contains(&401) && answers.contains(&429),
        "{answers:?}"
    );

    // Another tenant elsewhere: not slowed at all.
    let other_elsewhere = sign_in_eventually(&stack, elsewhere, &other.viewer_email).await;
    record(
        "60 bad logins from one address",
        "other tenant, other address: time to sign in",
        other_elsewhere.as_secs_f64(),
        5.0,
        "s",
    );
    assert!(
        other_elsewhere < Duration::from_secs(5),
        "{other_elsewhere:?}"
    );
    // The victim and another tenant behind the attacker's address: slowed, not locked out.
    let victim_there = sign_in_eventually(&stack, attacker, &victim.viewer_email).await;
    record(
        "60 bad logins from one address",
        "victim, same address: time to sign in",
        victim_there.as_secs_f64(),
        WITHIN.as_secs_f64(),
        "s",
    );
    let other_there = sign_in_eventually(&stack, attacker, &other.admin_email).await;
    record(
        "60 bad logins from one address",
        "other tenant, same address: time to sign in",
        other_there.as_secs_f64(),
        WITHIN.as_secs_f64(),
        "s",
    );
    // The api believed the dashboard: the failures are the browser's, not the dashboard's.
    let addresses = failure_addresses(&stack).await;
    assert!(addresses.contains(&attacker.to_owned()), "{addresses:?}");
    assert!(
        !addresses.contains(&"127.0.0.1".to_owned()),
        "{addresses:?}"
    );

    // (c) A caller the api does not trust forges a new address on every attempt.
    let forger = client_from("127.0.0.2");
    let api = stack.url("api");
    let mut throttled_after = None;
    for i in 0..40 {
        let r = forger
            .post(format!("{api}/v1/auth/token"))
            .header("x-forwarded-for", format!("192.0.2.{i}"))
            .json(&json!({ "grant_type": "password", "username": format!("forged{i}@acme.example"), "password": "guess" }))
            .send()
            .await
            .unwrap();
        if refused(r).await == 429 {
            throttled_after = Some(i);
            break;
        }
    }
    let throttled_after = throttled_after.expect("the forger escaped its address's throttle");
    record(
        "forged X-Forwarded-For",
        "bad logins before the forger's address is slowed",
        f64::from(throttled_after),
        21.0,
        "attempts",
    );
    assert!(throttled_after <= 21, "{throttled_after}");
    let addresses = failure_addresses(&stack).await;
    assert!(addresses.contains(&"127.0.0.2".to_owned()), "{addresses:?}");
    assert!(
        !addresses.iter().any(|a| a.starts_with("192.0.2.")),
        "a forged address was believed: {addresses:?}"
    );
    assert_eq!(stack.all_running(), Ok(()));
}

/// (d) A viewer hammering an admin route: every answer is 403, the audit log gets a
/// bounded number of rows, and the rows account for every denial they left out.
#[sqlx::test(migrations = false)]
async fn hammering_a_forbidden_route_writes_bounded_audit_rows(admin: PgPool) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (mut stack, tenants) = start(admin, &[]).await;
    let api = stack.url("api");
    let r = grant(&stack.client, &api, &tenants[0].viewer_email, PASSWORD).await;
    assert_eq!(r.status(), 200);
    let token = r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let denials = 300;
    let started = Instant::now();
    let mut set = JoinSet::new();
    for worker in 0..6 {
        let (client, api, token) = (stack.client.clone(), api.clone(), token.clone());
        set.spawn(async move {
            for _ in 0..denials / 6 {
                let r = client
                    .get(format!("{api}/v1/users"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 403, "worker {worker}");
                assert_eq!(r.headers()["content-type"], "application/problem+json");
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = || async {
        let (rows, left_out): (i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum((details->>'denials_not_recorded_before')::bigint), 0)::bigint
             FROM app.audit_log WHERE action = 'permission.denied' AND tenant_id = $1",
        )
        .bind(tenants[0].id)
        .fetch_one(&stack.admin)
        .await
        .unwrap();
        (rows, left_out)
    };
    let (rows, _) = count().await;
    // The defaults: 10 rows in a burst, then 6 a minute.
    let bound = 10.0 + 6.0 * elapsed / 60.0 + 1.0;
    record(
        "forbidden route hammered",
        &format!("audit rows for {denials} denials"),
        rows as f64,
        bound,
        "rows",
    );
    assert!(
        rows >= 1 && (rows as f64) <= bound,
        "{rows} rows in {elapsed:.1} s"
    );
    // The next row written carries the count of those left out (one token: 10 s).
    tokio::time::sleep(Duration::from_secs(11)).await;
    let r = stack
        .client
        .get(format!("{api}/v1/api-keys"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (rows, left_out) = count().await;
    assert_eq!(
        rows + left_out,
        denials + 1,
        "every denial is accounted for"
    );
    assert_eq!(stack.all_running(), Ok(()));
}
