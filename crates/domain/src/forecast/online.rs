//! Online forecasting for one deployment, shared by the server and `simulate --predict`: completed demand
//! buckets are pushed in time order; every push scores the forecasts whose horizon has passed, and a forecast is
//! made from the new end with the members fitted at the last refit. Refits are separate calls so the caller
//! decides when and on which thread (the server budgets them; the replay refits on a fixed cadence). Nothing
//! ever looks past the last pushed bucket.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ensemble::{self, EnsembleConfig, EnsembleForecast, Fitted, Model, Weights};
use super::validate::{Pending, Scorecard, Scores, TrustConfig};
use super::{History, STEP_MILLIS, STEPS_PER_DAY, STEPS_PER_WEEK};
use crate::model::UnixMillis;

/// A stream of forecasts that is scored: one member's, or the ensemble's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stream {
    /// A member of the ensemble.
    Member(Model),
    /// The combination.
    Ensemble,
}

impl Stream {
    /// Every stream.
    pub const ALL: [Stream; 4] = [
        Stream::Member(Model::Profile),
        Stream::Member(Model::Mstl),
        Stream::Member(Model::SeasonalNaive),
        Stream::Ensemble,
    ];

    /// Name in metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Stream::Member(m) => m.name(),
            Stream::Ensemble => "ensemble",
        }
    }
}

/// Settings of a deployment's forecaster.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecasterConfig {
    /// The ensemble (its `horizon_steps` is the lead window forecasts are scored over).
    pub ensemble: EnsembleConfig,
    /// The trust gate, applied to the ensemble's lead-window forecasts.
    pub trust: TrustConfig,
    /// Least ensemble confidence for the forecast to move the served value.
    pub min_confidence: f64,
    /// Lead time, ms: from a decision to the pods it asks for serving (metric refresh, HPA sync, pod startup).
    /// The served value is raised to the largest forecast over `[now, now + lead]`: capacity for later buckets
    /// is asked for when they come within the lead time, not the moment the horizon first sees them, which on a
    /// noisy series held pods for the highest bucket of the next 15 minutes.
    pub lead_millis: i64,
    /// Buckets between refits.
    pub refit_every_steps: usize,
    /// Buckets kept in memory (the replay fits on these; the server refits from its store and keeps only what
    /// the seasonal-naive baseline and the spike features look back on).
    pub max_history_steps: usize,
    /// Extra horizons (steps) at which every stream's point forecasts are scored, for reports.
    pub score_horizons: Vec<usize>,
}

impl Default for ForecasterConfig {
    fn default() -> Self {
        ForecasterConfig {
            ensemble: EnsembleConfig::default(),
            trust: TrustConfig::default(),
            min_confidence: 0.75,
            lead_millis: DEFAULT_LEAD_MILLIS,
            refit_every_steps: 12,
            max_history_steps: 30 * STEPS_PER_DAY,
            score_horizons: Vec::new(),
        }
    }
}

/// Default lead time: a 15 s metric refresh, a 15 s HPA sync and a minute of pod startup.
pub const DEFAULT_LEAD_MILLIS: i64 = 90_000;

impl ForecasterConfig {
    /// Buckets the server keeps in memory between refits: a week and a day, for the weekly baseline and lags.
    pub const SERVER_HISTORY_STEPS: usize = STEPS_PER_WEEK + STEPS_PER_DAY;
}

/// What the forecast says for the served value now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// Largest forecast demand over the horizon (utilization x ready pods, percent).
    pub lead_max_demand: Option<f64>,
    /// Forecast demand per bucket over the horizon (and as far as the lead time can reach before the next
    /// forecast), the first covering the bucket from `made_at`.
    pub demand_by_step: Vec<f64>,
    /// Bucket width of `demand_by_step`.
    pub step_millis: i64,
    /// Lead time the served value looks ahead by ([`Advice::demand_ahead`]).
    pub lead_millis: i64,
    /// Demand in the last bucket.
    pub current_demand: Option<f64>,
    /// Ensemble confidence.
    pub confidence: f64,
    /// Spike-forest vote share.
    pub spike_probability: Option<f64>,
    /// Whether the trust gate is open.
    pub trusted: bool,
    /// Whether the forecast may move the served value (confident and trusted).
    pub usable: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the forecast was made (end of the history it saw).
    pub made_at: Option<UnixMillis>,
}

