//! The trust boundary: each way a user could skip the queue or the hardening
//! by writing runyard's own metadata, on CREATE and on UPDATE, and a property
//! over runs carrying any of runyard's labels and annotations.

use super::tests::{builders, injector, mutated_pod, pool, run_pod, spec, worker};
use super::*;
use crate::crd::WorkerPoolSpec;
use crate::vocab::*;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EphemeralContainer, HostPathVolumeSource, Pod, PodSpec, PodTemplateSpec,
    SecurityContext, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn privileged(name: &str, image: &str) -> Container {
    Container {
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }),
        ..worker(name, image)
    }
}

fn with_sidecar() -> StaticPools {
    pool(
        "builders",
        WorkerPoolSpec {
            pod: crate::crd::PoolPodSpec {
                additional_sidecar_containers: vec![Container {
                    command: Some(vec!["cache-server".into()]),
                    ..worker("cache", "ghcr.io/acme/cache:1")
                }],
                ..Default::default()
            },
            ..Default::default()
        },
    )
}

fn all_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let s = spec(pod);
    s.init_containers.iter().flatten().chain(&s.containers)
}

fn gated(pod: &Pod) -> bool {
    spec(pod)
        .scheduling_gates
        .iter()
        .flatten()
        .any(|g| g.name == SCHEDULING_GATE)
}

#[test]
fn a_forged_marker_is_no_pass_a_bare_pod_is_gated_and_hardened() {
    let mut pod = run_pod(vec![worker("build", "alpine")]);
    pod.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_INJECTED.into(),
        "true".into(),
    )]));
    let new = mutated_pod(injector().mutate(&pod, "ci", &builders()));
    assert!(gated(&new), "queued until claimed");
    let sc = spec(&new).security_context.as_ref().expect("pod security");
    assert_eq!(sc.run_as_user, Some(RUNYARD_UID));
    assert_eq!(sc.run_as_non_root, Some(true));
    let names: Vec<_> = all_containers(&new).map(|c| c.name.as_str()).collect();
    assert!(names.contains(&INIT_CONTAINER) && names.contains(&LAUNCHER_CONTAINER));
    let build = all_containers(&new)
        .find(|c| c.name == "build")
        .expect("worker");
    let csc = build.security_context.as_ref().expect("hardened");
    assert_eq!(csc.allow_privilege_escalation, Some(false));
}

#[test]
fn a_container_named_like_the_pools_sidecar_is_the_pools_or_nothing() {
    // With the marker, the impostor is replaced by the pool's definition...
    let mut pod = run_pod(vec![
        worker("build", "alpine"),
        privileged("cache", "evil.example/root:1"),
    ]);
    pod.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_INJECTED.into(),
        "true".into(),
    )]));
    let new = mutated_pod(injector().mutate(&pod, "ci", &with_sidecar()));
    for c in all_containers(&new) {
        let sc = c.security_context.as_ref();
        assert_ne!(sc.and_then(|s| s.privileged), Some(true), "{}", c.name);
        assert_ne!(sc.and_then(|s| s.run_as_user), Some(0), "{}", c.name);
    }
    let cache = all_containers(&new)
        .find(|c| c.name == "cache")
        .expect("cache");
    assert_eq!(cache.image.as_deref(), Some("ghcr.io/acme/cache:1"));
    // ...in the other list too (pool sidecars are native sidecars, init
    // containers, on clusters that have them): one container of that name,
    // the pool's, in the list the cluster's sidecar mode puts it.
    let mut pod = run_pod(vec![worker("build", "alpine")]);
    pod.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_INJECTED.into(),
        "true".into(),
    )]));
    pod.spec.as_mut().expect("spec").init_containers =
        Some(vec![privileged("cache", "evil.example/root:1")]);
    for native in [false, true] {
        let inj = if native {
            injector()
        } else {
            super::tests::container_injector()
        };
        let new = mutated_pod(inj.mutate(&pod, "ci", &with_sidecar()));
        let caches: Vec<_> = all_containers(&new).filter(|c| c.name == "cache").collect();
        assert_eq!(caches.len(), 1, "native {native}");
        assert_eq!(caches[0].image.as_deref(), Some("ghcr.io/acme/cache:1"));
        assert_ne!(
            caches[0]
                .security_context
                .as_ref()
                .and_then(|s| s.privileged),
            Some(true)
        );
        let in_inits = spec(&new)
            .init_containers
            .iter()
            .flatten()
            .any(|c| c.name == "cache");
        assert_eq!(in_inits, native, "native {native}");
    }
    // A regular container named like runyard's init container likewise.
    let mut pod = run_pod(vec![
        worker("build", "alpine"),
        privileged("init", "alpine"),
    ]);
    pod.metadata.annotations = Some(BTreeMap::from([(
        ANNOTATION_INJECTED.into(),
        "true".into(),
    )]));
    let err = injector()
        .mutate(&pod, "ci", &builders())
        .expect_err("a privileged container named init");
    assert!(
        matches!(err, InjectError::PrivilegeNotAllowed { .. }),
        "{err}"
    );
}

