//! An in-memory Kubernetes API server behind a real [`kube::Client`]; see the
//! crate documentation for the semantics.

mod logs;
mod net;
mod patch;
mod select;
mod serve;
mod status;
mod store;
mod stream;
mod write;

pub use net::HttpListener;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use store::{meta_mut, meta_str, ObjKey, ResId, Shared, State};
use tokio::sync::watch;

/// A resource the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group, `""` for core.
    pub group: String,
    pub version: String,
    /// Lower-case plural, as in URLs.
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
    /// Whether `/status` exists (and writes to the main resource keep the
    /// stored status).
    pub status_subresource: bool,
    /// Built into Kubernetes (strategic merge patch accepted) rather than a
    /// custom resource.
    pub builtin: bool,
}

impl ResourceType {
    /// A namespaced custom resource without a status subresource.
    pub fn new(group: &str, version: &str, plural: &str, kind: &str) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            plural: plural.into(),
            kind: kind.into(),
            namespaced: true,
            status_subresource: false,
            builtin: false,
        }
    }

    #[must_use]
    pub fn cluster_scoped(mut self) -> Self {
        self.namespaced = false;
        self
    }

    #[must_use]
    pub fn with_status(mut self) -> Self {
        self.status_subresource = true;
        self
    }

    #[must_use]
    fn builtin(mut self) -> Self {
        self.builtin = true;
        self
    }

    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural` or `plural.group`, as in error messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

fn default_resources() -> Vec<ResourceType> {
    let core = |plural, kind| ResourceType::new("", "v1", plural, kind).builtin();
    vec![
        core("pods", "Pod").with_status(),
        core("secrets", "Secret"),
        core("configmaps", "ConfigMap"),
        core("events", "Event"),
        ResourceType::new("batch", "v1", "jobs", "Job")
            .builtin()
            .with_status(),
        ResourceType::new("coordination.k8s.io", "v1", "leases", "Lease").builtin(),
        ResourceType::new("events.k8s.io", "v1", "events", "Event").builtin(),
        ResourceType::new(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
            "MutatingWebhookConfiguration",
        )
        .builtin()
        .cluster_scoped(),
        ResourceType::new(
            "workers.runyard.dev",
            "v1alpha1",
            "workerpools",
            "WorkerPool",
        )
        .with_status(),
        ResourceType::new("workers.runyard.dev", "v1alpha1", "workers", "Worker").with_status(),
    ]
}

/// The kind of a request, as recorded and as faults match it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    List,
    Watch,
    Get,
    Create,
    Update,
    Patch,
    Delete,
    /// Answered with 405: not implemented.
    DeleteCollection,
}

/// One request the server received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub verb: Verb,
    pub group: String,
    /// The plural from the URL (also for resources the server does not know).
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// The `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// The content type of a patch (`application/merge-patch+json`, ...).
    pub content_type: Option<String>,
    pub user: String,
    /// Whether the client asked for `PartialObjectMetadata`.
    pub metadata_only: bool,
}

impl RequestRecord {
    /// Whether `resource` (`plural`, `plural.group`, optionally with
    /// `/subresource`; `*` for any) names this request's target exactly.
    pub fn is(&self, resource: &str) -> bool {
        let (res, sub) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (resource, None),
        };
        self.subresource.as_deref() == sub
            && (res == "*"
                || res == self.resource
                || res == format!("{}.{}", self.resource, self.group))
    }
}

/// What a fault does to a matching request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Answer this HTTP error with a `Status` body (409, 429, 500, 504, ...).
    Status(u16),
    /// Never answer: the response future stays pending until the client
    /// drops it.
    Hang,
    /// Answer normally after a delay (tokio time).
    Delay(Duration),
}

/// A fault to inject: matches a verb and optionally a resource, subresource
/// and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    pub verb: Verb,
    /// `plural` or `plural.group`; `None` for any.
    pub resource: Option<String>,
    /// `None` matches any subresource (and none).
    pub subresource: Option<String>,
    pub name: Option<String>,
    /// The requesting user (`client_as`); `None` for any.
    pub user: Option<String>,
    pub action: FaultAction,
    /// For writes: the write lands, but the caller sees the error or hang.
    pub applied: bool,
    /// How many requests it affects; `None` until removed.
    pub times: Option<usize>,
}

