//! The analysts' Kubernetes path against a real PostgreSQL run as the cluster runs it
//! (TLS, scram-sha-256 everywhere): the programs the Jobs run (`beacon-db bootstrap`,
//! `migrate`, then `analyst add NAME` with the password from a file, as the Job `cargo
//! xtask analyst add NAME --kube` renders), and the toolbox's own client: `psql` with the
//! dev overlay's rendered `pg_service.conf` (verify-full against the CA by the Service's
//! name, SCRAM with channel binding). The analyst reads `raw`, is refused `app`, carries
//! the group's timeouts; after `analyst remove NAME` the login is gone. What only a
//! cluster adds (the Job, the exec, the NetworkPolicy) is scripts/e2e-analysts.sh.

mod support;

use std::{collections::HashMap, path::PathBuf, process::Command};

use serde_json::Value;

/// `beacon-db` as the Jobs run it: the administrator (or `user`) over verified TLS.
fn beacon_db(pg: &support::TlsPostgres, bin: &PathBuf, user: &str, args: &[&str]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env_clear()
        .env("DATABASE_HOST", "127.0.0.1")
        .env("DATABASE_PORT", pg.port.to_string())
        .env("DATABASE_NAME", "beacon")
        .env("DATABASE_USER", user)
        .env("DATABASE_SSLMODE", "verify-full")
        .env("DATABASE_SSLROOTCERT", pg.file("ca.crt"))
        .env(
            "DATABASE_PASSWORD_FILE",
            pg.file(&format!("{user}.password")),
        );
    for role in db::LOGIN_ROLES {
        cmd.env(
            format!("{}_PASSWORD_FILE", role.to_uppercase()),
            pg.file(&format!("{role}.password")),
        );
    }
    cmd.env("ANALYST_PASSWORD_FILE", pg.file("analyst.password"));
    let out = cmd.output().expect("running beacon-db");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "beacon-db {args:?}: {text}");
    text
}

/// `psql -U login -c sql` with the toolbox's environment: the service file, no history.
fn psql(
    services: &PathBuf,
    service: &str,
    login: &str,
    password: &str,
    sql: &str,
) -> (bool, String) {
    let out = Command::new("psql")
        .args(["-U", login, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("PGSERVICEFILE", services)
        .env("PGSERVICE", service)
        .env("PGPASSWORD", password)
        .env("PSQL_HISTORY", "/dev/null")
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("running psql (install the PostgreSQL client)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned(),
    )
}

#[test]
fn an_analyst_login_made_by_the_job_works_from_the_toolbox_and_is_removed_again() {
    let root = xtask::up::workspace_root();
    let bins: HashMap<String, PathBuf> =
        xtask::up::cargo_build(&root, &["-p", "db", "--bin", "beacon-db"]).unwrap();
    let bin = &bins["beacon-db"];
    let pg = support::TlsPostgres::start("analyst-toolbox");
    pg.write("postgres.password", &pg.admin_password.clone());
    for role in db::LOGIN_ROLES {
        pg.write(
            &format!("{role}.password"),
            &uuid::Uuid::new_v4().to_string(),
        );
    }
    beacon_db(&pg, bin, "postgres", &["bootstrap"]);
    beacon_db(&pg, bin, db::MIGRATOR_ROLE, &["migrate"]);

    // The Job's program: the password only from the file, never in its output.
    let name = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let login = db::analyst_login(&name);
    let password = uuid::Uuid::new_v4().to_string();
    pg.write("analyst.password", &password);
    let out = beacon_db(&pg, bin, "postgres", &["analyst", "add", &name]);
    assert!(out.contains(&login), "{out}");
    assert!(!out.contains(&password), "the password is printed: {out}");

    // The toolbox's service file, as the dev overlay renders it, pointed at this server:
    // the same name (its certificate's), the test's address, port and CA file.
    let docs = xtask::analyst::kube::render_overlay("dev").unwrap();
    let config = docs
        .iter()
        .find(|d: &&Value| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "analysts-toolbox")
        .expect("ConfigMap analysts-toolbox");
    let services = config["data"]["pg_service.conf"]
        .as_str()
        .unwrap()
        .replace(
            &format!("host={}\n", support::SERVER_NAME),
            &format!("host={}\nhostaddr=127.0.0.1\n", support::SERVER_NAME),
        )
        .replace("port=5432", &format!("port={}", pg.port))
        .replace(
            "sslrootcert=/etc/beacon/pg/ca.crt",
            &format!("sslrootcert={}", pg.file("ca.crt").display()),
        );
    assert_eq!(
        services.matches("hostaddr=127.0.0.1").count(),
        2,
        "{services}"
    );
    let services = pg.write("pg_service.conf", &services);

    for service in ["read", "write"] {
        let (ok, out) = psql(
            &services,
            service,
            &login,
            &password,
            "SELECT count(*) FROM raw.events",
        );
        assert!(ok && out == "0", "{service}: {out}");
    }
    let (ok, out) = psql(
        &services,
        "read",
        &login,
        &password,
        "SELECT ssl, current_setting('statement_timeout'), current_setting('idle_in_transaction_session_timeout') \
         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    );
    assert!(ok && out == "t|1min|30s", "{out}");
    let (ok, out) = psql(
        &services,
        "read",
        &login,
        &password,
        "SELECT * FROM app.users",
    );
    assert!(!ok && out.contains("permission denied"), "{out}");
    let (ok, out) = psql(&services, "read", &login, "wrong", "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
    // The same service file with another CA: verify-full refuses the server.
    let rogue = pg.write(
        "rogue.crt",
        &xtask::certs::Ca::new("Rogue CA").unwrap().cert_pem,
    );
    let text = std::fs::read_to_string(&services).unwrap();
    let rogue_services = pg.write(
        "rogue_service.conf",
        &text.replace(
            &pg.file("ca.crt").display().to_string(),
            &rogue.display().to_string(),
        ),
    );
    let (ok, out) = psql(&rogue_services, "read", &login, &password, "SELECT 1");
    assert!(!ok && out.contains("certificate verify failed"), "{out}");

    // Removed: it cannot log in any more; removing again is not an error.
    let out = beacon_db(&pg, bin, "postgres", &["analyst", "remove", &name]);
    assert!(out.contains("removed"), "{out}");
    let (ok, out) = psql(&services, "read", &login, &password, "SELECT 1");
    assert!(
        !ok && out.contains("password authentication failed"),
        "{out}"
    );
    let out = beacon_db(&pg, bin, "postgres", &["analyst", "remove", &name]);
    assert!(out.contains("nothing to remove"), "{out}");
}
