//! Delegated authentication and authorization of the secure port, as a Kubernetes aggregated API server does it
//! (k8s.io/apiserver's delegating authenticator and authorizer; see `docs/security.md`).
//!
//! Authentication, first success wins:
//! 1. a client certificate signed by the request-header (front-proxy) CA whose CN is allowed: the user is in the
//!    `X-Remote-User` / `X-Remote-Group` / `X-Remote-Extra-*` headers (the names come from the ConfigMap);
//! 2. a client certificate signed by the client CA: user = CN, groups = O;
//! 3. a bearer token: a `TokenReview`, cached 10 s (authenticated or not);
//! 4. otherwise, with no failed credential, `system:anonymous`. A credential that fails is a 401.
//!
//! The CAs and header names come from `kube-system/extension-apiserver-authentication`, followed with a watch
//! ([`kube::follow`]). Authenticated users get `system:authenticated`.
//!
//! Authorization: `/healthz`, `/readyz` and `/livez` are always allowed (probes carry no credentials), the group
//! `system:masters` always is, the webhook and extender paths allow their configured users, and everything else is
//! a `SubjectAccessReview`, cached 10 s whether allowed or denied.
//!
//! The hot path (a repeated request on an open connection) is a verdict remembered on the connection, a map
//! lookup under a short std mutex for the decision, and no `.await` while any lock is held.

pub mod kube;
pub mod x509;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, Method, Uri};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReviewSpec,
};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use self::x509::CaVerifier;
pub use self::x509::{ChainOutcome, ClientChain, RequestClientCert};
use crate::telemetry::Telemetry;

/// How long a token review and an authorization decision are reused: the k8s.io/apiserver defaults.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// Entries each cache holds at most; past it, expired entries go, and if none has, the whole cache.
const CACHE_CAPACITY: usize = 4096;
/// Paths allowed without authentication or review (the generic apiserver's `AlwaysAllowPaths`).
pub const ALWAYS_ALLOW_PATHS: [&str; 3] = ["/healthz", "/readyz", "/livez"];
/// The group allowed everything without a review (the generic apiserver's `AlwaysAllowGroups`).
pub const MASTERS_GROUP: &str = "system:masters";
/// Added to every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// The external metrics API group, authorized as resource attributes.
pub const EXTERNAL_METRICS_GROUP: &str = "external.metrics.k8s.io";

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// Delegated authentication and authorization flags of `serve` and `demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Delegated authentication (client certificates, TokenReview) and authorization (SubjectAccessReview) on
    /// the secure port. Default `on` for `serve`, `off` for `demo` (which binds loopback). `off` lets any client
    /// that reaches the port read every metric and call the webhook and extender, and is logged as a warning.
    #[arg(long = "authn-authz", env = "SMART_AUTOSCALER_AUTHN_AUTHZ", value_enum)]
    pub authn_authz: Option<Switch>,

    /// Kubeconfig for the TokenReviews, SubjectAccessReviews and the `extension-apiserver-authentication`
    /// ConfigMap. Default for `serve`: the --kubeconfig connection (in a pod, its service account); `demo` needs
    /// it to turn --authn-authz on.
    #[arg(long, env = "SMART_AUTOSCALER_AUTHENTICATION_KUBECONFIG")]
    pub authentication_kubeconfig: Option<PathBuf>,

    /// Users (comma-separated) allowed on the admission webhook path without a SubjectAccessReview: the identity
    /// of kube-apiserver's webhook client certificate or token (see `docs/security.md`).
    #[arg(long, env = "SMART_AUTOSCALER_WEBHOOK_USERS", value_delimiter = ',')]
    pub webhook_users: Vec<String>,

    /// Users (comma-separated) allowed on the scheduler extender paths without a SubjectAccessReview: the
    /// identity of the scheduler's extender client certificate or token, e.g. `system:kube-scheduler`.
    #[arg(long, env = "SMART_AUTOSCALER_EXTENDER_USERS", value_delimiter = ',')]
    pub extender_users: Vec<String>,

    /// Lock the webhook and extender paths to --webhook-users and --extender-users: anyone else gets a 403 there,
    /// whatever RBAC says.
    #[arg(long, env = "SMART_AUTOSCALER_LOCK_WEBHOOK_EXTENDER")]
    pub lock_webhook_extender: bool,
}

