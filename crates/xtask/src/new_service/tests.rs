use super::*;
use crate::scratch::Copy;

fn http(name: &str) -> Options {
    Options {
        public: true,
        called_by: vec!["dashboard".into()],
        calls: vec!["api".into()],
        ..Options::http(name)
    }
}

/// An internal gRPC service with its own database, for the api.
fn grpc(name: &str) -> Options {
    Options {
        kind: Kind::Grpc,
        database: true,
        called_by: vec!["api".into()],
        ..Options::http(name)
    }
}

/// A worker with its own database that calls analytics.
fn worker(name: &str) -> Options {
    Options {
        kind: Kind::Worker,
        database: true,
        calls: vec!["analytics".into()],
        team: "data_engineer".into(),
        ..Options::http(name)
    }
}

fn network_rows(rows: &[crate::access::diff::Row]) -> Vec<&str> {
    rows.iter()
        .filter(|r| r.1 == "network")
        .map(|r| r.2.as_str())
        .collect()
}

#[test]
fn scaffolding_edits_the_model_and_renders_every_layer() {
    let copy = Copy::new("new-service").unwrap();
    let dir = &copy.dir;
    scaffold(dir, &http("reports")).unwrap();
    let text = std::fs::read_to_string(dir.join(crate::access::diff::MODEL_PATH)).unwrap();
    let model = AccessModel::parse(&text).unwrap();
    let c = &model.components["reports"];
    assert_eq!(c.namespace, "beacon-reports");
    assert!(model.kubernetes.namespaces.contains(&c.namespace));
    crate::access::check(dir, &model).unwrap();
    let rows = crate::access::diff::changes(&AccessModel::load(), &model);
    let flows = network_rows(&rows);
    for flow in [
        "(internet → reports http)",
        "(dashboard → reports http)",
        "(reports → api http)",
    ] {
        assert!(flows.iter().any(|f| f.contains(flow)), "{flow}: {flows:?}");
    }
    assert!(rows.iter().all(|r| r.0 == "opens"), "{rows:?}");
    assert!(
        rows.iter()
            .any(|r| r.2 == "beacon:product-developers may delete pods in beacon-reports"),
        "{rows:?}"
    );
    // The SRE's Role stays in the baseline: the new namespace is one of "every".
    assert!(
        !std::fs::read_to_string(dir.join("k8s/base/reports/rbac.yaml"))
            .unwrap()
            .contains("name: sre\n")
    );
    // Its README says what it may touch, from the model.
    let readme = std::fs::read_to_string(dir.join("crates/reports/README.md")).unwrap();
    assert!(readme.contains("- reaches: api http (8081)"), "{readme}");
    assert!(scaffold(dir, &http("reports")).is_err(), "twice");
    for bad in ["Bad_Name", "trailing-", "9lives", ""] {
        assert!(scaffold(dir, &http(bad)).is_err(), "{bad}");
    }
}

