//! From a pool's [`Snapshot`] to the writes that converge it, in phases:
//! fail what can never run, settle every worker against its run, adopt runs
//! whose worker lost track of them, record results, trim finished pods,
//! scale, claim, and tell the rest of the queue why it waits. Also the pure
//! parts of the two decisions that need a read or the writes' outcome first:
//! which runs to probe for a logs timeout, and the pool's status.

use super::{
    queue, queue_note, worker_index, worker_name, Action, Counts, FinishedPod, Recording,
    ResultRecord, Run, RunKey, RunPhase, Snapshot, WorkerView,
};
use crate::crd::{WorkerPhase, WorkerPoolSpec, WorkerPoolStatus};
use crate::vocab::RunResult;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::{BTreeMap, BTreeSet};

/// Decides the writes for one pool, and the pool's counts after them.
pub fn decide(s: &Snapshot) -> (Vec<Action>, Counts) {
    let Some(pool) = &s.pool else {
        return (pool_gone(s), Counts::default());
    };
    let mut pass = Pass::new(s);
    pass.fail_escaped();
    for w in &s.workers {
        pass.settle_worker(w);
    }
    pass.adopt();
    pass.watch_running(pool);
    pass.stop_escaped();
    pass.record_results();
    trim_pods(pool, &s.finished_pods, &mut pass.actions);
    pass.scale(pool.pool_size.max(0));
    let counts = pass.claim_and_note(pool.pool_size.max(0));
    pass.fail_silent(pool);
    (pass.actions, counts)
}

/// Waiting reasons that never resolve by waiting: the run fails at once.
/// (`ImagePullBackOff` is a pull that failed more than once.)
pub const TERMINAL_WAITING: [&str; 4] = [
    "InvalidImageName",
    "CreateContainerConfigError",
    "ErrImageNeverPull",
    "ImagePullBackOff",
];

/// How often a busy worker's `lastHeartbeat` is written while its launcher
/// is ready.
pub const HEARTBEAT_EVERY_SECS: i64 = 60;

fn rfc3339(secs: i64) -> Option<String> {
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .ok()
        .map(|t| t.to_string())
}

/// The result record of a run that ended with `result`.
fn recording(s: &Snapshot, run: &Run, result: RunResult, reason: Option<String>) -> Recording {
    let facts = s.run_pods.get(&run.key);
    let exit_code = facts.and_then(|f| f.exit_code);
    let (k8s_reason, message) = match &run.finish_reason {
        Some((r, m)) => (Some(r.clone()), Some(m.clone()).filter(|m| !m.is_empty())),
        None => (None, None),
    };
    let reason = reason.or(k8s_reason).or_else(|| match (result, exit_code) {
        (RunResult::Failed, Some(code)) if code != 0 => Some("NonZeroExit".to_string()),
        (RunResult::Lost, _) => Some("RunVanished".to_string()),
        _ => None,
    });
    let started = run.started.or(run.claimed_at);
    let finished = run
        .finished
        .or_else(|| facts.and_then(|f| f.finished))
        .or((s.now > 0).then_some(s.now));
    Recording {
        result,
        detail: ResultRecord {
            outcome: result.as_str().to_string(),
            reason,
            message,
            exit_code,
            started_at: started.and_then(rfc3339),
            finished_at: finished.and_then(rfc3339),
            duration_seconds: started.zip(finished).map(|(a, b)| (b - a).max(0)),
            worker: run.worker.clone(),
        },
        log_from: facts.and_then(|f| Some((f.name.clone(), f.worker_container.clone()?))),
    }
}

/// How old a pod of an unknown Job must be before it is treated as escaped
/// (the Job would be in the controller's view by then).
pub const FOREIGN_POD_GRACE_SECS: i64 = 60;

/// The pool is gone: fail what waits, release nothing (its workers are
/// garbage-collected with it).
fn pool_gone(s: &Snapshot) -> Vec<Action> {
    queue(&s.runs)
        .into_iter()
        .map(|run| Action::FailRun {
            run: run.key.clone(),
            reason: "PoolNotFound",
            message: "runyard: the run's WorkerPool no longer exists; it can never be claimed"
                .into(),
        })
        .collect()
}

