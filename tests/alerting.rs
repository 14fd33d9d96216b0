//! Alert delivery with real parts: a real Alertmanager (Debian `prometheus-alertmanager`, installed by
//! hack/install-tools.sh; a missing binary fails the test) whose webhook receiver points back at a local HTTP
//! sink, and the direct receivers' payloads checked at a local sink against their services' documented schemas.
//! Broken receivers (down, slow, 4xx/5xx, garbage, 429) must never hold up the snapshot channel or the other
//! receivers. Nothing leaves the machine: every URL is on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use smart_autoscaler::alerting::{self, config};
use smart_autoscaler::domain::anomaly::{Anomaly, AnomalyKind, Severity};
use smart_autoscaler::domain::model::{DeploymentKey, Snapshot};
use smart_autoscaler::telemetry::Telemetry;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// One request the sink received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    at: Instant,
    headers: HeaderMap,
    body: String,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} sent no JSON ({e}): {}", self.path, self.body))
    }
}

/// A local HTTP sink that records every request and answers by path: `/slow/..` after 30 s, `/status/N/..` with
/// N, `/429/..` with 429 + `Retry-After: 2` the first time, anything else 200.
#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<Received>>>,
}

impl Sink {
    async fn start() -> (Sink, SocketAddr) {
        let sink = Sink::default();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (sink, addr)
    }

    fn at(&self, prefix: &str) -> Vec<Received> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// Waits up to `within` for `n` requests under `prefix`.
    async fn wait_for(&self, prefix: &str, n: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.at(prefix);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{prefix}: {} of {n} requests within {within:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn handle(State(sink): State<Sink>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let earlier = sink.at(&path).len();
    sink.got.lock().unwrap().push(Received {
        path: path.clone(),
        at: Instant::now(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let mut parts = path.trim_start_matches('/').split('/');
    match parts.next() {
        Some("slow") => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
        Some("status") => StatusCode::from_u16(parts.next().unwrap().parse().unwrap())
            .unwrap()
            .into_response(),
        Some("429") if earlier == 0 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "2")],
            "slow down",
        )
            .into_response(),
        _ => StatusCode::OK.into_response(),
    }
}

/// A port that answers every connection with bytes that are not HTTP, then hangs up.
async fn garbage_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stream
                    .write_all(b"\x00\x01garbage\r\n\r\nnot http at all")
                    .await;
            });
        }
    });
    addr
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn anomaly(name: &str, kind: AnomalyKind, severity: Severity, summary: &str) -> Anomaly {
    let at = now_millis() - 60_000;
    Anomaly {
        key: DeploymentKey::new("demo", name),
        kind,
        severity,
        started_at: at,
        last_seen_at: at,
        ended_at: None,
        expected: 41.5,
        actual: 97.25,
        score: 0.93,
        summary: summary.to_string(),
    }
}

fn snapshot(anomalies: Vec<Anomaly>) -> Option<Arc<Snapshot>> {
    let at = now_millis();
    Some(Arc::new(Snapshot {
        collected_at: at,
        measured_at: at,
        interval_millis: 15_000,
        anomalies,
        ..Default::default()
    }))
}

/// Writes `text` as the alerting config in `dir` and starts delivery on a fresh snapshot channel.
fn start(
    dir: &Path,
    text: &str,
) -> (
    watch::Sender<Option<Arc<Snapshot>>>,
    Arc<Telemetry>,
    CancellationToken,
) {
    let path = dir.join("alerting.toml");
    std::fs::write(&path, text).unwrap();
    let config = config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let (tx, rx) = watch::channel(None);
    let telemetry = Arc::new(Telemetry::new());
    let cancel = CancellationToken::new();
    let (leads, leadership) = watch::channel(true);
    // This replica leads for good.
    std::mem::forget(leads);
    alerting::spawn(&config, rx, leadership, &telemetry, cancel.clone()).unwrap();
    (tx, telemetry, cancel)
}