#[test]
fn a_grpc_service_with_a_database_gets_its_role_schema_callers_and_secrets() {
    let copy = Copy::new("new-service").unwrap();
    let dir = &copy.dir;
    scaffold(dir, &grpc("ledger")).unwrap();
    let model = AccessModel::parse(
        &std::fs::read_to_string(dir.join(crate::access::diff::MODEL_PATH)).unwrap(),
    )
    .unwrap();
    crate::access::check(dir, &model).unwrap();
    assert_eq!(
        model.allowed_grpc_callers("ledger"),
        vec![model.spiffe_id("api").unwrap()]
    );
    // `cargo xtask up` starts it from the model: its port, its role, its mTLS files.
    let planned = crate::up::scaffolded(
        &model,
        &|role| Ok(vec![("DATABASE_USER", role.to_owned())]),
        &|name| vec![("BEACON_TLS_CERT_FILE", format!("{name}.crt"))],
    )
    .unwrap();
    let [ledger] = planned.as_slice() else {
        panic!("only the scaffolded service: {planned:?}")
    };
    let grpc_port = model.components["ledger"].ports["grpc"];
    assert_eq!(
        (ledger.name.as_str(), ledger.package.as_str()),
        ("ledger", "ledger")
    );
    assert_eq!(ledger.admin_port, model.components["ledger"].ports["admin"]);
    for want in [
        ("DATABASE_USER", "beacon_ledger".to_owned()),
        ("BEACON_TLS_CERT_FILE", "ledger.crt".to_owned()),
        ("BEACON_LISTEN_ADDR", format!("127.0.0.1:{grpc_port}")),
    ] {
        assert!(ledger.env.contains(&want), "{want:?} in {:?}", ledger.env);
    }
    let c = &model.components["ledger"];
    assert_eq!(c.ports.keys().collect::<Vec<_>>(), ["admin", "grpc"]);
    assert_eq!(c.db_role.as_deref(), Some("beacon_ledger"));
    let role = &model.database.roles["beacon_ledger"];
    assert!(role.login);
    assert_eq!(
        role.grants["ledger.items"],
        ["SELECT", "INSERT", "UPDATE", "DELETE"]
    );
    assert!(
        model
            .database
            .tenant_tables
            .contains(&"ledger.items".to_owned())
    );
    assert!(model.database.schemas.contains(&"ledger".to_owned()));

    let rows = crate::access::diff::changes(&AccessModel::load(), &model);
    let flows = network_rows(&rows);
    assert!(
        flows.iter().any(|f| f.contains("(api → ledger grpc)")),
        "{flows:?}"
    );
    assert!(
        flows
            .iter()
            .any(|f| f.contains("(ledger → postgres postgres)")),
        "{flows:?}"
    );
    assert!(!flows.iter().any(|f| f.contains("internet")), "{flows:?}");
    // Generated: the role in roles.sql, roles.rs (so xtask up/secrets make its
    // password), and its grants.
    let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    assert!(read("crates/db/src/roles.rs").contains("\"beacon_ledger\""));
    assert!(read("crates/db/src/grants.sql").contains("ON ledger.items TO beacon_ledger"));
    // Wired by hand-kept files: the migration, the bootstrap Job, the dev secrets.
    let migrations: Vec<_> = std::fs::read_dir(dir.join("crates/db/migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with("_ledger.sql"))
        .collect();
    assert_eq!(migrations.len(), 1, "{migrations:?}");
    assert!(read("k8s/base/data/jobs.yaml").contains(
        "        - name: BEACON_LEDGER_PASSWORD_FILE\n          value: /etc/beacon/passwords/beacon_ledger\n"
    ));
    let dev = read("k8s/overlays/dev/kustomization.yaml");
    assert!(
        dev.contains("      - beacon_ledger=secrets/beacon_ledger.password\n"),
        "{dev}"
    );
    assert!(
        dev.contains("  - name: ledger-db\n    namespace: beacon-ledger\n"),
        "{dev}"
    );
    assert!(dev.contains("  - name: ledger-tls\n"), "{dev}");
    assert!(
        read("k8s/overlays/prod/certificates.yaml")
            .contains("  - spiffe://beacon.local/ns/beacon-ledger/sa/ledger\n")
    );
    let lib = read("crates/ledger/src/lib.rs");
    assert!(lib.contains("DbConfig::from_env(\"beacon_ledger\", \"ledger\")"));
    assert!(
        !lib.contains("@db") && !lib.contains("__"),
        "placeholders left"
    );
}

#[test]
fn a_worker_listens_on_its_admin_port_only() {
    let copy = Copy::new("new-service").unwrap();
    let dir = &copy.dir;
    scaffold(dir, &worker("sweeper")).unwrap();
    let model = AccessModel::parse(
        &std::fs::read_to_string(dir.join(crate::access::diff::MODEL_PATH)).unwrap(),
    )
    .unwrap();
    crate::access::check(dir, &model).unwrap();
    assert_eq!(
        model.components["sweeper"].ports.keys().collect::<Vec<_>>(),
        ["admin"]
    );
    let inbound: Vec<_> = model.flows.iter().filter(|f| f.to == "sweeper").collect();
    assert_eq!(inbound.len(), 1, "{inbound:?}");
    assert_eq!(
        (inbound[0].from.as_str(), inbound[0].port.as_str()),
        ("prometheus", "admin")
    );
    let lib = std::fs::read_to_string(dir.join("crates/sweeper/src/lib.rs")).unwrap();
    assert!(!lib.contains("BEACON_LISTEN_ADDR"), "{lib}");
    // Refused: a worker that others would call, a public gRPC service, a gRPC
    // service nobody may call.
    for (options, why) in [
        (
            Options {
                called_by: vec!["api".into()],
                ..worker("w2")
            },
            "admin port",
        ),
        (
            Options {
                public: true,
                ..grpc("g2")
            },
            "internal",
        ),
        (
            Options {
                called_by: vec![],
                ..grpc("g3")
            },
            "--called-by",
        ),
    ] {
        let err = scaffold(dir, &options).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }
}

/// The proof: in one copy of the repository, scaffold a service of each kind
/// (HTTP; gRPC with a database; worker with a database) and run there, with no hand
/// edit: the build, the new crates' tests (and the database crate's, which checks
/// every role of the model, the new ones included, on a live PostgreSQL), `access
/// check`, the render of both overlays, tests/k8s, and the network-config-analyzer
/// snapshot update (`cargo xtask nca`). Needs `DATABASE_URL`, kubectl and nca.
#[test]
#[ignore = "builds and tests a copy of the workspace (minutes): cargo test -p xtask -- --ignored new_service"]
fn scaffolded_services_of_every_kind_build_test_and_pass_the_checks() {
    let copy = Copy::new("new-service").unwrap();
    for options in [http("reports"), grpc("ledger"), worker("sweeper")] {
        scaffold(&copy.dir, &options).unwrap();
    }
    let packages = ["-p", "reports", "-p", "ledger", "-p", "sweeper"];
    let with = |first: &[&'static str], more: &[&'static str]| -> Vec<&'static str> {
        first.iter().chain(more).copied().collect()
    };
    copy.cargo(&with(&["build"], &packages)).unwrap();
    copy.cargo(&with(&["test"], &packages)).unwrap();
    copy.cargo(&["test", "-p", "db"]).unwrap();
    // Writes the nca snapshots (they now show the new namespaces), then checks them.
    copy.static_checks(true).unwrap();
    let snapshot = std::fs::read_to_string(copy.dir.join("k8s/nca/prod-connectivity.txt")).unwrap();
    assert!(snapshot.contains("beacon-ledger"), "{snapshot}");
}
