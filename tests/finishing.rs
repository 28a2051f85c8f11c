//! Runs always finish and say why (issue 11), on the in-memory API: pods that
//! never start fail fast with the pod's reason, `runTimeout` and
//! `logsTimeout` hold for Jobs and bare Pods, every finished run carries one
//! result record and keeps its log tail, and the launcher's readiness is the
//! worker's heartbeat.

use k8s_openapi::api::core::v1::Pod;
use runyard::cluster::RunWrites;
use runyard::controller::act::Report;
use runyard::controller::metrics::ControllerMetrics;
use runyard::controller::model::ResultRecord;
use runyard::crd::{WorkerPhase, WorkerPoolSpec};
use runyard::vocab::{
    annotation, label, log_configmap_name, ANNOTATION_CLAIMED_AT, ANNOTATION_EXPIRES_AT,
    ANNOTATION_RESULT, ANNOTATION_RESULT_DETAIL, LABEL_WORKER,
};
use runyard_testing::{MemoryCluster, Op};
use serde_json::json;

const NS: &str = "ci";
const POOL: &str = "builders";
const LONG_AGO: &str = "2020-01-01T00:00:00Z";

fn cluster(spec: WorkerPoolSpec) -> MemoryCluster {
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 1,
            ..spec
        },
    );
    c
}

async fn pass(c: &MemoryCluster) -> Report {
    c.reconcile(&ControllerMetrics::new(), NS, POOL)
        .await
        .expect("reconcile")
}

async fn passes(c: &MemoryCluster, n: usize) {
    for _ in 0..n {
        pass(c).await;
    }
}

/// A queued Job, claimed (`claimed_at` as given), with the run id its pods
/// carry.
async fn claimed_job(c: &MemoryCluster, name: &str, claimed_at: &str) -> String {
    c.add_queued_job(NS, name, POOL, 1, None);
    passes(c, 2).await;
    let job = c.job(NS, name).expect("job");
    let worker = label(&job.metadata, LABEL_WORKER)
        .expect("claimed")
        .to_string();
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_CLAIMED_AT: claimed_at } } });
    c.patch_job(NS, name, &patch).await.expect("patch");
    c.update_job(NS, name, |j| {
        j.status.get_or_insert_with(Default::default).start_time = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(LONG_AGO.parse().expect("time")),
        );
    });
    worker
}

/// The pod the Job controller makes for a claimed Job, with the given status.
fn job_pod(job: &str, worker: &str, status: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": { "name": format!("{job}-x1"), "labels": { "runyard.dev/pool": POOL, LABEL_WORKER: worker },
            "annotations": { "runyard.dev/injected": "true" },
            "creationTimestamp": LONG_AGO,
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u", "controller": true }] },
        "spec": { "containers": [{ "name": "launcher", "image": "l" }, { "name": "build", "image": "registry.example/missing:1" }] },
        "status": status,
    }))
    .expect("pod")
}

fn waiting(reason: &str, message: &str) -> serde_json::Value {
    json!({
        "phase": "Pending",
        "containerStatuses": [
            { "name": "launcher", "image": "l", "imageID": "", "ready": false, "restartCount": 0,
              "state": { "waiting": { "reason": "ContainerCreating" } } },
            { "name": "build", "image": "registry.example/missing:1", "imageID": "", "ready": false, "restartCount": 0,
              "state": { "waiting": { "reason": reason, "message": message } } },
        ]
    })
}

fn result_of(meta: &kube::api::ObjectMeta) -> Option<(String, ResultRecord)> {
    let result = annotation(meta, ANNOTATION_RESULT)?.to_string();
    let detail = annotation(meta, ANNOTATION_RESULT_DETAIL)
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    Some((result, detail))
}

fn job_result(c: &MemoryCluster, name: &str) -> Option<(String, ResultRecord)> {
    result_of(&c.job(NS, name)?.metadata)
}

fn worker_phase(c: &MemoryCluster) -> WorkerPhase {
    c.all_workers(NS)[0]
        .status
        .clone()
        .unwrap_or_default()
        .phase
}