/// Of two replicas only the lease holder delivers. One that does not lead keeps the same alert state, so when it
/// takes over it neither repeats what was already firing nor misses its resolve.
#[tokio::test]
async fn only_the_leader_delivers_and_a_new_leader_repeats_nothing() {
    let (sink, addr) = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerting.toml");
    std::fs::write(
        &path,
        receiver("hook", "webhook", &format!("http://{addr}/hook"), ""),
    )
    .unwrap();
    let config = config::load(&path).unwrap();
    let (tx, rx) = watch::channel(None);
    let (leads, leadership) = watch::channel(false);
    let telemetry = Arc::new(Telemetry::new());
    let cancel = CancellationToken::new();
    alerting::spawn(&config, rx, leadership, &telemetry, cancel.clone()).unwrap();

    let spike = anomaly("api", AnomalyKind::CpuSpike, Severity::Warning, "spike");
    tx.send(snapshot(vec![spike.clone()])).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        sink.at("/hook").is_empty(),
        "a follower sent {:?}",
        sink.at("/hook")
    );

    leads.send(true).unwrap();
    let thrash = anomaly(
        "web",
        AnomalyKind::ScalingThrash,
        Severity::Warning,
        "thrash",
    );
    tx.send(snapshot(vec![spike.clone(), thrash])).unwrap();
    let got = sink.wait_for("/hook", 1, Duration::from_secs(10)).await;
    let first = got[0].json();
    assert_eq!(first["alert"]["deployment"], "web", "{first}");
    let mut ended = spike.clone();
    ended.ended_at = Some(now_millis());
    tx.send(snapshot(vec![ended])).unwrap();
    let got = sink.wait_for("/hook", 2, Duration::from_secs(10)).await;
    let resolve = got[1].json();
    assert_eq!(resolve["status"], "resolved", "{resolve}");
    assert_eq!(resolve["alert"]["deployment"], "api", "{resolve}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let firing_api = sink
        .at("/hook")
        .iter()
        .filter(|r| r.json()["alert"]["deployment"] == "api" && r.json()["status"] == "firing")
        .count();
    assert_eq!(firing_api, 0, "the new leader repeated a firing alert");
    cancel.cancel();
}

fn receiver(name: &str, kind: &str, url: &str, extra: &str) -> String {
    format!("[[receiver]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\n{extra}\n")
}

fn chars(v: &Value) -> usize {
    v.as_str()
        .unwrap_or_else(|| panic!("{v} is not a string"))
        .chars()
        .count()
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.parse::<jiff::Timestamp>().is_ok())
}

