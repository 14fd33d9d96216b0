//! Cost and right-sizing, wired into the engine: the price flags, and the [`CostBook`] the engine hands every
//! published snapshot to (in `serve` and `demo` alike). The book prices the tick with the pure
//! [`cost::snapshot_report`], keeps the latest report for `GET /api/v1/cost` and the cost gauges of `/metrics`,
//! rolls the ticks of each hour into one record per deployment for the store's `cost` tree, and feeds one
//! decaying usage histogram per deployment ([`ContainerHistory`]) that `GET /api/v1/recommendations` reads.
//!
//! The arithmetic is all in the domain crate (`crates/domain/src/cost.rs`, `crates/domain/src/rightsizing.rs`,
//! `docs/cost.md`); this module only keeps state between ticks and does the IO, never on the tick's path: store
//! writes go through a bounded channel to a task, and histories are rebuilt from the store by a task of their
//! own. Usage is known per deployment, not per container, so a deployment's pods count as one container named
//! [`POD_CONTAINER`] whose requests are the pod's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::domain::cost::{self, CostReport, DeploymentCost, PoolPrice, Price, Prices};
use crate::domain::model::{DeploymentInputs, DeploymentKey, Snapshot, UnixMillis};
use crate::domain::rightsizing::{
    self, ContainerHistory, ContainerRecommendation, PlanInput, PodPlan, Scaling,
};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// The one "container" a deployment's history is kept for: usage is measured per deployment (over its pods),
/// so the recommendation is for the pod's total request.
pub const POD_CONTAINER: &str = "pod";

/// Least time between two histogram samples of one deployment: VPA's confidence counts one sample a minute.
pub const SAMPLE_EVERY_MILLIS: i64 = 60_000;

/// The open hour's cost records are written to the store at least this often (and when the hour turns).
pub const WRITE_EVERY_MILLIS: i64 = 5 * 60_000;

/// How far back a history is rebuilt from the store at start (the store keeps 30 days of rollups by default).
pub const REBUILD_MILLIS: i64 = 35 * 86_400_000;

/// Demand samples (one a minute) averaged for the plan's "recent demand": an hour.
pub const DEMAND_SAMPLES: usize = 60;

const HOUR_MILLIS: i64 = 3_600_000;

/// Price flags of `serve` and `demo`. Without any, every node is priced at OpenCost's defaults
/// (0.031611 $/vCPU-hour, 0.004237 $/GiB-hour); see docs/cost.md.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CostArgs {
    /// Price of one vCPU-hour in dollars for nodes no --node-pool-price matches (default: OpenCost's 0.031611).
    #[arg(long, env = "SMART_AUTOSCALER_CPU_PRICE", value_parser = parse_price)]
    pub cpu_price: Option<f64>,

    /// Price of one GiB-hour of memory in dollars for nodes no --node-pool-price matches (default: OpenCost's
    /// 0.004237).
    #[arg(long, env = "SMART_AUTOSCALER_MEMORY_PRICE", value_parser = parse_price)]
    pub memory_price: Option<f64>,

    /// Price of the nodes carrying a label, as `LABEL=VALUE:CPU:MEMORY` (dollars per vCPU-hour and per
    /// GiB-hour), e.g. `cloud.google.com/gke-nodepool=spot:0.01:0.001`; repeat the flag (or separate with
    /// commas in the environment variable) for more pools. The first match wins; other nodes, and nodes without
    /// the label, get the default price.
    #[arg(long, env = "SMART_AUTOSCALER_NODE_POOL_PRICES", value_delimiter = ',', value_parser = parse_pool_price)]
    pub node_pool_price: Vec<PoolPrice>,
}

impl CostArgs {
    /// The price configuration: the default from the two price flags (a missing one is OpenCost's), and the
    /// pools in order.
    pub fn prices(&self) -> Prices {
        let default = (self.cpu_price.is_some() || self.memory_price.is_some()).then(|| Price {
            cpu_per_core_hour: self.cpu_price.unwrap_or(cost::OPENCOST_CPU_PER_CORE_HOUR),
            memory_per_gib_hour: self
                .memory_price
                .unwrap_or(cost::OPENCOST_MEMORY_PER_GIB_HOUR),
        });
        Prices {
            default,
            pools: self.node_pool_price.clone(),
        }
    }
}

