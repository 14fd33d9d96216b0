//! The spike classifier: a bagged forest of `linfa-trees` decision trees that answers the one question a
//! classifier can answer honestly, "will demand rise above the current value x (1 + rise_margin) within the
//! next `horizon_steps`?". The share of trees voting "yes" is the spike probability.
//!
//! Every feature is scale-free (ratios and calendar positions, never raw demand), so a forest trained while a
//! deployment ran at 200 answers the same way when it runs at 2,000:
//!
//! - the time of day of the horizon's midpoint, as sin / cos of its minute of day (so 23:55 is next to 00:00),
//! - day of week (0 = Monday) and a weekend flag,
//! - the current value over the mean of the last 12 steps (an hour: is demand already off its level?),
//! - the current value over the value 3 steps earlier (momentum),
//! - what the same horizon did a day earlier: max of the `horizon_steps` after `t - day` over the value at
//!   `t - day`, and the same a week earlier (a neutral 1.0 until the history holds a week).
//!
//! Trees are grown on bootstrap samples (with replacement, from a small seeded generator, so fits are
//! reproducible) of [`BOOTSTRAP_ROWS`] rows each, drawn from the most recent
//! [`SpikeConfig::max_training_rows`] labelled rows and stratified by class. A sample is passed to linfa as its
//! distinct rows weighted by how often they were drawn: the same trees as with repeated rows, for less
//! split-search work. linfa's split search is what a refit costs, so the sample size is what keeps it cheap.
//!
//! The vote share is a hard-vote frequency, not a calibrated probability: where nothing is predictable, most
//! trees vote with the majority and the share sits at or below the base rate; where a pattern repeats, it
//! approaches 1.
//!
//! The series is expected at [`STEP_MILLIS`](super::STEP_MILLIS): the day and week lags are
//! [`STEPS_PER_DAY`] and [`STEPS_PER_WEEK`] steps.

use linfa::prelude::{Fit, ParamGuard};
use linfa::{Dataset, DatasetBase};
use linfa_trees::{DecisionTree, DecisionTreeValidParams, TreeNode};
use ndarray::{Array1, Array2, Axis};

use super::{Calendar, ForecastError, History, STEPS_PER_DAY, STEPS_PER_WEEK};

/// Settings of the spike classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeConfig {
    /// Steps ahead the question looks (1 to a day's steps, exclusive).
    pub horizon_steps: usize,
    /// A spike is demand rising above the current value x (1 + rise_margin) within the horizon.
    pub rise_margin: f64,
    /// Trees in the bagged forest.
    pub trees: usize,
    /// Depth limit per tree.
    pub max_depth: usize,
    /// Most recent rows trained on at most: the window the base rate and the trees' bootstrap samples (of
    /// [`BOOTSTRAP_ROWS`] each) come from.
    pub max_training_rows: usize,
    /// Seed of the bootstrap samples (fits are reproducible).
    pub seed: u64,
    /// Business time zone as an offset from UTC, minutes.
    pub utc_offset_minutes: i32,
}

impl Default for SpikeConfig {
    /// 3 steps (15 minutes) ahead, a 15% rise, 16 trees of depth 4 on samples from the last two weeks
    /// (4,032 rows): a refit on 30 days of history takes about 10 ms of one core.
    fn default() -> Self {
        SpikeConfig {
            horizon_steps: 3,
            rise_margin: 0.15,
            trees: 16,
            max_depth: 4,
            max_training_rows: 2 * STEPS_PER_WEEK,
            seed: 0x5EED,
            utc_offset_minutes: 0,
        }
    }
}

/// Rows each tree draws (with replacement) from the training rows: an "m-out-of-n" bootstrap. linfa-trees
/// scans every row of a node per feature with hashed class counts, about 50 ns a row and feature, so a forest
/// of 25 trees on full bootstraps of 4,000 rows costs ~200 ms. Small samples from a long window keep two weeks
/// of calendar context (every weekday twice) at about 10 ms a forest, and on held-out synthetic series scored
/// the same Brier score as full bootstraps of deeper trees; they also decorrelate the trees more.
pub const BOOTSTRAP_ROWS: usize = 384;

