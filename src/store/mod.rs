//! The persistent store (sled 0.34): per-deployment samples at tick granularity, five-minute rollups, and the
//! forecasts (predictions) and decisions derived from them.
//!
//! Samples are kept for `Retention::samples` (48 h by default), then rolled up into five-minute aggregates (mean,
//! max and p95 of CPU, mean and max of memory, max replicas) kept for `Retention::rollups` (30 days). Whole hours
//! are rolled up once all of their samples are past the sample retention, so samples live up to one hour longer
//! than configured. Predictions and decisions are kept as long as rollups. Anomalies (one record per
//! deployment, kind and start, see [`anomalies`]) are kept `Retention::anomalies` after they last held (30 days).
//! Hourly cost rollups (one record per deployment-hour, see [`cost`]) are kept as long as rollups.
//!
//! sled pays a large per-entry overhead (well over 100 bytes on disk for a 23-byte entry written tick by tick),
//! so records are big: samples are stored as one block per deployment-hour, rollups as one record of twelve
//! five-minute slots per deployment-hour. The hour being written lives in memory and in a journal tree that
//! takes one record per tick for all deployments (a single sequential insert, which keeps ticks fast); when the
//! hour turns it is written out as blocks and its journal records are dropped. On open the journal is replayed,
//! so a restart resumes where the last tick left off.
//!
//! Values use the hand-written, versioned, fixed-width encoding of [`codec`]; keys are deployment id plus
//! big-endian time (the hour, for blocks and rollups), so every per-deployment range read is one ordered scan.
//! Deployment ids are small integers assigned on first sight and kept in their own tree. All sled calls run on
//! tokio's blocking pool.
//!
//! A compaction ([`Store::compact`]) copies the live data into `<store>.compacting`, marks the copy complete
//! ([`COMPACTION_COMPLETE`]), then renames `<store>` to `<store>.old` and the copy to `<store>`. A crash at any
//! point of that is repaired when the store next opens: the swap is finished or rolled back from what is on
//! disk, never losing data, and logged and counted ([`Recovery`]). The store's figures (size, records by tree,
//! compactions, last flush, recoveries) go to `/metrics` through [`Store::register_metrics`].

pub mod anomalies;
pub mod codec;
pub mod cost;
mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};
use crate::domain::model::{DeploymentKey, Observation, UnixMillis};

pub use anomalies::{AnomalyHistory, AnomalyQuery, AnomalyRecorder, AnomalyWriter};
use codec::{BUCKET_MILLIS, HOUR_MILLIS, Record, RollupHour, SampleValue};
pub use codec::{Prediction, Rollup, Sample};
use metrics::StoreMetrics;
pub use metrics::{RECORD_COUNT_INTERVAL, RecoveryLabels, TreeLabels};

/// How long data is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Samples at tick granularity.
    pub samples: Duration,
    /// Five-minute rollups and derived records.
    pub rollups: Duration,
    /// Anomalies, counted from when they last held.
    pub anomalies: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            samples: Duration::from_secs(48 * 3600),
            rollups: Duration::from_secs(30 * 24 * 3600),
            anomalies: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

impl Retention {
    fn samples_millis(&self) -> i64 {
        self.samples.as_millis().min(i64::MAX as u128) as i64
    }
    fn rollups_millis(&self) -> i64 {
        self.rollups.as_millis().min(i64::MAX as u128) as i64
    }
    fn anomalies_millis(&self) -> i64 {
        self.anomalies.as_millis().min(i64::MAX as u128) as i64
    }
}

/// Store flags of `serve` (the store lives in `<data-dir>/store`).
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// How long samples at tick granularity are kept before they are rolled up to five-minute aggregates,
    /// e.g. `48h`.
    #[arg(long, env = "SMART_AUTOSCALER_STORE_SAMPLE_RETENTION", default_value = "48h", value_parser = crate::flags::parse_duration)]
    pub store_sample_retention: Duration,

    /// How long five-minute aggregates, predictions and decisions are kept, e.g. `30d`.
    #[arg(long, env = "SMART_AUTOSCALER_STORE_ROLLUP_RETENTION", default_value = "30d", value_parser = crate::flags::parse_duration)]
    pub store_rollup_retention: Duration,

    /// How long an anomaly is kept after it last held (ended, or was last seen), e.g. `30d`. The anomaly history
    /// behind `/api/v1/anomalies` can be rebuilt: a lost or corrupt record is dropped, and what is still active
    /// comes back from the next ticks.
    #[arg(long, env = "SMART_AUTOSCALER_STORE_ANOMALY_RETENTION", default_value = "30d", value_parser = crate::flags::parse_duration)]
    pub store_anomaly_retention: Duration,

    /// Page cache of the store, in MiB (sled's `cache_capacity`). sled counts pages at their size on disk and
    /// holds them decoded, which takes about twice that in memory; what is not cached is read back from the
    /// operating system's file cache.
    #[arg(long, env = "SMART_AUTOSCALER_STORE_CACHE_MIB", default_value_t = DEFAULT_CACHE_MIB)]
    pub store_cache_mib: u64,
}

/// Default of `--store-cache-mib`.
/// (Measured with `hack/bench-rss.sh`, 2,000 deployments with a month of history: 16 MiB of cache cost ~22 MiB more
/// resident memory than 4; the forecasting refits read each deployment's month once per refit, which no cache
/// of this size holds anyway.)
pub const DEFAULT_CACHE_MIB: u64 = 4;

/// How a store is opened: its retention and its page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// How long records are kept.
    pub retention: Retention,
    /// sled's page cache, bytes.
    pub cache_bytes: u64,
}

impl From<Retention> for StoreConfig {
    /// The retention with the default page cache.
    fn from(retention: Retention) -> Self {
        StoreConfig {
            retention,
            cache_bytes: DEFAULT_CACHE_MIB * 1024 * 1024,
        }
    }
}

/// A `serve` store flag that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreSettingsError {
    /// Samples kept less than an hour: an hour is rolled up only once all of its samples are past retention.
    #[error("invalid --store-sample-retention: {0:?} is below 1h")]
    SampleRetention(Duration),
    /// Rollups would expire before the samples they are made from.
    #[error(
        "invalid --store-rollup-retention: {rollups:?} is below --store-sample-retention {samples:?}; rollups \
         must outlive the samples they are made from"
    )]
    RollupRetention {
        /// `--store-rollup-retention`.
        rollups: Duration,
        /// `--store-sample-retention`.
        samples: Duration,
    },
    /// Anomalies kept less than an hour: an anomaly would be gone from the history while people still look.
    #[error("invalid --store-anomaly-retention: {0:?} is below 1h")]
    AnomalyRetention(Duration),
    /// `--store-cache-mib` out of range.
    #[error("invalid --store-cache-mib: {0} is not between 1 and 65536")]
    CacheMib(u64),
}

impl TryFrom<&StoreArgs> for StoreConfig {
    type Error = StoreSettingsError;

    /// The store the flags describe, once the retentions and the cache size are usable.
    fn try_from(args: &StoreArgs) -> Result<Self, Self::Error> {
        if args.store_sample_retention < Duration::from_secs(3600) {
            return Err(StoreSettingsError::SampleRetention(
                args.store_sample_retention,
            ));
        }
        if args.store_rollup_retention < args.store_sample_retention {
            return Err(StoreSettingsError::RollupRetention {
                rollups: args.store_rollup_retention,
                samples: args.store_sample_retention,
            });
        }
        if args.store_anomaly_retention < Duration::from_secs(3600) {
            return Err(StoreSettingsError::AnomalyRetention(
                args.store_anomaly_retention,
            ));
        }
        if !(1..=65_536).contains(&args.store_cache_mib) {
            return Err(StoreSettingsError::CacheMib(args.store_cache_mib));
        }
        Ok(StoreConfig {
            retention: Retention {
                samples: args.store_sample_retention,
                rollups: args.store_rollup_retention,
                anomalies: args.store_anomaly_retention,
            },
            cache_bytes: args.store_cache_mib * 1024 * 1024,
        })
    }
}

