//! The cost model: what a deployment's pods cost over an interval, what of it is wasted, and the totals per
//! namespace and for the cluster. Pure arithmetic over a small [`CostInput`] the tick can fill from what it
//! already knows ([`DeploymentInputs`], the nodes of the [`Observation`](crate::model::Observation)); the store's
//! rollups, `/metrics` and `GET /api/v1/cost` are its readers, through [`snapshot_report`], which the engine calls
//! on every published snapshot (`docs/cost.md`).
//!
//! The rules, once:
//!
//! - Each pod-interval is charged `max(request, usage) × price` for CPU and for memory, as OpenCost does: a pod
//!   pays for what it reserved, and for what it used beyond that. Usage is known for the deployment as a whole,
//!   so it is split evenly over its pods (the tick has no per-pod usage).
//! - Prices are per vCPU-hour and per GiB-hour. Defaults are OpenCost's (0.031611 $/vCPU-hour, 0.004237
//!   $/GiB-hour); a configured default replaces them; per-node-pool prices apply to pods on nodes carrying a
//!   given label. Where a price came from is always in the output ([`PriceSource`]).
//! - Waste is what was requested and not used (per pod, never negative); efficiency is usage over request.
//! - Unknown is not zero: when usage is not observed, the cost is the request's and waste and efficiency are
//!   absent ([`Basis::RequestOnly`]); without a request the cost is the usage's ([`Basis::UsageOnly`], with a
//!   note); with neither there is no cost to state ([`Basis::Unknown`]). Non-finite or negative inputs count as
//!   not observed. No output field is ever NaN or infinite.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{DeploymentInputs, DeploymentKey, NodeInputs, Snapshot};

/// OpenCost's default CPU price, dollars per vCPU-hour (its `CPU` default in the custom pricing config).
pub const OPENCOST_CPU_PER_CORE_HOUR: f64 = 0.031611;
/// OpenCost's default memory price, dollars per GiB-hour (its `RAM` default in the custom pricing config).
pub const OPENCOST_MEMORY_PER_GIB_HOUR: f64 = 0.004237;
/// Bytes in a GiB.
pub const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
/// Hours in the 30-day projection.
pub const PROJECTION_HOURS: f64 = 30.0 * 24.0;
const MILLIS_PER_HOUR: f64 = 3_600_000.0;
/// Per-pod usage above this many cores or GiB is not a measurement.
const MAX_PER_POD: f64 = 1e6;

/// A price for CPU and memory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Dollars per vCPU-hour.
    pub cpu_per_core_hour: f64,
    /// Dollars per GiB-hour.
    pub memory_per_gib_hour: f64,
}

impl Price {
    /// OpenCost's defaults.
    pub const OPENCOST: Price = Price {
        cpu_per_core_hour: OPENCOST_CPU_PER_CORE_HOUR,
        memory_per_gib_hour: OPENCOST_MEMORY_PER_GIB_HOUR,
    };

    /// Both prices finite and not negative (zero is a valid price: hardware already paid for).
    pub fn is_valid(&self) -> bool {
        [self.cpu_per_core_hour, self.memory_per_gib_hour]
            .iter()
            .all(|p| p.is_finite() && *p >= 0.0)
    }
}

/// The price of the nodes of one pool: those carrying the label `label_key=label_value`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolPrice {
    /// Node label key (e.g. `node.kubernetes.io/instance-type`, `cloud.google.com/gke-nodepool`).
    pub label_key: String,
    /// Node label value.
    pub label_value: String,
    /// The price on those nodes.
    #[serde(flatten)]
    pub price: Price,
}

/// The price configuration: a default and per-node-pool prices. Missing or invalid prices fall back to the
/// default, and a missing or invalid default to OpenCost's; [`Prices::problems`] names what was ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    /// The price of nodes no pool entry matches; `None`: OpenCost's defaults.
    #[serde(default)]
    pub default: Option<Price>,
    /// Per-pool prices; the first entry whose label a node carries applies.
    #[serde(default)]
    pub pools: Vec<PoolPrice>,
}

/// Where a price came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PriceSource {
    /// A per-pool price, by the node label it matched.
    NodePool {
        /// Label key.
        label_key: String,
        /// Label value.
        label_value: String,
    },
    /// The configured default (the node matched no pool, or its node is unknown).
    ConfiguredDefault,
    /// OpenCost's defaults: no (valid) price was configured for it.
    OpencostDefault,
    /// The pods ran on nodes priced from different sources (see [`DeploymentCost::prices`]).
    Mixed,
}

impl Prices {
    /// What in the configuration is ignored, in words (for the start-up log); empty when all is usable.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = self.default
            && !d.is_valid()
        {
            out.push(format!(
                "default price {d:?} is not finite and non-negative: OpenCost's defaults are used"
            ));
        }
        for p in &self.pools {
            if !p.price.is_valid() {
                out.push(format!(
                    "price of pool {}={} ({:?}) is not finite and non-negative: ignored, its nodes get the default",
                    p.label_key, p.label_value, p.price
                ));
            }
        }
        out
    }

    /// The price of nodes no pool matches, and its source.
    pub fn default_price(&self) -> (Price, PriceSource) {
        match self.default {
            Some(p) if p.is_valid() => (p, PriceSource::ConfiguredDefault),
            _ => (Price::OPENCOST, PriceSource::OpencostDefault),
        }
    }

    /// The price of a node with these labels (`None`: the node is unknown), and its source.
    pub fn for_node(&self, labels: Option<&BTreeMap<String, String>>) -> (Price, PriceSource) {
        let matched = labels.and_then(|labels| {
            self.pools
                .iter()
                .find(|p| p.price.is_valid() && labels.get(&p.label_key) == Some(&p.label_value))
        });
        match matched {
            Some(p) => (
                p.price,
                PriceSource::NodePool {
                    label_key: p.label_key.clone(),
                    label_value: p.label_value.clone(),
                },
            ),
            None => self.default_price(),
        }
    }
}