/// Number of features per row.
const FEATURES: usize = 8;
/// Steps of the recent level the current value is compared with (an hour).
const LEVEL_WINDOW: usize = 12;
/// Steps back of the momentum ratio.
const MOMENTUM_LAG: usize = 3;
/// Labelled rows needed at least to train: half a day, so that both classes can show up at all.
const MIN_ROWS: usize = STEPS_PER_DAY / 2;
/// A node is split only when it holds at least this many distinct rows: keeps trees off single noisy rows.
const MIN_SPLIT_ROWS: f32 = 4.0;
/// Each side of a split must carry at least this bootstrap weight.
const MIN_LEAF_WEIGHT: f32 = 2.0;

/// One node of a [`Tree`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Node {
    /// A leaf and its class.
    Leaf(bool),
    /// Goes to `left` when the feature is below the threshold, else to `right` (linfa's rule).
    Split {
        feature: u8,
        threshold: f64,
        left: u16,
        right: u16,
    },
}

/// A trained linfa-trees decision tree, flattened into an array. linfa keeps a boxed node per split, each with
/// its feature's name as a `String`: about 2 KB per tree of depth 4, 32 KB per forest, which was most of a
/// warmed-up forecaster's memory (`cargo bench --bench forecast`). This is 16 bytes a node.
#[derive(Debug, Clone, PartialEq)]
struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn from_linfa(tree: &DecisionTree<f64, bool>) -> Tree {
        fn add(node: &TreeNode<f64, bool>, nodes: &mut Vec<Node>) -> u16 {
            let at = nodes.len();
            nodes.push(Node::Leaf(false));
            if let Some(class) = node.prediction() {
                nodes[at] = Node::Leaf(class);
                return at as u16;
            }
            let (feature, threshold, _) = node.split();
            let children = node.children();
            let mut child = |i: usize| match children.get(i).and_then(|c| c.as_deref()) {
                Some(c) => add(c, nodes),
                // linfa never leaves a split without both children; a lone leaf keeps the walk total.
                None => {
                    nodes.push(Node::Leaf(false));
                    (nodes.len() - 1) as u16
                }
            };
            let (left, right) = (child(0), child(1));
            nodes[at] = Node::Split {
                feature: feature as u8,
                threshold,
                left,
                right,
            };
            at as u16
        }
        let mut nodes = Vec::new();
        add(tree.root_node(), &mut nodes);
        nodes.shrink_to_fit();
        Tree { nodes }
    }

    fn predict(&self, row: &[f64]) -> bool {
        let mut at = 0;
        loop {
            match self.nodes.get(at) {
                Some(Node::Leaf(class)) => return *class,
                Some(Node::Split {
                    feature,
                    threshold,
                    left,
                    right,
                }) => {
                    let x = row.get(usize::from(*feature)).copied().unwrap_or(f64::NAN);
                    at = usize::from(if x < *threshold { *left } else { *right });
                }
                None => return false,
            }
        }
    }
}

/// Weight factor on rows without a spike: breaks exact ties between the classes in a leaf (see `train`). With at
/// most a few hundred rows in a bootstrap, a 1e-4 relative difference is far above f32 rounding and far below
/// one row's weight, so it settles exact ties and nothing else.
const TIE_BREAK: f32 = 1.0001;

/// A trained forest, or, when the training rows held a single class, just that class's base rate.
#[derive(Debug, Clone)]
pub struct SpikeForest {
    /// Empty when the training rows held a single class: there is nothing to discriminate, and the honest
    /// answer to every question is the base rate (0 or 1).
    trees: Vec<Tree>,
    /// Spike labels among the training rows.
    spikes: usize,
    rows: usize,
    horizon_steps: usize,
    utc_offset_minutes: i32,
}

