//! The HTTP contract in-process: the secure and metrics routers (`http::secure_router`, `http::metrics_router`)
//! driven with `tower::ServiceExt::oneshot` against a fixed snapshot published on the watch channel the handlers
//! read, with a pinned clock. Covers what the aggregator and the HPA rely on (discovery, the metric read with
//! `labelSelector`, the `ExternalMetricValueList` shape, the fail-safe by data age), the JSON API, the probes,
//! `/metrics`, and Kubernetes `Status` bodies for every error. No socket, no TLS, no binary: the smoke tests that
//! start the real binary are in `tests/serving.rs`, the connection-level ones in `tests/connections.rs`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ::http::{HeaderMap, Method, Request, StatusCode, header};
use axum::Router;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::domain::decision::{DecisionConfig, Hooks, decide};
use smart_autoscaler::domain::forecast::online::Board;
use smart_autoscaler::domain::model::{
    DeploymentKey, ServedDeployment, Snapshot, UnknownCause, UsageUnknown,
};
use smart_autoscaler::domain::testing;
use smart_autoscaler::health::Health;
use smart_autoscaler::http::{AppState, Limits, metrics_router, secure_router};
use smart_autoscaler::telemetry::Telemetry;

const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";
/// Monday 2026-11-23 08:50:00 UTC.
const NOW: i64 = 1_795_423_800_000;
/// The snapshot's collection interval.
const INTERVAL: i64 = 15_000;
/// When the fixed snapshot's values were measured: one interval before [`NOW`].
const OBSERVED: i64 = NOW - INTERVAL;

/// A clock the test moves.
struct Pinned(AtomicI64);

impl Clock for Pinned {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Both routers over one state, and the handles a test turns.
struct Rig {
    secure: Router,
    metrics: Router,
    clock: Arc<Pinned>,
    health: Arc<Health>,
    _snapshots: watch::Sender<Option<Arc<Snapshot>>>,
    _forecasts: Option<watch::Sender<Arc<Board>>>,
}

impl Rig {
    fn new(snapshot: Option<Snapshot>) -> Rig {
        Rig::with(snapshot, Limits::default(), Some(Board::default()))
    }

    fn with(snapshot: Option<Snapshot>, limits: Limits, board: Option<Board>) -> Rig {
        let telemetry = Arc::new(Telemetry::new());
        let health = Arc::new(Health::new(&telemetry));
        let clock = Arc::new(Pinned(AtomicI64::new(NOW)));
        let (snapshots, receiver) = watch::channel(snapshot.map(Arc::new));
        let (forecasts, board) = match board {
            Some(b) => {
                let (tx, rx) = watch::channel(Arc::new(b));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let state = AppState {
            snapshots: receiver,
            clock: clock.clone(),
            telemetry,
            limits,
            webhook: Arc::default(),
            extender: Arc::default(),
            responses: Default::default(),
            health: health.clone(),
            forecasts: board,
            tunings: None,
        };
        Rig {
            secure: secure_router(state.clone()),
            metrics: metrics_router(state),
            clock,
            health,
            _snapshots: snapshots,
            _forecasts: forecasts,
        }
    }

    fn at(&self, now: i64) {
        self.clock.0.store(now, Ordering::SeqCst);
    }
}

/// One answer: status, headers, body.
struct Answer {
    code: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a Kubernetes `Status` body with this code and reason whose message contains `message`.
    fn assert_status(&self, code: u16, reason: &str, message: &str) {
        assert_eq!(self.code.as_u16(), code, "{}", self.text());
        assert_eq!(self.content_type(), "application/json");
        let body = self.json();
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["apiVersion"], "v1", "{body}");
        assert_eq!(body["metadata"], json!({}), "{body}");
        assert_eq!(body["status"], "Failure", "{body}");
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["reason"], reason, "{body}");
        let text = body["message"].as_str().unwrap_or("");
        assert!(text.contains(message), "{message:?} not in {body}");
    }
}

async fn send(router: &Router, request: Request<Body>) -> Answer {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let code = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        code,
        headers,
        body,
    }
}

async fn get(router: &Router, path: &str) -> Answer {
    send(router, Request::get(path).body(Body::empty()).unwrap()).await
}

