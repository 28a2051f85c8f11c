//! Injection of the run environment into a pod spec (a Pod's, or a Job's pod
//! template's). Every step is an upsert keyed by name or path, so a second pass
//! over an injected spec changes nothing.

use super::{policy, ClusterFacts, EngineDefaults, InjectError, SidecarMode};
use crate::crd::{ContainerSettings, WorkerPoolSpec, DEFAULT_ACTIVE_DEADLINE_SECONDS};
use crate::vocab::{
    env as var, is_injected, ANNOTATION_INJECTED, ANNOTATION_TOOLS, BINARIES_CACHE_PATH,
    BINARIES_CACHE_VOLUME, BINARIES_PATH, BINARIES_SUBPATH, EXEC_SHIM_PATH, EXEC_SHIM_PREFIX_ARG,
    INIT_CONTAINER, LABEL_POOL, LABEL_WORKER, LAUNCHER_CONTAINER, PODINFO_PATH, PODINFO_VOLUME,
    RUNYARD_UID, SCHEDULING_GATE, SHIM_UNTIL_ARG, WORKERS_DONE_FILE, WORKSPACE_PATH,
    WORKSPACE_VOLUME,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, DownwardAPIVolumeFile, DownwardAPIVolumeSource, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, ExecAction, ObjectFieldSelector, PodSchedulingGate, PodSecurityContext,
    PodSpec, Probe, ResourceRequirements, SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;

/// Everything the pod injection needs besides the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    pub pool_name: &'a str,
    pub pool: &'a WorkerPoolSpec,
    pub run_id: &'a str,
    pub facts: ClusterFacts,
    /// Add the claim scheduling gate (bare, unclaimed run pods).
    pub gate: bool,
    pub defaults: &'a EngineDefaults,
}

fn launcher_image<'a>(pool: &'a WorkerPoolSpec, defaults: &'a EngineDefaults) -> &'a str {
    pool.pod
        .launcher_image
        .as_deref()
        .unwrap_or(&defaults.launcher_image)
}

fn pool_volume_names(pool: &WorkerPoolSpec) -> Vec<&str> {
    let mut names = vec![WORKSPACE_VOLUME, BINARIES_CACHE_VOLUME, PODINFO_VOLUME];
    names.extend(pool.pod.volumes.iter().map(|v| v.name.as_str()));
    names
}

/// What the injection itself put into the pod: runyard's and the pool's
/// containers and volumes, exactly as produced. Only these are exempt from
/// the run's policy; a run's own container never counts as the pool's because
/// of its name alone.
#[derive(Debug, Default)]
struct Produced {
    containers: Placed<Container>,
    volumes: Placed<Volume>,
}

/// Produced containers or volumes, not copied: each is found, once the
/// injection is done, where it was put — the first of its name in its list
/// (nothing changes one after it is put in; only putting in or removing
/// another of the same name there moves it, and then it is copied first,
/// into `displaced`).
#[derive(Debug, Default)]
struct Placed<T> {
    placed: Vec<(Slot, String)>,
    displaced: Vec<T>,
}

/// A pod spec's container list (volumes have one list: `Main`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Init,
    Main,
}

fn first_named<'l, T: Named>(list: &'l [T], name: &str) -> Option<&'l T> {
    list.iter().find(|x| x.name() == name)
}

impl<T: Named + Clone + PartialEq> Placed<T> {
    /// Before the items named `name` in the `slot` list are replaced or
    /// removed: a produced one there is copied, and the copy stands for it
    /// from then on.
    fn displacing(&mut self, list: &[T], slot: Slot, name: &str) {
        if self.placed.iter().any(|(s, n)| *s == slot && n == name) {
            if let Some(x) = first_named(list, name) {
                self.displaced.push(x.clone());
            }
        }
    }

    /// Puts produced `item` into the `slot` list (see [`upsert_at`]).
    fn upsert(&mut self, list: &mut Vec<T>, slot: Slot, item: T, at: usize) -> usize {
        self.displacing(list, slot, item.name());
        let name = item.name().to_string();
        let i = upsert_at(list, item, at);
        self.placed.push((slot, name));
        i
    }

    /// Puts the produced item named `name`, built by `build` in place, into
    /// the `slot` list (as [`Self::upsert`]). A new item is built where it
    /// goes in the list, not built elsewhere and moved there: a `Container`
    /// is over 2 KB, and each move of one is a copy of all of it.
    fn upsert_with<E>(
        &mut self,
        list: &mut Vec<T>,
        slot: Slot,
        name: &str,
        at: usize,
        build: impl FnOnce(&mut T) -> Result<(), E>,
    ) -> Result<usize, E>
    where
        T: Default,
    {
        self.displacing(list, slot, name);
        let i = match list.iter().position(|x| x.name() == name) {
            Some(i) => {
                let mut item = T::default();
                build(&mut item)?;
                if list[i] != item {
                    list[i] = item;
                }
                i
            }
            None => {
                let at = at.min(list.len());
                list.insert(at, T::default());
                if let Err(e) = build(&mut list[at]) {
                    list.remove(at);
                    return Err(e);
                }
                at
            }
        };
        self.placed.push((slot, name.to_string()));
        Ok(i)
    }

