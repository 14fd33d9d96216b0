//! `external.metrics.k8s.io/v1beta1`: discovery documents and the metric read the HPA makes.
//!
//! Values come only from the published snapshot. A read never waits on a data source; a missing or stale
//! snapshot is a 503 Status, a selector matching several deployments a 400 (the HPA would sum percentages).
//!
//! PromQL-backed metrics (`--external-rules`) come from their own in-memory table ([`RuleMetrics`], handed to the
//! handlers as a request extension): the series cached at the last evaluation, filtered by namespace and the
//! HPA's selector, every matching series an item (the HPA sums them), refused with 503 once older than the same
//! fail-safe limit as the built-in metric.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use serde_json::{Value, json};

use super::delegate::Delegate;
use super::{ApiError, ApiPath, AppState};
use crate::clock::rfc3339;
use crate::domain::contract::{DEPLOYMENT_LABEL, METRICS, SMART_METRIC};
use crate::domain::decision::{Freshness, freshness};
use crate::domain::external_rules::{ExternalTable, LookupError};
use crate::domain::model::{DeploymentKey, ServedDeployment, Snapshot, UnixMillis};
use crate::domain::quantity;
use crate::domain::selector::Selector;

/// API group served.
pub const GROUP: &str = "external.metrics.k8s.io";
/// API version served.
pub const VERSION: &str = "v1beta1";

/// Routes of the external metrics API.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apis", get(api_group_list))
        .route("/apis/external.metrics.k8s.io", get(api_group))
        .route(
            "/apis/external.metrics.k8s.io/v1beta1",
            get(api_resource_list),
        )
        .route(
            "/apis/external.metrics.k8s.io/v1beta1/namespaces/{namespace}/{metric}",
            get(metric_values),
        )
        .route("/openapi/v2", get(no_openapi))
        .route("/openapi/v3", get(no_openapi))
}

fn group_version() -> Value {
    json!({ "groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION })
}

fn group() -> Value {
    json!({ "name": GROUP, "versions": [group_version()], "preferredVersion": group_version() })
}

async fn api_group_list() -> Json<Value> {
    Json(json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": [group()] }))
}

async fn api_group() -> Json<Value> {
    let mut g = group();
    g["kind"] = json!("APIGroup");
    g["apiVersion"] = json!("v1");
    Json(g)
}

/// The table of the PromQL-backed metrics (`--external-rules`), as the evaluator last published it.
#[derive(Clone)]
pub struct RuleMetrics(pub tokio::sync::watch::Receiver<Arc<ExternalTable>>);

impl RuleMetrics {
    /// The current table; the borrow is released before returning.
    pub fn table(&self) -> Arc<ExternalTable> {
        self.0.borrow().clone()
    }
}

async fn api_resource_list(
    rules: Option<Extension<RuleMetrics>>,
    delegate: Option<Extension<Arc<Delegate>>>,
    headers: HeaderMap,
) -> Json<Value> {
    let table = rules.map(|Extension(r)| r.table());
    let names: Vec<&str> = METRICS
        .iter()
        .copied()
        .chain(
            table
                .iter()
                .flat_map(|t| t.metrics.keys().map(String::as_str)),
        )
        .collect();
    // The delegate's metrics after ours; when it does not answer, ours alone (discovery is our availability).
    let theirs = match delegate {
        Some(Extension(d)) => d.resources(&names, &headers).await.unwrap_or_else(|e| {
            tracing::warn!(delegate = d.url(), error = %e, "delegate discovery failed; listing our metrics only");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let resources: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({
                "name": name, "singularName": "", "namespaced": true,
                "kind": "ExternalMetricValueList", "verbs": ["get"]
            })
        })
        .chain(theirs)
        .collect();
    Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"), "resources": resources
    }))
}

async fn no_openapi() -> ApiError {
    ApiError::not_found("this server publishes no OpenAPI document")
}

/// `ExternalMetricValueList`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ValueList {
    kind: &'static str,
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    metadata: BTreeMap<String, String>,
    /// The values, one per matched series.
    pub items: Vec<MetricValue>,
}

