//! Validation and adaptive trust: every forecast is kept until its horizon passes, then scored against what
//! happened (absolute percentage error, error against the seasonal-naive forecast of the same point, and whether
//! a forecast spike came). A deployment's trust in its forecasts closes while recent accuracy is poor or too many
//! forecast spikes did not come, and reopens, with a margin, when they recover.

use std::collections::VecDeque;

use serde::Serialize;

use super::super::model::UnixMillis;
use super::STEPS_PER_DAY;

/// When a deployment's forecasts are trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct TrustConfig {
    /// Trust closes while accuracy (1 - MAPE) over the recent scored forecasts is below this.
    pub min_accuracy: f64,
    /// Trust closes while the share of forecast spikes that did not come is above this.
    pub max_false_positive_rate: f64,
    /// Scored forecasts considered. 0 keeps no window: only lifetime figures, and trust never opens (for
    /// scorecards that only report).
    pub window: usize,
    /// Scored forecasts needed before trust can open: an unproven forecast has no say.
    pub min_scored: usize,
    /// Margin by which a closed gate's figures must beat the thresholds to reopen, so trust does not flap.
    pub hysteresis: f64,
    /// A spike is demand above the demand at the time of the forecast x (1 + rise_margin).
    pub rise_margin: f64,
}

impl Default for TrustConfig {
    fn default() -> Self {
        TrustConfig {
            min_accuracy: 0.6,
            max_false_positive_rate: 0.4,
            window: 288,
            min_scored: 12,
            hysteresis: 0.05,
            rise_margin: 0.15,
        }
    }
}

/// A forecast waiting for its horizon to pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pending {
    /// When it was made.
    pub made_at: UnixMillis,
    /// When the value it forecasts is known (made_at + horizon).
    pub due_at: UnixMillis,
    /// Demand when it was made.
    pub current: f64,
    /// Forecast demand.
    pub predicted: f64,
    /// The seasonal-naive forecast of the same value (what the same time a season ago did).
    pub naive: f64,
    /// Whether the forecast was confident enough to act on. A rise it predicts counts as a predicted spike
    /// (and so can be a false positive) only then: a rise the ensemble itself vetoed moved nothing, and
    /// counting it closed trust just before the rises it had timed right (one early, vetoed rise per day on a
    /// square wave read as 100% false positives over a half-day window).
    pub usable: bool,
    /// Whether trust was open when it was made as well: a rise it predicts could move the served value. Forecasts
    /// made while trust is closed are still scored (that is how trust recovers), but counted apart from these.
    pub trusted: bool,
}

/// A forecast checked against what happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// The forecast.
    pub forecast: Pending,
    /// What happened.
    pub actual: f64,
}

impl Scored {
    fn predicted_spike(&self, margin: f64) -> bool {
        self.forecast.usable && self.forecast.predicted > self.forecast.current * (1.0 + margin)
    }
    fn acted_spike(&self, margin: f64) -> bool {
        self.forecast.trusted && self.predicted_spike(margin)
    }
    fn actual_spike(&self, margin: f64) -> bool {
        self.actual > self.forecast.current * (1.0 + margin)
    }
}

/// What the trust window keeps of one scored forecast: only its contribution to the figures, in 16 bytes
/// (a whole [`Scored`] is 64). A server keeps 16 scorecards per deployment (4 streams, lead window and 3 point
/// horizons), each with a window of up to `--forecast-trust-window` of these.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mark {
    /// Absolute percentage error; NaN when the actual value is zero (no percentage).
    ape: f32,
    /// Absolute error.
    err: f32,
    /// The seasonal-naive forecast's absolute error.
    naive_err: f32,
    /// Bit 0: a spike was predicted; bit 1: a spike came; bit 2: it was predicted while trust was open.
    spikes: u8,
}

impl Mark {
    fn of(s: &Scored, margin: f64) -> Mark {
        let e = (s.forecast.predicted - s.actual).abs();
        Mark {
            ape: if s.actual > f64::EPSILON {
                (e / s.actual) as f32
            } else {
                f32::NAN
            },
            err: e as f32,
            naive_err: (s.forecast.naive - s.actual).abs() as f32,
            spikes: u8::from(s.predicted_spike(margin))
                | u8::from(s.actual_spike(margin)) << 1
                | u8::from(s.acted_spike(margin)) << 2,
        }
    }
}

