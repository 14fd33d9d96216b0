//! A model of the native HPA v2 controller (kube-controller-manager), faithful to the parts that decide replica
//! counts: the per-metric proposals for Resource `Utilization` and External `Value`/`AverageValue` targets with
//! tolerance and unready/missing-pod handling, then normalization (stabilization windows and rate-limit
//! policies, with or without `spec.behavior`). See `shared/reference/hpa-algorithm.md`.

use std::collections::VecDeque;

use super::model::UnixMillis;

/// One rate-limit policy of a scaling direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// At most this many pods per period.
    Pods { value: u32, period_millis: i64 },
    /// At most this percentage of the replicas at the period's start per period.
    Percent { value: u32, period_millis: i64 },
}

/// How the policies of a direction combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectPolicy {
    /// The policy that allows the biggest change.
    Max,
    /// The policy that allows the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// Scaling rules of one direction (`spec.behavior.scaleUp` or `scaleDown`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingRules {
    /// Stabilization window.
    pub stabilization_millis: i64,
    /// How the policies combine.
    pub select: SelectPolicy,
    /// The policies.
    pub policies: Vec<Policy>,
}

/// `spec.behavior`, or its absence (the legacy normalization path).
#[derive(Debug, Clone, PartialEq)]
pub enum Behavior {
    /// No `behavior` field: 5-minute downscale stabilization, scale-up limited to max(2×current, 4).
    Legacy {
        /// Downscale stabilization window.
        downscale_stabilization_millis: i64,
    },
    /// Explicit behavior (API defaults fill what is unset).
    Explicit {
        /// Scale-up rules.
        up: ScalingRules,
        /// Scale-down rules.
        down: ScalingRules,
    },
}

impl Behavior {
    /// The API server's defaults for an HPA with a `behavior` field: scale up by max(4 pods, 100%) per 15 s with
    /// no window; scale down by 100% per 15 s after a 5-minute stabilization window.
    pub fn defaults() -> Self {
        Behavior::Explicit {
            up: ScalingRules {
                stabilization_millis: 0,
                select: SelectPolicy::Max,
                policies: vec![
                    Policy::Pods {
                        value: 4,
                        period_millis: 15_000,
                    },
                    Policy::Percent {
                        value: 100,
                        period_millis: 15_000,
                    },
                ],
            },
            down: ScalingRules {
                stabilization_millis: 300_000,
                select: SelectPolicy::Max,
                policies: vec![Policy::Percent {
                    value: 100,
                    period_millis: 15_000,
                }],
            },
        }
    }

    /// The path taken by an HPA without `behavior`.
    pub fn legacy() -> Self {
        Behavior::Legacy {
            downscale_stabilization_millis: 300_000,
        }
    }
}

/// The HPA spec fields the model needs.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaSpec {
    /// `minReplicas` (defaults to 1).
    pub min_replicas: u32,
    /// `maxReplicas`.
    pub max_replicas: u32,
    /// Tolerance (cluster default 0.1).
    pub tolerance: f64,
    /// Normalization behavior.
    pub behavior: Behavior,
}

/// Pods as the Resource-metric path classifies them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PodCounts {
    /// Ready pods with samples.
    pub ready: u32,
    /// Unready pods (pending, or within CPU initialization and not ready).
    pub unready: u32,
    /// Pods without samples.
    pub missing: u32,
}

fn within(ratio: f64, tolerance: f64) -> bool {
    (1.0 - tolerance..=1.0 + tolerance).contains(&ratio)
}

