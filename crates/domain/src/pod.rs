//! A pod's spec as every component reads it (the Kubernetes adapter for Pods and Deployment templates, the
//! admission webhook, the scheduler extender), and the pod's resources for each purpose, defined once:
//!
//! - [`PodSpec::hpa_request`]: what the HPA divides usage by. The sum over app containers and restartable init
//!   containers (sidecars) of their requests; plain init containers have finished before the app runs. A
//!   pod-level request (PodLevelResources), when set, is the pod's request instead.
//! - [`PodSpec::scheduler_request`]: what the scheduler reserves on a node. The larger of (app containers +
//!   sidecars) and the peak of each plain init container plus the sidecars started before it, plus the pod
//!   overhead of its RuntimeClass.
//!
//! A container with a limit and no request has a request equal to its limit: the apiserver defaults it so when it
//! creates the Pod (core/v1 `SetDefaults_Pod`), so the HPA and the scheduler see the limit. A Deployment's
//! template is not defaulted that way, which is why the rule is applied here rather than trusted to be done.
//! The same goes for the pod level: a pod-level limit without a pod-level request becomes the request, unless
//! some container states a request, in which case the pod-level request is what the containers add up to.
//!
//! The types are partial: serde skips every field not named here without allocating for it, and quantities stay
//! text until [`super::quantity`] parses them. No IO.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::cluster::NodeRequirement;
use super::quantity::{parse_cpu_milli, parse_memory_bytes};

/// A resource whose requests are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// CPU, in milli-cores.
    Cpu,
    /// Memory, in bytes.
    Memory,
}

impl Resource {
    fn parse(self, text: &str) -> Option<i64> {
        match self {
            Resource::Cpu => parse_cpu_milli(text),
            Resource::Memory => parse_memory_bytes(text),
        }
    }
}

/// A quantity as written (`250m`, `1Gi`); the apiserver also accepts a bare JSON number, kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Quantity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a quantity")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Quantity, E> {
                Ok(Quantity(v.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// A `ResourceList` reduced to the resources read here; other resources are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ResourceList {
    /// `cpu`.
    pub cpu: Option<Quantity>,
    /// `memory`.
    pub memory: Option<Quantity>,
}

impl ResourceList {
    /// The quantity of `resource`, if listed.
    pub fn get(&self, resource: Resource) -> Option<&Quantity> {
        match resource {
            Resource::Cpu => self.cpu.as_ref(),
            Resource::Memory => self.memory.as_ref(),
        }
    }
}

/// `resources` of a container or of the pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Resources {
    /// `requests`.
    #[serde(deserialize_with = "null_as_default")]
    pub requests: ResourceList,
    /// `limits`.
    #[serde(deserialize_with = "null_as_default")]
    pub limits: ResourceList,
}

/// An environment variable's name; its value (which can be a whole file) is skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EnvName {
    /// `name`.
    pub name: String,
}

/// The timing fields of a probe; unset ones take the Kubernetes defaults where they are read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Probe {
    /// `initialDelaySeconds`.
    pub initial_delay_seconds: Option<i64>,
    /// `periodSeconds`.
    pub period_seconds: Option<i64>,
    /// `failureThreshold`.
    pub failure_threshold: Option<i64>,
}

/// A container or init container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Container {
    /// `name`.
    pub name: String,
    /// `image`.
    pub image: Option<String>,
    /// `command` (the entrypoint; `args` are not read).
    #[serde(deserialize_with = "null_as_default")]
    pub command: Vec<String>,
    /// `env`, names only.
    #[serde(deserialize_with = "null_as_default")]
    pub env: Vec<EnvName>,
    /// `Always` on an init container makes it a sidecar: it runs for the pod's whole life.
    pub restart_policy: Option<String>,
    /// `resources`.
    pub resources: Option<Resources>,
    /// `startupProbe`.
    pub startup_probe: Option<Probe>,
}

impl Container {
    /// Whether this init container is a restartable sidecar (`restartPolicy: Always`).
    pub fn is_sidecar(&self) -> bool {
        self.restart_policy.as_deref() == Some("Always")
    }

    /// The request of `resource` as the apiserver defaults it: the request, or else the limit.
    pub fn request(&self, resource: Resource) -> Option<&Quantity> {
        let resources = self.resources.as_ref()?;
        resources
            .requests
            .get(resource)
            .or_else(|| resources.limits.get(resource))
    }

    /// [`Container::request`] parsed; missing or unparseable is 0 (the apiserver validated it already).
    fn request_or_zero(&self, resource: Resource) -> i64 {
        self.request(resource)
            .and_then(|q| resource.parse(&q.0))
            .unwrap_or(0)
            .max(0)
    }
}

