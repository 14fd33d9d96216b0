//! The Kubernetes adapter: kube-rs watchers and slim caches that keep Deployments, ReplicaSets, Pods, Nodes and
//! autoscaling/v2 HorizontalPodAutoscalers in memory, and turn them into a
//! [`ClusterSnapshot`](crate::domain::cluster::ClusterSnapshot) on demand.
//!
//! Each kind is listed once and then followed with a watch (`watch=true`, `allowWatchBookmarks=true`) from the
//! list's resourceVersion; kube-runtime's watcher resumes broken watches and re-lists only when the apiserver
//! answers 410 Gone. Nothing polls. Objects are parsed as partial types ([`objects`]) and each is converted
//! once, when its event arrives, into the small entry its [`cache`] keeps. [`ClusterWatch::snapshot`] is
//! synchronous: it copies `Arc`s out of the caches under their short read locks and joins them (owner chains,
//! HPA targets) without holding any lock.
//!
//! Requests go through a client-side token bucket ([`rate`]) configured by `--kube-qps`/`--kube-burst`.
//!
//! A quiet watch and a hung apiserver look the same from the watch side (no events, no error), so a probe
//! (`GET /version`, readable by every authenticated identity) runs every quarter of `--kube-max-staleness`;
//! every watch event and every probe answer is contact. [`WatchHealth::since_contact`] tells the data plane how
//! old the caches may be, and past the limit no new values are computed from them.
//!
//! RBAC: the service account needs `list` and `watch` on `deployments` and `replicasets` (apps), `pods` and
//! `nodes` (core) and `horizontalpodautoscalers` (autoscaling), cluster-wide.

pub mod cache;
pub mod convert;
pub mod leader;
pub mod objects;
pub mod rate;

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::cache::{Cache, Key, Writer};
use self::convert::{PodEntry, ReplicaSetEntry};
use self::objects::{PartialDeployment, PartialNode, PartialPod, PartialReplicaSet};
use crate::domain::cluster::{ClusterSnapshot, DeploymentInfo, NodeInfo};

/// Kubernetes API connection flags of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sArgs {
    /// Kubeconfig file to reach the Kubernetes API with. Without it the in-cluster service account is used,
    /// or else `$KUBECONFIG` / `~/.kube/config`.
    #[arg(long, env = "SMART_AUTOSCALER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Sustained rate of Kubernetes API request starts per second (lists and watch connections; an open watch
    /// costs nothing while it streams).
    #[arg(long, env = "SMART_AUTOSCALER_KUBE_QPS", default_value_t = 20.0)]
    pub kube_qps: f32,

    /// Kubernetes API requests that may start at once before --kube-qps throttles them.
    #[arg(long, env = "SMART_AUTOSCALER_KUBE_BURST", default_value_t = 40)]
    pub kube_burst: u32,

    /// How long the cached Kubernetes objects may go without any contact with the API server (a watch event
    /// or an answer to the `/version` probe, sent every quarter of this) before no new values are computed
    /// from them; the values already served then age into the fail-safe. e.g. `2m`.
    #[arg(long, env = "SMART_AUTOSCALER_KUBE_MAX_STALENESS", default_value = "2m", value_parser = crate::flags::parse_duration)]
    pub kube_max_staleness: Duration,
}

/// The Kubernetes connection [`K8sArgs`] describe, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct K8sSettings {
    /// Kubeconfig file; `None` infers the configuration (in-cluster, then the default kubeconfig).
    pub kubeconfig: Option<PathBuf>,
    /// Sustained request starts per second (positive).
    pub qps: f32,
    /// Request starts that may go at once (at least 1).
    pub burst: u32,
    /// How long the cache may go without contact with the API server before no new values are computed.
    pub max_staleness: Duration,
}

/// A `serve` Kubernetes flag that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum K8sSettingsError {
    /// `--kube-qps` is not a positive number.
    #[error("invalid --kube-qps: {0} is not a positive number")]
    Qps(f32),
    /// `--kube-burst` is 0.
    #[error("invalid --kube-burst: must be at least 1")]
    Burst,
    /// `--kube-max-staleness` is too short for the probe that refreshes it.
    #[error("invalid --kube-max-staleness: {0:?} is below 4s (the probe runs every quarter of it)")]
    MaxStaleness(Duration),
}