    /// Removes the items named `name` from the `slot` list.
    fn remove(&mut self, list: &mut Vec<T>, slot: Slot, name: &str) {
        self.displacing(list, slot, name);
        list.retain(|x| x.name() != name);
    }

    /// The produced items, as they are in the lists (or were, displaced).
    fn found<'s>(&'s self, list: impl Fn(Slot) -> &'s [T]) -> Vec<&'s T> {
        self.placed
            .iter()
            .filter_map(|(slot, name)| first_named(list(*slot), name))
            .chain(&self.displaced)
            .collect()
    }
}

/// Whether `x` is one of `own` (the same one, or an equal copy).
fn is_own<T: PartialEq>(own: &[&T], x: &T) -> bool {
    own.iter().any(|p| std::ptr::eq(*p, x) || *p == x)
}

/// Checks the pool's policy (image hosts, privilege, host namespaces,
/// hostPath) against the injected pod: every container and volume that is not
/// exactly what the injection produced is the run's own.
fn check_policy(
    pool_name: &str,
    pool: &WorkerPoolSpec,
    meta: &ObjectMeta,
    spec: &PodSpec,
    produced: &Produced,
) -> Result<(), InjectError> {
    let inits = spec.init_containers.as_deref().unwrap_or_default();
    let own = produced.containers.found(|slot| match slot {
        Slot::Init => inits,
        Slot::Main => &spec.containers,
    });
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let own_volumes = produced.volumes.found(|_| volumes);
    let user = || {
        inits
            .iter()
            .chain(&spec.containers)
            .filter(|c| !is_own(&own, *c))
    };
    policy::check_images(
        pool_name,
        &pool.allowed_runner_image_hosts,
        &pool.allowed_sidecar_images,
        user(),
    )?;
    if !pool.pod.allow_privileged {
        policy::check_privilege(pool_name, meta.annotations.as_ref(), spec, user())?;
        let user_volumes = volumes.iter().filter(|v| !is_own(&own_volumes, *v));
        policy::check_volumes(pool_name, user_volumes)?;
        // The pool's own containers need the same opt-in: nothing privileged
        // is ever injected unless the pool says so explicitly.
        let pool_extra = pool
            .pod
            .custom_init_containers
            .iter()
            .chain(&pool.pod.additional_sidecar_containers);
        policy::check_privilege(pool_name, None, &PodSpec::default(), pool_extra)?;
        policy::check_volumes(pool_name, own_volumes.iter().copied())?;
    }
    Ok(())
}