/// The state one pass builds up while deciding.
struct Pass<'a> {
    s: &'a Snapshot,
    runs: BTreeMap<&'a RunKey, &'a Run>,
    actions: Vec<Action>,
    /// Idle, non-draining workers that hold no run.
    idle: Vec<&'a WorkerView>,
    busy: i32,
    /// Workers that are not draining.
    active: i32,
    /// Runs a worker holds.
    held: BTreeSet<&'a RunKey>,
    /// Runs whose result is recorded by their worker's release.
    released_outcomes: BTreeSet<&'a RunKey>,
    /// Runs bound to their (idle) worker in this pass.
    adopted: BTreeSet<&'a RunKey>,
    /// The worker of each running run it holds.
    holders: BTreeMap<&'a RunKey, &'a WorkerView>,
    /// Workers released in this pass: claimable right away (the executor fills
    /// in their resourceVersion after the release write).
    released_now: Vec<&'a str>,
}

impl<'a> Pass<'a> {
    fn new(s: &'a Snapshot) -> Self {
        Self {
            s,
            runs: s.runs.iter().map(|r| (&r.key, r)).collect(),
            actions: Vec::new(),
            idle: Vec::new(),
            busy: 0,
            active: 0,
            held: BTreeSet::new(),
            released_outcomes: BTreeSet::new(),
            adopted: BTreeSet::new(),
            holders: BTreeMap::new(),
            released_now: Vec::new(),
        }
    }

    /// Runs that escaped injection never run under runyard.
    fn fail_escaped(&mut self) {
        for run in self.s.runs.iter().filter(|r| {
            r.escaped_injection && r.phase != RunPhase::Failed && r.phase != RunPhase::Succeeded
        }) {
            self.actions.push(Action::FailRun {
                run: run.key.clone(),
                reason: "NotInjected",
                message: "runyard: this run pod was not injected by the runyard webhook (is the webhook installed and its objectSelector matching?)".into(),
            });
        }
    }

    /// One worker against its run: idle, busy, finished (release), half
    /// claimed (complete), or holding a run it lost (release).
    fn settle_worker(&mut self, w: &'a WorkerView) {
        let draining = w.phase == WorkerPhase::Draining;
        if !draining {
            self.active += 1;
        }
        let Some(key) = &w.current_run else {
            if draining {
                self.actions.push(Action::DeleteWorker {
                    worker: w.name.clone(),
                    rv: w.resource_version.clone(),
                });
            } else {
                self.idle.push(w);
            }
            return;
        };
        let run = self.runs.get(key).copied();
        let s = self.s;
        let release = |outcome: Option<RunResult>| Action::Release {
            worker: w.name.clone(),
            rv: w.resource_version.clone(),
            run: key.clone(),
            outcome,
            delete: draining,
            record: match (run, outcome) {
                (Some(r), Some(o)) if !r.result_recorded => Some(recording(s, r, o, None)),
                _ => None,
            },
        };
        let complete = |r: &Run| Action::CompleteClaim {
            worker: w.name.clone(),
            run: key.clone(),
            run_rv: r.resource_version.clone(),
        };
        let action = match run {
            None => Some(release(Some(RunResult::Lost))),
            Some(r) => match r.worker.as_deref() {
                Some(owner) if owner == w.name => match r.phase {
                    RunPhase::Succeeded | RunPhase::Failed => {
                        self.released_outcomes.insert(key);
                        Some(release(Some(finished_result(r.phase))))
                    }
                    RunPhase::Queued => {
                        // Labeled but still suspended/gated: finish the claim.
                        self.hold(key);
                        Some(complete(r))
                    }
                    RunPhase::Running => {
                        self.hold(key);
                        self.holders.insert(key, w);
                        None
                    }
                },
                None if r.phase == RunPhase::Queued => {
                    // Crash between the claim's two writes.
                    self.hold(key);
                    Some(complete(r))
                }
                // The run went to another worker, or runs unmanaged: this
                // worker does not hold it.
                _ => Some(release(None)),
            },
        };
        if let Some(action) = action {
            if matches!(action, Action::Release { .. }) && !draining {
                self.released_now.push(w.name.as_str());
            }
            self.actions.push(action);
        }
    }

    fn hold(&mut self, key: &'a RunKey) {
        self.busy += 1;
        self.held.insert(key);
    }

