//! From the objects of one pool (its WorkerPool, Workers, run Jobs and run
//! Pods) to the model's [`Snapshot`].

use super::{FinishedPod, JobPod, Run, RunKey, RunPhase, RunningPod, Snapshot, WorkerView};
use crate::crd::{Worker, WorkerPool};
use crate::vocab::{
    annotation, controlled_by_job, controlling_job, is_injected, label, ANNOTATION_CLAIMED_AT,
    ANNOTATION_PRIORITY, ANNOTATION_QUEUE, ANNOTATION_RESULT, LABEL_WORKER, SCHEDULING_GATE,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

/// A run Job as the controller keeps it. A typed `Job` is ~2.6 KB before any
/// of its data (its pod template is inline); a long queue is held as these
/// instead.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    /// The Job's metadata, without managedFields.
    pub metadata: ObjectMeta,
    pub suspend: Option<bool>,
    /// `(type, status)` of the Job's conditions.
    pub conditions: Vec<(String, String)>,
}

impl JobSummary {
    pub fn of(job: &Job) -> Self {
        let mut metadata = job.metadata.clone();
        metadata.managed_fields = None;
        Self {
            metadata,
            suspend: job.spec.as_ref().and_then(|s| s.suspend),
            conditions: job
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
        }
    }

    pub fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    fn condition_true(&self, types: &[&str]) -> bool {
        self.conditions
            .iter()
            .any(|(t, status)| types.contains(&t.as_str()) && status == "True")
    }
}

fn seconds(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

/// A run Job as the model sees it. Since Kubernetes 1.31 the Job controller
/// sets `SuccessCriteriaMet` / `FailureTarget` before `Complete` / `Failed`:
/// either means finished.
pub fn run_from_job(job: &JobSummary) -> Run {
    let phase = if job.condition_true(&["Complete", "SuccessCriteriaMet"]) {
        RunPhase::Succeeded
    } else if job.condition_true(&["Failed", "FailureTarget"]) {
        RunPhase::Failed
    } else if job.suspend == Some(true) {
        RunPhase::Queued
    } else {
        RunPhase::Running
    };
    run_common(
        RunKey::job(job.name()),
        &job.metadata,
        phase,
        false,
        Vec::new(),
    )
}

fn run_common(
    key: RunKey,
    meta: &ObjectMeta,
    phase: RunPhase,
    escaped: bool,
    other_gates: Vec<String>,
) -> Run {
    Run {
        key,
        resource_version: meta.resource_version.clone().unwrap_or_default(),
        created: seconds(meta),
        priority: annotation(meta, ANNOTATION_PRIORITY)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0),
        worker: label(meta, LABEL_WORKER).map(str::to_string),
        phase,
        result_recorded: annotation(meta, ANNOTATION_RESULT).is_some(),
        queue_note: annotation(meta, ANNOTATION_QUEUE).map(str::to_string),
        escaped_injection: escaped,
        other_gates,
        uid: meta.uid.clone(),
        claimed_at: annotation(meta, ANNOTATION_CLAIMED_AT)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .map(|t| t.as_second()),
    }
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// A bare run Pod as the model sees it (`None` for pods controlled by a Job).
pub fn run_from_pod(pod: &Pod) -> Option<Run> {
    if controlled_by_job(&pod.metadata) {
        return None;
    }
    let gates: Vec<String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .into_iter()
        .flatten()
        .map(|g| g.name.clone())
        .collect();
    let gated = gates.iter().any(|g| g == SCHEDULING_GATE);
    let phase = match pod_phase(pod) {
        Some("Succeeded") => RunPhase::Succeeded,
        Some("Failed") => RunPhase::Failed,
        _ if gated => RunPhase::Queued,
        _ => RunPhase::Running,
    };
    let other_gates = gates.into_iter().filter(|g| g != SCHEDULING_GATE).collect();
    let escaped = !is_injected(&pod.metadata) && pod.metadata.deletion_timestamp.is_none();
    Some(run_common(
        RunKey::pod(pod.name_any()),
        &pod.metadata,
        phase,
        escaped,
        other_gates,
    ))
}

/// A finished run pod that history limits apply to.
pub fn finished_pod(pod: &Pod) -> Option<FinishedPod> {
    let succeeded = match pod_phase(pod)? {
        "Succeeded" => true,
        "Failed" => false,
        _ => return None,
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let worker = label(&pod.metadata, LABEL_WORKER)?.to_string();
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max()
        .unwrap_or_else(|| seconds(&pod.metadata));
    Some(FinishedPod {
        name: pod.name_any(),
        worker,
        succeeded,
        finished,
    })
}

/// A run pod in phase Running.
pub fn running_pod(pod: &Pod) -> Option<RunningPod> {
    (pod_phase(pod) == Some("Running")).then(|| RunningPod {
        name: pod.name_any(),
        job: controlling_job(&pod.metadata).map(str::to_string),
        container: pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|c| c.name.clone()),
        started: pod
            .status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second()),
    })
}

/// A pod controlled by a Job, as the model sees it (`None` for bare pods).
pub fn job_pod(pod: &Pod) -> Option<JobPod> {
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| {
        o.controller == Some(true) && o.kind == "Job" && o.api_version.starts_with("batch/")
    })?;
    Some(JobPod {
        name: pod.name_any(),
        resource_version: pod.metadata.resource_version.clone().unwrap_or_default(),
        job: owner.name.clone(),
        created: seconds(&pod.metadata),
        finished: matches!(pod_phase(pod), Some("Succeeded" | "Failed"))
            || pod.metadata.deletion_timestamp.is_some(),
    })
}

/// A worker as the model sees it.
pub fn worker_view(w: &Worker) -> WorkerView {
    let status = w.status.clone().unwrap_or_default();
    WorkerView {
        name: w.name_any(),
        resource_version: w.metadata.resource_version.clone().unwrap_or_default(),
        phase: status.phase,
        current_run: status.current_run.as_deref().and_then(RunKey::parse),
    }
}

/// The model's view of a pool's objects.
pub fn model_snapshot(
    pool: Option<&WorkerPool>,
    workers: &[Worker],
    jobs: &[JobSummary],
    pods: &[Pod],
) -> Snapshot {
    let mut runs: Vec<Run> = jobs.iter().map(run_from_job).collect();
    runs.extend(pods.iter().filter_map(run_from_pod));
    Snapshot {
        pool_name: pool.map(|p| p.name_any()).unwrap_or_default(),
        pool: pool.map(|p| p.spec.clone()),
        workers: workers.iter().map(worker_view).collect(),
        runs,
        finished_pods: pods.iter().filter_map(finished_pod).collect(),
        running_pods: pods.iter().filter_map(running_pod).collect(),
        job_pods: pods.iter().filter_map(job_pod).collect(),
        now: 0,
        silent: Vec::new(),
    }
}
