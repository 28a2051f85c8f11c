//! `runyard submit`, for CI systems: create a run, show its queue position
//! while it waits, stream the worker's log (reconnecting without losing or
//! repeating lines), and exit with the worker's exit code.

use super::cancel::cancel;
use super::logs::{exit_code, worker_container, LogFollower};
use super::{
    cluster, job_pods, log_readable, ClientError, EXIT_CANCELLED, EXIT_FAILED, EXIT_TIMEOUT,
};
use crate::cluster::ClientApi;
use crate::controller::model::RunKey;
use crate::vocab::{
    annotation, label, RunResult, ANNOTATION_PRIORITY, ANNOTATION_QUEUE, ANNOTATION_RESULT,
    ANNOTATION_SOURCE_SHA256, ANNOTATION_SOURCE_URL, LABEL_POOL, LABEL_RUN_ID, LABEL_WORKER,
};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The Job condition reason of a run that hit its deadline (`runTimeout`).
const DEADLINE_EXCEEDED: &str = "DeadlineExceeded";

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
pub fn job_from_flags(spec: &RunSpec) -> Result<Job, ClientError> {
    if spec.pool.is_empty() || spec.image.is_empty() {
        return Err(ClientError::Invalid(
            "--pool and --image are required without -f".into(),
        ));
    }
    if spec.source_url.is_some() != spec.source_sha256.is_some() {
        return Err(ClientError::Invalid(
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
    .map_err(|e| ClientError::Invalid(e.to_string()))
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
pub async fn submit<C: ClientApi>(
    c: &C,
    ns: &str,
    job: &Job,
    opts: &SubmitOptions,
    logs: &mut (dyn Write + Send),
    status: &mut (dyn Write + Send),
    mut interrupts: watch::Receiver<u32>,
) -> Result<Summary, ClientError> {
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
    // The run's own Job, through a watch: its queue note, its claim, its end.
    let mut updates = c
        .watch_job(ns, &name)
        .await
        .map_err(cluster("watching the run Job"))?;
    let mut latest: Option<Option<Job>> = None;
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
                summary.result = RunResult::Cancelled.to_string();
                summary.exit_code = EXIT_CANCELLED;
                break;
            }
        }

        // Everything the watch has delivered so far.
        while let Some(Some(update)) = futures::FutureExt::now_or_never(updates.next()) {
            match update {
                Ok(job) => latest = Some(job),
                Err(e) => tracing::debug!(error = %e, "watch of the run Job interrupted"),
            }
        }
        let current = match latest.clone() {
            Some(job) => job,
            None => c
                .get_job(ns, &name)
                .await
                .map_err(cluster("reading the run Job"))?,
        };
        let Some(job) = current else {
            summary.result = if cancelled {
                RunResult::Cancelled
            } else {
                RunResult::Lost
            }
            .to_string();
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
            let note = match annotation(&job.metadata, ANNOTATION_QUEUE) {
                Some(position) => format!("queued: {position}"),
                None => "queued".to_string(),
            };
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
                    if log_readable(pod, &container) {
                        let _ = follower
                            .pass(c, ns, &pod.name_any(), &container, logs)
                            .await;
                    }
                    pod_done = exit_code(pod, &container);
                }
            }
            if let Some((done, reason)) = job_condition(&job) {
                let annotated =
                    annotation(&job.metadata, ANNOTATION_RESULT).and_then(RunResult::parse);
                summary.result = match (done, annotated, reason.as_deref()) {
                    (_, Some(r @ (RunResult::Cancelled | RunResult::LogsTimeout)), _) => {
                        r.to_string()
                    }
                    (false, _, Some(DEADLINE_EXCEEDED)) => DEADLINE_EXCEEDED.into(),
                    (true, _, _) => RunResult::Succeeded.to_string(),
                    (false, _, _) => RunResult::Failed.to_string(),
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
                summary.exit_code = match RunResult::parse(&summary.result) {
                    Some(RunResult::Cancelled) => EXIT_CANCELLED,
                    Some(RunResult::LogsTimeout) => EXIT_TIMEOUT,
                    _ if summary.result == DEADLINE_EXCEEDED => EXIT_TIMEOUT,
                    Some(RunResult::Succeeded) => pod_done.unwrap_or(0),
                    _ => pod_done.filter(|code| *code != 0).unwrap_or(EXIT_FAILED),
                };
                break;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(opts.poll) => {}
            _ = interrupts.changed() => {}
            update = updates.next() => match update {
                Some(Ok(job)) => latest = Some(job),
                Some(Err(e)) => tracing::debug!(error = %e, "watch of the run Job interrupted"),
                // The watch ended: read the Job directly from now on.
                None => {
                    latest = None;
                    updates = futures::stream::pending().boxed();
                }
            },
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
}