/// A price in dollars: finite and not negative.
pub fn parse_price(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !(v.is_finite() && v >= 0.0) {
        return Err(format!("{text:?} is not a finite, non-negative price"));
    }
    Ok(v)
}

/// `LABEL=VALUE:CPU:MEMORY` (label keys and values contain no `:` or `=`).
pub fn parse_pool_price(text: &str) -> Result<PoolPrice, String> {
    let bad = |why: &str| {
        format!(
            "{text:?}: {why}; use LABEL=VALUE:CPU:MEMORY, e.g. cloud.google.com/gke-nodepool=spot:0.01:0.001"
        )
    };
    let (label, prices) = text
        .trim()
        .split_once(':')
        .ok_or_else(|| bad("no prices"))?;
    let (key, value) = label.split_once('=').ok_or_else(|| bad("no LABEL=VALUE"))?;
    let (cpu, memory) = prices
        .split_once(':')
        .ok_or_else(|| bad("no memory price"))?;
    if key.is_empty() {
        return Err(bad("empty label key"));
    }
    Ok(PoolPrice {
        label_key: key.to_string(),
        label_value: value.to_string(),
        price: Price {
            cpu_per_core_hour: parse_price(cpu).map_err(|e| bad(&e))?,
            memory_per_gib_hour: parse_price(memory).map_err(|e| bad(&e))?,
        },
    })
}

/// The latest tick's costs, as `GET /api/v1/cost` serves them.
#[derive(Debug, Clone, Serialize)]
pub struct CostView {
    /// When the snapshot behind it was collected.
    pub collected_at_ms: UnixMillis,
    /// The tick it prices, milliseconds.
    pub interval_ms: i64,
    /// Per deployment, per namespace, cluster.
    pub report: CostReport,
}

/// Per-deployment labels of the cost gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct DeploymentLabels {
    /// Namespace.
    pub namespace: String,
    /// Deployment.
    pub deployment: String,
}

/// Per-namespace labels of the cost gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct NamespaceLabels {
    /// Namespace.
    pub namespace: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The cost gauges: per deployment (`$`/hour, wasted `$`/hour), per namespace and for the cluster. One series
/// per managed deployment and namespace; a deployment or namespace no longer priced loses its series.
#[derive(Debug, Clone, Default)]
pub struct CostMetrics {
    deployment_hourly: Family<DeploymentLabels, FloatGauge>,
    deployment_waste: Family<DeploymentLabels, FloatGauge>,
    namespace_hourly: Family<NamespaceLabels, FloatGauge>,
    namespace_waste: Family<NamespaceLabels, FloatGauge>,
    cluster_hourly: FloatGauge,
    cluster_waste: FloatGauge,
    cluster_projected: FloatGauge,
}

impl CostMetrics {
    /// Registers the gauges in `telemetry`.
    pub fn new(telemetry: &Telemetry) -> CostMetrics {
        let m = CostMetrics::default();
        telemetry.register(
            "cost_deployment_dollars_per_hour",
            "What a deployment's pods cost at the latest tick's rate, dollars per hour (max of request and usage)",
            m.deployment_hourly.clone(),
        );
        telemetry.register(
            "cost_deployment_waste_dollars_per_hour",
            "What a deployment's pods request and do not use, at the latest tick's rate, dollars per hour",
            m.deployment_waste.clone(),
        );
        telemetry.register(
            "cost_namespace_dollars_per_hour",
            "Cost of a namespace's managed deployments, dollars per hour",
            m.namespace_hourly.clone(),
        );
        telemetry.register(
            "cost_namespace_waste_dollars_per_hour",
            "Waste of a namespace's managed deployments, dollars per hour",
            m.namespace_waste.clone(),
        );
        telemetry.register(
            "cost_cluster_dollars_per_hour",
            "Cost of all managed deployments, dollars per hour",
            m.cluster_hourly.clone(),
        );
        telemetry.register(
            "cost_cluster_waste_dollars_per_hour",
            "Waste of all managed deployments, dollars per hour",
            m.cluster_waste.clone(),
        );
        telemetry.register(
            "cost_cluster_projected_30d_dollars",
            "Cost of all managed deployments over 30 days at the latest tick's rate, dollars",
            m.cluster_projected.clone(),
        );
        m
    }

