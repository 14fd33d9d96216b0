//! Crashes, a full disk and a soak, end to end against the real `serve` binary (fake apiserver with recorded API
//! JSON, a real Prometheus with the recording's metrics): `kill -9` at random moments under load, the data
//! directory on a small tmpfs filled to ENOSPC, and a fixed request rate with the process's RSS sampled.
//!
//! Each test prints `FIGURE|<fault>|<measure>|<value>|<bound>|<ok|FAIL>` lines on stdout (run with
//! `--nocapture`); `hack/bench-faults.sh` runs them with large counts (`FAULTS_KILLS`, `FAULTS_SOAK_SECS`) and
//! turns those lines into a table.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::prometheus::Prometheus;
use common::serve::{Launch, Serve, openmetrics, unix_now};
use common::{fake_apiserver, figure};
use serde_json::Value;

const SMART: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/smart_cpu_utilization?labelSelector=deployment%3Dapi";
const HISTORY: &str = "/api/v1/deployments/shop/api/history?since=2h&step=1m";

/// A count from the environment, or `default`.
fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `(status, value, timestamp)` of shop/api's smart metric; status 0 when the request failed.
async fn read(client: &reqwest::Client, secure: &str) -> (u16, String, String) {
    let Ok(r) = client.get(format!("https://{secure}{SMART}")).send().await else {
        return (0, String::new(), String::new());
    };
    let code = r.status().as_u16();
    let Ok(body) = r.json::<Value>().await else {
        return (0, String::new(), String::new());
    };
    let item = &body["items"][0];
    (
        code,
        item["value"].as_str().unwrap_or_default().to_string(),
        item["timestamp"].as_str().unwrap_or_default().to_string(),
    )
}

async fn text(url: String) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Samples of shop/api in the store, as the history endpoint counts them.
async fn stored_samples(serve: &Serve) -> u64 {
    let (code, body) = text(serve.metrics_url(HISTORY)).await;
    assert_eq!(code, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    body["points"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["samples"].as_u64()).sum())
        .unwrap_or(0)
}

/// Waits until `check` holds, up to `within`.
async fn eventually<F: Future<Output = bool>>(what: &str, within: Duration, check: impl Fn() -> F) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Bytes of every file under `dir`.
fn du(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => du(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The fake apiserver (watch events released) and a real Prometheus with the recording.
struct Sources {
    api: fake_apiserver::Harness,
    prom: Prometheus,
}

impl Sources {
    async fn start() -> Sources {
        let api = fake_apiserver::start(vec![]).await;
        api.release.send(true).unwrap();
        let prom = Prometheus::start(&openmetrics(unix_now()), None, None).await;
        Sources { api, prom }
    }

    fn launch<'a>(&'a self, extra: &'a [&'a str]) -> Launch<'a> {
        Launch {
            prometheus_url: &self.prom.url,
            kubeconfig: &self.api.kubeconfig,
            extra,
            ..Launch::default()
        }
    }
}

