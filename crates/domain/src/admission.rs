//! Admission policy for Deployments: which `smart-autoscaler.io/*` annotations the mutating webhook stamps, why,
//! and the RFC 6902 JSON Patch that stamps them.
//!
//! Pure: the input is the Deployment as the apiserver sent it (already defaulted, earlier webhooks' patches
//! applied), decoded as the partial [`Deployment`], the operation and an [`AdmissionConfig`]; the output is a
//! [`Decision`]. No IO, no clocks.
//!
//! Fields read, and nothing else: `metadata.namespace`, the opt-out label, `metadata.deletionTimestamp`, the
//! webhook's own keys of `metadata.annotations` (and whether the map exists), and `spec.template.spec` as the
//! partial [`PodSpec`] of [`super::pod`], which also computes the pod's CPU request the way the HPA does. Every
//! other field, including other annotations' values, is skipped while parsing.
//!
//! Ownership. The webhook must never overwrite a value a user set, yet it should keep its own stamps current when
//! the Deployment changes (an image switched from Go to a JVM, a CPU request raised past 100m). The
//! [`POLICY_ANNOTATION`] records every value the webhook stamped as `key=value (reason)`; an annotation whose
//! value matches that record is the webhook's and is recomputed, any other value is the user's and is left alone.
//! Recomputing what is already there yields the same text, so an UPDATE that changes nothing gets no patch.

use std::collections::BTreeMap;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::pod::{Container, HpaRequest, ObjectOr, PodSpec, Resource};

use super::contract::{
    OPT_OUT_LABEL, OPT_OUT_VALUE, POLICY_ANNOTATION, STARTUP_FILTER_ANNOTATION,
    TARGET_UTILIZATION_ANNOTATION,
};

/// Prefix of every warning, so users can tell where a `Warning:` line printed by kubectl comes from.
pub const WARNING_PREFIX: &str = "smart-autoscaler: ";
/// The apiserver documents warnings of at most 120 characters; longer ones are cut to this length.
pub const MAX_WARNING_CHARS: usize = 120;
/// Largest startup filter a configuration may set: a day. Anything longer is a typo.
pub const MAX_STARTUP_FILTER_SECONDS: u32 = 86_400;

/// Kubernetes defaults of probe fields the user left out (core/v1 `SetDefaults_Probe`).
const PROBE_DEFAULT_PERIOD_SECONDS: i64 = 10;
const PROBE_DEFAULT_FAILURE_THRESHOLD: i64 = 3;

/// The admission operations the webhook mutates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new Deployment.
    Create,
    /// A change to an existing Deployment.
    Update,
}

/// The webhook's tables. Every field has a built-in default; a JSON file (`--webhook-config`) replaces whole
/// tables, so `{"startupFilter": {"runtimes": []}}` turns the image heuristics off and keeps everything else.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// How `startup-filter-seconds` is chosen.
    pub startup_filter: StartupFilterConfig,
    /// How `target-utilization` is chosen.
    pub target_utilization: TargetUtilizationConfig,
}

/// Sources of `startup-filter-seconds` below a user-set value, in order: namespace default, cluster default,
/// startupProbe worst case, runtime heuristics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StartupFilterConfig {
    /// Per-namespace defaults; they beat the cluster default.
    pub namespace_default_seconds: BTreeMap<String, u32>,
    /// A default for every namespace without its own; beats probes and heuristics.
    pub cluster_default_seconds: Option<u32>,
    /// Runtime heuristics, first match per container wins; the slowest container decides.
    pub runtimes: Vec<RuntimeRule>,
}

/// One runtime heuristic: a container matches when any of its signals matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeRule {
    /// Name shown in the policy annotation, e.g. `JVM`.
    pub name: String,
    /// Startup filter for containers of this runtime.
    pub seconds: u32,
    /// Image name patterns, matched token-wise: `eclipse-temurin` matches `docker.io/eclipse-temurin:21-jre`, `go`
    /// does not match `mongo`, and a trailing version on an image token is ignored (`java` matches `java17`).
    #[serde(default)]
    pub images: Vec<String>,
    /// Environment variable names set on the container; a trailing `*` matches a prefix (`DOTNET_*`).
    #[serde(default)]
    pub env: Vec<String>,
    /// Executables in `command[0]` (basename, trailing version ignored: `python` matches `/usr/bin/python3.12`).
    #[serde(default)]
    pub commands: Vec<String>,
}

/// CPU-request bands for `target-utilization`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TargetUtilizationConfig {
    /// Bands in increasing order of `belowMillicores`; a pod above the last band gets no target.
    pub bands: Vec<UtilizationBand>,
}

/// Pods whose total CPU request lies in `[previous band's belowMillicores, belowMillicores)` get a target that
/// falls linearly from `highest` at the bottom of the band to `lowest` at its top: the smaller the request, the
/// less a replica costs and the harder it can be run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UtilizationBand {
    /// Exclusive upper bound of the band, in millicores.
    pub below_millicores: i64,
    /// Target at the bottom of the band, percent.
    pub highest: u32,
    /// Target at the top of the band, percent.
    pub lowest: u32,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Default for StartupFilterConfig {
    fn default() -> Self {
        let rule =
            |name: &str, seconds, images: &[&str], env: &[&str], commands: &[&str]| RuntimeRule {
                name: name.to_string(),
                seconds,
                images: strings(images),
                env: strings(env),
                commands: strings(commands),
            };
        StartupFilterConfig {
            namespace_default_seconds: BTreeMap::new(),
            cluster_default_seconds: None,
            runtimes: vec![
                // JIT compilation and class loading keep a JVM hot for minutes after start.
                rule(
                    "JVM",
                    180,
                    &[
                        "java",
                        "jdk",
                        "jre",
                        "openjdk",
                        "eclipse-temurin",
                        "temurin",
                        "amazoncorretto",
                        "corretto",
                        "zulu",
                        "semeru",
                        "graalvm",
                        "liberica",
                        "sapmachine",
                        "tomcat",
                        "jetty",
                        "wildfly",
                        "jboss",
                        "keycloak",
                    ],
                    &[
                        "JAVA_TOOL_OPTIONS",
                        "JAVA_OPTS",
                        "JDK_JAVA_OPTIONS",
                        "_JAVA_OPTIONS",
                        "CATALINA_OPTS",
                    ],
                    &["java"],
                ),
                // Tiered JIT too, but a shorter warm-up than the JVM.
                rule(
                    ".NET",
                    60,
                    &["dotnet", "aspnet"],
                    &["DOTNET_*", "ASPNETCORE_*"],
                    &["dotnet"],
                ),
                rule(
                    "Node.js",
                    30,
                    &["node", "nodejs"],
                    &["NODE_OPTIONS"],
                    &["node", "npm", "yarn"],
                ),
                rule(
                    "Python",
                    30,
                    &["python", "pypy"],
                    &["PYTHONUNBUFFERED", "PYTHONPATH", "PYTHONDONTWRITEBYTECODE"],
                    &["python", "gunicorn", "uvicorn"],
                ),
                rule(
                    "Go",
                    15,
                    &["golang", "distroless/static"],
                    &["GOMAXPROCS", "GOMEMLIMIT", "GOGC", "GODEBUG"],
                    &[],
                ),
            ],
        }
    }
}

impl Default for TargetUtilizationConfig {
    fn default() -> Self {
        TargetUtilizationConfig {
            bands: vec![
                UtilizationBand {
                    below_millicores: 50,
                    highest: 90,
                    lowest: 85,
                },
                UtilizationBand {
                    below_millicores: 100,
                    highest: 85,
                    lowest: 75,
                },
            ],
        }
    }
}

