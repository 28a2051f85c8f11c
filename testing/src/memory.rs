//! An in-memory cluster API (runyard's [`ControllerApi`] and [`ClientApi`])
//! with the API server's concurrency semantics:
//! every write bumps a resourceVersion, guarded writes against a stale version
//! fail with `Conflict`, and faults (conflicts, timeouts that did or did not
//! apply, API errors) can be injected per operation. Used by the controller's
//! tests and benchmarks.
//!
//! kube-fake-client (the controller-runtime-style fake) would be the natural
//! choice, but its releases are built on kube 4 / k8s-openapi 0.28, whose
//! `Client` is a different type from this crate's kube 5; tower-test mocks
//! script single requests and cannot express concurrent controllers racing.

use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use runyard::cluster::{
    ClientApi, ClusterError, ControllerApi, LogLines, PoolReads, Result, RunWrites,
};
use runyard::controller::model::JobSummary;
use runyard::crd::{Worker, WorkerPool, WorkerPoolStatus};
use runyard::vocab::{label, ANNOTATION_INJECTED, ANNOTATION_PRIORITY, LABEL_POOL};
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Operations faults can be injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    Read,
    CreateWorker,
    WorkerStatus,
    DeleteWorker,
    PatchJob,
    PatchPod,
    DeletePod,
    PoolStatus,
    /// Reading a log tail.
    LogTail,
    /// Keeping a log tail (the ConfigMap write).
    SaveLog,
}

#[derive(Debug, Clone)]
struct Fault {
    op: Op,
    error: ClusterError,
    /// For writes: whether the write lands although the caller sees the error
    /// (a timeout after the server applied it).
    applied: bool,
    remaining: usize,
}

/// A recorded Event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub object: String,
    pub reason: String,
    pub note: String,
    pub warning: bool,
}

#[derive(Default)]
struct State {
    rv: u64,
    pools: BTreeMap<(String, String), WorkerPool>,
    workers: BTreeMap<(String, String), Worker>,
    jobs: BTreeMap<(String, String), Job>,
    pods: BTreeMap<(String, String), Pod>,
    events: Vec<RecordedEvent>,
    silent_pods: Vec<String>,
    warnings: BTreeMap<String, Vec<String>>,
    configmaps: BTreeMap<(String, String), ConfigMap>,
    logs: BTreeMap<String, Vec<(Timestamp, String)>>,
    /// Log streams end after this many lines, once each.
    log_drops: Vec<usize>,
    faults: Vec<Fault>,
    writes: BTreeMap<Op, usize>,
}

/// Stored Jobs at one moment (see [`MemoryCluster::checkpoint`]).
#[derive(Clone)]
pub struct Checkpoint(BTreeMap<(String, String), Job>);

/// The in-memory cluster.
#[derive(Default)]
pub struct MemoryCluster {
    state: std::sync::Arc<Mutex<State>>,
    /// Yield to the scheduler at every call, so that concurrent controllers
    /// interleave their reads and writes.
    interleave: std::sync::atomic::AtomicBool,
    /// Mutating admission for created Jobs (the webhook's role).
    admission: Mutex<Option<JobAdmission>>,
}

/// A mutating admission step for Jobs created through the in-memory API.
pub type JobAdmission = Box<dyn Fn(&str, &mut Job) -> Result<()> + Send + Sync>;

fn key(ns: &str, name: &str) -> (String, String) {
    (ns.to_string(), name.to_string())
}

/// A new resourceVersion; a uid the first time (as the API server gives
/// every object one on create).
fn stamp(meta: &mut ObjectMeta, rv: u64) {
    meta.resource_version = Some(rv.to_string());
    if meta.uid.is_none() {
        meta.uid = Some(format!(
            "uid-{}-{}",
            meta.name.as_deref().unwrap_or_default(),
            rv
        ));
    }
}

fn to_value<T: Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| ClusterError::Api(e.to_string()))
}

fn from_value<T: DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| ClusterError::Api(format!("invalid object after patch: {e}")))
}

