//! The kube-scheduler HTTP extender on the secure port: `POST /scheduler/filter` and `POST /scheduler/prioritize`
//! (configure `urlPrefix: https://<service>/scheduler`), plus `GET /api/v1/nodes`, which shows the extender's view
//! of every node so its decisions can be checked.
//!
//! Both node-cache modes are served: `NodeNames` in gives `NodeNames` out; a `Nodes` NodeList in gives the
//! passing Node objects out, unchanged. The rules themselves live in [`crate::domain::extender`].
//!
//! What bad input gets (the scheduler treats any non-200 or a non-empty `Error` as a failed call, and skips the
//! extender when it is configured `ignorable: true`; prioritize failures are always skipped):
//!
//! | input | filter | prioritize |
//! |---|---|---|
//! | not JSON at all (syntax error, invalid UTF-8, empty or truncated body) | 400 Status `BadRequest` | 400 Status |
//! | JSON of the wrong shape (no `Pod`, no candidates, both candidate forms, a Node without a name) | 200, `Error` set | 400 Status (a `HostPriorityList` has no `Error` member) |
//! | unknown node names, or no fresh snapshot | pass, never failed (fail open) | neutral score 5 |
//! | body over `--max-body-bytes` | 413 Status | 413 Status |
//!
//! Unknown names and a stale snapshot are logged (info/warn at most once per 10 s of clock time, debug otherwise)
//! and counted in `smart_autoscaler_extender_decisions_total{outcome="pass_no_data"|"no_data"}`.
//!
//! The endpoints are not authenticated, so the recent-placement penalty only counts a prioritize call that follows
//! a filter call for the same pod, as kube-scheduler's do (the rules are in [`PlacementMemory`]); what is counted
//! shows in `smart_autoscaler_extender_placements_total{outcome}`. The memory is bounded by the snapshot's node
//! count and [`rules::MAX_PENDING_FILTERS`], and [`forget_expired`] empties it on a timer, so it shrinks even
//! when no call comes.
//!
//! The handlers never wait on anything but reading the body. The name index of the snapshot is built once per
//! published snapshot; the placement memory sits behind a std `Mutex` that is only held for the synchronous
//! scoring and bookkeeping steps.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Args;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{ApiError, AppState, LimitedBody};
use crate::domain::extender::{
    self as rules, Candidates, DecodeError, ExtenderConfig, ExtenderFilterResult, NamePositions,
    NodeIndex, PlacementMemory, Verdict,
};
use crate::domain::model::{NodeInputs, Snapshot, UnixMillis};
use crate::flags::parse_duration;
use crate::telemetry::Telemetry;

/// Path of the filter verb (`filterVerb: filter` under `urlPrefix: .../scheduler`).
pub const FILTER_PATH: &str = "/scheduler/filter";
/// Path of the prioritize verb (`prioritizeVerb: prioritize`).
pub const PRIORITIZE_PATH: &str = "/scheduler/prioritize";
/// Path of the extender's node view.
pub const NODES_PATH: &str = "/api/v1/nodes";

