//! The injection engine: a pure function of (run object, its pool, cluster
//! facts) to (mutated object, JSON Patch). The webhook, `runyard inject` and the
//! tests all go through [`Injector`]; Jobs and Pods through one [`RunObject`]
//! trait.
//!
//! Pure: nothing here does I/O or imports the runtime, the cluster API or the
//! servers.

pub mod bounded;
mod fast;
pub(crate) mod json;
pub mod limits;
pub mod manifests;
mod memo;
pub mod patch;
pub mod pod;
pub mod policy;
pub mod pools;
pub mod run;
pub mod trust;
pub mod view;

pub use pools::{load_pool_file, parse_pools, PoolFileError, PoolSource, StaticPools};
pub use run::RunObject;
pub use trust::{Requester, TrustedUsers};

use crate::vocab::{label, LABEL_POOL};
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Launcher image used when the pool sets none.
pub const DEFAULT_LAUNCHER_IMAGE: &str =
    concat!("ghcr.io/runyard/runyard:v", env!("CARGO_PKG_VERSION"));

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
    #[error("runyard: denied {what}: only the runyard controller does this for runs of pool {pool:?} (a run starts when a worker claims it; `runyard status` shows the queue)")]
    ControllerOwned { what: String, pool: String },
    #[error("runyard: ephemeral container {container:?} (kubectl debug) is not allowed: pool {pool:?} does not allow debugging its run pods (spec.allowEphemeralContainers)")]
    EphemeralNotAllowed { container: String, pool: String },
    #[error("runyard: pool {pool:?}: its sidecar {container:?} (spec.pod.additionalSidecarContainers) has no command; on this cluster (sidecar mode container, Kubernetes before 1.29) runyard stops pool sidecars when the workers are done by running their command under its supervisor, so set the sidecar's command (the image's entrypoint)")]
    SidecarWithoutCommand { container: String, pool: String },
    #[error("runyard: the {kind} has {count} {what}; {limit}")]
    TooLarge {
        kind: &'static str,
        what: &'static str,
        count: u64,
        max: u64,
        /// Who sets the limit, and where (`pool "P" allows at most 64 (spec.limits.containers)`).
        limit: String,
    },
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
            Self::ControllerOwned { .. } => "controller_owned",
            Self::EphemeralNotAllowed { .. } => "ephemeral_not_allowed",
            Self::SidecarWithoutCommand { .. } => "sidecar_without_command",
            Self::TooLarge { .. } => "too_large",
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

/// A Kubernetes version that cannot be used: not one at all, or too old.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VersionError {
    #[error("{0:?} is not a Kubernetes version: expected MAJOR.MINOR, e.g. 1.29 (or v1.29.3)")]
    Invalid(String),
    #[error(transparent)]
    Unsupported(#[from] UnsupportedVersion),
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

    /// Parses `1.29` or `v1.29.3` (a provider suffix such as `1.29+` or
    /// `v1.29.3-gke.1` is fine; `banana` or `1` is not).
    pub fn for_version_string(version: &str) -> Result<Self, VersionError> {
        let v = version.trim();
        let v = v.strip_prefix('v').unwrap_or(v);
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or_default();
        let minor = parts.next().unwrap_or_default();
        let numeric = |s: &str| s.chars().next().is_some_and(|c| c.is_ascii_digit());
        if !(numeric(major) && major.chars().all(|c| c.is_ascii_digit()) && numeric(minor)) {
            return Err(VersionError::Invalid(version.to_string()));
        }
        Ok(Self::for_version(major, minor)?)
    }
}

impl Default for ClusterFacts {
    fn default() -> Self {
        Self {
            sidecar_mode: SidecarMode::Native,
        }
    }
}

/// Result of running the engine on one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Mutation<T> {
    /// The object carries no `runyard.dev/pool` label: never touched.
    NotARun,
    /// A run that needs no change (already injected, or an update).
    Unchanged,
    /// The mutated object and the patch that produces it from the original.
    Mutated {
        object: Box<T>,
        patch: patch::JsonPatch,
    },
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
    /// Image given to the run's containers that name none (a Job template
    /// whose container has no `image`); `None`: they are left as they are
    /// (and the API server rejects them).
    pub worker_image: Option<String>,
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
            worker_image: None,
            requests: [("cpu", cpu), ("memory", memory)]
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        }
    }

    /// The same defaults with an image for run containers that name none
    /// (empty: none).
    #[must_use]
    pub fn with_worker_image(mut self, image: Option<&str>) -> Self {
        self.worker_image = image.filter(|i| !i.is_empty()).map(str::to_string);
        self
    }
}

