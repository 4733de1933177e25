//! The ValidatingAdmissionPolicies of k8s/base/admission, evaluated with a CEL
//! interpreter the way the API server does: match conditions first, then variables,
//! then validations; an expression that fails to evaluate denies (the policies are
//! `failurePolicy: Fail`). (A real API server evaluates the same expressions; this proves
//! what they say, not that a cluster enforces them: the e2e workflow does that.)

use cel::{Context, Program, Value as CelValue};
use serde_json::{Value, json};

use crate::render::{arr, kind, name};

pub struct Policy {
    pub match_conditions: Vec<String>,
    pub variables: Vec<(String, String)>,
    pub validations: Vec<(String, String)>,
}

/// The rendered policy `policy_name`.
pub fn policy(docs: &[Value], policy_name: &str) -> Policy {
    let vap = docs
        .iter()
        .find(|d| kind(d) == "ValidatingAdmissionPolicy" && name(d) == policy_name)
        .unwrap_or_else(|| panic!("ValidatingAdmissionPolicy {policy_name} is rendered"));
    let pairs = |list: &Value, a: &str, b: &str| -> Vec<(String, String)> {
        arr(list)
            .iter()
            .map(|v| {
                (
                    v[a].as_str().unwrap_or("").to_owned(),
                    v[b].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    Policy {
        match_conditions: pairs(&vap["spec"]["matchConditions"], "expression", "name")
            .into_iter()
            .map(|(e, _)| e)
            .collect(),
        variables: pairs(&vap["spec"]["variables"], "name", "expression"),
        validations: pairs(&vap["spec"]["validations"], "expression", "message"),
    }
}

pub fn analyst_policy(docs: &[Value]) -> Policy {
    policy(docs, "beacon-analyst-jobs")
}

pub fn toolbox_policy(docs: &[Value]) -> Policy {
    policy(docs, "beacon-analyst-toolbox")
}

pub fn workload_policy(docs: &[Value]) -> Policy {
    policy(docs, "beacon-workload-changes")
}

/// One admission request: who, what operation, the new and old object and the
/// policy's parameter.
pub struct Request<'a> {
    pub groups: &'a [&'a str],
    pub object: &'a Value,
    pub old_object: Option<&'a Value>,
    pub params: Option<&'a Value>,
}

fn eval(expression: &str, ctx: &Context) -> Result<CelValue, String> {
    let program = Program::compile(expression).unwrap_or_else(|e| panic!("CEL {expression}: {e}"));
    program
        .execute(ctx)
        .map_err(|e| format!("{expression}: {e}"))
}

impl Policy {
    /// The messages of the validations `req` fails (an evaluation error is a denial);
    /// empty when admitted or when the policy does not match.
    pub fn check(&self, req: &Request) -> Vec<String> {
        let mut ctx = Context::default();
        let operation = if req.old_object.is_some() {
            "UPDATE"
        } else {
            "CREATE"
        };
        ctx.add_variable("object", req.object.clone())
            .expect("object");
        ctx.add_variable("oldObject", req.old_object.cloned().unwrap_or(Value::Null))
            .expect("oldObject");
        ctx.add_variable("params", req.params.cloned().unwrap_or(Value::Null))
            .expect("params");
        ctx.add_variable(
            "request",
            json!({"operation": operation, "userInfo": {"username": "someone", "groups": req.groups}}),
        )
        .expect("request");
        for c in &self.match_conditions {
            match eval(c, &ctx) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => return vec![],
                other => return vec![format!("match condition failed: {other:?}")],
            }
        }
        // Variables may refer to earlier ones; one that fails is left out, so an
        // expression using it fails (as the API server's lazy evaluation would).
        let mut variables = serde_json::Map::new();
        for (var, expr) in &self.variables {
            ctx.add_variable("variables", Value::Object(variables.clone()))
                .expect("variables");
            if let Ok(v) = eval(expr, &ctx) {
                variables.insert(var.clone(), cel_to_json(&v));
            }
        }
        ctx.add_variable("variables", Value::Object(variables))
            .expect("variables");
        self.validations
            .iter()
            .filter_map(|(expr, msg)| match eval(expr, &ctx) {
                Ok(CelValue::Bool(true)) => None,
                Ok(CelValue::Bool(false)) => Some(msg.clone()),
                other => Some(format!("{msg} (evaluation failed: {other:?})")),
            })
            .collect()
    }

    /// The analysts' policy: `job`, created by someone in `groups`, with `cron` as the
    /// parameter.
    pub fn denials(&self, job: &Value, cron: &Value, groups: &[&str]) -> Vec<String> {
        self.check(&Request {
            groups,
            object: job,
            old_object: None,
            params: Some(cron),
        })
    }
}

fn cel_to_json(v: &CelValue) -> Value {
    v.json().unwrap_or(Value::Null)
}

/// The CronJob `cron_name`.
pub fn cronjob(docs: &[Value], cron_name: &str) -> Value {
    docs.iter()
        .find(|d| kind(d) == "CronJob" && name(d) == cron_name)
        .unwrap_or_else(|| panic!("CronJob {cron_name} is rendered"))
        .clone()
}

/// The CronJob transform-once, the analysts' policy's parameter.
pub fn transform_cronjob(docs: &[Value]) -> Value {
    cronjob(docs, "transform-once")
}

/// The CronJob analyst-toolbox, the toolbox policy's parameter.
pub fn toolbox_cronjob(docs: &[Value]) -> Value {
    cronjob(docs, "analyst-toolbox")
}

/// The Job `kubectl create job --from=cronjob/transform-once` creates, as admission
/// sees it: the API server has added the selector and the generated pod labels.
pub fn job_from_cronjob(docs: &[Value]) -> Value {
    job_from(&transform_cronjob(docs), "transform-now")
}

/// The Job `kubectl create job --from=cronjob/<cron> <job_name>` creates, as admission
/// sees it.
pub fn job_from(cron: &Value, job_name: &str) -> Value {
    let mut job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name, "namespace": cron["metadata"]["namespace"].clone(),
            "uid": "0b0e6c1e-1111-4222-8333-944445555666",
            "annotations": {"cronjob.kubernetes.io/instantiate": "manual"}},
        "spec": cron["spec"]["jobTemplate"]["spec"].clone()});
    let uid = "0b0e6c1e-1111-4222-8333-944445555666";
    let labels = job["spec"]["template"]["metadata"]["labels"]
        .as_object_mut()
        .expect("the template's pod has labels");
    for (k, v) in [
        ("controller-uid", uid),
        ("batch.kubernetes.io/controller-uid", uid),
        ("job-name", job_name),
        ("batch.kubernetes.io/job-name", job_name),
    ] {
        labels.insert(k.to_owned(), json!(v));
    }
    job["spec"]["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    job
}
