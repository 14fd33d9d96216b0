//! The command line: [`Cli`], its subcommands and the flags the commands own (decision core, forecasts,
//! intervals), with a `SMART_AUTOSCALER_*` environment fallback for every flag.
//!
//! Each adapter owns its flags (`k8s::K8sArgs`, `prom::PromArgs`, `store::StoreArgs`, `http::ServerArgs` with the
//! webhook's and the extender's, `alerting::AlertingArgs`) and turns them into its settings with `TryFrom`; this module flattens them into
//! the commands and depends on the adapters, never the reverse (shared value parsers live in [`crate::flags`]).
//! [`Command::settings`] checks everything once, before anything starts, including the rules that tie flags
//! together, and reports every setting that cannot work at once, each naming its flag.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::alerting::AlertingSettings;
use crate::domain::decision::DecisionConfig;
use crate::domain::forecast::online::ForecasterConfig;
use crate::flags::parse_duration;
use crate::http::{ServerArgs, ServerSettings, ServerSettingsError};
use crate::k8s::{K8sSettings, K8sSettingsError};
use crate::prom::{PromSettings, PromSettingsError};
use crate::store::{StoreConfig, StoreSettingsError};

/// Predictive, node-aware and cost-aware external metrics for the native Kubernetes HPA.
#[derive(Debug, Parser)]
#[command(name = "smart-autoscaler", version, about, propagate_version = true)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, env = "SMART_AUTOSCALER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` EnvFilter syntax, e.g. `info,smart_autoscaler=debug`.
    #[arg(
        long,
        global = true,
        env = "SMART_AUTOSCALER_LOG",
        default_value = "info"
    )]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run in a cluster: serve the external metrics API from Kubernetes and Prometheus data.
    Serve(Box<ServeArgs>),
    /// Run the whole server on an embedded simulated cluster: no Kubernetes or Prometheus needed.
    Demo(Box<DemoArgs>),
    /// Generate a CA and a serving certificate for the in-cluster Service and print the caBundle.
    Certs(CertsArgs),
    /// Backtest: replay a trace or scenario through a model of the native HPA (plain vs smart vs oracle).
    Simulate(Box<SimulateArgs>),
    /// Print the weekly report (cost, savings, anomalies, target changes, forecasts) of a running server.
    Report(ReportArgs),
}

/// Settings for `report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Base URL of the server's metrics port (where `/api/v1/report/weekly` is served), e.g. through
    /// `kubectl port-forward`.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// Only this namespace.
    #[arg(long, env = "SMART_AUTOSCALER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Print the JSON the server sent instead of the text.
    #[arg(long)]
    pub json: bool,
    /// How long to wait for the server.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Settings for `simulate`.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Trace CSV (header row; timestamp column as `YYYY-MM-DD HH:MM:SS`, RFC 3339 or seconds, or none with --step).
    #[arg(long, env = "SMART_AUTOSCALER_TRACE", conflicts_with = "scenario")]
    pub trace: Option<PathBuf>,
    /// Value column of the trace, by name or 0-based index; default the first numeric non-time column.
    #[arg(long, env = "SMART_AUTOSCALER_COLUMN")]
    pub column: Option<String>,
    /// Spacing of rows for traces without a timestamp column, e.g. `5m`.
    #[arg(long, env = "SMART_AUTOSCALER_STEP", value_parser = parse_duration)]
    pub step: Option<Duration>,
    /// A built-in scenario instead of a trace: normal_load, high_load_spike, gradual_load_increase,
    /// memory_constrained, over_provisioned, daily_peak_pattern, weekend_low_traffic, flash_sale_event,
    /// jvm_startup, tiny_requests.
    #[arg(long, env = "SMART_AUTOSCALER_SCENARIO")]
    pub scenario: Option<String>,
    /// Load one pod serves at 100% of its CPU request; default: the trace's p95 needs 10 pods.
    #[arg(long, env = "SMART_AUTOSCALER_POD_CAPACITY")]
    pub pod_capacity: Option<f64>,
    /// Seconds from pod start to Ready (default 60).
    #[arg(long, env = "SMART_AUTOSCALER_STARTUP_SECONDS")]
    pub startup_seconds: Option<f64>,
    /// Base target utilization, percent (default 70).
    #[arg(long, env = "SMART_AUTOSCALER_TARGET")]
    pub target: Option<f64>,
    /// HPA minReplicas.
    #[arg(long, env = "SMART_AUTOSCALER_MIN_REPLICAS")]
    pub min_replicas: Option<u32>,
    /// HPA maxReplicas.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_REPLICAS")]
    pub max_replicas: Option<u32>,
    /// Node-pressure scenario: measured CPU of the pool, percent (default: neutral, pressure factor 1).
    #[arg(long, env = "SMART_AUTOSCALER_POOL_MEASURED")]
    pub pool_measured: Option<f64>,
    /// Node-pressure scenario: requested/allocatable of the pool, percent (default: neutral).
    #[arg(long, env = "SMART_AUTOSCALER_POOL_REQUESTED")]
    pub pool_requested: Option<f64>,
    /// CPU request of one pod in milli-cores (drives the low-request policy; default 500).
    #[arg(long, env = "SMART_AUTOSCALER_POD_REQUEST_MILLI")]
    pub pod_request_milli: Option<i64>,
    /// Seed for scenario noise.
    #[arg(long, env = "SMART_AUTOSCALER_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Print JSON with objects `plain`, `smart` and `oracle`.
    #[arg(long)]
    pub json: bool,
    /// Write replicas (with demand) and utilization over time for every run to this SVG file (`.svg`; other
    /// formats are refused, convert the SVG with e.g. `rsvg-convert`).
    #[arg(long, env = "SMART_AUTOSCALER_PLOT")]
    pub plot: Option<PathBuf>,
    /// Write every 15-second step of every run (time, replicas, ready pods, demand, true utilization, the metric
    /// the HPA saw) to this CSV file, for a look at why a run scaled when it did.
    #[arg(long, env = "SMART_AUTOSCALER_TIMELINE")]
    pub timeline: Option<PathBuf>,

    #[command(flatten)]
    pub decision: DecisionArgs,

    /// Add a right-sizing replay: the request and target recommended from the smart run's usage (VPA-style
    /// histogram, HPA-aware plan) replayed through the smart run again, with its saturation and pod-hours (a
    /// `rightsizing` object in the JSON). Needs a day of trace or more; shorter is "not enough data".
    #[arg(long)]
    pub rightsize: bool,

    /// Add a run, `scheduled`: a scaling schedule (a minReplicas per hour of the week, as `GET
    /// /api/v1/deployments/{ns}/{name}/schedule` recommends) learned from the warm-up only, applied as its
    /// CronJobs would, over the smart run. Needs `--warmup` of 2 days or more.
    #[arg(long)]
    pub schedule: bool,

    /// Add a `tuned` run: the smart run of a deployment opted in to auto-tuning, re-tuned every day on the trace
    /// so far from the end of the warm-up (at least a day) on, a tuned target applied only when confident (more
    /// than 0.8), as `serve` does (a `tuned` object and a `tuning` list of the re-tunings in the JSON). See
    /// docs/tuning.md.
    #[arg(long)]
    pub tune: bool,

    /// Add a fourth run, `predictive`: smart-autoscaler with forecasts learned online as the trace replays (no
    /// peeking ahead), and a `forecast` object with the forecasts' accuracy in the JSON.
    #[arg(long)]
    pub predict: bool,
    /// Replay this much of the trace before scoring, e.g. `2d`: every run (plain, smart, oracle, predictive)
    /// replays it, the forecasters learn from it, and no run's metrics count it (a train/test split).
    #[arg(long, env = "SMART_AUTOSCALER_WARMUP", default_value = "0s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The smart run's short CPU window (the server's `pod_cpu_1m` query), e.g. `2m` to see what a longer one
    /// costs; 15s to 240s.
    #[arg(long, env = "SMART_AUTOSCALER_SHORT_WINDOW", default_value = "1m", value_parser = parse_duration)]
    pub short_window: Duration,
    /// Minutes between model refits during the replay (the server refits on --forecast-refit-interval).
    #[arg(
        long,
        env = "SMART_AUTOSCALER_REPLAY_REFIT_MINUTES",
        default_value_t = 60
    )]
    pub refit_minutes: u32,

    #[command(flatten)]
    pub forecast: ForecastArgs,
}