#[test]
fn host_paths_need_the_privileged_opt_in() {
    let mut pod = run_pod(vec![worker("build", "alpine")]);
    pod.spec.as_mut().expect("spec").volumes = Some(vec![Volume {
        name: "docker".into(),
        host_path: Some(HostPathVolumeSource {
            path: "/var/run/docker.sock".into(),
            ..Default::default()
        }),
        ..Default::default()
    }]);
    let err = injector()
        .mutate(&pod, "ci", &builders())
        .expect_err("hostPath");
    assert!(err.to_string().contains("hostPath"), "{err}");
    let open = pool(
        "builders",
        WorkerPoolSpec {
            pod: crate::crd::PoolPodSpec {
                allow_privileged: true,
                ..Default::default()
            },
            ..Default::default()
        },
    );
    mutated_pod(injector().mutate(&pod, "ci", &open));
}

fn queued_job() -> Job {
    let labels = BTreeMap::from([(LABEL_POOL.to_string(), "builders".to_string())]);
    let job = Job {
        metadata: ObjectMeta {
            name: Some("build-42".into()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![worker("build", "alpine")],
                    restart_policy: Some("Never".into()),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    match injector().mutate(&job, "ci", &builders()).expect("queued") {
        Mutation::Mutated { object, .. } => *object,
        other => panic!("{other:?}"),
    }
}

fn update<R: RunObject>(old: &R, new: &R, by: Requester) -> Result<(), InjectError> {
    injector().review_update(old, new, "ci", &builders(), by)
}

#[test]
fn only_the_controller_starts_a_queued_job() {
    let old = queued_job();
    let mut started = old.clone();
    started.spec.as_mut().expect("spec").suspend = Some(false);
    let err = update(&old, &started, Requester::User).expect_err("a user unsuspends");
    assert!(matches!(err, InjectError::ControllerOwned { .. }), "{err}");
    assert!(err.to_string().contains("spec.suspend"), "{err}");
    let mut removed = old.clone();
    removed.spec.as_mut().expect("spec").suspend = None;
    update(&old, &removed, Requester::User).expect_err("removing suspend starts it too");
    update(&old, &started, Requester::Controller).expect("the controller's claim");
}

#[test]
fn runyard_labels_and_the_controllers_annotations_are_the_controllers() {
    let old = queued_job();
    type Edit = Box<dyn Fn(&mut Job)>;
    let edits: Vec<(&str, Edit)> = vec![
        (
            "worker label",
            Box::new(|j: &mut Job| {
                j.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(LABEL_WORKER.into(), "builders-1".into());
            }),
        ),
        (
            "pool label removed",
            Box::new(|j: &mut Job| {
                j.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .remove(LABEL_POOL);
            }),
        ),
        (
            "run id",
            Box::new(|j: &mut Job| {
                j.metadata
                    .labels
                    .get_or_insert_with(Default::default)
                    .insert(LABEL_RUN_ID.into(), "other".into());
            }),
        ),
        (
            "template worker label",
            Box::new(|j: &mut Job| {
                j.spec
                    .as_mut()
                    .and_then(|s| s.template.metadata.as_mut())
                    .and_then(|m| m.labels.as_mut())
                    .map(|l| l.insert(LABEL_WORKER.into(), "builders-1".into()));
            }),
        ),
        (
            "claimed-at",
            Box::new(|j: &mut Job| {
                j.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(ANNOTATION_CLAIMED_AT.into(), "2099-01-01T00:00:00Z".into());
            }),
        ),
        (
            "result other than Cancelled",
            Box::new(|j: &mut Job| {
                j.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(ANNOTATION_RESULT.into(), "Succeeded".into());
            }),
        ),
        (
            "template spec",
            Box::new(|j: &mut Job| {
                if let Some(s) = j.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
                    s.node_selector = Some(BTreeMap::from([("gpu".into(), "a100".into())]));
                }
            }),
        ),
        (
            "deadline raised",
            Box::new(|j: &mut Job| {
                j.spec.as_mut().expect("spec").active_deadline_seconds = Some(999_999);
            }),
        ),
    ];
    let mut with_deadline = old.clone();
    with_deadline
        .spec
        .as_mut()
        .expect("spec")
        .active_deadline_seconds = Some(600);
    for (what, edit) in edits {
        let mut new = with_deadline.clone();
        edit(&mut new);
        let err = update(&with_deadline, &new, Requester::User).expect_err(what);
        assert!(
            matches!(err, InjectError::ControllerOwned { .. }),
            "{what}: {err}"
        );
        update(&with_deadline, &new, Requester::Controller).expect(what);
    }
    // What `runyard cancel` writes as the user: a stop, result Cancelled, a
    // shorter deadline; and what users may change: priority, their own labels.
    let mut cancelled = with_deadline.clone();
    cancelled
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .extend([
            (ANNOTATION_STOP.to_string(), "by ci".to_string()),
            (ANNOTATION_RESULT.to_string(), "Cancelled".to_string()),
            (ANNOTATION_PRIORITY.to_string(), "5".to_string()),
        ]);
    cancelled
        .spec
        .as_mut()
        .expect("spec")
        .active_deadline_seconds = Some(1);
    cancelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("team".into(), "a".into());
    update(&with_deadline, &cancelled, Requester::User).expect("cancel and priority");
}

fn claimed_pod(worker_label: Option<&str>) -> Pod {
    let mut pod = mutated_pod(injector().mutate(
        &run_pod(vec![worker("build", "alpine")]),
        "ci",
        &builders(),
    ));
    if let Some(w) = worker_label {
        pod.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(LABEL_WORKER.into(), w.into());
    }
    pod
}

#[test]
fn only_the_controller_ungates_a_bare_run_and_images_stay_allowed() {
    let old = claimed_pod(None);
    assert!(gated(&old));
    let mut ungated = old.clone();
    ungated.spec.as_mut().expect("spec").scheduling_gates = None;
    let err = update(&old, &ungated, Requester::User).expect_err("a user ungates");
    assert!(err.to_string().contains(SCHEDULING_GATE), "{err}");
    update(&old, &ungated, Requester::Controller).expect("the controller's claim");

    let mut tolerant = old.clone();
    tolerant.spec.as_mut().expect("spec").tolerations = Some(vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }]);
    update(&old, &tolerant, Requester::User).expect_err("tolerations");

    // `kubectl set image` on a run pod: the pool's allowed hosts still hold.
    let restricted = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["docker.io".into()],
            ..Default::default()
        },
    );
    let mut swapped = old.clone();
    for c in &mut swapped.spec.as_mut().expect("spec").containers {
        if c.name == "build" {
            c.image = Some("evil.example/miner:1".into());
        }
    }
    let err = injector()
        .review_update(&old, &swapped, "ci", &restricted, Requester::User)
        .expect_err("image from another registry");
    assert!(
        matches!(err, InjectError::ImageHostNotAllowed { .. }),
        "{err}"
    );
    let mut launcher = old.clone();
    for c in launcher
        .spec
        .as_mut()
        .expect("spec")
        .init_containers
        .iter_mut()
        .flatten()
    {
        if c.name == LAUNCHER_CONTAINER {
            c.image = Some("docker.io/evil/launcher:1".into());
        }
    }
    update(&old, &launcher, Requester::User).expect_err("runyard's own container");
}

