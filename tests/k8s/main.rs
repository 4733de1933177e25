//! The Kubernetes manifests, rendered with `kubectl kustomize` for both overlays, checked
//! against `security/access-model.toml` and the restricted Pod Security Standard.
//!
//! Every check also runs on a deliberately broken copy of the manifests and must fail
//! there: a check that cannot fail proves nothing.

mod admission;
mod analysts;
mod cnpg;
mod database;
mod netpol;
mod observability;
mod pods;
mod rbac;
mod release;
mod render;
mod scheduling;

use platform::access::AccessModel;
use serde_json::{Value, json};

use render::{kind, name, namespace};

fn model() -> AccessModel {
    AccessModel::load()
}

fn overlays() -> [(&'static str, Vec<Value>); 2] {
    [("dev", render::dev()), ("prod", render::prod())]
}

fn assert_none(what: &str, overlay: &str, problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{what} ({overlay} overlay):\n  {}",
        problems.join("\n  ")
    );
}

fn find_mut<'a>(docs: &'a mut [Value], k: &str, ns: &str, n: &str) -> &'a mut Value {
    docs.iter_mut()
        .find(|d| kind(d) == k && namespace(d) == ns && name(d) == n)
        .unwrap_or_else(|| panic!("{k} {ns}/{n} not rendered"))
}

// ------------------------------------------------------------------ network

#[test]
fn network_connectivity_equals_the_access_model() {
    let model = model();
    for (overlay, docs) in overlays() {
        assert_none(
            "NetworkPolicies differ from the access model's flows",
            overlay,
            netpol::differences(&docs, &model, overlay == "prod"),
        );
    }
}

#[test]
fn extra_or_missing_flows_are_detected() {
    let model = model();
    let base = render::prod();

    // An allow-all egress policy in the dashboard namespace: the dashboard could then
    // reach the internet and foreign pods.
    let mut docs = base.clone();
    docs.push(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "oops", "namespace": "beacon-dashboard"},
        "spec": {"podSelector": {}, "policyTypes": ["Egress"], "egress": [{}]}}),
    );
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter()
            .any(|d| d.contains("beacon-dashboard/dashboard -> Internet")),
        "{diff:?}"
    );

    // PostgreSQL opened to the dashboard, and the dashboard allowed out to it.
    let mut docs = base.clone();
    let pg = find_mut(&mut docs, "NetworkPolicy", "beacon-data", "postgres");
    pg["spec"]["ingress"][0]["from"]
        .as_array_mut()
        .unwrap()
        .push(json!({
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "beacon-dashboard"}},
        "podSelector": {"matchLabels": {"app.kubernetes.io/name": "dashboard"}}}));
    let dash = find_mut(&mut docs, "NetworkPolicy", "beacon-dashboard", "dashboard");
    dash["spec"]["egress"]
        .as_array_mut()
        .unwrap()
        .push(json!({"to": [{"namespaceSelector": {}}]}));
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter()
            .any(|d| d.contains("beacon-dashboard/dashboard -> beacon-data/postgres TCP/5432")),
        "{diff:?}"
    );

    // A DNS rule with the port but without the kube-dns peer reaches any host on 53.
    let mut docs = base.clone();
    let dns = find_mut(&mut docs, "NetworkPolicy", "beacon-api", "allow-dns");
    dns["spec"]["egress"][0]
        .as_object_mut()
        .unwrap()
        .remove("to");
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter()
            .any(|d| d.contains("beacon-api/api -> Internet UDP/53")),
        "{diff:?}"
    );
    assert!(!pods::namespace_problems(&docs, &model).is_empty());

    // A namespaceSelector and a podSelector in separate peers (OR instead of AND): any
    // pod of any namespace could reach analytics.
    let mut docs = base.clone();
    let an = find_mut(&mut docs, "NetworkPolicy", "beacon-analytics", "analytics");
    an["spec"]["ingress"][0]["from"] = json!([
        {"namespaceSelector": {}},
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "api"}}}]);
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter()
            .any(|d| d.contains("ForeignPod -> beacon-analytics/analytics TCP/50051")),
        "{diff:?}"
    );

    // A podSelector without its namespaceSelector selects pods of the policy's own
    // namespace: the api -> analytics flow is then silently blocked.
    let mut docs = base.clone();
    let an = find_mut(&mut docs, "NetworkPolicy", "beacon-analytics", "analytics");
    an["spec"]["ingress"][0]["from"][0]
        .as_object_mut()
        .unwrap()
        .remove("namespaceSelector");
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter()
            .any(|d| d.contains("blocked: beacon-api/api -> beacon-analytics/analytics")),
        "{diff:?}"
    );

    // The api -> analytics flow removed: the model's flow is blocked.
    let mut docs = base.clone();
    let an = find_mut(&mut docs, "NetworkPolicy", "beacon-analytics", "analytics");
    an["spec"]["ingress"].as_array_mut().unwrap().remove(0);
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter().any(|d| d
            == "in the model but blocked: beacon-api/api -> beacon-analytics/analytics TCP/50051"),
        "{diff:?}"
    );

    // An admin port opened beyond the collector: /metrics and /readyz from the internet.
    let mut docs = base.clone();
    let dash = find_mut(&mut docs, "NetworkPolicy", "beacon-dashboard", "dashboard");
    dash["spec"]["ingress"][1]
        .as_object_mut()
        .unwrap()
        .remove("from");
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter().any(|d| d
            == "allowed but not in the model: Internet -> beacon-dashboard/dashboard TCP/9080"),
        "{diff:?}"
    );

    // An admin port opened to the nodes' network (the kubelet-probe workaround that
    // kind < 0.28 needed, and that opened admin ports to anything in that range).
    let mut docs = base.clone();
    docs.push(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "kubelet-probes-dashboard", "namespace": "beacon-dashboard"},
        "spec": {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "dashboard"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "172.16.0.0/12"}}],
                "ports": [{"protocol": "TCP", "port": 9080}]}]}}),
    );
    let diff = netpol::differences(&docs, &model, false);
    assert!(
        diff.iter()
            .any(|d| d
                == "allowed but not in the model: Node -> beacon-dashboard/dashboard TCP/9080"),
        "{diff:?}"
    );
}

