//! Forecasting, pure and synchronous: the demand history of a deployment as a regular series, the models that
//! forecast it (a seasonal hour-of-day x day-of-week profile, MSTL + ETS from augurs, and a bagged decision-tree
//! classifier from linfa-trees that answers "will demand rise past what the current capacity absorbs within the
//! horizon?"), the ensemble that weighs them by their validated error, and the scorecard that opens or closes a
//! deployment's trust in its forecasts.
//!
//! Everything forecasts *demand* (CPU in units of one pod's request x 100, i.e. utilization x ready pods), not
//! utilization: under an HPA the utilization series is flattened toward the target by the very scaling we want
//! to anticipate, while demand keeps its daily and weekly shape. Callers turn a demand forecast back into a
//! utilization over the current ready pods.
//!
//! Two windows: the *lead window* is the whole horizon (15 minutes by default), over which forecasts are scored,
//! weighted and trusted and the spike forest asks its question; the *lead time* (pod startup plus a sync) is the
//! part of it the served value is raised for, from the moment of each decision.

pub mod ensemble;
pub mod mstl;
pub mod online;
pub mod profile;
pub mod spike;
pub mod validate;

use super::model::UnixMillis;

/// Step of the series the models work on: five minutes, the store's rollup bucket. 30 days are 8,640 points,
/// which keeps a refit within a few tens of milliseconds; horizons of 5-60 minutes are 1-12 steps.
pub const STEP_MILLIS: i64 = 300_000;
/// Steps in a day at [`STEP_MILLIS`].
pub const STEPS_PER_DAY: usize = 288;
/// Steps in a week at [`STEP_MILLIS`].
pub const STEPS_PER_WEEK: usize = 7 * STEPS_PER_DAY;
const DAY_MILLIS: i64 = 86_400_000;

/// Why a model has no forecast.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// Not enough observed history for this model.
    #[error("not enough history: {have} points observed, {need} needed")]
    TooShort {
        /// Observed points.
        have: usize,
        /// Points needed.
        need: usize,
    },
    /// The history is unusable (constant zero, non-finite after filling, ...).
    #[error("unusable history: {0}")]
    Unusable(String),
    /// The model failed to fit or predict.
    #[error("model {model} failed: {message}")]
    Model {
        /// Which model.
        model: &'static str,
        /// What it said.
        message: String,
    },
}

/// A regular demand series: `values[i]` is the mean demand over `[start + i*step, start + (i+1)*step)`. Missing
/// buckets are `NaN`.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// Start of the first bucket.
    pub start: UnixMillis,
    /// Bucket width.
    pub step_millis: i64,
    /// Bucket means, `NaN` where nothing was observed.
    pub values: Vec<f64>,
}

impl History {
    /// A series of `values` from `start` at `step_millis`.
    pub fn new(start: UnixMillis, step_millis: i64, values: Vec<f64>) -> History {
        History {
            start,
            step_millis: step_millis.max(1),
            values,
        }
    }

    /// Buckets `points` (any order, any spacing) into means per `step_millis`, starting at the bucket of the
    /// earliest point; empty buckets are `NaN`, non-finite points are ignored.
    pub fn from_points(points: &[(UnixMillis, f64)], step_millis: i64) -> History {
        let step = step_millis.max(1);
        let finite = points.iter().filter(|(_, v)| v.is_finite());
        let Some(first) = finite.clone().map(|(t, _)| *t).min() else {
            return History::new(0, step, Vec::new());
        };
        let last = finite.clone().map(|(t, _)| *t).max().unwrap_or(first);
        let start = first.div_euclid(step) * step;
        let n = ((last - start) / step + 1) as usize;
        let mut sum = vec![0.0; n];
        let mut count = vec![0u32; n];
        for (t, v) in finite {
            let i = ((t - start) / step) as usize;
            sum[i] += v;
            count[i] += 1;
        }
        let values = sum
            .iter()
            .zip(&count)
            .map(|(s, c)| if *c > 0 { s / f64::from(*c) } else { f64::NAN })
            .collect();
        History::new(start, step, values)
    }

    /// Start time of bucket `i` (may be past the end, for forecast steps).
    pub fn time_of(&self, i: usize) -> UnixMillis {
        self.start + i as i64 * self.step_millis
    }

    /// Start of the bucket after the last one: the time the first forecast step covers.
    pub fn end(&self) -> UnixMillis {
        self.time_of(self.values.len())
    }

    /// Number of observed (finite) buckets.
    pub fn observed(&self) -> usize {
        self.values.iter().filter(|v| v.is_finite()).count()
    }

