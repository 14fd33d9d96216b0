//! The mutating admission webhook of the real binary (`demo` mode) over TLS: realistic AdmissionReviews from
//! `tests/fixtures/admission/`, patches applied with the real `kubectl patch --local` (the apiserver's JSON Patch
//! library), idempotence through a second UPDATE round, protocol errors, and property tests showing that any
//! body gets a 200 or a 400 and never a patch that would not apply.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use common::{DemoServer, kubectl_with};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use smart_autoscaler::domain::admission::AdmissionConfig;
use smart_autoscaler::http::webhook::review;

/// The path the apiserver calls, with the `?timeout=` it always appends.
const PATH: &str = "/mutate/deployments?timeout=10s";

const STARTUP: &str = "smart-autoscaler.io/startup-filter-seconds";
const TARGET: &str = "smart-autoscaler.io/target-utilization";
const POLICY: &str = "smart-autoscaler.io/policy";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// Posts a body and returns (status, parsed JSON body).
async fn post(server: &DemoServer, client: &reqwest::Client, body: Vec<u8>) -> (u16, Value) {
    let resp = client
        .post(server.secure_url(PATH))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request");
    let code = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "response is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (code, value)
}

/// Posts an AdmissionReview and checks the envelope every answer must have; returns `response`.
async fn admit(server: &DemoServer, client: &reqwest::Client, review: &Value) -> Value {
    let (code, body) = post(server, client, serde_json::to_vec(review).unwrap()).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    let response = body["response"].clone();
    assert_eq!(
        response["uid"], review["request"]["uid"],
        "uid must be echoed"
    );
    assert_eq!(response["allowed"], true);
    // patch and patchType come together or not at all: the apiserver rejects one without the other.
    assert_eq!(
        response.get("patch").is_some(),
        response.get("patchType").is_some(),
        "{response}"
    );
    if response.get("patchType").is_some() {
        assert_eq!(response["patchType"], "JSONPatch");
    }
    for w in response["warnings"].as_array().into_iter().flatten() {
        assert!(w.as_str().unwrap().chars().count() <= 120, "{w}");
    }
    response
}

fn decode_patch(response: &Value) -> Option<String> {
    let b64 = response.get("patch")?.as_str().expect("patch is a string");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("patch is standard base64");
    let text = String::from_utf8(bytes).expect("patch is UTF-8");
    let ops: Value = serde_json::from_str(&text).expect("patch is JSON");
    assert!(
        ops.as_array().is_some_and(|a| !a.is_empty()),
        "a sent patch is a non-empty array"
    );
    Some(text)
}

/// Applies a JSON Patch to an object with the real `kubectl patch --local`.
fn kubectl_patch(server: &DemoServer, object: &Value, patch: &str) -> Value {
    let file = server.dir.path().join("object.json");
    std::fs::write(&file, serde_json::to_vec_pretty(object).unwrap()).unwrap();
    let (ok, out, err) = kubectl_with(
        &server.kubeconfig,
        &[
            "patch",
            "--local",
            "-f",
            file.to_str().unwrap(),
            "--type=json",
            "-p",
            patch,
            "-o",
            "json",
            // Printed objects hide managedFields unless asked; the comparison needs the whole object.
            "--show-managed-fields",
        ],
    );
    assert!(ok, "kubectl patch failed: {err}\npatch: {patch}");
    serde_json::from_str(&out).unwrap()
}

/// What a fixture must produce: the webhook-owned annotations after the patch (`None` for "no patch"), and
/// substrings the warnings must contain.
struct Expect {
    fixture: &'static str,
    stamps: Option<&'static [(&'static str, &'static str)]>,
    warnings: &'static [&'static str],
}