/// A flow added to the model (as `cargo xtask access allow dashboard analytics` adds it),
/// rendered by the generator, opens exactly one connection as computed by this crate's
/// own evaluator: the generator adds nothing else.
#[test]
fn a_new_flow_opens_exactly_one_connection() {
    let old = model();
    let text = xtask::access::allow::with_flow(
        platform::access::MODEL_TOML,
        &xtask::access::allow::Options {
            from: "dashboard".into(),
            to: "analytics".into(),
            auth: None,
        },
    )
    .unwrap();
    let new = AccessModel::parse(&text).unwrap();
    // The rendered overlay with each namespace's generated policies re-rendered from
    // the new model (the baseline's default deny and DNS stay as rendered).
    let mut docs = render::prod();
    let generated: Vec<Value> = xtask::access::generated(&new)
        .into_iter()
        .filter(|f| f.path.starts_with("k8s/base/") && f.path.ends_with("/networkpolicy.yaml"))
        .flat_map(|f| render::parse(&f.contents))
        .collect();
    docs.retain(|d| {
        !(kind(d) == "NetworkPolicy"
            && generated
                .iter()
                .any(|g| name(g) == name(d) && namespace(g) == namespace(d)))
    });
    docs.extend(generated);
    let before = netpol::Network::from_docs(&render::prod()).connectivity(&new);
    let after = netpol::Network::from_docs(&docs).connectivity(&new);
    let opened: Vec<_> = after.difference(&before).collect();
    let dashboard = netpol::Ep::Pod("beacon-dashboard".into(), "dashboard".into());
    let analytics = netpol::Ep::Pod("beacon-analytics".into(), "analytics".into());
    assert_eq!(
        opened,
        vec![&(dashboard, analytics, "TCP".to_owned(), 50051)],
        "closed: {:?}",
        before.difference(&after).collect::<Vec<_>>()
    );
    assert!(before.is_subset(&after));
    assert!(netpol::differences(&docs, &new, true).is_empty());
    assert!(!netpol::differences(&docs, &old, true).is_empty());
}

// ------------------------------------------------------------------ RBAC

#[test]
fn rbac_per_persona_group_equals_the_access_model() {
    let model = model();
    for (overlay, docs) in overlays() {
        assert_none(
            "RBAC differs from the access model",
            overlay,
            rbac::problems(&docs, &model),
        );
    }
}

#[test]
fn forbidden_or_extra_permissions_are_detected() {
    let model = model();
    let base = render::prod();
    let mutate = |f: &dyn Fn(&mut Vec<Value>)| {
        let mut docs = base.clone();
        f(&mut docs);
        rbac::problems(&docs, &model)
    };
    // Analysts given exec in the pipeline namespace.
    let p = mutate(&|docs| {
        let role = find_mut(docs, "Role", "beacon-pipeline", "analysts");
        role["rules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}));
    });
    assert!(
        p.iter().any(|x| x.contains("pods/exec to beacon:analysts")),
        "{p:?}"
    );
    // Reading Secrets, even for SRE.
    let p = mutate(&|docs| {
        let role = find_mut(docs, "Role", "beacon-data", "sre");
        role["rules"]
            .as_array_mut()
            .unwrap()
            .push(json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}));
    });
    assert!(p.iter().any(|x| x.contains("Secrets")), "{p:?}");
    // Wildcards and escalation verbs.
    let p = mutate(&|docs| {
        let role = find_mut(docs, "Role", "beacon-api", "product-developers");
        role["rules"].as_array_mut().unwrap().push(json!({"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["*"], "verbs": ["bind", "escalate"]}));
    });
    assert!(
        p.iter().any(|x| x.contains("wildcard")) && p.iter().any(|x| x.contains("grants bind")),
        "{p:?}"
    );
    // cluster-admin bound to a group.
    let p = mutate(&|docs| {
        docs.push(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "sre-admin"},
            "subjects": [{"kind": "Group", "name": "beacon:sre", "apiGroup": "rbac.authorization.k8s.io"}],
            "roleRef": {"kind": "ClusterRole", "name": "cluster-admin", "apiGroup": "rbac.authorization.k8s.io"}}));
    });
    assert!(p.iter().any(|x| x.contains("cluster-admin")), "{p:?}");
    // Analysts bound in the api namespace (a model-less grant), and a grant removed.
    let p = mutate(&|docs| {
        let mut b = find_mut(docs, "RoleBinding", "beacon-api", "product-developers").clone();
        b["subjects"][0]["name"] = json!("beacon:analysts");
        b["metadata"]["name"] = json!("analysts-too");
        docs.push(b);
        let role = find_mut(docs, "Role", "beacon-pipeline", "analysts");
        role["rules"].as_array_mut().unwrap().pop();
    });
    assert!(
        p.iter().any(|x| x.contains(
            "beacon:analysts may get apps/deployments in beacon-api, the model does not grant it"
        )),
        "{p:?}"
    );
    assert!(
        p.iter().any(|x| x.contains(
            "beacon:analysts may not create batch/jobs in beacon-pipeline, the model grants it"
        )),
        "{p:?}"
    );
}

const ANALYSTS: &[&str] = &["beacon:analysts", "system:authenticated"];