/// The data directory on a 32 MiB tmpfs in a private mount namespace (`unshare -m`, as root): the test fills
/// it through `/proc/<pid>/root` until ENOSPC. serve keeps serving from memory, shows the store's error in
/// `/readyz` (staying ready: values can be served) and `/metrics`, and writes again once space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_keeps_serving_from_memory_and_writes_resume() {
    let sources = Sources::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir).unwrap();
    let data = data_dir.to_str().unwrap();
    let wrapper = [
        "unshare",
        "-m",
        "sh",
        "-c",
        "mount -t tmpfs -o size=32m tmpfs \"$0\" && exec \"$@\"",
        data,
    ];
    let serve = Serve::launch(
        dir,
        &Launch {
            wrapper: &wrapper,
            data_dir: Some(data_dir.clone()),
            ..sources.launch(&[])
        },
    );
    let client = serve.client();
    serve
        .wait_readyz(Duration::from_secs(60), |b| {
            b.contains("[+]store") && b.contains("[+]values")
        })
        .await;
    // The store is on the tmpfs, not on the test's disk.
    let inside = PathBuf::from(format!("/proc/{}/root{data}", serve.pid()));
    assert!(inside.join("store").is_dir());
    assert!(
        !data_dir.join("store").exists(),
        "the tmpfs is not private to serve"
    );
    eventually("samples stored", Duration::from_secs(20), || async {
        stored_samples(&serve).await >= 2
    })
    .await;

    // Fill the tmpfs.
    let filler = inside.join("filler");
    let full_at = {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0x5a_u8; 1 << 20];
        loop {
            if let Err(e) = f.write_all(&chunk).and_then(|()| f.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
                break;
            }
        }
        Instant::now()
    };
    eprintln!(
        "filled: {} MiB of filler",
        std::fs::metadata(&filler).unwrap().len() >> 20
    );

    // The store's error shows within a few ticks, in /readyz (still ready) and /metrics.
    let body =
        // sled writes into space its log file already holds until it needs more: the error comes when it does.
        common::serve::wait_for_readyz(&serve.metrics, Duration::from_secs(60), |_, body| {
            body.contains("[-]store")
        })
        .await;
    let shown_after = full_at.elapsed();
    eprintln!("readyz with the disk full:\n{body}");
    let (_, metrics) = text(serve.metrics_url("/metrics")).await;
    let errors = common::sample(
        &metrics,
        "smart_autoscaler_source_errors_total{component=\"store\"}",
    )
    .unwrap_or(0.0);
    let failing = common::sample(&metrics, "smart_autoscaler_store_write_failing");
    assert!(errors > 0.0, "store errors not counted");
    assert_eq!(failing, Some(1.0), "store_write_failing not set");

    // Serving continues from memory: fresh values (new timestamps) and readiness, for 10 ticks.
    let (code, _, first) = read(&client, &serve.secure).await;
    assert_eq!(code, 200);
    let mut last = first.clone();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (code, value, at) = read(&client, &serve.secure).await;
        assert_eq!(code, 200, "read with the disk full: {value}");
        last = at;
        let (code, body) = text(serve.metrics_url("/readyz")).await;
        assert_eq!(code, 200, "unready with the disk full: {body}");
        assert!(body.contains("[-]store"), "{body}");
    }
    assert!(
        last > first,
        "values not fresh with the disk full: {first} -> {last}"
    );
    let during = stored_samples(&serve).await;

    // Space again: writes resume.
    std::fs::remove_file(&filler).unwrap();
    let freed_at = Instant::now();
    serve
        .wait_readyz(Duration::from_secs(30), |b| b.contains("[+]store"))
        .await;
    eventually("new samples stored", Duration::from_secs(30), || async {
        stored_samples(&serve).await >= during + 2
    })
    .await;
    let resumed_after = freed_at.elapsed();
    let (_, metrics) = text(serve.metrics_url("/metrics")).await;
    assert_eq!(
        common::sample(&metrics, "smart_autoscaler_store_write_failing"),
        Some(0.0)
    );
    assert!(
        common::sample(
            &metrics,
            "smart_autoscaler_store_reopens_total{outcome=\"ok\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "no reopen counted"
    );
    let ok = figure(
        "disk full",
        "error shown in /readyz after fill",
        format!("{:.1}s", shown_after.as_secs_f64()),
        "<=60s",
        true,
    ) & figure(
        "disk full",
        "reads while full (10 ticks)",
        "10/10 200, fresh",
        "all 200",
        true,
    ) & figure(
        "disk full",
        "writes resumed after freeing",
        format!("{:.1}s", resumed_after.as_secs_f64()),
        "<=30s",
        true,
    );
    assert!(ok);
}

/// ENOSPC on Linux.
fn libc_enospc() -> i32 {
    28
}

/// Seconds since the epoch of an RFC 3339 timestamp.
fn seconds(rfc3339: &str) -> i64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .unwrap_or_else(|e| panic!("{rfc3339:?}: {e}"))
        .as_second()
}

