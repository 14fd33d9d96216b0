//! The forecasting task of `serve`: keeps one online [`Forecaster`] per deployment in the store, feeds it the
//! five-minute demand buckets (utilization x pods) from the store's rollups, refits the models in the background
//! on up to 30 days of history within a CPU budget, and publishes every deployment's forecast on a `watch`
//! channel that the engine reads on each tick. Nothing here is on the request path.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::forecast::online::{Board, Forecaster, ForecasterConfig};
use crate::domain::forecast::{History, STEP_MILLIS, STEPS_PER_DAY};
use crate::domain::model::{DeploymentKey, UnixMillis};
use crate::store::{Prediction, Rollup, Store};
use crate::telemetry::Telemetry;

/// History a refit looks at.
const FIT_WINDOW_MILLIS: i64 = 30 * 86_400_000;

/// Labels of the per-deployment forecast gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    /// Namespace.
    pub namespace: String,
    /// Deployment.
    pub deployment: String,
}

/// Forecast metrics.
#[derive(Clone, Default)]
pub struct ForecastMetrics {
    /// Recent MAPE of the ensemble's lead-window forecasts.
    pub mape: Family<DeploymentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Recent MASE (against seasonal-naive).
    pub mase: Family<DeploymentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Recent share of forecast rises that did not come.
    pub false_positive_rate: Family<DeploymentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while the trust gate is open.
    pub trusted: Family<DeploymentLabels, Gauge>,
    /// Ensemble confidence.
    pub confidence: Family<DeploymentLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Deployments whose models have been fitted at least once (warm-up or refit).
    pub fitted: Gauge,
    /// Refits done.
    pub refits: Counter,
    /// CPU seconds spent refitting.
    pub refit_seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

impl ForecastMetrics {
    /// Registers the families.
    pub fn register(&self, telemetry: &Telemetry) {
        telemetry.register(
            "forecast_mape",
            "Recent mean absolute percentage error of the lead-window forecasts, by deployment",
            self.mape.clone(),
        );
        telemetry.register(
            "forecast_mase",
            "Recent mean absolute scaled error (vs seasonal-naive) of the lead-window forecasts",
            self.mase.clone(),
        );
        telemetry.register(
            "forecast_false_positive_rate",
            "Recent share of forecast rises that did not come",
            self.false_positive_rate.clone(),
        );
        telemetry.register(
            "forecast_trusted",
            "1 while the deployment's forecasts may move the served value",
            self.trusted.clone(),
        );
        telemetry.register(
            "forecast_confidence",
            "Ensemble confidence of the latest forecast",
            self.confidence.clone(),
        );
        telemetry.register(
            "forecast_fitted_deployments",
            "Deployments whose forecast models are fitted; the others have too little history or wait for their \
             warm-up",
            self.fitted.clone(),
        );
        telemetry.register("forecast_refits", "Model refits", self.refits.clone());
        telemetry.register(
            "forecast_refit_seconds",
            "Time spent refitting models",
            self.refit_seconds.clone(),
        );
    }
}

/// Settings of the task.
#[derive(Debug, Clone)]
pub struct ForecastSettings {
    /// Per-deployment forecaster settings (the in-memory history is bounded here).
    pub forecaster: ForecasterConfig,
    /// Time between rounds.
    pub round: Duration,
    /// Least time between two refits of one deployment.
    pub refit_interval: Duration,
    /// Share of one core refits may use, 0-1.
    pub cpu_budget: f64,
}

/// Demand of a rollup bucket: mean utilization x pods; unknown (a gap) when the pod count was not recorded.
pub fn demand(rollup: &Rollup) -> f64 {
    rollup
        .replicas_max
        .map_or(f64::NAN, |pods| rollup.cpu_mean * f64::from(pods))
}

/// The forecasting task.
pub struct ForecastTask {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: ForecastSettings,
    metrics: ForecastMetrics,
    /// Per deployment: its forecaster, when it was last refitted, and the time of the last forecast stored.
    forecasters: HashMap<DeploymentKey, (Forecaster, Option<UnixMillis>, Option<UnixMillis>)>,
    publish: watch::Sender<Arc<Board>>,
}

impl ForecastTask {
    /// A task with no forecasters yet, and the receiving end of its board.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: ForecastSettings,
        telemetry: &Telemetry,
    ) -> (ForecastTask, watch::Receiver<Arc<Board>>) {
        let metrics = ForecastMetrics::default();
        metrics.register(telemetry);
        let (publish, board) = watch::channel(Arc::new(Board::new()));
        let mut settings = settings;
        settings.forecaster.max_history_steps = ForecasterConfig::SERVER_HISTORY_STEPS;
        (
            ForecastTask {
                store,
                clock,
                settings,
                metrics,
                forecasters: HashMap::new(),
                publish,
            },
            board,
        )
    }

