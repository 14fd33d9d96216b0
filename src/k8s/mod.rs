//! The Kubernetes adapter: kube-rs reflectors that keep Deployments, ReplicaSets, Pods, Nodes and
//! autoscaling/v2 HorizontalPodAutoscalers in memory, and turn them into a
//! [`ClusterSnapshot`](crate::domain::cluster::ClusterSnapshot) on demand.
//!
//! Each kind is listed once and then followed with a watch (`watch=true`, `allowWatchBookmarks=true`) from the
//! list's resourceVersion; kube-runtime's watcher resumes broken watches and re-lists only when the apiserver
//! answers 410 Gone. Nothing polls. [`ClusterWatch::snapshot`] is synchronous: it copies `Arc`s out of the
//! stores under their short read locks and converts them (see [`convert`]) without holding any lock.
//!
//! Requests go through a client-side token bucket ([`rate`]) configured by `--kube-qps`/`--kube-burst`.
//!
//! RBAC: the service account needs `list` and `watch` on `deployments` and `replicasets` (apps), `pods` and
//! `nodes` (core) and `horizontalpodautoscalers` (autoscaling), cluster-wide.

pub mod convert;
pub mod quantity;
pub mod rate;
pub mod slim;

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ConfigError;
use crate::domain::cluster::ClusterSnapshot;

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
}

impl K8sArgs {
    /// Checks the rate-limit settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.kube_qps.is_finite() && self.kube_qps > 0.0) {
            return Err(ConfigError {
                flag: "kube-qps",
                reason: "must be a positive number".into(),
            });
        }
        if self.kube_burst == 0 {
            return Err(ConfigError {
                flag: "kube-burst",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    /// Builds the client these flags describe (see [`client`]).
    pub async fn client(&self) -> Result<Client, K8sError> {
        client(self.kubeconfig.as_deref(), self.kube_qps, self.kube_burst).await
    }
}

/// What can go wrong setting up the Kubernetes client.
#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    /// The `--kubeconfig` file could not be read or used.
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// Neither the in-cluster environment nor a default kubeconfig gave a configuration.
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built from the configuration (TLS setup, auth plugin, ...).
    #[error("building the Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// `--kube-qps` / `--kube-burst` are out of range.
    #[error(transparent)]
    RateLimit(ConfigError),
}

/// Builds a Kubernetes client from `kubeconfig` (the file's current context) or, without it, from the
/// in-cluster service account or the default kubeconfig (`kube::Config::infer`). Every request start passes
/// a token bucket of `qps` tokens per second and `burst` capacity ([`rate::TokenBucketLayer`]).
///
/// TLS uses rustls with the process-wide default crypto provider (aws-lc-rs; `main` installs it, and it is the
/// only provider compiled in).
pub async fn client(kubeconfig: Option<&Path>, qps: f32, burst: u32) -> Result<Client, K8sError> {
    K8sArgs {
        kubeconfig: None,
        kube_qps: qps,
        kube_burst: burst,
    }
    .validate()
    .map_err(K8sError::RateLimit)?;
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
        None => kube::Config::infer().await?,
    };
    let builder = kube::client::ClientBuilder::try_from(config)?;
    Ok(builder
        .with_layer(&rate::TokenBucketLayer::new(qps, burst))
        .build())
}

/// The kinds the adapter watches, in [`WatchHealth::pending`] order.
const KINDS: [&str; 5] = [
    "Deployment",
    "ReplicaSet",
    "Pod",
    "Node",
    "HorizontalPodAutoscaler",
];