#[tokio::test]
async fn direct_receivers_get_their_documented_payloads() {
    let (sink, addr) = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("pd-routing-key"),
        "R0UT1NGKEY0123456789abcdefABCDEF\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("hook-token"), "t0ken\n").unwrap();
    std::fs::write(
        dir.path().join("slack-url"),
        format!("http://{addr}/slack/T000/B000/XXXX\n"),
    )
    .unwrap();
    let base = format!("http://{addr}");
    let text = [
        "[[receiver]]\nname = \"slack\"\nkind = \"slack\"\nurl_file = \"slack-url\"\n".to_string(),
        receiver("teams", "teams", &format!("{base}/teams"), ""),
        receiver("discord", "discord", &format!("{base}/discord"), ""),
        receiver(
            "pd",
            "pagerduty",
            &format!("{base}/pd"),
            "routing_key_file = \"pd-routing-key\"",
        ),
        receiver(
            "hook",
            "webhook",
            &format!("{base}/hook"),
            "bearer_token_file = \"hook-token\"",
        ),
    ]
    .concat();
    let (tx, telemetry, cancel) = start(dir.path(), &text);
    // A summary past every service's limit, with multi-byte characters.
    let long = format!("CPU 97% where 41% was expected — {}", "é".repeat(9000));
    tx.send(snapshot(vec![anomaly(
        "api",
        AnomalyKind::CpuSpike,
        Severity::Critical,
        &long,
    )]))
    .unwrap();
    let within = Duration::from_secs(10);

    // Slack incoming webhook: `text` plus Block Kit blocks within their limits.
    let slack = sink.wait_for("/slack/T000/B000/XXXX", 1, within).await[0].json();
    assert!(chars(&slack["text"]) > 0);
    let blocks = slack["blocks"].as_array().unwrap();
    assert!(!blocks.is_empty() && blocks.len() <= 50);
    for block in blocks {
        match block["type"].as_str().unwrap() {
            "header" => {
                assert_eq!(block["text"]["type"], "plain_text");
                assert!(chars(&block["text"]["text"]) <= 150);
            }
            "section" => {
                assert!(chars(&block["text"]["text"]) <= 3000);
                let fields = block["fields"].as_array().unwrap();
                assert!(fields.len() <= 10);
                assert!(
                    fields
                        .iter()
                        .all(|f| f["type"] == "mrkdwn" && chars(&f["text"]) <= 2000)
                );
            }
            "context" => assert!(!block["elements"].as_array().unwrap().is_empty()),
            other => panic!("unexpected block {other}"),
        }
    }

    // Teams Workflows: a message with one Adaptive Card 1.4 attachment.
    let teams = sink.wait_for("/teams", 1, within).await[0].json();
    assert_eq!(teams["type"], "message");
    let attachment = &teams["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.4");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    for element in card["body"].as_array().unwrap() {
        match element["type"].as_str().unwrap() {
            "TextBlock" => assert!(element["text"].is_string()),
            "FactSet" => {
                for fact in element["facts"].as_array().unwrap() {
                    assert!(
                        fact["title"].is_string() && fact["value"].is_string(),
                        "{fact}"
                    );
                }
            }
            other => panic!("unexpected card element {other}"),
        }
    }

    // Discord: content + embeds within every documented limit.
    let discord = sink.wait_for("/discord", 1, within).await[0].json();
    assert!(chars(&discord["content"]) <= 2000);
    let embeds = discord["embeds"].as_array().unwrap();
    assert!(!embeds.is_empty() && embeds.len() <= 10);
    let mut total = 0;
    for embed in embeds {
        assert!(chars(&embed["title"]) <= 256);
        assert!(chars(&embed["description"]) <= 4096);
        assert!(chars(&embed["footer"]["text"]) <= 2048);
        assert!(embed["color"].as_u64().unwrap() <= 0xFF_FFFF);
        assert!(is_rfc3339(&embed["timestamp"]));
        let fields = embed["fields"].as_array().unwrap();
        assert!(fields.len() <= 25);
        for f in fields {
            assert!(chars(&f["name"]) <= 256 && chars(&f["value"]) <= 1024);
            total += chars(&f["name"]) + chars(&f["value"]);
        }
        total +=
            chars(&embed["title"]) + chars(&embed["description"]) + chars(&embed["footer"]["text"]);
    }
    assert!(total <= 6000, "{total}");

    // PagerDuty Events API v2: trigger with the routing key from its file and a stable dedup_key.
    let trigger = sink.wait_for("/pd", 1, within).await[0].json();
    assert_eq!(trigger["routing_key"], "R0UT1NGKEY0123456789abcdefABCDEF");
    assert_eq!(trigger["event_action"], "trigger");
    let dedup_key = trigger["dedup_key"].as_str().unwrap().to_string();
    assert!(!dedup_key.is_empty() && dedup_key.len() <= 255);
    let payload = &trigger["payload"];
    assert!(chars(&payload["summary"]) <= 1024);
    assert!(chars(&payload["source"]) > 0);
    assert_eq!(payload["severity"], "critical");
    assert!(
        ["critical", "error", "warning", "info"].contains(&payload["severity"].as_str().unwrap())
    );
    assert!(is_rfc3339(&payload["timestamp"]));

    // The generic webhook: schema version 1, with the bearer token from its file.
    let got = sink.wait_for("/hook", 1, within).await;
    assert_eq!(got[0].headers["authorization"], "Bearer t0ken");
    let hook = got[0].json();
    assert_eq!(hook["version"], "1");
    assert_eq!(hook["status"], "firing");
    assert_eq!(hook["alert"]["id"], dedup_key.as_str());
    assert_eq!(hook["alert"]["type"], "cpu_spike");
    assert_eq!(hook["alert"]["kind"], "anomaly");
    assert_eq!(hook["alert"]["deployment"], "api");
    assert_eq!(hook["alert"]["details"]["expected"], "41.5");
    assert!(hook["alert"]["ended_at"].is_null());

    // The same anomaly on the next ticks: deduplicated, nothing more is sent.
    for _ in 0..3 {
        tx.send(snapshot(vec![anomaly(
            "api",
            AnomalyKind::CpuSpike,
            Severity::Critical,
            "still",
        )]))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Resolved: PagerDuty gets `resolve` with the same dedup_key, the webhook `resolved`.
    tx.send(snapshot(vec![])).unwrap();
    let resolve = sink.wait_for("/pd", 2, within).await[1].json();
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], dedup_key.as_str());
    assert_eq!(resolve["routing_key"], "R0UT1NGKEY0123456789abcdefABCDEF");
    let resolved = sink.wait_for("/hook", 2, within).await[1].json();
    assert_eq!(resolved["status"], "resolved");
    assert!(is_rfc3339(&resolved["alert"]["ended_at"]));
    for prefix in ["/slack", "/teams", "/discord"] {
        assert_eq!(
            sink.wait_for(prefix, 2, within).await.len(),
            2,
            "{prefix}: one firing, one resolved"
        );
    }
    // Delivery counters per receiver and outcome.
    let metrics = telemetry.encode();
    for name in ["slack", "teams", "discord", "pd", "hook"] {
        assert!(
            metrics.contains(&format!(
                "smart_autoscaler_alert_deliveries_total{{receiver=\"{name}\",outcome=\"sent\"}} 2"
            )),
            "{metrics}"
        );
    }
    // No secret reaches the exposition.
    assert!(!metrics.contains("R0UT1NGKEY") && !metrics.contains("XXXX"));
    cancel.cancel();
}

