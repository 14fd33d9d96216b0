//! Which Kubernetes Events a tick warrants on each managed Deployment, so `kubectl describe deployment` shows
//! what the autoscaler did to it: its effective target changed, its forecast trust opened or closed, or the
//! fail-safe engaged or cleared. Pure: the previous and the new snapshot in, the events out. Publishing (leader
//! only, rate-limited) is the Kubernetes adapter's (`src/k8s/events.rs`).

use crate::decision::{Freshness, freshness};
use crate::model::{DeploymentKey, ServedDeployment, Snapshot};

/// Smallest change of the effective target, in percentage points, that is an event (smaller moves are noise
/// the decision core's own deadband already holds back).
pub const TARGET_CHANGE_POINTS: f64 = 0.5;

/// An Event's type, as Kubernetes has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// Something the autoscaler did as designed.
    Normal,
    /// Something that needs a look: the metric is served in a degraded way.
    Warning,
}

/// Why the Event is raised (its `reason`, PascalCase as Kubernetes has them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventReason {
    /// The effective target moved.
    EffectiveTargetChanged,
    /// The forecast's trust gate opened: forecasts may now raise the served value.
    ForecastTrusted,
    /// The forecast's trust gate closed: the served value is reactive only.
    ForecastUntrusted,
    /// Inputs too old: the raw utilization is served instead of the adjusted value.
    FailSafeRaw,
    /// Inputs far too old: no value is served (reads get 503).
    FailSafeNoValue,
    /// Fresh inputs again: the adjusted value is served.
    FailSafeCleared,
}

impl EventReason {
    /// The `reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventReason::EffectiveTargetChanged => "EffectiveTargetChanged",
            EventReason::ForecastTrusted => "ForecastTrusted",
            EventReason::ForecastUntrusted => "ForecastUntrusted",
            EventReason::FailSafeRaw => "FailSafeRaw",
            EventReason::FailSafeNoValue => "FailSafeNoValue",
            EventReason::FailSafeCleared => "FailSafeCleared",
        }
    }

    /// The `action` string: what the autoscaler did.
    pub fn action(self) -> &'static str {
        match self {
            EventReason::EffectiveTargetChanged => "AdjustTarget",
            EventReason::ForecastTrusted | EventReason::ForecastUntrusted => "GateForecast",
            EventReason::FailSafeRaw
            | EventReason::FailSafeNoValue
            | EventReason::FailSafeCleared => "FailSafe",
        }
    }

    /// Normal or Warning.
    pub fn kind(self) -> EventKind {
        match self {
            EventReason::FailSafeRaw | EventReason::FailSafeNoValue => EventKind::Warning,
            _ => EventKind::Normal,
        }
    }
}

/// One Event on one Deployment.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentEvent {
    /// The Deployment it is about.
    pub key: DeploymentKey,
    /// Why.
    pub reason: EventReason,
    /// What happened, in words (the Event's `note`, at most 1 kB).
    pub note: String,
}

fn trusted(d: &ServedDeployment) -> Option<bool> {
    d.explanation.forecast.as_ref().map(|f| f.trusted)
}

/// The fail-safe state of a deployment's value in `snapshot`, judged at the snapshot's own time.
fn served_as(snapshot: &Snapshot, d: &ServedDeployment) -> Freshness {
    freshness(
        d.inputs.observed_at,
        snapshot.collected_at,
        &snapshot.failsafe,
    )
}