    /// Runs labeled for an idle worker that does not hold them: adopt.
    fn adopt(&mut self) {
        for run in &self.s.runs {
            let Some(owner) = run.worker.as_deref() else {
                continue;
            };
            if self.held.contains(&run.key)
                || !matches!(run.phase, RunPhase::Running | RunPhase::Queued)
            {
                continue;
            }
            if let Some(pos) = self.idle.iter().position(|w| w.name == owner) {
                let w = self.idle.remove(pos);
                self.busy += 1;
                self.adopted.insert(&run.key);
                self.actions.push(Action::AdoptRun {
                    worker: w.name.clone(),
                    worker_rv: w.resource_version.clone(),
                    run: run.key.clone(),
                });
            }
        }
    }

    /// Claimed, running runs that will not finish by themselves: a pod that
    /// never started (pending too long, or waiting for a reason that never
    /// resolves) or a launcher that stopped beating. And the heartbeat of the
    /// others' workers.
    fn watch_running(&mut self, pool: &WorkerPoolSpec) {
        let now = self.s.now;
        if now == 0 {
            return;
        }
        let pending = pool.pending_timeout().as_secs() as i64;
        let heartbeat = pool.heartbeat_timeout().as_secs() as i64;
        for (key, w) in std::mem::take(&mut self.holders) {
            let Some(run) = self.runs.get(key).copied() else {
                continue;
            };
            // A Job ended as stuck and recorded: the Job controller fails it.
            if run.result_recorded && key.kind == super::RunKind::Job {
                continue;
            }
            let facts = self.s.run_pods.get(key);
            let claimed = run.claimed_at.unwrap_or(run.created);
            let stuck = match facts {
                Some(f) if !f.started_running() => match &f.waiting {
                    Some((c, reason, message)) if TERMINAL_WAITING.contains(&reason.as_str()) => {
                        Some((RunResult::Failed, reason.clone(), format!("container {c}: {reason}: {message}")))
                    }
                    waiting if now - claimed >= pending => Some(match waiting {
                        Some((c, reason, message)) => (
                            RunResult::Failed,
                            reason.clone(),
                            format!("container {c}: {reason}: {message} (not started {pending}s after the claim: pendingTimeout)"),
                        ),
                        None => (
                            RunResult::Failed,
                            "PendingTimeout".to_string(),
                            format!("the pod was not started {pending}s after the claim (pendingTimeout; unschedulable?)"),
                        ),
                    }),
                    _ => None,
                },
                Some(f)
                    if f.phase.as_deref() == Some("Running")
                        && f.launcher_ready == Some(false)
                        && f.not_ready_since.is_some_and(|t| now - t >= heartbeat) =>
                {
                    Some((
                        RunResult::Lost,
                        "LauncherNotReady".to_string(),
                        format!("the launcher has not been ready (no heartbeat) for {heartbeat}s (heartbeatTimeout)"),
                    ))
                }
                Some(f)
                    if f.phase.as_deref() == Some("Running")
                        && f.node_lost_since.is_some_and(|t| now - t >= heartbeat) =>
                {
                    Some((
                        RunResult::Lost,
                        "NodeNotReady".to_string(),
                        format!("the pod's node has not reported for {heartbeat}s (heartbeatTimeout): the pod is marked not ready while its containers were last ready"),
                    ))
                }
                Some(_) => None,
                None if run.key.kind == super::RunKind::Job && now - claimed >= pending => Some((
                    RunResult::Failed,
                    "PendingTimeout".to_string(),
                    format!("the Job created no pod {pending}s after the claim (pendingTimeout; a quota, or an admission denial? see the Job's Events)"),
                )),
                None => None,
            };
            if let Some((result, reason, message)) = stuck {
                let mut record = recording(self.s, run, result, Some(reason));
                record.detail.message = Some(message);
                record.detail.worker = Some(w.name.clone());
                self.actions.push(Action::FailStuck {
                    run: key.clone(),
                    worker: w.name.clone(),
                    worker_rv: w.resource_version.clone(),
                    record,
                    pod: facts.map(|f| f.name.clone()),
                    recorded: run.result_recorded,
                });
                continue;
            }
            // A stale "ready" from a node that stopped reporting is no beat.
            let alive = facts
                .is_some_and(|f| f.launcher_ready == Some(true) && f.node_lost_since.is_none());
            let due = w
                .last_heartbeat
                .is_none_or(|t| now - t >= HEARTBEAT_EVERY_SECS);
            if alive && due {
                self.actions.push(Action::Heartbeat {
                    worker: w.name.clone(),
                    rv: w.resource_version.clone(),
                });
            }
        }
    }

