//! Sessions: sign-out revokes the access token (a `jti` deny-list checked on every
//! request, kept until the token expires), and API keys show when they were last used.
//! The dashboard's side (cookies, CSRF bound to the session) is in `dashboard`.

use beacon_e2e::{Stack, password_token};
use serde_json::Value;
use sqlx::PgPool;
use xtask::seed::{create_tenant, demo_tenants, ingest_token};

async fn keys(stack: &Stack, token: &str) -> Vec<Value> {
    stack.get_json(token, "/v1/api-keys").await["keys"]
        .as_array()
        .expect("keys")
        .clone()
}

#[sqlx::test(migrations = false)]
async fn a_revoked_token_is_refused_everywhere_until_it_expires(admin: PgPool) {
    use reqwest::Method;
    let stack = Stack::start(admin).await.unwrap();
    let [a, b] = demo_tenants("session-password-1");
    let mut owner = stack.owner().await;
    create_tenant(&mut owner, &a).await.unwrap();
    create_tenant(&mut owner, &b).await.unwrap();
    let (api, client) = (&stack.api_url, &stack.client);
    let signed_out = password_token(client, api, &a.admin_email, &a.password).await;
    let other = password_token(client, api, &a.admin_email, &a.password).await;
    let b_token = password_token(client, api, &b.admin_email, &b.password).await;
    assert_eq!(
        stack
            .api_status(Method::GET, "/v1/users", &signed_out)
            .await,
        200
    );

    assert_eq!(
        stack
            .api_status(Method::POST, "/v1/auth/revoke", &signed_out)
            .await,
        204
    );
    // The forbidden thing: the same token, after sign-out, on every kind of route.
    for (method, path) in [
        (Method::GET, "/v1/users"),
        (Method::GET, "/v1/campaigns"),
        (Method::GET, "/v1/api-keys"),
        (Method::POST, "/v1/auth/revoke"),
    ] {
        assert_eq!(
            stack.api_status(method, path, &signed_out).await,
            401,
            "{path}"
        );
    }
    // Only that token: the user's other session and another tenant are untouched.
    assert_eq!(
        stack.api_status(Method::GET, "/v1/users", &other).await,
        200
    );
    assert_eq!(
        stack.api_status(Method::GET, "/v1/users", &b_token).await,
        200
    );
    // A signed-in caller's bad queries (moved here from the api's unit tests, whose
    // permission layer now needs the database for the deny-list): page size, unknown
    // fields, a bad id.
    for (path, want) in [
        ("/v1/users?limit=1000", 400),
        ("/v1/users?unknown=1", 400),
        ("/v1/users/not-a-uuid", 404),
    ] {
        assert_eq!(
            stack.api_status(Method::GET, path, &other).await,
            want,
            "{path}"
        );
    }

    // The currency is analytics' to validate (domain's rule, once): the api passes its
    // refusal through as a 400 problem with analytics' words.
    let r = stack
        .client
        .get(format!("{}/v1/overview?currency=euro", stack.api_url))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["detail"], "currency must be an ISO 4217 code");

    // The deny-list row lives until the token's expiry, is the tenant's own (tenant B
    // cannot see it) and is audited.
    let (jti, expires_at): (uuid::Uuid, time::OffsetDateTime) =
        sqlx::query_as("SELECT jti, expires_at FROM app.revoked_tokens")
            .fetch_one(&mut owner)
            .await
            .unwrap();
    assert!(expires_at > time::OffsetDateTime::now_utc());
    let api_role = beacon_e2e::role_pool(&stack.admin, "beacon_api");
    let mut tx = platform::db::begin_for_tenant(&api_role, b.id)
        .await
        .unwrap();
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM app.revoked_tokens")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(seen, 0, "tenant B sees tenant A's revocations");
    drop(tx);
    let audit = stack.get_json(&other, "/v1/audit-log").await;
    assert!(
        audit.to_string().contains("token.revoked") && audit.to_string().contains(&jti.to_string()),
        "{audit}"
    );

    // Expired rows are pruned when the tenant revokes again.
    sqlx::query("UPDATE app.revoked_tokens SET expires_at = now() - interval '1 second'")
        .execute(&mut owner)
        .await
        .unwrap();
    assert_eq!(
        stack
            .api_status(Method::POST, "/v1/auth/revoke", &other)
            .await,
        204
    );
    let left: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT jti FROM app.revoked_tokens")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    assert_eq!(left.len(), 1);
    assert_ne!(left[0], jti, "the expired row was pruned");
}

#[sqlx::test(migrations = false)]
async fn api_keys_show_when_they_were_last_used_written_at_most_once_a_minute(admin: PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let [a, _] = demo_tenants("session-password-2");
    let mut owner = stack.owner().await;
    let key = create_tenant(&mut owner, &a).await.unwrap();
    let (api, client) = (&stack.api_url, &stack.client);
    let admin_token = password_token(client, api, &a.admin_email, &a.password).await;
    let listed = keys(&stack, &admin_token).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["last_used_at"].is_null(), "{listed:?}");

    ingest_token(client, api, &key).await.unwrap();
    let first = keys(&stack, &admin_token).await[0]["last_used_at"].clone();
    let used = time::OffsetDateTime::parse(
        first
            .as_str()
            .expect("last_used_at set after a token exchange"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!((time::OffsetDateTime::now_utc() - used).abs() < time::Duration::minutes(1));

    // Within the minute, more exchanges write nothing: the value stays.
    for _ in 0..3 {
        ingest_token(client, api, &key).await.unwrap();
    }
    assert_eq!(keys(&stack, &admin_token).await[0]["last_used_at"], first);
    // A minute later (moved back in the database), the next exchange writes again.
    sqlx::query("UPDATE app.api_keys SET last_used_at = last_used_at - interval '61 seconds'")
        .execute(&mut owner)
        .await
        .unwrap();
    ingest_token(client, api, &key).await.unwrap();
    let later = keys(&stack, &admin_token).await[0]["last_used_at"].clone();
    assert_ne!(later, first);
}

/// `cargo xtask up` keeps the demo ingest key in a 0600 file and reuses it while it is
/// an active key of the tenant, instead of adding a key on every run.
#[sqlx::test(migrations = false)]
async fn the_demo_ingest_key_is_reused_while_it_is_active(admin: PgPool) {
    use std::os::unix::fs::PermissionsExt as _;
    let stack = Stack::start(admin).await.unwrap();
    let [a, _] = demo_tenants("session-password-3");
    let mut owner = stack.owner().await;
    xtask::seed::ensure_tenant(&mut owner, &a).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secrets/acme-ingest.key");
    let first = xtask::seed::demo_ingest_key(&mut owner, &a, &file)
        .await
        .unwrap();
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), first);
    let again = xtask::seed::demo_ingest_key(&mut owner, &a, &file)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(keys_in_db(&mut owner).await, 1, "a second run added a key");
    ingest_token(&stack.client, &stack.api_url, &again)
        .await
        .unwrap();
    // Revoked (or deleted with the database): a new key replaces the file's.
    sqlx::query("UPDATE app.api_keys SET revoked_at = now()")
        .execute(&mut owner)
        .await
        .unwrap();
    let replaced = xtask::seed::demo_ingest_key(&mut owner, &a, &file)
        .await
        .unwrap();
    assert_ne!(replaced, first);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), replaced);
    assert_eq!(keys_in_db(&mut owner).await, 2);
}

async fn keys_in_db(owner: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM app.api_keys")
        .fetch_one(owner)
        .await
        .unwrap()
}