/// Figures over the recent scored forecasts.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Scores {
    /// Scored forecasts the figures are over.
    pub scored: usize,
    /// Forecasts still waiting for their horizon.
    pub pending: usize,
    /// Mean absolute percentage error (over actual values above zero), 0-1+.
    pub mape: Option<f64>,
    /// Mean absolute scaled error: the forecasts' mean absolute error over the seasonal-naive forecasts' on the
    /// same points; below 1 beats seasonal-naive.
    pub mase: Option<f64>,
    /// 1 - MAPE, floored at 0.
    pub accuracy: Option<f64>,
    /// Spikes forecast (confident rises), the denominator of `false_positive_rate`.
    pub forecast_spikes: usize,
    /// Forecast spikes that did not come, over forecast spikes.
    pub false_positive_rate: Option<f64>,
    /// Spikes forecast while trust was open, the denominator of `trusted_false_positive_rate`.
    pub trusted_forecast_spikes: usize,
    /// The same over the forecast spikes made while trust was open: a rise forecast then raises the served value
    /// as it comes within the lead time, so these are the false alarms that could cost pods.
    pub trusted_false_positive_rate: Option<f64>,
    /// Spikes that came without a forecast, over spikes that came.
    pub false_negative_rate: Option<f64>,
    /// Whether the forecasts may move the served value.
    pub trusted: bool,
}

/// One stream of forecasts (one model, or the ensemble, at one horizon) and its trust.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorecard {
    config: TrustConfig,
    pending: VecDeque<Pending>,
    scored: VecDeque<Mark>,
    trusted: bool,
    /// Times trust changed.
    transitions: u32,
    /// Every forecast scored so far, for whole-run reports (the window above only holds the recent ones).
    lifetime: Totals,
}

/// Running sums over every scored forecast.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Totals {
    scored: usize,
    ape: f64,
    n_ape: usize,
    err: f64,
    naive_err: f64,
    predicted_spikes: usize,
    false_pos: usize,
    acted_spikes: usize,
    acted_false_pos: usize,
    actual_spikes: usize,
    false_neg: usize,
}

impl Totals {
    fn add(&mut self, m: &Mark) {
        self.scored += 1;
        if !m.ape.is_nan() {
            self.ape += f64::from(m.ape);
            self.n_ape += 1;
        }
        self.err += f64::from(m.err);
        self.naive_err += f64::from(m.naive_err);
        let (p, a, acted) = (m.spikes & 1 != 0, m.spikes & 2 != 0, m.spikes & 4 != 0);
        self.predicted_spikes += usize::from(p);
        self.false_pos += usize::from(p && !a);
        self.acted_spikes += usize::from(acted);
        self.acted_false_pos += usize::from(acted && !a);
        self.actual_spikes += usize::from(a);
        self.false_neg += usize::from(a && !p);
    }

    fn scores(&self, pending: usize, trusted: bool) -> Scores {
        let mape = (self.n_ape > 0).then(|| self.ape / self.n_ape as f64);
        let ratio = |num: usize, den: usize| (den > 0).then(|| num as f64 / den as f64);
        Scores {
            scored: self.scored,
            pending,
            mape,
            mase: if self.naive_err > f64::EPSILON {
                Some(self.err / self.naive_err)
            } else if self.scored > 0 && self.err <= f64::EPSILON {
                Some(1.0)
            } else {
                None
            },
            accuracy: mape.map(|m| (1.0 - m).max(0.0)),
            forecast_spikes: self.predicted_spikes,
            false_positive_rate: ratio(self.false_pos, self.predicted_spikes),
            trusted_forecast_spikes: self.acted_spikes,
            trusted_false_positive_rate: ratio(self.acted_false_pos, self.acted_spikes),
            false_negative_rate: ratio(self.false_neg, self.actual_spikes),
            trusted,
        }
    }
}

impl Scorecard {
    /// An empty scorecard: nothing scored, not trusted.
    pub fn new(config: TrustConfig) -> Scorecard {
        Scorecard {
            config,
            pending: VecDeque::new(),
            scored: VecDeque::new(),
            trusted: false,
            transitions: 0,
            lifetime: Totals::default(),
        }
    }

    /// Keeps a forecast until it can be scored. Forecasts must be recorded in `due_at` order per scorecard.
    pub fn record(&mut self, forecast: Pending) {
        if !(forecast.predicted.is_finite() && forecast.current.is_finite()) {
            return;
        }
        // A forecast made again at the same time (after a refit) replaces the earlier one: one vote per time.
        match self.pending.back_mut() {
            Some(last) if last.made_at == forecast.made_at => *last = forecast,
            _ => self.pending.push_back(forecast),
        }
        // A scorecard nobody scores must not grow without bound.
        while self.pending.len() > 4 * self.config.window.max(STEPS_PER_DAY) {
            self.pending.pop_front();
        }
    }

