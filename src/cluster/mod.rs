//! The Kubernetes API as runyard's parts need it, split by who needs what:
//! [`PoolReads`] (one pool's objects) and [`RunWrites`] (patching and deleting
//! runs) are shared; [`ControllerApi`] adds the controller's guarded writes and
//! Events; [`ClientApi`] adds what `submit`, `cancel`, `logs` and `status` use.
//! [`KubeCluster`] implements them over kube-rs; the tests' in-memory API
//! (the dev-only `runyard-testing` crate) implements them too.

mod kube;

pub use self::kube::{KubeCluster, DEFAULT_CALL_TIMEOUT};

use crate::controller::model::{model_snapshot, JobSummary, RunKey, RunKind, Snapshot};
use crate::crd::{Worker, WorkerPool, WorkerPoolStatus};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use serde_json::Value;
use std::future::Future;
use std::sync::Arc;

/// Why a write or read failed; `label()` is the metric label. Errors from
/// the API keep the kube error as their source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("conflict: the object changed since it was read")]
    Conflict,
    #[error("not found")]
    NotFound,
    /// No answer in time: runyard's own deadline for the call (`None`), or
    /// the server's or the transport's timeout.
    #[error("timed out{}", .0.as_ref().map(|e| format!(": {e}")).unwrap_or_else(|| " (no answer within the call's deadline)".into()))]
    Timeout(#[source] Option<Arc<::kube::Error>>),
    /// Any other error of the API, from kube.
    #[error("API error: {0}")]
    Kube(#[source] Arc<::kube::Error>),
    /// Any other error, described.
    #[error("API error: {0}")]
    Api(String),
}

impl PartialEq for ClusterError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Api(a), Self::Api(b)) => a == b,
            (Self::Kube(a), Self::Kube(b)) => a.to_string() == b.to_string(),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl ClusterError {
    /// runyard's own deadline for a call passed.
    pub fn deadline() -> Self {
        Self::Timeout(None)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::Timeout(_) => "timeout",
            Self::Kube(_) | Self::Api(_) => "api",
        }
    }
}

pub type Result<T> = std::result::Result<T, ClusterError>;

/// Lines of a followed log.
pub type LogLines = futures::stream::BoxStream<'static, Result<String>>;

/// The states of one Job as a watch sees them (`None`: deleted).
pub type JobUpdates = futures::stream::BoxStream<'static, Result<Option<Job>>>;

/// The label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// One pool's objects, as read.
#[derive(Debug, Clone, Default)]
pub struct PoolObjects {
    /// The pool's name (also when the pool itself is gone).
    pub name: String,
    pub pool: Option<WorkerPool>,
    pub workers: Vec<Worker>,
    pub jobs: Vec<JobSummary>,
    pub pods: Vec<Pod>,
}

impl PoolObjects {
    /// The model's view of these objects.
    pub fn model(&self) -> Snapshot {
        let mut s = model_snapshot(self.pool.as_ref(), &self.workers, &self.jobs, &self.pods);
        s.pool_name.clone_from(&self.name);
        s
    }
}

/// Reads of one pool's objects.
pub trait PoolReads: Send + Sync {
    fn pool(&self, ns: &str, name: &str)
        -> impl Future<Output = Result<Option<WorkerPool>>> + Send;
    fn workers(&self, ns: &str, pool: &str) -> impl Future<Output = Result<Vec<Worker>>> + Send;
    /// Jobs labeled `runyard.dev/pool=<pool>`, as summaries.
    fn jobs(&self, ns: &str, pool: &str) -> impl Future<Output = Result<Vec<JobSummary>>> + Send;
    /// Pods labeled `runyard.dev/pool=<pool>` (bare runs and Job pods).
    fn pods(&self, ns: &str, pool: &str) -> impl Future<Output = Result<Vec<Pod>>> + Send;

    /// The pool and all its objects, read at once.
    fn snapshot(&self, ns: &str, pool: &str) -> impl Future<Output = Result<PoolObjects>> + Send {
        async move {
            let (p, workers, jobs, pods) = futures::join!(
                self.pool(ns, pool),
                self.workers(ns, pool),
                self.jobs(ns, pool),
                self.pods(ns, pool)
            );
            Ok(PoolObjects {
                name: pool.to_string(),
                pool: p?,
                workers: workers?,
                jobs: jobs?,
                pods: pods?,
            })
        }
    }
}

