//! `runyard cancel`: stop a run gracefully.

use super::{cluster, finished_phase, job_pods, ClientError};
use crate::cluster::ClientApi;
use crate::controller::model::{RunKey, RunKind};
use crate::vocab::{
    label, RunResult, ANNOTATION_RESULT, ANNOTATION_STOP, LABEL_WORKER, SCHEDULING_GATE,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use std::time::{Duration, Instant};

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReport {
    pub run: String,
    /// The run had been claimed (it was running).
    pub was_running: bool,
    /// The worker stopped within the grace period.
    pub stopped_in_time: bool,
}

/// Stops a run gracefully: marks it `Cancelled`, asks its worker to stop
/// (`runyard.dev/stop`, relayed by the launcher), waits up to `grace` for the
/// pods to end, then removes what is left.
pub async fn cancel<C: ClientApi>(
    c: &C,
    ns: &str,
    run: &RunKey,
    reason: &str,
    grace: Duration,
    poll: Duration,
) -> Result<CancelReport, ClientError> {
    let mark = serde_json::json!({ "metadata": { "annotations": { ANNOTATION_STOP: reason, ANNOTATION_RESULT: RunResult::Cancelled.as_str() } } });
    let not_found = || ClientError::NotFound(run.to_string());
    let read = cluster(format!("reading {run}"));
    let cx = Cancel {
        c,
        ns,
        run,
        grace,
        poll,
    };
    let (was_running, stopped_in_time) = match run.kind {
        RunKind::Job => {
            let job = c.get_job(ns, &run.name).await.map_err(read)?;
            let job = job.ok_or_else(not_found)?;
            cx.mark(&mark).await?;
            cx.job(&job, &mark).await?
        }
        RunKind::Pod => {
            let pod = c.get_pod(ns, &run.name).await.map_err(read)?;
            let pod = pod.ok_or_else(not_found)?;
            cx.mark(&mark).await?;
            cx.pod(&pod).await?
        }
    };
    Ok(CancelReport {
        run: run.to_string(),
        was_running,
        stopped_in_time,
    })
}

/// Polls `stopped` every `poll` for up to `grace`; whether it turned true.
async fn wait_stopped<F, Fut>(
    grace: Duration,
    poll: Duration,
    mut stopped: F,
) -> Result<bool, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, ClientError>>,
{
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if stopped().await? {
            return Ok(true);
        }
        tokio::time::sleep(poll).await;
    }
    Ok(false)
}

/// The names of a Job run's pods that have not finished.
async fn unfinished_pods<C: ClientApi>(
    c: &C,
    ns: &str,
    job: &Job,
) -> Result<Vec<String>, ClientError> {
    Ok(job_pods(c, ns, job)
        .await?
        .iter()
        .filter(|p| !finished_phase(p))
        .map(|p| p.name_any())
        .collect())
}

struct Cancel<'a, C> {
    c: &'a C,
    ns: &'a str,
    run: &'a RunKey,
    grace: Duration,
    poll: Duration,
}

impl<C: ClientApi> Cancel<'_, C> {
    async fn mark(&self, mark: &serde_json::Value) -> Result<(), ClientError> {
        self.c
            .patch_run(self.ns, self.run, mark)
            .await
            .map_err(cluster(format!("marking {} cancelled", self.run)))
    }

    /// `(was running, stopped in time)`.
    async fn job(&self, job: &Job, mark: &serde_json::Value) -> Result<(bool, bool), ClientError> {
        let (c, ns, name) = (self.c, self.ns, &self.run.name);
        let queued = job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
            && label(&job.metadata, LABEL_WORKER).is_none();
        if queued {
            c.delete_job(ns, name)
                .await
                .map_err(cluster("deleting the queued Job"))?;
            return Ok((false, true));
        }
        for pod in unfinished_pods(c, ns, job).await? {
            c.patch_pod(ns, &pod, mark)
                .await
                .map_err(cluster("asking the worker to stop"))?;
        }
        let stopped = wait_stopped(self.grace, self.poll, || async {
            Ok(unfinished_pods(c, ns, job).await?.is_empty())
        })
        .await?;
        // Fail the Job now (its deadline has passed), so the Job controller
        // starts no other pod, and remove what still runs.
        let elapsed = job
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map_or(1, |t| {
                (Timestamp::now().as_second() - t.0.as_second()).max(1)
            });
        let fail = serde_json::json!({ "spec": { "activeDeadlineSeconds": elapsed } });
        c.patch_job(ns, name, &fail)
            .await
            .map_err(cluster("ending the Job"))?;
        for pod in unfinished_pods(c, ns, job).await? {
            c.delete_pod(ns, &pod)
                .await
                .map_err(cluster("deleting a run pod"))?;
        }
        Ok((true, stopped))
    }

    /// `(was running, stopped in time)`.
    async fn pod(&self, pod: &Pod) -> Result<(bool, bool), ClientError> {
        let (c, ns, name) = (self.c, self.ns, &self.run.name);
        let gated = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| g.iter().any(|g| g.name == SCHEDULING_GATE));
        let stopped = gated
            || wait_stopped(self.grace, self.poll, || async {
                let pod = c
                    .get_pod(ns, name)
                    .await
                    .map_err(cluster("reading the Pod"))?;
                Ok(pod.is_none_or(|p| finished_phase(&p)))
            })
            .await?;
        c.delete_pod(ns, name)
            .await
            .map_err(cluster("deleting the Pod"))?;
        Ok((!gated, stopped))
    }
}
