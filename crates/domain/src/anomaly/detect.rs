//! Per-deployment detector state, carried from tick to tick beside the decision states: small bounded windows
//! of each deployment's recent utilization, forecast errors and replica changes, how long the sustained
//! conditions have held, the learned detector ([`super::learned`]) fed its utilization once per tick, and the
//! anomalies currently open. [`DetectorStates::observe`] feeds one deployment's
//! inputs of one tick to every rule of [`super::rules`] and runs the lifecycle: an anomaly opens on the first tick
//! its rule holds, stays open (its severity the highest seen, its evidence that of its strongest tick) while it
//! holds, and ends once the rule has not held for [`AnomalyConfig::clear_ticks`] consecutive ticks.
//!
//! Everything here is a function of the inputs it is given: no clock, so `serve`, `demo` and `simulate` see the
//! same anomalies for the same ticks.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::learned::LearnedDetector;
use super::rules::{
    self, AnomalyConfig, Band, Blocked, Expectation, ExpectationSource, Finding,
    robust_center_spread,
};
use super::{Anomaly, AnomalyKind};
use crate::forecast::STEP_MILLIS;
use crate::forecast::online::{Advice, Published};
use crate::model::{DeploymentInputs, DeploymentKey, UnixMillis};

/// Forecasts older than this are not an expectation (as for the decision: whoever publishes them stalled).
const MAX_FORECAST_AGE_MILLIS: i64 = crate::tick::FORECAST_MAX_AGE_BUCKETS * STEP_MILLIS;

/// A window of `(time, value)` samples bounded by age and by count.
#[derive(Debug, Clone, Default)]
struct Samples(VecDeque<(UnixMillis, f64)>);

impl Samples {
    fn push(&mut self, at: UnixMillis, value: f64, window_millis: i64, cap: usize) {
        if value.is_finite() {
            self.0.push_back((at, value));
        }
        while self
            .0
            .front()
            .is_some_and(|(t, _)| *t <= at - window_millis)
            || self.0.len() > cap.max(1)
        {
            self.0.pop_front();
        }
    }

    fn values(&self, now: UnixMillis, window_millis: i64) -> Vec<f64> {
        self.0
            .iter()
            .filter(|(t, _)| *t > now - window_millis)
            .map(|(_, v)| *v)
            .collect()
    }
}

/// Since when a sustained condition has held. A dip shorter than `clear_ticks` ticks does not restart the
/// clock (the same hysteresis as an anomaly's end), so one noisy tick neither hides 14 minutes of saturation nor
/// ends and reopens an anomaly a quarter of an hour later.
#[derive(Debug, Clone, Copy, Default)]
struct Held {
    since: Option<UnixMillis>,
    misses: u32,
}

impl Held {
    /// Records this tick; returns how long the condition has held when it holds now.
    fn tick(&mut self, holds: bool, now: UnixMillis, clear_ticks: u32) -> Option<i64> {
        if holds {
            self.misses = 0;
            Some(now - *self.since.get_or_insert(now))
        } else {
            self.misses += 1;
            if self.misses >= clear_ticks.max(1) {
                self.since = None;
            }
            None
        }
    }
}

/// One kind of anomaly of one deployment: the open anomaly, if any, and the quiet ticks since its rule last held.
#[derive(Debug, Clone, Default)]
struct Track {
    open: Option<Anomaly>,
    quiet: u32,
}

