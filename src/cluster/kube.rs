//! [`ControllerApi`] and [`ClientApi`] over kube-rs.

use super::{ClientApi, ClusterError, ControllerApi, LogLines, PoolReads, Result, RunWrites};
use crate::controller::model::JobSummary;
use crate::crd::{Worker, WorkerPool, WorkerPoolStatus};
use crate::vocab::{FIELD_MANAGER, LABEL_POOL, LABEL_WORKER_POOL};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;
use serde_json::Value;

impl From<kube::Error> for ClusterError {
    fn from(e: kube::Error) -> Self {
        match &e {
            kube::Error::Api(s) if s.code == 409 => Self::Conflict,
            kube::Error::Api(s) if s.code == 404 => Self::NotFound,
            kube::Error::Api(s) if s.code == 504 || s.code == 408 => Self::Timeout,
            kube::Error::HyperError(_) | kube::Error::Service(_) => {
                let text = e.to_string();
                if text.contains("timed out") || text.contains("timeout") {
                    Self::Timeout
                } else {
                    Self::Api(text)
                }
            }
            _ => Self::Api(e.to_string()),
        }
    }
}

/// The cluster API over kube-rs.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    recorder: Recorder,
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
        }
    }
}

/// Page size of list calls.
const PAGE: u32 = 500;

/// Deletes (background propagation); an object already gone is fine.
async fn delete_if_present<K>(api: Api<K>, name: &str) -> Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(e) => match ClusterError::from(e) {
            ClusterError::NotFound => Ok(()),
            other => Err(other),
        },
    }
}

fn selector(pool: &str) -> ListParams {
    ListParams::default().labels(&format!("{LABEL_POOL}={pool}"))
}

impl PoolReads for KubeCluster {
    async fn pool(&self, ns: &str, name: &str) -> Result<Option<WorkerPool>> {
        Ok(Api::<WorkerPool>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?)
    }

    async fn workers(&self, ns: &str, pool: &str) -> Result<Vec<Worker>> {
        let lp = ListParams::default().labels(&format!("{}={pool}", LABEL_WORKER_POOL));
        Ok(Api::<Worker>::namespaced(self.client.clone(), ns)
            .list(&lp)
            .await?
            .items)
    }

    async fn jobs(&self, ns: &str, pool: &str) -> Result<Vec<JobSummary>> {
        // Paged and summarised as it arrives: a long queue never sits in
        // memory as full objects.
        let api = Api::<Job>::namespaced(self.client.clone(), ns);
        let mut out = Vec::new();
        let mut lp = selector(pool).limit(PAGE);
        loop {
            let page = api.list(&lp).await?;
            out.extend(page.items.iter().map(JobSummary::of));
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(token) => lp = lp.continue_token(&token),
                None => return Ok(out),
            }
        }
    }

    async fn pods(&self, ns: &str, pool: &str) -> Result<Vec<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&selector(pool))
            .await?
            .items)
    }
}

impl RunWrites for KubeCluster {
    async fn patch_job(&self, ns: &str, name: &str, patch: &Value) -> Result<()> {
        Api::<Job>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn patch_pod(&self, ns: &str, name: &str, patch: &Value) -> Result<()> {
        Api::<Pod>::namespaced(self.client.clone(), ns)
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn delete_pod(&self, ns: &str, name: &str) -> Result<()> {
        delete_if_present(Api::<Pod>::namespaced(self.client.clone(), ns), name).await
    }

    async fn delete_pod_at(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::background()
        };
        match Api::<Pod>::namespaced(self.client.clone(), ns)
            .delete(name, &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match ClusterError::from(e) {
                ClusterError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}

impl ControllerApi for KubeCluster {
    async fn create_worker(&self, ns: &str, worker: &Worker) -> Result<Worker> {
        Ok(Api::<Worker>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), worker)
            .await?)
    }

    async fn replace_worker_status(&self, ns: &str, worker: &Worker) -> Result<Worker> {
        let api = Api::<Worker>::namespaced(self.client.clone(), ns);
        let name = worker.metadata.name.clone().unwrap_or_default();
        Ok(api
            .replace_status(&name, &PostParams::default(), worker)
            .await?)
    }

    async fn delete_worker(&self, ns: &str, name: &str, rv: &str) -> Result<()> {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(rv.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        Api::<Worker>::namespaced(self.client.clone(), ns)
            .delete(name, &dp)
            .await?;
        Ok(())
    }

    async fn patch_pool_status(
        &self,
        ns: &str,
        name: &str,
        status: &WorkerPoolStatus,
    ) -> Result<()> {
        let patch = serde_json::json!({ "status": status });
        Api::<WorkerPool>::namespaced(self.client.clone(), ns)
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
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
        let text = Api::<Pod>::namespaced(self.client.clone(), ns)
            .logs(pod, &lp)
            .await?;
        Ok(!text.is_empty())
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
        self.recorder.publish(&ev, regarding).await?;
        Ok(())
    }
}

impl ClientApi for KubeCluster {
    async fn pools(&self, ns: &str) -> Result<Vec<WorkerPool>> {
        Ok(Api::<WorkerPool>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await?
            .items)
    }

    async fn create_job(&self, ns: &str, job: &Job) -> Result<Job> {
        Ok(Api::<Job>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), job)
            .await?)
    }

    async fn get_job(&self, ns: &str, name: &str) -> Result<Option<Job>> {
        Ok(Api::<Job>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?)
    }

    async fn delete_job(&self, ns: &str, name: &str) -> Result<()> {
        delete_if_present(Api::<Job>::namespaced(self.client.clone(), ns), name).await
    }

    async fn get_pod(&self, ns: &str, name: &str) -> Result<Option<Pod>> {
        Ok(Api::<Pod>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?)
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
        let reader = Api::<Pod>::namespaced(self.client.clone(), ns)
            .log_stream(pod, &lp)
            .await?;
        Ok(reader
            .lines()
            .map_err(|e| ClusterError::Api(e.to_string()))
            .boxed())
    }
}
