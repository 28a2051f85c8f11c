//! The injection engine: a pure function of (run object, its pool, cluster
//! facts) to (mutated object, JSON Patch). The webhook, `runyard inject` and the
//! tests all go through [`Injector`].

pub mod patch;
pub mod pod;
pub mod policy;

use crate::crd::WorkerPool;
use json_patch::Patch;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use std::sync::Arc;

/// Label that makes a Job or Pod a run of the named pool.
pub const LABEL_POOL: &str = "runyard.dev/pool";
/// Label carrying the run id (a ULID), on the Job, its pod template and its pods.
pub const LABEL_RUN_ID: &str = "runyard.dev/run-id";
/// Label set by the controller's claim: the worker executing the run.
pub const LABEL_WORKER: &str = "runyard.dev/worker";
/// Annotation marking an injected pod or pod template.
pub const ANNOTATION_INJECTED: &str = "runyard.dev/injected";
/// Annotation ordering a pool's queue: integer, higher first, default 0.
pub const ANNOTATION_PRIORITY: &str = "runyard.dev/priority";
/// Scheduling gate that holds a bare run Pod until it is claimed.
pub const SCHEDULING_GATE: &str = "runyard.dev/claim";

/// UID and GID of run pods unless the pool sets others.
pub const RUNYARD_UID: i64 = 1983;
/// Where the workspace volume is mounted.
pub const WORKSPACE_PATH: &str = "/opt/runyard/workspace";
/// Where the binaries-cache volume is mounted.
pub const BINARIES_CACHE_PATH: &str = "/opt/runyard/binaries_cache";
/// Per-run directory of tool binaries, first on the worker's PATH.
pub const BINARIES_PATH: &str = "/opt/runyard/binaries";
/// Sub-path of the workspace volume mounted at [`BINARIES_PATH`].
pub const BINARIES_SUBPATH: &str = ".runyard/binaries";
/// Name of the injected init container.
pub const INIT_CONTAINER: &str = "init";
/// Name of the injected launcher sidecar.
pub const LAUNCHER_CONTAINER: &str = "launcher";
/// Name of the workspace volume.
pub const WORKSPACE_VOLUME: &str = "workspace";
/// Name of the binaries-cache volume.
pub const BINARIES_CACHE_VOLUME: &str = "binaries-cache";
/// Launcher image used when the pool sets none.
pub const DEFAULT_LAUNCHER_IMAGE: &str =
    concat!("ghcr.io/runyard/runyard:v", env!("CARGO_PKG_VERSION"));
/// PATH after runyard's directories; the image's own PATH cannot be referenced
/// from a pod spec, so this is the conventional Linux default.
pub const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why a run is denied. The message is shown to the user by `kubectl`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("runyard: pool {pool:?} does not exist in namespace {namespace:?}; create the WorkerPool or fix the {LABEL_POOL} label")]
    PoolNotFound { pool: String, namespace: String },
    #[error("runyard: image {image:?} of container {container:?} comes from registry {host:?}, which pool {pool:?} does not allow (allowedRunnerImageHosts: {allowed})")]
    ImageHostNotAllowed {
        container: String,
        image: String,
        host: String,
        pool: String,
        allowed: String,
    },
    #[error(
        "runyard: {what}; pool {pool:?} does not allow privileged runs (spec.pod.allowPrivileged)"
    )]
    PrivilegeNotAllowed { what: String, pool: String },
    #[error(
        "runyard: the run already has a {kind} named {name:?}, which runyard injects; rename it"
    )]
    NameCollision { kind: &'static str, name: String },
    #[error("runyard: container {container:?} already mounts something at {path}, where runyard mounts its {volume} volume")]
    MountCollision {
        container: String,
        path: String,
        volume: String,
    },
    #[error(
        "runyard: the Job is labeled {LABEL_POOL}={job:?} but its pod template says {template:?}"
    )]
    PoolLabelMismatch { job: String, template: String },
    #[error("runyard: invalid run: {0}")]
    Invalid(String),
}

