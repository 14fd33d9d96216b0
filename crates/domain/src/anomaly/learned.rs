//! The learned anomaly detector: a small, bounded, per-series state that turns a stream of `(time, value)`
//! points into an anomaly score in [0, 1]. It is pure (no clock, no IO): the tick feeds it one point per series
//! per tick and compares the score with [`LearnedConfig::threshold`]. Its settings are fixed globally (no
//! per-series tuning); `docs/anomaly-benchmark.md` shows how they score on the Numenta Anomaly Benchmark.
//!
//! Three stages, each O(1) per point:
//! 1. A raw surprise in [0, 1] per point: how far the value (and the short-term mean of the residual) lies from
//!    what the best of three models expects (the running mean, or that plus an hour-of-day or an hour-of-week
//!    offset, whichever has the lowest running squared error), as `-log10` of the two-sided normal tail, capped.
//! 2. An anomaly likelihood (as in Numenta's HTM detector): the raw surprise averaged over the last few points,
//!    compared with the running distribution of that average; the score is the log of its tail probability,
//!    scaled so that a tail of 1e-10 scores 1. A series that is always noisy thus raises its own bar.
//! 3. A spatial check (also from Numenta's detector): a value beyond the range seen so far, by more than a
//!    margin of that range, scores 1. After a score at or above the threshold, later crossings are held below
//!    it for a while: one event, one report.

use crate::model::UnixMillis;

/// Settings of the learned detector. One global configuration serves every series.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedConfig {
    /// Score at or above which the caller reports an anomaly. The detector also uses it: after a score at or
    /// above it, later crossings are held below it for `suppress_points` points, so one event crosses once.
    pub threshold: f64,
    /// Half-life, in points, of the running mean and variance of the value.
    pub long_half_life: f64,
    /// Half-life, in points, of the short-term mean of each model's residual (a second raw surprise, for shifts
    /// hidden in noise).
    pub short_half_life: f64,
    /// Points averaged into the short-term raw surprise (at most [`LearnedDetector::RING`]).
    pub average_points: usize,
    /// Half-life, in points, of the running distribution of the averaged raw surprise.
    pub likelihood_half_life: f64,
    /// Points seen before any non-zero score is returned (the statistics are not yet meaningful).
    pub warmup: u32,
    /// Margin, as a fraction of the range seen so far, beyond which a new extreme scores 1 (0 disables).
    pub spatial_tolerance: f64,
    /// Points after a reported anomaly during which further crossings are held below the threshold.
    pub suppress_points: u32,
    /// Which models of the expected value compete (the one with the lowest running squared error judges each
    /// point): 0 = the running mean only; 1 = also the hour-of-day profile; 2 = also the hour-of-week profile.
    pub mode: u32,
    /// Half-life of each profile bin's offset from the running mean, in days for the hour-of-day profile and in
    /// weeks for the hour-of-week profile.
    pub season_half_life_days: f64,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            threshold: 0.5,
            long_half_life: 500.0,
            short_half_life: 5.0,
            average_points: 16,
            likelihood_half_life: 3000.0,
            warmup: 300,
            spatial_tolerance: 0.02,
            suppress_points: 200,
            mode: 2,
            season_half_life_days: 3.0,
        }
    }
}

impl LearnedConfig {
    /// Sets a numeric field by name (for experiments such as the NAB example's `--set`); false if unknown.
    pub fn set(&mut self, field: &str, value: f64) -> bool {
        match field {
            "threshold" => self.threshold = value,
            "long_half_life" => self.long_half_life = value,
            "short_half_life" => self.short_half_life = value,
            "average_points" => self.average_points = value as usize,
            "likelihood_half_life" => self.likelihood_half_life = value,
            "warmup" => self.warmup = value as u32,
            "spatial_tolerance" => self.spatial_tolerance = value,
            "suppress_points" => self.suppress_points = value as u32,
            "mode" => self.mode = value as u32,
            "season_half_life_days" => self.season_half_life_days = value,
            _ => return false,
        }
        true
    }
}

