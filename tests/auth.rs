//! Delegated authentication and authorization end to end: the real `demo` binary with `--authn-authz on`, real TLS
//! with generated CAs (front-proxy CA, client CA, an unrelated CA, the demo's serving CA), and a stand-in
//! Kubernetes API (axum, plain HTTP on 127.0.0.1; no kube-apiserver exists on these machines) that serves
//! `kube-system/extension-apiserver-authentication` (list, then a watch held open) and answers `TokenReview` and
//! `SubjectAccessReview` in the shapes of authentication.k8s.io/v1 and authorization.k8s.io/v1. The stand-in counts
//! every review it is asked for, which is how the 10 s caches are proved: a repeated request must not reach it, and
//! one after the TTL must.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing;
use base64::Engine;
use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod common;
use common::fake_apiserver::ChannelBody;
use common::{DemoServer, kubectl_with};

/// Users the stand-in's RBAC allows; everyone else is denied.
const ALLOWED: [&str; 3] = ["alice", "cn-user", "jane"];
const METRIC_PATH: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3Dapi-service";

// ------------------------------------------------------------------------------------------------ certificates

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A client certificate (clientAuth) signed by `ca`: (certificate PEM, key PEM).
fn client_cert(ca: &Ca, cn: &str, orgs: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    for org in orgs {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *org);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

// ------------------------------------------------------------------------------------------------ stand-in API

#[derive(Default)]
struct Standin {
    configmap: Value,
    token_reviews: AtomicUsize,
    access_reviews: AtomicUsize,
    configmap_reads: AtomicUsize,
    /// Every SubjectAccessReview body received.
    access_bodies: Mutex<Vec<Value>>,
    /// Feeds the newest ConfigMap watch, once one is open.
    watch: Mutex<Option<mpsc::Sender<Bytes>>>,
}

async fn configmaps(State(api): State<Arc<Standin>>, uri: Uri) -> Response {
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    assert_eq!(
        query.get("fieldSelector").map(String::as_str),
        Some("metadata.name=extension-apiserver-authentication"),
        "the watch must select the one ConfigMap"
    );
    api.configmap_reads.fetch_add(1, Ordering::SeqCst);
    if query.get("watch").map(String::as_str) == Some("true") {
        // Held open, sending only what the test pushes, as an apiserver does while nothing changes.
        let (tx, rx) = mpsc::channel::<Bytes>(4);
        *api.watch.lock().unwrap() = Some(tx);
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::new(ChannelBody(rx)))
            .unwrap();
    }
    Json(json!({
        "kind": "ConfigMapList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "4021"},
        "items": [api.configmap.clone()]
    }))
    .into_response()
}

async fn token_review(State(api): State<Arc<Standin>>, Json(body): Json<Value>) -> Response {
    api.token_reviews.fetch_add(1, Ordering::SeqCst);
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenReview");
    let token = body["spec"]["token"].as_str().unwrap_or_default();
    let status = match token {
        "jane-token" => json!({
            "authenticated": true,
            "user": {
                "username": "jane",
                "uid": "6f1c3e0a-8c1d-4f57-9d3e-2f3b1c2a9e10",
                "groups": ["dev", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": ["JTI=7d3c"]}
            },
            "audiences": ["https://kubernetes.default.svc.cluster.local"]
        }),
        _ => json!({"user": {}, "error": "invalid bearer token"}),
    };
    Json(json!({
        "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": {"token": token},
        "status": status
    }))
    .into_response()
}

async fn access_review(State(api): State<Arc<Standin>>, Json(body): Json<Value>) -> Response {
    api.access_reviews.fetch_add(1, Ordering::SeqCst);
    assert_eq!(body["apiVersion"], "authorization.k8s.io/v1");
    assert_eq!(body["kind"], "SubjectAccessReview");
    let user = body["spec"]["user"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.access_bodies.lock().unwrap().push(body.clone());
    let status = if ALLOWED.contains(&user.as_str()) {
        json!({"allowed": true, "reason": "RBAC: allowed by ClusterRoleBinding \"readers\" of ClusterRole \"view\""})
    } else {
        json!({"allowed": false})
    };
    Json(json!({
        "kind": "SubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": body["spec"],
        "status": status
    }))
    .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "the server could not find the requested resource", "reason": "NotFound", "code": 404})),
    )
        .into_response()
}