fn debugged(old: &Pod, sc: Option<SecurityContext>) -> Pod {
    let mut new = old.clone();
    new.spec.as_mut().expect("spec").ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debugger".into(),
        image: Some("busybox:1.36".into()),
        security_context: sc,
        ..Default::default()
    }]);
    new
}

#[test]
fn ephemeral_containers_need_the_pools_consent_and_its_policy() {
    let old = claimed_pod(Some("builders-1"));
    let new = debugged(&old, None);
    let err = injector()
        .review_ephemeral(&old, &new, "ci", &builders())
        .expect_err("debugging not allowed");
    assert!(
        matches!(err, InjectError::EphemeralNotAllowed { .. }),
        "{err}"
    );

    let debuggable = |hosts: Vec<String>| {
        pool(
            "builders",
            WorkerPoolSpec {
                allow_ephemeral_containers: true,
                allowed_runner_image_hosts: hosts,
                ..Default::default()
            },
        )
    };
    // Allowed: hardened where it set nothing, and the patch applies.
    let raw = serde_json::to_value(&new).expect("json");
    match injector()
        .review_ephemeral(&old, &new, "ci", &debuggable(vec![]))
        .expect("allowed")
    {
        Mutation::Mutated { object, patch } => {
            super::tests::assert_patch_reproduces(&raw, &patch, &*object);
            let e = &object
                .spec
                .as_ref()
                .expect("spec")
                .ephemeral_containers
                .as_ref()
                .expect("e")[0];
            let sc = e.security_context.as_ref().expect("sc");
            assert_eq!(sc.allow_privilege_escalation, Some(false));
        }
        other => panic!("{other:?}"),
    }
    // Still the pool's registries and privilege rules.
    injector()
        .review_ephemeral(&old, &new, "ci", &debuggable(vec!["ghcr.io".into()]))
        .expect_err("registry");
    let root = debugged(
        &old,
        Some(SecurityContext {
            privileged: Some(true),
            ..Default::default()
        }),
    );
    let err = injector()
        .review_ephemeral(&old, &root, "ci", &debuggable(vec![]))
        .expect_err("privileged");
    assert!(
        matches!(err, InjectError::PrivilegeNotAllowed { .. }),
        "{err}"
    );
}

