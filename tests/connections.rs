//! Connection handling of the real binary (`demo` mode) under abuse: connections that send nothing (before their
//! first request or after a response, HTTP/1 and HTTP/2, both ports), a flood of them past the process's
//! file-descriptor limit, the per-listener connection cap, and the `Status` contract for errors raised below the
//! handlers (undecodable path segments, header limits).
//!
//! New settings are passed through their `SMART_AUTOSCALER_*` environment variables rather than flags, so the
//! same test also runs (and fails for the right reason) against a binary that predates them.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::DemoServer;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";

fn tls_connector(server: &DemoServer) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server.ca_file()).expect("read ca") {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    connector: &TlsConnector,
    addr: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("127.0.0.1").expect("server name");
    connector.connect(name, tcp).await
}

/// Sockets the process holds, from `/proc/<pid>/fd`.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/<pid>/fd")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Reads (and discards) until the peer closes; the time it took, or `None` if still open after `limit`.
async fn closed_within<S: AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A raw HTTP/1.1 response.
#[derive(Debug)]
struct Raw {
    code: u16,
    head: String,
    body: String,
}

/// Sends `request` as written and reads one response (by `content-length`, or to the end of the stream).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> std::io::Result<Raw> {
    stream.write_all(request).await?;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok());
                if length.is_some_and(|n| data.len() >= end + 4 + n) {
                    return Ok(());
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) => return Ok(()),
                Ok(n) => data.extend_from_slice(&buf[..n]),
                Err(e) if !data.is_empty() => {
                    let _ = e;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no response in 10 s"))??;
    let text = String::from_utf8_lossy(&data).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no status line in {text:?}"),
            )
        })?;
    Ok(Raw {
        code,
        head: head.to_string(),
        body: body.to_string(),
    })
}

fn get(path: &str, extra_headers: &str, close: bool) -> Vec<u8> {
    let connection = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{connection}{extra_headers}\r\n")
        .into_bytes()
}

/// Asserts `raw` is a Kubernetes `Status` with `code` and a message.
fn assert_status(raw: &Raw, code: u16, what: &str) {
    assert_eq!(raw.code, code, "{what}: {}\r\n\r\n{}", raw.head, raw.body);
    assert!(
        raw.head
            .to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{what}: not JSON: {}",
        raw.head
    );
    let body: Value = serde_json::from_str(&raw.body)
        .unwrap_or_else(|e| panic!("{what}: body is not JSON ({e}): {:?}", raw.body));
    assert_eq!(body["kind"], "Status", "{what}: {body}");
    assert_eq!(body["apiVersion"], "v1", "{what}: {body}");
    assert_eq!(body["status"], "Failure", "{what}: {body}");
    assert_eq!(body["code"], code, "{what}: {body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{what}: {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

/// HTTP/2 with prior knowledge, written by hand (no HTTP/2 client among the dependencies): the preface, an empty
/// SETTINGS, and one `GET path` with END_STREAM; reads frames until the response HEADERS of stream 1 and returns
/// its `:status` (only the static-table statuses are decoded, which is all `/healthz` needs).
async fn h2_get<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    tls: bool,
    path: &str,
) -> std::io::Result<u16> {
    fn frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream_id.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }
    fn literal(block: &mut Vec<u8>, name_index: u8, value: &str) {
        // Literal without indexing, indexed name, plain (not Huffman) string shorter than 127 bytes.
        block.push(name_index);
        block.push(value.len() as u8);
        block.extend_from_slice(value.as_bytes());
    }
    let mut block = vec![0x82, if tls { 0x87 } else { 0x86 }]; // :method GET, :scheme https|http
    literal(&mut block, 0x04, path); // :path
    literal(&mut block, 0x01, "127.0.0.1"); // :authority
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x5, 1, &block));
    stream.write_all(&out).await?;
    let read = async {
        loop {
            let mut header = [0u8; 9];
            stream.read_exact(&mut header).await?;
            let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
            let (kind, flags) = (header[3], header[4]);
            let id = u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            stream.read_exact(&mut payload).await?;
            if kind == 0x4 && flags & 0x1 == 0 {
                stream.write_all(&frame(0x4, 0x1, 0, &[])).await?;
            }
            if kind == 0x1 && id == 1 {
                let status = match payload.first() {
                    Some(0x88) => 200,
                    Some(0x89) => 204,
                    Some(0x8d) => 404,
                    Some(0x8e) => 500,
                    other => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("unexpected :status encoding {other:?}"),
                        ));
                    }
                };
                return Ok(status);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP/2 response"))?
}

async fn scrape(server: &DemoServer) -> String {
    let mut tcp = TcpStream::connect(&server.metrics).await.expect("connect");
    let raw = exchange(&mut tcp, &get("/metrics", "", true))
        .await
        .expect("scrape /metrics");
    assert_eq!(raw.code, 200, "{}", raw.body);
    raw.body
}

