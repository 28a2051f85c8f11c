//! The controller against the in-memory API: registration, claim order and
//! priority, the concurrency limit, finishing, scaling during busy runs, pool
//! deletion, crashes between the two claim writes, injected conflicts,
//! timeouts and API errors, and controllers racing without a Lease.

use runyard::cluster::ClusterError;
use runyard::controller::act::Report;
use runyard::controller::metrics::ControllerMetrics;
use runyard::crd::{WorkerPhase, WorkerPoolSpec};
use runyard::vocab::{label, LABEL_WORKER};
use runyard::vocab::{
    ANNOTATION_CLAIMED_AT, ANNOTATION_QUEUE, ANNOTATION_RESULT, LABEL_WORKER_POOL,
};
use runyard_testing::{MemoryCluster, Op};
use std::collections::{BTreeMap, BTreeSet};

const NS: &str = "ci";
const POOL: &str = "builders";

fn cluster(size: i32) -> MemoryCluster {
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: size,
            ..Default::default()
        },
    );
    c
}

async fn pass(c: &MemoryCluster) -> Report {
    c.reconcile(&ControllerMetrics::new(), NS, POOL)
        .await
        .expect("reconcile")
}

/// Reconciles until nothing changes (bounded).
async fn settle(c: &MemoryCluster) -> Report {
    let mut last = pass(c).await;
    for _ in 0..10 {
        let next = pass(c).await;
        if next.claims == 0
            && next.releases == 0
            && !next.needs_retry()
            && next.counts == last.counts
        {
            return next;
        }
        last = next;
    }
    last
}

fn running_jobs(c: &MemoryCluster) -> Vec<String> {
    c.all_jobs(NS)
        .into_iter()
        .filter(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(false))
        .map(|j| j.metadata.name.unwrap_or_default())
        .collect()
}

fn job_worker(c: &MemoryCluster, name: &str) -> Option<String> {
    let job = c.job(NS, name)?;
    label(&job.metadata, LABEL_WORKER).map(str::to_string)
}

fn workers_by_phase(c: &MemoryCluster) -> BTreeMap<WorkerPhase, usize> {
    let mut m = BTreeMap::new();
    for w in c.all_workers(NS) {
        *m.entry(w.status.unwrap_or_default().phase).or_default() += 1;
    }
    m
}

/// No run is claimed twice: every busy worker's run carries that worker's label,
/// and no two workers hold the same run.
fn assert_consistent(c: &MemoryCluster) {
    let mut held = BTreeSet::new();
    for w in c.all_workers(NS) {
        let name = w.metadata.name.clone().unwrap_or_default();
        let status = w.status.unwrap_or_default();
        if let Some(run) = status.current_run {
            assert!(held.insert(run.clone()), "{run} held by two workers");
            let job = run.trim_start_matches("Job/");
            assert_eq!(
                job_worker(c, job).as_deref(),
                Some(name.as_str()),
                "{run} not labeled for {name}"
            );
        }
    }
    for j in c.all_jobs(NS) {
        let name = j.metadata.name.clone().unwrap_or_default();
        let unsuspended = j.spec.as_ref().and_then(|s| s.suspend) == Some(false);
        let finished = j.status.is_some();
        if unsuspended && !finished {
            assert!(
                held.contains(&format!("Job/{name}")),
                "{name} runs without a worker"
            );
        }
    }
}

#[tokio::test]
async fn registers_exactly_pool_size_workers() {
    let c = cluster(3);
    let report = settle(&c).await;
    let workers = c.all_workers(NS);
    assert_eq!(workers.len(), 3);
    for w in &workers {
        assert!(w
            .metadata
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("builders-")));
        assert_eq!(label(&w.metadata, LABEL_WORKER_POOL), Some(POOL));
        let owner = &w.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str()),
            ("WorkerPool", POOL)
        );
        let status = w.status.clone().expect("status");
        assert_eq!(status.phase, WorkerPhase::Idle);
        assert!(status.registered_at.is_some());
    }
    assert_eq!(report.counts.actual, 3);
    let status = c.pool_status(NS, POOL).expect("pool status");
    assert_eq!((status.actual_pool_size, status.idle_workers), (3, 3));
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.observed_generation, Some(1));
}