impl Track {
    /// Runs the lifecycle for this tick's finding; returns the anomaly to publish (open, or ended now).
    fn update(
        &mut self,
        key: &DeploymentKey,
        kind: AnomalyKind,
        finding: Option<Finding>,
        now: UnixMillis,
        clear_ticks: u32,
    ) -> Option<Anomaly> {
        match (finding, self.open.as_mut()) {
            (Some(f), Some(a)) => {
                self.quiet = 0;
                a.last_seen_at = now;
                a.severity = a.severity.max(f.severity);
                if f.score >= a.score {
                    (a.expected, a.actual, a.score, a.summary) =
                        (f.expected, f.actual, f.score, f.summary);
                }
                Some(a.clone())
            }
            (Some(f), None) => {
                self.quiet = 0;
                let a = Anomaly {
                    key: key.clone(),
                    kind,
                    severity: f.severity,
                    started_at: now,
                    last_seen_at: now,
                    ended_at: None,
                    expected: f.expected,
                    actual: f.actual,
                    score: f.score,
                    summary: f.summary,
                };
                self.open = Some(a.clone());
                Some(a)
            }
            (None, Some(a)) => {
                self.quiet += 1;
                if self.quiet >= clear_ticks.max(1) {
                    let mut ended = self.open.take()?;
                    ended.ended_at = Some(now);
                    self.quiet = 0;
                    Some(ended)
                } else {
                    Some(a.clone())
                }
            }
            (None, None) => None,
        }
    }
}

/// One deployment's detector memory.
#[derive(Debug, Clone, Default)]
pub struct DeploymentDetector {
    /// Recent utilization, the fallback baseline.
    values: Samples,
    /// Recent `actual - forecast`, the spread around a trusted forecast.
    residuals: Samples,
    last_replicas: Option<u32>,
    /// Times the replica count changed, within the thrash window.
    changes: VecDeque<UnixMillis>,
    /// Since when utilization has been high with capacity blocked.
    high: Held,
    /// Since when actuals have been outside the forecast band, and on which side (`true`: above).
    outside: Held,
    outside_above: bool,
    /// The learned detector, fed this deployment's utilization once per tick.
    learned: Option<LearnedDetector>,
    tracks: BTreeMap<AnomalyKind, Track>,
}

/// The trusted, fresh forecast's expected utilization for `now`: its demand for the bucket holding `now` over the
/// ready pods (the same unit as the decision's forecast hooks).
pub fn forecast_expected(advice: &Advice, now: UnixMillis, ready_pods: u32) -> Option<f64> {
    let made_at = advice.made_at?;
    if !advice.trusted || now - made_at > MAX_FORECAST_AGE_MILLIS {
        return None;
    }
    let i = usize::try_from((now - made_at).max(0) / advice.step_millis.max(1)).ok()?;
    advice
        .demand_by_step
        .get(i)
        .copied()
        .filter(|v| v.is_finite())
        .map(|d| d / f64::from(ready_pods.max(1)))
}

