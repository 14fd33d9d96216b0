//! The alert router: pure code (no IO, no clock) that turns consecutive snapshots into alert events. It owns
//! deduplication and grouping: one alert per deployment and anomaly type while it is active (several anomalies of
//! one type on one deployment are one alert, at the highest severity seen), fired when it appears, resolved
//! when it is gone, and nothing in between. A severity that rises re-fires the alert with the new severity.
//! A forecast that starts raising a deployment's served value is a "predictive scale-up taken" alert, resolved
//! when the forecast stops raising it.

use std::collections::BTreeMap;

use crate::domain::anomaly::{AnomalyKind, Severity};
use crate::domain::model::{DeploymentKey, Snapshot, UnixMillis};

/// The kinds of alert a receiver can subscribe to (`alerts = [...]` in the config file).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// A detector reported an anomaly.
    Anomaly,
    /// A forecast raised the served value ahead of the load: the HPA scales up before the load arrives.
    PredictiveScaleUp,
    /// The weekly report (cost, savings, anomalies, tuning, forecasts). Not in the default subscription: a
    /// receiver lists it in `alerts` to get it.
    WeeklyReport,
}

impl AlertKind {
    /// Every kind (the default subscription).
    pub const ALL: [AlertKind; 2] = [AlertKind::Anomaly, AlertKind::PredictiveScaleUp];

    /// The name in the config file and in payloads.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Anomaly => "anomaly",
            AlertKind::PredictiveScaleUp => "predictive_scale_up",
            AlertKind::WeeklyReport => "weekly_report",
        }
    }
}

/// What an alert is about: its identity. Two events with the same subject are the same alert.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subject {
    /// The deployment.
    pub key: DeploymentKey,
    /// The alert kind.
    pub kind: AlertKind,
    /// The anomaly type, for anomalies.
    pub anomaly: Option<AnomalyKind>,
}

impl Subject {
    /// The alert's type label: the anomaly type, or `predictive_scale_up`.
    pub fn type_name(&self) -> &'static str {
        self.anomaly.map_or(self.kind.as_str(), AnomalyKind::as_str)
    }

    /// A stable identifier: PagerDuty's `dedup_key`, the webhook's `id`.
    pub fn id(&self) -> String {
        format!(
            "smart-autoscaler/{}/{}/{}",
            self.key.namespace,
            self.key.name,
            self.type_name()
        )
    }
}

/// One alert as receivers render it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// What it is about.
    pub subject: Subject,
    /// How urgent.
    pub severity: Severity,
    /// A short title.
    pub title: String,
    /// One sentence with the numbers.
    pub summary: String,
    /// When it started (the snapshot's clock).
    pub started_at: UnixMillis,
    /// When it ended, for a resolved alert.
    pub ended_at: Option<UnixMillis>,
    /// The evidence, as ordered name/value pairs (expected/actual/score, or predicted/confidence/reasoning).
    pub details: Vec<(String, String)>,
}

/// Whether an alert starts (or changes) or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Active: new, or its severity rose.
    Firing,
    /// No longer holds.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Firing => "firing",
            Status::Resolved => "resolved",
        }
    }
}

/// One change of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Firing or resolved.
    pub status: Status,
    /// The alert as of this change.
    pub alert: Alert,
    /// For a firing event that re-fires an active alert at a higher severity, the severity it had.
    pub escalated_from: Option<Severity>,
}

/// The router's memory: the alerts active after the last snapshot.
#[derive(Debug, Default)]
pub struct Router {
    active: BTreeMap<Subject, Alert>,
}

fn fmt_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "n/a".into()
    }
}

impl Router {
    /// A router with nothing active.
    pub fn new() -> Self {
        Self::default()
    }

