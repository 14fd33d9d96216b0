//! The decision core: turns one deployment's inputs into the value of `smart_cpu_utilization`.
//!
//! `served = utilization × base_target / effective_target`. The HPA compares `served` with its base target, so
//! a deployment effectively runs at `effective_target`. The effective target starts from the deployment's policy
//! target (annotation, low-request policy, learned target, or the base), is scaled by node-pool pressure, and
//! then passes the safety rules: a confidence gate, a cooldown, a clamp on the adjustment factor, a saturation
//! floor, and (at read time) the staleness fail-safe. Every step is recorded in an [`Explanation`].

use serde::Serialize;

use super::model::{DeploymentInputs, FailSafe, UnixMillis};

use super::contract::TARGET_UTILIZATION_ANNOTATION;

/// Node-pool pressure settings: where pressure starts and saturates, and how far it moves the target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PressureConfig {
    /// Measured pool CPU at or below which pressure is zero, percent.
    pub low_measured_percent: f64,
    /// Measured pool CPU at or above which pressure is full, percent.
    pub high_measured_percent: f64,
    /// Requested/allocatable at or below which pressure is zero, percent.
    pub low_requested_percent: f64,
    /// Requested/allocatable at or above which pressure is full, percent.
    pub high_requested_percent: f64,
    /// Target multiplier with no pressure (raises a 70% target to about 80%).
    pub low_pressure_factor: f64,
    /// Target multiplier under full pressure (lowers a 70% target to about 56%).
    pub high_pressure_factor: f64,
}

impl PressureConfig {
    /// The measured and requested pool percentages at which the pressure factor is exactly 1: a pool that
    /// tells nothing either way. Used where no pool data exists (backtests of a single trace).
    pub fn neutral_pool(&self) -> (f64, f64) {
        let span = self.low_pressure_factor - self.high_pressure_factor;
        let level = if span.abs() < 1e-12 {
            0.0
        } else {
            ((self.low_pressure_factor - 1.0) / span).clamp(0.0, 1.0)
        };
        (
            self.low_measured_percent
                + (self.high_measured_percent - self.low_measured_percent) * level,
            self.low_requested_percent
                + (self.high_requested_percent - self.low_requested_percent) * level,
        )
    }
}

impl Default for PressureConfig {
    fn default() -> Self {
        PressureConfig {
            low_measured_percent: 40.0,
            high_measured_percent: 80.0,
            low_requested_percent: 50.0,
            high_requested_percent: 90.0,
            low_pressure_factor: 1.15,
            high_pressure_factor: 0.8,
        }
    }
}

/// Targets for pods with tiny CPU requests, whose utilization swings wildly with a few millicores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LowRequestConfig {
    /// Below this total pod request (milli-cores) the tiny target applies.
    pub tiny_below_milli: i64,
    /// Target for tiny requests, percent (85-90).
    pub tiny_target_percent: f64,
    /// Below this total pod request (milli-cores) the small target applies.
    pub small_below_milli: i64,
    /// Target for small requests, percent (75-85).
    pub small_target_percent: f64,
}

impl Default for LowRequestConfig {
    fn default() -> Self {
        LowRequestConfig {
            tiny_below_milli: 50,
            tiny_target_percent: 88.0,
            small_below_milli: 100,
            small_target_percent: 80.0,
        }
    }
}

/// All decision settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionConfig {
    /// Node-pool pressure.
    pub pressure: PressureConfig,
    /// Low-request policy.
    pub low_request: LowRequestConfig,
    /// Below this confidence the effective target is held.
    pub min_confidence: f64,
    /// Minimum time between effective-target changes, milliseconds.
    pub cooldown_millis: i64,
    /// Changes smaller than this many percentage points are not worth a change.
    pub min_change_percent: f64,
    /// Smallest allowed `base / effective` factor.
    pub min_factor: f64,
    /// Largest allowed `base / effective` factor.
    pub max_factor: f64,
    /// At or above this raw utilization pods count as saturated and the served value never drops below raw.
    pub saturation_percent: f64,
    /// Serve the raw value but record what would have been served.
    pub dry_run: bool,
    /// Inputs older than this many collection intervals are served raw.
    pub raw_after_intervals: i64,
    /// Inputs older than this many collection intervals are not served at all.
    pub error_after_intervals: i64,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        DecisionConfig {
            pressure: PressureConfig::default(),
            low_request: LowRequestConfig::default(),
            min_confidence: 0.6,
            cooldown_millis: 5 * 60 * 1000,
            min_change_percent: 2.0,
            min_factor: 0.5,
            max_factor: 2.0,
            saturation_percent: 95.0,
            dry_run: false,
            raw_after_intervals: 3,
            error_after_intervals: 10,
        }
    }
}

