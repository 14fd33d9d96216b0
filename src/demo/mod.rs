//! The embedded simulated cluster behind `demo`: two node pools and four deployments with recognisable
//! workloads, so the whole server runs on a fresh machine with no Kubernetes or Prometheus.
//!
//! Only the outside world is simulated. On each tick the cluster produces what serve's adapters produce (the
//! Kubernetes objects as a [`ClusterSnapshot`], the Prometheus rates as a [`Usage`], each pod's windows computed
//! from a short history of its CPU usage) and hands them to [`cluster::join`] with serve's default
//! [`JoinConfig`], so the engine's [`tick::step`](crate::domain::tick::step) computes exactly what `serve` would
//! serve for that cluster. Each deployment is scaled by the native HPA model of [`crate::domain::hpa`] (External
//! `Value` target, default behavior) fed the served value; new pods become Ready after 30 s.
//!
//! Time comes from the injected clock: the wall clock at `--speed 1` (the default), a faster simulated clock
//! above. The workload's daily rhythm is read at the clock's time plus a fixed offset (`--start-at` picks the
//! workload's time of day at start), so the demo reaches its interesting hours within minutes while every time the
//! API reports stays the clock's: the offset shifts what the simulated cluster does, never what "now" is. Noise
//! comes from a seeded RNG. [`DemoCluster::history`] gives the days before the start as the
//! store would have recorded them, so the demo's forecasts are fitted and judged from the first minute, and
//! [`DemoSource`] records every observation in the store as `serve` does. Each HPA scale and each change of a
//! deployment's effective target is logged.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::cluster::{
    self, ClusterSnapshot, DeploymentInfo, JoinConfig, NodeInfo, PodInfo, Usage,
};
use crate::domain::contract::STARTUP_FILTER_ANNOTATION;
use crate::domain::hpa::{self, Behavior, HpaSpec, HpaState};
use crate::domain::model::{DeploymentKey, Observation, Snapshot, UnixMillis};
use crate::engine::{Source, SourceError};
use crate::store::Store;

/// Namespace of the demo deployments.
pub const NAMESPACE: &str = "demo";
/// Label that names a node's pool.
pub const POOL_LABEL: &str = "smart-autoscaler.io/pool";
/// Namespace of the other tenants' pods that share the nodes.
const TENANT_NAMESPACE: &str = "tenants";

/// Seconds a new pod takes to become Ready in the simulation.
const READY_AFTER_S: f64 = 30.0;
/// How much CPU history each pod keeps: the longest window Prometheus is asked for (10 minutes).
const HISTORY_MS: i64 = 10 * 60 * 1000;
/// Memory request of every demo pod, bytes.
const MEMORY_REQUEST_BYTES: i64 = 512 << 20;

/// Start of the first batch window of the day, minutes after midnight.
const BATCH_FIRST_WINDOW_MIN: u32 = 75;
/// Minutes between batch windows.
const BATCH_EVERY_MIN: u32 = 240;
/// Milliseconds in a day: the period of every demo workload.
const DAY_MS: i64 = 86_400_000;

/// One point of seeded history: (time, CPU utilization percent of ready pods, pods), as the store imports it.
pub type HistoryPoint = (UnixMillis, f64, Option<u32>);

/// The shape of a deployment's CPU demand over a simulated day, in cores.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Daily cycle with a sharp morning spike around 09:00 of the workload's day.
    MorningSpike,
    /// Batch windows: heavy for 40 minutes every 4 hours, from 01:15 (so 09:15 is one, half an hour after the
    /// demo's default start).
    Batch,
    /// Small, noisy front-end load.
    Frontend,
    /// Steady business load; each new pod burns a full core for its first 90 seconds (JVM warm-up).
    Jvm,
}

#[derive(Debug, Clone)]
struct SimPod {
    name: String,
    node: String,
    started_at: UnixMillis,
    /// CPU usage in cores at each observation of the last [`HISTORY_MS`], oldest first: what Prometheus'
    /// `rate()` over a window averages.
    cpu: VecDeque<(UnixMillis, f64)>,
}

impl SimPod {
    fn age_s(&self, now: UnixMillis) -> f64 {
        (now - self.started_at) as f64 / 1000.0
    }

    fn ready(&self, now: UnixMillis) -> bool {
        self.age_s(now) >= READY_AFTER_S
    }

    /// Mean usage over the last `window_ms`, as a rate over that window would give it.
    fn rate(&self, now: UnixMillis, window_ms: i64) -> Option<f64> {
        let (sum, n) = self
            .cpu
            .iter()
            .filter(|(t, _)| *t > now - window_ms)
            .fold((0.0, 0usize), |(s, n), (_, c)| (s + c, n + 1));
        (n > 0).then(|| sum / n as f64)
    }
}

#[derive(Debug, Clone)]
struct SimDeployment {
    name: &'static str,
    workload: Workload,
    request_milli: i64,
    /// Target of the HPA on our metric, percent.
    hpa_target: f64,
    hpa: HpaSpec,
    hpa_state: HpaState,
    warmup_s: f64,
    annotations: BTreeMap<String, String>,
    node_selector: BTreeMap<String, String>,
    /// Nodes of its pool, where its pods are placed in turn.
    pool_nodes: Vec<String>,
    /// The current pods, oldest first.
    pods: Vec<SimPod>,
    /// Number of the next pod, for its name.
    next_pod: usize,
}