/// Writes to run objects.
pub trait RunWrites: Send + Sync {
    /// JSON merge patch; a `metadata.resourceVersion` in it is a precondition.
    fn patch_job(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = Result<()>> + Send;
    /// JSON merge patch; a `metadata.resourceVersion` in it is a precondition.
    fn patch_pod(
        &self,
        ns: &str,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a pod; one already gone is fine.
    fn delete_pod(&self, ns: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Deletes a pod if its resourceVersion is still `rv` (`Conflict` if not);
    /// one already gone is fine.
    fn delete_pod_at(
        &self,
        ns: &str,
        name: &str,
        rv: &str,
    ) -> impl Future<Output = Result<()>> + Send;

    /// [`Self::patch_job`] or [`Self::patch_pod`], by the run's kind.
    fn patch_run(
        &self,
        ns: &str,
        run: &RunKey,
        patch: &Value,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            match run.kind {
                RunKind::Job => self.patch_job(ns, &run.name, patch).await,
                RunKind::Pod => self.patch_pod(ns, &run.name, patch).await,
            }
        }
    }
}

/// What the controller writes (it reads from its watch caches).
pub trait ControllerApi: RunWrites {
    /// Creates a worker; the returned object carries its resourceVersion.
    fn create_worker(
        &self,
        ns: &str,
        worker: &Worker,
    ) -> impl Future<Output = Result<Worker>> + Send;
    /// Replaces a worker's status; fails with `Conflict` unless
    /// `metadata.resourceVersion` is current.
    fn replace_worker_status(
        &self,
        ns: &str,
        worker: &Worker,
    ) -> impl Future<Output = Result<Worker>> + Send;
    /// Deletes a worker if its resourceVersion is still `rv`.
    fn delete_worker(
        &self,
        ns: &str,
        name: &str,
        rv: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    fn patch_pool_status(
        &self,
        ns: &str,
        name: &str,
        status: &WorkerPoolStatus,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Whether the container printed anything in the last `since_seconds`.
    fn printed_since(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        since_seconds: i64,
    ) -> impl Future<Output = Result<bool>> + Send;
    /// The latest Warning Events about a pod (`reason: message`, newest last).
    fn pod_warnings(&self, ns: &str, pod: &str)
        -> impl Future<Output = Result<Vec<String>>> + Send;
    /// The end of a container's log, at most `max_bytes`.
    fn log_tail(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        max_bytes: usize,
    ) -> impl Future<Output = Result<String>> + Send;
    /// Creates or updates the ConfigMap that keeps a run's log tail.
    fn save_log(&self, ns: &str, cm: &ConfigMap) -> impl Future<Output = Result<()>> + Send;
    /// The metadata of the log ConfigMaps in `ns` (label
    /// `runyard.dev/log-tail`).
    fn kept_logs(
        &self,
        ns: &str,
    ) -> impl Future<Output = Result<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>>>
           + Send;
    /// Deletes a log ConfigMap if it is still at `rv`.
    fn delete_kept_log(
        &self,
        ns: &str,
        name: &str,
        rv: &str,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Publishes an Event about `regarding`.
    fn event(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// What the CLI clients (`submit`, `cancel`, `status`) read and write.
pub trait ClientApi: PoolReads + RunWrites {
    fn pools(&self, ns: &str) -> impl Future<Output = Result<Vec<WorkerPool>>> + Send;
    fn create_job(&self, ns: &str, job: &Job) -> impl Future<Output = Result<Job>> + Send;
    fn get_job(&self, ns: &str, name: &str) -> impl Future<Output = Result<Option<Job>>> + Send;
    fn delete_job(&self, ns: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    fn get_pod(&self, ns: &str, name: &str) -> impl Future<Output = Result<Option<Pod>>> + Send;
    /// The pods of a Job (by the Job controller's job-name label).
    fn job_pods(&self, ns: &str, job: &str) -> impl Future<Output = Result<Vec<Pod>>> + Send;
    /// Watches one Job (its queue position, its claim, its end).
    fn watch_job(&self, ns: &str, name: &str) -> impl Future<Output = Result<JobUpdates>> + Send;
    /// Follows a container's log from `since` (inclusive), each line prefixed
    /// with its RFC 3339 timestamp and a space. The stream may end early (a
    /// dropped connection); callers reconnect.
    fn follow_logs(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        since: Option<k8s_openapi::jiff::Timestamp>,
    ) -> impl Future<Output = Result<LogLines>> + Send;
    /// A container's log as it is now (not followed).
    fn read_log(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
    ) -> impl Future<Output = Result<String>> + Send;
    /// A ConfigMap by name (the kept log tail and result of a finished run).
    fn get_configmap(
        &self,
        ns: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<ConfigMap>>> + Send;
}
