//! Mutating admission webhook for Deployments: `POST /mutate/deployments` on the secure port.
//!
//! Protocol only: decode an `admission.k8s.io/v1` AdmissionReview, hand the Deployment to
//! [`crate::domain::admission::decide`], encode the answer. The apiserver's `?timeout=` query is ignored (routing
//! never looks at the query).
//!
//! Failure shape. A body that is not an AdmissionReview is a 400 Status: there is no uid to answer, and with
//! `failurePolicy: Ignore` the apiserver admits the object anyway. Once the uid is known, every answer is a 200
//! allowing the object, because a webhook that stamps hints must never block a rollout: what cannot be handled is
//! allowed unchanged with a warning, never a 5xx. Dry-run requests get exactly the answer a real one would; the
//! webhook has no side effects (`sideEffects: None`), only its own counters.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use clap::Args;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{ApiError, AppState, LimitedBody};
use crate::domain::admission::{self, AdmissionConfig, Decision, Operation};
use crate::domain::contract;
use crate::telemetry::Telemetry;

/// Path the MutatingWebhookConfiguration points at.
pub const PATH: &str = "/mutate/deployments";
/// The only AdmissionReview version served (`admissionReviewVersions: ["v1"]`).
pub const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

/// Command-line settings of the admission webhook.
#[derive(Debug, Clone, Default, Args)]
pub struct WebhookArgs {
    /// JSON file with the webhook's tables: per-namespace and cluster `startup-filter-seconds` defaults, runtime
    /// heuristics and CPU-request bands for `target-utilization`. Each table given replaces the built-in one;
    /// without the file the built-in defaults apply.
    #[arg(long = "webhook-config", env = "SMART_AUTOSCALER_WEBHOOK_CONFIG")]
    pub webhook_config: Option<PathBuf>,
}

/// `--webhook-config` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookSettingsError {
    /// The file cannot be read.
    #[error("invalid --webhook-config: cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid configuration.
    #[error("invalid --webhook-config: {}: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: admission::AdmissionConfigError,
    },
}

impl TryFrom<&WebhookArgs> for AdmissionConfig {
    type Error = WebhookSettingsError;

    /// Reads the tables from `--webhook-config`, or gives the built-in defaults without it.
    fn try_from(args: &WebhookArgs) -> Result<Self, Self::Error> {
        let Some(path) = &args.webhook_config else {
            return Ok(AdmissionConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| WebhookSettingsError::Read {
            path: path.clone(),
            source,
        })?;
        AdmissionConfig::from_json(&text).map_err(|source| WebhookSettingsError::Invalid {
            path: path.clone(),
            source,
        })
    }
}

/// Labels of the review counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `patched`, `unchanged`, `skipped`, `unhandled` or `rejected` (not an AdmissionReview: 400).
    pub outcome: &'static str,
    /// Whether the apiserver marked the request as a dry run.
    pub dry_run: &'static str,
}

/// Labels of the stamped-annotation counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnnotationLabels {
    /// The annotation key.
    pub annotation: &'static str,
}

/// Shared state of the webhook handlers.
#[derive(Debug, Default)]
pub struct WebhookState {
    /// The policy tables.
    pub config: AdmissionConfig,
    /// Reviews answered, by outcome.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Annotations set or changed by patches of non-dry-run requests, by key.
    pub stamped: Family<AnnotationLabels, Counter>,
}

impl WebhookState {
    /// Builds the state from the checked tables, registering the webhook's metrics.
    pub fn new(config: AdmissionConfig, telemetry: &Telemetry) -> Self {
        let state = WebhookState {
            config,
            ..WebhookState::default()
        };
        telemetry.register(
            "webhook_reviews",
            "Admission reviews answered by the webhook, by outcome",
            state.reviews.clone(),
        );
        telemetry.register(
            "webhook_annotations_stamped",
            "Annotations set or changed by webhook patches (dry runs excluded), by key",
            state.stamped.clone(),
        );
        state
    }

