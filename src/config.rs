//! Command-line and environment configuration. Every flag has a `SMART_AUTOSCALER_*` environment fallback and
//! is validated once, before anything starts, so a bad setting fails fast with a message naming the flag.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    Demo(DemoArgs),
    /// Generate a CA and a serving certificate for the in-cluster Service and print the caBundle.
    Certs(CertsArgs),
    /// Backtest: replay a trace or scenario through a model of the native HPA (plain vs smart vs oracle).
    Simulate(SimulateArgs),
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
    /// Write replicas and utilization over time for the three runs to this SVG file.
    #[arg(long, env = "SMART_AUTOSCALER_PLOT")]
    pub plot: Option<PathBuf>,
    /// Write every 15-second step of every run (time, replicas, ready pods, demand, true utilization, the metric
    /// the HPA saw) to this CSV file, for a look at why a run scaled when it did.
    #[arg(long, env = "SMART_AUTOSCALER_TIMELINE")]
    pub timeline: Option<PathBuf>,

    #[command(flatten)]
    pub decision: DecisionArgs,

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
    /// Validates the `simulate` configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
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
            return Err(bad("min-replicas", "must not exceed --max-replicas"));
        }
        Ok(())
    }
}

/// Listener, limit and timing settings shared by `serve` and `demo`.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address both listeners bind to.
    #[arg(long, env = "SMART_AUTOSCALER_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,

    /// HTTPS port for the external metrics API (and the webhook and extender). 0 picks a free port.
    #[arg(long, env = "SMART_AUTOSCALER_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,

    /// Plain-HTTP port for /metrics, health probes and the JSON API. 0 picks a free port.
    #[arg(long, env = "SMART_AUTOSCALER_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// Largest request body accepted, in bytes; larger requests get a 413 Status.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest request head (request line plus headers, as HTTP/1.1 writes them) accepted, in bytes; larger heads
    /// get a 431 Status. Heads over four times this (at least 64 KiB) are cut off by the HTTP parser itself, with
    /// an empty 431 and the connection closed.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most header fields in one request; more get a 431 Status (over four times this, the HTTP parser's own
    /// empty 431).
    #[arg(long, env = "SMART_AUTOSCALER_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Time limit for handling one request, e.g. `10s`; slower requests get a 504 Status.
    #[arg(long, env = "SMART_AUTOSCALER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long a connection may stay open with no request in flight, e.g. `90s`: from accept (TLS handshake
    /// included) to its first request, and from each response to the next request, HTTP/1.1 and HTTP/2 alike.
    /// The default is kube-apiserver's own, chosen there to match the idle timeout of Go's default HTTP client.
    #[arg(long, env = "SMART_AUTOSCALER_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections each listener (secure and metrics) holds at most. When full, or when the process runs out
    /// of file descriptors, the connection idle the longest is closed to make room; a new connection is refused
    /// only when every open one has a request in flight.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,

    /// PEM CA that signs the aggregator's front-proxy client certificate (the `requestheader-client-ca-file`).
    /// When set, client certificates are requested (not required) and verified against it.
    #[arg(long, env = "SMART_AUTOSCALER_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// How often the serving certificate, its key and the client CA file are re-read (100ms-1h); when they
    /// change, new connections get the new ones and open connections keep theirs.
    #[arg(long, env = "SMART_AUTOSCALER_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    #[command(flatten)]
    pub webhook: crate::http::webhook::WebhookArgs,

    #[command(flatten)]
    pub extender: crate::http::extender::ExtenderArgs,
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
    pub fn validate(&self) -> Result<(), ConfigError> {
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

    /// The forecaster settings these flags describe.
    pub fn to_config(&self) -> crate::domain::forecast::online::ForecasterConfig {
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
    pub fn validate(&self) -> Result<(), ConfigError> {
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

    /// The core's configuration.
    pub fn to_config(&self) -> crate::domain::decision::DecisionConfig {
        use crate::domain::decision::{DecisionConfig, PressureConfig};
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
    pub k8s: crate::k8s::K8sArgs,

    #[command(flatten)]
    pub prom: crate::prom::PromArgs,

    #[command(flatten)]
    pub store: crate::store::StoreArgs,
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

    /// Simulated time runs this many times faster than real time.
    #[arg(long, env = "SMART_AUTOSCALER_SPEED", default_value_t = 10.0)]
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

/// A configuration that cannot work, with the flag to fix.
#[derive(Debug, thiserror::Error)]
#[error("invalid --{flag}: {reason}")]
pub struct ConfigError {
    /// The flag at fault, without dashes.
    pub flag: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

fn bad(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        reason: reason.into(),
    }
}

impl ServerArgs {
    /// Checks limits that would make the server unusable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.webhook.validate()?;
        self.extender.validate()?;
        if self.max_body_bytes < 1024 {
            return Err(bad("max-body-bytes", "must be at least 1024"));
        }
        if self.max_header_bytes < 8192 {
            return Err(bad(
                "max-header-bytes",
                "must be at least 8192 (hyper's minimum buffer)",
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(bad("request-timeout", "must be greater than zero"));
        }
        if self.max_headers == 0 {
            return Err(bad("max-headers", "must be at least 1"));
        }
        if self.idle_timeout < Duration::from_secs(1) {
            return Err(bad("idle-timeout", "must be at least 1s"));
        }
        if self.max_connections == 0 {
            return Err(bad("max-connections", "must be at least 1"));
        }
        if self.secure_port != 0 && self.secure_port == self.metrics_port {
            return Err(bad("metrics-port", "must differ from --secure-port"));
        }
        if self.tls_reload_interval < Duration::from_millis(100)
            || self.tls_reload_interval > Duration::from_secs(3600)
        {
            return Err(bad("tls-reload-interval", "must be between 100ms and 1h"));
        }
        if let Some(path) = &self.requestheader_client_ca_file
            && !path.is_file()
        {
            return Err(bad(
                "requestheader-client-ca-file",
                format!("{} is not a readable file", path.display()),
            ));
        }
        Ok(())
    }
}

impl ServeArgs {
    /// Validates the whole `serve` configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.decision.validate()?;
        self.k8s.validate()?;
        self.prom.validate()?;
        self.store.validate()?;
        self.forecast.validate()?;
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

impl DemoArgs {
    /// Validates the whole `demo` configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.decision.validate()?;
        validate_interval(self.interval)?;
        if !(self.speed.is_finite() && (0.1..=10_000.0).contains(&self.speed)) {
            return Err(bad("speed", "must be between 0.1 and 10000"));
        }
        Ok(())
    }
}

impl CertsArgs {
    /// Validates the `certs` configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.service.is_empty() || self.namespace.is_empty() {
            return Err(bad("service", "service and namespace must not be empty"));
        }
        if self.days == 0 || self.days > 3650 {
            return Err(bad("cert-days", "must be between 1 and 3650"));
        }
        Ok(())
    }
}

fn validate_interval(interval: Duration) -> Result<(), ConfigError> {
    if interval < Duration::from_secs(1) || interval > Duration::from_secs(3600) {
        return Err(bad("interval", "must be between 1s and 1h"));
    }
    Ok(())
}

/// Parses durations such as `500ms`, `15s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 500ms, 15s, 5m or 1h"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86400.0,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' in '{text}' (use ms, s, m, h or d)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn pressure_factors_must_not_invert() {
        let demo = |extra: &[&str]| {
            let mut args = vec!["x", "demo"];
            args.extend_from_slice(extra);
            let Command::Demo(args) = Cli::try_parse_from(args).unwrap().command else {
                panic!("demo expected")
            };
            args.validate()
        };
        assert!(demo(&[]).is_ok());
        let err = demo(&[
            "--low-pressure-factor",
            "0.5",
            "--high-pressure-factor",
            "0.8",
        ])
        .unwrap_err();
        assert_eq!(err.flag, "low-pressure-factor");
        assert!(
            err.reason.contains("high-pressure-factor"),
            "{}",
            err.reason
        );
        // Equal factors switch pressure off: allowed.
        assert!(demo(&["--low-pressure-factor", "1", "--high-pressure-factor", "1"]).is_ok());
    }

    #[test]
    fn rejects_equal_ports() {
        let cli = Cli::try_parse_from([
            "x",
            "demo",
            "--secure-port",
            "9000",
            "--metrics-port",
            "9000",
        ])
        .unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("demo expected")
        };
        let err = args.validate().unwrap_err();
        assert_eq!(err.flag, "metrics-port");
    }
}