/// The injection engine, configured with the cluster's facts, the identities
/// it trusts and a run-id source.
pub struct Injector {
    pub facts: ClusterFacts,
    pub defaults: EngineDefaults,
    pub trust: TrustedUsers,
    run_ids: Box<dyn Fn() -> String + Send + Sync>,
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
            trust: TrustedUsers::default(),
            run_ids: Box::new(new_run_id),
        }
    }

    /// The same engine trusting other identities.
    pub fn with_trust(mut self, trust: TrustedUsers) -> Self {
        self.trust = trust;
        self
    }

    /// The same engine with other install-wide defaults.
    pub fn with_defaults(mut self, defaults: EngineDefaults) -> Self {
        self.defaults = defaults;
        self
    }

    /// Runs the engine on a run object a user creates (see [`RunObject`] for
    /// what each kind gets).
    pub fn mutate<R: RunObject>(
        &self,
        obj: &R,
        namespace: &str,
        pools: &dyn PoolSource,
    ) -> Result<Mutation<R>, InjectError> {
        self.mutate_as(obj.clone(), namespace, pools, Requester::User)
    }

    /// Runs the engine on a run object at CREATE, sent by `requester`.
    pub fn mutate_as<R: RunObject>(
        &self,
        obj: R,
        namespace: &str,
        pools: &dyn PoolSource,
        requester: Requester,
    ) -> Result<Mutation<R>, InjectError> {
        self.mutate_boxed(Box::new(obj), namespace, pools, requester)
    }

    /// [`Self::mutate_as`] of an object on the heap, where it stays: the
    /// object, its copy and the result are moved as pointers, not copied (a
    /// typed `Pod` is over 2 KB, a `Job` more).
    pub fn mutate_boxed<R: RunObject>(
        &self,
        obj: Box<R>,
        namespace: &str,
        pools: &dyn PoolSource,
        requester: Requester,
    ) -> Result<Mutation<R>, InjectError> {
        let Some(pool_name) = label(obj.meta(), LABEL_POOL).map(str::to_string) else {
            return Ok(Mutation::NotARun);
        };
        let pool = pools
            .pool(namespace, &pool_name)
            .ok_or_else(|| InjectError::PoolNotFound {
                pool: pool_name.clone(),
                namespace: namespace.to_string(),
            })?;
        limits::check_metadata(R::KIND, obj.meta())?;
        if let Some(meta) = obj.template_meta() {
            limits::check_metadata("pod template", meta)?;
        }
        if let Some(spec) = obj.pod_spec() {
            limits::check(R::KIND, spec, &pool_name, &pool.spec)?;
        }
        let run = run::Run {
            engine: self,
            pool_name: &pool_name,
            pool: &pool.spec,
            requester,
        };
        let mut obj = obj;
        let mut new = working_copy(&mut obj);
        new.inject(&run)?;
        finish(obj, new)
    }

    /// Reviews an UPDATE of a run object: allowed (`Ok`) or denied. The
    /// controller may change anything; anyone else may not start a queued run,
    /// move it in the queue or change what runyard injected.
    pub fn review_update<R: RunObject>(
        &self,
        old: &R,
        new: &R,
        namespace: &str,
        pools: &dyn PoolSource,
        requester: Requester,
    ) -> Result<(), InjectError> {
        if requester == Requester::Controller {
            return Ok(());
        }
        let Some(pool_name) =
            label(old.meta(), LABEL_POOL).or_else(|| label(new.meta(), LABEL_POOL))
        else {
            return Ok(());
        };
        let pool = pools.pool(namespace, pool_name);
        R::review_update(old, new, pool_name, pool.as_ref().map(|p| &p.spec))
    }

    /// Reviews ephemeral containers added to a run pod (`pods/ephemeralcontainers`).
    pub fn review_ephemeral(
        &self,
        old: &Pod,
        new: &Pod,
        namespace: &str,
        pools: &dyn PoolSource,
    ) -> Result<Mutation<Pod>, InjectError> {
        let Some(pool_name) =
            label(new.meta(), LABEL_POOL).or_else(|| label(old.meta(), LABEL_POOL))
        else {
            return Ok(Mutation::NotARun);
        };
        let pool = pools
            .pool(namespace, pool_name)
            .ok_or_else(|| InjectError::PoolNotFound {
                pool: pool_name.to_string(),
                namespace: namespace.to_string(),
            })?;
        if let Some(spec) = new.spec.as_ref() {
            limits::check(Pod::KIND, spec, pool_name, &pool.spec)?;
        }
        let hardened = trust::review_ephemeral(old, new, pool_name, &pool.spec)?;
        finish(Box::new(new.clone()), Box::new(hardened))
    }

    /// The patch of a run Pod CREATE (the object's JSON `raw`, the
    /// request's namespace), from the fast path when it takes the pod
    /// (`injection::fast`); `None`: [`Self::mutate_boxed`] of the typed Pod
    /// decides.
    pub fn fast_pod_create(
        &self,
        raw: &str,
        namespace: Option<&str>,
        pools: &dyn PoolSource,
        requester: Requester,
    ) -> Option<patch::JsonPatch> {
        fast::pod_create(self, raw, namespace, pools, requester)
    }

    /// [`Self::fast_pod_create`] of a pod already read as the fast path's
    /// view (by the webhook, where the object stood in the review).
    pub fn fast_pod_view(
        &self,
        view: &view::PodView<'_>,
        namespace: Option<&str>,
        pools: &dyn PoolSource,
        requester: Requester,
    ) -> Option<patch::JsonPatch> {
        fast::inject(self, view, namespace, pools, requester)
    }

    /// A fresh run id.
    fn new_run_id(&self) -> String {
        (self.run_ids)()
    }
}