#[tokio::test]
async fn claims_by_priority_then_age_and_caps_concurrency() {
    let c = cluster(2);
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        c.add_queued_job(NS, name, POOL, 1000 + i as i64, None);
    }
    c.add_queued_job(NS, "urgent", POOL, 2000, Some(10));
    settle(&c).await;
    let mut running = running_jobs(&c);
    running.sort();
    assert_eq!(running, ["a", "urgent"], "priority first, then the oldest");
    assert_consistent(&c);
    let job = c.job(NS, "urgent").expect("job");
    let template_labels = job
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .expect("labels");
    assert_eq!(
        template_labels.get(LABEL_WORKER),
        job_worker(&c, "urgent").as_ref(),
        "the pods carry the worker label too"
    );
    assert!(job
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_CLAIMED_AT)));
    // Queued runs say why they wait.
    let waiting = c.job(NS, "c").expect("job");
    let note = waiting
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_QUEUE))
        .expect("queue note");
    // The note is the run's position only (so it changes only with it); the
    // one Queued Event also says how busy the pool is.
    assert_eq!(note, "position 2 in the queue");
    let queued: Vec<_> = c
        .events()
        .into_iter()
        .filter(|e| e.object == "Job/c" && e.reason == "Queued")
        .collect();
    assert_eq!(queued.len(), 1, "one Queued Event per run: {queued:?}");
    assert!(queued[0].note.contains("workers busy"), "{queued:?}");
    let status = c.pool_status(NS, POOL).expect("status");
    assert_eq!((status.busy_workers, status.queued_runs), (2, 4));
}

#[tokio::test]
async fn finished_runs_release_their_worker_and_the_next_run_starts() {
    let c = cluster(1);
    c.add_queued_job(NS, "first", POOL, 1, None);
    c.add_queued_job(NS, "second", POOL, 2, None);
    settle(&c).await;
    assert_eq!(running_jobs(&c), ["first"]);
    c.finish_job(NS, "first", true);
    let report = pass(&c).await;
    assert_eq!(
        (report.releases, report.claims),
        (1, 1),
        "released and re-claimed in one pass"
    );
    assert_eq!(running_jobs(&c), ["first", "second"]);
    let first = c.job(NS, "first").expect("job");
    assert_eq!(
        first
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RESULT))
            .map(String::as_str),
        Some("Succeeded")
    );
    assert!(c
        .events()
        .iter()
        .any(|e| e.object == "Job/first" && e.reason == "Succeeded"));
    let w = &c.all_workers(NS)[0];
    let status = w.status.clone().expect("status");
    assert_eq!(status.runs_completed, 1);
    assert_eq!(status.current_run.as_deref(), Some("Job/second"));
    assert_consistent(&c);
}

#[tokio::test]
async fn scaling_down_never_kills_a_running_run() {
    let c = cluster(3);
    for i in 0..3 {
        c.add_queued_job(NS, &format!("r{i}"), POOL, i, None);
    }
    settle(&c).await;
    assert_eq!(running_jobs(&c).len(), 3);
    c.set_pool_size(NS, POOL, 1);
    settle(&c).await;
    let phases = workers_by_phase(&c);
    assert_eq!(phases.get(&WorkerPhase::Draining), Some(&2));
    assert_eq!(
        running_jobs(&c).len(),
        3,
        "busy workers drain, their runs keep going"
    );
    // The drained workers go away as their runs end; the queue does not start
    // new runs on them.
    c.add_queued_job(NS, "later", POOL, 10, None);
    let draining: Vec<String> = c
        .all_workers(NS)
        .into_iter()
        .filter(|w| {
            w.status
                .as_ref()
                .is_some_and(|s| s.phase == WorkerPhase::Draining)
        })
        .filter_map(|w| w.status.and_then(|s| s.current_run))
        .collect();
    for run in &draining {
        c.finish_job(NS, run.trim_start_matches("Job/"), true);
    }
    settle(&c).await;
    assert_eq!(c.all_workers(NS).len(), 1);
    assert!(
        job_worker(&c, "later").is_none(),
        "one busy worker left: the new run waits"
    );
    // Scale up again: new workers pick up the queue.
    c.set_pool_size(NS, POOL, 2);
    settle(&c).await;
    assert_eq!(c.all_workers(NS).len(), 2);
    assert!(job_worker(&c, "later").is_some());
    assert_consistent(&c);
}