/// Repeated warnings (stale snapshot, unknown nodes, all-fail fallback) are logged at most this often, in clock
/// time; in between they go to debug, and the metrics count every occurrence.
const LOG_EVERY_MILLIS: i64 = 10_000;
/// How many node names a log line lists before it only gives the count.
const LOG_SAMPLE: usize = 5;
/// How often, in clock time, [`forget_expired`] drops expired placements and filter calls.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Command-line flags of the scheduler extender (not the body of a scheduler call, which
/// [`crate::domain::extender`] decodes).
#[derive(Debug, Clone, Args)]
pub struct SchedulerExtenderArgs {
    /// Filter: a node whose measured CPU utilization (percent of allocatable) is above this fails, unless every
    /// candidate would fail, in which case all pass. Nodes without fresh data never fail.
    #[arg(
        id = "extender_max_cpu_percent",
        long = "extender-max-cpu-percent",
        env = "SMART_AUTOSCALER_EXTENDER_MAX_CPU_PERCENT",
        default_value_t = rules::DEFAULT_MAX_CPU_PERCENT
    )]
    pub max_cpu_percent: f64,

    /// Prioritize: weight of measured CPU headroom in the 0-10 score.
    #[arg(
        id = "extender_measured_weight",
        long = "extender-measured-weight",
        env = "SMART_AUTOSCALER_EXTENDER_MEASURED_WEIGHT",
        default_value_t = rules::DEFAULT_MEASURED_WEIGHT
    )]
    pub measured_weight: f64,

    /// Prioritize: weight of requested CPU headroom (after adding the pod's request) in the 0-10 score.
    #[arg(
        id = "extender_requested_weight",
        long = "extender-requested-weight",
        env = "SMART_AUTOSCALER_EXTENDER_REQUESTED_WEIGHT",
        default_value_t = rules::DEFAULT_REQUESTED_WEIGHT
    )]
    pub requested_weight: f64,

    /// Prioritize: score points taken off a node per pod it recently won, decaying to zero over
    /// --extender-recent-pod-window, so a burst of pods does not pile onto one node before metrics catch up. Only
    /// a prioritize call that follows the filter call for the same pod counts; 0 turns the penalty off.
    #[arg(
        id = "extender_recent_pod_penalty",
        long = "extender-recent-pod-penalty",
        env = "SMART_AUTOSCALER_EXTENDER_RECENT_POD_PENALTY",
        default_value_t = rules::DEFAULT_RECENT_POD_PENALTY
    )]
    pub recent_pod_penalty: f64,

    /// Prioritize: how long a node that won a prioritize call is remembered, e.g. `30s`; `0s` disables the penalty.
    #[arg(
        id = "extender_recent_pod_window",
        long = "extender-recent-pod-window",
        env = "SMART_AUTOSCALER_EXTENDER_RECENT_POD_WINDOW",
        default_value = "30s",
        value_parser = parse_duration
    )]
    pub recent_pod_window: Duration,
}

impl Default for SchedulerExtenderArgs {
    fn default() -> Self {
        SchedulerExtenderArgs {
            max_cpu_percent: rules::DEFAULT_MAX_CPU_PERCENT,
            measured_weight: rules::DEFAULT_MEASURED_WEIGHT,
            requested_weight: rules::DEFAULT_REQUESTED_WEIGHT,
            recent_pod_penalty: rules::DEFAULT_RECENT_POD_PENALTY,
            recent_pod_window: Duration::from_millis(rules::DEFAULT_RECENT_WINDOW_MILLIS as u64),
        }
    }
}

/// A scheduler extender flag that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExtenderSettingsError {
    /// `--extender-max-cpu-percent` out of (0, 100].
    #[error("invalid --extender-max-cpu-percent: {0} is not above 0 and at most 100")]
    MaxCpuPercent(f64),
    /// A weight out of [0, 1000].
    #[error("invalid --{flag}: {value} is not between 0 and 1000")]
    Weight {
        /// `extender-measured-weight` or `extender-requested-weight`.
        flag: &'static str,
        /// The value given.
        value: f64,
    },
    /// Both weights 0: every node would score the same.
    #[error(
        "invalid --extender-measured-weight: --extender-measured-weight and --extender-requested-weight must \
         not both be 0"
    )]
    NoWeight,
    /// `--extender-recent-pod-penalty` out of [0, the largest score].
    #[error("invalid --extender-recent-pod-penalty: {0} is not between 0 and {max}", max = rules::MAX_SCORE)]
    RecentPodPenalty(f64),
    /// `--extender-recent-pod-window` over 10 minutes.
    #[error(
        "invalid --extender-recent-pod-window: {0:?} is over 10m (it stands in for the time metrics take to \
         catch up)"
    )]
    RecentPodWindow(Duration),
}

impl TryFrom<&SchedulerExtenderArgs> for ExtenderConfig {
    type Error = ExtenderSettingsError;