    fn record(&self, reviewed: &Reviewed) {
        let dry_run = if reviewed.dry_run { "true" } else { "false" };
        self.reviews
            .get_or_create(&ReviewLabels {
                outcome: reviewed.outcome.as_str(),
                dry_run,
            })
            .inc();
        if reviewed.dry_run {
            return;
        }
        for op in &reviewed.decision.patch {
            for key in [
                contract::STARTUP_FILTER_ANNOTATION,
                contract::TARGET_UTILIZATION_ANNOTATION,
                contract::POLICY_ANNOTATION,
            ] {
                let set = match &op.value {
                    Some(Value::Object(map)) => map.contains_key(key),
                    Some(_) => op.path.ends_with(&admission::escape_pointer_token(key)),
                    None => false,
                };
                if set {
                    self.stamped
                        .get_or_create(&AnnotationLabels { annotation: key })
                        .inc();
                }
            }
        }
    }
}

/// Routes of the webhook on the secure port.
pub fn routes() -> Router<AppState> {
    Router::new().route(PATH, post(mutate_deployments))
}

async fn mutate_deployments(
    State(state): State<AppState>,
    LimitedBody(body): LimitedBody,
) -> Response {
    let webhook = &state.webhook;
    match review(&body, &webhook.config) {
        Ok(reviewed) => {
            webhook.record(&reviewed);
            tracing::debug!(
                uid = %reviewed.response.uid,
                outcome = reviewed.outcome.as_str(),
                dry_run = reviewed.dry_run,
                warnings = reviewed.response.warnings.len(),
                "admission review"
            );
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                reviewed.to_json(),
            )
                .into_response()
        }
        Err(error) => {
            webhook
                .reviews
                .get_or_create(&ReviewLabels {
                    outcome: "rejected",
                    dry_run: "false",
                })
                .inc();
            tracing::debug!(%error, "not an admission review");
            error.into_response()
        }
    }
}

/// What the webhook did with a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A Deployment got a patch.
    Patched,
    /// A Deployment needed no change.
    Unchanged,
    /// Not the webhook's business: another kind, a subresource, DELETE/CONNECT, or an opted-out Deployment.
    Skipped,
    /// A Deployment the webhook could not reason about: allowed unchanged with a warning.
    Unhandled,
}

impl Outcome {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::Skipped => "skipped",
            Outcome::Unhandled => "unhandled",
        }
    }
}

/// `AdmissionResponse` (admission.k8s.io/v1). Always `allowed: true`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// Echo of `request.uid`.
    pub uid: String,
    /// Always true: the webhook only ever stamps hints.
    pub allowed: bool,
    /// `JSONPatch` exactly when `patch` is set; the apiserver rejects one without the other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    /// Base64 of the JSON Patch bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the client as `Warning:` lines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Recorded in the audit log under `<webhook name>/<key>`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ReviewEnvelope<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: &'a AdmissionResponse,
}

/// One answered review.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// The response to send.
    pub response: AdmissionResponse,
    /// What happened, for metrics.
    pub outcome: Outcome,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// The policy decision (empty for skipped and unhandled reviews).
    pub decision: Decision,
}