/// What the decision remembers about a deployment between ticks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct DecisionState {
    /// The effective target in force.
    pub effective_target_percent: f64,
    /// When it last changed.
    pub changed_at: UnixMillis,
}

/// Inputs from later stages (learning, forecasting) that the decision takes into account when present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Hooks {
    /// A learned target for this deployment, percent, used when no annotation sets one.
    pub learned_target_percent: Option<f64>,
    /// Forecast utilization over the lead time, percent, when the forecast is trusted; the served value is
    /// raised to its adjusted value, never lowered.
    pub forecast_percent: Option<f64>,
}

/// Where the policy target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetSource {
    /// The `smart-autoscaler.io/target-utilization` annotation.
    Annotation,
    /// The low-request policy for pods under 50m.
    TinyRequest,
    /// The low-request policy for pods of 50-100m.
    SmallRequest,
    /// A learned target.
    Learned,
    /// The HPA's base target.
    Base,
}

/// Node-pool pressure as the decision saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PressureExplanation {
    /// Measured pool CPU, percent; `None` when no node of the pool has a usable measurement, and then the
    /// pressure level comes from requests alone.
    pub measured_percent: Option<f64>,
    /// Requested/allocatable, percent.
    pub requested_percent: f64,
    /// Pressure level from 0 (idle) to 1 (full).
    pub level: f64,
    /// Multiplier applied to the policy target.
    pub factor: f64,
}

/// Why a served value is what it is.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// Measured utilization, percent.
    pub raw_percent: f64,
    /// The HPA's base target, percent.
    pub base_target_percent: f64,
    /// The deployment's own target before pressure, percent.
    pub policy_target_percent: f64,
    /// Where the policy target came from.
    pub policy_source: TargetSource,
    /// Node-pool pressure.
    pub pressure: PressureExplanation,
    /// The target the inputs call for, before the safety rules, percent.
    pub candidate_target_percent: f64,
    /// The target in force after the safety rules, percent.
    pub effective_target_percent: f64,
    /// Confidence in this tick's inputs, 0-1.
    pub confidence: f64,
    /// Why the effective target was held at its previous value, if it was.
    pub held: Option<String>,
    /// `base / effective` after clamping.
    pub factor: f64,
    /// Whether the factor was clamped.
    pub clamped: bool,
    /// Forecast utilization considered, percent, if any.
    pub forecast_percent: Option<f64>,
    /// Whether the forecast raised the served value.
    pub forecast_applied: bool,
    /// The forecast as the forecaster gave it (confidence, trust, why it was not used), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<super::forecast::online::Advice>,
    /// The auto-tuned target for this deployment and whether it is applied (its words are also the last
    /// reason), when tuning has looked at it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tuning: Option<super::tuning::ShownTuning>,
    /// Whether the saturation floor raised the served value to raw.
    pub saturation_floor: bool,
    /// In dry-run mode, the value that would have been served.
    pub would_serve_percent: Option<f64>,
    /// The value served, percent.
    pub served_percent: f64,
    /// Human-readable reasons, in the order they were applied.
    pub reasons: Vec<String>,
}

fn ramp(value: f64, low: f64, high: f64) -> f64 {
    if high <= low {
        return if value >= high { 1.0 } else { 0.0 };
    }
    ((value - low) / (high - low)).clamp(0.0, 1.0)
}

fn finite_or(value: f64, fallback: f64) -> f64 {
    if value.is_finite() { value } else { fallback }
}

