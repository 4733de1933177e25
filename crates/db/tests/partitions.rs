//! `raw.events` is partitioned by month; its partitions are reached only through it, and
//! only the retention role, only through its functions, makes or drops them. Tried for
//! real against a live database: every role attempts what it must not do.

use platform::access::AccessModel;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgConnectOptions};
use uuid::Uuid;

async fn connect_as(admin: &PgPool, role: &str) -> PgConnection {
    let options: PgConnectOptions = (*admin.connect_options()).clone().username(role);
    PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("connect as {role}: {e}"))
}

async fn partitions(admin: &PgPool) -> Vec<String> {
    db::event_partitions(admin).await.unwrap()
}

/// The partition this month's events go to.
async fn current_partition(admin: &PgPool) -> String {
    sqlx::query_scalar("SELECT 'events_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMM')")
        .fetch_one(admin)
        .await
        .unwrap()
}

/// Roles to try, as logins: every component role of the model, the retention role, and
/// a member of each group role (analysts).
async fn logins(admin: &PgPool) -> Vec<String> {
    let model = AccessModel::load();
    let db: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(admin)
        .await
        .unwrap();
    let mut out = Vec::new();
    for (role, spec) in &model.database.roles {
        if spec.login {
            out.push(role.clone());
        } else {
            let member = format!("{role}_probe");
            sqlx::raw_sql(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{member}') THEN CREATE ROLE {member} LOGIN; END IF; END $$; GRANT {role} TO {member}; GRANT CONNECT ON DATABASE \"{db}\" TO {member}"
            ))
            .execute(admin)
            .await
            .unwrap();
            out.push(member);
        }
    }
    out
}

fn denied(result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>, what: &str) {
    let err = result.expect_err(what);
    let message = err.to_string();
    assert!(
        message.contains("permission denied") || message.contains("must be owner"),
        "{what}: {message}"
    );
}

#[sqlx::test(migrations = false)]
async fn partitions_exist_ahead_and_are_reached_only_through_raw_events(admin: PgPool) {
    db::setup(&admin).await.unwrap();
    let model = AccessModel::load();
    // The migration left the default horizon: this month and the two after it, and the
    // accepted window (400 days) back.
    let have = partitions(&admin).await;
    let expected = db::event_partition_months(&admin, 401, 2).await.unwrap();
    for name in &expected {
        assert!(have.contains(name), "{name} missing from {have:?}");
    }
    // Partitions the retention job creates later, after the grants were applied, are
    // checked below as well.
    let mut retention = connect_as(&admin, "beacon_retention").await;
    let created: i32 = sqlx::query_scalar("SELECT raw.ensure_event_partitions(400, 4)")
        .fetch_one(&mut retention)
        .await
        .unwrap();
    assert_eq!(created, 2);

    // Two tenants' events in the current partition.
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut owner = connect_as(&admin, db::MIGRATOR_ROLE).await;
    for tenant in [a, b] {
        sqlx::query(
            "INSERT INTO raw.events (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
             VALUES ($1, 'e1', 'click', now(), 'c', 'search', 'EUR')",
        )
        .bind(tenant)
        .execute(&mut owner)
        .await
        .unwrap();
    }
    let current = current_partition(&admin).await;
    // Row-level security is enabled and forced on every partition, without a policy:
    // whoever is given a partition by mistake sees nothing. Not even the owner reads
    // through a partition name, while it reads both tenants through raw.events.
    let through_partition: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM raw.{current}"))
        .fetch_one(&mut owner)
        .await
        .unwrap();
    let through_parent: i64 = sqlx::query_scalar("SELECT count(*) FROM raw.events")
        .fetch_one(&mut owner)
        .await
        .unwrap();
    assert_eq!((through_partition, through_parent), (0, 2));
    for partition in partitions(&admin).await {
        let (enabled, forced, policies, acl): (bool, bool, i64, Option<Vec<String>>) =
            sqlx::query_as(
                "SELECT c.relrowsecurity, c.relforcerowsecurity,
                        (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid),
                        c.relacl::text[]
                 FROM pg_class c WHERE c.oid = ('raw.' || quote_ident($1))::regclass",
            )
            .bind(&partition)
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(enabled && forced, "{partition}: RLS {enabled}/{forced}");
        assert_eq!(policies, 0, "{partition} has a policy");
        // Only the owner in the ACL (or the default, which is the owner alone).
        for entry in acl.unwrap_or_default() {
            assert!(entry.starts_with("beacon_owner="), "{partition}: {entry}");
        }
        for role in model.database.roles.keys() {
            for privilege in ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"] {
                let granted: bool = sqlx::query_scalar("SELECT has_table_privilege($1, $2, $3)")
                    .bind(role)
                    .bind(format!("raw.{partition}"))
                    .bind(privilege)
                    .fetch_one(&admin)
                    .await
                    .unwrap();
                assert!(!granted, "{role} has {privilege} on raw.{partition}");
            }
        }
    }

    // Every role, tried for real: naming a partition is refused, whatever the role may
    // do through raw.events. The loader, in tenant a's transaction, cannot slip tenant
    // b's row past the parent's policy by inserting into the partition.
    for login in logins(&admin).await {
        let mut conn = connect_as(&admin, &login).await;
        denied(
            sqlx::query(&format!("SELECT * FROM raw.{current}"))
                .execute(&mut conn)
                .await,
            &format!("{login} reads raw.{current}"),
        );
        let mut tx = conn.begin().await.unwrap();
        sqlx::query("SELECT set_config('beacon.tenant_id', $1, true)")
            .bind(a.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        denied(
            sqlx::query(&format!(
                "INSERT INTO raw.{current} (tenant_id, event_id, event_type, occurred_at, campaign, channel, currency)
                 VALUES ($1, 'x', 'click', now(), 'c', 'search', 'EUR')"
            ))
            .bind(b)
            .execute(&mut *tx)
            .await,
            &format!("{login} inserts into raw.{current}"),
        );
        tx.rollback().await.ok();
        conn.close().await.ok();
    }
}

