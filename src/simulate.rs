//! The `simulate` subcommand's adapter: reads a trace CSV or builds a scenario, runs the backtest from
//! `domain::backtest`, and prints a table, JSON, or an SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use serde_json::json;

use crate::config::SimulateArgs;
use crate::domain::backtest::{self, Run, Series, SimConfig};
use crate::domain::model::UnixMillis;
use crate::domain::scenarios;

/// Runs `work` with a progress bar on stderr that appears only when stderr is a terminal and the work has taken
/// more than two seconds (a `--predict` run over a month of data takes minutes); nothing is drawn otherwise, so
/// `--json` output and logs stay clean.
fn with_progress<T>(name: &str, work: impl FnOnce(&mut dyn FnMut(backtest::Mode, f64)) -> T) -> T {
    use std::io::IsTerminal;
    let started = std::time::Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(1000),
        indicatif::ProgressDrawTarget::hidden(),
    );
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {percent:>3}% {msg} (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("simulate {name}"));
    let mut shown = false;
    let result = work(&mut |mode, share| {
        if !shown && terminal && started.elapsed() > std::time::Duration::from_secs(2) {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            shown = true;
        }
        bar.set_message(format!("{mode:?} run").to_lowercase());
        bar.set_position((share * 1000.0) as u64);
    });
    bar.finish_and_clear();
    result
}

fn configure(args: &SimulateArgs, base: SimConfig) -> SimConfig {
    // Scenarios may set their own pool; a neutral pool follows the (possibly changed) pressure flags.
    let neutral = SimConfig::for_series(&Series {
        step_millis: 1,
        values: vec![],
    });
    let base_is_neutral = base.pool_measured_percent == neutral.pool_measured_percent
        && base.pool_requested_percent == neutral.pool_requested_percent;
    let mut config = base;
    if let Some(c) = args.pod_capacity {
        config.pod_capacity = c;
    }
    if let Some(s) = args.startup_seconds {
        config.startup_seconds = s;
    }
    if let Some(t) = args.target {
        config.target_percent = t;
    }
    if let Some(m) = args.min_replicas {
        config.min_replicas = m;
    }
    if let Some(m) = args.max_replicas {
        config.max_replicas = m;
    }
    if let Some(m) = args.pool_measured {
        config.pool_measured_percent = m;
    }
    if let Some(r) = args.pool_requested {
        config.pool_requested_percent = r;
    }
    if let Some(r) = args.pod_request_milli {
        config.pod_request_milli = r;
    }
    config.short_window_seconds = args.short_window.as_secs() as u32;
    config.decision = args.decision.to_config();
    if args.pool_measured.is_none() && args.pool_requested.is_none() && base_is_neutral {
        let (m, r) = config.decision.pressure.neutral_pool();
        config.pool_measured_percent = m;
        config.pool_requested_percent = r;
    }
    config
}

