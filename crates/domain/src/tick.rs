//! The tick: the one pure step that turns what was observed of the cluster into the [`Snapshot`] the API serves.
//! `serve` (through the engine), `demo` (through the same engine) and `simulate` (the backtest) all call
//! [`step`]; none of them decides anything itself.
//!
//! ```text
//!  objects + usage rates + node measurements      (serve: k8s/ + prom/; demo: the simulated cluster)
//!        │ cluster::join                           (simulate: the trace's deployment, joined as serve would)
//!        ▼
//!  Observation ──┐
//!  forecasts  ───┤ step: per deployment forecast_hooks + tuning::hook → decision::decide; unknown usage keeps
//!  tunings    ───┤       the last value;
//!  states     ───┤       then the anomaly detectors (anomaly::detect) on the same inputs and forecasts
//!  previous   ───┘
//!        ▼
//!  Snapshot (served values, explanations, fail-safe limits, anomalies) + updated decision and detector states
//! ```
//!
//! The detectors only read what the decision read: nothing they find changes a served value.
//!
//! The join ([`cluster::join`](super::cluster::join)) stays a stage of its own, before the step: serve's source
//! records the joined observation in the store, reports per-deployment measurement health and starts history
//! bootstraps from it before anything is decided, and the backtest models a deployment's Prometheus windows as a
//! whole rather than pod by pod. Everything after the join is here, once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::anomaly::{Anomaly, DetectorStates};
use super::decision::{self, DecisionConfig, DecisionState, Hooks};
use super::forecast::STEP_MILLIS;
use super::forecast::online::{Advice, Board};
use super::model::{
    DeploymentInputs, DeploymentKey, Observation, ServedDeployment, Snapshot, UnixMillis,
    Unmeasured, UsageUnknown,
};
use super::tuning::Tunings;

/// Per-deployment decision memory carried from one tick to the next.
pub type DecisionStates = HashMap<DeploymentKey, DecisionState>;

/// Everything the tick remembers between ticks: the decision memory and the anomaly detectors' memory (with
/// their thresholds), both keyed by deployment.
#[derive(Debug, Clone, Default)]
pub struct TickStates {
    /// Per-deployment decision memory.
    pub decisions: DecisionStates,
    /// Per-deployment anomaly-detector memory.
    pub detectors: DetectorStates,
}

impl TickStates {
    /// No memory yet; the detectors use `detectors`' thresholds.
    pub fn new(detectors: DetectorStates) -> Self {
        TickStates {
            decisions: DecisionStates::new(),
            detectors,
        }
    }
}

/// Forecasts older than this many five-minute buckets are not used: whoever publishes them has stalled.
pub const FORECAST_MAX_AGE_BUCKETS: i64 = 3;

