//! The policy gates as the platform asks them: the policy in force (the
//! newest stored version of the gate, else the one Bifrost ships), its data
//! for the project, and the decision — recorded with the step it decided.

use std::sync::OnceLock;

use bifrost_core::StoreResult;
use bifrost_core::policies::PolicyVersion;
use bifrost_core::ports::Store;
use bifrost_policy::{Decision, Evaluator, Gate};
use serde_json::Value;

/// A gate's policy as it stands: `version` 0 is the shipped one.
#[derive(Clone, Debug)]
pub struct InForce {
    pub gate: Gate,
    pub version: u64,
    pub rego: String,
    pub data: Value,
    /// The newest stored version (what a change is made on), if any.
    pub stored: Option<PolicyVersion>,
}

impl InForce {
    /// The data the policy sees for `project` (its own values over the policy's).
    pub fn data_for(&self, project: Option<&str>) -> Value {
        match &self.stored {
            Some(v) => v.data_for(project),
            None => self.data.clone(),
        }
    }
}

/// The policy in force for `gate`.
pub async fn in_force(store: &dyn Store, gate: Gate) -> StoreResult<InForce> {
    let newest = store.policy_versions(gate.name()).await?.pop();
    Ok(match newest {
        Some(v) => InForce { gate, version: v.version, rego: v.rego.clone(), data: v.data.clone(), stored: Some(v) },
        None => {
            let (rego, data) = gate.shipped();
            InForce { gate, version: 0, rego: rego.to_string(), data, stored: None }
        }
    })
}

fn evaluator() -> &'static Evaluator {
    static EVALUATOR: OnceLock<Evaluator> = OnceLock::new();
    EVALUATOR.get_or_init(Evaluator::new)
}

/// Asks `policy` about `input` for `project`.
pub fn decide(policy: &InForce, project: Option<&str>, input: Value) -> Decision {
    evaluator().decide(policy.gate, &policy.rego, &policy.data_for(project), input)
}

/// The decision as an audit record keeps it (JSON, with the policy's version).
pub fn evidence(decision: &Decision, version: u64) -> String {
    let mut v = serde_json::to_value(decision).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("policy_version".into(), version.into());
    }
    v.to_string()
}
