//! The production [`Source`]: Kubernetes (reflectors) and Prometheus (batched queries) joined into per-deployment
//! inputs each tick, recorded in the sled store, with first-seen deployments bootstrapped from Prometheus
//! history in the background.
//!
//! Degraded operation: when Prometheus fails, the last good usage is reused with its original timestamp, so the
//! served values age and the read-time fail-safe (raw value, then 503) takes over; errors are counted in
//! `/metrics` and shown in `/readyz`. Nothing here panics on bad data.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::domain::cluster::{self, JoinConfig, Usage};
use crate::domain::model::{DeploymentKey, Observation, Snapshot, UnixMillis};
use crate::engine::{Source, SourceError};
use crate::health::Health;
use crate::k8s::ClusterWatch;
use crate::prom::PromClient;
use crate::store::Store;

/// Step of bootstrapped history.
const BOOTSTRAP_STEP: Duration = Duration::from_secs(300);

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
    /// How far back to bootstrap.
    pub bootstrap_window: Duration,
    /// When retention was last enforced.
    last_retention: UnixMillis,
    /// The effective target last recorded per deployment, so only changes are written.
    recorded_targets: HashMap<DeploymentKey, f64>,
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
    ) -> Self {
        DataPlaneSource {
            cluster,
            prom,
            store,
            join,
            health,
            last_usage: None,
            bootstrapped: HashSet::new(),
            bootstrap_window,
            last_retention: 0,
            recorded_targets: HashMap::new(),
        }
    }
}

fn err(message: impl Into<String>) -> SourceError {
    SourceError {
        source_name: "data plane",
        message: message.into(),
    }
}

impl DataPlaneSource {
    fn bootstrap(&mut self, observation: &Observation, now: UnixMillis) {
        let fresh: Vec<DeploymentKey> = observation
            .deployments
            .iter()
            .map(|d| d.key.clone())
            .filter(|k| !self.bootstrapped.contains(k))
            .collect();
        if fresh.is_empty() {
            return;
        }
        self.bootstrapped.extend(fresh.iter().cloned());
        let (prom, store, health) = (self.prom.clone(), self.store.clone(), self.health.clone());
        let from = now - self.bootstrap_window.as_millis() as i64;
        // One pod's CPU request turns the requested cores of each point into a pod count, so the history keeps
        // demand (utilization x pods), which forecasting needs, not just the utilization the HPA flattened.
        let pod_request: HashMap<DeploymentKey, f64> = observation
            .deployments
            .iter()
            .filter(|d| d.pod_cpu_request_milli > 0)
            .map(|d| (d.key.clone(), d.pod_cpu_request_milli as f64 / 1000.0))
            .collect();
        tokio::spawn(async move {
            match prom
                .backfill_usage_many(&fresh, from, now, BOOTSTRAP_STEP)
                .await
            {
                Ok(histories) => {
                    let mut points = 0;
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
                    tracing::info!(
                        deployments = fresh.len(),
                        points,
                        "bootstrapped history from Prometheus"
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bootstrap from Prometheus failed; history will build up from ticks");
                    health.error("bootstrap", e.to_string(), now);
                }
            }
        });
    }
}

impl Source for DataPlaneSource {
    async fn observe(&mut self, now: UnixMillis) -> Result<Observation, SourceError> {
        let watch = self.cluster.health();
        if !watch.ready {
            let detail = format!("waiting for initial lists: {}", watch.pending.join(", "));
            self.health.error("kubernetes", detail.clone(), now);
            return Err(err(detail));
        }
        match &watch.last_error {
            Some(e) if watch.errors > 0 => self.health.ok(
                "kubernetes",
                format!("watching; {} errors so far, last: {e}", watch.errors),
                now,
            ),
            _ => self.health.ok("kubernetes", "watching", now),
        }
        let snapshot = self.cluster.snapshot();

        match self.prom.collect(now).await {
            Ok(usage) => {
                self.health.ok(
                    "prometheus",
                    format!(
                        "{} pods, {} nodes",
                        usage.pod_cpu_10m.len(),
                        usage.node_cpu_percent.len()
                    ),
                    now,
                );
                self.last_usage = Some((now, usage));
            }
            Err(e) => {
                let age = self.last_usage.as_ref().map(|(at, _)| (now - at) / 1000);
                let detail = match age {
                    Some(age) => format!("{e}; serving the last good usage from {age}s ago"),
                    None => format!("{e}; no usage collected yet"),
                };
                self.health.error("prometheus", detail, now);
            }
        }
        let Some((usage_at, usage)) = &self.last_usage else {
            return Err(err("no usage from Prometheus yet"));
        };
        // Inputs carry the time their usage was measured, so stale usage ages into the fail-safe.
        let mut observation = cluster::join(&snapshot, usage, *usage_at, &self.join);
        observation.at = now;

        if let Err(e) = self.store.record_tick(&observation).await {
            self.health.error("store", e.to_string(), now);
        } else {
            self.health
                .ok("store", format!("{}", self.store.path().display()), now);
        }
        if now - self.last_retention > 60_000 {
            self.last_retention = now;
            if let Err(e) = self.store.enforce_retention(now).await {
                self.health.error("store", format!("retention: {e}"), now);
            }
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