/// Why the store failed. Every variant names the store's path.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the store at {path}: {reason}")]
    Open {
        /// Store directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Written by a newer build.
    #[error(
        "the store at {path} has format version {found}; this build reads version {supported} (remove the directory or run a newer build)"
    )]
    Version {
        /// Store directory.
        path: PathBuf,
        /// Version on disk.
        found: u8,
        /// Version this build reads.
        supported: u8,
    },
    /// A sled operation failed.
    #[error("store at {path}: {source}")]
    Sled {
        /// Store directory.
        path: PathBuf,
        /// The error.
        source: sled::Error,
    },
    /// A record could not be decoded.
    #[error("store at {path}: corrupt record in tree {tree}: {detail}")]
    Corrupt {
        /// Store directory.
        path: PathBuf,
        /// Which tree.
        tree: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The database is closed: a compaction failed and could not reopen it.
    #[error("store at {path} is unavailable: {reason}")]
    Unavailable {
        /// The store's directory.
        path: PathBuf,
        /// Why (a compaction that failed and could not reopen the database).
        reason: String,
    },
    /// A blocking task of the store panicked or was cancelled.
    #[error("store at {path}: background task failed: {message}")]
    Task {
        /// Store directory.
        path: PathBuf,
        /// What happened.
        message: String,
    },
}

/// The trees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Samples,
    Rollups,
    Predictions,
    Decisions,
    Anomalies,
    Cost,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Samples,
        Kind::Rollups,
        Kind::Predictions,
        Kind::Decisions,
        Kind::Anomalies,
        Kind::Cost,
    ];
    fn name(self) -> &'static str {
        match self {
            Kind::Samples => "samples",
            Kind::Rollups => "rollups",
            Kind::Predictions => "predictions",
            Kind::Decisions => "decisions",
            Kind::Anomalies => "anomalies",
            Kind::Cost => "cost",
        }
    }
}

/// What one retention pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Samples rolled up (and removed).
    pub samples_rolled_up: usize,
    /// Rollup records (deployment-hours) written.
    pub rollup_hours_written: usize,
    /// Records removed for age, rollups and derived trees.
    pub expired: usize,
    /// Anomaly records removed: past their retention, or undecodable.
    pub anomalies_expired: usize,
}

struct Inner {
    db: sled::Db,
    path: PathBuf,
    retention: Retention,
    trees: Vec<sled::Tree>,
    deployments: sled::Tree,
    journal: sled::Tree,
    ids: Mutex<Ids>,
    open: Mutex<OpenHour>,
}

/// The samples of the hour being written: in memory, and in the journal (one record per tick) until the hour is
/// closed into one block per deployment.
#[derive(Default)]
struct OpenHour {
    hour: Option<UnixMillis>,
    rows: HashMap<u32, HourRows>,
}

impl OpenHour {
    /// Adds a sample of the open hour (which `at` is in), replacing one at the same time.
    fn insert(&mut self, id: u32, at: UnixMillis, value: SampleValue) {
        let hour = *self.hour.get_or_insert(floor_to(at, HOUR_MILLIS));
        debug_assert_eq!(hour, floor_to(at, HOUR_MILLIS));
        self.rows.entry(id).or_default().insert(hour, at, value);
    }

    /// The samples of `id` in the open hour, when it is `hour`.
    fn of(&self, id: u32, hour: UnixMillis) -> Option<&HourRows> {
        self.rows.get(&id).filter(|_| self.hour == Some(hour))
    }
}

/// One deployment's samples of the open hour, in time order, 16 bytes each (the offset in the hour and the values
/// packed as the codec stores them). A `BTreeMap` of full samples took about 81 bytes a sample, which at 2,000
/// deployments ticking every 15 s was ~38 MiB by the end of each hour.
#[derive(Debug, Default)]
struct HourRows(Vec<(u32, codec::PackedSample)>);

impl HourRows {
    fn insert(&mut self, hour: UnixMillis, at: UnixMillis, value: SampleValue) {
        let offset = (at - hour) as u32;
        let packed = codec::PackedSample::pack(&value);
        if self.0.last().is_none_or(|(last, _)| *last < offset) {
            self.0.push((offset, packed));
            return;
        }
        match self.0.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) => self.0[i].1 = packed,
            Err(i) => self.0.insert(i, (offset, packed)),
        }
    }

    fn contains(&self, hour: UnixMillis, at: UnixMillis) -> bool {
        (at - hour)
            .try_into()
            .is_ok_and(|offset: u32| self.0.binary_search_by_key(&offset, |(o, _)| *o).is_ok())
    }

    /// The samples at times in `from..to`, in order.
    fn range(
        &self,
        hour: UnixMillis,
        from: UnixMillis,
        to: UnixMillis,
    ) -> impl Iterator<Item = (UnixMillis, SampleValue)> + '_ {
        self.0
            .iter()
            .map(move |(offset, v)| (hour + i64::from(*offset), v.unpack()))
            .filter(move |(at, _)| (from..to).contains(at))
    }
}

#[derive(Default)]
struct Ids {
    by_key: HashMap<DeploymentKey, u32>,
    next: u32,
}

/// The store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
}

/// The open database behind every clone of a [`Store`].
struct Shared {
    path: PathBuf,
    config: StoreConfig,
    /// Every operation holds the read lock while it runs (on a blocking thread); a compaction holds the write
    /// lock while it copies the data into a fresh database and swaps it in. `None` only if a compaction failed
    /// and the database could not be reopened.
    inner: RwLock<Option<Arc<Inner>>>,
    /// Size on disk after the last compaction (or at open): the next compaction is due at
    /// [`COMPACT_GROWTH`] times this.
    compacted_size: AtomicU64,
    /// What [`Store::deployments`] last returned, for while a compaction holds the database.
    last_deployments: Mutex<Vec<DeploymentKey>>,
    /// The figures for `/metrics`.
    metrics: StoreMetrics,
    /// Set by an I/O error from sled (a full disk, say). sled 0.34 keeps its first I/O error and fails every
    /// later write with it, for good: the database has to be closed and opened again once the cause is gone
    /// (see [`REOPEN_BACKOFF`]).
    io_failed: AtomicBool,
    /// Set by a reopen: the next tick's write is flushed at once, so writes count as working again only once
    /// they reach the disk (sled buffers them; on a disk still full the error comes from its flusher later).
    confirm_writes: AtomicBool,
    /// History imports (bootstrap) that kept points, per deployment since start: readers that built something from
    /// the store before a bootstrap landed (the right-sizing histories) see that there is more to read.
    imports: Mutex<HashMap<DeploymentKey, u64>>,
    /// When the database was last reopened after an I/O error (or tried to be).
    last_reopen: Mutex<Option<std::time::Instant>>,
    /// Why the database is closed when a reopen failed (`None`: the failed compaction's reason).
    closed_reason: Mutex<Option<String>>,
}

/// How often at most the store closes and reopens its database after an I/O error, until it writes again. Each
/// attempt loses what sled held in memory and had not written (the writes that failed); reads and serving never
/// depend on it, serve keeps its state in memory.
pub const REOPEN_BACKOFF: std::time::Duration = std::time::Duration::from_secs(5);

/// sled 0.34 reclaims little of the space its log leaves behind: measured by `hack/bench-store.sh`, a store
/// written tick by tick for 30 days (200 deployments, retention enforced hourly) grew to 750 MiB on disk for
/// 70 MiB of live data, about 27 MiB a day after the first two days. A compaction copies the live data into a
/// fresh database (sled's export/import) when the store has grown to this many times its compacted size.
pub const COMPACT_GROWTH: u64 = 3;

/// Below this size on disk a store is never compacted.
pub const COMPACT_MIN_BYTES: u64 = 64 * 1024 * 1024;

/// The file a compaction writes into its copy once the copy is complete and flushed to disk. Only a copy that
/// holds it is ever moved into the store's place, by the compaction or by the recovery at open. It stays in the
/// store's directory afterwards: it tells the recovery at open that the store in place is a compaction's copy,
/// so a `<store>.old` beside it is that compaction's old database.
pub const COMPACTION_COMPLETE: &str = "compaction-complete";

