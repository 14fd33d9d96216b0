//! The tuning task of `serve` and `demo`: in rounds, like the forecaster's refits ([`crate::refit`]), it tunes
//! each served deployment's target ([`tuning::tune`]) on its stored five-minute rollups, every
//! `--tuning-interval` per deployment, within a CPU budget per round, and publishes every deployment's latest
//! tuning on a `watch` channel that the engine hands to the tick. Nothing here is on the request path, and nothing
//! here applies anything: the tick decides, per deployment and tick, whether a tuning is applied or shown as
//! advice.
//!
//! Every replica computes from its own store (no leader needed): replicas with the same history compute the same
//! tuning, so they serve the same values.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::TuningSettings;
use crate::domain::decision::DecisionConfig;
use crate::domain::forecast::STEP_MILLIS;
use crate::domain::model::{DeploymentKey, Snapshot, UnixMillis};
use crate::domain::tuning::{self, Tuning, TuningInput, Tunings};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Time between rounds (in the clock's time): a tenth of the tuning interval, 5 s to 60 s, so a short interval
/// (a test's, say) is not held up by rounds.
fn round_of(interval: Duration) -> Duration {
    (interval / 10).clamp(Duration::from_secs(5), Duration::from_secs(60))
}

/// Task-level counters (the per-deployment gauges come from the snapshot, see telemetry's deployment gauges).
#[derive(Clone, Default)]
struct TuningMetrics {
    runs: Counter,
    seconds: Counter<f64, std::sync::atomic::AtomicU64>,
}

/// The tuning task.
pub struct TuningTask {
    store: Store,
    clock: Arc<dyn Clock>,
    settings: TuningSettings,
    decision: DecisionConfig,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    tunings: Tunings,
    publish: watch::Sender<Arc<Tunings>>,
    metrics: TuningMetrics,
}

impl TuningTask {
    /// A task with no tunings yet, and the receiving end of its channel. It reads the deployments to tune (and
    /// their base target, request and maxReplicas) from `snapshots`.
    pub fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        settings: TuningSettings,
        decision: DecisionConfig,
        snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        telemetry: &Telemetry,
    ) -> (TuningTask, watch::Receiver<Arc<Tunings>>) {
        let metrics = TuningMetrics::default();
        telemetry.register(
            "tuning_runs",
            "Deployment tunings computed (each replays the deployment's history at every candidate target)",
            metrics.runs.clone(),
        );
        telemetry.register(
            "tuning_seconds",
            "Time spent replaying history for tuning",
            metrics.seconds.clone(),
        );
        let (publish, receiver) = watch::channel(Arc::new(Tunings::new()));
        (
            TuningTask {
                store,
                clock,
                settings,
                decision,
                snapshots,
                tunings: HashMap::new(),
                publish,
                metrics,
            },
            receiver,
        )
    }

    /// Runs rounds until cancelled: the first as soon as the first snapshot is published, then every round.
    pub async fn run(mut self, cancel: CancellationToken) {
        while self.snapshots.borrow().is_none() {
            tokio::select! {
                changed = self.snapshots.changed() => if changed.is_err() { return },
                () = cancel.cancelled() => return,
            }
        }
        let round = round_of(self.settings.interval);
        let mut ticker = tokio::time::interval(self.clock.real_duration(round));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = cancel.cancelled() => return,
            }
            self.round().await;
        }
    }

    /// One round: tune the deployments that are due (never tuned first, then the oldest), until the budget is
    /// spent, then publish.
    pub async fn round(&mut self) {
        let Some(snapshot) = self.snapshots.borrow().clone() else {
            return;
        };
        let now = self.clock.now_millis();
        self.tunings
            .retain(|k, _| snapshot.deployments.contains_key(k));
        let interval = self.settings.interval.as_millis() as i64;
        // "Not enough data" is looked at again every round (it costs one read of the rollups): history grows, and
        // at start the bootstrap from Prometheus may land just after the first round.
        let retry = 0;
        let mut due: Vec<(Option<UnixMillis>, DeploymentKey)> = snapshot
            .deployments
            .keys()
            .filter(|k| {
                self.tunings.get(k).is_none_or(|t| {
                    let every = if t.verdict == tuning::Verdict::NotEnoughData {
                        retry
                    } else {
                        interval
                    };
                    now - t.computed_at >= every
                })
            })
            .map(|k| (self.tunings.get(k).map(|t| t.computed_at), k.clone()))
            .collect();
        due.sort();
        let budget =
            round_of(self.settings.interval).mul_f64(self.settings.cpu_budget.clamp(0.01, 1.0));
        let mut spent = Duration::ZERO;
        for (_, key) in due {
            if spent >= budget {
                break;
            }
            let Some(served) = snapshot.deployments.get(&key) else {
                continue;
            };
            let inputs = &served.inputs;
            let from = now - (self.settings.config.max_history_days * 86_400_000.0) as i64;
            let complete = now.div_euclid(STEP_MILLIS) * STEP_MILLIS;
            let rollups = match self.store.rollups(&key, from, complete).await {
                Ok(r) => r,
                Err(error) => {
                    tracing::warn!(%key, %error, "reading history for tuning");
                    continue;
                }
            };
            let input = tuning_input(
                &rollups,
                from.div_euclid(STEP_MILLIS) * STEP_MILLIS,
                complete,
                inputs.base_target_percent,
                inputs.pod_cpu_request_milli,
                inputs
                    .max_replicas
                    .unwrap_or(inputs.replicas.max(1) * 4)
                    .max(1),
            );
            let (config, decision) = (self.settings.config.clone(), self.decision.clone());
            // Replaying is CPU-bound: off the async threads.
            let tuned = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                (tuning::tune(&input, &config, &decision), started.elapsed())
            })
            .await;
            match tuned {
                Ok((mut tuning, took)) => {
                    // When it was computed, not the bucket its history ends at: rounds order by it.
                    tuning.computed_at = now;
                    spent += took;
                    self.metrics.runs.inc();
                    self.metrics.seconds.inc_by(took.as_secs_f64());
                    tracing::info!(%key, summary = %tuning.summary, "tuned");
                    self.tunings.insert(key, tuning);
                }
                Err(error) => tracing::error!(%key, %error, "tuning task failed"),
            }
        }
        self.publish.send_replace(Arc::new(self.tunings.clone()));
    }
}