impl DeploymentDetector {
    /// Judges this tick's inputs against every rule; returns each kind's finding (the lifecycle is applied by
    /// the caller).
    fn judge(
        &mut self,
        inputs: &DeploymentInputs,
        forecast: Option<&Published>,
        now: UnixMillis,
        config: &AnomalyConfig,
    ) -> Vec<(AnomalyKind, Option<Finding>)> {
        let actual = inputs.cpu_utilization_percent;
        let window = config.baseline_window_millis;
        let cap = config.max_samples;
        let forecast_now = forecast
            .and_then(|p| forecast_expected(&p.advice, now, inputs.ready_pods).map(|e| (e, p)));

        // CPU spike: against the trusted forecast with the spread of its own recent errors, or else against the
        // deployment's own recent values. The current sample joins the windows only after it is judged.
        let residuals = self.residuals.values(now, window);
        let expectation = match forecast_now {
            Some((expected, _)) if residuals.len() >= config.min_baseline_samples => {
                robust_center_spread(&residuals).map(|(bias, sigma)| Expectation {
                    expected: expected + bias,
                    sigma: sigma.max(config.min_sigma_percent),
                    source: ExpectationSource::Forecast,
                })
            }
            _ => {
                let values = self.values.values(now, window);
                (values.len() >= config.min_baseline_samples)
                    .then(|| robust_center_spread(&values))
                    .flatten()
                    .map(|(center, sigma)| Expectation {
                        expected: center,
                        sigma: sigma.max(config.min_sigma_percent),
                        source: ExpectationSource::Baseline,
                    })
            }
        };
        let spike = expectation.and_then(|e| rules::cpu_spike(actual, &e, config));
        // The learned detector sees every tick's utilization; its evidence names the recent median.
        let learned = config.learned.as_ref().and_then(|c| {
            let score = self
                .learned
                .get_or_insert_with(|| LearnedDetector::new(c))
                .update(now, actual);
            let recent = self.values.values(now, window);
            let median = robust_center_spread(&recent).map_or(actual, |(m, _)| m);
            rules::learned(actual, median, score, c.threshold)
        });
        self.values.push(now, actual, window, cap);
        if let Some((expected, _)) = forecast_now {
            self.residuals.push(now, actual - expected, window, cap);
        }

        // Scaling thrash: every tick whose replica count differs from the last tick's is one change.
        if self
            .last_replicas
            .is_some_and(|last| last != inputs.replicas)
        {
            self.changes.push_back(now);
        }
        self.last_replicas = Some(inputs.replicas);
        while self
            .changes
            .front()
            .is_some_and(|t| *t <= now - config.thrash_window_millis)
            || self.changes.len() > cap.max(1)
        {
            self.changes.pop_front();
        }
        let thrash = rules::scaling_thrash(self.changes.len() as u32, inputs.replicas, config);

        // Persistent high CPU: high, with capacity blocked, on every tick since `high_since`.
        let blocked = match inputs.max_replicas {
            Some(max) if inputs.replicas >= max => Some(Blocked::AtMaxReplicas(max)),
            _ if inputs.unschedulable_pods > 0 => {
                Some(Blocked::Unschedulable(inputs.unschedulable_pods))
            }
            _ => None,
        };
        let holds = blocked.is_some() && actual > config.high_cpu_percent;
        let high = self
            .high
            .tick(holds, now, config.clear_ticks)
            .zip(blocked)
            .and_then(|(held, b)| rules::persistent_high_cpu(actual, held, b, config));

        // Pattern deviation: outside the validated band (trusted forecast with a measured MAPE), on one side,
        // on every tick since `outside_since`.
        let band = forecast_now
            .and_then(|(expected, p)| p.scores.mape.map(|m| Band::new(expected, m, config)));
        let outside = band.map_or(0.0, |b| b.outside(actual));
        if outside != 0.0 && (outside > 0.0) != self.outside_above {
            // Crossing from one side of the band to the other is a new excursion.
            self.outside = Held::default();
            self.outside_above = outside > 0.0;
        }
        let deviation = self
            .outside
            .tick(outside != 0.0, now, config.clear_ticks)
            .zip(band)
            .and_then(|(held, b)| rules::pattern_deviation(actual, &b, held, config));

        vec![
            (AnomalyKind::CpuSpike, spike),
            (AnomalyKind::ScalingThrash, thrash),
            (AnomalyKind::PersistentHighCpu, high),
            (AnomalyKind::PatternDeviation, deviation),
            (AnomalyKind::Learned, learned),
        ]
    }

    /// The anomalies open now.
    fn open(&self) -> impl Iterator<Item = &Anomaly> {
        self.tracks.values().filter_map(|t| t.open.as_ref())
    }
}

/// Every deployment's detector memory and the thresholds, carried from one tick to the next.
#[derive(Debug, Clone, Default)]
pub struct DetectorStates {
    config: AnomalyConfig,
    deployments: HashMap<DeploymentKey, DeploymentDetector>,
}

impl DetectorStates {
    /// No memory yet, with these thresholds.
    pub fn new(config: AnomalyConfig) -> Self {
        DetectorStates {
            config,
            deployments: HashMap::new(),
        }
    }

