//! Backtesting (`simulate`): replays a load series through the HPA model of [`super::hpa`] three or four times
//! (HPA on plain CPU utilization; HPA on `smart_cpu_utilization`, reactive and with forecasts learned online;
//! and an oracle with perfect foresight and the same pod startup delay) and measures saturation, cost and churn.
//!
//! Only the outside world is simulated here: the load, pods starting and warming up, their CPU usage as
//! Prometheus rates would show it, and the HPA. The served value comes from the domain's one tick,
//! [`tick::step`], exactly as `serve` gets it: each collection interval the replay builds the [`Observation`]
//! serve's join would make of its one deployment, and the forecasts reach the tick on a [`Board`], published
//! after every completed five-minute bucket as serve's forecasting task publishes after each round.
//!
//! The measurement model is that of a real cluster: the plain HPA sees a 1-minute average of the ready pods'
//! usage (warm-up bursts included once a pod has been ready for a metric window); smart-autoscaler sees the
//! startup-filtered usage estimate the data plane computes (`cluster::estimate_usage` from 10-minute, 5-minute
//! and short-window means), over the current ready pods' requests, once per collection interval. Dividing
//! windowed usage by current capacity (rather than averaging per-pod utilization over the window) is what keeps
//! a 10-minute window from compounding scale-ups: the HPA multiplies the value by its ready pods every 15 s.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;

use super::anomaly::{AnomalyConfig, AnomalyKind, DetectorStates};
use super::decision::DecisionConfig;
use super::forecast::online::{Board, Forecaster, ForecasterConfig, Stream};
use super::forecast::{STEP_MILLIS as BUCKET_MILLIS, STEPS_PER_DAY};
use super::hpa::{self, Behavior, HpaSpec, HpaState, PodCounts};
use super::model::{
    DeploymentInputs, DeploymentKey, Observation, PoolInputs, Snapshot, UnixMillis,
};
use super::tick::{self, TickStates};
use super::tuning::{Tuning, Tunings};

/// HPA sync period.
pub const SYNC_MILLIS: i64 = 15_000;

/// A load series: `values[i]` is the load at `i × step_millis`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Time between points.
    pub step_millis: i64,
    /// Load in any unit, non-negative.
    pub values: Vec<f64>,
}

impl Series {
    /// Load at `t` (linear interpolation, held at the ends).
    pub fn at(&self, t: UnixMillis) -> f64 {
        if self.values.is_empty() {
            return 0.0;
        }
        let pos = t.max(0) as f64 / self.step_millis as f64;
        let i = pos.floor() as usize;
        if i + 1 >= self.values.len() {
            return *self.values.last().unwrap_or(&0.0);
        }
        let frac = pos - i as f64;
        self.values[i] * (1.0 - frac) + self.values[i + 1] * frac
    }

    /// Length of the series.
    pub fn duration_millis(&self) -> i64 {
        self.values.len().saturating_sub(1) as i64 * self.step_millis
    }

    /// Autocorrelation of the values at a lag of `lag_millis` (e.g. one day), when the series is longer than
    /// two lags and not constant: how strongly the trace repeats itself, i.e. whether a seasonal forecast has
    /// anything to learn.
    pub fn autocorrelation(&self, lag_millis: i64) -> Option<f64> {
        let lag = usize::try_from(lag_millis / self.step_millis.max(1)).ok()?;
        let n = self.values.len();
        if lag == 0 || n < 2 * lag {
            return None;
        }
        let mean = self.values.iter().sum::<f64>() / n as f64;
        let var: f64 = self.values.iter().map(|v| (v - mean).powi(2)).sum();
        if var <= f64::EPSILON {
            return None;
        }
        let cov: f64 = (lag..n)
            .map(|i| (self.values[i] - mean) * (self.values[i - lag] - mean))
            .sum();
        Some(cov / var)
    }

    /// The p-th percentile (0-100) of the values.
    pub fn percentile(&self, p: f64) -> f64 {
        let mut v: Vec<f64> = self
            .values
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v[idx.min(v.len() - 1)]
    }
}