impl SpikeForest {
    /// Trains on `history` (at [`STEP_MILLIS`](super::STEP_MILLIS) steps).
    ///
    /// Errors: [`ForecastError::TooShort`] with fewer than two days (plus the horizon) observed, or fewer than
    /// half a day of labelled rows; [`ForecastError::Model`] on settings that cannot train (no trees, a zero
    /// depth or row limit, a horizon of a day or more, a non-finite margin) or when linfa fails.
    pub fn train(history: &History, config: &SpikeConfig) -> Result<SpikeForest, ForecastError> {
        check_config(config)?;
        let h = config.horizon_steps;
        // A row needs a day of lag history before it and a full horizon after it; on top of that, a day's
        // worth of rows to learn from.
        let need = STEPS_PER_DAY + h + STEPS_PER_DAY;
        let observed = history.observed();
        if observed < need {
            return Err(ForecastError::TooShort {
                have: observed,
                need,
            });
        }
        let filled = history.filled();
        let (records, labels) = training_rows(history, &filled, config);
        if labels.len() < MIN_ROWS {
            return Err(ForecastError::TooShort {
                have: labels.len(),
                need: MIN_ROWS,
            });
        }
        let spikes = labels.iter().filter(|l| **l).count();
        let base_rate = spikes as f64 / labels.len() as f64;
        let mut forest = SpikeForest {
            trees: Vec::new(),
            spikes,
            rows: labels.len(),
            horizon_steps: h,
            utc_offset_minutes: config.utc_offset_minutes,
        };
        if spikes == 0 || spikes == labels.len() {
            return Ok(forest);
        }

        let params: DecisionTreeValidParams<f64, bool> = DecisionTree::params()
            .max_depth(Some(config.max_depth))
            .min_weight_split(MIN_SPLIT_ROWS)
            .min_weight_leaf(MIN_LEAF_WEIGHT)
            .check()
            .map_err(model_error)?;
        let mut rng = SplitMix64(config.seed);
        let m = labels.len();
        let (positives, negatives): (Vec<usize>, Vec<usize>) = (0..m).partition(|i| labels[*i]);
        // Each tree sees a small bootstrap (see BOOTSTRAP_ROWS), stratified: exactly the training rows' share of
        // spikes, drawn with replacement within each class. A rare class then shows up in every tree in its true
        // proportion instead of by luck, and the vote share stays on the scale of the base rate.
        let draws = m.min(BOOTSTRAP_ROWS);
        let positive_draws = ((draws as f64 * base_rate).round() as usize).min(draws);
        let mut counts = vec![0u32; m];
        forest.trees.reserve(config.trees);
        for _ in 0..config.trees {
            counts.fill(0);
            for k in 0..draws {
                let class = if k < positive_draws {
                    &positives
                } else {
                    &negatives
                };
                counts[class[rng.below(class.len())]] += 1;
            }
            let drawn: Vec<usize> = (0..m).filter(|i| counts[*i] > 0).collect();
            let x = records.select(Axis(0), &drawn);
            let y: Array1<bool> = drawn.iter().map(|i| labels[*i]).collect();
            // linfa-trees picks a leaf's class by iterating a HashMap, so a leaf holding equal weights of both
            // classes voted at random (a different forest, and different simulate results, in every process).
            // Weighting quiet rows a hair more makes such a leaf vote "no spike", always.
            let w: Array1<f32> = drawn
                .iter()
                .map(|i| counts[*i] as f32 * if labels[*i] { 1.0 } else { TIE_BREAK })
                .collect();
            let sample: DatasetBase<Array2<f64>, Array1<bool>> = Dataset::new(x, y).with_weights(w);
            let tree = params.fit(&sample).map_err(model_error)?;
            forest.trees.push(Tree::from_linfa(&tree));
        }
        Ok(forest)
    }

    /// Probability of a spike within the horizon after the end of `history`: the share of trees voting
    /// "spike" for the features at its last bucket (the base rate for a single-class forest). A missing last
    /// bucket is held at the last observed value. Needs a day of history before the last bucket
    /// ([`ForecastError::TooShort`] otherwise). Never panics on `NaN`, infinite or zero demand: ratios that
    /// are not finite read as a neutral 1.0.
    pub fn probability(&self, history: &History) -> Result<f64, ForecastError> {
        // A week and one step is all the features look back over.
        let recent = history.tail(STEPS_PER_WEEK + 1);
        let filled = recent.filled();
        let need = STEPS_PER_DAY + 1;
        if filled.len() < need {
            return Err(ForecastError::TooShort {
                have: recent.observed(),
                need,
            });
        }
        if self.trees.is_empty() {
            return Ok(self.base_rate());
        }
        let t = filled.len() - 1;
        let row = features(
            &recent,
            &filled,
            t,
            self.horizon_steps,
            self.utc_offset_minutes,
        );
        let votes = self.trees.iter().filter(|tree| tree.predict(&row)).count();
        Ok(votes as f64 / self.trees.len() as f64)
    }

