//! Checks with real external tools: `promtool check metrics` on the live exposition, and `kubectl kustomize` on
//! the deployment assets. Both tools are installed by hack/install-tools.sh; a missing tool fails the test.
//!
//! Every rendered object (the base, each combination of `manifests/components/`, the versioned install manifest)
//! is also checked against the Kubernetes schema: deserialized into its k8s-openapi type while `serde_ignored`
//! collects the fields the type does not know, so a misspelled field fails the test instead of being dropped by
//! the apiserver. Custom resources (ServiceMonitor, PrometheusRule, Certificate, Issuer) have no k8s-openapi
//! type: their required fields and known keys are checked by hand.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use common::DemoServer;

fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool must be installed (hack/install-tools.sh installs the Debian prometheus package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let server = DemoServer::start(&[]);
    let tls = server.client();
    // Generate traffic on several routes and codes so every family has samples.
    for path in [
        "/apis/external.metrics.k8s.io/v1beta1",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/smart_cpu_utilization?labelSelector=deployment%3Dapi-service",
        "/apis/external.metrics.k8s.io/v1beta1/namespaces/demo/nope",
        "/nope",
    ] {
        tls.get(server.secure_url(path)).send().await.unwrap();
    }
    let client = reqwest::Client::new();
    let openmetrics = client
        .get(server.metrics_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        openmetrics.contains("smart_autoscaler_http_requests_total{"),
        "{openmetrics}"
    );
    assert!(openmetrics.trim_end().ends_with("# EOF"));

    let text = client
        .get(server.metrics_url("/metrics"))
        .header("Accept", "text/plain;version=0.0.4")
        .send()
        .await
        .unwrap();
    let content_type = text.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = text.text().await.unwrap();
    let (ok, report) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n--- exposition ---\n{text}"
    );

    // promtool really checks: a malformed exposition is rejected.
    let (ok, _) = promtool_check("# TYPE broken counter\nbroken_total{le=\"x\" 1\n");
    assert!(!ok, "promtool accepted a malformed exposition");
}

// ---------------------------------------------------------------------------------------------------------------
// Manifests: rendering, the component matrix, the schema check and the versioned install manifest.

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `kubectl kustomize DIR`, parsed into one JSON value per object.
fn kustomize(dir: &Path) -> Vec<Value> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl must be installed (hack/install-tools.sh)");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_yaml(&String::from_utf8(out.stdout).unwrap())
}

/// Every document of a YAML stream that is not empty.
fn parse_yaml(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("kustomize output is YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// The components shipped under manifests/components, by directory name.
fn components() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(Path::new(ROOT).join("manifests/components"))
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("kustomization.yaml").is_file())
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Renders an overlay of the base plus `components`, as a user's overlay would be written.
fn render_with(components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    // kustomize refuses absolute paths: reach the repository from the temporary directory through `..`.
    let up = "../".repeat(dir.path().components().count() - 1);
    let base = format!("{up}{}/manifests", ROOT.trim_start_matches('/'));
    let mut overlay = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - {base}\n"
    );
    if !components.is_empty() {
        overlay.push_str("components:\n");
        for c in components {
            overlay.push_str(&format!("  - {base}/components/{c}\n"));
        }
    }
    std::fs::write(dir.path().join("kustomization.yaml"), overlay).unwrap();
    kustomize(dir.path())
}

fn kind(o: &Value) -> &str {
    o["kind"].as_str().unwrap_or("")
}

fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or("")
}

fn namespace(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or("")
}

fn find<'a>(objects: &'a [Value], k: &str, n: &str) -> Option<&'a Value> {
    objects.iter().find(|o| kind(o) == k && name(o) == n)
}

fn all<'a>(objects: &'a [Value], k: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter(move |o| kind(o) == k)
}

/// The fields of `value` that `T` does not know (paths such as `spec.template.spec.containers.0.imagePullPolicey`),
/// or why `value` is not a `T` at all (a wrong type, a missing required field, a wrong apiVersion or kind).
fn unknown_fields<T: DeserializeOwned>(value: &Value) -> Result<Vec<String>, String> {
    let mut ignored = Vec::new();
    serde_ignored::deserialize::<_, _, T>(value.clone(), |path| {
        // Option layers show up as `?` segments; they are not part of the field's path.
        let path = path.to_string();
        ignored.push(
            path.split('.')
                .filter(|s| *s != "?")
                .collect::<Vec<_>>()
                .join("."),
        );
    })
    .map_err(|e| e.to_string())?;
    Ok(ignored)
}

