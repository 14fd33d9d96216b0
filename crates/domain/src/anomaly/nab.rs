//! The Numenta Anomaly Benchmark (NAB) scorer, following NAB's own code (`nab/sweeper.py`, `nab/optimizer.py`,
//! `nab/runner.py`, `config/profiles.json` at NAB commit ea702d7) rule for rule, plus NAB's "windowed Gaussian"
//! baseline detector (`nab/detectors/gaussian/windowedGaussian_detector.py`) reproduced to the last bit, which
//! validates the scorer against NAB's published scoreboard. Pure: the caller reads the CSV files and the label
//! windows and hands over row indices and scores.
//!
//! The rules, in NAB's words turned into code:
//! - Every labelled window `[start, end]` (row indices, inclusive) earns at most one true positive: the earliest
//!   detection in it, weighted by the scaled sigmoid `2 / (1 + e^(5x)) - 1` of its position `x` relative to the
//!   window (`x = -(end - i + 1) / width`, so -1 at the first row and near 0 at the last), divided by its value at
//!   -1 and multiplied by the profile's TP weight. A window with no detection costs the FN weight.
//! - Every detection outside a window costs the FP weight times the sigmoid of its distance past the end of the
//!   previous window (in units of that window's width minus one); before the first window it costs the full
//!   FP weight. Every such detection counts, not only the first.
//! - Rows before `min(floor(0.15 * rows), 750)` are probationary and ignored (a window that lies entirely in
//!   probation is neither found nor missed).
//! - One threshold per profile for the whole corpus, chosen by sweeping every distinct score (NAB's optimiser):
//!   a row is a detection when its score is at or above the threshold.
//! - Normalised score = 100 * (raw - null) / (perfect - null), with `null` the raw score of a detector that
//!   always says 0.5 (so every window is missed) and `perfect` the TP weight times the number of windows.

use super::learned::normal_tail;

/// A NAB cost profile (`config/profiles.json`). The `tnWeight` of 1 in that file is never read by NAB's scorer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// NAB's profile name.
    pub name: &'static str,
    /// Weight of a true positive (a found window).
    pub tp: f64,
    /// Weight of a false positive (a detection outside every window).
    pub fp: f64,
    /// Weight of a false negative (a missed window).
    pub fn_: f64,
}

/// NAB's three profiles, in the order of its scoreboard.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

/// One data file of the corpus: its length and its labelled windows as inclusive row ranges, sorted and
/// disjoint (as NAB's `combined_windows.json` guarantees).
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSeries {
    /// The file's path relative to NAB's `data/` folder, e.g. `realKnownCause/nyc_taxi.csv`.
    pub name: String,
    /// Number of rows.
    pub rows: usize,
    /// The labelled windows, `(first row, last row)`, inclusive.
    pub windows: Vec<(usize, usize)>,
}

/// Why a series cannot be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NabError {
    /// A window is empty, out of range, or not after the previous one.
    #[error(
        "{name}: window {index} ({start}..={end}) is out of order or out of range for {rows} rows"
    )]
    BadWindow {
        /// The series.
        name: String,
        /// Which window.
        index: usize,
        /// Its first row.
        start: usize,
        /// Its last row.
        end: usize,
        /// Rows in the series.
        rows: usize,
    },
    /// The scores do not match the series' length.
    #[error("{name}: {scores} scores for {rows} rows")]
    Length {
        /// The series.
        name: String,
        /// Scores given.
        scores: usize,
        /// Rows in the series.
        rows: usize,
    },
    /// A score is outside [0, 1] or not a number (NAB's detector runner rejects those too).
    #[error("{name}: score {score} at row {row} is outside [0, 1]")]
    Score {
        /// The series.
        name: String,
        /// The row.
        row: usize,
        /// The score.
        score: f64,
    },
}