#[test]
fn analysts_can_run_the_transform_job_and_nothing_else() {
    fn pod(job: &mut Value) -> &mut Value {
        &mut job["spec"]["template"]["spec"]
    }
    for (overlay, docs) in overlays() {
        let policy = admission::analyst_policy(&docs);
        let cron = admission::transform_cronjob(&docs);
        let job = admission::job_from_cronjob(&docs);
        assert_eq!(
            policy.denials(&job, &cron, ANALYSTS),
            Vec::<String>::new(),
            "{overlay}: the transform Job must be admitted"
        );

        let mut other_sa = job.clone();
        pod(&mut other_sa)["serviceAccountName"] = json!("pipeline");
        let mut loader_secret = job.clone();
        pod(&mut loader_secret)["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "x", "secret": {"secretName": "loader-db"}}));
        let mut projected = job.clone();
        pod(&mut projected)["volumes"].as_array_mut().unwrap().push(
            json!({"name": "x", "projected": {"sources": [{"secret": {"name": "loader-db"}}]}}),
        );
        let mut env_secret = job.clone();
        pod(&mut env_secret)["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "P", "valueFrom": {"secretKeyRef": {"name": "loader-db", "key": "password"}}}));
        let mut init = job.clone();
        pod(&mut init)["initContainers"] = json!([{"name": "i", "image": "busybox"}]);
        // The issue's attack: the transform's own Secret, read by another program that
        // prints it to the log (pods/log is the analysts' to read).
        let mut command = job.clone();
        pod(&mut command)["containers"][0]["command"] =
            json!(["/bin/sh", "-c", "cat /etc/beacon/db/password"]);
        let mut args = job.clone();
        pod(&mut args)["containers"][0]["args"] = json!(["transform", "--help"]);
        let mut token = job.clone();
        pod(&mut token)["automountServiceAccountToken"] = json!(true);
        // The issue's other attack: a pod labelled as the pipeline becomes an endpoint
        // of the ingest Service and receives tenants' events and bearer tokens.
        let mut pipeline_label = job.clone();
        pipeline_label["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] =
            json!("pipeline");
        let mut extra_label = job.clone();
        extra_label["spec"]["template"]["metadata"]["labels"]["role"] = json!("ingest");
        let mut parallel = job.clone();
        parallel["spec"]["parallelism"] = json!(20);
        for (what, forbidden) in [
            ("another service account", &other_sa),
            ("the loader's Secret", &loader_secret),
            ("a projected Secret", &projected),
            ("a Secret in env", &env_secret),
            ("an extra container", &init),
            ("another command", &command),
            ("other args", &args),
            ("a mounted API token", &token),
            ("the pipeline's label", &pipeline_label),
            ("an extra pod label", &extra_label),
            ("twenty pods at once", &parallel),
        ] {
            assert!(
                !policy.denials(forbidden, &cron, ANALYSTS).is_empty(),
                "{overlay}: an analyst's Job with {what} must be denied"
            );
        }
        // The policy constrains the narrowed groups only; the delivery identity (and the
        // CronJob controller) create Jobs of their own.
        assert!(
            policy
                .denials(
                    &other_sa,
                    &cron,
                    &["system:serviceaccounts", "system:authenticated"]
                )
                .is_empty()
        );
        // The parameter decides: a CronJob with another image makes the transform's
        // own Job a stranger (so the Job is compared with it, not with constants).
        let mut other_cron = cron.clone();
        other_cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("localhost:5001/beacon/pipeline:other");
        assert!(!policy.denials(&job, &other_cron, ANALYSTS).is_empty());
        // Without its parameter (the CronJob deleted) nothing is admitted.
        assert!(!policy.denials(&job, &Value::Null, ANALYSTS).is_empty());
    }
}

/// The policy only protects if it is bound in Deny mode to the pipeline's namespace, is
/// asked about every Job created or updated there, takes transform-once as its
/// parameter, and fails closed.
#[test]
fn the_analysts_policy_is_bound_to_deny_and_fails_closed() {
    for (overlay, docs) in overlays() {
        let find = |k: &str| {
            docs.iter()
                .find(|d| kind(d) == k && name(d) == "beacon-analyst-jobs")
                .unwrap_or_else(|| panic!("{overlay}: {k} beacon-analyst-jobs is rendered"))
        };
        let (policy, binding) = (
            find("ValidatingAdmissionPolicy"),
            find("ValidatingAdmissionPolicyBinding"),
        );
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{overlay}");
        assert!(covers(policy, "batch", "jobs"), "{overlay}: {policy:?}");
        assert_eq!(binding["spec"]["policyName"], "beacon-analyst-jobs");
        assert_eq!(
            binding["spec"]["validationActions"],
            json!(["Deny"]),
            "{overlay}"
        );
        let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
        assert_eq!(
            selector,
            &json!({"matchLabels": {"kubernetes.io/metadata.name": "beacon-pipeline"}}),
            "{overlay}: the binding must select the pipeline's namespace (and only it)"
        );
        assert_eq!(
            policy["spec"]["paramKind"],
            json!({"apiVersion": "batch/v1", "kind": "CronJob"})
        );
        assert_eq!(
            binding["spec"]["paramRef"],
            json!({"name": "transform-once", "namespace": "beacon-pipeline",
                "parameterNotFoundAction": "Deny"}),
            "{overlay}"
        );
    }
}

/// Whether `policy` is asked about CREATE and UPDATE of `group/resource` (v1).
fn covers(policy: &Value, group: &str, resource: &str) -> bool {
    let rules = render::arr(&policy["spec"]["matchConstraints"]["resourceRules"]);
    ["CREATE", "UPDATE"].iter().all(|op| {
        rules.iter().any(|r| {
            let has = |field: &str, v: &str| {
                r[field]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == v || x == "*"))
            };
            has("apiGroups", group)
                && has("apiVersions", "v1")
                && has("resources", resource)
                && has("operations", op)
        })
    })
}

/// A Job with a second regular container, or the transform's container with another
/// image, is denied to analysts.
#[test]
fn analysts_cannot_add_a_container_or_change_the_image() {
    for (overlay, docs) in overlays() {
        let policy = admission::analyst_policy(&docs);
        let cron = admission::transform_cronjob(&docs);
        let job = admission::job_from_cronjob(&docs);
        let mut second = job.clone();
        let mut sidecar = second["spec"]["template"]["spec"]["containers"][0].clone();
        sidecar["name"] = json!("reader");
        sidecar["image"] = json!("docker.io/library/busybox:latest");
        second["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(sidecar);
        let mut foreign = job.clone();
        foreign["spec"]["template"]["spec"]["containers"][0]["image"] =
            json!("docker.io/library/busybox:latest");
        for (what, forbidden) in [
            ("a second container", &second),
            ("a foreign image", &foreign),
        ] {
            assert!(
                !policy.denials(forbidden, &cron, ANALYSTS).is_empty(),
                "{overlay}: an analyst's Job with {what} must be denied"
            );
        }
    }
}

// ------------------------------------------------------------------ workloads where Secrets live

/// The workloads of the protected namespaces that mount a Secret (what the attack keeps).
fn secret_workloads(docs: &[Value], model: &AccessModel) -> Vec<Value> {
    docs.iter()
        .filter(|d| ["Deployment", "StatefulSet"].contains(&kind(d)))
        .filter(|d| {
            model
                .kubernetes
                .protected_namespaces
                .iter()
                .any(|n| n == namespace(d))
        })
        .filter(|d| {
            render::arr(&d["spec"]["template"]["spec"]["volumes"])
                .iter()
                .any(|v| v.get("secret").is_some() || v.get("projected").is_some())
        })
        .cloned()
        .collect()
}

/// The issue's attack: a developer or SRE swaps a Deployment's image (or command) and
/// keeps its Secret volumes, then reads the signing key from the log. Denied for every
/// person on every Secret-mounting workload; `kubectl rollout restart` and a change of
/// replicas are admitted; the delivery identity is not constrained.
#[test]
fn people_cannot_change_what_runs_where_secrets_live() {
    let model = model();
    let people = [
        "beacon:product-developers",
        "beacon:sre",
        "beacon:data-engineers",
    ];
    for (overlay, docs) in overlays() {
        let policy = admission::workload_policy(&docs);
        let workloads = secret_workloads(&docs, &model);
        assert!(
            workloads
                .iter()
                .any(|w| namespace(w) == "beacon-api" && name(w) == "api"),
            "{overlay}: the api Deployment mounts the signing key"
        );
        for old in &workloads {
            let what = format!("{overlay}: {} {}/{}", kind(old), namespace(old), name(old));
            let update = |groups: &[&str], new: &Value| {
                policy.check(&admission::Request {
                    groups,
                    object: new,
                    old_object: Some(old),
                    params: None,
                })
            };
            let mut image = old.clone();
            image["spec"]["template"]["spec"]["containers"][0]["image"] =
                json!("docker.io/library/busybox:1.37");
            let mut command = old.clone();
            command["spec"]["template"]["spec"]["containers"][0]["command"] =
                json!(["/bin/sh", "-c", "cat /etc/beacon/*/*"]);
            let mut volume = old.clone();
            volume["spec"]["template"]["spec"]["volumes"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "x", "secret": {"secretName": "postgres-admin"}}));
            let mut label = old.clone();
            label["spec"]["template"]["metadata"]["labels"]["extra"] = json!("1");
            let mut annotation = old.clone();
            annotation["spec"]["template"]["metadata"]["annotations"] =
                json!({"container.apparmor.security.beta.kubernetes.io/x": "unconfined"});
            let mut restart = old.clone();
            restart["spec"]["template"]["metadata"]["annotations"] =
                json!({"kubectl.kubernetes.io/restartedAt": "2026-11-29T19:00:00Z"});
            let mut scale = old.clone();
            scale["spec"]["replicas"] = json!(3);
            for group in people {
                for (change, new) in [
                    ("another image", &image),
                    ("another command", &command),
                    ("another Secret volume", &volume),
                    ("another pod label", &label),
                    ("another pod annotation", &annotation),
                ] {
                    assert!(
                        !update(&[group, "system:authenticated"], new).is_empty(),
                        "{what}: {group} may not set {change}"
                    );
                }
                for (change, new) in [("a restart", &restart), ("a replica count", &scale)] {
                    assert_eq!(
                        update(&[group, "system:authenticated"], new),
                        Vec::<String>::new(),
                        "{what}: {group} may make {change}"
                    );
                }
                // Creating a workload there is the delivery identity's alone.
                assert!(
                    !policy
                        .check(&admission::Request {
                            groups: &[group],
                            object: &image,
                            old_object: None,
                            params: None,
                        })
                        .is_empty(),
                    "{what}: {group} may not create a workload"
                );
            }
            assert!(
                update(
                    &[
                        "system:serviceaccounts",
                        "system:serviceaccounts:beacon-delivery"
                    ],
                    &image
                )
                .is_empty(),
                "{what}: the delivery identity delivers new images"
            );
        }
    }
}