#[tokio::test]
async fn a_deleted_pool_fails_its_queued_runs() {
    let c = cluster(1);
    c.add_queued_job(NS, "busy", POOL, 1, None);
    c.add_queued_job(NS, "waiting", POOL, 2, None);
    settle(&c).await;
    c.delete_pool(NS, POOL);
    let report = pass(&c).await;
    assert!(!report.pool_exists);
    let job = c.job(NS, "waiting").expect("job");
    assert_eq!(job.spec.as_ref().and_then(|s| s.suspend), Some(false));
    assert_eq!(
        job.spec.as_ref().and_then(|s| s.active_deadline_seconds),
        Some(1)
    );
    assert_eq!(
        job.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RESULT))
            .map(String::as_str),
        Some("Failed")
    );
    assert!(c
        .events()
        .iter()
        .any(|e| e.object == "Job/waiting" && e.reason == "PoolNotFound" && e.warning));
    // Not failed twice.
    let before = c.events().len();
    pass(&c).await;
    assert_eq!(
        c.events()
            .iter()
            .skip(before)
            .filter(|e| e.reason == "PoolNotFound")
            .count(),
        0
    );
}

#[tokio::test]
async fn a_crash_between_the_claim_writes_is_repaired() {
    let c = cluster(2);
    c.add_queued_job(NS, "r1", POOL, 1, None);
    c.add_queued_job(NS, "r2", POOL, 2, None);
    settle(&c).await;
    c.finish_job(NS, "r1", true);
    settle(&c).await;
    c.add_queued_job(NS, "r3", POOL, 3, None);
    // The worker write lands, the run write is lost (the controller dies).
    c.inject(Op::PatchJob, ClusterError::deadline(), 1, false);
    let report = pass(&c).await;
    assert_eq!(report.claims, 0);
    let busy_with_r3 = c
        .all_workers(NS)
        .into_iter()
        .filter(|w| w.status.as_ref().and_then(|s| s.current_run.as_deref()) == Some("Job/r3"))
        .count();
    assert_eq!(busy_with_r3, 1, "half a claim");
    assert!(job_worker(&c, "r3").is_none());
    // A restarted controller completes it, and claims nothing twice.
    let report = settle(&c).await;
    assert_eq!(report.counts.busy, 2);
    assert!(job_worker(&c, "r3").is_some());
    assert_consistent(&c);
}

#[tokio::test]
async fn a_timeout_that_landed_is_not_claimed_again() {
    let c = cluster(1);
    c.add_queued_job(NS, "r1", POOL, 1, None);
    settle(&c).await;
    c.add_queued_job(NS, "r2", POOL, 2, None);
    c.finish_job(NS, "r1", false);
    c.inject(Op::PatchJob, ClusterError::deadline(), 1, true);
    pass(&c).await;
    settle(&c).await;
    assert!(c.writes(Op::PatchJob) >= 1);
    assert!(job_worker(&c, "r2").is_some());
    let r1 = c.job(NS, "r1").expect("job");
    assert_eq!(
        r1.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RESULT))
            .map(String::as_str),
        Some("Failed")
    );
    assert_consistent(&c);
}

#[tokio::test]
async fn conflicts_and_api_errors_are_retried_not_fatal() {
    let c = cluster(2);
    c.add_queued_job(NS, "r1", POOL, 1, None);
    c.add_queued_job(NS, "r2", POOL, 2, None);
    settle(&c).await;
    c.add_queued_job(NS, "r3", POOL, 3, None);
    c.finish_job(NS, "r1", true);
    c.inject(Op::WorkerStatus, ClusterError::Conflict, 2, false);
    let report = pass(&c).await;
    assert!(report.needs_retry());
    c.inject(
        Op::PatchJob,
        ClusterError::Api("etcd leader changed".into()),
        1,
        false,
    );
    settle(&c).await;
    assert!(job_worker(&c, "r3").is_some());
    assert_consistent(&c);
    // A failed read aborts the pass without writing anything.
    c.inject(Op::Read, ClusterError::deadline(), 1, false);
    let before = c.writes(Op::WorkerStatus);
    let err = c
        .reconcile(&ControllerMetrics::new(), NS, POOL)
        .await
        .expect_err("read fails");
    assert_eq!(err, ClusterError::deadline());
    assert_eq!(c.writes(Op::WorkerStatus), before);
}

