//! One reconcile of one pool: read a fresh snapshot through [`Cluster`],
//! [`decide`], and apply the writes, each guarded by the resourceVersion it was
//! decided on. Level-based and idempotent: a failed or conflicting write is
//! simply decided again on the next pass.

use super::cluster::{reference, Cluster, ClusterError, JobSummary};
use super::metrics::ControllerMetrics;
use super::model::{
    decide, Action, Counts, FinishedPod, Outcome, Run, RunKey, RunKind, RunPhase, Snapshot,
    WorkerView,
};
use super::{ANNOTATION_CLAIMED_AT, ANNOTATION_QUEUE, ANNOTATION_RESULT, LABEL_WORKER_POOL};
use crate::crd::{Worker, WorkerPhase, WorkerPool, WorkerPoolStatus, WorkerSpec, WorkerStatus};
use crate::injection::{
    is_injected, label, ANNOTATION_PRIORITY, LABEL_RUN_ID, LABEL_WORKER, SCHEDULING_GATE,
};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Instant;

/// What one reconcile did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub claims: usize,
    pub releases: usize,
    pub conflicts: usize,
    pub errors: Vec<String>,
    pub counts: Counts,
    /// The pool exists.
    pub pool_exists: bool,
}

impl Report {
    /// Whether the pool should be reconciled again soon.
    pub fn needs_retry(&self) -> bool {
        self.conflicts > 0 || !self.errors.is_empty()
    }
}

fn seconds(meta: &ObjectMeta) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map_or(0, |t| t.0.as_second())
}

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

fn condition_true(job: &JobSummary, types: &[&str]) -> bool {
    job.conditions
        .iter()
        .any(|(t, status)| types.contains(&t.as_str()) && status == "True")
}

/// A run Job as the model sees it.
pub fn run_from_job(job: &JobSummary) -> Run {
    let phase = if condition_true(job, &["Complete", "SuccessCriteriaMet"]) {
        RunPhase::Succeeded
    } else if condition_true(job, &["Failed", "FailureTarget"]) {
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
    }
}

fn owned_by_job(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "Job")
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref().and_then(|s| s.phase.as_deref())
}