/// Everything a backtest needs besides the series.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Load one pod serves at 100% of its CPU request.
    pub pod_capacity: f64,
    /// Seconds from pod start to Ready.
    pub startup_seconds: f64,
    /// Base target utilization, percent.
    pub target_percent: f64,
    /// HPA minReplicas.
    pub min_replicas: u32,
    /// HPA maxReplicas.
    pub max_replicas: u32,
    /// A scaling schedule whose floor replaces `min_replicas` hour by hour (as its CronJobs would patch the
    /// HPA); `None`: the constant `min_replicas`.
    pub schedule: Option<crate::schedule::Schedule>,
    /// CPU request per pod, milli-cores (drives the low-request policy).
    pub pod_request_milli: i64,
    /// Extra load (in load units) a new pod burns during warm-up, after it is Ready.
    pub warmup_load: f64,
    /// How long the warm-up burn lasts after pod start, seconds.
    pub warmup_seconds: f64,
    /// smart-autoscaler's startup filter, seconds.
    pub startup_filter_seconds: f64,
    /// Measured CPU of the node pool, percent (node-pressure scenario).
    pub pool_measured_percent: f64,
    /// Requested/allocatable of the node pool, percent (node-pressure scenario).
    pub pool_requested_percent: f64,
    /// smart-autoscaler's collection interval.
    pub interval_millis: i64,
    /// Relative noise on each measured usage sample (not on the demand itself), common to all pods of a tick:
    /// with tiny requests a few millicores of burst or accounting jitter swing utilization by tens of percent.
    /// 0.4 means each sample is off by up to ±40%.
    pub measurement_noise: f64,
    /// The smart run's short CPU window, seconds (the server's default query: 1 minute).
    pub short_window_seconds: u32,
    /// Decision settings.
    pub decision: DecisionConfig,
    /// Anomaly-detector thresholds (the detectors run in the tick of the smart and predictive runs).
    pub anomaly: AnomalyConfig,
    /// HPA behavior.
    pub behavior: Behavior,
    /// Forecasting for the predictive run (`None`: no predictive run).
    pub forecast: Option<ForecasterConfig>,
    /// Wall-clock time of the trace's first point, so forecasts see real days of the week and hours.
    pub start_millis: UnixMillis,
    /// Tuned targets fed to the decision's learned-target hook, as `(time since the start, target percent)`, each
    /// in force from its time on, as a deployment opted in to auto-tuning gets them ([`crate::tuning`]); empty:
    /// none. Used by the runs that go through the tick (smart, predictive, tuned).
    pub tuned_targets: Vec<(UnixMillis, f64)>,
    /// Time since the start from which runs are scored: the warm-up before it is replayed (models learn from
    /// it) but counted in no run's metrics, like the training part of a train/test split.
    pub score_from_millis: UnixMillis,
}

impl SimConfig {
    /// Defaults for a series: pod capacity so the series' p95 needs 10 pods at 100% of request.
    pub fn for_series(series: &Series) -> Self {
        let p95 = series.percentile(95.0);
        // Without pool data, pressure should neither raise nor lower the target.
        let decision = DecisionConfig::default();
        let neutral = decision.pressure.neutral_pool();
        SimConfig {
            pod_capacity: if p95 > 0.0 { p95 / 10.0 } else { 1.0 },
            startup_seconds: 60.0,
            target_percent: 70.0,
            min_replicas: 1,
            max_replicas: 200,
            schedule: None,
            pod_request_milli: 500,
            warmup_load: 0.0,
            warmup_seconds: 0.0,
            startup_filter_seconds: 60.0,
            pool_measured_percent: neutral.0,
            pool_requested_percent: neutral.1,
            interval_millis: 15_000,
            measurement_noise: 0.0,
            short_window_seconds: crate::cluster::DEFAULT_SHORT_WINDOW_SECONDS,
            decision,
            anomaly: AnomalyConfig::default(),
            behavior: Behavior::defaults(),
            forecast: None,
            start_millis: 0,
            tuned_targets: Vec::new(),
            score_from_millis: 0,
        }
    }
}

/// Which autoscaler drives the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// HPA on plain CPU utilization (Resource metric).
    Plain,
    /// HPA on `smart_cpu_utilization` (External Value).
    Smart,
    /// Perfect foresight with the same startup delay.
    Oracle,
    /// HPA on `smart_cpu_utilization` with the forecast blended in, learned online as the trace replays.
    Predictive,
    /// HPA on `smart_cpu_utilization` with [`SimConfig::tuned_targets`] (the reactive run, re-tuned as the
    /// trace replays; see `simulate`).
    Tuned,
    /// The predictive run with [`SimConfig::tuned_targets`]: everything `serve` does for a deployment that opted
    /// in to auto-tuning while forecasting is on.
    PredictiveTuned,
}

impl Mode {
    /// Whether the run learns forecasts online and blends them into the served value.
    pub fn learns_forecasts(self) -> bool {
        matches!(self, Mode::Predictive | Mode::PredictiveTuned)
    }
}

/// Outcome of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunMetrics {
    /// Pod-minutes of demand above 100% of ready capacity.
    pub saturated_pod_minutes: f64,
    /// Minutes the true utilization of ready pods was above the base target.
    pub over_target_minutes: f64,
    /// Pod-hours paid for (every pod, ready or starting).
    pub pod_hours: f64,
    /// Replica changes.
    pub scale_events: u32,
    /// Largest replica count.
    pub max_replicas: u32,
    /// Anomalies the tick's detectors opened in the scored part, per kind (`cpu_spike`, ...; every kind, zeros
    /// included). Only runs that go through the tick (smart, predictive) have them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<BTreeMap<AnomalyKind, u32>>,
}

/// One point of a run's timeline (one per HPA sync).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Time since the start.
    pub t: UnixMillis,
    /// Replicas (spec).
    pub replicas: u32,
    /// Ready pods.
    pub ready: u32,
    /// Demand, in pods at 100% of their request.
    pub demand_pods: f64,
    /// True utilization of ready pods, percent.
    pub utilization: f64,
    /// The value the HPA scaled on (plain utilization or smart value), percent.
    pub metric: f64,
}

