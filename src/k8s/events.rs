//! Publishes the Kubernetes Events the domain finds in each tick (`domain::events::changes`) on the Deployments
//! they are about, so `kubectl describe deployment` shows when and why the autoscaler changed its target, opened
//! or closed forecast trust, or fell back to the fail-safe.
//!
//! Only the leader publishes (the replicas compute the same events). Publishing runs on its own task, never in
//! the tick. It is bounded three ways: one Event per Deployment and reason per `min_gap` (a flapping target
//! cannot flood the API server), at most `per_tick` per snapshot, and 5 s per API call. kube's `Recorder` folds
//! repeats of one Event into a series, as client-go's recorder does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::domain::events::{self, DeploymentEvent, EventKind, EventReason};
use crate::domain::model::{DeploymentKey, Snapshot};
use crate::telemetry::Telemetry;

/// Limits on publishing.
#[derive(Debug, Clone)]
pub struct EventLimits {
    /// Least time between two Events of one reason on one Deployment.
    pub min_gap: Duration,
    /// Most Events published for one snapshot; the rest are dropped and counted.
    pub per_tick: usize,
    /// Time limit of one API call.
    pub call_timeout: Duration,
}

impl Default for EventLimits {
    fn default() -> Self {
        EventLimits {
            min_gap: Duration::from_secs(300),
            per_tick: 20,
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// Labels of `smart_autoscaler_kube_events_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    reason: &'static str,
    /// `published`, `failed`, `rate_limited` or `not_leader`.
    outcome: &'static str,
}

/// Follows `snapshots` until `cancel`, publishing each tick's Events while `leadership` says this replica leads.
pub fn spawn(
    client: Client,
    identity: String,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    leadership: watch::Receiver<bool>,
    telemetry: &Telemetry,
    limits: EventLimits,
    cancel: CancellationToken,
) {
    let counts = Family::<EventLabels, Counter>::default();
    telemetry.register(
        "kube_events",
        "Kubernetes Events on managed Deployments, by reason and outcome (published, failed, rate_limited, not_leader)",
        counts.clone(),
    );
    let reporter = Reporter {
        controller: "smart-autoscaler".into(),
        instance: Some(identity),
    };
    let publisher = Publisher {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        limits,
        counts,
        last: HashMap::new(),
    };
    tokio::spawn(publisher.run(snapshots, leadership, cancel));
}

struct Publisher {
    recorder: Recorder,
    client: Client,
    limits: EventLimits,
    counts: Family<EventLabels, Counter>,
    last: HashMap<(DeploymentKey, EventReason), tokio::time::Instant>,
}

impl Publisher {
    async fn run(
        mut self,
        mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        leadership: watch::Receiver<bool>,
        cancel: CancellationToken,
    ) {
        let mut previous: Option<Arc<Snapshot>> = snapshots.borrow_and_update().clone();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = snapshots.changed() => if changed.is_err() { return },
            }
            let next = snapshots.borrow_and_update().clone();
            let Some(next) = next else { continue };
            let found = events::changes(previous.as_deref(), &next);
            previous = Some(next);
            if found.is_empty() {
                continue;
            }
            let leads = *leadership.borrow();
            let mut budget = self.limits.per_tick;
            for event in found {
                let outcome = if !leads {
                    "not_leader"
                } else if budget == 0 || !self.due(&event) {
                    "rate_limited"
                } else {
                    budget -= 1;
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        outcome = self.publish(&event) => outcome,
                    }
                };
                self.counts
                    .get_or_create(&EventLabels {
                        reason: event.reason.as_str(),
                        outcome,
                    })
                    .inc();
            }
        }
    }

    /// Whether this Deployment's last Event of this reason is older than the gap (and notes this one if so).
    fn due(&mut self, event: &DeploymentEvent) -> bool {
        let now = tokio::time::Instant::now();
        let key = (event.key.clone(), event.reason);
        if self
            .last
            .get(&key)
            .is_some_and(|t| now.duration_since(*t) < self.limits.min_gap)
        {
            return false;
        }
        self.last.insert(key, now);
        true
    }

    async fn publish(&self, event: &DeploymentEvent) -> &'static str {
        let timeout = self.limits.call_timeout;
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &event.key.namespace);
        // `kubectl describe` matches Events by the object's uid, so the reference carries it.
        let uid = match tokio::time::timeout(timeout, deployments.get(&event.key.name)).await {
            Ok(Ok(d)) => d.metadata.uid,
            Ok(Err(e)) => {
                tracing::debug!(deployment = %event.key, error = %e, "event: reading the Deployment's uid failed");
                None
            }
            Err(_) => None,
        };
        let reference = ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("Deployment".into()),
            namespace: Some(event.key.namespace.clone()),
            name: Some(event.key.name.clone()),
            uid,
            ..Default::default()
        };
        let ev = Event {
            type_: match event.reason.kind() {
                EventKind::Normal => EventType::Normal,
                EventKind::Warning => EventType::Warning,
            },
            reason: event.reason.as_str().into(),
            note: Some(event.note.clone()),
            action: event.reason.action().into(),
            secondary: None,
        };
        match tokio::time::timeout(timeout, self.recorder.publish(&ev, &reference)).await {
            Ok(Ok(())) => "published",
            Ok(Err(e)) => {
                tracing::warn!(deployment = %event.key, reason = event.reason.as_str(), error = %e, "event: publishing failed");
                "failed"
            }
            Err(_) => {
                tracing::warn!(deployment = %event.key, reason = event.reason.as_str(), "event: publishing timed out");
                "failed"
            }
        }
    }
}