/// A learned anomaly detector for one series: a fixed-size state (no heap), O(1) work per point.
#[derive(Debug, Clone)]
pub struct LearnedDetector {
    threshold: f64,
    long_alpha: f64,
    short_alpha: f64,
    likelihood_alpha: f64,
    average_points: usize,
    warmup: u32,
    spatial_tolerance: f64,
    suppress_points: u32,
    seen: u32,
    mean: f64,
    var: f64,
    /// Short-term mean of the residual from the running mean.
    global_short: f64,
    /// Running mean squared residual from the running mean.
    global_mse: f64,
    min: f64,
    max: f64,
    ring: [f64; LearnedDetector::RING],
    ring_sum: f64,
    raw_mean: f64,
    raw_var: f64,
    quiet_for: u32,
    mode: u32,
    season_half_life_days: f64,
    last_at: UnixMillis,
    /// Running mean interval between points, in milliseconds.
    interval: f64,
    /// Hour-of-day offsets.
    daily: Seasonal<DAILY_BINS>,
    /// Hour-of-week offsets.
    weekly: Seasonal<WEEKLY_BINS>,
}

const DAY: i64 = 86_400_000;
const DAILY_BINS: usize = 24;
const WEEKLY_BINS: usize = 24 * 7;

/// A seasonal model: the running mean plus a learnt offset per bin of the period (hour of the day or of the
/// week), with its own running squared error and short-term mean residual.
#[derive(Debug, Clone)]
struct Seasonal<const N: usize> {
    offset: [f32; N],
    /// Points seen per bin (saturating): an offset is trusted after a few.
    seen: [u8; N],
    mse: f64,
    short: f64,
}

impl<const N: usize> Seasonal<N> {
    fn new() -> Self {
        Seasonal {
            offset: [0.0; N],
            seen: [0; N],
            mse: 0.0,
            short: 0.0,
        }
    }

    /// The bin of a time: N bins over N hours (a day for 24, a week for 168; 1970-01-01 was a Thursday,
    /// which only shifts the labels).
    fn bin(at: UnixMillis) -> usize {
        let period = DAY / 24 * N as i64;
        (at.rem_euclid(period) * N as i64 / period) as usize
    }

    /// (running squared error, point z, short-term z) of this model for a point whose residual from the
    /// running mean is `global_residual`. Until the bin has history the model is the running mean.
    fn assess(
        &mut self,
        at: UnixMillis,
        global_residual: f64,
        short_alpha: f64,
        mse_floor: f64,
        short_gain: f64,
    ) -> (f64, f64, f64) {
        let bin = Self::bin(at);
        let ready = self.seen[bin] >= 3;
        let residual = global_residual
            - if ready {
                f64::from(self.offset[bin])
            } else {
                0.0
            };
        self.short += short_alpha * (residual - self.short);
        let std = self.mse.max(mse_floor).sqrt();
        let mse = if ready { self.mse } else { f64::INFINITY };
        (
            mse,
            residual.abs() / std,
            self.short.abs() / std * short_gain,
        )
    }

    /// Learns the point: the squared error of the prediction made, and the bin's offset.
    fn learn(&mut self, at: UnixMillis, global_residual: f64, long_alpha: f64, bin_alpha: f64) {
        let bin = Self::bin(at);
        let ready = self.seen[bin] >= 3;
        let residual = global_residual
            - if ready {
                f64::from(self.offset[bin])
            } else {
                0.0
            };
        self.mse += long_alpha * (residual * residual - self.mse);
        self.offset[bin] += (bin_alpha * (global_residual - f64::from(self.offset[bin]))) as f32;
        self.seen[bin] = self.seen[bin].saturating_add(1);
    }
}

/// The EWMA weight of the newest point for a half-life in points.
fn alpha(half_life: f64) -> f64 {
    1.0 - 0.5f64.powf(1.0 / half_life.max(1.0))
}

/// Running EWMA mean and variance update.
fn ewma(mean: &mut f64, var: &mut f64, alpha: f64, x: f64) {
    let d = x - *mean;
    *mean += alpha * d;
    *var = (1.0 - alpha) * (*var + alpha * d * d);
}

/// Scores are `-log10(tail) / LOG_SCALE`: a tail probability of 1e-10 scores 1.
const LOG_SCALE: f64 = 10.0;

/// The raw surprise saturates at a two-sided tail of 10^-RAW_CAP.
const RAW_CAP: f64 = 10.0;

