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

/// How to start `serve` ([`Serve::launch`]).
pub struct Launch<'a> {
    pub prometheus_url: &'a str,
    pub kubeconfig: &'a Path,
    /// `--interval`.
    pub interval: &'a str,
    /// Extra flags.
    pub extra: &'a [&'a str],
    /// A command that execs the binary (e.g. `["unshare", "-m", "sh", "-c", "...; exec \"$0\" \"$@\""]`),
    /// keeping its process id.
    pub wrapper: &'a [&'a str],
    /// `--data-dir`; `<dir>/data` when absent.
    pub data_dir: Option<PathBuf>,
    /// Sends the server's log to /dev/null (runs that restart it many times).
    pub quiet: bool,
}

impl Default for Launch<'_> {
    fn default() -> Self {
        Launch {
            prometheus_url: "",
            kubeconfig: Path::new(""),
            interval: "1s",
            extra: &[],
            wrapper: &[],
            data_dir: None,
            quiet: false,
        }
    }
}

/// A running `serve`, killed on drop.
pub struct Serve {
    child: Child,
    /// Holds the certificates and (unless [`Launch::data_dir`] says otherwise) the data directory.
    pub dir: tempfile::TempDir,
    /// The `--data-dir`.
    data_dir: PathBuf,
    /// `127.0.0.1:<port>` of the TLS port.
    pub secure: String,
    /// `127.0.0.1:<port>` of the plain metrics port.
    pub metrics: String,
}

impl Serve {
    /// Makes serving certificates with `smart-autoscaler certs`, then starts `serve --interval 1s` on free ports
    /// against `prometheus_url` and the apiserver of `kubeconfig`, with `extra` flags.
    pub fn start(prometheus_url: &str, kubeconfig: &Path, extra: &[&str]) -> Serve {
        Serve::launch(
            tempfile::tempdir().unwrap(),
            &Launch {
                prometheus_url,
                kubeconfig,
                extra,
                ..Launch::default()
            },
        )
    }

    /// Starts `serve` as [`Launch`] says, with its certificates (made once) and data directory in `dir` (kept
    /// across runs: a restart on the same store passes the previous run's directory back).
    pub fn launch(dir: tempfile::TempDir, launch: &Launch) -> Serve {
        let certs = dir.path().join("certs");
        let bin = super::binary();
        if !certs.join("tls.crt").is_file() {
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
        }
        let data_dir = launch
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        let mut command = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let mut child = command
            // The recorded API answers no reviews; tests/auth.rs covers delegated auth. A test may still pass
            // `--authn-authz on` in `extra` (the flag wins over the variable).
            .env("SMART_AUTOSCALER_AUTHN_AUTHZ", "off")
            .args(["serve", "--bind-address", "127.0.0.1"])
            .args(["--secure-port", "0", "--metrics-port", "0"])
            .args(["--interval", launch.interval])
            .args(["--prometheus-url", launch.prometheus_url])
            .arg("--kubeconfig")
            .arg(launch.kubeconfig)
            .arg("--tls-cert-file")
            .arg(certs.join("tls.crt"))
            .arg("--tls-key-file")
            .arg(certs.join("tls.key"))
            .arg("--data-dir")
            .arg(&data_dir)
            .args(launch.extra)
            .stdout(Stdio::piped())
            .stderr(if launch.quiet {
                Stdio::null()
            } else {
                Stdio::inherit()
            })
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
            data_dir,
            secure,
            metrics,
        }
    }

    /// Process id of the running binary (a wrapper that execs it keeps the id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process with SIGKILL and reaps it, and gives back its directory for a restart.
    pub fn kill_and_keep(mut self) -> tempfile::TempDir {
        self.kill();
        let empty = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, empty)
    }

    /// The CA the serving certificate was signed by.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("certs").join("ca.crt")
    }

    /// The `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
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
