//! `runyard submit` and `runyard cancel`, for CI systems: create a run, show
//! its queue position while it waits, stream the worker's log (reconnecting
//! without losing or repeating lines), and exit with the worker's exit code.

use crate::controller::cluster::{Cluster, ClusterError};
use crate::controller::model::{queue, RunKey, RunKind};
use crate::controller::reconcile::{model_snapshot, snapshot};
use crate::controller::ANNOTATION_RESULT;
use crate::injection::{
    label, ANNOTATION_PRIORITY, INIT_CONTAINER, LABEL_POOL, LABEL_RUN_ID, LABEL_WORKER,
    LAUNCHER_CONTAINER, SCHEDULING_GATE,
};
use crate::launcher::{ANNOTATION_SOURCE_SHA256, ANNOTATION_SOURCE_URL, ANNOTATION_STOP};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Exit code when the run timed out (runTimeout, logsTimeout).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code when the run was cancelled (or the submitter detached).
pub const EXIT_CANCELLED: i32 = 130;
/// Exit code when the run failed without a worker exit code (lost, init failed).
pub const EXIT_FAILED: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("{what}: {source}")]
    Cluster { what: String, source: ClusterError },
    #[error("run {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

fn cluster(what: impl Into<String>) -> impl FnOnce(ClusterError) -> SubmitError {
    let what = what.into();
    move |source| SubmitError::Cluster { what, source }
}

/// A run described by flags.
#[derive(Debug, Clone, Default)]
pub struct RunSpec {
    pub pool: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub priority: Option<i64>,
    pub source_url: Option<String>,
    pub source_sha256: Option<String>,
    pub name_prefix: String,
}

/// The Job `runyard submit --pool ... --image ... -- command` creates.
pub fn job_from_flags(spec: &RunSpec) -> Result<Job, SubmitError> {
    if spec.pool.is_empty() || spec.image.is_empty() {
        return Err(SubmitError::Invalid(
            "--pool and --image are required without -f".into(),
        ));
    }
    if spec.source_url.is_some() != spec.source_sha256.is_some() {
        return Err(SubmitError::Invalid(
            "--source-url and --source-sha256 go together".into(),
        ));
    }
    let mut annotations = serde_json::Map::new();
    if let Some(p) = spec.priority {
        annotations.insert(ANNOTATION_PRIORITY.into(), p.to_string().into());
    }
    let mut template_annotations = serde_json::Map::new();
    if let (Some(url), Some(sha)) = (&spec.source_url, &spec.source_sha256) {
        template_annotations.insert(ANNOTATION_SOURCE_URL.into(), url.clone().into());
        template_annotations.insert(ANNOTATION_SOURCE_SHA256.into(), sha.clone().into());
    }
    let env: Vec<serde_json::Value> = spec
        .env
        .iter()
        .map(|(k, v)| serde_json::json!({ "name": k, "value": v }))
        .collect();
    let mut container = serde_json::json!({ "name": "worker", "image": spec.image, "env": env });
    if !spec.command.is_empty() {
        container["command"] = serde_json::json!(spec.command);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": if spec.name_prefix.is_empty() { "run-".to_string() } else { spec.name_prefix.clone() },
            "labels": { LABEL_POOL: spec.pool },
            "annotations": annotations,
        },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "labels": { LABEL_POOL: spec.pool }, "annotations": template_annotations },
                "spec": { "restartPolicy": "Never", "containers": [container] }
            }
        }
    }))
    .map_err(|e| SubmitError::Invalid(e.to_string()))
}

/// Parses `job/NAME`, `pod/NAME` or `NAME` (a Job).
pub fn parse_target(s: &str) -> RunKey {
    match s.split_once('/') {
        Some((k, n)) if k.eq_ignore_ascii_case("pod") || k.eq_ignore_ascii_case("pods") => {
            RunKey::pod(n)
        }
        Some((k, n)) if k.eq_ignore_ascii_case("job") || k.eq_ignore_ascii_case("jobs") => {
            RunKey::job(n)
        }
        _ => RunKey::job(s),
    }
}

