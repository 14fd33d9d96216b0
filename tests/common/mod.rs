//! Test support: runs the real `smart-autoscaler demo` binary on free ports in a temporary directory and
//! gives tests a TLS client that verifies the server against the CA the binary generated.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test: `$SMART_AUTOSCALER_TEST_BIN` if set (a copy of this tree's build, when several trees
/// share one target directory and overwrite each other's `target/debug/smart-autoscaler`), else cargo's.
pub fn binary() -> String {
    std::env::var("SMART_AUTOSCALER_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_smart-autoscaler").to_string())
}

/// A running demo server, killed on drop.
pub struct DemoServer {
    child: Child,
    /// Keeps the data directory alive for the server's lifetime.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>` of the TLS port.
    pub secure: String,
    /// `127.0.0.1:<port>` of the plain metrics port.
    pub metrics: String,
    /// The generated kubeconfig.
    pub kubeconfig: PathBuf,
}

impl DemoServer {
    /// Starts `demo` with extra arguments and waits until it is ready.
    pub fn start(extra: &[&str]) -> DemoServer {
        Self::start_under(&[], extra)
    }

    /// Starts `demo` through a wrapper command that execs it (e.g. `["prlimit", "--nofile=256:256", "--"]` or
    /// `["env", "NAME=value"]`), so the server keeps the wrapper's process id.
    pub fn start_under(wrapper: &[&str], extra: &[&str]) -> DemoServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = binary();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let mut child = command
            .args([
                "demo",
                "--secure-port",
                "0",
                "--metrics-port",
                "0",
                "--bind-address",
                "127.0.0.1",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start smart-autoscaler demo under {wrapper:?}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let (mut secure, mut metrics, mut kubeconfig) =
            (String::new(), String::new(), PathBuf::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            line.clear();
            if reader.read_line(&mut line).expect("read stdout") == 0 {
                panic!("demo exited before printing its ports");
            }
            if let Some(rest) = line.trim().strip_prefix("listening ") {
                for field in rest.split_whitespace() {
                    match field.split_once('=') {
                        Some(("secure", v)) => secure = v.to_string(),
                        Some(("metrics", v)) => metrics = v.to_string(),
                        Some(("kubeconfig", v)) => kubeconfig = PathBuf::from(v),
                        _ => {}
                    }
                }
                break;
            }
        }
        assert!(!secure.is_empty(), "no 'listening' line from demo");
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in reader.lines() {});
        let server = DemoServer {
            child,
            dir,
            secure,
            metrics,
            kubeconfig,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = http_status(&format!("http://{}/readyz", self.metrics))
                && r == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("demo never became ready");
    }

    /// Process id of the running binary (for reading `/proc/<pid>/status` and `/proc/<pid>/fd`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The generated CA certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.crt")
    }

    /// A TLS client that trusts only the generated CA.
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.ca_file()).expect("read ca");
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("ca pem")])
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn secure_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.secure)
    }

    /// `http://127.0.0.1:<port><path>` on the metrics port.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    /// Runs `kubectl --kubeconfig <generated> <args>` and returns (success, stdout, stderr).
    pub fn kubectl(&self, args: &[&str]) -> (bool, String, String) {
        kubectl_with(&self.kubeconfig, args)
    }
}

impl Drop for DemoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs kubectl with a kubeconfig; panics with a clear message if kubectl is not installed.
pub fn kubectl_with(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl must be installed (hack/test.sh installs it)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Status code of a plain-HTTP `GET url`, without an async runtime (used while waiting for readiness).
pub fn http_status(url: &str) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or(std::io::ErrorKind::InvalidInput)?;
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((rest, "/".into()));
    let mut stream = std::net::TcpStream::connect(host)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData.into())
}
/// The value of one series in a Prometheus exposition (`name{labels}` exactly as the server writes it), if there.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Prints one `FIGURE|<fault>|<measure>|<value>|<bound>|<ok|FAIL>` line on stdout for `hack/bench-faults.sh`
/// (run the test with `--nocapture`) and returns whether the figure held.
pub fn figure(
    fault: &str,
    measure: &str,
    value: impl std::fmt::Display,
    bound: &str,
    ok: bool,
) -> bool {
    println!(
        "FIGURE|{fault}|{measure}|{value}|{bound}|{}",
        if ok { "ok" } else { "FAIL" }
    );
    ok
}

pub mod fake_apiserver;
pub mod prometheus;
pub mod serve;
