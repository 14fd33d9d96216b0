//! The dashboard of the real binary (`demo` mode) in a real browser: headless Chromium (Debian package `chromium`,
//! installed by `hack/install-tools.sh`) loads every page; the DOM it builds must hold the deployments and the
//! values `/api/v1/deployments` reports for the same snapshot, the browser must log no console message (the pages
//! carry no script, so any message is an error: a blocked resource, a CSP violation, a script), and each page is
//! screenshotted into `target/tmp/dashboard/` (test artifacts). The served HTML of every page,
//! inline SVG included, must parse as XML, and bad input gets HTML error pages (404, 400).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::DemoServer;
use serde_json::Value;

/// How long one Chromium run may take before it is killed and the test fails.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

/// Where the screenshots go (`target/tmp/dashboard/`).
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).expect("create screenshot dir");
    dir
}

/// What one Chromium run printed.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium with `args` then `url`, bounded by [`CHROMIUM_TIMEOUT`]. Panics if Chromium is missing
/// (never a silent skip) or fails.
fn chromium(profile: &Path, args: &[&str], url: &str) -> Run {
    let out = tempfile::tempdir().expect("tempdir");
    let (stdout_path, stderr_path) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            // The tests run as root in a container, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("chromium must be installed (hack/install-tools.sh installs the Debian package `chromium`)");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish {url} within {CHROMIUM_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        stdout: std::fs::read_to_string(&stdout_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&stderr_path).unwrap_or_default(),
    };
    assert!(
        status.success(),
        "chromium {args:?} {url}: {status}\n{}",
        run.stderr
    );
    run
}

/// The console messages in a Chromium log (`...:INFO:CONSOLE:<line>] "message", source: ...`), and uncaught
/// errors however they are logged.
fn console_messages(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

/// The DOM Chromium built for `url`, after checking it logged no console message.
fn dom(profile: &Path, url: &str) -> String {
    let run = chromium(profile, &["--dump-dom"], url);
    let messages = console_messages(&run.stderr);
    assert!(
        messages.is_empty(),
        "{url}: console messages: {messages:#?}"
    );
    assert!(
        run.stdout.contains("</html>"),
        "{url}: no DOM dumped:\n{}",
        run.stderr
    );
    run.stdout
}

/// A screenshot of `url`, saved as `<name>.png` under [`artifacts`]. (Headless Chromium takes screenshots and
/// dumps the DOM through script, so it cannot be run with scripting disabled; the pages' own policy is what keeps
/// scripts off: [`no_script_policy`].)
fn screenshot(profile: &Path, url: &str, name: &str) -> PathBuf {
    let path = artifacts().join(format!("{name}.png"));
    let _ = std::fs::remove_file(&path);
    let run = chromium(
        profile,
        &[
            &format!("--screenshot={}", path.display()),
            "--window-size=1280,2400",
            "--hide-scrollbars",
        ],
        url,
    );
    let messages = console_messages(&run.stderr);
    assert!(
        messages.is_empty(),
        "{url}: console messages: {messages:#?}"
    );
    let png = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{}: not a real screenshot ({} bytes)",
        path.display(),
        png.len()
    );
    path
}

/// The `<tr>` (or other element) that starts at the first `marker`, up to its `</tr>`.
fn row<'a>(dom: &'a str, marker: &str) -> &'a str {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} not in the DOM"));
    let rest = &dom[start..];
    &rest[..rest.find("</tr>").unwrap_or(rest.len())]
}

/// Asserts `html` holds `data-field="<field>">` followed by `value`.
fn has_field(html: &str, field: &str, value: &str, context: &str) {
    let needle = format!("data-field=\"{field}\">{value}<");
    assert!(
        html.contains(&needle),
        "{context}: expected {needle} in\n{html}"
    );
}

fn one_decimal(v: &Value) -> String {
    format!("{:.1}", v.as_f64().expect("a number"))
}

/// The page's `Content-Security-Policy` forbids every script (`default-src 'none'` and no `script-src`), so the
/// browser renders it exactly as it would with scripts off.
fn no_script_policy(url: &str, resp: &reqwest::Response) {
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{url}: no Content-Security-Policy"));
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{url}: {csp}"
    );
}

async fn get(url: &str) -> (u16, String, String) {
    let resp = reqwest::get(url).await.unwrap();
    no_script_policy(url, &resp);
    let code = resp.status().as_u16();
    let kind = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (code, kind, resp.text().await.unwrap())
}

