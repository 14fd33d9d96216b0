//! A synthetic cluster at benchmark scale, for the RSS benchmark (`benches/rss/main.rs`): Kubernetes objects cloned from the recorded
//! fixtures' shapes (`tests/fixtures/k8s`: shop/api's Deployment, its current and an old ReplicaSet, its Pods with
//! an init container and a restartable sidecar, its autoscaling/v2 HPA on `smart_cpu_utilization`, an EKS Node)
//! with names, uids, owners, placement, replica counts and times set per object, and the OpenMetrics that
//! Prometheus is backfilled with for the same pods and nodes (cAdvisor, kube-state-metrics and node-exporter
//! metric names, as `serve`'s default queries expect).
//!
//! Every deployment has an HPA on our metric, so every deployment is managed. Replica counts cycle through
//! 4, 16, 6, 14, 10 (ten pods per deployment on average: 20,000 pods for 2,000 deployments). Nodes are split
//! into three pools (general 50%, compute 30%, memory 20%) and deployments select a pool in the same shares,
//! so each node runs about 40 pods.
#![allow(dead_code)]

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::common::fake_apiserver::{Generated, read};

/// The replica counts deployments cycle through (mean 10).
pub const REPLICAS: [usize; 5] = [4, 16, 6, 14, 10];
/// resourceVersion of every list.
pub const LIST_RV: &str = "48200000";
/// CPU request of one pod in cores: the template's `api` container (250m) plus its `envoy` sidecar (100m).
pub const POD_REQUEST_CORES: f64 = 0.35;

/// The alphabet of generated Kubernetes name parts (see `prom::queries::GENERATED_ALPHABET`).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `n` written in `len` characters of [`ALPHABET`] (base 27, least significant first).
fn generated(mut n: u64, len: usize) -> String {
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(ALPHABET[(n % 27) as usize] as char);
        n /= 27;
    }
    s
}

/// A uid of the usual shape, unique per `(kind, index)`.
fn uid(kind: u32, index: u64) -> String {
    let mix = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(kind).wrapping_mul(0xC2B2_AE3D);
    format!(
        "{kind:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (index >> 32) & 0xffff,
        (index >> 16) & 0xfff,
        index & 0xfff,
        mix & 0xffff_ffff_ffff
    )
}

/// RFC 3339, UTC, whole seconds.
fn time(unix_seconds: i64) -> String {
    jiff::Timestamp::from_second(unix_seconds)
        .expect("valid time")
        .to_string()
}

/// A node pool.
pub struct Pool {
    pub name: &'static str,
    pub instance_type: &'static str,
    pub cpu: &'static str,
    pub allocatable_cpu: &'static str,
    /// Share of nodes and of deployments, in tenths.
    pub tenths: usize,
    /// CPU utilization of its nodes, percent.
    pub utilization: f64,
}

pub const POOLS: [Pool; 3] = [
    Pool {
        name: "general",
        instance_type: "m6i.4xlarge",
        cpu: "16",
        allocatable_cpu: "15890m",
        tenths: 5,
        utilization: 55.0,
    },
    Pool {
        name: "compute",
        instance_type: "c6i.4xlarge",
        cpu: "16",
        allocatable_cpu: "15890m",
        tenths: 3,
        utilization: 70.0,
    },
    Pool {
        name: "memory",
        instance_type: "r6i.4xlarge",
        cpu: "16",
        allocatable_cpu: "15890m",
        tenths: 2,
        utilization: 35.0,
    },
];

/// Pool of the `i`-th node or deployment, in the pools' shares.
fn pool_of(i: usize) -> usize {
    match i % 10 {
        0..5 => 0,
        5..8 => 1,
        _ => 2,
    }
}

pub struct NodeSpec {
    pub name: String,
    pub ip: String,
    pub pool: usize,
    pub zone: char,
}

pub struct PodSpec {
    pub name: String,
    pub suffix: String,
    pub node: usize,
    /// Seconds before the generation time.
    pub started_ago: i64,
    pub ready: bool,
    /// Mean CPU use, cores.
    pub cores: f64,
    pub ip: String,
}