/// One deployment over one interval, as the tick knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostInput {
    /// Which deployment.
    pub key: DeploymentKey,
    /// Length of the interval, milliseconds (the tick interval, or a rollup's).
    pub window_millis: i64,
    /// Pods running over the interval.
    pub pods: u32,
    /// CPU request of one pod, milli-cores ([`DeploymentInputs::pod_cpu_request_milli`]); 0: none.
    pub pod_cpu_request_milli: i64,
    /// Memory request of one pod, bytes; 0: none.
    pub pod_memory_request_bytes: i64,
    /// CPU used by all the pods together, cores; `None`: not measured.
    pub cpu_usage_cores: Option<f64>,
    /// Memory working set of all the pods together, bytes; `None`: not observed.
    pub memory_usage_bytes: Option<f64>,
    /// Pods per node name, where known; pods not listed (or on nodes not in the node list) get the default price.
    #[serde(default)]
    pub pods_by_node: BTreeMap<String, u32>,
}

impl CostInput {
    /// The input from a tick's [`DeploymentInputs`]: its ready pods, its pod CPU request, and usage from its
    /// utilizations (CPU: `cpu_utilization_percent × request × ready pods`, which assumes the pods still in their
    /// startup filter use as much as the measured ones; memory only when `memory_utilization_percent` and the
    /// memory request are both known). `pods_by_node` is left empty for the caller to fill from the pods.
    pub fn from_deployment(
        inputs: &DeploymentInputs,
        pod_memory_request_bytes: i64,
        window_millis: i64,
    ) -> CostInput {
        let pods = f64::from(inputs.ready_pods);
        let cpu_request = inputs.pod_cpu_request_milli.max(0) as f64 / 1000.0;
        let cpu_usage_cores = (cpu_request > 0.0)
            .then(|| inputs.cpu_utilization_percent / 100.0 * cpu_request * pods)
            .and_then(finite_non_negative);
        let memory_usage_bytes = inputs
            .memory_utilization_percent
            .filter(|_| pod_memory_request_bytes > 0)
            .map(|m| m / 100.0 * pod_memory_request_bytes as f64 * pods)
            .and_then(finite_non_negative);
        CostInput {
            key: inputs.key.clone(),
            window_millis,
            pods: inputs.ready_pods,
            pod_cpu_request_milli: inputs.pod_cpu_request_milli,
            pod_memory_request_bytes,
            cpu_usage_cores,
            memory_usage_bytes,
            pods_by_node: BTreeMap::new(),
        }
    }
}

/// What a resource's charge is based on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// `max(request, usage)` per pod: request and usage both known.
    MaxOfRequestAndUsage,
    /// The request only: usage was not observed, so there is no waste or efficiency to state.
    RequestOnly,
    /// The usage only: the pods request none of it.
    UsageOnly,
    /// Neither a request nor an observed usage: no cost can be stated (charged 0, and said so).
    Unknown,
    /// A rollup over parts with different bases.
    Mixed,
    /// No pod ran in the interval: nothing to charge.
    NoPods,
}

impl Basis {
    fn merge(self, other: Basis) -> Basis {
        match (self, other) {
            (a, b) if a == b => a,
            (Basis::NoPods, b) => b,
            (a, Basis::NoPods) => a,
            _ => Basis::Mixed,
        }
    }
}

/// One resource's cost over an interval. Quantities are resource-hours: core-hours for CPU, GiB-hours for
/// memory. Additive: rollups add them (see [`ResourceCost::add`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ResourceCost {
    /// What the charge is based on.
    pub basis: Basis,
    /// Requested resource-hours.
    pub requested: f64,
    /// Requested resource-hours over the part of the interval where usage was observed (efficiency's base).
    pub requested_observed: f64,
    /// Used resource-hours, over the part where usage was observed.
    pub used: f64,
    /// Charged resource-hours: per pod-interval `max(request, usage)`, or what the basis says.
    pub charged: f64,
    /// Dollars charged.
    pub cost_usd: f64,
    /// Requested but unused resource-hours (per pod, never negative), over the observed part.
    pub wasted: f64,
    /// Dollars of [`ResourceCost::wasted`].
    pub waste_usd: f64,
    /// `used / requested_observed`; `None` when usage was never observed or nothing was requested. Above 1
    /// when the pods use more than they request.
    pub efficiency: Option<f64>,
}

impl ResourceCost {
    fn empty(basis: Basis) -> ResourceCost {
        ResourceCost {
            basis,
            requested: 0.0,
            requested_observed: 0.0,
            used: 0.0,
            charged: 0.0,
            cost_usd: 0.0,
            wasted: 0.0,
            waste_usd: 0.0,
            efficiency: None,
        }
    }

    /// Adds another part (another deployment over the same interval, or a later interval).
    pub fn add(&mut self, other: &ResourceCost) {
        self.basis = self.basis.merge(other.basis);
        self.requested += other.requested;
        self.requested_observed += other.requested_observed;
        self.used += other.used;
        self.charged += other.charged;
        self.cost_usd += other.cost_usd;
        self.wasted += other.wasted;
        self.waste_usd += other.waste_usd;
        self.efficiency = efficiency(self.used, self.requested_observed, self.basis);
    }
}

fn efficiency(used: f64, requested_observed: f64, basis: Basis) -> Option<f64> {
    if requested_observed > 0.0 && !matches!(basis, Basis::RequestOnly | Basis::Unknown) {
        finite_non_negative(used / requested_observed)
    } else {
        None
    }
}

