//! Kubernetes Events on managed Deployments, published through the real kube client to the stand-in API
//! (`tests/common/fake_apiserver.rs` records events.k8s.io/v1 creates and patches and answers a Deployment GET
//! from the recorded list; there is no kube-apiserver on these machines).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake_apiserver;
use serde_json::Value;
use smart_autoscaler::domain::decision::{DecisionConfig, Hooks, decide};
use smart_autoscaler::domain::model::{ServedDeployment, Snapshot};
use smart_autoscaler::k8s;
use smart_autoscaler::telemetry::Telemetry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A snapshot at `at` with shop/api served at an effective target shifted by `shift` points.
fn snapshot(at: i64, shift: f64) -> Option<Arc<Snapshot>> {
    let mut inputs = smart_autoscaler::domain::testing::inputs().build();
    inputs.observed_at = at;
    let (mut explanation, _) = decide(
        &inputs,
        &DecisionConfig::default(),
        None,
        Hooks::default(),
        at,
    );
    explanation.effective_target_percent += shift;
    let mut s = Snapshot {
        collected_at: at,
        measured_at: at,
        interval_millis: 15_000,
        ..Default::default()
    };
    s.deployments.insert(
        inputs.key.clone(),
        ServedDeployment {
            raw_percent: inputs.cpu_utilization_percent,
            smart_percent: explanation.served_percent,
            inputs,
            explanation,
        },
    );
    Some(Arc::new(s))
}

fn recorded(api: &fake_apiserver::Harness) -> Vec<(String, String, Value)> {
    api.api.events.lock().unwrap().clone()
}

async fn wait_for(api: &fake_apiserver::Harness, n: usize) -> Vec<(String, String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = recorded(api);
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} events: {got:#?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn target_changes_become_events_on_the_deployment_from_the_leader_only() {
    let api = fake_apiserver::start(vec![]).await;
    let client = k8s::client(Some(&api.kubeconfig), 50.0, 20).await.unwrap();
    let (tx, rx) = watch::channel(snapshot(0, 0.0));
    let (leads, leadership) = watch::channel(true);
    let telemetry = Arc::new(Telemetry::new());
    let cancel = CancellationToken::new();
    k8s::events::spawn(
        client,
        "replica-a".into(),
        rx,
        leadership,
        &telemetry,
        k8s::events::EventLimits::default(),
        cancel.clone(),
    );

    // The target moves by 8 points: one Normal Event on shop/api, with the Deployment's uid so that
    // `kubectl describe` finds it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    tx.send(snapshot(15_000, -8.0)).unwrap();
    let got = wait_for(&api, 1).await;
    let (method, path, event) = &got[0];
    assert_eq!(method, "POST");
    assert_eq!(path, "/apis/events.k8s.io/v1/namespaces/shop/events");
    assert_eq!(event["reason"], "EffectiveTargetChanged");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["action"], "AdjustTarget");
    assert_eq!(event["reportingController"], "smart-autoscaler");
    assert_eq!(event["reportingInstance"], "replica-a");
    assert_eq!(event["regarding"]["kind"], "Deployment");
    assert_eq!(event["regarding"]["name"], "api");
    let deployments: Value =
        serde_json::from_str(&fake_apiserver::read("deployments.json")).unwrap();
    let uid = deployments["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["metadata"]["namespace"] == "shop" && d["metadata"]["name"] == "api")
        .map(|d| d["metadata"]["uid"].clone())
        .unwrap();
    assert_eq!(event["regarding"]["uid"], uid);
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .starts_with("effective target "),
        "{event}"
    );

    // Back again within five minutes: rate-limited, counted, not sent.
    tx.send(snapshot(30_000, 0.0)).unwrap();
    // (The publisher follows the latest snapshot: give it this one before the next replaces it.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A follower computes the same Events and sends none.
    leads.send(false).unwrap();
    tx.send(snapshot(45_000, -16.0)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(recorded(&api).len(), 1, "{:#?}", recorded(&api));
    let text = telemetry.encode();
    for (outcome, n) in [
        ("published", 1.0),
        ("rate_limited", 1.0),
        ("not_leader", 1.0),
    ] {
        let series = format!(
            "smart_autoscaler_kube_events_total{{reason=\"EffectiveTargetChanged\",outcome=\"{outcome}\"}}"
        );
        assert_eq!(
            common::sample(&text, &series),
            Some(n),
            "{series} in\n{text}"
        );
    }
    cancel.cancel();
}
