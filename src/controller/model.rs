//! The controller's pure decisions: from a snapshot of one pool (its spec,
//! workers and runs) to the writes that converge it. No I/O here.

use crate::crd::{WorkerPhase, WorkerPoolSpec};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

/// Kind of a run object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunKind {
    Job,
    Pod,
}

/// Identity of a run inside a namespace, also the Worker's `status.currentRun`
/// (`Job/build-42`, `Pod/tf-plan`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunKey {
    pub kind: RunKind,
    pub name: String,
}

impl RunKey {
    pub fn job(name: impl Into<String>) -> Self {
        Self {
            kind: RunKind::Job,
            name: name.into(),
        }
    }
    pub fn pod(name: impl Into<String>) -> Self {
        Self {
            kind: RunKind::Pod,
            name: name.into(),
        }
    }
    /// Parses `Job/name` or `Pod/name`.
    pub fn parse(s: &str) -> Option<Self> {
        let (kind, name) = s.split_once('/')?;
        let kind = match kind {
            "Job" => RunKind::Job,
            "Pod" => RunKind::Pod,
            _ => return None,
        };
        (!name.is_empty()).then(|| Self {
            kind,
            name: name.to_string(),
        })
    }
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            RunKind::Job => "Job",
            RunKind::Pod => "Pod",
        };
        write!(f, "{kind}/{}", self.name)
    }
}

/// Where a run is in its life, as read from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunPhase {
    /// Suspended Job / gated Pod, waiting for a worker.
    Queued,
    /// Claimed (or never queued) and not finished.
    Running,
    Succeeded,
    Failed,
}

/// How a run ended, recorded in `runyard.dev/result`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// The run object disappeared while a worker held it.
    Lost,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Lost => "Lost",
        }
    }
}

/// A run as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub key: RunKey,
    pub resource_version: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub priority: i64,
    /// `runyard.dev/worker` label.
    pub worker: Option<String>,
    pub phase: RunPhase,
    /// `runyard.dev/result` annotation already written.
    pub result_recorded: bool,
    /// `runyard.dev/queue` annotation (position and busy count) currently on the run.
    pub queue_note: Option<String>,
    /// A Pod without the injection marker (it escaped the webhook).
    pub escaped_injection: bool,
    /// Scheduling gates of a Pod other than runyard's.
    pub other_gates: Vec<String>,
}

/// A finished run pod kept for history.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedPod {
    pub name: String,
    pub worker: String,
    pub succeeded: bool,
    /// Seconds since the epoch; the oldest are trimmed first.
    pub finished: i64,
}

/// A worker as the decision needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    pub name: String,
    pub resource_version: String,
    pub phase: WorkerPhase,
    pub current_run: Option<RunKey>,
}

/// Everything `decide` reads about one pool.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// `None`: the pool does not exist (deleted).
    pub pool: Option<WorkerPoolSpec>,
    pub workers: Vec<WorkerView>,
    pub runs: Vec<Run>,
    pub finished_pods: Vec<FinishedPod>,
}

