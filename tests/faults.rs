//! Faults of the data sources, end to end: the real `serve` binary, a real Prometheus behind a small proxy that
//! can empty its answers, poison them with NaN, infinite and negative samples, or slow them down, and the fake
//! apiserver (recorded API JSON; no kube-apiserver exists on these machines) that can hang. Unknown is not zero:
//! a deployment without usable samples keeps its last good value, ageing into the fail-safe, and then gets a
//! 503 that says why; `/readyz` means "values can be served" and names each source's state and data age.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use common::fake_apiserver;
use common::prometheus::Prometheus;
use common::serve::{Serve, openmetrics, unix_now};
use serde_json::Value;

/// What the proxy does to Prometheus' answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Mode {
    /// Passes them through.
    Pass = 0,
    /// Answers every instant query with an empty vector.
    Empty = 1,
    /// Replaces every sample value with NaN, +Inf, -Inf or -1e308 in turn.
    Poison = 2,
    /// Passes them through after 2.5 s.
    Slow = 3,
    /// Answers 503 with a load balancer's HTML page.
    ServerError = 4,
    /// Answers 200 with garbage: an HTML page and Prometheus' JSON cut in half, in turn.
    Garbage = 5,
    /// Passes them through after 30 s (longer than the query timeout).
    Hang = 6,
}

struct Proxy {
    upstream: String,
    mode: AtomicU8,
    http: reqwest::Client,
}

impl Proxy {
    fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Empty,
            2 => Mode::Poison,
            3 => Mode::Slow,
            4 => Mode::ServerError,
            5 => Mode::Garbage,
            6 => Mode::Hang,
            _ => Mode::Pass,
        }
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let mode = proxy.mode();
    match mode {
        Mode::Slow => tokio::time::sleep(Duration::from_millis(2500)).await,
        Mode::Hang => tokio::time::sleep(Duration::from_secs(30)).await,
        Mode::ServerError => {
            return (
                http::StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::CONTENT_TYPE, "text/html")],
                "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>",
            )
                .into_response();
        }
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut upstream = proxy
        .http
        .request(parts.method.clone(), format!("{}{path}", proxy.upstream))
        .body(body);
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        upstream = upstream.header(http::header::CONTENT_TYPE, ct.clone());
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(e) => return (http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status();
    let bytes = answer.bytes().await.unwrap_or_default();
    let is_query = parts.uri.path() == "/api/v1/query";
    let bytes = match mode {
        Mode::Empty | Mode::Poison if is_query && status.is_success() => {
            let mut json: Value = serde_json::from_slice(&bytes).unwrap();
            let result = json["data"]["result"].as_array_mut().unwrap();
            if mode == Mode::Empty {
                result.clear();
            } else {
                for (i, series) in result.iter_mut().enumerate() {
                    series["value"][1] = Value::from(["NaN", "+Inf", "-Inf", "-1e308"][i % 4]);
                }
            }
            Bytes::from(serde_json::to_vec(&json).unwrap())
        }
        Mode::Garbage => {
            static TURN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            if TURN.fetch_add(1, Ordering::Relaxed) % 2 == 0 {
                Bytes::from_static(b"<html><body>It works!</body></html>")
            } else {
                bytes.slice(..bytes.len() / 2)
            }
        }
        _ => bytes,
    };
    let status = if mode == Mode::Garbage {
        http::StatusCode::OK
    } else {
        status
    };
    (
        status,
        [(http::header::CONTENT_TYPE, "application/json")],
        bytes,
    )
        .into_response()
}