    /// Checks the thresholds and weights, naming the flag to fix, and gives the core configuration.
    fn try_from(args: &SchedulerExtenderArgs) -> Result<Self, Self::Error> {
        if !(args.max_cpu_percent.is_finite()
            && args.max_cpu_percent > 0.0
            && args.max_cpu_percent <= 100.0)
        {
            return Err(ExtenderSettingsError::MaxCpuPercent(args.max_cpu_percent));
        }
        for (flag, value) in [
            ("extender-measured-weight", args.measured_weight),
            ("extender-requested-weight", args.requested_weight),
        ] {
            if !(value.is_finite() && (0.0..=1000.0).contains(&value)) {
                return Err(ExtenderSettingsError::Weight { flag, value });
            }
        }
        if args.measured_weight + args.requested_weight <= 0.0 {
            return Err(ExtenderSettingsError::NoWeight);
        }
        if !(args.recent_pod_penalty.is_finite()
            && (0.0..=rules::MAX_SCORE as f64).contains(&args.recent_pod_penalty))
        {
            return Err(ExtenderSettingsError::RecentPodPenalty(
                args.recent_pod_penalty,
            ));
        }
        if args.recent_pod_window > Duration::from_secs(600) {
            return Err(ExtenderSettingsError::RecentPodWindow(
                args.recent_pod_window,
            ));
        }
        Ok(ExtenderConfig::new(
            args.max_cpu_percent,
            args.measured_weight,
            args.requested_weight,
            args.recent_pod_penalty,
            i64::try_from(args.recent_pod_window.as_millis()).unwrap_or(i64::MAX),
        ))
    }
}

/// Labels of the per-request counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// `filter` or `prioritize`.
    verb: &'static str,
    /// `ok`, `fallback` (every node would have failed), `error` (answered with `Error`) or `bad_request` (400).
    result: &'static str,
}

/// Labels of the per-node decision counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// `filter` or `prioritize`.
    verb: &'static str,
    /// Filter: `pass`, `pass_no_data`, `pass_fallback`, `fail_hot`, `fail_not_ready`. Prioritize: `scored`,
    /// `no_data`.
    outcome: &'static str,
}

/// Labels of the placement counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlacementLabels {
    /// See [`rules::Placement::label`].
    outcome: &'static str,
}

/// The extender's own metrics.
#[derive(Debug, Default)]
struct ExtenderMetrics {
    requests: Family<RequestLabels, Counter>,
    decisions: Family<DecisionLabels, Counter>,
    fallbacks: Counter,
    placements: Family<PlacementLabels, Counter>,
    remembered: Gauge,
    pending: Gauge,
}

impl ExtenderMetrics {
    fn register(&self, telemetry: &Telemetry) {
        telemetry.register(
            "extender_requests",
            "Scheduler extender calls, by verb and result",
            self.requests.clone(),
        );
        telemetry.register(
            "extender_decisions",
            "Scheduler extender per-node decisions, by verb and outcome",
            self.decisions.clone(),
        );
        telemetry.register(
            "extender_all_fail_fallbacks",
            "Filter calls in which every candidate would have failed, so all were passed",
            self.fallbacks.clone(),
        );
        telemetry.register(
            "extender_placements",
            "Prioritize calls by what became of their winner: counted as a placement, or why not",
            self.placements.clone(),
        );
        telemetry.register(
            "extender_recent_placement_nodes",
            "Nodes currently penalized for recently winning a prioritize call (at most the snapshot's node count)",
            self.remembered.clone(),
        );
        telemetry.register(
            "extender_pending_filters",
            "Filter calls waiting for the prioritize call of the same pod",
            self.pending.clone(),
        );
    }

    fn memory_size(&self, memory: &PlacementMemory) {
        self.remembered.set(memory.recent.len() as i64);
        self.pending.set(memory.filters.len() as i64);
    }

    fn request(&self, verb: &'static str, result: &'static str) {
        self.requests
            .get_or_create(&RequestLabels { verb, result })
            .inc();
    }

    fn decisions(&self, verb: &'static str, outcome: &'static str, count: usize) {
        if count > 0 {
            self.decisions
                .get_or_create(&DecisionLabels { verb, outcome })
                .inc_by(count as u64);
        }
    }
}

/// Lets a repeated warning through at most once per [`LOG_EVERY_MILLIS`] of clock time.
#[derive(Debug, Default)]
struct Throttle(AtomicI64);

