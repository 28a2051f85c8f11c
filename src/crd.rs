//! Custom resource types: `WorkerPool` and `Worker` (group `workers.runyard.dev`).
//!
//! The CRD manifests in `webhook-config/crds/crds.yaml` are generated from these types
//! by `runyard crd`; a test fails when the checked-in text drifts.

// kube's derive takes one `printcolumn(...)` per column; clippy reads the
// repeated `type_ = ...` keys as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext,
    ResourceRequirements, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of runyard's custom resources (also written out in the derives
/// below, which take literals only).
pub const GROUP: &str = "workers.runyard.dev";

/// A pool of workers that executes runs (Jobs and Pods labeled `runyard.dev/pool=<name>`)
/// in its namespace, at most `poolSize` at a time.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "workers.runyard.dev",
    version = "v1alpha1",
    kind = "WorkerPool",
    namespaced,
    shortname = "wp",
    category = "runyard",
    status = "WorkerPoolStatus",
    scale(
        spec_replicas_path = ".spec.poolSize",
        status_replicas_path = ".status.actualPoolSize"
    ),
    printcolumn(
        name = "Desired Pool Size",
        type_ = "integer",
        json_path = ".spec.poolSize"
    ),
    printcolumn(
        name = "Actual Pool Size",
        type_ = "integer",
        json_path = ".status.actualPoolSize"
    ),
    printcolumn(name = "Idle", type_ = "integer", json_path = ".status.idleWorkers"),
    printcolumn(name = "Busy", type_ = "integer", json_path = ".status.busyWorkers"),
    printcolumn(name = "Queued", type_ = "integer", json_path = ".status.queuedRuns"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolSpec {
    /// Number of workers, i.e. how many runs of this pool may execute at once.
    #[serde(default = "default_pool_size")]
    #[schemars(range(min = 0, max = 10000))]
    pub pool_size: i32,
    /// Keep pods of successful runs (default false: they are deleted once they succeed;
    /// failed pods are always kept for debugging, up to `failedPodsHistoryLimit`).
    #[serde(default)]
    pub keep_successful_pods: bool,
    /// Successful run pods kept per worker when `keepSuccessfulPods` is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub successful_pods_history_limit: Option<i32>,
    /// Failed run pods kept per worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub failed_pods_history_limit: Option<i32>,
    /// Registry hosts that run images may come from (e.g. `ghcr.io`, `*.example.com`,
    /// `docker.io`). Empty: any registry. Docker Hub short names such as `alpine`
    /// count as `docker.io`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_runner_image_hosts: Vec<String>,
    /// Allow ephemeral containers (`kubectl debug`) in this pool's run pods. Default
    /// false: they are denied. When allowed they are held to the same image-host and
    /// privilege policy as any container of the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_ephemeral_containers: bool,
    /// Maximum duration of a run (e.g. `2h`); the run fails when exceeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub run_timeout: Option<String>,
    /// The run fails when its worker container prints nothing for this long (e.g. `30m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub logs_timeout: Option<String>,
    /// A claimed run whose pod has not started this long after the claim fails, with
    /// the pod's reason (default `5m`). Waiting reasons that never resolve
    /// (`InvalidImageName`, `CreateContainerConfigError`, `ErrImageNeverPull`, repeated
    /// pull failures: `ImagePullBackOff`) fail the run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub pending_timeout: Option<String>,
    /// A running run whose launcher has not been ready (its heartbeat) for this long
    /// is failed as lost (default `2m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub heartbeat_timeout: Option<String>,
    /// How much of the end of a finished run's worker log is kept with its result, in
    /// bytes (default 65536; 0 keeps none), so `runyard logs` shows it after the pod is
    /// gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 262144))]
    pub log_tail_bytes: Option<i64>,
    /// Images (repositories, e.g. `docker.io/istio/proxyv2`, or prefixes ending in
    /// `/*`) that containers added to run pods by other admission webhooks may use
    /// although their registry is not in `allowedRunnerImageHosts` (service-mesh
    /// proxies, secrets agents). A run's own container with such an image is allowed
    /// too: the pool allows the image, not the host. Containers with these images
    /// are not workers: runyard leaves them as they are (the privilege policy still
    /// applies) and does not wait for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_sidecar_images: Vec<String>,
    /// Settings applied to every run pod of this pool by the admission webhook.
    #[serde(default)]
    pub pod: PoolPodSpec,
    /// Size limits on this pool's runs: each has a default, and the schema caps
    /// how far a pool may raise it (so one review's memory stays bounded).
    #[serde(default, skip_serializing_if = "RunLimits::is_default")]
    pub limits: RunLimits,
}

/// Size limits on a pool's runs. Unset fields take the defaults
/// ([`RunLimits::containers`] etc. return the value in force).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunLimits {
    /// The run's own containers (and ephemeral containers) per run object
    /// (default 64; what runyard and the pool inject does not count).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 250))]
    pub containers: Option<u32>,
    /// Init containers per run object, before injection (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 250))]
    pub init_containers: Option<u32>,
    /// The run's own environment variables over all its containers (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 5000))]
    pub env_entries: Option<u32>,
    /// Volumes per run object, before injection (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub volumes: Option<u32>,
    /// Bytes `launcher init` unpacks from the source tarball (default 2 GiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub source_bytes: Option<u64>,
    /// Files and directories `launcher init` unpacks from the source tarball
    /// (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub source_entries: Option<u64>,
}