/// The policy target: annotation first, then the low-request policy, then a learned target, then the base.
pub fn policy_target(
    inputs: &DeploymentInputs,
    config: &LowRequestConfig,
    learned: Option<f64>,
    base: f64,
) -> (f64, TargetSource) {
    let annotated = inputs
        .annotations
        .get(TARGET_UTILIZATION_ANNOTATION)
        .and_then(|v| v.trim().trim_end_matches('%').parse::<f64>().ok())
        .filter(|v| v.is_finite() && (1.0..=100.0).contains(v));
    if let Some(t) = annotated {
        return (t, TargetSource::Annotation);
    }
    let request = inputs.pod_cpu_request_milli;
    if request > 0 && request < config.tiny_below_milli {
        return (config.tiny_target_percent, TargetSource::TinyRequest);
    }
    if request > 0 && request < config.small_below_milli {
        return (config.small_target_percent, TargetSource::SmallRequest);
    }
    if let Some(t) = learned.filter(|t| t.is_finite() && (1.0..=100.0).contains(t)) {
        return (t, TargetSource::Learned);
    }
    (base, TargetSource::Base)
}

/// Pressure on the deployment's node pool and the target multiplier it implies.
pub fn pressure(inputs: &DeploymentInputs, config: &PressureConfig) -> PressureExplanation {
    // Unknown is not idle: an unmeasured pool adds no measured pressure, and the requests alone may tighten
    // the target but never relax it (a factor above 1 would shed pods on the strength of missing data).
    let measured = inputs.pool.measured_cpu_percent.filter(|m| m.is_finite());
    let requested = finite_or(inputs.pool.requested_cpu_percent, 0.0);
    let level = measured
        .map_or(0.0, |m| {
            ramp(m, config.low_measured_percent, config.high_measured_percent)
        })
        .max(ramp(
            requested,
            config.low_requested_percent,
            config.high_requested_percent,
        ));
    let factor = config.low_pressure_factor
        + (config.high_pressure_factor - config.low_pressure_factor) * level;
    let factor = if measured.is_some() {
        factor
    } else {
        factor.min(1.0)
    };
    PressureExplanation {
        measured_percent: measured,
        requested_percent: requested,
        level,
        factor,
    }
}

/// Confidence in this tick's inputs: recent pod starts halve it, a mostly-unready deployment halves it again,
/// and no ready pod at all leaves nothing to trust.
pub fn confidence(inputs: &DeploymentInputs) -> f64 {
    if inputs.ready_pods == 0 {
        return 0.0;
    }
    let mut c: f64 = 1.0;
    if inputs.recent_pod_starts > 0 {
        c *= 0.5;
    }
    if inputs.replicas > 0 && (inputs.ready_pods as f64) < inputs.replicas as f64 / 2.0 {
        c *= 0.5;
    }
    c
}

