//! Pod Security Standard `restricted`, field by field and written explicitly, plus
//! Beacon's own rules: read-only root with an emptyDir /tmp, resources, probes on the
//! admin port, no token, Secrets only as files, the database Secret in the loader only.

use std::collections::BTreeSet;

use platform::access::AccessModel;
use serde_json::Value;

use crate::render::{arr, containers, kind, name, namespace, templates};

const ALLOWED_VOLUMES: [&str; 8] = [
    "configMap",
    "emptyDir",
    "projected",
    "secret",
    "downwardAPI",
    "persistentVolumeClaim",
    "ephemeral",
    "csi",
];

pub fn pod_problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let sas: BTreeSet<(String, String)> = docs
        .iter()
        .filter(|d| kind(d) == "ServiceAccount")
        .filter(|d| d["automountServiceAccountToken"] == false)
        .map(|d| (namespace(d).to_owned(), name(d).to_owned()))
        .collect();
    for t in templates(docs) {
        let s = t.spec;
        let o = &t.owner;
        let mut bad = |what: String| out.push(format!("{} {o}: {what}", t.namespace));
        if t.namespace.is_empty() || t.namespace == "default" {
            bad("must live in a Beacon namespace".into());
        }
        if s["automountServiceAccountToken"] != false {
            bad("automountServiceAccountToken must be false on the pod".into());
        }
        let sa = s["serviceAccountName"].as_str().unwrap_or("default");
        if !sas.contains(&(t.namespace.clone(), sa.to_owned())) {
            bad(format!(
                "service account {sa} must exist here with automountServiceAccountToken: false"
            ));
        }
        for f in ["hostNetwork", "hostPID", "hostIPC"] {
            if s[f] == true {
                bad(format!("{f} is forbidden"));
            }
        }
        let psc = &s["securityContext"];
        if psc["runAsNonRoot"] != true {
            bad("pod securityContext.runAsNonRoot must be true".into());
        }
        for f in ["runAsUser", "runAsGroup"] {
            if psc[f].as_u64().unwrap_or(0) == 0 {
                bad(format!("pod securityContext.{f} must be a non-zero number"));
            }
        }
        if psc["seccompProfile"]["type"] != "RuntimeDefault" {
            bad("pod seccompProfile must be RuntimeDefault".into());
        }
        if psc.get("sysctls").is_some() {
            bad("sysctls are not used".into());
        }
        for v in arr(&s["volumes"]) {
            let ty = v
                .as_object()
                .and_then(|m| m.keys().find(|k| *k != "name"))
                .map(String::as_str)
                .unwrap_or("");
            if !ALLOWED_VOLUMES.contains(&ty) {
                bad(format!(
                    "volume {} of type {ty} is not allowed by restricted",
                    v["name"]
                ));
            }
        }
        let tmp_volumes: BTreeSet<&str> = arr(&s["volumes"])
            .iter()
            .filter(|v| v.get("emptyDir").is_some())
            .filter_map(|v| v["name"].as_str())
            .collect();
        for c in containers(s) {
            let cn = c["name"].as_str().unwrap_or("?");
            let sc = &c["securityContext"];
            let mut cbad = |what: &str| bad(format!("container {cn}: {what}"));
            if sc["runAsNonRoot"] != true {
                cbad("securityContext.runAsNonRoot must be written, true");
            }
            for f in ["runAsUser", "runAsGroup"] {
                if sc[f].as_u64().unwrap_or(0) == 0 {
                    cbad("securityContext.runAsUser/runAsGroup must be written, non-zero");
                }
            }
            if sc["allowPrivilegeEscalation"] != false {
                cbad("allowPrivilegeEscalation must be false");
            }
            if sc["privileged"] == true {
                cbad("privileged is forbidden");
            }
            if sc["readOnlyRootFilesystem"] != true {
                cbad("readOnlyRootFilesystem must be true");
            }
            if !arr(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL") {
                cbad("capabilities must drop ALL");
            }
            if !arr(&sc["capabilities"]["add"]).is_empty() {
                cbad("no capability may be added");
            }
            if sc["seccompProfile"]["type"] != "RuntimeDefault" {
                cbad("seccompProfile must be RuntimeDefault");
            }
            for p in arr(&c["ports"]) {
                if p.get("hostPort").is_some() {
                    cbad("hostPort is forbidden");
                }
            }
            for r in ["requests", "limits"] {
                for k in ["cpu", "memory"] {
                    if c["resources"][r][k].is_null() {
                        cbad("resources.requests and limits for cpu and memory are required");
                    }
                }
            }
            if !arr(&c["volumeMounts"]).iter().any(|m| {
                m["mountPath"] == "/tmp" && tmp_volumes.contains(m["name"].as_str().unwrap_or(""))
            }) {
                cbad("needs an emptyDir mounted at /tmp (the root filesystem is read-only)");
            }
            if arr(&c["envFrom"])
                .iter()
                .any(|e| e.get("secretRef").is_some())
                || arr(&c["env"])
                    .iter()
                    .any(|e| e["valueFrom"].get("secretKeyRef").is_some())
            {
                cbad("Secrets must be mounted as files, never put in environment variables");
            }
            if arr(&c["env"])
                .iter()
                .any(|e| e["name"] == "DATABASE_PASSWORD")
            {
                cbad("DATABASE_PASSWORD in the environment is refused by the services");
            }
            // Init containers run to completion before the pod starts: no probes.
            let init = arr(&s["initContainers"]).iter().any(|i| std::ptr::eq(i, c));
            if t.long_running && !init {
                for probe in ["livenessProbe", "readinessProbe"] {
                    let p = &c[probe];
                    let ok = match p["httpGet"]["port"].as_str() {
                        Some(port) => port == "admin",
                        None => p.get("exec").is_some() && t.owner == "StatefulSet/postgres",
                    };
                    if !ok {
                        cbad(
                            "liveness and readiness must be HTTP probes on the admin port (PostgreSQL: pg_isready)",
                        );
                    }
                }
            }
        }
    }
    out
}

