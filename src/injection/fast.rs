//! The webhook's fast path for the most common review: a run Pod created
//! for a pool that sets nothing on its pods beyond runyard's own containers
//! and volumes, on a cluster with native sidecars.
//!
//! It reads the pod into [`view::PodView`] (only what is needed here,
//! strings borrowed from the body) and writes the patch's operations
//! directly, without the typed Pod, the engine's working copy or the diff of
//! the two. It never decides anything of its own: it answers only for a pod
//! the engine would inject without a denial, and for anything else (any
//! doubt: a denial, a name runyard owns, a field it does not know, a pool
//! setting it does not take) it answers `None` and the engine's full path
//! ([`super::Injector::mutate_boxed`]) decides. What runyard adds (its
//! containers, volumes, env and mounts, the security defaults) is built by
//! the engine's own functions. A property test holds the two paths to the
//! same result: whenever this one answers, its patch applied to the pod is
//! the engine's injected pod (`injection::tests`).
//!
//! Regex engines are built the same way (a fast engine for the inputs it
//! can take, a general one for the rest, both tested against each other).

use super::limits::{self, Shape};
use super::patch::{JsonPatch, Ops, Pointer, SerError};
use super::pod::{self, PodContext};
use super::view::{ContainerView, PodView};
use super::{bounded, policy, Injector, PoolSource, Requester, SidecarMode};
use crate::crd::{WorkerPoolSpec, DEFAULT_ACTIVE_DEADLINE_SECONDS};
use crate::vocab::{
    env, ANNOTATION_INJECTED, BINARIES_CACHE_PATH, BINARIES_CACHE_VOLUME, BINARIES_PATH,
    INIT_CONTAINER, LABEL_POOL, LABEL_RUN_ID, LAUNCHER_CONTAINER, PODINFO_VOLUME, SCHEDULING_GATE,
    WORKSPACE_PATH, WORKSPACE_VOLUME,
};
use k8s_openapi::api::core::v1::{Container, SecurityContext};
use serde::de::DeserializeSeed;

/// The variables runyard sets on every container it manages.
const RUNYARD_ENV: [&str; 6] = [
    env::RUN_ID,
    env::POOL,
    env::WORKSPACE,
    env::WORKER,
    env::NAMESPACE,
    env::POD_NAME,
];

/// The patch of a run Pod CREATE whose object is `raw`, when the fast path
/// takes it; `None`: the engine's full path decides (see the module doc).
pub(crate) fn pod_create(
    injector: &Injector,
    raw: &str,
    request_namespace: Option<&str>,
    pools: &dyn PoolSource,
    requester: Requester,
) -> Option<JsonPatch> {
    let mut d = serde_json::Deserializer::from_str(raw);
    let view: PodView<'_> = bounded::seed("Pod").deserialize(&mut d).ok()?;
    d.end().ok()?;
    inject(injector, &view, request_namespace, pools, requester)
}

/// Whether a pool sets nothing that the fast path does not build: settings
/// that change the run's own containers or pod fields, pool containers,
/// privileged runs, foreign sidecars.
fn pool_taken(pool: &WorkerPoolSpec) -> bool {
    let p = &pool.pod;
    !p.allow_privileged
        && pool.allowed_sidecar_images.is_empty()
        && p.custom_init_containers.is_empty()
        && p.additional_sidecar_containers.is_empty()
        && p.worker_container.is_none()
        && p.security_context.is_none()
        && p.labels.is_empty()
        && p.annotations.is_empty()
        && p.node_selector.is_empty()
        && p.affinity.is_none()
        && p.tolerations.is_empty()
        && p.service_account_name.is_none()
        && p.automount_service_account_token.is_none()
        && p.image_pull_secrets.is_empty()
        && p.termination_grace_period_seconds.is_none()
        && p.volumes.is_empty()
        && p.custom_binaries_path.is_none()
}

/// A label or annotation key that the engine reads or that trust scrubs
/// (runyard's own, but for the pool label) or that the policy reads
/// (AppArmor): the fast path leaves such pods to the engine.
fn key_taken(key: &str) -> bool {
    key == LABEL_POOL
        || !(key.starts_with("runyard.dev/") || key.starts_with(policy::APPARMOR_ANNOTATION_PREFIX))
}

