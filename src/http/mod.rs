//! The HTTP adapters: the secure router (external metrics API, admission webhook, scheduler extender), the plain
//! metrics router (probes, /metrics, JSON API), shared middleware (limits, timeouts, telemetry), and the
//! listeners. Handlers parse, call the core, encode; they never wait on Kubernetes or Prometheus.

pub mod auth;
pub mod cost;
pub mod dashboard;
pub mod delegate;
pub mod explain;
pub mod extender;
pub mod external;
pub mod history;
pub mod ops;
pub mod report;
pub mod response_cache;
pub mod schedule;
pub mod server;
pub mod status;
pub mod webhook;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequest, FromRequestParts, MatchedPath, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Router, body::Bytes};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::domain::admission::AdmissionConfig;
use crate::domain::extender::ExtenderConfig;
use crate::domain::model::Snapshot;
use crate::flags::parse_duration;
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

/// Listener, limit and TLS flags shared by `serve` and `demo`, with the webhook's and the extender's.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// Address both listeners bind to. Default: every interface (0.0.0.0) for `serve`, which runs in a pod;
    /// loopback (127.0.0.1) for `demo`, so a demo is not reachable from the network unless asked.
    #[arg(long, env = "SMART_AUTOSCALER_BIND_ADDRESS")]
    pub bind_address: Option<IpAddr>,

    /// HTTPS port for the external metrics API (and the webhook and extender). 0 picks a free port.
    #[arg(long, env = "SMART_AUTOSCALER_SECURE_PORT", default_value_t = 6443)]
    pub secure_port: u16,

    /// Plain-HTTP port for /metrics, health probes and the JSON API. 0 picks a free port.
    #[arg(long, env = "SMART_AUTOSCALER_METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// Largest request body accepted, in bytes; larger requests get a 413 Status.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_BODY_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest request head (request line plus headers, as HTTP/1.1 writes them) accepted, in bytes; larger heads
    /// get a 431 Status. Heads over four times this (at least 64 KiB) are cut off by the HTTP parser itself, with
    /// an empty 431 and the connection closed.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Most header fields in one request; more get a 431 Status (over four times this, the HTTP parser's own
    /// empty 431).
    #[arg(long, env = "SMART_AUTOSCALER_MAX_HEADERS", default_value_t = 100)]
    pub max_headers: usize,

    /// Time limit for handling one request, e.g. `10s`; slower requests get a 504 Status.
    #[arg(long, env = "SMART_AUTOSCALER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,

    /// How long a connection may stay open with no request in flight, e.g. `90s`: from accept (TLS handshake
    /// included) to its first request, and from each response to the next request, HTTP/1.1 and HTTP/2 alike.
    /// The default is kube-apiserver's own, chosen there to match the idle timeout of Go's default HTTP client.
    #[arg(long, env = "SMART_AUTOSCALER_IDLE_TIMEOUT", default_value = "90s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections each listener (secure and metrics) holds at most. When full, or when the process runs out
    /// of file descriptors, the connection idle the longest of the client address holding the most connections is
    /// closed to make room; a new connection is refused only when every open one has a request in flight.
    #[arg(long, env = "SMART_AUTOSCALER_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,

    /// Most managed deployments the per-deployment series of /metrics are exported for (the first in namespace,
    /// name order); the others are counted in `smart_autoscaler_deployment_metrics_dropped`. Each deployment adds
    /// up to 12 series. 0 exports none.
    #[arg(long, env = "SMART_AUTOSCALER_METRICS_MAX_DEPLOYMENTS", default_value_t = crate::telemetry::DEFAULT_MAX_DEPLOYMENTS)]
    pub metrics_max_deployments: usize,

    /// PEM CA that signs the aggregator's front-proxy client certificate (the `requestheader-client-ca-file`).
    /// With --authn-authz on, it replaces the one in kube-system/extension-apiserver-authentication (re-read every
    /// 10 s); with it off, client certificates are requested (not required) and verified against it at the
    /// handshake, and identify no one.
    #[arg(long, env = "SMART_AUTOSCALER_REQUESTHEADER_CLIENT_CA_FILE")]
    pub requestheader_client_ca_file: Option<PathBuf>,

    /// How often the serving certificate, its key and the client CA file are re-read (100ms-1h); when they
    /// change, new connections get the new ones and open connections keep theirs.
    #[arg(long, env = "SMART_AUTOSCALER_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    #[command(flatten)]
    pub webhook: webhook::WebhookArgs,

    #[command(flatten)]
    pub extender: extender::SchedulerExtenderArgs,
}

