//! The new service's Kubernetes base and its place in the overlays.

use std::fmt::Write as _;

use anyhow::Context;

use super::{Kind, Service};

pub(super) fn kustomization(service: &Service<'_>) -> String {
    let (name, namespace) = (service.name, &service.namespace);
    format!(
        "# {name}: everything the {namespace} namespace holds.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
namespace: {namespace}
components:
- ../../components/namespace-baseline
resources:
- serviceaccounts.yaml
- rbac.yaml
- {name}.yaml
- networkpolicy.yaml
- admin-services.yaml
"
    )
}

pub(super) fn workload(service: &Service<'_>) -> String {
    let (product, name, namespace) = (&service.model.product, service.name, &service.namespace);
    let admin = service.admin;
    let meta = format!(
        "metadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n    app.kubernetes.io/part-of: {product}\n    app.kubernetes.io/name: {name}"
    );
    let mut ports = String::new();
    let mut env = String::new();
    let mut service_ports = String::new();
    if let Some((port, number)) = service.port {
        let _ = write!(
            ports,
            "\n        - name: {port}\n          containerPort: {number}\n          protocol: TCP"
        );
        let _ = write!(
            env,
            "\n        - name: BEACON_LISTEN_ADDR\n          value: 0.0.0.0:{number}"
        );
        let _ = write!(
            service_ports,
            "\n  - name: {port}\n    port: {number}\n    targetPort: {port}\n    protocol: TCP"
        );
    }
    let collector = &service.model.components["otel-collector"].namespace;
    let _ = write!(
        env,
        "
        - name: BEACON_ADMIN_ADDR
          value: 0.0.0.0:{admin}
        - name: BEACON_LOG_FORMAT
          value: json
        - name: RUST_LOG
          value: info
        - name: OTEL_EXPORTER_OTLP_ENDPOINT
          value: http://otel-collector.{collector}.svc:4317"
    );
    let mut mounts = String::new();
    let mut volumes = String::new();
    let mut secret = |volume: &str, dir: &str, secret: &str| {
        let _ = write!(
            mounts,
            "\n        - name: {volume}\n          mountPath: /etc/{product}/{dir}\n          readOnly: true"
        );
        let _ = write!(
            volumes,
            "\n      - name: {volume}\n        secret:\n          secretName: {secret}\n          defaultMode: 288"
        );
    };
    if let Some(role) = &service.role {
        let data = &service.model.components["postgres"].namespace;
        let _ = write!(
            env,
            "
        - name: DATABASE_HOST
          value: postgres.{data}.svc
        - name: DATABASE_PORT
          value: '5432'
        - name: DATABASE_NAME
          value: {product}
        - name: DATABASE_USER
          value: {role}
        - name: DATABASE_PASSWORD_FILE
          value: /etc/{product}/db/password
        - name: DATABASE_SSLMODE
          value: verify-full
        - name: DATABASE_SSLROOTCERT
          value: /etc/{product}/db/ca.crt"
        );
        secret("db", "db", &format!("{name}-db"));
    }
    if service.options.kind == Kind::Grpc {
        for (var, file) in [("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")] {
            let _ = write!(
                env,
                "\n        - name: BEACON_TLS_{var}_FILE\n          value: /etc/{product}/tls/{file}"
            );
        }
        secret("tls", "tls", &format!("{name}-tls"));
    }
    format!(
        "# {name} (scaffolded by `cargo xtask new-service`): restricted pod, probes on the admin
# port, no Kubernetes API token. Secrets are files (Secret volumes).
apiVersion: apps/v1
kind: Deployment
{meta}
spec:
  replicas: 1
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        app.kubernetes.io/part-of: {product}
        app.kubernetes.io/name: {name}
    spec:
      serviceAccountName: {name}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        fsGroup: 65532
        seccompProfile:
          type: RuntimeDefault
      terminationGracePeriodSeconds: 30
      containers:
      - name: {name}
        image: {product}/{name}:dev
        imagePullPolicy: Always
        ports:{ports}
        - name: admin
          containerPort: {admin}
          protocol: TCP
        env:{env}
        livenessProbe:
          httpGet:
            path: /healthz
            port: admin
          periodSeconds: 10
          timeoutSeconds: 2
          failureThreshold: 3
        readinessProbe:
          httpGet:
            path: /readyz
            port: admin
          periodSeconds: 5
          timeoutSeconds: 2
          failureThreshold: 3
        startupProbe:
          httpGet:
            path: /healthz
            port: admin
          periodSeconds: 2
          failureThreshold: 30
        resources:
          requests:
            cpu: 50m
            memory: 64Mi
          limits:
            cpu: 500m
            memory: 256Mi
        securityContext:
          runAsNonRoot: true
          runAsUser: 65532
          runAsGroup: 65532
          allowPrivilegeEscalation: false
          privileged: false
          readOnlyRootFilesystem: true
          capabilities:
            drop:
            - ALL
          seccompProfile:
            type: RuntimeDefault
        volumeMounts:
        - name: tmp
          mountPath: /tmp{mounts}
      volumes:
      - name: tmp
        emptyDir:
          sizeLimit: 64Mi{volumes}

---
apiVersion: v1
kind: Service
{meta}
spec:
  type: ClusterIP
  selector:
    app.kubernetes.io/name: {name}
  ports:{service_ports}
  - name: admin
    port: {admin}
    targetPort: admin
    protocol: TCP

---
apiVersion: policy/v1
kind: PodDisruptionBudget
{meta}
spec:
  maxUnavailable: 1
  selector:
    matchLabels:
      app.kubernetes.io/name: {name}
"
    )
}

