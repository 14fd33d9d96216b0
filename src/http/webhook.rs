//! Mutating admission webhook for Deployments: `POST /mutate/deployments` on the secure port.
//!
//! Protocol only: decode an `admission.k8s.io/v1` AdmissionReview with `kube::core::admission`'s types, the
//! object as the partial [`admission::Deployment`] (so `oldObject`, `managedFields`, `status` and most of the
//! template are skipped while parsing, not built), hand it to [`crate::domain::admission::decide`], encode the
//! answer. The apiserver's `?timeout=` query is ignored (routing never looks at the query).
//!
//! Failure shape. A body that is not an AdmissionReview is a 400 Status: there is no uid to answer, and with
//! `failurePolicy: Ignore` the apiserver admits the object anyway. Once the uid is known, every answer is a 200
//! allowing the object, because a webhook that stamps hints must never block a rollout: what cannot be handled is
//! allowed unchanged with a warning, never a 5xx. Dry-run requests get exactly the answer a real one would; the
//! webhook has no side effects (`sideEffects: None`), only its own counters.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use clap::Args;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::admission::{
    AdmissionRequest, AdmissionResponse, AdmissionReview, Operation as ReviewOperation,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::{ApiError, AppState, LimitedBody};
use crate::domain::admission::{self, AdmissionConfig, Decision, Operation};
use crate::domain::contract;
use crate::domain::pod::ObjectOr;
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
    /// The last [`RECENT_STAMPS`] patches, for the dashboard's `/webhook` page.
    pub recent: RecentStamps,
}

/// How many patches [`RecentStamps`] keeps.
pub const RECENT_STAMPS: usize = 100;

/// One patch the webhook answered a (non-dry-run) review with, as the dashboard lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stamp {
    /// When it was answered (the server's clock).
    pub at: crate::domain::model::UnixMillis,
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment's name (empty on a create that uses `generateName`).
    pub name: String,
    /// `CREATE` or `UPDATE`.
    pub operation: &'static str,
    /// The webhook-owned annotations in force once the patch is applied.
    pub stamped: std::collections::BTreeMap<String, String>,
    /// Warnings returned with the answer.
    pub warnings: Vec<String>,
}

/// A bounded in-memory log of the last [`RECENT_STAMPS`] patches, newest last. Nothing else records them; the
/// counters in `/metrics` only count. The lock is held for a push or a copy, never across an `.await`.
#[derive(Debug, Default)]
pub struct RecentStamps(std::sync::Mutex<std::collections::VecDeque<Stamp>>);

impl RecentStamps {
    /// Adds a stamp, dropping the oldest past [`RECENT_STAMPS`].
    pub fn push(&self, stamp: Stamp) {
        let mut log = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if log.len() == RECENT_STAMPS {
            log.pop_front();
        }
        log.push_back(stamp);
    }

    /// The stamps, newest first.
    pub fn newest_first(&self) -> Vec<Stamp> {
        let log = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        log.iter().rev().cloned().collect()
    }
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
            if reviewed.outcome == Outcome::Patched
                && !reviewed.dry_run
                && let Some((namespace, name, operation)) = &reviewed.target
            {
                webhook.recent.push(Stamp {
                    at: state.clock.now_millis(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    operation,
                    stamped: reviewed.decision.stamped.clone(),
                    warnings: reviewed.decision.warnings.clone(),
                });
            }
            tracing::debug!(
                uid = %reviewed.response.uid,
                outcome = reviewed.outcome.as_str(),
                dry_run = reviewed.dry_run,
                warnings = reviewed.response.warnings.as_ref().map_or(0, Vec::len),
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

/// The admitted object as kube's admission types carry it: the partial [`admission::Deployment`].
#[derive(Debug, Clone)]
pub struct AdmittedObject {
    /// The Deployment, or the fact that `object` was not a JSON object.
    pub deployment: ObjectOr<admission::Deployment>,
    /// kube's `Resource` hands out metadata by reference; the policy reads its own partial metadata instead, so
    /// this stays empty.
    meta: ObjectMeta,
}

impl<'de> Deserialize<'de> for AdmittedObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(AdmittedObject {
            deployment: ObjectOr::deserialize(deserializer)?,
            meta: ObjectMeta::default(),
        })
    }
}

impl kube::Resource for AdmittedObject {
    type DynamicType = ();
    type Scope = <Deployment as k8s_openapi::Resource>::Scope;

    fn kind(_: &()) -> Cow<'_, str> {
        <Deployment as k8s_openapi::Resource>::KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        <Deployment as k8s_openapi::Resource>::GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        <Deployment as k8s_openapi::Resource>::VERSION.into()
    }
    fn api_version(_: &()) -> Cow<'_, str> {
        <Deployment as k8s_openapi::Resource>::API_VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        <Deployment as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

type Deployment = k8s_openapi::api::apps::v1::Deployment;

/// The response on the wire. kube's `AdmissionResponse` would serialize `patch` (Go `[]byte`) as an array of
/// numbers (kube-rs/kube#1781); Go encodes `[]byte` as base64, which is what the apiserver documents and what
/// this writes, from the same `AdmissionResponse`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireResponse<'a> {
    uid: &'a str,
    allowed: bool,
    /// `JSONPatch` exactly when `patch` is set: the apiserver rejects one without the other. This module sets a
    /// patch only through kube's `with_patch`, which sets that type too (the field itself is private to kube).
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    audit_annotations: &'a HashMap<String, String>,
}