/// Injects the run environment into `meta`/`spec`, then checks the pool's
/// policy on the result.
pub fn inject(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    ctx: &PodContext<'_>,
) -> Result<(), InjectError> {
    let already = is_injected(meta);
    let pool_pod = &ctx.pool.pod;
    // The names runyard owns in each list: containers there with these names
    // are replaced by (or removed for) runyard's own; anything else is a worker.
    let custom_inits = pool_pod
        .custom_init_containers
        .iter()
        .map(|c| c.name.as_str());
    let sidecars = pool_pod
        .additional_sidecar_containers
        .iter()
        .map(|c| c.name.as_str());
    // Pool sidecars are owned in both lists: native sidecars (init
    // containers) or regular containers, depending on the cluster.
    let sidecars: Vec<&str> = sidecars.collect();
    let init_owned: Vec<&str> = custom_inits
        .chain([INIT_CONTAINER, LAUNCHER_CONTAINER])
        .chain(sidecars.iter().copied())
        .collect();
    let main_owned: Vec<&str> = sidecars
        .iter()
        .copied()
        .chain([LAUNCHER_CONTAINER])
        .collect();
    let own_volumes = pool_volume_names(ctx.pool);
    if !already {
        // A clash with runyard's names is an error the user can fix; on an
        // object that says it is injected, runyard's definitions simply win.
        let own_names: Vec<&str> = init_owned.iter().chain(&main_owned).copied().collect();
        check_collisions(spec, &own_names, &own_volumes)?;
    }

    let mut produced = Produced::default();
    inject_volumes(spec, ctx, &mut produced.volumes);

    let env = runyard_env(ctx);
    let native = ctx.facts.sidecar_mode == SidecarMode::Native;

    // Containers with an `allowedSidecarImages` image (what other webhooks
    // add: a mesh proxy, a secrets agent) are not workers: left as they are,
    // not waited for. The policy below still checks them.
    let foreign = |c: &Container| {
        c.image
            .as_deref()
            .is_some_and(|i| policy::sidecar_image_allowed(i, &ctx.pool.allowed_sidecar_images))
    };
    let worker_names: Vec<String> = spec
        .containers
        .iter()
        .filter(|c| !main_owned.contains(&c.name.as_str()) && !foreign(c))
        .map(|c| c.name.clone())
        .collect();
    let path = worker_path(ctx.pool, meta);
    let worker_settings = pool_pod.worker_container.as_ref();
    let workers = spec
        .init_containers
        .iter_mut()
        .flatten()
        .filter(|c| !init_owned.contains(&c.name.as_str()) && !foreign(c))
        .chain(
            spec.containers
                .iter_mut()
                .filter(|c| !main_owned.contains(&c.name.as_str()) && !foreign(c)),
        );
    for c in workers {
        prepare_worker(c, &env, path.as_deref(), worker_settings, ctx.defaults)?;
    }

    // Init containers: customInitContainers, init, launcher (native), then the run's own.
    let inits = spec.init_containers.get_or_insert_with(Vec::new);
    // Room for what goes in (one allocation, no copies of grown lists).
    inits.reserve(
        pool_pod.custom_init_containers.len() + 2 + pool_pod.additional_sidecar_containers.len(),
    );
    let mut pos = 0;
    for custom in &pool_pod.custom_init_containers {
        let mut c = custom.clone();
        prepare_pool_container(&mut c, &env, ctx.defaults)?;
        pos = produced.containers.upsert(inits, Slot::Init, c, pos) + 1;
    }
    let pool_sidecars = !pool_pod.additional_sidecar_containers.is_empty();
    // The shim also supervises pool sidecars in container mode.
    let exec_shim = path.is_some() || (pool_sidecars && !native);
    pos = produced
        .containers
        .upsert_with(inits, Slot::Init, INIT_CONTAINER, pos, |c| {
            init_container(c, ctx, &env, exec_shim)
        })?
        + 1;
    let launcher = |c: &mut Container| launcher_container(c, ctx, &env, &worker_names);
    if native {
        pos = produced.containers.upsert_with(
            inits,
            Slot::Init,
            LAUNCHER_CONTAINER,
            pos,
            launcher,
        )? + 1;
    } else {
        produced
            .containers
            .remove(inits, Slot::Init, LAUNCHER_CONTAINER);
    }

    // Pool sidecars. Native: init containers with `restartPolicy: Always`
    // after the launcher (before the run's own init containers, which may use
    // them): the kubelet stops them when the workers have exited, so the pod
    // (and the Job) completes. Container mode: regular containers after the
    // run's own, their command run under the exec shim's `--until`, which
    // stops them when the launcher writes WORKERS_DONE_FILE.
    for sidecar in &pool_pod.additional_sidecar_containers {
        let mut c = sidecar.clone();
        prepare_pool_container(&mut c, &env, ctx.defaults)?;
        if native {
            c.restart_policy = Some("Always".to_string());
            produced
                .containers
                .remove(&mut spec.containers, Slot::Main, &c.name);
            pos = produced.containers.upsert(inits, Slot::Init, c, pos) + 1;
        } else {
            supervise(&mut c, ctx.pool_name)?;
            produced.containers.remove(inits, Slot::Init, &c.name);
            let end = spec.containers.len();
            produced
                .containers
                .upsert(&mut spec.containers, Slot::Main, c, end);
        }
    }
    if native {
        produced
            .containers
            .remove(&mut spec.containers, Slot::Main, LAUNCHER_CONTAINER);
    } else {
        let end = spec.containers.len();
        produced.containers.upsert_with(
            &mut spec.containers,
            Slot::Main,
            LAUNCHER_CONTAINER,
            end,
            launcher,
        )?;
        spec.share_process_namespace = Some(true);
    }

    inject_pod_fields(meta, spec, ctx)?;
    check_policy(ctx.pool_name, ctx.pool, meta, spec, &produced)
}

/// Runs a pool sidecar's command under the exec shim until the workers are
/// done (container sidecar mode).
fn supervise(c: &mut Container, pool: &str) -> Result<(), InjectError> {
    let command = c
        .command
        .take()
        .filter(|cmd| !cmd.is_empty())
        .ok_or_else(|| InjectError::SidecarWithoutCommand {
            container: c.name.clone(),
            pool: pool.to_string(),
        })?;
    let mut wrapped = vec![
        EXEC_SHIM_PATH.to_string(),
        format!("{SHIM_UNTIL_ARG}{WORKERS_DONE_FILE}"),
        "--".to_string(),
    ];
    wrapped.extend(command);
    c.command = Some(wrapped);
    Ok(())
}

