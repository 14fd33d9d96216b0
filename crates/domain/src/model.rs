//! The data that flows through the core: what the engine observes about each deployment and node pool on a
//! tick, and the snapshot of served values that the HTTP layer reads.

use std::collections::BTreeMap;

/// Milliseconds since the Unix epoch. The core never reads a clock; callers pass the time in.
pub type UnixMillis = i64;

/// Identifies a deployment.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct DeploymentKey {
    /// Namespace of the deployment.
    pub namespace: String,
    /// Name of the deployment.
    pub name: String,
}

impl DeploymentKey {
    /// Builds a key from namespace and name.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        DeploymentKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Measured and requested load on the nodes a deployment can be scheduled on.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PoolInputs {
    /// Name of the pool (the node-selector it was derived from, or `all`).
    pub name: String,
    /// Measured CPU utilization of the pool's Ready, schedulable nodes that have a usable measurement, percent
    /// of their allocatable; `None` when no node of the pool has one (unknown, not idle).
    pub measured_cpu_percent: Option<f64>,
    /// Sum of pod CPU requests over allocatable CPU, percent.
    pub requested_cpu_percent: f64,
    /// Number of nodes in the pool.
    pub nodes: u32,
}

/// One deployment's inputs on one tick.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeploymentInputs {
    /// Which deployment.
    pub key: DeploymentKey,
    /// The HPA's target value for our metric, percent: the base the effective target is compared with.
    pub base_target_percent: f64,
    /// CPU utilization of pods past their startup filter, percent of requests (`serve` and `simulate` compute it
    /// with [`estimate_usage`](super::cluster::estimate_usage) from 10-minute, 5-minute and short-window rates).
    pub cpu_utilization_percent: f64,
    /// Memory working set over requests, percent, when known.
    pub memory_utilization_percent: Option<f64>,
    /// Total CPU request of one pod in milli-cores (all containers, including restartable init containers).
    pub pod_cpu_request_milli: i64,
    /// Total memory request of one pod in bytes, the same way; 0: none (the cost model charges memory by it).
    #[serde(default)]
    pub pod_memory_request_bytes: i64,
    /// Ready pods per node name, where the node is known (the cost model prices each pod by its node's labels).
    #[serde(default)]
    pub ready_pods_by_node: BTreeMap<String, u32>,
    /// Current replica count (spec).
    pub replicas: u32,
    /// Ready pods.
    pub ready_pods: u32,
    /// Pods not yet ready or still inside their startup filter.
    pub starting_pods: u32,
    /// `maxReplicas` of the HPA that scales it on our metric, when one does (the anomaly detectors' "at
    /// maxReplicas": the HPA can add no capacity).
    #[serde(default)]
    pub max_replicas: Option<u32>,
    /// Pods of the deployment the scheduler could not place (`PodScheduled` False with reason `Unschedulable`).
    #[serde(default)]
    pub unschedulable_pods: u32,
    /// Pods started in the last [`RECENT_START_SECONDS`](super::contract::RECENT_START_SECONDS) (3 minutes).
    pub recent_pod_starts: u32,
    /// Seconds a new pod's CPU is ignored.
    pub startup_filter_seconds: u32,
    /// The deployment's node pool.
    pub pool: PoolInputs,
    /// Annotations of the Deployment that steer policy (`smart-autoscaler.io/*`).
    pub annotations: BTreeMap<String, String>,
    /// The averaging window behind `cpu_utilization_percent`, seconds.
    pub window_seconds: i64,
    /// When these inputs were measured.
    pub observed_at: UnixMillis,
}

/// A node as the scheduler extender and the pool computation see it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeInputs {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// Ready condition is True.
    pub ready: bool,
    /// Not cordoned.
    pub schedulable: bool,
    /// Allocatable CPU in milli-cores.
    pub allocatable_cpu_milli: i64,
    /// Sum of CPU requests of pods on the node, milli-cores.
    pub requested_cpu_milli: i64,
    /// Measured CPU utilization, percent of allocatable, when known.
    pub measured_cpu_percent: Option<f64>,
}

