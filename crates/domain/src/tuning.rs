//! Auto-tuned targets: a counterfactual replay of a deployment's own stored history through the backtester (the
//! real HPA model and the real decision core, [`backtest`]) at candidate targets around its current one, choosing
//! the one with the fewest pod-hours whose saturated pod-minutes are no worse than the current target's.
//!
//! Candidates are fed to the replay the way a tuned target reaches a live deployment: through the decision's
//! learned-target hook ([`Hooks::learned_target_percent`](crate::decision::Hooks)), the HPA keeping its base
//! target. So a candidate is bounded exactly as the decision bounds any target: within
//! `[base / max_factor, base / min_factor]` (never outside `--min-factor`/`--max-factor`), and below
//! [`TuningConfig::max_target_percent`].
//!
//! Confidence, 0-1, is the product of two things: enough history (a full week gives 1; less scales down; under a
//! day there is no number at all, only "not enough data") and stability: each recent day is judged on its own
//! (the same runs, cut into windows) and must choose the same target, within one candidate step. The tick
//! ([`crate::tick::step`]) applies a tuned target only above [`APPLY_CONFIDENCE`] and only to a
//! deployment that opts in with [`AUTO_TUNE_ANNOTATION`]; every other deployment gets it as advice in its
//! explanation. Nothing here decides when to tune: `serve`/`demo` recompute in the background, `simulate`
//! re-tunes daily on the trace so far.

use std::collections::HashMap;

use serde::Serialize;

use crate::backtest::{self, Mode, Point, Series, SimConfig};
use crate::contract::AUTO_TUNE_ANNOTATION;
use crate::decision::{DecisionConfig, Explanation, TargetSource};
use crate::model::{DeploymentInputs, DeploymentKey, UnixMillis};

const DAY_MILLIS: i64 = 86_400_000;

/// A tuned target is applied only above this confidence.
pub const APPLY_CONFIDENCE: f64 = 0.8;

/// The latest tuning of every deployment tuning has looked at, as published for the tick.
pub type Tunings = HashMap<DeploymentKey, Tuning>;

/// Tuning settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TuningConfig {
    /// Distance between candidate targets, percentage points.
    pub step_percent: f64,
    /// Candidates on each side of the current target.
    pub steps: u32,
    /// No candidate above this target, percent (the decision's saturation floor starts at 95%).
    pub max_target_percent: f64,
    /// No candidate below this target, percent.
    pub min_target_percent: f64,
    /// History that gives full confidence, days.
    pub full_history_days: f64,
    /// Less history than this is "not enough data", days.
    pub min_history_days: f64,
    /// At most this much of the newest history is replayed, days.
    pub max_history_days: f64,
    /// Length of a stability window, days.
    pub window_days: f64,
    /// At most this many of the newest windows are judged.
    pub max_windows: usize,
    /// A candidate must save at least this share of the current target's pod-hours to be chosen.
    pub min_savings: f64,
    /// Seconds from pod start to Ready assumed in the replay.
    pub startup_seconds: f64,
}

impl Default for TuningConfig {
    fn default() -> Self {
        TuningConfig {
            step_percent: 3.0,
            steps: 4,
            max_target_percent: 90.0,
            min_target_percent: 20.0,
            full_history_days: 7.0,
            min_history_days: 1.0,
            max_history_days: 7.0,
            window_days: 1.0,
            max_windows: 7,
            min_savings: 0.01,
            startup_seconds: 60.0,
        }
    }
}

/// A deployment's stored history and what the replay needs to know of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TuningInput {
    /// Start of the first bucket.
    pub start_millis: UnixMillis,
    /// Bucket length (the store's rollup resolution).
    pub step_millis: i64,
    /// Demand per bucket, in pods at 100% of their CPU request (mean utilization × pods / 100); `None` for a gap.
    pub demand_pods: Vec<Option<f64>>,
    /// The HPA's base target, percent.
    pub base_target_percent: f64,
    /// CPU request per pod, milli-cores (0: none, and then utilization and tuning mean nothing).
    pub pod_request_milli: i64,
    /// HPA minReplicas (1 when unknown).
    pub min_replicas: u32,
    /// HPA maxReplicas.
    pub max_replicas: u32,
    /// When this history ends (the tuning's time).
    pub now: UnixMillis,
}

/// What tuning concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A candidate saves pod-hours without more saturation.
    Tuned,
    /// No candidate beats the current target.
    Keep,
    /// Too little history (or no CPU request): no number.
    NotEnoughData,
}