impl Reviewed {
    /// The AdmissionReview response body.
    pub fn to_json(&self) -> Vec<u8> {
        let envelope = ReviewEnvelope {
            api_version: REVIEW_API_VERSION,
            kind: "AdmissionReview",
            response: &self.response,
        };
        // Strings and maps of strings only: serialization cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

fn allow(uid: &str, dry_run: bool, outcome: Outcome, warning: Option<String>) -> Reviewed {
    Reviewed {
        response: AdmissionResponse {
            uid: uid.to_string(),
            allowed: true,
            patch_type: None,
            patch: None,
            warnings: warning.into_iter().collect(),
            audit_annotations: BTreeMap::new(),
        },
        outcome,
        dry_run,
        decision: Decision::default(),
    }
}

fn unhandled(uid: &str, dry_run: bool, why: impl std::fmt::Display) -> Reviewed {
    let text = format!(
        "{}cannot handle this request ({why}); allowed unchanged",
        admission::WARNING_PREFIX
    );
    allow(uid, dry_run, Outcome::Unhandled, Some(text))
}

/// Answers one AdmissionReview body: the pure part of the handler. `Err` is a 400 for bodies that are not an
/// `admission.k8s.io/v1` AdmissionReview with a request uid; everything else is an allowing response.
pub fn review(body: &[u8], config: &AdmissionConfig) -> Result<Reviewed, ApiError> {
    let expected = "expected an admission.k8s.io/v1 AdmissionReview with a request";
    let document = decode(body).map_err(|e| {
        ApiError::bad_request(format!("request body is not JSON ({e}); {expected}"))
    })?;
    let Some(document) = document.as_object() else {
        return Err(ApiError::bad_request(format!(
            "request body is not a JSON object; {expected}"
        )));
    };
    let kind = document.get("kind").and_then(Value::as_str);
    if kind != Some("AdmissionReview") {
        return Err(ApiError::bad_request(format!(
            "kind is {}, not AdmissionReview; {expected}",
            describe(document.get("kind"))
        )));
    }
    let api_version = document.get("apiVersion").and_then(Value::as_str);
    if api_version != Some(REVIEW_API_VERSION) {
        return Err(ApiError::bad_request(format!(
            "apiVersion is {}; only {REVIEW_API_VERSION} is served (set admissionReviewVersions: [\"v1\"])",
            describe(document.get("apiVersion"))
        )));
    }
    let Some(request) = document.get("request").and_then(Value::as_object) else {
        return Err(ApiError::bad_request(format!(
            "the AdmissionReview has no request object; {expected}"
        )));
    };
    let uid = match request.get("uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() => uid,
        _ => {
            return Err(ApiError::bad_request(
                "request.uid is missing or empty; the response must echo it",
            ));
        }
    };

    // From here on the review is answerable: every path allows.
    let dry_run = request
        .get("dryRun")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(gvk) = request.get("kind").and_then(Value::as_object) else {
        return Ok(unhandled(uid, dry_run, "request.kind is missing"));
    };
    let field = |name: &str| gvk.get(name).and_then(Value::as_str).unwrap_or("");
    if (field("group"), field("version"), field("kind")) != ("apps", "v1", "Deployment") {
        return Ok(allow(uid, dry_run, Outcome::Skipped, None));
    }
    if request
        .get("subResource")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Ok(allow(uid, dry_run, Outcome::Skipped, None));
    }
    let Some(operation) = request
        .get("operation")
        .and_then(Value::as_str)
        .and_then(Operation::parse)
    else {
        return Ok(allow(uid, dry_run, Outcome::Skipped, None));
    };
    let Some(object) = request.get("object").filter(|o| o.is_object()) else {
        return Ok(unhandled(
            uid,
            dry_run,
            "request.object is not a Deployment object",
        ));
    };
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
        })
        .unwrap_or("");
    let decision = match admission::decide(object, namespace, operation, config) {
        Ok(decision) => decision,
        Err(why) => return Ok(unhandled(uid, dry_run, why)),
    };
    let outcome = if decision.skipped.is_some() {
        Outcome::Skipped
    } else if decision.patch.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Patched
    };
    let mut reviewed = allow(uid, dry_run, outcome, None);
    reviewed.response.warnings = decision.warnings.clone();
    if outcome == Outcome::Patched {
        let bytes = match serde_json::to_vec(&decision.patch) {
            Ok(bytes) => bytes,
            Err(e) => return Ok(unhandled(uid, dry_run, format!("encoding the patch: {e}"))),
        };
        reviewed.response.patch_type = Some("JSONPatch");
        reviewed.response.patch = Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        if let Some(policy) = &decision.policy {
            reviewed
                .response
                .audit_annotations
                .insert("policy".to_string(), policy.clone());
        }
    }
    reviewed.decision = decision;
    Ok(reviewed)
}

/// Members of a JSON object the webhook reads: kept whole, or descended into for some of their members.
#[derive(Debug, Clone, Copy)]
enum Keep {
    /// The member as it is.
    Whole,
    /// An object, with only these members.
    Only(&'static [(&'static str, Keep)]),
    /// An array of objects, each with only these members.
    Each(&'static [(&'static str, Keep)]),
}