impl SimDeployment {
    fn start_pod(&mut self, at: UnixMillis) {
        let n = self.next_pod;
        self.next_pod += 1;
        self.pods.push(SimPod {
            name: format!("{}-{n:05}", self.name),
            // Spread over the pool in turn by position; the newest pods go first on scale-down, so this stays even.
            node: self.pool_nodes[self.pods.len() % self.pool_nodes.len()].clone(),
            started_at: at,
            cpu: VecDeque::new(),
        });
    }
}

#[derive(Debug, Clone)]
struct SimNode {
    name: String,
    labels: BTreeMap<String, String>,
    allocatable_milli: i64,
}

/// The simulated cluster.
#[derive(Debug, Clone)]
pub struct DemoCluster {
    deployments: Vec<SimDeployment>,
    nodes: Vec<SimNode>,
    rng: StdRng,
    join: JoinConfig,
    /// Added to the clock's time to read the workloads' daily rhythm (0..1 day).
    workload_offset: i64,
}

fn hour_of_day(now: UnixMillis) -> f64 {
    (now.rem_euclid(DAY_MS)) as f64 / 3_600_000.0
}

impl Workload {
    fn demand_cores(self, now: UnixMillis) -> f64 {
        let h = hour_of_day(now);
        let daily = (std::f64::consts::TAU * (h - 15.0) / 24.0).cos(); // peak mid-afternoon
        match self {
            Workload::MorningSpike => {
                let spike = (-((h - 9.0) / 0.5).powi(2)).exp();
                2.0 + 1.2 * daily + 5.0 * spike
            }
            Workload::Batch => {
                let in_window = (h - f64::from(BATCH_FIRST_WINDOW_MIN) / 60.0)
                    .rem_euclid(f64::from(BATCH_EVERY_MIN) / 60.0)
                    < (40.0 / 60.0);
                if in_window { 9.0 } else { 1.5 }
            }
            Workload::Frontend => 0.12 + 0.06 * daily,
            Workload::Jvm => 2.0 + 0.8 * daily,
        }
    }
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One deployment of the demo: its shape before any pod exists.
struct Template {
    name: &'static str,
    pool: &'static str,
    workload: Workload,
    request_milli: i64,
    hpa_target: f64,
    min_replicas: u32,
    max_replicas: u32,
    warmup_s: f64,
    annotations: &'static [(&'static str, &'static str)],
}

const TEMPLATES: [Template; 4] = [
    Template {
        name: "api-service",
        pool: "general",
        workload: Workload::MorningSpike,
        request_milli: 500,
        hpa_target: 70.0,
        min_replicas: 3,
        max_replicas: 30,
        warmup_s: 0.0,
        annotations: &[],
    },
    Template {
        name: "batch-processor",
        pool: "compute",
        workload: Workload::Batch,
        request_milli: 1000,
        hpa_target: 80.0,
        min_replicas: 2,
        // Too few for a batch window (9 cores want 12 pods at 80%): the HPA sits at maxReplicas with CPU above
        // 85% for the window's 40 minutes, which the anomaly detectors report as persistent high CPU.
        max_replicas: 8,
        warmup_s: 0.0,
        annotations: &[],
    },
    Template {
        name: "web-frontend",
        pool: "general",
        workload: Workload::Frontend,
        request_milli: 25,
        hpa_target: 70.0,
        min_replicas: 4,
        max_replicas: 40,
        warmup_s: 0.0,
        annotations: &[
            ("smart-autoscaler.io/target-utilization", "85"),
            (
                "smart-autoscaler.io/policy",
                "cpu request 25m < 50m: target 85%",
            ),
        ],
    },
    Template {
        name: "java-orders",
        pool: "general",
        workload: Workload::Jvm,
        request_milli: 500,
        hpa_target: 70.0,
        min_replicas: 2,
        max_replicas: 20,
        // Over before the pod leaves its 150 s filter by more than the 1-minute window, so the short rate it is
        // then measured by holds none of it (its 5- and 10-minute rates still do, and serve's estimate takes the
        // lowest when nothing rises).
        warmup_s: 90.0,
        // Opted in to auto-tuning, so the demo shows a tuned target applied (the others show advice).
        annotations: &[
            (STARTUP_FILTER_ANNOTATION, "150"),
            (crate::domain::contract::AUTO_TUNE_ANNOTATION, "true"),
            (
                "smart-autoscaler.io/policy",
                "JVM image: 150s startup filter",
            ),
        ],
    },
];

impl DemoCluster {
    /// Builds the demo cluster with every deployment at the size its load needs at `now` (at least its
    /// minimum), pods started well before `now`, each HPA settled on that size. The workloads follow the clock's
    /// time of day.
    pub fn new(seed: u64, now: UnixMillis) -> Self {
        Self::with_workload_day_at(seed, now, None)
    }

