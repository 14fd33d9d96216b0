//! The container image, built here without a container engine: `hack/build-image.sh` packages the binary with
//! umoci, and this test unpacks the image it wrote (not the staging directory) and runs the binary from the
//! image's own root filesystem, as its non-root user, with only the libraries the image holds: `--version`, then
//! `demo` answering the external metrics API over TLS. It also checks the Dockerfile's cached dependency layer:
//! cargo must accept the manifests with the stand-in sources `hack/stand-in-sources.sh` writes, and refuses them
//! without one (the failure the layer exists to avoid).
//!
//! Needs umoci (installed by `hack/install-tools.sh`) and root for `chroot` (CI runs as root here); without
//! root it uses an unprivileged user namespace (`unshare --map-root-user`).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_smart-autoscaler");

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("run {cmd:?}: {e} (is it installed? hack/install-tools.sh installs umoci)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// A command that runs `args` inside `rootfs`: as the image's user 65532 when we are root.
fn in_image(rootfs: &Path, args: &[&str]) -> Command {
    let mut cmd = if is_root() {
        let mut c = Command::new("chroot");
        c.arg("--userspec=65532:65532");
        c
    } else {
        let mut c = Command::new("unshare");
        c.args(["--map-root-user", "chroot"]);
        c
    };
    cmd.arg(rootfs).args(args);
    cmd
}

/// Builds the image from the test binary and unpacks it into a fresh directory; returns (tempdir, bundle).
fn build_and_unpack() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("image");
    let log = run(Command::new("bash")
        .arg(Path::new(ROOT).join("hack/build-image.sh"))
        .env("BIN", BIN)
        .env("OUT", &out)
        .env("TAG", "test"));
    assert!(log.contains("image "), "build-image.sh said: {log}");
    assert!(out.join("smart-autoscaler-test.oci.tar").is_file());
    let bundle = dir.path().join("bundle");
    let mut unpack = Command::new("umoci");
    unpack.arg("unpack");
    if !is_root() {
        unpack.arg("--rootless");
    }
    run(unpack
        .arg("--image")
        .arg(format!("{}:test", out.join("oci").display()))
        .arg(&bundle));
    (dir, bundle)
}

#[test]
fn the_image_runs_the_binary_as_non_root_with_only_its_own_libraries() {
    let (_dir, bundle) = build_and_unpack();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.join("config.json")).expect("config.json"),
    )
    .expect("runtime config is JSON");
    assert_eq!(config["process"]["user"]["uid"], 65532, "{config}");
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/usr/local/bin/smart-autoscaler", "serve"])
    );
    let rootfs = bundle.join("rootfs");
    // Nothing but the binary, the loader and libraries it needs, CA roots and the user database.
    let mut files = Vec::new();
    let mut stack = vec![rootfs.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read rootfs") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path.strip_prefix(&rootfs).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    assert!(
        files.contains(&"usr/local/bin/smart-autoscaler".to_string()),
        "{files:?}"
    );
    assert!(
        files.iter().all(|f| f.starts_with("usr/local/bin/")
            || f.starts_with("lib")
            || f.starts_with("etc/")),
        "unexpected files in the image: {files:?}"
    );

    let version = run(&mut in_image(
        &rootfs,
        &["/usr/local/bin/smart-autoscaler", "--version"],
    ));
    assert_eq!(
        version.trim(),
        format!("smart-autoscaler {}", env!("CARGO_PKG_VERSION"))
    );

    // The demo from the image, on free loopback ports, its state in the image's /tmp.
    let mut child = in_image(
        &rootfs,
        &[
            "/usr/local/bin/smart-autoscaler",
            "demo",
            "--bind-address",
            "127.0.0.1",
            "--secure-port",
            "0",
            "--metrics-port",
            "0",
            "--data-dir",
            "/tmp/demo",
            "--log",
            "warn",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .expect("start demo in the image");
    let mut reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut secure = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut line = String::new();
    while secure.is_empty() && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).expect("read demo stdout") == 0 {
            break;
        }
        if let Some(rest) = line.trim().strip_prefix("listening ") {
            secure = rest
                .split_whitespace()
                .find_map(|f| f.strip_prefix("secure="))
                .unwrap_or_default()
                .to_string();
        }
    }
    std::thread::spawn(move || for _ in reader.lines() {});
    let result = (|| {
        if secure.is_empty() {
            return Err("the demo in the image printed no 'listening' line".to_string());
        }
        let ca = std::fs::read(rootfs.join("tmp/demo/certs/ca.crt")).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let client = reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(&ca).map_err(|e| e.to_string())?])
                .timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| e.to_string())?;
            let url = format!("https://{secure}/apis/external.metrics.k8s.io/v1beta1");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match client.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
                        return Ok(body);
                    }
                    other if Instant::now() > deadline => {
                        return Err(format!("no 200 from {url}: {other:?}"));
                    }
                    _ => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    let body = result.expect("demo in the image answers");
    assert_eq!(body["kind"], "APIResourceList", "{body}");
    assert_eq!(
        body["resources"][0]["name"], "smart_cpu_utilization",
        "{body}"
    );
}

#[test]
fn the_dockerfile_dependency_layer_is_accepted_by_cargo() {
    let stand_in = |skip: Option<&str>| {
        let dir = tempfile::tempdir().expect("tempdir");
        for file in ["Cargo.toml", "Cargo.lock", "crates/domain/Cargo.toml"] {
            let to = dir.path().join(file);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(Path::new(ROOT).join(file), &to).expect("copy manifest");
        }
        run(Command::new("bash")
            .arg(Path::new(ROOT).join("hack/stand-in-sources.sh"))
            .arg(dir.path()));
        if let Some(file) = skip {
            std::fs::remove_file(dir.path().join(file)).expect("remove a stand-in");
        }
        // `cargo fetch` loads every manifest with its targets (what `cargo build` refuses first) without building.
        let ok = Command::new(env!("CARGO"))
            .args(["fetch", "--offline", "--locked"])
            .current_dir(dir.path())
            .output()
            .expect("run cargo fetch")
            .status
            .success();
        (dir, ok)
    };
    let (_dir, ok) = stand_in(None);
    assert!(ok, "cargo refuses the manifests with the stand-in sources");
    let (_dir, ok) = stand_in(Some("benches/rss.rs"));
    assert!(
        !ok,
        "cargo accepted a manifest whose bench target is missing: the check above proves nothing"
    );
    // The Dockerfile copies what the stand-ins replace, and runs the same script.
    let dockerfile =
        std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    for needed in [
        "hack/stand-in-sources.sh",
        "COPY crates/domain/Cargo.toml",
        "COPY src ./src",
        "COPY benches ./benches",
        "COPY crates ./crates",
    ] {
        assert!(dockerfile.contains(needed), "Dockerfile lacks {needed:?}");
    }
    let ignore =
        std::fs::read_to_string(Path::new(ROOT).join(".dockerignore")).expect(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/"),
        ".dockerignore must keep target/ out"
    );
}
