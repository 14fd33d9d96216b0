//! `GET /api/v1/deployments/{namespace}/{name}/history` in-process: the metrics router (with the store as
//! `app.rs` wires it) driven with `tower::ServiceExt::oneshot` against a fixed snapshot and a real sled store in a
//! temporary directory, filled through the store's own writers (ticks, decisions, predictions). Covers the
//! buckets from samples and from rollups, forecasts and decisions, the empty store's "no history yet", unknown
//! deployments, and a 400 `Status` with its reason for every out-of-range parameter.

use std::sync::Arc;

use ::http::{Request, StatusCode};
use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::sync::watch;
use tower::ServiceExt;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::domain::decision::{DecisionConfig, Hooks, decide};
use smart_autoscaler::domain::model::{DeploymentKey, Observation, ServedDeployment, Snapshot};
use smart_autoscaler::domain::testing;
use smart_autoscaler::health::Health;
use smart_autoscaler::http::history::with_history;
use smart_autoscaler::http::{AppState, Limits, metrics_router};
use smart_autoscaler::store::{Prediction, Retention, Store};
use smart_autoscaler::telemetry::Telemetry;

/// Monday 2026-11-23 08:50:00 UTC.
const NOW: i64 = 1_795_423_800_000;
const TICK: i64 = 15_000;
const HOUR: i64 = 3_600_000;

struct Fixed;

impl Clock for Fixed {
    fn now_millis(&self) -> i64 {
        NOW
    }
}

fn api() -> DeploymentKey {
    DeploymentKey::new("shop", "api")
}

fn served(key: &DeploymentKey) -> ServedDeployment {
    let inputs = testing::inputs().key(key).cpu(50.0).at(NOW - TICK).build();
    let explanation = decide(
        &inputs,
        &DecisionConfig::default(),
        None,
        Hooks::default(),
        NOW,
    )
    .0;
    ServedDeployment {
        inputs,
        raw_percent: 50.0,
        smart_percent: 50.0,
        explanation,
    }
}

struct Rig {
    router: Router,
    store: Store,
    _dir: tempfile::TempDir,
    _snapshots: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Rig {
    async fn new(with_store: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("store"), Retention::default())
            .await
            .unwrap()
            .with_clock(Arc::new(Fixed));
        let telemetry = Arc::new(Telemetry::new());
        let health = Arc::new(Health::new(&telemetry));
        let snapshot = Snapshot {
            collected_at: NOW - TICK,
            measured_at: NOW - TICK,
            interval_millis: TICK,
            deployments: [(api(), served(&api()))].into_iter().collect(),
            ..Default::default()
        };
        let (snapshots, receiver) = watch::channel(Some(Arc::new(snapshot)));
        let state = AppState {
            snapshots: receiver,
            clock: Arc::new(Fixed),
            telemetry,
            limits: Limits::default(),
            webhook: Arc::default(),
            extender: Arc::default(),
            responses: Default::default(),
            health,
            forecasts: None,
            tunings: None,
        };
        let router = if with_store {
            with_history(metrics_router(state), store.clone())
        } else {
            metrics_router(state)
        };
        Rig {
            router,
            store,
            _dir: dir,
            _snapshots: snapshots,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let code = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", String::from_utf8_lossy(&body)));
        (code, value)
    }

    /// Asserts a 400 `Status` whose message contains `reason`.
    async fn bad(&self, path: &str, reason: &str) {
        let (code, body) = self.get(path).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["reason"], "BadRequest", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(reason),
            "{path}: {reason:?} not in {message:?}"
        );
    }

    /// Two hours of ticks before [`NOW`] for `shop/api`: CPU `minute % 60` percent (0 to 59, by the minute of the
    /// hour), replicas 3 then 5 from the last half hour.
    async fn fill(&self) {
        let mut at = NOW - 2 * HOUR;
        while at < NOW {
            let minute = (at / 60_000) % 60;
            let replicas = if at >= NOW - HOUR / 2 { 5 } else { 3 };
            let inputs = testing::inputs()
                .key(&api())
                .cpu(minute as f64)
                .replicas(replicas)
                .at(at)
                .build();
            let observation = Observation {
                at,
                measured_at: at,
                deployments: vec![inputs],
                ..Default::default()
            };
            self.store.record_tick(&observation).await.unwrap();
            at += TICK;
        }
    }
}

fn path(query: &str) -> String {
    format!("/api/v1/deployments/shop/api/history{query}")
}

#[tokio::test]
async fn an_empty_store_is_an_empty_history_with_a_note() {
    let rig = Rig::new(true).await;
    let (code, body) = rig.get(&path("")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["points"], json!([]));
    assert_eq!(body["forecasts"], json!([]));
    assert_eq!(body["decisions"], json!([]));
    assert_eq!(body["note"], "no history yet");
    // The defaults: the last 24 h, in 5-minute buckets (288 of them).
    assert_eq!(body["since"], "2026-11-22T08:50:00Z");
    assert_eq!(body["until"], "2026-11-23T08:50:00Z");
    assert_eq!(body["step_seconds"], 300);
    assert_eq!(body["source"], "rollups");
}