impl InjectError {
    /// A stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::PoolNotFound { .. } => "pool_not_found",
            Self::ImageHostNotAllowed { .. } => "image_host_not_allowed",
            Self::PrivilegeNotAllowed { .. } => "privilege_not_allowed",
            Self::NameCollision { .. } | Self::MountCollision { .. } => "name_collision",
            Self::PoolLabelMismatch { .. } => "pool_label_mismatch",
            Self::Invalid(_) => "invalid",
        }
    }
}

/// How the launcher sidecar is injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum SidecarMode {
    /// An init container with `restartPolicy: Always` (Kubernetes 1.29+).
    Native,
    /// A regular container that exits when the worker containers exit.
    Container,
}

/// Oldest Kubernetes minor version runyard supports (Job suspend, scheduling
/// gates, mutable pod-template labels on suspended Jobs).
pub const MIN_MINOR: u32 = 27;
/// First minor version with native sidecars on by default.
pub const NATIVE_SIDECAR_MINOR: u32 = 29;

/// What the engine needs to know about the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterFacts {
    pub sidecar_mode: SidecarMode,
}

/// The API server is older than runyard supports.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Kubernetes {major}.{minor} is not supported: runyard needs 1.{MIN_MINOR} or newer (Job suspend, pod scheduling gates)")]
pub struct UnsupportedVersion {
    pub major: String,
    pub minor: String,
}

impl ClusterFacts {
    /// Facts for an API server reporting `major`/`minor` (e.g. `1`, `29+` on GKE).
    pub fn for_version(major: &str, minor: &str) -> Result<Self, UnsupportedVersion> {
        let digits = |s: &str| -> Option<u32> {
            let d: String = s.chars().take_while(char::is_ascii_digit).collect();
            d.parse().ok()
        };
        let unsupported = || UnsupportedVersion {
            major: major.to_string(),
            minor: minor.to_string(),
        };
        let (maj, min) = (
            digits(major).ok_or_else(unsupported)?,
            digits(minor).ok_or_else(unsupported)?,
        );
        if maj != 1 || min < MIN_MINOR {
            return Err(unsupported());
        }
        let sidecar_mode = if min >= NATIVE_SIDECAR_MINOR {
            SidecarMode::Native
        } else {
            SidecarMode::Container
        };
        Ok(Self { sidecar_mode })
    }

    /// Parses `1.29` or `v1.29.3`.
    pub fn for_version_string(version: &str) -> Result<Self, UnsupportedVersion> {
        let v = version.trim().trim_start_matches('v');
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or_default();
        let minor = parts.next().unwrap_or_default();
        Self::for_version(major, minor)
    }
}

impl Default for ClusterFacts {
    fn default() -> Self {
        Self {
            sidecar_mode: SidecarMode::Native,
        }
    }
}

/// Where pools come from: a kube-rs reflector store, or static definitions.
pub trait PoolSource: Send + Sync {
    fn pool(&self, namespace: &str, name: &str) -> Option<Arc<WorkerPool>>;
}

/// Result of running the engine on one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<T> {
    /// The object carries no `runyard.dev/pool` label: never touched.
    NotARun,
    /// A run that needs no change (already injected, or an update).
    Unchanged,
    /// The mutated object and the patch that produces it from the original.
    Mutated { object: Box<T>, patch: Patch },
}

/// Default CPU request of every container that sets none.
pub const DEFAULT_CPU_REQUEST: &str = "500m";
/// Default memory request of every container that sets none.
pub const DEFAULT_MEMORY_REQUEST: &str = "200Mi";

/// Install-wide defaults a pool can override.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineDefaults {
    /// Image of the injected `init` and `launcher` containers.
    pub launcher_image: String,
    /// Requests of containers that set none.
    pub requests:
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

impl Default for EngineDefaults {
    fn default() -> Self {
        Self::new(
            DEFAULT_LAUNCHER_IMAGE,
            DEFAULT_CPU_REQUEST,
            DEFAULT_MEMORY_REQUEST,
        )
    }
}

impl EngineDefaults {
    pub fn new(launcher_image: &str, cpu: &str, memory: &str) -> Self {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        Self {
            launcher_image: launcher_image.to_string(),
            requests: [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        }
    }
}

/// The injection engine, configured with the cluster's facts and a run-id source.
pub struct Injector {
    pub facts: ClusterFacts,
    pub defaults: EngineDefaults,
    new_run_id: Box<dyn Fn() -> String + Send + Sync>,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("facts", &self.facts)
            .finish()
    }
}

