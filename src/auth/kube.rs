//! The Kubernetes side of delegated auth: `TokenReview` and `SubjectAccessReview` calls (bounded by
//! [`REVIEW_TIMEOUT`]), and the watch on `kube-system/extension-apiserver-authentication` that keeps the CAs and
//! header names current.
//!
//! RBAC: `create` on `tokenreviews` and `subjectaccessreviews` (the `system:auth-delegator` ClusterRole) and
//! `get`, `list`, `watch` on that ConfigMap (the `extension-apiserver-authentication-reader` Role in kube-system).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, PostParams};
use ::kube::runtime::{WatchStreamExt, watcher};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use tokio_util::sync::CancellationToken;

use super::{Auth, AuthnConfig, Decision, ReviewError, User};

/// How long one review may take (the k8s.io/apiserver default webhook timeout).
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// Namespace and name of the ConfigMap kube-apiserver publishes.
pub const CONFIGMAP_NAMESPACE: &str = "kube-system";
/// See [`CONFIGMAP_NAMESPACE`].
pub const CONFIGMAP_NAME: &str = "extension-apiserver-authentication";
/// How often --requestheader-client-ca-file is re-read for changes.
const OVERRIDE_POLL: Duration = Duration::from_secs(10);

/// Asks the Kubernetes API about tokens and access.
#[derive(Clone)]
pub struct Reviewer {
    client: Client,
}

impl Reviewer {
    /// Over `client`.
    pub fn new(client: Client) -> Self {
        Reviewer { client }
    }

    /// The user a token belongs to; `None` if the API says it is not authenticated.
    pub async fn token_review(&self, token: &str) -> Result<Option<User>, ReviewError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                ..TokenReviewSpec::default()
            },
            ..TokenReview::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| {
                    ReviewError(format!(
                        "TokenReview not answered within {REVIEW_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| ReviewError(format!("TokenReview: {e}")))?;
        let Some(status) = answer.status else {
            return Ok(None);
        };
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let Some(info) = status.user else {
            return Ok(None);
        };
        Ok(Some(User {
            name: info.username.unwrap_or_default(),
            uid: info.uid.unwrap_or_default(),
            groups: info.groups.unwrap_or_default(),
            extra: info.extra.unwrap_or_default(),
        }))
    }

    /// Whether the API allows what `spec` describes.
    pub async fn subject_access_review(
        &self,
        spec: SubjectAccessReviewSpec,
    ) -> Result<Decision, ReviewError> {
        let review = SubjectAccessReview {
            spec,
            ..SubjectAccessReview::default()
        };
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let answer =
            tokio::time::timeout(REVIEW_TIMEOUT, api.create(&PostParams::default(), &review))
                .await
                .map_err(|_| {
                    ReviewError(format!(
                        "SubjectAccessReview not answered within {REVIEW_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| ReviewError(format!("SubjectAccessReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        Ok(if status.allowed && status.denied != Some(true) {
            Decision::Allow
        } else {
            Decision::Deny(status.reason.unwrap_or_default())
        })
    }
}

/// Follows the ConfigMap until `cancel`, handing every change to `auth` (with --requestheader-client-ca-file, when
/// given, in place of the ConfigMap's request-header CA, re-read every 10 s). A ConfigMap that does not load
/// leaves the previous configuration in force.
pub async fn follow(
    client: Client,
    auth: Arc<Auth>,
    request_header_ca_file: Option<PathBuf>,
    cancel: CancellationToken,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, CONFIGMAP_NAMESPACE);
    let config = watcher::Config::default().fields(&format!("metadata.name={CONFIGMAP_NAME}"));
    let stream = watcher(api, config).default_backoff().applied_objects();
    tokio::pin!(stream);
    let read_override = || {
        request_header_ca_file
            .as_ref()
            .map(|path| std::fs::read(path).unwrap_or_default())
    };
    let mut data: Option<BTreeMap<String, String>> = None;
    let mut override_pem = read_override();
    let mut failing = false;
    let mut poll = tokio::time::interval(OVERRIDE_POLL);
    poll.tick().await;
    // Without the ConfigMap, the override alone still authenticates the front proxy.
    if override_pem.is_some() {
        apply(&auth, &BTreeMap::new(), override_pem.as_deref());
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = poll.tick(), if request_header_ca_file.is_some() => {
                let now = read_override();
                if now != override_pem {
                    override_pem = now;
                    apply(&auth, data.as_ref().unwrap_or(&BTreeMap::new()), override_pem.as_deref());
                }
            }
            event = next(stream.as_mut()) => match event {
                Some(Ok(configmap)) => {
                    if failing {
                        tracing::info!("reading {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} again");
                        failing = false;
                    }
                    let now = configmap.data.unwrap_or_default();
                    if data.as_ref() != Some(&now) {
                        apply(&auth, &now, override_pem.as_deref());
                        data = Some(now);
                    }
                }
                Some(Err(error)) => {
                    if !failing {
                        tracing::warn!(
                            %error,
                            "cannot read {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: client certificates are not \
                             authenticated until it is read (the service account needs the \
                             extension-apiserver-authentication-reader Role); retrying"
                        );
                        failing = true;
                    }
                }
                None => return,
            },
        }
    }
}

fn apply(auth: &Auth, data: &BTreeMap<String, String>, request_header_ca: Option<&[u8]>) {
    match AuthnConfig::from_data(data, request_header_ca.filter(|p| !p.is_empty())) {
        Ok(config) => {
            tracing::info!(
                client_ca = config.client_ca.is_some(),
                request_header = config.request_header.is_some(),
                "authentication configuration loaded from {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}"
            );
            auth.set_config(config);
        }
        Err(error) => tracing::warn!(
            %error,
            "{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME} does not load; keeping the previous configuration"
        ),
    }
}

/// The next item of a kube-runtime stream, polled through [`WatchStreamExt`] (whose supertrait is
/// `futures::Stream`; this crate has no direct `futures` dependency).
async fn next<S>(mut stream: Pin<&mut S>) -> Option<S::Item>
where
    S: WatchStreamExt + ?Sized,
{
    std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await
}