impl SimulateArgs {
    /// Validates the `simulate` configuration (the trace itself is read, and checked, when the run starts).
    pub fn validate(&self) -> Result<(), InvalidFlag> {
        self.decision.validate()?;
        self.forecast.validate()?;
        if self.refit_minutes < 5 {
            return Err(bad("refit-minutes", "must be at least 5 (one bucket)"));
        }
        if self.trace.is_none() == self.scenario.is_none() {
            return Err(bad(
                "trace",
                "give exactly one of --trace FILE or --scenario NAME",
            ));
        }
        // A scenario has its own timestamps and value column: these two would be ignored without a word.
        if self.trace.is_none() {
            for (flag, given) in [
                ("column", self.column.is_some()),
                ("step", self.step.is_some()),
            ] {
                if given {
                    return Err(bad(flag, "only applies to --trace, not to --scenario"));
                }
            }
        }
        if let Some(plot) = &self.plot
            && !plot
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
        {
            return Err(bad(
                "plot",
                format!(
                    "writes SVG only, so the file must end in .svg, not {} (rsvg-convert makes a PNG of it)",
                    plot.display()
                ),
            ));
        }
        let range = crate::domain::cluster::SHORT_WINDOW_SECONDS;
        if !u32::try_from(self.short_window.as_secs()).is_ok_and(|s| range.contains(&s)) {
            return Err(bad(
                "short-window",
                format!(
                    "must be {}s to {}s, not {:?}",
                    range.start(),
                    range.end(),
                    self.short_window
                ),
            ));
        }
        if let Some(c) = self.pod_capacity
            && !(c.is_finite() && c > 0.0)
        {
            return Err(bad("pod-capacity", "must be positive"));
        }
        if let Some(t) = self.target
            && !(t.is_finite() && t > 0.0 && t <= 100.0)
        {
            return Err(bad("target", "must be in (0, 100]"));
        }
        if let (Some(min), Some(max)) = (self.min_replicas, self.max_replicas)
            && min > max
        {
            return Err(bad(
                "min-replicas",
                format!("{min} exceeds --max-replicas {max}"),
            ));
        }
        Ok(())
    }
}

/// Auto-tuning settings, shared by `serve` and `demo` (see docs/tuning.md).
#[derive(Debug, Clone, Args)]
pub struct TuningArgs {
    /// Least time between two tunings of one deployment (at least 1m). A deployment seen for the first time is
    /// tuned in the first round that has budget left.
    #[arg(long, env = "SMART_AUTOSCALER_TUNING_INTERVAL", default_value = "3h", value_parser = parse_duration)]
    pub tuning_interval: Duration,
    /// Share of one core the background tuning replays may use (0.01-1); deployments not reached in a round come
    /// first in the next.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_TUNING_CPU_BUDGET",
        default_value_t = 0.25
    )]
    pub tuning_cpu_budget: f64,
    /// Candidate targets replayed on each side of the current one (1-10), 3 points apart.
    #[arg(long, env = "SMART_AUTOSCALER_TUNING_CANDIDATES", default_value_t = 4)]
    pub tuning_candidates: u32,
    /// Turn auto-tuning off: no tuned targets, no advice.
    #[arg(long, env = "SMART_AUTOSCALER_NO_TUNING")]
    pub no_tuning: bool,
}

/// What [`TuningArgs`] set up.
#[derive(Debug, Clone)]
pub struct TuningSettings {
    /// Least time between two tunings of one deployment.
    pub interval: Duration,
    /// Share of one core the replays may use.
    pub cpu_budget: f64,
    /// The tuning itself.
    pub config: crate::domain::tuning::TuningConfig,
}

impl TuningArgs {
    /// The settings, `None` with `--no-tuning`.
    pub fn settings(&self) -> Result<Option<TuningSettings>, InvalidFlag> {
        if !(self.tuning_cpu_budget.is_finite() && (0.01..=1.0).contains(&self.tuning_cpu_budget)) {
            return Err(bad("tuning-cpu-budget", "must be between 0.01 and 1"));
        }
        if self.tuning_interval < Duration::from_secs(60) {
            return Err(bad("tuning-interval", "must be at least 1m"));
        }
        if !(1..=10).contains(&self.tuning_candidates) {
            return Err(bad("tuning-candidates", "must be between 1 and 10"));
        }
        Ok((!self.no_tuning).then(|| TuningSettings {
            interval: self.tuning_interval,
            cpu_budget: self.tuning_cpu_budget,
            config: crate::domain::tuning::TuningConfig {
                steps: self.tuning_candidates,
                ..Default::default()
            },
        }))
    }
}

