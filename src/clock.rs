//! The injected clock. Production uses the system clock; `demo` runs simulated time faster than real time;
//! tests can pin time. Everything that needs "now" asks a [`Clock`], never the system directly.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::domain::model::UnixMillis;

/// A source of the current time.
pub trait Clock: Send + Sync + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_millis(&self) -> UnixMillis;

    /// How long to sleep in real time for `span` of this clock's time to pass.
    fn real_duration(&self, span: Duration) -> Duration {
        span
    }
}

/// The system wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> UnixMillis {
        system_millis()
    }
}

fn system_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A clock that starts at the real time and runs `speed` times faster.
#[derive(Debug, Clone)]
pub struct ScaledClock {
    started: Instant,
    origin: UnixMillis,
    speed: f64,
}

impl ScaledClock {
    /// Starts a clock at the current wall time running `speed` times faster than real time.
    pub fn starting_now(speed: f64) -> Self {
        Self::starting_at(system_millis(), speed)
    }

    /// Starts a clock at `origin` running `speed` times faster than real time.
    pub fn starting_at(origin: UnixMillis, speed: f64) -> Self {
        ScaledClock {
            started: Instant::now(),
            origin,
            speed,
        }
    }
}

impl Clock for ScaledClock {
    fn now_millis(&self) -> UnixMillis {
        self.origin + (self.started.elapsed().as_secs_f64() * 1000.0 * self.speed) as i64
    }

    fn real_duration(&self, span: Duration) -> Duration {
        span.div_f64(self.speed)
    }
}

/// Formats Unix milliseconds as an RFC 3339 UTC timestamp with seconds precision, as `metav1.Time` does.
pub fn rfc3339(millis: UnixMillis) -> String {
    let seconds = millis.div_euclid(1000);
    jiff::Timestamp::from_second(seconds)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_740_830_405_999), "2025-03-01T12:00:05Z");
    }

    #[test]
    fn scaled_clock_runs_faster() {
        let c = ScaledClock::starting_now(100.0);
        assert_eq!(
            c.real_duration(Duration::from_secs(100)),
            Duration::from_secs(1)
        );
        let a = c.now_millis();
        std::thread::sleep(Duration::from_millis(20));
        assert!(c.now_millis() - a >= 2_000);
    }
}
