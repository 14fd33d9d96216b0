//! The rule detectors: pure functions that judge one deployment on one tick from numbers the per-deployment
//! state ([`super::detect`]) has already gathered (an expectation and its spread, a count of replica changes, how
//! long a condition has held). Each returns a [`Finding`] when its rule holds, with the severity, the evidence and
//! a one-sentence summary; opening, holding and ending anomalies is the state's business, not theirs.
//!
//! Thresholds are strict where the rule says "more than" or "beyond" and inclusive where it says "for 15
//! minutes": a value exactly on a threshold does not fire, a condition held exactly the window does.

use super::Severity;

/// Thresholds of every detector. The defaults are the ones documented in `docs/anomalies.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalyConfig {
    /// CPU spike: utilization more than this many standard deviations above its expected value.
    pub spike_sigmas: f64,
    /// Smallest standard deviation used, percentage points: a very steady deployment would otherwise call a
    /// two-point wobble a spike.
    pub min_sigma_percent: f64,
    /// Window of the deployment's own recent values (and forecast errors) the spread is estimated from, ms.
    pub baseline_window_millis: i64,
    /// Samples needed in that window before the CPU-spike rule judges anything.
    pub min_baseline_samples: usize,
    /// Most samples kept per window, whatever the tick interval (bounds the memory per deployment).
    pub max_samples: usize,
    /// Scaling thrash: more than this many replica changes...
    pub thrash_changes: u32,
    /// ...within this window, ms.
    pub thrash_window_millis: i64,
    /// Persistent high CPU: utilization above this, percent...
    pub high_cpu_percent: f64,
    /// ...held at least this long while capacity cannot be added, ms.
    pub high_cpu_millis: i64,
    /// Utilization at or above which users are likely affected (critical severity), percent.
    pub critical_cpu_percent: f64,
    /// Pattern deviation: actuals outside the forecast band held at least this long, ms.
    pub deviation_millis: i64,
    /// Half-width of the forecast band as a multiple of the forecast's validated MAPE...
    pub band_mape_factor: f64,
    /// ...but at least this fraction of the expected value...
    pub min_band_fraction: f64,
    /// ...and at least this many percentage points.
    pub min_band_percent: f64,
    /// An anomaly ends once its rule has not held for this many consecutive ticks (hysteresis: one quiet tick
    /// in the middle of a spike does not end it and open a new one).
    pub clear_ticks: u32,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            spike_sigmas: 3.0,
            min_sigma_percent: 2.0,
            baseline_window_millis: 30 * 60_000,
            min_baseline_samples: 20,
            max_samples: 256,
            thrash_changes: 15,
            thrash_window_millis: 30 * 60_000,
            high_cpu_percent: 85.0,
            high_cpu_millis: 15 * 60_000,
            critical_cpu_percent: 95.0,
            deviation_millis: 15 * 60_000,
            band_mape_factor: 2.0,
            min_band_fraction: 0.25,
            min_band_percent: 5.0,
            clear_ticks: 3,
        }
    }
}

/// What a rule found on one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// How urgent.
    pub severity: Severity,
    /// The value the rule expected, in the unit of `actual`.
    pub expected: f64,
    /// The value observed.
    pub actual: f64,
    /// The rule's strength in [0, 1]: `r / (1 + r)` of how far past its threshold the measure is (`r` = measure /
    /// threshold), so exactly at the threshold is 0.5 and it nears 1 as the measure grows.
    pub score: f64,
    /// One sentence, with the numbers.
    pub summary: String,
}

/// `r / (1 + r)` for `r = measure / threshold`: 0.5 on the threshold, towards 1 beyond it.
fn strength(measure: f64, threshold: f64) -> f64 {
    if threshold <= 0.0 || !measure.is_finite() {
        return 1.0;
    }
    let r = (measure / threshold).max(0.0);
    r / (1.0 + r)
}

/// Where an expected value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectationSource {
    /// The deployment's trusted forecast for this time (seasonal profile and ensemble), its spread from the
    /// forecast's own recent errors.
    Forecast,
    /// No trusted forecast: the median of the deployment's own recent values, its spread from their MAD.
    Baseline,
}

/// What a deployment's utilization was expected to be now, and how much it usually strays from that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Expectation {
    /// Expected utilization, percent.
    pub expected: f64,
    /// Standard deviation around it, percentage points (already floored at `min_sigma_percent`).
    pub sigma: f64,
    /// Where it came from.
    pub source: ExpectationSource,
}

