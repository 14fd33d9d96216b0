//! The plain-HTTP operations port: Prometheus exposition, health probes, and the JSON API that explains every
//! served value and lists the anomalies (docs/api.md).

use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{ApiError, ApiPath, AppState};
use std::sync::Arc;

use crate::domain::anomaly::Anomaly;
use crate::domain::forecast::online::{Board, Published};
use crate::domain::model::{DeploymentKey, Snapshot, UnixMillis};
use crate::store::AnomalyHistory;
use crate::store::anomalies::{AnomalyQuery, MAX_ANOMALIES};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Routes of the metrics port.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/deployments", get(list_deployments))
        .route(
            "/api/v1/deployments/{namespace}/{name}",
            get(get_deployment),
        )
        .route("/api/v1/forecasts", get(list_forecasts))
        .route("/api/v1/forecasts/{namespace}/{name}", get(get_forecast))
        .route(ANOMALIES_PATH, get(list_anomalies))
        .route(TUNING_PATH, get(list_tunings))
        .route(super::cost::COST_PATH, get(super::cost::get_cost))
        .route(
            super::cost::RECOMMENDATIONS_PATH,
            get(super::cost::get_recommendations),
        )
        .merge(super::dashboard::routes())
        .merge(super::history::routes())
        .merge(super::schedule::routes())
        .merge(super::report::routes())
        .merge(super::explain::routes())
}

/// Where the auto-tuned targets are listed.
pub const TUNING_PATH: &str = "/api/v1/tuning";

/// Every deployment's latest tuning (of the namespace, when given): the tuned target, confidence, whether the
/// tick applies it and its words (docs/tuning.md).
async fn list_tunings(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let namespace = super::cost::namespace_query(query.as_deref())?;
    let tunings = state
        .tunings
        .as_ref()
        .map(|t| t.borrow().clone())
        .ok_or_else(|| ApiError::not_found("auto-tuning is off (--no-tuning)"))?;
    let snapshot = state.snapshot();
    let mut body = crate::tune::listing(&tunings, snapshot.as_deref(), namespace.as_deref());
    body["query"] = json!({ "namespace": namespace });
    Ok(Json(body))
}

fn board(state: &AppState) -> Result<Arc<Board>, ApiError> {
    state
        .forecasts
        .as_ref()
        .map(|b| b.borrow().clone())
        .ok_or_else(|| ApiError::not_found("forecasting is off (--no-forecast)"))
}

