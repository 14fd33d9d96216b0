//! The store's figures in `/metrics`, so loss and growth can be observed: size on disk, records by tree,
//! compactions, the last flush and the recoveries of interrupted compactions.
//!
//! The store updates them where they change (a compaction, a flush, a recovery at open) and on
//! [`Store::refresh_stats`](super::Store::refresh_stats), which reads the size on disk every time and counts the
//! records of every tree at most once per [`RECORD_COUNT_INTERVAL`]: sled has no cheap count, a tree's length is
//! a full scan. A scrape only reads these values; it never touches the database.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::domain::model::UnixMillis;
use crate::telemetry::{OutcomeLabels, Telemetry};

use super::Recovery;

/// How often at most [`Store::refresh_stats`](super::Store::refresh_stats) counts the records of every tree.
/// (Measured with `STORE_BENCH_MONTH_ONLY=1 hack/bench-store.sh`: counting a month of five-minute history for
/// 2,000 deployments, 553 MiB on disk, took 6.2 s of a blocking thread on a loaded 2-core machine, which once an
/// hour is noise; the first count comes at the first pass after start, so a recovery shows at once.)
pub const RECORD_COUNT_INTERVAL: Duration = Duration::from_secs(3600);

/// Label of the per-tree record gauge.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TreeLabels {
    /// The sled tree: `samples`, `rollups`, `predictions`, `decisions`, `anomalies`,
    /// `deployments` or `samples_journal`.
    pub tree: &'static str,
}

/// Label of the recovery counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecoveryLabels {
    /// What was done: see [`Recovery::label`].
    pub action: &'static str,
}

fn compaction_histogram() -> Histogram {
    Histogram::new([0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
}

/// The store's metric families (the registry holds clones of them).
#[derive(Debug)]
pub(super) struct StoreMetrics {
    size_bytes: Gauge,
    records: Family<TreeLabels, Gauge>,
    compactions: Family<OutcomeLabels, Counter>,
    compaction_seconds: Histogram,
    last_flush_seconds: Gauge<f64, AtomicU64>,
    recoveries: Family<RecoveryLabels, Counter>,
    write_failing: Gauge,
    reopens: Family<OutcomeLabels, Counter>,
    /// When the records were last counted (`i64::MIN`: never).
    counted_at: AtomicI64,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        let metrics = StoreMetrics {
            size_bytes: Gauge::default(),
            records: Family::default(),
            compactions: Family::default(),
            compaction_seconds: compaction_histogram(),
            last_flush_seconds: Gauge::default(),
            recoveries: Family::default(),
            write_failing: Gauge::default(),
            reopens: Family::default(),
            counted_at: AtomicI64::new(i64::MIN),
        };
        // Every series from the start, at zero, so `increase()` sees the first event.
        for outcome in ["ok", "error"] {
            drop(
                metrics
                    .compactions
                    .get_or_create(&OutcomeLabels { outcome }),
            );
            drop(metrics.reopens.get_or_create(&OutcomeLabels { outcome }));
        }
        for action in Recovery::ALL {
            drop(metrics.recoveries.get_or_create(&RecoveryLabels {
                action: action.label(),
            }));
        }
        metrics
    }
}

impl StoreMetrics {
    pub(super) fn register(&self, telemetry: &Telemetry) {
        telemetry.register(
            "store_size_bytes",
            "Bytes the store's database takes on disk, as of the last retention pass or compaction",
            self.size_bytes.clone(),
        );
        telemetry.register(
            "store_records",
            "Records per tree of the store (sample blocks and rollups hold one deployment-hour each), counted at the first retention pass after start, then at most hourly",
            self.records.clone(),
        );
        telemetry.register(
            "store_compactions",
            "Store compactions (live data copied into a fresh database and swapped in), by outcome",
            self.compactions.clone(),
        );
        telemetry.register(
            "store_compaction_duration_seconds",
            "How long each compaction held the store (every store operation waits meanwhile)",
            self.compaction_seconds.clone(),
        );
        telemetry.register(
            "store_last_flush_timestamp_seconds",
            "Unix time of the last flush of the store to disk that succeeded (serve asks for one every minute)",
            self.last_flush_seconds.clone(),
        );
        telemetry.register(
            "store_recoveries",
            "Compactions interrupted by a crash or a failed swap that the store finished or rolled back when it opened, by action",
            self.recoveries.clone(),
        );
        telemetry.register(
            "store_write_failing",
            "1 from an I/O error of the store (a full disk, say) until a tick's samples are written again; values are served from memory meanwhile",
            self.write_failing.clone(),
        );
        telemetry.register(
            "store_reopens",
            "Times the store closed and reopened its database after an I/O error (at most every 5 s until it writes again), by outcome",
            self.reopens.clone(),
        );
    }

    pub(super) fn write_failing(&self, failing: bool) {
        self.write_failing.set(i64::from(failing));
    }

    pub(super) fn reopened(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.reopens.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(super) fn size(&self, bytes: u64) {
        self.size_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub(super) fn flushed(&self, now: UnixMillis) {
        self.last_flush_seconds.set(now as f64 / 1000.0);
    }

    pub(super) fn compaction(&self, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.compactions
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.compaction_seconds.observe(took.as_secs_f64());
    }

    pub(super) fn recovered(&self, action: Recovery) {
        self.recoveries
            .get_or_create(&RecoveryLabels {
                action: action.label(),
            })
            .inc();
    }

    /// Whether the records are due to be counted at `now`; if so, notes `now` as the time they were.
    pub(super) fn count_due(&self, now: UnixMillis) -> bool {
        let last = self.counted_at.load(Ordering::Relaxed);
        let every = RECORD_COUNT_INTERVAL.as_millis() as i64;
        (last == i64::MIN || now.saturating_sub(last) >= every)
            && self
                .counted_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(super) fn records(&self, tree: &'static str, count: usize) {
        self.records
            .get_or_create(&TreeLabels { tree })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
}