/// One replayed target's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scored {
    /// Target replayed, percent.
    pub target_percent: f64,
    /// Saturated pod-minutes.
    pub saturated_pod_minutes: f64,
    /// Pod-hours.
    pub pod_hours: f64,
}

/// One stability window and the target it would choose on its own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowChoice {
    /// Start of the window.
    pub start: UnixMillis,
    /// Its choice, percent.
    pub target_percent: f64,
    /// Whether it agrees with the overall choice (within one step).
    pub agrees: bool,
}

/// A deployment's tuning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tuning {
    /// When it was computed.
    pub computed_at: UnixMillis,
    /// The base target it was computed for, percent (a tuning for another base is stale and not applied).
    pub base_target_percent: f64,
    /// What it concluded.
    pub verdict: Verdict,
    /// The chosen target (the current one when kept), percent; `None` when there is not enough data.
    pub target_percent: Option<f64>,
    /// Confidence, 0-1; `None` when there is not enough data.
    pub confidence: Option<f64>,
    /// History replayed, days (observed buckets only).
    pub history_days: f64,
    /// The current target's replay.
    pub current: Option<Scored>,
    /// The chosen target's replay.
    pub chosen: Option<Scored>,
    /// Every candidate's replay, lowest target first.
    pub candidates: Vec<Scored>,
    /// The stability windows, oldest first.
    pub windows: Vec<WindowChoice>,
    /// In words: "tuned from 70% to 76%: 7.0 days replayed, saturation 0.0 vs 0.0 pod-min, pod-hours −6.1%".
    pub summary: String,
}

/// A tuning as one tick shows it for one deployment: whether it is applied and why (not).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShownTuning {
    /// The tuning's verdict.
    pub verdict: Verdict,
    /// The tuned target, percent, if any.
    pub target_percent: Option<f64>,
    /// Its confidence, if any.
    pub confidence: Option<f64>,
    /// Whether the decision used it as the policy target on this tick.
    pub applied: bool,
    /// Whether the deployment opted in with the annotation.
    pub opted_in: bool,
    /// When it was computed.
    pub computed_at: UnixMillis,
    /// The words shown (also the explanation's last reason, after "auto-tune: ").
    pub text: String,
}

impl Tuning {
    /// A tuning that is simply given (the backtest's replay of a tuned run): `target` for `base`, fully confident.
    pub fn given(base: f64, target: f64, at: UnixMillis) -> Tuning {
        Tuning {
            computed_at: at,
            base_target_percent: base,
            verdict: Verdict::Tuned,
            target_percent: Some(target),
            confidence: Some(1.0),
            history_days: 0.0,
            current: None,
            chosen: None,
            candidates: Vec::new(),
            windows: Vec::new(),
            summary: format!("given target {target:.0}%"),
        }
    }