pub fn namespace_problems(docs: &[Value], model: &AccessModel) -> Vec<String> {
    let mut out = Vec::new();
    let namespaces: BTreeSet<&str> = docs
        .iter()
        .filter(|d| kind(d) == "Namespace")
        .map(name)
        .collect();
    let want: BTreeSet<&str> = model
        .kubernetes
        .namespaces
        .iter()
        .map(String::as_str)
        .collect();
    if namespaces != want {
        out.push(format!(
            "namespaces {namespaces:?} differ from the model's {want:?}"
        ));
    }
    for d in docs.iter().filter(|d| kind(d) == "Namespace") {
        let ns = name(d);
        for mode in ["enforce", "audit", "warn"] {
            if d["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")] != "restricted"
            {
                out.push(format!("{ns}: Pod Security {mode} must be restricted"));
            }
        }
        let in_ns = |k: &'static str| {
            docs.iter()
                .filter(move |x| kind(x) == k && namespace(x) == ns)
        };
        let quota_ok = in_ns("ResourceQuota").any(|q| {
            let hard = &q["spec"]["hard"];
            [
                "requests.cpu",
                "requests.memory",
                "limits.cpu",
                "limits.memory",
                "pods",
                "services",
                "secrets",
                "configmaps",
            ]
            .iter()
            .all(|k| !hard[*k].is_null())
        });
        if !quota_ok {
            out.push(format!(
                "{ns}: needs a ResourceQuota on compute and object counts"
            ));
        }
        if in_ns("LimitRange").next().is_none() {
            out.push(format!("{ns}: needs a LimitRange"));
        }
        let deny = in_ns("NetworkPolicy").any(|p| {
            let s = &p["spec"];
            s["podSelector"].as_object().is_some_and(|m| m.is_empty())
                && arr(&s["policyTypes"]).iter().any(|t| t == "Ingress")
                && arr(&s["policyTypes"]).iter().any(|t| t == "Egress")
                && arr(&s["ingress"]).is_empty()
                && arr(&s["egress"]).is_empty()
        });
        if !deny {
            out.push(format!(
                "{ns}: needs a default-deny NetworkPolicy for ingress and egress"
            ));
        }
        // DNS rules: a rule to port 53 must name kube-system AND kube-dns in the same peer.
        for p in in_ns("NetworkPolicy") {
            for rule in arr(&p["spec"]["egress"]) {
                let to_53 = arr(&rule["ports"]).iter().any(|x| x["port"] == 53);
                if to_53 {
                    let ok = !arr(&rule["to"]).is_empty()
                        && arr(&rule["to"]).iter().all(|peer| {
                            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                                == "kube-system"
                                && peer["podSelector"]["matchLabels"]["k8s-app"] == "kube-dns"
                        });
                    if !ok {
                        out.push(format!(
                            "{ns}/{}: DNS egress must name kube-system and kube-dns in one peer",
                            name(p)
                        ));
                    }
                }
            }
        }
    }
    out
}