/// A configuration file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionConfigError {
    /// Not JSON, or not the documented shape.
    #[error("not a valid webhook configuration: {0}")]
    Parse(String),
    /// Well-formed but inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl AdmissionConfig {
    /// Parses and validates a JSON configuration.
    pub fn from_json(text: &str) -> Result<Self, AdmissionConfigError> {
        let parse = |e: serde_json::Error| AdmissionConfigError::Parse(e.to_string());
        let value: Value = serde_json::from_str(text).map_err(parse)?;
        // serde would also read a struct from an array; only the documented object form is accepted.
        if !value.is_object() {
            return Err(AdmissionConfigError::Parse(
                "expected a JSON object".to_string(),
            ));
        }
        let config: AdmissionConfig = serde_json::from_value(value).map_err(parse)?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and ordering, naming the offending entry.
    pub fn validate(&self) -> Result<(), AdmissionConfigError> {
        let invalid = |m: String| Err(AdmissionConfigError::Invalid(m));
        let seconds_ok = |s: u32| s <= MAX_STARTUP_FILTER_SECONDS;
        let filter = &self.startup_filter;
        if let Some(s) = filter.cluster_default_seconds
            && !seconds_ok(s)
        {
            return invalid(format!(
                "startupFilter.clusterDefaultSeconds {s} is above {MAX_STARTUP_FILTER_SECONDS}"
            ));
        }
        for (namespace, &s) in &filter.namespace_default_seconds {
            if !seconds_ok(s) {
                return invalid(format!(
                    "startupFilter.namespaceDefaultSeconds[{namespace:?}] {s} is above {MAX_STARTUP_FILTER_SECONDS}"
                ));
            }
        }
        for (i, rule) in filter.runtimes.iter().enumerate() {
            let at = format!("startupFilter.runtimes[{i}]");
            if rule.name.trim().is_empty() {
                return invalid(format!("{at}.name must not be empty"));
            }
            if !seconds_ok(rule.seconds) {
                return invalid(format!(
                    "{at}.seconds {} is above {MAX_STARTUP_FILTER_SECONDS}",
                    rule.seconds
                ));
            }
            if rule.images.is_empty() && rule.env.is_empty() && rule.commands.is_empty() {
                return invalid(format!(
                    "{at} ({}) has no images, env or commands to match",
                    rule.name
                ));
            }
            if let Some(p) = rule
                .images
                .iter()
                .chain(&rule.commands)
                .find(|p| tokens(p).is_empty())
            {
                return invalid(format!("{at} has a pattern {p:?} with nothing to match"));
            }
            if let Some(p) = rule.env.iter().find(|p| p.trim_end_matches('*').is_empty()) {
                return invalid(format!("{at} has an empty env pattern {p:?}"));
            }
        }
        let mut floor = 0;
        for (i, band) in self.target_utilization.bands.iter().enumerate() {
            let at = format!("targetUtilization.bands[{i}]");
            if band.below_millicores <= floor {
                return invalid(format!(
                    "{at}.belowMillicores {} must be greater than {floor} (bands go in increasing order)",
                    band.below_millicores
                ));
            }
            for (field, value) in [("highest", band.highest), ("lowest", band.lowest)] {
                if !(1..=100).contains(&value) {
                    return invalid(format!("{at}.{field} {value} must be between 1 and 100"));
                }
            }
            if band.lowest > band.highest {
                return invalid(format!(
                    "{at}.lowest {} must not exceed highest {}",
                    band.lowest, band.highest
                ));
            }
            floor = band.below_millicores;
        }
        Ok(())
    }
}

/// The parts of an admitted Deployment the policy reads. Members that must be objects are [`ObjectOr`], so a
/// malformed one is reported by [`decide`] rather than failing the whole review.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Deployment {
    /// `metadata`.
    pub metadata: Option<ObjectOr<Metadata>>,
    /// `spec`.
    pub spec: Option<ObjectOr<DeploymentSpec>>,
}

impl Deployment {
    /// `metadata.namespace`, when it is a string.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata
            .as_ref()?
            .object()?
            .namespace
            .as_ref()?
            .0
            .as_deref()
    }

    fn pod(&self) -> Option<&PodSpec> {
        let template = self.spec.as_ref()?.object()?.template.as_ref()?.object()?;
        template.spec.as_ref()?.object()
    }
}

/// `metadata` of an admitted Deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Metadata {
    /// `namespace`.
    pub namespace: Option<Text>,
    /// `labels`: only the opt-out label.
    pub labels: Option<ObjectOr<Picked<LabelKeys>>>,
    /// `annotations`: only the webhook's own keys (the map's other values, such as kubectl's multi-kilobyte
    /// last-applied-configuration, are skipped).
    pub annotations: Option<ObjectOr<Picked<AnnotationKeys>>>,
    /// Set (not null) while the Deployment is being deleted.
    pub deletion_timestamp: Option<IgnoredAny>,
}

/// `spec` of an admitted Deployment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct DeploymentSpec {
    /// `template`.
    pub template: Option<ObjectOr<Template>>,
}

/// `spec.template`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Template {
    /// The pod spec.
    pub spec: Option<ObjectOr<PodSpec>>,
}

/// A member read as text when it is a string; any other JSON is present but not text (`None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text(pub Option<String>);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text(Some(v.to_string())))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Text, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Text, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Text(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Text, E> {
                Ok(Text(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
                Ok(Text(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The keys a [`Picked`] map keeps.
pub trait PickedKeys {
    /// Kept keys; every other member is skipped unread.
    const KEYS: &'static [&'static str];
}

/// The label keys the policy reads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelKeys;

impl PickedKeys for LabelKeys {
    const KEYS: &'static [&'static str] = &[OPT_OUT_LABEL];
}

/// The annotation keys the webhook owns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnnotationKeys;

impl PickedKeys for AnnotationKeys {
    const KEYS: &'static [&'static str] = &[
        STARTUP_FILTER_ANNOTATION,
        TARGET_UTILIZATION_ANNOTATION,
        POLICY_ANNOTATION,
    ];
}

/// A string map of which only `K::KEYS` are kept: present keys with their text (`None` for a non-string value).
#[derive(Debug, Clone, PartialEq)]
pub struct Picked<K> {
    /// The kept members.
    pub values: BTreeMap<&'static str, Option<String>>,
    keys: std::marker::PhantomData<K>,
}

impl<K> Default for Picked<K> {
    fn default() -> Self {
        Picked {
            values: BTreeMap::new(),
            keys: std::marker::PhantomData,
        }
    }
}

impl<K> Picked<K> {
    /// The text of `key`, if present and a string.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key)?.as_deref()
    }
}

