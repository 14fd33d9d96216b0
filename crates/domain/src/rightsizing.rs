//! Right-sizing: request recommendations per container from a decaying usage histogram, the way the Vertical
//! Pod Autoscaler's recommender makes them, and the HPA-aware step that turns a pod's recommended CPU request into
//! a request *and* an HPA target with the projected replicas and monthly cost.
//!
//! The histogram and the estimators follow VPA's recommender (kubernetes/autoscaler,
//! `vertical-pod-autoscaler/pkg/recommender`); each constant below names the file it comes from. What differs,
//! on purpose:
//!
//! - Too little history is a state, not a number: below [`MIN_HISTORY_DAYS`] of history the result is
//!   [`ContainerRecommendation::NotEnoughData`] (VPA answers from the first sample, with an infinite upper bound).
//! - The histogram is serializable (serde) so the store can keep it, and its memory is bounded and reported
//!   ([`DecayingHistogram::memory_bytes`]).
//! - For a deployment scaled by a CPU-utilization HPA, a request change alone moves utilization and so the
//!   replica count; [`plan_requests`] recommends the request and the target together (rule in its docs and in
//!   `docs/cost.md`).
//!
//! No IO, no clock: sample times are passed in.

use serde::{Deserialize, Serialize};

use crate::cost::{GIB, PROJECTION_HOURS, Price};
use crate::model::UnixMillis;

/// Half-life of a sample's weight, for CPU and memory: 24 h (`model/aggregations_config.go`,
/// `DefaultCPUHistogramDecayHalfLife`, `DefaultMemoryHistogramDecayHalfLife`).
pub const HALF_LIFE_MILLIS: i64 = 24 * 3_600_000;
/// Each bucket is 5% wider than the one before (`model/aggregations_config.go`, `DefaultHistogramBucketSizeGrowth`).
pub const BUCKET_GROWTH: f64 = 0.05;
/// Size of the first CPU bucket, cores. VPA versions differ: 0.001 core in the one read
/// (`model/aggregations_config.go`, `cpuHistogramOptions`, at commit 115087573e54), 0.01 core in others; the
/// finer one is used so the 25m minimum is not one bucket wide.
pub const CPU_FIRST_BUCKET_CORES: f64 = 0.001;
/// Largest CPU value with its own bucket, cores (`cpuHistogramOptions`: 1000 cores).
pub const CPU_MAX_CORES: f64 = 1000.0;
/// Size of the first memory bucket, bytes (`memoryHistogramOptions`: 10 MB).
pub const MEMORY_FIRST_BUCKET_BYTES: f64 = 1e7;
/// Largest memory value with its own bucket, bytes (`memoryHistogramOptions`: 1 TB).
pub const MEMORY_MAX_BYTES: f64 = 1e12;
/// Smallest weight of a CPU sample before decay, whatever the request (`model/aggregations_config.go`,
/// `minSampleWeight`; `aggregate_container_state.go` weighs CPU samples by `max(request cores, 0.1)`).
pub const MIN_SAMPLE_WEIGHT: f64 = 0.1;
/// A bucket lighter than this is empty (`epsilon = 0.001 * minSampleWeight`).
pub const EPSILON: f64 = 0.001 * MIN_SAMPLE_WEIGHT;
/// When the decay factor would pass 2^this, the reference time moves forward and the weights are rescaled
/// (`util/decaying_histogram.go`, `maxDecayExponent`).
pub const MAX_DECAY_EXPONENT: i64 = 100;
/// One memory peak per container per interval of this length (`DefaultMemoryAggregationInterval`: 24 h).
pub const MEMORY_AGGREGATION_INTERVAL_MILLIS: i64 = 24 * 3_600_000;
/// Safety margin added to every estimate (`logic/recommender.go`, `recommendation-margin-fraction`: 0.15).
pub const SAFETY_MARGIN: f64 = 0.15;
/// Percentile of the target (`target-cpu-percentile`, `target-memory-percentile`: 0.9).
pub const TARGET_PERCENTILE: f64 = 0.9;
/// Percentile of the lower bound (`recommendation-lower-bound-*-percentile`: 0.5).
pub const LOWER_BOUND_PERCENTILE: f64 = 0.5;
/// Percentile of the upper bound (`recommendation-upper-bound-*-percentile`: 0.95).
pub const UPPER_BOUND_PERCENTILE: f64 = 0.95;
/// Minimum CPU of a pod, cores, shared evenly by its containers (`pod-recommendation-min-cpu-millicores`: 25).
pub const POD_MIN_CPU_CORES: f64 = 0.025;
/// Minimum memory of a pod, bytes, shared evenly by its containers (`pod-recommendation-min-memory-mb`: 250,
/// times 1024 × 1024 in `GetRecommendedPodResources`).
pub const POD_MIN_MEMORY_BYTES: f64 = 250.0 * 1024.0 * 1024.0;
/// Upper bound confidence multiplier and exponent: `bound × (1 + 1/confidence)^1` (`logic/recommender.go`:
/// ×2 with a day of history, ×1.14 with a week).
pub const UPPER_CONFIDENCE: (f64, f64) = (1.0, 1.0);
/// Lower bound confidence multiplier and exponent: `bound × (1 + 0.001/confidence)^-2` (`logic/recommender.go`).
pub const LOWER_CONFIDENCE: (f64, f64) = (0.001, -2.0);
/// Samples per day that make one day of confidence (`logic/estimator.go`, `getConfidence`: one a minute).
pub const SAMPLES_PER_CONFIDENCE_DAY: f64 = 60.0 * 24.0;
/// History needed before anything is recommended, days of confidence (ours; VPA's confidence interval is 24 h).
pub const MIN_HISTORY_DAYS: f64 = 1.0;

/// Which bucket scheme a histogram uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// CPU, in cores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

impl Scale {
    fn first_bucket(self) -> f64 {
        match self {
            Scale::Cpu => CPU_FIRST_BUCKET_CORES,
            Scale::Memory => MEMORY_FIRST_BUCKET_BYTES,
        }
    }

    fn ratio(self) -> f64 {
        1.0 + BUCKET_GROWTH
    }

    /// Number of buckets: `ceil(log_ratio(max × (ratio − 1) / first + 1)) + 1` (`util/histogram_options.go`,
    /// `NewExponentialHistogramOptions`): 223 for CPU, 176 for memory.
    pub fn buckets(self) -> usize {
        let max = match self {
            Scale::Cpu => CPU_MAX_CORES,
            Scale::Memory => MEMORY_MAX_BYTES,
        };
        let r = self.ratio();
        ((max * (r - 1.0) / self.first_bucket() + 1.0).ln() / r.ln()).ceil() as usize + 1
    }

