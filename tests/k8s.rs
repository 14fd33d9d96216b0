//! The Kubernetes adapter (`smart_autoscaler::k8s`) against a recorded API.
//!
//! This is a recorded-API test: no kube-apiserver (nor kind, nor envtest) exists on the machines these tests
//! run on, so a small fake apiserver (axum, plain HTTP on 127.0.0.1) serves list and watch responses from
//! `tests/fixtures/k8s/`. The fixtures are in the apiserver's wire format: `*.json` are `…List` objects (items
//! without `kind`/`apiVersion`, list `metadata.resourceVersion` set) with full metadata, spec and status;
//! `*-watch.jsonl` are newline-delimited watch events (`ADDED`/`MODIFIED`/`BOOKMARK`) with resourceVersions after
//! the lists'. The client is the real one from `k8s::client` (kubeconfig file, token bucket, kube-rs reflectors),
//! so the requests it makes (one list, then `watch=true&resourceVersion=…&allowWatchBookmarks=true`) are
//! recorded and checked too.
//!
//! Watch events are held back until the test releases them, so the snapshot is asserted before and after a pod
//! is added (scale-up 3 → 4 of `shop/api`) and a node is cordoned.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use smart_autoscaler::domain::cluster::{self, ClusterSnapshot, JoinConfig, PodInfo, Usage};
use smart_autoscaler::domain::model::DeploymentInputs;
use smart_autoscaler::k8s::{self, ClusterWatch};

mod common;
use common::fake_apiserver::{LIST_RV, N1, N2, N3, NOW, Seen, start};
use tokio_util::sync::CancellationToken;

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pod<'a>(s: &'a ClusterSnapshot, name: &str) -> &'a PodInfo {
    s.pods
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("pod {name} missing"))
}

fn inputs<'a>(
    obs: &'a smart_autoscaler::domain::model::Observation,
    name: &str,
) -> &'a DeploymentInputs {
    obs.deployments
        .iter()
        .find(|d| d.key.name == name)
        .unwrap_or_else(|| panic!("deployment {name} not observed"))
}

