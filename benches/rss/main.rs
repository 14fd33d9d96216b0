//! Peak RSS of `smart-autoscaler serve` at 2,000 deployments / 20,000 pods / 500 nodes (issue #3's memory aim:
//! under 300 MB). `hack/bench-rss.sh` runs it (`cargo bench --bench rss`) on the release binary; `cargo test`,
//! which runs bench targets without `--bench`, only generates a tiny cluster and its OpenMetrics (no processes).
//!
//! Real parts: the binary given by `BIN` (default: the one cargo built for this test) runs `serve` against a fake
//! kube-apiserver serving list (paged, 500 a page) and watch JSON for a generated cluster shaped like the
//! recorded fixtures (`scale.rs` beside this file), and a real Prometheus backfilled with `promtool tsdb
//! create-blocks-from openmetrics` with cAdvisor, kube-state-metrics and node-exporter series for every pod and
//! node. `serve` lists and watches, ticks every `--interval`, bootstraps every deployment's CPU history from
//! Prometheus into sled in the background, and records decisions. Meanwhile an HPA-like client reads every
//! deployment's `smart_cpu_utilization` over TLS once per tick, as the HPA controller would.
//!
//! VmRSS and VmHWM (peak RSS) are read from `/proc/<pid>/status` every 50 ms and at each phase: started, initial
//! lists complete, first snapshot, bootstrap done (all its batches tried), then each tick after the bootstrap. Tick time is measured
//! from outside (the build under test does not log it): the metrics port's `collected_at_ms` of the served
//! snapshot is polled every 50 ms, and a tick's time is when a new snapshot is first seen minus its collection
//! start, an upper bound within the poll period.
//!
//! After serve is stopped, the two range queries of the bootstrap's first batch are sent once more, exactly as
//! serve sends them (30 days at 5 minutes), to report the response sizes and Prometheus's time for them.
//!
//! Environment: `BIN`, `DEPLOYMENTS` (2000), `NODES` (500), `NAMESPACES` (50), `HOURS` of history (6),
//! `INTERVAL` seconds (15), `TICKS` after the bootstrap (8), `SERVE_ARGS` (extra flags, space-separated),
//! `SEED_DAYS` (0): days of five-minute history written into serve's store before it starts (through the store's
//! own import), so that every deployment's forecaster warms up and holds fitted models; the ticks are then
//! counted once the bootstrap is done and every deployment's models are fitted. `SEED_COMPACT=1` compacts the
//! seeded store before serve starts (measured: 566 -> 562 MiB at 2,000 deployments, so its size is live data).

#[path = "../../tests/common/mod.rs"]
mod common;
mod scale;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::fake_apiserver;
use common::prometheus::{free_port, wait_ready};
use scale::{Cluster, LIST_RV};
use serde_json::Value;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} does not parse")),
        _ => default,
    }
}

fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// VmRSS and VmHWM of a process, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Mem {
    rss: u64,
    hwm: u64,
}