/// Pod-hours charged at one price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PricedPods {
    /// Where the price came from.
    pub source: PriceSource,
    /// The price.
    pub price: Price,
    /// Pod-hours charged at it.
    pub pod_hours: f64,
}

/// A deployment's cost over an interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentCost {
    /// Which deployment.
    pub key: DeploymentKey,
    /// Length of the interval, milliseconds.
    pub window_millis: i64,
    /// Pod-hours in the interval.
    pub pod_hours: f64,
    /// CPU (core-hours).
    pub cpu: ResourceCost,
    /// Memory (GiB-hours).
    pub memory: ResourceCost,
    /// CPU plus memory, dollars.
    pub total_usd: f64,
    /// Wasted CPU plus memory, dollars.
    pub waste_usd: f64,
    /// Average requested-but-unused CPU over the interval, cores (over the part where usage was observed).
    pub waste_cores: f64,
    /// Average requested-but-unused memory over the interval, GiB (over the part where usage was observed).
    pub waste_gib: f64,
    /// Dollars per hour over the interval (0 for an empty interval).
    pub hourly_usd: f64,
    /// 30 days at [`DeploymentCost::hourly_usd`].
    pub projected_30d_usd: f64,
    /// Where the price came from; [`PriceSource::Mixed`] when the pods ran on differently priced nodes.
    pub price_source: PriceSource,
    /// Pod-hours per price.
    pub prices: Vec<PricedPods>,
    /// Caveats, in words (no request, usage not observed, inputs ignored, pods on unknown nodes).
    pub notes: Vec<String>,
}