impl Advice {
    /// Largest forecast demand over the buckets that overlap `[now, now + lead]`: what the pods asked for now
    /// will meet when they serve. `None` when the forecast does not reach `now` (it is too old).
    pub fn demand_ahead(&self, now: UnixMillis) -> Option<f64> {
        let made_at = self.made_at?;
        let step = self.step_millis.max(1);
        let first = usize::try_from((now - made_at).max(0) / step).ok()?;
        let last =
            usize::try_from((now.saturating_add(self.lead_millis.max(0)) - made_at).max(0) / step)
                .ok()?;
        self.demand_by_step
            .iter()
            .take(last.saturating_add(1))
            .skip(first)
            .copied()
            .filter(|v| v.is_finite())
            .reduce(f64::max)
    }
}

/// A member's standing in the ensemble.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemberStanding {
    /// Which member.
    pub model: &'static str,
    /// Its weight in the latest forecast.
    pub weight: f64,
    /// Its recent MASE at the lead window.
    pub mase: Option<f64>,
    /// Why it had no forecast, if it had none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
}

/// What the server publishes about one deployment's forecasts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Published {
    /// What the forecast says for the served value.
    pub advice: Advice,
    /// The ensemble's recent scores at the lead window (the ones trust is judged on).
    pub scores: Scores,
    /// The members.
    pub members: Vec<MemberStanding>,
    /// Refits so far.
    pub refits: u64,
    /// Buckets of history in memory.
    pub history_buckets: usize,
}

/// The latest forecasts of every deployment, as the server's forecasting task publishes them.
pub type Board = std::collections::HashMap<crate::model::DeploymentKey, Published>;

/// The forecaster's own history: [`History`] with `f32` values, half the memory of the 8 days a server keeps per
/// deployment (demand has nothing to say beyond `f32`'s 7 significant digits). Converted to a [`History`] for
/// each fit and forecast.
#[derive(Debug, Clone)]
struct Series {
    start: UnixMillis,
    step_millis: i64,
    values: Vec<f32>,
}

impl Series {
    fn end(&self) -> UnixMillis {
        self.start + self.values.len() as i64 * self.step_millis
    }

    fn observed(&self) -> usize {
        self.values.iter().filter(|v| v.is_finite()).count()
    }

    fn to_history(&self) -> History {
        History::new(
            self.start,
            self.step_millis,
            self.values.iter().map(|v| f64::from(*v)).collect(),
        )
    }
}

/// One deployment's online forecaster.
#[derive(Debug, Clone)]
pub struct Forecaster {
    config: ForecasterConfig,
    history: Series,
    fitted: Option<Fitted>,
    pushed_since_fit: usize,
    lead: BTreeMap<Stream, Scorecard>,
    points: BTreeMap<(Stream, usize), Scorecard>,
    latest: Option<EnsembleForecast>,
    refits: u64,
}

impl Forecaster {
    /// A forecaster with no history.
    pub fn new(config: ForecasterConfig) -> Forecaster {
        let lead = Stream::ALL
            .into_iter()
            .map(|s| (s, Scorecard::new(config.trust.clone())))
            .collect();
        let points = Stream::ALL
            .into_iter()
            .flat_map(|s| config.score_horizons.iter().map(move |h| (s, *h)))
            // Point forecasts are only reported, over their lifetime: no trust window to keep (it would be
            // 12 of a forecaster's 16 windows).
            .map(|k| {
                let trust = TrustConfig {
                    window: 0,
                    ..config.trust.clone()
                };
                (k, Scorecard::new(trust))
            })
            .collect();
        Forecaster {
            history: Series {
                start: 0,
                step_millis: STEP_MILLIS,
                values: Vec::new(),
            },
            config,
            fitted: None,
            pushed_since_fit: 0,
            lead,
            points,
            latest: None,
            refits: 0,
        }
    }