    /// Runs that run although no worker holds them escaped the queue (the
    /// webhook was bypassed, or someone else started them): they are stopped.
    /// A stale view cannot stop a run by mistake: the writes are guarded by
    /// the resourceVersion seen here.
    fn stop_escaped(&mut self) {
        for run in &self.s.runs {
            let running = run.phase == RunPhase::Running && !run.escaped_injection;
            if running && !self.held.contains(&run.key) && !self.adopted.contains(&run.key) {
                self.actions.push(Action::StopEscaped {
                    run: run.key.clone(),
                    run_rv: run.resource_version.clone(),
                });
            }
        }
        // Pods whose Job is not a run of this pool (only the template names
        // it). Only pods old enough that the Job would be known by now.
        if self.s.now == 0 {
            return;
        }
        for pod in &self.s.job_pods {
            let known = self.runs.contains_key(&RunKey::job(pod.job.clone()));
            if !known && !pod.finished && self.s.now - pod.created >= FOREIGN_POD_GRACE_SECS {
                self.actions.push(Action::DeleteForeignPod {
                    pod: pod.name.clone(),
                    pod_rv: pod.resource_version.clone(),
                    job: pod.job.clone(),
                });
            }
        }
    }

    /// Records outcomes of finished runs (once) that no release records.
    fn record_results(&mut self) {
        for run in &self.s.runs {
            if matches!(run.phase, RunPhase::Succeeded | RunPhase::Failed)
                && run.worker.is_some()
                && !run.result_recorded
                && !self.released_outcomes.contains(&run.key)
            {
                self.actions.push(Action::RecordResult {
                    run: run.key.clone(),
                    record: recording(self.s, run, finished_result(run.phase), None),
                });
            }
        }
    }

    /// Keeps exactly `desired` active workers. Idle ones go first; busy ones
    /// drain and are deleted when their run ends.
    fn scale(&mut self, desired: i32) {
        if self.active < desired {
            // The lowest indices no worker (draining ones included) has.
            let pool = self.s.pool_name.as_str();
            let taken: BTreeSet<usize> = self
                .s
                .workers
                .iter()
                .filter_map(|w| worker_index(pool, &w.name))
                .collect();
            let free = (0..).filter(|i| !taken.contains(i));
            for i in free.take((desired - self.active) as usize) {
                self.actions.push(Action::CreateWorker {
                    name: worker_name(pool, i),
                });
            }
            return;
        }
        let mut surplus = self.active - desired;
        self.idle.sort_by(|a, b| b.name.cmp(&a.name));
        while surplus > 0 {
            let Some(w) = self.idle.pop() else { break };
            self.actions.push(Action::DeleteWorker {
                worker: w.name.clone(),
                rv: w.resource_version.clone(),
            });
            surplus -= 1;
        }
        if surplus > 0 {
            let mut busy_workers: Vec<&WorkerView> = self
                .s
                .workers
                .iter()
                .filter(|w| w.phase != WorkerPhase::Draining && w.current_run.is_some())
                .collect();
            busy_workers.sort_by(|a, b| b.name.cmp(&a.name));
            for w in busy_workers.into_iter().take(surplus as usize) {
                self.actions.push(Action::Drain {
                    worker: w.name.clone(),
                    rv: w.resource_version.clone(),
                });
            }
        }
    }