/// Median of `values` (not empty).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Robust centre and spread of `values`: the median and 1.4826 × the median absolute deviation (the standard
/// deviation, for normal data, that a few outliers, such as the spike being judged, cannot inflate). `None` when
/// empty.
pub fn robust_center_spread(values: &[f64]) -> Option<(f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.to_vec();
    let center = median(&mut v);
    let mut dev: Vec<f64> = values.iter().map(|x| (x - center).abs()).collect();
    Some((center, 1.4826 * median(&mut dev)))
}

/// CPU spike: `actual` more than `spike_sigmas` standard deviations above the expectation.
///
/// Severity: critical at or above `critical_cpu_percent` (pods saturated), warning at or above
/// `high_cpu_percent` or more than twice `spike_sigmas` deviations, info otherwise.
pub fn cpu_spike(actual: f64, e: &Expectation, config: &AnomalyConfig) -> Option<Finding> {
    let sigma = e.sigma.max(config.min_sigma_percent).max(f64::EPSILON);
    let z = (actual - e.expected) / sigma;
    // NaN (an unknown value) is never a spike.
    if z.is_nan() || z <= config.spike_sigmas {
        return None;
    }
    let severity = if actual >= config.critical_cpu_percent {
        Severity::Critical
    } else if actual >= config.high_cpu_percent || z > 2.0 * config.spike_sigmas {
        Severity::Warning
    } else {
        Severity::Info
    };
    let from = match e.source {
        ExpectationSource::Forecast => "its trusted forecast for this time",
        ExpectationSource::Baseline => "the median of its own recent values (no trusted forecast)",
    };
    Some(Finding {
        severity,
        expected: e.expected,
        actual,
        score: strength(z, config.spike_sigmas),
        summary: format!(
            "CPU {actual:.1}% is {z:.1} standard deviations ({sigma:.1} points each) above the expected \
             {:.1}% from {from}.",
            e.expected
        ),
    })
}

/// Scaling thrash: more than `thrash_changes` replica changes within `thrash_window_millis`; `changes` is the
/// count in the window ending now, `replicas` the current count.
///
/// Severity: critical beyond twice the threshold, warning otherwise.
pub fn scaling_thrash(changes: u32, replicas: u32, config: &AnomalyConfig) -> Option<Finding> {
    if changes <= config.thrash_changes {
        return None;
    }
    let severity = if changes > 2 * config.thrash_changes {
        Severity::Critical
    } else {
        Severity::Warning
    };
    Some(Finding {
        severity,
        expected: f64::from(config.thrash_changes),
        actual: f64::from(changes),
        score: strength(f64::from(changes), f64::from(config.thrash_changes)),
        summary: format!(
            "The replica count changed {changes} times in the last {} minutes (more than {}), now {replicas}.",
            config.thrash_window_millis / 60_000,
            config.thrash_changes
        ),
    })
}

/// Why a deployment cannot get more capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The HPA is at its `maxReplicas`.
    AtMaxReplicas(u32),
    /// Pods of the deployment cannot be scheduled.
    Unschedulable(u32),
}

/// Persistent high CPU: utilization above `high_cpu_percent` held for `held_millis` (at least
/// `high_cpu_millis`) while capacity could not be added (`blocked`).
///
/// Severity: critical at or above `critical_cpu_percent` or once held twice the window, warning otherwise.
pub fn persistent_high_cpu(
    actual: f64,
    held_millis: i64,
    blocked: Blocked,
    config: &AnomalyConfig,
) -> Option<Finding> {
    if actual.is_nan() || actual <= config.high_cpu_percent || held_millis < config.high_cpu_millis
    {
        return None;
    }
    let severity =
        if actual >= config.critical_cpu_percent || held_millis >= 2 * config.high_cpu_millis {
            Severity::Critical
        } else {
            Severity::Warning
        };
    let why = match blocked {
        Blocked::AtMaxReplicas(max) => format!("the HPA is at its maxReplicas of {max}"),
        Blocked::Unschedulable(n) => format!("{n} of its pods cannot be scheduled"),
    };
    Some(Finding {
        severity,
        expected: config.high_cpu_percent,
        actual,
        score: strength(held_millis as f64, config.high_cpu_millis as f64),
        summary: format!(
            "CPU {actual:.1}% has been above {:.0}% for {} minutes while {why}.",
            config.high_cpu_percent,
            held_millis / 60_000
        ),
    })
}