/// Checks the rate limit: a bucket with no tokens per second, or room for none, would never let a request start.
fn check_rate(qps: f32, burst: u32) -> Result<(), K8sSettingsError> {
    if !(qps.is_finite() && qps > 0.0) {
        return Err(K8sSettingsError::Qps(qps));
    }
    if burst == 0 {
        return Err(K8sSettingsError::Burst);
    }
    Ok(())
}

impl TryFrom<&K8sArgs> for K8sSettings {
    type Error = K8sSettingsError;

    fn try_from(args: &K8sArgs) -> Result<Self, Self::Error> {
        check_rate(args.kube_qps, args.kube_burst)?;
        if args.kube_max_staleness < Duration::from_secs(4) {
            return Err(K8sSettingsError::MaxStaleness(args.kube_max_staleness));
        }
        Ok(K8sSettings {
            kubeconfig: args.kubeconfig.clone(),
            qps: args.kube_qps,
            burst: args.kube_burst,
            max_staleness: args.kube_max_staleness,
        })
    }
}

impl K8sSettings {
    /// How often the API server is probed: a quarter of `--kube-max-staleness`, at most every 30 s.
    pub fn probe_interval(&self) -> Duration {
        (self.max_staleness / 4).min(Duration::from_secs(30))
    }

    /// Builds the client these settings describe (see [`client`]).
    pub async fn client(&self) -> Result<Client, K8sError> {
        client(self.kubeconfig.as_deref(), self.qps, self.burst).await
    }

    /// [`K8sSettings::client`] with the API server's URL (see [`connect`]).
    pub async fn connect(&self) -> Result<(Client, String), K8sError> {
        connect(self.kubeconfig.as_deref(), self.qps, self.burst).await
    }
}

/// What can go wrong setting up the Kubernetes client.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The `--kubeconfig` file could not be read or used. (The cause is in the message, not a `source`, so a
    /// printed chain does not repeat it.)
    #[error(
        "--kubeconfig {path}: {source}; point --kubeconfig (SMART_AUTOSCALER_KUBECONFIG) at a readable kubeconfig"
    )]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// Neither the in-cluster environment nor a default kubeconfig gave a configuration.
    #[error(
        "no Kubernetes configuration: not running in a pod (KUBERNETES_SERVICE_HOST unset) and no usable default \
         kubeconfig ($KUBECONFIG or ~/.kube/config): {0}; give --kubeconfig PATH"
    )]
    Infer(kube::config::InferConfigError),
    /// The client could not be built from the configuration (TLS setup, auth plugin, ...).
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// `qps` / `burst` are out of range.
    #[error(transparent)]
    RateLimit(K8sSettingsError),
}

/// Builds a Kubernetes client from `kubeconfig` (the file's current context) or, without it, from the
/// in-cluster service account or the default kubeconfig (`kube::Config::infer`). Every request start passes
/// a token bucket of `qps` tokens per second and `burst` capacity ([`rate::TokenBucketLayer`]).
///
/// TLS uses rustls with the process-wide default crypto provider (aws-lc-rs; `main` installs it, and it is the
/// only provider compiled in).
pub async fn client(kubeconfig: Option<&Path>, qps: f32, burst: u32) -> Result<Client, K8sError> {
    connect(kubeconfig, qps, burst)
        .await
        .map(|(client, _)| client)
}