#[tokio::test]
async fn an_image_that_cannot_be_pulled_fails_the_run_at_once_with_the_pull_error() {
    let c = cluster(WorkerPoolSpec::default());
    // Claimed just now: pendingTimeout (5m) is far away.
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let worker = claimed_job(&c, "pull", &now).await;
    let msg = "rpc error: code = NotFound desc = failed to pull and unpack image \"registry.example/missing:1\": not found";
    // A first failed pull is retried by the kubelet: not yet terminal.
    c.add_pod(NS, job_pod("pull", &worker, waiting("ErrImagePull", msg)));
    pass(&c).await;
    assert_eq!(job_result(&c, "pull"), None, "one ErrImagePull is retried");
    // Repeated failures: ImagePullBackOff fails the run at once.
    c.update_pod(NS, "pull-x1", |p| {
        p.status = serde_json::from_value(waiting(
            "ImagePullBackOff",
            "Back-off pulling image \"registry.example/missing:1\"",
        ))
        .ok();
    });
    c.warn(
        "pull-x1",
        &format!("Failed: Failed to pull image \"registry.example/missing:1\": {msg}"),
    );
    pass(&c).await;
    let (result, detail) = job_result(&c, "pull").expect("a result");
    assert_eq!(result, "Failed");
    assert_eq!(detail.reason.as_deref(), Some("ImagePullBackOff"));
    let message = detail.message.clone().unwrap_or_default();
    assert!(message.contains("container build"), "{message}");
    assert!(
        message.contains(": not found"),
        "the Warning Event: {message}"
    );
    assert_eq!(detail.worker.as_deref(), Some(worker.as_str()));
    // The Job is ended: a deadline it has already passed.
    let job = c.job(NS, "pull").expect("job");
    let deadline = job
        .spec
        .and_then(|s| s.active_deadline_seconds)
        .expect("deadline");
    let started: k8s_openapi::jiff::Timestamp = LONG_AGO.parse().expect("time");
    assert!(
        deadline <= k8s_openapi::jiff::Timestamp::now().as_second() - started.as_second(),
        "{deadline}"
    );
    assert!(c
        .events()
        .iter()
        .any(|e| e.object == "Job/pull" && e.warning && e.note.contains("not found")));
    // No second record while the Job controller ends it.
    let writes = c.writes(Op::PatchJob);
    pass(&c).await;
    assert_eq!(c.writes(Op::PatchJob), writes, "recorded once");
    // The Job controller fails it (DeadlineExceeded): the worker is released,
    // the record keeps the real reason.
    c.update_job(NS, "pull", |j| {
        j.status = serde_json::from_value(json!({ "conditions": [
            { "type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline" },
            { "type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline" },
        ] }))
        .ok();
    });
    passes(&c, 2).await;
    assert_eq!(worker_phase(&c), WorkerPhase::Idle);
    assert_eq!(
        job_result(&c, "pull").expect("result").1.reason.as_deref(),
        Some("ImagePullBackOff")
    );
}

#[tokio::test]
async fn terminal_waiting_reasons_fail_at_once() {
    for reason in [
        "InvalidImageName",
        "CreateContainerConfigError",
        "ErrImageNeverPull",
    ] {
        let c = cluster(WorkerPoolSpec::default());
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let worker = claimed_job(&c, "r", &now).await;
        c.add_pod(
            NS,
            job_pod("r", &worker, waiting(reason, "secret \"db\" not found")),
        );
        pass(&c).await;
        let (result, detail) = job_result(&c, "r").expect(reason);
        assert_eq!(
            (result.as_str(), detail.reason.as_deref()),
            ("Failed", Some(reason))
        );
        assert!(detail
            .message
            .unwrap_or_default()
            .contains("secret \"db\" not found"));
    }
}

