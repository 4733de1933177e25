//! The ValidatingAdmissionPolicies that narrow persona grants (`admission = ...` on a
//! grant of the model), into `k8s/base/admission/`:
//!
//! - `transform-job` ([`transform_jobs`]): the groups may create only Jobs whose pod is
//!   the pod template of the CronJob `transform-once` (the policy's parameter);
//! - `analyst-toolbox` ([`toolbox_jobs`]): the same rule with the CronJob
//!   `analyst-toolbox` (the analysts' psql toolbox in their own namespace);
//! - `restart-and-scale` ([`workload_changes`]): in the model's protected namespaces the
//!   groups may change a Deployment or StatefulSet only by its replica count and the
//!   `kubectl.kubernetes.io/restartedAt` pod annotation.
//!
//! Who is matched, and where, comes from the model; the CEL is fixed text here.
//! tests/k8s evaluates the rendered expressions with a CEL interpreter against the
//! attacks they exist for, and checks every person's workload-writing permission in a
//! protected namespace is narrowed by one of them.

use std::fmt::Write as _;

use platform::access::{
    ADMISSION_ANALYST_TOOLBOX, ADMISSION_RESTART_AND_SCALE, ADMISSION_TRANSFORM_JOB, AccessModel,
};

use super::kube::{metadata, yaml_file};

/// The CronJob whose pod template is the only pod analysts' Jobs may run.
pub const TRANSFORM_TEMPLATE: &str = "transform-once";
/// The CronJob whose pod template is the analysts' toolbox, the only pod of their
/// workspace.
pub const TOOLBOX_TEMPLATE: &str = "analyst-toolbox";
/// The pod annotation `kubectl rollout restart` sets.
pub const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// The groups of the personas with a grant narrowed by `admission`, and the namespaces
/// of those grants (each sorted, once).
fn narrowed(model: &AccessModel, admission: &str) -> (Vec<String>, Vec<String>) {
    let mut groups = Vec::new();
    let mut namespaces = Vec::new();
    for g in model
        .kubernetes
        .grants
        .iter()
        .filter(|g| g.admission.as_deref() == Some(admission))
    {
        if let Some(group) = &model.personas[&g.persona].group {
            groups.push(group.clone());
        }
        namespaces.extend(g.namespaces.iter().cloned());
    }
    for list in [&mut groups, &mut namespaces] {
        list.sort();
        list.dedup();
    }
    (groups, namespaces)
}

/// `request.userInfo.groups.exists(g, g in ['a', 'b'])`.
fn in_groups(groups: &[String]) -> String {
    let quoted: Vec<String> = groups.iter().map(|g| format!("'{g}'")).collect();
    format!(
        "request.userInfo.groups.exists(g, g in [{}])",
        quoted.join(", ")
    )
}

/// A binding's `namespaceSelector` for `namespaces`, indented under `matchResources:`.
fn namespace_selector(namespaces: &[String]) -> String {
    if let [one] = namespaces {
        return format!(
            "    namespaceSelector:\n      matchLabels:\n        kubernetes.io/metadata.name: {one}\n"
        );
    }
    let mut out = String::from(
        "    namespaceSelector:\n      matchExpressions:\n      - key: kubernetes.io/metadata.name\n        operator: In\n        values:\n",
    );
    for ns in namespaces {
        let _ = writeln!(out, "        - {ns}");
    }
    out
}

/// The policy's head: metadata, `failurePolicy: Fail`, the resources it is asked about.
fn policy_head(model: &AccessModel, name: &str, group: &str, resources: &[&str]) -> String {
    let mut out = String::from(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n",
    );
    metadata(&mut out, model, name, "", None);
    let _ = write!(
        out,
        "spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
    - apiGroups:
      - {group}
      apiVersions:
      - v1
      operations:
      - CREATE
      - UPDATE
      resources:
"
    );
    for r in resources {
        let _ = writeln!(out, "      - {r}");
    }
    out
}

/// The binding: Deny, in `namespaces`, with `param_ref` (indented under `spec:`) if any.
fn binding(model: &AccessModel, name: &str, namespaces: &[String], param_ref: &str) -> String {
    let mut out = String::from(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n",
    );
    metadata(&mut out, model, name, "", None);
    let _ = write!(
        out,
        "spec:
  policyName: {name}
  validationActions:
  - Deny
{param_ref}  matchResources:
{}",
        namespace_selector(namespaces)
    );
    out
}

