//! A real Prometheus for tests: backfills OpenMetrics text with `promtool tsdb create-blocks-from openmetrics`
//! and starts `prometheus` on the blocks (no scrape targets) on a free loopback port; killed on drop. Both tools
//! come from the Debian package installed by hack/install-tools.sh; a missing tool fails the test.
#![allow(dead_code)]

use std::net::TcpListener as StdListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running Prometheus, killed on drop.
pub struct Prometheus {
    child: Child,
    _dir: tempfile::TempDir,
    /// Base URL, `http(s)://127.0.0.1:<port>`.
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `/-/ready` answers 200; false if Prometheus exits or a minute passes.
pub async fn wait_ready(child: &mut Child, url: &str, ca: Option<&Path>) -> bool {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(2));
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).unwrap();
        builder = builder.tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap());
    }
    let client = builder.build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status().is_success()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Writes the OpenMetrics file `input` into TSDB blocks under `tsdb` with `promtool`, panicking with its output
/// when it fails.
pub fn backfill(input: &Path, tsdb: &Path) {
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(input)
        .arg(tsdb)
        .output()
        .expect("promtool must be installed (hack/install-tools.sh installs the Debian prometheus package)");
    assert!(
        out.status.success(),
        "promtool failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether this Prometheus evaluates range selectors left-open (`(start, end]`, Prometheus 3) rather than
/// closed (`[start, end]`, Prometheus 2).
pub fn left_open_ranges() -> bool {
    let out = Command::new("prometheus")
        .arg("--version")
        .output()
        .expect("prometheus must be installed (hack/install-tools.sh installs the Debian prometheus package)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("2");
    version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(2)
        >= 3
}

impl Prometheus {
    /// Backfills `openmetrics` and starts Prometheus on it; `tls` is `(cert, key)` PEM files to serve HTTPS.
    pub async fn start(
        openmetrics: &str,
        tls: Option<(&Path, &Path)>,
        ca: Option<&Path>,
    ) -> Prometheus {
        Prometheus::start_at(openmetrics, tls, ca, None).await
    }

    /// As [`Prometheus::start`], on `port` when given (a restart where the previous one listened), else on a
    /// free one.
    pub async fn start_at(
        openmetrics: &str,
        tls: Option<(&Path, &Path)>,
        ca: Option<&Path>,
        port: Option<u16>,
    ) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("data.om");
        let tsdb = dir.path().join("tsdb");
        std::fs::write(&input, openmetrics).unwrap();
        backfill(&input, &tsdb);
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1h\n").unwrap();
        let mut web_args = Vec::new();
        if let Some((cert, key)) = tls {
            let web = dir.path().join("web.yml");
            std::fs::write(
                &web,
                format!(
                    "tls_server_config:\n  cert_file: {}\n  key_file: {}\n",
                    cert.display(),
                    key.display()
                ),
            )
            .unwrap();
            web_args.push(format!("--web.config.file={}", web.display()));
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        for _ in 0..3 {
            let port = port.unwrap_or_else(free_port);
            let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
            let mut child = Command::new("prometheus")
                .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg(format!("--config.file={}", config.display()))
                // Backfilled blocks are hours old; keep them.
                .arg("--storage.tsdb.retention.time=10y")
                .args(&web_args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("prometheus must be installed (hack/install-tools.sh installs the Debian prometheus package)");
            let url = format!("{scheme}://127.0.0.1:{port}");
            if wait_ready(&mut child, &url, ca).await {
                return Prometheus {
                    child,
                    _dir: dir,
                    url,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            eprintln!("prometheus did not start on port {port}, retrying:\n{log}");
        }
        panic!("prometheus did not become ready");
    }
}