/// The listeners, limits and handler tables [`ServerArgs`] describe, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Address both listeners bind to.
    pub bind_address: IpAddr,
    /// TLS port (0: a free one).
    pub secure_port: u16,
    /// Plain-HTTP port (0: a free one); never the same as a fixed `secure_port`.
    pub metrics_port: u16,
    /// Largest request body, at least 1 KiB.
    pub max_body_bytes: usize,
    /// Largest request head, at least hyper's 8 KiB buffer.
    pub max_header_bytes: usize,
    /// Most header fields in one request, at least 1.
    pub max_headers: usize,
    /// Time limit per request, above zero.
    pub request_timeout: Duration,
    /// Idle limit per connection, at least 1 s.
    pub idle_timeout: Duration,
    /// Open connections per listener, at least 1.
    pub max_connections: usize,
    /// Deployments exported in the per-deployment series of /metrics.
    pub metrics_max_deployments: usize,
    /// The front-proxy client CA file, which existed at start.
    pub requestheader_client_ca_file: Option<PathBuf>,
    /// How often the TLS files are re-read, 100 ms to 1 h.
    pub tls_reload_interval: Duration,
    /// The admission webhook's tables.
    pub webhook: AdmissionConfig,
    /// The scheduler extender's thresholds and weights.
    pub extender: ExtenderConfig,
}

/// A listener, limit, webhook or extender flag that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ServerSettingsError {
    /// A limit below the least usable value.
    #[error("invalid --{flag}: {value} is below {least}{why}")]
    TooSmall {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: usize,
        /// The least usable value.
        least: usize,
        /// Why that is the least, if it is not obvious (starts with a separator).
        why: &'static str,
    },
    /// A duration shorter than the least usable one.
    #[error("invalid --{flag}: {value:?} is below {least:?}")]
    TooShort {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: Duration,
        /// The shortest allowed.
        least: Duration,
    },
    /// A duration longer than allowed.
    #[error("invalid --{flag}: {value:?} is over {most:?}")]
    TooLong {
        /// The flag, without dashes.
        flag: &'static str,
        /// The value given.
        value: Duration,
        /// The longest allowed.
        most: Duration,
    },
    /// Both listeners on one fixed port.
    #[error(
        "invalid --metrics-port: {0} is also --secure-port; the two listeners need their own ports"
    )]
    SamePort(u16),
    /// `--requestheader-client-ca-file` is not a file.
    #[error("invalid --requestheader-client-ca-file: {} is not a readable file", .0.display())]
    ClientCaFile(PathBuf),
    /// A webhook flag.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookSettingsError),
    /// An extender flag.
    #[error(transparent)]
    Extender(#[from] extender::ExtenderSettingsError),
}

impl TryFrom<&ServerArgs> for ServerSettings {
    type Error = ServerSettingsError;

