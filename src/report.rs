//! The weekly report's adapter: gathers each managed deployment's week from the cost book (hourly cost rollups,
//! right-sizing), the anomaly history, the store's decisions, the forecasting board and the schedule book, and
//! hands it to [`domain::report::assemble`](crate::domain::report::assemble). Served at
//! `GET /api/v1/report/weekly`, printed by the `report` command, and sent once a week to the alert receivers
//! that subscribe to `weekly_report` (leader only).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerting::Alerting;
use crate::clock::Clock;
use crate::cost::CostBook;
use crate::domain::forecast::online::Board;
use crate::domain::model::{DeploymentKey, Snapshot, UnixMillis};
use crate::domain::report::{DeploymentWeek, ForecastWeek, WeeklyAt, WeeklyReport, assemble};
use crate::domain::rightsizing::PodPlan;
use crate::schedule::ScheduleBook;
use crate::store::Store;
use crate::store::anomalies::{AnomalyHistory, AnomalyQuery};

/// A week.
pub const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most anomalies read for one report (the history API's own cap is lower; a week of a busy cluster fits).
const MAX_ANOMALIES: usize = 100_000;

/// Where the report's figures come from; each is optional (a server without a store has no history).
#[derive(Clone, Default)]
pub struct ReportSources {
    /// Cost rollups and right-sizing.
    pub cost: Option<Arc<CostBook>>,
    /// Anomalies.
    pub anomalies: Option<AnomalyHistory>,
    /// Decisions (target changes).
    pub store: Option<Store>,
    /// Scaling schedules.
    pub schedules: Option<Arc<ScheduleBook>>,
    /// Forecasts.
    pub forecasts: Option<watch::Receiver<Arc<Board>>>,
}

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The store could not be read.
    #[error("reading the store: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// The report for the week ending `now`, over the deployments of `snapshot` (of `namespace`, when given).
pub async fn weekly(
    snapshot: &Snapshot,
    sources: &ReportSources,
    now: UnixMillis,
    namespace: Option<&str>,
) -> Result<WeeklyReport, ReportError> {
    let from = now - WEEK.as_millis() as i64;
    let wanted = |key: &DeploymentKey| namespace.is_none_or(|n| key.namespace == n);
    let keys: Vec<&DeploymentKey> = snapshot
        .deployments
        .keys()
        .chain(snapshot.unmeasured.keys())
        .filter(|k| wanted(k))
        .collect();
    let mut weeks: BTreeMap<DeploymentKey, DeploymentWeek> = keys
        .iter()
        .map(|k| {
            (
                (*k).clone(),
                DeploymentWeek {
                    namespace: k.namespace.clone(),
                    name: k.name.clone(),
                    cost_usd: None,
                    waste_usd: None,
                    pod_hours: None,
                    cost_hours: None,
                    savings_usd_month: None,
                    recommendation: None,
                    anomalies: BTreeMap::new(),
                    anomaly_types: BTreeMap::new(),
                    target_changes: 0,
                    tuning: Vec::new(),
                    forecast: None,
                    schedule_extra_replica_hours: None,
                },
            )
        })
        .collect();
    if let Some(cost) = &sources.cost {
        if let Some(history) = cost.history(7 * 24, namespace).await? {
            for d in history.deployments {
                if let Some(w) = weeks.get_mut(&d.key) {
                    w.cost_usd = Some(d.total_usd);
                    w.waste_usd = Some(d.waste_usd);
                    w.pod_hours = Some(d.pod_hours);
                    w.cost_hours = Some(d.window_millis as f64 / 3_600_000.0);
                }
            }
        }
        for r in cost.recommendations(namespace) {
            let key = DeploymentKey::new(r.namespace.clone(), r.name.clone());
            if let Some(w) = weeks.get_mut(&key) {
                let (savings, words) = match &r.plan {
                    PodPlan::Change { reason, projection } => {
                        (Some(projection.savings_usd_month), reason.clone())
                    }
                    PodPlan::Keep { reason, .. } => (Some(0.0), reason.clone()),
                    PodPlan::NotEnoughData { reason } | PodPlan::Invalid { reason } => {
                        (None, reason.clone())
                    }
                };
                w.savings_usd_month = savings;
                w.recommendation = Some(words);
            }
        }
    }
    if let Some(history) = &sources.anomalies {
        let found = history
            .query(&AnomalyQuery {
                namespace: namespace.map(str::to_string),
                deployment: None,
                since: Some(from),
                limit: MAX_ANOMALIES,
            })
            .await?;
        for a in found.iter().filter(|a| a.started_at >= from) {
            if let Some(w) = weeks.get_mut(&a.key) {
                *w.anomalies
                    .entry(a.severity.as_str().to_string())
                    .or_default() += 1;
                *w.anomaly_types
                    .entry(a.kind.as_str().to_string())
                    .or_default() += 1;
            }
        }
    }
    if let Some(store) = &sources.store {
        for (key, w) in weeks.iter_mut() {
            w.target_changes = store.decisions(key, from, now + 1).await?.len() as u32;
        }
    }
    if let Some(board) = &sources.forecasts {
        let board = board.borrow().clone();
        for (key, w) in weeks.iter_mut() {
            if let Some(p) = board.get(key) {
                w.forecast = Some(ForecastWeek {
                    scored: p.scores.scored,
                    mape: p.scores.mape,
                    mase: p.scores.mase,
                    trusted: p.advice.trusted,
                });
            }
        }
    }
    if let Some(book) = &sources.schedules {
        for (key, w) in weeks.iter_mut() {
            if let Some(s) = book.get(key).and_then(|l| {
                l.schedule(crate::schedule::default_bounds(l.base_target_percent))
                    .ok()
            }) {
                w.schedule_extra_replica_hours = Some(s.extra_replica_hours());
            }
        }
    }
    Ok(assemble(
        from,
        now,
        namespace.map(str::to_string),
        weeks.into_values().collect(),
    ))
}

/// Sends the report to the receivers that subscribe to `weekly_report`, at `at` every week, while this replica
/// leads; a replica that does not lead skips that week's report (the leader sends it).
pub fn spawn_weekly_alerts(
    at: WeeklyAt,
    alerting: Arc<Alerting>,
    sources: ReportSources,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    leadership: watch::Receiver<bool>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    tokio::spawn(async move {
        let mut due = at.next_after(clock.now_millis());
        tracing::info!(due = %crate::clock::rfc3339(due), "weekly report: next");
        loop {
            let wait = (due - clock.now_millis()).max(0) as u64;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(wait.min(60_000))) => {}
            }
            let now = clock.now_millis();
            if now < due {
                continue;
            }
            due = at.next_after(now);
            if !*leadership.borrow() {
                tracing::info!("weekly report: not the leader, the leader sends it");
                continue;
            }
            let snapshot = snapshots.borrow().clone();
            let Some(snapshot) = snapshot else {
                tracing::warn!("weekly report: no snapshot yet, skipped this week");
                continue;
            };
            match weekly(&snapshot, &sources, now, None).await {
                Ok(report) => {
                    let sent = alerting.send_report(&report);
                    tracing::info!(receivers = sent, "weekly report sent");
                }
                Err(e) => tracing::warn!(error = %e, "weekly report: not made"),
            }
        }
    });
}
