//! `GET /api/v2/deployments/{namespace}/{name}` in-process: the readable explanation, driven with
//! `tower::ServiceExt::oneshot` on the metrics router against a fixed snapshot whose explanations come from the
//! real decision core (`decide`) with chosen previous states, so each hold (deadband, cooldown, low confidence)
//! and the factor-bound clamp is the core's own. Also: rounding, RFC 3339 times, 404 and the unmeasured case,
//! and v1 left as it was.

use std::collections::BTreeMap;
use std::sync::Arc;

use ::http::{Request, StatusCode};
use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::domain::decision::{DecisionConfig, DecisionState, Hooks, decide};
use smart_autoscaler::domain::model::{
    DeploymentInputs, DeploymentKey, ServedDeployment, Snapshot, UnknownCause, UsageUnknown,
};
use smart_autoscaler::domain::testing;
use smart_autoscaler::health::Health;
use smart_autoscaler::http::{AppState, Limits, metrics_router};
use smart_autoscaler::telemetry::Telemetry;

/// Monday 2026-11-23 08:50:00 UTC.
const NOW: i64 = 1_795_423_800_000;
const OBSERVED: i64 = NOW - 15_000;

struct Fixed;

impl Clock for Fixed {
    fn now_millis(&self) -> i64 {
        NOW
    }
}

fn inputs(name: &str, raw: f64) -> DeploymentInputs {
    testing::inputs()
        .key(&DeploymentKey::new("shop", name))
        .cpu(raw)
        .base_target(60.0)
        .pool("general", Some(60.0), 60.0)
        .at(OBSERVED)
        .build()
}

/// What the core serves for `inputs` after `previous`.
fn served(inputs: DeploymentInputs, previous: Option<DecisionState>) -> ServedDeployment {
    let (explanation, _) = decide(
        &inputs,
        &DecisionConfig::default(),
        previous.as_ref(),
        Hooks::default(),
        OBSERVED,
    );
    ServedDeployment {
        raw_percent: explanation.raw_percent,
        smart_percent: explanation.served_percent,
        inputs,
        explanation,
    }
}

/// The target the core picks for `inputs` with no previous state.
fn fresh_target(inputs: &DeploymentInputs) -> f64 {
    served(inputs.clone(), None)
        .explanation
        .effective_target_percent
}

fn router(deployments: Vec<ServedDeployment>) -> Router {
    let telemetry = Arc::new(Telemetry::new());
    let health = Arc::new(Health::new(&telemetry));
    let snapshot = Snapshot {
        collected_at: OBSERVED,
        measured_at: OBSERVED,
        interval_millis: 15_000,
        deployments: deployments
            .into_iter()
            .map(|d| (d.inputs.key.clone(), d))
            .collect(),
        unmeasured: BTreeMap::from([(
            DeploymentKey::new("shop", "new"),
            UsageUnknown {
                cause: UnknownCause::NoSamples,
                reason: "no usable CPU sample for its 2 pods".into(),
                since: OBSERVED,
                last_good_at: None,
            },
        )]),
        failsafe: DecisionConfig::default().failsafe(15_000),
        ..Default::default()
    };
    // The channel must outlive the router: leak the sender (one per test).
    let (snapshots, receiver) = watch::channel(Some(Arc::new(snapshot)));
    std::mem::forget(snapshots);
    metrics_router(AppState {
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
    })
}

async fn get(router: &Router, path: &str) -> (StatusCode, Value) {
    let response = router
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (code, serde_json::from_slice(&body).unwrap())
}