    /// The thresholds.
    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }

    /// Deployments with memory.
    pub fn len(&self) -> usize {
        self.deployments.len()
    }

    /// Whether no deployment has memory.
    pub fn is_empty(&self) -> bool {
        self.deployments.is_empty()
    }

    /// Whether `key` has memory.
    pub fn contains_key(&self, key: &DeploymentKey) -> bool {
        self.deployments.contains_key(key)
    }

    /// Feeds one measured deployment's inputs of the tick at `now` (and its latest published forecast, if any)
    /// to every detector; returns its anomalies to publish: those open after this tick and those that ended on it.
    pub fn observe(
        &mut self,
        inputs: &DeploymentInputs,
        forecast: Option<&Published>,
        now: UnixMillis,
    ) -> Vec<Anomaly> {
        let config = &self.config;
        let detector = self.deployments.entry(inputs.key.clone()).or_default();
        let findings = detector.judge(inputs, forecast, now, config);
        findings
            .into_iter()
            .filter_map(|(kind, finding)| {
                detector.tracks.entry(kind).or_default().update(
                    &inputs.key,
                    kind,
                    finding,
                    now,
                    config.clear_ticks,
                )
            })
            .collect()
    }

    /// The anomalies still open for a deployment that was not measured on this tick: nothing is judged, so
    /// nothing opens or ends; they are published as they were.
    pub fn held(&self, key: &DeploymentKey) -> Vec<Anomaly> {
        self.deployments
            .get(key)
            .map(|d| d.open().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets the deployments `keep` rejects; their open anomalies end at `now` and are returned, so whoever
    /// follows them sees them resolve.
    pub fn retain(
        &mut self,
        now: UnixMillis,
        mut keep: impl FnMut(&DeploymentKey) -> bool,
    ) -> Vec<Anomaly> {
        let mut ended = Vec::new();
        self.deployments.retain(|key, d| {
            if keep(key) {
                return true;
            }
            ended.extend(d.open().cloned().map(|mut a| {
                a.ended_at = Some(now);
                a
            }));
            false
        });
        ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anomaly::Severity;
    use crate::forecast::validate::Scores;
    use crate::testing;

    const TICK: i64 = 15_000;
    const T0: UnixMillis = 1_700_000_000_000;

    fn at(i: i64) -> UnixMillis {
        T0 + i * TICK
    }

    fn inputs(cpu: f64, replicas: u32) -> DeploymentInputs {
        testing::inputs().cpu(cpu).replicas(replicas).build()
    }

    /// A trusted forecast made at `made_at` expecting `demand` (utilization × ready pods) for the next hour, its
    /// validated MAPE `mape`.
    fn forecast(made_at: UnixMillis, demand: f64, mape: f64) -> Published {
        Published {
            advice: Advice {
                lead_max_demand: Some(demand),
                demand_by_step: vec![demand; 12],
                step_millis: STEP_MILLIS,
                lead_millis: 90_000,
                current_demand: Some(demand),
                confidence: 1.0,
                spike_probability: None,
                trusted: true,
                usable: true,
                reason: None,
                made_at: Some(made_at),
            },
            scores: Scores {
                mape: Some(mape),
                ..Scores::default()
            },
            members: Vec::new(),
            refits: 1,
            history_buckets: 2016,
        }
    }

    /// Feeds `(cpu, replicas)` per tick from tick `from`; returns what each tick published of `kind`.
    fn feed(
        states: &mut DetectorStates,
        from: i64,
        series: &[(f64, u32)],
        forecast: Option<&Published>,
        kind: AnomalyKind,
    ) -> Vec<Option<Anomaly>> {
        series
            .iter()
            .enumerate()
            .map(|(i, (cpu, replicas))| {
                states
                    .observe(&inputs(*cpu, *replicas), forecast, at(from + i as i64))
                    .into_iter()
                    .find(|a| a.kind == kind)
            })
            .collect()
    }

    /// Deterministic ±`amp` wobble.
    fn wobble(i: usize, amp: f64) -> f64 {
        amp * testing::jitter(i)
    }

    #[test]
    fn a_spike_against_the_own_baseline_opens_holds_and_ends_with_hysteresis() {
        let mut s = DetectorStates::default();
        let calm: Vec<(f64, u32)> = (0..40).map(|i| (50.0 + wobble(i, 1.0), 4)).collect();
        assert!(
            feed(&mut s, 0, &calm, None, AnomalyKind::CpuSpike)
                .iter()
                .all(Option::is_none)
        );
        // 80% against a median of about 50% and a spread floored at 2 points: 15 sigmas.
        let spike = feed(
            &mut s,
            40,
            &[(80.0, 4), (82.0, 4)],
            None,
            AnomalyKind::CpuSpike,
        );
        let first = spike[0].clone().expect("the spike opens on its first tick");
        assert_eq!(first.started_at, at(40));
        assert!(first.is_active());
        assert!(
            first.summary.contains("no trusted forecast"),
            "{}",
            first.summary
        );
        assert!((first.expected - 50.0).abs() < 1.5, "{first:?}");
        let second = spike[1].clone().unwrap();
        assert_eq!((second.started_at, second.last_seen_at), (at(40), at(41)));
        assert_eq!(second.actual, 82.0, "the evidence is the strongest tick's");
        // Back to normal: still open for two quiet ticks, ended on the third (clear_ticks = 3).
        let after = feed(&mut s, 42, &[(50.0, 4); 4], None, AnomalyKind::CpuSpike);
        assert!(after[0].as_ref().unwrap().is_active());
        assert!(after[1].as_ref().unwrap().is_active());
        let ended = after[2].clone().unwrap();
        assert_eq!(ended.ended_at, Some(at(44)));
        assert_eq!(ended.started_at, at(40));
        assert_eq!(after[3], None, "published once when it ends, then gone");
    }

    #[test]
    fn a_quiet_tick_inside_a_spike_does_not_split_it() {
        let mut s = DetectorStates::default();
        let calm: Vec<(f64, u32)> = (0..40).map(|i| (50.0 + wobble(i, 1.0), 4)).collect();
        feed(&mut s, 0, &calm, None, AnomalyKind::CpuSpike);
        let run = feed(
            &mut s,
            40,
            &[(80.0, 4), (50.0, 4), (81.0, 4)],
            None,
            AnomalyKind::CpuSpike,
        );
        let starts: Vec<_> = run.iter().map(|a| a.as_ref().unwrap().started_at).collect();
        assert_eq!(starts, [at(40); 3]);
    }

    #[test]
    fn too_few_samples_judge_nothing() {
        let mut s = DetectorStates::default();
        let series: Vec<(f64, u32)> = (0..19).map(|_| (50.0, 4)).chain([(99.0, 4)]).collect();
        assert!(
            feed(&mut s, 0, &series, None, AnomalyKind::CpuSpike)
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn a_trusted_forecast_sets_the_expectation_for_the_time() {
        // The load follows its pattern up to 80% at this hour: expected, no spike, although the deployment's
        // own recent past was at 40%.
        let mut s = DetectorStates::default();
        let low = forecast(at(0), 4.0 * 40.0, 0.05);
        let series: Vec<(f64, u32)> = (0..30).map(|i| (40.0 + wobble(i, 1.0), 4)).collect();
        feed(&mut s, 0, &series, Some(&low), AnomalyKind::CpuSpike);
        let high = forecast(at(30), 4.0 * 80.0, 0.05);
        let on_pattern = feed(&mut s, 30, &[(80.5, 4)], Some(&high), AnomalyKind::CpuSpike);
        assert_eq!(on_pattern[0], None);
        // Against the same forecast, 95% is a spike, judged from the forecast.
        let spike = feed(&mut s, 31, &[(95.0, 4)], Some(&high), AnomalyKind::CpuSpike);
        let a = spike[0].clone().unwrap();
        assert!(a.summary.contains("trusted forecast"), "{}", a.summary);
        assert!((a.expected - 80.0).abs() < 1.5, "{a:?}");
        assert_eq!(a.severity, Severity::Critical);
        // Without the forecast the same 80.5% against its own 40% past would have been one.
        let mut plain = DetectorStates::default();
        feed(&mut plain, 0, &series, None, AnomalyKind::CpuSpike);
        assert!(feed(&mut plain, 30, &[(80.5, 4)], None, AnomalyKind::CpuSpike)[0].is_some());
    }

    #[test]
    fn an_untrusted_or_stale_forecast_is_no_expectation() {
        let mut f = forecast(at(0), 400.0, 0.05);
        assert_eq!(forecast_expected(&f.advice, at(1), 4), Some(100.0));
        assert_eq!(
            forecast_expected(&f.advice, at(0) + MAX_FORECAST_AGE_MILLIS + 1, 4),
            None
        );
        f.advice.trusted = false;
        assert_eq!(forecast_expected(&f.advice, at(1), 4), None);
    }

    #[test]
    fn thrash_fires_past_fifteen_changes_in_thirty_minutes_and_ends() {
        let mut s = DetectorStates::default();
        // A change every minute (every fourth tick): 15 changes in 30 minutes do not fire, the 16th does.
        let replicas = |change: i64| if change % 2 == 0 { 4 } else { 5 };
        let mut published = Vec::new();
        for i in 0..=16 * 4 {
            let r = replicas(i / 4);
            published.push(
                s.observe(&inputs(50.0, r), None, at(i))
                    .into_iter()
                    .find(|a| a.kind == AnomalyKind::ScalingThrash),
            );
        }
        // Changes at ticks 4, 8, ..., 60 are 15; the 16th is at tick 64.
        assert!(published[..64].iter().all(Option::is_none));
        let a = published[64].clone().unwrap();
        assert_eq!((a.expected, a.actual), (15.0, 16.0));
        assert_eq!(a.severity, Severity::Warning);
        // Steady from then on: once the oldest change leaves the window, three quiet ticks end it.
        let mut ended = None;
        for i in 65..65 + 200 {
            if let Some(a) = s
                .observe(&inputs(50.0, 4), None, at(i))
                .into_iter()
                .find(|a| a.kind == AnomalyKind::ScalingThrash)
                && a.ended_at.is_some()
            {
                ended = Some((i, a));
                break;
            }
        }
        let (i, a) = ended.expect("thrash ended");
        // The change at tick 4 leaves the 30-minute (120-tick) window at tick 124; ended three ticks later.
        assert_eq!(i, 124 + 2, "{a:?}");
    }

    #[test]
    fn changes_spread_over_more_than_thirty_minutes_are_not_thrash() {
        let mut s = DetectorStates::default();
        // A change every two minutes: at most 15 in any 30 minutes.
        for i in 0..400 {
            let r = if (i / 8) % 2 == 0 { 4 } else { 5 };
            let out = s.observe(&inputs(50.0, r), None, at(i));
            assert!(
                out.iter().all(|a| a.kind != AnomalyKind::ScalingThrash),
                "tick {i}"
            );
        }
    }

    #[test]
    fn persistent_high_cpu_needs_fifteen_blocked_minutes() {
        let mut s = DetectorStates::default();
        let at_max = |cpu| DeploymentInputs {
            max_replicas: Some(4),
            ..inputs(cpu, 4)
        };
        let high = |s: &mut DetectorStates, cpu, i| {
            s.observe(&at_max(cpu), None, at(i))
                .into_iter()
                .find(|a| a.kind == AnomalyKind::PersistentHighCpu)
        };
        // 60 ticks of 15 s is 15 minutes: held from tick 0, it fires at tick 60, not 59.
        for i in 0..60 {
            assert_eq!(high(&mut s, 90.0, i), None, "tick {i}");
        }
        let a = high(&mut s, 90.0, 60).unwrap();
        assert!(a.summary.contains("maxReplicas of 4"), "{}", a.summary);
        // A one-tick dip below 85% is a quiet tick: the anomaly holds and the clock runs on.
        assert!(high(&mut s, 80.0, 61).unwrap().is_active());
        let on = high(&mut s, 90.0, 62).unwrap();
        assert!(
            on.is_active() && on.summary.contains("for 15 minutes"),
            "{}",
            on.summary
        );
        // Three ticks below end it.
        assert!(high(&mut s, 80.0, 63).unwrap().is_active());
        assert!(high(&mut s, 80.0, 64).unwrap().is_active());
        assert_eq!(high(&mut s, 80.0, 65).unwrap().ended_at, Some(at(65)));
        // And the clock starts again from zero.
        for i in 66..66 + 59 {
            assert_eq!(high(&mut s, 90.0, i), None, "tick {i}");
        }

        // Not blocked (below maxReplicas, everything scheduled): high CPU alone is the HPA's job.
        let mut free = DetectorStates::default();
        for i in 0..200 {
            let out = free.observe(&inputs(99.0, 3), None, at(i));
            assert!(out.iter().all(|a| a.kind != AnomalyKind::PersistentHighCpu));
        }
        // Unschedulable pods block as well.
        let mut pending = DetectorStates::default();
        let stuck = DeploymentInputs {
            unschedulable_pods: 2,
            ..inputs(90.0, 3)
        };
        let fired = (0..=60)
            .filter_map(|i| {
                pending
                    .observe(&stuck, None, at(i))
                    .into_iter()
                    .find(|a| a.kind == AnomalyKind::PersistentHighCpu)
            })
            .next()
            .unwrap();
        assert_eq!(fired.started_at, at(60));
        assert!(fired.summary.contains("2 of its pods"), "{}", fired.summary);
    }

    #[test]
    fn pattern_deviation_needs_fifteen_minutes_outside_the_band() {
        let mut s = DetectorStates::default();
        // Expected 50% (200 over 4 pods), MAPE 10%: band ± 12.5 points.
        let mut made = at(0);
        let mut out = Vec::new();
        for i in 0..80 {
            if at(i) - made >= STEP_MILLIS {
                made = at(i);
            }
            let f = forecast(made, 200.0, 0.1);
            out.push(
                s.observe(
                    &inputs(if i < 10 { 50.0 } else { 66.0 }, 4),
                    Some(&f),
                    at(i),
                )
                .into_iter()
                .find(|a| a.kind == AnomalyKind::PatternDeviation),
            );
        }
        // Outside from tick 10: fires at tick 70 (15 minutes later), not before.
        assert!(out[..70].iter().all(Option::is_none));
        let a = out[70].clone().unwrap();
        assert_eq!(a.started_at, at(70));
        assert_eq!(a.severity, Severity::Warning);
        assert_eq!(a.expected, 50.0);
        // Without a validated error (no MAPE yet) there is no band.
        let mut none = DetectorStates::default();
        let mut f = forecast(at(0), 200.0, 0.1);
        f.scores.mape = None;
        for i in 0..100 {
            let o = none.observe(&inputs(66.0, 4), Some(&f), at(0) + i * 3_000);
            assert!(o.iter().all(|a| a.kind != AnomalyKind::PatternDeviation));
        }
    }

    #[test]
    fn forgotten_and_unmeasured_deployments() {
        let mut s = DetectorStates::default();
        for i in 0..40 {
            s.observe(&inputs(50.0, 4), None, at(i));
        }
        let open = s.observe(&inputs(90.0, 4), None, at(40));
        assert_eq!(open.len(), 1);
        let key = open[0].key.clone();
        // Unmeasured: published as it was.
        assert_eq!(s.held(&key), open);
        // Gone: ends now.
        let ended = s.retain(at(41), |_| false);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].ended_at, Some(at(41)));
        assert!(s.is_empty());
    }

    #[test]
    fn the_learned_detector_scores_every_tick_and_reports_at_its_threshold() {
        let mut s = DetectorStates::default();
        let threshold = s.config().learned.as_ref().unwrap().threshold;
        // Past its warm-up on calm load: nothing.
        let calm: Vec<(f64, u32)> = (0..400).map(|i| (50.0 + wobble(i, 2.0), 4)).collect();
        assert!(
            feed(&mut s, 0, &calm, None, AnomalyKind::Learned)
                .iter()
                .all(Option::is_none)
        );
        // Far beyond anything seen: the score reaches the threshold and the anomaly carries it.
        let jump = feed(&mut s, 400, &[(95.0, 4); 5], None, AnomalyKind::Learned);
        let a = jump[0]
            .clone()
            .expect("the learned detector reports the jump");
        assert!(a.score >= threshold && a.score <= 1.0, "{a:?}");
        assert!((a.expected - 50.0).abs() < 3.0, "{a:?}");
        assert!(a.summary.contains("learned detector"), "{}", a.summary);
        // Without it configured, no learned anomaly.
        let mut off = DetectorStates::new(AnomalyConfig {
            learned: None,
            ..AnomalyConfig::default()
        });
        feed(&mut off, 0, &calm, None, AnomalyKind::Learned);
        assert!(
            feed(&mut off, 400, &[(95.0, 4); 5], None, AnomalyKind::Learned)
                .iter()
                .all(Option::is_none)
        );
    }
}