pub struct DeploymentSpec {
    pub namespace: String,
    pub name: String,
    /// pod-template-hash of the current ReplicaSet.
    pub hash: String,
    /// pod-template-hash of the previous, scaled-down ReplicaSet.
    pub old_hash: String,
    pub pool: usize,
    /// HPA target, percent.
    pub target: u32,
    pub pods: Vec<PodSpec>,
}

/// The cluster: nodes and deployments with their pods, as of `now` (unix seconds).
pub struct Cluster {
    pub now: i64,
    pub nodes: Vec<NodeSpec>,
    pub deployments: Vec<DeploymentSpec>,
}

impl Cluster {
    /// `deployments` deployments over `namespaces` namespaces and `nodes` nodes, generated at `now`.
    pub fn generate(deployments: usize, nodes: usize, namespaces: usize, now: i64) -> Cluster {
        assert!(nodes >= 5, "at least 5 nodes, so every pool has one");
        let nodes: Vec<NodeSpec> = (0..nodes)
            .map(|i| {
                let (b, c) = (1 + i / 200, 10 + i % 200);
                NodeSpec {
                    name: format!("ip-10-0-{b}-{c}.eu-west-1.compute.internal"),
                    ip: format!("10.0.{b}.{c}"),
                    // Contiguous blocks in the pools' shares.
                    pool: pool_of(i * 10 / nodes),
                    zone: ['a', 'b', 'c'][i % 3],
                }
            })
            .collect();
        let by_pool: Vec<Vec<usize>> = (0..POOLS.len())
            .map(|p| (0..nodes.len()).filter(|&n| nodes[n].pool == p).collect())
            .collect();
        let mut next_node = vec![0usize; POOLS.len()];
        let mut pod_index: u64 = 0;
        let deployments = (0..deployments)
            .map(|d| {
                let pool = pool_of(d);
                let replicas = REPLICAS[d % REPLICAS.len()];
                // Mean utilization 30-90% of requests, by deployment.
                let level = 0.3 + 0.6 * ((d * 37) % 100) as f64 / 100.0;
                let pods = (0..replicas)
                    .map(|p| {
                        let candidates = &by_pool[pool];
                        let node = candidates[next_node[pool] % candidates.len()];
                        next_node[pool] += 1;
                        // A bijection of 0..27^5, so suffixes are unique cluster-wide.
                        let suffix = generated((pod_index * 7_368_787) % 14_348_907, 5);
                        let i = pod_index;
                        pod_index += 1;
                        PodSpec {
                            name: String::new(),
                            suffix,
                            node,
                            // 1% started two minutes ago (inside the startup filter), the rest hours to days ago.
                            started_ago: if i % 100 == 7 {
                                120
                            } else {
                                3_600 + (i as i64 * 7_919) % 1_200_000
                            },
                            ready: i % 200 != 11,
                            cores: POD_REQUEST_CORES * level * (0.9 + 0.2 * (p % 5) as f64 / 4.0),
                            ip: format!("10.{}.{}.{}", 64 + i / 65_536, (i / 256) % 256, i % 256),
                        }
                    })
                    .collect();
                let hash = generated(
                    (d as u64 + 1).wrapping_mul(0x5851_F42D_4C95_7F2D) % 205_891_132_094_649,
                    10,
                );
                let old_hash = generated(
                    (d as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D) % 205_891_132_094_649,
                    10,
                );
                let mut spec = DeploymentSpec {
                    namespace: format!("team-{:02}", d % namespaces),
                    name: format!("svc-{d:04}"),
                    hash,
                    old_hash,
                    pool,
                    target: 60 + (d % 5) as u32 * 5,
                    pods,
                };
                for pod in &mut spec.pods {
                    pod.name = format!("{}-{}-{}", spec.name, spec.hash, pod.suffix);
                }
                spec
            })
            .collect();
        Cluster {
            now,
            nodes,
            deployments,
        }
    }

    pub fn pod_count(&self) -> usize {
        self.deployments.iter().map(|d| d.pods.len()).sum()
    }