/// Every deployment's latest forecast, trust and scores.
async fn list_forecasts(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let board = board(&state)?;
    let mut items: Vec<(&DeploymentKey, &Published)> = board.iter().collect();
    items.sort_by(|a, b| a.0.cmp(b.0));
    let items: Vec<Value> = items
        .into_iter()
        .map(|(k, p)| {
            json!({
                "namespace": k.namespace, "name": k.name, "usable": p.advice.usable,
                "trusted": p.advice.trusted, "confidence": p.advice.confidence,
                "lead_max_demand": p.advice.lead_max_demand, "mape": p.scores.mape, "mase": p.scores.mase,
                "false_positive_rate": p.scores.false_positive_rate,
                "trusted_false_positive_rate": p.scores.trusted_false_positive_rate, "reason": p.advice.reason,
            })
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

/// One deployment's forecast: advice, scores, members and their weights.
async fn get_forecast(
    State(state): State<AppState>,
    ApiPath((namespace, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let board = board(&state)?;
    let key = DeploymentKey::new(namespace, name);
    let published = board
        .get(&key)
        .ok_or_else(|| ApiError::not_found(format!("no forecast for deployment {key}")))?;
    let mut value =
        serde_json::to_value(published).map_err(|e| ApiError::internal(e.to_string()))?;
    value["namespace"] = json!(key.namespace);
    value["name"] = json!(key.name);
    Ok(Json(value))
}

/// Serves the Prometheus text format 0.0.4 by default (what `curl` and `promtool check metrics` read), and
/// OpenMetrics to clients that prefer it in `Accept` (Prometheus itself asks for it first). The per-deployment
/// gauges are rebuilt from the current snapshot for each scrape.
async fn metrics(State(state): State<AppState>, headers: header::HeaderMap) -> Response {
    let now = state.clock.now_millis();
    let snapshot = state.snapshot();
    match &snapshot {
        Some(s) => {
            state
                .telemetry
                .snapshot_age_seconds
                .set(s.age_millis(now) as f64 / 1000.0);
            state.telemetry.deployments.set(s.deployments.len() as i64);
        }
        None => {
            state.telemetry.deployments.set(0);
        }
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let exposition = state.telemetry.encode_with(snapshot.as_deref());
    if prefers_openmetrics(accept) {
        return ([(header::CONTENT_TYPE, OPENMETRICS)], exposition).into_response();
    }
    let text = crate::telemetry::openmetrics_to_text(&exposition);
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// Whether an `Accept` header asks for OpenMetrics at least as much as for the text format: the highest `q` of
/// an `application/openmetrics-text` range is above zero and not below that of `text/plain` (or, without it, of
/// `text/*` or `*/*`). No header, `*/*` alone or `text/plain` get the text format.
pub fn prefers_openmetrics(accept: &str) -> bool {
    let (mut openmetrics, mut text, mut wildcard) = (0.0_f64, None::<f64>, 0.0_f64);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" => text = Some(text.unwrap_or(0.0).max(q)),
            "text/*" | "*/*" => wildcard = wildcard.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text.unwrap_or(wildcard)
}

/// Liveness: the process is serving requests.
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: values can be served, i.e. a snapshot exists and the freshest value in it is within the
/// fail-safe's error limit (the same rule a metric read applies, so `/readyz` and the API agree: with the
/// metrics source down, readiness goes when the last value would be refused, not before, and a slow source
/// does not make a server that still serves look unready). Each source's health and data age is detail.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let now = state.clock.now_millis();
    let mut lines = state.health.lines(now);
    let ready = match state.snapshot() {
        None => {
            lines.insert(0, "[-]snapshot: no metrics collected yet".to_string());
            false
        }
        Some(s) => {
            let age = s.data_age_millis(now).map(|ms| ms / 1000);
            let limit = s.failsafe.error_after_millis / 1000;
            let unknown = if s.unmeasured.is_empty() {
                String::new()
            } else {
                format!(", {} with unknown usage", s.unmeasured.len())
            };
            let ready = s.can_serve(now);
            lines.insert(
                0,
                match age {
                    Some(age) if ready => format!(
                        "[+]values: {} deployments{unknown}, freshest data {age}s old (limit {limit}s)",
                        s.deployments.len()
                    ),
                    Some(age) => format!(
                        "[-]values: freshest data {age}s old, past the {limit}s fail-safe limit: every read \
                         would be refused"
                    ),
                    None => format!(
                        "[-]values: none of the {} managed deployments has a value yet (usage unknown): every \
                         read would be refused",
                        s.unmeasured.len()
                    ),
                },
            );
            ready
        }
    };
    let mut body = lines.join("\n");
    body.push_str(if ready {
        "\nok\n"
    } else {
        "\nreadyz check failed\n"
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body).into_response()
}

async fn list_deployments(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let snapshot = state
        .snapshot()
        .ok_or_else(|| ApiError::unavailable("no metrics collected yet"))?;
    let now = state.clock.now_millis();
    let items: Vec<Value> = snapshot
        .deployments
        .values()
        .map(|d| {
            json!({
                "namespace": d.inputs.key.namespace,
                "name": d.inputs.key.name,
                "raw_percent": d.raw_percent,
                "smart_percent": d.smart_percent,
                "base_target_percent": d.inputs.base_target_percent,
                "effective_target_percent": d.explanation.effective_target_percent,
                "replicas": d.inputs.replicas,
                "forecast_applied": d.explanation.forecast_applied,
                "observed_at_ms": d.inputs.observed_at,
                "usage_unknown": snapshot.unmeasured.get(&d.inputs.key),
                "anomalies_active": active_anomalies(&snapshot, &d.inputs.key).count(),
            })
        })
        .chain(
            snapshot
                .unmeasured
                .iter()
                .filter(|(k, _)| !snapshot.deployments.contains_key(*k))
                .map(|(k, u)| json!({ "namespace": k.namespace, "name": k.name, "usage_unknown": u })),
        )
        .collect();
    Ok(Json(
        json!({ "collected_at_ms": snapshot.collected_at, "age_seconds": snapshot.age_millis(now) / 1000, "items": items }),
    ))
}

async fn get_deployment(
    State(state): State<AppState>,
    ApiPath((namespace, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let snapshot = state
        .snapshot()
        .ok_or_else(|| ApiError::unavailable("no metrics collected yet"))?;
    let key = DeploymentKey::new(namespace, name);
    let unknown = snapshot.unmeasured.get(&key);
    let Some(served) = snapshot.deployments.get(&key) else {
        return match unknown {
            // Managed but never measured: say why there is no value.
            Some(u) => Ok(Json(json!({
                "namespace": key.namespace,
                "name": key.name,
                "collected_at_ms": snapshot.collected_at,
                "usage_unknown": u,
                "anomalies": anomalies_link(&snapshot, &key),
            }))),
            None => Err(ApiError::not_found(format!(
                "deployment {key} is not managed by smart-autoscaler"
            ))),
        };
    };
    Ok(Json(json!({
        "namespace": key.namespace,
        "name": key.name,
        "collected_at_ms": snapshot.collected_at,
        "raw_percent": served.raw_percent,
        "smart_percent": served.smart_percent,
        "usage_unknown": unknown,
        "inputs": served.inputs,
        "explanation": served.explanation,
        "anomalies": anomalies_link(&snapshot, &key),
    })))
}

// --- Anomalies ---------------------------------------------------------------------------------------------------

/// Where the anomalies are listed.
pub const ANOMALIES_PATH: &str = "/api/v1/anomalies";

/// The anomalies of `key` open in `snapshot`.
fn active_anomalies<'a>(
    snapshot: &'a Snapshot,
    key: &'a DeploymentKey,
) -> impl Iterator<Item = &'a Anomaly> + 'a {
    snapshot
        .anomalies
        .iter()
        .filter(move |a| a.key == *key && a.is_active())
}

/// What a deployment's explanation says of its anomalies: the open ones, and where to find them all.
fn anomalies_link(snapshot: &Snapshot, key: &DeploymentKey) -> Value {
    let active: Vec<Value> = active_anomalies(snapshot, key)
        .map(|a| anomaly_json(a, true))
        .collect();
    let query = serde_urlencoded::to_string([
        ("namespace", key.namespace.as_str()),
        ("deployment", key.name.as_str()),
    ])
    .unwrap_or_default();
    json!({ "active": active, "url": format!("{ANOMALIES_PATH}?{query}") })
}

/// One anomaly as the API shows it; `active` is whether it is open in the current snapshot.
fn anomaly_json(a: &Anomaly, active: bool) -> Value {
    json!({
        "namespace": a.key.namespace,
        "name": a.key.name,
        "type": a.kind.as_str(),
        "severity": a.severity.as_str(),
        "active": active,
        "started_at": crate::clock::rfc3339(a.started_at),
        "started_at_ms": a.started_at,
        "last_seen_at_ms": a.last_seen_at,
        "ended_at": a.ended_at.map(crate::clock::rfc3339),
        "ended_at_ms": a.ended_at,
        "expected": a.expected,
        "actual": a.actual,
        "score": a.score,
        "summary": a.summary,
    })
}

/// Reads `since`: unix milliseconds (digits only), an RFC 3339 time, or a duration back from `now` (`1h`, `30m`).
pub(super) fn parse_since(text: &str, now: UnixMillis) -> Result<UnixMillis, String> {
    let bad = || {
        format!(
            "invalid since {text:?}: use an RFC 3339 time (2026-11-23T08:00:00Z), unix milliseconds or a duration \
             back from now such as 1h"
        )
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| bad());
    }
    if let Ok(t) = text.parse::<jiff::Timestamp>() {
        return Ok(t.as_millisecond());
    }
    let back = crate::flags::parse_duration(text).map_err(|_| bad())?;
    Ok(now.saturating_sub(i64::try_from(back.as_millis()).unwrap_or(i64::MAX)))
}

/// Reads the query of `/api/v1/anomalies`: `namespace`, `deployment`, `since` and `limit` (1 to
/// [`MAX_ANOMALIES`]); empty values are absent; anything else is a 400.
fn anomaly_query(query: Option<&str>, now: UnixMillis) -> Result<AnomalyQuery, ApiError> {
    let pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
        None => Vec::new(),
    };
    let mut out = AnomalyQuery::default();
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "namespace" => out.namespace = Some(value),
            "deployment" => out.deployment = Some(value),
            "since" => out.since = Some(parse_since(&value, now).map_err(ApiError::bad_request)?),
            "limit" => {
                out.limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ANOMALIES).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid limit {value:?}: a whole number from 1 to {MAX_ANOMALIES}"
                        ))
                    })?
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use namespace, deployment, since or limit"
                )));
            }
        }
    }
    Ok(out)
}