    /// Settings.
    pub fn config(&self) -> &ForecasterConfig {
        &self.config
    }

    /// The in-memory history (a copy).
    pub fn history(&self) -> History {
        self.history.to_history()
    }

    /// Buckets of the in-memory history with a value.
    pub fn observed(&self) -> usize {
        self.history.observed()
    }

    /// End of the pushed history (start of the next bucket to push), if any was pushed.
    pub fn end(&self) -> Option<UnixMillis> {
        (!self.history.values.is_empty()).then(|| self.history.end())
    }

    /// Appends the completed bucket starting at `bucket_start` (buckets at or before the end are ignored;
    /// skipped buckets become gaps), scores what became due, and forecasts from the new end.
    pub fn push(&mut self, bucket_start: UnixMillis, demand: f64) {
        let step = self.history.step_millis;
        let bucket_start = bucket_start.div_euclid(step) * step;
        if self.history.values.is_empty() {
            self.history.start = bucket_start;
        } else if bucket_start < self.history.end() {
            return;
        }
        let max = self.config.max_history_steps.max(STEPS_PER_DAY);
        if self.history.values.capacity() < max + STEPS_PER_DAY + 1 {
            // Room for the most the trim below lets the history hold, once, exactly: growth by doubling left
            // up to a third of a server forecaster's history buffer unused (8 days held in 4096 slots).
            let len = self.history.values.len();
            self.history
                .values
                .reserve_exact(max + STEPS_PER_DAY + 1 - len);
        }
        while self.history.end() < bucket_start {
            self.history.values.push(f32::NAN);
        }
        self.history.values.push(if demand.is_finite() {
            demand.max(0.0) as f32
        } else {
            f32::NAN
        });
        self.pushed_since_fit += 1;
        // Trim in chunks of a day so trimming costs nothing per push.
        if self.history.values.len() > max + STEPS_PER_DAY {
            let drop = self.history.values.len() - max;
            self.history.values.drain(..drop);
            self.history.start += drop as i64 * step;
        }
        self.score();
        self.forecast();
    }

    /// Whether a refit is due (never fitted, or `refit_every_steps` buckets pushed since).
    pub fn needs_refit(&self) -> bool {
        self.fitted.is_none() || self.pushed_since_fit >= self.config.refit_every_steps.max(1)
    }

    /// Starts on existing history (a restart, or a deployment with bootstrapped history): fits on all but the
    /// last `holdout` buckets, then replays those as if live, so trust is judged from the start on genuine
    /// out-of-sample forecasts instead of staying closed until new forecasts come due. A refit is due afterwards.
    pub fn warm_up(&mut self, history: &History, holdout: usize) {
        let n = history.values.len();
        let cut = n.saturating_sub(holdout);
        for i in 0..cut {
            self.push(history.time_of(i), history.values[i]);
        }
        let head = history.head(cut);
        if head.observed() >= STEPS_PER_DAY {
            self.fitted = Some(Fitted::fit(
                &head,
                &self.config.ensemble,
                holdout + self.forecast_steps(),
            ));
            self.refits += 1;
        }
        for i in cut..n {
            self.push(history.time_of(i), history.values[i]);
        }
        self.pushed_since_fit = self.config.refit_every_steps.max(holdout);
    }

    /// Refits the members on the in-memory history.
    pub fn refit(&mut self) {
        let history = self.history.to_history();
        self.refit_on(&history);
    }

    /// Refits the members on `history` (a longer history from the store; it should end where the in-memory one
    /// does), then forecasts again.
    pub fn refit_on(&mut self, history: &History) {
        self.fitted = Some(Fitted::fit(
            history,
            &self.config.ensemble,
            self.config.refit_every_steps.max(1) + self.forecast_steps(),
        ));
        self.pushed_since_fit = 0;
        self.refits += 1;
        self.forecast();
    }

    /// Refits so far.
    pub fn refits(&self) -> u64 {
        self.refits
    }