    fn observe(&self, report: &CostReport) {
        // Waste in dollars per hour: the tick's waste over the tick's length, the way the hourly rate is.
        let waste_rate = |waste: f64, total: f64, hourly: f64| {
            if total > 0.0 {
                waste / total * hourly
            } else {
                0.0
            }
        };
        self.deployment_hourly.clear();
        self.deployment_waste.clear();
        for d in &report.deployments {
            let labels = DeploymentLabels {
                namespace: d.key.namespace.clone(),
                deployment: d.key.name.clone(),
            };
            self.deployment_hourly
                .get_or_create(&labels)
                .set(d.hourly_usd);
            self.deployment_waste.get_or_create(&labels).set(waste_rate(
                d.waste_usd,
                d.total_usd,
                d.hourly_usd,
            ));
        }
        self.namespace_hourly.clear();
        self.namespace_waste.clear();
        for (namespace, t) in &report.namespaces {
            let labels = NamespaceLabels {
                namespace: namespace.clone(),
            };
            self.namespace_hourly
                .get_or_create(&labels)
                .set(t.hourly_usd);
            self.namespace_waste.get_or_create(&labels).set(waste_rate(
                t.waste_usd,
                t.total_usd,
                t.hourly_usd,
            ));
        }
        let c = &report.cluster;
        self.cluster_hourly.set(c.hourly_usd);
        self.cluster_waste
            .set(waste_rate(c.waste_usd, c.total_usd, c.hourly_usd));
        self.cluster_projected.set(c.projected_30d_usd);
    }
}

/// What the plan needs of a deployment, from its latest tick.
#[derive(Debug, Clone)]
struct LastSeen {
    cpu_request_milli: i64,
    memory_request_bytes: i64,
    replicas: u32,
    target_percent: f64,
    max_replicas: Option<u32>,
    price: Price,
}

/// A deployment's usage history, or that it is being rebuilt from the store.
#[derive(Debug, Clone)]
enum History {
    /// A task is reading the store; live samples wait (they would come before the stored ones).
    Loading,
    /// The history, fed once a minute.
    Ready(Box<ContainerHistory>),
}

#[derive(Debug, Clone)]
struct Sizing {
    history: History,
    /// The store's import count for the deployment when its history was last read: a bootstrap that lands later
    /// (it runs in the background from the same first tick) makes it read again.
    imports_read: u64,
    /// A re-read is under way (the history in hand keeps being fed meanwhile).
    rereading: bool,
    last_sample_at: Option<UnixMillis>,
    /// Deployment demand (cores), one a minute, the last [`DEMAND_SAMPLES`].
    demand: VecDeque<f64>,
    last: LastSeen,
}

#[derive(Debug, Default)]
struct State {
    latest: Option<Arc<CostView>>,
    /// The open hour of each deployment: its start and the ticks so far, merged.
    hours: HashMap<DeploymentKey, (UnixMillis, DeploymentCost)>,
    last_write: Option<UnixMillis>,
    sizing: BTreeMap<DeploymentKey, Sizing>,
}

/// Cost and right-sizing state between ticks; cheap to share (`Arc`). See the module docs.
#[derive(Debug)]
pub struct CostBook {
    prices: Prices,
    metrics: Option<CostMetrics>,
    state: Mutex<State>,
    writes: Option<mpsc::Sender<Vec<(UnixMillis, DeploymentCost)>>>,
    store: Option<Store>,
}

/// Batches of hourly records waiting for the store (more are dropped, with a warning: the rollups are a report).
const WRITE_QUEUE: usize = 64;

impl CostBook {
    /// A book pricing at `prices`, with no store and no metrics (tests, tools).
    pub fn new(prices: Prices) -> CostBook {
        CostBook {
            prices,
            metrics: None,
            state: Mutex::new(State::default()),
            writes: None,
            store: None,
        }
    }

    /// Registers the cost gauges in `telemetry` and keeps them current.
    pub fn with_metrics(mut self, telemetry: &Telemetry) -> CostBook {
        self.metrics = Some(CostMetrics::new(telemetry));
        self
    }