    /// Spike labels in the training rows: how many rises the forest has seen.
    pub fn spike_rows(&self) -> usize {
        self.spikes
    }

    /// Share of spike labels in the training rows.
    pub fn base_rate(&self) -> f64 {
        self.spikes as f64 / self.rows.max(1) as f64
    }

    /// Trees in the forest; 0 when the training rows held a single class and the forest answers its base rate.
    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    /// Labelled rows the forest was trained on (before bootstrapping).
    pub fn training_rows(&self) -> usize {
        self.rows
    }
}

fn model_error(e: impl std::fmt::Display) -> ForecastError {
    ForecastError::Model {
        model: "spike",
        message: e.to_string(),
    }
}

fn check_config(config: &SpikeConfig) -> Result<(), ForecastError> {
    let invalid = |what: &str| {
        Err(ForecastError::Model {
            model: "spike",
            message: format!("invalid config: {what}"),
        })
    };
    // The day-lag feature reads the horizon after `t - day`, which must end before `t`.
    if config.horizon_steps == 0 || config.horizon_steps >= STEPS_PER_DAY {
        return invalid("horizon_steps must be 1 to a day's steps (exclusive)");
    }
    if !config.rise_margin.is_finite() || config.rise_margin <= -1.0 {
        return invalid("rise_margin must be finite and above -1");
    }
    if config.trees == 0 || config.max_depth == 0 || config.max_training_rows == 0 {
        return invalid("trees, max_depth and max_training_rows must be positive");
    }
    Ok(())
}

/// The most recent `max_training_rows` labelled rows of `history`: features from `filled`, labels "the max of
/// the next `horizon_steps` values is above the current value x (1 + rise_margin)". Rows whose own value or
/// any value of their horizon was missing are skipped: their label would be made up by the interpolation.
fn training_rows(
    history: &History,
    filled: &[f64],
    config: &SpikeConfig,
) -> (Array2<f64>, Vec<bool>) {
    let h = config.horizon_steps;
    let n = filled.len();
    let observed = |i: usize| history.values.get(i).is_some_and(|v| v.is_finite());
    let mut flat = Vec::with_capacity(config.max_training_rows.min(n) * FEATURES);
    let mut labels = Vec::with_capacity(config.max_training_rows.min(n));
    // Newest first, so the row limit keeps the most recent rows; the order means nothing to the trees.
    let last = n.saturating_sub(h + 1);
    for t in (STEPS_PER_DAY..=last).rev() {
        if labels.len() >= config.max_training_rows {
            break;
        }
        if !(t..=t + h).all(observed) {
            continue;
        }
        let peak = filled[t + 1..=t + h]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        labels.push(peak > filled[t] * (1.0 + config.rise_margin));
        flat.extend_from_slice(&features(history, filled, t, h, config.utc_offset_minutes));
    }
    let rows = labels.len();
    // Shape and length agree by construction; an empty matrix is the fallback that cannot fail.
    let records = Array2::from_shape_vec((rows, FEATURES), flat)
        .unwrap_or_else(|_| Array2::zeros((0, FEATURES)));
    (records, labels)
}

