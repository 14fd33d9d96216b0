//! Malformed input on every surface of the real binary (`demo`, `--authn-authz off`), sent over real sockets
//! (TLS on the secure port, plain HTTP on the metrics port): generated external-metrics paths and label selectors,
//! AdmissionReview bodies for the webhook, ExtenderArgs for the extender's filter and prioritize in both forms
//! (`Nodes` with full Node objects and `NodeNames`), the JSON API and the dashboard pages.
//!
//! The inputs are proptest strategies; cases are drawn from them (no shrinking: a failure prints the request) and
//! sent 24 at a time over kept-alive connections by a small hand-written HTTP/1.1 client, which puts the request
//! target on the wire byte for byte (a URL library would normalise the very paths under test).
//!
//! For each surface: no panic in the server's stderr, no 5xx other than the documented 503 (no data) and 504
//! (request timeout), every error body in the surface's documented form (a Kubernetes `Status` whose `code` is
//! the HTTP status; an HTML error page on dashboard pages), every 200 in the surface's success shape, and a valid
//! request answered afterwards. One `FIGURE|` line per surface goes to stdout (`hack/bench-faults.sh` collects
//! them). Cases per surface: `FUZZ_CASES` (default 400; the bench script runs 100,000 in a release build).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::DemoServer;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const GV: &str = "/apis/external.metrics.k8s.io/v1beta1";
/// Requests in flight at once, each on its own kept-alive connection.
const IN_FLIGHT: usize = 24;
/// hyper's head limit in the server: four times the default `--max-header-bytes`, and its 64 KiB URI limit.
const PARSER_HEAD_BYTES: usize = 64 * 1024;
/// The server's default body limit (`--max-body-bytes`).
const MAX_BODY: usize = 3 * 1024 * 1024;

fn cases() -> usize {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

// --- The server, with its stderr kept ------------------------------------------------------------------------------

/// The demo server with its stderr appended to a file, so panics can be counted.
struct Target {
    server: DemoServer,
    _logs: tempfile::TempDir,
    log: PathBuf,
}

impl Target {
    fn start() -> Target {
        let logs = tempfile::tempdir().expect("tempdir");
        let log = logs.path().join("stderr");
        // `exec` keeps the process id (and the kill on drop) the binary's own.
        let script = format!("exec \"$@\" 2>>'{}'", log.display());
        let server =
            DemoServer::start_under(&["sh", "-c", &script, "sh"], &["--authn-authz", "off"]);
        Target {
            server,
            _logs: logs,
            log,
        }
    }

    fn log_len(&self) -> usize {
        std::fs::read(&self.log).map(|b| b.len()).unwrap_or(0)
    }

    /// Panic reports written to stderr since byte `from`, with the first one's text.
    fn panics_since(&self, from: usize) -> (usize, Option<String>) {
        let log = std::fs::read(&self.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&log[from.min(log.len())..]).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("panicked")).collect();
        (lines.len(), lines.first().map(|l| l.to_string()))
    }
}

fn tls_connector(ca: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("read ca") {
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

// --- A raw HTTP/1.1 client over kept-alive connections -------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Io for T {}

/// Where requests go: the port, and TLS or not.
#[derive(Clone)]
struct Endpoint {
    addr: String,
    tls: Option<TlsConnector>,
}

/// One connection, reopened when the server closes it.
struct Client {
    endpoint: Endpoint,
    conn: Option<Box<dyn Io>>,
}

#[derive(Debug)]
struct Answer {
    code: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        let cut = self.body.len().min(600);
        String::from_utf8_lossy(&self.body[..cut]).into_owned()
    }

    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

impl Client {
    fn new(endpoint: Endpoint) -> Client {
        Client {
            endpoint,
            conn: None,
        }
    }

    async fn connect(&self) -> std::io::Result<Box<dyn Io>> {
        let tcp = TcpStream::connect(&self.endpoint.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(match &self.endpoint.tls {
            Some(connector) => {
                let name = ServerName::try_from("127.0.0.1").expect("server name");
                Box::new(connector.connect(name, tcp).await?)
            }
            None => Box::new(tcp),
        })
    }

    /// Sends one request; a kept-alive connection the server has closed meanwhile is reopened once. The request
    /// is written while the answer is read, so a server that answers early (a 413 on the declared length) and
    /// closes is seen answering, not as a failed write.
    async fn send(&mut self, method: &str, target: &[u8], body: &[u8]) -> Result<Answer, String> {
        let mut request = Vec::with_capacity(target.len() + body.len() + 128);
        request.extend_from_slice(method.as_bytes());
        request.push(b' ');
        request.extend_from_slice(target);
        request.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if method != "GET" {
            request.extend_from_slice(
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    body.len()
                )
                .as_bytes(),
            );
        }
        request.extend_from_slice(b"\r\n");
        request.extend_from_slice(body);
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let conn = match self.conn.take() {
                Some(c) => c,
                None => self.connect().await.map_err(|e| format!("connect: {e}"))?,
            };
            let (read, mut write) = tokio::io::split(conn);
            let mut read = BufReader::new(read);
            let exchange = async {
                let wrote = async {
                    write.write_all(&request).await?;
                    write.flush().await
                };
                tokio::join!(wrote, read_answer(&mut read))
            };
            let (wrote, answer) =
                match tokio::time::timeout(Duration::from_secs(30), exchange).await {
                    Err(_) => return Err("no answer within 30 s".into()),
                    Ok(pair) => pair,
                };
            match answer {
                Ok((answer, keep)) => {
                    if keep && wrote.is_ok() && read.buffer().is_empty() {
                        self.conn = Some(read.into_inner().unsplit(write));
                    }
                    return Ok(answer);
                }
                // The server closed a kept-alive connection before reading this request: a fresh one.
                Err(e)
                    if reused && attempt == 0 && e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    continue;
                }
                Err(e) => return Err(format!("exchange: {e} (write: {wrote:?})")),
            }
        }
        Err("connection closed twice".into())
    }
}

