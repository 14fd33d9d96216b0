//! Health of the data sources behind the snapshot. Sources report here, with the age of the data they last
//! delivered; `/readyz` prints it as detail and `/metrics` counts errors per component. A degraded source does
//! not by itself make the server unready: readiness is whether values can be served (see `http::ops::readyz`),
//! and serving the last good inputs until the fail-safe limits is better for the HPA than an unavailable
//! APIService.

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
    /// When the data this component last delivered was current.
    data_at: Option<UnixMillis>,
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
        let previous = map.get(component);
        let since = match previous {
            Some(s) if s.ok == ok => s.since,
            _ => now,
        };
        let data_at = previous.and_then(|s| s.data_at);
        map.insert(
            component.to_string(),
            Status {
                ok,
                detail,
                since,
                data_at,
            },
        );
    }

    /// Records when the data `component` delivers was last current (a successful answer's time).
    pub fn data_at(&self, component: &str, at: UnixMillis) {
        let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get_mut(component) {
            s.data_at = Some(at);
        }
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
                let data = match s.data_at {
                    Some(at) => format!(" (data {}s old)", (now - at).max(0) / 1000),
                    None => String::new(),
                };
                if s.ok {
                    format!("[+]{name}: {}{data}", s.detail)
                } else {
                    format!("[-]{name}: degraded for {age}s: {}{data}", s.detail)
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
        h.data_at("prometheus", 12_000);
        h.error("prometheus", "timeout", 20_000);
        assert_eq!(
            h.lines(25_000),
            vec!["[-]prometheus: degraded for 5s: timeout (data 13s old)"]
        );
    }
}
