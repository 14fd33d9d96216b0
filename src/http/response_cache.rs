//! Encoded metric responses, memoized per snapshot. The HPA (and the aggregator's probes) ask the same few
//! questions every 15 s; between snapshots the answer only changes when a value ages past the fail-safe limit, so
//! an entry is valid for one snapshot and only until its oldest input would fall back to raw. Errors are never
//! cached. The lock is a std mutex held only to copy a `Bytes` handle, never across `.await`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;

use crate::domain::model::{Snapshot, UnixMillis};

/// Entries beyond this are not added until the next snapshot clears the cache (bounds memory under odd queries).
const MAX_ENTRIES: usize = 4096;

#[derive(Default)]
struct Entries {
    /// The snapshot the entries belong to. Holding it (not just its address) keeps the address from being reused
    /// by a later snapshot while entries refer to it.
    snapshot: Option<Arc<Snapshot>>,
    map: HashMap<String, (Bytes, UnixMillis)>,
}

/// The cache shared by the metric handlers.
#[derive(Default)]
pub struct ResponseCache {
    entries: Mutex<Entries>,
}

fn same(held: &Option<Arc<Snapshot>>, snapshot: &Arc<Snapshot>) -> bool {
    held.as_ref().is_some_and(|h| Arc::ptr_eq(h, snapshot))
}

impl ResponseCache {
    /// The cached body for `key`, if it was computed from this snapshot and is still valid at `now`.
    pub fn get(
        &self,
        snapshot: Option<&Arc<Snapshot>>,
        key: &str,
        now: UnixMillis,
    ) -> Option<Bytes> {
        let snapshot = snapshot?;
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !same(&entries.snapshot, snapshot) {
            return None;
        }
        entries
            .map
            .get(key)
            .filter(|(_, until)| now <= *until)
            .map(|(body, _)| body.clone())
    }

    /// Stores a body computed from `snapshot`, valid until `until`.
    pub fn put(&self, snapshot: &Arc<Snapshot>, key: String, body: Bytes, until: UnixMillis) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !same(&entries.snapshot, snapshot) {
            entries.snapshot = Some(snapshot.clone());
            entries.map.clear();
        }
        if entries.map.len() < MAX_ENTRIES {
            entries.map.insert(key, (body, until));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_belong_to_one_snapshot_and_expire() {
        let cache = ResponseCache::default();
        let a = Arc::new(Snapshot::default());
        let b = Arc::new(Snapshot::default());
        cache.put(&a, "k".into(), Bytes::from_static(b"x"), 100);
        assert_eq!(cache.get(Some(&a), "k", 100).as_deref(), Some(&b"x"[..]));
        assert_eq!(cache.get(Some(&a), "k", 101), None, "expired");
        assert_eq!(cache.get(Some(&b), "k", 50), None, "other snapshot");
        assert_eq!(cache.get(None, "k", 50), None);
        cache.put(&b, "j".into(), Bytes::from_static(b"y"), 100);
        assert_eq!(
            cache.get(Some(&a), "k", 50),
            None,
            "a new snapshot clears the old entries"
        );
    }
}