async fn start_proxy(upstream: &str) -> (Arc<Proxy>, String) {
    let proxy = Arc::new(Proxy {
        upstream: upstream.to_string(),
        mode: AtomicU8::new(Mode::Pass as u8),
        http: reqwest::Client::new(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = axum::Router::new()
        .fallback(forward)
        .with_state(proxy.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (proxy, url)
}

const SMART: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/smart_cpu_utilization?labelSelector=deployment%3Dapi";

/// `(status, value or Status message, timestamp)` of shop/api's smart metric.
async fn read(serve: &Serve, client: &reqwest::Client) -> (u16, String, String) {
    let r = client
        .get(format!("https://{}{SMART}", serve.secure))
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    if code == 200 {
        let item = &body["items"][0];
        (
            code,
            item["value"].as_str().unwrap().to_string(),
            item["timestamp"].as_str().unwrap().to_string(),
        )
    } else {
        assert_eq!(body["kind"], "Status", "{body}");
        (
            code,
            body["message"].as_str().unwrap().to_string(),
            String::new(),
        )
    }
}

/// Waits until shop/api's read is refused with a 503, up to `within`; the Status message.
async fn refused(serve: &Serve, client: &reqwest::Client, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (code, message, _) = read(serve, client).await;
        if code == 503 {
            return message;
        }
        assert!(
            Instant::now() < deadline,
            "never refused; last: {code} {message}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn source_errors(serve: &Serve, component: &str) -> f64 {
    let text = reqwest::get(serve.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::sample(
        &text,
        &format!("smart_autoscaler_source_errors_total{{component=\"{component}\"}}"),
    )
    .unwrap_or(0.0)
}

/// Waits until `check` holds, up to `within`.
async fn eventually<F: Future<Output = bool>>(what: &str, within: Duration, check: impl Fn() -> F) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The fake apiserver (watch events released), a real Prometheus with the recording, the proxy in front of it
/// (passing answers through until told otherwise) and `serve` on both, with `extra` flags.
struct Rig {
    api: fake_apiserver::Harness,
    prom: Prometheus,
    proxy: Arc<Proxy>,
    serve: Serve,
    client: reqwest::Client,
}

impl Rig {
    async fn start(extra: &[&str]) -> Rig {
        let api = fake_apiserver::start(vec![]).await;
        api.release.send(true).unwrap();
        let prom = Prometheus::start(&openmetrics(unix_now()), None, None).await;
        let (proxy, url) = start_proxy(&prom.url).await;
        let serve = Serve::start(&url, &api.kubeconfig, extra);
        let client = serve.client();
        Rig {
            api,
            prom,
            proxy,
            serve,
            client,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_usable_samples_are_never_served_as_a_fresh_zero() {
    let Rig {
        api: _api,
        prom: _prom,
        proxy,
        serve,
        client,
    } = Rig::start(&[]).await;
    serve
        .wait_readyz(Duration::from_secs(60), |b| {
            b.contains("[+]prometheus") && b.contains("[+]values")
        })
        .await;
    let (code, good, good_at) = read(&serve, &client).await;
    assert_eq!(code, 200);
    assert_ne!(good, "0");

    for (mode, phase, says) in [
        (
            Mode::Empty,
            "empty answers",
            "ready nodes without a CPU measurement",
        ),
        (
            Mode::Poison,
            "NaN/Inf/negative",
            "NaN, infinite or negative samples dropped",
        ),
    ] {
        // Each phase starts measured and fresh, so nothing it checks is left over from the one before.
        proxy.set(Mode::Pass);
        eventually("a measured state", Duration::from_secs(30), || async {
            let d = get_json(serve.metrics_url("/api/v1/deployments/shop/api")).await;
            d["usage_unknown"].is_null() && read(&serve, &client).await.2 > good_at
        })
        .await;
        proxy.set(mode);
        let errors_before = source_errors(&serve, "prometheus").await;
        // A few ticks (1 s each) later the deployment is unknown, and says why.
        eventually(phase, Duration::from_secs(20), || async {
            let d = get_json(serve.metrics_url("/api/v1/deployments/shop/api")).await;
            d["usage_unknown"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("no usable CPU sample"))
        })
        .await;
        // The value is the last good one with its own time: two reads more than two ticks apart carry the same
        // timestamp (the value may turn raw as it ages into the fail-safe), never a fresh 0.
        let first = read(&serve, &client).await;
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let second = read(&serve, &client).await;
        if first.0 == 200 && second.0 == 200 {
            assert!(first.1 != "0" && second.1 != "0", "{phase}: a made-up zero");
            assert_eq!(
                first.2, second.2,
                "{phase}: a fresh value from unusable samples"
            );
        }
        let readyz = reqwest::get(serve.metrics_url("/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            readyz.contains("[-]prometheus")
                && readyz.contains("shop/api")
                && readyz.contains(says),
            "{phase}: {readyz}"
        );
        eventually(
            "the source error to be counted",
            Duration::from_secs(10),
            || async { source_errors(&serve, "prometheus").await > errors_before },
        )
        .await;
    }

    // Past the fail-safe's error limit (10 intervals of 1 s) the read is refused with the reason, and the
    // server is no longer ready: nothing can be served.
    let message = refused(&serve, &client, Duration::from_secs(30)).await;
    assert!(message.contains("no usable CPU sample"), "{message}");
    common::serve::wait_for_readyz(&serve.metrics, Duration::from_secs(10), |code, body| {
        code == 503 && body.contains("[-]values")
    })
    .await;
    // The node measurements were poisoned too: the pool's measurement is unknown, not 0% (idle).
    let d = get_json(serve.metrics_url("/api/v1/deployments/shop/api")).await;
    assert!(
        d["inputs"]["pool"]["measured_cpu_percent"]
            .as_f64()
            .unwrap()
            > 0.0,
        "the last good inputs are kept whole: {d}"
    );

    // Usable samples again: a fresh value.
    proxy.set(Mode::Pass);
    eventually("recovery", Duration::from_secs(30), || async {
        let (code, value, at) = read(&serve, &client).await;
        code == 200 && value != "0" && at > good_at
    })
    .await;
    serve
        .wait_readyz(Duration::from_secs(10), |b| b.contains("[+]prometheus"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_data_age_not_tick_latency() {
    let Rig {
        api: _api,
        prom,
        proxy,
        serve,
        client,
    } = Rig::start(&[]).await;
    serve
        .wait_readyz(Duration::from_secs(60), |b| b.contains("[+]values"))
        .await;

    // A slow Prometheus (2.5 s an answer: values up to 5 s old): every value is still fresh enough to serve, so the
    // server stays ready the whole time (it used to turn unready after 3 intervals of tick latency).
    proxy.set(Mode::Slow);
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let r = reqwest::get(serve.metrics_url("/readyz")).await.unwrap();
        let code = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(code, 200, "slow but serving: {body}");
        assert_eq!(read(&serve, &client).await.0, 200);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Prometheus gone: ready while the last values may still be served, unready once every read is refused.
    drop(prom);
    proxy.set(Mode::Pass);
    let body =
        common::serve::wait_for_readyz(&serve.metrics, Duration::from_secs(40), |code, _| {
            code == 503
        })
        .await;
    assert!(
        body.contains("[-]prometheus") && body.contains("data "),
        "{body}"
    );
    let (code, message, _) = read(&serve, &client).await;
    assert_eq!(code, 503, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_apiserver_shows_and_stops_fresh_values_past_the_staleness_limit() {
    let Rig {
        api,
        prom: _prom,
        proxy: _proxy,
        serve,
        client,
    } = Rig::start(&["--kube-max-staleness", "8s"]).await;
    serve
        .wait_readyz(Duration::from_secs(60), |b| {
            b.contains("[+]kubernetes") && b.contains("[+]values")
        })
        .await;

    // The apiserver hangs: no error from the watches, but the probe notices, it is counted and shown...
    api.pause.send(true).unwrap();
    eventually("kubernetes errors", Duration::from_secs(20), || async {
        source_errors(&serve, "kubernetes").await > 0.0
    })
    .await;
    let body =
        common::serve::wait_for_readyz(&serve.metrics, Duration::from_secs(20), |_, body| {
            body.contains("[-]kubernetes") && body.contains("no contact with the API server")
        })
        .await;
    assert!(body.contains("data "), "{body}");
    // ...and past the 8 s limit no new value is computed from the cached objects: the last ones age out
    // through the fail-safe (10 intervals) into a 503, and the server turns unready.
    let message = refused(&serve, &client, Duration::from_secs(40)).await;
    assert!(message.contains("fail-safe"), "{message}");
    common::serve::wait_for_readyz(&serve.metrics, Duration::from_secs(10), |code, body| {
        code == 503 && body.contains("--kube-max-staleness")
    })
    .await;

    // Back: fresh values again.
    api.pause.send(false).unwrap();
    eventually("fresh values", Duration::from_secs(30), || async {
        read(&serve, &client).await.0 == 200
    })
    .await;
    serve
        .wait_readyz(Duration::from_secs(10), |b| b.contains("[+]kubernetes"))
        .await;
}

const RAW: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/smart_cpu_utilization_raw?labelSelector=deployment%3Dapi";

/// Seconds since the epoch, with fractions.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds since the epoch of an RFC 3339 timestamp (the API's are whole seconds).
fn seconds(rfc3339: &str) -> i64 {
    rfc3339.parse::<jiff::Timestamp>().unwrap().as_second()
}

/// `(status, value or message, timestamp)` of one metric of shop/api; status 0 when the request failed.
async fn read_path(serve: &Serve, client: &reqwest::Client, path: &str) -> (u16, String, String) {
    let Ok(r) = client
        .get(format!("https://{}{path}", serve.secure))
        .send()
        .await
    else {
        return (0, String::new(), String::new());
    };
    let code = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    if code == 200 {
        let item = &body["items"][0];
        (
            code,
            item["value"].as_str().unwrap_or_default().to_string(),
            item["timestamp"].as_str().unwrap_or_default().to_string(),
        )
    } else {
        (
            code,
            body["message"].as_str().unwrap_or_default().to_string(),
            String::new(),
        )
    }
}

/// The last good values before an outage: shop/api's smart and raw values of the same tick, and its time.
struct Good {
    smart: String,
    raw: String,
    at: i64,
}

/// Waits for a fresh tick (newer than `after`) whose smart and raw reads agree on the timestamp.
async fn good(serve: &Serve, client: &reqwest::Client, after: i64) -> Good {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (c1, smart, t1) = read_path(serve, client, SMART).await;
        let (c2, raw, t2) = read_path(serve, client, RAW).await;
        if c1 == 200 && c2 == 200 && t1 == t2 && seconds(&t1) > after {
            assert_ne!(
                smart, raw,
                "smart and raw values must differ to tell them apart"
            );
            return Good {
                smart,
                raw,
                at: seconds(&t1),
            };
        }
        assert!(Instant::now() < deadline, "no fresh values: {c1} {smart}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the served value did during one outage of Prometheus, read every 200 ms.
#[derive(Debug, Default)]
struct Outage {
    /// Age of the last good data (seconds, upper bound) at the first raw value and at the first 503.
    raw_at: Option<f64>,
    refused_at: Option<f64>,
    reads: usize,
    /// Reads that broke the fail-safe (last good until 3 intervals, raw until 10, then 503).
    violations: Vec<String>,
}

/// Follows shop/api's smart read from the start of an outage (`started`, epoch seconds) until it has been
/// refused past 12 intervals (of 1 s), checking each read against the fail-safe. Timestamps are whole seconds,
/// so a read's age is known to within a second: an age is held against a limit only when it is past it either way.
async fn follow(serve: &Serve, client: &reqwest::Client, mut good: Good, started: f64) -> Outage {
    const SLACK: f64 = 0.3;
    let mut outage = Outage::default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, value, at) = read_path(serve, client, SMART).await;
        let now = now_secs();
        outage.reads += 1;
        if code == 200 && seconds(&at) > good.at {
            // A tick already under way when the outage began may still land, just after.
            if now - started > 1.5 {
                outage
                    .violations
                    .push(format!("a fresh value {value} at {at} during the outage"));
            }
            good = Good {
                smart: value.clone(),
                raw: good.raw,
                at: seconds(&at),
            };
            continue;
        }
        // The last good data is this old at most, and at least a second less.
        let age = now - good.at as f64;
        match code {
            200 if value == good.smart => {
                if age - 1.0 > 3.0 + SLACK {
                    outage
                        .violations
                        .push(format!("the smart value still served at age {age:.1}s"));
                }
            }
            200 if value == good.raw => {
                outage.raw_at.get_or_insert(age);
                if age < 3.0 - SLACK {
                    outage
                        .violations
                        .push(format!("raw served already at age {age:.1}s"));
                }
                if age - 1.0 > 10.0 + SLACK {
                    outage
                        .violations
                        .push(format!("still served at age {age:.1}s"));
                }
            }
            200 => outage
                .violations
                .push(format!("neither the last good nor the raw value: {value}")),
            503 => {
                outage.refused_at.get_or_insert(age);
                if age < 10.0 - SLACK {
                    outage
                        .violations
                        .push(format!("refused already at age {age:.1}s: {value}"));
                }
                if age > 12.0 {
                    return outage;
                }
            }
            _ => outage.violations.push(format!("answered {code}: {value}")),
        }
        assert!(Instant::now() < deadline, "never refused: {outage:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seconds from `recovered` (epoch seconds) until a value measured after it is served.
async fn recovery(serve: &Serve, client: &reqwest::Client, recovered: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, _, at) = read_path(serve, client, SMART).await;
        if code == 200 && seconds(&at) as f64 >= recovered.floor() {
            return now_secs() - recovered;
        }
        assert!(Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the figures of one outage and its recovery; whether they held.
fn outage_figures(fault: &str, outage: &Outage, recovered_after: f64) -> bool {
    let age = |a: Option<f64>| a.map_or("never".to_string(), |a| format!("{a:.1}s"));
    common::figure(
        fault,
        "reads breaking the fail-safe",
        format!("{} of {}", outage.violations.len(), outage.reads),
        "0",
        outage.violations.is_empty(),
    ) & common::figure(
        fault,
        "raw value from data age",
        age(outage.raw_at),
        "3 intervals: 2.7-5.3s",
        outage.raw_at.is_some_and(|a| (2.7..=5.3).contains(&a)),
    ) & common::figure(
        fault,
        "503 from data age",
        age(outage.refused_at),
        "10 intervals: 9.7-12.3s",
        outage.refused_at.is_some_and(|a| (9.7..=12.3).contains(&a)),
    ) & common::figure(
        fault,
        "fresh value after recovery",
        format!("{recovered_after:.1}s"),
        "<=2 intervals (2s)",
        recovered_after <= 2.0,
    )
}

/// Prometheus answering 5xx, garbage (HTML, JSON cut in half) and hanging for 30 s (past the query timeout):
/// each time the served value is the last good one for 3 intervals, then the raw utilization, then after 10
/// intervals a 503; once Prometheus answers again a fresh value is served within two intervals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_5xx_garbage_and_hangs_follow_the_fail_safe_and_recover() {
    let Rig {
        api: _api,
        prom: _prom,
        proxy,
        serve,
        client,
    } = Rig::start(&["--prometheus-timeout", "800ms"]).await;
    serve
        .wait_readyz(Duration::from_secs(60), |b| b.contains("[+]values"))
        .await;
    let mut ok = true;
    let mut last = 0;
    for (mode, fault) in [
        (Mode::ServerError, "Prometheus 5xx"),
        (Mode::Garbage, "Prometheus garbage"),
        (Mode::Hang, "Prometheus hangs 30s"),
    ] {
        proxy.set(Mode::Pass);
        let before = good(&serve, &client, last).await;
        proxy.set(mode);
        let outage = follow(&serve, &client, before, now_secs()).await;
        eprintln!("{fault}: {outage:?}");
        proxy.set(Mode::Pass);
        let recovered_after = recovery(&serve, &client, now_secs()).await;
        ok &= outage_figures(fault, &outage, recovered_after);
        last = unix_now();
    }
    assert!(ok, "see the FIGURE lines");
}

/// Prometheus killed (connections refused), then started again on the same port: the same fail-safe, and a
/// fresh value within two intervals of it answering again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_prometheus_follows_the_fail_safe_and_recovers_on_restart() {
    let api = fake_apiserver::start(vec![]).await;
    api.release.send(true).unwrap();
    let data = openmetrics(unix_now());
    let prom = Prometheus::start(&data, None, None).await;
    let port: u16 = prom.url.rsplit(':').next().unwrap().parse().unwrap();
    let serve = Serve::start(
        &prom.url,
        &api.kubeconfig,
        &["--prometheus-timeout", "800ms"],
    );
    let client = serve.client();
    serve
        .wait_readyz(Duration::from_secs(60), |b| b.contains("[+]values"))
        .await;
    let before = good(&serve, &client, 0).await;
    drop(prom);
    let outage = follow(&serve, &client, before, now_secs()).await;
    eprintln!("killed: {outage:?}");
    let prom = Prometheus::start_at(&data, None, None, Some(port)).await;
    let recovered_after = recovery(&serve, &client, now_secs()).await;
    drop(prom);
    assert!(
        outage_figures("Prometheus killed", &outage, recovered_after),
        "see the FIGURE lines"
    );
}

/// The recorded cluster as a restarted apiserver serves it: every list at resourceVersion 184400 (its watch
/// cache starts there), node N3 deleted while it was down and `ip-10-0-4-12` added.
fn after_restart() -> Vec<fake_apiserver::Collection> {
    fake_apiserver::recorded()
        .into_iter()
        .map(|mut c| {
            let mut list: Value = serde_json::from_str(&c.list).unwrap();
            list["metadata"]["resourceVersion"] = Value::from("184400");
            if c.path == "/api/v1/nodes" {
                let items = list["items"].as_array_mut().unwrap();
                let mut added = items
                    .iter()
                    .find(|n| n["metadata"]["name"] == fake_apiserver::N3)
                    .unwrap()
                    .clone();
                items.retain(|n| n["metadata"]["name"] != fake_apiserver::N3);
                added["metadata"]["name"] = Value::from(NEW_NODE);
                added["metadata"]["uid"] = Value::from("0f1e2d3c-4b5a-4968-8776-655443322110");
                added["metadata"]["resourceVersion"] = Value::from("184390");
                items.push(added);
            }
            c.list = list.to_string();
            c.events.clear();
            c
        })
        .collect()
}

const NEW_NODE: &str = "ip-10-0-4-12.eu-west-1.compute.internal";

/// Node names in serve's snapshot, as the extender's node view lists them.
async fn snapshot_nodes(serve: &Serve, client: &reqwest::Client) -> Vec<String> {
    let Ok(r) = client
        .get(format!("https://{}/scheduler/nodes", serve.secure))
        .send()
        .await
    else {
        return vec![];
    };
    let body: Value = r.json().await.unwrap_or_default();
    body["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The stand-in Kubernetes API killed mid-watch (every connection dropped) and started again on the same port
/// 8 s later, with a node deleted and one added meanwhile and a watch cache that no longer reaches the old
/// resourceVersions (410 Expired): the watches resume, re-list, and the snapshot holds the new node and not the
/// deleted one. Values stay served throughout (the data is well within `--kube-max-staleness`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_apiserver_is_resumed_without_stale_objects() {
    let mut api = fake_apiserver::Killable::start(fake_apiserver::recorded()).await;
    let prom = Prometheus::start(&openmetrics(unix_now()), None, None).await;
    let serve = Serve::start(&prom.url, &api.kubeconfig, &[]);
    let client = serve.client();
    serve
        .wait_readyz(Duration::from_secs(60), |b| {
            b.contains("[+]kubernetes") && b.contains("[+]values")
        })
        .await;
    let nodes = snapshot_nodes(&serve, &client).await;
    assert!(
        nodes.iter().any(|n| n == fake_apiserver::N3) && !nodes.iter().any(|n| n == NEW_NODE),
        "{nodes:?}"
    );
    api.kill().await;
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", api.port)).is_err(),
        "the apiserver still accepts connections"
    );
    let down = Instant::now();
    let mut reads_ok = 0;
    while down.elapsed() < Duration::from_secs(8) {
        let (code, value, _) = read(&serve, &client).await;
        assert_eq!(
            code, 200,
            "apiserver down 8 s, well within the staleness limit: {value}"
        );
        reads_ok += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    api.restart(after_restart(), 184_400).await;
    let restarted = Instant::now();
    eventually(
        "the deleted node gone and the new one present",
        Duration::from_secs(60),
        || async {
            let nodes = snapshot_nodes(&serve, &client).await;
            !nodes.iter().any(|n| n == fake_apiserver::N3) && nodes.iter().any(|n| n == NEW_NODE)
        },
    )
    .await;
    let resumed_after = restarted.elapsed().as_secs_f64();
    serve
        .wait_readyz(Duration::from_secs(30), |b| b.contains("[+]kubernetes"))
        .await;
    // The watches resumed: every kind is listed and watched again on the restarted server (each kind's
    // watcher has its own backoff, so some come back later than the nodes).
    let restarted_api = api.api.clone();
    eventually(
        "every kind listed and watched again",
        Duration::from_secs(60),
        || async {
            let seen = restarted_api.seen.lock().unwrap().clone();
            fake_apiserver::recorded().iter().all(|c| {
                seen.iter().any(|s| s.path == c.path && !s.is_watch())
                    && seen.iter().any(|s| s.path == c.path && s.is_watch())
            })
        },
    )
    .await;
    let all_resumed_after = restarted.elapsed().as_secs_f64();
    // Held for a while: the deleted node does not come back from a cache.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let nodes = snapshot_nodes(&serve, &client).await;
    let ok = common::figure(
        "Kubernetes API killed 8s",
        "metric reads while it was down",
        format!("{reads_ok}/{reads_ok} 200"),
        "all 200",
        true,
    ) & common::figure(
        "Kubernetes API killed 8s",
        "restart to snapshot without the deleted node, with the added one",
        format!("{resumed_after:.1}s"),
        "<=60s",
        true,
    ) & common::figure(
        "Kubernetes API killed 8s",
        "restart to every kind listed and watched again",
        format!("{all_resumed_after:.1}s"),
        "<=60s",
        true,
    ) & common::figure(
        "Kubernetes API killed 8s",
        "stale objects in the snapshot 3s later",
        usize::from(nodes.iter().any(|n| n == fake_apiserver::N3)),
        "0",
        !nodes.iter().any(|n| n == fake_apiserver::N3) && nodes.iter().any(|n| n == NEW_NODE),
    );
    assert!(ok, "see the FIGURE lines");
}
