//! A circuit breaker as a pure state machine: the caller passes the time in, so every transition is
//! unit-tested without sleeping.
//!
//! Closed: calls go out; `failure_threshold` consecutive failures open the circuit. Open: calls are refused
//! until the cool-down has passed. Half-open: one trial call goes out; its success closes the circuit, its
//! failure opens it again for another cool-down. A trial that never reports back (its future was dropped) is
//! given up after one cool-down, and the next caller becomes the trial.

use crate::domain::model::UnixMillis;

/// Settings of a [`CircuitBreaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit (at least 1).
    pub failure_threshold: u32,
    /// How long the circuit stays open before a trial call, milliseconds.
    pub cooldown_millis: i64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            cooldown_millis: 60_000,
        }
    }
}

impl BreakerConfig {
    /// The breaker for a collection `interval`: the cool-down is one interval (1 s to 60 s), so an open circuit
    /// lets one trial call out per tick instead of every query's retries, and a fresh value follows within two
    /// intervals of Prometheus answering again (the fault suite's bound; a fixed 60 s cool-down kept serving
    /// stale values, then 503s, for up to a minute after a 1 s-interval Prometheus came back).
    pub fn for_interval(interval: std::time::Duration) -> Self {
        let millis = interval.as_millis().clamp(1_000, 60_000);
        BreakerConfig {
            cooldown_millis: i64::try_from(millis).unwrap_or(60_000),
            ..BreakerConfig::default()
        }
    }
}

/// Where the breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go out; counts failures in a row.
    Closed {
        /// Failures since the last success.
        consecutive_failures: u32,
    },
    /// Calls are refused until `until`.
    Open {
        /// End of the cool-down.
        until: UnixMillis,
    },
    /// One trial call is out since `trial_since`; others are refused.
    HalfOpen {
        /// When the trial call was let through.
        trial_since: UnixMillis,
    },
}

/// A refused call: the circuit is open (or a half-open trial is out) until `retry_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Earliest time a call may be let through again.
    pub retry_at: UnixMillis,
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        CircuitBreaker {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                cooldown_millis: config.cooldown_millis.max(0),
            },
            state: BreakerState::Closed {
                consecutive_failures: 0,
            },
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go out at `now`. Moves Open to HalfOpen once the cool-down has passed.
    pub fn acquire(&mut self, now: UnixMillis) -> Result<(), Refused> {
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen { trial_since: now };
                Ok(())
            }
            BreakerState::Open { until } => Err(Refused { retry_at: until }),
            BreakerState::HalfOpen { trial_since } => {
                let lost_after = trial_since.saturating_add(self.config.cooldown_millis);
                if now >= lost_after {
                    // The trial never reported back; let this caller be the trial.
                    self.state = BreakerState::HalfOpen { trial_since: now };
                    Ok(())
                } else {
                    Err(Refused {
                        retry_at: lost_after,
                    })
                }
            }
        }
    }

    /// A call succeeded: the circuit closes.
    pub fn record_success(&mut self) {
        self.state = BreakerState::Closed {
            consecutive_failures: 0,
        };
    }

    /// A call failed at `now`. Returns true when this failure opened the circuit.
    pub fn record_failure(&mut self, now: UnixMillis) -> bool {
        let open = BreakerState::Open {
            until: now.saturating_add(self.config.cooldown_millis),
        };
        match self.state {
            BreakerState::Closed {
                consecutive_failures,
            } => {
                let failures = consecutive_failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    self.state = open;
                    true
                } else {
                    self.state = BreakerState::Closed {
                        consecutive_failures: failures,
                    };
                    false
                }
            }
            BreakerState::HalfOpen { .. } => {
                self.state = open;
                true
            }
            // A call that started before the circuit opened: it is already open.
            BreakerState::Open { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(BreakerConfig {
            failure_threshold: 3,
            cooldown_millis: 10_000,
        })
    }

    #[test]
    fn the_cool_down_is_one_collection_interval_within_1s_to_60s() {
        let cooldown = |secs| {
            BreakerConfig::for_interval(std::time::Duration::from_secs(secs)).cooldown_millis
        };
        assert_eq!(cooldown(15), 15_000);
        assert_eq!(cooldown(0), 1_000);
        assert_eq!(cooldown(300), 60_000);
        assert_eq!(
            BreakerConfig::for_interval(std::time::Duration::from_secs(15)).failure_threshold,
            3
        );
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let mut b = breaker();
        for t in [0, 1, 2] {
            assert_eq!(b.acquire(t), Ok(()));
            assert_eq!(b.record_failure(t), t == 2);
        }
        assert_eq!(b.state(), BreakerState::Open { until: 10_002 });
        assert_eq!(b.acquire(5_000), Err(Refused { retry_at: 10_002 }));
        assert_eq!(b.acquire(10_001), Err(Refused { retry_at: 10_002 }));
    }

    #[test]
    fn a_success_resets_the_count() {
        let mut b = breaker();
        b.record_failure(0);
        b.record_failure(1);
        b.record_success();
        b.record_failure(2);
        b.record_failure(3);
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 2
            }
        );
        assert_eq!(b.acquire(4), Ok(()));
    }

    #[test]
    fn half_open_lets_one_trial_through_and_closes_on_success() {
        let mut b = breaker();
        for t in 0..3 {
            b.record_failure(t);
        }
        assert_eq!(b.acquire(10_002), Ok(()));
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen {
                trial_since: 10_002
            }
        );
        // A second caller while the trial is out is refused.
        assert_eq!(b.acquire(10_003), Err(Refused { retry_at: 20_002 }));
        b.record_success();
        assert_eq!(
            b.state(),
            BreakerState::Closed {
                consecutive_failures: 0
            }
        );
        assert_eq!(b.acquire(10_004), Ok(()));
    }

    #[test]
    fn half_open_failure_reopens_for_a_full_cooldown() {
        let mut b = breaker();
        for t in 0..3 {
            b.record_failure(t);
        }
        assert_eq!(b.acquire(20_000), Ok(()));
        assert!(b.record_failure(20_500));
        assert_eq!(b.state(), BreakerState::Open { until: 30_500 });
        assert!(b.acquire(30_499).is_err());
        assert_eq!(b.acquire(30_500), Ok(()));
    }

    #[test]
    fn a_lost_trial_is_replaced_after_a_cooldown() {
        let mut b = breaker();
        for t in 0..3 {
            b.record_failure(t);
        }
        assert_eq!(b.acquire(10_002), Ok(()));
        // The trial's future was dropped: nothing is recorded.
        assert!(b.acquire(20_001).is_err());
        assert_eq!(b.acquire(20_002), Ok(()));
    }

    #[test]
    fn late_failures_while_open_do_not_extend_the_cooldown() {
        let mut b = breaker();
        for t in 0..3 {
            b.record_failure(t);
        }
        assert!(!b.record_failure(9_000));
        assert_eq!(b.state(), BreakerState::Open { until: 10_002 });
    }

    #[test]
    fn threshold_zero_is_treated_as_one() {
        let mut b = CircuitBreaker::new(BreakerConfig {
            failure_threshold: 0,
            cooldown_millis: 5,
        });
        assert!(b.record_failure(0));
        assert!(b.acquire(4).is_err());
        assert!(b.acquire(5).is_ok());
    }
}
