//! [`ControllerApi`] and [`ClientApi`] over kube-rs.

use super::{
    ClientApi, ClusterError, ControllerApi, JobUpdates, LogLines, PoolReads, Result, RunWrites,
    JOB_NAME_LABEL,
};
use crate::controller::model::JobSummary;
use crate::crd::{Worker, WorkerPool, WorkerPoolStatus};
use crate::vocab::{FIELD_MANAGER, LABEL_POOL, LABEL_WORKER_POOL};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

impl From<kube::Error> for ClusterError {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 409 => Self::Conflict,
            kube::Error::Api(s) if s.code == 404 => Self::NotFound,
            kube::Error::Api(s) if s.code == 504 || s.code == 408 || s.reason == "Timeout" => {
                Self::Timeout(Some(Arc::new(e)))
            }
            _ if is_timeout(&e) => Self::Timeout(Some(Arc::new(e))),
            _ => Self::Kube(Arc::new(e)),
        }
    }
}

/// Whether a transport error is a timeout: an I/O `TimedOut`, hyper's or
/// tokio's timeout anywhere in the error's chain (typed, not by its text).
fn is_timeout(e: &kube::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
            || err.is::<tokio::time::error::Elapsed>()
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// Default deadline of one API call (watches excepted).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// `fut`, bounded by `deadline`.
async fn bounded<T>(
    deadline: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, kube::Error>>,
) -> Result<T> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(r) => r.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::deadline()),
    }
}

/// The cluster API over kube-rs.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    recorder: Recorder,
    /// Deadline of every call (a hung API server is a timeout, not a hang).
    timeout: Duration,
}

impl KubeCluster {
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// The same, with another deadline per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn api<K>(&self, ns: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::namespaced(self.client.clone(), ns)
    }
}

/// Patch parameters of the controller's writes: its field manager, so that
/// `kubectl get -o yaml --show-managed-fields` says who owns what.
fn owned() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

fn posted() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// How many lines of a finished run's log are read for its tail.
const LOG_TAIL_LINES: i64 = 5000;

/// The last `max` bytes of `text`, starting at a character boundary.
fn last_bytes(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Page size of list calls.
const PAGE: u32 = 500;

/// Deletes (background propagation, optionally only at resourceVersion `rv`);
/// an object already gone is fine.
async fn delete_if_present<K>(
    api: Api<K>,
    name: &str,
    rv: Option<&str>,
    deadline: Duration,
) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        preconditions: rv.map(|rv| Preconditions {
            resource_version: Some(rv.to_string()),
            uid: None,
        }),
        ..DeleteParams::background()
    };
    match bounded(deadline, api.delete(name, &dp)).await {
        Ok(_) | Err(ClusterError::NotFound) => Ok(()),
        Err(other) => Err(other),
    }
}

fn selector(pool: &str) -> ListParams {
    ListParams::default().labels(&format!("{LABEL_POOL}={pool}"))
}

impl PoolReads for KubeCluster {
    async fn pool(&self, ns: &str, name: &str) -> Result<Option<WorkerPool>> {
        bounded(self.timeout, self.api::<WorkerPool>(ns).get_opt(name)).await
    }

    async fn workers(&self, ns: &str, pool: &str) -> Result<Vec<Worker>> {
        let lp = ListParams::default().labels(&format!("{LABEL_WORKER_POOL}={pool}"));
        Ok(bounded(self.timeout, self.api::<Worker>(ns).list(&lp))
            .await?
            .items)
    }