impl LabelledSeries {
    /// Checks that the windows are in range, non-empty, sorted and disjoint.
    pub fn validate(&self) -> Result<(), NabError> {
        let mut next_free = 0;
        for (index, &(start, end)) in self.windows.iter().enumerate() {
            if start < next_free || end < start || end >= self.rows {
                return Err(NabError::BadWindow {
                    name: self.name.clone(),
                    index,
                    start,
                    end,
                    rows: self.rows,
                });
            }
            next_free = end + 1;
        }
        Ok(())
    }

    /// Rows at the start that NAB ignores: `min(floor(0.15 * rows), 0.15 * 5000)` (`nab/util.py`).
    pub fn probation_rows(&self) -> usize {
        probation_rows(self.rows)
    }
}

/// Rows at the start of a file of `rows` rows that NAB ignores: `min(floor(0.15 * rows), 750)`.
pub fn probation_rows(rows: usize) -> usize {
    ((0.15 * rows as f64).floor() as usize).min(750)
}

/// NAB's `scaledSigmoid`: 2 / (1 + e^(5x)) - 1, and -1 beyond 3 window widths.
pub fn scaled_sigmoid(x: f64) -> f64 {
    if x > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * x).exp()) - 1.0
    }
}

/// One scorable (post-probation) row: its detector score, what detecting it is worth, and its window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepPoint {
    /// The detector's anomaly score.
    pub score: f64,
    /// The value of detecting this row under the profile (positive in a window, negative outside).
    pub weight: f64,
    /// The window it lies in (index into the series' windows), if any.
    pub window: Option<usize>,
}

/// NAB's `calcSweepScore` for one series: the scorable rows with their weights (probationary rows left out).
pub fn sweep_points(
    series: &LabelledSeries,
    scores: &[f64],
    profile: &Profile,
) -> Result<Vec<SweepPoint>, NabError> {
    series.validate()?;
    if scores.len() != series.rows {
        return Err(NabError::Length {
            name: series.name.clone(),
            scores: scores.len(),
            rows: series.rows,
        });
    }
    if let Some((row, &score)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| !(0.0..=1.0).contains(*s))
    {
        return Err(NabError::Score {
            name: series.name.clone(),
            row,
            score,
        });
    }
    let max_tp = scaled_sigmoid(-1.0);
    let probation = series.probation_rows();
    let mut points = Vec::with_capacity(series.rows.saturating_sub(probation));
    let mut next_window = 0;
    let mut current: Option<usize> = None;
    // (last row, width) of the window most recently left.
    let mut previous: Option<(usize, f64)> = None;
    for (i, &score) in scores.iter().enumerate() {
        if current.is_none() && series.windows.get(next_window).is_some_and(|w| w.0 == i) {
            current = Some(next_window);
            next_window += 1;
        }
        let weight = match current {
            Some(w) => {
                let (start, end) = series.windows[w];
                let width = (end - start + 1) as f64;
                let position = -((end - i + 1) as f64) / width;
                scaled_sigmoid(position) * profile.tp / max_tp
            }
            None => {
                let unweighted = match previous {
                    None => -1.0,
                    Some((last, width)) => scaled_sigmoid((i - last) as f64 / (width - 1.0)),
                };
                unweighted * profile.fp
            }
        };
        if i >= probation {
            points.push(SweepPoint {
                score,
                weight,
                window: current,
            });
        }
        if let Some(w) = current {
            let (start, end) = series.windows[w];
            if i == end {
                previous = Some((end, (end - start + 1) as f64));
                current = None;
            }
        }
    }
    Ok(points)
}

/// The outcome of one profile over a corpus at NAB's optimised threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileScore {
    /// The profile.
    pub profile: Profile,
    /// The threshold the sweep chose (rows scoring at or above it are detections); above 1 means "never".
    pub threshold: f64,
    /// NAB's raw score at that threshold.
    pub raw: f64,
    /// The raw score of the null detector (every window missed).
    pub null: f64,
    /// The raw score of a perfect detector (TP weight per window).
    pub perfect: f64,
    /// 100 * (raw - null) / (perfect - null).
    pub normalised: f64,
    /// Windows with at least one scorable row.
    pub windows: usize,
    /// Windows found at the threshold.
    pub found: usize,
    /// Detections outside every window at the threshold (rows).
    pub false_positives: usize,
}