    /// The values with gaps filled by linear interpolation between their neighbours and the ends held; empty
    /// when nothing is observed. Models that need a gap-free series (MSTL) fit on this.
    pub fn filled(&self) -> Vec<f64> {
        let known: Vec<usize> = (0..self.values.len())
            .filter(|i| self.values[*i].is_finite())
            .collect();
        let (Some(&first), Some(&last)) = (known.first(), known.last()) else {
            return Vec::new();
        };
        let mut out = self.values.clone();
        out[..first].fill(self.values[first]);
        out[last + 1..].fill(self.values[last]);
        for pair in known.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            for (i, slot) in out.iter_mut().enumerate().take(b).skip(a + 1) {
                let frac = (i - a) as f64 / (b - a) as f64;
                *slot = self.values[a] * (1.0 - frac) + self.values[b] * frac;
            }
        }
        out
    }

    /// The last `n` buckets (all of them when shorter), as a history of its own.
    pub fn tail(&self, n: usize) -> History {
        let skip = self.values.len().saturating_sub(n);
        History::new(
            self.time_of(skip),
            self.step_millis,
            self.values[skip..].to_vec(),
        )
    }

    /// The first `n` buckets, as a history of its own (for replaying without peeking ahead).
    pub fn head(&self, n: usize) -> History {
        History::new(
            self.start,
            self.step_millis,
            self.values[..n.min(self.values.len())].to_vec(),
        )
    }
}

/// A point forecast with an interval, for steps `1..=n` after the end of the history: `values[0]` covers the
/// bucket starting at [`History::end`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointForecast {
    /// Expected demand per step.
    pub values: Vec<f64>,
    /// Lower bound per step (about an 80% interval).
    pub lower: Vec<f64>,
    /// Upper bound per step.
    pub upper: Vec<f64>,
}

impl PointForecast {
    /// Largest expected value over the first `steps` steps (the lead window), if any.
    pub fn max_over(&self, steps: usize) -> Option<f64> {
        self.values
            .iter()
            .take(steps.max(1))
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }
}

/// Where a time falls in the calendar (UTC shifted by `utc_offset_minutes`, the cluster's business time zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    /// 0 = Monday ... 6 = Sunday.
    pub day_of_week: u8,
    /// Minute of the day, 0-1439.
    pub minute_of_day: u16,
}

impl Calendar {
    /// The calendar position of `t`.
    pub fn of(t: UnixMillis, utc_offset_minutes: i32) -> Calendar {
        let local = t + i64::from(utc_offset_minutes) * 60_000;
        let day = local.div_euclid(DAY_MILLIS);
        // 1970-01-01 was a Thursday (3 when Monday is 0).
        let day_of_week = (day + 3).rem_euclid(7) as u8;
        let minute_of_day = (local.rem_euclid(DAY_MILLIS) / 60_000) as u16;
        Calendar {
            day_of_week,
            minute_of_day,
        }
    }

    /// Saturday or Sunday.
    pub fn is_weekend(&self) -> bool {
        self.day_of_week >= 5
    }

    /// Hour of the day, 0-23.
    pub fn hour(&self) -> u8 {
        (self.minute_of_day / 60) as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_points_buckets_means_and_marks_gaps() {
        let h = History::from_points(
            &[
                (310_000, 2.0),
                (320_000, 4.0),
                (1_000_000, 9.0),
                (5, f64::NAN),
            ],
            STEP_MILLIS,
        );
        assert_eq!(h.start, 300_000);
        assert_eq!(h.values.len(), 3);
        assert_eq!(h.values[0], 3.0);
        assert!(h.values[1].is_nan());
        assert_eq!(h.values[2], 9.0);
        assert_eq!(h.observed(), 2);
        assert_eq!(h.end(), 1_200_000);
    }

    #[test]
    fn filled_interpolates_inside_and_holds_the_ends() {
        let h = History::new(0, 1, vec![f64::NAN, 1.0, f64::NAN, f64::NAN, 4.0, f64::NAN]);
        assert_eq!(h.filled(), vec![1.0, 1.0, 2.0, 3.0, 4.0, 4.0]);
        assert!(History::new(0, 1, vec![f64::NAN]).filled().is_empty());
    }

    #[test]
    fn calendar_knows_the_epoch_was_a_thursday() {
        let c = Calendar::of(0, 0);
        assert_eq!((c.day_of_week, c.minute_of_day), (3, 0));
        // 2026-11-23 is a Monday; 13:30 UTC is 14:30 at UTC+1.
        let t = 1_795_440_600_000; // 2026-11-23T13:30:00Z
        let c = Calendar::of(t, 60);
        assert_eq!((c.day_of_week, c.hour(), c.is_weekend()), (0, 14, false));
        assert!(Calendar::of(t + 5 * DAY_MILLIS, 0).is_weekend());
    }

    #[test]
    fn max_over_takes_the_lead_window() {
        let f = PointForecast {
            values: vec![1.0, 5.0, 3.0],
            ..Default::default()
        };
        assert_eq!(f.max_over(1), Some(1.0));
        assert_eq!(f.max_over(9), Some(5.0));
        assert_eq!(PointForecast::default().max_over(3), None);
    }
}
