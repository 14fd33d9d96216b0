//! Turns a deployment's inputs into the value of `smart_cpu_utilization`, with an explanation of every value.
//!
//! Until the decision core (node pressure, policies, safety rules) lands, the served value is the measured
//! utilization itself, and the explanation says so.

use serde::Serialize;

use super::model::DeploymentInputs;

/// Why a served value is what it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The measured utilization the value started from, percent.
    pub raw_percent: f64,
    /// The HPA's base target, percent.
    pub base_target_percent: f64,
    /// The target the deployment should effectively run at, percent.
    pub effective_target_percent: f64,
    /// `served = raw × base / effective`.
    pub served_percent: f64,
    /// Human-readable reasons, in the order they were applied.
    pub reasons: Vec<String>,
}

/// Computes the served value for one deployment.
pub fn decide(inputs: &DeploymentInputs) -> Explanation {
    Explanation {
        raw_percent: inputs.cpu_utilization_percent,
        base_target_percent: inputs.base_target_percent,
        effective_target_percent: inputs.base_target_percent,
        served_percent: inputs.cpu_utilization_percent,
        reasons: vec!["no adjustment: served value is the measured utilization".to_string()],
    }
}
