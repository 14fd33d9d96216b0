//! Scheduler extender decisions (pure): the kube-scheduler wire types, which candidate nodes fail the filter, how
//! candidates are scored, and the short memory of recent placements that spreads bursts of pods.
//!
//! The rules, in one place:
//! - **Fail open.** A candidate we have no fresh data for (not in the snapshot, or the snapshot is stale) is never
//!   failed and gets a neutral score. The extender must never be the reason a pod cannot be scheduled.
//! - **Filter.** A known node fails when it is NotReady, or when its measured CPU utilization is over
//!   [`ExtenderConfig::max_cpu_percent`]. If that would fail *every* candidate, all of them pass instead
//!   ([`FilterOutcome::fallback`]): a cluster that is hot everywhere still has to run its pods.
//! - **Prioritize.** `0..=10`: a weighted mean of measured headroom and requested headroom (after adding the pod's
//!   own CPU request), minus a penalty for nodes that recently won a prioritize call, because the measurements lag
//!   a burst of pods by a collection interval.
//! - **What counts as a placement** ([`PlacementMemory`]). The endpoints are not authenticated, so a prioritize
//!   call alone proves nothing. A win is remembered only when the call looks like kube-scheduler's: a filter call
//!   for the same pod UID came first (within [`PAIRING_WINDOW_MILLIS`]), every prioritize candidate passed that
//!   filter, there are at least two candidates (the scheduler never scores a single feasible node), and the
//!   winner is a node of the snapshot. Each filter call vouches for one prioritize call.
//! - **Bounded memory.** Remembered nodes are at most the snapshot's node count, waiting filter calls at most
//!   [`MAX_PENDING_FILTERS`] holding [`MAX_PENDING_NAMES`] name hashes, and [`PlacementMemory::sweep`] drops
//!   whatever has expired, so the memory empties on its own when calls stop.
//!
//! Nothing here reads a clock or does IO: callers pass `now` and the snapshot's nodes in.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::{NodeInputs, UnixMillis};
use crate::pod::{ObjectOr, PodSpec, Resource, null_as_default};

/// Lowest score an extender may give (`MinExtenderPriority`).
pub const MIN_SCORE: i64 = 0;
/// Highest score an extender may give (`MaxExtenderPriority`); the scheduler does not clamp, so neither may we
/// exceed it.
pub const MAX_SCORE: i64 = 10;
/// The score of a node we know nothing fresh about: the middle, so it is neither preferred nor avoided.
pub const NEUTRAL_SCORE: f64 = (MAX_SCORE as f64) / 2.0;

/// Default [`ExtenderConfig::max_cpu_percent`].
pub const DEFAULT_MAX_CPU_PERCENT: f64 = 90.0;
/// Default [`ExtenderConfig::measured_weight`].
pub const DEFAULT_MEASURED_WEIGHT: f64 = 2.0;
/// Default [`ExtenderConfig::requested_weight`].
pub const DEFAULT_REQUESTED_WEIGHT: f64 = 1.0;
/// Default [`ExtenderConfig::recent_pod_penalty`].
pub const DEFAULT_RECENT_POD_PENALTY: f64 = 3.0;
/// Default [`ExtenderConfig::recent_window_millis`].
pub const DEFAULT_RECENT_WINDOW_MILLIS: i64 = 30_000;

/// Prefix of every reason we put in `FailedNodes`, so `kubectl describe pod` says who refused the node.
const REASON_PREFIX: &str = "smart-autoscaler";
/// Placements remembered per node at most; beyond this the penalty is saturated anyway at any useful setting.
const MAX_PLACEMENTS_PER_NODE: usize = 64;
/// How long a filter call waits for the prioritize call of the same pod. kube-scheduler sends it right after the
/// later extenders' filter calls (each bounded by its `httpTimeout`, 5 s by default) and its own score plugins.
pub const PAIRING_WINDOW_MILLIS: i64 = 10_000;
/// Filter calls waiting for their prioritize call, at most; the oldest is dropped to make room. The scheduler
/// runs one scheduling cycle at a time, so only a flood gets near this, and it can only cost placements.
pub const MAX_PENDING_FILTERS: usize = 1024;
/// Passing node names held by all waiting filter calls together, at most (8-byte hashes: 512 KiB).
pub const MAX_PENDING_NAMES: usize = 1 << 16;

// ------------------------------------------------------------------------------------------------------------
// Wire types (kube-scheduler `extender/v1`): no json tags upstream, so the members are PascalCase.
// ------------------------------------------------------------------------------------------------------------

/// kube-scheduler's `ExtenderArgs`: the body of both the filter and the prioritize call. (Named for what it is
/// here, the wire form of a call; `http::extender` has the command-line arguments.)
///
/// Go's decoder matches member names case-insensitively, so besides PascalCase the camelCase and lower-case
/// spellings are accepted too. `Pod` is read as the partial [`Pod`]; `Nodes` stays raw JSON, because Node
/// objects are echoed back exactly as received.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderCall {
    /// The pod being scheduled (a full `v1.Pod`, read partially).
    #[serde(alias = "pod", default)]
    pub pod: Option<ObjectOr<Pod>>,
    /// Candidate nodes as a `v1.NodeList` (`nodeCacheCapable: false`), else `null`.
    #[serde(alias = "nodes", default)]
    pub nodes: Option<Value>,
    /// Candidate node names (`nodeCacheCapable: true`), else `null`.
    #[serde(alias = "nodeNames", alias = "nodenames", default)]
    pub node_names: Option<Vec<String>>,
}

/// The metadata of the pod being placed that the extender reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PodMeta {
    /// `namespace`.
    pub namespace: String,
    /// `name`.
    pub name: String,
    /// `uid`.
    pub uid: String,
}

/// The pod being placed, as sent: metadata and the partial [`PodSpec`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Pod {
    /// `metadata`.
    #[serde(deserialize_with = "null_as_default")]
    pub metadata: PodMeta,
    /// `spec`.
    #[serde(deserialize_with = "null_as_default")]
    pub spec: PodSpec,
}

/// `ExtenderFilterResult`: the answer to a filter call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExtenderFilterResult {
    /// Passing nodes as a `v1.NodeList`, when the request carried Node objects.
    pub nodes: Option<Value>,
    /// Passing node names, when the request carried names.
    pub node_names: Option<Vec<String>>,
    /// Failed nodes and why (preemption might help).
    pub failed_nodes: BTreeMap<String, String>,
    /// Failed nodes preemption cannot help; we never use it, but the scheduler expects the member.
    pub failed_and_unresolvable_nodes: BTreeMap<String, String>,
    /// Non-empty when the whole call failed.
    pub error: String,
}

impl ExtenderFilterResult {
    /// A result that reports a failed call. With `ignorable: true` the scheduler skips the extender.
    pub fn error(message: impl Into<String>) -> Self {
        ExtenderFilterResult {
            error: message.into(),
            ..Default::default()
        }
    }
}

/// `HostPriority`: one entry of the prioritize answer (`HostPriorityList` is a JSON array of these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostPriority {
    /// Node name.
    pub host: String,
    /// Score, `0..=10`.
    pub score: i64,
}

/// Why a request could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON at all (syntax error, invalid UTF-8, truncated or empty body): the body is unreadable.
    #[error("request body is not valid JSON: {0}")]
    Unreadable(serde_json::Error),
    /// JSON, but not an `ExtenderArgs` ([`ExtenderCall`]).
    #[error("request is not an ExtenderArgs: {0}")]
    Shape(String),
}

impl DecodeError {
    /// Whether the body was unreadable (answered 400) rather than the wrong shape (answered in-band).
    pub fn is_unreadable(&self) -> bool {
        matches!(self, DecodeError::Unreadable(_))
    }
}

