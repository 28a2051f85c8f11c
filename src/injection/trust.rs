//! The admission trust boundary. Controller-owned metadata (the worker label,
//! the queue/claim/result annotations, the injection marker) is never taken as
//! proof of anything a user writes: on CREATE it is removed unless the runyard
//! controller sends the request, and on UPDATE every change that could start a
//! run, move it in the queue or undo its hardening is denied unless the
//! controller sends it. Who sent a request comes from the AdmissionReview's
//! `userInfo`, which the API server fills in from authentication.

use super::{policy, InjectError};
use crate::crd::WorkerPoolSpec;
use crate::vocab::{
    annotation, label, RunResult, ANNOTATION_CLAIMED_AT, ANNOTATION_INJECTED, ANNOTATION_QUEUE,
    ANNOTATION_RESULT, ANNOTATION_RESULT_DETAIL, INIT_CONTAINER, LABEL_POOL, LABEL_RUN_ID,
    LABEL_WORKER, LAUNCHER_CONTAINER, SCHEDULING_GATE,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Who sent a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    /// The runyard controller: it claims, releases and fails runs.
    Controller,
    /// Kubernetes' Job controller: it creates the pods of Jobs from their
    /// (webhook-guarded) templates.
    JobController,
    /// Anyone else.
    User,
}

/// The default identity of the runyard controller (its ServiceAccount in the
/// plain manifests).
pub const DEFAULT_CONTROLLER_USER: &str = "system:serviceaccount:runyard:runyard-controller";
/// The identities the Job controller runs as: its own ServiceAccount when the
/// controller manager uses per-controller credentials (kubeadm, kind, most
/// managed clusters), else the controller manager's.
pub const DEFAULT_JOB_CONTROLLER_USERS: [&str; 2] = [
    "system:serviceaccount:kube-system:job-controller",
    "system:kube-controller-manager",
];

/// The user names runyard trusts, by role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedUsers {
    pub controller: Vec<String>,
    pub job_controller: Vec<String>,
}