    /// Writes the hourly rollups to `store` (from a task spawned here: call within a tokio runtime) and rebuilds
    /// each deployment's usage history from the store's samples and rollups when it is first seen.
    pub fn with_store(mut self, store: Store) -> CostBook {
        let (tx, mut rx) = mpsc::channel::<Vec<(UnixMillis, DeploymentCost)>>(WRITE_QUEUE);
        let writer = store.clone();
        tokio::spawn(async move {
            // The first hour this process writes for a deployment may already hold the ticks of a process
            // before a restart: that record is read once and kept as the base the new ticks are added to.
            let mut bases: HashMap<DeploymentKey, (UnixMillis, Option<DeploymentCost>)> =
                HashMap::new();
            while let Some(batch) = rx.recv().await {
                for (hour, cost) in batch {
                    if !bases.contains_key(&cost.key) {
                        let stored = writer
                            .cost_hours(&cost.key, hour, hour + 1)
                            .await
                            .ok()
                            .and_then(|mut v| v.pop())
                            .map(|(_, c)| c);
                        bases.insert(cost.key.clone(), (hour, stored));
                    }
                    let cost = match bases.get(&cost.key) {
                        Some((h, Some(base))) if *h == hour => {
                            let mut merged = base.clone();
                            merged.merge_later(&cost);
                            merged
                        }
                        _ => cost,
                    };
                    if let Err(e) = writer.put_cost_hour(hour, &cost).await {
                        tracing::warn!(error = %e, deployment = %cost.key, "store: writing the hourly cost failed");
                    }
                }
            }
        });
        self.writes = Some(tx);
        self.store = Some(store);
        self
    }

    /// The prices in use.
    pub fn prices(&self) -> &Prices {
        &self.prices
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest tick's costs (`None` before the first tick).
    pub fn latest(&self) -> Option<Arc<CostView>> {
        self.lock().latest.clone()
    }

    /// The costs of the last `hours` clock hours (the current one included, so far) of the deployments of the
    /// latest tick (of `namespace`, when given): the store's hourly records before the current hour, and the
    /// current hour as this process has rolled it so far, merged per deployment, with the totals. `None`: no
    /// store, or no tick yet.
    pub async fn history(
        &self,
        hours: i64,
        namespace: Option<&str>,
    ) -> Result<Option<CostReport>, crate::store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let (latest, open) = {
            let state = self.lock();
            let Some(latest) = state.latest.clone() else {
                return Ok(None);
            };
            let open: HashMap<DeploymentKey, (UnixMillis, DeploymentCost)> = state.hours.clone();
            (latest, open)
        };
        let now = latest.collected_at_ms;
        let current = now - now.rem_euclid(HOUR_MILLIS);
        let from = current - (hours - 1).max(0) * HOUR_MILLIS;
        let mut costs = Vec::new();
        for d in &latest.report.deployments {
            if namespace.is_some_and(|n| n != d.key.namespace) {
                continue;
            }
            let mut merged: Option<DeploymentCost> = None;
            let stored = store.cost_hours(&d.key, from, current).await?;
            let live = open
                .get(&d.key)
                .filter(|(h, _)| *h >= from)
                .map(|(_, c)| c.clone());
            for c in stored.into_iter().map(|(_, c)| c).chain(live) {
                match &mut merged {
                    Some(m) => m.merge_later(&c),
                    None => merged = Some(c),
                }
            }
            costs.extend(merged);
        }
        Ok(Some(cost::report(costs)))
    }