/// Shared progress of the reflector tasks.
#[derive(Debug, Default)]
struct Status {
    synced: [AtomicBool; 5],
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Status {
    fn record_error(&self, kind: &str, error: &watcher::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let message = format!("{kind}: {error}");
        tracing::warn!(kind, %error, "kubernetes watch error; retrying with backoff");
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(message);
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
}

/// Reflectors over the five kinds the data plane needs, started on a client and stopped by a
/// [`CancellationToken`].
pub struct ClusterWatch {
    deployments: Store<Deployment>,
    replica_sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    hpas: Store<HorizontalPodAutoscaler>,
    status: Arc<Status>,
    tasks: Vec<JoinHandle<()>>,
}

impl ClusterWatch {
    /// Starts one reflector task per kind, cluster-wide. The tasks run until `cancel` fires (or
    /// [`ClusterWatch::shutdown`]). Must be called inside a tokio runtime.
    pub fn start(client: Client, cancel: CancellationToken) -> Self {
        let status = Arc::new(Status::default());
        let mut tasks = Vec::with_capacity(KINDS.len());
        let (deployments, task) =
            spawn_reflector(Api::all(client.clone()), 0, status.clone(), cancel.clone());
        tasks.push(task);
        let (replica_sets, task) =
            spawn_reflector(Api::all(client.clone()), 1, status.clone(), cancel.clone());
        tasks.push(task);
        let (pods, task) =
            spawn_reflector(Api::all(client.clone()), 2, status.clone(), cancel.clone());
        tasks.push(task);
        let (nodes, task) =
            spawn_reflector(Api::all(client.clone()), 3, status.clone(), cancel.clone());
        tasks.push(task);
        let (hpas, task) = spawn_reflector(Api::all(client), 4, status.clone(), cancel);
        tasks.push(task);
        ClusterWatch {
            deployments,
            replica_sets,
            pods,
            nodes,
            hpas,
            status,
            tasks,
        }
    }

    /// Whether every kind has completed its initial list. Stays true across later watch errors and re-lists:
    /// the stores keep their last complete state meanwhile.
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
        }
    }

    /// The cluster as the stores hold it now, sorted by namespace and name. Before [`ClusterWatch::ready`]
    /// it may be partial.
    pub fn snapshot(&self) -> ClusterSnapshot {
        // Each `state()` takes its store's read lock only while copying the `Arc`s.
        let replica_sets = self.replica_sets.state();
        let hpas = self.hpas.state();
        let targets = convert::hpa_targets(hpas.iter().map(Arc::as_ref));
        let rs_index = convert::replica_set_index(replica_sets.iter().map(Arc::as_ref));
        let lookup = |ns: &str, name: &str| rs_index.get(&(ns, name)).copied();

        let mut deployments: Vec<_> = self
            .deployments
            .state()
            .iter()
            .map(|d| convert::deployment_info(d, &targets))
            .collect();
        deployments.sort_by(|a, b| a.key.cmp(&b.key));
        let mut pods: Vec<_> = self
            .pods
            .state()
            .iter()
            .map(|p| convert::pod_info(p, convert::owning_deployment(p, lookup)))
            .collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut nodes: Vec<_> = self
            .nodes
            .state()
            .iter()
            .map(|n| convert::node_info(n))
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        ClusterSnapshot {
            deployments,
            pods,
            nodes,
        }
    }

    /// Cancels the reflector tasks through `cancel` (the token given to [`ClusterWatch::start`]) and waits for
    /// them to end.
    pub async fn shutdown(self, cancel: &CancellationToken) {
        cancel.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

fn spawn_reflector<K>(
    api: Api<K>,
    index: usize,
    status: Arc<Status>,
    cancel: CancellationToken,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + slim::Slim
        + Clone
        + Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let kind = KINDS[index];
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(K::slim)
        .reflect(writer);
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let event = tokio::select! {
                () = cancel.cancelled() => break,
                event = next(stream.as_mut()) => event,
            };
            match event {
                Some(Ok(watcher::Event::InitDone)) => {
                    if !status.synced[index].swap(true, Ordering::AcqRel) {
                        tracing::info!(kind, "initial list complete; watching");
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => status.record_error(kind, &error),
                None => break,
            }
        }
        tracing::debug!(kind, "reflector stopped");
    });
    (store, task)
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
    fn flags_have_defaults_and_validate() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.k8s.kube_qps, 20.0);
        assert_eq!(cli.k8s.kube_burst, 40);
        assert!(cli.k8s.kubeconfig.is_none());
        assert!(cli.k8s.validate().is_ok());
        let cli = Cli::try_parse_from(["x", "--kube-qps", "0", "--kubeconfig", "/k"]).unwrap();
        assert_eq!(cli.k8s.validate().unwrap_err().flag, "kube-qps");
        let cli = Cli::try_parse_from(["x", "--kube-burst", "0"]).unwrap();
        assert_eq!(cli.k8s.validate().unwrap_err().flag, "kube-burst");
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