impl LearnedDetector {
    /// Most points the short-term average of the raw surprise can span.
    pub const RING: usize = 16;

    /// A detector with no history.
    pub fn new(config: &LearnedConfig) -> Self {
        LearnedDetector {
            threshold: config.threshold,
            long_alpha: alpha(config.long_half_life),
            short_alpha: alpha(config.short_half_life),
            likelihood_alpha: alpha(config.likelihood_half_life),
            average_points: config.average_points.clamp(1, Self::RING),
            warmup: config.warmup,
            spatial_tolerance: config.spatial_tolerance,
            suppress_points: config.suppress_points,
            seen: 0,
            mean: 0.0,
            var: 0.0,
            global_short: 0.0,
            global_mse: 0.0,
            min: 0.0,
            max: 0.0,
            ring: [0.0; Self::RING],
            ring_sum: 0.0,
            raw_mean: 0.0,
            raw_var: 0.0,
            quiet_for: 0,
            mode: config.mode,
            season_half_life_days: config.season_half_life_days,
            last_at: 0,
            interval: 0.0,
            daily: Seasonal::new(),
            weekly: Seasonal::new(),
        }
    }

    /// Feeds one point and returns its anomaly score in [0, 1] (0 during warm-up and for non-finite values).
    pub fn update(&mut self, at: UnixMillis, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        if self.seen == 0 {
            self.seen = 1;
            self.mean = value;
            self.min = value;
            self.max = value;
            self.last_at = at;
            return 0.0;
        }
        let dt = (at - self.last_at) as f64;
        if dt > 0.0 {
            self.interval = if self.interval == 0.0 {
                dt
            } else {
                self.interval + 0.01 * (dt - self.interval)
            };
        }
        self.last_at = at;
        // Spatial: beyond the range seen so far by more than the tolerance.
        let range = self.max - self.min;
        let spatial = self.spatial_tolerance > 0.0
            && range > 0.0
            && (value > self.max + self.spatial_tolerance * range
                || value < self.min - self.spatial_tolerance * range);
        self.min = self.min.min(value);
        self.max = self.max.max(value);

        // Floor the spread so that a flat series does not make every wiggle infinitely surprising.
        let floor = (1e-3 * self.mean.abs()).max(1e-9);
        let mse_floor = floor * floor;
        // The short-term mean of a residual has a standard error smaller by this factor (EWMA of white noise).
        let short_gain = ((2.0 - self.short_alpha) / self.short_alpha).sqrt();

        // Model 0: the running mean.
        let global_residual = value - self.mean;
        self.global_short += self.short_alpha * (global_residual - self.global_short);
        let global_std = self.var.max(mse_floor).sqrt();
        let mut best = (
            self.global_mse,
            global_residual.abs() / global_std,
            self.global_short.abs() / global_std * short_gain,
        );
        self.global_mse += self.long_alpha * (global_residual * global_residual - self.global_mse);
        // The time-of-day and day-of-week models: the running mean plus the current bin's offset. The one with
        // the lowest running squared error judges the point.
        let per_day = if self.interval > 0.0 {
            DAY as f64 / self.interval
        } else {
            288.0
        };
        // Each hour of the day is visited per day as often as each hour of the week is per week, so one rate
        // serves both: a half-life of `season_half_life_days` days (weeks) of visits.
        let a = alpha(self.season_half_life_days * per_day / DAILY_BINS as f64);
        if self.mode >= 1 {
            let seen =
                self.daily
                    .assess(at, global_residual, self.short_alpha, mse_floor, short_gain);
            self.daily.learn(at, global_residual, self.long_alpha, a);
            if seen.0 < best.0 {
                best = seen;
            }
        }
        if self.mode >= 2 {
            let seen =
                self.weekly
                    .assess(at, global_residual, self.short_alpha, mse_floor, short_gain);
            self.weekly.learn(at, global_residual, self.long_alpha, a);
            if seen.0 < best.0 {
                best = seen;
            }
        }
        let (_, z_point, z_short) = best;
        // Surprise in bits of evidence: -log10 of the two-sided tail, capped. Sparse (mostly small, large for
        // the rare point far out), which is what the likelihood stage needs to separate events from noise.
        let raw = (-(2.0 * normal_tail(z_point.max(z_short)))
            .max(1e-300)
            .log10()
            / RAW_CAP)
            .min(1.0);
        ewma(&mut self.mean, &mut self.var, self.long_alpha, value);

        // The short-term average of the raw surprise over the last `average_points` points.
        let slot = self.seen as usize % self.average_points;
        self.ring_sum += raw - self.ring[slot];
        self.ring[slot] = raw;
        let n = (self.seen as usize).min(self.average_points) as f64;
        let average = self.ring_sum / n;
        // Tail probability of that average under the running distribution of past averages.
        let raw_std = self.raw_var.sqrt().max(0.01);
        let tail = normal_tail((average - self.raw_mean) / raw_std);
        ewma(
            &mut self.raw_mean,
            &mut self.raw_var,
            self.likelihood_alpha,
            average,
        );
        self.seen = self.seen.saturating_add(1);
        if self.seen <= self.warmup {
            return 0.0;
        }
        let mut score = (-tail.max(1e-300).log10() / LOG_SCALE).clamp(0.0, 1.0);
        if spatial {
            score = 1.0;
        }
        // One event, one report: hold later crossings below the threshold for a while.
        if self.quiet_for > 0 {
            self.quiet_for -= 1;
            if score >= self.threshold {
                score *= self.threshold * 0.5;
            }
        } else if score >= self.threshold {
            self.quiet_for = self.suppress_points;
        }
        score
    }
}