/// [`AuthArgs`], checked, with the command's default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthSettings {
    /// Whether the secure port authenticates and authorizes.
    pub enabled: bool,
    /// Kubeconfig of the review client; `None` for the command's default.
    pub kubeconfig: Option<PathBuf>,
    /// Users allowed on the webhook path.
    pub webhook_users: Vec<String>,
    /// Users allowed on the extender paths.
    pub extender_users: Vec<String>,
    /// Only those users on those paths.
    pub lock: bool,
}

/// An [`AuthArgs`] combination that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum AuthSettingsError {
    /// `demo` has no Kubernetes connection of its own.
    #[error(
        "invalid --authn-authz: `on` needs --authentication-kubeconfig in `demo` (it has no Kubernetes connection)"
    )]
    NoKubeconfig,
    /// The lock would shut every caller out.
    #[error(
        "invalid --lock-webhook-extender: give --webhook-users and --extender-users (the lock admits only them)"
    )]
    LockWithoutUsers,
    /// The file does not exist.
    #[error("invalid --authentication-kubeconfig: {} is not a readable file", .0.display())]
    Kubeconfig(PathBuf),
}

impl AuthArgs {
    /// The settings, `on` unless told otherwise when `default_on`; `needs_kubeconfig` when the command has no
    /// Kubernetes connection to fall back on.
    pub fn settings(
        &self,
        default_on: bool,
        needs_kubeconfig: bool,
    ) -> Result<AuthSettings, AuthSettingsError> {
        let enabled = match self.authn_authz {
            Some(switch) => switch == Switch::On,
            None => default_on,
        };
        if let Some(path) = &self.authentication_kubeconfig
            && !path.is_file()
        {
            return Err(AuthSettingsError::Kubeconfig(path.clone()));
        }
        if enabled && needs_kubeconfig && self.authentication_kubeconfig.is_none() {
            return Err(AuthSettingsError::NoKubeconfig);
        }
        if self.lock_webhook_extender
            && (self.webhook_users.is_empty() || self.extender_users.is_empty())
        {
            return Err(AuthSettingsError::LockWithoutUsers);
        }
        let clean = |users: &[String]| {
            users
                .iter()
                .map(|u| u.trim().to_string())
                .filter(|u| !u.is_empty())
                .collect()
        };
        Ok(AuthSettings {
            enabled,
            kubeconfig: self.authentication_kubeconfig.clone(),
            webhook_users: clean(&self.webhook_users),
            extender_users: clean(&self.extender_users),
            lock: self.lock_webhook_extender,
        })
    }
}

/// Logs, at warn, that the secure port is open to anyone who reaches it.
pub fn warn_disabled(bind: std::net::IpAddr) {
    tracing::warn!(
        bind = %bind,
        "AUTHENTICATION AND AUTHORIZATION ARE OFF (--authn-authz=off): any client that reaches the secure port \
         reads every metric and calls the webhook and the extender. Never run like this where untrusted clients \
         can connect."
    );
}

/// An authenticated (or anonymous) identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct User {
    /// User name.
    pub name: String,
    /// UID, if the authenticator gave one.
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Extra attributes.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        User {
            name: "system:anonymous".into(),
            groups: vec!["system:unauthenticated".into()],
            ..User::default()
        }
    }

    /// Adds `system:authenticated` if missing, as the generic apiserver does before authorization.
    fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.into());
        }
        self
    }
}

/// How the front proxy passes the user: header names from the ConfigMap.
#[derive(Debug, Clone)]
pub struct RequestHeaderConfig {
    /// Verifies the proxy's certificate.
    ca: CaVerifier,
    /// Allowed CNs of the proxy certificate; empty: any certificate from the CA.
    pub allowed_names: Vec<String>,
    /// The first non-empty one names the user.
    pub username_headers: Vec<HeaderName>,
    /// Every value of every one is a group.
    pub group_headers: Vec<HeaderName>,
    /// `<prefix><key>: value` adds value to extra[key]; lowercase.
    pub extra_prefixes: Vec<String>,
    /// The first non-empty one is the UID.
    pub uid_headers: Vec<HeaderName>,
}

