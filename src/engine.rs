//! The engine: on every tick it asks its [`Source`] for an observation, runs the domain's pure tick
//! ([`tick::step`]) over it with the latest published forecasts and tunings, and publishes the resulting [`Snapshot`] on a
//! `watch` channel. Handlers only ever read the latest snapshot.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::domain::decision::DecisionConfig;
use crate::domain::forecast::online::Board;
use crate::domain::model::{Observation, Snapshot, UnixMillis};
use crate::domain::tick::{self, TickStates};
use crate::domain::tuning::Tunings;
use crate::store::{AnomalyHistory, AnomalyWriter};
use crate::telemetry::{AnomalyMetrics, OutcomeLabels, Telemetry};

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
    /// Decision and anomaly-detector memory between ticks (the detectors' thresholds with it).
    pub states: TickStates,
    /// The forecasting task's board, when forecasting runs.
    pub forecasts: Option<watch::Receiver<Arc<Board>>>,
    /// The tuning task's latest tunings, when tuning runs.
    pub tunings: Option<watch::Receiver<Arc<Tunings>>>,
    /// Anomaly counters and gauges, updated after each publish.
    pub anomaly_metrics: AnomalyMetrics,
    /// Where anomalies are written after each publish, when they are kept.
    pub anomaly_writer: Option<AnomalyWriter>,
    /// Prices each published snapshot and keeps the cost and right-sizing state, when wired.
    pub cost: Option<Arc<crate::cost::CostBook>>,
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
        let anomaly_metrics = AnomalyMetrics::new(&telemetry);
        let engine = Engine {
            source,
            clock,
            interval,
            publish,
            telemetry,
            decision,
            states: TickStates::default(),
            forecasts: None,
            tunings: None,
            anomaly_metrics,
            anomaly_writer: None,
            cost: None,
        };
        (engine, snapshots)
    }

    /// Blends the forecasts published on `board` into the served values.
    pub fn with_forecasts(mut self, board: watch::Receiver<Arc<Board>>) -> Self {
        self.forecasts = Some(board);
        self
    }

    /// Feeds the tunings published on `tunings` to the tick (applied where opted in, advice elsewhere).
    pub fn with_tunings(mut self, tunings: watch::Receiver<Arc<Tunings>>) -> Self {
        self.tunings = Some(tunings);
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

    /// One tick: observe, step, publish.
    pub async fn tick(&mut self) {
        let now = self.clock.now_millis();
        match self.source.observe(now).await {
            Ok(observation) => {
                // Clone the Arc out of the channel: no borrow of the watch is held while computing.
                let board = self.forecasts.as_ref().map(|b| b.borrow().clone());
                let tunings = self.tunings.as_ref().map(|t| t.borrow().clone());
                let previous = self.publish.borrow().clone();
                let snapshot = tick::step(
                    observation,
                    self.interval,
                    &self.decision,
                    &mut self.states,
                    board.as_deref(),
                    tunings.as_deref(),
                    previous.as_deref(),
                );
                self.source.served(&snapshot);
                self.telemetry
                    .ticks
                    .get_or_create(&OutcomeLabels { outcome: "ok" })
                    .inc();
                let snapshot = Arc::new(snapshot);
                self.publish.send_replace(Some(snapshot.clone()));
                self.published(previous.as_deref(), &snapshot);
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

impl<S: Source> Engine<S> {
    /// Writes the anomalies of each published snapshot to `history` (see [`AnomalyWriter`]).
    pub fn with_anomaly_history(mut self, history: AnomalyHistory) -> Self {
        self.anomaly_writer = Some(AnomalyWriter::new(history));
        self
    }

    /// Prices every published snapshot with `book` (the cost report, its rollups and the usage histograms).
    pub fn with_cost(mut self, book: Arc<crate::cost::CostBook>) -> Self {
        self.cost = Some(book);
        self
    }

    /// After a publish: the cost book (pure pricing of the snapshot, then queued IO), the anomaly metrics, and the anomaly history's writes (handed to a task, never awaited
    /// here, so the tick does no IO).
    fn published(&mut self, previous: Option<&Snapshot>, snapshot: &Snapshot) {
        if let Some(book) = &self.cost {
            book.observe(snapshot);
        }
        self.anomaly_metrics.observe(previous, snapshot);
        if let Some(writer) = &mut self.anomaly_writer {
            writer.observe(&snapshot.anomalies);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::contract::SMART_METRIC;
    use crate::domain::model::{DeploymentInputs, DeploymentKey, UnknownCause, Unmeasured};
    use crate::domain::selector::Selector;
    use crate::domain::testing;
    use crate::http::external::lookup;

    const INTERVAL: Duration = Duration::from_secs(15);

    fn measured(at: UnixMillis, name: &str, utilization: f64) -> DeploymentInputs {
        testing::inputs()
            .key(&DeploymentKey::new("shop", name))
            .cpu(utilization)
            .pool("general", Some(50.0), 50.0)
            .at(at)
            .build()
    }

    fn unknown(name: &str) -> Unmeasured {
        Unmeasured {
            key: DeploymentKey::new("shop", name),
            cause: UnknownCause::NoSamples,
            reason: "no usable CPU sample".to_string(),
        }
    }

    fn step(
        at: UnixMillis,
        deployments: Vec<DeploymentInputs>,
        unmeasured: Vec<Unmeasured>,
        states: &mut TickStates,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let observation = Observation {
            at,
            measured_at: at,
            deployments,
            unmeasured,
            nodes: Vec::new(),
        };
        tick::step(
            observation,
            INTERVAL,
            &DecisionConfig::default(),
            states,
            None,
            None,
            previous,
        )
    }

    fn read(snapshot: &Snapshot, now: UnixMillis, name: &str) -> Result<String, String> {
        let selector = Selector::parse(&format!("deployment={name}")).unwrap();
        lookup(Some(snapshot), now, "shop", SMART_METRIC, &selector)
            .map(|list| list.items[0].value.clone())
            .map_err(|e| format!("{} {}", e.code.as_u16(), e.message))
    }

    #[test]
    fn unknown_usage_keeps_the_last_good_value_ageing_into_the_failsafe() {
        let mut states = TickStates::default();
        let t1 = 1_000_000;
        let first = step(
            t1,
            vec![measured(t1, "api", 60.0)],
            vec![],
            &mut states,
            None,
        );
        let good = first.deployments[&DeploymentKey::new("shop", "api")].clone();
        assert!(good.smart_percent > 0.0);

        // The source answers, but with nothing usable for api: the last good entry stays, old time and all.
        let t2 = t1 + 15_000;
        let second = step(t2, vec![], vec![unknown("api")], &mut states, Some(&first));
        let key = DeploymentKey::new("shop", "api");
        assert_eq!(second.deployments[&key], good);
        let u = &second.unmeasured[&key];
        assert_eq!((u.since, u.last_good_at), (t2, Some(t1)));
        assert!(
            states.decisions.contains_key(&key),
            "decision memory is kept"
        );
        assert!(
            states.detectors.contains_key(&key),
            "detector memory is kept"
        );

        let t3 = t2 + 15_000;
        let third = step(t3, vec![], vec![unknown("api")], &mut states, Some(&second));
        assert_eq!(
            third.unmeasured[&key].since, t2,
            "since marks the start of the run"
        );
        // Served as it was while fresh, never as a fresh 0...
        let value = read(&third, t3, "api").unwrap();
        assert_ne!(value, "0");
        // ...and refused, with the reason, once past the fail-safe limit.
        let limit = third.failsafe.error_after_millis;
        let refused = read(&third, t1 + limit + 1, "api").unwrap_err();
        assert!(refused.starts_with("503"), "{refused}");
        assert!(refused.contains("no usable CPU sample"), "{refused}");
        assert!(!third.can_serve(t1 + limit + 1));

        // Measured again: a fresh value, and the unknown run is over.
        let t4 = t3 + 15_000;
        let fourth = step(
            t4,
            vec![measured(t4, "api", 60.0)],
            vec![],
            &mut states,
            Some(&third),
        );
        assert_eq!(fourth.deployments[&key].inputs.observed_at, t4);
        assert!(fourth.unmeasured.is_empty());
    }

    #[test]
    fn never_measured_is_a_503_with_the_reason_not_a_zero() {
        let mut states = TickStates::default();
        let snapshot = step(1_000, vec![], vec![unknown("new")], &mut states, None);
        assert!(snapshot.deployments.is_empty());
        assert_eq!(
            snapshot.unmeasured[&DeploymentKey::new("shop", "new")].last_good_at,
            None
        );
        let refused = read(&snapshot, 1_000, "new").unwrap_err();
        assert!(refused.starts_with("503"), "{refused}");
        assert!(
            refused.contains("unknown") && refused.contains("no usable CPU sample"),
            "{refused}"
        );
        // A name that is not managed at all is still a 404.
        assert!(
            read(&snapshot, 1_000, "other")
                .unwrap_err()
                .starts_with("404")
        );
    }
}

#[cfg(test)]
mod anomaly_hook_tests {
    use super::*;
    use crate::clock::SystemClock;
    use crate::domain::anomaly::{Anomaly, AnomalyKind, Severity};
    use crate::domain::model::DeploymentKey;
    use crate::store::anomalies::AnomalyQuery;

    /// A source that never observes: the hook is driven by hand.
    struct Silent;

    impl Source for Silent {
        async fn observe(&mut self, _now: UnixMillis) -> Result<Observation, SourceError> {
            Err(SourceError {
                source_name: "silent",
                message: "never observes".into(),
            })
        }
    }

    fn snapshot(at: UnixMillis, anomalies: Vec<Anomaly>) -> Snapshot {
        let observation = Observation {
            at,
            measured_at: at,
            deployments: vec![],
            unmeasured: vec![],
            nodes: vec![],
        };
        let mut snapshot = tick::step(
            observation,
            Duration::from_secs(15),
            &DecisionConfig::default(),
            &mut TickStates::default(),
            None,
            None,
            None,
        );
        snapshot.anomalies = anomalies;
        snapshot
    }

    #[tokio::test]
    async fn after_each_publish_anomalies_are_counted_once_and_written_to_the_history() {
        let telemetry = Arc::new(Telemetry::new());
        let history = AnomalyHistory::in_memory();
        let (engine, _snapshots) = Engine::new(
            Silent,
            Arc::new(SystemClock),
            Duration::from_secs(15),
            telemetry.clone(),
            DecisionConfig::default(),
        );
        let mut engine = engine.with_anomaly_history(history.clone());
        let spike = Anomaly {
            key: DeploymentKey::new("shop", "api"),
            kind: AnomalyKind::CpuSpike,
            severity: Severity::Critical,
            started_at: 1_000,
            last_seen_at: 1_000,
            ended_at: None,
            expected: 40.0,
            actual: 97.0,
            score: 1.0,
            summary: "CPU 97% where 40% was expected".into(),
        };
        let first = snapshot(1_000, vec![spike.clone()]);
        engine.published(None, &first);
        let mut later = spike.clone();
        later.last_seen_at = 16_000;
        let second = snapshot(16_000, vec![later.clone()]);
        engine.published(Some(&first), &second);

        let exposition = telemetry.encode();
        let series = "smart_autoscaler_anomalies_total{type=\"cpu_spike\",severity=\"critical\"} 1";
        assert!(exposition.contains(series), "{exposition}");
        let active =
            "smart_autoscaler_anomalies_active{type=\"cpu_spike\",severity=\"critical\"} 1";
        assert!(exposition.contains(active), "{exposition}");
        // Written when it started, not again for a later sighting.
        assert_eq!(
            history.query(&AnomalyQuery::default()).await.unwrap(),
            vec![spike]
        );
    }
}
