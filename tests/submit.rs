//! `runyard submit` and `runyard cancel` against the in-memory API, with a
//! simulated controller, Job controller and kubelet, and a log stream that
//! drops mid-way.

use k8s_openapi::api::core::v1::Pod;
use runyard::client::cancel::cancel;
use runyard::client::submit::{job_from_flags, submit, Progress, RunSpec, SubmitOptions, Summary};
use runyard::client::{EXIT_CANCELLED, EXIT_TIMEOUT};
use runyard::cluster::RunWrites;
use runyard::controller::metrics::ControllerMetrics;
use runyard::crd::WorkerPoolSpec;
use runyard::vocab::{label, LABEL_RUN_ID, LABEL_WORKER};
use runyard_testing::MemoryCluster;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;

const NS: &str = "ci";
const POOL: &str = "builders";

fn opts() -> SubmitOptions {
    SubmitOptions {
        detach: false,
        poll: Duration::from_millis(20),
        grace: Duration::from_millis(300),
        progress: Progress::Lines,
    }
}

fn spec() -> RunSpec {
    RunSpec {
        pool: POOL.into(),
        image: "alpine".into(),
        command: vec!["make".into()],
        ..Default::default()
    }
}

/// What the simulated worker does once its pod runs.
#[derive(Clone, Copy)]
enum Script {
    /// Prints lines and exits with a code.
    Exit(i32),
    /// Runs until asked to stop (`runyard.dev/stop`), then exits 143.
    UntilStopped,
    /// Prints nothing; the controller's logsTimeout fires.
    Silent,
}

fn run_pod(job: &str, run_id: &str, worker: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": format!("{job}-pod"),
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "labels": { "runyard.dev/pool": POOL, LABEL_RUN_ID: run_id, LABEL_WORKER: worker, "batch.kubernetes.io/job-name": job },
            "annotations": { "runyard.dev/injected": "true" },
            "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": job, "uid": "u", "controller": true }]
        },
        "spec": { "containers": [{ "name": "worker", "image": "alpine" }] },
        "status": { "phase": "Running", "containerStatuses": [{ "name": "worker", "image": "", "imageID": "", "ready": true, "restartCount": 0, "state": { "running": {} } }] }
    }))
    .expect("pod")
}