/// Forecast settings, shared by `serve` and `simulate --predict`.
#[derive(Debug, Clone, Args)]
pub struct ForecastArgs {
    /// How far ahead the forecast looks (5m-60m): the window forecasts are scored over and the spike forest
    /// asks about. A rise the forest does not back within it loses confidence.
    #[arg(long, env = "SMART_AUTOSCALER_FORECAST_HORIZON", default_value = "15m", value_parser = parse_duration)]
    pub forecast_horizon: Duration,
    /// Lead time (15s up to the horizon): from a decision to the pods it asks for serving, i.e. the metric's
    /// refresh and an HPA sync (15 s each) plus pod startup to Ready. The served value is raised to the largest
    /// forecast over the next lead time. Default 90s for `serve`; `simulate` uses its --startup-seconds plus
    /// one 15 s sync.
    #[arg(long, env = "SMART_AUTOSCALER_FORECAST_LEAD", value_parser = parse_duration)]
    pub forecast_lead: Option<Duration>,
    /// Least ensemble confidence (0-1) for a forecast to raise the served value.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_FORECAST_MIN_CONFIDENCE",
        default_value_t = 0.75
    )]
    pub forecast_min_confidence: f64,
    /// Trust in a deployment's forecasts closes while their accuracy (1 - MAPE, 0-1) is below this.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_FORECAST_MIN_ACCURACY",
        default_value_t = 0.6
    )]
    pub forecast_min_accuracy: f64,
    /// Trust closes while the share of forecast rises that did not come (0-1) is above this.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_FORECAST_MAX_FALSE_POSITIVES",
        default_value_t = 0.4
    )]
    pub forecast_max_false_positives: f64,
    /// Recent scored forecasts trust is judged on (one is made every 5 minutes; 144 is half a day).
    #[arg(
        long,
        env = "SMART_AUTOSCALER_FORECAST_TRUST_WINDOW",
        default_value_t = 144
    )]
    pub forecast_trust_window: usize,
    /// Business time zone as an offset from UTC in minutes (e.g. 60 for CET), for hour-of-day and weekend
    /// patterns.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_FORECAST_UTC_OFFSET_MINUTES",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    pub forecast_utc_offset_minutes: i32,
}

impl ForecastArgs {
    /// Validates the forecast settings.
    pub fn validate(&self) -> Result<(), InvalidFlag> {
        let h = self.forecast_horizon.as_secs();
        if !(300..=3600).contains(&h) {
            return Err(bad("forecast-horizon", "must be between 5m and 60m"));
        }
        for (flag, v) in [
            ("forecast-min-confidence", self.forecast_min_confidence),
            ("forecast-min-accuracy", self.forecast_min_accuracy),
            (
                "forecast-max-false-positives",
                self.forecast_max_false_positives,
            ),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(bad(flag, "must be between 0 and 1"));
            }
        }
        if let Some(lead) = self.forecast_lead {
            if lead < Duration::from_secs(15) || lead > self.forecast_horizon {
                return Err(bad(
                    "forecast-lead",
                    "must be between 15s and the forecast horizon",
                ));
            }
        }
        if self.forecast_trust_window < 12 {
            return Err(bad("forecast-trust-window", "must be at least 12"));
        }
        if self.forecast_utc_offset_minutes.abs() > 14 * 60 {
            return Err(bad("forecast-utc-offset-minutes", "must be within ±840"));
        }
        Ok(())
    }

    /// The forecaster settings these flags describe (once [`ForecastArgs::validate`] passed).
    pub fn to_config(&self) -> ForecasterConfig {
        use crate::domain::forecast::{self, ensemble, online, profile, validate};
        let horizon_steps = (self.forecast_horizon.as_millis() as u64)
            .div_ceil(forecast::STEP_MILLIS as u64)
            .max(1) as usize;
        online::ForecasterConfig {
            ensemble: ensemble::EnsembleConfig {
                horizon_steps,
                profile: profile::ProfileConfig {
                    utc_offset_minutes: self.forecast_utc_offset_minutes,
                    ..Default::default()
                },
                ..Default::default()
            },
            trust: validate::TrustConfig {
                min_accuracy: self.forecast_min_accuracy,
                max_false_positive_rate: self.forecast_max_false_positives,
                window: self.forecast_trust_window,
                ..Default::default()
            },
            min_confidence: self.forecast_min_confidence,
            lead_millis: self
                .forecast_lead
                .map_or(online::DEFAULT_LEAD_MILLIS, |d| d.as_millis() as i64),
            ..Default::default()
        }
    }
}

/// Decision-core settings: node pressure, safety rules, dry run. Shared by `serve`, `demo` and `simulate`.
#[derive(Debug, Clone, Args)]
pub struct DecisionArgs {
    /// Measured node-pool CPU (percent) at or above which pressure is full and the target is lowered most.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_PRESSURE_HIGH_MEASURED",
        default_value_t = 80.0
    )]
    pub pressure_high_measured: f64,
    /// Measured node-pool CPU (percent) at or below which there is no pressure and the target is raised most.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_PRESSURE_LOW_MEASURED",
        default_value_t = 40.0
    )]
    pub pressure_low_measured: f64,
    /// Requested/allocatable CPU of the pool (percent) at or above which pressure is full.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_PRESSURE_HIGH_REQUESTED",
        default_value_t = 90.0
    )]
    pub pressure_high_requested: f64,
    /// Requested/allocatable CPU of the pool (percent) at or below which there is no pressure.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_PRESSURE_LOW_REQUESTED",
        default_value_t = 50.0
    )]
    pub pressure_low_requested: f64,
    /// Target multiplier with no pressure (1.15 raises a 70% target to about 80%).
    #[arg(
        long,
        env = "SMART_AUTOSCALER_LOW_PRESSURE_FACTOR",
        default_value_t = 1.15
    )]
    pub low_pressure_factor: f64,
    /// Target multiplier under full pressure (0.8 lowers a 70% target to 56%).
    #[arg(
        long,
        env = "SMART_AUTOSCALER_HIGH_PRESSURE_FACTOR",
        default_value_t = 0.8
    )]
    pub high_pressure_factor: f64,
    /// Below this confidence (0-1) the effective target is held at its previous value.
    #[arg(long, env = "SMART_AUTOSCALER_MIN_CONFIDENCE", default_value_t = 0.6)]
    pub min_confidence: f64,
    /// Minimum time between effective-target changes, e.g. `5m`.
    #[arg(long, env = "SMART_AUTOSCALER_COOLDOWN", default_value = "5m", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// Smallest allowed adjustment factor base/effective target.
    #[arg(long, env = "SMART_AUTOSCALER_MIN_FACTOR", default_value_t = 0.5)]
    pub min_factor: f64,
    /// Largest allowed adjustment factor base/effective target.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_FACTOR", default_value_t = 2.0)]
    pub max_factor: f64,
    /// Raw utilization (percent) at which pods count as saturated; the served value never drops below raw then.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_SATURATION_PERCENT",
        default_value_t = 95.0
    )]
    pub saturation_percent: f64,
    /// Serve the raw utilization but record what would have been served.
    #[arg(long, env = "SMART_AUTOSCALER_DRY_RUN")]
    pub dry_run: bool,
}

