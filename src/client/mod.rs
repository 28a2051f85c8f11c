//! The CLI's clients for CI systems and people: [`submit`] a run and follow
//! it, [`cancel`] one, read its [`logs`], show the pools' [`status`]. They use
//! only the pure controller model (to read runs and queues exactly as the
//! controller does) and [`ClientApi`].

pub mod cancel;
pub mod logs;
pub mod status;
pub mod submit;

use crate::cluster::{ClientApi, ClusterError};
use crate::controller::model::RunKey;
use crate::vocab::controlling_job;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

/// Every (API group, resource, verbs) the clients may call: what a CI
/// service account needs for `runyard submit`, `cancel` and `status` in its
/// namespace. These are the calls of [`ClientApi`] and its supertraits as
/// [`crate::cluster::KubeCluster`] makes them (a test calls every method
/// against the in-memory API server and compares); `webhook-config/ci-submitter-rbac.yaml`
/// and the chart's `ciSubmitter` Role grant exactly these (tests check).
pub const RBAC: &[(&str, &str, &[&str])] = &[
    (crate::crd::GROUP, "workerpools", &["get", "list"]),
    (crate::crd::GROUP, "workers", &["list"]),
    (
        "batch",
        "jobs",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    ("", "pods", &["get", "list", "patch", "delete"]),
    ("", "pods/log", &["get"]),
    // `runyard logs`: the log tail kept with a finished run's result.
    ("", "configmaps", &["get"]),
];

/// Exit code when the run timed out (runTimeout, logsTimeout).
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code when the run was cancelled (or the submitter detached).
pub const EXIT_CANCELLED: i32 = 130;
/// Exit code when the run failed without a worker exit code (lost, init failed).
pub const EXIT_FAILED: i32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {source}")]
    Cluster { what: String, source: ClusterError },
    #[error("run {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn cluster(what: impl Into<String>) -> impl FnOnce(ClusterError) -> ClientError {
    let what = what.into();
    move |source| ClientError::Cluster { what, source }
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

pub(crate) fn finished_phase(p: &Pod) -> bool {
    matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The pods of a Job run: those the Job controls (not matched by run id,
/// which only the run's own objects should be trusted with).
pub(crate) async fn job_pods<C: ClientApi>(
    c: &C,
    ns: &str,
    job: &Job,
) -> Result<Vec<Pod>, ClientError> {
    let name = job.name_any();
    let pods = c
        .job_pods(ns, &name)
        .await
        .map_err(cluster("listing the run's pods"))?;
    Ok(pods
        .into_iter()
        .filter(|p| controlling_job(&p.metadata) == Some(name.as_str()))
        .collect())
}

/// Whether a container's log can be read: it has started (running or
/// terminated), or its pod has finished.
pub(crate) fn log_readable(pod: &Pod, container: &str) -> bool {
    finished_phase(pod)
        || pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|s| {
                    s.name == container
                        && s.state
                            .as_ref()
                            .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
                })
            })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(parse_target("job/a"), RunKey::job("a"));
        assert_eq!(parse_target("pods/b"), RunKey::pod("b"));
        assert_eq!(parse_target("c"), RunKey::job("c"));
    }
}