fn metric(exposition: &str, series: &str) -> f64 {
    common::sample(exposition, series).unwrap_or_else(|| panic!("no {series} in:\n{exposition}"))
}

/// A connection that says nothing, before its first request or after a response, is closed once the idle timeout
/// has passed (and not before), on both ports, over HTTP/1.1 and HTTP/2, plain and TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = DemoServer::start_under(&["env", "SMART_AUTOSCALER_IDLE_TIMEOUT=2s"], &[]);
    let connector = tls_connector(&server);
    let limit = Duration::from_secs(15);
    let mut waits = Vec::new();

    // Before the first request: plain TCP on both ports, and a finished TLS handshake.
    for (what, addr) in [
        ("metrics port, silent TCP", server.metrics.clone()),
        ("secure port, silent TCP", server.secure.clone()),
    ] {
        let mut tcp = TcpStream::connect(&addr).await.expect("connect");
        waits.push(tokio::spawn(async move {
            (what, closed_within(&mut tcp, limit).await)
        }));
    }
    let mut tls = tls_connect(&connector, &server.secure)
        .await
        .expect("handshake");
    waits.push(tokio::spawn(async move {
        (
            "secure port, TLS handshake then silence",
            closed_within(&mut tls, limit).await,
        )
    }));

    // Between requests: one HTTP/1.1 keep-alive request, then silence.
    let mut plain = TcpStream::connect(&server.metrics).await.expect("connect");
    let raw = exchange(&mut plain, &get("/healthz", "", false))
        .await
        .expect("HTTP/1.1 on the metrics port");
    assert_eq!(raw.code, 200);
    waits.push(tokio::spawn(async move {
        (
            "metrics port, HTTP/1.1 after a response",
            closed_within(&mut plain, limit).await,
        )
    }));
    let mut tls = tls_connect(&connector, &server.secure)
        .await
        .expect("handshake");
    let raw = exchange(&mut tls, &get("/healthz", "", false))
        .await
        .expect("HTTP/1.1 on the secure port");
    assert_eq!(raw.code, 200);
    waits.push(tokio::spawn(async move {
        (
            "secure port, HTTP/1.1 after a response",
            closed_within(&mut tls, limit).await,
        )
    }));

    // Between requests over HTTP/2: h2c on the metrics port, h2 over TLS on the secure port.
    let mut plain = TcpStream::connect(&server.metrics).await.expect("connect");
    assert_eq!(
        h2_get(&mut plain, false, "/healthz").await.expect("h2c"),
        200
    );
    waits.push(tokio::spawn(async move {
        (
            "metrics port, HTTP/2 after a response",
            closed_within(&mut plain, limit).await,
        )
    }));
    let mut tls = tls_connect(&connector, &server.secure)
        .await
        .expect("handshake");
    assert_eq!(h2_get(&mut tls, true, "/healthz").await.expect("h2"), 200);
    waits.push(tokio::spawn(async move {
        (
            "secure port, HTTP/2 after a response",
            closed_within(&mut tls, limit).await,
        )
    }));

    let mut failures = Vec::new();
    for wait in waits {
        let (what, closed) = wait.await.expect("join");
        eprintln!("{what}: closed after {closed:?}");
        match closed {
            None => failures.push(format!("{what}: still open after {limit:?}")),
            // The timeout is 2 s, counted by the server from a little before the client's clock starts (accept,
            // or the response leaving the handler): closing much earlier would cut off clients that are merely slow.
            Some(t) if t < Duration::from_secs(1) => {
                failures.push(format!("{what}: closed after only {t:?}"))
            }
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    let text = scrape(&server).await;
    for port in ["secure", "metrics"] {
        let closed = metric(
            &text,
            &format!(
                "smart_autoscaler_http_idle_connections_closed_total{{server=\"{port}\",cause=\"timeout\"}}"
            ),
        );
        assert!(closed >= 3.0, "{port}: {closed} idle closes counted");
    }
}

/// The reproduction of issue 22: with the file-descriptor limit at 256, 150 TLS connections that finish their
/// handshake and then say nothing, plus 200 plain sockets that say nothing (more sockets than descriptors), used to
/// leave both ports unable to accept anything, for good. Now a request on each port still succeeds while the
/// flood is held, and every flood socket is closed by the server (made room for, or timed out).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_flood_past_the_fd_limit_neither_blocks_the_ports_nor_holds_its_sockets() {
    let server = DemoServer::start_under(
        &[
            "env",
            "SMART_AUTOSCALER_IDLE_TIMEOUT=10s",
            "prlimit",
            "--nofile=256:256",
            "--",
        ],
        &[],
    );
    let pid = server.pid();
    let before = open_sockets(pid);
    let connector = tls_connector(&server);
    let started = Instant::now();

    let mut tls_idle = Vec::new();
    let mut handshakes_failed = 0;
    for _ in 0..150 {
        match tokio::time::timeout(
            Duration::from_secs(5),
            tls_connect(&connector, &server.secure),
        )
        .await
        {
            Ok(Ok(stream)) => tls_idle.push(stream),
            _ => handshakes_failed += 1,
        }
    }
    let mut plain_idle = Vec::new();
    for _ in 0..200 {
        plain_idle.push(TcpStream::connect(&server.metrics).await.expect("connect"));
    }
    let held = open_sockets(pid);
    eprintln!(
        "flood opened in {:?}: {} TLS ({handshakes_failed} handshakes failed) + {} plain; server sockets {before} -> {held}",
        started.elapsed(),
        tls_idle.len(),
        plain_idle.len()
    );

    // (b) While the flood is held, each port still answers a normal request.
    let t = Instant::now();
    let plain_answer = async {
        let mut tcp = TcpStream::connect(&server.metrics).await?;
        exchange(&mut tcp, &get("/readyz", "", true)).await
    };
    let plain_answer = tokio::time::timeout(Duration::from_secs(8), plain_answer).await;
    let plain_took = t.elapsed();
    let t = Instant::now();
    let secure_answer = async {
        let mut tls = tls_connect(&connector, &server.secure).await?;
        exchange(&mut tls, &get(GV, "", true)).await
    };
    let secure_answer = tokio::time::timeout(Duration::from_secs(8), secure_answer).await;
    let secure_took = t.elapsed();
    eprintln!(
        "during the flood: metrics port {:?} in {plain_took:?}, secure port {:?} in {secure_took:?}",
        plain_answer.as_ref().map(|r| r.as_ref().map(|r| r.code)),
        secure_answer.as_ref().map(|r| r.as_ref().map(|r| r.code)),
    );

    // (a) Every flood socket gets closed by the server: 10 s idle timeout, plus slack for a loaded machine.
    // The client ends stay open until the server's sockets are counted: a client closing first would let the
    // server close too.
    let limit = Duration::from_secs(25);
    let tls_waits: Vec<_> = tls_idle
        .into_iter()
        .map(|mut s| tokio::spawn(async move { (closed_within(&mut s, limit).await, s) }))
        .collect();
    let plain_waits: Vec<_> = plain_idle
        .into_iter()
        .map(|mut s| tokio::spawn(async move { (closed_within(&mut s, limit).await, s) }))
        .collect();
    let total = tls_waits.len() + plain_waits.len();
    let (mut still_open, mut tls_kept, mut plain_kept) = (0, Vec::new(), Vec::new());
    for wait in tls_waits {
        let (closed, s) = wait.await.expect("join");
        still_open += usize::from(closed.is_none());
        tls_kept.push(s);
    }
    for wait in plain_waits {
        let (closed, s) = wait.await.expect("join");
        still_open += usize::from(closed.is_none());
        plain_kept.push(s);
    }
    // The server's side of a closed socket goes away with it: back to the sockets it held before the flood.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = open_sockets(pid);
    while after > before + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = open_sockets(pid);
    }
    eprintln!(
        "{still_open} of {total} flood sockets still open {:?} after the flood began; server sockets {after} \
         (before {before}, held {held})",
        started.elapsed()
    );
    drop((tls_kept, plain_kept));

    match plain_answer {
        Ok(Ok(raw)) => assert!(raw.code == 200 || raw.code == 503, "{raw:?}"),
        other => panic!("metrics port did not answer during the flood: {other:?}"),
    }
    match secure_answer {
        Ok(Ok(raw)) => assert_eq!(raw.code, 200, "{raw:?}"),
        other => panic!("secure port did not answer during the flood: {other:?}"),
    }
    assert_eq!(
        still_open, 0,
        "{still_open} of {total} idle flood sockets were never closed"
    );
    assert!(
        after <= before + 2,
        "server still holds {after} sockets (before the flood: {before})"
    );
    let text = scrape(&server).await;
    let fd_errors = metric(
        &text,
        "smart_autoscaler_http_accept_errors_total{server=\"metrics\",kind=\"fd_limit\"}",
    ) + metric(
        &text,
        "smart_autoscaler_http_accept_errors_total{server=\"secure\",kind=\"fd_limit\"}",
    );
    assert!(fd_errors > 0.0, "the flood never reached the fd limit");
}

