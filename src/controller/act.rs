//! One reconcile of one pool: read the pool's objects, probe the logs the
//! decision needs, [`decide`], and apply the writes, each guarded by the
//! resourceVersion it was decided on. Level-based and idempotent: a failed or
//! conflicting write is simply decided again on the next pass. Nothing here
//! decides; it only reads and writes.

use super::metrics::ControllerMetrics;
use super::model::decide::{logs_probes, pool_status};
use super::model::{decide, Action, Counts, Recording, ResultRecord, RunKey, RunKind};
use crate::cluster::{ClusterError, ControllerApi, PoolObjects};
use crate::crd::{Worker, WorkerPhase, WorkerPool, WorkerSpec, WorkerStatus};
use crate::vocab::{
    log_configmap_name, RunResult, ANNOTATION_CLAIMED_AT, ANNOTATION_EXPIRES_AT, ANNOTATION_LOG_OF,
    ANNOTATION_QUEUE, ANNOTATION_RESULT, ANNOTATION_RESULT_DETAIL, LABEL_LOG_TAIL, LABEL_POOL,
    LABEL_WORKER, LABEL_WORKER_POOL,
};

/// Queue notes written at once by one pass.
pub const NOTE_WRITES_AT_ONCE: usize = 16;

/// How long the log tail of a bare run Pod is kept (its pod is usually
/// deleted when it succeeds; a Job's tail lives as long as the Job).
pub const BARE_LOG_TTL_SECS: i64 = 24 * 3600;

/// The Event text of a finished run.
fn result_note(d: &ResultRecord) -> String {
    let mut s = format!("run {}", d.outcome.to_lowercase());
    if let Some(r) = &d.reason {
        s.push_str(&format!(": {r}"));
    }
    if let Some(code) = d.exit_code {
        s.push_str(&format!(", exit code {code}"));
    }
    if let Some(secs) = d.duration_seconds {
        s.push_str(&format!(", after {secs}s"));
    }
    if let Some(w) = &d.worker {
        s.push_str(&format!(", worker {w}"));
    }
    if let Some(m) = d.message.as_deref().filter(|m| !m.is_empty()) {
        s.push_str(&format!(" ({m})"));
    }
    s
}

/// Deletes the log ConfigMaps in `ns` whose `runyard.dev/expires-at` has
/// passed (bare runs' logs; a Job's log goes with the Job). Returns how many.
/// Each delete is guarded by the version read, so a log rewritten meanwhile
/// stays.
pub async fn sweep_kept_logs<C: ControllerApi>(c: &C, ns: &str) -> Result<usize, ClusterError> {
    let now = Timestamp::now();
    let mut deleted = 0;
    for meta in c.kept_logs(ns).await? {
        let expired = crate::vocab::annotation(&meta, ANNOTATION_EXPIRES_AT)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .is_some_and(|t| t <= now);
        let (Some(name), Some(rv)) = (&meta.name, &meta.resource_version) else {
            continue;
        };
        if expired {
            match c.delete_kept_log(ns, name, rv).await {
                Ok(()) => deleted += 1,
                Err(ClusterError::Conflict) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(deleted)
}

/// Event reason of a run stopped because it ran without a claim.
pub const ESCAPED_QUEUE: &str = "EscapedQueue";
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// An object this pass wrote: until the controller's cache shows the write,
/// a pass would decide on a view older than its own writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Written {
    /// Changed from this resourceVersion.
    Changed {
        kind: Kind,
        name: String,
        from: String,
    },
    Created {
        kind: Kind,
        name: String,
    },
    Deleted {
        kind: Kind,
        name: String,
    },
}

/// Kinds of objects the controller writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Worker,
    Job,
    Pod,
}

impl From<RunKind> for Kind {
    fn from(k: RunKind) -> Self {
        match k {
            RunKind::Job => Self::Job,
            RunKind::Pod => Self::Pod,
        }
    }
}

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
    /// The writes that landed.
    pub written: Vec<Written>,
}