/// The decision hooks a published forecast gives a deployment: its largest demand over the lead time from `now`
/// over the ready pods, when the forecast is usable (confident and trusted) and fresh (made at most
/// [`FORECAST_MAX_AGE_BUCKETS`] buckets before `now`).
pub fn forecast_hooks(
    inputs: &DeploymentInputs,
    advice: Option<&Advice>,
    now: UnixMillis,
) -> Hooks {
    let fresh = |a: &&Advice| {
        a.made_at
            .is_some_and(|t| now - t <= FORECAST_MAX_AGE_BUCKETS * STEP_MILLIS)
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

/// One tick's pure step: the snapshot to serve for `observation`. `states` is updated in place; deployments no
/// longer observed are forgotten. `forecasts` are the latest published forecasts, if forecasting runs;
/// `tunings` are the latest auto-tuned targets ([`tuning`](super::tuning)), if tuning runs: an applicable one
/// (opted in, confident, within the factor bounds) feeds the decision's learned-target hook, and every one is
/// shown in the explanation, as advice when it is not applied;
/// `interval` is the time between ticks (it sets the snapshot's fail-safe limits).
///
/// A deployment whose utilization is unknown on this tick ([`Observation::unmeasured`]) gets no new value: its
/// entry in `previous` (the last snapshot published) is kept as it was, inputs' `observed_at` included, so the
/// value ages into the read-time fail-safe (raw, then a 503 that gives the reason) instead of being replaced by
/// a made-up one. Its decision state is kept too, and so are its detector state and its open anomalies
/// (published as they were: nothing is judged without a measurement).
///
/// The snapshot's anomalies are those open after this tick plus those that ended on it, ordered by deployment
/// and kind; a deployment no longer observed at all has its open anomalies ended.
pub fn step(
    observation: Observation,
    interval: Duration,
    config: &DecisionConfig,
    states: &mut TickStates,
    forecasts: Option<&Board>,
    tunings: Option<&Tunings>,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let now = observation.at;
    let TickStates {
        decisions: states,
        detectors,
    } = states;
    let mut anomalies: Vec<Anomaly> = Vec::new();
    let mut deployments: BTreeMap<DeploymentKey, ServedDeployment> = observation
        .deployments
        .into_iter()
        .map(|inputs| {
            let published = forecasts.and_then(|b| b.get(&inputs.key));
            let advice = published.map(|p| &p.advice);
            let tuning = tunings.and_then(|t| t.get(&inputs.key));
            let mut hooks = forecast_hooks(&inputs, advice, now);
            hooks.learned_target_percent =
                tuning.and_then(|t| t.applicable_target(&inputs, config));
            let (mut explanation, state) =
                decision::decide(&inputs, config, states.get(&inputs.key), hooks, now);
            explanation.forecast = advice.cloned();
            if let Some(t) = tuning {
                let shown = t.shown(&inputs, config, &explanation);
                explanation
                    .reasons
                    .push(format!("auto-tune: {}", shown.text));
                explanation.tuning = Some(shown);
            }
            states.insert(inputs.key.clone(), state);
            anomalies.extend(detectors.observe(&inputs, published, now));
            let served = ServedDeployment {
                raw_percent: explanation.raw_percent,
                smart_percent: explanation.served_percent,
                explanation,
                inputs,
            };
            (served.inputs.key.clone(), served)
        })
        .collect();
    let mut unmeasured = BTreeMap::new();
    for Unmeasured { key, cause, reason } in observation.unmeasured {
        let last_good = previous.and_then(|p| p.deployments.get(&key));
        if let Some(last) = last_good {
            deployments.insert(key.clone(), last.clone());
            anomalies.extend(detectors.held(&key));
        }
        let since = previous
            .and_then(|p| p.unmeasured.get(&key))
            .map_or(now, |u| u.since);
        let last_good_at = last_good.map(|d| d.inputs.observed_at);
        unmeasured.insert(
            key,
            UsageUnknown {
                cause,
                reason,
                since,
                last_good_at,
            },
        );
    }
    states.retain(|key, _| deployments.contains_key(key));
    anomalies.extend(detectors.retain(now, |key| deployments.contains_key(key)));
    anomalies.sort_by(|a, b| (&a.key, a.kind, a.started_at).cmp(&(&b.key, b.kind, b.started_at)));
    let interval_millis = interval.as_millis() as i64;
    Snapshot {
        collected_at: now,
        measured_at: observation.measured_at,
        interval_millis,
        deployments,
        unmeasured,
        nodes: observation.nodes,
        failsafe: config.failsafe(interval_millis),
        anomalies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::tests::inputs;

    fn advice(made_at: UnixMillis, usable: bool) -> Advice {
        Advice {
            lead_max_demand: Some(400.0),
            demand_by_step: vec![400.0; 6],
            step_millis: STEP_MILLIS,
            lead_millis: 90_000,
            current_demand: Some(200.0),
            confidence: 1.0,
            spike_probability: None,
            trusted: usable,
            usable,
            reason: (!usable).then(|| "trust closed".to_string()),
            made_at: Some(made_at),
        }
    }

    #[test]
    fn a_forecast_counts_only_when_usable_and_fresh() {
        let i = DeploymentInputs {
            ready_pods: 4,
            ..inputs(50.0, 50.0, 50.0)
        };
        let made = 1_000 * STEP_MILLIS;
        let hooks = |a: Advice, now| forecast_hooks(&i, Some(&a), now).forecast_percent;
        // Demand over the ready pods.
        assert_eq!(hooks(advice(made, true), made + 60_000), Some(100.0));
        let oldest = made + FORECAST_MAX_AGE_BUCKETS * STEP_MILLIS;
        assert_eq!(hooks(advice(made, true), oldest), Some(100.0));
        // One millisecond past the limit: the publisher has stalled, the forecast is ignored.
        assert_eq!(hooks(advice(made, true), oldest + 1), None);
        assert_eq!(hooks(advice(made, false), made + 60_000), None);
        assert_eq!(forecast_hooks(&i, None, made).forecast_percent, None);
    }

    #[test]
    fn anomalies_never_change_what_is_served() {
        use crate::anomaly::{AnomalyConfig, AnomalyKind};
        // Calm at 50%, then a spike to 92% with replicas changing every tick.
        let observations: Vec<Observation> = (0..80)
            .map(|i| {
                let at = 1_000_000 + i * 15_000;
                let spiking = i >= 40;
                let d = crate::testing::inputs()
                    .cpu(if spiking {
                        92.0
                    } else {
                        50.0 + crate::testing::jitter(i as usize)
                    })
                    .replicas(if spiking { 4 + (i % 2) as u32 } else { 4 })
                    .at(at)
                    .build();
                Observation {
                    at,
                    measured_at: at,
                    deployments: vec![d],
                    ..Default::default()
                }
            })
            .collect();
        let silent = AnomalyConfig {
            spike_sigmas: f64::INFINITY,
            thrash_changes: u32::MAX,
            high_cpu_millis: i64::MAX,
            deviation_millis: i64::MAX,
            learned: None,
            ..AnomalyConfig::default()
        };
        let run = |mut states: TickStates| {
            let mut last: Option<Snapshot> = None;
            let mut snapshots = Vec::new();
            for o in &observations {
                let s = step(
                    o.clone(),
                    Duration::from_secs(15),
                    &DecisionConfig::default(),
                    &mut states,
                    None,
                    None,
                    last.as_ref(),
                );
                last = Some(s.clone());
                snapshots.push(s);
            }
            snapshots
        };
        let detected = run(TickStates::default());
        let quiet = run(TickStates::new(DetectorStates::new(silent)));
        let kinds: std::collections::BTreeSet<AnomalyKind> = detected
            .iter()
            .flat_map(|s| s.anomalies.iter().map(|a| a.kind))
            .collect();
        assert!(kinds.contains(&AnomalyKind::CpuSpike), "{kinds:?}");
        assert!(kinds.contains(&AnomalyKind::ScalingThrash), "{kinds:?}");
        assert!(quiet.iter().all(|s| s.anomalies.is_empty()));
        for (a, b) in detected.iter().zip(&quiet) {
            for (key, d) in &a.deployments {
                let q = &b.deployments[key];
                assert_eq!(d.smart_percent.to_bits(), q.smart_percent.to_bits());
                assert_eq!(d.raw_percent.to_bits(), q.raw_percent.to_bits());
                assert_eq!(
                    serde_json::to_value(&d.explanation).unwrap(),
                    serde_json::to_value(&q.explanation).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_deployment_that_disappears_has_its_anomalies_ended() {
        let mut states = TickStates::default();
        let key = DeploymentKey::new("shop", "api");
        let mut last = None;
        for i in 0..42 {
            let at = i * 15_000;
            let cpu = if i >= 40 { 95.0 } else { 50.0 };
            let s = step(
                Observation {
                    at,
                    measured_at: at,
                    deployments: vec![crate::testing::inputs().cpu(cpu).at(at).build()],
                    ..Default::default()
                },
                Duration::from_secs(15),
                &DecisionConfig::default(),
                &mut states,
                None,
                None,
                last.as_ref(),
            );
            last = Some(s);
        }
        let open = &last.as_ref().unwrap().anomalies;
        assert_eq!(open.len(), 1, "{open:?}");
        assert!(open[0].is_active());
        let gone = step(
            Observation {
                at: 42 * 15_000,
                measured_at: 42 * 15_000,
                ..Default::default()
            },
            Duration::from_secs(15),
            &DecisionConfig::default(),
            &mut states,
            None,
            None,
            last.as_ref(),
        );
        assert_eq!(gone.anomalies.len(), 1);
        assert_eq!(gone.anomalies[0].key, key);
        assert_eq!(gone.anomalies[0].ended_at, Some(42 * 15_000));
        assert!(states.detectors.is_empty() && states.decisions.is_empty());
    }
}