#[tokio::test]
async fn worker_registration_failures_surface_on_the_pool() {
    let c = cluster(2);
    c.inject(
        Op::CreateWorker,
        ClusterError::Api("quota exceeded".into()),
        2,
        false,
    );
    let report = pass(&c).await;
    assert_eq!(report.errors.len(), 2);
    let status = c.pool_status(NS, POOL).expect("status");
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(status.conditions[0].reason, "ReconcileError");
    assert!(c
        .events()
        .iter()
        .any(|e| e.reason == "WorkerRegistrationFailed" && e.note.contains("quota exceeded")));
    settle(&c).await;
    assert_eq!(c.all_workers(NS).len(), 2);
}

#[tokio::test]
async fn vanished_runs_release_their_workers() {
    let c = cluster(1);
    c.add_queued_job(NS, "r1", POOL, 1, None);
    settle(&c).await;
    c.delete_job(NS, "r1");
    let report = pass(&c).await;
    assert_eq!(report.releases, 1);
    assert_eq!(workers_by_phase(&c).get(&WorkerPhase::Idle), Some(&1));
    assert!(c.events().iter().any(|e| e.reason == "RunLost"));
}

#[tokio::test]
async fn two_controllers_racing_without_a_lease_never_double_claim() {
    for round in 0..30 {
        let c = cluster(3);
        c.interleave(true);
        for i in 0..8 {
            c.add_queued_job(NS, &format!("r{i}"), POOL, i, None);
        }
        let m = ControllerMetrics::new();
        let mut claims = 0;
        let mut finished = BTreeSet::new();
        for step in 0..40 {
            let (a, b, d) = futures::join!(
                c.reconcile(&m, NS, POOL),
                c.reconcile(&m, NS, POOL),
                c.reconcile(&m, NS, POOL)
            );
            claims += [a, b, d]
                .into_iter()
                .map(|r| r.map(|r| r.claims).unwrap_or(0))
                .sum::<usize>();
            // Finish one running run now and then.
            if step % 3 == round % 3 {
                if let Some(j) = running_jobs(&c).into_iter().find(|j| !finished.contains(j)) {
                    c.finish_job(NS, &j, true);
                    finished.insert(j);
                }
            }
        }
        settle(&c).await;
        assert_consistent(&c);
        let claimed: BTreeSet<String> = c
            .all_jobs(NS)
            .into_iter()
            .filter(|j| label(&j.metadata, LABEL_WORKER).is_some())
            .filter_map(|j| j.metadata.name)
            .collect();
        assert_eq!(
            claims,
            claimed.len(),
            "round {round}: every run claimed exactly once"
        );
        assert!(
            running_jobs(&c).len() - finished.len() <= 3,
            "round {round}: concurrency limit"
        );
    }
}