/// Computes the served value for one deployment on one tick, and the state to remember for the next.
pub fn decide(
    inputs: &DeploymentInputs,
    config: &DecisionConfig,
    previous: Option<&DecisionState>,
    hooks: Hooks,
    now: UnixMillis,
) -> (Explanation, DecisionState) {
    let mut reasons = Vec::new();
    let raw = finite_or(inputs.cpu_utilization_percent, 0.0).max(0.0);
    let base = if inputs.base_target_percent.is_finite() && inputs.base_target_percent > 0.0 {
        inputs.base_target_percent
    } else {
        reasons.push("base target missing or invalid: using 70%".to_string());
        70.0
    };

    let (policy, source) = policy_target(
        inputs,
        &config.low_request,
        hooks.learned_target_percent,
        base,
    );
    if source != TargetSource::Base {
        reasons.push(format!("policy target {policy:.1}% from {source:?}"));
    }
    let pressure = pressure(inputs, &config.pressure);
    let candidate = (policy * pressure.factor).clamp(5.0, 100.0);
    let measured = match pressure.measured_percent {
        Some(m) => format!("measured {m:.0}%"),
        None => "measured: unknown".to_string(),
    };
    reasons.push(format!(
        "pool {} pressure {:.2} ({measured}, requested {:.0}%): target x{:.2}",
        inputs.pool.name, pressure.level, pressure.requested_percent, pressure.factor
    ));

    // Clamp the factor the candidate implies, so no target can scale the served value beyond the bounds.
    let (min_target, max_target) = (base / config.max_factor, base / config.min_factor);
    let candidate_clamped = candidate.clamp(min_target, max_target);
    let clamped = (candidate_clamped - candidate).abs() > 1e-9;
    if clamped {
        reasons.push(format!(
            "target {candidate:.1}% clamped to {candidate_clamped:.1}% (factor bounds {}-{})",
            config.min_factor, config.max_factor
        ));
    }

    let confidence = confidence(inputs);
    let mut held = None;
    let effective = match previous {
        Some(prev) if confidence < config.min_confidence => {
            held = Some(format!(
                "confidence {confidence:.2} below {:.2} (recent pod starts {}, ready {}/{})",
                config.min_confidence, inputs.recent_pod_starts, inputs.ready_pods, inputs.replicas
            ));
            prev.effective_target_percent
        }
        Some(prev)
            if (candidate_clamped - prev.effective_target_percent).abs()
                < config.min_change_percent =>
        {
            prev.effective_target_percent
        }
        Some(prev) if now - prev.changed_at < config.cooldown_millis => {
            held = Some(format!(
                "cooldown: target changed {}s ago, minimum {}s",
                (now - prev.changed_at) / 1000,
                config.cooldown_millis / 1000
            ));
            prev.effective_target_percent
        }
        None if confidence < config.min_confidence => {
            held = Some(format!(
                "confidence {confidence:.2} below {:.2}: starting at the base target",
                config.min_confidence
            ));
            base
        }
        _ => candidate_clamped,
    };
    // The held value is re-clamped in case the base target changed under it.
    let effective = effective.clamp(min_target, max_target);
    let state = match previous {
        Some(prev) if (prev.effective_target_percent - effective).abs() < 1e-9 => *prev,
        _ => DecisionState {
            effective_target_percent: effective,
            changed_at: now,
        },
    };
    if let Some(h) = &held {
        reasons.push(format!("effective target held at {effective:.1}%: {h}"));
    }

    let factor = base / effective;
    let mut served = raw * factor;
    reasons.push(format!(
        "served = {raw:.1}% x {base:.1}/{effective:.1} = {served:.1}%"
    ));

    let forecast = hooks
        .forecast_percent
        .filter(|f| f.is_finite() && *f >= 0.0);
    let mut forecast_applied = false;
    if let Some(f) = forecast {
        let adjusted = f * factor;
        if adjusted > served {
            reasons.push(format!(
                "forecast {f:.1}% raises served value to {adjusted:.1}%"
            ));
            served = adjusted;
            forecast_applied = true;
        }
    }

    let saturation_floor = raw >= config.saturation_percent && served < raw;
    if saturation_floor {
        reasons.push(format!(
            "pods saturated ({raw:.1}% >= {:.0}%): served value floored at raw",
            config.saturation_percent
        ));
        served = raw;
    }

    let mut would_serve = None;
    if config.dry_run {
        reasons.push(format!(
            "dry run: would serve {served:.1}%, serving raw {raw:.1}%"
        ));
        would_serve = Some(served);
        served = raw;
    }

    let explanation = Explanation {
        raw_percent: raw,
        base_target_percent: base,
        policy_target_percent: policy,
        policy_source: source,
        pressure,
        candidate_target_percent: candidate,
        effective_target_percent: effective,
        confidence,
        held,
        factor,
        clamped,
        forecast_percent: forecast,
        forecast_applied,
        forecast: None,
        tuning: None,
        saturation_floor,
        would_serve_percent: would_serve,
        served_percent: served,
        reasons,
    };
    (explanation, state)
}

/// What a metric read may serve, given how old the inputs are.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Freshness {
    /// Fresh: serve the adjusted value.
    Fresh,
    /// Stale: serve the raw utilization.
    FallBackToRaw,
    /// Too old to serve anything.
    TooOld,
}

impl DecisionConfig {
    /// The read-time staleness limits for a collection interval.
    pub fn failsafe(&self, interval_millis: i64) -> FailSafe {
        FailSafe {
            raw_after_millis: interval_millis * self.raw_after_intervals,
            error_after_millis: interval_millis * self.error_after_intervals,
        }
    }
}

