//! `GET /api/v1/deployments/{namespace}/{name}/schedule` on the metrics port: the recommended minReplicas per hour
//! of the week, learned from the deployment's history ([`crate::schedule::ScheduleBook`]), as JSON, as a table,
//! as a KEDA `ScaledObject` (`format=keda`) or as CronJobs that patch the HPA (`format=cronjob`). The HPA's own
//! bounds and the lead come as query parameters because the server does not read HPAs (docs/schedules.md).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{ApiError, ApiPath, AppState};
use crate::domain::model::DeploymentKey;
use crate::domain::schedule::{Bounds, Schedule};
use crate::schedule::{DEFAULT_LEAD_MINUTES, ScheduleBook};

/// Where a deployment's schedule is served.
pub const SCHEDULE_PATH: &str = "/api/v1/deployments/{namespace}/{name}/schedule";
/// The kubectl image the CronJobs run unless `image=` says otherwise (the upstream image, as old as the
/// oldest kubectl the version skew policy lets patch a current HPA).
pub const DEFAULT_KUBECTL_IMAGE: &str = "registry.k8s.io/kubectl:v1.32.4";
/// Where KEDA reads the served value unless `prometheus=` says otherwise.
pub const DEFAULT_PROMETHEUS: &str = "http://prometheus-operated.monitoring.svc:9090";
/// Largest minReplicas/maxReplicas accepted (the HPA has no limit; a schedule past this is a typo).
const MAX_REPLICAS: u32 = 10_000;

/// Routes of the schedule endpoint (merged into the metrics port's).
pub fn routes() -> Router<AppState> {
    Router::new().route(SCHEDULE_PATH, get(get_schedule))
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Table,
    Keda,
    CronJob,
}

/// A checked query.
#[derive(Debug, Clone, PartialEq)]
struct Query {
    format: Format,
    min: u32,
    max: Option<u32>,
    lead: u32,
    target: Option<f64>,
    hpa: Option<String>,
    image: String,
    prometheus: String,
}

fn replicas(name: &str, value: &str) -> Result<u32, ApiError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_REPLICAS).contains(n))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid {name} {value:?}: a whole number from 1 to {MAX_REPLICAS}"
            ))
        })
}

/// A DNS-1123 subdomain, as Kubernetes object names are.
fn object_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn parse_query(raw: Option<&str>) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> = match raw {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
        None => Vec::new(),
    };
    let mut q = Query {
        format: Format::Json,
        min: 1,
        max: None,
        lead: DEFAULT_LEAD_MINUTES,
        target: None,
        hpa: None,
        image: DEFAULT_KUBECTL_IMAGE.to_string(),
        prometheus: DEFAULT_PROMETHEUS.to_string(),
    };
    for (name, value) in pairs {
        match name.as_str() {
            "format" => {
                q.format = match value.as_str() {
                    "json" => Format::Json,
                    "table" => Format::Table,
                    "keda" => Format::Keda,
                    "cronjob" => Format::CronJob,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid format {other:?}: use json, table, keda or cronjob"
                        )));
                    }
                }
            }
            "min" => q.min = replicas("min", &value)?,
            "max" => q.max = Some(replicas("max", &value)?),
            "lead" => {
                q.lead = value
                    .parse::<u32>()
                    .ok()
                    .filter(|m| *m <= 120)
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "invalid lead {value:?}: whole minutes from 0 to 120"
                        ))
                    })?
            }
            "target" => {
                q.target = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|t| t.is_finite() && *t > 0.0 && *t <= 1000.0)
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "invalid target {value:?}: a percentage above 0 and at most 1000"
                            ))
                        })?,
                )
            }
            "hpa" => {
                if !object_name(&value) {
                    return Err(ApiError::bad_request(format!(
                        "invalid hpa {value:?}: an object name (lowercase letters, digits, '-' and '.')"
                    )));
                }
                q.hpa = Some(value)
            }
            "image" => {
                if value.is_empty()
                    || value.len() > 255
                    || value.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ApiError::bad_request(format!(
                        "invalid image {value:?}: an image reference without spaces, at most 255 characters"
                    )));
                }
                q.image = value
            }
            "prometheus" => {
                if !(value.starts_with("http://") || value.starts_with("https://"))
                    || value.len() > 255
                    || value.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(ApiError::bad_request(format!(
                        "invalid prometheus {value:?}: an http:// or https:// URL"
                    )));
                }
                q.prometheus = value
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use format, min, max, lead, target, hpa, image or \
                     prometheus"
                )));
            }
        }
    }
    if q.max.is_some_and(|m| m < q.min) {
        return Err(ApiError::bad_request(format!(
            "max {} is below min {}",
            q.max.unwrap_or_default(),
            q.min
        )));
    }
    Ok(q)
}

