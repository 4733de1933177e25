//! The database layer equals the access model, in both directions, tried for real:
//! every role connects and attempts every operation on every table.

use platform::access::AccessModel;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

const PRIVILEGES: [&str; 5] = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"];

async fn connect_as(admin: &PgPool, role: &str) -> PgConnection {
    let options: PgConnectOptions = (*admin.connect_options()).clone().username(role);
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

/// Attempts `privilege` on `table`; `Ok(())` unless PostgreSQL said "permission denied".
/// Every attempt runs in a transaction that is rolled back: nothing is changed.
async fn attempt(conn: &mut PgConnection, table: &str, privilege: &str) -> Result<(), String> {
    let first_column: &str = match table {
        "app.audit_log" => "actor",
        "app.tenants" => "name",
        _ => "tenant_id",
    };
    let sql = match privilege {
        "SELECT" => format!("SELECT count(*) FROM {table}"),
        "INSERT" => format!("INSERT INTO {table} DEFAULT VALUES"),
        "UPDATE" => format!("UPDATE {table} SET {first_column} = {first_column} WHERE false"),
        "DELETE" => format!("DELETE FROM {table} WHERE false"),
        "TRUNCATE" => format!("TRUNCATE {table} CASCADE"),
        _ => unreachable!(),
    };
    let mut tx = conn.begin().await.expect("begin");
    let result = sqlx::raw_sql(&sql).execute(&mut *tx).await;
    tx.rollback().await.ok();
    match result {
        Err(sqlx::Error::Database(e)) if e.message().starts_with("permission denied") => {
            Err(e.message().to_owned())
        }
        Err(sqlx::Error::Database(e)) if e.message().contains("does not exist") => {
            panic!("probe for {table} is wrong: {e}")
        }
        // Any other outcome (success, a NOT NULL or row-level-security violation) means
        // the privilege check passed.
        _ => Ok(()),
    }
}

#[sqlx::test(migrations = false)]
async fn every_role_has_exactly_the_table_privileges_of_the_model(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let model = AccessModel::load();

    // The model lists every table that exists, and only those. Partitions are reached
    // only through their parent (crates/db/tests/partitions.rs checks that they grant
    // nothing to anyone).
    let mut actual: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition ORDER BY 1",
    )
    .bind(&model.database.schemas)
    .fetch_all(&admin)
    .await
    .unwrap();
    let mut listed = model.database.tables.clone();
    actual.sort();
    listed.sort();
    assert_eq!(
        actual, listed,
        "tables in the database differ from [database.tables]"
    );

    let mut mismatches = Vec::new();
    for role in model.database.roles.keys() {
        // Group roles (analysts) cannot log in: test them through a throwaway member.
        let login = if model.database.roles[role].login {
            role.clone()
        } else {
            let member = format!("{role}_probe");
            sqlx::raw_sql(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{member}') THEN CREATE ROLE {member} LOGIN; END IF; END $$; GRANT {role} TO {member}; GRANT CONNECT ON DATABASE \"{db}\" TO {member}",
                db = sqlx::query_scalar::<_, String>("SELECT current_database()::text").fetch_one(&admin).await.unwrap()
            ))
            .execute(&admin)
            .await
            .unwrap();
            member
        };
        let mut conn = connect_as(&admin, &login).await;
        for table in &model.database.tables {
            for privilege in PRIVILEGES {
                let expected = model.grants(role, table, privilege);
                let outcome = attempt(&mut conn, table, privilege).await;
                if expected != outcome.is_ok() {
                    mismatches.push(format!(
                        "{role} {privilege} {table}: model says {}, database says {:?}",
                        if expected { "allowed" } else { "denied" },
                        outcome
                    ));
                }
                // The catalogue agrees with the behaviour.
                let catalog: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, $3)")
                    .bind(role)
                    .bind(table)
                    .bind(privilege)
                    .fetch_one(&admin)
                    .await
                    .unwrap();
                if catalog != expected {
                    mismatches.push(format!(
                        "{role} {privilege} {table}: catalogue says {catalog}"
                    ));
                }
            }
        }
        // Functions: exactly those listed are executable.
        let executable: Vec<String> = sqlx::query_scalar(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE n.nspname = ANY($2) AND has_function_privilege($1, p.oid, 'EXECUTE')
               AND p.proname <> 'current_tenant' ORDER BY 1",
        )
        .bind(role)
        .bind(&model.database.schemas)
        .fetch_all(&admin)
        .await
        .unwrap();
        let mut expected_functions = model.database.roles[role].functions.clone();
        expected_functions.sort();
        if executable != expected_functions {
            mismatches.push(format!(
                "{role} functions: database {executable:?}, model {expected_functions:?}"
            ));
        }
        conn.close().await.ok();
    }
    assert!(
        mismatches.is_empty(),
        "database differs from the access model:\n{}",
        mismatches.join("\n")
    );
}