/// `--max-connections` caps each listener: past it, the connection idle the longest is closed to make room, so a
/// flood of silent connections cannot lock out a real client and never holds more than the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listener_holds_at_most_max_connections() {
    let server = DemoServer::start_under(&["env", "SMART_AUTOSCALER_MAX_CONNECTIONS=16"], &[]);
    let pid = server.pid();
    let before = open_sockets(pid);
    let connector = tls_connector(&server);
    let mut held = Vec::new();
    for _ in 0..40 {
        held.push(TcpStream::connect(&server.metrics).await.expect("connect"));
    }
    let mut tls_held = Vec::new();
    for _ in 0..40 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_secs(5),
            tls_connect(&connector, &server.secure),
        )
        .await
        {
            tls_held.push(s);
        }
    }
    let mut tls = tls_connect(&connector, &server.secure)
        .await
        .expect("handshake");
    let raw = exchange(&mut tls, &get(GV, "", true))
        .await
        .expect("secure");
    assert_eq!(raw.code, 200);
    // Connections being closed take a moment to go: poll until the server is down to the cap on each port.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut secure_open, mut metrics_open, mut sockets);
    loop {
        let text = scrape(&server).await;
        secure_open = metric(
            &text,
            "smart_autoscaler_http_open_connections{server=\"secure\"}",
        );
        metrics_open = metric(
            &text,
            "smart_autoscaler_http_open_connections{server=\"metrics\"}",
        );
        sockets = open_sockets(pid);
        if (secure_open <= 16.0 && metrics_open <= 16.0 && sockets <= before + 32)
            || Instant::now() > deadline
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "80 silent connections against a cap of 16: open secure={secure_open} metrics={metrics_open}, server sockets {before} -> {sockets}"
    );
    assert!(secure_open <= 16.0, "secure holds {secure_open}");
    assert!(metrics_open <= 16.0, "metrics holds {metrics_open}");
    assert!(sockets <= before + 32, "server holds {sockets} sockets");
    let text = scrape(&server).await;
    for port in ["secure", "metrics"] {
        let made_room = metric(
            &text,
            &format!(
                "smart_autoscaler_http_idle_connections_closed_total{{server=\"{port}\",cause=\"pressure\"}}"
            ),
        );
        assert!(made_room >= 20.0, "{port}: {made_room}");
    }
    drop((held, tls_held));
}