fn check_collisions(
    spec: &PodSpec,
    own_names: &[&str],
    own_volumes: &[&str],
) -> Result<(), InjectError> {
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        if own_names.contains(&c.name.as_str()) {
            return Err(InjectError::NameCollision {
                kind: "container",
                name: c.name.clone(),
            });
        }
    }
    for v in spec.volumes.iter().flatten() {
        if own_volumes.contains(&v.name.as_str()) {
            return Err(InjectError::NameCollision {
                kind: "volume",
                name: v.name.clone(),
            });
        }
    }
    Ok(())
}

/// Runyard's and the pool's volumes, as [`inject_volumes`] adds them to a
/// pod that has none.
pub(super) fn injected_volumes(ctx: &PodContext<'_>) -> Vec<Volume> {
    let mut spec = PodSpec::default();
    inject_volumes(&mut spec, ctx, &mut Placed::default());
    spec.volumes.unwrap_or_default()
}

/// Adds runyard's and the pool's volumes, as `produced`. Runyard's are built
/// where they go in the list (a `Volume` is over 3 KB: no copies of it).
fn inject_volumes(spec: &mut PodSpec, ctx: &PodContext<'_>, produced: &mut Placed<Volume>) {
    let pool_pod = &ctx.pool.pod;
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    volumes.reserve(3 + pool_pod.volumes.len());
    for (name, source) in [
        (WORKSPACE_VOLUME, &pool_pod.workspace_volume),
        (BINARIES_CACHE_VOLUME, &pool_pod.binaries_cache_volume),
    ] {
        let end = volumes.len();
        let Ok(_) = produced.upsert_with(volumes, Slot::Main, name, end, |v| {
            match source {
                Some(source) => v.clone_from(source),
                None => v.empty_dir = Some(EmptyDirVolumeSource::default()),
            }
            v.name = name.to_string();
            Ok::<(), std::convert::Infallible>(())
        });
    }
    let end = volumes.len();
    let Ok(_) = produced.upsert_with(volumes, Slot::Main, PODINFO_VOLUME, end, |v| {
        v.name = PODINFO_VOLUME.to_string();
        v.downward_api = Some(DownwardAPIVolumeSource {
            items: Some(
                [
                    ("annotations", "metadata.annotations"),
                    ("labels", "metadata.labels"),
                ]
                .into_iter()
                .map(|(path, field)| DownwardAPIVolumeFile {
                    path: path.to_string(),
                    field_ref: Some(ObjectFieldSelector {
                        field_path: field.to_string(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
            ),
            ..Default::default()
        });
        Ok::<(), std::convert::Infallible>(())
    });
    for v in pool_pod.volumes.iter().cloned() {
        let end = volumes.len();
        produced.upsert(volumes, Slot::Main, v, end);
    }
}

trait Named {
    fn name(&self) -> &str;
}
impl Named for Container {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for Volume {
    fn name(&self) -> &str {
        &self.name
    }
}
impl Named for EnvVar {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Replaces the item with the same name in place, or inserts it at `at`.
/// Returns the item's index.
fn upsert_at<T: Named + PartialEq>(list: &mut Vec<T>, item: T, at: usize) -> usize {
    match list.iter().position(|x| x.name() == item.name()) {
        Some(i) => {
            if list[i] != item {
                list[i] = item;
            }
            i
        }
        None => {
            let at = at.min(list.len());
            list.insert(at, item);
            at
        }
    }
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: field_path.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn value_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.to_string()),
        ..Default::default()
    }
}

/// The `RUNYARD_*` variables every runyard-managed container gets.
pub(super) fn runyard_env(ctx: &PodContext<'_>) -> Vec<EnvVar> {
    vec![
        value_env(var::RUN_ID, ctx.run_id),
        value_env(var::POOL, ctx.pool_name),
        value_env(var::WORKSPACE, WORKSPACE_PATH),
        field_env(var::WORKER, &format!("metadata.labels['{LABEL_WORKER}']")),
        field_env(var::NAMESPACE, "metadata.namespace"),
        field_env(var::POD_NAME, "metadata.name"),
    ]
}

/// The directories to put first on the workers' PATH: the pool's
/// `customBinariesPath`, then [`BINARIES_PATH`]; `None` when the run has
/// nothing there (no tools in `runyard.dev/tools`, the run's or else the
/// pool's, and no `customBinariesPath`): PATH is then exactly what the image
/// and the run set.
fn worker_path(pool: &WorkerPoolSpec, meta: &ObjectMeta) -> Option<String> {
    let custom = pool
        .pod
        .custom_binaries_path
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let tools = meta
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_TOOLS))
        .or_else(|| pool.pod.annotations.get(ANNOTATION_TOOLS))
        .is_some_and(|t| !t.trim().is_empty());
    match custom {
        Some(custom) => Some(format!("{custom}:{BINARIES_PATH}")),
        None => tools.then(|| BINARIES_PATH.to_string()),
    }
}

/// Sets runyard's variables (always), then the `extra` ones the container lacks.
fn apply_env(c: &mut Container, runyard: &[EnvVar], extra: &[EnvVar]) {
    let vars = c.env.get_or_insert_with(Vec::new);
    // One allocation at most (the run's list is grown once, not doubled
    // element by element: an `EnvVar` is a few hundred bytes).
    vars.reserve(runyard.len() + extra.len());
    for var in runyard {
        let end = vars.len();
        upsert_at(vars, var.clone(), end);
    }
    for var in extra {
        if !vars.iter().any(|v| v.name == var.name) {
            vars.push(var.clone());
        }
    }
}

/// Puts `prefix` first on the container's PATH without losing the image's
/// own PATH, which a pod spec cannot name (`$(PATH)` expands only variables
/// declared in the spec). Idempotent.
///
/// - A PATH the container declares with a value gets `prefix` prepended.
/// - Otherwise a container with a `command` runs it through the exec shim
///   ([`EXEC_SHIM_PATH`] `--path-prefix=PREFIX -- COMMAND...`), which
///   prepends `prefix` to the PATH the process really gets (the image's
///   `ENV`, `envFrom`) and execs the command in its place.
/// - A container without a `command` runs its image's entrypoint, which the
///   webhook does not know (it reads nothing from registries): left alone.
fn apply_path(c: &mut Container, prefix: &str) {
    let declared = c
        .env
        .iter_mut()
        .flatten()
        .find(|v| v.name == "PATH" && v.value_from.is_none());
    if let Some(var) = declared {
        let current = var.value.clone().unwrap_or_default();
        let already = current == prefix || current.starts_with(&format!("{prefix}:"));
        if !already {
            var.value = Some(if current.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}:{current}")
            });
        }
        return;
    }
    let Some(command) = c.command.as_mut().filter(|c| !c.is_empty()) else {
        return;
    };
    let already_wrapped = command.len() >= 3
        && command[0] == EXEC_SHIM_PATH
        && command[1].starts_with(EXEC_SHIM_PREFIX_ARG)
        && command[2] == "--";
    let own = if already_wrapped {
        &command[3..]
    } else {
        &command[..]
    };
    let mut wrapped = Vec::with_capacity(own.len() + 3);
    wrapped.push(EXEC_SHIM_PATH.to_string());
    wrapped.push(format!("{EXEC_SHIM_PREFIX_ARG}{prefix}"));
    wrapped.push("--".to_string());
    wrapped.extend(own.iter().cloned());
    if *command != wrapped {
        *command = wrapped;
    }
}

fn mount(name: &str, path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        sub_path: sub_path.map(str::to_string),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// Adds `wanted` mounts, keyed by mount path; a path the container already uses
/// for another volume is a collision.
fn apply_mounts(
    c: &mut Container,
    wanted: &[VolumeMount],
    extra: &[VolumeMount],
) -> Result<(), InjectError> {
    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
    mounts.reserve(wanted.len() + extra.len());
    for m in wanted {
        match mounts.iter_mut().find(|x| x.mount_path == m.mount_path) {
            Some(existing) if existing.name == m.name => {
                if existing != m {
                    *existing = m.clone();
                }
            }
            Some(_) => {
                return Err(InjectError::MountCollision {
                    container: c.name.clone(),
                    path: m.mount_path.clone(),
                    volume: m.name.clone(),
                })
            }
            None => mounts.push(m.clone()),
        }
    }
    for m in extra {
        if !mounts.iter().any(|x| x.mount_path == m.mount_path) {
            mounts.push(m.clone());
        }
    }
    Ok(())
}

pub(super) fn workspace_mounts(binaries_read_only: bool) -> Vec<VolumeMount> {
    vec![
        mount(WORKSPACE_VOLUME, WORKSPACE_PATH, None, false),
        mount(
            BINARIES_CACHE_VOLUME,
            BINARIES_CACHE_PATH,
            None,
            binaries_read_only,
        ),
        mount(
            WORKSPACE_VOLUME,
            BINARIES_PATH,
            Some(BINARIES_SUBPATH),
            binaries_read_only,
        ),
    ]
}

/// Requests (and pool limits) for resources the container leaves unset. A
/// resource with a limit but no request is left alone: Kubernetes copies the
/// limit, and a default request could exceed it.
fn apply_resources(
    c: &mut Container,
    settings: Option<&ContainerSettings>,
    defaults: &EngineDefaults,
) {
    let pool = settings.and_then(|s| s.resources.as_ref());
    let requests: &BTreeMap<String, Quantity> = pool
        .and_then(|r| r.requests.as_ref())
        .unwrap_or(&defaults.requests);
    let limits = pool.and_then(|r| r.limits.clone()).unwrap_or_default();
    let has = |r: &Option<ResourceRequirements>, key: &str| {
        r.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| m.contains_key(key))
                || r.limits.as_ref().is_some_and(|m| m.contains_key(key))
        })
    };
    for (key, value) in limits {
        if !has(&c.resources, &key) {
            c.resources
                .get_or_insert_with(Default::default)
                .limits
                .get_or_insert_with(Default::default)
                .insert(key, value);
        }
    }
    for (key, value) in requests {
        if !has(&c.resources, key) {
            c.resources
                .get_or_insert_with(Default::default)
                .requests
                .get_or_insert_with(Default::default)
                .insert(key.clone(), value.clone());
        }
    }
}