/// A managed deployment whose CPU utilization could not be measured on a tick, and why. Unknown is not zero:
/// such a deployment gets no fresh value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Unmeasured {
    /// Which deployment.
    pub key: DeploymentKey,
    /// Why its utilization is unknown.
    pub cause: UnknownCause,
    /// Why, in words, with the counts behind it.
    pub reason: String,
}

/// Why a deployment's utilization is unknown on a tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCause {
    /// No pod is ready and past its startup filter (a rollout, a start, zero replicas): nothing to measure.
    NoMeasurablePods,
    /// Pods could be measured, but the metrics source gave no usable sample for any of them (a fault of the
    /// source: counted as its error).
    NoSamples,
    /// The measured pods request no CPU, so utilization is undefined.
    NoCpuRequest,
}

/// Everything observed on one tick.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observation {
    /// When the observation was taken.
    pub at: UnixMillis,
    /// When the usage in it (pod and node CPU) was measured: `at`, or earlier when the metrics source failed
    /// and its last good answer was used again.
    pub measured_at: UnixMillis,
    /// Managed deployments whose utilization was measured.
    pub deployments: Vec<DeploymentInputs>,
    /// Managed deployments whose utilization is unknown on this tick.
    #[serde(default)]
    pub unmeasured: Vec<Unmeasured>,
    /// Nodes of the cluster.
    pub nodes: Vec<NodeInputs>,
}

/// Why a deployment's utilization is unknown, and since when: what the snapshot keeps of an [`Unmeasured`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct UsageUnknown {
    /// Why.
    pub cause: UnknownCause,
    /// Why, in words.
    pub reason: String,
    /// The first tick of this unbroken run of unknown ticks.
    pub since: UnixMillis,
    /// When the value still served for it (the last good one, ageing into the fail-safe) was measured, if any.
    pub last_good_at: Option<UnixMillis>,
}

/// What is served for one deployment, with the reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ServedDeployment {
    /// The inputs the values were computed from.
    pub inputs: DeploymentInputs,
    /// `smart_cpu_utilization_raw`: the measured utilization, unadjusted.
    pub raw_percent: f64,
    /// `smart_cpu_utilization`: the adjusted value the HPA scales on.
    pub smart_percent: f64,
    /// Why `smart_percent` has the value it has.
    pub explanation: crate::decision::Explanation,
}

/// The values the HTTP layer serves, published once per tick.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Snapshot {
    /// When the observation behind it was taken.
    pub collected_at: UnixMillis,
    /// When the usage behind it was measured (see [`Observation::measured_at`]).
    pub measured_at: UnixMillis,
    /// The collection interval, so readers can judge staleness.
    pub interval_millis: i64,
    /// Per-deployment values. A deployment whose utilization is unknown on this tick keeps its last good entry
    /// here (with the old `observed_at`, so it ages into the fail-safe) and is listed in `unmeasured` too.
    pub deployments: BTreeMap<DeploymentKey, ServedDeployment>,
    /// Managed deployments whose utilization is unknown on this tick, with why.
    pub unmeasured: BTreeMap<DeploymentKey, UsageUnknown>,
    /// Nodes as last observed.
    pub nodes: Vec<NodeInputs>,
    /// Input ages past which reads fall back to raw, then fail.
    pub failsafe: FailSafe,
    /// Anomalies active on this tick and those that ended on it, per deployment (see [`crate::anomaly`]).
    pub anomalies: Vec<crate::anomaly::Anomaly>,
}

/// Read-time staleness limits carried with a snapshot, so readers apply the engine's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FailSafe {
    /// Inputs older than this are served raw, milliseconds.
    pub raw_after_millis: i64,
    /// Inputs older than this are not served, milliseconds.
    pub error_after_millis: i64,
}

impl Default for FailSafe {
    fn default() -> Self {
        FailSafe {
            raw_after_millis: 3 * 60_000,
            error_after_millis: 10 * 60_000,
        }
    }
}

impl Snapshot {
    /// Age of the snapshot at `now`.
    pub fn age_millis(&self, now: UnixMillis) -> i64 {
        (now - self.collected_at).max(0)
    }