/// A run's metrics and timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// Which autoscaler.
    pub mode: Mode,
    /// Outcome.
    pub metrics: RunMetrics,
    /// Timeline.
    #[serde(skip)]
    pub timeline: Vec<Point>,
    /// How the forecasts did (predictive runs only).
    pub forecast: Option<ForecastReport>,
}

/// Forecast accuracy over a whole replay, every forecast scored once its horizon passed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastReport {
    /// Per horizon (`"15m"`, ...), per stream (`profile`, `mstl`, `seasonal_naive`, `ensemble`): MAPE and MASE
    /// of point forecasts.
    pub horizons: BTreeMap<String, BTreeMap<&'static str, HorizonScores>>,
    /// The ensemble's lead-window forecasts (largest demand over the lead window).
    pub lead_window: HorizonScores,
    /// Forecast rises that did not come, over forecast rises (lead window). Counts the rises forecast while
    /// trust was closed too: they are scored so that trust can reopen, but could not move the served value.
    pub false_positive_rate: Option<f64>,
    /// The same over the rises forecast while trust was open (the ones that could raise the served value).
    pub trusted_false_positive_rate: Option<f64>,
    /// Confident rises forecast (lead window).
    pub forecast_rises: usize,
    /// Rises forecast while trust was open.
    pub trusted_forecast_rises: usize,
    /// Rises that came unforecast, over rises (lead window).
    pub false_negative_rate: Option<f64>,
    /// Share of decisions taken while the trust gate was open.
    pub trusted_share: f64,
    /// Share of decisions where the forecast raised the served value.
    pub applied_share: f64,
    /// Times the trust gate opened or closed.
    pub trust_transitions: u32,
    /// Model refits.
    pub refits: u64,
}

/// Accuracy of one stream at one horizon.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct HorizonScores {
    /// Forecasts scored.
    pub scored: usize,
    /// Mean absolute percentage error.
    pub mape: Option<f64>,
    /// Mean absolute error over the seasonal-naive forecast's.
    pub mase: Option<f64>,
}

impl From<crate::forecast::validate::Scores> for HorizonScores {
    fn from(s: crate::forecast::validate::Scores) -> Self {
        HorizonScores {
            scored: s.scored,
            mape: s.mape,
            mase: s.mase,
        }
    }
}

struct Pods {
    starts: VecDeque<UnixMillis>,
}

impl Pods {
    fn ready(&self, now: UnixMillis, startup_ms: i64) -> u32 {
        self.starts
            .iter()
            .filter(|s| now - **s >= startup_ms)
            .count() as u32
    }

    fn resize(&mut self, now: UnixMillis, desired: u32) {
        while (self.starts.len() as u32) < desired {
            self.starts.push_back(now);
        }
        while (self.starts.len() as u32) > desired {
            // The youngest pods go first, as the ReplicaSet controller prefers unready and newer pods.
            self.starts.pop_back();
        }
    }
}

/// Deterministic noise in [-1, 1] for a (time, stream) pair (splitmix64), so runs are reproducible and every
/// autoscaler sees the same measurements.
fn unit_noise(t: UnixMillis, stream: u64) -> f64 {
    let mut z =
        (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z as f64 / u64::MAX as f64) * 2.0 - 1.0
}

