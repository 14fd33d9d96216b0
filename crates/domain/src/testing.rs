//! Fixtures shared by unit tests, integration tests and benches: one builder of [`DeploymentInputs`] and one
//! daily-spike load. Pure values, no IO. Not part of the API: public only so `tests/` and `benches/` can use it.

use std::collections::BTreeMap;

use super::model::{DeploymentInputs, DeploymentKey, PoolInputs, UnixMillis};

const DAY_MILLIS: i64 = 86_400_000;
const MINUTE_MILLIS: i64 = 60_000;

/// Builds the [`DeploymentInputs`] of one healthy deployment, changed only where a test cares.
///
/// The defaults: `shop/api`, HPA target 70%, 50% CPU, memory unknown, pods of 500m, 4 replicas all ready, none
/// starting, no HPA maxReplicas known, none unschedulable, a 60 s startup filter, a 10-minute window, observed at 0, on a pool `general` of 3 nodes at 50%
/// measured and 60% requested CPU, no annotations.
#[derive(Debug, Clone)]
pub struct InputsBuilder(DeploymentInputs);

/// A builder with the defaults of [`InputsBuilder`].
pub fn inputs() -> InputsBuilder {
    InputsBuilder(DeploymentInputs {
        key: DeploymentKey::new("shop", "api"),
        base_target_percent: 70.0,
        cpu_utilization_percent: 50.0,
        memory_utilization_percent: None,
        pod_cpu_request_milli: 500,
        pod_memory_request_bytes: 0,
        ready_pods_by_node: Default::default(),
        replicas: 4,
        ready_pods: 4,
        starting_pods: 0,
        max_replicas: None,
        unschedulable_pods: 0,
        recent_pod_starts: 0,
        startup_filter_seconds: 60,
        pool: PoolInputs {
            name: "general".into(),
            measured_cpu_percent: Some(50.0),
            requested_cpu_percent: 60.0,
            nodes: 3,
        },
        annotations: BTreeMap::new(),
        window_seconds: 600,
        observed_at: 0,
    })
}

impl InputsBuilder {
    /// Which deployment.
    pub fn key(mut self, key: &DeploymentKey) -> Self {
        self.0.key = key.clone();
        self
    }

    /// Measured CPU utilization, percent of requests.
    pub fn cpu(mut self, percent: f64) -> Self {
        self.0.cpu_utilization_percent = percent;
        self
    }

    /// Memory utilization, percent, when known.
    pub fn memory(mut self, percent: Option<f64>) -> Self {
        self.0.memory_utilization_percent = percent;
        self
    }

    /// The HPA's target, percent.
    pub fn base_target(mut self, percent: f64) -> Self {
        self.0.base_target_percent = percent;
        self
    }

    /// Replicas, all of them ready.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.0.replicas = replicas;
        self.0.ready_pods = replicas;
        self
    }

    /// The HPA's `maxReplicas`.
    pub fn max_replicas(mut self, max: Option<u32>) -> Self {
        self.0.max_replicas = max;
        self
    }

    /// Pods the scheduler could not place.
    pub fn unschedulable(mut self, pods: u32) -> Self {
        self.0.unschedulable_pods = pods;
        self
    }

    /// Ready pods, when not every replica is.
    pub fn ready(mut self, pods: u32) -> Self {
        self.0.ready_pods = pods;
        self
    }

    /// The pool's name, measured CPU (`None`: unknown) and requested CPU, percent.
    pub fn pool(mut self, name: &str, measured: Option<f64>, requested: f64) -> Self {
        self.0.pool.name = name.into();
        self.0.pool.measured_cpu_percent = measured;
        self.0.pool.requested_cpu_percent = requested;
        self
    }

    /// Nodes in the pool.
    pub fn nodes(mut self, nodes: u32) -> Self {
        self.0.pool.nodes = nodes;
        self
    }

    /// One Deployment annotation.
    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0.annotations.insert(key.into(), value.into());
        self
    }

    /// When the inputs were measured.
    pub fn at(mut self, observed_at: UnixMillis) -> Self {
        self.0.observed_at = observed_at;
        self
    }

    /// The inputs.
    pub fn build(self) -> DeploymentInputs {
        self.0
    }
}