#[tokio::test]
async fn a_claimed_run_that_never_starts_fails_after_pending_timeout() {
    let c = cluster(WorkerPoolSpec {
        pending_timeout: Some("2m".into()),
        ..Default::default()
    });
    let recent = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(60))
    .to_string();
    let worker = claimed_job(&c, "unschedulable", &recent).await;
    // A pod the scheduler cannot place: Pending, no container status.
    c.add_pod(
        NS,
        job_pod(
            "unschedulable",
            &worker,
            json!({ "phase": "Pending", "conditions": [
            { "type": "PodScheduled", "status": "False", "reason": "Unschedulable" }] }),
        ),
    );
    c.warn(
        "unschedulable-x1",
        "FailedScheduling: 0/3 nodes are available: 3 Insufficient cpu.",
    );
    pass(&c).await;
    assert_eq!(job_result(&c, "unschedulable"), None, "1m < pendingTimeout");
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_CLAIMED_AT: LONG_AGO } } });
    c.patch_job(NS, "unschedulable", &patch)
        .await
        .expect("patch");
    pass(&c).await;
    let (result, detail) = job_result(&c, "unschedulable").expect("failed");
    assert_eq!(result, "Failed");
    assert_eq!(detail.reason.as_deref(), Some("PendingTimeout"));
    let message = detail.message.unwrap_or_default();
    assert!(message.contains("pendingTimeout"), "{message}");
    assert!(message.contains("Insufficient cpu"), "{message}");

    // A Job that made no pod at all (a quota, a denial) fails the same way.
    let c = cluster(WorkerPoolSpec::default());
    claimed_job(&c, "nopod", LONG_AGO).await;
    pass(&c).await;
    let (_, detail) = job_result(&c, "nopod").expect("failed");
    assert_eq!(detail.reason.as_deref(), Some("PendingTimeout"));
    assert!(detail
        .message
        .unwrap_or_default()
        .contains("created no pod"));
}

/// A bare run Pod, injected and gated, as the webhook leaves it.
fn bare_pod(name: &str, deadline: Option<i64>) -> Pod {
    let mut spec = json!({
        "containers": [{ "name": "launcher", "image": "l" }, { "name": "build", "image": "alpine" }],
        "schedulingGates": [{ "name": "runyard.dev/claim" }],
    });
    if let Some(d) = deadline {
        spec["activeDeadlineSeconds"] = json!(d);
    }
    serde_json::from_value(json!({
        "metadata": { "name": name, "labels": { "runyard.dev/pool": POOL },
            "annotations": { "runyard.dev/injected": "true" }, "creationTimestamp": LONG_AGO },
        "spec": spec,
    }))
    .expect("pod")
}

fn running(launcher_ready: bool, not_ready_since: Option<&str>) -> serde_json::Value {
    let mut status = json!({
        "phase": "Running",
        "startTime": LONG_AGO,
        "containerStatuses": [
            { "name": "launcher", "image": "l", "imageID": "", "ready": launcher_ready, "restartCount": 0,
              "state": { "running": { "startedAt": LONG_AGO } } },
            { "name": "build", "image": "alpine", "imageID": "", "ready": true, "restartCount": 0,
              "state": { "running": { "startedAt": LONG_AGO } } },
        ]
    });
    if let Some(t) = not_ready_since {
        status["conditions"] =
            json!([{ "type": "ContainersReady", "status": "False", "lastTransitionTime": t }]);
    }
    status
}