/// Checks `value` against the k8s-openapi type whose apiVersion and kind it has; `None` if no type listed here has.
macro_rules! typed_check {
    ($value:expr, $api:expr, $kind:expr; $($t:ty),+ $(,)?) => {{
        $(
            if $api == <$t as k8s_openapi::Resource>::API_VERSION && $kind == <$t as k8s_openapi::Resource>::KIND {
                Some(unknown_fields::<$t>($value))
            } else
        )+
        { None }
    }};
}

/// Schema problems of one object, each prefixed with its kind and name. Empty means valid.
fn schema_problems(o: &Value) -> Vec<String> {
    use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
    use k8s_openapi::api::core::v1::{
        ConfigMap, Namespace, PersistentVolumeClaim, Secret, Service, ServiceAccount,
    };
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    use k8s_openapi::api::scheduling::v1::PriorityClass;
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

    let api = o["apiVersion"].as_str().unwrap_or("");
    let k = kind(o);
    let checked = typed_check!(o, api, k;
        Namespace, ServiceAccount, ConfigMap, Secret, Service, PersistentVolumeClaim, ClusterRole,
        ClusterRoleBinding, Role, RoleBinding, Deployment, PodDisruptionBudget, APIService,
        MutatingWebhookConfiguration, NetworkPolicy, PriorityClass, HorizontalPodAutoscaler,
    );
    let problems = match checked {
        Some(Ok(ignored)) => ignored
            .into_iter()
            .map(|p| format!("unknown field {p}"))
            .collect(),
        Some(Err(e)) => vec![format!("not a valid {api} {k}: {e}")],
        None => custom_resource_problems(api, k, o),
    };
    problems
        .into_iter()
        .map(|p| format!("{k} {}/{}: {p}", namespace(o), name(o)))
        .collect()
}

/// Reports keys of the object at `at` outside `allowed`, and `required` keys it lacks.
fn check_keys(
    v: &Value,
    at: &str,
    allowed: &[&str],
    required: &[&str],
    problems: &mut Vec<String>,
) {
    let Some(map) = v.as_object() else {
        problems.push(format!("{at} must be an object"));
        return;
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            problems.push(format!("unknown field {at}.{key}"));
        }
    }
    for key in required {
        if !map.contains_key(*key) {
            problems.push(format!("{at}.{key} is required"));
        }
    }
}

/// Each element of the array at `at` (which must be non-empty) checked by `check`.
fn check_items(
    v: &Value,
    at: &str,
    problems: &mut Vec<String>,
    mut check: impl FnMut(&Value, &str, &mut Vec<String>),
) {
    match v.as_array() {
        Some(items) if !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                check(item, &format!("{at}.{i}"), problems);
            }
        }
        _ => problems.push(format!("{at} must be a non-empty list")),
    }
}

