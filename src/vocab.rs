//! runyard's vocabulary: every `runyard.dev/*` label and annotation, the names
//! of the containers, volumes and paths it injects, the environment it sets,
//! its field managers, and the results a run can end with. Every other module
//! takes these names from here.
//!
//! The small readers at the end (`label`, `annotation`, `controlled_by_job`)
//! read the vocabulary off an object's metadata.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

// ---- labels ---------------------------------------------------------------

/// Label that makes a Job or Pod a run of the named pool.
pub const LABEL_POOL: &str = "runyard.dev/pool";
/// Label carrying the run id (a ULID), on the Job, its pod template and its pods.
pub const LABEL_RUN_ID: &str = "runyard.dev/run-id";
/// Label set by the controller's claim: the worker executing the run.
pub const LABEL_WORKER: &str = "runyard.dev/worker";
/// Label on a Worker naming its pool.
pub const LABEL_WORKER_POOL: &str = "workers.runyard.dev/workerpool";

// ---- annotations ----------------------------------------------------------

/// Annotation marking an injected pod or pod template.
pub const ANNOTATION_INJECTED: &str = "runyard.dev/injected";
/// Annotation ordering a pool's queue: integer, higher first, default 0.
pub const ANNOTATION_PRIORITY: &str = "runyard.dev/priority";
/// Why a queued run waits (position, busy workers), kept current by the controller.
pub const ANNOTATION_QUEUE: &str = "runyard.dev/queue";
/// When the run was claimed (RFC 3339).
pub const ANNOTATION_CLAIMED_AT: &str = "runyard.dev/claimed-at";
/// How a finished run ended: a [`RunResult`].
pub const ANNOTATION_RESULT: &str = "runyard.dev/result";
/// The finished run's result record (JSON): outcome, reason, exit code,
/// times, worker.
pub const ANNOTATION_RESULT_DETAIL: &str = "runyard.dev/result-detail";
/// On a run's log ConfigMap: the run it belongs to (`Job/NAME`, `Pod/NAME`).
pub const ANNOTATION_LOG_OF: &str = "runyard.dev/log-of";
/// On a bare run's log ConfigMap: when it may be deleted (RFC 3339).
pub const ANNOTATION_EXPIRES_AT: &str = "runyard.dev/expires-at";
/// Label of the ConfigMaps that keep finished runs' log tails.
pub const LABEL_LOG_TAIL: &str = "runyard.dev/log-tail";
/// `https` URL of a source tarball (`.tar.gz`) for `launcher init`.
pub const ANNOTATION_SOURCE_URL: &str = "runyard.dev/source-url";
/// Hex SHA-256 the source tarball must have.
pub const ANNOTATION_SOURCE_SHA256: &str = "runyard.dev/source-sha256";
/// Tools for the binaries cache, `name=version@url#sha256=HEX`, separated by
/// whitespace or `;`.
pub const ANNOTATION_TOOLS: &str = "runyard.dev/tools";
/// A stop was requested (value: the reason), set by `runyard cancel`.
pub const ANNOTATION_STOP: &str = "runyard.dev/stop";
/// On the certificate Secret: when the serving certificate expires (seconds
/// since the epoch).
pub const ANNOTATION_CERT_NOT_AFTER: &str = "runyard.dev/not-after";
/// On the certificate Secret: when the serving certificate became valid
/// (seconds since the epoch).
pub const ANNOTATION_CERT_NOT_BEFORE: &str = "runyard.dev/not-before";
/// On a self-managed certificate Secret during a rotation: validity of the
/// next certificate (`next.crt`).
pub const ANNOTATION_NEXT_CERT_NOT_BEFORE: &str = "runyard.dev/next-not-before";
pub const ANNOTATION_NEXT_CERT_NOT_AFTER: &str = "runyard.dev/next-not-after";
/// On the certificate Secret: the names the serving certificate is valid for.
pub const ANNOTATION_CERT_NAMES: &str = "runyard.dev/names";

/// Scheduling gate that holds a bare run Pod until it is claimed.
pub const SCHEDULING_GATE: &str = "runyard.dev/claim";

