//! The Grafana dashboard under `manifests/grafana/`: its structure (a datasource template variable, as KEDA's and
//! kube-prometheus's dashboards have, no hard-coded datasource, unique ids), and every PromQL expression in it
//! run against a real Prometheus that scrapes the demo's own `/metrics` (must succeed and return series).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::DemoServer;
use common::prometheus::{free_port, wait_ready};
use serde_json::Value;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/manifests/grafana/smart-autoscaler.json"
);

/// Every PromQL expression of the dashboard (panel targets, and the metric selectors inside `label_values(...)`
/// of the query variables), with Grafana's variables given the values "all" has.
fn expressions(dashboard: &Value) -> Vec<String> {
    let fill = |e: &str| {
        e.replace("$namespace", ".*")
            .replace("$deployment", ".*")
            .replace("$__rate_interval", "30s")
    };
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            out.push(fill(target["expr"].as_str().unwrap()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"]["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map(|(selector, _)| selector)
                .expect("label_values(selector, label)");
            out.push(fill(inner));
        }
    }
    out
}

#[test]
fn the_dashboard_is_well_formed_and_datasource_agnostic() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    assert_eq!(dashboard["uid"], "smart-autoscaler");
    let vars = dashboard["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(
        (ds["type"].as_str(), ds["query"].as_str()),
        (Some("datasource"), Some("prometheus"))
    );
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id {panel}"
        );
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        for k in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][k].is_u64(),
                "{}: gridPos.{k}",
                panel["title"]
            );
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", panel["title"]);
        let refs: BTreeSet<_> = targets
            .iter()
            .map(|t| t["refId"].as_str().unwrap())
            .collect();
        assert_eq!(refs.len(), targets.len(), "{}: refIds", panel["title"]);
        for t in targets {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "{}",
                panel["title"]
            );
        }
    }
    assert!(ids.len() >= 10);
    // Every metric the dashboard names is one the server documents.
    let documented =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/metrics.md"))
            .unwrap();
    for expr in expressions(&dashboard) {
        for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("smart_autoscaler_") {
                assert!(
                    documented.contains(&format!("`{word}`")),
                    "{word} is not in docs/metrics.md"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_series_from_a_prometheus_scraping_the_demo() {
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let demo = DemoServer::start(&["--interval", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: smart-autoscaler\n    static_configs:\n      - targets: ['{}']\n",
            demo.metrics
        ),
    )
    .unwrap();
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = Command::new("prometheus")
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--config.file={}", config.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus must be installed (hack/install-tools.sh installs the Debian prometheus package)");
    assert!(
        wait_ready(&mut child, &url, None).await,
        "prometheus did not start"
    );
    let http = reqwest::Client::new();
    let query = |expr: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let v: Value = http
                .get(format!("{url}/api/v1/query"))
                .query(&[("query", expr.as_str())])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    // Enough scrapes for rate() over 30 s to have two samples, and the deployments' series in.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = query("count(smart_autoscaler_deployment_served_percent) >= 4 and count(count_over_time(up[30s])) > 0".into()).await;
        let samples = query("count_over_time(up[30s])".into()).await;
        let enough = samples["data"]["result"][0]["value"][1]
            .as_str()
            .is_some_and(|n| n.parse::<f64>().unwrap_or(0.0) >= 4.0);
        if v["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
            && enough
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the demo: {v}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 20, "{exprs:?}");
    for expr in exprs {
        let v = query(expr.clone()).await;
        assert_eq!(v["status"], "success", "{expr}: {v}");
        let result = v["data"]["result"].as_array().unwrap();
        assert!(!result.is_empty(), "{expr} returned no series");
    }
    let _ = child.kill();
    let _ = child.wait();
}