#[tokio::test]
async fn silent_runs_fail_after_logs_timeout() {
    use k8s_openapi::api::core::v1::Pod;
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 1,
            logs_timeout: Some("1s".into()),
            ..Default::default()
        },
    );
    c.add_queued_job(NS, "quiet", POOL, 1, None);
    settle(&c).await;
    let run_id = "01jquiet";
    let job = c.job(NS, "quiet").expect("job");
    let worker = job_worker(&c, "quiet").expect("claimed");
    let mut pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "quiet-abc", "labels": { "runyard.dev/pool": POOL, "runyard.dev/run-id": run_id, LABEL_WORKER: worker },
            "annotations": { "runyard.dev/injected": "true" },
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": "quiet", "uid": "u", "controller": true }] },
        "spec": { "containers": [{ "name": "worker", "image": "alpine" }] },
        "status": { "phase": "Running", "startTime": "2020-01-01T00:00:00Z" }
    }))
    .expect("pod");
    pod.metadata.namespace = Some(NS.into());
    c.add_pod(NS, pod);
    // Claimed long ago, and the run id on the Job so its pod is found.
    let patch = serde_json::json!({ "metadata": { "labels": { "runyard.dev/run-id": run_id }, "annotations": { ANNOTATION_CLAIMED_AT: "2020-01-01T00:00:00Z" } } });
    use runyard::cluster::RunWrites;
    c.patch_job(NS, "quiet", &patch).await.expect("patch");
    let _ = job;
    pass(&c).await;
    let job = c.job(NS, "quiet").expect("job");
    assert!(
        job.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RESULT))
            .is_none(),
        "it printed: not failed"
    );
    c.silence("quiet-abc");
    pass(&c).await;
    let job = c.job(NS, "quiet").expect("job");
    assert_eq!(
        job.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_RESULT))
            .map(String::as_str),
        Some("LogsTimeout")
    );
    assert!(job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d > 1));
    assert!(c.events().iter().any(|e| e.reason == "LogsTimeout"));
}

#[tokio::test]
async fn bare_pods_are_ungated_keeping_other_gates_and_escaped_pods_are_failed() {
    use k8s_openapi::api::core::v1::Pod;
    let c = cluster(1);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "bare", "labels": { "runyard.dev/pool": POOL }, "annotations": { "runyard.dev/injected": "true" }, "creationTimestamp": "2024-01-01T00:00:00Z" },
        "spec": { "containers": [{ "name": "w", "image": "alpine" }], "schedulingGates": [{ "name": "runyard.dev/claim" }, { "name": "example.com/other" }] }
    }))
    .expect("pod");
    c.add_pod(NS, pod);
    let escaped: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "escaped", "labels": { "runyard.dev/pool": POOL } },
        "spec": { "containers": [{ "name": "w", "image": "alpine" }] }
    }))
    .expect("pod");
    c.add_pod(NS, escaped);
    settle(&c).await;
    let bare = c.pod(NS, "bare").expect("pod");
    assert!(label(&bare.metadata, LABEL_WORKER).is_some());
    let gates: Vec<_> = bare
        .spec
        .and_then(|s| s.scheduling_gates)
        .into_iter()
        .flatten()
        .map(|g| g.name)
        .collect();
    assert_eq!(gates, ["example.com/other"]);
    assert!(c.pod(NS, "escaped").is_none(), "escaped pod deleted");
    assert!(c
        .events()
        .iter()
        .any(|e| e.object == "Pod/escaped" && e.reason == "NotInjected"));
    // The bare run finishes: released, and its pod deleted (successful, not kept).
    c.set_pod_phase(NS, "bare", "Succeeded");
    settle(&c).await;
    assert!(c.pod(NS, "bare").is_none());
    assert_eq!(
        c.all_workers(NS)[0]
            .status
            .clone()
            .expect("status")
            .runs_completed,
        1
    );
}

#[tokio::test]
async fn status_shows_pools_workers_and_the_queue_in_claim_order() {
    let c = cluster(1);
    c.add_queued_job(NS, "a", POOL, 1, None);
    c.add_queued_job(NS, "b", POOL, 2, None);
    c.add_queued_job(NS, "vip", POOL, 3, Some(5));
    settle(&c).await;
    let report = runyard::client::status::collect(&c, NS)
        .await
        .expect("status");
    assert_eq!(report.pools.len(), 1);
    let p = &report.pools[0];
    assert_eq!(
        (p.desired, p.actual, p.idle, p.busy, p.queued),
        (1, 1, 0, 1, 2)
    );
    assert_eq!(report.workers[0].run.as_deref(), Some("Job/vip"));
    let queue: Vec<_> = report
        .queue
        .iter()
        .map(|q| (q.position, q.run.as_str()))
        .collect();
    assert_eq!(queue, [(1, "Job/a"), (2, "Job/b")]);
    let text = runyard::client::status::render(&report);
    assert!(
        text.contains("POOL") && text.contains("Job/a") && text.contains("QUEUED"),
        "{text}"
    );
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["queue"][0]["run"], "Job/a");
    let empty = runyard::client::status::collect(&c, "elsewhere")
        .await
        .expect("status");
    assert!(runyard::client::status::render(&empty).contains("No WorkerPools"));
}