/// The metric read as the HPA makes it: namespace, metric, `labelSelector` URL-encoded when there is one.
fn metric_path(namespace: &str, metric: &str, selector: Option<&str>) -> String {
    match selector {
        Some(s) => format!(
            "{GV}/namespaces/{namespace}/{metric}?{}",
            serde_urlencoded::to_string([("labelSelector", s)]).unwrap()
        ),
        None => format!("{GV}/namespaces/{namespace}/{metric}"),
    }
}

/// What is served for one deployment: the decision core's explanation of its inputs, with the served values
/// fixed so the quantities are exact.
fn served(namespace: &str, name: &str, raw: f64, smart: f64, at: i64) -> ServedDeployment {
    let inputs = testing::inputs()
        .key(&DeploymentKey::new(namespace, name))
        .cpu(raw)
        .at(at)
        .build();
    let explanation = decide(
        &inputs,
        &DecisionConfig::default(),
        None,
        Hooks::default(),
        at,
    )
    .0;
    ServedDeployment {
        inputs,
        raw_percent: raw,
        smart_percent: smart,
        explanation,
    }
}

/// The fixed snapshot: `shop/api` (raw 52.5%, smart 61.25%) and `shop/web` measured one interval ago, `other/api`
/// beside them, and `shop/new` managed but never measured. Fail-safe limits as the engine sets them for a 15 s
/// interval: raw after 3 intervals, refused after 10.
fn snapshot() -> Snapshot {
    let deployments: BTreeMap<DeploymentKey, ServedDeployment> = [
        served("shop", "api", 52.5, 61.25, OBSERVED),
        served("shop", "web", 30.0, 25.0, OBSERVED),
        served("other", "api", 80.0, 90.0, OBSERVED),
    ]
    .into_iter()
    .map(|d| (d.inputs.key.clone(), d))
    .collect();
    Snapshot {
        collected_at: OBSERVED,
        measured_at: OBSERVED,
        interval_millis: INTERVAL,
        deployments,
        unmeasured: BTreeMap::from([(
            DeploymentKey::new("shop", "new"),
            UsageUnknown {
                cause: UnknownCause::NoSamples,
                reason: "no usable CPU sample for its 2 pods".into(),
                since: OBSERVED,
                last_good_at: None,
            },
        )]),
        nodes: vec![],
        failsafe: DecisionConfig::default().failsafe(INTERVAL),
        anomalies: vec![],
    }
}

fn parse_percent(value: &str) -> f64 {
    match value.strip_suffix('m') {
        Some(m) => m.parse::<f64>().unwrap() / 1000.0,
        None => value.parse().unwrap(),
    }
}

#[tokio::test]
async fn discovery_documents() {
    let rig = Rig::new(None);
    let group_version =
        json!({ "groupVersion": "external.metrics.k8s.io/v1beta1", "version": "v1beta1" });
    let group = json!({
        "name": "external.metrics.k8s.io",
        "versions": [group_version],
        "preferredVersion": group_version,
    });
    let answer = get(&rig.secure, "/apis").await;
    assert_eq!(answer.code, 200);
    assert_eq!(
        answer.json(),
        json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [group] })
    );
    let answer = get(&rig.secure, "/apis/external.metrics.k8s.io").await;
    let mut want = group.clone();
    want["kind"] = json!("APIGroup");
    want["apiVersion"] = json!("v1");
    assert_eq!((answer.code, answer.json()), (StatusCode::OK, want));

    // The aggregator's availability probe: 200 with an APIResourceList, also before the first snapshot.
    let answer = get(&rig.secure, GV).await;
    assert_eq!(answer.code, 200);
    assert_eq!(answer.content_type(), "application/json");
    let resource = |name: &str| {
        json!({
            "name": name, "singularName": "", "namespaced": true,
            "kind": "ExternalMetricValueList", "verbs": ["get"],
        })
    };
    assert_eq!(
        answer.json(),
        json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": "external.metrics.k8s.io/v1beta1",
            "resources": [resource("smart_cpu_utilization"), resource("smart_cpu_utilization_raw")],
        })
    );

    // No OpenAPI: a 404 the aggregator skips gracefully.
    for path in ["/openapi/v2", "/openapi/v3"] {
        get(&rig.secure, path)
            .await
            .assert_status(404, "NotFound", "no OpenAPI");
    }
}