fn reasons(body: &Value, list: &str) -> Vec<(String, String)> {
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("no {list} in {body}"))
        .iter()
        .map(|h| {
            (
                h["rule"].as_str().unwrap().to_string(),
                h["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_hold_and_clamp_is_named_with_its_reason() {
    let base = inputs("deadband", 52.54321);
    let target = fresh_target(&base);
    // Deadband: the previous target is one point away, changed long ago, so the core keeps it and says nothing.
    let deadband = served(
        base,
        Some(DecisionState {
            effective_target_percent: target + 1.0,
            changed_at: NOW - 3_600_000,
        }),
    );
    assert_eq!(deadband.explanation.held, None, "v1 names no hold");
    assert!((deadband.explanation.effective_target_percent - (target + 1.0)).abs() < 1e-9);
    // Cooldown: ten points away, but changed a minute ago.
    let cooldown = served(
        inputs("cooldown", 52.5),
        Some(DecisionState {
            effective_target_percent: target + 10.0,
            changed_at: OBSERVED - 60_000,
        }),
    );
    // Low confidence: most pods just started.
    let starting = testing::inputs()
        .key(&DeploymentKey::new("shop", "starting"))
        .cpu(52.5)
        .base_target(60.0)
        .replicas(4)
        .ready(1)
        .at(OBSERVED)
        .build();
    let unsure = served(
        starting,
        Some(DecisionState {
            effective_target_percent: target + 10.0,
            changed_at: NOW - 3_600_000,
        }),
    );
    // Clamp: an annotated 10% target is below the factor bounds (base / max factor = 30%).
    let annotated = testing::inputs()
        .key(&DeploymentKey::new("shop", "clamped"))
        .cpu(20.0)
        .base_target(60.0)
        .annotation("smart-autoscaler.io/target-utilization", "10")
        .at(OBSERVED)
        .build();
    let clamped = served(annotated, None);
    assert!(clamped.explanation.clamped);
    let router = router(vec![deadband, cooldown, unsure, clamped]);

    let (code, body) = get(&router, "/api/v2/deployments/shop/deadband").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["apiVersion"], "smart-autoscaler.io/v2");
    assert_eq!(body["kind"], "DeploymentExplanation");
    let holds = reasons(&body, "holds");
    assert_eq!(holds.len(), 1, "{body}");
    assert_eq!(holds[0].0, "deadband");
    assert!(holds[0].1.contains("2-point deadband"), "{}", holds[0].1);
    assert!(holds[0].1.contains("by 1 points"), "{}", holds[0].1);
    // Rounded, one name per quantity, times in RFC 3339.
    assert_eq!(body["measured_cpu_percent"], 52.5);
    assert_eq!(body["observed_at"], "2026-11-23T08:49:45Z");
    assert_eq!(body["data_age_seconds"], 15);
    assert_eq!(body["target"]["base_percent"], 60.0);
    assert_eq!(body["target"]["policy_from"], "the HPA's target");
    let summary = body["summary"].as_str().unwrap();
    assert!(summary.starts_with("Serves "), "{summary}");
    assert!(summary.contains("deadband"), "{summary}");
    for (name, v) in body.as_object().unwrap() {
        if let Some(f) = v.as_f64() {
            assert_eq!(f, (f * 100.0).round() / 100.0, "{name} is not rounded: {f}");
        }
    }

    let (_, body) = get(&router, "/api/v2/deployments/shop/cooldown").await;
    let holds = reasons(&body, "holds");
    assert_eq!(holds[0].0, "cooldown", "{body}");
    assert!(
        holds[0].1.contains("changed 60s ago, minimum 300s"),
        "{}",
        holds[0].1
    );

    let (_, body) = get(&router, "/api/v2/deployments/shop/starting").await;
    let holds = reasons(&body, "holds");
    assert_eq!(holds[0].0, "low_confidence", "{body}");
    assert!(holds[0].1.contains("below 0.60"), "{}", holds[0].1);
    assert_eq!(body["replicas"]["ready"], 1);

    let (_, body) = get(&router, "/api/v2/deployments/shop/clamped").await;
    let holds = reasons(&body, "holds");
    assert_eq!(holds[0].0, "factor_bounds", "{body}");
    assert!(holds[0].1.contains("clamped to 30%"), "{}", holds[0].1);
    assert_eq!(
        body["target"]["policy_from"],
        "the smart-autoscaler.io/target-utilization annotation"
    );
    assert_eq!(body["target"]["effective_percent"], 30.0);
}

#[tokio::test]
async fn unmeasured_unknown_and_v1_unchanged() {
    let router = router(vec![served(inputs("api", 40.0), None)]);
    let (code, body) = get(&router, "/api/v2/deployments/shop/new").await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["served_percent"], Value::Null);
    assert_eq!(body["usage_unknown"]["since"], "2026-11-23T08:49:45Z");
    assert_eq!(
        body["summary"],
        "Nothing is served: no usable CPU sample for its 2 pods."
    );
    let (code, body) = get(&router, "/api/v2/deployments/shop/nope").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["kind"], "Status");
    // v1 keeps its shape.
    let (code, body) = get(&router, "/api/v1/deployments/shop/api").await;
    assert_eq!(code, StatusCode::OK);
    assert!(
        body["explanation"]["effective_target_percent"].is_number(),
        "{body}"
    );
    assert!(body.get("apiVersion").is_none());
}