/// `target` with every top-level field it leaves unset taken from `defaults`.
fn fill_missing<T: Serialize + DeserializeOwned>(
    target: &T,
    defaults: &T,
) -> Result<T, InjectError> {
    let err = |e: serde_json::Error| InjectError::Invalid(format!("merging security context: {e}"));
    let mut t = serde_json::to_value(target).map_err(err)?;
    let d = serde_json::to_value(defaults).map_err(err)?;
    if let (Some(t), serde_json::Value::Object(d)) = (t.as_object_mut(), d) {
        for (k, v) in d {
            t.entry(k).or_insert(v);
        }
    }
    serde_json::from_value(t).map_err(err)
}

fn drop_all() -> Capabilities {
    Capabilities {
        drop: Some(vec!["ALL".to_string()]),
        ..Default::default()
    }
}

fn prepare_worker(
    c: &mut Container,
    env: &[EnvVar],
    path: Option<&str>,
    settings: Option<&ContainerSettings>,
    defaults: &EngineDefaults,
) -> Result<(), InjectError> {
    if c.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
        if let Some(image) = &defaults.worker_image {
            c.image = Some(image.clone());
        }
    }
    apply_env(
        c,
        env,
        settings.map(|s| s.env.as_slice()).unwrap_or_default(),
    );
    if let Some(prefix) = path {
        apply_path(c, prefix);
    }
    if let Some(s) = settings {
        for from in &s.env_from {
            let list = c.env_from.get_or_insert_with(Vec::new);
            if !list.contains(from) {
                list.push(from.clone());
            }
        }
    }
    apply_mounts(
        c,
        &workspace_mounts(true),
        settings
            .map(|s| s.volume_mounts.as_slice())
            .unwrap_or_default(),
    )?;
    apply_resources(c, settings, defaults);
    let pool_sc = settings.and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.get_or_insert_with(Default::default);
    if let Some(pool_sc) = pool_sc {
        // Rare path: the pool sets worker security fields; merge them generically.
        let merged = fill_missing(&*sc, pool_sc)?;
        if *sc != merged {
            *sc = merged;
        }
    }
    policy::harden(sc);
    Ok(())
}