/// The pod being placed, as far as the extender cares.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodToPlace {
    /// Namespace (may be empty in hand-written requests).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid` (empty when missing): pairs a prioritize call with the filter call for the same pod.
    pub uid: String,
    /// CPU the scheduler reserves for the pod, milli-cores ([`PodSpec::scheduler_request`]).
    pub cpu_request_milli: i64,
}

impl std::fmt::Display for PodToPlace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.name.is_empty() {
            "<unnamed>"
        } else {
            &self.name
        };
        write!(f, "{}/{name}", self.namespace)
    }
}

/// The candidates of a request, in the form they came in (the answer must use the same form).
#[derive(Debug, Clone, PartialEq)]
pub enum Candidates {
    /// `nodeCacheCapable: true`: names only.
    Names(Vec<String>),
    /// `nodeCacheCapable: false`: the NodeList without its items (metadata, kind, apiVersion: echoed), the items
    /// exactly as received, and their names in the same order.
    Objects {
        /// The NodeList members other than `items`.
        list: Map<String, Value>,
        /// The Node objects.
        items: Vec<Value>,
        /// `metadata.name` of each item.
        names: Vec<String>,
    },
}

impl Candidates {
    /// The candidate names, in request order.
    pub fn names(&self) -> &[String] {
        match self {
            Candidates::Names(names) | Candidates::Objects { names, .. } => names,
        }
    }
}

/// A decoded, validated request.
#[derive(Debug, Clone, PartialEq)]
pub struct ExtenderRequest {
    /// The pod being placed.
    pub pod: PodToPlace,
    /// The candidate nodes.
    pub candidates: Candidates,
}

/// Decodes a request body. Invalid JSON is [`DecodeError::Unreadable`]; valid JSON that is not a usable
/// `ExtenderArgs` (missing `Pod`, no candidates, both candidate forms, nodes without names) is
/// [`DecodeError::Shape`].
pub fn decode(body: &[u8]) -> Result<ExtenderRequest, DecodeError> {
    let args: ExtenderCall = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::Shape(e.to_string()),
        _ => DecodeError::Unreadable(e),
    })?;
    args.into_request()
}

fn shape(message: impl Into<String>) -> DecodeError {
    DecodeError::Shape(message.into())
}

impl ExtenderCall {
    /// Validates the arguments and splits them into the pod and the candidates.
    pub fn into_request(self) -> Result<ExtenderRequest, DecodeError> {
        let pod = match self.pod {
            Some(ObjectOr::Object(pod)) => PodToPlace {
                cpu_request_milli: pod.spec.scheduler_request(Resource::Cpu),
                namespace: pod.metadata.namespace,
                name: pod.metadata.name,
                uid: pod.metadata.uid,
            },
            Some(ObjectOr::Other) => return Err(shape("Pod must be a v1.Pod object")),
            None => return Err(shape("Pod is missing")),
        };
        let candidates = match (self.node_names, self.nodes) {
            (Some(names), None) => Candidates::Names(names),
            (None, Some(Value::Object(mut list))) => {
                let items = match list.remove("items") {
                    Some(Value::Array(items)) => items,
                    // Go marshals an empty slice field as null.
                    Some(Value::Null) | None => Vec::new(),
                    Some(_) => return Err(shape("Nodes.items must be an array of v1.Node")),
                };
                let names = items
                    .iter()
                    .enumerate()
                    .map(|(i, node)| {
                        node.get("metadata")
                            .and_then(|m| m.get("name"))
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .ok_or_else(|| shape(format!("Nodes.items[{i}] has no metadata.name")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Candidates::Objects { list, items, names }
            }
            (None, Some(_)) => return Err(shape("Nodes must be a v1.NodeList object")),
            (None, None) => {
                return Err(shape(
                    "neither NodeNames nor Nodes is set; one of them must list the candidate nodes",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(shape(
                    "both NodeNames and Nodes are set; kube-scheduler sends exactly one of them",
                ));
            }
        };
        Ok(ExtenderRequest { pod, candidates })
    }
}

// ------------------------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------------------------

/// Thresholds and weights of the extender. Build it with [`ExtenderConfig::new`], which makes any input safe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExtenderConfig {
    /// A known node whose measured CPU utilization (percent of allocatable) is above this fails the filter.
    pub max_cpu_percent: f64,
    /// Weight of measured headroom in the score.
    pub measured_weight: f64,
    /// Weight of requested headroom in the score.
    pub requested_weight: f64,
    /// Score points taken off per recent placement (decaying linearly over the window).
    pub recent_pod_penalty: f64,
    /// How long a placement is remembered, in milliseconds; 0 disables the penalty.
    pub recent_window_millis: i64,
}

impl Default for ExtenderConfig {
    fn default() -> Self {
        ExtenderConfig {
            max_cpu_percent: DEFAULT_MAX_CPU_PERCENT,
            measured_weight: DEFAULT_MEASURED_WEIGHT,
            requested_weight: DEFAULT_REQUESTED_WEIGHT,
            recent_pod_penalty: DEFAULT_RECENT_POD_PENALTY,
            recent_window_millis: DEFAULT_RECENT_WINDOW_MILLIS,
        }
    }
}

fn finite_or(value: f64, fallback: f64) -> f64 {
    if value.is_finite() { value } else { fallback }
}

impl ExtenderConfig {
    /// Builds a configuration, replacing values that cannot work (NaN, negative weights, both weights zero) with
    /// the defaults. Flag validation reports such values to the user; this only guarantees the core never sees
    /// them.
    pub fn new(
        max_cpu_percent: f64,
        measured_weight: f64,
        requested_weight: f64,
        recent_pod_penalty: f64,
        recent_window_millis: i64,
    ) -> Self {
        let mut measured_weight = finite_or(measured_weight, DEFAULT_MEASURED_WEIGHT).max(0.0);
        let mut requested_weight = finite_or(requested_weight, DEFAULT_REQUESTED_WEIGHT).max(0.0);
        if measured_weight + requested_weight <= 0.0 {
            measured_weight = DEFAULT_MEASURED_WEIGHT;
            requested_weight = DEFAULT_REQUESTED_WEIGHT;
        }
        ExtenderConfig {
            max_cpu_percent: finite_or(max_cpu_percent, DEFAULT_MAX_CPU_PERCENT),
            measured_weight,
            requested_weight,
            recent_pod_penalty: finite_or(recent_pod_penalty, DEFAULT_RECENT_POD_PENALTY)
                .clamp(0.0, MAX_SCORE as f64),
            recent_window_millis: recent_window_millis.max(0),
        }
    }
}

// ------------------------------------------------------------------------------------------------------------
// Filter
// ------------------------------------------------------------------------------------------------------------

/// Positions of a node list by name: built once per snapshot and shared by every call on it, so a call with
/// 5,000 candidates pays for 5,000 look-ups, not for rebuilding the map.
#[derive(Debug, Clone, Default)]
pub struct NamePositions(HashMap<String, usize>);

impl NamePositions {
    /// Maps every name in `nodes` to its position (the last one wins on a duplicate name).
    pub fn new(nodes: &[NodeInputs]) -> Self {
        NamePositions(
            nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.name.clone(), i))
                .collect(),
        )
    }
}

/// The snapshot's nodes by name. Build it from an empty slice when the snapshot is missing or stale: every
/// candidate is then unknown, which is exactly the fail-open behaviour.
#[derive(Debug, Default)]
pub struct NodeIndex<'a> {
    nodes: &'a [NodeInputs],
    positions: std::borrow::Cow<'a, NamePositions>,
}

impl<'a> NodeIndex<'a> {
    /// Indexes `nodes` by name (the last one wins on a duplicate name).
    pub fn new(nodes: &'a [NodeInputs]) -> Self {
        NodeIndex {
            nodes,
            positions: std::borrow::Cow::Owned(NamePositions::new(nodes)),
        }
    }

    /// Uses positions built earlier from the same `nodes`. Should they not match, a name only resolves to a node
    /// that really has that name, so a mismatch can make a node unknown (fail open) but never the wrong node.
    pub fn with_positions(nodes: &'a [NodeInputs], positions: &'a NamePositions) -> Self {
        NodeIndex {
            nodes,
            positions: std::borrow::Cow::Borrowed(positions),
        }
    }

    /// The node called `name`, if known.
    pub fn get(&self, name: &str) -> Option<&'a NodeInputs> {
        let position = *self.positions.0.get(name)?;
        self.nodes.get(position).filter(|n| n.name == name)
    }

    /// How many nodes are indexed.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is known (no fresh snapshot).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// What the filter thinks of one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Known and fine.
    Pass,
    /// No fresh data about it: passes (fail open).
    NoData,
    /// Measured CPU utilization (percent) over the limit.
    Hot(f64),
    /// The node's Ready condition is not True.
    NotReady,
}

impl Verdict {
    /// Whether this verdict fails the node (before the all-fail fallback).
    pub fn fails(self) -> bool {
        matches!(self, Verdict::Hot(_) | Verdict::NotReady)
    }