/// Applies a merge patch whose `metadata.resourceVersion` (if any) is a precondition.
fn merge_guarded<T: Serialize + DeserializeOwned>(
    obj: &T,
    current_rv: &str,
    patch: &Value,
) -> Result<T> {
    let mut patch = patch.clone();
    if let Some(rv) = patch
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.remove("resourceVersion"))
    {
        if rv.as_str() != Some(current_rv) {
            return Err(ClusterError::Conflict);
        }
    }
    let mut doc = to_value(obj)?;
    json_patch::merge(&mut doc, &patch);
    from_value(doc)
}

impl MemoryCluster {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `admission` on every Job created through [`Cluster::create_job`],
    /// as the webhook does (e.g. with the real injection engine).
    pub fn set_job_admission(&self, admission: JobAdmission) {
        *self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(admission);
    }

    /// Every call yields first, so that concurrently polled reconciles interleave.
    pub fn interleave(&self, on: bool) {
        self.interleave
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    async fn yield_point(&self) {
        if self.interleave.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::task::yield_now().await;
        }
    }

    /// Makes the next `count` calls of `op` fail with `error`; with `applied`,
    /// writes still take effect (a timeout after the server applied them).
    pub fn inject(&self, op: Op, error: ClusterError, count: usize, applied: bool) {
        self.lock().faults.push(Fault {
            op,
            error,
            applied,
            remaining: count,
        });
    }

    /// Writes made per operation (successful or applied-despite-error).
    pub fn writes(&self, op: Op) -> usize {
        self.lock().writes.get(&op).copied().unwrap_or(0)
    }

    /// Checks for an injected fault. `Ok(None)`: go on. `Ok(Some(e))`: apply the
    /// write, then return `e`. `Err(e)`: fail without applying.
    fn fault(&self, op: Op) -> Result<Option<ClusterError>> {
        let mut s = self.lock();
        if let Some(f) = s.faults.iter_mut().find(|f| f.op == op && f.remaining > 0) {
            f.remaining -= 1;
            let (error, applied) = (f.error.clone(), f.applied);
            return if applied { Ok(Some(error)) } else { Err(error) };
        }
        Ok(None)
    }

    fn bump(s: &mut State) -> u64 {
        s.rv += 1;
        s.rv
    }

    /// One controller pass over this cluster: read the pool's objects afresh
    /// (reads can be faulted with [`Op::Read`]) and reconcile them.
    pub async fn reconcile(
        &self,
        metrics: &runyard::controller::metrics::ControllerMetrics,
        ns: &str,
        pool: &str,
    ) -> Result<runyard::controller::act::Report> {
        let objects = self.snapshot(ns, pool).await?;
        Ok(runyard::controller::act::reconcile_pool(self, metrics, ns, objects).await)
    }

