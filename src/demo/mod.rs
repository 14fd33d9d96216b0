//! The embedded simulated cluster behind `demo`: two node pools and four deployments with recognisable
//! workloads, each scaled by a simple model of the native HPA consuming the metric we serve, so the whole
//! server runs on a fresh machine with no Kubernetes or Prometheus.
//!
//! Simulated time comes from the injected clock (`--speed` makes it run faster); noise comes from a seeded RNG.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::domain::model::{
    DeploymentInputs, DeploymentKey, NodeInputs, Observation, PoolInputs, Snapshot, UnixMillis,
};
use crate::engine::{Source, SourceError};

/// Namespace of the demo deployments.
pub const NAMESPACE: &str = "demo";
/// Label that names a node's pool.
pub const POOL_LABEL: &str = "smart-autoscaler.io/pool";

/// Seconds a new pod takes to become Ready in the simulation.
const READY_AFTER_S: f64 = 30.0;
/// The HPA's scale-down stabilization window.
const STABILIZATION_MS: i64 = 5 * 60 * 1000;

/// The shape of a deployment's CPU demand over a simulated day, in cores.
#[derive(Debug, Clone, Copy)]
enum Workload {
    /// Daily cycle with a sharp morning spike around 09:00 UTC.
    MorningSpike,
    /// Batch windows: heavy for the first 40 minutes of every 4th hour.
    Batch,
    /// Small, noisy front-end load.
    Frontend,
    /// Steady business load; each new pod burns a full core for its first two minutes (JVM warm-up).
    Jvm,
}

struct SimDeployment {
    name: &'static str,
    pool: &'static str,
    workload: Workload,
    request_milli: i64,
    base_target: f64,
    min_replicas: u32,
    max_replicas: u32,
    startup_filter_s: u32,
    warmup_s: f64,
    annotations: BTreeMap<String, String>,
    /// Start times of the current pods, oldest first.
    pods: VecDeque<UnixMillis>,
    /// Recent (time, desired replicas) recommendations for downscale stabilization.
    recommendations: VecDeque<(UnixMillis, u32)>,
    /// Last observed per-pod usage in cores, for node accounting.
    last_usage_cores: Vec<f64>,
}

struct SimNode {
    name: String,
    pool: &'static str,
    labels: BTreeMap<String, String>,
    allocatable_milli: i64,
}

/// The simulated cluster.
pub struct DemoCluster {
    deployments: Vec<SimDeployment>,
    nodes: Vec<SimNode>,
    rng: StdRng,
}

