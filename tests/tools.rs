//! Checks with real external tools: `promtool check metrics` on the live exposition, and `kubectl kustomize` on
//! the deployment assets. Both tools are installed by hack/install-tools.sh; a missing tool fails the test.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::DemoServer;

fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (hack/install-tools.sh installs the Debian prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let server = DemoServer::start(&[]);
    let tls = server.client();
    // Generate traffic on several routes and codes so every family has samples.
    for path in [
        "/apis/external.metrics.k8s.io/v1beta1",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3Dapi-service",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/nope",
        "/nope",
    ] {
        tls.get(server.secure_url(path)).send().await.unwrap();
    }
    let client = reqwest::Client::new();
    let openmetrics = client
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        openmetrics.contains("smart_autoscaler_http_requests_total{"),
        "{openmetrics}"
    );
    assert!(openmetrics.trim_end().ends_with("# EOF"));

    let text = client
        .get(server.metrics_url("/metrics"))
        .header("Accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    let content_type = text.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = text.text().await.unwrap();
    let (ok, report) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n--- exposition ---\n{text}"
    );

    // promtool really checks: a malformed exposition is rejected.
    let (ok, _) = promtool_check("# TYPE broken counter\nbroken_total{le=\"x\" 1\n");
    assert!(!ok, "promtool accepted a malformed exposition");
}

#[test]
fn kustomize_renders_the_manifests() {
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/manifests"),
        ])
        .output()
        .expect("kubectl must be installed");
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kustomize failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    for kind in [
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "RoleBinding",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "ServiceMonitor",
        "APIService",
        "MutatingWebhookConfiguration",
    ] {
        assert!(
            kinds.contains(&kind),
            "kustomize output lacks a {kind}: {kinds:?}"
        );
    }
    for needle in [
        "name: system:auth-delegator",
        "name: extension-apiserver-authentication-reader",
        "name: horizontal-pod-autoscaler",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "name: v1beta1.external.metrics.k8s.io",
        "- tokenreviews",
    ] {
        assert!(yaml.contains(needle), "kustomize output lacks {needle:?}");
    }
}

#[test]
fn example_hpa_uses_the_metric_contract() {
    let hpa = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/examples/hpa.yaml"
    ))
    .unwrap();
    for needle in [
        "type: External",
        "name: smart_cpu_utilization",
        "deployment: api-service",
        "type: Value",
    ] {
        assert!(hpa.contains(needle), "example HPA lacks {needle:?}");
    }
    // kustomize parses it, so it is valid YAML with a kind and apiVersion.
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("kind: HorizontalPodAutoscaler"));
}
