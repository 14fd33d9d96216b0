//! The external metrics API of the real binary (`demo` mode) over TLS: discovery, values, Status errors and
//! limits, with the real kubectl as the client wherever a Kubernetes client is the natural one.

mod common;

use common::DemoServer;
use serde_json::Value;

const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";
const DEPLOYMENTS: [&str; 4] = [
    "api-service",
    "batch-processor",
    "web-frontend",
    "java-orders",
];

fn metric_path(metric: &str, selector: Option<&str>) -> String {
    match selector {
        Some(s) => format!(
            "{GV}/namespaces/demo/{metric}?labelSelector={}",
            s.replace('=', "%3D").replace(' ', "%20")
        ),
        None => format!("{GV}/namespaces/demo/{metric}"),
    }
}

#[test]
fn kubectl_discovery_and_values() {
    let server = DemoServer::start(&[]);
    let (ok, out, err) = server.kubectl(&["get", "--raw", GV]);
    assert!(ok, "discovery failed: {err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "external.metrics.k8s.io/v1beta1");
    let names: Vec<&str> = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["smart_cpu_utilization", "smart_cpu_utilization_raw"]
    );
    for r in list["resources"].as_array().unwrap() {
        assert_eq!(r["namespaced"], true);
        assert_eq!(r["kind"], "ExternalMetricValueList");
        assert_eq!(r["verbs"], serde_json::json!(["get"]));
    }

    for (path, kind) in [
        ("/apis", "APIGroupList"),
        ("/apis/external.metrics.k8s.io", "APIGroup"),
    ] {
        let (ok, out, err) = server.kubectl(&["get", "--raw", path]);
        assert!(ok, "{path}: {err}");
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["kind"], kind);
    }

    for name in DEPLOYMENTS {
        for metric in ["smart_cpu_utilization", "smart_cpu_utilization_raw"] {
            let path = metric_path(metric, Some(&format!("deployment={name}")));
            let (ok, out, err) = server.kubectl(&["get", "--raw", &path]);
            assert!(ok, "{path}: {err}");
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["kind"], "ExternalMetricValueList");
            assert_eq!(v["apiVersion"], "external.metrics.k8s.io/v1beta1");
            let items = v["items"].as_array().unwrap();
            assert_eq!(items.len(), 1, "{out}");
            let item = &items[0];
            assert_eq!(item["metricName"], metric);
            assert_eq!(
                item["metricLabels"],
                serde_json::json!({ "deployment": name })
            );
            assert_eq!(item["window"], 600);
            let ts = item["timestamp"].as_str().unwrap();
            assert!(
                ts.len() == 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                "timestamp {ts}"
            );
            let value = item["value"].as_str().unwrap();
            let milli: f64 = match value.strip_suffix('m') {
                Some(m) => m.parse::<f64>().unwrap() / 1000.0,
                None => value.parse().unwrap(),
            };
            assert!(milli > 0.0 && milli < 1000.0, "{name} {metric} = {value}");
        }
    }
}

#[test]
fn kubectl_sees_status_errors() {
    let server = DemoServer::start(&[]);
    let cases = [
        (
            metric_path("no_such_metric", Some("deployment=api-service")),
            "NotFound",
            "not served here",
        ),
        (
            metric_path("smart_cpu_utilization", Some("deployment in (api-service")),
            "BadRequest",
            "invalid labelSelector",
        ),
        (
            metric_path("smart_cpu_utilization", Some("deployment=nope")),
            "NotFound",
            "not found",
        ),
        (
            metric_path("smart_cpu_utilization", None),
            "BadRequest",
            "matches 4 deployments",
        ),
        (
            format!("{GV}/namespaces/demo/smart_cpu_utilization/extra"),
            "NotFound",
            "could not find",
        ),
    ];
    for (path, reason, message) in cases {
        let (ok, _out, err) = server.kubectl(&["get", "--raw", &path]);
        assert!(!ok, "{path} should fail");
        assert!(err.contains(&format!("({reason})")), "{path}: {err}");
        assert!(err.contains(message), "{path}: {err}");
    }
}