/// The features of index `t` of `filled` (`t >= STEPS_PER_DAY`; `history` only gives the times).
fn features(
    history: &History,
    filled: &[f64],
    t: usize,
    h: usize,
    utc_offset_minutes: i32,
) -> [f64; FEATURES] {
    // The calendar of the middle of the horizon: the window the question is about, not the current bucket.
    let mid = history.time_of(t + 1) + h as i64 * history.step_millis / 2;
    let cal = Calendar::of(mid, utc_offset_minutes);
    let angle = std::f64::consts::TAU * f64::from(cal.minute_of_day) / 1440.0;

    let v = filled[t];
    let from = t.saturating_sub(LEVEL_WINDOW - 1);
    let level = filled[from..=t].iter().sum::<f64>() / (t + 1 - from) as f64;
    let momentum_base = filled[t.saturating_sub(MOMENTUM_LAG)];
    // "What the following horizon did one season ago": reads only indices before t, since h < a day.
    let seasonal = |lag: usize| {
        t.checked_sub(lag).map_or(1.0, |s| {
            let peak = filled[s + 1..=s + h]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            ratio(peak, filled[s])
        })
    };
    [
        angle.sin(),
        angle.cos(),
        f64::from(cal.day_of_week),
        if cal.is_weekend() { 1.0 } else { 0.0 },
        ratio(v, level),
        ratio(v, momentum_base),
        seasonal(STEPS_PER_DAY),
        seasonal(STEPS_PER_WEEK),
    ]
}

/// `a / b`, or a neutral 1.0 when that is not a finite number (zero, `NaN` or infinite operands). The trees
/// sort every feature, so a non-finite value would corrupt the split search.
fn ratio(a: f64, b: f64) -> f64 {
    let r = a / b;
    if r.is_finite() { r } else { 1.0 }
}

