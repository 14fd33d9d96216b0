//! `GET /api/v1/cost` and `GET /api/v1/recommendations` on the metrics port: what the engine's
//! [`CostBook`](crate::cost::CostBook) holds (docs/api.md, docs/cost.md). Both take `namespace` and nothing else;
//! anything else, or a namespace that is not a DNS-1123 label, is a 400 with a Kubernetes `Status` body.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::RawQuery;
use serde_json::{Value, json};

use super::ApiError;
use crate::cost::CostBook;

/// Where the costs are served.
pub const COST_PATH: &str = "/api/v1/cost";
/// Where the right-sizing recommendations are served.
pub const RECOMMENDATIONS_PATH: &str = "/api/v1/recommendations";

/// Most hours `GET /api/v1/cost?hours=` sums (30 days, the default rollup retention).
pub const MAX_HOURS: i64 = 720;

/// Reads `?namespace=` (empty: absent); any other parameter, or a namespace that cannot exist, is a 400.
pub fn namespace_query(query: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(cost_query(query, false)?.0)
}

/// Reads `namespace` and, when `hours_allowed`, `hours` (1 to [`MAX_HOURS`]); empty values are absent.
fn cost_query(
    query: Option<&str>,
    hours_allowed: bool,
) -> Result<(Option<String>, Option<i64>), ApiError> {
    let pairs: Vec<(String, String)> = match query {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
        None => Vec::new(),
    };
    let mut namespace = None;
    let mut hours = None;
    for (name, value) in pairs {
        match name.as_str() {
            "namespace" | "hours" if value.is_empty() => {}
            "hours" if hours_allowed => {
                hours = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|h| (1..=MAX_HOURS).contains(h))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "invalid hours {value:?}: a whole number from 1 to {MAX_HOURS}"
                            ))
                        })?,
                );
            }
            "namespace" => {
                let b = value.as_bytes();
                let valid = b.len() <= 63
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
                if !valid {
                    return Err(ApiError::bad_request(format!(
                        "invalid namespace {value:?}: a DNS-1123 label (lowercase letters, digits and '-', at most 63)"
                    )));
                }
                namespace = Some(value);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use namespace{}",
                    if hours_allowed { " or hours" } else { "" }
                )));
            }
        }
    }
    Ok((namespace, hours))
}

fn book(book: Option<Extension<Arc<CostBook>>>) -> Result<Arc<CostBook>, ApiError> {
    book.map(|Extension(b)| b)
        .ok_or_else(|| ApiError::not_found("this server does not compute costs"))
}

/// The latest tick's costs: per deployment, per namespace and for the cluster, with the prices in use.
pub async fn get_cost(
    cost: Option<Extension<Arc<CostBook>>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let (namespace, hours) = cost_query(query.as_deref(), true)?;
    let cost = book(cost)?;
    let view = cost
        .latest()
        .ok_or_else(|| ApiError::unavailable("no tick priced yet"))?;
    let prices = cost.prices();
    let (default_price, default_source) = prices.default_price();
    let wanted = |ns: &str| namespace.as_deref().is_none_or(|n| n == ns);
    let deployments: Vec<&crate::domain::cost::DeploymentCost> = view
        .report
        .deployments
        .iter()
        .filter(|d| wanted(&d.key.namespace))
        .collect();
    let namespaces: serde_json::Map<String, Value> = view
        .report
        .namespaces
        .iter()
        .filter(|(ns, _)| wanted(ns))
        .map(|(ns, t)| (ns.clone(), json!(t)))
        .collect();
    let history = match hours {
        None => Value::Null,
        Some(h) => match cost
            .history(h, namespace.as_deref())
            .await
            .map_err(|e| ApiError::unavailable(format!("cost history unreadable: {e}")))?
        {
            Some(r) => json!({
                "hours": h,
                "cluster": r.cluster,
                "namespaces": r.namespaces,
                "items": r.deployments,
            }),
            None => {
                return Err(ApiError::bad_request(
                    "hours: this server keeps no cost history (no store)",
                ));
            }
        },
    };
    Ok(Json(json!({
        "history": history,
        "collected_at_ms": view.collected_at_ms,
        "window_ms": view.interval_ms,
        "query": { "namespace": namespace, "hours": hours },
        "prices": {
            "default": default_price,
            "default_source": default_source,
            "pools": prices.pools,
            "problems": prices.problems(),
        },
        "cluster": view.report.cluster,
        "namespaces": namespaces,
        "items": deployments,
    })))
}

/// Every deployment's right-sizing recommendation (of the namespace, when given).
pub async fn get_recommendations(
    cost: Option<Extension<Arc<CostBook>>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let namespace = namespace_query(query.as_deref())?;
    let cost = book(cost)?;
    let items = cost.recommendations(namespace.as_deref());
    let savings: f64 = items
        .iter()
        .filter_map(|r| match &r.plan {
            crate::domain::rightsizing::PodPlan::Change { projection, .. } => {
                Some(projection.savings_usd_month)
            }
            _ => None,
        })
        .sum();
    Ok(Json(json!({
        "query": { "namespace": namespace },
        "savings_usd_month": savings,
        "items": items,
    })))
}