    fn max_score_horizon(&self) -> usize {
        self.config
            .score_horizons
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
    }

    /// Buckets a forecast must cover for [`Advice::demand_ahead`] until the next one replaces it: the lead time,
    /// from as late as the end of the bucket after the one it was made at (the next forecast is made once that
    /// bucket closes, and the server's forecasting rounds add up to a minute), so the lead plus two buckets.
    fn lead_steps(&self) -> usize {
        let step = self.history.step_millis.max(1);
        let lead = u64::try_from(self.config.lead_millis).unwrap_or(0);
        usize::try_from(lead.div_ceil(step as u64)).unwrap_or(0) + 2
    }

    /// Steps each forecast covers: the horizon, the scored horizons and the lead time.
    fn forecast_steps(&self) -> usize {
        self.config
            .ensemble
            .horizon_steps
            .max(1)
            .max(self.max_score_horizon())
            .max(self.lead_steps())
    }

    fn value_at(&self, t: UnixMillis) -> Option<f64> {
        let i = (t - self.history.start).div_euclid(self.history.step_millis);
        usize::try_from(i)
            .ok()
            .and_then(|i| self.history.values.get(i))
            .map(|v| f64::from(*v))
            .filter(|v| v.is_finite())
    }

    /// Largest observed value over the buckets in `[from, to)`.
    fn max_between(&self, from: UnixMillis, to: UnixMillis) -> Option<f64> {
        let step = self.history.step_millis;
        (0..)
            .map(|k| from + k * step)
            .take_while(|t| *t < to)
            .filter_map(|t| self.value_at(t))
            .reduce(f64::max)
    }

    fn score(&mut self) {
        let now = self.history.end();
        let step = self.history.step_millis;
        let mut lead = std::mem::take(&mut self.lead);
        for card in lead.values_mut() {
            card.score_due(now, |p| self.max_between(p.made_at, p.due_at));
        }
        self.lead = lead;
        let mut points = std::mem::take(&mut self.points);
        for card in points.values_mut() {
            card.score_due(now, |p| self.value_at(p.due_at - step));
        }
        self.points = points;
    }

    fn weights(&self) -> Weights {
        Weights {
            mase: self
                .lead
                .iter()
                .filter_map(|(s, card)| match s {
                    Stream::Member(m) => card.scores().mase.map(|e| (*m, e)),
                    Stream::Ensemble => None,
                })
                .collect(),
        }
    }

    fn forecast(&mut self) {
        let Some(fitted) = &self.fitted else {
            return;
        };
        let horizon = self.config.ensemble.horizon_steps.max(1);
        let steps = self.forecast_steps();
        let history = self.history.to_history();
        let f = fitted.forecast(&history, steps, &self.weights(), &self.config.ensemble);
        let Some(current) = f.current else {
            self.latest = Some(f);
            return;
        };
        let filled = history.filled();
        let n = filled.len();
        let step = self.history.step_millis;
        let made_at = f.made_at;
        let trusted = self.trusted();
        let naive: Vec<f64> = (0..steps)
            .map(|k| ensemble::seasonal_naive(&filled, n + k).unwrap_or(current))
            .collect();
        let naive_lead = naive.iter().take(horizon).copied().fold(0.0, f64::max);
        for stream in Stream::ALL {
            let values = match stream {
                Stream::Member(m) => f.member(m),
                Stream::Ensemble => (f.values.len() == steps).then_some(f.values.as_slice()),
            };
            let Some(values) = values else { continue };
            let lead_max = values.iter().take(horizon).copied().fold(0.0, f64::max);
            if let Some(card) = self.lead.get_mut(&stream) {
                card.record(Pending {
                    made_at,
                    due_at: made_at + horizon as i64 * step,
                    current,
                    predicted: lead_max,
                    naive: naive_lead,
                    // Members are scored as forecasters; the ensemble as the one that acts.
                    usable: stream != Stream::Ensemble
                        || f.confidence >= self.config.min_confidence,
                    trusted: stream == Stream::Ensemble && trusted,
                });
            }
            for h in &self.config.score_horizons {
                if let (Some(card), Some(v)) =
                    (self.points.get_mut(&(stream, *h)), values.get(h - 1))
                {
                    card.record(Pending {
                        made_at,
                        due_at: made_at + *h as i64 * step,
                        current,
                        predicted: *v,
                        naive: naive[h - 1],
                        usable: true,
                        trusted: false,
                    });
                }
            }
        }
        self.latest = Some(f);
    }