impl DecisionArgs {
    /// Checks the settings are coherent.
    pub fn validate(&self) -> Result<(), InvalidFlag> {
        let pct = |v: f64| v.is_finite() && (0.0..=100.0).contains(&v);
        if !(pct(self.pressure_low_measured) && pct(self.pressure_high_measured))
            || self.pressure_low_measured >= self.pressure_high_measured
        {
            return Err(bad("pressure-high-measured", "need 0 <= low < high <= 100"));
        }
        if !(pct(self.pressure_low_requested) && self.pressure_high_requested.is_finite())
            || self.pressure_low_requested >= self.pressure_high_requested
        {
            return Err(bad("pressure-high-requested", "need 0 <= low < high"));
        }
        for (flag, v) in [
            ("low-pressure-factor", self.low_pressure_factor),
            ("high-pressure-factor", self.high_pressure_factor),
        ] {
            if !(v.is_finite() && (0.1..=5.0).contains(&v)) {
                return Err(bad(flag, "must be between 0.1 and 5"));
            }
        }
        // More pressure must never mean a higher target (fewer pods): the pool's pressure would shed pods exactly
        // when its nodes are busiest.
        if self.low_pressure_factor < self.high_pressure_factor {
            return Err(bad(
                "low-pressure-factor",
                format!(
                    "{} is below --high-pressure-factor {}: more pressure would raise the target; the factor \
                     with no pressure must be at least the one under full pressure",
                    self.low_pressure_factor, self.high_pressure_factor
                ),
            ));
        }
        if !(self.min_confidence.is_finite() && (0.0..=1.0).contains(&self.min_confidence)) {
            return Err(bad("min-confidence", "must be between 0 and 1"));
        }
        if !(self.min_factor.is_finite() && self.min_factor > 0.0 && self.min_factor <= 1.0) {
            return Err(bad("min-factor", "must be in (0, 1]"));
        }
        if !(self.max_factor.is_finite() && self.max_factor >= 1.0) {
            return Err(bad("max-factor", "must be at least 1"));
        }
        if !pct(self.saturation_percent) {
            return Err(bad("saturation-percent", "must be between 0 and 100"));
        }
        Ok(())
    }

    /// The core's configuration (once [`DecisionArgs::validate`] passed).
    pub fn to_config(&self) -> DecisionConfig {
        use crate::domain::decision::PressureConfig;
        DecisionConfig {
            pressure: PressureConfig {
                low_measured_percent: self.pressure_low_measured,
                high_measured_percent: self.pressure_high_measured,
                low_requested_percent: self.pressure_low_requested,
                high_requested_percent: self.pressure_high_requested,
                low_pressure_factor: self.low_pressure_factor,
                high_pressure_factor: self.high_pressure_factor,
            },
            min_confidence: self.min_confidence,
            cooldown_millis: self.cooldown.as_millis() as i64,
            min_factor: self.min_factor,
            max_factor: self.max_factor,
            saturation_percent: self.saturation_percent,
            dry_run: self.dry_run,
            ..DecisionConfig::default()
        }
    }
}

/// Settings for `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub decision: DecisionArgs,

    /// PEM serving certificate (chain) for the secure port.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_TLS_CERT_FILE",
        default_value = "/etc/smart-autoscaler/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,

    /// PEM private key of the serving certificate.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_TLS_KEY_FILE",
        default_value = "/etc/smart-autoscaler/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,

    /// How often inputs are collected and the snapshot recomputed, e.g. `15s`. The HPA syncs every 15 s; a slower
    /// interval delays every reaction by up to one interval (see the scaling benchmark in the README).
    #[arg(long, env = "SMART_AUTOSCALER_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Directory for persistent state (the sled store lives in `<data-dir>/store`).
    #[arg(
        long,
        env = "SMART_AUTOSCALER_DATA_DIR",
        default_value = "/var/lib/smart-autoscaler"
    )]
    pub data_dir: PathBuf,

    /// Startup filter for deployments without the `smart-autoscaler.io/startup-filter-seconds` annotation:
    /// CPU of pods younger than this is ignored.
    #[arg(long, env = "SMART_AUTOSCALER_DEFAULT_STARTUP_FILTER", default_value = "60s", value_parser = parse_duration)]
    pub default_startup_filter: Duration,

    /// Base target (percent) for deployments managed by the `smart-autoscaler.io/enabled` annotation only.
    #[arg(long, env = "SMART_AUTOSCALER_DEFAULT_TARGET", default_value_t = 70.0)]
    pub default_target: f64,

    #[command(flatten)]
    pub forecast: ForecastArgs,

    /// Least time between two refits of one deployment's forecast models.
    #[arg(long, env = "SMART_AUTOSCALER_FORECAST_REFIT_INTERVAL", default_value = "15m", value_parser = parse_duration)]
    pub forecast_refit_interval: Duration,

    /// Share of one core the background model refits and warm-ups may use (0.01-1); deployments not reached in a
    /// round are refitted (or warmed up) first in the next.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_FORECAST_CPU_BUDGET",
        default_value_t = 0.25
    )]
    pub forecast_cpu_budget: f64,

    /// Turn forecasting off: the served values are the reactive ones.
    #[arg(long, env = "SMART_AUTOSCALER_NO_FORECAST")]
    pub no_forecast: bool,

    #[command(flatten)]
    pub tuning: TuningArgs,

    #[command(flatten)]
    pub k8s: crate::k8s::K8sArgs,

    #[command(flatten)]
    pub leader: crate::k8s::leader::LeaderArgs,

    #[command(flatten)]
    pub prom: crate::prom::PromArgs,

    #[command(flatten)]
    pub external_rules: crate::prom::rules::ExternalRulesArgs,

    #[command(flatten)]
    pub delegate: crate::http::delegate::DelegateArgs,

    #[command(flatten)]
    pub store: crate::store::StoreArgs,

    #[command(flatten)]
    pub alerting: crate::alerting::AlertingArgs,

    #[command(flatten)]
    pub cost: crate::cost::CostArgs,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

