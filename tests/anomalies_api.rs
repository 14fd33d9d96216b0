//! Where anomalies show, in-process: `GET /api/v1/anomalies` (the current snapshot's anomalies merged with the
//! history: the sled store as `serve` keeps it, the in-memory log as `demo` keeps it, or none), its filters and
//! its 400 `Status` answers; the link from a deployment's explanation; and the anomaly metrics in `/metrics`. The
//! routers are driven with `tower::ServiceExt::oneshot` against snapshots built here, with a pinned clock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ::http::{Request, StatusCode};
use axum::Router;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::domain::anomaly::{Anomaly, AnomalyKind, Severity};
use smart_autoscaler::domain::decision::{DecisionConfig, Hooks, decide};
use smart_autoscaler::domain::model::{DeploymentKey, ServedDeployment, Snapshot};
use smart_autoscaler::domain::testing;
use smart_autoscaler::health::Health;
use smart_autoscaler::http::{AppState, Limits, metrics_router, metrics_router_with_anomalies};
use smart_autoscaler::store::{AnomalyHistory, AnomalyWriter, Retention, Store};
use smart_autoscaler::telemetry::{AnomalyMetrics, Telemetry};

/// Monday 2026-11-23 08:50:00 UTC.
const NOW: i64 = 1_795_423_800_000;
const INTERVAL: i64 = 15_000;
const OBSERVED: i64 = NOW - INTERVAL;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

struct Pinned(AtomicI64);