fn finished_phase(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The pods of a Job run (by run id, else by Job name).
async fn job_pods<C: Cluster>(c: &C, ns: &str, job: &Job) -> Result<Vec<Pod>, SubmitError> {
    let Some(pool) = label(&job.metadata, LABEL_POOL) else {
        return Ok(Vec::new());
    };
    let run_id = label(&job.metadata, LABEL_RUN_ID);
    let name = job.name_any();
    let pods = c
        .pods(ns, pool)
        .await
        .map_err(cluster("listing the run's pods"))?;
    Ok(pods
        .into_iter()
        .filter(|p| {
            let by_id = run_id.is_some() && label(&p.metadata, LABEL_RUN_ID) == run_id;
            let by_name = label(&p.metadata, "batch.kubernetes.io/job-name") == Some(name.as_str())
                || label(&p.metadata, "job-name") == Some(name.as_str());
            by_id || by_name
        })
        .collect())
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReport {
    pub run: String,
    /// The run had been claimed (it was running).
    pub was_running: bool,
    /// The worker stopped within the grace period.
    pub stopped_in_time: bool,
}

/// Stops a run gracefully: marks it `Cancelled`, asks its worker to stop
/// (`runyard.dev/stop`, relayed by the launcher), waits up to `grace` for the
/// pods to end, then removes what is left.
pub async fn cancel<C: Cluster>(
    c: &C,
    ns: &str,
    run: &RunKey,
    reason: &str,
    grace: Duration,
    poll: Duration,
) -> Result<CancelReport, SubmitError> {
    let mark = serde_json::json!({ "metadata": { "annotations": { ANNOTATION_STOP: reason, ANNOTATION_RESULT: "Cancelled" } } });
    match run.kind {
        RunKind::Job => {
            let job = c
                .get_job(ns, &run.name)
                .await
                .map_err(cluster("reading the Job"))?
                .ok_or_else(|| SubmitError::NotFound(run.to_string()))?;
            c.patch_job(ns, &run.name, &mark)
                .await
                .map_err(cluster("marking the Job cancelled"))?;
            let queued = job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
                && label(&job.metadata, LABEL_WORKER).is_none();
            if queued {
                c.delete_job(ns, &run.name)
                    .await
                    .map_err(cluster("deleting the queued Job"))?;
                return Ok(CancelReport {
                    run: run.to_string(),
                    was_running: false,
                    stopped_in_time: true,
                });
            }
            for p in job_pods(c, ns, &job)
                .await?
                .iter()
                .filter(|p| !finished_phase(p))
            {
                c.patch_pod(ns, &p.name_any(), &mark)
                    .await
                    .map_err(cluster("asking the worker to stop"))?;
            }
            let deadline = Instant::now() + grace;
            let mut stopped = false;
            while Instant::now() < deadline {
                if job_pods(c, ns, &job).await?.iter().all(finished_phase) {
                    stopped = true;
                    break;
                }
                tokio::time::sleep(poll).await;
            }
            // Fail the Job now (its deadline has passed), so the Job controller
            // starts no other pod, and remove what still runs.
            let elapsed = job
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map_or(1, |t| {
                    (Timestamp::now().as_second() - t.0.as_second()).max(1)
                });
            let fail = serde_json::json!({ "spec": { "activeDeadlineSeconds": elapsed } });
            c.patch_job(ns, &run.name, &fail)
                .await
                .map_err(cluster("ending the Job"))?;
            for p in job_pods(c, ns, &job)
                .await?
                .iter()
                .filter(|p| !finished_phase(p))
            {
                c.delete_pod(ns, &p.name_any())
                    .await
                    .map_err(cluster("deleting a run pod"))?;
            }
            Ok(CancelReport {
                run: run.to_string(),
                was_running: true,
                stopped_in_time: stopped,
            })
        }
        RunKind::Pod => {
            let pod = c
                .get_pod(ns, &run.name)
                .await
                .map_err(cluster("reading the Pod"))?
                .ok_or_else(|| SubmitError::NotFound(run.to_string()))?;
            c.patch_pod(ns, &run.name, &mark)
                .await
                .map_err(cluster("marking the Pod cancelled"))?;
            let gated = pod
                .spec
                .as_ref()
                .and_then(|s| s.scheduling_gates.as_ref())
                .is_some_and(|g| g.iter().any(|g| g.name == SCHEDULING_GATE));
            let mut stopped = gated;
            if !gated {
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline {
                    match c
                        .get_pod(ns, &run.name)
                        .await
                        .map_err(cluster("reading the Pod"))?
                    {
                        Some(p) if !finished_phase(&p) => tokio::time::sleep(poll).await,
                        _ => {
                            stopped = true;
                            break;
                        }
                    }
                }
            }
            c.delete_pod(ns, &run.name)
                .await
                .map_err(cluster("deleting the Pod"))?;
            Ok(CancelReport {
                run: run.to_string(),
                was_running: !gated,
                stopped_in_time: stopped,
            })
        }
    }
}

/// How waiting is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A spinner line rewritten in place (a terminal).
    Spinner,
    /// A plain line whenever the position changes (logs, CI).
    Lines,
}

#[derive(Debug, Clone)]
pub struct SubmitOptions {
    pub detach: bool,
    pub poll: Duration,
    /// Grace period given to the worker when Ctrl-C cancels the run.
    pub grace: Duration,
    pub progress: Progress,
}

/// The end of a submission (`-o json`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub run_id: Option<String>,
    pub job: String,
    pub namespace: String,
    /// Succeeded, Failed, LogsTimeout, DeadlineExceeded, Cancelled, Lost, Submitted, Detached.
    pub result: String,
    pub exit_code: i32,
    pub queued_seconds: f64,
    pub duration_seconds: f64,
}