/// Suffix of the directory beside the store's that a compaction copies the live data into.
const COPY_SUFFIX: &str = ".compacting";

/// Suffix of the directory the store is moved to while a compaction swaps its copy in.
const OLD_SUFFIX: &str = ".old";

/// What opening the store did about a compaction that a crash (or a swap that failed) interrupted; each is
/// logged and counted in `smart_autoscaler_store_recoveries_total{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// The store was in place with a copy beside it (interrupted while copying, or before the swap): the copy
    /// was removed; the store in place holds everything.
    DiscardedCopy,
    /// The store had been moved aside and a complete copy was not yet in its place (interrupted between the two
    /// renames): the copy was moved in, opened, and the old database removed.
    FinishedSwap,
    /// As for [`Recovery::FinishedSwap`], but the copy was not marked complete (a build older than the marker,
    /// or a copy cut short): the old database was moved back and the copy removed.
    RolledBack,
    /// The copy was in place with the old database still beside it (interrupted before removing it): the old
    /// database was removed.
    RemovedOld,
    /// A `<store>.old` lies beside a store that is not a compaction's marked copy: an older build reopened an
    /// empty store after a crash between the renames (the history is in `<store>.old`), or it swapped in a copy
    /// before the marker existed. Nothing was removed; an error is logged. The next compaction removes it.
    KeptOld,
}

impl Recovery {
    /// Every recovery.
    pub const ALL: [Recovery; 5] = [
        Recovery::DiscardedCopy,
        Recovery::FinishedSwap,
        Recovery::RolledBack,
        Recovery::RemovedOld,
        Recovery::KeptOld,
    ];

    /// The `action` label: `discarded_copy`, `finished_swap`, `rolled_back`, `removed_old` or `kept_old`.
    pub fn label(self) -> &'static str {
        match self {
            Recovery::DiscardedCopy => "discarded_copy",
            Recovery::FinishedSwap => "finished_swap",
            Recovery::RolledBack => "rolled_back",
            Recovery::RemovedOld => "removed_old",
            Recovery::KeptOld => "kept_old",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Recovery::DiscardedCopy => {
                "removed the copy of a compaction interrupted before the swap; the store in place holds everything"
            }
            Recovery::FinishedSwap => {
                "finished a compaction interrupted between its renames: moved the complete copy into place and removed the old database"
            }
            Recovery::RolledBack => {
                "rolled back a compaction interrupted between its renames: no copy is marked complete, so the old database was moved back and any copy removed"
            }
            Recovery::RemovedOld => {
                "removed the old database left by a compaction interrupted after the swap"
            }
            Recovery::KeptOld => {
                "a database moved aside by a compaction lies beside a store that is not its copy (an older build may have opened an empty store after a crash, leaving the history there); kept: to restore it, stop the server and move it into the store's place; the next compaction moves it to store.old.kept"
            }
        }
    }
}

/// A free name beside `old` (`<old>.kept`, `<old>.kept.2`, ...) for an old database that must not be removed.
fn keep_aside(old: &Path) -> PathBuf {
    let name = old.file_name().unwrap_or_default().to_string_lossy();
    (1..)
        .map(|n| match n {
            1 => old.with_file_name(format!("{name}.kept")),
            n => old.with_file_name(format!("{name}.kept.{n}")),
        })
        .find(|candidate| !candidate.exists())
        .unwrap_or_else(|| old.with_file_name(format!("{name}.kept")))
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactReport {
    /// Size on disk before.
    pub before_bytes: u64,
    /// Size on disk after.
    pub after_bytes: u64,
    /// How long the store was locked.
    pub millis: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .field("retention", &self.shared.config.retention)
            .finish_non_exhaustive()
    }
}

const FORMAT_KEY: &[u8] = b"format";

fn deployment_name(key: &DeploymentKey) -> String {
    // Neither a namespace nor a name can hold '/'.
    format!("{}/{}", key.namespace, key.name)
}

fn floor_to(t: UnixMillis, unit: i64) -> UnixMillis {
    t.div_euclid(unit) * unit
}

impl Store {
    /// Opens (creating if needed) the store in directory `path`, on the blocking pool. `config` is a
    /// [`StoreConfig`] or just a [`Retention`] (with the default page cache).
    pub async fn open(
        path: impl Into<PathBuf>,
        config: impl Into<StoreConfig>,
    ) -> Result<Store, StoreError> {
        let path = path.into();
        let config = config.into();
        let for_error = path.clone();
        on_blocking_pool(&for_error, move || Store::open_blocking(path, config)).await
    }

    /// Opens (creating if needed) the store in directory `path`, blocking the calling thread.
    pub fn open_blocking(
        path: impl Into<PathBuf>,
        config: impl Into<StoreConfig>,
    ) -> Result<Store, StoreError> {
        let path = path.into();
        let config = config.into();
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        if path.exists() && !path.is_dir() {
            return Err(open_error("it exists and is not a directory".into()));
        }
        let metrics = StoreMetrics::default();
        let inner = open_recovering(&path, config, &metrics)?;
        let size = inner.db.size_on_disk().map_err(|e| inner.sled(e))?;
        metrics.size(size);
        Ok(Store {
            shared: Arc::new(Shared {
                path,
                config,
                inner: RwLock::new(Some(Arc::new(inner))),
                compacted_size: AtomicU64::new(size),
                last_deployments: Mutex::default(),
                metrics,
                io_failed: AtomicBool::new(false),
                confirm_writes: AtomicBool::new(false),
                imports: Mutex::default(),
                last_reopen: Mutex::new(None),
                closed_reason: Mutex::new(None),
            }),
            clock: Arc::new(SystemClock),
        })
    }

    /// Uses `clock` for "now" where the store needs it ([`Store::import_history`]); the system clock by default.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store's directory.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The retention in force.
    pub fn retention(&self) -> Retention {
        self.shared.config.retention
    }

    /// Registers the store's figures in `/metrics`: `smart_autoscaler_store_size_bytes`, `_store_records{tree}`,
    /// `_store_compactions_total{outcome}`, `_store_compaction_duration_seconds`,
    /// `_store_last_flush_timestamp_seconds`, `_store_recoveries_total{action}` (recoveries done at open are
    /// counted already), `_store_write_failing` and `_store_reopens_total{outcome}`. Size and records are as of the last [`Store::refresh_stats`].
    pub fn register_metrics(&self, telemetry: &crate::telemetry::Telemetry) {
        self.shared.metrics.register(telemetry);
    }

    /// Refreshes the figures that need the database, on the blocking pool: the size on disk, and the records of
    /// every tree when they were last counted at least [`RECORD_COUNT_INTERVAL`] ago (of the store's clock),
    /// since counting is a scan of every tree. serve calls it after each retention pass.
    pub async fn refresh_stats(&self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let now = self.clock.now_millis();
        self.blocking(move |inner| {
            let metrics = &shared.metrics;
            metrics.size(inner.db.size_on_disk().map_err(|e| inner.sled(e))?);
            if metrics.count_due(now) {
                for (name, tree) in inner.named_trees() {
                    metrics.records(name, tree.len());
                }
            }
            Ok(())
        })
        .await
    }