fn with_type(body: String, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn yaml(documents: &[Value]) -> Result<String, ApiError> {
    let mut out = String::new();
    for d in documents {
        let text = serde_norway::to_string(d)
            .map_err(|e| ApiError::internal(format!("rendering YAML: {e}")))?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

/// The JSON form of a schedule.
pub fn schedule_json(s: &Schedule) -> Value {
    const DAYS: [&str; 7] = [
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
        "sunday",
    ];
    let hours: Vec<Value> = s
        .hours
        .iter()
        .map(|h| {
            json!({
                "day": DAYS[h.hour_of_week / 24],
                "hour": h.hour_of_week % 24,
                "min_replicas": h.replicas,
                "demand_percent_pods": h.level.map(|l| (l.demand * 100.0).round() / 100.0),
                "basis": h.level.map(|l| l.basis),
                "observations": h.level.map_or(0, |l| l.observations),
            })
        })
        .collect();
    json!({
        "bounds": s.bounds,
        "days_of_history": s.days,
        "utc_offset_minutes": s.utc_offset_minutes,
        "extra_replica_hours_per_week": s.extra_replica_hours(),
        "windows": s.windows,
        "cron_utc": {
            "windows": s.cron_windows(),
            "changes": s.changes(),
        },
        "hours": hours,
    })
}

/// `GET /api/v1/deployments/{namespace}/{name}/schedule`.
async fn get_schedule(
    State(state): State<AppState>,
    book: Option<Extension<Arc<ScheduleBook>>>,
    ApiPath((namespace, name)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let query = parse_query(raw.as_deref())?;
    let Some(Extension(book)) = book else {
        return Err(ApiError::not_found(
            "schedules are not learned by this server (no store)",
        ));
    };
    let key = DeploymentKey::new(namespace, name);
    let managed = state
        .snapshot()
        .is_some_and(|s| s.deployments.contains_key(&key) || s.unmeasured.contains_key(&key));
    let Some(learned) = book.get(&key) else {
        return Err(ApiError::not_found(if managed {
            format!(
                "no schedule for {key} yet: it is learned in the background, within minutes of start"
            )
        } else {
            format!("deployment {key} is not managed by smart-autoscaler")
        }));
    };
    let bounds = Bounds {
        target_percent: query.target.unwrap_or(learned.base_target_percent),
        min_replicas: query.min,
        max_replicas: query.max,
        lead_minutes: query.lead,
    };
    let learned_at = crate::clock::rfc3339(learned.learned_at);
    let schedule = match learned.schedule(bounds) {
        Ok(s) => s,
        Err(e) if query.format == Format::Json => {
            return Ok(Json(json!({
                "deployment": {"namespace": key.namespace, "name": key.name},
                "learned_at": learned_at,
                "schedule": null,
                "reason": e.to_string(),
            }))
            .into_response());
        }
        Err(e) => {
            return Err(ApiError::not_found(format!("no schedule for {key}: {e}")));
        }
    };
    Ok(match query.format {
        Format::Json => Json(json!({
            "deployment": {"namespace": key.namespace, "name": key.name},
            "learned_at": learned_at,
            "schedule": schedule_json(&schedule),
        }))
        .into_response(),
        Format::Table => with_type(schedule.table(), "text/plain; charset=utf-8"),
        Format::Keda => with_type(
            yaml(&[schedule.keda_scaled_object(&key.namespace, &key.name, &query.prometheus)])?,
            "application/yaml",
        ),
        Format::CronJob => {
            let hpa = query.hpa.as_deref().unwrap_or(&key.name);
            with_type(
                yaml(&schedule.cronjobs(&key.namespace, hpa, &query.image))?,
                "application/yaml",
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_checked_with_reasons() {
        let q = parse_query(Some("format=keda&min=2&max=10&lead=5&target=65&hpa=api")).unwrap();
        assert_eq!(
            (q.format, q.min, q.max, q.lead, q.target, q.hpa.as_deref()),
            (Format::Keda, 2, Some(10), 5, Some(65.0), Some("api"))
        );
        for (bad, says) in [
            ("format=xml", "use json, table, keda or cronjob"),
            ("min=0", "from 1 to 10000"),
            ("min=3&max=2", "below min"),
            ("lead=121", "from 0 to 120"),
            ("target=NaN", "percentage"),
            ("hpa=Bad_Name", "object name"),
            ("image=a%20b", "without spaces"),
            ("prometheus=ftp://x", "http://"),
            ("nope=1", "unknown query parameter"),
        ] {
            let e = parse_query(Some(bad)).unwrap_err();
            assert!(e.message.contains(says), "{bad}: {}", e.message);
        }
    }
}
