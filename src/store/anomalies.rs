//! The anomaly history: what `/api/v1/anomalies` lists beyond the anomalies of the current snapshot.
//!
//! The tick publishes, in [`Snapshot::anomalies`], the anomalies active on that tick plus those that ended on it.
//! After each publish the engine hands them to an [`AnomalyWriter`], which writes an anomaly when it starts, when
//! its severity changes and when it ends (an [`AnomalyRecorder`] picks those out), never on every tick. The writes
//! go to an [`AnomalyHistory`]: the store's `anomalies` tree in `serve`, a bounded in-memory log in `demo`, which
//! has no store.
//!
//! In the store, an anomaly is one record keyed by deployment id, start time and kind code, so writing it again
//! (the next change, or the same anomaly after a restart) replaces it: the writes are idempotent across ticks.
//! The history is rebuildable: a record that does not decode is skipped when read and removed by the next
//! retention pass, and an unreadable tree costs the history, never the tick (the writer only logs). What is
//! active comes back from the next ticks; records a restart left open are closed at their last sighting by the
//! first write after the start. Records are kept [`Retention::anomalies`](super::Retention) after they last held.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::codec::{self, CodecError, KEY_LEN};
use super::{Inner, Kind, Store, StoreError};
use crate::domain::anomaly::{Anomaly, AnomalyKind, Severity};
use crate::domain::model::{DeploymentKey, UnixMillis};

/// Most anomalies one query returns (the newest).
pub const MAX_ANOMALIES: usize = 500;

/// Anomalies the in-memory history of `demo` keeps (the oldest go first).
pub const MEMORY_CAPACITY: usize = 2_000;

/// One anomaly's identity: the deployment, the kind and when it started. Everything else may change while it is
/// open.
type Identity = (DeploymentKey, AnomalyKind, UnixMillis);

fn identity(a: &Anomaly) -> Identity {
    (a.key.clone(), a.kind, a.started_at)
}

/// Which anomalies a query wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyQuery {
    /// Only this namespace.
    pub namespace: Option<String>,
    /// Only deployments of this name.
    pub deployment: Option<String>,
    /// Only anomalies that held at or after this time (still open, or ended then or later).
    pub since: Option<UnixMillis>,
    /// At most this many, the newest (by start) first.
    pub limit: usize,
}

impl Default for AnomalyQuery {
    fn default() -> Self {
        AnomalyQuery {
            namespace: None,
            deployment: None,
            since: None,
            limit: MAX_ANOMALIES,
        }
    }
}

impl AnomalyQuery {
    /// Whether the query wants deployment `key` (namespace and name only).
    pub fn wants(&self, key: &DeploymentKey) -> bool {
        self.namespace.as_ref().is_none_or(|n| *n == key.namespace)
            && self.deployment.as_ref().is_none_or(|d| *d == key.name)
    }

    /// Whether the query wants `anomaly`.
    pub fn matches(&self, anomaly: &Anomaly) -> bool {
        self.wants(&anomaly.key)
            && self
                .since
                .is_none_or(|since| anomaly.ended_at.is_none_or(|end| end >= since))
    }

    /// Puts `anomalies` in the order queries answer (newest start first; then deployment and kind, so equal
    /// starts come out the same every time) and keeps the first `limit`.
    pub fn order(&self, anomalies: &mut Vec<Anomaly>) {
        anomalies.sort_by(|a, b| {
            b.started_at
                .cmp(&a.started_at)
                .then_with(|| a.key.cmp(&b.key))
                .then_with(|| a.kind.cmp(&b.kind))
        });
        anomalies.truncate(self.limit);
    }
}

/// The stable code of a kind in keys (never reused: a code a build does not know is a record it skips).
fn kind_code(kind: AnomalyKind) -> u8 {
    match kind {
        AnomalyKind::CpuSpike => 1,
        AnomalyKind::ScalingThrash => 2,
        AnomalyKind::PersistentHighCpu => 3,
        AnomalyKind::PatternDeviation => 4,
        AnomalyKind::Learned => 5,
    }
}