/// One requirement of a required node-affinity term.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct MatchExpression {
    key: String,
    operator: String,
    #[serde(deserialize_with = "null_as_default")]
    values: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SelectorTerm {
    #[serde(deserialize_with = "null_as_default")]
    match_expressions: Vec<MatchExpression>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RequiredTerms {
    #[serde(deserialize_with = "null_as_default")]
    node_selector_terms: Vec<SelectorTerm>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
struct NodeAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    required: Option<RequiredTerms>,
}

/// `affinity`, of which only the required node affinity is read (pod affinity does not choose the node pool).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Affinity {
    node_affinity: Option<NodeAffinity>,
}

/// A pod spec (a Pod's, or a Deployment's template) with the fields any component reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PodSpec {
    /// The node the pod is bound to.
    pub node_name: Option<String>,
    /// `nodeSelector`.
    pub node_selector: Option<BTreeMap<String, String>>,
    /// `affinity`.
    pub affinity: Option<Affinity>,
    /// Pod-level resources (PodLevelResources).
    pub resources: Option<Resources>,
    /// What the RuntimeClass adds to the pod on top of its containers.
    pub overhead: Option<ResourceList>,
    /// App containers.
    #[serde(deserialize_with = "null_as_default")]
    pub containers: Vec<Container>,
    /// Init containers, sidecars among them, in start order.
    #[serde(deserialize_with = "null_as_default")]
    pub init_containers: Vec<Container>,
}

/// What the HPA divides a pod's usage by ([`PodSpec::hpa_request`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HpaRequest {
    /// The requests that are there, added up (0 when none is); what the decision core uses.
    pub total: i64,
    /// App containers and sidecars with neither a request nor a limit: the HPA refuses to compute utilization
    /// for such a pod. Empty when a pod-level request applies.
    pub missing: Vec<String>,
    /// The first place whose quantity does not parse (`container app`, `the pod`); the apiserver would have
    /// refused it, so it counts as 0 in `total`.
    pub unparseable: Option<String>,
}

/// The pod-level request of a resource, once defaulted.
enum PodLevel<'a> {
    /// `spec.resources.requests`, or a limit standing in for it.
    Quantity(&'a Quantity),
    /// A limit with containers that state requests: the pod's request is what the containers add up to.
    Containers,
}

impl PodSpec {
    /// App containers, then sidecars: the containers that run for the pod's life.
    fn long_running(&self) -> impl Iterator<Item = &Container> {
        self.containers
            .iter()
            .chain(self.init_containers.iter().filter(|c| c.is_sidecar()))
    }

    fn pod_level(&self, resource: Resource) -> Option<PodLevel<'_>> {
        let resources = self.resources.as_ref()?;
        if let Some(q) = resources.requests.get(resource) {
            return Some(PodLevel::Quantity(q));
        }
        let limit = resources.limits.get(resource)?;
        let stated = self
            .containers
            .iter()
            .chain(&self.init_containers)
            .any(|c| c.request(resource).is_some());
        Some(if stated {
            PodLevel::Containers
        } else {
            PodLevel::Quantity(limit)
        })
    }

    /// What the HPA divides usage by, for `resource`.
    pub fn hpa_request(&self, resource: Resource) -> HpaRequest {
        match self.pod_level(resource) {
            Some(PodLevel::Quantity(q)) => {
                let parsed = resource.parse(&q.0);
                return HpaRequest {
                    total: parsed.unwrap_or(0).max(0),
                    missing: Vec::new(),
                    unparseable: parsed.is_none().then(|| "the pod".to_string()),
                };
            }
            Some(PodLevel::Containers) => {
                return HpaRequest {
                    total: self.containers_reserve(resource),
                    ..HpaRequest::default()
                };
            }
            None => {}
        }
        let mut out = HpaRequest::default();
        for c in self.long_running() {
            match c.request(resource) {
                Some(q) => match resource.parse(&q.0) {
                    Some(v) => out.total = out.total.saturating_add(v.max(0)),
                    None => {
                        out.unparseable
                            .get_or_insert_with(|| format!("container {}", c.name));
                    }
                },
                None => out.missing.push(c.name.clone()),
            }
        }
        out
    }

    /// The containers' part of what the scheduler reserves: max(app containers + sidecars, each plain init
    /// container + the sidecars started before it).
    fn containers_reserve(&self, resource: Resource) -> i64 {
        let mut sidecars = 0i64;
        let mut init_peak = 0i64;
        for init in &self.init_containers {
            let request = init.request_or_zero(resource);
            if init.is_sidecar() {
                sidecars = sidecars.saturating_add(request);
                init_peak = init_peak.max(sidecars);
            } else {
                init_peak = init_peak.max(sidecars.saturating_add(request));
            }
        }
        self.containers
            .iter()
            .map(|c| c.request_or_zero(resource))
            .fold(0i64, i64::saturating_add)
            .saturating_add(sidecars)
            .max(init_peak)
    }

    /// What the scheduler reserves on a node for this pod, for `resource`: the pod-level request if set, else
    /// the containers' peak (see the module docs), plus the pod overhead. Unparseable quantities count as 0.
    pub fn scheduler_request(&self, resource: Resource) -> i64 {
        let overhead = self
            .overhead
            .as_ref()
            .and_then(|o| o.get(resource))
            .and_then(|q| resource.parse(&q.0))
            .unwrap_or(0)
            .max(0);
        let pod = match self.pod_level(resource) {
            Some(PodLevel::Quantity(q)) => resource.parse(&q.0).unwrap_or(0).max(0),
            Some(PodLevel::Containers) | None => self.containers_reserve(resource),
        };
        pod.saturating_add(overhead)
    }

    /// Required node affinity: OR of terms, each an AND of requirements.
    pub fn required_node_affinity(&self) -> Vec<Vec<NodeRequirement>> {
        let Some(required) = self
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required.as_ref())
        else {
            return Vec::new();
        };
        required
            .node_selector_terms
            .iter()
            .map(|term| {
                term.match_expressions
                    .iter()
                    .map(|r| NodeRequirement {
                        key: r.key.clone(),
                        operator: r.operator.clone(),
                        values: r.values.clone(),
                    })
                    .collect()
            })
            .collect()
    }
}