/// Follows a container's log, reconnecting when the stream drops, without
/// losing or repeating lines (resumes at the last timestamp and skips the
/// lines already printed at it).
struct LogFollower {
    last: Option<Timestamp>,
    at_last: usize,
}

impl LogFollower {
    fn new() -> Self {
        Self {
            last: None,
            at_last: 0,
        }
    }

    /// One connection: prints new lines; returns how many.
    async fn pass<C: Cluster>(
        &mut self,
        c: &C,
        ns: &str,
        pod: &str,
        container: &str,
        out: &mut (dyn Write + Send),
    ) -> Result<usize, ClusterError> {
        let mut stream = c.follow_logs(ns, pod, container, self.last).await?;
        let mut skip = self.at_last;
        let mut printed = 0;
        while let Some(line) = stream.next().await {
            let Ok(line) = line else { break };
            let (ts, text) = match line
                .split_once(' ')
                .and_then(|(t, rest)| Some((t.parse::<Timestamp>().ok()?, rest)))
            {
                Some(x) => x,
                None => (self.last.unwrap_or(Timestamp::UNIX_EPOCH), line.as_str()),
            };
            if let Some(last) = self.last {
                if ts < last {
                    continue;
                }
                if ts == last && skip > 0 {
                    skip -= 1;
                    continue;
                }
            }
            let _ = writeln!(out, "{text}");
            printed += 1;
            if Some(ts) == self.last {
                self.at_last += 1;
            } else {
                self.last = Some(ts);
                self.at_last = 1;
                skip = 0;
            }
        }
        let _ = out.flush();
        Ok(printed)
    }
}

fn worker_container(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name != LAUNCHER_CONTAINER && c.name != INIT_CONTAINER)
        .map(|c| c.name.clone())
}

fn exit_code(pod: &Pod, container: &str) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

fn job_condition(job: &Job) -> Option<(bool, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find_map(|c| {
            (c.status == "True" && matches!(c.type_.as_str(), "Complete" | "Failed"))
                .then(|| (c.type_ == "Complete", c.reason.clone()))
        })
}

