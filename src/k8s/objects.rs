//! Partial API objects: the watched kinds deserialized with only the fields [`super::convert`] reads.
//!
//! A fully deserialized k8s-openapi Pod holds about 33 KB of heap (managed fields, volumes, env, probes,
//! container statuses), a ReplicaSet about 18 KB (its pod template), measured by `hack/bench-rss.sh`; at
//! 20,000 pods a list page of 500 allocated ~16 MB only to throw almost all of it away. These types name the
//! same API resources (group, version, kind and plural come from the k8s-openapi type) but serde skips every
//! other field while parsing, without allocating for it. Their conversion into cache entries is in `convert`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Deserializer};

use crate::domain::pod::PodSpec;

/// Annotation `kubectl apply` writes: a copy of the whole object, never read here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The metadata fields the adapter reads (and the resourceVersion the watcher resumes from); managed fields and
/// the rest are skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MetaFields {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<OwnerReference>>,
    deletion_timestamp: Option<Time>,
}

fn partial_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    let f = MetaFields::deserialize(deserializer)?;
    let mut annotations = f.annotations;
    if let Some(a) = annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
    Ok(ObjectMeta {
        name: f.name,
        namespace: f.namespace,
        uid: f.uid,
        resource_version: f.resource_version,
        labels: f.labels,
        annotations,
        owner_references: f.owner_references,
        deletion_timestamp: f.deletion_timestamp,
        ..ObjectMeta::default()
    })
}

/// `type` and `status` of a Pod or Node condition.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Condition {
    /// Condition type (`Ready`, ...).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one CamelCase word (`Unschedulable`, ...), when given.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Pod status: phase, start and conditions.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusFields {
    /// `Pending`, `Running`, ...
    pub phase: Option<String>,
    /// When the kubelet acknowledged the pod.
    pub start_time: Option<Time>,
    /// Conditions.
    pub conditions: Option<Vec<Condition>>,
}

/// A Pod.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartialPod {
    /// Metadata.
    #[serde(deserialize_with = "partial_meta", default)]
    pub metadata: ObjectMeta,
    /// Spec: the one partial pod spec of [`crate::domain::pod`], which computes the requests.
    pub spec: Option<PodSpec>,
    /// Status.
    pub status: Option<PodStatusFields>,
}

/// A ReplicaSet: metadata only (the owner chain); the pod template is most of a ReplicaSet.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartialReplicaSet {
    /// Metadata.
    #[serde(deserialize_with = "partial_meta", default)]
    pub metadata: ObjectMeta,
}

/// A Deployment's pod template.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TemplateFields {
    /// The template's pod spec.
    pub spec: Option<PodSpec>,
}

/// A Deployment's spec.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeploymentSpecFields {
    /// `spec.replicas` (the apiserver defaults it to 1).
    pub replicas: Option<i32>,
    /// Pod template.
    #[serde(default)]
    pub template: TemplateFields,
}

/// A Deployment.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartialDeployment {
    /// Metadata (annotations are read).
    #[serde(deserialize_with = "partial_meta", default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: Option<DeploymentSpecFields>,
}

/// A Node's spec.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeSpecFields {
    /// Cordoned.
    pub unschedulable: Option<bool>,
}

/// A Node's status.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NodeStatusFields {
    /// Allocatable resources.
    pub allocatable: Option<BTreeMap<String, Quantity>>,
    /// Conditions.
    pub conditions: Option<Vec<Condition>>,
}

/// A Node.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PartialNode {
    /// Metadata (labels are read).
    #[serde(deserialize_with = "partial_meta", default)]
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: Option<NodeSpecFields>,
    /// Status.
    pub status: Option<NodeStatusFields>,
}

/// Makes a partial type name the same API resource as its k8s-openapi type.
macro_rules! partial_of {
    ($partial:ty, $full:ty) => {
        impl kube::Resource for $partial {
            type DynamicType = ();
            type Scope = <$full as k8s_openapi::Resource>::Scope;

            fn kind(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::KIND.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::VERSION.into()
            }
            fn api_version(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::API_VERSION.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

partial_of!(PartialPod, k8s_openapi::api::core::v1::Pod);
partial_of!(PartialReplicaSet, k8s_openapi::api::apps::v1::ReplicaSet);
partial_of!(PartialDeployment, k8s_openapi::api::apps::v1::Deployment);
partial_of!(PartialNode, k8s_openapi::api::core::v1::Node);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::Resource;

    #[test]
    fn partial_types_address_the_same_resources() {
        assert_eq!(PartialPod::url_path(&(), None), Pod::url_path(&(), None));
        assert_eq!(
            PartialDeployment::url_path(&(), Some("shop")),
            Deployment::url_path(&(), Some("shop"))
        );
        assert_eq!(PartialReplicaSet::kind(&()), "ReplicaSet");
        assert_eq!(PartialNode::api_version(&()), "v1");
        assert_eq!(PartialNode::plural(&()), "nodes");
    }

    #[test]
    fn metadata_keeps_what_is_read_and_drops_the_rest() {
        let pod: PartialPod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "a"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "me"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                   "fieldsV1": {"f:spec": {}}}],
                "deletionTimestamp": "2025-06-01T10:00:00Z"
            },
            "spec": {"containers": [{"name": "c", "image": "i", "env": [{"name": "X", "value": "1"}]}]}
        }))
        .unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert!(meta.managed_fields.is_none());
        assert!(meta.deletion_timestamp.is_some());
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["keep"], "me");
        assert_eq!(pod.spec.unwrap().containers.len(), 1);
    }
}