    /// Queue heads to idle workers (name order), then to the workers released
    /// above (only if the pool is not shrinking); the rest are told why they
    /// wait.
    fn claim_and_note(&mut self, desired: i32) -> Counts {
        self.idle.sort_by(|a, b| a.name.cmp(&b.name));
        let mut claimable: Vec<(String, String)> = self
            .idle
            .iter()
            .map(|w| (w.name.clone(), w.resource_version.clone()))
            .collect();
        if self.active <= desired {
            claimable.extend(
                self.released_now
                    .iter()
                    .map(|n| (n.to_string(), String::new())),
            );
        }
        let mut waiting = Vec::new();
        let mut claimable = claimable.into_iter();
        for run in queue(&self.s.runs)
            .into_iter()
            .filter(|r| !self.held.contains(&r.key))
        {
            match claimable.next() {
                Some((worker, worker_rv)) => {
                    self.busy += 1;
                    self.actions.push(Action::Claim {
                        worker,
                        worker_rv,
                        run: run.key.clone(),
                        run_rv: run.resource_version.clone(),
                    });
                }
                None => waiting.push(run),
            }
        }
        let idle_left = claimable.count() as i32;
        for (i, run) in waiting.iter().enumerate() {
            let note = queue_note(i + 1);
            if run.queue_note.as_deref() != Some(note.as_str()) {
                let event = run.queue_note.is_none().then(|| {
                    format!(
                        "{note} of {} waiting; {} of {desired} workers busy",
                        waiting.len(),
                        self.busy
                    )
                });
                self.actions.push(Action::QueueNote {
                    run: run.key.clone(),
                    run_rv: run.resource_version.clone(),
                    note,
                    event,
                });
            }
        }
        Counts {
            desired,
            actual: self.active,
            idle: idle_left,
            busy: self.busy,
            queued: waiting.len() as i32,
        }
    }

    /// Runs whose worker printed nothing for `logsTimeout` fail.
    fn fail_silent(&mut self, pool: &WorkerPoolSpec) {
        let Some(limit) = logs_timeout(pool) else {
            return;
        };
        let stuck: BTreeSet<&RunKey> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::FailStuck { run, .. } => Some(run),
                _ => None,
            })
            .collect();
        let mut failing = Vec::new();
        for (key, running_for) in self.s.silent.iter().filter(|(_, e)| *e > 0) {
            let Some(run) = self.runs.get(key).copied() else {
                continue;
            };
            if stuck.contains(key) {
                continue;
            }
            let mut record = recording(self.s, run, RunResult::LogsTimeout, None);
            record.detail.reason = Some("LogsTimeout".to_string());
            record.detail.message = Some(format!(
                "the worker printed nothing for {limit}s (logsTimeout)"
            ));
            failing.push(Action::FailSilent {
                run: key.clone(),
                deadline: *running_for,
                record,
            });
        }
        self.actions.extend(failing);
    }
}

fn finished_result(phase: RunPhase) -> RunResult {
    if phase == RunPhase::Succeeded {
        RunResult::Succeeded
    } else {
        RunResult::Failed
    }
}

/// Deletes succeeded pods unless the pool keeps them, and trims kept pods per
/// worker to the history limits (oldest first).
fn trim_pods(pool: &WorkerPoolSpec, pods: &[FinishedPod], actions: &mut Vec<Action>) {
    let mut by_worker: BTreeMap<(&str, bool), Vec<&FinishedPod>> = BTreeMap::new();
    for p in pods {
        if p.succeeded && !pool.keep_successful_pods {
            actions.push(Action::DeletePod {
                name: p.name.clone(),
                reason: "succeeded",
            });
            continue;
        }
        by_worker
            .entry((&p.worker, p.succeeded))
            .or_default()
            .push(p);
    }
    for ((_, succeeded), mut list) in by_worker {
        let limit = if succeeded {
            pool.successful_pods_history_limit
        } else {
            pool.failed_pods_history_limit
        };
        let Some(limit) = limit else { continue };
        let limit = limit.max(0) as usize;
        if list.len() <= limit {
            continue;
        }
        list.sort_by_key(|p| (p.finished, p.name.clone()));
        let excess = list.len() - limit;
        for p in list.into_iter().take(excess) {
            actions.push(Action::DeletePod {
                name: p.name.clone(),
                reason: "history limit",
            });
        }
    }
}

/// The pool's `logsTimeout` in seconds.
pub fn logs_timeout(pool: &WorkerPoolSpec) -> Option<i64> {
    pool.logs_timeout
        .as_deref()
        .and_then(|t| crate::duration::parse(t).ok())
        .map(|d| d.as_secs() as i64)
}

/// A run whose worker container's log is to be read for a logs timeout.
#[derive(Debug, Clone, PartialEq)]
pub struct LogsProbe {
    pub run: RunKey,
    pub pod: String,
    pub container: String,
    /// The pool's `logsTimeout`, in seconds.
    pub limit: i64,
    /// How long the pod has been running, in seconds.
    pub running_for: i64,
}