/// The served HTML must be well-formed XML (the pages are written that way, so a browser's error recovery never
/// decides what a chart looks like); returns the number of `<svg>` elements.
fn well_formed(path: &str, html: &str) -> usize {
    let options = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(html, options)
        .unwrap_or_else(|e| panic!("{path}: not well-formed: {e}\n{html}"));
    let svgs: Vec<_> = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "svg")
        .collect();
    for svg in &svgs {
        assert_eq!(
            svg.tag_name().namespace(),
            Some("http://www.w3.org/2000/svg"),
            "{path}"
        );
        assert!(
            svg.children().any(|c| c.tag_name().name() == "title"),
            "{path}: every chart has a title"
        );
    }
    assert!(
        !doc.descendants().any(|n| n.tag_name().name() == "script"),
        "{path}: a page must need no script"
    );
    svgs.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_renders_in_chromium_with_the_api_values() {
    // The detector must see a console error when there is one, or the checks below could never fail.
    let profile = tempfile::tempdir().expect("profile dir");
    let probe = chromium(
        profile.path(),
        &["--dump-dom"],
        "data:text/html,<p>probe</p><script>throw new Error('dashboard-probe')</script>",
    );
    assert!(
        console_messages(&probe.stderr)
            .iter()
            .any(|l| l.contains("dashboard-probe")),
        "the console scan misses an uncaught error:\n{}",
        probe.stderr
    );

    // One tick an hour at real speed: the snapshot stays the same while the test compares pages and API.
    let server = DemoServer::start(&["--interval", "1h", "--speed", "1"]);
    let api: Value = reqwest::get(server.metrics_url("/api/v1/deployments"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let collected = api["collected_at_ms"].as_i64().unwrap();
    let items = api["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{api}");
    let cost: Value = reqwest::get(server.metrics_url("/api/v1/cost"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    // Overview: every deployment with the API's values, from the same snapshot.
    let url = server.metrics_url("/");
    let overview = dom(profile.path(), &url);
    assert!(
        overview.contains(&format!("data-collected-at=\"{collected}\"")),
        "API snapshot {collected}, page: {}",
        row(&overview, "data-collected-at")
    );
    for item in items {
        let id = format!(
            "{}/{}",
            item["namespace"].as_str().unwrap(),
            item["name"].as_str().unwrap()
        );
        let tr = row(&overview, &format!("data-deployment=\"{id}\""));
        for field in ["smart_percent", "raw_percent", "effective_target_percent"] {
            has_field(tr, field, &one_decimal(&item[field]), &id);
        }
        has_field(tr, "replicas", &item["replicas"].to_string(), &id);
        has_field(
            tr,
            "anomalies_active",
            &item["anomalies_active"].to_string(),
            &id,
        );
        assert!(tr.contains(&format!("href=\"/deployments/{id}\"")), "{tr}");
        // The auto-tuned target column shows the explanation's tuning of the same snapshot (docs/tuning.md).
        let explained: Value =
            reqwest::get(server.metrics_url(&format!("/api/v1/deployments/{id}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let t = &explained["explanation"]["tuning"];
        let target = t["target_percent"].as_f64().map(|v| format!("{v:.0}%"));
        let cell = match (t["verdict"].as_str(), target) {
            (None, _) => "none yet".to_string(),
            (Some("tuned"), Some(v)) if t["applied"] == true => format!("{v} (applied)"),
            (Some("tuned"), Some(v)) => format!("{v} (advice)"),
            (Some("keep"), Some(v)) => format!("{v} (kept)"),
            _ => "not enough data".to_string(),
        };
        has_field(tr, "tuning", &cell, &id);
        // The 30-day cost column shows what /api/v1/cost projects for it.
        let priced = cost["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["key"]["namespace"] == item["namespace"] && c["key"]["name"] == item["name"]
            })
            .unwrap_or_else(|| panic!("{id} not in /api/v1/cost: {cost}"));
        let usd = format!("{:.2}", priced["projected_30d_usd"].as_f64().unwrap());
        has_field(tr, "monthly_cost", &usd, &id);
    }
    assert!(overview.contains("Raw, served and effective target per deployment"));
    let shot = screenshot(profile.path(), &url, "overview");
    println!("screenshot {}", shot.display());

    // One page per deployment: values, the explanation in words, and the charts from the store.
    let mut pools = Vec::new();
    for item in items {
        let (ns, name) = (
            item["namespace"].as_str().unwrap(),
            item["name"].as_str().unwrap(),
        );
        let detail: Value =
            reqwest::get(server.metrics_url(&format!("/api/v1/deployments/{ns}/{name}")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        pools.push(detail["inputs"]["pool"].clone());
        let path = format!("/deployments/{ns}/{name}");
        // The first tick's decision is written to the store after the snapshot is published: wait for it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let html = loop {
            let (code, kind, html) = get(&server.metrics_url(&path)).await;
            assert_eq!(code, 200, "{path}: {html}");
            assert!(kind.starts_with("text/html"), "{path}: {kind}");
            if !html.contains("Decisions (0 in") || Instant::now() > deadline {
                break html;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(
            well_formed(&path, &html),
            6,
            "{path}: 24 h and 7 d, CPU, demand and replicas"
        );
        assert!(
            !html.contains("Decisions (0 in"),
            "{path}: no decision stored"
        );
        let page = dom(profile.path(), &server.metrics_url(&path));
        for field in ["smart_percent", "raw_percent", "effective_target_percent"] {
            has_field(&page, field, &one_decimal(&item[field]), &path);
        }
        has_field(&page, "replicas", &item["replicas"].to_string(), &path);
        assert!(page.contains("Why this value"), "{path}");
        assert!(
            page.contains(&format!(
                "Served to the HPA: {}%.",
                one_decimal(&item["smart_percent"])
            )),
            "{path}"
        );
        // The demo seeds a week of history: both windows chart measured data.
        assert_eq!(page.matches("<svg").count(), 6, "{path}");
        assert_eq!(page.matches(">raw, 5-min mean</text>").count(), 2, "{path}");
        assert!(page.contains(">replicas (5-min max)</text>"), "{path}");
        assert_eq!(
            page.matches(">measured (5-min mean x replicas)</text>")
                .count(),
            2,
            "{path}"
        );
        assert!(!page.contains("no history yet"), "{path}");
        screenshot(
            profile.path(),
            &server.metrics_url(&path),
            &format!("deployment-{name}"),
        );
    }
    // A window from the query: one section, charted.
    let path = "/deployments/demo/api-service?window=6h";
    let (code, _, html) = get(&server.metrics_url(path)).await;
    assert_eq!(code, 200);
    assert_eq!(well_formed(path, &html), 3);
    assert!(html.contains("<h2>last 6h</h2>"), "{html}");

    // Nodes: every pool the deployments sit in, with its node count, and a verdict and score per node.
    let url = server.metrics_url("/nodes");
    let (_, _, html) = get(&url).await;
    assert_eq!(well_formed("/nodes", &html), 2);
    let nodes = dom(profile.path(), &url);
    for pool in &pools {
        let name = pool["name"].as_str().unwrap();
        let tr = row(&nodes, &format!("data-pool=\"{name}\""));
        assert!(
            tr.contains(&format!("<td class=\"num\">{}</td>", pool["nodes"])),
            "{tr}"
        );
    }
    let node_rows = nodes.matches("<tr data-node=").count();
    assert_eq!(
        node_rows,
        pools
            .iter()
            .map(|p| (
                p["name"].as_str().unwrap().to_string(),
                p["nodes"].as_u64().unwrap()
            ))
            .collect::<std::collections::BTreeMap<_, _>>()
            .values()
            .sum::<u64>() as usize,
        "one row per node of the pools"
    );
    assert_eq!(
        nodes.matches("data-field=\"filter\">pass<").count()
            + nodes.matches("data-field=\"filter\">fail").count(),
        node_rows
    );
    screenshot(profile.path(), &url, "nodes");

    // Webhook: empty, then the stamp of a real review.
    let url = server.metrics_url("/webhook");
    let (_, _, html) = get(&url).await;
    well_formed("/webhook", &html);
    assert!(html.contains("No Deployment has been stamped"), "{html}");
    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission/java-create.json"),
    )
    .unwrap();
    let resp = server
        .client()
        .post(server.secure_url("/mutate/deployments"))
        .header("Content-Type", "application/json")
        .body(review)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let webhook = dom(profile.path(), &url);
    let tr = row(&webhook, "data-stamp=\"shop/orders\"");
    assert!(tr.contains("CREATE"), "{tr}");
    assert!(
        tr.contains("smart-autoscaler.io/startup-filter-seconds="),
        "{tr}"
    );
    screenshot(profile.path(), &url, "webhook");

    // Bad input: HTML error pages, in the browser too.
    for (path, code) in [
        ("/deployments/demo/no-such-deployment", 404),
        // Markup in a name is escaped (well_formed rejects any script element).
        ("/deployments/demo/%3Cscript%3Ealert(1)%3C%2Fscript%3E", 404),
        ("/deployments/no-such-namespace/api-service", 404),
        ("/?namespace=no-such-namespace", 404),
        ("/deployments/demo/api-service?window=5m", 400),
        ("/deployments/demo/api-service?window=90d", 400),
        ("/deployments/demo/api-service?window=soon", 400),
        ("/?bogus=1", 400),
        ("/nodes?x=1", 400),
        ("/deployments/demo/api-service?window=6h&window=7d", 400),
    ] {
        let (got, kind, html) = get(&server.metrics_url(path)).await;
        assert_eq!(got, code, "{path}: {html}");
        assert!(kind.starts_with("text/html"), "{path}: {kind}");
        well_formed(path, &html);
        assert!(html.contains(&format!("data-status=\"{code}\"")), "{path}");
    }
    let missing = dom(
        profile.path(),
        &server.metrics_url("/deployments/demo/no-such-deployment"),
    );
    assert!(missing.contains("deployment demo/no-such-deployment is not managed"));
    let namespace = dom(
        profile.path(),
        &server.metrics_url("/deployments/no-such-namespace/x"),
    );
    assert!(namespace.contains("namespace \"no-such-namespace\" has no deployment managed"));
}
