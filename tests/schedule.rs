//! Scaling schedules end to end on the real `demo` binary (its store seeded with 7 days of the simulated
//! workload): `GET /api/v1/deployments/{ns}/{name}/schedule` in every format, the same floors in the JSON, the
//! table, the gauge and the dashboard; the KEDA and CronJob exports rendered by `kubectl kustomize`, the CronJobs
//! checked field by field against the Kubernetes types, and their patch applied to an HPA with
//! `kubectl patch --local`. Bad queries are 400 `Status` answers and unknown deployments 404.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::DemoServer;
use serde::Deserialize;
use serde_json::Value;

const PATH: &str = "/api/v1/deployments/demo/api-service/schedule";

async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, r.text().await.unwrap())
}

/// The schedule JSON once the background task learned it (it runs as soon as the first snapshot exists).
async fn learned(server: &DemoServer, client: &reqwest::Client) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _, body) = get(client, &server.metrics_url(PATH)).await;
        if status == 200 {
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(
                !v["schedule"].is_null(),
                "7 seeded days must be enough: {body}"
            );
            return v;
        }
        assert_eq!(status, 404, "{body}");
        assert!(Instant::now() < deadline, "no schedule within 30 s: {body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn yaml_docs(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl must be installed (hack/install-tools.sh)");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_learned_from_history_and_exported() {
    let server = DemoServer::start(&[]);
    let client = reqwest::Client::new();
    let v = learned(&server, &client).await;
    let s = &v["schedule"];
    let hours = s["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 168);
    assert!(
        s["days_of_history"].as_u64().unwrap() >= 7,
        "{}",
        s["days_of_history"]
    );
    let floors: Vec<u64> = hours
        .iter()
        .map(|h| h["min_replicas"].as_u64().unwrap())
        .collect();
    // api-service has one daily spike: the busiest hour's floor is well above the quietest's.
    let (lo, hi) = (*floors.iter().min().unwrap(), *floors.iter().max().unwrap());
    assert!(hi >= 2 * lo.max(1), "floors {lo}..{hi} show no daily spike");
    // Each floor holds its hour's recurring demand at the target, and no more.
    let target = s["bounds"]["target_percent"].as_f64().unwrap();
    for h in hours {
        let demand = h["demand_percent_pods"].as_f64().unwrap();
        let floor = h["min_replicas"].as_f64().unwrap();
        assert!(floor >= 1.0);
        assert!(floor * target >= demand - 0.01, "{h}");
        assert!(
            floor <= 1.0 || (floor - 1.0) * target < demand + 0.01,
            "{h}"
        );
    }

    // The table says the same, hour by hour.
    let (status, content_type, table) = get(
        &client,
        &server.metrics_url(&format!("{PATH}?format=table")),
    )
    .await;
    assert_eq!(status, 200, "{table}");
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let rows: Vec<&str> = table.lines().skip(2).collect();
    assert_eq!(rows.len(), 7, "{table}");
    for (d, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().skip(1).collect();
        assert_eq!(cells.len(), 24, "{row}");
        for (h, cell) in cells.iter().enumerate() {
            let floor = floors[d * 24 + h];
            let expected = if floor > 1 {
                floor.to_string()
            } else {
                ".".into()
            };
            assert_eq!(*cell, expected, "day {d} hour {h}");
        }
    }

    // The gauge is the floor of the current hour of the week.
    let exposition = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = common::sample(
        &exposition,
        "smart_autoscaler_schedule_min_replicas{namespace=\"demo\",deployment=\"api-service\"}",
    )
    .expect("schedule gauge");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let how = (((now / 86_400 + 3) % 7) * 24 + (now % 86_400) / 3600) as usize;
    // The task may have learned in the previous hour; either neighbour is the right one then.
    let candidates = [floors[how], floors[(how + 167) % 168]];
    assert!(
        candidates.contains(&(gauge as u64)),
        "gauge {gauge}, floors {candidates:?}"
    );

    // The dashboard's deployment page shows the same floors.
    let page = reqwest::get(server.metrics_url("/deployments/demo/api-service"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h2>Scaling schedule</h2>"), "{page}");
    let busiest = floors.iter().position(|f| *f == hi).unwrap();
    assert!(
        page.contains(&format!("data-hour-of-week=\"{busiest}\">{hi}</td>")),
        "hour {busiest} should show {hi}"
    );

    // Exports: KEDA and CronJobs, rendered by kustomize.
    let dir = tempfile::tempdir().unwrap();
    let (status, content_type, keda) = get(
        &client,
        &server.metrics_url(&format!("{PATH}?format=keda&min=2&max=30")),
    )
    .await;
    assert_eq!(status, 200, "{keda}");
    assert_eq!(content_type, "application/yaml");
    let (status, _, cronjobs) = get(
        &client,
        &server.metrics_url(&format!(
            "{PATH}?format=cronjob&min=2&hpa=api-service-hpa&lead=5"
        )),
    )
    .await;
    assert_eq!(status, 200, "{cronjobs}");
    std::fs::write(dir.path().join("keda.yaml"), &keda).unwrap();
    std::fs::write(dir.path().join("cronjobs.yaml"), &cronjobs).unwrap();
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - keda.yaml\n  - cronjobs.yaml\n",
    )
    .unwrap();
    let rendered = yaml_docs(&kubectl(&["kustomize", dir.path().to_str().unwrap()]));
    let kinds: Vec<&str> = rendered
        .iter()
        .map(|o| o["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"ScaledObject") && kinds.contains(&"CronJob"),
        "{kinds:?}"
    );

    let keda = &yaml_docs(&keda)[0];
    assert_eq!(keda["spec"]["scaleTargetRef"]["name"], "api-service");
    assert_eq!(keda["spec"]["minReplicaCount"], 2);
    assert_eq!(keda["spec"]["maxReplicaCount"], 30);
    let triggers = keda["spec"]["triggers"].as_array().unwrap();
    let crons: Vec<&Value> = triggers.iter().filter(|t| t["type"] == "cron").collect();
    assert!(!crons.is_empty(), "{triggers:?}");
    for t in &crons {
        let replicas: u64 = t["metadata"]["desiredReplicas"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(replicas > 2 && floors.contains(&replicas), "{t}");
        for field in ["start", "end"] {
            assert_eq!(
                t["metadata"][field].as_str().unwrap().split(' ').count(),
                5,
                "{t}"
            );
        }
    }
    assert!(
        triggers.iter().any(|t| t["type"] == "prometheus"
            && t["metadata"]["query"]
                .as_str()
                .unwrap()
                .contains("smart_autoscaler_deployment_served_percent")),
        "KEDA's HPA must keep scaling on the smart metric: {triggers:?}"
    );

    let objects = yaml_docs(&cronjobs);
    let jobs: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "CronJob").collect();
    assert!(
        jobs.len() >= 2,
        "a daily spike rises and falls: {objects:?}"
    );
    for job in &jobs {
        let mut unknown = Vec::new();
        let _: k8s_openapi::api::batch::v1::CronJob =
            serde_ignored::deserialize((*job).clone(), |p| unknown.push(p.to_string()))
                .expect("a CronJob");
        assert!(unknown.is_empty(), "unknown fields {unknown:?}");
        assert_eq!(job["spec"]["timeZone"], "Etc/UTC");
    }
    for (kind, name) in [
        ("ServiceAccount", "api-service-hpa-schedule"),
        ("Role", "api-service-hpa-schedule"),
        ("RoleBinding", "api-service-hpa-schedule"),
    ] {
        assert!(
            objects
                .iter()
                .any(|o| o["kind"] == kind && o["metadata"]["name"] == name),
            "{kind} {name}"
        );
    }
    // A job's patch, applied by kubectl to an HPA, sets minReplicas to that job's floor.
    let hpa = dir.path().join("hpa.yaml");
    std::fs::write(
        &hpa,
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: api-service-hpa\n  namespace: demo\nspec:\n  minReplicas: 2\n  maxReplicas: 30\n  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: api-service\n",
    )
    .unwrap();
    for job in &jobs {
        let args = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap();
        assert_eq!(args[2], "api-service-hpa");
        let patch = args.last().unwrap().as_str().unwrap();
        let patched: Value = serde_json::from_str(&kubectl(&[
            "patch",
            "--local",
            "-f",
            hpa.to_str().unwrap(),
            "--type",
            "merge",
            "-p",
            patch,
            "-o",
            "json",
        ]))
        .unwrap();
        let floor = patched["spec"]["minReplicas"].as_u64().unwrap();
        assert!(floor == 2 || floors.contains(&floor), "{patch}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_schedule_queries_are_status_errors() {
    let server = DemoServer::start(&[]);
    let client = reqwest::Client::new();
    learned(&server, &client).await;
    for (query, code, says) in [
        ("?format=xml", 400, "use json, table, keda or cronjob"),
        ("?min=0", 400, "from 1 to 10000"),
        ("?min=5&max=4", 400, "below min"),
        ("?lead=500", 400, "from 0 to 120"),
        ("?hpa=Not_A_Name", 400, "object name"),
        ("?since=1h", 400, "unknown query parameter"),
    ] {
        let (status, _, body) = get(&client, &server.metrics_url(&format!("{PATH}{query}"))).await;
        assert_eq!(status, code, "{query}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["kind"], "Status", "{body}");
        assert!(
            v["message"].as_str().unwrap().contains(says),
            "{query}: {body}"
        );
    }
    let (status, _, body) = get(
        &client,
        &server.metrics_url("/api/v1/deployments/demo/nope/schedule"),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not managed"), "{body}");
}