fn invalid(what: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.into())
}

/// Reads one response; `true` when the connection may be used again.
async fn read_answer<R: AsyncBufReadExt + AsyncReadExt + Unpin>(
    conn: &mut R,
) -> std::io::Result<(Answer, bool)> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| invalid(format!("status line {line:?}")))?;
    let (mut length, mut chunked, mut keep, mut content_type) = (None, false, true, String::new());
    loop {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Err(invalid(format!("header {header:?}")));
        };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse::<usize>().ok(),
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            "content-type" => content_type = value.to_string(),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            conn.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| invalid(format!("chunk size {line:?}")))?;
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await?;
            line.clear();
            conn.read_line(&mut line).await?;
            if size == 0 {
                // Trailers end with an empty line; `line` already held the one after the last chunk.
                while line.trim_end() != "" {
                    line.clear();
                    if conn.read_line(&mut line).await? == 0 {
                        break;
                    }
                }
                break;
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        conn.read_exact(&mut body).await?;
    } else {
        conn.read_to_end(&mut body).await?;
        keep = false;
    }
    Ok((
        Answer {
            code,
            content_type,
            body,
        },
        keep,
    ))
}

// --- Cases, checks and the driver ----------------------------------------------------------------------------------

/// One generated request and the form its answer must take.
#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    target: Vec<u8>,
    body: Vec<u8>,
    expect: Expect,
}

/// The documented answer shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// 200: an `ExternalMetricValueList`; errors: `Status`.
    External,
    /// 200: an AdmissionReview allowing the object (the webhook never denies); errors: `Status`.
    Webhook,
    /// 200: an `ExtenderFilterResult` (its `Error` set for a malformed ExtenderArgs); errors: `Status`.
    Filter,
    /// 200: a `HostPriorityList`; errors: `Status`.
    Prioritize,
    /// 200: JSON; errors: `Status`.
    JsonApi,
    /// 200: HTML; errors: an HTML error page naming the status, or a `Status` when no page route matched.
    Dashboard,
}

/// Builds a surface's strategy.
type Cases = Box<dyn FnOnce() -> BoxedStrategy<Case> + Send>;

/// What one answer was.
enum Verdict {
    Fine,
    Unexpected5xx(String),
    Other(String),
}

fn describe(case: &Case, answer: &Answer) -> String {
    let cut = case.body.len().min(300);
    format!(
        "{} {} (body {} bytes: {:?}) -> {} {}: {}",
        case.method,
        String::from_utf8_lossy(&case.target[..case.target.len().min(300)]),
        case.body.len(),
        String::from_utf8_lossy(&case.body[..cut]),
        answer.code,
        answer.content_type,
        answer.text()
    )
}

/// Whether `answer` is a Kubernetes `Status` for its own HTTP code.
fn is_status(answer: &Answer) -> bool {
    answer.content_type.starts_with("application/json")
        && answer.json().is_some_and(|s| {
            s["kind"] == "Status"
                && s["apiVersion"] == "v1"
                && s["status"] == "Failure"
                && s["code"] == answer.code
                && s["reason"].as_str().is_some_and(|r| !r.is_empty())
                && s["message"].as_str().is_some_and(|m| !m.is_empty())
        })
}

fn is_error_page(answer: &Answer) -> bool {
    answer.content_type.starts_with("text/html")
        && String::from_utf8_lossy(&answer.body)
            .contains(&format!("data-status=\"{}\"", answer.code))
}

