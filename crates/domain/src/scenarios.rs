//! Built-in backtest scenarios: synthetic load series with known shapes, each with the cluster conditions
//! (pod request, warm-up, node-pool pressure) that make it interesting. Deterministic for a given seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::backtest::{Series, SimConfig};

/// Where every scenario starts: Monday 1970-01-05 00:00 UTC. Day 0 of a scenario is a Monday, so the days
/// `weekend_low_traffic` is quiet on are the calendar's Saturday and Sunday, which the forecasters' weekday and
/// weekend patterns are keyed on. (Starting at the epoch, a Thursday, put its quiet days on Tuesday and
/// Wednesday.)
pub const START_MILLIS: i64 = 4 * 86_400_000;

/// Names of the built-in scenarios.
pub const NAMES: [&str; 10] = [
    "normal_load",
    "high_load_spike",
    "gradual_load_increase",
    "memory_constrained",
    "over_provisioned",
    "daily_peak_pattern",
    "weekend_low_traffic",
    "flash_sale_event",
    "jvm_startup",
    "tiny_requests",
];

const MINUTE: i64 = 60_000;

fn daily(minute: usize, peak_hour: f64) -> f64 {
    let h = (minute % 1440) as f64 / 60.0;
    (std::f64::consts::TAU * (h - peak_hour) / 24.0).cos()
}

fn noise(rng: &mut StdRng, amplitude: f64) -> f64 {
    1.0 + (rng.random::<f64>() - 0.5) * 2.0 * amplitude
}

/// Builds a scenario's series and configuration, or `None` for an unknown name.
pub fn build(name: &str, seed: u64) -> Option<(Series, SimConfig)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let minutes = |days: f64| (days * 1440.0) as usize;
    let values: Vec<f64> = match name {
        "normal_load" | "memory_constrained" | "over_provisioned" | "jvm_startup" => {
            (0..minutes(2.0))
                .map(|m| (50.0 + 20.0 * daily(m, 15.0)) * noise(&mut rng, 0.05))
                .collect()
        }
        "high_load_spike" => (0..minutes(1.0))
            .map(|m| {
                let spike = if (600..630).contains(&m) { 3.0 } else { 1.0 };
                40.0 * spike * noise(&mut rng, 0.05)
            })
            .collect(),
        "gradual_load_increase" => (0..minutes(1.0))
            .map(|m| (20.0 + 80.0 * (m as f64 / 360.0).min(1.0)) * noise(&mut rng, 0.05))
            .collect(),
        "daily_peak_pattern" => (0..minutes(7.0))
            .map(|m| {
                let h = (m % 1440) as f64 / 60.0;
                let peak = |c: f64, w: f64| (-((h - c) / w).powi(2)).exp();
                (25.0 + 60.0 * peak(9.5, 1.0) + 40.0 * peak(14.0, 1.5)) * noise(&mut rng, 0.05)
            })
            .collect(),
        "weekend_low_traffic" => (0..minutes(14.0))
            .map(|m| {
                let weekend = (m / 1440) % 7 >= 5;
                let level = if weekend { 15.0 } else { 50.0 };
                (level + 0.4 * level * daily(m, 14.0)) * noise(&mut rng, 0.05)
            })
            .collect(),
        "flash_sale_event" => (0..minutes(1.0))
            .map(|m| {
                let sale = match m {
                    720..=724 => 1.0 + 4.0 * (m - 719) as f64 / 5.0,
                    725..=784 => 5.0,
                    _ => 1.0,
                };
                30.0 * sale * noise(&mut rng, 0.05)
            })
            .collect(),
        "tiny_requests" => (0..minutes(1.0))
            .map(|m| (20.0 + 5.0 * daily(m, 15.0)) * noise(&mut rng, 0.05))
            .collect(),
        _ => return None,
    };
    let series = Series {
        step_millis: MINUTE,
        values,
    };
    let mut config = SimConfig::for_series(&series);
    config.start_millis = START_MILLIS;
    config.min_replicas = 2;
    match name {
        "memory_constrained" => {
            // Nodes near full by requests: pods that scale late cannot even be placed quickly.
            config.pool_requested_percent = 95.0;
            config.pool_measured_percent = 85.0;
        }
        "over_provisioned" => {
            config.pool_requested_percent = 30.0;
            config.pool_measured_percent = 20.0;
        }
        "jvm_startup" => {
            config.startup_seconds = 20.0;
            config.warmup_load = config.pod_capacity * 1.5;
            config.warmup_seconds = 150.0;
            config.startup_filter_seconds = 180.0;
        }
        "tiny_requests" => {
            // 25m requests: a few millicores of accounting jitter swing each pod's utilization by ±40%.
            config.pod_request_milli = 25;
            config.measurement_noise = 0.4;
        }
        _ => {}
    }
    Some((series, config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backtest::{Mode, run};

    #[test]
    fn every_scenario_builds() {
        for name in NAMES {
            let (series, config) = build(name, 1).unwrap();
            assert!(series.values.len() >= 1440, "{name}");
            assert!(
                series.values.iter().all(|v| v.is_finite() && *v >= 0.0),
                "{name}"
            );
            assert!(config.pod_capacity > 0.0);
        }
        assert!(build("nope", 1).is_none());
    }

    #[test]
    fn weekend_low_traffic_is_quiet_on_the_calendars_weekend() {
        use crate::forecast::Calendar;
        let (series, _) = build("weekend_low_traffic", 1).unwrap();
        let day_mean =
            |d: usize| series.values[d * 1440..(d + 1) * 1440].iter().sum::<f64>() / 1440.0;
        for d in 0..14 {
            let weekend = Calendar::of(START_MILLIS + d as i64 * 86_400_000, 0).is_weekend();
            assert_eq!(day_mean(d) < 25.0, weekend, "day {d}: mean {}", day_mean(d));
        }
        assert_eq!(Calendar::of(START_MILLIS, 0).day_of_week, 0, "a Monday");
    }

    #[test]
    fn jvm_startup_has_no_false_scale_up_with_smart() {
        let (series, config) = build("jvm_startup", 1).unwrap();
        let plain = run(&series, &config, Mode::Plain);
        let smart = run(&series, &config, Mode::Smart);
        let oracle = run(&series, &config, Mode::Oracle);
        // The warm-up burst makes the plain HPA add pods the load does not need.
        assert!(
            plain.metrics.max_replicas > oracle.metrics.max_replicas,
            "{:?} {:?}",
            plain.metrics,
            oracle.metrics
        );
        assert!(
            smart.metrics.max_replicas <= oracle.metrics.max_replicas + 1,
            "{:?} {:?}",
            smart.metrics,
            oracle.metrics
        );
    }

    #[test]
    fn tiny_requests_scale_half_as_often_and_cost_less() {
        // The aim: scale events at least halved. Each 25m pod's jitter is a 40% swing; the fast-rise
        // margin widens to match (cluster::fast_rise_margin) and the policy target rises to 88%.
        let (series, config) = build("tiny_requests", 1).unwrap();
        let plain = run(&series, &config, Mode::Plain);
        let smart = run(&series, &config, Mode::Smart);
        assert!(
            smart.metrics.scale_events * 2 <= plain.metrics.scale_events
                && smart.metrics.pod_hours < plain.metrics.pod_hours
                && smart.metrics.saturated_pod_minutes <= plain.metrics.saturated_pod_minutes,
            "{:?} {:?}",
            plain.metrics,
            smart.metrics
        );
    }
}