/// Containers the pool contributes (custom init containers, additional
/// sidecars) get runyard's env, the workspace mounts and default requests,
/// and the `restricted` defaults where they set nothing (no privilege
/// escalation, `drop: [ALL]`), as a run's containers do; a container the pool
/// makes `privileged` (which needs `allowPrivileged`) keeps its own settings.
fn prepare_pool_container(
    c: &mut Container,
    env: &[EnvVar],
    defaults: &EngineDefaults,
) -> Result<(), InjectError> {
    apply_env(c, env, &[]);
    apply_mounts(c, &workspace_mounts(false), &[])?;
    apply_resources(c, None, defaults);
    let privileged = c
        .security_context
        .as_ref()
        .is_some_and(|sc| sc.privileged == Some(true));
    if !privileged {
        policy::harden(c.security_context.get_or_insert_with(Default::default));
    }
    Ok(())
}

fn hardened(settings: Option<&ContainerSettings>) -> Result<SecurityContext, InjectError> {
    let base = SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(drop_all()),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..Default::default()
    };
    match settings.and_then(|s| s.security_context.as_ref()) {
        Some(pool) => fill_missing(pool, &base),
        None => Ok(base),
    }
}

/// Builds runyard's container `name` into `c` (a default `Container`, where
/// it is to go).
fn runyard_container(
    c: &mut Container,
    name: &str,
    ctx: &PodContext<'_>,
    env: &[EnvVar],
    settings: Option<&ContainerSettings>,
    args: &[&str],
    mounts: Vec<VolumeMount>,
) -> Result<(), InjectError> {
    c.name = name.to_string();
    c.image = Some(launcher_image(ctx.pool, ctx.defaults).to_string());
    c.image_pull_policy = Some("IfNotPresent".to_string());
    c.command = Some(args.iter().map(|s| s.to_string()).collect());
    c.security_context = Some(hardened(settings)?);
    apply_env(
        c,
        env,
        settings.map(|s| s.env.as_slice()).unwrap_or_default(),
    );
    if let Some(s) = settings {
        if !s.env_from.is_empty() {
            c.env_from = Some(s.env_from.clone());
        }
    }
    apply_mounts(
        c,
        &mounts,
        settings
            .map(|s| s.volume_mounts.as_slice())
            .unwrap_or_default(),
    )?;
    apply_resources(c, settings, ctx.defaults);
    Ok(())
}