/// Serves the stand-in on a free loopback port; returns its kubeconfig.
async fn start_standin(api: Arc<Standin>, dir: &std::path::Path) -> std::path::PathBuf {
    let router = axum::Router::new()
        .route(
            "/api/v1/namespaces/kube-system/configmaps",
            routing::get(configmaps),
        )
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            routing::post(token_review),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            routing::post(access_review),
        )
        .fallback(not_found)
        .with_state(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let kubeconfig = dir.join("standin-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: standin\n  context:\n    cluster: standin\n    user: sa\n\
             current-context: standin\nusers:\n- name: sa\n  user:\n    token: smart-autoscaler-sa-token\n"
        ),
    )
    .unwrap();
    kubeconfig
}

// ------------------------------------------------------------------------------------------------ clients

/// A client trusting the demo's CA, presenting `identity` (certificate and key PEM) if given. A new client is a new
/// connection, so each one's chain is judged afresh.
fn client(server: &DemoServer, identity: Option<&(String, String)>) -> reqwest::Client {
    let ca = std::fs::read(server.ca_file()).unwrap();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let pem = format!("{key}{cert}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

async fn get(
    client: &reqwest::Client,
    server: &DemoServer,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = client.get(server.secure_url(path));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let code = response.status().as_u16();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (code, body)
}

fn assert_status(body: &Value, code: u16, reason: &str) {
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1", "{body}");
    assert_eq!(body["status"], "Failure", "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], code, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegated_authentication_and_authorization() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let front_proxy_ca = ca("front-proxy-ca");
    let client_ca = ca("kubernetes client CA");
    let unrelated_ca = ca("someone else");
    let proxy = client_cert(&front_proxy_ca, "front-proxy-client", &[]);
    let proxy_not_allowed = client_cert(&front_proxy_ca, "not-the-proxy", &[]);
    // rcgen keeps one value per attribute type, so one O here (the parser reads every O: src/auth/x509.rs).
    let cn_user = client_cert(&client_ca, "cn-user", &["dev"]);
    let admin = client_cert(&client_ca, "admin", &["system:masters"]);
    let stranger = client_cert(&unrelated_ca, "cn-user", &[]);

    let api = Arc::new(Standin {
        configmap: json!({
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system",
                         "resourceVersion": "4020", "uid": "0d4b3c1e-0000-4000-8000-000000000001"},
            "data": {
                "client-ca-file": client_ca.pem,
                "requestheader-client-ca-file": front_proxy_ca.pem,
                "requestheader-allowed-names": "[\"front-proxy-client\"]",
                "requestheader-username-headers": "[\"X-Remote-User\"]",
                "requestheader-group-headers": "[\"X-Remote-Group\"]",
                "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]"
            }
        }),
        ..Standin::default()
    });
    let kubeconfig = start_standin(api.clone(), dir.path()).await;
    let flags = [
        "--authn-authz",
        "on",
        "--authentication-kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--history-days",
        "0",
        "--no-forecast",
        "--webhook-users",
        "cn-user",
        "--extender-users",
        "system:kube-scheduler",
        "--lock-webhook-extender",
    ]
    .map(String::from);
    let server = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        DemoServer::start(&flags)
    })
    .await
    .unwrap();
    let reviews = || {
        (
            api.token_reviews.load(Ordering::SeqCst),
            api.access_reviews.load(Ordering::SeqCst),
        )
    };
    let alice = [
        ("X-Remote-User", "alice"),
        ("X-Remote-Group", "shop-readers"),
    ];

    // Probes: always allowed, no credentials, no review.
    let anonymous = client(&server, None);
    for path in ["/healthz", "/livez", "/readyz"] {
        assert_eq!(get(&anonymous, &server, path, &[]).await.0, 200, "{path}");
    }
    assert_eq!(reviews(), (0, 0));

    // The front proxy's identity, once the ConfigMap has been read.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = get(&client(&server, Some(&proxy)), &server, METRIC_PATH, &alice).await;
        if code == 200 {
            assert_eq!(body["kind"], "ExternalMetricValueList", "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "front-proxy request still {code} after 20 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(api.configmap_reads.load(Ordering::SeqCst) >= 1);
    let sar = api.access_bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sar["spec"]["user"], "alice");
    assert_eq!(
        sar["spec"]["groups"],
        json!(["shop-readers", "system:authenticated"])
    );
    assert_eq!(
        sar["spec"]["resourceAttributes"],
        json!({"namespace": "demo", "verb": "list", "group": "external.metrics.k8s.io",
               "version": "v1beta1", "resource": "smart_cpu_utilization"})
    );
    assert!(sar["spec"].get("nonResourceAttributes").is_none());

    // Allowed decisions are cached: the same request on a new connection asks nobody.
    let before = reviews();
    for _ in 0..3 {
        let (code, _) = get(&client(&server, Some(&proxy)), &server, METRIC_PATH, &alice).await;
        assert_eq!(code, 200);
    }
    assert_eq!(reviews(), before, "a cached decision was asked for again");

    // Front proxy naming a user RBAC denies: 403 Status, cached too.
    let mallory = [("X-Remote-User", "mallory")];
    let (code, body) = get(
        &client(&server, Some(&proxy)),
        &server,
        METRIC_PATH,
        &mallory,
    )
    .await;
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "smart_cpu_utilization.external.metrics.k8s.io is forbidden: User \"mallory\" cannot list resource \
         \"smart_cpu_utilization\" in API group \"external.metrics.k8s.io\" in the namespace \"demo\""
    );
    let after_deny = reviews();
    assert_eq!(after_deny.1, before.1 + 1);
    assert_eq!(
        get(
            &client(&server, Some(&proxy)),
            &server,
            METRIC_PATH,
            &mallory
        )
        .await
        .0,
        403
    );
    assert_eq!(reviews(), after_deny, "a cached denial was asked for again");

    // A certificate from the front-proxy CA whose CN is not allowed: its headers are not believed (401).
    let (code, body) = get(
        &client(&server, Some(&proxy_not_allowed)),
        &server,
        METRIC_PATH,
        &alice,
    )
    .await;
    assert_eq!(code, 401);
    assert_status(&body, 401, "Unauthorized");

    // A client certificate from the client CA: CN and O.
    let (code, _) = get(&client(&server, Some(&cn_user)), &server, METRIC_PATH, &[]).await;
    assert_eq!(code, 200);
    let sar = api.access_bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sar["spec"]["user"], "cn-user");
    assert_eq!(
        sar["spec"]["groups"],
        json!(["dev", "system:authenticated"])
    );
    // Discovery is a non-resource request.
    let (code, _) = get(
        &client(&server, Some(&cn_user)),
        &server,
        "/apis/external.metrics.k8s.io/v1beta1",
        &[],
    )
    .await;
    assert_eq!(code, 200);
    let sar = api.access_bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        sar["spec"]["nonResourceAttributes"],
        json!({"path": "/apis/external.metrics.k8s.io/v1beta1", "verb": "get"})
    );

    // A certificate from a CA nobody trusts: 401, and the handshake itself succeeds (judged per request).
    let (code, body) = get(&client(&server, Some(&stranger)), &server, METRIC_PATH, &[]).await;
    assert_eq!(code, 401);
    assert_status(&body, 401, "Unauthorized");

    // system:masters: allowed with no review (the stand-in would deny "admin").
    let before = reviews();
    let (code, _) = get(&client(&server, Some(&admin)), &server, METRIC_PATH, &[]).await;
    assert_eq!(code, 200);
    assert_eq!(reviews(), before);

    // Bearer tokens: a TokenReview, cached for valid and invalid tokens alike.
    let before = reviews();
    let jane = [("Authorization", "Bearer jane-token")];
    for _ in 0..3 {
        assert_eq!(get(&anonymous, &server, METRIC_PATH, &jane).await.0, 200);
    }
    assert_eq!(
        reviews().0,
        before.0 + 1,
        "valid token reviewed more than once"
    );
    let sar = api.access_bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sar["spec"]["user"], "jane");
    assert_eq!(sar["spec"]["uid"], "6f1c3e0a-8c1d-4f57-9d3e-2f3b1c2a9e10");
    assert_eq!(
        sar["spec"]["extra"],
        json!({"authentication.kubernetes.io/credential-id": ["JTI=7d3c"]})
    );
    let forged = [("Authorization", "Bearer forged")];
    for _ in 0..3 {
        let (code, body) = get(&anonymous, &server, METRIC_PATH, &forged).await;
        assert_eq!(code, 401);
        assert_status(&body, 401, "Unauthorized");
    }
    assert_eq!(
        reviews().0,
        before.0 + 2,
        "invalid token reviewed more than once"
    );

    // No credentials at all: anonymous, which RBAC denies.
    let (code, body) = get(&anonymous, &server, METRIC_PATH, &[]).await;
    assert_eq!(code, 403);
    assert_status(&body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("User \"system:anonymous\""),
        "{body}"
    );
    // Unknown paths are authorized like any other: no 404 for strangers.
    assert_eq!(get(&anonymous, &server, "/nothing-here", &[]).await.0, 403);

    // The webhook and the extender, locked to their callers: no review either way.
    let before = reviews();
    let post = |identity: Option<&(String, String)>, path: &str, headers: &[(&str, &str)]| {
        let mut request = client(&server, identity)
            .post(server.secure_url(path))
            .header("content-type", "application/json")
            .body("{}");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        async move { request.send().await.unwrap().status().as_u16() }
    };
    let code = post(Some(&cn_user), "/mutate/deployments", &[]).await;
    assert!(
        code != 401 && code != 403,
        "the webhook's caller got {code}"
    );
    assert_eq!(post(None, "/mutate/deployments", &jane).await, 403);
    assert_eq!(post(Some(&cn_user), "/scheduler/filter", &[]).await, 403);
    assert_eq!(reviews().1, before.1, "a locked path asked for a review");

    // kubectl through a kubeconfig that presents the client certificate.
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user_kubeconfig = dir.path().join("cn-user-kubeconfig");
    std::fs::write(
        &user_kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
             contexts:\n- name: demo\n  context:\n    cluster: demo\n    user: cn-user\ncurrent-context: demo\n\
             users:\n- name: cn-user\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            server.secure_url(""),
            server.ca_file().display(),
            b64(&cn_user.0),
            b64(&cn_user.1)
        ),
    )
    .unwrap();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        kubectl_with(&user_kubeconfig, &["get", "--raw", METRIC_PATH])
    })
    .await
    .unwrap();
    assert!(ok, "kubectl get --raw failed: {stderr}");
    let list: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(list["kind"], "ExternalMetricValueList");
    // The demo's own kubeconfig carries a placeholder token: reviewed, refused, and kubectl says so.
    let demo_kubeconfig = server.kubeconfig.clone();
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || {
        kubectl_with(&demo_kubeconfig, &["get", "--raw", METRIC_PATH])
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(stderr.contains("Unauthorized"), "{stderr}");

    // After the 10 s TTL, the decision is asked for again.
    let before = reviews();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(
        get(&client(&server, Some(&proxy)), &server, METRIC_PATH, &alice)
            .await
            .0,
        200
    );
    assert_eq!(
        reviews().1,
        before.1 + 1,
        "the cached decision outlived its TTL"
    );

    // The counters say the same.
    let metrics = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cached = common::sample(
        &metrics,
        "smart_autoscaler_auth_reviews_total{kind=\"subject_access_review\",source=\"cache\"}",
    )
    .unwrap();
    assert!(cached >= 5.0, "{cached}");
}

