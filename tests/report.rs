//! The weekly report end to end on the real `demo` binary: `GET /api/v1/report/weekly` against the JSON API it
//! is assembled from (deployments, right-sizing savings, decisions), the `report` command's text and JSON, and
//! the report delivered on schedule (`--weekly-report-at` a few seconds ahead) to a webhook and a Slack receiver
//! that subscribe to `weekly_report`, while a receiver that does not subscribe gets none. Bad input: a bad query
//! is a 400 `Status`, a bad `--url` exits 2, a server that is down is an error that names it.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use common::DemoServer;
use serde_json::Value;

#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn record(State(sink): State<Sink>, uri: Uri, body: Bytes) -> &'static str {
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    sink.got
        .lock()
        .unwrap()
        .push((uri.path().to_string(), json));
    "ok"
}

impl Sink {
    async fn start() -> (Sink, SocketAddr) {
        let sink = Sink::default();
        let app = axum::Router::new()
            .fallback(record)
            .with_state(sink.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (sink, addr)
    }

    fn at(&self, path: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

async fn json(url: &str) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

fn report_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::binary())
        .arg("report")
        .args(args)
        .env_remove("SMART_AUTOSCALER_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--weekly-report-at` for `seconds` from now (UTC; the demo's business offset is 0).
fn due_in(seconds: u64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + seconds;
    let day = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][((t / 86_400 + 3) % 7) as usize];
    let s = t % 86_400;
    format!("{day} {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weekly_report_is_served_printed_and_sent() {
    let (sink, addr) = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alerting.toml");
    std::fs::write(
        &config,
        format!(
            "[[receiver]]\nname = \"reports\"\nkind = \"webhook\"\nurl = \"http://{addr}/reports\"\n\
             alerts = [\"weekly_report\"]\nmin_severity = \"critical\"\n\n\
             [[receiver]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"http://{addr}/slack\"\n\
             alerts = [\"anomaly\", \"weekly_report\"]\n\n\
             [[receiver]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{addr}/oncall\"\n"
        ),
    )
    .unwrap();
    let at = due_in(12);
    let server = DemoServer::start(&[
        "--alerting-config",
        config.to_str().unwrap(),
        "--weekly-report-at",
        &at,
    ]);
    let url = server.metrics_url("/api/v1/report/weekly");
    let report = json(&url).await;
    let deployments = json(&server.metrics_url("/api/v1/deployments")).await;
    let managed = deployments["items"]
        .as_array()
        .or_else(|| deployments.as_array())
        .map(|a| a.len())
        .unwrap_or_else(|| panic!("{deployments}"));
    let rows = report["deployments"].as_array().unwrap();
    assert_eq!(rows.len(), managed, "{report}");
    assert_eq!(report["totals"]["deployments"], managed);
    let week = report["to"].as_i64().unwrap() - report["from"].as_i64().unwrap();
    assert_eq!(week, 7 * 86_400_000);

    // Savings are the right-sizing recommendations', deployment by deployment.
    let recommendations = json(&server.metrics_url("/api/v1/recommendations")).await;
    for r in recommendations["items"].as_array().unwrap() {
        let row = rows
            .iter()
            .find(|d| d["namespace"] == r["namespace"] && d["name"] == r["name"])
            .unwrap_or_else(|| panic!("{r}"));
        let expected = match r["plan"]["status"].as_str().unwrap() {
            "change" => r["plan"]["projection"]["savings_usd_month"].as_f64(),
            "keep" => Some(0.0),
            _ => None,
        };
        let got = row["savings_usd_month"].as_f64();
        match expected {
            Some(e) => assert!(
                (got.unwrap_or(f64::NAN) - e).abs() < 0.05,
                "{} savings {got:?} vs {e}",
                r["name"]
            ),
            None => assert!(got.is_none(), "{row}"),
        }
    }
    // Target changes are the decisions the history API lists for the week.
    for row in rows {
        let history = json(&server.metrics_url(&format!(
            "/api/v1/deployments/{}/{}/history?since=7d&step=1d",
            row["namespace"].as_str().unwrap(),
            row["name"].as_str().unwrap()
        )))
        .await;
        let decisions = history["decisions"].as_array().map_or(0, Vec::len) as u64;
        assert!(
            row["target_changes"].as_u64().unwrap() >= decisions,
            "{row} vs {decisions} decisions"
        );
        assert!(row["cost_hours"].as_f64().is_some(), "{row}");
    }

    // The command prints the same report as text, and the JSON on request.
    let base = format!("http://{}", server.metrics);
    let (code, text, err) = report_cli(&["--url", &base]);
    assert_eq!(code, 0, "{err}");
    assert!(
        text.starts_with("smart-autoscaler weekly report, "),
        "{text}"
    );
    for row in rows {
        assert!(
            text.contains(&format!(
                "{}/{}",
                row["namespace"].as_str().unwrap(),
                row["name"].as_str().unwrap()
            )),
            "{text}"
        );
    }
    let (code, text, _) = report_cli(&["--url", &base, "--namespace", "nowhere"]);
    assert_eq!(code, 0);
    assert!(text.contains("namespace nowhere"), "{text}");
    assert!(text.contains("0 deployment(s)"), "{text}");
    let (code, body, _) = report_cli(&["--url", &base, "--json"]);
    assert_eq!(code, 0);
    let parsed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["totals"]["deployments"], managed);
    let served_text = reqwest::get(format!("{url}?format=text"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(served_text.starts_with("smart-autoscaler weekly report"));
    let page = reqwest::get(server.metrics_url("/report"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<h1>Weekly report</h1>"), "{page}");
    assert!(page.contains("smart-autoscaler weekly report, "), "{page}");
    for h in report["highlights"].as_array().unwrap() {
        let h = h
            .as_str()
            .unwrap()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&#39;");
        assert!(page.contains(&h), "{h}");
    }

    // On schedule, the report goes to the two receivers that subscribe, not to the third.
    let deadline = Instant::now() + Duration::from_secs(40);
    while (sink.at("/reports").is_empty() || sink.at("/slack").is_empty())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let reports = sink.at("/reports");
    assert_eq!(reports.len(), 1, "due {at}: {:?}", sink.got.lock().unwrap());
    let alert = &reports[0]["alert"];
    assert_eq!(alert["kind"], "weekly_report");
    assert_eq!(
        alert["severity"], "info",
        "sent despite min_severity critical"
    );
    assert!(
        alert["title"]
            .as_str()
            .unwrap()
            .starts_with("Weekly report: "),
        "{alert}"
    );
    assert!(
        alert["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("{managed} deployment(s) cost")),
        "{alert}"
    );
    let slack = sink.at("/slack");
    assert!(
        slack
            .iter()
            .any(|m| m["text"].as_str().unwrap_or("").contains("Weekly report")),
        "{slack:?}"
    );
    assert!(
        sink.at("/oncall")
            .iter()
            .all(|m| m["alert"]["kind"] != "weekly_report"),
        "the default subscription does not include the report"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_report_input_is_refused_with_reasons() {
    let server = DemoServer::start(&[]);
    for (query, says) in [
        ("?format=pdf", "use json or text"),
        ("?week=1", "unknown query parameter"),
    ] {
        let r = reqwest::get(server.metrics_url(&format!("/api/v1/report/weekly{query}")))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["kind"], "Status");
        assert!(v["message"].as_str().unwrap().contains(says), "{v}");
    }
    let (code, _, err) = report_cli(&["--url", "ftp://example"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("invalid --url"), "{err}");
    // Nothing listens on port 1.
    let (code, _, err) = report_cli(&["--url", "http://127.0.0.1:1", "--timeout", "5s"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("http://127.0.0.1:1/api/v1/report/weekly"),
        "{err}"
    );
    // A bad --weekly-report-at stops the start with the reason.
    let out = Command::new(common::binary())
        .args(["demo", "--weekly-report-at", "someday 25:00"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not a day and a time"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