fn kind_of(code: u8) -> Option<AnomalyKind> {
    AnomalyKind::ALL.into_iter().find(|k| kind_code(*k) == code)
}

fn severity_code(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 1,
        Severity::Warning => 2,
        Severity::Critical => 3,
    }
}

fn severity_of(code: u8) -> Option<Severity> {
    Severity::ALL
        .into_iter()
        .find(|s| severity_code(*s) == code)
}

/// Length of an anomaly key: the usual deployment id and time (the start), then the kind code.
const ANOMALY_KEY_LEN: usize = KEY_LEN + 1;

fn anomaly_key(id: u32, started_at: UnixMillis, kind: AnomalyKind) -> [u8; ANOMALY_KEY_LEN] {
    let mut k = [0u8; ANOMALY_KEY_LEN];
    k[..KEY_LEN].copy_from_slice(&codec::key(id, started_at));
    k[KEY_LEN] = kind_code(kind);
    k
}

/// Deployment id, start and kind of an anomaly key.
fn split_anomaly_key(k: &[u8]) -> Result<(u32, UnixMillis, AnomalyKind), CodecError> {
    if k.len() != ANOMALY_KEY_LEN {
        return Err(CodecError::Invalid("anomaly key length"));
    }
    let (id, at) = codec::split_key(&k[..KEY_LEN]).ok_or(CodecError::Invalid("anomaly key"))?;
    let kind = kind_of(k[KEY_LEN]).ok_or(CodecError::Invalid("anomaly kind code"))?;
    Ok((id, at, kind))
}

/// Fixed part of an anomaly value, version byte included.
const FIXED_LEN: usize = 1 + 1 + 1 + 8 * 5 + 2;

/// Encodes what of `anomaly` is not in its key (see the table in [`codec`]).
fn encode(anomaly: &Anomaly) -> Vec<u8> {
    let mut summary = anomaly.summary.as_str();
    if summary.len() > usize::from(u16::MAX) {
        let mut end = usize::from(u16::MAX);
        while !summary.is_char_boundary(end) {
            end -= 1;
        }
        summary = &summary[..end];
    }
    let mut out = Vec::with_capacity(FIXED_LEN + summary.len());
    out.push(codec::VERSION);
    out.push(severity_code(anomaly.severity));
    out.push(u8::from(anomaly.ended_at.is_some()));
    out.extend_from_slice(&anomaly.last_seen_at.to_le_bytes());
    out.extend_from_slice(&anomaly.ended_at.unwrap_or(0).to_le_bytes());
    for v in [anomaly.expected, anomaly.actual, anomaly.score] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&(summary.len() as u16).to_le_bytes());
    out.extend_from_slice(summary.as_bytes());
    out
}

/// Decodes [`encode`] for the anomaly of `key` of `kind` that started at `started_at`.
fn decode(
    key: DeploymentKey,
    kind: AnomalyKind,
    started_at: UnixMillis,
    bytes: &[u8],
) -> Result<Anomaly, CodecError> {
    match bytes.first() {
        None => return Err(CodecError::Empty),
        Some(&codec::VERSION) => {}
        Some(&v) => return Err(CodecError::Version(v)),
    }
    if bytes.len() < FIXED_LEN {
        return Err(CodecError::Length {
            expected: FIXED_LEN,
            found: bytes.len(),
        });
    }
    let i64_at = |at: usize| i64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let f64_at = |at: usize| f64::from_le_bytes(bytes[at..at + 8].try_into().unwrap_or([0; 8]));
    let severity = severity_of(bytes[1]).ok_or(CodecError::Invalid("severity code"))?;
    let ended = match bytes[2] {
        0 => None,
        1 => Some(i64_at(11)),
        _ => return Err(CodecError::Invalid("ended flag")),
    };
    let len = usize::from(u16::from_le_bytes([bytes[43], bytes[44]]));
    if bytes.len() != FIXED_LEN + len {
        return Err(CodecError::Length {
            expected: FIXED_LEN + len,
            found: bytes.len(),
        });
    }
    let summary = std::str::from_utf8(&bytes[FIXED_LEN..])
        .map_err(|_| CodecError::Invalid("summary (not UTF-8)"))?;
    Ok(Anomaly {
        key,
        kind,
        severity,
        started_at,
        last_seen_at: i64_at(3),
        ended_at: ended,
        expected: f64_at(19),
        actual: f64_at(27),
        score: f64_at(35),
        summary: summary.to_string(),
    })
}