    /// The latest forecast.
    pub fn latest(&self) -> Option<&EnsembleForecast> {
        self.latest.as_ref()
    }

    /// Whether the ensemble's forecasts are trusted.
    pub fn trusted(&self) -> bool {
        self.lead
            .get(&Stream::Ensemble)
            .is_some_and(Scorecard::trusted)
    }

    /// Scores of a stream at the lead window.
    pub fn lead_scores(&self, stream: Stream) -> Scores {
        self.lead
            .get(&stream)
            .map(Scorecard::scores)
            .unwrap_or_default()
    }

    /// Scores of a stream at the lead window over every forecast so far.
    pub fn lead_lifetime_scores(&self, stream: Stream) -> Scores {
        self.lead
            .get(&stream)
            .map(Scorecard::lifetime_scores)
            .unwrap_or_default()
    }

    /// Scores of a stream's point forecasts at `horizon` steps over every forecast so far.
    pub fn point_lifetime_scores(&self, stream: Stream, horizon: usize) -> Option<Scores> {
        self.points
            .get(&(stream, horizon))
            .map(Scorecard::lifetime_scores)
    }

    /// Times the trust gate opened or closed.
    pub fn trust_transitions(&self) -> u32 {
        self.lead
            .get(&Stream::Ensemble)
            .map_or(0, Scorecard::transitions)
    }

    /// Everything the server publishes about this deployment.
    pub fn published(&self) -> Published {
        let members = self.latest.as_ref().map_or_else(Vec::new, |f| {
            f.members
                .iter()
                .map(|m| MemberStanding {
                    model: m.model.name(),
                    weight: m.weight,
                    mase: self.lead_scores(Stream::Member(m.model)).mase,
                    unavailable: m.unavailable.clone(),
                })
                .collect()
        });
        Published {
            advice: self.advice(),
            scores: self.lead_scores(Stream::Ensemble),
            members,
            refits: self.refits,
            history_buckets: self.history.observed(),
        }
    }