/// The copy the engine injects (the original is kept for the patch). Its
/// container and volume lists, and each container's env list, are copied
/// with room for what the injection adds, so that adding it does not copy
/// them again (a copy has no spare capacity; an element is hundreds of
/// bytes). Out of line so that profiles show it as its own phase.
#[inline(never)]
fn working_copy<R: RunObject>(obj: &mut Box<R>) -> Box<R> {
    /// Room for runyard's and the pool's containers in a list.
    const CONTAINER_ROOM: usize = 4;
    /// Room for the `RUNYARD_*` variables and a few of the pool's.
    const ENV_ROOM: usize = 8;
    /// Room for runyard's three volumes and one of the pool's.
    const VOLUME_ROOM: usize = 4;
    fn with_room(list: &mut [Container]) -> Vec<Container> {
        let mut copy = Vec::with_capacity(list.len() + CONTAINER_ROOM);
        copy.extend(list.iter_mut().map(|c| {
            let env = c.env.take();
            let mut copy = c.clone();
            copy.env = env.as_ref().map(|env| {
                let mut vars = Vec::with_capacity(env.len() + ENV_ROOM);
                vars.extend_from_slice(env);
                vars
            });
            c.env = env;
            copy
        }));
        copy
    }
    let Some(spec) = obj.pod_spec_mut() else {
        return obj.clone();
    };
    let mut containers = std::mem::take(&mut spec.containers);
    let mut inits = spec.init_containers.take();
    let volumes = spec.volumes.take();
    // Cloned into its own allocation (`Box::clone`), not on the stack first.
    let mut new = obj.clone();
    if let (Some(spec), Some(copy)) = (obj.pod_spec_mut(), new.pod_spec_mut()) {
        copy.containers = with_room(&mut containers);
        copy.init_containers = inits.as_deref_mut().map(with_room);
        copy.volumes = volumes.as_ref().map(|list| {
            let mut copy = Vec::with_capacity(list.len() + VOLUME_ROOM);
            copy.extend_from_slice(list);
            copy
        });
        (spec.containers, spec.init_containers, spec.volumes) = (containers, inits, volumes);
    }
    new
}

/// The patch from `old` to `new` (out of line: the "diff" phase of a profile).
#[inline(never)]
fn finish<R: RunObject>(mut old: Box<R>, mut new: Box<R>) -> Result<Mutation<R>, InjectError> {
    // No whole-object comparison first: the diff compares part by part and
    // serialises only what differs, so an unchanged object costs little more.
    let patch = R::diff(&mut old, &mut new)
        .map_err(|e| InjectError::Invalid(format!("serialising: {e}")))?;
    if patch.is_empty() {
        return Ok(Mutation::Unchanged);
    }
    Ok(Mutation::Mutated { object: new, patch })
}

fn set_label(meta: &mut ObjectMeta, key: &str, value: &str) {
    let labels = meta.labels.get_or_insert_with(Default::default);
    if labels.get(key).map(String::as_str) != Some(value) {
        labels.insert(key.to_string(), value.to_string());
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_fast;
#[cfg(test)]
mod tests_trust;
