//! `GET /api/v1/deployments/{namespace}/{name}/history?since=&step=` on the metrics port: one deployment's past
//! from the store (docs/api.md), bucketed by `step`. Measured utilization and replicas come from the samples
//! (steps under five minutes) or the five-minute rollups; forecasts from the stored predictions; decisions
//! from the explanations stored when the effective target changed. The store is handed to the handler as a
//! request extension ([`with_history`]), so [`AppState`] stays as it is.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::{Value, json};

use super::{ApiError, ApiPath, AppState};
use crate::domain::model::{DeploymentKey, UnixMillis};
use crate::store::Store;

/// Where a deployment's history is served.
pub const HISTORY_PATH: &str = "/api/v1/deployments/{namespace}/{name}/history";
/// How far back `since` reaches when absent.
pub const DEFAULT_SINCE: Duration = Duration::from_secs(24 * 3600);
/// The smallest step: samples are per tick, but a bucket under a minute is noise for a chart.
pub const MIN_STEP: Duration = Duration::from_secs(60);
/// The largest step.
pub const MAX_STEP: Duration = Duration::from_secs(24 * 3600);
/// Most buckets one answer holds; a longer range needs a larger step.
pub const MAX_POINTS: i64 = 2_000;
/// Most decisions one answer lists (the newest).
pub const MAX_DECISIONS: usize = 500;
/// Buckets the default step aims at.
const DEFAULT_POINTS: i64 = 288;
/// The rollups' bucket.
const ROLLUP_MILLIS: i64 = 5 * 60_000;

/// Routes of the history endpoint (merged into the metrics port's).
pub fn routes() -> Router<AppState> {
    Router::new().route(HISTORY_PATH, get(history))
}

/// The metrics router with the store behind the history endpoint; without it the endpoint is a 404 saying
/// history is not kept.
pub fn with_history(router: Router, store: Store) -> Router {
    router.layer(Extension(store))
}

/// A checked history query: the range `[since, until)` and the bucket width, all in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// Start of the range.
    pub since: UnixMillis,
    /// End of the range (now).
    pub until: UnixMillis,
    /// Bucket width.
    pub step: i64,
}

/// A retention as people write it: `30d`, `48h`, `90m` or `45s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        _ if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        _ if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reads `since` (as `/api/v1/anomalies` does: RFC 3339, unix milliseconds, or a duration back from `now`) and
/// `step` (a duration from 1m to 1d; a multiple of 5m from 5m on, the rollups' bucket; under 5m only within the
/// sample retention). The default step is the smallest whole minute (5m multiple past 5m) giving at most 288
/// buckets. Every value out of range is a 400 that says why.
pub fn history_query(
    query: Option<&str>,
    now: UnixMillis,
    samples_retention: Duration,
    rollups_retention: Duration,
) -> Result<HistoryQuery, ApiError> {
    let pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
        None => Vec::new(),
    };
    let (mut since, mut step) = (None, None);
    for (name, value) in pairs {
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "since" => {
                since = Some(super::ops::parse_since(&value, now).map_err(ApiError::bad_request)?)
            }
            "step" => {
                let d = crate::flags::parse_duration(&value)
                    .map_err(|e| ApiError::bad_request(format!("invalid step {value:?}: {e}")))?;
                step = Some((value, d));
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use since or step"
                )));
            }
        }
    }
    let since = since.unwrap_or(now - millis(DEFAULT_SINCE));
    if since >= now {
        return Err(ApiError::bad_request(format!(
            "since {} is not in the past (now is {})",
            crate::clock::rfc3339(since),
            crate::clock::rfc3339(now)
        )));
    }
    let oldest = now - millis(rollups_retention);
    if since < oldest {
        return Err(ApiError::bad_request(format!(
            "since {} is older than the store keeps history ({} back, from {})",
            crate::clock::rfc3339(since),
            human(rollups_retention),
            crate::clock::rfc3339(oldest)
        )));
    }
    let span = now - since;
    let step = match step {
        Some((text, d)) => {
            if d < MIN_STEP || d > MAX_STEP {
                return Err(ApiError::bad_request(format!(
                    "invalid step {text:?}: must be from 1m to 1d"
                )));
            }
            let step = millis(d);
            if step >= ROLLUP_MILLIS && step % ROLLUP_MILLIS != 0 {
                return Err(ApiError::bad_request(format!(
                    "invalid step {text:?}: from 5m on, a step is a multiple of 5m (the rollups' bucket)"
                )));
            }
            if step < ROLLUP_MILLIS && since < now - millis(samples_retention) {
                return Err(ApiError::bad_request(format!(
                    "invalid step {text:?}: steps under 5m need since within the {} of per-tick samples the \
                     store keeps; use step=5m or more",
                    human(samples_retention)
                )));
            }
            let points = (span + step - 1) / step;
            if points > MAX_POINTS {
                return Err(ApiError::bad_request(format!(
                    "step {text:?} gives {points} points from since, over the {MAX_POINTS} an answer holds: use a \
                     larger step or a later since"
                )));
            }
            step
        }
        None => default_step(span, since >= now - millis(samples_retention)),
    };
    Ok(HistoryQuery {
        since,
        until: now,
        step,
    })
}

/// The smallest step giving at most [`DEFAULT_POINTS`] buckets over `span`: whole minutes under 5m (only when
/// `samples` cover the range), multiples of 5m from there.
fn default_step(span: i64, samples: bool) -> i64 {
    let wanted = (span + DEFAULT_POINTS - 1) / DEFAULT_POINTS;
    let minute = 60_000;
    let step = if samples && wanted < ROLLUP_MILLIS {
        ((wanted + minute - 1) / minute).max(1) * minute
    } else {
        ((wanted + ROLLUP_MILLIS - 1) / ROLLUP_MILLIS).max(1) * ROLLUP_MILLIS
    };
    step.min(millis(MAX_STEP))
}

