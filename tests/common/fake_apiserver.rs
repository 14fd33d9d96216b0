//! A fake kube-apiserver for tests: serves recorded, realistic list and watch JSON from
//! `tests/fixtures/k8s/` over plain HTTP, with a switch that releases the recorded watch events. There is no
//! kube-apiserver on these machines, so the Kubernetes adapter is tested against recorded API JSON.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::{mpsc, watch};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/k8s");
pub const LIST_RV: &str = "184320";
pub const N1: &str = "ip-10-0-1-23.eu-west-1.compute.internal";
pub const N2: &str = "ip-10-0-2-57.eu-west-1.compute.internal";
pub const N3: &str = "ip-10-0-3-88.eu-west-1.compute.internal";
/// 2025-06-01T12:00:00Z, the "now" of the recording.
pub const NOW: i64 = 1_748_779_200_000;

/// One collection the fake apiserver serves.
pub struct Collection {
    pub path: &'static str,
    pub list: String,
    /// `(resourceVersion, line)` of each recorded watch event.
    pub events: Vec<(u64, String)>,
}

/// A request as the fake apiserver saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub query: BTreeMap<String, String>,
}

impl Seen {
    /// Whether the request was a watch.
    pub fn is_watch(&self) -> bool {
        matches!(
            self.query.get("watch").map(String::as_str),
            Some("true" | "1")
        )
    }
}

pub struct FakeApi {
    pub collections: Vec<Collection>,
    /// Watch events are sent once this turns true.
    pub released: watch::Receiver<bool>,
    /// While true, every new request hangs without an answer (a hung or partitioned apiserver; open watches
    /// already send nothing once their recorded events are out).
    pub paused: watch::Receiver<bool>,
    /// Paths answered with 403 Forbidden.
    pub forbidden: Vec<&'static str>,
    pub seen: Mutex<Vec<Seen>>,
    /// Leases (coordination.k8s.io/v1) by path, with the field manager that owns `spec.holderIdentity`.
    pub leases: Mutex<BTreeMap<String, StoredLease>>,
    /// Events (events.k8s.io/v1) as created or patched, in order: (method, namespace path, body).
    pub events: Mutex<Vec<(String, String, Value)>>,
    /// A watch from a resourceVersion below this gets a 410 Expired `ERROR` event, as from an apiserver whose
    /// watch cache no longer reaches that far back (after a restart); 0: never.
    pub expired_below: u64,
}

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/";

/// Records an Event create or patch and answers with the object, as the apiserver does.
fn event(api: &FakeApi, method: &Method, uri: &Uri, body: &[u8]) -> Response {
    let object: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    };
    api.events
        .lock()
        .unwrap()
        .push((method.to_string(), uri.path().to_string(), object.clone()));
    let code = if *method == Method::POST {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        object.to_string(),
    )
        .into_response()
}

/// GET of one namespaced object of a served collection (e.g. `/apis/apps/v1/namespaces/shop/deployments/api`),
/// found in the collection's recorded list.
fn one_object(api: &FakeApi, path: &str) -> Option<Response> {
    let rest = path.strip_prefix("/apis/apps/v1/namespaces/")?;
    let mut parts = rest.split('/');
    let (ns, resource, name) = (parts.next()?, parts.next()?, parts.next()?);
    let c = api
        .collections
        .iter()
        .find(|c| c.path == format!("/apis/apps/v1/{resource}"))?;
    let list: Value = serde_json::from_str(&c.list).ok()?;
    let item = list["items"]
        .as_array()?
        .iter()
        .find(|i| i["metadata"]["namespace"] == ns && i["metadata"]["name"] == name)?;
    let mut item = item.clone();
    item["apiVersion"] = Value::String("apps/v1".into());
    item["kind"] = Value::String("Deployment".into());
    Some(
        (
            [(header::CONTENT_TYPE, "application/json")],
            item.to_string(),
        )
            .into_response(),
    )
}