/// What authenticates clients, from one reading of the ConfigMap.
#[derive(Debug, Clone, Default)]
pub struct AuthnConfig {
    /// Verifies ordinary client certificates.
    client_ca: Option<CaVerifier>,
    /// The front proxy.
    request_header: Option<RequestHeaderConfig>,
}

/// A ConfigMap value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("extension-apiserver-authentication key {key}: {reason}")]
pub struct AuthnConfigError {
    /// The key.
    pub key: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl AuthnConfig {
    /// Reads the ConfigMap's data. `request_header_ca` (from --requestheader-client-ca-file) replaces the
    /// ConfigMap's `requestheader-client-ca-file` when given. Missing keys leave that authenticator out.
    pub fn from_data(
        data: &BTreeMap<String, String>,
        request_header_ca: Option<&[u8]>,
    ) -> Result<Self, AuthnConfigError> {
        let ca = |key: &'static str, pem: &[u8]| {
            CaVerifier::from_pem(pem).map_err(|reason| AuthnConfigError { key, reason })
        };
        let list = |key: &'static str| -> Result<Vec<String>, AuthnConfigError> {
            match data.get(key) {
                None => Ok(Vec::new()),
                Some(text) if text.trim().is_empty() => Ok(Vec::new()),
                Some(text) => serde_json::from_str(text).map_err(|e| AuthnConfigError {
                    key,
                    reason: format!("not a JSON array of strings: {e}"),
                }),
            }
        };
        let headers = |key: &'static str| -> Result<Vec<HeaderName>, AuthnConfigError> {
            list(key)?
                .into_iter()
                .filter(|h| !h.trim().is_empty())
                .map(|h| {
                    HeaderName::try_from(h.trim()).map_err(|e| AuthnConfigError {
                        key,
                        reason: format!("{h:?}: {e}"),
                    })
                })
                .collect()
        };
        let client_ca = match data.get("client-ca-file") {
            Some(pem) if !pem.trim().is_empty() => Some(ca("client-ca-file", pem.as_bytes())?),
            _ => None,
        };
        let request_header_pem = request_header_ca.or_else(|| {
            data.get("requestheader-client-ca-file")
                .map(|s| s.as_bytes())
                .filter(|s| !s.is_empty())
        });
        let request_header = match request_header_pem {
            Some(pem) => Some(RequestHeaderConfig {
                ca: ca("requestheader-client-ca-file", pem)?,
                allowed_names: list("requestheader-allowed-names")?,
                username_headers: headers("requestheader-username-headers")?,
                group_headers: headers("requestheader-group-headers")?,
                extra_prefixes: list("requestheader-extra-headers-prefix")?
                    .into_iter()
                    .map(|p| p.trim().to_ascii_lowercase())
                    .filter(|p| !p.is_empty())
                    .collect(),
                uid_headers: headers("requestheader-uid-headers")?,
            }),
            None => None,
        };
        Ok(AuthnConfig {
            client_ca,
            request_header,
        })
    }

    /// Whether any certificate authenticator is configured.
    pub fn has_certificates(&self) -> bool {
        self.client_ca.is_some() || self.request_header.is_some()
    }

    fn judge(&self, chain: &[rustls::pki_types::CertificateDer<'static>]) -> ChainOutcome {
        let subject = chain.first().and_then(|leaf| x509::subject(leaf));
        if let Some(rh) = &self.request_header
            && rh.ca.verifies(chain)
        {
            let cn = subject.as_ref().map(|(cn, _)| cn.as_str()).unwrap_or("");
            if rh.allowed_names.is_empty() || rh.allowed_names.iter().any(|n| n == cn) {
                return ChainOutcome::FrontProxy;
            }
        }
        if let Some(ca) = &self.client_ca
            && ca.verifies(chain)
        {
            return match subject {
                Some((user, groups)) if !user.is_empty() => ChainOutcome::Client { user, groups },
                _ => ChainOutcome::Untrusted("client certificate has no common name".into()),
            };
        }
        ChainOutcome::Untrusted(if self.has_certificates() {
            "client certificate not signed by a trusted CA (or the front-proxy CN is not allowed)"
                .into()
        } else {
            "client certificate given, but no client CA is known yet (extension-apiserver-authentication)".into()
        })
    }
}