    /// As [`DemoCluster::new`], with the workloads' daily rhythm shifted so that at `now` their time of day is
    /// `minutes` after midnight (`None`: the clock's own time of day). Everything the cluster reports is still
    /// stamped with the clock's time.
    pub fn with_workload_day_at(seed: u64, now: UnixMillis, minutes: Option<u32>) -> Self {
        let workload_offset = minutes.map_or(0, |m| {
            (i64::from(m) * 60_000 - now.rem_euclid(DAY_MS)).rem_euclid(DAY_MS)
        });
        let mut nodes = Vec::new();
        for (pool, count, cpu, instance) in [
            ("general", 3, 8000, "m5.2xlarge"),
            ("compute", 2, 16000, "c5.4xlarge"),
        ] {
            for i in 0..count {
                let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
                nodes.push(SimNode {
                    name: format!("{pool}-{i}"),
                    labels: annotations(&[
                        (POOL_LABEL, pool),
                        ("node.kubernetes.io/instance-type", instance),
                        ("topology.kubernetes.io/zone", zone),
                        ("kubernetes.io/os", "linux"),
                    ]),
                    allocatable_milli: cpu,
                });
            }
        }
        let deployments = TEMPLATES
            .iter()
            .map(|t| {
                let steady = t.workload.demand_cores(now + workload_offset) * 1000.0
                    / (t.request_milli as f64 * t.hpa_target / 100.0);
                let replicas = (steady.ceil() as u32).clamp(t.min_replicas, t.max_replicas);
                let mut d = SimDeployment {
                    name: t.name,
                    workload: t.workload,
                    request_milli: t.request_milli,
                    hpa_target: t.hpa_target,
                    hpa: HpaSpec {
                        min_replicas: t.min_replicas,
                        max_replicas: t.max_replicas,
                        tolerance: 0.1,
                        behavior: Behavior::defaults(),
                    },
                    hpa_state: HpaState::settled(replicas, now),
                    warmup_s: t.warmup_s,
                    annotations: annotations(t.annotations),
                    node_selector: annotations(&[(POOL_LABEL, t.pool)]),
                    pool_nodes: nodes
                        .iter()
                        .filter(|n| n.labels[POOL_LABEL] == t.pool)
                        .map(|n| n.name.clone())
                        .collect(),
                    pods: Vec::new(),
                    next_pod: 0,
                };
                for i in 0..replicas {
                    d.start_pod(now - 3_600_000 - i64::from(replicas - i) * 1000);
                }
                d
            })
            .collect();
        DemoCluster {
            deployments,
            nodes,
            rng: StdRng::seed_from_u64(seed),
            join: JoinConfig::default(),
            workload_offset,
        }
    }

    /// The first clock time at or after `now` when the workloads' time of day is `minutes` after midnight.
    pub fn next_workload_time_of_day(&self, now: UnixMillis, minutes: u32) -> UnixMillis {
        let into_day = self.workload_time(now).rem_euclid(DAY_MS);
        now + (i64::from(minutes) * 60_000 - into_day).rem_euclid(DAY_MS)
    }

    /// The clock time batch-processor's next window starts at (at or after `now`).
    pub fn next_batch_window(&self, now: UnixMillis) -> UnixMillis {
        (BATCH_FIRST_WINDOW_MIN..24 * 60)
            .step_by(BATCH_EVERY_MIN as usize)
            .map(|m| self.next_workload_time_of_day(now, m))
            .min()
            .unwrap_or(now)
    }

    /// The workloads' time (for their daily rhythm) at the clock's `now`.
    pub fn workload_time(&self, now: UnixMillis) -> UnixMillis {
        now + self.workload_offset
    }