/// Reads on both ports until `stop`: external-metric reads over TLS from 3 tasks, `/metrics` and the history
/// endpoint from one more. Returns the tick times (seconds) of every 200 metric read, and the request count.
fn load(
    serve: &Serve,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(std::collections::BTreeSet<i64>, u64)> {
    let client = serve.client();
    let (secure, metrics_url, history_url) = (
        serve.secure.clone(),
        serve.metrics_url("/metrics"),
        serve.metrics_url(HISTORY),
    );
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..3 {
            let (client, secure, stop) = (client.clone(), secure.clone(), stop.clone());
            tasks.spawn(async move {
                let mut seen = std::collections::BTreeSet::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let (code, _, at) = read(&client, &secure).await;
                    n += 1;
                    if code == 200 {
                        seen.insert(seconds(&at));
                    }
                }
                (seen, n)
            });
        }
        let plain = reqwest::Client::new();
        tasks.spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                for url in [&metrics_url, &history_url] {
                    let _ = plain.get(url.as_str()).send().await.map(|r| r.bytes());
                    n += 1;
                }
            }
            (std::collections::BTreeSet::new(), n)
        });
        let mut all = std::collections::BTreeSet::new();
        let mut requests = 0;
        while let Some(done) = tasks.join_next().await {
            let (seen, n) = done.unwrap();
            all.extend(seen);
            requests += n;
        }
        (all, requests)
    })
}

/// `kill -9` of serve at random moments under load, `FAULTS_KILLS` times (default 5): the store opens every
/// time (the test opens it itself after each kill, then serve does), at most one tick that was served before
/// the kill is missing from it afterwards (sled writes its log to disk every second; the interval is 2 s), and
/// its size on disk stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_at_most_one_tick() {
    use rand::Rng;
    let kills = env_or("FAULTS_KILLS", 5);
    let sources = Sources::start().await;
    let key = smart_autoscaler::domain::model::DeploymentKey::new("shop", "api");
    let mut dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let (mut worst_lost, mut total_lost, mut served_ticks) = (0_usize, 0_usize, 0_usize);
    let (mut sizes, mut opens_ms) = (Vec::new(), Vec::new());
    let mut requests = 0;
    let started = Instant::now();
    for round in 0..kills {
        let serve = Serve::launch(
            dir,
            &Launch {
                interval: "2s",
                quiet: round > 0,
                ..sources.launch(&[])
            },
        );
        serve
            .wait_readyz(Duration::from_secs(60), |b| {
                b.contains("[+]store") && b.contains("[+]values")
            })
            .await;
        let stop = Arc::new(AtomicBool::new(false));
        let loader = load(&serve, stop.clone());
        // A random moment: anywhere in the first few ticks, mid-write or between.
        let wait = rand::rng().random_range(300..6_000);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        dir = serve.kill_and_keep();
        stop.store(true, Ordering::SeqCst);
        let (served, n) = loader.await.unwrap();
        requests += n;

        // The store opens, and holds every tick served before the kill but (at most) the last.
        let opened = Instant::now();
        let store = smart_autoscaler::store::Store::open(
            data_dir.join("store"),
            smart_autoscaler::store::Retention::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("round {round}: the store does not open: {e}"));
        opens_ms.push(opened.elapsed().as_millis() as u64);
        let stored: std::collections::BTreeSet<i64> = store
            .samples(&key, 0, i64::MAX)
            .await
            .unwrap()
            .iter()
            .map(|s| s.at.div_euclid(1000))
            .collect();
        drop(store);
        let lost: Vec<i64> = served.difference(&stored).copied().collect();
        eprintln!(
            "round {round}: killed after {wait} ms, {} ticks served, lost {lost:?}",
            served.len()
        );
        worst_lost = worst_lost.max(lost.len());
        total_lost += lost.len();
        served_ticks += served.len();
        sizes.push(du(&data_dir.join("store")));
    }
    let max_size = sizes.iter().copied().max().unwrap_or(0);
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let mut opens = opens_ms.clone();
    opens.sort_unstable();
    let ok = figure(
        "kill -9 of serve",
        &format!("store opened after each of {kills} kills"),
        format!("{kills}/{kills}, slowest {} ms", opens.last().unwrap_or(&0)),
        "every time",
        true,
    ) & figure(
        "kill -9 of serve",
        "served ticks missing after a kill (worst kill)",
        worst_lost,
        "<=1",
        worst_lost <= 1,
    ) & figure(
        "kill -9 of serve",
        "served ticks missing, all kills",
        format!("{total_lost} of {served_ticks}"),
        "-",
        true,
    ) & figure(
        "kill -9 of serve",
        "store size on disk first/last/max",
        format!(
            "{} / {} / {}",
            mib(sizes[0]),
            mib(*sizes.last().unwrap()),
            mib(max_size)
        ),
        "<=64 MiB",
        max_size <= 64 << 20,
    ) & figure(
        "kill -9 of serve",
        "requests in flight during the kills",
        format!("{requests} in {:.0}s", started.elapsed().as_secs_f64()),
        "-",
        true,
    );
    assert!(ok, "see the FIGURE lines");
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn median(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[v.len() / 2]
}