// ---- what the injection adds ------------------------------------------------

/// Name of the injected init container.
pub const INIT_CONTAINER: &str = "init";
/// Name of the injected launcher sidecar.
pub const LAUNCHER_CONTAINER: &str = "launcher";
/// Name of the workspace volume.
pub const WORKSPACE_VOLUME: &str = "workspace";
/// Name of the binaries-cache volume.
pub const BINARIES_CACHE_VOLUME: &str = "binaries-cache";
/// Name of the downward-API volume through which the launcher reads the pod's
/// labels and annotations (stop requests) without Kubernetes credentials.
pub const PODINFO_VOLUME: &str = "runyard-podinfo";

/// Where the workspace volume is mounted.
pub const WORKSPACE_PATH: &str = "/opt/runyard/workspace";
/// Where the binaries-cache volume is mounted.
pub const BINARIES_CACHE_PATH: &str = "/opt/runyard/binaries_cache";
/// Per-run directory of tool binaries, first on the worker's PATH when the
/// run has tools.
pub const BINARIES_PATH: &str = "/opt/runyard/binaries";
/// File name of the exec shim in the binaries directory (hidden: never a
/// tool's name, never found on PATH by accident).
pub const EXEC_SHIM_FILE: &str = ".runyard-exec";
/// The exec shim as worker containers see it: it puts runyard's directories
/// before the PATH the process got (the image's own) and execs the worker's
/// command. `launcher init` copies it there from the launcher image.
pub const EXEC_SHIM_PATH: &str = "/opt/runyard/binaries/.runyard-exec";
/// The shim's argument that carries the directories to put first on PATH
/// (`--path-prefix=DIR:DIR`).
pub const EXEC_SHIM_PREFIX_ARG: &str = "--path-prefix=";
/// The binary that is the exec shim, next to `runyard` in the launcher image.
pub const EXEC_SHIM_BINARY: &str = "runyard-exec";
/// Written by the launcher (container sidecar mode) when the workers have
/// exited: pool sidecars running under the exec shim's `--until` stop then.
pub const WORKERS_DONE_FILE: &str = "/opt/runyard/workspace/.runyard/workers-done";
/// The exec shim's option that runs a pool sidecar until [`WORKERS_DONE_FILE`]
/// appears.
pub const SHIM_UNTIL_ARG: &str = "--until=";
/// Sub-path of the workspace volume mounted at [`BINARIES_PATH`].
pub const BINARIES_SUBPATH: &str = ".runyard/binaries";
/// Where the launcher mounts [`PODINFO_VOLUME`].
pub const PODINFO_PATH: &str = "/opt/runyard/podinfo";

/// The name of the ConfigMap that keeps a run's log tail and result.
pub fn log_configmap_name(kind: &str, name: &str) -> String {
    let base = format!("runyard-log.{}.{name}", kind.to_ascii_lowercase());
    if base.len() <= 253 {
        return base;
    }
    // Too long for an object name: keep a prefix and make it unique again.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in base.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let prefix: String = base.chars().take(230).collect();
    format!("{}-{h:016x}", prefix.trim_end_matches(['.', '-']))
}

/// UID and GID of run pods unless the pool sets others.
pub const RUNYARD_UID: i64 = 1983;