impl<'de, K: PickedKeys> Deserialize<'de> for Picked<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<K>(std::marker::PhantomData<K>);
        impl<'de, K: PickedKeys> Visitor<'de> for V<K> {
            type Value = Picked<K>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked<K>, A::Error> {
                let mut out = Picked::default();
                while let Some(key) = map.next_key_seed(KeptKey(K::KEYS))? {
                    match key {
                        // Duplicate keys: the last one wins, as in a full decode.
                        Some(k) => {
                            out.values.insert(k, map.next_value::<Text>()?.0);
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(out)
            }
        }
        deserializer.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Reads a map key as the kept key it equals, if any, without allocating for it.
struct KeptKey(&'static [&'static str]);

impl<'de> de::DeserializeSeed<'de> for KeptKey {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for KeptKey {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok(self.0.iter().find(|k| **k == key).copied())
    }
}

/// One RFC 6902 operation. Only `add` (which also replaces an existing member) and `remove` are ever emitted:
/// `replace` fails on a missing member, and a failing patch is a 500 even under `failurePolicy: Ignore`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatchOp {
    /// `add` or `remove`.
    pub op: &'static str,
    /// JSON Pointer (RFC 6901) into the Deployment.
    pub path: String,
    /// The value, for `add`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
}

impl PatchOp {
    fn add(path: String, value: Value) -> Self {
        PatchOp {
            op: "add",
            path,
            value: Some(value),
        }
    }

    fn remove(path: String) -> Self {
        PatchOp {
            op: "remove",
            path,
            value: None,
        }
    }
}

/// What the webhook does with one Deployment.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decision {
    /// The webhook-owned annotations in force once the patch is applied (key to value, policy included).
    pub stamped: BTreeMap<String, String>,
    /// The JSON Patch; empty when nothing would change.
    pub patch: Vec<PatchOp>,
    /// Things the user should fix, each prefixed and at most [`MAX_WARNING_CHARS`] long.
    pub warnings: Vec<String>,
    /// The policy annotation's text, when the webhook owns any annotation.
    pub policy: Option<String>,
    /// Why the Deployment was left alone entirely (opt-out label, being deleted), if it was.
    pub skipped: Option<&'static str>,
}

/// A Deployment the policy cannot reason about; the webhook allows it unchanged with a warning.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unhandled {
    /// `object` is not a JSON object.
    #[error("the admitted object is not a JSON object")]
    NotAnObject,
    /// `metadata` is missing or not an object.
    #[error("the Deployment has no metadata object")]
    NoMetadata,
    /// `metadata.annotations` is neither absent, null nor an object.
    #[error("metadata.annotations is not a map")]
    AnnotationsNotAMap,
}

/// Decides the annotations, patch, warnings and policy for one admitted Deployment.
pub fn decide(
    deployment: &ObjectOr<Deployment>,
    namespace: &str,
    operation: Operation,
    config: &AdmissionConfig,
) -> Result<Decision, Unhandled> {
    let object = deployment.object().ok_or(Unhandled::NotAnObject)?;
    let metadata = object
        .metadata
        .as_ref()
        .and_then(ObjectOr::object)
        .ok_or(Unhandled::NoMetadata)?;
    let annotations = match &metadata.annotations {
        None => None,
        Some(ObjectOr::Object(map)) => Some(&map.values),
        Some(ObjectOr::Other) => return Err(Unhandled::AnnotationsNotAMap),
    };
    if metadata
        .labels
        .as_ref()
        .and_then(ObjectOr::object)
        .and_then(|l| l.get(OPT_OUT_LABEL))
        == Some(OPT_OUT_VALUE)
    {
        return Ok(skip("opted out by label"));
    }
    // Finalizer bookkeeping on a terminating Deployment is no time to change its policy.
    if operation == Operation::Update && metadata.deletion_timestamp.is_some() {
        return Ok(skip("being deleted"));
    }
    let current = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .and_then(|v| v.as_deref())
    };
    let policy = current(POLICY_ANNOTATION);
    let empty = PodSpec::default();
    let pod = object.pod().unwrap_or(&empty);

    let mut warnings = Vec::new();
    let cpu = CpuRequest::from(pod.hpa_request(Resource::Cpu));
    match &cpu {
        CpuRequest::None => warnings.push(
            "no container requests CPU, so utilization targets cannot work; set resources.requests.cpu"
                .to_string(),
        ),
        CpuRequest::Partial(missing) => warnings.push(format!(
            "containers without a CPU request ({}): utilization targets cannot work until every container has one",
            missing.join(", ")
        )),
        CpuRequest::Unparseable(which) => warnings.push(format!(
            "the CPU request of {which} is not a quantity; no utilization target stamped"
        )),
        CpuRequest::Total(_) => {}
    }

    let mut slots = Vec::new();
    for (key, short) in [
        (STARTUP_FILTER_ANNOTATION, "startup-filter-seconds"),
        (TARGET_UTILIZATION_ANNOTATION, "target-utilization"),
    ] {
        let now = current(key);
        let ours = now.is_some() && recorded(policy, short) == now;
        if let Some(value) = now
            && !ours
        {
            // The user's value: kept as it is, but a value the autoscaler would ignore is worth a warning.
            if let Some(problem) = user_value_problem(key, value) {
                warnings.push(format!("annotation {key}={value:?} {problem}"));
            }
            continue;
        }
        let wanted = if key == STARTUP_FILTER_ANNOTATION {
            startup_filter(pod, namespace, config)
        } else {
            target_utilization(&cpu, config)
        };
        slots.push(Slot {
            key,
            short,
            now,
            wanted,
        });
    }

    let mut stamped = BTreeMap::new();
    let mut segments = Vec::new();
    for slot in &slots {
        if let Some((value, reason)) = &slot.wanted {
            stamped.insert(slot.key.to_string(), value.clone());
            segments.push(format!("{}={value} ({reason})", slot.short));
        }
    }
    let policy_text = (!segments.is_empty()).then(|| segments.join("; "));
    if let Some(text) = &policy_text {
        stamped.insert(POLICY_ANNOTATION.to_string(), text.clone());
    }

    // Desired end state of every key the webhook may touch: Some(value) to have, None to not have.
    let mut changes: BTreeMap<&str, Option<String>> = BTreeMap::new();
    for slot in &slots {
        let want = slot.wanted.as_ref().map(|(v, _)| v.clone());
        if want.as_deref() != slot.now {
            changes.insert(slot.key, want);
        }
    }
    // The policy is removed only when it recorded something and the webhook now owns nothing, so a stale
    // record never outlives the stamps it describes.
    if policy_text.as_deref() != policy && (policy_text.is_some() || policy_is_ours(policy)) {
        changes.insert(POLICY_ANNOTATION, policy_text.clone());
    }
    let patch = annotation_patch(annotations, &changes);

    Ok(Decision {
        stamped,
        patch,
        warnings: warnings.iter().map(|w| warning(w)).collect(),
        policy: policy_text,
        skipped: None,
    })
}

fn skip(reason: &'static str) -> Decision {
    Decision {
        skipped: Some(reason),
        ..Decision::default()
    }
}

/// One of the webhook's value annotations that is not the user's: its current value and what it should be.
struct Slot<'a> {
    key: &'static str,
    short: &'static str,
    now: Option<&'a str>,
    /// The value and the reason for it, or `None` when nothing applies.
    wanted: Option<(String, String)>,
}

/// Escapes one JSON Pointer reference token (RFC 6901 §3): `~` first, then `/`.
pub fn escape_pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// The JSON Patch that takes `annotations` to the wanted values. An absent map is added whole (the parent of a
/// per-key `add` must exist); otherwise each key is added (which replaces) or removed, only if present.
fn annotation_patch(
    annotations: Option<&BTreeMap<&'static str, Option<String>>>,
    changes: &BTreeMap<&str, Option<String>>,
) -> Vec<PatchOp> {
    match annotations {
        None => {
            let map: Map<String, Value> = changes
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), Value::String(v.clone()?))))
                .collect();
            if map.is_empty() {
                Vec::new()
            } else {
                vec![PatchOp::add(
                    "/metadata/annotations".to_string(),
                    Value::Object(map),
                )]
            }
        }
        Some(existing) => changes
            .iter()
            .filter_map(|(key, value)| {
                let path = format!("/metadata/annotations/{}", escape_pointer_token(key));
                match value {
                    Some(v) => Some(PatchOp::add(path, Value::String(v.clone()))),
                    // `remove` of a missing member fails the whole request, so only remove what is there.
                    None => existing.contains_key(key).then(|| PatchOp::remove(path)),
                }
            })
            .collect(),
    }
}