impl DeploymentCost {
    /// Adds the next interval of the same deployment (a rollup): sums, then the rate and projection over the
    /// whole window.
    pub fn merge_later(&mut self, later: &DeploymentCost) {
        self.window_millis = self.window_millis.saturating_add(later.window_millis);
        self.pod_hours += later.pod_hours;
        self.cpu.add(&later.cpu);
        self.memory.add(&later.memory);
        for p in &later.prices {
            match self.prices.iter_mut().find(|q| q.source == p.source) {
                Some(q) => {
                    q.pod_hours += p.pod_hours;
                    q.price = p.price;
                }
                None => self.prices.push(p.clone()),
            }
        }
        for n in &later.notes {
            if !self.notes.contains(n) {
                self.notes.push(n.clone());
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        let hours = hours(self.window_millis);
        self.total_usd = self.cpu.cost_usd + self.memory.cost_usd;
        self.waste_usd = self.cpu.waste_usd + self.memory.waste_usd;
        self.waste_cores = per_hour(self.cpu.wasted, hours);
        self.waste_gib = per_hour(self.memory.wasted, hours);
        self.hourly_usd = per_hour(self.total_usd, hours);
        self.projected_30d_usd = self.hourly_usd * PROJECTION_HOURS;
        self.price_source = summary_source(&self.prices);
    }
}

fn summary_source(prices: &[PricedPods]) -> PriceSource {
    let mut sources = prices
        .iter()
        .filter(|p| p.pod_hours > 0.0)
        .map(|p| &p.source);
    match (sources.next(), sources.next()) {
        (Some(s), None) => s.clone(),
        (Some(_), Some(_)) => PriceSource::Mixed,
        // No pod-hours: say which price would apply, from the entries (possibly the default).
        (None, _) => prices
            .first()
            .map_or(PriceSource::OpencostDefault, |p| p.source.clone()),
    }
}

fn hours(window_millis: i64) -> f64 {
    window_millis.max(0) as f64 / MILLIS_PER_HOUR
}

fn per_hour(amount: f64, hours: f64) -> f64 {
    if hours > 0.0 {
        finite_non_negative(amount / hours).unwrap_or(0.0)
    } else {
        0.0
    }
}

fn finite_non_negative(x: f64) -> Option<f64> {
    (x.is_finite() && x >= 0.0).then_some(x)
}

/// One resource of one pod: request and per-pod usage, both per pod, in cores or GiB.
struct PerPod {
    request: f64,
    usage: Option<f64>,
}

impl PerPod {
    fn basis(&self) -> Basis {
        match (self.request > 0.0, self.usage.is_some()) {
            (true, true) => Basis::MaxOfRequestAndUsage,
            (true, false) => Basis::RequestOnly,
            (false, true) => Basis::UsageOnly,
            (false, false) => Basis::Unknown,
        }
    }

    /// The cost of `pod_hours` of such pods at `price` per resource-hour.
    fn charge(&self, pod_hours: f64, price: f64) -> ResourceCost {
        let basis = self.basis();
        let r = self.request;
        let mut c = ResourceCost::empty(basis);
        c.requested = r * pod_hours;
        let per_pod_charged = match self.usage {
            Some(u) => {
                c.requested_observed = r * pod_hours;
                c.used = u * pod_hours;
                c.wasted = (r - u).max(0.0) * pod_hours;
                r.max(u)
            }
            None => r,
        };
        c.charged = per_pod_charged * pod_hours;
        c.cost_usd = c.charged * price;
        c.waste_usd = c.wasted * price;
        c.efficiency = efficiency(c.used, c.requested_observed, basis);
        c
    }
}

/// A deployment's cost over the input's interval, with the pods priced by the nodes they ran on.
pub fn deployment_cost(input: &CostInput, nodes: &[NodeInputs], prices: &Prices) -> DeploymentCost {
    let mut notes = Vec::new();
    let hours = hours(input.window_millis);
    if input.window_millis <= 0 {
        notes.push(format!(
            "empty interval ({} ms): nothing charged",
            input.window_millis
        ));
    }
    let pods = input.pods;
    let cpu = PerPod {
        request: input.pod_cpu_request_milli.max(0) as f64 / 1000.0,
        usage: per_pod_usage(input.cpu_usage_cores, pods, "CPU", 1.0, &mut notes),
    };
    let memory = PerPod {
        request: input.pod_memory_request_bytes.max(0) as f64 / GIB,
        usage: per_pod_usage(input.memory_usage_bytes, pods, "memory", GIB, &mut notes),
    };
    if pods > 0 {
        match cpu.basis() {
            Basis::UsageOnly => notes.push(
                "no CPU request: CPU charged on usage only (no waste or efficiency)".to_string(),
            ),
            Basis::Unknown => notes.push(
                "no CPU request and no CPU usage measured: CPU cost unknown, charged 0".to_string(),
            ),
            Basis::RequestOnly => notes.push(
                "CPU usage not measured: CPU charged at the request (no waste or efficiency)"
                    .to_string(),
            ),
            _ => {}
        }
        match memory.basis() {
            Basis::UsageOnly => notes.push(
                "no memory request: memory charged on usage only (no waste or efficiency)"
                    .to_string(),
            ),
            Basis::Unknown => notes.push(
                "no memory request and memory usage not observed: memory cost unknown, charged 0"
                    .to_string(),
            ),
            Basis::RequestOnly => notes.push(
                "memory usage not observed: memory charged at the request (no waste or efficiency)"
                    .to_string(),
            ),
            _ => {}
        }
    }

    // Pods per price: by the labels of the node each ran on; the rest at the default.
    let mut groups: Vec<PricedPods> = Vec::new();
    let mut placed: u32 = 0;
    let mut unknown_nodes = 0u32;
    for (node, &count) in &input.pods_by_node {
        let count = count.min(pods - placed);
        if count == 0 {
            continue;
        }
        placed += count;
        let labels = nodes.iter().find(|n| &n.name == node).map(|n| &n.labels);
        if labels.is_none() {
            unknown_nodes += count;
        }
        let (price, source) = prices.for_node(labels);
        add_group(&mut groups, source, price, f64::from(count) * hours);
    }
    if unknown_nodes > 0 {
        notes.push(format!(
            "{unknown_nodes} pod(s) on nodes not in the node list: default price"
        ));
    }
    let listed: u64 = input.pods_by_node.values().map(|&c| u64::from(c)).sum();
    if listed > u64::from(pods) {
        notes.push(format!(
            "pods_by_node lists {listed} pods for {pods} running: the extra ones are ignored"
        ));
    }
    let (default_price, default_source) = prices.default_price();
    if pods > placed {
        if !input.pods_by_node.is_empty() {
            notes.push(format!(
                "{} pod(s) with no known node: default price",
                pods - placed
            ));
        }
        add_group(
            &mut groups,
            default_source.clone(),
            default_price,
            f64::from(pods - placed) * hours,
        );
    }
    if groups.is_empty() {
        // No pods: still say which price applies.
        groups.push(PricedPods {
            source: default_source,
            price: default_price,
            pod_hours: 0.0,
        });
    }

    let (mut cpu_cost, mut memory_cost) = if pods == 0 {
        (
            ResourceCost::empty(Basis::NoPods),
            ResourceCost::empty(Basis::NoPods),
        )
    } else {
        (
            ResourceCost::empty(cpu.basis()),
            ResourceCost::empty(memory.basis()),
        )
    };
    for g in groups.iter().filter(|g| g.pod_hours > 0.0) {
        cpu_cost.add(&cpu.charge(g.pod_hours, g.price.cpu_per_core_hour));
        memory_cost.add(&memory.charge(g.pod_hours, g.price.memory_per_gib_hour));
    }
    let mut cost = DeploymentCost {
        key: input.key.clone(),
        window_millis: input.window_millis.max(0),
        pod_hours: f64::from(pods) * hours,
        cpu: cpu_cost,
        memory: memory_cost,
        total_usd: 0.0,
        waste_usd: 0.0,
        waste_cores: 0.0,
        waste_gib: 0.0,
        hourly_usd: 0.0,
        projected_30d_usd: 0.0,
        price_source: PriceSource::OpencostDefault,
        prices: groups,
        notes,
    };
    cost.finish();
    cost
}

fn add_group(groups: &mut Vec<PricedPods>, source: PriceSource, price: Price, pod_hours: f64) {
    match groups.iter_mut().find(|g| g.source == source) {
        Some(g) => g.pod_hours += pod_hours,
        None => groups.push(PricedPods {
            source,
            price,
            pod_hours,
        }),
    }
}

/// Per-pod usage in cores or GiB from the deployment's total (`unit` bytes or cores per output unit); a
/// non-finite or negative total is not a measurement and is noted.
fn per_pod_usage(
    total: Option<f64>,
    pods: u32,
    what: &str,
    unit: f64,
    notes: &mut Vec<String>,
) -> Option<f64> {
    let total = total?;
    if !(total.is_finite() && total >= 0.0) {
        notes.push(format!(
            "{what} usage {total} is not a measurement: treated as not observed"
        ));
        return None;
    }
    if pods == 0 {
        return None;
    }
    let per_pod = total / unit / f64::from(pods);
    // No pod uses a million cores or GiB; such a value is a unit error upstream, and keeping it out keeps every
    // product below f64's range.
    if per_pod > MAX_PER_POD {
        notes.push(format!(
            "{what} usage of {per_pod} per pod is not plausible: treated as not observed"
        ));
        return None;
    }
    Some(per_pod)
}

/// Totals over several deployments over the same interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostTotals {
    /// Deployments counted.
    pub deployments: u32,
    /// Deployments whose CPU or memory cost is [`Basis::Unknown`] (charged 0).
    pub unknown_cost: u32,
    /// CPU (core-hours).
    pub cpu: ResourceCost,
    /// Memory (GiB-hours).
    pub memory: ResourceCost,
    /// Dollars.
    pub total_usd: f64,
    /// Wasted dollars.
    pub waste_usd: f64,
    /// Average wasted cores (sum of the deployments').
    pub waste_cores: f64,
    /// Average wasted GiB (sum of the deployments').
    pub waste_gib: f64,
    /// Dollars per hour (sum of the deployments' rates).
    pub hourly_usd: f64,
    /// 30 days at that rate.
    pub projected_30d_usd: f64,
}

impl CostTotals {
    fn new() -> CostTotals {
        CostTotals {
            deployments: 0,
            unknown_cost: 0,
            cpu: ResourceCost::empty(Basis::NoPods),
            memory: ResourceCost::empty(Basis::NoPods),
            total_usd: 0.0,
            waste_usd: 0.0,
            waste_cores: 0.0,
            waste_gib: 0.0,
            hourly_usd: 0.0,
            projected_30d_usd: 0.0,
        }
    }