    /// Runs rounds until cancelled.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut ticker = tokio::time::interval(self.clock.real_duration(self.settings.round));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = cancel.cancelled() => return,
            }
            self.round().await;
        }
    }

    /// One round: feed new buckets to every deployment's forecaster, refit those due within the budget, publish.
    pub async fn round(&mut self) {
        let now = self.clock.now_millis();
        let complete = now.div_euclid(STEP_MILLIS) * STEP_MILLIS;
        let keys = self.store.deployments();
        let known: std::collections::HashSet<&DeploymentKey> = keys.iter().collect();
        self.forecasters.retain(|k, _| known.contains(k));
        let memory = ForecasterConfig::SERVER_HISTORY_STEPS as i64 * STEP_MILLIS;
        // Warm-ups (a fit and a day's replay each) and refits share one CPU budget per round: after a restart
        // with thousands of deployments, they start over several rounds instead of all at once.
        let budget = self
            .settings
            .round
            .mul_f64(self.settings.cpu_budget.clamp(0.01, 1.0));
        let mut spent = Duration::ZERO;
        for key in &keys {
            if !self.forecasters.contains_key(key) {
                if spent >= budget {
                    continue;
                }
                let started = Instant::now();
                let forecaster = self.start(key, complete).await;
                spent += started.elapsed();
                self.forecasters
                    .insert(key.clone(), (forecaster, None, None));
            }
            let Some((forecaster, _, _)) = self.forecasters.get_mut(key) else {
                continue;
            };
            let from = forecaster.end().unwrap_or(complete - memory);
            if from >= complete {
                continue;
            }
            match self.store.rollups(key, from, complete).await {
                Ok(rollups) => {
                    for r in &rollups {
                        if r.start + STEP_MILLIS <= complete {
                            forecaster.push(r.start, demand(r));
                        }
                    }
                }
                Err(error) => tracing::warn!(%key, %error, "reading rollups for forecasting"),
            }
        }
        self.refit_due(now, budget.saturating_sub(spent)).await;
        self.store_predictions().await;
        self.publish_board();
    }

    /// Stores each deployment's newest lead-window forecast (once per bucket), with the spread of the members'
    /// lead-window values as its interval, so forecasts can be checked against history later.
    async fn store_predictions(&mut self) {
        let horizon_seconds =
            (self.settings.forecaster.ensemble.horizon_steps as i64 * STEP_MILLIS / 1000) as u32;
        let mut new = Vec::new();
        for (key, (forecaster, _, stored)) in &mut self.forecasters {
            let Some(f) = forecaster.latest() else {
                continue;
            };
            let (Some(value), true) = (f.lead_max, *stored != Some(f.made_at)) else {
                continue;
            };
            let steps = self.settings.forecaster.ensemble.horizon_steps.max(1);
            let members: Vec<f64> = f
                .members
                .iter()
                .filter(|m| m.weight > 0.0)
                .filter_map(|m| m.values.as_ref())
                .filter_map(|v| v.iter().take(steps).copied().reduce(f64::max))
                .collect();
            let lower = members.iter().copied().fold(value, f64::min);
            let upper = members.iter().copied().fold(value, f64::max);
            *stored = Some(f.made_at);
            new.push((
                key.clone(),
                f.made_at,
                Prediction {
                    horizon_seconds,
                    value,
                    lower,
                    upper,
                },
            ));
        }
        for (key, at, prediction) in new {
            if let Err(error) = self.store.put_prediction(&key, at, &prediction).await {
                tracing::warn!(%key, %error, "storing a forecast");
            }
        }
    }

    /// A forecaster for a deployment seen for the first time (at start, or newly managed): warmed up on its
    /// stored history (fitted on all but the last day, which is then scored as if live), so forecasts and trust
    /// do not start from nothing after every restart.
    async fn start(&self, key: &DeploymentKey, complete: UnixMillis) -> Forecaster {
        let mut forecaster = Forecaster::new(self.settings.forecaster.clone());
        match self
            .store
            .rollups(key, complete - FIT_WINDOW_MILLIS, complete)
            .await
        {
            Ok(rollups) => {
                let points: Vec<(UnixMillis, f64)> = rollups
                    .iter()
                    .filter(|r| r.start + STEP_MILLIS <= complete)
                    .map(|r| (r.start, demand(r)))
                    .collect();
                let history = History::from_points(&points, STEP_MILLIS);
                if history.observed() >= 2 * STEPS_PER_DAY {
                    let started = Instant::now();
                    let warmed = tokio::task::spawn_blocking(move || {
                        forecaster.warm_up(&history, STEPS_PER_DAY);
                        forecaster
                    })
                    .await;
                    self.metrics
                        .refit_seconds
                        .inc_by(started.elapsed().as_secs_f64());
                    self.metrics.refits.inc();
                    return warmed.unwrap_or_else(|error| {
                        tracing::error!(%key, %error, "warm-up failed");
                        Forecaster::new(self.settings.forecaster.clone())
                    });
                }
                for (t, v) in points {
                    forecaster.push(t, v);
                }
            }
            Err(error) => tracing::warn!(%key, %error, "reading history to start forecasting"),
        }
        forecaster
    }

    /// Refits forecasters whose refit is due, oldest first, until `budget` is spent.
    async fn refit_due(&mut self, now: UnixMillis, budget: Duration) {
        let interval = self.settings.refit_interval.as_millis() as i64;
        // Oldest refit first, so a budget too small for everyone still reaches everyone in turn.
        let mut due: Vec<(Option<UnixMillis>, DeploymentKey)> = self
            .forecasters
            .iter()
            .filter(|(_, (f, last, _))| {
                f.observed() >= STEPS_PER_DAY && last.is_none_or(|t| now - t >= interval)
            })
            .map(|(k, (_, last, _))| (*last, k.clone()))
            .collect();
        due.sort();
        let mut spent = Duration::ZERO;
        for (_, key) in due {
            if spent >= budget {
                break;
            }
            let Some(end) = self.forecasters.get(&key).and_then(|(f, _, _)| f.end()) else {
                continue;
            };
            let rollups = match self.store.rollups(&key, end - FIT_WINDOW_MILLIS, end).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%key, %error, "reading history for a refit");
                    continue;
                }
            };
            let Some((mut forecaster, _, stored)) = self.forecasters.remove(&key) else {
                continue;
            };
            let points: Vec<(UnixMillis, f64)> =
                rollups.iter().map(|r| (r.start, demand(r))).collect();
            // Fitting is CPU-bound: off the async threads, and the forecaster moves there and back, so no
            // lock is ever held.
            let fitted = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let history = History::from_points(&points, STEP_MILLIS);
                if history.observed() >= STEPS_PER_DAY {
                    forecaster.refit_on(&history);
                } else {
                    forecaster.refit();
                }
                (forecaster, started.elapsed())
            })
            .await;
            match fitted {
                Ok((forecaster, took)) => {
                    spent += took;
                    self.metrics.refits.inc();
                    self.metrics.refit_seconds.inc_by(took.as_secs_f64());
                    self.forecasters
                        .insert(key, (forecaster, Some(now), stored));
                }
                Err(error) => tracing::error!(%key, %error, "refit task failed"),
            }
        }
    }

    fn publish_board(&self) {
        let board: Board = self
            .forecasters
            .iter()
            .map(|(k, (f, _, _))| (k.clone(), f.published()))
            .collect();
        for (key, p) in &board {
            let labels = DeploymentLabels {
                namespace: key.namespace.clone(),
                deployment: key.name.clone(),
            };
            if let Some(v) = p.scores.mape {
                self.metrics.mape.get_or_create(&labels).set(v);
            }
            if let Some(v) = p.scores.mase {
                self.metrics.mase.get_or_create(&labels).set(v);
            }
            if let Some(v) = p.scores.false_positive_rate {
                self.metrics
                    .false_positive_rate
                    .get_or_create(&labels)
                    .set(v);
            }
            self.metrics
                .trusted
                .get_or_create(&labels)
                .set(i64::from(p.advice.trusted));
            self.metrics
                .confidence
                .get_or_create(&labels)
                .set(p.advice.confidence);
        }
        let fitted = self
            .forecasters
            .values()
            .filter(|(f, _, _)| f.refits() > 0)
            .count();
        self.metrics.fitted.set(fitted as i64);
        self.publish.send_replace(Arc::new(board));
    }
}