/// The value the policy record says the webhook stamped for `short`, if any.
fn recorded<'a>(policy: Option<&'a str>, short: &str) -> Option<&'a str> {
    policy?.split("; ").find_map(|segment| {
        let rest = segment.strip_prefix(short)?.strip_prefix('=')?;
        Some(rest.split(' ').next().unwrap_or(rest))
    })
}

/// Whether a policy annotation was written by the webhook (it records at least one stamp).
fn policy_is_ours(policy: Option<&str>) -> bool {
    ["startup-filter-seconds", "target-utilization"]
        .iter()
        .any(|short| recorded(policy, short).is_some())
}

fn user_value_problem(key: &str, value: &str) -> Option<&'static str> {
    let number = value.trim().parse::<u32>().ok();
    if key == STARTUP_FILTER_ANNOTATION {
        match number {
            Some(s) if s <= MAX_STARTUP_FILTER_SECONDS => None,
            Some(_) => Some("is longer than a day; the autoscaler ignores it"),
            None => Some("is not a whole number of seconds; the autoscaler ignores it"),
        }
    } else {
        match number {
            Some(1..=100) => None,
            _ => Some("is not a percentage between 1 and 100; the autoscaler ignores it"),
        }
    }
}

fn warning(text: &str) -> String {
    let full = format!("{WARNING_PREFIX}{text}");
    if full.chars().count() <= MAX_WARNING_CHARS {
        return full;
    }
    let mut cut: String = full.chars().take(MAX_WARNING_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// Chooses `startup-filter-seconds` and the reason, below a user-set value: namespace default, cluster default,
/// startupProbe worst case, runtime heuristics.
fn startup_filter(
    pod: &PodSpec,
    namespace: &str,
    config: &AdmissionConfig,
) -> Option<(String, String)> {
    let table = &config.startup_filter;
    if let Some(s) = table.namespace_default_seconds.get(namespace) {
        return Some((s.to_string(), format!("namespace {namespace} default")));
    }
    if let Some(s) = table.cluster_default_seconds {
        return Some((s.to_string(), "cluster default".to_string()));
    }
    if let Some((seconds, detail)) = startup_probe_worst_case(pod) {
        return Some((
            seconds.to_string(),
            format!("startupProbe worst case {detail}"),
        ));
    }
    // The slowest container gates readiness; on a tie the first container names the reason.
    let mut best: Option<(&RuntimeRule, &str, String)> = None;
    for c in &pod.containers {
        let signals = Signals::of(c);
        let Some((rule, signal)) = table
            .runtimes
            .iter()
            .find_map(|rule| signals.matches(rule).map(|signal| (rule, signal)))
        else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(b, _, _)| rule.seconds > b.seconds)
        {
            best = Some((rule, c.name.as_str(), signal));
        }
    }
    let (rule, container, signal) = best?;
    Some((
        rule.seconds.to_string(),
        format!("{} runtime: {signal} in container {container}", rule.name),
    ))
}

/// Chooses `target-utilization` from the pod's total CPU request.
fn target_utilization(cpu: &CpuRequest, config: &AdmissionConfig) -> Option<(String, String)> {
    let CpuRequest::Total(total) = *cpu else {
        return None;
    };
    let mut floor = 0;
    for band in &config.target_utilization.bands {
        if total < band.below_millicores {
            let span = (band.below_millicores - floor) as f64;
            let into = (total - floor).max(0) as f64 / span;
            let target = f64::from(band.highest) - f64::from(band.highest - band.lowest) * into;
            return Some((
                format!("{}", target.round() as u32),
                format!(
                    "pod CPU request {total}m is under {}m",
                    band.below_millicores
                ),
            ));
        }
        floor = band.below_millicores;
    }
    None
}

/// The pod's total CPU request as the HPA sees it.
#[derive(Debug, Clone, PartialEq)]
enum CpuRequest {
    /// Sum over containers and restartable init containers (or the pod-level request), in millicores.
    Total(i64),
    /// No container requests CPU.
    None,
    /// Some containers (named) request none: the HPA refuses to compute utilization for such pods.
    Partial(Vec<String>),
    /// A request that is not a quantity (the apiserver would have refused it), naming where it is.
    Unparseable(String),
}

impl From<HpaRequest> for CpuRequest {
    fn from(request: HpaRequest) -> Self {
        if let Some(which) = request.unparseable {
            CpuRequest::Unparseable(which)
        } else if request.total <= 0 {
            CpuRequest::None
        } else if !request.missing.is_empty() {
            CpuRequest::Partial(request.missing)
        } else {
            CpuRequest::Total(request.total)
        }
    }
}

/// `spec.initContainers` with `restartPolicy: Always`: they start one after another before the app containers.
fn sidecars(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.init_containers.iter().filter(|c| c.is_sidecar())
}

/// Worst-case seconds until every container has passed its startupProbe: sidecars start one after another
/// (each must be started before the next init container runs), app containers start together.
fn startup_probe_worst_case(pod: &PodSpec) -> Option<(i64, String)> {
    let worst = |c: &Container| -> Option<i64> {
        let probe = c.startup_probe.as_ref()?;
        let field = |value: Option<i64>, default: i64| {
            value.unwrap_or(default).clamp(0, i64::from(i32::MAX))
        };
        let initial = field(probe.initial_delay_seconds, 0);
        let period = field(probe.period_seconds, PROBE_DEFAULT_PERIOD_SECONDS);
        let failures = field(probe.failure_threshold, PROBE_DEFAULT_FAILURE_THRESHOLD);
        Some(initial.saturating_add(failures.saturating_mul(period)))
    };
    let mut any = false;
    let mut sidecar_total = 0i64;
    for c in sidecars(pod) {
        if let Some(s) = worst(c) {
            any = true;
            sidecar_total = sidecar_total.saturating_add(s);
        }
    }
    let mut app: Option<(i64, &str)> = None;
    for c in &pod.containers {
        if let Some(s) = worst(c) {
            any = true;
            if app.is_none_or(|(best, _)| s > best) {
                app = Some((s, c.name.as_str()));
            }
        }
    }
    if !any {
        return None;
    }
    let total = sidecar_total
        .saturating_add(app.map_or(0, |(s, _)| s))
        .min(i64::from(MAX_STARTUP_FILTER_SECONDS));
    let detail = match (app, sidecar_total) {
        (Some((_, name)), 0) => format!("of container {name}"),
        (Some((_, name)), _) => format!("of container {name} after sidecars"),
        (None, _) => "of sidecars".to_string(),
    };
    Some((total, detail))
}

/// Splits an image reference or pattern into lower-case name tokens, ignoring a digest and a registry host.
fn tokens(text: &str) -> Vec<String> {
    let text = text.split('@').next().unwrap_or(text).to_ascii_lowercase();
    let mut parts: Vec<&str> = text.split('/').collect();
    if parts.len() > 1
        && (parts[0].contains('.') || parts[0].contains(':') || parts[0] == "localhost")
    {
        parts.remove(0);
    }
    parts
        .iter()
        .flat_map(|p| p.split([':', '-', '_', '.']))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}

/// `java17` → `java`, `python3` → `python`: versions glued to a name do not change the runtime.
fn unversioned(token: &str) -> &str {
    let stripped = token.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if stripped.is_empty() { token } else { stripped }
}

/// Whether an image or command token is the pattern token, ignoring ASCII case and a glued-on version.
fn token_match(pattern: &str, token: &str) -> bool {
    token.eq_ignore_ascii_case(pattern) || unversioned(token).eq_ignore_ascii_case(pattern)
}

/// The tokens of a pattern, without allocating.
fn pattern_tokens(pattern: &str) -> impl Iterator<Item = &str> {
    pattern
        .split(['/', ':', '-', '_', '.'])
        .filter(|t| !t.is_empty())
}

/// Whether the pattern's tokens appear contiguously among the image's tokens.
fn image_matches(pattern: &str, image: &[String]) -> bool {
    let len = pattern_tokens(pattern).count();
    len > 0
        && len <= image.len()
        && (0..=image.len() - len).any(|start| {
            pattern_tokens(pattern)
                .zip(&image[start..])
                .all(|(p, t)| token_match(p, t))
        })
}

fn env_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == pattern,
    }
}

