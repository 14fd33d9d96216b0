//! The contract with users and with Kubernetes, defined once: the annotation keys and labels the webhook stamps
//! and the data plane reads, the external metrics this server offers and the label that names their deployment,
//! and the time constants both sides of a rule must agree on. Every module that reads or writes one of these
//! names imports it from here.

/// Prefix of every annotation and label this project owns.
pub const ANNOTATION_PREFIX: &str = "smart-autoscaler.io/";
/// Annotation that opts a deployment in without an HPA on our metric (`"true"`).
pub const ENABLED_ANNOTATION: &str = "smart-autoscaler.io/enabled";
/// Seconds after a pod starts during which its CPU is not trusted for scaling (JIT warm-up, cache fills).
pub const STARTUP_FILTER_ANNOTATION: &str = "smart-autoscaler.io/startup-filter-seconds";
/// Target CPU utilization percentage the autoscaler should aim for (set by a user or stamped by the webhook).
pub const TARGET_UTILIZATION_ANNOTATION: &str = "smart-autoscaler.io/target-utilization";
/// Annotation that lets auto-tuning apply its tuned target to a deployment (`"true"`); without it the tuned
/// target is only shown as advice. Set by users (the webhook does not stamp it); see docs/tuning.md.
pub const AUTO_TUNE_ANNOTATION: &str = "smart-autoscaler.io/auto-tune";
/// Human-readable record of what the webhook stamped and why (also its ownership record, see `admission`).
pub const POLICY_ANNOTATION: &str = "smart-autoscaler.io/policy";
/// Label that opts a Deployment (or, in the webhook configuration's namespaceSelector, a namespace) out of the
/// webhook.
pub const OPT_OUT_LABEL: &str = "smart-autoscaler.io/webhook";
/// The [`OPT_OUT_LABEL`] value that opts out.
pub const OPT_OUT_VALUE: &str = "disabled";

/// The adjusted metric the HPA scales on.
pub const SMART_METRIC: &str = "smart_cpu_utilization";
/// The unadjusted measured utilization, for comparison.
pub const RAW_METRIC: &str = "smart_cpu_utilization_raw";
/// Every external metric this server offers.
pub const METRICS: [&str; 2] = [SMART_METRIC, RAW_METRIC];
/// The metric label that names the deployment.
pub const DEPLOYMENT_LABEL: &str = "deployment";

/// A pod started less than this many seconds ago counts as a recent start
/// ([`DeploymentInputs::recent_pod_starts`](super::model::DeploymentInputs::recent_pod_starts)).
pub const RECENT_START_SECONDS: i64 = 180;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_keys_share_the_prefix() {
        for key in [
            ENABLED_ANNOTATION,
            STARTUP_FILTER_ANNOTATION,
            TARGET_UTILIZATION_ANNOTATION,
            AUTO_TUNE_ANNOTATION,
            POLICY_ANNOTATION,
            OPT_OUT_LABEL,
        ] {
            assert!(key.starts_with(ANNOTATION_PREFIX), "{key}");
        }
    }
}