/// The justified sidecar: the loader binds loopback and is the only container with the
/// database Secret; port 8083 is exposed by no container port and no Service.
pub fn sidecar_problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let Some(pipeline) = templates(docs)
        .into_iter()
        .find(|t| t.owner == "Deployment/pipeline")
    else {
        return vec!["Deployment/pipeline is missing".into()];
    };
    let db_volumes: BTreeSet<&str> = arr(&pipeline.spec["volumes"])
        .iter()
        .filter(|v| v["secret"]["secretName"] == "loader-db")
        .filter_map(|v| v["name"].as_str())
        .collect();
    if db_volumes.is_empty() {
        out.push("the pipeline pod must mount the loader-db Secret".into());
    }
    for c in containers(pipeline.spec) {
        let cn = c["name"].as_str().unwrap_or("");
        let mounts_db = arr(&c["volumeMounts"])
            .iter()
            .any(|m| db_volumes.contains(m["name"].as_str().unwrap_or("")));
        let has_db_env = arr(&c["env"])
            .iter()
            .any(|e| e["name"].as_str().unwrap_or("").starts_with("DATABASE_"));
        match cn {
            "loader" => {
                if !mounts_db {
                    out.push("the loader must mount the database Secret".into());
                }
                let listen = arr(&c["env"])
                    .iter()
                    .find(|e| e["name"] == "BEACON_LISTEN_ADDR");
                if !listen
                    .is_some_and(|e| e["value"].as_str().unwrap_or("").starts_with("127.0.0.1:"))
                {
                    out.push("the loader must listen on 127.0.0.1 only".into());
                }
            }
            _ => {
                if mounts_db || has_db_env {
                    out.push(format!(
                        "container {cn} must not see the database Secret or settings"
                    ));
                }
            }
        }
        if arr(&c["ports"]).iter().any(|p| p["containerPort"] == 8083) {
            out.push(format!("container {cn} exposes the loader port 8083"));
        }
    }
    for s in docs.iter().filter(|d| kind(d) == "Service") {
        if arr(&s["spec"]["ports"])
            .iter()
            .any(|p| p["port"] == 8083 || p["targetPort"] == 8083)
        {
            out.push(format!("Service {} exposes the loader port 8083", name(s)));
        }
    }
    out
}

/// CPU in millicores or memory in bytes from a Kubernetes quantity.
pub fn quantity(q: &Value) -> u64 {
    let s = match q {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return 0,
    };
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().unwrap_or_else(|_| panic!("quantity {s}"));
    let factor = match unit {
        "" => 1000.0, // CPU cores -> millicores (memory is never written bare here)
        "m" => 1.0,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        other => panic!("unsupported quantity unit {other} in {s}"),
    };
    (n * factor) as u64
}

/// Every namespace's quota leaves room for its workloads at their largest: each
/// Deployment at its HPA maximum (or replicas) plus one surge pod, StatefulSets at their
/// replicas, and one pod per Job or CronJob, with every container at its limit and at
/// its request.
pub fn quota_problems(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    for q in docs.iter().filter(|d| kind(d) == "ResourceQuota") {
        let ns = namespace(q);
        let (mut cpu, mut mem, mut pods) = (0u64, 0u64, 0u64);
        let (mut req_cpu, mut req_mem) = (0u64, 0u64);
        for d in docs.iter().filter(|d| namespace(d) == ns) {
            let count = match kind(d) {
                "Deployment" => {
                    let hpa_max = docs
                        .iter()
                        .find(|h| {
                            kind(h) == "HorizontalPodAutoscaler"
                                && namespace(h) == ns
                                && h["spec"]["scaleTargetRef"]["name"] == name(d)
                        })
                        .and_then(|h| h["spec"]["maxReplicas"].as_u64());
                    hpa_max.unwrap_or_else(|| d["spec"]["replicas"].as_u64().unwrap_or(1)) + 1
                }
                "StatefulSet" => d["spec"]["replicas"].as_u64().unwrap_or(1),
                "Job" | "CronJob" => 1,
                _ => continue,
            };
            let t = templates(std::slice::from_ref(d))
                .pop()
                .expect("a pod template");
            let (c, m) = containers(t.spec).iter().fold((0, 0), |(c, m), x| {
                (
                    c + quantity(&x["resources"]["limits"]["cpu"]),
                    m + quantity(&x["resources"]["limits"]["memory"]),
                )
            });
            cpu += count * c;
            mem += count * m;
            pods += count;
            let (c, m) = containers(t.spec).iter().fold((0, 0), |(c, m), x| {
                (
                    c + quantity(&x["resources"]["requests"]["cpu"]),
                    m + quantity(&x["resources"]["requests"]["memory"]),
                )
            });
            req_cpu += count * c;
            req_mem += count * m;
        }
        let hard = &q["spec"]["hard"];
        if req_cpu > quantity(&hard["requests.cpu"]) {
            out.push(format!(
                "{ns}: workloads at their maximum request {req_cpu}m CPU, quota allows {:?}",
                hard["requests.cpu"]
            ));
        }
        if req_mem > quantity(&hard["requests.memory"]) {
            out.push(format!(
                "{ns}: workloads at their maximum request {req_mem} bytes of memory, quota allows {:?}",
                hard["requests.memory"]
            ));
        }
        if cpu > quantity(&hard["limits.cpu"]) {
            out.push(format!(
                "{ns}: workloads at their maximum need {cpu}m CPU limits, quota allows {:?}",
                hard["limits.cpu"]
            ));
        }
        if mem > quantity(&hard["limits.memory"]) {
            out.push(format!("{ns}: workloads at their maximum need {mem} bytes of memory limits, quota allows {:?}", hard["limits.memory"]));
        }
        if pods
            > hard["pods"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        {
            out.push(format!(
                "{ns}: workloads at their maximum need {pods} pods, quota allows {:?}",
                hard["pods"]
            ));
        }
    }
    out
}