/// `serve` has delegated auth on unless told otherwise, and reviews through its own `--kubeconfig` when no
/// `--authentication-kubeconfig` is given. (Prometheus is absent and the stand-in lists no workloads: the secure
/// port serves discovery all the same.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reviews_through_its_kubeconfig_and_warns_when_off() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let api = Arc::new(Standin {
        configmap: json!({"metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
                          "data": {}}),
        ..Standin::default()
    });
    let kubeconfig = start_standin(api.clone(), dir.path()).await;
    let on = kubeconfig.clone();
    let serve = tokio::task::spawn_blocking(move || {
        // The harness turns auth off through the environment; the flag wins.
        common::serve::Serve::start("http://127.0.0.1:1", &on, &["--authn-authz", "on"])
    })
    .await
    .unwrap();
    let ca = std::fs::read(serve.ca_file()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("https://{}/apis", serve.secure);
    let anonymous = client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 403);
    let jane = client
        .get(&url)
        .bearer_auth("jane-token")
        .send()
        .await
        .unwrap();
    assert_eq!(jane.status().as_u16(), 200);
    assert_eq!(api.token_reviews.load(Ordering::SeqCst), 1);
    assert_eq!(api.access_reviews.load(Ordering::SeqCst), 2);
    let sar = api.access_bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        sar["spec"]["nonResourceAttributes"],
        json!({"path": "/apis", "verb": "get"})
    );
    drop(serve);

    // Off: said at start, at warn level, with the bind address.
    let certs = dir.path().join("certs");
    let bin = common::binary();
    let made = std::process::Command::new(&bin)
        .args(["certs", "--san", "127.0.0.1", "--out-dir"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success());
    let mut child = std::process::Command::new(&bin)
        .args([
            "serve",
            "--authn-authz",
            "off",
            "--bind-address",
            "127.0.0.1",
        ])
        .args(["--secure-port", "0", "--metrics-port", "0"])
        .args(["--prometheus-url", "http://127.0.0.1:1", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--tls-cert-file")
        .arg(certs.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(certs.join("tls.key"))
        .arg("--data-dir")
        .arg(dir.path().join("data-off"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let warned = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|line| line.contains("AUTHENTICATION AND AUTHORIZATION ARE OFF"))
    })
    .await
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let line = warned.expect("no warning that auth is off");
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("127.0.0.1"), "{line}");
}

/// A rotated client CA in the ConfigMap applies to the next connection, with no restart: the watch delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_client_ca_applies_through_the_watch() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let old_ca = ca("client CA before");
    let new_ca = ca("client CA after");
    let old_cert = client_cert(&old_ca, "cn-user", &[]);
    let new_cert = client_cert(&new_ca, "cn-user", &[]);
    let configmap = |pem: &str, rv: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system",
                            "resourceVersion": rv},
               "data": {"client-ca-file": pem}})
    };
    let api = Arc::new(Standin {
        configmap: configmap(&old_ca.pem, "4020"),
        ..Standin::default()
    });
    let kubeconfig = start_standin(api.clone(), dir.path()).await;
    let flags = [
        "--authn-authz".to_string(),
        "on".into(),
        "--authentication-kubeconfig".into(),
        kubeconfig.to_str().unwrap().into(),
        "--history-days".into(),
        "0".into(),
        "--no-forecast".into(),
    ];
    let server = tokio::task::spawn_blocking(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        DemoServer::start(&flags)
    })
    .await
    .unwrap();
    let path = "/apis";
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&client(&server, Some(&old_cert)), &server, path, &[])
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the first CA never applied");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        get(&client(&server, Some(&new_cert)), &server, path, &[])
            .await
            .0,
        401
    );
    let watch = loop {
        if let Some(tx) = api.watch.lock().unwrap().clone() {
            break tx;
        }
        assert!(Instant::now() < deadline, "no watch was opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let event = json!({"type": "MODIFIED", "object": configmap(&new_ca.pem, "4022")});
    watch.send(Bytes::from(format!("{event}\n"))).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while get(&client(&server, Some(&new_cert)), &server, path, &[])
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the rotated CA never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(&client(&server, Some(&old_cert)), &server, path, &[])
            .await
            .0,
        401
    );
    // One list and one watch: the rotation came through the watch, not a re-list.
    assert_eq!(api.configmap_reads.load(Ordering::SeqCst), 2);
}