/// Submits `job` and follows it to its end.
pub async fn submit<C: Cluster>(
    c: &C,
    ns: &str,
    job: &Job,
    opts: &SubmitOptions,
    logs: &mut (dyn Write + Send),
    status: &mut (dyn Write + Send),
    mut interrupts: watch::Receiver<u32>,
) -> Result<Summary, SubmitError> {
    let started = Instant::now();
    let created = c
        .create_job(ns, job)
        .await
        .map_err(cluster("creating the run Job"))?;
    let name = created.name_any();
    let run_id = label(&created.metadata, LABEL_RUN_ID).map(str::to_string);
    let pool = label(&created.metadata, LABEL_POOL)
        .unwrap_or_default()
        .to_string();
    let _ = writeln!(
        status,
        "run {} (job/{name}) submitted to pool {pool}",
        run_id.as_deref().unwrap_or("-")
    );
    let mut summary = Summary {
        run_id,
        job: name.clone(),
        namespace: ns.to_string(),
        result: "Submitted".into(),
        exit_code: 0,
        queued_seconds: 0.0,
        duration_seconds: 0.0,
    };
    if opts.detach {
        return Ok(summary);
    }

    let spinner = ['|', '/', '-', '\\'];
    let mut tick = 0usize;
    let mut last_note = String::new();
    let mut claimed_at: Option<Instant> = None;
    let mut follower = LogFollower::new();
    let mut cancelled = false;
    let mut seen_interrupts = *interrupts.borrow();
    loop {
        // Ctrl-C: the first cancels the run, a second detaches.
        let pressed = *interrupts.borrow();
        if pressed > seen_interrupts {
            seen_interrupts = pressed;
            if cancelled || pressed >= 2 {
                let _ = writeln!(
                    status,
                    "\ndetached; the run goes on (runyard cancel job/{name})"
                );
                summary.result = "Detached".into();
                summary.exit_code = EXIT_CANCELLED;
                break;
            }
            cancelled = true;
            let _ = writeln!(
                status,
                "\ncancelling job/{name} (Ctrl-C again to detach)..."
            );
            let report = cancel(
                c,
                ns,
                &RunKey::job(&name),
                "cancelled by runyard submit",
                opts.grace,
                opts.poll,
            )
            .await?;
            if !report.was_running {
                summary.result = "Cancelled".into();
                summary.exit_code = EXIT_CANCELLED;
                break;
            }
        }

        let Some(job) = c
            .get_job(ns, &name)
            .await
            .map_err(cluster("reading the run Job"))?
        else {
            summary.result = if cancelled { "Cancelled" } else { "Lost" }.into();
            summary.exit_code = if cancelled {
                EXIT_CANCELLED
            } else {
                EXIT_FAILED
            };
            break;
        };
        let queued = job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
            && label(&job.metadata, LABEL_WORKER).is_none();
        if queued {
            let note = queue_note(c, ns, &pool, &name).await;
            match opts.progress {
                Progress::Spinner => {
                    let _ = write!(
                        status,
                        "\r{} {note} ({}s)   ",
                        spinner[tick % 4],
                        started.elapsed().as_secs()
                    );
                    tick += 1;
                }
                Progress::Lines if note != last_note => {
                    let _ = writeln!(status, "{note}");
                }
                Progress::Lines => {}
            }
            let _ = status.flush();
            last_note = note;
        } else {
            if claimed_at.is_none() {
                claimed_at = Some(Instant::now());
                summary.queued_seconds = started.elapsed().as_secs_f64();
                let worker = label(&job.metadata, LABEL_WORKER)
                    .unwrap_or("-")
                    .to_string();
                if opts.progress == Progress::Spinner {
                    let _ = writeln!(status);
                }
                let _ = writeln!(status, "claimed by worker {worker}");
            }
            // Stream the worker's log while its pod runs.
            let pods = job_pods(c, ns, &job).await?;
            let pod = pods
                .iter()
                .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
            let mut pod_done: Option<i32> = None;
            if let Some(pod) = pod {
                if let Some(container) = worker_container(pod) {
                    let started_container = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|s| {
                                s.name == container
                                    && s.state.as_ref().is_some_and(|st| {
                                        st.running.is_some() || st.terminated.is_some()
                                    })
                            })
                        });
                    if started_container || finished_phase(pod) {
                        let _ = follower
                            .pass(c, ns, &pod.name_any(), &container, logs)
                            .await;
                    }
                    pod_done = exit_code(pod, &container);
                }
            }
            if let Some((done, reason)) = job_condition(&job) {
                let annotated = job
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(ANNOTATION_RESULT))
                    .cloned();
                summary.result = match (done, annotated.as_deref(), reason.as_deref()) {
                    (_, Some("Cancelled"), _) => "Cancelled".into(),
                    (_, Some("LogsTimeout"), _) => "LogsTimeout".into(),
                    (false, _, Some("DeadlineExceeded")) => "DeadlineExceeded".into(),
                    (true, _, _) => "Succeeded".into(),
                    (false, _, _) => "Failed".into(),
                };
                // Drain what the log still holds.
                if let Some(pod) = pod {
                    if let Some(container) = worker_container(pod) {
                        while follower
                            .pass(c, ns, &pod.name_any(), &container, logs)
                            .await
                            .unwrap_or(0)
                            > 0
                        {}
                    }
                }
                summary.exit_code = match summary.result.as_str() {
                    "Cancelled" => EXIT_CANCELLED,
                    "LogsTimeout" | "DeadlineExceeded" => EXIT_TIMEOUT,
                    "Succeeded" => pod_done.unwrap_or(0),
                    _ => pod_done.filter(|code| *code != 0).unwrap_or(EXIT_FAILED),
                };
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.poll) => {}
            _ = interrupts.changed() => {}
        }
    }
    summary.duration_seconds = started.elapsed().as_secs_f64();
    let _ = writeln!(
        status,
        "run {} (job/{name}): {} (exit {})",
        summary.run_id.as_deref().unwrap_or("-"),
        summary.result,
        summary.exit_code
    );
    Ok(summary)
}