    /// Whether a deployment opts in (`smart-autoscaler.io/auto-tune: "true"`).
    pub fn opted_in(inputs: &DeploymentInputs) -> bool {
        inputs
            .annotations
            .get(AUTO_TUNE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// Why this tuning may not be applied to `inputs` now, or `None` when it may: tuned, confident enough, made
    /// for the base target in force, inside the factor bounds, and opted in.
    pub fn not_applicable(
        &self,
        inputs: &DeploymentInputs,
        config: &DecisionConfig,
    ) -> Option<String> {
        let (Verdict::Tuned, Some(target), Some(confidence)) =
            (self.verdict, self.target_percent, self.confidence)
        else {
            return Some("nothing to apply".into());
        };
        let apply = APPLY_CONFIDENCE;
        if confidence <= apply {
            return Some(format!("confidence {confidence:.2} not above {apply}"));
        }
        let base = inputs.base_target_percent;
        if (base - self.base_target_percent).abs() > 1e-9 {
            return Some(format!(
                "computed for a base target of {:.0}%, now {base:.0}%",
                self.base_target_percent
            ));
        }
        let (low, high) = bounds(base, config);
        if !(low - 1e-9..=high + 1e-9).contains(&target) {
            return Some(format!("outside the factor bounds {low:.0}-{high:.0}%"));
        }
        if !Tuning::opted_in(inputs) {
            return Some(format!(
                "not enabled: annotate {AUTO_TUNE_ANNOTATION}=\"true\""
            ));
        }
        None
    }

    /// The target to feed the decision's learned-target hook for `inputs`, when it applies.
    pub fn applicable_target(
        &self,
        inputs: &DeploymentInputs,
        config: &DecisionConfig,
    ) -> Option<f64> {
        self.not_applicable(inputs, config)
            .is_none()
            .then_some(self.target_percent)
            .flatten()
    }

    /// How a tick shows this tuning, given the decision it took (`explanation`): applied when the decision's
    /// policy target came from it; otherwise advice with the reason.
    pub fn shown(
        &self,
        inputs: &DeploymentInputs,
        config: &DecisionConfig,
        explanation: &Explanation,
    ) -> ShownTuning {
        let opted_in = Tuning::opted_in(inputs);
        let applied = explanation.policy_source == TargetSource::Learned
            && self.applicable_target(inputs, config).is_some();
        let text = match (self.verdict, applied, self.not_applicable(inputs, config)) {
            (_, true, _) => self.summary.clone(),
            (Verdict::Tuned, false, Some(why)) => {
                format!("would be {} ({why})", self.summary)
            }
            (Verdict::Tuned, false, None) => format!(
                "would be {} (not applied: the policy target comes from {:?})",
                self.summary, explanation.policy_source
            ),
            _ => self.summary.clone(),
        };
        ShownTuning {
            verdict: self.verdict,
            target_percent: self.target_percent,
            confidence: self.confidence,
            applied,
            opted_in,
            computed_at: self.computed_at,
            text,
        }
    }
}

/// The target range the decision allows for `base`: `[base / max_factor, base / min_factor]`.
pub fn bounds(base: f64, config: &DecisionConfig) -> (f64, f64) {
    (base / config.max_factor, base / config.min_factor)
}

/// The candidate targets for `base`: itself and `steps` steps each side, inside the decision's factor bounds and
/// the tuning's own range, lowest first.
pub fn candidates(base: f64, config: &TuningConfig, decision: &DecisionConfig) -> Vec<f64> {
    let (low, high) = bounds(base, decision);
    let low = low.max(config.min_target_percent);
    let high = high.min(config.max_target_percent);
    let steps = i64::from(config.steps);
    (-steps..=steps)
        .map(|k| base + k as f64 * config.step_percent)
        .filter(|t| *t == base || (low - 1e-9..=high + 1e-9).contains(t))
        .collect()
}

/// The rule: among `scored` (which contains the current target `current`), the fewest pod-hours whose saturated
/// pod-minutes are no worse than the current target's, saving at least `min_savings` of its pod-hours; else the
/// current target. Ties go to the target nearest the current one.
pub fn choose(scored: &[Scored], current: f64, min_savings: f64) -> Option<Scored> {
    let now = scored
        .iter()
        .find(|s| (s.target_percent - current).abs() < 1e-9)?;
    let best = scored
        .iter()
        .filter(|s| s.saturated_pod_minutes <= now.saturated_pod_minutes + 1e-6)
        .filter(|s| s.pod_hours <= now.pod_hours * (1.0 - min_savings))
        .min_by(|a, b| {
            a.pod_hours.total_cmp(&b.pod_hours).then(
                (a.target_percent - current)
                    .abs()
                    .total_cmp(&(b.target_percent - current).abs()),
            )
        });
    Some(*best.unwrap_or(now))
}

fn not_enough(input: &TuningInput, days: f64, why: String) -> Tuning {
    Tuning {
        computed_at: input.now,
        base_target_percent: input.base_target_percent,
        verdict: Verdict::NotEnoughData,
        target_percent: None,
        confidence: None,
        history_days: days,
        current: None,
        chosen: None,
        candidates: Vec::new(),
        windows: Vec::new(),
        summary: format!("not enough data: {why}"),
    }
}

/// The history as a replayable series: gaps take the last value seen (leading gaps are dropped), and only
/// the newest `max_days` are kept. Returns the series, its start, and the observed (non-gap) days.
fn series_of(input: &TuningInput, max_days: f64) -> (Series, UnixMillis, f64) {
    let step = input.step_millis.max(1);
    let keep = ((max_days * DAY_MILLIS as f64) / step as f64).ceil() as usize;
    let skip = input.demand_pods.len().saturating_sub(keep);
    let recent = &input.demand_pods[skip..];
    let first = recent
        .iter()
        .position(|v| v.is_some_and(f64::is_finite))
        .unwrap_or(recent.len());
    let mut last = 0.0;
    let mut observed = 0usize;
    let values = recent[first..]
        .iter()
        .map(|v| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                last = v.max(0.0);
                observed += 1;
            }
            last
        })
        .collect();
    let start = input.start_millis + (skip + first) as i64 * step;
    let days = observed as f64 * step as f64 / DAY_MILLIS as f64;
    (
        Series {
            step_millis: step,
            values,
        },
        start,
        days,
    )
}