impl Injector {
    /// An engine that stamps fresh ULIDs on new runs.
    pub fn new(facts: ClusterFacts) -> Self {
        Self::with_run_ids(facts, || ulid::Ulid::new().to_string().to_ascii_lowercase())
    }

    /// An engine with a chosen run-id source (tests, golden files).
    pub fn with_run_ids(
        facts: ClusterFacts,
        new_run_id: impl Fn() -> String + Send + Sync + 'static,
    ) -> Self {
        Self {
            facts,
            defaults: EngineDefaults::default(),
            new_run_id: Box::new(new_run_id),
        }
    }

    /// The same engine with other install-wide defaults.
    pub fn with_defaults(mut self, defaults: EngineDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    /// Mutates a Job at CREATE: queue it (suspend), stamp the run id, and inject
    /// its pod template exactly as its pods will run.
    pub fn mutate_job(
        &self,
        job: &Job,
        namespace: &str,
        pools: &dyn PoolSource,
    ) -> Result<Outcome<Job>, InjectError> {
        self.mutate_job_owned(job.clone(), namespace, pools)
    }

    /// [`Self::mutate_job`] taking the object by value (one copy fewer).
    pub fn mutate_job_owned(
        &self,
        job: Job,
        namespace: &str,
        pools: &dyn PoolSource,
    ) -> Result<Outcome<Job>, InjectError> {
        let Some(pool_name) = label(&job.metadata, LABEL_POOL).map(str::to_string) else {
            return Ok(Outcome::NotARun);
        };
        let pool = pools
            .pool(namespace, &pool_name)
            .ok_or_else(|| InjectError::PoolNotFound {
                pool: pool_name.clone(),
                namespace: namespace.to_string(),
            })?;
        let mut new = job.clone();
        let spec = new
            .spec
            .as_mut()
            .ok_or_else(|| InjectError::Invalid("the Job has no spec".into()))?;
        let template_meta = spec.template.metadata.get_or_insert_with(Default::default);
        if let Some(t) = label(template_meta, LABEL_POOL) {
            if t != pool_name {
                return Err(InjectError::PoolLabelMismatch {
                    job: pool_name,
                    template: t.to_string(),
                });
            }
        }
        let run_id = label(&job.metadata, LABEL_RUN_ID)
            .or_else(|| label(template_meta, LABEL_RUN_ID))
            .map(str::to_string)
            .unwrap_or_else(|| (self.new_run_id)());
        let claimed = label(&job.metadata, LABEL_WORKER).is_some()
            || label(template_meta, LABEL_WORKER).is_some();
        if !claimed {
            spec.suspend = Some(true);
        }
        set_label(template_meta, LABEL_POOL, &pool_name);
        set_label(template_meta, LABEL_RUN_ID, &run_id);
        let pod_spec = spec
            .template
            .spec
            .as_mut()
            .ok_or_else(|| InjectError::Invalid("the Job's pod template has no spec".into()))?;
        let ctx = pod::PodContext {
            pool_name: &pool_name,
            pool: &pool.spec,
            run_id: &run_id,
            facts: self.facts,
            gate: false,
            defaults: &self.defaults,
        };
        pod::inject(template_meta, pod_spec, &ctx)?;
        set_label(&mut new.metadata, LABEL_RUN_ID, &run_id);
        finish(job, new, patch::diff_job)
    }

    /// Mutates a Pod at CREATE. Pods from an injected template pass through
    /// unchanged (after the pool's policy is checked); any other run pod is
    /// injected, and a bare one (not owned by a Job) is gated until claimed.
    pub fn mutate_pod(
        &self,
        pod: &Pod,
        namespace: &str,
        pools: &dyn PoolSource,
    ) -> Result<Outcome<Pod>, InjectError> {
        self.mutate_pod_owned(pod.clone(), namespace, pools)
    }

    /// [`Self::mutate_pod`] taking the object by value (one copy fewer).
    pub fn mutate_pod_owned(
        &self,
        pod: Pod,
        namespace: &str,
        pools: &dyn PoolSource,
    ) -> Result<Outcome<Pod>, InjectError> {
        let Some(pool_name) = label(&pod.metadata, LABEL_POOL).map(str::to_string) else {
            return Ok(Outcome::NotARun);
        };
        let pool = pools
            .pool(namespace, &pool_name)
            .ok_or_else(|| InjectError::PoolNotFound {
                pool: pool_name.clone(),
                namespace: namespace.to_string(),
            })?;
        let spec = pod
            .spec
            .as_ref()
            .ok_or_else(|| InjectError::Invalid("the Pod has no spec".into()))?;
        if is_injected(&pod.metadata) {
            pod::check_policy(&pool_name, &pool.spec, spec, &self.defaults)?;
            return Ok(Outcome::Unchanged);
        }
        let mut new = pod.clone();
        let run_id = label(&pod.metadata, LABEL_RUN_ID)
            .map(str::to_string)
            .unwrap_or_else(|| (self.new_run_id)());
        let owned_by_job = pod.metadata.owner_references.iter().flatten().any(|o| {
            o.controller == Some(true) && o.kind == "Job" && o.api_version.starts_with("batch/")
        });
        let claimed = label(&pod.metadata, LABEL_WORKER).is_some();
        let ctx = pod::PodContext {
            pool_name: &pool_name,
            pool: &pool.spec,
            run_id: &run_id,
            facts: self.facts,
            gate: !owned_by_job && !claimed,
            defaults: &self.defaults,
        };
        let spec = new.spec.get_or_insert_with(Default::default);
        set_label(&mut new.metadata, LABEL_RUN_ID, &run_id);
        pod::inject(&mut new.metadata, spec, &ctx)?;
        finish(pod, new, patch::diff_pod)
    }
}

fn finish<T: PartialEq>(
    old: T,
    mut new: T,
    diff: fn(T, &mut T) -> Result<Patch, patch::SerError>,
) -> Result<Outcome<T>, InjectError> {
    if old == new {
        return Ok(Outcome::Unchanged);
    }
    let patch =
        diff(old, &mut new).map_err(|e| InjectError::Invalid(format!("serialising: {e}")))?;
    if patch.0.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    Ok(Outcome::Mutated {
        object: Box::new(new),
        patch,
    })
}

/// Whether the object's metadata carries the injection marker.
pub fn is_injected(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(ANNOTATION_INJECTED))
}

