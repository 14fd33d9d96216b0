//! The engine: on every tick it asks its [`Source`] for an observation, runs the pure core over it and publishes
//! the resulting [`Snapshot`] on a `watch` channel. Handlers only ever read the latest snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use std::collections::{BTreeMap, HashMap};

use crate::domain::decision::{self, DecisionConfig, DecisionState, Hooks};
use crate::domain::forecast::online::{Advice, Board};
use crate::domain::model::{DeploymentKey, Observation, ServedDeployment, Snapshot, UnixMillis};
use crate::telemetry::{OutcomeLabels, Telemetry};

/// Why a source could not produce an observation this tick.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {message}")]
pub struct SourceError {
    /// Which source failed.
    pub source_name: &'static str,
    /// What went wrong.
    pub message: String,
}

/// Where observations come from: the simulated cluster in `demo`, Kubernetes and Prometheus in `serve`.
pub trait Source: Send + 'static {
    /// Observes the cluster at `now`.
    fn observe(
        &mut self,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Observation, SourceError>> + Send;

    /// Sees what was served, for sources that simulate a consumer (the demo's HPA).
    fn served(&mut self, _snapshot: &Snapshot) {}
}

/// Per-deployment decision memory carried between ticks.
pub type DecisionStates = HashMap<DeploymentKey, DecisionState>;

/// Forecasts older than this many five-minute buckets are not used: the forecasting task has stalled.
const FORECAST_MAX_AGE_BUCKETS: i64 = 3;

/// The decision hooks a published forecast gives a deployment: its largest demand over the lead time from `now`
/// over the ready pods, when the forecast is usable (confident and trusted) and fresh.
pub fn forecast_hooks(
    inputs: &crate::domain::model::DeploymentInputs,
    advice: Option<&Advice>,
    now: UnixMillis,
) -> Hooks {
    let fresh = |a: &&Advice| {
        a.made_at.is_some_and(|t| {
            now - t <= FORECAST_MAX_AGE_BUCKETS * crate::domain::forecast::STEP_MILLIS
        })
    };
    Hooks {
        forecast_percent: advice
            .filter(|a| a.usable)
            .filter(fresh)
            .and_then(|a| a.demand_ahead(now))
            .map(|d| d / f64::from(inputs.ready_pods.max(1))),
        ..Hooks::default()
    }
}

/// Computes a snapshot from an observation: the pure step of a tick. `states` is updated in place; deployments
/// no longer observed are forgotten. `forecasts` are the latest published forecasts, if forecasting runs.
pub fn compute(
    observation: Observation,
    interval: Duration,
    config: &DecisionConfig,
    states: &mut DecisionStates,
    forecasts: Option<&Board>,
) -> Snapshot {
    let now = observation.at;
    let deployments: BTreeMap<DeploymentKey, ServedDeployment> = observation
        .deployments
        .into_iter()
        .map(|inputs| {
            let advice = forecasts
                .and_then(|b| b.get(&inputs.key))
                .map(|p| &p.advice);
            let (mut explanation, state) = decision::decide(
                &inputs,
                config,
                states.get(&inputs.key),
                forecast_hooks(&inputs, advice, now),
                now,
            );
            explanation.forecast = advice.cloned();
            states.insert(inputs.key.clone(), state);
            let served = ServedDeployment {
                raw_percent: explanation.raw_percent,
                smart_percent: explanation.served_percent,
                explanation,
                inputs,
            };
            (served.inputs.key.clone(), served)
        })
        .collect();
    states.retain(|key, _| deployments.contains_key(key));
    let interval_millis = interval.as_millis() as i64;
    Snapshot {
        collected_at: now,
        interval_millis,
        deployments,
        nodes: observation.nodes,
        failsafe: config.failsafe(interval_millis),
    }
}

/// Runs ticks until cancelled.
pub struct Engine<S: Source> {
    /// The observation source.
    pub source: S,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Time between ticks, in the clock's time.
    pub interval: Duration,
    /// Where snapshots are published.
    pub publish: watch::Sender<Option<Arc<Snapshot>>>,
    /// Our own metrics.
    pub telemetry: Arc<Telemetry>,
    /// Decision settings.
    pub decision: DecisionConfig,
    /// Decision memory between ticks.
    pub states: DecisionStates,
    /// The forecasting task's board, when forecasting runs.
    pub forecasts: Option<watch::Receiver<Arc<Board>>>,
}

impl<S: Source> Engine<S> {
    /// An engine with no decision memory yet, and the receiving end of its snapshot channel.
    pub fn new(
        source: S,
        clock: Arc<dyn Clock>,
        interval: Duration,
        telemetry: Arc<Telemetry>,
        decision: DecisionConfig,
    ) -> (Self, watch::Receiver<Option<Arc<Snapshot>>>) {
        let (publish, snapshots) = watch::channel(None);
        let engine = Engine {
            source,
            clock,
            interval,
            publish,
            telemetry,
            decision,
            states: DecisionStates::new(),
            forecasts: None,
        };
        (engine, snapshots)
    }

    /// Blends the forecasts published on `board` into the served values.
    pub fn with_forecasts(mut self, board: watch::Receiver<Arc<Board>>) -> Self {
        self.forecasts = Some(board);
        self
    }

    /// Ticks immediately, then every interval, until `cancel` fires. A failed tick keeps the last snapshot.
    pub async fn run(mut self, cancel: CancellationToken) {
        let period = self.clock.real_duration(self.interval);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = cancel.cancelled() => return,
            }
            self.tick().await;
        }
    }

    /// One tick: observe, compute, publish.
    pub async fn tick(&mut self) {
        let now = self.clock.now_millis();
        match self.source.observe(now).await {
            Ok(observation) => {
                // Clone the Arc out of the channel: no borrow of the watch is held while computing.
                let board = self.forecasts.as_ref().map(|b| b.borrow().clone());
                let snapshot = compute(
                    observation,
                    self.interval,
                    &self.decision,
                    &mut self.states,
                    board.as_deref(),
                );
                self.source.served(&snapshot);
                self.telemetry
                    .ticks
                    .get_or_create(&OutcomeLabels { outcome: "ok" })
                    .inc();
                self.publish.send_replace(Some(Arc::new(snapshot)));
            }
            Err(error) => {
                self.telemetry
                    .ticks
                    .get_or_create(&OutcomeLabels { outcome: "error" })
                    .inc();
                tracing::warn!(%error, "observation failed; keeping the last snapshot");
            }
        }
    }
}
