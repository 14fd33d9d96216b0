//! The cluster as the data plane sees it on one tick (deployments, pods, nodes from Kubernetes; usage from
//! Prometheus), and the pure join that turns it into per-deployment [`DeploymentInputs`].
//!
//! The adapters fill these plain structs (`k8s/` from its watch caches, `prom/` from batched PromQL); everything
//! that decides what the numbers mean lives here, so it is unit-tested without a cluster.

use std::collections::{BTreeMap, HashMap};

use super::model::{
    DeploymentInputs, DeploymentKey, NodeInputs, Observation, PoolInputs, UnixMillis, UnknownCause,
    Unmeasured,
};

use super::contract::{
    ANNOTATION_PREFIX, ENABLED_ANNOTATION, RECENT_START_SECONDS, STARTUP_FILTER_ANNOTATION,
};

/// One requirement of a node selector term (required node affinity), as in `NodeSelectorRequirement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
    pub operator: String,
    /// Values.
    pub values: Vec<String>,
}

/// A Deployment the data plane knows about.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentInfo {
    /// Namespace and name.
    pub key: DeploymentKey,
    /// `spec.replicas`.
    pub replicas: u32,
    /// Metadata annotations.
    pub annotations: BTreeMap<String, String>,
    /// Pod template `nodeSelector`.
    pub node_selector: BTreeMap<String, String>,
    /// Pod template required node affinity: OR of terms, each an AND of requirements.
    pub required_affinity: Vec<Vec<NodeRequirement>>,
    /// CPU request of one pod from the template as the HPA divides by it (`pod::PodSpec::hpa_request`), milli.
    pub pod_cpu_request_milli: i64,
    /// Memory request of one pod from the template, the same way, bytes.
    pub pod_memory_request_bytes: i64,
    /// Target value of the HPA that uses our metric for this deployment, percent, if any.
    pub hpa_target_percent: Option<f64>,
    /// `spec.maxReplicas` of that HPA, if any.
    pub hpa_max_replicas: Option<u32>,
}

impl DeploymentInfo {
    /// Managed: referenced by an HPA on our metric, or annotated `smart-autoscaler.io/enabled: "true"`.
    pub fn managed(&self) -> bool {
        self.hpa_target_percent.is_some()
            || self
                .annotations
                .get(ENABLED_ANNOTATION)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }
}

/// A Pod, with its owner chain resolved to a Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct PodInfo {
    /// Namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// Owning Deployment (through its ReplicaSet), if any.
    pub deployment: Option<String>,
    /// Node the pod is bound to.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: String,
    /// Ready condition is True.
    pub ready: bool,
    /// `status.startTime`.
    pub started_at: Option<UnixMillis>,
    /// CPU request as the HPA divides by it (`pod::PodSpec::hpa_request`: containers plus sidecars, a limit
    /// standing in for a missing request), milli-cores.
    pub cpu_request_milli: i64,
    /// Memory request, the same way, bytes.
    pub memory_request_bytes: i64,
    /// `metadata.deletionTimestamp` is set.
    pub terminating: bool,
    /// The scheduler could not place it: condition `PodScheduled` is False with reason `Unschedulable`.
    pub unschedulable: bool,
}

/// A Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Ready condition is True.
    pub ready: bool,
    /// `spec.unschedulable` is not set (not cordoned).
    pub schedulable: bool,
    /// Allocatable CPU, milli-cores.
    pub allocatable_cpu_milli: i64,
}

/// What Kubernetes says on one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    /// Deployments (managed or not).
    pub deployments: Vec<DeploymentInfo>,
    /// Pods.
    pub pods: Vec<PodInfo>,
    /// Nodes.
    pub nodes: Vec<NodeInfo>,
}

/// `(namespace, pod)`.
pub type PodRef = (String, String);