    /// Age at `now` of the usage behind the snapshot.
    pub fn measured_age_millis(&self, now: UnixMillis) -> i64 {
        (now - self.measured_at).max(0)
    }

    /// Whether the snapshot's measurements are too old to act on: older than `intervals` collection intervals.
    /// A snapshot the engine keeps producing from a failed source's last good answer ages too.
    pub fn is_stale(&self, now: UnixMillis, intervals: i64) -> bool {
        self.measured_age_millis(now) > self.interval_millis * intervals
    }

    /// Age at `now` of the freshest value a metric read could serve (the measurements' age when nothing is
    /// managed); `None` when deployments are managed but none has a value (all of them unmeasured).
    pub fn data_age_millis(&self, now: UnixMillis) -> Option<i64> {
        let newest = match self
            .deployments
            .values()
            .map(|d| d.inputs.observed_at)
            .max()
        {
            Some(at) => at,
            None if self.unmeasured.is_empty() => self.measured_at,
            None => return None,
        };
        Some((now - newest).max(0))
    }

    /// Whether a metric read can be answered with a value: some input is within the fail-safe's error limit
    /// (or nothing is managed and the measurements are that fresh).
    pub fn can_serve(&self, now: UnixMillis) -> bool {
        self.data_age_millis(now)
            .is_some_and(|age| age <= self.failsafe.error_after_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staleness_is_measured_in_intervals() {
        let s = Snapshot {
            collected_at: 1_000,
            measured_at: 1_000,
            interval_millis: 60_000,
            ..Default::default()
        };
        assert!(!s.is_stale(1_000 + 180_000, 3));
        assert!(s.is_stale(1_000 + 180_001, 3));
        assert_eq!(s.age_millis(0), 0);
        // A snapshot computed now from usage measured long ago is as stale as that usage.
        let reused = Snapshot {
            collected_at: 1_000 + 180_000,
            measured_at: 1_000,
            interval_millis: 60_000,
            ..Default::default()
        };
        assert!(reused.is_stale(1_000 + 180_001, 3));
        assert_eq!(reused.age_millis(1_000 + 180_001), 1);
    }

    #[test]
    fn readiness_follows_the_freshest_servable_value() {
        let mut s = Snapshot {
            collected_at: 1_000_000,
            measured_at: 1_000_000,
            interval_millis: 60_000,
            ..Default::default()
        };
        let limit = s.failsafe.error_after_millis;
        assert!(s.can_serve(1_000_000 + limit));
        assert!(!s.can_serve(1_000_000 + limit + 1));
        let served = |observed_at| ServedDeployment {
            inputs: DeploymentInputs {
                observed_at,
                ..crate::decision::tests::inputs(50.0, 50.0, 50.0)
            },
            raw_percent: 50.0,
            smart_percent: 50.0,
            explanation: crate::decision::decide(
                &crate::decision::tests::inputs(50.0, 50.0, 50.0),
                &Default::default(),
                None,
                Default::default(),
                0,
            )
            .0,
        };
        // The snapshot is new, but the only value in it was measured long ago: nothing can be served.
        s.deployments
            .insert(DeploymentKey::new("shop", "old"), served(0));
        assert_eq!(s.data_age_millis(1_000_000), Some(1_000_000));
        assert!(!s.can_serve(1_000_000));
        s.deployments
            .insert(DeploymentKey::new("shop", "new"), served(990_000));
        assert_eq!(s.data_age_millis(1_000_000), Some(10_000));
        assert!(s.can_serve(1_000_000));
        // Managed deployments, none with a value (a restart while the source answers nothing usable): every
        // read is refused, so the server is not ready, however fresh the snapshot.
        s.deployments.clear();
        s.unmeasured.insert(
            DeploymentKey::new("shop", "new"),
            UsageUnknown {
                cause: UnknownCause::NoSamples,
                reason: "no usable CPU sample".into(),
                since: 1_000_000,
                last_good_at: None,
            },
        );
        assert_eq!(s.data_age_millis(1_000_000), None);
        assert!(!s.can_serve(1_000_000));
    }
}
