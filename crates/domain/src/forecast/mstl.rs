//! MSTL + ETS forecasts from augurs: the model of the ensemble that decomposes recent demand into a daily (and,
//! with two weeks of history, weekly) seasonal shape plus trend and remainder, forecasts trend + remainder with
//! a non-seasonal AutoETS, and adds the seasonal shape back on top.
//!
//! This module owns the adaptation between a [`History`] and augurs: which window is fitted, which periods are
//! given, which parts of the work are cut for cost (and why that costs no measurable accuracy), what counts as
//! too little or unusable history, how augurs' errors are reported, and clamping the result to what demand can
//! be: finite and never negative.

use std::borrow::Cow;
use std::error::Error as StdError;

use augurs::ets::AutoETS;
use augurs::ets::trend::AutoETSTrendModel;
use augurs::mstl::{FittedTrendModel, MSTLModel, TrendModel};
use augurs::{Fit, Predict};

use super::{ForecastError, History, PointForecast, STEPS_PER_DAY, STEPS_PER_WEEK};

/// Fewest observed points MSTL is fitted on: two days, so the daily period is seen twice (STL cannot estimate a
/// seasonal component from fewer than two cycles).
pub const MIN_POINTS: usize = 2 * STEPS_PER_DAY;

/// Most recent points fitted: four weeks. Every STL pass costs time in proportion to the window and MSTL makes
/// four of them once the weekly period is in (two iterations over two periods), while demand from more than a
/// month ago says little about the next hour: the daily seasonal smoother spans eleven days anyway. Four weeks
/// give the weekly period four cycles; in a backtest of 12-step forecasts on synthetic demand, three and four
/// weeks did about equally well and two weeks clearly worse.
const MAX_FIT_POINTS: usize = 4 * STEPS_PER_WEEK;

/// Points of trend + remainder the AutoETS is fitted on: the last day. The ETS optimiser evaluates the
/// likelihood over the whole series hundreds of times per candidate model, so on four weeks it took several
/// times as long as the whole decomposition (about 100 ms against 15 ms, release build); over a horizon of
/// minutes to an hour only the final level and slope matter, and a day of five-minute points pins them (and the
/// two to four smoothing parameters) down. In a backtest of 12-step forecasts the error differed by under 1%
/// whether ETS saw one day, two days or all four weeks.
const ETS_FIT_POINTS: usize = STEPS_PER_DAY;

/// ETS model search: additive error, no/additive/damped trend, no seasonality (MSTL owns the seasonality).
/// Multiplicative error is left out: the decomposition is additive, so its remainder is additive noise by
/// construction; multiplicative-error candidates are only admissible while every deseasonalised value is
/// positive (so the chosen model would flip with a single dip), and they made the search four to five times
/// slower without changing the backtest error.
const ETS_SPEC: &str = "AZN";

/// Coverage of the `lower..upper` interval.
const INTERVAL_LEVEL: f64 = 0.8;

/// augurs' STL works in `f32`; values beyond this could overflow it into infinities, so such a series is
/// rejected up front rather than fitted into garbage. Real demand is many orders of magnitude below.
const MAX_ABS_VALUE: f64 = 1e30;

