//! The production [`Source`]: Kubernetes (watches and caches) and Prometheus (batched queries) joined into
//! per-deployment inputs each tick, recorded in the sled store, with first-seen deployments bootstrapped from
//! Prometheus history in the background.
//!
//! Degraded operation: when Prometheus fails, the last good usage is reused with its original timestamp, so the
//! served values age and the read-time fail-safe (raw value, then 503) takes over; errors are counted in
//! `/metrics` and shown in `/readyz`. Nothing here panics on bad data.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::domain::cluster::{self, JoinConfig, Usage};
use crate::domain::model::{
    DeploymentKey, NodeInputs, Observation, Snapshot, UnixMillis, UnknownCause,
};
use crate::engine::{Source, SourceError};
use crate::health::Health;
use crate::k8s::ClusterWatch;
use crate::prom::PromClient;
use crate::store::Store;

/// Step of bootstrapped history.
const BOOTSTRAP_STEP: Duration = Duration::from_secs(300);

/// Pods whose history one bootstrap batch asks for. At the default 30 days, 5-minute step and a 5-minute rate
/// window over a 30 s scrape, Prometheus loads about 86,000 samples per pod series per query: 250 pods stay at
/// ~22 M, under its default `--query.max-samples` of 50 M, and a batch's response is a few MiB to parse.
pub const BOOTSTRAP_PODS_PER_BATCH: u32 = 250;

/// Deployments per bootstrap batch, whatever their size (keeps the query's regular expressions short).
pub const BOOTSTRAP_DEPLOYMENTS_PER_BATCH: usize = 100;

/// Kubernetes + Prometheus + store, as an engine source.
pub struct DataPlaneSource {
    /// The cluster watch.
    pub cluster: ClusterWatch,
    /// The Prometheus client.
    pub prom: Arc<PromClient>,
    /// The history store.
    pub store: Store,
    /// Join settings.
    pub join: JoinConfig,
    /// Component health.
    pub health: Arc<Health>,
    /// Last good usage and when it was measured.
    last_usage: Option<(UnixMillis, Usage)>,
    /// Deployments whose history has been (or is being) bootstrapped.
    bootstrapped: HashSet<DeploymentKey>,
    /// Deployments of batches that failed, to try again once the running bootstrap has ended.
    bootstrap_failed: Arc<Mutex<Vec<DeploymentKey>>>,
    /// The bootstrap task in progress: one at a time, its batches one after another.
    bootstrap_task: Option<JoinHandle<()>>,
    /// The store maintenance in progress, if any (see [`DataPlaneSource::maintain_store`]).
    maintenance_task: Option<JoinHandle<()>>,
    /// How far back to bootstrap.
    pub bootstrap_window: Duration,
    /// When retention was last enforced.
    last_retention: UnixMillis,
    /// The effective target last recorded per deployment, so only changes are written.
    recorded_targets: HashMap<DeploymentKey, f64>,
    /// How long the cached objects may go without contact with the API server (`--kube-max-staleness`).
    max_object_staleness: Duration,
    /// The `--external-rules` evaluator, started on every tick.
    rules: Option<crate::prom::rules::RuleEvaluator>,
}

impl DataPlaneSource {
    /// A source with no usage, bootstrap or decision history yet.
    pub fn new(
        cluster: ClusterWatch,
        prom: Arc<PromClient>,
        store: Store,
        join: JoinConfig,
        health: Arc<Health>,
        bootstrap_window: Duration,
        max_object_staleness: Duration,
    ) -> Self {
        DataPlaneSource {
            cluster,
            prom,
            store,
            join,
            health,
            last_usage: None,
            bootstrapped: HashSet::new(),
            bootstrap_failed: Arc::default(),
            bootstrap_task: None,
            maintenance_task: None,
            bootstrap_window,
            last_retention: 0,
            recorded_targets: HashMap::new(),
            max_object_staleness,
            rules: None,
        }
    }

    /// Evaluates the PromQL-backed external metrics on every tick (in the background: a slow rule never delays
    /// the built-in metric, nor does the Kubernetes state hold the rules back).
    pub fn with_external_rules(mut self, rules: crate::prom::rules::RuleEvaluator) -> Self {
        self.rules = Some(rules);
        self
    }
}

fn err(message: impl Into<String>) -> SourceError {
    SourceError {
        source_name: "data plane",
        message: message.into(),
    }
}

/// Whether a background task of this source (bootstrap, store maintenance) is still running: each runs one at a
/// time.
fn running(task: &Option<JoinHandle<()>>) -> bool {
    task.as_ref().is_some_and(|t| !t.is_finished())
}