fn check(case: &Case, answer: &Answer) -> Verdict {
    let code = answer.code;
    // Past hyper's own limits (a target of 64 KiB, a head of four times --max-header-bytes) the parser answers
    // a bare 414 or 431 and closes the connection before any of the server's code runs (docs/reliability.md).
    if case.target.len() > PARSER_HEAD_BYTES - 200
        && (code == 414 || code == 431)
        && answer.body.is_empty()
    {
        return Verdict::Fine;
    }
    if code >= 500 && code != 503 && code != 504 {
        return Verdict::Unexpected5xx(describe(case, answer));
    }
    let fine = if code == 200 {
        let json = answer.json();
        match case.expect {
            Expect::External => json.is_some_and(|v| v["kind"] == "ExternalMetricValueList"),
            Expect::Webhook => json.is_some_and(|v| {
                v["kind"] == "AdmissionReview" && v["response"]["allowed"] == json!(true)
            }),
            Expect::Filter => json.is_some_and(|v| {
                v.as_object().is_some_and(|o| {
                    o.get("Error")
                        .and_then(Value::as_str)
                        .is_some_and(|e| !e.is_empty())
                        || o.contains_key("NodeNames")
                        || o.contains_key("Nodes")
                })
            }),
            Expect::Prioritize => json.is_some_and(|v| {
                v.as_array().is_some_and(|a| {
                    a.iter()
                        .all(|h| h["Host"].is_string() && h["Score"].is_i64())
                })
            }),
            // The schedule's exports and the report's text are the documented non-JSON answers.
            Expect::JsonApi => {
                json.is_some()
                    || (["text/plain", "application/yaml"]
                        .iter()
                        .any(|t| answer.content_type.starts_with(t))
                        && case.target.windows(7).any(|w| w == b"format="))
            }
            Expect::Dashboard => answer.content_type.starts_with("text/html"),
        }
    } else if (200..300).contains(&code) {
        false
    } else {
        is_status(answer) || (case.expect == Expect::Dashboard && is_error_page(answer))
    };
    if fine {
        Verdict::Fine
    } else {
        Verdict::Other(describe(case, answer))
    }
}

#[derive(Default)]
struct Tally {
    cases: AtomicUsize,
    unexpected_5xx: AtomicUsize,
    other: AtomicUsize,
    codes: Mutex<BTreeMap<u16, usize>>,
    examples: Mutex<Vec<String>>,
}

impl Tally {
    fn note(&self, example: String) {
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 5 {
            examples.push(example);
        }
    }
}