/// SplitMix64: a tiny, well-mixed generator, enough for bootstrap draws and free of dependencies.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by the multiply-shift reduction (bias below 2^-50 for any row count).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::super::STEP_MILLIS;
    use super::*;
    use crate::testing::DailySpike;
    use linfa::prelude::Predict;

    #[test]
    fn flattened_trees_predict_exactly_like_linfa() {
        let history = daily_spike(10, 0.2);
        let filled = history.filled();
        let config = SpikeConfig::default();
        let (records, labels) = training_rows(&history, &filled, &config);
        assert!(labels.iter().any(|l| *l) && labels.iter().any(|l| !*l));
        for depth in [1, 4, 8] {
            let tree = DecisionTree::params()
                .max_depth(Some(depth))
                .fit(&Dataset::new(records.clone(), Array1::from(labels.clone())))
                .unwrap();
            let flat = Tree::from_linfa(&tree);
            assert!(flat.nodes.len() < 1 << (depth + 1));
            let linfa: Array1<bool> = tree.predict(&records);
            for (row, want) in records.rows().into_iter().zip(linfa) {
                assert_eq!(flat.predict(row.as_slice().unwrap()), want);
            }
        }
    }

    /// The shared daily spike (base 100, 300 from 09:00 to 10:00 UTC, from a Thursday midnight) at five minutes,
    /// with deterministic noise of `noise` relative.
    fn daily_spike(days: usize, noise: f64) -> History {
        let values = DailySpike::default().series(0, STEP_MILLIS, days * STEPS_PER_DAY, noise, 1);
        History::new(0, STEP_MILLIS, values)
    }

    /// Index of `hh:mm` on day `day`.
    fn at(day: usize, hh: usize, mm: usize) -> usize {
        day * STEPS_PER_DAY + (hh * 60 + mm) / 5
    }

    #[test]
    fn sees_the_daily_spike_coming_and_not_in_the_afternoon() {
        let h = daily_spike(9, 0.03);
        let config = SpikeConfig::default();
        // Train on 8 days, ask about the 9th without having seen it.
        let forest = SpikeForest::train(&h.head(8 * STEPS_PER_DAY), &config).unwrap();
        assert_eq!(forest.tree_count(), config.trees);
        // 3 of 288 rows a day are "a rise is coming": 08:45, 08:50 and 08:55.
        assert!((forest.base_rate() - 3.0 / 288.0).abs() < 0.002);
        // History ending with the 08:50 bucket: the horizon covers 08:55-09:10.
        let before = forest.probability(&h.head(at(8, 8, 50) + 1)).unwrap();
        assert!(before > 0.7, "before the spike: {before}");
        let afternoon = forest.probability(&h.head(at(8, 14, 0) + 1)).unwrap();
        assert!(afternoon < 0.3, "afternoon: {afternoon}");
        // Already inside the spike, nothing rises further.
        let during = forest.probability(&h.head(at(8, 9, 20) + 1)).unwrap();
        assert!(during < 0.3, "during: {during}");
    }

    #[test]
    fn generalizes_across_levels() {
        // Trained at one level, asked at ten times that: the features are ratios.
        let forest = SpikeForest::train(&daily_spike(8, 0.03), &SpikeConfig::default()).unwrap();
        let mut scaled = daily_spike(9, 0.03);
        scaled.values.iter_mut().for_each(|v| *v *= 10.0);
        assert!(forest.probability(&scaled.head(at(8, 8, 50) + 1)).unwrap() > 0.7);
        assert!(forest.probability(&scaled.head(at(8, 14, 0) + 1)).unwrap() < 0.3);
    }

    #[test]
    fn is_reproducible_from_the_seed() {
        let h = daily_spike(8, 0.03);
        let config = SpikeConfig::default();
        let a = SpikeForest::train(&h, &config).unwrap();
        let b = SpikeForest::train(&h, &config).unwrap();
        for i in [at(7, 8, 40), at(7, 8, 50), at(7, 12, 0)] {
            let q = h.head(i + 1);
            assert_eq!(a.probability(&q).unwrap(), b.probability(&q).unwrap());
        }
    }

    #[test]
    fn leaves_with_tied_classes_vote_the_same_way_every_time() {
        // Noise gives small leaves holding as much weight of either class; linfa breaks such ties in HashMap
        // order, which differs between maps, so without TIE_BREAK these forests disagree.
        let h = random_walk(12 * STEPS_PER_DAY, 7);
        let train = h.head(10 * STEPS_PER_DAY);
        let config = SpikeConfig {
            max_depth: 8,
            ..SpikeConfig::default()
        };
        let answers = |forest: &SpikeForest| -> Vec<f64> {
            (10 * STEPS_PER_DAY..h.values.len())
                .step_by(3)
                .map(|i| forest.probability(&h.head(i + 1)).unwrap())
                .collect()
        };
        let first = answers(&SpikeForest::train(&train, &config).unwrap());
        for _ in 0..5 {
            assert_eq!(
                answers(&SpikeForest::train(&train, &config).unwrap()),
                first
            );
        }
    }

    #[test]
    fn a_single_class_answers_its_base_rate() {
        // Flat demand never rises 15%: every label is "no".
        let flat = History::new(0, STEP_MILLIS, vec![100.0; 4 * STEPS_PER_DAY]);
        let forest = SpikeForest::train(&flat, &SpikeConfig::default()).unwrap();
        assert_eq!((forest.tree_count(), forest.base_rate()), (0, 0.0));
        assert_eq!(forest.probability(&flat).unwrap(), 0.0);
    }

    #[test]
    fn all_rising_history_gives_one() {
        // Demand growing 6% a step rises 19% within 3 steps, always: every label is "yes" (1.06^600 is about
        // 1.5e15, far from overflowing).
        let rising: Vec<f64> = (0..2 * STEPS_PER_DAY + 20)
            .map(|i| 1.06f64.powi(i as i32))
            .collect();
        let rising = History::new(0, STEP_MILLIS, rising);
        let forest = SpikeForest::train(&rising, &SpikeConfig::default()).unwrap();
        assert_eq!((forest.tree_count(), forest.base_rate()), (0, 1.0));
        assert_eq!(forest.probability(&rising).unwrap(), 1.0);
    }

    #[test]
    fn too_short_histories_are_refused() {
        let h = daily_spike(1, 0.03);
        assert!(matches!(
            SpikeForest::train(&h, &SpikeConfig::default()),
            Err(ForecastError::TooShort { .. })
        ));
        // Long enough, but mostly gaps.
        let mut gappy = daily_spike(5, 0.03);
        gappy
            .values
            .iter_mut()
            .step_by(2)
            .for_each(|v| *v = f64::NAN);
        assert!(matches!(
            SpikeForest::train(&gappy, &SpikeConfig::default()),
            Err(ForecastError::TooShort { .. })
        ));
        // A trained forest still needs a day of history to ask about.
        let forest = SpikeForest::train(&daily_spike(4, 0.03), &SpikeConfig::default()).unwrap();
        assert!(matches!(
            forest.probability(&daily_spike(4, 0.03).tail(100)),
            Err(ForecastError::TooShort { .. })
        ));
        assert!(matches!(
            forest.probability(&History::new(0, STEP_MILLIS, Vec::new())),
            Err(ForecastError::TooShort { .. })
        ));
    }

    #[test]
    fn invalid_settings_are_a_model_error() {
        let h = daily_spike(3, 0.03);
        for config in [
            SpikeConfig {
                horizon_steps: 0,
                ..SpikeConfig::default()
            },
            SpikeConfig {
                horizon_steps: STEPS_PER_DAY,
                ..SpikeConfig::default()
            },
            SpikeConfig {
                trees: 0,
                ..SpikeConfig::default()
            },
            SpikeConfig {
                rise_margin: f64::NAN,
                ..SpikeConfig::default()
            },
        ] {
            assert!(matches!(
                SpikeForest::train(&h, &config),
                Err(ForecastError::Model { .. })
            ));
        }
    }

    /// A multiplicative random walk: whether it rises 15% within the horizon is independent of everything
    /// before, so there is nothing to learn.
    fn random_walk(steps: usize, seed: u64) -> History {
        let mut rng = SplitMix64(seed);
        let mut log = 0.0f64;
        let values = (0..steps)
            .map(|_| {
                log += 0.12 * ((rng.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0);
                100.0 * log.exp()
            })
            .collect();
        History::new(0, STEP_MILLIS, values)
    }

    #[test]
    fn pure_noise_is_not_answered_with_confidence() {
        let h = random_walk(12 * STEPS_PER_DAY, 7);
        let train_len = 10 * STEPS_PER_DAY;
        let forest = SpikeForest::train(&h.head(train_len), &SpikeConfig::default()).unwrap();
        let base = forest.base_rate();
        assert!(base > 0.05 && base < 0.5, "base rate {base}");
        let probs: Vec<f64> = (train_len..h.values.len())
            .step_by(7)
            .map(|i| forest.probability(&h.head(i + 1)).unwrap())
            .collect();
        let mean = probs.iter().sum::<f64>() / probs.len() as f64;
        let confident = probs.iter().filter(|p| **p >= 0.8).count();
        // Hard votes lean to the majority class, so the mean sits at or somewhat below the base rate.
        assert!((mean - base).abs() < 0.2, "mean {mean} vs base rate {base}");
        assert!(
            confident * 10 < probs.len(),
            "{confident} of {} confident",
            probs.len()
        );
    }

    #[test]
    fn never_panics_on_gaps_zeros_and_infinities() {
        let mut h = daily_spike(5, 0.03);
        // Zeros in the lags and the level window, gaps around the end, an infinity in the middle.
        for i in (0..h.values.len()).step_by(37) {
            h.values[i] = 0.0;
        }
        for i in (5..h.values.len()).step_by(53) {
            h.values[i] = f64::NAN;
        }
        h.values[700] = f64::INFINITY;
        let forest = SpikeForest::train(&h, &SpikeConfig::default()).unwrap();
        for end in [STEPS_PER_DAY + 1, 2 * STEPS_PER_DAY, h.values.len()] {
            let p = forest.probability(&h.head(end)).unwrap();
            assert!((0.0..=1.0).contains(&p));
        }
        // All zero, all missing at the end, all missing.
        let zeros = History::new(0, STEP_MILLIS, vec![0.0; 3 * STEPS_PER_DAY]);
        let p = forest.probability(&zeros).unwrap();
        assert!((0.0..=1.0).contains(&p));
        assert!(SpikeForest::train(&zeros, &SpikeConfig::default()).is_ok());
        let mut trailing = daily_spike(3, 0.03);
        let n = trailing.values.len();
        trailing.values[n - 20..].fill(f64::NAN);
        assert!((0.0..=1.0).contains(&forest.probability(&trailing).unwrap()));
        let missing = History::new(0, STEP_MILLIS, vec![f64::NAN; 3 * STEPS_PER_DAY]);
        assert!(forest.probability(&missing).is_err());
        assert!(SpikeForest::train(&missing, &SpikeConfig::default()).is_err());
    }
}