/// The user the front proxy named in the headers, if it named one.
fn user_from_headers(rh: &RequestHeaderConfig, headers: &HeaderMap) -> Option<User> {
    let first = |names: &[HeaderName]| {
        names.iter().find_map(|name| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find(|v| !v.is_empty())
                .map(str::to_string)
        })
    };
    let name = first(&rh.username_headers)?;
    let groups = rh
        .group_headers
        .iter()
        .flat_map(|h| headers.get_all(h).iter())
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (header, value) in headers {
        // HeaderName is lowercase already.
        let Some(key) = rh
            .extra_prefixes
            .iter()
            .find_map(|p| header.as_str().strip_prefix(p.as_str()))
        else {
            continue;
        };
        let Ok(value) = value.to_str() else { continue };
        extra
            .entry(percent_decode(key))
            .or_default()
            .push(value.to_string());
    }
    Some(User {
        name,
        uid: first(&rh.uid_headers).unwrap_or_default(),
        groups,
        extra,
    })
}

/// `url.PathUnescape`: `%XX` decoded; on any bad escape or non-UTF-8 result, the key as it was.
fn percent_decode(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return key.to_string(),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| key.to_string())
}

/// Why a request is not authenticated: answered as a 401 `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unauthorized: {0}")]
pub struct Unauthenticated(pub String);

/// What is asked of the authorizer about one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    /// A resource request (the external metrics API).
    Resource {
        /// Namespace, if namespaced.
        namespace: Option<String>,
        /// `get`, `list`, ...
        verb: String,
        /// API group.
        group: String,
        /// API version.
        version: String,
        /// The resource (for external metrics: the metric name).
        resource: String,
        /// Object name, if any.
        name: Option<String>,
    },
    /// Anything else: the path and the lowercase HTTP method.
    NonResource {
        /// The URL path.
        path: String,
        /// `get`, `post`, ...
        verb: String,
    },
}

impl Attributes {
    /// The attributes of a request, as k8s.io/apiserver's RequestInfo derives them for the paths served here: the
    /// external metrics API (`/apis/external.metrics.k8s.io/v1beta1/namespaces/{ns}/{metric}`) is a resource
    /// request (`list`, as the HPA asks; `get` with an object name); discovery and every other path are non-resource.
    pub fn of(method: &Method, uri: &Uri) -> Self {
        let path = uri.path();
        let verb = method.as_str().to_ascii_lowercase();
        let non_resource = || Attributes::NonResource {
            path: path.to_string(),
            verb: verb.clone(),
        };
        let Some(rest) = path.strip_prefix("/apis/external.metrics.k8s.io/v1beta1/") else {
            return non_resource();
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let (namespace, parts) = match parts.as_slice() {
            ["namespaces", ns, tail @ ..] if !tail.is_empty() && !ns.is_empty() => {
                (Some(ns.to_string()), tail)
            }
            _ => (None, parts.as_slice()),
        };
        let Some((resource, tail)) = parts.split_first() else {
            return non_resource();
        };
        if resource.is_empty() {
            return non_resource();
        }
        let name = tail
            .first()
            .filter(|n| !n.is_empty())
            .map(|n| n.to_string());
        let watch = uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
        let verb = match (method.as_str(), &name) {
            ("GET" | "HEAD", _) if watch => "watch".to_string(),
            ("GET" | "HEAD", Some(_)) => "get".to_string(),
            ("GET" | "HEAD", None) => "list".to_string(),
            ("POST", _) => "create".to_string(),
            ("PUT", _) => "update".to_string(),
            ("PATCH", _) => "patch".to_string(),
            ("DELETE", Some(_)) => "delete".to_string(),
            ("DELETE", None) => "deletecollection".to_string(),
            _ => verb,
        };
        Attributes::Resource {
            namespace,
            verb,
            group: EXTERNAL_METRICS_GROUP.into(),
            version: "v1beta1".into(),
            resource: resource.to_string(),
            name,
        }
    }

    fn path(&self) -> Option<&str> {
        match self {
            Attributes::NonResource { path, .. } => Some(path),
            Attributes::Resource { .. } => None,
        }
    }

    /// The Forbidden message kube-apiserver would write.
    pub fn forbidden_message(&self, user: &str, reason: &str) -> String {
        let why = if reason.is_empty() {
            String::new()
        } else {
            format!(": {reason}")
        };
        match self {
            Attributes::NonResource { path, verb } => {
                format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\"{why}")
            }
            Attributes::Resource {
                namespace,
                verb,
                group,
                resource,
                ..
            } => {
                let scope = match namespace {
                    Some(ns) => format!("in the namespace \"{ns}\""),
                    None => "at the cluster scope".into(),
                };
                format!(
                    "{resource}.{group} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API \
                     group \"{group}\" {scope}{why}"
                )
            }
        }
    }