    /// The stored Jobs as they are now, to serve them stale later
    /// ([`Self::stale_snapshot`]).
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.lock().jobs.clone())
    }

    /// A stale read (fault): the pool's objects as [`PoolReads::snapshot`]
    /// reads them now, except that the Jobs named in `stale` are served as
    /// they were at `checkpoint` — as a controller whose Job cache lags
    /// behind for those objects (each kind of object is watched separately,
    /// so two controllers can see different mixes of old and new).
    pub async fn stale_snapshot(
        &self,
        ns: &str,
        pool: &str,
        checkpoint: &Checkpoint,
        stale: &[&str],
    ) -> Result<runyard::cluster::PoolObjects> {
        let mut objects = self.snapshot(ns, pool).await?;
        for job in objects.jobs.iter_mut() {
            let name = job.name();
            if stale.contains(&name.as_str()) {
                if let Some(old) = checkpoint.0.get(&key(ns, &name)) {
                    *job = JobSummary::of(old);
                }
            }
        }
        Ok(objects)
    }

    // ---- test setup and inspection -------------------------------------

    pub fn add_pool(&self, ns: &str, name: &str, spec: runyard::crd::WorkerPoolSpec) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        let mut p = WorkerPool::new(name, spec);
        p.metadata.namespace = Some(ns.into());
        p.metadata.uid = Some(format!("uid-pool-{name}"));
        p.metadata.generation = Some(1);
        stamp(&mut p.metadata, rv);
        s.pools.insert(key(ns, name), p);
    }

    pub fn set_pool_size(&self, ns: &str, name: &str, size: i32) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        if let Some(p) = s.pools.get_mut(&key(ns, name)) {
            p.spec.pool_size = size;
            p.metadata.generation = Some(p.metadata.generation.unwrap_or(0) + 1);
            stamp(&mut p.metadata, rv);
        }
    }

    /// Deletes a pool and, as the garbage collector would, its workers.
    pub fn delete_pool(&self, ns: &str, name: &str) {
        let mut s = self.lock();
        s.pools.remove(&key(ns, name));
        s.workers
            .retain(|(wns, _), w| !(wns == ns && w.spec.pool == name));
    }

    pub fn pool_status(&self, ns: &str, name: &str) -> Option<WorkerPoolStatus> {
        self.lock()
            .pools
            .get(&key(ns, name))
            .and_then(|p| p.status.clone())
    }

    /// Adds a run Job as the webhook leaves it: suspended, pool-labeled.
    pub fn add_queued_job(
        &self,
        ns: &str,
        name: &str,
        pool: &str,
        created: i64,
        priority: Option<i64>,
    ) {
        let mut job: Job = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name, "namespace": ns,
                "labels": { LABEL_POOL: pool },
                "annotations": {},
            },
            "spec": {
                "suspend": true,
                "template": {
                    "metadata": { "labels": { LABEL_POOL: pool }, "annotations": { ANNOTATION_INJECTED: "true" } },
                    "spec": { "restartPolicy": "Never", "containers": [{ "name": "worker", "image": "alpine" }] }
                }
            }
        }))
        .unwrap_or_default();
        if let Some(p) = priority {
            job.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(ANNOTATION_PRIORITY.into(), p.to_string());
        }
        job.metadata.creation_timestamp = Timestamp::from_second(created).ok().map(Time);
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        stamp(&mut job.metadata, rv);
        s.jobs.insert(key(ns, name), job);
    }

    /// Adds a Pod as given (bare runs, Job pods).
    pub fn add_pod(&self, ns: &str, mut pod: Pod) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        pod.metadata.namespace = Some(ns.into());
        stamp(&mut pod.metadata, rv);
        let name = pod.metadata.name.clone().unwrap_or_default();
        s.pods.insert(key(ns, &name), pod);
    }

    /// The Job controller's verdict on a Job.
    pub fn finish_job(&self, ns: &str, name: &str, succeeded: bool) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        if let Some(j) = s.jobs.get_mut(&key(ns, name)) {
            let cond = if succeeded { "Complete" } else { "Failed" };
            j.status = Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: cond.into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            });
            stamp(&mut j.metadata, rv);
        }
    }

    pub fn set_pod_phase(&self, ns: &str, name: &str, phase: &str) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        if let Some(p) = s.pods.get_mut(&key(ns, name)) {
            p.status = Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            });
            stamp(&mut p.metadata, rv);
        }
    }

    pub fn delete_job(&self, ns: &str, name: &str) {
        self.lock().jobs.remove(&key(ns, name));
    }

    pub fn job(&self, ns: &str, name: &str) -> Option<Job> {
        self.lock().jobs.get(&key(ns, name)).cloned()
    }

    pub fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.lock().pods.get(&key(ns, name)).cloned()
    }

    pub fn all_jobs(&self, ns: &str) -> Vec<Job> {
        self.lock()
            .jobs
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, j)| j.clone())
            .collect()
    }

    pub fn all_workers(&self, ns: &str) -> Vec<Worker> {
        self.lock()
            .workers
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|(_, w)| w.clone())
            .collect()
    }

    pub fn events(&self) -> Vec<RecordedEvent> {
        self.lock().events.clone()
    }

    /// Appends a log line of a pod (timestamps strictly increase).
    pub fn log(&self, pod: &str, line: &str) {
        let mut s = self.lock();
        let last = s.logs.get(pod).and_then(|l| l.last()).map(|(t, _)| *t);
        let now = Timestamp::now();
        let ts = match last {
            Some(t) if t >= now => t + k8s_openapi::jiff::SignedDuration::from_micros(1),
            _ => now,
        };
        s.logs
            .entry(pod.to_string())
            .or_default()
            .push((ts, line.to_string()));
    }

    /// The next log stream ends after `lines` lines (a dropped connection).
    pub fn drop_log_stream_after(&self, lines: usize) {
        self.lock().log_drops.push(lines);
    }

    /// Sets a pod's phase and its worker container's exit code.
    pub fn terminate_pod(&self, ns: &str, name: &str, exit_code: i32) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        if let Some(p) = s.pods.get_mut(&key(ns, name)) {
            let container = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default();
            p.status = Some(serde_json::from_value(serde_json::json!({
                "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
                "containerStatuses": [{
                    "name": container, "image": "", "imageID": "", "ready": false, "restartCount": 0,
                    "state": { "terminated": { "exitCode": exit_code } }
                }]
            })).unwrap_or_default());
            stamp(&mut p.metadata, rv);
        }
    }

    /// A Warning Event about a pod (what the kubelet would write).
    pub fn warn(&self, pod: &str, text: &str) {
        self.lock()
            .warnings
            .entry(pod.to_string())
            .or_default()
            .push(text.to_string());
    }

    /// Stores a ConfigMap as given (with a new resourceVersion).
    pub fn put_configmap(&self, ns: &str, mut cm: ConfigMap) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        stamp(&mut cm.metadata, rv);
        let name = cm.metadata.name.clone().unwrap_or_default();
        s.configmaps.insert(key(ns, &name), cm);
    }

    /// A stored ConfigMap.
    pub fn configmap(&self, ns: &str, name: &str) -> Option<ConfigMap> {
        self.lock().configmaps.get(&key(ns, name)).cloned()
    }

    /// Changes a stored Pod (bumping its resourceVersion).
    pub fn update_pod(&self, ns: &str, name: &str, f: impl FnOnce(&mut Pod)) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        if let Some(p) = s.pods.get_mut(&key(ns, name)) {
            f(p);
            stamp(&mut p.metadata, rv);
        }
    }

    /// Changes a stored Job (bumping its resourceVersion).
    pub fn update_job(&self, ns: &str, name: &str, f: impl FnOnce(&mut Job)) {
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        if let Some(j) = s.jobs.get_mut(&key(ns, name)) {
            f(j);
            stamp(&mut j.metadata, rv);
        }
    }

    /// Makes a pod's containers print nothing (for logsTimeout).
    pub fn silence(&self, pod: &str) {
        self.lock().silent_pods.push(pod.to_string());
    }

    fn count(&self, op: Op) {
        *self.lock().writes.entry(op).or_default() += 1;
    }
}