/// A write the controller should make. Every write that can race carries the
/// resourceVersion it was decided on.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Register a new idle worker.
    CreateWorker,
    /// Remove an idle worker (scale down, or a draining worker whose run ended).
    DeleteWorker { worker: String, rv: String },
    /// Take a busy worker out of the pool; it is deleted once its run ends.
    Drain { worker: String, rv: String },
    /// Bind a queued run to an idle worker: worker first (guarded), then run.
    /// An empty `worker_rv` means "the version left by this pass's release".
    Claim {
        worker: String,
        worker_rv: String,
        run: RunKey,
        run_rv: String,
    },
    /// The worker is busy with the run but the run was never labeled/released
    /// (a crash between the two claim writes): finish the run's half.
    CompleteClaim {
        worker: String,
        run: RunKey,
        run_rv: String,
    },
    /// A run labeled for this worker that the worker does not know about
    /// (the worker's half was lost): bind the worker to it.
    AdoptRun {
        worker: String,
        worker_rv: String,
        run: RunKey,
    },
    /// The worker's run ended or vanished: back to Idle (or deleted if draining).
    Release {
        worker: String,
        rv: String,
        run: RunKey,
        outcome: Option<Outcome>,
        delete: bool,
        /// Record the outcome on the run (not when a result, e.g. Cancelled,
        /// is already there).
        record: bool,
    },
    /// Record the outcome on the run (annotation and Event).
    RecordResult { run: RunKey, outcome: Outcome },
    /// Delete a run pod (succeeded and not kept, or trimmed from history).
    DeletePod { name: String, reason: &'static str },
    /// Fail a run that can never run (its pool is gone, it escaped injection).
    FailRun {
        run: RunKey,
        reason: &'static str,
        message: String,
    },
    /// Tell a queued run why it waits (annotation kept current, and an Event).
    QueueNote {
        run: RunKey,
        run_rv: String,
        note: String,
    },
}

/// Pool status as `decide` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub desired: i32,
    pub actual: i32,
    pub idle: i32,
    pub busy: i32,
    pub queued: i32,
}

/// The queue of a pool: queued, unclaimed runs by priority (higher first), then
/// creation time, then name.
pub fn queue(runs: &[Run]) -> Vec<&Run> {
    let mut q: Vec<&Run> = runs
        .iter()
        .filter(|r| r.phase == RunPhase::Queued && r.worker.is_none() && !r.escaped_injection)
        .collect();
    q.sort_by(|a, b| {
        (Reverse(a.priority), a.created, &a.key).cmp(&(Reverse(b.priority), b.created, &b.key))
    });
    q
}

/// Queue positions reported exactly; runs further back say so without a
/// number, so that one claim does not rewrite every queued run.
pub const NOTE_POSITIONS: usize = 20;

/// The note a queued run carries: its position and how busy the pool is.
pub fn queue_note(position: usize, queued: usize, busy: i32, size: i32) -> String {
    if position <= NOTE_POSITIONS {
        format!("position {position} of {queued} in the queue; {busy} of {size} workers busy")
    } else {
        format!("more than {NOTE_POSITIONS} runs ahead in the queue; {busy} of {size} workers busy")
    }
}