/// Draws `n` cases from `strategy` in a thread of its own and sends them `IN_FLIGHT` at a time.
async fn drive(endpoint: Endpoint, strategy: Cases, n: usize, seed: u64) -> Arc<Tally> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Case>(4 * IN_FLIGHT);
    let generator = std::thread::spawn(move || {
        // proptest's recursive strategies are not `Send`: the strategy is built in the thread that draws from it.
        let strategy = strategy();
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        let mut runner = TestRunner::new_with_rng(
            Config::default(),
            TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
        );
        for _ in 0..n {
            let case = strategy
                .new_tree(&mut runner)
                .expect("generate a case")
                .current();
            if tx.blocking_send(case).is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let tally = Arc::new(Tally::default());
    let mut workers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let (rx, tally, endpoint) = (rx.clone(), tally.clone(), endpoint.clone());
        workers.push(tokio::spawn(async move {
            let mut client = Client::new(endpoint);
            loop {
                let Some(case) = rx.lock().await.recv().await else {
                    return;
                };
                tally.cases.fetch_add(1, Ordering::Relaxed);
                match client.send(case.method, &case.target, &case.body).await {
                    Ok(answer) => {
                        *tally.codes.lock().unwrap().entry(answer.code).or_default() += 1;
                        match check(&case, &answer) {
                            Verdict::Fine => {}
                            Verdict::Unexpected5xx(what) => {
                                tally.unexpected_5xx.fetch_add(1, Ordering::Relaxed);
                                tally.note(what);
                            }
                            Verdict::Other(what) => {
                                tally.other.fetch_add(1, Ordering::Relaxed);
                                tally.note(what);
                            }
                        }
                    }
                    Err(error) => {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                        let cut = case.target.len().min(300);
                        tally.note(format!(
                            "{} {} (body {} bytes): {error}",
                            case.method,
                            String::from_utf8_lossy(&case.target[..cut]),
                            case.body.len()
                        ));
                    }
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    generator.join().expect("generator");
    tally
}

/// Runs one surface: `n` cases, the FIGURE line, then a valid request that must still succeed.
async fn surface(
    target: &Target,
    name: &str,
    endpoint: Endpoint,
    strategy: Cases,
    valid: Case,
) -> Result<(), String> {
    let n = cases();
    let log_from = target.log_len();
    let started = Instant::now();
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let tally = drive(endpoint.clone(), strategy, n, seed).await;
    let took = started.elapsed();
    // Give a panic report a moment to reach the file.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (panics, first_panic) = target.panics_since(log_from);
    let sent = tally.cases.load(Ordering::Relaxed);
    let five = tally.unexpected_5xx.load(Ordering::Relaxed);
    let other = tally.other.load(Ordering::Relaxed);
    let after = Client::new(endpoint)
        .send(valid.method, &valid.target, &valid.body)
        .await;
    let after_ok = after
        .as_ref()
        .is_ok_and(|a| a.code == 200 && matches!(check(&valid, a), Verdict::Fine));
    let ok = panics == 0 && five == 0 && other == 0 && sent == n && after_ok;
    println!(
        "FIGURE|fuzz {name}|cases, panics, 5xx, other errors|{sent}, {panics}, {five}, {other}|0 panics, 0 unexpected 5xx|{}",
        if ok { "ok" } else { "FAIL" }
    );
    eprintln!(
        "fuzz {name}: {sent} cases in {took:.1?} ({:.0}/s), codes {:?}",
        sent as f64 / took.as_secs_f64(),
        tally.codes.lock().unwrap()
    );
    if ok {
        return Ok(());
    }
    let mut why = format!(
        "{name}: {sent} of {n} cases, {panics} panics, {five} unexpected 5xx, {other} other errors"
    );
    if let Some(p) = first_panic {
        why.push_str(&format!("\n  first panic: {p}"));
    }
    for e in tally.examples.lock().unwrap().iter() {
        why.push_str(&format!("\n  {e}"));
    }
    if !after_ok {
        why.push_str(&format!("\n  the valid request afterwards: {after:?}"));
    }
    Err(why)
}

// --- Generators ----------------------------------------------------------------------------------------------------

/// Characters a request target may carry unencoded (RFC 3986 pchar and the query's `/?`); what the HTTP parser
/// itself refuses (spaces, controls, `"<>\^`{|}`) gets its bare 400, never reaches the server's code, and is
/// covered by `request_lines_the_parser_refuses_close_the_connection_and_nothing_else` instead.
const RAW_OK: &[u8] = b"-._~!$&'()*+,;=:@/?%";

fn raw_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || RAW_OK.contains(&b)
}

/// How a string becomes part of a request target.
fn encode(bytes: &[u8], mode: u8) -> Vec<u8> {
    const UNRESERVED: &[u8] = b"-._~";
    let mut out = Vec::with_capacity(bytes.len() * 3);
    for (i, &b) in bytes.iter().enumerate() {
        let keep = match mode % 3 {
            // Everything encoded.
            0 => false,
            // The unreserved characters kept, everything else encoded.
            1 => b.is_ascii_alphanumeric() || UNRESERVED.contains(&b),
            // Whatever the parser lets through kept as is (so `%`, `&`, `=`, `/` keep their meaning), every other
            // third byte encoded even so.
            _ => raw_ok(b) && i % 3 != 0,
        };
        if keep {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// Text for a path segment or a query value: names that exist, names shaped like Kubernetes ones, arbitrary
/// Unicode, arbitrary bytes (invalid UTF-8 included), broken escapes and dot segments, and very long ones.
fn segment_text(known: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(known).prop_map(|s| s.as_bytes().to_vec()),
        2 => "[a-z0-9]([-a-z0-9.]{0,70}[a-z0-9])?".prop_map(String::into_bytes),
        2 => "\\PC{0,24}".prop_map(String::into_bytes),
        2 => proptest::collection::vec(any::<u8>(), 0..32),
        1 => proptest::sample::select(&[
            "", ".", "..", "%", "%Z", "%ZZ", "%%", "%2", "%00", "%2F", "%2e%2e", "%C3%28", "%FF",
            "%ED%A0%80", "a%", "\u{0}", "\u{FEFF}", "deployment%3Dapi-service",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => (1usize..20_000, any::<u8>()).prop_map(|(n, b)| vec![b'a' + b % 26; n]),
    ]
}

/// A segment as it goes on the wire: encoded in one of the [`encode`] modes; raw escapes from the list above are
/// sent as they are (that is the point of them).
fn segment(known: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (segment_text(known), any::<u8>()).prop_map(|(text, mode)| {
        if text.contains(&b'%') && mode % 2 == 0 && text.iter().all(|b| raw_ok(*b)) {
            text
        } else {
            encode(&text, mode)
        }
    })
}

/// Label selectors: the forms the HPA sends, the grammar's operators in random order, arbitrary text, and huge
/// ones.
fn selector() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("deployment".to_string()),
        Just("app".to_string()),
        Just("app.kubernetes.io/name".to_string()),
        "[a-zA-Z0-9./_-]{0,70}",
        "\\PC{0,12}",
    ];
    let value = prop_oneof![
        Just("api-service".to_string()),
        Just("batch-processor".to_string()),
        "[a-zA-Z0-9._-]{0,70}",
        "\\PC{0,12}",
    ];
    let op = proptest::sample::select(
        &[
            "=", "==", "!=", " in ", " notin ", "!", "", " ", ",", "(", ")", "=(", "!==", " in (",
            ")",
        ][..],
    );
    let term = (key, op, value, any::<bool>()).prop_map(|(k, op, v, paren)| {
        if paren && (op.contains("in")) {
            format!("{k}{op}({v},{v}x)")
        } else {
            format!("{k}{op}{v}")
        }
    });
    let hpa = (
        proptest::sample::select(
            &[
                "deployment=",
                "deployment==",
                "deployment!=",
                "deployment in (",
                "deployment notin (",
            ][..],
        ),
        proptest::sample::select(DEPLOYMENTS),
        proptest::sample::select(&["", ")", ", nope)", ",deployment", ",app=x"][..]),
    )
        .prop_map(|(op, name, tail)| format!("{op}{name}{tail}"));
    prop_oneof![
        4 => hpa,
        6 => proptest::collection::vec(term, 0..6).prop_map(|t| t.join(",")),
        2 => "\\PC{0,64}",
        1 => (1usize..3000).prop_map(|n| {
            let values: Vec<String> = (0..n).map(|i| format!("v{i}")).collect();
            format!("deployment in ({})", values.join(","))
        }),
        1 => (1usize..2000).prop_map(|n| (0..n).map(|i| format!("k{i}=v")).collect::<Vec<_>>().join(",")),
    ]
}

/// A query string: `labelSelector` encoded some way, repeated, with other parameters, or broken pieces.
fn selector_query() -> impl Strategy<Value = Vec<u8>> {
    let pair = (selector(), any::<u8>()).prop_map(|(s, mode)| {
        let mut q = b"labelSelector=".to_vec();
        q.extend(encode(s.as_bytes(), mode));
        q
    });
    let junk = proptest::sample::select(
        &[
            "",
            "&",
            "=",
            "==",
            "&&",
            "labelSelector",
            "labelSelector=",
            "labelSelector=%ZZ",
            "%ZZ=1",
            "labelSelector=%FF%FE",
            "a=b=c",
            "labelSelector[]=x",
            "labelselector=deployment%3Dx",
            "+=+",
            "fieldSelector=metadata.name%3Dx",
            "metricLabelSelector=x",
        ][..],
    )
    .prop_map(|s| s.as_bytes().to_vec());
    proptest::collection::vec(prop_oneof![3 => pair, 1 => junk], 0..4)
        .prop_map(|parts| parts.join(&b'&'))
}

fn get(target: Vec<u8>, expect: Expect) -> Case {
    Case {
        method: "GET",
        target,
        body: Vec::new(),
        expect,
    }
}

/// A method other than the route's, now and then.
fn method() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        30 => Just("GET"),
        1 => Just("POST"),
        1 => Just("PUT"),
        1 => Just("DELETE"),
        1 => Just("PATCH"),
        1 => Just("OPTIONS"),
    ]
}

const NAMESPACES: &[&str] = &["demo", "default", "kube-system"];
const METRICS: &[&str] = &["smart_cpu_utilization", "smart_cpu_utilization_raw"];
const DEPLOYMENTS: &[&str] = &["api-service", "batch-processor", "web-frontend", "worker"];

fn external_cases() -> impl Strategy<Value = Case> {
    let shape = prop_oneof![
        8 => Just(0u8), // namespaces/{ns}/{metric}
        1 => Just(1u8), // an extra segment
        1 => Just(2u8), // a segment missing
        1 => Just(3u8), // the group, version or discovery paths with junk after them
    ];
    (
        shape,
        prop_oneof![1 => Just(b"demo".to_vec()), 1 => segment(NAMESPACES)],
        prop_oneof![1 => Just(METRICS[0].as_bytes().to_vec()), 1 => segment(METRICS)],
        proptest::option::weighted(0.85, selector_query()),
        method(),
    )
        .prop_map(|(shape, ns, metric, query, method)| {
            let mut target = match shape {
                0 => [GV.as_bytes(), b"/namespaces/", &ns, b"/", &metric].concat(),
                1 => [
                    GV.as_bytes(),
                    b"/namespaces/",
                    &ns,
                    b"/",
                    &metric,
                    b"/",
                    &ns,
                ]
                .concat(),
                2 => [GV.as_bytes(), b"/namespaces/", &ns].concat(),
                _ => [b"/apis/external.metrics.k8s.io/".as_slice(), &ns].concat(),
            };
            if let Some(q) = query {
                target.push(b'?');
                target.extend(q);
            }
            Case {
                method,
                target,
                body: Vec::new(),
                expect: Expect::External,
            }
        })
}

/// Arbitrary JSON, a few levels deep, with values the decoders look for.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        proptest::sample::select(
            &[
                "25m",
                "1",
                "0",
                "-1",
                "1e309",
                "0.001m",
                "9223372036854775807",
                "Always",
                "apps",
                "v1",
                "Deployment",
                "Pod",
                "CREATE",
                "UPDATE",
                "DELETE",
                "general-0",
                "compute-1",
                "",
                "\u{0}",
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-zA-Z/~.]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer in `value`.
fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(v, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                pointers(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// A change to a document at one pointer.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Value),
    Remove,
    /// An array at the pointer repeated this many times (or the value wrapped in an array of that many).
    Repeat(usize),
}

fn apply_edit(mut doc: Value, pointer: &str, edit: Edit) -> Value {
    if pointer.is_empty() {
        return match edit {
            Edit::Replace(v) => v,
            Edit::Remove => Value::Null,
            Edit::Repeat(n) => Value::Array(vec![doc; n.min(64)]),
        };
    }
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let key = key.replace("~1", "/").replace("~0", "~");
    match edit {
        Edit::Replace(v) => {
            if let Some(slot) = doc.pointer_mut(pointer) {
                *slot = v;
            }
        }
        Edit::Remove => match doc.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&key);
            }
            Some(Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>()
                    && i < items.len()
                {
                    items.remove(i);
                }
            }
            _ => {}
        },
        Edit::Repeat(n) => {
            if let Some(slot) = doc.pointer_mut(pointer) {
                // At most about 4 MiB (just over the body limit): a thousand copies of a Node list would only
                // cost the generator time.
                let size = serde_json::to_vec(slot).map_or(1, |v| v.len().max(1));
                let n = n.min(4 * 1024 * 1024 / size).max(1);
                *slot = match slot.take() {
                    Value::Array(items) => Value::Array(
                        items
                            .iter()
                            .cycle()
                            .take(items.len() * n)
                            .cloned()
                            .collect(),
                    ),
                    other => Value::Array(vec![other; n]),
                };
            }
        }
    }
    doc
}

/// Bodies made from valid documents: arbitrary bytes, truncations, one or two edits at pointers found in the
/// documents, valid ones grown past (or up to) the body limit, and a few keys respelled.
fn bodies(docs: Vec<Value>) -> impl Strategy<Value = Vec<u8>> {
    let docs = Arc::new(docs);
    let raw: Arc<Vec<Vec<u8>>> = Arc::new(
        docs.iter()
            .map(|d| serde_json::to_vec(d).unwrap())
            .collect(),
    );
    let paths: Arc<Vec<Vec<String>>> = Arc::new(
        docs.iter()
            .map(|d| {
                let mut out = Vec::new();
                pointers(d, String::new(), &mut out);
                out
            })
            .collect(),
    );
    let n = docs.len();
    let edit = prop_oneof![
        4 => any_json().prop_map(Edit::Replace),
        2 => Just(Edit::Remove),
        1 => (2usize..2000).prop_map(Edit::Repeat),
    ];
    let (d1, p1) = (docs.clone(), paths.clone());
    let (r1, r2) = (raw.clone(), raw.clone());
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..256),
        2 => (0..n, any::<proptest::sample::Index>())
            .prop_map(move |(i, cut)| r1[i][..cut.index(r1[i].len())].to_vec()),
        8 => (0..n, proptest::collection::vec((any::<proptest::sample::Index>(), edit), 1..3))
            .prop_map(move |(i, edits)| {
                let mut doc = d1[i].clone();
                for (at, edit) in edits {
                    let pointer = at.get(&p1[i]);
                    doc = apply_edit(doc, pointer, edit);
                }
                serde_json::to_vec(&doc).unwrap()
            }),
        1 => (0..n, prop_oneof![1 => Just(MAX_BODY - 64), 1 => Just(MAX_BODY + 1), 18 => 1usize..200_000])
            .prop_map(move |(i, size)| {
                // A valid document followed by whitespace (still valid JSON) to `size` bytes.
                let mut body = r2[i].clone();
                body.resize(size.max(body.len()), b' ');
                body
            }),
        1 => (0..n, any::<u8>()).prop_map(move |(i, flip)| {
            // Byte-level damage: one byte replaced somewhere in a valid document.
            let mut body = raw[i].clone();
            let at = (flip as usize * 7919) % body.len();
            body[at] = flip;
            body
        }),
    ]
}

fn fixture(dir: &str, name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir)
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn admission_fixtures() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names.iter().map(|n| fixture("admission", n)).collect()
}

fn post_cases(path: &'static str, docs: Vec<Value>, expect: Expect) -> impl Strategy<Value = Case> {
    let query = prop_oneof![
        6 => Just(String::new()),
        2 => Just("?timeout=10s".to_string()),
        1 => "\\?[a-zA-Z0-9=&%._-]{0,40}",
    ];
    let method = prop_oneof![20 => Just("POST"), 1 => Just("GET"), 1 => Just("PUT")];
    (bodies(docs), query, method).prop_map(move |(body, query, method)| Case {
        method,
        target: format!("{path}{query}").into_bytes(),
        body: if method == "GET" { Vec::new() } else { body },
        expect,
    })
}

/// The extender's two forms, with the keys also spelled the way other clients do (`nodenames`, `pod`).
fn extender_docs() -> Vec<Value> {
    let names = fixture("extender", "args-node-names.json");
    let objects = fixture("extender", "args-node-objects.json");
    let mut docs = vec![names.clone(), objects.clone()];
    for doc in [names, objects] {
        if let Value::Object(map) = doc {
            docs.push(Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect(),
            ));
        }
    }
    docs
}