/// The claimed, running runs that were claimed at least `logsTimeout` ago:
/// their worker's log is read (has it printed anything in the last
/// `logsTimeout`?) and the silent ones go into [`Snapshot::silent`].
pub fn logs_probes(s: &Snapshot, now: i64) -> Vec<LogsProbe> {
    let Some(limit) = s.pool.as_ref().and_then(logs_timeout) else {
        return Vec::new();
    };
    let claimed_long_ago = |r: &Run| r.claimed_at.is_some_and(|t| now - t >= limit);
    let mut probes = Vec::new();
    for run in &s.runs {
        if run.worker.is_none() || run.result_recorded || !claimed_long_ago(run) {
            continue;
        }
        let pod = match run.key.kind {
            super::RunKind::Job if run.phase == RunPhase::Running => s
                .running_pods
                .iter()
                .find(|p| p.job.as_deref() == Some(run.key.name.as_str())),
            super::RunKind::Job => None,
            super::RunKind::Pod => s.running_pods.iter().find(|p| p.name == run.key.name),
        };
        let Some(pod) = pod else { continue };
        if let (Some(container), Some(started)) = (&pod.container, pod.started) {
            probes.push(LogsProbe {
                run: run.key.clone(),
                pod: pod.name.clone(),
                container: container.clone(),
                limit,
                running_for: (now - started).max(1),
            });
        }
    }
    probes
}

