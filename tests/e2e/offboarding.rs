//! Tenant offboarding (`cargo xtask tenant delete`): every row of the tenant in every
//! table that has a tenant column goes (the tables are discovered from the catalog, so
//! a table added later is counted too), the other tenant keeps every row, tokens
//! issued before stop working, and no role but the offboarding one may call it.

use std::collections::BTreeMap;

use beacon_e2e::{Stack, same_currency_tenants};
use domain::EventType;
use platform::access::AccessModel;
use sqlx::{Connection as _, PgConnection};
use time::OffsetDateTime;
use uuid::Uuid;

/// Every table of Beacon's schemas with a `tenant_id` column, from the catalog.
async fn tenant_tables(owner: &mut PgConnection) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
         WHERE n.nspname IN ('app', 'raw', 'output') AND c.relkind IN ('r', 'p') AND NOT c.relispartition
         ORDER BY 1",
    )
    .fetch_all(owner)
    .await
    .unwrap()
}

/// Rows of `tenant` per table (and in `app.tenants`), as the owner.
async fn rows_of(owner: &mut PgConnection, tenant: Uuid) -> BTreeMap<String, i64> {
    let mut counts = BTreeMap::new();
    for table in tenant_tables(owner).await {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE tenant_id = $1"
        ))
        .bind(tenant)
        .fetch_one(&mut *owner)
        .await
        .unwrap();
        counts.insert(table, n);
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM app.tenants WHERE id = $1")
        .bind(tenant)
        .fetch_one(&mut *owner)
        .await
        .unwrap();
    counts.insert("app.tenants".to_owned(), n);
    counts
}