/// `transform-job`: Jobs equal to the transform's, for the narrowed groups.
pub fn transform_jobs(model: &AccessModel) -> String {
    template_jobs(
        model,
        &format!("{}-analyst-jobs", model.product),
        ADMISSION_TRANSFORM_JOB,
        TRANSFORM_TEMPLATE,
        &format!(
            "People may create Jobs in {{ns}} only to run the transform on demand:
  kubectl -n {{ns}} create job --from=cronjob/{TRANSFORM_TEMPLATE} NAME
A Job's pod could otherwise run any image, mount any Secret of the namespace (the
loader's password, readable through pods/log) or carry the labels of another Service's
pods and receive its traffic."
        ),
    )
}

/// `analyst-toolbox`: Jobs equal to the analysts' toolbox, for the narrowed groups.
pub fn toolbox_jobs(model: &AccessModel) -> String {
    template_jobs(
        model,
        &format!("{}-analyst-toolbox", model.product),
        ADMISSION_ANALYST_TOOLBOX,
        TOOLBOX_TEMPLATE,
        &format!(
            "People may create Jobs in {{ns}} only to start a psql toolbox, which they enter
with `kubectl exec` and from which they log in to PostgreSQL as themselves:
  kubectl -n {{ns}} create job --from=cronjob/{TOOLBOX_TEMPLATE} NAME
The namespace holds no Secret and its NetworkPolicies let the toolbox reach PostgreSQL
only. A Job's pod could otherwise run any image or command with that access, mount
an API token or a node's files, run privileged, outlive the template's deadline, or
carry the labels of some Service's pods."
        ),
    )
}

/// The policy `name`: for the groups whose grant says `admission`, only Jobs whose pod
/// equals the pod template of CronJob `template` in the grant's namespace. `why` (with
/// `{ns}` for the namespace) opens the file's comment.
fn template_jobs(
    model: &AccessModel,
    name: &str,
    admission: &str,
    template: &str,
    why: &str,
) -> String {
    let (groups, namespaces) = narrowed(model, admission);
    let mut policy = policy_head(model, name, "batch", &["jobs"]);
    let _ = write!(
        policy,
        "  paramKind:
    apiVersion: batch/v1
    kind: CronJob
  matchConditions:
  - name: people-narrowed-to-the-{admission}
    expression: {groups}
  variables:
  - name: template
    expression: params.spec.jobTemplate.spec.template
  - name: pod
    expression: object.spec.template
  - name: jobTemplate
    expression: params.spec.jobTemplate.spec
  # The pod labels the API server sets on every Job's pod (it sets their values too).
  - name: generatedLabels
    expression: \"['controller-uid', 'job-name', 'batch.kubernetes.io/controller-uid', 'batch.kubernetes.io/job-name']\"
  validations:
  - expression: variables.pod.spec == variables.template.spec
    message: a Job may run only the pod of CronJob {template} (same image, command, args, env,
      volumes, service account, token automount and containers)
  - expression: >-
      has(variables.pod.metadata.labels) && has(variables.template.metadata.labels)
      && variables.pod.metadata.labels.all(k, k in variables.generatedLabels
      || (k in variables.template.metadata.labels
      && variables.template.metadata.labels[k] == variables.pod.metadata.labels[k]))
      && variables.template.metadata.labels.all(k, k in variables.pod.metadata.labels)
    message: a Job's pod carries exactly the labels of CronJob {template}'s pod (no Service may
      select it)
  - expression: >-
      has(variables.pod.metadata.annotations) == has(variables.template.metadata.annotations)
      && (!has(variables.pod.metadata.annotations)
      || variables.pod.metadata.annotations == variables.template.metadata.annotations)
    message: a Job's pod carries exactly the annotations of CronJob {template}'s pod
  - expression: >-
      (!has(object.spec.manualSelector) || !object.spec.manualSelector)
      && (!has(object.spec.parallelism) || object.spec.parallelism <= 1)
      && (!has(object.spec.completions) || object.spec.completions <= 1)
    message: a Job runs one pod at a time, with the selector the API server generates
  - expression: >-
      (!has(variables.jobTemplate.activeDeadlineSeconds)
      || (has(object.spec.activeDeadlineSeconds)
      && object.spec.activeDeadlineSeconds <= variables.jobTemplate.activeDeadlineSeconds))
      && (!has(variables.jobTemplate.backoffLimit)
      || (has(object.spec.backoffLimit)
      && object.spec.backoffLimit <= variables.jobTemplate.backoffLimit))
    message: a Job runs no longer and retries no more often than CronJob {template}'s
",
        groups = in_groups(&groups),
    );
    // The parameter lives in the one namespace the grant is for.
    let param_ns = namespaces.first().map(String::as_str).unwrap_or_default();
    let param_ref = format!(
        "  paramRef:
    name: {template}
    namespace: {param_ns}
    parameterNotFoundAction: Deny
"
    );
    let bind = binding(model, name, &namespaces, &param_ref);
    yaml_file(
        &format!(
            "{}
So the policy admits, for the groups whose grant says `admission = \"{admission}\"`,
only Jobs whose pod equals the pod template of CronJob {template} (its parameter; only
the delivery identity may change it), running no longer and retrying no more often
than its Jobs. What may differ, and why: the Job's own metadata (name, labels,
annotations: not part of the pod), and the pod labels the API server adds to every
Job's pod (controller-uid, job-name and their batch.kubernetes.io/ forms: it sets
their values itself).
The expressions are evaluated by tests/k8s (CEL) against the hijacking Jobs.",
            why.replace("{ns}", param_ns)
        ),
        &[policy, bind],
    )
}