impl Throttle {
    /// Whether a line would be let through now, without taking the slot.
    fn due(&self, now: UnixMillis) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        // `last == 0` is "never logged"; a clock that stepped back also lets a line through.
        last == 0 || now - last >= LOG_EVERY_MILLIS || now < last
    }

    /// Takes the slot if a line is due.
    fn allow(&self, now: UnixMillis) -> bool {
        let last = self.0.load(Ordering::Relaxed);
        self.due(now)
            && self
                .0
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Shared state of the extender handlers.
#[derive(Debug, Default)]
pub struct ExtenderState {
    config: ExtenderConfig,
    // A std mutex: it is locked only around synchronous steps, never across an `.await`.
    memory: Mutex<PlacementMemory>,
    /// Name positions of the last snapshot seen, rebuilt when the engine publishes a new one.
    positions: Mutex<Option<(Arc<Snapshot>, Arc<NamePositions>)>>,
    metrics: ExtenderMetrics,
    stale_log: Throttle,
    unknown_log: Throttle,
    fallback_log: Throttle,
}

impl ExtenderState {
    /// Builds the state from the checked configuration, registering the extender's metrics.
    pub fn new(config: ExtenderConfig, telemetry: &Telemetry) -> Self {
        let state = ExtenderState {
            config,
            ..Default::default()
        };
        state.metrics.register(telemetry);
        state
    }

    /// The thresholds and weights in use.
    pub fn config(&self) -> &ExtenderConfig {
        &self.config
    }

    /// The current snapshot's nodes if it is fresh, with their name positions (built once per snapshot).
    fn known(&self, snapshot: Option<Arc<Snapshot>>, now: UnixMillis) -> Known {
        let freshness = freshness(snapshot.as_deref(), now);
        let nodes = match snapshot {
            Some(snapshot) if freshness.is_ok() => {
                let mut cache = self
                    .positions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let positions = match cache.as_ref() {
                    Some((seen, positions)) if Arc::ptr_eq(seen, &snapshot) => positions.clone(),
                    _ => {
                        let positions = Arc::new(NamePositions::new(&snapshot.nodes));
                        *cache = Some((snapshot.clone(), positions.clone()));
                        positions
                    }
                };
                Some((snapshot, positions))
            }
            _ => None,
        };
        Known { freshness, nodes }
    }

    /// Recent placements remembered for `node` at `now`, which the prioritize penalty is taken from (for the
    /// dashboard's nodes page).
    pub fn recent_load(&self, node: &str, now: UnixMillis) -> f64 {
        self.memory()
            .recent
            .load(node, now, self.config.recent_window_millis)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, PlacementMemory> {
        // The memory is only ever a hint; a panic elsewhere must not take the extender down with it.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops expired placements and filter calls, and nodes beyond the snapshot's node count.
    fn sweep(&self, node_count: Option<usize>, now: UnixMillis) {
        let mut memory = self.memory();
        memory.sweep(&self.config, node_count, now);
        self.metrics.memory_size(&memory);
    }
}

/// Empties the placement memory on a timer ([`SWEEP_EVERY`] of clock time), so that what has expired is freed
/// even when no further call comes. Runs until `cancel`.
pub async fn forget_expired(app: AppState, cancel: CancellationToken) {
    let period = app
        .clock
        .real_duration(SWEEP_EVERY)
        .max(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let node_count = app.snapshot().map(|s| s.nodes.len());
        app.extender.sweep(node_count, app.clock.now_millis());
    }
}

/// Routes of the extender on the secure port.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(FILTER_PATH, post(filter))
        .route(PRIORITIZE_PATH, post(prioritize))
        .route(NODES_PATH, get(nodes))
}

/// Node measurements older than this many collection intervals are not acted on: the extender treats them as
/// no data (fails open).
pub const STALE_INTERVALS: i64 = 3;

/// Whether the snapshot can be used, and if not why. Stale data is treated as no data (fail open).
fn freshness(snapshot: Option<&Snapshot>, now: UnixMillis) -> Result<(), String> {
    match snapshot {
        None => Err("no snapshot collected yet".to_string()),
        Some(s) if s.is_stale(now, STALE_INTERVALS) => Err(format!(
            "node measurements are {}s old, more than {STALE_INTERVALS} collection intervals",
            s.measured_age_millis(now) / 1000
        )),
        Some(_) => Ok(()),
    }
}

/// What a call knows about the nodes: the fresh snapshot with its name positions, or nothing.
struct Known {
    freshness: Result<(), String>,
    nodes: Option<(Arc<Snapshot>, Arc<NamePositions>)>,
}

impl Known {
    fn index(&self) -> NodeIndex<'_> {
        match &self.nodes {
            Some((snapshot, positions)) => NodeIndex::with_positions(&snapshot.nodes, positions),
            None => NodeIndex::default(),
        }
    }
}

fn sample(names: &[&str]) -> String {
    let mut text = names
        .iter()
        .take(LOG_SAMPLE)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LOG_SAMPLE {
        text.push_str(&format!(" and {} more", names.len() - LOG_SAMPLE));
    }
    text
}

impl ExtenderState {
    /// Logs candidates we cannot judge: all of them when the snapshot is not fresh, else the unknown names.
    /// `no_data` is how many candidates were judged without data; when it is 0 there is nothing to look up.
    fn note_missing_data<'n>(
        &self,
        verb: &'static str,
        pod: &rules::PodToPlace,
        view: &Known,
        names: impl ExactSizeIterator<Item = &'n str>,
        no_data: usize,
        now: UnixMillis,
    ) {
        match &view.freshness {
            Err(why) => {
                let candidates = names.len();
                if self.stale_log.allow(now) {
                    tracing::warn!(verb, %pod, candidates, "{why}: every node passes the filter and scores neutral (fail open)");
                } else {
                    tracing::debug!(verb, %pod, candidates, "{why}: fail open");
                }
            }
            Ok(()) => {
                // Finding the unknown names costs a second look-up per candidate: only pay it when a line will
                // actually be written.
                let loud = self.unknown_log.due(now);
                if no_data == 0 || !(loud || tracing::enabled!(tracing::Level::DEBUG)) {
                    return;
                }
                let known = view.index();
                let unknown: Vec<&str> = names.filter(|n| known.get(n).is_none()).collect();
                if unknown.is_empty() {
                    return;
                }
                let nodes = sample(&unknown);
                if loud && self.unknown_log.allow(now) {
                    tracing::info!(verb, %pod, unknown = unknown.len(), %nodes, "nodes not in the snapshot pass and score neutral (fail open)");
                } else {
                    tracing::debug!(verb, %pod, unknown = unknown.len(), %nodes, "nodes not in the snapshot (fail open)");
                }
            }
        }
    }
}