/// Fits MSTL on the last four weeks of `history` (gaps interpolated) and forecasts `steps` steps after its end,
/// with an 80% interval, clamped at zero.
///
/// The periods are given, not detected: daily always, weekly once the fitted window holds two full weeks.
/// Trend + remainder is forecast by a non-seasonal, additive-error AutoETS fitted on the last day of it.
///
/// A constant (non-zero) series is forecast as exactly that constant with a zero-width interval: there is
/// nothing to decompose, and the `f32` decomposition would only add rounding noise to it.
///
/// # Errors
///
/// - [`ForecastError::TooShort`] when the fitted window has fewer than [`MIN_POINTS`] observed (finite)
///   points; for histories of up to four weeks that is the history's own observed count.
/// - [`ForecastError::Unusable`] when the window holds no positive demand (all zero: a stopped or silent
///   workload, nothing to forecast from) or values too large to fit.
/// - [`ForecastError::Model`] (model `"mstl"`) when augurs fails to fit or predict, or predicts non-finite
///   values.
pub fn forecast(history: &History, steps: usize) -> Result<PointForecast, ForecastError> {
    let window = history.tail(MAX_FIT_POINTS);
    let observed = window.observed();
    if observed < MIN_POINTS {
        return Err(ForecastError::TooShort {
            have: observed,
            need: MIN_POINTS,
        });
    }
    // Gap-free by construction: at least MIN_POINTS finite values, interpolated in between, ends held.
    let y = window.filled();

    let (lo, hi) = y
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    if hi > MAX_ABS_VALUE || lo < -MAX_ABS_VALUE {
        return Err(ForecastError::Unusable(format!(
            "values from {lo:e} to {hi:e} are beyond what MSTL can fit"
        )));
    }
    if hi <= 0.0 {
        return Err(ForecastError::Unusable(
            "no positive demand observed".into(),
        ));
    }
    if lo == hi {
        return Ok(PointForecast {
            values: vec![hi; steps],
            lower: vec![hi; steps],
            upper: vec![hi; steps],
        });
    }
    if steps == 0 {
        return Ok(PointForecast::default());
    }

    // STL needs two full cycles of each period.
    let mut periods = vec![STEPS_PER_DAY];
    if y.len() >= 2 * STEPS_PER_WEEK {
        periods.push(STEPS_PER_WEEK);
    }
    let trend = RecentTrend {
        points: ETS_FIT_POINTS,
        ets: AutoETS::new(1, ETS_SPEC)
            .map_err(model_error)?
            .into_trend_model(),
    };
    let fitted = MSTLModel::new(periods, trend)
        .fit(&y)
        .map_err(model_error)?;
    let forecast = fitted.predict(steps, INTERVAL_LEVEL).map_err(model_error)?;

    let Some(intervals) = forecast.intervals else {
        return Err(model_error("no prediction interval returned"));
    };
    let (values, lower, upper) = (forecast.point, intervals.lower, intervals.upper);
    if values.len() != steps || lower.len() != steps || upper.len() != steps {
        return Err(model_error(format!(
            "asked for {steps} steps, got {} values and {}/{} bounds",
            values.len(),
            lower.len(),
            upper.len()
        )));
    }
    if values
        .iter()
        .chain(&lower)
        .chain(&upper)
        .any(|v| !v.is_finite())
    {
        return Err(model_error("non-finite forecast"));
    }
    // Demand is never negative: a falling trend extrapolated past zero means idle, not less than idle. Clamping
    // is monotone, so lower <= value <= upper still holds afterwards.
    let clamp = |v: Vec<f64>| v.into_iter().map(|x| x.max(0.0)).collect::<Vec<_>>();
    Ok(PointForecast {
        values: clamp(values),
        lower: clamp(lower),
        upper: clamp(upper),
    })
}

/// The trend model handed to MSTL: augurs' AutoETS trend model, fitted on only the last `points` of the
/// deseasonalised series (see [`ETS_FIT_POINTS`] for why). MSTL only asks it for out-of-sample forecasts, which
/// continue from the end of the series whatever its fitted length.
#[derive(Debug)]
struct RecentTrend {
    points: usize,
    ets: AutoETSTrendModel,
}

impl TrendModel for RecentTrend {
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed("AutoETS on the recent trend")
    }

    fn fit(
        &self,
        y: &[f64],
    ) -> Result<Box<dyn FittedTrendModel + Sync + Send>, Box<dyn StdError + Send + Sync + 'static>>
    {
        let recent = &y[y.len().saturating_sub(self.points)..];
        TrendModel::fit(&self.ets, recent)
    }
}