impl Report {
    /// Whether the pool should be reconciled again soon.
    pub fn needs_retry(&self) -> bool {
        self.conflicts > 0 || !self.errors.is_empty()
    }
}

/// Reconciles one pool from its objects as the controller's caches hold them
/// (or as a test reads them): probe the logs the decision needs, decide,
/// write. Never fails: write errors are in the report, and the next pass
/// decides again.
pub async fn reconcile_pool<C: ControllerApi>(
    c: &C,
    metrics: &ControllerMetrics,
    ns: &str,
    mut objects: PoolObjects,
) -> Report {
    let started = Instant::now();
    objects.pool = objects
        .pool
        .filter(|p| p.metadata.deletion_timestamp.is_none());
    let mut snap = objects.model();
    snap.now = Timestamp::now().as_second();
    for probe in logs_probes(&snap, snap.now) {
        if let Ok(false) = c
            .printed_since(ns, &probe.pod, &probe.container, probe.limit)
            .await
        {
            snap.silent.push((probe.run, probe.running_for));
        }
    }
    let (actions, counts) = decide(&snap);
    let pool = objects.pool.as_ref();
    let mut exec = Exec {
        c,
        metrics,
        ns,
        pool_name: &objects.name,
        pool,
        workers: objects
            .workers
            .into_iter()
            .map(|w| (w.name_any(), w))
            .collect(),
        runs: snap
            .runs
            .iter()
            .map(|r| {
                (
                    r.key.clone(),
                    RunFacts {
                        uid: r.uid.clone(),
                        started: r.started,
                        active_deadline: r.active_deadline,
                        other_gates: r.other_gates.clone(),
                        rv: r.resource_version.clone(),
                    },
                )
            })
            .collect(),
        keep_pods: BTreeSet::new(),
        report: Report {
            counts,
            pool_exists: pool.is_some(),
            ..Report::default()
        },
    };
    // Queue notes are independent of each other and of everything else: a
    // long queue's first notes go out concurrently, after the claims.
    let (notes, actions): (Vec<_>, Vec<_>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::QueueNote { .. }));
    for action in actions {
        exec.apply(action).await;
    }
    exec.write_notes(notes).await;
    match pool {
        Some(p) => exec.write_status(p).await,
        None => metrics.forget_pool(ns, &objects.name),
    }
    let report = exec.report;
    metrics.observe_reconcile(ns, &objects.name, started.elapsed());
    report
}

/// What the writes need to know of a run.
struct RunFacts {
    uid: Option<String>,
    /// When it started, seconds since the epoch.
    started: Option<i64>,
    /// A bare Pod's `spec.activeDeadlineSeconds`.
    active_deadline: Option<i64>,
    /// Scheduling gates of a Pod other than runyard's (kept when ungating).
    other_gates: Vec<String>,
    rv: String,
}