/// A Lease as the fake apiserver stores it.
#[derive(Debug, Clone)]
pub struct StoredLease {
    pub object: Value,
    /// The field manager owning `spec.holderIdentity` (server-side apply's conflict rule).
    pub holder_owner: Option<String>,
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";

/// The Lease subset of the API that `kube-lease-manager` uses: get, create, strategic-merge patch and
/// server-side apply, with apply's conflict on `spec.holderIdentity` when another field manager owns a different
/// value (the rule that keeps two candidates from both taking a free lease).
fn lease(api: &FakeApi, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let path = uri.path().to_string();
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let manager = query.get("fieldManager").cloned().unwrap_or_default();
    let force = query.get("force").is_some_and(|f| f == "true");
    let json =
        |v: &Value| ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response();
    let mut leases = api.leases.lock().unwrap();
    let next_rv = leases.len() as u64 * 1000 + 500_000 + rand_rv();
    match *method {
        Method::GET => match leases.get(&path) {
            Some(l) => json(&l.object),
            None => status(
                StatusCode::NOT_FOUND,
                "NotFound",
                "leases.coordination.k8s.io not found",
            ),
        },
        Method::POST => {
            let mut object: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let key = format!("{path}/{name}");
            if leases.contains_key(&key) {
                return status(
                    StatusCode::CONFLICT,
                    "AlreadyExists",
                    "leases.coordination.k8s.io already exists",
                );
            }
            object["metadata"]["resourceVersion"] = Value::String(next_rv.to_string());
            let holder_owner = object["spec"]["holderIdentity"]
                .as_str()
                .map(|_| manager.clone());
            leases.insert(
                key,
                StoredLease {
                    object: object.clone(),
                    holder_owner,
                },
            );
            (StatusCode::CREATED, json(&object)).into_response()
        }
        Method::PATCH => {
            let patch: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
            };
            let apply = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/apply-patch"));
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            let stored = match leases.get(&path) {
                Some(l) => l.clone(),
                None if apply => StoredLease {
                    object: serde_json::json!({
                        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                        "metadata": {"name": name}, "spec": {}
                    }),
                    holder_owner: None,
                },
                None => {
                    return status(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        "leases.coordination.k8s.io not found",
                    );
                }
            };
            let mut stored = stored;
            let touches_holder = patch["spec"].get("holderIdentity").is_some();
            let new_holder = patch["spec"]["holderIdentity"].as_str();
            let current = stored.object["spec"]["holderIdentity"].as_str();
            if apply
                && !force
                && touches_holder
                && current.is_some()
                && current != new_holder
                && stored.holder_owner.as_deref().is_some_and(|o| o != manager)
            {
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    &format!(
                        "Apply failed with 1 conflict: conflict with \"{}\": .spec.holderIdentity",
                        stored.holder_owner.clone().unwrap_or_default()
                    ),
                );
            }
            if let Some(fields) = patch["spec"].as_object() {
                if !stored.object["spec"].is_object() {
                    stored.object["spec"] = serde_json::json!({});
                }
                let spec = stored.object["spec"].as_object_mut().expect("spec");
                for (k, v) in fields {
                    if v.is_null() {
                        spec.remove(k);
                    } else {
                        spec.insert(k.clone(), v.clone());
                    }
                }
            }
            if touches_holder {
                stored.holder_owner = new_holder.map(|_| manager.clone());
            }
            stored.object["metadata"]["resourceVersion"] = Value::String(next_rv.to_string());
            let object = stored.object.clone();
            leases.insert(path, stored);
            json(&object)
        }
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "not supported by the fake",
        ),
    }
}

fn rand_rv() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static RV: AtomicU64 = AtomicU64::new(1);
    RV.fetch_add(1, Ordering::Relaxed)
}

pub fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(FIXTURES).join(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub fn collection(path: &'static str, file: &str) -> Collection {
    let list = read(&format!("{file}.json"));
    let parsed: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(parsed["metadata"]["resourceVersion"], LIST_RV, "{file}");
    let events = read(&format!("{file}-watch.jsonl"))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            let rv = event["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap();
            (rv, line.to_string())
        })
        .collect();
    Collection { path, list, events }
}

/// A streaming response body fed by a channel: the shape of a watch response (chunked, never-ending).
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

