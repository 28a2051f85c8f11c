//! The webhook's fast path (`injection::fast`) against the engine's full
//! path: whenever the fast path answers, its patch applied to the pod gives
//! the engine's injected pod; it answers `None` for everything it does not
//! take.

use super::tests::{
    arb_container, arb_empty_list_shape, arb_requester, builders, fixture_object,
    fixture_requester, injector, pool, raw_with_shape, run_pod, worker,
};
use super::*;
use crate::crd::{ContainerSettings, WorkerPoolSpec};
use crate::vocab::*;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, PodSchedulingGate, PodSecurityContext, Volume, VolumeMount,
};
use k8s_openapi::api::core::v1::{Pod, SeccompProfile};
use proptest::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// The fast path's patch for `raw` and the engine's outcome for the same pod.
fn both(
    inj: &Injector,
    raw: &Value,
    pools: &dyn PoolSource,
    by: Requester,
) -> (Option<patch::JsonPatch>, Result<Mutation<Pod>, InjectError>) {
    let fast = inj.fast_pod_create(&raw.to_string(), Some("ci"), pools, by);
    let pod: Pod = serde_json::from_value(raw.clone()).expect("a Pod");
    (fast, inj.mutate_as(pod, "ci", pools, by))
}

/// Asserts that the fast path answered and that its patch gives the
/// engine's pod.
fn assert_same(
    raw: &Value,
    fast: Option<patch::JsonPatch>,
    full: Result<Mutation<Pod>, InjectError>,
) {
    let patch = fast.expect("the fast path takes this pod");
    let Ok(Mutation::Mutated { object, .. }) = full else {
        panic!("the fast path patched a pod the engine does not: {full:?}");
    };
    let mut applied = raw.clone();
    json_patch::patch(&mut applied, &patch.operations().expect("a JSON Patch"))
        .expect("the fast path's patch applies");
    let applied: Pod = serde_json::from_value(applied).expect("a valid Pod");
    assert_eq!(applied, *object);
}

#[test]
fn captured_pod_creates_take_the_fast_path_as_the_engine_injects() {
    for name in ["02-pod-create-build-42.json", "03-pod-create-bare-run.json"] {
        let raw = fixture_object(name);
        let by = fixture_requester(name);
        let (fast, full) = both(&injector(), &raw, &builders(), by);
        assert_same(&raw, fast, full);
    }
}

#[test]
fn the_benchmark_reviews_take_the_fast_path() {
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        },
    );
    for text in [
        include_str!("../../benches/data/review-6k.json"),
        include_str!("../../benches/data/review-16k.json"),
    ] {
        let review: Value = serde_json::from_str(text).expect("JSON");
        let raw = review["request"]["object"].clone();
        let (fast, full) = both(&injector(), &raw, &pools, Requester::JobController);
        assert_same(&raw, fast, full);
    }
}