/// Default [`RunLimits::containers`].
pub const DEFAULT_MAX_CONTAINERS: u32 = 64;
/// Default [`RunLimits::init_containers`].
pub const DEFAULT_MAX_INIT_CONTAINERS: u32 = 64;
/// Default [`RunLimits::env_entries`].
pub const DEFAULT_MAX_ENV_ENTRIES: u32 = 1024;
/// Default [`RunLimits::volumes`].
pub const DEFAULT_MAX_VOLUMES: u32 = 256;

/// The most any pool may allow (the CRD schema's maxima), counted on what the
/// run itself brings.
pub const HARD_LIMITS: RunLimits = RunLimits {
    containers: Some(250),
    init_containers: Some(250),
    env_entries: Some(5000),
    volumes: Some(1000),
    source_bytes: None,
    source_entries: None,
};

impl RunLimits {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
    fn capped(value: Option<u32>, default: u32, hard: Option<u32>) -> u32 {
        let v = value.unwrap_or(default);
        hard.map_or(v, |h| v.min(h))
    }
    /// Containers in force.
    pub fn containers(&self) -> u32 {
        Self::capped(
            self.containers,
            DEFAULT_MAX_CONTAINERS,
            HARD_LIMITS.containers,
        )
    }
    /// Init containers in force.
    pub fn init_containers(&self) -> u32 {
        Self::capped(
            self.init_containers,
            DEFAULT_MAX_INIT_CONTAINERS,
            HARD_LIMITS.init_containers,
        )
    }
    /// Env entries in force.
    pub fn env_entries(&self) -> u32 {
        Self::capped(
            self.env_entries,
            DEFAULT_MAX_ENV_ENTRIES,
            HARD_LIMITS.env_entries,
        )
    }
    /// Volumes in force.
    pub fn volumes(&self) -> u32 {
        Self::capped(self.volumes, DEFAULT_MAX_VOLUMES, HARD_LIMITS.volumes)
    }
}

fn default_pool_size() -> i32 {
    1
}