impl Default for TrustedUsers {
    fn default() -> Self {
        Self {
            controller: vec![DEFAULT_CONTROLLER_USER.to_string()],
            job_controller: DEFAULT_JOB_CONTROLLER_USERS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

impl TrustedUsers {
    /// The role of an authenticated user name.
    pub fn requester(&self, username: &str) -> Requester {
        if self.controller.iter().any(|u| u == username) {
            Requester::Controller
        } else if self.job_controller.iter().any(|u| u == username) {
            Requester::JobController
        } else {
            Requester::User
        }
    }
}

/// Annotations only the controller writes (besides `runyard.dev/result`,
/// which `runyard cancel` may set to `Cancelled`).
const CONTROLLER_ANNOTATIONS: [&str; 3] = [
    ANNOTATION_QUEUE,
    ANNOTATION_CLAIMED_AT,
    ANNOTATION_RESULT_DETAIL,
];

/// Removes what only the controller may write from an object a user creates:
/// the worker label and the queue, claim and result annotations.
pub(crate) fn scrub(meta: &mut ObjectMeta) {
    if let Some(labels) = meta.labels.as_mut() {
        labels.remove(LABEL_WORKER);
    }
    if let Some(annotations) = meta.annotations.as_mut() {
        for key in CONTROLLER_ANNOTATIONS
            .into_iter()
            .chain([ANNOTATION_RESULT])
        {
            annotations.remove(key);
        }
    }
}

/// Whether a run id is one runyard could have stamped (a ULID). Any other
/// value is replaced; a well-formed one is kept, so that injecting twice
/// changes nothing.
pub(crate) fn valid_run_id(id: &str) -> bool {
    id.len() == 26 && ulid::Ulid::from_string(id).is_ok()
}

fn owned(what: String, pool: &str) -> InjectError {
    InjectError::ControllerOwned {
        what,
        pool: pool.to_string(),
    }
}

fn show(v: Option<&str>) -> String {
    v.map_or_else(|| "unset".to_string(), |v| format!("{v:?}"))
}

/// Denies changes of runyard's labels and controller-owned annotations.
fn protected_metadata(
    old: &ObjectMeta,
    new: &ObjectMeta,
    whose: &str,
    pool: &str,
) -> Result<(), InjectError> {
    for key in [LABEL_POOL, LABEL_RUN_ID, LABEL_WORKER] {
        let (o, n) = (label(old, key), label(new, key));
        if o != n {
            return Err(owned(
                format!(
                    "changing the label {key} of {whose} (from {} to {})",
                    show(o),
                    show(n)
                ),
                pool,
            ));
        }
    }
    for key in CONTROLLER_ANNOTATIONS
        .into_iter()
        .chain([ANNOTATION_INJECTED])
    {
        if annotation(old, key) != annotation(new, key) {
            return Err(owned(
                format!("changing the annotation {key} of {whose}"),
                pool,
            ));
        }
    }
    let (o, n) = (
        annotation(old, ANNOTATION_RESULT),
        annotation(new, ANNOTATION_RESULT),
    );
    if o != n && n != Some(RunResult::Cancelled.as_str()) {
        return Err(owned(
            format!(
                "setting the annotation {ANNOTATION_RESULT} of {whose} to {} (only {} may be set, by runyard cancel)",
                show(n),
                RunResult::Cancelled
            ),
            pool,
        ));
    }
    Ok(())
}

/// A Job UPDATE by anyone but the controller.
pub(crate) fn review_job_update(old: &Job, new: &Job, pool: &str) -> Result<(), InjectError> {
    protected_metadata(&old.metadata, &new.metadata, "the Job", pool)?;
    let (Some(o), Some(n)) = (old.spec.as_ref(), new.spec.as_ref()) else {
        return Ok(());
    };
    if o.suspend == Some(true) && n.suspend != Some(true) {
        return Err(owned(
            "starting a queued run (spec.suspend: false)".into(),
            pool,
        ));
    }
    match (o.active_deadline_seconds, n.active_deadline_seconds) {
        (Some(a), Some(b)) if b > a => {
            return Err(owned(
                format!("raising spec.activeDeadlineSeconds from {a} to {b}"),
                pool,
            ))
        }
        (Some(a), None) => {
            return Err(owned(
                format!("removing spec.activeDeadlineSeconds ({a})"),
                pool,
            ))
        }
        _ => {}
    }
    let empty = ObjectMeta::default();
    protected_metadata(
        o.template.metadata.as_ref().unwrap_or(&empty),
        n.template.metadata.as_ref().unwrap_or(&empty),
        "the Job's pod template",
        pool,
    )?;
    if o.template.spec != n.template.spec {
        return Err(owned(
            "changing the pod template's spec (scheduling directives and the injected run environment)"
                .into(),
            pool,
        ));
    }
    Ok(())
}

fn images(spec: Option<&PodSpec>) -> Vec<(&str, Option<&str>, bool)> {
    let Some(spec) = spec else {
        return Vec::new();
    };
    let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
    let mains = spec.containers.iter().map(|c| (c, false));
    inits
        .chain(mains)
        .map(|(c, init)| (c.name.as_str(), c.image.as_deref(), init))
        .collect()
}

/// A Pod UPDATE by anyone but the controller.
pub(crate) fn review_pod_update(
    old: &Pod,
    new: &Pod,
    pool_name: &str,
    pool: Option<&WorkerPoolSpec>,
) -> Result<(), InjectError> {
    protected_metadata(&old.metadata, &new.metadata, "the Pod", pool_name)?;
    let gated = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| g.iter().any(|g| g.name == SCHEDULING_GATE))
    };
    if gated(old) && !gated(new) {
        return Err(owned(
            format!("removing the scheduling gate {SCHEDULING_GATE}"),
            pool_name,
        ));
    }
    let (o, n) = (old.spec.as_ref(), new.spec.as_ref());
    if o.map(|s| &s.tolerations) != n.map(|s| &s.tolerations) {
        return Err(owned(
            "changing the tolerations of a run pod".into(),
            pool_name,
        ));
    }
    let before = images(o);
    for (name, image, init) in images(n) {
        let was = before
            .iter()
            .find(|(n2, _, i2)| *n2 == name && *i2 == init)
            .and_then(|(_, img, _)| *img);
        if was == image {
            continue;
        }
        let injected = [INIT_CONTAINER, LAUNCHER_CONTAINER].contains(&name)
            || pool.is_some_and(|p| {
                p.pod
                    .custom_init_containers
                    .iter()
                    .chain(&p.pod.additional_sidecar_containers)
                    .any(|c| c.name == name)
            });
        if injected {
            return Err(owned(
                format!("changing the image of container {name:?}, which runyard injects"),
                pool_name,
            ));
        }
        let pool = pool.ok_or_else(|| InjectError::PoolNotFound {
            pool: pool_name.to_string(),
            namespace: new.metadata.namespace.clone().unwrap_or_default(),
        })?;
        let probe = Container {
            name: name.to_string(),
            image: image.map(str::to_string),
            ..Container::default()
        };
        policy::check_images(
            pool_name,
            &pool.allowed_runner_image_hosts,
            &pool.allowed_sidecar_images,
            std::iter::once(&probe),
        )?;
    }
    Ok(())
}

/// Ephemeral containers (`kubectl debug`, the `pods/ephemeralcontainers`
/// subresource) added to a run pod: denied unless the pool allows debugging;
/// then held to the same image and privilege policy as any container, and
/// hardened where they set nothing (no privilege escalation, no capabilities).
/// Returns the pod with the hardening applied.
pub(crate) fn review_ephemeral(
    old: &Pod,
    new: &Pod,
    pool_name: &str,
    pool: &WorkerPoolSpec,
) -> Result<Pod, InjectError> {
    let existing: Vec<&str> = old
        .spec
        .as_ref()
        .and_then(|s| s.ephemeral_containers.as_ref())
        .into_iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    let mut hardened = new.clone();
    let Some(spec) = hardened.spec.as_mut() else {
        return Ok(hardened);
    };
    for e in spec.ephemeral_containers.iter_mut().flatten() {
        if existing.contains(&e.name.as_str()) {
            continue;
        }
        if !pool.allow_ephemeral_containers {
            return Err(InjectError::EphemeralNotAllowed {
                container: e.name.clone(),
                pool: pool_name.to_string(),
            });
        }
        let as_container = Container {
            name: e.name.clone(),
            image: e.image.clone(),
            security_context: e.security_context.clone(),
            ..Container::default()
        };
        // Not `allowedSidecarImages`: those are for containers other
        // webhooks add at creation, not for debugging sessions.
        policy::check_images(
            pool_name,
            &pool.allowed_runner_image_hosts,
            &[],
            std::iter::once(&as_container),
        )?;
        if !pool.pod.allow_privileged {
            policy::check_privilege(
                pool_name,
                None,
                &PodSpec::default(),
                std::iter::once(&as_container),
            )?;
        }
        let sc = e
            .security_context
            .get_or_insert_with(SecurityContext::default);
        policy::harden(sc);
    }
    Ok(hardened)
}