/// Environment variables runyard sets in run pods (and the launcher reads).
pub mod env {
    pub const RUN_ID: &str = "RUNYARD_RUN_ID";
    pub const POOL: &str = "RUNYARD_POOL";
    pub const WORKSPACE: &str = "RUNYARD_WORKSPACE";
    pub const WORKER: &str = "RUNYARD_WORKER";
    pub const NAMESPACE: &str = "RUNYARD_NAMESPACE";
    pub const POD_NAME: &str = "RUNYARD_POD_NAME";
    pub const SIDECAR_MODE: &str = "RUNYARD_SIDECAR_MODE";
    pub const WORKER_CONTAINERS: &str = "RUNYARD_WORKER_CONTAINERS";
    pub const PODINFO: &str = "RUNYARD_PODINFO";
    pub const BINARIES_CACHE: &str = "RUNYARD_BINARIES_CACHE";
    pub const BINARIES: &str = "RUNYARD_BINARIES";
    pub const CA_FILE: &str = "RUNYARD_CA_FILE";
    /// A mounted ConfigMap directory with the run's source.
    pub const SOURCE_DIR: &str = "RUNYARD_SOURCE_DIR";
    /// Most bytes `launcher init` unpacks from the source (the pool's `spec.limits.sourceBytes`).
    pub const SOURCE_MAX_BYTES: &str = "RUNYARD_SOURCE_MAX_BYTES";
    /// Most entries `launcher init` unpacks from the source (`spec.limits.sourceEntries`).
    pub const SOURCE_MAX_ENTRIES: &str = "RUNYARD_SOURCE_MAX_ENTRIES";
    /// Where `launcher init` writes its failure (default `/dev/termination-log`).
    pub const TERMINATION_LOG: &str = "RUNYARD_TERMINATION_LOG";
    /// Set on `init` when worker commands are wrapped by the exec shim:
    /// `launcher init` installs it into the binaries directory.
    pub const EXEC_SHIM: &str = "RUNYARD_EXEC_SHIM";
}

// ---- field managers -------------------------------------------------------

/// Field manager (and Event reporter) of the controller's writes.
pub const FIELD_MANAGER: &str = "runyard-controller";
/// Field manager of `runyard certs`' writes (the certificate Secret).
pub const CERTS_FIELD_MANAGER: &str = "runyard";

// ---- results --------------------------------------------------------------

/// How a finished run ended, as recorded in [`ANNOTATION_RESULT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RunResult {
    Succeeded,
    Failed,
    /// The worker printed nothing for the pool's `logsTimeout`.
    LogsTimeout,
    /// Stopped by `runyard cancel` (or Ctrl-C in `runyard submit`).
    Cancelled,
    /// The run object disappeared while a worker held it.
    Lost,
}

impl RunResult {
    pub const ALL: [RunResult; 5] = [
        Self::Succeeded,
        Self::Failed,
        Self::LogsTimeout,
        Self::Cancelled,
        Self::Lost,
    ];

    /// The annotation value (also the Event reason).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::LogsTimeout => "LogsTimeout",
            Self::Cancelled => "Cancelled",
            Self::Lost => "Lost",
        }
    }

    /// Parses an annotation value.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for RunResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---- reading the vocabulary off objects -------------------------------------

/// A label's value.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

/// An annotation's value.
pub fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

/// Whether the object's metadata carries the injection marker.
pub fn is_injected(meta: &ObjectMeta) -> bool {
    annotation(meta, ANNOTATION_INJECTED).is_some()
}

/// The Job that controls a Pod (a Job run's pod, not a bare run), by name.
pub fn controlling_job(meta: &ObjectMeta) -> Option<&str> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| {
            o.controller == Some(true) && o.kind == "Job" && o.api_version.starts_with("batch/")
        })
        .map(|o| o.name.as_str())
}

/// Whether a Pod is controlled by a Job (a Job run's pod, not a bare run).
pub fn controlled_by_job(meta: &ObjectMeta) -> bool {
    controlling_job(meta).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        for r in RunResult::ALL {
            assert_eq!(RunResult::parse(r.as_str()), Some(r));
        }
        assert_eq!(RunResult::parse("Exploded"), None);
    }

    #[test]
    fn log_configmap_names_are_valid_object_names() {
        assert_eq!(
            log_configmap_name("Job", "build-1"),
            "runyard-log.job.build-1"
        );
        // A 253-character pod name whose cut lands on a dot.
        let long = format!("{}.{}", "a".repeat(213), "b".repeat(39));
        let (a, b) = (
            log_configmap_name("Pod", &long),
            log_configmap_name("Pod", &format!("{long}x")),
        );
        for n in [&a, &b] {
            assert!(n.len() <= 253, "{n}");
            assert!(
                n.split('.')
                    .all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-')),
                "{n}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn the_exec_shim_lives_in_the_binaries_directory() {
        assert_eq!(EXEC_SHIM_PATH, format!("{BINARIES_PATH}/{EXEC_SHIM_FILE}"));
    }
}