/// Plays controller, Job controller and kubelet until `done`.
async fn simulate(c: &MemoryCluster, done: &AtomicBool, script: Script, lines: usize) {
    let m = ControllerMetrics::new();
    let mut started: Vec<String> = Vec::new();
    while !done.load(Ordering::SeqCst) {
        let _ = c.reconcile(&m, NS, POOL).await;
        for job in c.all_jobs(NS) {
            let name = job.metadata.name.clone().unwrap_or_default();
            let claimed = job.spec.as_ref().and_then(|s| s.suspend) == Some(false)
                && label(&job.metadata, LABEL_WORKER).is_some();
            if !claimed || job.status.is_some() || !name.starts_with("run-") {
                continue;
            }
            let pod_name = format!("{name}-pod");
            if !started.contains(&name) {
                started.push(name.clone());
                let run_id = label(&job.metadata, LABEL_RUN_ID)
                    .unwrap_or("id")
                    .to_string();
                c.add_pod(
                    NS,
                    run_pod(
                        &name,
                        &run_id,
                        label(&job.metadata, LABEL_WORKER).unwrap_or_default(),
                    ),
                );
                if !matches!(script, Script::Silent) {
                    for i in 1..=lines {
                        c.log(&pod_name, &format!("line {i}"));
                    }
                }
                continue;
            }
            match script {
                Script::Exit(code) => {
                    c.terminate_pod(NS, &pod_name, code);
                    c.finish_job(NS, &name, code == 0);
                }
                Script::UntilStopped => {
                    let stopped = c.pod(NS, &pod_name).is_none_or(|p| {
                        p.metadata
                            .annotations
                            .as_ref()
                            .is_some_and(|a| a.contains_key("runyard.dev/stop"))
                    });
                    if stopped {
                        if c.pod(NS, &pod_name).is_some() {
                            c.log(&pod_name, "stopping on request");
                            c.terminate_pod(NS, &pod_name, 143);
                        }
                        c.finish_job(NS, &name, false);
                    }
                }
                Script::Silent => {
                    // The controller's logsTimeout verdict, as the Job controller applies it.
                    let patch = serde_json::json!({ "metadata": { "annotations": { "runyard.dev/result": "LogsTimeout" } } });
                    let _ = c.patch_job(NS, &name, &patch).await;
                    c.terminate_pod(NS, &pod_name, 137);
                    c.finish_job(NS, &name, false);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run(
    c: &MemoryCluster,
    script: Script,
    lines: usize,
    interrupts: watch::Receiver<u32>,
    after: impl std::future::Future<Output = ()>,
) -> (Summary, String, String) {
    let done = AtomicBool::new(false);
    let mut logs = Vec::new();
    let mut status = Vec::new();
    let job = job_from_flags(&spec()).expect("job");
    let (summary, (), ()) = tokio::join!(
        async {
            let s = submit(c, NS, &job, &opts(), &mut logs, &mut status, interrupts).await;
            done.store(true, Ordering::SeqCst);
            s
        },
        simulate(c, &done, script, lines),
        after,
    );
    (
        summary.expect("submit"),
        String::from_utf8(logs).expect("utf8"),
        String::from_utf8(status).expect("utf8"),
    )
}

/// Jobs pass through the real injection engine, as through the webhook.
fn with_webhook(c: &MemoryCluster) {
    use runyard::injection::{ClusterFacts, Injector, Mutation, StaticPools};
    let injector = Injector::new(ClusterFacts::default());
    let pools = StaticPools::default_pool();
    c.set_job_admission(Box::new(move |ns, job| {
        // generateName: the API server names the object before admission.
        if job.metadata.name.is_none() {
            job.metadata.name = job
                .metadata
                .generate_name
                .as_ref()
                .map(|p| format!("{p}{}", ulid::Ulid::new().to_string().to_ascii_lowercase()));
        }
        match injector.mutate(job, ns, &pools) {
            Ok(Mutation::Mutated { object, .. }) => *job = *object,
            Ok(_) => {}
            Err(e) => return Err(runyard::cluster::ClusterError::Api(e.to_string())),
        }
        Ok(())
    }));
}

fn cluster_with_busy_pool() -> MemoryCluster {
    let c = MemoryCluster::new();
    c.add_pool(
        NS,
        POOL,
        WorkerPoolSpec {
            pool_size: 1,
            ..Default::default()
        },
    );
    with_webhook(&c);
    c
}

#[tokio::test]
async fn submit_waits_streams_logs_across_a_dropped_stream_and_exits_with_the_workers_code() {
    let c = cluster_with_busy_pool();
    // Another run holds the only worker for a moment.
    c.add_queued_job(NS, "other", POOL, 1, None);
    let _ = c.reconcile(&ControllerMetrics::new(), NS, POOL).await;
    let _ = c.reconcile(&ControllerMetrics::new(), NS, POOL).await;
    c.drop_log_stream_after(2);
    let (_tx, rx) = watch::channel(0u32);
    let free_later = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.finish_job(NS, "other", true);
    };
    let (summary, logs, status) = run(&c, Script::Exit(3), 5, rx, free_later).await;
    assert_eq!(
        logs, "line 1\nline 2\nline 3\nline 4\nline 5\n",
        "no line lost or repeated"
    );
    assert_eq!(summary.exit_code, 3);
    assert_eq!(summary.result, "Failed");
    assert!(
        status.contains("queued: position 1 in the queue"),
        "{status}"
    );
    assert!(status.contains("claimed by worker"), "{status}");
    assert!(summary.queued_seconds >= 0.15, "{summary:?}");
}

#[tokio::test]
async fn a_successful_run_exits_zero() {
    let c = cluster_with_busy_pool();
    let (_tx, rx) = watch::channel(0u32);
    let (summary, logs, _) = run(&c, Script::Exit(0), 2, rx, async {}).await;
    assert_eq!(
        (summary.result.as_str(), summary.exit_code),
        ("Succeeded", 0)
    );
    assert_eq!(logs, "line 1\nline 2\n");
    let json = serde_json::to_value(&summary).expect("json");
    assert_eq!(json["exitCode"], 0);
}

#[tokio::test]
async fn ctrl_c_cancels_the_run_gracefully() {
    let c = cluster_with_busy_pool();
    let (tx, rx) = watch::channel(0u32);
    let press = async {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let _ = tx.send(1);
    };
    let (summary, logs, status) = run(&c, Script::UntilStopped, 1, rx, press).await;
    assert_eq!(
        (summary.result.as_str(), summary.exit_code),
        ("Cancelled", EXIT_CANCELLED),
        "{status}"
    );
    assert!(
        logs.contains("stopping on request"),
        "the worker was asked to stop and said so: {logs}"
    );
    let job = c.job(NS, &summary.job).expect("job");
    assert_eq!(
        job.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("runyard.dev/result"))
            .map(String::as_str),
        Some("Cancelled")
    );
}

#[tokio::test]
async fn timeouts_have_their_own_exit_code_and_detach_returns_at_once() {
    let c = cluster_with_busy_pool();
    let (_tx, rx) = watch::channel(0u32);
    let (summary, _, _) = run(&c, Script::Silent, 0, rx, async {}).await;
    assert_eq!(
        (summary.result.as_str(), summary.exit_code),
        ("LogsTimeout", EXIT_TIMEOUT)
    );

    let job = job_from_flags(&spec()).expect("job");
    let (_tx, rx) = watch::channel(0u32);
    let mut out = Vec::new();
    let mut err = Vec::new();
    let detached = submit(
        &c,
        NS,
        &job,
        &SubmitOptions {
            detach: true,
            ..opts()
        },
        &mut out,
        &mut err,
        rx,
    )
    .await
    .expect("submit");
    assert_eq!(detached.result, "Submitted");
    assert!(c.job(NS, &detached.job).is_some());
}

#[tokio::test]
async fn cancelling_a_queued_run_removes_it_and_a_running_one_is_stopped() {
    let c = cluster_with_busy_pool();
    c.add_queued_job(NS, "waiting", POOL, 1, None);
    let report = cancel(
        &c,
        NS,
        &runyard::client::parse_target("job/waiting"),
        "not needed",
        Duration::from_millis(100),
        Duration::from_millis(10),
    )
    .await
    .expect("cancel");
    assert!(!report.was_running);
    assert!(c.job(NS, "waiting").is_none());

    // A running run whose worker ignores the stop: deleted after the grace period.
    c.add_queued_job(NS, "stubborn", POOL, 2, None);
    let _ = c.reconcile(&ControllerMetrics::new(), NS, POOL).await;
    let _ = c.reconcile(&ControllerMetrics::new(), NS, POOL).await;
    let job = c.job(NS, "stubborn").expect("job");
    let worker = label(&job.metadata, LABEL_WORKER)
        .expect("claimed")
        .to_string();
    let mut pod = run_pod("stubborn", "id", &worker);
    pod.metadata
        .labels
        .as_mut()
        .expect("labels")
        .remove(LABEL_RUN_ID);
    c.add_pod(NS, pod);
    let report = cancel(
        &c,
        NS,
        &runyard::client::parse_target("stubborn"),
        "stop",
        Duration::from_millis(100),
        Duration::from_millis(10),
    )
    .await
    .expect("cancel");
    assert!(report.was_running && !report.stopped_in_time);
    assert!(
        c.pod(NS, "stubborn-pod").is_none(),
        "removed after the grace period"
    );
    let job = c.job(NS, "stubborn").expect("job");
    assert!(
        job.spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .is_some(),
        "the Job is ended"
    );
    let err = cancel(
        &c,
        NS,
        &runyard::client::parse_target("pod/nope"),
        "x",
        Duration::ZERO,
        Duration::ZERO,
    )
    .await
    .expect_err("missing");
    assert!(err.to_string().contains("not found"));
}