/// Average of `(t, v)` samples with `t` in `(now - window, now]`.
fn window_mean(samples: &VecDeque<(UnixMillis, f64)>, now: UnixMillis, window: i64) -> Option<f64> {
    let (sum, n) = samples
        .iter()
        .filter(|(t, _)| *t > now - window && *t <= now)
        .fold((0.0, 0usize), |(s, n), (_, v)| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

/// What serve's join ([`crate::cluster::join`]) makes of the replayed deployment at `at`: its CPU
/// utilization (the usage estimate over the ready pods' requests) and its pods, `ages` being the time since each
/// pod started. The node pool is the configured one.
fn observe(
    key: &DeploymentKey,
    config: &SimConfig,
    at: UnixMillis,
    utilization_percent: f64,
    replicas: u32,
    ready: u32,
    ages: &[i64],
) -> Observation {
    let filter_ms = (config.startup_filter_seconds * 1000.0) as i64;
    let inputs = DeploymentInputs {
        key: key.clone(),
        base_target_percent: config.target_percent,
        cpu_utilization_percent: utilization_percent,
        memory_utilization_percent: None,
        pod_cpu_request_milli: config.pod_request_milli,
        pod_memory_request_bytes: 0,
        ready_pods_by_node: BTreeMap::new(),
        replicas,
        ready_pods: ready,
        starting_pods: ages.iter().filter(|a| **a < filter_ms).count() as u32,
        max_replicas: Some(config.max_replicas),
        unschedulable_pods: 0,
        recent_pod_starts: ages
            .iter()
            .filter(|a| **a < crate::contract::RECENT_START_SECONDS * 1000)
            .count() as u32,
        startup_filter_seconds: config.startup_filter_seconds as u32,
        pool: PoolInputs {
            name: "simulated".into(),
            measured_cpu_percent: Some(config.pool_measured_percent),
            requested_cpu_percent: config.pool_requested_percent,
            nodes: 1,
        },
        annotations: BTreeMap::new(),
        window_seconds: 600,
        observed_at: at,
    };
    Observation {
        at,
        measured_at: at,
        deployments: vec![inputs],
        unmeasured: Vec::new(),
        nodes: Vec::new(),
    }
}

/// Replays `series` under `mode`.
pub fn run(series: &Series, config: &SimConfig, mode: Mode) -> Run {
    run_with_progress(series, config, mode, &mut |_| {})
}

/// [`run`], calling `progress` with the share of the trace replayed (0-1) about every percent: the caller's
/// progress bar (the domain only counts).
pub fn run_with_progress(
    series: &Series,
    config: &SimConfig,
    mode: Mode,
    progress: &mut dyn FnMut(f64),
) -> Run {
    let startup_ms = (config.startup_seconds * 1000.0) as i64;
    let warmup_ms = (config.warmup_seconds * 1000.0) as i64;
    let filter_ms = (config.startup_filter_seconds * 1000.0) as i64;
    let capacity = config.pod_capacity.max(1e-9);
    let target = config.target_percent;
    let mut spec = HpaSpec {
        min_replicas: config.min_replicas,
        max_replicas: config.max_replicas,
        tolerance: 0.1,
        behavior: config.behavior.clone(),
    };
    let initial = ((series.at(0) / (capacity * target / 100.0)).ceil() as u32)
        .clamp(config.min_replicas, config.max_replicas);
    let mut pods = Pods {
        starts: (0..initial).map(|_| -3_600_000).collect(),
    };
    // The HPA has been running at the initial count: a replay starts mid-run, not on a freshly created HPA
    // whose empty stabilization window would let the first noisy reading scale down at once.
    let mut hpa_state = HpaState::settled(initial, 0);
    let margin = crate::cluster::fast_rise_margin(config.pod_request_milli);
    let mut plain_samples: VecDeque<(UnixMillis, f64)> = VecDeque::new();
    let mut smart_samples: VecDeque<(UnixMillis, f64)> = VecDeque::new();
    // The tick's memory between collections, as the engine keeps it: decision states and the last snapshot.
    let key = DeploymentKey::new("simulate", "trace");
    let mut states = TickStates::new(DetectorStates::new(config.anomaly.clone()));
    let mut anomalies: BTreeMap<AnomalyKind, u32> =
        AnomalyKind::ALL.iter().map(|k| (*k, 0)).collect();
    let mut last: Option<Snapshot> = None;
    let mut served = 0.0;
    let mut forecaster = mode.learns_forecasts().then(|| {
        Forecaster::new(match &config.forecast {
            Some(f) => ForecasterConfig {
                // A replay keeps the whole trace: nothing here is bounded by memory the way a server is.
                max_history_steps: f.max_history_steps.max(30 * STEPS_PER_DAY),
                ..f.clone()
            },
            None => ForecasterConfig::default(),
        })
    });
    // What the forecasting task has published, as the engine reads it from its watch channel.
    let publish = |f: &Forecaster| Board::from([(key.clone(), f.published())]);
    let mut board = forecaster.as_ref().map(publish);
    let mut bucket = (0.0, 0usize);
    let (mut decisions, mut trusted_decisions, mut applied) = (0usize, 0usize, 0usize);
    let mut metrics = RunMetrics::default();
    let mut timeline = Vec::new();
    let tick_minutes = SYNC_MILLIS as f64 / 60_000.0;
    let end = series.duration_millis();
    let report_every = (end / 100).max(SYNC_MILLIS);
    let mut next_report = 0;
    let mut now = 0;
    while now <= end {
        if now >= next_report {
            progress(now as f64 / end.max(1) as f64);
            next_report += report_every;
        }
        let demand = series.at(now).max(0.0);
        let ready_starts: Vec<UnixMillis> = pods
            .starts
            .iter()
            .copied()
            .filter(|s| now - s >= startup_ms)
            .collect();
        let ready = ready_starts.len() as u32;
        let share = if ready > 0 {
            demand / ready as f64
        } else {
            0.0
        };
        let usage: Vec<(UnixMillis, f64)> = ready_starts
            .iter()
            .map(|s| {
                let burn = if now - s < warmup_ms {
                    config.warmup_load
                } else {
                    0.0
                };
                (
                    *s,
                    (share + burn) * (1.0 + config.measurement_noise * unit_noise(now, 0)),
                )
            })
            .collect();
        let true_util = if ready > 0 {
            demand / (ready as f64 * capacity) * 100.0
        } else {
            f64::INFINITY
        };

        // Plain: pods become visible to the metrics pipeline one metric window after turning Ready.
        let visible: Vec<f64> = usage
            .iter()
            .filter(|(s, _)| now - s >= startup_ms + 60_000)
            .map(|(_, u)| *u)
            .collect();
        let plain_now = if visible.is_empty() {
            usage.iter().map(|(_, u)| u).sum::<f64>() / usage.len().max(1) as f64
        } else {
            visible.iter().sum::<f64>() / visible.len() as f64
        } / capacity
            * 100.0;
        plain_samples.push_back((now, plain_now));
        // Smart: the deployment's usage, estimated from pods past the startup filter; divided by the current
        // ready capacity when read, so capacity just added shows at once and the window cannot compound scale-ups.
        let filtered: Vec<f64> = usage
            .iter()
            .filter(|(s, _)| now - s >= filter_ms)
            .map(|(_, u)| *u)
            .collect();
        // Young pods are counted at the mean of the filtered ones: their share of the load, not their warm-up.
        let filtered_usage = if filtered.is_empty() {
            usage.iter().map(|(_, u)| *u).sum::<f64>()
        } else {
            filtered.iter().sum::<f64>() / filtered.len() as f64 * usage.len() as f64
        };
        smart_samples.push_back((now, filtered_usage));
        while plain_samples
            .front()
            .is_some_and(|(t, _)| *t <= now - 600_000)
        {
            plain_samples.pop_front();
        }
        while smart_samples
            .front()
            .is_some_and(|(t, _)| *t <= now - 600_000)
        {
            smart_samples.pop_front();
        }

        let current = pods.starts.len() as u32;
        if let Some(schedule) = &config.schedule {
            spec.min_replicas = schedule
                .floor_at(config.start_millis + now)
                .clamp(config.min_replicas, config.max_replicas);
        }
        let (desired, metric) = match mode {
            Mode::Plain => {
                let util = window_mean(&plain_samples, now, 60_000).unwrap_or(0.0);
                let counts = PodCounts {
                    ready,
                    unready: current - ready,
                    missing: 0,
                };
                let proposal = hpa::resource_utilization_proposal(
                    util,
                    target,
                    counts,
                    current,
                    spec.tolerance,
                );
                (
                    hpa::normalize(&spec, &mut hpa_state, now, current, proposal),
                    util,
                )
            }
            Mode::Smart | Mode::Predictive | Mode::Tuned | Mode::PredictiveTuned => {
                if let Some(f) = forecaster.as_mut() {
                    // Demand in the forecasters' unit: the measured usage as percent of one pod's capacity.
                    if now > 0 && now % BUCKET_MILLIS == 0 && bucket.1 > 0 {
                        f.push(
                            config.start_millis + now - BUCKET_MILLIS,
                            bucket.0 / bucket.1 as f64,
                        );
                        bucket = (0.0, 0);
                        if f.needs_refit() && f.observed() >= STEPS_PER_DAY {
                            f.refit();
                        }
                        board = Some(publish(f));
                    }
                    bucket.0 += filtered_usage / capacity * 100.0;
                    bucket.1 += 1;
                }
                let interval = config.interval_millis.max(SYNC_MILLIS);
                if now % interval == 0 {
                    let avg10 = window_mean(&smart_samples, now, 600_000).unwrap_or(0.0);
                    let short_ms = i64::from(config.short_window_seconds) * 1000;
                    let avg1 = window_mean(&smart_samples, now, short_ms).unwrap_or(0.0);
                    let avg5 = window_mean(&smart_samples, now, 300_000).unwrap_or(0.0);
                    // The usage estimate of the join, over the ready pods' capacity now.
                    let capacity_now = ready.max(1) as f64 * capacity;
                    let utilization = crate::cluster::estimate_usage(
                        avg10,
                        avg5,
                        Some(avg1),
                        f64::from(config.short_window_seconds),
                        margin,
                    ) / capacity_now
                        * 100.0;
                    let ages: Vec<i64> = pods.starts.iter().map(|s| now - s).collect();
                    // One clock for the tick, the forecasts and the decision memory: the trace's wall clock.
                    let at = config.start_millis + now;
                    let tuned = config
                        .tuned_targets
                        .iter()
                        .rev()
                        .find(|(from, _)| *from <= now)
                        .map(|(from, t)| {
                            Tunings::from([(
                                key.clone(),
                                Tuning::given(target, *t, config.start_millis + from),
                            )])
                        });
                    let mut observation =
                        observe(&key, config, at, utilization, current, ready, &ages);
                    if tuned.is_some() {
                        // The replayed deployment is one that opted in.
                        for d in &mut observation.deployments {
                            d.annotations.insert(
                                crate::contract::AUTO_TUNE_ANNOTATION.into(),
                                "true".into(),
                            );
                        }
                    }
                    let snapshot = tick::step(
                        observation,
                        Duration::from_millis(interval.unsigned_abs()),
                        &config.decision,
                        &mut states,
                        board.as_ref(),
                        tuned.as_ref(),
                        last.as_ref(),
                    );
                    if let Some(d) = snapshot.deployments.get(&key) {
                        if let Some(advice) = &d.explanation.forecast {
                            decisions += 1;
                            trusted_decisions += usize::from(advice.trusted);
                        }
                        applied += usize::from(d.explanation.forecast_applied);
                        served = d.smart_percent;
                    }
                    if now >= config.score_from_millis {
                        for a in snapshot.anomalies.iter().filter(|a| a.started_at == at) {
                            *anomalies.entry(a.kind).or_default() += 1;
                        }
                    }
                    last = Some(snapshot);
                }
                let proposal =
                    hpa::external_value_proposal(served, target, ready, current, spec.tolerance);
                (
                    hpa::normalize(&spec, &mut hpa_state, now, current, proposal),
                    served,
                )
            }
            Mode::Oracle => {
                // Enough pods, started now, to meet the target for the demand once they are ready.
                let horizon = startup_ms + SYNC_MILLIS;
                let peak = (0..=horizon / SYNC_MILLIS)
                    .map(|k| series.at(now + k * SYNC_MILLIS))
                    .fold(0.0f64, f64::max);
                let needed = (peak / (capacity * target / 100.0)).ceil() as u32;
                (
                    needed.clamp(spec.min_replicas, config.max_replicas),
                    true_util,
                )
            }
        };
        // The warm-up (training) period is replayed but not scored, for every run alike.
        let scored = now >= config.score_from_millis;
        if desired != current {
            metrics.scale_events += u32::from(scored);
            pods.resize(now, desired);
        }

        if scored {
            let ready_capacity_pods = ready as f64;
            let demand_pods = demand / capacity;
            metrics.saturated_pod_minutes +=
                (demand_pods - ready_capacity_pods).max(0.0) * tick_minutes;
            if true_util > target {
                metrics.over_target_minutes += tick_minutes;
            }
            metrics.pod_hours += current as f64 * tick_minutes / 60.0;
            metrics.max_replicas = metrics.max_replicas.max(pods.starts.len() as u32);
        }
        timeline.push(Point {
            t: now,
            replicas: pods.starts.len() as u32,
            ready: pods.ready(now, startup_ms),
            demand_pods: demand / capacity,
            utilization: if true_util.is_finite() {
                true_util
            } else {
                0.0
            },
            metric,
        });
        now += SYNC_MILLIS;
    }
    let forecast = forecaster.map(|f| {
        let horizons = f
            .config()
            .score_horizons
            .iter()
            .map(|h| {
                let label = format!("{}m", *h as i64 * BUCKET_MILLIS / 60_000);
                let streams = Stream::ALL
                    .into_iter()
                    .filter_map(|s| f.point_lifetime_scores(s, *h).map(|x| (s.name(), x.into())))
                    .collect();
                (label, streams)
            })
            .collect();
        let lead = f.lead_lifetime_scores(Stream::Ensemble);
        let share = |n: usize| {
            if decisions > 0 {
                n as f64 / decisions as f64
            } else {
                0.0
            }
        };
        ForecastReport {
            horizons,
            lead_window: lead.into(),
            false_positive_rate: lead.false_positive_rate,
            trusted_false_positive_rate: lead.trusted_false_positive_rate,
            forecast_rises: lead.forecast_spikes,
            trusted_forecast_rises: lead.trusted_forecast_spikes,
            false_negative_rate: lead.false_negative_rate,
            trusted_share: share(trusted_decisions),
            applied_share: share(applied),
            trust_transitions: f.trust_transitions(),
            refits: f.refits(),
        }
    });
    // Every run but plain and oracle goes through the tick, whose detectors open anomalies.
    if !matches!(mode, Mode::Plain | Mode::Oracle) {
        metrics.anomalies = Some(anomalies);
    }
    Run {
        mode,
        metrics,
        timeline,
        forecast,
    }
}

/// Runs plain, smart and oracle, and the predictive run when `config.forecast` is set.
pub fn compare(series: &Series, config: &SimConfig) -> Vec<Run> {
    compare_with_progress(series, config, &mut |_, _| {})
}

/// [`compare`], calling `progress` with the mode being replayed and the share of the whole comparison done
/// (0-1; the predictive run, which refits models, counts for as much as the other three together).
pub fn compare_with_progress(
    series: &Series,
    config: &SimConfig,
    progress: &mut dyn FnMut(Mode, f64),
) -> Vec<Run> {
    let mut modes = vec![(Mode::Plain, 1.0), (Mode::Smart, 1.0), (Mode::Oracle, 1.0)];
    if config.forecast.is_some() {
        modes.push((Mode::Predictive, 3.0));
    }
    let total: f64 = modes.iter().map(|(_, w)| w).sum();
    let mut done = 0.0;
    modes
        .into_iter()
        .map(|(mode, weight)| {
            let run = run_with_progress(series, config, mode, &mut |share| {
                progress(mode, (done + share * weight) / total)
            });
            done += weight;
            run
        })
        .collect()
}

/// The right-sizing replay of a trace: the request recommendation learned from a run (VPA-style, one sample a
/// minute of its ready pods' true usage, see [`rightsizing`](crate::rightsizing)), the HPA-aware plan at the
/// run's mean demand, and the smart run replayed with the recommended request and target, so a recommendation is
/// judged by the saturation and capacity it gives, not only by its arithmetic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RightsizingReplay {
    /// The pod's recommendation (or why there is none).
    pub recommendation: crate::rightsizing::ContainerRecommendation,
    /// The plan: request and target together.
    pub plan: crate::rightsizing::PodPlan,
    /// Mean demand over the replay, cores.
    pub demand_cores: f64,
    /// Request replayed, milli-cores (the recommended one; `None`: no plan to replay).
    pub request_milli: Option<i64>,
    /// Target replayed, percent.
    pub target_percent: Option<f64>,
    /// The run as it was: its requested core-hours (pod-hours × request).
    pub requested_core_hours_now: f64,
    /// The replay's metrics with the recommended request and target.
    pub run: Option<RunMetrics>,
    /// Its requested core-hours.
    pub requested_core_hours: Option<f64>,
}

/// Replays `series` in `mode` with the request and target [`rightsizing::plan`](crate::rightsizing::plan)
/// recommends from `run` (a run of the same series and config, with its timeline). The demand is the same: a pod
/// with a smaller request reaches 100% of it at proportionally less load, so the pod capacity scales with the
/// request. Memory is not in a trace, so only CPU is planned. Too short a trace (under a day of samples) is
/// "not enough data", and nothing is replayed.
pub fn rightsizing_replay(
    series: &Series,
    config: &SimConfig,
    run: &Run,
    mode: Mode,
) -> RightsizingReplay {
    use crate::rightsizing::{self, ContainerHistory, PlanInput, PodPlan, Scaling};
    let request = config.pod_request_milli.max(0) as f64 / 1000.0;
    let mut history = ContainerHistory::new("pod");
    let (mut last, mut demand_sum, mut samples) = (None::<UnixMillis>, 0.0, 0u32);
    for p in &run.timeline {
        if last.is_some_and(|l| p.t - l < 60_000) || p.ready == 0 {
            continue;
        }
        let usage = p.utilization / 100.0 * request;
        if usage.is_finite() && history.add_cpu(config.start_millis + p.t, usage, request) {
            last = Some(p.t);
            demand_sum += p.demand_pods * request;
            samples += 1;
        }
    }
    let demand_cores = if samples > 0 {
        demand_sum / f64::from(samples)
    } else {
        0.0
    };
    let recommendation = history.recommend(1);
    let plan = rightsizing::plan(
        &PlanInput {
            cpu_request_cores: request,
            memory_request_bytes: 0.0,
            demand_cores,
            scaling: Scaling::CpuHpa {
                target: config.target_percent / 100.0,
                min_replicas: config.min_replicas,
                max_replicas: config.max_replicas,
            },
            price: crate::cost::Price::OPENCOST,
        },
        std::slice::from_ref(&recommendation),
    );
    let requested_core_hours_now = run.metrics.pod_hours * request;
    let projection = match &plan {
        PodPlan::Change { projection, .. } | PodPlan::Keep { projection, .. } => Some(*projection),
        _ => None,
    };
    let replay = projection.filter(|p| p.cpu_request_milli > 0).map(|p| {
        let mut c = config.clone();
        let new_request = p.cpu_request_milli as f64 / 1000.0;
        c.pod_capacity = config.pod_capacity * new_request / request.max(1e-9);
        c.pod_request_milli = p.cpu_request_milli;
        c.target_percent = p.target_percent.map_or(config.target_percent, f64::from);
        c.forecast = config.forecast.clone();
        let replayed = self::run(series, &c, mode);
        (
            p.cpu_request_milli,
            c.target_percent,
            replayed.metrics,
            new_request,
        )
    });
    RightsizingReplay {
        recommendation,
        plan,
        demand_cores,
        request_milli: replay.as_ref().map(|r| r.0),
        target_percent: replay.as_ref().map(|r| r.1),
        requested_core_hours_now,
        requested_core_hours: replay.as_ref().map(|r| r.2.pod_hours * r.3),
        run: replay.map(|r| r.2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(load: f64, minutes: usize) -> Series {
        Series {
            step_millis: 60_000,
            values: vec![load; minutes],
        }
    }

    #[test]
    fn autocorrelation_sees_a_daily_cycle() {
        let daily = Series {
            step_millis: 3_600_000,
            values: (0..24 * 10)
                .map(|h| 10.0 + ((h % 24) as f64 / 24.0 * std::f64::consts::TAU).sin())
                .collect(),
        };
        assert!(daily.autocorrelation(86_400_000).unwrap() > 0.85);
        assert!(daily.autocorrelation(43_200_000).unwrap() < -0.8);
        assert_eq!(flat(1.0, 100).autocorrelation(60_000), None);
    }

    #[test]
    fn interpolates_and_holds() {
        let s = Series {
            step_millis: 1000,
            values: vec![0.0, 10.0],
        };
        assert_eq!(s.at(500), 5.0);
        assert_eq!(s.at(5000), 10.0);
        assert_eq!(s.percentile(100.0), 10.0);
    }

    #[test]
    fn flat_load_is_stable_for_every_mode() {
        let series = flat(10.0, 120);
        let mut config = SimConfig::for_series(&series);
        config.pod_capacity = 1.0;
        for mode in [Mode::Plain, Mode::Smart, Mode::Oracle] {
            let r = run(&series, &config, mode);
            assert_eq!(r.metrics.saturated_pod_minutes, 0.0, "{mode:?}");
            assert!(
                r.metrics.scale_events <= 2,
                "{mode:?}: {}",
                r.metrics.scale_events
            );
        }
    }

    #[test]
    fn step_up_saturates_until_new_pods_are_ready() {
        let mut values = vec![5.0; 30];
        values.extend(vec![20.0; 90]);
        let series = Series {
            step_millis: 60_000,
            values,
        };
        let mut config = SimConfig::for_series(&series);
        config.pod_capacity = 1.0;
        let [plain, smart, oracle]: [Run; 3] = compare(&series, &config).try_into().unwrap();
        assert!(plain.metrics.saturated_pod_minutes > 0.0);
        assert!(oracle.metrics.saturated_pod_minutes <= plain.metrics.saturated_pod_minutes);
        assert!(
            smart.metrics.max_replicas >= 20,
            "smart never caught up: {:?}",
            smart.metrics
        );
        assert!(oracle.metrics.max_replicas >= 29);
    }

    #[test]
    fn oracle_never_saturates_a_smooth_series() {
        let values: Vec<f64> = (0..600)
            .map(|i| 10.0 + 5.0 * (i as f64 / 60.0).sin())
            .collect();
        let series = Series {
            step_millis: 60_000,
            values,
        };
        let config = SimConfig::for_series(&series);
        let oracle = run(&series, &config, Mode::Oracle);
        assert!(
            oracle.metrics.saturated_pod_minutes < 1e-9,
            "{:?}",
            oracle.metrics
        );
    }

    #[test]
    fn startup_filter_avoids_false_scale_up_on_warmup() {
        // Steady load; a restart wave every 30 minutes replaces pods, each burning a core while warming up.
        let series = flat(7.0, 240);
        let mut config = SimConfig::for_series(&series);
        config.pod_capacity = 1.0;
        config.min_replicas = 10;
        config.startup_seconds = 20.0;
        config.warmup_load = 1.5;
        config.warmup_seconds = 150.0;
        config.startup_filter_seconds = 180.0;
        let plain = run(&series, &config, Mode::Plain);
        let smart = run(&series, &config, Mode::Smart);
        assert!(smart.metrics.scale_events <= plain.metrics.scale_events);
    }

    #[test]
    fn progress_is_reported_in_order_up_to_the_whole_comparison() {
        let series = flat(2.0, 600);
        let config = SimConfig::for_series(&series);
        let mut seen: Vec<(Mode, f64)> = Vec::new();
        let runs = compare_with_progress(&series, &config, &mut |m, p| seen.push((m, p)));
        assert_eq!(runs.len(), 3);
        assert!(seen.len() > 30, "{}", seen.len());
        assert!(seen.windows(2).all(|w| w[1].1 >= w[0].1), "monotonic");
        assert!(seen.first().unwrap().1 < 0.01 && seen.last().unwrap().1 > 0.95);
        assert_eq!(seen.last().unwrap().0, Mode::Oracle);
        // The same runs as without a progress hook.
        let plain = compare(&series, &config);
        assert_eq!(plain[1].metrics.pod_hours, runs[1].metrics.pod_hours);
    }

    #[test]
    fn a_rightsizing_replay_uses_the_recommended_request_and_a_short_trace_is_not_enough_data() {
        // Two days, a step a minute, steady demand: 4 pods' worth at 100% of a 500m request = 2 cores.
        let series = |minutes: usize| Series {
            step_millis: 60_000,
            values: vec![4.0; minutes],
        };
        let two_days = series(2 * 24 * 60);
        let mut config = SimConfig::for_series(&two_days);
        config.pod_capacity = 1.0;
        config.min_replicas = 8;
        let smart = run(&two_days, &config, Mode::Smart);
        let r = rightsizing_replay(&two_days, &config, &smart, Mode::Smart);
        assert!((r.demand_cores - 2.0).abs() < 1e-6, "{r:?}");
        // minReplicas 8 holds 8 × 500m = 4 cores for 2 of demand: the plan shrinks the request.
        let replayed = r.run.as_ref().expect("replayed");
        let request = r.request_milli.unwrap();
        assert!(request < 500, "{r:?}");
        assert_eq!(
            replayed.saturated_pod_minutes, 0.0,
            "steady demand: the recommended request must not saturate"
        );
        assert!(
            r.requested_core_hours.unwrap() < r.requested_core_hours_now,
            "{r:?}"
        );
        // An hour of trace: not enough data, nothing replayed.
        let hour = series(60);
        let smart = run(&hour, &config, Mode::Smart);
        let r = rightsizing_replay(&hour, &config, &smart, Mode::Smart);
        assert!(
            matches!(r.plan, crate::rightsizing::PodPlan::NotEnoughData { .. }),
            "{r:?}"
        );
        assert!(r.run.is_none() && r.request_milli.is_none());
    }
}
