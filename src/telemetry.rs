//! The server's own Prometheus metrics (prometheus-client, OpenMetrics exposition): request counts and latency
//! per route, snapshot age, engine tick outcomes, and the per-deployment gauges of the served snapshot (served
//! value, raw, targets, pressure, confidence, forecast), rebuilt from the snapshot at each scrape and capped in
//! number (docs/metrics.md lists every metric).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// Labels of the per-route request metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Which listener: `secure` or `metrics`.
    pub server: &'static str,
    /// The route template (e.g. `/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}`).
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub code: u16,
}

/// Labels of the per-route latency histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Which listener.
    pub server: &'static str,
    /// The route template.
    pub route: String,
}

/// Labels for engine tick outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// All metric families, registered once at start. Cheap to share: every field is an `Arc` inside.
pub struct Telemetry {
    // A std mutex: registration happens at wiring time and encoding is synchronous, never across `.await`.
    registry: std::sync::Mutex<Registry>,
    /// Requests served, by route and code.
    pub requests: Family<RouteLabels, Counter>,
    /// Request latency, by route.
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Age of the served snapshot when last scraped.
    pub snapshot_age_seconds: Gauge<f64, AtomicU64>,
    /// Deployments in the served snapshot.
    pub deployments: Gauge,
    /// Engine ticks by outcome.
    pub ticks: Family<OutcomeLabels, Counter>,
    /// jemalloc's statistics, refreshed at each scrape: bytes allocated and live, and bytes resident.
    allocator: Family<AllocatorLabels, Gauge>,
    /// The per-deployment gauges, rebuilt from the snapshot at each scrape.
    per_deployment: DeploymentGauges,
}

/// Labels of the allocator gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocatorLabels {
    /// `allocated` (live heap), `active` (pages holding it), `resident` (the allocator's resident pages, live or
    /// not yet returned) or `retained` (address space kept unmapped for reuse).
    pub kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Creates and registers every family under the `smart_autoscaler` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("smart_autoscaler");
        let requests = Family::<RouteLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let snapshot_age_seconds = Gauge::<f64, AtomicU64>::default();
        let deployments = Gauge::default();
        let ticks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests handled, by route and status code",
            Listed(requests.clone()),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency, by route",
            prometheus_client::registry::Unit::Seconds,
            Listed(latency.clone()),
        );
        registry.register_with_unit(
            "snapshot_age",
            "Age of the served metric snapshot",
            prometheus_client::registry::Unit::Seconds,
            Listed(snapshot_age_seconds.clone()),
        );
        registry.register(
            "managed_deployments",
            "Deployments in the served snapshot",
            Listed(deployments.clone()),
        );
        registry.register(
            "engine_ticks",
            "Collection ticks, by outcome",
            Listed(ticks.clone()),
        );
        let allocator = Family::<AllocatorLabels, Gauge>::default();
        registry.register_with_unit(
            "allocator",
            "Heap statistics of jemalloc, the binary's allocator (zero where it is not the allocator, as in tests)",
            prometheus_client::registry::Unit::Bytes,
            Listed(allocator.clone()),
        );
        let per_deployment = DeploymentGauges::new(&mut registry, DEFAULT_MAX_DEPLOYMENTS);
        Telemetry {
            per_deployment,
            allocator,
            registry: std::sync::Mutex::new(registry),
            requests,
            latency,
            snapshot_age_seconds,
            deployments,
            ticks,
        }
    }

    /// Caps the deployments the per-deployment gauges are exported for (`--metrics-max-deployments`); 0 exports
    /// none.
    pub fn with_max_deployments(mut self, max: usize) -> Self {
        self.per_deployment.max = max;
        self
    }

    /// Renders the OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.encode_with(None)
    }

    /// Renders the OpenMetrics text exposition with the per-deployment gauges rebuilt from `snapshot` (none
    /// without one). The registry's lock is held from the rebuild to the end of the encoding, so two scrapes at
    /// once never see each other's half-built series.
    pub fn encode_with(&self, snapshot: Option<&crate::domain::model::Snapshot>) -> String {
        self.refresh_allocator();
        let mut out = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.per_deployment.refresh(snapshot);
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    #[cfg(all(unix, not(target_env = "musl")))]
    fn refresh_allocator(&self) {
        use tikv_jemalloc_ctl::{epoch, stats};
        // The statistics are a snapshot taken when the epoch advances.
        if epoch::advance().is_err() {
            return;
        }
        for (kind, read) in [
            (
                "allocated",
                stats::allocated::read as fn() -> tikv_jemalloc_ctl::Result<usize>,
            ),
            ("active", stats::active::read),
            ("resident", stats::resident::read),
            ("retained", stats::retained::read),
        ] {
            if let Ok(bytes) = read() {
                self.allocator
                    .get_or_create(&AllocatorLabels { kind })
                    .set(bytes as i64);
            }
        }
    }

    #[cfg(not(all(unix, not(target_env = "musl"))))]
    fn refresh_allocator(&self) {}

    /// Registers a family owned by another module (webhook, extender, data plane) under the same prefix.
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        let mut registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        registry.register(name, help, Listed(metric));
    }
}