/// The Events that `next` warrants given `previous` (the snapshot before it). With no previous snapshot nothing
/// is reported: a restart is not a change. A deployment new in `next` gets none either.
pub fn changes(previous: Option<&Snapshot>, next: &Snapshot) -> Vec<DeploymentEvent> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (key, now) in &next.deployments {
        let Some(before) = previous.deployments.get(key) else {
            continue;
        };
        let mut push = |reason, note: String| {
            out.push(DeploymentEvent {
                key: key.clone(),
                reason,
                note: truncate(note, 1024),
            })
        };
        let (was, is) = (
            before.explanation.effective_target_percent,
            now.explanation.effective_target_percent,
        );
        if (was - is).abs() >= TARGET_CHANGE_POINTS {
            let why = now.explanation.reasons.join("; ");
            push(
                EventReason::EffectiveTargetChanged,
                format!(
                    "effective target {was:.1}% -> {is:.1}% (base {:.1}%, pool {} pressure {:.2}, factor {:.2}): {why}",
                    now.explanation.base_target_percent,
                    now.inputs.pool.name,
                    now.explanation.pressure.level,
                    now.explanation.factor,
                ),
            );
        }
        match (trusted(before), trusted(now)) {
            (Some(false) | None, Some(true)) => push(
                EventReason::ForecastTrusted,
                "forecast trust opened: confident forecasts may now raise the served value ahead of demand".into(),
            ),
            (Some(true), Some(false) | None) => push(
                EventReason::ForecastUntrusted,
                "forecast trust closed: the served value is reactive until recent forecasts prove accurate again"
                    .into(),
            ),
            _ => {}
        }
        let unknown = next
            .unmeasured
            .get(key)
            .map(|u| format!(" ({})", u.reason))
            .unwrap_or_default();
        match (served_as(previous, before), served_as(next, now)) {
            (a, b) if a == b => {}
            (_, Freshness::FallBackToRaw) => push(
                EventReason::FailSafeRaw,
                format!(
                    "no fresh usage for over {} s{unknown}: serving the raw utilization, unadjusted",
                    next.failsafe.raw_after_millis / 1000
                ),
            ),
            (_, Freshness::TooOld) => push(
                EventReason::FailSafeNoValue,
                format!(
                    "no fresh usage for over {} s{unknown}: no value is served, the HPA keeps its size",
                    next.failsafe.error_after_millis / 1000
                ),
            ),
            (_, Freshness::Fresh) => push(
                EventReason::FailSafeCleared,
                "fresh usage again: the adjusted value is served".into(),
            ),
        }
    }
    out
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DecisionConfig, Hooks, decide};
    use crate::model::FailSafe;

    fn served(effective_shift: f64, observed_at: i64) -> ServedDeployment {
        let inputs = crate::testing::inputs().build();
        let mut inputs = inputs;
        inputs.observed_at = observed_at;
        let (mut explanation, _) = decide(
            &inputs,
            &DecisionConfig::default(),
            None,
            Hooks::default(),
            0,
        );
        explanation.effective_target_percent += effective_shift;
        ServedDeployment {
            raw_percent: inputs.cpu_utilization_percent,
            smart_percent: explanation.served_percent,
            inputs,
            explanation,
        }
    }

    fn snapshot(at: i64, d: ServedDeployment) -> Snapshot {
        let mut s = Snapshot {
            collected_at: at,
            measured_at: at,
            interval_millis: 15_000,
            failsafe: FailSafe {
                raw_after_millis: 45_000,
                error_after_millis: 150_000,
            },
            ..Default::default()
        };
        s.deployments.insert(d.inputs.key.clone(), d);
        s
    }

    fn reasons(events: &[DeploymentEvent]) -> Vec<EventReason> {
        events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn a_target_move_past_half_a_point_is_an_event_and_a_restart_is_not() {
        let a = snapshot(0, served(0.0, 0));
        assert!(changes(None, &a).is_empty());
        let b = snapshot(15_000, served(0.4, 15_000));
        assert!(changes(Some(&a), &b).is_empty());
        let c = snapshot(30_000, served(-8.0, 30_000));
        let events = changes(Some(&b), &c);
        assert_eq!(reasons(&events), [EventReason::EffectiveTargetChanged]);
        assert!(
            events[0].note.starts_with("effective target "),
            "{}",
            events[0].note
        );
        assert_eq!(events[0].key, DeploymentKey::new("shop", "api"));
        assert_eq!(
            EventReason::EffectiveTargetChanged.kind(),
            EventKind::Normal
        );
    }

    #[test]
    fn the_fail_safe_engages_in_two_steps_and_clears_once() {
        let fresh = snapshot(0, served(0.0, 0));
        // 60 s without a new measurement: past the 45 s raw limit.
        let raw = snapshot(60_000, served(0.0, 0));
        let events = changes(Some(&fresh), &raw);
        assert_eq!(reasons(&events), [EventReason::FailSafeRaw]);
        assert_eq!(events[0].reason.kind(), EventKind::Warning);
        assert!(changes(Some(&raw), &snapshot(75_000, served(0.0, 0))).is_empty());
        let none = snapshot(160_000, served(0.0, 0));
        assert_eq!(
            reasons(&changes(Some(&raw), &none)),
            [EventReason::FailSafeNoValue]
        );
        let back = snapshot(175_000, served(0.0, 175_000));
        assert_eq!(
            reasons(&changes(Some(&none), &back)),
            [EventReason::FailSafeCleared]
        );
    }

    #[test]
    fn notes_fit_the_one_kilobyte_limit_on_a_char_boundary() {
        let s = truncate("é".repeat(800), 1024);
        assert!(s.len() <= 1024 && s.ends_with("..."));
    }
}
