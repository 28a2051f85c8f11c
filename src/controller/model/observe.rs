//! From the objects of one pool (its WorkerPool, Workers, run Jobs and run
//! Pods) to the model's [`Snapshot`].

use super::{
    FinishedPod, JobPod, PodFacts, Run, RunKey, RunPhase, RunningPod, Snapshot, WorkerView,
};
use crate::crd::{Worker, WorkerPool};
use crate::vocab::{
    annotation, controlled_by_job, controlling_job, is_injected, label, ANNOTATION_CLAIMED_AT,
    ANNOTATION_PRIORITY, ANNOTATION_QUEUE, ANNOTATION_RESULT, INIT_CONTAINER, LABEL_WORKER,
    LAUNCHER_CONTAINER, SCHEDULING_GATE,
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
    /// The Job's conditions.
    pub conditions: Vec<JobCondition>,
    /// `status.startTime`, seconds since the epoch.
    pub start_time: Option<i64>,
    /// `status.completionTime`, seconds since the epoch.
    pub completion_time: Option<i64>,
}

/// One of a Job's conditions.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCondition {
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    /// Seconds since the epoch.
    pub since: Option<i64>,
}

impl JobSummary {
    pub fn of(job: &Job) -> Self {
        let mut metadata = job.metadata.clone();
        metadata.managed_fields = None;
        let status = job.status.as_ref();
        Self {
            metadata,
            suspend: job.spec.as_ref().and_then(|s| s.suspend),
            conditions: status
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .map(|c| JobCondition {
                    type_: c.type_.clone(),
                    status: c.status.clone(),
                    reason: c.reason.clone(),
                    message: c.message.clone(),
                    since: c.last_transition_time.as_ref().map(|t| t.0.as_second()),
                })
                .collect(),
            start_time: status
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.as_second()),
            completion_time: status
                .and_then(|s| s.completion_time.as_ref())
                .map(|t| t.0.as_second()),
        }
    }

    pub fn name(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }

    fn condition(&self, types: &[&str]) -> Option<&JobCondition> {
        self.conditions
            .iter()
            .find(|c| types.contains(&c.type_.as_str()) && c.status == "True")
    }

    fn condition_true(&self, types: &[&str]) -> bool {
        self.condition(types).is_some()
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
    let mut run = run_common(
        RunKey::job(job.name()),
        &job.metadata,
        phase,
        false,
        Vec::new(),
    );
    run.started = job.start_time;
    let end = job.condition(&["Complete", "SuccessCriteriaMet", "Failed", "FailureTarget"]);
    run.finished = job.completion_time.or_else(|| end.and_then(|c| c.since));
    run.finish_reason = end
        .filter(|c| c.type_ == "Failed" || c.type_ == "FailureTarget")
        .and_then(|c| Some((c.reason.clone()?, c.message.clone().unwrap_or_default())));
    run
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
        started: None,
        finished: None,
        finish_reason: None,
        active_deadline: None,
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
    let mut run = run_common(
        RunKey::pod(pod.name_any()),
        &pod.metadata,
        phase,
        escaped,
        other_gates,
    );
    let facts = pod_facts(pod);
    run.started = facts.started;
    run.finished = facts.finished;
    run.finish_reason = facts.reason.clone();
    run.active_deadline = pod.spec.as_ref().and_then(|s| s.active_deadline_seconds);
    Some(run)
}

/// Waiting reasons that mean "still being created", not a problem.
const CREATING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// What a pod says, for results, stuck pods and heartbeats.
pub fn pod_facts(pod: &Pod) -> PodFacts {
    let status = pod.status.as_ref();
    let statuses = || {
        status
            .and_then(|s| s.init_container_statuses.as_ref())
            .into_iter()
            .flatten()
            .chain(
                status
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten(),
            )
    };
    let worker_container = pod.spec.as_ref().and_then(|s| {
        s.containers
            .iter()
            .find(|c| c.name != LAUNCHER_CONTAINER && c.name != INIT_CONTAINER)
            .map(|c| c.name.clone())
    });
    let waiting = statuses().find_map(|c| {
        let w = c.state.as_ref()?.waiting.as_ref()?;
        let reason = w.reason.clone()?;
        (!CREATING.contains(&reason.as_str())).then(|| {
            (
                c.name.clone(),
                reason,
                w.message.clone().unwrap_or_default(),
            )
        })
    });
    let terminated = statuses()
        .find(|c| Some(&c.name) == worker_container.as_ref())
        .and_then(|c| c.state.as_ref()?.terminated.as_ref());
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_)
    };
    let false_since = |type_: &str| {
        condition(type_)
            .filter(|c| c.status == "False")
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0.as_second())
    };
    let not_ready_since = false_since("ContainersReady");
    let node_lost_since = false_since("Ready")
        .filter(|_| condition("ContainersReady").is_none_or(|c| c.status == "True"));
    PodFacts {
        name: pod.name_any(),
        phase: status.and_then(|s| s.phase.clone()),
        started: status
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0.as_second()),
        waiting,
        worker_container,
        exit_code: terminated.map(|t| t.exit_code),
        finished: terminated
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0.as_second()),
        reason: status.and_then(|s| s.reason.clone()).map(|r| {
            (
                r,
                status.and_then(|s| s.message.clone()).unwrap_or_default(),
            )
        }),
        launcher_ready: statuses()
            .find(|c| c.name == LAUNCHER_CONTAINER)
            .filter(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
            .map(|c| c.ready),
        not_ready_since,
        node_lost_since,
    }
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
        last_heartbeat: status.last_heartbeat.as_ref().map(|t| t.0.as_second()),
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
    // Each run's pod: a bare Pod itself, a Job's newest pod.
    let mut run_pods: std::collections::BTreeMap<RunKey, (i64, PodFacts)> = Default::default();
    for pod in pods {
        let key = match controlling_job(&pod.metadata) {
            Some(job) => RunKey::job(job),
            None => RunKey::pod(pod.name_any()),
        };
        let created = seconds(&pod.metadata);
        if run_pods.get(&key).is_none_or(|(c, _)| *c <= created) {
            run_pods.insert(key, (created, pod_facts(pod)));
        }
    }
    Snapshot {
        pool_name: pool.map(|p| p.name_any()).unwrap_or_default(),
        pool: pool.map(|p| p.spec.clone()),
        workers: workers.iter().map(worker_view).collect(),
        runs,
        finished_pods: pods.iter().filter_map(finished_pod).collect(),
        running_pods: pods.iter().filter_map(running_pod).collect(),
        job_pods: pods.iter().filter_map(job_pod).collect(),
        run_pods: run_pods.into_iter().map(|(k, (_, f))| (k, f)).collect(),
        now: 0,
        silent: Vec::new(),
    }
}