fn list<T: Clone>(
    map: &BTreeMap<(String, String), T>,
    ns: &str,
    keep: impl Fn(&T) -> bool,
) -> Vec<T> {
    map.iter()
        .filter(|((n, _), v)| n == ns && keep(v))
        .map(|(_, v)| v.clone())
        .collect()
}

impl PoolReads for MemoryCluster {
    async fn pool(&self, ns: &str, name: &str) -> Result<Option<WorkerPool>> {
        self.yield_point().await;
        self.fault(Op::Read)?;
        Ok(self.lock().pools.get(&key(ns, name)).cloned())
    }

    async fn workers(&self, ns: &str, pool: &str) -> Result<Vec<Worker>> {
        self.yield_point().await;
        Ok(list(&self.lock().workers, ns, |w| w.spec.pool == pool))
    }

    async fn jobs(&self, ns: &str, pool: &str) -> Result<Vec<JobSummary>> {
        self.yield_point().await;
        let s = self.lock();
        Ok(s.jobs
            .iter()
            .filter(|((n, _), j)| n == ns && label(&j.metadata, LABEL_POOL) == Some(pool))
            .map(|(_, j)| JobSummary::of(j))
            .collect())
    }

    async fn pods(&self, ns: &str, pool: &str) -> Result<Vec<Pod>> {
        self.yield_point().await;
        Ok(list(&self.lock().pods, ns, |p| {
            label(&p.metadata, LABEL_POOL) == Some(pool)
        }))
    }
}