    /// Deployments the store has seen. Never waits for a compaction (callers run on async threads): while one
    /// runs, the list from the last call is returned.
    pub fn deployments(&self) -> Vec<DeploymentKey> {
        let last = || {
            self.shared
                .last_deployments
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        let guard = match self.shared.inner.try_read() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return last(),
        };
        let Some(inner) = guard.as_ref() else {
            return last();
        };
        let mut keys: Vec<DeploymentKey> = inner.lock_ids().by_key.keys().cloned().collect();
        keys.sort();
        *self
            .shared
            .last_deployments
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = keys.clone();
        keys
    }

    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        on_blocking_pool(&self.shared.path, move || {
            shared.reopen_if_failed();
            let result = {
                let guard = shared.read();
                match guard.as_ref() {
                    Some(inner) => work(inner),
                    None => Err(shared.unavailable()),
                }
            };
            if let Err(StoreError::Sled {
                source: sled::Error::Io(error),
                ..
            }) = &result
                && !shared.io_failed.swap(true, Ordering::SeqCst)
            {
                shared.metrics.write_failing(true);
                tracing::error!(
                    path = %shared.path.display(), %error,
                    "store: I/O error, writes are failing (serving continues from memory); the database is \
                     reopened every {}s until it writes again", REOPEN_BACKOFF.as_secs()
                );
            }
            result
        })
        .await
    }

    /// Copies the live data into a fresh database and swaps it in, which gives back the space sled's log has
    /// left behind (see [`COMPACT_GROWTH`]). Every other store operation waits meanwhile. On failure the old
    /// database stays in place.
    pub async fn compact(&self) -> Result<CompactReport, StoreError> {
        let shared = self.shared.clone();
        on_blocking_pool(&self.shared.path, move || shared.compact()).await
    }

    /// Compacts when the store has grown to [`COMPACT_GROWTH`] times its size after the last compaction (and is
    /// at least [`COMPACT_MIN_BYTES`]). Returns what was done, if anything.
    pub async fn compact_if_grown(&self) -> Result<Option<CompactReport>, StoreError> {
        let size = self.size_on_disk().await?;
        let last = self.shared.compacted_size.load(Ordering::Relaxed);
        if size < COMPACT_MIN_BYTES || size < last.saturating_mul(COMPACT_GROWTH) {
            return Ok(None);
        }
        self.compact().await.map(Some)
    }
}

#[cfg(test)]
impl Store {
    /// The open database, for tests that reach under the API.
    fn inner(&self) -> Arc<Inner> {
        self.shared.read().clone().expect("store is open")
    }
}

impl Shared {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<Arc<Inner>>> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn unavailable(&self) -> StoreError {
        let reason = self
            .closed_reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        StoreError::Unavailable {
            path: self.path.clone(),
            reason: reason.unwrap_or_else(|| {
                "a compaction failed and the database could not be reopened; restart to retry"
                    .into()
            }),
        }
    }

    /// After an I/O error, at most every [`REOPEN_BACKOFF`]: closes the database and opens it again (sled's
    /// recovery drops a torn tail), so writes resume once the cause (a full disk) is gone. Operations wait
    /// meanwhile, as for a compaction.
    fn reopen_if_failed(&self) {
        if !self.io_failed.load(Ordering::SeqCst) {
            return;
        }
        {
            let mut last = self.last_reopen.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| at.elapsed() < REOPEN_BACKOFF) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        // Closing the database is only worth it when it can open again: until then the failed handle still
        // answers reads (the history API) from what it holds.
        if let Err(error) = probe_space(&self.path) {
            tracing::debug!(path = %self.path.display(), %error, "store: still no room to reopen");
            return;
        }
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        // The old handle must be gone before the new one opens: sled locks its files.
        *guard = None;
        match open_recovering(&self.path, self.config, &self.metrics) {
            Ok(inner) => {
                *guard = Some(Arc::new(inner));
                self.io_failed.store(false, Ordering::SeqCst);
                self.confirm_writes.store(true, Ordering::SeqCst);
                *self.closed_reason.lock().unwrap_or_else(|e| e.into_inner()) = None;
                self.metrics.reopened(true);
                tracing::info!(path = %self.path.display(), "store: reopened after an I/O error");
            }
            Err(error) => {
                self.metrics.reopened(false);
                tracing::warn!(path = %self.path.display(), %error, "store: reopening after an I/O error failed");
                *self.closed_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "reopening after an I/O error failed ({error}); retried every {}s",
                    REOPEN_BACKOFF.as_secs()
                ));
            }
        }
    }

    /// A directory next to the store's, for the compaction's copy and the old files.
    fn sibling(&self, suffix: &str) -> PathBuf {
        sibling(&self.path, suffix)
    }

    fn compact(&self) -> Result<CompactReport, StoreError> {
        let started = std::time::Instant::now();
        let result = self.compact_locked();
        self.metrics.compaction(result.is_ok(), started.elapsed());
        if let Ok(report) = &result {
            self.metrics.size(report.after_bytes);
        }
        result
    }

    /// Copies the live data of `db` into a fresh database at `to` (sled's export and import) and flushes it,
    /// then writes [`COMPACTION_COMPLETE`] into it.
    fn copy_live_data(&self, db: &sled::Db, to: &Path) -> Result<(), StoreError> {
        let sled_error = |source| StoreError::Sled {
            path: self.path.clone(),
            source,
        };
        {
            let fresh = sled_config(to, self.config.cache_bytes)
                .open()
                .map_err(sled_error)?;
            fresh.import(db.export());
            fresh.flush().map_err(sled_error)?;
        }
        mark_complete(to).map_err(|e| StoreError::Open {
            path: self.path.clone(),
            reason: format!("compaction: marking the copy complete: {e}"),
        })
    }

    fn compact_locked(&self) -> Result<CompactReport, StoreError> {
        let mut guard = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let started = std::time::Instant::now();
        let Some(old) = guard.as_ref() else {
            return Err(self.unavailable());
        };
        let io = |what: &str, e: std::io::Error| StoreError::Open {
            path: self.path.clone(),
            reason: format!("compaction: {what}: {e}"),
        };
        old.db.flush().map_err(|e| old.sled(e))?;
        let before_bytes = old.db.size_on_disk().map_err(|e| old.sled(e))?;
        let fresh_path = self.sibling(COPY_SUFFIX);
        let old_path = self.sibling(OLD_SUFFIX);
        // An old database beside a store that is not its copy (no marker) may hold the only history (see
        // `Recovery::KeptOld`): it is moved out of the way, never removed.
        if old_path.exists() && !self.path.join(COMPACTION_COMPLETE).is_file() {
            let kept = keep_aside(&old_path);
            std::fs::rename(&old_path, &kept)
                .map_err(|e| io("keeping an old database aside", e))?;
            tracing::error!(
                path = %self.path.display(), kept = %kept.display(),
                "store compaction: a database moved aside by an interrupted compaction lies beside a store that is \
                 not its copy; kept, not removed: stop the server and move it into the store's place to restore it"
            );
        }
        for leftover in [&fresh_path, &old_path] {
            if leftover.exists() {
                tracing::warn!(path = %leftover.display(), "store compaction: removing what an earlier one left");
                std::fs::remove_dir_all(leftover).map_err(|e| io("removing a leftover copy", e))?;
            }
        }
        // The copy first, beside the store: if it fails, nothing has changed.
        if let Err(e) = self.copy_live_data(&old.db, &fresh_path) {
            let _ = std::fs::remove_dir_all(&fresh_path);
            return Err(e);
        }
        // Then the swap: the old database is closed, its directory moved aside, the copy moved in and opened.
        *guard = None;
        let swapped = std::fs::rename(&self.path, &old_path)
            .map_err(|e| io("moving the old database aside", e))
            .and_then(|()| match std::fs::rename(&fresh_path, &self.path) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = std::fs::rename(&old_path, &self.path);
                    Err(io("moving the copy in", e))
                }
            })
            .and_then(|()| {
                sync_parent(&self.path);
                Inner::open(self.path.clone(), self.config).inspect_err(|_| {
                    // The copy does not open: back to the old database.
                    let _ = std::fs::remove_dir_all(&self.path);
                    let _ = std::fs::rename(&old_path, &self.path);
                })
            });
        match swapped {
            Ok(inner) => {
                let after_bytes = inner.db.size_on_disk().map_err(|e| inner.sled(e))?;
                *guard = Some(Arc::new(inner));
                self.compacted_size.store(after_bytes, Ordering::Relaxed);
                let _ = std::fs::remove_dir_all(&old_path);
                Ok(CompactReport {
                    before_bytes,
                    after_bytes,
                    millis: started.elapsed().as_millis() as u64,
                })
            }
            Err(e) => {
                // Reopen the old database, put back; if putting it back failed too, the recovery at open finishes
                // or rolls back the swap, and never opens an empty store in its place.
                *guard = open_recovering(&self.path, self.config, &self.metrics)
                    .ok()
                    .map(Arc::new);
                Err(e)
            }
        }
    }
}