    /// The bucket of `value`: `floor(log_ratio(value × (ratio − 1) / first + 1))`, clamped to the range.
    pub fn bucket(self, value: f64) -> usize {
        let first = self.first_bucket();
        if value.is_nan() || value < first {
            return 0;
        }
        let r = self.ratio();
        let b = ((value * (r - 1.0) / first + 1.0).ln() / r.ln()).floor();
        (b as usize).min(self.buckets() - 1)
    }

    /// Where bucket `i` starts: `first × (ratio^i − 1) / (ratio − 1)`.
    pub fn bucket_start(self, i: usize) -> f64 {
        if i == 0 {
            return 0.0;
        }
        let r = self.ratio();
        self.first_bucket() * (r.powi(i as i32) - 1.0) / (r - 1.0)
    }
}

/// A histogram whose samples lose half their weight every [`HALF_LIFE_MILLIS`] (`util/decaying_histogram.go`
/// over `util/histogram.go`): a sample at time `t` weighs `weight × 2^((t − reference) / half-life)`, and only
/// relative weights matter, so the reference moves forward (rescaling everything) before the factor overflows.
/// At most [`Scale::buckets`] weights: bounded memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "HistogramRepr", into = "HistogramRepr")]
pub struct DecayingHistogram {
    scale: Scale,
    /// Always a multiple of the half-life.
    reference_millis: UnixMillis,
    /// Empty until the first sample, then one weight per bucket.
    weights: Vec<f64>,
    total_weight: f64,
}

/// The stored form: only the buckets from the first to the last non-empty one.
#[derive(Serialize, Deserialize)]
struct HistogramRepr {
    scale: Scale,
    reference_millis: UnixMillis,
    first_bucket: usize,
    weights: Vec<f64>,
}

impl From<DecayingHistogram> for HistogramRepr {
    fn from(h: DecayingHistogram) -> HistogramRepr {
        let (first, last) = h.range().unwrap_or((0, 0));
        let weights = if h.range().is_some() {
            h.weights[first..=last].to_vec()
        } else {
            Vec::new()
        };
        HistogramRepr {
            scale: h.scale,
            reference_millis: h.reference_millis,
            first_bucket: first,
            weights,
        }
    }
}

impl TryFrom<HistogramRepr> for DecayingHistogram {
    type Error = String;

    fn try_from(r: HistogramRepr) -> Result<DecayingHistogram, String> {
        let n = r.scale.buckets();
        if r.first_bucket.saturating_add(r.weights.len()) > n {
            return Err(format!(
                "{} weights from bucket {} do not fit in {n} buckets",
                r.weights.len(),
                r.first_bucket
            ));
        }
        if let Some(w) = r.weights.iter().find(|w| !(w.is_finite() && **w >= 0.0)) {
            return Err(format!("bucket weight {w} is not finite and non-negative"));
        }
        if r.reference_millis.rem_euclid(HALF_LIFE_MILLIS) != 0 {
            return Err(format!(
                "reference time {} is not a multiple of the half-life",
                r.reference_millis
            ));
        }
        let mut h = DecayingHistogram::new(r.scale);
        h.reference_millis = r.reference_millis;
        if !r.weights.is_empty() {
            h.weights = vec![0.0; n];
            h.weights[r.first_bucket..r.first_bucket + r.weights.len()].copy_from_slice(&r.weights);
            h.total_weight = r.weights.iter().sum();
            if !h.total_weight.is_finite() {
                return Err("total weight is not finite".to_string());
            }
        }
        Ok(h)
    }
}

impl DecayingHistogram {
    /// An empty histogram.
    pub fn new(scale: Scale) -> DecayingHistogram {
        DecayingHistogram {
            scale,
            reference_millis: 0,
            weights: Vec::new(),
            total_weight: 0.0,
        }
    }

    /// Bytes this histogram holds in memory: at most `size_of::<Self>() + 8 × buckets` (1,832 bytes for CPU,
    /// 1,456 for memory, on 64-bit targets).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.weights.capacity() * std::mem::size_of::<f64>()
    }

    /// No bucket holds [`EPSILON`] or more.
    pub fn is_empty(&self) -> bool {
        self.range().is_none()
    }

    /// First and last bucket holding at least [`EPSILON`].
    fn range(&self) -> Option<(usize, usize)> {
        let first = self.weights.iter().position(|&w| w >= EPSILON)?;
        let last = self.weights.iter().rposition(|&w| w >= EPSILON)?;
        Some((first, last))
    }

    /// Adds a sample of `value` with `weight` at `at`. Non-finite or negative values and weights are refused
    /// (false), as VPA refuses negative usage.
    pub fn add(&mut self, value: f64, weight: f64, at: UnixMillis) -> bool {
        if !(value.is_finite() && value >= 0.0 && weight.is_finite() && weight >= 0.0) {
            return false;
        }
        let w = weight * self.decay_factor(at);
        if !w.is_finite() || !(self.total_weight + w).is_finite() {
            return false;
        }
        if self.weights.is_empty() {
            self.weights = vec![0.0; self.scale.buckets()];
        }
        self.weights[self.scale.bucket(value)] += w;
        self.total_weight += w;
        true
    }

    /// Removes a sample added before (`SubtractSample`: a bucket never goes below 0).
    fn subtract(&mut self, value: f64, weight: f64, at: UnixMillis) {
        if self.weights.is_empty() {
            return;
        }
        let b = self.scale.bucket(value);
        let mut w = weight * self.decay_factor(at);
        if w > self.weights[b] - EPSILON {
            w = self.weights[b];
        }
        self.weights[b] -= w;
        self.total_weight = (self.total_weight - w).max(0.0);
    }

    /// `2^((at − reference) / half-life)`, moving the reference to `at` (rounded to a half-life multiple) first
    /// when the exponent would pass [`MAX_DECAY_EXPONENT`].
    fn decay_factor(&mut self, at: UnixMillis) -> f64 {
        let max_allowed = self
            .reference_millis
            .saturating_add(HALF_LIFE_MILLIS.saturating_mul(MAX_DECAY_EXPONENT));
        if at > max_allowed {
            // Round to the nearest multiple, as Go's Time.Round does.
            let new_reference = at
                .saturating_add(HALF_LIFE_MILLIS / 2)
                .div_euclid(HALF_LIFE_MILLIS)
                .saturating_mul(HALF_LIFE_MILLIS);
            let shift = self.reference_millis.saturating_sub(new_reference) / HALF_LIFE_MILLIS;
            // Weights shrink by 2^shift (shift < 0); those below f64's range become 0, which is what they are.
            let factor = 2f64.powi(shift.clamp(-2000, 0) as i32);
            for w in &mut self.weights {
                *w *= factor;
            }
            self.total_weight *= factor;
            self.reference_millis = new_reference;
        }
        2f64.powf(at.saturating_sub(self.reference_millis) as f64 / HALF_LIFE_MILLIS as f64)
    }

    /// The `p`-th percentile (0..=1) as VPA's `Percentile` computes it: the end of the first bucket at which the
    /// running weight reaches `p ×` total (the start of the last bucket, which has no end); `None` when empty.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let (first, last) = self.range()?;
        let threshold = p * self.total_weight;
        let mut partial = 0.0;
        let mut bucket = first;
        while bucket < last {
            partial += self.weights[bucket];
            if partial >= threshold {
                break;
            }
            bucket += 1;
        }
        let n = self.scale.buckets();
        Some(if bucket < n - 1 {
            self.scale.bucket_start(bucket + 1)
        } else {
            self.scale.bucket_start(bucket)
        })
    }
}