/// The overlay with the new base (after the last `base/` entry); in dev, the new
/// secrets (database password, workload certificate) from the git-ignored `secrets/`
/// that `cargo xtask secrets` fills; in prod, the image pinned by a placeholder digest.
pub(super) fn overlay_text(
    text: &str,
    service: &Service<'_>,
    prod: bool,
) -> anyhow::Result<String> {
    let (product, name, namespace) = (&service.model.product, service.name, &service.namespace);
    let last = text
        .lines()
        .rfind(|l| l.trim_start().starts_with("- ../../base/"))
        .context("the overlay lists no base")?;
    let entry = last.replacen(
        last.trim_start().trim_start_matches("- ../../base/"),
        name,
        1,
    );
    let mut out = text.replacen(&format!("{last}\n"), &format!("{last}\n{entry}\n"), 1);
    if !prod {
        // Dev: the local registry Tilt pushes to (never an unqualified name).
        let marker = "images:\n";
        anyhow::ensure!(out.contains(marker), "the dev overlay has no images list");
        let after = out.find(marker).map_or(0, |i| i + marker.len());
        // After the list's leading comment lines, if any.
        let insert = out[after..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| l.len() + 1)
            .sum::<usize>()
            + after;
        out.insert_str(
            insert,
            &format!("- name: {product}/{name}\n  newName: localhost:5001/{product}/{name}\n"),
        );
    }
    if prod {
        let marker = "images:\n";
        anyhow::ensure!(out.contains(marker), "the prod overlay has no images list");
        return Ok(out.replacen(
            marker,
            &format!(
                "{marker}- name: {product}/{name}\n  newName: registry.example.com/{product}/{name}\n  digest: sha256:{}\n",
                "0".repeat(64)
            ),
            1,
        ));
    }
    let mut secrets = String::new();
    if let Some(role) = &service.role {
        // The bootstrap Job's list of every login role's password.
        let lines: Vec<&str> = out.lines().collect();
        let start = lines
            .iter()
            .position(|l| l.trim() == "- name: db-role-passwords")
            .context("the dev overlay has no db-role-passwords secret")?;
        let last = (start..lines.len())
            .take_while(|&i| i == start || !lines[i].trim_start().starts_with("- name:"))
            .filter(|&i| lines[i].contains(".password"))
            .last()
            .context("db-role-passwords lists no file")?;
        let indent = &lines[last][..lines[last].len() - lines[last].trim_start().len()];
        let mut edited: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
        edited.insert(
            last + 1,
            format!("{indent}- {role}=secrets/{role}.password"),
        );
        out = edited.join("\n") + "\n";
        let _ = write!(
            secrets,
            "  - name: {name}-db\n    namespace: {namespace}\n    files:\n      - password=secrets/{role}.password\n      - ca.crt=secrets/ca.crt\n"
        );
    }
    if service.options.kind == Kind::Grpc {
        let _ = write!(
            secrets,
            "  - name: {name}-tls\n    namespace: {namespace}\n    files:\n      - tls.crt=secrets/{name}.crt\n      - tls.key=secrets/{name}.key\n      - ca.crt=secrets/ca.crt\n"
        );
    }
    if !secrets.is_empty() {
        anyhow::ensure!(
            out.contains("\npatches:\n"),
            "the dev overlay has no patches after its secretGenerator"
        );
        out = out.replacen("\npatches:\n", &format!("\n{secrets}patches:\n"), 1);
    }
    Ok(out)
}

/// The prod overlay's patch that points a service with a database role at the primary.
pub(super) fn database_endpoint(service: &Service<'_>) -> String {
    let (name, namespace) = (service.name, &service.namespace);
    let data = &service.model.components["postgres"].namespace;
    format!(
        "
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {namespace}
spec:
  template:
    spec:
      containers:
      - name: {name}
        env:
        - name: DATABASE_HOST
          value: postgres-rw.{data}.svc
"
    )
}

/// The prod workload certificate of a gRPC service (cert-manager, the platform's CA).
pub(super) fn certificate(service: &Service<'_>) -> String {
    let (product, name, namespace) = (&service.model.product, service.name, &service.namespace);
    let id = format!(
        "spiffe://{}/ns/{namespace}/sa/{name}",
        service.model.trust_domain
    );
    format!(
        "
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  name: {name}-mtls
  namespace: {namespace}
  labels:
    app.kubernetes.io/part-of: {product}
spec:
  secretName: {name}-tls
  duration: 720h
  renewBefore: 240h
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  uris:
  - {id}
  dnsNames:
  - {name}.{namespace}.svc
  - {name}.{namespace}.svc.cluster.local
  usages:
  - digital signature
  - key encipherment
  - server auth
  - client auth
  issuerRef:
    group: cert-manager.io
    kind: ClusterIssuer
    name: {product}-internal-ca
"
    )
}
