//! The tick: the one pure step that turns what was observed of the cluster into the [`Snapshot`] the API serves.
//! `serve` (through the engine), `demo` (through the same engine) and `simulate` (the backtest) all call
//! [`step`]; none of them decides anything itself.
//!
//! ```text
//!  objects + usage rates + node measurements      (serve: k8s/ + prom/; demo: the simulated cluster)
//!        │ cluster::join                           (simulate: the trace's deployment, joined as serve would)
//!        ▼
//!  Observation ──┐
//!  forecasts  ───┤ step: per deployment forecast_hooks → decision::decide; unknown usage keeps the last value
//!  states     ───┤
//!  previous   ───┘
//!        ▼
//!  Snapshot (served values, explanations, fail-safe limits) + updated decision states
//! ```
//!
//! The join ([`cluster::join`](super::cluster::join)) stays a stage of its own, before the step: serve's source
//! records the joined observation in the store, reports per-deployment measurement health and starts history
//! bootstraps from it before anything is decided, and the backtest models a deployment's Prometheus windows as a
//! whole rather than pod by pod. Everything after the join is here, once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::decision::{self, DecisionConfig, DecisionState, Hooks};
use super::forecast::STEP_MILLIS;
use super::forecast::online::{Advice, Board};
use super::model::{
    DeploymentInputs, DeploymentKey, Observation, ServedDeployment, Snapshot, UnixMillis,
    Unmeasured, UsageUnknown,
};

/// Per-deployment decision memory carried from one tick to the next.
pub type DecisionStates = HashMap<DeploymentKey, DecisionState>;

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
/// `interval` is the time between ticks (it sets the snapshot's fail-safe limits).
///
/// A deployment whose utilization is unknown on this tick ([`Observation::unmeasured`]) gets no new value: its
/// entry in `previous` (the last snapshot published) is kept as it was, inputs' `observed_at` included, so the
/// value ages into the read-time fail-safe (raw, then a 503 that gives the reason) instead of being replaced by
/// a made-up one. Its decision state is kept too.
pub fn step(
    observation: Observation,
    interval: Duration,
    config: &DecisionConfig,
    states: &mut DecisionStates,
    forecasts: Option<&Board>,
    previous: Option<&Snapshot>,
) -> Snapshot {
    let now = observation.at;
    let mut deployments: BTreeMap<DeploymentKey, ServedDeployment> = observation
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
    let mut unmeasured = BTreeMap::new();
    for Unmeasured { key, cause, reason } in observation.unmeasured {
        let last_good = previous.and_then(|p| p.deployments.get(&key));
        if let Some(last) = last_good {
            deployments.insert(key.clone(), last.clone());
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
    let interval_millis = interval.as_millis() as i64;
    Snapshot {
        collected_at: now,
        measured_at: observation.measured_at,
        interval_millis,
        deployments,
        unmeasured,
        nodes: observation.nodes,
        failsafe: config.failsafe(interval_millis),
        // Filled by the anomaly detectors once they run in the tick (issue 16).
        anomalies: Vec::new(),
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
}