    /// A short label for metrics and the nodes API.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::NoData => "pass_no_data",
            Verdict::Hot(_) => "fail_hot",
            Verdict::NotReady => "fail_not_ready",
        }
    }

    /// The reason shown in `FailedNodes` (and by `kubectl describe pod`), for failing verdicts.
    pub fn reason(self, config: &ExtenderConfig) -> Option<String> {
        match self {
            Verdict::Hot(measured) => Some(format!(
                "{REASON_PREFIX}: measured CPU utilization {measured:.1}% is over the {}% limit",
                config.max_cpu_percent
            )),
            Verdict::NotReady => Some(format!("{REASON_PREFIX}: node is NotReady")),
            Verdict::Pass | Verdict::NoData => None,
        }
    }
}

/// Judges one candidate. `None` means we have no fresh data about it.
pub fn judge(config: &ExtenderConfig, node: Option<&NodeInputs>) -> Verdict {
    let Some(node) = node else {
        return Verdict::NoData;
    };
    if !node.ready {
        return Verdict::NotReady;
    }
    match node.measured_cpu_percent {
        Some(m) if m.is_finite() && m > config.max_cpu_percent => Verdict::Hot(m),
        Some(m) if m.is_finite() => Verdict::Pass,
        // Known but not measured: nothing to hold against it.
        _ => Verdict::NoData,
    }
}

/// The filter's decision over all candidates.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterOutcome {
    /// One verdict per candidate, in candidate order.
    pub verdicts: Vec<Verdict>,
    /// Every candidate would have failed, so all of them pass instead.
    pub fallback: bool,
}

impl FilterOutcome {
    /// Whether candidate `i` passes.
    pub fn passes(&self, i: usize) -> bool {
        self.fallback || !self.verdicts[i].fails()
    }

    /// How many candidates fail.
    pub fn failed(&self) -> usize {
        if self.fallback {
            0
        } else {
            self.verdicts.iter().filter(|v| v.fails()).count()
        }
    }
}

/// Filters `names` against the known nodes. Never fails every candidate (see [`FilterOutcome::fallback`]).
pub fn filter<S: AsRef<str>>(
    config: &ExtenderConfig,
    known: &NodeIndex<'_>,
    names: &[S],
) -> FilterOutcome {
    let verdicts: Vec<Verdict> = names
        .iter()
        .map(|name| judge(config, known.get(name.as_ref())))
        .collect();
    let fallback = !verdicts.is_empty() && verdicts.iter().all(|v| v.fails());
    FilterOutcome { verdicts, fallback }
}

/// Applies a filter outcome to the request's candidates and builds the answer in the same form: names in,
/// names out; Node objects in, the passing objects out, unchanged and in order.
pub fn filter_result(
    config: &ExtenderConfig,
    candidates: Candidates,
    outcome: &FilterOutcome,
) -> ExtenderFilterResult {
    let mut failed_nodes = BTreeMap::new();
    let mut note_failure = |i: usize, name: &str| {
        if !outcome.passes(i)
            && let Some(reason) = outcome.verdicts[i].reason(config)
        {
            failed_nodes.insert(name.to_string(), reason);
        }
    };
    let (nodes, node_names) = match candidates {
        Candidates::Names(names) => {
            let mut passed = Vec::with_capacity(names.len());
            for (i, name) in names.into_iter().enumerate() {
                note_failure(i, &name);
                if outcome.passes(i) {
                    passed.push(name);
                }
            }
            (None, Some(passed))
        }
        Candidates::Objects {
            mut list,
            items,
            names,
        } => {
            let mut passed = Vec::with_capacity(items.len());
            for (i, (item, name)) in items.into_iter().zip(&names).enumerate() {
                note_failure(i, name);
                if outcome.passes(i) {
                    passed.push(item);
                }
            }
            list.insert("items".to_string(), Value::Array(passed));
            (Some(Value::Object(list)), None)
        }
    };
    ExtenderFilterResult {
        nodes,
        node_names,
        failed_nodes,
        failed_and_unresolvable_nodes: BTreeMap::new(),
        error: String::new(),
    }
}

// ------------------------------------------------------------------------------------------------------------
// Prioritize
// ------------------------------------------------------------------------------------------------------------