impl Inner {
    /// Writes `anomalies`, replacing the records of the same deployment, kind and start, as one batch.
    fn put_anomalies(&self, anomalies: &[Anomaly]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        {
            let mut ids = self.lock_ids();
            for a in anomalies {
                let id = self.id_locked(&mut ids, &a.key)?;
                batch.insert(&anomaly_key(id, a.started_at, a.kind)[..], encode(a));
            }
        }
        self.tree(Kind::Anomalies)
            .apply_batch(batch)
            .map_err(|e| self.sled(e))
    }

    /// Every decodable anomaly record of the deployments `wanted` accepts, with its key; undecodable ones are
    /// counted, not returned.
    fn anomaly_records(
        &self,
        wanted: impl Fn(&DeploymentKey) -> bool,
    ) -> Result<(Vec<(sled::IVec, Anomaly)>, usize), StoreError> {
        let keys: HashMap<u32, DeploymentKey> = self
            .lock_ids()
            .by_key
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(k, id)| (*id, k.clone()))
            .collect();
        let tree = self.tree(Kind::Anomalies);
        let (mut out, mut corrupt) = (Vec::new(), 0);
        let mut ids: Vec<&u32> = keys.keys().collect();
        ids.sort();
        for id in ids {
            for entry in tree.scan_prefix(id.to_be_bytes()) {
                let (k, v) = entry.map_err(|e| self.sled(e))?;
                let decoded = split_anomaly_key(&k)
                    .and_then(|(_, at, kind)| decode(keys[id].clone(), kind, at, &v));
                match decoded {
                    Ok(a) => out.push((k, a)),
                    Err(_) => corrupt += 1,
                }
            }
        }
        Ok((out, corrupt))
    }

    fn anomalies(&self, query: &AnomalyQuery) -> Result<Vec<Anomaly>, StoreError> {
        let (records, corrupt) = self.anomaly_records(|k| query.wants(k))?;
        if corrupt > 0 {
            tracing::warn!(
                path = %self.path.display(), corrupt,
                "store: skipped anomaly records that do not decode; the next retention pass removes them"
            );
        }
        let mut out: Vec<Anomaly> = records
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| query.matches(a))
            .collect();
        query.order(&mut out);
        Ok(out)
    }

    /// Closes the open records that are not in `active`, at their last sighting: what a restart (or a
    /// deployment that went away) left open.
    fn close_open_anomalies(&self, active: &HashSet<Identity>) -> Result<usize, StoreError> {
        let (records, _) = self.anomaly_records(|_| true)?;
        let mut batch = sled::Batch::default();
        let mut closed = 0;
        for (k, mut a) in records {
            if a.ended_at.is_none() && !active.contains(&identity(&a)) {
                a.ended_at = Some(a.last_seen_at);
                batch.insert(k, encode(&a));
                closed += 1;
            }
        }
        if closed > 0 {
            self.tree(Kind::Anomalies)
                .apply_batch(batch)
                .map_err(|e| self.sled(e))?;
        }
        Ok(closed)
    }

    /// Removes the anomaly records that last held before `cutoff` (their end, or for an open one its last
    /// sighting as written), and those that do not decode. Returns how many.
    pub(super) fn expire_anomalies(&self, cutoff: UnixMillis) -> Result<usize, StoreError> {
        let tree = self.tree(Kind::Anomalies);
        let mut batch = sled::Batch::default();
        let mut removed = 0;
        for entry in tree.iter() {
            let (k, v) = entry.map_err(|e| self.sled(e))?;
            // The deployment does not matter here, so any key decodes the value.
            let held = split_anomaly_key(&k)
                .and_then(|(_, at, kind)| decode(DeploymentKey::new("", ""), kind, at, &v))
                .map(|a| a.ended_at.unwrap_or(a.last_seen_at))
                .ok();
            // An undecodable record goes too: the history is rebuildable.
            if held.is_none_or(|at| at < cutoff) {
                batch.remove(k);
                removed += 1;
            }
        }
        if removed > 0 {
            tree.apply_batch(batch).map_err(|e| self.sled(e))?;
        }
        Ok(removed)
    }
}