/// A bare run Pod as the model sees it (`None` for pods owned by a Job).
pub fn run_from_pod(pod: &Pod) -> Option<Run> {
    if owned_by_job(pod) {
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

/// Reads a pool's snapshot.
pub async fn snapshot<C: Cluster>(
    c: &C,
    ns: &str,
    pool: &str,
) -> Result<(Option<WorkerPool>, Vec<Worker>, Vec<JobSummary>, Vec<Pod>), ClusterError> {
    let (p, w, j, pods) = futures::join!(
        c.pool(ns, pool),
        c.workers(ns, pool),
        c.jobs(ns, pool),
        c.pods(ns, pool)
    );
    Ok((p?, w?, j?, pods?))
}

/// The model's view of a pool's listing (as read by [`snapshot`]).
pub fn model_snapshot(
    pool: Option<&WorkerPool>,
    workers: &[Worker],
    jobs: &[JobSummary],
    pods: &[Pod],
) -> Snapshot {
    let mut runs: Vec<Run> = jobs.iter().map(run_from_job).collect();
    runs.extend(pods.iter().filter_map(run_from_pod));
    Snapshot {
        pool: pool.map(|p| p.spec.clone()),
        workers: workers.iter().map(worker_view).collect(),
        runs,
        finished_pods: pods.iter().filter_map(finished_pod).collect(),
    }
}

/// Reconciles one pool.
pub async fn reconcile_pool<C: Cluster>(
    c: &C,
    metrics: &ControllerMetrics,
    ns: &str,
    pool_name: &str,
) -> Result<Report, ClusterError> {
    let started = Instant::now();
    let (pool, workers, jobs, pods) = snapshot(c, ns, pool_name).await?;
    let pool = pool.filter(|p| p.metadata.deletion_timestamp.is_none());
    let snap = model_snapshot(pool.as_ref(), &workers, &jobs, &pods);
    let (actions, counts) = decide(&snap);

    let refs: BTreeMap<RunKey, ObjectReference> = jobs
        .iter()
        .map(|j| (RunKey::job(j.name()), j.reference()))
        .chain(
            pods.iter()
                .filter(|p| !owned_by_job(p))
                .map(|p| (RunKey::pod(p.name_any()), reference(p))),
        )
        .collect();
    let gates = snap
        .runs
        .iter()
        .filter(|r| r.key.kind == RunKind::Pod)
        .map(|r| (r.key.clone(), r.other_gates.clone()))
        .collect();
    let mut exec = Exec {
        c,
        metrics,
        ns,
        pool_name,
        pool: pool.as_ref(),
        workers: workers.into_iter().map(|w| (w.name_any(), w)).collect(),
        refs,
        gates,
        report: Report {
            counts,
            pool_exists: pool.is_some(),
            ..Report::default()
        },
    };
    for action in actions {
        exec.apply(action).await;
    }
    exec.check_logs_timeouts(&jobs, &pods).await;
    if let Some(p) = &pool {
        exec.write_status(p).await;
    }
    let report = exec.report;
    metrics.observe_reconcile(pool_name, started.elapsed(), &report);
    Ok(report)
}

struct Exec<'a, C> {
    c: &'a C,
    metrics: &'a ControllerMetrics,
    ns: &'a str,
    pool_name: &'a str,
    pool: Option<&'a WorkerPool>,
    workers: BTreeMap<String, Worker>,
    refs: BTreeMap<RunKey, ObjectReference>,
    gates: BTreeMap<RunKey, Vec<String>>,
    report: Report,
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl<C: Cluster> Exec<'_, C> {
    fn failed(&mut self, what: &str, e: ClusterError) {
        self.metrics.reconcile_error(e.label());
        if e == ClusterError::Conflict {
            self.report.conflicts += 1;
        } else {
            self.report.errors.push(format!("{what}: {e}"));
        }
        tracing::debug!(pool = self.pool_name, namespace = self.ns, what, error = %e, "write failed; retried on the next pass");
    }

    async fn event(&self, run: &RunKey, warning: bool, reason: &str, note: &str) {
        if let Some(r) = self.refs.get(run) {
            if let Err(e) = self.c.event(r, warning, reason, note).await {
                tracing::debug!(error = %e, "event not published");
            }
        }
    }

    async fn pool_event(&self, warning: bool, reason: &str, note: &str) {
        if let Some(p) = self.pool {
            let _ = self.c.event(&reference(p), warning, reason, note).await;
        }
    }

    /// Writes a worker's status. `expected_rv` (if not empty) must be the
    /// version the decision saw.
    async fn set_worker_status(
        &mut self,
        name: &str,
        expected_rv: &str,
        f: impl FnOnce(&mut WorkerStatus),
    ) -> Result<(), ClusterError> {
        let Some(w) = self.workers.get(name) else {
            return Err(ClusterError::NotFound);
        };
        if !expected_rv.is_empty() && w.metadata.resource_version.as_deref() != Some(expected_rv) {
            return Err(ClusterError::Conflict);
        }
        let mut updated = w.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        f(status);
        let written = self.c.replace_worker_status(self.ns, &updated).await?;
        self.workers.insert(name.to_string(), written);
        Ok(())
    }

    fn claim_patch(
        &self,
        run: &RunKey,
        rv: &str,
        worker: &str,
        other_gates: Option<&[String]>,
    ) -> Value {
        let mut patch = json!({
            "metadata": {
                "resourceVersion": rv,
                "labels": { LABEL_WORKER: worker },
                "annotations": { ANNOTATION_QUEUE: null, ANNOTATION_CLAIMED_AT: now().0.to_string() },
            }
        });
        match run.kind {
            RunKind::Job => {
                let mut spec = json!({
                    "suspend": false,
                    "template": { "metadata": { "labels": { LABEL_WORKER: worker } } },
                });
                if let Some(t) = self
                    .pool
                    .and_then(|p| p.spec.run_timeout.as_deref())
                    .and_then(|t| crate::duration::parse(t).ok())
                {
                    spec["activeDeadlineSeconds"] = json!(t.as_secs().max(1));
                }
                patch["spec"] = spec;
            }
            RunKind::Pod => {
                let gates: Vec<Value> = other_gates
                    .unwrap_or_default()
                    .iter()
                    .map(|g| json!({ "name": g }))
                    .collect();
                patch["spec"] = json!({ "schedulingGates": gates });
            }
        }
        patch
    }

    async fn patch_run(&self, run: &RunKey, patch: &Value) -> Result<(), ClusterError> {
        match run.kind {
            RunKind::Job => self.c.patch_job(self.ns, &run.name, patch).await,
            RunKind::Pod => self.c.patch_pod(self.ns, &run.name, patch).await,
        }
    }

    async fn apply(&mut self, action: Action) {
        match action {
            Action::CreateWorker => self.create_worker().await,
            Action::DeleteWorker { worker, rv } => {
                match self.c.delete_worker(self.ns, &worker, &rv).await {
                    Ok(()) | Err(ClusterError::NotFound) => {
                        self.workers.remove(&worker);
                    }
                    Err(e) => self.failed("deleting a worker", e),
                }
            }
            Action::Drain { worker, rv } => {
                if let Err(e) = self
                    .set_worker_status(&worker, &rv, |s| s.phase = WorkerPhase::Draining)
                    .await
                {
                    self.failed("draining a worker", e);
                }
            }
            Action::Claim {
                worker,
                worker_rv,
                run,
                run_rv,
            } => self.claim(&worker, &worker_rv, &run, &run_rv).await,
            Action::CompleteClaim {
                worker,
                run,
                run_rv,
            } => {
                let gates = self.other_gates(&run);
                let patch = self.claim_patch(&run, &run_rv, &worker, gates.as_deref());
                match self.patch_run(&run, &patch).await {
                    Ok(()) => {
                        self.report.claims += 1;
                        self.metrics.claimed(self.pool_name);
                        self.event(
                            &run,
                            false,
                            "Claimed",
                            &format!(
                                "claimed by worker {worker} (completed after an interruption)"
                            ),
                        )
                        .await;
                    }
                    Err(e) => self.failed("completing a claim", e),
                }
            }
            Action::AdoptRun {
                worker,
                worker_rv,
                run,
            } => {
                let key = run.to_string();
                if let Err(e) = self
                    .set_worker_status(&worker, &worker_rv, |s| {
                        s.phase = WorkerPhase::Busy;
                        s.current_run = Some(key);
                    })
                    .await
                {
                    self.failed("re-binding a worker to its run", e);
                }
            }
            Action::Release {
                worker,
                rv,
                run,
                outcome,
                delete,
                record,
            } => {
                self.release(&worker, &rv, &run, outcome, delete, record)
                    .await
            }
            Action::RecordResult { run, outcome } => self.record(&run, outcome).await,
            Action::DeletePod { name, reason } => match self.c.delete_pod(self.ns, &name).await {
                Ok(()) => tracing::debug!(pod = %name, reason, "deleted run pod"),
                Err(e) => self.failed("deleting a run pod", e),
            },
            Action::FailRun {
                run,
                reason,
                message,
            } => self.fail_run(&run, reason, &message).await,
            Action::QueueNote { run, note, .. } => {
                let patch = json!({ "metadata": { "annotations": { ANNOTATION_QUEUE: note } } });
                match self.patch_run(&run, &patch).await {
                    Ok(()) => self.event(&run, false, "Queued", &note).await,
                    Err(ClusterError::NotFound) => {}
                    Err(e) => self.failed("updating a queue note", e),
                }
            }
        }
    }

    /// Scheduling gates of a run Pod other than runyard's (kept when ungating).
    fn other_gates(&self, run: &RunKey) -> Option<Vec<String>> {
        self.gates.get(run).cloned()
    }

    async fn create_worker(&mut self) {
        let Some(pool) = self.pool else { return };
        let started = Instant::now();
        let name = format!(
            "{}-{}",
            self.pool_name,
            ulid::Ulid::new().to_string().to_ascii_lowercase()
        );
        let owner = OwnerReference {
            api_version: WorkerPool::api_version(&()).into_owned(),
            kind: WorkerPool::kind(&()).into_owned(),
            name: self.pool_name.to_string(),
            uid: pool.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let mut w = Worker::new(
            &name,
            WorkerSpec {
                pool: self.pool_name.to_string(),
            },
        );
        w.metadata.namespace = Some(self.ns.to_string());
        w.metadata.labels = Some(BTreeMap::from([(
            LABEL_WORKER_POOL.to_string(),
            self.pool_name.to_string(),
        )]));
        w.metadata.owner_references = Some(vec![owner]);
        let result = async {
            let created = self.c.create_worker(self.ns, &w).await?;
            let mut with_status = created;
            with_status.status = Some(WorkerStatus {
                phase: WorkerPhase::Idle,
                registered_at: Some(now()),
                ..WorkerStatus::default()
            });
            self.c.replace_worker_status(self.ns, &with_status).await
        }
        .await;
        match result {
            Ok(w) => {
                self.metrics
                    .worker_created(self.pool_name, started.elapsed(), true);
                self.workers.insert(name, w);
            }
            Err(e) => {
                self.metrics
                    .worker_created(self.pool_name, started.elapsed(), false);
                let msg = format!("cannot register worker {name}: {e}");
                self.pool_event(true, "WorkerRegistrationFailed", &msg)
                    .await;
                self.failed("registering a worker", e);
            }
        }
    }

    async fn claim(&mut self, worker: &str, worker_rv: &str, run: &RunKey, run_rv: &str) {
        let started = Instant::now();
        let key = run.to_string();
        // 1. The worker, guarded: at most one run per worker.
        if let Err(e) = self
            .set_worker_status(worker, worker_rv, |s| {
                s.phase = WorkerPhase::Busy;
                s.current_run = Some(key);
                s.last_heartbeat = Some(now());
            })
            .await
        {
            self.failed("claiming a worker", e);
            return;
        }
        // 2. The run, guarded: at most one worker per run.
        let gates = self.other_gates(run);
        let patch = self.claim_patch(run, run_rv, worker, gates.as_deref());
        match self.patch_run(run, &patch).await {
            Ok(()) => {
                self.report.claims += 1;
                self.metrics.claimed(self.pool_name);
                self.metrics
                    .claim_duration(self.pool_name, started.elapsed());
                self.event(
                    run,
                    false,
                    "Claimed",
                    &format!("claimed by worker {worker}"),
                )
                .await;
            }
            Err(e @ (ClusterError::Conflict | ClusterError::NotFound)) => {
                // Someone else changed (claimed, deleted) the run: give the worker back.
                if let Err(rollback) = self
                    .set_worker_status(worker, "", |s| {
                        s.phase = WorkerPhase::Idle;
                        s.current_run = None;
                    })
                    .await
                {
                    self.failed("rolling back a claim", rollback);
                }
                self.failed("claiming a run", e);
            }
            // Timeouts and other errors: the write may or may not have landed;
            // the next pass completes or releases the claim from what it reads.
            Err(e) => self.failed("claiming a run", e),
        }
    }

    async fn release(
        &mut self,
        worker: &str,
        rv: &str,
        run: &RunKey,
        outcome: Option<Outcome>,
        delete: bool,
        record: bool,
    ) {
        let finished = matches!(outcome, Some(Outcome::Succeeded | Outcome::Failed));
        let result = if delete {
            self.c.delete_worker(self.ns, worker, rv).await.map(|()| {
                self.workers.remove(worker);
            })
        } else {
            self.set_worker_status(worker, rv, |s| {
                s.phase = WorkerPhase::Idle;
                s.current_run = None;
                s.last_heartbeat = Some(now());
                if finished {
                    s.runs_completed += 1;
                }
            })
            .await
        };
        if let Err(e) = result {
            self.failed("releasing a worker", e);
            // A failed release must not let this pass claim the worker.
            self.workers.remove(worker);
            return;
        }
        self.report.releases += 1;
        match outcome {
            Some(o @ (Outcome::Succeeded | Outcome::Failed)) if record => self.record(run, o).await,
            Some(Outcome::Succeeded | Outcome::Failed) => {}
            Some(Outcome::Lost) => {
                let note = format!("worker {worker} released: its run {run} no longer exists");
                self.pool_event(true, "RunLost", &note).await;
            }
            None => {}
        }
    }

    async fn record(&mut self, run: &RunKey, outcome: Outcome) {
        let patch =
            json!({ "metadata": { "annotations": { ANNOTATION_RESULT: outcome.as_str() } } });
        match self.patch_run(run, &patch).await {
            Ok(()) | Err(ClusterError::NotFound) => {
                let warning = outcome != Outcome::Succeeded;
                self.event(
                    run,
                    warning,
                    outcome.as_str(),
                    &format!("run {}", outcome.as_str().to_lowercase()),
                )
                .await;
            }
            Err(e) => self.failed("recording a result", e),
        }
    }

    async fn fail_run(&mut self, run: &RunKey, reason: &'static str, message: &str) {
        self.event(run, true, reason, message).await;
        let result = match run.kind {
            RunKind::Job => {
                // A suspended Job cannot be failed directly: resume it with a
                // deadline it has already passed; the webhook denies its pods
                // (the pool is gone), and the Job controller fails it.
                let patch = json!({
                    "metadata": { "annotations": { ANNOTATION_RESULT: "Failed", ANNOTATION_QUEUE: message } },
                    "spec": { "suspend": false, "activeDeadlineSeconds": 1 },
                });
                self.c.patch_job(self.ns, &run.name, &patch).await
            }
            RunKind::Pod => self.c.delete_pod(self.ns, &run.name).await,
        };
        if let Err(e) = result {
            self.failed("failing a run", e);
        }
    }

    /// Fails busy runs whose worker container printed nothing for `logsTimeout`.
    async fn check_logs_timeouts(&mut self, jobs: &[JobSummary], pods: &[Pod]) {
        let Some(timeout) = self
            .pool
            .and_then(|p| p.spec.logs_timeout.as_deref())
            .and_then(|t| crate::duration::parse(t).ok())
        else {
            return;
        };
        let limit = timeout.as_secs() as i64;
        let now = Timestamp::now().as_second();
        let claimed_long_ago = |meta: &ObjectMeta| {
            annotation(meta, ANNOTATION_CLAIMED_AT)
                .and_then(|t| t.parse::<Timestamp>().ok())
                .is_some_and(|t| now - t.as_second() >= limit)
        };
        let running_pod = |run_id: Option<&str>, own_name: Option<&str>| {
            pods.iter().find(|p| {
                pod_phase(p) == Some("Running")
                    && (own_name == Some(p.name_any().as_str())
                        || (run_id.is_some() && label(&p.metadata, LABEL_RUN_ID) == run_id))
            })
        };
        let mut stale: Vec<(RunKey, i64)> = Vec::new();
        for job in jobs {
            let r = run_from_job(job);
            if r.phase == RunPhase::Running && r.worker.is_some() && claimed_long_ago(&job.metadata)
            {
                if let Some(p) = running_pod(label(&job.metadata, LABEL_RUN_ID), None) {
                    stale.push((r.key, self.silent_for(p, limit).await.unwrap_or(0)));
                }
            }
        }
        for pod in pods.iter().filter(|p| !owned_by_job(p)) {
            if label(&pod.metadata, LABEL_WORKER).is_some() && claimed_long_ago(&pod.metadata) {
                if let Some(p) = running_pod(None, Some(&pod.name_any())) {
                    stale.push((
                        RunKey::pod(pod.name_any()),
                        self.silent_for(p, limit).await.unwrap_or(0),
                    ));
                }
            }
        }
        for (run, elapsed) in stale.into_iter().filter(|(_, e)| *e > 0) {
            let message = format!(
                "runyard: the worker printed nothing for {}s (logsTimeout)",
                limit
            );
            self.event(&run, true, "LogsTimeout", &message).await;
            let patch = json!({
                "metadata": { "annotations": { ANNOTATION_RESULT: "LogsTimeout" } },
                "spec": { "activeDeadlineSeconds": elapsed.max(1) },
            });
            if let Err(e) = self.patch_run(&run, &patch).await {
                self.failed("failing a silent run", e);
            }
        }
    }

    /// `Some(age_seconds)` if the pod's first container printed nothing in the
    /// last `limit` seconds (age: how long the pod has been running, to set a
    /// deadline that has already passed).
    async fn silent_for(&self, pod: &Pod, limit: i64) -> Option<i64> {
        let container = pod.spec.as_ref()?.containers.first()?.name.clone();
        match self
            .c
            .printed_since(self.ns, &pod.name_any(), &container, limit)
            .await
        {
            Ok(false) => {
                let started = pod.status.as_ref()?.start_time.as_ref()?.0.as_second();
                Some((Timestamp::now().as_second() - started).max(1))
            }
            _ => None,
        }
    }

    async fn write_status(&mut self, pool: &WorkerPool) {
        let c = self.report.counts;
        let ready = self.report.errors.is_empty() && c.actual == c.desired;
        let (reason, message) = if !self.report.errors.is_empty() {
            ("ReconcileError", self.report.errors.join("; "))
        } else if ready {
            ("PoolReady", format!("{} workers registered", c.actual))
        } else {
            (
                "Scaling",
                format!("{} of {} workers registered", c.actual, c.desired),
            )
        };
        let previous = pool.status.clone().unwrap_or_default();
        let old_ready = previous.conditions.iter().find(|c| c.type_ == "Ready");
        let status_str = if ready { "True" } else { "False" };
        let transition = match old_ready {
            Some(old) if old.status == status_str => old.last_transition_time.clone(),
            _ => now(),
        };
        let condition = Condition {
            type_: "Ready".into(),
            status: status_str.into(),
            reason: reason.into(),
            message,
            observed_generation: pool.metadata.generation,
            last_transition_time: transition,
        };
        let status = WorkerPoolStatus {
            actual_pool_size: c.actual,
            idle_workers: c.idle,
            busy_workers: c.busy,
            queued_runs: c.queued,
            conditions: vec![condition],
            observed_generation: pool.metadata.generation,
        };
        self.metrics.pool_state(self.pool_name, &c);
        let unchanged = previous.actual_pool_size == status.actual_pool_size
            && previous.idle_workers == status.idle_workers
            && previous.busy_workers == status.busy_workers
            && previous.queued_runs == status.queued_runs
            && previous.observed_generation == status.observed_generation
            && old_ready.is_some_and(|o| {
                o.status == status.conditions[0].status
                    && o.reason == status.conditions[0].reason
                    && o.message == status.conditions[0].message
            });
        if unchanged {
            return;
        }
        if let Err(e) = self
            .c
            .patch_pool_status(self.ns, self.pool_name, &status)
            .await
        {
            self.failed("writing pool status", e);
        }
    }
}