/// The replay settings for one candidate: the real HPA at the base target, the decision core with `target` on
/// its learned-target hook, a neutral node pool (the replay has no pool), pods sized so one pod at 100% of its
/// request serves one unit of demand.
pub fn replay_config(
    input: &TuningInput,
    series: &Series,
    start: UnixMillis,
    target: f64,
    config: &TuningConfig,
    decision: &DecisionConfig,
) -> SimConfig {
    let mut sim = SimConfig::for_series(series);
    let neutral = decision.pressure.neutral_pool();
    sim.pod_capacity = 1.0;
    sim.target_percent = input.base_target_percent;
    sim.min_replicas = input.min_replicas.max(1);
    sim.max_replicas = input.max_replicas.max(sim.min_replicas);
    sim.pod_request_milli = input.pod_request_milli;
    sim.startup_seconds = config.startup_seconds;
    sim.pool_measured_percent = neutral.0;
    sim.pool_requested_percent = neutral.1;
    sim.decision = decision.clone();
    sim.decision.dry_run = false;
    sim.start_millis = start;
    // The detectors never change a served value (see the tick), and the learned one is the replay's costliest
    // part: without it a tuning is cheaper, and its outcome the same.
    sim.anomaly.learned = None;
    sim.tuned_targets = vec![(0, target)];
    sim
}

/// Saturated pod-minutes and pod-hours of a run's timeline between `from` and `to` (time since the start).
fn window_scores(timeline: &[Point], from: i64, to: i64, target: f64) -> Scored {
    let tick_minutes = backtest::SYNC_MILLIS as f64 / 60_000.0;
    let (mut saturated, mut pods) = (0.0, 0.0);
    for p in timeline.iter().filter(|p| p.t >= from && p.t < to) {
        saturated += (p.demand_pods - f64::from(p.ready)).max(0.0) * tick_minutes;
        pods += f64::from(p.replicas) * tick_minutes / 60.0;
    }
    Scored {
        target_percent: target,
        saturated_pod_minutes: saturated,
        pod_hours: pods,
    }
}

fn signed_percent(change: f64) -> String {
    let sign = if change < 0.0 { "−" } else { "+" };
    format!("{sign}{:.1}%", change.abs() * 100.0)
}