#[sqlx::test(migrations = false)]
async fn only_the_retention_role_makes_or_drops_partitions_and_only_through_its_functions(
    admin: PgPool,
) {
    db::setup(&admin).await.unwrap();
    let current = current_partition(&admin).await;
    let far: String =
        sqlx::query_scalar("SELECT to_char(now() + interval '6 months', 'YYYY-MM-01')")
            .fetch_one(&admin)
            .await
            .unwrap();
    let attempts = [
        "CREATE TABLE raw.events_p209901 PARTITION OF raw.events FOR VALUES FROM ('2099-01-01') TO ('2099-02-01')"
            .to_owned(),
        format!("DROP TABLE raw.{current}"),
        format!("ALTER TABLE raw.events DETACH PARTITION raw.{current}"),
        format!("TRUNCATE raw.{current}"),
        "CREATE TABLE raw.spare (LIKE raw.events)".to_owned(),
        format!("SELECT raw.create_event_partition('{far}'::date)"),
    ];
    for login in logins(&admin).await {
        let mut conn = connect_as(&admin, &login).await;
        for sql in &attempts {
            denied(
                sqlx::raw_sql(sql).execute(&mut conn).await,
                &format!("{login}: {sql}"),
            );
        }
        if login != "beacon_retention" {
            for sql in [
                "SELECT raw.ensure_event_partitions(400, 2)",
                "SELECT raw.drop_expired_event_partition(400)",
                "SELECT output.expire_aggregates(400, 10)",
            ] {
                denied(
                    sqlx::raw_sql(sql).execute(&mut conn).await,
                    &format!("{login}: {sql}"),
                );
            }
        }
        conn.close().await.ok();
    }
    assert!(partitions(&admin).await.contains(&current));

    // The retention role, through its functions, within their limits only.
    let mut retention = connect_as(&admin, "beacon_retention").await;
    let created: i32 = sqlx::query_scalar("SELECT raw.ensure_event_partitions(400, 5)")
        .fetch_one(&mut retention)
        .await
        .unwrap();
    assert_eq!(created, 3, "months 3, 4 and 5 ahead");
    for sql in [
        "SELECT raw.ensure_event_partitions(400, 13)",
        "SELECT raw.ensure_event_partitions(0, 2)",
        "SELECT raw.drop_expired_event_partition(0)",
        "SELECT output.expire_aggregates(0, 10)",
        "SELECT output.expire_aggregates(400, 1000000)",
    ] {
        let err = sqlx::raw_sql(sql)
            .execute(&mut retention)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must be between"), "{sql}: {err}");
    }
    // A one-day retention drops last month and older, never the current month.
    let mut dropped = Vec::new();
    while let Some(name) =
        sqlx::query_scalar::<_, Option<String>>("SELECT raw.drop_expired_event_partition(1)")
            .fetch_one(&mut retention)
            .await
            .unwrap()
    {
        dropped.push(name);
    }
    // (The month of a day ago is the current one except on the first of a month.)
    let kept: String = sqlx::query_scalar(
        "SELECT 'events_p' || to_char((now() - interval '1 day') AT TIME ZONE 'UTC', 'YYYYMM')",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert!(!dropped.is_empty());
    assert!(dropped.iter().all(|p| p < &kept), "{dropped:?}");
    assert_eq!(partitions(&admin).await.first(), Some(&kept));
    // Everything the role owns: nothing.
    let owned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class WHERE relowner = 'beacon_retention'::regrole",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(owned, 0);
}