#[sqlx::test(migrations = false)]
async fn no_component_role_is_privileged_or_owns_anything(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let model = AccessModel::load();
    for role in model
        .database
        .roles
        .keys()
        .chain(std::iter::once(&model.database.migrator))
    {
        let (superuser, bypass, createrole, createdb): (bool, bool, bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(
            !(superuser || bypass || createrole || createdb),
            "{role} has a dangerous attribute"
        );
        let owned: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = $1",
        )
        .bind(role)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert_eq!(owned, 0, "{role} owns relations");
    }
    // Every object in Beacon's schemas belongs to the login-less owner.
    let foreign: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname IN ('app','raw','output') AND c.relowner <> 'beacon_owner'::regrole",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(foreign, 0);
    let owner_login: bool =
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'beacon_owner'")
            .fetch_one(&admin)
            .await
            .unwrap();
    assert!(!owner_login);
    // Row-level security is on and forced on every tenant table, and on the tenants.
    for table in model
        .database
        .tenant_tables
        .iter()
        .map(String::as_str)
        .chain(["app.tenants"])
    {
        let (enabled, forced): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(
            enabled && forced,
            "{table}: RLS enabled={enabled} forced={forced}"
        );
    }
    // A component cannot create objects anywhere, nor temporary tables.
    for role in db::COMPONENT_ROLES {
        let mut conn = connect_as(&admin, role).await;
        for sql in [
            "CREATE TABLE public.x (a int)",
            "CREATE TABLE output.x (a int)",
            "CREATE TEMP TABLE x (a int)",
            "CREATE SCHEMA x",
        ] {
            let err = sqlx::raw_sql(sql).execute(&mut conn).await.expect_err(sql);
            assert!(
                err.to_string().contains("permission denied"),
                "{role}: {sql}: {err}"
            );
        }
        for grant in [
            "SET ROLE beacon_owner",
            "SET ROLE beacon_migrator",
            "SET ROLE postgres",
        ] {
            assert!(
                sqlx::raw_sql(grant).execute(&mut conn).await.is_err(),
                "{role}: {grant}"
            );
        }
    }
}

async fn seed_two_tenants(admin: &PgPool) -> (Uuid, Uuid) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    // As the owner (through the migrator), the only role that sees every tenant.
    let mut owner = connect_as(admin, db::MIGRATOR_ROLE).await;
    for (tenant, n) in [(a, 3_i32), (b, 5)] {
        sqlx::query(
            "INSERT INTO output.daily_campaign_facts (tenant_id, day, campaign, channel, currency, impressions)
             SELECT $1, current_date - g::int, 'c', 'search', 'EUR', 100 FROM generate_series(1, $2) g",
        )
        .bind(tenant)
        .bind(n)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    (a, b)
}

#[sqlx::test(migrations = false)]
async fn analytics_sees_only_the_tenant_of_its_transaction(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let (a, b) = seed_two_tenants(&admin).await;
    let pool =
        platform::db::DbConfig::for_role(&admin.connect_options(), "beacon_analytics").pool();

    // A deliberately unfiltered query, in tenant A's transaction.
    let mut tx = platform::db::begin_for_tenant(&pool, a).await.unwrap();
    let tenants: Vec<Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM output.daily_campaign_facts")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(tenants.len(), 3);
    assert!(
        tenants.iter().all(|t| *t == a),
        "tenant B leaked into tenant A's transaction"
    );
    // Even asking for B by id returns nothing.
    let mut tx = platform::db::begin_for_tenant(&pool, a).await.unwrap();
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM output.daily_campaign_facts WHERE tenant_id = $1")
            .bind(b)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(leaked, 0);
    tx.commit().await.unwrap();
    // Outside a tenant transaction: nothing at all, and the setting did not leak into
    // the pooled connection.
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM output.daily_campaign_facts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(none, 0);
}

