//! The Prometheus adapter: fills [`Usage`] for a tick with a fixed number of cluster-wide instant queries (five,
//! however many deployments there are), and reads per-deployment CPU history for bootstrap with chunked range
//! queries.
//!
//! Every query has a time limit per attempt, transient failures (unreachable, timeouts, HTTP 5xx/429, Prometheus
//! `timeout`/`unavailable`/`internal` errors) are retried with jittered exponential backoff, and a
//! [`CircuitBreaker`] stops calling Prometheus for a cool-down after repeated failures, then lets one trial
//! through. The HTTP client is reqwest with rustls on the process-wide crypto provider (aws-lc-rs).
//!
//! Bootstrap groups pods to Deployments by name (`<deployment>-<pod-template-hash>-<suffix>`, see
//! [`queries::deployment_of_pod`]) rather than by joining kube-state-metrics' owner series: the name is on every
//! cAdvisor series, the grouping needs no ReplicaSet-to-Deployment join that breaks when old ReplicaSets are
//! garbage-collected, and Prometheus can narrow the result with one regex. History values are CPU utilization,
//! percent of requests (kube-state-metrics' `kube_pod_container_resource_requests`), summed over the pods that
//! have both a usage and a request at that instant: the unit the store keeps and the HPA scales on.

pub mod breaker;
pub mod queries;
pub mod rules;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_http_query::reqwest;
use prometheus_http_query::response::{Data, InstantVector, RangeVector};

use crate::clock::{Clock, SystemClock};
use crate::domain::cluster::{PodRef, Usage};
use crate::domain::model::{DeploymentKey, UnixMillis};

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use queries::QueryTemplates;

/// Prometheus flags of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct PromArgs {
    /// Base URL of the Prometheus HTTP API (a path prefix such as `http://thanos/prometheus` is kept).
    #[arg(
        long,
        env = "SMART_AUTOSCALER_PROMETHEUS_URL",
        default_value = "http://localhost:9090"
    )]
    pub prometheus_url: String,

    /// File with a bearer token sent as `Authorization: Bearer ...`; re-read on every tick so rotated
    /// (projected service-account) tokens are picked up.
    #[arg(long, env = "SMART_AUTOSCALER_PROMETHEUS_TOKEN_FILE")]
    pub prometheus_token_file: Option<PathBuf>,

    /// PEM CA bundle that signs Prometheus's serving certificate; when set, only these roots are trusted.
    #[arg(long, env = "SMART_AUTOSCALER_PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,

    /// Time limit for one attempt of one query, e.g. `10s` (also sent to Prometheus as its evaluation timeout).
    #[arg(long, env = "SMART_AUTOSCALER_PROMETHEUS_TIMEOUT", default_value = "10s", value_parser = crate::flags::parse_duration)]
    pub prometheus_timeout: Duration,

    /// Time limit for one attempt of one history range query (the bootstrap of a new deployment's history,
    /// sent in batches of deployments), e.g. `60s`. Longer than --prometheus-timeout: a month of history for a
    /// batch of pods is far more work for Prometheus than a tick's instant queries.
    #[arg(long, env = "SMART_AUTOSCALER_PROMETHEUS_HISTORY_TIMEOUT", default_value = "60s", value_parser = crate::flags::parse_duration)]
    pub prometheus_history_timeout: Duration,

    /// JSON file overriding the PromQL templates and label names (fields of `prom::QueryTemplates`: pod_cpu_10m,
    /// pod_cpu_5m, pod_cpu_1m and its window length pod_cpu_short_window_seconds, pod_memory, node_cpu, history_cpu,
    /// history_cpu_requests, namespace_label, pod_label, node_label).
    #[arg(long, env = "SMART_AUTOSCALER_PROMETHEUS_QUERIES")]
    pub prometheus_queries: Option<PathBuf>,
}