#[tokio::test]
async fn full_selector_grammar_over_tls() {
    let server = DemoServer::start(&[]);
    let client = server.client();
    let get = |selector: &str| {
        let query = serde_urlencoded::to_string([("labelSelector", selector)]).unwrap();
        let url = server.secure_url(&format!(
            "{GV}/namespaces/demo/smart_cpu_utilization?{query}"
        ));
        let req = client.get(url);
        async move {
            let resp = req
                .header("Accept", "application/vnd.kubernetes.protobuf, */*")
                .send()
                .await
                .unwrap();
            let code = resp.status().as_u16();
            assert_eq!(resp.headers()["content-type"], "application/json");
            (code, resp.json::<Value>().await.unwrap())
        }
    };
    for selector in [
        "deployment=api-service",
        "deployment==api-service",
        "deployment in (api-service, nope)",
        "deployment notin (batch-processor,web-frontend,java-orders)",
        "deployment,deployment!=batch-processor,deployment!=web-frontend,deployment!=java-orders",
    ] {
        let (code, body) = get(selector).await;
        assert_eq!(code, 200, "{selector}: {body}");
        assert_eq!(
            body["items"][0]["metricLabels"]["deployment"], "api-service",
            "{selector}"
        );
    }
    let (code, body) = get("!deployment").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(body["kind"], "Status");
    let (code, body) = get("deployment in ()").await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
}

#[tokio::test]
async fn limits_and_fallbacks_answer_with_status() {
    let server = DemoServer::start(&["--max-body-bytes", "4096"]);
    let client = server.client();
    let big = client
        .post(server.secure_url(GV))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["reason"], "RequestEntityTooLarge");

    for path in ["/openapi/v2", "/openapi/v3", "/nope"] {
        let resp = client.get(server.secure_url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 404, "{path}");
        assert_eq!(resp.json::<Value>().await.unwrap()["kind"], "Status");
    }
    let resp = client.delete(server.secure_url(GV)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "MethodNotAllowed"
    );

    let huge_header = "a".repeat(64 * 1024);
    let resp = client
        .get(server.secure_url(GV))
        .header("x-big", huge_header)
        .send()
        .await;
    match resp {
        Ok(r) => assert!(
            r.status().as_u16() == 431 || r.status().is_client_error(),
            "{}",
            r.status()
        ),
        Err(e) => assert!(
            e.is_request() || e.is_connect() || e.to_string().contains("error"),
            "{e}"
        ),
    }
    // The server is still healthy afterwards.
    let ok = client.get(server.secure_url(GV)).send().await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
}

#[tokio::test]
async fn tls_is_verified_against_the_generated_ca() {
    let server = DemoServer::start(&[]);
    // A client that trusts nothing but the system roots must refuse the demo's certificate.
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(EMPTY_CA).unwrap()])
        .build()
        .unwrap();
    assert!(untrusting.get(server.secure_url(GV)).send().await.is_err());
    assert_eq!(
        server
            .client()
            .get(server.secure_url(GV))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

/// A throwaway CA that signed nothing the server presents.
const EMPTY_CA: &[u8] = include_bytes!("fixtures/unrelated-ca.pem");

#[tokio::test]
async fn probes_and_openmetrics_exposition() {
    let server = DemoServer::start(&[]);
    let client = reqwest::Client::new();
    for probe in ["/healthz", "/livez", "/readyz"] {
        let resp = client.get(server.metrics_url(probe)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{probe}");
    }
    server
        .client()
        .get(server.secure_url(&metric_path(
            "smart_cpu_utilization",
            Some("deployment=api-service"),
        )))
        .send()
        .await
        .unwrap();
    let resp = client
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(text.contains("smart_autoscaler_http_requests_total{server=\"secure\",route=\"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}\",method=\"GET\",code=\"200\"}"), "{text}");
    assert!(text.contains("smart_autoscaler_snapshot_age_seconds"));
    assert!(text.trim_end().ends_with("# EOF"));
    // The binary's allocator is jemalloc, and its statistics are exported.
    let heap = |kind: &str| {
        common::sample(
            &text,
            &format!("smart_autoscaler_allocator_bytes{{kind=\"{kind}\"}}"),
        )
        .unwrap_or_else(|| panic!("no allocator {kind} in {text}")) as u64
    };
    let (allocated, resident) = (heap("allocated"), heap("resident"));
    assert!(
        allocated > 1 << 20 && resident >= allocated,
        "allocated {allocated}, resident {resident}"
    );

    let explained: Value = client
        .get(server.metrics_url("/api/v1/deployments/demo/java-orders"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(explained["name"], "java-orders");
    assert_eq!(explained["inputs"]["startup_filter_seconds"], 150);
    let missing = client
        .get(server.metrics_url("/api/v1/deployments/demo/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
}
