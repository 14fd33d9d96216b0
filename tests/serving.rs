//! Smoke tests of the real binary (`demo` mode) over TLS: what needs the process, its flags, its sockets and its
//! certificates. The real kubectl reads discovery, every demo deployment's values and the Status errors; the TLS
//! port verifies against the generated CA, honours `--max-body-bytes` and survives a head over hyper's limit;
//! the metrics port serves the probes, the allocator's figures and the demo's explanations. The HTTP contract
//! itself (shapes, selectors, fail-safe, every error body) is tested in-process in `tests/http_contract.rs`.

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
fn kubectl_reads_discovery_values_and_status_errors() {
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

    // kubectl renders our Status bodies as Kubernetes errors, reason included.
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

/// The TLS port of the process: the generated CA is the only trust a client needs (and an unrelated one is
/// refused), a protobuf-first metric read gets JSON, `--max-body-bytes` is the limit the guard applies, and a head
/// over hyper's own buffer limit costs that request only.
#[tokio::test]
async fn tls_port_verifies_limits_and_survives_an_oversized_head() {
    let server = DemoServer::start(&["--max-body-bytes", "4096"]);
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(EMPTY_CA).unwrap()])
        .build()
        .unwrap();
    assert!(untrusting.get(server.secure_url(GV)).send().await.is_err());

    let client = server.client();
    let query =
        serde_urlencoded::to_string([("labelSelector", "deployment in (api-service, nope)")])
            .unwrap();
    let resp = client
        .get(server.secure_url(&format!(
            "{GV}/namespaces/demo/smart_cpu_utilization?{query}"
        )))
        .header("Accept", "application/vnd.kubernetes.protobuf, */*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["items"][0]["metricLabels"]["deployment"],
        "api-service"
    );

    let big = client
        .post(server.secure_url(GV))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["reason"], "RequestEntityTooLarge");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("limit of 4096 bytes"),
        "{body}"
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

/// A throwaway CA that signed nothing the server presents.
const EMPTY_CA: &[u8] = include_bytes!("fixtures/unrelated-ca.pem");

#[tokio::test]
async fn metrics_port_serves_probes_allocator_figures_and_explanations() {
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

/// With its defaults the demo reports the wall clock: the workload's day is shifted by `--start-at` (08:45), not
/// the time the API stamps its values with.
#[test]
fn the_demo_reports_the_wall_clock() {
    // A tick a second for 7 s: a clock running faster than the wall clock (as `--speed 10` does) would be a
    // minute ahead by now.
    let server = DemoServer::start(&["--interval", "1s"]);
    std::thread::sleep(std::time::Duration::from_secs(7));
    let (ok, out, err) = server.kubectl(&[
        "get",
        "--raw",
        &metric_path("smart_cpu_utilization", Some("deployment=api-service")),
    ]);
    assert!(ok, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    let stamped: jiff::Timestamp = list["items"][0]["timestamp"]
        .as_str()
        .expect("a timestamp")
        .parse()
        .expect("RFC 3339");
    let skew = (jiff::Timestamp::now() - stamped)
        .total(jiff::Unit::Second)
        .unwrap()
        .abs();
    assert!(
        skew < 60.0,
        "value stamped {stamped}, {skew} s from the wall clock"
    );
}
