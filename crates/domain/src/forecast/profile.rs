//! The seasonal profile: mean demand per time-of-day slot, by day of week when the history has seen each day
//! at least twice, else by day type (weekday / weekend), else by time of day alone, scaled to the current level.
//! Its confidence grows with the days of history and with how consistently the same slot repeats.

use super::{Calendar, ForecastError, History, PointForecast, STEPS_PER_DAY};

/// Settings of the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Width of a time-of-day slot, minutes (divides 1440). Hour-of-day slots smear a spike that starts at
    /// 09:00 over the whole hour; fifteen minutes keep its edge.
    pub slot_minutes: u16,
    /// Business time zone as an offset from UTC, minutes: weekends and hours are local.
    pub utc_offset_minutes: i32,
    /// Days of history at which the amount of history stops limiting confidence.
    pub full_confidence_days: f64,
    /// Steps of recent history the level correction compares with the profile.
    pub level_steps: usize,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        ProfileConfig {
            slot_minutes: 15,
            utc_offset_minutes: 0,
            full_confidence_days: 4.0,
            level_steps: 12,
        }
    }
}

/// A cell while fitting: the sum and count of its daily values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Acc {
    sum: f64,
    n: u32,
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }
}

/// Of a time's three cells (its day of the week, its day type, its time of day, most specific first), the first
/// seen often enough to stand for it: two days for a day-of-week cell, one for the others. `seen` is a cell's count
/// of days; the same rule serves the fit (on sums) and the forecast (on means).
fn most_specific<C: Copy>(cells: [C; 3], seen: impl Fn(&C) -> u32) -> Option<C> {
    const MIN_DAYS: [u32; 3] = [2, 1, 1];
    cells
        .into_iter()
        .zip(MIN_DAYS)
        .find(|(c, min)| seen(c) >= *min)
        .map(|(c, _)| c)
}

/// A fitted cell: its mean and how many days it was seen on, in 8 bytes (a server keeps 960 cells per
/// deployment: 7 days x 96 slots, 2 day types x 96, 96).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Cell {
    mean: f32,
    n: u16,
}

impl Cell {
    fn of(acc: &Acc) -> Cell {
        Cell {
            mean: if acc.n > 0 {
                (acc.sum / f64::from(acc.n)) as f32
            } else {
                0.0
            },
            n: u16::try_from(acc.n).unwrap_or(u16::MAX),
        }
    }
    fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(f64::from(self.mean))
    }
}

/// A fitted profile.
#[derive(Debug, Clone, PartialEq)]
pub struct SeasonalProfile {
    config: ProfileConfig,
    slots: usize,
    by_day: Vec<Cell>,
    by_type: Vec<Cell>,
    by_time: Vec<Cell>,
    days: f64,
    consistency: f64,
    /// 80th percentile of the relative leave-one-out error, for the interval.
    spread: f64,
}

/// Fewest observed points a profile is fitted on: one day.
pub const MIN_POINTS: usize = STEPS_PER_DAY;