#[sqlx::test(migrations = false)]
async fn loader_can_only_insert_for_the_tenant_of_its_transaction(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let pool = platform::db::DbConfig::for_role(&admin.connect_options(), "beacon_loader").pool();
    let insert = "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
                  VALUES ($1, $2, 'click', now(), 'c', 'search', 'EUR') ON CONFLICT DO NOTHING";
    let mut tx = platform::db::begin_for_tenant(&pool, a).await.unwrap();
    sqlx::query(insert)
        .bind(a)
        .bind("e1")
        .execute(&mut *tx)
        .await
        .unwrap();
    // Re-sent event: deduplicated with INSERT privilege alone.
    let again = sqlx::query(insert)
        .bind(a)
        .bind("e1")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(again.rows_affected(), 0);
    let err = sqlx::query(insert)
        .bind(b)
        .bind("e2")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
    drop(tx);
    // And it can never read back what it wrote.
    let err = sqlx::query("SELECT 1 FROM raw.events")
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[sqlx::test(migrations = false)]
async fn setup_is_idempotent(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    db::setup(&admin).await.unwrap();
    db::set_password(&admin, "beacon_api", "it's a 'quoted' secret")
        .await
        .unwrap();
    assert!(db::set_password(&admin, "postgres", "x").await.is_err());
}

/// Roles that must only ever see the tenant of their transaction. The others with a read
/// grant (transform, analysts) work across tenants by design.
const TENANT_BOUND_READERS: [&str; 2] = ["beacon_api", "beacon_analytics"];

/// A row of tenant A and of tenant B in every table that carries tenant data (and in
/// `app.tenants` itself), written as the owner: the only role that sees every tenant.
async fn seed_every_tenant_table(admin: &PgPool) -> (Uuid, Uuid) {
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut owner = connect_as(admin, db::MIGRATOR_ROLE).await;
    for (tenant, slug) in [(a, "tenant-a"), (b, "tenant-b")] {
        // Both tenants share currency and campaign name: only tenancy keeps them apart.
        sqlx::raw_sql(&format!(
            "INSERT INTO app.tenants (id, slug, name, currency) VALUES ('{tenant}', '{slug}', '{slug}', 'EUR');
             INSERT INTO app.users (id, tenant_id, email, display_name, password_hash, role)
                 VALUES (gen_random_uuid(), '{tenant}', '{slug}@example.test', 'u', 'x', 'admin');
             INSERT INTO app.api_keys (id, tenant_id, name, prefix, secret_hash, scopes)
                 VALUES (gen_random_uuid(), '{tenant}', 'k', '{slug}', '\\x00', ARRAY['kpis:read']);
             INSERT INTO app.audit_log (tenant_id, actor, action, outcome) VALUES ('{tenant}', 'a', 'x', 'success');
             INSERT INTO app.campaigns (id, tenant_id, name) VALUES (gen_random_uuid(), '{tenant}', 'spring');
             INSERT INTO app.revoked_tokens (jti, tenant_id, subject, expires_at) VALUES (gen_random_uuid(), '{tenant}', 'user:x', now() + interval '5 minutes');
             INSERT INTO app.erasures (id, tenant_id, subject_hash, user_key, requested_by)
                 VALUES (gen_random_uuid(), '{tenant}', sha256('{slug}'), 'u1', 'user:x');
             INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
                 VALUES ('{tenant}', 'e1', 'click', now(), 'spring', 'search', 'EUR');
             INSERT INTO output.daily_campaign_facts (tenant_id, day, campaign, channel, currency, clicks)
                 VALUES ('{tenant}', current_date, 'spring', 'search', 'EUR', 1);
             INSERT INTO output.attribution (tenant_id, day, campaign, channel, currency, model, conversions_micros)
                 VALUES ('{tenant}', current_date, 'spring', 'search', 'EUR', 'last_click', 1000000);
             INSERT INTO output.attribution_work (tenant_id, day) VALUES ('{tenant}', current_date);"
        ))
        .execute(&mut owner)
        .await
        .unwrap();
    }
    (a, b)
}

/// The tenant ids `role` sees in `table` with an unfiltered query, in `tenant`'s
/// transaction (or in none).
async fn visible_tenants(
    pool: &PgPool,
    table: &str,
    tenant: Option<Uuid>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let column = if table == "app.tenants" {
        "id"
    } else {
        "tenant_id"
    };
    let sql = format!("SELECT DISTINCT {column} FROM {table} ORDER BY 1");
    match tenant {
        Some(tenant) => {
            let mut tx = platform::db::begin_for_tenant(pool, tenant).await?;
            let seen = sqlx::query_scalar(&sql).fetch_all(&mut *tx).await;
            tx.rollback().await.ok();
            seen
        }
        None => sqlx::query_scalar(&sql).fetch_all(pool).await,
    }
}

#[sqlx::test(migrations = false)]
async fn tenant_bound_roles_see_only_their_tenant_in_every_table_they_read(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let model = AccessModel::load();
    let (a, b) = seed_every_tenant_table(&admin).await;
    let mut tables = model.database.tenant_tables.clone();
    tables.push("app.tenants".to_owned());
    let mut probed = 0;
    for role in TENANT_BOUND_READERS {
        let pool = platform::db::DbConfig::for_role(&admin.connect_options(), role).pool();
        for table in tables.iter().filter(|t| model.grants(role, t, "SELECT")) {
            for (mine, theirs) in [(a, b), (b, a)] {
                let seen = visible_tenants(&pool, table, Some(mine)).await.unwrap();
                assert_eq!(
                    seen,
                    vec![mine],
                    "{role} in {mine}'s transaction sees {seen:?} in {table} (not {theirs})"
                );
            }
            let seen = visible_tenants(&pool, table, None).await.unwrap();
            assert!(
                seen.is_empty(),
                "{role} outside a tenant transaction sees {seen:?} in {table}"
            );
            probed += 1;
        }
        pool.close().await;
    }
    // api: tenants, users, api_keys, audit_log, campaigns, revoked_tokens, erasures;
    // analytics: facts, attribution.
    assert_eq!(
        probed, 9,
        "the model's read grants changed: review this test"
    );

    // The transform's queues: the loader fills raw.batches through the trigger only for
    // the tenant of its transaction and can neither read nor forge it; the tenant-bound
    // roles cannot touch either queue.
    let loader = platform::db::DbConfig::for_role(&admin.connect_options(), "beacon_loader").pool();
    for table in ["raw.batches", "output.attribution_work"] {
        for role in ["beacon_loader", "beacon_api", "beacon_analytics"] {
            let pool = platform::db::DbConfig::for_role(&admin.connect_options(), role).pool();
            let err = visible_tenants(&pool, table, Some(a)).await.unwrap_err();
            assert!(
                err.to_string().contains("permission denied"),
                "{role} {table}: {err}"
            );
            pool.close().await;
        }
    }
    let mut tx = platform::db::begin_for_tenant(&loader, a).await.unwrap();
    let err =
        sqlx::query("INSERT INTO raw.batches (tenant_id, loaded_xid, events) VALUES ($1, '1', 1)")
            .bind(b)
            .execute(&mut *tx)
            .await
            .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    drop(tx);
    let mut tx = platform::db::begin_for_tenant(&loader, a).await.unwrap();
    sqlx::query(
        "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
         VALUES ($1, 'e2', 'click', now(), 'spring', 'search', 'EUR'), ($1, 'e3', 'click', now(), 'spring', 'search', 'EUR')",
    )
    .bind(a)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let queued: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, events FROM raw.batches
         WHERE loaded_xid = (SELECT loaded_xid FROM raw.events WHERE event_id = 'e2')",
    )
    .fetch_all(&admin)
    .await
    .unwrap();
    assert_eq!(queued, vec![(a, 2)]);
}

