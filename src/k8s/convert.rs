//! Pure conversions from the watched objects (as [`super::objects`] parses them) to the entries the caches
//! keep and to the plain structs of [`crate::domain::cluster`]. No IO here: everything is a function of the
//! objects passed in.

use std::collections::HashMap;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use super::objects::{Condition, PartialDeployment, PartialNode, PartialPod, PartialReplicaSet};
use crate::domain::cluster::{DeploymentInfo, NodeInfo, PodInfo};
use crate::domain::contract::{DEPLOYMENT_LABEL, METRICS};
use crate::domain::model::DeploymentKey;
use crate::domain::pod::{PodSpec, Resource};
use crate::domain::quantity::parse_cpu_milli;

/// `(namespace, name)` of a namespaced object.
pub type NamespacedName = (String, String);

/// What the adapter keeps of an HPA on our metric.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaTarget {
    /// The Deployment it scales (`scaleTargetRef.name`).
    pub deployment: String,
    /// Its `target.value` for our metric, percent.
    pub percent: f64,
    /// `spec.maxReplicas`: past it the HPA adds no capacity (the anomaly detectors' persistent high CPU).
    pub max_replicas: u32,
}

/// HPA targets on our metric, by `(namespace, deployment)`.
pub type HpaTargets = HashMap<NamespacedName, HpaTarget>;

fn controller_of<'a>(meta: &'a ObjectMeta, kind: &str) -> Option<&'a OwnerReference> {
    meta.owner_references
        .as_deref()?
        .iter()
        .find(|r| r.controller == Some(true) && r.kind == kind)
}

/// A controlling owner reference: name and uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Owner name.
    pub name: String,
    /// Owner uid.
    pub uid: String,
}

/// What the cache keeps of a ReplicaSet: its uid and controlling Deployment, the link of a pod's owner chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSetEntry {
    /// The ReplicaSet's uid.
    pub uid: Option<String>,
    /// Name of its controlling Deployment.
    pub deployment: Option<String>,
}

/// Converts a ReplicaSet.
pub fn replica_set_entry(rs: &PartialReplicaSet) -> ReplicaSetEntry {
    ReplicaSetEntry {
        uid: rs.metadata.uid.clone(),
        deployment: controller_of(&rs.metadata, "Deployment").map(|d| d.name.clone()),
    }
}

/// What the cache keeps of a Pod: its converted info (owner not yet resolved) and its controlling ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct PodEntry {
    /// The pod, `deployment` unset.
    pub info: PodInfo,
    /// Its controlling ReplicaSet.
    pub owner: Option<Owner>,
}

/// Converts a Pod.
pub fn pod_entry(pod: &PartialPod) -> PodEntry {
    PodEntry {
        info: pod_info(pod, None),
        owner: controller_of(&pod.metadata, "ReplicaSet").map(|r| Owner {
            name: r.name.clone(),
            uid: r.uid.clone(),
        }),
    }
}

/// Resolves a pod's owning Deployment through its controlling ReplicaSet. `replica_set` looks a ReplicaSet up
/// by name in the pod's namespace; its uid must match the pod's owner reference, so a ReplicaSet recreated
/// under the same name is not mistaken for the pod's owner.
pub fn owning_deployment<'a>(
    owner: Option<&Owner>,
    replica_set: impl Fn(&str) -> Option<&'a ReplicaSetEntry>,
) -> Option<String> {
    let owner = owner?;
    let rs = replica_set(&owner.name)?;
    if rs.uid.as_deref().is_some_and(|uid| uid != owner.uid) {
        return None;
    }
    rs.deployment.clone()
}

/// CPU (milli-cores) and memory (bytes) request of one pod as the HPA divides by it
/// ([`PodSpec::hpa_request`]): app containers plus sidecars, a limit standing in for a missing request, or the
/// pod-level request. Containers without either count as zero.
pub fn pod_requests(spec: &PodSpec) -> (i64, i64) {
    (
        spec.hpa_request(Resource::Cpu).total,
        spec.hpa_request(Resource::Memory).total,
    )
}

fn condition_true(conditions: Option<&[Condition]>, wanted: &str) -> bool {
    conditions
        .unwrap_or_default()
        .iter()
        .any(|c| c.type_ == wanted && c.status == "True")
}