#[tokio::test]
async fn the_metric_read_is_an_external_metric_value_list() {
    let rig = Rig::new(Some(snapshot()));
    // The HPA's Accept header is protobuf first; the answer is JSON all the same, never a 406.
    let request = Request::get(metric_path(
        "shop",
        "smart_cpu_utilization",
        Some("deployment=api"),
    ))
    .header(header::ACCEPT, "application/vnd.kubernetes.protobuf, */*")
    .body(Body::empty())
    .unwrap();
    let answer = send(&rig.secure, request).await;
    assert_eq!(answer.code, 200, "{}", answer.text());
    assert_eq!(answer.content_type(), "application/json");
    assert_eq!(
        answer.json(),
        json!({
            "kind": "ExternalMetricValueList",
            "apiVersion": "external.metrics.k8s.io/v1beta1",
            "metadata": {},
            "items": [{
                "metricName": "smart_cpu_utilization",
                "metricLabels": { "deployment": "api" },
                "timestamp": "2026-11-23T08:49:45Z",
                "window": 600,
                "value": "61250m",
            }],
        })
    );

    let raw = get(
        &rig.secure,
        &metric_path("shop", "smart_cpu_utilization_raw", Some("deployment=api")),
    )
    .await;
    assert_eq!(raw.code, 200);
    let item = &raw.json()["items"][0];
    assert_eq!(item["metricName"], "smart_cpu_utilization_raw");
    assert_eq!(item["value"], "52500m");

    // The namespace is the HPA's: the same selector in another namespace reads that namespace's deployment.
    let other = get(
        &rig.secure,
        &metric_path("other", "smart_cpu_utilization", Some("deployment=api")),
    )
    .await;
    assert_eq!(other.json()["items"][0]["value"], "90");
    assert_eq!(
        other.json()["items"][0]["metricLabels"],
        json!({ "deployment": "api" })
    );
}

#[tokio::test]
async fn every_selector_form_the_hpa_can_send_selects_by_deployment() {
    let rig = Rig::new(Some(snapshot()));
    for selector in [
        "deployment=api",
        "deployment==api",
        "deployment in (api, nope)",
        "deployment notin (web,new)",
        "deployment,deployment!=web",
    ] {
        let answer = get(
            &rig.secure,
            &metric_path("shop", "smart_cpu_utilization", Some(selector)),
        )
        .await;
        assert_eq!(answer.code, 200, "{selector}: {}", answer.text());
        assert_eq!(
            answer.json()["items"][0]["metricLabels"]["deployment"],
            "api",
            "{selector}"
        );
        assert_eq!(
            parse_percent(answer.json()["items"][0]["value"].as_str().unwrap()),
            61.25
        );
    }
}

#[tokio::test]
async fn reads_that_cannot_be_answered_are_status_errors() {
    let rig = Rig::new(Some(snapshot()));
    let smart = "smart_cpu_utilization";
    let cases = [
        // No labelSelector means every series: two deployments, whose percentages the HPA would sum.
        (
            metric_path("shop", smart, None),
            400,
            "BadRequest",
            "matches 2 deployments (api, web)",
        ),
        (
            metric_path("shop", smart, Some("deployment in (api,web)")),
            400,
            "BadRequest",
            "matches 2 deployments",
        ),
        (
            metric_path("shop", smart, Some("deployment=nope")),
            404,
            "NotFound",
            "not found in namespace \"shop\"",
        ),
        (
            metric_path("shop", smart, Some("!deployment")),
            404,
            "NotFound",
            "not found",
        ),
        (
            metric_path("empty", smart, Some("deployment=api")),
            404,
            "NotFound",
            "not found in namespace \"empty\"",
        ),
        (
            metric_path("shop", "cpu_utilization", Some("deployment=api")),
            404,
            "NotFound",
            "not served here; available: smart_cpu_utilization, smart_cpu_utilization_raw",
        ),
        (
            metric_path("shop", smart, Some("deployment in (api")),
            400,
            "BadRequest",
            "invalid labelSelector",
        ),
        (
            metric_path("shop", smart, Some("deployment in ()")),
            400,
            "BadRequest",
            "invalid labelSelector",
        ),
        (
            format!("{GV}/namespaces/shop/{smart}?labelSelector=%ZZ"),
            400,
            "BadRequest",
            "invalid labelSelector \"%ZZ\"",
        ),
        // Managed, never measured: unknown is not zero.
        (
            metric_path("shop", smart, Some("deployment=new")),
            503,
            "ServiceUnavailable",
            "no value for shop/new: its CPU utilization is unknown (no usable CPU sample for its 2 pods)",
        ),
        (
            format!("{GV}/namespaces/shop/{smart}/extra"),
            404,
            "NotFound",
            "could not find the requested resource",
        ),
        (
            format!("{GV}/namespaces/%FF/{smart}"),
            400,
            "BadRequest",
            "",
        ),
    ];
    for (path, code, reason, message) in cases {
        get(&rig.secure, &path)
            .await
            .assert_status(code, reason, message);
    }
}