/// Decides the writes for one pool.
pub fn decide(s: &Snapshot) -> (Vec<Action>, Counts) {
    let mut actions = Vec::new();
    let runs: BTreeMap<&RunKey, &Run> = s.runs.iter().map(|r| (&r.key, r)).collect();

    let Some(pool) = &s.pool else {
        // The pool is gone: fail what waits, release nothing (its workers are
        // garbage-collected with it).
        for run in queue(&s.runs) {
            actions.push(Action::FailRun {
                run: run.key.clone(),
                reason: "PoolNotFound",
                message: "runyard: the run's WorkerPool no longer exists; it can never be claimed"
                    .into(),
            });
        }
        return (actions, Counts::default());
    };

    // Runs that escaped injection never run under runyard.
    for run in s.runs.iter().filter(|r| {
        r.escaped_injection && r.phase != RunPhase::Failed && r.phase != RunPhase::Succeeded
    }) {
        actions.push(Action::FailRun {
            run: run.key.clone(),
            reason: "NotInjected",
            message: "runyard: this run pod was not injected by the runyard webhook (is the webhook installed and its objectSelector matching?)".into(),
        });
    }

    let mut idle: Vec<&WorkerView> = Vec::new();
    let mut busy = 0;
    let mut active = 0; // not draining
    let mut held: BTreeSet<&RunKey> = BTreeSet::new();
    let mut released_outcomes: BTreeSet<&RunKey> = BTreeSet::new();
    // Workers released in this pass: claimable right away (the executor fills
    // in their resourceVersion after the release write).
    let mut released_now: Vec<&str> = Vec::new();

    for w in &s.workers {
        let draining = w.phase == WorkerPhase::Draining;
        if !draining {
            active += 1;
        }
        match &w.current_run {
            None => {
                if draining {
                    actions.push(Action::DeleteWorker {
                        worker: w.name.clone(),
                        rv: w.resource_version.clone(),
                    });
                } else {
                    idle.push(w);
                }
            }
            Some(key) => {
                let run = runs.get(key);
                let release_idle = !draining;
                let record = run.is_some_and(|r| !r.result_recorded);
                let release = |outcome: Option<Outcome>| Action::Release {
                    worker: w.name.clone(),
                    rv: w.resource_version.clone(),
                    run: key.clone(),
                    outcome,
                    delete: draining,
                    record,
                };
                let released_before = actions.len();
                match run {
                    None => actions.push(release(Some(Outcome::Lost))),
                    Some(r) => match r.worker.as_deref() {
                        Some(owner) if owner == w.name => match r.phase {
                            RunPhase::Succeeded | RunPhase::Failed => {
                                let outcome = if r.phase == RunPhase::Succeeded {
                                    Outcome::Succeeded
                                } else {
                                    Outcome::Failed
                                };
                                actions.push(release(Some(outcome)));
                                released_outcomes.insert(key);
                            }
                            RunPhase::Queued => {
                                // Labeled but still suspended/gated: finish the claim.
                                busy += 1;
                                held.insert(key);
                                actions.push(Action::CompleteClaim {
                                    worker: w.name.clone(),
                                    run: key.clone(),
                                    run_rv: r.resource_version.clone(),
                                });
                            }
                            RunPhase::Running => {
                                busy += 1;
                                held.insert(key);
                            }
                        },
                        None if r.phase == RunPhase::Queued => {
                            // Crash between the claim's two writes.
                            busy += 1;
                            held.insert(key);
                            actions.push(Action::CompleteClaim {
                                worker: w.name.clone(),
                                run: key.clone(),
                                run_rv: r.resource_version.clone(),
                            });
                        }
                        // The run went to another worker, or runs unmanaged:
                        // this worker does not hold it.
                        _ => actions.push(release(None)),
                    },
                }
                let released = actions[released_before..]
                    .iter()
                    .any(|a| matches!(a, Action::Release { .. }));
                if released && release_idle {
                    released_now.push(w.name.as_str());
                }
            }
        }
    }

    // Runs labeled for an idle worker that does not hold them: adopt.
    let mut adopted: BTreeSet<&str> = BTreeSet::new();
    for run in &s.runs {
        let Some(owner) = run.worker.as_deref() else {
            continue;
        };
        if held.contains(&run.key) || !matches!(run.phase, RunPhase::Running | RunPhase::Queued) {
            continue;
        }
        if let Some(pos) = idle.iter().position(|w| w.name == owner) {
            let w = idle.remove(pos);
            adopted.insert(owner);
            busy += 1;
            actions.push(Action::AdoptRun {
                worker: w.name.clone(),
                worker_rv: w.resource_version.clone(),
                run: run.key.clone(),
            });
        }
    }

    // Record outcomes of finished runs (once), and clean up their pods.
    for run in &s.runs {
        if matches!(run.phase, RunPhase::Succeeded | RunPhase::Failed)
            && run.worker.is_some()
            && !run.result_recorded
            && !released_outcomes.contains(&run.key)
        {
            let outcome = if run.phase == RunPhase::Succeeded {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
            actions.push(Action::RecordResult {
                run: run.key.clone(),
                outcome,
            });
        }
    }
    trim_pods(pool, &s.finished_pods, &mut actions);

    // Scale: keep exactly poolSize active workers. Idle ones go first; busy
    // ones drain and are deleted when their run ends.
    let desired = pool.pool_size.max(0);
    if active < desired {
        for _ in active..desired {
            actions.push(Action::CreateWorker);
        }
    } else if active > desired {
        let mut surplus = active - desired;
        idle.sort_by(|a, b| b.name.cmp(&a.name));
        while surplus > 0 {
            let Some(w) = idle.pop() else { break };
            actions.push(Action::DeleteWorker {
                worker: w.name.clone(),
                rv: w.resource_version.clone(),
            });
            surplus -= 1;
        }
        if surplus > 0 {
            let mut busy_workers: Vec<&WorkerView> = s
                .workers
                .iter()
                .filter(|w| w.phase != WorkerPhase::Draining && w.current_run.is_some())
                .collect();
            busy_workers.sort_by(|a, b| b.name.cmp(&a.name));
            for w in busy_workers.into_iter().take(surplus as usize) {
                actions.push(Action::Drain {
                    worker: w.name.clone(),
                    rv: w.resource_version.clone(),
                });
            }
        }
    }

    // Claim: queue heads to idle workers (name order), then to the workers
    // released above (only if the pool is not shrinking).
    idle.sort_by(|a, b| a.name.cmp(&b.name));
    let mut claimable: Vec<(String, String)> = idle
        .iter()
        .map(|w| (w.name.clone(), w.resource_version.clone()))
        .collect();
    if active <= desired {
        claimable.extend(released_now.iter().map(|n| (n.to_string(), String::new())));
    }
    let queue: Vec<&Run> = queue(&s.runs)
        .into_iter()
        .filter(|r| !held.contains(&r.key))
        .collect();
    let mut waiting = Vec::new();
    let mut claimable = claimable.into_iter();
    for run in &queue {
        match claimable.next() {
            Some((worker, worker_rv)) => {
                busy += 1;
                actions.push(Action::Claim {
                    worker,
                    worker_rv,
                    run: run.key.clone(),
                    run_rv: run.resource_version.clone(),
                });
            }
            None => waiting.push(*run),
        }
    }
    let idle_left = claimable.count() as i32;
    for (i, run) in waiting.iter().enumerate() {
        let note = queue_note(i + 1, waiting.len(), busy, desired);
        if run.queue_note.as_deref() != Some(note.as_str()) {
            actions.push(Action::QueueNote {
                run: run.key.clone(),
                run_rv: run.resource_version.clone(),
                note,
            });
        }
    }
    let counts = Counts {
        desired,
        actual: active,
        idle: idle_left,
        busy,
        queued: waiting.len() as i32,
    };
    (actions, counts)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }

    fn idle(name: &str) -> WorkerView {
        WorkerView {
            name: name.into(),
            resource_version: format!("rv-{name}"),
            phase: WorkerPhase::Idle,
            current_run: None,
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
                ("r2", "position 1 of 2 in the queue; 2 of 2 workers busy"),
                ("r3", "position 2 of 2 in the queue; 2 of 2 workers busy")
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
        r.queue_note = Some(queue_note(1, 1, 1, 1));
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
        };
        let (actions, _) = decide(&s);
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn scale_up_creates_and_scale_down_deletes_idle_then_drains_busy() {
        let s = Snapshot {
            pool: pool(3),
            workers: vec![idle("w1")],
            ..Default::default()
        };
        let (actions, _) = decide(&s);
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == Action::CreateWorker)
                .count(),
            2
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
        };
        let (actions, _) = decide(&s);
        assert!(actions.iter().any(|a| matches!(
            a,
            Action::Release {
                delete: true,
                outcome: Some(Outcome::Succeeded),
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
        };
        let (actions, _) = decide(&s);
        assert!(actions.iter().any(|a| matches!(a, Action::Release { worker, outcome: Some(Outcome::Failed), .. } if worker == "w1")));
        assert!(actions.iter().any(|a| matches!(a, Action::Release { worker, outcome: Some(Outcome::Lost), .. } if worker == "w2")));
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
                record: true
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