// ---- property ---------------------------------------------------------------

/// Any subset of runyard's own metadata, with any values.
fn arb_runyard_metadata(
) -> impl Strategy<Value = (BTreeMap<String, String>, BTreeMap<String, String>)> {
    let labels = proptest::collection::btree_map(
        prop_oneof![Just(LABEL_WORKER), Just(LABEL_RUN_ID)].prop_map(str::to_string),
        "[a-z0-9-]{0,30}",
        0..3,
    );
    let annotations = proptest::collection::btree_map(
        prop_oneof![
            Just(ANNOTATION_INJECTED),
            Just(ANNOTATION_QUEUE),
            Just(ANNOTATION_CLAIMED_AT),
            Just(ANNOTATION_RESULT),
            Just(ANNOTATION_RESULT_DETAIL),
            Just(ANNOTATION_PRIORITY),
        ]
        .prop_map(str::to_string),
        "[ -~]{0,20}",
        0..5,
    );
    (labels, annotations)
}

/// Containers that try their luck: privileged, root, escalating, named like
/// runyard's or the pool's containers.
fn arb_hostile_container() -> impl Strategy<Value = Container> {
    (
        prop_oneof![
            Just("build"),
            Just("cache"),
            Just(INIT_CONTAINER),
            Just(LAUNCHER_CONTAINER),
            Just("helper")
        ],
        prop_oneof![Just("alpine"), Just("ghcr.io/acme/cache:1")],
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, image, privileged, root, escalate)| Container {
            name: name.into(),
            image: Some(image.into()),
            security_context: (privileged || root || escalate).then(|| SecurityContext {
                privileged: privileged.then_some(true),
                run_as_user: root.then_some(0),
                allow_privilege_escalation: escalate.then_some(true),
                ..Default::default()
            }),
            ..Default::default()
        })
}

fn arb_requester() -> impl Strategy<Value = Requester> {
    prop_oneof![
        Just(Requester::User),
        Just(Requester::JobController),
        Just(Requester::Controller)
    ]
}

