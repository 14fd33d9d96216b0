//! The scheduler extender's pure part (decode, filter or prioritize with the placement bookkeeping, encode) for
//! 5,000 nodes that are all known, timed in-process on one thread, in both node-cache modes.
//! `cargo bench --bench extender` (run by `hack/bench-extender.sh` after the end-to-end rows) prints p50 and p99
//! per mode and verb; `cargo test --all-targets` runs it on 50 nodes as a smoke test.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{Value, json};
use smart_autoscaler::domain::extender::{
    self as rules, NamePositions, NodeIndex, PlacementMemory,
};
use smart_autoscaler::domain::model::NodeInputs;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/extender/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_slice(&std::fs::read(&path).expect(&path)).expect("fixture JSON")
}

/// `nodeCacheCapable: true`: the pod and the candidate node names.
fn names_args() -> Value {
    fixture("args-node-names.json")
}

/// `nodeCacheCapable: false`: the pod and a NodeList of full Node objects.
fn objects_args() -> Value {
    fixture("args-node-objects.json")
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    // Without --bench (cargo test --all-targets) a tiny run keeps the benchmark built and working.
    let (n, runs) = if full { (5_000, 300) } else { (50, 3) };
    let node_names: Vec<String> = (0..n).map(|i| format!("node-{i:05}")).collect();
    let nodes: Vec<NodeInputs> = node_names
        .iter()
        .enumerate()
        .map(|(i, name)| NodeInputs {
            name: name.clone(),
            labels: BTreeMap::from([(
                "smart-autoscaler.io/pool".to_string(),
                "general".to_string(),
            )]),
            ready: i % 97 != 0,
            schedulable: true,
            allocatable_cpu_milli: 8000,
            requested_cpu_milli: (i as i64 * 37) % 8000,
            measured_cpu_percent: Some((i as f64 * 7.3) % 100.0),
        })
        .collect();
    let pod = names_args()["Pod"].clone();
    let template = objects_args()["Nodes"]["items"][0].clone();
    let items: Vec<Value> = node_names
        .iter()
        .map(|name| {
            let mut node = template.clone();
            node["metadata"]["name"] = json!(name);
            node["metadata"]["labels"]["kubernetes.io/hostname"] = json!(name);
            node
        })
        .collect();
    let names_body =
        serde_json::to_vec(&json!({"Pod": pod, "Nodes": null, "NodeNames": node_names})).unwrap();
    let objects_body = serde_json::to_vec(
        &json!({"Pod": pod, "Nodes": {"metadata": {}, "items": items}, "NodeNames": null}),
    )
    .unwrap();
    let config = rules::ExtenderConfig::default();
    // The server builds the name positions once per snapshot, not per call.
    let positions = NamePositions::new(&nodes);

    let time = |body: &[u8], verb: &str| {
        let mut memory = PlacementMemory::default();
        let mut samples = Vec::with_capacity(runs);
        let mut out_len = 0;
        for run in 0..runs {
            let now = run as i64 * 10;
            if verb == "prioritize" {
                // The pod's filter call, untimed: the prioritize call below pairs with it, as the scheduler's do.
                let pod = names_args()["Pod"]["metadata"]["uid"].clone();
                memory.filtered(
                    &config,
                    pod.as_str().unwrap(),
                    node_names.iter().map(String::as_str),
                    now,
                );
            }
            let started = Instant::now();
            let request = rules::decode(body).unwrap();
            let index = NodeIndex::with_positions(&nodes, &positions);
            let out = if verb == "filter" {
                let names = request.candidates.names();
                let outcome = rules::filter(&config, &index, names);
                let passed = (0..names.len())
                    .filter(|i| outcome.passes(*i))
                    .map(|i| names[i].as_str());
                memory.filtered(&config, &request.pod.uid, passed, now);
                serde_json::to_vec(&rules::filter_result(&config, request.candidates, &outcome))
            } else {
                let names = request.candidates.names().to_vec();
                let outcome = rules::prioritize(
                    &config,
                    &index,
                    names,
                    request.pod.cpu_request_milli,
                    &memory.recent,
                    now,
                );
                let hosts: Vec<&str> = outcome.priorities.iter().map(|p| p.host.as_str()).collect();
                let winner = outcome.winner.map(|i| hosts[i]);
                memory.prioritized(&config, &request.pod.uid, &hosts, winner, &index, now);
                serde_json::to_vec(&outcome.priorities)
            }
            .unwrap();
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
            out_len = out.len();
        }
        samples.sort_by(f64::total_cmp);
        let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        (p(0.5), p(0.99), out_len)
    };

    println!("pure core, {n} known nodes, {runs} runs each (decode + decide + encode, one thread)");
    println!(
        "{:<22} {:<10} {:>13} {:>14} {:>9} {:>9}",
        "mode", "verb", "request bytes", "response bytes", "p50 ms", "p99 ms"
    );
    for (mode, body) in [
        ("nodeCacheCapable=true", &names_body),
        ("nodeCacheCapable=false", &objects_body),
    ] {
        for verb in ["filter", "prioritize"] {
            let (p50, p99, out_len) = time(body, verb);
            println!(
                "{mode:<22} {verb:<10} {:>13} {out_len:>14} {p50:>9.3} {p99:>9.3}",
                body.len()
            );
        }
    }
}
