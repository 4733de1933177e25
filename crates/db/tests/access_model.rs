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

    // The model lists every table that exists, and only those.
    let mut actual: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename FROM pg_tables WHERE schemaname = ANY($1) ORDER BY 1",
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
    // Row-level security is on and forced on every tenant table.
    for table in &model.database.tenant_tables {
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