fn assert_nothing_privileged(spec: &PodSpec) -> Result<(), TestCaseError> {
    let root = |sc: Option<&SecurityContext>| sc.and_then(|s| s.run_as_user) == Some(0);
    prop_assert_ne!(
        spec.security_context.as_ref().and_then(|s| s.run_as_user),
        Some(0)
    );
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let sc = c.security_context.as_ref();
        prop_assert_ne!(
            sc.and_then(|s| s.privileged),
            Some(true),
            "{} privileged",
            &c.name
        );
        prop_assert!(!root(sc), "{} runs as root", c.name);
        prop_assert_ne!(
            sc.and_then(|s| s.allow_privilege_escalation),
            Some(true),
            "{} escalates",
            &c.name
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn runyards_own_metadata_never_skips_the_queue_or_the_hardening(
        (labels, annotations) in arb_runyard_metadata(),
        containers in proptest::collection::vec(arb_hostile_container(), 1..4),
        inits in proptest::collection::vec(arb_hostile_container(), 0..3),
        gate in any::<bool>(),
        job in any::<bool>(),
        by in arb_requester(),
    ) {
        let mut seen = std::collections::BTreeSet::new();
        let containers: Vec<_> = containers.into_iter().filter(|c| seen.insert(c.name.clone())).collect();
        let inits: Vec<_> = inits.into_iter().filter(|c| seen.insert(c.name.clone())).collect();
        let mut all_labels = labels.clone();
        all_labels.insert(LABEL_POOL.into(), "builders".into());
        let meta = ObjectMeta {
            name: Some("r".into()),
            labels: Some(all_labels),
            annotations: Some(annotations),
            ..Default::default()
        };
        let spec = PodSpec {
            containers,
            init_containers: (!inits.is_empty()).then_some(inits),
            scheduling_gates: gate.then(|| vec![k8s_openapi::api::core::v1::PodSchedulingGate { name: SCHEDULING_GATE.into() }]),
            restart_policy: Some("Never".into()),
            ..Default::default()
        };
        let claims = by == Requester::Controller && labels.contains_key(LABEL_WORKER);
        let pools = with_sidecar();
        if job {
            let job = Job {
                metadata: meta.clone(),
                spec: Some(JobSpec {
                    suspend: Some(false),
                    template: PodTemplateSpec { metadata: Some(meta), spec: Some(spec) },
                    ..Default::default()
                }),
                ..Default::default()
            };
            let admitted = match injector().mutate_as(job.clone(), "ci", &pools, by) {
                Ok(Mutation::Mutated { object, .. }) => *object,
                Ok(Mutation::Unchanged) => job,
                Ok(Mutation::NotARun) => return Err(TestCaseError::fail("a run")),
                Err(_) => return Ok(()),
            };
            let s = admitted.spec.as_ref().expect("spec");
            prop_assert_eq!(s.suspend == Some(true), !claims, "queued unless the controller claimed it");
            assert_nothing_privileged(s.template.spec.as_ref().expect("template spec"))?;
        } else {
            let pod = Pod { metadata: meta, spec: Some(spec), ..Default::default() };
            let admitted = match injector().mutate_as(pod.clone(), "ci", &pools, by) {
                Ok(Mutation::Mutated { object, .. }) => *object,
                Ok(Mutation::Unchanged) => pod,
                Ok(Mutation::NotARun) => return Err(TestCaseError::fail("a run")),
                Err(_) => return Ok(()),
            };
            let s = admitted.spec.as_ref().expect("spec");
            let gated = s.scheduling_gates.iter().flatten().any(|g| g.name == SCHEDULING_GATE);
            prop_assert!(gated || claims, "gated unless the controller claimed it");
            assert_nothing_privileged(s)?;
        }
    }
}

#[test]
fn a_users_pod_posing_as_a_jobs_is_refused() {
    let mut pod = run_pod(vec![worker("build", "alpine")]);
    pod.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "batch/v1".into(),
        kind: "Job".into(),
        name: "someone-elses".into(),
        uid: "u".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    let err = injector()
        .mutate(&pod, "ci", &builders())
        .expect_err("not the Job controller");
    assert!(err.to_string().contains("Job controller"), "{err}");
}