    /// Advances the simulated world to `now` and returns what serve's adapters would read from it: the
    /// Kubernetes objects and the Prometheus usage (each pod's 10-minute, 5-minute and short-window CPU rates over
    /// its usage history, its memory, each node's CPU).
    pub fn measure(&mut self, now: UnixMillis) -> (ClusterSnapshot, Usage) {
        let mut objects = ClusterSnapshot::default();
        let mut usage = Usage::default();
        let mut node_usage_milli: HashMap<String, f64> = HashMap::new();
        let short_ms = i64::from(self.join.short_window_seconds) * 1000;
        let workload_now = self.workload_time(now);
        for d in &mut self.deployments {
            let noise = 1.0 + (self.rng.random::<f64>() - 0.5) * 0.1;
            let demand = d.workload.demand_cores(workload_now) * noise;
            let ready_count = d.pods.iter().filter(|p| p.ready(now)).count().max(1) as f64;
            let request = d.request_milli as f64 / 1000.0;
            for p in &mut d.pods {
                let share = if p.ready(now) {
                    demand / ready_count
                } else {
                    0.0
                };
                let warmup = if p.age_s(now) < d.warmup_s {
                    request * 2.0
                } else {
                    0.0
                };
                let cores = share + warmup;
                p.cpu.push_back((now, cores));
                while p.cpu.front().is_some_and(|(t, _)| *t <= now - HISTORY_MS) {
                    p.cpu.pop_front();
                }
                *node_usage_milli.entry(p.node.clone()).or_default() += cores * 1000.0;
                let key = (NAMESPACE.to_string(), p.name.clone());
                for (rates, window_ms) in [
                    (&mut usage.pod_cpu_10m, HISTORY_MS),
                    (&mut usage.pod_cpu_5m, 300_000),
                    (&mut usage.pod_cpu_1m, short_ms),
                ] {
                    if let Some(rate) = p.rate(now, window_ms) {
                        rates.insert(key.clone(), rate);
                    }
                }
                let busy = (cores / request).min(1.5);
                usage
                    .pod_memory_bytes
                    .insert(key, MEMORY_REQUEST_BYTES as f64 * (0.55 + 0.10 * busy));
                objects.pods.push(PodInfo {
                    namespace: NAMESPACE.to_string(),
                    name: p.name.clone(),
                    deployment: Some(d.name.to_string()),
                    node: Some(p.node.clone()),
                    phase: "Running".to_string(),
                    ready: p.ready(now),
                    started_at: Some(p.started_at),
                    cpu_request_milli: d.request_milli,
                    memory_request_bytes: MEMORY_REQUEST_BYTES,
                    terminating: false,
                    unschedulable: false,
                });
            }
            objects.deployments.push(DeploymentInfo {
                key: DeploymentKey::new(NAMESPACE, d.name),
                replicas: d.pods.len() as u32,
                annotations: d.annotations.clone(),
                node_selector: d.node_selector.clone(),
                required_affinity: Vec::new(),
                pod_cpu_request_milli: d.request_milli,
                pod_memory_request_bytes: MEMORY_REQUEST_BYTES,
                hpa_target_percent: Some(d.hpa_target),
                hpa_max_replicas: Some(d.hpa.max_replicas),
            });
        }

        let h = hour_of_day(workload_now);
        for n in &self.nodes {
            // Other tenants' load on the node, with its own daily rhythm, and their pods' requests: light enough
            // that the pools' pressure moves through the day with the demo's own load (idle at night, high
            // when api-service peaks at 09:00) instead of sitting at its ceiling.
            let background = n.allocatable_milli as f64
                * (0.2 + 0.12 * (std::f64::consts::TAU * (h - 14.0) / 24.0).cos());
            objects.pods.push(PodInfo {
                namespace: TENANT_NAMESPACE.to_string(),
                name: format!("tenant-{}", n.name),
                deployment: None,
                node: Some(n.name.clone()),
                phase: "Running".to_string(),
                ready: true,
                started_at: Some(now - DAY_MS),
                cpu_request_milli: (background * 1.1) as i64,
                memory_request_bytes: 0,
                terminating: false,
                unschedulable: false,
            });
            let pods = node_usage_milli.get(&n.name).copied().unwrap_or_default();
            usage.node_cpu_percent.insert(
                n.name.clone(),
                ((pods + background) / n.allocatable_milli as f64 * 100.0).min(100.0),
            );
            objects.nodes.push(NodeInfo {
                name: n.name.clone(),
                labels: n.labels.clone(),
                ready: true,
                schedulable: true,
                allocatable_cpu_milli: n.allocatable_milli,
            });
        }
        (objects, usage)
    }

    /// The `days` before `now` as the store would have recorded them, one point every five minutes per
    /// deployment: (time, CPU utilization percent of ready pods, pods), with each deployment at the replica
    /// count its HPA settles on for that load (no noise, no warm-up). Seeded into the demo's store at start.
    pub fn history(&self, now: UnixMillis, days: u32) -> Vec<(DeploymentKey, Vec<HistoryPoint>)> {
        const STEP: i64 = 5 * 60 * 1000;
        let from = now - i64::from(days) * DAY_MS;
        self.deployments
            .iter()
            .map(|d| {
                let points = (0..)
                    .map(|i| from - from.rem_euclid(STEP) + i * STEP)
                    .take_while(|t| *t < now)
                    .map(|t| {
                        let demand_milli =
                            d.workload.demand_cores(t + self.workload_offset) * 1000.0;
                        let request = d.request_milli as f64;
                        let pods = ((demand_milli / (request * d.hpa_target / 100.0)).ceil()
                            as u32)
                            .clamp(d.hpa.min_replicas, d.hpa.max_replicas);
                        (
                            t,
                            demand_milli / (f64::from(pods) * request) * 100.0,
                            Some(pods),
                        )
                    })
                    .collect();
                (DeploymentKey::new(NAMESPACE, d.name), points)
            })
            .collect()
    }

    /// Observes the simulated cluster at `now`: [`DemoCluster::measure`] joined as `serve` joins what its
    /// adapters read.
    pub fn observe_at(&mut self, now: UnixMillis) -> Observation {
        let (objects, usage) = self.measure(now);
        cluster::join(&objects, &usage, now, &self.join)
    }