/// Scores a corpus under one profile the NAB way: sweep every distinct score as the global threshold, keep the
/// best raw score (the highest threshold among equals, as NAB's stable sort does), normalise with the null and
/// perfect detectors.
pub fn score_corpus(
    corpus: &[(&LabelledSeries, &[f64])],
    profile: &Profile,
) -> Result<ProfileScore, NabError> {
    let best = sweep(corpus, profile)?;
    let nulls: Vec<Vec<f64>> = corpus.iter().map(|(s, _)| vec![0.5; s.rows]).collect();
    let null_corpus: Vec<(&LabelledSeries, &[f64])> = corpus
        .iter()
        .zip(&nulls)
        .map(|((s, _), n)| (*s, n.as_slice()))
        .collect();
    let null = sweep(&null_corpus, profile)?.raw;
    // NAB's normaliser counts every labelled window of the corpus (`tpCount`), probationary or not.
    let perfect = profile.tp * corpus.iter().map(|(s, _)| s.windows.len()).sum::<usize>() as f64;
    let normalised = 100.0 * (best.raw - null) / (perfect - null);
    Ok(ProfileScore {
        profile: *profile,
        threshold: best.threshold,
        raw: best.raw,
        null,
        perfect,
        normalised,
        windows: best.windows,
        found: best.found,
        false_positives: best.false_positives,
    })
}

struct Best {
    threshold: f64,
    raw: f64,
    windows: usize,
    found: usize,
    false_positives: usize,
}

/// NAB's `calcScoreByThreshold` over the whole corpus plus the optimiser's choice of the best threshold.
fn sweep(corpus: &[(&LabelledSeries, &[f64])], profile: &Profile) -> Result<Best, NabError> {
    // Points of all files, with windows numbered across the corpus.
    let mut points: Vec<(f64, f64, Option<usize>)> = Vec::new();
    let mut window_base = 0;
    for (series, scores) in corpus {
        for p in sweep_points(series, scores, profile)? {
            points.push((p.score, p.weight, p.window.map(|w| w + window_base)));
        }
        window_base += series.windows.len();
    }
    // The part of each window that has a scorable row: a miss until detected. Windows wholly in probation
    // have no part (NAB's `_prepareScoreByThresholdParts`).
    let mut window_part: Vec<Option<f64>> = vec![None; window_base];
    for &(_, _, w) in &points {
        if let Some(w) = w {
            window_part[w] = Some(-profile.fn_);
        }
    }
    let windows = window_part.iter().flatten().count();
    // Stable sort, highest score first (NAB: `sorted(..., key=anomalyScore, reverse=True)`).
    points.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut fp_part = 0.0;
    let mut found = 0;
    let mut false_positives = 0;
    // Threshold 1.1 detects nothing: every window missed.
    let mut best = Best {
        threshold: 1.1,
        raw: -profile.fn_ * windows as f64,
        windows,
        found: 0,
        false_positives: 0,
    };
    let mut i = 0;
    while i < points.len() {
        // All rows with the same score fall on the same side of any threshold.
        let threshold = points[i].0;
        while i < points.len() && points[i].0 == threshold {
            let (_, weight, window) = points[i];
            match window {
                Some(w) => {
                    let part = window_part[w].get_or_insert(-profile.fn_);
                    if *part == -profile.fn_ {
                        found += 1;
                    }
                    // The best (earliest) detection in a window counts, once.
                    *part = part.max(weight);
                }
                None => {
                    fp_part += weight;
                    false_positives += 1;
                }
            }
            i += 1;
        }
        let raw = fp_part + window_part.iter().flatten().sum::<f64>();
        // Strictly greater: among equal scores NAB keeps the first, i.e. the highest threshold.
        if raw > best.raw {
            best = Best {
                threshold,
                raw,
                windows,
                found,
                false_positives,
            };
        }
    }
    Ok(best)
}

