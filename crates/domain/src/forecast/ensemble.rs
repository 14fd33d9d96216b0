//! The ensemble: fits the members (seasonal profile, MSTL + ETS, the seasonal-naive baseline, and the spike
//! forest), combines the value forecasts by weights learned from each member's recent validated error, and
//! rates the result: confidence is the profile's (how much consistent history there is), cut when a forecast
//! rise is not backed by the spike forest.

use std::collections::BTreeMap;

use serde::Serialize;

use super::mstl;
use super::profile::{ProfileConfig, SeasonalProfile};
use super::spike::{SpikeConfig, SpikeForest};
use super::{ForecastError, History, PointForecast, STEPS_PER_DAY, STEPS_PER_WEEK};
use crate::model::UnixMillis;

/// Rises the spike forest must have seen before its vote can cut a forecast's confidence. A rise labels the
/// rows up to a horizon before it, so the forest needs this many horizons' worth of spike rows (12 at the
/// default 15 minutes).
pub const MIN_RISES_SEEN: usize = 4;

/// A value-forecasting member of the ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Hour-of-day x day-of-week profile, level-corrected.
    Profile,
    /// MSTL (daily and weekly periods) with ETS on the rest, from augurs.
    Mstl,
    /// What the same time a week (or a day) ago did: the baseline every model must beat.
    SeasonalNaive,
}

impl Model {
    /// Every member.
    pub const ALL: [Model; 3] = [Model::Profile, Model::Mstl, Model::SeasonalNaive];

    /// Name in metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Model::Profile => "profile",
            Model::Mstl => "mstl",
            Model::SeasonalNaive => "seasonal_naive",
        }
    }
}

/// Settings of the ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleConfig {
    /// Steps of the lead window the forecast covers (horizon / step, rounded up).
    pub horizon_steps: usize,
    /// A rise is the lead-window forecast above the current demand x (1 + rise_margin).
    pub rise_margin: f64,
    /// Whether MSTL is fitted (benchmarks compare with and without it).
    pub mstl: bool,
    /// Profile settings.
    pub profile: ProfileConfig,
    /// Spike-forest settings (its horizon follows `horizon_steps`).
    pub spike: SpikeConfig,
}

impl Default for EnsembleConfig {
    fn default() -> Self {
        EnsembleConfig {
            horizon_steps: 3,
            rise_margin: 0.15,
            mstl: true,
            profile: ProfileConfig::default(),
            spike: SpikeConfig::default(),
        }
    }
}

/// The seasonal-naive forecast of index `i` of `filled` (which may be past its end): the value one season
/// earlier, a week when the history holds a week before `i`, else a day, else the last value.
pub fn seasonal_naive(filled: &[f64], i: usize) -> Option<f64> {
    let n = filled.len();
    [STEPS_PER_WEEK, STEPS_PER_DAY]
        .into_iter()
        .map(|season| {
            // Step back whole seasons until inside the history.
            let mut j = i.checked_sub(season)?;
            while j >= n {
                j = j.checked_sub(season)?;
            }
            Some(filled[j])
        })
        .find_map(|v| v)
        .or_else(|| filled.last().copied())
}

/// Models fitted on a history; cheap to forecast from as newer points arrive, until the next refit.
#[derive(Debug, Clone)]
pub struct Fitted {
    end: UnixMillis,
    step_millis: i64,
    profile: Result<SeasonalProfile, ForecastError>,
    mstl: Result<PointForecast, ForecastError>,
    spike: Result<SpikeForest, ForecastError>,
}

impl Fitted {
    /// Fits every member on `history`. MSTL forecasts `cover_steps` beyond the lead window, so forecasts made
    /// until the next refit can read their steps from this fit.
    pub fn fit(history: &History, config: &EnsembleConfig, cover_steps: usize) -> Fitted {
        let spike_config = SpikeConfig {
            horizon_steps: config.horizon_steps.max(1),
            rise_margin: config.rise_margin,
            utc_offset_minutes: config.profile.utc_offset_minutes,
            ..config.spike.clone()
        };
        Fitted {
            end: history.end(),
            step_millis: history.step_millis,
            profile: SeasonalProfile::fit(history, &config.profile),
            mstl: if config.mstl {
                mstl::forecast(history, config.horizon_steps.max(1) + cover_steps)
            } else {
                Err(ForecastError::Unusable("MSTL disabled".into()))
            },
            spike: SpikeForest::train(history, &spike_config),
        }
    }

    /// End of the history the members were fitted on.
    pub fn end(&self) -> UnixMillis {
        self.end
    }

    /// The profile, when fitted.
    pub fn profile(&self) -> Option<&SeasonalProfile> {
        self.profile.as_ref().ok()
    }