#[test]
fn anything_the_fast_path_does_not_take_goes_to_the_engine() {
    let plain = serde_json::to_value(run_pod(vec![worker("w", "ghcr.io/a/b:1")])).expect("JSON");
    let fast = |raw: &Value, pools: &StaticPools, inj: &Injector| {
        inj.fast_pod_create(&raw.to_string(), Some("ci"), pools, Requester::User)
    };
    assert!(fast(&plain, &builders(), &injector()).is_some());
    let edited = |f: fn(&mut Value)| {
        let mut raw = plain.clone();
        f(&mut raw);
        raw
    };
    // A member the view does not know (a later Kubernetes version's).
    let unknown = edited(|p| p["spec"]["containers"][0]["futureField"] = true.into());
    // Runyard's own labels, names and paths; the policy's concerns.
    let cases = [
        unknown,
        edited(|p| p["metadata"]["labels"][LABEL_WORKER] = "w-1".into()),
        edited(|p| p["metadata"]["annotations"] = serde_json::json!({ANNOTATION_INJECTED: "true"})),
        edited(|p| {
            p["metadata"]["annotations"] = serde_json::json!({
                "container.apparmor.security.beta.kubernetes.io/w": "unconfined"
            })
        }),
        edited(|p| p["spec"]["containers"][0]["name"] = LAUNCHER_CONTAINER.into()),
        edited(|p| p["spec"]["containers"][0]["image"] = "docker.io/evil:1".into()),
        edited(|p| {
            p["spec"]["containers"][0]["env"] =
                serde_json::json!([{"name": env::RUN_ID, "value": "x"}])
        }),
        edited(|p| {
            p["spec"]["containers"][0]["volumeMounts"] =
                serde_json::json!([{"name": "x", "mountPath": WORKSPACE_PATH}])
        }),
        edited(|p| {
            p["spec"]["containers"][0]["securityContext"] = serde_json::json!({"privileged": true})
        }),
        edited(|p| {
            p["spec"]["containers"][0]["ports"] =
                serde_json::json!([{"containerPort": 80, "hostPort": 80}])
        }),
        edited(|p| {
            p["spec"]["volumes"] = serde_json::json!([{"name": "n", "hostPath": {"path": "/"}}])
        }),
        edited(|p| p["spec"]["hostNetwork"] = true.into()),
        edited(|p| p["spec"]["securityContext"] = serde_json::json!({"runAsUser": 0})),
        edited(|p| {
            p["spec"]["initContainers"] =
                serde_json::json!([{"name": "i", "image": "ghcr.io/a/b:1"}])
        }),
        edited(|p| p["spec"]["ephemeralContainers"] = serde_json::json!([])),
        edited(|p| p["metadata"]["labels"][LABEL_POOL] = "missing".into()),
        // Not a v1 Pod by its own word (found by the `review` fuzz target).
        edited(|p| p["apiVersion"] = "v0".into()),
        edited(|p| p["kind"] = "Job".into()),
    ];
    let pools = pool(
        "builders",
        WorkerPoolSpec {
            allowed_runner_image_hosts: vec!["ghcr.io".into()],
            ..Default::default()
        },
    );
    for (i, raw) in cases.iter().enumerate() {
        assert!(
            fast(raw, &pools, &injector()).is_none(),
            "case {i} is the engine's: {raw}"
        );
    }
    // Pool settings the fast path does not build, and the container sidecar mode.
    let mut settings = WorkerPoolSpec::default();
    settings.pod.worker_container = Some(ContainerSettings::default());
    assert!(fast(&plain, &pool("builders", settings), &injector()).is_none());
    assert!(fast(&plain, &builders(), &super::tests::container_injector()).is_none());
    // A pod a user creates as if the Job controller had: denied by the engine.
    let mut owned: Pod = serde_json::from_value(plain.clone()).expect("a Pod");
    owned.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "batch/v1".into(),
            kind: "Job".into(),
            name: "j".into(),
            uid: "u".into(),
            controller: Some(true),
            ..Default::default()
        },
    ]);
    let owned = serde_json::to_value(owned).expect("JSON");
    assert!(fast(&owned, &builders(), &injector()).is_none());
    // The same pod from the Job controller is taken.
    let by_jc = injector().fast_pod_create(
        &owned.to_string(),
        Some("ci"),
        &builders(),
        Requester::JobController,
    );
    assert!(by_jc.is_some());
}

/// Pod-level fields the fast path writes around: the pod's security
/// context, deadline, scheduling gates and volumes, as a run may send them.
#[derive(Debug, Clone)]
struct PodFields {
    security: Option<PodSecurityContext>,
    deadline: Option<i64>,
    gates: Option<Vec<PodSchedulingGate>>,
    volumes: Option<Vec<Volume>>,
    annotations: Option<BTreeMap<String, String>>,
    mounts: Option<Vec<VolumeMount>>,
}