/// The policy is bound, in Deny mode and failing closed, to exactly the model's
/// protected namespaces, and asked about Deployments and StatefulSets.
#[test]
fn the_workload_policy_is_bound_to_every_protected_namespace() {
    let model = model();
    for (overlay, docs) in overlays() {
        let find = |k: &str| {
            docs.iter()
                .find(|d| kind(d) == k && name(d) == "beacon-workload-changes")
                .unwrap_or_else(|| panic!("{overlay}: {k} beacon-workload-changes is rendered"))
        };
        let (policy, binding) = (
            find("ValidatingAdmissionPolicy"),
            find("ValidatingAdmissionPolicyBinding"),
        );
        assert_eq!(policy["spec"]["failurePolicy"], "Fail", "{overlay}");
        assert!(covers(policy, "apps", "deployments"), "{overlay}");
        assert!(covers(policy, "apps", "statefulsets"), "{overlay}");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        let selector = &binding["spec"]["matchResources"]["namespaceSelector"];
        assert_eq!(
            selector,
            &json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name",
                "operator": "In", "values": model.kubernetes.protected_namespaces}]}),
            "{overlay}"
        );
    }
}

/// Every person's permission to create, update or patch something that runs a pod, in a
/// namespace that holds signing keys or database credentials, is narrowed by a policy
/// that matches the person's group there and is evaluated above; nobody but the
/// delivery identity has any other. (RBAC from the rendered Roles and bindings.)
#[test]
fn only_delivery_writes_workloads_where_secrets_live() {
    let model = model();
    for (overlay, docs) in overlays() {
        let problems = writers_problems(&docs, &model);
        assert_none("unnarrowed workload writers", overlay, problems);
    }
    // Detected: a product developer given `create` on Deployments in beacon-api again.
    let mut docs = render::prod();
    let role = find_mut(&mut docs, "Role", "beacon-api", "product-developers");
    role["rules"]
        .as_array_mut()
        .unwrap()
        .push(json!({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}));
    let p = writers_problems(&docs, &model);
    assert!(
        p.iter()
            .any(|x| x
                .contains("beacon:product-developers may create apps/deployments in beacon-api")),
        "{p:?}"
    );
    // Detected: the workload policy no longer matching SRE.
    let mut docs = render::prod();
    let vap = docs
        .iter_mut()
        .find(|d| kind(d) == "ValidatingAdmissionPolicy" && name(d) == "beacon-workload-changes")
        .unwrap();
    vap["spec"]["matchConditions"][0]["expression"] =
        json!("request.userInfo.groups.exists(g, g in ['beacon:product-developers'])");
    let p = writers_problems(&docs, &model);
    assert!(
        p.iter()
            .any(|x| x.contains("beacon:sre may patch apps/deployments in beacon-data")),
        "{p:?}"
    );
    // Detected: the binding leaving out a protected namespace.
    let mut docs = render::prod();
    let binding = docs
        .iter_mut()
        .find(|d| {
            kind(d) == "ValidatingAdmissionPolicyBinding" && name(d) == "beacon-workload-changes"
        })
        .unwrap();
    binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"] =
        json!(["beacon-api"]);
    let p = writers_problems(&docs, &model);
    assert!(
        p.iter()
            .any(|x| x
                .contains("beacon:data-engineers may update apps/deployments in beacon-pipeline")),
        "{p:?}"
    );
}

