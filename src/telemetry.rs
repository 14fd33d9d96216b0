//! The server's own Prometheus metrics (prometheus-client, OpenMetrics exposition): request counts and latency
//! per route, snapshot age, engine tick outcomes.

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
            requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "HTTP request latency, by route",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        registry.register_with_unit(
            "snapshot_age",
            "Age of the served metric snapshot",
            prometheus_client::registry::Unit::Seconds,
            snapshot_age_seconds.clone(),
        );
        registry.register(
            "managed_deployments",
            "Deployments in the served snapshot",
            deployments.clone(),
        );
        registry.register(
            "engine_ticks",
            "Collection ticks, by outcome",
            ticks.clone(),
        );
        let allocator = Family::<AllocatorLabels, Gauge>::default();
        registry.register_with_unit(
            "allocator",
            "Heap statistics of jemalloc, the binary's allocator (zero where it is not the allocator, as in tests)",
            prometheus_client::registry::Unit::Bytes,
            allocator.clone(),
        );
        Telemetry {
            allocator,
            registry: std::sync::Mutex::new(registry),
            requests,
            latency,
            snapshot_age_seconds,
            deployments,
            ticks,
        }
    }

    /// Renders the OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        self.refresh_allocator();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
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
        registry.register(name, help, metric);
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