impl SeasonalProfile {
    /// Learns the profile of `history`.
    pub fn fit(
        history: &History,
        config: &ProfileConfig,
    ) -> Result<SeasonalProfile, ForecastError> {
        let observed = history.observed();
        if observed < MIN_POINTS {
            return Err(ForecastError::TooShort {
                have: observed,
                need: MIN_POINTS,
            });
        }
        let slot_minutes = config.slot_minutes.clamp(1, 1440);
        let slots = 1440usize.div_ceil(usize::from(slot_minutes));
        let mut profile = SeasonalProfile {
            config: ProfileConfig {
                slot_minutes,
                ..config.clone()
            },
            slots,
            by_day: Vec::new(),
            by_type: Vec::new(),
            by_time: Vec::new(),
            days: observed as f64 * history.step_millis as f64 / 86_400_000.0,
            consistency: 0.0,
            spread: 0.0,
        };
        // A cell holds one value per day it was seen: the mean of that day's points in the slot. Points of the
        // same day move together, so counting them separately would call one day's level "consistent".
        let slot_millis = i64::from(slot_minutes) * 60_000;
        let offset = i64::from(config.utc_offset_minutes) * 60_000;
        let mut visits: Vec<(i64, f64)> = Vec::new();
        let mut current: Option<(i64, i64, f64, u32)> = None;
        for (i, v) in history.values.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            let t = history.time_of(i);
            let id = (t + offset).div_euclid(slot_millis);
            match &mut current {
                Some((cid, _, sum, n)) if *cid == id => {
                    *sum += v;
                    *n += 1;
                }
                _ => {
                    if let Some((_, at, sum, n)) = current.take() {
                        visits.push((at, sum / f64::from(n)));
                    }
                    current = Some((id, t, *v, 1));
                }
            }
        }
        if let Some((_, at, sum, n)) = current {
            visits.push((at, sum / f64::from(n)));
        }
        let (mut by_day, mut by_type, mut by_time) = (
            vec![Acc::default(); 7 * slots],
            vec![Acc::default(); 2 * slots],
            vec![Acc::default(); slots],
        );
        for (t, v) in &visits {
            let (d, ty, s) = profile.cells(*t);
            by_day[d].add(*v);
            by_type[ty].add(*v);
            by_time[s].add(*v);
        }
        // Leave-one-out error of each day's value against the other days of its cell: an in-sample error would
        // call a cell seen once perfectly consistent.
        let mut abs_err = 0.0;
        let mut abs_val = 0.0;
        let mut rel = Vec::new();
        for (t, v) in &visits {
            let (d, ty, s) = profile.cells(*t);
            let Some(cell) = most_specific([by_day[d], by_type[ty], by_time[s]], |c| c.n) else {
                continue;
            };
            if cell.n < 2 {
                continue;
            }
            let others = (cell.sum - v) / f64::from(cell.n - 1);
            abs_err += (v - others).abs();
            abs_val += v.abs();
            if others.abs() > f64::EPSILON {
                rel.push(((v - others) / others).abs());
            }
        }
        profile.consistency = if abs_val > 0.0 {
            (1.0 - abs_err / abs_val).clamp(0.0, 1.0)
        } else {
            0.0
        };
        profile.by_day = by_day.iter().map(Cell::of).collect();
        profile.by_type = by_type.iter().map(Cell::of).collect();
        profile.by_time = by_time.iter().map(Cell::of).collect();
        rel.sort_by(f64::total_cmp);
        profile.spread = rel
            .get((rel.len() as f64 * 0.8) as usize)
            .copied()
            .unwrap_or(0.5)
            .min(1.0);
        Ok(profile)
    }

    fn cells(&self, t: i64) -> (usize, usize, usize) {
        let c = Calendar::of(t, self.config.utc_offset_minutes);
        let s = (usize::from(c.minute_of_day) / usize::from(self.config.slot_minutes))
            .min(self.slots - 1);
        (
            usize::from(c.day_of_week) * self.slots + s,
            usize::from(c.is_weekend()) * self.slots + s,
            s,
        )
    }

    /// The most specific cell for `t` with enough data: the day-of-week cell once seen on two days, else the
    /// day-type cell, else the time-of-day cell.
    fn cell_at(&self, t: i64) -> Option<Cell> {
        let (d, ty, s) = self.cells(t);
        most_specific([self.by_day[d], self.by_type[ty], self.by_time[s]], |c| {
            u32::from(c.n)
        })
    }

    /// Expected demand at `t` before level correction, if the profile has seen that time of day.
    pub fn expected(&self, t: i64) -> Option<f64> {
        self.cell_at(t).and_then(|c| c.mean())
    }

    /// Days of observed history.
    pub fn days(&self) -> f64 {
        self.days
    }

    /// How well a slot's past values predict each other, 0-1 (one minus the leave-one-out weighted error).
    pub fn consistency(&self) -> f64 {
        self.consistency
    }

    /// Confidence in the profile, 0-1: consistency scaled by the share of `full_confidence_days` seen.
    pub fn confidence(&self) -> f64 {
        let amount = (self.days / self.config.full_confidence_days.max(f64::EPSILON)).min(1.0);
        (amount * self.consistency).clamp(0.0, 1.0)
    }

    /// Ratio of the recent observed demand to what the profile expected for it, clamped to 0.5-2: a service
    /// that grew 20% since the profile's weeks keeps its shape at the new level.
    fn level(&self, history: &History) -> f64 {
        let n = history.values.len();
        let (mut actual, mut expected) = (0.0, 0.0);
        for i in n.saturating_sub(self.config.level_steps.max(1))..n {
            let v = history.values[i];
            if let (true, Some(e)) = (v.is_finite(), self.expected(history.time_of(i))) {
                actual += v;
                expected += e;
            }
        }
        if expected > f64::EPSILON && actual.is_finite() {
            (actual / expected).clamp(0.5, 2.0)
        } else {
            1.0
        }
    }

    /// Forecasts `steps` steps after the end of `history` (normally the history it was fitted on, possibly with
    /// newer points appended since).
    pub fn forecast(&self, history: &History, steps: usize) -> PointForecast {
        let level = self.level(history);
        let mut out = PointForecast::default();
        let last = history
            .values
            .iter()
            .rev()
            .find(|v| v.is_finite())
            .copied()
            .unwrap_or(0.0);
        for k in 0..steps {
            let t = history.time_of(history.values.len() + k);
            let v = self.expected(t).map_or(last, |e| e * level).max(0.0);
            out.values.push(v);
            out.lower.push((v * (1.0 - self.spread)).max(0.0));
            out.upper.push(v * (1.0 + self.spread));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::STEP_MILLIS;
    use super::*;
    use crate::testing::DailySpike;

    /// The shared daily spike (base 100, 300 from 09:00 to 10:00) at five minutes, with deterministic noise of
    /// `noise` relative, one draw per 15-minute slot: the profile sees a slot a day as one value.
    pub(crate) fn daily_spike(days: usize, noise: f64) -> History {
        let values = DailySpike::default().series(0, STEP_MILLIS, days * STEPS_PER_DAY, noise, 3);
        History::new(0, STEP_MILLIS, values)
    }

    #[test]
    fn recovers_a_daily_spike_before_it_comes() {
        // 7 days, then forecast from 08:30 on day 8.
        let h = daily_spike(8, 0.05);
        let cut = 7 * STEPS_PER_DAY + 102; // 08:30
        let past = h.head(cut);
        let p = SeasonalProfile::fit(&past, &ProfileConfig::default()).unwrap();
        let f = p.forecast(&past, 12);
        // 08:30-08:55 stays near 100, 09:00-09:25 near 300.
        for (k, v) in f.values.iter().enumerate() {
            let truth = if k < 6 { 100.0 } else { 300.0 };
            assert!((v - truth).abs() / truth < 0.1, "step {k}: {v} vs {truth}");
        }
        assert!(p.confidence() > 0.85, "confidence {}", p.confidence());
    }

    #[test]
    fn weekends_are_learned_apart_from_weekdays() {
        // 14 days from a Monday: weekdays 200, weekends 50.
        let monday = 4 * 86_400_000; // 1970-01-05
        let values = (0..14 * STEPS_PER_DAY)
            .map(|i| {
                if (i / STEPS_PER_DAY) % 7 >= 5 {
                    50.0
                } else {
                    200.0
                }
            })
            .collect();
        let h = History::new(monday, STEP_MILLIS, values);
        let p = SeasonalProfile::fit(&h, &ProfileConfig::default()).unwrap();
        let f = p.forecast(&h.head(12 * STEPS_PER_DAY), 1);
        assert!((f.values[0] - 50.0).abs() < 1.0, "saturday {}", f.values[0]);
        assert!((p.expected(monday + 86_400_000).unwrap() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn confidence_grows_with_history_and_falls_with_noise() {
        let short = SeasonalProfile::fit(&daily_spike(2, 0.05), &ProfileConfig::default()).unwrap();
        let long = SeasonalProfile::fit(&daily_spike(10, 0.05), &ProfileConfig::default()).unwrap();
        assert!(short.confidence() < long.confidence());
        // Two days of four: half the confidence a perfectly consistent history would have at most.
        assert!(
            short.confidence() <= 0.5 + 1e-9,
            "short {}",
            short.confidence()
        );
        // Noise that swings each point by up to ±60% of its level: each slot predicts the others badly.
        let noisy = SeasonalProfile::fit(&daily_spike(10, 0.6), &ProfileConfig::default()).unwrap();
        assert!(noisy.confidence() < 0.75, "noisy {}", noisy.confidence());
    }

    #[test]
    fn level_follows_recent_growth() {
        let mut h = daily_spike(7, 0.0);
        for v in h.values.iter_mut().skip(7 * STEPS_PER_DAY - 12) {
            *v *= 1.5;
        }
        let p = SeasonalProfile::fit(&h, &ProfileConfig::default()).unwrap();
        let f = p.forecast(&h, 1);
        assert!(f.values[0] > 130.0, "{}", f.values[0]);
    }

    #[test]
    fn short_or_empty_history_is_too_short() {
        assert!(matches!(
            SeasonalProfile::fit(&daily_spike(7, 0.0).head(100), &ProfileConfig::default()),
            Err(ForecastError::TooShort { have: 100, .. })
        ));
        let gaps = History::new(0, STEP_MILLIS, vec![f64::NAN; 1000]);
        assert!(SeasonalProfile::fit(&gaps, &ProfileConfig::default()).is_err());
    }
}
