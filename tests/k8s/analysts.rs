//! The analysts' workspace (beacon-analysts): the psql toolbox is the only pod analysts
//! may run there, it holds no credential and verifies PostgreSQL, it reaches PostgreSQL
//! and nothing else, and analysts may exec into it but into nothing else and
//! port-forward nowhere. (CEL, RBAC and connectivity from the rendered manifests; the
//! live path is scripts/e2e-analysts.sh.)

use serde_json::{Value, json};

use crate::netpol::{Ep, Network};
use crate::render::{self, arr, kind, name, namespace};
use crate::{ANALYSTS, admission, find_mut, model, overlays, rbac};

const NS: &str = "beacon-analysts";

fn pod(job: &mut Value) -> &mut Value {
    &mut job["spec"]["template"]["spec"]
}

fn container(job: &mut Value) -> &mut Value {
    &mut job["spec"]["template"]["spec"]["containers"][0]
}

/// Jobs an analyst might try instead of the toolbox, each with what it would gain.
fn escapes(job: &Value) -> Vec<(&'static str, Value)> {
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut j = job.clone();
        f(&mut j);
        j
    };
    vec![
        (
            "another image",
            edit(&|j| container(j)["image"] = json!("docker.io/library/busybox:1.37")),
        ),
        (
            "another command",
            edit(&|j| container(j)["command"] = json!(["nc", "-l", "-p", "8080"])),
        ),
        (
            "a mounted API token",
            edit(&|j| pod(j)["automountServiceAccountToken"] = json!(true)),
        ),
        (
            "another service account",
            edit(&|j| pod(j)["serviceAccountName"] = json!("default")),
        ),
        (
            "a Secret volume",
            edit(&|j| {
                pod(j)["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "x", "secret": {"secretName": "postgres-admin"}}))
            }),
        ),
        (
            "a Secret in the projected volume",
            edit(&|j| {
                pod(j)["volumes"][1]["projected"]["sources"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"secret": {"name": "postgres-admin"}}))
            }),
        ),
        (
            "a hostPath volume",
            edit(&|j| {
                pod(j)["volumes"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "h", "hostPath": {"path": "/"}}))
            }),
        ),
        (
            "an extra container",
            edit(&|j| {
                let mut c = container(j).clone();
                c["name"] = json!("second");
                pod(j)["containers"].as_array_mut().unwrap().push(c);
            }),
        ),
        (
            "an init container",
            edit(&|j| pod(j)["initContainers"] = json!([{"name": "i", "image": "busybox"}])),
        ),
        (
            "a privileged container",
            edit(&|j| container(j)["securityContext"]["privileged"] = json!(true)),
        ),
        (
            "root",
            edit(&|j| {
                container(j)["securityContext"]["runAsUser"] = json!(0);
                container(j)["securityContext"]["runAsNonRoot"] = json!(false);
            }),
        ),
        (
            "an added capability",
            edit(&|j| container(j)["securityContext"]["capabilities"]["add"] = json!(["NET_RAW"])),
        ),
        (
            "the node's network",
            edit(&|j| pod(j)["hostNetwork"] = json!(true)),
        ),
        (
            "more memory",
            edit(&|j| container(j)["resources"]["limits"]["memory"] = json!("8Gi")),
        ),
        (
            "no deadline on the pod",
            edit(&|j| {
                pod(j)
                    .as_object_mut()
                    .unwrap()
                    .remove("activeDeadlineSeconds");
            }),
        ),
        (
            "a longer Job",
            edit(&|j| j["spec"]["activeDeadlineSeconds"] = json!(10_000_000)),
        ),
        (
            "no Job deadline",
            edit(&|j| {
                j["spec"]
                    .as_object_mut()
                    .unwrap()
                    .remove("activeDeadlineSeconds");
            }),
        ),
        ("retries", edit(&|j| j["spec"]["backoffLimit"] = json!(100))),
        (
            "many pods at once",
            edit(&|j| j["spec"]["parallelism"] = json!(6)),
        ),
        // Labels that would make it an endpoint of a Service (or select another
        // component's NetworkPolicy, were it in that namespace).
        (
            "the pipeline's label",
            edit(&|j| {
                j["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] =
                    json!("pipeline")
            }),
        ),
        (
            "PostgreSQL's label",
            edit(&|j| {
                j["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] =
                    json!("postgres")
            }),
        ),
        (
            "an extra pod label",
            edit(&|j| j["spec"]["template"]["metadata"]["labels"]["role"] = json!("ingest")),
        ),
        (
            "an AppArmor annotation",
            edit(&|j| {
                j["spec"]["template"]["metadata"]["annotations"] =
                    json!({"container.apparmor.security.beta.kubernetes.io/psql": "unconfined"})
            }),
        ),
    ]
}

