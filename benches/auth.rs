//! The cost delegated auth adds to a request whose answers are cached (the hot path of the HPA's reads): in-process,
//! `Auth::authenticate` then `Auth::authorize`, for a front-proxy request (the aggregator's, certificate verdict
//! remembered on the connection) and a bearer-token request, after one warm-up request has filled the caches from a
//! stand-in Kubernetes API on loopback. `cargo bench --bench auth` prints the median microseconds per request and
//! how many reviews reached the stand-in (expected: the warm-up's only); `cargo test` runs it a few times.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Json;
use axum::routing::post;
use http::{HeaderMap, Method, Uri};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{Value, json};
use smart_autoscaler::auth::{Attributes, Auth, AuthSettings, AuthnConfig, ClientChain, Decision};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Loopback stand-in answering every TokenReview as `bench` and every SubjectAccessReview with allowed; counts both.
async fn standin(reviews: Arc<AtomicUsize>) -> std::path::PathBuf {
    let (t, s) = (reviews.clone(), reviews);
    let router = axum::Router::new()
        .route(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            post(move |Json(body): Json<Value>| async move {
                t.fetch_add(1, Ordering::SeqCst);
                Json(
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                    "spec": body["spec"], "status": {"authenticated": true,
                    "user": {"username": "bench", "groups": ["bench"]}}}),
                )
            }),
        )
        .route(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            post(move |Json(body): Json<Value>| async move {
                s.fetch_add(1, Ordering::SeqCst);
                Json(
                    json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                    "spec": body["spec"], "status": {"allowed": true}}),
                )
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let path = std::env::temp_dir().join(format!("smart-autoscaler-bench-auth-{port}.kubeconfig"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: s\n  context:\n    cluster: s\n    user: u\ncurrent-context: s\n\
             users:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    path
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (batches, per_batch) = if full { (41, 5_000) } else { (3, 3) };
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let reviews = Arc::new(AtomicUsize::new(0));
        let kubeconfig = standin(reviews.clone()).await;
        let client = smart_autoscaler::k8s::client(Some(&kubeconfig), 100.0, 200)
            .await
            .unwrap();
        let _ = std::fs::remove_file(&kubeconfig);
        let auth = Auth::new(
            AuthSettings {
                enabled: true,
                kubeconfig: None,
                webhook_users: vec![],
                extender_users: vec![],
                lock: false,
            },
            Some(smart_autoscaler::auth::kube::Reviewer::new(client)),
        );
        // A front-proxy CA, and the aggregator's certificate.
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "front-proxy-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "front-proxy-client");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = leaf.signed_by(&key, &issuer).unwrap();
        let data: BTreeMap<String, String> = [
            ("requestheader-client-ca-file", ca_pem.as_str()),
            ("requestheader-allowed-names", "[\"front-proxy-client\"]"),
            ("requestheader-username-headers", "[\"X-Remote-User\"]"),
            ("requestheader-group-headers", "[\"X-Remote-Group\"]"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        auth.set_config(AuthnConfig::from_data(&data, None).unwrap());
        let chain = ClientChain::new(vec![leaf.der().clone()]);
        let uri: Uri = "/apis/external.metrics.k8s.io/v1beta1/namespaces/shop/smart_cpu_utilization?labelSelector=deployment%3Dapi"
            .parse()
            .unwrap();
        let mut proxy_headers = HeaderMap::new();
        proxy_headers.insert(
            "x-remote-user",
            "system:serviceaccount:kube-system:horizontal-pod-autoscaler".parse().unwrap(),
        );
        proxy_headers.append("x-remote-group", "system:serviceaccounts".parse().unwrap());
        proxy_headers.append("x-remote-group", "system:serviceaccounts:kube-system".parse().unwrap());
        let mut token_headers = HeaderMap::new();
        token_headers.insert("authorization", "Bearer eyJhbGciOiJSUzI1NiJ9.bench".parse().unwrap());

        println!("{:<34} {:>12} {:>16}", "request (caches warm)", "median µs", "reviews asked");
        for (name, chain, headers) in [
            ("front proxy (the aggregator)", Some(&chain), &proxy_headers),
            ("bearer token", None, &token_headers),
        ] {
            let one = || async {
                let (user, _) = auth.authenticate(chain, headers).await.unwrap();
                let attributes = Attributes::of(&Method::GET, &uri);
                assert_eq!(auth.authorize(&user, &attributes).await.unwrap(), Decision::Allow);
            };
            one().await; // warm-up: fills the caches
            let before = reviews.load(Ordering::SeqCst);
            let mut samples = Vec::with_capacity(batches);
            for _ in 0..batches {
                let started = Instant::now();
                for _ in 0..per_batch {
                    one().await;
                }
                samples.push(started.elapsed() / per_batch as u32);
            }
            let asked = reviews.load(Ordering::SeqCst) - before;
            println!(
                "{name:<34} {:>12.2} {asked:>16}",
                median(samples).as_secs_f64() * 1e6
            );
            assert_eq!(asked, 0, "a warm request reached the API");
        }
    });
}