impl Store {
    /// Writes anomalies (each replacing the record of the same deployment, kind and start) as one batch.
    pub async fn put_anomalies(&self, anomalies: Vec<Anomaly>) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.put_anomalies(&anomalies))
            .await
    }

    /// The stored anomalies `query` wants, newest start first, at most `query.limit`. Records that do not
    /// decode are skipped (and logged).
    pub async fn anomalies(&self, query: &AnomalyQuery) -> Result<Vec<Anomaly>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| inner.anomalies(&query)).await
    }

    /// Closes, at their last sighting, the stored open anomalies not in `active` (identified by deployment,
    /// kind and start); returns how many.
    pub async fn close_open_anomalies(&self, active: &[Anomaly]) -> Result<usize, StoreError> {
        let active: HashSet<Identity> = active.iter().map(identity).collect();
        self.blocking(move |inner| inner.close_open_anomalies(&active))
            .await
    }
}

/// A bounded in-memory anomaly log, for commands without a store (`demo`): the newest [`MEMORY_CAPACITY`]
/// anomalies by start.
#[derive(Debug)]
pub struct MemoryLog {
    records: BTreeMap<(UnixMillis, DeploymentKey, AnomalyKind), Anomaly>,
    capacity: usize,
}

impl MemoryLog {
    /// An empty log that keeps at most `capacity` anomalies.
    pub fn new(capacity: usize) -> Self {
        MemoryLog {
            records: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Writes `anomalies`, replacing those of the same identity, then drops the oldest beyond the capacity.
    pub fn put(&mut self, anomalies: &[Anomaly]) {
        for a in anomalies {
            self.records
                .insert((a.started_at, a.key.clone(), a.kind), a.clone());
        }
        while self.records.len() > self.capacity {
            self.records.pop_first();
        }
    }

    /// Closes the open anomalies not in `active` at their last sighting.
    fn close_open(&mut self, active: &HashSet<Identity>) {
        for a in self.records.values_mut() {
            if a.ended_at.is_none() && !active.contains(&identity(a)) {
                a.ended_at = Some(a.last_seen_at);
            }
        }
    }

    /// What `query` wants, in its order.
    pub fn query(&self, query: &AnomalyQuery) -> Vec<Anomaly> {
        let mut out: Vec<Anomaly> = self
            .records
            .values()
            .rev()
            .filter(|a| query.matches(a))
            .take(query.limit)
            .cloned()
            .collect();
        query.order(&mut out);
        out
    }

    /// Anomalies held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

/// Where anomalies are kept: the store (`serve`) or a bounded in-memory log (`demo`). Cheap to clone.
#[derive(Clone, Debug)]
pub enum AnomalyHistory {
    /// The store's `anomalies` tree.
    Stored(Store),
    /// A bounded log in memory.
    Memory(Arc<Mutex<MemoryLog>>),
}

impl AnomalyHistory {
    /// An in-memory history of [`MEMORY_CAPACITY`] anomalies.
    pub fn in_memory() -> Self {
        AnomalyHistory::Memory(Arc::new(Mutex::new(MemoryLog::new(MEMORY_CAPACITY))))
    }

    /// `store` or `memory`, for the API.
    pub fn kind(&self) -> &'static str {
        match self {
            AnomalyHistory::Stored(_) => "store",
            AnomalyHistory::Memory(_) => "memory",
        }
    }

    fn memory(log: &Mutex<MemoryLog>) -> std::sync::MutexGuard<'_, MemoryLog> {
        log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The anomalies `query` wants, newest start first.
    pub async fn query(&self, query: &AnomalyQuery) -> Result<Vec<Anomaly>, StoreError> {
        match self {
            AnomalyHistory::Stored(store) => store.anomalies(query).await,
            // The guard is dropped before returning: no lock across an await.
            AnomalyHistory::Memory(log) => Ok(Self::memory(log).query(query)),
        }
    }
}

/// Picks, tick by tick, the anomalies worth writing: new ones, those whose severity changed, those that ended,
/// and those that vanished from the snapshot without an end (closed at their last sighting). It remembers the
/// open ones it has written.
#[derive(Debug, Default)]
pub struct AnomalyRecorder {
    open: HashMap<Identity, Anomaly>,
}

impl AnomalyRecorder {
    /// The writes for one published snapshot's anomalies.
    pub fn changes(&mut self, anomalies: &[Anomaly]) -> Vec<Anomaly> {
        let mut writes = Vec::new();
        let mut seen = HashSet::new();
        for a in anomalies {
            let id = identity(a);
            seen.insert(id.clone());
            let changed = self
                .open
                .get(&id)
                .is_none_or(|written| written.severity != a.severity);
            if !a.is_active() {
                self.open.remove(&id);
                writes.push(a.clone());
                continue;
            }
            if changed {
                writes.push(a.clone());
            }
            // Kept up to date, so one that vanishes is closed at its real last sighting.
            self.open.insert(id, a.clone());
        }
        let vanished: Vec<Identity> = self
            .open
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in vanished {
            if let Some(mut a) = self.open.remove(&id) {
                a.ended_at = Some(a.last_seen_at);
                writes.push(a);
            }
        }
        writes
    }
}

/// Writes each published snapshot's anomaly changes to the history, after the publish and off the tick: the
/// in-memory log at once (a short lock), the store on a task, each write after the one before so a start never
/// lands after its end. Failures are logged: the history is rebuildable and never holds up a tick.
#[derive(Debug)]
pub struct AnomalyWriter {
    history: AnomalyHistory,
    recorder: AnomalyRecorder,
    /// Whether the first snapshot since the start is still to come (the one that closes what a restart left
    /// open).
    first: bool,
    pending: Option<JoinHandle<()>>,
}

impl AnomalyWriter {
    /// A writer into `history`.
    pub fn new(history: AnomalyHistory) -> Self {
        AnomalyWriter {
            history,
            recorder: AnomalyRecorder::default(),
            first: true,
            pending: None,
        }
    }

    /// The history it writes to.
    pub fn history(&self) -> &AnomalyHistory {
        &self.history
    }

    /// Takes one published snapshot's anomalies. Never waits; needs a tokio runtime for a stored history.
    pub fn observe(&mut self, anomalies: &[Anomaly]) {
        let first = std::mem::take(&mut self.first);
        let writes = self.recorder.changes(anomalies);
        if writes.is_empty() && !first {
            return;
        }
        let active: Vec<Anomaly> = anomalies
            .iter()
            .filter(|a| a.is_active())
            .cloned()
            .collect();
        match &self.history {
            AnomalyHistory::Memory(log) => {
                let mut log = AnomalyHistory::memory(log);
                if first {
                    log.close_open(&active.iter().map(identity).collect());
                }
                log.put(&writes);
            }
            AnomalyHistory::Stored(store) => {
                let store = store.clone();
                let previous = self.pending.take();
                self.pending = Some(tokio::spawn(async move {
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    if first {
                        match store.close_open_anomalies(&active).await {
                            Ok(0) => {}
                            Ok(closed) => tracing::info!(
                                closed,
                                "anomaly history: closed the records the last run left open"
                            ),
                            Err(error) => {
                                tracing::warn!(%error, "anomaly history: closing what the last run left open")
                            }
                        }
                    }
                    if !writes.is_empty()
                        && let Err(error) = store.put_anomalies(writes).await
                    {
                        tracing::warn!(%error, "anomaly history: write failed; the next change writes again");
                    }
                }));
            }
        }
    }

    /// Waits for the writes handed over so far (tests, shutdown).
    pub async fn flush(&mut self) {
        if let Some(pending) = self.pending.take() {
            let _ = pending.await;
        }
    }
}

#[cfg(test)]
mod tests;