/// [`client`], with the API server's URL (for log lines and errors).
pub async fn connect(
    kubeconfig: Option<&Path>,
    qps: f32,
    burst: u32,
) -> Result<(Client, String), K8sError> {
    check_rate(qps, burst).map_err(K8sError::RateLimit)?;
    let config = match kubeconfig {
        Some(path) => {
            let error = |source| K8sError::Kubeconfig {
                path: path.to_path_buf(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => kube::Config::infer().await.map_err(K8sError::Infer)?,
    };
    let server = config.cluster_url.to_string();
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok((
        builder
            .with_layer(&rate::TokenBucketLayer::new(qps, burst))
            .build(),
        server,
    ))
}

/// The kinds the adapter watches, in [`WatchHealth::pending`] order.
const KINDS: [&str; 5] = [
    "Deployment",
    "ReplicaSet",
    "Pod",
    "Node",
    "HorizontalPodAutoscaler",
];

/// Index of the API server probe among the error sources (after the [`KINDS`]).
const PROBE: usize = KINDS.len();

/// Shared progress of the watch tasks.
#[derive(Debug)]
struct Status {
    /// The API server's URL, for log lines.
    server: String,
    synced: [AtomicBool; 5],
    errors: AtomicU64,
    /// Failures since the last success, per kind and for the probe: the first is logged as a warning, the rest at
    /// debug level, and the next success once, so a down API server gives a line per change, not per retry.
    failing: [AtomicU64; KINDS.len() + 1],
    last_error: Mutex<Option<String>>,
    /// The last watch event or probe answer.
    last_contact: Mutex<Option<Instant>>,
}

impl Status {
    fn new(server: String) -> Self {
        Status {
            server,
            synced: Default::default(),
            errors: AtomicU64::new(0),
            failing: Default::default(),
            last_error: Mutex::new(None),
            last_contact: Mutex::new(None),
        }
    }

    fn record_error(&self, source: usize, error: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let kind = KINDS.get(source).copied().unwrap_or("API server probe");
        let message = format!("{kind}: {error}");
        if self.failing[source].fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                server = %self.server, kind, %error,
                "kubernetes API request failed; retrying with backoff (repeats are logged at debug level)"
            );
        } else {
            tracing::debug!(server = %self.server, kind, %error, "kubernetes API request failed again");
        }
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
    }

    fn contact(&self, source: usize) {
        let failures = self.failing[source].swap(0, Ordering::Relaxed);
        if failures > 0 {
            let kind = KINDS.get(source).copied().unwrap_or("API server probe");
            tracing::info!(server = %self.server, kind, failures, "kubernetes API answering again");
        }
        *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn since_contact(&self) -> Option<Duration> {
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|at| at.elapsed())
    }
}

/// Health of the watches, for `/readyz` detail.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WatchHealth {
    /// Every kind has completed its initial list.
    pub ready: bool,
    /// Kinds whose initial list has not completed yet.
    pub pending: Vec<&'static str>,
    /// Watch and list errors since start (each is retried with backoff).
    pub errors: u64,
    /// The most recent error, prefixed with its kind.
    pub last_error: Option<String>,
    /// Time since the last contact with the API server (a watch event or a probe answer); `None` before any.
    pub since_contact: Option<Duration>,
}

/// Watches over the five kinds the data plane needs, each filling a [`Cache`], started on a client and stopped
/// by a [`CancellationToken`].
pub struct ClusterWatch {
    deployments: Cache<DeploymentInfo>,
    replica_sets: Cache<ReplicaSetEntry>,
    pods: Cache<PodEntry>,
    nodes: Cache<NodeInfo>,
    hpas: Cache<Option<convert::HpaTarget>>,
    status: Arc<Status>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts one watch task per kind, cluster-wide, and the probe of the API server every `probe_interval`
    /// (see [`K8sSettings::probe_interval`]). The tasks run until `cancel` fires (or [`ClusterWatch::shutdown`]).
    /// Must be called inside a tokio runtime.
    pub fn start(client: Client, cancel: CancellationToken, probe_interval: Duration) -> Self {
        Self::start_at(client, "(unnamed)".into(), cancel, probe_interval)
    }

    /// [`ClusterWatch::start`], naming the API server's URL (from [`connect`]) in its log lines.
    pub fn start_at(
        client: Client,
        server: String,
        cancel: CancellationToken,
        probe_interval: Duration,
    ) -> Self {
        let status = Arc::new(Status::new(server));
        let probe = tokio::spawn(probe(
            client.clone(),
            status.clone(),
            cancel.clone(),
            probe_interval,
        ));
        let start = |index| Watched {
            index,
            status: status.clone(),
            cancel: cancel.clone(),
        };
        let (deployments, t0) = start(0)
            .spawn::<PartialDeployment, _>(Api::all(client.clone()), convert::deployment_info);
        let (replica_sets, t1) = start(1)
            .spawn::<PartialReplicaSet, _>(Api::all(client.clone()), convert::replica_set_entry);
        let (pods, t2) =
            start(2).spawn::<PartialPod, _>(Api::all(client.clone()), convert::pod_entry);
        let (nodes, t3) =
            start(3).spawn::<PartialNode, _>(Api::all(client.clone()), convert::node_info);
        let (hpas, t4) =
            start(4).spawn::<HorizontalPodAutoscaler, _>(Api::all(client), convert::hpa_target);
        ClusterWatch {
            deployments,
            replica_sets,
            pods,
            nodes,
            hpas,
            status,
            tasks: vec![t0, t1, t2, t3, t4, probe],
        }
    }