pub fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()
    });
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What `GET /version` answers (every field `version.Info` has).
pub fn version() -> Response {
    let body = serde_json::json!({
        "major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "recorded",
        "gitTreeState": "clean", "buildDate": "2025-08-27T00:00:00Z", "goVersion": "go1.24.6",
        "compiler": "gc", "platform": "linux/amd64"
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub async fn handle(
    State(api): State<Arc<FakeApi>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut paused = api.paused.clone();
    if paused.wait_for(|p| !*p).await.is_err() {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "stopping",
        );
    }
    // Leases are not counted in `seen`: the tests that count requests count the data plane's.
    if uri.path().starts_with(LEASES) && uri.path().contains("/leases") {
        return lease(&api, &method, &uri, &headers, &body);
    }
    if uri.path().starts_with(EVENTS) && uri.path().contains("/events") {
        return event(&api, &method, &uri, &body);
    }
    if method == Method::GET
        && let Some(found) = one_object(&api, uri.path())
    {
        return found;
    }
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let seen = Seen {
        path: uri.path().to_string(),
        query,
    };
    api.seen.lock().unwrap().push(seen.clone());
    if uri.path() == "/version" {
        return version();
    }
    if api.forbidden.contains(&uri.path()) {
        return status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            &format!(
                "horizontalpodautoscalers.autoscaling is forbidden: User \"system:serviceaccount:smart-autoscaler:smart-autoscaler\" cannot list resource \"horizontalpodautoscalers\" in API group \"autoscaling\" at the cluster scope (path {})",
                uri.path()
            ),
        );
    }
    let Some(c) = api.collections.iter().find(|c| c.path == uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if !seen.is_watch() {
        return ([(header::CONTENT_TYPE, "application/json")], c.list.clone()).into_response();
    }
    let from: u64 = seen
        .query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let lines: Vec<String> = if from < api.expired_below {
        vec![format!(
            "{}\n",
            serde_json::json!({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("too old resource version: {from} ({})", api.expired_below),
                "reason": "Expired", "code": 410
            }})
        )]
    } else {
        c.events
            .iter()
            .filter(|(rv, _)| *rv > from)
            .map(|(_, line)| format!("{line}\n"))
            .collect()
    };
    let (tx, rx) = mpsc::channel(16);
    let mut released = api.released.clone();
    tokio::spawn(async move {
        if released.wait_for(|r| *r).await.is_err() {
            return;
        }
        for line in lines {
            if tx.send(Bytes::from(line)).await.is_err() {
                return;
            }
        }
        // Like the apiserver: keep the watch open until the client goes away.
        tx.closed().await;
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::new(ChannelBody(rx)))
        .unwrap()
}

/// The fake apiserver, its kubeconfig and the switch that releases the watch events.
pub struct Harness {
    pub api: Arc<FakeApi>,
    pub release: watch::Sender<bool>,
    /// Send true to make the apiserver hang, false to bring it back.
    pub pause: watch::Sender<bool>,
    pub server: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
    pub kubeconfig: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn start(forbidden: Vec<&'static str>) -> Harness {
    start_edited(forbidden, |_| {}).await
}

/// [`start`], with the recorded collections changed by `edit` first (an annotation added, say).
pub async fn start_edited(
    forbidden: Vec<&'static str>,
    edit: impl FnOnce(&mut Vec<Collection>),
) -> Harness {
    // As `main` does: one process-wide rustls provider, aws-lc-rs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (release, released) = watch::channel(false);
    let (pause, paused) = watch::channel(false);
    let mut collections = vec![
        collection("/api/v1/nodes", "nodes"),
        collection("/api/v1/pods", "pods"),
        collection("/apis/apps/v1/deployments", "deployments"),
        collection("/apis/apps/v1/replicasets", "replicasets"),
        collection("/apis/autoscaling/v2/horizontalpodautoscalers", "hpas"),
    ];
    edit(&mut collections);
    let api = Arc::new(FakeApi {
        collections,
        released,
        paused,
        forbidden,
        seen: Mutex::new(Vec::new()),
        leases: Mutex::new(BTreeMap::new()),
        events: Mutex::new(Vec::new()),
        expired_below: 0,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new().fallback(handle).with_state(api.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: recorded\n\
             current-context: recorded\nusers:\n- name: recorded\n  user:\n    token: recorded-api-test\n"
        ),
    )
    .unwrap();
    Harness {
        api,
        release,
        pause,
        server,
        _dir: dir,
        kubeconfig,
    }
}

/// The recorded collections, as [`start`] serves them.
pub fn recorded() -> Vec<Collection> {
    vec![
        collection("/api/v1/nodes", "nodes"),
        collection("/api/v1/pods", "pods"),
        collection("/apis/apps/v1/deployments", "deployments"),
        collection("/apis/apps/v1/replicasets", "replicasets"),
        collection("/apis/autoscaling/v2/horizontalpodautoscalers", "hpas"),
    ]
}

/// A fake apiserver that can be killed (its listener and every open connection dropped at once, as when the
/// process dies) and started again on the same port with other collections.
pub struct Killable {
    pub port: u16,
    pub kubeconfig: std::path::PathBuf,
    pub api: Arc<FakeApi>,
    server: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    _release: watch::Sender<bool>,
    _pause: watch::Sender<bool>,
}

impl Killable {
    /// Serves `collections` (watch events released) on a free port.
    pub async fn start(collections: Vec<Collection>) -> Killable {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: recorded\n  cluster:\n    server: http://127.0.0.1:{port}\n\
                 contexts:\n- name: recorded\n  context:\n    cluster: recorded\n    user: recorded\n\
                 current-context: recorded\nusers:\n- name: recorded\n  user:\n    token: recorded-api-test\n"
            ),
        )
        .unwrap();
        let (release, released) = watch::channel(true);
        let (pause, paused) = watch::channel(false);
        let api = Arc::new(FakeApi {
            collections,
            released,
            paused,
            forbidden: vec![],
            seen: Mutex::new(Vec::new()),
            leases: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            expired_below: 0,
        });
        let server = Some(tokio::spawn(accept_loop(listener, api.clone())));
        Killable {
            port,
            kubeconfig,
            api,
            server,
            _dir: dir,
            _release: release,
            _pause: pause,
        }
    }

    /// Drops the listener and every connection (open watches break mid-stream).
    pub async fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves `collections` on the same port, answering watches from below `expired_below` with 410 Expired.
    pub async fn restart(&mut self, collections: Vec<Collection>, expired_below: u64) {
        self.kill().await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let api = Arc::new(FakeApi {
            collections,
            released: self._release.subscribe(),
            paused: self._pause.subscribe(),
            forbidden: vec![],
            seen: Mutex::new(Vec::new()),
            leases: Mutex::new(BTreeMap::new()),
            events: Mutex::new(Vec::new()),
            expired_below,
        });
        self.api = api.clone();
        self.server = Some(tokio::spawn(accept_loop(listener, api)));
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Serves `api` on `listener`, each connection a task of a set this future owns: aborting it drops them all.
async fn accept_loop(listener: tokio::net::TcpListener, api: Arc<FakeApi>) {
    let router = axum::Router::new().fallback(handle).with_state(api);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// A collection generated in memory (the RSS benchmark's synthetic cluster): compact JSON items, listed in pages
/// (`limit` and `continue`, as the apiserver does and kube-runtime's watcher asks for, 500 at a time) and
/// watched with no events until the watch's `timeoutSeconds`, when the stream ends as the apiserver ends it.
pub struct Generated {
    pub path: &'static str,
    /// `PodList`, `NodeList`, ...
    pub kind: &'static str,
    pub api_version: &'static str,
    /// One compact JSON object per item.
    pub items: Vec<String>,
}

impl Generated {
    /// Bytes of all items' JSON.
    pub fn bytes(&self) -> usize {
        self.items.iter().map(String::len).sum()
    }
}

pub struct GeneratedApi {
    pub collections: Vec<Generated>,
    /// resourceVersion of every list.
    pub resource_version: String,
    pub seen: Mutex<Vec<Seen>>,
}

/// One page of `c` from item `offset`, at most `limit` items (0: all).
fn page(c: &Generated, resource_version: &str, offset: usize, limit: usize) -> String {
    let end = if limit == 0 {
        c.items.len()
    } else {
        offset.saturating_add(limit).min(c.items.len())
    };
    let items = &c.items[offset.min(end)..end];
    let mut metadata = serde_json::json!({ "resourceVersion": resource_version });
    if end < c.items.len() {
        metadata["continue"] = Value::from(end.to_string());
        metadata["remainingItemCount"] = Value::from(c.items.len() - end);
    }
    let mut body = String::with_capacity(items.iter().map(|i| i.len() + 1).sum::<usize>() + 256);
    body.push_str(&format!(
        "{{\"kind\":\"{}\",\"apiVersion\":\"{}\",\"metadata\":{metadata},\"items\":[",
        c.kind, c.api_version
    ));
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    body
}

pub async fn handle_generated(State(api): State<Arc<GeneratedApi>>, uri: Uri) -> Response {
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default();
    let seen = Seen {
        path: uri.path().to_string(),
        query,
    };
    api.seen.lock().unwrap().push(seen.clone());
    if uri.path() == "/version" {
        return version();
    }
    let Some(c) = api.collections.iter().find(|c| c.path == uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        );
    };
    if seen.is_watch() {
        // The apiserver ends a watch after its timeoutSeconds; kube-runtime then watches again from the
        // last resourceVersion (no re-list).
        let timeout: u64 = seen
            .query
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(1800);
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_secs(timeout)) => {}
                () = tx.closed() => {}
            }
        });
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(axum::body::Body::new(ChannelBody(rx)))
            .unwrap();
    }
    let limit: usize = seen
        .query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let offset: usize = match seen.query.get("continue") {
        None => 0,
        Some(token) => match token.parse() {
            Ok(offset) => offset,
            Err(_) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            }
        },
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        page(c, &api.resource_version, offset, limit),
    )
        .into_response()
}

/// The fake apiserver over generated collections, and its kubeconfig.
pub struct GeneratedHarness {
    pub api: Arc<GeneratedApi>,
    pub server: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
    pub kubeconfig: std::path::PathBuf,
}

impl Drop for GeneratedHarness {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Serves `collections` (every list at `resource_version`) on a free loopback port.
pub async fn start_generated(
    collections: Vec<Generated>,
    resource_version: &str,
) -> GeneratedHarness {
    let api = Arc::new(GeneratedApi {
        collections,
        resource_version: resource_version.to_string(),
        seen: Mutex::new(Vec::new()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = axum::Router::new()
        .fallback(handle_generated)
        .with_state(api.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: generated\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: generated\n  context:\n    cluster: generated\n    user: generated\n\
             current-context: generated\nusers:\n- name: generated\n  user:\n    token: generated-cluster\n"
        ),
    )
    .unwrap();
    GeneratedHarness {
        api,
        server,
        _dir: dir,
        kubeconfig,
    }
}