    /// After each publish: prices the tick, updates the gauges, rolls the hour, feeds the histograms. No IO
    /// here: writes are queued, history rebuilds spawned.
    pub fn observe(self: &Arc<Self>, snapshot: &Snapshot) {
        let report = cost::snapshot_report(snapshot, &self.prices);
        if let Some(m) = &self.metrics {
            m.observe(&report);
        }
        let now = snapshot.collected_at;
        let hour = now - now.rem_euclid(HOUR_MILLIS);
        let mut writes = Vec::new();
        let mut rebuild = Vec::new();
        {
            let mut state = self.lock();
            // The hour rollups: a deployment's turned hour is written and a new one starts.
            for d in &report.deployments {
                match state.hours.get_mut(&d.key) {
                    Some((h, acc)) if *h == hour => acc.merge_later(d),
                    Some((h, acc)) => {
                        writes.push((*h, acc.clone()));
                        *h = hour;
                        *acc = d.clone();
                    }
                    None => {
                        state.hours.insert(d.key.clone(), (hour, d.clone()));
                    }
                }
            }
            let priced: std::collections::HashSet<&DeploymentKey> =
                report.deployments.iter().map(|d| &d.key).collect();
            let gone: Vec<DeploymentKey> = state
                .hours
                .keys()
                .filter(|k| !priced.contains(k))
                .cloned()
                .collect();
            for k in gone {
                if let Some((h, acc)) = state.hours.remove(&k) {
                    writes.push((h, acc));
                }
            }
            if state
                .last_write
                .is_none_or(|t| now - t >= WRITE_EVERY_MILLIS)
            {
                state.last_write = Some(now);
                writes.extend(state.hours.values().map(|(h, acc)| (*h, acc.clone())));
            }

            // The histograms.
            for d in &report.deployments {
                let Some(served) = snapshot.deployments.get(&d.key) else {
                    continue;
                };
                let inputs = &served.inputs;
                let price = d
                    .prices
                    .iter()
                    .max_by(|a, b| a.pod_hours.total_cmp(&b.pod_hours))
                    .map_or_else(|| self.prices.default_price().0, |p| p.price);
                let last = LastSeen {
                    cpu_request_milli: inputs.pod_cpu_request_milli,
                    memory_request_bytes: inputs.pod_memory_request_bytes,
                    replicas: inputs.replicas,
                    target_percent: inputs.base_target_percent,
                    max_replicas: inputs.max_replicas,
                    price,
                };
                let measured = !snapshot.unmeasured.contains_key(&d.key);
                let imports = self.store.as_ref().map_or(0, |st| st.imports(&d.key));
                match state.sizing.get_mut(&d.key) {
                    Some(s) => {
                        s.last = last;
                        if measured {
                            feed(s, inputs);
                        }
                        if imports > s.imports_read
                            && !s.rereading
                            && matches!(s.history, History::Ready(_))
                        {
                            s.rereading = true;
                            s.imports_read = imports;
                            rebuild.push((d.key.clone(), inputs.clone()));
                        }
                    }
                    None => {
                        let mut s = Sizing {
                            history: History::Ready(Box::new(ContainerHistory::new(POD_CONTAINER))),
                            imports_read: imports,
                            rereading: false,
                            last_sample_at: None,
                            demand: VecDeque::new(),
                            last,
                        };
                        if self.store.is_some() {
                            s.history = History::Loading;
                            rebuild.push((d.key.clone(), inputs.clone()));
                        } else if measured {
                            feed(&mut s, inputs);
                        }
                        state.sizing.insert(d.key.clone(), s);
                    }
                }
            }
            state.sizing.retain(|k, _| priced.contains(k));
            state.latest = Some(Arc::new(CostView {
                collected_at_ms: now,
                interval_ms: snapshot.interval_millis,
                report,
            }));
        }
        if !writes.is_empty()
            && let Some(tx) = &self.writes
            && tx.try_send(writes).is_err()
        {
            tracing::warn!("store: the hourly cost writes are behind; this batch is dropped");
        }
        if let Some(store) = &self.store {
            for (key, inputs) in rebuild {
                let (book, store) = (self.clone(), store.clone());
                tokio::spawn(async move {
                    let history = rebuild_history(&store, &key, &inputs, now).await;
                    book.rebuilt(&key, history);
                });
            }
        }
    }

    /// Installs a history rebuilt from the store (if the deployment is still there and waiting for it). A re-read
    /// replaces the history it was started beside: the store holds that one's live samples too, up to the read,
    /// and the minute or so fed since is given up for the week the bootstrap brought.
    fn rebuilt(&self, key: &DeploymentKey, history: ContainerHistory) {
        let mut state = self.lock();
        if let Some(s) = state.sizing.get_mut(key)
            && (s.rereading || matches!(s.history, History::Loading))
        {
            s.history = History::Ready(Box::new(history));
            s.rereading = false;
        }
    }