impl WorkerPoolSpec {
    /// The checks the CRD schema makes in the cluster, for pools read from files.
    pub fn validate(&self) -> Result<(), String> {
        if self.pool_size < 0 {
            return Err(format!(
                "spec.poolSize must be >= 0, got {}",
                self.pool_size
            ));
        }
        for (name, value) in [
            (
                "spec.successfulPodsHistoryLimit",
                self.successful_pods_history_limit,
            ),
            (
                "spec.failedPodsHistoryLimit",
                self.failed_pods_history_limit,
            ),
        ] {
            if value.is_some_and(|v| v < 0) {
                return Err(format!("{name} must be >= 0"));
            }
        }
        for (name, value) in [
            ("spec.runTimeout", &self.run_timeout),
            ("spec.logsTimeout", &self.logs_timeout),
            ("spec.pendingTimeout", &self.pending_timeout),
            ("spec.heartbeatTimeout", &self.heartbeat_timeout),
        ] {
            if let Some(v) = value {
                crate::duration::parse(v).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        Ok(())
    }
}

impl Default for WorkerPoolSpec {
    fn default() -> Self {
        Self {
            pool_size: default_pool_size(),
            keep_successful_pods: false,
            successful_pods_history_limit: None,
            failed_pods_history_limit: None,
            allowed_runner_image_hosts: Vec::new(),
            allow_ephemeral_containers: false,
            run_timeout: None,
            logs_timeout: None,
            pending_timeout: None,
            heartbeat_timeout: None,
            log_tail_bytes: None,
            allowed_sidecar_images: Vec::new(),
            pod: PoolPodSpec::default(),
            limits: RunLimits::default(),
        }
    }
}

/// Default `pendingTimeout`.
pub const DEFAULT_PENDING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// Default `heartbeatTimeout`.
pub const DEFAULT_HEARTBEAT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Default `logTailBytes`.
pub const DEFAULT_LOG_TAIL_BYTES: i64 = 64 * 1024;

impl WorkerPoolSpec {
    fn duration_or(v: &Option<String>, default: std::time::Duration) -> std::time::Duration {
        v.as_deref()
            .and_then(|s| crate::duration::parse(s).ok())
            .unwrap_or(default)
    }

    /// The effective `pendingTimeout`.
    pub fn pending_timeout(&self) -> std::time::Duration {
        Self::duration_or(&self.pending_timeout, DEFAULT_PENDING_TIMEOUT)
    }

    /// The effective `heartbeatTimeout`.
    pub fn heartbeat_timeout(&self) -> std::time::Duration {
        Self::duration_or(&self.heartbeat_timeout, DEFAULT_HEARTBEAT_TIMEOUT)
    }

    /// The effective `logTailBytes`.
    pub fn log_tail_bytes(&self) -> usize {
        usize::try_from(self.log_tail_bytes.unwrap_or(DEFAULT_LOG_TAIL_BYTES).max(0)).unwrap_or(0)
    }
}

/// Default `activeDeadlineSeconds` of run pods.
pub const DEFAULT_ACTIVE_DEADLINE_SECONDS: i64 = 4200;

/// Pod-level settings a pool applies to its run pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolPodSpec {
    /// Upper bound for the run pod's `activeDeadlineSeconds` (default 4200). A smaller
    /// value set on the pod is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub active_deadline_seconds: Option<i64>,
    /// `terminationGracePeriodSeconds` of run pods; also how long `runyard cancel` waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
    /// Extra volumes added to every run pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Source of the `workspace` volume (its name is always `workspace`); default emptyDir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_volume: Option<Volume>,
    /// Source of the `binaries-cache` volume (its name is always `binaries-cache`);
    /// default emptyDir. A ReadWriteMany claim shares downloaded tools between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binaries_cache_volume: Option<Volume>,
    /// Service account of run pods (replaces `default`, never a name the run set itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// `automountServiceAccountToken` of run pods, where the run did not set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Pod security context. Fields set here replace runyard's defaults (UID/GID 1983,
    /// fsGroup 1983, runAsNonRoot, RuntimeDefault seccomp); e.g. OpenShift pools set
    /// another UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Allow runs of this pool (and the pool's own containers) what Pod Security
    /// `baseline` forbids (privileged containers, privilege escalation, added
    /// capabilities, host namespaces, ports and paths, SELinux types, unconfined
    /// profiles, procMount, unsafe sysctls) and root's user or group. Default
    /// false: such runs are denied.
    #[serde(default)]
    pub allow_privileged: bool,
    /// Image pull secrets added to run pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Node selector entries added to run pods (the run's own entries win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Affinity of run pods that set none themselves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations added to run pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Labels added to run pods (the run's own labels win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to run pods (the run's own annotations win).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Directory put on the worker's PATH before `/opt/runyard/binaries`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_binaries_path: Option<String>,
    /// Init containers that run before runyard's `init` container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom_init_containers: Vec<Container>,
    /// Image of the `init` and `launcher` containers (default: runyard's own image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_image: Option<String>,
    /// Settings of the injected `init` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_container: Option<ContainerSettings>,
    /// Settings of the injected `launcher` sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launcher_container: Option<ContainerSettings>,
    /// Settings applied to the run's own (worker) containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_container: Option<ContainerSettings>,
    /// Extra sidecar containers added to every run pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub additional_sidecar_containers: Vec<Container>,
}

/// Settings for one class of container in run pods.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSettings {
    /// Environment variables added (runyard's own `RUNYARD_*` variables cannot be replaced).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Environment sources added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,
    /// Volume mounts added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
    /// Resources used where the container sets none (default requests: cpu 500m,
    /// memory 200Mi).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Security context fields; for the worker container, used where the run set none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
}

/// Observed state of a pool.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPoolStatus {
    /// Workers registered for this pool.
    #[serde(default)]
    pub actual_pool_size: i32,
    /// Workers waiting for a run.
    #[serde(default)]
    pub idle_workers: i32,
    /// Workers executing a run.
    #[serde(default)]
    pub busy_workers: i32,
    /// Runs waiting for a worker.
    #[serde(default)]
    pub queued_runs: i32,
    /// Standard conditions (`Ready`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One worker of a pool: processes one run at a time. A worker has no pod while idle.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "workers.runyard.dev",
    version = "v1alpha1",
    kind = "Worker",
    namespaced,
    shortname = "wk",
    category = "runyard",
    status = "WorkerStatus",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.pool"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Run", type_ = "string", json_path = ".status.currentRun"),
    printcolumn(name = "Runs", type_ = "integer", json_path = ".status.runsCompleted"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct WorkerSpec {
    /// Name of the owning `WorkerPool`.
    pub pool: String,
}

/// Phase of a worker.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub enum WorkerPhase {
    /// Waiting for a run.
    #[default]
    Idle,
    /// Executing `currentRun`.
    Busy,
    /// Removed from the pool; deleted once its current run ends.
    Draining,
}

