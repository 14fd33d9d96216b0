//! The adapter's caches: for each watched kind, the converted entry (see [`super::convert`]) of every object the
//! watch has seen, keyed by namespace and name.
//!
//! Unlike kube-runtime's reflector store, which keeps whole objects, a cache keeps only what the snapshot
//! reads: a Pod's entry is a few hundred bytes where a deserialized k8s-openapi Pod is ~33 KB. The event
//! handling is the reflector's: objects of a (re-)list are buffered from `Init` to `InitDone` and then replace
//! the cache at once, so readers see either the previous complete state or the new one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::watcher::Event;

/// `(namespace, name)`; cluster-scoped objects have an empty namespace.
pub type Key = (String, String);

/// A shared, read-mostly map of converted entries.
#[derive(Debug)]
pub struct Cache<E> {
    entries: Arc<RwLock<HashMap<Key, Arc<E>>>>,
}

impl<E> Clone for Cache<E> {
    fn clone(&self) -> Self {
        Cache {
            entries: self.entries.clone(),
        }
    }
}

impl<E> Default for Cache<E> {
    fn default() -> Self {
        Cache {
            entries: Arc::default(),
        }
    }
}

impl<E> Cache<E> {
    /// Every entry with its key, in no particular order. The read lock is held only while the `Arc`s are
    /// copied.
    pub fn entries(&self) -> Vec<(Key, Arc<E>)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every entry with its key, sorted by key.
    pub fn sorted(&self) -> Vec<(Key, Arc<E>)> {
        let mut all = self.entries();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, Arc<E>>> {
        self.entries.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Applies watch events of objects of type `K` to a [`Cache`], converting each object with `convert`.
pub struct Writer<K, E> {
    cache: Cache<E>,
    convert: fn(&K) -> E,
    /// Entries of a list in progress (between `Init` and `InitDone`).
    buffer: Option<HashMap<Key, Arc<E>>>,
}

fn key<K: Resource>(object: &K) -> Key {
    let meta = object.meta();
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

impl<K: Resource, E> Writer<K, E> {
    /// A writer into a new cache.
    pub fn new(convert: fn(&K) -> E) -> Self {
        Writer {
            cache: Cache::default(),
            convert,
            buffer: None,
        }
    }

    /// The cache this writer fills.
    pub fn cache(&self) -> Cache<E> {
        self.cache.clone()
    }

    /// Applies one watch event. Returns whether it completed a list (`InitDone`).
    pub fn apply(&mut self, event: &Event<K>) -> bool {
        match event {
            Event::Apply(object) => {
                let entry = Arc::new((self.convert)(object));
                self.cache.write().insert(key(object), entry);
            }
            Event::Delete(object) => {
                self.cache.write().remove(&key(object));
            }
            Event::Init => self.buffer = Some(HashMap::new()),
            Event::InitApply(object) => {
                let entry = Arc::new((self.convert)(object));
                self.buffer
                    .get_or_insert_default()
                    .insert(key(object), entry);
            }
            Event::InitDone => {
                let mut fresh = self.buffer.take().unwrap_or_default();
                fresh.shrink_to_fit();
                let old = std::mem::replace(&mut *self.cache.write(), fresh);
                // Dropped after the lock is released.
                drop(old);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::objects::PartialNode;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, unschedulable: bool) -> PartialNode {
        PartialNode {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(crate::k8s::objects::NodeSpecFields {
                unschedulable: Some(unschedulable),
            }),
            status: None,
        }
    }

    fn names(cache: &Cache<(String, bool)>) -> Vec<(String, bool)> {
        cache
            .sorted()
            .into_iter()
            .map(|(_, e)| (*e).clone())
            .collect()
    }

    #[test]
    fn lists_replace_the_cache_at_once_and_watch_events_edit_it() {
        let convert = |n: &PartialNode| {
            (
                n.metadata.name.clone().unwrap(),
                n.spec.as_ref().unwrap().unschedulable.unwrap(),
            )
        };
        let mut writer = Writer::new(convert);
        let cache = writer.cache();
        assert!(!writer.apply(&Event::Init));
        writer.apply(&Event::InitApply(node("b", false)));
        writer.apply(&Event::InitApply(node("a", false)));
        assert!(cache.is_empty(), "a list in progress is not visible");
        assert!(writer.apply(&Event::InitDone));
        assert_eq!(names(&cache), [("a".into(), false), ("b".into(), false)]);
        writer.apply(&Event::Apply(node("a", true)));
        writer.apply(&Event::Apply(node("c", false)));
        writer.apply(&Event::Delete(node("b", false)));
        assert_eq!(names(&cache), [("a".into(), true), ("c".into(), false)]);
        // A re-list (after 410 Gone) keeps serving the old state until it completes, then replaces it.
        writer.apply(&Event::Init);
        writer.apply(&Event::InitApply(node("d", false)));
        assert_eq!(cache.len(), 2);
        writer.apply(&Event::InitDone);
        assert_eq!(names(&cache), [("d".into(), false)]);
    }
}