impl RunWrites for MemoryCluster {
    async fn patch_job(&self, ns: &str, name: &str, patch: &Value) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::PatchJob)?;
        let mut s = self.lock();
        let current = s.jobs.get(&key(ns, name)).ok_or(ClusterError::NotFound)?;
        let rv_now = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let mut updated: Job = merge_guarded(current, &rv_now, patch)?;
        let rv = Self::bump(&mut s);
        stamp(&mut updated.metadata, rv);
        s.jobs.insert(key(ns, name), updated);
        drop(s);
        self.count(Op::PatchJob);
        late.map_or(Ok(()), Err)
    }

    async fn patch_pod(&self, ns: &str, name: &str, patch: &Value) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::PatchPod)?;
        let mut s = self.lock();
        let current = s.pods.get(&key(ns, name)).ok_or(ClusterError::NotFound)?;
        let rv_now = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let mut updated: Pod = merge_guarded(current, &rv_now, patch)?;
        let rv = Self::bump(&mut s);
        stamp(&mut updated.metadata, rv);
        s.pods.insert(key(ns, name), updated);
        drop(s);
        self.count(Op::PatchPod);
        late.map_or(Ok(()), Err)
    }

    async fn delete_pod(&self, ns: &str, name: &str) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::DeletePod)?;
        self.lock().pods.remove(&key(ns, name));
        self.count(Op::DeletePod);
        late.map_or(Ok(()), Err)
    }

    async fn delete_pod_at(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::DeletePod)?;
        let mut s = self.lock();
        match s.pods.get(&key(ns, name)) {
            None => return late.map_or(Ok(()), Err),
            Some(p) if p.metadata.resource_version.as_deref() != Some(rv) => {
                return Err(ClusterError::Conflict)
            }
            Some(_) => {}
        }
        s.pods.remove(&key(ns, name));
        drop(s);
        self.count(Op::DeletePod);
        late.map_or(Ok(()), Err)
    }
}

impl ControllerApi for MemoryCluster {
    async fn create_worker(&self, ns: &str, worker: &Worker) -> Result<Worker> {
        self.yield_point().await;
        let late = self.fault(Op::CreateWorker)?;
        let name = worker.metadata.name.clone().unwrap_or_default();
        let mut s = self.lock();
        if s.workers.contains_key(&key(ns, &name)) {
            return Err(ClusterError::Conflict);
        }
        let rv = Self::bump(&mut s);
        let mut w = worker.clone();
        w.status = None;
        w.metadata.uid = Some(format!("uid-{name}"));
        w.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        stamp(&mut w.metadata, rv);
        s.workers.insert(key(ns, &name), w.clone());
        drop(s);
        self.count(Op::CreateWorker);
        late.map_or(Ok(w), Err)
    }

    async fn replace_worker_status(&self, ns: &str, worker: &Worker) -> Result<Worker> {
        self.yield_point().await;
        let late = self.fault(Op::WorkerStatus)?;
        let name = worker.metadata.name.clone().unwrap_or_default();
        let mut s = self.lock();
        let current_rv = s
            .workers
            .get(&key(ns, &name))
            .ok_or(ClusterError::NotFound)?
            .metadata
            .resource_version
            .clone();
        if worker.metadata.resource_version != current_rv {
            return Err(ClusterError::Conflict);
        }
        let rv = Self::bump(&mut s);
        let stored = s
            .workers
            .get_mut(&key(ns, &name))
            .ok_or(ClusterError::NotFound)?;
        stored.status = worker.status.clone();
        stamp(&mut stored.metadata, rv);
        let out = stored.clone();
        drop(s);
        self.count(Op::WorkerStatus);
        late.map_or(Ok(out), Err)
    }

