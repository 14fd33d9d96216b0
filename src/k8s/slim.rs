//! What the reflector caches keep of each object: only the fields `convert` reads. Fully deserialized
//! k8s-openapi objects are large (about 33 KB of heap per Pod, 18 KB per ReplicaSet, measured by
//! `hack/bench-rss.sh`), and at 20,000 pods the caches alone were 700 MiB; volumes, env, probes, container
//! statuses, images and pod templates are never read.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use kube::Resource;

/// Drops what the snapshot never reads from a cached object.
pub trait Slim: Resource {
    /// Slims `self` in place.
    fn slim(&mut self) {
        slim_metadata(self);
    }
}

fn slim_metadata<K: Resource + ?Sized>(object: &mut K) {
    object.meta_mut().managed_fields = None;
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// A container reduced to what requests are computed from.
fn slim_container(c: &Container) -> Container {
    Container {
        name: c.name.clone(),
        resources: c.resources.clone(),
        restart_policy: c.restart_policy.clone(),
        ..Container::default()
    }
}

/// A pod spec reduced to placement (node, node selector, required node affinity) and requests.
pub fn slim_pod_spec(spec: &PodSpec) -> PodSpec {
    PodSpec {
        node_name: spec.node_name.clone(),
        node_selector: spec.node_selector.clone(),
        affinity: spec.affinity.as_ref().map(|a| Affinity {
            node_affinity: a.node_affinity.clone(),
            ..Affinity::default()
        }),
        resources: spec.resources.clone(),
        containers: spec.containers.iter().map(slim_container).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|cs| cs.iter().map(slim_container).collect()),
        ..PodSpec::default()
    }
}

impl Slim for Pod {
    fn slim(&mut self) {
        slim_metadata(self);
        // Pod annotations are never read (deployments' are).
        self.metadata.annotations = None;
        self.spec = self.spec.as_ref().map(slim_pod_spec);
        self.status = self.status.as_ref().map(|s| PodStatus {
            phase: s.phase.clone(),
            start_time: s.start_time.clone(),
            conditions: s.conditions.as_ref().map(|cs| {
                cs.iter()
                    .filter(|c| c.type_ == "Ready")
                    .map(|c| PodCondition {
                        type_: c.type_.clone(),
                        status: c.status.clone(),
                        ..PodCondition::default()
                    })
                    .collect()
            }),
            ..PodStatus::default()
        });
    }
}

impl Slim for ReplicaSet {
    fn slim(&mut self) {
        slim_metadata(self);
        // Only the owner chain (metadata) is read; the pod template is most of a ReplicaSet.
        self.metadata.annotations = None;
        self.spec = None;
        self.status = None;
    }
}

impl Slim for Deployment {
    fn slim(&mut self) {
        slim_metadata(self);
        if let Some(spec) = self.spec.as_mut() {
            spec.template.metadata = None;
            spec.template.spec = spec.template.spec.as_ref().map(slim_pod_spec);
        }
        self.status = None;
    }
}

impl Slim for Node {
    fn slim(&mut self) {
        slim_metadata(self);
        self.metadata.annotations = None;
        self.status = self.status.as_ref().map(|s| NodeStatus {
            allocatable: s.allocatable.clone(),
            conditions: s.conditions.clone(),
            ..NodeStatus::default()
        });
    }
}

impl Slim for HorizontalPodAutoscaler {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::convert;

    fn fixture<T: serde::de::DeserializeOwned>(file: &str) -> Vec<T> {
        let path = format!("{}/tests/fixtures/k8s/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        let list: serde_json::Value = serde_json::from_str(&text).unwrap();
        serde_json::from_value(list["items"].clone()).unwrap()
    }

    fn size<T: serde::Serialize>(object: &T) -> usize {
        serde_json::to_vec(object).unwrap().len()
    }

    #[test]
    fn slimmed_objects_convert_exactly_like_the_originals() {
        let pods: Vec<Pod> = fixture("pods.json");
        assert!(!pods.is_empty());
        for pod in &pods {
            let mut slim = pod.clone();
            slim.slim();
            assert_eq!(
                convert::pod_info(&slim, Some("d".into())),
                convert::pod_info(pod, Some("d".into()))
            );
            assert!(size(&slim) < size(pod));
        }
        let deployments: Vec<Deployment> = fixture("deployments.json");
        let targets = Default::default();
        for d in &deployments {
            let mut slim = d.clone();
            slim.slim();
            // Everything but the last-applied-configuration annotation, which is dropped on purpose.
            let mut want = convert::deployment_info(d, &targets);
            want.annotations
                .remove("kubectl.kubernetes.io/last-applied-configuration");
            assert_eq!(convert::deployment_info(&slim, &targets), want);
        }
        let nodes: Vec<Node> = fixture("nodes.json");
        for n in &nodes {
            let mut slim = n.clone();
            slim.slim();
            assert_eq!(convert::node_info(&slim), convert::node_info(n));
        }
        let sets: Vec<ReplicaSet> = fixture("replicasets.json");
        for rs in &sets {
            let mut slim = rs.clone();
            slim.slim();
            assert_eq!(slim.metadata.owner_references, rs.metadata.owner_references);
            assert_eq!(slim.metadata.uid, rs.metadata.uid);
            assert!(size(&slim) * 3 < size(rs));
        }
    }
}