    /// Whether every kind has completed its initial list. Stays true across later watch errors and re-lists:
    /// the caches keep their last complete state meanwhile.
    pub fn ready(&self) -> bool {
        self.status
            .synced
            .iter()
            .all(|synced| synced.load(Ordering::Acquire))
    }

    /// Watch and list errors since start.
    pub fn error_count(&self) -> u64 {
        self.status.errors.load(Ordering::Relaxed)
    }

    /// The most recent watch or list error, prefixed with its kind.
    pub fn last_error(&self) -> Option<String> {
        self.status
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Readiness, pending kinds and errors in one value.
    pub fn health(&self) -> WatchHealth {
        let pending: Vec<&'static str> = KINDS
            .iter()
            .zip(&self.status.synced)
            .filter(|(_, synced)| !synced.load(Ordering::Acquire))
            .map(|(kind, _)| *kind)
            .collect();
        WatchHealth {
            ready: pending.is_empty(),
            pending,
            errors: self.error_count(),
            last_error: self.last_error(),
            since_contact: self.status.since_contact(),
        }
    }

    /// The cluster as the caches hold it now, sorted by namespace and name. Before [`ClusterWatch::ready`]
    /// it may be partial.
    pub fn snapshot(&self) -> ClusterSnapshot {
        // Neither needs an order: `hpa_targets` sorts what it is given, and the ReplicaSets go into a map.
        let hpas = self.hpas.entries();
        let targets = convert::hpa_targets(hpas.iter().map(|(k, v)| (k, v.as_ref())));
        let replica_sets: HashMap<Key, Arc<ReplicaSetEntry>> =
            self.replica_sets.entries().into_iter().collect();

        let deployments = self
            .deployments
            .sorted()
            .into_iter()
            .map(|(key, d)| {
                let mut info = DeploymentInfo::clone(&d);
                let hpa = targets.get(&key);
                info.hpa_target_percent = hpa.map(|t| t.percent);
                info.hpa_max_replicas = hpa.map(|t| t.max_replicas);
                info
            })
            .collect();
        let pods = self
            .pods
            .sorted()
            .into_iter()
            .map(|((namespace, _), p)| {
                let mut info = p.info.clone();
                info.deployment = convert::owning_deployment(p.owner.as_ref(), |name| {
                    replica_sets
                        .get(&(namespace.clone(), name.to_string()))
                        .map(Arc::as_ref)
                });
                info
            })
            .collect();
        let nodes = self
            .nodes
            .sorted()
            .into_iter()
            .map(|(_, n)| NodeInfo::clone(&n))
            .collect();
        ClusterSnapshot {
            deployments,
            pods,
            nodes,
        }
    }

    /// Cancels the watch tasks through `cancel` (the token given to [`ClusterWatch::start`]) and waits for
    /// them to end.
    pub async fn shutdown(self, cancel: &CancellationToken) {
        cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// One kind's watch task: its index in [`KINDS`] and the shared status it reports to.
struct Watched {
    index: usize,
    status: Arc<Status>,
    cancel: CancellationToken,
}

impl Watched {
    fn spawn<K, E>(self, api: Api<K>, convert: fn(&K) -> E) -> (Cache<E>, JoinHandle<()>)
    where
        K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let Watched {
            index,
            status,
            cancel,
        } = self;
        let kind = KINDS[index];
        let mut writer = Writer::new(convert);
        let cache = writer.cache();
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            loop {
                let event = tokio::select! {
                    () = cancel.cancelled() => break,
                    event = next(stream.as_mut()) => event,
                };
                match event {
                    Some(Ok(event)) => {
                        // `Init` comes before the list request is even sent: it is no answer from the server.
                        if !matches!(event, watcher::Event::Init) {
                            status.contact(index);
                        }
                        if writer.apply(&event)
                            && !status.synced[index].swap(true, Ordering::AcqRel)
                        {
                            tracing::info!(kind, "initial list complete; watching");
                        }
                    }
                    Some(Err(error)) => status.record_error(index, &error),
                    None => break,
                }
            }
            tracing::debug!(kind, "watch stopped");
        });
        (cache, task)
    }
}