/// `ExternalMetricValue`.
#[derive(Debug, Serialize, PartialEq)]
pub struct MetricValue {
    /// Metric name.
    #[serde(rename = "metricName")]
    pub metric_name: String,
    /// Labels of the series (always an object).
    #[serde(rename = "metricLabels")]
    pub metric_labels: BTreeMap<String, String>,
    /// When the value was measured, RFC 3339.
    pub timestamp: String,
    /// Averaging window in seconds (left out when 0: a PromQL rule's window is in its query).
    #[serde(skip_serializing_if = "is_zero")]
    pub window: i64,
    /// Canonical quantity string.
    pub value: String,
    /// When the inputs behind the value were observed (not serialized; bounds response caching).
    #[serde(skip)]
    pub observed_at: UnixMillis,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

async fn metric_values(
    State(state): State<AppState>,
    ApiPath((namespace, metric)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
    rules: Option<Extension<RuleMetrics>>,
    delegate: Option<Extension<Arc<Delegate>>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ours = METRICS.contains(&metric.as_str())
        || rules
            .as_ref()
            .is_some_and(|Extension(r)| r.table().metrics.contains_key(&metric));
    if !ours && let Some(Extension(delegate)) = delegate {
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        return Ok(delegate.forward(path, &headers).await);
    }
    if !METRICS.contains(&metric.as_str())
        && let Some(Extension(rules)) = rules
    {
        let selector = parse_selector_query(query.as_deref())?;
        let table = rules.table();
        let list = rule_lookup(
            &table,
            state.clock.now_millis(),
            &namespace,
            &metric,
            &selector,
        )?;
        let body = serde_json::to_vec(&list).map_err(|e| ApiError::internal(e.to_string()))?;
        return Ok(json_response(Bytes::from(body)));
    }
    let snapshot = state.snapshot();
    let now = state.clock.now_millis();
    let key = format!("{namespace}/{metric}?{}", query.as_deref().unwrap_or(""));
    if let Some(body) = state.responses.get(snapshot.as_ref(), &key, now) {
        return Ok(json_response(body));
    }
    let selector = parse_selector_query(query.as_deref())?;
    let list = lookup(snapshot.as_deref(), now, &namespace, &metric, &selector)?;
    let body =
        Bytes::from(serde_json::to_vec(&list).map_err(|e| ApiError::internal(e.to_string()))?);
    // Only fresh values are cached, and only until they would fall back to raw.
    if let Some(snapshot) = &snapshot
        && let Some(oldest) = list.items.iter().map(|i| i.observed_at).min()
        && now - oldest <= snapshot.failsafe.raw_after_millis
    {
        state.responses.put(
            snapshot,
            key,
            body.clone(),
            oldest + snapshot.failsafe.raw_after_millis,
        );
    }
    Ok(json_response(body))
}

fn json_response(body: Bytes) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Extracts and parses `labelSelector` from a raw query string; absent means "everything".
pub fn parse_selector_query(query: Option<&str>) -> Result<Selector, ApiError> {
    let pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
        None => Vec::new(),
    };
    let raw = pairs
        .iter()
        .rev()
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    Selector::parse(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid labelSelector {raw:?}: {e}")))
}

/// Answers one read of a PromQL-backed metric from its table: the pure part of the handler.
pub fn rule_lookup(
    table: &ExternalTable,
    now: UnixMillis,
    namespace: &str,
    metric: &str,
    selector: &Selector,
) -> Result<ValueList, ApiError> {
    let served = table
        .lookup(metric, namespace, selector, now)
        .map_err(|e| match e {
            LookupError::UnknownMetric(_) => ApiError::not_found(format!(
                "external metric {metric:?} is not served here; available: {}",
                METRICS
                    .iter()
                    .copied()
                    .chain(table.metrics.keys().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            LookupError::Unavailable(m) => ApiError::unavailable(m),
            LookupError::NotFound(m) => ApiError::not_found(m),
        })?;
    let items = served
        .into_iter()
        .filter_map(|s| {
            Some(MetricValue {
                metric_name: metric.to_string(),
                metric_labels: s.labels.clone(),
                timestamp: rfc3339(s.at),
                window: 0,
                value: quantity::format_value(s.value)?,
                observed_at: s.at,
            })
        })
        .collect();
    Ok(ValueList {
        kind: "ExternalMetricValueList",
        api_version: "external.metrics.k8s.io/v1beta1",
        metadata: BTreeMap::new(),
        items,
    })
}

/// The metric labels a deployment's series carries.
pub fn series_labels(key: &DeploymentKey) -> BTreeMap<String, String> {
    BTreeMap::from([(DEPLOYMENT_LABEL.to_string(), key.name.clone())])
}

/// Answers one metric read from a snapshot: the pure part of the handler.
pub fn lookup(
    snapshot: Option<&Snapshot>,
    now: UnixMillis,
    namespace: &str,
    metric: &str,
    selector: &Selector,
) -> Result<ValueList, ApiError> {
    if !METRICS.contains(&metric) {
        return Err(ApiError::not_found(format!(
            "external metric {metric:?} is not served here; available: {}",
            METRICS.join(", ")
        )));
    }
    let Some(snapshot) = snapshot else {
        return Err(ApiError::unavailable(
            "no metrics collected yet; the first collection has not completed",
        ));
    };
    let matched: Vec<&ServedDeployment> = snapshot
        .deployments
        .values()
        .filter(|d| {
            d.inputs.key.namespace == namespace && selector.matches(&series_labels(&d.inputs.key))
        })
        .collect();
    match matched.as_slice() {
        // Managed, but never measured: unknown is not zero, so no value at all, with the reason.
        [] if let Some((key, unknown)) = snapshot
            .unmeasured
            .iter()
            .find(|(k, _)| k.namespace == namespace && selector.matches(&series_labels(k))) =>
        {
            Err(ApiError::unavailable(format!(
                "no value for {key}: its CPU utilization is unknown ({}) and it has no earlier good value",
                unknown.reason
            )))
        }
        [] => Err(ApiError::not_found(format!(
            "external metric {metric:?} with selector {:?} not found in namespace {namespace:?}",
            selector.to_string()
        ))),
        [one] => {
            let (value, reason) = match freshness(one.inputs.observed_at, now, &snapshot.failsafe) {
                Freshness::Fresh if metric == SMART_METRIC => (one.smart_percent, None),
                Freshness::Fresh => (one.raw_percent, None),
                Freshness::FallBackToRaw => (one.raw_percent, Some("stale")),
                Freshness::TooOld => {
                    let why = match snapshot.unmeasured.get(&one.inputs.key) {
                        Some(u) => format!(" (no new measurement: {})", u.reason),
                        None => String::new(),
                    };
                    return Err(ApiError::unavailable(format!(
                        "inputs for {} are {}s old, past the {}s fail-safe limit; refusing to serve a stale \
                         value{why}",
                        one.inputs.key,
                        (now - one.inputs.observed_at) / 1000,
                        snapshot.failsafe.error_after_millis / 1000
                    )));
                }
            };
            if reason.is_some() {
                tracing::debug!(deployment = %one.inputs.key, "stale inputs: serving raw utilization");
            }
            let value = quantity::format_value(value).ok_or_else(|| {
                ApiError::unavailable(format!(
                    "no finite value for {} at the moment",
                    one.inputs.key
                ))
            })?;
            Ok(ValueList {
                kind: "ExternalMetricValueList",
                api_version: "external.metrics.k8s.io/v1beta1",
                metadata: BTreeMap::new(),
                items: vec![MetricValue {
                    metric_name: metric.to_string(),
                    metric_labels: series_labels(&one.inputs.key),
                    timestamp: rfc3339(one.inputs.observed_at),
                    window: one.inputs.window_seconds,
                    value,
                    observed_at: one.inputs.observed_at,
                }],
            })
        }
        many => Err(ApiError::bad_request(format!(
            "selector {:?} matches {} deployments ({}); the HPA sums the items it receives and a sum of \
             percentages is meaningless, so select exactly one with labelSelector={DEPLOYMENT_LABEL}=<name>",
            selector.to_string(),
            many.len(),
            many.iter()
                .map(|d| d.inputs.key.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