/// The score of one candidate before the recent-placement penalty, in `0.0..=10.0`.
///
/// A weighted mean of measured headroom (`100% - measured`) and requested headroom (allocatable minus requests
/// minus this pod's request, over allocatable). A known node without a CPU sample is scored on requests alone; a
/// NotReady node scores 0; a node we know nothing fresh about scores [`NEUTRAL_SCORE`].
pub fn base_score(config: &ExtenderConfig, node: Option<&NodeInputs>, pod_cpu_milli: i64) -> f64 {
    let Some(node) = node else {
        return NEUTRAL_SCORE;
    };
    if !node.ready {
        return MIN_SCORE as f64;
    }
    let requested_headroom = if node.allocatable_cpu_milli > 0 {
        let free = node.allocatable_cpu_milli as f64
            - node.requested_cpu_milli as f64
            - pod_cpu_milli.max(0) as f64;
        (free / node.allocatable_cpu_milli as f64).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let measured_headroom = node
        .measured_cpu_percent
        .filter(|m| m.is_finite())
        .map(|m| ((100.0 - m) / 100.0).clamp(0.0, 1.0));
    let (weighted, weights) = match measured_headroom {
        Some(h) => (
            config.measured_weight * h + config.requested_weight * requested_headroom,
            config.measured_weight + config.requested_weight,
        ),
        None => (requested_headroom, 1.0),
    };
    if weights <= 0.0 {
        return NEUTRAL_SCORE;
    }
    (MAX_SCORE as f64 * weighted / weights).clamp(MIN_SCORE as f64, MAX_SCORE as f64)
}

/// The final integer score: base minus penalty, rounded, in `0..=10`.
pub fn final_score(base: f64, penalty: f64) -> i64 {
    let raw = finite_or(base, NEUTRAL_SCORE) - finite_or(penalty, 0.0).max(0.0);
    (raw.round() as i64).clamp(MIN_SCORE, MAX_SCORE)
}

/// The outcome of a prioritize call.
#[derive(Debug, Clone, PartialEq)]
pub struct PrioritizeOutcome {
    /// One entry per candidate, in candidate order.
    pub priorities: Vec<HostPriority>,
    /// Index of the candidate remembered as "just received a pod" (the best score; first on a tie).
    pub winner: Option<usize>,
    /// Candidates scored without fresh data.
    pub no_data: usize,
    /// Candidates whose score a recent placement lowered.
    pub penalized: usize,
}

/// Scores every candidate, taking the penalty of `recent` placements off.
///
/// Nothing is recorded here: whether the winner counts as a placement is [`PlacementMemory::prioritized`]'s call.
pub fn prioritize(
    config: &ExtenderConfig,
    known: &NodeIndex<'_>,
    names: Vec<String>,
    pod_cpu_milli: i64,
    recent: &RecentPlacements,
    now: UnixMillis,
) -> PrioritizeOutcome {
    let mut no_data = 0;
    let mut penalized = 0;
    let mut best: Option<(usize, i64)> = None;
    let priorities: Vec<HostPriority> = names
        .into_iter()
        .enumerate()
        .map(|(i, host)| {
            let node = known.get(&host);
            if node.is_none_or(|n| n.measured_cpu_percent.is_none()) {
                no_data += 1;
            }
            let penalty =
                config.recent_pod_penalty * recent.load(&host, now, config.recent_window_millis);
            if penalty > 0.0 {
                penalized += 1;
            }
            let score = final_score(base_score(config, node, pod_cpu_milli), penalty);
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
            HostPriority { host, score }
        })
        .collect();
    let winner = best.map(|(i, _)| i);
    PrioritizeOutcome {
        priorities,
        winner,
        no_data,
        penalized,
    }
}

/// Nodes that recently received a pod (as far as [`PlacementMemory`] can tell), with when. Each placement counts 1
/// when it happens and decays linearly to 0 over the window, so a burst is spread and the memory forgets on its
/// own. At most [`MAX_PLACEMENTS_PER_NODE`] placements per node, and as many nodes as the caller allows.
#[derive(Debug, Clone, Default)]
pub struct RecentPlacements {
    by_node: HashMap<String, VecDeque<UnixMillis>>,
}

fn weight(at: UnixMillis, now: UnixMillis, window: i64) -> f64 {
    // A clock that stepped back makes the age negative; count such a placement as brand new.
    let age = (now - at).max(0);
    if age >= window {
        0.0
    } else {
        1.0 - age as f64 / window as f64
    }
}

impl RecentPlacements {
    /// The decayed number of recent placements on `node` at `now`.
    pub fn load(&self, node: &str, now: UnixMillis, window: i64) -> f64 {
        if window <= 0 {
            return 0.0;
        }
        self.by_node
            .get(node)
            .map(|times| times.iter().map(|t| weight(*t, now, window)).sum())
            .unwrap_or(0.0)
    }

    /// Remembers a placement on `node` at `now` and forgets everything older than the window. At most
    /// `max_nodes` nodes are kept: a new node beyond that replaces the one whose last placement is oldest.
    pub fn record(&mut self, node: &str, now: UnixMillis, window: i64, max_nodes: usize) {
        if window <= 0 || max_nodes == 0 {
            return;
        }
        self.forget(now, window);
        if !self.by_node.contains_key(node) {
            self.shrink_to(max_nodes - 1);
        }
        let times = self.by_node.entry(node.to_string()).or_default();
        if times.len() >= MAX_PLACEMENTS_PER_NODE {
            times.pop_front();
        }
        times.push_back(now);
    }

    /// Drops placements that no longer weigh anything.
    pub fn forget(&mut self, now: UnixMillis, window: i64) {
        self.by_node.retain(|_, times| {
            times.retain(|t| weight(*t, now, window) > 0.0);
            !times.is_empty()
        });
    }

    /// Keeps at most `max_nodes` nodes, dropping those whose last placement is oldest.
    pub fn shrink_to(&mut self, max_nodes: usize) {
        while self.by_node.len() > max_nodes {
            let oldest = self
                .by_node
                .iter()
                .min_by_key(|(_, times)| times.back().copied().unwrap_or(UnixMillis::MIN))
                .map(|(node, _)| node.clone());
            match oldest {
                Some(node) => self.by_node.remove(&node),
                None => break,
            };
        }
    }

    /// Nodes with at least one remembered placement.
    pub fn len(&self) -> usize {
        self.by_node.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

/// Whether a prioritize call had a filter call for the same pod before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// A filter call for this pod UID within [`PAIRING_WINDOW_MILLIS`], and every candidate passed it.
    Matched,
    /// No UID, or no filter call for it within the window (or that call was already used).
    Unpaired,
    /// A filter call for this pod, but some candidate did not pass it: not the same scheduling attempt.
    CandidatesDiffer,
}

/// A filter call waiting for its prioritize call.
#[derive(Debug, Clone)]
struct WaitingFilter {
    at: UnixMillis,
    /// Hashes of the names that passed, sorted and without duplicates.
    passed: Vec<u64>,
}

/// Filter calls waiting for the prioritize call of the same pod, keyed by a hash of the pod UID. Names and UIDs
/// are kept as 8-byte hashes under a per-process random key, so their length costs nothing and nobody can aim
/// collisions; a collision at worst lets one call count or not count.
#[derive(Debug, Clone, Default)]
pub struct PendingFilters {
    hasher: RandomState,
    by_pod: HashMap<u64, WaitingFilter>,
    /// Name hashes held by all entries together.
    names: usize,
}

fn pairing_expired(at: UnixMillis, now: UnixMillis) -> bool {
    // A clock that stepped back makes the age negative: such an entry is new, not expired.
    now - at >= PAIRING_WINDOW_MILLIS
}

impl PendingFilters {
    /// Notes that the filter call for pod `uid` passed `passed`. Calls without a UID, or with fewer than two
    /// passing nodes (the scheduler does not prioritize a single feasible node), wait for nothing.
    pub fn filtered<'n>(
        &mut self,
        uid: &str,
        passed: impl IntoIterator<Item = &'n str>,
        now: UnixMillis,
    ) {
        if uid.is_empty() {
            return;
        }
        let key = self.hasher.hash_one(uid);
        self.take(key);
        self.expire(now);
        let mut passed: Vec<u64> = passed
            .into_iter()
            .take(MAX_PENDING_NAMES + 1)
            .map(|name| self.hasher.hash_one(name))
            .collect();
        passed.sort_unstable();
        passed.dedup();
        if passed.len() < 2 || passed.len() > MAX_PENDING_NAMES {
            return;
        }
        while self.by_pod.len() >= MAX_PENDING_FILTERS
            || self.names + passed.len() > MAX_PENDING_NAMES
        {
            let Some(oldest) = self
                .by_pod
                .iter()
                .min_by_key(|(_, waiting)| waiting.at)
                .map(|(key, _)| *key)
            else {
                break;
            };
            self.take(oldest);
        }
        self.names += passed.len();
        self.by_pod.insert(key, WaitingFilter { at: now, passed });
    }

    /// Pairs the prioritize call for pod `uid` over `candidates` with its filter call, which is used up either way.
    pub fn prioritized<S: AsRef<str>>(
        &mut self,
        uid: &str,
        candidates: &[S],
        now: UnixMillis,
    ) -> Pairing {
        if uid.is_empty() {
            return Pairing::Unpaired;
        }
        match self.take(self.hasher.hash_one(uid)) {
            Some(waiting) if !pairing_expired(waiting.at, now) => {
                let passed = |name: &S| {
                    waiting
                        .passed
                        .binary_search(&self.hasher.hash_one(name.as_ref()))
                        .is_ok()
                };
                if candidates.iter().all(passed) {
                    Pairing::Matched
                } else {
                    Pairing::CandidatesDiffer
                }
            }
            _ => Pairing::Unpaired,
        }
    }

    /// Drops filter calls whose prioritize call did not come within [`PAIRING_WINDOW_MILLIS`].
    pub fn expire(&mut self, now: UnixMillis) {
        let names = &mut self.names;
        self.by_pod.retain(|_, waiting| {
            let keep = !pairing_expired(waiting.at, now);
            if !keep {
                *names -= waiting.passed.len();
            }
            keep
        });
    }

    fn take(&mut self, key: u64) -> Option<WaitingFilter> {
        let waiting = self.by_pod.remove(&key)?;
        self.names -= waiting.passed.len();
        Some(waiting)
    }

    /// Filter calls waiting.
    pub fn len(&self) -> usize {
        self.by_pod.len()
    }

    /// Whether no filter call is waiting.
    pub fn is_empty(&self) -> bool {
        self.by_pod.is_empty()
    }

    /// Name hashes held by all waiting filter calls together.
    pub fn names_held(&self) -> usize {
        self.names
    }
}

/// What became of a prioritize call's winner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Remembered as a placement: its score drops for the next pods.
    Counted,
    /// The penalty is off (`--extender-recent-pod-penalty 0` or `--extender-recent-pod-window 0s`).
    Disabled,
    /// Fewer than two candidates: kube-scheduler never prioritizes a single feasible node.
    SingleCandidate,
    /// No filter call for this pod UID came first (see [`Pairing::Unpaired`]).
    Unpaired,
    /// The filter call for this pod did not pass every candidate.
    CandidatesDiffer,
    /// The winner is not a node of the (fresh) snapshot.
    UnknownNode,
}

