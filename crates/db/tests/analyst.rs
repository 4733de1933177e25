//! The analyst persona end to end, on a live database: a person's login made by
//! `db::add_member` (what `cargo xtask analyst add` runs) connects with its password,
//! reads `raw`, reads and writes `output`, cannot touch `app`, cannot get around
//! row-level security or create anything, carries the group's timeouts and connection
//! limit, and cannot hold back the transform.

use std::time::Duration;

use platform::access::AccessModel;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

struct Analyst {
    login: String,
    options: PgConnectOptions,
}

/// A fresh analyst login (roles are cluster-wide: a unique name per test).
async fn analyst(admin: &PgPool) -> Analyst {
    db::setup(admin).await.unwrap();
    let group = AccessModel::load().personas["analyst"]
        .db_role
        .clone()
        .unwrap();
    let login = format!("analyst_t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let password = Uuid::new_v4().to_string();
    db::add_member(admin, &group, &login, &password)
        .await
        .unwrap();
    // Adding again (same name, e.g. a new password) re-asserts the login.
    db::add_member(admin, &group, &login, &password)
        .await
        .unwrap();
    let options = (*admin.connect_options())
        .clone()
        .username(&login)
        .password(&password);
    Analyst { login, options }
}

impl Analyst {
    async fn connect(&self) -> PgConnection {
        PgConnection::connect_with(&self.options)
            .await
            .unwrap_or_else(|e| panic!("connect as {}: {e}", self.login))
    }

    async fn drop_role(self, admin: &PgPool) {
        sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", self.login))
            .execute(admin)
            .await
            .unwrap();
    }
}

/// The error PostgreSQL gives `sql`, run in a transaction that is rolled back.
async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    let mut tx = conn.begin().await.unwrap();
    let result = sqlx::raw_sql(sql).execute(&mut *tx).await;
    tx.rollback().await.ok();
    match result {
        Err(sqlx::Error::Database(e)) => e.message().to_owned(),
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
}

async fn owner(admin: &PgPool) -> PgConnection {
    PgConnection::connect_with(
        &(*admin.connect_options())
            .clone()
            .username(db::MIGRATOR_ROLE),
    )
    .await
    .unwrap()
}

/// `n` impressions of campaign `c` for `tenant`, committed as the owner.
async fn load_events(admin: &PgPool, tenant: Uuid, n: i32) {
    sqlx::query(
        "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
         SELECT $1, gen_random_uuid()::text, 'impression', now() - interval '1 hour', 'c', 'search', 'EUR'
         FROM generate_series(1, $2)",
    )
    .bind(tenant)
    .bind(n)
    .execute(&mut owner(admin).await)
    .await
    .unwrap();
}

#[sqlx::test(migrations = false)]
async fn an_analyst_reads_raw_writes_output_and_cannot_touch_app(admin: PgPool) {
    let analyst = analyst(&admin).await;
    let tenant = Uuid::new_v4();
    load_events(&admin, tenant, 3).await;
    let mut conn = analyst.connect().await;

    // raw: read, every tenant (the persona is internal), and nothing else.
    let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.events WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(seen, 3);
    for sql in [
        "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency) VALUES (gen_random_uuid(), 'x', 'click', now(), 'c', 'x', 'EUR')",
        "DELETE FROM raw.events",
        "DELETE FROM raw.batches",
    ] {
        let e = refused(&mut conn, sql).await;
        assert!(e.starts_with("permission denied"), "{sql}: {e}");
    }

    // output: read and write.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO output.daily_campaign_facts (tenant_id, day, campaign, channel, currency, impressions)
         VALUES ($1, current_date, 'what-if', 'search', 'EUR', 7)",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .expect("an analyst writes output");
    let updated = sqlx::query(
        "UPDATE output.daily_campaign_facts SET impressions = 8 WHERE tenant_id = $1 AND campaign = 'what-if'",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    let read: i64 = sqlx::query_scalar(
        "SELECT impressions FROM output.daily_campaign_facts WHERE tenant_id = $1 AND campaign = 'what-if'",
    )
    .bind(tenant)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    assert_eq!(read, 8);
    tx.rollback().await.unwrap();

    // app: nothing, not even a look.
    for table in [
        "app.tenants",
        "app.users",
        "app.api_keys",
        "app.audit_log",
        "app.campaigns",
    ] {
        for sql in [
            format!("SELECT 1 FROM {table} LIMIT 1"),
            format!("DELETE FROM {table}"),
        ] {
            let e = refused(&mut conn, &sql).await;
            assert!(e.starts_with("permission denied"), "{sql}: {e}");
        }
    }
    for sql in [
        "SELECT app.login_lookup('a@b.c')",
        "SELECT * FROM app.api_key_lookup('x')",
    ] {
        let e = refused(&mut conn, sql).await;
        assert!(e.starts_with("permission denied"), "{sql}: {e}");
    }
    conn.close().await.unwrap();
    analyst.drop_role(&admin).await;
}

#[sqlx::test(migrations = false)]
async fn an_analyst_cannot_get_around_row_level_security_nor_create_anything(admin: PgPool) {
    let analyst = analyst(&admin).await;
    let mut conn = analyst.connect().await;
    let attributes: (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(attributes, (false, false, false, false));
    // Row-level security cannot be switched off, by the session or on the table.
    let e = refused(
        &mut conn,
        "SET LOCAL row_security = off; SELECT count(*) FROM raw.events",
    )
    .await;
    assert!(e.contains("row-level security"), "{e}");
    for table in ["raw.events", "output.daily_campaign_facts"] {
        let e = refused(
            &mut conn,
            &format!("ALTER TABLE {table} DISABLE ROW LEVEL SECURITY"),
        )
        .await;
        assert!(e.starts_with("must be owner"), "{e}");
    }
    // No other role's privileges: not the owner's, not a component's.
    for role in [db::OWNER, "beacon_transform", "beacon_api", "postgres"] {
        let e = refused(&mut conn, &format!("SET LOCAL ROLE {role}")).await;
        assert!(e.starts_with("permission denied"), "{role}: {e}");
    }
    // Nothing can be created: not in Beacon's schemas, not in public, not a schema, not
    // a temporary table.
    for sql in [
        "CREATE TABLE raw.mine (x int)",
        "CREATE TABLE output.mine (x int)",
        "CREATE TABLE app.mine (x int)",
        "CREATE TABLE public.mine (x int)",
        "CREATE VIEW output.v AS SELECT 1",
        "CREATE FUNCTION output.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE SCHEMA mine",
        "CREATE TEMP TABLE mine (x int)",
    ] {
        let e = refused(&mut conn, sql).await;
        assert!(e.starts_with("permission denied"), "{sql}: {e}");
    }
    conn.close().await.unwrap();
    analyst.drop_role(&admin).await;
}

#[sqlx::test(migrations = false)]
async fn an_analyst_login_carries_the_groups_timeouts_and_connection_limit(admin: PgPool) {
    let model = AccessModel::load();
    let group = &model.database.roles["beacon_analyst"];
    let analyst = analyst(&admin).await;
    let mut conn = analyst.connect().await;
    for (name, value) in &group.settings {
        // The member's own setting (the group's would not apply to it), in force in
        // its session as a per-user setting.
        let configured: Vec<String> = sqlx::query_scalar(
            "SELECT unnest(setconfig) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
             WHERE r.rolname = $1 AND s.setdatabase = 0",
        )
        .bind(&analyst.login)
        .fetch_all(&admin)
        .await
        .unwrap();
        assert!(
            configured.contains(&format!("{name}={value}")),
            "{name}: {configured:?}"
        );
        let (setting, source): (String, String) =
            sqlx::query_as("SELECT setting, source FROM pg_settings WHERE name = $1")
                .bind(name)
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(source, "user", "{name}");
        assert_ne!(setting, "0", "{name} is in force");
    }
    // The connection limit: one more session than allowed is refused.
    let limit = group.member_connection_limit.expect("a limit") as usize;
    let mut open = vec![conn];
    while open.len() < limit {
        open.push(analyst.connect().await);
    }
    let err = PgConnection::connect_with(&analyst.options)
        .await
        .expect_err("one session over the limit");
    assert!(err.to_string().contains("too many connections"), "{err}");
    for c in open {
        c.close().await.ok();
    }
    analyst.drop_role(&admin).await;
}

/// An analyst's open transaction does not hold the transform back: events loaded and
/// committed while it is open are aggregated at once; and the transaction, left idle,
/// is cut off by the group's idle-in-transaction timeout.
#[sqlx::test(migrations = false)]
async fn an_analyst_cannot_hold_back_the_transform(admin: PgPool) {
    let analyst = analyst(&admin).await;
    let mut conn = analyst.connect().await;
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let _: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.events")
        .fetch_one(&mut *tx)
        .await
        .unwrap();

    let tenant = Uuid::new_v4();
    load_events(&admin, tenant, 5).await;
    let transform =
        platform::db::DbConfig::for_role(&admin.connect_options(), "beacon_transform").pool();
    pipeline::transform::run_once(&transform).await.unwrap();
    let facts: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(impressions), 0)::int8 FROM output.daily_campaign_facts WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&mut owner(&admin).await)
    .await
    .unwrap();
    assert_eq!(
        facts, 5,
        "the transform aggregated past the open transaction"
    );

    // Left idle in its transaction for longer than the group's timeout: terminated.
    let timeout: String =
        sqlx::query_scalar("SELECT current_setting('idle_in_transaction_session_timeout')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let seconds: u64 = sqlx::query_scalar::<_, i32>(&format!(
        "SELECT extract(epoch FROM interval '{timeout}')::int"
    ))
    .fetch_one(&admin)
    .await
    .unwrap()
    .try_into()
    .unwrap();
    assert!((1..=120).contains(&seconds), "{timeout}");
    tokio::time::sleep(Duration::from_secs(seconds + 2)).await;
    let after = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&mut *tx)
        .await;
    assert!(after.is_err(), "the idle transaction is still alive");
    drop(tx);
    drop(conn);
    transform.close().await;
    analyst.drop_role(&admin).await;
}