/// The patch of a run Pod CREATE read as `view`, when the fast path takes
/// it; `None`: the engine's full path decides.
pub(crate) fn inject(
    injector: &Injector,
    view: &PodView<'_>,
    request_namespace: Option<&str>,
    pools: &dyn PoolSource,
    requester: Requester,
) -> Option<JsonPatch> {
    if injector.facts.sidecar_mode != SidecarMode::Native {
        return None;
    }
    // Not a v1 Pod by its own word: the typed parse refuses it.
    let says = |field: &Option<limits::Key<'_>>, want: &str| {
        field.as_ref().is_none_or(|v| v.as_str() == want)
    };
    if !says(&view.api_version, "v1") || !says(&view.kind, "Pod") {
        return None;
    }
    let meta = &view.metadata;
    let labels = meta.labels.as_ref()?;
    let pool_name = labels.get(LABEL_POOL)?;
    let namespace = request_namespace
        .filter(|n| !n.is_empty())
        .or(meta.namespace.as_ref().map(|n| n.as_str()))
        .filter(|n| !n.is_empty())?;
    let pool = pools.pool(namespace, pool_name)?;
    let pool = &pool.spec;
    if !pool_taken(pool) {
        return None;
    }
    let annotations = meta.annotations.as_ref();
    let pairs = || {
        labels
            .iter()
            .chain(annotations.into_iter().flat_map(|a| a.iter()))
    };
    if !pairs().all(|(k, _)| key_taken(k)) {
        return None;
    }
    limits::check_metadata_pairs(
        "Pod",
        labels.iter(),
        annotations.into_iter().flat_map(|a| a.iter()),
    )
    .ok()?;
    let from_template = meta.owner_references.iter().flatten().any(|o| {
        o.controller == Some(true)
            && o.kind.as_str() == "Job"
            && o.api_version.as_str().starts_with("batch/")
    });
    if from_template && requester == Requester::User {
        // Denied by the engine (only the Job controller creates those).
        return None;
    }

    let spec = view.spec.as_ref()?;
    if spec.init_containers.as_ref().is_some_and(|i| !i.is_empty())
        || spec.ephemeral_containers.is_some()
    {
        return None;
    }
    let containers = spec.containers.as_deref().unwrap_or_default();
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    // Each worker's security context as the engine hardens it; `None` (the
    // engine's): a container not taken, or one the policy denies.
    let hardened: Vec<SecurityContext> = containers
        .iter()
        .map(|c| worker_taken(c, pool).then(|| worker_security(c)).flatten())
        .collect::<Option<_>>()?;
    for v in volumes {
        let name = v.name.as_str();
        if [WORKSPACE_VOLUME, BINARIES_CACHE_VOLUME, PODINFO_VOLUME].contains(&name)
            || v.host_path.is_some()
        {
            return None;
        }
    }
    let shape = Shape {
        containers: containers.len() as u64,
        init_containers: 0,
        env_entries: containers
            .iter()
            .flat_map(|c| c.env.iter().flatten())
            .filter(|e| e.name.as_str() != "PATH")
            .count() as u64,
        volumes: volumes.len() as u64,
    };
    if !limits::within_pool(&shape, pool) {
        return None;
    }
    let mut pod_sc = spec.security_context.clone().unwrap_or_default();
    pod::pod_security_defaults(&mut pod_sc);
    if policy::pod_escape_of(
        std::iter::empty(),
        [spec.host_network, spec.host_pid, spec.host_ipc],
        Some(&pod_sc),
    )
    .is_some()
    {
        return None;
    }

    let run_id = injector.new_run_id();
    let ctx = PodContext {
        pool_name,
        pool,
        run_id: &run_id,
        facts: injector.facts,
        gate: !from_template,
        defaults: &injector.defaults,
    };
    let runyard_env = pod::runyard_env(&ctx);
    let worker_names: Vec<String> = containers.iter().map(|c| c.name.as_str().into()).collect();
    let mut init = Container::default();
    pod::init_container(&mut init, &ctx, &runyard_env, false).ok()?;
    let mut launcher = Container::default();
    pod::launcher_container(&mut launcher, &ctx, &runyard_env, &worker_names).ok()?;
    let own_volumes = pod::injected_volumes(&ctx);
    if own_volumes.iter().any(|v| v.host_path.is_some()) {
        return None;
    }

    let mut write = || -> Result<JsonPatch, SerError> {
        let mut ops = Ops::default();
        let mut path = Pointer::default();
        path.push_back("metadata");
        path.push_back("labels");
        path.push_back(LABEL_RUN_ID);
        ops.add(&path, &run_id)?;
        path.pop_back();
        path.pop_back();
        path.push_back("annotations");
        if annotations.is_some() {
            path.push_back(ANNOTATION_INJECTED);
            ops.add(&path, "true")?;
        } else {
            let injected: std::collections::BTreeMap<_, _> =
                [(ANNOTATION_INJECTED, "true")].into_iter().collect();
            ops.add(&path, &injected)?;
        }
        let mut path = Pointer::default();
        path.push_back("spec");
        path.push_back("containers");
        let mounts = pod::workspace_mounts(true);
        for (i, (c, sc)) in containers.iter().zip(&hardened).enumerate() {
            path.push_index(i);
            worker_ops(&mut ops, &mut path, c, sc, &runyard_env, &mounts, &ctx)?;
            path.pop_back();
        }
        path.pop_back();

        path.push_back("initContainers");
        let mut list = Vec::with_capacity(8 * 1024);
        list.push(b'[');
        super::memo::write_container(&mut list, &mut init)?;
        list.push(b',');
        super::memo::write_container(&mut list, &mut launcher)?;
        list.push(b']');
        ops.add_raw(&path, &list)?;
        path.pop_back();

        path.push_back("volumes");
        append(
            &mut ops,
            &mut path,
            spec.volumes.as_ref().map(Vec::len),
            &own_volumes,
        )?;
        path.pop_back();

        path.push_back("securityContext");
        match &spec.security_context {
            None => ops.add(&path, &pod_sc)?,
            Some(sc) => {
                let members = [
                    ("runAsUser", sc.run_as_user.is_none()),
                    ("runAsGroup", sc.run_as_group.is_none()),
                    ("fsGroup", sc.fs_group.is_none()),
                ];
                for (member, unset) in members {
                    if unset {
                        path.push_back(member);
                        ops.add(&path, &crate::vocab::RUNYARD_UID)?;
                        path.pop_back();
                    }
                }
                if sc.run_as_non_root.is_none() {
                    path.push_back("runAsNonRoot");
                    ops.add(&path, &true)?;
                    path.pop_back();
                }
                if sc.seccomp_profile.is_none() {
                    path.push_back("seccompProfile");
                    ops.add(&path, &pod_sc.seccomp_profile)?;
                    path.pop_back();
                }
            }
        }
        path.pop_back();

        let deadline = pool
            .pod
            .active_deadline_seconds
            .unwrap_or(DEFAULT_ACTIVE_DEADLINE_SECONDS);
        path.push_back("activeDeadlineSeconds");
        match spec.active_deadline_seconds {
            None => ops.add(&path, &deadline)?,
            Some(d) if d > deadline => ops.replace(&path, &deadline)?,
            Some(_) => {}
        }
        path.pop_back();

        if ctx.gate {
            let gate = k8s_openapi::api::core::v1::PodSchedulingGate {
                name: SCHEDULING_GATE.to_string(),
            };
            path.push_back("schedulingGates");
            match &spec.scheduling_gates {
                None => ops.add(&path, &[gate])?,
                Some(gates) if !gates.iter().any(|g| g.name.as_str() == SCHEDULING_GATE) => {
                    path.push_index(gates.len());
                    ops.add(&path, &gate)?;
                    path.pop_back();
                }
                Some(_) => {}
            }
            path.pop_back();
        }
        Ok(ops.finish())
    };
    write().ok()
}

