//! Health of the data sources behind the snapshot. Sources report here; `/readyz` prints it as detail and
//! `/metrics` counts errors per component. A degraded source does not make the server unready: serving the last
//! good inputs (and, past the fail-safe limits, the raw value or a 503) is better for the HPA than an
//! unavailable APIService.

use std::collections::BTreeMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::domain::model::UnixMillis;
use crate::telemetry::Telemetry;

/// Label of the per-component error counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    /// `kubernetes`, `prometheus`, `store`, `simulation`.
    pub component: String,
}

#[derive(Debug, Clone)]
struct Status {
    ok: bool,
    detail: String,
    since: UnixMillis,
}

/// Component health shared by the engine's sources and the probes.
pub struct Health {
    components: Mutex<BTreeMap<String, Status>>,
    errors: Family<ComponentLabels, Counter>,
}

impl Health {
    /// Creates the registry and registers `smart_autoscaler_source_errors_total`.
    pub fn new(telemetry: &Telemetry) -> Self {
        let errors = Family::<ComponentLabels, Counter>::default();
        telemetry.register(
            "source_errors",
            "Errors from data sources, by component",
            errors.clone(),
        );
        Health {
            components: Mutex::new(BTreeMap::new()),
            errors,
        }
    }

    fn set(&self, component: &str, ok: bool, detail: String, now: UnixMillis) {
        let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let since = match map.get(component) {
            Some(s) if s.ok == ok => s.since,
            _ => now,
        };
        map.insert(component.to_string(), Status { ok, detail, since });
    }

    /// Records a healthy component.
    pub fn ok(&self, component: &str, detail: impl Into<String>, now: UnixMillis) {
        self.set(component, true, detail.into(), now);
    }

    /// Records a failing component and counts the error.
    pub fn error(&self, component: &str, detail: impl Into<String>, now: UnixMillis) {
        self.errors
            .get_or_create(&ComponentLabels {
                component: component.to_string(),
            })
            .inc();
        self.set(component, false, detail.into(), now);
    }

    /// One line per component, Kubernetes `/readyz?verbose` style.
    pub fn lines(&self, now: UnixMillis) -> Vec<String> {
        let map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .map(|(name, s)| {
                let age = (now - s.since).max(0) / 1000;
                if s.ok {
                    format!("[+]{name}: {}", s.detail)
                } else {
                    format!("[-]{name}: degraded for {age}s: {}", s.detail)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_state_changes_and_counts_errors() {
        let t = Telemetry::new();
        let h = Health::new(&t);
        h.ok("prometheus", "3 queries", 0);
        h.error("prometheus", "connection refused", 1_000);
        h.error("prometheus", "connection refused", 5_000);
        assert_eq!(
            h.lines(11_000),
            vec!["[-]prometheus: degraded for 10s: connection refused"]
        );
        assert!(
            t.encode()
                .contains("smart_autoscaler_source_errors_total{component=\"prometheus\"} 2")
        );
        h.ok("prometheus", "3 queries", 12_000);
        assert_eq!(h.lines(13_000), vec!["[+]prometheus: 3 queries"]);
    }
}