/// A path segment that percent-decodes to invalid UTF-8 is a 400 `Status`, on both ports (axum's `Path`
/// extractor answers it with plain text `Invalid URL: ...`).
#[tokio::test]
async fn undecodable_path_segments_are_status_errors() {
    let server = DemoServer::start(&[]);
    for path in [
        "/api/v1/deployments/%FF/x",
        "/api/v1/deployments/demo/%C3%28",
        "/api/v1/forecasts/%FF/x",
    ] {
        let mut tcp = TcpStream::connect(&server.metrics).await.expect("connect");
        let raw = exchange(&mut tcp, &get(path, "", true)).await.expect(path);
        assert_status(&raw, 400, &format!("metrics port {path}"));
    }
    let connector = tls_connector(&server);
    for path in [
        format!("{GV}/namespaces/%FF/smart_cpu_utilization"),
        format!("{GV}/namespaces/demo/%FF%FE"),
    ] {
        let mut tls = tls_connect(&connector, &server.secure)
            .await
            .expect("handshake");
        let raw = exchange(&mut tls, &get(&path, "", true))
            .await
            .expect("secure");
        assert_status(&raw, 400, &format!("secure port {path}"));
    }
}

/// Too many header fields, or a head over `--max-header-bytes`, is a 431 `Status` (hyper's own 431 has an empty
/// body), on both ports; the limits are the documented flags.
#[tokio::test]
async fn header_limits_answer_with_status() {
    let server = DemoServer::start(&[]);
    let connector = tls_connector(&server);
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    let big = format!("x-big: {}\r\n", "a".repeat(20 * 1024));
    for (what, headers) in [("150 header fields", &many), ("a 20 KiB head", &big)] {
        let mut tcp = TcpStream::connect(&server.metrics).await.expect("connect");
        let raw = exchange(&mut tcp, &get("/api/v1/deployments", headers, true))
            .await
            .expect(what);
        assert_status(&raw, 431, &format!("metrics port, {what}"));
        let mut tls = tls_connect(&connector, &server.secure)
            .await
            .expect("handshake");
        let raw = exchange(&mut tls, &get(GV, headers, true))
            .await
            .expect(what);
        assert_status(&raw, 431, &format!("secure port, {what}"));
    }
    // Within the limits (100 fields, 16 KiB) the same request is served.
    let fine: String = (0..90).map(|i| format!("x-h{i}: v\r\n")).collect();
    let mut tls = tls_connect(&connector, &server.secure)
        .await
        .expect("handshake");
    let raw = exchange(&mut tls, &get(GV, &fine, true))
        .await
        .expect("90 fields");
    assert_eq!(raw.code, 200, "{raw:?}");
}