/// Bytes [`probe_space`] writes: a few of sled's segments (512 KiB each), what an open and the next writes need.
const PROBE_BYTES: usize = 2 << 20;

/// Writes, syncs and removes a [`PROBE_BYTES`] file beside the store: whether the disk takes writes again.
fn probe_space(path: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let probe = sibling(path, ".probe");
    let result = std::fs::File::create(&probe).and_then(|mut file| {
        file.write_all(&vec![0; PROBE_BYTES])?;
        file.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    result
}

/// Runs `work` for the store at `path` on tokio's blocking pool (sled blocks), its panic or cancellation
/// reported as [`StoreError::Task`].
async fn on_blocking_pool<T: Send + 'static>(
    path: &Path,
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
}

/// The directory beside `path` whose name is `path`'s with `suffix` appended.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes [`COMPACTION_COMPLETE`] into the directory `dir` and syncs it and the directory, so the marker is
/// never on disk before the copy's data (flushed before this) is.
fn mark_complete(dir: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::File::create(dir.join(COMPACTION_COMPLETE))?;
    file.write_all(b"the compaction's copy of the store is complete\n")?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()
}

/// Makes renames in `path`'s directory durable. Best effort: not every platform can sync a directory, and a
/// rename that is lost leaves a state the recovery at open repairs anyway.
fn sync_parent(path: &Path) {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(dir) = std::fs::File::open(parent) {
        let _ = dir.sync_all();
    }
}

/// Opens the database at `path`, first finishing or rolling back a compaction that a crash (or a swap that
/// failed) interrupted. A compaction copies the live data into `<store>.compacting`, marks the copy complete,
/// renames `<store>` to `<store>.old` and the copy to `<store>`, opens it and removes `<store>.old`. So:
/// - `<store>` present: it is the live database (renames are atomic, and only a complete copy replaces it). A
///   copy beside it (interrupted while copying or before the swap) is a leftover, and so is an old database when
///   the store is marked as a compaction's copy (interrupted before the old one's removal): they are removed once
///   the store has opened, since holding its lock proves no other process is compacting it. An old database
///   beside an unmarked store is kept (see [`Recovery::KeptOld`]).
/// - `<store>` missing: a copy marked complete is moved in (interrupted between the renames: the swap is
///   finished); otherwise `<store>.old` is moved back (rolled back). The other is removed once the database
///   moved in has opened; if it does not open, nothing more is touched and the error says so.
///
/// Each recovery is logged and counted in `metrics`.
fn open_recovering(
    path: &Path,
    config: StoreConfig,
    metrics: &StoreMetrics,
) -> Result<Inner, StoreError> {
    let copy = sibling(path, COPY_SUFFIX);
    let old = sibling(path, OLD_SUFFIX);
    let was_there = path.exists();
    let mut swap = None;
    if !was_there {
        let (from, action) = if copy.join(COMPACTION_COMPLETE).is_file() {
            (&copy, Recovery::FinishedSwap)
        } else {
            (&old, Recovery::RolledBack)
        };
        if from.is_dir() {
            std::fs::rename(from, path).map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                reason: format!(
                    "recovering an interrupted compaction: moving {} into place: {e}",
                    from.display()
                ),
            })?;
            sync_parent(path);
            swap = Some(action);
        }
    }
    let inner = Inner::open(path.to_path_buf(), config).map_err(|e| match swap {
        // Whatever the error, say where the other database is: nothing has been removed.
        Some(action) => StoreError::Open {
            path: path.to_path_buf(),
            reason: format!(
                "{e} (while recovering an interrupted compaction, {}: the other database is kept beside it)",
                action.label()
            ),
        },
        None => e,
    })?;
    let mut done: Vec<Recovery> = swap.into_iter().collect();
    let store_is_a_copy = path.join(COMPACTION_COMPLETE).is_file();
    for (leftover, action) in [
        (&copy, Recovery::DiscardedCopy),
        (&old, Recovery::RemovedOld),
    ] {
        if !leftover.exists() {
            continue;
        }
        if !was_there && swap.is_none() {
            // A new store, yet something lies beside it: nothing proves it is a leftover, so it stays.
            tracing::warn!(path = %path.display(), leftover = %leftover.display(), "store created anew beside a directory a compaction left; not touching it");
            continue;
        }
        if action == Recovery::RemovedOld && !store_is_a_copy {
            done.push(Recovery::KeptOld);
            continue;
        }
        match std::fs::remove_dir_all(leftover) {
            Ok(()) if swap.is_none() => done.push(action),
            Ok(()) => {}
            // The next compaction removes it before it copies.
            Err(error) => {
                tracing::warn!(path = %leftover.display(), %error, "store: cannot remove what an interrupted compaction left")
            }
        }
    }
    for action in done {
        if action == Recovery::KeptOld {
            tracing::error!(path = %path.display(), old = %old.display(), action = action.label(), "store: {}", action.describe());
        } else {
            tracing::warn!(path = %path.display(), action = action.label(), "store: {}", action.describe());
        }
        metrics.recovered(action);
    }
    Ok(inner)
}

fn sled_config(path: &Path, cache_bytes: u64) -> sled::Config {
    sled::Config::new()
        .path(path)
        .mode(sled::Mode::LowSpace)
        .cache_capacity(cache_bytes)
        .flush_every_ms(Some(1000))
}

impl Inner {
    /// Opens the database in `path` and loads the deployment ids and the journal.
    fn open(path: PathBuf, config: StoreConfig) -> Result<Inner, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.clone(),
            reason,
        };
        let retention = config.retention;
        let config = sled_config(&path, config.cache_bytes);
        // sled's background threads let go of the file lock shortly after a handle in this process is dropped,
        // so a reopen in the same process retries the lock for a moment.
        let mut tries = 0;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    tries += 1;
                    if tries >= 20 {
                        return Err(open_error(format!(
                            "{e} (is another process using this store?)"
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(open_error(e.to_string())),
            }
        };
        let sled_error = |source| StoreError::Sled {
            path: path.clone(),
            source,
        };
        match db.get(FORMAT_KEY).map_err(sled_error)? {
            None => {
                db.insert(FORMAT_KEY, &[codec::VERSION])
                    .map_err(sled_error)?;
            }
            Some(v) if v.as_ref() == [codec::VERSION] => {}
            Some(v) => {
                return Err(StoreError::Version {
                    path,
                    found: v.first().copied().unwrap_or(0),
                    supported: codec::VERSION,
                });
            }
        }
        let trees = Kind::ALL
            .iter()
            .map(|k| db.open_tree(k.name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sled_error)?;
        let deployments = db.open_tree("deployments").map_err(sled_error)?;
        let journal = db.open_tree("samples_journal").map_err(sled_error)?;
        let mut ids = Ids::default();
        for entry in deployments.iter() {
            let (k, v) = entry.map_err(sled_error)?;
            let corrupt = |detail: &str| StoreError::Corrupt {
                path: path.clone(),
                tree: "deployments",
                detail: detail.to_string(),
            };
            let name = std::str::from_utf8(&k).map_err(|_| corrupt("key is not UTF-8"))?;
            let (namespace, name) = name
                .split_once('/')
                .ok_or_else(|| corrupt("key is not namespace/name"))?;
            let id: [u8; 4] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("id is not 4 bytes"))?;
            let id = u32::from_be_bytes(id);
            ids.next = ids.next.max(id.saturating_add(1));
            ids.by_key.insert(DeploymentKey::new(namespace, name), id);
        }
        let inner = Inner {
            db,
            path,
            retention,
            trees,
            deployments,
            journal,
            ids: Mutex::new(ids),
            open: Mutex::new(OpenHour::default()),
        };
        inner.replay_journal()?;
        Ok(inner)
    }
}