    /// Every deployment's recommendation (of the namespace, when given), sorted by key.
    pub fn recommendations(&self, namespace: Option<&str>) -> Vec<Recommendation> {
        let state = self.lock();
        state
            .sizing
            .iter()
            .filter(|(k, _)| namespace.is_none_or(|n| n == k.namespace))
            .map(|(k, s)| recommend(k, s))
            .collect()
    }
}

/// Adds the tick's usage to the deployment's history and demand, at most once a minute.
fn feed(s: &mut Sizing, inputs: &DeploymentInputs) {
    let at = inputs.observed_at;
    if s.last_sample_at
        .is_some_and(|t| at - t < SAMPLE_EVERY_MILLIS)
    {
        return;
    }
    let History::Ready(history) = &mut s.history else {
        return;
    };
    let request = inputs.pod_cpu_request_milli.max(0) as f64 / 1000.0;
    let per_pod = inputs.cpu_utilization_percent / 100.0 * request;
    if request > 0.0 && history.add_cpu(at, per_pod, request) {
        s.last_sample_at = Some(at);
        let demand = per_pod * f64::from(inputs.ready_pods);
        if demand.is_finite() {
            s.demand.push_back(demand);
            if s.demand.len() > DEMAND_SAMPLES {
                s.demand.pop_front();
            }
        }
    }
    if let Some(m) = inputs.memory_utilization_percent
        && inputs.pod_memory_request_bytes > 0
    {
        history.add_memory(at, m / 100.0 * inputs.pod_memory_request_bytes as f64);
    }
}

/// A deployment's history from the store: its five-minute rollups (CPU mean, memory peak) and its samples
/// before `until`, one point a minute at most, converted to cores and bytes with the deployment's current
/// requests (the store keeps utilization, not the requests it was measured against). A store that cannot be
/// read gives an empty history (logged): the live ticks fill it.
async fn rebuild_history(
    store: &Store,
    key: &DeploymentKey,
    inputs: &DeploymentInputs,
    until: UnixMillis,
) -> ContainerHistory {
    let mut history = ContainerHistory::new(POD_CONTAINER);
    let from = until.saturating_sub(REBUILD_MILLIS);
    let rollups = store.rollups(key, from, until).await;
    let samples = store.samples(key, from, until).await;
    let (rollups, samples) = match (rollups, samples) {
        (Ok(r), Ok(s)) => (r, s),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, deployment = %key, "store: usage history unreadable; right-sizing starts empty");
            return history;
        }
    };
    let mut points: Vec<(UnixMillis, f64, Option<f64>)> = rollups
        .iter()
        .map(|r| (r.start, r.cpu_mean, r.memory_max))
        .chain(
            samples
                .iter()
                .map(|s| (s.at, s.cpu_percent, s.memory_percent)),
        )
        .collect();
    points.sort_by_key(|p| p.0);
    let request = inputs.pod_cpu_request_milli.max(0) as f64 / 1000.0;
    let memory = inputs.pod_memory_request_bytes;
    let mut last: Option<UnixMillis> = None;
    for (at, cpu, mem) in points {
        if last.is_some_and(|t| at - t < SAMPLE_EVERY_MILLIS) {
            continue;
        }
        if request > 0.0 && history.add_cpu(at, cpu / 100.0 * request, request) {
            last = Some(at);
        }
        if let Some(m) = mem
            && memory > 0
        {
            history.add_memory(at, m / 100.0 * memory as f64);
        }
    }
    history
}

/// One deployment's right-sizing, as `GET /api/v1/recommendations` serves it.
#[derive(Debug, Clone, Serialize)]
pub struct Recommendation {
    /// Namespace.
    pub namespace: String,
    /// Deployment.
    pub name: String,
    /// `change`, `keep`, `not_enough_data` or `invalid` (the plan's).
    pub status: &'static str,
    /// The pod's recommended requests (VPA-style bounds), or why there is none.
    pub requests: Option<ContainerRecommendation>,
    /// The HPA-aware plan: request and target together, projected replicas and monthly cost.
    pub plan: PodPlan,
    /// How the replica count was modelled.
    pub scaling: Scaling,
    /// Mean demand of the last hour, cores (what the plan projects at).
    pub demand_cores: Option<f64>,
    /// Assumptions behind the numbers, in words.
    pub assumptions: Vec<String>,
}