/// `init`; with `exec_shim` (worker commands may run through the exec shim)
/// it installs the shim too.
pub(super) fn init_container(
    c: &mut Container,
    ctx: &PodContext<'_>,
    env: &[EnvVar],
    exec_shim: bool,
) -> Result<(), InjectError> {
    // The pool's extraction limits, for `launcher init` (its defaults otherwise).
    let limits = &ctx.pool.limits;
    let mut env = env.to_vec();
    if exec_shim {
        env.push(value_env(var::EXEC_SHIM, "true"));
    }
    for (name, value) in [
        (var::SOURCE_MAX_BYTES, limits.source_bytes),
        (var::SOURCE_MAX_ENTRIES, limits.source_entries),
    ] {
        if let Some(v) = value {
            env.push(value_env(name, &v.to_string()));
        }
    }
    runyard_container(
        c,
        INIT_CONTAINER,
        ctx,
        &env,
        ctx.pool.pod.init_container.as_ref(),
        &["runyard", "launcher", "init"],
        {
            let mut mounts = workspace_mounts(false);
            mounts.push(mount(PODINFO_VOLUME, PODINFO_PATH, None, true));
            mounts
        },
    )
}

pub(super) fn launcher_container(
    c: &mut Container,
    ctx: &PodContext<'_>,
    env: &[EnvVar],
    workers: &[String],
) -> Result<(), InjectError> {
    let mut env = env.to_vec();
    let native = ctx.facts.sidecar_mode == SidecarMode::Native;
    env.push(value_env(
        var::SIDECAR_MODE,
        if native { "native" } else { "container" },
    ));
    env.push(value_env(var::WORKER_CONTAINERS, &workers.join(",")));
    env.push(value_env(var::PODINFO, PODINFO_PATH));
    let mut mounts = vec![mount(WORKSPACE_VOLUME, WORKSPACE_PATH, None, false)];
    mounts.push(mount(PODINFO_VOLUME, PODINFO_PATH, None, true));
    runyard_container(
        c,
        LAUNCHER_CONTAINER,
        ctx,
        &env,
        ctx.pool.pod.launcher_container.as_ref(),
        &["runyard", "launcher", "serve"],
        mounts,
    )?;
    if native {
        c.restart_policy = Some("Always".to_string());
    }
    // Its readiness is the run's heartbeat (the controller reads it; nothing
    // in the pod needs credentials): the launcher answers on its socket.
    c.readiness_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(
                ["runyard", "launcher", "probe"]
                    .map(str::to_string)
                    .to_vec(),
            ),
        }),
        period_seconds: Some(LAUNCHER_PROBE_PERIOD_SECONDS),
        timeout_seconds: Some(3),
        failure_threshold: Some(3),
        ..Default::default()
    });
    Ok(())
}

/// How often the kubelet probes the launcher.
pub const LAUNCHER_PROBE_PERIOD_SECONDS: i32 = 10;

/// Runyard's defaults for what a pod's security context leaves unset (after
/// the pool's): UID/GID 1983, non-root, `RuntimeDefault` seccomp.
pub(super) fn pod_security_defaults(sc: &mut PodSecurityContext) {
    sc.run_as_user.get_or_insert(RUNYARD_UID);
    sc.run_as_group.get_or_insert(RUNYARD_UID);
    sc.fs_group.get_or_insert(RUNYARD_UID);
    sc.run_as_non_root.get_or_insert(true);
    if sc.seccomp_profile.is_none() {
        sc.seccomp_profile = Some(SeccompProfile {
            type_: "RuntimeDefault".to_string(),
            ..Default::default()
        });
    }
}