/// One container's usage history: a decaying histogram of CPU usage and one of daily memory peaks, with the
/// sample count and span VPA's confidence is computed from (`AggregateContainerState` plus the per-container
/// memory peak of `ContainerState`). Serializable so the store can keep it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerHistory {
    /// Container name.
    pub container: String,
    cpu: DecayingHistogram,
    memory_peaks: DecayingHistogram,
    first_sample_at: Option<UnixMillis>,
    last_sample_at: Option<UnixMillis>,
    total_samples: u64,
    memory_window_end: Option<UnixMillis>,
    /// Peak of the current memory interval, bytes (0: none yet).
    memory_peak: f64,
    last_memory_at: Option<UnixMillis>,
}

impl ContainerHistory {
    /// An empty history.
    pub fn new(container: impl Into<String>) -> ContainerHistory {
        ContainerHistory {
            container: container.into(),
            cpu: DecayingHistogram::new(Scale::Cpu),
            memory_peaks: DecayingHistogram::new(Scale::Memory),
            first_sample_at: None,
            last_sample_at: None,
            total_samples: 0,
            memory_window_end: None,
            memory_peak: 0.0,
            last_memory_at: None,
        }
    }

    /// Bytes held in memory (bounded: two histograms and the name).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() - 2 * std::mem::size_of::<DecayingHistogram>()
            + self.cpu.memory_bytes()
            + self.memory_peaks.memory_bytes()
            + self.container.capacity()
    }

    /// Adds a CPU usage sample (cores, over the interval starting at `at`), weighted by the request as VPA does
    /// (`max(request cores, 0.1)`: raising the request makes older history count less). Refused (false): not a
    /// measurement (NaN, infinite, negative), or not after the last sample (duplicate or out of order).
    pub fn add_cpu(&mut self, at: UnixMillis, usage_cores: f64, request_cores: f64) -> bool {
        if self.last_sample_at.is_some_and(|last| at <= last) {
            return false;
        }
        let request = if request_cores.is_finite() {
            request_cores
        } else {
            0.0
        };
        if !self
            .cpu
            .add(usage_cores, request.max(MIN_SAMPLE_WEIGHT), at)
        {
            return false;
        }
        self.first_sample_at.get_or_insert(at);
        self.last_sample_at = Some(at);
        self.total_samples += 1;
        true
    }

    /// Adds a memory working-set sample (bytes). Each container contributes one peak per
    /// [`MEMORY_AGGREGATION_INTERVAL_MILLIS`]: a larger sample in the same interval replaces the interval's peak
    /// (`ContainerState.addMemorySample`). Refused (false): not a measurement, or older than the last one.
    pub fn add_memory(&mut self, at: UnixMillis, bytes: f64) -> bool {
        if !(bytes.is_finite() && bytes >= 0.0) || self.last_memory_at.is_some_and(|l| at < l) {
            return false;
        }
        self.last_memory_at = Some(at);
        let window_end = *self.memory_window_end.get_or_insert(at);
        if at < window_end {
            if self.memory_peak != 0.0 && bytes > self.memory_peak {
                self.memory_peaks
                    .subtract(self.memory_peak, 1.0, window_end);
                self.memory_peaks.add(bytes, 1.0, window_end);
                self.memory_peak = bytes;
            }
        } else {
            let interval = MEMORY_AGGREGATION_INTERVAL_MILLIS;
            let shift = (at.saturating_sub(window_end) / interval)
                .saturating_mul(interval)
                .saturating_add(interval);
            let end = window_end.saturating_add(shift);
            self.memory_window_end = Some(end);
            self.memory_peaks.add(bytes, 1.0, end);
            self.memory_peak = bytes;
        }
        true
    }

    /// VPA's confidence, in days: `min(days between first and last CPU sample, samples / 1440)`
    /// (`logic/estimator.go`, `getConfidence`).
    pub fn confidence_days(&self) -> f64 {
        let span = match (self.first_sample_at, self.last_sample_at) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 86_400_000.0,
            _ => 0.0,
        };
        span.min(self.total_samples as f64 / SAMPLES_PER_CONFIDENCE_DAY)
    }

    /// The recommendation for this container in a pod of `containers_per_pod` containers (the pod minimums
    /// are shared evenly, as VPA does).
    pub fn recommend(&self, containers_per_pod: usize) -> ContainerRecommendation {
        let confidence = self.confidence_days();
        let span_hours = match (self.first_sample_at, self.last_sample_at) {
            (Some(a), Some(b)) => b.saturating_sub(a) as f64 / 3_600_000.0,
            _ => 0.0,
        };
        let share = 1.0 / containers_per_pod.max(1) as f64;
        let bounds = |h: &DecayingHistogram, min: f64| -> Option<Bounds> {
            let with_margin = |p: f64| h.percentile(p).map(|v| v * (1.0 + SAFETY_MARGIN));
            let target = with_margin(TARGET_PERCENTILE)?;
            let lower = with_margin(LOWER_BOUND_PERCENTILE)?
                * (1.0 + LOWER_CONFIDENCE.0 / confidence).powf(LOWER_CONFIDENCE.1);
            let upper = with_margin(UPPER_BOUND_PERCENTILE)?
                * (1.0 + UPPER_CONFIDENCE.0 / confidence).powf(UPPER_CONFIDENCE.1);
            Some(Bounds {
                lower: lower.max(min),
                target: target.max(min),
                upper: upper.max(min),
            })
        };
        let cpu = bounds(&self.cpu, POD_MIN_CPU_CORES * share);
        let (Some(cpu), true) = (cpu, confidence >= MIN_HISTORY_DAYS) else {
            return ContainerRecommendation::NotEnoughData {
                container: self.container.clone(),
                history_hours: span_hours,
                samples: self.total_samples,
                reason: format!(
                    "{:.1} h of history and {} samples give {:.2} days of confidence; {MIN_HISTORY_DAYS} needed \
                     (a day of samples, one a minute or more)",
                    span_hours, self.total_samples, confidence
                ),
            };
        };
        let memory = bounds(&self.memory_peaks, POD_MIN_MEMORY_BYTES * share);
        ContainerRecommendation::Ready(ContainerRequests {
            container: self.container.clone(),
            cpu_milli: cpu.map(|v| (v * 1000.0).ceil() as i64),
            memory_bytes: memory.map(|b| b.map(|v| v.ceil() as i64)),
            confidence_days: confidence,
        })
    }
}