    async fn delete_worker(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::DeleteWorker)?;
        let mut s = self.lock();
        let current = s
            .workers
            .get(&key(ns, name))
            .ok_or(ClusterError::NotFound)?;
        if current.metadata.resource_version.as_deref() != Some(rv) {
            return Err(ClusterError::Conflict);
        }
        s.workers.remove(&key(ns, name));
        drop(s);
        self.count(Op::DeleteWorker);
        late.map_or(Ok(()), Err)
    }

    async fn patch_pool_status(
        &self,
        ns: &str,
        name: &str,
        status: &WorkerPoolStatus,
    ) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::PoolStatus)?;
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        let p = s
            .pools
            .get_mut(&key(ns, name))
            .ok_or(ClusterError::NotFound)?;
        p.status = Some(status.clone());
        stamp(&mut p.metadata, rv);
        drop(s);
        self.count(Op::PoolStatus);
        late.map_or(Ok(()), Err)
    }

    async fn printed_since(
        &self,
        _ns: &str,
        pod: &str,
        _container: &str,
        _since: i64,
    ) -> Result<bool> {
        self.yield_point().await;
        Ok(!self.lock().silent_pods.iter().any(|p| p == pod))
    }

    async fn pod_warnings(&self, _ns: &str, pod: &str) -> Result<Vec<String>> {
        self.yield_point().await;
        Ok(self.lock().warnings.get(pod).cloned().unwrap_or_default())
    }

    async fn log_tail(
        &self,
        _ns: &str,
        pod: &str,
        _container: &str,
        max_bytes: usize,
    ) -> Result<String> {
        self.yield_point().await;
        self.fault(Op::LogTail)?;
        let s = self.lock();
        let text: String = s
            .logs
            .get(pod)
            .into_iter()
            .flatten()
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        let mut start = text.len().saturating_sub(max_bytes);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        Ok(text[start..].to_string())
    }

    async fn save_log(&self, ns: &str, cm: &ConfigMap) -> Result<()> {
        self.yield_point().await;
        let late = self.fault(Op::SaveLog)?;
        let name = cm.metadata.name.clone().unwrap_or_default();
        let mut cm = cm.clone();
        let mut s = self.lock();
        let rv = Self::bump(&mut s);
        stamp(&mut cm.metadata, rv);
        s.configmaps.insert(key(ns, &name), cm);
        drop(s);
        self.count(Op::SaveLog);
        late.map_or(Ok(()), Err)
    }

    async fn kept_logs(&self, ns: &str) -> Result<Vec<ObjectMeta>> {
        self.yield_point().await;
        self.fault(Op::Read)?;
        Ok(self
            .lock()
            .configmaps
            .iter()
            .filter(|((n, _), cm)| {
                n == ns
                    && cm
                        .metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key(runyard::vocab::LABEL_LOG_TAIL))
            })
            .map(|(_, cm)| cm.metadata.clone())
            .collect())
    }

    async fn delete_kept_log(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        self.yield_point().await;
        let mut s = self.lock();
        match s.configmaps.get(&key(ns, name)) {
            None => Ok(()),
            Some(cm) if cm.metadata.resource_version.as_deref() != Some(rv) => {
                Err(ClusterError::Conflict)
            }
            Some(_) => {
                s.configmaps.remove(&key(ns, name));
                Ok(())
            }
        }
    }

    async fn event(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<()> {
        self.yield_point().await;
        let object = format!(
            "{}/{}",
            regarding.kind.as_deref().unwrap_or("?"),
            regarding.name.as_deref().unwrap_or("?")
        );
        self.lock().events.push(RecordedEvent {
            object,
            reason: reason.into(),
            note: note.into(),
            warning,
        });
        Ok(())
    }
}

impl ClientApi for MemoryCluster {
    async fn pools(&self, ns: &str) -> Result<Vec<WorkerPool>> {
        self.yield_point().await;
        self.fault(Op::Read)?;
        Ok(list(&self.lock().pools, ns, |_| true))
    }