#[tokio::test]
async fn run_timeout_holds_for_bare_pods() {
    let c = cluster(WorkerPoolSpec {
        run_timeout: Some("10m".into()),
        ..Default::default()
    });
    // The webhook's default deadline (70 minutes) is lowered by the claim.
    c.add_pod(NS, bare_pod("long", Some(4200)));
    passes(&c, 2).await;
    let pod = c.pod(NS, "long").expect("pod");
    assert!(label(&pod.metadata, LABEL_WORKER).is_some(), "claimed");
    assert_eq!(pod.spec.and_then(|s| s.active_deadline_seconds), Some(600));
    // A pod deadline can only be lowered: a shorter one stays.
    let c = cluster(WorkerPoolSpec {
        run_timeout: Some("10m".into()),
        ..Default::default()
    });
    c.add_pod(NS, bare_pod("short", Some(60)));
    passes(&c, 2).await;
    let pod = c.pod(NS, "short").expect("pod");
    assert_eq!(pod.spec.and_then(|s| s.active_deadline_seconds), Some(60));
    // The kubelet ends it at the deadline: the result says so.
    c.update_pod(NS, "short", |p| {
        p.status = serde_json::from_value(json!({
            "phase": "Failed", "reason": "DeadlineExceeded",
            "message": "Pod was active on the node longer than the specified deadline",
            "startTime": LONG_AGO,
        }))
        .ok();
    });
    passes(&c, 2).await;
    let (result, detail) =
        result_of(&c.pod(NS, "short").expect("failed pods are kept").metadata).expect("recorded");
    assert_eq!(result, "Failed");
    assert_eq!(detail.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(worker_phase(&c), WorkerPhase::Idle);
}

#[tokio::test]
async fn logs_timeout_holds_for_bare_pods() {
    let c = cluster(WorkerPoolSpec {
        logs_timeout: Some("1s".into()),
        ..Default::default()
    });
    c.add_pod(NS, bare_pod("quiet", None));
    passes(&c, 2).await;
    let patch = json!({ "metadata": { "annotations": { ANNOTATION_CLAIMED_AT: LONG_AGO } } });
    c.patch_pod(NS, "quiet", &patch).await.expect("patch");
    c.update_pod(NS, "quiet", |p| {
        p.status = serde_json::from_value(running(true, None)).ok()
    });
    c.log("quiet", "compiling...");
    pass(&c).await;
    assert_eq!(result_of(&c.pod(NS, "quiet").expect("pod").metadata), None);
    c.silence("quiet");
    pass(&c).await;
    let pod = c.pod(NS, "quiet").expect("pod");
    let (result, detail) = result_of(&pod.metadata).expect("failed");
    assert_eq!(result, "LogsTimeout");
    assert!(detail.message.unwrap_or_default().contains("logsTimeout"));
    assert!(pod
        .spec
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d > 1));
    // Its log so far is kept.
    let cm = c
        .configmap(NS, &log_configmap_name("Pod", "quiet"))
        .expect("log kept");
    assert!(cm.data.unwrap_or_default()["log"].contains("compiling..."));
}

#[tokio::test]
async fn a_finished_run_keeps_one_result_record_and_its_log_tail() {
    let c = cluster(WorkerPoolSpec {
        log_tail_bytes: Some(32),
        ..Default::default()
    });
    let worker = claimed_job(&c, "build", LONG_AGO).await;
    c.add_pod(NS, job_pod("build", &worker, running(true, None)));
    for i in 0..10 {
        c.log("build-x1", &format!("line {i}"));
    }
    pass(&c).await;
    c.terminate_pod(NS, "build-x1", 3);
    c.update_pod(NS, "build-x1", |p| {
        // The worker container ("build", not the launcher) exited with 3.
        p.status = serde_json::from_value(json!({
            "phase": "Failed", "startTime": LONG_AGO,
            "containerStatuses": [{ "name": "build", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 3, "finishedAt": "2020-01-01T00:10:00Z" } } }]
        }))
        .ok();
    });
    c.update_job(NS, "build", |j| {
        j.status = serde_json::from_value(json!({ "startTime": LONG_AGO, "conditions": [
            { "type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": "2020-01-01T00:10:01Z" },
            { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": "2020-01-01T00:10:02Z" },
        ] }))
        .ok();
    });
    passes(&c, 2).await;
    let (result, detail) = job_result(&c, "build").expect("recorded");
    assert_eq!(result, "Failed");
    assert_eq!(detail.outcome, "Failed");
    assert_eq!(detail.exit_code, Some(3));
    assert_eq!(detail.reason.as_deref(), Some("BackoffLimitExceeded"));
    assert_eq!(detail.worker.as_deref(), Some(worker.as_str()));
    assert_eq!(detail.started_at.as_deref(), Some("2020-01-01T00:00:00Z"));
    assert_eq!(detail.finished_at.as_deref(), Some("2020-01-01T00:10:01Z"));
    assert_eq!(detail.duration_seconds, Some(601));
    let events: Vec<_> = c
        .events()
        .into_iter()
        .filter(|e| e.object == "Job/build" && e.reason == "Failed")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].note.contains("exit code 3"), "{}", events[0].note);
    // The tail, bounded, owned by the Job (it goes with it).
    let cm = c
        .configmap(NS, &log_configmap_name("Job", "build"))
        .expect("log kept");
    let data = cm.data.clone().unwrap_or_default();
    assert!(data["log"].len() <= 32);
    assert!(data["log"].ends_with("line 9\n"), "{:?}", data["log"]);
    assert!(!data["log"].contains("line 0"));
    let kept: ResultRecord = serde_json::from_str(&data["result"]).expect("result");
    assert_eq!(kept, detail);
    let owner = &cm.metadata.owner_references.expect("owned")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Job", "build"));
}