/// The staleness fail-safe, applied at read time: inputs older than the raw limit fall back to the raw
/// utilization, older than the error limit are refused.
pub fn freshness(observed_at: UnixMillis, now: UnixMillis, limits: &FailSafe) -> Freshness {
    let age = (now - observed_at).max(0);
    if age > limits.error_after_millis {
        Freshness::TooOld
    } else if age > limits.raw_after_millis {
        Freshness::FallBackToRaw
    } else {
        Freshness::Fresh
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `shop/api` at `raw`% on a pool at `measured`% measured and `requested`% requested CPU.
    pub(crate) fn inputs(raw: f64, measured: f64, requested: f64) -> DeploymentInputs {
        crate::testing::inputs()
            .cpu(raw)
            .pool("general", Some(measured), requested)
            .build()
    }

    fn run(i: &DeploymentInputs) -> Explanation {
        decide(i, &DecisionConfig::default(), None, Hooks::default(), 0).0
    }

    #[test]
    fn high_pressure_lowers_the_target_and_raises_the_value() {
        let e = run(&inputs(60.0, 90.0, 60.0));
        assert!((e.pressure.level - 1.0).abs() < 1e-9);
        assert!((50.0..=60.0).contains(&e.effective_target_percent), "{e:?}");
        assert!(e.served_percent > 60.0);
        // Requested pressure alone does it too.
        let e = run(&inputs(60.0, 10.0, 95.0));
        assert!((50.0..=60.0).contains(&e.effective_target_percent), "{e:?}");
    }

    #[test]
    fn low_pressure_raises_the_target_and_lowers_the_value() {
        let e = run(&inputs(60.0, 20.0, 30.0));
        assert_eq!(e.pressure.level, 0.0);
        assert!((75.0..=85.0).contains(&e.effective_target_percent), "{e:?}");
        assert!(e.served_percent < 60.0);
    }

    #[test]
    fn neutral_pool_leaves_the_target_alone() {
        let config = DecisionConfig::default();
        let (m, r) = config.pressure.neutral_pool();
        let e = decide(&inputs(60.0, m, r), &config, None, Hooks::default(), 0).0;
        assert!((e.pressure.factor - 1.0).abs() < 1e-9, "{:?}", e.pressure);
        assert!((e.effective_target_percent - 70.0).abs() < 1e-9);
    }

    #[test]
    fn an_unmeasured_pool_never_relaxes_the_target() {
        let mut i = inputs(60.0, 0.0, 30.0);
        i.pool.measured_cpu_percent = None;
        let e = run(&i);
        assert_eq!(e.pressure.measured_percent, None);
        assert_eq!(e.pressure.factor, 1.0, "{:?}", e.pressure);
        assert!((e.effective_target_percent - 70.0).abs() < 1e-9);
        assert!(e.reasons.iter().any(|r| r.contains("measured: unknown")));
        // Requests alone still tighten it.
        i.pool.requested_cpu_percent = 95.0;
        let e = run(&i);
        assert!(e.pressure.factor < 1.0 && e.effective_target_percent < 70.0);
    }

    #[test]
    fn pressure_is_monotonic_in_measured_load() {
        let mut last = f64::INFINITY;
        for m in (0..=100).step_by(5) {
            let t = run(&inputs(50.0, m as f64, 0.0)).effective_target_percent;
            assert!(t <= last + 1e-9, "target rose at measured {m}");
            last = t;
        }
    }

    #[test]
    fn pressure_thresholds_are_configurable() {
        let mut config = DecisionConfig::default();
        config.pressure.high_measured_percent = 50.0;
        config.pressure.low_measured_percent = 45.0;
        let e = decide(&inputs(50.0, 50.0, 0.0), &config, None, Hooks::default(), 0).0;
        assert_eq!(e.pressure.level, 1.0);
    }

    #[test]
    fn low_request_policy() {
        let mut i = inputs(50.0, 60.0, 70.0);
        i.pod_cpu_request_milli = 25;
        let e = run(&i);
        assert_eq!(e.policy_source, TargetSource::TinyRequest);
        assert!((85.0..=90.0).contains(&e.policy_target_percent));
        i.pod_cpu_request_milli = 75;
        let e = run(&i);
        assert_eq!(e.policy_source, TargetSource::SmallRequest);
        assert!((75.0..=85.0).contains(&e.policy_target_percent));
        i.pod_cpu_request_milli = 250;
        assert_eq!(run(&i).policy_source, TargetSource::Base);
    }

    #[test]
    fn annotation_wins_over_request_policy() {
        let mut i = inputs(50.0, 60.0, 70.0);
        i.pod_cpu_request_milli = 25;
        i.annotations
            .insert(TARGET_UTILIZATION_ANNOTATION.into(), "90".into());
        let e = run(&i);
        assert_eq!(e.policy_source, TargetSource::Annotation);
        assert_eq!(e.policy_target_percent, 90.0);
        i.annotations
            .insert(TARGET_UTILIZATION_ANNOTATION.into(), "banana".into());
        assert_eq!(run(&i).policy_source, TargetSource::TinyRequest);
    }

    #[test]
    fn learned_target_is_used_when_nothing_else_applies() {
        let hooks = Hooks {
            learned_target_percent: Some(65.0),
            ..Default::default()
        };
        let e = decide(
            &inputs(50.0, 60.0, 70.0),
            &DecisionConfig::default(),
            None,
            hooks,
            0,
        )
        .0;
        assert_eq!(e.policy_source, TargetSource::Learned);
        assert_eq!(e.policy_target_percent, 65.0);
    }

    #[test]
    fn recent_starts_halve_confidence_and_hold_the_target() {
        let config = DecisionConfig::default();
        let prev = DecisionState {
            effective_target_percent: 70.0,
            changed_at: -3_600_000,
        };
        let mut i = inputs(60.0, 95.0, 95.0);
        i.recent_pod_starts = 2;
        let (e, state) = decide(&i, &config, Some(&prev), Hooks::default(), 0);
        assert_eq!(e.confidence, 0.5);
        assert!(e.held.as_deref().unwrap().contains("confidence"));
        assert_eq!(e.effective_target_percent, 70.0);
        assert_eq!(state, prev);
    }

    #[test]
    fn cooldown_holds_changes() {
        let config = DecisionConfig::default();
        let prev = DecisionState {
            effective_target_percent: 80.0,
            changed_at: 0,
        };
        let i = inputs(60.0, 95.0, 95.0);
        let (e, _) = decide(&i, &config, Some(&prev), Hooks::default(), 60_000);
        assert!(e.held.as_deref().unwrap().contains("cooldown"));
        assert_eq!(e.effective_target_percent, 80.0);
        let (e, state) = decide(&i, &config, Some(&prev), Hooks::default(), 5 * 60_000);
        assert!(e.held.is_none());
        assert!(e.effective_target_percent < 60.0);
        assert_eq!(state.changed_at, 5 * 60_000);
    }

    #[test]
    fn small_changes_are_ignored() {
        let prev = DecisionState {
            effective_target_percent: 80.0,
            changed_at: 0,
        };
        let i = inputs(60.0, 20.0, 30.0); // candidate 80.5
        let (e, state) = decide(
            &i,
            &DecisionConfig::default(),
            Some(&prev),
            Hooks::default(),
            3_600_000,
        );
        assert_eq!(e.effective_target_percent, 80.0);
        assert_eq!(state.changed_at, 0);
    }

    #[test]
    fn factor_is_clamped() {
        let config = DecisionConfig {
            min_factor: 0.9,
            max_factor: 1.1,
            ..Default::default()
        };
        let e = decide(
            &inputs(60.0, 99.0, 99.0),
            &config,
            None,
            Hooks::default(),
            0,
        )
        .0;
        assert!(e.clamped);
        assert!((e.factor - 1.1).abs() < 1e-9, "{}", e.factor);
    }

    #[test]
    fn saturation_floors_at_raw() {
        let e = run(&inputs(99.0, 10.0, 10.0));
        assert!(e.saturation_floor);
        assert_eq!(e.served_percent, 99.0);
    }

    #[test]
    fn forecast_raises_but_never_lowers() {
        let i = inputs(50.0, 60.0, 70.0);
        let up = Hooks {
            forecast_percent: Some(90.0),
            ..Default::default()
        };
        let down = Hooks {
            forecast_percent: Some(10.0),
            ..Default::default()
        };
        let plain = run(&i).served_percent;
        let raised = decide(&i, &DecisionConfig::default(), None, up, 0).0;
        assert!(raised.forecast_applied && raised.served_percent > plain);
        let lowered = decide(&i, &DecisionConfig::default(), None, down, 0).0;
        assert!(!lowered.forecast_applied);
        assert_eq!(lowered.served_percent, plain);
    }

    #[test]
    fn dry_run_serves_raw_and_records_the_rest() {
        let config = DecisionConfig {
            dry_run: true,
            ..Default::default()
        };
        let e = decide(
            &inputs(60.0, 95.0, 95.0),
            &config,
            None,
            Hooks::default(),
            0,
        )
        .0;
        assert_eq!(e.served_percent, 60.0);
        assert!(e.would_serve_percent.unwrap() > 60.0);
    }

    #[test]
    fn no_ready_pods_means_no_confidence() {
        let mut i = inputs(60.0, 95.0, 95.0);
        i.ready_pods = 0;
        let e = run(&i);
        assert_eq!(e.confidence, 0.0);
        assert_eq!(e.effective_target_percent, 70.0);
    }

    #[test]
    fn garbage_inputs_stay_finite() {
        let mut i = inputs(f64::NAN, f64::INFINITY, f64::NAN);
        i.base_target_percent = 0.0;
        let e = run(&i);
        assert!(e.served_percent.is_finite());
        assert_eq!(e.raw_percent, 0.0);
    }

    #[test]
    fn staleness_fail_safe() {
        let c = DecisionConfig::default().failsafe(60_000);
        assert_eq!(freshness(0, 60_000, &c), Freshness::Fresh);
        assert_eq!(freshness(0, 180_001, &c), Freshness::FallBackToRaw);
        assert_eq!(freshness(0, 600_001, &c), Freshness::TooOld);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn served_is_finite_clamped_and_floored(
                raw in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -10.0f64..500.0],
                measured in prop_oneof![Just(f64::NAN), -50.0f64..200.0],
                requested in prop_oneof![Just(f64::INFINITY), -50.0f64..300.0],
                base in prop_oneof![Just(0.0), Just(f64::NAN), 1.0f64..100.0],
                request in -10i64..5000,
                ready in 0u32..50,
                starts in 0u32..5,
                previous in proptest::option::of((1.0f64..100.0, -1_000_000i64..1_000_000)),
                forecast in proptest::option::of(-10.0f64..300.0),
                now in -1_000_000i64..1_000_000,
            ) {
                let mut i = inputs(raw, measured, requested);
                i.base_target_percent = base;
                i.pod_cpu_request_milli = request;
                i.ready_pods = ready;
                i.replicas = ready.max(1);
                i.recent_pod_starts = starts;
                let prev = previous.map(|(t, at)| DecisionState { effective_target_percent: t, changed_at: at });
                let config = DecisionConfig::default();
                let hooks = Hooks { forecast_percent: forecast, ..Default::default() };
                let (e, state) = decide(&i, &config, prev.as_ref(), hooks, now);
                prop_assert!(e.served_percent.is_finite());
                prop_assert!(state.effective_target_percent.is_finite());
                prop_assert!(e.factor >= config.min_factor - 1e-9 && e.factor <= config.max_factor + 1e-9);
                if e.raw_percent >= config.saturation_percent {
                    prop_assert!(e.served_percent >= e.raw_percent);
                }
                if forecast.is_none() && e.raw_percent < config.saturation_percent {
                    let ratio = if e.raw_percent > 0.0 { e.served_percent / e.raw_percent } else { 1.0 };
                    prop_assert!(e.raw_percent == 0.0 || (ratio >= config.min_factor - 1e-9 && ratio <= config.max_factor + 1e-9));
                }
            }
        }
    }
}