fn inject_pod_fields(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    ctx: &PodContext<'_>,
) -> Result<(), InjectError> {
    let pool_pod = &ctx.pool.pod;

    // Pod security context: the run's values, then the pool's, then runyard's defaults.
    let sc = spec.security_context.get_or_insert_with(Default::default);
    if let Some(pool_sc) = &pool_pod.security_context {
        // Rare path: the pool sets pod security fields; the run's own win.
        let merged = fill_missing(&*sc, pool_sc)?;
        if *sc != merged {
            *sc = merged;
        }
    }
    pod_security_defaults(sc);

    let labels = meta.labels.get_or_insert_with(Default::default);
    for (k, v) in &pool_pod.labels {
        labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    labels
        .entry(LABEL_POOL.to_string())
        .or_insert_with(|| ctx.pool_name.to_string());
    let annotations = meta.annotations.get_or_insert_with(Default::default);
    for (k, v) in &pool_pod.annotations {
        annotations.entry(k.clone()).or_insert_with(|| v.clone());
    }
    annotations
        .entry(ANNOTATION_INJECTED.to_string())
        .or_insert_with(|| "true".to_string());

    if !pool_pod.node_selector.is_empty() {
        let selector = spec.node_selector.get_or_insert_with(Default::default);
        for (k, v) in &pool_pod.node_selector {
            selector.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if spec.affinity.is_none() {
        spec.affinity.clone_from(&pool_pod.affinity);
    }
    if !pool_pod.tolerations.is_empty() {
        let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
        for t in &pool_pod.tolerations {
            if !tolerations.contains(t) {
                tolerations.push(t.clone());
            }
        }
    }
    if let Some(sa) = &pool_pod.service_account_name {
        let unset = spec
            .service_account_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == "default");
        if unset && spec.service_account_name.as_ref() != Some(sa) {
            spec.service_account_name = Some(sa.clone());
            if spec.service_account.is_some() {
                spec.service_account = Some(sa.clone());
            }
        }
    }
    if spec.automount_service_account_token.is_none() {
        spec.automount_service_account_token = pool_pod.automount_service_account_token;
    }
    if !pool_pod.image_pull_secrets.is_empty() {
        let secrets = spec.image_pull_secrets.get_or_insert_with(Vec::new);
        for s in &pool_pod.image_pull_secrets {
            if !secrets.contains(s) {
                secrets.push(s.clone());
            }
        }
    }
    let deadline = pool_pod
        .active_deadline_seconds
        .unwrap_or(DEFAULT_ACTIVE_DEADLINE_SECONDS);
    let capped = spec
        .active_deadline_seconds
        .map_or(deadline, |d| d.min(deadline));
    spec.active_deadline_seconds = Some(capped);
    if let Some(grace) = pool_pod.termination_grace_period_seconds {
        spec.termination_grace_period_seconds = Some(grace);
    }
    if ctx.gate {
        let gates = spec.scheduling_gates.get_or_insert_with(Vec::new);
        if !gates.iter().any(|g| g.name == SCHEDULING_GATE) {
            gates.push(PodSchedulingGate {
                name: SCHEDULING_GATE.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One step of the injection's list edits: put a produced container in
    /// (`Some`, with its image telling copies apart) or remove a name.
    #[derive(Debug, Clone)]
    enum Edit {
        Put(Slot, &'static str, u8, usize),
        Remove(Slot, &'static str),
    }

    fn arb_edit() -> impl Strategy<Value = Edit> {
        let slot = prop_oneof![Just(Slot::Init), Just(Slot::Main)];
        let name = prop_oneof![Just("a"), Just("b"), Just("c")];
        prop_oneof![
            (slot.clone(), name.clone(), 0u8..3, 0usize..4)
                .prop_map(|(s, n, v, at)| Edit::Put(s, n, v, at)),
            (slot, name).prop_map(|(s, n)| Edit::Remove(s, n)),
        ]
    }

    fn container(name: &str, version: u8) -> Container {
        Container {
            name: name.to_string(),
            image: Some(format!("img:{version}")),
            ..Default::default()
        }
    }

    proptest! {
        /// The produced containers found in place (and copied when
        /// displaced) are exactly the copies the policy check used to keep of
        /// every container the injection put in, whatever the run's lists
        /// held and however the pool's names collide.
        #[test]
        fn produced_containers_are_what_was_put_in(
            inits in proptest::collection::vec((prop_oneof![Just("a"), Just("b"), Just("x")], 0u8..3), 0..4),
            main in proptest::collection::vec((prop_oneof![Just("a"), Just("c"), Just("x")], 0u8..3), 0..4),
            edits in proptest::collection::vec(arb_edit(), 0..8),
        ) {
            let mut spec = PodSpec {
                init_containers: Some(inits.iter().map(|(n, v)| container(n, *v)).collect()),
                containers: main.iter().map(|(n, v)| container(n, *v)).collect(),
                ..Default::default()
            };
            let mut produced = Placed::<Container>::default();
            let mut copies = Vec::new();
            for edit in edits {
                let inits = spec.init_containers.get_or_insert_with(Vec::new);
                match edit {
                    Edit::Put(slot, name, version, at) => {
                        let c = container(name, 10 + version);
                        copies.push(c.clone());
                        let list = match slot {
                            Slot::Init => inits,
                            Slot::Main => &mut spec.containers,
                        };
                        produced.upsert(list, slot, c, at);
                    }
                    Edit::Remove(slot, name) => {
                        let list = match slot {
                            Slot::Init => inits,
                            Slot::Main => &mut spec.containers,
                        };
                        produced.remove(list, slot, name);
                    }
                }
            }
            let inits = spec.init_containers.as_deref().unwrap_or_default();
            let found = produced.found(|slot| match slot {
                Slot::Init => inits,
                Slot::Main => &spec.containers,
            });
            for c in &found {
                prop_assert!(copies.contains(c), "{c:?} was never put in");
            }
            for c in &copies {
                prop_assert!(found.contains(&c), "{c:?} is lost");
            }
        }
    }
}