/// Settings for `demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub server: ServerArgs,

    #[command(flatten)]
    pub decision: DecisionArgs,

    /// How often the simulated cluster is observed, in simulated time, e.g. `15s`.
    #[arg(long, env = "SMART_AUTOSCALER_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub interval: Duration,

    /// Fast-forward: the whole simulated cluster, its HPAs and the pipeline run this many times faster than real
    /// time. At 1 (the default) every time the API reports is the wall clock; above 1 the API reports the
    /// simulated clock, which runs ahead of it.
    #[arg(long, env = "SMART_AUTOSCALER_SPEED", default_value_t = 1.0)]
    pub speed: f64,

    /// Directory for the generated CA, serving certificate, kubeconfig and state.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_DATA_DIR",
        default_value = ".smart-autoscaler-demo"
    )]
    pub data_dir: PathBuf,

    /// Where to write the kubeconfig that trusts the generated CA. Defaults to `<data-dir>/kubeconfig`.
    #[arg(long, env = "SMART_AUTOSCALER_KUBECONFIG_OUT")]
    pub kubeconfig_out: Option<PathBuf>,

    /// Seed of the simulated cluster's noise, so a demo run can be repeated exactly.
    #[arg(long, env = "SMART_AUTOSCALER_SEED", default_value_t = 42)]
    pub seed: u64,

    /// The simulated workload's time of day when the demo starts (`HH:MM`, or `now` for the wall clock's time of
    /// day). The default `08:45` puts api-service's daily 09:00 spike 15 minutes after the start and a
    /// batch-processor window 30 minutes after it. Only the workload's daily rhythm is shifted (and the history
    /// seeded with it); the clock the API reports stays the wall clock.
    #[arg(long, env = "SMART_AUTOSCALER_START_AT", default_value = "08:45", value_parser = parse_start_at)]
    pub start_at: StartAt,

    /// Days of simulated history written into the demo's store before it starts (0-30), so forecasts are fitted
    /// and their trust judged at once instead of after days.
    #[arg(long, env = "SMART_AUTOSCALER_HISTORY_DAYS", default_value_t = 7)]
    pub history_days: u32,

    #[command(flatten)]
    pub forecast: ForecastArgs,

    /// Turn forecasting off in the demo: the served values are the reactive ones.
    #[arg(long, env = "SMART_AUTOSCALER_NO_FORECAST")]
    pub no_forecast: bool,

    #[command(flatten)]
    pub tuning: TuningArgs,

    #[command(flatten)]
    pub alerting: crate::alerting::AlertingArgs,

    #[command(flatten)]
    pub cost: crate::cost::CostArgs,

    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

/// Parses `HH:MM` into minutes after midnight.
/// Where the demo's simulated workload starts in its day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// At the wall clock's time of day: the workload's rhythm is not shifted.
    Now,
    /// At this many minutes after midnight of the workload's day.
    TimeOfDay(u32),
}

fn parse_start_at(text: &str) -> Result<StartAt, String> {
    if text.trim().eq_ignore_ascii_case("now") {
        return Ok(StartAt::Now);
    }
    parse_time_of_day(text)
        .map(StartAt::TimeOfDay)
        .map_err(|e| format!("{e}; or `now`"))
}

fn parse_time_of_day(text: &str) -> Result<u32, String> {
    let (h, m) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not HH:MM"))?;
    let (h, m): (u32, u32) = (
        h.parse().map_err(|_| format!("{text:?} is not HH:MM"))?,
        m.parse().map_err(|_| format!("{text:?} is not HH:MM"))?,
    );
    if h > 23 || m > 59 {
        return Err(format!("{text:?} is not a time of day (00:00-23:59)"));
    }
    Ok(h * 60 + m)
}

/// Settings for `certs`.
#[derive(Debug, Clone, Args)]
pub struct CertsArgs {
    /// Service name the certificate is for.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_SERVICE",
        default_value = "smart-autoscaler"
    )]
    pub service: String,

    /// Namespace of the Service.
    #[arg(
        long,
        env = "SMART_AUTOSCALER_NAMESPACE",
        default_value = "smart-autoscaler"
    )]
    pub namespace: String,

    /// Extra DNS names or IP addresses to put in the serving certificate.
    #[arg(
        long = "san",
        env = "SMART_AUTOSCALER_EXTRA_SANS",
        value_delimiter = ','
    )]
    pub extra_sans: Vec<String>,

    /// Directory the PEM files are written to (ca.crt, ca.key, tls.crt, tls.key).
    #[arg(long, env = "SMART_AUTOSCALER_CERTS_DIR", default_value = "certs/out")]
    pub out_dir: PathBuf,

    /// Validity of the serving certificate in days (the CA gets ten times as long).
    #[arg(long, env = "SMART_AUTOSCALER_CERT_DAYS", default_value_t = 365)]
    pub days: u32,
}

/// A flag of the commands' own (not an adapter's) that cannot work, with the flag to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct InvalidFlag {
    /// The flag at fault, without dashes.
    pub flag: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> InvalidFlag {
    InvalidFlag {
        flag,
        reason: reason.into(),
    }
}