const EXPECTATIONS: &[Expect] = &[
    Expect {
        fixture: "java-create.json",
        stamps: Some(&[
            (STARTUP, "180"),
            (
                POLICY,
                "startup-filter-seconds=180 (JVM runtime: env JAVA_TOOL_OPTIONS in container orders)",
            ),
        ]),
        warnings: &[],
    },
    Expect {
        fixture: "go-create.json",
        stamps: Some(&[
            (STARTUP, "15"),
            (
                POLICY,
                "startup-filter-seconds=15 (Go runtime: env GOMEMLIMIT in container api)",
            ),
        ]),
        warnings: &[],
    },
    Expect {
        fixture: "small-request-create.json",
        stamps: Some(&[
            (STARTUP, "30"),
            (TARGET, "88"),
            (
                POLICY,
                "startup-filter-seconds=30 (Python runtime: image python in container thumbnailer); \
                 target-utilization=88 (pod CPU request 25m is under 50m)",
            ),
        ]),
        warnings: &[],
    },
    Expect {
        // web: 5 + 12 × 5 = 65 s after the log-shipper sidecar's 0 + 6 × 10 = 60 s; CPU 40m + 30m (the plain
        // migration init container's 500m does not count).
        fixture: "sidecar-init-create.json",
        stamps: Some(&[
            (STARTUP, "125"),
            (TARGET, "81"),
            (
                POLICY,
                "startup-filter-seconds=125 (startupProbe worst case of container web after sidecars); \
                 target-utilization=81 (pod CPU request 70m is under 100m)",
            ),
        ]),
        warnings: &[],
    },
    Expect {
        fixture: "already-annotated-create.json",
        stamps: None,
        warnings: &[],
    },
    Expect {
        fixture: "no-annotations-create.json",
        stamps: Some(&[
            (STARTUP, "60"),
            (TARGET, "79"),
            (
                POLICY,
                "startup-filter-seconds=60 (.NET runtime: env ASPNETCORE_URLS in container api); \
                 target-utilization=79 (pod CPU request 80m is under 100m)",
            ),
        ]),
        warnings: &[],
    },
    Expect {
        fixture: "escaped-keys-create.json",
        stamps: Some(&[
            (TARGET, "88"),
            (
                POLICY,
                "target-utilization=88 (pod CPU request 25m is under 50m)",
            ),
        ]),
        warnings: &[],
    },
    Expect {
        fixture: "unchanged-update.json",
        stamps: None,
        warnings: &[],
    },
    Expect {
        fixture: "pod-create.json",
        stamps: None,
        warnings: &[],
    },
    Expect {
        fixture: "no-cpu-request-update.json",
        stamps: None,
        warnings: &[
            "smart-autoscaler: no container requests CPU, so utilization targets cannot work",
        ],
    },
    Expect {
        fixture: "image-change-update.json",
        stamps: Some(&[
            (STARTUP, "180"),
            (
                POLICY,
                "startup-filter-seconds=180 (JVM runtime: env JAVA_TOOL_OPTIONS in container api)",
            ),
        ]),
        warnings: &[],
    },
];