impl DataPlaneSource {
    /// In the background: flushes the store (the last flush in `/metrics`), compacts it if it has grown enough
    /// (store operations, this source's tick writes among them, wait while that runs), and refreshes its figures
    /// for `/metrics` (size; records at most every [`crate::store::RECORD_COUNT_INTERVAL`], an hour).
    fn maintain_store(&mut self, now: UnixMillis) {
        if running(&self.maintenance_task) {
            return;
        }
        let (store, health) = (self.store.clone(), self.health.clone());
        self.maintenance_task = Some(tokio::spawn(async move {
            if let Err(e) = store.flush().await {
                health.error("store", format!("flush: {e}"), now);
            }
            match store.compact_if_grown().await {
                Ok(Some(report)) => tracing::info!(
                    before_mib = report.before_bytes >> 20,
                    after_mib = report.after_bytes >> 20,
                    millis = report.millis,
                    "store compacted"
                ),
                Ok(None) => {}
                Err(e) => health.error("store", format!("compaction: {e}"), now),
            }
            if let Err(e) = store.refresh_stats().await {
                health.error("store", format!("store figures: {e}"), now);
            }
        }));
    }
}

/// Splits deployments (each with its pod count) into bootstrap batches of at most `max_pods` pods and
/// `max_deployments` deployments, in the order given; a deployment larger than `max_pods` is a batch of its own.
pub fn bootstrap_batches(
    deployments: &[(DeploymentKey, u32)],
    max_pods: u32,
    max_deployments: usize,
) -> Vec<Vec<DeploymentKey>> {
    let mut batches: Vec<Vec<DeploymentKey>> = Vec::new();
    let mut pods = 0;
    for (key, n) in deployments {
        let n = (*n).max(1);
        match batches.last_mut() {
            Some(batch) if batch.len() < max_deployments && pods + n <= max_pods => {
                batch.push(key.clone());
                pods += n;
            }
            _ => {
                batches.push(vec![key.clone()]);
                pods = n;
            }
        }
    }
    batches
}