#[tokio::test]
async fn broken_receivers_slow_neither_the_tick_nor_the_others() {
    let (sink, addr) = Sink::start().await;
    let garbage = garbage_server().await;
    let dir = tempfile::tempdir().unwrap();
    let base = format!("http://{addr}");
    let fast = "retry_backoff = \"50ms\"\nretry_backoff_max = \"100ms\"\nmax_attempts = 3\ntimeout = \"1s\"";
    let text = [
        receiver(
            "down",
            "webhook",
            &format!("http://127.0.0.1:{}/", closed_port()),
            fast,
        ),
        // The slow sink answers after 30 s; the request timeout is 1 s.
        receiver("slow", "webhook", &format!("{base}/slow"), fast),
        receiver("e500", "webhook", &format!("{base}/status/500"), fast),
        receiver("e400", "slack", &format!("{base}/status/400"), fast),
        receiver("garbage", "discord", &format!("http://{garbage}/"), fast),
        receiver(
            "good",
            "webhook",
            &format!("{base}/good"),
            "rate_limit_per_minute = 6000",
        ),
    ]
    .concat();
    let (tx, telemetry, cancel) = start(dir.path(), &text);
    // Twenty ticks, each bringing a new anomaly: publishing never waits for delivery.
    let mut anomalies = Vec::new();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        anomalies.push(anomaly(
            &format!("app-{i:02}"),
            AnomalyKind::CpuSpike,
            Severity::Warning,
            "CPU spike",
        ));
        let t = Instant::now();
        tx.send(snapshot(anomalies.clone())).unwrap();
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        slowest < Duration::from_millis(50),
        "publishing a snapshot took {slowest:?}"
    );
    // The good receiver gets every alert within a few seconds, while the slow one is still hanging.
    let good = sink.wait_for("/good", 20, Duration::from_secs(5)).await;
    let mut names: Vec<String> = good
        .iter()
        .map(|r| {
            r.json()["alert"]["deployment"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 20, "{names:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // The broken ones were tried, counted by result, retried where retrying can help.
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = [
        "smart_autoscaler_alert_delivery_attempts_total{receiver=\"down\",result=\"connect\"}",
        "smart_autoscaler_alert_delivery_attempts_total{receiver=\"slow\",result=\"timeout\"}",
        "smart_autoscaler_alert_delivery_attempts_total{receiver=\"e500\",result=\"server_error\"}",
        "smart_autoscaler_alert_delivery_attempts_total{receiver=\"e400\",result=\"client_error\"}",
        "smart_autoscaler_alert_delivery_attempts_total{receiver=\"garbage\",result=\"error\"}",
        "smart_autoscaler_alert_deliveries_total{receiver=\"e500\",outcome=\"failed\"}",
        "smart_autoscaler_alert_deliveries_total{receiver=\"e400\",outcome=\"rejected\"}",
        "smart_autoscaler_alert_deliveries_total{receiver=\"good\",outcome=\"sent\"} 20",
    ];
    loop {
        let metrics = telemetry.encode();
        let missing: Vec<_> = expected.iter().filter(|m| !metrics.contains(*m)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {missing:?} in\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A 400 is not retried: one request per alert. A 500 is retried (3 attempts for the first alert).
    let e500 = sink.at("/status/500");
    assert!(e500.len() >= 3, "{}", e500.len());
    let e400 = sink.at("/status/400");
    let mut bodies: Vec<&str> = e400.iter().map(|r| r.body.as_str()).collect();
    let all = bodies.len();
    bodies.dedup();
    assert_eq!(bodies.len(), all, "a rejected alert was sent twice");
    cancel.cancel();
}

#[tokio::test]
async fn retry_after_is_honoured_and_full_queues_drop_the_oldest() {
    let (sink, addr) = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = [
        receiver(
            "limited",
            "webhook",
            &format!("http://{addr}/429"),
            "retry_backoff = \"10ms\"",
        ),
        // A receiver that never answers in time, with room for two events.
        receiver(
            "tiny",
            "webhook",
            &format!("http://{addr}/slow"),
            "queue_capacity = 2\ntimeout = \"20s\"\nmax_attempts = 1",
        ),
    ]
    .concat();
    let (tx, telemetry, cancel) = start(dir.path(), &text);
    tx.send(snapshot(vec![anomaly(
        "api",
        AnomalyKind::ScalingThrash,
        Severity::Warning,
        "19 replica changes in 30 minutes",
    )]))
    .unwrap();
    let got = sink.wait_for("/429", 2, Duration::from_secs(10)).await;
    let waited = got[1].at - got[0].at;
    // The backoff alone would retry after 10 ms; Retry-After asked for 2 s.
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}"
    );
    assert_eq!(got[0].body, got[1].body);
    let metrics = telemetry.encode();
    assert!(metrics.contains("smart_autoscaler_alert_delivery_attempts_total{receiver=\"limited\",result=\"rate_limited\"} 1"), "{metrics}");
    assert!(
        metrics.contains(
            "smart_autoscaler_alert_deliveries_total{receiver=\"limited\",outcome=\"sent\"} 1"
        ),
        "{metrics}"
    );
    // `tiny` is stuck on its first event; four more arrive for a queue of two: the two oldest are dropped.
    let mut anomalies = Vec::new();
    for i in 0..4 {
        anomalies.push(anomaly(
            &format!("more-{i}"),
            AnomalyKind::CpuSpike,
            Severity::Warning,
            "spike",
        ));
        tx.send(snapshot(
            [
                vec![anomaly(
                    "api",
                    AnomalyKind::ScalingThrash,
                    Severity::Warning,
                    "x",
                )],
                anomalies.clone(),
            ]
            .concat(),
        ))
        .unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let metrics = telemetry.encode();
        if metrics.contains("smart_autoscaler_alert_queue_dropped_total{receiver=\"tiny\"} 2") {
            assert!(
                metrics.contains("smart_autoscaler_alert_queue_depth{receiver=\"tiny\"} 2"),
                "{metrics}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
}

/// A real Alertmanager on a free loopback port, stopped on drop.
struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    async fn start(webhook: &str) -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "global:\n  resolve_timeout: 5m\nroute:\n  receiver: sink\n  group_by: [namespace, deployment]\n  group_wait: 1s\n  \
             group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n- name: sink\n  webhook_configs:\n  - url: {webhook}\n    \
             send_resolved: true\n"
        );
        std::fs::write(dir.path().join("alertmanager.yml"), config).unwrap();
        let port = closed_port();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("prometheus-alertmanager must be installed (hack/install-tools.sh installs the Debian package)");
        let am = Alertmanager {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !client
            .get(format!("{}/-/ready", am.url))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            assert!(
                Instant::now() < deadline,
                "alertmanager did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        am
    }

    async fn alerts(&self) -> Vec<Value> {
        reqwest::get(format!("{}/api/v2/alerts", self.url))
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
    }
}

/// The notifications Alertmanager sent to the sink, as (status, group's deployment, [(type, status)]).
fn notifications(sink: &Sink) -> Vec<(String, String, BTreeMap<String, String>)> {
    sink.at("/am")
        .iter()
        .map(|r| {
            let n = r.json();
            let alerts = n["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["labels"]["type"].as_str().unwrap().to_string(),
                        a["status"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            (
                n["status"].as_str().unwrap().to_string(),
                n["groupLabels"]["deployment"].as_str().unwrap().to_string(),
                alerts,
            )
        })
        .collect()
}

async fn wait_until<F: Fn() -> bool>(what: &str, within: Duration, ok: F) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_real_alertmanager_groups_resolves_and_gets_resends() {
    let (sink, addr) = Sink::start().await;
    let am = Alertmanager::start(&format!("http://{addr}/am")).await;
    let dir = tempfile::tempdir().unwrap();
    let (tx, telemetry, cancel) = start(
        dir.path(),
        &receiver("am", "alertmanager", &am.url, "resend_interval = \"1s\""),
    );
    let spike = || {
        anomaly(
            "api",
            AnomalyKind::CpuSpike,
            Severity::Critical,
            "CPU 97% where 41% was expected",
        )
    };
    let thrash = || {
        anomaly(
            "api",
            AnomalyKind::ScalingThrash,
            Severity::Warning,
            "19 replica changes in 30 minutes",
        )
    };
    let web = || {
        anomaly(
            "web",
            AnomalyKind::PersistentHighCpu,
            Severity::Warning,
            "CPU 91% for 15 minutes at maxReplicas",
        )
    };
    tx.send(snapshot(vec![spike(), thrash(), web()])).unwrap();

    // Grouped by deployment: one notification for api with both alerts, one for web.
    let within = Duration::from_secs(15);
    wait_until("a notification per deployment", within, || {
        let n = notifications(&sink);
        n.iter().any(|(_, d, _)| d == "api") && n.iter().any(|(_, d, _)| d == "web")
    })
    .await;
    let n = notifications(&sink);
    let api = n.iter().find(|(_, d, _)| d == "api").unwrap();
    assert_eq!(api.0, "firing");
    assert_eq!(
        api.2,
        BTreeMap::from([
            ("cpu_spike".into(), "firing".into()),
            ("scaling_thrash".into(), "firing".into())
        ])
    );
    let alerts = am.alerts().await;
    assert_eq!(alerts.len(), 3, "{alerts:#?}");
    let spike_alert = alerts
        .iter()
        .find(|a| a["labels"]["type"] == "cpu_spike")
        .unwrap();
    assert_eq!(
        spike_alert["labels"]["alertname"],
        "SmartAutoscalerCpuSpike"
    );
    assert_eq!(spike_alert["labels"]["severity"], "critical");
    assert_eq!(
        spike_alert["annotations"]["description"],
        "CPU 97% where 41% was expected"
    );

    // Re-sent while active: each re-send moves Alertmanager's endsAt (now + resolve_timeout) forward, with no new
    // snapshot.
    let ends_at = |alerts: &[Value]| -> jiff::Timestamp {
        alerts
            .iter()
            .find(|a| a["labels"]["type"] == "cpu_spike")
            .unwrap()["endsAt"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = ends_at(&am.alerts().await);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = ends_at(&am.alerts().await);
    assert!(later > first, "endsAt {first} -> {later}: not re-sent");
    assert!(
        telemetry
            .encode()
            .contains("smart_autoscaler_alert_deliveries_total{receiver=\"am\",outcome=\"sent\"}")
    );

    // The spike ends: Alertmanager resolves it at once (endsAt) and tells the sink, the thrash still firing.
    tx.send(snapshot(vec![thrash(), web()])).unwrap();
    wait_until("the spike resolved at the sink", within, || {
        notifications(&sink).iter().any(|(_, d, a)| {
            d == "api"
                && a.get("cpu_spike").is_some_and(|s| s == "resolved")
                && a.get("scaling_thrash").is_some_and(|s| s == "firing")
        })
    })
    .await;
    // Everything ends: the group's notification is resolved.
    tx.send(snapshot(vec![])).unwrap();
    wait_until("all resolved at the sink", within, || {
        let n = notifications(&sink);
        ["api", "web"]
            .iter()
            .all(|dep| n.iter().any(|(s, d, _)| s == "resolved" && d == dep))
    })
    .await;
    let active: Vec<Value> = am
        .alerts()
        .await
        .into_iter()
        .filter(|a| a["status"]["state"] == "active")
        .collect();
    assert!(active.is_empty(), "{active:#?}");
    cancel.cancel();
}

/// The rule groups of the PrometheusRule in `rendered` (kustomize output), as a promtool rule file: the
/// document's `spec:` block, one level less indented.
fn rule_groups(rendered: &str) -> String {
    let doc = rendered
        .split("\n---\n")
        .find(|d| d.lines().any(|l| l == "kind: PrometheusRule"))
        .expect("a PrometheusRule is rendered");
    let mut out = String::new();
    let mut in_spec = false;
    for line in doc.lines() {
        if line == "spec:" {
            in_spec = true;
        } else if in_spec && !line.starts_with(' ') && !line.starts_with('-') {
            in_spec = false;
        } else if in_spec {
            out.push_str(line.strip_prefix("  ").unwrap_or(line));
            out.push('\n');
        }
    }
    assert!(out.starts_with("groups:"), "{out}");
    out
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("{cmd:?}: {e} (hack/install-tools.sh installs kubectl and promtool)")
    });
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_prometheus_rule_component_passes_promtool() {
    let root = env!("CARGO_MANIFEST_DIR");
    // The component on its own, and composed with the base manifests as docs/alerting.md says to use it (kustomize
    // wants relative paths, so the overlay names the repository from the temporary directory).
    let (ok, component) = run(Command::new("kubectl").args([
        "kustomize",
        &format!("{root}/manifests/components/prometheusrule"),
    ]));
    assert!(ok, "{component}");
    let overlay = tempfile::tempdir().unwrap();
    let up = overlay.path().components().count().saturating_sub(1);
    let to_root = format!("{}{root}", "../".repeat(up).trim_end_matches('/'));
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!("resources:\n  - {to_root}/manifests\ncomponents:\n  - {to_root}/manifests/components/prometheusrule\n"),
    )
    .unwrap();
    let (ok, full) = run(Command::new("kubectl").arg("kustomize").arg(overlay.path()));
    assert!(ok, "{full}");
    assert!(full.contains("kind: Deployment") && full.contains("kind: PrometheusRule"));
    assert_eq!(rule_groups(&full), rule_groups(&component));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rule_groups(&component)).unwrap();
    let (ok, report) = run(Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(dir.path().join("rules.yaml")));
    assert!(ok, "{report}");
    assert!(report.contains("SUCCESS: 10 rules found"), "{report}");
    let tests =
        std::fs::read_to_string(format!("{root}/tests/fixtures/alerting/rules-test.yaml")).unwrap();
    std::fs::write(dir.path().join("rules-test.yaml"), &tests).unwrap();
    let (ok, report) = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.path().join("rules-test.yaml")));
    assert!(ok, "{report}");
    // promtool really compares: a wrong expectation fails.
    std::fs::write(
        dir.path().join("rules-test.yaml"),
        tests.replace("\"75% of ticks", "\"76% of ticks"),
    )
    .unwrap();
    let (ok, report) = run(Command::new("promtool")
        .args(["test", "rules"])
        .arg(dir.path().join("rules-test.yaml")));
    assert!(!ok, "a wrong expectation passed: {report}");
}

#[tokio::test]
async fn demo_runs_the_receivers_of_its_alerting_config() {
    let (sink, addr) = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerting.toml");
    std::fs::write(
        &path,
        receiver("local", "webhook", &format!("http://{addr}/alerts"), ""),
    )
    .unwrap();
    // Fast simulated time, so the demo's scenarios produce anomalies within seconds.
    let server = common::DemoServer::start(&[
        "--alerting-config",
        path.to_str().unwrap(),
        "--speed",
        "1000",
    ]);
    let first = sink.wait_for("/alerts", 1, Duration::from_secs(60)).await[0].json();
    assert_eq!(first["version"], "1");
    assert_eq!(first["status"], "firing");
    assert_eq!(first["alert"]["namespace"], "demo");
    let kinds = [
        "cpu_spike",
        "scaling_thrash",
        "persistent_high_cpu",
        "pattern_deviation",
        "learned",
        "predictive_scale_up",
    ];
    assert!(
        kinds.contains(&first["alert"]["type"].as_str().unwrap()),
        "{first}"
    );
    let metrics = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "smart_autoscaler_alert_deliveries_total{receiver=\"local\",outcome=\"sent\"}",
        "smart_autoscaler_alert_queue_dropped_total{receiver=\"local\"} 0",
        "smart_autoscaler_alert_queue_depth{receiver=\"local\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    drop(server);

    // A malformed file stops the start, naming the file, the line and the field.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[receiver]]\nname = \"local\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1\"\ntimeout = 10\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_smart-autoscaler"))
        .args([
            "demo",
            "--secure-port",
            "0",
            "--metrics-port",
            "0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--alerting-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "invalid --alerting-config: {}:5: receiver[0].timeout: ",
            bad.display()
        )),
        "{stderr}"
    );
}

/// The weekly report is news, not a condition: an Alertmanager receiver gets it once and it is not re-sent every
/// `resend_interval` the way an active alert is; a receiver that does not list `weekly_report` gets nothing.
#[tokio::test]
async fn the_weekly_report_is_sent_once_and_only_to_its_subscribers() {
    let (sink, addr) = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerting.toml");
    std::fs::write(
        &path,
        receiver(
            "am",
            "alertmanager",
            &format!("http://{addr}/am"),
            "resend_interval = \"1s\"\nalerts = [\"weekly_report\"]",
        ) + &receiver("hook", "webhook", &format!("http://{addr}/hook"), ""),
    )
    .unwrap();
    let config = config::load(&path).unwrap();
    let (_tx, rx) = watch::channel(None);
    let (_leads, leadership) = watch::channel(true);
    let telemetry = Arc::new(Telemetry::new());
    let cancel = CancellationToken::new();
    let alerting = alerting::spawn(&config, rx, leadership, &telemetry, cancel.clone()).unwrap();
    let now = now_millis();
    let report =
        smart_autoscaler::domain::report::assemble(now - 7 * 86_400_000, now, None, Vec::new());
    assert_eq!(alerting.send_report(&report), 1);
    let got = sink.wait_for("/am", 1, Duration::from_secs(5)).await;
    let body = got[0].json();
    let alert = &body[0];
    assert_eq!(
        alert["labels"]["alertname"], "SmartAutoscalerWeeklyReport",
        "{body}"
    );
    assert_eq!(alert["labels"]["kind"], "weekly_report");
    assert!(alert.get("endsAt").is_none(), "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("Weekly report: "),
        "{alert}"
    );
    // Three resend intervals: an active alert would have been sent three more times.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(sink.at("/am").len(), 1, "re-sent: {:?}", sink.at("/am"));
    assert!(sink.at("/hook").is_empty(), "{:?}", sink.at("/hook"));
    cancel.cancel();
}