/// NAB's windowed Gaussian detector: the score of a value is `1 - Q(|z|)` under the mean and standard
/// deviation of a window of past values (up to 6400, slid forward 100 values at a time). It reproduces NAB's
/// numerics: numpy's pairwise summation for the mean and the population standard deviation, the 1e-6 floor on
/// a zero standard deviation, and a score of 0 for the first value.
#[derive(Debug, Clone)]
pub struct WindowedGaussian {
    window: Vec<f64>,
    step: Vec<f64>,
    mean: f64,
    std: f64,
}

impl Default for WindowedGaussian {
    fn default() -> Self {
        Self::new()
    }
}

impl WindowedGaussian {
    /// NAB's window size.
    pub const WINDOW: usize = 6400;
    /// NAB's step.
    pub const STEP: usize = 100;

    /// A detector with no history.
    pub fn new() -> Self {
        WindowedGaussian {
            window: Vec::new(),
            step: Vec::new(),
            mean: 0.0,
            std: 1.0,
        }
    }

    /// The score of `value`, then learns it.
    pub fn update(&mut self, value: f64) -> f64 {
        let score = if self.window.is_empty() {
            0.0
        } else {
            // NAB's normalProbability reflects values below the mean before taking the upper tail.
            let x = if value < self.mean {
                2.0 * self.mean - value
            } else {
                value
            };
            1.0 - normal_tail((x - self.mean) / self.std)
        };
        if self.window.len() < Self::WINDOW {
            self.window.push(value);
            self.refresh();
        } else {
            self.step.push(value);
            if self.step.len() == Self::STEP {
                self.window.drain(..Self::STEP);
                self.window.append(&mut self.step);
                self.refresh();
            }
        }
        score
    }

    fn refresh(&mut self) {
        let n = self.window.len() as f64;
        self.mean = numpy_sum(&self.window) / n;
        let squares: Vec<f64> = self
            .window
            .iter()
            .map(|v| (v - self.mean) * (v - self.mean))
            .collect();
        self.std = (numpy_sum(&squares) / n).sqrt();
        if self.std == 0.0 {
            self.std = 0.000001;
        }
    }
}