/// The tuning input of a deployment's rollups between `from` and `to` (bucket starts): one demand value per
/// five-minute bucket (95th-percentile utilization × pods / 100, in pods at 100% of request), gaps where nothing was
/// recorded or the pod count is unknown.
pub fn tuning_input(
    rollups: &[crate::store::Rollup],
    from: UnixMillis,
    to: UnixMillis,
    base_target_percent: f64,
    pod_request_milli: i64,
    max_replicas: u32,
) -> TuningInput {
    let buckets = usize::try_from((to - from).max(0) / STEP_MILLIS).unwrap_or(0);
    let mut demand = vec![None; buckets];
    for r in rollups {
        let Ok(i) = usize::try_from((r.start - from) / STEP_MILLIS) else {
            continue;
        };
        if let (Some(slot), Some(pods)) = (demand.get_mut(i), r.replicas_max) {
            // The bucket's 95th percentile, not its mean: a replay at five-minute resolution cannot see a burst
            // inside a bucket, and a mean would hide it from the saturation the rule compares.
            let d = r.cpu_p95 / 100.0 * f64::from(pods);
            *slot = d.is_finite().then_some(d);
        }
    }
    TuningInput {
        start_millis: from,
        step_millis: STEP_MILLIS,
        demand_pods: demand,
        base_target_percent,
        pod_request_milli,
        min_replicas: 1,
        max_replicas,
        now: to,
    }
}

/// The latest tunings as the API lists them: one per deployment, in namespace, name order, with what the tick
/// made of it (from the snapshot's explanation) when the deployment is served.
pub fn listing(
    tunings: &Tunings,
    snapshot: Option<&Snapshot>,
    namespace: Option<&str>,
) -> serde_json::Value {
    let mut keys: Vec<&DeploymentKey> = tunings
        .keys()
        .filter(|k| namespace.is_none_or(|n| k.namespace == n))
        .collect();
    keys.sort();
    let items: Vec<serde_json::Value> = keys
        .into_iter()
        .map(|key| {
            let t: &Tuning = &tunings[key];
            let shown = snapshot
                .and_then(|s| s.deployments.get(key))
                .and_then(|d| d.explanation.tuning.as_ref());
            serde_json::json!({
                "namespace": key.namespace,
                "deployment": key.name,
                "verdict": t.verdict,
                "base_target_percent": t.base_target_percent,
                "target_percent": t.target_percent,
                "confidence": t.confidence,
                "history_days": t.history_days,
                "applied": shown.is_some_and(|s| s.applied),
                "opted_in": shown.is_some_and(|s| s.opted_in),
                "text": shown.map_or(t.summary.as_str(), |s| s.text.as_str()),
                "summary": t.summary,
                "computed_at": crate::clock::rfc3339(t.computed_at),
                "current": t.current,
                "chosen": t.chosen,
                "candidates": t.candidates,
                "windows": t.windows,
            })
        })
        .collect();
    serde_json::json!({ "items": items })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Rollup;

    fn rollup(start: UnixMillis, cpu: f64, pods: Option<u32>) -> Rollup {
        Rollup {
            start,
            samples: 20,
            // The mean is lower: the 95th percentile is what counts.
            cpu_mean: cpu / 2.0,
            cpu_max: cpu,
            cpu_p95: cpu,
            memory_mean: None,
            memory_max: None,
            replicas_max: pods,
        }
    }

    #[test]
    fn rollups_become_demand_with_gaps() {
        let from = 10 * STEP_MILLIS;
        let rollups = [
            rollup(from, 50.0, Some(4)),
            rollup(from + 2 * STEP_MILLIS, 70.0, None),
            rollup(from + 3 * STEP_MILLIS, 25.0, Some(8)),
            rollup(from + 9 * STEP_MILLIS, 25.0, Some(8)),
        ];
        let i = tuning_input(&rollups, from, from + 4 * STEP_MILLIS, 70.0, 500, 10);
        assert_eq!(i.demand_pods, vec![Some(2.0), None, None, Some(2.0)]);
        assert_eq!((i.start_millis, i.now), (from, from + 4 * STEP_MILLIS));
    }
}