#[sqlx::test(migrations = false)]
async fn the_tenant_setting_never_outlives_its_transaction_on_a_reused_connection(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let (a, _) = seed_every_tenant_table(&admin).await;
    // One connection: every transaction below runs on the same backend.
    let mut config = platform::db::DbConfig::for_role(&admin.connect_options(), "beacon_analytics");
    config.max_connections = 1;
    let pool = config.pool();
    let backend = || async {
        sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let first = backend().await;
    for end in ["commit", "rollback", "read-only end"] {
        let count = "SELECT count(*) FROM output.attribution";
        let seen: i64 = if end == "read-only end" {
            let mut tx = platform::db::begin_read_only_for_tenant(&pool, a)
                .await
                .unwrap();
            let seen = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
            tx.end();
            seen
        } else {
            let mut tx = platform::db::begin_for_tenant(&pool, a).await.unwrap();
            let seen = sqlx::query_scalar(count).fetch_one(&mut *tx).await.unwrap();
            if end == "commit" {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
            seen
        };
        assert_eq!(seen, 1);
        let (setting, leaked): (Option<String>, i64) = sqlx::query_as(
            "SELECT NULLIF(current_setting('beacon.tenant_id', true), ''), (SELECT count(*) FROM output.attribution)",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(
            (setting.as_deref(), leaked),
            (None, 0),
            "the tenant setting leaked past {end}"
        );
    }
    assert_eq!(
        backend().await,
        first,
        "the pool did not reuse its connection"
    );
}

#[sqlx::test(migrations = false)]
async fn no_component_can_create_in_any_schema_nor_holds_column_grants(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let model = AccessModel::load();
    for role in db::COMPONENT_ROLES {
        let mut conn = connect_as(&admin, role).await;
        for schema in ["app", "raw", "output", "public"] {
            for sql in [
                format!("CREATE TABLE {schema}.x (a int)"),
                format!("CREATE VIEW {schema}.x AS SELECT 1 AS a"),
                format!("CREATE FUNCTION {schema}.x() RETURNS int LANGUAGE sql AS 'SELECT 1'"),
            ] {
                let err = sqlx::raw_sql(&sql)
                    .execute(&mut conn)
                    .await
                    .expect_err(&sql);
                assert!(
                    err.to_string().contains("permission denied"),
                    "{role}: {sql}: {err}"
                );
            }
            let create: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, $2, 'CREATE')")
                .bind(role)
                .bind(schema)
                .fetch_one(&admin)
                .await
                .unwrap();
            assert!(!create, "{role} may CREATE in {schema}");
        }
        for sql in [
            "CREATE TEMP TABLE x (a int)",
            "CREATE TEMP VIEW x AS SELECT 1",
        ] {
            let err = sqlx::raw_sql(sql).execute(&mut conn).await.expect_err(sql);
            assert!(
                err.to_string().contains("permission denied"),
                "{role}: {sql}: {err}"
            );
        }
        conn.close().await.ok();
    }
    // The model grants whole tables only: no column carries a grant of its own, and every
    // column's effective privileges are exactly the table's in the model.
    let column_grants: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s.%s.%s: %s', n.nspname, c.relname, a.attname, a.attacl::text)
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY($1) AND a.attacl IS NOT NULL ORDER BY 1",
    )
    .bind(&model.database.schemas)
    .fetch_all(&admin)
    .await
    .unwrap();
    assert!(
        column_grants.is_empty(),
        "column-level grants: {column_grants:?}"
    );
    let mut mismatches = Vec::new();
    for role in model.database.roles.keys() {
        for table in &model.database.tables {
            let columns: Vec<String> = sqlx::query_scalar(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
            )
            .bind(table)
            .fetch_all(&admin)
            .await
            .unwrap();
            for column in &columns {
                for privilege in ["SELECT", "INSERT", "UPDATE", "REFERENCES"] {
                    let expected =
                        privilege != "REFERENCES" && model.grants(role, table, privilege);
                    let actual: bool =
                        sqlx::query_scalar("SELECT has_column_privilege($1, $2, $3, $4)")
                            .bind(role)
                            .bind(table)
                            .bind(column)
                            .bind(privilege)
                            .fetch_one(&admin)
                            .await
                            .unwrap();
                    if actual != expected {
                        mismatches.push(format!(
                            "{role} {privilege} ({column}) ON {table}: {actual}"
                        ));
                    }
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "column privileges differ from the model:\n{}",
        mismatches.join("\n")
    );
}

/// A read-only tenant transaction refuses writes even for a role whose grants allow
/// them (the api may insert campaigns): `BEGIN READ ONLY` is part of the one statement
/// that opens it.
#[sqlx::test(migrations = false)]
async fn a_read_only_tenant_transaction_refuses_writes(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let (a, _) = seed_every_tenant_table(&admin).await;
    let pool = platform::db::DbConfig::for_role(&admin.connect_options(), "beacon_api").pool();
    let insert = "INSERT INTO app.campaigns (id, tenant_id, name) \
                  VALUES (gen_random_uuid(), current_setting('beacon.tenant_id')::uuid, 'x')";
    let mut tx = platform::db::begin_for_tenant(&pool, a).await.unwrap();
    sqlx::query(insert)
        .execute(&mut *tx)
        .await
        .expect("the api may insert a campaign");
    tx.rollback().await.unwrap();
    let mut tx = platform::db::begin_read_only_for_tenant(&pool, a)
        .await
        .unwrap();
    let err = sqlx::query(insert).execute(&mut *tx).await.unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    assert_eq!(code.as_deref(), Some("25006"), "{err}");
    tx.end();
}