/// Observed state of a worker.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// Idle, Busy or Draining.
    #[serde(default)]
    pub phase: WorkerPhase,
    /// The run this worker executes: `<kind>/<name>` of the Job or Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<String>,
    /// When the worker was registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<Time>,
    /// Last sign of life of the worker's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Runs this worker has finished.
    #[serde(default)]
    pub runs_completed: i64,
}

/// The CRDs, in install order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut pool = WorkerPool::crd();
    for version in &mut pool.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            slim_schema(schema);
        }
    }
    let mut crds = vec![pool, Worker::crd()];
    for crd in &mut crds {
        // Helm must not delete the CRDs (and with them every pool) on uninstall.
        crd.metadata.annotations = Some(BTreeMap::from([(
            "helm.sh/resource-policy".to_string(),
            "keep".to_string(),
        )]));
    }
    crds
}

/// A runyard struct inside the WorkerPool schema: its property name and which
/// of its properties are runyard structs too. Everything else is a core type.
struct OwnStruct {
    name: &'static str,
    children: &'static [OwnStruct],
}

const fn leaf(name: &'static str) -> OwnStruct {
    OwnStruct {
        name,
        children: &[],
    }
}

const POOL_OWN_STRUCTS: &[OwnStruct] = &[
    OwnStruct {
        name: "spec",
        children: &[OwnStruct {
            name: "pod",
            children: &[
                leaf("initContainer"),
                leaf("launcherContainer"),
                leaf("workerContainer"),
            ],
        }],
    },
    leaf("status"),
];

/// Removes the upstream descriptions *inside* embedded core types (Container,
/// Volume, Affinity, ...), keeping every schema node, type and validation and
/// runyard's own field descriptions. Without this the WorkerPool CRD is ~700 KB,
/// beyond what client-side `kubectl apply` can store in its annotation.
fn slim_schema(node: &mut JSONSchemaProps) {
    slim_own(node, POOL_OWN_STRUCTS);
}

fn slim_own(node: &mut JSONSchemaProps, own: &[OwnStruct]) {
    let Some(props) = node.properties.as_mut() else {
        return;
    };
    for (name, child) in props.iter_mut() {
        match own.iter().find(|o| o.name == name) {
            Some(o) => slim_own(child, o.children),
            None => strip_below(child),
        }
    }
}

/// Drops `description` from every node below `node` (keeping `node`'s own).
fn strip_below(node: &mut JSONSchemaProps) {
    fn strip(node: &mut JSONSchemaProps) {
        node.description = None;
        strip_below(node);
    }
    if let Some(props) = node.properties.as_mut() {
        props.values_mut().for_each(strip);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = node.items.as_mut() {
        strip(items);
    }
    if let Some(JSONSchemaPropsOrArray::Schemas(items)) = node.items.as_mut() {
        items.iter_mut().for_each(strip);
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = node.additional_properties.as_mut() {
        strip(extra);
    }
}

/// The CRDs as multi-document YAML, exactly as `runyard crd` prints them.
pub fn crds_yaml() -> Result<String, serde_norway::Error> {
    let mut out = String::from("# Generated by `runyard crd`; do not edit.\n");
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_norway::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::Resource;

    #[test]
    fn pool_defaults_apply_to_an_empty_spec() {
        let spec: WorkerPoolSpec = serde_json::from_str("{}").expect("empty spec parses");
        assert_eq!(spec.pool_size, 1);
        assert!(!spec.keep_successful_pods);
        assert!(!spec.pod.allow_privileged);
    }

    #[test]
    fn crd_has_scale_status_and_short_name() {
        assert_eq!(WorkerPool::group(&()), GROUP);
        assert_eq!(Worker::group(&()), GROUP);
        let crd = WorkerPool::crd();
        assert_eq!(crd.spec.names.short_names, Some(vec!["wp".to_string()]));
        let version = &crd.spec.versions[0];
        let sub = version.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale subresource");
        assert_eq!(scale.spec_replicas_path, ".spec.poolSize");
        assert_eq!(scale.status_replicas_path, ".status.actualPoolSize");
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.clone())
            .collect();
        for want in [
            "Desired Pool Size",
            "Actual Pool Size",
            "Idle",
            "Queued",
            "Age",
        ] {
            assert!(columns.iter().any(|c| c == want), "missing column {want}");
        }
    }
}