#[tokio::test]
async fn a_succeeded_bare_pod_is_deleted_only_after_its_log_is_kept() {
    let c = cluster(WorkerPoolSpec::default());
    c.add_pod(NS, bare_pod("b", None));
    passes(&c, 2).await;
    c.log("b", "done");
    c.update_pod(NS, "b", |p| {
        p.status = serde_json::from_value(json!({
            "phase": "Succeeded", "startTime": LONG_AGO,
            "containerStatuses": [{ "name": "build", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0 } } }]
        }))
        .ok();
    });
    // Keeping the log fails: nothing is recorded and the pod stays.
    c.inject(
        Op::SaveLog,
        runyard::cluster::ClusterError::Api("etcd".into()),
        1,
        false,
    );
    pass(&c).await;
    let pod = c.pod(NS, "b").expect("kept while its log is not");
    assert_eq!(result_of(&pod.metadata), None);
    // The next pass keeps it, records, deletes.
    passes(&c, 2).await;
    assert!(c.pod(NS, "b").is_none());
    let cm = c
        .configmap(NS, &log_configmap_name("Pod", "b"))
        .expect("log kept");
    assert!(cm
        .metadata
        .annotations
        .unwrap_or_default()
        .contains_key(ANNOTATION_EXPIRES_AT));
    let owner = &cm.metadata.owner_references.expect("owned")[0];
    assert_eq!(
        owner.kind, "WorkerPool",
        "a bare pod's log goes with its pool"
    );
    let data = cm.data.unwrap_or_default();
    assert_eq!(data["log"], "done\n");
    let kept: ResultRecord = serde_json::from_str(&data["result"]).expect("result");
    assert_eq!(
        (kept.outcome.as_str(), kept.exit_code),
        ("Succeeded", Some(0))
    );
    assert_eq!(
        c.events()
            .iter()
            .filter(|e| e.object == "Pod/b" && e.reason == "Succeeded")
            .count(),
        1
    );
}