/// Runs `simulate` and returns what it prints.
pub fn run(args: &SimulateArgs) -> Result<String> {
    let (name, series, config, start) = match (&args.scenario, &args.trace) {
        (Some(name), None) => {
            let (series, config) = scenarios::build(name, args.seed).with_context(|| {
                format!(
                    "unknown scenario {name:?}; known: {}",
                    scenarios::NAMES.join(", ")
                )
            })?;
            let start = config.start_millis;
            (name.clone(), series, config, start)
        }
        (None, Some(path)) => {
            let trace = crate::trace::read(
                path,
                args.column.as_deref(),
                args.step.map(|d| d.as_secs_f64()),
            )?;
            let c = trace.cleaned;
            if c.total() > 0 {
                // On stderr, so `--json` output stays one document.
                eprintln!(
                    "simulate: {}: of {} rows, sorted {} out of time order (the first at line {}), left out {} \
                     NaN/infinite and {} with a repeated timestamp, read {} negative values as 0",
                    path.display(),
                    trace.rows,
                    c.out_of_order,
                    c.first_out_of_order_line
                        .map_or("-".to_string(), |l| l.to_string()),
                    c.not_finite,
                    c.duplicate_time,
                    c.negative
                );
            }
            let (series, start) = (trace.series, trace.start_millis);
            let config = SimConfig::for_series(&series);
            (path.display().to_string(), series, config, start)
        }
        _ => bail!("give exactly one of --trace FILE or --scenario NAME"),
    };
    let mut config = configure(args, config);
    config.start_millis = start;
    config.score_from_millis = args.warmup.as_millis() as i64;
    if config.score_from_millis >= series.duration_millis() {
        bail!(
            "--warmup {:?} covers the whole trace ({} s)",
            args.warmup,
            series.duration_millis() / 1000
        );
    }
    if args.predict {
        let mut forecast = args.forecast.to_config();
        forecast.refit_every_steps = (args.refit_minutes as usize / 5).max(1);
        forecast.score_horizons = vec![3, 6, 12];
        if args.forecast.forecast_lead.is_none() {
            // Here the metric and the HPA sync in step: a decision's pods serve a startup and a sync later.
            forecast.lead_millis =
                (config.startup_seconds * 1000.0) as i64 + config.interval_millis;
        }
        config.forecast = Some(forecast);
    }
    let learned = if args.schedule {
        Some(learn_schedule(&series, &config)?)
    } else {
        None
    };
    let mut runs = with_progress(&name, |progress| {
        backtest::compare_with_progress(&series, &config, progress)
    });
    let scheduled = learned.map(|schedule| {
        let run = backtest::run(
            &series,
            &backtest::SimConfig {
                schedule: Some(schedule.clone()),
                ..config.clone()
            },
            backtest::Mode::Smart,
        );
        (schedule, run)
    });
    let tuning = args.tune.then(|| {
        let (retunes, tuned) = crate::domain::tuning::tuned_replay(
            &series,
            &config,
            &crate::domain::tuning::TuningConfig::default(),
            86_400_000,
        );
        runs.extend(tuned);
        retunes
    });
    let rightsizing = args
        .rightsize
        .then(|| runs.iter().find(|r| r.mode == backtest::Mode::Smart))
        .flatten()
        .map(|smart| backtest::rightsizing_replay(&series, &config, smart, backtest::Mode::Smart));
    if let Some(plot) = &args.plot {
        let title = Path::new(&name)
            .file_name()
            .map_or_else(|| name.clone(), |f| f.to_string_lossy().into_owned());
        plot_svg(plot, &title, start, &runs, config.target_percent)?;
    }
    if let Some(path) = &args.timeline {
        write_timeline(path, &runs)?;
    }
    if args.json {
        let mut out = serde_json::Map::new();
        out.insert("trace".into(), json!(name));
        out.insert(
            "config".into(),
            json!({
                "pod_capacity": config.pod_capacity, "startup_seconds": config.startup_seconds,
                "target_percent": config.target_percent, "min_replicas": config.min_replicas,
                "max_replicas": config.max_replicas, "pod_request_milli": config.pod_request_milli,
                "pool_measured_percent": config.pool_measured_percent,
                "pool_requested_percent": config.pool_requested_percent,
                "step_seconds": series.step_millis / 1000, "points": series.values.len(),
                "daily_autocorrelation": series.autocorrelation(86_400_000),
                "warmup_seconds": config.score_from_millis / 1000,
            }),
        );
        for r in &runs {
            out.insert(
                serde_json::to_value(r.mode)?
                    .as_str()
                    .unwrap_or("run")
                    .to_string(),
                serde_json::to_value(&r.metrics)?,
            );
            // One forecast report, the predictive run's: the predictive+tuned run learns from the same demand, and its
            // report would differ only by what its own replica counts did to the measured usage.
            if let (Some(f), backtest::Mode::Predictive) = (&r.forecast, r.mode) {
                out.insert("forecast".into(), serde_json::to_value(f)?);
            }
        }
        if let Some(r) = &rightsizing {
            out.insert("rightsizing".into(), serde_json::to_value(r)?);
        }
        if let Some((schedule, run)) = &scheduled {
            out.insert("scheduled".into(), serde_json::to_value(&run.metrics)?);
            out.insert(
                "schedule".into(),
                crate::http::schedule::schedule_json(schedule),
            );
        }
        if let Some(t) = &tuning {
            out.insert("tuning".into(), serde_json::to_value(t)?);
        }
        return Ok(serde_json::to_string_pretty(&out)? + "\n");
    }
    let mut out = String::new();
    writeln!(
        out,
        "trace: {name} ({} points at {}s)",
        series.values.len(),
        series.step_millis / 1000
    )?;
    writeln!(
        out,
        "pod capacity {:.4}, startup {}s, target {}%, replicas {}-{}",
        config.pod_capacity,
        config.startup_seconds,
        config.target_percent,
        config.min_replicas,
        config.max_replicas
    )?;
    writeln!(
        out,
        "{:<16} {:>18} {:>18} {:>10} {:>12} {:>8}",
        "run", "saturated pod-min", "over-target min", "pod-hours", "scale events", "max pods"
    )?;
    let named = runs
        .iter()
        .map(|r| (serde_json::to_value(r.mode).ok(), r))
        .map(|(v, r)| {
            (
                v.and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                r,
            )
        })
        .chain(scheduled.iter().map(|(_, r)| ("scheduled".to_string(), r)));
    for (label, r) in named {
        let m = &r.metrics;
        writeln!(
            out,
            "{:<16} {:>18.1} {:>18.1} {:>10.1} {:>12} {:>8}",
            label,
            m.saturated_pod_minutes,
            m.over_target_minutes,
            m.pod_hours,
            m.scale_events,
            m.max_replicas
        )?;
    }
    for r in &runs {
        if let Some(counts) = &r.metrics.anomalies {
            let cells: Vec<String> = counts
                .iter()
                .map(|(k, n)| format!("{} {n}", k.as_str()))
                .collect();
            writeln!(
                out,
                "anomalies opened ({}): {}",
                serde_json::to_value(r.mode)?.as_str().unwrap_or(""),
                cells.join(", ")
            )?;
        }
    }
    if let Some(r) = &rightsizing {
        write_rightsizing(&mut out, r, &config, &runs)?;
    }
    if let Some((schedule, _)) = &scheduled {
        writeln!(
            out,
            "schedule (learned from the warm-up, applied over the smart run; {} extra replica-hours a week above \
             minReplicas at most):",
            schedule.extra_replica_hours()
        )?;
        out.push_str(&schedule.table());
    }
    for r in tuning.iter().flatten() {
        writeln!(
            out,
            "tuning at +{:.1}d: {:.0}% in force ({})",
            r.at as f64 / 86_400_000.0,
            r.applied_percent,
            r.summary
        )?;
    }
    if let Some(f) = runs.iter().find_map(|r| r.forecast.as_ref()) {
        writeln!(
            out,
            "forecast: trusted {:.0}% of decisions, raised the value in {:.1}%, {} refits, lead-window MAPE {}, \
             false positives {} of {} rises ({} of {} while trusted), false negatives {}",
            f.trusted_share * 100.0,
            f.applied_share * 100.0,
            f.refits,
            percent(f.lead_window.mape),
            percent(f.false_positive_rate),
            f.forecast_rises,
            percent(f.trusted_false_positive_rate),
            f.trusted_forecast_rises,
            percent(f.false_negative_rate),
        )?;
        for (horizon, streams) in &f.horizons {
            let cells: Vec<String> = streams
                .iter()
                .map(|(name, s)| {
                    format!(
                        "{name} {}",
                        s.mase.map_or("n/a".to_string(), |m| format!("{m:.2}"))
                    )
                })
                .collect();
            writeln!(out, "  MASE at {horizon}: {}", cells.join(", "))?;
        }
    }
    Ok(out)
}

