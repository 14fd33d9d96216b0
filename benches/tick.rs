//! One tick's pure processing at cluster scale: `cluster::join` (Kubernetes + Prometheus → per-deployment
//! inputs) and `tick::step` (the decision core and the anomaly detectors for every deployment) for 2,000
//! deployments, 20,000 pods and 500 nodes on one thread. The detectors' windows are filled first (half an hour of
//! untimed ticks), so the timed ticks pay for their medians over full windows. `cargo bench --bench tick` prints a table of medians; `cargo test` runs it on a
//! tiny size as a smoke test.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use smart_autoscaler::domain::cluster::{
    self, ClusterSnapshot, DeploymentInfo, JoinConfig, NodeInfo, PodInfo, Usage,
};
use smart_autoscaler::domain::decision::DecisionConfig;
use smart_autoscaler::domain::model::DeploymentKey;
use smart_autoscaler::domain::tick;

const NOW: i64 = 1_800_000_000_000;

fn cluster(deployments: usize, pods_per: usize, nodes: usize) -> (ClusterSnapshot, Usage) {
    let pools = ["general", "compute", "memory", "gpu", "spot"];
    let nodes: Vec<NodeInfo> = (0..nodes)
        .map(|i| NodeInfo {
            name: format!("node-{i}"),
            labels: BTreeMap::from([
                ("pool".to_string(), pools[i % pools.len()].to_string()),
                (
                    "topology.kubernetes.io/zone".to_string(),
                    format!("zone-{}", i % 3),
                ),
            ]),
            ready: i % 97 != 0,
            schedulable: i % 89 != 0,
            allocatable_cpu_milli: 16_000,
        })
        .collect();
    let mut usage = Usage::default();
    let mut pods = Vec::with_capacity(deployments * pods_per);
    let deployments: Vec<DeploymentInfo> = (0..deployments)
        .map(|d| {
            let key = DeploymentKey::new(format!("ns-{}", d % 50), format!("app-{d}"));
            for p in 0..pods_per {
                let name = format!("app-{d}-7c9d8f6b5d-{p:05}");
                let pod_ref = (key.namespace.clone(), name.clone());
                usage
                    .pod_cpu_10m
                    .insert(pod_ref.clone(), 0.1 + (d * 7 + p) as f64 % 30.0 / 100.0);
                usage
                    .pod_cpu_5m
                    .insert(pod_ref.clone(), 0.1 + (d * 5 + p) as f64 % 30.0 / 100.0);
                usage
                    .pod_cpu_1m
                    .insert(pod_ref.clone(), 0.1 + (d * 3 + p) as f64 % 30.0 / 100.0);
                usage.pod_memory_bytes.insert(pod_ref, 2e8);
                pods.push(PodInfo {
                    namespace: key.namespace.clone(),
                    name,
                    deployment: Some(key.name.clone()),
                    node: Some(format!("node-{}", (d * pods_per + p) % nodes.len())),
                    phase: "Running".into(),
                    ready: true,
                    // Every pod past the default 60 s startup filter: a pod inside it has no utilization to join.
                    started_at: Some(NOW - (60 + (d + p) as i64 % 3600) * 1000),
                    cpu_request_milli: 500,
                    memory_request_bytes: 1 << 29,
                    terminating: false,
                    unschedulable: false,
                });
            }
            DeploymentInfo {
                key,
                replicas: pods_per as u32,
                annotations: BTreeMap::new(),
                node_selector: BTreeMap::from([(
                    "pool".to_string(),
                    pools[d % pools.len()].to_string(),
                )]),
                required_affinity: vec![],
                pod_cpu_request_milli: 500,
                pod_memory_request_bytes: 1 << 29,
                hpa_target_percent: Some(70.0),
                hpa_max_replicas: Some(20),
            }
        })
        .collect();
    usage.node_cpu_percent = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.name.clone(), (i % 90) as f64))
        .collect::<HashMap<_, _>>();
    (
        ClusterSnapshot {
            deployments,
            pods,
            nodes,
        },
        usage,
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (deployments, pods_per, nodes, runs) = if full {
        (2000, 10, 500, 15)
    } else {
        (20, 3, 5, 2)
    };
    let (snapshot, usage) = cluster(deployments, pods_per, nodes);
    let join_config = JoinConfig::default();
    let decision = DecisionConfig::default();
    let mut states = tick::TickStates::default();
    // Half an hour of 15 s ticks: every detector window full.
    let warm = if full { 120 } else { 25 };
    let warm_observation = cluster::join(&snapshot, &usage, NOW, &join_config);
    for i in 0..warm {
        let mut observation = warm_observation.clone();
        observation.at = NOW + i as i64 * 15_000;
        tick::step(
            observation,
            Duration::from_secs(15),
            &decision,
            &mut states,
            None,
            None,
            None,
        );
    }
    let (mut joins, mut computes, mut totals) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        let now = NOW + (warm + i) as i64 * 15_000;
        let t0 = Instant::now();
        let observation = cluster::join(&snapshot, &usage, now, &join_config);
        let t1 = Instant::now();
        let served = tick::step(
            observation,
            Duration::from_secs(15),
            &decision,
            &mut states,
            None,
            None,
            None,
        );
        let t2 = Instant::now();
        assert_eq!(served.deployments.len(), deployments);
        joins.push(t1 - t0);
        computes.push(t2 - t1);
        totals.push(t2 - t0);
    }
    println!(
        "tick processing, one thread: {deployments} deployments, {} pods, {nodes} nodes, median of {runs}",
        deployments * pods_per
    );
    println!("| step                         | median      | aim      |");
    println!("|------------------------------|-------------|----------|");
    println!(
        "| cluster::join                | {:>8.1} ms |          |",
        median(joins).as_secs_f64() * 1e3
    );
    println!(
        "| tick::step (+ detectors)     | {:>8.1} ms |          |",
        median(computes).as_secs_f64() * 1e3
    );
    println!(
        "| whole tick (pure part)       | {:>8.1} ms | < 1000 ms |",
        median(totals).as_secs_f64() * 1e3
    );
}