/// Tunes one deployment (see the module docs). Never panics on odd input: no request, no or too little
/// history give [`Verdict::NotEnoughData`] with the reason, and no number.
pub fn tune(input: &TuningInput, config: &TuningConfig, decision: &DecisionConfig) -> Tuning {
    let base = input.base_target_percent;
    if !(base.is_finite() && base > 0.0 && base <= 100.0) {
        return not_enough(input, 0.0, format!("no usable base target ({base})"));
    }
    if input.pod_request_milli <= 0 {
        return not_enough(
            input,
            0.0,
            "the pods have no CPU request, so utilization (and a target for it) means nothing"
                .into(),
        );
    }
    let (series, start, days) = series_of(input, config.max_history_days);
    if days < config.min_history_days || series.values.len() < 2 {
        return not_enough(
            input,
            days,
            format!(
                "{days:.2} days of history, at least {} needed",
                config.min_history_days
            ),
        );
    }
    let targets = candidates(base, config, decision);
    let runs: Vec<(f64, backtest::Run)> = targets
        .iter()
        .map(|t| {
            let sim = replay_config(input, &series, start, *t, config, decision);
            (*t, backtest::run(&series, &sim, Mode::Smart))
        })
        .collect();
    let scored: Vec<Scored> = runs
        .iter()
        .map(|(t, r)| Scored {
            target_percent: *t,
            saturated_pod_minutes: r.metrics.saturated_pod_minutes,
            pod_hours: r.metrics.pod_hours,
        })
        .collect();
    let current = scored.iter().copied().find(|s| s.target_percent == base);
    let (Some(current), Some(chosen)) = (current, choose(&scored, base, config.min_savings)) else {
        return not_enough(input, days, "no replay of the current target".into());
    };
    // Stability: the newest windows, each judged alone on the same runs.
    let window = (config.window_days * DAY_MILLIS as f64) as i64;
    let end = series.duration_millis();
    let mut windows = Vec::new();
    let mut to = end + 1;
    // The oldest window may be short by a bucket or so; one under half a window says too little to count.
    while windows.len() < config.max_windows && to - window / 2 >= 0 {
        let from = (to - window).max(0);
        let in_window: Vec<Scored> = runs
            .iter()
            .map(|(t, r)| window_scores(&r.timeline, from, to, *t))
            .collect();
        if let Some(c) = choose(&in_window, base, config.min_savings) {
            windows.push(WindowChoice {
                start: start + from,
                target_percent: c.target_percent,
                agrees: (c.target_percent - chosen.target_percent).abs()
                    <= config.step_percent + 1e-9,
            });
        }
        to = from;
    }
    windows.reverse();
    let agreement = if windows.is_empty() {
        0.0
    } else {
        windows.iter().filter(|w| w.agrees).count() as f64 / windows.len() as f64
    };
    let confidence = ((days / config.full_history_days).min(1.0) * agreement).clamp(0.0, 1.0);
    let tuned = chosen.target_percent != base;
    let pod_hours = if current.pod_hours > 0.0 {
        signed_percent(chosen.pod_hours / current.pod_hours - 1.0)
    } else {
        "n/a".into()
    };
    let summary = if tuned {
        format!(
            "tuned from {base:.0}% to {:.0}%: {days:.1} days replayed, saturation {:.1} vs {:.1} pod-min, pod-hours \
             {pod_hours}, confidence {confidence:.2}",
            chosen.target_percent, chosen.saturated_pod_minutes, current.saturated_pod_minutes
        )
    } else {
        let (lo, hi) = (
            targets.first().copied().unwrap_or(base),
            targets.last().copied().unwrap_or(base),
        );
        format!(
            "kept {base:.0}%: {days:.1} days replayed, no target in {lo:.0}-{hi:.0}% saves pod-hours without more \
             saturation (now {:.1} pod-min, {:.1} pod-hours), confidence {confidence:.2}",
            current.saturated_pod_minutes, current.pod_hours
        )
    };
    Tuning {
        computed_at: input.now,
        base_target_percent: base,
        verdict: if tuned { Verdict::Tuned } else { Verdict::Keep },
        target_percent: Some(chosen.target_percent),
        confidence: Some(confidence),
        history_days: days,
        current: Some(current),
        chosen: Some(chosen),
        candidates: scored,
        windows,
        summary,
    }
}

/// One re-tuning of a [`tuned_replay`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Retune {
    /// Time since the start of the trace.
    pub at: UnixMillis,
    /// The target in force from then on (the base target unless a confident tuning moved it), percent.
    pub applied_percent: f64,
    /// The tuning's verdict.
    pub verdict: Verdict,
    /// Its confidence, if any.
    pub confidence: Option<f64>,
    /// Its words.
    pub summary: String,
}