impl FaultSpec {
    pub fn new(verb: Verb, action: FaultAction) -> Self {
        Self {
            verb,
            resource: None,
            subresource: None,
            name: None,
            user: None,
            action,
            applied: false,
            times: None,
        }
    }

    /// Answers `code`.
    pub fn status(verb: Verb, code: u16) -> Self {
        Self::new(verb, FaultAction::Status(code))
    }

    /// Never answers.
    pub fn hang(verb: Verb) -> Self {
        Self::new(verb, FaultAction::Hang)
    }

    /// Answers late.
    pub fn delay(verb: Verb, by: Duration) -> Self {
        Self::new(verb, FaultAction::Delay(by))
    }

    /// Only this resource (`pods`, `jobs.batch`, or `workers/status`).
    #[must_use]
    pub fn resource(mut self, resource: &str) -> Self {
        match resource.split_once('/') {
            Some((r, s)) => {
                self.resource = Some(r.into());
                self.subresource = Some(s.into());
            }
            None => self.resource = Some(resource.into()),
        }
        self
    }

    #[must_use]
    pub fn subresource(mut self, sub: &str) -> Self {
        self.subresource = Some(sub.into());
        self
    }

    #[must_use]
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only requests by this user (see `FakeApiServer::client_as`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The write is applied before the caller sees the fault.
    #[must_use]
    pub fn applied(mut self) -> Self {
        self.applied = true;
        self
    }

    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.times = Some(n);
        self
    }

    fn matches(&self, r: &RequestRecord) -> bool {
        self.verb == r.verb
            && self
                .resource
                .as_deref()
                .is_none_or(|res| res == r.resource || res == format!("{}.{}", r.resource, r.group))
            && self
                .subresource
                .as_deref()
                .is_none_or(|s| r.subresource.as_deref() == Some(s))
            && self
                .name
                .as_deref()
                .is_none_or(|n| r.name.as_deref() == Some(n))
            && self.user.as_deref().is_none_or(|u| r.user == u)
    }
}

/// A registered fault, to remove it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultId(u64);

/// What an admission hook learns about the request.
#[derive(Clone, Debug)]
pub struct RequestInfo {
    pub verb: Verb,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    /// None on a create with `generateName` (the name is chosen after
    /// admission, as in the real server).
    pub name: Option<String>,
    pub user: String,
    pub dry_run: bool,
    /// The stored object, on updates.
    pub old_object: Option<Value>,
}

/// An admission hook: mutate the object, or deny with (HTTP code, message).
pub type Hook = Arc<dyn Fn(&mut Value, &RequestInfo) -> Result<(), (u16, String)> + Send + Sync>;

/// Errors of the test-side API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown resource {0:?} (register it first)")]
    UnknownResource(String),
    #[error("{resource} {namespace}/{name} not found")]
    NotFound {
        resource: String,
        namespace: String,
        name: String,
    },
    #[error("invalid object: {0}")]
    Invalid(String),
    #[error("(de)serializing an object: {0}")]
    Serde(#[from] serde_json::Error),
}

pub(crate) struct ClientState {
    pub user: String,
    pub paused: watch::Sender<bool>,
}

/// One client identity of the server: its user name, and a watch pause
/// switch of its own (so two controllers can see different snapshots).
#[derive(Clone)]
pub struct ClientHandle {
    shared: Arc<Shared>,
    state: Arc<ClientState>,
}

impl ClientHandle {
    /// A new [`kube::Client`] of this identity (call inside a tokio runtime:
    /// kube spawns a buffer task). Default namespace `default`.
    pub fn client(&self) -> kube::Client {
        let svc = serve::FakeService {
            shared: Arc::clone(&self.shared),
            client: Arc::clone(&self.state),
        };
        kube::Client::new(svc, "default")
    }

    pub fn user(&self) -> &str {
        &self.state.user
    }