/// What Prometheus says on one tick.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Pod CPU usage rate over 10 minutes, cores.
    pub pod_cpu_10m: HashMap<PodRef, f64>,
    /// Pod CPU usage rate over 5 minutes, cores.
    pub pod_cpu_5m: HashMap<PodRef, f64>,
    /// Pod CPU usage rate over the shortest window the scrape interval allows (1-2 minutes), cores.
    pub pod_cpu_1m: HashMap<PodRef, f64>,
    /// Pod memory working set, bytes.
    pub pod_memory_bytes: HashMap<PodRef, f64>,
    /// Node CPU utilization, percent.
    pub node_cpu_percent: HashMap<String, f64>,
    /// Samples the source answered with that cannot be a measurement (NaN, infinite, negative) and were dropped.
    pub rejected_samples: usize,
}

/// Settings of the join.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinConfig {
    /// Startup filter for deployments without the annotation, seconds.
    pub default_startup_filter_seconds: u32,
    /// Base target for deployments managed by annotation only, percent.
    pub default_target_percent: f64,
    /// Length of the short CPU window (`pod_cpu_1m`'s query), seconds.
    pub short_window_seconds: u32,
}

impl Default for JoinConfig {
    fn default() -> Self {
        JoinConfig {
            default_startup_filter_seconds: 60,
            default_target_percent: 70.0,
            short_window_seconds: DEFAULT_SHORT_WINDOW_SECONDS,
        }
    }
}

/// Millicores by which a pod's 1-minute CPU rate swings with no change in load (cgroup accounting and scrape
/// timing). Against a 1-core request that is noise; against a 25m request it is a 40% swing.
pub const CPU_JITTER_MILLI: f64 = 10.0;

/// The smallest margin by which the 1-minute rate must exceed the smoothed one to count as a rise: the HPA's
/// own tolerance, below which a rise would not move it anyway.
pub const MIN_FAST_RISE_MARGIN: f64 = 0.1;

/// How far above the smoothed rate a pod's 1-minute rate must be to count as a rise rather than jitter:
/// [`CPU_JITTER_MILLI`] relative to its request, and never less than [`MIN_FAST_RISE_MARGIN`].
pub fn fast_rise_margin(pod_cpu_request_milli: i64) -> f64 {
    if pod_cpu_request_milli > 0 {
        (CPU_JITTER_MILLI / pod_cpu_request_milli as f64).max(MIN_FAST_RISE_MARGIN)
    } else {
        MIN_FAST_RISE_MARGIN
    }
}

/// Length of the default short CPU window (`[1m]` in the default PromQL), seconds.
pub const DEFAULT_SHORT_WINDOW_SECONDS: u32 = 60;

/// Short CPU windows the usage estimate can correct, seconds: at least one 15 s scrape, and short enough that its
/// centre stays well ahead of the 5-minute window's.
pub const SHORT_WINDOW_SECONDS: std::ops::RangeInclusive<u32> = 15..=240;

/// The usage the decision core works from, from a pod's 10-minute, 5-minute and short-window rates (the short
/// window is `short_window_seconds` long; outside [`SHORT_WINDOW_SECONDS`] it is corrected as if at its nearer end).
///
/// Rising load (the short rate more than `margin` above the smoothed rate, see [`fast_rise_margin`]): the short
/// rate plus the lag correction for a linear rise. A window's mean lags the present by half its length, so the
/// short mean lags by `w/2` and its excess over the 5-minute mean is the slope times `150 s - w/2`; adding that
/// excess times `(w/2) / (150 s - w/2)` gives the level now (a quarter for a 1-minute window, two thirds for 2
/// minutes). It is not a forecast, and it makes the HPA see every rise at least as soon as it would on plain
/// CPU, ramps as well as steps.
///
/// Otherwise: the lowest of the smoothed rate (70% of the 10-minute plus 30% of the 5-minute), the 5-minute and
/// the short rate. Noise that lifts the short windows inside the margin never lifts the value, which is what
/// keeps jitter from scaling up; a fall shows at once instead of holding idle pods for ten minutes, and the HPA's
/// own 5-minute downscale stabilization (the highest recommendation of the last five minutes wins) keeps a
/// noisy fall from flapping it.
pub fn estimate_usage(
    rate_10m: f64,
    rate_5m: f64,
    rate_short: Option<f64>,
    short_window_seconds: f64,
    margin: f64,
) -> f64 {
    let smooth = (0.7 * rate_10m + 0.3 * rate_5m).min(rate_5m);
    let half = short_window_seconds.clamp(
        f64::from(*SHORT_WINDOW_SECONDS.start()),
        f64::from(*SHORT_WINDOW_SECONDS.end()),
    ) / 2.0;
    let lag_correction = half / (150.0 - half);
    match rate_short.filter(|r| r.is_finite()) {
        Some(fast) if fast > smooth * (1.0 + margin) => {
            fast + ((fast - rate_5m) * lag_correction).max(0.0)
        }
        Some(fast) => smooth.min(fast),
        None => smooth,
    }
}

