//! The schedule book: each managed deployment's weekly demand levels ([`domain::schedule`]), relearned from the
//! store's five-minute rollups in the background, so the schedule API, the dashboard and the
//! `smart_autoscaler_schedule_min_replicas` gauge read a cached answer and never the store on a request.
//!
//! Levels, not schedules, are cached: a schedule also depends on the HPA's minReplicas, maxReplicas and lead,
//! which the API takes as query parameters, and turning levels into a schedule costs microseconds.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::cost::DeploymentLabels;
use crate::domain::model::{DeploymentKey, Snapshot, UnixMillis};
use crate::domain::schedule::{
    Bounds, Schedule, ScheduleConfig, ScheduleError, WeeklyLevels, schedule, weekly_levels,
};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// History the levels are learned from: four weeks, so each day of the week is seen up to four times.
pub const LEARN_FROM: Duration = Duration::from_secs(28 * 24 * 3600);
/// Minutes before a higher floor's hour the schedule starts it, unless the caller says otherwise.
pub const DEFAULT_LEAD_MINUTES: u32 = 10;
/// The rollups' bucket.
const ROLLUP_MILLIS: i64 = 5 * 60_000;

/// What was learned for one deployment.
#[derive(Debug, Clone)]
pub struct Learned {
    /// The weekly levels, or why there are none.
    pub levels: Result<WeeklyLevels, ScheduleError>,
    /// The HPA's target for the metric at the time (the schedule's default target).
    pub base_target_percent: f64,
    /// When.
    pub learned_at: UnixMillis,
}

impl Learned {
    /// The schedule for the HPA's own bounds (`min_replicas` 1 and no maximum unless given).
    pub fn schedule(&self, bounds: Bounds) -> Result<Schedule, ScheduleError> {
        schedule(self.levels.as_ref().map_err(Clone::clone)?, bounds)
    }
}

/// Learned levels per deployment; cheap to share (`Arc`).
#[derive(Debug)]
pub struct ScheduleBook {
    config: ScheduleConfig,
    learned: RwLock<BTreeMap<DeploymentKey, Arc<Learned>>>,
    gauge: Family<DeploymentLabels, Gauge>,
}

impl ScheduleBook {
    /// An empty book learning with `config`.
    pub fn new(config: ScheduleConfig) -> ScheduleBook {
        ScheduleBook {
            config,
            learned: RwLock::new(BTreeMap::new()),
            gauge: Family::default(),
        }
    }

    /// Registers `smart_autoscaler_schedule_min_replicas`.
    pub fn register(&self, telemetry: &Telemetry) {
        telemetry.register(
            "schedule_min_replicas",
            "Recommended minReplicas for the current hour of the week from the deployment's learned weekly \
             demand, at its HPA target with minReplicas 1; absent while there is not enough history",
            self.gauge.clone(),
        );
    }

    /// The settings it learns with.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// What was learned for `key`, if it was managed at the last round.
    pub fn get(&self, key: &DeploymentKey) -> Option<Arc<Learned>> {
        self.learned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    /// Relearns every deployment of `snapshot` from the store; deployments no longer managed are forgotten.
    pub async fn refresh(&self, store: &Store, snapshot: &Snapshot, now: UnixMillis) {
        let from = now - i64::try_from(LEARN_FROM.as_millis()).unwrap_or(i64::MAX);
        let mut learned = BTreeMap::new();
        for (key, served) in &snapshot.deployments {
            let levels = match store.rollups(key, from, now).await {
                Ok(rollups) => {
                    let points: Vec<(UnixMillis, f64)> = rollups
                        .iter()
                        .map(|r| (r.start, crate::refit::demand(r)))
                        .collect();
                    weekly_levels(&points, ROLLUP_MILLIS, &self.config)
                }
                Err(e) => {
                    tracing::warn!(deployment = %key, error = %e, "schedule: reading the store");
                    // Keep what was learned before rather than forget it over a read error.
                    match self.get(key) {
                        Some(old) => {
                            learned.insert(key.clone(), old);
                            continue;
                        }
                        None => Err(ScheduleError::NotEnoughData {
                            days: 0,
                            needed: self.config.min_days,
                        }),
                    }
                }
            };
            learned.insert(
                key.clone(),
                Arc::new(Learned {
                    levels,
                    base_target_percent: served.inputs.base_target_percent,
                    learned_at: now,
                }),
            );
        }
        self.gauge.clear();
        for (key, l) in &learned {
            if let Ok(s) = l.schedule(default_bounds(l.base_target_percent)) {
                self.gauge
                    .get_or_create(&DeploymentLabels {
                        namespace: key.namespace.clone(),
                        deployment: key.name.clone(),
                    })
                    .set(i64::from(s.replicas_at(now)));
            }
        }
        *self.learned.write().unwrap_or_else(|e| e.into_inner()) = learned;
    }

    /// Relearns every `every` (the first round as soon as a snapshot exists) until `cancel`.
    pub fn spawn(
        self: &Arc<Self>,
        store: Store,
        mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
        clock: Arc<dyn Clock>,
        every: Duration,
        cancel: CancellationToken,
    ) {
        let book = self.clone();
        tokio::spawn(async move {
            // Wait for the first snapshot, then learn at once: the demo seeds days of history.
            loop {
                if snapshots.borrow_and_update().is_some() {
                    break;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    changed = snapshots.changed() => if changed.is_err() { return },
                }
            }
            loop {
                let snapshot = snapshots.borrow().clone();
                if let Some(snapshot) = snapshot {
                    book.refresh(&store, &snapshot, clock.now_millis()).await;
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
    }
}

/// The bounds the gauge and the dashboard use: the HPA's target, minReplicas 1, no maximum, the default lead.
pub fn default_bounds(target_percent: f64) -> Bounds {
    Bounds {
        target_percent,
        min_replicas: 1,
        max_replicas: None,
        lead_minutes: DEFAULT_LEAD_MINUTES,
    }
}
