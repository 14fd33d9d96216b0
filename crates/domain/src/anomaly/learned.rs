//! The learned anomaly detector: a small, bounded, per-series state that turns a stream of `(time, value)`
//! points into an anomaly score in [0, 1]. It is pure (no clock, no IO): the tick feeds it one point per series
//! per tick and compares the score with [`LearnedConfig::threshold`]. Its settings are fixed globally (no
//! per-series tuning); `docs/anomaly-benchmark.md` shows how they score on the Numenta Anomaly Benchmark.

use crate::model::UnixMillis;

/// Settings of the learned detector. One global configuration serves every series.
#[derive(Debug, Clone, PartialEq)]
pub struct LearnedConfig {
    /// Score at or above which the caller reports an anomaly.
    pub threshold: f64,
    /// Half-life, in points, of the running mean and variance of the value.
    pub long_half_life: f64,
    /// Half-life, in points, of the short-term average of the raw score.
    pub short_half_life: f64,
    /// Half-life, in points, of the running distribution of the raw score (the "likelihood" baseline).
    pub likelihood_half_life: f64,
    /// Points seen before any non-zero score is returned (the statistics are not yet meaningful).
    pub warmup: u32,
}

impl Default for LearnedConfig {
    fn default() -> Self {
        LearnedConfig {
            threshold: 0.999,
            long_half_life: 500.0,
            short_half_life: 3.0,
            likelihood_half_life: 1000.0,
            warmup: 300,
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
            "likelihood_half_life" => self.likelihood_half_life = value,
            "warmup" => self.warmup = value as u32,
            _ => return false,
        }
        true
    }
}

/// A learned anomaly detector for one series: a few floats of state, O(1) work per point.
#[derive(Debug, Clone)]
pub struct LearnedDetector {
    long_alpha: f64,
    short_alpha: f64,
    likelihood_alpha: f64,
    warmup: u32,
    seen: u32,
    mean: f64,
    var: f64,
    short_raw: f64,
    raw_mean: f64,
    raw_var: f64,
}

/// The EWMA weight of the newest point for a half-life in points.
fn alpha(half_life: f64) -> f64 {
    1.0 - 0.5f64.powf(1.0 / half_life.max(1.0))
}

impl LearnedDetector {
    /// A detector with no history.
    pub fn new(config: &LearnedConfig) -> Self {
        LearnedDetector {
            long_alpha: alpha(config.long_half_life),
            short_alpha: alpha(config.short_half_life),
            likelihood_alpha: alpha(config.likelihood_half_life),
            warmup: config.warmup,
            seen: 0,
            mean: 0.0,
            var: 0.0,
            short_raw: 0.0,
            raw_mean: 0.0,
            raw_var: 0.0,
        }
    }

    /// Feeds one point and returns its anomaly score in [0, 1] (0 during warm-up and for non-finite values).
    pub fn update(&mut self, _at: UnixMillis, value: f64) -> f64 {
        if !value.is_finite() {
            return 0.0;
        }
        if self.seen == 0 {
            self.seen = 1;
            self.mean = value;
            return 0.0;
        }
        // Floor the spread so that a flat series does not make every wiggle infinitely surprising.
        let floor = (1e-3 * self.mean.abs()).max(1e-9);
        let std = self.var.sqrt().max(floor);
        let z = (value - self.mean).abs() / std;
        let raw = 1.0 - normal_tail(z) * 2.0;
        let d = value - self.mean;
        self.mean += self.long_alpha * d;
        self.var = (1.0 - self.long_alpha) * (self.var + self.long_alpha * d * d);

        self.short_raw += self.short_alpha * (raw - self.short_raw);
        let dr = raw - self.raw_mean;
        self.raw_mean += self.likelihood_alpha * dr;
        self.raw_var =
            (1.0 - self.likelihood_alpha) * (self.raw_var + self.likelihood_alpha * dr * dr);
        self.seen = self.seen.saturating_add(1);
        if self.seen <= self.warmup {
            return 0.0;
        }
        let raw_std = self.raw_var.sqrt().max(1e-4);
        // Either a point far outside the value's distribution, or a run of unusually high raw scores.
        let likelihood = 1.0 - normal_tail((self.short_raw - self.raw_mean) / raw_std);
        raw.max(likelihood).clamp(0.0, 1.0)
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
}