/// Whether a run's container is one the fast path injects: a worker (not
/// named as runyard's containers) with an image from an allowed host, none
/// of runyard's variables and nothing mounted where runyard mounts.
fn worker_taken(c: &ContainerView<'_>, pool: &WorkerPoolSpec) -> bool {
    let name = c.name.as_str();
    if name == INIT_CONTAINER || name == LAUNCHER_CONTAINER {
        return false;
    }
    let Some(image) = c
        .image
        .as_ref()
        .map(|i| i.as_str())
        .filter(|i| !i.is_empty())
    else {
        return false;
    };
    if !policy::host_allowed(
        &policy::registry_host(image),
        &pool.allowed_runner_image_hosts,
    ) {
        return false;
    }
    if c.env
        .iter()
        .flatten()
        .any(|e| RUNYARD_ENV.contains(&e.name.as_str()))
    {
        return false;
    }
    !c.volume_mounts.iter().flatten().any(|m| {
        [WORKSPACE_PATH, BINARIES_CACHE_PATH, BINARIES_PATH].contains(&m.mount_path.as_str())
    })
}

/// A worker's security context as the engine hardens it, or `None` where the
/// policy would deny the container (then the engine explains).
fn worker_security(c: &ContainerView<'_>) -> Option<SecurityContext> {
    let mut sc = c.security_context.clone().unwrap_or_default();
    policy::harden(&mut sc);
    let escape = policy::container_escape_of(
        c.name.as_str(),
        c.ports.as_deref().unwrap_or_default(),
        Some(&sc),
    );
    escape.is_none().then_some(sc)
}