/// A registered family that is listed in the exposition (HELP and TYPE) even before it has a series:
/// prometheus-client leaves empty families out, which hid every metric of a surface not used yet, made the
/// exposition's list of families depend on traffic, and so could not be checked against docs/metrics.md.
#[derive(Debug)]
struct Listed<M>(M);

impl<M: prometheus_client::encoding::EncodeMetric> prometheus_client::encoding::EncodeMetric
    for Listed<M>
{
    fn encode(
        &self,
        encoder: prometheus_client::encoding::MetricEncoder,
    ) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        self.0.metric_type()
    }
}

// --- Per-deployment gauges -------------------------------------------------------------------------------------

/// How many deployments the per-deployment gauges are exported for by default (`--metrics-max-deployments`).
pub const DEFAULT_MAX_DEPLOYMENTS: usize = 500;

/// Labels of the per-deployment gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeploymentLabels {
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment's name.
    pub deployment: String,
}

type F64Gauge = Gauge<f64, AtomicU64>;
type PerDeployment = Family<DeploymentLabels, F64Gauge>;
/// Reads one quantity of a served deployment; `None` when it has none.
type Reader = fn(&crate::domain::model::ServedDeployment) -> Option<f64>;

/// One family per quantity of a [`ServedDeployment`](crate::domain::model::ServedDeployment), labelled by
/// namespace and deployment. Rebuilt from scratch at each scrape, so a deployment that left the snapshot leaves
/// the exposition with it. At most `max` deployments are exported (the first in namespace, name order, so the
/// same ones scrape after scrape); how many were left out is `deployment_metrics_dropped`.
struct DeploymentGauges {
    max: usize,
    /// (family, getter) pairs: each getter reads one quantity, `None` when the deployment has none.
    families: Vec<(PerDeployment, Reader)>,
    dropped: Gauge,
}