    /// Checks limits that would make the server unusable, and reads the webhook's tables.
    fn try_from(args: &ServerArgs) -> Result<Self, Self::Error> {
        let webhook = AdmissionConfig::try_from(&args.webhook)?;
        let extender = ExtenderConfig::try_from(&args.extender)?;
        for (flag, value, least, why) in [
            ("max-body-bytes", args.max_body_bytes, 1024, ""),
            (
                "max-header-bytes",
                args.max_header_bytes,
                8192,
                " (hyper's minimum buffer)",
            ),
            ("max-headers", args.max_headers, 1, ""),
            ("max-connections", args.max_connections, 1, ""),
        ] {
            if value < least {
                return Err(ServerSettingsError::TooSmall {
                    flag,
                    value,
                    least,
                    why,
                });
            }
        }
        for (flag, value, least, most) in [
            (
                "request-timeout",
                args.request_timeout,
                Duration::from_nanos(1),
                None,
            ),
            (
                "idle-timeout",
                args.idle_timeout,
                Duration::from_secs(1),
                None,
            ),
            (
                "tls-reload-interval",
                args.tls_reload_interval,
                Duration::from_millis(100),
                Some(Duration::from_secs(3600)),
            ),
        ] {
            if value < least {
                return Err(ServerSettingsError::TooShort { flag, value, least });
            }
            if let Some(most) = most
                && value > most
            {
                return Err(ServerSettingsError::TooLong { flag, value, most });
            }
        }
        if args.secure_port != 0 && args.secure_port == args.metrics_port {
            return Err(ServerSettingsError::SamePort(args.metrics_port));
        }
        if let Some(path) = &args.requestheader_client_ca_file
            && !path.is_file()
        {
            return Err(ServerSettingsError::ClientCaFile(path.clone()));
        }
        Ok(ServerSettings {
            bind_address: args
                .bind_address
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            secure_port: args.secure_port,
            metrics_port: args.metrics_port,
            max_body_bytes: args.max_body_bytes,
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            request_timeout: args.request_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
            metrics_max_deployments: args.metrics_max_deployments,
            requestheader_client_ca_file: args.requestheader_client_ca_file.clone(),
            tls_reload_interval: args.tls_reload_interval,
            webhook,
            extender,
        })
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
    /// The tuning task's latest tunings, when tuning runs.
    pub tunings: Option<watch::Receiver<Arc<crate::domain::tuning::Tunings>>>,
}

impl AppState {
    /// The current snapshot, if any. The borrow is released before returning, so no lock is held afterwards.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.borrow().clone()
    }
}

/// The router of the secure (TLS) port, without authentication or authorization.
pub fn secure_router(state: AppState) -> Router {
    secure_router_with_auth(state, None)
}

/// The router of the secure (TLS) port; with `auth`, every request but the probes is authenticated and
/// authorized (inside the limits and timeout, so a slow review is bounded like any handler).
pub fn secure_router_with_auth(state: AppState, auth: Option<Arc<crate::auth::Auth>>) -> Router {
    let api = external::routes()
        .merge(webhook::routes())
        .merge(extender::routes())
        .route("/healthz", get(ops::healthz))
        .route("/livez", get(ops::healthz))
        .route("/readyz", get(ops::readyz));
    finish_with(api, state, "secure", auth)
}

/// The router of the plain metrics port.
pub fn metrics_router(state: AppState) -> Router {
    finish(ops::routes(), state, "metrics")
}

/// The metrics router with the anomaly history behind `/api/v1/anomalies` (handed to the handler as a request
/// extension, so [`AppState`] stays as it is); without it the endpoint lists the current snapshot's anomalies only.
pub fn metrics_router_with_anomalies(
    state: AppState,
    history: crate::store::AnomalyHistory,
) -> Router {
    metrics_router(state).layer(axum::Extension(history))
}

fn finish(routes: Router<AppState>, state: AppState, server: &'static str) -> Router {
    finish_with(routes, state, server, None)
}

fn finish_with(
    routes: Router<AppState>,
    state: AppState,
    server: &'static str,
    auth: Option<Arc<crate::auth::Auth>>,
) -> Router {
    let routes = routes
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed);
    // Unknown paths are authorized too, so an unauthenticated client learns nothing from 404s.
    let routes = match auth {
        Some(auth) => routes.layer(middleware::from_fn_with_state(auth, self::auth::layer)),
        None => routes,
    };
    routes
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