fn usage() -> Usage {
    let k = |p: &str| ("shop".to_string(), p.to_string());
    let api_pods = [
        "api-7c9d8f6b5d-4kq2x",
        "api-7c9d8f6b5d-9wz7m",
        "api-7c9d8f6b5d-hx5tn",
    ];
    // web's pods: 0.05 cores of 200m, 25% (unknown usage would leave web unmeasured, without inputs).
    let web_pods = ["web-6d8f9c7b4a-tq7vp", "web-6d8f9c7b4a-l2m8s"];
    let cpu = || {
        api_pods
            .iter()
            .map(|p| (k(p), 0.245))
            .chain(web_pods.iter().map(|p| (k(p), 0.05)))
            .collect()
    };
    Usage {
        // 0.245 cores of a 350m request: 70%.
        pod_cpu_10m: cpu(),
        pod_cpu_5m: cpu(),
        node_cpu_percent: [(N1, 50.0), (N2, 70.0), (N3, 10.0)]
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        ..Default::default()
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflectors_follow_lists_and_watches() {
    let harness = start(Vec::new()).await;
    let client = k8s::client(Some(&harness.kubeconfig), 50.0, 20)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let cluster = ClusterWatch::start(client, cancel.clone(), Duration::from_secs(10));
    eventually("initial lists", || cluster.ready()).await;

    // ---------------------------------------------------------------- before the watch events
    let before = cluster.snapshot();
    let names: Vec<&str> = before.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, [N1, N2, N3]);
    assert!(before.nodes.iter().all(|n| n.ready && n.schedulable));
    assert_eq!(
        before
            .nodes
            .iter()
            .map(|n| n.allocatable_cpu_milli)
            .collect::<Vec<_>>(),
        [3920, 3920, 7910]
    );
    assert_eq!(before.nodes[2].labels["pool"], "compute");

    let keys: Vec<String> = before
        .deployments
        .iter()
        .map(|d| d.key.to_string())
        .collect();
    assert_eq!(keys, ["kube-system/coredns", "shop/api", "shop/web"]);
    let (coredns, api, web) = (
        &before.deployments[0],
        &before.deployments[1],
        &before.deployments[2],
    );
    assert!(!coredns.managed());
    assert_eq!((coredns.replicas, coredns.pod_cpu_request_milli), (2, 100));
    // HPA on smart_cpu_utilization with matchLabels deployment=api and target.value "70".
    assert_eq!(api.hpa_target_percent, Some(70.0));
    assert!(api.managed());
    assert_eq!(api.replicas, 3);
    // app 250m/256Mi + restartable init container envoy 100m/128Mi; the run-once init container is not counted.
    assert_eq!(api.pod_cpu_request_milli, 350);
    assert_eq!(api.pod_memory_request_bytes, 384 << 20);
    assert_eq!(
        api.node_selector,
        BTreeMap::from([("pool".to_string(), "general".to_string())])
    );
    assert!(api.required_affinity.is_empty());
    // The reflectors drop last-applied-configuration (and managedFields) before storing.
    assert!(
        !api.annotations
            .contains_key("kubectl.kubernetes.io/last-applied-configuration")
    );
    assert_eq!(api.annotations["deployment.kubernetes.io/revision"], "7");
    // `web`: managed by annotation only; the `worker` HPA pins deployment=web but scales `worker`.
    assert_eq!(web.hpa_target_percent, None);
    assert!(web.managed());
    assert_eq!(web.required_affinity.len(), 1);
    assert_eq!(web.required_affinity[0].len(), 2);
    assert_eq!(web.required_affinity[0][0].values, ["general", "compute"]);
    assert_eq!(
        (web.pod_cpu_request_milli, web.pod_memory_request_bytes),
        (200, 128 << 20)
    );

    assert_eq!(before.pods.len(), 12);
    let hx5tn = pod(&before, "api-7c9d8f6b5d-hx5tn");
    assert_eq!(hx5tn.deployment.as_deref(), Some("api"));
    assert_eq!(hx5tn.node.as_deref(), Some(N2));
    assert_eq!(
        (hx5tn.phase.as_str(), hx5tn.ready, hx5tn.terminating),
        ("Running", true, false)
    );
    assert_eq!(hx5tn.started_at, Some(1_748_769_301_000)); // 2025-06-01T09:15:01Z
    assert_eq!(
        (hx5tn.cpu_request_milli, hx5tn.memory_request_bytes),
        (350, 384 << 20)
    );
    assert_eq!(
        pod(&before, "coredns-668d6bf9bc-7xkq2")
            .deployment
            .as_deref(),
        Some("coredns")
    );
    // DaemonSet and Job pods have no Deployment.
    assert_eq!(pod(&before, "kube-proxy-4vh9c").deployment, None);
    assert_eq!(pod(&before, "kube-proxy-4vh9c").memory_request_bytes, 0);
    let job = pod(&before, "report-29152800-q8wzs");
    assert_eq!(
        (job.deployment.as_deref(), job.phase.as_str()),
        (None, "Succeeded")
    );
    let deleting = pod(&before, "web-6d8f9c7b4a-x9c4k");
    assert!(deleting.terminating);
    assert_eq!(deleting.deployment.as_deref(), Some("web"));

    let obs = cluster::join(&before, &usage(), NOW, &JoinConfig::default());
    assert_eq!(
        obs.deployments
            .iter()
            .map(|d| d.key.to_string())
            .collect::<Vec<_>>(),
        ["shop/api", "shop/web"]
    );
    let a = inputs(&obs, "api");
    assert_eq!(a.base_target_percent, 70.0);
    assert!(
        close(a.cpu_utilization_percent, 70.0),
        "{}",
        a.cpu_utilization_percent
    );
    assert_eq!(
        (
            a.replicas,
            a.ready_pods,
            a.starting_pods,
            a.recent_pod_starts
        ),
        (3, 3, 0, 0)
    );
    assert_eq!(a.pool.name, "pool=general");
    assert_eq!(a.pool.nodes, 2);
    // N1: api 2×350 + coredns 100 + kube-proxy 100 + terminating web 200 = 1100; N2: api 350 + web 200 +
    // kube-proxy 100 = 650; over 2×3920 allocatable.
    assert!(
        close(a.pool.requested_cpu_percent, 1750.0 / 7840.0 * 100.0),
        "{}",
        a.pool.requested_cpu_percent
    );
    assert!(close(a.pool.measured_cpu_percent.unwrap(), 60.0));
    let w = inputs(&obs, "web");
    assert_eq!((w.pool.name.as_str(), w.pool.nodes), ("affinity", 3));
    assert_eq!(w.base_target_percent, 70.0);
    assert_eq!(w.startup_filter_seconds, 30);

    // ---------------------------------------------------------------- release the watch events
    harness.release.send(true).unwrap();
    eventually("the scale-up and the cordon", || {
        let s = cluster.snapshot();
        s.pods
            .iter()
            .any(|p| p.name == "api-7c9d8f6b5d-zt6rp" && p.phase == "Running")
            && s.nodes.iter().any(|n| n.name == N2 && !n.schedulable)
            && s.deployments
                .iter()
                .any(|d| d.key.name == "api" && d.replicas == 4)
    })
    .await;
    let after = cluster.snapshot();
    assert_eq!(after.pods.len(), 13);
    let new = pod(&after, "api-7c9d8f6b5d-zt6rp");
    assert_eq!(new.deployment.as_deref(), Some("api"));
    assert_eq!(new.node.as_deref(), Some(N2));
    assert!(!new.ready);
    assert_eq!(new.started_at, Some(NOW - 18_000)); // 2025-06-01T11:59:42Z
    assert_eq!(new.cpu_request_milli, 350);
    let n2 = after.nodes.iter().find(|n| n.name == N2).unwrap();
    assert!(!n2.schedulable && n2.ready);
    assert!(
        after
            .nodes
            .iter()
            .filter(|n| n.name != N2)
            .all(|n| n.schedulable)
    );
    let api = after
        .deployments
        .iter()
        .find(|d| d.key.name == "api")
        .unwrap();
    assert_eq!((api.replicas, api.hpa_target_percent), (4, Some(70.0)));

    let obs = cluster::join(&after, &usage(), NOW, &JoinConfig::default());
    let a = inputs(&obs, "api");
    assert_eq!(
        (
            a.replicas,
            a.ready_pods,
            a.starting_pods,
            a.recent_pod_starts
        ),
        (4, 3, 1, 1)
    );
    // The cordoned node leaves the pool: only N1 remains.
    assert_eq!((a.pool.name.as_str(), a.pool.nodes), ("pool=general", 1));
    assert!(
        close(a.pool.requested_cpu_percent, 1100.0 / 3920.0 * 100.0),
        "{}",
        a.pool.requested_cpu_percent
    );
    assert!(close(a.pool.measured_cpu_percent.unwrap(), 50.0));
    assert!(close(a.cpu_utilization_percent, 70.0));
    let w = inputs(&obs, "web");
    assert_eq!(w.pool.nodes, 2);
    assert!(close(
        w.pool.requested_cpu_percent,
        1500.0 / 11830.0 * 100.0
    ));

    // ---------------------------------------------------------------- the requests: one list, then watches
    let health = cluster.health();
    assert!(health.ready && health.pending.is_empty(), "{health:?}");
    assert_eq!((health.errors, health.last_error.as_deref()), (0, None));
    let seen = harness.api.seen.lock().unwrap().clone();
    for c in &harness.api.collections {
        let requests: Vec<&Seen> = seen.iter().filter(|s| s.path == c.path).collect();
        let lists: Vec<&&Seen> = requests.iter().filter(|s| !s.is_watch()).collect();
        assert_eq!(lists.len(), 1, "{}: {requests:?}", c.path);
        let watches: Vec<&&Seen> = requests.iter().filter(|s| s.is_watch()).collect();
        assert!(!watches.is_empty(), "{}: {requests:?}", c.path);
        for w in watches {
            assert_eq!(
                w.query.get("resourceVersion").map(String::as_str),
                Some(LIST_RV),
                "{w:?}"
            );
            assert_eq!(
                w.query.get("allowWatchBookmarks").map(String::as_str),
                Some("true"),
                "{w:?}"
            );
        }
    }

    cluster.shutdown(&cancel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_kind_keeps_the_watch_unready_with_the_error() {
    let harness = start(vec!["/apis/autoscaling/v2/horizontalpodautoscalers"]).await;
    let client = k8s::client(Some(&harness.kubeconfig), 50.0, 20)
        .await
        .unwrap();
    let cancel = CancellationToken::new();
    let cluster = ClusterWatch::start(client, cancel.clone(), Duration::from_secs(10));
    eventually("an error to be recorded", || cluster.error_count() > 0).await;
    eventually("the other kinds to sync", || {
        cluster.health().pending == ["HorizontalPodAutoscaler"]
    })
    .await;
    assert!(!cluster.ready());
    let health = cluster.health();
    let last = health.last_error.unwrap();
    assert!(last.starts_with("HorizontalPodAutoscaler: "), "{last}");
    assert!(last.contains("forbidden"), "{last}");
    // The other stores are usable meanwhile; without HPAs nothing is managed by HPA.
    let snapshot = cluster.snapshot();
    assert_eq!(snapshot.nodes.len(), 3);
    assert!(
        snapshot
            .deployments
            .iter()
            .all(|d| d.hpa_target_percent.is_none())
    );
    cancel.cancel();
    cluster.shutdown(&cancel).await;
}

/// The three readers of a pod spec agree on its CPU request for a pod whose container has a CPU limit and no
/// request (the apiserver defaults such a request to the limit): the webhook's `target-utilization` reason, the
/// decision core's inputs from the Kubernetes adapter (template and Pod), and the scheduler extender.
#[test]
fn webhook_decision_core_and_extender_agree_on_a_limits_only_pod() {
    use serde_json::json;
    use smart_autoscaler::domain::admission::AdmissionConfig;
    use smart_autoscaler::domain::extender;
    use smart_autoscaler::http::webhook;
    use smart_autoscaler::k8s::convert;
    use smart_autoscaler::k8s::objects::{PartialDeployment, PartialPod};

    let pod_spec = json!({"containers": [
        {"name": "app", "image": "nginx", "resources": {"limits": {"cpu": "25m", "memory": "64Mi"}}}
    ]});
    let deployment = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec}}
    });
    let pod =
        json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1"}, "spec": pod_spec});

    // The webhook: the reason it records names the request it computed.
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u-1", "operation": "CREATE", "namespace": "shop", "name": "web", "dryRun": false,
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "userInfo": {"username": "admin"}, "object": deployment
        }
    });
    let reviewed = webhook::review(
        &serde_json::to_vec(&review).unwrap(),
        &AdmissionConfig::default(),
    )
    .unwrap();
    let policy = reviewed.decision.policy.clone().unwrap_or_default();
    let webhook_milli: i64 = policy
        .split("pod CPU request ")
        .nth(1)
        .and_then(|rest| rest.split('m').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no CPU request in the policy {policy:?}"));

    // The decision core, through the Kubernetes adapter.
    let template: PartialDeployment = serde_json::from_value(deployment).unwrap();
    let template_milli = convert::deployment_info(&template).pod_cpu_request_milli;
    let partial: PartialPod = serde_json::from_value(pod.clone()).unwrap();
    let pod_milli = convert::pod_info(&partial, None).cpu_request_milli;

    // The scheduler extender.
    let call = json!({"Pod": pod, "NodeNames": ["n1", "n2"]});
    let extender_milli = extender::decode(call.to_string().as_bytes())
        .unwrap()
        .pod
        .cpu_request_milli;

    assert_eq!(
        [webhook_milli, template_milli, pod_milli, extender_milli],
        [25; 4],
        "webhook, deployment template, pod, extender"
    );
}