fn annotations(object: &Value) -> BTreeMap<String, String> {
    object["metadata"]["annotations"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn fixtures_patch_correctly_with_kubectl_and_converge() {
    let server = DemoServer::start(&[]);
    let client = server.client();
    let listed = fixture_names();
    assert_eq!(
        listed.len(),
        EXPECTATIONS.len(),
        "every fixture has an expectation: {listed:?}"
    );
    for expect in EXPECTATIONS {
        let review = fixture(expect.fixture);
        let object = review["request"]["object"].clone();
        let response = admit(&server, &client, &review).await;
        let name = expect.fixture;

        let warnings: Vec<&str> = response["warnings"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        assert_eq!(
            warnings.len(),
            expect.warnings.len(),
            "{name}: {warnings:?}"
        );
        for (got, want) in warnings.iter().zip(expect.warnings) {
            assert!(got.starts_with(want), "{name}: {got}");
        }

        let Some(stamps) = expect.stamps else {
            assert!(
                response.get("patch").is_none(),
                "{name}: expected no patch, got {response}"
            );
            continue;
        };
        let patch = decode_patch(&response).unwrap_or_else(|| panic!("{name}: expected a patch"));
        let patched = kubectl_patch(&server, &object, &patch);

        // Exactly the original annotations plus (or with updated) the webhook's own.
        let mut want = annotations(&object);
        for (k, v) in stamps {
            want.insert(k.to_string(), v.to_string());
        }
        assert_eq!(annotations(&patched), want, "{name}: patch {patch}");
        // Nothing but annotations changed.
        let mut without = patched.clone();
        without["metadata"]["annotations"] = object["metadata"]["annotations"].clone();
        if object["metadata"].get("annotations").is_none() {
            without["metadata"]
                .as_object_mut()
                .unwrap()
                .remove("annotations");
        }
        assert_eq!(
            without, object,
            "{name}: the patch touched more than annotations"
        );

        // The apiserver re-invokes the webhook on every later UPDATE: the stamped object must need no patch.
        let mut again = review.clone();
        again["request"]["uid"] = json!(format!(
            "{}-again",
            review["request"]["uid"].as_str().unwrap()
        ));
        again["request"]["operation"] = json!("UPDATE");
        again["request"]["options"] =
            json!({ "kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1" });
        again["request"]["oldObject"] = patched.clone();
        again["request"]["object"] = patched;
        let second = admit(&server, &client, &again).await;
        assert!(
            second.get("patch").is_none(),
            "{name}: second round patched again: {second}"
        );
    }
}

#[tokio::test]
async fn whole_map_add_and_escaped_paths_on_the_wire() {
    let server = DemoServer::start(&[]);
    let client = server.client();

    let response = admit(&server, &client, &fixture("no-annotations-create.json")).await;
    let ops: Value = serde_json::from_str(&decode_patch(&response).unwrap()).unwrap();
    assert_eq!(ops.as_array().unwrap().len(), 1, "{ops}");
    assert_eq!(ops[0]["op"], "add");
    assert_eq!(ops[0]["path"], "/metadata/annotations");
    assert_eq!(
        ops[0]["value"][TARGET], "79",
        "keys inside a value are not escaped"
    );

    let response = admit(&server, &client, &fixture("escaped-keys-create.json")).await;
    let ops: Value = serde_json::from_str(&decode_patch(&response).unwrap()).unwrap();
    let paths: Vec<&str> = ops
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/metadata/annotations/smart-autoscaler.io~1policy",
            "/metadata/annotations/smart-autoscaler.io~1target-utilization"
        ]
    );
    // A literal "~1" in an existing key is a different key, and survives.
    let patched = kubectl_patch(
        &server,
        &fixture("escaped-keys-create.json")["request"]["object"],
        &decode_patch(&response).unwrap(),
    );
    let after = annotations(&patched);
    assert_eq!(
        after["smart-autoscaler.io~1startup-filter-seconds"],
        "not-our-key"
    );
    assert!(!after.contains_key(STARTUP));
    assert_eq!(after["a~b/c~d"], "tilde-slash");
}

#[tokio::test]
async fn dry_run_and_subresources() {
    let server = DemoServer::start(&[]);
    let client = server.client();
    let real = fixture("small-request-create.json");
    let mut dry = real.clone();
    dry["request"]["dryRun"] = json!(true);
    let a = admit(&server, &client, &real).await;
    let b = admit(&server, &client, &dry).await;
    assert_eq!(a, b, "a dry run gets exactly the real answer");
    assert!(a.get("patch").is_some());

    // `kubectl scale` goes through the scale subresource: not the webhook's business.
    let mut scale = fixture("java-create.json");
    scale["request"]["subResource"] = json!("scale");
    scale["request"]["operation"] = json!("UPDATE");
    scale["request"]["kind"] = json!({ "group": "autoscaling", "version": "v1", "kind": "Scale" });
    scale["request"]["object"] = json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": { "name": "orders", "namespace": "shop" }, "spec": { "replicas": 5 }, "status": { "replicas": 2 }
    });
    let response = admit(&server, &client, &scale).await;
    assert!(
        response.get("patch").is_none() && response.get("warnings").is_none(),
        "{response}"
    );

    let mut delete = fixture("java-create.json");
    delete["request"]["operation"] = json!("DELETE");
    delete["request"]["oldObject"] = delete["request"]["object"].take();
    let response = admit(&server, &client, &delete).await;
    assert!(response.get("patch").is_none(), "{response}");

    // Metrics count what happened, dry runs apart.
    let metrics = reqwest::get(server.metrics_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"smart_autoscaler_webhook_reviews_total{outcome="patched",dry_run="true"} 1"#
        ),
        "{metrics}"
    );
    assert!(metrics.contains(
        r#"smart_autoscaler_webhook_reviews_total{outcome="skipped",dry_run="false"} 2"#
    ));
    assert!(metrics.contains(
        r#"smart_autoscaler_webhook_annotations_stamped_total{annotation="smart-autoscaler.io/target-utilization"} 1"#
    ));
}