/// A label's value.
pub fn label<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.labels.as_ref()?.get(key).map(String::as_str)
}

fn set_label(meta: &mut ObjectMeta, key: &str, value: &str) {
    let labels = meta.labels.get_or_insert_with(Default::default);
    if labels.get(key).map(String::as_str) != Some(value) {
        labels.insert(key.to_string(), value.to_string());
    }
}

/// Pools defined statically (`--pools FILE`, `runyard inject --pool FILE`), or a
/// built-in default pool for any name.
#[derive(Debug, Clone, Default)]
pub struct StaticPools {
    pools: Vec<Arc<WorkerPool>>,
    default_for_any_name: bool,
}

impl StaticPools {
    /// Exactly these pools. A pool without a namespace matches every namespace.
    pub fn new(pools: Vec<WorkerPool>) -> Self {
        Self {
            pools: pools.into_iter().map(Arc::new).collect(),
            default_for_any_name: false,
        }
    }

    /// A pool with default settings for whatever name a run asks for.
    pub fn default_pool() -> Self {
        Self {
            pools: Vec::new(),
            default_for_any_name: true,
        }
    }
}

impl PoolSource for StaticPools {
    fn pool(&self, namespace: &str, name: &str) -> Option<Arc<WorkerPool>> {
        let found = self.pools.iter().find(|p| {
            p.metadata.name.as_deref() == Some(name)
                && p.metadata
                    .namespace
                    .as_deref()
                    .is_none_or(|ns| ns == namespace)
        });
        if let Some(p) = found {
            return Some(p.clone());
        }
        self.default_for_any_name.then(|| {
            let mut pool = WorkerPool::new(name, Default::default());
            pool.metadata.namespace = Some(namespace.to_string());
            Arc::new(pool)
        })
    }
}

#[cfg(test)]
mod tests;