/// A `serve` Prometheus flag that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PromSettingsError {
    /// `--prometheus-url` is not an http(s) URL.
    #[error("invalid --prometheus-url: '{0}' must start with http:// or https://")]
    Url(String),
    /// A time limit of zero would fail every query.
    #[error("invalid --{flag}: must be greater than zero")]
    ZeroTimeout {
        /// `prometheus-timeout` or `prometheus-history-timeout`.
        flag: &'static str,
    },
    /// `--prometheus-token-file` or `--prometheus-ca-file` is not a file.
    #[error("invalid --{flag}: {} is not a readable file", path.display())]
    NotAFile {
        /// The flag, without dashes.
        flag: &'static str,
        /// The path given.
        path: PathBuf,
    },
    /// `--prometheus-queries` cannot be read or used.
    #[error("invalid --prometheus-queries: {0}")]
    Queries(String),
}

impl TryFrom<&PromArgs> for PromSettings {
    type Error = PromSettingsError;

    /// Checks the flags before anything starts (URL shape, time limits, that the files exist and the query file
    /// parses) and gives the client settings, with default retry and breaker settings.
    fn try_from(args: &PromArgs) -> Result<Self, Self::Error> {
        let url = args.prometheus_url.to_ascii_lowercase();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(PromSettingsError::Url(args.prometheus_url.clone()));
        }
        for (flag, timeout) in [
            ("prometheus-timeout", args.prometheus_timeout),
            (
                "prometheus-history-timeout",
                args.prometheus_history_timeout,
            ),
        ] {
            if timeout.is_zero() {
                return Err(PromSettingsError::ZeroTimeout { flag });
            }
        }
        for (flag, path) in [
            ("prometheus-token-file", &args.prometheus_token_file),
            ("prometheus-ca-file", &args.prometheus_ca_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(PromSettingsError::NotAFile {
                    flag,
                    path: path.clone(),
                });
            }
        }
        let templates = match &args.prometheus_queries {
            Some(path) => QueryTemplates::from_file(path).map_err(PromSettingsError::Queries)?,
            None => QueryTemplates::default(),
        };
        Ok(PromSettings {
            url: args.prometheus_url.clone(),
            token_file: args.prometheus_token_file.clone(),
            ca_file: args.prometheus_ca_file.clone(),
            timeout: args.prometheus_timeout,
            history_timeout: args.prometheus_history_timeout,
            templates,
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        })
    }
}

/// Everything a [`PromClient`] needs.
#[derive(Debug, Clone)]
pub struct PromSettings {
    /// Base URL.
    pub url: String,
    /// Bearer token file, re-read on every call.
    pub token_file: Option<PathBuf>,
    /// PEM CA bundle; only these roots are trusted when set.
    pub ca_file: Option<PathBuf>,
    /// Time limit of one attempt of an instant query.
    pub timeout: Duration,
    /// Time limit of one attempt of a history range query.
    pub history_timeout: Duration,
    /// PromQL.
    pub templates: QueryTemplates,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Circuit breaker.
    pub breaker: BreakerConfig,
}

impl PromSettings {
    /// Settings for `url` with defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        PromSettings {
            url: url.into(),
            token_file: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            history_timeout: Duration::from_secs(60),
            templates: QueryTemplates::default(),
            retry: RetryPolicy::default(),
            breaker: BreakerConfig::default(),
        }
    }
}