impl Store {
    /// Stores each observed deployment's CPU and memory utilization and replicas at the observation's time, as
    /// one atomic batch.
    pub async fn record_tick(&self, observation: &Observation) -> Result<(), StoreError> {
        let at = observation.at;
        let rows: Vec<(DeploymentKey, SampleValue)> = observation
            .deployments
            .iter()
            .filter(|d| d.cpu_utilization_percent.is_finite())
            .map(|d| {
                (
                    d.key.clone(),
                    SampleValue {
                        cpu_percent: d.cpu_utilization_percent,
                        memory_percent: d.memory_utilization_percent,
                        replicas: Some(d.replicas),
                    },
                )
            })
            .collect();
        let shared = self.shared.clone();
        self.blocking(move |inner| {
            inner.record(at, rows)?;
            if shared.confirm_writes.load(Ordering::SeqCst) {
                inner.db.flush().map_err(|e| inner.sled(e))?;
                shared.confirm_writes.store(false, Ordering::SeqCst);
            }
            Ok(())
        })
        .await?;
        self.shared.metrics.write_failing(false);
        Ok(())
    }

    /// Samples of one deployment with time in `[from, to)`, oldest first.
    pub async fn samples(
        &self,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Sample>, StoreError> {
        let key = key.clone();
        self.blocking(move |inner| inner.samples(&key, from, to))
            .await
    }

    /// Five-minute rollups of one deployment for the buckets that start in `[from rounded down to 5 minutes, to)`,
    /// oldest first: the stored ones, plus those of buckets still held as samples, aggregated on the fly, so the
    /// series is continuous up to the newest sample.
    pub async fn rollups(
        &self,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Rollup>, StoreError> {
        let key = key.clone();
        self.blocking(move |inner| inner.rollups(&key, from, to))
            .await
    }

    /// Imports CPU utilization history (bootstrap), without memory or replicas; returns how many points were
    /// kept. Recent points become samples (times that already have a sample are skipped). Points in hours that
    /// [`Store::enforce_retention`] would already have rolled up go straight into five-minute rollups, without
    /// the churn of writing and deleting samples, unless that hour still holds samples (then they become
    /// samples too, rolled up with them); rollup slots already stored win. Points past the rollup retention and
    /// non-finite values are dropped. "Now" is the store's clock.
    pub async fn import_history(
        &self,
        key: &DeploymentKey,
        points: &[(UnixMillis, f64)],
    ) -> Result<usize, StoreError> {
        let points: Vec<(UnixMillis, f64, Option<u32>)> =
            points.iter().map(|(at, v)| (*at, *v, None)).collect();
        self.import_history_with_pods(key, &points).await
    }

    /// [`Store::import_history`] with the pod count at each point, when known (forecasts need demand, which is
    /// utilization x pods).
    pub async fn import_history_with_pods(
        &self,
        key: &DeploymentKey,
        points: &[(UnixMillis, f64, Option<u32>)],
    ) -> Result<usize, StoreError> {
        let owned = key.clone();
        let points = points.to_vec();
        let now = self.clock.now_millis();
        let kept = self
            .blocking(move |inner| inner.import(&owned, &points, now))
            .await?;
        if kept > 0 {
            *self
                .shared
                .imports
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(key.clone())
                .or_default() += 1;
        }
        Ok(kept)
    }

    /// How many history imports that kept points `key` has had since start (see [`Store::import_history`]).
    pub fn imports(&self, key: &DeploymentKey) -> u64 {
        self.shared
            .imports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Stores a decision (JSON bytes) made for `key` at `at`.
    pub async fn put_decision(
        &self,
        key: &DeploymentKey,
        at: UnixMillis,
        json: &[u8],
    ) -> Result<(), StoreError> {
        let value = codec::encode_bytes(json);
        self.put(Kind::Decisions, key, at, value).await
    }

    /// Decisions of one deployment with time in `[from, to)`.
    pub async fn decisions(
        &self,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, Vec<u8>)>, StoreError> {
        let key = key.clone();
        self.blocking(move |inner| {
            inner.scan(Kind::Decisions, &key, from, to, |v| {
                codec::decode_bytes(v).map(<[u8]>::to_vec)
            })
        })
        .await
    }

    /// Stores a prediction made at `at`.
    pub async fn put_prediction(
        &self,
        key: &DeploymentKey,
        at: UnixMillis,
        prediction: &Prediction,
    ) -> Result<(), StoreError> {
        self.put(Kind::Predictions, key, at, prediction.encode())
            .await
    }

    /// Predictions made in `[from, to)`.
    pub async fn predictions(
        &self,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, Prediction)>, StoreError> {
        self.typed(Kind::Predictions, key, from, to).await
    }

    async fn put(
        &self,
        kind: Kind,
        key: &DeploymentKey,
        at: UnixMillis,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.blocking(move |inner| {
            let id = inner.id(&key)?;
            inner
                .tree(kind)
                .insert(codec::key(id, at), value)
                .map_err(|e| inner.sled(e))?;
            Ok(())
        })
        .await
    }

    async fn typed<T: Record + Send + 'static>(
        &self,
        kind: Kind,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<(UnixMillis, T)>, StoreError> {
        let key = key.clone();
        self.blocking(move |inner| inner.scan(kind, &key, from, to, T::decode))
            .await
    }

    /// Rolls up samples past the sample retention into five-minute aggregates and removes records past the
    /// rollup retention, as of `now`.
    pub async fn enforce_retention(&self, now: UnixMillis) -> Result<RetentionReport, StoreError> {
        self.blocking(move |inner| inner.enforce_retention(now))
            .await
    }

    /// Writes everything buffered to disk; returns the bytes flushed. Its time (of the store's clock) is the
    /// last flush in `/metrics`.
    pub async fn flush(&self) -> Result<usize, StoreError> {
        let flushed = self
            .blocking(|inner| inner.db.flush().map_err(|e| inner.sled(e)))
            .await?;
        self.shared.metrics.flushed(self.clock.now_millis());
        Ok(flushed)
    }

    /// Bytes the database takes on disk.
    pub async fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.blocking(|inner| inner.db.size_on_disk().map_err(|e| inner.sled(e)))
            .await
    }

    /// Enforces retention now and then every `every` of `clock`'s time until `cancel` fires; errors are logged.
    pub fn spawn_retention(
        &self,
        clock: Arc<dyn Clock>,
        every: Duration,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(clock.real_duration(every));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    () = cancel.cancelled() => return,
                }
                match store.enforce_retention(clock.now_millis()).await {
                    Ok(report) => tracing::debug!(?report, "store retention pass"),
                    Err(error) => tracing::warn!(%error, "store retention pass failed"),
                }
            }
        })
    }
}

type Decoded<T> = Result<T, codec::CodecError>;

impl Inner {
    fn tree(&self, kind: Kind) -> &sled::Tree {
        &self.trees[Kind::ALL.iter().position(|k| *k == kind).unwrap_or(0)]
    }

    /// Every tree with its name.
    fn named_trees(&self) -> impl Iterator<Item = (&'static str, &sled::Tree)> {
        Kind::ALL.iter().map(|k| (k.name(), self.tree(*k))).chain([
            ("deployments", &self.deployments),
            ("samples_journal", &self.journal),
        ])
    }

    fn sled(&self, source: sled::Error) -> StoreError {
        StoreError::Sled {
            path: self.path.clone(),
            source,
        }
    }

    fn corrupt(&self, kind: Kind, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            tree: kind.name(),
            detail: detail.to_string(),
        }
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The id of a deployment, assigning (and persisting) one on first sight.
    fn id(&self, key: &DeploymentKey) -> Result<u32, StoreError> {
        let mut ids = self.lock_ids();
        self.id_locked(&mut ids, key)
    }