/// What a container shows of its runtime, extracted once and matched against every rule.
struct Signals<'a> {
    image: Vec<String>,
    env: Vec<&'a str>,
    /// Lower-case basename of `command[0]`.
    command: Option<String>,
}

impl<'a> Signals<'a> {
    fn of(c: &'a Container) -> Self {
        Signals {
            image: c.image.as_deref().map(tokens).unwrap_or_default(),
            env: c.env.iter().map(|e| e.name.as_str()).collect(),
            command: c
                .command
                .first()
                .map(|c| c.rsplit('/').next().unwrap_or(c).to_ascii_lowercase()),
        }
    }

    /// The signal by which the container matches a runtime rule, described for the policy text.
    fn matches(&self, rule: &RuntimeRule) -> Option<String> {
        // The most specific matching pattern makes the clearest reason (`eclipse-temurin` over `jre`).
        if let Some(p) = rule
            .images
            .iter()
            .filter(|p| image_matches(p, &self.image))
            .max_by_key(|p| p.len())
        {
            return Some(format!("image {p}"));
        }
        if let Some(name) = self
            .env
            .iter()
            .find(|name| rule.env.iter().any(|p| env_matches(p, name)))
        {
            return Some(format!("env {name}"));
        }
        let command = self.command.as_deref()?;
        rule.commands
            .iter()
            .find(|p| token_match(p, command))
            .map(|p| format!("command {p}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// A defaulted Deployment as the apiserver sends it, with the given annotations and pod spec.
    fn deployment(annotations: Option<Value>, pod_spec: Value) -> Value {
        let mut metadata = json!({
            "name": "app", "namespace": "shop", "creationTimestamp": null, "labels": { "app": "app" }
        });
        if let Some(a) = annotations {
            metadata["annotations"] = a;
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata,
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "app" } },
                "template": { "metadata": { "labels": { "app": "app" } }, "spec": pod_spec }
            }
        })
    }

    fn container(name: &str, image: &str, cpu: Option<&str>) -> Value {
        let mut c = json!({ "name": name, "image": image, "imagePullPolicy": "IfNotPresent" });
        if let Some(cpu) = cpu {
            c["resources"] = json!({ "requests": { "cpu": cpu, "memory": "64Mi" } });
        }
        c
    }

    fn pod(containers: Vec<Value>) -> Value {
        json!({ "containers": containers, "restartPolicy": "Always" })
    }

    /// [`super::decide`] on a Deployment given as JSON, decoded the way the webhook decodes it.
    fn decide(
        d: &Value,
        namespace: &str,
        operation: Operation,
        config: &AdmissionConfig,
    ) -> Result<Decision, Unhandled> {
        let typed: ObjectOr<Deployment> = serde_json::from_value(d.clone()).unwrap();
        super::decide(&typed, namespace, operation, config)
    }

    fn run(d: &Value) -> Decision {
        decide(d, "shop", Operation::Create, &AdmissionConfig::default()).unwrap()
    }

    /// Decodes one RFC 6901 token: `~1` first, then `~0`.
    fn unescape(token: &str) -> String {
        token.replace("~1", "/").replace("~0", "~")
    }

    /// A strict RFC 6902 `add`/`remove`, failing where the apiserver's patcher fails (missing parent or target).
    fn apply(mut doc: Value, patch: &[PatchOp]) -> Result<Value, String> {
        for op in patch {
            let mut tokens: Vec<String> = op.path.split('/').skip(1).map(unescape).collect();
            let last = tokens.pop().ok_or("empty path")?;
            let mut parent = &mut doc;
            for t in &tokens {
                parent = parent
                    .get_mut(t.as_str())
                    .ok_or(format!("missing parent {t} of {}", op.path))?;
            }
            let map = parent.as_object_mut().ok_or("parent is not an object")?;
            match op.op {
                "add" => {
                    map.insert(last, op.value.clone().ok_or("add without value")?);
                }
                "remove" => {
                    map.remove(&last)
                        .ok_or(format!("remove of missing {}", op.path))?;
                }
                other => return Err(format!("unexpected op {other}")),
            }
        }
        Ok(doc)
    }

    fn annotations_after(d: &Value, decision: &Decision) -> Value {
        apply(d.clone(), &decision.patch).unwrap()["metadata"]["annotations"].clone()
    }

    fn startup(d: &Value) -> Option<String> {
        run(d).stamped.get(STARTUP_FILTER_ANNOTATION).cloned()
    }

    fn target(cpu: &str) -> Option<String> {
        let d = deployment(None, pod(vec![container("app", "busybox", Some(cpu))]));
        run(&d).stamped.get(TARGET_UTILIZATION_ANNOTATION).cloned()
    }

    #[test]
    fn pointer_tokens_escape_tilde_before_slash() {
        assert_eq!(escape_pointer_token("a/b~c"), "a~1b~0c");
        assert_eq!(escape_pointer_token("~1"), "~01");
        assert_eq!(escape_pointer_token("/~"), "~1~0");
        assert_eq!(
            escape_pointer_token(STARTUP_FILTER_ANNOTATION),
            "smart-autoscaler.io~1startup-filter-seconds"
        );
        for key in ["a/b~c", "~1", "~0/", "plain.key"] {
            assert_eq!(unescape(&escape_pointer_token(key)), key);
        }
    }

    #[test]
    fn runtime_heuristics_by_image_env_and_command() {
        let cases: Vec<(Value, Option<&str>, &str)> = vec![
            (
                container("a", "eclipse-temurin:21-jre", None),
                Some("180"),
                "JVM runtime: image eclipse-temurin",
            ),
            (
                container("a", "gcr.io/distroless/java17-debian12", None),
                Some("180"),
                "image java",
            ),
            (
                json!({ "name": "a", "image": "registry.example.com/shop/orders:4.1",
                        "env": [{ "name": "TZ", "value": "UTC" }, { "name": "JAVA_TOOL_OPTIONS", "value": "-Xmx1g" }] }),
                Some("180"),
                "env JAVA_TOOL_OPTIONS",
            ),
            (
                json!({ "name": "a", "image": "example.com/orders", "command": ["/usr/bin/java", "-jar", "app.jar"] }),
                Some("180"),
                "command java",
            ),
            (
                container("a", "mcr.microsoft.com/dotnet/aspnet:8.0", None),
                Some("60"),
                ".NET runtime",
            ),
            (
                json!({ "name": "a", "image": "example.com/api", "env": [{ "name": "ASPNETCORE_URLS" }] }),
                Some("60"),
                "env ASPNETCORE_URLS",
            ),
            (
                container("a", "node:20-alpine", None),
                Some("30"),
                "Node.js runtime",
            ),
            (
                container("a", "python:3.12-slim", None),
                Some("30"),
                "Python runtime",
            ),
            (
                json!({ "name": "a", "image": "example.com/worker", "command": ["python3.12", "-m", "worker"] }),
                Some("30"),
                "command python",
            ),
            (
                container("a", "gcr.io/distroless/static-debian12:nonroot", None),
                Some("15"),
                "Go runtime",
            ),
            (
                json!({ "name": "a", "image": "example.com/gateway:v2", "env": [{ "name": "GOMEMLIMIT", "value": "200MiB" }] }),
                Some("15"),
                "env GOMEMLIMIT",
            ),
            // Token matching: `go`-like substrings and a registry host are not signals.
            (container("a", "mongo:7", None), None, ""),
            (
                container("a", "java.example.com/shop/cart:1", None),
                None,
                "",
            ),
            (container("a", "nginx:1.27", None), None, ""),
        ];
        for (c, want, reason) in cases {
            let d = deployment(None, pod(vec![c.clone()]));
            let decision = run(&d);
            assert_eq!(
                decision
                    .stamped
                    .get(STARTUP_FILTER_ANNOTATION)
                    .map(String::as_str),
                want,
                "{c}"
            );
            if want.is_some() {
                let policy = decision.policy.unwrap();
                assert!(policy.contains(reason), "{policy} should mention {reason}");
            }
        }
    }

    #[test]
    fn slowest_container_decides_the_heuristic() {
        let d = deployment(
            None,
            pod(vec![
                container("proxy", "gcr.io/distroless/static:nonroot", None),
                container("app", "eclipse-temurin:21", None),
            ]),
        );
        assert_eq!(startup(&d).as_deref(), Some("180"));
        assert!(run(&d).policy.unwrap().contains("in container app"));
    }

    #[test]
    fn startup_probe_worst_case_with_kubernetes_defaults() {
        let probe = |p: Value| {
            let mut c = container("app", "eclipse-temurin:21", None);
            c["startupProbe"] = p;
            deployment(None, pod(vec![c]))
        };
        // All defaults: 0 + 3 × 10.
        assert_eq!(
            startup(&probe(json!({ "httpGet": { "path": "/", "port": 8080 } }))).as_deref(),
            Some("30")
        );
        // initialDelaySeconds + failureThreshold × periodSeconds, beating the JVM heuristic.
        let d =
            probe(json!({ "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 60 }));
        assert_eq!(startup(&d).as_deref(), Some("125"));
        assert!(
            run(&d)
                .policy
                .unwrap()
                .contains("startupProbe worst case of container app")
        );
        // Absurd values are clamped to a day rather than overflowing.
        let d = probe(json!({ "periodSeconds": i32::MAX, "failureThreshold": i32::MAX }));
        assert_eq!(startup(&d).as_deref(), Some("86400"));
    }

    #[test]
    fn sidecar_startup_probes_add_up_before_the_app() {
        let mut sidecar = container("mesh", "envoyproxy/envoy:v1.31", None);
        sidecar["restartPolicy"] = json!("Always");
        sidecar["startupProbe"] = json!({ "failureThreshold": 6 }); // 60 s
        let mut app = container("app", "python:3.12", None);
        app["startupProbe"] =
            json!({ "initialDelaySeconds": 5, "periodSeconds": 5, "failureThreshold": 12 }); // 65 s
        let mut spec = pod(vec![app]);
        spec["initContainers"] =
            json!([sidecar, { "name": "migrate", "image": "x", "startupProbe": {} }]);
        let d = deployment(None, spec);
        assert_eq!(startup(&d).as_deref(), Some("125"));
        assert!(run(&d).policy.unwrap().contains("after sidecars"));
    }

    #[test]
    fn precedence_user_then_namespace_then_cluster_then_probe_then_heuristic() {
        let mut c = container("app", "eclipse-temurin:21", Some("500m"));
        c["startupProbe"] = json!({ "failureThreshold": 10 });
        let d = deployment(None, pod(vec![c]));
        let mut config = AdmissionConfig::default();
        let seconds = |d: &Value, config: &AdmissionConfig| {
            decide(d, "shop", Operation::Create, config)
                .unwrap()
                .stamped
                .get(STARTUP_FILTER_ANNOTATION)
                .cloned()
        };
        assert_eq!(
            seconds(&d, &config).as_deref(),
            Some("100"),
            "probe beats heuristic"
        );
        config.startup_filter.cluster_default_seconds = Some(90);
        assert_eq!(
            seconds(&d, &config).as_deref(),
            Some("90"),
            "cluster default beats probe"
        );
        config
            .startup_filter
            .namespace_default_seconds
            .insert("shop".into(), 240);
        config
            .startup_filter
            .namespace_default_seconds
            .insert("other".into(), 1);
        assert_eq!(
            seconds(&d, &config).as_deref(),
            Some("240"),
            "namespace default beats cluster"
        );
        let policy = decide(&d, "shop", Operation::Create, &config)
            .unwrap()
            .policy
            .unwrap();
        assert_eq!(
            policy,
            "startup-filter-seconds=240 (namespace shop default)"
        );
        let mut user = d.clone();
        user["metadata"]["annotations"] = json!({ STARTUP_FILTER_ANNOTATION: "45" });
        let decision = decide(&user, "shop", Operation::Create, &config).unwrap();
        assert!(
            decision.patch.is_empty(),
            "user value wins: {:?}",
            decision.patch
        );
        assert!(decision.stamped.is_empty());
        // With every source off, nothing is stamped.
        let none = AdmissionConfig {
            startup_filter: StartupFilterConfig {
                runtimes: vec![],
                ..Default::default()
            },
            ..Default::default()
        };
        let plain = deployment(
            None,
            pod(vec![container("app", "eclipse-temurin:21", Some("500m"))]),
        );
        assert_eq!(seconds(&plain, &none), None);
    }

    #[test]
    fn utilization_bands_interpolate() {
        assert_eq!(target("1m").as_deref(), Some("90"));
        assert_eq!(target("25m").as_deref(), Some("88"));
        assert_eq!(target("49m").as_deref(), Some("85"));
        assert_eq!(target("50m").as_deref(), Some("85"));
        assert_eq!(target("70m").as_deref(), Some("81"));
        assert_eq!(target("0.099").as_deref(), Some("75"));
        assert_eq!(target("100m"), None);
        assert_eq!(target("2"), None);
        let d = deployment(None, pod(vec![container("app", "busybox", Some("25m"))]));
        assert_eq!(
            run(&d).policy.unwrap(),
            "target-utilization=88 (pod CPU request 25m is under 50m)"
        );
    }

    #[test]
    fn cpu_total_counts_sidecars_but_not_plain_init_containers() {
        let mut sidecar = container("logs", "fluent/fluent-bit:3", Some("30m"));
        sidecar["restartPolicy"] = json!("Always");
        let mut spec = pod(vec![container("app", "busybox", Some("40m"))]);
        spec["initContainers"] = json!([container("migrate", "busybox", Some("2")), sidecar]);
        let d = deployment(None, spec);
        assert_eq!(run(&d).stamped[TARGET_UTILIZATION_ANNOTATION], "81"); // 70m
        assert!(run(&d).warnings.is_empty());
    }

    #[test]
    fn cpu_limits_stand_in_for_missing_requests_and_pod_level_resources_win() {
        let mut c = container("app", "busybox", None);
        c["resources"] = json!({ "limits": { "cpu": "25m" } });
        let d = deployment(None, pod(vec![c]));
        assert_eq!(run(&d).stamped[TARGET_UTILIZATION_ANNOTATION], "88");
        let mut spec = pod(vec![container("app", "busybox", None)]);
        spec["resources"] = json!({ "requests": { "cpu": "60m" } });
        let decision = run(&deployment(None, spec));
        assert_eq!(decision.stamped[TARGET_UTILIZATION_ANNOTATION], "83");
        assert!(decision.warnings.is_empty(), "{:?}", decision.warnings);
    }

    #[test]
    fn missing_cpu_requests_warn_and_stamp_no_target() {
        let d = deployment(None, pod(vec![container("app", "nginx", None)]));
        let decision = run(&d);
        assert_eq!(decision.stamped.get(TARGET_UTILIZATION_ANNOTATION), None);
        assert_eq!(decision.warnings.len(), 1);
        assert!(decision.warnings[0].starts_with("smart-autoscaler: no container requests CPU"));

        let d = deployment(
            None,
            pod(vec![
                container("app", "nginx", Some("20m")),
                container("sidecar", "busybox", None),
            ]),
        );
        let decision = run(&d);
        assert_eq!(decision.stamped.get(TARGET_UTILIZATION_ANNOTATION), None);
        assert!(
            decision.warnings[0].contains("(sidecar)"),
            "{:?}",
            decision.warnings
        );

        let d = deployment(None, pod(vec![container("app", "nginx", Some("lots"))]));
        assert!(
            run(&d).warnings[0].contains("container app"),
            "{:?}",
            run(&d).warnings
        );
    }

    #[test]
    fn warnings_are_at_most_120_characters() {
        let names: Vec<Value> = (0..20)
            .map(|i| container(&format!("container-with-a-long-name-{i}"), "nginx", None))
            .chain([container("app", "nginx", Some("10m"))])
            .collect();
        let decision = run(&deployment(None, pod(names)));
        for w in &decision.warnings {
            assert!(w.chars().count() <= MAX_WARNING_CHARS, "{w}");
            assert!(w.ends_with('…'));
        }
    }

    #[test]
    fn invalid_user_values_are_kept_with_a_warning() {
        let d = deployment(
            Some(
                json!({ STARTUP_FILTER_ANNOTATION: "two minutes", TARGET_UTILIZATION_ANNOTATION: "150" }),
            ),
            pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]),
        );
        let decision = run(&d);
        assert!(decision.patch.is_empty());
        assert_eq!(decision.warnings.len(), 2, "{:?}", decision.warnings);
        assert!(
            decision
                .warnings
                .iter()
                .any(|w| w.contains("not a whole number of seconds"))
        );
        assert!(
            decision
                .warnings
                .iter()
                .any(|w| w.contains("between 1 and 100"))
        );
    }

    #[test]
    fn absent_or_null_annotations_get_the_whole_map() {
        for annotations in [None, Some(Value::Null)] {
            let d = deployment(
                annotations,
                pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]),
            );
            let decision = run(&d);
            assert_eq!(decision.patch.len(), 1, "{:?}", decision.patch);
            assert_eq!(decision.patch[0].path, "/metadata/annotations");
            let map = decision.patch[0].value.as_ref().unwrap();
            assert_eq!(map[STARTUP_FILTER_ANNOTATION], "180");
            assert_eq!(map[TARGET_UTILIZATION_ANNOTATION], "88");
            assert_eq!(
                map[POLICY_ANNOTATION],
                "startup-filter-seconds=180 (JVM runtime: image eclipse-temurin in container app); \
                 target-utilization=88 (pod CPU request 25m is under 50m)"
            );
            assert_eq!(annotations_after(&d, &decision), *map);
        }
    }

    #[test]
    fn existing_map_gets_escaped_per_key_adds_and_keeps_other_keys() {
        let others = json!({ "team.example.com/owner": "payments", "odd~key/x": "1", TARGET_UTILIZATION_ANNOTATION: null });
        let d = deployment(
            Some(others),
            pod(vec![container("app", "node:20", Some("25m"))]),
        );
        let decision = run(&d);
        let paths: Vec<&str> = decision.patch.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/metadata/annotations/smart-autoscaler.io~1policy",
                "/metadata/annotations/smart-autoscaler.io~1startup-filter-seconds",
                "/metadata/annotations/smart-autoscaler.io~1target-utilization",
            ]
        );
        assert!(decision.patch.iter().all(|p| p.op == "add"));
        let after = annotations_after(&d, &decision);
        assert_eq!(after["team.example.com/owner"], "payments");
        assert_eq!(after["odd~key/x"], "1");
        assert_eq!(
            after[TARGET_UTILIZATION_ANNOTATION], "88",
            "a null value is replaced"
        );
        assert_eq!(after[STARTUP_FILTER_ANNOTATION], "30");
    }

    #[test]
    fn second_pass_is_a_no_op() {
        let d = deployment(
            Some(json!({ "a/b~c": "x" })),
            pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]),
        );
        let first = run(&d);
        let patched = apply(d.clone(), &first.patch).unwrap();
        let second = decide(
            &patched,
            "shop",
            Operation::Update,
            &AdmissionConfig::default(),
        )
        .unwrap();
        assert!(second.patch.is_empty(), "{:?}", second.patch);
        assert_eq!(second.stamped, first.stamped);
    }

    #[test]
    fn own_stamps_follow_the_deployment_user_values_do_not() {
        let go = pod(vec![container("app", "golang:1.23", Some("25m"))]);
        let java = pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]);
        let config = AdmissionConfig::default();
        let created = deployment(None, go);
        let stamped = apply(created.clone(), &run(&created).patch).unwrap();
        assert_eq!(
            stamped["metadata"]["annotations"][STARTUP_FILTER_ANNOTATION],
            "15"
        );

        // The image moves to a JVM: the webhook's own value is recomputed.
        let mut moved = stamped.clone();
        moved["spec"]["template"]["spec"] = java.clone();
        let decision = decide(&moved, "shop", Operation::Update, &config).unwrap();
        let after = annotations_after(&moved, &decision);
        assert_eq!(after[STARTUP_FILTER_ANNOTATION], "180");
        assert!(
            after[POLICY_ANNOTATION]
                .as_str()
                .unwrap()
                .starts_with("startup-filter-seconds=180 ")
        );

        // A user edits the value: from then on it is theirs, and the policy stops claiming it.
        let mut edited = stamped.clone();
        edited["metadata"]["annotations"][STARTUP_FILTER_ANNOTATION] = json!("20");
        edited["spec"]["template"]["spec"] = java;
        let decision = decide(&edited, "shop", Operation::Update, &config).unwrap();
        let after = annotations_after(&edited, &decision);
        assert_eq!(after[STARTUP_FILTER_ANNOTATION], "20");
        assert_eq!(
            after[POLICY_ANNOTATION],
            "target-utilization=88 (pod CPU request 25m is under 50m)"
        );

        // CPU request raised past the bands: the stamped target no longer applies and is removed.
        let mut raised = stamped.clone();
        raised["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] =
            json!("500m");
        let decision = decide(&raised, "shop", Operation::Update, &config).unwrap();
        assert!(decision.patch.iter().any(|p| p.op == "remove"
            && p.path == "/metadata/annotations/smart-autoscaler.io~1target-utilization"));
        let after = annotations_after(&raised, &decision);
        assert!(after.get(TARGET_UTILIZATION_ANNOTATION).is_none());
        assert_eq!(
            after[POLICY_ANNOTATION],
            "startup-filter-seconds=15 (Go runtime: image golang in container app)"
        );
    }

    #[test]
    fn policy_is_removed_when_nothing_is_owned_any_more() {
        let d = deployment(
            Some(json!({
                STARTUP_FILTER_ANNOTATION: "45",
                TARGET_UTILIZATION_ANNOTATION: "70",
                POLICY_ANNOTATION: "startup-filter-seconds=180 (JVM runtime: image java in container app)"
            })),
            pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]),
        );
        let decision = run(&d);
        assert_eq!(
            decision.patch,
            [PatchOp::remove(
                "/metadata/annotations/smart-autoscaler.io~1policy".into()
            )]
        );
        // A policy text the webhook did not write is not touched when there is nothing to stamp.
        let mut foreign = d.clone();
        foreign["metadata"]["annotations"][POLICY_ANNOTATION] = json!("hand-tuned by the SRE team");
        assert!(run(&foreign).patch.is_empty());
    }

    #[test]
    fn opt_out_label_and_terminating_deployments_are_skipped() {
        let mut d = deployment(
            None,
            pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]),
        );
        d["metadata"]["labels"][OPT_OUT_LABEL] = json!(OPT_OUT_VALUE);
        let decision = run(&d);
        assert_eq!(decision.skipped, Some("opted out by label"));
        assert!(decision.patch.is_empty() && decision.warnings.is_empty());

        let mut d = deployment(
            None,
            pod(vec![container("app", "eclipse-temurin:21", Some("25m"))]),
        );
        d["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        let update = decide(&d, "shop", Operation::Update, &AdmissionConfig::default()).unwrap();
        assert_eq!(update.skipped, Some("being deleted"));
        assert!(update.patch.is_empty());
    }

    #[test]
    fn unusable_objects_are_reported() {
        let config = AdmissionConfig::default();
        assert_eq!(
            decide(&json!("x"), "", Operation::Create, &config),
            Err(Unhandled::NotAnObject)
        );
        assert_eq!(
            decide(&json!({}), "", Operation::Create, &config),
            Err(Unhandled::NoMetadata)
        );
        assert_eq!(
            decide(
                &json!({ "metadata": { "annotations": [] } }),
                "",
                Operation::Create,
                &config
            ),
            Err(Unhandled::AnnotationsNotAMap)
        );
        // No spec at all: nothing to infer, a warning, no panic.
        let decision = decide(&json!({ "metadata": {} }), "", Operation::Create, &config).unwrap();
        assert!(decision.patch.is_empty());
        assert_eq!(decision.warnings.len(), 1);
    }

    #[test]
    fn config_files_replace_whole_tables_and_are_validated() {
        AdmissionConfig::default().validate().unwrap();
        let config = AdmissionConfig::from_json(
            r#"{"startupFilter": {"clusterDefaultSeconds": 60, "namespaceDefaultSeconds": {"batch": 600}}}"#,
        )
        .unwrap();
        assert_eq!(config.startup_filter.cluster_default_seconds, Some(60));
        assert_eq!(
            config.startup_filter.runtimes,
            StartupFilterConfig::default().runtimes
        );
        assert_eq!(
            config.target_utilization,
            TargetUtilizationConfig::default()
        );
        let config = AdmissionConfig::from_json(
            r#"{"startupFilter": {"runtimes": [{"name": "Erlang", "seconds": 20, "images": ["elixir"]}]},
                "targetUtilization": {"bands": [{"belowMillicores": 200, "highest": 80, "lowest": 70}]}}"#,
        )
        .unwrap();
        let d = deployment(
            None,
            pod(vec![container("app", "elixir:1.17", Some("100m"))]),
        );
        let decision = decide(&d, "shop", Operation::Create, &config).unwrap();
        assert_eq!(decision.stamped[STARTUP_FILTER_ANNOTATION], "20");
        assert_eq!(decision.stamped[TARGET_UTILIZATION_ANNOTATION], "75");

        for (text, needle) in [
            ("[]", "not a valid webhook configuration"),
            (r#"{"startupFiltre": {}}"#, "unknown field"),
            (
                r#"{"startupFilter": {"clusterDefaultSeconds": 100000}}"#,
                "clusterDefaultSeconds",
            ),
            (
                r#"{"startupFilter": {"runtimes": [{"name": "x", "seconds": 1}]}}"#,
                "no images, env or commands",
            ),
            (
                r#"{"startupFilter": {"runtimes": [{"name": "x", "seconds": 1, "env": ["*"]}]}}"#,
                "empty env",
            ),
            (
                r#"{"startupFilter": {"runtimes": [{"name": "x", "seconds": 1, "images": ["/"]}]}}"#,
                "nothing to match",
            ),
            (
                r#"{"targetUtilization": {"bands": [{"belowMillicores": 100, "highest": 80, "lowest": 70},
                   {"belowMillicores": 50, "highest": 90, "lowest": 85}]}}"#,
                "increasing order",
            ),
            (
                r#"{"targetUtilization": {"bands": [{"belowMillicores": 50, "highest": 101, "lowest": 85}]}}"#,
                "highest 101",
            ),
            (
                r#"{"targetUtilization": {"bands": [{"belowMillicores": 50, "highest": 80, "lowest": 85}]}}"#,
                "must not exceed",
            ),
        ] {
            let err = AdmissionConfig::from_json(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    fn arbitrary_annotations() -> impl Strategy<Value = Option<Value>> {
        let key = prop_oneof![
            Just(STARTUP_FILTER_ANNOTATION.to_string()),
            Just(TARGET_UTILIZATION_ANNOTATION.to_string()),
            Just(POLICY_ANNOTATION.to_string()),
            "[a-z~/.]{1,12}",
        ];
        let value = prop_oneof![
            Just(Value::Null),
            "[0-9]{1,3}".prop_map(Value::String),
            "[ -~]{0,40}".prop_map(Value::String),
            Just(json!(
                "startup-filter-seconds=30 (x); target-utilization=88 (y)"
            )),
        ];
        proptest::option::of(
            proptest::collection::btree_map(key, value, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        )
    }

    proptest! {
        /// Whatever the starting annotations, the patch applies cleanly, never touches a user's value, and a
        /// second pass over the patched Deployment wants no further change.
        #[test]
        fn patch_applies_and_converges(
            annotations in arbitrary_annotations(),
            cpu in proptest::option::of(prop_oneof![Just("25m".to_string()), Just("70m".to_string()), "[0-9]{1,4}m"]),
            image in prop_oneof![Just("eclipse-temurin:21"), Just("golang:1.23"), Just("nginx")],
        ) {
            let d = deployment(annotations.clone(), pod(vec![container("app", image, cpu.as_deref())]));
            let config = AdmissionConfig::default();
            let first = decide(&d, "shop", Operation::Create, &config).unwrap();
            let patched = apply(d.clone(), &first.patch).map_err(TestCaseError::fail)?;
            let second = decide(&patched, "shop", Operation::Update, &config).unwrap();
            prop_assert!(second.patch.is_empty(), "second pass {:?} after {:?}", second.patch, first.patch);
            let before = annotations.as_ref().and_then(Value::as_object);
            let after = &patched["metadata"]["annotations"];
            for key in [STARTUP_FILTER_ANNOTATION, TARGET_UTILIZATION_ANNOTATION] {
                if let Some(v) = before.and_then(|m| m.get(key)).and_then(Value::as_str)
                    && !first.stamped.contains_key(key)
                    && before.and_then(|m| m.get(POLICY_ANNOTATION)).is_none()
                {
                    prop_assert_eq!(after[key].as_str(), Some(v));
                }
            }
            if let Some(before) = before {
                for (k, v) in before {
                    if ![STARTUP_FILTER_ANNOTATION, TARGET_UTILIZATION_ANNOTATION, POLICY_ANNOTATION].contains(&k.as_str()) {
                        prop_assert_eq!(&after[k], v);
                    }
                }
            }
        }
    }
}