fn mem(pid: u32) -> Option<Mem> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some(Mem {
        rss: field("VmRSS:")?,
        hwm: field("VmHWM:")?,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One row of the table.
struct Row {
    phase: String,
    at: f64,
    mem: Mem,
    tick_ms: Option<f64>,
    note: String,
}

/// What serve's JSON log said that matters here, with when.
#[derive(Default)]
struct LogEvents {
    lists: Option<(f64, Mem)>,
    lists_done: usize,
    bootstrap: Option<(f64, Mem, String)>,
    bootstrap_failed: Option<(f64, Mem, String)>,
    warnings: Vec<String>,
    tail: Vec<String>,
}

fn message(line: &str) -> Option<(String, String, Value)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let level = v["level"].as_str()?.to_string();
    let message = v["fields"]["message"].as_str()?.to_string();
    Some((level, message, v["fields"].clone()))
}

/// Starts Prometheus on an existing TSDB directory (no scrape targets) on a free loopback port.
async fn prometheus(tsdb: &Path, dir: &Path) -> (Killed, String) {
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
    for _ in 0..3 {
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--config.file={}", config.display()))
            .arg("--storage.tsdb.retention.time=10y")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus must be installed (hack/install-tools.sh installs the Debian prometheus package)");
        let url = format!("http://127.0.0.1:{port}");
        if wait_ready(&mut child, &url, None).await {
            return (Killed(child), url);
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "prometheus did not start on port {port}, retrying:\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
    }
    panic!("prometheus did not become ready");
}

/// Reads every deployment's served metric over TLS, four requests in flight, as the HPA controller does once
/// per sync. Returns (200s, other answers, seconds).
async fn hpa_round(
    client: reqwest::Client,
    secure: String,
    deployments: Arc<Vec<(String, String)>>,
) -> (usize, usize, f64) {
    let started = Instant::now();
    let lanes = 4;
    let mut tasks = Vec::new();
    for lane in 0..lanes {
        let (client, secure, deployments) = (client.clone(), secure.clone(), deployments.clone());
        tasks.push(tokio::spawn(async move {
            let (mut ok, mut bad) = (0, 0);
            for (ns, name) in deployments.iter().skip(lane).step_by(lanes) {
                let url = format!(
                    "https://{secure}/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/smart_cpu_utilization?labelSelector=deployment%3D{name}"
                );
                match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => {
                        let body: Value = r.json().await.unwrap_or_default();
                        if body["items"][0]["value"].is_string() {
                            ok += 1;
                        } else {
                            bad += 1;
                        }
                    }
                    _ => bad += 1,
                }
            }
            (ok, bad)
        }));
    }
    let (mut ok, mut bad) = (0, 0);
    for t in tasks {
        let (o, b) = t.await.unwrap();
        ok += o;
        bad += b;
    }
    (ok, bad, started.elapsed().as_secs_f64())
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// serve's default bootstrap window (`--store-rollup-retention`, 30 d) and step (5 min).
const BOOTSTRAP_WINDOW_S: i64 = 30 * 86_400;
const BOOTSTRAP_STEP_S: i64 = 300;

/// The bootstrap's two range queries as serve sends them for every deployment at once (POST, default
/// templates, 30 days at 5 minutes), timed against the same Prometheus: (query, response bytes, series,
/// points, seconds).
async fn bootstrap_queries(
    prometheus: &str,
    deployments: &[(String, String)],
) -> Vec<(&'static str, usize, usize, usize, f64)> {
    use smart_autoscaler::domain::model::DeploymentKey;
    use smart_autoscaler::prom::queries::{QueryTemplates, history_query};
    let keys: Vec<DeploymentKey> = deployments
        .iter()
        .map(|(ns, name)| DeploymentKey::new(ns.as_str(), name.as_str()))
        .collect();
    let t = QueryTemplates::default();
    let end = unix_millis() / 1000;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let mut out = Vec::new();
    for (name, template) in [
        ("history_cpu", &t.history_cpu),
        ("history_cpu_requests", &t.history_cpu_requests),
    ] {
        let body = serde_urlencoded::to_string([
            ("query", history_query(template, &keys)),
            ("start", (end - BOOTSTRAP_WINDOW_S).to_string()),
            ("end", end.to_string()),
            ("step", BOOTSTRAP_STEP_S.to_string()),
            ("timeout", "600s".to_string()),
        ])
        .unwrap();
        let started = Instant::now();
        let bytes = client
            .post(format!("{prometheus}/api/v1/query_range"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let seconds = started.elapsed().as_secs_f64();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        let points = result
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum();
        out.push((name, bytes.len(), result.len(), points, seconds));
    }
    out
}

/// Writes `days` of five-minute history (a daily wave around 50% with noise, at the deployment's pod count)
/// for every deployment into a store at `path`, through the same import serve's bootstrap uses; returns the
/// points written.
async fn seed_store(path: &Path, cluster: &Cluster, days: i64) -> usize {
    use smart_autoscaler::domain::model::DeploymentKey;
    use smart_autoscaler::store::{Retention, Store};
    let store = Store::open(path, Retention::default()).await.unwrap();
    let step = 300_000i64;
    let end = unix_millis().div_euclid(step) * step;
    let steps = days * 86_400_000 / step;
    let mut written = 0;
    for (i, d) in cluster.deployments.iter().enumerate() {
        let phase = i as f64 * 0.37;
        let pods = d.pods.len() as u32;
        let points: Vec<(i64, f64, Option<u32>)> = (0..steps)
            .map(|s| {
                let at = end - (steps - s) * step;
                let day = (at % 86_400_000) as f64 / 86_400_000.0;
                let noise = ((s as f64 * 12.9898 + phase).sin() * 43_758.545).fract() * 6.0;
                let value = 50.0 + 20.0 * (std::f64::consts::TAU * day + phase).sin() + noise;
                (at, value, Some(pods))
            })
            .collect();
        written += store
            .import_history_with_pods(
                &DeploymentKey::new(d.namespace.as_str(), d.name.as_str()),
                &points,
            )
            .await
            .unwrap();
    }
    store.flush().await.unwrap();
    // As serve would have left it after its last compaction (it compacts when the store has grown to
    // COMPACT_GROWTH times that): the import's churn leaves sled's log several times the live data.
    if std::env::var("SEED_COMPACT").is_ok_and(|v| v == "1") {
        let report = store.compact().await.unwrap();
        eprintln!(
            "seeded store compacted: {:.1} -> {:.1} MiB in {:.1} s",
            report.before_bytes as f64 / 1_048_576.0,
            report.after_bytes as f64 / 1_048_576.0,
            report.millis as f64 / 1000.0
        );
    }
    written
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run());
}

/// What `cargo test` runs: the generator on a tiny cluster, so the benchmark's data stays buildable and sane.
fn smoke() {
    let cluster = Cluster::generate(3, 5, 1, unix_millis() / 1000);
    assert_eq!(cluster.collections().len(), 5);
    assert!(cluster.pod_count() >= 3);
    let mut om = Vec::new();
    let samples = cluster.write_openmetrics(&mut om, 1, 60).unwrap();
    assert!(samples > 0 && om.ends_with(b"# EOF\n"), "{samples} samples");
    println!(
        "rss: generator smoke test passed; run `cargo bench --bench rss` or hack/bench-rss.sh to measure"
    );
}

async fn run() {
    let bin =
        std::env::var("BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_smart-autoscaler").to_string());
    let deployments: usize = env_or("DEPLOYMENTS", 2000);
    let nodes: usize = env_or("NODES", 500);
    let namespaces: usize = env_or("NAMESPACES", 50);
    let hours: u32 = env_or("HOURS", 6);
    let interval: u64 = env_or("INTERVAL", 15);
    let ticks: usize = env_or("TICKS", 8);
    let extra: Vec<String> = std::env::var("SERVE_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut setup: Vec<String> = Vec::new();

    // Kubernetes objects.
    let t = Instant::now();
    let now = unix_millis() / 1000;
    let cluster = Cluster::generate(deployments, nodes, namespaces, now);
    let collections = cluster.collections();
    let pods = cluster.pod_count();
    let mut sizes = String::new();
    for c in &collections {
        sizes.push_str(&format!(
            "{} {} ({:.1} MiB), ",
            c.items.len(),
            c.kind.trim_end_matches("List"),
            c.bytes() as f64 / 1_048_576.0
        ));
    }
    setup.push(format!(
        "fake apiserver: {} in {:.1} s",
        sizes.trim_end_matches(", "),
        t.elapsed().as_secs_f64()
    ));
    eprintln!("{}", setup[0]);
    let api = fake_apiserver::start_generated(collections, LIST_RV).await;

    // Prometheus: write the OpenMetrics, backfill, start.
    let t = Instant::now();
    let ahead = 1800 + 3 * ticks as i64 * interval as i64;
    let om_path = dir.path().join("data.om");
    let mut om = BufWriter::with_capacity(1 << 20, std::fs::File::create(&om_path).unwrap());
    let samples = cluster.write_openmetrics(&mut om, hours, ahead).unwrap();
    om.flush().unwrap();
    drop(om);
    let om_bytes = std::fs::metadata(&om_path).unwrap().len();
    let written = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let tsdb = dir.path().join("tsdb");
    common::prometheus::backfill(&om_path, &tsdb);
    std::fs::remove_file(&om_path).unwrap();
    setup.push(format!(
        "Prometheus: {:.1} M samples ({} h of history at 1 min, {} min ahead), {:.0} MiB of OpenMetrics written in \
         {written:.0} s, backfilled by promtool in {:.0} s",
        samples as f64 / 1e6,
        hours,
        ahead / 60,
        om_bytes as f64 / 1_048_576.0,
        t.elapsed().as_secs_f64()
    ));
    eprintln!("{}", setup[1]);
    let (_prometheus, prom_url) = prometheus(&tsdb, dir.path()).await;

    // Certificates for the secure port.
    let certs = dir.path().join("certs");
    let out = Command::new(&bin)
        .args(["certs", "--san", "127.0.0.1", "--out-dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A month of stored history (optional): what serve finds in its store after running for that long, so
    // every deployment's forecaster warms up on it and holds fitted models, as in a long-running server.
    let data = dir.path().join("data");
    let seed_days: i64 = env_or("SEED_DAYS", 0);
    if seed_days > 0 {
        let t = Instant::now();
        let points = seed_store(&data.join("store"), &cluster, seed_days).await;
        setup.push(format!(
            "store seeded with {seed_days} days of 5-minute history per deployment ({:.1} M points) in {:.0} s",
            points as f64 / 1e6,
            t.elapsed().as_secs_f64()
        ));
        eprintln!("{}", setup.last().unwrap());
    }

    // serve.
    let started = Instant::now();
    let mut child = Command::new(&bin)
        // The generated API answers no reviews: measure serving, not delegated auth.
        .env("SMART_AUTOSCALER_AUTHN_AUTHZ", "off")
        .args([
            "--log-format",
            "json",
            "serve",
            "--bind-address",
            "127.0.0.1",
        ])
        .args(["--secure-port", "0", "--metrics-port", "0"])
        .args(["--interval", &format!("{interval}s")])
        .args(["--prometheus-url", &prom_url])
        .arg("--kubeconfig")
        .arg(&api.kubeconfig)
        .arg("--tls-cert-file")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(certs.join("tls.key"))
        .arg("--data-dir")
        .arg(&data)
        .args(&extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let serve = Killed(child);

    // Samples of (seconds since start, VmRSS, VmHWM).
    let samples_mem: Arc<Mutex<Vec<(f64, Mem)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples_mem, stop) = (samples_mem.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match mem(pid) {
                    Some(m) => samples_mem
                        .lock()
                        .unwrap()
                        .push((started.elapsed().as_secs_f64(), m)),
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let events: Arc<Mutex<LogEvents>> = Arc::default();
    {
        let events = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                let at = started.elapsed().as_secs_f64();
                let m = mem(pid).unwrap_or_default();
                let mut e = events.lock().unwrap();
                if e.tail.len() >= 40 {
                    e.tail.remove(0);
                }
                e.tail.push(line.clone());
                let Some((level, msg, fields)) = message(&line) else {
                    continue;
                };
                if msg.starts_with("initial list complete") {
                    e.lists_done += 1;
                    if e.lists_done == 5 {
                        e.lists = Some((at, m));
                    }
                } else if msg.starts_with("bootstrapped history") {
                    let note = format!(
                        "{} deployments in {} batches, {} points imported",
                        fields["deployments"], fields["batches"], fields["points"]
                    );
                    if fields["failed_batches"].as_u64() == Some(0) {
                        e.bootstrap = Some((at, m, note));
                    } else {
                        let failed = format!("{} batches FAILED; {note}", fields["failed_batches"]);
                        e.bootstrap_failed = Some((at, m, failed));
                    }
                } else if level == "WARN" || level == "ERROR" {
                    e.warnings.push(format!("{at:.1}s {msg} {fields}"));
                }
            }
        });
    }
    let mut line = String::new();
    let mut reader = BufReader::new(stdout);
    reader.read_line(&mut line).unwrap();
    let listening_mem = mem(pid).unwrap_or_default();
    let listening_at = started.elapsed().as_secs_f64();
    std::thread::spawn(move || for _ in reader.lines() {});
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_string()
    };
    let (secure, metrics) = (field("secure"), field("metrics"));
    let mut rows = vec![Row {
        phase: "started (listening)".into(),
        at: listening_at,
        mem: listening_mem,
        tick_ms: None,
        note: String::new(),
    }];

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let ca = std::fs::read(certs.join("ca.crt")).unwrap();
    let tls = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let all: Arc<Vec<(String, String)>> = Arc::new(
        cluster
            .deployments
            .iter()
            .map(|d| (d.namespace.clone(), d.name.clone()))
            .collect(),
    );
    let probe = format!(
        "http://{metrics}/api/v1/deployments/{}/{}",
        all[0].0, all[0].1
    );

    // Warm-ups run within serve's forecasting CPU budget (a quarter of a core by default), a few hundred
    // deployments a minute.
    let warm_up_allowance = if seed_days > 0 { 2400 } else { 0 };
    let deadline =
        Instant::now() + Duration::from_secs(600 + warm_up_allowance + 3 * ticks as u64 * interval);
    let mut last_collected = 0i64;
    let mut tick_times: Vec<f64> = Vec::new();
    let mut after_bootstrap = 0usize;
    let mut lists_row = false;
    let mut bootstrap_row = false;
    // Without seeded history there is nothing to warm up on (6 h is too little to fit).
    let mut fitted_row = seed_days == 0;
    let mut hpa: Option<tokio::task::JoinHandle<(usize, usize, f64)>> = None;
    let mut hpa_rounds: Vec<(usize, usize, f64)> = Vec::new();
    while after_bootstrap < ticks {
        assert!(
            Instant::now() < deadline,
            "timed out; last log lines:\n{}",
            events.lock().unwrap().tail.join("\n")
        );
        if mem(pid).is_none() {
            panic!(
                "serve exited; last log lines:\n{}",
                events.lock().unwrap().tail.join("\n")
            );
        }
        {
            let e = events.lock().unwrap();
            if !lists_row && let Some((at, m)) = e.lists {
                lists_row = true;
                rows.push(Row {
                    phase: "initial lists complete (5 kinds)".into(),
                    at,
                    mem: m,
                    tick_ms: None,
                    note: format!("{} list/watch requests", api.api.seen.lock().unwrap().len()),
                });
            }
            if !bootstrap_row && let Some((at, m, note)) = &e.bootstrap {
                bootstrap_row = true;
                rows.push(Row {
                    phase: "bootstrap done".into(),
                    at: *at,
                    mem: *m,
                    tick_ms: None,
                    note: note.clone(),
                });
            }
            // A failed bootstrap is a result too: serve goes on with history built from ticks.
            if !bootstrap_row && let Some((at, m, error)) = &e.bootstrap_failed {
                bootstrap_row = true;
                rows.push(Row {
                    phase: "bootstrap done, with failures".into(),
                    at: *at,
                    mem: *m,
                    tick_ms: None,
                    note: error.clone(),
                });
            }
        }
        if let Some(h) = &hpa
            && h.is_finished()
        {
            hpa_rounds.push(hpa.take().unwrap().await.unwrap());
        }
        let collected = match http.get(&probe).send().await {
            Ok(r) if r.status().is_success() => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["collected_at_ms"].as_i64())
                .unwrap_or(0),
            _ => 0,
        };
        if collected > last_collected {
            let seen = unix_millis();
            let m = mem(pid).unwrap_or_default();
            let tick_ms = (seen - collected) as f64;
            let first = last_collected == 0;
            last_collected = collected;
            tick_times.push(tick_ms);
            if !fitted_row
                && let Ok(r) = http.get(format!("http://{metrics}/metrics")).send().await
                && let Ok(text) = r.text().await
            {
                let fitted = common::sample(&text, "smart_autoscaler_forecast_fitted_deployments")
                    .unwrap_or(0.0) as usize;
                if fitted == all.len() {
                    fitted_row = true;
                    rows.push(Row {
                        phase: "forecasts fitted (all)".into(),
                        at: started.elapsed().as_secs_f64(),
                        mem: mem(pid).unwrap_or_default(),
                        tick_ms: None,
                        note: format!("{fitted} deployments with fitted models"),
                    });
                }
            }
            let phase = if first {
                "first snapshot".to_string()
            } else if bootstrap_row && fitted_row {
                after_bootstrap += 1;
                format!("tick {after_bootstrap} after bootstrap")
            } else if bootstrap_row {
                "tick (warm-ups running)".to_string()
            } else {
                "tick (bootstrap running)".to_string()
            };
            rows.push(Row {
                phase,
                at: started.elapsed().as_secs_f64(),
                mem: m,
                tick_ms: Some(tick_ms),
                note: String::new(),
            });
            if hpa.is_none() {
                hpa = Some(tokio::spawn(hpa_round(
                    tls.clone(),
                    secure.clone(),
                    all.clone(),
                )));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if let Some(h) = hpa.take() {
        hpa_rounds.push(h.await.unwrap());
    }

    // Checks that the run measured what it claims: every deployment managed and served.
    let listed: Value = http
        .get(format!("http://{metrics}/api/v1/deployments"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let managed = listed["items"].as_array().map_or(0, Vec::len);
    let get_text = async |path: &str| {
        http.get(format!("http://{metrics}{path}"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let metrics_text = get_text("/metrics").await;
    let readyz = get_text("/readyz").await;
    let end = mem(pid).unwrap_or_default();
    let end_at = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    drop(serve);
    let store_bytes = dir_bytes(&data.join("store"));
    // With serve stopped, one bootstrap batch's queries alone: what serve had to receive and parse at once.
    let pods_per_deployment = (pods / all.len().max(1)) as u32;
    let first_batch: Vec<(String, String)> = {
        use smart_autoscaler::dataplane::{
            BOOTSTRAP_DEPLOYMENTS_PER_BATCH, BOOTSTRAP_PODS_PER_BATCH, bootstrap_batches,
        };
        use smart_autoscaler::domain::model::DeploymentKey;
        let keys: Vec<(DeploymentKey, u32)> = all
            .iter()
            .map(|(ns, n)| {
                (
                    DeploymentKey::new(ns.as_str(), n.as_str()),
                    pods_per_deployment,
                )
            })
            .collect();
        bootstrap_batches(
            &keys,
            BOOTSTRAP_PODS_PER_BATCH,
            BOOTSTRAP_DEPLOYMENTS_PER_BATCH,
        )
        .swap_remove(0)
        .into_iter()
        .map(|k| (k.namespace, k.name))
        .collect()
    };
    let bootstrap = bootstrap_queries(&prom_url, &first_batch).await;

    // When the peak was reached.
    let series = samples_mem.lock().unwrap().clone();
    let peak_at = series
        .iter()
        .find(|(_, m)| m.hwm >= end.hwm)
        .map_or(end_at, |(at, _)| *at);
    let max_rss = series.iter().map(|(_, m)| m.rss).max().unwrap_or(0);
    rows.sort_by(|a, b| a.at.total_cmp(&b.at));
    let phase_at = |at: f64| {
        rows.iter()
            .rev()
            .find(|r| r.at <= at)
            .map_or("start".to_string(), |r| format!("after '{}'", r.phase))
    };
    rows.push(Row {
        phase: "end".into(),
        at: end_at,
        mem: end,
        tick_ms: None,
        note: format!("peak reached at {peak_at:.1} s ({})", phase_at(peak_at)),
    });

    let ok_hpa: usize = hpa_rounds.iter().map(|r| r.0).sum();
    let bad_hpa: usize = hpa_rounds.iter().map(|r| r.1).sum();
    let mut sorted = tick_times.clone();
    sorted.sort_by(f64::total_cmp);
    let warnings = events.lock().unwrap().warnings.clone();
    let count = |prefix: &str| {
        metrics_text
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };

    println!();
    println!(
        "serve RSS benchmark: {} deployments, {pods} pods, {} nodes, {namespaces} namespaces; --interval {interval}s; \
         {} cores, {}",
        cluster.deployments.len(),
        cluster.nodes.len(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        jiff::Timestamp::now().strftime("%F")
    );
    for s in &setup {
        println!("  {s}");
    }
    println!(
        "| {:<34} | {:>7} | {:>9} | {:>9} | {:>8} | note",
        "phase", "t (s)", "VmRSS MiB", "VmHWM MiB", "tick ms"
    );
    println!(
        "|{}|{}|{}|{}|{}|------",
        "-".repeat(36),
        "-".repeat(9),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(10)
    );
    for r in &rows {
        println!(
            "| {:<34} | {:>7.1} | {:>9.1} | {:>9.1} | {:>8} | {}",
            r.phase,
            r.at,
            mib(r.mem.rss),
            mib(r.mem.hwm),
            r.tick_ms.map_or(String::new(), |t| format!("{t:.0}")),
            r.note
        );
    }
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let max = sorted.last().copied().unwrap_or(0.0);
    println!(
        "peak RSS (VmHWM) {:.1} MiB ({:.1} MB), largest sampled VmRSS {:.1} MiB; aim: < 300 MB: {}",
        mib(end.hwm),
        end.hwm as f64 * 1024.0 / 1e6,
        mib(max_rss),
        if (end.hwm as f64 * 1024.0) < 300e6 {
            "met"
        } else {
            "NOT met"
        }
    );
    println!(
        "tick time (new snapshot seen - its collection start, 50 ms polling): median {median:.0} ms, max {max:.0} ms over {} ticks",
        sorted.len()
    );
    println!(
        "served: {managed} deployments managed; HPA-like reads of every deployment's metric over TLS: {} rounds, {ok_hpa} ok, {bad_hpa} failed, {:.1} s per round (median)",
        hpa_rounds.len(),
        {
            let mut t: Vec<f64> = hpa_rounds.iter().map(|r| r.2).collect();
            t.sort_by(f64::total_cmp);
            t.get(t.len() / 2).copied().unwrap_or(0.0)
        }
    );
    println!(
        "store on disk {:.1} MiB; {}; {}; {}; {}",
        store_bytes as f64 / 1_048_576.0,
        count("smart_autoscaler_engine_ticks_total"),
        count("smart_autoscaler_source_errors_total"),
        count("smart_autoscaler_forecast_fitted_deployments"),
        count("smart_autoscaler_forecast_refits_total")
    );
    let allocator: Vec<String> = ["allocated", "active", "resident", "retained"]
        .into_iter()
        .filter_map(|kind| {
            let series = format!("smart_autoscaler_allocator_bytes{{kind=\"{kind}\"}}");
            common::sample(&metrics_text, &series)
                .map(|v| format!("{kind} {:.1} MiB", v / 1_048_576.0))
        })
        .collect();
    println!(
        "allocator at the end (jemalloc's statistics): {}",
        allocator.join(", ")
    );
    for (name, bytes, series, points, seconds) in &bootstrap {
        println!(
            "bootstrap query {name} (one batch: {} deployments, 30 d at 5 min), timed after the run: {:.1} MiB of \
             JSON, {series} series, {points} points, {seconds:.1} s in Prometheus (serve's default \
             --prometheus-history-timeout: 60 s)",
            first_batch.len(),
            *bytes as f64 / 1_048_576.0
        );
    }
    if !warnings.is_empty() {
        println!("serve warnings ({}):", warnings.len());
        let mut distinct: BTreeMap<String, usize> = BTreeMap::new();
        for w in &warnings {
            *distinct
                .entry(w.split_once(' ').map_or(w.clone(), |(_, m)| m.to_string()))
                .or_default() += 1;
        }
        for (w, n) in distinct.iter().take(10) {
            println!("  {n} x {}", w.chars().take(300).collect::<String>());
        }
    }

    assert_eq!(
        managed,
        cluster.deployments.len(),
        "every deployment is managed"
    );
    assert!(ok_hpa > 0 && bad_hpa == 0, "HPA-like reads: {readyz}");
}