fn hour_of_day(now: UnixMillis) -> f64 {
    (now.rem_euclid(86_400_000)) as f64 / 3_600_000.0
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
                let in_window = (h % 4.0) < (40.0 / 60.0);
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

impl DemoCluster {
    /// Builds the demo cluster with every deployment at its minimum size, pods started well before `now`.
    pub fn new(seed: u64, now: UnixMillis) -> Self {
        let mut deployments = vec![
            SimDeployment {
                name: "api-service",
                pool: "general",
                workload: Workload::MorningSpike,
                request_milli: 500,
                base_target: 70.0,
                min_replicas: 3,
                max_replicas: 30,
                startup_filter_s: 30,
                warmup_s: 0.0,
                annotations: annotations(&[]),
                pods: VecDeque::new(),
                recommendations: VecDeque::new(),
                last_usage_cores: Vec::new(),
            },
            SimDeployment {
                name: "batch-processor",
                pool: "compute",
                workload: Workload::Batch,
                request_milli: 1000,
                base_target: 80.0,
                min_replicas: 2,
                max_replicas: 16,
                startup_filter_s: 30,
                warmup_s: 0.0,
                annotations: annotations(&[]),
                pods: VecDeque::new(),
                recommendations: VecDeque::new(),
                last_usage_cores: Vec::new(),
            },
            SimDeployment {
                name: "web-frontend",
                pool: "general",
                workload: Workload::Frontend,
                request_milli: 25,
                base_target: 70.0,
                min_replicas: 4,
                max_replicas: 40,
                startup_filter_s: 30,
                warmup_s: 0.0,
                annotations: annotations(&[
                    ("smart-autoscaler.io/target-utilization", "85"),
                    (
                        "smart-autoscaler.io/policy",
                        "cpu request 25m < 50m: target 85%",
                    ),
                ]),
                pods: VecDeque::new(),
                recommendations: VecDeque::new(),
                last_usage_cores: Vec::new(),
            },
            SimDeployment {
                name: "java-orders",
                pool: "general",
                workload: Workload::Jvm,
                request_milli: 500,
                base_target: 70.0,
                min_replicas: 2,
                max_replicas: 20,
                startup_filter_s: 150,
                warmup_s: 120.0,
                annotations: annotations(&[
                    ("smart-autoscaler.io/startup-filter-seconds", "150"),
                    (
                        "smart-autoscaler.io/policy",
                        "JVM image: 150s startup filter",
                    ),
                ]),
                pods: VecDeque::new(),
                recommendations: VecDeque::new(),
                last_usage_cores: Vec::new(),
            },
        ];
        for d in &mut deployments {
            let steady = d.workload.demand_cores(now) * 1000.0
                / (d.request_milli as f64 * d.base_target / 100.0);
            let replicas = (steady.ceil() as u32).clamp(d.min_replicas, d.max_replicas);
            d.pods = (0..replicas)
                .map(|i| now - 3_600_000 - i as i64 * 1000)
                .collect();
        }
        let mut nodes = Vec::new();
        for (pool, count, cpu, instance) in [
            ("general", 3, 8000, "m5.2xlarge"),
            ("compute", 2, 16000, "c5.4xlarge"),
        ] {
            for i in 0..count {
                let zone = ["eu-west-1a", "eu-west-1b", "eu-west-1c"][i % 3];
                nodes.push(SimNode {
                    name: format!("{pool}-{i}"),
                    pool,
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
        DemoCluster {
            deployments,
            nodes,
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Observes the simulated cluster at `now`.
    pub fn observe_at(&mut self, now: UnixMillis) -> Observation {
        // Per-pod usage first, then node accounting, then per-deployment inputs with their pool figures.
        let mut node_usage: BTreeMap<String, (f64, i64)> = BTreeMap::new();
        let mut per_deployment = Vec::new();
        for d in &mut self.deployments {
            let noise = 1.0 + (self.rng.random::<f64>() - 0.5) * 0.1;
            let demand = d.workload.demand_cores(now) * noise;
            let ages: Vec<f64> = d
                .pods
                .iter()
                .map(|start| (now - start) as f64 / 1000.0)
                .collect();
            let ready: Vec<bool> = ages.iter().map(|a| *a >= READY_AFTER_S).collect();
            let ready_count = ready.iter().filter(|r| **r).count().max(1) as f64;
            let request = d.request_milli as f64 / 1000.0;
            d.last_usage_cores = ages
                .iter()
                .zip(&ready)
                .map(|(age, is_ready)| {
                    let share = if *is_ready { demand / ready_count } else { 0.0 };
                    let warmup = if *age < d.warmup_s {
                        request * 2.0
                    } else {
                        0.0
                    };
                    share + warmup
                })
                .collect();
            let filtered: Vec<f64> = ages
                .iter()
                .zip(&d.last_usage_cores)
                .filter(|(age, _)| **age >= d.startup_filter_s as f64)
                .map(|(_, u)| *u)
                .collect();
            let sample = if filtered.is_empty() {
                &d.last_usage_cores
            } else {
                &filtered
            };
            let utilization = if sample.is_empty() {
                0.0
            } else {
                sample.iter().sum::<f64>() / sample.len() as f64 / request * 100.0
            };
            let pool_nodes: Vec<&SimNode> =
                self.nodes.iter().filter(|n| n.pool == d.pool).collect();
            for (i, usage) in d.last_usage_cores.iter().enumerate() {
                let node = &pool_nodes[i % pool_nodes.len()];
                let entry = node_usage.entry(node.name.clone()).or_default();
                entry.0 += usage * 1000.0;
                entry.1 += d.request_milli;
            }
            per_deployment.push((
                utilization,
                ready.iter().filter(|r| **r).count() as u32,
                ages,
            ));
        }

        let h = hour_of_day(now);
        let nodes: Vec<NodeInputs> = self
            .nodes
            .iter()
            .map(|n| {
                // Other tenants' load on the pool, with its own daily rhythm.
                let background = n.allocatable_milli as f64
                    * (0.35 + 0.15 * (std::f64::consts::TAU * (h - 14.0) / 24.0).cos());
                let (usage, requested) = node_usage.get(&n.name).copied().unwrap_or_default();
                NodeInputs {
                    name: n.name.clone(),
                    labels: n.labels.clone(),
                    ready: true,
                    schedulable: true,
                    allocatable_cpu_milli: n.allocatable_milli,
                    requested_cpu_milli: requested + (background * 1.1) as i64,
                    measured_cpu_percent: Some(
                        ((usage + background) / n.allocatable_milli as f64 * 100.0).min(100.0),
                    ),
                }
            })
            .collect();

        let deployments = self
            .deployments
            .iter()
            .zip(per_deployment)
            .map(|(d, (utilization, ready_pods, ages))| {
                let pool: Vec<&NodeInputs> = nodes
                    .iter()
                    .filter(|n| n.labels.get(POOL_LABEL).map(String::as_str) == Some(d.pool))
                    .collect();
                let allocatable: i64 = pool.iter().map(|n| n.allocatable_cpu_milli).sum();
                let measured: f64 = pool
                    .iter()
                    .map(|n| n.measured_cpu_percent.unwrap_or(0.0) * n.allocatable_cpu_milli as f64)
                    .sum::<f64>()
                    / allocatable.max(1) as f64;
                let requested: i64 = pool.iter().map(|n| n.requested_cpu_milli).sum();
                DeploymentInputs {
                    key: DeploymentKey::new(NAMESPACE, d.name),
                    base_target_percent: d.base_target,
                    cpu_utilization_percent: utilization,
                    memory_utilization_percent: Some(55.0 + 10.0 * (utilization / 100.0).min(1.5)),
                    pod_cpu_request_milli: d.request_milli,
                    replicas: d.pods.len() as u32,
                    ready_pods,
                    starting_pods: ages
                        .iter()
                        .filter(|a| **a < d.startup_filter_s as f64)
                        .count() as u32,
                    recent_pod_starts: ages.iter().filter(|a| **a < 180.0).count() as u32,
                    startup_filter_seconds: d.startup_filter_s,
                    pool: PoolInputs {
                        name: d.pool.to_string(),
                        measured_cpu_percent: Some(measured),
                        requested_cpu_percent: requested as f64 / allocatable.max(1) as f64 * 100.0,
                        nodes: pool.len() as u32,
                    },
                    annotations: d.annotations.clone(),
                    window_seconds: 600,
                    observed_at: now,
                }
            })
            .collect();
        Observation {
            at: now,
            measured_at: now,
            deployments,
            unmeasured: Vec::new(),
            nodes,
        }
    }

    /// Applies the native HPA's External `Value` rule to every deployment, using what was served:
    /// tolerance 0.1, scale-up at once, scale-down only to the highest recommendation of the last 5 minutes.
    pub fn apply_hpa(&mut self, snapshot: &Snapshot) {
        let now = snapshot.collected_at;
        for d in &mut self.deployments {
            let Some(served) = snapshot
                .deployments
                .get(&DeploymentKey::new(NAMESPACE, d.name))
            else {
                continue;
            };
            let current = d.pods.len() as u32;
            let ratio = served.smart_percent / d.base_target;
            let ready = served.inputs.ready_pods.max(1) as f64;
            let proposal = if (0.9..=1.1).contains(&ratio) {
                current
            } else {
                (ratio * ready).ceil().max(0.0) as u32
            };
            let proposal = proposal.clamp(d.min_replicas, d.max_replicas);
            d.recommendations.push_back((now, proposal));
            while d
                .recommendations
                .front()
                .is_some_and(|(t, _)| now - t > STABILIZATION_MS)
            {
                d.recommendations.pop_front();
            }
            let stabilized = d
                .recommendations
                .iter()
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(proposal);
            let desired = if proposal > current {
                proposal
            } else {
                stabilized.min(current)
            };
            while (d.pods.len() as u32) < desired {
                d.pods.push_back(now);
            }
            while (d.pods.len() as u32) > desired {
                // The newest pods go first, as the ReplicaSet controller prefers.
                d.pods.pop_back();
            }
        }
    }
}

/// [`DemoCluster`] as an engine source.
pub struct DemoSource(pub DemoCluster);

impl Source for DemoSource {
    async fn observe(&mut self, now: UnixMillis) -> Result<Observation, SourceError> {
        Ok(self.0.observe_at(now))
    }

    fn served(&mut self, snapshot: &Snapshot) {
        self.0.apply_hpa(snapshot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOUR: i64 = 3_600_000;

    fn run(cluster: &mut DemoCluster, from: UnixMillis, ticks: i64, step: i64) -> Snapshot {
        let mut last = Snapshot::default();
        let config = crate::domain::decision::DecisionConfig::default();
        let mut states = Default::default();
        for i in 0..ticks {
            let obs = cluster.observe_at(from + i * step);
            last = crate::engine::compute(
                obs,
                Duration::from_millis(step as u64),
                &config,
                &mut states,
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
            assert!(d.cpu_utilization_percent.is_finite() && d.cpu_utilization_percent >= 0.0);
            let measured = d.pool.measured_cpu_percent.unwrap();
            assert!(measured > 0.0 && measured <= 100.0);
        }
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
        c.deployments[3].pods.push_back(now - 60_000);
        let after = c.observe_at(now + 1);
        let util = |o: &Observation| o.deployments[3].cpu_utilization_percent;
        assert!((util(&after) - util(&before)).abs() < util(&before) * 0.5);
        assert_eq!(after.deployments[3].starting_pods, 1);
        assert_eq!(after.deployments[3].recent_pod_starts, 1);
    }

    #[test]
    fn same_seed_same_run() {
        let a = DemoCluster::new(9, 0).observe_at(HOUR);
        let b = DemoCluster::new(9, 0).observe_at(HOUR);
        assert_eq!(a, b);
    }
}