/// The scaling schedule learned from the warm-up part of the trace only (the scored part is never seen), in the
/// trace's wall-clock time, for the run's target and replica bounds.
fn learn_schedule(
    series: &backtest::Series,
    config: &backtest::SimConfig,
) -> Result<crate::domain::schedule::Schedule> {
    use crate::domain::schedule;
    if config.score_from_millis < 2 * 86_400_000 {
        bail!(
            "--schedule learns from the warm-up only: give --warmup of at least 2d (the trace's first days)"
        );
    }
    let capacity = config.pod_capacity.max(1e-9);
    let points: Vec<(i64, f64)> = series
        .values
        .iter()
        .enumerate()
        .map(|(i, v)| (i as i64 * series.step_millis, v))
        .take_while(|(t, _)| *t < config.score_from_millis)
        .map(|(t, v)| (config.start_millis + t, v / capacity * 100.0))
        .collect();
    let offset = config
        .forecast
        .as_ref()
        .map_or(0, |f| f.ensemble.profile.utc_offset_minutes);
    let levels = schedule::weekly_levels(
        &points,
        series.step_millis,
        &schedule::ScheduleConfig {
            utc_offset_minutes: offset,
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("--schedule: {e}"))?;
    schedule::schedule(
        &levels,
        schedule::Bounds {
            target_percent: config.target_percent,
            min_replicas: config.min_replicas,
            max_replicas: Some(config.max_replicas),
            lead_minutes: crate::schedule::DEFAULT_LEAD_MINUTES,
        },
    )
    .map_err(|e| anyhow::anyhow!("--schedule: {e}"))
}

/// The right-sizing section: the recommendation and the smart run replayed with it, next to the smart run.
fn write_rightsizing(
    out: &mut String,
    r: &backtest::RightsizingReplay,
    config: &backtest::SimConfig,
    runs: &[Run],
) -> Result<()> {
    use crate::domain::rightsizing::PodPlan;
    let (status, reason) = match &r.plan {
        PodPlan::Change { reason, .. } => ("change", reason),
        PodPlan::Keep { reason, .. } => ("keep", reason),
        PodPlan::NotEnoughData { reason } => ("not enough data", reason),
        PodPlan::Invalid { reason } => ("invalid", reason),
    };
    writeln!(
        out,
        "right-sizing: {status} (mean demand {:.3} cores): {reason}",
        r.demand_cores
    )?;
    let (Some(run), Some(request), Some(target)) = (&r.run, r.request_milli, r.target_percent)
    else {
        return Ok(());
    };
    let smart = runs.iter().find(|r| r.mode == backtest::Mode::Smart);
    writeln!(
        out,
        "{:<22} {:>18} {:>10} {:>20}",
        "replay", "saturated pod-min", "pod-hours", "requested core-hours"
    )?;
    if let Some(smart) = smart {
        writeln!(
            out,
            "{:<22} {:>18.1} {:>10.1} {:>20.1}",
            format!(
                "smart {}m @ {}%",
                config.pod_request_milli, config.target_percent
            ),
            smart.metrics.saturated_pod_minutes,
            smart.metrics.pod_hours,
            r.requested_core_hours_now
        )?;
    }
    writeln!(
        out,
        "{:<22} {:>18.1} {:>10.1} {:>20.1}",
        format!("recommended {request}m @ {target}%"),
        run.saturated_pod_minutes,
        run.pod_hours,
        r.requested_core_hours.unwrap_or(0.0)
    )?;
    Ok(())
}

fn percent(v: Option<f64>) -> String {
    v.map_or("n/a".to_string(), |v| format!("{:.0}%", v * 100.0))
}

/// One CSV row per run and HPA sync.
fn write_timeline(path: &Path, runs: &[Run]) -> Result<()> {
    let mut out = String::from(
        "run,t_seconds,replicas,ready,demand_pods,utilization_percent,metric_percent\n",
    );
    for run in runs {
        let mode = serde_json::to_value(run.mode)?;
        let mode = mode.as_str().unwrap_or("run");
        for p in &run.timeline {
            writeln!(
                out,
                "{mode},{},{},{},{:.3},{:.2},{:.2}",
                p.t / 1000,
                p.replicas,
                p.ready,
                p.demand_pods,
                p.utilization,
                p.metric
            )?;
        }
    }
    std::fs::write(path, out).with_context(|| format!("write {}", path.display()))
}

/// Columns a plotted series is reduced to: about one per horizontal pixel of the chart.
const PLOT_COLUMNS: usize = 600;
/// Okabe-Ito colours (safe for the common colour-vision deficiencies), one per run; demand is drawn in black.
const PLOT_COLOURS: [RGBColor; 4] = [
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
];

/// A named, coloured line of (hours, value) points.
type PlotLine = (String, RGBColor, Vec<(f64, f64)>);

/// Reduces `points` (time in hours, value) to at most four per column of `columns` equal spans of `[0, end]`:
/// each column's first, lowest, highest and last point, in time order (M4 aggregation). A line through them
/// draws the same pixels as a line through every point, so a month of 15-second steps plots as a few thousand.
fn m4(points: impl Iterator<Item = (f64, f64)>, end: f64, columns: usize) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut column: Option<(usize, [(f64, f64); 4])> = None;
    let flush = |out: &mut Vec<(f64, f64)>, c: [(f64, f64); 4]| {
        let [first, low, high, last] = c;
        let mut four = [first, low, high, last];
        four.sort_by(|a, b| a.0.total_cmp(&b.0));
        for p in four {
            if out.last() != Some(&p) {
                out.push(p);
            }
        }
    };
    for (x, y) in points {
        let n = ((x / end * columns as f64) as usize).min(columns - 1);
        match &mut column {
            Some((c, four)) if *c == n => {
                if y < four[1].1 {
                    four[1] = (x, y);
                }
                if y > four[2].1 {
                    four[2] = (x, y);
                }
                four[3] = (x, y);
            }
            _ => {
                if let Some((_, four)) = column.take() {
                    flush(&mut out, four);
                }
                column = Some((n, [(x, y); 4]));
            }
        }
    }
    if let Some((_, four)) = column {
        flush(&mut out, four);
    }
    out
}