/// The per-deployment gauges: name (after the `smart_autoscaler_` prefix), help, and what each reads.
const DEPLOYMENT_GAUGES: [(&str, &str, Reader); 12] = [
    (
        "deployment_served_percent",
        "Value served to the HPA as smart_cpu_utilization, percent",
        |d| Some(d.smart_percent),
    ),
    (
        "deployment_raw_percent",
        "Measured CPU utilization (smart_cpu_utilization_raw), percent of requests",
        |d| Some(d.raw_percent),
    ),
    (
        "deployment_base_target_percent",
        "The HPA's target for the metric, percent",
        |d| Some(d.inputs.base_target_percent),
    ),
    (
        "deployment_effective_target_percent",
        "Target in force after policy, pressure and the safety rules, percent",
        |d| Some(d.explanation.effective_target_percent),
    ),
    (
        "deployment_pressure_level",
        "Pressure of the deployment's node pool, 0 (idle) to 1 (full)",
        |d| Some(d.explanation.pressure.level),
    ),
    (
        "deployment_pressure_factor",
        "Multiplier the pool pressure applies to the policy target",
        |d| Some(d.explanation.pressure.factor),
    ),
    (
        "deployment_confidence",
        "Confidence in the tick's inputs, 0 to 1",
        |d| Some(d.explanation.confidence),
    ),
    (
        "deployment_forecast_percent",
        "Forecast utilization the decision considered, percent (absent without a usable, fresh forecast; the \
         forecast's confidence and trust are smart_autoscaler_forecast_confidence and _trusted)",
        |d| d.explanation.forecast_percent,
    ),
    (
        "deployment_replicas",
        "Replicas of the Deployment (spec) seen on the tick",
        |d| Some(f64::from(d.inputs.replicas)),
    ),
    (
        "deployment_tuned_target_percent",
        "Auto-tuned target (the current one when tuning keeps it), percent; absent until tuned or with not enough \
         data",
        |d| d.explanation.tuning.as_ref().and_then(|t| t.target_percent),
    ),
    (
        "deployment_tuning_confidence",
        "Confidence of the auto-tuned target, 0 to 1 (applied only above 0.8)",
        |d| d.explanation.tuning.as_ref().and_then(|t| t.confidence),
    ),
    (
        "deployment_tuning_applied",
        "1 while the auto-tuned target is the deployment's policy target, 0 while it is advice only",
        |d| {
            d.explanation
                .tuning
                .as_ref()
                .map(|t| f64::from(u8::from(t.applied)))
        },
    ),
];

impl DeploymentGauges {
    fn new(registry: &mut Registry, max: usize) -> Self {
        let families = DEPLOYMENT_GAUGES
            .iter()
            .map(|(name, help, read)| {
                let family = PerDeployment::default();
                registry.register(*name, *help, Listed(family.clone()));
                (family, *read)
            })
            .collect();
        let dropped = Gauge::default();
        registry.register(
            "deployment_metrics_dropped",
            "Managed deployments left out of the per-deployment metrics by --metrics-max-deployments",
            Listed(dropped.clone()),
        );
        DeploymentGauges {
            max,
            families,
            dropped,
        }
    }

    fn refresh(&self, snapshot: Option<&crate::domain::model::Snapshot>) {
        for (family, _) in &self.families {
            family.clear();
        }
        let Some(snapshot) = snapshot else {
            self.dropped.set(0);
            return;
        };
        for served in snapshot.deployments.values().take(self.max) {
            let labels = DeploymentLabels {
                namespace: served.inputs.key.namespace.clone(),
                deployment: served.inputs.key.name.clone(),
            };
            for (family, read) in &self.families {
                if let Some(value) = read(served).filter(|v| v.is_finite()) {
                    family.get_or_create(&labels).set(value);
                }
            }
        }
        let dropped = snapshot.deployments.len().saturating_sub(self.max);
        self.dropped.set(i64::try_from(dropped).unwrap_or(i64::MAX));
    }
}

// --- Anomalies -------------------------------------------------------------------------------------------------

/// Labels of the anomaly metrics.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnomalyLabels {
    /// The kind: [`AnomalyKind::as_str`](crate::domain::anomaly::AnomalyKind::as_str).
    pub r#type: &'static str,
    /// [`Severity::as_str`](crate::domain::anomaly::Severity::as_str).
    pub severity: &'static str,
}

/// `smart_autoscaler_anomalies_total{type,severity}` (anomalies started) and
/// `smart_autoscaler_anomalies_active{type,severity}` (open in the latest snapshot), every kind and severity
/// present from the start. The engine calls [`AnomalyMetrics::observe`] after each publish.
#[derive(Debug, Clone)]
pub struct AnomalyMetrics {
    started: Family<AnomalyLabels, Counter>,
    active: Family<AnomalyLabels, Gauge>,
}