/// Lower bound, target and upper bound of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds<T = f64> {
    /// Below this the request is too small (p50 + margin, shrunk a little with little history).
    pub lower: T,
    /// The recommended request (p90 + margin).
    pub target: T,
    /// Above this the request is too large (p95 + margin, widened with little history).
    pub upper: T,
}

impl Bounds<f64> {
    fn map(self, f: impl Fn(f64) -> i64) -> Bounds<i64> {
        Bounds {
            lower: f(self.lower),
            target: f(self.target),
            upper: f(self.upper),
        }
    }
}

/// Recommended requests of one container, rounded up (milli-cores, bytes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRequests {
    /// Container name.
    pub container: String,
    /// CPU, milli-cores.
    pub cpu_milli: Bounds<i64>,
    /// Memory, bytes; `None`: no memory sample was observed (nothing is recommended for memory).
    pub memory_bytes: Option<Bounds<i64>>,
    /// Days of confidence behind it.
    pub confidence_days: f64,
}

/// A container's recommendation, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ContainerRecommendation {
    /// Too little history to recommend anything.
    NotEnoughData {
        /// Container name.
        container: String,
        /// Hours between the first and the last sample.
        history_hours: f64,
        /// Samples so far.
        samples: u64,
        /// Why, in words.
        reason: String,
    },
    /// The recommendation.
    Ready(ContainerRequests),
}

/// How a deployment's replica count is set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scaling {
    /// A fixed replica count (no HPA, or one that does not scale on CPU).
    Fixed {
        /// Replicas.
        replicas: u32,
    },
    /// An HPA on CPU utilization (ours: `smart_cpu_utilization`, percent of the pod's CPU request).
    CpuHpa {
        /// Target utilization, as a fraction (0.7 for 70%).
        target: f64,
        /// `minReplicas`.
        min_replicas: u32,
        /// `maxReplicas`.
        max_replicas: u32,
    },
}

/// What [`plan_requests`] needs about the deployment now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlanInput {
    /// Current CPU request of one pod, cores.
    pub cpu_request_cores: f64,
    /// Current memory request of one pod, bytes (0: none).
    pub memory_request_bytes: f64,
    /// CPU demand of the whole deployment the plan is for, cores (the recent average).
    pub demand_cores: f64,
    /// How the replica count is set.
    pub scaling: Scaling,
    /// Price of the deployment's pods (see [`crate::cost::Prices::for_node`]).
    pub price: Price,
}

/// The numbers behind a plan: now and projected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Projection {
    /// Pod CPU request now, milli-cores.
    pub cpu_request_milli_now: i64,
    /// Pod CPU request recommended, milli-cores.
    pub cpu_request_milli: i64,
    /// Pod memory request now, bytes.
    pub memory_request_bytes_now: i64,
    /// Pod memory request recommended, bytes (the current one when memory was not observed).
    pub memory_request_bytes: i64,
    /// HPA target now, whole percent (CPU HPA only).
    pub target_percent_now: Option<u32>,
    /// HPA target recommended, whole percent (CPU HPA only).
    pub target_percent: Option<u32>,
    /// Replicas now (the HPA's steady state at the demand, within min and max).
    pub replicas_now: u32,
    /// Replicas projected.
    pub replicas: u32,
    /// Requested CPU beyond the demand now, cores (CPU HPA: at the target, before `minReplicas`).
    pub headroom_cores_now: f64,
    /// The same, projected.
    pub headroom_cores: f64,
    /// Requests of the replicas, dollars per 30 days, now.
    pub monthly_usd_now: f64,
    /// The same, projected.
    pub monthly_usd: f64,
    /// `monthly_usd_now − monthly_usd` (negative: the change costs more).
    pub savings_usd_month: f64,
}

/// What to do with a deployment's requests (and HPA target).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PodPlan {
    /// Some container lacks history: nothing is recommended.
    NotEnoughData {
        /// Why, in words.
        reason: String,
    },
    /// The inputs cannot be planned on (no CPU request under a CPU HPA, NaN demand, a target out of range).
    Invalid {
        /// Why, in words.
        reason: String,
    },
    /// Keep the current requests: the recommended ones would not save money (the projection says why).
    Keep {
        /// Why, in words.
        reason: String,
        /// What the recommended requests would give.
        projection: Projection,
    },
    /// Change to the projected requests (and target).
    Change {
        /// What and why, in words.
        reason: String,
        /// The numbers.
        projection: Projection,
    },
}

/// Targets are recommended in whole percent, never below this.
pub const MIN_TARGET_PERCENT: u32 = 10;

/// `ceil` that does not turn 3.0000000000000004 into 4 (float noise in `d / (r × t)`).
fn ceil_pods(x: f64) -> u32 {
    let c = (x - 1e-9).ceil().max(0.0);
    if c >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        c as u32
    }
}

/// The plan for a pod from its containers' recommendations: the pod's recommended CPU request is the sum of
/// the containers' targets (what the HPA divides by), its memory request likewise when every container has one.
pub fn plan(input: &PlanInput, containers: &[ContainerRecommendation]) -> PodPlan {
    let mut cpu_milli = 0i64;
    let mut memory = Some(0i64);
    for c in containers {
        match c {
            ContainerRecommendation::NotEnoughData {
                container, reason, ..
            } => {
                return PodPlan::NotEnoughData {
                    reason: format!("container {container}: {reason}"),
                };
            }
            ContainerRecommendation::Ready(r) => {
                cpu_milli = cpu_milli.saturating_add(r.cpu_milli.target);
                memory = memory
                    .zip(r.memory_bytes.map(|b| b.target))
                    .map(|(a, b)| a.saturating_add(b));
            }
        }
    }
    if containers.is_empty() {
        return PodPlan::NotEnoughData {
            reason: "no container history".to_string(),
        };
    }
    plan_requests(input, cpu_milli as f64 / 1000.0, memory.map(|m| m as f64))
}