/// The anomalies the query asks for, newest start first: those of the current snapshot (active, or ended on its
/// tick) merged with the history (the store in `serve`, memory in `demo`). A history that cannot be read leaves
/// the current ones, with the reason in `history_error`.
async fn list_anomalies(
    State(state): State<AppState>,
    history: Option<Extension<AnomalyHistory>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now_millis();
    let query = anomaly_query(query.as_deref(), now)?;
    let snapshot = state.snapshot();
    let current: Vec<Anomaly> = snapshot
        .iter()
        .flat_map(|s| &s.anomalies)
        .filter(|a| query.matches(a))
        .cloned()
        .collect();
    let (kind, stored, error) = match &history {
        // One more than the limit, to tell whether the answer was cut.
        Some(Extension(h)) => match h
            .query(&AnomalyQuery {
                limit: query.limit + 1,
                ..query.clone()
            })
            .await
        {
            Ok(stored) => (h.kind(), stored, None),
            Err(e) => (h.kind(), Vec::new(), Some(e.to_string())),
        },
        None => ("none", Vec::new(), None),
    };
    // The snapshot's copy is the freshest: it wins over the history's of the same deployment, kind and start.
    let open_now: std::collections::HashSet<_> = current
        .iter()
        .filter(|a| a.is_active())
        .map(|a| (a.key.clone(), a.kind, a.started_at))
        .collect();
    let mut merged: std::collections::HashMap<_, Anomaly> = stored
        .into_iter()
        .map(|a| ((a.key.clone(), a.kind, a.started_at), a))
        .collect();
    for a in current {
        merged.insert((a.key.clone(), a.kind, a.started_at), a);
    }
    let mut items: Vec<Anomaly> = merged.into_values().collect();
    let total = items.len();
    query.order(&mut items);
    let items: Vec<Value> = items
        .iter()
        .map(|a| {
            let active = a.is_active() && open_now.contains(&(a.key.clone(), a.kind, a.started_at));
            anomaly_json(a, active)
        })
        .collect();
    let mut body = json!({
        "collected_at_ms": snapshot.as_ref().map(|s| s.collected_at),
        "history": kind,
        "query": {
            "namespace": query.namespace,
            "deployment": query.deployment,
            "since_ms": query.since,
            "limit": query.limit,
        },
        "truncated": total > items.len(),
        "items": items,
    });
    if let Some(error) = error {
        body["history_error"] = json!(error);
    }
    Ok(Json(body))
}