/// Answers a body that could not be decoded, for the filter verb.
fn filter_rejection(state: &ExtenderState, error: DecodeError) -> Response {
    if error.is_unreadable() {
        state.metrics.request("filter", "bad_request");
        tracing::debug!(%error, "extender filter: unreadable body");
        ApiError::bad_request(error.to_string()).into_response()
    } else {
        state.metrics.request("filter", "error");
        tracing::info!(%error, "extender filter: malformed ExtenderArgs");
        Json(ExtenderFilterResult::error(format!(
            "smart-autoscaler: {error}"
        )))
        .into_response()
    }
}

async fn filter(State(app): State<AppState>, LimitedBody(body): LimitedBody) -> Response {
    let state = &app.extender;
    let request = match rules::decode(&body) {
        Ok(request) => request,
        Err(error) => return filter_rejection(state, error),
    };
    let now = app.clock.now_millis();
    let view = state.known(app.snapshot(), now);
    let known = view.index();
    let names = request.candidates.names();
    let outcome = rules::filter(&state.config, &known, names);
    let no_data = outcome
        .verdicts
        .iter()
        .filter(|v| **v == Verdict::NoData)
        .count();
    state.note_missing_data(
        "filter",
        &request.pod,
        &view,
        names.iter().map(String::as_str),
        no_data,
        now,
    );

    let mut tally = [0usize; 5];
    for verdict in &outcome.verdicts {
        let slot = match verdict {
            _ if outcome.fallback => 2,
            Verdict::Pass => 0,
            Verdict::NoData => 1,
            Verdict::Hot(_) => 3,
            Verdict::NotReady => 4,
        };
        tally[slot] += 1;
    }
    for (outcome, count) in [
        "pass",
        "pass_no_data",
        "pass_fallback",
        "fail_hot",
        "fail_not_ready",
    ]
    .into_iter()
    .zip(tally)
    {
        state.metrics.decisions("filter", outcome, count);
    }

    if state.config.penalizes() {
        let passed = names
            .iter()
            .enumerate()
            .filter(|(i, _)| outcome.passes(*i))
            .map(|(_, name)| name.as_str());
        let mut memory = state.memory();
        memory.filtered(&state.config, &request.pod.uid, passed, now);
        state.metrics.memory_size(&memory);
    }

    let pod = &request.pod;
    if outcome.fallback {
        state.metrics.fallbacks.inc();
        state.metrics.request("filter", "fallback");
        let nodes = sample(&names.iter().map(String::as_str).collect::<Vec<_>>());
        if state.fallback_log.allow(now) {
            tracing::warn!(%pod, candidates = names.len(), %nodes, max_cpu_percent = state.config.max_cpu_percent,
                "every candidate node is hot or NotReady; passing them all rather than leaving the pod unschedulable");
        } else {
            tracing::debug!(%pod, candidates = names.len(), "all-fail fallback");
        }
    } else {
        state.metrics.request("filter", "ok");
        if outcome.failed() > 0 {
            let failed: Vec<&str> = names
                .iter()
                .zip(&outcome.verdicts)
                .filter(|(_, v)| v.fails())
                .map(|(n, _)| n.as_str())
                .collect();
            tracing::debug!(%pod, failed = failed.len(), nodes = %sample(&failed), "extender filter failed nodes");
        }
    }
    Json(rules::filter_result(
        &state.config,
        request.candidates,
        &outcome,
    ))
    .into_response()
}

