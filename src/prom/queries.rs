//! The PromQL the adapter sends, the pure helpers around it (template substitution, pod-to-deployment
//! grouping, range chunking) and the JSON file that overrides the templates.
//!
//! Defaults follow the metric names of kube-prometheus-stack: cAdvisor's `container_cpu_usage_seconds_total`
//! and `container_memory_working_set_bytes`, node-exporter's `node_cpu_seconds_total`, and kube-state-metrics'
//! `kube_pod_container_resource_requests`.

use std::path::Path;

use serde::Deserialize;

use crate::domain::model::{DeploymentKey, UnixMillis};

/// Prometheus refuses range queries with more points than this per series.
pub const PROMETHEUS_MAX_POINTS: i64 = 11_000;

/// Points per series per range query the adapter asks for, safely under [`PROMETHEUS_MAX_POINTS`].
pub const MAX_POINTS_PER_QUERY: i64 = 10_000;

/// The PromQL templates, overridable with `--prometheus-queries FILE` (a JSON object with any of these fields;
/// unknown fields are an error so a typo does not silently fall back to a default).
///
/// The five tick queries are sent as they are, once per tick for the whole cluster. They must return instant
/// vectors: the pod queries one series per pod with the `namespace_label` and `pod_label` labels, the node
/// query one series per node with `node_label` (a `:port` suffix on its value is dropped, so node-exporter's
/// `instance="10.0.0.1:9100"`-style values can be used when relabelled to node names).
///
/// The two history queries are range queries; `$namespaces` and `$pods` in them are replaced with anchored
/// regular expressions (alternations of the requested namespaces, and of `<deployment>-<hash>-<suffix>`
/// patterns) that narrow what Prometheus returns. The grouping to deployments is done again, exactly, by the
/// adapter.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryTemplates {
    /// Pod CPU usage, cores, averaged over 10 minutes.
    pub pod_cpu_10m: String,
    /// Pod CPU usage, cores, averaged over 5 minutes.
    pub pod_cpu_5m: String,
    /// Pod CPU usage, cores, over a short window that sees a rise as soon as the HPA's own metrics would. The
    /// default `[1m]` holds four samples at a 15 s scrape and two at a 30 s one (a pod with fewer gets no short
    /// rate and falls back to the smoothed one). A `[2m]` window is steadier at a 30 s scrape but reacts later:
    /// `simulate --short-window 2m` shows what that costs in saturation. Set `pod_cpu_short_window_seconds` to
    /// match.
    pub pod_cpu_1m: String,
    /// Length of `pod_cpu_1m`'s window, seconds (15 to 240): the decision core corrects that window's lag on a
    /// rise by it.
    pub pod_cpu_short_window_seconds: u32,
    /// Pod memory working set, bytes.
    pub pod_memory: String,
    /// Node CPU utilization, percent.
    pub node_cpu: String,
    /// History: pod CPU usage, cores (range query).
    pub history_cpu: String,
    /// History: pod CPU requests, cores (range query).
    pub history_cpu_requests: String,
    /// Label holding the namespace in pod results.
    pub namespace_label: String,
    /// Label holding the pod name in pod results.
    pub pod_label: String,
    /// Label holding the node name in node results.
    pub node_label: String,
}

impl Default for QueryTemplates {
    fn default() -> Self {
        let containers = r#"container!="",container!="POD""#;
        QueryTemplates {
            pod_cpu_10m: format!(
                "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{containers}}}[10m]))"
            ),
            pod_cpu_5m: format!(
                "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{containers}}}[5m]))"
            ),
            pod_cpu_1m: format!(
                "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{containers}}}[1m]))"
            ),
            pod_cpu_short_window_seconds: crate::domain::cluster::DEFAULT_SHORT_WINDOW_SECONDS,
            pod_memory: format!(
                "sum by (namespace, pod) (container_memory_working_set_bytes{{{containers}}})"
            ),
            node_cpu:
                r#"100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))"#
                    .to_string(),
            history_cpu: format!(
                "sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{{{containers},\
                 namespace=~\"$namespaces\",pod=~\"$pods\"}}[5m]))"
            ),
            history_cpu_requests: "sum by (namespace, pod) (kube_pod_container_resource_requests{\
                 resource=\"cpu\",namespace=~\"$namespaces\",pod=~\"$pods\"})"
                .to_string(),
            namespace_label: "namespace".to_string(),
            pod_label: "pod".to_string(),
            node_label: "instance".to_string(),
        }
    }
}