/// Converts a Pod; `deployment` is its resolved owner (see [`owning_deployment`]).
pub fn pod_info(pod: &PartialPod, deployment: Option<String>) -> PodInfo {
    let status = pod.status.as_ref();
    let (cpu, memory) = pod.spec.as_ref().map(pod_requests).unwrap_or((0, 0));
    PodInfo {
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        name: pod.metadata.name.clone().unwrap_or_default(),
        deployment,
        node: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty()),
        phase: status
            .and_then(|s| s.phase.clone())
            .unwrap_or_else(|| "Pending".to_string()),
        ready: condition_true(status.and_then(|s| s.conditions.as_deref()), "Ready"),
        started_at: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_millisecond()),
        cpu_request_milli: cpu,
        memory_request_bytes: memory,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        unschedulable: status
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
            .iter()
            .any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            }),
    }
}

/// Converts a Deployment; `hpa_target_percent` and `hpa_max_replicas` are left unset (the snapshot fills them
/// from [`hpa_targets`]).
pub fn deployment_info(deployment: &PartialDeployment) -> DeploymentInfo {
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let spec = deployment.spec.as_ref();
    let pod = spec.and_then(|s| s.template.spec.as_ref());
    let (cpu, memory) = pod.map(pod_requests).unwrap_or((0, 0));
    DeploymentInfo {
        key: DeploymentKey::new(namespace, name),
        // The apiserver defaults `spec.replicas` to 1.
        replicas: spec
            .and_then(|s| s.replicas)
            .map_or(1, |r| u32::try_from(r).unwrap_or(0)),
        annotations: deployment.metadata.annotations.clone().unwrap_or_default(),
        node_selector: pod
            .and_then(|p| p.node_selector.clone())
            .unwrap_or_default(),
        required_affinity: pod.map(PodSpec::required_node_affinity).unwrap_or_default(),
        pod_cpu_request_milli: cpu,
        pod_memory_request_bytes: memory,
        hpa_target_percent: None,
        hpa_max_replicas: None,
    }
}

/// Converts a Node.
pub fn node_info(node: &PartialNode) -> NodeInfo {
    let status = node.status.as_ref();
    NodeInfo {
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: node.metadata.labels.clone().unwrap_or_default(),
        ready: condition_true(status.and_then(|s| s.conditions.as_deref()), "Ready"),
        schedulable: !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        allocatable_cpu_milli: status
            .and_then(|s| s.allocatable.as_ref())
            .and_then(|a| a.get("cpu"))
            .and_then(|q| parse_cpu_milli(&q.0))
            .unwrap_or(0),
    }
}
/// The value a label selector pins the `deployment` label to: `matchLabels.deployment`, or a
/// `matchExpressions` `In` requirement with exactly one value.
fn pinned_deployment(selector: &LabelSelector) -> Option<&str> {
    if let Some(v) = selector
        .match_labels
        .as_ref()
        .and_then(|l| l.get(DEPLOYMENT_LABEL))
    {
        return Some(v);
    }
    selector
        .match_expressions
        .iter()
        .flatten()
        .find_map(|r| match r.values.as_deref() {
            Some([one]) if r.key == DEPLOYMENT_LABEL && r.operator == "In" => Some(one.as_str()),
            _ => None,
        })
}

/// The target of an HPA on our metric, if it is one: `scaleTargetRef` is a Deployment, and one of its metrics
/// is `External`, named `smart_cpu_utilization` or `smart_cpu_utilization_raw`, with a selector that pins
/// `deployment` to the target's name and a `target.value`.
pub fn hpa_target(hpa: &HorizontalPodAutoscaler) -> Option<HpaTarget> {
    let spec = hpa.spec.as_ref()?;
    let target = &spec.scale_target_ref;
    if target.kind != "Deployment" {
        return None;
    }
    spec.metrics.iter().flatten().find_map(|m| {
        let external = m.external.as_ref().filter(|_| m.type_ == "External")?;
        let metric = &external.metric;
        if !METRICS.contains(&metric.name.as_str())
            || metric.selector.as_ref().and_then(pinned_deployment) != Some(target.name.as_str())
        {
            return None;
        }
        let value = external.target.value.as_ref()?;
        let percent = parse_cpu_milli(&value.0)? as f64 / 1000.0;
        Some(HpaTarget {
            deployment: target.name.clone(),
            percent,
            max_replicas: u32::try_from(spec.max_replicas).unwrap_or(0),
        })
    })
}