/// The daily-spike load of the forecasting tests: demand at `base` all day and `peak` from 09:00 to 10:00 UTC,
/// every day. Deterministic, so a forecaster trained on it has one right answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DailySpike {
    /// Demand outside the spike.
    pub base: f64,
    /// Demand during the spike.
    pub peak: f64,
    /// Minute of the UTC day the spike starts (inclusive).
    pub from_minute: i64,
    /// Minute of the UTC day the spike ends (exclusive).
    pub to_minute: i64,
}

impl Default for DailySpike {
    /// 100, tripling from 09:00 to 10:00.
    fn default() -> Self {
        DailySpike {
            base: 100.0,
            peak: 300.0,
            from_minute: 9 * 60,
            to_minute: 10 * 60,
        }
    }
}

impl DailySpike {
    /// Whether `at` falls inside the day's spike.
    pub fn in_spike(&self, at: UnixMillis) -> bool {
        let minute = at.rem_euclid(DAY_MILLIS) / MINUTE_MILLIS;
        (self.from_minute..self.to_minute).contains(&minute)
    }

    /// Demand at `at`, without noise.
    pub fn at(&self, at: UnixMillis) -> f64 {
        if self.in_spike(at) {
            self.peak
        } else {
            self.base
        }
    }

    /// `n` values `step_millis` apart from `start`, each times `1 + noise * jitter(slot)`, where `slot` is the
    /// step's index divided by `steps_per_draw` (steps sharing a slot share a noise draw).
    pub fn series(
        &self,
        start: UnixMillis,
        step_millis: i64,
        n: usize,
        noise: f64,
        steps_per_draw: usize,
    ) -> Vec<f64> {
        (0..n)
            .map(|i| {
                self.at(start + i as i64 * step_millis)
                    * (1.0 + noise * jitter(i / steps_per_draw.max(1)))
            })
            .collect()
    }
}

/// Deterministic noise in [-1, 1] for draw `i`: spread over 101 levels, no period shorter than 101 draws.
pub fn jitter(i: usize) -> f64 {
    ((i * 7919) % 101) as f64 / 50.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spike_is_nine_to_ten_utc_every_day() {
        let s = DailySpike::default();
        let at = |day: i64, h: i64, m: i64| day * DAY_MILLIS + (h * 60 + m) * MINUTE_MILLIS;
        assert_eq!(s.at(at(3, 8, 59)), 100.0);
        assert_eq!(s.at(at(3, 9, 0)), 300.0);
        assert_eq!(s.at(at(3, 9, 59)), 300.0);
        assert_eq!(s.at(at(3, 10, 0)), 100.0);
        let five = s.series(0, 300_000, 288, 0.0, 1);
        assert_eq!(five.iter().filter(|v| **v == 300.0).count(), 12);
        assert_eq!(five[108], 300.0);
    }

    #[test]
    fn jitter_stays_within_one() {
        assert!((0..1000).map(jitter).all(|j| (-1.0..=1.0).contains(&j)));
        let noisy = DailySpike::default().series(0, 300_000, 6, 0.1, 3);
        assert_eq!(noisy[0], noisy[2]);
        assert_ne!(noisy[2], noisy[3]);
    }

    #[test]
    fn the_builder_changes_only_what_it_is_told() {
        let i = inputs().cpu(80.0).replicas(6).ready(5).at(7).build();
        assert_eq!(
            (i.cpu_utilization_percent, i.replicas, i.ready_pods),
            (80.0, 6, 5)
        );
        assert_eq!(i.observed_at, 7);
        assert_eq!(i.pool, inputs().build().pool);
    }
}
