//! The server's forecasting path end to end, in process: history imported into a real sled store (as bootstrap
//! does, with pod counts), the forecasting task warming up and refitting from it, its board read by the engine's
//! pure step, and the scores in `/metrics`. A deployment with a daily spike is raised ahead of the spike; one
//! with unpredictable load is left alone.

use std::sync::Arc;
use std::time::Duration;

use smart_autoscaler::clock::Clock;
use smart_autoscaler::config::ForecastArgs;
use smart_autoscaler::domain::decision::DecisionConfig;
use smart_autoscaler::domain::model::{DeploymentInputs, DeploymentKey, Observation};
use smart_autoscaler::domain::testing::{self, DailySpike};
use smart_autoscaler::domain::tick;
use smart_autoscaler::refit::{ForecastSettings, ForecastTask};
use smart_autoscaler::store::{Retention, Store};
use smart_autoscaler::telemetry::Telemetry;

/// Monday 2026-11-23 08:50 UTC: ten minutes before the daily spike.
const NOW: i64 = 1_795_423_800_000;
const DAY: i64 = 86_400_000;

struct Pinned(i64);

impl Clock for Pinned {
    fn now_millis(&self) -> i64 {
        self.0
    }
}

/// 14 days of 1-minute points: 60% utilization throughout; 4 pods, 12 during the daily spike (demand triples).
fn spiky(days: i64) -> Vec<(i64, f64, Option<u32>)> {
    let spike = DailySpike::default();
    (0..days * 1440)
        .map(|m| {
            let at = NOW - days * DAY + m * 60_000;
            let pods = if spike.in_spike(at) { 12 } else { 4 };
            (at, 60.0, Some(pods))
        })
        .collect()
}

/// Utilization jumping to a new level anywhere between 10% and 95% every hour, on 6 pods, independent of the
/// time of day.
fn random(days: i64) -> Vec<(i64, f64, Option<u32>)> {
    (0..days * 1440)
        .map(|m| {
            let r = splitmix((m / 60) as u64) % 1000;
            (
                NOW - days * DAY + m * 60_000,
                10.0 + r as f64 * 0.085,
                Some(6),
            )
        })
        .collect()
}

/// A well-mixed hash (splitmix64's finalizer): a bare multiplicative hash of consecutive hours repeats itself
/// a week later, which a weekly profile would rightly learn.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn inputs(key: &DeploymentKey, utilization: f64, pods: u32) -> DeploymentInputs {
    testing::inputs()
        .key(key)
        .cpu(utilization)
        .replicas(pods)
        .pool("general", Some(55.0), 70.0)
        .at(NOW)
        .build()
}

/// A real sled store in `dir` whose clock (and the task's) is pinned at [`NOW`].
async fn pinned_store(dir: &tempfile::TempDir) -> (Store, Arc<dyn Clock>) {
    let clock: Arc<dyn Clock> = Arc::new(Pinned(NOW));
    let store = Store::open(dir.path().join("store"), Retention::default())
        .await
        .unwrap()
        .with_clock(clock.clone());
    (store, clock)
}