/// Retries of transient failures: `attempts` tries in all, the n-th retry after
/// `min(initial_backoff * 2^(n-1), max_backoff)` scaled by a random factor in [0.5, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, including the first (at least 1).
    pub attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Largest delay between tries.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// Delay after failed try number `attempt` (1-based), scaled by `jitter` (clamped to [0, 1]).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let doublings = attempt.saturating_sub(1).min(20);
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff);
        base.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Why Prometheus data could not be had.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// A setting cannot work (bad URL, unreadable token or CA file, bad query file, bad step).
    #[error("Prometheus configuration: {0}")]
    Config(String),
    /// The circuit breaker refuses calls after repeated failures.
    #[error(
        "not calling Prometheus: circuit breaker open after repeated failures, next try at {retry_at} (unix ms)"
    )]
    CircuitOpen {
        /// Earliest time of the next call.
        retry_at: UnixMillis,
    },
    /// An attempt took longer than the timeout.
    #[error("Prometheus query {query} timed out after {timeout:?}")]
    Timeout {
        /// Which query.
        query: &'static str,
        /// The limit.
        timeout: Duration,
    },
    /// Prometheus could not be reached or the connection broke.
    #[error("Prometheus query {query}: cannot reach Prometheus: {message}")]
    Unreachable {
        /// Which query.
        query: &'static str,
        /// What the transport said.
        message: String,
    },
    /// An HTTP error status without a Prometheus error body (a proxy, an auth failure, an overload).
    #[error("Prometheus query {query}: HTTP {status}")]
    Http {
        /// Which query.
        query: &'static str,
        /// The status code.
        status: u16,
    },
    /// Prometheus answered with an API error.
    #[error("Prometheus query {query} failed ({error_type}): {message}")]
    Rejected {
        /// Which query.
        query: &'static str,
        /// Prometheus's `errorType`.
        error_type: String,
        /// Prometheus's `error`.
        message: String,
        /// Whether trying again may help (`timeout`, `unavailable`, `internal`, `canceled`).
        transient: bool,
    },
    /// The response is not the Prometheus API's, or not the shape the query should give.
    #[error("Prometheus query {query}: unusable response: {message}")]
    Decode {
        /// Which query.
        query: &'static str,
        /// What was wrong.
        message: String,
    },
}