    fn spec(&self, user: &User) -> SubjectAccessReviewSpec {
        let mut spec = SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            ..SubjectAccessReviewSpec::default()
        };
        match self {
            Attributes::Resource {
                namespace,
                verb,
                group,
                version,
                resource,
                name,
            } => {
                spec.resource_attributes = Some(ResourceAttributes {
                    namespace: namespace.clone(),
                    verb: Some(verb.clone()),
                    group: Some(group.clone()),
                    version: Some(version.clone()),
                    resource: Some(resource.clone()),
                    name: name.clone(),
                    ..ResourceAttributes::default()
                })
            }
            Attributes::NonResource { path, verb } => {
                spec.non_resource_attributes = Some(NonResourceAttributes {
                    path: Some(path.clone()),
                    verb: Some(verb.clone()),
                })
            }
        }
        spec
    }
}

/// An authorization verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on.
    Allow,
    /// 403, with the reviewer's reason (may be empty).
    Deny(String),
}

/// A review that could not be made (the API server unreachable, slow, or answering an error): not cached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReviewError(pub String);

/// A small map whose entries expire; a std mutex held for one lookup or insert, never across `.await`.
struct TtlCache<V> {
    map: Mutex<HashMap<String, (V, Instant)>>,
}

impl<V: Clone> TtlCache<V> {
    fn new() -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &str) -> Option<V> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(v, _)| v.clone())
    }

    fn insert(&self, key: String, value: V, ttl: Duration) {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= CACHE_CAPACITY {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= CACHE_CAPACITY {
                map.clear();
            }
        }
        map.insert(key, (value, now + ttl));
    }
}

/// Labels of the review counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `token_review` or `subject_access_review`.
    pub kind: &'static str,
    /// `api` (asked the API server), `cache` (answered from the cache) or `error`.
    pub source: &'static str,
}

/// Labels of the decision counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allowed`, `forbidden` (403) or `unauthorized` (401), `error` (500).
    pub decision: &'static str,
}

/// The delegated authenticator and authorizer of the secure port. Shared by every request; cheap to read.
pub struct Auth {
    settings: AuthSettings,
    // std lock: held to clone the `Arc`, never across `.await`.
    config: RwLock<(u64, Arc<AuthnConfig>)>,
    generation: AtomicU64,
    reviewer: Option<kube::Reviewer>,
    tokens: TtlCache<Option<User>>,
    decisions: TtlCache<Decision>,
    reviews: Family<ReviewLabels, Counter>,
    verdicts: Family<DecisionLabels, Counter>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// An authenticator with no CA yet (until [`Auth::set_config`]), reviewing through `reviewer` (`None`: no
    /// token reviews, every review-needing request denied with an error).
    pub fn new(settings: AuthSettings, reviewer: Option<kube::Reviewer>) -> Self {
        Auth {
            settings,
            config: RwLock::new((0, Arc::new(AuthnConfig::default()))),
            generation: AtomicU64::new(0),
            reviewer,
            tokens: TtlCache::new(),
            decisions: TtlCache::new(),
            reviews: Family::default(),
            verdicts: Family::default(),
        }
    }

    /// Registers `smart_autoscaler_auth_reviews_total{kind,source}` and `smart_autoscaler_auth_decisions_total`.
    pub fn register(&self, telemetry: &Telemetry) {
        for kind in ["token_review", "subject_access_review"] {
            for source in ["api", "cache", "error"] {
                let _ = self.reviews.get_or_create(&ReviewLabels { kind, source });
            }
        }
        for decision in ["allowed", "forbidden", "unauthorized", "error"] {
            let _ = self.verdicts.get_or_create(&DecisionLabels { decision });
        }
        telemetry.register(
            "auth_reviews",
            "TokenReviews and SubjectAccessReviews, by kind and source (api: asked the Kubernetes API; cache: \
             answered from the 10 s cache; error: the API could not answer)",
            self.reviews.clone(),
        );
        telemetry.register(
            "auth_decisions",
            "Secure-port requests by authentication and authorization outcome",
            self.verdicts.clone(),
        );
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// Replaces the certificate configuration; connections judge their chains again.
    pub fn set_config(&self, config: AuthnConfig) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = (generation, Arc::new(config));
    }

