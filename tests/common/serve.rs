//! Runs the real `smart-autoscaler serve` against the fake apiserver (recorded API JSON: no kube-apiserver exists
//! on these machines) and a real Prometheus, with the recording's metrics: shop/api's three pods each using
//! [`POD_CORES`] of a 350m request (50%), shop/web's [`WEB_POD_CORES`], nodes at 60%, 20% and 10% CPU.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::fake_apiserver::{N1, N2, N3};

/// The managed deployment of the recording: shop/api, 3 pods of 250m + a 100m restartable sidecar.
pub const API_PODS: [&str; 3] = [
    "api-7c9d8f6b5d-4kq2x",
    "api-7c9d8f6b5d-9wz7m",
    "api-7c9d8f6b5d-hx5tn",
];
/// CPU each api pod uses, cores: 0.175 of a 350m request is 50%.
pub const POD_CORES: f64 = 0.175;
/// shop/web (managed by annotation): 3 nginx pods of 200m.
pub const WEB_PODS: [&str; 3] = [
    "web-6d8f9c7b4a-tq7vp",
    "web-6d8f9c7b4a-l2m8s",
    "web-6d8f9c7b4a-x9c4k",
];
/// CPU each web pod uses, cores: 0.05 of 200m is 25%.
pub const WEB_POD_CORES: f64 = 0.05;

/// cAdvisor- and node-exporter-shaped counters for the last 40 minutes around `now` (seconds), as OpenMetrics
/// for `promtool tsdb create-blocks-from openmetrics`: every pod of both managed deployments, every node.
pub fn openmetrics(now: i64) -> String {
    let mut om = String::from("# TYPE container_cpu_usage_seconds_total counter\n");
    let start = now - 40 * 60;
    let mut lines = Vec::new();
    // Samples run five minutes past `now`, as a live scrape would keep coming: whenever serve evaluates, the
    // newest sample is at most 15 s old, so rate() extrapolates to the window's end as it does on a live server.
    let mut t = start;
    while t <= now + 300 {
        let elapsed = (t - start) as f64;
        let pods = API_PODS
            .iter()
            .map(|p| (p, "api", POD_CORES))
            .chain(WEB_PODS.iter().map(|p| (p, "nginx", WEB_POD_CORES)));
        for (pod, container, cores) in pods {
            lines.push((
                t,
                format!(
                    "container_cpu_usage_seconds_total{{namespace=\"shop\",pod=\"{pod}\",container=\"{container}\"}} {} {t}",
                    cores * elapsed
                ),
            ));
        }
        t += 15;
    }
    // OpenMetrics wants each family's samples together; sort by series then time.
    lines.sort_by(|a, b| {
        a.1.split(' ')
            .next()
            .cmp(&b.1.split(' ').next())
            .then(a.0.cmp(&b.0))
    });
    for (_, l) in &lines {
        om.push_str(l);
        om.push('\n');
    }
    om.push_str("# TYPE node_cpu_seconds_total counter\n");
    for (node, idle_share) in [(N1, 0.4), (N2, 0.8), (N3, 0.9)] {
        let mut t = start;
        while t <= now + 300 {
            om.push_str(&format!(
                "node_cpu_seconds_total{{instance=\"{node}\",cpu=\"0\",mode=\"idle\"}} {} {t}\n",
                idle_share * (t - start) as f64
            ));
            t += 15;
        }
    }
    om.push_str("# EOF\n");
    om
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A running `serve`, killed on drop.
pub struct Serve {
    child: Child,
    /// Holds the certificates and the data directory.
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:<port>` of the TLS port.
    pub secure: String,
    /// `127.0.0.1:<port>` of the plain metrics port.
    pub metrics: String,
}

impl Serve {
    /// Makes serving certificates with `smart-autoscaler certs`, then starts `serve --interval 1s` on free ports
    /// against `prometheus_url` and the apiserver of `kubeconfig`, with `extra` flags.
    pub fn start(prometheus_url: &str, kubeconfig: &Path, extra: &[&str]) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        let bin = super::binary();
        let out = Command::new(&bin)
            .args(["certs", "--san", "127.0.0.1", "--out-dir"])
            .arg(&certs)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(&bin)
            // The recorded API answers no reviews; tests/auth.rs covers delegated auth. A test may still pass
            // `--authn-authz on` in `extra` (the flag wins over the variable).
            .env("SMART_AUTOSCALER_AUTHN_AUTHZ", "off")
            .args(["serve", "--bind-address", "127.0.0.1"])
            .args(["--secure-port", "0", "--metrics-port", "0"])
            .args(["--interval", "1s", "--prometheus-url", prometheus_url])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--tls-cert-file")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(certs.join("tls.key"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
                .to_string()
        };
        let (secure, metrics) = (field("secure"), field("metrics"));
        Serve {
            child,
            dir,
            secure,
            metrics,
        }
    }

    /// The CA the serving certificate was signed by.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.crt")
    }

    /// The `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `http://127.0.0.1:<port><path>` on the metrics port.
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.metrics)
    }

    /// A kubeconfig for `kubectl` that reaches the secure port, verified against [`Serve::ca_file`].
    pub fn kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("kubeconfig");
        std::fs::write(
            &path,
            smart_autoscaler::app::demo_kubeconfig(
                &format!("https://{}", self.secure),
                &self.ca_file(),
            ),
        )
        .unwrap();
        path
    }

    /// A TLS client that trusts only the serving CA.
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.ca_file()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    /// Waits until `/readyz` answers 200 with a body for which `ok` holds; panics with the last body after
    /// `within`.
    pub async fn wait_readyz(&self, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        wait_for_readyz(&self.metrics, within, |code, body| code == 200 && ok(body)).await
    }

    /// Kills the process (also done on drop).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `http://<metrics>/readyz` until `ok(code, body)` holds; panics with the last answer after `within`.
pub async fn wait_for_readyz(
    metrics: &str,
    within: Duration,
    ok: impl Fn(u16, &str) -> bool,
) -> String {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut last = String::new();
    loop {
        if let Ok(r) = http.get(format!("http://{metrics}/readyz")).send().await {
            let code = r.status().as_u16();
            last = r.text().await.unwrap_or_default();
            if ok(code, &last) {
                return last;
            }
            last = format!("{code}: {last}");
        }
        assert!(Instant::now() < deadline, "readyz never matched: {last}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
