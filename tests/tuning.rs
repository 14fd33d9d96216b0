//! Auto-tuned targets end to end (issue 17 item 3): the real `serve` against the recorded Kubernetes API (shop/api
//! opted in with `smart-autoscaler.io/auto-tune: "true"`, shop/web not) and a real Prometheus backfilled with a
//! week and a half of usage: a smooth daily cycle carried by pods that have since been replaced, then the
//! recording's live pods. serve bootstraps that history into its store, its tuning task replays it at candidate
//! targets, and the tuned target is applied to shop/api (the value served follows it) and shown as advice for
//! shop/web. The same week gives shop/api a right-sizing recommendation.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use common::fake_apiserver::{self, N1, N2, N3};
use common::prometheus::Prometheus;
use common::serve::{API_PODS, POD_CORES, Serve, WEB_POD_CORES, WEB_PODS, unix_now};
use serde_json::Value;

const DAY: i64 = 86_400;
/// Pods that carried each deployment's load before the live ones (names as a ReplicaSet makes them).
const OLD: [&str; 6] = ["b2c4d", "k7m9p", "q5r6s", "t8v2w", "x4z6b", "c9d2f"];

/// One old pod's CPU at `t`, cores: a slow daily cycle between 2/3 and 4/3 of its request, so the deployment's
/// demand swings between 4 and 8 pods' worth, never faster than pods start.
fn old_pod_cores(t: i64, request: f64) -> f64 {
    request * (1.0 + (t as f64 / DAY as f64 * std::f64::consts::TAU).sin() / 3.0)
}

/// OpenMetrics for 7.5 days up to 40 minutes before `now` (old pods: CPU every 2 minutes, their requests every
/// 4), then the recording's live pods and nodes for the last 40 minutes at 15 s, as `common::serve` shapes them.
fn week(now: i64) -> String {
    let start = now - 7 * DAY - DAY / 2;
    let live = now - 40 * 60;
    let mut om = String::from("# TYPE container_cpu_usage_seconds_total counter\n");
    let deployments = [
        ("api", "5f7d9c8b6d", "api", 0.35),
        ("web", "6d8f9c7b4b", "nginx", 0.2),
    ];
    for (name, hash, container, request) in deployments {
        for pod in OLD {
            let mut used = 0.0;
            let mut t = start;
            while t < live {
                writeln!(
                    om,
                    "container_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"{name}-{hash}-{pod}\",container=\"{container}\"}} {used} {t}"
                )
                .unwrap();
                used += old_pod_cores(t, request) * 120.0;
                t += 120;
            }
        }
    }
    let pods = API_PODS
        .iter()
        .map(|p| (p, "api", POD_CORES))
        .chain(WEB_PODS.iter().map(|p| (p, "nginx", WEB_POD_CORES)));
    for (pod, container, cores) in pods {
        let mut t = live;
        while t <= now + 300 {
            writeln!(
                om,
                "container_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"{pod}\",container=\"{container}\"}} {} {t}",
                cores * (t - live) as f64
            )
            .unwrap();
            t += 15;
        }
    }
    om.push_str("# TYPE kube_pod_container_resource_requests gauge\n");
    for (name, hash, container, request) in deployments {
        for pod in OLD {
            let mut t = start;
            while t < live {
                writeln!(
                    om,
                    "kube_pod_container_resource_requests{{namespace=\"shop\",pod=\"{name}-{hash}-{pod}\",container=\"{container}\",resource=\"cpu\"}} {request} {t}"
                )
                .unwrap();
                t += 240;
            }
        }
    }
    om.push_str("# TYPE node_cpu_seconds_total counter\n");
    for (node, idle_share) in [(N1, 0.4), (N2, 0.8), (N3, 0.9)] {
        let mut t = live;
        while t <= now + 300 {
            writeln!(
                om,
                "node_cpu_seconds_total{{instance=\"{node}\",cpu=\"0\",mode=\"idle\"}} {} {t}",
                idle_share * (t - live) as f64
            )
            .unwrap();
            t += 15;
        }
    }
    om.push_str("# EOF\n");
    om
}