    async fn jobs(&self, ns: &str, pool: &str) -> Result<Vec<JobSummary>> {
        // Paged and summarised as it arrives: a long queue never sits in
        // memory as full objects.
        let api = self.api::<Job>(ns);
        let mut out = Vec::new();
        let mut lp = selector(pool).limit(PAGE);
        loop {
            let page = bounded(self.timeout, api.list(&lp)).await?;
            out.extend(page.items.iter().map(JobSummary::of));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    async fn pods(&self, ns: &str, pool: &str) -> Result<Vec<Pod>> {
        Ok(
            bounded(self.timeout, self.api::<Pod>(ns).list(&selector(pool)))
                .await?
                .items,
        )
    }
}

impl RunWrites for KubeCluster {
    async fn patch_job(&self, ns: &str, name: &str, patch: &Value) -> Result<()> {
        bounded(
            self.timeout,
            self.api::<Job>(ns)
                .patch(name, &owned(), &Patch::Merge(patch)),
        )
        .await
        .map(drop)
    }

    async fn patch_pod(&self, ns: &str, name: &str, patch: &Value) -> Result<()> {
        bounded(
            self.timeout,
            self.api::<Pod>(ns)
                .patch(name, &owned(), &Patch::Merge(patch)),
        )
        .await
        .map(drop)
    }

    async fn delete_pod(&self, ns: &str, name: &str) -> Result<()> {
        delete_if_present(self.api::<Pod>(ns), name, None, self.timeout).await
    }

    async fn delete_pod_at(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        delete_if_present(self.api::<Pod>(ns), name, Some(rv), self.timeout).await
    }
}

impl ControllerApi for KubeCluster {
    async fn create_worker(&self, ns: &str, worker: &Worker) -> Result<Worker> {
        bounded(
            self.timeout,
            self.api::<Worker>(ns).create(&posted(), worker),
        )
        .await
    }

    async fn replace_worker_status(&self, ns: &str, worker: &Worker) -> Result<Worker> {
        let name = worker.metadata.name.clone().unwrap_or_default();
        bounded(
            self.timeout,
            self.api::<Worker>(ns)
                .replace_status(&name, &posted(), worker),
        )
        .await
    }

    async fn delete_worker(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        bounded(self.timeout, self.api::<Worker>(ns).delete(name, &dp))
            .await
            .map(drop)
    }

    /// Server-side apply of the whole status: it is derived, owned by the
    /// controller's field manager alone.
    async fn patch_pool_status(
        &self,
        ns: &str,
        name: &str,
        status: &WorkerPoolStatus,
    ) -> Result<()> {
        let apply = serde_json::json!({
            "apiVersion": WorkerPool::api_version(&()),
            "kind": WorkerPool::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        bounded(
            self.timeout,
            self.api::<WorkerPool>(ns).patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&apply),
            ),
        )
        .await
        .map(drop)
    }

    async fn printed_since(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        since_seconds: i64,
    ) -> Result<bool> {
        let lp = LogParams {
            container: Some(container.to_string()),
            since_seconds: Some(since_seconds.max(1)),
            limit_bytes: Some(1),
            ..LogParams::default()
        };
        let text = bounded(self.timeout, self.api::<Pod>(ns).logs(pod, &lp)).await?;
        Ok(!text.is_empty())
    }

    async fn pod_warnings(&self, ns: &str, pod: &str) -> Result<Vec<String>> {
        use k8s_openapi::api::core::v1::Event as CoreEvent;
        let lp = ListParams::default().fields(&format!("involvedObject.name={pod},type=Warning"));
        let mut events = bounded(self.timeout, self.api::<CoreEvent>(ns).list(&lp))
            .await?
            .items;
        let when = |e: &CoreEvent| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or(e.event_time.as_ref().map(|t| t.0))
        };
        events.sort_by_key(|e| when(e));
        Ok(events
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.as_deref().unwrap_or("Warning"),
                    e.message.as_deref().unwrap_or_default().trim()
                )
            })
            .collect())
    }

    async fn log_tail(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        max_bytes: usize,
    ) -> Result<String> {
        let lp = LogParams {
            container: Some(container.to_string()),
            tail_lines: Some(LOG_TAIL_LINES),
            ..LogParams::default()
        };
        let text = bounded(self.timeout, self.api::<Pod>(ns).logs(pod, &lp)).await?;
        Ok(last_bytes(&text, max_bytes).to_string())
    }

    async fn save_log(&self, ns: &str, cm: &ConfigMap) -> Result<()> {
        let name = cm.metadata.name.clone().unwrap_or_default();
        let mut apply = serde_json::to_value(cm).map_err(|e| ClusterError::Api(e.to_string()))?;
        apply["apiVersion"] = "v1".into();
        apply["kind"] = "ConfigMap".into();
        bounded(
            self.timeout,
            self.api::<ConfigMap>(ns).patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&apply),
            ),
        )
        .await
        .map(drop)
    }

    async fn kept_logs(
        &self,
        ns: &str,
    ) -> Result<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>> {
        let lp = ListParams::default()
            .labels(crate::vocab::LABEL_LOG_TAIL)
            .limit(PAGE);
        // Metadata only: the logs themselves are not read.
        let api: Api<ConfigMap> = self.api(ns);
        let mut out = Vec::new();
        let mut lp = lp;
        loop {
            let page = bounded(self.timeout, api.list_metadata(&lp)).await?;
            out.extend(page.items.into_iter().map(|m| m.metadata));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp.continue_token = Some(token),
                None => return Ok(out),
            }
        }
    }

    async fn delete_kept_log(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match bounded(self.timeout, self.api::<ConfigMap>(ns).delete(name, &dp)).await {
            Ok(_) | Err(ClusterError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn event(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<()> {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_string(),
            secondary: None,
        };
        bounded(self.timeout, self.recorder.publish(&ev, regarding)).await
    }
}

impl ClientApi for KubeCluster {
    async fn pools(&self, ns: &str) -> Result<Vec<WorkerPool>> {
        Ok(bounded(
            self.timeout,
            self.api::<WorkerPool>(ns).list(&ListParams::default()),
        )
        .await?
        .items)
    }

    async fn create_job(&self, ns: &str, job: &Job) -> Result<Job> {
        bounded(
            self.timeout,
            self.api::<Job>(ns).create(&PostParams::default(), job),
        )
        .await
    }

    async fn get_job(&self, ns: &str, name: &str) -> Result<Option<Job>> {
        bounded(self.timeout, self.api::<Job>(ns).get_opt(name)).await
    }

    async fn delete_job(&self, ns: &str, name: &str) -> Result<()> {
        delete_if_present(self.api::<Job>(ns), name, None, self.timeout).await
    }

    async fn get_pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        bounded(self.timeout, self.api::<Pod>(ns).get_opt(name)).await
    }

    async fn job_pods(&self, ns: &str, job: &str) -> Result<Vec<Pod>> {
        let lp = ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}"));
        Ok(bounded(self.timeout, self.api::<Pod>(ns).list(&lp))
            .await?
            .items)
    }

    async fn watch_job(&self, ns: &str, name: &str) -> Result<JobUpdates> {
        use futures::StreamExt;
        let wc = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
        use kube::runtime::WatchStreamExt;
        let stream = kube::runtime::watcher(self.api::<Job>(ns), wc)
            .default_backoff()
            .filter_map(|event| async move {
                use kube::runtime::watcher::Event as W;
                match event {
                    Ok(W::Apply(job) | W::InitApply(job)) => Some(Ok(Some(job))),
                    Ok(W::Delete(_)) => Some(Ok(None)),
                    Ok(W::Init | W::InitDone) => None,
                    Err(e) => Some(Err(ClusterError::Api(e.to_string()))),
                }
            });
        Ok(stream.boxed())
    }

    async fn follow_logs(
        &self,
        ns: &str,
        pod: &str,
        container: &str,
        since: Option<k8s_openapi::jiff::Timestamp>,
    ) -> Result<LogLines> {
        use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
        let lp = LogParams {
            container: Some(container.to_string()),
            follow: true,
            timestamps: true,
            since_time: since,
            ..LogParams::default()
        };
        let reader = bounded(self.timeout, self.api::<Pod>(ns).log_stream(pod, &lp)).await?;
        Ok(reader
            .lines()
            .map_err(|e| ClusterError::Api(e.to_string()))
            .boxed())
    }

    async fn read_log(&self, ns: &str, pod: &str, container: &str) -> Result<String> {
        let lp = LogParams {
            container: Some(container.to_string()),
            ..LogParams::default()
        };
        bounded(self.timeout, self.api::<Pod>(ns).logs(pod, &lp)).await
    }

    async fn get_configmap(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>> {
        bounded(self.timeout, self.api::<ConfigMap>(ns).get_opt(name)).await
    }
}