/// numpy's pairwise summation of a contiguous float64 array (`pairwise_sum` in numpy's loops), so that means
/// and deviations agree with NAB's Python to the last bit.
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        let mut i = 8;
        while i < whole {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for v in &a[whole..] {
            res += v;
        }
        res
    } else {
        let mut half = n / 2;
        half -= half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// Rounds to 12 significant digits, as NAB's published result files (written by Python 2's `str(float)`) hold
/// their scores; NAB's scorer reads those files back, so reproducing its numbers needs the same rounding.
pub fn round_12(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = PROFILES[0];
    const LOW_FP: Profile = PROFILES[1];
    const LOW_FN: Profile = PROFILES[2];

    // 100 rows: probation is rows 0..15; one window, rows 40..=49 (width 10).
    fn series() -> LabelledSeries {
        LabelledSeries {
            name: "hand.csv".into(),
            rows: 100,
            windows: vec![(40, 49)],
        }
    }

    fn with(points: &[(usize, f64)]) -> Vec<f64> {
        let mut s = vec![0.0; 100];
        for &(i, v) in points {
            s[i] = v;
        }
        s
    }

    fn score(scores: &[f64], profile: &Profile) -> ProfileScore {
        score_corpus(&[(&series(), scores)], profile).unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn probation_follows_nab() {
        assert_eq!(probation_rows(100), 15);
        assert_eq!(probation_rows(4032), 604); // floor(604.8)
        assert_eq!(probation_rows(5000), 750);
        assert_eq!(probation_rows(22695), 750); // capped at 0.15 * 5000
    }

    #[test]
    fn scaled_sigmoid_matches_nab_docstring() {
        assert!((scaled_sigmoid(-1.0) - 0.98661).abs() < 1e-5);
        assert!((scaled_sigmoid(-0.5) - 0.84828).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(0.0), 0.0);
        assert!((scaled_sigmoid(1.0) + 0.98661).abs() < 1e-5);
        assert_eq!(scaled_sigmoid(3.5), -1.0);
    }

    #[test]
    fn perfect_detector_scores_100_and_null_scores_0() {
        for p in &PROFILES {
            let perfect = score(&with(&[(40, 1.0)]), p);
            assert!(close(perfect.normalised, 100.0), "{}: {perfect:?}", p.name);
            assert_eq!((perfect.found, perfect.false_positives), (1, 0));
            let null = score(&vec![0.5; 100], p);
            assert!(close(null.normalised, 0.0), "{}: {null:?}", p.name);
            assert!(close(null.raw, -p.fn_));
        }
    }

    #[test]
    fn detection_at_the_window_end_earns_less_than_at_its_start() {
        // Row 49 is the window's last row: position -1/10, sigmoid tanh(0.25) = 0.244918662, divided by the
        // value at the start, tanh(2.5) = 0.986614298: 0.248241. Standard: 100 * (0.248241 + 1) / 2 = 62.41.
        let end = score(&with(&[(49, 1.0)]), &STANDARD);
        assert!((end.normalised - 62.412).abs() < 1e-3, "{end:?}");
        // Row 45, half way: position -5/10, tanh(1.25) = 0.848283640 / 0.986614298 = 0.859793: 92.99.
        let middle = score(&with(&[(45, 1.0)]), &STANDARD);
        assert!((middle.normalised - 92.990).abs() < 1e-3, "{middle:?}");
        // Only the earliest detection counts: start and end together are worth the start alone.
        let both = score(&with(&[(40, 1.0), (49, 1.0)]), &STANDARD);
        assert!(close(both.normalised, 100.0), "{both:?}");
    }

    #[test]
    fn one_false_positive_costs_the_profile_fp_weight() {
        // Row 20 is before every window: it costs the full FP weight. Same score as the true detection, so no
        // threshold separates them. Standard: (1 - 0.11 + 1) / 2 = 94.5; low FP: (1 - 0.22 + 1) / 2 = 89;
        // low FN: null is -2, so (1 - 0.11 + 2) / 3 = 96.333.
        let scores = with(&[(20, 1.0), (40, 1.0)]);
        assert!(close(score(&scores, &STANDARD).normalised, 94.5));
        assert!(close(score(&scores, &LOW_FP).normalised, 89.0));
        assert!((score(&scores, &LOW_FN).normalised - 96.3333333).abs() < 1e-6);
        assert_eq!(score(&scores, &STANDARD).false_positives, 1);
        // A lower score for the false one: the sweep picks a threshold above it.
        let separable = score(&with(&[(20, 0.6), (40, 0.9)]), &STANDARD);
        assert!(close(separable.normalised, 100.0));
        assert_eq!(separable.threshold, 0.9);
    }

    #[test]
    fn false_positive_just_after_a_window_costs_less() {
        // Row 51: 2 rows past the window's last row (49), in units of width - 1 = 9: x = 2/9,
        // scaled sigmoid = -tanh(2.5 * 2/9) = -tanh(0.5556) = -0.504672, times 0.11 = -0.055514.
        let after = score(&with(&[(40, 1.0), (51, 1.0)]), &STANDARD);
        assert!((after.raw - (1.0 - 0.055514)).abs() < 1e-6, "{after:?}");
        // Far past (row 90: x = 41/9 > 3): the full -0.11.
        let far = score(&with(&[(40, 1.0), (90, 1.0)]), &STANDARD);
        assert!(close(far.raw, 0.89), "{far:?}");
    }

    #[test]
    fn detections_in_probation_are_ignored() {
        let scores = with(&[(5, 1.0), (14, 1.0), (40, 1.0)]);
        let s = score(&scores, &STANDARD);
        assert!(close(s.normalised, 100.0), "{s:?}");
        assert_eq!(s.false_positives, 0);
        // Row 15 is the first scored row.
        let s = score(&with(&[(15, 1.0), (40, 1.0)]), &STANDARD);
        assert_eq!(s.false_positives, 1);
    }

    #[test]
    fn a_window_inside_probation_is_neither_found_nor_missed_but_counts_as_perfect() {
        // NAB's null baseline only misses scorable windows, while its "perfect" counts every labelled window.
        let s = LabelledSeries {
            name: "p.csv".into(),
            rows: 100,
            windows: vec![(2, 5), (40, 49)],
        };
        let scores = with(&[(40, 1.0)]);
        let r = score_corpus(&[(&s, &scores)], &STANDARD).unwrap();
        assert_eq!(r.windows, 1);
        assert!(close(r.null, -1.0) && close(r.perfect, 2.0));
        assert!((r.normalised - 200.0 / 3.0).abs() < 1e-9, "{r:?}");
    }

    #[test]
    fn threshold_is_global_across_files() {
        // File A's detection scores 0.9, file B's false alarm 0.95: one threshold cannot take A's and leave B's.
        let a = series();
        let b = LabelledSeries {
            name: "b.csv".into(),
            rows: 100,
            windows: vec![],
        };
        let sa = with(&[(40, 0.9)]);
        let sb = with(&[(60, 0.95)]);
        let r = score_corpus(&[(&a, &sa), (&b, &sb)], &STANDARD).unwrap();
        // Threshold 0.9: 1 - 0.11 = 0.89 beats 0.95 (-1 - 0.11) and 1.1 (-1).
        assert!(close(r.raw, 0.89) && r.threshold == 0.9, "{r:?}");
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let s = LabelledSeries {
            name: "x.csv".into(),
            rows: 10,
            windows: vec![(5, 8), (7, 9)],
        };
        assert!(matches!(
            s.validate(),
            Err(NabError::BadWindow { index: 1, .. })
        ));
        assert!(matches!(
            score_corpus(&[(&series(), &[0.0; 3][..])], &STANDARD),
            Err(NabError::Length { .. })
        ));
        assert!(matches!(
            score_corpus(&[(&series(), &with(&[(3, 1.5)]))], &STANDARD),
            Err(NabError::Score { row: 3, .. })
        ));
    }

    #[test]
    fn numpy_sum_is_pairwise() {
        // numpy.sum([0.1] * 10) is exactly 1.0; a left-to-right sum gives 0.9999999999999999.
        let tenths = [0.1; 10];
        assert_eq!(numpy_sum(&tenths), 1.0);
        assert_ne!(tenths.iter().sum::<f64>(), 1.0);
        let big: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        assert_eq!(numpy_sum(&big), 499_500.0);
    }

    #[test]
    fn windowed_gaussian_follows_nab() {
        let mut g = WindowedGaussian::new();
        assert_eq!(g.update(10.0), 0.0); // nothing learnt yet
        // Second value: mean 10, std 0 floored to 1e-6: any difference is certain.
        assert_eq!(g.update(11.0), 1.0);
        // Mean 10.5, population std 0.5: a value at the mean scores 1 - Q(0) = 0.5, one std below 1 - Q(1).
        assert_eq!(g.update(10.5), 0.5);
        let mut g = WindowedGaussian::new();
        g.update(10.0);
        g.update(11.0);
        assert!((g.update(10.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
    }

    #[test]
    fn round_12_matches_python2_str() {
        assert_eq!(round_12(0.992_048_087_924_123_4), 0.992_048_087_924);
        assert_eq!(round_12(0.999_999_999_999_97), 1.0);
        assert_eq!(round_12(0.0), 0.0);
    }
}