/// Query values for the JSON API and the dashboard: numbers of every size and sign, durations, timestamps and
/// text.
fn query_value() -> impl Strategy<Value = Vec<u8>> {
    let text = prop_oneof![
        proptest::sample::select(
            &[
                "1",
                "0",
                "-1",
                "24",
                "720",
                "721",
                "1h",
                "30m",
                "5m",
                "7d",
                "31d",
                "-1h",
                "0s",
                "1ms",
                "99999999999999999999d",
                "1e309",
                "NaN",
                "inf",
                "1.5",
                "2026-12-05T10:00:00Z",
                "2026-13-45T99:00:00Z",
                "1970-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "now",
                "demo",
                "api-service",
                "json",
                "text",
                "table",
                "keda",
                "cronjob",
                "http://prometheus:9090",
                "",
            ][..]
        )
        .prop_map(String::from),
        any::<i64>().prop_map(|n| n.to_string()),
        (
            any::<i64>(),
            proptest::sample::select(&["ms", "s", "m", "h", "d", "w", "y", ""][..])
        )
            .prop_map(|(n, u)| format!("{n}{u}")),
        "\\PC{0,24}",
    ];
    (text, any::<u8>()).prop_map(|(t, mode)| encode(t.as_bytes(), mode))
}

fn query_of(names: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        6 => proptest::sample::select(names).prop_map(|s| s.as_bytes().to_vec()),
        1 => segment(&["x", "labelSelector", "window", "hours", "limit"]),
    ];
    proptest::collection::vec((name, query_value()), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v)| [n, b"=".to_vec(), v].concat())
            .collect::<Vec<_>>()
            .join(&b'&')
    })
}