impl QueryTemplates {
    /// Reads a JSON override file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<QueryTemplates, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses a JSON override; fields it leaves out keep their defaults.
    pub fn from_json(text: &str) -> Result<QueryTemplates, String> {
        let t: QueryTemplates = serde_json::from_str(text).map_err(|e| e.to_string())?;
        for (name, value) in [
            ("pod_cpu_10m", &t.pod_cpu_10m),
            ("pod_cpu_5m", &t.pod_cpu_5m),
            ("pod_cpu_1m", &t.pod_cpu_1m),
            ("pod_memory", &t.pod_memory),
            ("node_cpu", &t.node_cpu),
            ("history_cpu", &t.history_cpu),
            ("history_cpu_requests", &t.history_cpu_requests),
            ("namespace_label", &t.namespace_label),
            ("pod_label", &t.pod_label),
            ("node_label", &t.node_label),
        ] {
            if value.trim().is_empty() {
                return Err(format!("`{name}` must not be empty"));
            }
        }
        let range = crate::domain::cluster::SHORT_WINDOW_SECONDS;
        if !range.contains(&t.pod_cpu_short_window_seconds) {
            return Err(format!(
                "`pod_cpu_short_window_seconds` must be {} to {}, not {}",
                range.start(),
                range.end(),
                t.pod_cpu_short_window_seconds
            ));
        }
        Ok(t)
    }
}

/// Escapes a literal for a Prometheus (RE2) regular expression inside a double-quoted PromQL string.
fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            // `\` for the regex, doubled for the PromQL string.
            out.push_str(r"\\");
        }
        if c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Fills `$namespaces` and `$pods` in a history template for these deployments.
pub fn history_query(template: &str, deployments: &[DeploymentKey]) -> String {
    let mut namespaces: Vec<&str> = deployments.iter().map(|d| d.namespace.as_str()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut names: Vec<&str> = deployments.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let alternation = |items: &[&str]| {
        items
            .iter()
            .map(|s| regex_literal(s))
            .collect::<Vec<_>>()
            .join("|")
    };
    let namespaces = format!("(?:{})", alternation(&namespaces));
    let pods = format!(
        "(?:{})-[{GENERATED_ALPHABET}]{{1,10}}-[{GENERATED_ALPHABET}]{{5}}",
        alternation(&names)
    );
    template
        .replace("$namespaces", &namespaces)
        .replace("$pods", &pods)
}

/// The alphabet of Kubernetes' generated name parts (`rand.SafeEncodeString`, `rand.String`): no vowels and no
/// `0`, `1`, `3`, so no words.
pub const GENERATED_ALPHABET: &str = "bcdfghjklmnpqrstvwxz2456789";

fn is_generated(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| GENERATED_ALPHABET.as_bytes().contains(&b))
}

/// The Deployment a pod belongs to, judged by its name: a Deployment's pods are named
/// `<deployment>-<pod-template-hash>-<suffix>`, where the hash (1 to 10 characters) and the 5-character suffix
/// are drawn from [`GENERATED_ALPHABET`]. Returns `None` for names of any other shape (StatefulSet `web-0`, bare
/// pods); a DaemonSet pod `node-exporter-x2z9q` is not taken for a Deployment `node` because `exporter` has
/// vowels. Only requested deployments are looked up, so a remaining ambiguity needs a Deployment named like the
/// prefix of another workload in the same namespace.
pub fn deployment_of_pod(pod: &str) -> Option<&str> {
    let (rest, suffix) = pod.rsplit_once('-')?;
    let (deployment, hash) = rest.rsplit_once('-')?;
    (is_generated(suffix, 5, 5) && is_generated(hash, 1, 10) && !deployment.is_empty())
        .then_some(deployment)
}

/// Splits `[from, to]` (seconds, both included) at `step` seconds into ranges of at most `max_points`
/// evaluation points each. Consecutive ranges do not share a point; together they evaluate exactly the points
/// `from, from + step, ...` up to `to`.
pub fn chunk_range(from: i64, to: i64, step: i64, max_points: i64) -> Vec<(i64, i64)> {
    let (step, max_points) = (step.max(1), max_points.max(1));
    let mut chunks = Vec::new();
    let mut start = from;
    while start <= to {
        let end = (start + (max_points - 1) * step).min(to);
        // Keep every point on the from + k*step grid.
        let end = start + (end - start) / step * step;
        chunks.push((start, end));
        start = end + step;
    }
    chunks
}

/// Rounds milliseconds up to whole seconds.
pub fn ceil_seconds(millis: UnixMillis) -> i64 {
    millis.div_euclid(1000) + i64::from(millis.rem_euclid(1000) != 0)
}