/// The upper tail probability of the standard normal distribution, P(Z > z).
pub fn normal_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

// The complementary error function, ported from FreeBSD's msun s_erf.c (via the Rust `libm` crate, MIT), so that
// it agrees to the last bit with the C library erfc that NAB's Python detectors call. The crate cannot depend on
// `libm` (the pure core's dependency list is fixed), hence the port.
pub use msun::erfc;

#[allow(clippy::excessive_precision)]
mod msun {
    /*
     * ====================================================
     * Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
     *
     * Developed at SunPro, a Sun Microsystems, Inc. business.
     * Permission to use, copy, modify, and distribute this
     * software is freely granted, provided that this notice
     * is preserved.
     * ====================================================
     */
    const ERX: f64 = 8.45062911510467529297e-01;
    const PP0: f64 = 1.28379167095512558561e-01;
    const PP1: f64 = -3.25042107247001499370e-01;
    const PP2: f64 = -2.84817495755985104766e-02;
    const PP3: f64 = -5.77027029648944159157e-03;
    const PP4: f64 = -2.37630166566501626084e-05;
    const QQ1: f64 = 3.97917223959155352819e-01;
    const QQ2: f64 = 6.50222499887672944485e-02;
    const QQ3: f64 = 5.08130628187576562776e-03;
    const QQ4: f64 = 1.32494738004321644526e-04;
    const QQ5: f64 = -3.96022827877536812320e-06;
    const PA0: f64 = -2.36211856075265944077e-03;
    const PA1: f64 = 4.14856118683748331666e-01;
    const PA2: f64 = -3.72207876035701323847e-01;
    const PA3: f64 = 3.18346619901161753674e-01;
    const PA4: f64 = -1.10894694282396677476e-01;
    const PA5: f64 = 3.54783043256182359371e-02;
    const PA6: f64 = -2.16637559486879084300e-03;
    const QA1: f64 = 1.06420880400844228286e-01;
    const QA2: f64 = 5.40397917702171048937e-01;
    const QA3: f64 = 7.18286544141962662868e-02;
    const QA4: f64 = 1.26171219808761642112e-01;
    const QA5: f64 = 1.36370839120290507362e-02;
    const QA6: f64 = 1.19844998467991074170e-02;
    const RA0: f64 = -9.86494403484714822705e-03;
    const RA1: f64 = -6.93858572707181764372e-01;
    const RA2: f64 = -1.05586262253232909814e+01;
    const RA3: f64 = -6.23753324503260060396e+01;
    const RA4: f64 = -1.62396669462573470355e+02;
    const RA5: f64 = -1.84605092906711035994e+02;
    const RA6: f64 = -8.12874355063065934246e+01;
    const RA7: f64 = -9.81432934416914548592e+00;
    const SA1: f64 = 1.96512716674392571292e+01;
    const SA2: f64 = 1.37657754143519042600e+02;
    const SA3: f64 = 4.34565877475229228821e+02;
    const SA4: f64 = 6.45387271733267880336e+02;
    const SA5: f64 = 4.29008140027567833386e+02;
    const SA6: f64 = 1.08635005541779435134e+02;
    const SA7: f64 = 6.57024977031928170135e+00;
    const SA8: f64 = -6.04244152148580987438e-02;
    const RB0: f64 = -9.86494292470009928597e-03;
    const RB1: f64 = -7.99283237680523006574e-01;
    const RB2: f64 = -1.77579549177547519889e+01;
    const RB3: f64 = -1.60636384855821916062e+02;
    const RB4: f64 = -6.37566443368389627722e+02;
    const RB5: f64 = -1.02509513161107724954e+03;
    const RB6: f64 = -4.83519191608651397019e+02;
    const SB1: f64 = 3.03380607434824582924e+01;
    const SB2: f64 = 3.25792512996573918826e+02;
    const SB3: f64 = 1.53672958608443695994e+03;
    const SB4: f64 = 3.19985821950859553908e+03;
    const SB5: f64 = 2.55305040643316442583e+03;
    const SB6: f64 = 4.74528541206955367215e+02;
    const SB7: f64 = -2.24409524465858183362e+01;