    /// Forecasts `steps` steps after the end of `history` (the fitted history, possibly with newer points):
    /// each member's values, the combination by `weights`, the spike probability and the confidence.
    pub fn forecast(
        &self,
        history: &History,
        steps: usize,
        weights: &Weights,
        config: &EnsembleConfig,
    ) -> EnsembleForecast {
        let steps = steps.max(1);
        let filled = history.filled();
        let current = history.values.iter().rev().find(|v| v.is_finite()).copied();
        let mut members = Vec::new();
        for model in Model::ALL {
            let values: Result<Vec<f64>, String> = match model {
                Model::Profile => self
                    .profile
                    .as_ref()
                    .map(|p| p.forecast(history, steps).values)
                    .map_err(ToString::to_string),
                Model::Mstl => self
                    .mstl
                    .as_ref()
                    .map_err(ToString::to_string)
                    .and_then(|f| {
                        let offset = ((history.end() - self.end) / self.step_millis.max(1)).max(0);
                        let offset = offset as usize;
                        if f.values.len() >= offset + steps {
                            Ok(f.values[offset..offset + steps].to_vec())
                        } else {
                            Err("fit too old: refit pending".to_string())
                        }
                    }),
                Model::SeasonalNaive => {
                    if filled.is_empty() {
                        Err("no history".to_string())
                    } else {
                        Ok((0..steps)
                            .filter_map(|k| seasonal_naive(&filled, filled.len() + k))
                            .collect())
                    }
                }
            };
            members.push(MemberForecast {
                model,
                values: values.as_ref().ok().cloned(),
                weight: 0.0,
                unavailable: values.err(),
            });
        }
        let available: Vec<Model> = members
            .iter()
            .filter(|m| m.values.as_ref().is_some_and(|v| v.len() == steps))
            .map(|m| m.model)
            .collect();
        let w = weights.normalized(&available);
        for m in &mut members {
            m.weight = w.get(&m.model).copied().unwrap_or(0.0);
        }
        let values: Vec<f64> = (0..steps)
            .map(|k| {
                members
                    .iter()
                    .filter(|m| m.weight > 0.0)
                    .filter_map(|m| m.values.as_ref().map(|v| v[k] * m.weight))
                    .sum::<f64>()
                    .max(0.0)
            })
            .collect();
        let horizon = config.horizon_steps.max(1).min(steps);
        let lead_max = values.iter().take(horizon).copied().reduce(f64::max);
        let spike_probability = self
            .spike
            .as_ref()
            .ok()
            .and_then(|f| f.probability(history).ok());
        // A forest that has seen almost no rises has nothing to say about one: its "no" is the base rate of a
        // series that has not yet done what is forecast (a Monday after the first weekend), not evidence.
        let forest_knows_rises = self
            .spike
            .as_ref()
            .is_ok_and(|f| f.spike_rows() >= MIN_RISES_SEEN * config.horizon_steps.max(1));
        let pattern = self.profile().map_or(0.0, SeasonalProfile::confidence);
        let rise = match (lead_max, current) {
            (Some(f), Some(c)) => f > c * (1.0 + config.rise_margin),
            _ => false,
        };
        // A rise the forest does not back (vote share under one half) loses confidence in proportion.
        let backing = match (rise, spike_probability) {
            (true, Some(p)) if forest_knows_rises => (p / 0.5).min(1.0),
            _ => 1.0,
        };
        let unavailable = if members
            .iter()
            .all(|m| m.model == Model::SeasonalNaive || m.values.is_none())
        {
            Some(
                members
                    .iter()
                    .filter_map(|m| {
                        m.unavailable
                            .as_ref()
                            .map(|e| format!("{}: {e}", m.model.name()))
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        } else {
            None
        };
        EnsembleForecast {
            made_at: history.end(),
            step_millis: history.step_millis,
            current,
            values,
            lead_max,
            spike_probability,
            pattern_confidence: pattern,
            confidence: if unavailable.is_some() {
                0.0
            } else {
                (pattern * backing).clamp(0.0, 1.0)
            },
            members,
            unavailable,
        }
    }
}

/// Each member's recent validated error (MASE at the lead window); members not yet scored get the mean weight
/// of those that are, or an equal share when none is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Weights {
    /// Recent MASE per member.
    pub mase: BTreeMap<Model, f64>,
}

impl Weights {
    /// Weights summing to 1 over `available`: inverse squared MASE (floored at 0.05 so one lucky stretch cannot
    /// take everything, capped at 10).
    pub fn normalized(&self, available: &[Model]) -> BTreeMap<Model, f64> {
        let raw: BTreeMap<Model, Option<f64>> = available
            .iter()
            .map(|m| {
                let w = self
                    .mase
                    .get(m)
                    .filter(|e| e.is_finite())
                    .map(|e| 1.0 / e.clamp(0.05, 10.0).powi(2));
                (*m, w)
            })
            .collect();
        let known: Vec<f64> = raw.values().filter_map(|w| *w).collect();
        let fallback = if known.is_empty() {
            1.0
        } else {
            known.iter().sum::<f64>() / known.len() as f64
        };
        let total: f64 = raw.values().map(|w| w.unwrap_or(fallback)).sum();
        raw.into_iter()
            .map(|(m, w)| (m, w.unwrap_or(fallback) / total))
            .collect()
    }
}

/// One member's part in a forecast.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberForecast {
    /// Which member.
    pub model: Model,
    /// Its values per step, when it has a forecast.
    #[serde(skip)]
    pub values: Option<Vec<f64>>,
    /// Its weight in the combination.
    pub weight: f64,
    /// Why it has no forecast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// The ensemble's forecast after the end of a history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnsembleForecast {
    /// End of the history it was made from: `values[0]` covers the bucket starting here.
    pub made_at: UnixMillis,
    /// Bucket width.
    pub step_millis: i64,
    /// Demand in the last observed bucket.
    pub current: Option<f64>,
    /// Combined forecast per step.
    #[serde(skip)]
    pub values: Vec<f64>,
    /// Largest combined value over the lead window.
    pub lead_max: Option<f64>,
    /// Vote share of the spike forest for a rise within the lead window.
    pub spike_probability: Option<f64>,
    /// The profile's confidence (amount and consistency of history).
    pub pattern_confidence: f64,
    /// Confidence in the forecast, 0-1.
    pub confidence: f64,
    /// Members and weights.
    pub members: Vec<MemberForecast>,
    /// Why there is no forecast worth the name (only the naive baseline could answer).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

impl EnsembleForecast {
    /// Values of one member.
    pub fn member(&self, model: Model) -> Option<&[f64]> {
        self.members
            .iter()
            .find(|m| m.model == model)
            .and_then(|m| m.values.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_prefers_a_week_then_a_day_then_the_last_value() {
        let week: Vec<f64> = (0..STEPS_PER_WEEK + 10).map(|i| i as f64).collect();
        assert_eq!(seasonal_naive(&week, week.len()), Some(10.0));
        let day: Vec<f64> = (0..STEPS_PER_DAY + 10).map(|i| i as f64).collect();
        assert_eq!(seasonal_naive(&day, day.len() + 2), Some(12.0));
        assert_eq!(seasonal_naive(&[4.0, 5.0], 7), Some(5.0));
        assert_eq!(seasonal_naive(&[], 3), None);
    }

    #[test]
    fn weights_favour_the_smaller_validated_error() {
        let w = Weights {
            mase: BTreeMap::from([(Model::Profile, 0.5), (Model::SeasonalNaive, 1.0)]),
        };
        let n = w.normalized(&[Model::Profile, Model::Mstl, Model::SeasonalNaive]);
        assert!((n.values().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(n[&Model::Profile] > n[&Model::Mstl]);
        assert!(n[&Model::Mstl] > n[&Model::SeasonalNaive]);
        let equal = Weights::default().normalized(&[Model::Profile, Model::Mstl]);
        assert_eq!(equal[&Model::Profile], 0.5);
    }

    #[test]
    fn a_forest_that_never_saw_a_rise_does_not_veto_the_first_monday() {
        use super::super::STEP_MILLIS;
        // Monday 1970-01-05 to Sunday 23:50: weekdays at 100, the weekend at 30. The only change the series
        // ever made is Friday's drop, so the forest has no rise to learn from; the profile knows Monday.
        let monday = 4 * 86_400_000;
        let values: Vec<f64> = (0..STEPS_PER_WEEK - 2)
            .map(|i| {
                let level = if i / STEPS_PER_DAY >= 5 { 30.0 } else { 100.0 };
                level * (1.0 + 0.01 * ((i * 37 % 11) as f64 - 5.0) / 5.0)
            })
            .collect();
        let h = History::new(monday, STEP_MILLIS, values);
        let config = EnsembleConfig {
            mstl: false,
            ..Default::default()
        };
        let fitted = Fitted::fit(&h, &config, 12);
        assert_eq!(fitted.spike.as_ref().unwrap().spike_rows(), 0);
        let f = fitted.forecast(&h, 3, &Weights::default(), &config);
        let (lead, current) = (f.lead_max.unwrap(), f.current.unwrap());
        assert!(
            lead > 2.0 * current,
            "Monday's rise forecast: {lead} from {current}"
        );
        assert_eq!(f.spike_probability, Some(0.0));
        assert!(f.confidence > 0.0, "{f:?}");
        assert_eq!(
            f.confidence,
            f.pattern_confidence.clamp(0.0, 1.0),
            "not cut"
        );
    }

    #[test]
    fn too_little_history_has_no_forecast_and_says_why() {
        let h = History::new(0, super::super::STEP_MILLIS, vec![10.0; 50]);
        let config = EnsembleConfig::default();
        let fitted = Fitted::fit(&h, &config, 12);
        let f = fitted.forecast(&h, 3, &Weights::default(), &config);
        assert_eq!(f.confidence, 0.0);
        let why = f.unavailable.unwrap();
        assert!(why.contains("profile: not enough history"), "{why}");
    }
}