async fn prioritize(
    State(app): State<AppState>,
    LimitedBody(body): LimitedBody,
) -> Result<Json<Vec<rules::HostPriority>>, ApiError> {
    let state = &app.extender;
    let request = rules::decode(&body).map_err(|error| {
        state.metrics.request("prioritize", "bad_request");
        tracing::debug!(%error, "extender prioritize: bad request");
        ApiError::bad_request(error.to_string())
    })?;
    let now = app.clock.now_millis();
    let view = state.known(app.snapshot(), now);
    let known = view.index();
    let names = match request.candidates {
        Candidates::Names(names) | Candidates::Objects { names, .. } => names,
    };
    let candidates = names.len();
    let (outcome, placement) = {
        let mut memory = state.memory();
        let outcome = rules::prioritize(
            &state.config,
            &known,
            names,
            request.pod.cpu_request_milli,
            &memory.recent,
            now,
        );
        let hosts: Vec<&str> = outcome.priorities.iter().map(|p| p.host.as_str()).collect();
        let winner = outcome.winner.map(|i| hosts[i]);
        let placement =
            memory.prioritized(&state.config, &request.pod.uid, &hosts, winner, &known, now);
        state.metrics.memory_size(&memory);
        (outcome, placement)
    };
    state.note_missing_data(
        "prioritize",
        &request.pod,
        &view,
        outcome.priorities.iter().map(|p| p.host.as_str()),
        outcome.no_data,
        now,
    );
    state.metrics.request("prioritize", "ok");
    state
        .metrics
        .decisions("prioritize", "scored", candidates - outcome.no_data);
    state
        .metrics
        .decisions("prioritize", "no_data", outcome.no_data);
    state
        .metrics
        .placements
        .get_or_create(&PlacementLabels {
            outcome: placement.label(),
        })
        .inc();
    if let Some(winner) = outcome.winner.map(|i| &outcome.priorities[i]) {
        tracing::debug!(pod = %request.pod, candidates, winner = %winner.host, score = winner.score,
            penalized = outcome.penalized, placement = placement.label(), "extender prioritize");
    }
    Ok(Json(outcome.priorities))
}