    fn erfc1(x: f64) -> f64 {
        let s = x.abs() - 1.0;
        let p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
        let q = 1.0 + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
        1.0 - ERX - p / q
    }

    fn erfc2(ix: u32, x: f64) -> f64 {
        if ix < 0x3ff40000 {
            // |x| < 1.25
            return erfc1(x);
        }
        let x = x.abs();
        let s = 1.0 / (x * x);
        let (r, big_s) = if ix < 0x4006db6d {
            // |x| < 1/.35
            (
                RA0 + s
                    * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7)))))),
                1.0 + s
                    * (SA1
                        + s * (SA2
                            + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8))))))),
            )
        } else {
            (
                RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6))))),
                1.0 + s
                    * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7)))))),
            )
        };
        let z = f64::from_bits(x.to_bits() & 0xffff_ffff_0000_0000);
        (-z * z - 0.5625).exp() * ((z - x) * (z + x) + r / big_s).exp() / x
    }

    /// The complementary error function, erfc(x) = 1 - erf(x), accurate to about one ulp.
    pub fn erfc(x: f64) -> f64 {
        let hi = (x.to_bits() >> 32) as u32;
        let negative = hi >> 31 != 0;
        let ix = hi & 0x7fffffff;
        if ix >= 0x7ff00000 {
            // erfc(nan) = nan, erfc(+inf) = 0, erfc(-inf) = 2
            return if negative { 2.0 } else { 0.0 } + 1.0 / x;
        }
        if ix < 0x3feb0000 {
            // |x| < 0.84375
            if ix < 0x3c700000 {
                return 1.0 - x;
            }
            let z = x * x;
            let r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
            let s = 1.0 + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
            let y = r / s;
            if negative || ix < 0x3fd00000 {
                return 1.0 - (x + x * y);
            }
            return 0.5 - (x - 0.5 + x * y);
        }
        if ix < 0x403c0000 {
            // 0.84375 <= |x| < 28
            return if negative {
                2.0 - erfc2(ix, x)
            } else {
                erfc2(ix, x)
            };
        }
        let tiny = f64::from_bits(0x0010000000000000);
        if negative { 2.0 - tiny } else { tiny * tiny }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_known_values() {
        // Reference values from the C library (glibc) erfc.
        let cases = [
            (0.0, 1.0),
            (0.5, 0.4795001221869535),
            (1.0, 0.15729920705028513),
            (2.0, 0.004677734981047266),
            (5.0, 1.537_459_794_428_035e-12),
            (-1.0, 1.8427007929497148),
        ];
        for (x, want) in cases {
            let got = erfc(x);
            assert!(
                ((got - want) / want).abs() < 1e-15,
                "erfc({x}) = {got}, want {want}"
            );
        }
        assert_eq!(erfc(f64::INFINITY), 0.0);
        assert_eq!(erfc(f64::NEG_INFINITY), 2.0);
    }

    #[test]
    fn scores_are_bounded_and_a_spike_stands_out() {
        let mut d = LearnedDetector::new(&LearnedConfig::default());
        let mut max_quiet: f64 = 0.0;
        for i in 0..2000 {
            let v = 50.0 + 5.0 * ((i as f64) * 0.7).sin();
            let s = d.update(i * 300_000, v);
            assert!((0.0..=1.0).contains(&s));
            if i > 1000 {
                max_quiet = max_quiet.max(s);
            }
        }
        // A sustained jump far outside the learned range.
        let shift = (2000..2010)
            .map(|i| d.update(i * 300_000, 200.0))
            .fold(0.0, f64::max);
        assert!(shift > max_quiet, "shift {shift} vs quiet {max_quiet}");
        assert!(shift >= LearnedConfig::default().threshold, "shift {shift}");
        assert_eq!(d.update(0, f64::NAN), 0.0);
    }

    const FIVE_MINUTES: i64 = 300_000;

    /// A deterministic noise in [-1, 1] (an LCG, so the test needs no RNG crate).
    fn noise(state: &mut u64) -> f64 {
        *state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// Five-minute points of a daily cycle (peak at noon) with noise; `skip_peak_on` removes one day's peak.
    fn daily(days: i64, skip_peak_on: Option<i64>) -> Vec<(i64, f64)> {
        let mut seed = 7;
        (0..days * 288)
            .map(|i| {
                let at = i * FIVE_MINUTES;
                let hour = (i % 288) as f64 / 12.0;
                let peak = if skip_peak_on == Some(i / 288) {
                    0.0
                } else {
                    1.0
                };
                let v =
                    20.0 + 30.0 * peak * (-(hour - 12.0).powi(2) / 8.0).exp() + noise(&mut seed);
                (at, v)
            })
            .collect()
    }

    fn reports(points: &[(i64, f64)], from: usize) -> Vec<usize> {
        let config = LearnedConfig::default();
        let mut d = LearnedDetector::new(&config);
        points
            .iter()
            .enumerate()
            .filter_map(|(i, &(at, v))| {
                (d.update(at, v) >= config.threshold && i >= from).then_some(i)
            })
            .collect()
    }

    #[test]
    fn a_regular_daily_cycle_raises_nothing_and_a_missing_peak_is_reported() {
        // The hourly offsets learn with a half-life of 3 days: after 4 days of learning, 8 normal days raise
        // nothing.
        assert_eq!(reports(&daily(12, None), 4 * 288), Vec::<usize>::new());
        // The same, with day 8's peak missing: reported, during that day's would-be peak hours.
        let found = reports(&daily(12, Some(8)), 4 * 288);
        assert!(!found.is_empty(), "the missing peak was not reported");
        let day_8 = 8 * 288..9 * 288;
        assert!(
            found.iter().all(|i| day_8.contains(i)),
            "reports outside day 8: {found:?}"
        );
    }

    #[test]
    fn one_event_is_reported_once() {
        // A flat noisy series with a level shift: the shift is reported once, not on every later point.
        let mut seed = 3;
        let points: Vec<(i64, f64)> = (0..3000)
            .map(|i| {
                (
                    i * FIVE_MINUTES,
                    if i < 2000 { 10.0 } else { 30.0 } + noise(&mut seed),
                )
            })
            .collect();
        let found = reports(&points, 0);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!((2000..2010).contains(&found[0]), "{found:?}");
    }

    #[test]
    fn state_is_small_and_fixed() {
        // No heap: the whole state is the struct. The NAB benchmark reports the same number.
        assert!(std::mem::size_of::<LearnedDetector>() <= 1536);
        // Clones are independent and deterministic.
        let mut a = LearnedDetector::new(&LearnedConfig::default());
        for i in 0..500 {
            a.update(i * FIVE_MINUTES, (i % 7) as f64);
        }
        let mut b = a.clone();
        assert_eq!(
            a.update(500 * FIVE_MINUTES, 3.0),
            b.update(500 * FIVE_MINUTES, 3.0)
        );
    }
}