#[tokio::test]
async fn the_launchers_readiness_is_the_heartbeat_and_a_silent_launcher_loses_the_run() {
    let c = cluster(WorkerPoolSpec {
        heartbeat_timeout: Some("2m".into()),
        ..Default::default()
    });
    c.add_pod(NS, bare_pod("hb", None));
    passes(&c, 2).await;
    let heartbeat = || {
        c.all_workers(NS)[0]
            .status
            .clone()
            .unwrap_or_default()
            .last_heartbeat
    };
    let claimed = heartbeat();
    c.update_pod(NS, "hb", |p| {
        p.status = serde_json::from_value(running(true, None)).ok()
    });
    // Make the last heartbeat old: the next pass beats again.
    let w = c.all_workers(NS)[0].clone();
    let mut old = w.clone();
    old.status
        .get_or_insert_with(Default::default)
        .last_heartbeat = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        LONG_AGO.parse().expect("t"),
    ));
    runyard::cluster::ControllerApi::replace_worker_status(&c, NS, &old)
        .await
        .expect("status");
    pass(&c).await;
    let beat = heartbeat().expect("beat");
    assert!(beat.0.as_second() > k8s_openapi::jiff::Timestamp::now().as_second() - 60);
    assert!(claimed.is_none_or(|c| c.0 <= beat.0));
    // Beats are not rewritten on every pass.
    let writes = c.writes(Op::WorkerStatus);
    pass(&c).await;
    assert_eq!(c.writes(Op::WorkerStatus), writes);
    // The launcher stops being ready: within heartbeatTimeout nothing happens.
    let recent = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(30))
    .to_string();
    c.update_pod(NS, "hb", |p| {
        p.status = serde_json::from_value(running(false, Some(&recent))).ok()
    });
    pass(&c).await;
    assert!(c.pod(NS, "hb").is_some());
    // Past it: the run is lost, its pod deleted, the worker released.
    c.update_pod(NS, "hb", |p| {
        p.status = serde_json::from_value(running(false, Some(LONG_AGO))).ok()
    });
    pass(&c).await;
    assert!(c.pod(NS, "hb").is_none());
    assert_eq!(worker_phase(&c), WorkerPhase::Idle);
    let cm = c
        .configmap(NS, &log_configmap_name("Pod", "hb"))
        .expect("the result is kept");
    let kept: ResultRecord =
        serde_json::from_str(&cm.data.unwrap_or_default()["result"]).expect("result");
    assert_eq!(kept.outcome, "Lost");
    assert_eq!(kept.reason.as_deref(), Some("LauncherNotReady"));
    assert!(c.events().iter().any(|e| e.object == "Pod/hb"
        && e.reason == "Lost"
        && e.note.contains("heartbeatTimeout")));
}

#[tokio::test]
async fn expired_logs_of_bare_runs_are_swept_and_others_stay() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let c = cluster(WorkerPoolSpec::default());
    let cm = |name: &str, expires: Option<&str>| -> ConfigMap {
        let mut annotations = serde_json::Map::new();
        if let Some(t) = expires {
            annotations.insert(ANNOTATION_EXPIRES_AT.into(), json!(t));
        }
        serde_json::from_value(json!({ "metadata": { "name": name,
            "labels": { "runyard.dev/log-tail": "true" }, "annotations": annotations } }))
        .expect("cm")
    };
    c.put_configmap(NS, cm("old", Some(LONG_AGO)));
    c.put_configmap(NS, cm("fresh", Some("2999-01-01T00:00:00Z")));
    c.put_configmap(NS, cm("of-a-job", None));
    let mut unlabeled = cm("not-ours", Some(LONG_AGO));
    unlabeled.metadata.labels = None;
    c.put_configmap(NS, unlabeled);
    let n = runyard::controller::act::sweep_kept_logs(&c, NS)
        .await
        .expect("sweep");
    assert_eq!(n, 1);
    assert!(c.configmap(NS, "old").is_none());
    for kept in ["fresh", "of-a-job", "not-ours"] {
        assert!(c.configmap(NS, kept).is_some(), "{kept}");
    }
}