    fn add(&mut self, d: &DeploymentCost) {
        self.deployments += 1;
        if d.cpu.basis == Basis::Unknown || d.memory.basis == Basis::Unknown {
            self.unknown_cost += 1;
        }
        self.cpu.add(&d.cpu);
        self.memory.add(&d.memory);
        self.total_usd += d.total_usd;
        self.waste_usd += d.waste_usd;
        self.waste_cores += d.waste_cores;
        self.waste_gib += d.waste_gib;
        self.hourly_usd += d.hourly_usd;
        self.projected_30d_usd += d.projected_30d_usd;
    }
}

/// Costs of every deployment with the totals per namespace and for the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// Per deployment, sorted by key.
    pub deployments: Vec<DeploymentCost>,
    /// Per namespace.
    pub namespaces: BTreeMap<String, CostTotals>,
    /// The cluster.
    pub cluster: CostTotals,
}

/// Adds up per-deployment costs (of the same interval) per namespace and for the cluster.
pub fn report(mut deployments: Vec<DeploymentCost>) -> CostReport {
    deployments.sort_by(|a, b| a.key.cmp(&b.key));
    let mut namespaces: BTreeMap<String, CostTotals> = BTreeMap::new();
    let mut cluster = CostTotals::new();
    for d in &deployments {
        namespaces
            .entry(d.key.namespace.clone())
            .or_insert_with(CostTotals::new)
            .add(d);
        cluster.add(d);
    }
    CostReport {
        deployments,
        namespaces,
        cluster,
    }
}

