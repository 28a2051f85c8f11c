//! The controller's pure model: a snapshot of one pool (its spec, workers and
//! runs) as [`observe`] reads it off the objects, and the writes [`decide`]
//! derives from it. No I/O here.

pub mod decide;
pub mod observe;

pub use decide::decide;
pub use observe::{model_snapshot, JobSummary};

use crate::crd::{WorkerPhase, WorkerPoolSpec};
use crate::vocab::RunResult;
use std::cmp::Reverse;

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
    /// The object's uid (for Events about it).
    pub uid: Option<String>,
    /// `runyard.dev/claimed-at`, seconds since the epoch.
    pub claimed_at: Option<i64>,
    /// When it started (the Job's or the Pod's `status.startTime`).
    pub started: Option<i64>,
    /// When it finished (the Job's completion or failure, the Pod's worker).
    pub finished: Option<i64>,
    /// Why it finished as it did, as Kubernetes says (`DeadlineExceeded`,
    /// `BackoffLimitExceeded`, `Evicted`), and the message.
    pub finish_reason: Option<(String, String)>,
    /// A bare Pod's `spec.activeDeadlineSeconds`.
    pub active_deadline: Option<i64>,
}

/// What the pod of a run says (a Job's newest pod, or the bare Pod itself).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodFacts {
    pub name: String,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.startTime` (the kubelet took it on), seconds since the epoch.
    pub started: Option<i64>,
    /// A container that waits with a reason other than creation in progress:
    /// (container, reason, message).
    pub waiting: Option<(String, String, String)>,
    /// The worker container (the first regular one that is not runyard's).
    pub worker_container: Option<String>,
    /// Its exit code and when it finished, once terminated.
    pub exit_code: Option<i32>,
    pub finished: Option<i64>,
    /// `status.reason` / `status.message` of the pod (e.g. `Evicted`).
    pub reason: Option<(String, String)>,
    /// Whether the launcher container is ready (its heartbeat), if it runs.
    pub launcher_ready: Option<bool>,
    /// Since when the pod's containers have not all been ready.
    pub not_ready_since: Option<i64>,
    /// Since when the pod has not been Ready although the kubelet last said
    /// its containers were: the node stopped reporting (the node lifecycle
    /// controller marks its pods not ready).
    pub node_lost_since: Option<i64>,
}

impl PodFacts {
    /// The kubelet started it (running or done).
    pub fn started_running(&self) -> bool {
        matches!(
            self.phase.as_deref(),
            Some("Running" | "Succeeded" | "Failed")
        )
    }
}

/// The record of a finished run, written as `runyard.dev/result-detail`
/// (JSON), kept with the run's log tail, and shown by `runyard status`.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultRecord {
    /// A [`RunResult`].
    pub outcome: String,
    /// Why, in a word (`DeadlineExceeded`, `ImagePullBackOff`, `NonZeroExit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why, for a person (the pull error, the Job's message, Warning Events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The worker container's exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
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
    /// `status.lastHeartbeat`, seconds since the epoch.
    pub last_heartbeat: Option<i64>,
}

/// A run pod in phase Running (the pod a logs timeout is checked on).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningPod {
    pub name: String,
    /// The Job controlling the pod, if any.
    pub job: Option<String>,
    /// The first container (the worker).
    pub container: Option<String>,
    /// `status.startTime`, seconds since the epoch.
    pub started: Option<i64>,
}

/// A pod of a Job that carries the pool's label (the Job itself should be one
/// of the pool's runs).
#[derive(Debug, Clone, PartialEq)]
pub struct JobPod {
    pub name: String,
    pub resource_version: String,
    /// The controlling Job's name.
    pub job: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub finished: bool,
}

/// Everything `decide` reads about one pool.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The pool's name.
    pub pool_name: String,
    /// `None`: the pool does not exist (deleted).
    pub pool: Option<WorkerPoolSpec>,
    pub workers: Vec<WorkerView>,
    pub runs: Vec<Run>,
    pub finished_pods: Vec<FinishedPod>,
    pub running_pods: Vec<RunningPod>,
    /// Pods of Jobs labeled for this pool.
    pub job_pods: Vec<JobPod>,
    /// What each run's pod says.
    pub run_pods: std::collections::BTreeMap<RunKey, PodFacts>,
    /// The time of the pass, seconds since the epoch (0: unknown, nothing
    /// time-based is decided).
    pub now: i64,
    /// Runs whose worker printed nothing for the pool's `logsTimeout`, with
    /// how long their pod has run (seconds): the result of the log probes of
    /// [`decide::logs_probes`], read before deciding.
    pub silent: Vec<(RunKey, i64)>,
}