    /// Runs every deployment's HPA ([`hpa::external_value_proposal`] then [`hpa::normalize`]) on what was
    /// served, and starts or removes pods to the count it writes. A deployment whose usage is unknown on this
    /// tick is left alone, as the HPA does when its metric fails.
    pub fn apply_hpa(&mut self, snapshot: &Snapshot) {
        let now = snapshot.collected_at;
        for d in &mut self.deployments {
            let key = DeploymentKey::new(NAMESPACE, d.name);
            if snapshot.unmeasured.contains_key(&key) {
                continue;
            }
            let Some(served) = snapshot.deployments.get(&key) else {
                continue;
            };
            let current = d.pods.len() as u32;
            let ready = d.pods.iter().filter(|p| p.ready(now)).count() as u32;
            let proposal = hpa::external_value_proposal(
                served.smart_percent,
                d.hpa_target,
                ready,
                current,
                d.hpa.tolerance,
            );
            let desired = hpa::normalize(&d.hpa, &mut d.hpa_state, now, current, proposal);
            if desired != current {
                tracing::info!(
                    deployment = d.name,
                    from = current,
                    to = desired,
                    served = format_args!("{:.1}", served.smart_percent),
                    target = d.hpa_target,
                    "demo HPA scaled"
                );
            }
            while (d.pods.len() as u32) < desired {
                d.start_pod(now);
            }
            // The newest pods go first, as the ReplicaSet controller prefers.
            d.pods.truncate(desired as usize);
        }
    }
}

/// [`DemoCluster`] as an engine source: it records each observation, and each change of effective target as a
/// decision, in the store when it has one (as `serve`'s source does, so the forecasts learn from the demo's ticks
/// and the dashboard charts the decisions) and logs effective-target changes.
pub struct DemoSource {
    /// The simulated cluster.
    pub cluster: DemoCluster,
    store: Option<Store>,
    targets: HashMap<DeploymentKey, f64>,
}

impl DemoSource {
    /// A source over `cluster`, with no store.
    pub fn new(cluster: DemoCluster) -> Self {
        DemoSource {
            cluster,
            store: None,
            targets: HashMap::new(),
        }
    }

    /// Records every observation in `store`.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }
}

impl Source for DemoSource {
    async fn observe(&mut self, now: UnixMillis) -> Result<Observation, SourceError> {
        let observation = self.cluster.observe_at(now);
        if let Some(store) = &self.store
            && let Err(e) = store.record_tick(&observation).await
        {
            // History is for forecasts; serving goes on without it, as in serve.
            tracing::warn!(error = %e, "demo: recording the tick in the store failed");
        }
        Ok(observation)
    }

