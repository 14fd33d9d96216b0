//! The Prometheus adapter against a real Prometheus: each test writes OpenMetrics text with cAdvisor-,
//! node-exporter- and kube-state-metrics-shaped series, backfills it with `promtool tsdb create-blocks-from
//! openmetrics`, starts `prometheus` on the blocks (no scrape targets) on a free port, and checks that what the
//! adapter collects and backfills is what the data implies. Expected rates are computed here with Prometheus's
//! own `rate()` extrapolation, so the comparisons are exact up to float rounding.
//!
//! Also: Prometheus down (errors, the circuit opens, then recovers), garbage responses from a fake server
//! (errors, no panic), the bearer token file, and TLS verified against a CA file.
//!
//! `prometheus` and `promtool` come from the Debian package installed by hack/install-tools.sh; a missing tool
//! fails the test.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smart_autoscaler::domain::cluster::{
    self, ClusterSnapshot, DeploymentInfo, JoinConfig, NodeInfo, PodInfo,
};
use smart_autoscaler::domain::model::{DeploymentKey, UnixMillis};
use smart_autoscaler::prom::{
    BreakerConfig, BreakerState, PromArgs, PromClient, PromError, PromSettings, QueryTemplates,
    RetryPolicy,
};

/// The default short CPU window's length (the `pod_cpu_1m` query's range), seconds.
fn short_window() -> i64 {
    i64::from(QueryTemplates::default().pod_cpu_short_window_seconds)
}
use smart_autoscaler::store::{Retention, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::prometheus::{Prometheus, free_port, left_open_ranges};

const STEP: i64 = 15;

// ---------------------------------------------------------------------------------------------------------
// A real Prometheus on backfilled blocks.

/// Test helpers on the shared harness.
trait PrometheusExt {
    fn client(&self) -> PromClient;
}

impl PrometheusExt for Prometheus {
    fn client(&self) -> PromClient {
        PromClient::new(PromSettings::new(&self.url)).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------------------
// Data sets and Prometheus's rate() to compute what they imply.

#[derive(Clone)]
struct Series {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    /// (unix seconds, value)
    points: Vec<(i64, f64)>,
}

impl Series {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct DataSet {
    series: Vec<Series>,
}

fn labels(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl DataSet {
    /// A counter over `times` whose per-second increase in the interval ending at `t` is `rate(t)`.
    fn counter(
        &mut self,
        name: &'static str,
        l: &[(&'static str, &str)],
        times: &[i64],
        rate: impl Fn(i64) -> f64,
    ) {
        let mut value = 100.0;
        let mut points = Vec::with_capacity(times.len());
        for (i, &t) in times.iter().enumerate() {
            if i > 0 {
                value += rate(t) * (t - times[i - 1]) as f64;
            }
            points.push((t, value));
        }
        self.series.push(Series {
            name,
            labels: labels(l),
            points,
        });
    }

    fn gauge(&mut self, name: &'static str, l: &[(&'static str, &str)], times: &[i64], value: f64) {
        self.series.push(Series {
            name,
            labels: labels(l),
            points: times.iter().map(|&t| (t, value)).collect(),
        });
    }

    fn openmetrics(&self) -> String {
        let mut by_name: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
        for s in &self.series {
            by_name.entry(s.name).or_default().push(s);
        }
        let mut out = String::new();
        for (name, series) in by_name {
            for s in series {
                let l: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                for (t, v) in &s.points {
                    out.push_str(&format!("{name}{{{}}} {v} {t}\n", l.join(",")));
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }

    fn select<'a>(
        &'a self,
        name: &str,
        keep: impl Fn(&Series) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Series> + 'a {
        let name = name.to_string();
        self.series
            .iter()
            .filter(move |s| s.name == name && keep(s))
    }
}

/// Prometheus's `rate()` of one series over `range` seconds evaluated at `at` (its `extrapolatedRate`).
fn prom_rate(points: &[(i64, f64)], at: i64, range: i64, left_open: bool) -> Option<f64> {
    let start = at - range;
    let window: Vec<(f64, f64)> = points
        .iter()
        .filter(|(t, _)| (if left_open { *t > start } else { *t >= start }) && *t <= at)
        .map(|&(t, v)| (t as f64, v))
        .collect();
    if window.len() < 2 {
        return None;
    }
    let (first, last) = (window[0], window[window.len() - 1]);
    let mut result = last.1 - first.1;
    for w in window.windows(2) {
        if w[1].1 < w[0].1 {
            result += w[0].1;
        }
    }
    let mut to_start = first.0 - start as f64;
    let to_end = at as f64 - last.0;
    let sampled = last.0 - first.0;
    let average = sampled / (window.len() - 1) as f64;
    if result > 0.0 && first.1 >= 0.0 {
        to_start = to_start.min(sampled * (first.1 / result));
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average / 2.0
    };
    Some(result * (interval / sampled) / range as f64)
}

/// `sum by (namespace, pod) (rate(...))` restricted to real containers, as the default queries do.
fn pod_rate(
    data: &DataSet,
    namespace: &str,
    pod: &str,
    at: i64,
    range: i64,
    left_open: bool,
) -> Option<f64> {
    let rates: Vec<f64> = data
        .select("container_cpu_usage_seconds_total", |s| {
            s.label("namespace") == Some(namespace)
                && s.label("pod") == Some(pod)
                && !matches!(s.label("container"), Some("") | Some("POD") | None)
        })
        .filter_map(|s| prom_rate(&s.points, at, range, left_open))
        .collect();
    (!rates.is_empty()).then(|| rates.iter().sum())
}

fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sample times every 15 s for the last three hours, ending a minute ago on a 15 s boundary.
fn timeline() -> Vec<i64> {
    let end = now_seconds() / STEP * STEP - 60;
    (0..=(3 * 3600 / STEP))
        .map(|i| end - 3 * 3600 + i * STEP)
        .collect()
}

const POD_A: &str = "api-7d9f8b6c5d-x2z9q";
const POD_B: &str = "api-7d9f8b6c5d-b5mkp";
const POD_WEB: &str = "web-6b8d9c7f4-q2w4r";

/// The synthetic cluster: api has pods a (0.25 cores) and b (0.5 app + 0.05 sidecar; cgroup-level and pause
/// series that must be ignored), web changes from 0.1 to 0.3 cores 7.5 minutes before the end, distractors
/// share names with api in other shapes or namespaces; node-a is 60% busy, node-b 10%.
fn synthetic(times: &[i64]) -> DataSet {
    let end = *times.last().unwrap();
    let mut d = DataSet::default();
    let cpu = "container_cpu_usage_seconds_total";
    let c = |ns: &'static str, pod: &'static str, container: &'static str| {
        vec![("namespace", ns), ("pod", pod), ("container", container)]
    };
    d.counter(cpu, &c("shop", POD_A, "app"), times, |_| 0.25);
    d.counter(cpu, &c("shop", POD_B, "app"), times, |_| 0.5);
    d.counter(cpu, &c("shop", POD_B, "istio-proxy"), times, |_| 0.05);
    d.counter(cpu, &c("shop", POD_B, "POD"), times, |_| 1.0);
    d.counter(cpu, &c("shop", POD_B, ""), times, |_| 2.0);
    d.counter(cpu, &c("shop", POD_WEB, "app"), times, move |t| {
        if t > end - 450 { 0.3 } else { 0.1 }
    });
    d.counter(cpu, &c("shop", "api-0", "app"), times, |_| 5.0);
    d.counter(cpu, &c("other", POD_A, "app"), times, |_| 7.0);
    let mem = "container_memory_working_set_bytes";
    let mib = 1024.0 * 1024.0;
    d.gauge(mem, &c("shop", POD_A, "app"), times, 200.0 * mib);
    d.gauge(mem, &c("shop", POD_B, "app"), times, 300.0 * mib);
    d.gauge(mem, &c("shop", POD_B, "istio-proxy"), times, 50.0 * mib);
    d.gauge(mem, &c("shop", POD_B, ""), times, 999.0 * mib);
    let req = "kube_pod_container_resource_requests";
    let r =
        |ns: &'static str, pod: &'static str, container: &'static str, resource: &'static str| {
            vec![
                ("namespace", ns),
                ("pod", pod),
                ("container", container),
                ("resource", resource),
            ]
        };
    d.gauge(req, &r("shop", POD_A, "app", "cpu"), times, 0.5);
    d.gauge(req, &r("shop", POD_A, "app", "memory"), times, 1e9);
    d.gauge(req, &r("shop", POD_B, "app", "cpu"), times, 0.5);
    d.gauge(req, &r("shop", POD_B, "istio-proxy", "cpu"), times, 0.1);
    d.gauge(req, &r("shop", POD_WEB, "app", "cpu"), times, 1.0);
    d.gauge(req, &r("shop", "api-0", "app", "cpu"), times, 1.0);
    d.gauge(req, &r("other", POD_A, "app", "cpu"), times, 1.0);
    let node = "node_cpu_seconds_total";
    for (name, instance, idle) in [
        ("node-a", "node-a:9100", [0.6, 0.2]),
        ("node-b", "node-b:9100", [0.9, 0.9]),
    ] {
        for (cpu_id, idle) in ["0", "1"].into_iter().zip(idle) {
            let l = [("instance", instance), ("node", name), ("cpu", cpu_id)];
            let mut idle_labels = l.to_vec();
            idle_labels.push(("mode", "idle"));
            d.counter(node, &idle_labels, times, move |_| idle);
            let mut user = l.to_vec();
            user.push(("mode", "user"));
            d.counter(node, &user, times, move |_| 1.0 - idle);
        }
    }
    d
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1.0)
}

fn pod(name: &str, request: i64) -> PodInfo {
    PodInfo {
        namespace: "shop".into(),
        name: name.into(),
        deployment: Some("api".into()),
        node: Some("node-a".into()),
        phase: "Running".into(),
        ready: true,
        started_at: Some(0),
        cpu_request_milli: request,
        memory_request_bytes: 1 << 30,
        terminating: false,
        unschedulable: false,
    }
}

// ---------------------------------------------------------------------------------------------------------
// Tests against a real Prometheus.

#[tokio::test]
async fn synthetic_cluster_usage_matches_the_backfilled_data() {
    let times = timeline();
    let end = *times.last().unwrap();
    let data = synthetic(&times);
    let prometheus = Prometheus::start(&data.openmetrics(), None, None).await;
    let left_open = left_open_ranges();
    let usage = prometheus.client().collect(end * 1000).await.unwrap();

    let k = |ns: &str, p: &str| (ns.to_string(), p.to_string());
    // The known answers.
    assert!(
        close(usage.pod_cpu_10m[&k("shop", POD_A)], 0.25, 1e-9),
        "{usage:?}"
    );
    assert!(close(usage.pod_cpu_5m[&k("shop", POD_A)], 0.25, 1e-9));
    assert!(
        close(usage.pod_cpu_10m[&k("shop", POD_B)], 0.55, 1e-9),
        "POD and cgroup series excluded"
    );
    assert!(close(usage.pod_cpu_5m[&k("shop", POD_WEB)], 0.3, 1e-9));
    assert!(close(usage.pod_cpu_1m[&k("shop", POD_WEB)], 0.3, 1e-9));
    assert!(close(usage.pod_cpu_1m[&k("shop", POD_B)], 0.55, 1e-9));
    assert!(
        usage.pod_cpu_10m[&k("shop", POD_WEB)] > 0.24
            && usage.pod_cpu_10m[&k("shop", POD_WEB)] < 0.26
    );
    // Every pod's rates equal Prometheus's rate() of the data.
    for (ns, p) in [
        ("shop", POD_A),
        ("shop", POD_B),
        ("shop", POD_WEB),
        ("shop", "api-0"),
        ("other", POD_A),
    ] {
        for (range, got) in [
            (600, &usage.pod_cpu_10m),
            (300, &usage.pod_cpu_5m),
            (short_window(), &usage.pod_cpu_1m),
        ] {
            let expected = pod_rate(&data, ns, p, end, range, left_open).unwrap();
            assert!(
                close(got[&k(ns, p)], expected, 1e-9),
                "{ns}/{p} [{range}s]: {} vs {expected}",
                got[&k(ns, p)]
            );
        }
    }
    assert_eq!(usage.pod_cpu_10m.len(), 5);
    let mib = 1024.0 * 1024.0;
    assert_eq!(usage.pod_memory_bytes[&k("shop", POD_A)], 200.0 * mib);
    assert_eq!(usage.pod_memory_bytes[&k("shop", POD_B)], 350.0 * mib);
    assert!(
        close(usage.node_cpu_percent["node-a"], 60.0, 1e-9),
        "{:?}",
        usage.node_cpu_percent
    );
    assert!(close(usage.node_cpu_percent["node-b"], 10.0, 1e-9));
    assert_eq!(usage.node_cpu_percent.len(), 2);

    // Through the join: api's utilization is (0.25 + 0.55) cores over 1.1 cores requested.
    let snapshot = ClusterSnapshot {
        deployments: vec![DeploymentInfo {
            key: DeploymentKey::new("shop", "api"),
            replicas: 2,
            annotations: Default::default(),
            node_selector: Default::default(),
            required_affinity: vec![],
            pod_cpu_request_milli: 500,
            pod_memory_request_bytes: 1 << 30,
            hpa_target_percent: Some(70.0),
            hpa_max_replicas: Some(10),
        }],
        pods: vec![pod(POD_A, 500), pod(POD_B, 600)],
        nodes: vec![NodeInfo {
            name: "node-a".into(),
            labels: Default::default(),
            ready: true,
            schedulable: true,
            allocatable_cpu_milli: 4000,
        }],
    };
    let observation = cluster::join(&snapshot, &usage, end * 1000, &JoinConfig::default());
    let api = &observation.deployments[0];
    assert!(
        close(api.cpu_utilization_percent, 0.8 / 1.1 * 100.0, 1e-9),
        "{}",
        api.cpu_utilization_percent
    );
    assert!(close(api.pool.measured_cpu_percent.unwrap(), 60.0, 1e-9));

    // The same data through an override file that takes node names from the `node` label.
    let args = PromArgs {
        prometheus_url: prometheus.url.clone(),
        prometheus_token_file: None,
        prometheus_ca_file: None,
        prometheus_timeout: Duration::from_secs(10),
        prometheus_history_timeout: Duration::from_secs(60),
        prometheus_queries: Some(PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prom/queries-node-label.json"
        ))),
    };
    let client = PromClient::new(PromSettings::try_from(&args).unwrap()).unwrap();
    assert_eq!(client.templates().node_label, "node");
    let by_node = client.collect(end * 1000).await.unwrap();
    assert_eq!(by_node.node_cpu_percent.len(), 2);
    assert!(close(by_node.node_cpu_percent["node-a"], 60.0, 1e-9));
    assert_eq!(by_node.pod_cpu_5m, usage.pod_cpu_5m);
}

#[tokio::test]
async fn bootstrap_returns_the_full_backfilled_history() {
    let times = timeline();
    let (start, end) = (times[0], *times.last().unwrap());
    let data = synthetic(&times);
    let prometheus = Prometheus::start(&data.openmetrics(), None, None).await;
    let left_open = left_open_ranges();
    let client = prometheus.client();
    let api = DeploymentKey::new("shop", "api");
    let web = DeploymentKey::new("shop", "web");

    let expected = |t: i64, pods: &[&str], requests: f64| -> Option<f64> {
        let used: Option<Vec<f64>> = pods
            .iter()
            .map(|p| pod_rate(&data, "shop", p, t, 300, left_open))
            .collect();
        used.map(|u| u.iter().sum::<f64>() / requests * 100.0)
    };

    // One-minute steps over the whole data: one point per step once rate() has two samples.
    let history = client
        .backfill_many(
            &[api.clone(), web.clone()],
            start * 1000,
            end * 1000,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 2, "{:?}", history.keys());
    let api_history = &history[&api];
    assert_eq!(api_history.len(), 180, "every step after the first sample");
    assert_eq!(api_history[0].0, (start + 60) * 1000);
    assert_eq!(api_history.last().unwrap().0, end * 1000);
    for &(at, value) in api_history {
        let want = expected(at / 1000, &[POD_A, POD_B], 1.1).unwrap();
        assert!(close(value, want, 1e-9), "api at {at}: {value} vs {want}");
    }
    // Once the 5-minute window is full, the known answer: 0.8 cores of 1.1 requested. Pod api-0 and the pod
    // of another namespace are not counted.
    for &(at, value) in api_history
        .iter()
        .filter(|(at, _)| *at >= (start + 300) * 1000)
    {
        assert!(close(value, 0.8 / 1.1 * 100.0, 1e-9), "{at}: {value}");
    }
    for &(at, value) in &history[&web] {
        let want = expected(at / 1000, &[POD_WEB], 1.0).unwrap();
        assert!(close(value, want, 1e-9), "web at {at}: {value} vs {want}");
    }
    assert_eq!(
        client
            .backfill(&api, start * 1000, end * 1000, Duration::from_secs(60))
            .await
            .unwrap(),
        *api_history
    );

    // One-second steps from 1,000 s before the data: 11,801 points, more than one query may return, so the
    // range is chunked.
    let raw = prometheus_http_query::Client::try_from(prometheus.url.as_str())
        .unwrap()
        .query_range("up", start - 1000, end, 1.0)
        .get()
        .await
        .unwrap_err();
    assert!(
        raw.to_string().contains("11,000") || format!("{raw:?}").contains("11,000"),
        "{raw:?}"
    );
    let fine = client
        .backfill(
            &api,
            (start - 1000) * 1000,
            end * 1000,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let first = start + STEP;
    assert_eq!(
        fine.len() as i64,
        end - first + 1,
        "one point per second once rate() has two samples"
    );
    assert!(
        fine.windows(2).all(|w| w[1].0 - w[0].0 == 1000),
        "no gaps, no duplicates at chunk edges"
    );
    assert_eq!(fine[0].0, first * 1000);
    for &(at, value) in fine.iter().step_by(97) {
        let want = expected(at / 1000, &[POD_A, POD_B], 1.1).unwrap();
        assert!(close(value, want, 1e-9), "at {at}: {value} vs {want}");
    }

    // Into the store, and back.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap();
    assert_eq!(store.import_history(&api, api_history).await.unwrap(), 180);
    let samples = store
        .samples(&api, start * 1000, end * 1000 + 1)
        .await
        .unwrap();
    assert_eq!(samples.len(), 180);
    for (s, (at, v)) in samples.iter().zip(api_history) {
        assert_eq!(s.at, *at);
        assert!(close(s.cpu_percent, *v, 1e-6));
    }
}

/// The NAB `realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv` trace: its first 721 values, one every 15 s,
/// taken as the CPU of one pod (value × 0.4 cores, request 1 core) of deployment `nab/trace`.
#[tokio::test]
async fn nab_trace_usage_and_history_match_the_data() {
    let csv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/traces/nab/data/realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv"
    ))
    .expect("the NAB trace in shared/traces");
    let values: Vec<f64> = csv
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').nth(1)?.trim().parse().ok())
        .take(721)
        .collect();
    assert_eq!(values.len(), 721);
    let times = timeline();
    let (start, end) = (times[0], *times.last().unwrap());
    let by_time: HashMap<i64, f64> = times.iter().copied().zip(values.iter().copied()).collect();
    let pod_name = "trace-5c7b9d8f6-zq2x4";
    let mut data = DataSet::default();
    data.counter(
        "container_cpu_usage_seconds_total",
        &[
            ("namespace", "nab"),
            ("pod", pod_name),
            ("container", "app"),
        ],
        &times,
        |t| by_time[&t] * 0.4,
    );
    data.gauge(
        "container_memory_working_set_bytes",
        &[
            ("namespace", "nab"),
            ("pod", pod_name),
            ("container", "app"),
        ],
        &times,
        1e8,
    );
    data.gauge(
        "kube_pod_container_resource_requests",
        &[
            ("namespace", "nab"),
            ("pod", pod_name),
            ("container", "app"),
            ("resource", "cpu"),
        ],
        &times,
        1.0,
    );
    let prometheus = Prometheus::start(&data.openmetrics(), None, None).await;
    let left_open = left_open_ranges();
    let client = prometheus.client();

    // Collected at several instants: exactly rate() of the counter built from the trace.
    let key = ("nab".to_string(), pod_name.to_string());
    for at in [end, end - 3600, end - 2 * 3600 - 7] {
        let usage = client.collect(at * 1000).await.unwrap();
        for (range, got) in [
            (600, &usage.pod_cpu_10m),
            (300, &usage.pod_cpu_5m),
            (short_window(), &usage.pod_cpu_1m),
        ] {
            let want = pod_rate(&data, "nab", pod_name, at, range, left_open).unwrap();
            assert!(
                close(got[&key], want, 1e-9),
                "at {at} [{range}s]: {} vs {want}",
                got[&key]
            );
        }
    }
    // At the end, with 2.x closed windows, the 10-minute rate is the mean of the last 40 trace values.
    if !left_open {
        let usage = client.collect(end * 1000).await.unwrap();
        let mean = values[values.len() - 40..].iter().sum::<f64>() / 40.0 * 0.4;
        assert!(close(usage.pod_cpu_10m[&key], mean, 1e-9));
    }

    // The history covers the whole trace.
    let deployment = DeploymentKey::new("nab", "trace");
    let history = client
        .backfill(
            &deployment,
            start * 1000,
            end * 1000,
            Duration::from_secs(STEP as u64),
        )
        .await
        .unwrap();
    assert_eq!(history.len(), 720);
    assert_eq!(history[0].0, (start + STEP) * 1000);
    assert_eq!(history.last().unwrap().0, end * 1000);
    for &(at, value) in &history {
        let want = pod_rate(&data, "nab", pod_name, at / 1000, 300, left_open).unwrap() * 100.0;
        assert!(close(value, want, 1e-9), "{at}: {value} vs {want}");
    }
}

#[tokio::test]
async fn tls_is_verified_against_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let now = now_seconds() * 1000;
    let bundle =
        smart_autoscaler::certs::generate(&names, smart_autoscaler::certs::today_utc(now), 2)
            .unwrap();
    bundle.write(dir.path()).unwrap();
    let (cert, key, ca) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.crt"),
    );
    let times = timeline();
    let end = *times.last().unwrap();
    let mut data = DataSet::default();
    data.counter(
        "container_cpu_usage_seconds_total",
        &[("namespace", "shop"), ("pod", POD_A), ("container", "app")],
        &times,
        |_| 0.25,
    );
    let prometheus = Prometheus::start(&data.openmetrics(), Some((&cert, &key)), Some(&ca)).await;
    assert!(prometheus.url.starts_with("https://"));

    let mut settings = PromSettings::new(&prometheus.url);
    settings.ca_file = Some(ca.clone());
    let usage = PromClient::new(settings)
        .unwrap()
        .collect(end * 1000)
        .await
        .unwrap();
    assert!(close(
        usage.pod_cpu_5m[&("shop".to_string(), POD_A.to_string())],
        0.25,
        1e-9
    ));

    // A CA that did not sign the certificate: the handshake fails, as an error.
    let mut settings = PromSettings::new(&prometheus.url);
    settings.ca_file = Some(PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/unrelated-ca.pem"
    )));
    settings.retry.attempts = 1;
    let error = PromClient::new(settings)
        .unwrap()
        .collect(end * 1000)
        .await
        .unwrap_err();
    assert!(matches!(error, PromError::Unreachable { .. }), "{error}");
    assert!(
        error.to_string().to_lowercase().contains("certificate"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// Failures: Prometheus down, garbage, tokens (a fake server).

enum Reply {
    Bytes(Vec<u8>),
    Close,
    After(Duration, Vec<u8>),
}

fn http(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

const EMPTY_VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;

/// A server on `listener` answering every request with `reply`; records request heads.
struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    async fn start(reply: Reply) -> FakeServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::on(listener, reply)
    }

    fn on(listener: tokio::net::TcpListener, reply: Reply) -> FakeServer {
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reply = Arc::new(reply);
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, reply) = (seen.clone(), reply.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).to_string());
                    match &*reply {
                        Reply::Bytes(b) => {
                            let _ = stream.write_all(b).await;
                        }
                        Reply::Close => {}
                        Reply::After(delay, b) => {
                            tokio::time::sleep(*delay).await;
                            let _ = stream.write_all(b).await;
                        }
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        FakeServer {
            addr,
            requests,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn quick(url: &str) -> PromSettings {
    let mut s = PromSettings::new(url);
    s.timeout = Duration::from_millis(500);
    s.history_timeout = Duration::from_millis(500);
    s.retry = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
    };
    s.breaker = BreakerConfig {
        failure_threshold: 100,
        cooldown_millis: 1000,
    };
    s
}

#[tokio::test]
async fn prometheus_down_is_an_error_and_opens_the_circuit_until_it_recovers() {
    let port = free_port();
    let mut settings = quick(&format!("http://127.0.0.1:{port}"));
    settings.breaker = BreakerConfig {
        failure_threshold: 2,
        cooldown_millis: 30_000,
    };
    let client = PromClient::new(settings).unwrap();
    let t0: UnixMillis = 1_000_000;
    for t in [t0, t0 + 1] {
        let e = client.collect(t).await.unwrap_err();
        assert!(matches!(e, PromError::Unreachable { .. }), "{e}");
        assert!(
            e.to_string().contains("pod_") || e.to_string().contains("node_cpu"),
            "names the query: {e}"
        );
    }
    assert_eq!(
        client.breaker_state(),
        BreakerState::Open {
            until: t0 + 1 + 30_000
        }
    );
    let e = client.collect(t0 + 2).await.unwrap_err();
    assert!(
        matches!(e, PromError::CircuitOpen { retry_at } if retry_at == t0 + 30_001),
        "{e}"
    );

    // Prometheus comes back; calls wait for the cool-down, then one trial closes the circuit.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let server = FakeServer::on(
        listener,
        Reply::Bytes(http("200 OK", "application/json", EMPTY_VECTOR)),
    );
    assert!(matches!(
        client.collect(t0 + 20_000).await,
        Err(PromError::CircuitOpen { .. })
    ));
    assert!(server.requests().is_empty(), "no call while open");
    let usage = client.collect(t0 + 30_001).await.unwrap();
    assert!(usage.pod_cpu_10m.is_empty());
    assert_eq!(server.requests().len(), 5, "five queries per tick");
    assert_eq!(
        client.breaker_state(),
        BreakerState::Closed {
            consecutive_failures: 0
        }
    );
}

/// A garbage case: name, what the server sends, the expected error, whether it is retried.
type Case = (&'static str, Reply, fn(&PromError) -> bool, bool);

#[tokio::test]
async fn garbage_responses_are_errors_not_panics() {
    let vector = |value: &str| {
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{{"metric":{{"namespace":"a","pod":"b"}},"value":[1,{value}]}}]}}}}"#
        )
    };
    let json = "application/json";
    let cases: Vec<Case> = vec![
        (
            "html page",
            Reply::Bytes(http("200 OK", "text/html", "<html>login</html>")),
            |e| matches!(e, PromError::Decode { .. }),
            false,
        ),
        (
            "truncated json",
            Reply::Bytes(http("200 OK", json, r#"{"status":"success","data":"#)),
            |e| matches!(e, PromError::Decode { .. }),
            false,
        ),
        (
            "not the api",
            Reply::Bytes(http("200 OK", json, r#"[1,2,3]"#)),
            |e| matches!(e, PromError::Decode { .. }),
            false,
        ),
        (
            "scalar",
            Reply::Bytes(http(
                "200 OK",
                json,
                r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2"]}}"#,
            )),
            |e| matches!(e, PromError::Decode { .. }),
            false,
        ),
        (
            "bad value",
            Reply::Bytes(http("200 OK", json, &vector(r#""abc""#))),
            |e| matches!(e, PromError::Decode { .. }),
            false,
        ),
        (
            "number value",
            Reply::Bytes(http("200 OK", json, &vector("1.5"))),
            |e| matches!(e, PromError::Decode { .. }),
            false,
        ),
        (
            "api error",
            Reply::Bytes(http(
                "400 Bad Request",
                json,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 3"}"#,
            )),
            |e| {
                matches!(
                    e,
                    PromError::Rejected {
                        transient: false,
                        ..
                    }
                ) && e.to_string().contains("parse error")
            },
            false,
        ),
        (
            "overloaded",
            Reply::Bytes(http(
                "503 Service Unavailable",
                json,
                r#"{"status":"error","errorType":"unavailable","error":"too many queries"}"#,
            )),
            |e| {
                matches!(
                    e,
                    PromError::Rejected {
                        transient: true,
                        ..
                    }
                )
            },
            true,
        ),
        (
            "bad gateway",
            Reply::Bytes(http("502 Bad Gateway", "text/plain", "upstream down")),
            |e| matches!(e, PromError::Http { status: 502, .. }),
            true,
        ),
        (
            "forbidden",
            Reply::Bytes(http("403 Forbidden", "text/plain", "no")),
            |e| matches!(e, PromError::Http { status: 403, .. }),
            false,
        ),
        (
            "hang up",
            Reply::Close,
            |e| matches!(e, PromError::Unreachable { .. }),
            true,
        ),
        (
            "not http",
            Reply::Bytes(b"\x00\xff\x13garbage\r\n\r\n".to_vec()),
            |e| matches!(e, PromError::Unreachable { .. }),
            true,
        ),
        (
            "too slow",
            Reply::After(Duration::from_secs(3), http("200 OK", json, EMPTY_VECTOR)),
            |e| matches!(e, PromError::Timeout { .. }),
            true,
        ),
    ];
    for (name, reply, expected, retried) in cases {
        let server = FakeServer::start(reply).await;
        let client = PromClient::new(quick(&server.url())).unwrap();
        let started = Instant::now();
        let result = client.collect(1_000).await;
        let error = result.expect_err(name);
        assert!(expected(&error), "{name}: {error:?}");
        // Transient failures are retried (the same request line twice), the others are not. The five queries run
        // concurrently and the first to fail for good cancels the rest, so only repeats are deterministic.
        let mut lines: HashMap<String, usize> = HashMap::new();
        for head in server.requests() {
            *lines
                .entry(head.lines().next().unwrap_or("").to_string())
                .or_default() += 1;
        }
        let most = lines.values().copied().max().unwrap_or(0);
        assert_eq!(
            most,
            if retried { 2 } else { 1 },
            "{name}: {error}: {lines:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn the_bearer_token_file_is_sent_and_reread() {
    let server = FakeServer::start(Reply::Bytes(http(
        "200 OK",
        "application/json",
        EMPTY_VECTOR,
    )))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let mut settings = quick(&format!("{}/prefix/", server.url()));
    settings.token_file = Some(token.clone());
    let client = PromClient::new(settings).unwrap();
    client.collect(1_700_000_000_123).await.unwrap();
    let heads = server.requests();
    assert_eq!(heads.len(), 5);
    for head in &heads {
        let lower = head.to_lowercase();
        assert!(lower.starts_with("get /prefix/api/v1/query?"), "{head}");
        assert!(
            lower.contains("authorization: bearer first-token\r\n"),
            "{head}"
        );
        assert!(head.contains("time=1700000000.123"), "{head}");
    }
    std::fs::write(&token, "second-token").unwrap();
    client.collect(1_700_000_060_000).await.unwrap();
    assert!(
        server.requests()[5..]
            .iter()
            .all(|h| h.to_lowercase().contains("bearer second-token\r\n"))
    );

    std::fs::remove_file(&token).unwrap();
    let e = client.collect(1_700_000_120_000).await.unwrap_err();
    assert!(
        matches!(e, PromError::Config(_)) && e.to_string().contains("token"),
        "{e}"
    );
    assert_eq!(server.requests().len(), 10, "no request without the token");
}