fn arb_pod_fields() -> impl Strategy<Value = PodFields> {
    let security = prop_oneof![
        Just(None),
        Just(Some(PodSecurityContext::default())),
        Just(Some(PodSecurityContext {
            run_as_user: Some(1000),
            fs_group: Some(2000),
            ..Default::default()
        })),
        Just(Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "Localhost".into(),
                localhost_profile: Some("p.json".into()),
            }),
            ..Default::default()
        })),
        Just(Some(PodSecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        })),
    ];
    let gate = |name: &str| PodSchedulingGate { name: name.into() };
    let gates = prop_oneof![
        Just(None),
        Just(Some(vec![])),
        Just(Some(vec![gate("other")])),
        Just(Some(vec![gate(SCHEDULING_GATE)])),
    ];
    let volume = |name: &str, host: bool| Volume {
        name: name.into(),
        host_path: host.then(|| HostPathVolumeSource {
            path: "/var".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let volumes = prop_oneof![
        Just(None),
        Just(Some(vec![])),
        Just(Some(vec![volume("cache", false)])),
        Just(Some(vec![volume("cache", false), volume("node", true)])),
        Just(Some(vec![volume(WORKSPACE_VOLUME, false)])),
    ];
    let annotations = prop_oneof![
        Just(None),
        Just(Some(BTreeMap::new())),
        Just(Some(BTreeMap::from([(
            "team".to_string(),
            "ci".to_string()
        )]))),
        Just(Some(BTreeMap::from([(
            ANNOTATION_PRIORITY.to_string(),
            "5".to_string()
        )]))),
    ];
    let mount = |path: &str| VolumeMount {
        name: "cache".into(),
        mount_path: path.into(),
        ..Default::default()
    };
    let mounts = prop_oneof![
        Just(None),
        Just(Some(vec![])),
        Just(Some(vec![mount("/cache")])),
        Just(Some(vec![mount(BINARIES_PATH)])),
    ];
    (
        security,
        proptest::option::of(prop_oneof![Just(60i64), Just(100_000i64)]),
        gates,
        volumes,
        annotations,
        mounts,
    )
        .prop_map(
            |(security, deadline, gates, volumes, annotations, mounts)| PodFields {
                security,
                deadline,
                gates,
                volumes,
                annotations,
                mounts,
            },
        )
}

fn arb_fast_pod() -> impl Strategy<Value = Pod> {
    (
        proptest::collection::vec(arb_container("c"), 0..4),
        arb_pod_fields(),
        any::<bool>(),
    )
        .prop_map(|(containers, fields, owned)| {
            let mut seen = std::collections::BTreeSet::new();
            let mut containers: Vec<_> = containers
                .into_iter()
                .filter(|c| seen.insert(c.name.clone()))
                .collect();
            if let Some(first) = containers.first_mut() {
                first.volume_mounts = fields.mounts.clone();
            }
            let mut pod = run_pod(containers);
            pod.metadata.annotations = fields.annotations;
            if owned {
                pod.metadata.owner_references = Some(vec![
                    k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                        api_version: "batch/v1".into(),
                        kind: "Job".into(),
                        name: "j".into(),
                        uid: "u".into(),
                        controller: Some(true),
                        ..Default::default()
                    },
                ]);
            }
            let spec = pod.spec.get_or_insert_with(Default::default);
            spec.security_context = fields.security;
            spec.active_deadline_seconds = fields.deadline;
            spec.scheduling_gates = fields.gates;
            spec.volumes = fields.volumes;
            pod
        })
}

fn arb_fast_pools() -> impl Strategy<Value = StaticPools> {
    (
        any::<bool>(),
        proptest::option::of(Just(300i64)),
        any::<bool>(),
    )
        .prop_map(|(restrict, deadline, small)| {
            let mut spec = WorkerPoolSpec::default();
            if restrict {
                spec.allowed_runner_image_hosts = vec!["ghcr.io".into(), "docker.io".into()];
            }
            spec.pod.active_deadline_seconds = deadline;
            if small {
                spec.limits.containers = Some(1);
                spec.limits.env_entries = Some(2);
            }
            pool("builders", spec)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Whenever the fast path answers, the engine injects the same pod (a
    /// pod it does not take is the engine's, whatever it is; that it takes
    /// a good share of these: the test below).
    #[test]
    fn the_fast_path_patches_as_the_engine_injects(
        pod in arb_fast_pod(),
        pools in arb_fast_pools(),
        by in arb_requester(),
        shape in arb_empty_list_shape(),
    ) {
        let raw = raw_with_shape(&pod, "/spec", shape);
        let (fast, full) = both(&injector(), &raw, &pools, by);
        if fast.is_some() {
            assert_same(&raw, fast, full);
        }
    }
}

/// The share of generated pods the fast path takes, so that the property
/// above compares something: about one in ten (35 of 400 when written; most
/// generated pods carry something it leaves to the engine), so its 2,048
/// cases compare some two hundred.
#[test]
fn the_property_takes_a_good_share_of_its_pods() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = (arb_fast_pod(), arb_fast_pools(), arb_requester());
    let mut taken = 0;
    for _ in 0..400 {
        let (pod, pools, by) = strategy.new_tree(&mut runner).expect("a value").current();
        let raw = serde_json::to_value(&pod).expect("JSON");
        if injector()
            .fast_pod_create(&raw.to_string(), Some("ci"), &pools, by)
            .is_some()
        {
            taken += 1;
        }
    }
    assert!(
        taken >= 20,
        "the fast path took {taken} of 400 generated pods"
    );
}