/// The plan for a pod's recommended CPU request `r'` (cores) and memory request (bytes; `None`: keep the
/// current one, memory was not observed).
///
/// **Fixed replicas:** the replicas stay; the cost follows the requests.
///
/// **CPU HPA (the HPA-aware rule).** With request `r`, target `t` and demand `d`, the HPA settles at
/// `n = ceil(d / (r × t))` replicas (then within `minReplicas`..`maxReplicas`): the CPU it keeps requested is set
/// by the target, so a request change alone mostly changes the pod count. The plan therefore recommends `r'`
/// together with a target `t'`: the largest whole percent, not above `t` and not below [`MIN_TARGET_PERCENT`],
/// for which the requested CPU at the demand, `ceil(d / (r' × t')) × r'`, is at least today's
/// `ceil(d / (r × t)) × r`. So the headroom (requested CPU beyond the demand, before `minReplicas` adds its
/// floor) stays equal or better at the observed demand, and, `t'` being at most `t`, utilization at any demand
/// stays at or under what today's target allows. The projected replicas are `ceil(d / (r' × t'))` within min and
/// max; the monthly cost is replicas × requests × price × 720 h. When that is not cheaper than today (the usual
/// case for an HPA that is actively scaling: fewer cores per pod, more pods), the plan is [`PodPlan::Keep`] with
/// the numbers that show why; savings come from deployments held up by `minReplicas` and from memory.
pub fn plan_requests(input: &PlanInput, cpu_cores: f64, memory_bytes: Option<f64>) -> PodPlan {
    let r = input.cpu_request_cores;
    let d = input.demand_cores;
    let m = input.memory_request_bytes;
    if !(d.is_finite() && d >= 0.0) {
        return PodPlan::Invalid {
            reason: format!("demand {d} cores is not a measurement"),
        };
    }
    if !(r.is_finite() && r >= 0.0 && m.is_finite() && m >= 0.0) {
        return PodPlan::Invalid {
            reason: format!(
                "current requests ({r} cores, {m} bytes) are not finite and non-negative"
            ),
        };
    }
    if !(cpu_cores.is_finite() && cpu_cores > 0.0) {
        return PodPlan::Invalid {
            reason: format!("recommended CPU request {cpu_cores} cores is not positive"),
        };
    }
    // A pod of a million cores or a petabyte is a unit error upstream; refusing it keeps every product finite.
    if r > 1e6 || cpu_cores > 1e6 || m > 1e15 || memory_bytes.is_some_and(|b| b > 1e15) || d > 1e12
    {
        return PodPlan::Invalid {
            reason: format!(
                "implausible sizes: request {r} cores / {m} bytes, recommended {cpu_cores} cores, demand {d} cores"
            ),
        };
    }
    if !input.price.is_valid() {
        return PodPlan::Invalid {
            reason: format!("price {:?} is not finite and non-negative", input.price),
        };
    }
    let m_new = memory_bytes
        .filter(|b| b.is_finite() && *b >= 0.0)
        .unwrap_or(m);
    let price = input.price;
    let pod_monthly = |cpu: f64, mem: f64| {
        (cpu * price.cpu_per_core_hour + mem / GIB * price.memory_per_gib_hour) * PROJECTION_HOURS
    };
    let milli = |cores: f64| (cores * 1000.0).round() as i64;
    let memory_note = if memory_bytes.is_none() {
        "; memory not observed, its request kept"
    } else {
        ""
    };
    let (projection, rule) = match input.scaling {
        Scaling::Fixed { replicas } => {
            let n = f64::from(replicas);
            (
                Projection {
                    cpu_request_milli_now: milli(r),
                    cpu_request_milli: milli(cpu_cores),
                    memory_request_bytes_now: m.round() as i64,
                    memory_request_bytes: m_new.round() as i64,
                    target_percent_now: None,
                    target_percent: None,
                    replicas_now: replicas,
                    replicas,
                    headroom_cores_now: n * r - d,
                    headroom_cores: n * cpu_cores - d,
                    monthly_usd_now: n * pod_monthly(r, m),
                    monthly_usd: n * pod_monthly(cpu_cores, m_new),
                    savings_usd_month: 0.0,
                },
                format!("{replicas} fixed replicas"),
            )
        }
        Scaling::CpuHpa {
            target,
            min_replicas,
            max_replicas,
        } => {
            if !(target.is_finite() && target > 0.0 && target <= 10.0) {
                return PodPlan::Invalid {
                    reason: format!("HPA target {target} is not a fraction in (0, 10]"),
                };
            }
            if r <= 0.0 {
                return PodPlan::Invalid {
                    reason: "the pods request no CPU: a CPU-utilization HPA cannot scale them"
                        .to_string(),
                };
            }
            let t_percent = ((target * 100.0) + 1e-9).floor() as u32;
            let within = |n: u32| n.max(min_replicas).min(max_replicas.max(min_replicas));
            let hpa_now = ceil_pods(d / (r * target));
            let reference = f64::from(hpa_now) * r;
            let chosen = (MIN_TARGET_PERCENT..=t_percent.max(MIN_TARGET_PERCENT))
                .rev()
                .find(|&p| {
                    f64::from(ceil_pods(d / (cpu_cores * f64::from(p) / 100.0))) * cpu_cores
                        >= reference - 1e-9
                })
                .unwrap_or(MIN_TARGET_PERCENT);
            let hpa_new = ceil_pods(d / (cpu_cores * f64::from(chosen) / 100.0));
            let (n_now, n_new) = (within(hpa_now), within(hpa_new));
            let projection = Projection {
                cpu_request_milli_now: milli(r),
                cpu_request_milli: milli(cpu_cores),
                memory_request_bytes_now: m.round() as i64,
                memory_request_bytes: m_new.round() as i64,
                target_percent_now: Some(t_percent),
                target_percent: Some(chosen),
                replicas_now: n_now,
                replicas: n_new,
                headroom_cores_now: reference - d,
                headroom_cores: f64::from(hpa_new) * cpu_cores - d,
                monthly_usd_now: f64::from(n_now) * pod_monthly(r, m),
                monthly_usd: f64::from(n_new) * pod_monthly(cpu_cores, m_new),
                savings_usd_month: 0.0,
            };
            if hpa_new > max_replicas.max(min_replicas) {
                return PodPlan::Keep {
                    reason: format!(
                        "at {}m and target {chosen}% the HPA would need {hpa_new} replicas, above maxReplicas \
                         {max_replicas}",
                        milli(cpu_cores)
                    ),
                    projection,
                };
            }
            let headroom_kept = projection.headroom_cores >= projection.headroom_cores_now - 1e-9;
            if !headroom_kept {
                return PodPlan::Keep {
                    reason: format!(
                        "even at target {MIN_TARGET_PERCENT}% a {}m request leaves less headroom ({:.3} cores) \
                         than today ({:.3})",
                        milli(cpu_cores),
                        projection.headroom_cores,
                        projection.headroom_cores_now
                    ),
                    projection,
                };
            }
            (
                projection,
                format!(
                    "HPA target {t_percent}% → {chosen}% keeps the headroom at {d:.3} cores of demand \
                     ({:.3} → {:.3} cores)",
                    projection.headroom_cores_now, projection.headroom_cores
                ),
            )
        }
    };
    let mut projection = projection;
    projection.savings_usd_month = projection.monthly_usd_now - projection.monthly_usd;
    let summary = format!(
        "CPU {}m → {}m, memory {} → {} bytes, replicas {} → {}, ${:.2} → ${:.2} a month",
        projection.cpu_request_milli_now,
        projection.cpu_request_milli,
        projection.memory_request_bytes_now,
        projection.memory_request_bytes,
        projection.replicas_now,
        projection.replicas,
        projection.monthly_usd_now,
        projection.monthly_usd
    );
    if projection.savings_usd_month > 0.005 {
        PodPlan::Change {
            reason: format!(
                "{summary}: saves ${:.2} a month; {rule}{memory_note}",
                projection.savings_usd_month
            ),
            projection,
        }
    } else {
        PodPlan::Keep {
            reason: format!("{summary}: no saving; {rule}{memory_note}"),
            projection,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const DAY: i64 = 86_400_000;
    /// A realistic start time, so the first sample moves the reference (as VPA's zero time does).
    const T0: i64 = 1_760_000_000_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn buckets_are_vpas_exponential_scheme() {
        assert_eq!(Scale::Cpu.buckets(), 223);
        assert_eq!(Scale::Memory.buckets(), 176);
        // 0.5 core: floor(ln(0.5 × 0.05 / 0.001 + 1) / ln 1.05) = floor(66.78) = 66.
        assert_eq!(Scale::Cpu.bucket(0.5), 66);
        assert!(close(Scale::Cpu.bucket_start(66), 0.48063791174276405));
        assert!(close(Scale::Cpu.bucket_start(67), 0.5056698073299023));
        assert_eq!(Scale::Cpu.bucket(0.0), 0);
        assert_eq!(Scale::Cpu.bucket(f64::NAN), 0);
        assert_eq!(Scale::Cpu.bucket(1e9), 222);
        assert_eq!(Scale::Memory.bucket(300.0 * 1024.0 * 1024.0), 19);
    }

    #[test]
    fn percentiles_are_bucket_ends_and_newer_samples_weigh_more() {
        let mut h = DecayingHistogram::new(Scale::Cpu);
        assert_eq!(h.percentile(0.5), None);
        // Same time, equal weights: the median reaches 1.0's bucket (threshold 1.0 of total 2.0).
        assert!(h.add(1.0, 1.0, T0));
        assert!(h.add(2.0, 1.0, T0));
        assert!(close(h.percentile(0.5).unwrap(), 1.020790262403694));
        // The 2-core sample a day later weighs twice as much: 1 of 3 < 1.5, so the median moves up.
        let mut h = DecayingHistogram::new(Scale::Cpu);
        h.add(1.0, 1.0, T0);
        h.add(2.0, 1.0, T0 + DAY);
        assert!(close(h.percentile(0.5).unwrap(), 2.040693528921897));
        assert!(close(h.percentile(0.3).unwrap(), 1.020790262403694));
        // Refused: not a measurement.
        assert!(!h.add(f64::NAN, 1.0, T0));
        assert!(!h.add(-1.0, 1.0, T0));
        assert!(!h.add(1.0, f64::INFINITY, T0));
    }

    #[test]
    fn the_reference_moves_forward_without_overflow() {
        let mut h = DecayingHistogram::new(Scale::Cpu);
        // 400 days of one sample a day: 2^400 would overflow without renormalization.
        for day in 0..400 {
            let v = if day < 390 { 0.1 } else { 2.0 };
            assert!(h.add(v, 1.0, T0 + day * DAY));
        }
        assert!(h.total_weight.is_finite() && h.total_weight > 0.0);
        assert_eq!(h.reference_millis.rem_euclid(HALF_LIFE_MILLIS), 0);
        // The last 10 days (weight 2^0 .. 2^-9 of the newest, sum ≈ 2) dwarf the 390 before (sum ≈ 2^-9):
        // the median is the 2-core bucket's end.
        assert!(close(h.percentile(0.5).unwrap(), 2.040693528921897));
    }

    #[test]
    fn histograms_round_trip_through_json_with_bounded_memory() {
        let mut h = DecayingHistogram::new(Scale::Cpu);
        for i in 0..1000 {
            h.add(
                0.1 + f64::from(i % 50) / 100.0,
                0.5,
                T0 + i64::from(i) * MIN,
            );
        }
        let json = serde_json::to_string(&h).unwrap();
        let back: DecayingHistogram = serde_json::from_str(&json).unwrap();
        assert_eq!(back.percentile(0.9), h.percentile(0.9));
        assert_eq!(back.reference_millis, h.reference_millis);
        // Bounded: one f64 per bucket at most, whatever the number of samples.
        assert!(h.memory_bytes() <= std::mem::size_of::<DecayingHistogram>() + 223 * 8);
        assert_eq!(DecayingHistogram::new(Scale::Memory).memory_bytes(), 48);
        // Stored form holds only the used range (buckets 0.1..0.6 cores: about 36 of 223).
        assert!(json.len() < 223 * 8, "{}", json.len());
        // Corrupt stored forms are refused, not loaded.
        for bad in [
            r#"{"scale":"cpu","reference_millis":0,"first_bucket":220,"weights":[1,1,1,1]}"#,
            r#"{"scale":"cpu","reference_millis":0,"first_bucket":0,"weights":[-1]}"#,
            r#"{"scale":"cpu","reference_millis":5,"first_bucket":0,"weights":[1]}"#,
            r#"{"scale":"memory","reference_millis":0,"first_bucket":0,"weights":[1e308,1e308]}"#,
        ] {
            assert!(
                serde_json::from_str::<DecayingHistogram>(bad).is_err(),
                "{bad}"
            );
        }
        let mut c = ContainerHistory::new("app");
        c.add_cpu(T0, 0.2, 0.5);
        c.add_memory(T0, 1e8);
        let back: ContainerHistory =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(c.memory_bytes() < 4096, "{}", c.memory_bytes());
    }

    fn week_of_steady(cpu: f64, memory: f64) -> ContainerHistory {
        let mut c = ContainerHistory::new("app");
        for i in 0..7 * 1440 {
            let at = T0 + i * MIN;
            assert!(c.add_cpu(at, cpu, 0.5));
            assert!(c.add_memory(at, memory));
        }
        c
    }

    #[test]
    fn a_week_of_steady_usage_gives_vpas_numbers() {
        let c = week_of_steady(0.2, 300.0 * 1024.0 * 1024.0);
        // 10080 samples over 6.9993 days: confidence = min(6.99931, 7.0).
        assert!(close(c.confidence_days(), 6.999305555555556));
        let ContainerRecommendation::Ready(r) = c.recommend(1) else {
            panic!("{:?}", c.recommend(1))
        };
        // Every percentile is the end of 0.2's bucket, 0.209348 cores; × 1.15 = 0.240750 → 241m.
        // Lower: × (1 + 0.001/6.9993)^-2 = 0.240681 → 241m. Upper: × (1 + 1/6.9993) = 0.275146 → 276m.
        assert_eq!(
            r.cpu_milli,
            Bounds {
                lower: 241,
                target: 241,
                upper: 276
            }
        );
        // Memory: one peak per day (7 of them) of 300 MiB, bucket 19 ends at
        // 330659541 bytes; × 1.15 = 380258472.18 → 380258473.
        let m = r.memory_bytes.unwrap();
        assert_eq!(m.target, 380258473);
        assert!(m.upper > m.target && m.lower <= m.target);
    }

    #[test]
    fn minimums_apply_per_container_share() {
        let c = week_of_steady(0.001, 1e6);
        let ContainerRecommendation::Ready(one) = c.recommend(1) else {
            panic!()
        };
        // 25m and 250 MiB for a lone container, half of each for one of two.
        assert_eq!(one.cpu_milli.target, 25);
        assert_eq!(one.cpu_milli.lower, 25);
        assert_eq!(one.memory_bytes.unwrap().target, 262_144_000);
        let ContainerRecommendation::Ready(half) = c.recommend(2) else {
            panic!()
        };
        assert_eq!(half.cpu_milli.target, 13);
        assert_eq!(half.memory_bytes.unwrap().target, 131_072_000);
    }

    #[test]
    fn an_hour_of_history_is_not_enough_data() {
        let mut c = ContainerHistory::new("app");
        for i in 0..=60 {
            c.add_cpu(T0 + i * MIN, 0.3, 0.5);
        }
        match c.recommend(1) {
            ContainerRecommendation::NotEnoughData {
                history_hours,
                samples,
                reason,
                ..
            } => {
                assert!(close(history_hours, 1.0));
                assert_eq!(samples, 61);
                assert!(reason.contains("1.0 h"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // Two days with a sample an hour is not enough either: 49 samples are 0.034 days of confidence.
        let mut sparse = ContainerHistory::new("app");
        for i in 0..=48 {
            sparse.add_cpu(T0 + i * 3_600_000, 0.3, 0.5);
        }
        assert!(matches!(
            sparse.recommend(1),
            ContainerRecommendation::NotEnoughData { .. }
        ));
        assert!(matches!(
            ContainerHistory::new("x").recommend(1),
            ContainerRecommendation::NotEnoughData { .. }
        ));
        // And the plan says so too.
        let input = PlanInput {
            cpu_request_cores: 0.5,
            memory_request_bytes: 0.0,
            demand_cores: 1.0,
            scaling: Scaling::Fixed { replicas: 2 },
            price: Price::OPENCOST,
        };
        assert!(matches!(
            plan(&input, &[c.recommend(1)]),
            PodPlan::NotEnoughData { .. }
        ));
    }

    #[test]
    fn samples_out_of_order_or_not_measurements_are_refused() {
        let mut c = ContainerHistory::new("app");
        assert!(c.add_cpu(T0, 0.2, 0.5));
        assert!(!c.add_cpu(T0, 0.2, 0.5));
        assert!(!c.add_cpu(T0 - 1, 0.2, 0.5));
        assert!(!c.add_cpu(T0 + MIN, f64::NAN, 0.5));
        assert!(c.add_cpu(T0 + MIN, 0.2, f64::NAN));
        assert_eq!(c.total_samples, 2);
        assert!(!c.add_memory(T0, f64::INFINITY));
        assert!(c.add_memory(T0, 1e8));
        assert!(!c.add_memory(T0 - 1, 1e8));
    }

    #[test]
    fn extreme_times_and_weights_neither_panic_nor_poison() {
        let mut c = ContainerHistory::new("app");
        assert!(c.add_cpu(i64::MIN, 0.2, 0.5));
        assert!(c.add_cpu(0, 0.2, 1e300));
        assert!(c.add_cpu(i64::MAX, 0.2, 0.5));
        assert!(c.add_memory(i64::MIN, 1e8));
        assert!(c.add_memory(i64::MAX, 2e8));
        assert!(c.cpu.total_weight.is_finite());
        // A weight that would make the total infinite is refused.
        let mut h = DecayingHistogram::new(Scale::Cpu);
        assert!(h.add(1.0, f64::MAX / 2.0, T0));
        assert!(!h.add(1.0, f64::MAX, T0 + DAY));
        assert!(!h.add(1.0, f64::MAX / 1.5, T0 + DAY));
        assert!(h.total_weight.is_finite());
        let _ = c.recommend(1);
        let _ = serde_json::to_string(&c).unwrap();
    }

    #[test]
    fn memory_keeps_one_peak_per_day() {
        let mib = 1024.0 * 1024.0;
        let mut c = ContainerHistory::new("app");
        c.add_memory(T0, 100.0 * mib);
        // The first sample opens an interval ending at T0 + 1 day; later samples the same day replace the peak.
        c.add_memory(T0 + DAY + 1, 100.0 * mib);
        c.add_memory(T0 + DAY + 2, 300.0 * mib);
        c.add_memory(T0 + DAY + 3, 200.0 * mib);
        // Two peaks: 100 MiB (day 0) and 300 MiB (day 1, weighing 2× as its interval ends a day later); the
        // 100 MiB that opened day 1 was replaced, and 200 MiB was below the peak.
        let weight = |mib: f64| c.memory_peaks.weights[Scale::Memory.bucket(mib * 1024.0 * 1024.0)];
        assert!(close(weight(300.0) / weight(100.0), 2.0));
        let w: Vec<_> = c
            .memory_peaks
            .weights
            .iter()
            .enumerate()
            .filter(|(_, w)| **w >= EPSILON)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            w,
            vec![
                Scale::Memory.bucket(100.0 * mib),
                Scale::Memory.bucket(300.0 * mib)
            ]
        );
    }

    fn hpa(target: f64, min: u32) -> Scaling {
        Scaling::CpuHpa {
            target,
            min_replicas: min,
            max_replicas: 100,
        }
    }

    #[test]
    fn fixed_replicas_save_the_request_difference() {
        let input = PlanInput {
            cpu_request_cores: 1.0,
            memory_request_bytes: 0.0,
            demand_cores: 1.0,
            scaling: Scaling::Fixed { replicas: 4 },
            price: Price::OPENCOST,
        };
        let PodPlan::Change { projection: p, .. } = plan_requests(&input, 0.4, None) else {
            panic!()
        };
        // 4 × (1 − 0.4) cores × 0.031611 × 720 = 54.623808 $ a month.
        assert!(
            close(p.savings_usd_month, 54.623808),
            "{}",
            p.savings_usd_month
        );
        assert_eq!(p.replicas, 4);
        assert!(close(p.headroom_cores, 0.6));
    }

    #[test]
    fn hpa_held_at_min_replicas_saves_with_headroom_kept() {
        // minReplicas 3, 1 core per pod, target 70%, demand 0.3 cores; recommended 150m.
        let input = PlanInput {
            cpu_request_cores: 1.0,
            memory_request_bytes: 0.0,
            demand_cores: 0.3,
            scaling: hpa(0.7, 3),
            price: Price::OPENCOST,
        };
        let plan = plan_requests(&input, 0.15, None);
        let PodPlan::Change {
            projection: p,
            reason,
        } = plan
        else {
            panic!("{plan:?}")
        };
        // Today: ceil(0.3 / 0.7) = 1 pod's worth, 1 core requested, headroom 0.7; 3 pods for minReplicas.
        // 150m: need ceil(0.3 / (0.15 t')) × 0.15 ≥ 1 → 7 pods → t' < 1/3 → 33% (ceil(6.06) = 7).
        assert_eq!(p.target_percent, Some(33));
        assert_eq!(p.replicas_now, 3);
        assert_eq!(p.replicas, 7);
        assert!(close(p.headroom_cores_now, 0.7));
        assert!(close(p.headroom_cores, 0.75));
        // 3 × 1 × 0.031611 × 720 = 68.27976; 7 × 0.15 × 0.031611 × 720 = 23.897916.
        assert!(close(p.monthly_usd_now, 68.27976));
        assert!(close(p.monthly_usd, 23.897916));
        assert!(close(p.savings_usd_month, 44.381844));
        assert!(reason.contains("70% → 33%"), "{reason}");
    }

    #[test]
    fn an_actively_scaling_hpa_gains_nothing_from_a_smaller_request() {
        // 2 cores and 1 GiB per pod at 70%, demand 3 cores: 3 pods, 6 cores requested, headroom 3.
        let input = PlanInput {
            cpu_request_cores: 2.0,
            memory_request_bytes: GIB,
            demand_cores: 3.0,
            scaling: hpa(0.7, 1),
            price: Price::OPENCOST,
        };
        let plan = plan_requests(&input, 0.5, Some(GIB));
        let PodPlan::Keep { projection: p, .. } = plan else {
            panic!("{plan:?}")
        };
        // 500m: ceil(6 / t') ≥ 12 → t' < 6/11 → 54%, 12 pods, 6 cores: CPU the same, memory ×4.
        assert_eq!(p.target_percent, Some(54));
        assert_eq!(p.replicas, 12);
        assert!(close(p.headroom_cores, 3.0));
        // 3 × (2 × 0.031611 + 0.004237) × 720 = 145.71144; 12 × (0.5 × 0.031611 + 0.004237) × 720 = 173.1672.
        assert!(close(p.monthly_usd_now, 145.71144));
        assert!(close(p.monthly_usd, 173.1672));
        assert!(p.savings_usd_month < 0.0);
        // With the memory request right-sized too (1 GiB → 512 MiB) it still does not pay: 12 pods.
        let plan = plan_requests(&input, 0.5, Some(GIB / 2.0));
        assert!(matches!(plan, PodPlan::Keep { .. }), "{plan:?}");
    }

    #[test]
    fn the_target_never_rises_and_bad_inputs_are_stated() {
        // No demand: the target stays (never above t), the floor holds the replicas.
        let input = PlanInput {
            cpu_request_cores: 1.0,
            memory_request_bytes: 0.0,
            demand_cores: 0.0,
            scaling: hpa(0.29, 2),
            price: Price::OPENCOST,
        };
        let PodPlan::Change { projection: p, .. } = plan_requests(&input, 0.25, None) else {
            panic!()
        };
        // 0.29 × 100 is 28.999999999999996 in floats: still 29%.
        assert_eq!(p.target_percent, Some(29));
        assert_eq!(p.replicas, 2);
        assert!(close(p.savings_usd_month, 2.0 * 0.75 * 0.031611 * 720.0));
        for (input, cpu) in [
            (
                PlanInput {
                    demand_cores: f64::NAN,
                    ..input
                },
                0.25,
            ),
            (
                PlanInput {
                    cpu_request_cores: 0.0,
                    ..input
                },
                0.25,
            ),
            (
                PlanInput {
                    scaling: hpa(f64::INFINITY, 1),
                    ..input
                },
                0.25,
            ),
            (
                PlanInput {
                    scaling: hpa(1e300, 1),
                    ..input
                },
                0.25,
            ),
            (input, 0.0),
            (input, f64::NAN),
            (input, 1e300),
            (
                PlanInput {
                    cpu_request_cores: 1e300,
                    ..input
                },
                0.25,
            ),
            (
                PlanInput {
                    price: Price {
                        cpu_per_core_hour: f64::NAN,
                        memory_per_gib_hour: 0.0,
                    },
                    ..input
                },
                0.25,
            ),
        ] {
            assert!(
                matches!(plan_requests(&input, cpu, None), PodPlan::Invalid { .. }),
                "{input:?} {cpu}"
            );
        }
        // Above maxReplicas: kept, with the reason.
        let capped = PlanInput {
            demand_cores: 10.0,
            scaling: Scaling::CpuHpa {
                target: 0.7,
                min_replicas: 1,
                max_replicas: 15,
            },
            ..input
        };
        let plan = plan_requests(&capped, 0.25, None);
        let PodPlan::Keep { reason, .. } = plan else {
            panic!("{plan:?}")
        };
        assert!(reason.contains("maxReplicas"), "{reason}");
    }

    #[test]
    fn plan_sums_container_targets() {
        let a = week_of_steady(0.2, 300.0 * 1024.0 * 1024.0).recommend(2);
        let mut b = week_of_steady(0.2, 300.0 * 1024.0 * 1024.0);
        b.container = "sidecar".into();
        let b = b.recommend(2);
        let input = PlanInput {
            cpu_request_cores: 1.0,
            memory_request_bytes: GIB,
            demand_cores: 0.8,
            scaling: Scaling::Fixed { replicas: 2 },
            price: Price::OPENCOST,
        };
        let PodPlan::Change { projection: p, .. } = plan(&input, &[a, b]) else {
            panic!()
        };
        assert_eq!(p.cpu_request_milli, 482);
        assert_eq!(p.memory_request_bytes, 2 * 380258473);
    }
}
