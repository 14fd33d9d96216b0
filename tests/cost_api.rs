//! Where costs and right-sizing show, in-process: the engine's `CostBook` fed snapshots built here, then
//! `GET /api/v1/cost`, `GET /api/v1/recommendations` and the cost gauges of `/metrics` through the metrics
//! router (`tower::ServiceExt::oneshot`), with the hand-computed numbers of docs/cost.md's rules, the
//! `?namespace=` filter, and the 400/404/503 `Status` answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use ::http::{Request, StatusCode};
use axum::Router;
use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::cost::{CostBook, parse_pool_price};
use smart_autoscaler::domain::cost::{GIB, Prices};
use smart_autoscaler::domain::decision::{DecisionConfig, Hooks, decide};
use smart_autoscaler::domain::model::{
    DeploymentKey, NodeInputs, ServedDeployment, Snapshot, UnixMillis,
};
use smart_autoscaler::domain::testing;
use smart_autoscaler::health::Health;
use smart_autoscaler::http::{AppState, Limits, metrics_router};
use smart_autoscaler::telemetry::Telemetry;

/// Monday 2026-11-23 08:00:00 UTC.
const NOW: i64 = 1_795_420_800_000;
const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

struct Pinned(AtomicI64);

impl Clock for Pinned {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

fn router(book: Option<Arc<CostBook>>, telemetry: Arc<Telemetry>) -> Router {
    let (_tx, receiver) = watch::channel(None);
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
    match book {
        Some(b) => metrics_router(state).layer(axum::Extension(b)),
        None => metrics_router(state),
    }
}

async fn get(router: &Router, path: &str) -> (StatusCode, Bytes) {
    let response = router
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

async fn json(router: &Router, path: &str) -> Value {
    let (code, body) = get(router, path).await;
    assert_eq!(code, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Asserts a Kubernetes `Status` body with `code` whose message contains `message`.
async fn status(router: &Router, path: &str, code: StatusCode, message: &str) {
    let (got, body) = get(router, path).await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(got, code, "{path}: {text}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code.as_u16(), "{body}");
    assert!(
        body["message"].as_str().unwrap_or("").contains(message),
        "{message:?} not in {body}"
    );
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

/// A served deployment: `pods` ready pods of `cpu_milli` and `memory_bytes` each, at `cpu` percent CPU and
/// `memory` percent memory, on `nodes`.
fn served(
    key: (&str, &str),
    pods: u32,
    (cpu_milli, memory_bytes): (i64, i64),
    cpu: f64,
    memory: Option<f64>,
    nodes: &[(&str, u32)],
    at: UnixMillis,
) -> ServedDeployment {
    let mut inputs = testing::inputs()
        .key(&DeploymentKey::new(key.0, key.1))
        .cpu(cpu)
        .memory(memory)
        .replicas(pods)
        .ready(pods)
        .max_replicas(None)
        .at(at)
        .build();
    inputs.pod_cpu_request_milli = cpu_milli;
    inputs.pod_memory_request_bytes = memory_bytes;
    inputs.ready_pods_by_node = nodes.iter().map(|(n, c)| (n.to_string(), *c)).collect();
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
        raw_percent: cpu,
        smart_percent: cpu,
        explanation,
    }
}

fn node(name: &str, pool: Option<&str>) -> NodeInputs {
    NodeInputs {
        name: name.into(),
        labels: pool
            .map(|p| [("pool".to_string(), p.to_string())].into())
            .unwrap_or_default(),
        ready: true,
        schedulable: true,
        allocatable_cpu_milli: 4000,
        requested_cpu_milli: 0,
        measured_cpu_percent: None,
    }
}

fn snapshot(at: UnixMillis, interval: i64, deployments: Vec<ServedDeployment>) -> Snapshot {
    Snapshot {
        collected_at: at,
        measured_at: at,
        interval_millis: interval,
        deployments: deployments
            .into_iter()
            .map(|d| (d.inputs.key.clone(), d))
            .collect(),
        unmeasured: BTreeMap::new(),
        nodes: vec![node("n-std", None), node("n-spot", Some("spot"))],
        failsafe: DecisionConfig::default().failsafe(interval),
        anomalies: vec![],
    }
}

fn prices() -> Prices {
    Prices {
        default: None,
        pools: vec![parse_pool_price("pool=spot:0.01:0.001").unwrap()],
    }
}

/// shop/web: 4 pods of 500m and 1 GiB using 60% CPU and 50% memory, on an unpooled node (OpenCost's prices);
/// other/api: 2 pods of 1 core, no memory request, at 50% CPU, on the spot pool (0.01 $/core-hour).
fn two_deployments(at: UnixMillis, interval: i64) -> Snapshot {
    snapshot(
        at,
        interval,
        vec![
            served(
                ("shop", "web"),
                4,
                (500, GIB as i64),
                60.0,
                Some(50.0),
                &[("n-std", 4)],
                at,
            ),
            served(
                ("other", "api"),
                2,
                (1000, 0),
                50.0,
                None,
                &[("n-spot", 2)],
                at,
            ),
        ],
    )
}

#[tokio::test]
async fn cost_is_served_per_deployment_namespace_and_cluster_with_hand_computed_numbers() {
    let telemetry = Arc::new(Telemetry::new());
    let book = Arc::new(CostBook::new(prices()).with_metrics(&telemetry));
    let router = router(Some(book.clone()), telemetry);
    // Before the first tick: nothing priced yet.
    status(
        &router,
        "/api/v1/cost",
        StatusCode::SERVICE_UNAVAILABLE,
        "no tick priced yet",
    )
    .await;

    // One tick an hour long, so dollars and dollars per hour read the same.
    book.observe(&two_deployments(NOW, HOUR));
    let body = json(&router, "/api/v1/cost").await;
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{body}");
    let web = items.iter().find(|d| d["key"]["name"] == "web").unwrap();
    // CPU: 4 × max(0.5, 0.3) = 2 core-hours × 0.031611 = 0.063222; memory: 4 × max(1, 0.5) = 4 GiB-hours ×
    // 0.004237 = 0.016948.
    let web_total = 2.0 * 0.031611 + 4.0 * 0.004237;
    assert!(
        close(web["total_usd"].as_f64().unwrap(), web_total),
        "{web}"
    );
    assert!(close(web["hourly_usd"].as_f64().unwrap(), web_total));
    assert!(close(
        web["projected_30d_usd"].as_f64().unwrap(),
        web_total * 720.0
    ));
    // Waste: 0.8 core-hours and 2 GiB-hours; efficiency 0.6 and 0.5.
    assert!(close(
        web["waste_usd"].as_f64().unwrap(),
        0.8 * 0.031611 + 2.0 * 0.004237
    ));
    assert!(close(web["cpu"]["efficiency"].as_f64().unwrap(), 0.6));
    assert!(close(web["memory"]["efficiency"].as_f64().unwrap(), 0.5));
    assert_eq!(web["price_source"]["kind"], "opencost_default");
    // api: 2 core-hours at the spot pool's 0.01; no memory request and no memory usage: unknown, said so.
    let api = items.iter().find(|d| d["key"]["name"] == "api").unwrap();
    assert!(close(api["total_usd"].as_f64().unwrap(), 0.02), "{api}");
    assert_eq!(api["price_source"]["kind"], "node_pool");
    assert_eq!(api["memory"]["basis"], "unknown");
    assert!(
        api["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("memory cost unknown")),
        "{api}"
    );
    let cluster = &body["cluster"];
    assert!(close(
        cluster["hourly_usd"].as_f64().unwrap(),
        web_total + 0.02
    ));
    assert_eq!(cluster["deployments"], 2);
    assert_eq!(cluster["unknown_cost"], 1);
    assert!(close(
        body["namespaces"]["shop"]["hourly_usd"].as_f64().unwrap(),
        web_total
    ));
    assert_eq!(body["prices"]["default_source"]["kind"], "opencost_default");

    // The namespace filter: its deployments and its totals; the cluster stays the cluster.
    let shop = json(&router, "/api/v1/cost?namespace=shop").await;
    assert_eq!(shop["items"].as_array().unwrap().len(), 1);
    assert!(shop["namespaces"].get("other").is_none(), "{shop}");
    assert!(close(
        shop["cluster"]["hourly_usd"].as_f64().unwrap(),
        web_total + 0.02
    ));
    let none = json(&router, "/api/v1/cost?namespace=absent").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);

    // Bad parameters: Kubernetes Status 400s.
    for (path, message) in [
        ("/api/v1/cost?namespace=Not_A_Label", "invalid namespace"),
        ("/api/v1/cost?deployment=web", "unknown query parameter"),
        ("/api/v1/recommendations?limit=3", "unknown query parameter"),
        ("/api/v1/recommendations?namespace=-x", "invalid namespace"),
    ] {
        status(&router, path, StatusCode::BAD_REQUEST, message).await;
    }

    // The gauges.
    let (_, metrics) = get(&router, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    let value = |prefix: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("{prefix} not in {metrics}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(close(
        value("smart_autoscaler_cost_cluster_dollars_per_hour "),
        web_total + 0.02
    ));
    assert!(close(
        value(
            "smart_autoscaler_cost_deployment_dollars_per_hour{namespace=\"shop\",deployment=\"web\"}"
        ),
        web_total
    ));
    assert!(close(
        value("smart_autoscaler_cost_namespace_dollars_per_hour{namespace=\"other\"}"),
        0.02
    ));
    // A deployment no longer priced loses its series (bounded cardinality).
    book.observe(&snapshot(
        NOW + HOUR,
        HOUR,
        vec![served(
            ("shop", "web"),
            4,
            (500, GIB as i64),
            60.0,
            Some(50.0),
            &[],
            NOW + HOUR,
        )],
    ));
    let (_, metrics) = get(&router, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(!metrics.contains("deployment=\"api\""), "{metrics}");
    assert!(!metrics.contains("namespace=\"other\""), "{metrics}");
}

#[tokio::test]
async fn without_a_cost_book_the_endpoints_say_so() {
    let telemetry = Arc::new(Telemetry::new());
    let router = router(None, telemetry);
    status(
        &router,
        "/api/v1/cost",
        StatusCode::NOT_FOUND,
        "does not compute costs",
    )
    .await;
    status(
        &router,
        "/api/v1/recommendations",
        StatusCode::NOT_FOUND,
        "does not compute costs",
    )
    .await;
}

/// shop/web alone: 4 fixed replicas of 500m using 60% (0.3 cores each), one tick a minute for `minutes`.
fn feed_minutes(book: &Arc<CostBook>, from: UnixMillis, minutes: i64) {
    for i in 0..minutes {
        let at = from + i * MINUTE;
        book.observe(&snapshot(
            at,
            MINUTE,
            vec![served(
                ("shop", "web"),
                4,
                (500, GIB as i64),
                60.0,
                Some(50.0),
                &[("n-std", 4)],
                at,
            )],
        ));
    }
}

#[tokio::test]
async fn an_hour_of_history_is_not_enough_data_and_two_days_give_a_recommendation() {
    let telemetry = Arc::new(Telemetry::new());
    let book = Arc::new(CostBook::new(Prices::default()));
    let router = router(Some(book.clone()), telemetry);
    let empty = json(&router, "/api/v1/recommendations").await;
    assert_eq!(empty["items"].as_array().unwrap().len(), 0);

    feed_minutes(&book, NOW, 60);
    let body = json(&router, "/api/v1/recommendations").await;
    let web = &body["items"][0];
    assert_eq!(web["status"], "not_enough_data", "{web}");
    assert_eq!(web["requests"]["status"], "not_enough_data", "{web}");
    assert!(
        web["plan"]["reason"]
            .as_str()
            .unwrap()
            .contains("days of confidence"),
        "{web}"
    );
    assert_eq!(body["savings_usd_month"], 0.0);

    // Two days in all, one sample a minute: confidence min(span, samples / 1440) ≈ 2 days.
    feed_minutes(&book, NOW + HOUR, 47 * 60);
    let body = json(&router, "/api/v1/recommendations?namespace=shop").await;
    let web = &body["items"][0];
    assert_eq!(web["status"], "change", "{web}");
    let requests = &web["requests"];
    let confidence = requests["confidence_days"].as_f64().unwrap();
    assert!((1.99..=2.0).contains(&confidence), "{requests}");
    // 0.3 cores a pod: the bucket holding it ends a little above, × 1.15 ≈ 0.35-0.37 cores.
    let target = requests["cpu_milli"]["target"].as_i64().unwrap();
    assert!((345..=380).contains(&target), "{requests}");
    // Fixed replicas: 4 × (0.5 − target) cores × 0.031611 × 720 h saved on CPU, plus memory's share.
    let projection = &web["plan"]["projection"];
    assert_eq!(projection["replicas"], 4);
    let cpu_saving = 4.0 * (0.5 - target as f64 / 1000.0) * 0.031611 * 720.0;
    let savings = projection["savings_usd_month"].as_f64().unwrap();
    assert!(savings >= cpu_saving - 1e-6, "{projection}");
    assert!(close(body["savings_usd_month"].as_f64().unwrap(), savings));
    assert_eq!(web["scaling"]["kind"], "fixed");
    // Another namespace: nothing.
    let other = json(&router, "/api/v1/recommendations?namespace=other").await;
    assert_eq!(other["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn hours_sums_the_stored_hourly_rollups_with_the_open_hour() {
    use smart_autoscaler::store::{Retention, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let book = Arc::new(CostBook::new(Prices::default()).with_store(store));
    let router = router(Some(book.clone()), telemetry.clone());
    // Minutes 0 to 150 from an hour boundary: hours 0 and 1 complete (written when they turned), 31 minutes of
    // hour 2 open in memory.
    feed_minutes(&book, NOW, 151);
    let per_hour = 2.0 * 0.031611 + 4.0 * 0.004237;
    let mut body = Value::Null;
    for _ in 0..300 {
        body = json(&router, "/api/v1/cost?hours=2").await;
        if body["history"]["items"][0]["window_millis"] == 91 * MINUTE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let web = &body["history"]["items"][0];
    assert_eq!(web["window_millis"], 91 * MINUTE, "{body}");
    assert!(
        close(web["total_usd"].as_f64().unwrap(), per_hour * 91.0 / 60.0),
        "{web}"
    );
    assert!(close(web["hourly_usd"].as_f64().unwrap(), per_hour));
    assert_eq!(body["query"]["hours"], 2);
    let three = json(&router, "/api/v1/cost?hours=3&namespace=shop").await;
    assert!(close(
        three["history"]["cluster"]["total_usd"].as_f64().unwrap(),
        per_hour * 151.0 / 60.0
    ));
    assert_eq!(
        json(&router, "/api/v1/cost?namespace=other&hours=3").await["history"]["items"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    for bad in ["0", "721", "1.5", "day"] {
        status(
            &router,
            &format!("/api/v1/cost?hours={bad}"),
            StatusCode::BAD_REQUEST,
            "invalid hours",
        )
        .await;
    }
    // Without a store there is no history to sum: said so, not a made-up zero.
    let memory_only = Arc::new(CostBook::new(Prices::default()));
    feed_minutes(&memory_only, NOW, 2);
    let router = crate::router(Some(memory_only), telemetry);
    status(
        &router,
        "/api/v1/cost?hours=1",
        StatusCode::BAD_REQUEST,
        "keeps no cost history",
    )
    .await;
}