/// A fixed request rate for `FAULTS_SOAK_SECS` (default 40): 200 external-metric reads a second over TLS
/// (open loop: each request starts on its tick, whatever the earlier ones do) and 5 `/metrics` scrapes a
/// second, with serve's VmRSS sampled every 10 s. Zero errors; memory flat: after the first sample (warm-up),
/// the median of the last third of the samples is within 10% (or 2 MiB) of the median of the first third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_at_a_fixed_rate_keeps_memory_flat_without_errors() {
    let secs = env_or("FAULTS_SOAK_SECS", 40);
    let rate = env_or("FAULTS_SOAK_RATE", 200);
    let sources = Sources::start().await;
    let serve = Serve::launch(tempfile::tempdir().unwrap(), &sources.launch(&[]));
    serve
        .wait_readyz(Duration::from_secs(60), |b| b.contains("[+]values"))
        .await;
    let client = serve.client();
    let plain = reqwest::Client::new();
    let (ok, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u32>::new()));
    let pid = serve.pid();
    let mut samples = Vec::new();
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_sample = Duration::from_secs(10);
    let mut tasks = tokio::task::JoinSet::new();
    let mut n: u64 = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        ticker.tick().await;
        n += 1;
        let scrape = n % (rate / 5).max(1) == 0;
        let (client, plain, secure, metrics) = (
            client.clone(),
            plain.clone(),
            serve.secure.clone(),
            serve.metrics_url("/metrics"),
        );
        let (ok, errors, first_error, latencies) = (
            ok.clone(),
            errors.clone(),
            first_error.clone(),
            latencies.clone(),
        );
        tasks.spawn(async move {
            let t = Instant::now();
            let result = if scrape {
                plain.get(&metrics).send().await
            } else {
                client.get(format!("https://{secure}{SMART}")).send().await
            };
            let outcome = match result {
                Ok(r) if r.status() == 200 => {
                    r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
                }
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    latencies
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_micros() as u32);
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error.lock().unwrap().get_or_insert(e);
                }
            }
        });
        while tasks.try_join_next().is_some() {}
        if started.elapsed() >= next_sample {
            samples.push(rss_kib(pid));
            next_sample += Duration::from_secs(10);
        }
    }
    while tasks.join_next().await.is_some() {}
    let took = started.elapsed().as_secs_f64();
    samples.push(rss_kib(pid));
    eprintln!("VmRSS samples (KiB, every 10 s): {samples:?}");
    // The first sample is the warm-up; thirds of the rest (at least one sample each).
    let steady = &samples[1.min(samples.len() - 1)..];
    let third = (steady.len() / 3).max(1);
    let (first, last) = (
        median(&steady[..third]),
        median(&steady[steady.len() - third..]),
    );
    let allowed = (first / 10).max(2048);
    let flat = last <= first + allowed;
    let (ok_n, err_n) = (ok.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_unstable();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or(0);
    let fault = format!("soak {secs}s at {rate} req/s");
    let held = figure(
        &fault,
        "requests answered 200 / errors",
        format!(
            "{ok_n} / {err_n} ({:.0} req/s achieved)",
            (ok_n + err_n) as f64 / took
        ),
        "0 errors",
        err_n == 0,
    ) & figure(
        &fault,
        "VmRSS first-third / last-third median",
        format!(
            "{:.1} / {:.1} MiB ({} samples)",
            first as f64 / 1024.0,
            last as f64 / 1024.0,
            samples.len()
        ),
        "last <= first + max(10%, 2 MiB)",
        flat,
    ) & figure(
        &fault,
        "VmRSS min / max",
        format!(
            "{:.1} / {:.1} MiB",
            *samples.iter().min().unwrap() as f64 / 1024.0,
            *samples.iter().max().unwrap() as f64 / 1024.0
        ),
        "-",
        true,
    ) & figure(
        &fault,
        "latency p99",
        format!("{:.1} ms", p99 as f64 / 1000.0),
        "-",
        true,
    );
    assert!(
        held,
        "see the FIGURE lines; first error: {:?}",
        first_error.lock().unwrap()
    );
}