#[tokio::test]
async fn forecasts_raise_the_served_value_before_a_daily_spike_and_not_on_noise() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = pinned_store(&dir).await;
    let checkout = DeploymentKey::new("shop", "checkout");
    let noisy = DeploymentKey::new("shop", "noisy");
    store
        .import_history_with_pods(&checkout, &spiky(14))
        .await
        .unwrap();
    store
        .import_history_with_pods(&noisy, &random(14))
        .await
        .unwrap();

    let telemetry = Telemetry::new();
    use clap::Parser;
    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        forecast: ForecastArgs,
    }
    let flags = Flags::parse_from(["test"]);
    flags.forecast.validate().unwrap();
    let (mut task, board) = ForecastTask::new(
        store.clone(),
        clock.clone(),
        ForecastSettings {
            forecaster: flags.forecast.to_config(),
            round: Duration::from_secs(60),
            refit_interval: Duration::from_secs(900),
            cpu_budget: 1.0,
        },
        &telemetry,
    );
    task.round().await;
    let board = board.borrow().clone();

    let spike = &board[&checkout];
    assert!(spike.advice.usable, "{:#?}", spike);
    assert!(spike.advice.trusted);
    // Current demand is 60% x 4 pods = 240; the horizon reaches the 09:00 bucket at 60% x 12 = 720.
    let current = spike.advice.current_demand.unwrap();
    let lead = spike.advice.lead_max_demand.unwrap();
    assert!((current - 240.0).abs() < 5.0, "current {current}");
    assert!(lead > 600.0, "lead-window demand {lead}");
    // The held-out day was scored; the trust window holds the latest 144 of its forecasts.
    assert_eq!(spike.scores.scored, 144, "{:?}", spike.scores);
    assert!(spike.refits >= 2, "warm-up fit and a refit");

    // The forecast is stored, with the members' spread as its interval.
    let stored = store.predictions(&checkout, 0, i64::MAX).await.unwrap();
    let (at, p) = stored.last().expect("a stored forecast");
    assert_eq!(*at, NOW);
    assert_eq!(p.horizon_seconds, 900);
    assert!((p.value - lead).abs() < 1e-3 * lead, "{p:?} vs {lead}");
    assert!(p.lower <= p.value && p.value <= p.upper, "{p:?}");

    let calm = &board[&noisy];
    assert!(!calm.advice.usable, "{:#?}", calm);
    assert!(calm.advice.reason.is_some());

    // The pure tick (`tick::step`, what the engine runs): at 08:50 the spike is 10 minutes away, beyond the lead time (90 s: pods asked
    // for now would idle), so nothing is raised yet.
    let early = tick::step(
        Observation {
            at: NOW,
            measured_at: NOW,
            unmeasured: Vec::new(),
            deployments: vec![inputs(&checkout, 60.0, 4)],
            nodes: Vec::new(),
        },
        Duration::from_secs(15),
        &DecisionConfig::default(),
        &mut Default::default(),
        Some(&board),
        None,
        None,
    );
    let held_back = &early.deployments[&checkout].explanation;
    assert!(
        held_back.forecast_percent.unwrap() < 61.0,
        "the forecast over the lead time is today's 60%: {held_back:#?}"
    );
    // At 08:58:45 09:00 is within the lead time: the forecast raises the served value and says why.
    let observation = Observation {
        at: NOW + 525_000,
        measured_at: NOW + 525_000,
        unmeasured: Vec::new(),
        deployments: vec![inputs(&checkout, 60.0, 4), inputs(&noisy, 50.0, 6)],
        nodes: Vec::new(),
    };
    let mut states = Default::default();
    let reactive = tick::step(
        observation.clone(),
        Duration::from_secs(15),
        &DecisionConfig::default(),
        &mut Default::default(),
        None,
        None,
        None,
    );
    let snapshot = tick::step(
        observation,
        Duration::from_secs(15),
        &DecisionConfig::default(),
        &mut states,
        Some(&board),
        None,
        None,
    );
    let raised = &snapshot.deployments[&checkout];
    let plain = &reactive.deployments[&checkout];
    assert!(
        raised.explanation.forecast_applied,
        "{:#?}",
        raised.explanation
    );
    assert!(
        raised.smart_percent > 2.0 * plain.smart_percent,
        "{} vs {}",
        raised.smart_percent,
        plain.smart_percent
    );
    let explained = serde_json::to_value(&raised.explanation).unwrap();
    assert_eq!(explained["forecast"]["trusted"], true);
    assert!(explained["forecast"]["confidence"].as_f64().unwrap() >= 0.75);
    let untouched = &snapshot.deployments[&noisy];
    assert!(!untouched.explanation.forecast_applied);
    assert_eq!(
        untouched.smart_percent,
        reactive.deployments[&noisy].smart_percent
    );

    // Scores are exported.
    let metrics = telemetry.encode();
    assert!(
        metrics.contains(
            "smart_autoscaler_forecast_trusted{namespace=\"shop\",deployment=\"checkout\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("smart_autoscaler_forecast_mape{namespace=\"shop\",deployment=\"checkout\"}")
    );
    // Both have two weeks of history: both warmed up, so both fitted (the noisy one fits, but is not usable).
    assert!(
        metrics.contains("smart_autoscaler_forecast_fitted_deployments 2\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_deployment_with_little_history_has_no_forecast_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = pinned_store(&dir).await;
    let fresh = DeploymentKey::new("shop", "fresh");
    store
        .import_history_with_pods(&fresh, &spiky(14)[14 * 1440 - 600..])
        .await
        .unwrap();
    let telemetry = Telemetry::new();
    let (mut task, board) = ForecastTask::new(
        store,
        clock,
        ForecastSettings {
            forecaster: Default::default(),
            round: Duration::from_secs(60),
            refit_interval: Duration::from_secs(900),
            cpu_budget: 1.0,
        },
        &telemetry,
    );
    task.round().await;
    let board = board.borrow().clone();
    let advice = &board[&fresh].advice;
    assert!(!advice.usable);
    assert_eq!(advice.lead_max_demand, None);
    assert_eq!(
        advice.reason.as_deref(),
        Some("not fitted yet"),
        "{advice:?}"
    );
    let metrics = telemetry.encode();
    assert!(
        metrics.contains("smart_autoscaler_forecast_fitted_deployments 0\n"),
        "{metrics}"
    );
}