/// A write the controller should make. Every write that can race carries the
/// resourceVersion it was decided on.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Register a new idle worker under this (deterministic) name.
    CreateWorker { name: String },
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
        outcome: Option<RunResult>,
        delete: bool,
        /// The result to record on the run (not when a result, e.g.
        /// Cancelled, is already there), and the worker log to keep with it.
        record: Option<Recording>,
    },
    /// Record the outcome on the run (annotations, Event, log tail).
    RecordResult { run: RunKey, record: Recording },
    /// A claimed run that will not finish by itself: its pod never started
    /// (pending too long, or a waiting reason that never resolves), or its
    /// launcher stopped beating. Its result is recorded and it is ended; a
    /// bare Pod is deleted and its worker released at once.
    FailStuck {
        run: RunKey,
        worker: String,
        worker_rv: String,
        record: Recording,
        /// The pod whose Warning Events explain it.
        pod: Option<String>,
        /// The result is already written (a bare Pod whose delete failed).
        recorded: bool,
    },
    /// The run's launcher is alive: `status.lastHeartbeat` of its worker.
    Heartbeat { worker: String, rv: String },
    /// Delete a run pod (succeeded and not kept, or trimmed from history).
    DeletePod { name: String, reason: &'static str },
    /// Fail a run that can never run (its pool is gone, it escaped injection).
    FailRun {
        run: RunKey,
        reason: &'static str,
        message: String,
    },
    /// Tell a queued run why it waits: the annotation kept current, and one
    /// `Queued` Event (with the busy count) when it enters the queue.
    QueueNote {
        run: RunKey,
        run_rv: String,
        note: String,
        /// The Event's text, when this is the run's first note.
        event: Option<String>,
    },
    /// A run that runs without a claim (unsuspended or ungated by someone
    /// other than the controller, or while the webhook was bypassed): a Job is
    /// suspended again and its worker label removed, a bare Pod deleted; both
    /// guarded by the resourceVersion decided on.
    StopEscaped { run: RunKey, run_rv: String },
    /// A pod of a Job that is not one of the pool's runs (its template names
    /// the pool, the Job does not): deleted, guarded.
    DeleteForeignPod {
        pod: String,
        pod_rv: String,
        job: String,
    },
    /// Fail a running run whose worker printed nothing for `logsTimeout`:
    /// its deadline becomes `deadline` seconds, which it has already run,
    /// and its result is recorded.
    FailSilent {
        run: RunKey,
        deadline: i64,
        record: Recording,
    },
}

/// A result to write, and where the log to keep with it comes from.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub result: RunResult,
    pub detail: ResultRecord,
    /// (pod, container) whose log tail is kept.
    pub log_from: Option<(String, String)>,
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
/// number, so that one claim rewrites at most `NOTE_POSITIONS + 1` notes.
pub const NOTE_POSITIONS: usize = 20;

/// The `runyard.dev/queue` note of a queued run: its position only, so that
/// it changes only when its own position does (not with the busy count, the
/// pool size or the queue's length).
pub fn queue_note(position: usize) -> String {
    if position <= NOTE_POSITIONS {
        format!("position {position} in the queue")
    } else {
        format!("more than {NOTE_POSITIONS} runs ahead in the queue")
    }
}

/// The name of a pool's worker with index `i`. Names are deterministic, so
/// two controllers that briefly both lead create the same names, and the
/// second create of a name fails: a pool never gets more workers than asked.
pub fn worker_name(pool: &str, i: usize) -> String {
    format!("{pool}-{i}")
}

/// The index of a worker named by [`worker_name`] for `pool`.
pub fn worker_index(pool: &str, name: &str) -> Option<usize> {
    name.strip_prefix(pool)?.strip_prefix('-')?.parse().ok()
}