#[tokio::test]
async fn runyard_logs_prints_the_live_log_then_the_kept_tail_and_status_shows_results() {
    use runyard::client::logs::{show, LogSource};
    let c = cluster(WorkerPoolSpec::default());
    let worker = claimed_job(&c, "build", LONG_AGO).await;
    c.add_pod(NS, job_pod("build", &worker, running(true, None)));
    c.log("build-x1", "step 1");
    // Live, from the pod.
    let mut out = Vec::new();
    let source = show(&c, NS, "build", false, &mut out).await.expect("live");
    assert_eq!(String::from_utf8_lossy(&out), "step 1\n");
    assert_eq!(
        source,
        LogSource::Pod {
            name: "build-x1".into(),
            container: "build".into()
        }
    );
    // Followed to the end of the pod.
    c.log("build-x1", "step 2");
    c.update_pod(NS, "build-x1", |p| {
        p.status = serde_json::from_value(json!({
            "phase": "Succeeded", "startTime": LONG_AGO,
            "containerStatuses": [{ "name": "build", "image": "", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "finishedAt": "2020-01-01T00:05:00Z" } } }]
        }))
        .ok();
    });
    let mut out = Vec::new();
    show(&c, NS, "job/build", true, &mut out)
        .await
        .expect("follow");
    assert_eq!(String::from_utf8_lossy(&out), "step 1\nstep 2\n");
    // The Job completes; its pod is deleted (succeeded, not kept).
    c.finish_job(NS, "build", true);
    passes(&c, 2).await;
    assert!(c.pod(NS, "build-x1").is_none());
    let mut out = Vec::new();
    let source = show(&c, NS, "build", false, &mut out).await.expect("kept");
    assert_eq!(String::from_utf8_lossy(&out), "step 1\nstep 2\n");
    let LogSource::Kept { result: Some(r) } = source else {
        panic!("{source:?}")
    };
    assert_eq!((r.outcome.as_str(), r.exit_code), ("Succeeded", Some(0)));
    // A queued run has no log yet: a clear error, not an empty success.
    c.add_queued_job(NS, "later", POOL, 2, None);
    let err = show(&c, NS, "later", false, &mut Vec::new())
        .await
        .expect_err("no log");
    assert!(err.to_string().contains("no log for Job/later"), "{err}");
    // runyard status: the result, the worker's heartbeat.
    let report = runyard::client::status::collect(&c, NS)
        .await
        .expect("status");
    let row = report
        .results
        .iter()
        .find(|r| r.run == "Job/build")
        .expect("result row");
    assert_eq!(row.record.outcome, "Succeeded");
    assert_eq!(row.record.worker.as_deref(), Some(worker.as_str()));
    let table = runyard::client::status::render(&report);
    assert!(
        table.contains("HEARTBEAT") && table.contains("Job/build"),
        "{table}"
    );
}

#[tokio::test]
async fn a_run_on_a_node_that_stopped_reporting_is_lost_and_beats_no_more() {
    let c = cluster(WorkerPoolSpec {
        heartbeat_timeout: Some("2m".into()),
        ..Default::default()
    });
    c.add_pod(NS, bare_pod("far", None));
    passes(&c, 2).await;
    // The kubelet last said everything was ready; the node lifecycle
    // controller then marked the pod not ready (only `Ready`).
    let lost = |since: &str| {
        let mut status = running(true, None);
        status["conditions"] = json!([
            { "type": "ContainersReady", "status": "True", "lastTransitionTime": LONG_AGO },
            { "type": "Ready", "status": "False", "lastTransitionTime": since },
        ]);
        status
    };
    let recent = (k8s_openapi::jiff::Timestamp::now()
        - k8s_openapi::jiff::SignedDuration::from_secs(20))
    .to_string();
    c.update_pod(NS, "far", |p| {
        p.status = serde_json::from_value(lost(&recent)).ok()
    });
    // Its last beat is old: a live launcher would beat now.
    let mut old = c.all_workers(NS)[0].clone();
    old.status
        .get_or_insert_with(Default::default)
        .last_heartbeat = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        LONG_AGO.parse().expect("t"),
    ));
    runyard::cluster::ControllerApi::replace_worker_status(&c, NS, &old)
        .await
        .expect("status");
    let writes = c.writes(Op::WorkerStatus);
    pass(&c).await;
    assert_eq!(
        c.writes(Op::WorkerStatus),
        writes,
        "no heartbeat from a silent node"
    );
    assert!(c.pod(NS, "far").is_some(), "within heartbeatTimeout");
    c.update_pod(NS, "far", |p| {
        p.status = serde_json::from_value(lost(LONG_AGO)).ok()
    });
    pass(&c).await;
    assert!(c.pod(NS, "far").is_none());
    assert_eq!(worker_phase(&c), WorkerPhase::Idle);
    let cm = c
        .configmap(NS, &log_configmap_name("Pod", "far"))
        .expect("kept");
    let kept: ResultRecord =
        serde_json::from_str(&cm.data.unwrap_or_default()["result"]).expect("result");
    assert_eq!(
        (kept.outcome.as_str(), kept.reason.as_deref()),
        ("Lost", Some("NodeNotReady"))
    );
}