/// Everything `review` and [`admission::decide`] read, and nothing else: `oldObject`, `userInfo`, `options`,
/// `managedFields` and `status` are most of a review's bytes, and building them as `Value`s was most of its cost.
const REVIEW: &[(&str, Keep)] = &[
    ("kind", Keep::Whole),
    ("apiVersion", Keep::Whole),
    ("request", Keep::Only(REQUEST)),
];
const REQUEST: &[(&str, Keep)] = &[
    ("uid", Keep::Whole),
    ("kind", Keep::Whole),
    ("subResource", Keep::Whole),
    ("operation", Keep::Whole),
    ("dryRun", Keep::Whole),
    ("namespace", Keep::Whole),
    ("object", Keep::Only(OBJECT)),
];
const OBJECT: &[(&str, Keep)] = &[
    ("metadata", Keep::Only(METADATA)),
    ("spec", Keep::Only(SPEC)),
];
const METADATA: &[(&str, Keep)] = &[
    ("namespace", Keep::Whole),
    ("labels", Keep::Whole),
    ("annotations", Keep::Only(ANNOTATIONS)),
    ("deletionTimestamp", Keep::Whole),
];
/// The policy reads only its own annotations (and whether the map exists); other values, such as kubectl's
/// multi-kilobyte last-applied-configuration, are skipped.
const ANNOTATIONS: &[(&str, Keep)] = &[
    (contract::STARTUP_FILTER_ANNOTATION, Keep::Whole),
    (contract::TARGET_UTILIZATION_ANNOTATION, Keep::Whole),
    (contract::POLICY_ANNOTATION, Keep::Whole),
];
const SPEC: &[(&str, Keep)] = &[("template", Keep::Only(TEMPLATE))];
const TEMPLATE: &[(&str, Keep)] = &[("spec", Keep::Only(POD))];
const POD: &[(&str, Keep)] = &[
    ("containers", Keep::Each(CONTAINER)),
    ("initContainers", Keep::Each(CONTAINER)),
    ("resources", Keep::Whole),
];
const CONTAINER: &[(&str, Keep)] = &[
    ("name", Keep::Whole),
    ("image", Keep::Whole),
    ("command", Keep::Whole),
    ("restartPolicy", Keep::Whole),
    ("resources", Keep::Whole),
    ("startupProbe", Keep::Whole),
    // Only the names: values can be whole configuration files.
    ("env", Keep::Each(&[("name", Keep::Whole)])),
];

/// Decodes a body into the parts of the review the webhook reads, in the same `Value` shape a full decode gives.
/// A non-object where an object is read keeps its JSON type but not its content (`[]`, `""`, `0`, `false`,
/// `null`), so readers still tell "absent or null" from "not an object". Syntax errors and trailing bytes are
/// errors, exactly as with `serde_json::from_slice`.
fn decode(body: &[u8]) -> Result<Value, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = Pruned::object(REVIEW).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(value)
}

/// The seed that decodes only the members listed in its table; `each` applies the table to every element of
/// an array instead.
#[derive(Clone, Copy)]
struct Pruned {
    table: &'static [(&'static str, Keep)],
    each: bool,
}