    /// Scores every pending forecast due at or before `now` with `actual(forecast)` (what happened to the
    /// quantity it forecast); forecasts whose actual is unknown (a gap in the data) are dropped unscored. Updates
    /// trust.
    pub fn score_due(&mut self, now: UnixMillis, actual: impl Fn(&Pending) -> Option<f64>) {
        while self.pending.front().is_some_and(|p| p.due_at <= now) {
            let Some(p) = self.pending.pop_front() else {
                break;
            };
            if let Some(a) = actual(&p).filter(|a| a.is_finite()) {
                let mark = Mark::of(
                    &Scored {
                        forecast: p,
                        actual: a,
                    },
                    self.config.rise_margin,
                );
                self.lifetime.add(&mark);
                let window = self.config.window;
                if window == 0 {
                    continue;
                }
                if self.scored.capacity() == 0 {
                    // Exactly the window, once: growth by doubling would leave up to half of it unused.
                    self.scored.reserve_exact(window);
                }
                if self.scored.len() >= window {
                    self.scored.pop_front();
                }
                self.scored.push_back(mark);
            }
        }
        self.update_trust();
    }

    fn update_trust(&mut self) {
        let s = self.figures();
        let was = self.trusted;
        let margin = if was { 0.0 } else { self.config.hysteresis };
        // Accuracy is a percentage error, undefined while every recent actual was zero (a deployment idle
        // overnight). No figure is no evidence either way: the gate holds where it was, and forecast rises that do
        // not come still count as false positives. Closing it instead shut trust each idle night, just before
        // the morning rise it was there for.
        self.trusted = s.scored >= self.config.min_scored
            && s.accuracy
                .map_or(was, |a| a >= self.config.min_accuracy + margin)
            && s.false_positive_rate
                .is_none_or(|fp| fp <= self.config.max_false_positive_rate - margin);
        if was != self.trusted {
            self.transitions += 1;
        }
    }

    fn figures(&self) -> Scores {
        let mut window = Totals::default();
        for mark in &self.scored {
            window.add(mark);
        }
        window.scores(self.pending.len(), self.trusted)
    }

    /// Figures over every forecast scored so far (not just the recent window trust looks at).
    pub fn lifetime_scores(&self) -> Scores {
        self.lifetime.scores(self.pending.len(), self.trusted)
    }

    /// The current figures and trust.
    pub fn scores(&self) -> Scores {
        self.figures()
    }