#[test]
fn the_toolbox_job_is_admitted_and_every_escape_refused() {
    for (overlay, docs) in overlays() {
        let policy = admission::toolbox_policy(&docs);
        let cron = admission::toolbox_cronjob(&docs);
        assert_eq!(namespace(&cron), NS);
        let job = admission::job_from(&cron, "alice");
        assert_eq!(
            policy.denials(&job, &cron, ANALYSTS),
            Vec::<String>::new(),
            "{overlay}: the toolbox Job must be admitted"
        );
        let escapes = escapes(&job);
        assert!(escapes.len() >= 20);
        for (what, forbidden) in &escapes {
            assert!(
                !policy.denials(forbidden, &cron, ANALYSTS).is_empty(),
                "{overlay}: an analyst's toolbox Job with {what} must be denied"
            );
        }
        // The delivery identity is not narrowed by it.
        assert!(
            policy
                .denials(&escapes[0].1, &cron, &["system:serviceaccounts"])
                .is_empty()
        );
        // The parameter decides, and without it nothing is admitted.
        let mut other = cron.clone();
        other["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("docker.io/library/postgres:18");
        assert!(!policy.denials(&job, &other, ANALYSTS).is_empty());
        assert!(!policy.denials(&job, &Value::Null, ANALYSTS).is_empty());
        // The transform's policy is no way round: it is bound elsewhere and takes
        // another template (a transform Job is refused by the toolbox policy).
        let transform = admission::job_from_cronjob(&docs);
        assert!(!policy.denials(&transform, &cron, ANALYSTS).is_empty());
    }
}

/// Bound in Deny mode to the analysts' namespace only, asked about every Job created or
/// updated, the toolbox CronJob as parameter, failing closed.
#[test]
fn the_toolbox_policy_is_bound_to_deny_in_the_analysts_namespace() {
    for (overlay, docs) in overlays() {
        let find = |k: &str| {
            docs.iter()
                .find(|d| kind(d) == k && name(d) == "beacon-analyst-toolbox")
                .unwrap_or_else(|| panic!("{overlay}: {k} beacon-analyst-toolbox is rendered"))
        };
        let (policy, binding) = (
            find("ValidatingAdmissionPolicy"),
            find("ValidatingAdmissionPolicyBinding"),
        );
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{overlay}");
        assert!(crate::covers(policy, "batch", "jobs"), "{overlay}");
        assert_eq!(binding["spec"]["policyName"], "beacon-analyst-toolbox");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(
            binding["spec"]["matchResources"]["namespaceSelector"],
            json!({"matchLabels": {"kubernetes.io/metadata.name": NS}}),
            "{overlay}"
        );
        assert_eq!(
            policy["spec"]["paramKind"],
            json!({"apiVersion": "batch/v1", "kind": "CronJob"})
        );
        assert_eq!(
            binding["spec"]["paramRef"],
            json!({"name": "analyst-toolbox", "namespace": NS,
                "parameterNotFoundAction": "Deny"}),
            "{overlay}"
        );
        // The matchCondition names exactly the analysts' group.
        let groups = admission::toolbox_policy(&docs).match_conditions;
        assert_eq!(
            groups,
            vec!["request.userInfo.groups.exists(g, g in ['beacon:analysts'])".to_owned()]
        );
    }
}

/// What the pod holds and where it connects: no Secret, no token, no port; psql with
/// verify-full against the CA from a ConfigMap; dev's one server, prod's replicas for
/// reading and primary for writing. The namespace can hold no Secret and no Service.
#[test]
fn the_toolbox_holds_no_credential_and_verifies_postgres() {
    for (overlay, docs) in overlays() {
        let cron = admission::toolbox_cronjob(&docs);
        let spec = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        let text = serde_json::to_string(spec).unwrap();
        assert!(!text.contains("secret"), "{overlay}: {text}");
        let c = &spec["containers"][0];
        assert!(arr(&c["ports"]).is_empty());
        assert!(
            c["image"].as_str().unwrap().contains("/library/postgres"),
            "{overlay}: {}",
            c["image"]
        );
        let env = |n: &str| {
            arr(&c["env"])
                .iter()
                .find(|e| e["name"] == n)
                .and_then(|e| e["value"].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(env("PGSERVICEFILE"), "/etc/beacon/pg/pg_service.conf");
        assert_eq!(env("PSQL_HISTORY"), "/dev/null");
        let config = docs
            .iter()
            .find(|d| kind(d) == "ConfigMap" && namespace(d) == NS && name(d) == "analysts-toolbox")
            .expect("ConfigMap analysts-toolbox");
        let services = config["data"]["pg_service.conf"].as_str().unwrap();
        let service = |s: &str| -> Vec<&str> {
            services
                .split(&format!("[{s}]\n"))
                .nth(1)
                .unwrap_or_else(|| panic!("{overlay}: no service {s}"))
                .split("\n\n")
                .next()
                .unwrap()
                .lines()
                .collect()
        };
        let (read_host, write_host) = if overlay == "prod" {
            ("postgres-ro.beacon-data.svc", "postgres-rw.beacon-data.svc")
        } else {
            ("postgres.beacon-data.svc", "postgres.beacon-data.svc")
        };
        for (s, host) in [("read", read_host), ("write", write_host)] {
            let lines = service(s);
            for want in [
                format!("host={host}"),
                "sslmode=verify-full".to_owned(),
                "sslrootcert=/etc/beacon/pg/ca.crt".to_owned(),
                "channel_binding=require".to_owned(),
                "dbname=beacon".to_owned(),
            ] {
                assert!(
                    lines.contains(&want.as_str()),
                    "{overlay} {s}: {want} in {lines:?}"
                );
            }
        }
        // The CA file is the postgres-ca ConfigMap's ca.crt, mounted where psql reads it.
        let ca = arr(&spec["volumes"])
            .iter()
            .flat_map(|v| arr(&v["projected"]["sources"]))
            .find(|s| s["configMap"]["name"] == "postgres-ca")
            .expect("postgres-ca projected");
        assert_eq!(
            ca["configMap"]["items"],
            json!([{"key": "ca.crt", "path": "ca.crt"}])
        );
        if overlay == "dev" {
            let cm = docs
                .iter()
                .find(|d| kind(d) == "ConfigMap" && namespace(d) == NS && name(d) == "postgres-ca")
                .expect("dev generates the CA ConfigMap");
            assert!(
                cm["data"]["ca.crt"]
                    .as_str()
                    .unwrap()
                    .starts_with("-----BEGIN CERTIFICATE-----")
            );
        }
        let quota = docs
            .iter()
            .find(|d| kind(d) == "ResourceQuota" && namespace(d) == NS)
            .unwrap();
        for k in ["secrets", "services", "count/deployments.apps"] {
            assert_eq!(quota["spec"]["hard"][k], "0", "{overlay}: {k}");
        }
        assert!(
            !docs
                .iter()
                .any(|d| namespace(d) == NS && ["Secret", "Service"].contains(&kind(d))),
            "{overlay}: nothing in {NS} holds a credential or selects pods"
        );
    }
}

/// Exec into the toolbox and nothing else; no port-forward, no attach, no Secret, no
/// pod of their own anywhere; and a grant of exec elsewhere is detected.
#[test]
fn analysts_exec_only_into_their_toolbox_and_port_forward_nowhere() {
    let model = model();
    for (overlay, docs) in overlays() {
        let perms = rbac::permissions(&docs);
        let analysts = &perms["beacon:analysts"];
        let has = |ns: &str, r: &str, v: &str| {
            analysts.contains(&(ns.into(), String::new(), r.into(), v.into()))
        };
        assert!(has(NS, "pods/exec", "create"), "{overlay}");
        assert!(has(NS, "pods/exec", "get"), "{overlay}");
        assert!(
            analysts.contains(&(NS.into(), "batch".into(), "jobs".into(), "create".into())),
            "{overlay}"
        );
        for (ns, g, r, v) in analysts {
            assert!(
                !(r == "pods/exec" && ns != NS),
                "{overlay}: exec in {ns} ({v})"
            );
            const NEVER: [&str; 4] = [
                "pods/portforward",
                "pods/attach",
                "pods/ephemeralcontainers",
                "secrets",
            ];
            let own_pod = g.is_empty() && r == "pods" && v == "create";
            assert!(
                !NEVER.contains(&r.as_str()) && !own_pod,
                "{overlay}: analysts may {v} {r} in {ns}"
            );
        }
        assert_eq!(rbac::analysts_workspace(&model), NS);
    }
    // Port-forward (anywhere) and attach (even in their workspace) are reported.
    let mut docs = render::prod();
    let role = find_mut(&mut docs, "Role", "beacon-pipeline", "analysts");
    role["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]}));
    let p = rbac::problems(&docs, &model);
    assert!(
        p.iter()
            .any(|x| x.contains("grants pods/portforward to beacon:analysts")),
        "{p:?}"
    );
    let mut docs = render::prod();
    let role = find_mut(&mut docs, "Role", NS, "analysts");
    role["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"]}));
    let p = rbac::problems(&docs, &model);
    assert!(
        p.iter()
            .any(|x| x.contains("grants pods/attach to beacon:analysts")),
        "{p:?}"
    );
}

/// The toolbox reaches PostgreSQL on 5432 (every instance in prod: the primary and the
/// replicas) and nothing else; nothing reaches it.
#[test]
fn the_toolbox_reaches_postgres_and_nothing_else() {
    let toolbox = Ep::Pod(NS.into(), "analysts-toolbox".into());
    let pg = Ep::Pod("beacon-data".into(), "postgres".into());
    for (overlay, docs) in overlays() {
        let net = Network::from_docs(&docs);
        assert!(net.allowed(&toolbox, &pg, "TCP", 5432), "{overlay}");
        assert!(net.allowed(&toolbox, &Ep::KubeDns, "UDP", 53), "{overlay}");
        let mut others = net.beacon_pods();
        others.extend(net.platform_pods());
        others.push(Ep::Internet);
        others.push(Ep::ForeignPod);
        for dst in &others {
            for port in [
                53, 443, 4317, 5432, 8000, 8080, 8081, 8082, 8083, 9085, 9187, 50051,
            ] {
                if dst == &pg && port == 5432 {
                    continue;
                }
                assert!(
                    !net.allowed(&toolbox, dst, "TCP", port),
                    "{overlay}: toolbox -> {dst} {port}"
                );
            }
            for port in [22, 5432, 8080] {
                assert!(
                    !net.allowed(dst, &toolbox, "TCP", port),
                    "{overlay}: {dst} -> toolbox {port}"
                );
            }
        }
    }
}