/// One bucket of measured values.
#[derive(Default)]
struct Bucket {
    samples: u32,
    cpu_sum: f64,
    cpu_max: f64,
    memory_sum: f64,
    memory_n: u32,
    replicas_max: Option<u32>,
}

impl Bucket {
    fn add(
        &mut self,
        samples: u32,
        mean: f64,
        max: f64,
        memory: Option<f64>,
        replicas: Option<u32>,
    ) {
        if self.samples == 0 || max > self.cpu_max {
            self.cpu_max = max;
        }
        self.samples += samples;
        self.cpu_sum += mean * f64::from(samples);
        if let Some(m) = memory {
            self.memory_sum += m * f64::from(samples);
            self.memory_n += samples;
        }
        self.replicas_max = self.replicas_max.max(replicas);
    }
}

/// Rounds to two decimals: the API reports percentages, not float noise.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn time(at: UnixMillis) -> Value {
    json!(crate::clock::rfc3339(at))
}

/// `GET /api/v1/deployments/{namespace}/{name}/history`.
async fn history(
    State(state): State<AppState>,
    store: Option<Extension<Store>>,
    ApiPath((namespace, name)): ApiPath<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let Some(Extension(store)) = store else {
        return Err(ApiError::not_found(
            "history is not kept by this server (no store)",
        ));
    };
    let now = state.clock.now_millis();
    let retention = store.retention();
    let query = history_query(query.as_deref(), now, retention.samples, retention.rollups)?;
    let key = DeploymentKey::new(namespace, name);
    let managed = state
        .snapshot()
        .is_some_and(|s| s.deployments.contains_key(&key) || s.unmeasured.contains_key(&key));
    if !managed && !store.deployments().contains(&key) {
        return Err(ApiError::not_found(format!(
            "deployment {key} is not managed by smart-autoscaler and has no history"
        )));
    }
    let unavailable =
        |e: crate::store::StoreError| ApiError::unavailable(format!("reading the store: {e}"));
    let bucket_of = |at: UnixMillis| at.div_euclid(query.step) * query.step;
    let mut buckets: BTreeMap<UnixMillis, Bucket> = BTreeMap::new();
    let source = if query.step < ROLLUP_MILLIS {
        for s in store
            .samples(&key, query.since, query.until)
            .await
            .map_err(unavailable)?
        {
            buckets.entry(bucket_of(s.at)).or_default().add(
                1,
                s.cpu_percent,
                s.cpu_percent,
                s.memory_percent,
                s.replicas,
            );
        }
        "samples"
    } else {
        for r in store
            .rollups(&key, query.since, query.until)
            .await
            .map_err(unavailable)?
            .into_iter()
            .filter(|r| r.start >= query.since.div_euclid(query.step) * query.step)
        {
            buckets.entry(bucket_of(r.start)).or_default().add(
                r.samples,
                r.cpu_mean,
                r.cpu_max,
                r.memory_mean,
                r.replicas_max,
            );
        }
        "rollups"
    };
    let points: Vec<Value> = buckets
        .iter()
        .filter(|(_, b)| b.samples > 0)
        .map(|(at, b)| {
            json!({
                "at": time(*at),
                "samples": b.samples,
                "raw_percent_mean": round2(b.cpu_sum / f64::from(b.samples)),
                "raw_percent_max": round2(b.cpu_max),
                "memory_percent_mean": (b.memory_n > 0).then(|| round2(b.memory_sum / f64::from(b.memory_n))),
                "replicas_max": b.replicas_max,
            })
        })
        .collect();
    // The latest forecast made in each bucket. Forecasts are of demand (utilization x ready pods), as the
    // forecaster learns it, not of utilization.
    let mut forecasts: BTreeMap<UnixMillis, (UnixMillis, crate::store::Prediction)> =
        BTreeMap::new();
    for (at, p) in store
        .predictions(&key, query.since, query.until)
        .await
        .map_err(unavailable)?
    {
        forecasts.insert(bucket_of(at), (at, p));
    }
    let forecasts: Vec<Value> = forecasts
        .values()
        .map(|(at, p)| {
            json!({
                "made_at": time(*at),
                "horizon_seconds": p.horizon_seconds,
                "demand": round2(p.value),
                "lower_demand": round2(p.lower),
                "upper_demand": round2(p.upper),
            })
        })
        .collect();
    let stored = store
        .decisions(&key, query.since, query.until)
        .await
        .map_err(unavailable)?;
    let decisions_truncated = stored.len() > MAX_DECISIONS;
    let decisions: Vec<Value> = stored
        .iter()
        .skip(stored.len().saturating_sub(MAX_DECISIONS))
        .map(|(at, bytes)| {
            let e: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
            let number = |field: &str| e[field].as_f64().map(round2);
            json!({
                "at": time(*at),
                "effective_target_percent": number("effective_target_percent"),
                "base_target_percent": number("base_target_percent"),
                "raw_percent": number("raw_percent"),
                "served_percent": number("served_percent"),
                "held": e["held"],
                "reasons": e["reasons"],
            })
        })
        .collect();
    let empty = points.is_empty() && forecasts.is_empty() && decisions.is_empty();
    let mut body = json!({
        "namespace": key.namespace,
        "name": key.name,
        "since": time(query.since),
        "until": time(query.until),
        "step_seconds": query.step / 1000,
        "source": source,
        "points": points,
        "forecasts": forecasts,
        "decisions": decisions,
        "decisions_truncated": decisions_truncated,
    });
    if empty {
        body["note"] = json!("no history yet");
    }
    Ok(Json(body))
}