    fn config(&self) -> (u64, Arc<AuthnConfig>) {
        let guard = self.config.read().unwrap_or_else(|p| p.into_inner());
        (guard.0, guard.1.clone())
    }

    /// Counts one outcome of [`Auth::check`].
    pub fn count(&self, decision: &'static str) {
        self.verdicts
            .get_or_create(&DecisionLabels { decision })
            .inc();
    }

    fn count_review(&self, kind: &'static str, source: &'static str) {
        self.reviews
            .get_or_create(&ReviewLabels { kind, source })
            .inc();
    }

    /// Who sent the request, and whether it came through the front proxy (whose identity headers should then be
    /// removed before handlers run).
    pub async fn authenticate(
        &self,
        chain: Option<&ClientChain>,
        headers: &HeaderMap,
    ) -> Result<(User, bool), Unauthenticated> {
        let mut failures = Vec::new();
        if let Some(chain) = chain.filter(|c| !c.certs.is_empty()) {
            let (generation, config) = self.config();
            match chain.outcome(generation, |certs| config.judge(certs)) {
                ChainOutcome::FrontProxy => {
                    if let Some(user) = config
                        .request_header
                        .as_ref()
                        .and_then(|rh| user_from_headers(rh, headers))
                    {
                        return Ok((user.authenticated(), true));
                    }
                    // A proxy certificate without a user header authenticates nobody; other credentials may.
                }
                ChainOutcome::Client { user, groups } => {
                    let user = User {
                        name: user,
                        groups,
                        ..User::default()
                    };
                    return Ok((user.authenticated(), false));
                }
                ChainOutcome::Untrusted(why) => failures.push(why),
            }
        }
        if let Some(token) = bearer(headers) {
            match self.review_token(token).await {
                Ok(Some(user)) => return Ok((user.authenticated(), false)),
                Ok(None) => failures.push("invalid bearer token".into()),
                Err(error) => failures.push(format!("token review failed: {error}")),
            }
        }
        if failures.is_empty() {
            Ok((User::anonymous(), false))
        } else {
            Err(Unauthenticated(failures.join("; ")))
        }
    }

    async fn review_token(&self, token: &str) -> Result<Option<User>, ReviewError> {
        if let Some(cached) = self.tokens.get(token) {
            self.count_review("token_review", "cache");
            return Ok(cached);
        }
        let Some(reviewer) = &self.reviewer else {
            return Err(ReviewError(
                "no Kubernetes API to review tokens with".into(),
            ));
        };
        match reviewer.token_review(token).await {
            Ok(user) => {
                self.count_review("token_review", "api");
                self.tokens
                    .insert(token.to_string(), user.clone(), CACHE_TTL);
                Ok(user)
            }
            Err(error) => {
                self.count_review("token_review", "error");
                Err(error)
            }
        }
    }

    /// Whether `user` may do what `attributes` describe.
    pub async fn authorize(
        &self,
        user: &User,
        attributes: &Attributes,
    ) -> Result<Decision, ReviewError> {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Ok(Decision::Allow);
        }
        if let Some(path) = attributes.path() {
            let users = if path == crate::http::webhook::PATH {
                Some(&self.settings.webhook_users)
            } else if [
                crate::http::extender::FILTER_PATH,
                crate::http::extender::PRIORITIZE_PATH,
                crate::http::extender::NODES_PATH,
            ]
            .contains(&path)
            {
                Some(&self.settings.extender_users)
            } else {
                None
            };
            if let Some(users) = users {
                if users.contains(&user.name) {
                    return Ok(Decision::Allow);
                }
                if self.settings.lock {
                    return Ok(Decision::Deny(
                        "this path is locked to the configured callers (--lock-webhook-extender)"
                            .into(),
                    ));
                }
            }
        }
        let spec = attributes.spec(user);
        let key = serde_json::to_string(&spec).unwrap_or_default();
        if let Some(decision) = self.decisions.get(&key) {
            self.count_review("subject_access_review", "cache");
            return Ok(decision);
        }
        let Some(reviewer) = &self.reviewer else {
            return Err(ReviewError(
                "no Kubernetes API to review access with".into(),
            ));
        };
        match reviewer.subject_access_review(spec).await {
            Ok(decision) => {
                self.count_review("subject_access_review", "api");
                self.decisions.insert(key, decision.clone(), CACHE_TTL);
                Ok(decision)
            }
            Err(error) => {
                self.count_review("subject_access_review", "error");
                Err(error)
            }
        }
    }
}