/// "queued: position 2 of 5; 3 of 3 workers busy".
async fn queue_note<C: Cluster>(c: &C, ns: &str, pool: &str, job: &str) -> String {
    let Ok((p, workers, jobs, pods)) = snapshot(c, ns, pool).await else {
        return "queued".into();
    };
    let Some(pool_obj) = p else {
        return format!("queued, but pool {pool} does not exist");
    };
    let snap = model_snapshot(Some(&pool_obj), &workers, &jobs, &pods);
    let q = queue(&snap.runs);
    let busy = snap
        .workers
        .iter()
        .filter(|w| w.current_run.is_some())
        .count();
    let position = q
        .iter()
        .position(|r| r.key == RunKey::job(job))
        .map_or(0, |p| p + 1);
    format!(
        "queued: position {position} of {}; {busy} of {} workers busy",
        q.len(),
        pool_obj.spec.pool_size
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_make_a_run_job() {
        let job = job_from_flags(&RunSpec {
            pool: "builders".into(),
            image: "alpine".into(),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "1".into())],
            priority: Some(5),
            source_url: Some("https://x/src.tgz".into()),
            source_sha256: Some("a".repeat(64)),
            ..Default::default()
        })
        .expect("job");
        assert_eq!(label(&job.metadata, LABEL_POOL), Some("builders"));
        assert_eq!(job.metadata.generate_name.as_deref(), Some("run-"));
        let tmeta = job
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .expect("template");
        assert_eq!(label(tmeta, LABEL_POOL), Some("builders"));
        assert!(tmeta
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(ANNOTATION_SOURCE_URL)));
        let c = &job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("spec")
            .containers[0];
        assert_eq!(c.command.as_ref().map(Vec::len), Some(3));
        assert!(job_from_flags(&RunSpec {
            pool: "p".into(),
            ..Default::default()
        })
        .is_err());
        assert!(job_from_flags(&RunSpec {
            pool: "p".into(),
            image: "i".into(),
            source_url: Some("u".into()),
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("job/a"), RunKey::job("a"));
        assert_eq!(parse_target("pods/b"), RunKey::pod("b"));
        assert_eq!(parse_target("c"), RunKey::job("c"));
    }
}
