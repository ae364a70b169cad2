//! The object store: one map of all objects, one global `resourceVersion` counter (like etcd's
//! revision), and the watch fan-out — a bounded history of recent changes (to serve watches
//! that start from an older `resourceVersion`) plus a `tokio::sync::broadcast` channel for
//! live changes. Every mutation happens under the cluster mutex, so history and broadcast
//! are always in order and a watcher that snapshots history and subscribes under the same
//! lock can miss nothing.

use super::resources::{ResId, res};
use super::util::meta_str;
use serde_json::{Value, json};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tokio::sync::broadcast;

/// How many changes are kept for watches that resume from an older `resourceVersion`.
/// Older ones are "compacted": a watch from before them gets 410 Gone.
pub const HISTORY: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Added,
    Modified,
    Deleted,
}

impl Change {
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "ADDED",
            Change::Modified => "MODIFIED",
            Change::Deleted => "DELETED",
        }
    }
}

#[derive(Debug)]
pub struct WatchEvent {
    pub rv: u64,
    pub res: ResId,
    pub ns: String,
    pub change: Change,
    /// The object after the change (for DELETED: as it was, with the deletion's RV).
    pub object: Value,
    /// The object before a MODIFIED (so a selector watch can turn it into ADDED/DELETED).
    pub old: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub res: ResId,
    pub ns: String,
    pub name: String,
}

pub struct Store {
    objects: BTreeMap<Key, Value>,
    rv: u64,
    history: VecDeque<Arc<WatchEvent>>,
    /// Highest RV dropped from the history.
    compacted: u64,
    tx: broadcast::Sender<Arc<WatchEvent>>,
}

/// Adds `kind`/`apiVersion` (objects are stored with them; list items drop them).
pub fn with_type(id: ResId, mut obj: Value) -> Value {
    let r = res(id);
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(r.api_version()));
        m.insert("kind".into(), json!(r.kind));
    }
    obj
}

impl Store {
    pub fn new() -> Store {
        let (tx, _) = broadcast::channel(4096);
        Store { objects: BTreeMap::new(), rv: 1, history: VecDeque::new(), compacted: 0, tx }
    }

    pub fn rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    /// Forget the whole history (as after an etcd compaction).
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    pub fn get(&self, id: ResId, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&Key { res: id, ns: ns.into(), name: name.into() })
    }

    /// Objects of a type, in one namespace or all, ordered by namespace then name.
    pub fn list<'a>(&'a self, id: ResId, ns: Option<&'a str>) -> impl Iterator<Item = &'a Value> + 'a {
        let start = Key { res: id, ns: ns.unwrap_or("").to_string(), name: String::new() };
        self.objects.range(start..).take_while(move |(k, _)| k.res == id && ns.is_none_or(|n| k.ns == n)).map(|(_, v)| v)
    }

    /// Like [`Store::list`] but starting after `after` (`ns`, `name`) — for `continue`.
    pub fn list_after<'a>(&'a self, id: ResId, ns: Option<&'a str>, after: (String, String)) -> impl Iterator<Item = &'a Value> + 'a {
        let start = Key { res: id, ns: after.0, name: after.1 };
        self.objects
            .range((std::ops::Bound::Excluded(start), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.res == id && ns.is_none_or(|n| k.ns == n))
            .map(|(_, v)| v)
    }

    /// Every object of every type (garbage collection, uid index).
    pub fn all(&self) -> impl Iterator<Item = (&Key, &Value)> {
        self.objects.iter()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.tx.subscribe()
    }

    /// History events with `rv > since`, oldest first.
    pub fn history_since(&self, since: u64) -> impl Iterator<Item = &Arc<WatchEvent>> {
        let start = self.history.partition_point(|e| e.rv <= since);
        self.history.range(start..)
    }

    fn record(&mut self, ev: WatchEvent) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.tx.send(ev);
    }

    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores a new object (metadata already filled in except `resourceVersion`).
    pub fn insert(&mut self, id: ResId, mut obj: Value) -> Value {
        let rv = self.bump();
        obj = with_type(id, obj);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = Key { res: id, ns: meta_str(&obj, "namespace").into(), name: meta_str(&obj, "name").into() };
        self.objects.insert(key.clone(), obj.clone());
        self.record(WatchEvent { rv, res: id, ns: key.ns, change: Change::Added, object: obj.clone(), old: None });
        obj
    }

    /// Replaces an existing object (identity from its metadata). Returns the stored object.
    /// A no-op write (identical content) does not bump the RV, like the API server.
    pub fn update(&mut self, id: ResId, mut obj: Value) -> Value {
        obj = with_type(id, obj);
        let key = Key { res: id, ns: meta_str(&obj, "namespace").into(), name: meta_str(&obj, "name").into() };
        let old = self.objects.get(&key).cloned();
        if let Some(o) = &old {
            let mut probe = obj.clone();
            probe["metadata"]["resourceVersion"] = o["metadata"]["resourceVersion"].clone();
            if &probe == o {
                return o.clone();
            }
        }
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), obj.clone());
        let change = if old.is_some() { Change::Modified } else { Change::Added };
        self.record(WatchEvent { rv, res: id, ns: key.ns, change, object: obj.clone(), old });
        obj
    }

    pub fn remove(&mut self, id: ResId, ns: &str, name: &str) -> Option<Value> {
        let key = Key { res: id, ns: ns.into(), name: name.into() };
        let mut obj = self.objects.remove(&key)?;
        let rv = self.bump();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.record(WatchEvent { rv, res: id, ns: key.ns, change: Change::Deleted, object: obj.clone(), old: None });
        Some(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::resources::{CRONJOBS, PODS};

    fn pod(ns: &str, name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": ns}, "spec": {}})
    }

    #[test]
    fn rv_history_and_ordering() {
        let mut s = Store::new();
        let a = s.insert(PODS, pod("b", "x"));
        s.insert(PODS, pod("a", "y"));
        s.insert(PODS, pod("a", "x"));
        s.insert(CRONJOBS, pod("a", "c"));
        assert_eq!(a["kind"], "Pod");
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        let names: Vec<String> = s.list(PODS, None).map(|p| format!("{}/{}", meta_str(p, "namespace"), meta_str(p, "name"))).collect();
        assert_eq!(names, ["a/x", "a/y", "b/x"]);
        assert_eq!(s.list(PODS, Some("a")).count(), 2);
        assert_eq!(s.list_after(PODS, None, ("a".into(), "x".into())).count(), 2);

        // Identical update: no new RV.
        let same = s.update(PODS, a.clone());
        assert_eq!(same["metadata"]["resourceVersion"], "2");
        let mut changed = a.clone();
        changed["spec"]["x"] = json!(1);
        let c = s.update(PODS, changed);
        assert_eq!(c["metadata"]["resourceVersion"], "6");
        let d = s.remove(PODS, "b", "x").unwrap();
        assert_eq!(d["metadata"]["resourceVersion"], "7");
        let since: Vec<(u64, Change)> = s.history_since(5).map(|e| (e.rv, e.change)).collect();
        assert_eq!(since, [(6, Change::Modified), (7, Change::Deleted)]);
        s.compact();
        assert_eq!(s.compacted(), 7);
        assert_eq!(s.history_since(0).count(), 0);
    }
}