/// The bearer token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn external_metric_paths_are_resource_requests() {
        let a = Attributes::of(
            &Method::GET,
            &uri(
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/queue_depth?labelSelector=a%3Db",
            ),
        );
        assert_eq!(
            a,
            Attributes::Resource {
                namespace: Some("shop".into()),
                verb: "list".into(),
                group: EXTERNAL_METRICS_GROUP.into(),
                version: "v1beta1".into(),
                resource: "queue_depth".into(),
                name: None,
            }
        );
        assert_eq!(
            a.forbidden_message("bob", ""),
            "queue_depth.external.metrics.k8s.io is forbidden: User \"bob\" cannot list resource \"queue_depth\" \
             in API group \"external.metrics.k8s.io\" in the namespace \"shop\""
        );
        for path in [
            "/apis",
            "/apis/external.metrics.k8s.io",
            "/apis/external.metrics.k8s.io/v1beta1",
            "/apis/external.metrics.k8s.io/v1beta1/",
            "/mutate/deployments",
            "/openapi/v2",
        ] {
            assert!(
                matches!(
                    Attributes::of(&Method::GET, &uri(path)),
                    Attributes::NonResource { .. }
                ),
                "{path}"
            );
        }
        assert_eq!(
            Attributes::of(&Method::POST, &uri("/scheduler/filter")),
            Attributes::NonResource {
                path: "/scheduler/filter".into(),
                verb: "post".into()
            }
        );
    }

    #[test]
    fn front_proxy_headers_make_the_user() {
        let data: BTreeMap<String, String> = [
            ("requestheader-username-headers", r#"["X-Remote-User"]"#),
            ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
            (
                "requestheader-extra-headers-prefix",
                r#"["X-Remote-Extra-"]"#,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let ca = crate::certs::generate(&["x".into()], (2026, 1, 1), 10).unwrap();
        let config = AuthnConfig::from_data(&data, Some(ca.ca_cert_pem.as_bytes())).unwrap();
        let rh = config.request_header.unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(user_from_headers(&rh, &headers), None);
        headers.insert("x-remote-user", "alice".parse().unwrap());
        headers.append("x-remote-group", "dev".parse().unwrap());
        headers.append("x-remote-group", "ops,qa".parse().unwrap());
        headers.append("x-remote-extra-scopes%2Fa", "one".parse().unwrap());
        headers.append("x-remote-extra-scopes%2Fa", "two".parse().unwrap());
        let user = user_from_headers(&rh, &headers).unwrap();
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["dev", "ops,qa"]);
        assert_eq!(user.extra["scopes/a"], ["one", "two"]);
        assert_eq!(percent_decode("a%zz"), "a%zz");
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert("authorization", "bearer abc".parse().unwrap());
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&headers), None);
    }

    #[test]
    fn lock_needs_users_and_demo_needs_a_kubeconfig() {
        let args = AuthArgs {
            authn_authz: None,
            authentication_kubeconfig: None,
            webhook_users: vec![],
            extender_users: vec![],
            lock_webhook_extender: false,
        };
        assert!(args.settings(true, false).unwrap().enabled);
        assert!(!args.settings(false, true).unwrap().enabled);
        let on = AuthArgs {
            authn_authz: Some(Switch::On),
            ..args.clone()
        };
        assert!(matches!(
            on.settings(false, true),
            Err(AuthSettingsError::NoKubeconfig)
        ));
        let lock = AuthArgs {
            lock_webhook_extender: true,
            ..args
        };
        assert!(matches!(
            lock.settings(true, false),
            Err(AuthSettingsError::LockWithoutUsers)
        ));
    }
}