/// Custom resources have no k8s-openapi type: their fields are checked against the CRDs' schemas by hand
/// (prometheus-operator monitoring.coreos.com/v1, cert-manager.io/v1), required fields and known keys.
fn custom_resource_problems(api: &str, k: &str, o: &Value) -> Vec<String> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
    let mut p = Vec::new();
    check_keys(
        o,
        "",
        &["apiVersion", "kind", "metadata", "spec"],
        &["metadata", "spec"],
        &mut p,
    );
    match unknown_fields::<ObjectMeta>(&o["metadata"]) {
        Ok(ignored) => p.extend(
            ignored
                .into_iter()
                .map(|f| format!("unknown field metadata.{f}")),
        ),
        Err(e) => p.push(format!("metadata: {e}")),
    }
    let spec = &o["spec"];
    match (api, k) {
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            check_keys(spec, "spec", &[
                "attachMetadata", "bodySizeLimit", "convertClassicHistogramsToNHCB", "endpoints",
                "fallbackScrapeProtocol", "jobLabel", "keepDroppedTargets", "labelLimit",
                "labelNameLengthLimit", "labelValueLengthLimit", "namespaceSelector",
                "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor", "podTargetLabels", "sampleLimit",
                "scrapeClass", "scrapeClassicHistograms", "scrapeProtocols", "selector", "selectorMechanism",
                "targetLabels", "targetLimit",
            ], &["selector", "endpoints"], &mut p);
            if let Err(e) = unknown_fields::<LabelSelector>(&spec["selector"]).map(|ignored| {
                p.extend(ignored.into_iter().map(|f| format!("unknown field spec.selector.{f}")))
            }) {
                p.push(format!("spec.selector: {e}"));
            }
            check_items(&spec["endpoints"], "spec.endpoints", &mut p, |e, at, p| {
                check_keys(e, at, &[
                    "authorization", "basicAuth", "bearerTokenFile", "bearerTokenSecret", "enableHttp2",
                    "filterRunning", "followRedirects", "honorLabels", "honorTimestamps", "interval",
                    "metricRelabelings", "noProxy", "oauth2", "params", "path", "port", "proxyConnectHeader",
                    "proxyFromEnvironment", "proxyUrl", "relabelings", "scheme", "scrapeTimeout", "targetPort",
                    "tlsConfig", "trackTimestampsStaleness",
                ], &[], p);
                if e.get("port").is_none() && e.get("targetPort").is_none() {
                    p.push(format!("{at}: port or targetPort is required"));
                }
            });
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            check_keys(spec, "spec", &["groups"], &["groups"], &mut p);
            check_items(&spec["groups"], "spec.groups", &mut p, |g, at, p| {
                check_keys(g, at, &[
                    "name", "rules", "interval", "limit", "labels", "partial_response_strategy", "query_offset",
                ], &["name", "rules"], p);
                check_items(&g["rules"], &format!("{at}.rules"), p, |r, at, p| {
                    check_keys(r, at, &[
                        "alert", "record", "expr", "for", "keep_firing_for", "labels", "annotations",
                    ], &["expr"], p);
                    if r.get("alert").is_some() == r.get("record").is_some() {
                        p.push(format!("{at}: exactly one of alert and record"));
                    }
                });
            });
        }
        ("cert-manager.io/v1", "Certificate") => {
            check_keys(spec, "spec", &[
                "additionalOutputFormats", "commonName", "dnsNames", "duration", "emailAddresses",
                "encodeUsagesInRequest", "ipAddresses", "isCA", "issuerRef", "keystores", "literalSubject",
                "nameConstraints", "otherNames", "privateKey", "renewBefore", "renewBeforePercentage",
                "revisionHistoryLimit", "secretName", "secretTemplate", "signatureAlgorithm", "subject", "uris",
                "usages",
            ], &["secretName", "issuerRef"], &mut p);
            check_keys(&spec["issuerRef"], "spec.issuerRef", &["name", "kind", "group"], &["name"], &mut p);
            if let Some(key) = spec.get("privateKey") {
                check_keys(key, "spec.privateKey", &["algorithm", "encoding", "rotationPolicy", "size"], &[], &mut p);
                if let Some(alg) = key["algorithm"].as_str() {
                    if !["RSA", "ECDSA", "Ed25519"].contains(&alg) {
                        p.push(format!("spec.privateKey.algorithm {alg:?} is not RSA, ECDSA or Ed25519"));
                    }
                }
            }
            const USAGES: [&str; 23] = [
                "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
            ];
            for usage in spec["usages"].as_array().into_iter().flatten() {
                if !usage.as_str().is_some_and(|u| USAGES.contains(&u)) {
                    p.push(format!("spec.usages: {usage} is not a cert-manager key usage"));
                }
            }
        }
        ("cert-manager.io/v1", "Issuer" | "ClusterIssuer") => {
            const TYPES: [&str; 5] = ["acme", "ca", "selfSigned", "vault", "venafi"];
            check_keys(spec, "spec", &TYPES, &[], &mut p);
            let types = TYPES.iter().filter(|t| spec.get(**t).is_some()).count();
            if types != 1 {
                p.push(format!("spec must have exactly one of {TYPES:?}, has {types}"));
            }
            if let Some(ca) = spec.get("ca") {
                check_keys(ca, "spec.ca", &[
                    "secretName", "crlDistributionPoints", "issuingCertificateURLs", "ocspServers",
                ], &["secretName"], &mut p);
            }
            if let Some(selfsigned) = spec.get("selfSigned") {
                check_keys(selfsigned, "spec.selfSigned", &["crlDistributionPoints"], &[], &mut p);
            }
        }
        _ => p.push(format!(
            "no schema known for {api} {k}: add its k8s-openapi type or a hand check to tests/tools.rs"
        )),
    }
    p
}