/// HPA targets by `(namespace, deployment)`, from each HPA's `(namespace, name)` and [`hpa_target`]. When
/// several HPAs claim one Deployment (itself a misconfiguration the HPA controller reports), the one whose name
/// sorts first wins, so the result does not depend on cache order.
pub fn hpa_targets<'a>(
    hpas: impl IntoIterator<Item = (&'a NamespacedName, &'a Option<HpaTarget>)>,
) -> HpaTargets {
    let mut sorted: Vec<_> = hpas.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut targets = HpaTargets::new();
    for ((namespace, _), target) in sorted {
        if let Some(t) = target {
            targets
                .entry((namespace.clone(), t.deployment.clone()))
                .or_insert_with(|| t.clone());
        }
    }
    targets
}
#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    fn pod() -> PartialPod {
        from(json!({
            "metadata": {
                "name": "api-7d9f8b6c5d-x2x4q", "namespace": "shop", "uid": "p1",
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "api-7d9f8b6c5d", "uid": "rs1",
                     "controller": true, "blockOwnerDeletion": true}
                ]
            },
            "spec": {
                "nodeName": "n1",
                "initContainers": [
                    {"name": "migrate", "image": "m", "resources": {"requests": {"cpu": "1", "memory": "1Gi"}}},
                    {"name": "proxy", "image": "p", "restartPolicy": "Always",
                     "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}
                ],
                "containers": [
                    {"name": "app", "image": "a", "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}}},
                    {"name": "log", "image": "l", "resources": {"limits": {"cpu": "50m", "memory": "32Mi"}}},
                    {"name": "none", "image": "n"}
                ]
            },
            "status": {
                "phase": "Running", "startTime": "2025-06-01T10:00:00Z",
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}]
            }
        }))
    }

    fn replica_set(uid: &str) -> PartialReplicaSet {
        from(json!({
            "metadata": {
                "name": "api-7d9f8b6c5d", "namespace": "shop", "uid": uid,
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d1", "controller": true}
                ]
            }
        }))
    }

    #[test]
    fn pod_requests_count_sidecars_not_plain_init_containers() {
        let p = pod_info(&pod(), Some("api".into()));
        assert_eq!(p.cpu_request_milli, 250 + 50 + 100);
        assert_eq!(p.memory_request_bytes, (256 + 32 + 64) << 20);
        assert_eq!(p.node.as_deref(), Some("n1"));
        assert!(p.ready);
        assert!(!p.terminating);
        assert_eq!(p.started_at, Some(1_748_772_000_000));
        assert_eq!(p.phase, "Running");
    }

    #[test]
    fn a_pod_the_scheduler_could_not_place_is_unschedulable() {
        assert!(!pod_info(&pod(), None).unschedulable);
        let pending = |reason: &str| -> PartialPod {
            from(json!({
                "metadata": {"name": "api-x", "namespace": "shop"},
                "spec": {"containers": [{"name": "app", "image": "a"}]},
                "status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": reason,
                     "message": "0/3 nodes are available: 3 Insufficient cpu."}
                ]}
            }))
        };
        assert!(pod_info(&pending("Unschedulable"), None).unschedulable);
        // Held back on purpose by a scheduling gate: not a capacity problem.
        assert!(!pod_info(&pending("SchedulingGated"), None).unschedulable);
    }

    #[test]
    fn pod_level_resources_win() {
        let mut p = pod();
        p.spec.as_mut().unwrap().resources =
            Some(from(json!({"requests": {"cpu": "2", "memory": "1Gi"}})));
        assert_eq!(pod_requests(p.spec.as_ref().unwrap()), (2000, 1 << 30));
    }

    #[test]
    fn owner_chain_goes_through_the_replica_set() {
        let rs = replica_set_entry(&replica_set("rs1"));
        assert_eq!(rs.deployment.as_deref(), Some("api"));
        let lookup = |name: &str| (name == "api-7d9f8b6c5d").then_some(&rs);
        let entry = pod_entry(&pod());
        assert_eq!(entry.info.deployment, None);
        assert_eq!(
            owning_deployment(entry.owner.as_ref(), lookup).as_deref(),
            Some("api")
        );
        let other = replica_set_entry(&replica_set("rs-recreated"));
        assert_eq!(
            owning_deployment(entry.owner.as_ref(), |_: &str| Some(&other)),
            None
        );
        assert_eq!(
            owning_deployment(entry.owner.as_ref(), |_: &str| None),
            None
        );
        let mut orphan = pod();
        orphan.metadata.owner_references = None;
        assert_eq!(pod_entry(&orphan).owner, None);
        assert_eq!(owning_deployment(None, lookup), None);
    }

    fn hpa(metric: &str, selector: serde_json::Value, kind: &str) -> HorizontalPodAutoscaler {
        from(json!({
            "metadata": {"name": "api", "namespace": "shop"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": "api"},
                "minReplicas": 2, "maxReplicas": 10,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "External", "external": {
                        "metric": {"name": metric, "selector": selector},
                        "target": {"type": "Value", "value": "70"}}}
                ]
            }
        }))
    }

    #[test]
    fn hpa_on_our_metric_is_found() {
        let labels = json!({"matchLabels": {"deployment": "api"}});
        assert_eq!(
            hpa_target(&hpa("smart_cpu_utilization", labels.clone(), "Deployment")),
            Some(HpaTarget {
                deployment: "api".into(),
                percent: 70.0,
                max_replicas: 10
            })
        );
        let expr = json!({"matchExpressions": [{"key": "deployment", "operator": "In", "values": ["api"]}]});
        assert_eq!(
            hpa_target(&hpa("smart_cpu_utilization_raw", expr, "Deployment")).map(|t| t.percent),
            Some(70.0)
        );
        assert_eq!(
            hpa_target(&hpa("other_metric", labels.clone(), "Deployment")),
            None
        );
        assert_eq!(
            hpa_target(&hpa("smart_cpu_utilization", labels, "StatefulSet")),
            None
        );
        let wrong = json!({"matchLabels": {"deployment": "web"}});
        assert_eq!(
            hpa_target(&hpa("smart_cpu_utilization", wrong, "Deployment")),
            None
        );
        let two = json!({"matchExpressions": [{"key": "deployment", "operator": "In", "values": ["api", "web"]}]});
        assert_eq!(
            hpa_target(&hpa("smart_cpu_utilization", two, "Deployment")),
            None
        );
    }

    #[test]
    fn milli_target_values_become_percent() {
        let mut h = hpa(
            "smart_cpu_utilization",
            json!({"matchLabels": {"deployment": "api"}}),
            "Deployment",
        );
        let metrics = h.spec.as_mut().unwrap().metrics.as_mut().unwrap();
        metrics[1].external.as_mut().unwrap().target.value = Some(Quantity("65500m".into()));
        let key = ("shop".to_string(), "api".to_string());
        let target = hpa_target(&h);
        let mut other = h.clone();
        other.spec.as_mut().unwrap().metrics.as_mut().unwrap()[1]
            .external
            .as_mut()
            .unwrap()
            .target
            .value = Some(Quantity("80".into()));
        let later = ("shop".to_string(), "zz-api".to_string());
        let other = hpa_target(&other);
        // Two HPAs on one deployment: the first by name wins, whatever the order given.
        let targets = hpa_targets([(&later, &other), (&key, &target)]);
        assert_eq!(targets.get(&key).map(|t| t.percent), Some(65.5));
    }

    #[test]
    fn deployment_template_fields() {
        let d: PartialDeployment = from(json!({
            "metadata": {"name": "api", "namespace": "shop", "annotations": {"a": "b"}},
            "spec": {
                "selector": {"matchLabels": {"app": "api"}},
                "template": {
                    "metadata": {"labels": {"app": "api"}},
                    "spec": {
                        "nodeSelector": {"pool": "general"},
                        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]},
                                                      {"key": "spot", "operator": "DoesNotExist"}]}
                            ]}}},
                        "containers": [{"name": "app", "resources": {"requests": {"cpu": "500m", "memory": "1G"}}}]
                    }
                }
            }
        }));
        let info = deployment_info(&d);
        assert_eq!(info.replicas, 1);
        assert_eq!(info.pod_cpu_request_milli, 500);
        assert_eq!(info.pod_memory_request_bytes, 1_000_000_000);
        assert_eq!(
            info.node_selector.get("pool").map(String::as_str),
            Some("general")
        );
        assert_eq!(info.required_affinity.len(), 1);
        assert_eq!(info.required_affinity[0][0].values, vec!["a", "b"]);
        assert!(info.required_affinity[0][1].values.is_empty());
        assert_eq!(info.hpa_target_percent, None);
    }

    #[test]
    fn cordoned_node_is_not_schedulable() {
        let n: PartialNode = from(json!({
            "metadata": {"name": "n1", "labels": {"pool": "general"}},
            "spec": {"unschedulable": true},
            "status": {"allocatable": {"cpu": "3920m"},
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        let info = node_info(&n);
        assert!(!info.schedulable);
        assert!(info.ready);
        assert_eq!(info.allocatable_cpu_milli, 3920);
    }
}