#[sqlx::test(migrations = false)]
async fn offboarding_deletes_every_row_of_the_tenant_and_nothing_else(admin: sqlx::PgPool) {
    let stack = Stack::start(admin).await.unwrap();
    let now = OffsetDateTime::now_utc();
    let tenants = same_currency_tenants("offboarding-test-password");
    let (a, b) = (&tenants[0], &tenants[1]);
    // Data in every table, through the product's own paths, for both tenants.
    let seeded = stack.seed(&tenants, &[600, 600], now).await.unwrap();
    // A click and the conversion it is credited for: attribution rows.
    let path = xtask::seed::generate_events(76, 2, 5, a.currency, now)
        .into_iter()
        .zip([EventType::Click, EventType::Conversion])
        .enumerate()
        .map(|(i, (mut e, ty))| {
            e.event_type = ty;
            e.user_key = Some("path-user".to_owned());
            e.occurred_at = (now - time::Duration::hours(2 - i as i64))
                .replace_nanosecond(0)
                .unwrap();
            e.revenue_micros = if ty == EventType::Conversion {
                5_000_000
            } else {
                0
            };
            e
        })
        .collect::<Vec<_>>();
    for (_, token) in &seeded {
        xtask::seed::push(&stack.client, &stack.ingest_url, token, &path, 100)
            .await
            .unwrap();
    }
    stack.transform().await;
    let mut tokens = Vec::new();
    for t in [a, b] {
        let admin_token = stack.login(&t.admin_email, &t.password).await;
        let viewer = stack.login(&t.viewer_email, &t.password).await;
        for (method, path, body) in [
            (
                "POST",
                "/v1/campaigns".to_owned(),
                serde_json::json!({ "name": "Spring Launch" }),
            ),
            ("POST", "/v1/auth/revoke".to_owned(), serde_json::json!({})),
            (
                "DELETE",
                "/v1/subjects/u000001".to_owned(),
                serde_json::json!({}),
            ),
        ] {
            let token = if path == "/v1/auth/revoke" {
                &viewer
            } else {
                &admin_token
            };
            let r = stack
                .client
                .request(method.parse().unwrap(), format!("{}{path}", stack.api_url))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{method} {path}: {}", r.status());
        }
        tokens.push(admin_token);
    }
    let late = xtask::seed::generate_events(77, 10, 5, a.currency, now);
    for (i, (_, token)) in seeded.iter().enumerate() {
        let late: Vec<_> = late
            .iter()
            .cloned()
            .map(|mut e| {
                e.event_id = format!("late-{i}-{}", e.event_id);
                e
            })
            .collect();
        xtask::seed::push(&stack.client, &stack.ingest_url, token, &late, 100)
            .await
            .unwrap();
    }
    let mut owner = stack.owner().await;
    sqlx::query(
        "INSERT INTO output.attribution_work (tenant_id, day) VALUES ($1, current_date), ($2, current_date)
         ON CONFLICT DO NOTHING",
    )
    .bind(a.id)
    .bind(b.id)
    .execute(&mut owner)
    .await
    .unwrap();

    let before_a = rows_of(&mut owner, a.id).await;
    let before_b = rows_of(&mut owner, b.id).await;
    for (table, n) in &before_a {
        if table != "app.offboarded_tenants" {
            assert!(
                *n > 0,
                "the fixture leaves {table} empty for A: {before_a:?}"
            );
        }
    }

    // A role other than the offboarding one may not call it, not even the api's.
    let model = AccessModel::load();
    let role = xtask::tenant::offboarding_role(&model).unwrap();
    assert_eq!(role, "beacon_offboard");
    for other in model.database.roles.keys().filter(|r| **r != role) {
        let mut conn = stack.admin.acquire().await.unwrap();
        sqlx::raw_sql(&format!("SET ROLE {other}"))
            .execute(&mut *conn)
            .await
            .unwrap();
        let err = sqlx::query("SELECT * FROM app.offboard_tenant($1, 10)")
            .bind(a.slug)
            .execute(&mut *conn)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{other}: {err}"
        );
        sqlx::raw_sql("RESET ROLE")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    // (The migrator acts as the owner of every object, this function included: it is
    // the schema itself, not a role the model grants anything.)
    for login in db::LOGIN_ROLES.iter().filter(|r| **r != db::MIGRATOR_ROLE) {
        let options = stack
            .admin
            .connect_options()
            .as_ref()
            .clone()
            .username(login);
        let mut conn = PgConnection::connect_with(&options).await.unwrap();
        let err = sqlx::query("SELECT * FROM app.offboard_tenant($1, 10)")
            .bind(a.slug)
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("permission denied"),
            "{login}: {err}"
        );
    }
    assert_eq!(rows_of(&mut owner, a.id).await, before_a, "nothing changed");

    // The offboarding role, a few rows per transaction.
    let mut conn = PgConnection::connect_with(stack.admin.connect_options().as_ref())
        .await
        .unwrap();
    sqlx::raw_sql(&format!("SET ROLE {role}"))
        .execute(&mut conn)
        .await
        .unwrap();
    // The role itself reads nothing.
    let err = sqlx::query("SELECT count(*) FROM raw.events")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let deleted = xtask::tenant::delete(&mut conn, a.slug, 97).await.unwrap();
    assert_eq!(deleted.get("app.tenants"), Some(&1));
    let err = xtask::tenant::delete(&mut conn, a.slug, 97)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("no tenant"), "{err:#}");

    // Nothing of A is left but the tombstone; every deletion was counted; B is whole.
    let after_a = rows_of(&mut owner, a.id).await;
    for (table, n) in &after_a {
        let expected = i64::from(table == "app.offboarded_tenants");
        assert_eq!(*n, expected, "{table} after offboarding: {after_a:?}");
        if *n == 0 {
            assert_eq!(
                deleted.get(table).copied().unwrap_or(0),
                before_a[table],
                "{table}: deleted rows reported"
            );
        }
    }
    assert_eq!(rows_of(&mut owner, b.id).await, before_b);

    // Tokens issued before stop working; nothing new can be issued or written.
    assert_eq!(
        stack
            .api_status(reqwest::Method::GET, "/v1/overview", &tokens[0])
            .await,
        401
    );
    assert_eq!(
        stack
            .api_status(reqwest::Method::GET, "/v1/overview", &tokens[1])
            .await,
        200
    );
    assert_eq!(
        stack.sign_in(&a.admin_email, &a.password).await.status(),
        401
    );
    let more = xtask::seed::generate_events(78, 5, 5, a.currency, now);
    let refused =
        xtask::seed::push(&stack.client, &stack.ingest_url, &seeded[0].1, &more, 100).await;
    assert!(
        refused.is_err(),
        "events of an offboarded tenant were accepted"
    );
    let after_push = rows_of(&mut owner, a.id).await;
    assert_eq!(after_push, after_a, "nothing written after offboarding");
    xtask::seed::push(&stack.client, &stack.ingest_url, &seeded[1].1, &more, 100)
        .await
        .unwrap();
}