/// Admission can be bypassed: runs that run without a claim are stopped.
#[tokio::test]
async fn runs_that_escaped_the_queue_are_stopped() {
    use k8s_openapi::api::core::v1::Pod;
    use runyard::cluster::RunWrites;
    let c = cluster(1);
    // A pool of one, busy with its own run.
    c.add_queued_job(NS, "claimed", POOL, 1, None);
    settle(&c).await;
    assert!(job_worker(&c, "claimed").is_some());
    // Someone unsuspends a queued Job behind the controller's back (the
    // webhook was bypassed), even with a forged worker label.
    c.add_queued_job(NS, "sneaky", POOL, 2, None);
    c.add_queued_job(NS, "forged", POOL, 3, None);
    let forged_worker = job_worker(&c, "claimed").expect("worker");
    c.patch_job(
        NS,
        "sneaky",
        &serde_json::json!({ "spec": { "suspend": false } }),
    )
    .await
    .expect("unsuspend");
    c.patch_job(
        NS,
        "forged",
        &serde_json::json!({ "metadata": { "labels": { LABEL_WORKER: forged_worker } }, "spec": { "suspend": false } }),
    )
    .await
    .expect("forge");
    // A bare run Pod that runs ungated and unclaimed (with a forged marker).
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "bare", "labels": { "runyard.dev/pool": POOL }, "annotations": { "runyard.dev/injected": "true" } },
        "spec": { "containers": [{ "name": "w", "image": "alpine" }] },
        "status": { "phase": "Running" }
    }))
    .expect("pod");
    c.add_pod(NS, pod);
    pass(&c).await;
    for name in ["sneaky", "forged"] {
        let job = c.job(NS, name).expect("job");
        assert_eq!(
            job.spec.as_ref().and_then(|s| s.suspend),
            Some(true),
            "{name} suspended again"
        );
        assert_eq!(label(&job.metadata, LABEL_WORKER), None, "{name}");
        assert!(c
            .events()
            .iter()
            .any(|e| e.object == format!("Job/{name}") && e.reason == "EscapedQueue" && e.warning));
    }
    assert!(c.pod(NS, "bare").is_none(), "escaped bare pod deleted");
    assert!(c
        .events()
        .iter()
        .any(|e| e.object == "Pod/bare" && e.reason == "EscapedQueue"));
    // The legitimately claimed run is untouched, and the cap holds.
    let claimed = c.job(NS, "claimed").expect("job");
    assert_eq!(claimed.spec.as_ref().and_then(|s| s.suspend), Some(false));
    assert_consistent(&c);
    // Back in the queue, they run in turn once the worker is free.
    c.finish_job(NS, "claimed", true);
    settle(&c).await;
    let unfinished: Vec<_> = running_jobs(&c)
        .into_iter()
        .filter(|n| c.job(NS, n).is_some_and(|j| j.status.is_none()))
        .collect();
    assert_eq!(unfinished, ["sneaky"], "the next in line runs, alone");
    assert_consistent(&c);
}

/// A stale view never stops a run by mistake: the write is guarded by the
/// resourceVersion the decision saw.
#[tokio::test]
async fn stopping_an_escaped_run_is_guarded_by_its_resource_version() {
    use runyard::cluster::RunWrites;
    let c = cluster(0);
    c.add_queued_job(NS, "r", POOL, 1, None);
    c.patch_job(
        NS,
        "r",
        &serde_json::json!({ "spec": { "suspend": false } }),
    )
    .await
    .expect("unsuspend");
    let seen = c
        .job(NS, "r")
        .expect("job")
        .metadata
        .resource_version
        .expect("rv");
    // The Job changes after the controller read it (here: it finished).
    c.finish_job(NS, "r", true);
    let guarded = serde_json::json!({ "metadata": { "resourceVersion": seen, "labels": { LABEL_WORKER: null } }, "spec": { "suspend": true } });
    assert_eq!(
        c.patch_job(NS, "r", &guarded).await,
        Err(ClusterError::Conflict)
    );
}