/// Whether the binding of policy `policy_name` selects namespace `ns` (by its
/// `kubernetes.io/metadata.name` label, the only selector the bindings use).
fn bound_in(docs: &[Value], policy_name: &str, ns: &str) -> bool {
    docs.iter()
        .filter(|d| kind(d) == "ValidatingAdmissionPolicyBinding")
        .filter(|d| d["spec"]["policyName"] == policy_name)
        .filter(|d| d["spec"]["validationActions"] == json!(["Deny"]))
        .any(|d| {
            let sel = &d["spec"]["matchResources"]["namespaceSelector"];
            let key = "kubernetes.io/metadata.name";
            let labels_ok = sel["matchLabels"]
                .as_object()
                .is_none_or(|m| m.iter().all(|(k, v)| k == key && v == ns));
            let exprs_ok = render::arr(&sel["matchExpressions"]).iter().all(|e| {
                e["key"] == key
                    && e["operator"] == "In"
                    && render::arr(&e["values"]).iter().any(|v| v == ns)
            });
            labels_ok && exprs_ok
        })
}

fn writers_problems(docs: &[Value], model: &AccessModel) -> Vec<String> {
    const RUNS_PODS: [(&str, &str); 9] = [
        ("", "pods"),
        ("", "pods/ephemeralcontainers"),
        ("", "replicationcontrollers"),
        ("", "podtemplates"),
        ("apps", "deployments"),
        ("apps", "statefulsets"),
        ("apps", "daemonsets"),
        ("apps", "replicasets"),
        ("batch", "cronjobs"),
    ];
    let delivery = model.personas["delivery"].subject().unwrap();
    let matches = |policy: &admission::Policy, group: &str| {
        policy.check(&admission::Request {
            groups: &[group],
            object: &json!({"spec": {}}),
            old_object: None,
            params: None,
        })
    };
    let (jobs, workloads) = (
        admission::analyst_policy(docs),
        admission::workload_policy(docs),
    );
    let mut out = Vec::new();
    for (subject, perms) in rbac::permissions(docs) {
        if subject == delivery {
            continue;
        }
        for (ns, group, resource, verb) in perms {
            if !model.kubernetes.protected_namespaces.contains(&ns)
                || !["create", "update", "patch"].contains(&verb.as_str())
            {
                continue;
            }
            let narrowed_by = match (group.as_str(), resource.as_str(), verb.as_str()) {
                ("batch", "jobs", "create") => Some((&jobs, "beacon-analyst-jobs")),
                ("apps", "deployments" | "statefulsets", "update" | "patch") => {
                    Some((&workloads, "beacon-workload-changes"))
                }
                (g, r, _) if RUNS_PODS.contains(&(g, r)) || (g, r) == ("batch", "jobs") => None,
                _ => continue,
            };
            // A matching policy evaluates (and here denies the empty object); one
            // that does not match the subject admits it silently.
            let narrowed = narrowed_by.is_some_and(|(p, name)| {
                !matches(p, &subject).is_empty() && bound_in(docs, name, &ns)
            });
            if !narrowed {
                out.push(format!(
                    "{subject} may {verb} {group}/{resource} in {ns}, and no admission policy narrows it"
                ));
            }
        }
    }
    out
}

// ------------------------------------------------------------------ pods and namespaces

// ----------------------------------------------------------------- database

#[test]
fn postgres_takes_scram_over_tls_only_and_every_client_verifies_it() {
    for (overlay, docs) in overlays() {
        assert_none(
            "PostgreSQL connections are not scram over verified TLS",
            overlay,
            database::problems(&docs),
        );
    }
}

#[test]
fn weaker_database_connections_are_detected() {
    // dev: the StatefulSet server (prod's operator-run server is checked by cnpg.rs).
    let base = render::dev();
    let check = |what: &str, f: &dyn Fn(&mut [Value])| {
        let mut docs = base.clone();
        f(&mut docs);
        assert!(
            !database::problems(&docs).is_empty(),
            "not detected: {what}"
        );
    };
    check("a client with sslmode=prefer", &|docs| {
        let c = &mut find_mut(docs, "Deployment", "beacon-api", "api")["spec"]["template"]["spec"]
            ["containers"][0];
        for e in c["env"].as_array_mut().unwrap() {
            if e["name"] == "DATABASE_SSLMODE" {
                e["value"] = json!("prefer");
            }
        }
    });
    check("a CA file on no volume", &|docs| {
        let c = &mut find_mut(docs, "Job", "beacon-data", "db-migrate")["spec"]["template"]["spec"]
            ["containers"][0];
        for e in c["env"].as_array_mut().unwrap() {
            if e["name"] == "DATABASE_SSLROOTCERT" {
                e["value"] = json!("/etc/ssl/beacon-ca.crt");
            }
        }
    });
    check("the server mounting the admin password", &|docs| {
        let c = &mut find_mut(docs, "StatefulSet", "beacon-data", "postgres")["spec"]["template"]["spec"]
            ["containers"][0];
        c["volumeMounts"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "admin", "mountPath": "/etc/beacon/admin"}));
    });
    check("the server without TLS", &|docs| {
        let c = &mut find_mut(docs, "StatefulSet", "beacon-data", "postgres")["spec"]["template"]["spec"]
            ["containers"][0];
        c["args"] = json!(["postgres", "-c", "hba_file=/etc/beacon/hba/pg_hba.conf"]);
    });
    for line in [
        "local all all trust",
        "host all all 0.0.0.0/0 scram-sha-256",
        "hostssl all all 0.0.0.0/0 md5",
    ] {
        check(line, &|docs| {
            let hba = &mut find_mut(docs, "ConfigMap", "beacon-data", "postgres-hba")["data"]["pg_hba.conf"];
            *hba = json!(format!("{}{line}\n", hba.as_str().unwrap()));
        });
    }
}