/// Adds `smart-autoscaler.io/auto-tune: "true"` to shop/api in the recorded deployments (list and watch events).
fn opt_in_api(collections: &mut [fake_apiserver::Collection]) {
    let annotate = |object: &mut Value| {
        if object["metadata"]["name"] == "api" && object["kind"] != "Status" {
            if let Some(a) = object["metadata"]["annotations"].as_object_mut() {
                a.insert("smart-autoscaler.io/auto-tune".into(), "true".into());
            }
        }
    };
    for c in collections
        .iter_mut()
        .filter(|c| c.path == "/apis/apps/v1/deployments")
    {
        let mut list: Value = serde_json::from_str(&c.list).unwrap();
        for item in list["items"].as_array_mut().unwrap() {
            annotate(item);
        }
        c.list = list.to_string();
        for (_, line) in &mut c.events {
            let mut event: Value = serde_json::from_str(line).unwrap();
            annotate(&mut event["object"]);
            *line = event.to_string();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_tunes_an_opted_in_deployment_from_a_backfilled_week_and_advises_the_others() {
    let started = Instant::now();
    let api = fake_apiserver::start_edited(vec![], |c| opt_in_api(c)).await;
    api.release.send(true).unwrap();
    let prom = Prometheus::start(&week(unix_now()), None, None).await;
    // One candidate each side (70 ± 3) keeps the debug build's replays short; forecasting is off for the same
    // reason (it would warm up on the same week).
    let serve = Serve::start(
        &prom.url,
        &api.kubeconfig,
        &[
            "--no-forecast",
            // The decision's cooldown would hold the first target for 5 minutes; the tuned one is to be served.
            "--cooldown",
            "1s",
            "--tuning-interval",
            "1m",
            "--tuning-cpu-budget",
            "1",
            "--tuning-candidates",
            "1",
        ],
    );
    let metrics = serve.metrics.clone();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("http://{metrics}{path}"));
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };

    // Until both deployments have a tuning made on the bootstrapped week (the first round may come before the
    // bootstrap has filled the store: "not enough data", looked at again each round).
    let deadline = Instant::now() + Duration::from_secs(90);
    let tunings = loop {
        let body = reqwest::get(format!("http://{metrics}/api/v1/tuning"))
            .await
            .ok()
            .filter(|r| r.status() == 200);
        if let Some(r) = body {
            let body: Value = r.json().await.unwrap();
            let done = body["items"]
                .as_array()
                .unwrap()
                .iter()
                // The tick has seen it too: the words are the tuning's, and it is applied where opted in.
                .filter(|i| {
                    i["verdict"] != "not_enough_data"
                        && i["text"] != "not enough data: 0.00 days of history, at least 1 needed"
                })
                .filter(|i| i["applied"] == (i["opted_in"] == true))
                .count();
            if done == 2 {
                break body;
            }
            assert!(Instant::now() < deadline, "no tuning in time: {body:#}");
        }
        assert!(Instant::now() < deadline, "no tuning API in time");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let item = |name: &str| {
        tunings["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["deployment"] == name)
            .unwrap_or_else(|| panic!("{name} not in {tunings:#}"))
            .clone()
    };

    // shop/api: a smooth week runs at 73% with no more saturation and fewer pod-hours; every day agrees.
    let tuned = item("api");
    assert_eq!(tuned["verdict"], "tuned", "{tuned:#}");
    assert_eq!(tuned["target_percent"], 73.0, "{tuned:#}");
    assert!(tuned["confidence"].as_f64().unwrap() > 0.8, "{tuned:#}");
    assert!(tuned["history_days"].as_f64().unwrap() > 6.9, "{tuned:#}");
    assert_eq!(
        (tuned["opted_in"].clone(), tuned["applied"].clone()),
        (true.into(), true.into())
    );
    let text = tuned["text"].as_str().unwrap();
    assert!(
        text.starts_with("tuned from 70% to 73%: 7.0 days replayed, saturation "),
        "{text}"
    );
    assert!(text.contains("pod-hours −"), "{text}");
    let (chosen, current) = (&tuned["chosen"], &tuned["current"]);
    assert!(
        chosen["pod_hours"].as_f64() < current["pod_hours"].as_f64(),
        "{tuned:#}"
    );
    assert!(
        chosen["saturated_pod_minutes"].as_f64().unwrap()
            <= current["saturated_pod_minutes"].as_f64().unwrap() + 1e-6
    );

    // shop/web: the same week, not opted in: advice, with what to do.
    let advice = item("web");
    assert_eq!(advice["applied"], false, "{advice:#}");
    assert_eq!(advice["opted_in"], false);
    assert!(advice["target_percent"].is_number(), "{advice:#}");
    let text = advice["text"].as_str().unwrap();
    if advice["verdict"] == "tuned" {
        assert!(text.starts_with("would be tuned from 70% to"), "{text}");
        assert!(
            text.contains("(not enabled: annotate smart-autoscaler.io/auto-tune=\"true\")"),
            "{text}"
        );
    } else {
        assert!(text.starts_with("kept 70%"), "{text}");
    }
    // The namespace filter.
    let none = get("/api/v1/tuning?namespace=kube-system").await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0, "{none}");

    // The value served follows the tuned target: the policy target is 73% from the learned-target hook, the
    // effective target is it times the pool's pressure factor, and served = raw x base / effective.
    let explained = get("/api/v1/deployments/shop/api").await;
    let e = &explained["explanation"];
    assert_eq!(e["policy_source"], "learned", "{explained:#}");
    assert_eq!(e["policy_target_percent"], 73.0);
    assert_eq!(e["tuning"]["applied"], true);
    let factor = e["pressure"]["factor"].as_f64().unwrap();
    let effective = e["effective_target_percent"].as_f64().unwrap();
    assert!((effective - 73.0 * factor).abs() < 1e-6, "{explained:#}");
    let raw = explained["raw_percent"].as_f64().unwrap();
    let served = explained["smart_percent"].as_f64().unwrap();
    assert!(
        (served - raw * 70.0 / effective).abs() < 1e-6,
        "{explained:#}"
    );
    let readable = get("/api/v2/deployments/shop/api").await;
    assert_eq!(
        readable["target"]["policy_from"],
        "the auto-tuned target (smart-autoscaler.io/auto-tune)"
    );
    assert!(
        readable["summary"]
            .as_str()
            .unwrap()
            .contains("Auto-tune: tuned from 70% to 73%"),
        "{readable:#}"
    );
    let web = get("/api/v1/deployments/shop/web").await;
    assert_eq!(web["explanation"]["policy_source"], "base", "{web:#}");
    assert!(
        web["explanation"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r.as_str().unwrap().starts_with("auto-tune: ")),
        "{web:#}"
    );

    // /metrics: the tuned target, its confidence and whether it is applied.
    let text = http
        .get(format!("http://{metrics}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| common::sample(&text, series);
    let api_labels = "{namespace=\"shop\",deployment=\"api\"}";
    let web_labels = "{namespace=\"shop\",deployment=\"web\"}";
    assert_eq!(
        value(&format!(
            "smart_autoscaler_deployment_tuned_target_percent{api_labels}"
        )),
        Some(73.0)
    );
    assert_eq!(
        value(&format!(
            "smart_autoscaler_deployment_tuning_applied{api_labels}"
        )),
        Some(1.0)
    );
    assert_eq!(
        value(&format!(
            "smart_autoscaler_deployment_tuning_applied{web_labels}"
        )),
        Some(0.0)
    );
    assert!(
        value(&format!(
            "smart_autoscaler_deployment_tuning_confidence{api_labels}"
        ))
        .is_some_and(|c| c > 0.8)
    );
    assert!(value("smart_autoscaler_tuning_runs_total").is_some_and(|n| n >= 2.0));

    // Right-sizing from the same backfilled week. The histogram is read from the store at the first tick, before
    // the bootstrap has landed, and read again once it has: live ticks alone (a minute or two here) would be
    // "not enough data". 2,160 five-minute points over 7.5 days are 1.5 days of VPA confidence (one sample a
    // minute makes a day), and the old pods ran at 67-133% of their request, so the p90 + 15% is above it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let rec = loop {
        let body = get("/api/v1/recommendations?namespace=shop").await;
        let api = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "api")
            .cloned()
            .unwrap_or_else(|| panic!("shop/api not in {body:#}"));
        if api["requests"]["status"] == "ready" {
            break api;
        }
        assert!(
            Instant::now() < deadline,
            "no recommendation from the backfilled week: {api:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let requests = &rec["requests"];
    let confidence = requests["confidence_days"].as_f64().unwrap();
    assert!((1.2..=2.0).contains(&confidence), "{rec:#}");
    let cpu = &requests["cpu_milli"];
    let target = cpu["target"].as_i64().unwrap();
    assert!(
        target > 350,
        "p90 + 15% of a pod at up to 133% of 350m: {rec:#}"
    );
    assert!(
        cpu["lower"].as_i64().unwrap() <= target && target <= cpu["upper"].as_i64().unwrap(),
        "{rec:#}"
    );
    assert!(
        ["change", "keep"].contains(&rec["status"].as_str().unwrap()),
        "{rec:#}"
    );
    let projection = &rec["plan"]["projection"];
    assert_eq!(projection["cpu_request_milli"], target, "{rec:#}");
    assert!(projection["savings_usd_month"].is_number(), "{rec:#}");
    eprintln!("tuning end to end took {:?}", started.elapsed());
}