/// Writes the runs' replicas (with demand) and utilization over time as an SVG: series reduced to the chart's
/// resolution ([`m4`]), axes scaled to the data, dates on the time axis.
fn plot_svg(path: &Path, title: &str, start: UnixMillis, runs: &[Run], target: f64) -> Result<()> {
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("plot {}: {e}", path.display());
    let root = SVGBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (top, bottom) = root.split_vertically(400);
    let hours = |t: UnixMillis| t as f64 / 3_600_000.0;
    let end = runs
        .iter()
        .filter_map(|r| r.timeline.last())
        .map(|p| hours(p.t))
        .fold(0.0, f64::max)
        .max(0.01);
    let series = |value: &dyn Fn(&backtest::Point) -> f64| -> Vec<Vec<(f64, f64)>> {
        runs.iter()
            .map(|r| {
                m4(
                    r.timeline.iter().map(|p| (hours(p.t), value(p))),
                    end,
                    PLOT_COLUMNS,
                )
            })
            .collect()
    };
    let label = |run: &Run| {
        serde_json::to_value(run.mode)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
    };
    // Hours since the start, written as the trace's dates: `MM-DD HH:MM` (UTC).
    let date = move |h: &f64| {
        let stamp = crate::clock::rfc3339(start + (h * 3_600_000.0) as i64);
        format!("{} {}", &stamp[5..10], &stamp[11..16])
    };
    let draw = |area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
                caption: &str,
                y_desc: &str,
                lines: Vec<PlotLine>|
     -> Result<()> {
        let top = lines
            .iter()
            .flat_map(|(_, _, l)| l.iter().map(|p| p.1))
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        // Headroom above the data for the legend (about 8% of the height per entry), so it covers no line.
        let y_max = if top > 0.0 {
            top * (1.1 + 0.08 * lines.len() as f64)
        } else {
            1.0
        };
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(0.0..end, 0.0..y_max)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("time (UTC)")
            .y_desc(y_desc)
            .x_labels(8)
            .x_label_formatter(&date)
            .draw()
            .map_err(|e| err(&e))?;
        for (name, colour, line) in lines {
            chart
                .draw_series(LineSeries::new(line, colour))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
        Ok(())
    };
    let mut replicas: Vec<_> = runs
        .iter()
        .zip(PLOT_COLOURS)
        .zip(series(&|p| f64::from(p.replicas)))
        .map(|((run, colour), line)| (label(run), colour, line))
        .collect();
    if let Some(first) = runs.first() {
        replicas.push((
            format!("demand: pods needed at the {target}% target"),
            BLACK,
            m4(
                first
                    .timeline
                    .iter()
                    .map(|p| (hours(p.t), p.demand_pods * 100.0 / target)),
                end,
                PLOT_COLUMNS,
            ),
        ));
    }
    draw(&top, &format!("{title}: replicas"), "pods", replicas)?;
    let utilization = runs
        .iter()
        .zip(PLOT_COLOURS)
        .zip(series(&|p| p.utilization))
        .map(|((run, colour), line)| (label(run), colour, line))
        .collect();
    draw(
        &bottom,
        &format!("utilization of ready pods (target {target}%)"),
        "percent of request",
        utilization,
    )?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Simulate {
        #[command(flatten)]
        args: SimulateArgs,
    }

    fn args(line: &[&str]) -> SimulateArgs {
        use clap::Parser;
        Simulate::try_parse_from([&["simulate"], line].concat())
            .unwrap()
            .args
    }

    #[test]
    fn m4_keeps_each_columns_first_lowest_highest_and_last() {
        let points = [
            (0.0, 5.0),
            (0.1, 9.0),
            (0.2, 1.0),
            (0.3, 4.0),
            (0.6, 7.0),
            (0.9, 2.0),
        ];
        // Two columns over [0, 1]: [0, 0.5) and [0.5, 1].
        let out = m4(points.into_iter(), 1.0, 2);
        assert_eq!(
            out,
            [
                (0.0, 5.0),
                (0.1, 9.0),
                (0.2, 1.0),
                (0.3, 4.0),
                (0.6, 7.0),
                (0.9, 2.0)
            ]
        );
        let many: Vec<_> = (0..100_000)
            .map(|i| (i as f64 / 1000.0, (i % 7) as f64))
            .collect();
        let out = m4(many.into_iter(), 100.0, 50);
        assert!(out.len() <= 200, "{}", out.len());
        assert_eq!(out.first(), Some(&(0.0, 0.0)));
        assert!(out.iter().any(|p| p.1 == 6.0) && out.iter().any(|p| p.1 == 0.0));
    }

    /// A month of a real trace (Azure 2019, 5-minute rows, ../shared) plots as a small SVG that a real renderer
    /// (rsvg-convert, installed by hack/install-tools.sh) accepts, titled by the file's name with dates on the axis.
    #[test]
    fn a_month_of_trace_plots_as_a_small_valid_svg() {
        let trace = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/traces/datacenter/azure_v2/vm_cpu_readings_month_aggregated_cpu_mem.csv"
        );
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("month.svg");
        run(&args(&["--trace", trace, "--plot", svg.to_str().unwrap()])).unwrap();
        let bytes = std::fs::metadata(&svg).unwrap().len();
        assert!(bytes < 1_000_000, "{bytes} bytes");
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("vm_cpu_readings_month_aggregated_cpu_mem.csv: replicas"));
        assert!(
            !text.contains("/shared/traces"),
            "the title is the file name, not its path"
        );
        assert!(text.contains("demand: pods needed"));
        assert!(text.contains("time (UTC)"));
        let png = dir.path().join("month.png");
        let out = std::process::Command::new("rsvg-convert")
            .arg(&svg)
            .arg("-o")
            .arg(&png)
            .output()
            .expect("rsvg-convert (package librsvg2-bin) is installed by hack/install-tools.sh");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(std::fs::metadata(&png).unwrap().len() > 10_000);
    }

    #[test]
    fn a_scenario_counts_the_anomalies_the_tick_opened() {
        // The flash sale: load jumps several-fold within minutes and the HPA chases it.
        let json = run(&args(&["--scenario", "flash_sale_event", "--json"])).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let counts = &v["smart"]["anomalies"];
        for kind in crate::domain::anomaly::AnomalyKind::ALL {
            assert!(counts[kind.as_str()].is_u64(), "{kind:?} missing: {counts}");
        }
        assert!(counts["cpu_spike"].as_u64().unwrap() >= 1, "{counts}");
        assert!(counts["scaling_thrash"].as_u64().unwrap() >= 1, "{counts}");
        // Runs that do not go through the tick have no counts; the existing fields are unchanged.
        assert!(v["plain"].get("anomalies").is_none(), "{}", v["plain"]);
        assert!(v["smart"]["scale_events"].is_u64());
        let text = run(&args(&["--scenario", "flash_sale_event"])).unwrap();
        assert!(
            text.contains("anomalies opened (smart): cpu_spike "),
            "{text}"
        );
    }
}