/// A Job that is not a run (only its pod template names the pool) does not get
/// its pods run outside the queue.
#[tokio::test]
async fn pods_of_a_job_that_is_not_a_run_are_deleted() {
    use k8s_openapi::api::core::v1::Pod;
    let c = cluster(1);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "unlabeled-job-abcde", "labels": { "runyard.dev/pool": POOL },
            "annotations": { "runyard.dev/injected": "true" },
            "creationTimestamp": "2024-01-01T00:00:00Z",
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": "unlabeled-job", "uid": "u", "controller": true }] },
        "spec": { "containers": [{ "name": "w", "image": "alpine" }] },
        "status": { "phase": "Running" }
    }))
    .expect("pod");
    c.add_pod(NS, pod);
    pass(&c).await;
    assert!(c.pod(NS, "unlabeled-job-abcde").is_none());
    assert!(c
        .events()
        .iter()
        .any(|e| e.reason == "EscapedQueue" && e.note.contains("unlabeled-job")));
}

/// Two controllers whose Job caches lag differently both release a worker
/// whose run finished and give the freed worker the same queued run. The
/// worker writes are each guarded by a fresh resourceVersion and both land;
/// only the run write's resourceVersion precondition keeps the run from
/// going to two workers. (Remove it and this test fails.)
#[tokio::test]
async fn stale_views_cannot_claim_a_run_twice_the_run_write_is_guarded() {
    use runyard::controller::act::reconcile_pool;
    let c = cluster(2);
    c.add_queued_job(NS, "ra", POOL, 1, None);
    c.add_queued_job(NS, "rb", POOL, 2, None);
    settle(&c).await;
    c.add_queued_job(NS, "next", POOL, 3, None);
    settle(&c).await;
    let before = c.checkpoint();
    c.finish_job(NS, "ra", true);
    c.finish_job(NS, "rb", true);
    // A still sees rb running; B still sees ra running. Both read before
    // either writes.
    let view_a = c
        .stale_snapshot(NS, POOL, &before, &["rb"])
        .await
        .expect("a");
    let view_b = c
        .stale_snapshot(NS, POOL, &before, &["ra"])
        .await
        .expect("b");
    let m = ControllerMetrics::new();
    let a = reconcile_pool(&c, &m, NS, view_a).await;
    let b = reconcile_pool(&c, &m, NS, view_b).await;
    assert_eq!(a.claims + b.claims, 1, "one claim of `next`: {a:?} {b:?}");
    assert_eq!(b.conflicts, 1, "the second claim's run write conflicts");
    assert_consistent(&c);
    settle(&c).await;
    assert_consistent(&c);
}

/// Hundreds of conflicts on every kind of write: runs are still claimed
/// exactly once each, the cap holds, and the queue drains.
#[tokio::test]
async fn a_conflict_storm_claims_nothing_twice_and_loses_nothing() {
    let c = cluster(4);
    for i in 0..40 {
        c.add_queued_job(NS, &format!("r{i:02}"), POOL, i, None);
    }
    for op in [
        Op::WorkerStatus,
        Op::PatchJob,
        Op::CreateWorker,
        Op::PoolStatus,
    ] {
        c.inject(op, ClusterError::Conflict, 150, false);
    }
    let mut finished = BTreeSet::new();
    for _ in 0..400 {
        let _ = pass(&c).await;
        assert_consistent(&c);
        let running = running_jobs(&c)
            .into_iter()
            .filter(|n| c.job(NS, n).is_some_and(|j| j.status.is_none()))
            .collect::<Vec<_>>();
        assert!(running.len() <= 4, "cap broken: {running:?}");
        if let Some(name) = running.first() {
            c.finish_job(NS, name, true);
            assert!(finished.insert(name.clone()), "{name} ran twice");
        }
        if finished.len() == 40 {
            break;
        }
    }
    assert_eq!(finished.len(), 40, "every run ran once");
}