#[tokio::test]
async fn before_the_first_snapshot_reads_and_readiness_are_unavailable() {
    let rig = Rig::new(None);
    get(
        &rig.secure,
        &metric_path("shop", "smart_cpu_utilization", Some("deployment=api")),
    )
    .await
    .assert_status(503, "ServiceUnavailable", "no metrics collected yet");
    // An unknown metric is still a 404, snapshot or not.
    get(
        &rig.secure,
        &metric_path("shop", "nope", Some("deployment=api")),
    )
    .await
    .assert_status(404, "NotFound", "not served here");
    for router in [&rig.secure, &rig.metrics] {
        let answer = get(router, "/readyz").await;
        assert_eq!(answer.code, 503);
        assert!(
            answer
                .text()
                .starts_with("[-]snapshot: no metrics collected yet\n"),
            "{}",
            answer.text()
        );
        assert!(answer.text().ends_with("\nreadyz check failed\n"));
        assert_eq!(get(router, "/healthz").await.text(), "ok");
    }
    get(&rig.metrics, "/api/v1/deployments")
        .await
        .assert_status(503, "ServiceUnavailable", "no metrics collected yet");
}

/// Fresh inputs serve the adjusted value; past `raw_after_intervals` the raw one; past `error_after_intervals`
/// nothing (503 with the reason), and `/readyz` goes with it. Each read follows the previous one on the same
/// server, so a cached fresh answer must not outlive its freshness either.
#[tokio::test]
async fn the_fail_safe_follows_the_age_of_the_data() {
    let rig = Rig::new(Some(snapshot()));
    let failsafe = DecisionConfig::default().failsafe(INTERVAL);
    assert_eq!(
        (failsafe.raw_after_millis, failsafe.error_after_millis),
        (45_000, 150_000)
    );
    let smart = metric_path("shop", "smart_cpu_utilization", Some("deployment=api"));
    let raw = metric_path("shop", "smart_cpu_utilization_raw", Some("deployment=api"));
    let value = |answer: Answer| {
        assert_eq!(answer.code, 200, "{}", answer.text());
        let item = &answer.json()["items"][0];
        // The timestamp stays the measurement's: the HPA sees how old it is.
        assert_eq!(item["timestamp"], "2026-11-23T08:49:45Z");
        item["value"].as_str().unwrap().to_string()
    };

    // Exactly at the raw limit: still fresh.
    for now in [NOW, OBSERVED + failsafe.raw_after_millis] {
        rig.at(now);
        assert_eq!(value(get(&rig.secure, &smart).await), "61250m", "at {now}");
    }
    // Past it: the raw value under the adjusted metric's name, until the error limit.
    for now in [
        OBSERVED + failsafe.raw_after_millis + 1,
        OBSERVED + failsafe.error_after_millis,
    ] {
        rig.at(now);
        let answer = get(&rig.secure, &smart).await;
        assert_eq!(
            answer.json()["items"][0]["metricName"],
            "smart_cpu_utilization"
        );
        assert_eq!(value(answer), "52500m", "at {now}");
        assert_eq!(value(get(&rig.secure, &raw).await), "52500m");
        assert_eq!(get(&rig.metrics, "/readyz").await.code, 200);
    }
    // Past the error limit: refused, whichever metric, with the age and the limit.
    rig.at(OBSERVED + failsafe.error_after_millis + 1);
    for path in [&smart, &raw] {
        get(&rig.secure, path).await.assert_status(
            503,
            "ServiceUnavailable",
            "inputs for shop/api are 150s old, past the 150s fail-safe limit; refusing to serve a stale value",
        );
    }
    let ready = get(&rig.metrics, "/readyz").await;
    assert_eq!(ready.code, 503);
    assert!(
        ready
            .text()
            .starts_with("[-]values: freshest data 150s old, past the 150s fail-safe limit"),
        "{}",
        ready.text()
    );
}