    /// Holds back watch events for this identity's watches; they are
    /// delivered, in order, on [`resume_watches`](Self::resume_watches).
    pub fn pause_watches(&self) {
        self.state.paused.send_replace(true);
    }

    pub fn resume_watches(&self) {
        self.state.paused.send_replace(false);
    }
}

/// The fake API server. Cheap to clone (shared state).
#[derive(Clone)]
pub struct FakeApiServer {
    shared: Arc<Shared>,
}

impl Default for FakeApiServer {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeApiServer {
    /// A server with the built-in resources and runyard's CRDs registered.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared::new(State::new(default_resources()))),
        }
    }

    /// Serves another resource (a CRD). Re-registering replaces nothing.
    pub fn register(&self, rt: ResourceType) {
        let mut st = self.shared.lock();
        if st.find(&rt.group, &rt.version, &rt.plural).is_none() {
            st.resources.push(Arc::new(rt));
        }
    }

    pub fn resources(&self) -> Vec<ResourceType> {
        self.shared
            .lock()
            .resources
            .iter()
            .map(|r| (**r).clone())
            .collect()
    }

    // ---- clients ----

    /// A client as user `tester` (call inside a tokio runtime: kube spawns a
    /// buffer task).
    pub fn client(&self) -> kube::Client {
        self.client_as("tester")
    }

    /// A client as `user` (seen by admission hooks and in records).
    pub fn client_as(&self, user: &str) -> kube::Client {
        self.client_handle(user).client()
    }

    /// A client identity with its own watch pause switch.
    pub fn client_handle(&self, user: &str) -> ClientHandle {
        ClientHandle {
            shared: Arc::clone(&self.shared),
            state: Arc::new(ClientState {
                user: user.into(),
                paused: watch::channel(false).0,
            }),
        }
    }

    // ---- watches ----

    /// Holds back every watch's events until [`resume_watches`](Self::resume_watches).
    pub fn pause_watches(&self) {
        self.shared.lock().global_pause.send_replace(true);
    }

    pub fn resume_watches(&self) {
        self.shared.lock().global_pause.send_replace(false);
    }

    /// Ends every open watch stream now (as an API server restart would);
    /// watchers reconnect from their last resourceVersion.
    pub fn close_watches(&self) {
        self.shared.lock().close_epoch.send_modify(|e| *e += 1);
    }

    /// Forgets the watch history (an etcd compaction): a watch or list
    /// continuation from an older resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.shared.lock().compact();
    }

    /// How many changes per resource are kept for watches (default 1000).
    pub fn set_history_limit(&self, n: usize) {
        self.shared.lock().history_limit = n.max(1);
    }

    /// Watch streams still open (a dropped stream is noticed at the next
    /// write to its resource).
    pub fn open_watches(&self) -> usize {
        let mut st = self.shared.lock();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    // ---- requests and faults ----

    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// Requests with this verb to exactly this resource: `pods`,
    /// `jobs.batch`, `workers/status` (a subresource counts only when
    /// named), or `*`.
    pub fn count(&self, verb: Verb, resource: &str) -> usize {
        let st = self.shared.lock();
        st.requests
            .iter()
            .filter(|r| r.verb == verb && r.is(resource))
            .count()
    }

    pub fn reset_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Injects a fault; the first registered matching fault applies.
    pub fn fail(&self, fault: FaultSpec) -> FaultId {
        let mut st = self.shared.lock();
        let id = st.next_fault;
        st.next_fault += 1;
        st.faults.push((id, fault));
        FaultId(id)
    }

    pub fn clear_fault(&self, id: FaultId) {
        self.shared.lock().faults.retain(|(i, _)| *i != id.0);
    }

    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    // ---- admission ----

    /// Runs `hook` on every API create of `resource` (`plural`,
    /// `plural.group` or `*`) before it is stored.
    pub fn on_create<F>(&self, resource: &str, hook: F)
    where
        F: Fn(&mut Value, &RequestInfo) -> Result<(), (u16, String)> + Send + Sync + 'static,
    {
        self.shared
            .lock()
            .create_hooks
            .push((resource.into(), Arc::new(hook)));
    }

    /// Runs `hook` on every API update or patch (also of `/status`: see
    /// [`RequestInfo::subresource`]) before it is stored.
    pub fn on_update<F>(&self, resource: &str, hook: F)
    where
        F: Fn(&mut Value, &RequestInfo) -> Result<(), (u16, String)> + Send + Sync + 'static,
    {
        self.shared
            .lock()
            .update_hooks
            .push((resource.into(), Arc::new(hook)));
    }

    // ---- cluster behaviour ----

    /// Owner-reference garbage collection: deletes (or, with finalizers,
    /// marks deleted) objects none of whose owners exist, repeatedly.
    /// Returns how many objects it deleted or marked.
    pub fn collect_garbage(&self) -> usize {
        self.shared.lock().collect_garbage()
    }

    /// Appends a line to a container's log; returns its timestamp (strictly
    /// after the previous line's).
    pub fn append_log(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        line: &str,
    ) -> k8s_openapi::jiff::Timestamp {
        let mut st = self.shared.lock();
        logs::append(&mut st, (ns.into(), pod.into(), container.into()), line)
    }

    /// Ends a container's log: followers finish after the last line (as when
    /// the container terminates).
    pub fn end_logs(&self, ns: &str, pod: &str, container: &str) {
        logs::end(
            &mut self.shared.lock(),
            (ns.into(), pod.into(), container.into()),
        );
    }

    /// The next `streams` followed log streams fail (a dropped connection)
    /// after `after_lines` lines each.
    pub fn drop_log_streams(&self, streams: usize, after_lines: usize) {
        let mut st = self.shared.lock();
        st.log_drops
            .extend(std::iter::repeat_n(after_lines, streams));
    }

    // ---- direct access ----

    fn key(st: &State, resource: &str, ns: &str, name: &str) -> Result<ObjKey, Error> {
        let res = st
            .resolve(resource)
            .ok_or_else(|| Error::UnknownResource(resource.into()))?;
        let ns = if st.resources[res].namespaced { ns } else { "" };
        Ok((res, ns.into(), name.into()))
    }

    /// Creates or replaces an object as stored (status included, no
    /// admission), emitting ADDED or MODIFIED. A missing namespace is
    /// `default`; a missing name comes from `generateName`.
    pub fn insert(&self, resource: &str, mut obj: Value) -> Result<Value, Error> {
        let mut st = self.shared.lock();
        let res = st
            .resolve(resource)
            .ok_or_else(|| Error::UnknownResource(resource.into()))?;
        let ns = meta_str(&obj, "namespace")
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string();
        let name = match (meta_str(&obj, "name"), meta_str(&obj, "generateName")) {
            (Some(n), _) if !n.is_empty() => n.to_string(),
            (_, Some(g)) if !g.is_empty() => format!("{g}{}", st.name_suffix()),
            _ => {
                return Err(Error::Invalid(
                    "metadata.name or generateName is required".into(),
                ))
            }
        };
        meta_mut(&mut obj).remove("resourceVersion");
        let key = Self::key(&st, resource, &ns, &name)?;
        st.normalize(res, &key.1, &name, &mut obj);
        match st.objects.get(&key).cloned() {
            Some(old) => {
                let om = store::meta(&old).cloned().unwrap_or_default();
                let m = meta_mut(&mut obj);
                for k in ["uid", "creationTimestamp", "generation"] {
                    if let (false, Some(v)) = (m.contains_key(k), om.get(k)) {
                        m.insert(k.into(), v.clone());
                    }
                }
                Ok(st.write_update(key, &old, obj))
            }
            None => {
                st.fill_create(res, &mut obj);
                Ok(st.insert_new(key, obj))
            }
        }
    }

    /// An object (`ns` is ignored for cluster-scoped resources).
    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let st = self.shared.lock();
        let key = Self::key(&st, resource, ns, name).ok()?;
        st.objects.get(&key).cloned()
    }

    /// Changes an object in place (status too; generation follows spec
    /// changes), emitting MODIFIED; removing the last finalizer of an object
    /// being deleted deletes it.
    pub fn modify(
        &self,
        resource: &str,
        ns: &str,
        name: &str,
        f: impl FnOnce(&mut Value),
    ) -> Result<Value, Error> {
        let mut st = self.shared.lock();
        let key = Self::key(&st, resource, ns, name)?;
        let old = st
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                resource: resource.into(),
                namespace: ns.into(),
                name: name.into(),
            })?;
        let mut new = old.clone();
        f(&mut new);
        st.normalize(key.0, &key.1, &key.2, &mut new);
        let generation = |v: &Value| {
            store::meta(v)
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
        };
        if let Some(g) = generation(&old) {
            if store::spec_changed(&old, &new) && generation(&new) == Some(g) {
                meta_mut(&mut new).insert("generation".into(), serde_json::json!(g + 1));
            }
        }
        Ok(st.write_update(key, &old, new))
    }

    /// Removes an object now, finalizers or not, emitting DELETED.
    pub fn remove(&self, resource: &str, ns: &str, name: &str) -> Option<Value> {
        let mut st = self.shared.lock();
        let key = Self::key(&st, resource, ns, name).ok()?;
        st.delete_now(&key)
    }

    /// Objects of a resource, in one namespace or all, in (namespace, name)
    /// order.
    pub fn list(&self, resource: &str, ns: Option<&str>) -> Vec<Value> {
        let st = self.shared.lock();
        let Some(res) = st.resolve(resource) else {
            return Vec::new();
        };
        st.objects_of(res, ns).map(|(_, v)| v.clone()).collect()
    }

    // ---- typed conveniences (panic on misuse: test helpers) ----

    fn typed_resource<K: kube::Resource<DynamicType = ()>>(&self) -> String {
        let (g, v, p) = (K::group(&()), K::version(&()), K::plural(&()));
        let st = self.shared.lock();
        let res: Option<ResId> = st.find(&g, &v, &p);
        match res {
            Some(r) => st.resources[r].qualified(),
            None => panic!("{p}.{g}/{v} is not registered with the fake API server"),
        }
    }

    /// Creates or replaces `obj` as [`insert`](Self::insert) does.
    ///
    /// # Panics
    /// If K is not registered or the object is invalid.
    pub fn create_obj<K>(&self, obj: &K) -> K
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let res = self.typed_resource::<K>();
        let v = serde_json::to_value(obj).expect("serializing the object");
        let stored = self.insert(&res, v).expect("inserting the object");
        serde_json::from_value(stored).expect("deserializing the stored object")
    }

    /// # Panics
    /// If K is not registered or the stored object does not deserialize.
    pub fn get_obj<K>(&self, ns: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let res = self.typed_resource::<K>();
        self.get(&res, ns, name)
            .map(|v| serde_json::from_value(v).expect("deserializing the stored object"))
    }

    /// Changes a stored object as [`modify`](Self::modify) does.
    ///
    /// # Panics
    /// If K is not registered or the object does not exist.
    pub fn update_obj<K>(&self, ns: &str, name: &str, f: impl FnOnce(&mut K)) -> K
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let res = self.typed_resource::<K>();
        let mut failed = None;
        let stored = self
            .modify(&res, ns, name, |v| {
                match serde_json::from_value::<K>(v.clone()) {
                    Ok(mut k) => {
                        f(&mut k);
                        match serde_json::to_value(&k) {
                            Ok(n) => *v = n,
                            Err(e) => failed = Some(e),
                        }
                    }
                    Err(e) => failed = Some(e),
                }
            })
            .expect("modifying the object");
        if let Some(e) = failed {
            panic!("converting the object: {e}");
        }
        serde_json::from_value(stored).expect("deserializing the stored object")
    }

    /// # Panics
    /// If K is not registered or a stored object does not deserialize.
    pub fn objects<K>(&self, ns: Option<&str>) -> Vec<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let res = self.typed_resource::<K>();
        self.list(&res, ns)
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("deserializing the stored object"))
            .collect()
    }
}