/// Drops a `:port` suffix from a node label value (`10.0.0.1:9100` → `10.0.0.1`, `node-a:9100` → `node-a`).
/// IPv6 literals in brackets (`[fd00::1]:9100`) lose the brackets too.
pub fn strip_port(instance: &str) -> &str {
    if let Some(rest) = instance.strip_prefix('[')
        && let Some((host, _)) = rest.split_once("]:")
    {
        return host;
    }
    match instance.rsplit_once(':') {
        Some((host, port))
            if !host.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            host
        }
        _ => instance,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_queries_are_the_documented_ones() {
        let t = QueryTemplates::default();
        assert_eq!(
            t.pod_cpu_10m,
            r#"sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{container!="",container!="POD"}[10m]))"#
        );
        assert!(t.pod_cpu_5m.ends_with("[5m]))"));
        assert!(t.pod_cpu_1m.ends_with("[1m]))"));
        assert_eq!(t.pod_cpu_short_window_seconds, 60);
        assert_eq!(
            t.node_cpu,
            r#"100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))"#
        );
        assert_eq!(t.node_label, "instance");
    }

    #[test]
    fn override_file_keeps_unset_defaults_and_rejects_typos() {
        let t = QueryTemplates::from_json(r#"{"node_label": "node", "node_cpu": "x"}"#).unwrap();
        assert_eq!(t.node_label, "node");
        assert_eq!(t.node_cpu, "x");
        assert_eq!(t.pod_cpu_5m, QueryTemplates::default().pod_cpu_5m);
        assert!(
            QueryTemplates::from_json(r#"{"node_lable": "node"}"#)
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(QueryTemplates::from_json(r#"{"pod_label": " "}"#).is_err());
        let t = QueryTemplates::from_json(
            r#"{"pod_cpu_1m": "q[1m]", "pod_cpu_short_window_seconds": 60}"#,
        )
        .unwrap();
        assert_eq!(t.pod_cpu_short_window_seconds, 60);
        assert!(
            QueryTemplates::from_json(r#"{"pod_cpu_short_window_seconds": 600}"#)
                .unwrap_err()
                .contains("15 to 240")
        );
        assert!(QueryTemplates::from_json("[").is_err());
    }

    #[test]
    fn fixture_override_file_parses() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prom/queries-node-label.json"
        );
        let t = QueryTemplates::from_file(Path::new(path)).unwrap();
        assert_eq!(t.node_label, "node");
        let missing = QueryTemplates::from_file(Path::new("/nonexistent/q.json")).unwrap_err();
        assert!(missing.contains("/nonexistent/q.json"), "{missing}");
    }

    #[test]
    fn pods_are_grouped_by_name_shape() {
        assert_eq!(deployment_of_pod("api-7d9f8b6c5d-x2z9q"), Some("api"));
        assert_eq!(
            deployment_of_pod("web-frontend-6b8d9c7f4-x2z9q"),
            Some("web-frontend")
        );
        assert_eq!(deployment_of_pod("api-v2-5c7b9-qqqqq"), Some("api-v2"));
        assert_eq!(deployment_of_pod("web-0"), None);
        assert_eq!(deployment_of_pod("node-exporter-x2z9q"), None);
        assert_eq!(deployment_of_pod("api-7d9f8b6c5d-x2z9qq"), None);
        assert_eq!(deployment_of_pod("api-7D9F8B6C5D-x2z9q"), None);
        assert_eq!(deployment_of_pod("api-24567892456-x2z9q"), None);
        assert_eq!(deployment_of_pod("api-7d9f8b6c5d-abcde"), None);
        assert_eq!(deployment_of_pod("-7d9f8b6c5d-x2z9q"), None);
    }

    #[test]
    fn history_query_substitutes_escaped_regexes() {
        let q = history_query(
            "x{namespace=~\"$namespaces\",pod=~\"$pods\"}",
            &[
                DeploymentKey::new("shop", "api"),
                DeploymentKey::new("shop", "web.v1"),
                DeploymentKey::new("ops", "api"),
            ],
        );
        assert_eq!(
            q,
            r#"x{namespace=~"(?:ops|shop)",pod=~"(?:api|web\\.v1)-[bcdfghjklmnpqrstvwxz2456789]{1,10}-[bcdfghjklmnpqrstvwxz2456789]{5}"}"#
        );
    }

    #[test]
    fn chunks_cover_every_point_once_within_the_limit() {
        for (from, to, step, max) in [
            (0, 0, 1, 10),
            (0, 9, 1, 10),
            (0, 10, 1, 10),
            (100, 10_900, 60, 7),
            (5, 100_004, 15, 10_000),
            (0, 10_800, 1, 10_000),
        ] {
            let chunks = chunk_range(from, to, step, max);
            let mut points = Vec::new();
            for &(s, e) in &chunks {
                assert!((e - s) / step < max, "{chunks:?}");
                assert_eq!((s - from) % step, 0);
                points.extend((s..=e).step_by(step as usize));
            }
            let expected: Vec<i64> = (from..=to).step_by(step as usize).collect();
            assert_eq!(points, expected, "{from} {to} {step} {max}");
        }
        assert!(chunk_range(10, 5, 1, 10).is_empty());
        assert_eq!(chunk_range(0, 10_800, 1, 10_000).len(), 2);
    }

    #[test]
    fn seconds_and_ports() {
        assert_eq!(ceil_seconds(1_000), 1);
        assert_eq!(ceil_seconds(1_001), 2);
        assert_eq!(ceil_seconds(-1), 0);
        assert_eq!(strip_port("10.0.0.1:9100"), "10.0.0.1");
        assert_eq!(strip_port("node-a"), "node-a");
        assert_eq!(strip_port("node-a:9100"), "node-a");
        assert_eq!(strip_port("[fd00::1]:9100"), "fd00::1");
        assert_eq!(strip_port("fd00::1"), "fd00::1");
        assert_eq!(strip_port("host:"), "host:");
    }
}