/// The operations that prepare a worker (`path` is the container's): what
/// `pod::prepare_worker` does to a container the fast path takes.
fn worker_ops(
    ops: &mut Ops,
    path: &mut Pointer,
    c: &ContainerView<'_>,
    hardened: &SecurityContext,
    runyard_env: &[k8s_openapi::api::core::v1::EnvVar],
    mounts: &[k8s_openapi::api::core::v1::VolumeMount],
    ctx: &PodContext<'_>,
) -> Result<(), SerError> {
    path.push_back("env");
    append(ops, path, c.env.as_ref().map(Vec::len), runyard_env)?;
    path.pop_back();
    path.push_back("volumeMounts");
    append(ops, path, c.volume_mounts.as_ref().map(Vec::len), mounts)?;
    path.pop_back();

    let missing: std::collections::BTreeMap<&str, _> = ctx
        .defaults
        .requests
        .iter()
        .filter(|(k, _)| !c.resources.as_ref().is_some_and(|r| r.has(k)))
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    if !missing.is_empty() {
        path.push_back("resources");
        match &c.resources {
            None => ops.add(path, &Requests { requests: &missing })?,
            Some(r) => {
                path.push_back("requests");
                if r.requests.is_none() {
                    ops.add(path, &missing)?;
                } else {
                    for (k, v) in &missing {
                        path.push_back(k);
                        ops.add(path, v)?;
                        path.pop_back();
                    }
                }
                path.pop_back();
            }
        }
        path.pop_back();
    }

    path.push_back("securityContext");
    match &c.security_context {
        None => ops.add(path, hardened)?,
        Some(old) => {
            let new = hardened;
            if old.allow_privilege_escalation != new.allow_privilege_escalation {
                path.push_back("allowPrivilegeEscalation");
                ops.add(path, &new.allow_privilege_escalation)?;
                path.pop_back();
            }
            let drop = new.capabilities.as_ref().and_then(|c| c.drop.as_ref());
            match &old.capabilities {
                None => {
                    path.push_back("capabilities");
                    ops.add(path, &new.capabilities)?;
                    path.pop_back();
                }
                Some(caps) if caps.drop.as_ref() != drop => {
                    path.push_back("capabilities");
                    path.push_back("drop");
                    ops.add(path, &drop)?;
                    path.pop_back();
                    path.pop_back();
                }
                Some(_) => {}
            }
        }
    }
    path.pop_back();
    Ok(())
}

/// `{"requests": ...}`: a container's resources when it had none.
#[derive(serde::Serialize)]
struct Requests<'a, T: serde::Serialize> {
    requests: &'a T,
}

/// Adds `items` at the end of the list at `path`, which has `len` elements
/// (`None`: no list, or `null`; then the whole list is added).
fn append<T: serde::Serialize>(
    ops: &mut Ops,
    path: &mut Pointer,
    len: Option<usize>,
    items: &[T],
) -> Result<(), SerError> {
    match len {
        None => ops.add(path, items),
        Some(n) => {
            for (i, item) in items.iter().enumerate() {
                path.push_index(n + i);
                ops.add(path, item)?;
                path.pop_back();
            }
            Ok(())
        }
    }
}