struct Exec<'a, C> {
    c: &'a C,
    metrics: &'a ControllerMetrics,
    ns: &'a str,
    pool_name: &'a str,
    pool: Option<&'a WorkerPool>,
    /// The workers as this pass last wrote or read them.
    workers: BTreeMap<String, Worker>,
    runs: BTreeMap<RunKey, RunFacts>,
    /// Pods whose log could not be kept in this pass: not deleted yet.
    keep_pods: BTreeSet<String>,
    report: Report,
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl<C: ControllerApi> Exec<'_, C> {
    fn failed(&mut self, what: &str, e: ClusterError) {
        self.metrics.reconcile_error(e.label());
        if e == ClusterError::Conflict {
            self.report.conflicts += 1;
        } else {
            self.report.errors.push(format!("{what}: {e}"));
        }
        tracing::debug!(pool = self.pool_name, namespace = self.ns, what, error = %e, "write failed; retried on the next pass");
    }

    /// An ObjectReference to a run of this pass (for Events).
    fn reference(&self, run: &RunKey) -> Option<ObjectReference> {
        let uid = &self.runs.get(run)?.uid;
        let (api_version, kind) = match run.kind {
            RunKind::Job => ("batch/v1", "Job"),
            RunKind::Pod => ("v1", "Pod"),
        };
        Some(ObjectReference {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
            name: Some(run.name.clone()),
            namespace: Some(self.ns.to_string()),
            uid: uid.clone(),
            ..ObjectReference::default()
        })
    }

    async fn event(&self, run: &RunKey, warning: bool, reason: &str, note: &str) {
        if let Some(r) = self.reference(run) {
            if let Err(e) = self.c.event(&r, warning, reason, note).await {
                tracing::debug!(error = %e, "event not published");
            }
        }
    }

    async fn pool_event(&self, warning: bool, reason: &str, note: &str) {
        if let Some(p) = self.pool {
            let _ = self
                .c
                .event(&p.object_ref(&()), warning, reason, note)
                .await;
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
        let from = w.metadata.resource_version.clone().unwrap_or_default();
        let mut updated = w.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        f(status);
        let written = self.c.replace_worker_status(self.ns, &updated).await?;
        self.workers.insert(name.to_string(), written);
        self.wrote(Written::Changed {
            kind: Kind::Worker,
            name: name.to_string(),
            from,
        });
        Ok(())
    }

    fn wrote(&mut self, w: Written) {
        self.report.written.push(w);
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
                if let Some(t) = self.run_timeout() {
                    spec["activeDeadlineSeconds"] = json!(t);
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
                // runTimeout: a pod's deadline can only be lowered (it counts
                // from when the kubelet starts the pod, after the claim).
                let current = self.runs.get(run).and_then(|r| r.active_deadline);
                if let Some(t) = self.run_timeout() {
                    if current.is_none_or(|c| t < c) {
                        patch["spec"]["activeDeadlineSeconds"] = json!(t);
                    }
                }
            }
        }
        patch
    }

    /// The pool's `runTimeout`, in seconds (at least 1).
    fn run_timeout(&self) -> Option<i64> {
        self.pool
            .and_then(|p| p.spec.run_timeout.as_deref())
            .and_then(|t| crate::duration::parse(t).ok())
            .map(|t| (t.as_secs() as i64).max(1))
    }

    async fn patch_run(&mut self, run: &RunKey, patch: &Value) -> Result<(), ClusterError> {
        self.c.patch_run(self.ns, run, patch).await?;
        if let Some(facts) = self.runs.get(run) {
            let from = facts.rv.clone();
            self.wrote(Written::Changed {
                kind: run.kind.into(),
                name: run.name.clone(),
                from,
            });
        }
        Ok(())
    }

    async fn apply(&mut self, action: Action) {
        match action {
            Action::CreateWorker { name } => self.create_worker(name).await,
            Action::DeleteWorker { worker, rv } => {
                match self.c.delete_worker(self.ns, &worker, &rv).await {
                    Ok(()) | Err(ClusterError::NotFound) => {
                        self.workers.remove(&worker);
                        self.wrote(Written::Deleted {
                            kind: Kind::Worker,
                            name: worker,
                        });
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
                        self.metrics.claimed(self.ns, self.pool_name);
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
            Action::RecordResult { run, record } => {
                self.record(&run, &record).await;
            }
            Action::FailStuck {
                run,
                worker,
                worker_rv,
                record,
                pod,
                recorded,
            } => {
                self.fail_stuck(&run, &worker, &worker_rv, record, pod.as_deref(), recorded)
                    .await
            }
            Action::Heartbeat { worker, rv } => {
                if let Err(e) = self
                    .set_worker_status(&worker, &rv, |s| s.last_heartbeat = Some(now()))
                    .await
                {
                    self.failed("writing a heartbeat", e);
                }
            }
            Action::DeletePod { name, .. } if self.keep_pods.contains(&name) => {
                tracing::debug!(pod = %name, "kept: its log is not kept yet");
            }
            Action::DeletePod { name, reason } => match self.c.delete_pod(self.ns, &name).await {
                Ok(()) => {
                    tracing::debug!(pod = %name, reason, "deleted run pod");
                    self.wrote(Written::Deleted {
                        kind: Kind::Pod,
                        name,
                    });
                }
                Err(e) => self.failed("deleting a run pod", e),
            },
            Action::FailRun {
                run,
                reason,
                message,
            } => self.fail_run(&run, reason, &message).await,
            Action::QueueNote { .. } => self.write_notes(vec![action]).await,
            Action::FailSilent {
                run,
                deadline,
                record,
            } => self.fail_silent(&run, deadline, &record).await,
            Action::StopEscaped { run, run_rv } => self.stop_escaped(&run, &run_rv).await,
            Action::DeleteForeignPod { pod, pod_rv, job } => {
                match self.c.delete_pod_at(self.ns, &pod, &pod_rv).await {
                    Ok(()) => {
                        self.wrote(Written::Deleted {
                            kind: Kind::Pod,
                            name: pod.clone(),
                        });
                        self.metrics.escaped(self.ns, self.pool_name, "Pod");
                        let note = format!("deleted pod {pod}: its Job {job} is not a run of pool {} (label the Job {LABEL_POOL}={}, not only its pod template)", self.pool_name, self.pool_name);
                        self.pool_event(true, ESCAPED_QUEUE, &note).await;
                    }
                    Err(e) => self.failed("deleting a pod of a Job that is not a run", e),
                }
            }
        }
    }

    /// Writes queue notes (and the first note's Event), at most
    /// [`NOTE_WRITES_AT_ONCE`] at a time.
    async fn write_notes(&mut self, notes: Vec<Action>) {
        let items: Vec<(RunKey, String, Option<String>)> = notes
            .into_iter()
            .filter_map(|a| match a {
                Action::QueueNote {
                    run, note, event, ..
                } => Some((run, note, event)),
                _ => None,
            })
            .collect();
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(NOTE_WRITES_AT_ONCE) {
            let writes = chunk
                .iter()
                .map(|(run, note, event)| self.write_note(run, note, event.as_deref()));
            results.extend(futures::future::join_all(writes).await);
        }
        for (run, result) in items.into_iter().map(|(run, ..)| run).zip(results) {
            match result {
                Ok(()) => {
                    if let Some(facts) = self.runs.get(&run) {
                        let from = facts.rv.clone();
                        self.wrote(Written::Changed {
                            kind: run.kind.into(),
                            name: run.name.clone(),
                            from,
                        });
                    }
                }
                Err(ClusterError::NotFound) => {}
                Err(e) => self.failed("updating a queue note", e),
            }
        }
    }

    async fn write_note(
        &self,
        run: &RunKey,
        note: &str,
        event: Option<&str>,
    ) -> Result<(), ClusterError> {
        let patch = json!({ "metadata": { "annotations": { ANNOTATION_QUEUE: note } } });
        self.c.patch_run(self.ns, run, &patch).await?;
        if let Some(text) = event {
            self.event(run, false, "Queued", text).await;
        }
        Ok(())
    }

    /// Stops a run that runs without a claim: a Job is suspended again (back
    /// in the queue, without the worker label it did not get from a claim), a
    /// bare Pod deleted. Guarded by the resourceVersion decided on.
    async fn stop_escaped(&mut self, run: &RunKey, rv: &str) {
        let result = match run.kind {
            RunKind::Job => {
                let patch = json!({
                    "metadata": { "resourceVersion": rv, "labels": { LABEL_WORKER: null } },
                    "spec": { "suspend": true },
                });
                self.patch_run(run, &patch).await
            }
            RunKind::Pod => {
                let deleted = self.c.delete_pod_at(self.ns, &run.name, rv).await;
                if deleted.is_ok() {
                    self.wrote(Written::Deleted {
                        kind: Kind::Pod,
                        name: run.name.clone(),
                    });
                }
                deleted
            }
        };
        match result {
            Ok(()) => {
                let (kind, done) = match run.kind {
                    RunKind::Job => ("Job", "suspended again; it waits in the queue for a worker"),
                    RunKind::Pod => ("Pod", "deleted (a bare run Pod cannot be queued again)"),
                };
                self.metrics.escaped(self.ns, self.pool_name, kind);
                tracing::warn!(run = %run, pool = self.pool_name, namespace = self.ns, "run escaped the queue");
                let note = format!("runyard: the run was running without a claim (started by someone other than the runyard controller, or while the webhook was bypassed); {done}");
                self.event(run, true, ESCAPED_QUEUE, &note).await;
            }
            Err(ClusterError::NotFound) => {}
            Err(e) => self.failed("stopping a run that escaped the queue", e),
        }
    }

    /// Scheduling gates of a run Pod other than runyard's (kept when ungating).
    fn other_gates(&self, run: &RunKey) -> Option<Vec<String>> {
        self.runs.get(run).map(|r| r.other_gates.clone())
    }

    async fn create_worker(&mut self, name: String) {
        let Some(pool) = self.pool else { return };
        let started = Instant::now();
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
        let created = match self.c.create_worker(self.ns, &w).await {
            // The name is taken: another controller (or a write whose answer
            // was lost) registered it. Nothing to do; the next pass sees it.
            Err(ClusterError::Conflict) => return,
            other => other,
        };
        let result = match created {
            Ok(created) => {
                self.wrote(Written::Created {
                    kind: Kind::Worker,
                    name: name.clone(),
                });
                let mut with_status = created;
                with_status.status = Some(WorkerStatus {
                    phase: WorkerPhase::Idle,
                    registered_at: Some(now()),
                    ..WorkerStatus::default()
                });
                self.c.replace_worker_status(self.ns, &with_status).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(w) => {
                self.metrics
                    .worker_created(self.ns, self.pool_name, started.elapsed(), true);
                self.workers.insert(name, w);
            }
            Err(e) => {
                self.metrics
                    .worker_created(self.ns, self.pool_name, started.elapsed(), false);
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
                self.metrics.claimed(self.ns, self.pool_name);
                self.metrics
                    .claim_duration(self.ns, self.pool_name, started.elapsed());
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
        outcome: Option<RunResult>,
        delete: bool,
        record: Option<Recording>,
    ) {
        let finished = matches!(outcome, Some(RunResult::Succeeded | RunResult::Failed));
        let result = if delete {
            let deleted = self.c.delete_worker(self.ns, worker, rv).await;
            if deleted.is_ok() {
                self.workers.remove(worker);
                self.wrote(Written::Deleted {
                    kind: Kind::Worker,
                    name: worker.to_string(),
                });
            }
            deleted
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
        match (outcome, record) {
            (Some(RunResult::Succeeded | RunResult::Failed), Some(record)) => {
                self.record(run, &record).await;
            }
            (Some(RunResult::Lost), _) => {
                let note = format!("worker {worker} released: its run {run} no longer exists");
                self.pool_event(true, "RunLost", &note).await;
            }
            _ => {}
        }
    }

    /// Writes a finished run's result: the tail of its worker's log (kept in
    /// a ConfigMap, so `runyard logs` has it after the pod is gone), then the
    /// annotations and one Event. Returns whether it was written.
    ///
    /// The log is written first: if keeping it fails, nothing is recorded and
    /// the pod is not deleted in this pass, so the next pass tries again. A
    /// log that cannot be read (the node is gone) does not hold the result.
    async fn record(&mut self, run: &RunKey, record: &Recording) -> bool {
        if !self.keep_log(run, record).await {
            if let Some((pod, _)) = &record.log_from {
                self.keep_pods.insert(pod.clone());
            }
            return false;
        }
        let outcome = record.result;
        let detail = serde_json::to_string(&record.detail).unwrap_or_default();
        let patch = json!({ "metadata": { "annotations": {
            ANNOTATION_RESULT: outcome.as_str(),
            ANNOTATION_RESULT_DETAIL: detail,
        } } });
        match self.patch_run(run, &patch).await {
            Ok(()) | Err(ClusterError::NotFound) => {
                let warning = outcome != RunResult::Succeeded;
                self.event(run, warning, outcome.as_str(), &result_note(&record.detail))
                    .await;
                true
            }
            Err(e) => {
                self.failed("recording a result", e);
                false
            }
        }
    }

    /// Keeps the run's result with the tail of its worker log (empty if the
    /// log cannot be read: a pod that never started, a node that is gone;
    /// `logTailBytes: 0` keeps none). False if the ConfigMap write failed.
    async fn keep_log(&mut self, run: &RunKey, record: &Recording) -> bool {
        let limit = self.pool.map_or(0, |p| p.spec.log_tail_bytes());
        let Some((pod, container)) = record.log_from.as_ref() else {
            return true;
        };
        let tail = if limit == 0 {
            None
        } else {
            match self.c.log_tail(self.ns, pod, container, limit).await {
                Ok(tail) => Some(tail),
                Err(e) => {
                    tracing::debug!(run = %run, error = %e, "no log tail kept: the log cannot be read");
                    None
                }
            }
        };
        let Some(cm) = self.log_configmap(run, tail.as_deref(), &record.detail) else {
            return true;
        };
        match self.c.save_log(self.ns, &cm).await {
            Ok(()) => true,
            Err(e) => {
                self.failed("keeping a run's log tail", e);
                false
            }
        }
    }

    /// The ConfigMap that keeps a run's log tail: owned by the Job (it goes
    /// with it), or for a bare Pod (which is deleted when it succeeds) by the
    /// pool, with an expiry.
    fn log_configmap(
        &self,
        run: &RunKey,
        tail: Option<&str>,
        detail: &ResultRecord,
    ) -> Option<ConfigMap> {
        let (kind, api_version) = match run.kind {
            RunKind::Job => ("Job", "batch/v1"),
            RunKind::Pod => ("Pod", "v1"),
        };
        let owner = match run.kind {
            RunKind::Job => OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: run.name.clone(),
                uid: self.runs.get(run)?.uid.clone()?,
                ..OwnerReference::default()
            },
            RunKind::Pod => {
                let pool = self.pool?;
                OwnerReference {
                    api_version: WorkerPool::api_version(&()).into_owned(),
                    kind: WorkerPool::kind(&()).into_owned(),
                    name: self.pool_name.to_string(),
                    uid: pool.metadata.uid.clone()?,
                    ..OwnerReference::default()
                }
            }
        };
        let mut annotations = BTreeMap::from([(ANNOTATION_LOG_OF.to_string(), run.to_string())]);
        if run.kind == RunKind::Pod {
            let expires =
                Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(BARE_LOG_TTL_SECS);
            annotations.insert(ANNOTATION_EXPIRES_AT.to_string(), expires.to_string());
        }
        Some(ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(log_configmap_name(kind, &run.name)),
                namespace: Some(self.ns.to_string()),
                labels: Some(BTreeMap::from([
                    (LABEL_POOL.to_string(), self.pool_name.to_string()),
                    (LABEL_LOG_TAIL.to_string(), "true".to_string()),
                ])),
                annotations: Some(annotations),
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            data: Some(
                tail.map(|t| ("log".to_string(), t.to_string()))
                    .into_iter()
                    .chain([(
                        "result".to_string(),
                        serde_json::to_string(detail).unwrap_or_default(),
                    )])
                    .collect(),
            ),
            ..Default::default()
        })
    }

    /// Fails a claimed run that will not finish by itself, recording why
    /// with the pod's latest Warning Events. A Job is ended first (a
    /// deadline it has passed: the Job controller fails it and removes its
    /// pods; its worker is released when it shows failed), then recorded; a
    /// retry after a failed record finds it still running and unrecorded. A
    /// bare Pod is recorded first (its log is kept before the pod goes), then
    /// deleted and its worker released; a retry finds it recorded
    /// (`recorded`) and only deletes.
    async fn fail_stuck(
        &mut self,
        run: &RunKey,
        worker: &str,
        worker_rv: &str,
        mut record: Recording,
        pod: Option<&str>,
        recorded: bool,
    ) {
        if let Some(pod) = pod.filter(|_| !recorded) {
            match self.c.pod_warnings(self.ns, pod).await {
                Ok(warnings) if !warnings.is_empty() => {
                    let msg = record.detail.message.take().unwrap_or_default();
                    record.detail.message = Some(format!("{msg}; events: {}", warnings.join("; ")));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(pod, error = %e, "no Warning Events for a stuck run"),
            }
        }
        tracing::info!(run = %run, pool = self.pool_name, reason = ?record.detail.reason, "failing a stuck run");
        match run.kind {
            RunKind::Job => {
                let elapsed = self
                    .runs
                    .get(run)
                    .and_then(|r| r.started)
                    .map_or(1, |s| (Timestamp::now().as_second() - s).max(1));
                let patch = json!({ "spec": { "activeDeadlineSeconds": elapsed } });
                match self.patch_run(run, &patch).await {
                    Ok(()) => {
                        self.record(run, &record).await;
                    }
                    Err(e) => self.failed("ending a stuck run", e),
                }
            }
            RunKind::Pod => {
                if !recorded && !self.record(run, &record).await {
                    return;
                }
                match self.c.delete_pod(self.ns, &run.name).await {
                    Ok(()) | Err(ClusterError::NotFound) => {
                        self.wrote(Written::Deleted {
                            kind: Kind::Pod,
                            name: run.name.clone(),
                        });
                    }
                    Err(e) => {
                        self.failed("ending a stuck run", e);
                        return;
                    }
                }
                let outcome = record.result;
                match self
                    .set_worker_status(worker, worker_rv, |s| {
                        s.phase = WorkerPhase::Idle;
                        s.current_run = None;
                        s.last_heartbeat = Some(now());
                        if outcome != RunResult::Lost {
                            s.runs_completed += 1;
                        }
                    })
                    .await
                {
                    Ok(_) => self.report.releases += 1,
                    Err(e) => self.failed("releasing the worker of a stuck run", e),
                }
            }
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
                    "metadata": { "annotations": { ANNOTATION_RESULT: RunResult::Failed.as_str(), ANNOTATION_QUEUE: message } },
                    "spec": { "suspend": false, "activeDeadlineSeconds": 1 },
                });
                self.patch_run(run, &patch).await
            }
            RunKind::Pod => {
                let deleted = self.c.delete_pod(self.ns, &run.name).await;
                if deleted.is_ok() {
                    self.wrote(Written::Deleted {
                        kind: Kind::Pod,
                        name: run.name.clone(),
                    });
                }
                deleted
            }
        };
        if let Err(e) = result {
            self.failed("failing a run", e);
        }
    }

    /// Fails a running run whose worker printed nothing for `limit` seconds.
    /// Ends a silent run (a deadline it has already run: the kubelet or the
    /// Job controller stops it), then records why, with its log so far.
    async fn fail_silent(&mut self, run: &RunKey, deadline: i64, record: &Recording) {
        let patch = json!({ "spec": { "activeDeadlineSeconds": deadline.max(1) } });
        match self.patch_run(run, &patch).await {
            Ok(()) => {
                self.record(run, record).await;
            }
            Err(e) => self.failed("failing a silent run", e),
        }
    }

    async fn write_status(&mut self, pool: &WorkerPool) {
        let c = self.report.counts;
        self.metrics.pool_state(self.ns, self.pool_name, &c);
        let Some(status) = pool_status(
            pool.metadata.generation,
            pool.status.as_ref(),
            c,
            &self.report.errors,
            now(),
        ) else {
            return;
        };
        if let Err(e) = self
            .c
            .patch_pool_status(self.ns, self.pool_name, &status)
            .await
        {
            self.failed("writing pool status", e);
        }
    }
}