    /// The alerts active now.
    pub fn active(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    /// The events that take the active set from the previous snapshot's to this one's.
    pub fn observe(&mut self, snapshot: &Snapshot) -> Vec<Event> {
        let current = current_alerts(snapshot);
        let mut events = Vec::new();
        // Resolved: active before, not now. An anomaly that ended on this tick says when.
        let gone: Vec<Subject> = self
            .active
            .keys()
            .filter(|s| !current.contains_key(*s))
            .cloned()
            .collect();
        for subject in gone {
            let Some(mut alert) = self.active.remove(&subject) else {
                continue;
            };
            let ended = snapshot
                .anomalies
                .iter()
                .filter(|a| Some(a.kind) == subject.anomaly && a.key == subject.key)
                .filter_map(|a| a.ended_at)
                .max();
            alert.ended_at = Some(ended.unwrap_or(snapshot.collected_at));
            events.push(Event {
                status: Status::Resolved,
                alert,
                escalated_from: None,
            });
        }
        for (subject, alert) in current {
            match self.active.get_mut(&subject) {
                None => {
                    events.push(Event {
                        status: Status::Firing,
                        alert: alert.clone(),
                        escalated_from: None,
                    });
                    self.active.insert(subject, alert);
                }
                Some(known) if alert.severity > known.severity => {
                    let from = known.severity;
                    *known = alert.clone();
                    events.push(Event {
                        status: Status::Firing,
                        alert,
                        escalated_from: Some(from),
                    });
                }
                // Still active, same or lower severity: nothing to say (the evidence is refreshed for re-sends).
                Some(known) => {
                    let severity = known.severity;
                    let started_at = known.started_at.min(alert.started_at);
                    *known = Alert {
                        severity,
                        started_at,
                        ..alert
                    };
                }
            }
        }
        events
    }
}

/// The alerts that hold on `snapshot`, one per subject.
fn current_alerts(snapshot: &Snapshot) -> BTreeMap<Subject, Alert> {
    let mut current: BTreeMap<Subject, Alert> = BTreeMap::new();
    for anomaly in snapshot.anomalies.iter().filter(|a| a.is_active()) {
        let subject = Subject {
            key: anomaly.key.clone(),
            kind: AlertKind::Anomaly,
            anomaly: Some(anomaly.kind),
        };
        let alert = Alert {
            title: format!(
                "{} on {}/{}",
                anomaly.kind.as_str().replace('_', " "),
                anomaly.key.namespace,
                anomaly.key.name
            ),
            summary: anomaly.summary.clone(),
            severity: anomaly.severity,
            started_at: anomaly.started_at,
            ended_at: None,
            details: vec![
                ("expected".into(), fmt_num(anomaly.expected)),
                ("actual".into(), fmt_num(anomaly.actual)),
                ("score".into(), format!("{:.2}", anomaly.score)),
            ],
            subject: subject.clone(),
        };
        match current.get_mut(&subject) {
            // Grouped: one alert per deployment and type, at the highest severity and the earliest start.
            Some(known) => {
                let started_at = known.started_at.min(alert.started_at);
                if alert.severity > known.severity {
                    *known = alert;
                }
                known.started_at = started_at;
            }
            None => {
                current.insert(subject, alert);
            }
        }
    }
    for (key, served) in &snapshot.deployments {
        let e = &served.explanation;
        if !e.forecast_applied {
            continue;
        }
        let predicted = e.forecast_percent.unwrap_or(e.served_percent);
        let confidence = e.forecast.as_ref().map_or(e.confidence, |f| f.confidence);
        let reasoning = if e.reasons.is_empty() {
            "forecast raised the served value".to_string()
        } else {
            e.reasons.join("; ")
        };
        let subject = Subject {
            key: key.clone(),
            kind: AlertKind::PredictiveScaleUp,
            anomaly: None,
        };
        current.insert(
            subject.clone(),
            Alert {
                title: format!("predictive scale-up on {}/{}", key.namespace, key.name),
                summary: format!(
                    "Forecast {}% utilization (measured {}%) raised the served value to {}% at confidence {:.2}: \
                     the HPA scales up ahead of the load.",
                    fmt_num(predicted),
                    fmt_num(e.raw_percent),
                    fmt_num(e.served_percent),
                    confidence
                ),
                severity: Severity::Info,
                started_at: snapshot.collected_at,
                ended_at: None,
                details: vec![
                    ("predicted_percent".into(), fmt_num(predicted)),
                    ("measured_percent".into(), fmt_num(e.raw_percent)),
                    ("served_percent".into(), fmt_num(e.served_percent)),
                    ("confidence".into(), format!("{confidence:.2}")),
                    ("reasoning".into(), reasoning),
                ],
                subject,
            },
        );
    }
    current
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::anomaly::Anomaly;

    /// An anomaly on `demo/<name>`, active unless `ended_at` is given.
    pub(crate) fn anomaly(
        name: &str,
        kind: AnomalyKind,
        severity: Severity,
        started_at: i64,
        ended_at: Option<i64>,
    ) -> Anomaly {
        Anomaly {
            key: DeploymentKey::new("demo", name),
            kind,
            severity,
            started_at,
            last_seen_at: ended_at.unwrap_or(started_at),
            ended_at,
            expected: 40.0,
            actual: 95.0,
            score: 0.9,
            summary: format!("{name}: CPU 95% where 40% was expected"),
        }
    }

    pub(crate) fn snapshot(at: i64, anomalies: Vec<Anomaly>) -> Snapshot {
        Snapshot {
            collected_at: at,
            measured_at: at,
            interval_millis: 15_000,
            anomalies,
            ..Default::default()
        }
    }

    fn summary(events: &[Event]) -> Vec<(Status, String, Severity)> {
        events
            .iter()
            .map(|e| (e.status, e.alert.subject.id(), e.alert.severity))
            .collect()
    }

    #[test]
    fn fires_once_while_active_and_resolves_once() {
        let mut router = Router::new();
        let spike = |at, end| {
            anomaly("api", AnomalyKind::CpuSpike, Severity::Warning, 1_000, end).clone_at(at)
        };
        let events = router.observe(&snapshot(1_000, vec![spike(1_000, None)]));
        assert_eq!(
            summary(&events),
            [(
                Status::Firing,
                "smart-autoscaler/demo/api/cpu_spike".into(),
                Severity::Warning
            )]
        );
        // Still active on the next ticks: deduplicated.
        for at in [16_000, 31_000] {
            assert!(
                router
                    .observe(&snapshot(at, vec![spike(at, None)]))
                    .is_empty()
            );
        }
        assert_eq!(router.active().count(), 1);
        // Ended on this tick: resolved with the anomaly's own end.
        let events = router.observe(&snapshot(46_000, vec![spike(46_000, Some(40_000))]));
        assert_eq!(
            summary(&events),
            [(
                Status::Resolved,
                "smart-autoscaler/demo/api/cpu_spike".into(),
                Severity::Warning
            )]
        );
        assert_eq!(events[0].alert.ended_at, Some(40_000));
        assert_eq!(events[0].alert.started_at, 1_000);
        // Gone for good: nothing more.
        assert!(router.observe(&snapshot(61_000, vec![])).is_empty());
        assert_eq!(router.active().count(), 0);
    }

    #[test]
    fn groups_per_deployment_and_type() {
        let mut router = Router::new();
        let events = router.observe(&snapshot(
            10_000,
            vec![
                anomaly("api", AnomalyKind::CpuSpike, Severity::Info, 5_000, None),
                anomaly(
                    "api",
                    AnomalyKind::CpuSpike,
                    Severity::Critical,
                    9_000,
                    None,
                ),
                anomaly(
                    "api",
                    AnomalyKind::ScalingThrash,
                    Severity::Warning,
                    2_000,
                    None,
                ),
                anomaly("web", AnomalyKind::CpuSpike, Severity::Warning, 3_000, None),
            ],
        ));
        assert_eq!(
            summary(&events),
            [
                (
                    Status::Firing,
                    "smart-autoscaler/demo/api/cpu_spike".into(),
                    Severity::Critical
                ),
                (
                    Status::Firing,
                    "smart-autoscaler/demo/api/scaling_thrash".into(),
                    Severity::Warning
                ),
                (
                    Status::Firing,
                    "smart-autoscaler/demo/web/cpu_spike".into(),
                    Severity::Warning
                ),
            ]
        );
        // The grouped alert takes the highest severity and the earliest start.
        assert_eq!(events[0].alert.started_at, 5_000);
        // A resolved one disappears without touching the others.
        let events = router.observe(&snapshot(
            25_000,
            vec![
                anomaly(
                    "api",
                    AnomalyKind::CpuSpike,
                    Severity::Critical,
                    9_000,
                    None,
                ),
                anomaly("web", AnomalyKind::CpuSpike, Severity::Warning, 3_000, None),
            ],
        ));
        assert_eq!(
            summary(&events),
            [(
                Status::Resolved,
                "smart-autoscaler/demo/api/scaling_thrash".into(),
                Severity::Warning
            )]
        );
        assert_eq!(
            events[0].alert.ended_at,
            Some(25_000),
            "no end in the snapshot: the tick's time"
        );
    }

    #[test]
    fn rising_severity_refires_and_falling_does_not() {
        let mut router = Router::new();
        let at = |sev| {
            snapshot(
                0,
                vec![anomaly("api", AnomalyKind::PersistentHighCpu, sev, 0, None)],
            )
        };
        assert_eq!(router.observe(&at(Severity::Warning)).len(), 1);
        let events = router.observe(&at(Severity::Critical));
        assert_eq!(
            summary(&events),
            [(
                Status::Firing,
                "smart-autoscaler/demo/api/persistent_high_cpu".into(),
                Severity::Critical
            )]
        );
        assert_eq!(events[0].escalated_from, Some(Severity::Warning));
        assert!(router.observe(&at(Severity::Warning)).is_empty());
        assert_eq!(router.active().next().unwrap().severity, Severity::Critical);
    }

    /// A snapshot where `demo/api` is served with `forecast` (percent) as the forecast hook, at 50% measured.
    pub(crate) fn forecast_snapshot(at: i64, forecast: Option<f64>) -> Snapshot {
        use crate::domain::decision::{DecisionConfig, Hooks, decide};
        use crate::domain::model::ServedDeployment;
        let key = DeploymentKey::new("demo", "api");
        let inputs = crate::domain::testing::inputs()
            .key(&key)
            .cpu(50.0)
            .at(at)
            .build();
        let hooks = Hooks {
            forecast_percent: forecast,
            ..Hooks::default()
        };
        let (explanation, _) = decide(&inputs, &DecisionConfig::default(), None, hooks, at);
        let mut snap = snapshot(at, vec![]);
        snap.deployments.insert(
            key,
            ServedDeployment {
                raw_percent: explanation.raw_percent,
                smart_percent: explanation.served_percent,
                inputs,
                explanation,
            },
        );
        snap
    }

    #[test]
    fn a_forecast_that_raises_the_value_is_a_predictive_scale_up() {
        let mut router = Router::new();
        // A forecast below the measured value raises nothing.
        assert!(router.observe(&forecast_snapshot(0, Some(30.0))).is_empty());
        let events = router.observe(&forecast_snapshot(15_000, Some(90.0)));
        assert_eq!(
            summary(&events),
            [(
                Status::Firing,
                "smart-autoscaler/demo/api/predictive_scale_up".into(),
                Severity::Info
            )]
        );
        let alert = &events[0].alert;
        assert_eq!(alert.subject.kind, AlertKind::PredictiveScaleUp);
        let detail = |name: &str| {
            alert
                .details
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(detail("predicted_percent"), "90.0");
        assert_eq!(detail("measured_percent"), "50.0");
        assert!(detail("confidence").parse::<f64>().is_ok());
        assert!(!detail("reasoning").is_empty());
        // While the forecast keeps raising it: one alert. When it stops: resolved.
        assert!(
            router
                .observe(&forecast_snapshot(30_000, Some(95.0)))
                .is_empty()
        );
        let events = router.observe(&forecast_snapshot(45_000, None));
        assert_eq!(
            summary(&events),
            [(
                Status::Resolved,
                "smart-autoscaler/demo/api/predictive_scale_up".into(),
                Severity::Info
            )]
        );
    }

    trait CloneAt {
        fn clone_at(self, at: i64) -> Self;
    }
    impl CloneAt for Anomaly {
        fn clone_at(mut self, at: i64) -> Self {
            self.last_seen_at = self.ended_at.unwrap_or(at);
            self
        }
    }
}