impl Pruned {
    fn object(table: &'static [(&'static str, Keep)]) -> Self {
        Pruned { table, each: false }
    }

    fn each(table: &'static [(&'static str, Keep)]) -> Self {
        Pruned { table, each: true }
    }
}

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.each {
            // An array was expected: keep the type, drop the content.
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Value::Object(serde_json::Map::new()));
        }
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            // Duplicate keys: the last one wins, as with a full decode.
            let value = match self.table.iter().find(|(name, _)| *name == key) {
                Some((_, Keep::Whole)) => map.next_value::<Value>()?,
                Some((_, Keep::Only(table))) => map.next_value_seed(Pruned::object(table))?,
                Some((_, Keep::Each(table))) => map.next_value_seed(Pruned::each(table))?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        if self.each {
            while let Some(item) = seq.next_element_seed(Pruned::object(self.table))? {
                out.push(item);
            }
        } else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        }
        Ok(Value::Array(out))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Bool(false))
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Value, E> {
        Ok(Value::from(0))
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Value, E> {
        Ok(Value::from(0))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Value, E> {
        Ok(Value::from(0))
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Value, E> {
        Ok(Value::String(String::new()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// A short rendering of a field for error messages (`missing`, `"v1beta1"`, `a number`).
fn describe(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "missing".to_string(),
        Some(Value::String(s)) => format!("{:?}", s.chars().take(64).collect::<String>()),
        Some(Value::Bool(_)) => "a boolean".to_string(),
        Some(Value::Number(_)) => "a number".to_string(),
        Some(Value::Array(_)) => "an array".to_string(),
        Some(Value::Object(_)) => "an object".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(request: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({ "apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "request": request }))
            .unwrap()
    }

    fn deployment_request(object: Value) -> Value {
        json!({
            "uid": "u-1", "operation": "CREATE", "namespace": "shop", "dryRun": false,
            "kind": { "group": "apps", "version": "v1", "kind": "Deployment" },
            "resource": { "group": "apps", "version": "v1", "resource": "deployments" },
            "object": object
        })
    }

    fn java_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": "orders", "namespace": "shop" },
            "spec": { "template": { "spec": { "containers": [
                { "name": "app", "image": "eclipse-temurin:21", "resources": { "requests": { "cpu": "25m" } } }
            ] } } }
        })
    }

    #[test]
    fn patched_response_shape() {
        let reviewed = review(
            &body(deployment_request(java_deployment())),
            &AdmissionConfig::default(),
        )
        .unwrap();
        assert_eq!(reviewed.outcome, Outcome::Patched);
        let out: Value = serde_json::from_slice(&reviewed.to_json()).unwrap();
        assert_eq!(out["apiVersion"], REVIEW_API_VERSION);
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
        assert_eq!(out["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().unwrap())
            .unwrap();
        let patch: Value = serde_json::from_slice(&patch).unwrap();
        assert_eq!(patch[0]["op"], "add");
        assert_eq!(patch[0]["path"], "/metadata/annotations");
        assert!(out["response"]["auditAnnotations"]["policy"].is_string());
        assert!(out["response"].get("warnings").is_none());
    }

    #[test]
    fn not_a_review_is_a_400_naming_the_problem() {
        let config = AdmissionConfig::default();
        for (input, needle) in [
            (b"{".to_vec(), "not JSON"),
            (b"[]".to_vec(), "not a JSON object"),
            (br#"{"kind":"Pod"}"#.to_vec(), "kind is \"Pod\""),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1beta1"}"#.to_vec(),
                "v1beta1",
            ),
            (
                br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#.to_vec(),
                "no request",
            ),
            (body(json!({ "uid": "" })), "request.uid"),
            (body(json!({ "uid": 7 })), "request.uid"),
        ] {
            let err = review(&input, &config).unwrap_err();
            assert_eq!(err.code, StatusCode::BAD_REQUEST);
            assert!(
                err.message.contains(needle),
                "{}: {}",
                String::from_utf8_lossy(&input),
                err.message
            );
        }
    }

    #[test]
    fn answerable_but_unusable_reviews_are_allowed_with_a_warning() {
        let config = AdmissionConfig::default();
        for request in [
            json!({ "uid": "u" }),
            deployment_request(Value::Null),
            deployment_request(json!({ "metadata": "nope" })),
        ] {
            let reviewed = review(&body(request.clone()), &config).unwrap();
            assert_eq!(reviewed.outcome, Outcome::Unhandled, "{request}");
            assert!(reviewed.response.allowed && reviewed.response.patch.is_none());
            assert_eq!(reviewed.response.warnings.len(), 1);
        }
    }

    #[test]
    fn other_kinds_subresources_and_operations_are_skipped_silently() {
        let config = AdmissionConfig::default();
        let mut pod = deployment_request(java_deployment());
        pod["kind"] = json!({ "group": "", "version": "v1", "kind": "Pod" });
        let mut scale = deployment_request(java_deployment());
        scale["subResource"] = json!("scale");
        let mut delete = deployment_request(Value::Null);
        delete["operation"] = json!("DELETE");
        for request in [pod, scale, delete] {
            let reviewed = review(&body(request), &config).unwrap();
            assert_eq!(reviewed.outcome, Outcome::Skipped);
            assert!(reviewed.response.patch.is_none() && reviewed.response.warnings.is_empty());
        }
    }

    #[test]
    fn dry_run_gets_the_same_answer() {
        let config = AdmissionConfig::default();
        let real = review(&body(deployment_request(java_deployment())), &config).unwrap();
        let mut request = deployment_request(java_deployment());
        request["dryRun"] = json!(true);
        let dry = review(&body(request), &config).unwrap();
        assert!(dry.dry_run);
        assert_eq!(dry.response, real.response);
    }

    #[test]
    fn pruned_decoding_decides_like_a_full_decode() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let full: Value = serde_json::from_slice(&bytes).unwrap();
            let pruned = decode(&bytes).unwrap();
            assert!(pruned["request"].get("oldObject").is_none());
            assert!(
                pruned["request"]["object"]["metadata"]
                    .get("managedFields")
                    .is_none()
            );
            let request = &full["request"];
            let namespace = request["namespace"].as_str().unwrap();
            let op = Operation::parse(request["operation"].as_str().unwrap()).unwrap();
            let config = AdmissionConfig::default();
            assert_eq!(
                admission::decide(&pruned["request"]["object"], namespace, op, &config),
                admission::decide(&request["object"], namespace, op, &config),
            );
            seen += 1;
        }
        assert!(seen >= 10);
        // Shapes a reader must still tell apart.
        assert_eq!(decode(b"[1,2]").unwrap(), json!([]));
        assert_eq!(
            decode(br#"{"kind":7,"request":{"object":"x","uid":"u"},"x":{"y":[{}]}}"#).unwrap(),
            json!({ "kind": 7, "request": { "object": "", "uid": "u" } })
        );
        let annotations = |raw: &str| {
            let body =
                format!(r#"{{"request":{{"object":{{"metadata":{{"annotations":{raw}}}}}}}}}"#);
            decode(body.as_bytes()).unwrap()["request"]["object"]["metadata"]["annotations"].clone()
        };
        assert_eq!(annotations("null"), Value::Null);
        assert_eq!(annotations(r#"["a"]"#), json!([]));
        assert_eq!(
            annotations(
                r#"{"kubectl.kubernetes.io/last-applied-configuration":"{\"a\":1}","smart-autoscaler.io/policy":"p"}"#
            ),
            json!({ "smart-autoscaler.io/policy": "p" })
        );
        assert!(decode(b"{} trailing").is_err());
        assert!(decode(br#"{"request": {"uid": "u""#).is_err());
    }

    #[test]
    fn metrics_count_outcomes_and_stamps() {
        let telemetry = Telemetry::new();
        let state = WebhookState::new(AdmissionConfig::default(), &telemetry);
        let reviewed = review(&body(deployment_request(java_deployment())), &state.config).unwrap();
        state.record(&reviewed);
        let text = telemetry.encode();
        assert!(
            text.contains(
                r#"smart_autoscaler_webhook_reviews_total{outcome="patched",dry_run="false"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"smart_autoscaler_webhook_annotations_stamped_total{annotation="smart-autoscaler.io/target-utilization"} 1"#
        ));
    }

    #[test]
    fn config_file_converts_with_the_flag_name() {
        assert_eq!(
            AdmissionConfig::try_from(&WebhookArgs::default()).unwrap(),
            AdmissionConfig::default()
        );
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.json");
        std::fs::write(&good, r#"{"startupFilter": {"clusterDefaultSeconds": 30}}"#).unwrap();
        let args = WebhookArgs {
            webhook_config: Some(good),
        };
        assert_eq!(
            AdmissionConfig::try_from(&args)
                .unwrap()
                .startup_filter
                .cluster_default_seconds,
            Some(30)
        );
        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"targetUtilization": {"bands": [{"belowMillicores": 0, "highest": 90, "lowest": 80}]}}"#)
            .unwrap();
        let err = AdmissionConfig::try_from(&WebhookArgs {
            webhook_config: Some(bad),
        })
        .unwrap_err();
        assert!(matches!(err, WebhookSettingsError::Invalid { .. }), "{err}");
        assert!(
            err.to_string().starts_with("invalid --webhook-config"),
            "{err}"
        );
        assert!(err.to_string().contains("belowMillicores"), "{err}");
        let missing = AdmissionConfig::try_from(&WebhookArgs {
            webhook_config: Some(dir.path().join("nope.json")),
        })
        .unwrap_err();
        assert!(
            matches!(missing, WebhookSettingsError::Read { .. }),
            "{missing}"
        );
        assert!(missing.to_string().contains("cannot read"), "{missing}");
    }
}