#[tokio::test]
async fn protocol_errors_are_status_400_and_unusable_reviews_are_allowed() {
    let server = DemoServer::start(&[]);
    let client = server.client();
    let v1beta1 = {
        let mut r = fixture("go-create.json");
        r["apiVersion"] = json!("admission.k8s.io/v1beta1");
        serde_json::to_vec(&r).unwrap()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not JSON"),
        (b"<AdmissionReview/>".to_vec(), "not JSON"),
        (
            br#"{"kind":"Deployment","apiVersion":"apps/v1"}"#.to_vec(),
            "not AdmissionReview",
        ),
        (v1beta1, "only admission.k8s.io/v1 is served"),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","response":{}}"#
                .to_vec(),
            "no request",
        ),
        (
            br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{}}"#
                .to_vec(),
            "request.uid",
        ),
    ];
    for (body, needle) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(60)
            .collect::<String>();
        let (code, status) = post(&server, &client, body).await;
        assert_eq!(code, 400, "{shown}: {status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["apiVersion"], "v1");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(status["code"], 400);
        assert!(
            status["message"].as_str().unwrap().contains(needle),
            "{shown}: {status}"
        );
    }

    // A review with a uid is always answered 200/allowed, even when the object is unusable.
    let mut broken = fixture("java-create.json");
    broken["request"]["object"]["metadata"]["annotations"] = json!(["not", "a", "map"]);
    let response = admit(&server, &client, &broken).await;
    assert!(response.get("patch").is_none());
    let warning = response["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("cannot handle") && warning.contains("not a map"),
        "{warning}"
    );

    let resp = client.get(server.secure_url(PATH)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["reason"],
        "MethodNotAllowed"
    );
}

#[tokio::test]
async fn config_file_tables_reach_the_running_binary() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("webhook.json");
    std::fs::write(
        &config,
        r#"{"startupFilter": {"namespaceDefaultSeconds": {"shop": 240}},
            "targetUtilization": {"bands": [{"belowMillicores": 1000, "highest": 70, "lowest": 60}]}}"#,
    )
    .unwrap();
    let server = DemoServer::start(&["--webhook-config", config.to_str().unwrap()]);
    let client = server.client();
    let review = fixture("java-create.json");
    let response = admit(&server, &client, &review).await;
    let patched = kubectl_patch(
        &server,
        &review["request"]["object"],
        &decode_patch(&response).unwrap(),
    );
    let after = annotations(&patched);
    assert_eq!(after[STARTUP], "240", "namespace default from the file");
    assert_eq!(
        after[TARGET], "65",
        "500m is half-way through the only band"
    );
    assert_eq!(
        after[POLICY],
        "startup-filter-seconds=240 (namespace shop default); \
         target-utilization=65 (pod CPU request 500m is under 1000m)"
    );
}

/// A strict RFC 6902 `add`/`remove` over objects, failing exactly where the apiserver's patcher fails.
fn apply(mut doc: Value, patch: &Value) -> Result<Value, String> {
    for op in patch.as_array().ok_or("patch is not an array")? {
        let path = op["path"].as_str().ok_or("no path")?;
        let mut tokens: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let last = tokens.pop().ok_or("empty path")?;
        let mut parent = &mut doc;
        for t in &tokens {
            parent = parent
                .get_mut(t.as_str())
                .ok_or(format!("missing parent of {path}"))?;
        }
        let map = parent
            .as_object_mut()
            .ok_or(format!("parent of {path} is not an object"))?;
        match op["op"].as_str() {
            Some("add") => {
                map.insert(last, op.get("value").cloned().ok_or("add without value")?);
            }
            Some("remove") => {
                map.remove(&last)
                    .ok_or(format!("remove of missing {path}"))?;
            }
            other => return Err(format!("unexpected op {other:?}")),
        }
    }
    Ok(doc)
}

/// Arbitrary JSON, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,16}".prop_map(Value::String),
        prop_oneof![
            Just("25m"),
            Just("Always"),
            Just("apps"),
            Just("v1"),
            Just("Deployment"),
            Just("CREATE")
        ]
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