impl Placement {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Placement::Counted => "counted",
            Placement::Disabled => "disabled",
            Placement::SingleCandidate => "single_candidate",
            Placement::Unpaired => "unpaired",
            Placement::CandidatesDiffer => "candidates_differ",
            Placement::UnknownNode => "unknown_node",
        }
    }
}

/// What the extender remembers between calls: filter calls waiting for their prioritize call, and the placements
/// they led to. Every part is bounded (see the module docs); [`PlacementMemory::sweep`] empties it over time.
#[derive(Debug, Clone, Default)]
pub struct PlacementMemory {
    /// Filter calls waiting for their prioritize call.
    pub filters: PendingFilters,
    /// Recent placements, the source of the penalty.
    pub recent: RecentPlacements,
}

impl ExtenderConfig {
    /// Whether recent placements lower scores at all; if not, nothing needs remembering.
    pub fn penalizes(&self) -> bool {
        self.recent_window_millis > 0 && self.recent_pod_penalty > 0.0
    }
}

impl PlacementMemory {
    /// Notes a filter call for pod `uid` that passed `passed` (see [`PendingFilters::filtered`]).
    pub fn filtered<'n>(
        &mut self,
        config: &ExtenderConfig,
        uid: &str,
        passed: impl IntoIterator<Item = &'n str>,
        now: UnixMillis,
    ) {
        if config.penalizes() {
            self.filters.filtered(uid, passed, now);
        }
    }

    /// Decides whether the winner of the prioritize call for pod `uid` over `candidates` counts as a placement, and
    /// records it if so. `known` is the snapshot's nodes: only they are remembered, at most as many as it has.
    pub fn prioritized<S: AsRef<str>>(
        &mut self,
        config: &ExtenderConfig,
        uid: &str,
        candidates: &[S],
        winner: Option<&str>,
        known: &NodeIndex<'_>,
        now: UnixMillis,
    ) -> Placement {
        if !config.penalizes() {
            return Placement::Disabled;
        }
        let Some(winner) = winner.filter(|_| candidates.len() >= 2) else {
            return Placement::SingleCandidate;
        };
        match self.filters.prioritized(uid, candidates, now) {
            Pairing::Matched => {}
            Pairing::Unpaired => return Placement::Unpaired,
            Pairing::CandidatesDiffer => return Placement::CandidatesDiffer,
        }
        if known.get(winner).is_none() {
            return Placement::UnknownNode;
        }
        self.recent
            .record(winner, now, config.recent_window_millis, known.len());
        Placement::Counted
    }

    /// Drops what has expired, and nodes beyond `max_nodes` (the snapshot's node count, when there is one). Run
    /// on a timer, so the memory empties even when no call comes.
    pub fn sweep(&mut self, config: &ExtenderConfig, max_nodes: Option<usize>, now: UnixMillis) {
        self.filters.expire(now);
        self.recent.forget(now, config.recent_window_millis);
        if let Some(max_nodes) = max_nodes {
            self.recent.shrink_to(max_nodes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn node(name: &str, measured: Option<f64>, requested: i64) -> NodeInputs {
        NodeInputs {
            name: name.to_string(),
            labels: BTreeMap::new(),
            ready: true,
            schedulable: true,
            allocatable_cpu_milli: 8000,
            requested_cpu_milli: requested,
            measured_cpu_percent: measured,
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn pod(cpu: &str) -> Value {
        json!({
            "metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "resources": {"requests": {"cpu": cpu}}}]}
        })
    }

    #[test]
    fn filter_fails_hot_and_not_ready_with_reasons() {
        let mut down = node("down", Some(10.0), 0);
        down.ready = false;
        let nodes = vec![
            node("cool", Some(40.0), 0),
            node("hot", Some(95.5), 0),
            down,
        ];
        let config = ExtenderConfig::default();
        let outcome = filter(
            &config,
            &NodeIndex::new(&nodes),
            &["cool", "hot", "down", "new"],
        );
        assert_eq!(
            outcome.verdicts,
            [
                Verdict::Pass,
                Verdict::Hot(95.5),
                Verdict::NotReady,
                Verdict::NoData
            ]
        );
        assert!(!outcome.fallback);
        assert_eq!(outcome.failed(), 2);
        let result = filter_result(
            &config,
            Candidates::Names(names(&["cool", "hot", "down", "new"])),
            &outcome,
        );
        assert_eq!(result.node_names, Some(names(&["cool", "new"])));
        assert_eq!(result.nodes, None);
        assert_eq!(
            result.failed_nodes["hot"],
            "smart-autoscaler: measured CPU utilization 95.5% is over the 90% limit"
        );
        assert_eq!(
            result.failed_nodes["down"],
            "smart-autoscaler: node is NotReady"
        );
        assert!(result.error.is_empty());
    }

    #[test]
    fn shared_positions_never_resolve_to_the_wrong_node() {
        let before = vec![node("a", Some(10.0), 0), node("b", Some(99.0), 0)];
        let positions = NamePositions::new(&before);
        let after = vec![node("b", Some(99.0), 0), node("c", Some(10.0), 0)];
        let index = NodeIndex::with_positions(&after, &positions);
        assert_eq!(index.get("a"), None);
        assert_eq!(index.get("b"), None);
        assert_eq!(index.get("c"), None);
        let index = NodeIndex::with_positions(&before, &positions);
        assert_eq!(index.get("b").map(|n| n.name.as_str()), Some("b"));
    }

    #[test]
    fn threshold_is_exclusive() {
        let nodes = vec![node("edge", Some(90.0), 0)];
        let outcome = filter(
            &ExtenderConfig::default(),
            &NodeIndex::new(&nodes),
            &["edge"],
        );
        assert_eq!(outcome.verdicts, [Verdict::Pass]);
    }

    #[test]
    fn all_fail_passes_everything() {
        let nodes = vec![node("a", Some(99.0), 0), node("b", Some(97.0), 0)];
        let config = ExtenderConfig::default();
        let outcome = filter(&config, &NodeIndex::new(&nodes), &["a", "b"]);
        assert!(outcome.fallback);
        assert!(outcome.passes(0) && outcome.passes(1));
        assert_eq!(outcome.failed(), 0);
        let result = filter_result(&config, Candidates::Names(names(&["a", "b"])), &outcome);
        assert_eq!(result.node_names, Some(names(&["a", "b"])));
        assert!(result.failed_nodes.is_empty());
    }

    #[test]
    fn stale_or_unknown_fails_open() {
        let config = ExtenderConfig::new(1.0, 1.0, 1.0, 0.0, 0);
        let outcome = filter(&config, &NodeIndex::new(&[]), &["a", "b"]);
        assert_eq!(outcome.verdicts, [Verdict::NoData, Verdict::NoData]);
        assert!(!outcome.fallback);
        let unmeasured = vec![node("a", None, 0)];
        let outcome = filter(&config, &NodeIndex::new(&unmeasured), &["a"]);
        assert_eq!(outcome.verdicts, [Verdict::NoData]);
        let outcome = filter(&config, &NodeIndex::new(&[]), &[] as &[&str]);
        assert!(outcome.verdicts.is_empty() && !outcome.fallback);
    }

    #[test]
    fn node_objects_are_echoed_unchanged_in_order() {
        let body = json!({
            "Pod": pod("250m"),
            "Nodes": {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": [
                {"metadata": {"name": "hot", "uid": "1"}, "status": {"images": [{"names": ["x"], "sizeBytes": 1}]}},
                {"metadata": {"name": "cool", "uid": "2"}, "spec": {"podCIDR": "10.0.0.0/24"}},
                {"metadata": {"name": "unknown", "uid": "3"}, "extra": {"kept": [1, 2, 3]}}
            ]},
            "NodeNames": null
        });
        let request = decode(body.to_string().as_bytes()).unwrap();
        assert_eq!(request.pod.cpu_request_milli, 250);
        assert_eq!(request.candidates.names(), ["hot", "cool", "unknown"]);
        let nodes = vec![node("hot", Some(99.0), 0), node("cool", Some(5.0), 0)];
        let config = ExtenderConfig::default();
        let outcome = filter(&config, &NodeIndex::new(&nodes), request.candidates.names());
        let result = filter_result(&config, request.candidates, &outcome);
        let items = &body["Nodes"]["items"];
        assert_eq!(
            result.nodes,
            Some(
                json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"},
                        "items": [items[1], items[2]]})
            )
        );
        assert_eq!(result.node_names, None);
        assert_eq!(result.failed_nodes.len(), 1);
    }

    #[test]
    fn wire_names_are_pascal_case() {
        let result = ExtenderFilterResult::error("boom");
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"Nodes": null, "NodeNames": null, "FailedNodes": {}, "FailedAndUnresolvableNodes": {},
                   "Error": "boom"})
        );
        let priority = HostPriority {
            host: "a".into(),
            score: 3,
        };
        assert_eq!(
            serde_json::to_value(priority).unwrap(),
            json!({"Host": "a", "Score": 3})
        );
    }

    #[test]
    fn decode_accepts_other_spellings_and_classifies_errors() {
        let camel = json!({"pod": pod("1"), "nodeNames": ["a"], "nodes": null});
        let request = decode(camel.to_string().as_bytes()).unwrap();
        assert_eq!(request.candidates, Candidates::Names(names(&["a"])));
        assert_eq!(request.pod.cpu_request_milli, 1000);
        assert_eq!(request.pod.to_string(), "shop/web-1");

        for unreadable in [
            &b"not json"[..],
            b"",
            b"{\"Pod\": ",
            b"\xff\xfe",
            b"{\"NodeNames\": [\"\xff\"]}",
        ] {
            assert!(
                decode(unreadable).unwrap_err().is_unreadable(),
                "{unreadable:?}"
            );
        }
        let shapes = [
            json!([]),
            json!({"NodeNames": ["a"]}),
            json!({"Pod": "x", "NodeNames": ["a"]}),
            json!({"Pod": {}, "NodeNames": "a"}),
            json!({"Pod": {}, "NodeNames": null, "Nodes": null}),
            json!({"Pod": {}, "NodeNames": ["a"], "Nodes": {"items": []}}),
            json!({"Pod": {}, "Nodes": []}),
            json!({"Pod": {}, "Nodes": {"items": {}}}),
            json!({"Pod": {}, "Nodes": {"items": [{"metadata": {}}]}}),
        ];
        for body in shapes {
            let err = decode(body.to_string().as_bytes()).unwrap_err();
            assert!(!err.is_unreadable(), "{body}: {err}");
        }
        // Go sends a nil items slice as null: no candidates, not an error.
        let empty = json!({"Pod": {}, "Nodes": {"metadata": {}, "items": null}});
        assert_eq!(
            decode(empty.to_string().as_bytes())
                .unwrap()
                .candidates
                .names(),
            [] as [String; 0]
        );
    }

    #[test]
    fn pod_cpu_request_follows_scheduler_accounting() {
        let request = |pod: Value| {
            let body = json!({"Pod": pod, "NodeNames": []});
            decode(body.to_string().as_bytes())
                .unwrap()
                .pod
                .cpu_request_milli
        };
        let p = json!({"spec": {
            "initContainers": [
                {"name": "sidecar", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "migrate", "resources": {"requests": {"cpu": "2"}}}
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "250m"}}},
                {"name": "b", "resources": {"requests": {"cpu": "0.5"}}},
                {"name": "c"}
            ],
            "overhead": {"cpu": "10m"}
        }});
        // max(250 + 500 + 100 sidecar, 100 sidecar + 2000 init) + 10 overhead
        assert_eq!(request(p), 2110);
        let pod_level = json!({"spec": {"resources": {"requests": {"cpu": "3"}}, "containers": [{"name": "a"}]}});
        assert_eq!(request(pod_level), 3000);
        assert_eq!(request(json!({})), 0);
        assert_eq!(request(pod("garbage")), 0);
        // A limit without a request is the request, as the apiserver defaults it.
        let limits_only = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "25m"}}}]}});
        assert_eq!(request(limits_only), 25);
    }

    #[test]
    fn scores_prefer_measured_and_requested_headroom() {
        let config = ExtenderConfig::default();
        let cold = node("cold", Some(10.0), 1000);
        let hot = node("hot", Some(80.0), 1000);
        let packed = node("packed", Some(10.0), 7500);
        assert!(base_score(&config, Some(&cold), 0) > base_score(&config, Some(&hot), 0));
        assert!(base_score(&config, Some(&cold), 0) > base_score(&config, Some(&packed), 0));
        // measured 10% -> 0.9, requested 1000/8000 -> 0.875: (2*0.9 + 0.875) / 3 * 10
        assert!((base_score(&config, Some(&cold), 0) - 8.9166).abs() < 1e-3);
        // The pod's own request is counted against requested headroom.
        assert!(base_score(&config, Some(&cold), 4000) < base_score(&config, Some(&cold), 0));
        assert_eq!(base_score(&config, None, 0), NEUTRAL_SCORE);
        let mut down = cold.clone();
        down.ready = false;
        assert_eq!(base_score(&config, Some(&down), 0), 0.0);
        // Known but unmeasured: requests alone.
        let unmeasured = node("u", None, 2000);
        assert!((base_score(&config, Some(&unmeasured), 0) - 7.5).abs() < 1e-9);
        let requests_only = ExtenderConfig::new(90.0, 0.0, 1.0, 0.0, 0);
        assert!((base_score(&requests_only, Some(&hot), 0) - 8.75).abs() < 1e-9);
    }

    #[test]
    fn config_replaces_unusable_values() {
        let c = ExtenderConfig::new(f64::NAN, -1.0, 0.0, 99.0, -5);
        assert_eq!(c.max_cpu_percent, DEFAULT_MAX_CPU_PERCENT);
        assert_eq!(c.measured_weight, DEFAULT_MEASURED_WEIGHT);
        assert_eq!(c.requested_weight, DEFAULT_REQUESTED_WEIGHT);
        assert_eq!(c.recent_pod_penalty, 10.0);
        assert_eq!(c.recent_window_millis, 0);
    }

    /// One pod as kube-scheduler places it: filter, then prioritize the nodes that passed, same pod UID.
    fn schedule(
        config: &ExtenderConfig,
        index: &NodeIndex<'_>,
        memory: &mut PlacementMemory,
        uid: &str,
        candidates: &[&str],
        now: UnixMillis,
    ) -> (PrioritizeOutcome, Placement) {
        let filtered = filter(config, index, candidates);
        let passed: Vec<&str> = (0..candidates.len())
            .filter(|i| filtered.passes(*i))
            .map(|i| candidates[i])
            .collect();
        memory.filtered(config, uid, passed.iter().copied(), now);
        let out = prioritize(config, index, names(&passed), 0, &memory.recent, now);
        let winner = out.winner.map(|i| out.priorities[i].host.clone());
        let placement = memory.prioritized(config, uid, &passed, winner.as_deref(), index, now);
        (out, placement)
    }

    #[test]
    fn a_burst_spreads_over_equally_cold_nodes() {
        let config = ExtenderConfig::default();
        let nodes = vec![node("a", Some(20.0), 0), node("b", Some(20.0), 0)];
        let index = NodeIndex::new(&nodes);
        let mut memory = PlacementMemory::default();
        let (first, placed) = schedule(&config, &index, &mut memory, "pod-1", &["a", "b"], 0);
        assert_eq!(placed, Placement::Counted);
        assert_eq!(first.winner, Some(0));
        assert_eq!(first.priorities[0].score, first.priorities[1].score);
        let (second, placed) = schedule(&config, &index, &mut memory, "pod-2", &["a", "b"], 1_000);
        assert_eq!(placed, Placement::Counted);
        assert_eq!(second.winner, Some(1), "{:?}", second.priorities);
        assert!(second.priorities[0].score < first.priorities[0].score);
        assert_eq!(second.penalized, 1);
        // The memory decays: half-way through the window half the penalty is left; after it, none.
        let recent = &mut memory.recent;
        assert!((recent.load("a", 15_000, 30_000) - 0.5).abs() < 1e-9);
        assert_eq!(recent.load("a", 30_000, 30_000), 0.0);
        recent.forget(40_000, 30_000);
        assert!(recent.is_empty());
    }

    #[test]
    fn penalty_disabled_with_zero_window_or_zero_penalty() {
        let nodes = vec![node("a", Some(20.0), 0), node("b", Some(20.0), 0)];
        let index = NodeIndex::new(&nodes);
        for config in [
            ExtenderConfig::new(90.0, 2.0, 1.0, 3.0, 0),
            ExtenderConfig::new(90.0, 2.0, 1.0, 0.0, 30_000),
        ] {
            let mut memory = PlacementMemory::default();
            for t in 0..5 {
                let (out, placed) = schedule(
                    &config,
                    &index,
                    &mut memory,
                    &format!("p{t}"),
                    &["a", "b"],
                    t,
                );
                assert_eq!(placed, Placement::Disabled);
                assert_eq!(out.winner, Some(0));
                assert_eq!(out.penalized, 0);
            }
            assert!(memory.recent.is_empty() && memory.filters.is_empty());
        }
    }

    /// Issue 22 item 3: anyone can call prioritize. Only the scheduler's sequence counts a placement.
    #[test]
    fn only_a_filter_then_prioritize_for_the_same_pod_counts() {
        let config = ExtenderConfig::default();
        let nodes = vec![
            node("a", Some(20.0), 0),
            node("b", Some(20.0), 0),
            node("c", Some(20.0), 0),
        ];
        let index = NodeIndex::new(&nodes);
        let mut memory = PlacementMemory::default();
        let abc = ["a", "b", "c"];
        let prioritized = |memory: &mut PlacementMemory, uid: &str, candidates: &[&str], now| {
            let out = prioritize(&config, &index, names(candidates), 0, &memory.recent, now);
            let winner = out.winner.map(|i| out.priorities[i].host.clone());
            memory.prioritized(&config, uid, candidates, winner.as_deref(), &index, now)
        };
        // The reproduction: the same lone node named again and again, no filter call.
        for t in 0..8 {
            assert_eq!(
                prioritized(&mut memory, "", &["a"], t),
                Placement::SingleCandidate
            );
            assert_eq!(prioritized(&mut memory, "x", &abc, t), Placement::Unpaired);
        }
        assert!(memory.recent.is_empty());
        // A filter call for another pod does not vouch for this one.
        memory.filtered(&config, "other", abc, 10);
        assert_eq!(
            prioritized(&mut memory, "mine", &abc, 11),
            Placement::Unpaired
        );
        // A candidate that did not pass this pod's filter call: another scheduling attempt, not counted.
        memory.filtered(&config, "narrow", ["a", "b"], 20);
        assert_eq!(
            prioritized(&mut memory, "narrow", &abc, 21),
            Placement::CandidatesDiffer
        );
        // Too late: the prioritize call comes after the pairing window.
        memory.filtered(&config, "late", abc, 30);
        assert_eq!(
            prioritized(&mut memory, "late", &abc, 30 + PAIRING_WINDOW_MILLIS),
            Placement::Unpaired
        );
        // A filter call without a UID cannot be paired.
        memory.filtered(&config, "", abc, 40);
        assert_eq!(prioritized(&mut memory, "", &abc, 41), Placement::Unpaired);
        assert!(memory.recent.is_empty());

        // The scheduler's sequence; later extenders may narrow the candidates, which still counts.
        memory.filtered(&config, "real", abc, 50);
        assert_eq!(
            prioritized(&mut memory, "real", &["b", "c"], 51),
            Placement::Counted
        );
        assert_eq!(memory.recent.len(), 1);
        assert!(memory.recent.load("b", 51, 30_000) > 0.99);
        // Each filter call vouches for one prioritize call: a replay does not count again.
        assert_eq!(
            prioritized(&mut memory, "real", &["b", "c"], 52),
            Placement::Unpaired
        );
        assert!(memory.recent.load("b", 52, 30_000) <= 1.0);
        assert_eq!(memory.recent.load("c", 52, 30_000), 0.0);
        // Unknown winners are never remembered, even when paired.
        memory.filtered(&config, "ghost", ["ghost-0", "ghost-1"], 60);
        assert_eq!(
            prioritized(&mut memory, "ghost", &["ghost-0", "ghost-1"], 61),
            Placement::UnknownNode
        );
        assert_eq!(memory.recent.len(), 1);
        // Only the other pod's filter call still waits; every other one was used up.
        assert_eq!(memory.filters.len(), 1);
    }

    /// Entries vanish once the window is over, by the sweep alone (no further call).
    #[test]
    fn the_sweep_expires_placements_and_filter_calls() {
        let config = ExtenderConfig::new(90.0, 2.0, 1.0, 3.0, 2_000);
        let nodes = vec![node("a", Some(20.0), 0), node("b", Some(20.0), 0)];
        let index = NodeIndex::new(&nodes);
        let mut memory = PlacementMemory::default();
        let (_, placed) = schedule(&config, &index, &mut memory, "p1", &["a", "b"], 1_000);
        assert_eq!(placed, Placement::Counted);
        memory.filtered(&config, "waiting", ["a", "b"], 1_500);
        assert_eq!((memory.recent.len(), memory.filters.len()), (1, 1));
        memory.sweep(&config, Some(2), 2_999);
        assert_eq!((memory.recent.len(), memory.filters.len()), (1, 1));
        memory.sweep(&config, Some(2), 3_000);
        assert_eq!((memory.recent.len(), memory.filters.len()), (0, 1));
        memory.sweep(&config, None, 1_500 + PAIRING_WINDOW_MILLIS - 1);
        assert_eq!(memory.filters.len(), 1);
        memory.sweep(&config, None, 1_500 + PAIRING_WINDOW_MILLIS);
        assert!(memory.filters.is_empty());
        assert_eq!(memory.filters.names_held(), 0);
    }

    #[test]
    fn remembered_nodes_never_exceed_the_node_count() {
        let mut recent = RecentPlacements::default();
        for (t, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            recent.record(name, t as i64, 30_000, 3);
            assert!(recent.len() <= 3);
        }
        // The nodes placed on longest ago made room.
        assert_eq!(recent.load("a", 5, 30_000), 0.0);
        assert_eq!(recent.load("b", 5, 30_000), 0.0);
        assert!(recent.load("e", 5, 30_000) > 0.99);
        // A node already remembered never evicts another.
        recent.record("e", 6, 30_000, 3);
        assert_eq!(recent.len(), 3);
        // The snapshot shrank: the sweep trims to the new node count.
        let mut memory = PlacementMemory {
            recent,
            ..Default::default()
        };
        memory.sweep(&ExtenderConfig::default(), Some(1), 7);
        assert_eq!(memory.recent.len(), 1);
        assert!(memory.recent.load("e", 7, 30_000) > 1.9);
        memory.recent.record("z", 8, 30_000, 0);
        assert_eq!(memory.recent.len(), 1);
    }

    #[test]
    fn waiting_filter_calls_are_bounded() {
        let mut filters = PendingFilters::default();
        let long = "n".repeat(10_000);
        for i in 0..MAX_PENDING_FILTERS + 500 {
            let uid = format!("{long}-{i}");
            filters.filtered(&uid, [long.as_str(), "b"], i as i64);
            assert!(filters.len() <= MAX_PENDING_FILTERS);
        }
        assert_eq!(filters.len(), MAX_PENDING_FILTERS);
        assert_eq!(filters.names_held(), 2 * MAX_PENDING_FILTERS);
        // The oldest made room; the newest is there.
        assert_eq!(
            filters.prioritized(&format!("{long}-0"), &["b"], 2_000),
            Pairing::Unpaired
        );
        let newest = format!("{long}-{}", MAX_PENDING_FILTERS + 499);
        assert_eq!(
            filters.prioritized(&newest, &["b"], 2_000),
            Pairing::Matched
        );

        // The name budget: big candidate lists push out old entries, and a list over the budget is not kept.
        let many: Vec<String> = (0..MAX_PENDING_NAMES / 4)
            .map(|i| format!("n{i}"))
            .collect();
        for i in 0..10 {
            filters.filtered(&format!("big-{i}"), many.iter().map(String::as_str), 3_000);
            assert!(filters.names_held() <= MAX_PENDING_NAMES);
        }
        assert!(filters.len() <= 4, "{}", filters.len());
        let too_many: Vec<String> = (0..=MAX_PENDING_NAMES).map(|i| format!("n{i}")).collect();
        filters.filtered("huge", too_many.iter().map(String::as_str), 3_000);
        assert_eq!(
            filters.prioritized("huge", &["n0"], 3_001),
            Pairing::Unpaired
        );
        // Fewer than two passing nodes: the scheduler will not prioritize, so nothing waits.
        filters.filtered("one", ["a"], 3_000);
        assert_eq!(filters.prioritized("one", &["a"], 3_001), Pairing::Unpaired);
    }

    #[test]
    fn memory_is_bounded_per_node() {
        let mut recent = RecentPlacements::default();
        for _ in 0..1000 {
            recent.record("a", 5, 30_000, 1);
        }
        assert_eq!(recent.load("a", 5, 30_000), MAX_PLACEMENTS_PER_NODE as f64);
        // A clock that steps back does not make weights exceed 1.
        assert_eq!(recent.load("a", 0, 30_000), MAX_PLACEMENTS_PER_NODE as f64);
    }

    fn arb_node() -> impl Strategy<Value = NodeInputs> {
        (
            0usize..8,
            any::<bool>(),
            prop_oneof![
                Just(None),
                Just(Some(f64::NAN)),
                Just(Some(f64::INFINITY)),
                (-50.0f64..250.0).prop_map(Some)
            ],
            -100i64..20_000,
            -100i64..40_000,
        )
            .prop_map(|(i, ready, measured, allocatable, requested)| NodeInputs {
                name: format!("n{i}"),
                labels: BTreeMap::new(),
                ready,
                schedulable: true,
                allocatable_cpu_milli: allocatable,
                requested_cpu_milli: requested,
                measured_cpu_percent: measured,
            })
    }

    fn arb_config() -> impl Strategy<Value = ExtenderConfig> {
        (
            prop_oneof![Just(f64::NAN), -10.0f64..150.0],
            prop_oneof![Just(f64::NAN), -1.0f64..10.0],
            prop_oneof![Just(f64::INFINITY), -1.0f64..10.0],
            prop_oneof![Just(f64::NAN), -1.0f64..20.0],
            -1_000i64..60_000,
        )
            .prop_map(|(max, wm, wr, penalty, window)| {
                ExtenderConfig::new(max, wm, wr, penalty, window)
            })
    }

    proptest! {
        #[test]
        fn scores_stay_in_range_and_filter_never_fails_everything(
            config in arb_config(),
            nodes in proptest::collection::vec(arb_node(), 0..8),
            candidates in proptest::collection::vec(0usize..10, 1..12),
            pod_cpu in -1_000i64..100_000,
            calls in proptest::collection::vec(0i64..40_000, 1..6),
        ) {
            let index = NodeIndex::new(&nodes);
            let names: Vec<String> = candidates.iter().map(|i| format!("n{i}")).collect();
            let outcome = filter(&config, &index, &names);
            prop_assert_eq!(outcome.verdicts.len(), names.len());
            prop_assert!((0..names.len()).any(|i| outcome.passes(i)));
            prop_assert!(outcome.failed() < names.len());
            let result = filter_result(&config, Candidates::Names(names.clone()), &outcome);
            let passed = result.node_names.unwrap_or_default();
            prop_assert!(!passed.is_empty());
            prop_assert_eq!(passed.len() + outcome.failed(), names.len());

            let mut memory = PlacementMemory::default();
            let mut now = 0;
            for (pod, step) in calls.into_iter().enumerate() {
                now += step;
                let uid = format!("pod-{pod}");
                memory.filtered(&config, &uid, names.iter().map(String::as_str), now);
                let out = prioritize(&config, &index, names.clone(), pod_cpu, &memory.recent, now);
                let winner = out.winner.map(|i| out.priorities[i].host.clone());
                memory.prioritized(&config, &uid, &names, winner.as_deref(), &index, now);
                prop_assert!(memory.recent.len() <= nodes.len());
                prop_assert_eq!(out.priorities.len(), names.len());
                for (p, name) in out.priorities.iter().zip(&names) {
                    prop_assert_eq!(&p.host, name);
                    prop_assert!((MIN_SCORE..=MAX_SCORE).contains(&p.score), "{:?}", p);
                }
                prop_assert!(out.winner.is_some());
            }
        }
    }
}
