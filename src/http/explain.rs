//! `GET /api/v2/deployments/{namespace}/{name}` on the metrics port: the readable explanation of one served value
//! (docs/api.md). It is a versioned addition beside `/api/v1/deployments/{namespace}/{name}`, which keeps its
//! shape: values rounded and named by their unit, times in RFC 3339, one name per quantity, and every hold,
//! clamp and adjustment with its reason in words, the deadband included (v1 leaves it unnamed).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{ApiError, ApiPath, AppState};
use crate::clock::rfc3339;
use crate::domain::decision::{DecisionConfig, TargetSource};
use crate::domain::model::{DeploymentKey, ServedDeployment, UnixMillis, UsageUnknown};

/// Where the readable explanation is served.
pub const EXPLAIN_PATH: &str = "/api/v2/deployments/{namespace}/{name}";
/// The `apiVersion` of the readable explanation.
pub const API_VERSION: &str = "smart-autoscaler.io/v2";

/// Routes of the readable explanation (merged into the metrics port's).
pub fn routes() -> Router<AppState> {
    Router::new().route(EXPLAIN_PATH, get(explain))
}

/// A percentage to one decimal.
fn pct(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A ratio or factor to two decimals.
fn ratio(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Where a policy target came from, in words.
fn source_words(source: TargetSource) -> &'static str {
    match source {
        TargetSource::Annotation => "the smart-autoscaler.io/target-utilization annotation",
        TargetSource::TinyRequest => "the low-request policy for pods requesting under 50m CPU",
        TargetSource::SmallRequest => "the low-request policy for pods requesting 50m to 100m CPU",
        TargetSource::Learned => "the auto-tuned target (smart-autoscaler.io/auto-tune)",
        TargetSource::Base => "the HPA's target",
    }
}

/// The number before `%` that follows `marker` in `text`, e.g. 48.5 in "... clamped to 48.5% ...".
fn percent_after(text: &str, marker: &str) -> Option<f64> {
    let rest = &text[text.find(marker)? + marker.len()..];
    rest[..rest.find('%')?].trim().parse().ok()
}

/// The holds and clamps that kept the effective target from the candidate, each with its reason in words.
fn holds(served: &ServedDeployment) -> Vec<Value> {
    let e = &served.explanation;
    let mut out = Vec::new();
    // The target the candidate became after the factor bounds: from the decision's own reason when clamped.
    let mut bounded = e.candidate_target_percent;
    if e.clamped {
        let reason = e.reasons.iter().find(|r| r.contains("clamped to"));
        if let Some(v) = reason.and_then(|r| percent_after(r, "clamped to")) {
            bounded = v;
        }
        out.push(json!({
            "rule": "factor_bounds",
            "reason": format!(
                "the target the inputs call for, {}%, is outside the factor bounds (--min-factor, --max-factor) and \
                 was clamped to {}%",
                pct(e.candidate_target_percent),
                pct(bounded)
            ),
        }));
    }
    match &e.held {
        Some(why) => {
            let rule = if why.starts_with("cooldown") {
                "cooldown"
            } else if why.starts_with("confidence") {
                "low_confidence"
            } else {
                "held"
            };
            out.push(json!({
                "rule": rule,
                "reason": format!("the effective target was held at {}%: {why}", pct(e.effective_target_percent)),
            }));
        }
        None if (e.effective_target_percent - bounded).abs() > 0.05 => {
            let deadband = DecisionConfig::default().min_change_percent;
            out.push(json!({
                "rule": "deadband",
                "reason": format!(
                    "the effective target stays at {}%: the new target, {}%, differs from it by {} points, under the \
                     {deadband}-point deadband (smaller changes are not made, so the HPA is not fed noise)",
                    pct(e.effective_target_percent),
                    pct(bounded),
                    pct((e.effective_target_percent - bounded).abs())
                ),
            }));
        }
        None => {}
    }
    out
}

/// What raised or replaced the value the effective target gives, each in words.
fn adjustments(served: &ServedDeployment) -> Vec<Value> {
    let e = &served.explanation;
    let mut out = Vec::new();
    if e.forecast_applied {
        out.push(json!({
            "rule": "forecast",
            "reason": format!(
                "the forecast of {}% over the lead time raised the served value",
                e.forecast_percent.map(pct).unwrap_or_default()
            ),
        }));
    }
    if e.saturation_floor {
        out.push(json!({
            "rule": "saturation_floor",
            "reason": format!(
                "the pods are saturated ({}% measured): the served value is floored at the measured value",
                pct(e.raw_percent)
            ),
        }));
    }
    if let Some(would) = e.would_serve_percent {
        out.push(json!({
            "rule": "dry_run",
            "reason": format!(
                "dry run: {}% would be served; the measured {}% is served instead",
                pct(would),
                pct(e.raw_percent)
            ),
        }));
    }
    out
}

/// The readable explanation of `served` (`unknown`: why it has no fresh value, when it has none) at `now`.
pub fn readable(
    served: &ServedDeployment,
    unknown: Option<&UsageUnknown>,
    collected_at: UnixMillis,
    now: UnixMillis,
) -> Value {
    let e = &served.explanation;
    let i = &served.inputs;
    let forecast = e.forecast.as_ref().map(|a| {
        json!({
            "considered_percent": e.forecast_percent.map(pct),
            "applied": e.forecast_applied,
            "confidence": ratio(a.confidence),
            "trusted": a.trusted,
            "usable": a.usable,
            "reason": a.reason,
            "made_at": a.made_at.map(rfc3339),
        })
    });
    let tuning = e.tuning.as_ref().map(|t| {
        json!({
            "verdict": t.verdict,
            "target_percent": t.target_percent.map(pct),
            "confidence": t.confidence.map(ratio),
            "applied": t.applied,
            "opted_in": t.opted_in,
            "computed_at": rfc3339(t.computed_at),
            "reason": t.text,
        })
    });
    let holds = holds(served);
    let adjustments = adjustments(served);
    let mut summary = format!(
        "Serves {}% for a measured {}%: {}% x base target {}% / effective target {}%.",
        pct(e.served_percent),
        pct(e.raw_percent),
        pct(e.raw_percent),
        pct(e.base_target_percent),
        pct(e.effective_target_percent)
    );
    for item in holds.iter().chain(&adjustments) {
        if let Some(reason) = item["reason"].as_str() {
            summary.push(' ');
            let mut chars = reason.chars();
            if let Some(first) = chars.next() {
                summary.extend(first.to_uppercase());
                summary.push_str(chars.as_str());
            }
            summary.push('.');
        }
    }
    if let Some(t) = &e.tuning {
        // Applied or advice, the tuning's own words close the summary.
        summary.push_str(&format!(" Auto-tune: {}.", t.text));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "DeploymentExplanation",
        "namespace": i.key.namespace,
        "name": i.key.name,
        "collected_at": rfc3339(collected_at),
        "observed_at": rfc3339(i.observed_at),
        "data_age_seconds": (now - i.observed_at).max(0) / 1000,
        "served_percent": pct(e.served_percent),
        "measured_cpu_percent": pct(e.raw_percent),
        "measured_memory_percent": i.memory_utilization_percent.map(pct),
        "target": {
            "base_percent": pct(e.base_target_percent),
            "policy_percent": pct(e.policy_target_percent),
            "policy_from": source_words(e.policy_source),
            "candidate_percent": pct(e.candidate_target_percent),
            "effective_percent": pct(e.effective_target_percent),
            "factor": ratio(e.factor),
        },
        "pressure": {
            "pool": i.pool.name,
            "nodes": i.pool.nodes,
            "level": ratio(e.pressure.level),
            "factor": ratio(e.pressure.factor),
            "measured_cpu_percent": e.pressure.measured_percent.map(pct),
            "requested_cpu_percent": pct(e.pressure.requested_percent),
        },
        "confidence": ratio(e.confidence),
        "replicas": { "spec": i.replicas, "ready": i.ready_pods, "starting": i.starting_pods },
        "forecast": forecast,
        "tuning": tuning,
        "holds": holds,
        "adjustments": adjustments,
        "usage_unknown": unknown.map(|u| json!({
            "cause": u.cause,
            "reason": u.reason,
            "since": rfc3339(u.since),
            "last_good_at": u.last_good_at.map(rfc3339),
        })),
        "summary": summary,
    })
}

/// `GET /api/v2/deployments/{namespace}/{name}`.
async fn explain(
    State(state): State<AppState>,
    ApiPath((namespace, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = state
        .snapshot()
        .ok_or_else(|| ApiError::unavailable("no metrics collected yet"))?;
    let key = DeploymentKey::new(namespace, name);
    let unknown = snapshot.unmeasured.get(&key);
    match snapshot.deployments.get(&key) {
        Some(served) => Ok(Json(readable(
            served,
            unknown,
            snapshot.collected_at,
            state.clock.now_millis(),
        ))),
        None => match unknown {
            Some(u) => Ok(Json(json!({
                "apiVersion": API_VERSION,
                "kind": "DeploymentExplanation",
                "namespace": key.namespace,
                "name": key.name,
                "collected_at": rfc3339(snapshot.collected_at),
                "served_percent": null,
                "usage_unknown": {
                    "cause": u.cause,
                    "reason": u.reason,
                    "since": rfc3339(u.since),
                    "last_good_at": u.last_good_at.map(rfc3339),
                },
                "summary": format!("Nothing is served: {}.", u.reason),
            }))),
            None => Err(ApiError::not_found(format!(
                "deployment {key} is not managed by smart-autoscaler"
            ))),
        },
    }
}
