//! `/metrics` in-process: the metrics router driven with `tower::ServiceExt::oneshot` against fixed snapshots
//! published on the watch channel the handler reads. Covers the per-deployment gauges (values, labels, the
//! `--metrics-max-deployments` cap and its dropped count, series leaving with their deployment), the format
//! negotiation, and the real `promtool check metrics` on the exposition in both formats. `promtool` comes from
//! the Debian prometheus package that hack/install-tools.sh installs; a missing promtool fails the test.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;

use ::http::{Request, header};
use axum::Router;
use axum::body::Body;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tower::ServiceExt;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::domain::decision::{DecisionConfig, Hooks, decide};
use smart_autoscaler::domain::forecast::online::Advice;
use smart_autoscaler::domain::model::{DeploymentKey, ServedDeployment, Snapshot};
use smart_autoscaler::domain::testing;
use smart_autoscaler::health::Health;
use smart_autoscaler::http::ops::prefers_openmetrics;
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

struct Rig {
    router: Router,
    snapshots: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Rig {
    fn new(snapshot: Option<Snapshot>, max_deployments: usize) -> Rig {
        let telemetry = Arc::new(Telemetry::new().with_max_deployments(max_deployments));
        let health = Arc::new(Health::new(&telemetry));
        let (snapshots, receiver) = watch::channel(snapshot.map(Arc::new));
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
        Rig {
            router: metrics_router(state),
            snapshots,
        }
    }

    /// `GET /metrics` with `accept` (none when `None`): content type and body.
    async fn scrape(&self, accept: Option<&str>) -> (String, String) {
        let mut request = Request::get("/metrics");
        if let Some(a) = accept {
            request = request.header(header::ACCEPT, a);
        }
        let response = self
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (content_type, String::from_utf8(body.to_vec()).unwrap())
    }
}

/// A deployment with the decision core's explanation of its inputs; `forecast` adds a forecast's advice.
fn served(
    namespace: &str,
    name: &str,
    raw: f64,
    replicas: u32,
    forecast: Option<(f64, bool)>,
) -> ServedDeployment {
    let inputs = testing::inputs()
        .key(&DeploymentKey::new(namespace, name))
        .cpu(raw)
        .base_target(60.0)
        .replicas(replicas)
        .pool("general", Some(85.0), 70.0)
        .at(OBSERVED)
        .build();
    let hooks = Hooks {
        forecast_percent: forecast.map(|(_, _)| raw + 20.0),
        ..Default::default()
    };
    let (mut explanation, _) = decide(&inputs, &DecisionConfig::default(), None, hooks, OBSERVED);
    explanation.forecast = forecast.map(|(confidence, trusted)| Advice {
        lead_max_demand: Some(raw * 1.2),
        demand_by_step: vec![],
        step_millis: 60_000,
        lead_millis: 90_000,
        current_demand: Some(raw),
        confidence,
        spike_probability: None,
        trusted,
        usable: trusted,
        reason: None,
        made_at: Some(OBSERVED),
    });
    ServedDeployment {
        inputs,
        raw_percent: raw,
        smart_percent: explanation.served_percent,
        explanation,
    }
}

fn snapshot(deployments: Vec<ServedDeployment>) -> Snapshot {
    Snapshot {
        collected_at: OBSERVED,
        measured_at: OBSERVED,
        interval_millis: 15_000,
        deployments: deployments
            .into_iter()
            .map(|d| (d.inputs.key.clone(), d))
            .collect::<BTreeMap<_, _>>(),
        failsafe: DecisionConfig::default().failsafe(15_000),
        ..Default::default()
    }
}

/// The value of the series `name{labels}` (exact), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

fn labels(namespace: &str, name: &str) -> String {
    format!("{{namespace=\"{namespace}\",deployment=\"{name}\"}}")
}

/// `promtool check metrics` on `exposition`: whether it passed, and its report.
fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (hack/install-tools.sh installs the Debian prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[tokio::test]
async fn every_managed_deployment_has_its_gauges_from_the_snapshot() {
    let api = served("shop", "api", 52.5, 4, Some((0.8, true)));
    let web = served("shop", "web", 30.0, 2, Some((0.3, false)));
    let batch = served("jobs", "batch", 70.0, 7, None);
    let rig = Rig::new(
        Some(snapshot(vec![api.clone(), web.clone(), batch.clone()])),
        500,
    );
    let (_, text) = rig.scrape(None).await;
    let get = |name: &str, ns: &str, d: &str| {
        sample(
            &text,
            &format!("smart_autoscaler_deployment_{name}{}", labels(ns, d)),
        )
    };
    for (d, ns, name) in [
        (&api, "shop", "api"),
        (&web, "shop", "web"),
        (&batch, "jobs", "batch"),
    ] {
        let e = &d.explanation;
        assert_eq!(
            get("served_percent", ns, name),
            Some(d.smart_percent),
            "{text}"
        );
        assert_eq!(get("raw_percent", ns, name), Some(d.raw_percent));
        assert_eq!(get("base_target_percent", ns, name), Some(60.0));
        assert_eq!(
            get("effective_target_percent", ns, name),
            Some(e.effective_target_percent)
        );
        assert_eq!(get("pressure_level", ns, name), Some(e.pressure.level));
        assert_eq!(get("pressure_factor", ns, name), Some(e.pressure.factor));
        assert_eq!(get("confidence", ns, name), Some(e.confidence));
        assert_eq!(
            get("replicas", ns, name),
            Some(f64::from(d.inputs.replicas))
        );
    }
    // The pool is under pressure: the gauges carry the decision's numbers, not defaults.
    assert!(
        api.explanation.pressure.level > 0.0,
        "{:?}",
        api.explanation
    );
    assert!(api.smart_percent != api.raw_percent);
    assert_eq!(get("replicas", "shop", "api"), Some(4.0));
    // Forecast: the value the decision considered; nothing for a deployment without a usable forecast.
    assert_eq!(get("forecast_percent", "shop", "api"), Some(72.5));
    assert_eq!(get("forecast_percent", "jobs", "batch"), None, "{text}");
    assert_eq!(
        sample(&text, "smart_autoscaler_deployment_metrics_dropped"),
        Some(0.0)
    );
    assert!(text.contains("# TYPE smart_autoscaler_deployment_served_percent gauge\n"));
}

#[tokio::test]
async fn the_cap_bounds_the_series_and_counts_the_rest() {
    let many: Vec<ServedDeployment> = (0..7)
        .map(|i| served("ns", &format!("d{i}"), 40.0, 3, None))
        .collect();
    let rig = Rig::new(Some(snapshot(many.clone())), 3);
    let (_, text) = rig.scrape(None).await;
    let mut exported: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("smart_autoscaler_deployment_served_percent{"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    // The first three in namespace/name order, every scrape the same (the exposition's order is the registry's).
    exported.sort_unstable();
    assert_eq!(
        exported,
        ["d0", "d1", "d2"].map(|d| format!(
            "smart_autoscaler_deployment_served_percent{}",
            labels("ns", d)
        )),
        "{text}"
    );
    assert_eq!(
        sample(&text, "smart_autoscaler_deployment_metrics_dropped"),
        Some(4.0)
    );
    // Every per-deployment family is bounded the same way.
    let per_deployment = text
        .lines()
        .filter(|l| l.starts_with("smart_autoscaler_deployment_") && l.contains("deployment=\""))
        .count();
    assert_eq!(per_deployment, 3 * 8, "{text}");

    // 0 turns the per-deployment series off.
    let off = Rig::new(Some(snapshot(many)), 0);
    let (_, text) = off.scrape(None).await;
    assert!(!text.contains("deployment=\""), "{text}");
    assert_eq!(
        sample(&text, "smart_autoscaler_deployment_metrics_dropped"),
        Some(7.0)
    );
}

#[tokio::test]
async fn a_deployment_that_leaves_the_snapshot_leaves_the_exposition() {
    let rig = Rig::new(
        Some(snapshot(vec![
            served("shop", "api", 50.0, 2, Some((0.9, true))),
            served("shop", "gone", 50.0, 2, Some((0.9, true))),
        ])),
        500,
    );
    let (_, text) = rig.scrape(None).await;
    assert!(text.contains("deployment=\"gone\""), "{text}");
    rig.snapshots
        .send_replace(Some(Arc::new(snapshot(vec![served(
            "shop", "api", 55.0, 3, None,
        )]))));
    let (_, text) = rig.scrape(None).await;
    assert!(!text.contains("deployment=\"gone\""), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(
                "smart_autoscaler_deployment_raw_percent{}",
                labels("shop", "api")
            )
        ),
        Some(55.0)
    );
    // Its forecast went away too: no stale forecast series.
    assert!(
        !text.contains("smart_autoscaler_deployment_forecast_percent{"),
        "{text}"
    );
    // No snapshot at all (a restart): no per-deployment series.
    rig.snapshots.send_replace(None);
    let (_, text) = rig.scrape(None).await;
    assert!(!text.contains("deployment=\""), "{text}");
}

#[test]
fn the_format_follows_the_accept_header() {
    for (accept, openmetrics) in [
        ("", false),
        ("*/*", false),
        ("text/plain", false),
        ("text/plain;version=0.0.4;q=0.9", false),
        ("application/openmetrics-text", true),
        // What Prometheus sends.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
             text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            true,
        ),
        ("text/plain;q=1, application/openmetrics-text;q=0.5", false),
        ("application/openmetrics-text;q=0", false),
        ("application/openmetrics-text;q=0.3, */*;q=0.2", true),
        ("APPLICATION/OpenMetrics-Text; version=1.0.0", true),
    ] {
        assert_eq!(prefers_openmetrics(accept), openmetrics, "{accept:?}");
    }
}

#[tokio::test]
async fn promtool_accepts_the_exposition_with_and_without_accept_text_plain() {
    let rig = Rig::new(
        Some(snapshot(vec![
            served("shop", "api", 52.5, 4, Some((0.8, true))),
            served("jobs", "batch", 70.0, 7, None),
        ])),
        500,
    );
    // Two scrapes, so the request counters and latency histogram have samples.
    rig.scrape(None).await;
    for accept in [None, Some("text/plain"), Some("text/plain;version=0.0.4")] {
        let (content_type, text) = rig.scrape(accept).await;
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(
            text.contains("smart_autoscaler_deployment_served_percent{"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE smart_autoscaler_http_requests_total counter\n"),
            "{text}"
        );
        let (ok, report) = promtool_check(&text);
        assert!(
            ok,
            "{accept:?}: promtool check metrics failed:\n{report}\n{text}"
        );
    }
    // OpenMetrics for a client that asks for it; promtool's text parser reads its counters as families
    // without help text (why the text format is the default), so the check really depends on the format.
    let (content_type, openmetrics) = rig.scrape(Some("application/openmetrics-text")).await;
    assert!(content_type.starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(openmetrics.trim_end().ends_with("# EOF"));
    let (ok, report) = promtool_check(&openmetrics);
    assert!(!ok, "promtool is expected to reject OpenMetrics counters");
    assert!(report.contains("no help text"), "{report}");
}
