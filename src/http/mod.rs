//! The HTTP adapters: the secure router (external metrics API, admission webhook, scheduler extender), the plain
//! metrics router (probes, /metrics, JSON API), shared middleware (limits, timeouts, telemetry), and the
//! listeners. Handlers parse, call the core, encode; they never wait on Kubernetes or Prometheus.

pub mod extender;
pub mod external;
pub mod ops;
pub mod response_cache;
pub mod server;
pub mod status;
pub mod webhook;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, body::Bytes};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::model::Snapshot;
use crate::telemetry::{LatencyLabels, RouteLabels, Telemetry};
pub use status::ApiError;

/// Request and connection limits applied on every route and listener.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest accepted request head.
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Time limit per request.
    pub request_timeout: Duration,
    /// How long a connection may stay open with no request in flight: from accept to its first request, and
    /// from each response to the next request.
    pub idle_timeout: Duration,
    /// Open connections each listener holds at most.
    pub max_connections: usize,
    /// The open connections of the listeners these limits are given to, and their metrics.
    pub connections: server::Connections,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 3 * 1024 * 1024,
            max_header_bytes: 16 * 1024,
            max_headers: 100,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(90),
            max_connections: 256,
            connections: Default::default(),
        }
    }
}

/// Everything handlers share. Cheap to clone: channels and `Arc`s only.
#[derive(Clone)]
pub struct AppState {
    /// The latest snapshot the engine published (`None` until the first tick completes).
    pub snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    /// The injected clock.
    pub clock: Arc<dyn Clock>,
    /// Our own metrics.
    pub telemetry: Arc<Telemetry>,
    /// Request limits.
    pub limits: Limits,
    /// Admission webhook state.
    pub webhook: Arc<webhook::WebhookState>,
    /// Scheduler extender state.
    pub extender: Arc<extender::ExtenderState>,
    /// Encoded metric responses of the current snapshot.
    pub responses: Arc<response_cache::ResponseCache>,
    /// Health of the data sources, for `/readyz` detail.
    pub health: Arc<crate::health::Health>,
    /// The forecasting task's board, when forecasting runs.
    pub forecasts: Option<watch::Receiver<Arc<crate::domain::forecast::online::Board>>>,
}

impl AppState {
    /// The current snapshot, if any. The borrow is released before returning, so no lock is held afterwards.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }
}

/// The router of the secure (TLS) port.
pub fn secure_router(state: AppState) -> Router {
    let api = external::routes()
        .merge(webhook::routes())
        .merge(extender::routes())
        .route("/healthz", get(ops::healthz))
        .route("/livez", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    finish(api, state, "secure")
}

/// The router of the plain metrics port.
pub fn metrics_router(state: AppState) -> Router {
    finish(ops::routes(), state, "metrics")
}

fn finish(routes: Router<AppState>, state: AppState, server: &'static str) -> Router {
    routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(
            (state.telemetry.clone(), server),
            track,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.limits.max_body_bytes,
        ))
        .with_state(state)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "the server could not find the requested resource ({})",
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::method_not_allowed(format!(
        "{} is not supported on {}",
        request.method(),
        request.uri().path()
    ))
}

/// Rejects oversized heads and declared-oversized bodies up front and bounds the time spent on any request.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(error) = head_over_limits(&request, &state.limits) {
        return error.into_response();
    }
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(len) = declared
        && len > state.limits.max_body_bytes as u64
    {
        return ApiError::too_large(format!(
            "request body of {len} bytes exceeds the limit of {} bytes",
            state.limits.max_body_bytes
        ))
        .into_response();
    }
    let limit = state.limits.request_timeout;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::timeout(format!("request not handled within {limit:?}")).into_response()
        }
    }
}

/// The 431 for a request over the header limits. They are enforced here rather than by hyper (whose limits are set
/// several times higher, as a memory bound only) because hyper answers its own 431 with an empty body.
fn head_over_limits(request: &Request, limits: &Limits) -> Option<ApiError> {
    let headers = request.headers();
    if headers.len() > limits.max_headers {
        return Some(ApiError::header_fields_too_large(format!(
            "{} header fields exceed the limit of {} (--max-headers)",
            headers.len(),
            limits.max_headers
        )));
    }
    // The head as HTTP/1.1 writes it: `METHOD target HTTP/1.1\r\n`, `name: value\r\n` per field, `\r\n`.
    let target = request
        .uri()
        .path_and_query()
        .map_or(1, |p| p.as_str().len());
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let head = request.method().as_str().len() + target + 12 + fields + 2;
    (head > limits.max_header_bytes).then(|| {
        ApiError::header_fields_too_large(format!(
            "request head of {head} bytes exceeds the limit of {} bytes (--max-header-bytes)",
            limits.max_header_bytes
        ))
    })
}

/// Counts and times requests by route template.
async fn track(
    State((telemetry, server)): State<(Arc<Telemetry>, &'static str)>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    telemetry
        .latency
        .get_or_create(&LatencyLabels {
            server,
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    telemetry
        .requests
        .get_or_create(&RouteLabels {
            server,
            route,
            method,
            code: response.status().as_u16(),
        })
        .inc();
    response
}

/// A request body read under the configured limit; failures become Status errors (413 or 400), never a
/// plain-text rejection.
pub struct LimitedBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for LimitedBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(LimitedBody(bytes)),
            Err(rejection) if rejection.status() == http::StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::too_large("request body exceeds the configured limit"),
            ),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "cannot read request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// Path parameters whose rejection is a `Status` (400 for a segment that does not percent-decode to UTF-8 or does
/// not parse), never axum's plain-text `Invalid URL: ...`.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(value)) => Ok(ApiPath(value)),
            // A route whose template and parameters disagree: a bug, not bad input.
            Err(rejection) if rejection.status().is_server_error() => {
                Err(ApiError::internal(rejection.body_text()))
            }
            Err(rejection) => Err(ApiError::bad_request(format!(
                "{}: {}",
                parts.uri.path(),
                rejection.body_text()
            ))),
        }
    }
}
