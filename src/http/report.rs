//! `GET /api/v1/report/weekly` on the metrics port: the weekly report ([`crate::report`]) for the week ending
//! now, as JSON (what the `report` command renders) or as text (`format=text`), optionally for one namespace.

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};

use super::{ApiError, AppState};
use crate::report::ReportSources;

/// Where the weekly report is served.
pub const REPORT_PATH: &str = "/api/v1/report/weekly";

/// Routes of the report endpoint (merged into the metrics port's).
pub fn routes() -> Router<AppState> {
    Router::new().route(REPORT_PATH, get(get_report))
}

/// `GET /api/v1/report/weekly?namespace=&format=json|text`.
async fn get_report(
    State(state): State<AppState>,
    sources: Option<Extension<ReportSources>>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = match raw.as_deref() {
        Some(q) => serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?,
        None => Vec::new(),
    };
    let (mut namespace, mut text) = (None, false);
    for (name, value) in pairs {
        match name.as_str() {
            "namespace" if !value.is_empty() => namespace = Some(value),
            "namespace" => {}
            "format" => {
                text = match value.as_str() {
                    "json" => false,
                    "text" => true,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "invalid format {other:?}: use json or text"
                        )));
                    }
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use namespace or format"
                )));
            }
        }
    }
    let sources = sources.map(|Extension(s)| s).unwrap_or_default();
    let Some(snapshot) = state.snapshot() else {
        return Err(ApiError::unavailable(
            "no snapshot yet: the report covers the deployments of the first tick, in a few seconds",
        ));
    };
    let report = crate::report::weekly(
        &snapshot,
        &sources,
        state.clock.now_millis(),
        namespace.as_deref(),
    )
    .await
    .map_err(|e| ApiError::unavailable(e.to_string()))?;
    Ok(if text {
        let mut response = report.text().into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    } else {
        Json(report).into_response()
    })
}