fn recommend(key: &DeploymentKey, s: &Sizing) -> Recommendation {
    let mut assumptions = vec![
        "usage is measured per deployment: the recommendation is for the pod's total request"
            .to_string(),
    ];
    let scaling = match s.last.max_replicas {
        Some(max) => {
            assumptions.push(
                "minReplicas is not observed: assumed 1 (a higher one only lowers the savings' floor)"
                    .to_string(),
            );
            Scaling::CpuHpa {
                target: s.last.target_percent / 100.0,
                min_replicas: 1,
                max_replicas: max,
            }
        }
        None => Scaling::Fixed {
            replicas: s.last.replicas,
        },
    };
    let demand =
        (!s.demand.is_empty()).then(|| s.demand.iter().sum::<f64>() / s.demand.len() as f64);
    let (requests, plan) = match (&s.history, demand) {
        (History::Loading, _) => (
            None,
            PodPlan::NotEnoughData {
                reason: "the usage history is being read from the store".to_string(),
            },
        ),
        (History::Ready(h), demand) => {
            let rec = h.recommend(1);
            let plan = match (&rec, demand) {
                (ContainerRecommendation::Ready(_), None) => PodPlan::NotEnoughData {
                    reason: "no demand measured since start yet (one sample a minute)".to_string(),
                },
                (_, demand) => rightsizing::plan(
                    &PlanInput {
                        cpu_request_cores: s.last.cpu_request_milli.max(0) as f64 / 1000.0,
                        memory_request_bytes: s.last.memory_request_bytes.max(0) as f64,
                        demand_cores: demand.unwrap_or(0.0),
                        scaling,
                        price: s.last.price,
                    },
                    std::slice::from_ref(&rec),
                ),
            };
            (Some(rec), plan)
        }
    };
    if s.last.memory_request_bytes <= 0 {
        assumptions.push("no memory request: memory is not planned".to_string());
    }
    Recommendation {
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        status: match plan {
            PodPlan::Change { .. } => "change",
            PodPlan::Keep { .. } => "keep",
            PodPlan::NotEnoughData { .. } => "not_enough_data",
            PodPlan::Invalid { .. } => "invalid",
        },
        requests,
        plan,
        scaling,
        demand_cores: demand,
        assumptions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_come_from_the_flags_with_opencost_for_what_is_missing() {
        assert_eq!(
            CostArgs::default().prices().default_price().1,
            cost::PriceSource::OpencostDefault
        );
        let args = CostArgs {
            cpu_price: Some(0.05),
            memory_price: None,
            node_pool_price: vec![
                parse_pool_price("cloud.google.com/gke-nodepool=spot:0.01:0.001").unwrap(),
            ],
        };
        let prices = args.prices();
        let (default, source) = prices.default_price();
        assert_eq!(source, cost::PriceSource::ConfiguredDefault);
        assert_eq!(default.cpu_per_core_hour, 0.05);
        assert_eq!(
            default.memory_per_gib_hour,
            cost::OPENCOST_MEMORY_PER_GIB_HOUR
        );
        assert_eq!(prices.pools[0].label_key, "cloud.google.com/gke-nodepool");
        assert_eq!(prices.pools[0].label_value, "spot");
        assert_eq!(prices.pools[0].price.memory_per_gib_hour, 0.001);
        assert!(prices.problems().is_empty());
    }

    #[test]
    fn bad_prices_are_refused_with_the_reason() {
        for bad in ["-1", "NaN", "inf", "cheap", ""] {
            assert!(parse_price(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_price(" 0 "), Ok(0.0));
        for (bad, why) in [
            ("pool=spot", "no prices"),
            ("spot:0.01:0.001", "no LABEL=VALUE"),
            ("pool=spot:0.01", "no memory price"),
            ("=spot:0.01:0.001", "empty label key"),
            ("pool=spot:0.01:-3", "not a finite"),
            ("pool=spot:x:0.001", "not a number"),
        ] {
            let e = parse_pool_price(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // A node label without a value is a pool too.
        assert_eq!(parse_pool_price("spot=:0:0").unwrap().label_value, "");
    }
}