/// What every deployment of a tick's [`Snapshot`] cost over that tick (`interval_millis`), with the totals per
/// namespace and for the cluster: the engine calls it on every published snapshot, in `serve` and `demo` alike.
///
/// Each deployment is charged for its ready pods, priced by the labels of the nodes they run on
/// ([`DeploymentInputs::ready_pods_by_node`]) and its pod requests. A deployment whose usage is unknown on this
/// tick (it is in [`Snapshot::unmeasured`], served from its last good inputs) is charged at its requests with no
/// usage, waste or efficiency, and a note says why: its last measurement is not this tick's usage. Managed
/// deployments never measured at all have no inputs to charge and are left out.
pub fn snapshot_report(snapshot: &Snapshot, prices: &Prices) -> CostReport {
    let costs = snapshot
        .deployments
        .values()
        .map(|served| {
            let inputs = &served.inputs;
            let mut input = CostInput::from_deployment(
                inputs,
                inputs.pod_memory_request_bytes,
                snapshot.interval_millis,
            );
            input.pods_by_node = inputs.ready_pods_by_node.clone();
            let unknown = snapshot.unmeasured.contains_key(&inputs.key);
            if unknown {
                input.cpu_usage_cores = None;
                input.memory_usage_bytes = None;
            }
            let mut cost = deployment_cost(&input, &snapshot.nodes, prices);
            if unknown {
                cost.notes.insert(
                    0,
                    "usage unknown on this tick: charged at the last known requests".to_string(),
                );
            }
            cost
        })
        .collect();
    report(costs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn input(pods: u32, cpu_milli: i64, mem_bytes: i64) -> CostInput {
        CostInput {
            key: DeploymentKey::new("shop", "web"),
            window_millis: HOUR,
            pods,
            pod_cpu_request_milli: cpu_milli,
            pod_memory_request_bytes: mem_bytes,
            cpu_usage_cores: None,
            memory_usage_bytes: None,
            pods_by_node: BTreeMap::new(),
        }
    }

    fn node(name: &str, pool: &str) -> NodeInputs {
        NodeInputs {
            name: name.into(),
            labels: [("pool".to_string(), pool.to_string())].into(),
            ready: true,
            schedulable: true,
            allocatable_cpu_milli: 4000,
            requested_cpu_milli: 0,
            measured_cpu_percent: None,
        }
    }

    fn all_finite(c: &DeploymentCost) -> bool {
        [
            c.total_usd,
            c.waste_usd,
            c.hourly_usd,
            c.projected_30d_usd,
            c.waste_cores,
            c.waste_gib,
            c.pod_hours,
        ]
        .iter()
        .chain(
            &[c.cpu, c.memory]
                .map(|r| {
                    [
                        r.requested,
                        r.requested_observed,
                        r.used,
                        r.charged,
                        r.cost_usd,
                        r.wasted,
                        r.waste_usd,
                    ]
                })
                .concat(),
        )
        .all(|x| x.is_finite())
            && c.cpu.efficiency.is_none_or(f64::is_finite)
            && c.memory.efficiency.is_none_or(f64::is_finite)
            && c.prices.iter().all(|p| p.pod_hours.is_finite())
    }

    #[test]
    fn charges_max_of_request_and_usage_per_pod_at_opencost_prices() {
        // 4 pods × 500m and 1 GiB for one hour; they use 1.2 cores (300m each) and 6 GiB (1.5 GiB each).
        let mut i = input(4, 500, GIB as i64);
        i.cpu_usage_cores = Some(1.2);
        i.memory_usage_bytes = Some(6.0 * GIB);
        let c = deployment_cost(&i, &[], &Prices::default());
        // CPU: max(0.5, 0.3) × 4 pods × 1 h = 2 core-hours × 0.031611 = 0.063222 $.
        assert!(close(c.cpu.charged, 2.0));
        assert!(close(c.cpu.cost_usd, 0.063222), "{}", c.cpu.cost_usd);
        // Waste: (0.5 − 0.3) × 4 = 0.8 core-hours = 0.0252888 $; efficiency 1.2 / 2 = 0.6.
        assert!(close(c.cpu.wasted, 0.8));
        assert!(close(c.cpu.waste_usd, 0.8 * 0.031611));
        assert!(close(c.cpu.efficiency.unwrap(), 0.6));
        // Memory: max(1, 1.5) × 4 = 6 GiB-hours × 0.004237 = 0.025422 $; no waste, efficiency 1.5.
        assert!(close(c.memory.charged, 6.0));
        assert!(close(c.memory.cost_usd, 0.025422));
        assert!(close(c.memory.wasted, 0.0));
        assert!(close(c.memory.efficiency.unwrap(), 1.5));
        // Totals, rate and projection: 0.088644 $ per hour, × 720 = 63.82368 $ per 30 days.
        assert!(close(c.total_usd, 0.088644));
        assert!(close(c.hourly_usd, 0.088644));
        assert!(close(c.projected_30d_usd, 63.82368));
        assert!(close(c.waste_cores, 0.8));
        assert!(close(c.waste_gib, 0.0));
        assert_eq!(c.price_source, PriceSource::OpencostDefault);
        assert_eq!(c.cpu.basis, Basis::MaxOfRequestAndUsage);
        assert!(c.notes.is_empty(), "{:?}", c.notes);
        assert!(all_finite(&c));
    }

    #[test]
    fn per_pool_prices_follow_node_labels_and_unlabelled_nodes_get_the_default() {
        let prices = Prices {
            default: Some(Price {
                cpu_per_core_hour: 0.04,
                memory_per_gib_hour: 0.005,
            }),
            pools: vec![
                PoolPrice {
                    label_key: "pool".into(),
                    label_value: "spot".into(),
                    price: Price {
                        cpu_per_core_hour: 0.01,
                        memory_per_gib_hour: 0.001,
                    },
                },
                // Invalid: ignored (its nodes get the default), and named in problems().
                PoolPrice {
                    label_key: "pool".into(),
                    label_value: "gpu".into(),
                    price: Price {
                        cpu_per_core_hour: f64::NAN,
                        memory_per_gib_hour: 0.1,
                    },
                },
            ],
        };
        assert_eq!(prices.problems().len(), 1);
        let mut unlabelled = node("n3", "x");
        unlabelled.labels.clear();
        let nodes = [node("n1", "spot"), node("n2", "gpu"), unlabelled];
        // 1 core and 2 GiB per pod, no usage: charged at requests.
        let mut i = input(4, 1000, 2 * GIB as i64);
        i.pods_by_node = [("n1".to_string(), 2), ("n2".into(), 1), ("n3".into(), 1)].into();
        let c = deployment_cost(&i, &nodes, &prices);
        // 2 spot pods: 2 × (1 × 0.01 + 2 × 0.001) = 0.024; 2 default pods: 2 × (0.04 + 0.01) = 0.1.
        assert!(close(c.total_usd, 0.124), "{}", c.total_usd);
        assert_eq!(c.price_source, PriceSource::Mixed);
        assert_eq!(c.prices.len(), 2);
        assert!(c.prices.iter().any(|p| p.source
            == PriceSource::NodePool {
                label_key: "pool".into(),
                label_value: "spot".into()
            }
            && close(p.pod_hours, 2.0)));
        assert!(
            c.prices
                .iter()
                .any(|p| p.source == PriceSource::ConfiguredDefault && close(p.pod_hours, 2.0))
        );
        // Usage not observed: request only, and said so; no waste or efficiency.
        assert_eq!(c.cpu.basis, Basis::RequestOnly);
        assert_eq!(c.memory.basis, Basis::RequestOnly);
        assert_eq!(c.cpu.efficiency, None);
        assert!(
            c.notes
                .iter()
                .any(|n| n.contains("memory usage not observed"))
        );
        assert!(all_finite(&c));
    }

    #[test]
    fn missing_or_invalid_prices_fall_back_to_opencost_and_say_so() {
        let bad = Prices {
            default: Some(Price {
                cpu_per_core_hour: -1.0,
                memory_per_gib_hour: f64::INFINITY,
            }),
            pools: vec![],
        };
        assert_eq!(bad.problems().len(), 1);
        let i = input(1, 1000, GIB as i64);
        let c = deployment_cost(&i, &[], &bad);
        assert_eq!(c.price_source, PriceSource::OpencostDefault);
        assert!(close(c.total_usd, 0.031611 + 0.004237));
        // Pods on a node the node list does not have: default, with a note.
        let mut i = input(2, 1000, 0);
        i.pods_by_node = [("gone".to_string(), 1)].into();
        let c = deployment_cost(&i, &[], &Prices::default());
        assert_eq!(c.price_source, PriceSource::OpencostDefault);
        assert!(c.notes.iter().any(|n| n.contains("not in the node list")));
        assert!(c.notes.iter().any(|n| n.contains("no known node")));
        assert!(close(c.pod_hours, 2.0));
    }

    #[test]
    fn no_request_charges_usage_only_with_a_note_and_neither_is_unknown() {
        let mut i = input(2, 0, 0);
        i.cpu_usage_cores = Some(0.5);
        let c = deployment_cost(&i, &[], &Prices::default());
        assert_eq!(c.cpu.basis, Basis::UsageOnly);
        assert!(close(c.cpu.charged, 0.5));
        assert!(close(c.cpu.cost_usd, 0.5 * 0.031611));
        assert_eq!(c.cpu.efficiency, None);
        assert!(close(c.cpu.wasted, 0.0));
        assert_eq!(c.memory.basis, Basis::Unknown);
        assert!(close(c.memory.cost_usd, 0.0));
        assert!(c.notes.iter().any(|n| n.contains("no CPU request")));
        assert!(c.notes.iter().any(|n| n.contains("memory cost unknown")));
        let r = report(vec![c]);
        assert_eq!(r.cluster.unknown_cost, 1);
    }

    #[test]
    fn zeros_nans_and_infinities_never_produce_nan() {
        let cases = [
            (0, 0, 0, Some(0.0), Some(0.0), HOUR),
            (0, 500, GIB as i64, Some(1.0), Some(GIB), HOUR),
            (
                3,
                500,
                GIB as i64,
                Some(f64::NAN),
                Some(f64::INFINITY),
                HOUR,
            ),
            (
                3,
                500,
                GIB as i64,
                Some(f64::NEG_INFINITY),
                Some(-1.0),
                HOUR,
            ),
            (3, -500, -1, Some(1e300), Some(f64::MAX), HOUR),
            (3, 500, GIB as i64, Some(1.0), None, 0),
            (3, 500, GIB as i64, Some(1.0), None, -HOUR),
            (u32::MAX, i64::MAX, i64::MAX, Some(f64::MAX), None, i64::MAX),
        ];
        for (pods, cpu, mem, cu, mu, window) in cases {
            let mut i = input(pods, cpu, mem);
            i.cpu_usage_cores = cu;
            i.memory_usage_bytes = mu;
            i.window_millis = window;
            let c = deployment_cost(&i, &[], &Prices::default());
            assert!(
                all_finite(&c),
                "{pods} {cpu} {mem} {cu:?} {mu:?} {window}: {c:?}"
            );
            let r = report(vec![c]);
            assert!(r.cluster.total_usd.is_finite() && r.cluster.projected_30d_usd.is_finite());
        }
        // NaN usage is noted and treated as not observed.
        let mut i = input(3, 500, 0);
        i.cpu_usage_cores = Some(f64::NAN);
        let c = deployment_cost(&i, &[], &Prices::default());
        assert_eq!(c.cpu.basis, Basis::RequestOnly);
        assert!(c.notes.iter().any(|n| n.contains("not a measurement")));
        // An empty interval charges nothing, with a note.
        let mut i = input(3, 500, 0);
        i.window_millis = 0;
        let c = deployment_cost(&i, &[], &Prices::default());
        assert_eq!(c.total_usd, 0.0);
        assert_eq!(c.hourly_usd, 0.0);
        assert!(c.notes.iter().any(|n| n.contains("empty interval")));
        // No pods: nothing charged, basis says so.
        let c = deployment_cost(&input(0, 500, 0), &[], &Prices::default());
        assert_eq!(c.cpu.basis, Basis::NoPods);
        assert_eq!(c.total_usd, 0.0);
    }

    #[test]
    fn totals_per_namespace_and_cluster_and_rollups_over_time() {
        let mut a = input(2, 1000, 0);
        a.cpu_usage_cores = Some(1.0);
        let mut b = input(1, 2000, 0);
        b.key = DeploymentKey::new("shop", "api");
        b.cpu_usage_cores = Some(3.0);
        let mut c = input(1, 1000, 0);
        c.key = DeploymentKey::new("ops", "cron");
        let costs: Vec<_> = [&a, &b, &c]
            .iter()
            .map(|i| deployment_cost(i, &[], &Prices::default()))
            .collect();
        let r = report(costs);
        let shop = &r.namespaces["shop"];
        // web: 2 × max(1, 0.5) = 2 core-hours, waste 1; api: 1 × max(2, 3) = 3, waste 0.
        assert_eq!(shop.deployments, 2);
        assert!(close(shop.cpu.charged, 5.0));
        assert!(close(shop.cpu.wasted, 1.0));
        // Efficiency over the observed part: (1 + 3) / (2 + 2) = 1.0.
        assert!(close(shop.cpu.efficiency.unwrap(), 1.0));
        assert!(close(shop.total_usd, 5.0 * 0.031611));
        assert!(close(shop.projected_30d_usd, 5.0 * 0.031611 * 720.0));
        // ops/cron has no usage: requested 1 core-hour, no observed part.
        let ops = &r.namespaces["ops"];
        assert_eq!(ops.cpu.basis, Basis::RequestOnly);
        assert_eq!(ops.cpu.efficiency, None);
        // Cluster: 6 core-hours; efficiency still over the observed part only, basis mixed.
        assert!(close(r.cluster.cpu.charged, 6.0));
        assert_eq!(r.cluster.cpu.basis, Basis::Mixed);
        assert!(close(r.cluster.cpu.efficiency.unwrap(), 1.0));
        assert!(close(r.cluster.hourly_usd, 6.0 * 0.031611));
        assert_eq!(r.deployments[0].key.namespace, "ops");

        // Two consecutive hours of web, the second idle: 3 core-hours over 2 h → 1.5 $/h-rate basis.
        let first = deployment_cost(&a, &[], &Prices::default());
        let mut idle = a.clone();
        idle.cpu_usage_cores = Some(0.0);
        let mut rolled = first.clone();
        rolled.merge_later(&deployment_cost(&idle, &[], &Prices::default()));
        assert_eq!(rolled.window_millis, 2 * HOUR);
        assert!(close(rolled.cpu.charged, 4.0));
        assert!(close(rolled.cpu.wasted, 3.0));
        assert!(close(rolled.waste_cores, 1.5));
        assert!(close(rolled.cpu.efficiency.unwrap(), 0.25));
        assert!(close(rolled.hourly_usd, 2.0 * 0.031611));
        assert!(close(rolled.prices[0].pod_hours, 4.0));
    }

    #[test]
    fn the_input_comes_from_the_ticks_deployment_inputs() {
        let d = DeploymentInputs {
            ready_pods: 4,
            pod_cpu_request_milli: 500,
            memory_utilization_percent: Some(50.0),
            ..crate::decision::tests::inputs(60.0, 50.0, 50.0)
        };
        let i = CostInput::from_deployment(&d, GIB as i64, 15_000);
        // 60% of 500m × 4 pods = 1.2 cores; 50% of 1 GiB × 4 = 2 GiB.
        assert!(close(i.cpu_usage_cores.unwrap(), 1.2));
        assert!(close(i.memory_usage_bytes.unwrap(), 2.0 * GIB));
        assert_eq!(i.pods, 4);
        // Without a memory request the memory usage is not derived (percent of nothing).
        let i = CostInput::from_deployment(&d, 0, 15_000);
        assert_eq!(i.memory_usage_bytes, None);
        // A NaN utilization is not a usage.
        let nan = DeploymentInputs {
            cpu_utilization_percent: f64::NAN,
            ..d
        };
        assert_eq!(
            CostInput::from_deployment(&nan, 0, 15_000).cpu_usage_cores,
            None
        );
    }

    #[test]
    fn price_config_round_trips_through_json() {
        let text = r#"{"default":{"cpu_per_core_hour":0.05,"memory_per_gib_hour":0.006},
            "pools":[{"label_key":"pool","label_value":"spot","cpu_per_core_hour":0.01,"memory_per_gib_hour":0.001}]}"#;
        let p: Prices = serde_json::from_str(text).unwrap();
        assert_eq!(p.pools[0].price.cpu_per_core_hour, 0.01);
        let empty: Prices = serde_json::from_str("{}").unwrap();
        assert_eq!(empty.default_price().1, PriceSource::OpencostDefault);
    }

    #[test]
    fn a_snapshot_is_priced_per_deployment_by_its_nodes_and_unknown_usage_is_charged_at_the_request()
     {
        use crate::model::{ServedDeployment, UnknownCause, UsageUnknown};
        let served = |name: &str, nodes: &[(&str, u32)]| {
            let inputs = DeploymentInputs {
                key: DeploymentKey::new("shop", name),
                ready_pods: 2,
                pod_cpu_request_milli: 1000,
                pod_memory_request_bytes: GIB as i64,
                memory_utilization_percent: Some(50.0),
                ready_pods_by_node: nodes.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
                ..crate::decision::tests::inputs(50.0, 50.0, 50.0)
            };
            ServedDeployment {
                raw_percent: 50.0,
                smart_percent: 50.0,
                explanation: crate::decision::decide(
                    &inputs,
                    &Default::default(),
                    None,
                    Default::default(),
                    0,
                )
                .0,
                inputs,
            }
        };
        let mut snapshot = Snapshot {
            interval_millis: HOUR,
            nodes: vec![node("n-spot", "spot"), node("n-std", "standard")],
            ..Default::default()
        };
        for d in [
            served("web", &[("n-spot", 2)]),
            served("api", &[("n-std", 1)]),
        ] {
            snapshot.deployments.insert(d.inputs.key.clone(), d);
        }
        snapshot.unmeasured.insert(
            DeploymentKey::new("shop", "api"),
            UsageUnknown {
                cause: UnknownCause::NoSamples,
                reason: "no sample".into(),
                since: 0,
                last_good_at: None,
            },
        );
        let prices = Prices {
            default: None,
            pools: vec![PoolPrice {
                label_key: "pool".into(),
                label_value: "spot".into(),
                price: Price {
                    cpu_per_core_hour: 0.01,
                    memory_per_gib_hour: 0.001,
                },
            }],
        };
        let r = snapshot_report(&snapshot, &prices);
        let web = r.deployments.iter().find(|d| d.key.name == "web").unwrap();
        // 2 pods on spot for an hour: per pod max(1, 0.5) core × 0.01 + max(1, 0.5) GiB × 0.001.
        assert!(close(web.total_usd, 2.0 * (0.01 + 0.001)), "{web:?}");
        assert!(close(web.cpu.efficiency.unwrap(), 0.5));
        assert!(close(web.waste_cores, 1.0));
        // api: usage unknown this tick, charged at its requests at OpenCost's prices (one pod on an unpooled
        // node, the other with no known node), no waste stated.
        let api = r.deployments.iter().find(|d| d.key.name == "api").unwrap();
        assert_eq!(api.cpu.basis, Basis::RequestOnly);
        assert_eq!(api.cpu.efficiency, None);
        assert!(close(api.total_usd, 2.0 * (0.031611 + 0.004237)), "{api:?}");
        assert!(api.notes[0].contains("usage unknown"), "{:?}", api.notes);
        assert_eq!(api.price_source, PriceSource::OpencostDefault);
        assert!(close(r.cluster.total_usd, web.total_usd + api.total_usd));
        assert_eq!(r.namespaces["shop"].deployments, 2);
    }
}