/// One setting that cannot work; every message starts with `invalid --<flag>:`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A flag of the commands' own.
    #[error(transparent)]
    Flag(#[from] InvalidFlag),
    /// A listener, limit, webhook or extender flag.
    #[error(transparent)]
    Server(#[from] ServerSettingsError),
    /// A Kubernetes connection flag.
    #[error(transparent)]
    K8s(#[from] K8sSettingsError),
    /// A leader election flag.
    #[error(transparent)]
    Leader(#[from] crate::k8s::leader::LeaderSettingsError),
    /// A Prometheus flag.
    #[error(transparent)]
    Prom(#[from] PromSettingsError),
    /// A store flag.
    #[error(transparent)]
    Store(#[from] StoreSettingsError),
    /// The alerting config file.
    #[error(transparent)]
    Alerting(#[from] crate::alerting::ConfigFileError),
    /// The `--external-rules` file.
    #[error(transparent)]
    ExternalRules(#[from] crate::prom::rules::RulesFileError),
    /// A `--delegate-*` flag.
    #[error(transparent)]
    Delegate(#[from] crate::http::delegate::DelegateSettingsError),
    /// A delegated authentication or authorization flag.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthSettingsError),
}

/// Every setting of a command that cannot work, found in one pass, so one failed start names them all.
#[derive(Debug)]
pub struct InvalidConfig {
    /// The problems, in flag-group order (never empty).
    pub errors: Vec<ConfigError>,
}

impl std::fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "{one}"),
            all => {
                write!(f, "{} settings cannot work:", all.len())?;
                for error in all {
                    write!(f, "\n  {error}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for InvalidConfig {}

/// Gathers the errors of the flag groups' conversions.
#[derive(Default)]
struct Errors(Vec<ConfigError>);

impl Errors {
    /// The converted value, or `None` with its error kept.
    fn take<T, E: Into<ConfigError>>(&mut self, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.0.push(e.into())).ok()
    }

    /// Keeps the error of a check.
    fn check<E: Into<ConfigError>>(&mut self, result: Result<(), E>) {
        self.take(result);
    }

    /// `value` if nothing was found wrong, else every error.
    fn finish<T>(self, value: Option<T>) -> Result<T, InvalidConfig> {
        match value {
            Some(value) if self.0.is_empty() => Ok(value),
            _ => Err(InvalidConfig { errors: self.0 }),
        }
    }
}

/// `serve`'s settings, checked: what [`crate::app`] runs with.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Listeners, limits, webhook and extender.
    pub server: ServerSettings,
    /// The decision core.
    pub decision: DecisionConfig,
    /// Serving certificate (a file at start).
    pub tls_cert_file: PathBuf,
    /// Its key (a file at start).
    pub tls_key_file: PathBuf,
    /// Tick interval, 1 s to 1 h.
    pub interval: Duration,
    /// Directory for persistent state.
    pub data_dir: PathBuf,
    /// Startup filter of deployments without the annotation, at most 1 h.
    pub default_startup_filter: Duration,
    /// Base target of annotation-only deployments, in (0, 100].
    pub default_target: f64,
    /// The forecasters; `None` with `--no-forecast`.
    pub forecast: Option<ForecasterConfig>,
    /// Least time between two refits of one deployment, at least 5 m.
    pub forecast_refit_interval: Duration,
    /// Share of one core the refits may use, 0.01 to 1.
    pub forecast_cpu_budget: f64,
    /// Auto-tuning; `None` with `--no-tuning`.
    pub tuning: Option<TuningSettings>,
    /// The Kubernetes connection.
    pub k8s: K8sSettings,
    /// Leader election; `None` with `--no-leader-election` (this replica then leads alone).
    pub leader: Option<crate::k8s::leader::LeaderSettings>,
    /// The Prometheus client.
    pub prom: PromSettings,
    /// The PromQL-backed external metrics of `--external-rules` (empty without the flag).
    pub external_rules: Vec<crate::domain::external_rules::Rule>,
    /// The external-metrics server metrics we do not own are forwarded to (`--delegate-external-metrics-url`).
    pub delegate: Option<std::sync::Arc<crate::http::delegate::Delegate>>,
    /// The store.
    pub store: StoreConfig,
    /// The alert receivers.
    pub alerting: AlertingSettings,
    /// Node prices for the cost model.
    pub prices: crate::domain::cost::Prices,
    /// Delegated authentication and authorization (on unless `--authn-authz=off`).
    pub auth: crate::auth::AuthSettings,
}

impl TryFrom<&ServeArgs> for ServeSettings {
    type Error = InvalidConfig;

    fn try_from(args: &ServeArgs) -> Result<Self, Self::Error> {
        let mut errors = Errors::default();
        let server = errors.take(ServerSettings::try_from(&args.server));
        let decision = errors.take(args.decision.validate().map(|()| args.decision.to_config()));
        let forecast = errors.take(args.forecast.validate().map(|()| args.forecast.to_config()));
        let k8s = errors.take(K8sSettings::try_from(&args.k8s));
        let leader = errors.take(args.leader.settings());
        let prom = errors.take(PromSettings::try_from(&args.prom));
        let external_rules = errors.take(match &args.external_rules.external_rules {
            Some(path) => crate::prom::rules::load(path),
            None => Ok(Vec::new()),
        });
        let delegate = errors.take(crate::http::delegate::Delegate::from_args(&args.delegate));
        let store = errors.take(StoreConfig::try_from(&args.store));
        let alerting = errors.take(AlertingSettings::try_from(&args.alerting));
        let auth = errors.take(args.auth.settings(true, false));
        let tuning = errors.take(args.tuning.settings());
        errors.check(args.check_own());
        let settings = (|| {
            Some(ServeSettings {
                server: server?,
                decision: decision?,
                tls_cert_file: args.tls_cert_file.clone(),
                tls_key_file: args.tls_key_file.clone(),
                interval: args.interval,
                data_dir: args.data_dir.clone(),
                default_startup_filter: args.default_startup_filter,
                default_target: args.default_target,
                forecast: (!args.no_forecast).then_some(forecast?),
                forecast_refit_interval: args.forecast_refit_interval,
                forecast_cpu_budget: args.forecast_cpu_budget,
                tuning: tuning?,
                k8s: k8s?,
                leader: leader?,
                prom: prom?,
                external_rules: external_rules?,
                delegate: delegate?.map(std::sync::Arc::new),
                store: store?,
                alerting: alerting?,
                prices: args.cost.prices(),
                auth: auth?,
            })
        })();
        errors.finish(settings)
    }
}

impl ServeArgs {
    /// The rules of `serve`'s own flags.
    fn check_own(&self) -> Result<(), InvalidFlag> {
        if !(self.forecast_cpu_budget.is_finite()
            && (0.01..=1.0).contains(&self.forecast_cpu_budget))
        {
            return Err(bad("forecast-cpu-budget", "must be between 0.01 and 1"));
        }
        if self.forecast_refit_interval < Duration::from_secs(300) {
            return Err(bad("forecast-refit-interval", "must be at least 5m"));
        }
        if !(self.default_target.is_finite()
            && self.default_target > 0.0
            && self.default_target <= 100.0)
        {
            return Err(bad("default-target", "must be in (0, 100]"));
        }
        if self.default_startup_filter > Duration::from_secs(3600) {
            return Err(bad("default-startup-filter", "must be at most 1h"));
        }
        validate_interval(self.interval)?;
        for (flag, path) in [
            ("tls-cert-file", &self.tls_cert_file),
            ("tls-key-file", &self.tls_key_file),
        ] {
            if !path.is_file() {
                return Err(bad(
                    flag,
                    format!(
                        "{} is not a readable file (generate one with `smart-autoscaler certs`)",
                        path.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `demo`'s settings, checked.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// Listeners, limits, webhook and extender.
    pub server: ServerSettings,
    /// The decision core.
    pub decision: DecisionConfig,
    /// Tick interval in simulated time, 1 s to 1 h.
    pub interval: Duration,
    /// Simulated seconds per real second, 0.1 to 10000; at 1 the pipeline runs on the wall clock.
    pub speed: f64,
    /// Directory for the generated files and state.
    pub data_dir: PathBuf,
    /// Where the kubeconfig goes; `None` for `<data-dir>/kubeconfig`.
    pub kubeconfig_out: Option<PathBuf>,
    /// Seed of the simulated cluster.
    pub seed: u64,
    /// The workload's time of day at start.
    pub start_at: StartAt,
    /// Days of simulated history seeded into the store, 0-30.
    pub history_days: u32,
    /// Forecasting, unless `--no-forecast`.
    pub forecast: Option<ForecasterConfig>,
    /// Auto-tuning; `None` with `--no-tuning`.
    pub tuning: Option<TuningSettings>,
    /// The alert receivers.
    pub alerting: AlertingSettings,
    /// Node prices for the cost model.
    pub prices: crate::domain::cost::Prices,
    /// Delegated authentication and authorization (off unless `--authn-authz=on`).
    pub auth: crate::auth::AuthSettings,
}

impl TryFrom<&DemoArgs> for DemoSettings {
    type Error = InvalidConfig;

    fn try_from(args: &DemoArgs) -> Result<Self, Self::Error> {
        let mut errors = Errors::default();
        let server = errors.take(ServerSettings::try_from(&args.server));
        let decision = errors.take(args.decision.validate().map(|()| args.decision.to_config()));
        let alerting = errors.take(AlertingSettings::try_from(&args.alerting));
        let forecast = errors.take(args.forecast.validate().map(|()| args.forecast.to_config()));
        let auth = errors.take(args.auth.settings(false, true));
        let tuning = errors.take(args.tuning.settings());
        errors.check(validate_interval(args.interval));
        if !(args.speed.is_finite() && (0.1..=10_000.0).contains(&args.speed)) {
            errors.check(Err(bad("speed", "must be between 0.1 and 10000")));
        }
        if args.history_days > 30 {
            errors.check(Err(bad("history-days", "must be between 0 and 30")));
        }
        let settings = (|| {
            Some(DemoSettings {
                server: ServerSettings {
                    bind_address: args
                        .server
                        .bind_address
                        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
                    ..server?
                },
                decision: decision?,
                interval: args.interval,
                speed: args.speed,
                data_dir: args.data_dir.clone(),
                kubeconfig_out: args.kubeconfig_out.clone(),
                seed: args.seed,
                start_at: args.start_at,
                history_days: args.history_days,
                forecast: (!args.no_forecast).then_some(forecast?),
                tuning: tuning?,
                alerting: alerting?,
                prices: args.cost.prices(),
                auth: auth?,
            })
        })();
        errors.finish(settings)
    }
}

impl CertsArgs {
    /// Validates the `certs` configuration.
    pub fn validate(&self) -> Result<(), InvalidFlag> {
        if self.service.is_empty() || self.namespace.is_empty() {
            return Err(bad("service", "service and namespace must not be empty"));
        }
        if self.days == 0 || self.days > 3650 {
            return Err(bad("cert-days", "must be between 1 and 3650"));
        }
        Ok(())
    }
}

fn validate_interval(interval: Duration) -> Result<(), InvalidFlag> {
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
        return Err(bad("interval", "must be between 1s and 1h"));
    }
    Ok(())
}

/// A command with its settings checked, ready for [`crate::app::run`].
#[derive(Debug, Clone)]
pub enum CommandSettings {
    /// `serve`.
    Serve(Box<ServeSettings>),
    /// `demo`.
    Demo(Box<DemoSettings>),
    /// `certs` (its flags are its settings).
    Certs(CertsArgs),
    /// `simulate` (its flags are its settings).
    Simulate(Box<SimulateArgs>),
    /// `report` (its flags are its settings).
    Report(ReportArgs),
}

impl Command {
    /// Checks every flag of the command, and the rules between them, once: every adapter converts its own flags
    /// (`TryFrom`) and every problem found is reported together.
    pub fn settings(&self) -> Result<CommandSettings, InvalidConfig> {
        let own = |result: Result<(), InvalidFlag>| {
            result.map_err(|e| InvalidConfig {
                errors: vec![e.into()],
            })
        };
        Ok(match self {
            Command::Serve(args) => {
                CommandSettings::Serve(Box::new(ServeSettings::try_from(args.as_ref())?))
            }
            Command::Demo(args) => {
                CommandSettings::Demo(Box::new(DemoSettings::try_from(args.as_ref())?))
            }
            Command::Certs(args) => {
                own(args.validate())?;
                CommandSettings::Certs(args.clone())
            }
            Command::Simulate(args) => {
                own(args.validate())?;
                CommandSettings::Simulate(args.clone())
            }
            Command::Report(args) => {
                if !(args.url.starts_with("http://") || args.url.starts_with("https://")) {
                    own(Err(bad(
                        "url",
                        format!(
                            "{:?} is not an http:// or https:// URL of the metrics port",
                            args.url
                        ),
                    )))?;
                }
                CommandSettings::Report(args.clone())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    /// Parses a command line and checks it, as `main` does.
    fn settings(args: &[&str]) -> Result<CommandSettings, InvalidConfig> {
        Cli::try_parse_from([&["x"], args].concat())
            .expect("the command line parses")
            .command
            .settings()
    }

    /// The flags named by the errors of a command line that must fail.
    fn rejected(args: &[&str]) -> Vec<String> {
        let Err(invalid) = settings(args) else {
            panic!("{args:?} must be rejected")
        };
        invalid
            .errors
            .iter()
            .map(|e| {
                let text = e.to_string();
                let flag = text
                    .strip_prefix("invalid --")
                    .and_then(|rest| rest.split(':').next())
                    .unwrap_or_else(|| panic!("{text:?} does not name its flag"));
                flag.to_string()
            })
            .collect()
    }

    /// Certificate files for `serve`, which must exist at start.
    fn serve_with(dir: &std::path::Path, extra: &[&str]) -> Vec<String> {
        for name in ["tls.crt", "tls.key"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        let mut args: Vec<String> = ["serve", "--tls-cert-file"].map(String::from).to_vec();
        args.push(dir.join("tls.crt").display().to_string());
        args.push("--tls-key-file".into());
        args.push(dir.join("tls.key").display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    #[test]
    fn defaults_convert_for_every_command() {
        let dir = tempfile::tempdir().unwrap();
        let serve = serve_with(dir.path(), &[]);
        let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
        let Ok(CommandSettings::Serve(s)) = settings(&serve) else {
            panic!("serve defaults must convert")
        };
        assert_eq!(s.interval, Duration::from_secs(15));
        assert_eq!(s.k8s.max_staleness, Duration::from_secs(120));
        assert_eq!(
            s.store,
            StoreConfig::from(crate::store::Retention::default())
        );
        assert_eq!(
            s.server.extender,
            crate::domain::extender::ExtenderConfig::default()
        );
        assert!(s.forecast.is_some());
        let Ok(CommandSettings::Serve(s)) =
            settings(&[serve.as_slice(), &["--no-forecast"]].concat())
        else {
            panic!("--no-forecast converts")
        };
        assert!(s.forecast.is_none());
        let Ok(CommandSettings::Demo(d)) = settings(&["demo"]) else {
            panic!("demo defaults must convert")
        };
        assert_eq!(d.server.secure_port, 6443);
        // A demo listens on loopback unless told otherwise; serve, in a pod, on every interface.
        assert_eq!(d.server.bind_address.to_string(), "127.0.0.1");
        assert_eq!(s.server.bind_address.to_string(), "0.0.0.0");
        let Ok(CommandSettings::Demo(d)) = settings(&["demo", "--bind-address", "0.0.0.0"]) else {
            panic!("demo --bind-address converts")
        };
        assert_eq!(d.server.bind_address.to_string(), "0.0.0.0");
        assert_eq!(d.decision.pressure.low_pressure_factor, 1.15);
        assert!(matches!(
            settings(&["certs"]),
            Ok(CommandSettings::Certs(_))
        ));
        assert!(matches!(
            settings(&["simulate", "--scenario", "normal_load"]),
            Ok(CommandSettings::Simulate(_))
        ));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let serve = serve_with(
            dir.path(),
            &[
                "--low-pressure-factor",
                "0.5",
                "--kube-qps",
                "0",
                "--prometheus-url",
                "prometheus:9090",
                "--store-rollup-retention",
                "1h",
                "--max-headers",
                "0",
                "--interval",
                "0s",
            ],
        );
        let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
        assert_eq!(
            rejected(&serve),
            [
                "max-headers",
                "low-pressure-factor",
                "kube-qps",
                "prometheus-url",
                "store-rollup-retention",
                "interval"
            ]
        );
        let Err(invalid) = settings(&serve) else {
            panic!("rejected")
        };
        let message = invalid.to_string();
        assert!(
            message.starts_with("6 settings cannot work:\n  invalid --max-headers"),
            "{message}"
        );
        // One problem reads as one line.
        let Err(one) = settings(&["demo", "--speed", "0"]) else {
            panic!("rejected")
        };
        assert_eq!(
            one.to_string(),
            "invalid --speed: must be between 0.1 and 10000"
        );
    }

    #[test]
    fn demo_defaults_to_the_wall_clock_and_a_workload_day_at_08_45() {
        let demo = |args: &[&str]| match settings(&[&["demo"], args].concat()) {
            Ok(CommandSettings::Demo(d)) => *d,
            other => panic!("{other:?}"),
        };
        let d = demo(&[]);
        assert_eq!(d.speed, 1.0);
        assert_eq!(d.start_at, StartAt::TimeOfDay(8 * 60 + 45));
        assert_eq!(demo(&["--start-at", "now"]).start_at, StartAt::Now);
        assert_eq!(
            demo(&["--start-at", "23:59"]).start_at,
            StartAt::TimeOfDay(23 * 60 + 59)
        );
        let err = Cli::try_parse_from(["x", "demo", "--start-at", "25:00"])
            .expect_err("25:00 is refused")
            .to_string();
        assert!(
            err.contains("not a time of day") && err.contains("`now`"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_alerting_config_fails_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerting.toml");
        std::fs::write(&path, "[[receiver]]\nname = \"x\"\nkind = \"pager\"\n").unwrap();
        let file = path.display().to_string();
        assert_eq!(
            rejected(&["demo", "--alerting-config", &file]),
            ["alerting-config"]
        );
        let Err(invalid) = settings(&["demo", "--alerting-config", &file]) else {
            panic!("rejected")
        };
        let message = invalid.to_string();
        assert!(
            message.starts_with(&format!(
                "invalid --alerting-config: {file}:3: receiver[0].kind: "
            )),
            "{message}"
        );
        std::fs::write(
            &path,
            "[[receiver]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let Ok(CommandSettings::Demo(d)) = settings(&["demo", "--alerting-config", &file]) else {
            panic!("a good file converts")
        };
        assert_eq!(d.alerting.config.unwrap().receivers.len(), 1);
    }

    #[test]
    fn missing_certificates_are_named() {
        assert_eq!(
            rejected(&["serve", "--tls-cert-file", "/nonexistent/tls.crt"]),
            ["tls-cert-file"]
        );
    }

    #[test]
    fn pressure_factors_must_not_invert() {
        assert!(settings(&["demo"]).is_ok());
        let Err(invalid) = settings(&[
            "demo",
            "--low-pressure-factor",
            "0.5",
            "--high-pressure-factor",
            "0.8",
        ]) else {
            panic!("inverted factors must be rejected")
        };
        let message = invalid.to_string();
        assert!(
            message.starts_with("invalid --low-pressure-factor"),
            "{message}"
        );
        assert!(message.contains("--high-pressure-factor"), "{message}");
        // Equal factors switch pressure off: allowed.
        assert!(
            settings(&[
                "demo",
                "--low-pressure-factor",
                "1",
                "--high-pressure-factor",
                "1"
            ])
            .is_ok()
        );
    }

    #[test]
    fn pressure_thresholds_must_be_ordered() {
        assert_eq!(
            rejected(&[
                "demo",
                "--pressure-low-measured",
                "80",
                "--pressure-high-measured",
                "80"
            ]),
            ["pressure-high-measured"]
        );
        assert_eq!(
            rejected(&["demo", "--pressure-low-requested", "95"]),
            ["pressure-high-requested"]
        );
        assert!(
            settings(&[
                "demo",
                "--pressure-low-requested",
                "95",
                "--pressure-high-requested",
                "120"
            ])
            .is_ok()
        );
    }

    #[test]
    fn forecast_lead_must_fit_the_horizon() {
        let simulate = ["simulate", "--scenario", "normal_load"];
        assert!(settings(&[&simulate[..], &["--forecast-lead", "15m"]].concat()).is_ok());
        assert_eq!(
            rejected(&[&simulate[..], &["--forecast-lead", "16m"]].concat()),
            ["forecast-lead"]
        );
        assert!(
            settings(
                &[
                    &simulate[..],
                    &["--forecast-lead", "16m", "--forecast-horizon", "20m"]
                ]
                .concat()
            )
            .is_ok()
        );
    }

    #[test]
    fn rejects_equal_ports() {
        assert_eq!(
            rejected(&["demo", "--secure-port", "9000", "--metrics-port", "9000"]),
            ["metrics-port"]
        );
        // Port 0 picks a free port for each.
        assert!(settings(&["demo", "--secure-port", "0", "--metrics-port", "0"]).is_ok());
    }

    #[test]
    fn simulate_rules_between_flags() {
        assert_eq!(rejected(&["simulate"]), ["trace"]);
        assert_eq!(
            rejected(&[
                "simulate",
                "--scenario",
                "normal_load",
                "--min-replicas",
                "5",
                "--max-replicas",
                "4"
            ]),
            ["min-replicas"]
        );
        assert!(
            settings(&[
                "simulate",
                "--scenario",
                "normal_load",
                "--min-replicas",
                "4",
                "--max-replicas",
                "4"
            ])
            .is_ok()
        );
        // A scenario brings its own timestamps and column: --column and --step would be ignored.
        assert_eq!(
            rejected(&["simulate", "--scenario", "normal_load", "--column", "cpu"]),
            ["column"]
        );
        assert_eq!(
            rejected(&["simulate", "--scenario", "normal_load", "--step", "5m"]),
            ["step"]
        );
        assert!(
            settings(&[
                "simulate", "--trace", "t.csv", "--column", "cpu", "--step", "5m"
            ])
            .is_ok()
        );
        // The short window is checked at start, not after the trace is read.
        assert_eq!(
            rejected(&["simulate", "--trace", "t.csv", "--short-window", "10s"]),
            ["short-window"]
        );
    }

    #[test]
    fn adapter_errors_are_collected_with_their_own_types() {
        let Err(invalid) = settings(&[
            "demo",
            "--extender-measured-weight",
            "0",
            "--extender-requested-weight",
            "0",
        ]) else {
            panic!("rejected")
        };
        assert!(
            matches!(
                invalid.errors.as_slice(),
                [ConfigError::Server(ServerSettingsError::Extender(
                    crate::http::extender::ExtenderSettingsError::NoWeight
                ))]
            ),
            "{invalid:?}"
        );
    }
}
