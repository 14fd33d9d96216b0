//! `serve --external-rules` end to end: a real Prometheus backfilled by promtool with a `queue_depth` gauge
//! beside the recording's CPU series, the real binary evaluating a prometheus-adapter-style rule on its tick, and
//! the real `kubectl get --raw` reading the rule-backed metric with a label selector over TLS. Then Prometheus is
//! stopped and the cached values age into the fail-safe (503 with the reason). Bad rules stop the start with the
//! rule's name and the reason: statically (exit 2) and when Prometheus rejects the query (exit 1).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::fake_apiserver;
use common::prometheus::Prometheus;
use common::serve::{Serve, openmetrics, unix_now};
use serde_json::Value;

/// The recording's series plus `queue_depth` gauges: shop/orders 42, shop/returns 5.5, bank/orders 7, every 15 s
/// over the same 45 minutes.
fn data(now: i64) -> String {
    let mut om = openmetrics(now)
        .trim_end()
        .strip_suffix("# EOF")
        .unwrap()
        .to_string();
    om.push_str("# TYPE queue_depth gauge\n");
    for (ns, queue, value) in [
        ("bank", "orders", 7.0),
        ("shop", "orders", 42.0),
        ("shop", "returns", 5.5),
    ] {
        let mut t = now - 40 * 60;
        while t <= now + 300 {
            om.push_str(&format!(
                "queue_depth{{namespace=\"{ns}\",queue=\"{queue}\",job=\"mq\"}} {value} {t}\n"
            ));
            t += 15;
        }
    }
    om.push_str("# EOF\n");
    om
}

const RULES: &str = r#"# prometheus-adapter's shape; only externalRules is used.
externalRules:
- seriesQuery: 'queue_depth{job="mq"}'
  metricsQuery: sum(<<.Series>>{<<.LabelMatchers>>}) by (<<.GroupBy>>)
  selectorLabels: [queue]
  resources:
    overrides:
      namespace: {resource: namespace}
"#;

const PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_backed_metric_is_served_from_memory_with_selectors_then_fails_safe() {
    let api = fake_apiserver::start(vec![]).await;
    api.release.send(true).unwrap();
    let prom = Prometheus::start(&data(unix_now()), None, None).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let serve = Serve::start(
        &prom.url,
        &api.kubeconfig,
        &["--external-rules", rules.to_str().unwrap()],
    );
    let client = serve.client();
    let url = |q: &str| format!("https://{}{PATH}{q}", serve.secure);

    // Evaluated on the tick: values appear within a few 1 s intervals.
    let deadline = Instant::now() + Duration::from_secs(30);
    let body: Value = loop {
        let r = client
            .get(url("?labelSelector=queue%3Dorders"))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json().await.unwrap();
        }
        let last = r.text().await.unwrap_or_default();
        assert!(Instant::now() < deadline, "never served: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["metricName"], "queue_depth");
    assert_eq!(items[0]["value"], "42");
    assert_eq!(items[0]["metricLabels"]["queue"], "orders");
    assert_eq!(items[0]["metricLabels"]["namespace"], "shop");

    // kubectl: discovery lists the rule's metric beside the built-in ones, reads go through the selector.
    let kubeconfig = serve.kubeconfig();
    let (ok, out, err) = common::kubectl_with(
        &kubeconfig,
        &["get", "--raw", "/apis/external.metrics.k8s.io/v1beta1"],
    );
    assert!(ok, "kubectl: {err}");
    let names: Vec<String> = serde_json::from_str::<Value>(&out).unwrap()["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "smart_cpu_utilization",
            "smart_cpu_utilization_raw",
            "queue_depth"
        ]
    );
    let (ok, out, err) = common::kubectl_with(
        &kubeconfig,
        &[
            "get",
            "--raw",
            &format!("{PATH}?labelSelector=queue%20notin%20%28orders%29"),
        ],
    );
    assert!(ok, "kubectl: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["value"], "5500m", "{list}");
    // No selector: every series of the namespace (the HPA sums them: 47.5, as a filtered sum would give).
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", PATH]);
    assert!(ok, "kubectl: {err}");
    let values: Vec<String> = serde_json::from_str::<Value>(&out).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(values, ["42", "5500m"]);
    let other = PATH.replace("/shop/", "/bank/");
    let (ok, out, _) = common::kubectl_with(&kubeconfig, &["get", "--raw", &other]);
    assert!(ok && out.contains("\"7\""), "{out}");
    let (ok, _, err) = common::kubectl_with(
        &kubeconfig,
        &[
            "get",
            "--raw",
            &format!("{PATH}?labelSelector=queue%3Dnope"),
        ],
    );
    assert!(!ok && err.contains("NotFound"), "{err}");
    let (ok, _, err) = common::kubectl_with(
        &kubeconfig,
        &[
            "get",
            "--raw",
            &PATH.replace("queue_depth", "no_such_metric"),
        ],
    );
    assert!(!ok && err.contains("NotFound"), "{err}");

    // Prometheus gone: the cached values are served until the fail-safe's limit (10 intervals), then refused
    // with the reason.
    drop(prom);
    let stopped = Instant::now();
    let refused = loop {
        let r = client.get(url("")).send().await.unwrap();
        let code = r.status().as_u16();
        let text = r.text().await.unwrap();
        if code == 503 {
            break text;
        }
        assert_eq!(code, 200, "{text}");
        assert!(
            stopped.elapsed() < Duration::from_secs(30),
            "still served: {text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        stopped.elapsed() >= Duration::from_secs(8),
        "refused after {:?}, before the limit",
        stopped.elapsed()
    );
    let status: Value = serde_json::from_str(&refused).unwrap();
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("past the 10s fail-safe limit")
            && message.contains("last evaluation failed"),
        "{message}"
    );
}

/// Runs `serve` with `rules` against `prometheus_url` and waits for it to exit (at most a minute): its status
/// code and stderr.
fn serve_exit(prometheus_url: &str, kubeconfig: &Path, rules: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_smart-autoscaler");
    let certs = Command::new(bin)
        .args(["certs", "--out-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(certs.status.success(), "{certs:?}");
    let file = dir.path().join("rules.yaml");
    std::fs::write(&file, rules).unwrap();
    let mut child = Command::new(bin)
        .args(["serve", "--bind-address", "127.0.0.1"])
        .args(["--secure-port", "0", "--metrics-port", "0"])
        .args(["--prometheus-url", prometheus_url])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--tls-cert-file")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.path().join("tls.key"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--external-rules")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit with rules {rules}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_stop_the_start_with_the_rule_and_the_reason() {
    let api = fake_apiserver::start(vec![]).await;
    api.release.send(true).unwrap();
    let prom = Prometheus::start(&data(unix_now()), None, None).await;
    let (url, kubeconfig) = (prom.url.clone(), api.kubeconfig.clone());

    // Checked before anything starts: the unknown template field, the bad regex, the missing namespace mapping,
    // each with its line, in one exit.
    let bad = format!(
        "{RULES}- seriesQuery: kafka_lag\n  name: {{matches: \"^(kafka\"}}\n  resources: {{overrides: {{namespace: {{resource: namespace}}}}}}\n\
         - seriesQuery: jobs_waiting\n  resources: {{overrides: {{service: {{resource: service}}}}}}\n"
    )
    .replace("<<.GroupBy>>", "<<.Groupby>>");
    let (code, stderr) = tokio::task::spawn_blocking(move || serve_exit(&url, &kubeconfig, &bad))
        .await
        .unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    for expected in [
        "line 3: externalRules[0] (queue_depth): metricsQuery: unknown template field <<.Groupby>>",
        "line 9: externalRules[1]: name.matches \"^(kafka\" is not a valid regular expression",
        "line 12: externalRules[2] (jobs_waiting): no namespace mapping",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in {stderr}");
    }

    // Valid template, invalid PromQL: Prometheus's parser says so in the dry query at start.
    let (url, kubeconfig) = (prom.url.clone(), api.kubeconfig.clone());
    let unbalanced = RULES.replace("by (<<.GroupBy>>)", "by (<<.GroupBy>>");
    let (code, stderr) =
        tokio::task::spawn_blocking(move || serve_exit(&url, &kubeconfig, &unbalanced))
            .await
            .unwrap();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("externalRules[0] (queue_depth): Prometheus rejects its query")
            && stderr.contains("parse error"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