    /// Whether the forecasts may move the served value.
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// How many times trust opened or closed.
    pub fn transitions(&self) -> u32 {
        self.transitions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(t: i64, current: f64, predicted: f64, naive: f64) -> Pending {
        Pending {
            made_at: t,
            due_at: t + 10,
            current,
            predicted,
            naive,
            usable: true,
            trusted: true,
        }
    }

    /// Records and scores forecasts one time unit apart, each due 10 units after it is made.
    struct Feeder(i64);

    impl Feeder {
        /// `n` forecasts of `predicted` made at demand `current` (also their naive value), each scored as `actual`.
        fn feed(
            &mut self,
            card: &mut Scorecard,
            current: f64,
            predicted: f64,
            actual: f64,
            n: usize,
        ) {
            for _ in 0..n {
                card.record(pending(self.0, current, predicted, current));
                card.score_due(self.0 + 10, |_| Some(actual));
                self.0 += 1;
            }
        }
    }

    #[test]
    fn scores_mape_mase_and_spike_rates() {
        let mut card = Scorecard::new(TrustConfig {
            min_scored: 1,
            ..Default::default()
        });
        // Predicted a spike to 200 that came as 180; predicted a spike that did not come (100); missed one.
        card.record(pending(0, 100.0, 200.0, 100.0));
        card.record(pending(1, 100.0, 200.0, 100.0));
        card.record(pending(2, 100.0, 100.0, 100.0));
        let actual = |p: &Pending| Some([180.0, 100.0, 150.0][(p.due_at - 10) as usize]);
        card.score_due(12, actual);
        let s = card.scores();
        assert_eq!(s.scored, 3);
        let mape = (20.0 / 180.0 + 1.0 + 50.0 / 150.0) / 3.0;
        assert!((s.mape.unwrap() - mape).abs() < 1e-6);
        assert!((s.mase.unwrap() - (20.0 + 100.0 + 50.0) / (80.0 + 0.0 + 50.0)).abs() < 1e-6);
        assert_eq!(s.false_positive_rate, Some(0.5));
        assert_eq!(s.false_negative_rate, Some(0.5));
    }

    #[test]
    fn only_usable_rises_are_spike_claims_and_a_remade_forecast_replaces_the_first() {
        let mut card = Scorecard::new(TrustConfig {
            min_scored: 1,
            ..Default::default()
        });
        // A rise the ensemble vetoed (not usable) that did not come: no false positive, and no claim at all.
        card.record(Pending {
            usable: false,
            ..pending(0, 100.0, 200.0, 100.0)
        });
        // Made twice at t = 1 (before and after a refit): only the second, usable and right, counts.
        card.record(pending(1, 100.0, 100.0, 100.0));
        card.record(pending(1, 100.0, 190.0, 100.0));
        card.score_due(11, |p| Some(if p.made_at == 0 { 100.0 } else { 180.0 }));
        let s = card.scores();
        assert_eq!(s.scored, 2);
        assert_eq!(s.false_positive_rate, Some(0.0));
        assert_eq!(s.false_negative_rate, Some(0.0));
    }

    #[test]
    fn rises_forecast_while_trust_was_closed_are_counted_apart() {
        let mut card = Scorecard::new(TrustConfig {
            min_scored: 1,
            ..Default::default()
        });
        // Three false rises while closed, one right and one false while open.
        for t in 0..3 {
            card.record(Pending {
                trusted: false,
                ..pending(t, 100.0, 200.0, 100.0)
            });
        }
        card.record(pending(3, 100.0, 200.0, 100.0));
        card.record(pending(4, 100.0, 200.0, 100.0));
        card.score_due(20, |p| Some(if p.made_at == 3 { 190.0 } else { 100.0 }));
        let s = card.scores();
        assert_eq!(s.false_positive_rate, Some(0.8));
        assert_eq!(s.trusted_false_positive_rate, Some(0.5));
        assert_eq!((s.forecast_spikes, s.trusted_forecast_spikes), (5, 2));
        assert_eq!(
            card.lifetime_scores().trusted_false_positive_rate,
            Some(0.5)
        );
    }

    #[test]
    fn waits_for_the_horizon_and_drops_unknown_actuals() {
        let mut card = Scorecard::new(TrustConfig::default());
        card.record(pending(0, 1.0, 1.0, 1.0));
        card.record(pending(5, 1.0, 1.0, 1.0));
        card.score_due(9, |_| Some(1.0));
        assert_eq!((card.scores().scored, card.scores().pending), (0, 2));
        card.score_due(10, |_| None);
        assert_eq!((card.scores().scored, card.scores().pending), (0, 1));
        card.score_due(15, |_| Some(1.0));
        assert_eq!((card.scores().scored, card.scores().pending), (1, 0));
    }

    #[test]
    fn trust_opens_closes_on_false_spikes_and_reopens_with_margin() {
        let config = TrustConfig {
            window: 20,
            min_scored: 5,
            ..Default::default()
        };
        let mut card = Scorecard::new(config);
        let mut clock = Feeder(0);
        let mut feed = |card: &mut Scorecard, predicted: f64, actual: f64, n: usize| {
            clock.feed(card, 100.0, predicted, actual, n);
        };
        feed(&mut card, 100.0, 100.0, 4);
        assert!(!card.trusted(), "unproven");
        feed(&mut card, 100.0, 100.0, 1);
        assert!(card.trusted());
        // Forecast spikes that never come: false positives pile up and trust closes.
        feed(&mut card, 160.0, 100.0, 12);
        assert!(!card.trusted());
        let closed = card.transitions();
        // Good forecasts again: trust reopens once the window has recovered past the margin.
        feed(&mut card, 100.0, 100.0, 20);
        assert!(card.trusted());
        assert_eq!(card.transitions(), closed + 1);
    }

    #[test]
    fn an_idle_stretch_holds_trust_where_it_was() {
        let config = TrustConfig {
            window: 10,
            min_scored: 3,
            ..Default::default()
        };
        let mut clock = Feeder(0);
        let mut feed =
            |card: &mut Scorecard, current: f64, predicted: f64, actual: f64, n: usize| {
                clock.feed(card, current, predicted, actual, n);
            };
        // Trusted by day; then a night at zero, forecast right: accuracy has no figure, trust stays open.
        let mut card = Scorecard::new(config.clone());
        feed(&mut card, 100.0, 100.0, 100.0, 5);
        assert!(card.trusted());
        feed(&mut card, 0.0, 0.0, 0.0, 30);
        assert_eq!(card.scores().accuracy, None);
        assert!(card.trusted(), "closed on no evidence");
        // A rise forecast at night that does not come is still a false positive, and closes it.
        feed(&mut card, 0.0, 50.0, 0.0, 10);
        assert!(!card.trusted());
        // Nor does a night open a gate that was closed.
        let mut closed = Scorecard::new(config);
        feed(&mut closed, 0.0, 0.0, 0.0, 30);
        assert!(!closed.trusted());
    }

    #[test]
    fn poor_accuracy_closes_trust() {
        let mut card = Scorecard::new(TrustConfig {
            min_scored: 3,
            ..Default::default()
        });
        for t in 0..10 {
            card.record(pending(t, 100.0, 100.0, 100.0));
            card.score_due(t + 10, |_| Some(if t < 2 { 100.0 } else { 400.0 }));
        }
        let s = card.scores();
        assert!(s.accuracy.unwrap() < 0.6 && !s.trusted);
    }
}