#[tokio::test]
async fn unknown_deployments_and_a_server_without_store_are_404() {
    let rig = Rig::new(true).await;
    let (code, body) = rig.get("/api/v1/deployments/shop/nope/history").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["kind"], "Status");
    assert!(
        body["message"].as_str().unwrap().contains("shop/nope"),
        "{body}"
    );
    // A deployment no longer managed but with history in the store is still served.
    let gone = DeploymentKey::new("shop", "gone");
    rig.store
        .put_decision(&gone, NOW - HOUR, br#"{"effective_target_percent":70.0}"#)
        .await
        .unwrap();
    let (code, body) = rig.get("/api/v1/deployments/shop/gone/history").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["decisions"][0]["effective_target_percent"], 70.0);
    assert!(body.get("note").is_none(), "{body}");

    let without = Rig::new(false).await;
    let (code, body) = without.get(&path("")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("no store"),
        "{body}"
    );
}

#[tokio::test]
async fn out_of_range_parameters_are_400_with_the_reason() {
    let rig = Rig::new(true).await;
    rig.bad(&path("?since=2026-11-24T00:00:00Z"), "is not in the past")
        .await;
    rig.bad(
        &path("?since=31d"),
        "older than the store keeps history (30d back",
    )
    .await;
    rig.bad(&path("?since=yesterday"), "invalid since \"yesterday\"")
        .await;
    rig.bad(&path("?step=30s"), "must be from 1m to 1d").await;
    rig.bad(&path("?step=2d"), "must be from 1m to 1d").await;
    rig.bad(&path("?step=7m"), "a multiple of 5m").await;
    rig.bad(&path("?step=fast"), "invalid step \"fast\"").await;
    rig.bad(
        &path("?since=3d&step=2m"),
        "within the 2d of per-tick samples",
    )
    .await;
    rig.bad(&path("?since=30d&step=5m"), "gives 8640 points")
        .await;
    rig.bad(&path("?limit=3"), "unknown query parameter \"limit\"")
        .await;
    // The edges are accepted.
    for ok in [
        "?since=30d&step=1d",
        "?since=48h&step=2m&",
        "?since=33h&step=1m",
        "?since=1h&step=1m",
        "?step=&since=",
    ] {
        let (code, body) = rig.get(&path(ok)).await;
        assert_eq!(code, StatusCode::OK, "{ok}: {body}");
    }
}

#[tokio::test]
async fn buckets_come_from_samples_or_rollups_with_forecasts_and_decisions() {
    let rig = Rig::new(true).await;
    rig.fill().await;
    // One-minute buckets over the last hour: four ticks each, CPU the minute of the hour.
    let (code, body) = rig.get(&path("?since=1h&step=1m")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "samples");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 60, "{body}");
    assert!(body.get("note").is_none());
    // NOW is 08:50: the first bucket is 07:50, CPU 50 in each of its four ticks.
    assert_eq!(points[0]["at"], "2026-11-23T07:50:00Z");
    assert_eq!(points[0]["samples"], 4);
    assert_eq!(points[0]["raw_percent_mean"], 50.0);
    assert_eq!(points[0]["replicas_max"], 3);
    assert_eq!(points[59]["at"], "2026-11-23T08:49:00Z");
    assert_eq!(points[59]["raw_percent_max"], 49.0);
    assert_eq!(points[59]["replicas_max"], 5);

    // Fifteen-minute buckets over two hours, from the rollups: 08:00-08:15 holds minutes 0..14, mean 7, max 14.
    let (code, body) = rig.get(&path("?since=2h&step=15m")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["source"], "rollups");
    let points = body["points"].as_array().unwrap();
    assert_eq!(points.len(), 9, "{body}");
    let at_eight = points
        .iter()
        .find(|p| p["at"] == "2026-11-23T08:00:00Z")
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(at_eight["samples"], 60);
    assert_eq!(at_eight["raw_percent_mean"], 7.0);
    assert_eq!(at_eight["raw_percent_max"], 14.0);
    assert_eq!(at_eight["replicas_max"], 3);

    // Forecasts (the latest of each bucket) and decisions, as stored.
    for (i, at) in [NOW - 40 * 60_000, NOW - 39 * 60_000, NOW - 10 * 60_000]
        .into_iter()
        .enumerate()
    {
        let p = Prediction {
            horizon_seconds: 90,
            value: 60.0 + i as f64,
            lower: 50.0,
            upper: 75.0,
        };
        rig.store.put_prediction(&api(), at, &p).await.unwrap();
    }
    let explanation = serde_json::to_vec(&served(&api()).explanation).unwrap();
    rig.store
        .put_decision(&api(), NOW - 20 * 60_000, &explanation)
        .await
        .unwrap();
    let (_, body) = rig.get(&path("?since=1h&step=15m")).await;
    let forecasts = body["forecasts"].as_array().unwrap();
    assert_eq!(forecasts.len(), 2, "{body}");
    assert_eq!(forecasts[0]["made_at"], "2026-11-23T08:11:00Z");
    assert_eq!(forecasts[0]["demand"], 61.0);
    assert_eq!(forecasts[1]["upper_demand"], 75.0);
    let decisions = body["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 1, "{body}");
    assert_eq!(decisions[0]["at"], "2026-11-23T08:30:00Z");
    let e = &served(&api()).explanation;
    assert_eq!(
        decisions[0]["effective_target_percent"],
        (e.effective_target_percent * 100.0).round() / 100.0
    );
    assert_eq!(decisions[0]["reasons"], json!(e.reasons));
    assert_eq!(body["decisions_truncated"], false);
}