fn with_query(path: Vec<u8>, query: Vec<u8>, present: bool) -> Vec<u8> {
    if present {
        [path, b"?".to_vec(), query].concat()
    } else {
        path
    }
}

fn json_api_cases() -> impl Strategy<Value = Case> {
    const ROUTES: &[(&str, &[&str])] = &[
        ("/api/v1/deployments", &[]),
        ("/api/v1/deployments/{ns}/{name}", &[]),
        (
            "/api/v1/deployments/{ns}/{name}/history",
            &["since", "step"],
        ),
        ("/api/v1/forecasts", &[]),
        ("/api/v1/forecasts/{ns}/{name}", &[]),
        (
            "/api/v1/anomalies",
            &["namespace", "deployment", "since", "limit"],
        ),
        ("/api/v1/cost", &["namespace", "hours"]),
        ("/api/v1/recommendations", &["namespace"]),
        (
            "/api/v1/deployments/{ns}/{name}/schedule",
            &[
                "format",
                "min",
                "max",
                "lead",
                "target",
                "hpa",
                "image",
                "prometheus",
            ],
        ),
        ("/api/v1/report/weekly", &["namespace", "format"]),
        ("/api/v2/deployments/{ns}/{name}", &[]),
        ("/api/v2/deployments", &[]),
        ("/api/v1/{ns}", &[]),
    ];
    let all: &'static [&'static str] = &[
        "since",
        "step",
        "namespace",
        "deployment",
        "limit",
        "hours",
        "format",
        "min",
        "max",
        "lead",
        "target",
        "hpa",
    ];
    (
        proptest::sample::select(ROUTES),
        segment(NAMESPACES),
        segment(DEPLOYMENTS),
        query_of(all),
        any::<(bool, bool)>(),
        method(),
    )
        .prop_map(
            |((route, _), ns, name, query, (has_query, extra), method)| {
                let mut path = route
                    .as_bytes()
                    .split(|b| *b == b'/')
                    .map(|s| match s {
                        b"{ns}" => ns.clone(),
                        b"{name}" => name.clone(),
                        other => other.to_vec(),
                    })
                    .collect::<Vec<_>>()
                    .join(&b'/');
                if extra && !has_query {
                    path.extend_from_slice(b"/");
                    path.extend(name.clone());
                }
                Case {
                    method,
                    target: with_query(path, query, has_query),
                    body: Vec::new(),
                    expect: Expect::JsonApi,
                }
            },
        )
}