/// The extender's view of every node in the snapshot: what the filter would decide and the score a pod without
/// a CPU request would get right now (prioritize calls add the pod's own request).
async fn nodes(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snapshot = app
        .snapshot()
        .ok_or_else(|| ApiError::unavailable("no metrics collected yet"))?;
    let now = app.clock.now_millis();
    let state = &app.extender;
    let config = &state.config;
    let fresh = freshness(Some(&snapshot), now).is_ok();
    let judged: Vec<Option<&NodeInputs>> =
        snapshot.nodes.iter().map(|n| fresh.then_some(n)).collect();
    let verdicts: Vec<Verdict> = judged.iter().map(|n| rules::judge(config, *n)).collect();
    let fallback = !verdicts.is_empty() && verdicts.iter().all(|v| v.fails());
    let loads: Vec<f64> = {
        let memory = state.memory();
        snapshot
            .nodes
            .iter()
            .map(|n| {
                memory
                    .recent
                    .load(&n.name, now, config.recent_window_millis)
            })
            .collect()
    };
    let items: Vec<Value> = snapshot
        .nodes
        .iter()
        .zip(&judged)
        .zip(verdicts.iter().zip(&loads))
        .map(|((n, known), (verdict, load))| {
            let base = rules::base_score(config, *known, 0);
            json!({
                "name": n.name,
                "ready": n.ready,
                "schedulable": n.schedulable,
                "allocatable_cpu_milli": n.allocatable_cpu_milli,
                "requested_cpu_milli": n.requested_cpu_milli,
                "measured_cpu_percent": n.measured_cpu_percent,
                "filter": verdict.label(),
                "reason": verdict.reason(config),
                "base_score": base,
                "recent_placements": load,
                "score": rules::final_score(base, config.recent_pod_penalty * load),
            })
        })
        .collect();
    Ok(Json(json!({
        "collected_at_ms": snapshot.collected_at,
        "age_seconds": snapshot.age_millis(now) / 1000,
        "fresh": fresh,
        "all_fail_fallback": fallback,
        "config": {
            "max_cpu_percent": config.max_cpu_percent,
            "measured_weight": config.measured_weight,
            "requested_weight": config.requested_weight,
            "recent_pod_penalty": config.recent_pod_penalty,
            "recent_window_seconds": config.recent_window_millis as f64 / 1000.0,
        },
        "items": items,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_flags_and_convert() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            extender: SchedulerExtenderArgs,
        }
        let parse = |flags: &[&str]| {
            <Cli as clap::Parser>::try_parse_from([&["x"], flags].concat())
                .unwrap()
                .extender
        };
        let parsed = ExtenderConfig::try_from(&parse(&[])).unwrap();
        assert_eq!(
            Ok(parsed),
            ExtenderConfig::try_from(&SchedulerExtenderArgs::default())
        );
        assert_eq!(parsed, ExtenderConfig::default());
        let err =
            ExtenderConfig::try_from(&parse(&["--extender-max-cpu-percent", "0"])).unwrap_err();
        assert_eq!(err, ExtenderSettingsError::MaxCpuPercent(0.0));
        assert!(
            err.to_string()
                .starts_with("invalid --extender-max-cpu-percent"),
            "{err}"
        );
        assert_eq!(
            ExtenderConfig::try_from(&parse(&["--extender-requested-weight", "1001"])),
            Err(ExtenderSettingsError::Weight {
                flag: "extender-requested-weight",
                value: 1001.0
            })
        );
        // The cross-flag rule: one of the two weights must count.
        let both_zero = SchedulerExtenderArgs {
            measured_weight: 0.0,
            requested_weight: 0.0,
            ..Default::default()
        };
        assert_eq!(
            ExtenderConfig::try_from(&both_zero),
            Err(ExtenderSettingsError::NoWeight)
        );
        assert!(ExtenderConfig::try_from(&parse(&["--extender-measured-weight", "0"])).is_ok());
        assert_eq!(
            ExtenderConfig::try_from(&parse(&["--extender-recent-pod-penalty", "11"])),
            Err(ExtenderSettingsError::RecentPodPenalty(11.0))
        );
        let long = SchedulerExtenderArgs {
            recent_pod_window: Duration::from_secs(3600),
            ..Default::default()
        };
        assert_eq!(
            ExtenderConfig::try_from(&long),
            Err(ExtenderSettingsError::RecentPodWindow(Duration::from_secs(
                3600
            )))
        );
        let set =
            ExtenderConfig::try_from(&parse(&["--extender-recent-pod-window", "0s"])).unwrap();
        assert_eq!(set.recent_window_millis, 0);
    }

    #[test]
    fn throttle_lets_one_line_through_per_period() {
        let t = Throttle::default();
        assert!(t.allow(1_000));
        assert!(!t.allow(1_500));
        assert!(t.allow(1_000 + LOG_EVERY_MILLIS));
        assert!(t.allow(10));
    }
}
