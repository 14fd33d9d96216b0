//! `serve` end to end: the real binary reads the recorded Kubernetes API (a fake apiserver serving captured-shape
//! list/watch JSON, since no kube-apiserver exists on these machines) and a real Prometheus backfilled with
//! cAdvisor- and node-exporter-shaped series, keeps history in sled, and serves the metric to the real
//! `kubectl get --raw` over TLS verified against a CA made by `smart-autoscaler certs`.

mod common;

use std::time::{Duration, Instant};

use common::fake_apiserver;
use common::prometheus::Prometheus;
use common::serve::{Serve, openmetrics, unix_now};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_end_to_end_with_real_prometheus_and_recorded_api() {
    let api = fake_apiserver::start(vec![]).await;
    api.release.send(true).unwrap();
    let prom = Prometheus::start(&openmetrics(unix_now()), None, None).await;
    let mut serve = Serve::start(
        &prom.url,
        &api.kubeconfig,
        &["--node-pool-price", "pool=general:0.05:0.006"],
    );
    let metrics = serve.metrics.clone();
    serve
        .wait_readyz(Duration::from_secs(60), |body| {
            body.contains("[+]prometheus") && body.contains("[+]kubernetes")
        })
        .await;
    let http = reqwest::Client::new();

    let kubeconfig = serve.kubeconfig();
    let raw_path = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/smart_cpu_utilization_raw?labelSelector=deployment%3Dapi";
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", raw_path]);
    assert!(ok, "kubectl: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let value = list["items"][0]["value"].as_str().unwrap().to_string();
    let percent: f64 = match value.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap() / 1000.0,
        None => value.parse().unwrap(),
    };
    // 3 pods x 0.175 cores over 3 x 350m requests: 50% in every window, so whatever the estimate takes of them.
    assert!(
        (percent - 50.0).abs() < 0.5,
        "raw utilization {percent} from {out}"
    );

    let smart_path = raw_path.replace("_raw", "");
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", &smart_path]);
    assert!(ok, "kubectl: {err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["items"][0]["metricLabels"]["deployment"],
        "api"
    );

    // coredns has no HPA on our metric and no opt-in annotation: not managed. web is managed by annotation
    // only (its HPA is on another metric), so it gets the default base target.
    let coredns = "/apis/external.metrics.k8s.io/v1beta1/namespaces/kube-system/smart_cpu_utilization?labelSelector=deployment%3Dcoredns";
    let (ok, _, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", coredns]);
    assert!(!ok && err.contains("NotFound"), "{err}");
    let web: Value = http
        .get(format!("http://{metrics}/api/v1/deployments/shop/web"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(web["inputs"]["base_target_percent"], 70.0, "{web}");
    assert_eq!(web["inputs"]["startup_filter_seconds"], 30, "{web}");

    let explained: Value = http
        .get(format!("http://{metrics}/api/v1/deployments/shop/api"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(explained["inputs"]["base_target_percent"], 70.0);
    assert_eq!(explained["inputs"]["pod_cpu_request_milli"], 350);
    let measured = explained["inputs"]["pool"]["measured_cpu_percent"]
        .as_f64()
        .unwrap();
    assert!(
        measured > 0.0,
        "node utilization reached the pool: {explained}"
    );

    // Forecasting runs in the background: its board is served (a few hours of history are too little for a
    // forecast, and each deployment says so once the task has seen it).
    let forecasts = http
        .get(format!("http://{metrics}/api/v1/forecasts"))
        .send()
        .await
        .unwrap();
    assert_eq!(forecasts.status(), 200);
    let forecasts: Value = forecasts.json().await.unwrap();
    for item in forecasts["items"].as_array().unwrap() {
        assert_eq!(item["usable"], false, "{item}");
        assert!(item["reason"].is_string(), "{item}");
    }
    let missing = http
        .get(format!("http://{metrics}/api/v1/forecasts/shop/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let status: Value = missing.json().await.unwrap();
    assert_eq!(status["kind"], "Status");

    // Cost (issue 17): every tick is priced. shop/api's 3 pods run on `pool=general` nodes, priced by the flag at
    // 0.05 $/core-hour: 3 × max(350m request, 175m used) = 1.05 cores → 0.0525 $/hour of CPU. shop/web has a pod
    // on the `pool=compute` node, which no pool price matches: a mixed price.
    let cost: Value = http
        .get(format!("http://{metrics}/api/v1/cost?namespace=shop"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let item = |name: &str| {
        cost["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["key"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {cost}"))
            .clone()
    };
    let api_cost = item("api");
    assert_eq!(api_cost["price_source"]["kind"], "node_pool", "{api_cost}");
    assert_eq!(api_cost["price_source"]["label_value"], "general");
    let hours = api_cost["window_millis"].as_f64().unwrap() / 3.6e6;
    let cpu_rate = api_cost["cpu"]["cost_usd"].as_f64().unwrap() / hours;
    assert!((cpu_rate - 0.0525).abs() < 1e-9, "{api_cost}");
    // The backfilled Prometheus has no memory series: memory is charged at the request, and the answer says so.
    assert_eq!(api_cost["memory"]["basis"], "request_only", "{api_cost}");
    assert!(api_cost["memory"]["efficiency"].is_null());
    assert!(
        api_cost["notes"][0]
            .as_str()
            .unwrap()
            .contains("memory usage not observed"),
        "{api_cost}"
    );
    assert_eq!(item("web")["price_source"]["kind"], "mixed");
    assert!(cost["cluster"]["projected_30d_usd"].as_f64().unwrap() > 0.0);
    // A few hours of history are too little for a recommendation, and each deployment says so.
    let recommendations: Value = http
        .get(format!("http://{metrics}/api/v1/recommendations"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let items = recommendations["items"].as_array().unwrap();
    assert!(!items.is_empty(), "{recommendations}");
    for r in items {
        assert_eq!(r["status"], "not_enough_data", "{r}");
    }

    // The store's figures (issue 22): the first tick's maintenance pass flushes the store and counts its records.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = http
            .get(format!("http://{metrics}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let value = |series: &str| common::sample(&text, series);
        let flushed =
            value("smart_autoscaler_store_last_flush_timestamp_seconds").is_some_and(|t| t > 1.0e9);
        // Counted once at the first pass, then hourly: only that a count is there.
        let counted = value("smart_autoscaler_store_records{tree=\"deployments\"}").is_some();
        if flushed && counted {
            assert!(value("smart_autoscaler_store_size_bytes").is_some_and(|b| b > 0.0));
            assert_eq!(
                value("smart_autoscaler_store_recoveries_total{action=\"finished_swap\"}"),
                Some(0.0)
            );
            assert_eq!(
                value("smart_autoscaler_store_compactions_total{outcome=\"ok\"}"),
                Some(0.0)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no store figures in /metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert!(
        serve.data_dir().join("store").exists(),
        "sled store created"
    );
    // sled flushes every 500 ms; give it that before the process is killed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    serve.kill();
    // The first decision of each managed deployment was recorded, and the store reopens after the kill.
    let store = smart_autoscaler::store::Store::open(
        serve.data_dir().join("store"),
        smart_autoscaler::store::Retention::default(),
    )
    .await
    .unwrap();
    let key = smart_autoscaler::domain::model::DeploymentKey::new("shop", "api");
    let decisions = store.decisions(&key, 0, i64::MAX).await.unwrap();
    assert!(!decisions.is_empty(), "no decision recorded for shop/api");
    let first: Value = serde_json::from_slice(&decisions[0].1).unwrap();
    assert!(
        first["effective_target_percent"].as_f64().is_some(),
        "{first}"
    );
}

/// A configuration that cannot work stops `serve` before it binds or connects to anything: exit status 2 and one
/// line per problem, each naming its flag (here two rules between flags and one adapter's own).
#[test]
fn bad_flags_stop_serve_at_start_with_every_problem_named() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smart-autoscaler"))
        .args([
            "serve",
            "--low-pressure-factor",
            "0.5",
            "--high-pressure-factor",
            "0.8",
        ])
        .args([
            "--store-sample-retention",
            "2d",
            "--store-rollup-retention",
            "1d",
        ])
        .args(["--kube-qps", "0", "--tls-cert-file", "/nonexistent/tls.crt"])
        .args(["--tls-key-file", "/nonexistent/tls.key"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: 4 settings cannot work:\n"),
        "{stderr}"
    );
    for flag in [
        "--low-pressure-factor",
        "--kube-qps",
        "--store-rollup-retention",
        "--tls-cert-file",
    ] {
        assert!(
            stderr.contains(&format!("\n  invalid {flag}: ")),
            "{flag}: {stderr}"
        );
    }
    assert!(!stderr.contains("backtrace"), "{stderr}");
}

/// A start-up failure after the flags are checked (here an unreadable kubeconfig) is one line naming the flag
/// to change, without a backtrace even when `RUST_BACKTRACE` asks for one, and exit status 1.
#[test]
fn a_start_up_error_is_one_line_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let certs = std::process::Command::new(env!("CARGO_BIN_EXE_smart-autoscaler"))
        .args(["certs", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(certs.status.success(), "{certs:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smart-autoscaler"))
        .args(["serve", "--kubeconfig", "/nonexistent/kubeconfig"])
        .arg("--tls-cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.path().join("tls.key"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--secure-port", "0", "--metrics-port", "0"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("error: --kubeconfig /nonexistent/kubeconfig: "),
        "{stderr}"
    );
    assert!(
        lines[0]
            .ends_with("point --kubeconfig (SMART_AUTOSCALER_KUBECONFIG) at a readable kubeconfig"),
        "{stderr}"
    );
    assert_eq!(
        lines[0].matches("No such file").count(),
        1,
        "the cause once: {stderr}"
    );
}
