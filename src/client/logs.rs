//! `runyard logs`: a run's worker log, live while its pod exists, or the
//! tail the controller kept with its result after the pod is gone; and
//! following a worker's log, reconnecting after a dropped stream without
//! losing or repeating lines.

use super::{cluster, finished_phase, job_pods, log_readable, ClientError};
use crate::cluster::{ClientApi, ClusterError};
use crate::controller::model::{ResultRecord, RunKey, RunKind};
use crate::vocab::{log_configmap_name, INIT_CONTAINER, LAUNCHER_CONTAINER};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use std::io::Write;

/// Follows a container's log, reconnecting when the stream drops, without
/// losing or repeating lines (resumes at the last timestamp and skips the
/// lines already printed at it).
pub struct LogFollower {
    last: Option<Timestamp>,
    at_last: usize,
}

impl Default for LogFollower {
    fn default() -> Self {
        Self::new()
    }
}

impl LogFollower {
    pub fn new() -> Self {
        Self {
            last: None,
            at_last: 0,
        }
    }

    /// One connection: prints new lines; returns how many.
    pub async fn pass<C: ClientApi>(
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

pub fn worker_container(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name != LAUNCHER_CONTAINER && c.name != INIT_CONTAINER)
        .map(|c| c.name.clone())
}

pub fn exit_code(pod: &Pod, container: &str) -> Option<i32> {
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

/// Where `runyard logs` read a run's log from.
#[derive(Debug, Clone, PartialEq)]
pub enum LogSource {
    /// The run's pod (live).
    Pod { name: String, container: String },
    /// The tail kept with the finished run's result (its pod is gone, or
    /// its log cannot be read any more).
    Kept { result: Option<ResultRecord> },
}

/// The run named `target` (`job/NAME`, `pod/NAME`, or `NAME`: a Job, else a
/// bare Pod): its newest pod, if any, and its worker container.
async fn run_pod<C: ClientApi>(
    c: &C,
    ns: &str,
    target: &str,
) -> Result<(RunKey, Option<(Pod, String)>), ClientError> {
    let explicit = target.contains('/');
    let mut key = super::parse_target(target);
    let pod = match key.kind {
        RunKind::Job => match c
            .get_job(ns, &key.name)
            .await
            .map_err(cluster("reading the run Job"))?
        {
            Some(job) => job_pods(c, ns, &job)
                .await?
                .into_iter()
                .max_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            None if explicit => None,
            None => {
                // A bare run Pod of that name.
                let pod = c
                    .get_pod(ns, &key.name)
                    .await
                    .map_err(cluster("reading the run Pod"))?;
                if pod.is_some()
                    || c.get_configmap(ns, &log_configmap_name("Pod", &key.name))
                        .await
                        .map_err(cluster("reading the kept log"))?
                        .is_some()
                {
                    key = RunKey::pod(key.name.clone());
                }
                pod
            }
        },
        RunKind::Pod => c
            .get_pod(ns, &key.name)
            .await
            .map_err(cluster("reading the run Pod"))?,
    };
    let pod = pod.and_then(|p| {
        let container = worker_container(&p)?;
        Some((p, container))
    });
    Ok((key, pod))
}

/// Prints a run's worker log to `out`: live from its pod (followed to the
/// end with `follow`), or, when the pod is gone or its log cannot be read,
/// the tail the controller kept with its result.
pub async fn show<C: ClientApi>(
    c: &C,
    ns: &str,
    target: &str,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> Result<LogSource, ClientError> {
    let (key, pod) = run_pod(c, ns, target).await?;
    if let Some((pod, container)) = pod.filter(|(p, c)| log_readable(p, c)) {
        let name = pod.name_any();
        let live = if follow {
            let mut follower = LogFollower::new();
            // Reconnect until the pod has ended and its log is drained.
            loop {
                let printed = follower.pass(c, ns, &name, &container, out).await;
                match printed {
                    Err(e) => break Err(e),
                    Ok(n) => {
                        let done = match c.get_pod(ns, &name).await {
                            Ok(Some(p)) => finished_phase(&p),
                            Ok(None) => true,
                            Err(e) => break Err(e),
                        };
                        if done && n == 0 {
                            break Ok(());
                        }
                    }
                }
            }
        } else {
            c.read_log(ns, &name, &container).await.map(|text| {
                let _ = out.write_all(text.as_bytes());
                let _ = out.flush();
            })
        };
        match live {
            Ok(()) => return Ok(LogSource::Pod { name, container }),
            // The pod went while it was read: the kept tail has the rest.
            Err(ClusterError::NotFound) => {}
            Err(e) => {
                return Err(ClientError::Cluster {
                    what: format!("reading the log of pod {name}"),
                    source: e,
                })
            }
        }
    }
    let kind = match key.kind {
        RunKind::Job => "Job",
        RunKind::Pod => "Pod",
    };
    let kept = c
        .get_configmap(ns, &log_configmap_name(kind, &key.name))
        .await
        .map_err(cluster("reading the kept log"))?
        .ok_or_else(|| {
            ClientError::Invalid(format!(
                "no log for {key} in namespace {ns}: no started pod, and no kept log tail (the run is queued or pending, does not exist, or its kept tail expired)"
            ))
        })?;
    let data = kept.data.unwrap_or_default();
    if let Some(log) = data.get("log") {
        let _ = out.write_all(log.as_bytes());
        let _ = out.flush();
    }
    Ok(LogSource::Kept {
        result: data
            .get("result")
            .and_then(|r| serde_json::from_str(r).ok()),
    })
}