fn dashboard_cases() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(
            &[
                "/",
                "/nodes",
                "/webhook",
                "/report",
                "/deployments/{ns}/{name}",
                "/deployments/{ns}",
            ][..],
        ),
        segment(NAMESPACES),
        segment(DEPLOYMENTS),
        query_of(&["namespace", "window"]),
        any::<bool>(),
    )
        .prop_map(|(route, ns, name, query, has_query)| {
            let path = route
                .as_bytes()
                .split(|b| *b == b'/')
                .map(|s| match s {
                    b"{ns}" => ns.clone(),
                    b"{name}" => name.clone(),
                    other => other.to_vec(),
                })
                .collect::<Vec<_>>()
                .join(&b'/');
            get(with_query(path, query, has_query), Expect::Dashboard)
        })
}

/// Every surface, one after the other against one server (each prints its FIGURE line); the failures of all of
/// them are reported together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_on_every_surface_is_answered_in_its_documented_form() {
    let target = Target::start();
    let server = &target.server;
    let secure = Endpoint {
        addr: server.secure.clone(),
        tls: Some(tls_connector(&server.ca_file())),
    };
    let metrics = Endpoint {
        addr: server.metrics.clone(),
        tls: None,
    };
    let post = |path: &str, body: &Value, expect| Case {
        method: "POST",
        target: path.as_bytes().to_vec(),
        body: serde_json::to_vec(body).unwrap(),
        expect,
    };
    let mut failures = Vec::new();
    let extender = extender_docs();
    let runs: Vec<(&str, Endpoint, Cases, Case)> = vec![
        (
            "external metrics",
            secure.clone(),
            Box::new(|| external_cases().boxed()),
            get(
                format!("{GV}/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3Dapi-service")
                    .into_bytes(),
                Expect::External,
            ),
        ),
        (
            "webhook",
            secure.clone(),
            Box::new(|| post_cases("/mutate/deployments", admission_fixtures(), Expect::Webhook).boxed()),
            post(
                "/mutate/deployments?timeout=10s",
                &fixture("admission", "java-create.json"),
                Expect::Webhook,
            ),
        ),
        (
            "extender filter",
            secure.clone(),
            Box::new(|| post_cases("/scheduler/filter", extender_docs(), Expect::Filter).boxed()),
            post("/scheduler/filter", &extender[1], Expect::Filter),
        ),
        (
            "extender prioritize",
            secure.clone(),
            Box::new(|| post_cases("/scheduler/prioritize", extender_docs(), Expect::Prioritize).boxed()),
            post("/scheduler/prioritize", &extender[0], Expect::Prioritize),
        ),
        (
            "json api",
            metrics.clone(),
            Box::new(|| json_api_cases().boxed()),
            get(b"/api/v1/deployments".to_vec(), Expect::JsonApi),
        ),
        (
            "dashboard",
            metrics.clone(),
            Box::new(|| dashboard_cases().boxed()),
            get(b"/nodes".to_vec(), Expect::Dashboard),
        ),
    ];
    for (name, endpoint, strategy, valid) in runs {
        if let Err(why) = surface(&target, name, endpoint, strategy, valid).await {
            failures.push(why);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A request line the HTTP parser refuses (a space or a raw non-ASCII byte in the target, a bad version) gets
/// hyper's own bare 400 and the connection closed: it never reaches the server's code, nothing panics, and the
/// next connection is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_lines_the_parser_refuses_close_the_connection_and_nothing_else() {
    let target = Target::start();
    let server = &target.server;
    let endpoint = Endpoint {
        addr: server.secure.clone(),
        tls: Some(tls_connector(&server.ca_file())),
    };
    let from = target.log_len();
    for line in [
        &b"GET /apis/external.metrics.k8s.io/v1beta1/namespaces/de mo/x HTTP/1.1\r\n"[..],
        b"GET /apis/\xff\xfe HTTP/1.1\r\n",
        b"GET /apis HTTP/9.9\r\n",
        b"\x00\x01\x02\x03\r\n",
        b"GET /apis/{x}|<y> HTTP/1.1\r\n",
    ] {
        let client = Client::new(endpoint.clone());
        let mut conn = BufReader::new(client.connect().await.expect("connect"));
        conn.get_mut().write_all(line).await.unwrap();
        conn.get_mut().write_all(b"Host: x\r\n\r\n").await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut conn))
            .await
            .expect("an answer or a close within 10 s");
        match answer {
            Ok((a, keep)) => {
                assert!(
                    a.code == 400 || a.code == 404 || a.code == 505,
                    "{line:?}: {a:?}"
                );
                assert!(
                    a.code != 400 || !keep,
                    "{line:?}: a parser 400 keeps the connection"
                );
                if a.code == 404 {
                    assert!(is_status(&a), "{line:?}: {a:?}");
                }
            }
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{line:?}: {e}"),
        }
    }
    let valid = client_get(&endpoint, GV).await;
    assert_eq!(valid.code, 200, "{valid:?}");
    let (panics, first) = target.panics_since(from);
    assert_eq!(panics, 0, "{first:?}");
}

async fn client_get(endpoint: &Endpoint, path: &str) -> Answer {
    Client::new(endpoint.clone())
        .send("GET", path.as_bytes(), b"")
        .await
        .expect("GET")
}