    fn id_locked(&self, ids: &mut Ids, key: &DeploymentKey) -> Result<u32, StoreError> {
        if let Some(&id) = ids.by_key.get(key) {
            return Ok(id);
        }
        let id = ids.next;
        self.deployments
            .insert(deployment_name(key).as_bytes(), &id.to_be_bytes())
            .map_err(|e| self.sled(e))?;
        ids.next += 1;
        ids.by_key.insert(key.clone(), id);
        Ok(id)
    }

    fn known_id(&self, key: &DeploymentKey) -> Option<u32> {
        self.lock_ids().by_key.get(key).copied()
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, OpenHour> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Loads the journal on open: its newest hour becomes the open hour again; older hours (left by a crash while
    /// closing them) are closed now.
    fn replay_journal(&self) -> Result<(), StoreError> {
        let mut open = self.lock_open();
        for entry in self.journal.iter() {
            let (k, v) = entry.map_err(|e| self.sled(e))?;
            let (_, at) = codec::split_key(&k)
                .ok_or_else(|| self.corrupt(Kind::Samples, "bad journal key"))?;
            let rows = codec::decode_journal(&v).map_err(|e| self.corrupt(Kind::Samples, e))?;
            let hour = floor_to(at, HOUR_MILLIS);
            if open.hour.is_some_and(|h| h != hour) {
                self.close_hour(&mut open)?;
            }
            open.hour = Some(hour);
            for (id, value) in rows {
                open.insert(id, at, value);
            }
        }
        Ok(())
    }

    /// Writes the open hour as one block per deployment (merged into blocks already there, the journal's samples
    /// winning), then drops its journal records. A crash in between is repaired by the replay on open.
    fn close_hour(&self, open: &mut OpenHour) -> Result<(), StoreError> {
        let Some(hour) = open.hour.take() else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for (id, rows) in open.rows.drain() {
            let rows: Vec<(UnixMillis, SampleValue)> =
                rows.range(hour, hour, hour + HOUR_MILLIS).collect();
            let merged = self.merged_block(id, hour, rows, true)?;
            batch.insert(&codec::key(id, hour), codec::encode_block(hour, &merged));
        }
        self.tree(Kind::Samples)
            .apply_batch(batch)
            .map_err(|e| self.sled(e))?;
        let mut remove = sled::Batch::default();
        for entry in self
            .journal
            .range(codec::key(0, i64::MIN)..codec::key(0, hour + HOUR_MILLIS))
        {
            let (k, _) = entry.map_err(|e| self.sled(e))?;
            remove.remove(k);
        }
        self.journal.apply_batch(remove).map_err(|e| self.sled(e))
    }

    /// `rows` merged with the stored block of `id` for `hour`; on equal times `rows` win when `prefer_new`.
    fn merged_block(
        &self,
        id: u32,
        hour: UnixMillis,
        rows: Vec<(UnixMillis, SampleValue)>,
        prefer_new: bool,
    ) -> Result<Vec<(UnixMillis, SampleValue)>, StoreError> {
        let Some(existing) = self
            .tree(Kind::Samples)
            .get(codec::key(id, hour))
            .map_err(|e| self.sled(e))?
        else {
            return Ok(rows);
        };
        let mut merged: BTreeMap<UnixMillis, SampleValue> = codec::decode_block(hour, &existing)
            .map_err(|e| self.corrupt(Kind::Samples, e))?
            .into_iter()
            .collect();
        for (at, value) in rows {
            if prefer_new {
                merged.insert(at, value);
            } else {
                merged.entry(at).or_insert(value);
            }
        }
        Ok(merged.into_iter().collect())
    }

    fn record(
        &self,
        at: UnixMillis,
        rows: Vec<(DeploymentKey, SampleValue)>,
    ) -> Result<(), StoreError> {
        let rows: Vec<(u32, SampleValue)> = {
            let mut ids = self.lock_ids();
            rows.into_iter()
                .map(|(key, value)| Ok((self.id_locked(&mut ids, &key)?, value)))
                .collect::<Result<_, StoreError>>()?
        };
        let hour = floor_to(at, HOUR_MILLIS);
        let mut open = self.lock_open();
        match open.hour {
            Some(h) if hour < h => {
                // A late tick for an hour already closed: into its blocks directly.
                let samples = self.tree(Kind::Samples);
                for (id, value) in rows {
                    let merged = self.merged_block(id, hour, vec![(at, value)], true)?;
                    samples
                        .insert(codec::key(id, hour), codec::encode_block(hour, &merged))
                        .map_err(|e| self.sled(e))?;
                }
                return Ok(());
            }
            Some(h) if hour > h => self.close_hour(&mut open)?,
            _ => {}
        }
        open.hour = Some(hour);
        // The journal record first, so what is in memory is always on its way to disk.
        let k = codec::key(0, at);
        let mut tick: BTreeMap<u32, SampleValue> = BTreeMap::new();
        if let Some(existing) = self.journal.get(k).map_err(|e| self.sled(e))? {
            tick.extend(
                codec::decode_journal(&existing).map_err(|e| self.corrupt(Kind::Samples, e))?,
            );
        }
        tick.extend(rows.iter().copied());
        let tick: Vec<(u32, SampleValue)> = tick.into_iter().collect();
        self.journal
            .insert(k, codec::encode_journal(&tick))
            .map_err(|e| self.sled(e))?;
        for (id, value) in rows {
            open.insert(id, at, value);
        }
        Ok(())
    }

    fn scan<T>(
        &self,
        kind: Kind,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
        decode: impl Fn(&[u8]) -> Decoded<T>,
    ) -> Result<Vec<(UnixMillis, T)>, StoreError> {
        let Some(id) = self.known_id(key) else {
            return Ok(Vec::new());
        };
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in self
            .tree(kind)
            .range(codec::key(id, from)..codec::key(id, to))
        {
            let (k, v) = entry.map_err(|e| self.sled(e))?;
            let (_, at) = codec::split_key(&k).ok_or_else(|| self.corrupt(kind, "bad key"))?;
            out.push((at, decode(&v).map_err(|e| self.corrupt(kind, e))?));
        }
        Ok(out)
    }

    fn samples(
        &self,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Sample>, StoreError> {
        let Some(id) = self.known_id(key) else {
            return Ok(Vec::new());
        };
        if from >= to {
            return Ok(Vec::new());
        }
        let mut out: BTreeMap<UnixMillis, SampleValue> = BTreeMap::new();
        for entry in self
            .tree(Kind::Samples)
            .range(codec::key(id, floor_to(from, HOUR_MILLIS))..codec::key(id, to))
        {
            let (k, v) = entry.map_err(|e| self.sled(e))?;
            let (_, hour) =
                codec::split_key(&k).ok_or_else(|| self.corrupt(Kind::Samples, "bad key"))?;
            let rows = codec::decode_block(hour, &v).map_err(|e| self.corrupt(Kind::Samples, e))?;
            out.extend(rows.into_iter().filter(|(at, _)| (from..to).contains(at)));
        }
        let open = self.lock_open();
        if let (Some(hour), Some(rows)) = (open.hour, open.rows.get(&id)) {
            out.extend(rows.range(hour, from, to));
        }
        drop(open);
        Ok(out
            .into_iter()
            .map(|(at, v)| Sample {
                at,
                cpu_percent: v.cpu_percent,
                memory_percent: v.memory_percent,
                replicas: v.replicas,
            })
            .collect())
    }

    fn rollups(
        &self,
        key: &DeploymentKey,
        from: UnixMillis,
        to: UnixMillis,
    ) -> Result<Vec<Rollup>, StoreError> {
        let from = floor_to(from, BUCKET_MILLIS);
        let mut buckets: BTreeMap<UnixMillis, Rollup> = BTreeMap::new();
        let hours = self.scan(Kind::Rollups, key, floor_to(from, HOUR_MILLIS), to, |v| {
            Ok(v.to_vec())
        })?;
        for (hour, bytes) in hours {
            let h =
                RollupHour::decode_at(hour, &bytes).map_err(|e| self.corrupt(Kind::Rollups, e))?;
            for r in h.slots.into_iter().flatten() {
                if (from..to).contains(&r.start) {
                    buckets.insert(r.start, r);
                }
            }
        }
        for (start, r) in aggregate(&self.samples(key, from, to)?) {
            buckets.entry(start).or_insert(r);
        }
        Ok(buckets.into_values().collect())
    }

    fn import(
        &self,
        key: &DeploymentKey,
        points: &[(UnixMillis, f64, Option<u32>)],
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let id = self.id(key)?;
        let roll_before = floor_to(
            now.saturating_sub(self.retention.samples_millis()),
            HOUR_MILLIS,
        );
        let rollup_cutoff = now.saturating_sub(self.retention.rollups_millis());
        let mut hours: BTreeMap<UnixMillis, Vec<(UnixMillis, SampleValue)>> = BTreeMap::new();
        for &(at, cpu, replicas) in points {
            let hour = floor_to(at, HOUR_MILLIS);
            if cpu.is_finite() && hour + HOUR_MILLIS > rollup_cutoff {
                let value = SampleValue {
                    cpu_percent: cpu,
                    memory_percent: None,
                    replicas,
                };
                hours.entry(hour).or_default().push((at, value));
            }
        }
        let samples = self.tree(Kind::Samples);
        let open = self.lock_open();
        let mut written = 0;
        for (hour, rows) in hours {
            let in_memory = open.of(id, hour);
            let block = samples
                .get(codec::key(id, hour))
                .map_err(|e| self.sled(e))?;
            if hour < roll_before && block.is_none() && in_memory.is_none() {
                // Past the sample retention and no samples to roll up with: straight to a rollup.
                written += rows.len();
                self.merge_hour(id, hour, hour_record(hour, &rows))?;
                continue;
            }
            let stored: Vec<(UnixMillis, SampleValue)> = match &block {
                Some(b) => {
                    codec::decode_block(hour, b).map_err(|e| self.corrupt(Kind::Samples, e))?
                }
                None => Vec::new(),
            };
            let rows: Vec<(UnixMillis, SampleValue)> = rows
                .into_iter()
                .filter(|(at, _)| {
                    !in_memory.is_some_and(|m| m.contains(hour, *at))
                        && stored.binary_search_by_key(at, |(t, _)| *t).is_err()
                })
                .collect();
            if rows.is_empty() {
                continue;
            }
            written += rows.len();
            let merged = self.merged_block(id, hour, rows, false)?;
            samples
                .insert(codec::key(id, hour), codec::encode_block(hour, &merged))
                .map_err(|e| self.sled(e))?;
        }
        Ok(written)
    }

    /// Stores an hour record, keeping the slots already stored for that hour.
    fn merge_hour(
        &self,
        id: u32,
        hour: UnixMillis,
        mut record: RollupHour,
    ) -> Result<(), StoreError> {
        let rollups = self.tree(Kind::Rollups);
        let k = codec::key(id, hour);
        if let Some(existing) = rollups.get(k).map_err(|e| self.sled(e))? {
            let mut stored = RollupHour::decode_at(hour, &existing)
                .map_err(|e| self.corrupt(Kind::Rollups, e))?;
            stored.fill_from(&record);
            record = stored;
        }
        rollups
            .insert(k, record.encode())
            .map_err(|e| self.sled(e))?;
        Ok(())
    }

    fn enforce_retention(&self, now: UnixMillis) -> Result<RetentionReport, StoreError> {
        let mut report = RetentionReport::default();
        let sample_cutoff = now.saturating_sub(self.retention.samples_millis());
        let rollup_cutoff = now.saturating_sub(self.retention.rollups_millis());
        // Whole hours whose every sample is past the sample retention.
        let roll_before = floor_to(sample_cutoff, HOUR_MILLIS);
        {
            // No tick for a long time: the open hour is old enough to roll up too.
            let mut open = self.lock_open();
            if open.hour.is_some_and(|h| h + HOUR_MILLIS <= roll_before) {
                self.close_hour(&mut open)?;
            }
        }
        let ids: Vec<u32> = self.lock_ids().by_key.values().copied().collect();
        for id in ids {
            self.roll_up(id, roll_before, rollup_cutoff, &mut report)?;
            // Rollup hours that ended at or before the cutoff.
            report.expired += self.remove_range(
                Kind::Rollups,
                id,
                rollup_cutoff.saturating_sub(HOUR_MILLIS).saturating_add(1),
            )?;
            for kind in [Kind::Predictions, Kind::Decisions, Kind::Cost] {
                report.expired += self.remove_range(kind, id, rollup_cutoff)?;
            }
        }
        let anomaly_cutoff = now.saturating_sub(self.retention.anomalies_millis());
        report.anomalies_expired = self.expire_anomalies(anomaly_cutoff)?;
        Ok(report)
    }

    /// Removes records of `id` older than `before`.
    fn remove_range(&self, kind: Kind, id: u32, before: UnixMillis) -> Result<usize, StoreError> {
        let tree = self.tree(kind);
        let mut batch = sled::Batch::default();
        let mut n = 0;
        for entry in tree.range(codec::key(id, i64::MIN)..codec::key(id, before)) {
            let (k, _) = entry.map_err(|e| self.sled(e))?;
            batch.remove(k);
            n += 1;
        }
        if n > 0 {
            tree.apply_batch(batch).map_err(|e| self.sled(e))?;
        }
        Ok(n)
    }

    /// Rolls the sample blocks of `id` older than `before` (an hour boundary) into rollup records: the rollups
    /// are written first, then the blocks removed, and slots already stored win, so a crash in between is
    /// repaired by the next pass.
    fn roll_up(
        &self,
        id: u32,
        before: UnixMillis,
        rollup_cutoff: UnixMillis,
        report: &mut RetentionReport,
    ) -> Result<(), StoreError> {
        let samples = self.tree(Kind::Samples);
        let mut remove = sled::Batch::default();
        for entry in samples.range(codec::key(id, i64::MIN)..codec::key(id, before)) {
            let (k, v) = entry.map_err(|e| self.sled(e))?;
            let (_, hour) =
                codec::split_key(&k).ok_or_else(|| self.corrupt(Kind::Samples, "bad key"))?;
            let rows = codec::decode_block(hour, &v).map_err(|e| self.corrupt(Kind::Samples, e))?;
            if hour + HOUR_MILLIS > rollup_cutoff {
                self.merge_hour(id, hour, hour_record(hour, &rows))?;
                report.rollup_hours_written += 1;
            }
            report.samples_rolled_up += rows.len();
            remove.remove(k);
        }
        samples.apply_batch(remove).map_err(|e| self.sled(e))?;
        Ok(())
    }
}

/// The hour record of samples all within the hour starting at `hour`.
fn hour_record(hour: UnixMillis, rows: &[(UnixMillis, SampleValue)]) -> RollupHour {
    let mut record = RollupHour::default();
    for (start, r) in aggregate_values(rows) {
        record.slots[((start - hour) / BUCKET_MILLIS) as usize] = Some(r);
    }
    record
}

fn aggregate_values(rows: &[(UnixMillis, SampleValue)]) -> Vec<(UnixMillis, Rollup)> {
    let mut buckets: BTreeMap<UnixMillis, Vec<codec::SampleLike>> = BTreeMap::new();
    for (at, v) in rows {
        buckets
            .entry(floor_to(*at, BUCKET_MILLIS))
            .or_default()
            .push((v.cpu_percent, v.memory_percent, v.replicas));
    }
    buckets
        .into_iter()
        .filter_map(|(start, s)| Rollup::of(start, &s).map(|r| (start, r)))
        .collect()
}

fn aggregate(samples: &[Sample]) -> Vec<(UnixMillis, Rollup)> {
    let rows: Vec<(UnixMillis, SampleValue)> = samples
        .iter()
        .map(|s| {
            (
                s.at,
                SampleValue {
                    cpu_percent: s.cpu_percent,
                    memory_percent: s.memory_percent,
                    replicas: s.replicas,
                },
            )
        })
        .collect();
    aggregate_values(&rows)
}

#[cfg(test)]
mod tests;