/// Proposal for a Resource `Utilization` target. `utilization` is the percentage over the ready pods' samples
/// (the controller floors it to an integer).
pub fn resource_utilization_proposal(
    utilization: f64,
    target: f64,
    pods: PodCounts,
    current: u32,
    tolerance: f64,
) -> u32 {
    if pods.ready == 0 {
        return current;
    }
    let util = utilization.max(0.0).floor();
    let ratio = util / target;
    let scale_up = ratio > 1.0;
    if pods.missing == 0 && !(pods.unready > 0 && scale_up) {
        if within(ratio, tolerance) {
            return current;
        }
        return (ratio * pods.ready as f64).ceil() as u32;
    }
    // Fill in missing pods (100% on scale-down, 0 on scale-up) and unready pods (0, on scale-up only).
    let mut total = util * pods.ready as f64;
    let mut count = pods.ready;
    if pods.missing > 0 {
        total += if scale_up {
            0.0
        } else {
            target.max(100.0) * pods.missing as f64
        };
        count += pods.missing;
    }
    if scale_up && pods.unready > 0 {
        count += pods.unready;
    }
    let new_ratio = total / count as f64 / target;
    let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if within(new_ratio, tolerance) || flipped {
        return current;
    }
    let proposal = (new_ratio * count as f64).ceil() as u32;
    if (new_ratio > 1.0 && proposal < current) || (new_ratio < 1.0 && proposal > current) {
        return current;
    }
    proposal
}

/// Proposal for an External `Value` target: `usage` is the sum of the items, `ready` the ready pods.
pub fn external_value_proposal(
    usage: f64,
    target: f64,
    ready: u32,
    current: u32,
    tolerance: f64,
) -> u32 {
    let ratio = usage / target;
    if current == 0 {
        return ratio.ceil().max(0.0) as u32;
    }
    if within(ratio, tolerance) {
        return current;
    }
    (ratio * ready as f64).ceil().max(0.0) as u32
}

/// Proposal for an External `AverageValue` target, using `status.replicas`.
pub fn external_average_proposal(
    usage: f64,
    target_average: f64,
    status_replicas: u32,
    tolerance: f64,
) -> u32 {
    let ratio = usage / (target_average * status_replicas.max(1) as f64);
    if within(ratio, tolerance) {
        return status_replicas;
    }
    (usage / target_average).ceil().max(0.0) as u32
}

/// The controller's memory for one HPA: recommendations and scale events.
#[derive(Debug, Clone, Default)]
pub struct HpaState {
    recommendations: VecDeque<(UnixMillis, u32)>,
    events: VecDeque<(UnixMillis, i64)>,
}

impl HpaState {
    /// The memory of an HPA that has recommended `replicas` up to `now`: its downscale stabilization window
    /// holds that count, as on a controller that has been running rather than one just created.
    pub fn settled(replicas: u32, now: UnixMillis) -> Self {
        HpaState {
            recommendations: VecDeque::from([(now, replicas)]),
            events: VecDeque::new(),
        }
    }

    fn forget_before(&mut self, horizon: UnixMillis) {
        while self
            .recommendations
            .front()
            .is_some_and(|(t, _)| *t < horizon)
        {
            self.recommendations.pop_front();
        }
        while self.events.front().is_some_and(|(t, _)| *t < horizon) {
            self.events.pop_front();
        }
    }

    fn changed_within(&self, now: UnixMillis, period: i64, up: bool) -> u32 {
        self.events
            .iter()
            .filter(|(t, d)| *t > now - period && (if up { *d > 0 } else { *d < 0 }))
            .map(|(_, d)| d.unsigned_abs() as u32)
            .sum()
    }
}

/// Turns a proposal into the replica count the controller writes: stabilization, rate limits, min/max.
pub fn normalize(
    spec: &HpaSpec,
    state: &mut HpaState,
    now: UnixMillis,
    current: u32,
    proposal: u32,
) -> u32 {
    state.forget_before(now - 3_600_000);
    let desired = match &spec.behavior {
        Behavior::Legacy {
            downscale_stabilization_millis,
        } => {
            state.recommendations.push_back((now, proposal));
            let stabilized = state
                .recommendations
                .iter()
                .filter(|(t, _)| *t > now - downscale_stabilization_millis)
                .map(|(_, r)| *r)
                .max()
                .unwrap_or(proposal);
            let scale_up_limit = (2 * current).max(4);
            stabilized
                .min(scale_up_limit.min(spec.max_replicas))
                .clamp(spec.min_replicas, spec.max_replicas)
        }
        Behavior::Explicit { up, down } => {
            state.recommendations.push_back((now, proposal));
            let recs = &state.recommendations;
            let window = |millis: i64| {
                recs.iter()
                    .filter(move |(t, _)| *t > now - millis)
                    .map(|(_, r)| *r)
            };
            let stabilized = if proposal >= current {
                window(up.stabilization_millis)
                    .chain([proposal])
                    .min()
                    .unwrap_or(proposal)
            } else {
                window(down.stabilization_millis)
                    .chain([proposal])
                    .max()
                    .unwrap_or(proposal)
            };
            let stabilized = stabilized.clamp(spec.min_replicas, spec.max_replicas);
            if stabilized > current {
                let limit = up_limit(up, state, now, current);
                stabilized
                    .min(limit)
                    .min(spec.max_replicas)
                    .max(current.min(spec.max_replicas))
            } else if stabilized < current {
                let limit = down_limit(down, state, now, current);
                stabilized.max(limit).max(spec.min_replicas)
            } else {
                stabilized
            }
        }
    };
    if desired != current {
        state
            .events
            .push_back((now, desired as i64 - current as i64));
    }
    desired
}