/// The pool's status after a pass (`None`: unchanged, nothing to write).
/// `errors` are the writes that failed in the pass.
pub fn pool_status(
    generation: Option<i64>,
    previous: Option<&WorkerPoolStatus>,
    c: Counts,
    errors: &[String],
    now: Time,
) -> Option<WorkerPoolStatus> {
    let ready = errors.is_empty() && c.actual == c.desired;
    let (reason, message) = if !errors.is_empty() {
        ("ReconcileError", errors.join("; "))
    } else if ready {
        ("PoolReady", format!("{} workers registered", c.actual))
    } else {
        (
            "Scaling",
            format!("{} of {} workers registered", c.actual, c.desired),
        )
    };
    let previous = previous.cloned().unwrap_or_default();
    let old_ready = previous.conditions.iter().find(|c| c.type_ == "Ready");
    let status_str = if ready { "True" } else { "False" };
    let transition = match old_ready {
        Some(old) if old.status == status_str => old.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: "Ready".into(),
        status: status_str.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: transition,
    };
    let unchanged = previous.actual_pool_size == c.actual
        && previous.idle_workers == c.idle
        && previous.busy_workers == c.busy
        && previous.queued_runs == c.queued
        && previous.observed_generation == generation
        && old_ready.is_some_and(|o| {
            o.status == condition.status
                && o.reason == condition.reason
                && o.message == condition.message
        });
    (!unchanged).then(|| WorkerPoolStatus {
        actual_pool_size: c.actual,
        idle_workers: c.idle,
        busy_workers: c.busy,
        queued_runs: c.queued,
        conditions: vec![condition],
        observed_generation: generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::model::{RunKey, WorkerView};

    fn pool(size: i32) -> Option<WorkerPoolSpec> {
        Some(WorkerPoolSpec {
            pool_size: size,
            ..Default::default()
        })
    }

    fn queued(name: &str, created: i64, priority: i64) -> Run {
        Run {
            key: RunKey::job(name),
            resource_version: format!("rv-{name}"),
            created,
            priority,
            worker: None,
            phase: RunPhase::Queued,
            result_recorded: false,
            queue_note: None,
            escaped_injection: false,
            other_gates: vec![],
            uid: None,
            claimed_at: None,
            started: None,
            finished: None,
            finish_reason: None,
            active_deadline: None,
        }
    }

    fn idle(name: &str) -> WorkerView {
        WorkerView {
            name: name.into(),
            resource_version: format!("rv-{name}"),
            phase: WorkerPhase::Idle,
            current_run: None,
            last_heartbeat: None,
        }
    }

    fn busy(name: &str, run: &str) -> WorkerView {
        WorkerView {
            phase: WorkerPhase::Busy,
            current_run: Some(RunKey::job(run)),
            ..idle(name)
        }
    }

    fn claims(actions: &[Action]) -> Vec<(String, String)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Claim { worker, run, .. } => Some((worker.clone(), run.name.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn queue_orders_by_priority_then_age_then_name() {
        let runs = vec![
            queued("c", 3, 0),
            queued("a", 5, 10),
            queued("b", 1, 0),
            queued("d", 1, 0),
        ];
        let names: Vec<_> = queue(&runs).iter().map(|r| r.key.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "d", "c"]);
    }

    #[test]
    fn idle_workers_claim_queue_heads_and_the_rest_are_told_why() {
        let s = Snapshot {
            pool: pool(2),
            workers: vec![idle("w1"), idle("w2")],
            runs: vec![
                queued("r1", 1, 0),
                queued("r2", 2, 0),
                queued("r3", 3, 0),
                queued("hot", 9, 5),
            ],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, counts) = decide(&s);
        assert_eq!(
            claims(&actions),
            [("w1".into(), "hot".into()), ("w2".into(), "r1".into())]
        );
        let notes: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::QueueNote { run, note, .. } => Some((run.name.as_str(), note.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(
            notes,
            [
                ("r2", "position 1 in the queue"),
                ("r3", "position 2 in the queue")
            ]
        );
        assert_eq!(
            counts,
            Counts {
                desired: 2,
                actual: 2,
                idle: 0,
                busy: 2,
                queued: 2
            }
        );
    }

    #[test]
    fn current_queue_notes_are_not_rewritten() {
        let mut r = queued("r2", 2, 0);
        r.queue_note = Some(queue_note(1));
        let s = Snapshot {
            pool: pool(1),
            workers: vec![busy("w1", "r1")],
            runs: vec![
                Run {
                    worker: Some("w1".into()),
                    phase: RunPhase::Running,
                    ..queued("r1", 1, 0)
                },
                r,
            ],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn scale_up_creates_and_scale_down_deletes_idle_then_drains_busy() {
        // Deterministic names: the lowest indices no worker has.
        let s = Snapshot {
            pool_name: "p".into(),
            pool: pool(3),
            workers: vec![idle("p-1")],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert_eq!(
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::CreateWorker { name } => Some(name.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            ["p-0", "p-2"]
        );

        let s = Snapshot {
            pool: pool(1),
            workers: vec![busy("w1", "a"), busy("w2", "b"), idle("w3")],
            runs: vec![
                Run {
                    worker: Some("w1".into()),
                    phase: RunPhase::Running,
                    ..queued("a", 1, 0)
                },
                Run {
                    worker: Some("w2".into()),
                    phase: RunPhase::Running,
                    ..queued("b", 1, 0)
                },
            ],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(actions.contains(&Action::DeleteWorker {
            worker: "w3".into(),
            rv: "rv-w3".into()
        }));
        let drained: Vec<_> = actions
            .iter()
            .filter(|a| matches!(a, Action::Drain { .. }))
            .collect();
        assert_eq!(drained.len(), 1, "{actions:?}");
        assert!(!actions
            .iter()
            .any(|a| matches!(a, Action::DeleteWorker { worker, .. } if worker != "w3")));
    }

    #[test]
    fn draining_workers_are_deleted_when_their_run_ends() {
        let mut w = busy("w1", "a");
        w.phase = WorkerPhase::Draining;
        let s = Snapshot {
            pool: pool(0),
            workers: vec![w],
            runs: vec![Run {
                worker: Some("w1".into()),
                phase: RunPhase::Succeeded,
                ..queued("a", 1, 0)
            }],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Release {
                delete: true,
                outcome: Some(RunResult::Succeeded),
                ..
            }
        )));
    }

    #[test]
    fn finished_and_vanished_runs_release_their_workers() {
        let s = Snapshot {
            pool: pool(2),
            workers: vec![busy("w1", "done"), busy("w2", "gone")],
            runs: vec![Run {
                worker: Some("w1".into()),
                phase: RunPhase::Failed,
                ..queued("done", 1, 0)
            }],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(actions.iter().any(|a| matches!(a, Action::Release { worker, outcome: Some(RunResult::Failed), .. } if worker == "w1")));
        assert!(actions.iter().any(|a| matches!(a, Action::Release { worker, outcome: Some(RunResult::Lost), .. } if worker == "w2")));
    }

    #[test]
    fn a_released_worker_claims_the_next_run_in_the_same_pass() {
        let s = Snapshot {
            pool: pool(1),
            workers: vec![busy("w1", "done")],
            runs: vec![
                Run {
                    worker: Some("w1".into()),
                    phase: RunPhase::Succeeded,
                    ..queued("done", 1, 0)
                },
                queued("next", 2, 0),
            ],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, counts) = decide(&s);
        assert!(matches!(actions[0], Action::Release { .. }));
        assert!(actions.contains(&Action::Claim {
            worker: "w1".into(),
            worker_rv: String::new(),
            run: RunKey::job("next"),
            run_rv: "rv-next".into()
        }));
        assert_eq!(counts.queued, 0);
    }

    #[test]
    fn half_done_claims_are_completed_not_duplicated() {
        // The worker was marked busy, the run not yet labeled/unsuspended.
        let s = Snapshot {
            pool: pool(2),
            workers: vec![busy("w1", "r1"), idle("w2")],
            runs: vec![queued("r1", 1, 0), queued("r2", 2, 0)],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(actions.iter().any(|a| matches!(a, Action::CompleteClaim { worker, run, .. } if worker == "w1" && run.name == "r1")));
        assert_eq!(
            claims(&actions),
            [("w2".into(), "r2".into())],
            "r1 is not claimed again"
        );
    }

    #[test]
    fn a_worker_that_lost_a_race_is_released_without_counting_a_run() {
        let s = Snapshot {
            pool: pool(2),
            workers: vec![busy("w1", "r1"), busy("w2", "r1")],
            runs: vec![Run {
                worker: Some("w2".into()),
                phase: RunPhase::Running,
                ..queued("r1", 1, 0)
            }],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert_eq!(
            actions,
            [Action::Release {
                worker: "w1".into(),
                rv: "rv-w1".into(),
                run: RunKey::job("r1"),
                outcome: None,
                delete: false,
                record: None
            }]
        );
    }

    #[test]
    fn deleted_pool_fails_queued_runs() {
        let s = Snapshot {
            pool: None,
            runs: vec![queued("r1", 1, 0)],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(matches!(
            &actions[..],
            [Action::FailRun {
                reason: "PoolNotFound",
                ..
            }]
        ));
    }

    #[test]
    fn succeeded_pods_go_and_failed_ones_are_trimmed() {
        let mut spec = WorkerPoolSpec {
            pool_size: 1,
            failed_pods_history_limit: Some(1),
            ..Default::default()
        };
        let pods = vec![
            FinishedPod {
                name: "ok".into(),
                worker: "w1".into(),
                succeeded: true,
                finished: 1,
            },
            FinishedPod {
                name: "f-old".into(),
                worker: "w1".into(),
                succeeded: false,
                finished: 1,
            },
            FinishedPod {
                name: "f-new".into(),
                worker: "w1".into(),
                succeeded: false,
                finished: 2,
            },
        ];
        let s = Snapshot {
            pool: Some(spec.clone()),
            workers: vec![idle("w1")],
            runs: vec![],
            finished_pods: pods.clone(),
            ..Default::default()
        };
        let deleted: Vec<_> = decide(&s)
            .0
            .into_iter()
            .filter_map(|a| match a {
                Action::DeletePod { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(deleted, ["ok", "f-old"]);
        spec.keep_successful_pods = true;
        let s = Snapshot {
            pool: Some(spec),
            workers: vec![idle("w1")],
            runs: vec![],
            finished_pods: pods,
            ..Default::default()
        };
        assert!(!decide(&s).0.contains(&Action::DeletePod {
            name: "ok".into(),
            reason: "succeeded"
        }));
    }

    #[test]
    fn escaped_pods_are_failed_and_never_queued() {
        let mut r = queued("p", 1, 0);
        r.key = RunKey::pod("p");
        r.escaped_injection = true;
        r.phase = RunPhase::Running;
        let s = Snapshot {
            pool: pool(1),
            workers: vec![idle("w1")],
            runs: vec![r],
            finished_pods: vec![],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert!(
            matches!(
                &actions[..],
                [Action::FailRun {
                    reason: "NotInjected",
                    ..
                }]
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn run_keys_round_trip() {
        for k in [RunKey::job("a"), RunKey::pod("b-c")] {
            assert_eq!(RunKey::parse(&k.to_string()), Some(k));
        }
        assert_eq!(RunKey::parse("Deployment/x"), None);
        assert_eq!(RunKey::parse("Job/"), None);
    }
}