/// `restart-and-scale`: Deployments and StatefulSets keep their pod, for the narrowed
/// groups, in the protected namespaces.
pub fn workload_changes(model: &AccessModel) -> String {
    let name = format!("{}-workload-changes", model.product);
    let name = name.as_str();
    let (groups, _) = narrowed(model, ADMISSION_RESTART_AND_SCALE);
    let namespaces = &model.kubernetes.protected_namespaces;
    let mut policy = policy_head(model, name, "apps", &["deployments", "statefulsets"]);
    let _ = write!(
        policy,
        "  matchConditions:
  - name: people-narrowed-to-restart-and-scale
    expression: {groups}
  variables:
  - name: restartedAt
    expression: \"'{RESTARTED_AT}'\"
  - name: update
    expression: request.operation == 'UPDATE'
  - name: newAnnotations
    expression: >-
      has(object.spec.template.metadata.annotations)
      ? object.spec.template.metadata.annotations : {{}}
  - name: oldAnnotations
    expression: >-
      request.operation == 'UPDATE' && has(oldObject.spec.template.metadata.annotations)
      ? oldObject.spec.template.metadata.annotations : {{}}
  validations:
  - expression: variables.update
    message: only the delivery identity creates workloads where signing keys or database
      credentials live
  - expression: variables.update && object.spec.template.spec == oldObject.spec.template.spec
    message: only the delivery identity changes what a workload runs (image, command, args,
      env, volumes, service account); people may scale and restart
  - expression: >-
      variables.update && object.spec.selector == oldObject.spec.selector
      && has(object.spec.template.metadata.labels) == has(oldObject.spec.template.metadata.labels)
      && (!has(object.spec.template.metadata.labels)
      || object.spec.template.metadata.labels == oldObject.spec.template.metadata.labels)
    message: only the delivery identity changes a workload's selector or pod labels
  - expression: >-
      variables.update
      && variables.newAnnotations.all(k, k == variables.restartedAt
      || (k in variables.oldAnnotations && variables.oldAnnotations[k] == variables.newAnnotations[k]))
      && variables.oldAnnotations.all(k, k == variables.restartedAt || k in variables.newAnnotations)
    message: people may change only the pod annotation {RESTARTED_AT} (kubectl rollout
      restart)
",
        groups = in_groups(&groups),
    );
    let bind = binding(model, name, namespaces, "");
    yaml_file(
        &format!(
            "Where signing keys or database credentials live ([kubernetes] protected_namespaces),
whoever changes what a workload runs can read them: a new image or command that keeps
the Secret volumes prints the key to its log. Bound in: {}.
There only the
delivery identity creates or changes workloads. The groups whose grant says
`admission = \"{ADMISSION_RESTART_AND_SCALE}\"` keep `kubectl scale` (the scale subresource,
which this policy is not asked about) and `kubectl rollout restart`; an update of theirs
is admitted only if the pod spec, the selector and the pod labels are unchanged and
the only pod annotation that changed is {RESTARTED_AT}. Rollout
parameters (strategy, paused, minReadySeconds, ...) may change: they do not change what
runs. A rollback is a delivery of the previous revision: `kubectl rollout undo` writes
a whole pod template, which admission cannot tell from a new one.
The expressions are evaluated by tests/k8s (CEL) against the image-swap attack.",
            namespaces.join(", ")
        ),
        &[policy, bind],
    )
}