    fn served(&mut self, snapshot: &Snapshot) {
        let mut changed = Vec::new();
        for (key, served) in &snapshot.deployments {
            let target = served.explanation.effective_target_percent;
            let before = self.targets.insert(key.clone(), target);
            // As serve's source does: a decision is stored when the effective target changes (the dashboard
            // charts them).
            if before.is_none_or(|b| (b - target).abs() >= 1e-9)
                && let Ok(json) = serde_json::to_vec(&served.explanation)
            {
                changed.push((key.clone(), json));
            }
            if before.is_some_and(|b| (b - target).abs() >= 0.05) {
                tracing::info!(
                    deployment = %key.name,
                    from = format_args!("{:.1}", before.unwrap_or_default()),
                    to = format_args!("{target:.1}"),
                    pressure_factor = format_args!("{:.2}", served.explanation.pressure.factor),
                    "demo effective target changed"
                );
            }
        }
        if let Some(store) = self.store.clone()
            && !changed.is_empty()
        {
            let at = snapshot.collected_at;
            tokio::spawn(async move {
                for (key, json) in changed {
                    if let Err(e) = store.put_decision(&key, at, &json).await {
                        tracing::warn!(error = %e, deployment = %key, "demo: recording a decision failed");
                    }
                }
            });
        }
        self.cluster.apply_hpa(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::decision::DecisionConfig;
    use crate::domain::tick::{self, TickStates};
    use std::time::Duration;

    const HOUR: i64 = 3_600_000;

    fn run(cluster: &mut DemoCluster, from: UnixMillis, ticks: i64, step: i64) -> Snapshot {
        let mut last = Snapshot::default();
        let config = DecisionConfig::default();
        let mut states = Default::default();
        for i in 0..ticks {
            let obs = cluster.observe_at(from + i * step);
            last = tick::step(
                obs,
                Duration::from_millis(step as u64),
                &config,
                &mut states,
                None,
                None,
                Some(&last),
            );
            cluster.apply_hpa(&last);
        }
        last
    }

    #[test]
    fn has_the_documented_shape() {
        let mut c = DemoCluster::new(1, 0);
        let obs = c.observe_at(HOUR);
        let names: Vec<&str> = obs
            .deployments
            .iter()
            .map(|d| d.key.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "api-service",
                "batch-processor",
                "web-frontend",
                "java-orders"
            ]
        );
        assert!(obs.unmeasured.is_empty(), "{:?}", obs.unmeasured);
        assert_eq!(obs.nodes.len(), 5);
        let pools: std::collections::BTreeSet<&str> = obs
            .nodes
            .iter()
            .map(|n| n.labels[POOL_LABEL].as_str())
            .collect();
        assert_eq!(pools.len(), 2);
        let web = &obs.deployments[2];
        assert_eq!(web.pod_cpu_request_milli, 25);
        for d in &obs.deployments {
            assert!(d.cpu_utilization_percent.is_finite() && d.cpu_utilization_percent > 0.0);
            let measured = d.pool.measured_cpu_percent.unwrap();
            assert!(measured > 0.0 && measured <= 100.0);
            assert!(d.memory_utilization_percent.is_some());
        }
        // Three deployments share the general pool, batch-processor has the compute pool to itself.
        assert_eq!(obs.deployments[0].pool.nodes, 3);
        assert_eq!(obs.deployments[1].pool.nodes, 2);
    }

    #[test]
    fn morning_spike_scales_api_service_up() {
        let day = 20 * 24 * HOUR;
        let mut c = DemoCluster::new(7, day + 5 * HOUR);
        let night = run(&mut c, day + 5 * HOUR, 60, 60_000);
        let night_replicas = night.deployments[&DeploymentKey::new(NAMESPACE, "api-service")]
            .inputs
            .replicas;
        let spike = run(&mut c, day + 8 * HOUR, 61, 60_000);
        let spike_replicas = spike.deployments[&DeploymentKey::new(NAMESPACE, "api-service")]
            .inputs
            .replicas;
        assert!(
            spike_replicas > night_replicas + 3,
            "night {night_replicas}, spike {spike_replicas}"
        );
    }

    #[test]
    fn jvm_warmup_is_filtered_from_utilization() {
        let mut c = DemoCluster::new(3, 0);
        let now = 12 * HOUR;
        let before = c.observe_at(now);
        // A freshly started pod burns CPU, but is inside the startup filter.
        c.deployments[3].start_pod(now - 60_000);
        let after = c.observe_at(now + 1);
        let util = |o: &Observation| o.deployments[3].cpu_utilization_percent;
        assert!((util(&after) - util(&before)).abs() < util(&before) * 0.5);
        assert_eq!(after.deployments[3].starting_pods, 1);
        assert_eq!(after.deployments[3].recent_pod_starts, 1);
        // Its warm-up is over before it leaves the filter, and the short window then shows it at its share.
        let mut t = now + 1;
        while t < now + 200_000 {
            t += 15_000;
            c.observe_at(t);
        }
        let settled = c.observe_at(t);
        assert_eq!(settled.deployments[3].starting_pods, 0);
        assert!(
            (util(&settled) - util(&before)).abs() < util(&before) * 0.5,
            "before {}, after the filter {}",
            util(&before),
            util(&settled)
        );
    }

    #[test]
    fn same_seed_same_run() {
        let a = DemoCluster::new(9, 0).observe_at(HOUR);
        let b = DemoCluster::new(9, 0).observe_at(HOUR);
        assert_eq!(a, b);
    }

    /// Issue 15's proof: on every tick of a demo run through a morning spike (pods starting, the HPA scaling),
    /// the snapshot the demo publishes is the one `serve`'s path computes from the same Kubernetes objects and
    /// Prometheus usage: `cluster::join` with serve's default join settings, then `tick::step`, as
    /// `DataPlaneSource` and `Engine` do. If the demo built its inputs any other way, they would differ.
    #[tokio::test]
    async fn demo_serves_what_serve_computes_from_the_same_cluster_state() {
        let start = 20 * 24 * HOUR + 8 * HOUR + 15 * 60_000;
        let interval = Duration::from_secs(15);
        // `serve`'s join settings at its flag defaults (`--default-startup-filter 60s`, `--default-target 70`,
        // the default PromQL's `[1m]` short window).
        let serve_join = JoinConfig {
            default_startup_filter_seconds: 60,
            default_target_percent: 70.0,
            short_window_seconds: cluster::DEFAULT_SHORT_WINDOW_SECONDS,
        };
        let config = DecisionConfig::default();
        let mut demo = DemoSource::new(DemoCluster::new(5, start));
        let (mut demo_states, mut serve_states) = (TickStates::default(), TickStates::default());
        let (mut demo_last, mut serve_last) = (Snapshot::default(), Snapshot::default());
        let mut replicas_seen = std::collections::BTreeSet::new();
        let mut starting_seen = 0;
        for tick in 0..240 {
            let now = start + tick * 15_000;
            // What serve's adapters would read from this cluster on this tick (the world stepped on a copy).
            let (objects, usage) = demo.cluster.clone().measure(now);
            let mut observation = cluster::join(&objects, &usage, now, &serve_join);
            observation.at = now;
            let serve = tick::step(
                observation,
                interval,
                &config,
                &mut serve_states,
                None,
                None,
                Some(&serve_last),
            );

            let observed = demo.observe(now).await.expect("the demo always observes");
            let published = tick::step(
                observed,
                interval,
                &config,
                &mut demo_states,
                None,
                None,
                Some(&demo_last),
            );
            demo.served(&published);

            assert_eq!(
                published.deployments.keys().collect::<Vec<_>>(),
                serve.deployments.keys().collect::<Vec<_>>(),
                "tick {tick}"
            );
            for (key, served) in &published.deployments {
                let expected = &serve.deployments[key];
                assert_eq!(
                    served.smart_percent.to_bits(),
                    expected.smart_percent.to_bits(),
                    "tick {tick}, {key:?}"
                );
                assert_eq!(
                    serde_json::to_value(&served.explanation).unwrap(),
                    serde_json::to_value(&expected.explanation).unwrap(),
                    "tick {tick}, {key:?}"
                );
                replicas_seen.insert((key.name.clone(), served.inputs.replicas));
                starting_seen += served.inputs.starting_pods;
            }
            // Everything else published: inputs, nodes, times, the unmeasured.
            for (key, served) in &published.deployments {
                assert_eq!(
                    serde_json::to_value(served).unwrap(),
                    serde_json::to_value(&serve.deployments[key]).unwrap(),
                    "tick {tick}, {key:?}"
                );
            }
            assert_eq!(published.nodes, serve.nodes, "tick {tick}");
            assert_eq!(
                serde_json::to_value(&published.anomalies).unwrap(),
                serde_json::to_value(&serve.anomalies).unwrap(),
                "tick {tick}"
            );
            assert_eq!(
                (published.collected_at, published.measured_at),
                (serve.collected_at, serve.measured_at)
            );
            assert_eq!(
                serde_json::to_value(published.unmeasured.values().collect::<Vec<_>>()).unwrap(),
                serde_json::to_value(serve.unmeasured.values().collect::<Vec<_>>()).unwrap(),
                "tick {tick}"
            );
            (demo_last, serve_last) = (published, serve);
        }
        // The run is not trivial: the HPA scaled api-service and new pods went through the startup filter.
        let api_sizes = replicas_seen
            .iter()
            .filter(|(name, _)| name == "api-service")
            .count();
        assert!(api_sizes > 3, "{replicas_seen:?}");
        assert!(starting_seen > 0);
        assert_eq!(demo_last.deployments.len(), 4);
        assert!(demo_last.unmeasured.is_empty());
    }

    /// Issue 16: the demo's snapshots show anomalies as they happen. A batch window (9 cores from 00:00 for 40
    /// minutes) jumps far beyond batch-processor's quiet hours and, at its maxReplicas, holds its CPU above 85% well
    /// past 15 minutes; both are in the published snapshot while they hold and end once the window closes.
    #[test]
    fn a_batch_window_shows_a_spike_and_persistent_high_cpu() {
        use crate::domain::anomaly::AnomalyKind;
        // The demo's default start: the workload's day at 08:45 whatever the clock says, so the 09:15 batch
        // window opens 30 minutes in.
        let start = 20 * 24 * HOUR + 13 * HOUR + 7 * 60_000;
        let mut c = DemoCluster::with_workload_day_at(11, start, Some(8 * 60 + 45));
        assert_eq!(c.next_batch_window(start), start + 30 * 60_000);
        let config = DecisionConfig::default();
        let mut states = TickStates::default();
        let mut last = Snapshot::default();
        let batch = DeploymentKey::new(NAMESPACE, "batch-processor");
        let mut seen = std::collections::BTreeMap::new();
        let mut ended = std::collections::BTreeSet::new();
        for i in 0..(120 * 4) {
            let obs = c.observe_at(start + i * 15_000);
            last = tick::step(
                obs,
                Duration::from_secs(15),
                &config,
                &mut states,
                None,
                None,
                Some(&last),
            );
            c.apply_hpa(&last);
            for a in &last.anomalies {
                seen.entry((a.key.name.clone(), a.kind))
                    .or_insert_with(|| a.clone());
                if a.ended_at.is_some() {
                    ended.insert((a.key.name.clone(), a.kind));
                }
            }
        }
        let spike = &seen[&("batch-processor".to_string(), AnomalyKind::CpuSpike)];
        assert!(spike.actual > spike.expected, "{spike:?}");
        assert_eq!(spike.key, batch);
        let high = &seen[&(
            "batch-processor".to_string(),
            AnomalyKind::PersistentHighCpu,
        )];
        assert!(high.summary.contains("maxReplicas"), "{high:?}");
        // The window opened 30 minutes in: the high-CPU anomaly opened at least 15 minutes into it, and the
        // anomaly is stamped with the clock's time, not the workload's.
        assert!(high.started_at >= start + 45 * 60_000, "{high:?}");
        assert!(high.started_at < start + 70 * 60_000, "{high:?}");
        assert!(
            ended.contains(&(
                "batch-processor".to_string(),
                AnomalyKind::PersistentHighCpu
            )),
            "{ended:?}"
        );
    }

    /// `--start-at` shifts the workloads' day, not the clock: observations are stamped with the clock's time,
    /// api-service's spike comes 15 minutes after a start at 08:45, and the seeded history has its spikes at the
    /// same clock times of day as the live cluster.
    #[test]
    fn the_workload_day_is_shifted_and_the_clock_is_not() {
        let start = 20 * 24 * HOUR + 13 * HOUR + 7 * 60_000;
        let mut c = DemoCluster::with_workload_day_at(5, start, Some(8 * 60 + 45));
        assert_eq!(c.observe_at(start).at, start);
        let spike = c.next_workload_time_of_day(start, 9 * 60);
        assert_eq!(spike, start + 15 * 60_000);
        let history = c.history(start, 2);
        let (_, api) = history
            .iter()
            .find(|(k, _)| k.name == "api-service")
            .expect("api-service history");
        let busiest = api
            .iter()
            .max_by(|a, b| a.2.cmp(&b.2).then(b.0.cmp(&a.0)))
            .expect("points");
        // The history's peak is at the spike's clock time of day (a day or two before), within one 5-minute step.
        let off = (busiest.0 - spike).rem_euclid(DAY_MS);
        assert!(
            off <= 10 * 60_000 || off >= DAY_MS - 10 * 60_000,
            "{busiest:?} vs {spike}"
        );
        // Unshifted, the same clock time shows the workload at 13:07, long after its spike.
        let plain = DemoCluster::new(5, start);
        assert_eq!(
            plain.next_workload_time_of_day(start, 9 * 60),
            start + 19 * HOUR + 53 * 60_000
        );
    }

    /// The general pool's pressure follows the day: no pressure at night (the target is raised), high pressure
    /// when api-service peaks at 09:00 (the target is lowered), so the demo shows the pressure rule at work.
    #[test]
    fn the_general_pools_pressure_moves_through_the_day() {
        let config = crate::domain::decision::PressureConfig::default();
        let factor_at = |hour: i64| {
            let now = 20_000 * 86_400_000 + hour * HOUR;
            let mut c = DemoCluster::new(3, now);
            let obs = c.observe_at(now);
            let api = obs
                .deployments
                .iter()
                .find(|d| d.key.name == "api-service")
                .expect("api-service observed");
            crate::domain::decision::pressure(api, &config).factor
        };
        let night = factor_at(3);
        let peak = factor_at(9);
        assert!(night > 1.05, "night factor {night}");
        assert!(peak < 0.95, "peak factor {peak}");
    }

    /// Issue 17: the demo prices every tick and, from its seeded week of history (rebuilt from the store on each
    /// deployment's first tick), recommends requests for every deployment at once, through the same engine and
    /// cost book as `serve`.
    #[tokio::test]
    async fn the_demo_prices_every_tick_and_recommends_from_its_seeded_week() {
        use crate::clock::Clock;
        use crate::cost::CostBook;
        use crate::domain::rightsizing::ContainerRecommendation;
        use crate::engine::Engine;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicI64, Ordering};

        struct Manual(AtomicI64);
        impl Clock for Manual {
            fn now_millis(&self) -> UnixMillis {
                self.0.load(Ordering::SeqCst)
            }
        }
        let start = 20 * 24 * HOUR + 8 * HOUR;
        let clock = Arc::new(Manual(AtomicI64::new(start)));
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), crate::store::Retention::default())
            .await
            .unwrap()
            .with_clock(clock.clone());
        let cluster = DemoCluster::new(5, start);
        for (key, points) in cluster.history(start, 7) {
            store.import_history_with_pods(&key, &points).await.unwrap();
        }
        let telemetry = Arc::new(crate::telemetry::Telemetry::new());
        let book = Arc::new(
            CostBook::new(crate::domain::cost::Prices::default())
                .with_metrics(&telemetry)
                .with_store(store.clone()),
        );
        let (engine, _snapshots) = Engine::new(
            DemoSource::new(cluster).with_store(store.clone()),
            clock.clone(),
            Duration::from_secs(15),
            telemetry.clone(),
            DecisionConfig::default(),
        );
        let mut engine = engine.with_cost(book.clone());
        engine.tick().await;
        // The histories are rebuilt from the store by tasks of their own.
        for _ in 0..500 {
            if book
                .recommendations(None)
                .iter()
                .all(|r| r.requests.is_some())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Three more minutes of ticks: the live samples (one a minute) continue the rebuilt histories.
        for i in 1..=12 {
            clock.0.store(start + i * 15_000, Ordering::SeqCst);
            engine.tick().await;
        }
        let cost = book.latest().expect("priced");
        assert_eq!(cost.report.deployments.len(), 4);
        assert!(cost.report.deployments.iter().all(|d| d.hourly_usd > 0.0));
        assert!(cost.report.cluster.projected_30d_usd > 0.0);
        let recommendations = book.recommendations(Some(NAMESPACE));
        assert_eq!(recommendations.len(), 4);
        for r in &recommendations {
            let Some(ContainerRecommendation::Ready(requests)) = &r.requests else {
                panic!("{}: {:?}", r.name, r.requests);
            };
            // A week of five-minute points: min(7 days, 2016 / 1440) = 1.4 days of confidence.
            assert!(requests.confidence_days >= 1.0, "{requests:?}");
            assert!(matches!(r.status, "change" | "keep"), "{r:?}");
        }
        assert!(
            recommendations.iter().any(|r| r.status == "change"),
            "{recommendations:?}"
        );
    }
}