/// The validated forecast band around an expected utilization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    /// Expected utilization, percent.
    pub expected: f64,
    /// Half-width, percentage points.
    pub half_width: f64,
    /// The forecast's validated MAPE the width came from.
    pub mape: f64,
}

impl Band {
    /// The band around `expected` for a forecast whose recent MAPE is `mape`: `band_mape_factor` × MAPE of the
    /// expected value, at least `min_band_fraction` of it and `min_band_percent` points.
    pub fn new(expected: f64, mape: f64, config: &AnomalyConfig) -> Band {
        let fraction = (config.band_mape_factor * mape).max(config.min_band_fraction);
        Band {
            expected,
            half_width: (fraction * expected.abs()).max(config.min_band_percent),
            mape,
        }
    }

    /// How far `actual` is outside the band (positive above, negative below), or 0 inside it. On the edge is
    /// inside.
    pub fn outside(&self, actual: f64) -> f64 {
        let d = actual - self.expected;
        if d > self.half_width {
            d - self.half_width
        } else if d < -self.half_width {
            d + self.half_width
        } else {
            0.0
        }
    }
}

/// Pattern deviation: actuals outside the forecast band for `held_millis` (at least `deviation_millis`).
///
/// Severity: warning above the band (more load than the pattern has room for), info below it (capacity kept
/// for load that did not come).
pub fn pattern_deviation(
    actual: f64,
    band: &Band,
    held_millis: i64,
    config: &AnomalyConfig,
) -> Option<Finding> {
    let outside = band.outside(actual);
    if outside == 0.0 || held_millis < config.deviation_millis {
        return None;
    }
    let (severity, side) = if outside > 0.0 {
        (Severity::Warning, "above")
    } else {
        (Severity::Info, "below")
    };
    Some(Finding {
        severity,
        expected: band.expected,
        actual,
        score: strength(held_millis as f64, config.deviation_millis as f64),
        summary: format!(
            "CPU {actual:.1}% has been {side} the forecast band {:.1}% ± {:.1} points (forecast MAPE {:.0}%) \
             for {} minutes.",
            band.expected,
            band.half_width,
            band.mape * 100.0,
            held_millis / 60_000
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> AnomalyConfig {
        AnomalyConfig::default()
    }

    fn expect(expected: f64, sigma: f64) -> Expectation {
        Expectation {
            expected,
            sigma,
            source: ExpectationSource::Forecast,
        }
    }

    #[test]
    fn robust_spread_ignores_the_outlier() {
        let mut v = vec![50.0, 51.0, 49.0, 50.0, 52.0, 48.0, 50.0];
        let (c, s) = robust_center_spread(&v).unwrap();
        assert_eq!(c, 50.0);
        assert!((s - 1.4826).abs() < 1e-9, "{s}");
        v.push(400.0);
        let (c2, s2) = robust_center_spread(&v).unwrap();
        assert_eq!(c2, 50.0);
        assert!(s2 < 2.0, "{s2}");
        assert_eq!(robust_center_spread(&[]), None);
    }

    #[test]
    fn cpu_spike_fires_beyond_three_sigmas_not_on_them() {
        let c = config();
        // 3 sigmas of 4 points above 60 is 72: on the boundary it does not fire, just past it does.
        assert_eq!(cpu_spike(72.0, &expect(60.0, 4.0), &c), None);
        let f = cpu_spike(72.1, &expect(60.0, 4.0), &c).unwrap();
        assert_eq!(f.severity, Severity::Info);
        assert!(f.score > 0.5 && f.score < 0.51, "{}", f.score);
        assert!(
            f.summary.contains("72.1%") && f.summary.contains("60.0%"),
            "{}",
            f.summary
        );
        assert_eq!((f.expected, f.actual), (60.0, 72.1));
        // Below the expectation is never a spike.
        assert_eq!(cpu_spike(10.0, &expect(60.0, 4.0), &c), None);
        // Severity follows the level reached.
        assert_eq!(
            cpu_spike(90.0, &expect(60.0, 4.0), &c).unwrap().severity,
            Severity::Warning
        );
        assert_eq!(
            cpu_spike(96.0, &expect(60.0, 4.0), &c).unwrap().severity,
            Severity::Critical
        );
        // A spread below the floor is floored: 3 × 2 points, not 3 × 0.1.
        assert_eq!(cpu_spike(65.0, &expect(60.0, 0.1), &c), None);
        assert!(cpu_spike(66.1, &expect(60.0, 0.1), &c).is_some());
    }

    #[test]
    fn the_expectation_is_the_deployments_own_not_a_flat_mean() {
        // 80% at 09:00 is normal when the forecast expects 78% then, and a spike against a 40% expectation.
        let c = config();
        assert_eq!(cpu_spike(80.0, &expect(78.0, 3.0), &c), None);
        assert!(cpu_spike(80.0, &expect(40.0, 3.0), &c).is_some());
        let baseline = Expectation {
            source: ExpectationSource::Baseline,
            ..expect(40.0, 3.0)
        };
        let f = cpu_spike(80.0, &baseline, &c).unwrap();
        assert!(f.summary.contains("no trusted forecast"), "{}", f.summary);
    }

    #[test]
    fn thrash_needs_more_than_fifteen_changes() {
        let c = config();
        assert_eq!(scaling_thrash(15, 7, &c), None);
        let f = scaling_thrash(16, 7, &c).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert_eq!((f.expected, f.actual), (15.0, 16.0));
        assert!(
            f.summary.contains("16 times") && f.summary.contains("30 minutes"),
            "{}",
            f.summary
        );
        assert_eq!(
            scaling_thrash(31, 7, &c).unwrap().severity,
            Severity::Critical
        );
    }

    #[test]
    fn persistent_high_cpu_needs_the_level_and_the_duration() {
        let c = config();
        let max = Blocked::AtMaxReplicas(10);
        let fifteen = 15 * 60_000;
        assert_eq!(
            persistent_high_cpu(85.0, fifteen, max, &c),
            None,
            "85% is not above 85%"
        );
        assert_eq!(persistent_high_cpu(90.0, fifteen - 1, max, &c), None);
        let f = persistent_high_cpu(90.0, fifteen, max, &c).unwrap();
        assert_eq!(f.severity, Severity::Warning);
        assert!(f.summary.contains("maxReplicas of 10"), "{}", f.summary);
        assert_eq!(
            persistent_high_cpu(90.0, 2 * fifteen, max, &c)
                .unwrap()
                .severity,
            Severity::Critical
        );
        let u = persistent_high_cpu(97.0, fifteen, Blocked::Unschedulable(2), &c).unwrap();
        assert_eq!(u.severity, Severity::Critical);
        assert!(
            u.summary.contains("2 of its pods cannot be scheduled"),
            "{}",
            u.summary
        );
    }

    #[test]
    fn the_band_follows_the_validated_error_with_floors() {
        let c = config();
        // MAPE 20%: ± 40% of 50 = 20 points.
        let b = Band::new(50.0, 0.2, &c);
        assert_eq!(b.half_width, 20.0);
        assert_eq!(b.outside(70.0), 0.0, "the edge is inside");
        assert!((b.outside(71.0) - 1.0).abs() < 1e-9);
        assert!((b.outside(25.0) + 5.0).abs() < 1e-9);
        // A very accurate forecast still gets 25% of the expected value...
        assert_eq!(Band::new(80.0, 0.01, &c).half_width, 20.0);
        // ...and at least 5 points.
        assert_eq!(Band::new(4.0, 0.01, &c).half_width, 5.0);
    }

    #[test]
    fn pattern_deviation_needs_a_sustained_excursion() {
        let c = config();
        let b = Band::new(50.0, 0.1, &c); // ± 12.5 points
        let window = c.deviation_millis;
        assert_eq!(pattern_deviation(70.0, &b, window - 1, &c), None);
        assert_eq!(pattern_deviation(62.5, &b, window, &c), None, "on the edge");
        let above = pattern_deviation(70.0, &b, window, &c).unwrap();
        assert_eq!(above.severity, Severity::Warning);
        assert!(
            above
                .summary
                .contains("above the forecast band 50.0% ± 12.5"),
            "{}",
            above.summary
        );
        let below = pattern_deviation(20.0, &b, window, &c).unwrap();
        assert_eq!(below.severity, Severity::Info);
    }
}