/// Asks the API server for `/version` every `interval` until `cancel` fires: an answer is contact, a failure or
/// no answer within the interval is an error. The watches cannot tell a quiet cluster from a hung server.
async fn probe(client: Client, status: Arc<Status>, cancel: CancellationToken, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let answer = tokio::select! {
            () = cancel.cancelled() => return,
            answer = tokio::time::timeout(interval, client.apiserver_version()) => answer,
        };
        match answer {
            Ok(Ok(_)) => status.contact(PROBE),
            Ok(Err(error)) => status.record_error(PROBE, &error),
            Err(_) => status.record_error(
                PROBE,
                &format!("GET /version had no answer within {interval:?}"),
            ),
        }
    }
}

/// The next item of a stream. kube-runtime's streams implement `futures::Stream`; this crate has no direct
/// `futures` dependency, so the stream is polled through [`WatchStreamExt`], whose supertrait that is.
async fn next<S>(mut stream: Pin<&mut S>) -> Option<S::Item>
where
    S: WatchStreamExt + ?Sized,
{
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        k8s: K8sArgs,
    }

    #[test]
    fn flags_have_defaults_and_convert() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.k8s.kube_qps, 20.0);
        assert_eq!(cli.k8s.kube_burst, 40);
        assert!(cli.k8s.kubeconfig.is_none());
        let settings = K8sSettings::try_from(&cli.k8s).unwrap();
        assert_eq!(
            settings,
            K8sSettings {
                kubeconfig: None,
                qps: 20.0,
                burst: 40,
                max_staleness: Duration::from_secs(120),
            }
        );
        assert_eq!(settings.probe_interval(), Duration::from_secs(30));
        let cli =
            Cli::try_parse_from(["x", "--kubeconfig", "/k", "--kube-max-staleness", "8s"]).unwrap();
        let settings = K8sSettings::try_from(&cli.k8s).unwrap();
        assert_eq!(settings.kubeconfig.as_deref(), Some(Path::new("/k")));
        assert_eq!(settings.probe_interval(), Duration::from_secs(2));
    }

    #[test]
    fn bad_flags_are_named() {
        let settings = |flags: &[&str]| {
            let cli = Cli::try_parse_from([&["x"], flags].concat()).unwrap();
            K8sSettings::try_from(&cli.k8s)
        };
        let err = settings(&["--kube-qps", "0", "--kubeconfig", "/k"]).unwrap_err();
        assert_eq!(err, K8sSettingsError::Qps(0.0));
        assert!(err.to_string().starts_with("invalid --kube-qps"), "{err}");
        assert_eq!(
            settings(&["--kube-qps", "NaN"]).unwrap_err().to_string(),
            "invalid --kube-qps: NaN is not a positive number"
        );
        assert_eq!(
            settings(&["--kube-burst", "0"]).unwrap_err(),
            K8sSettingsError::Burst
        );
        let err = settings(&["--kube-max-staleness", "3s"]).unwrap_err();
        assert_eq!(err, K8sSettingsError::MaxStaleness(Duration::from_secs(3)));
        assert!(err.to_string().contains("--kube-max-staleness"), "{err}");
    }

    #[tokio::test]
    async fn missing_kubeconfig_is_a_named_error() {
        let Err(error) = client(Some(Path::new("/nonexistent/kubeconfig")), 20.0, 40).await else {
            panic!("a missing kubeconfig must fail");
        };
        assert!(matches!(error, K8sError::Kubeconfig { .. }), "{error}");
        assert!(error.to_string().contains("/nonexistent/kubeconfig"));
    }
}