fn requirement_holds(r: &NodeRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let num = |v: &str| v.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| r.values.contains(v)),
        "NotIn" => value.is_none_or(|v| !r.values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => value
            .and_then(|v| num(v))
            .zip(r.values.first().and_then(|v| num(v)))
            .is_some_and(|(a, b)| a > b),
        "Lt" => value
            .and_then(|v| num(v))
            .zip(r.values.first().and_then(|v| num(v)))
            .is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

/// Whether a deployment's pods may run on `node` (nodeSelector and required node affinity; taints are left to
/// the scheduler).
pub fn node_matches(deployment: &DeploymentInfo, node: &NodeInfo) -> bool {
    let selector_ok = deployment
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let affinity_ok = deployment.required_affinity.is_empty()
        || deployment
            .required_affinity
            .iter()
            .any(|term| term.iter().all(|r| requirement_holds(r, &node.labels)));
    selector_ok && affinity_ok
}

fn pool_name(d: &DeploymentInfo) -> String {
    if d.node_selector.is_empty() && d.required_affinity.is_empty() {
        return "all".to_string();
    }
    let mut parts: Vec<String> = d
        .node_selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !d.required_affinity.is_empty() {
        parts.push("affinity".to_string());
    }
    parts.join(",")
}

/// Joins the cluster and usage into one observation: per managed deployment, CPU utilization over pods past the
/// startup filter ([`estimate_usage`] of each pod's rates, summed, over the current requests of those pods),
/// memory utilization, pod counts, recent starts, and node-pool pressure. `now` is when the usage was measured.
///
/// A managed deployment none of whose pods past the startup filter has a usable CPU sample is listed as
/// [`Unmeasured`] with the reason, not given a utilization of zero: unknown is not idle.
pub fn join(
    cluster: &ClusterSnapshot,
    usage: &Usage,
    now: UnixMillis,
    config: &JoinConfig,
) -> Observation {
    // Requested CPU per node from bound, non-terminated pods.
    let mut requested: HashMap<&str, i64> = HashMap::new();
    for p in &cluster.pods {
        if let Some(node) = &p.node
            && !matches!(p.phase.as_str(), "Succeeded" | "Failed")
        {
            *requested.entry(node.as_str()).or_default() += p.cpu_request_milli;
        }
    }
    let nodes: Vec<NodeInputs> = cluster
        .nodes
        .iter()
        .map(|n| NodeInputs {
            name: n.name.clone(),
            labels: n.labels.clone(),
            ready: n.ready,
            schedulable: n.schedulable,
            allocatable_cpu_milli: n.allocatable_cpu_milli,
            requested_cpu_milli: requested.get(n.name.as_str()).copied().unwrap_or(0),
            measured_cpu_percent: usage
                .node_cpu_percent
                .get(&n.name)
                .copied()
                .filter(|v| v.is_finite()),
        })
        .collect();

    let mut pods_by_deployment: HashMap<(&str, &str), Vec<&PodInfo>> = HashMap::new();
    for p in &cluster.pods {
        if let Some(d) = &p.deployment
            && !p.terminating
            && !matches!(p.phase.as_str(), "Succeeded" | "Failed")
        {
            pods_by_deployment
                .entry((p.namespace.as_str(), d.as_str()))
                .or_default()
                .push(p);
        }
    }

    let mut unmeasured = Vec::new();
    let mut deployments = Vec::new();
    for d in cluster.deployments.iter().filter(|d| d.managed()) {
        let filter_s = d
            .annotations
            .get(STARTUP_FILTER_ANNOTATION)
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(config.default_startup_filter_seconds);
        let pods = pods_by_deployment
            .get(&(d.key.namespace.as_str(), d.key.name.as_str()))
            .cloned()
            .unwrap_or_default();
        let age = |p: &PodInfo| p.started_at.map(|s| (now - s) / 1000);
        let past_filter: Vec<&&PodInfo> = pods
            .iter()
            .filter(|p| p.ready && age(p).is_some_and(|a| a >= filter_s as i64))
            .collect();
        let key = |p: &PodInfo| (p.namespace.clone(), p.name.clone());
        let (mut cpu, mut request, mut mem, mut mem_request) = (0.0, 0i64, 0.0, 0i64);
        let mut with_samples = 0;
        for p in &past_filter {
            let k = key(p);
            let (c10, c5) = (usage.pod_cpu_10m.get(&k), usage.pod_cpu_5m.get(&k));
            if c10.is_none() && c5.is_none() {
                continue;
            }
            let c10 = c10.or(c5).copied().unwrap_or(0.0);
            let c5 = c5.or(Some(&c10)).copied().unwrap_or(0.0);
            cpu += estimate_usage(
                c10,
                c5,
                usage.pod_cpu_1m.get(&k).copied(),
                f64::from(config.short_window_seconds),
                fast_rise_margin(p.cpu_request_milli),
            );
            request += p.cpu_request_milli;
            with_samples += 1;
            if let Some(m) = usage.pod_memory_bytes.get(&k) {
                mem += m;
                mem_request += p.memory_request_bytes;
            }
        }
        if with_samples == 0 || request <= 0 {
            let ready = pods.iter().filter(|p| p.ready).count();
            let (cause, reason) = if past_filter.is_empty() {
                (
                    UnknownCause::NoMeasurablePods,
                    format!(
                        "no ready pod past its {filter_s}s startup filter ({} pods, {ready} ready)",
                        pods.len()
                    ),
                )
            } else if with_samples == 0 {
                (
                    UnknownCause::NoSamples,
                    format!(
                        "no usable CPU sample from the metrics source for any of its {} ready pods past \
                         the startup filter (no series, or only NaN, infinite or negative values)",
                        past_filter.len()
                    ),
                )
            } else {
                (
                    UnknownCause::NoCpuRequest,
                    format!(
                        "its {with_samples} measured pods request no CPU, so utilization is undefined"
                    ),
                )
            };
            unmeasured.push(Unmeasured {
                key: d.key.clone(),
                cause,
                reason,
            });
            continue;
        }
        let utilization = cpu * 1000.0 / request as f64 * 100.0;
        let pool: Vec<&NodeInputs> = nodes
            .iter()
            .zip(&cluster.nodes)
            .filter(|(_, info)| info.ready && info.schedulable && node_matches(d, info))
            .map(|(n, _)| n)
            .collect();
        let allocatable: i64 = pool.iter().map(|n| n.allocatable_cpu_milli).sum();
        let measured_weight: f64 = pool
            .iter()
            .filter_map(|n| {
                n.measured_cpu_percent
                    .map(|m| m * n.allocatable_cpu_milli as f64)
            })
            .sum();
        let measured_alloc: i64 = pool
            .iter()
            .filter(|n| n.measured_cpu_percent.is_some())
            .map(|n| n.allocatable_cpu_milli)
            .sum();
        let ready_pods = pods.iter().filter(|p| p.ready).count() as u32;
        deployments.push(DeploymentInputs {
            key: d.key.clone(),
            base_target_percent: d
                .hpa_target_percent
                .unwrap_or(config.default_target_percent),
            cpu_utilization_percent: utilization,
            memory_utilization_percent: (mem_request > 0).then(|| mem / mem_request as f64 * 100.0),
            pod_cpu_request_milli: d.pod_cpu_request_milli,
            pod_memory_request_bytes: d.pod_memory_request_bytes,
            ready_pods_by_node: pods
                .iter()
                .filter(|p| p.ready)
                .filter_map(|p| p.node.clone())
                .fold(BTreeMap::new(), |mut m, node| {
                    *m.entry(node).or_insert(0) += 1;
                    m
                }),
            replicas: d.replicas,
            ready_pods,
            starting_pods: pods.len() as u32 - past_filter.len() as u32,
            max_replicas: d.hpa_max_replicas,
            unschedulable_pods: pods.iter().filter(|p| p.unschedulable).count() as u32,
            recent_pod_starts: pods
                .iter()
                .filter(|p| age(p).is_some_and(|a| a < RECENT_START_SECONDS))
                .count() as u32,
            startup_filter_seconds: filter_s,
            pool: PoolInputs {
                name: pool_name(d),
                measured_cpu_percent: (measured_alloc > 0)
                    .then(|| measured_weight / measured_alloc as f64),
                requested_cpu_percent: if allocatable > 0 {
                    pool.iter().map(|n| n.requested_cpu_milli).sum::<i64>() as f64
                        / allocatable as f64
                        * 100.0
                } else {
                    0.0
                },
                nodes: pool.len() as u32,
            },
            annotations: d
                .annotations
                .iter()
                .filter(|(k, _)| k.starts_with(ANNOTATION_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            window_seconds: 600,
            observed_at: now,
        });
    }
    Observation {
        at: now,
        measured_at: now,
        deployments,
        unmeasured,
        nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_000_000_000;

    fn node(name: &str, pool: &str, cpu: i64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            labels: BTreeMap::from([("pool".to_string(), pool.to_string())]),
            ready: true,
            schedulable: true,
            allocatable_cpu_milli: cpu,
        }
    }

    fn pod(name: &str, node: &str, age_s: i64, request: i64) -> PodInfo {
        PodInfo {
            namespace: "shop".into(),
            name: name.into(),
            deployment: Some("api".into()),
            node: Some(node.into()),
            phase: "Running".into(),
            ready: true,
            started_at: Some(NOW - age_s * 1000),
            cpu_request_milli: request,
            memory_request_bytes: 1 << 28,
            terminating: false,
            unschedulable: false,
        }
    }

    fn deployment() -> DeploymentInfo {
        DeploymentInfo {
            key: DeploymentKey::new("shop", "api"),
            replicas: 3,
            annotations: BTreeMap::from([(
                STARTUP_FILTER_ANNOTATION.to_string(),
                "120".to_string(),
            )]),
            node_selector: BTreeMap::from([("pool".to_string(), "general".to_string())]),
            required_affinity: vec![],
            pod_cpu_request_milli: 500,
            pod_memory_request_bytes: 1 << 28,
            hpa_target_percent: Some(70.0),
            hpa_max_replicas: Some(10),
        }
    }

    fn cluster() -> ClusterSnapshot {
        ClusterSnapshot {
            deployments: vec![deployment()],
            pods: vec![
                pod("a", "n1", 3600, 500),
                pod("b", "n2", 3600, 500),
                pod("c", "n1", 30, 500),
            ],
            nodes: vec![
                node("n1", "general", 4000),
                node("n2", "general", 4000),
                node("n3", "compute", 8000),
            ],
        }
    }

    fn usage() -> Usage {
        let k = |p: &str| ("shop".to_string(), p.to_string());
        Usage {
            pod_cpu_10m: HashMap::from([(k("a"), 0.3), (k("b"), 0.4), (k("c"), 1.5)]),
            pod_cpu_5m: HashMap::from([(k("a"), 0.4), (k("b"), 0.4), (k("c"), 1.5)]),
            // b's 1-minute rate is a real rise (0.8 > 1.1 × 0.4); a's is noise within the margin (0.35 < 1.1 × 0.33).
            pod_cpu_1m: HashMap::from([(k("a"), 0.35), (k("b"), 0.8)]),
            pod_memory_bytes: HashMap::from([(k("a"), 2f64.powi(27)), (k("b"), 2f64.powi(27))]),
            node_cpu_percent: HashMap::from([
                ("n1".to_string(), 50.0),
                ("n2".to_string(), 70.0),
                ("n3".to_string(), 10.0),
            ]),
            rejected_samples: 0,
        }
    }

    #[test]
    fn utilization_blends_windows_and_skips_young_pods() {
        let obs = join(&cluster(), &usage(), NOW, &JoinConfig::default());
        let d = &obs.deployments[0];
        // a: 0.7*0.3+0.3*0.4 = 0.33; b is rising (short rate 0.8 > 1.1 x 0.4) so, with the default 1-minute
        // window, 0.8 + (0.8 - 0.4)/4 = 0.9 → 1.23 cores over 1000m = 123%;
        // c (30 s old, filter 120 s) is excluded.
        assert!(
            (d.cpu_utilization_percent - 123.0).abs() < 1e-9,
            "{}",
            d.cpu_utilization_percent
        );
        assert_eq!(d.starting_pods, 1);
        assert_eq!(d.recent_pod_starts, 1);
        assert_eq!(d.ready_pods, 3);
        assert_eq!(d.startup_filter_seconds, 120);
        assert!((d.memory_utilization_percent.unwrap() - 50.0).abs() < 1e-9);
        // What the cost model prices by: the pod memory request and the ready pods per node.
        assert_eq!(d.pod_memory_request_bytes, 1 << 28);
        assert_eq!(
            d.ready_pods_by_node,
            BTreeMap::from([("n1".to_string(), 2), ("n2".to_string(), 1)])
        );
    }

    #[test]
    fn the_hpa_limit_and_unschedulable_pods_reach_the_inputs() {
        let mut c = cluster();
        let d = &join(&c, &usage(), NOW, &JoinConfig::default()).deployments[0];
        assert_eq!((d.max_replicas, d.unschedulable_pods), (Some(10), 0));
        // A pod the scheduler could not place: pending, on no node.
        c.pods.push(PodInfo {
            node: None,
            phase: "Pending".into(),
            ready: false,
            started_at: None,
            unschedulable: true,
            ..pod("d", "n1", 0, 500)
        });
        c.deployments[0].hpa_max_replicas = None;
        let d = &join(&c, &usage(), NOW, &JoinConfig::default()).deployments[0];
        assert_eq!((d.max_replicas, d.unschedulable_pods), (None, 1));
    }

    #[test]
    fn usage_estimate_rises_at_once_and_ignores_jitter() {
        let m = MIN_FAST_RISE_MARGIN;
        // Steady: the smoothed rate.
        assert!((estimate_usage(1.0, 1.0, Some(1.0), 60.0, m) - 1.0).abs() < 1e-9);
        assert!((estimate_usage(1.0, 2.0, None, 60.0, m) - 1.3).abs() < 1e-9);
        // Jitter inside the margin never lifts the value.
        assert!((estimate_usage(1.0, 1.05, Some(1.09), 60.0, m) - 1.015).abs() < 1e-9);
        // A rise: the 1-minute rate, corrected for its 30 s lag. Linear ramp of 0.1/min ending at 2.0:
        // 10-minute mean 1.5, 5-minute 1.75, 1-minute 1.95; the level now is 2.0.
        assert!((estimate_usage(1.5, 1.75, Some(1.95), 60.0, m) - 2.0).abs() < 1e-9);
        // A step: no correction below the 1-minute rate.
        assert_eq!(estimate_usage(1.0, 1.0, Some(3.0), 60.0, m), 3.5);
        // A fall shows at once (the HPA's stabilization window holds the pods against flapping).
        assert!((estimate_usage(2.0, 1.5, Some(0.5), 60.0, m) - 0.5).abs() < 1e-9);
        assert!(
            (estimate_usage(1.0, 0.8, None, 60.0, m) - 0.8).abs() < 1e-9,
            "never above the 5-minute rate on a fall"
        );
        assert!((estimate_usage(1.0, 2.0, Some(f64::NAN), 60.0, m) - 1.3).abs() < 1e-9);
        // The margin decides what counts as a rise.
        assert!((estimate_usage(1.0, 1.0, Some(1.3), 60.0, 0.4) - 1.0).abs() < 1e-9);
        assert!(estimate_usage(1.0, 1.0, Some(1.3), 60.0, 0.1) > 1.3);
    }

    #[test]
    fn tiny_requests_need_a_wider_margin() {
        assert!((fast_rise_margin(25) - 0.4).abs() < 1e-9);
        assert!((fast_rise_margin(50) - 0.2).abs() < 1e-9);
        assert_eq!(fast_rise_margin(500), MIN_FAST_RISE_MARGIN);
        assert_eq!(fast_rise_margin(0), MIN_FAST_RISE_MARGIN);
        assert_eq!(fast_rise_margin(-5), MIN_FAST_RISE_MARGIN);
    }

    #[test]
    fn pool_is_the_matching_ready_schedulable_nodes() {
        let mut c = cluster();
        c.nodes[1].schedulable = false; // cordon n2
        let obs = join(&c, &usage(), NOW, &JoinConfig::default());
        let pool = &obs.deployments[0].pool;
        assert_eq!(pool.nodes, 1);
        assert_eq!(pool.measured_cpu_percent, Some(50.0));
        // n1 hosts a and c: 1000m of 4000m.
        assert_eq!(pool.requested_cpu_percent, 25.0);
        assert_eq!(pool.name, "pool=general");
    }

    #[test]
    fn required_affinity_selects_nodes() {
        let mut d = deployment();
        d.node_selector.clear();
        d.required_affinity = vec![vec![NodeRequirement {
            key: "pool".into(),
            operator: "In".into(),
            values: vec!["compute".into()],
        }]];
        assert!(node_matches(&d, &node("x", "compute", 1)));
        assert!(!node_matches(&d, &node("x", "general", 1)));
        d.required_affinity[0][0].operator = "NotIn".into();
        assert!(node_matches(&d, &node("x", "general", 1)));
    }

    #[test]
    fn only_managed_deployments_are_observed() {
        let mut c = cluster();
        c.deployments[0].hpa_target_percent = None;
        assert!(
            join(&c, &usage(), NOW, &JoinConfig::default())
                .deployments
                .is_empty()
        );
        c.deployments[0]
            .annotations
            .insert(ENABLED_ANNOTATION.into(), "true".into());
        let obs = join(&c, &usage(), NOW, &JoinConfig::default());
        assert_eq!(obs.deployments[0].base_target_percent, 70.0);
    }

    #[test]
    fn no_samples_means_unknown_not_zero_load() {
        let obs = join(&cluster(), &Usage::default(), NOW, &JoinConfig::default());
        assert!(obs.deployments.is_empty(), "{:?}", obs.deployments);
        assert_eq!(obs.unmeasured.len(), 1);
        assert_eq!(obs.unmeasured[0].key, DeploymentKey::new("shop", "api"));
        assert_eq!(obs.unmeasured[0].cause, UnknownCause::NoSamples);
        assert!(
            obs.unmeasured[0].reason.contains("no usable CPU sample"),
            "{}",
            obs.unmeasured[0].reason
        );
        assert_eq!(obs.nodes[0].measured_cpu_percent, None);
    }

    #[test]
    fn pods_all_inside_the_startup_filter_are_unknown_too() {
        let mut c = cluster();
        c.deployments[0]
            .annotations
            .insert(STARTUP_FILTER_ANNOTATION.into(), "100000".into());
        let obs = join(&c, &usage(), NOW, &JoinConfig::default());
        assert!(obs.deployments.is_empty());
        assert_eq!(obs.unmeasured[0].cause, UnknownCause::NoMeasurablePods);
        assert!(
            obs.unmeasured[0].reason.contains("startup filter"),
            "{}",
            obs.unmeasured[0].reason
        );
    }

    #[test]
    fn a_pool_without_node_measurements_is_unknown_not_idle() {
        let mut u = usage();
        u.node_cpu_percent.clear();
        let obs = join(&cluster(), &u, NOW, &JoinConfig::default());
        assert_eq!(obs.deployments[0].pool.measured_cpu_percent, None);
        assert!(obs.deployments[0].pool.requested_cpu_percent > 0.0);
    }
}