    /// What the forecast says for the served value now.
    pub fn advice(&self) -> Advice {
        let trusted = self.trusted();
        let Some(f) = &self.latest else {
            return Advice {
                lead_max_demand: None,
                demand_by_step: Vec::new(),
                step_millis: self.history.step_millis,
                lead_millis: self.config.lead_millis,
                current_demand: None,
                confidence: 0.0,
                spike_probability: None,
                trusted,
                usable: false,
                reason: Some(if self.history.values.is_empty() {
                    "no history yet".into()
                } else {
                    "not fitted yet".into()
                }),
                made_at: None,
            };
        };
        let reason = if let Some(why) = &f.unavailable {
            Some(format!("no forecast: {why}"))
        } else if f.confidence < self.config.min_confidence {
            Some(format!(
                "confidence {:.2} below {:.2}",
                f.confidence, self.config.min_confidence
            ))
        } else if !trusted {
            let s = self.lead_scores(Stream::Ensemble);
            Some(format!(
                "trust closed: {} scored, accuracy {}, false positives {}",
                s.scored,
                s.accuracy
                    .map_or("n/a".into(), |a| format!("{:.0}%", a * 100.0)),
                s.false_positive_rate
                    .map_or("n/a".into(), |a| format!("{:.0}%", a * 100.0)),
            ))
        } else {
            None
        };
        Advice {
            lead_max_demand: f.lead_max,
            demand_by_step: f
                .values
                .iter()
                .take(self.config.ensemble.horizon_steps.max(self.lead_steps()))
                .copied()
                .collect(),
            step_millis: f.step_millis,
            lead_millis: self.config.lead_millis,
            current_demand: f.current,
            confidence: f.confidence,
            spike_probability: f.spike_probability,
            trusted,
            usable: reason.is_none() && f.lead_max.is_some(),
            reason,
            made_at: Some(f.made_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::profile::ProfileConfig;
    use super::*;
    use crate::testing::{DailySpike, jitter};

    fn config() -> ForecasterConfig {
        ForecasterConfig {
            ensemble: EnsembleConfig {
                mstl: false,
                ..Default::default()
            },
            score_horizons: vec![3, 6, 12],
            // Twice a day keeps the debug-build tests quick; the cadence does not change what is learned.
            refit_every_steps: STEPS_PER_DAY / 2,
            ..Default::default()
        }
    }

    /// The shared daily spike (base 100, 300 from 09:00 to 10:00) on days where `spike(day)`, base only on the
    /// others, deterministic ±5% noise.
    fn replay(f: &mut Forecaster, days: std::ops::Range<usize>, spike: impl Fn(usize) -> bool) {
        let load = DailySpike::default();
        for i in days.start * STEPS_PER_DAY..days.end * STEPS_PER_DAY {
            let at = i as i64 * STEP_MILLIS;
            let base = if spike(i / STEPS_PER_DAY) {
                load.at(at)
            } else {
                load.base
            };
            let v = base * (1.0 + 0.05 * jitter(i));
            f.push(at, v);
            if f.needs_refit() && f.observed() >= STEPS_PER_DAY {
                f.refit();
            }
        }
    }

    #[test]
    fn a_learned_daily_spike_is_forecast_ahead_and_trusted() {
        let mut f = Forecaster::new(config());
        replay(&mut f, 0..7, |_| true);
        // Day 7 up to 08:50: the lead window (3 steps) reaches 09:00.
        for i in 7 * STEPS_PER_DAY..7 * STEPS_PER_DAY + 106 {
            let v = 100.0;
            f.push(i as i64 * STEP_MILLIS, v);
        }
        let a = f.advice();
        assert!(a.usable, "{a:?}");
        assert!(a.lead_max_demand.unwrap() > 200.0, "{a:?}");
        assert!(a.spike_probability.unwrap() > 0.5, "{a:?}");
        // The served value asks for the pods when 09:00 comes within the lead time (90 s), not at 08:50.
        let at = |h: i64, m: i64, s: i64| (7 * 86_400 + h * 3600 + m * 60 + s) * 1000;
        assert!(a.demand_ahead(at(8, 50, 0)).unwrap() < 130.0, "{a:?}");
        assert!(a.demand_ahead(at(8, 58, 0)).unwrap() < 130.0, "{a:?}");
        assert!(a.demand_ahead(at(8, 58, 45)).unwrap() > 200.0, "{a:?}");
        // The ensemble beats seasonal-naive... or at least matches it on this easy series.
        let s = f.point_lifetime_scores(Stream::Ensemble, 3).unwrap();
        assert!(s.mase.unwrap() < 1.2, "{s:?}");
    }

    #[test]
    fn demand_ahead_covers_the_buckets_within_the_lead_time() {
        let a = Advice {
            lead_max_demand: Some(30.0),
            demand_by_step: vec![10.0, 20.0, 30.0],
            step_millis: 300_000,
            lead_millis: 90_000,
            current_demand: Some(10.0),
            confidence: 1.0,
            spike_probability: None,
            trusted: true,
            usable: true,
            reason: None,
            made_at: Some(1_000_000),
        };
        assert_eq!(a.demand_ahead(1_000_000), Some(10.0));
        assert_eq!(a.demand_ahead(1_000_000 + 209_999), Some(10.0));
        assert_eq!(a.demand_ahead(1_000_000 + 210_000), Some(20.0));
        assert_eq!(a.demand_ahead(1_000_000 + 600_000), Some(30.0));
        // Made in the future (clock skew): from its first bucket.
        assert_eq!(a.demand_ahead(0), Some(10.0));
        // Past the end of the forecast: nothing to say.
        assert_eq!(a.demand_ahead(1_000_000 + 900_000), None);
        assert_eq!(Advice { made_at: None, ..a }.demand_ahead(1_000_000), None);
    }

    #[test]
    fn forecasts_reach_as_far_as_the_lead_time_can_look_before_the_next() {
        // A 5-minute horizon is one bucket; a 90 s lead from the end of the next bucket reaches a third.
        let mut f = Forecaster::new(ForecasterConfig {
            ensemble: EnsembleConfig {
                horizon_steps: 1,
                mstl: false,
                ..Default::default()
            },
            ..config()
        });
        replay(&mut f, 0..2, |_| true);
        let a = f.advice();
        assert_eq!(a.demand_by_step.len(), 3, "{a:?}");
        let made_at = a.made_at.unwrap();
        assert!(a.demand_ahead(made_at + 300_000 + 60_000).is_some());
    }

    #[test]
    fn a_pattern_that_stops_loses_trust() {
        let mut f = Forecaster::new(config());
        replay(&mut f, 0..10, |_| true);
        assert!(f.trusted());
        let opened = f.trust_transitions();
        // The spike stops coming: forecast spikes that never arrive are false positives and close the gate.
        replay(&mut f, 10..12, |_| false);
        assert!(f.trust_transitions() > opened, "trust never closed");
        // From then on the forecast does not move the served value at 09:00.
        replay(&mut f, 12..13, |_| false);
        for i in 13 * STEPS_PER_DAY..13 * STEPS_PER_DAY + 106 {
            f.push(i as i64 * STEP_MILLIS, 100.0);
        }
        let a = f.advice();
        assert!(!a.usable || a.lead_max_demand.unwrap() < 130.0, "{a:?}");
    }

    #[test]
    fn unpredictable_load_is_never_usable() {
        let mut f = Forecaster::new(config());
        // Demand anywhere between 50 and 400 at every step, independent of the time of day.
        let mut usable = 0;
        for i in 0..10 * STEPS_PER_DAY {
            // splitmix64's finalizer: a bare multiplicative hash of consecutive steps nearly repeats a week later.
            let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            let r = (z ^ (z >> 31)) % 1000;
            f.push(i as i64 * STEP_MILLIS, 50.0 + r as f64 * 0.35);
            if f.needs_refit() && f.observed() >= STEPS_PER_DAY {
                f.refit();
            }
            usable += usize::from(f.advice().usable);
        }
        let a = f.advice();
        assert!(!a.usable && (a.confidence < 0.75 || !a.trusted), "{a:?}");
        assert_eq!(usable, 0, "the forecast moved the value {usable} times");
    }

    #[test]
    fn warm_up_scores_a_held_out_day_so_trust_opens_at_once() {
        let mut source = Forecaster::new(config());
        replay(&mut source, 0..8, |_| true);
        let history = source.history().clone();
        let mut f = Forecaster::new(config());
        f.warm_up(&history, STEPS_PER_DAY);
        assert_eq!(f.history().values.len(), history.values.len());
        assert!(f.lead_scores(Stream::Ensemble).scored >= STEPS_PER_DAY - 12);
        assert!(f.trusted(), "{:?}", f.lead_scores(Stream::Ensemble));
        assert!(f.needs_refit());
        assert_eq!(f.refits(), 1);
    }

    #[test]
    fn pushes_are_idempotent_and_gaps_become_nan() {
        let mut f = Forecaster::new(ForecasterConfig {
            ensemble: EnsembleConfig {
                mstl: false,
                profile: ProfileConfig::default(),
                ..Default::default()
            },
            ..Default::default()
        });
        f.push(0, 1.0);
        f.push(0, 5.0);
        f.push(3 * STEP_MILLIS, 2.0);
        assert_eq!(f.history().values.len(), 4);
        assert!(f.history().values[1].is_nan());
        assert_eq!(f.end(), Some(4 * STEP_MILLIS));
        assert!(!f.advice().usable);
        assert_eq!(f.advice().reason.as_deref(), Some("not fitted yet"));
    }
}