    async fn create_job(&self, ns: &str, job: &Job) -> Result<Job> {
        self.yield_point().await;
        let mut j = job.clone();
        if let Some(admit) = self
            .admission
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            admit(ns, &mut j)?;
        }
        let mut s = self.lock();
        let name = match (&j.metadata.name, &j.metadata.generate_name) {
            (Some(n), _) => n.clone(),
            (None, Some(prefix)) => format!("{prefix}{:05}", s.rv),
            (None, None) => return Err(ClusterError::Api("name or generateName required".into())),
        };
        if s.jobs.contains_key(&key(ns, &name)) {
            return Err(ClusterError::Conflict);
        }
        let rv = Self::bump(&mut s);
        j.metadata.name = Some(name.clone());
        j.metadata.namespace = Some(ns.to_string());
        j.metadata.creation_timestamp = Some(Time(Timestamp::now()));
        stamp(&mut j.metadata, rv);
        s.jobs.insert(key(ns, &name), j.clone());
        Ok(j)
    }

    async fn get_job(&self, ns: &str, name: &str) -> Result<Option<Job>> {
        self.yield_point().await;
        self.fault(Op::Read)?;
        Ok(self.lock().jobs.get(&key(ns, name)).cloned())
    }

    async fn delete_job(&self, ns: &str, name: &str) -> Result<()> {
        self.yield_point().await;
        self.lock().jobs.remove(&key(ns, name));
        Ok(())
    }

    async fn get_pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        self.yield_point().await;
        Ok(self.lock().pods.get(&key(ns, name)).cloned())
    }

    async fn job_pods(&self, ns: &str, job: &str) -> Result<Vec<Pod>> {
        self.yield_point().await;
        Ok(list(&self.lock().pods, ns, |p| {
            runyard::vocab::controlling_job(&p.metadata) == Some(job)
        }))
    }

    /// A poll of the stored Job every few milliseconds, yielding each new
    /// version (and `None` once it is gone), like a watch on it.
    async fn watch_job(&self, ns: &str, name: &str) -> Result<runyard::cluster::JobUpdates> {
        use futures::StreamExt;
        let state = self.state.clone();
        let key = key(ns, name);
        let stream = futures::stream::unfold(
            (state, key, None::<Option<String>>),
            |(state, key, last)| async move {
                loop {
                    let current = state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .jobs
                        .get(&key)
                        .cloned();
                    let rv = current
                        .as_ref()
                        .map(|j| j.metadata.resource_version.clone().unwrap_or_default());
                    if last.as_ref() != Some(&rv) {
                        return Some((Ok(current), (state, key, Some(rv))));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            },
        );
        Ok(stream.boxed())
    }

    async fn follow_logs(
        &self,
        _ns: &str,
        pod: &str,
        _container: &str,
        since: Option<Timestamp>,
    ) -> Result<LogLines> {
        use futures::StreamExt;
        self.yield_point().await;
        let mut s = self.lock();
        let mut lines: Vec<Result<String>> = s
            .logs
            .get(pod)
            .into_iter()
            .flatten()
            .filter(|(t, _)| since.is_none_or(|since| *t >= since))
            .map(|(t, l)| Ok(format!("{t} {l}")))
            .collect();
        if !s.log_drops.is_empty() {
            let n = s.log_drops.remove(0);
            lines.truncate(n);
        }
        Ok(futures::stream::iter(lines).boxed())
    }

    async fn read_log(&self, ns: &str, pod: &str, _container: &str) -> Result<String> {
        self.yield_point().await;
        self.fault(Op::Read)?;
        let s = self.lock();
        if !s.pods.contains_key(&key(ns, pod)) {
            return Err(ClusterError::NotFound);
        }
        Ok(s.logs
            .get(pod)
            .into_iter()
            .flatten()
            .map(|(_, l)| format!("{l}\n"))
            .collect())
    }

    async fn get_configmap(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>> {
        self.yield_point().await;
        self.fault(Op::Read)?;
        Ok(self.lock().configmaps.get(&key(ns, name)).cloned())
    }
}