/// `simulate`'s tuned run: the trace replayed as a deployment opted in to auto-tuning would live it. From the end
/// of the warm-up (`sim.score_from_millis`, at least `retune_millis`) on, and then every `retune_millis`, the
/// target is tuned on the trace so far (demand as the store would hold it, no peeking ahead) and applied by the
/// tick's rule: a confident tuned target, else the base target. Returns the re-tunings and the runs, scored like
/// the other runs: [`Mode::Tuned`] (reactive), and [`Mode::PredictiveTuned`] too when `sim.forecast` is set (the
/// same targets with the forecasts learned online, as `serve` runs an opted-in deployment with forecasting on).
pub fn tuned_replay(
    series: &Series,
    sim: &SimConfig,
    config: &TuningConfig,
    retune_millis: i64,
) -> (Vec<Retune>, Vec<backtest::Run>) {
    let retune = retune_millis.max(series.step_millis.max(1));
    let config = TuningConfig {
        startup_seconds: sim.startup_seconds,
        ..config.clone()
    };
    let base = sim.target_percent;
    let capacity = sim.pod_capacity.max(1e-9);
    let mut retunes = Vec::new();
    let mut at = sim.score_from_millis.max(retune);
    while at < series.duration_millis() {
        let points = usize::try_from(at / series.step_millis.max(1)).unwrap_or(0);
        let input = TuningInput {
            start_millis: sim.start_millis,
            step_millis: series.step_millis,
            demand_pods: series.values[..points.min(series.values.len())]
                .iter()
                .map(|v| Some(v / capacity))
                .collect(),
            base_target_percent: base,
            pod_request_milli: sim.pod_request_milli,
            min_replicas: sim.min_replicas,
            max_replicas: sim.max_replicas,
            now: sim.start_millis + at,
        };
        let t = tune(&input, &config, &sim.decision);
        let applied = match (t.verdict, t.target_percent, t.confidence) {
            (Verdict::Tuned, Some(target), Some(c)) if c > APPLY_CONFIDENCE => target,
            _ => base,
        };
        retunes.push(Retune {
            at,
            applied_percent: applied,
            verdict: t.verdict,
            confidence: t.confidence,
            summary: t.summary,
        });
        at += retune;
    }
    let mut replay = sim.clone();
    replay.tuned_targets = retunes.iter().map(|r| (r.at, r.applied_percent)).collect();
    let mut runs = vec![backtest::run(series, &replay, Mode::Tuned)];
    if replay.forecast.is_some() {
        runs.push(backtest::run(series, &replay, Mode::PredictiveTuned));
    }
    (retunes, runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 300_000;

    fn input(days: f64, demand: impl Fn(usize) -> f64) -> TuningInput {
        let n = (days * DAY_MILLIS as f64 / STEP as f64) as usize;
        TuningInput {
            start_millis: 1_700_000_000_000,
            step_millis: STEP,
            demand_pods: (0..n).map(|i| Some(demand(i))).collect(),
            base_target_percent: 70.0,
            pod_request_milli: 500,
            min_replicas: 1,
            max_replicas: 100,
            now: 1_700_000_000_000 + n as i64 * STEP,
        }
    }

    /// The defaults on a shorter time scale (a "week" of two days, "days" of 12 hours), so the replays stay quick.
    fn quick() -> TuningConfig {
        TuningConfig {
            steps: 2,
            step_percent: 5.0,
            full_history_days: 2.0,
            min_history_days: 0.5,
            max_history_days: 2.0,
            window_days: 0.5,
            max_windows: 4,
            ..TuningConfig::default()
        }
    }

    /// Buckets in one of the tests' 12-hour "days".
    const PERIOD: usize = (DAY_MILLIS / 2 / STEP) as usize;

    /// Smooth, slow cycle between 4 and 8 pods' worth: never faster than new pods can start.
    fn smooth(i: usize) -> f64 {
        6.0 + 2.0 * (i as f64 / PERIOD as f64 * std::f64::consts::TAU).sin()
    }

    /// From 6 to 30 pods' worth at once for an hour every "day": any higher target saturates more.
    fn steps(i: usize) -> f64 {
        if (i % PERIOD) / 12 == 5 { 30.0 } else { 6.0 }
    }

    #[test]
    fn the_rule_picks_the_fewest_pod_hours_no_worse_in_saturation() {
        let s = |t, sat, ph| Scored {
            target_percent: t,
            saturated_pod_minutes: sat,
            pod_hours: ph,
        };
        // A lower target that saturates less and (through less churn) costs fewer pod-hours wins.
        let scored = [s(64.0, 0.0, 94.0), s(70.0, 3.2, 100.0), s(76.0, 5.0, 90.0)];
        assert_eq!(choose(&scored, 70.0, 0.01).unwrap().target_percent, 64.0);
        // More saturation is never bought with pod-hours.
        let scored = [s(64.0, 0.0, 110.0), s(70.0, 3.2, 100.0), s(76.0, 3.3, 90.0)];
        assert_eq!(choose(&scored, 70.0, 0.01).unwrap().target_percent, 70.0);
        // A saving under the minimum is not worth a change.
        let scored = [s(70.0, 0.0, 100.0), s(76.0, 0.0, 99.5)];
        assert_eq!(choose(&scored, 70.0, 0.01).unwrap().target_percent, 70.0);
        // No current target among them: no choice.
        assert!(choose(&scored, 73.0, 0.01).is_none());
    }

    #[test]
    fn a_smooth_week_is_tuned_up_confidently() {
        let t = tune(&input(2.0, smooth), &quick(), &DecisionConfig::default());
        assert_eq!(t.verdict, Verdict::Tuned, "{t:#?}");
        let chosen = t.chosen.unwrap();
        let current = t.current.unwrap();
        assert!(chosen.target_percent > 70.0, "{}", t.summary);
        assert!(chosen.saturated_pod_minutes <= current.saturated_pod_minutes + 1e-6);
        assert!(chosen.pod_hours < current.pod_hours);
        assert!(t.confidence.unwrap() > 0.8, "{t:#?}");
        assert!(
            t.summary.starts_with(&format!(
                "tuned from 70% to {:.0}%: 2.0 days replayed, saturation",
                chosen.target_percent
            )),
            "{}",
            t.summary
        );
        assert!(t.summary.contains("pod-hours −"), "{}", t.summary);
    }

    #[test]
    fn sudden_steps_keep_the_current_target() {
        let t = tune(&input(1.0, steps), &quick(), &DecisionConfig::default());
        assert_eq!(t.verdict, Verdict::Keep, "{t:#?}");
        assert_eq!(t.target_percent, Some(70.0));
        assert!(
            t.summary.starts_with("kept 70%: 1.0 days replayed"),
            "{}",
            t.summary
        );
        // Half the history of full confidence: confidence scaled down.
        assert!(t.confidence.unwrap() <= 0.5 + 1e-9, "{t:#?}");
    }

    #[test]
    fn short_history_and_no_request_are_not_enough_data() {
        let hour = input(1.0 / 24.0, smooth);
        let quick = TuningConfig {
            min_history_days: 1.0,
            ..quick()
        };
        let t = tune(&hour, &quick, &DecisionConfig::default());
        assert_eq!(t.verdict, Verdict::NotEnoughData);
        assert_eq!((t.target_percent, t.confidence), (None, None));
        assert!(
            t.summary.starts_with("not enough data: 0.04 days"),
            "{}",
            t.summary
        );
        let mut none = input(2.0, smooth);
        none.pod_request_milli = 0;
        let t = tune(&none, &quick, &DecisionConfig::default());
        assert_eq!(t.verdict, Verdict::NotEnoughData);
        assert!(t.summary.contains("no CPU request"), "{}", t.summary);
        // Only gaps: nothing observed.
        let mut gaps = input(2.0, smooth);
        gaps.demand_pods.iter_mut().for_each(|v| *v = None);
        let empty = TuningInput {
            demand_pods: vec![],
            ..hour
        };
        for i in [gaps, empty] {
            assert_eq!(
                tune(&i, &quick, &DecisionConfig::default()).verdict,
                Verdict::NotEnoughData
            );
        }
    }

    #[test]
    fn candidates_respect_the_factor_bounds() {
        let decision = DecisionConfig {
            min_factor: 0.95,
            max_factor: 1.1,
            ..DecisionConfig::default()
        };
        // 70 / 1.1 = 63.6 .. 70 / 0.95 = 73.7
        assert_eq!(candidates(70.0, &quick(), &decision), vec![65.0, 70.0]);
        let config = TuningConfig {
            step_percent: 3.0,
            ..quick()
        };
        assert_eq!(
            candidates(70.0, &config, &decision),
            vec![64.0, 67.0, 70.0, 73.0]
        );
        // The replay cannot leave them either: the smooth week would go up, but only to 73%.
        let t = tune(&input(2.0, smooth), &config, &decision);
        assert!(
            t.candidates
                .iter()
                .all(|c| (64.0..=73.0).contains(&c.target_percent))
        );
        assert!(t.target_percent.unwrap() <= 73.0, "{t:#?}");
        // And the tick will not apply one outside them.
        let tuned = Tuning::given(70.0, 80.0, 0);
        let mut i = crate::testing::inputs().build();
        i.base_target_percent = 70.0;
        i.annotations
            .insert(AUTO_TUNE_ANNOTATION.into(), "true".into());
        assert_eq!(tuned.applicable_target(&i, &decision), None);
        assert_eq!(
            tuned.applicable_target(&i, &DecisionConfig::default()),
            Some(80.0)
        );
    }

    #[test]
    fn days_that_disagree_give_low_confidence() {
        // Calm, smooth "days" alternate with "days" of sudden steps (both start at 6 pods' worth): the calm ones
        // would go higher on their own.
        let mixed = |i: usize| {
            if (i / PERIOD) % 2 == 0 {
                smooth(i)
            } else {
                steps(i)
            }
        };
        let t = tune(&input(2.0, mixed), &quick(), &DecisionConfig::default());
        assert!(t.windows.len() == 4, "{t:#?}");
        assert!(t.windows.iter().any(|w| !w.agrees), "{t:#?}");
        assert!(t.confidence.unwrap() <= 0.8, "{t:#?}");
        // So the tick never applies it.
        let mut i = crate::testing::inputs().build();
        i.base_target_percent = 70.0;
        i.annotations
            .insert(AUTO_TUNE_ANNOTATION.into(), "true".into());
        assert_eq!(t.applicable_target(&i, &DecisionConfig::default()), None);
    }

    #[test]
    fn the_tick_applies_only_opted_in_confident_tunings_and_shows_advice_otherwise() {
        use crate::decision::{Hooks, decide};
        let tuned = Tuning::given(70.0, 76.0, 0);
        let mut i = crate::testing::inputs().cpu(60.0).build();
        i.base_target_percent = 70.0;
        let config = DecisionConfig::default();
        let (e, _) = decide(&i, &config, None, Hooks::default(), 0);
        let shown = tuned.shown(&i, &config, &e);
        assert!(!shown.applied && !shown.opted_in);
        assert!(
            shown
                .text
                .contains("(not enabled: annotate smart-autoscaler.io/auto-tune=\"true\")"),
            "{}",
            shown.text
        );
        i.annotations
            .insert(AUTO_TUNE_ANNOTATION.into(), "true".into());
        let hooks = Hooks {
            learned_target_percent: tuned.applicable_target(&i, &config),
            ..Hooks::default()
        };
        assert_eq!(hooks.learned_target_percent, Some(76.0));
        let (e, _) = decide(&i, &config, None, hooks, 0);
        assert_eq!(e.policy_target_percent, 76.0);
        assert!(tuned.shown(&i, &config, &e).applied);
        // Unconfident: not applied.
        let weak = Tuning {
            confidence: Some(0.8),
            ..tuned.clone()
        };
        assert_eq!(weak.applicable_target(&i, &config), None);
        // Made for another base target: stale.
        i.base_target_percent = 60.0;
        assert_eq!(tuned.applicable_target(&i, &config), None);
    }

    #[test]
    fn a_tuned_replay_applies_confident_targets_without_peeking_and_adds_the_predictive_run() {
        // 3.5 "weeks" of the quick scale (two days each are too long for a debug test): 3 days of the smooth
        // cycle, re-tuned every 12 hours after a one-day warm-up.
        let series = Series {
            step_millis: STEP,
            values: (0..(3 * DAY_MILLIS / STEP) as usize).map(smooth).collect(),
        };
        let mut sim = SimConfig::for_series(&series);
        sim.pod_capacity = 1.0;
        sim.score_from_millis = DAY_MILLIS;
        let (retunes, runs) = tuned_replay(&series, &sim, &quick(), DAY_MILLIS / 2);
        assert_eq!(
            retunes.iter().map(|r| r.at).collect::<Vec<_>>(),
            [
                DAY_MILLIS,
                3 * DAY_MILLIS / 2,
                2 * DAY_MILLIS,
                5 * DAY_MILLIS / 2
            ]
        );
        for r in &retunes {
            let confident =
                r.verdict == Verdict::Tuned && r.confidence.is_some_and(|c| c > APPLY_CONFIDENCE);
            assert_eq!(confident, r.applied_percent != 70.0, "{r:#?}");
            // Only the trace so far was replayed.
            let days = (r.at as f64 / DAY_MILLIS as f64).min(quick().max_history_days);
            assert!(
                r.summary.contains(&format!("{days:.1} days replayed")),
                "{r:#?}"
            );
        }
        assert!(
            retunes.iter().any(|r| r.applied_percent > 70.0),
            "{retunes:#?}"
        );
        assert_eq!(
            runs.iter().map(|r| r.mode).collect::<Vec<_>>(),
            [Mode::Tuned]
        );

        // With forecasting configured, the same targets also drive a predictive run, which learns forecasts.
        sim.forecast = Some(crate::forecast::online::ForecasterConfig::default());
        let (again, runs) = tuned_replay(&series, &sim, &quick(), DAY_MILLIS / 2);
        assert_eq!(again, retunes, "the targets do not depend on forecasting");
        assert_eq!(
            runs.iter().map(|r| r.mode).collect::<Vec<_>>(),
            [Mode::Tuned, Mode::PredictiveTuned]
        );
        assert!(runs[0].forecast.is_none());
        assert!(runs[1].forecast.as_ref().is_some_and(|f| f.refits > 0));
        assert!(runs[1].metrics.pod_hours > 0.0);
    }
}