    /// The five collections the fake apiserver serves.
    pub fn collections(&self) -> Vec<Generated> {
        let template = |file: &str, pick: &dyn Fn(&Value) -> bool| -> Value {
            let list: Value = serde_json::from_str(&read(file)).unwrap();
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| pick(i))
                .unwrap_or_else(|| panic!("no template in {file}"))
                .clone()
        };
        let name_is = |n: &'static str| move |i: &Value| i["metadata"]["name"] == n;
        let node_t = template("nodes.json", &|_| true);
        let deploy_t = template("deployments.json", &name_is("api"));
        let rs_t = template("replicasets.json", &name_is("api-7c9d8f6b5d"));
        let old_rs_t = template("replicasets.json", &name_is("api-5f6b7c8d9e"));
        let pod_t = template("pods.json", &name_is("api-7c9d8f6b5d-4kq2x"));
        let hpa_t = template("hpas.json", &name_is("api"));

        let nodes = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| self.node(&node_t, i, n).to_string())
            .collect();
        let mut deployments = Vec::new();
        let mut replica_sets = Vec::new();
        let mut pods = Vec::new();
        let mut hpas = Vec::new();
        let mut pod_i = 0u64;
        for (d, spec) in self.deployments.iter().enumerate() {
            deployments.push(self.deployment(&deploy_t, d, spec).to_string());
            replica_sets.push(
                self.replica_set(&rs_t, d, spec, &spec.hash, spec.pods.len(), 1)
                    .to_string(),
            );
            replica_sets.push(
                self.replica_set(&old_rs_t, d, spec, &spec.old_hash, 0, 2)
                    .to_string(),
            );
            hpas.push(self.hpa(&hpa_t, d, spec).to_string());
            for pod in &spec.pods {
                pods.push(self.pod(&pod_t, pod_i, d, spec, pod).to_string());
                pod_i += 1;
            }
        }
        vec![
            Generated {
                path: "/api/v1/nodes",
                kind: "NodeList",
                api_version: "v1",
                items: nodes,
            },
            Generated {
                path: "/api/v1/pods",
                kind: "PodList",
                api_version: "v1",
                items: pods,
            },
            Generated {
                path: "/apis/apps/v1/deployments",
                kind: "DeploymentList",
                api_version: "apps/v1",
                items: deployments,
            },
            Generated {
                path: "/apis/apps/v1/replicasets",
                kind: "ReplicaSetList",
                api_version: "apps/v1",
                items: replica_sets,
            },
            Generated {
                path: "/apis/autoscaling/v2/horizontalpodautoscalers",
                kind: "HorizontalPodAutoscalerList",
                api_version: "autoscaling/v2",
                items: hpas,
            },
        ]
    }

    fn node(&self, t: &Value, i: usize, n: &NodeSpec) -> Value {
        let pool = &POOLS[n.pool];
        let mut v = t.clone();
        let m = &mut v["metadata"];
        m["name"] = json!(n.name);
        m["uid"] = json!(uid(1, i as u64));
        m["resourceVersion"] = json!((48_100_000 + i).to_string());
        m["creationTimestamp"] = json!(time(self.now - 86_400 * 12 - i as i64 * 60));
        let l = &mut m["labels"];
        let zone = format!("eu-west-1{}", n.zone);
        l["kubernetes.io/hostname"] = json!(n.name);
        l["beta.kubernetes.io/instance-type"] = json!(pool.instance_type);
        l["node.kubernetes.io/instance-type"] = json!(pool.instance_type);
        l["pool"] = json!(pool.name);
        l["failure-domain.beta.kubernetes.io/zone"] = json!(zone);
        l["topology.kubernetes.io/zone"] = json!(zone);
        let cidr = format!("10.{}.{}.0/24", 64 + i / 256, i % 256);
        v["spec"]["podCIDR"] = json!(cidr);
        v["spec"]["podCIDRs"] = json!([cidr]);
        v["spec"]["providerID"] = json!(format!("aws:///{zone}/i-0{:016x}", i * 7_919 + 1));
        let s = &mut v["status"];
        s["capacity"]["cpu"] = json!(pool.cpu);
        s["allocatable"]["cpu"] = json!(pool.allocatable_cpu);
        s["capacity"]["memory"] = json!("65023832Ki");
        s["allocatable"]["memory"] = json!("63970136Ki");
        s["capacity"]["pods"] = json!("110");
        s["allocatable"]["pods"] = json!("110");
        s["addresses"] = json!([
            {"type": "InternalIP", "address": n.ip},
            {"type": "InternalDNS", "address": n.name},
            {"type": "Hostname", "address": n.name},
        ]);
        s["nodeInfo"]["machineID"] = json!(format!("ec2{:029x}", i));
        s["nodeInfo"]["systemUUID"] = json!(format!("ec2{:029x}", i + 1_000_000));
        v
    }

    fn labels(spec: &DeploymentSpec, hash: Option<&str>) -> Value {
        let mut l = json!({
            "app": spec.name,
            "app.kubernetes.io/name": spec.name,
            "app.kubernetes.io/part-of": spec.namespace,
        });
        if let Some(hash) = hash {
            l["pod-template-hash"] = json!(hash);
        }
        l
    }

    /// Sets the pod template (or pod spec) fields that differ per deployment.
    fn pod_spec(spec: &DeploymentSpec, pod_spec: &mut Value) {
        pod_spec["containers"][0]["image"] = json!(format!(
            "registry.example.com/{}/{}:1.42.0",
            spec.namespace, spec.name
        ));
        pod_spec["initContainers"][0]["args"] =
            json!([format!("postgres.{}.svc:5432", spec.namespace)]);
        pod_spec["nodeSelector"] = json!({ "pool": POOLS[spec.pool].name });
        pod_spec["serviceAccountName"] = json!(spec.name);
        pod_spec["serviceAccount"] = json!(spec.name);
    }

    fn deployment(&self, t: &Value, d: usize, spec: &DeploymentSpec) -> Value {
        let mut v = t.clone();
        let replicas = spec.pods.len();
        let m = &mut v["metadata"];
        m["name"] = json!(spec.name);
        m["namespace"] = json!(spec.namespace);
        m["uid"] = json!(uid(2, d as u64));
        m["resourceVersion"] = json!((47_000_000 + d).to_string());
        m["labels"] = Self::labels(spec, None);
        m["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(format!(
            "{{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{{\"name\":\"{}\",\"namespace\":\"{}\"}},\"spec\":{{\"replicas\":{replicas}}}}}\n",
            spec.name, spec.namespace
        ));
        let s = &mut v["spec"];
        s["replicas"] = json!(replicas);
        s["selector"]["matchLabels"] = json!({ "app": spec.name });
        s["template"]["metadata"]["labels"] = Self::labels(spec, None);
        Self::pod_spec(spec, &mut s["template"]["spec"]);
        let st = &mut v["status"];
        for field in [
            "replicas",
            "updatedReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            st[field] = json!(replicas);
        }
        st["conditions"][1]["message"] = json!(format!(
            "ReplicaSet \"{}-{}\" has successfully progressed.",
            spec.name, spec.hash
        ));
        v
    }

    fn replica_set(
        &self,
        t: &Value,
        d: usize,
        spec: &DeploymentSpec,
        hash: &str,
        replicas: usize,
        kind: u32,
    ) -> Value {
        let mut v = t.clone();
        let m = &mut v["metadata"];
        m["name"] = json!(format!("{}-{hash}", spec.name));
        m["namespace"] = json!(spec.namespace);
        m["uid"] = json!(uid(2 + kind, d as u64));
        m["resourceVersion"] = json!((46_000_000 + d * 2 + kind as usize).to_string());
        m["labels"] = Self::labels(spec, Some(hash));
        m["annotations"]["deployment.kubernetes.io/desired-replicas"] =
            json!(spec.pods.len().to_string());
        m["annotations"]["deployment.kubernetes.io/max-replicas"] =
            json!((spec.pods.len() + spec.pods.len().div_ceil(4)).to_string());
        m["ownerReferences"][0]["name"] = json!(spec.name);
        m["ownerReferences"][0]["uid"] = json!(uid(2, d as u64));
        let s = &mut v["spec"];
        s["replicas"] = json!(replicas);
        s["selector"]["matchLabels"] = json!({ "app": spec.name, "pod-template-hash": hash });
        s["template"]["metadata"]["labels"] = Self::labels(spec, Some(hash));
        Self::pod_spec(spec, &mut s["template"]["spec"]);
        let st = &mut v["status"];
        for field in [
            "replicas",
            "fullyLabeledReplicas",
            "readyReplicas",
            "availableReplicas",
        ] {
            if st.get(field).is_some() || replicas > 0 {
                st[field] = json!(replicas);
            }
        }
        v
    }

    fn pod(&self, t: &Value, i: u64, d: usize, spec: &DeploymentSpec, pod: &PodSpec) -> Value {
        let mut v = t.clone();
        let rs = format!("{}-{}", spec.name, spec.hash);
        let started = time(self.now - pod.started_ago);
        let m = &mut v["metadata"];
        m["name"] = json!(pod.name);
        m["generateName"] = json!(format!("{rs}-"));
        m["namespace"] = json!(spec.namespace);
        m["uid"] = json!(uid(5, i));
        m["resourceVersion"] = json!((40_000_000 + i).to_string());
        m["creationTimestamp"] = json!(time(self.now - pod.started_ago - 1));
        m["labels"] = Self::labels(spec, Some(&spec.hash));
        m["ownerReferences"][0]["name"] = json!(rs);
        m["ownerReferences"][0]["uid"] = json!(uid(3, d as u64));
        let s = &mut v["spec"];
        Self::pod_spec(spec, s);
        let volume = format!("kube-api-access-{}", pod.suffix);
        s["volumes"][0]["name"] = json!(volume);
        for list in ["initContainers", "containers"] {
            for c in s[list].as_array_mut().unwrap() {
                c["volumeMounts"][0]["name"] = json!(volume);
            }
        }
        let node = &self.nodes[pod.node];
        s["nodeName"] = json!(node.name);
        let st = &mut v["status"];
        st["hostIP"] = json!(node.ip);
        st["hostIPs"] = json!([{ "ip": node.ip }]);
        st["podIP"] = json!(pod.ip);
        st["podIPs"] = json!([{ "ip": pod.ip }]);
        st["startTime"] = json!(started);
        for c in st["conditions"].as_array_mut().unwrap() {
            c["lastTransitionTime"] = json!(started);
            if !pod.ready && (c["type"] == "Ready" || c["type"] == "ContainersReady") {
                c["status"] = json!("False");
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(format!("containers with unready status: [{}]", "api"));
            }
        }
        for list in ["initContainerStatuses", "containerStatuses"] {
            for c in st[list].as_array_mut().unwrap() {
                if let Some(state) = c["state"]["running"].as_object_mut() {
                    state.insert("startedAt".into(), json!(started));
                }
                if let Some(state) = c["state"]["terminated"].as_object_mut() {
                    state.insert("startedAt".into(), json!(started));
                    state.insert("finishedAt".into(), json!(started));
                }
                c["containerID"] = json!(format!("containerd://{:064x}", i * 3 + 1));
            }
        }
        let image = format!(
            "registry.example.com/{}/{}:1.42.0",
            spec.namespace, spec.name
        );
        st["containerStatuses"][0]["image"] = json!(image);
        st["containerStatuses"][0]["ready"] = json!(pod.ready);
        v
    }

    fn hpa(&self, t: &Value, d: usize, spec: &DeploymentSpec) -> Value {
        let mut v = t.clone();
        let replicas = spec.pods.len();
        let m = &mut v["metadata"];
        m["name"] = json!(spec.name);
        m["namespace"] = json!(spec.namespace);
        m["uid"] = json!(uid(6, d as u64));
        m["resourceVersion"] = json!((48_000_000 + d).to_string());
        m["labels"]["app.kubernetes.io/part-of"] = json!(spec.namespace);
        let s = &mut v["spec"];
        s["scaleTargetRef"]["name"] = json!(spec.name);
        s["minReplicas"] = json!(2);
        s["maxReplicas"] = json!(40);
        let metric = &mut s["metrics"][0]["external"];
        metric["metric"]["selector"]["matchLabels"]["deployment"] = json!(spec.name);
        metric["target"]["value"] = json!(spec.target.to_string());
        let st = &mut v["status"];
        st["currentReplicas"] = json!(replicas);
        st["desiredReplicas"] = json!(replicas);
        let current = &mut st["currentMetrics"][0]["external"];
        current["metric"]["selector"]["matchLabels"]["deployment"] = json!(spec.name);
        current["current"]["value"] = json!(format!("{}m", spec.target * 1000 - 3_250));
        st["conditions"][1]["message"] = json!(format!(
            "the HPA was able to successfully calculate a replica count from external metric smart_cpu_utilization(&LabelSelector{{MatchLabels:map[string]string{{deployment: {},}},MatchExpressions:[]LabelSelectorRequirement{{}},}})",
            spec.name
        ));
        v
    }

    /// Writes the OpenMetrics to backfill: `hours` of history up to the generation time plus `ahead` seconds
    /// after it (Prometheus has no scrape targets, so the data that keeps the tick queries fresh during the run
    /// is written in advance). Pod CPU (a counter per pod, every minute) and CPU requests (every two minutes,
    /// inside the 5-minute lookback) over the whole range; pod memory over the last 20 minutes and ahead (only
    /// the instant query reads it); node idle CPU every minute over the whole range. Returns the samples written.
    pub fn write_openmetrics(
        &self,
        out: &mut impl Write,
        hours: u32,
        ahead: i64,
    ) -> io::Result<u64> {
        let end = self.now + ahead;
        let start = self.now - i64::from(hours) * 3600;
        let mut samples = 0u64;
        writeln!(out, "# TYPE container_cpu_usage_seconds_total counter")?;
        for spec in &self.deployments {
            for (p, pod) in spec.pods.iter().enumerate() {
                let mut counter = 1_000.0 + p as f64;
                let mut t = start;
                while t <= end {
                    // A four-hour wave of +-30% around the pod's mean.
                    let phase = (t % 14_400) as f64 / 14_400.0 * std::f64::consts::TAU;
                    counter += 60.0 * pod.cores * (1.0 + 0.3 * (phase + p as f64).sin());
                    writeln!(
                        out,
                        "container_cpu_usage_seconds_total{{namespace=\"{}\",pod=\"{}\",container=\"api\"}} {counter:.4} {t}",
                        spec.namespace, pod.name
                    )?;
                    samples += 1;
                    t += 60;
                }
            }
        }
        writeln!(out, "# TYPE container_memory_working_set_bytes gauge")?;
        for spec in &self.deployments {
            for (p, pod) in spec.pods.iter().enumerate() {
                let bytes = 190_000_000 + p as u64 * 1_048_576;
                let mut t = self.now - 1_200;
                while t <= end {
                    writeln!(
                        out,
                        "container_memory_working_set_bytes{{namespace=\"{}\",pod=\"{}\",container=\"api\"}} {bytes} {t}",
                        spec.namespace, pod.name
                    )?;
                    samples += 1;
                    t += 60;
                }
            }
        }
        writeln!(out, "# TYPE kube_pod_container_resource_requests gauge")?;
        for spec in &self.deployments {
            for pod in &spec.pods {
                let node = &self.nodes[pod.node].name;
                let mut t = start;
                while t <= end {
                    writeln!(
                        out,
                        "kube_pod_container_resource_requests{{namespace=\"{}\",pod=\"{}\",container=\"api\",node=\"{node}\",resource=\"cpu\",unit=\"core\"}} {POD_REQUEST_CORES} {t}",
                        spec.namespace, pod.name
                    )?;
                    samples += 1;
                    t += 120;
                }
            }
        }
        writeln!(out, "# TYPE node_cpu_seconds_total counter")?;
        for node in &self.nodes {
            let idle = 1.0 - POOLS[node.pool].utilization / 100.0;
            let mut counter = 100_000.0;
            let mut t = start;
            while t <= end {
                counter += 60.0 * idle;
                writeln!(
                    out,
                    "node_cpu_seconds_total{{instance=\"{}\",cpu=\"0\",mode=\"idle\"}} {counter:.2} {t}",
                    node.name
                )?;
                samples += 1;
                t += 60;
            }
        }
        writeln!(out, "# EOF")?;
        Ok(samples)
    }
}