impl AnomalyMetrics {
    /// Registers both families in `telemetry`, every series at zero.
    pub fn new(telemetry: &Telemetry) -> Self {
        let metrics = AnomalyMetrics {
            started: Family::default(),
            active: Family::default(),
        };
        for labels in Self::all_labels() {
            let _ = metrics.started.get_or_create(&labels);
            metrics.active.get_or_create(&labels).set(0);
        }
        telemetry.register(
            "anomalies",
            "Anomalies started, by type and severity (counted once, when first seen)",
            metrics.started.clone(),
        );
        telemetry.register(
            "anomalies_active",
            "Anomalies open in the latest snapshot, by type and severity",
            metrics.active.clone(),
        );
        metrics
    }

    fn all_labels() -> impl Iterator<Item = AnomalyLabels> {
        use crate::domain::anomaly::{AnomalyKind, Severity};
        AnomalyKind::ALL.into_iter().flat_map(|kind| {
            Severity::ALL
                .into_iter()
                .map(move |severity| AnomalyLabels {
                    r#type: kind.as_str(),
                    severity: severity.as_str(),
                })
        })
    }

    /// Counts the anomalies of `current` that `previous` (the snapshot published before it) did not have (same
    /// deployment, kind and start), at the severity they start with, and sets the active gauge from `current`.
    pub fn observe(
        &self,
        previous: Option<&crate::domain::model::Snapshot>,
        current: &crate::domain::model::Snapshot,
    ) {
        let labels = |a: &crate::domain::anomaly::Anomaly| AnomalyLabels {
            r#type: a.kind.as_str(),
            severity: a.severity.as_str(),
        };
        let known: std::collections::HashSet<_> = previous
            .into_iter()
            .flat_map(|p| &p.anomalies)
            .map(|a| (&a.key, a.kind, a.started_at))
            .collect();
        let mut active: std::collections::HashMap<AnomalyLabels, i64> =
            Self::all_labels().map(|l| (l, 0)).collect();
        for a in &current.anomalies {
            if !known.contains(&(&a.key, a.kind, a.started_at)) {
                self.started.get_or_create(&labels(a)).inc();
            }
            if a.is_active() {
                *active.entry(labels(a)).or_default() += 1;
            }
        }
        for (l, n) in active {
            self.active.get_or_create(&l).set(n);
        }
    }
}

// --- end of anomalies ------------------------------------------------------------------------------------------

/// Rewrites an OpenMetrics exposition as Prometheus text format 0.0.4, for scrapers and tools that ask for
/// `text/plain` (older Prometheus servers, `promtool check metrics`): counters are named with their `_total`
/// suffix in HELP/TYPE, and the OpenMetrics-only `# UNIT`, `# EOF` and `_created` lines are dropped.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => {
                let name = line.split(['{', ' ']).next().unwrap_or("");
                if name
                    .strip_suffix("_created")
                    .is_some_and(|base| counters.contains(base))
                {
                    continue;
                }
                out.push_str(line);
            }
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_text_format() {
        let t = Telemetry::new();
        t.ticks
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .inc();
        t.latency
            .get_or_create(&LatencyLabels {
                server: "secure",
                route: "/x".into(),
            })
            .observe(0.002);
        let om = t.encode();
        assert!(om.trim_end().ends_with("# EOF"));
        let text = openmetrics_to_text(&om);
        assert!(
            text.contains(
                "# HELP smart_autoscaler_engine_ticks_total Collection ticks, by outcome."
            )
        );
        assert!(text.contains("# TYPE smart_autoscaler_engine_ticks_total counter"));
        assert!(text.contains("smart_autoscaler_engine_ticks_total{outcome=\"ok\"} 1"));
        assert!(text.contains("# TYPE smart_autoscaler_http_request_duration_seconds histogram"));
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    }
}