#[test]
fn every_pod_template_meets_restricted_explicitly() {
    for (overlay, docs) in overlays() {
        assert_none(
            "pod templates break the restricted profile",
            overlay,
            pods::pod_problems(&docs),
        );
    }
}

#[test]
fn restricted_violations_are_detected() {
    let base = render::prod();
    let check = |f: &dyn Fn(&mut Value)| {
        let mut docs = base.clone();
        f(find_mut(&mut docs, "Deployment", "beacon-api", "api"));
        pods::pod_problems(&docs)
    };
    // checkov accepts this one: runAsUser without runAsNonRoot.
    let p = check(&|d| {
        d["spec"]["template"]["spec"]["containers"][0]["securityContext"]
            .as_object_mut()
            .unwrap()
            .remove("runAsNonRoot");
    });
    assert!(p.iter().any(|x| x.contains("runAsNonRoot")), "{p:?}");
    let p = check(&|d| d["spec"]["template"]["spec"]["hostNetwork"] = json!(true));
    assert!(p.iter().any(|x| x.contains("hostNetwork")), "{p:?}");
    let p = check(&|d| d["spec"]["template"]["spec"]["automountServiceAccountToken"] = json!(true));
    assert!(
        p.iter().any(|x| x.contains("automountServiceAccountToken")),
        "{p:?}"
    );
    let p = check(&|d| {
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "api-db", "key": "password"}}}));
    });
    assert!(p.iter().any(|x| x.contains("as files")), "{p:?}");
    let p = check(&|d| {
        d["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] =
            json!({"add": ["NET_ADMIN"]})
    });
    assert!(
        p.iter().any(|x| x.contains("drop ALL")) && p.iter().any(|x| x.contains("added")),
        "{p:?}"
    );
    let p = check(&|d| {
        d["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "h", "hostPath": {"path": "/"}}))
    });
    assert!(p.iter().any(|x| x.contains("hostPath")), "{p:?}");
}

#[test]
fn every_namespace_has_psa_quota_limits_and_default_deny() {
    let model = model();
    for (overlay, docs) in overlays() {
        assert_none(
            "namespace baseline",
            overlay,
            pods::namespace_problems(&docs, &model),
        );
    }
    let mut docs = render::prod();
    docs.retain(|d| {
        !(kind(d) == "NetworkPolicy" && name(d) == "default-deny" && namespace(d) == "beacon-api")
    });
    docs.retain(|d| !(kind(d) == "ResourceQuota" && namespace(d) == "beacon-data"));
    let p = pods::namespace_problems(&docs, &model);
    assert!(
        p.iter()
            .any(|x| x.contains("beacon-api: needs a default-deny")),
        "{p:?}"
    );
    assert!(
        p.iter()
            .any(|x| x.contains("beacon-data: needs a ResourceQuota")),
        "{p:?}"
    );
}

#[test]
fn quotas_leave_room_for_every_workload_at_its_maximum() {
    for (overlay, docs) in overlays() {
        assert_none("quota too small", overlay, pods::quota_problems(&docs));
    }
    let mut docs = render::prod();
    let hpa = find_mut(
        &mut docs,
        "HorizontalPodAutoscaler",
        "beacon-pipeline",
        "pipeline",
    );
    hpa["spec"]["maxReplicas"] = json!(20);
    let p = pods::quota_problems(&docs);
    assert!(
        p.iter()
            .any(|x| x.starts_with("beacon-pipeline: workloads at their maximum need")),
        "{p:?}"
    );
    // Requests count too: the api at 1 core per replica does not fit its quota.
    let mut docs = render::prod();
    let api = find_mut(&mut docs, "Deployment", "beacon-api", "api");
    api["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = json!("1");
    let p = pods::quota_problems(&docs);
    assert!(
        p.iter()
            .any(|x| x.starts_with("beacon-api: workloads at their maximum request")),
        "{p:?}"
    );
}

#[test]
fn database_secret_is_in_the_loader_container_only() {
    for (overlay, docs) in overlays() {
        assert_none("pipeline sidecar", overlay, pods::sidecar_problems(&docs));
    }
    let mut docs = render::prod();
    let d = find_mut(&mut docs, "Deployment", "beacon-pipeline", "pipeline");
    let ingest = d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "ingest")
        .unwrap();
    ingest["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "db", "mountPath": "/etc/beacon/db"}));
    let p = pods::sidecar_problems(&docs);
    assert!(
        p.iter()
            .any(|x| x.contains("container ingest must not see the database Secret")),
        "{p:?}"
    );
}

// ------------------------------------------------------------------ prod specifics

#[test]
fn prod_pins_images_by_digest_and_issues_the_models_identities() {
    let model = model();
    let docs = render::prod();
    for t in render::templates(&docs) {
        for c in render::containers(t.spec) {
            let image = c["image"].as_str().unwrap_or("");
            assert!(
                image.contains("@sha256:"),
                "{}: image {image} is not pinned by digest",
                t.owner
            );
        }
    }
    for component in ["api", "analytics"] {
        let c = &model.components[component];
        let cert = docs
            .iter()
            .find(|d| kind(d) == "Certificate" && namespace(d) == c.namespace)
            .unwrap_or_else(|| panic!("no cert-manager Certificate for {component}"));
        assert_eq!(
            cert["spec"]["uris"],
            json!([model.spiffe_id(component).unwrap()]),
            "{component}"
        );
        assert_eq!(
            cert["spec"]["secretName"],
            json!(format!("{component}-tls"))
        );
    }
    for (ns, target) in [
        ("beacon-dashboard", "dashboard"),
        ("beacon-api", "api"),
        ("beacon-pipeline", "pipeline"),
        ("beacon-analytics", "analytics"),
    ] {
        assert!(
            docs.iter().any(|d| kind(d) == "HorizontalPodAutoscaler"
                && namespace(d) == ns
                && d["spec"]["scaleTargetRef"]["name"] == target),
            "no HPA for {ns}/{target}"
        );
    }
    for (ns, svc) in [
        ("beacon-dashboard", "dashboard"),
        ("beacon-api", "api"),
        ("beacon-pipeline", "ingest"),
    ] {
        assert!(
            docs.iter().any(|d| kind(d) == "HTTPRoute"
                && namespace(d) == ns
                && d["spec"]["rules"][0]["backendRefs"][0]["name"] == svc),
            "no HTTPRoute for {ns}/{svc}"
        );
    }
    // Nothing in prod is generated from the developer's secrets folder.
    assert!(
        !docs.iter().any(|d| kind(d) == "Secret"),
        "prod must not carry Secrets: they come from External Secrets and cert-manager"
    );
}

/// What is wrong with a third-party image's pin, if anything: it must be
/// `<name>:<tag>@sha256:<64 lowercase hex>`, and the digest not the placeholder zeros
/// (only Beacon's own images may carry those, until the release writes theirs).
fn third_party_pin_problem(image: &str) -> Option<String> {
    let Some((reference, digest)) = image.split_once('@') else {
        return Some(format!("{image} is not pinned by digest"));
    };
    let last = reference.rsplit('/').next().unwrap_or(reference);
    if !last.contains(':') {
        return Some(format!("{image} names no tag beside its digest"));
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.chars().all(|ch| matches!(ch, '0'..='9' | 'a'..='f')) {
        return Some(format!("{image} has no sha256 digest"));
    }
    if hex.chars().all(|ch| ch == '0') {
        return Some(format!("{image} has the placeholder digest"));
    }
    None
}

/// Every third-party image, in every overlay, is pinned by tag and a real digest (the
/// base pins them; an overlay's `images:` entry only qualifies the name).
#[test]
fn every_overlay_pins_third_party_images_by_tag_and_digest() {
    let model = model();
    let own = format!("/{}/", model.product);
    for (overlay, docs) in overlays() {
        let mut third_party = 0;
        for t in render::templates(&docs) {
            for c in render::containers(t.spec) {
                let image = c["image"].as_str().unwrap_or("");
                if image.contains(&own) {
                    continue;
                }
                third_party += 1;
                if let Some(problem) = third_party_pin_problem(image) {
                    panic!("{overlay}: {}: {problem}", t.owner);
                }
            }
        }
        assert!(third_party > 0, "{overlay}: no third-party image found");
    }
    let zero = format!("sha256:{}", "0".repeat(64));
    let real = format!("sha256:{}", "ab".repeat(32));
    assert_eq!(
        third_party_pin_problem(&format!("docker.io/prom/prometheus:v3@{real}")),
        None
    );
    for (image, what) in [
        ("docker.io/prom/prometheus:v3".to_owned(), "not pinned"),
        (format!("docker.io/prom/prometheus@{real}"), "no tag"),
        (format!("localhost:5001/prometheus@{real}"), "no tag"),
        (
            "docker.io/prom/prometheus:v3@sha256:AB".to_owned(),
            "no sha256",
        ),
        (
            format!("docker.io/prom/prometheus:v3@{zero}"),
            "placeholder",
        ),
    ] {
        let p = third_party_pin_problem(&image).unwrap_or_default();
        assert!(p.contains(what), "{image}: {p:?}");
    }
}

/// Every image names its registry, so none resolves to Docker Hub by accident (an
/// unqualified `beacon/api:dev` would be `docker.io/beacon/api:dev`); dev's Beacon
/// images come from the local registry Tilt pushes to, one per [images] entry.
#[test]
fn every_image_names_its_registry_and_dev_uses_the_local_one() {
    fn registry(image: &str) -> Option<&str> {
        let (first, _) = image.split_once('/')?;
        (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
    }
    let model = model();
    for (overlay, docs) in overlays() {
        let mut images = Vec::new();
        for t in render::templates(&docs) {
            for c in render::containers(t.spec) {
                images.push(c["image"].as_str().unwrap_or("").to_owned());
            }
        }
        for image in &images {
            assert!(
                registry(image).is_some(),
                "{overlay}: image {image} does not name its registry"
            );
        }
        if overlay == "dev" {
            for name in model.images.keys() {
                let want = format!("localhost:5001/{}/{name}:dev", model.product);
                assert!(images.contains(&want), "dev: no {want} in {images:?}");
            }
            assert!(
                images
                    .iter()
                    .filter(|i| i.contains("/beacon/"))
                    .all(|i| i.starts_with("localhost:5001/")),
                "{images:?}"
            );
        }
    }
    assert_eq!(registry("beacon/api:dev"), None);
    assert_eq!(registry("postgres:17"), None);
}

// ------------------------------------------------------- prod data tier (CloudNativePG)

#[test]
fn prod_postgres_is_the_documented_cloudnativepg_cluster() {
    let docs = render::prod();
    assert_none("PostgreSQL", "prod", cnpg::cluster_problems(&docs));
    assert!(
        cnpg::cluster(&render::dev()).is_none(),
        "dev keeps the StatefulSet"
    );

    // Each promise broken on a copy must be reported.
    let broken = |what: &str, f: &dyn Fn(&mut Vec<Value>)| {
        let mut docs = docs.clone();
        f(&mut docs);
        let p = cnpg::cluster_problems(&docs);
        assert!(p.iter().any(|x| x.contains(what)), "{what}: {p:?}");
    };
    fn cluster(docs: &mut [Value]) -> &mut Value {
        find_mut(docs, "Cluster", cnpg::NS, "postgres")
    }
    broken("real sha256 digest", &|d| {
        cluster(d)["spec"]["imageName"] =
            json!("ghcr.io/cloudnative-pg/postgresql:17.11-202608170816-system-trixie")
    });
    broken("not 3 instances", &|d| {
        cluster(d)["spec"]["instances"] = json!(1)
    });
    broken("distinct nodes", &|d| {
        cluster(d)["spec"]["affinity"]["podAntiAffinityType"] = json!("preferred")
    });
    broken("plain-text connections", &|d| {
        cluster(d)["spec"]["postgresql"]["pg_hba"]
            .as_array_mut()
            .unwrap()
            .remove(0);
    });
    broken("trust, md5", &|d| {
        cluster(d)["spec"]["postgresql"]["pg_hba"]
            .as_array_mut()
            .unwrap()
            .push(json!("host all all 10.0.0.0/8 md5"));
    });
    broken("password_encryption", &|d| {
        cluster(d)["spec"]["postgresql"]["parameters"]["password_encryption"] = json!("md5")
    });
    broken("beacon-internal-ca", &|d| {
        find_mut(d, "Certificate", cnpg::NS, "postgres-server")["spec"]["issuerRef"]["name"] =
            json!("selfsigned")
    });
    broken("lacks postgres-ro", &|d| {
        find_mut(d, "Certificate", cnpg::NS, "postgres-server")["spec"]["dnsNames"] =
            json!(["postgres-rw.beacon-data.svc"])
    });
    broken("WAL archiving", &|d| {
        cluster(d)["spec"]["plugins"] = json!([])
    });
    broken("ScheduledBackup", &|d| {
        find_mut(d, "ScheduledBackup", cnpg::NS, "postgres-daily")["spec"]["suspend"] = json!(true)
    });
    broken("PodDisruptionBudgets", &|d| {
        cluster(d)["spec"]["enablePDB"] = json!(false)
    });
    broken("default queries", &|d| {
        cluster(d)["spec"]["monitoring"]["disableDefaultQueries"] = json!(true)
    });
    broken("scrape", &|d| {
        let prometheus = find_mut(d, "StatefulSet", "beacon-observability", "prometheus");
        for v in prometheus["spec"]["template"]["spec"]["volumes"]
            .as_array_mut()
            .unwrap()
        {
            if let Some(sources) = v["projected"]["sources"].as_array_mut() {
                sources.retain(|s| {
                    !s["configMap"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("prometheus-scrape-overlay"))
                });
            }
        }
    });
    broken("StatefulSet postgres", &|d| {
        let sts = render::dev()
            .into_iter()
            .find(|x| kind(x) == "StatefulSet" && name(x) == "postgres")
            .unwrap();
        d.push(sts);
    });
}

#[test]
fn prod_writers_use_the_primary_and_analytics_the_replicas() {
    let docs = render::prod();
    assert_none("database endpoints", "prod", cnpg::endpoint_problems(&docs));
    let mut docs = docs.clone();
    let analytics = find_mut(&mut docs, "Deployment", "beacon-analytics", "analytics");
    for e in analytics["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
    {
        if e["name"] == "DATABASE_HOST" {
            e["value"] = json!("postgres-rw.beacon-data.svc");
        }
    }
    let p = cnpg::endpoint_problems(&docs);
    assert!(
        p.iter()
            .any(|x| x.contains("(analytics) connects to postgres-rw")),
        "{p:?}"
    );
}

#[test]
fn prod_quota_holds_the_cluster() {
    let docs = render::prod();
    assert_none("beacon-data quota", "prod", cnpg::quota_problems(&docs));
    let mut docs = docs.clone();
    find_mut(&mut docs, "Cluster", cnpg::NS, "postgres")["spec"]["instances"] = json!(5);
    let p = cnpg::quota_problems(&docs);
    assert!(p.iter().any(|x| x.starts_with("limits.memory")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("volumes needed")), "{p:?}");
}

/// The operator's flows, one by one, and nothing more: replication between instances,
/// the operator to the instances, backups out, the webhook in; never PostgreSQL from
/// anywhere else.
#[test]
fn prod_operator_flows_are_open_and_nothing_else() {
    use netpol::Ep;
    let docs = render::prod();
    let net = netpol::Network::from_docs(&docs);
    let pg = Ep::Pod("beacon-data".into(), "postgres".into());
    let operator = Ep::Platform("cnpg-system".into(), "cloudnative-pg".into());
    let dashboard = Ep::Pod("beacon-dashboard".into(), "dashboard".into());
    for port in [5432, 8000] {
        assert!(
            net.allowed(&pg, &pg, "TCP", port),
            "instance -> instance {port}"
        );
        assert!(
            net.allowed(&operator, &pg, "TCP", port),
            "operator -> {port}"
        );
    }
    assert!(net.allowed(&pg, &Ep::Internet, "TCP", 443), "backups out");
    assert!(net.allowed(&Ep::Node, &operator, "TCP", 9443), "webhook");
    assert!(
        !net.allowed(&Ep::Internet, &operator, "TCP", 8080),
        "operator metrics"
    );
    for (src, port) in [
        (&Ep::Internet, 5432),
        (&Ep::ForeignPod, 5432),
        (&dashboard, 5432),
        (&operator, 9187),
        (&Ep::ForeignPod, 8000),
    ] {
        assert!(
            !net.allowed(src, &pg, "TCP", port),
            "{src} -> postgres {port}"
        );
    }
    assert!(
        !net.allowed(&pg, &Ep::Internet, "TCP", 5432),
        "postgres out on 5432"
    );

    // Without the overlay's policy, replication and the operator are blocked.
    let mut docs = docs.clone();
    docs.retain(|d| !(kind(d) == "NetworkPolicy" && name(d) == "postgres-prod"));
    let diff = netpol::differences(&docs, &model(), true);
    assert!(
        diff.iter().any(|d| d
            == "in the model but blocked: cnpg-system/cloudnative-pg -> beacon-data/postgres TCP/8000"),
        "{diff:?}"
    );
}

/// network-config-analyzer sees the operator's pods through k8s/nca/prod-stand-ins.yaml:
/// their labels must be what the Cluster and the model give the real ones.
#[test]
fn nca_stand_ins_match_the_cluster_and_the_model() {
    let docs = render::prod();
    let c = cnpg::cluster(&docs).expect("a Cluster");
    let text = std::fs::read_to_string(render::root().join("k8s/nca/prod-stand-ins.yaml")).unwrap();
    let stand_ins = render::parse(&text);
    let pod = |ns: &str| {
        stand_ins
            .iter()
            .find(|d| kind(d) == "Pod" && namespace(d) == ns)
            .unwrap_or_else(|| panic!("no stand-in pod in {ns}"))
    };
    let mut labels = c["spec"]["inheritedMetadata"]["labels"].clone();
    labels["cnpg.io/cluster"] = json!(name(c));
    labels["cnpg.io/podRole"] = json!("instance");
    assert_eq!(pod(cnpg::NS)["metadata"]["labels"], labels);
    let prod = xtask::access::overlay::overlay(&model(), "prod").unwrap();
    let operator = &prod.peers["cnpg-operator"];
    assert_eq!(
        pod(operator.namespace.as_deref().unwrap())["metadata"]["labels"]["app.kubernetes.io/name"],
        json!(operator.pod.as_deref().unwrap())
    );
}