impl Clock for Pinned {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The metrics router over one state, and the handles a test turns.
struct Rig {
    router: Router,
    telemetry: Arc<Telemetry>,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Rig {
    fn new(snapshot: Option<Snapshot>, history: Option<AnomalyHistory>) -> Rig {
        let telemetry = Arc::new(Telemetry::new());
        let (snapshots, receiver) = watch::channel(snapshot.map(Arc::new));
        let state = AppState {
            snapshots: receiver,
            clock: Arc::new(Pinned(AtomicI64::new(NOW))),
            telemetry: telemetry.clone(),
            limits: Limits::default(),
            webhook: Arc::default(),
            extender: Arc::default(),
            responses: Default::default(),
            health: Arc::new(Health::new(&telemetry)),
            forecasts: None,
            tunings: None,
        };
        let router = match history {
            Some(h) => metrics_router_with_anomalies(state, h),
            None => metrics_router(state),
        };
        Rig {
            router,
            telemetry,
            snapshots,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Bytes) {
        let response = self
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = response.status();
        (
            code,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    async fn json(&self, path: &str) -> Value {
        let (code, body) = self.get(path).await;
        assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Asserts a 400 with a Kubernetes `Status` body whose message contains `message`.
    async fn bad_request(&self, path: &str, message: &str) {
        let (code, body) = self.get(path).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}: {text}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["status"], "Failure", "{body}");
        assert_eq!(body["code"], 400, "{body}");
        assert_eq!(body["reason"], "BadRequest", "{body}");
        let got = body["message"].as_str().unwrap_or("");
        assert!(got.contains(message), "{message:?} not in {body}");
    }
}

fn served(namespace: &str, name: &str) -> ServedDeployment {
    let inputs = testing::inputs()
        .key(&DeploymentKey::new(namespace, name))
        .cpu(50.0)
        .at(OBSERVED)
        .build();
    let explanation = decide(
        &inputs,
        &DecisionConfig::default(),
        None,
        Hooks::default(),
        OBSERVED,
    )
    .0;
    ServedDeployment {
        inputs,
        raw_percent: 50.0,
        smart_percent: 50.0,
        explanation,
    }
}

fn anomaly(namespace: &str, name: &str, kind: AnomalyKind, started_at: i64) -> Anomaly {
    Anomaly {
        key: DeploymentKey::new(namespace, name),
        kind,
        severity: Severity::Warning,
        started_at,
        last_seen_at: started_at,
        ended_at: None,
        expected: 40.0,
        actual: 95.5,
        score: 0.9,
        summary: format!("{} on {namespace}/{name}", kind.as_str()),
    }
}

fn with(mut a: Anomaly, severity: Severity, last_seen_at: i64, ended_at: Option<i64>) -> Anomaly {
    a.severity = severity;
    a.last_seen_at = last_seen_at;
    a.ended_at = ended_at;
    a
}

fn snapshot(anomalies: Vec<Anomaly>) -> Snapshot {
    let deployments: BTreeMap<DeploymentKey, ServedDeployment> = [
        served("shop", "api"),
        served("shop", "web"),
        served("other", "api"),
    ]
    .into_iter()
    .map(|d| (d.inputs.key.clone(), d))
    .collect();
    Snapshot {
        collected_at: OBSERVED,
        measured_at: OBSERVED,
        interval_millis: INTERVAL,
        deployments,
        unmeasured: BTreeMap::new(),
        nodes: vec![],
        failsafe: DecisionConfig::default().failsafe(INTERVAL),
        anomalies,
    }
}

/// The current tick: a thrash on shop/api open (critical now), a learned anomaly of other/api that ended on this
/// tick.
fn thrash() -> Anomaly {
    with(
        anomaly("shop", "api", AnomalyKind::ScalingThrash, NOW - 10 * MINUTE),
        Severity::Critical,
        OBSERVED,
        None,
    )
}

fn learned_ended() -> Anomaly {
    with(
        anomaly("other", "api", AnomalyKind::Learned, NOW - 20 * MINUTE),
        Severity::Info,
        OBSERVED,
        Some(OBSERVED),
    )
}

fn current() -> Snapshot {
    snapshot(vec![thrash(), learned_ended()])
}

/// An old spike of shop/api, over two hours ago.
fn old_spike() -> Anomaly {
    with(
        anomaly("shop", "api", AnomalyKind::CpuSpike, NOW - 3 * HOUR),
        Severity::Warning,
        NOW - 2 * HOUR,
        Some(NOW - 2 * HOUR),
    )
}

/// A store holding: the old spike; the thrash as written when it started (warning, first sighting); a pattern
/// deviation of shop/web left open by an earlier run.
async fn store_with_history(dir: &std::path::Path) -> Store {
    let store = Store::open(dir.join("store"), Retention::default())
        .await
        .unwrap();
    let thrash_at_start = anomaly("shop", "api", AnomalyKind::ScalingThrash, NOW - 10 * MINUTE);
    let web_open = anomaly("shop", "web", AnomalyKind::PatternDeviation, NOW - HOUR);
    store
        .put_anomalies(vec![old_spike(), thrash_at_start, web_open])
        .await
        .unwrap();
    store
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}/{}:{}",
                i["namespace"].as_str().unwrap(),
                i["name"].as_str().unwrap(),
                i["type"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_list_merges_the_snapshot_with_the_stored_history_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_history(dir.path()).await;
    let rig = Rig::new(Some(current()), Some(AnomalyHistory::Stored(store)));
    let body = rig.json("/api/v1/anomalies").await;
    assert_eq!(body["history"], "store");
    assert_eq!(body["collected_at_ms"], OBSERVED);
    assert_eq!(body["truncated"], false);
    assert_eq!(
        ids(&body),
        [
            "shop/api:scaling_thrash",
            "other/api:learned",
            "shop/web:pattern_deviation",
            "shop/api:cpu_spike"
        ]
    );
    let items = body["items"].as_array().unwrap();
    // The snapshot's copy wins over the stored one: critical, seen this tick.
    assert_eq!(
        items[0],
        json!({
            "namespace": "shop", "name": "api", "type": "scaling_thrash", "severity": "critical", "active": true,
            "started_at": "2026-11-23T08:40:00Z", "started_at_ms": NOW - 10 * MINUTE,
            "last_seen_at_ms": OBSERVED, "ended_at": null, "ended_at_ms": null,
            "expected": 40.0, "actual": 95.5, "score": 0.9, "summary": "scaling_thrash on shop/api",
        })
    );
    // Ended on this tick: listed, not active.
    assert_eq!(items[1]["active"], false);
    assert_eq!(items[1]["ended_at_ms"], OBSERVED);
    // Open in the history but not in the snapshot: not active.
    assert_eq!(items[2]["active"], false);
    assert_eq!(items[2]["ended_at_ms"], Value::Null);
    assert_eq!(items[3]["ended_at"], "2026-11-23T06:50:00Z");
}

#[tokio::test]
async fn filters_since_in_three_forms_and_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_history(dir.path()).await;
    let rig = Rig::new(Some(current()), Some(AnomalyHistory::Stored(store)));
    let list = |q: String| {
        let rig = &rig;
        async move { ids(&rig.json(&format!("/api/v1/anomalies?{q}")).await) }
    };
    assert_eq!(
        list("namespace=shop".into()).await,
        [
            "shop/api:scaling_thrash",
            "shop/web:pattern_deviation",
            "shop/api:cpu_spike"
        ]
    );
    assert_eq!(
        list("deployment=api".into()).await,
        [
            "shop/api:scaling_thrash",
            "other/api:learned",
            "shop/api:cpu_spike"
        ]
    );
    assert_eq!(
        list("namespace=shop&deployment=api".into()).await,
        ["shop/api:scaling_thrash", "shop/api:cpu_spike"]
    );
    // Empty values are absent, as in `?namespace=&deployment=`.
    assert_eq!(list("namespace=&deployment=".into()).await.len(), 4);
    assert!(list("namespace=nowhere".into()).await.is_empty());
    // The spike ended two hours ago: an hour back leaves it out, three hours back keeps it; the same in RFC 3339
    // and in unix milliseconds.
    let recent = [
        "shop/api:scaling_thrash",
        "other/api:learned",
        "shop/web:pattern_deviation",
    ];
    assert_eq!(list("since=1h".into()).await, recent);
    assert_eq!(list("since=2026-11-23T07:50:00Z".into()).await, recent);
    assert_eq!(
        rig.json(&format!("/api/v1/anomalies?since={}", NOW - HOUR))
            .await["query"]["since_ms"],
        NOW - HOUR
    );
    assert_eq!(list(format!("since={}", NOW - HOUR)).await, recent);
    assert_eq!(list("since=3h".into()).await.len(), 4);
    assert_eq!(
        list("since=2026-11-23T06:50:00%2B00:00".into()).await.len(),
        4
    );
    // The limit keeps the newest and says the answer was cut.
    let two = rig.json("/api/v1/anomalies?limit=2").await;
    assert_eq!(ids(&two), ["shop/api:scaling_thrash", "other/api:learned"]);
    assert_eq!(two["truncated"], true);
    assert_eq!(
        rig.json("/api/v1/anomalies?limit=4").await["truncated"],
        false
    );
}

#[tokio::test]
async fn bad_queries_are_400_statuses() {
    let rig = Rig::new(Some(current()), Some(AnomalyHistory::in_memory()));
    rig.bad_request(
        "/api/v1/anomalies?since=yesterday",
        "invalid since \"yesterday\"",
    )
    .await;
    rig.bad_request("/api/v1/anomalies?since=2026-11-23T08:00:00", "RFC 3339")
        .await;
    rig.bad_request("/api/v1/anomalies?since=-5", "invalid since")
        .await;
    rig.bad_request(
        "/api/v1/anomalies?since=99999999999999999999",
        "invalid since",
    )
    .await;
    for limit in ["0", "501", "ten", "-1"] {
        rig.bad_request(&format!("/api/v1/anomalies?limit={limit}"), "invalid limit")
            .await;
    }
    rig.bad_request(
        "/api/v1/anomalies?type=cpu_spike",
        "unknown query parameter \"type\"",
    )
    .await;
    // Every value of a repeated parameter is checked (the last one counts).
    rig.bad_request(
        "/api/v1/anomalies?since=1h&since=soon",
        "invalid since \"soon\"",
    )
    .await;
}

#[tokio::test]
async fn the_explanation_links_its_anomalies() {
    let rig = Rig::new(Some(current()), Some(AnomalyHistory::in_memory()));
    let api = rig.json("/api/v1/deployments/shop/api").await;
    let link = &api["anomalies"];
    assert_eq!(
        link["url"],
        "/api/v1/anomalies?namespace=shop&deployment=api"
    );
    let active = link["active"].as_array().unwrap();
    assert_eq!(active.len(), 1, "{link}");
    assert_eq!(active[0]["type"], "scaling_thrash");
    assert_eq!(active[0]["severity"], "critical");
    // Following it lists that deployment's anomalies only.
    let listed = rig.json(link["url"].as_str().unwrap()).await;
    assert_eq!(ids(&listed), ["shop/api:scaling_thrash"]);
    // Ended on this tick: no longer among the active ones of other/api.
    let other = rig.json("/api/v1/deployments/other/api").await;
    assert_eq!(other["anomalies"]["active"], json!([]));
    let list = rig.json("/api/v1/deployments").await;
    let counts: Vec<(String, u64)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                format!(
                    "{}/{}",
                    i["namespace"].as_str().unwrap(),
                    i["name"].as_str().unwrap()
                ),
                i["anomalies_active"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("other/api".to_string(), 0),
            ("shop/api".to_string(), 1),
            ("shop/web".to_string(), 0)
        ]
    );
}

#[tokio::test]
async fn the_memory_history_keeps_what_left_the_snapshot_and_none_lists_the_snapshot_only() {
    // As the demo's engine does after each publish: the writer takes each snapshot's anomalies.
    let history = AnomalyHistory::in_memory();
    let mut writer = AnomalyWriter::new(history.clone());
    let spike = anomaly("shop", "web", AnomalyKind::CpuSpike, NOW - 5 * MINUTE);
    let first = snapshot(vec![spike.clone()]);
    writer.observe(&first.anomalies);
    let over = with(
        spike.clone(),
        Severity::Warning,
        NOW - MINUTE,
        Some(NOW - MINUTE),
    );
    writer.observe(&[over]);
    let rig = Rig::new(Some(current()), Some(history));
    let body = rig.json("/api/v1/anomalies").await;
    assert_eq!(body["history"], "memory");
    assert_eq!(
        ids(&body),
        [
            "shop/web:cpu_spike",
            "shop/api:scaling_thrash",
            "other/api:learned"
        ]
    );
    assert_eq!(body["items"][0]["ended_at_ms"], NOW - MINUTE);

    let bare = Rig::new(Some(current()), None);
    let body = bare.json("/api/v1/anomalies").await;
    assert_eq!(body["history"], "none");
    assert_eq!(ids(&body), ["shop/api:scaling_thrash", "other/api:learned"]);
    // Before the first tick: an empty list, not an error.
    let empty = Rig::new(None, None);
    let body = empty.json("/api/v1/anomalies").await;
    assert_eq!(
        (body["items"].clone(), body["collected_at_ms"].clone()),
        (json!([]), Value::Null)
    );
    drop(empty.snapshots);
}

/// The value of one series in the text exposition.
fn series(exposition: &str, name: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l[name.len()..].trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_each_anomaly_once_and_show_every_kind_and_severity() {
    let rig = Rig::new(None, None);
    let metrics = AnomalyMetrics::new(&rig.telemetry);
    let exposition = || async {
        let (code, body) = rig.get("/metrics").await;
        assert_eq!(code, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    };
    let total = |kind: &str, severity: &str| {
        format!("smart_autoscaler_anomalies_total{{type=\"{kind}\",severity=\"{severity}\"}}")
    };
    let active = |kind: &str, severity: &str| {
        format!("smart_autoscaler_anomalies_active{{type=\"{kind}\",severity=\"{severity}\"}}")
    };
    // Every combination, at zero, before any anomaly.
    let text = exposition().await;
    for kind in AnomalyKind::ALL {
        for severity in Severity::ALL {
            assert_eq!(
                series(&text, &total(kind.as_str(), severity.as_str())),
                Some(0.0),
                "{text}"
            );
            assert_eq!(
                series(&text, &active(kind.as_str(), severity.as_str())),
                Some(0.0),
                "{text}"
            );
        }
    }
    assert!(
        text.contains("# TYPE smart_autoscaler_anomalies_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE smart_autoscaler_anomalies_active gauge"),
        "{text}"
    );

    // Tick 1: the thrash starts (critical) and the learned one starts and ends on the same tick.
    let s1 = current();
    metrics.observe(None, &s1);
    rig.snapshots.send_replace(Some(Arc::new(s1.clone())));
    // Tick 2: the thrash still holds; a spike starts. Tick 3: the same again, later.
    let spike = anomaly("shop", "web", AnomalyKind::CpuSpike, NOW);
    let s2 = snapshot(vec![
        with(thrash(), Severity::Critical, NOW, None),
        spike.clone(),
    ]);
    metrics.observe(Some(&s1), &s2);
    let s3 = snapshot(vec![
        with(thrash(), Severity::Critical, NOW + INTERVAL, None),
        with(spike, Severity::Warning, NOW + INTERVAL, None),
    ]);
    metrics.observe(Some(&s2), &s3);
    let text = exposition().await;
    assert_eq!(
        series(&text, &total("scaling_thrash", "critical")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &total("learned", "info")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &total("cpu_spike", "warning")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &total("cpu_spike", "critical")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &active("scaling_thrash", "critical")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &active("cpu_spike", "warning")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &active("learned", "info")),
        Some(0.0),
        "{text}"
    );

    // Tick 4: nothing open; the gauges go back to zero, the counters stay.
    metrics.observe(Some(&s3), &snapshot(vec![]));
    let text = exposition().await;
    assert_eq!(
        series(&text, &active("scaling_thrash", "critical")),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &total("scaling_thrash", "critical")),
        Some(1.0),
        "{text}"
    );
}