impl PromError {
    /// Whether the same call may succeed if tried again soon.
    pub fn is_transient(&self) -> bool {
        match self {
            PromError::Timeout { .. } | PromError::Unreachable { .. } => true,
            PromError::Http { status, .. } => *status >= 500 || *status == 429,
            PromError::Rejected { transient, .. } => *transient,
            PromError::Config(_) | PromError::CircuitOpen { .. } | PromError::Decode { .. } => {
                false
            }
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

fn map_error(
    query: &'static str,
    timeout: Duration,
    error: prometheus_http_query::Error,
) -> PromError {
    use prometheus_http_query::Error;
    match error {
        Error::Prometheus(e) => PromError::Rejected {
            query,
            error_type: e.error_type().to_string(),
            message: e.message().to_string(),
            transient: e.is_timeout() || e.is_unavailable() || e.is_internal() || e.is_canceled(),
        },
        Error::Client(c) => match c.inner() {
            Some(r) if r.is_timeout() => PromError::Timeout { query, timeout },
            Some(r) if r.status().is_some() => PromError::Http {
                query,
                status: r.status().map_or(0, |s| s.as_u16()),
            },
            Some(r) if r.is_decode() => PromError::Decode {
                query,
                message: format!("{c}: {}", error_chain(r)),
            },
            Some(r) => PromError::Unreachable {
                query,
                message: error_chain(r),
            },
            None => PromError::Decode {
                query,
                message: c.to_string(),
            },
        },
        Error::ParseUrl(e) => PromError::Config(error_chain(&e)),
        other => PromError::Decode {
            query,
            message: other.to_string(),
        },
    }
}

/// The Prometheus client.
pub struct PromClient {
    client: prometheus_http_query::Client,
    templates: QueryTemplates,
    token_file: Option<PathBuf>,
    timeout: Duration,
    history_timeout: Duration,
    retry: RetryPolicy,
    breaker: Mutex<CircuitBreaker>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PromClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromClient")
            .field("url", &self.client.base_url().as_str())
            .field("timeout", &self.timeout)
            .field("breaker", &self.breaker_state())
            .finish_non_exhaustive()
    }
}

impl PromClient {
    /// Builds the client. Reads the CA file now; the token file is read on every call.
    pub fn new(settings: PromSettings) -> Result<PromClient, PromError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(settings.timeout)
            // The longest a request may take; each query kind has its own, shorter or equal, limit (`with_timeout`).
            .timeout(settings.timeout.max(settings.history_timeout))
            .no_proxy();
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                PromError::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                PromError::Config(format!("CA file {}: {}", path.display(), error_chain(&e)))
            })?;
            if certs.is_empty() {
                return Err(PromError::Config(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| {
            PromError::Config(format!("building the HTTP client: {}", error_chain(&e)))
        })?;
        let url = settings.url.trim_end_matches('/');
        let client = prometheus_http_query::Client::from(http, url).map_err(|e| {
            PromError::Config(format!("--prometheus-url {url}: {}", error_chain(&e)))
        })?;
        Ok(PromClient {
            client,
            templates: settings.templates,
            token_file: settings.token_file,
            timeout: settings.timeout,
            history_timeout: settings.history_timeout,
            retry: settings.retry,
            breaker: Mutex::new(CircuitBreaker::new(settings.breaker)),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for the breaker's time in [`PromClient::backfill`] (collect takes its time as an argument).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The templates in use.
    pub fn templates(&self) -> &QueryTemplates {
        &self.templates
    }

    /// The circuit breaker's state.
    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state()
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, CircuitBreaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn authorization(&self) -> Result<Option<reqwest::header::HeaderValue>, PromError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let token = tokio::fs::read_to_string(path).await.map_err(|e| {
            PromError::Config(format!("cannot read token file {}: {e}", path.display()))
        })?;
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| {
                PromError::Config(format!(
                    "token file {} holds characters not allowed in a header",
                    path.display()
                ))
            })?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    /// Runs `call` unless the breaker refuses, and tells the breaker how it went.
    async fn guarded<T>(
        &self,
        now: UnixMillis,
        call: impl Future<Output = Result<T, PromError>>,
    ) -> Result<T, PromError> {
        self.lock_breaker()
            .acquire(now)
            .map_err(|r| PromError::CircuitOpen {
                retry_at: r.retry_at,
            })?;
        let result = call.await;
        let mut breaker = self.lock_breaker();
        match &result {
            Ok(_) => {
                if breaker.state()
                    != (BreakerState::Closed {
                        consecutive_failures: 0,
                    })
                {
                    tracing::info!("Prometheus answers again; circuit breaker closed");
                }
                breaker.record_success();
            }
            Err(PromError::Config(_)) => {}
            Err(error) => {
                let was_closed = matches!(breaker.state(), BreakerState::Closed { .. });
                if breaker.record_failure(now) {
                    // A failed trial reopens it every cool-down (one interval): said once, then at debug level.
                    if was_closed {
                        tracing::warn!(%error, state = ?breaker.state(), "Prometheus circuit breaker opened");
                    } else {
                        tracing::debug!(%error, state = ?breaker.state(), "Prometheus circuit breaker reopened");
                    }
                }
            }
        }
        result
    }

    /// Tries `attempt` up to the policy's number of times while it fails transiently.
    async fn retrying<T, F, Fut>(&self, query: &'static str, mut attempt: F) -> Result<T, PromError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, PromError>>,
    {
        let mut tries = 1;
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(error) if error.is_transient() && tries < self.retry.attempts.max(1) => {
                    let delay = self.retry.delay(tries, rand::random_range(0.5..=1.0));
                    tracing::debug!(query, %error, ?delay, "retrying Prometheus query");
                    tokio::time::sleep(delay).await;
                    tries += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    async fn with_timeout<T>(
        query: &'static str,
        timeout: Duration,
        call: impl Future<Output = Result<T, prometheus_http_query::Error>>,
    ) -> Result<T, PromError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map_err(|e| map_error(query, timeout, e)),
            Err(_) => Err(PromError::Timeout { query, timeout }),
        }
    }

    async fn instant(
        &self,
        name: &'static str,
        promql: &str,
        at: UnixMillis,
        auth: &Option<reqwest::header::HeaderValue>,
    ) -> Result<Vec<InstantVector>, PromError> {
        self.retrying(name, || async {
            let mut builder = self
                .client
                .query(promql)
                .query("time", format!("{:.3}", at as f64 / 1000.0))
                .timeout(self.timeout.as_millis() as i64);
            if let Some(value) = auth {
                builder = builder.header(reqwest::header::AUTHORIZATION, value.clone());
            }
            let result = Self::with_timeout(name, self.timeout, builder.get()).await?;
            match result.into_inner().0 {
                Data::Vector(v) => Ok(v),
                other => Err(PromError::Decode {
                    query: name,
                    message: format!("expected an instant vector, got {}", data_kind(&other)),
                }),
            }
        })
        .await
    }

    async fn range(
        &self,
        name: &'static str,
        promql: &str,
        (start, end, step): (i64, i64, i64),
        auth: &Option<reqwest::header::HeaderValue>,
    ) -> Result<Vec<RangeVector>, PromError> {
        self.retrying(name, || async {
            let mut builder = self
                .client
                .query_range(promql, start, end, step as f64)
                .timeout(self.history_timeout.as_millis() as i64);
            if let Some(value) = auth {
                builder = builder.header(reqwest::header::AUTHORIZATION, value.clone());
            }
            // POST: the deployment regexes can make the query too long for a URL.
            let result = Self::with_timeout(name, self.history_timeout, builder.post()).await?;
            match result.into_inner().0 {
                Data::Matrix(m) => Ok(m),
                other => Err(PromError::Decode {
                    query: name,
                    message: format!("expected a range vector, got {}", data_kind(&other)),
                }),
            }
        })
        .await
    }

    /// Collects the cluster's usage at `now` with five instant queries (pod CPU over 10 minutes, 5 minutes and
    /// the short window, pod memory, node CPU), sent concurrently. Fails as a whole if any of them fails after retries.
    pub async fn collect(&self, now: UnixMillis) -> Result<Usage, PromError> {
        self.guarded(now, async {
            let auth = self.authorization().await?;
            let t = &self.templates;
            // Each response becomes its small map as soon as it arrives, so the decoded vectors (a label map
            // and strings per series) of the five are never all held at once.
            let pods = async |name, promql| {
                self.instant(name, promql, now, &auth)
                    .await
                    .map(|v| pod_values(v, t))
            };
            let (
                (pod_cpu_10m, r10),
                (pod_cpu_5m, r5),
                (pod_cpu_1m, r1),
                (pod_memory_bytes, rm),
                (node_cpu_percent, rn),
            ) = tokio::try_join!(
                pods("pod_cpu_10m", &t.pod_cpu_10m),
                pods("pod_cpu_5m", &t.pod_cpu_5m),
                pods("pod_cpu_1m", &t.pod_cpu_1m),
                pods("pod_memory", &t.pod_memory),
                async {
                    self.instant("node_cpu", &t.node_cpu, now, &auth)
                        .await
                        .map(|v| node_values(v, &t.node_label))
                },
            )?;
            Ok(Usage {
                pod_cpu_10m,
                pod_cpu_5m,
                pod_cpu_1m,
                pod_memory_bytes,
                node_cpu_percent,
                rejected_samples: r10 + r5 + r1 + rm + rn,
            })
        })
        .await
    }

    /// CPU utilization history of one deployment, percent of requests, at `step` from `from` to `to`
    /// (see [`PromClient::backfill_many`]).
    pub async fn backfill(
        &self,
        deployment: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
        step: Duration,
    ) -> Result<Vec<(UnixMillis, f64)>, PromError> {
        let mut all = self
            .backfill_many(std::slice::from_ref(deployment), from, to, step)
            .await?;
        Ok(all.remove(deployment).unwrap_or_default())
    }

    /// CPU utilization history of these deployments, percent of requests, evaluated every `step` (whole seconds)
    /// from `from` to `to`. Two range queries per chunk of at most [`queries::MAX_POINTS_PER_QUERY`] points
    /// (pod usage and pod requests), whatever the number of deployments. A deployment with no data is absent.
    pub async fn backfill_many(
        &self,
        deployments: &[DeploymentKey],
        from: UnixMillis,
        to: UnixMillis,
        step: Duration,
    ) -> Result<BTreeMap<DeploymentKey, Vec<(UnixMillis, f64)>>, PromError> {
        let usage = self
            .backfill_usage_many(deployments, from, to, step)
            .await?;
        Ok(usage
            .into_iter()
            .map(|(key, points)| {
                let utilization = points
                    .iter()
                    .map(|p| (p.at, p.used_cores / p.requested_cores * 100.0))
                    .collect();
                (key, utilization)
            })
            .collect())
    }

    /// Like [`PromClient::backfill_many`], with the CPU used and requested (cores) behind each utilization, so
    /// callers can tell demand from capacity: under an HPA the utilization stays near the target while demand
    /// and the pod count move together.
    pub async fn backfill_usage_many(
        &self,
        deployments: &[DeploymentKey],
        from: UnixMillis,
        to: UnixMillis,
        step: Duration,
    ) -> Result<BTreeMap<DeploymentKey, Vec<UsagePoint>>, PromError> {
        if step.subsec_nanos() != 0 || step.is_zero() {
            return Err(PromError::Config(format!(
                "backfill step must be a whole number of seconds, got {step:?}"
            )));
        }
        if deployments.is_empty() {
            return Ok(BTreeMap::new());
        }
        let step = step.as_secs() as i64;
        let t = &self.templates;
        let usage_q = queries::history_query(&t.history_cpu, deployments);
        let requests_q = queries::history_query(&t.history_cpu_requests, deployments);
        let wanted: HashSet<(&str, &str)> = deployments
            .iter()
            .map(|d| (d.namespace.as_str(), d.name.as_str()))
            .collect();
        // (deployment, time) -> (usage, requests) over pods with both.
        let mut sums: BTreeMap<(DeploymentKey, UnixMillis), (f64, f64)> = BTreeMap::new();
        let chunks = queries::chunk_range(
            queries::ceil_seconds(from),
            to.div_euclid(1000),
            step,
            queries::MAX_POINTS_PER_QUERY,
        );
        for (start, end) in chunks {
            let now = self.clock.now_millis();
            let (usage, requests) = self
                .guarded(now, async {
                    let auth = self.authorization().await?;
                    tokio::try_join!(
                        self.range("history_cpu", &usage_q, (start, end, step), &auth),
                        self.range(
                            "history_cpu_requests",
                            &requests_q,
                            (start, end, step),
                            &auth
                        ),
                    )
                })
                .await?;
            let mut pod_requests: HashMap<PodRef, HashMap<UnixMillis, f64>> = HashMap::new();
            for series in requests {
                let (labels, samples) = series.into_inner();
                let Some(pod) = pod_ref(&labels, t) else {
                    continue;
                };
                let entry = pod_requests.entry(pod).or_default();
                for s in samples.iter().filter(|s| s.value().is_finite()) {
                    *entry.entry(millis(s.timestamp())).or_default() += s.value();
                }
            }
            for series in usage {
                let (labels, samples) = series.into_inner();
                let Some(pod) = pod_ref(&labels, t) else {
                    continue;
                };
                let Some(name) = queries::deployment_of_pod(&pod.1) else {
                    continue;
                };
                if !wanted.contains(&(pod.0.as_str(), name)) {
                    continue;
                }
                let Some(requests) = pod_requests.get(&pod) else {
                    continue;
                };
                let key = DeploymentKey::new(pod.0.as_str(), name);
                for s in samples.iter().filter(|s| s.value().is_finite()) {
                    let at = millis(s.timestamp());
                    if let Some(r) = requests.get(&at) {
                        let sum = sums.entry((key.clone(), at)).or_default();
                        sum.0 += s.value();
                        sum.1 += r;
                    }
                }
            }
        }
        let mut out: BTreeMap<DeploymentKey, Vec<UsagePoint>> = BTreeMap::new();
        for ((key, at), (used, requested)) in sums {
            if requested > 0.0 {
                out.entry(key).or_default().push(UsagePoint {
                    at,
                    used_cores: used,
                    requested_cores: requested,
                });
            }
        }
        Ok(out)
    }
}

/// CPU of one deployment at one time of a backfill, over the pods that had both usage and requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsagePoint {
    /// When.
    pub at: UnixMillis,
    /// CPU used, cores.
    pub used_cores: f64,
    /// CPU requested, cores (above zero).
    pub requested_cores: f64,
}

fn data_kind(data: &Data) -> &'static str {
    match data {
        Data::Vector(_) => "an instant vector",
        Data::Matrix(_) => "a range vector",
        Data::Scalar(_) => "a scalar",
    }
}

fn millis(seconds: f64) -> UnixMillis {
    (seconds * 1000.0).round() as UnixMillis
}

fn pod_ref(labels: &HashMap<String, String>, t: &QueryTemplates) -> Option<PodRef> {
    Some((
        labels.get(&t.namespace_label)?.clone(),
        labels.get(&t.pod_label)?.clone(),
    ))
}

/// Whether a sample can be a CPU or memory measurement: usage is never NaN, infinite or negative, and a value
/// that is (a broken exporter, a counter reset mis-handled by a recording rule) must not pass for one.
fn is_measurement(value: f64) -> bool {
    value.is_finite() && value >= 0.0
}

/// Per-pod values and the number of samples rejected by [`is_measurement`]; series without the labels are
/// skipped, several series of one pod (a template without `sum by`) are added up. A pod with any rejected
/// series has no value: the sum of the rest would be a fresh, too-low reading.
fn pod_values(vector: Vec<InstantVector>, t: &QueryTemplates) -> (HashMap<PodRef, f64>, usize) {
    let mut out = HashMap::with_capacity(vector.len());
    let mut poisoned = Vec::new();
    let mut rejected = 0;
    for series in vector {
        let value = series.sample().value();
        let Some(pod) = pod_ref(series.metric(), t) else {
            rejected += usize::from(!is_measurement(value));
            continue;
        };
        if is_measurement(value) {
            *out.entry(pod).or_insert(0.0) += value;
        } else {
            rejected += 1;
            poisoned.push(pod);
        }
    }
    for pod in &poisoned {
        out.remove(pod);
    }
    (out, rejected)
}

/// Per-node values keyed by the node label without a `:port` suffix, and the number of samples rejected by
/// [`is_measurement`]; several series of one node are averaged.
fn node_values(vector: Vec<InstantVector>, label: &str) -> (HashMap<String, f64>, usize) {
    let mut sums: HashMap<String, (f64, u32)> = HashMap::new();
    let mut rejected = 0;
    for series in vector {
        let value = series.sample().value();
        if !is_measurement(value) {
            rejected += 1;
            continue;
        }
        if let Some(node) = series.metric().get(label) {
            let e = sums
                .entry(queries::strip_port(node).to_string())
                .or_default();
            e.0 += value;
            e.1 += 1;
        }
    }
    let values = sums
        .into_iter()
        .map(|(k, (sum, n))| (k, sum / f64::from(n)))
        .collect();
    (values, rejected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_http_query::response::PromqlResult;

    fn vector(json: &str) -> Vec<InstantVector> {
        let r: PromqlResult = serde_json::from_str(json).unwrap();
        r.into_inner().0.into_vector().unwrap()
    }

    #[test]
    fn pod_and_node_values_are_keyed_by_labels() {
        let t = QueryTemplates::default();
        let v = vector(
            r#"{"resultType":"vector","result":[
                {"metric":{"namespace":"shop","pod":"a"},"value":[1,"0.25"]},
                {"metric":{"namespace":"shop","pod":"a","container":"sidecar"},"value":[1,"0.05"]},
                {"metric":{"namespace":"shop","pod":"b"},"value":[1,"NaN"]},
                {"metric":{"namespace":"shop","pod":"d"},"value":[1,"-1e308"]},
                {"metric":{"namespace":"shop","pod":"e"},"value":[1,"-Inf"]},
                {"metric":{"namespace":"shop","pod":"f","container":"app"},"value":[1,"0.5"]},
                {"metric":{"namespace":"shop","pod":"f","container":"sidecar"},"value":[1,"NaN"]},
                {"metric":{"pod":"c"},"value":[1,"1"]}]}"#,
        );
        let (pods, rejected) = pod_values(v, &t);
        assert_eq!(
            pods.len(),
            1,
            "{pods:?}: f's sum without its NaN series would be too low"
        );
        assert_eq!(
            rejected, 4,
            "NaN, -1e308, -Inf and f's NaN are not measurements"
        );
        assert!((pods[&("shop".to_string(), "a".to_string())] - 0.30).abs() < 1e-12);

        let v = vector(
            r#"{"resultType":"vector","result":[
                {"metric":{"instance":"n1:9100"},"value":[1,"40"]},
                {"metric":{"instance":"n1:9101"},"value":[1,"60"]},
                {"metric":{"instance":"n2"},"value":[1,"+Inf"]},
                {"metric":{"instance":"n4"},"value":[1,"-3"]},
                {"metric":{"node":"n3"},"value":[1,"1"]}]}"#,
        );
        let (nodes, rejected) = node_values(v, "instance");
        assert_eq!(nodes, HashMap::from([("n1".to_string(), 50.0)]));
        assert_eq!(rejected, 2);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let p = RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
        };
        assert_eq!(p.delay(1, 1.0), Duration::from_millis(100));
        assert_eq!(p.delay(2, 1.0), Duration::from_millis(200));
        assert_eq!(p.delay(3, 1.0), Duration::from_millis(350));
        assert_eq!(p.delay(40, 1.0), Duration::from_millis(350));
        assert_eq!(p.delay(2, 0.5), Duration::from_millis(100));
        assert_eq!(p.delay(2, 7.0), Duration::from_millis(200));
    }

    #[test]
    fn transient_errors_are_the_retryable_ones() {
        let http = |status| PromError::Http { query: "q", status };
        assert!(http(503).is_transient());
        assert!(http(429).is_transient());
        assert!(!http(401).is_transient());
        assert!(
            PromError::Timeout {
                query: "q",
                timeout: Duration::from_secs(1)
            }
            .is_transient()
        );
        assert!(
            !PromError::Decode {
                query: "q",
                message: String::new()
            }
            .is_transient()
        );
        assert!(!PromError::CircuitOpen { retry_at: 0 }.is_transient());
    }

    #[test]
    fn args_convert_to_settings() {
        let mut args = PromArgs {
            prometheus_url: "localhost:9090".into(),
            prometheus_token_file: None,
            prometheus_ca_file: None,
            prometheus_timeout: Duration::from_secs(10),
            prometheus_history_timeout: Duration::from_secs(60),
            prometheus_queries: None,
        };
        let e = PromSettings::try_from(&args).unwrap_err();
        assert_eq!(e, PromSettingsError::Url("localhost:9090".into()));
        assert!(e.to_string().starts_with("invalid --prometheus-url"), "{e}");
        args.prometheus_url = "http://localhost:9090/".into();
        let settings = PromSettings::try_from(&args).unwrap();
        assert_eq!(settings.url, "http://localhost:9090/");
        assert_eq!(settings.timeout, Duration::from_secs(10));
        assert_eq!(settings.history_timeout, Duration::from_secs(60));
        assert_eq!(settings.retry, RetryPolicy::default());
        args.prometheus_token_file = Some("/nonexistent/token".into());
        let e = PromSettings::try_from(&args).unwrap_err().to_string();
        assert!(e.starts_with("invalid --prometheus-token-file"), "{e}");
        assert!(e.contains("/nonexistent/token"), "{e}");
        args.prometheus_token_file = None;
        args.prometheus_timeout = Duration::ZERO;
        assert_eq!(
            PromSettings::try_from(&args).unwrap_err(),
            PromSettingsError::ZeroTimeout {
                flag: "prometheus-timeout"
            }
        );
        args.prometheus_timeout = Duration::from_secs(10);
        args.prometheus_history_timeout = Duration::ZERO;
        assert_eq!(
            PromSettings::try_from(&args).unwrap_err(),
            PromSettingsError::ZeroTimeout {
                flag: "prometheus-history-timeout"
            }
        );
        args.prometheus_history_timeout = Duration::from_secs(60);
        args.prometheus_queries = Some("/nonexistent/queries.json".into());
        let e = PromSettings::try_from(&args).unwrap_err();
        assert!(matches!(e, PromSettingsError::Queries(_)), "{e}");
        assert!(e.to_string().contains("/nonexistent/queries.json"), "{e}");
    }

    #[test]
    fn client_rejects_bad_settings_with_the_reason() {
        let e = PromClient::new(PromSettings::new("not a url")).unwrap_err();
        assert!(matches!(e, PromError::Config(_)), "{e}");
        let mut s = PromSettings::new("https://prometheus:9090");
        s.ca_file = Some("/nonexistent/ca.pem".into());
        let e = PromClient::new(s).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        assert!(PromClient::new(PromSettings::new("http://127.0.0.1:9090/prefix/")).is_ok());
    }
}