/// A member that should be a JSON object: the object, or only the fact that it was something else (a string, a
/// number, an array), so a reader can say what is wrong instead of failing the whole document. `null` and a
/// missing member are `None` of an `Option<ObjectOr<T>>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectOr<T> {
    /// A JSON object, parsed.
    Object(T),
    /// Anything but an object (or `null`).
    Other,
}

impl<T> ObjectOr<T> {
    /// The object, if it was one.
    pub fn object(&self) -> Option<&T> {
        match self {
            ObjectOr::Object(t) => Some(t),
            ObjectOr::Other => None,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOr<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Either<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Either<T> {
            type Value = ObjectOr<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(ObjectOr::Object)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ObjectOr::Other)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ObjectOr::Other)
            }
        }
        deserializer.deserialize_any(Either(std::marker::PhantomData))
    }
}

/// Reads `null` as the default, as Go's decoder does for slices and maps.
pub fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn limits_only() -> PodSpec {
        spec(
            json!({"containers": [{"name": "app", "resources": {"limits": {"cpu": "25m", "memory": "64Mi"}}}]}),
        )
    }

    #[test]
    fn a_limit_stands_in_for_a_missing_request_for_every_purpose() {
        let pod = limits_only();
        assert_eq!(pod.hpa_request(Resource::Cpu).total, 25);
        assert!(pod.hpa_request(Resource::Cpu).missing.is_empty());
        assert_eq!(pod.hpa_request(Resource::Memory).total, 64 << 20);
        assert_eq!(pod.scheduler_request(Resource::Cpu), 25);
        // A request beats the limit.
        let both = spec(json!({"containers": [{"name": "app",
            "resources": {"requests": {"cpu": "10m"}, "limits": {"cpu": "2"}}}]}));
        assert_eq!(both.hpa_request(Resource::Cpu).total, 10);
        assert_eq!(both.scheduler_request(Resource::Cpu), 10);
    }

    #[test]
    fn hpa_request_counts_app_containers_and_sidecars_not_plain_init_containers() {
        let pod = spec(json!({
            "initContainers": [
                {"name": "migrate", "resources": {"requests": {"cpu": "2"}}},
                {"name": "mesh", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}
            ],
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "250m"}}},
                {"name": "log", "resources": {"limits": {"cpu": "50m"}}}
            ]
        }));
        assert_eq!(
            pod.hpa_request(Resource::Cpu),
            HpaRequest {
                total: 400,
                ..Default::default()
            }
        );
    }

    #[test]
    fn hpa_request_names_what_is_missing_or_unparseable() {
        let pod = spec(json!({
            "initContainers": [{"name": "mesh", "restartPolicy": "Always"}],
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "20m"}}},
                {"name": "odd", "resources": {"requests": {"cpu": "lots"}}},
                {"name": "bare"}
            ]
        }));
        let r = pod.hpa_request(Resource::Cpu);
        assert_eq!(r.total, 20);
        assert_eq!(r.missing, ["bare", "mesh"]);
        assert_eq!(r.unparseable.as_deref(), Some("container odd"));
        assert_eq!(
            PodSpec::default().hpa_request(Resource::Cpu),
            HpaRequest::default()
        );
    }

    #[test]
    fn scheduler_request_takes_the_init_peak_with_earlier_sidecars_plus_overhead() {
        let pod = spec(json!({
            "overhead": {"cpu": "10m"},
            "initContainers": [
                {"name": "setup", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "mesh", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}},
                {"name": "migrate", "resources": {"limits": {"cpu": "2"}}}
            ],
            "containers": [
                {"name": "app", "resources": {"requests": {"cpu": "250m"}}},
                {"name": "bare"}
            ]
        }));
        // max(250 + 100, 500, 100 + 2000) + 10.
        assert_eq!(pod.scheduler_request(Resource::Cpu), 2110);
        // The HPA ignores the plain init containers and the overhead; `bare` has no request.
        let hpa = pod.hpa_request(Resource::Cpu);
        assert_eq!(
            (hpa.total, hpa.missing.as_slice()),
            (350, ["bare".to_string()].as_slice())
        );
        // Without the big init container, app + sidecars is the larger.
        let small = spec(json!({
            "initContainers": [{"name": "mesh", "restartPolicy": "Always", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "250m"}}}]
        }));
        assert_eq!(small.scheduler_request(Resource::Cpu), 350);
        assert_eq!(PodSpec::default().scheduler_request(Resource::Cpu), 0);
    }

    #[test]
    fn pod_level_resources_win_and_a_pod_level_limit_defaults_the_request() {
        let mut pod = limits_only();
        pod.resources = Some(serde_json::from_value(json!({"requests": {"cpu": "2"}})).unwrap());
        pod.overhead = Some(ResourceList {
            cpu: Some(Quantity("5m".into())),
            memory: None,
        });
        assert_eq!(pod.hpa_request(Resource::Cpu).total, 2000);
        assert_eq!(pod.scheduler_request(Resource::Cpu), 2005);
        // Memory has no pod-level request: the containers count.
        assert_eq!(pod.hpa_request(Resource::Memory).total, 64 << 20);

        // A pod-level limit and no container requests: the limit is the request.
        let limit =
            spec(json!({"resources": {"limits": {"cpu": "3"}}, "containers": [{"name": "app"}]}));
        assert_eq!(
            limit.hpa_request(Resource::Cpu),
            HpaRequest {
                total: 3000,
                ..Default::default()
            }
        );
        assert_eq!(limit.scheduler_request(Resource::Cpu), 3000);
        // A pod-level limit and containers with requests: their aggregate is the pod's request.
        let aggregate = spec(json!({"resources": {"limits": {"cpu": "3"}},
            "initContainers": [{"name": "migrate", "resources": {"requests": {"cpu": "1"}}}],
            "containers": [{"name": "app", "resources": {"requests": {"cpu": "200m"}}}, {"name": "bare"}]}));
        assert_eq!(aggregate.hpa_request(Resource::Cpu).total, 1000);
        assert!(aggregate.hpa_request(Resource::Cpu).missing.is_empty());
        assert_eq!(aggregate.scheduler_request(Resource::Cpu), 1000);

        let garbage = spec(json!({"resources": {"requests": {"cpu": "lots"}}}));
        assert_eq!(
            garbage.hpa_request(Resource::Cpu).unparseable.as_deref(),
            Some("the pod")
        );
        assert_eq!(garbage.scheduler_request(Resource::Cpu), 0);
    }

    #[test]
    fn partial_decoding_skips_and_tolerates() {
        let pod = spec(json!({
            "volumes": [{"name": "v", "emptyDir": {}}],
            "initContainers": null,
            "containers": [{"name": "app", "image": "i", "command": ["/bin/app"], "args": ["-v"],
                "env": [{"name": "A", "value": "x"}, {"name": "B", "valueFrom": {"fieldRef": {"fieldPath": "x"}}}],
                "resources": {"requests": {"cpu": 1, "memory": "1Gi", "nvidia.com/gpu": "1"}, "limits": null},
                "startupProbe": {"httpGet": {"path": "/"}, "periodSeconds": 2}}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]},
                                                            {"key": "spot", "operator": "DoesNotExist"}]}]}}}
        }));
        let app = &pod.containers[0];
        assert_eq!(
            app.env.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert_eq!(app.startup_probe.as_ref().unwrap().period_seconds, Some(2));
        assert_eq!(pod.hpa_request(Resource::Cpu).total, 1000);
        let affinity = pod.required_node_affinity();
        assert_eq!(affinity[0][0].values, ["a"]);
        assert!(affinity[0][1].values.is_empty());

        let lenient: Option<ObjectOr<PodSpec>> = serde_json::from_value(json!("x")).unwrap();
        assert_eq!(lenient, Some(ObjectOr::Other));
        let lenient: Option<ObjectOr<PodSpec>> = serde_json::from_value(json!([1, {}])).unwrap();
        assert_eq!(lenient, Some(ObjectOr::Other));
        let none: Option<ObjectOr<PodSpec>> = serde_json::from_value(json!(null)).unwrap();
        assert_eq!(none, None);
    }
}