#[derive(Serialize)]
struct WireReview<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'a str,
    response: WireResponse<'a>,
}

/// One answered review.
#[derive(Debug, Clone, PartialEq)]
pub struct Reviewed {
    /// The response to send; always allowing.
    pub response: AdmissionResponse,
    /// What happened, for metrics.
    pub outcome: Outcome,
    /// `request.dryRun`.
    pub dry_run: bool,
    /// The policy decision (empty for skipped and unhandled reviews).
    pub decision: Decision,
    /// The Deployment's namespace, name and operation, once the review was read as one.
    pub target: Option<(String, String, &'static str)>,
}

impl Reviewed {
    /// The AdmissionReview response body, `apiVersion` and `kind` echoing the request's.
    pub fn to_json(&self) -> Vec<u8> {
        let response = &self.response;
        let types = &response.types;
        let envelope = WireReview {
            api_version: non_empty(&types.api_version, REVIEW_API_VERSION),
            kind: non_empty(&types.kind, "AdmissionReview"),
            response: WireResponse {
                uid: &response.uid,
                allowed: response.allowed,
                patch_type: response.patch.as_ref().map(|_| "JSONPatch"),
                patch: response
                    .patch
                    .as_ref()
                    .map(|p| base64::engine::general_purpose::STANDARD.encode(p)),
                warnings: response.warnings.as_deref().unwrap_or_default(),
                audit_annotations: &response.audit_annotations,
            },
        };
        // Strings and maps of strings only: serialization cannot fail.
        serde_json::to_vec(&envelope).unwrap_or_default()
    }
}

fn non_empty<'a>(text: &'a str, default: &'a str) -> &'a str {
    if text.is_empty() { default } else { text }
}

fn allow(
    response: AdmissionResponse,
    dry_run: bool,
    outcome: Outcome,
    warning: Option<String>,
) -> Reviewed {
    let mut response = response;
    response.allowed = true;
    response.warnings = warning.map(|w| vec![w]);
    Reviewed {
        response,
        outcome,
        dry_run,
        decision: Decision::default(),
        target: None,
    }
}

fn unhandled(response: AdmissionResponse, dry_run: bool, why: impl std::fmt::Display) -> Reviewed {
    let text = format!(
        "{}cannot handle this request ({why}); allowed unchanged",
        admission::WARNING_PREFIX
    );
    allow(response, dry_run, Outcome::Unhandled, Some(text))
}

/// An allowing response for a review whose uid is known but which kube's types could not read. kube builds
/// responses from a request, or with `invalid` for one it could not read at all: this is the latter, allowing.
fn response_for(uid: &str) -> AdmissionResponse {
    let mut response = AdmissionResponse::invalid("");
    response.uid = uid.to_string();
    response.allowed = true;
    response.result = Default::default();
    response
}

/// Answers one AdmissionReview body: the pure part of the handler. `Err` is a 400 for bodies that are not an
/// `admission.k8s.io/v1` AdmissionReview with a request uid; everything else is an allowing response.
pub fn review(body: &[u8], config: &AdmissionConfig) -> Result<Reviewed, ApiError> {
    match serde_json::from_slice::<AdmissionReview<AdmittedObject>>(body) {
        Ok(review)
            if review.types.kind == "AdmissionReview"
                && review.types.api_version == REVIEW_API_VERSION
                && review.request.as_ref().is_some_and(|r| !r.uid.is_empty()) =>
        {
            match review.try_into() {
                Ok(request) => Ok(answer(request, config)),
                Err(_) => untyped(body, None),
            }
        }
        Ok(_) => untyped(body, None),
        Err(error) => untyped(body, Some(error)),
    }
}

/// Answers a review kube's types read.
fn answer(request: AdmissionRequest<AdmittedObject>, config: &AdmissionConfig) -> Reviewed {
    let dry_run = request.dry_run;
    let response = AdmissionResponse::from(&request);
    let gvk = &request.kind;
    if (gvk.group.as_str(), gvk.version.as_str(), gvk.kind.as_str()) != ("apps", "v1", "Deployment")
        || request
            .sub_resource
            .as_deref()
            .is_some_and(|s| !s.is_empty())
    {
        return allow(response, dry_run, Outcome::Skipped, None);
    }
    let operation = match request.operation {
        ReviewOperation::Create => Operation::Create,
        ReviewOperation::Update => Operation::Update,
        ReviewOperation::Delete | ReviewOperation::Connect => {
            return allow(response, dry_run, Outcome::Skipped, None);
        }
    };
    let Some(object) = &request.object else {
        return unhandled(
            response,
            dry_run,
            "request.object is not a Deployment object",
        );
    };
    let namespace = request
        .namespace
        .as_deref()
        .or_else(|| object.deployment.object().and_then(|d| d.namespace()))
        .unwrap_or("");
    let decision = match admission::decide(&object.deployment, namespace, operation, config) {
        Ok(decision) => decision,
        Err(why) => return unhandled(response, dry_run, why),
    };
    let outcome = if decision.skipped.is_some() {
        Outcome::Skipped
    } else if decision.patch.is_empty() {
        Outcome::Unchanged
    } else {
        Outcome::Patched
    };
    let mut reviewed = allow(response, dry_run, outcome, None);
    reviewed.response.warnings = (!decision.warnings.is_empty()).then(|| decision.warnings.clone());
    if outcome == Outcome::Patched {
        // kube takes the patch as a `json_patch::Patch`; the policy's operations have the same JSON form.
        let patched = serde_json::to_value(&decision.patch)
            .and_then(serde_json::from_value)
            .map_err(|e| e.to_string())
            .and_then(|patch| {
                (reviewed.response.clone().with_patch(patch)).map_err(|e| e.to_string())
            });
        match patched {
            Ok(response) => reviewed.response = response,
            Err(e) => {
                return unhandled(
                    reviewed.response,
                    dry_run,
                    format!("encoding the patch: {e}"),
                );
            }
        }
        if let Some(policy) = &decision.policy {
            reviewed
                .response
                .audit_annotations
                .insert("policy".to_string(), policy.clone());
        }
    }
    reviewed.decision = decision;
    reviewed.target = Some((
        namespace.to_string(),
        request.name.clone(),
        match operation {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
        },
    ));
    reviewed
}

/// A body kube's types did not read as an answerable review (`typed` says why, when they failed): a 400 naming
/// what is wrong with the envelope, or, once the uid is known, an allowing response with a warning. Only such
/// bodies are read as a JSON tree, and only the envelope's few members are looked at.
fn untyped(body: &[u8], typed: Option<serde_json::Error>) -> Result<Reviewed, ApiError> {
    let expected = "expected an admission.k8s.io/v1 AdmissionReview with a request";
    let document: Value = serde_json::from_slice(body).map_err(|e| {
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
    // From here on the review is answerable: it is allowed, unchanged.
    let dry_run = request
        .get("dryRun")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let why = match typed {
        Some(error) => format!("not an {REVIEW_API_VERSION} AdmissionRequest: {error}"),
        None => "not an AdmissionReview kube could read".to_string(),
    };
    Ok(unhandled(response_for(uid), dry_run, why))
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
            "userInfo": { "username": "kubernetes-admin", "groups": ["system:masters"] },
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
            assert_eq!(reviewed.response.warnings.as_ref().map(Vec::len), Some(1));
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
            assert!(reviewed.response.patch.is_none() && reviewed.response.warnings.is_none());
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
    fn every_fixture_is_read_by_the_typed_envelope() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let typed: AdmissionReview<AdmittedObject> = serde_json::from_slice(&bytes).unwrap();
            let request = typed.request.unwrap();
            assert!(
                matches!(
                    request.object.map(|o| o.deployment),
                    Some(ObjectOr::Object(_))
                ),
                "{}",
                path.display()
            );
            let reviewed = review(&bytes, &AdmissionConfig::default()).unwrap();
            assert_ne!(reviewed.outcome, Outcome::Unhandled, "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 10);
    }

    #[test]
    fn a_request_kube_cannot_read_is_allowed_with_the_reason() {
        let mut request = deployment_request(java_deployment());
        request["operation"] = json!("PATCH");
        request["dryRun"] = json!(true);
        let reviewed = review(&body(request), &AdmissionConfig::default()).unwrap();
        assert_eq!(reviewed.outcome, Outcome::Unhandled);
        assert!(reviewed.dry_run);
        let out: Value = serde_json::from_slice(&reviewed.to_json()).unwrap();
        assert_eq!(out["apiVersion"], REVIEW_API_VERSION);
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], true);
        let warning = out["response"]["warnings"][0].as_str().unwrap();
        assert!(warning.contains("PATCH"), "{warning}");
    }

    #[test]
    fn recent_stamps_keep_the_newest_hundred() {
        let log = RecentStamps::default();
        for i in 0..(RECENT_STAMPS as i64 + 5) {
            log.push(Stamp {
                at: i,
                namespace: "shop".into(),
                name: format!("d{i}"),
                operation: "CREATE",
                stamped: Default::default(),
                warnings: Vec::new(),
            });
        }
        let stamps = log.newest_first();
        assert_eq!(stamps.len(), RECENT_STAMPS);
        assert_eq!(stamps[0].at, RECENT_STAMPS as i64 + 4);
        assert_eq!(stamps[RECENT_STAMPS - 1].at, 5);
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
