//! Storage: objects as JSON, the global resourceVersion, per-resource watch
//! history and fan-out to open watches.

use super::{FaultSpec, Hook, RequestRecord, ResourceType};
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{mpsc, watch};

/// Index of a resource in the registry (stable: resources are only added).
pub(crate) type ResId = usize;
/// (resource, namespace or "", name).
pub(crate) type ObjKey = (ResId, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write, as kept in the history and sent to open watches. `old` is the
/// previous state (selector transitions need it); `new` is the object after
/// the write (for a delete: the last state, carrying the delete's
/// resourceVersion).
#[derive(Debug)]
pub(crate) struct Change {
    pub rv: u64,
    pub kind: ChangeKind,
    pub old: Option<Value>,
    pub new: Value,
}

/// The watch window of one resource: every change after `start` is kept.
#[derive(Default)]
pub(crate) struct History {
    pub start: u64,
    pub events: VecDeque<Arc<Change>>,
}

pub(crate) struct WatchReg {
    pub res: ResId,
    pub tx: mpsc::UnboundedSender<Arc<Change>>,
}

#[derive(Default)]
pub(crate) struct LogBuf {
    pub lines: Vec<(Timestamp, String)>,
    pub ended: bool,
}

pub(crate) struct State {
    pub rv: u64,
    pub resources: Vec<Arc<ResourceType>>,
    pub objects: BTreeMap<ObjKey, Value>,
    pub histories: HashMap<ResId, History>,
    pub history_limit: usize,
    pub watchers: Vec<WatchReg>,
    pub requests: Vec<RequestRecord>,
    pub faults: Vec<(u64, FaultSpec)>,
    pub next_fault: u64,
    pub logs: HashMap<(String, String, String), LogBuf>,
    pub log_drops: VecDeque<usize>,
    pub create_hooks: Vec<(String, Hook)>,
    pub update_hooks: Vec<(String, Hook)>,
    pub global_pause: watch::Sender<bool>,
    pub close_epoch: watch::Sender<u64>,
    /// Bumped whenever a log or a pod changes, to wake `follow` streams.
    pub log_tick: watch::Sender<u64>,
    rng: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
}

impl Shared {
    pub fn new(state: State) -> Self {
        Self {
            state: Mutex::new(state),
        }
    }

    /// The state; a panic elsewhere while locked does not make it unusable.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `pattern` names `rt`: `plural`, `plural.group` or `*`.
pub(crate) fn names(pattern: &str, rt: &ResourceType) -> bool {
    pattern == "*"
        || pattern == rt.plural
        || (!rt.group.is_empty()
            && pattern
                .strip_prefix(rt.plural.as_str())
                .and_then(|r| r.strip_prefix('.'))
                == Some(rt.group.as_str()))
}

/// Now, RFC 3339 with whole seconds (as metadata timestamps are).
pub(crate) fn now_rfc3339() -> String {
    let now = Timestamp::now();
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

pub(crate) fn meta(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata").and_then(Value::as_object)
}

pub(crate) fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    meta(obj)?.get(field)?.as_str()
}

/// `metadata` as a mutable map, created (or replaced, if not a map) as needed.
pub(crate) fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let map = obj.as_object_mut().expect("just made an object");
    let m = map.entry("metadata").or_insert_with(|| json!({}));
    if !m.is_object() {
        *m = json!({});
    }
    m.as_object_mut().expect("just made an object")
}

pub(crate) fn rv_of(obj: &Value) -> &str {
    meta_str(obj, "resourceVersion").unwrap_or("")
}

pub(crate) fn finalizers_empty(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_none_or(|f| f.is_empty())
}

/// Whether anything outside `metadata` and `status` differs.
pub(crate) fn spec_changed(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| -> Map<String, Value> {
        let mut m = v.as_object().cloned().unwrap_or_default();
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
        m
    };
    strip(old) != strip(new)
}

impl State {
    pub fn new(resources: Vec<ResourceType>) -> Self {
        let seed = Timestamp::now().as_nanosecond() as u64 ^ 0x9e37_79b9_7f4a_7c15;
        Self {
            rv: 1,
            resources: resources.into_iter().map(Arc::new).collect(),
            objects: BTreeMap::new(),
            histories: HashMap::new(),
            history_limit: 1000,
            watchers: Vec::new(),
            requests: Vec::new(),
            faults: Vec::new(),
            next_fault: 1,
            logs: HashMap::new(),
            log_drops: VecDeque::new(),
            create_hooks: Vec::new(),
            update_hooks: Vec::new(),
            global_pause: watch::channel(false).0,
            close_epoch: watch::channel(0).0,
            log_tick: watch::channel(0).0,
            rng: seed,
        }
    }

    /// A resource by `plural` or `plural.group` (the first registered wins
    /// for an unqualified plural served by two groups, e.g. `events`).
    pub fn resolve(&self, name: &str) -> Option<ResId> {
        let exact = self
            .resources
            .iter()
            .position(|r| !r.group.is_empty() && name == format!("{}.{}", r.plural, r.group));
        exact.or_else(|| self.resources.iter().position(|r| r.plural == name))
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResId> {
        self.resources
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn rt(&self, res: ResId) -> Arc<ResourceType> {
        Arc::clone(&self.resources[res])
    }

    fn random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Five characters as the real server appends to a `generateName`.
    pub fn name_suffix(&mut self) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        let mut r = self.random();
        (0..5)
            .map(|_| {
                let c = ALPHABET[(r % ALPHABET.len() as u64) as usize];
                r /= ALPHABET.len() as u64;
                c as char
            })
            .collect()
    }

    pub fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// Sets apiVersion/kind, and the namespace and name of the key.
    pub fn normalize(&self, res: ResId, ns: &str, name: &str, obj: &mut Value) {
        let rt = &self.resources[res];
        let m = meta_mut(obj);
        m.insert("name".into(), json!(name));
        if rt.namespaced {
            m.insert("namespace".into(), json!(ns));
        } else {
            m.remove("namespace");
        }
        if let Some(o) = obj.as_object_mut() {
            o.insert("apiVersion".into(), json!(rt.api_version()));
            o.insert("kind".into(), json!(rt.kind));
        }
    }

    /// Fills what the server sets on create: uid, creationTimestamp,
    /// generation (resources with a status subresource).
    pub fn fill_create(&mut self, res: ResId, obj: &mut Value) {
        let uid = self.uid();
        let status = self.resources[res].status_subresource;
        let m = meta_mut(obj);
        m.entry("uid").or_insert_with(|| json!(uid));
        m.entry("creationTimestamp")
            .or_insert_with(|| json!(now_rfc3339()));
        if status {
            m.entry("generation").or_insert_with(|| json!(1));
        }
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, res: ResId, kind: ChangeKind, old: Option<Value>, new: Value) {
        let change = Arc::new(Change {
            rv: self.rv,
            kind,
            old,
            new,
        });
        let limit = self.history_limit;
        let h = self.histories.entry(res).or_default();
        h.events.push_back(Arc::clone(&change));
        while h.events.len() > limit {
            if let Some(dropped) = h.events.pop_front() {
                h.start = dropped.rv;
            }
        }
        self.watchers
            .retain(|w| w.res != res || w.tx.send(Arc::clone(&change)).is_ok());
        let rt = &self.resources[res];
        if rt.group.is_empty() && rt.plural == "pods" {
            self.log_tick.send_modify(|t| *t += 1);
        }
    }

    /// Stores a new object (ADDED).
    pub fn insert_new(&mut self, key: ObjKey, mut obj: Value) -> Value {
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.insert(key.clone(), obj.clone());
        self.emit(key.0, ChangeKind::Added, None, obj.clone());
        obj
    }

    /// Writes `new` over `old`: nothing happens for a no-op (as the real
    /// server skips writes that change nothing), and an object being deleted
    /// whose last finalizer went away is removed.
    pub fn write_update(&mut self, key: ObjKey, old: &Value, mut new: Value) -> Value {
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv_of(old)));
        if &new == old {
            return new;
        }
        let rv = self.next_rv();
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        let deleting = meta(&new).is_some_and(|m| m.contains_key("deletionTimestamp"));
        if deleting && finalizers_empty(&new) {
            self.objects.remove(&key);
            self.emit(key.0, ChangeKind::Deleted, Some(old.clone()), new.clone());
        } else {
            self.objects.insert(key.clone(), new.clone());
            self.emit(key.0, ChangeKind::Modified, Some(old.clone()), new.clone());
        }
        new
    }

    /// Removes an object now (DELETED), returning its last state.
    pub fn delete_now(&mut self, key: &ObjKey) -> Option<Value> {
        let old = self.objects.remove(key)?;
        let rv = self.next_rv();
        let mut gone = old.clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        self.emit(key.0, ChangeKind::Deleted, Some(old), gone.clone());
        Some(gone)
    }

    /// Deletes as the API does: objects with finalizers get a
    /// deletionTimestamp (once) and stay until the finalizers are gone.
    pub fn delete(&mut self, key: &ObjKey) -> Option<Value> {
        let old = self.objects.get(key)?.clone();
        if finalizers_empty(&old) {
            return self.delete_now(key);
        }
        if meta(&old).is_some_and(|m| m.contains_key("deletionTimestamp")) {
            return Some(old);
        }
        let mut new = old.clone();
        let m = meta_mut(&mut new);
        m.insert("deletionTimestamp".into(), json!(now_rfc3339()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        Some(self.write_update(key.clone(), &old, new))
    }

    /// Objects of a resource, in key order, optionally in one namespace.
    pub fn objects_of<'a>(
        &'a self,
        res: ResId,
        ns: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjKey, &'a Value)> + 'a {
        self.objects
            .range((res, String::new(), String::new())..)
            .take_while(move |(k, _)| k.0 == res)
            .filter(move |(k, _)| ns.is_none_or(|ns| k.1 == ns))
    }

    pub fn history_start(&self, res: ResId) -> u64 {
        self.histories.get(&res).map_or(0, |h| h.start)
    }

    /// Forgets every watch history (as an etcd compaction does).
    pub fn compact(&mut self) {
        let rv = self.rv;
        for h in self.histories.values_mut() {
            h.events.clear();
            h.start = rv;
        }
        for res in 0..self.resources.len() {
            self.histories.entry(res).or_default().start = rv;
        }
    }

    /// Deletes objects all of whose owners are gone (finalizers respected),
    /// until nothing more goes. Returns how many were deleted.
    pub fn collect_garbage(&mut self) -> usize {
        let mut deleted = 0;
        loop {
            let uids: std::collections::HashSet<String> = self
                .objects
                .values()
                .filter_map(|o| meta_str(o, "uid").map(str::to_string))
                .collect();
            let orphans: Vec<ObjKey> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    let owners = meta(o)
                        .and_then(|m| m.get("ownerReferences"))
                        .and_then(Value::as_array);
                    let deleting = meta(o).is_some_and(|m| m.contains_key("deletionTimestamp"));
                    owners.is_some_and(|refs| {
                        !refs.is_empty()
                            && refs.iter().all(|r| {
                                r.get("uid")
                                    .and_then(Value::as_str)
                                    .is_none_or(|u| !uids.contains(u))
                            })
                    }) && !deleting
                })
                .map(|(k, _)| k.clone())
                .collect();
            if orphans.is_empty() {
                return deleted;
            }
            for key in orphans {
                if self.delete(&key).is_some() {
                    deleted += 1;
                }
            }
        }
    }
}
