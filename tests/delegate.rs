//! `serve --delegate-external-metrics-url`: the real binary in front of a second external-metrics server (a small
//! server in this test speaking the API: `kafka_lag`, and a `queue_depth` that clashes with our rule), with a
//! rule-backed metric of its own on a real backfilled Prometheus. `kubectl get --raw` through the front server
//! reads both servers' metrics; discovery is the union (ours win the clash); the caller's identity headers reach
//! the delegate; its errors pass through; once it is down its metrics are 503 and ours and discovery still answer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use common::fake_apiserver;
use common::prometheus::Prometheus;
use common::serve::{Serve, openmetrics, unix_now};
use serde_json::{Value, json};

const RULES: &str = r#"externalRules:
- seriesQuery: 'queue_depth{job="mq"}'
  selectorLabels: [queue]
  resources:
    overrides:
      namespace: {resource: namespace}
"#;

fn data(now: i64) -> String {
    let mut om = openmetrics(now)
        .trim_end()
        .strip_suffix("# EOF")
        .unwrap()
        .to_string();
    om.push_str("# TYPE queue_depth gauge\n");
    let mut t = now - 40 * 60;
    while t <= now + 300 {
        om.push_str(&format!(
            "queue_depth{{namespace=\"shop\",queue=\"orders\",job=\"mq\"}} 42 {t}\n"
        ));
        t += 15;
    }
    om.push_str("# EOF\n");
    om
}

/// What the delegate saw: (path with query, X-Remote-User).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

async fn delegate_discovery() -> axum::Json<Value> {
    let resource = |name: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"]});
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "external.metrics.k8s.io/v1beta1",
        "resources": [resource("kafka_lag"), resource("queue_depth")]
    }))
}

async fn delegate_metric(
    seen: axum::extract::State<Seen>,
    Path((namespace, metric)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let user = headers
        .get("x-remote-user")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let path = format!(
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}{}",
        query.map(|q| format!("?{q}")).unwrap_or_default()
    );
    seen.lock().unwrap().push((path, user));
    if metric != "kafka_lag" {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("delegate: no metric {metric}"), "reason": "NotFound", "code": 404});
        return (StatusCode::NOT_FOUND, axum::Json(status)).into_response();
    }
    axum::Json(json!({
        "kind": "ExternalMetricValueList", "apiVersion": "external.metrics.k8s.io/v1beta1", "metadata": {},
        "items": [{"metricName": "kafka_lag", "metricLabels": {"topic": "orders"},
                   "timestamp": "2026-12-05T12:00:00Z", "value": "12"}]
    }))
    .into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_we_do_not_own_are_forwarded_and_discovery_is_the_union() {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(delegate_discovery),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(delegate_metric),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let delegate_url = format!("http://{}", listener.local_addr().unwrap());
    let delegate = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let api = fake_apiserver::start(vec![]).await;
    api.release.send(true).unwrap();
    let prom = Prometheus::start(&data(unix_now()), None, None).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, RULES).unwrap();
    let serve = Serve::start(
        &prom.url,
        &api.kubeconfig,
        &[
            "--external-rules",
            rules.to_str().unwrap(),
            "--delegate-external-metrics-url",
            &delegate_url,
        ],
    );
    let kubeconfig = serve.kubeconfig();
    let base = "/apis/external.metrics.k8s.io/v1beta1";

    // Discovery: ours, then the delegate's without the clashing name.
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", base]);
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
            "queue_depth",
            "kafka_lag"
        ]
    );

    // The delegate's metric through the front server, selector and all.
    let lag = format!("{base}/namespaces/shop/kafka_lag?labelSelector=topic%3Dorders");
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", &lag]);
    assert!(ok, "kubectl: {err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["items"][0]["value"],
        "12"
    );
    // Our rule-backed metric is ours, never forwarded, although the delegate has the name too.
    let ours = format!("{base}/namespaces/shop/queue_depth");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", &ours]);
        if ok {
            assert!(out.contains("\"42\""), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "{err}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The delegate's errors pass through, Status body and all.
    let (ok, _, err) = common::kubectl_with(
        &kubeconfig,
        &["get", "--raw", &format!("{base}/namespaces/shop/other")],
    );
    assert!(
        !ok && err.contains("NotFound") && err.contains("delegate: no metric other"),
        "{err}"
    );
    // The caller's identity headers reach the delegate.
    let client = serve.client();
    let r = client
        .get(format!("https://{}{lag}", serve.secure))
        .header(
            "X-Remote-User",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    {
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().all(|(p, _)| !p.ends_with("/queue_depth")),
            "{seen:?}"
        );
        let last = seen.last().unwrap();
        assert_eq!(
            last.0,
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/kafka_lag?labelSelector=topic%3Dorders"
        );
        assert_eq!(
            last.1.as_deref(),
            Some("system:serviceaccount:kube-system:horizontal-pod-autoscaler")
        );
    }

    // Delegate down: its metrics are 503 naming it; ours and discovery still answer.
    delegate.abort();
    let _ = delegate.await;
    let r = client
        .get(format!("https://{}{lag}", serve.secure))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let message = r.json::<Value>().await.unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains(&delegate_url), "{message}");
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", base]);
    assert!(ok, "kubectl: {err}");
    assert!(
        out.contains("queue_depth") && !out.contains("kafka_lag"),
        "{out}"
    );
    let (ok, out, err) = common::kubectl_with(&kubeconfig, &["get", "--raw", &ours]);
    assert!(ok && out.contains("\"42\""), "{out}{err}");
}
