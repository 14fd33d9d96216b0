//! Spike classifier from linfa-trees. PLACEHOLDER: being written; returns an error until then.

use super::{ForecastError, History};

/// Settings of the spike classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct SpikeConfig {
    /// Steps ahead the question looks.
    pub horizon_steps: usize,
    /// A spike is demand rising above the current value x (1 + rise_margin) within the horizon.
    pub rise_margin: f64,
    /// Trees in the bagged forest.
    pub trees: usize,
    /// Depth limit per tree.
    pub max_depth: usize,
    /// Most recent rows trained on at most.
    pub max_training_rows: usize,
    /// Seed of the bootstrap samples (fits are reproducible).
    pub seed: u64,
    /// Business time zone as an offset from UTC, minutes.
    pub utc_offset_minutes: i32,
}

impl Default for SpikeConfig {
    fn default() -> Self {
        SpikeConfig {
            horizon_steps: 3,
            rise_margin: 0.15,
            trees: 25,
            max_depth: 6,
            max_training_rows: 4_000,
            seed: 0x5EED,
            utc_offset_minutes: 0,
        }
    }
}

/// A trained forest.
#[derive(Debug, Clone)]
pub struct SpikeForest {
    base_rate: f64,
}

impl SpikeForest {
    /// Trains on `history`.
    pub fn train(history: &History, config: &SpikeConfig) -> Result<SpikeForest, ForecastError> {
        let _ = (history, config);
        Err(ForecastError::Model {
            model: "spike",
            message: "not written yet".into(),
        })
    }

    /// Probability of a spike within the horizon after the end of `history`.
    pub fn probability(&self, history: &History) -> Result<f64, ForecastError> {
        let _ = history;
        Ok(self.base_rate)
    }

    /// Share of spike labels in the training rows.
    pub fn base_rate(&self) -> f64 {
        self.base_rate
    }
}