/// Places in a review where a mutation is most likely to upset a decoder.
const POINTERS: &[&str] = &[
    "",
    "/kind",
    "/apiVersion",
    "/request",
    "/request/uid",
    "/request/kind",
    "/request/kind/kind",
    "/request/operation",
    "/request/subResource",
    "/request/dryRun",
    "/request/namespace",
    "/request/object",
    "/request/object/metadata",
    "/request/object/metadata/annotations",
    "/request/object/metadata/labels",
    "/request/object/metadata/deletionTimestamp",
    "/request/object/spec",
    "/request/object/spec/template/spec",
    "/request/object/spec/template/spec/containers",
    "/request/object/spec/template/spec/containers/0",
    "/request/object/spec/template/spec/containers/0/resources",
    "/request/object/spec/template/spec/containers/0/resources/requests/cpu",
    "/request/object/spec/template/spec/containers/0/env",
    "/request/object/spec/template/spec/containers/0/image",
    "/request/object/spec/template/spec/containers/0/command",
    "/request/object/spec/template/spec/containers/0/startupProbe",
    "/request/object/spec/template/spec/initContainers",
    "/request/object/spec/template/spec/resources",
];

/// Replaces the value at `pointer` (when its parent exists).
fn mutate(mut review: Value, pointer: &str, value: Value) -> Value {
    if pointer.is_empty() {
        return value;
    }
    if let Some(slot) = review.pointer_mut(pointer) {
        *slot = value;
    } else if let Some((parent, key)) = pointer.rsplit_once('/')
        && let Some(Value::Object(map)) = review.pointer_mut(parent)
    {
        map.insert(key.to_string(), value);
    }
    review
}

/// Bodies of every kind: random bytes, truncated fixtures, and fixtures with one field replaced by random JSON.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    let fixtures: Vec<Value> = fixture_names().iter().map(|n| fixture(n)).collect();
    let raw: Vec<Vec<u8>> = fixtures
        .iter()
        .map(|f| serde_json::to_vec(f).unwrap())
        .collect();
    let n = fixtures.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        (0..n, any::<proptest::sample::Index>()).prop_map(move |(i, cut)| {
            let bytes = &raw[i];
            bytes[..cut.index(bytes.len())].to_vec()
        }),
        (0..n, proptest::sample::select(POINTERS), any_json()).prop_map(
            move |(i, pointer, value)| {
                serde_json::to_vec(&mutate(fixtures[i].clone(), pointer, value)).unwrap()
            }
        ),
    ]
}

/// Checks one answer of the pure handler: a 400 Status, or an allowing review whose patch applies.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    match review(body, &AdmissionConfig::default()) {
        Err(error) => prop_assert_eq!(error.code.as_u16(), 400, "{}", error),
        Ok(reviewed) => {
            let out: Value = serde_json::from_slice(&reviewed.to_json()).unwrap();
            prop_assert_eq!(&out["response"]["allowed"], &json!(true));
            let sent: Value = serde_json::from_slice(body).unwrap();
            prop_assert_eq!(&out["response"]["uid"], &sent["request"]["uid"]);
            if let Some(b64) = out["response"]["patch"].as_str() {
                let patch: Value = serde_json::from_slice(
                    &base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                )
                .unwrap();
                let object = sent["request"]["object"].clone();
                let patched = apply(object, &patch).map_err(TestCaseError::fail)?;
                // ...and the stamped result converges.
                let mut again = sent.clone();
                again["request"]["object"] = patched;
                again["request"]["operation"] = json!("UPDATE");
                let second = review(
                    &serde_json::to_vec(&again).unwrap(),
                    &AdmissionConfig::default(),
                )
                .unwrap();
                prop_assert!(
                    second.response.patch.is_none(),
                    "second round: {:?}",
                    second.decision.patch
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The pure handler on arbitrary, truncated and mutated bodies: no panic, only 200 or 400, patches that apply.
    #[test]
    fn pure_handler_never_panics(body in bodies()) {
        check(&body)?;
    }
}

/// The same bodies through the running binary over TLS: only 200 or 400, every answer a JSON body.
#[test]
fn binary_answers_arbitrary_bodies_with_200_or_400() {
    let server = DemoServer::start(&[]);
    let client = server.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&bodies(), |body| {
            let (code, answer) = runtime.block_on(post(&server, &client, body));
            prop_assert!(code == 200 || code == 400, "{} {}", code, answer);
            if code == 400 {
                prop_assert_eq!(&answer["kind"], &json!("Status"));
            } else {
                prop_assert_eq!(&answer["response"]["allowed"], &json!(true));
            }
            Ok(())
        })
        .unwrap();
    // Still healthy afterwards.
    let response = runtime.block_on(admit(&server, &client, &fixture("java-create.json")));
    assert!(response.get("patch").is_some());
}