/// Schema problems of every object, plus duplicates.
fn all_schema_problems(objects: &[Value]) -> Vec<String> {
    let mut problems: Vec<String> = objects.iter().flat_map(schema_problems).collect();
    let mut seen = std::collections::HashSet::new();
    for o in objects {
        if !seen.insert((o["apiVersion"].to_string(), kind(o), namespace(o), name(o))) {
            problems.push(format!(
                "{} {}/{} appears twice",
                kind(o),
                namespace(o),
                name(o)
            ));
        }
    }
    problems
}

/// What must hold in every rendering: the references between objects resolve.
fn reference_problems(objects: &[Value]) -> Vec<String> {
    let mut p = Vec::new();
    let Some(deploy) = find(objects, "Deployment", "smart-autoscaler") else {
        return vec!["no Deployment smart-autoscaler".into()];
    };
    let ns = namespace(deploy);
    let pod = &deploy["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    let port_names: Vec<&str> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|port| port["name"].as_str())
        .collect();
    // The configuration ConfigMap (generated, with a hash suffix) is the one the container reads.
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let cm = source["configMapRef"]["name"].as_str().unwrap_or("");
        if !all(objects, "ConfigMap").any(|c| name(c) == cm && namespace(c) == ns) {
            p.push(format!(
                "envFrom names ConfigMap {cm}, which is not rendered"
            ));
        }
    }
    for volume in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
            if !all(objects, "PersistentVolumeClaim").any(|c| name(c) == claim) {
                p.push(format!("volume claims {claim}, which is not rendered"));
            }
        }
        if let Some(secret) = volume["secret"]["secretName"].as_str() {
            let certificates: Vec<&Value> = all(objects, "Certificate").collect();
            if !certificates.is_empty()
                && !certificates
                    .iter()
                    .any(|c| c["spec"]["secretName"] == secret && namespace(c) == ns)
            {
                p.push(format!(
                    "Secret {secret} is mounted but no Certificate writes it"
                ));
            }
        }
    }
    for d in all(objects, "Deployment") {
        if let Some(class) = d["spec"]["template"]["spec"]["priorityClassName"].as_str() {
            if class.starts_with("system-") {
                if namespace(d) != "kube-system" {
                    p.push(format!(
                        "Deployment {} uses {class} outside kube-system (refused on managed clusters)",
                        name(d)
                    ));
                }
            } else if find(objects, "PriorityClass", class).is_none() {
                p.push(format!(
                    "Deployment {} uses PriorityClass {class}, which is not rendered",
                    name(d)
                ));
            }
        }
    }
    // The Service reaches the pod, on ports the container has.
    let Some(service) = find(objects, "Service", "smart-autoscaler") else {
        p.push("no Service smart-autoscaler".into());
        return p;
    };
    for (key, value) in service["spec"]["selector"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if pod["metadata"]["labels"][key] != *value {
            p.push(format!(
                "Service selector {key}={value} does not match the pod"
            ));
        }
    }
    let service_ports: Vec<(&str, i64)> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| {
            (
                port["name"].as_str().unwrap_or(""),
                port["port"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    for port in service["spec"]["ports"].as_array().into_iter().flatten() {
        if let Some(target) = port["targetPort"].as_str() {
            if !port_names.contains(&target) {
                p.push(format!(
                    "Service targetPort {target} is not a container port"
                ));
            }
        }
    }
    // The APIService and the webhook call that Service on a port it has.
    let mut callers: Vec<(String, &Value)> = Vec::new();
    for a in all(objects, "APIService") {
        callers.push((format!("APIService {}", name(a)), &a["spec"]["service"]));
    }
    for w in all(objects, "MutatingWebhookConfiguration") {
        for hook in w["webhooks"].as_array().into_iter().flatten() {
            callers.push((
                format!("webhook {}", hook["name"]),
                &hook["clientConfig"]["service"],
            ));
        }
    }
    for (who, svc) in callers {
        if svc["name"] != name(service) || svc["namespace"] != namespace(service) {
            p.push(format!(
                "{who} calls Service {}/{}",
                svc["namespace"], svc["name"]
            ));
        }
        let port = svc["port"].as_i64().unwrap_or(443);
        if !service_ports.iter().any(|(_, n)| *n == port) {
            p.push(format!(
                "{who} calls port {port}, which the Service does not have"
            ));
        }
    }
    // cainjector finds the Certificate it is pointed at.
    for o in objects {
        if let Some(from) = o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str()
        {
            let (cns, cname) = from.split_once('/').unwrap_or(("", from));
            if !all(objects, "Certificate").any(|c| namespace(c) == cns && name(c) == cname) {
                p.push(format!(
                    "{} {} injects the CA from {from}, which is not rendered",
                    kind(o),
                    name(o)
                ));
            }
        }
    }
    for c in all(objects, "Certificate") {
        let issuer = c["spec"]["issuerRef"]["name"].as_str().unwrap_or("");
        if !all(objects, "Issuer").any(|i| name(i) == issuer && namespace(i) == namespace(c)) {
            p.push(format!(
                "Certificate {} is issued by {issuer}, which is not rendered",
                name(c)
            ));
        }
        if c["spec"]["secretName"] == "smart-autoscaler-tls" {
            let dns: Vec<&str> = c["spec"]["dnsNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let host = format!("{}.{}.svc", name(service), namespace(service));
            if !dns.contains(&host.as_str()) {
                p.push(format!("Certificate {} does not cover {host}", name(c)));
            }
        }
    }
    for i in all(objects, "Issuer") {
        if let Some(secret) = i["spec"]["ca"]["secretName"].as_str() {
            if !all(objects, "Certificate").any(|c| c["spec"]["secretName"] == secret) {
                p.push(format!(
                    "Issuer {} signs with Secret {secret}, which no Certificate writes",
                    name(i)
                ));
            }
        }
    }
    // Prometheus and the NetworkPolicy name ports that exist.
    for m in all(objects, "ServiceMonitor") {
        for e in m["spec"]["endpoints"].as_array().into_iter().flatten() {
            let port = e["port"].as_str().unwrap_or("");
            if !service_ports.iter().any(|(n, _)| *n == port) {
                p.push(format!(
                    "ServiceMonitor scrapes port {port}, which the Service does not name"
                ));
            }
        }
        for (key, value) in m["spec"]["selector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if service["metadata"]["labels"][key] != *value {
                p.push(format!(
                    "ServiceMonitor selector {key}={value} does not select the Service"
                ));
            }
        }
    }
    for np in all(objects, "NetworkPolicy") {
        for (key, value) in np["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
        {
            if pod["metadata"]["labels"][key] != *value {
                p.push(format!(
                    "NetworkPolicy {} does not select the pod ({key}={value})",
                    name(np)
                ));
            }
        }
        for rule in np["spec"]["ingress"].as_array().into_iter().flatten() {
            for port in rule["ports"].as_array().into_iter().flatten() {
                if let Some(named) = port["port"].as_str() {
                    if !port_names.contains(&named) {
                        p.push(format!(
                            "NetworkPolicy {} opens port {named}, which the pod does not name",
                            name(np)
                        ));
                    }
                }
            }
        }
    }
    p
}

#[test]
fn kustomize_renders_the_base_for_a_plain_cluster() {
    let objects = kustomize(&Path::new(ROOT).join("manifests"));
    let problems = [all_schema_problems(&objects), reference_problems(&objects)].concat();
    assert!(problems.is_empty(), "{problems:#?}");

    let mut kinds: Vec<&str> = objects.iter().map(kind).collect();
    kinds.sort();
    kinds.dedup();
    // Built-in kinds only: no CRD needed, so `kubectl apply -k manifests/` works on a plain cluster.
    assert_eq!(
        kinds,
        [
            "APIService",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Deployment",
            "MutatingWebhookConfiguration",
            "Namespace",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    let yaml = serde_json::to_string(&objects).unwrap();
    for needle in [
        "\"system:auth-delegator\"",
        "\"extension-apiserver-authentication-reader\"",
        "\"horizontal-pod-autoscaler\"",
        "\"readOnlyRootFilesystem\":true",
        "\"runAsNonRoot\":true",
        "\"v1beta1.external.metrics.k8s.io\"",
        "\"tokenreviews\"",
        "\"leases\"",
    ] {
        assert!(yaml.contains(needle), "base lacks {needle}");
    }
    assert!(
        !yaml.contains("cert-manager.io"),
        "the base must not need cert-manager"
    );

    // The Prometheus URL comes from config.env, through the generated ConfigMap.
    let deploy = find(&objects, "Deployment", "smart-autoscaler").unwrap();
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    // Only the downward API's pod name and namespace (leader election identity and Lease namespace) are set
    // here; settings belong in config.env.
    let env_names: Vec<&str> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(env_names, ["POD_NAME", "POD_NAMESPACE"], "{container}");
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["valueFrom"]["fieldRef"].is_object()),
        "settings belong in config.env: {container}"
    );
    // Two replicas, each with its own state (no shared RWO volume), rolled one at a time with no gap, a PDB
    // that lets a drain take one, spread over nodes.
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let pdb = find(&objects, "PodDisruptionBudget", "smart-autoscaler").unwrap();
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let pod = &deploy["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v.get("persistentVolumeClaim").is_none()),
        "{pod}"
    );
    assert!(
        pod["topologySpreadConstraints"]
            .as_array()
            .is_some_and(|c| c
                .iter()
                .any(|c| c["topologyKey"] == "kubernetes.io/hostname")),
        "{pod}"
    );
    let cm_name = container["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .unwrap();
    assert!(cm_name.starts_with("smart-autoscaler-config-"), "{cm_name}");
    let cm = find(&objects, "ConfigMap", cm_name).unwrap();
    let env = std::fs::read_to_string(Path::new(ROOT).join("manifests/config.env")).unwrap();
    let url = env
        .lines()
        .find_map(|l| l.strip_prefix("SMART_AUTOSCALER_PROMETHEUS_URL="))
        .expect("config.env sets the Prometheus URL");
    assert_eq!(cm["data"]["SMART_AUTOSCALER_PROMETHEUS_URL"], url);
    assert!(
        deploy["spec"]["template"]["spec"]
            .get("priorityClassName")
            .is_none(),
        "no priority class by default (components/priorityclass)"
    );

    // The webhook is opt-in per namespace; a Deployment label opts out, as the server itself checks.
    use smart_autoscaler::domain::contract::{OPT_OUT_LABEL, OPT_OUT_VALUE};
    let hook =
        &find(&objects, "MutatingWebhookConfiguration", "smart-autoscaler").unwrap()["webhooks"][0];
    assert_eq!(
        hook["namespaceSelector"]["matchLabels"][OPT_OUT_LABEL],
        "enabled"
    );
    assert_eq!(hook["failurePolicy"], "Ignore");
    let not_in = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(not_in["operator"], "NotIn");
    assert_eq!(
        not_in["values"],
        serde_json::json!(["kube-system", "smart-autoscaler"])
    );
    let opt_out = &hook["objectSelector"]["matchExpressions"][0];
    assert_eq!(opt_out["key"], OPT_OUT_LABEL);
    assert_eq!(opt_out["values"], serde_json::json!([OPT_OUT_VALUE]));
    assert_eq!(
        hook["clientConfig"]["caBundle"], "",
        "caBundle left for `certs` or cert-manager"
    );
    let ns = find(&objects, "Namespace", "smart-autoscaler").unwrap();
    assert!(ns["metadata"]["labels"].get(OPT_OUT_LABEL).is_none());
}

#[test]
fn every_combination_of_components_renders_and_validates() {
    let names = components();
    for expected in [
        "cert-manager",
        "networkpolicy",
        "priorityclass",
        "scheduler",
        "servicemonitor",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "manifests/components/{expected} is missing: {names:?}"
        );
    }
    let base_count = render_with(&[]).len();
    for mask in 0u32..(1 << names.len()) {
        let chosen: Vec<&str> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, n)| n.as_str())
            .collect();
        let objects = render_with(&chosen);
        let problems = [all_schema_problems(&objects), reference_problems(&objects)].concat();
        assert!(problems.is_empty(), "components {chosen:?}: {problems:#?}");
        let on = |c: &str| chosen.contains(&c);
        let count = |k: &str| all(&objects, k).count();
        let deploy = find(&objects, "Deployment", "smart-autoscaler").unwrap();
        assert!(objects.len() >= base_count, "{chosen:?}");
        for c in &names {
            match c.as_str() {
                "servicemonitor" => {
                    assert_eq!(count("ServiceMonitor"), on(c) as usize, "{chosen:?}")
                }
                "prometheusrule" => assert_eq!(count("PrometheusRule") > 0, on(c), "{chosen:?}"),
                "networkpolicy" => {
                    assert_eq!(count("NetworkPolicy"), on(c) as usize, "{chosen:?}");
                    if let Some(np) = find(&objects, "NetworkPolicy", "smart-autoscaler") {
                        // The placeholder docs/install.md describes: TEST-NET-1, which matches nothing.
                        assert_eq!(
                            np["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"],
                            "192.0.2.0/24"
                        );
                        assert_eq!(np["spec"]["policyTypes"], serde_json::json!(["Ingress"]));
                    }
                }
                "priorityclass" => {
                    assert_eq!(count("PriorityClass"), on(c) as usize, "{chosen:?}");
                    assert_eq!(
                        deploy["spec"]["template"]["spec"]["priorityClassName"].as_str(),
                        on(c).then_some("smart-autoscaler"),
                        "{chosen:?}"
                    );
                }
                "scheduler" => {
                    let scheduler = find(&objects, "Deployment", "smart-scheduler");
                    assert_eq!(scheduler.is_some(), on(c), "{chosen:?}");
                    if let Some(s) = scheduler {
                        assert_eq!(namespace(s), "kube-system");
                    }
                }
                "cert-manager" => {
                    assert_eq!(count("Certificate"), 2 * on(c) as usize, "{chosen:?}");
                    assert_eq!(count("Issuer"), 2 * on(c) as usize, "{chosen:?}");
                    let api =
                        find(&objects, "APIService", "v1beta1.external.metrics.k8s.io").unwrap();
                    let hook =
                        find(&objects, "MutatingWebhookConfiguration", "smart-autoscaler").unwrap();
                    for (o, bundle) in [
                        (api, &api["spec"]["caBundle"]),
                        (hook, &hook["webhooks"][0]["clientConfig"]["caBundle"]),
                    ] {
                        let injected =
                            o["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str();
                        assert_eq!(
                            injected,
                            on(c).then_some("smart-autoscaler/smart-autoscaler-tls"),
                            "{chosen:?}"
                        );
                        // With cainjector the field is left out, so re-applying never blanks what it injected.
                        assert_eq!(bundle.is_null(), on(c), "{chosen:?} {}", kind(o));
                    }
                }
                // Another component is still rendered, schema-checked and cross-checked above.
                _ => {}
            }
        }
    }
}

#[test]
fn the_overlay_in_the_install_guide_renders_as_documented() {
    let guide = std::fs::read_to_string(Path::new(ROOT).join("docs/install.md")).unwrap();
    let start = guide
        .find("```yaml\n# my-cluster/kustomization.yaml\n")
        .expect("docs/install.md shows my-cluster/kustomization.yaml");
    let block = &guide[start + "```yaml\n".len()..];
    let overlay = &block[..block.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let up = "../".repeat(dir.path().components().count() - 1);
    let overlay = overlay.replace(
        "../smart-autoscaler/manifests",
        &format!("{up}{}/manifests", ROOT.trim_start_matches('/')),
    );
    std::fs::write(dir.path().join("kustomization.yaml"), overlay).unwrap();
    let objects = kustomize(dir.path());
    let problems = [all_schema_problems(&objects), reference_problems(&objects)].concat();
    assert!(problems.is_empty(), "{problems:#?}");
    for k in [
        "Certificate",
        "ServiceMonitor",
        "NetworkPolicy",
        "PriorityClass",
    ] {
        assert!(
            all(&objects, k).count() > 0,
            "the guide's overlay renders no {k}"
        );
    }
    // The overlay's settings land where the guide says.
    let config: Vec<&Value> = all(&objects, "ConfigMap").collect();
    assert_eq!(config.len(), 1);
    assert_eq!(
        config[0]["data"]["SMART_AUTOSCALER_PROMETHEUS_URL"],
        "http://prometheus-k8s.monitoring.svc:9090"
    );
    let policy = find(&objects, "NetworkPolicy", "smart-autoscaler").unwrap();
    assert_eq!(
        policy["spec"]["ingress"][0]["from"][0]["ipBlock"]["cidr"],
        "172.16.0.0/28"
    );
    assert_eq!(
        policy["spec"]["ingress"][2]["from"][0]["podSelector"]["matchLabels"]["prometheus"],
        "k8s"
    );
    let deploy = find(&objects, "Deployment", "smart-autoscaler").unwrap();
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.example.com/smart-autoscaler:0.1.0"
    );
}

#[test]
fn the_second_scheduler_runs_the_documented_configuration() {
    let objects = render_with(&["scheduler"]);
    let config =
        find(&objects, "ConfigMap", "smart-scheduler-config").expect("smart-scheduler-config");
    let embedded = parse_yaml(config["data"]["config.yaml"].as_str().unwrap());
    let documented = parse_yaml(
        &std::fs::read_to_string(
            Path::new(ROOT).join("manifests/scheduler/kube-scheduler-config.yaml"),
        )
        .unwrap(),
    );
    assert_eq!(
        embedded, documented,
        "smart-scheduler.yaml and kube-scheduler-config.yaml differ"
    );
    let extender = &documented[0]["extenders"][0];
    assert_eq!(
        extender["urlPrefix"],
        "https://smart-autoscaler.smart-autoscaler.svc:443/scheduler"
    );
    assert_eq!(extender["ignorable"], true);
}

#[test]
fn the_schema_check_reports_misspelled_and_mistyped_fields() {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/manifests/misspelled.yaml"))
            .unwrap();
    let objects = parse_yaml(&text);
    let problems = all_schema_problems(&objects);
    for expected in [
        "Deployment smart-autoscaler/typo: unknown field spec.replica",
        "Deployment smart-autoscaler/typo: unknown field spec.template.spec.containers.0.imagePullPolicey",
        "Deployment smart-autoscaler/typo: unknown field spec.template.spec.containers.0.securityContext.readOnlyRootFileSystem",
        "Service smart-autoscaler/typo: unknown field spec.selecter",
        "MutatingWebhookConfiguration /typo: unknown field webhooks.0.namespaceSelecter",
        "Deployment smart-autoscaler/wrong-type: not a valid apps/v1 Deployment: invalid type: string \"one\"",
        "ServiceMonitor smart-autoscaler/typo: unknown field spec.endpoints.0.intervall",
        "Certificate smart-autoscaler/typo: unknown field spec.dnsName",
        "Certificate smart-autoscaler/typo: spec.secretName is required",
        "Issuer smart-autoscaler/typo: unknown field spec.selfsigned",
        "Issuer smart-autoscaler/typo: spec must have exactly one of",
        "PrometheusRule smart-autoscaler/typo: unknown field spec.groups.0.rules.1.exp",
        "PrometheusRule smart-autoscaler/typo: spec.groups.0.rules.1.expr is required",
        "Widget smart-autoscaler/typo: no schema known for example.com/v1 Widget",
        "ConfigMap smart-autoscaler/twice appears twice",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected:?} not reported; got {problems:#?}"
        );
    }
    // Only the mistakes: the same objects without them are clean.
    assert_eq!(problems.len(), 15, "{problems:#?}");
}

#[test]
fn the_install_manifest_is_what_the_script_renders() {
    let version = env!("CARGO_PKG_VERSION");
    let committed =
        Path::new(ROOT).join(format!("manifests/install/smart-autoscaler-{version}.yaml"));
    let committed = std::fs::read_to_string(&committed)
        .unwrap_or_else(|e| panic!("{}: {e}; run hack/render-install.sh", committed.display()));
    let out = Command::new(Path::new(ROOT).join("hack/render-install.sh"))
        .arg("--stdout")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == committed,
        "manifests/install/smart-autoscaler-{version}.yaml is stale: run hack/render-install.sh"
    );
    let objects = parse_yaml(&committed);
    let problems = [all_schema_problems(&objects), reference_problems(&objects)].concat();
    assert!(problems.is_empty(), "{problems:#?}");
    let deploy = find(&objects, "Deployment", "smart-autoscaler").unwrap();
    let image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(image.ends_with(&format!(":{version}")), "{image}");
    // The same objects as the base: one file for `kubectl apply -f`.
    assert_eq!(
        objects.len(),
        kustomize(&Path::new(ROOT).join("manifests")).len()
    );
}

#[test]
fn example_hpa_uses_the_metric_contract() {
    let hpa = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/examples/hpa.yaml"
    ))
    .unwrap();
    for needle in [
        "type: External",
        "name: smart_cpu_utilization",
        "deployment: api-service",
        "type: Value",
    ] {
        assert!(hpa.contains(needle), "example HPA lacks {needle:?}");
    }
    // kustomize parses it, so it is valid YAML with a kind and apiVersion.
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let objects = parse_yaml(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        objects.iter().map(kind).collect::<Vec<_>>(),
        ["HorizontalPodAutoscaler"]
    );
    let problems = all_schema_problems(&objects);
    assert!(problems.is_empty(), "{problems:#?}");
}