fn up_limit(rules: &ScalingRules, state: &HpaState, now: UnixMillis, current: u32) -> u32 {
    if rules.select == SelectPolicy::Disabled {
        return current;
    }
    let limits = rules.policies.iter().map(|p| match *p {
        Policy::Pods {
            value,
            period_millis,
        } => current.saturating_sub(state.changed_within(now, period_millis, true)) + value,
        Policy::Percent {
            value,
            period_millis,
        } => {
            let start = current.saturating_sub(state.changed_within(now, period_millis, true));
            (start as f64 * (1.0 + value as f64 / 100.0)).ceil() as u32
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => limits.min(),
        _ => limits.max(),
    };
    limit.unwrap_or(current).max(current)
}

fn down_limit(rules: &ScalingRules, state: &HpaState, now: UnixMillis, current: u32) -> u32 {
    if rules.select == SelectPolicy::Disabled {
        return current;
    }
    let limits = rules.policies.iter().map(|p| match *p {
        Policy::Pods {
            value,
            period_millis,
        } => (current + state.changed_within(now, period_millis, false)).saturating_sub(value),
        Policy::Percent {
            value,
            period_millis,
        } => {
            let start = current + state.changed_within(now, period_millis, false);
            (start as f64 * (1.0 - value as f64 / 100.0)).trunc() as u32
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => limits.max(),
        _ => limits.min(),
    };
    limit.unwrap_or(current).min(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_settled_controller_holds_its_count_through_the_stabilization_window() {
        for behavior in [Behavior::legacy(), Behavior::defaults()] {
            let s = spec(behavior);
            // Fresh: nothing recorded, so a low first reading scales down at once.
            assert_eq!(normalize(&s, &mut HpaState::default(), 0, 10, 6), 6);
            // Settled at 10: the window holds 10 until five minutes have passed.
            let mut state = HpaState::settled(10, 0);
            assert_eq!(normalize(&s, &mut state, 0, 10, 6), 10);
            assert_eq!(normalize(&s, &mut state, 299_000, 10, 6), 10);
            assert_eq!(normalize(&s, &mut state, 301_000, 10, 6), 6);
        }
    }

    fn spec(behavior: Behavior) -> HpaSpec {
        HpaSpec {
            min_replicas: 1,
            max_replicas: 100,
            tolerance: 0.1,
            behavior,
        }
    }

    // Worked example of the reference: 3 ready pods, items 30 and 15 (usage 45).
    #[test]
    fn external_value_golden() {
        assert_eq!(external_value_proposal(45.0, 10.0, 3, 3, 0.1), 14);
        assert_eq!(external_value_proposal(45.0, 45.0, 3, 3, 0.1), 3);
        assert_eq!(external_value_proposal(45.0, 10.0, 3, 0, 0.1), 5);
    }

    #[test]
    fn external_average_golden() {
        assert_eq!(external_average_proposal(45.0, 10.0, 3, 0.1), 5);
        assert_eq!(external_average_proposal(45.0, 15.0, 3, 0.1), 3);
        assert_eq!(external_average_proposal(45.0, 14.0, 3, 0.1), 3);
        assert_eq!(external_average_proposal(45.0, 13.0, 3, 0.1), 4);
    }

    #[test]
    fn normalization_golden_3_to_14() {
        let mut state = HpaState::default();
        assert_eq!(
            normalize(&spec(Behavior::legacy()), &mut state, 0, 3, 14),
            6
        );
        let mut state = HpaState::default();
        assert_eq!(
            normalize(&spec(Behavior::defaults()), &mut state, 0, 3, 14),
            7
        );
    }

    #[test]
    fn tolerance_bounds_are_inclusive() {
        assert_eq!(external_value_proposal(110.0, 100.0, 5, 5, 0.1), 5);
        assert_eq!(external_value_proposal(90.0, 100.0, 5, 5, 0.1), 5);
        assert_eq!(external_value_proposal(111.0, 100.0, 5, 5, 0.1), 6);
    }

    #[test]
    fn downscale_waits_for_the_stabilization_window() {
        for behavior in [Behavior::legacy(), Behavior::defaults()] {
            let s = spec(behavior);
            let mut state = HpaState::default();
            assert_eq!(normalize(&s, &mut state, 0, 10, 10), 10);
            assert_eq!(
                normalize(&s, &mut state, 15_000, 10, 4),
                10,
                "held by the window"
            );
            assert_eq!(normalize(&s, &mut state, 240_000, 10, 4), 10);
            assert_eq!(
                normalize(&s, &mut state, 315_001, 10, 4),
                4,
                "window passed"
            );
        }
    }

    #[test]
    fn scale_up_rate_limit_counts_recent_events() {
        let s = spec(Behavior::defaults());
        let mut state = HpaState::default();
        assert_eq!(normalize(&s, &mut state, 0, 2, 50), 6); // max(2+4, 2*2)
        // Within the same 15 s period the earlier +4 counts against the limit: start 2 → limit 6 again.
        assert_eq!(normalize(&s, &mut state, 5_000, 6, 50), 6);
        assert_eq!(normalize(&s, &mut state, 20_000, 6, 50), 12);
    }

    #[test]
    fn min_and_max_clamp() {
        let s = HpaSpec {
            min_replicas: 2,
            max_replicas: 5,
            tolerance: 0.1,
            behavior: Behavior::defaults(),
        };
        let mut state = HpaState::default();
        assert_eq!(normalize(&s, &mut state, 0, 4, 50), 5);
        let mut state = HpaState::default();
        assert_eq!(normalize(&s, &mut state, 0, 3, 3), 3);
        assert_eq!(
            normalize(&s, &mut state, 15_000, 3, 0),
            3,
            "scale-down waits for the window"
        );
        assert_eq!(normalize(&s, &mut state, 400_000, 3, 0), 2);
    }

    #[test]
    fn resource_utilization_with_unready_pods_on_scale_up() {
        // 4 ready at 90% vs target 50, 2 unready: unready count as 0 → new ratio 90*4/6/50 = 1.2 → ceil(1.2*6) = 8.
        let pods = PodCounts {
            ready: 4,
            unready: 2,
            missing: 0,
        };
        assert_eq!(resource_utilization_proposal(90.0, 50.0, pods, 6, 0.1), 8);
        // Without unready pods: ceil(1.8*4) = 8 as well, but from the ready count.
        let pods = PodCounts {
            ready: 4,
            unready: 0,
            missing: 0,
        };
        assert_eq!(resource_utilization_proposal(90.0, 50.0, pods, 4, 0.1), 8);
    }

    #[test]
    fn resource_utilization_missing_pods_on_scale_down() {
        // 3 ready at 20% vs 50, 1 missing assumed at 100%: (60+100)/4/50 = 0.8 → ceil(0.8*4) = 4 = current.
        let pods = PodCounts {
            ready: 3,
            unready: 0,
            missing: 1,
        };
        assert_eq!(resource_utilization_proposal(20.0, 50.0, pods, 4, 0.1), 4);
        // Direction flip keeps current: 3 ready at 45%, 1 missing → (135+100)/4/50 = 1.175 > 1 while ratio < 1.
        assert_eq!(resource_utilization_proposal(45.0, 50.0, pods, 4, 0.1), 4);
    }

    #[test]
    fn utilization_is_floored() {
        let pods = PodCounts {
            ready: 10,
            unready: 0,
            missing: 0,
        };
        // 54.9% floors to 54 → ratio 1.08 → within tolerance.
        assert_eq!(
            resource_utilization_proposal(54.9 + 0.0, 50.0, pods, 10, 0.1),
            10
        );
    }
}
