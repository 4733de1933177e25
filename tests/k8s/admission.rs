//! The ValidatingAdmissionPolicy that limits analysts' Jobs, evaluated with a CEL
//! interpreter on the Job that `kubectl create job --from=cronjob/transform-once` makes,
//! and on Jobs that try to reach other Secrets. (A real API server evaluates the same
//! expressions; this proves what they say, not that a cluster enforces them.)

use cel::{Context, Program, Value as CelValue};
use serde_json::Value;

use crate::render::{arr, kind, name};

pub struct Policy {
    pub match_conditions: Vec<String>,
    pub validations: Vec<(String, String)>,
}

pub fn analyst_policy(docs: &[Value]) -> Policy {
    let vap = docs
        .iter()
        .find(|d| kind(d) == "ValidatingAdmissionPolicy" && name(d) == "beacon-analyst-jobs")
        .expect("ValidatingAdmissionPolicy beacon-analyst-jobs is rendered");
    Policy {
        match_conditions: arr(&vap["spec"]["matchConditions"])
            .iter()
            .map(|c| c["expression"].as_str().unwrap_or("").to_owned())
            .collect(),
        validations: arr(&vap["spec"]["validations"])
            .iter()
            .map(|v| {
                (
                    v["expression"].as_str().unwrap_or("").to_owned(),
                    v["message"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect(),
    }
}

fn eval(expression: &str, object: &Value, groups: &[&str]) -> bool {
    let program = Program::compile(expression).unwrap_or_else(|e| panic!("CEL {expression}: {e}"));
    let mut ctx = Context::default();
    ctx.add_variable("object", object.clone()).expect("object");
    ctx.add_variable(
        "request",
        serde_json::json!({"userInfo": {"groups": groups}}),
    )
    .expect("request");
    match program.execute(&ctx) {
        Ok(CelValue::Bool(b)) => b,
        other => panic!("CEL {expression} did not give a boolean: {other:?}"),
    }
}

impl Policy {
    /// The messages of the validations that `job`, created by someone in `groups`,
    /// fails; empty when admitted.
    pub fn denials(&self, job: &Value, groups: &[&str]) -> Vec<String> {
        if !self.match_conditions.iter().all(|c| eval(c, job, groups)) {
            return vec![];
        }
        self.validations
            .iter()
            .filter(|(expr, _)| !eval(expr, job, groups))
            .map(|(_, msg)| msg.clone())
            .collect()
    }
}

/// The Job `kubectl create job --from=cronjob/transform-once` would create.
pub fn job_from_cronjob(docs: &[Value]) -> Value {
    let cron = docs
        .iter()
        .find(|d| kind(d) == "CronJob" && name(d) == "transform-once")
        .expect("CronJob transform-once is rendered");
    serde_json::json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "transform-now", "namespace": "beacon-pipeline"},
        "spec": cron["spec"]["jobTemplate"]["spec"].clone()})
}