#[sqlx::test(migrations = false)]
async fn add_member_never_hands_the_group_to_an_existing_role_or_a_bad_name(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    for existing in ["beacon_api", "postgres", db::MIGRATOR_ROLE] {
        let err = db::add_member(&admin, "beacon_analyst", existing, "pw")
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("not a member"),
            "{existing}: {err}"
        );
    }
    for bad in ["", "Analyst", "a-b", "a;drop", "1a"] {
        assert!(
            db::add_member(&admin, "beacon_analyst", bad, "pw")
                .await
                .is_err(),
            "{bad:?}"
        );
    }
    // Only group roles take members.
    assert!(
        db::add_member(&admin, "beacon_api", "analyst_x", "pw")
            .await
            .is_err()
    );
    let member: bool =
        sqlx::query_scalar("SELECT pg_has_role('beacon_api', 'beacon_analyst', 'MEMBER')")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!member);
}

/// Removing an analyst (`cargo xtask analyst remove`, the `--kube` Job): their open
/// session ends, they cannot log in again, the role is gone; a role that is not a
/// member of the group (a component's, the administrator) is never dropped.
#[sqlx::test(migrations = false)]
async fn remove_member_ends_the_login_and_drops_only_members(admin: PgPool) {
    let a = analyst(&admin).await;
    let group = db::ANALYST_ROLE;
    for other in ["beacon_api", "postgres", db::MIGRATOR_ROLE] {
        let err = db::remove_member(&admin, group, other).await.unwrap_err();
        assert!(err.to_string().contains("not a member"), "{other}: {err}");
    }
    assert!(
        db::remove_member(&admin, "beacon_api", &a.login)
            .await
            .is_err()
    );
    assert!(db::remove_member(&admin, group, "a;drop").await.is_err());
    let mut open = a.connect().await;
    assert!(db::remove_member(&admin, group, &a.login).await.unwrap());
    assert!(
        sqlx::query("SELECT 1").execute(&mut open).await.is_err(),
        "the open session was ended"
    );
    assert!(PgConnection::connect_with(&a.options).await.is_err());
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
            .bind(&a.login)
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!exists);
    assert!(!db::remove_member(&admin, group, &a.login).await.unwrap());
    for role in ["beacon_api", db::MIGRATOR_ROLE] {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)")
                .bind(role)
                .fetch_one(&admin)
                .await
                .unwrap();
        assert!(exists, "{role}");
    }
}