impl DataPlaneSource {
    /// Starts backfilling the history of deployments seen for the first time (and of those whose batch failed
    /// before), unless a bootstrap is still running. Batches go one after another, each imported into the
    /// store as it arrives, so memory and the load on Prometheus stay bounded by one batch.
    fn bootstrap(&mut self, observation: &Observation, now: UnixMillis) {
        if running(&self.bootstrap_task) {
            return;
        }
        let failed = std::mem::take(
            &mut *self
                .bootstrap_failed
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for key in failed {
            self.bootstrapped.remove(&key);
        }
        let fresh: Vec<(DeploymentKey, u32)> = observation
            .deployments
            .iter()
            .filter(|d| !self.bootstrapped.contains(&d.key))
            .map(|d| {
                (
                    d.key.clone(),
                    d.replicas.max(d.ready_pods + d.starting_pods),
                )
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.bootstrapped
            .extend(fresh.iter().map(|(k, _)| k.clone()));
        let batches = bootstrap_batches(
            &fresh,
            BOOTSTRAP_PODS_PER_BATCH,
            BOOTSTRAP_DEPLOYMENTS_PER_BATCH,
        );
        let (prom, store, health) = (self.prom.clone(), self.store.clone(), self.health.clone());
        let failed = self.bootstrap_failed.clone();
        let from = now - self.bootstrap_window.as_millis() as i64;
        // One pod's CPU request turns the requested cores of each point into a pod count, so the history keeps
        // demand (utilization x pods), which forecasting needs, not just the utilization the HPA flattened.
        let pod_request: HashMap<DeploymentKey, f64> = observation
            .deployments
            .iter()
            .filter(|d| d.pod_cpu_request_milli > 0)
            .map(|d| (d.key.clone(), d.pod_cpu_request_milli as f64 / 1000.0))
            .collect();
        self.bootstrap_task = Some(tokio::spawn(async move {
            let (mut points, mut failed_batches) = (0, 0);
            let count = batches.len();
            for batch in batches {
                match prom
                    .backfill_usage_many(&batch, from, now, BOOTSTRAP_STEP)
                    .await
                {
                    Ok(histories) => {
                        for (key, history) in histories {
                            let per_pod = pod_request.get(&key).copied();
                            let history: Vec<(UnixMillis, f64, Option<u32>)> = history
                                .iter()
                                .map(|p| {
                                    let pods = per_pod.map(|r| {
                                        (p.requested_cores / r).round().clamp(1.0, 65_000.0) as u32
                                    });
                                    (p.at, p.used_cores / p.requested_cores * 100.0, pods)
                                })
                                .collect();
                            match store.import_history_with_pods(&key, &history).await {
                                Ok(n) => points += n,
                                Err(e) => health.error(
                                    "store",
                                    format!("bootstrap import for {key}: {e}"),
                                    now,
                                ),
                            }
                        }
                    }
                    Err(e) => {
                        failed_batches += 1;
                        tracing::warn!(error = %e, deployments = batch.len(), "bootstrap batch failed; will retry on a later tick");
                        health.error("bootstrap", e.to_string(), now);
                        failed
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(batch);
                    }
                }
            }
            if failed_batches == 0 {
                health.ok(
                    "bootstrap",
                    format!("{} deployments, {points} points", fresh.len()),
                    now,
                );
            }
            tracing::info!(
                deployments = fresh.len(),
                batches = count,
                failed_batches,
                points,
                "bootstrapped history from Prometheus"
            );
        }));
    }
}

impl DataPlaneSource {
    /// Reports a fresh Prometheus answer: healthy when every measurable managed deployment got a usable CPU
    /// sample; an error (counted) naming those that got none, which are served their last good value.
    fn report_usage(&self, observation: &Observation, rejected: usize, now: UnixMillis) {
        let missing: Vec<String> = observation
            .unmeasured
            .iter()
            .filter(|u| u.cause == UnknownCause::NoSamples)
            .map(|u| u.key.to_string())
            .collect();
        // Ready nodes without a usable measurement count for nothing in pressure and are "no data" to the
        // extender. A few (a node pool without node-exporter) are worth naming; none at all is a fault.
        let ready: Vec<&NodeInputs> = observation.nodes.iter().filter(|n| n.ready).collect();
        let unmeasured_nodes: Vec<String> = ready
            .iter()
            .filter(|n| n.measured_cpu_percent.is_none())
            .map(|n| n.name.clone())
            .collect();
        let mut notes = String::new();
        if rejected > 0 {
            notes.push_str(&format!(
                "; {rejected} NaN, infinite or negative samples dropped"
            ));
        }
        if !unmeasured_nodes.is_empty() {
            notes.push_str(&format!(
                "; {} of {} ready nodes without a CPU measurement ({})",
                unmeasured_nodes.len(),
                ready.len(),
                named(&unmeasured_nodes)
            ));
        }
        let no_node_measured = !ready.is_empty() && unmeasured_nodes.len() == ready.len();
        if !missing.is_empty() {
            self.health.error(
                "prometheus",
                format!(
                    "answered, but {} managed deployments have no usable CPU sample ({}): they keep their \
                     last good value until the fail-safe{notes}",
                    missing.len(),
                    named(&missing)
                ),
                now,
            );
        } else if no_node_measured {
            self.health.error(
                "prometheus",
                format!(
                    "answered, but no node has a usable CPU measurement: pressure comes from requests alone and \
                     the extender has no data{notes}"
                ),
                now,
            );
        } else {
            self.health.ok(
                "prometheus",
                format!(
                    "{} deployments measured, {} nodes{notes}",
                    observation.deployments.len(),
                    ready.len() - unmeasured_nodes.len()
                ),
                now,
            );
        }
        self.health.data_at("prometheus", now);
    }
}

/// Up to five names, and how many more.
fn named(names: &[String]) -> String {
    const NAMED: usize = 5;
    let mut out = names[..names.len().min(NAMED)].join(", ");
    if names.len() > NAMED {
        out.push_str(&format!(" and {} more", names.len() - NAMED));
    }
    out
}

impl Source for DataPlaneSource {
    async fn observe(&mut self, now: UnixMillis) -> Result<Observation, SourceError> {
        if let Some(rules) = &mut self.rules {
            rules.tick(now);
        }
        let watch = self.cluster.health();
        if !watch.ready {
            let detail = format!("waiting for initial lists: {}", watch.pending.join(", "));
            self.health.error("kubernetes", detail.clone(), now);
            return Err(err(detail));
        }
        let errors = match &watch.last_error {
            Some(e) if watch.errors > 0 => format!("; {} errors so far, last: {e}", watch.errors),
            _ => String::new(),
        };
        let since_contact = watch.since_contact.unwrap_or(Duration::MAX);
        // The probe runs every quarter of the limit: two missed answers are worth saying, the limit stops us.
        if since_contact > self.max_object_staleness {
            let detail = format!(
                "no contact with the API server for {}s, past the {}s limit (--kube-max-staleness): no new \
                 values are computed from cached objects that old{errors}",
                since_contact.as_secs(),
                self.max_object_staleness.as_secs()
            );
            self.health.error("kubernetes", detail.clone(), now);
            return Err(err(detail));
        } else if since_contact > self.max_object_staleness / 2 {
            self.health.error(
                "kubernetes",
                format!(
                    "no contact with the API server for {}s (limit {}s); computing from cached objects{errors}",
                    since_contact.as_secs(),
                    self.max_object_staleness.as_secs()
                ),
                now,
            );
        } else {
            self.health
                .ok("kubernetes", format!("watching{errors}"), now);
        }
        if let Some(age) = watch.since_contact {
            self.health
                .data_at("kubernetes", now - age.as_millis() as i64);
        }
        let snapshot = self.cluster.snapshot();

        let fresh = match self.prom.collect(now).await {
            Ok(usage) => {
                self.last_usage = Some((now, usage));
                true
            }
            Err(e) => {
                let age = self.last_usage.as_ref().map(|(at, _)| (now - at) / 1000);
                let detail = match age {
                    Some(age) => format!("{e}; serving the last good usage from {age}s ago"),
                    None => format!("{e}; no usage collected yet"),
                };
                self.health.error("prometheus", detail, now);
                false
            }
        };
        let Some((usage_at, usage)) = &self.last_usage else {
            return Err(err("no usage from Prometheus yet"));
        };
        // Inputs carry the time their usage was measured, so stale usage ages into the fail-safe.
        let mut observation = cluster::join(&snapshot, usage, *usage_at, &self.join);
        observation.at = now;

        // Only a fresh answer is judged and recorded: the last good usage again would be history made up.
        if fresh {
            self.report_usage(&observation, usage.rejected_samples, now);
            if let Err(e) = self.store.record_tick(&observation).await {
                self.health.error("store", e.to_string(), now);
            } else {
                self.health
                    .ok("store", format!("{}", self.store.path().display()), now);
            }
        }
        if now - self.last_retention > 60_000 {
            self.last_retention = now;
            if let Err(e) = self.store.enforce_retention(now).await {
                self.health.error("store", format!("retention: {e}"), now);
            }
            self.maintain_store(now);
        }
        self.bootstrap(&observation, now);
        Ok(observation)
    }

    /// Records a decision (the explanation as JSON) whenever a deployment's effective target changes: that is
    /// the decision; the served value of every tick follows from it and the stored samples.
    fn served(&mut self, snapshot: &Snapshot) {
        let mut changed = Vec::new();
        for (key, served) in &snapshot.deployments {
            let target = served.explanation.effective_target_percent;
            if self
                .recorded_targets
                .get(key)
                .is_some_and(|t| (t - target).abs() < 1e-9)
            {
                continue;
            }
            self.recorded_targets.insert(key.clone(), target);
            if let Ok(json) = serde_json::to_vec(&served.explanation) {
                changed.push((key.clone(), json));
            }
        }
        self.recorded_targets
            .retain(|k, _| snapshot.deployments.contains_key(k));
        if changed.is_empty() {
            return;
        }
        let (store, health, at) = (
            self.store.clone(),
            self.health.clone(),
            snapshot.collected_at,
        );
        tokio::spawn(async move {
            for (key, json) in changed {
                if let Err(e) = store.put_decision(&key, at, &json).await {
                    health.error("store", format!("recording decision for {key}: {e}"), at);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_batches_respect_both_limits_and_keep_order() {
        let d = |name: &str, pods| (DeploymentKey::new("ns", name), pods);
        let names = |batches: Vec<Vec<DeploymentKey>>| -> Vec<Vec<String>> {
            batches
                .into_iter()
                .map(|b| b.into_iter().map(|k| k.name).collect())
                .collect()
        };
        let input = [
            d("a", 100),
            d("b", 100),
            d("c", 60),
            d("huge", 900),
            d("e", 0),
            d("f", 10),
        ];
        assert_eq!(
            names(bootstrap_batches(&input, 250, 100)),
            [vec!["a", "b"], vec!["c"], vec!["huge"], vec!["e", "f"]]
        );
        // A deployment with no pods counts as one, and the deployment limit applies on its own.
        let many: Vec<_> = (0..5).map(|i| d(&format!("d{i}"), 0)).collect();
        assert_eq!(
            names(bootstrap_batches(&many, 250, 2)),
            [vec!["d0", "d1"], vec!["d2", "d3"], vec!["d4"]]
        );
        assert!(bootstrap_batches(&[], 250, 100).is_empty());
    }
}