fn model_error(e: impl std::fmt::Display) -> ForecastError {
    ForecastError::Model {
        model: "mstl",
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::STEP_MILLIS;
    use super::*;
    use crate::testing::DailySpike;

    /// Deterministic noise in [-0.5, 0.5): a 64-bit LCG, so the tests see the same series on every run.
    struct Noise(u64);

    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    /// Step of the day of bucket `i` when the series starts at midnight.
    fn step_of_day(i: usize) -> usize {
        i % STEPS_PER_DAY
    }

    const NINE: usize = 9 * 12; // 09:00 in five-minute steps

    /// The shared daily spike (base 100, 300 between 09:00 and 10:00) at bucket `i`, without noise.
    fn spike_truth(i: usize) -> f64 {
        DailySpike::default().at(i as i64 * STEP_MILLIS)
    }

    /// `n` buckets of the daily spike from midnight, with +-2.5% noise.
    fn daily_spike(n: usize, seed: u64) -> Vec<f64> {
        let mut noise = Noise(seed);
        (0..n)
            .map(|i| spike_truth(i) * (1.0 + 0.05 * noise.next()))
            .collect()
    }

    fn history(values: Vec<f64>) -> History {
        History::new(0, STEP_MILLIS, values)
    }

    fn assert_well_formed(f: &PointForecast, steps: usize) {
        assert_eq!(f.values.len(), steps);
        assert_eq!(f.lower.len(), steps);
        assert_eq!(f.upper.len(), steps);
        for i in 0..steps {
            let (l, v, u) = (f.lower[i], f.values[i], f.upper[i]);
            assert!(
                l.is_finite() && v.is_finite() && u.is_finite(),
                "step {i}: {l} {v} {u}"
            );
            assert!(0.0 <= l && l <= v && v <= u, "step {i}: {l} <= {v} <= {u}");
        }
    }

    #[test]
    fn forecasts_the_daily_spike_within_the_hour() {
        // Eight days, ending at 08:30: the first six steps are 08:30-09:00, the next six 09:00-09:30.
        let end = 8 * STEPS_PER_DAY + NINE - 6;
        let f = forecast(&history(daily_spike(end, 7)), 12).expect("fits");
        assert_well_formed(&f, 12);
        for (k, v) in f.values.iter().enumerate() {
            let truth = spike_truth(end + k);
            assert!(
                (v - truth).abs() <= 0.2 * truth,
                "step {k}: forecast {v}, truth {truth}, all {:?}",
                f.values
            );
        }
        let peak = f.max_over(12).expect("values");
        assert!((peak - 300.0).abs() <= 60.0, "peak {peak}");
        // A noisy series gets an interval of some width.
        assert!(f.upper.iter().zip(&f.lower).all(|(u, l)| u > l));
    }

    #[test]
    fn recovers_the_weekend_low_with_two_weeks_or_more() {
        // 19 days from a Monday (1970-01-05) to the following Saturday 00:00: weekdays around 200 with a
        // midday hump, weekends around 60. With the daily period alone the Saturday forecast would stay at
        // Friday's level; the weekly period must bring it down.
        let monday = 4 * 86_400_000;
        let truth = |i: usize| {
            let weekend = (i / STEPS_PER_DAY) % 7 >= 5;
            let phase = step_of_day(i) as f64 / STEPS_PER_DAY as f64;
            let hump = (std::f64::consts::TAU * (phase - 0.25)).sin().max(0.0);
            if weekend {
                60.0 + 10.0 * hump
            } else {
                200.0 + 50.0 * hump
            }
        };
        let n = 19 * STEPS_PER_DAY;
        let mut noise = Noise(11);
        let values = (0..n)
            .map(|i| truth(i) * (1.0 + 0.05 * noise.next()))
            .collect();
        let h = History::new(monday, STEP_MILLIS, values);
        let f = forecast(&h, STEPS_PER_DAY).expect("fits");
        assert_well_formed(&f, STEPS_PER_DAY);

        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let saturday: Vec<f64> = (n..n + STEPS_PER_DAY).map(truth).collect();
        let (got, want) = (mean(&f.values), mean(&saturday));
        assert!(
            (got - want).abs() <= 0.2 * want,
            "Saturday mean {got}, truth {want}"
        );
        let mape = f
            .values
            .iter()
            .zip(&saturday)
            .map(|(v, t)| (v - t).abs() / t)
            .sum::<f64>()
            / saturday.len() as f64;
        assert!(mape <= 0.2, "Saturday MAPE {mape}");
    }

    #[test]
    fn too_short_below_min_points() {
        let f = forecast(&history(daily_spike(MIN_POINTS - 1, 1)), 12);
        assert_eq!(
            f,
            Err(ForecastError::TooShort {
                have: MIN_POINTS - 1,
                need: MIN_POINTS
            })
        );
        // Long enough, but mostly gaps: what counts is what was observed.
        let mut values = daily_spike(4 * STEPS_PER_DAY, 1);
        for v in values.iter_mut().step_by(2) {
            *v = f64::NAN;
        }
        let observed = 2 * STEPS_PER_DAY;
        let mut sparse = values.clone();
        if let Some(v) = sparse.iter_mut().rev().find(|v| v.is_finite()) {
            *v = f64::NAN;
        }
        assert_eq!(
            forecast(&history(sparse), 12),
            Err(ForecastError::TooShort {
                have: observed - 1,
                need: MIN_POINTS
            })
        );
        // Exactly MIN_POINTS observed is enough.
        let f = forecast(&history(values), 12).expect("fits");
        assert_well_formed(&f, 12);
        assert_eq!(
            forecast(&history(Vec::new()), 12),
            Err(ForecastError::TooShort {
                have: 0,
                need: MIN_POINTS
            })
        );
    }

    #[test]
    fn tolerates_gaps_and_non_finite_points() {
        let end = 8 * STEPS_PER_DAY + NINE - 6;
        let mut values = daily_spike(end, 3);
        for v in values.iter_mut().step_by(7) {
            *v = f64::NAN;
        }
        // A two-hour outage the day before, and a few garbage points.
        let outage = 7 * STEPS_PER_DAY + 12 * 12;
        values[outage..outage + 24].fill(f64::NAN);
        values[100] = f64::INFINITY;
        values[200] = f64::NEG_INFINITY;
        let f = forecast(&history(values), 12).expect("fits");
        assert_well_formed(&f, 12);
        let peak = f.max_over(12).expect("values");
        assert!(
            (peak - 300.0).abs() <= 60.0,
            "peak {peak}, all {:?}",
            f.values
        );
    }

    #[test]
    fn never_forecasts_negative_demand() {
        // Demand falling from about 400 towards zero over four days with a daily swing of +-60: the trend and
        // the low of the swing extrapolate below zero.
        let n = 4 * STEPS_PER_DAY;
        let mut noise = Noise(5);
        let values = (0..n)
            .map(|i| {
                let fall = 400.0 * (1.0 - i as f64 / n as f64);
                let phase = step_of_day(i) as f64 / STEPS_PER_DAY as f64;
                let swing = 60.0 * (std::f64::consts::TAU * phase).sin();
                (fall + swing + 5.0 * noise.next()).max(0.0)
            })
            .collect();
        let f = forecast(&history(values), 2 * STEPS_PER_DAY).expect("fits");
        assert_well_formed(&f, 2 * STEPS_PER_DAY);
        assert!(
            f.values.contains(&0.0),
            "clamp not exercised: {:?}",
            f.values
        );
    }

    #[test]
    fn constant_series_forecasts_the_constant_and_all_zero_is_unusable() {
        let f = forecast(&history(vec![42.0; MIN_POINTS]), 3).expect("constant");
        assert_eq!(f.values, vec![42.0; 3]);
        assert_eq!(f.lower, vec![42.0; 3]);
        assert_eq!(f.upper, vec![42.0; 3]);
        assert!(matches!(
            forecast(&history(vec![0.0; 3 * STEPS_PER_DAY]), 3),
            Err(ForecastError::Unusable(_))
        ));
        assert!(matches!(
            forecast(&history(vec![-5.0; 3 * STEPS_PER_DAY]), 3),
            Err(ForecastError::Unusable(_))
        ));
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let spike = history(daily_spike(3 * STEPS_PER_DAY, 9));
        assert_eq!(forecast(&spike, 0), Ok(PointForecast::default()));
        let nan = history(vec![f64::NAN; 3 * STEPS_PER_DAY]);
        assert!(matches!(
            forecast(&nan, 12),
            Err(ForecastError::TooShort { have: 0, .. })
        ));
        let mut huge = daily_spike(3 * STEPS_PER_DAY, 9);
        huge[10] = 1e300;
        assert!(matches!(
            forecast(&history(huge), 12),
            Err(ForecastError::Unusable(_))
        ));
        // Exactly two weeks brings in the weekly period at its minimum; longer than four weeks is cut.
        for days in [14, 35] {
            let f = forecast(&history(daily_spike(days * STEPS_PER_DAY, 4)), 24).expect("fits");
            assert_well_formed(&f, 24);
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn point() -> impl Strategy<Value = f64> {
            prop_oneof![
                8 => 0.0f64..500.0,
                1 => Just(f64::NAN),
                1 => prop_oneof![Just(0.0), Just(f64::INFINITY), Just(-1.0), Just(1e12)],
            ]
        }

        proptest! {
            // Each case fits MSTL in a debug build; a few dozen cover the shapes without slowing the suite.
            #![proptest_config(ProptestConfig::with_cases(24))]

            #[test]
            fn any_series_gives_a_well_formed_forecast_or_an_error(
                values in proptest::collection::vec(point(), 0..900),
                steps in 0usize..30,
            ) {
                match forecast(&history(values), steps) {
                    Ok(f) => assert_well_formed(&f, steps),
                    Err(ForecastError::TooShort { have, need }) => {
                        prop_assert!(have < need);
                        prop_assert_eq!(need, MIN_POINTS);
                    }
                    Err(ForecastError::Unusable(_)) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }
}