#[tokio::test]
async fn probes_report_readiness_with_source_detail() {
    let rig = Rig::new(Some(snapshot()));
    rig.health.ok("kubernetes", "3 deployments", NOW - 5_000);
    rig.health
        .error("prometheus", "connection refused", NOW - 10_000);
    for router in [&rig.secure, &rig.metrics] {
        for probe in ["/healthz", "/livez"] {
            let answer = get(router, probe).await;
            assert_eq!(
                (answer.code, answer.text().as_str()),
                (StatusCode::OK, "ok")
            );
        }
        // A degraded source is detail: values can still be served, so the server is ready.
        let answer = get(router, "/readyz").await;
        assert_eq!(answer.code, 200);
        assert_eq!(
            answer.text(),
            "[+]values: 3 deployments, 1 with unknown usage, freshest data 15s old (limit 150s)\n\
             [+]kubernetes: 3 deployments\n\
             [-]prometheus: degraded for 10s: connection refused\n\
             ok\n"
        );
    }
}

#[tokio::test]
async fn the_json_api_explains_every_served_value() {
    let rig = Rig::new(Some(snapshot()));
    let list = get(&rig.metrics, "/api/v1/deployments").await;
    assert_eq!(list.code, 200);
    let list = list.json();
    assert_eq!(list["collected_at_ms"], OBSERVED);
    assert_eq!(list["age_seconds"], 15);
    let names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["namespace"].as_str().unwrap(),
                i["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(names, ["other/api", "shop/api", "shop/web", "shop/new"]);
    let api = &list["items"][1];
    assert_eq!(api["raw_percent"], 52.5);
    assert_eq!(api["smart_percent"], 61.25);
    assert_eq!(api["base_target_percent"], 70.0);
    assert_eq!(api["replicas"], 4);
    assert_eq!(api["observed_at_ms"], OBSERVED);
    assert_eq!(api["usage_unknown"], Value::Null);
    assert_eq!(list["items"][3]["usage_unknown"]["cause"], "no_samples");

    let one = get(&rig.metrics, "/api/v1/deployments/shop/api").await;
    assert_eq!(one.code, 200);
    let one = one.json();
    let want = snapshot().deployments[&DeploymentKey::new("shop", "api")].clone();
    assert_eq!(one["raw_percent"], 52.5);
    assert_eq!(one["smart_percent"], 61.25);
    assert_eq!(one["inputs"], serde_json::to_value(&want.inputs).unwrap());
    // The decision core's explanation, as it decided (compared field by field: a float parsed back from JSON may
    // differ from the one printed in its last bit).
    let explanation = &one["explanation"];
    assert_eq!(
        explanation["effective_target_percent"],
        want.explanation.effective_target_percent
    );
    assert_eq!(explanation["policy_source"], "base");
    assert_eq!(
        explanation["reasons"],
        serde_json::to_value(&want.explanation.reasons).unwrap()
    );

    // Managed but never measured: why there is no value.
    let new = get(&rig.metrics, "/api/v1/deployments/shop/new")
        .await
        .json();
    assert_eq!(
        new["usage_unknown"]["reason"],
        "no usable CPU sample for its 2 pods"
    );
    assert_eq!(new["usage_unknown"]["last_good_at"], Value::Null);
    assert!(new.get("smart_percent").is_none(), "{new}");

    get(&rig.metrics, "/api/v1/deployments/shop/nope")
        .await
        .assert_status(404, "NotFound", "deployment shop/nope is not managed");
    for path in [
        "/api/v1/deployments/%FF/x",
        "/api/v1/deployments/demo/%C3%28",
    ] {
        get(&rig.metrics, path)
            .await
            .assert_status(400, "BadRequest", path);
    }
}

#[tokio::test]
async fn forecasts_are_listed_or_say_why_not() {
    let rig = Rig::new(Some(snapshot()));
    let list = get(&rig.metrics, "/api/v1/forecasts").await;
    assert_eq!(
        (list.code, list.json()),
        (StatusCode::OK, json!({ "items": [] }))
    );
    get(&rig.metrics, "/api/v1/forecasts/shop/api")
        .await
        .assert_status(404, "NotFound", "no forecast for deployment shop/api");

    let off = Rig::with(Some(snapshot()), Limits::default(), None);
    for path in ["/api/v1/forecasts", "/api/v1/forecasts/shop/api"] {
        get(&off.metrics, path).await.assert_status(
            404,
            "NotFound",
            "forecasting is off (--no-forecast)",
        );
    }
}

#[tokio::test]
async fn metrics_exposition_negotiates_its_format_and_counts_requests_by_route() {
    let rig = Rig::new(Some(snapshot()));
    assert_eq!(
        get(
            &rig.secure,
            &metric_path("shop", "smart_cpu_utilization", Some("deployment=api")),
        )
        .await
        .code,
        200
    );
    // OpenMetrics for a client that prefers it, as Prometheus does.
    let request = Request::get("/metrics")
        .header(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .body(Body::empty())
        .unwrap();
    let answer = send(&rig.metrics, request).await;
    assert_eq!(answer.code, 200);
    assert_eq!(
        answer.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = answer.text();
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    assert!(
        text.contains(
            "smart_autoscaler_http_requests_total{server=\"secure\",route=\"/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}\",method=\"GET\",code=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("\nsmart_autoscaler_snapshot_age_seconds 15.0\n"),
        "{text}"
    );
    assert!(
        text.contains("\nsmart_autoscaler_managed_deployments 3\n"),
        "{text}"
    );

    // Prometheus' text format for a client that asks for text/plain, and by default (curl, promtool).
    let request = Request::get("/metrics")
        .header(header::ACCEPT, "text/plain;version=0.0.4;q=0.9")
        .body(Body::empty())
        .unwrap();
    for answer in [
        send(&rig.metrics, request).await,
        get(&rig.metrics, "/metrics").await,
    ] {
        assert_eq!(
            answer.content_type(),
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert!(!answer.text().contains("# EOF"));
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_status_errors_on_both_ports() {
    let rig = Rig::new(Some(snapshot()));
    for (router, path) in [
        (&rig.secure, "/nope"),
        (&rig.secure, "/api/v1/deployments"),
        // The extender's node view is under /scheduler/: the core API's path is not shadowed.
        (&rig.secure, "/api/v1/nodes"),
        (&rig.metrics, "/nope"),
        (&rig.metrics, GV),
    ] {
        get(router, path).await.assert_status(
            404,
            "NotFound",
            &format!("the server could not find the requested resource ({path})"),
        );
    }
    for (router, method, path) in [
        (&rig.secure, Method::DELETE, GV),
        (&rig.secure, Method::POST, "/apis"),
        (&rig.secure, Method::GET, "/scheduler/filter"),
        (&rig.metrics, Method::POST, "/metrics"),
        (&rig.metrics, Method::PUT, "/api/v1/deployments/shop/api"),
    ] {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        send(router, request).await.assert_status(
            405,
            "MethodNotAllowed",
            &format!("{method} is not supported on {path}"),
        );
    }
}

#[tokio::test]
async fn bodies_and_heads_over_the_limits_are_status_errors() {
    let limits = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let rig = Rig::with(Some(snapshot()), limits, None);
    // Declared too large: refused before any handler runs, whatever the route.
    for path in [GV, "/scheduler/filter", "/mutate/deployments"] {
        let request = Request::post(path)
            .header(header::CONTENT_LENGTH, "10000")
            .body(Body::from(vec![b'x'; 10_000]))
            .unwrap();
        send(&rig.secure, request).await.assert_status(
            413,
            "RequestEntityTooLarge",
            "request body of 10000 bytes exceeds the limit of 4096 bytes",
        );
    }
    // No declared length (as a chunked upload): the handlers that read a body stop reading at the limit.
    for path in ["/scheduler/filter", "/mutate/deployments"] {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(vec![b'x'; 10_000]))
            .unwrap();
        send(&rig.secure, request).await.assert_status(
            413,
            "RequestEntityTooLarge",
            "request body exceeds the configured limit",
        );
    }
    // Too many header fields, or a head over the byte limit: 431 with a Status (hyper's own has no body).
    let mut many = Request::get(GV);
    for i in 0..150 {
        many = many.header(format!("x-h{i}"), "v");
    }
    send(&rig.secure, many.body(Body::empty()).unwrap())
        .await
        .assert_status(
            431,
            "BadRequest",
            "150 header fields exceed the limit of 100",
        );
    let big = Request::get(GV)
        .header("x-big", "a".repeat(20 * 1024))
        .body(Body::empty())
        .unwrap();
    send(&rig.metrics, big).await.assert_status(
        431,
        "BadRequest",
        "exceeds the limit of 16384 bytes",
    );
}
