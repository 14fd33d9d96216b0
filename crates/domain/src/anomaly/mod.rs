//! Anomalies: what the detectors report about a deployment. This module owns the shared vocabulary (kind,
//! severity, evidence) that the tick publishes in the [`Snapshot`](crate::model::Snapshot), the store keeps, the
//! HTTP API lists and the alert router delivers. The detectors themselves are pure functions of the tick's inputs
//! and their own small per-deployment state, so `serve`, `demo` and `simulate` all see the same anomalies.

pub mod detect;
pub mod learned;
pub mod nab;
pub mod rules;

pub use detect::DetectorStates;
pub use rules::AnomalyConfig;

use crate::model::{DeploymentKey, UnixMillis};

/// What kind of unusual behaviour was seen.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// Utilization more than three standard deviations above the deployment's own expected value for that time.
    CpuSpike,
    /// Too many replica changes in a short window.
    ScalingThrash,
    /// High utilization held while the HPA cannot add capacity (at maxReplicas, or pods unschedulable).
    PersistentHighCpu,
    /// Actuals outside the validated forecast band for a sustained window.
    PatternDeviation,
    /// The learned detector's score crossed its threshold.
    Learned,
}

impl AnomalyKind {
    /// Every kind, in a stable order (for metrics that must show zero counts).
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::CpuSpike,
        AnomalyKind::ScalingThrash,
        AnomalyKind::PersistentHighCpu,
        AnomalyKind::PatternDeviation,
        AnomalyKind::Learned,
    ];

    /// The label value used in metrics, the API and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::CpuSpike => "cpu_spike",
            AnomalyKind::ScalingThrash => "scaling_thrash",
            AnomalyKind::PersistentHighCpu => "persistent_high_cpu",
            AnomalyKind::PatternDeviation => "pattern_deviation",
            AnomalyKind::Learned => "learned",
        }
    }
}

/// How urgent an anomaly is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth a look.
    Info,
    /// Needs attention.
    Warning,
    /// Users are likely affected.
    Critical,
}

impl Severity {
    /// Every severity, in a stable order.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The label value used in metrics, the API and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One anomaly of one deployment: open while `ended_at` is `None`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Anomaly {
    /// The deployment it concerns.
    pub key: DeploymentKey,
    /// What was seen.
    pub kind: AnomalyKind,
    /// How urgent it is (the highest seen while it was open).
    pub severity: Severity,
    /// When it was first seen.
    pub started_at: UnixMillis,
    /// When it was last seen to hold.
    pub last_seen_at: UnixMillis,
    /// When it stopped holding; `None` while active.
    pub ended_at: Option<UnixMillis>,
    /// The evidence: the value the detector expected, in the unit of `actual`.
    pub expected: f64,
    /// The evidence: the value observed.
    pub actual: f64,
    /// The learned detector's score in [0, 1] where one applies, else the rule's own strength in [0, 1].
    pub score: f64,
    /// One sentence a person can act on, with the numbers that triggered it.
    pub summary: String,
}

impl Anomaly {
    /// Whether it still holds.
    pub fn is_active(&self) -> bool {
        self.ended_at.is_none()
    }
}
